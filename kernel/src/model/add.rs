//! The residual join `Add` (y = x + other) and `Flatten` (a view of its
//! input; a copy when the input also feeds other layers). Both are
//! linear: their R-passes are their forward and backward passes on
//! R-values.

use super::ctx::Ctx;
use super::Node;
use crate::ops::Ops;
use crate::real::Real;

/// y = x + other.
pub fn forward<F: Real, O: Ops<F>>(c: &Ctx<'_>, n: &Node, o: &mut O) {
    let len = c.b() * n.out_dims.len();
    o.add(c.val(n), c.value_of(n.input), c.value_of(n.other), len);
}

/// δx (+)= δy and δother (+)= δy.
pub fn backward<F: Real, O: Ops<F>>(c: &Ctx<'_>, n: &Node, o: &mut O) {
    let len = c.b() * n.out_dims.len();
    let d = c.dlt(n);
    if let Some(i) = c.active_input(n) {
        o.acc(c.dlt(i), d, len, n.acc_in);
    }
    if let Some(j) = c.node(n.other).filter(|m| m.active) {
        o.acc(c.dlt(j), d, len, n.acc_other);
    }
}

/// R{y} = R{x} + R{other} (the active ones).
pub fn r_forward<F: Real, O: Ops<F>>(c: &Ctx<'_>, n: &Node, o: &mut O) {
    let len = c.b() * n.out_dims.len();
    let a = c.active_input(n);
    let b = c.node(n.other).filter(|m| m.active);
    match (a, b) {
        (Some(a), Some(b)) => o.add(c.rv(n), c.rv(a), c.rv(b), len),
        (Some(a), None) | (None, Some(a)) => o.acc(c.rv(n), c.rv(a), len, false),
        (None, None) => {}
    }
}

/// R{δx} (+)= R{δy} and R{δother} (+)= R{δy}.
pub fn r_backward<F: Real, O: Ops<F>>(c: &Ctx<'_>, n: &Node, o: &mut O) {
    let len = c.b() * n.out_dims.len();
    let rd = c.rd(n);
    if let Some(i) = c.active_input(n) {
        o.acc(c.rd(i), rd, len, n.acc_in);
    }
    if let Some(j) = c.node(n.other).filter(|m| m.active) {
        o.acc(c.rd(j), rd, len, n.acc_other);
    }
}

/// Whether node `n` (a `Flatten`) is a view of its input rather than a copy.
fn is_view(c: &Ctx<'_>, n: &Node) -> bool {
    match c.node(n.input) {
        Some(i) => i.val == n.val,
        None => true,
    }
}

/// Flatten: nothing for a view, a copy otherwise.
pub fn flatten_forward<F: Real, O: Ops<F>>(c: &Ctx<'_>, n: &Node, o: &mut O) {
    if !is_view(c, n) {
        let len = c.b() * n.out_dims.len();
        o.acc(c.val(n), c.value_of(n.input), len, false);
    }
}

/// Flatten's backward: nothing for a view (the deltas are shared).
pub fn flatten_backward<F: Real, O: Ops<F>>(c: &Ctx<'_>, n: &Node, o: &mut O) {
    if !is_view(c, n) {
        if let Some(i) = c.active_input(n) {
            let len = c.b() * n.out_dims.len();
            o.acc(c.dlt(i), c.dlt(n), len, n.acc_in);
        }
    }
}

/// Flatten's R-forward: nothing for a view.
pub fn flatten_r_forward<F: Real, O: Ops<F>>(c: &Ctx<'_>, n: &Node, o: &mut O) {
    if !is_view(c, n) {
        if let Some(i) = c.active_input(n) {
            let len = c.b() * n.out_dims.len();
            o.acc(c.rv(n), c.rv(i), len, false);
        }
    }
}

/// Flatten's R-backward: nothing for a view.
pub fn flatten_r_backward<F: Real, O: Ops<F>>(c: &Ctx<'_>, n: &Node, o: &mut O) {
    if !is_view(c, n) {
        if let Some(i) = c.active_input(n) {
            let len = c.b() * n.out_dims.len();
            o.acc(c.rd(i), c.rd(n), len, n.acc_in);
        }
    }
}
