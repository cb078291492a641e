"""The step direction of every GR method as ALGORITHMS.md defines it: the
one definition both independent references use (mlp_reference.py, numpy
with its own dual-number Hessian-vector products; conv_reference.py,
PyTorch float64 autograd). A new method is its entry here, beside its
kernel file (kernel/src/method.rs); then regenerate both references.
"""

METHODS = ["sgd", "db", "fgr", "bgr", "cgr", "sam", "usam", "flood"]


def directions(loss, g, grad_at, h_g, norm, th, hp):
    """Each method's direction d at theta = th, from: `loss` and `g`, the
    loss and gradient at th; `grad_at(t)`, the gradient at another point;
    `h_g()`, H g exactly (double backprop); `norm(v)`, the Euclidean norm;
    `hp`, the hyper-parameters (gamma, eps, rho, flood_level)."""
    gm, eps, rho, lvl = (hp[k] for k in ("gamma", "eps", "rho", "flood_level"))
    r = gm / eps
    d = {
        "sgd": g,
        "db": g + gm * h_g(),
        "fgr": (1 - r) * g + r * grad_at(th + eps * g),
        "bgr": (1 + r) * g - r * grad_at(th - eps * g),
        "cgr": g + gm * (grad_at(th + eps * g) - grad_at(th - eps * g)) / (2 * eps),
        "sam": grad_at(th + rho * g / norm(g)),
        "usam": grad_at(th + rho * g),
        "flood": (1.0 if loss > lvl else -1.0 if loss < lvl else 0.0) * g,
    }
    assert list(d) == METHODS
    return d
