//! `Linear`: z = x·Wᵀ + b on a batch of vectors (B × in → B × out), and
//! its backward and R-operator passes.
//!
//! ```text
//! forward     z = x·Wᵀ + b                      (then a fused σ, in place)
//! backward    ∇W = δzᵀ·x, ∇b = Σ δz,  δx = δz·W
//! R-forward   R{z} = x·Vᵀ + R{x}·Wᵀ + v_b
//! R-backward  R{δx} = δz·V + R{δz}·W
//!             R{∇W} = R{δz}ᵀ·x + δzᵀ·R{x},  R{∇b} = Σ R{δz}
//! ```

use super::ctx::Ctx;
use super::{cadd, cmul, Dims, Init, Maths, Mode, Node, Op, Tensor, Tensors};
use crate::error::Error;
use crate::ops::{Mem, Ops};
use crate::real::Real;

/// The output shape of `Linear { out, .. }` on `d`: `out` features of a
/// non-empty vector input.
pub const fn out_dims(out: usize, d: Dims) -> Result<Dims, Error> {
    if !d.is_flat() || out == 0 || d.c == 0 {
        return Err(Error::BadModel(
            "linear needs a non-empty vector input (flatten first)",
        ));
    }
    Ok(Dims::flat(out))
}

/// Its parameters on `d`: the out × in weight, then `out` biases.
pub const fn checked_param_len(out: usize, bias: bool, d: Dims) -> Result<usize, Error> {
    let w = tri!(cmul(out, d.c));
    cadd(w, if bias { out } else { 0 })
}

/// Its multiply-adds per sample on `d`.
pub const fn macs(out: usize, d: Dims) -> Option<usize> {
    out.checked_mul(d.c)
}

/// Its parameter tensors on `d`, as `nn.Linear` names them.
pub const fn tensors(out: usize, bias: bool, d: Dims) -> Tensors {
    let init = Init::Uniform { fan_in: d.c };
    Tensors::of(
        Tensor::new("weight", [out, d.c, 1, 1], 2, init),
        if bias {
            Some(Tensor::vector("bias", out, init))
        } else {
            None
        },
    )
}

#[inline]
fn dims(n: &Node) -> (usize, usize, bool) {
    let bias = matches!(n.op, Op::Linear { bias: true, .. });
    (n.in_dims.c, n.out_dims.c, bias)
}

/// The `Linear` kind ([`Op::Linear`]).
pub struct Linear;

impl Maths for Linear {
    /// z = x·Wᵀ (+ b) (then the fused activation).
    fn forward<F: Real, O: Ops<F>>(c: &Ctx<'_>, n: &Node, o: &mut O, _mode: Mode, _update: bool) {
        let (ni, no, bias) = dims(n);
        let b = c.b();
        let z = c.val(n);
        let w = c.theta(n, 0);
        o.gemm(
            false,
            true,
            b,
            no,
            ni,
            F::ONE,
            c.value_of(n.input),
            w,
            F::ZERO,
            z,
        );
        let bl = bias.then(|| c.theta(n, no * ni));
        if bl.is_some() || n.fuse.is_some() {
            o.bias_act(z, bl, b, no, 1, c.fused(n));
        }
    }

    /// Parameter gradients (out ← β·out + α·∇) and the input's delta.
    fn backward<F: Real, O: Ops<F>>(c: &Ctx<'_>, n: &Node, o: &mut O, grad: Option<(F, F)>) {
        let (ni, no, bias) = dims(n);
        let b = c.b();
        let dz = c.dlt(n);
        let x = c.value_of(n.input);
        if let Some((alpha, beta)) = grad {
            if let Some(gw) = c.trained(n, Mem::Out, 0) {
                o.gemm(true, false, no, ni, b, alpha, dz, x, beta, gw);
            }
            if let Some(gb) = c.trained(n, Mem::Out, no * ni).filter(|_| bias) {
                o.chan_sum(gb, dz, b, no, 1, alpha, beta);
            }
        }
        if let Some(inp) = c.active_input(n) {
            let beta = if n.acc_in { F::ONE } else { F::ZERO };
            let w = c.theta(n, 0);
            o.gemm(false, false, b, ni, no, F::ONE, dz, w, beta, c.dlt(inp));
        }
    }

    /// R{z} = x·Vᵀ + R{x}·Wᵀ + v_b.
    fn r_forward<F: Real, O: Ops<F>>(c: &Ctx<'_>, n: &Node, o: &mut O) {
        let (ni, no, bias) = dims(n);
        let b = c.b();
        let rz = c.rv(n);
        let x = c.value_of(n.input);
        o.gemm(
            false,
            true,
            b,
            no,
            ni,
            F::ONE,
            x,
            c.param(n, Mem::V, 0),
            F::ZERO,
            rz,
        );
        if let Some(inp) = c.active_input(n) {
            let w = c.param(n, Mem::Theta, 0);
            o.gemm(false, true, b, no, ni, F::ONE, c.rv(inp), w, F::ONE, rz);
        }
        if bias {
            let vb = c.param(n, Mem::V, no * ni);
            o.bias_act(rz, Some(vb), b, no, 1, crate::serial::act::Act::Identity);
        }
    }

    /// R{δx} and out ← β·out + α·R{∇}.
    fn r_backward<F: Real, O: Ops<F>>(c: &Ctx<'_>, n: &Node, o: &mut O, alpha: F, beta: F) {
        let (ni, no, bias) = dims(n);
        let b = c.b();
        let (dz, rdz) = (c.dlt(n), c.rd(n));
        let x = c.value_of(n.input);
        let inp = c.active_input(n);
        if let Some(inp) = inp {
            let acc = if n.acc_in { F::ONE } else { F::ZERO };
            let (v, w) = (c.param(n, Mem::V, 0), c.param(n, Mem::Theta, 0));
            o.gemm(false, false, b, ni, no, F::ONE, dz, v, acc, c.rd(inp));
            o.gemm(false, false, b, ni, no, F::ONE, rdz, w, F::ONE, c.rd(inp));
        }
        let ow = c.param(n, Mem::Out, 0);
        o.gemm(true, false, no, ni, b, alpha, rdz, x, beta, ow);
        if let Some(inp) = inp {
            o.gemm(true, false, no, ni, b, alpha, dz, c.rv(inp), F::ONE, ow);
        }
        if bias {
            o.chan_sum(c.param(n, Mem::Out, no * ni), rdz, b, no, 1, alpha, beta);
        }
    }
}
