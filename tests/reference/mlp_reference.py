#!/usr/bin/env python3
"""Independent f64 reference for fdgr's MLP maths, in numpy.

Written separately from the Rust kernel and in a different way: the
gradient is ordinary matrix backprop, and the Hessian-vector product is
NOT an R-operator derivation: it is obtained mechanically by running that
same backprop on dual numbers (value + tangent), i.e. forward-mode
differentiation of the gradient along v.

Writes tests/data/mlp_reference.json, which tests/tests/reference.rs reads.
Regenerate with:  python3 tests/reference/mlp_reference.py
"""
import json
import pathlib

import numpy as np

import methods


class D:
    """A dual number array: value v and tangent t (derivative along v)."""

    def __init__(self, v, t=None):
        self.v = np.asarray(v, dtype=np.float64)
        self.t = np.zeros_like(self.v) if t is None else np.asarray(t, dtype=np.float64)

    def __add__(self, o):
        o = lift(o)
        return D(self.v + o.v, self.t + o.t)

    __radd__ = __add__

    def __sub__(self, o):
        o = lift(o)
        return D(self.v - o.v, self.t - o.t)

    def __rsub__(self, o):
        return lift(o) - self

    def __neg__(self):
        return D(-self.v, -self.t)

    def __mul__(self, o):
        o = lift(o)
        return D(self.v * o.v, self.t * o.v + self.v * o.t)

    __rmul__ = __mul__

    def __truediv__(self, o):
        o = lift(o)
        return D(self.v / o.v, (self.t * o.v - self.v * o.t) / (o.v * o.v))

    def __rtruediv__(self, o):
        return lift(o) / self

    def __matmul__(self, o):
        o = lift(o)
        return D(self.v @ o.v, self.t @ o.v + self.v @ o.t)

    def __rmatmul__(self, o):
        return lift(o) @ self

    @property
    def T(self):
        return D(self.v.T, self.t.T)

    def sum(self, axis=None, keepdims=False):
        return D(self.v.sum(axis=axis, keepdims=keepdims), self.t.sum(axis=axis, keepdims=keepdims))

    def __getitem__(self, k):
        return D(self.v[k], self.t[k])


def lift(o):
    return o if isinstance(o, D) else D(o)


def d_exp(x):
    e = np.exp(x.v)
    return D(e, e * x.t)


def d_log(x):
    return D(np.log(x.v), x.t / x.v)


def d_tanh(x):
    y = np.tanh(x.v)
    return D(y, (1.0 - y * y) * x.t)


def d_sigmoid(x):
    return 1.0 / (1.0 + d_exp(-x))


def unpack(theta, dims):
    layers, o = [], 0
    for n_in, n_out in zip(dims[:-1], dims[1:]):
        w = theta[o:o + n_out * n_in]
        w = D(w.v.reshape(n_out, n_in), w.t.reshape(n_out, n_in))
        o += n_out * n_in
        b = theta[o:o + n_out]
        o += n_out
        layers.append((w, b))
    return layers


def act_f(name, z):
    if name == "tanh":
        return d_tanh(z)
    if name == "sigmoid":
        return d_sigmoid(z)
    if name == "relu":
        return z * (z.v > 0)
    return z


def act_df(name, a):
    """σ'(z) written with a = σ(z), as dual numbers."""
    if name == "tanh":
        return 1.0 - a * a
    if name == "sigmoid":
        return a * (1.0 - a)
    if name == "relu":
        return D((a.v > 0).astype(float))
    return D(np.ones_like(a.v))


def loss_and_grad(theta, prob):
    """Mean loss and its gradient by plain backprop; works on D arrays."""
    dims, act, loss = prob["dims"], prob["act"], prob["loss"]
    x = np.array(prob["x"]).reshape(-1, dims[0])
    bsz = x.shape[0]
    layers = unpack(theta, dims)
    acts = [D(x)]
    for i, (w, b) in enumerate(layers):
        z = acts[-1] @ w.T + b
        acts.append(act_f(act, z) if i + 1 < len(layers) else z)
    out = acts[-1]
    k = dims[-1]
    if loss == "ce":
        y = np.array(prob["labels"])
        onehot = np.eye(k)[y]
        m = out.v.max(axis=1, keepdims=True)
        e = d_exp(out - m)
        s = e.sum(axis=1, keepdims=True)
        p = e / s
        lse = d_log(s) + m
        value = (lse.sum() - (out * onehot).sum()) / bsz
        delta = (p - onehot) / bsz
    else:
        t = np.array(prob["values"]).reshape(bsz, k)
        err = out - t
        value = (err * err).sum() / (bsz * k)
        delta = err * (2.0 / (bsz * k))
    grads = []
    for i in range(len(layers) - 1, -1, -1):
        w, _ = layers[i]
        grads.append(((delta.T @ acts[i]), delta.sum(axis=0)))
        if i > 0:
            delta = (delta @ w) * act_df(act, acts[i])
    grads.reverse()
    flat_v = np.concatenate([np.concatenate([gw.v.ravel(), gb.v]) for gw, gb in grads])
    flat_t = np.concatenate([np.concatenate([gw.t.ravel(), gb.t]) for gw, gb in grads])
    return value, D(flat_v, flat_t)


def grad(theta, prob):
    value, g = loss_and_grad(D(theta), prob)
    return value.v.item(), g.v


def hvp(theta, v, prob):
    _, g = loss_and_grad(D(theta, v), prob)
    return g.t


def problem(seed, dims, act, loss, bsz):
    rng = np.random.default_rng(seed)
    p = sum(o * (i + 1) for i, o in zip(dims[:-1], dims[1:]))
    return {
        "dims": dims,
        "act": act,
        "loss": loss,
        "theta": rng.normal(0.0, 0.7, p).tolist(),
        "x": rng.normal(0.0, 1.0, bsz * dims[0]).tolist(),
        "labels": rng.integers(0, dims[-1], bsz).tolist(),
        "values": rng.normal(0.0, 1.0, bsz * dims[-1]).tolist(),
        "v": rng.normal(0.0, 1.0, p).tolist(),
    }


def directions(prob, hp):
    th = np.array(prob["theta"])
    loss, g = grad(th, prob)
    d = methods.directions(loss, g, lambda t: grad(t, prob)[1], lambda: hvp(th, g, prob),
                           np.linalg.norm, th, hp)
    return loss, {k: v.tolist() for k, v in d.items()}


def sgd_run(prob, hp):
    """Three PyTorch-convention SGD steps (momentum, Nesterov, weight decay)
    with the fgr direction."""
    th = np.array(prob["theta"])
    buf = None
    mu, wd, lr, nest = hp["momentum"], hp["weight_decay"], hp["lr"], hp["nesterov"]
    gm, eps = hp["gamma"], hp["eps"]
    for _ in range(3):
        _, g = grad(th, prob)
        r = gm / eps
        d = (1 - r) * g + r * grad(th + eps * g, prob)[1]
        d = d + wd * th
        buf = d.copy() if buf is None else mu * buf + d
        d = d + mu * buf if nest else buf
        th = th - lr * d
    return th.tolist()


def main():
    hp = {"gamma": 0.03, "eps": 0.1, "rho": 0.05, "flood_level": 5.0,
          "momentum": 0.9, "weight_decay": 1e-3, "lr": 0.1, "nesterov": True}
    cases = []
    for seed, dims, act, loss, bsz in [
        (1, [4, 5, 3], "tanh", "ce", 3),
        (2, [3, 4, 2], "sigmoid", "mse", 2),
        (3, [5, 6, 4, 3], "relu", "ce", 4),
        (4, [2, 3, 3, 3, 2], "tanh", "mse", 3),
    ]:
        prob = problem(seed, dims, act, loss, bsz)
        th = np.array(prob["theta"])
        value, g = grad(th, prob)
        # the dual-number Hv agrees with a central difference of the gradient
        v = np.array(prob["v"])
        h = 1e-5
        fd = (grad(th + h * v, prob)[1] - grad(th - h * v, prob)[1]) / (2 * h)
        hv = hvp(th, v, prob)
        assert np.linalg.norm(fd - hv) <= 1e-6 * np.linalg.norm(hv), (dims, act)
        loss_v, dirs = directions(prob, hp)
        assert loss_v == value
        prob.update({
            "loss": loss, "loss_value": value, "grad": g.tolist(),
            "hv": hvp(th, np.array(prob["v"]), prob).tolist(),
            "directions": dirs, "sgd_run": sgd_run(prob, hp),
        })
        cases.append(prob)
    out = pathlib.Path(__file__).resolve().parent.parent / "data" / "mlp_reference.json"
    out.write_text(json.dumps({"hyper": hp, "cases": cases}, indent=1) + "\n")
    print(f"wrote {out} ({len(cases)} cases)")


if __name__ == "__main__":
    main()
