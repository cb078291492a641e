//! Data-parallel training: the [`Objective`] of a global mini-batch split
//! across processes (MPI ranks, GPUs), each holding the same θ and its own
//! slice of the batch.
//!
//! [`DataParallel`] wraps a process's local objective and a communicator
//! ([`AllReduce`]). Its gradients are those of the *global* batch: each
//! process computes the gradient of its slice (the mean over its b_r
//! samples), weights it by its share w_r = b_r / B of the global batch B,
//! and one all-reduce (a sum over processes) gives
//! Σ_r w_r·∇L_r = ∇L, the mean over all B samples, identical on every
//! process. The methods ([`crate::method`]) run on it unchanged, so every
//! process forms the same direction and takes the same step.
//!
//! Where the ascent of a two-gradient method (F-GR's θ + ε·g, SAM's
//! perturbation, DB's Hg) starts is a choice ([`AscentMode`]):
//!
//! * [`AscentMode::Global`]: every gradient evaluation is all-reduced, so
//!   the ascent starts from the global gradient and the step is the step
//!   of one process on the whole batch (up to the order of f32 sums).
//!   F-GR, B-GR, SAM, USAM: two all-reduces per step; C-GR three;
//!   DB two (the gradient, then H·g at the global g, which recomputes
//!   the slice's forward and backward pass before the R-pass).
//! * [`AscentMode::Local`]: every process forms its whole direction on its
//!   own slice (the ascent from its own gradient, "m-sharpness" with m the
//!   slice) and the directions are averaged once, at
//!   [`Objective::end_direction`]: one all-reduce per step for every
//!   method, one fewer than global for F-GR.
//!
//! The loss a gradient evaluation returns is the global batch's (the
//! weighted losses are summed in the same all-reduce), so decisions taken
//! on it (flooding's sign, the finiteness check) agree on every process;
//! a non-finite value on any process makes the reduced vector or loss
//! non-finite on all of them, so every process rejects the same steps. An
//! error of the local objective on one process is flagged in the same
//! all-reduce, and every process then returns an error ([`Error::Peer`]
//! where the error was another process's).
//!
//! The non-θ state (batch-norm running statistics) is left to the caller:
//! each process commits its own slice's statistics; see the host's
//! data-parallel notes for how they are kept identical.

use crate::error::Error;
use crate::objective::{forward_vec_space, Objective, Pass, VecSpace};
use crate::real::Real;

/// Sums over the processes of a data-parallel job.
pub trait AllReduce<F: Real, V: ?Sized> {
    /// v ← Σ over processes of v, and scalars ← Σ over processes of
    /// scalars, in one collective; the results must be identical (bit for
    /// bit) on every process.
    fn all_reduce(&mut self, v: &mut V, scalars: &mut [F]) -> Result<(), Error>;
}

/// A communicator of one process: the sums are the values themselves.
#[derive(Clone, Copy, Debug, Default)]
pub struct Alone;

impl<F: Real, V: ?Sized> AllReduce<F, V> for Alone {
    fn all_reduce(&mut self, _v: &mut V, _scalars: &mut [F]) -> Result<(), Error> {
        Ok(())
    }
}

/// Where the ascent of a two-gradient method starts (see the module
/// documentation).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum AscentMode {
    /// From the all-reduced gradient: the same step as one process on the
    /// global batch.
    #[default]
    Global,
    /// From each process's own gradient; the directions are averaged once
    /// per step.
    Local,
}

/// The global batch's objective over a process's local one (see the
/// module documentation).
pub struct DataParallel<'a, F: Real, O: ?Sized + VecSpace<F>, R: ?Sized> {
    inner: &'a mut O,
    comm: &'a mut R,
    weight: F,
    root: bool,
    mode: AscentMode,
    scratch: Option<&'a mut O::Vec>,
}

impl<'a, F: Real, O: Objective<F> + ?Sized, R: AllReduce<F, O::Vec> + ?Sized>
    DataParallel<'a, F, O, R>
{
    /// Wraps `inner`, whose current batch is this process's slice, a share
    /// `weight` = b_r / B of the global batch (the shares of all processes
    /// sum to 1). `root` must be true on exactly one process (it carries
    /// the β·grad part of accumulating gradient evaluations). `scratch`,
    /// a parameter-sized vector, is needed by `db` under
    /// [`AscentMode::Global`] (to hold H·g).
    pub fn new(
        inner: &'a mut O,
        comm: &'a mut R,
        weight: F,
        root: bool,
        mode: AscentMode,
        scratch: Option<&'a mut O::Vec>,
    ) -> Self {
        DataParallel {
            inner,
            comm,
            weight,
            root,
            mode,
            scratch,
        }
    }

    /// The local objective.
    pub fn inner(&mut self) -> &mut O {
        self.inner
    }

    /// Sums `v` and the weighted loss over processes, with the error flag
    /// of the local result; returns the global loss.
    fn reduce(&mut self, v: &mut O::Vec, local: Result<F, Error>) -> Result<F, Error> {
        let (loss, flag) = match local {
            Ok(l) => (l * self.weight, F::ZERO),
            Err(_) => (F::ZERO, F::ONE),
        };
        let mut s = [loss, flag];
        self.comm.all_reduce(v, &mut s)?;
        local?;
        if s[1] != F::ZERO {
            return Err(Error::Peer);
        }
        Ok(s[0])
    }
}

forward_vec_space!(impl[F: Real, O: Objective<F> + ?Sized, R: ?Sized] for DataParallel<'_, F, O, R>, inner, O::Vec);

impl<F: Real, O: Objective<F> + ?Sized, R: AllReduce<F, O::Vec> + ?Sized> Objective<F>
    for DataParallel<'_, F, O, R>
where
    Self: VecSpace<F, Vec = O::Vec>,
{
    fn param_count(&self) -> usize {
        self.inner.param_count()
    }

    /// Global: grad ← β·grad + α·Σ_r w_r·∇L_r, by one all-reduce of
    /// (root: β·grad + α·w_r·∇L_r; others: α·w_r·∇L_r), so only the
    /// freshly computed part is summed and β·grad is counted once.
    /// Local: the process's own gradient, not reduced.
    fn loss_grad(
        &mut self,
        theta: &O::Vec,
        grad: &mut O::Vec,
        alpha: F,
        beta: F,
        pass: Pass,
    ) -> Result<F, Error> {
        match self.mode {
            AscentMode::Local => self.inner.loss_grad(theta, grad, alpha, beta, pass),
            AscentMode::Global => {
                let b = if self.root { beta } else { F::ZERO };
                let r = self
                    .inner
                    .loss_grad(theta, grad, alpha * self.weight, b, pass);
                self.reduce(grad, r)
            }
        }
    }

    fn commit(&mut self) {
        self.inner.commit()
    }

    /// Global: g by one all-reduce, then H·g at that global g (the local
    /// objective's [`Objective::hvp`]: its forward and backward pass again,
    /// then the R-pass) by a second; d ← g + γ·H·g. Local: the process's
    /// own d = g_r + γ·H_r·g_r, not reduced.
    fn loss_grad_gr(&mut self, theta: &O::Vec, d: &mut O::Vec, gamma: F) -> Result<F, Error> {
        if self.mode == AscentMode::Local {
            return self.inner.loss_grad_gr(theta, d, gamma);
        }
        let loss = self.loss_grad(theta, d, F::ONE, F::ZERO, Pass::Train)?;
        let Some(hg) = self.scratch.take() else {
            return Err(Error::MissingBuffer("data-parallel Hv scratch"));
        };
        let r = self.inner.hvp(theta, d, hg).map(|_| F::ZERO);
        if r.is_ok() {
            self.inner.scale(hg, gamma * self.weight);
        }
        let r = self.reduce(hg, r);
        if r.is_ok() {
            self.inner.axpy(d, F::ONE, hg);
        }
        self.scratch = Some(hg);
        r.map(|_| loss)
    }

    /// Global: out ← Σ_r w_r·H_r·v = H·v of the global batch. Local: the
    /// process's own H_r·v.
    fn hvp(&mut self, theta: &O::Vec, v: &O::Vec, out: &mut O::Vec) -> Result<(), Error> {
        let r = self.inner.hvp(theta, v, out);
        if self.mode == AscentMode::Local {
            return r;
        }
        let r = r.map(|_| F::ZERO);
        if r.is_ok() {
            self.inner.scale(out, self.weight);
        }
        self.reduce(out, r).map(|_| ())
    }

    /// The global batch's loss, in both modes (the vector part of the
    /// all-reduce is `scratch`, which must be given; its content is
    /// summed too and is garbage afterwards).
    fn loss(&mut self, theta: &O::Vec) -> Result<F, Error> {
        let r = self.inner.loss(theta);
        let Some(s) = self.scratch.take() else {
            return Err(Error::MissingBuffer("data-parallel loss scratch"));
        };
        let out = self.reduce(s, r);
        self.scratch = Some(s);
        out
    }

    /// Local: d ← Σ_r w_r·d_r and L ← Σ_r w_r·L_r in one all-reduce.
    /// Global: nothing (every gradient was reduced already).
    fn end_direction(&mut self, d: &mut O::Vec, loss: F) -> Result<F, Error> {
        match self.mode {
            AscentMode::Global => Ok(loss),
            AscentMode::Local => {
                self.inner.scale(d, self.weight);
                self.reduce(d, Ok(loss))
            }
        }
    }
}
