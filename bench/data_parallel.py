#!/usr/bin/env python3
"""Steps/s of data-parallel `fdgr train` on this machine: one process on
1 thread and on all threads, and `mpirun -np N` with the machine's cores
shared among the ranks, for the same global batch; scaling efficiency and
all-reduce volume per step. Configurations run round-robin, `--repeats`
times each (medians), so a busy machine's drift hits them alike.

    cargo build --release --features mpi
    python3 bench/data_parallel.py [--repeats 3] [--ranks 2]

Prints a markdown table (and the CPU model and SIMD level)."""
import argparse, json, os, platform, statistics, subprocess, tempfile

ap = argparse.ArgumentParser()
ap.add_argument("--fdgr", default="target/release/fdgr")
ap.add_argument("--repeats", type=int, default=3)
ap.add_argument("--ranks", type=int, default=2)
a = ap.parse_args()

MODELS = [
    ("784-512-512-10 MLP", ["--data", "mnist5k", "--epochs", "5"]),
    ("conv net (README)", ["--data", "mnist5k", "--epochs", "1", "--model",
      "conv:16:5:p2,relu,maxpool:2,conv:32:5:p2,relu,maxpool:2,flatten,linear:128,relu,linear"]),
]
METHODS = [("sgd", []), ("fgr", []), ("fgr", ["--ascent", "local"])]
env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
           OMPI_MCA_btl_vader_single_copy_mechanism="none", OMPI_MCA_mpi_yield_when_idle="1")
cores = os.cpu_count()
load = lambda: open("/proc/loadavg").read().split()[0]
load0 = load()

def run(np_, threads, args):
    out = tempfile.mkdtemp(prefix="fdgr-dp-bench-")
    cmd = [a.fdgr, "train", *args, "--out", out, "-q", "--threads", str(threads)]
    if np_ > 1:
        cmd = ["mpirun", "-np", str(np_), "--oversubscribe", "--bind-to", "none", *cmd]
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    s = json.load(open(os.path.join(out, "summary.json")))
    subprocess.run(["rm", "-rf", out])
    return s

configs = [(1, 1), (1, cores), (a.ranks, max(1, cores // a.ranks))]
rows = []
for mname, margs in MODELS:
    for meth, extra in METHODS:
        args = [*margs, "--method", meth, *extra]
        times = {c: [] for c in configs}
        ctimes = {c: [] for c in configs}
        last = {}
        for _ in range(a.repeats):
            for c in configs:
                s = run(c[0], c[1], args)
                times[c].append(s["steps_per_sec"])
                ctimes[c].append(s["allreduce_seconds_per_step"])
                last[c] = s
        med = {c: statistics.median(v) for c, v in times.items()}
        comm = {c: statistics.median(v) for c, v in ctimes.items()}
        base = med[configs[0]]
        for c in configs:
            s = last[c]
            eff = med[c] / (base * c[0] * c[1]) if c[0] * c[1] > 0 else 0
            rows.append((mname, meth + (" local" if extra else ""), c, med[c],
                         med[c] / base, eff, s["allreduce_per_step"], s["allreduce_bytes_per_step"], comm[c]))

cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.processor())
flags = next((l.split(":", 1)[1].split() for l in open("/proc/cpuinfo") if l.startswith("flags")), [])
simd = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "SSE"
print(f"CPU: {cpu}, {cores} cores, {simd}; {a.repeats} repeats, medians; load average {load0} before, {load()} after")
print()
print("| model | method | processes × threads | steps/s | speed-up vs 1×1 | efficiency (per core) | all-reduces/step | all-reduce bytes/step | ms/step in all-reduce (rank 0) |")
print("|---|---|---|---|---|---|---|---|---|")
for m, meth, c, sps, su, eff, ar, arb, ct in rows:
    print(f"| {m} | {meth} | {c[0]} × {c[1]} | {sps:.1f} | {su:.2f} | {100*eff:.0f} % | {ar:g} | {arb/1e6:.2f} MB | {1e3*ct:.1f} |")
