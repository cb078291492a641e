//! [`Net`]: the [`Objective`] of any planned [`Model`], written once for
//! every backend. What differs between backends is only its [`Memory`]:
//! where the batch, the pass buffers, the running statistics and the
//! parameter vectors live, and which primitives ([`Ops`](crate::ops::Ops)) run on them.
//!
//! * [`CpuMem`]: slices, held however the caller likes (an array in a
//!   `static` on a microcontroller, a `Vec` on a host), the layer maths
//!   executed by an [`Exec`] (serial loops, or the host's parallel
//!   ones). [`CpuNet`] is `Net` on it.
//! * The GPU crate's device memory: device buffers and CUDA kernels.
//!
//! The objective itself, here once: the checks of θ, the batch and the
//! workspace, which pass each call runs, and the bookkeeping of the
//! batch-norm running statistics (only the step's unperturbed gradient
//! computes their update, which [`Objective::commit`] applies once the
//! step is accepted).
//!
//! A CPU workspace holds the pass buffers of [`Model::layout`] and, at its
//! end, the model's non-θ state (batch-norm running mean and variance per
//! channel; see [`Net::state`]). θ and every other parameter-sized vector
//! belong to the caller.

use core::marker::PhantomData;

use crate::error::{check_len, Error};
use crate::loss::{self, Loss, Targets};
use crate::model::pass::{Ctx, Forward, Hvp, LossGrad, LossOnly, Run};
use crate::model::{Mode, Model, Node, Op, Sizes};
use crate::objective::{forward_vec_space, Exec, Objective, Pass, SliceSpace, VecSpace};
use crate::ops::{Bound, CpuOps};
use crate::optim::OptElem;
use crate::real::Real;

/// A mini-batch: B inputs (row-major, one sample after the other) and
/// their targets.
#[derive(Clone, Copy, Debug)]
pub struct Batch<'a, F> {
    /// Inputs, B × (C·H·W).
    pub x: &'a [F],
    /// Targets.
    pub targets: Targets<'a, F>,
}

/// Where a [`Net`]'s passes run: the memory of its batch, workspace,
/// running statistics and frozen parameters, its parameter vectors
/// ([`VecSpace`]), and the primitives over them. A backend implements
/// this (and [`Ops`](crate::ops::Ops)); the objective is [`Net`], the same for all.
pub trait Memory<F: Real>: VecSpace<F> {
    /// A pass's loss as the backend holds it ([`Ops::Scalar`](crate::ops::Ops::Scalar)).
    type Scalar: Copy;
    /// Samples in the current batch (0: none).
    fn batch_len(&self) -> usize;
    /// Whether the current batch has targets (a pass with a loss needs
    /// them).
    fn has_targets(&self) -> bool;
    /// Scalars of the frozen parameters given (0: none).
    fn frozen_len(&self) -> usize;
    /// Refuses a batch of `b` (with the R-pass buffers when `hvp`) that
    /// the workspace does not hold.
    fn check_room(&self, sizes: &Sizes, b: usize, hvp: bool) -> Result<(), Error>;
    /// Runs the pass `r` over the current batch with θ, the direction `v`
    /// (None: read from `out`, in place) and the parameter-sized output
    /// `out`; returns its loss for the passes that compute one.
    fn run<R: Run<F>>(
        &mut self,
        c: &Ctx<'_>,
        loss: Loss,
        theta: &Self::Vec,
        v: Option<&Self::Vec>,
        out: Option<&mut Self::Vec>,
        r: R,
    ) -> Result<Option<Self::Scalar>, Error>;
    /// An objective call that computes a loss begins (a GPU keeps the
    /// step's first loss apart). Nothing by default.
    fn next_loss(&mut self) {}
    /// A loss as a value (a GPU reads it back, or leaves it on the device
    /// while it queues a step).
    fn loss_value(&mut self, s: Self::Scalar) -> Result<F, Error>;
    /// Applies the running-statistics update: for each `(dst, src, c)`,
    /// copies `c` scalars from the pass area at `src` to the state at
    /// `dst` (see [`Model::pending_copies`]).
    fn commit_state(
        &mut self,
        copies: impl Iterator<Item = (usize, usize, usize)>,
    ) -> Result<(), Error>;
    /// Sets `len` scalars of the state from `at` to `v`.
    fn fill_state(&mut self, at: usize, len: usize, v: F) -> Result<(), Error>;
    /// Whether this memory ends steps itself without waiting for their
    /// verdict ([`Memory::queue_finish`]). No by default.
    fn queues_steps(&self) -> bool {
        false
    }
    /// Queues the end of a step (see [`Objective::finish_step`]): the
    /// finiteness check of the step's loss and of `d`, then — only if it
    /// passes — the optimizer's update and the running-statistics `copies`
    /// (as [`Memory::commit_state`]). Called when
    /// [`Memory::queues_steps`].
    #[allow(clippy::too_many_arguments)]
    fn queue_finish(
        &mut self,
        theta: &mut Self::Vec,
        d: &mut Self::Vec,
        s0: Option<&mut Self::Vec>,
        s1: Option<&mut Self::Vec>,
        h: &OptElem<F>,
        step: u64,
        copies: Option<impl Iterator<Item = (usize, usize, usize)>>,
    ) -> Result<(), Error> {
        let _ = (theta, d, s0, s1, h, step, copies);
        Err(Error::Unsupported("queued steps"))
    }
}

/// A model's objective on the current mini-batch, in memory `M` (see the
/// module docs).
#[derive(Debug)]
pub struct Net<F, N, M> {
    model: Model<N>,
    mem: M,
    /// Batch size of the last unperturbed gradient pass whose running
    /// statistics update is waiting for [`Objective::commit`].
    pending: Option<usize>,
    tracked: u64,
    _f: PhantomData<fn() -> F>,
}

/// A model's objective on a CPU: [`Net`] on [`CpuMem`].
pub type CpuNet<'b, F, E, N, W> = Net<F, N, CpuMem<'b, F, E, W>>;

impl<F: Real, N: AsRef<[Node]>, M: Memory<F>> Net<F, N, M> {
    /// The objective of `model` in `mem`, continuing from the running
    /// statistics `mem` holds (see [`Net::reset_state`]); the count of
    /// batches tracked starts at 0.
    pub fn with_memory(model: Model<N>, mem: M) -> Self {
        Net {
            model,
            mem,
            pending: None,
            tracked: 0,
            _f: PhantomData,
        }
    }

    /// The model.
    pub fn model(&self) -> &Model<N> {
        &self.model
    }

    /// The memory.
    pub fn memory(&self) -> &M {
        &self.mem
    }

    /// The memory, mutably.
    pub fn memory_mut(&mut self) -> &mut M {
        &mut self.mem
    }

    /// The memory, giving up the objective.
    pub fn into_memory(self) -> M {
        self.mem
    }

    /// The model and the memory, the memory mutably.
    pub fn parts_mut(&mut self) -> (&Model<N>, &mut M) {
        (&self.model, &mut self.mem)
    }

    /// Changes the memory's batch (or anything else of it) with `f`, which
    /// sees the model too; a running-statistics update still pending from
    /// the old batch is dropped.
    pub fn change_batch<R>(&mut self, f: impl FnOnce(&Model<N>, &mut M) -> R) -> R {
        self.pending = None;
        f(&self.model, &mut self.mem)
    }

    /// Number of samples in the current batch (0 if none).
    pub fn batch_len(&self) -> usize {
        self.mem.batch_len()
    }

    /// Resets the running statistics to PyTorch's initial values (mean
    /// 0, variance 1) and the count of batches tracked to 0.
    pub fn reset_state(&mut self) -> Result<(), Error> {
        self.pending = None;
        self.tracked = 0;
        for n in self.model.nodes() {
            if let Op::BatchNorm = n.op {
                let c = n.in_dims.c;
                self.mem.fill_state(n.state_off, c, F::ZERO)?;
                self.mem.fill_state(n.state_off + c, c, F::ONE)?;
            }
        }
        Ok(())
    }

    /// Training batches the running statistics have been updated from
    /// (PyTorch's `num_batches_tracked`).
    pub fn batches_tracked(&self) -> u64 {
        self.tracked
    }

    /// Sets the count of batches tracked (when restoring a checkpoint);
    /// drops a pending running-statistics update.
    pub fn set_batches_tracked(&mut self, n: u64) {
        self.tracked = n;
        self.pending = None;
    }

    /// Checks θ, the batch and the workspace for a pass (`targets`: one
    /// with a loss); returns the batch size.
    fn ready(&self, theta: &M::Vec, hvp: bool, mode: Mode, targets: bool) -> Result<usize, Error> {
        let b = self.mem.batch_len();
        if b == 0 || targets && !self.mem.has_targets() {
            return Err(Error::NoBatch);
        }
        check_len("theta", self.model.param_count(), self.mem.len(theta))?;
        let sizes = &self.model.sizes;
        if sizes.params != sizes.all_params {
            if self.mem.frozen_len() != sizes.all_params {
                return Err(Error::MissingBuffer("frozen parameters"));
            }
            if hvp {
                return Err(Error::Unsupported(
                    "exact Hessian-vector product of a model with frozen parameters",
                ));
            }
        }
        self.mem.check_room(sizes, b, hvp)?;
        self.model.check_batch(b, mode)?;
        Ok(b)
    }

    fn check_vec(&self, what: &'static str, v: &M::Vec) -> Result<(), Error> {
        check_len(what, self.model.param_count(), self.mem.len(v))
    }

    /// Runs `r` on a batch of `b`.
    fn run<R: Run<F>>(
        &mut self,
        b: usize,
        hvp: bool,
        theta: &M::Vec,
        v: Option<&M::Vec>,
        out: Option<&mut M::Vec>,
        r: R,
    ) -> Result<Option<M::Scalar>, Error> {
        let ctx = Ctx {
            nodes: self.model.nodes(),
            lay: self.model.layout(b, hvp),
        };
        let s = self.mem.run(&ctx, self.model.loss, theta, v, out, r)?;
        if r.updates() && self.model.sizes.batch_norms > 0 {
            self.pending = Some(b);
        }
        Ok(s)
    }

    /// d ← ∇L + γ·H·∇L in place (one gradient pass, one R-pass), g ← ∇L
    /// copied out between them when given; returns L(θ).
    fn gr(
        &mut self,
        theta: &M::Vec,
        d: &mut M::Vec,
        g: Option<&mut M::Vec>,
        gamma: F,
    ) -> Result<F, Error> {
        let b = self.ready(theta, true, Mode::Train, true)?;
        self.check_vec("direction", d)?;
        if let Some(g) = &g {
            self.check_vec("gradient", g)?;
        }
        self.mem.next_loss();
        let r = LossGrad {
            update: true,
            grad: Some((F::ONE, F::ZERO)),
        };
        let s = self.run(b, true, theta, None, Some(&mut *d), r)?;
        if let Some(g) = g {
            self.mem.copy(g, d);
        }
        let r = Hvp {
            alpha: gamma,
            beta: F::ONE,
        };
        self.run(b, true, theta, None, Some(d), r)?;
        self.value(s)
    }

    /// The loss of a pass that computed one.
    fn value(&mut self, s: Option<M::Scalar>) -> Result<F, Error> {
        match s {
            Some(s) => self.mem.loss_value(s),
            None => Err(Error::Unsupported("a loss from a pass without one")),
        }
    }
}

forward_vec_space!(impl[F: Real, N, M: Memory<F>] for Net<F, N, M>, mem, M::Vec);

impl<F: Real, N: AsRef<[Node]>, M: Memory<F>> Objective<F> for Net<F, N, M> {
    fn param_count(&self) -> usize {
        self.model.param_count()
    }

    fn loss_grad(
        &mut self,
        theta: &M::Vec,
        grad: &mut M::Vec,
        alpha: F,
        beta: F,
        pass: Pass,
    ) -> Result<F, Error> {
        let b = self.ready(theta, false, Mode::Train, true)?;
        self.check_vec("gradient", grad)?;
        self.mem.next_loss();
        let update = pass == Pass::Train;
        let r = LossGrad {
            update,
            grad: Some((alpha, beta)),
        };
        let s = self.run(b, false, theta, None, Some(grad), r)?;
        self.value(s)
    }

    fn commit(&mut self) {
        let Some(b) = self.pending.take() else {
            return;
        };
        if self.mem.commit_state(self.model.pending_copies(b)).is_ok() {
            self.tracked += 1;
        }
    }

    /// Costs one gradient plus one R-pass that reuses the forward and
    /// backward values (the input layer needs no R{x} products).
    fn loss_grad_gr(&mut self, theta: &M::Vec, d: &mut M::Vec, gamma: F) -> Result<F, Error> {
        self.gr(theta, d, None, gamma)
    }

    /// One gradient pass and one R-pass, as `loss_grad_gr`, with g copied
    /// out between them.
    fn loss_grad_gr_and_grad(
        &mut self,
        theta: &M::Vec,
        d: &mut M::Vec,
        g: &mut M::Vec,
        gamma: F,
    ) -> Result<F, Error> {
        self.gr(theta, d, Some(g), gamma)
    }

    fn hvp(&mut self, theta: &M::Vec, v: &M::Vec, out: &mut M::Vec) -> Result<(), Error> {
        let b = self.ready(theta, true, Mode::Train, true)?;
        self.check_vec("v", v)?;
        self.check_vec("hvp output", out)?;
        self.mem.next_loss();
        let r = LossGrad {
            update: false,
            grad: None,
        };
        self.run(b, true, theta, None, None, r)?;
        let r = Hvp {
            alpha: F::ONE,
            beta: F::ZERO,
        };
        self.run(b, true, theta, Some(v), Some(out), r)?;
        Ok(())
    }

    /// The kernel's check, commit and update ([`crate::objective::finish_step`]),
    /// or — in a memory that queues steps — the same, queued without
    /// waiting for the verdict ([`Memory::queue_finish`]).
    fn finish_step(
        &mut self,
        theta: &mut M::Vec,
        d: &mut M::Vec,
        s0: Option<&mut M::Vec>,
        s1: Option<&mut M::Vec>,
        loss: F,
        h: &OptElem<F>,
        step: u64,
    ) -> Result<(), Error> {
        if !self.mem.queues_steps() {
            return crate::objective::finish_step(self, theta, d, s0, s1, loss, h);
        }
        let pending = self.pending.take();
        let copies = pending.map(|b| self.model.pending_copies(b));
        self.mem.queue_finish(theta, d, s0, s1, h, step, copies)?;
        if pending.is_some() {
            // counted when queued
            self.tracked += 1;
        }
        Ok(())
    }

    fn loss(&mut self, theta: &M::Vec) -> Result<F, Error> {
        let b = self.ready(theta, false, Mode::Train, true)?;
        self.mem.next_loss();
        let s = self.run(b, false, theta, None, None, LossOnly)?;
        self.value(s)
    }
}

/// A model's memory on a CPU: a workspace `W` (pass buffers, then the
/// running statistics at its end), the current batch and the frozen
/// parameters as slices, and the executor `E` of the layer maths.
#[derive(Debug)]
pub struct CpuMem<'b, F, E, W> {
    exec: E,
    ws: W,
    /// Scalars of state at the end of `ws`.
    state: usize,
    batch: Option<(Batch<'b, F>, usize)>,
    /// The frozen parameters (a model that freezes some; see
    /// [`Net::set_frozen`]).
    frozen: &'b [F],
    /// The batch has inputs only ([`Net::set_inputs`]): forward passes
    /// only.
    inputs_only: bool,
    /// Whether the unperturbed pass counts its correct predictions.
    count: bool,
    /// Correct predictions of the current batch's first unperturbed
    /// training pass (see [`Net::count_correct`]).
    correct: Option<usize>,
}

impl<F: Real, E: Exec<F>, W: AsMut<[F]> + AsRef<[F]>> CpuMem<'_, F, E, W> {
    /// The outputs (B × K) of the last pass, at `c`'s last node.
    fn outputs<'s>(&'s self, c: &Ctx<'_>, x: &'s [F]) -> &'s [F] {
        let last = c.nodes[c.nodes.len() - 1];
        let k = last.out_dims.len();
        let loc = c.val(&last);
        let n = c.b() * k;
        match loc.mem {
            crate::ops::Mem::X => &x[..n],
            _ => &self.ws.as_ref()[loc.off..loc.off + n],
        }
    }
}

impl<F: Real, E: Exec<F>, W> SliceSpace<F> for CpuMem<'_, F, E, W> {
    type E = E;
    fn exec(&mut self) -> &mut E {
        &mut self.exec
    }
}
crate::slice_vec_space!(impl[F: Real, E: Exec<F>, W] for CpuMem<'_, F, E, W>);

impl<F: Real, E: Exec<F>, W: AsMut<[F]> + AsRef<[F]>> Memory<F> for CpuMem<'_, F, E, W> {
    type Scalar = F;

    fn batch_len(&self) -> usize {
        self.batch.map_or(0, |(_, b)| b)
    }

    fn has_targets(&self) -> bool {
        !self.inputs_only
    }

    fn frozen_len(&self) -> usize {
        self.frozen.len()
    }

    fn check_room(&self, sizes: &Sizes, b: usize, hvp: bool) -> Result<(), Error> {
        let need = crate::model::workspace_len(sizes, b, hvp);
        let got = self.ws.as_ref().len();
        if got < need {
            return Err(Error::ShapeMismatch {
                what: "workspace",
                expected: need,
                got,
            });
        }
        Ok(())
    }

    fn run<R: Run<F>>(
        &mut self,
        c: &Ctx<'_>,
        loss: Loss,
        theta: &[F],
        v: Option<&[F]>,
        out: Option<&mut [F]>,
        r: R,
    ) -> Result<Option<F>, Error> {
        let (batch, _) = self.batch.ok_or(Error::NoBatch)?;
        let ws = self.ws.as_mut();
        let total = ws.len();
        let (pass_area, state) = ws.split_at_mut(total - self.state);
        let mut ops = CpuOps {
            exec: &mut self.exec,
            mem: Bound {
                x: batch.x,
                theta,
                v,
                out,
                ws: &mut pass_area[..c.lay.end],
                state,
                targets: batch.targets,
                frozen: self.frozen,
            },
        };
        let s = r.run(c, &mut ops, loss);
        if r.updates() && self.count && self.correct.is_none() {
            if let Targets::Classes(y) = batch.targets {
                let k = c.nodes[c.nodes.len() - 1].out_dims.len();
                self.correct = Some(loss::correct(self.outputs(c, batch.x), k, y));
            }
        }
        Ok(s)
    }

    fn loss_value(&mut self, s: F) -> Result<F, Error> {
        Ok(s)
    }

    fn commit_state(
        &mut self,
        copies: impl Iterator<Item = (usize, usize, usize)>,
    ) -> Result<(), Error> {
        let ws = self.ws.as_mut();
        let total = ws.len();
        let (area, state) = ws.split_at_mut(total - self.state);
        for (dst, src, c) in copies {
            state[dst..dst + c].copy_from_slice(&area[src..src + c]);
        }
        Ok(())
    }

    fn fill_state(&mut self, at: usize, len: usize, v: F) -> Result<(), Error> {
        let ws = self.ws.as_mut();
        let total = ws.len();
        ws[total - self.state..][at..at + len].fill(v);
        Ok(())
    }
}

impl<'b, F: Real, E: Exec<F>, N: AsRef<[Node]>, W: AsMut<[F]> + AsRef<[F]>> CpuNet<'b, F, E, N, W> {
    /// An objective for `model` executing with `exec`, with workspace
    /// `ws` (at least `model.workspace_len(1, false)` scalars). Its state
    /// (batch-norm running statistics) is reset to PyTorch's initial
    /// values: mean 0, variance 1.
    pub fn from_model(model: Model<N>, exec: E, ws: W) -> Result<Self, Error> {
        let mut net = Net::resume(model, exec, ws)?;
        net.reset_state()?;
        Ok(net)
    }

    /// An objective for `model` on a workspace whose state part (its end)
    /// already holds the running statistics to continue from, e.g. the
    /// same buffer a previous objective trained (fine-tuning step after
    /// step). The count of batches tracked starts at 0.
    pub fn resume(model: Model<N>, exec: E, ws: W) -> Result<Self, Error> {
        // planned: one sample's workspace is addressable (plain arithmetic)
        let need = crate::model::workspace_len(&model.sizes, 1, false);
        if ws.as_ref().len() < need {
            return Err(Error::ShapeMismatch {
                what: "workspace",
                expected: need,
                got: ws.as_ref().len(),
            });
        }
        let mem = CpuMem {
            exec,
            ws,
            state: model.sizes.state,
            batch: None,
            frozen: &[],
            inputs_only: false,
            count: false,
            correct: None,
        };
        Ok(Net::with_memory(model, mem))
    }

    /// Sets the frozen parameters a model planned with frozen layers
    /// reads ([`crate::model::Train`]): every parameter of the model in
    /// layer order (`sizes.all_params` scalars; the trained ones among
    /// them are not read, θ holds them). They may live in flash.
    pub fn set_frozen(&mut self, frozen: &'b [F]) -> Result<(), Error> {
        check_len(
            "frozen parameters",
            self.model.sizes.all_params,
            frozen.len(),
        )?;
        self.mem.frozen = frozen;
        Ok(())
    }

    /// The workspace (with the state at its end), giving up the objective.
    pub fn into_workspace(self) -> W {
        self.mem.ws
    }

    /// The executor.
    pub fn exec_mut(&mut self) -> &mut E {
        &mut self.mem.exec
    }

    /// Largest batch the workspace holds (with or without HVP buffers).
    pub fn capacity(&self, hvp: bool) -> usize {
        let avail = self.mem.ws.as_ref().len();
        let s = &self.model.sizes;
        let per = crate::model::workspace_len(s, 2, hvp) - crate::model::workspace_len(s, 1, hvp);
        let base = crate::model::workspace_len(s, 1, hvp);
        if avail < base {
            0
        } else {
            match (avail - base).checked_div(per) {
                Some(more) => 1 + more,
                None => usize::MAX,
            }
        }
    }

    /// The non-θ state: for each batch-norm layer in order, its running
    /// mean then its running variance (C each).
    pub fn state(&self) -> &[F] {
        let ws = self.mem.ws.as_ref();
        &ws[ws.len() - self.mem.state..]
    }

    /// The non-θ state, mutably (to restore it from a checkpoint).
    pub fn state_mut(&mut self) -> &mut [F] {
        let s = self.mem.state;
        let ws = self.mem.ws.as_mut();
        let n = ws.len();
        &mut ws[n - s..]
    }

    /// Sets the mini-batch every following call works on. Checks sizes and
    /// labels; the batch must fit the workspace (see [`Net::capacity`]).
    pub fn set_batch(&mut self, x: &'b [F], targets: Targets<'b, F>) -> Result<(), Error> {
        let b = self.batch_size(x)?;
        loss::check_targets(self.model.loss, &targets, b, self.model.outputs())?;
        self.change_batch(|_, m| {
            m.batch = Some((Batch { x, targets }, b));
            m.correct = None;
            m.inputs_only = false;
        });
        Ok(())
    }

    /// Sets a mini-batch of inputs without targets, for forward passes
    /// only ([`Net::forward_outputs`]; a loss or gradient is then refused):
    /// e.g. the frozen layers of a fine-tuned model computing features.
    pub fn set_inputs(&mut self, x: &'b [F]) -> Result<(), Error> {
        let b = self.batch_size(x)?;
        self.change_batch(|_, m| {
            let targets = Targets::Values(&[]);
            m.batch = Some((Batch { x, targets }, b));
            m.correct = None;
            m.inputs_only = true;
        });
        Ok(())
    }

    /// The samples in `x`, checked against the input size and the
    /// workspace.
    fn batch_size(&self, x: &[F]) -> Result<usize, Error> {
        let n0 = self.model.input.len();
        let b = x.len() / n0;
        if b == 0 || b * n0 != x.len() {
            return Err(Error::ShapeMismatch {
                what: "batch inputs",
                expected: n0 * b.max(1),
                got: x.len(),
            });
        }
        if b > self.capacity(false) {
            return Err(Error::ShapeMismatch {
                what: "workspace",
                expected: self.model.workspace_len(b, false),
                got: self.mem.ws.as_ref().len(),
            });
        }
        Ok(b)
    }

    /// Counts, from now on, the correct predictions (arg max = label) of
    /// each batch's first unperturbed training pass: the training-mode
    /// logits at θ, whose loss the step returns. Off by default (a device
    /// does not pay for it).
    pub fn count_correct(&mut self, on: bool) {
        self.mem.count = on;
    }

    /// The correct predictions of the current batch's first unperturbed
    /// training pass, when counting ([`Net::count_correct`]) and the
    /// targets are class labels.
    pub fn train_correct(&self) -> Option<usize> {
        self.mem.correct
    }

    /// Runs the forward pass at θ in `mode` (batch norm with batch or
    /// running statistics; no state update) and returns the outputs
    /// (B × outputs).
    pub fn forward_outputs_mode(&mut self, theta: &[F], mode: Mode) -> Result<&[F], Error> {
        let b = self.ready(theta, false, mode, false)?;
        self.run(b, false, theta, None, None, Forward(mode))?;
        let (batch, _) = self.mem.batch.ok_or(Error::NoBatch)?;
        let ctx = Ctx {
            nodes: self.model.nodes(),
            lay: self.model.layout(b, false),
        };
        Ok(self.mem.outputs(&ctx, batch.x))
    }

    /// Evaluation outputs: the forward pass with batch norm on its
    /// running statistics (PyTorch's `model.eval()`).
    pub fn forward_outputs(&mut self, theta: &[F]) -> Result<&[F], Error> {
        self.forward_outputs_mode(theta, Mode::Eval)
    }
}
