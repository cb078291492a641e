//! [`DeviceNet`]: the objective of any planned model (MLPs, LeNet,
//! ResNets, wide ResNets) on a device. `fdgr_kernel::VecSpace<f32>` and
//! `fdgr_kernel::Objective<f32>` with device buffers as vectors, so the
//! kernel's `step` / `direction` run unchanged; every gradient, Hessian
//! product and loss is the kernel's own pass function
//! (`fdgr_kernel::model::pass`) running on [`GpuOps`], the device
//! binding of the kernel's primitives. Nothing of a layer or a model is
//! written here: this file holds buffers and the bookkeeping of
//! `fdgr_kernel::Net` (the pending / commit rule of the batch-norm running
//! statistics, which only the step's unperturbed gradient updates).
//!
//! Host round trips: `loss_grad`, `loss_grad_gr` and `loss` return L(θ)
//! as an `f32`, so they wait for the device (one 4-byte read), as do
//! `dot` and `all_finite`; in *deferred* mode (the trainer's
//! `step_async`) the losses stay on the device and nothing waits (except
//! `dot`, i.e. SAM's ‖g‖).

use fdgr_kernel::model::pass::{self, Ctx};
use fdgr_kernel::model::{Mode, Model, Node, Op};
use fdgr_kernel::optim::OptElem;
use fdgr_kernel::{Error, Objective, Pass, Shape, VecSpace};

use crate::device::{DPtr, Device};
use crate::error::GpuError;
use crate::launchers;
use crate::plan::{flags, ScalarPlan};
use crate::prims::{GpuOps, Mems, Region, Scratch};

/// What a device error turns into at the `fdgr_kernel` interface; the
/// [`GpuError`] itself is kept (see [`DeviceNet::take_error`]).
pub const DEVICE_ERROR: Error = Error::Unsupported("device error (see GpuError)");

/// The largest im2col + GEMM scratch (scalars) a convolution gets: 64 Mi
/// scalars (256 MiB); larger batches run in chunks of samples.
pub const CONV_SCRATCH_CAP: usize = 1 << 26;

/// The planned model of an MLP shape (its layer list, as the kernel plans
/// it).
pub fn mlp_model(shape: &Shape) -> Result<Model<Vec<Node>>, Error> {
    let (ls, k) = fdgr_kernel::mlp::layers(shape);
    let layers = &ls[..k];
    let mut nodes = vec![Node::EMPTY; k];
    let input = fdgr_kernel::Dims::flat(shape.inputs());
    let sizes = fdgr_kernel::model::plan(layers, input, &mut nodes)?;
    Ok(Model::from_plan(nodes, input, shape.loss, sizes))
}

/// The objective of a model on the current mini-batch, on device `D`.
pub struct DeviceNet<D: Device> {
    pub(crate) dev: D,
    model: Model<Vec<Node>>,
    max_batch: usize,
    hvp: bool,
    ws: D::Buf,
    state: D::Buf,
    sums: D::Buf,
    conv: Option<D::Buf>,
    pub(crate) xb: D::Buf,
    pub(crate) yb: D::IBuf,
    pub(crate) scal: D::Buf,
    pub(crate) flags: D::IBuf,
    /// Every parameter, for a model that trains some of them
    /// ([`DeviceNet::set_frozen`]).
    frozen: Option<D::Buf>,
    batch: usize,
    deferred: bool,
    losses: usize,
    err: Option<GpuError>,
    /// Batch size of the unperturbed gradient whose running-statistics
    /// update waits for [`Objective::commit`].
    pending: Option<usize>,
    tracked: u64,
}

fn mismatch(what: &'static str, expected: usize, got: usize) -> Error {
    Error::ShapeMismatch {
        what,
        expected,
        got,
    }
}

/// The pass area of `model`'s workspace for a batch of `b` (the state
/// lives in its own buffer on the device).
fn pass_len(model: &Model<Vec<Node>>, b: usize, hvp: bool) -> usize {
    model.layout(b, hvp).end
}

impl<D: Device> DeviceNet<D> {
    /// An objective for `model` on `dev`, with room for batches of up to
    /// `max_batch` samples (and Hessian-vector products when `hvp`).
    /// Running statistics start at PyTorch's initial values (mean 0,
    /// variance 1).
    pub fn new(
        mut dev: D,
        model: Model<Vec<Node>>,
        max_batch: usize,
        hvp: bool,
    ) -> Result<Self, GpuError> {
        if max_batch == 0 {
            return Err(GpuError::Input("max_batch must be >= 1".into()));
        }
        if !matches!(
            model.loss,
            fdgr_kernel::Loss::SoftmaxCe | fdgr_kernel::Loss::Mse
        ) {
            return Err(GpuError::Input("unsupported loss".into()));
        }
        let ws = dev.alloc(pass_len(&model, max_batch, hvp).max(1))?;
        let state = dev.alloc(model.sizes.state.max(1))?;
        let widest = model
            .nodes()
            .iter()
            .filter(|n| matches!(n.op, Op::BatchNorm))
            .map(|n| n.in_dims.c)
            .max()
            .unwrap_or(0);
        let sums = dev.alloc((5 * widest).max(1))?;
        let conv = if dev.native_conv() {
            None
        } else {
            let need = model
                .nodes()
                .iter()
                .filter(|n| matches!(n.op, Op::Conv2d { .. }))
                .map(|n| {
                    let (g, _) = fdgr_kernel::model::conv::geom(n, max_batch);
                    crate::conv::scratch_len(&g, CONV_SCRATCH_CAP)
                })
                .max();
            match need {
                Some(n) => Some(dev.alloc(n)?),
                None => None,
            }
        };
        let xb = dev.alloc(max_batch * model.input.len())?;
        let yb = dev.alloc_u32(max_batch)?;
        let scal = dev.alloc(ScalarPlan { max_batch }.len())?;
        let flags = dev.alloc_u32(flags::LEN)?;
        let mut net = DeviceNet {
            dev,
            model,
            max_batch,
            hvp,
            ws,
            state,
            sums,
            conv,
            xb,
            yb,
            scal,
            flags,
            frozen: None,
            batch: 0,
            deferred: false,
            losses: 0,
            err: None,
            pending: None,
            tracked: 0,
        };
        net.reset_state()?;
        Ok(net)
    }

    /// Frees the buffers and returns the device.
    pub fn into_device(self) -> D {
        self.dev
    }

    /// The model.
    pub fn model(&self) -> &Model<Vec<Node>> {
        &self.model
    }

    /// Largest batch.
    pub fn max_batch(&self) -> usize {
        self.max_batch
    }

    /// The device.
    pub fn device(&mut self) -> &mut D {
        &mut self.dev
    }

    /// Makes room for Hessian-vector products (`db`): grows the workspace
    /// to the kernel's layout with R-values and R-deltas.
    pub fn ensure_hvp(&mut self) -> Result<(), GpuError> {
        if !self.hvp {
            let need = pass_len(&self.model, self.max_batch, true);
            if self.dev.len(&self.ws) < need {
                self.ws = self.dev.alloc(need)?;
            }
            self.hvp = true;
        }
        Ok(())
    }

    /// Resets the running statistics to mean 0, variance 1 and the count
    /// of batches tracked to 0.
    pub fn reset_state(&mut self) -> Result<(), GpuError> {
        let mut st = vec![0.0f32; self.model.sizes.state];
        for n in self.model.nodes() {
            if let Op::BatchNorm = n.op {
                let c = n.in_dims.c;
                st[n.state_off + c..n.state_off + 2 * c].fill(1.0);
            }
        }
        self.set_state(&st, 0)
    }

    /// The running statistics (for each batch-norm layer in order, its
    /// running mean then variance) and the batches they tracked. Waits
    /// for the device.
    pub fn state(&mut self) -> Result<(Vec<f32>, u64), GpuError> {
        let mut st = vec![0.0f32; self.model.sizes.state];
        if !st.is_empty() {
            let p = self.dev.ptr(&self.state);
            self.dev.download(p, &mut st)?;
        }
        Ok((st, self.tracked))
    }

    /// Restores the running statistics and the count of batches tracked.
    pub fn set_state(&mut self, st: &[f32], tracked: u64) -> Result<(), GpuError> {
        let n = self.model.sizes.state;
        if st.len() != n {
            return Err(mismatch("running statistics", n, st.len()).into());
        }
        if n > 0 {
            let p = self.dev.ptr(&self.state);
            self.dev.upload(p, st)?;
        }
        self.tracked = tracked;
        self.pending = None;
        Ok(())
    }

    /// Training batches the running statistics have been updated from.
    pub fn batches_tracked(&self) -> u64 {
        self.tracked
    }

    /// Uploads a mini-batch of `b` samples (inputs `x`, b × n₀, and class
    /// labels) into the batch buffers and makes it current.
    pub fn set_batch(&mut self, x: &[f32], labels: &[u32]) -> Result<(), GpuError> {
        let (n0, k) = (self.model.input.len(), self.model.outputs());
        let b = labels.len();
        if b == 0 || b > self.max_batch || x.len() != b * n0 {
            return Err(GpuError::Input(format!(
                "batch of {} labels and {} inputs (need 1..={} samples of {n0})",
                b,
                x.len(),
                self.max_batch
            )));
        }
        if let Some(&y) = labels.iter().find(|&&y| y as usize >= k) {
            return Err(Error::LabelOutOfRange {
                label: y,
                classes: k as u32,
            }
            .into());
        }
        let (xp, yp) = (self.dev.ptr(&self.xb), self.dev.iptr(&self.yb));
        self.dev.upload(xp, x)?;
        self.dev.upload_u32(yp, labels)?;
        self.set_batch_len(b);
        Ok(())
    }

    /// Declares that the batch buffers hold `b` samples (filled on the
    /// device, e.g. by a gather).
    pub(crate) fn set_batch_len(&mut self, b: usize) {
        self.batch = b;
        self.pending = None;
    }

    /// Samples in the current batch (0 if none).
    pub fn batch_len(&self) -> usize {
        self.batch
    }

    /// Uploads every parameter of a model that trains some of them
    /// (`fdgr_kernel::model::Train`; `fdgr_kernel::Net::set_frozen` on the
    /// CPU): the layers read the ones they do not train from here, θ holds
    /// the trained ones. Needed before a pass of such a model.
    pub fn set_frozen(&mut self, whole: &[f32]) -> Result<(), GpuError> {
        let all = self.model.sizes.all_params;
        if self.model.sizes.params == all {
            return Err(GpuError::Input(
                "frozen parameters given for a model that trains every parameter".into(),
            ));
        }
        if whole.len() != all {
            return Err(mismatch("frozen parameters", all, whole.len()).into());
        }
        if self.frozen.is_none() {
            self.frozen = Some(self.dev.alloc(all.max(1))?);
        }
        if let Some(f) = &self.frozen {
            let p = self.dev.ptr(f);
            self.dev.upload(p, whole)?;
        }
        Ok(())
    }

    /// The first device error since the last call, if any. Device errors
    /// surface at the kernel interface as [`DEVICE_ERROR`] (or a NaN from
    /// `dot`, `false` from `all_finite`); this is the real error.
    pub fn take_error(&mut self) -> Option<GpuError> {
        self.err.take()
    }

    /// Starts a training step. `deferred`: losses are left on the device
    /// and the returned values are placeholders (0), see the module docs.
    pub(crate) fn begin_step(&mut self, deferred: bool) {
        self.deferred = deferred;
        self.losses = 0;
    }

    /// Ends a deferred step.
    pub(crate) fn end_step(&mut self) {
        self.deferred = false;
    }

    pub(crate) fn scal_ptr(&self, slot: usize) -> DPtr {
        self.dev.ptr(&self.scal).at(slot)
    }

    pub(crate) fn flags_ptr(&self) -> DPtr {
        self.dev.iptr(&self.flags)
    }

    fn fail(&mut self, e: GpuError) -> Error {
        if self.err.is_none() {
            self.err = Some(e);
        }
        DEVICE_ERROR
    }

    fn note(&mut self, r: Result<(), GpuError>) {
        if let Err(e) = r {
            self.fail(e);
        }
    }

    /// Checks θ and the batch as `fdgr_kernel::Net` does; returns the
    /// batch size.
    fn ready(&self, theta: &D::Buf, hvp: bool, mode: Mode) -> Result<usize, Error> {
        let b = self.batch;
        if b == 0 {
            return Err(Error::NoBatch);
        }
        let p = self.model.param_count();
        if self.dev.len(theta) != p {
            return Err(mismatch("theta", p, self.dev.len(theta)));
        }
        let sizes = &self.model.sizes;
        if sizes.params != sizes.all_params {
            match &self.frozen {
                Some(f) if self.dev.len(f) == sizes.all_params => {}
                _ => return Err(Error::MissingBuffer("frozen parameters")),
            }
            if hvp {
                return Err(Error::Unsupported(
                    "exact Hessian-vector product of a model with frozen parameters",
                ));
            }
        }
        let need = pass_len(&self.model, b, hvp);
        if hvp && !self.hvp || self.dev.len(&self.ws) < need {
            return Err(mismatch("workspace", need, self.dev.len(&self.ws)));
        }
        self.model.check_batch(b, mode)?;
        Ok(b)
    }

    fn check_vec(&self, what: &'static str, v: &D::Buf) -> Result<(), Error> {
        let p = self.model.param_count();
        if self.dev.len(v) == p {
            Ok(())
        } else {
            Err(mismatch(what, p, self.dev.len(v)))
        }
    }

    fn next_loss_slot(&mut self) -> usize {
        self.losses += 1;
        if self.losses == 1 {
            ScalarPlan::STEP_LOSS
        } else {
            ScalarPlan::OTHER_LOSS
        }
    }

    /// The loss in `slot`: read back (one wait), or a placeholder when
    /// deferred.
    fn read_loss(&mut self, slot: usize) -> Result<f32, Error> {
        if self.deferred {
            return Ok(0.0);
        }
        let mut l = [0.0f32];
        let p = self.scal_ptr(slot);
        match self.dev.download(p, &mut l) {
            Ok(()) => Ok(l[0]),
            Err(e) => Err(self.fail(e)),
        }
    }

    /// Runs `f` (a kernel pass function) with the pass's memories bound
    /// on the device: the batch, θ, the direction `v` (None: read from
    /// `out`), the output vector, the workspace and the state; the loss
    /// goes to scalar slot `slot`.
    #[allow(clippy::too_many_arguments)]
    fn with_ops<T>(
        &mut self,
        b: usize,
        hvp: bool,
        theta: DPtr,
        v: Option<DPtr>,
        out: Option<DPtr>,
        slot: usize,
        f: impl FnOnce(&Ctx<'_>, &mut GpuOps<'_, D>) -> T,
    ) -> Result<T, GpuError> {
        let lay = self.model.layout(b, hvp);
        let p = self.model.param_count();
        let d = &self.dev;
        let mem = Mems {
            x: Region::new(d.ptr(&self.xb), b * self.model.input.len()),
            theta: Region::new(theta, p),
            v: v.map(|v| Region::new(v, p)),
            out: out.map(|o| Region::new(o, p)),
            ws: Region::new(d.ptr(&self.ws), lay.end),
            state: Region::new(d.ptr(&self.state), self.model.sizes.state),
            frozen: self
                .frozen
                .as_ref()
                .map(|f| Region::new(d.ptr(f), d.len(f))),
        };
        let scratch = Scratch {
            sums: Region::new(d.ptr(&self.sums), d.len(&self.sums)),
            conv: self.conv.as_ref().map(|c| Region::new(d.ptr(c), d.len(c))),
            row_loss: self.scal_ptr(ScalarPlan::ROW_LOSS),
            loss: self.scal_ptr(slot),
        };
        let labels = d.iptr(&self.yb);
        let ctx = Ctx {
            nodes: self.model.nodes(),
            lay,
        };
        let mut o = GpuOps::new(&mut self.dev, mem, labels, scratch);
        let r = f(&ctx, &mut o);
        o.finish().map(|()| r)
    }

    /// The forward pass at θ in `mode` (batch norm with batch or running
    /// statistics, no state update); returns where the outputs (B ×
    /// outputs) are.
    pub(crate) fn forward_outputs(&mut self, theta: DPtr, mode: Mode) -> Result<DPtr, GpuError> {
        let b = self.batch;
        let slot = ScalarPlan::OTHER_LOSS;
        self.with_ops(b, false, theta, None, None, slot, |c, o| {
            pass::forward(c, o, mode, false);
            let last = c.nodes[c.nodes.len() - 1];
            o.ptr(c.val(&last), b * last.out_dims.len())
        })?
    }

    /// The running-statistics update of the last unperturbed gradient:
    /// copies each batch-norm layer's pending statistics into the state,
    /// unless the `skip` flags (a deferred step's verdict) say the step
    /// was rejected.
    pub(crate) fn commit_on_device(&mut self, skip: Option<DPtr>) -> Result<bool, GpuError> {
        let Some(b) = self.pending.take() else {
            return Ok(false);
        };
        let (ws, st) = (self.dev.ptr(&self.ws), self.dev.ptr(&self.state));
        for (dst, src, c) in self.model.pending_copies(b) {
            let (dst, src) = (st.at(dst), ws.at(src));
            match skip {
                Some(_) => launchers::copy_unless(&mut self.dev, dst, src, c, skip)?,
                None => self.dev.copy(dst, src, c)?,
            }
        }
        self.tracked += 1;
        Ok(true)
    }

    fn fwd_bwd(
        &mut self,
        theta: DPtr,
        grad: Option<(DPtr, f32, f32)>,
        b: usize,
        hvp: bool,
        update: bool,
        slot: usize,
    ) -> Result<(), GpuError> {
        let loss = self.model.loss;
        let (out, ab) = match grad {
            Some((g, a, be)) => (Some(g), Some((a, be))),
            None => (None, None),
        };
        self.with_ops(b, hvp, theta, None, out, slot, |c, o| {
            pass::loss_and_gradient(c, o, loss, update, ab);
        })?;
        if update && self.model.sizes.batch_norms > 0 {
            self.pending = Some(b);
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn rpass(
        &mut self,
        theta: DPtr,
        v: Option<DPtr>,
        out: DPtr,
        alpha: f32,
        beta: f32,
        b: usize,
        slot: usize,
    ) -> Result<(), GpuError> {
        let loss = self.model.loss;
        self.with_ops(b, true, theta, v, Some(out), slot, |c, o| {
            pass::hessian_vector(c, o, loss, alpha, beta)
        })
    }
}

impl<D: Device> VecSpace<f32> for DeviceNet<D> {
    type Vec = D::Buf;

    fn len(&self, x: &D::Buf) -> usize {
        self.dev.len(x)
    }

    fn copy(&mut self, dst: &mut D::Buf, src: &D::Buf) {
        let n = self.dev.len(dst).min(self.dev.len(src));
        let (d, s) = (self.dev.ptr(dst), self.dev.ptr(src));
        let r = self.dev.copy(d, s, n);
        self.note(r);
    }

    fn axpy(&mut self, y: &mut D::Buf, a: f32, x: &D::Buf) {
        let n = self.dev.len(y).min(self.dev.len(x));
        let (yp, xp) = (self.dev.ptr(y), self.dev.ptr(x));
        let r = launchers::axpy(&mut self.dev, yp, a, xp, n);
        self.note(r);
    }

    fn waxpy(&mut self, w: &mut D::Buf, x: &D::Buf, a: f32, y: &D::Buf) {
        let n = self.dev.len(w).min(self.dev.len(x)).min(self.dev.len(y));
        let (wp, xp, yp) = (self.dev.ptr(w), self.dev.ptr(x), self.dev.ptr(y));
        let r = launchers::waxpy(&mut self.dev, wp, xp, a, yp, n);
        self.note(r);
    }

    fn scale(&mut self, x: &mut D::Buf, a: f32) {
        let n = self.dev.len(x);
        let xp = self.dev.ptr(x);
        let r = launchers::scale(&mut self.dev, xp, a, n);
        self.note(r);
    }

    /// Waits for the device (the result is read back). NaN on a device
    /// error (see [`DeviceNet::take_error`]).
    fn dot(&mut self, x: &D::Buf, y: &D::Buf) -> f32 {
        let n = self.dev.len(x).min(self.dev.len(y));
        let (xp, yp) = (self.dev.ptr(x), self.dev.ptr(y));
        let partials = self.scal_ptr(ScalarPlan::PARTIALS);
        let out = self.scal_ptr(ScalarPlan::DOT);
        let mut v = [0.0f32];
        let r = launchers::dot(&mut self.dev, xp, yp, n, partials, out)
            .and_then(|()| self.dev.download(out, &mut v));
        match r {
            Ok(()) => v[0],
            Err(e) => {
                self.fail(e);
                f32::NAN
            }
        }
    }

    /// Waits for the device. `false` on a device error.
    fn all_finite(&mut self, x: &D::Buf) -> bool {
        let n = self.dev.len(x);
        let xp = self.dev.ptr(x);
        let flag = self.flags_ptr().at(flags::CHECK);
        let mut f = [1u32];
        let r = self
            .dev
            .fill_u32(flag, 0, 1)
            .and_then(|()| launchers::nonfinite(&mut self.dev, xp, n, None, flag))
            .and_then(|()| self.dev.download_u32(flag, &mut f));
        match r {
            Ok(()) => f[0] == 0,
            Err(e) => {
                self.fail(e);
                false
            }
        }
    }

    fn opt_update(
        &mut self,
        theta: &mut D::Buf,
        d: &D::Buf,
        s0: Option<&mut D::Buf>,
        s1: Option<&mut D::Buf>,
        h: &OptElem<f32>,
    ) {
        let n = self.dev.len(theta).min(self.dev.len(d));
        let (tp, dp) = (self.dev.ptr(theta), self.dev.ptr(d));
        let p0 = s0.map(|v| self.dev.ptr(v));
        let p1 = s1.map(|v| self.dev.ptr(v));
        let r = launchers::opt_update(&mut self.dev, tp, dp, p0, p1, n, h, None);
        self.note(r);
    }
}

impl<D: Device> Objective<f32> for DeviceNet<D> {
    fn param_count(&self) -> usize {
        self.model.param_count()
    }

    fn loss_grad(
        &mut self,
        theta: &D::Buf,
        grad: &mut D::Buf,
        alpha: f32,
        beta: f32,
        pass: Pass,
    ) -> Result<f32, Error> {
        let b = self.ready(theta, false, Mode::Train)?;
        self.check_vec("gradient", grad)?;
        let slot = self.next_loss_slot();
        let (t, g) = (self.dev.ptr(theta), self.dev.ptr(grad));
        let update = pass == Pass::Train;
        let r = self.fwd_bwd(t, Some((g, alpha, beta)), b, false, update, slot);
        r.map_err(|e| self.fail(e))?;
        self.read_loss(slot)
    }

    fn commit(&mut self) {
        let r = self.commit_on_device(None).map(drop);
        self.note(r);
    }

    /// One gradient, then the in-place R-pass d ← d + γ·H·d.
    fn loss_grad_gr(&mut self, theta: &D::Buf, d: &mut D::Buf, gamma: f32) -> Result<f32, Error> {
        let b = self.ready(theta, true, Mode::Train)?;
        self.check_vec("direction", d)?;
        let slot = self.next_loss_slot();
        let (t, dp) = (self.dev.ptr(theta), self.dev.ptr(d));
        let r = self
            .fwd_bwd(t, Some((dp, 1.0, 0.0)), b, true, true, slot)
            .and_then(|()| self.rpass(t, None, dp, gamma, 1.0, b, slot));
        r.map_err(|e| self.fail(e))?;
        self.read_loss(slot)
    }

    fn hvp(&mut self, theta: &D::Buf, v: &D::Buf, out: &mut D::Buf) -> Result<(), Error> {
        let b = self.ready(theta, true, Mode::Train)?;
        self.check_vec("v", v)?;
        self.check_vec("hvp output", out)?;
        let slot = self.next_loss_slot();
        let (t, vp, op) = (self.dev.ptr(theta), self.dev.ptr(v), self.dev.ptr(out));
        let r = self
            .fwd_bwd(t, None, b, true, false, slot)
            .and_then(|()| self.rpass(t, Some(vp), op, 1.0, 0.0, b, slot));
        r.map_err(|e| self.fail(e))
    }

    /// Synchronous steps: the kernel's check (one wait for the flag) and
    /// update. Queued steps ([`crate::Trainer::step_async`]): on the device
    /// without waiting — the finiteness check of the step's loss and of
    /// `d` sets a flag that makes the update, the running-statistics commit
    /// and every later queued step skip, and `commit_step` keeps the count
    /// (the trainer reads the outcome when it finishes).
    fn finish_step(
        &mut self,
        theta: &mut D::Buf,
        d: &mut D::Buf,
        s0: Option<&mut D::Buf>,
        s1: Option<&mut D::Buf>,
        loss: f32,
        h: &OptElem<f32>,
        step: u64,
    ) -> Result<(), Error> {
        if !self.deferred {
            return fdgr_kernel::objective::finish_step(self, theta, d, s0, s1, loss, h);
        }
        let p = self.model.param_count();
        let f = self.flags_ptr();
        let lp = self.scal_ptr(ScalarPlan::STEP_LOSS);
        let (tp, dp) = (self.dev.ptr(theta), self.dev.ptr(d));
        let p0 = s0.map(|v| self.dev.ptr(v));
        let p1 = s1.map(|v| self.dev.ptr(v));
        let dev = &mut self.dev;
        let r = launchers::nonfinite(dev, dp, p, Some(lp), f.at(flags::BAD))
            .and_then(|()| launchers::opt_update(dev, tp, dp, p0, p1, p, h, Some(f)))
            // the running statistics of an accepted step (before
            // commit_step clears the verdict)
            .and_then(|()| self.commit_on_device(Some(f)).map(drop))
            .and_then(|()| launchers::commit_step(&mut self.dev, f, step));
        r.map_err(|e| self.fail(e))
    }

    fn loss(&mut self, theta: &D::Buf) -> Result<f32, Error> {
        let b = self.ready(theta, false, Mode::Train)?;
        let slot = self.next_loss_slot();
        let t = self.dev.ptr(theta);
        let loss = self.model.loss;
        let r = self.with_ops(b, false, t, None, None, slot, |c, o| {
            pass::loss_only(c, o, loss);
        });
        r.map_err(|e| self.fail(e))?;
        self.read_loss(slot)
    }
}
