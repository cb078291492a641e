#!/usr/bin/env python3
"""Independent PyTorch float64 reference for fdgr's layer-list model.

Three small conv nets, written as ordinary `torch.nn.Module`s (the way a
PyTorch user writes a ResNet block), with convolutions, batch norm in
training mode, max/average/global pooling and residual additions:

  resnet_relu  stem conv3x3 -> BN -> ReLU; a residual block with an
               identity shortcut; MaxPool2d(2); a strided residual block
               with a 1x1 conv + BN shortcut; AdaptiveAvgPool2d(1);
               Flatten; Linear; softmax cross-entropy.
  smooth_mse   conv (bias) -> tanh; depthwise conv (bias) -> BN2d (+ the
               tanh output) -> tanh; AvgPool2d(3, 2, 1) (zero padding
               counted); grouped conv (groups 2) -> tanh; Flatten; Linear
               -> BatchNorm1d -> sigmoid; Linear; MSE.
  stem_maxpool strided conv (bias) -> BN -> sigmoid -> MaxPool2d(3, 2, 1)
               (padding -inf); 1x1 conv -> BN (+ the pooled input) ->
               tanh; AdaptiveAvgPool2d(1); Linear; cross-entropy.

Everything is computed by PyTorch's autograd, in float64, in training
mode (batch norm normalizes with the batch's own statistics):

  * the loss L(theta) and its gradient g;
  * H v by double backward (autograd.grad of g . v);
  * the step direction d of every method as the project's ALGORITHMS.md
    defines it (sgd, db, fgr, bgr, cgr, sam, usam, flood), with fixed
    hyper-parameters; db's H g is autograd's gradient of (1/2)|g|^2;
  * the training-mode outputs at theta;
  * the running statistics after one accepted training step, theta after
    that step (F-GR direction, torch.optim.SGD with momentum 0.9,
    weight decay 1e-4, lr 0.1: the first step sets the momentum buffer to
    d), and the evaluation-mode outputs (BN on the running statistics)
    of the updated model on the training batch and on two other inputs.

How perturbed points leave the running statistics alone: every derivative
above is taken through `torch.func.functional_call` with the parameters
given as one flat theta and the module's buffers passed as CLONES that are
thrown away afterwards, so those passes use their own batch statistics and
never touch the module's running statistics. The accepted step is then
replayed the way a PyTorch training loop does it, on the module itself:
one training-mode forward at theta (which updates running_mean/var with
momentum 0.1 and the unbiased batch variance, and num_batches_tracked),
the probe at theta + eps*g with the buffers saved before and restored
after (and theta restored from a copy, not by subtracting eps*g), then
`optimizer.step()`. The script checks that this replay gives the same
F-GR direction as the functional computation.

The JSON also carries each net's layer list in the form the Rust test
builds it from (`fdgr_kernel::Layer`); the script checks that description
by running it with torch.nn.functional on the flat theta and comparing the
outputs with the module's.

Then every layer kind on its own ("KIND alone": a tanh, the kind with small
settings, flatten, a linear head), built as a PyTorch user gets it from
fdgr's layer list: the module `Graph` of bench/torch_models.py, for every
kind of its `KINDS`. A new fdgr kind is checked here once it has its
PyTorch module there; the Rust test fails until every `Op::NAMES` kind has
its case.

Writes tests/data/conv_reference.json, read by tests/tests/conv_reference.rs.
Regenerate with:  python3 tests/reference/conv_reference.py
The committed JSON was generated with Python 3.11.7 and torch 2.15.0 on a
CPU (float64, one thread); the versions used are recorded in the JSON
("generator"). Rerunning reproduces it up to float64 rounding.
"""
import json
import math
import pathlib
import platform
import sys

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

import methods
from methods import METHODS

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "bench"))
import torch_models  # noqa: E402  (bench/torch_models.py: the PyTorch module of any layer list)

torch.set_default_dtype(torch.float64)
torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)

HYPER = {
    "gamma": 0.05,
    "eps": 0.1,
    "rho": 0.05,
    "flood_level": 5.0,
    "lr": 0.1,
    "momentum": 0.9,
    "weight_decay": 1e-4,
    "nesterov": False,
    "bn_eps": 1e-5,
    "bn_momentum": 0.1,
}


# ---------------------------------------------------------------- the nets


class BasicBlock(nn.Module):
    """torchvision's ResNet BasicBlock (conv-BN-ReLU-conv-BN, + shortcut, ReLU)."""

    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNetRelu(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(4)
        self.block1 = BasicBlock(4, 4, 1)
        self.pool = nn.MaxPool2d(2)
        self.block2 = BasicBlock(4, 6, 2)
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(6, 5)

    def forward(self, x):
        x = F.relu(self.bn(self.stem(x)))
        x = self.pool(self.block1(x))
        x = self.gap(self.block2(x))
        return self.fc(torch.flatten(x, 1))


RESNET_RELU_LAYERS = [
    {"op": "conv", "out": 4, "k": 3, "stride": 1, "pad": 1, "groups": 1, "bias": False},  # 0
    {"op": "bn"},  # 1
    {"op": "act", "act": "relu"},  # 2
    {"op": "conv", "out": 4, "k": 3, "stride": 1, "pad": 1, "groups": 1, "bias": False},  # 3
    {"op": "bn"},  # 4
    {"op": "act", "act": "relu"},  # 5
    {"op": "conv", "out": 4, "k": 3, "stride": 1, "pad": 1, "groups": 1, "bias": False},  # 6
    {"op": "bn"},  # 7
    {"op": "add", "other": 2},  # 8 = 7 + 2
    {"op": "act", "act": "relu"},  # 9
    {"op": "maxpool", "k": 2, "stride": 2, "pad": 0},  # 10
    {"op": "conv", "out": 6, "k": 3, "stride": 2, "pad": 1, "groups": 1, "bias": False},  # 11
    {"op": "bn"},  # 12
    {"op": "act", "act": "relu"},  # 13
    {"op": "conv", "out": 6, "k": 3, "stride": 1, "pad": 1, "groups": 1, "bias": False},  # 14
    {"op": "bn"},  # 15
    {"op": "conv", "out": 6, "k": 1, "stride": 2, "pad": 0, "groups": 1, "bias": False,
     "src": 10},  # 16: shortcut from the pooled 10
    {"op": "bn"},  # 17
    {"op": "add", "other": 15},  # 18 = 17 + 15
    {"op": "act", "act": "relu"},  # 19
    {"op": "gap"},  # 20
    {"op": "flatten"},  # 21
    {"op": "linear", "out": 5, "bias": True},  # 22
]


class SmoothMse(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 6, 3, padding=1)
        self.dw = nn.Conv2d(6, 6, 3, padding=1, groups=6)
        self.bn = nn.BatchNorm2d(6)
        self.pool = nn.AvgPool2d(3, stride=2, padding=1)
        self.gconv = nn.Conv2d(6, 4, 3, groups=2)
        self.fc1 = nn.Linear(4, 5)
        self.bn1d = nn.BatchNorm1d(5)
        self.fc2 = nn.Linear(5, 3)

    def forward(self, x):
        a = torch.tanh(self.conv(x))
        x = torch.tanh(self.bn(self.dw(a)) + a)
        x = torch.tanh(self.gconv(self.pool(x)))
        x = torch.sigmoid(self.bn1d(self.fc1(torch.flatten(x, 1))))
        return self.fc2(x)


SMOOTH_MSE_LAYERS = [
    {"op": "conv", "out": 6, "k": 3, "stride": 1, "pad": 1, "groups": 1, "bias": True},  # 0
    {"op": "act", "act": "tanh"},  # 1
    {"op": "conv", "out": 6, "k": 3, "stride": 1, "pad": 1, "groups": 6, "bias": True},  # 2
    {"op": "bn"},  # 3
    {"op": "add", "other": 1},  # 4 = 3 + 1
    {"op": "act", "act": "tanh"},  # 5
    {"op": "avgpool", "k": 3, "stride": 2, "pad": 1},  # 6
    {"op": "conv", "out": 4, "k": 3, "stride": 1, "pad": 0, "groups": 2, "bias": True},  # 7
    {"op": "act", "act": "tanh"},  # 8
    {"op": "flatten"},  # 9
    {"op": "linear", "out": 5, "bias": True},  # 10
    {"op": "bn"},  # 11 (BatchNorm1d)
    {"op": "act", "act": "sigmoid"},  # 12
    {"op": "linear", "out": 3, "bias": True},  # 13
]


class StemMaxpool(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3, stride=2, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.pool = nn.MaxPool2d(3, stride=2, padding=1)
        self.conv2 = nn.Conv2d(4, 4, 1)
        self.bn2 = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        a = self.pool(torch.sigmoid(self.bn(self.conv(x))))
        x = torch.tanh(self.bn2(self.conv2(a)) + a)
        x = F.adaptive_avg_pool2d(x, 1)
        return self.fc(torch.flatten(x, 1))


STEM_MAXPOOL_LAYERS = [
    {"op": "conv", "out": 4, "k": 3, "stride": 2, "pad": 1, "groups": 1, "bias": True},  # 0
    {"op": "bn"},  # 1
    {"op": "act", "act": "sigmoid"},  # 2
    {"op": "maxpool", "k": 3, "stride": 2, "pad": 1},  # 3
    {"op": "conv", "out": 4, "k": 1, "stride": 1, "pad": 0, "groups": 1, "bias": True},  # 4
    {"op": "bn"},  # 5
    {"op": "add", "other": 3},  # 6 = 5 + 3
    {"op": "act", "act": "tanh"},  # 7
    {"op": "gap"},  # 8
    {"op": "linear", "out": 3, "bias": True},  # 9
]

# name, module, layer description, input C×H×W, batch, loss, seed
NETS = [
    ("resnet_relu", ResNetRelu, RESNET_RELU_LAYERS, [3, 8, 8], 4, "ce", 11),
    ("smooth_mse", SmoothMse, SMOOTH_MSE_LAYERS, [4, 6, 6], 5, "mse", 12),
    ("stem_maxpool", StemMaxpool, STEM_MAXPOOL_LAYERS, [2, 9, 9], 3, "ce", 13),
]


# Every layer kind of bench/torch_models.py on its own, as a PyTorch user
# gets it from fdgr's layer list (torch_models.Graph), between a tanh and a
# linear head: "KIND alone". The same small settings go to every kind (each
# reads its own fields).
SAMPLE = {"out": 3, "k": 3, "stride": 1, "pad": 1, "groups": 1, "bias": True, "act": "tanh",
          "other": 0}


def alone(i, kind):
    layers = [
        {"op": "act", "act": "tanh"},
        {"op": kind, **SAMPLE, "name": "1"},
        {"op": "flatten"},
        {"op": "linear", "out": 3, "bias": True, "name": "3"},
    ]
    dims = [2, 5, 5] if torch_models.KINDS[kind] == "plane" else [6, 1, 1]
    return (f"{kind} alone", lambda: torch_models.Graph(layers, tuple(dims)), layers, dims, 4,
            "ce", 20 + i)


ALONE = [alone(i, kind) for i, kind in enumerate(torch_models.KINDS)]


# ------------------------------------------------- the layer description


def run_layers(layers, theta, x):
    """Runs a layer description with torch.nn.functional on a flat theta
    (parameters node after node), batch norm in training mode on batch
    statistics. Only used to check that the description is the module."""
    vals, off, prev = [], 0, x

    def take(n, shape):
        nonlocal off
        t = theta[off:off + n].reshape(shape)
        off += n
        return t

    for i, l in enumerate(layers):
        src = l.get("src", "prev")
        inp = x if src == "input" else (prev if src == "prev" else vals[src])
        op = l["op"]
        if op == "conv":
            cin = inp.shape[1]
            w = take(l["out"] * (cin // l["groups"]) * l["k"] ** 2,
                     (l["out"], cin // l["groups"], l["k"], l["k"]))
            b = take(l["out"], (l["out"],)) if l["bias"] else None
            y = F.conv2d(inp, w, b, l["stride"], l["pad"], 1, l["groups"])
        elif op == "linear":
            cin = inp.shape[1]
            w = take(l["out"] * cin, (l["out"], cin))
            b = take(l["out"], (l["out"],)) if l["bias"] else None
            y = F.linear(inp, w, b)
        elif op == "bn":
            c = inp.shape[1]
            g, b = take(c, (c,)), take(c, (c,))
            y = F.batch_norm(inp, None, None, g, b, training=True, eps=HYPER["bn_eps"])
        elif op == "act":
            y = {"relu": torch.relu, "tanh": torch.tanh, "sigmoid": torch.sigmoid}[l["act"]](inp)
        elif op == "maxpool":
            y = F.max_pool2d(inp, l["k"], l["stride"], l["pad"])
        elif op == "avgpool":
            y = F.avg_pool2d(inp, l["k"], l["stride"], l["pad"])
        elif op == "gap":
            y = inp.mean(dim=(2, 3))
        elif op == "flatten":
            y = torch.flatten(inp, 1)
        elif op == "add":
            y = inp + vals[l["other"]]
        else:
            raise ValueError(op)
        vals.append(y)
        prev = y
    assert off == theta.numel(), "the description does not use all of theta"
    return prev


# --------------------------------------------------------- the reference


class Problem:
    def __init__(self, name, cls, layers, input_dims, batch, loss, seed):
        torch.manual_seed(seed)
        self.name, self.layers, self.input, self.batch, self.loss = (
            name, layers, input_dims, batch, loss)
        self.model = cls()
        self.model.train()
        # Parameters: PyTorch's default init, conv/linear weights scaled by
        # 1.5 so the net is far from linear; batch norm's γ, β moved away
        # from 1, 0; biases away from their tiny defaults.
        with torch.no_grad():
            for mod in self.model.modules():
                if isinstance(mod, (nn.Conv2d, nn.Linear)):
                    mod.weight.mul_(1.5)
                    if mod.bias is not None:
                        mod.bias.add_(0.2 * torch.randn_like(mod.bias))
                elif isinstance(mod, (nn.BatchNorm1d, nn.BatchNorm2d)):
                    mod.weight.copy_(1.0 + 0.3 * torch.randn_like(mod.weight))
                    mod.bias.copy_(0.3 * torch.randn_like(mod.bias))
        self.names = [n for n, _ in self.model.named_parameters()]
        self.shapes = [p.shape for _, p in self.model.named_parameters()]
        self.theta = torch.cat([p.detach().reshape(-1) for p in self.model.parameters()])
        self.x = torch.randn(batch, *input_dims)
        self.x_eval = torch.randn(2, *input_dims)
        k = self.outputs()
        if loss == "ce":
            self.labels = torch.randint(0, k, (batch,))
            self.targets = self.labels
            self.crit = nn.CrossEntropyLoss()
        else:
            self.values = torch.randn(batch, k)
            self.targets = self.values
            self.crit = nn.MSELoss()
        self.v = torch.randn(self.theta.numel())

    def outputs(self):
        return [l for l in self.layers if l["op"] == "linear"][-1]["out"]

    def params(self, theta):
        out, off = {}, 0
        for n, s in zip(self.names, self.shapes):
            k = math.prod(s)
            out[n] = theta[off:off + k].view(s)
            off += k
        assert off == theta.numel()
        return out

    def forward(self, theta, x):
        """Training-mode outputs at theta; the module's buffers are not
        touched (clones are passed and dropped)."""
        bufs = {n: b.clone() for n, b in self.model.named_buffers()}
        return functional_call(self.model, {**self.params(theta), **bufs}, (x,))

    def loss_at(self, theta):
        return self.crit(self.forward(theta, self.x), self.targets)

    def grad(self, theta):
        t = theta.detach().clone().requires_grad_(True)
        value = self.loss_at(t)
        (g,) = torch.autograd.grad(value, t)
        return value.item(), g

    def hvp(self, theta, v):
        """Double backward: the gradient of g(θ)·v."""
        t = theta.detach().clone().requires_grad_(True)
        (g,) = torch.autograd.grad(self.loss_at(t), t, create_graph=True)
        (hv,) = torch.autograd.grad(g @ v, t)
        return hv

    def gr_grad(self, theta):
        """Autograd's gradient of (1/2)|g|², i.e. H g (db's term)."""
        t = theta.detach().clone().requires_grad_(True)
        (g,) = torch.autograd.grad(self.loss_at(t), t, create_graph=True)
        (hg,) = torch.autograd.grad(0.5 * (g @ g), t)
        return hg

    def directions(self):
        th = self.theta
        loss, g = self.grad(th)
        d = methods.directions(loss, g, lambda t: self.grad(t)[1], lambda: self.gr_grad(th),
                               lambda v: v.norm(), th, HYPER)
        return loss, g, d

    def training_step(self):
        """One F-GR step the way a PyTorch training loop writes it, on the
        module itself; returns the F-GR direction it used."""
        m, gm, eps = self.model, HYPER["gamma"], HYPER["eps"]
        opt = torch.optim.SGD(m.parameters(), lr=HYPER["lr"], momentum=HYPER["momentum"],
                              weight_decay=HYPER["weight_decay"], nesterov=HYPER["nesterov"])
        m.train()
        params = list(m.parameters())
        # the unperturbed pass: the only one that moves the running statistics
        g = torch.autograd.grad(self.crit(m(self.x), self.targets), params)
        # the probe at θ + εg: save the buffers and θ, perturb, restore
        saved_bufs = {n: b.clone() for n, b in m.named_buffers()}
        saved_theta = [p.detach().clone() for p in params]
        with torch.no_grad():
            for p, gi in zip(params, g):
                p.add_(gi, alpha=eps)
        g2 = torch.autograd.grad(self.crit(m(self.x), self.targets), params)
        with torch.no_grad():
            for p, s in zip(params, saved_theta):
                p.copy_(s)
            for n, b in m.named_buffers():
                b.copy_(saved_bufs[n])
        r = gm / eps
        for p, a, b in zip(params, g, g2):
            p.grad = (1 - r) * a + r * b
        d = torch.cat([p.grad.reshape(-1) for p in params])
        opt.step()
        return d

    def bn_modules(self):
        return [mod for mod in self.model.modules()
                if isinstance(mod, (nn.BatchNorm1d, nn.BatchNorm2d))]

    def reference(self):
        th, v = self.theta, self.v
        # the layer description is the module (same outputs, same θ layout)
        ref_out = self.forward(th, self.x)
        if not self.name.endswith(" alone"):  # those modules are built from the description
            lay_out = run_layers(self.layers, th, self.x)
            assert torch.allclose(ref_out, lay_out, rtol=0, atol=1e-13), self.name
        n_bn = sum(1 for l in self.layers if l["op"] == "bn")
        assert n_bn == len(self.bn_modules())

        loss, g = self.grad(th)
        hv = self.hvp(th, v)
        # double backward agrees with a central difference of the gradient
        h = 1e-6
        fd = (self.grad(th + h * v)[1] - self.grad(th - h * v)[1]) / (2 * h)
        assert (fd - hv).norm() <= 1e-6 * hv.norm(), (self.name, (fd - hv).norm() / hv.norm())
        # and H is symmetric
        u = torch.randn(th.numel())
        assert abs(u @ hv - v @ self.hvp(th, u)) <= 1e-12 * abs(u @ hv)
        loss_d, g_d, dirs = self.directions()
        assert loss_d == loss and torch.equal(g_d, g)
        train_out = self.forward(th, self.x).detach()

        for mod in self.bn_modules():
            assert torch.equal(mod.running_mean, torch.zeros_like(mod.running_mean))
            assert torch.equal(mod.running_var, torch.ones_like(mod.running_var))
        d_step = self.training_step()
        assert (d_step - dirs["fgr"]).norm() <= 1e-14 * dirs["fgr"].norm(), self.name
        state = torch.cat([torch.cat([mod.running_mean, mod.running_var])
                           for mod in self.bn_modules()] or [torch.zeros(0)])
        tracked = [int(mod.num_batches_tracked) for mod in self.bn_modules()]
        assert tracked == [1] * len(tracked)
        theta_after = torch.cat([p.detach().reshape(-1) for p in self.model.parameters()])
        # torch.optim.SGD's first step by hand: buf = d + λθ; θ ← θ − η·buf
        by_hand = th - HYPER["lr"] * (dirs["fgr"] + HYPER["weight_decay"] * th)
        assert (by_hand - theta_after).norm() <= 1e-14 * th.norm()
        self.model.eval()
        with torch.no_grad():
            eval_out = self.model(self.x)
            eval_other = self.model(self.x_eval)
        self.model.train()

        flat = lambda t: t.detach().reshape(-1).tolist()
        case = {
            "name": self.name,
            "loss": self.loss,
            "input": self.input,
            "batch": self.batch,
            "layers": self.layers,
            "param_shapes": [[n, list(s)] for n, s in zip(self.names, self.shapes)],
            "theta": flat(th),
            "x": flat(self.x),
            "v": flat(v),
            "loss_value": loss,
            "grad": flat(g),
            "hv": flat(hv),
            "directions": {k: flat(dirs[k]) for k in METHODS},
            "train_outputs": flat(train_out),
            "running_state": flat(state),
            "batches_tracked": tracked[0] if tracked else 0,
            "theta_after": flat(theta_after),
            "eval_outputs": flat(eval_out),
            "x_eval": flat(self.x_eval),
            "eval_outputs_other": flat(eval_other),
        }
        if self.loss == "ce":
            case["labels"] = self.labels.tolist()
        else:
            case["values"] = flat(self.values)
        return case


def dump(doc):
    """JSON with one line per case entry (per layer for the layer list),
    every number array on its line: small, and diffs stay readable."""
    one = lambda v: json.dumps(v, separators=(",", ":"))
    lines = ["{", f' "generator": {one(doc["generator"])},', f' "hyper": {one(doc["hyper"])},',
             ' "cases": [']
    for i, case in enumerate(doc["cases"]):
        items = []
        for k, v in case.items():
            if k == "layers":
                rows = ",\n".join(f"   {one(l)}" for l in v)
                items.append(f'  "{k}": [\n{rows}\n  ]')
            elif k == "directions":
                rows = ",\n".join(f'   "{m}": {one(d)}' for m, d in v.items())
                items.append(f'  "{k}": {{\n{rows}\n  }}')
            else:
                items.append(f'  "{k}": {one(v)}')
        end = "," if i + 1 < len(doc["cases"]) else ""
        lines.append(" {\n" + ",\n".join(items) + "\n }" + end)
    lines += [" ]", "}"]
    text = "\n".join(lines) + "\n"
    assert json.loads(text) == doc
    return text


def main():
    cases = []
    for name, cls, layers, dims, batch, loss, seed in NETS + ALONE:
        p = Problem(name, cls, layers, dims, batch, loss, seed)
        cases.append(p.reference())
        print(f"{name}: P = {p.theta.numel()}, loss {cases[-1]['loss_value']:.6f}")
    doc = {
        "generator": {
            "script": "tests/reference/conv_reference.py",
            "python": platform.python_version(),
            "torch": torch.__version__,
            "dtype": "float64",
        },
        "hyper": HYPER,
        "cases": cases,
    }
    out = pathlib.Path(__file__).resolve().parent.parent / "data" / "conv_reference.json"
    out.write_text(dump(doc))
    print(f"wrote {out} ({len(cases)} nets, {out.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
