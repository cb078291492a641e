#!/usr/bin/env python3
"""PyTorch float64 trace of torch.optim.Adam, AdamW and SGD, the reference
for fdgr's optimizer rules (tests/tests/optim.rs).

A fixed sequence of directions d_1..d_T (random, seeded) is handed to each
optimizer as the gradient (p.grad = d_t; opt.step()), from the same θ_0,
in float64; θ after every step is recorded, with the final state vectors.
fdgr applies the same directions through its per-element rule and must
land on the same numbers (to float64 rounding).

    python3 tests/reference/optim_reference.py > tests/data/optim_reference.json
"""
import json
import sys

import torch

torch.manual_seed(20261130)
torch.use_deterministic_algorithms(True)
N, T = 40, 6
theta0 = torch.randn(N, dtype=torch.float64)
ds = [torch.randn(N, dtype=torch.float64) * (0.5 + t) for t in range(T)]

CASES = [
    ("adam", torch.optim.Adam, dict(lr=0.01, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)),
    ("adam_wd", torch.optim.Adam, dict(lr=0.01, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.1)),
    ("adamw", torch.optim.AdamW, dict(lr=0.01, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.1)),
    ("adam_beta1_0.3", torch.optim.Adam, dict(lr=0.05, betas=(0.3, 0.9), eps=1e-6, weight_decay=0.0)),
    ("adam_rmsprop_like", torch.optim.Adam, dict(lr=0.05, betas=(0.0, 0.5), eps=0.0, weight_decay=0.0)),
    ("sgd_paper", torch.optim.SGD, dict(lr=0.1, momentum=0.9, weight_decay=1e-4)),
    ("sgd_nesterov", torch.optim.SGD, dict(lr=0.1, momentum=0.5, nesterov=True, weight_decay=0.01)),
]

out = {
    "generator": f"tests/reference/optim_reference.py, torch {torch.__version__}, float64, "
                 "foreach=False (single-tensor path)",
    "theta0": theta0.tolist(),
    "directions": [d.tolist() for d in ds],
    "cases": [],
}
for name, cls, kw in CASES:
    p = torch.nn.Parameter(theta0.clone())
    opt = cls([p], foreach=False, **kw)
    traj = []
    for d in ds:
        p.grad = d.clone()
        opt.step()
        traj.append(p.detach().clone().tolist())
    st = opt.state[p]
    state = {k: v.tolist() for k, v in st.items() if torch.is_tensor(v) and v.dim() == 1}
    out["cases"].append({"name": name, "optimizer": cls.__name__, "hyper": kw, "theta": traj,
                         "state": state})
json.dump(out, sys.stdout)
