#!/usr/bin/env python3
"""The domain-shift table of docs/domain-shift.md: a model pretrained on
mnist8 (MNIST in the UCI digits' format) learns the UCI digits on the
device (QEMU's Cortex-M4F, the live image), for each method, trained part
and number of samples, over several sample orders; every run is replayed
on the host kernel (--verify) and must be bit-identical.

    python3 bench/domain_shift.py [--fdgr target/release/fdgr] [--run runs/src] [--seeds 5]

Prints the CPU model, then a Markdown table of held-out accuracy (test
split) after N samples: mean ± sd over the sample orders.

    python3 bench/domain_shift.py --tune [--method fgr] [--orders split,1,2,3]

tunes the device's learning rate, γ and ε (ρ for sam) instead, on the
validation split only (`--validation`: the UCI digits' train split without
the 256 samples streamed; the test split is never looked at), over several
sample orders (`split`: the split's own order; a number: `--order-seed`),
and prints the grid of mean validation accuracies (every run is kept in
--cache, so an interrupted grid goes on where it stopped).
"""
import argparse, json, os, statistics, subprocess, sys

MODEL = "conv:8:3:p1,bn,relu,maxpool:2,conv:16:3:p1,bn,relu,maxpool:2,flatten,linear"
# learning rates chosen on the validation split (docs/domain-shift.md), full
# mode: fgr's (with its γ 0.01, ε 0.1) is the firmware's default; sam's ρ is
# the firmware's 0.05, not tuned
LR = {"sgd": "0.02", "fgr": "0.02", "sam": "0.02"}


def cpu():
    try:
        for l in open("/proc/cpuinfo"):
            if l.startswith("model name"):
                return l.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def device_json(cmd):
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"{' '.join(cmd)}: exit {r.returncode}\n{r.stderr[-2000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


# the grid tuned on the validation split (docs/domain-shift.md)
GRID = {"lr": ["0.01", "0.02", "0.03", "0.05"], "gamma": ["0.02", "0.05", "0.1", "0.2"],
        "eps": ["0.05", "0.1", "0.2"], "rho": ["0.02", "0.05", "0.1", "0.2"]}


def tune(a):
    """Mean validation accuracy over sample orders for every grid point."""
    import itertools
    hyper = {"fgr": ["gamma", "eps"], "db": ["gamma"], "sam": ["rho"], "sgd": []}[a.method]
    orders = a.orders.split(",")
    done = {}
    if os.path.isfile(a.cache):
        for l in open(a.cache):
            v = json.loads(l)
            done[v["key"]] = v
    cache = open(a.cache, "a")
    print(f"CPU: {cpu()}; device: QEMU mps2-an386 (Cortex-M4F), live image, batch 1; "
          f"validation split, {a.n} samples streamed, orders {a.orders}", file=sys.stderr)
    results = []
    for point in itertools.product(GRID["lr"], *[GRID[h] for h in hyper]):
        flags = ["--lr", point[0]]
        for h, v in zip(hyper, point[1:]):
            flags += [f"--{h}", v]
        accs, before = [], None
        for o in orders:
            key = f"{a.method} {' '.join(flags)} n={a.n} order={o} run={a.run}"
            if key not in done:
                cmd = [a.fdgr, "device", "run", "--board", "qemu-m4", "--from", a.run, "--live",
                       "--factory-reset", "--samples", f"digits:train:{a.n}", "--validation",
                       "--method", a.method, *flags, "--json"]
                if o != "split":
                    cmd += ["--order-seed", o]
                v = device_json(cmd)
                done[key] = {"key": key, "acc_before": v["acc_before"], "acc_after": v["acc_after"],
                             "prequential_acc": v["prequential_acc"], "held_out": v["held_out"]}
                cache.write(json.dumps(done[key]) + "\n")
                cache.flush()
            accs.append(100 * done[key]["acc_after"])
            before = 100 * done[key]["acc_before"]
        m = statistics.mean(accs)
        sd = statistics.stdev(accs) if len(accs) > 1 else 0.0
        results.append((m, sd, point, accs))
        print(f"  {' '.join(flags)}: {m:.2f} ± {sd:.2f}  ({', '.join(f'{x:.2f}' for x in accs)})",
              file=sys.stderr)
    print(f"\nValidation accuracy ({a.method}) before: {before:.2f} %; after {a.n} samples, mean ± sd "
          f"over {len(orders)} sample orders ({a.orders})\n")
    names = ["lr", *hyper]
    print("| " + " | ".join(names) + " | " + " | ".join(f"order {o}" for o in orders) + " | mean ± sd |")
    print("|" + "---|" * (len(names) + len(orders) + 1))
    for m, sd, point, accs in sorted(results, key=lambda r: -r[0]):
        print("| " + " | ".join(point) + " | " + " | ".join(f"{x:.2f}" for x in accs)
              + f" | {m:.2f} ± {sd:.2f} |")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--fdgr", default="target/release/fdgr")
    ap.add_argument("--run", default="runs/domain-shift-src")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--ns", default="16,64,256")
    ap.add_argument("--methods", default="sgd,fgr,sam")
    ap.add_argument("--modes", default="full,last,bias")
    ap.add_argument("--mode-lr", default="bias=0.05",
                    help="learning rates of modes that differ from the method's, MODE=LR,... "
                         "(bias: chosen on the validation split, docs/domain-shift.md)")
    ap.add_argument("--tune", action="store_true", help="tune on the validation split")
    ap.add_argument("--method", default="fgr", help="with --tune")
    ap.add_argument("--orders", default="split,1,2,3", help="with --tune")
    ap.add_argument("--n", type=int, default=256, help="with --tune: samples streamed")
    ap.add_argument("--cache", default="runs/domain-shift-tune.jsonl", help="with --tune")
    for h in GRID:
        ap.add_argument(f"--{h}s", help=f"with --tune: the grid's {h} values (comma-separated) "
                        f"instead of {','.join(GRID[h])}")
    a = ap.parse_args()
    for h in GRID:
        if getattr(a, f"{h}s"):
            GRID[h] = getattr(a, f"{h}s").split(",")
    if not os.path.isfile(os.path.join(a.run, "model.safetensors")):
        subprocess.run([a.fdgr, "train", "--data", "mnist8", "--model", MODEL, "--epochs", "10",
                        "--quiet", "--out", a.run], check=True)
    if a.tune:
        return tune(a)
    print(f"CPU: {cpu()}; device: QEMU mps2-an386 (Cortex-M4F), live image, batch 1")
    ns = [int(n) for n in a.ns.split(",")]
    rows, before, checked, identical = [], None, 0, 0
    mode_lr = dict(kv.split("=") for kv in a.mode_lr.split(",") if kv)
    for method in a.methods.split(","):
        for mode in a.modes.split(","):
            cells = []
            for n in ns:
                accs = []
                for seed in range(1, a.seeds + 1):
                    cmd = [a.fdgr, "device", "run", "--board", "qemu-m4", "--from", a.run, "--live",
                           "--factory-reset", "--samples", f"digits:train:{n}", "--order-seed",
                           str(seed), "--method", method, "--mode", mode, "--lr",
                           mode_lr.get(mode, LR[method]),
                           "--verify", "--json"]
                    r = subprocess.run(cmd, capture_output=True, text=True)
                    if r.returncode != 0:
                        sys.exit(f"{' '.join(cmd)}: exit {r.returncode}\n{r.stderr[-2000:]}")
                    v = json.loads(r.stdout.strip().splitlines()[-1])
                    before = v["acc_before"]
                    accs.append(100 * v["acc_after"])
                    checked += 1
                    identical += v["verified"] is True
                sd = statistics.stdev(accs) if len(accs) > 1 else 0.0
                cells.append(f"{statistics.mean(accs):.1f} ± {sd:.1f}")
                print(f"  {method} {mode} N={n}: {cells[-1]}", file=sys.stderr)
            rows.append(f"| {method} (lr {mode_lr.get(mode, LR[method])}) | {mode} | "
                        + " | ".join(cells) + " |")
    print(f"\nHeld-out accuracy (UCI digits test split) before: {100 * before:.2f} %; after N samples, "
          f"mean ± sd over {a.seeds} sample orders; {identical} of {checked} runs bit-identical "
          "to the host replay\n")
    print("| method | trained | " + " | ".join(f"N = {n}" for n in ns) + " |")
    print("|---|---|" + "---|" * len(ns))
    print("\n".join(rows))


if __name__ == "__main__":
    main()
