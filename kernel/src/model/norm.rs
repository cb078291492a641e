//! `BatchNorm` (2-d over N·H·W per channel, or 1-d over N on vectors):
//! training mode normalizes with the batch's own statistics, which depend
//! on θ, so its backward has the mean-subtraction terms and its R-passes
//! differentiate the statistics too (formulas in
//! [`crate::serial::norm`]).
//!
//! Running statistics: only a forward pass that asks for it (the step's
//! unperturbed gradient, [`crate::Pass::Train`]) computes their update,
//! into this node's scratch; the objective applies it when the step is
//! accepted. Gradients at perturbed points use their own batch statistics
//! and leave the running statistics alone.

use super::ctx::Ctx;
use super::{cmul, Dims, Init, Maths, Mode, Node, Tensor, Tensors};
use crate::error::Error;
use crate::ops::{BnBwd, BnFwd, BnRBwd, BnRFwd, Loc, Mem, Ops};
use crate::real::Real;
use crate::serial::BnGeom;

/// Its parameters on `d`: γ and β, one each per channel.
pub const fn checked_param_len(d: Dims) -> Result<usize, Error> {
    cmul(2, d.c)
}

/// Its parameter tensors on `d`, as `nn.BatchNorm2d` names them: γ = 1,
/// β = 0.
pub const fn tensors(d: Dims) -> Tensors {
    Tensors::of(
        Tensor::vector("weight", d.c, Init::Ones),
        Some(Tensor::vector("bias", d.c, Init::Zeros)),
    )
}

/// The geometry of node `n` on a batch of `b`.
pub fn geom(n: &Node, b: usize) -> BnGeom {
    BnGeom {
        n: b,
        c: n.in_dims.c,
        hw: n.in_dims.hw(),
    }
}

/// Where node `n`'s running statistics (mean C, variance C) live.
pub fn running(n: &Node) -> Loc {
    Loc::new(Mem::State, n.state_off)
}

/// Where node `n`'s pending running statistics live.
pub fn pending(c: &Ctx<'_>, n: &Node) -> Loc {
    c.ext(n, super::BN_PENDING)
}

/// Batch normalization (`Op::BatchNorm`).
pub struct BatchNorm;

impl Maths for BatchNorm {
    /// y = act(γ·x̂ + β), with batch (`Train`) or running (`Eval`) statistics.
    fn forward<F: Real, O: Ops<F>>(c: &Ctx<'_>, n: &Node, o: &mut O, mode: Mode, update: bool) {
        let g = geom(n, c.b());
        let a = BnFwd {
            x: c.value_of(n.input),
            y: c.val(n),
            gb: c.theta(n, 0),
            stats: c.ext(n, 0),
            mode,
            running: running(n),
            pending: (update && mode == Mode::Train).then(|| pending(c, n)),
            act: c.fused(n),
        };
        o.bn_forward(&g, &a);
    }

    /// Parameter gradients and the input's delta (training mode).
    fn backward<F: Real, O: Ops<F>>(c: &Ctx<'_>, n: &Node, o: &mut O, grad: Option<(F, F)>) {
        let g = geom(n, c.b());
        let a = BnBwd {
            x: c.value_of(n.input),
            dy: c.dlt(n),
            gb: c.theta(n, 0),
            stats: c.ext(n, 0),
            dx: c.active_input(n).map(|i| (c.dlt(i), n.acc_in)),
            dp: grad.and_then(|(alpha, beta)| Some((c.trained(n, Mem::Out, 0)?, alpha, beta))),
        };
        o.bn_backward(&g, &a);
    }

    /// R{y}, and the statistics the R-backward needs.
    fn r_forward<F: Real, O: Ops<F>>(c: &Ctx<'_>, n: &Node, o: &mut O) {
        let g = geom(n, c.b());
        let a = BnRFwd {
            x: c.value_of(n.input),
            rx: c.active_input(n).map(|i| c.rv(i)),
            gb: c.param(n, Mem::Theta, 0),
            vgb: c.param(n, Mem::V, 0),
            stats: c.ext(n, 0),
            ry: c.rv(n),
            rstats: c.ext_hvp(n, 0),
        };
        o.bn_r_forward(&g, &a);
    }

    /// R{δx}, then out ← β·out + α·(R{∇γ}, R{∇β}) from the node's scratch
    /// (two steps, so that V may be out itself).
    fn r_backward<F: Real, O: Ops<F>>(c: &Ctx<'_>, n: &Node, o: &mut O, alpha: F, beta: F) {
        let g = geom(n, c.b());
        let inp = c.active_input(n);
        let a = BnRBwd {
            x: c.value_of(n.input),
            rx: inp.map(|i| c.rv(i)),
            dy: c.dlt(n),
            rdy: c.rd(n),
            gb: c.param(n, Mem::Theta, 0),
            vgb: c.param(n, Mem::V, 0),
            stats: c.ext(n, 0),
            rstats: c.ext_hvp(n, 0),
            rdx: inp.map(|i| (c.rd(i), n.acc_in)),
            rsums: c.ext_hvp(n, 2),
        };
        o.bn_r_backward(&g, &a);
        o.axpby(
            c.param(n, Mem::Out, 0),
            c.ext_hvp(n, 2),
            2 * g.c,
            alpha,
            beta,
        );
    }
}
