//! The two traits every backend implements, and over which every training
//! method and the optimizer are written once.
//!
//! * [`VecSpace`]: where parameter-sized vectors live and the few
//!   operations the methods need on them (slices on a CPU, device buffers
//!   on a GPU).
//! * [`Objective`]: "loss and gradient at θ on the current mini-batch", and
//!   optionally the exact Hessian-vector product.

use crate::error::Error;
use crate::optim::SgdElem;
use crate::real::Real;

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
    /// The SGD update, elementwise: see [`crate::optim::sgd_elem`] for the
    /// maths, which every backend executes as written.
    fn sgd_update(
        &mut self,
        theta: &mut Self::Vec,
        d: &Self::Vec,
        momentum: Option<&mut Self::Vec>,
        h: &SgdElem<F>,
    );
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
    fn loss_grad(
        &mut self,
        theta: &Self::Vec,
        grad: &mut Self::Vec,
        alpha: F,
        beta: F,
    ) -> Result<F, Error>;

    /// d ← ∇L(θ) + γ·H(θ)·∇L(θ), the exact gradient of the GR objective
    /// L + (γ/2)‖∇L‖²; returns L(θ).
    fn loss_grad_gr(&mut self, theta: &Self::Vec, d: &mut Self::Vec, gamma: F) -> Result<F, Error> {
        let _ = (theta, d, gamma);
        Err(Error::Unsupported("exact Hessian-vector product"))
    }

    /// out ← H(θ)·v.
    fn hvp(&mut self, theta: &Self::Vec, v: &Self::Vec, out: &mut Self::Vec) -> Result<(), Error> {
        let _ = (theta, v, out);
        Err(Error::Unsupported("exact Hessian-vector product"))
    }

    /// L(θ) without a gradient.
    fn loss(&mut self, theta: &Self::Vec) -> Result<F, Error>;
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
    /// The SGD update over slices.
    fn sgd_update(&mut self, theta: &mut [F], d: &[F], momentum: Option<&mut [F]>, h: &SgdElem<F>) {
        crate::optim::sgd_slices(theta, d, momentum, h)
    }
}

/// The serial reference executor: the loops of [`crate::vecops`] as they
/// are. Deterministic and identical on every target.
#[derive(Clone, Copy, Debug, Default)]
pub struct Serial;

impl<F: Real> Exec<F> for Serial {}

/// A CPU objective over slices: gives access to its [`Exec`], and gets
/// [`VecSpace`] over `[F]` for free (the blanket impl below).
pub trait SliceSpace<F: Real> {
    /// The executor.
    type E: Exec<F>;
    /// The executor, mutably.
    fn exec(&mut self) -> &mut Self::E;
}

impl<F: Real, T: SliceSpace<F>> VecSpace<F> for T {
    type Vec = [F];
    fn len(&self, x: &[F]) -> usize {
        x.len()
    }
    fn copy(&mut self, dst: &mut [F], src: &[F]) {
        dst.copy_from_slice(src)
    }
    fn axpy(&mut self, y: &mut [F], a: F, x: &[F]) {
        self.exec().axpy(y, a, x)
    }
    fn waxpy(&mut self, w: &mut [F], x: &[F], a: F, y: &[F]) {
        self.exec().waxpy(w, x, a, y)
    }
    fn scale(&mut self, x: &mut [F], a: F) {
        self.exec().scale(x, a)
    }
    fn dot(&mut self, x: &[F], y: &[F]) -> F {
        self.exec().dot(x, y)
    }
    fn all_finite(&mut self, x: &[F]) -> bool {
        self.exec().all_finite(x)
    }
    fn sgd_update(&mut self, theta: &mut [F], d: &[F], momentum: Option<&mut [F]>, h: &SgdElem<F>) {
        self.exec().sgd_update(theta, d, momentum, h)
    }
}
