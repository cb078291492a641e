#!/usr/bin/env python3
"""The same training steps as `fdgr bench`, in PyTorch eager mode.

Each method is written the way a PyTorch user would, following
ALGORITHMS.md: F-GR keeps g, perturbs θ in place by εg, takes g' and
restores θ from a copy; DB uses double backprop (autograd.grad with
create_graph=True, then the gradient of ½‖g‖²); SAM normalises g. All
methods finish with torch.optim.SGD (momentum 0.9, weight decay 1e-4), as
`fdgr bench` does. Batch norm runs in training mode; as in fdgr, only the
unperturbed gradient pass updates the running statistics: the passes at
perturbed points (F-GR's θ + εg, SAM's ascent point, …) save and restore
the module's buffers. Prints one JSON object per method, with the fields
of `fdgr bench --json`.

`--model` takes MLP widths (784-512-512-10) or a preset of
bench/torch_models.py (resnet20, lenet5, …) with `--input CxHxW` and
`--classes`, as `fdgr bench` does.

    python3 bench/torch_steps.py --model 784-512-512-10 --batch 128 --threads 2
    python3 bench/torch_steps.py --model resnet20 --input 3x32x32 --batch 128 --threads 2
"""
import argparse
import json
import pathlib
import statistics
import sys
import time

import torch
from torch import nn

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import torch_models  # noqa: E402


def build_mlp(dims, act):
    layers = []
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
        layers.append(nn.Linear(a, b))
        if i + 2 < len(dims):
            layers.append({"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid}[act]())
    return nn.Sequential(*layers)


def build(spec, act, input_dims, classes):
    """The module and the shape of one input sample."""
    if all(p.isdigit() for p in spec.split("-")):
        dims = [int(v) for v in spec.split("-")]
        return build_mlp(dims, act), (dims[0],), dims[-1]
    m = torch_models.preset(spec, input_dims, classes, act)
    if m is None:
        raise SystemExit(f"unknown model {spec}: MLP widths or a preset of bench/torch_models.py")
    return m, tuple(input_dims), classes


class Probe:
    """A gradient pass at a perturbed point: the module's buffers (batch-norm
    running statistics, num_batches_tracked) are restored afterwards."""

    def __init__(self, model):
        self.bufs = list(model.buffers())

    def __enter__(self):
        self.saved = [b.detach().clone() for b in self.bufs]

    def __exit__(self, *exc):
        with torch.no_grad():
            for b, s in zip(self.bufs, self.saved):
                b.copy_(s)
        return False


def grads(model, x, y):
    model.zero_grad(set_to_none=False)
    loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()
    return loss, [p.grad.detach().clone() for p in model.parameters()]


def step_fn(method, model, opt, x, y, gamma=0.05, eps=0.1, rho=0.05, level=0.01):
    params = list(model.parameters())

    def finish(d):
        for p, di in zip(params, d):
            p.grad = di
        opt.step()

    if method in ("sgd", "flood"):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        if method == "flood":
            loss = (loss - level).abs() + level
        loss.backward()
        opt.step()
    elif method in ("fgr", "bgr", "sam", "usam"):
        _, g = grads(model, x, y)
        if method == "sam":
            n = torch.sqrt(sum((gi * gi).sum() for gi in g))
            scale = rho / n
        elif method == "usam":
            scale = rho
        else:
            scale = eps if method == "fgr" else -eps
        saved = [p.detach().clone() for p in params]
        with torch.no_grad():
            for p, gi in zip(params, g):
                p.add_(gi, alpha=float(scale))
        with Probe(model):
            _, g2 = grads(model, x, y)
        with torch.no_grad():
            for p, s in zip(params, saved):
                p.copy_(s)
        if method in ("sam", "usam"):
            finish(g2)
        else:
            r = gamma / scale
            finish([(1 - r) * a + r * b for a, b in zip(g, g2)])
    elif method == "cgr":
        _, g = grads(model, x, y)
        saved = [p.detach().clone() for p in params]
        outs = []
        for sgn in (1.0, -1.0):
            with torch.no_grad():
                for p, s, gi in zip(params, saved, g):
                    p.copy_(s).add_(gi, alpha=sgn * eps)
            with Probe(model):
                outs.append(grads(model, x, y)[1])
        with torch.no_grad():
            for p, s in zip(params, saved):
                p.copy_(s)
        c = gamma / (2 * eps)
        finish([gi + c * (a - b) for gi, a, b in zip(g, outs[0], outs[1])])
    elif method == "db":
        loss = nn.functional.cross_entropy(model(x), y)
        g = torch.autograd.grad(loss, params, create_graph=True)
        reg = 0.5 * sum((gi * gi).sum() for gi in g)
        hg = torch.autograd.grad(reg, params)
        finish([gi.detach() + gamma * h for gi, h in zip(g, hg)])
    else:
        raise SystemExit(f"unknown method {method}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="784-512-512-10")
    ap.add_argument("--act", default="relu")
    ap.add_argument("--input", default="3x32x32", help="CxHxW for presets (MLP widths give their own)")
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--methods", default="sgd,db,fgr,bgr,sam")
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=3)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(1)
    input_dims = tuple(int(v) for v in a.input.lower().split("x"))
    for m in a.methods.split(","):
        model, shape, classes = build(a.model, a.act, input_dims, a.classes)
        model.train()
        x = torch.randn(a.batch, *shape)
        y = torch.randint(0, classes, (a.batch,))
        opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, weight_decay=1e-4)
        times = []
        for k in range(a.warmup + a.repeats):
            t = time.perf_counter()
            step_fn(m, model, opt, x, y)
            if k >= a.warmup:
                times.append((time.perf_counter() - t) * 1e3)
        print(json.dumps({
            "method": m, "backend": "pytorch-cpu", "model": a.model, "act": a.act, "batch": a.batch,
            "threads": a.threads, "median_ms": statistics.median(times), "min_ms": min(times),
            "max_ms": max(times), "repeats": len(times), "torch": torch.__version__,
        }), flush=True)


if __name__ == "__main__":
    main()
