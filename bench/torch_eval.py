#!/usr/bin/env python3
"""Loads an fdgr `model.safetensors` into the equivalent PyTorch module with
`load_state_dict(strict=True)`, evaluates it on exactly the samples `fdgr
eval --dump` evaluated, and prints the same accuracy (and how far the
logits are from fdgr's).

    fdgr eval --ckpt RUN --data mnist5k --dump /tmp/eval.safetensors
    python3 bench/torch_eval.py RUN/model.safetensors /tmp/eval.safetensors

Exit status 1 if the state dict does not load strictly, the accuracy
differs, or a logit differs by more than 1e-3 relative to the largest.
"""
import json
import os
import sys

import torch
from safetensors import safe_open
from safetensors.torch import load_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_models import count, from_metadata  # noqa: E402


def main():
    if len(sys.argv) != 3:
        print(__doc__)
        return 2
    model_path, dump_path = sys.argv[1], sys.argv[2]
    with safe_open(model_path, "pt") as f:
        meta = f.metadata()
    state = load_file(model_path)
    m = from_metadata(meta).double()
    # fdgr stores f32 weights and an I64 num_batches_tracked, as PyTorch does
    state = {k: (v.double() if v.is_floating_point() else v) for k, v in state.items()}
    missing, unexpected = m.load_state_dict(state, strict=True), None
    m.eval()
    d = load_file(dump_path)
    x, y, want = d["x"].double(), d["y"], d["logits"].double()
    with torch.no_grad():
        got = m(x)
    acc_t = (got.argmax(1) == y).double().mean().item()
    acc_f = (want.argmax(1) == y).double().mean().item()
    err = ((got - want).abs().max() / want.abs().max()).item()
    print(
        json.dumps(
            {
                "model": meta.get("fdgr.spec"),
                "module": type(m).__name__,
                "parameters": count(m),
                "samples": len(y),
                "accuracy_pytorch": acc_t,
                "accuracy_fdgr": acc_f,
                "max_logit_rel_diff": err,
            }
        )
    )
    ok = acc_t == acc_f and err < 1e-3
    print("agree" if ok else "DISAGREE")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
