#!/usr/bin/env python3
"""The domain-shift table of docs/domain-shift.md: a model pretrained on
mnist8 (MNIST in the UCI digits' format) learns the UCI digits on the
device (QEMU's Cortex-M4F, the live image), for each method, trained part
and number of samples, over several sample orders; every run is replayed
on the host kernel (--verify) and must be bit-identical.

    python3 bench/domain_shift.py [--fdgr target/release/fdgr] [--run runs/src] [--seeds 5]

Prints the CPU model, then a Markdown table of held-out accuracy (test
split) after N samples: mean ± sd over the sample orders.
"""
import argparse, json, os, statistics, subprocess, sys

MODEL = "conv:8:3:p1,bn,relu,maxpool:2,conv:16:3:p1,bn,relu,maxpool:2,flatten,linear"
# learning rates chosen on the validation split (docs/domain-shift.md), full mode
LR = {"sgd": "0.03", "fgr": "0.02", "sam": "0.02"}


def cpu():
    try:
        for l in open("/proc/cpuinfo"):
            if l.startswith("model name"):
                return l.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--fdgr", default="target/release/fdgr")
    ap.add_argument("--run", default="runs/domain-shift-src")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--ns", default="16,64,256")
    ap.add_argument("--methods", default="sgd,fgr,sam")
    ap.add_argument("--modes", default="full,last")
    a = ap.parse_args()
    if not os.path.isfile(os.path.join(a.run, "model.safetensors")):
        subprocess.run([a.fdgr, "train", "--data", "mnist8", "--model", MODEL, "--epochs", "10",
                        "--quiet", "--out", a.run], check=True)
    print(f"CPU: {cpu()}; device: QEMU mps2-an386 (Cortex-M4F), live image, batch 1")
    ns = [int(n) for n in a.ns.split(",")]
    rows, before, checked, identical = [], None, 0, 0
    for method in a.methods.split(","):
        for mode in a.modes.split(","):
            cells = []
            for n in ns:
                accs = []
                for seed in range(1, a.seeds + 1):
                    cmd = [a.fdgr, "device", "run", "--board", "qemu-m4", "--from", a.run, "--live",
                           "--factory-reset", "--samples", f"digits:train:{n}", "--order-seed",
                           str(seed), "--method", method, "--mode", mode, "--lr", LR[method],
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
            rows.append(f"| {method} (lr {LR[method]}) | {mode} | " + " | ".join(cells) + " |")
    print(f"\nHeld-out accuracy (UCI digits test split) before: {100 * before:.2f} %; after N samples, "
          f"mean ± sd over {a.seeds} sample orders; {identical} of {checked} runs bit-identical "
          "to the host replay\n")
    print("| method | trained | " + " | ".join(f"N = {n}" for n in ns) + " |")
    print("|---|---|" + "---|" * len(ns))
    print("\n".join(rows))


if __name__ == "__main__":
    main()
