//! `Flatten`: a view of its input, or a copy when the input also feeds
//! other layers. It is linear: its R-passes are its forward and backward
//! passes on R-values.

use super::ctx::Ctx;
use super::{Dims, Maths, Mode, Node, TOO_LARGE};
use crate::error::Error;
use crate::ops::Ops;
use crate::real::Real;

/// The output shape on `d`: its C × H × W values as one vector.
pub const fn out_dims(d: Dims) -> Result<Dims, Error> {
    match d.checked_len() {
        Some(n) => Ok(Dims::flat(n)),
        None => Err(TOO_LARGE),
    }
}

/// Whether node `n` (a `Flatten`) is a view of its input rather than a copy.
fn is_view(c: &Ctx<'_>, n: &Node) -> bool {
    match c.node(n.input) {
        Some(i) => i.val == n.val,
        None => true,
    }
}

/// `Op::Flatten`.
pub struct Flatten;

impl Maths for Flatten {
    /// Flatten: nothing for a view, a copy otherwise.
    fn forward<F: Real, O: Ops<F>>(c: &Ctx<'_>, n: &Node, o: &mut O, _mode: Mode, _update: bool) {
        if !is_view(c, n) {
            let len = c.b() * n.out_dims.len();
            o.acc(c.val(n), c.value_of(n.input), len, false);
        }
    }

    /// Flatten's backward: nothing for a view (the deltas are shared).
    fn backward<F: Real, O: Ops<F>>(c: &Ctx<'_>, n: &Node, o: &mut O, _grad: Option<(F, F)>) {
        if !is_view(c, n) {
            if let Some(i) = c.active_input(n) {
                let len = c.b() * n.out_dims.len();
                o.acc(c.dlt(i), c.dlt(n), len, n.acc_in);
            }
        }
    }

    /// Flatten's R-forward: nothing for a view.
    fn r_forward<F: Real, O: Ops<F>>(c: &Ctx<'_>, n: &Node, o: &mut O) {
        if !is_view(c, n) {
            if let Some(i) = c.active_input(n) {
                let len = c.b() * n.out_dims.len();
                o.acc(c.rv(n), c.rv(i), len, false);
            }
        }
    }

    /// Flatten's R-backward: nothing for a view.
    fn r_backward<F: Real, O: Ops<F>>(c: &Ctx<'_>, n: &Node, o: &mut O, _alpha: F, _beta: F) {
        if !is_view(c, n) {
            if let Some(i) = c.active_input(n) {
                let len = c.b() * n.out_dims.len();
                o.acc(c.rd(i), c.rd(n), len, n.acc_in);
            }
        }
    }
}
