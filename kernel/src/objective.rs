//! The two traits every backend implements, and over which every training
//! method and the optimizer are written once.
//!
//! * [`VecSpace`]: where parameter-sized vectors live and the few
//!   operations the methods need on them (slices on a CPU, device buffers
//!   on a GPU).
//! * [`Objective`]: "loss and gradient at θ on the current mini-batch", and
//!   optionally the exact Hessian-vector product.

use crate::error::Error;
use crate::optim::OptElem;
use crate::real::Real;

/// The CPU executor of the layer maths, defined beside the primitives it
/// serves ([`crate::ops`]).
pub use crate::ops::{Exec, Serial};

/// Parameter-sized vectors and the operations the methods use on them.
pub trait VecSpace<F: Real> {
    /// A parameter-sized vector (`[F]` on CPUs).
    type Vec: ?Sized;
    /// Length of a vector.
    fn len(&self, x: &Self::Vec) -> usize;
    /// dst ← src.
    fn copy(&mut self, dst: &mut Self::Vec, src: &Self::Vec);
    /// y ← y + a·x.
    fn axpy(&mut self, y: &mut Self::Vec, a: F, x: &Self::Vec);
    /// w ← x + a·y.
    fn waxpy(&mut self, w: &mut Self::Vec, x: &Self::Vec, a: F, y: &Self::Vec);
    /// x ← a·x.
    fn scale(&mut self, x: &mut Self::Vec, a: F);
    /// xᵀy.
    fn dot(&mut self, x: &Self::Vec, y: &Self::Vec) -> F;
    /// True when every entry is finite.
    fn all_finite(&mut self, x: &Self::Vec) -> bool;
    /// The optimizer's update, elementwise, by the rule of `h` (SGD, Adam,
    /// AdamW: see [`crate::optim::update_elem`] for the maths, which every
    /// backend executes as written); `s0`, `s1` are its state vectors.
    fn opt_update(
        &mut self,
        theta: &mut Self::Vec,
        d: &Self::Vec,
        s0: Option<&mut Self::Vec>,
        s1: Option<&mut Self::Vec>,
        h: &OptElem<F>,
    );
}

/// Which gradient evaluation of a step a call is.
///
/// A model with state beside θ (batch-norm running statistics) updates it
/// from the unperturbed gradient pass only: the gradients at perturbed
/// points (F-GR's θ + εg, SAM's ascent point, …) are probes that use their
/// own batch statistics but leave the running statistics alone, so an
/// F-GR step and an SGD step update them alike.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Pass {
    /// The gradient at θ itself: computes the state update, which
    /// [`Objective::commit`] applies once the step is accepted.
    Train,
    /// A gradient at a perturbed point: no state update.
    Probe,
}

/// A differentiable loss on the current mini-batch, as a function of θ.
///
/// Every gradient a method asks for within one step is taken on the same
/// mini-batch: the one set on the objective before the step.
pub trait Objective<F: Real>: VecSpace<F> {
    /// Number of parameters P.
    fn param_count(&self) -> usize;

    /// grad ← β·grad + α·∇L(θ); returns L(θ). β = 0 overwrites `grad`.
    ///
    /// Writing the gradient scaled into an existing buffer is what lets
    /// F-GR form (1 − γ/ε)·g + (γ/ε)·g' without a second gradient buffer.
    /// `pass` says whether this is the step's unperturbed gradient.
    fn loss_grad(
        &mut self,
        theta: &Self::Vec,
        grad: &mut Self::Vec,
        alpha: F,
        beta: F,
        pass: Pass,
    ) -> Result<F, Error>;

    /// Applies the state update computed by the last [`Pass::Train`]
    /// gradient (batch-norm running statistics); called by
    /// [`crate::step`] once the step is accepted. Nothing by default.
    fn commit(&mut self) {}

    /// d ← ∇L(θ) + γ·H(θ)·∇L(θ), the exact gradient of the GR objective
    /// L + (γ/2)‖∇L‖²; returns L(θ).
    fn loss_grad_gr(&mut self, theta: &Self::Vec, d: &mut Self::Vec, gamma: F) -> Result<F, Error> {
        let _ = (theta, d, gamma);
        Err(Error::Unsupported("exact Hessian-vector product"))
    }

    /// As [`Objective::loss_grad_gr`], and also g ← ∇L(θ) (what amortized
    /// DB needs to store γHg apart). By default a second gradient pass; an
    /// objective that forms d in place from g copies g out between its
    /// gradient and its R-pass instead, with the same bits.
    fn loss_grad_gr_and_grad(
        &mut self,
        theta: &Self::Vec,
        d: &mut Self::Vec,
        g: &mut Self::Vec,
        gamma: F,
    ) -> Result<F, Error> {
        let loss = self.loss_grad_gr(theta, d, gamma)?;
        self.loss_grad(theta, g, F::ONE, F::ZERO, Pass::Probe)?;
        Ok(loss)
    }

    /// out ← H(θ)·v.
    fn hvp(&mut self, theta: &Self::Vec, v: &Self::Vec, out: &mut Self::Vec) -> Result<(), Error> {
        let _ = (theta, v, out);
        Err(Error::Unsupported("exact Hessian-vector product"))
    }

    /// L(θ) without a gradient.
    fn loss(&mut self, theta: &Self::Vec) -> Result<F, Error>;

    /// Called by [`crate::step_with`] once the method has formed the
    /// direction `d` from the step's gradients (before clipping and the
    /// finiteness check), with the step's loss; returns the loss the step
    /// reports. Nothing by default; a data-parallel objective whose
    /// processes formed their own directions averages them here
    /// ([`crate::dist::DataParallel`] with [`crate::dist::AscentMode::Local`]).
    fn end_direction(&mut self, d: &mut Self::Vec, loss: F) -> Result<F, Error> {
        let _ = d;
        Ok(loss)
    }

    /// The end of a step ([`crate::step_with`]), once the direction `d` is
    /// formed and clipped: [`finish_step`] — refuse a non-finite loss or
    /// direction ([`Error::NonFinite`], nothing changed), else commit the
    /// pass's state ([`Objective::commit`]) and apply the optimizer's
    /// update `h` (step number `step`). A GPU objective that queues steps
    /// runs the same check and update on the device instead, without
    /// waiting for the verdict.
    #[allow(clippy::too_many_arguments)]
    fn finish_step(
        &mut self,
        theta: &mut Self::Vec,
        d: &mut Self::Vec,
        s0: Option<&mut Self::Vec>,
        s1: Option<&mut Self::Vec>,
        loss: F,
        h: &OptElem<F>,
        step: u64,
    ) -> Result<(), Error> {
        let _ = step;
        finish_step(self, theta, d, s0, s1, loss, h)
    }
}

/// The end of a step as [`Objective::finish_step`] does it by default:
/// [`Error::NonFinite`] (nothing changed) unless the loss and every entry
/// of `d` are finite; then [`Objective::commit`] and the optimizer's
/// update.
pub fn finish_step<F: Real, O: Objective<F> + ?Sized>(
    o: &mut O,
    theta: &mut O::Vec,
    d: &mut O::Vec,
    s0: Option<&mut O::Vec>,
    s1: Option<&mut O::Vec>,
    loss: F,
    h: &OptElem<F>,
) -> Result<(), Error> {
    if !loss.is_finite() || !o.all_finite(d) {
        return Err(Error::NonFinite);
    }
    o.commit();
    o.opt_update(theta, d, s0, s1, h);
    Ok(())
}

/// A CPU objective over slices: gives access to its [`Exec`]; gets
/// [`VecSpace`] over `[F]` from [`slice_vec_space!`](crate::slice_vec_space).
pub trait SliceSpace<F: Real> {
    /// The executor.
    type E: Exec<F>;
    /// The executor, mutably.
    fn exec(&mut self) -> &mut Self::E;
}

/// Implements [`VecSpace`] for a type that holds one in its field `$f`,
/// every operation forwarded to it:
/// `forward_vec_space!(impl[F: Real, M: Memory<F>] for Net<F, N, M>, mem, M::Vec);`
/// (the scalar's type parameter must be called `F`).
macro_rules! forward_vec_space {
    (impl[$($g:tt)*] for $t:ty, $f:ident, $v:ty) => {
        impl<$($g)*> $crate::objective::VecSpace<F> for $t {
            type Vec = $v;
            fn len(&self, x: &$v) -> usize {
                self.$f.len(x)
            }
            fn copy(&mut self, dst: &mut $v, src: &$v) {
                self.$f.copy(dst, src)
            }
            fn axpy(&mut self, y: &mut $v, a: F, x: &$v) {
                self.$f.axpy(y, a, x)
            }
            fn waxpy(&mut self, w: &mut $v, x: &$v, a: F, y: &$v) {
                self.$f.waxpy(w, x, a, y)
            }
            fn scale(&mut self, x: &mut $v, a: F) {
                self.$f.scale(x, a)
            }
            fn dot(&mut self, x: &$v, y: &$v) -> F {
                self.$f.dot(x, y)
            }
            fn all_finite(&mut self, x: &$v) -> bool {
                self.$f.all_finite(x)
            }
            fn opt_update(
                &mut self,
                theta: &mut $v,
                d: &$v,
                s0: Option<&mut $v>,
                s1: Option<&mut $v>,
                h: &$crate::optim::OptElem<F>,
            ) {
                self.$f.opt_update(theta, d, s0, s1, h)
            }
        }
    };
}
pub(crate) use forward_vec_space;

/// Implements [`VecSpace`] over `[F]` for a [`SliceSpace`] type, running
/// every vector operation on its executor:
/// `slice_vec_space!(impl[F: Real, E: Exec<F>] for Type<F, E>);` (the type
/// parameter of the scalar must be called `F`). A macro rather than a
/// blanket impl, so that [`crate::Net`] can be a `VecSpace` over any
/// memory's vectors.
#[macro_export]
macro_rules! slice_vec_space {
    (impl[$($g:tt)*] for $t:ty) => {
        impl<$($g)*> $crate::objective::VecSpace<F> for $t {
            type Vec = [F];
            fn len(&self, x: &[F]) -> usize {
                x.len()
            }
            fn copy(&mut self, dst: &mut [F], src: &[F]) {
                dst.copy_from_slice(src)
            }
            fn axpy(&mut self, y: &mut [F], a: F, x: &[F]) {
                $crate::ops::Exec::axpy($crate::objective::SliceSpace::exec(self), y, a, x)
            }
            fn waxpy(&mut self, w: &mut [F], x: &[F], a: F, y: &[F]) {
                $crate::ops::Exec::waxpy($crate::objective::SliceSpace::exec(self), w, x, a, y)
            }
            fn scale(&mut self, x: &mut [F], a: F) {
                $crate::ops::Exec::scale($crate::objective::SliceSpace::exec(self), x, a)
            }
            fn dot(&mut self, x: &[F], y: &[F]) -> F {
                $crate::ops::Exec::dot($crate::objective::SliceSpace::exec(self), x, y)
            }
            fn all_finite(&mut self, x: &[F]) -> bool {
                $crate::ops::Exec::all_finite($crate::objective::SliceSpace::exec(self), x)
            }
            fn opt_update(
                &mut self,
                theta: &mut [F],
                d: &[F],
                s0: Option<&mut [F]>,
                s1: Option<&mut [F]>,
                h: &$crate::optim::OptElem<F>,
            ) {
                $crate::ops::Exec::opt_update(
                    $crate::objective::SliceSpace::exec(self),
                    theta,
                    d,
                    s0,
                    s1,
                    h,
                )
            }
        }
    };
}
