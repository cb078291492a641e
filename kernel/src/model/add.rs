//! The residual join `Add` (y = x + other). It is linear: its R-passes
//! are its forward and backward passes on R-values.

use super::ctx::Ctx;
use super::{Maths, Mode, Node};
use crate::ops::Ops;
use crate::real::Real;

/// The residual join (`Op::Add`).
pub struct Add;

impl Maths for Add {
    /// y = x + other.
    fn forward<F: Real, O: Ops<F>>(c: &Ctx<'_>, n: &Node, o: &mut O, _mode: Mode, _update: bool) {
        let len = c.b() * n.out_dims.len();
        o.add(c.val(n), c.value_of(n.input), c.value_of(n.other), len);
    }

    /// δx (+)= δy and δother (+)= δy.
    fn backward<F: Real, O: Ops<F>>(c: &Ctx<'_>, n: &Node, o: &mut O, _grad: Option<(F, F)>) {
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
    fn r_forward<F: Real, O: Ops<F>>(c: &Ctx<'_>, n: &Node, o: &mut O) {
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
    fn r_backward<F: Real, O: Ops<F>>(c: &Ctx<'_>, n: &Node, o: &mut O, _alpha: F, _beta: F) {
        let len = c.b() * n.out_dims.len();
        let rd = c.rd(n);
        if let Some(i) = c.active_input(n) {
            o.acc(c.rd(i), rd, len, n.acc_in);
        }
        if let Some(j) = c.node(n.other).filter(|m| m.active) {
            o.acc(c.rd(j), rd, len, n.acc_other);
        }
    }
}
