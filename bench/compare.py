#!/usr/bin/env python3
"""fdgr vs PyTorch (CPU), side by side in one run: per-step medians, ratios
and peak memory.

For every config and method, runs `fdgr bench --json` and
bench/torch_steps.py (the same network, batch, method and optimizer in
PyTorch eager mode) one after the other on the same thread count, each as
its own process, so that each side's peak RSS (`ru_maxrss` of that
process) is measured alone. `--rounds N` repeats the alternation and
reports the median of the rounds' medians. Prints the CPU model and SIMD
level first (results depend on both: the GEMM kernels of both sides use
AVX-512 or AVX2 as the CPU allows), then a markdown table.

`--isa avx2` holds PyTorch to AVX2 on an AVX-512 machine (how to measure
an AVX2 machine on one that has AVX-512; give it an fdgr built with
`cargo build --release --no-default-features -p fdgr`). Both of PyTorch's
dispatchers are capped: ATen's (`ATEN_CPU_CAPABILITY=avx2`) and oneDNN's,
which runs its convolutions and reads only `ONEDNN_MAX_CPU_ISA`; the
script prints the implementation oneDNN picks for a 3x3 convolution, so a
run that is not held to AVX2 shows it.

    cargo build --release && python3 bench/compare.py --threads 2
    python3 bench/compare.py --configs resnet20,lenet5 --methods sgd,fgr,db
    python3 bench/compare.py --threads 2 --rounds 2 --methods sgd,fgr --json out.json
    python3 bench/compare.py --isa avx2 --fdgr /tmp/avx2/release/fdgr --configs resnet20
"""
import argparse
import json
import os
import pathlib
import platform
import statistics
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
# (model, input CxHxW or None for MLP widths, batch, warm-up steps, timed steps)
CONFIGS = [
    ("resnet20", "3x32x32", 128, 2, 10),
    ("lenet5", "1x28x28", 128, 3, 30),
    ("784-512-512-10", None, 128, 3, 30),
    ("3072-512-512-512-10", None, 128, 3, 30),
]


def cpu_info():
    """(CPU model, SIMD level) from /proc/cpuinfo (Linux)."""
    model, flags = platform.processor() or "unknown", set()
    try:
        for line in open("/proc/cpuinfo"):
            k, _, v = line.partition(":")
            k = k.strip()
            if k == "model name" and model in ("unknown", "x86_64", ""):
                model = v.strip()
            elif k == "flags" and not flags:
                flags = set(v.split())
    except OSError:
        pass
    if "avx512f" in flags:
        simd = "AVX-512 (avx512f" + (", avx512_bf16" if "avx512_bf16" in flags else "") + ")"
    elif "avx2" in flags:
        simd = "AVX2" + (" + FMA" if "fma" in flags else "")
    elif flags:
        simd = "SSE only"
    else:
        simd = "unknown"
    return model, simd


def torch_env(isa):
    """The environment of the PyTorch processes: `isa` "avx2" caps ATen's
    and oneDNN's dispatch at AVX2 (setting only ATen's leaves oneDNN's
    convolutions on AVX-512, so an ATen cap alone in the environment gets
    oneDNN's added)."""
    env = dict(os.environ)
    if isa == "avx2" or env.get("ATEN_CPU_CAPABILITY", "").lower() == "avx2":
        env["ATEN_CPU_CAPABILITY"] = "avx2"
        env["ONEDNN_MAX_CPU_ISA"] = "AVX2"
    return env


PROBE = (
    "import torch\n"
    "c=torch.nn.Conv2d(16,16,3,padding=1)\n"
    "with torch.no_grad(): c(torch.randn(4,16,32,32))\n"
    "print('aten', torch.backends.cpu.get_cpu_capability())\n"
)


def torch_isa(env):
    """(ATen's CPU capability, oneDNN's ISA, the implementation of a 3x3
    convolution) in a process with environment `env`."""
    e = dict(env, ONEDNN_VERBOSE="1")
    p = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=e)
    aten = dnnl = conv = "?"
    for line in p.stdout.splitlines():
        f = line.split(",")
        if line.startswith("aten "):
            aten = line[5:]
        elif "info" in f and any(x.startswith("isa:") for x in f):
            dnnl = next(x for x in f if x.startswith("isa:"))[4:]
        elif "exec" in f and "convolution" in f:
            conv = f[f.index("convolution") + 1]
    return aten, dnnl, conv


def run(cmd, env=None):
    """Runs `cmd`; returns ({method: JSON row}, peak RSS of the process in MiB)."""
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    out, err = p.stdout, p.stderr
    if p.returncode != 0:
        sys.exit(f"{cmd[0]} failed ({p.returncode}):\n{err}")
    rows = {}
    rss = None
    for line in out.splitlines():
        if line.startswith("{"):
            r = json.loads(line)
            if "maxrss_kib" in r:
                rss = r["maxrss_kib"] / 1024
            else:
                rows[r["method"]] = r
    return rows, rss


# Runs argv[1:] as a child and prints its output, then the child's own peak
# RSS (os.wait4 gives the rusage of that one process).
WRAP = (
    "import json,os,subprocess,sys\n"
    "p=subprocess.Popen(sys.argv[1:])\n"
    "_,st,ru=os.wait4(p.pid,0)\n"
    "print(json.dumps({'maxrss_kib':ru.ru_maxrss}),flush=True)\n"
    "sys.exit(os.waitstatus_to_exitcode(st))\n"
)


def measured(cmd, env=None):
    return run([sys.executable, "-c", WRAP, *cmd], env)


def load():
    try:
        return os.getloadavg()[0]
    except OSError:
        return float("nan")


def cpu_busy():
    """(busy CPU seconds of the whole machine, CPU seconds of our finished
    children) so far, or None without /proc/stat."""
    try:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:9]]
    except OSError:
        return None
    tick = os.sysconf("SC_CLK_TCK")
    busy = (sum(v) - v[3] - v[4]) / tick  # all but idle and iowait
    t = os.times()
    return busy, t.children_user + t.children_system


def others(before, after, wall):
    """Share of the machine's CPUs that other processes used meanwhile (%)."""
    if before is None or after is None or wall <= 0:
        return float("nan")
    used = (after[0] - before[0]) - (after[1] - before[1])
    return max(0.0, 100 * used / (wall * (os.cpu_count() or 1)))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--methods", default="sgd,db,fgr,bgr,sam")
    ap.add_argument("--configs", default="", help="comma-separated model names (default: all)")
    ap.add_argument("--repeats", type=int, default=0, help="timed steps (default: per config)")
    ap.add_argument("--rounds", type=int, default=1, help="alternations per method")
    ap.add_argument("--fdgr", default=str(ROOT / "target" / "release" / "fdgr"))
    ap.add_argument("--json", metavar="FILE", default="",
                    help="also write the rows, with the CPU and SIMD level, as JSON to FILE")
    ap.add_argument("--isa", choices=["native", "avx2"], default="native",
                    help="avx2: hold PyTorch (ATen and oneDNN) to AVX2; pass an AVX2 build "
                         "of fdgr with --fdgr")
    a = ap.parse_args()
    model, simd = cpu_info()
    import torch  # only for its version; the steps run in their own processes

    env = torch_env(a.isa)
    aten, dnnl, conv = torch_isa(env)
    print(f"CPU: {model}, {os.cpu_count()} logical cores; SIMD: {simd}")
    _, base = measured([sys.executable, "-c", "import torch; torch.ones(1)"], env)
    print(f"threads: {a.threads} per side; PyTorch {torch.__version__} "
          f"(ATen CPU capability {aten}; oneDNN ISA {dnnl}, 3x3 convolution {conv}; a process "
          f"that only imports torch peaks at {base or 0:.0f} MiB); fdgr: {a.fdgr}; "
          f"load average at start: {load():.2f}")
    print()
    print("| model | batch | method | fdgr ms | PyTorch ms | PyTorch/fdgr | fdgr step/SGD "
          "| PyTorch step/SGD | fdgr RSS MiB | PyTorch RSS MiB | others' CPU % |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    want = set(filter(None, a.configs.split(",")))
    methods = a.methods.split(",")
    t0 = time.time()
    rows = []
    for name, inp, batch, warmup, repeats in CONFIGS:
        if want and name not in want:
            continue
        reps = a.repeats or repeats
        common = ["--model", name, "--batch", str(batch), "--threads", str(a.threads),
                  "--repeats", str(reps), "--warmup", str(warmup)]
        if inp:
            common += ["--input", inp, "--classes", "10"]
        res = {}
        for m in methods:
            fs, ts, frss, trss = [], [], 0.0, 0.0
            b0, w0 = cpu_busy(), time.time()
            for _ in range(a.rounds):
                f, fr = measured([a.fdgr, "bench", "--json", "--methods", m, *common])
                t, tr = measured([sys.executable, str(ROOT / "bench" / "torch_steps.py"),
                                  "--methods", m, *common], env)
                fs.append(f[m]["median_ms"])
                ts.append(t[m]["median_ms"])
                frss, trss = max(frss, fr or 0), max(trss, tr or 0)
            busy = others(b0, cpu_busy(), time.time() - w0)
            res[m] = (statistics.median(fs), statistics.median(ts), frss, trss, busy)
        for m in methods:
            fm, tm, fr, tr, busy = res[m]
            fsgd = res["sgd"][0] if "sgd" in res else float("nan")
            tsgd = res["sgd"][1] if "sgd" in res else float("nan")
            label = f"{name} {inp}" if inp else name
            print(f"| {label} | {batch} | {m} | {fm:.2f} | {tm:.2f} | {tm / fm:.2f} | {fm / fsgd:.2f} "
                  f"| {tm / tsgd:.2f} | {fr:.0f} | {tr:.0f} | {busy:.0f} |", flush=True)
            rows.append({"model": name, "input": inp or None, "batch": batch, "method": m,
                         "fdgr_ms": fm, "torch_ms": tm, "torch_over_fdgr": tm / fm,
                         "fdgr_over_sgd": fm / fsgd, "torch_over_sgd": tm / tsgd,
                         "fdgr_rss_mib": fr, "torch_rss_mib": tr, "others_cpu_pct": busy})
    print()
    print(f"load average at end: {load():.2f}; {time.time() - t0:.0f} s. PyTorch/fdgr > 1: fdgr "
          "is faster. RSS: peak resident memory of each side's process (one method per process). "
          "Others' CPU: the share of the cores other processes used while the row ran (above a "
          "few percent the row is disturbed; PyTorch's OpenMP threads suffer more from it).")
    if a.json:
        out = {"date": time.strftime("%Y-%m-%d"), "cpu": model, "simd": simd,
               "logical_cores": os.cpu_count(), "threads": a.threads, "rounds": a.rounds,
               "torch": torch.__version__,
               "torch_cpu_capability": aten, "onednn_isa": dnnl, "onednn_conv": conv,
               "isa": a.isa, "fdgr": a.fdgr,
               "seconds": round(time.time() - t0, 1), "rows": rows}
        with open(a.json, "w") as f:
            json.dump(out, f, indent=1)
        print(f"wrote {a.json}")


if __name__ == "__main__":
    main()
