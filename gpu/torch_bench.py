#!/usr/bin/env python3
"""PyTorch eager reference for gpu/check.sh: the same training steps as
`fdgr bench --backend gpu` (sgd, db, fgr, sam on an MLP with ReLU and
softmax cross-entropy, PyTorch SGD with momentum 0.9 and weight decay 1e-4),
timed per step with CUDA events (median), and a plain cuBLAS SGEMM
reference (torch.mm, TF32 off) running the matrix products of one sgd step.

Prints one JSON object per line:
  {"kind":"bench","impl":"torch","method":..,"model":..,"batch":..,"ms_median":..,"flops_per_step":..,"gflops":..}
  {"kind":"sgemm","model":..,"batch":..,"ms":..,"flops":..,"gflops":..}

FLOPs count only the matrix products, as fdgr's plan::step_flops does:
2 per multiply-add; per gradient forward + weight gradients + input
gradients of layers 2..L; db adds the R-pass (2 products for layer 1,
6 for the others); fgr and sam are two gradients.
"""
import argparse
import json
import statistics
import sys
import time

import torch
import torch.nn.functional as F
from torch.func import functional_call

GAMMA, EPS, RHO = 0.05, 0.1, 0.05
LR, MOMENTUM, WD = 0.01, 0.9, 1e-4


def grad_macs(dims, b):
    m = 0
    for l in range(1, len(dims)):
        mn = b * dims[l] * dims[l - 1]
        m += 2 * mn + (mn if l > 1 else 0)
    return m


def rpass_macs(dims, b):
    return sum((2 if l == 1 else 6) * b * dims[l] * dims[l - 1] for l in range(1, len(dims)))


def step_flops(dims, b, method):
    g = grad_macs(dims, b)
    macs = {"sgd": g, "db": g + rpass_macs(dims, b), "fgr": 2 * g, "sam": 2 * g}[method]
    return 2.0 * macs


def make_model(dims):
    layers = []
    for l in range(1, len(dims)):
        layers.append(torch.nn.Linear(dims[l - 1], dims[l]))
        if l < len(dims) - 1:
            layers.append(torch.nn.ReLU())
    return torch.nn.Sequential(*layers).to(DEV)


DEV = "cuda"


def timed(fn, steps, warmup):
    for _ in range(warmup):
        fn()
    if DEV != "cuda":  # smoke test on a CPU: wall time
        out = []
        for _ in range(steps):
            t = time.perf_counter()
            fn()
            out.append(1e3 * (time.perf_counter() - t))
        return out
    torch.cuda.synchronize()
    ms = []
    for _ in range(steps):
        a = torch.cuda.Event(enable_timing=True)
        z = torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        z.record()
        ms.append((a, z))
    torch.cuda.synchronize()
    return [a.elapsed_time(z) for a, z in ms]


def bench_method(dims, b, method, steps, warmup):
    torch.manual_seed(0)
    model = make_model(dims)
    names = [n for n, _ in model.named_parameters()]
    params = [p for _, p in model.named_parameters()]
    opt = torch.optim.SGD(params, lr=LR, momentum=MOMENTUM, weight_decay=WD)
    batches = [
        (torch.rand(b, dims[0], device=DEV), torch.randint(0, dims[-1], (b,), device=DEV))
        for _ in range(4)
    ]
    it = [0]

    def loss_at(point, x, y):
        return F.cross_entropy(functional_call(model, dict(zip(names, point)), (x,)), y)

    def step():
        x, y = batches[it[0] % len(batches)]
        it[0] += 1
        if method == "sgd":
            loss = F.cross_entropy(model(x), y)
            d = torch.autograd.grad(loss, params)
        elif method == "db":
            # double backprop: the gradient of L + (gamma/2)||g||^2
            loss = F.cross_entropy(model(x), y)
            g = torch.autograd.grad(loss, params, create_graph=True)
            gn = 0.5 * sum((gi * gi).sum() for gi in g)
            hg = torch.autograd.grad(gn, params)
            d = [gi.detach() + GAMMA * hi for gi, hi in zip(g, hg)]
        elif method == "fgr":
            loss = F.cross_entropy(model(x), y)
            g = torch.autograd.grad(loss, params)
            with torch.no_grad():
                point = [(p + EPS * gi).requires_grad_() for p, gi in zip(params, g)]
            g2 = torch.autograd.grad(loss_at(point, x, y), point)
            r = GAMMA / EPS
            d = [(1 - r) * gi + r * g2i for gi, g2i in zip(g, g2)]
        elif method == "sam":
            loss = F.cross_entropy(model(x), y)
            g = torch.autograd.grad(loss, params)
            with torch.no_grad():
                norm = torch.sqrt(sum((gi * gi).sum() for gi in g))
                scale = RHO / norm  # stays on the device: no host sync
                point = [(p + scale * gi).requires_grad_() for p, gi in zip(params, g)]
            d = torch.autograd.grad(loss_at(point, x, y), point)
        else:
            raise ValueError(method)
        for p, di in zip(params, d):
            p.grad = di
        opt.step()

    ms = timed(step, steps, warmup)
    med = statistics.median(ms)
    flops = step_flops(dims, b, method)
    return {
        "kind": "bench",
        "impl": "torch",
        "method": method,
        "model": "-".join(map(str, dims)),
        "batch": b,
        "steps": steps,
        "ms_median": med,
        "ms_min": min(ms),
        "flops_per_step": flops,
        "gflops": flops / (med * 1e6),
        "torch": torch.__version__,
    }


def bench_sgemm(dims, b, reps, warmup):
    """The matrix products of one sgd step, as plain SGEMMs (torch.mm)."""
    prods = []
    for l in range(1, len(dims)):
        n_in, n_out = dims[l - 1], dims[l]
        a = torch.rand(b, n_in, device=DEV)
        w = torch.rand(n_out, n_in, device=DEV)
        dz = torch.rand(b, n_out, device=DEV)
        prods.append((a, w.t()))  # forward: a W^T
        prods.append((dz.t(), a))  # weight gradient: dz^T a
        if l > 1:
            prods.append((dz, w))  # input gradient: dz W

    def run():
        for x, y in prods:
            torch.mm(x, y)

    ms = timed(run, reps, warmup)
    med = statistics.median(ms)
    flops = 2.0 * grad_macs(dims, b)
    return {
        "kind": "sgemm",
        "model": "-".join(map(str, dims)),
        "batch": b,
        "ms": med,
        "flops": flops,
        "gflops": flops / (med * 1e6),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", action="append", default=None,
                    help="MODEL:BATCH, e.g. 3072-512-512-512-10:128 (repeatable)")
    ap.add_argument("--methods", default="sgd,db,fgr,sam")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--device", default="cuda", help="cuda, or cpu for a smoke test")
    args = ap.parse_args()
    global DEV
    DEV = args.device
    if DEV == "cuda" and not torch.cuda.is_available():
        print("torch_bench: CUDA not available to PyTorch", file=sys.stderr)
        return 2
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")
    configs = args.config or ["3072-512-512-512-10:128", "4096-4096-4096-10:4096"]
    for c in configs:
        model, batch = c.split(":")
        dims = [int(d) for d in model.split("-")]
        b = int(batch)
        for m in args.methods.split(","):
            print(json.dumps(bench_method(dims, b, m, args.steps, args.warmup)), flush=True)
        print(json.dumps(bench_sgemm(dims, b, args.steps, args.warmup)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
