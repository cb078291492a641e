#!/usr/bin/env python3
"""RAM, flash and instructions per step of on-device learning for every
board and `--mode`, from `fdgr device build --json` (no probe needed) and,
for the instructions, the same code under QEMU:

    python3 bench/device_modes.py --run RUN [--run RUN2 ...] [--fdgr target/release/fdgr]

Prints a Markdown table: static RAM (.data + .bss), the estimate with the
stack, flash, the trained parameters, against each board's memory; and
instructions per fine-tuning step counted exactly by QEMU on the
Cortex-M4F build of the same run and mode (`fdgr device run --board
qemu-m4 --built-in`, the mean of 4 steps on the run's own data): the code the
M4F boards (stm32f4, nrf52840) run, without their drivers. The RP2040
(Cortex-M0+, no FPU) runs other code: its instructions need hardware.
"""
import argparse, json, os, re, subprocess, sys

BOARDS = ["stm32f4", "nrf52840", "rp2040"]
MODES = ["full", "last", "bias"]
M4F = {"stm32f4", "nrf52840"}


def instructions(fdgr, run, mode, method):
    """Instructions per step on qemu-m4 (thumbv7em), or why not."""
    data = json.load(open(os.path.join(run, "summary.json")))["config"]["data"]
    cmd = [fdgr, "device", "run", "--board", "qemu-m4", "--from", run, "--mode", mode,
           "--method", method, "--samples", f"{data}:test:4", "--built-in"]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        return "failed: " + (r.stderr.strip().splitlines() or [f"exit {r.returncode}"])[-1]
    v = json.load(open(os.path.join(run, "device-qemu-m4", "summary.json")))
    return f"{round(v['instructions_per_step']['mean']):,}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--fdgr", default="target/release/fdgr")
    ap.add_argument("--run", action="append", required=True)
    ap.add_argument("--method", default="fgr")
    a = ap.parse_args()
    print("| model | board | mode | trained / all parameters | static RAM (B) | RAM with stack, estimate (B) | board RAM (B) | flash (B) | board flash (B) | instructions per step (M4F, QEMU) |")
    print("|---|---|---|---|---:|---:|---:|---:|---:|---:|")
    for run in a.run:
        name = os.path.basename(run.rstrip("/"))
        counted = {}
        for board in BOARDS:
            for mode in MODES:
                cmd = [a.fdgr, "device", "build", "--board", board, "--from", run, "--mode", mode,
                       "--method", a.method, "--json"]
                r = subprocess.run(cmd, capture_output=True, text=True)
                if r.returncode != 0:
                    err = r.stderr.strip().splitlines()[-1] if r.stderr.strip() else f"exit {r.returncode}"
                    need = re.search(r"needs about (\d+) B of RAM.*?the board has (\d+) B", err)
                    if need:
                        err = (f"needs about {int(need[1]):,} B of RAM, the board has "
                               f"{int(need[2]):,} B")
                    print(f"| {name} | {board} | {mode} | refused (exit {r.returncode}): {err} "
                          f"| | | | | | |")
                    continue
                v = json.loads(r.stdout.strip().splitlines()[-1])
                if board in M4F:
                    if mode not in counted:
                        counted[mode] = instructions(a.fdgr, run, mode, a.method)
                    ins = counted[mode]
                else:
                    ins = "needs hardware (M0+)"
                print(f"| {name} | {board} | {mode} | {v['trained_params']} / {v['params']} | "
                      f"{v['ram_bytes']:,} | {v['ram_estimate_with_stack']:,} | {v['ram_available']:,} | "
                      f"{v['flash_bytes']:,} | {v['flash_available']:,} | {ins} |")
                sys.stdout.flush()


if __name__ == "__main__":
    main()
