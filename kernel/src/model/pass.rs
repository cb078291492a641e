//! The passes over a planned model: forward, backward (after the loss has
//! written the output's delta) and the two R-operator passes, each a walk
//! over the nodes that calls the node's own maths (its kind's [`Maths`],
//! picked by `with_maths!` in op.rs). Nothing here touches
//! memory: every buffer is a [`Loc`](crate::ops::Loc) of the pass, resolved by the
//! backend's [`Ops`].

use super::op::with_maths;
use super::{Maths, Mode};
use crate::ops::Ops;
use crate::real::Real;

pub use super::ctx::Ctx;

/// The forward pass: every node's value. In [`Mode::Train`] batch norm
/// uses batch statistics (saved for the backward pass) and, when
/// `update`, computes the running-statistics update (applied later by
/// the objective's commit); in [`Mode::Eval`] it uses the running
/// statistics.
pub fn forward<F: Real, O: Ops<F>>(c: &Ctx<'_>, o: &mut O, mode: Mode, update: bool) {
    for n in c.nodes {
        with_maths!(n.op, K => K::forward(c, n, o, mode, update));
    }
}

/// The backward pass, after the loss has written the last node's delta:
/// every active node's delta and, when `grad` = (α, β) is given,
/// out ← β·out + α·∇L for every parameter.
pub fn backward<F: Real, O: Ops<F>>(c: &Ctx<'_>, o: &mut O, grad: Option<(F, F)>) {
    for n in c.nodes.iter().rev() {
        if n.active {
            with_maths!(n.op, K => K::backward(c, n, o, grad));
        }
    }
}

/// The R-forward pass along the direction V (memory [`Mem::V`](crate::ops::Mem::V)): the
/// R-value of every active node. Needs the values of [`forward`].
pub fn r_forward<F: Real, O: Ops<F>>(c: &Ctx<'_>, o: &mut O) {
    for n in c.nodes {
        if n.active {
            with_maths!(n.op, K => K::r_forward(c, n, o));
        }
    }
}

/// The R-backward pass, after the loss Hessian has written the last
/// node's R-delta: out ← β·out + α·H·V. Each node reads its slice of V
/// before it writes its slice of out, so V may be out itself (in place).
pub fn r_backward<F: Real, O: Ops<F>>(c: &Ctx<'_>, o: &mut O, alpha: F, beta: F) {
    for n in c.nodes.iter().rev() {
        if n.active {
            with_maths!(n.op, K => K::r_backward(c, n, o, alpha, beta));
        }
    }
}

/// A whole gradient pass in training mode: forward (computing the running
/// statistics' update when `update`), the loss on the last node, and the
/// backward pass. With `grad` = Some((α, β)) it writes out ← β·out + α·∇L;
/// with None it leaves only the deltas (what a Hessian-vector product needs
/// first). Returns the loss (as the backend holds it: see
/// [`Ops::Scalar`]). Every backend's objective runs this.
pub fn loss_and_gradient<F: Real, O: Ops<F>>(
    c: &Ctx<'_>,
    o: &mut O,
    loss: crate::loss::Loss,
    update: bool,
    grad: Option<(F, F)>,
) -> O::Scalar {
    forward(c, o, Mode::Train, update);
    let last = c.nodes[c.nodes.len() - 1];
    let k = last.out_dims.len();
    let delta = last.active.then(|| c.dlt(&last));
    let l = o.loss_grad(loss, c.val(&last), c.b(), k, delta);
    if last.active {
        backward(c, o, grad);
    }
    l
}

/// The R-operator pass after [`loss_and_gradient`] (whose values and
/// deltas it reuses): out ← β·out + α·H·V.
pub fn hessian_vector<F: Real, O: Ops<F>>(
    c: &Ctx<'_>,
    o: &mut O,
    loss: crate::loss::Loss,
    alpha: F,
    beta: F,
) {
    r_forward(c, o);
    let last = c.nodes[c.nodes.len() - 1];
    if last.active {
        let k = last.out_dims.len();
        o.loss_hvp(loss, c.val(&last), c.b(), k, c.rv(&last), c.rd(&last));
        r_backward(c, o, alpha, beta);
    }
}

/// The loss in training mode (batch statistics, no update), no gradient.
pub fn loss_only<F: Real, O: Ops<F>>(c: &Ctx<'_>, o: &mut O, loss: crate::loss::Loss) -> O::Scalar {
    forward(c, o, Mode::Train, false);
    let last = c.nodes[c.nodes.len() - 1];
    o.loss_grad(loss, c.val(&last), c.b(), last.out_dims.len(), None)
}

/// One of the passes a model's objective runs ([`crate::Net`], on every
/// backend's memory): what a backend's memory executes over its [`Ops`].
/// Each pass is its own type, so a program links only the passes it
/// runs (a firmware that never asks for H·v carries no R-pass code).
pub trait Run<F: Real>: Copy {
    /// Runs the pass with the loss `loss`; returns the loss as the
    /// backend holds it for the passes that compute one.
    fn run<O: Ops<F>>(self, c: &Ctx<'_>, o: &mut O, loss: crate::loss::Loss) -> Option<O::Scalar>;
    /// Whether the pass computes the running-statistics update (the
    /// step's unperturbed gradient).
    fn updates(&self) -> bool {
        false
    }
}

/// [`forward`] in the given mode, no running-statistics update.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Forward(pub Mode);

impl<F: Real> Run<F> for Forward {
    fn run<O: Ops<F>>(self, c: &Ctx<'_>, o: &mut O, _: crate::loss::Loss) -> Option<O::Scalar> {
        forward(c, o, self.0, false);
        None
    }
}

/// [`loss_and_gradient`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LossGrad<F> {
    /// Compute the running-statistics update (the step's unperturbed
    /// gradient).
    pub update: bool,
    /// `Some((α, β))`: out ← β·out + α·∇L; None: the deltas only.
    pub grad: Option<(F, F)>,
}

impl<F: Real> Run<F> for LossGrad<F> {
    fn run<O: Ops<F>>(self, c: &Ctx<'_>, o: &mut O, loss: crate::loss::Loss) -> Option<O::Scalar> {
        Some(loss_and_gradient(c, o, loss, self.update, self.grad))
    }
    fn updates(&self) -> bool {
        self.update
    }
}

/// [`loss_only`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LossOnly;

impl<F: Real> Run<F> for LossOnly {
    fn run<O: Ops<F>>(self, c: &Ctx<'_>, o: &mut O, loss: crate::loss::Loss) -> Option<O::Scalar> {
        Some(loss_only(c, o, loss))
    }
}

/// [`hessian_vector`]: out ← β·out + α·H·v.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Hvp<F> {
    /// Scale of H·v.
    pub alpha: F,
    /// Scale of the output's old value.
    pub beta: F,
}

impl<F: Real> Run<F> for Hvp<F> {
    fn run<O: Ops<F>>(self, c: &Ctx<'_>, o: &mut O, loss: crate::loss::Loss) -> Option<O::Scalar> {
        hessian_vector(c, o, loss, self.alpha, self.beta);
        None
    }
}
