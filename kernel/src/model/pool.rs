//! Pooling layers: `MaxPool2d`, `AvgPool2d`, global average pooling.
//! All are linear in their input once max pooling's arg-max is fixed, so
//! the R-forward pools R{x} (at the arg-max of x) and the R-backward is
//! the backward pass applied to R-deltas.

use super::ctx::Ctx;
use super::{out_len, Dims, Maths, Mode, Node, Op};
use crate::error::Error;
use crate::ops::Ops;
use crate::real::Real;
use crate::serial::{PoolGeom, PoolKind};

/// The output shape of `MaxPool` / `AvgPool { k, stride, pad }` on `d`.
pub const fn out_dims(k: usize, stride: usize, pad: usize, d: Dims) -> Result<Dims, Error> {
    if pad > k / 2 {
        return Err(Error::BadModel(
            "pool: padding must be at most half the window",
        ));
    }
    match (out_len(d.h, k, stride, pad), out_len(d.w, k, stride, pad)) {
        (Some(h), Some(w)) => Dims::new(d.c, h, w).checked(),
        _ => Err(Error::BadModel(
            "pool: window larger than the padded input, zero stride, or sizes that overflow",
        )),
    }
}

/// The output shape of `GlobalAvgPool` on `d`: one value per channel.
pub const fn global_out_dims(d: Dims) -> Result<Dims, Error> {
    Ok(Dims::flat(d.c))
}

/// The geometry of node `n` on a batch of `b`.
pub fn geom(n: &Node, b: usize) -> PoolGeom {
    let d = n.in_dims;
    let (kind, kh, kw, stride, pad) = match n.op {
        Op::MaxPool { k, stride, pad } => (PoolKind::Max, k, k, stride, pad),
        Op::AvgPool { k, stride, pad } => (PoolKind::Avg, k, k, stride, pad),
        _ => (PoolKind::Avg, d.h, d.w, 1, 0),
    };
    PoolGeom {
        kind,
        n: b,
        c: d.c,
        h: d.h,
        w: d.w,
        kh,
        kw,
        stride,
        pad,
        oh: n.out_dims.h,
        ow: n.out_dims.w,
    }
}

/// Max, average and global average pooling (`Op::MaxPool`, `Op::AvgPool`, `Op::GlobalAvgPool`).
pub struct Pool;

impl Maths for Pool {
    /// y = pool(x).
    fn forward<F: Real, O: Ops<F>>(c: &Ctx<'_>, n: &Node, o: &mut O, _mode: Mode, _update: bool) {
        o.pool(&geom(n, c.b()), c.value_of(n.input), c.val(n));
    }

    /// δx (+)= poolᵀ(δy).
    fn backward<F: Real, O: Ops<F>>(c: &Ctx<'_>, n: &Node, o: &mut O, _grad: Option<(F, F)>) {
        if let Some(inp) = c.active_input(n) {
            let g = geom(n, c.b());
            o.pool_backward(&g, c.value_of(n.input), c.dlt(n), c.dlt(inp), n.acc_in);
        }
    }

    /// R{y} = pool(R{x}) (at the arg-max of x).
    fn r_forward<F: Real, O: Ops<F>>(c: &Ctx<'_>, n: &Node, o: &mut O) {
        if let Some(inp) = c.active_input(n) {
            let g = geom(n, c.b());
            o.pool_r(&g, c.value_of(n.input), c.rv(inp), c.rv(n));
        }
    }

    /// R{δx} (+)= poolᵀ(R{δy}).
    fn r_backward<F: Real, O: Ops<F>>(c: &Ctx<'_>, n: &Node, o: &mut O, _alpha: F, _beta: F) {
        if let Some(inp) = c.active_input(n) {
            let g = geom(n, c.b());
            o.pool_backward(&g, c.value_of(n.input), c.rd(n), c.rd(inp), n.acc_in);
        }
    }
}
