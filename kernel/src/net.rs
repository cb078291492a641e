//! [`Net`]: the [`Objective`] of any planned [`Model`] on a CPU, its
//! workspace held however the caller likes (an array in a `static` on a
//! microcontroller, a `Vec` on a host), executing the layer maths with an
//! [`Exec`] (serial loops, or the host's parallel ones).
//!
//! The workspace holds the pass buffers of [`Model::layout`] and, at its
//! end, the model's non-θ state (batch-norm running mean and variance per
//! channel; see [`Net::state`]). θ and every other parameter-sized vector
//! belong to the caller.

use crate::error::{check_len, Error};
use crate::loss::{self, Targets};
use crate::model::pass::{self, Ctx};
use crate::model::{Mode, Model, Node, Op};
use crate::objective::{Exec, Objective, Pass, SliceSpace};
use crate::ops::{Bound, CpuOps};
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

/// A model's objective on the current mini-batch (see the module docs).
#[derive(Debug)]
pub struct Net<'b, F, E, N, W> {
    model: Model<N>,
    exec: E,
    ws: W,
    batch: Option<(Batch<'b, F>, usize)>,
    /// Batch size of the last unperturbed gradient pass whose running
    /// statistics update is waiting for [`Objective::commit`].
    pending: Option<usize>,
    tracked: u64,
    /// Whether the unperturbed pass counts its correct predictions.
    count: bool,
    /// Correct predictions of the current batch's first unperturbed
    /// training pass (see [`Net::count_correct`]).
    correct: Option<usize>,
    /// The frozen parameters (a model that freezes some; see
    /// [`Net::set_frozen`]).
    frozen: &'b [F],
    /// The batch has inputs only ([`Net::set_inputs`]): forward passes
    /// only.
    inputs_only: bool,
}

impl<'b, F: Real, E: Exec<F>, N: AsRef<[Node]>, W: AsMut<[F]> + AsRef<[F]>> Net<'b, F, E, N, W> {
    /// An objective for `model` executing with `exec`, with workspace
    /// `ws` (at least `model.workspace_len(1, false)` scalars). Its state
    /// (batch-norm running statistics) is reset to PyTorch's initial
    /// values: mean 0, variance 1.
    pub fn from_model(model: Model<N>, exec: E, ws: W) -> Result<Self, Error> {
        let mut net = Net::resume(model, exec, ws)?;
        net.reset_state();
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
        Ok(Net {
            model,
            exec,
            ws,
            batch: None,
            pending: None,
            tracked: 0,
            count: false,
            correct: None,
            frozen: &[],
            inputs_only: false,
        })
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
        self.frozen = frozen;
        Ok(())
    }

    /// The workspace (with the state at its end), giving up the objective.
    pub fn into_workspace(self) -> W {
        self.ws
    }

    /// The model.
    pub fn model(&self) -> &Model<N> {
        &self.model
    }

    /// The executor.
    pub fn exec_mut(&mut self) -> &mut E {
        &mut self.exec
    }

    /// Largest batch the workspace holds (with or without HVP buffers).
    pub fn capacity(&self, hvp: bool) -> usize {
        let avail = self.ws.as_ref().len();
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
        let ws = self.ws.as_ref();
        &ws[ws.len() - self.model.sizes.state..]
    }

    /// The non-θ state, mutably (to restore it from a checkpoint).
    pub fn state_mut(&mut self) -> &mut [F] {
        let s = self.model.sizes.state;
        let ws = self.ws.as_mut();
        let n = ws.len();
        &mut ws[n - s..]
    }

    /// Resets the running statistics to mean 0, variance 1, and the count
    /// of batches tracked to 0.
    pub fn reset_state(&mut self) {
        let bns: usize = self.model.nodes().len();
        for i in 0..bns {
            let n = self.model.nodes()[i];
            if let Op::BatchNorm = n.op {
                let c = n.in_dims.c;
                let st = self.state_mut();
                st[n.state_off..n.state_off + c].fill(F::ZERO);
                st[n.state_off + c..n.state_off + 2 * c].fill(F::ONE);
            }
        }
        self.tracked = 0;
        self.pending = None;
    }

    /// Training batches the running statistics have been updated from
    /// (PyTorch's `num_batches_tracked`).
    pub fn batches_tracked(&self) -> u64 {
        self.tracked
    }

    /// Sets the count of batches tracked (when restoring a checkpoint).
    pub fn set_batches_tracked(&mut self, n: u64) {
        self.tracked = n;
    }

    /// Sets the mini-batch every following call works on. Checks sizes and
    /// labels; the batch must fit the workspace (see [`Net::capacity`]).
    pub fn set_batch(&mut self, x: &'b [F], targets: Targets<'b, F>) -> Result<(), Error> {
        let n0 = self.model.input.len();
        let b = x.len() / n0;
        if b == 0 || b * n0 != x.len() {
            return Err(Error::ShapeMismatch {
                what: "batch inputs",
                expected: n0 * b.max(1),
                got: x.len(),
            });
        }
        loss::check_targets(self.model.loss, &targets, b, self.model.outputs())?;
        if b > self.capacity(false) {
            return Err(Error::ShapeMismatch {
                what: "workspace",
                expected: self.model.workspace_len(b, false),
                got: self.ws.as_ref().len(),
            });
        }
        self.batch = Some((Batch { x, targets }, b));
        self.pending = None;
        self.correct = None;
        self.inputs_only = false;
        Ok(())
    }

    /// Sets a mini-batch of inputs without targets, for forward passes
    /// only ([`Net::forward_outputs`]; a loss or gradient is then refused):
    /// e.g. the frozen layers of a fine-tuned model computing features.
    pub fn set_inputs(&mut self, x: &'b [F]) -> Result<(), Error> {
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
                got: self.ws.as_ref().len(),
            });
        }
        self.batch = Some((
            Batch {
                x,
                targets: Targets::Values(&[]),
            },
            b,
        ));
        self.pending = None;
        self.correct = None;
        self.inputs_only = true;
        Ok(())
    }

    /// Counts, from now on, the correct predictions (arg max = label) of
    /// each batch's first unperturbed training pass: the training-mode
    /// logits at θ, whose loss the step returns. Off by default (a device
    /// does not pay for it).
    pub fn count_correct(&mut self, on: bool) {
        self.count = on;
    }

    /// The correct predictions of the current batch's first unperturbed
    /// training pass, when counting ([`Net::count_correct`]) and the
    /// targets are class labels.
    pub fn train_correct(&self) -> Option<usize> {
        self.correct
    }

    /// Number of samples in the current batch (0 if none).
    pub fn batch_len(&self) -> usize {
        self.batch.map_or(0, |(_, b)| b)
    }

    /// The batch for a pass with a loss (targets needed).
    fn ready(&self, theta: &[F], hvp: bool, mode: Mode) -> Result<(Batch<'b, F>, usize), Error> {
        if self.inputs_only {
            return Err(Error::NoBatch);
        }
        self.ready_inputs(theta, hvp, mode)
    }

    /// The batch for a forward pass (inputs suffice).
    fn ready_inputs(
        &self,
        theta: &[F],
        hvp: bool,
        mode: Mode,
    ) -> Result<(Batch<'b, F>, usize), Error> {
        let (batch, b) = self.batch.ok_or(Error::NoBatch)?;
        check_len("theta", self.model.param_count(), theta.len())?;
        let sizes = &self.model.sizes;
        if sizes.params != sizes.all_params {
            if self.frozen.len() != sizes.all_params {
                return Err(Error::MissingBuffer("frozen parameters"));
            }
            if hvp {
                return Err(Error::Unsupported(
                    "exact Hessian-vector product of a model with frozen parameters",
                ));
            }
        }
        let need = crate::model::workspace_len(&self.model.sizes, b, hvp);
        if self.ws.as_ref().len() < need {
            return Err(Error::ShapeMismatch {
                what: "workspace",
                expected: need,
                got: self.ws.as_ref().len(),
            });
        }
        self.model.check_batch(b, mode)?;
        Ok((batch, b))
    }

    /// Runs `f` with the pass's memories bound: x and θ, the direction
    /// `v` (None: read from `out`), the output vector, the workspace
    /// (pass area) and the state.
    #[allow(clippy::too_many_arguments)]
    fn with_ops<R>(
        &mut self,
        b: usize,
        hvp: bool,
        x: &[F],
        targets: Targets<'_, F>,
        theta: &[F],
        v: Option<&[F]>,
        out: Option<&mut [F]>,
        f: impl FnOnce(&Ctx<'_>, &mut CpuOps<'_, F, E>) -> R,
    ) -> R {
        let lay = self.model.layout(b, hvp);
        let nstate = self.model.sizes.state;
        let ws = self.ws.as_mut();
        let total = ws.len();
        let (pass_area, rest) = ws.split_at_mut(total - nstate);
        let pass_area = &mut pass_area[..lay.end];
        let mut ops = CpuOps {
            exec: &mut self.exec,
            mem: Bound {
                x,
                theta,
                v,
                out,
                ws: pass_area,
                state: rest,
                targets,
                frozen: self.frozen,
            },
        };
        let ctx = Ctx {
            nodes: self.model.nodes(),
            lay,
        };
        f(&ctx, &mut ops)
    }

    /// Runs the forward pass at θ in `mode` (batch norm with batch or
    /// running statistics; no state update) and returns the outputs
    /// (B × outputs).
    pub fn forward_outputs_mode(&mut self, theta: &[F], mode: Mode) -> Result<&[F], Error> {
        let (batch, b) = self.ready_inputs(theta, false, mode)?;
        self.with_ops(
            b,
            false,
            batch.x,
            batch.targets,
            theta,
            None,
            None,
            |c, o| pass::forward(c, o, mode, false),
        );
        let last = *self.model.last();
        let k = last.out_dims.len();
        let lay = self.model.layout(b, false);
        let ctx = Ctx {
            nodes: self.model.nodes(),
            lay,
        };
        let loc = ctx.val(&last);
        Ok(match loc.mem {
            crate::ops::Mem::X => &batch.x[..b * k],
            _ => &self.ws.as_ref()[loc.off..loc.off + b * k],
        })
    }

    /// Evaluation outputs: the forward pass with batch norm on its
    /// running statistics (PyTorch's `model.eval()`).
    pub fn forward_outputs(&mut self, theta: &[F]) -> Result<&[F], Error> {
        self.forward_outputs_mode(theta, Mode::Eval)
    }

    /// Forward pass, loss and backward pass in training mode, writing
    /// grad ← β·grad + α·∇L when given. Leaves values and deltas in the
    /// workspace for an R-pass; computes the running-statistics update
    /// when `update`.
    #[allow(clippy::too_many_arguments)]
    fn fwd_bwd(
        &mut self,
        theta: &[F],
        grad: Option<(&mut [F], F, F)>,
        batch: Batch<'_, F>,
        b: usize,
        hvp: bool,
        update: bool,
    ) -> F {
        let loss_kind = self.model.loss;
        let (out, ab) = match grad {
            Some((g, a, be)) => (Some(g), Some((a, be))),
            None => (None, None),
        };
        let loss = self.with_ops(b, hvp, batch.x, batch.targets, theta, None, out, |c, o| {
            pass::loss_and_gradient(c, o, loss_kind, update, ab)
        });
        if update && self.model.sizes.batch_norms > 0 {
            self.pending = Some(b);
        }
        if update && self.count && self.correct.is_none() {
            if let Targets::Classes(y) = batch.targets {
                let last = *self.model.last();
                let k = last.out_dims.len();
                let ctx = Ctx {
                    nodes: self.model.nodes(),
                    lay: self.model.layout(b, hvp),
                };
                let loc = ctx.val(&last);
                let out = match loc.mem {
                    crate::ops::Mem::X => &batch.x[..b * k],
                    _ => &self.ws.as_ref()[loc.off..loc.off + b * k],
                };
                self.correct = Some(loss::correct(out, k, y));
            }
        }
        loss
    }

    /// The R-pass after [`Net::fwd_bwd`]: out ← β·out + α·H·v (v read
    /// from `out` itself when `v` is None).
    #[allow(clippy::too_many_arguments)]
    fn rpass(
        &mut self,
        theta: &[F],
        v: Option<&[F]>,
        out: &mut [F],
        alpha: F,
        beta: F,
        b: usize,
        batch: Batch<'_, F>,
    ) {
        let loss_kind = self.model.loss;
        self.with_ops(
            b,
            true,
            batch.x,
            batch.targets,
            theta,
            v,
            Some(out),
            |c, o| pass::hessian_vector(c, o, loss_kind, alpha, beta),
        );
    }
}

impl<F: Real, E: Exec<F>, N, W> SliceSpace<F> for Net<'_, F, E, N, W> {
    type E = E;
    fn exec(&mut self) -> &mut E {
        &mut self.exec
    }
}

impl<'b, F: Real, E: Exec<F>, N: AsRef<[Node]>, W: AsMut<[F]> + AsRef<[F]>> Objective<F>
    for Net<'b, F, E, N, W>
{
    fn param_count(&self) -> usize {
        self.model.param_count()
    }

    fn loss_grad(
        &mut self,
        theta: &[F],
        grad: &mut [F],
        alpha: F,
        beta: F,
        pass: Pass,
    ) -> Result<F, Error> {
        let (batch, b) = self.ready(theta, false, Mode::Train)?;
        check_len("gradient", self.model.param_count(), grad.len())?;
        let update = pass == Pass::Train;
        Ok(self.fwd_bwd(theta, Some((grad, alpha, beta)), batch, b, false, update))
    }

    fn commit(&mut self) {
        let Some(b) = self.pending.take() else {
            return;
        };
        let nstate = self.model.sizes.state;
        let ws = self.ws.as_mut();
        let total = ws.len();
        let (area, state) = ws.split_at_mut(total - nstate);
        for (dst, src, c) in self.model.pending_copies(b) {
            state[dst..dst + c].copy_from_slice(&area[src..src + c]);
        }
        self.tracked += 1;
    }

    /// Costs one gradient plus one R-pass that reuses the forward and
    /// backward values (the input layer needs no R{x} products).
    fn loss_grad_gr(&mut self, theta: &[F], d: &mut [F], gamma: F) -> Result<F, Error> {
        let (batch, b) = self.ready(theta, true, Mode::Train)?;
        check_len("direction", self.model.param_count(), d.len())?;
        let loss = self.fwd_bwd(
            theta,
            Some((&mut *d, F::ONE, F::ZERO)),
            batch,
            b,
            true,
            true,
        );
        self.rpass(theta, None, d, gamma, F::ONE, b, batch);
        Ok(loss)
    }

    /// One gradient pass and one R-pass, as `loss_grad_gr`, with g copied
    /// out between them.
    fn loss_grad_gr_and_grad(
        &mut self,
        theta: &[F],
        d: &mut [F],
        g: &mut [F],
        gamma: F,
    ) -> Result<F, Error> {
        let (batch, b) = self.ready(theta, true, Mode::Train)?;
        check_len("direction", self.model.param_count(), d.len())?;
        check_len("gradient", self.model.param_count(), g.len())?;
        let loss = self.fwd_bwd(
            theta,
            Some((&mut *d, F::ONE, F::ZERO)),
            batch,
            b,
            true,
            true,
        );
        g.copy_from_slice(d);
        self.rpass(theta, None, d, gamma, F::ONE, b, batch);
        Ok(loss)
    }

    fn hvp(&mut self, theta: &[F], v: &[F], out: &mut [F]) -> Result<(), Error> {
        let (batch, b) = self.ready(theta, true, Mode::Train)?;
        check_len("v", self.model.param_count(), v.len())?;
        check_len("hvp output", self.model.param_count(), out.len())?;
        self.fwd_bwd(theta, None, batch, b, true, false);
        self.rpass(theta, Some(v), out, F::ONE, F::ZERO, b, batch);
        Ok(())
    }

    fn loss(&mut self, theta: &[F]) -> Result<F, Error> {
        let (batch, b) = self.ready(theta, false, Mode::Train)?;
        let loss_kind = self.model.loss;
        Ok(self.with_ops(
            b,
            false,
            batch.x,
            batch.targets,
            theta,
            None,
            None,
            |c, o| pass::loss_only(c, o, loss_kind),
        ))
    }
}
