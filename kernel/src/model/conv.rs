//! `Conv2d`: y = conv(x, W) + b on NCHW batches (zero padding, stride,
//! groups), and its backward and R-operator passes. Convolution is linear
//! in x and in W, so the R-passes are the forward and backward products
//! with R-values substituted, plus the direction's own term:
//!
//! ```text
//! forward     y = conv(x, W) + b                (then a fused σ, in place)
//! backward    ∇W = x ⋆ δy, ∇b = Σ δy,  δx = convᵀ(δy, W)
//! R-forward   R{y} = conv(x, V) + conv(R{x}, W) + v_b
//! R-backward  R{δx} = convᵀ(δy, V) + convᵀ(R{δy}, W)
//!             R{∇W} = x ⋆ R{δy} + R{x} ⋆ δy,  R{∇b} = Σ R{δy}
//! ```

use super::ctx::Ctx;
use super::{cadd, cmul, out_len, Dims, Init, Maths, Mode, Node, Op, Tensor, Tensors};
use crate::error::Error;
use crate::ops::{Mem, Ops};
use crate::real::Real;
use crate::serial::act::Act;
use crate::serial::ConvGeom;

/// The output shape of `Conv2d { out, k, stride, pad, groups, .. }` on `d`.
pub const fn out_dims(
    out: usize,
    k: usize,
    stride: usize,
    pad: usize,
    groups: usize,
    d: Dims,
) -> Result<Dims, Error> {
    if groups == 0 || out == 0 || d.c == 0 || d.c % groups != 0 || out % groups != 0 {
        return Err(Error::BadModel(
            "conv: channels in and out must be non-zero multiples of groups",
        ));
    }
    match (out_len(d.h, k, stride, pad), out_len(d.w, k, stride, pad)) {
        (Some(h), Some(w)) => Dims::new(out, h, w).checked(),
        _ => Err(Error::BadModel(
            "conv: kernel larger than the padded input, zero stride, or sizes that overflow",
        )),
    }
}

/// Its parameters on `d`: the out × (in/groups) × k × k weight, then
/// `out` biases.
pub const fn checked_param_len(
    out: usize,
    k: usize,
    groups: usize,
    bias: bool,
    d: Dims,
) -> Result<usize, Error> {
    if groups == 0 {
        return Err(Error::BadModel("conv: groups must be positive"));
    }
    let kk = tri!(cmul(k, k));
    let w = tri!(cmul(tri!(cmul(out, d.c / groups)), kk));
    cadd(w, if bias { out } else { 0 })
}

/// Its multiply-adds per sample, from `d` to `o`.
pub const fn macs(k: usize, groups: usize, d: Dims, o: Dims) -> Option<usize> {
    let groups = if groups > 0 { groups } else { 1 };
    match o.c.checked_mul(o.h) {
        Some(v) => match v.checked_mul(o.w) {
            Some(v) => match v.checked_mul(d.c / groups) {
                Some(v) => match v.checked_mul(k) {
                    Some(v) => v.checked_mul(k),
                    None => None,
                },
                None => None,
            },
            None => None,
        },
        None => None,
    }
}

/// Its parameter tensors on `d`, as `nn.Conv2d` names them.
pub const fn tensors(out: usize, k: usize, groups: usize, bias: bool, d: Dims) -> Tensors {
    let cg = match d.c.checked_div(groups) {
        Some(cg) => cg,
        None => 0,
    };
    let init = Init::Uniform {
        fan_in: cg.saturating_mul(k).saturating_mul(k),
    };
    Tensors::of(
        Tensor::new("weight", [out, cg, k, k], 4, init),
        if bias {
            Some(Tensor::vector("bias", out, init))
        } else {
            None
        },
    )
}

/// The geometry of node `n` on a batch of `b`, and whether it has a bias.
pub fn geom(n: &Node, b: usize) -> (ConvGeom, bool) {
    match n.op {
        Op::Conv2d {
            out,
            k,
            stride,
            pad,
            groups,
            bias,
        } => (
            ConvGeom {
                n: b,
                c: n.in_dims.c,
                h: n.in_dims.h,
                w: n.in_dims.w,
                k_out: out,
                k,
                stride,
                pad,
                groups,
                oh: n.out_dims.h,
                ow: n.out_dims.w,
            },
            bias,
        ),
        _ => (
            ConvGeom {
                n: 0,
                c: 1,
                h: 0,
                w: 0,
                k_out: 0,
                k: 1,
                stride: 1,
                pad: 0,
                groups: 1,
                oh: 0,
                ow: 0,
            },
            false,
        ),
    }
}

/// 2-d convolution (`Op::Conv2d`).
pub struct Conv;

impl Maths for Conv {
    /// y = conv(x, W) (+ b) (then the fused activation).
    fn forward<F: Real, O: Ops<F>>(c: &Ctx<'_>, n: &Node, o: &mut O, _mode: Mode, _update: bool) {
        let (g, bias) = geom(n, c.b());
        let y = c.val(n);
        o.conv(&g, c.value_of(n.input), c.theta(n, 0), y, F::ONE, F::ZERO);
        let bl = bias.then(|| c.theta(n, g.w_len()));
        if bl.is_some() || n.fuse.is_some() {
            o.bias_act(y, bl, g.n, g.k_out, g.oh * g.ow, c.fused(n));
        }
    }

    /// Parameter gradients (out ← β·out + α·∇) and the input's delta.
    fn backward<F: Real, O: Ops<F>>(c: &Ctx<'_>, n: &Node, o: &mut O, grad: Option<(F, F)>) {
        let (g, bias) = geom(n, c.b());
        let dy = c.dlt(n);
        if let Some((alpha, beta)) = grad {
            let x = c.value_of(n.input);
            if let Some(gw) = c.trained(n, Mem::Out, 0) {
                o.conv_backward_filter(&g, x, dy, gw, alpha, beta);
            }
            if let Some(gb) = c.trained(n, Mem::Out, g.w_len()).filter(|_| bias) {
                o.chan_sum(gb, dy, g.n, g.k_out, g.oh * g.ow, alpha, beta);
            }
        }
        if let Some(inp) = c.active_input(n) {
            let beta = if n.acc_in { F::ONE } else { F::ZERO };
            let w = c.theta(n, 0);
            o.conv_backward_data(&g, dy, w, c.dlt(inp), F::ONE, beta);
        }
    }

    /// R{y} = conv(x, V) + conv(R{x}, W) + v_b.
    fn r_forward<F: Real, O: Ops<F>>(c: &Ctx<'_>, n: &Node, o: &mut O) {
        let (g, bias) = geom(n, c.b());
        let ry = c.rv(n);
        let x = c.value_of(n.input);
        o.conv(&g, x, c.param(n, Mem::V, 0), ry, F::ONE, F::ZERO);
        if let Some(inp) = c.active_input(n) {
            o.conv(&g, c.rv(inp), c.param(n, Mem::Theta, 0), ry, F::ONE, F::ONE);
        }
        if bias {
            let vb = c.param(n, Mem::V, g.w_len());
            o.bias_act(ry, Some(vb), g.n, g.k_out, g.oh * g.ow, Act::Identity);
        }
    }

    /// R{δx} and out ← β·out + α·R{∇}.
    fn r_backward<F: Real, O: Ops<F>>(c: &Ctx<'_>, n: &Node, o: &mut O, alpha: F, beta: F) {
        let (g, bias) = geom(n, c.b());
        let (dy, rdy) = (c.dlt(n), c.rd(n));
        let x = c.value_of(n.input);
        let inp = c.active_input(n);
        if let Some(inp) = inp {
            let acc = if n.acc_in { F::ONE } else { F::ZERO };
            let (v, w) = (c.param(n, Mem::V, 0), c.param(n, Mem::Theta, 0));
            o.conv_backward_data(&g, dy, v, c.rd(inp), F::ONE, acc);
            o.conv_backward_data(&g, rdy, w, c.rd(inp), F::ONE, F::ONE);
        }
        let ow = c.param(n, Mem::Out, 0);
        o.conv_backward_filter(&g, x, rdy, ow, alpha, beta);
        if let Some(inp) = inp {
            o.conv_backward_filter(&g, c.rv(inp), dy, ow, alpha, F::ONE);
        }
        if bias {
            let ob = c.param(n, Mem::Out, g.w_len());
            o.chan_sum(ob, rdy, g.n, g.k_out, g.oh * g.ow, alpha, beta);
        }
    }
}
