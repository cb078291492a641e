//! Activation layers. Derivatives are written in terms of the output
//! a = σ(z) (see [`crate::serial::act`]), so an activation may overwrite its
//! producer's output: it then runs in place (fused into a linear,
//! convolution or batch-norm forward), and its delta and R-delta share
//! the producer's buffers.
//!
//! ```text
//! forward     a = σ(z)
//! backward    δz = δa ⊙ σ'(a)
//! R-forward   R{a} = σ'(a) ⊙ R{z}
//! R-backward  R{δz} = κ(a)·R{z}⊙δz + σ'(a)⊙R{δa}     (κ = σ''/σ')
//! ```

use super::ctx::Ctx;
use super::{Maths, Mode, Node, Op};
use crate::ops::Ops;
use crate::real::Real;
use crate::serial::act::Act;

/// The activation of node `n` (an `Op::Act`, as `with_maths!` in op.rs picked it).
#[inline(always)]
fn act(n: &Node) -> Act {
    match n.op {
        Op::Act(a) => a,
        _ => Act::Identity,
    }
}

/// The activations (`Op::Act`).
pub struct Activation;

impl Maths for Activation {
    /// a = σ(z): nothing when fused into the producer, in place when sharing
    /// its buffer, out of place otherwise.
    fn forward<F: Real, O: Ops<F>>(c: &Ctx<'_>, n: &Node, o: &mut O, _mode: Mode, _update: bool) {
        let a = act(n);
        let len = n.out_dims.len();
        if n.inplace {
            let fused = c.node(n.input).is_some_and(|p| p.fuse.is_some());
            if !fused {
                o.bias_act(c.val(n), None, c.b(), len, 1, a);
            }
        } else {
            o.act_map(c.val(n), c.value_of(n.input), c.b() * len, a);
        }
    }

    /// δz = δa ⊙ σ'(a), in place on this node's delta; then handed to the
    /// input's delta unless that is the same buffer.
    fn backward<F: Real, O: Ops<F>>(c: &Ctx<'_>, n: &Node, o: &mut O, _grad: Option<(F, F)>) {
        let a = act(n);
        let len = c.b() * n.out_dims.len();
        let d = c.dlt(n);
        o.act_backward(d, c.val(n), len, a);
        if !n.inplace {
            if let Some(inp) = c.active_input(n) {
                o.acc(c.dlt(inp), d, len, n.acc_in);
            }
        }
    }

    /// R{a} = σ'(a) ⊙ R{z}.
    fn r_forward<F: Real, O: Ops<F>>(c: &Ctx<'_>, n: &Node, o: &mut O) {
        let a = act(n);
        if let Some(inp) = c.active_input(n) {
            let len = c.b() * n.out_dims.len();
            o.r_act(c.rv(n), c.rv(inp), c.val(n), len, a);
        }
    }

    /// R{δz} in place on this node's R-delta, then handed to the input's.
    fn r_backward<F: Real, O: Ops<F>>(c: &Ctx<'_>, n: &Node, o: &mut O, _alpha: F, _beta: F) {
        let a = act(n);
        if let Some(inp) = c.active_input(n) {
            let len = c.b() * n.out_dims.len();
            let rd = c.rd(n);
            o.r_act_backward(rd, c.rv(inp), c.val(n), c.dlt(n), len, a);
            if !n.inplace {
                o.acc(c.rd(inp), rd, len, n.acc_in);
            }
        }
    }
}
