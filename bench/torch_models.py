"""The PyTorch modules equivalent to fdgr's `--model` presets and layer
lists, with the same parameter and buffer names, so that an fdgr
`model.safetensors` loads with `load_state_dict(strict=True)`.

Presets are the usual definitions: He et al.'s CIFAR ResNets with 1×1
conv + BN projection shortcuts (`resnet20` … `resnet110`), the CIFAR
ResNet-18 (3×3 stem, no max-pool), Zagoruyko & Komodakis' wide ResNets
(pre-activation blocks, `wrn-D-K`), LeNet-5. Anything else is rebuilt from
the layer list fdgr stores in the file's metadata (`fdgr.layers`).
"""
import json

import torch
import torch.nn as nn
import torch.nn.functional as F


class BasicBlock(nn.Module):
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


class CifarResNet(nn.Module):
    """He et al. (2016), CIFAR: depth 6n+2, widths 16/32/64."""

    def __init__(self, depth, classes, cin=3):
        super().__init__()
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(cin, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        c = 16
        for g, w in enumerate([16, 32, 64]):
            blocks = []
            for i in range(n):
                blocks.append(BasicBlock(c, w, 2 if g > 0 and i == 0 else 1))
                c = w
            setattr(self, f"layer{g + 1}", nn.Sequential(*blocks))
        self.linear = nn.Linear(64, classes)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.linear(out)


class ResNet18(nn.Module):
    """The CIFAR ResNet-18: 3×3 stem, no max-pool, BasicBlock [2, 2, 2, 2]."""

    def __init__(self, classes, cin=3):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, 64, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        c = 64
        for g, w in enumerate([64, 128, 256, 512]):
            blocks = []
            for i in range(2):
                blocks.append(BasicBlock(c, w, 2 if g > 0 and i == 0 else 1))
                c = w
            setattr(self, f"layer{g + 1}", nn.Sequential(*blocks))
        self.linear = nn.Linear(512, classes)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        for g in range(1, 5):
            out = getattr(self, f"layer{g}")(out)
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.linear(out)


class WideBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.relu1 = nn.ReLU()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu2 = nn.ReLU()
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.equal = cin == cout and stride == 1
        self.convShortcut = None if self.equal else nn.Conv2d(cin, cout, 1, stride, bias=False)

    def forward(self, x):
        a = self.relu1(self.bn1(x))
        out = self.conv2(self.relu2(self.bn2(self.conv1(a))))
        return out + (x if self.equal else self.convShortcut(a))


class NetworkBlock(nn.Module):
    def __init__(self, n, cin, cout, stride):
        super().__init__()
        self.layer = nn.Sequential(
            *[WideBlock(cin if i == 0 else cout, cout, stride if i == 0 else 1) for i in range(n)]
        )

    def forward(self, x):
        return self.layer(x)


class WideResNet(nn.Module):
    """Zagoruyko & Komodakis (2016): depth 6n+4, widths 16k/32k/64k."""

    def __init__(self, depth, k, classes, cin=3):
        super().__init__()
        n = (depth - 4) // 6
        w = [16, 16 * k, 32 * k, 64 * k]
        self.conv1 = nn.Conv2d(cin, 16, 3, 1, 1, bias=False)
        self.block1 = NetworkBlock(n, w[0], w[1], 1)
        self.block2 = NetworkBlock(n, w[1], w[2], 2)
        self.block3 = NetworkBlock(n, w[2], w[3], 2)
        self.bn1 = nn.BatchNorm2d(w[3])
        self.relu = nn.ReLU()
        self.fc = nn.Linear(w[3], classes)

    def forward(self, x):
        out = self.block3(self.block2(self.block1(self.conv1(x))))
        out = self.relu(self.bn1(out))
        return self.fc(F.adaptive_avg_pool2d(out, 1).flatten(1))


ACTS = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "identity": nn.Identity}

# The layer kinds `Graph` builds (fdgr's `Op::NAMES`), each with the input it
# takes on its own: "plane" (C×H×W) or "vector". tests/reference/
# conv_reference.py checks every kind listed here alone against fdgr, so a
# new fdgr kind is its branch in `Graph` and its entry here.
KINDS = {
    "linear": "vector",
    "conv": "plane",
    "bn": "plane",
    "act": "plane",
    "maxpool": "plane",
    "avgpool": "plane",
    "gap": "plane",
    "flatten": "plane",
    "add": "plane",
}


class LeNet5(nn.Module):
    """LeNet-5 with fdgr's size adaptation (padding so each 5×5 conv keeps
    at least a 2×2 map after pooling)."""

    def __init__(self, cin, h, classes, act="relu"):
        super().__init__()
        p1 = 2 if h < 32 else 0
        h1 = max(h + 2 * p1 - 4, 0) // 2
        p2 = 2 if h1 < 10 else 0
        h2 = (h1 + 2 * p2 - 4) // 2
        self.conv1 = nn.Conv2d(cin, 6, 5, padding=p1)
        self.conv2 = nn.Conv2d(6, 16, 5, padding=p2)
        self.fc1 = nn.Linear(16 * h2 * h2, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, classes)
        self.act = ACTS[act]()

    def forward(self, x):
        a = self.act
        x = F.max_pool2d(a(self.conv1(x)), 2)
        x = F.max_pool2d(a(self.conv2(x)), 2)
        x = x.flatten(1)
        return self.fc3(a(self.fc2(a(self.fc1(x)))))


class Graph(nn.Module):
    """Any fdgr layer list (the `fdgr.layers` metadata): each entry
    `{"op": …, "src": i|-1|null, "other": j, "name": "layer1.0.conv1", …}`,
    modules registered under their dotted names."""

    def __init__(self, layers, input_dims):
        super().__init__()
        self.layers = layers
        self.mods = {}
        dims = []  # output (c, h, w) per layer
        for i, l in enumerate(layers):
            src = l.get("src")
            d = input_dims if (i == 0 and src is None) or src == -1 else dims[src if src is not None else i - 1]
            c, h, w = d
            op = l["op"]
            m = None
            if op == "linear":
                m = nn.Linear(c * h * w, l["out"], bias=l["bias"])
                out = (l["out"], 1, 1)
            elif op == "conv":
                m = nn.Conv2d(c, l["out"], l["k"], l["stride"], l["pad"], groups=l["groups"], bias=l["bias"])
                oh = (h + 2 * l["pad"] - l["k"]) // l["stride"] + 1
                ow = (w + 2 * l["pad"] - l["k"]) // l["stride"] + 1
                out = (l["out"], oh, ow)
            elif op == "bn":
                m = nn.BatchNorm2d(c) if h * w > 1 else nn.BatchNorm1d(c)
                out = d
            elif op in ("maxpool", "avgpool"):
                oh = (h + 2 * l["pad"] - l["k"]) // l["stride"] + 1
                ow = (w + 2 * l["pad"] - l["k"]) // l["stride"] + 1
                out = (c, oh, ow)
            elif op == "gap":
                out = (c, 1, 1)
            elif op == "flatten":
                out = (c * h * w, 1, 1)
            else:  # act, add
                out = d
            dims.append(out)
            if m is not None:
                self._register(l["name"], m)
                self.mods[i] = m
        self.dims = dims
        self.input_dims = input_dims

    def _register(self, dotted, m):
        parts = dotted.split(".")
        parent = self
        for p in parts[:-1]:
            if not hasattr(parent, p) or getattr(parent, p) is None:
                parent.add_module(p, nn.Module())
            parent = getattr(parent, p)
        parent.add_module(parts[-1], m)

    def forward(self, x):
        outs = []
        for i, l in enumerate(self.layers):
            src = l.get("src")
            v = x if (i == 0 and src is None) or src == -1 else outs[src if src is not None else i - 1]
            op = l["op"]
            if op == "linear":
                y = self.mods[i](v.flatten(1))
            elif op in ("conv",):
                y = self.mods[i](v)
            elif op == "bn":
                y = self.mods[i](v if v.dim() == 4 and v.shape[2] * v.shape[3] > 1 else v.flatten(1))
                if v.dim() == 4 and y.dim() == 2:
                    y = y.view_as(v)
            elif op == "act":
                y = ACTS[l["act"]]()(v)
            elif op == "maxpool":
                y = F.max_pool2d(v, l["k"], l["stride"], l["pad"])
            elif op == "avgpool":
                y = F.avg_pool2d(v, l["k"], l["stride"], l["pad"])
            elif op == "gap":
                y = F.adaptive_avg_pool2d(v, 1)
            elif op == "flatten":
                y = v.flatten(1)
            elif op == "add":
                y = v + outs[l["other"]]
            else:
                raise ValueError(f"unknown op {op}")
            # keep NCHW for vectors so later layers see (N, C, 1, 1)
            if y.dim() == 2:
                y = y.view(y.shape[0], y.shape[1], 1, 1)
            outs.append(y)
        return outs[-1].flatten(1)


def preset(spec, input_dims, classes, act="relu"):
    """The standard module of a preset name, or None."""
    c, h, _ = input_dims
    if spec.startswith("resnet"):
        d = int(spec[6:])
        return ResNet18(classes, c) if d == 18 else CifarResNet(d, classes, c)
    if spec.startswith("wrn-"):
        d, k = map(int, spec[4:].split("-"))
        return WideResNet(d, k, classes, c)
    if spec in ("lenet5", "lenet"):
        return LeNet5(c, h, classes, act)
    return None


def from_metadata(meta):
    """The module of an fdgr safetensors file's metadata: the standard
    preset when the spec is one, else the graph of its layer list."""
    dims = tuple(json.loads(meta["fdgr.input"]))
    classes = int(meta["fdgr.classes"])
    spec = meta["fdgr.spec"]
    m = preset(spec, dims, classes, meta.get("fdgr.act", "relu"))
    if m is None:
        m = Graph(json.loads(meta["fdgr.layers"]), dims)
    return m


def count(m):
    return sum(p.numel() for p in m.parameters())


if __name__ == "__main__":
    for name, m in [
        ("resnet20", CifarResNet(20, 10)),
        ("resnet56/100", CifarResNet(56, 100)),
        ("resnet18", ResNet18(10)),
        ("wrn-16-4", WideResNet(16, 4, 10)),
        ("wrn-28-10", WideResNet(28, 10, 10)),
        ("lenet5 28x28", LeNet5(1, 28, 10)),
        ("lenet5 32x32", LeNet5(3, 32, 10)),
        ("lenet5 8x8", LeNet5(1, 8, 10)),
    ]:
        print(f"{name:14} {count(m):>12,}")
