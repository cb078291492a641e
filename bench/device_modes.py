#!/usr/bin/env python3
"""RAM and flash of the live image (the on-device learner) for every board
and `--mode`, from `fdgr device build --json` (no probe needed):

    python3 bench/device_modes.py --run RUN [--run RUN2 ...] [--fdgr target/release/fdgr]

Prints a Markdown table: static RAM (.data + .bss), the estimate with the
stack, flash, and the trained parameters, against each board's memory.
"""
import argparse, json, os, subprocess, sys

BOARDS = ["stm32f4", "nrf52840", "rp2040"]
MODES = ["full", "last", "bias"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--fdgr", default="target/release/fdgr")
    ap.add_argument("--run", action="append", required=True)
    ap.add_argument("--method", default="fgr")
    a = ap.parse_args()
    print("| model | board | mode | trained / all parameters | static RAM (B) | RAM with stack, estimate (B) | board RAM (B) | flash (B) | board flash (B) |")
    print("|---|---|---|---|---:|---:|---:|---:|---:|")
    for run in a.run:
        name = os.path.basename(run.rstrip("/"))
        for board in BOARDS:
            for mode in MODES:
                cmd = [a.fdgr, "device", "build", "--board", board, "--from", run, "--mode", mode,
                       "--method", a.method, "--json"]
                r = subprocess.run(cmd, capture_output=True, text=True)
                if r.returncode != 0:
                    err = r.stderr.strip().splitlines()[-1] if r.stderr.strip() else f"exit {r.returncode}"
                    print(f"| {name} | {board} | {mode} | refused: {err} | | | | | |")
                    continue
                v = json.loads(r.stdout.strip().splitlines()[-1])
                print(f"| {name} | {board} | {mode} | {v['trained_params']} / {v['params']} | "
                      f"{v['ram_bytes']:,} | {v['ram_estimate_with_stack']:,} | {v['ram_available']:,} | "
                      f"{v['flash_bytes']:,} | {v['flash_available']:,} |")
                sys.stdout.flush()


if __name__ == "__main__":
    main()
