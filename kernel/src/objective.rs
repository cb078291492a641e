//! The two traits every backend implements, and over which every training
//! method and the optimizer are written once.
//!
//! * [`VecSpace`]: where parameter-sized vectors live and the few
//!   operations the methods need on them (slices on a CPU, device buffers
//!   on a GPU).
//! * [`Objective`]: "loss and gradient at θ on the current mini-batch", and
//!   optionally the exact Hessian-vector product.

use crate::act::{self, Act};
use crate::error::Error;
use crate::optim::OptElem;
use crate::real::Real;
use crate::serial::{conv, norm, pool, BnGeom, ConvGeom, PoolGeom};

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

/// How dense maths is executed on CPU memory: the matrix product and the
/// parameter-vector operations. The defaults are the serial reference loops
/// of [`crate::vecops`]; a host backend may run the same functions on
/// chunks in parallel or call a tuned GEMM.
pub trait Exec<F: Real> {
    /// C ← α·op(A)·op(B) + β·C (see [`crate::vecops::gemm`]).
    #[allow(clippy::too_many_arguments)]
    fn gemm(
        &mut self,
        ta: bool,
        tb: bool,
        m: usize,
        n: usize,
        k: usize,
        alpha: F,
        a: &[F],
        b: &[F],
        beta: F,
        c: &mut [F],
    ) {
        crate::vecops::gemm(ta, tb, m, n, k, alpha, a, b, beta, c)
    }
    /// y ← y + a·x.
    fn axpy(&mut self, y: &mut [F], a: F, x: &[F]) {
        crate::vecops::axpy(y, a, x)
    }
    /// w ← x + a·y.
    fn waxpy(&mut self, w: &mut [F], x: &[F], a: F, y: &[F]) {
        crate::vecops::waxpy(w, x, a, y)
    }
    /// x ← a·x.
    fn scale(&mut self, x: &mut [F], a: F) {
        crate::vecops::scale(x, a)
    }
    /// xᵀy.
    fn dot(&mut self, x: &[F], y: &[F]) -> F {
        crate::vecops::dot(x, y)
    }
    /// True when every entry is finite.
    fn all_finite(&mut self, x: &[F]) -> bool {
        crate::vecops::all_finite(x)
    }
    /// The optimizer's update over slices.
    fn opt_update(
        &mut self,
        theta: &mut [F],
        d: &[F],
        s0: Option<&mut [F]>,
        s1: Option<&mut [F]>,
        h: &OptElem<F>,
    ) {
        crate::optim::update_slices(theta, d, s0, s1, h)
    }
    /// y ← β·y + α·x (β = 0 overwrites).
    fn axpby(&mut self, y: &mut [F], x: &[F], alpha: F, beta: F) {
        crate::vecops::axpby(y, x, alpha, beta)
    }
    /// y ← a + b.
    fn add(&mut self, y: &mut [F], a: &[F], b: &[F]) {
        crate::vecops::add(y, a, b)
    }
    /// Per-channel bias and activation in place (see [`act::bias_act_chw`]).
    fn bias_act(&mut self, z: &mut [F], bias: Option<&[F]>, c: usize, hw: usize, act: Act) {
        act::bias_act_chw(z, bias, c, hw, act)
    }
    /// y ← σ(x).
    fn act_map(&mut self, y: &mut [F], x: &[F], act: Act) {
        act::act_map(y, x, act)
    }
    /// δ ← δ ⊙ σ'(a).
    fn act_backward(&mut self, delta: &mut [F], a: &[F], act: Act) {
        act::act_backward(delta, a, act)
    }
    /// R{a} ← σ'(a) ⊙ R{z}.
    fn r_act(&mut self, ra: &mut [F], rz: &[F], a: &[F], act: Act) {
        act::r_act(ra, rz, a, act)
    }
    /// R{δz} in place (see [`act::r_act_backward`]).
    fn r_act_backward(&mut self, rd: &mut [F], rz: &[F], a: &[F], dz: &[F], act: Act) {
        act::r_act_backward(rd, rz, a, dz, act)
    }
    /// Per-channel sums (see [`act::chan_sum`]).
    fn chan_sum(&mut self, out: &mut [F], m: &[F], c: usize, hw: usize, alpha: F, beta: F) {
        act::chan_sum(out, m, c, hw, alpha, beta)
    }
    /// Convolution forward (see [`crate::serial::conv::forward`]).
    fn conv_forward(&mut self, g: &ConvGeom, x: &[F], w: &[F], y: &mut [F], alpha: F, beta: F) {
        conv::forward(g, x, w, y, alpha, beta)
    }
    /// Convolution input gradient (see [`crate::serial::conv::backward_data`]).
    fn conv_backward_data(
        &mut self,
        g: &ConvGeom,
        dy: &[F],
        w: &[F],
        dx: &mut [F],
        alpha: F,
        beta: F,
    ) {
        conv::backward_data(g, dy, w, dx, alpha, beta)
    }
    /// Convolution weight gradient (see [`crate::serial::conv::backward_filter`]).
    fn conv_backward_filter(
        &mut self,
        g: &ConvGeom,
        x: &[F],
        dy: &[F],
        dw: &mut [F],
        alpha: F,
        beta: F,
    ) {
        conv::backward_filter(g, x, dy, dw, alpha, beta)
    }
    /// Batch-norm training forward (see [`crate::serial::norm::forward_train`]).
    #[allow(clippy::too_many_arguments)]
    fn bn_forward_train(
        &mut self,
        g: &BnGeom,
        x: &[F],
        y: &mut [F],
        gb: &[F],
        stats: &mut [F],
        eps: F,
        act: Act,
        pending: Option<norm::Pending<'_, F>>,
    ) {
        norm::forward_train(g, x, y, gb, stats, eps, act, pending)
    }
    /// Batch-norm evaluation forward (see [`crate::serial::norm::forward_eval`]).
    #[allow(clippy::too_many_arguments)]
    fn bn_forward_eval(
        &mut self,
        g: &BnGeom,
        x: &[F],
        y: &mut [F],
        gb: &[F],
        running: &[F],
        eps: F,
        act: Act,
    ) {
        norm::forward_eval(g, x, y, gb, running, eps, act)
    }
    /// Batch-norm backward (see [`crate::serial::norm::backward`]).
    #[allow(clippy::too_many_arguments)]
    fn bn_backward(
        &mut self,
        g: &BnGeom,
        x: &[F],
        dy: &[F],
        gb: &[F],
        stats: &[F],
        dx: Option<norm::Dx<'_, F>>,
        dp: Option<norm::Dp<'_, F>>,
    ) {
        norm::backward(g, x, dy, gb, stats, dx, dp)
    }
    /// Batch-norm R-forward (see [`crate::serial::norm::r_forward`]).
    #[allow(clippy::too_many_arguments)]
    fn bn_r_forward(
        &mut self,
        g: &BnGeom,
        x: &[F],
        rx: Option<&[F]>,
        gb: &[F],
        vgb: &[F],
        stats: &[F],
        ry: &mut [F],
        rstats: &mut [F],
    ) {
        norm::r_forward(g, x, rx, gb, vgb, stats, ry, rstats)
    }
    /// Batch-norm R-backward (see [`crate::serial::norm::r_backward`]).
    fn bn_r_backward(
        &mut self,
        g: &BnGeom,
        a: &norm::RBack<'_, F>,
        rdx: Option<norm::Dx<'_, F>>,
        rsums: &mut [F],
    ) {
        norm::r_backward(g, a, rdx, rsums)
    }
    /// Pooling forward.
    fn pool_forward(&mut self, g: &PoolGeom, x: &[F], y: &mut [F]) {
        pool::forward(g, x, y)
    }
    /// Pooling backward.
    fn pool_backward(&mut self, g: &PoolGeom, x: &[F], dy: &[F], dx: &mut [F], acc: bool) {
        pool::backward(g, x, dy, dx, acc)
    }
    /// Pooling R-forward.
    fn pool_r_forward(&mut self, g: &PoolGeom, x: &[F], rx: &[F], ry: &mut [F]) {
        pool::r_forward(g, x, rx, ry)
    }
}

/// The serial reference executor: the loops of [`crate::vecops`] as they
/// are. Deterministic and identical on every target.
#[derive(Clone, Copy, Debug, Default)]
pub struct Serial;

impl<F: Real> Exec<F> for Serial {}

/// A CPU objective over slices: gives access to its [`Exec`]; gets
/// [`VecSpace`] over `[F]` from [`slice_vec_space!`](crate::slice_vec_space).
pub trait SliceSpace<F: Real> {
    /// The executor.
    type E: Exec<F>;
    /// The executor, mutably.
    fn exec(&mut self) -> &mut Self::E;
}

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
                $crate::objective::Exec::axpy($crate::objective::SliceSpace::exec(self), y, a, x)
            }
            fn waxpy(&mut self, w: &mut [F], x: &[F], a: F, y: &[F]) {
                $crate::objective::Exec::waxpy($crate::objective::SliceSpace::exec(self), w, x, a, y)
            }
            fn scale(&mut self, x: &mut [F], a: F) {
                $crate::objective::Exec::scale($crate::objective::SliceSpace::exec(self), x, a)
            }
            fn dot(&mut self, x: &[F], y: &[F]) -> F {
                $crate::objective::Exec::dot($crate::objective::SliceSpace::exec(self), x, y)
            }
            fn all_finite(&mut self, x: &[F]) -> bool {
                $crate::objective::Exec::all_finite($crate::objective::SliceSpace::exec(self), x)
            }
            fn opt_update(
                &mut self,
                theta: &mut [F],
                d: &[F],
                s0: Option<&mut [F]>,
                s1: Option<&mut [F]>,
                h: &$crate::optim::OptElem<F>,
            ) {
                $crate::objective::Exec::opt_update(
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
