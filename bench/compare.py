#!/usr/bin/env python3
"""fdgr vs PyTorch (CPU), side by side in one run: per-step medians and ratios.

Runs `fdgr bench --json` and bench/torch_steps.py alternately, config by
config, on the same thread count, and prints a markdown table.

    cargo build --release && python3 bench/compare.py --threads 2
"""
import argparse
import json
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
CONFIGS = [("784-512-512-10", 128), ("3072-512-512-512-10", 128)]


def rows(cmd):
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return {r["method"]: r for r in (json.loads(l) for l in out.splitlines() if l.startswith("{"))}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--methods", default="sgd,db,fgr,bgr,sam")
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--fdgr", default=str(ROOT / "target" / "release" / "fdgr"))
    a = ap.parse_args()
    print(f"| model | batch | method | fdgr ms | PyTorch ms | PyTorch/fdgr | fdgr step/SGD |")
    print("|---|---|---|---|---|---|---|")
    for model, batch in CONFIGS:
        common = ["--model", model, "--batch", str(batch), "--threads", str(a.threads),
                  "--methods", a.methods, "--repeats", str(a.repeats)]
        f = rows([a.fdgr, "bench", "--json", *common])
        t = rows([sys.executable, str(ROOT / "bench" / "torch_steps.py"), *common])
        for m in a.methods.split(","):
            fm, tm = f[m]["median_ms"], t[m]["median_ms"]
            print(f"| {model} | {batch} | {m} | {fm:.2f} | {tm:.2f} | {tm / fm:.2f} | {fm / f['sgd']['median_ms']:.2f} |",
                  flush=True)


if __name__ == "__main__":
    main()
