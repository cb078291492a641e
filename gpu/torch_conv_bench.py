#!/usr/bin/env python3
"""PyTorch eager reference for the conv-net rows of gpu/check.sh: the same
training steps as `fdgr bench --backend gpu` (bench/torch_steps.py's
step_fn: sgd, fgr with the batch-norm buffers restored after the perturbed
pass, db by double backprop; torch.optim.SGD, momentum 0.9, weight decay
1e-4) on the presets of bench/torch_models.py, on CUDA, timed per step
with CUDA events (median). `--precision f32` turns TF32 off (cuDNN and
cuBLAS), `tf32` turns it on, `bf16` runs the forward passes under
torch.autocast(dtype=bfloat16).

Prints one JSON object per (model, method, precision):
  {"kind":"bench","impl":"torch","method":..,"model":..,"batch":..,"precision":..,"ms_median":..,"steps_per_s":..}

    python3 gpu/torch_conv_bench.py --models resnet18,wrn-28-10 --methods sgd,fgr,db
"""
import argparse
import contextlib
import json
import pathlib
import statistics
import sys

import torch

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
import torch_steps  # noqa: E402


def set_precision(p):
    tf32 = p != "f32"
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    torch.backends.cudnn.benchmark = True


def time_steps(model_name, method, batch, precision, warmup, repeats):
    torch.manual_seed(1)
    model, shape, classes = torch_steps.build(model_name, "relu", (3, 32, 32), 10)
    model = model.cuda().train()
    x = torch.randn(batch, *shape, device="cuda")
    y = torch.randint(0, classes, (batch,), device="cuda")
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, weight_decay=1e-4)
    ctx = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if precision == "bf16" \
        else contextlib.nullcontext
    for _ in range(warmup):
        with ctx():
            torch_steps.step_fn(method, model, opt, x, y)
    torch.cuda.synchronize()
    ms = []
    for _ in range(repeats):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        with ctx():
            torch_steps.step_fn(method, model, opt, x, y)
        b.record()
        b.synchronize()
        ms.append(a.elapsed_time(b))
    med = statistics.median(ms)
    return {"kind": "bench", "impl": "torch", "method": method, "model": model_name,
            "batch": batch, "precision": precision, "ms_median": med, "ms_min": min(ms),
            "steps_per_s": 1e3 / med, "device": torch.cuda.get_device_name(),
            "torch": torch.__version__}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="resnet18")
    ap.add_argument("--methods", default="sgd,fgr,db")
    ap.add_argument("--precisions", default="f32,bf16")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=20)
    a = ap.parse_args()
    for model in a.models.split(","):
        for p in a.precisions.split(","):
            set_precision(p)
            for m in a.methods.split(","):
                try:
                    r = time_steps(model, m, a.batch, p, a.warmup, a.repeats)
                except Exception as e:  # report and go on (e.g. out of memory)
                    r = {"kind": "error", "model": model, "method": m, "precision": p, "error": str(e)[:300]}
                print(json.dumps(r), flush=True)
                torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
