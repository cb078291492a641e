//! [`DeviceMem`]: a model's memory on a device — the batch, the pass
//! workspace, the running statistics, the frozen parameters and the
//! device-side scalars — and the device binding of the kernel's
//! [`Memory`]. The objective is the kernel's own [`fdgr_kernel::Net`] on
//! it ([`DeviceNet`]): the same checks, passes and running-statistics
//! bookkeeping as on a CPU, every gradient, Hessian product and loss the
//! kernel's pass function (`fdgr_kernel::model::pass`) running on
//! [`GpuOps`]. Nothing of a layer, a model or an objective is written
//! here: buffers, uploads and the device's way of returning losses.
//!
//! Host round trips: a loss is read back (one 4-byte read) when the
//! objective returns it, as are `dot` and `all_finite`; in *deferred*
//! mode (the trainer's `step_async`) the losses stay on the device and
//! the step's end is queued ([`Memory::queue_finish`]), so nothing waits
//! (except `dot`, i.e. SAM's ‖g‖).

use fdgr_kernel::model::pass::{self, Ctx, Run};
use fdgr_kernel::model::{Mode, Model, Node, Op, Sizes};
use fdgr_kernel::optim::OptElem;
use fdgr_kernel::{Error, Loss, Memory, Net, Shape, VecSpace};

use crate::device::{DPtr, Device};
use crate::error::GpuError;
use crate::launchers;
use crate::plan::{flags, ScalarPlan};
use crate::prims::{GpuOps, Mems, Region, Scratch};

/// What a device error turns into at the `fdgr_kernel` interface; the
/// [`GpuError`] itself is kept (see [`DeviceMem::take_error`]).
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

/// The objective of a model on device `D`: the kernel's [`Net`] in
/// device memory.
pub type DeviceNet<D> = Net<f32, Vec<Node>, DeviceMem<D>>;

/// The objective of `model` on `dev`, with room for batches of up to
/// `max_batch` samples (and Hessian-vector products when `hvp`). Running
/// statistics start at PyTorch's initial values (mean 0, variance 1).
pub fn device_net<D: Device>(
    dev: D,
    model: Model<Vec<Node>>,
    max_batch: usize,
    hvp: bool,
) -> Result<DeviceNet<D>, GpuError> {
    let mem = DeviceMem::new(dev, &model, max_batch, hvp)?;
    let mut net = Net::with_memory(model, mem);
    match net.reset_state() {
        Ok(()) => Ok(net),
        Err(e) => Err(net.memory_mut().error_for(e)),
    }
}

/// A model's memory on a device (see the module docs).
pub struct DeviceMem<D: Device> {
    pub(crate) dev: D,
    /// Scalars per sample, parameters, running statistics.
    n0: usize,
    params: usize,
    state_len: usize,
    max_batch: usize,
    hvp: bool,
    /// The pass area with R-pass buffers for `max_batch`.
    hvp_len: usize,
    ws: D::Buf,
    state: D::Buf,
    sums: D::Buf,
    conv: Option<D::Buf>,
    pub(crate) xb: D::Buf,
    pub(crate) yb: D::IBuf,
    pub(crate) scal: D::Buf,
    pub(crate) flags: D::IBuf,
    /// Every parameter, for a model that trains some of them.
    frozen: Option<D::Buf>,
    batch: usize,
    deferred: bool,
    losses: usize,
    err: Option<GpuError>,
}

impl<D: Device> DeviceMem<D> {
    /// The buffers of `model` on `dev` for batches of up to `max_batch`
    /// (with the R-pass buffers when `hvp`).
    pub fn new(
        mut dev: D,
        model: &Model<Vec<Node>>,
        max_batch: usize,
        hvp: bool,
    ) -> Result<Self, GpuError> {
        if max_batch == 0 {
            return Err(GpuError::Input("max_batch must be >= 1".into()));
        }
        if !matches!(model.loss, Loss::SoftmaxCe | Loss::Mse) {
            return Err(GpuError::Input("unsupported loss".into()));
        }
        let ws = dev.alloc(model.layout(max_batch, hvp).end.max(1))?;
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
        Ok(DeviceMem {
            dev,
            n0: model.input.len(),
            params: model.param_count(),
            state_len: model.sizes.state,
            max_batch,
            hvp,
            hvp_len: model.layout(max_batch, true).end,
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
        })
    }

    /// Frees the buffers and returns the device.
    pub fn into_device(self) -> D {
        self.dev
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
            if self.dev.len(&self.ws) < self.hvp_len {
                self.ws = self.dev.alloc(self.hvp_len)?;
            }
            self.hvp = true;
        }
        Ok(())
    }

    /// The running statistics (for each batch-norm layer in order, its
    /// running mean then variance). Waits for the device.
    pub fn download_state(&mut self) -> Result<Vec<f32>, GpuError> {
        let mut st = vec![0.0f32; self.state_len];
        if !st.is_empty() {
            let p = self.dev.ptr(&self.state);
            self.dev.download(p, &mut st)?;
        }
        Ok(st)
    }

    /// Writes the running statistics.
    pub fn upload_state(&mut self, st: &[f32]) -> Result<(), GpuError> {
        let n = self.state_len;
        if st.len() != n {
            return Err(mismatch("running statistics", n, st.len()).into());
        }
        if n > 0 {
            let p = self.dev.ptr(&self.state);
            self.dev.upload(p, st)?;
        }
        Ok(())
    }

    /// Uploads a mini-batch of `b` samples (inputs `x`, b × n₀, and class
    /// labels below `classes`) into the batch buffers and makes it
    /// current.
    pub fn upload_batch(
        &mut self,
        classes: usize,
        x: &[f32],
        labels: &[u32],
    ) -> Result<(), GpuError> {
        let n0 = self.n0;
        let b = labels.len();
        if b == 0 || b > self.max_batch || x.len() != b * n0 {
            return Err(GpuError::Input(format!(
                "batch of {} labels and {} inputs (need 1..={} samples of {n0})",
                b,
                x.len(),
                self.max_batch
            )));
        }
        if let Some(&y) = labels.iter().find(|&&y| y as usize >= classes) {
            return Err(Error::LabelOutOfRange {
                label: y,
                classes: classes as u32,
            }
            .into());
        }
        let (xp, yp) = (self.dev.ptr(&self.xb), self.dev.iptr(&self.yb));
        self.dev.upload(xp, x)?;
        self.dev.upload_u32(yp, labels)?;
        self.batch = b;
        Ok(())
    }

    /// Declares that the batch buffers hold `b` samples (filled on the
    /// device, e.g. by a gather).
    pub(crate) fn set_batch_len(&mut self, b: usize) {
        self.batch = b;
    }

    /// Uploads every parameter (`sizes.all_params`) of a model that trains
    /// some of them.
    pub fn upload_frozen(&mut self, sizes: &Sizes, whole: &[f32]) -> Result<(), GpuError> {
        let all = sizes.all_params;
        if sizes.params == all {
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

    /// The device error behind `e` if there is one, else `e`.
    pub fn error_for(&mut self, e: Error) -> GpuError {
        self.err.take().unwrap_or(GpuError::from(e))
    }

    /// Starts a training step. `deferred`: losses are left on the device
    /// and the returned values are placeholders (0), and the step's end is
    /// queued; see the module docs.
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

    /// Where the current call's loss goes: the step's first loss apart.
    fn slot(&self) -> usize {
        if self.losses == 1 {
            ScalarPlan::STEP_LOSS
        } else {
            ScalarPlan::OTHER_LOSS
        }
    }

    /// Runs `f` (a kernel pass function) with the pass's memories bound
    /// on the device: the batch, θ, the direction `v` (None: read from
    /// `out`), the output vector, the workspace and the state; the loss
    /// goes to scalar slot `slot`.
    fn with_ops<T>(
        &mut self,
        c: &Ctx<'_>,
        theta: DPtr,
        v: Option<DPtr>,
        out: Option<DPtr>,
        slot: usize,
        f: impl FnOnce(&Ctx<'_>, &mut GpuOps<'_, D>) -> T,
    ) -> Result<T, GpuError> {
        let p = self.params;
        let d = &self.dev;
        let mem = Mems {
            x: Region::new(d.ptr(&self.xb), c.lay.b * self.n0),
            theta: Region::new(theta, p),
            v: v.map(|v| Region::new(v, p)),
            out: out.map(|o| Region::new(o, p)),
            ws: Region::new(d.ptr(&self.ws), c.lay.end),
            state: Region::new(d.ptr(&self.state), self.state_len),
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
        let mut o = GpuOps::new(&mut self.dev, mem, labels, scratch);
        let r = f(c, &mut o);
        o.finish().map(|()| r)
    }

    /// The running-statistics `copies` (as [`Memory::commit_state`]),
    /// each skipped when the `skip` flags (a queued step's verdict) say
    /// the step was rejected.
    fn copy_state(
        &mut self,
        copies: impl Iterator<Item = (usize, usize, usize)>,
        skip: Option<DPtr>,
    ) -> Result<(), GpuError> {
        let (ws, st) = (self.dev.ptr(&self.ws), self.dev.ptr(&self.state));
        for (dst, src, c) in copies {
            let (dst, src) = (st.at(dst), ws.at(src));
            match skip {
                Some(_) => launchers::copy_unless(&mut self.dev, dst, src, c, skip)?,
                None => self.dev.copy(dst, src, c)?,
            }
        }
        Ok(())
    }
}

fn mismatch(what: &'static str, expected: usize, got: usize) -> Error {
    Error::ShapeMismatch {
        what,
        expected,
        got,
    }
}

/// What the GPU adds to its objective: uploads and downloads that go
/// through the model (a batch, the state, the frozen parameters) and the
/// evaluation forward pass.
pub trait DeviceObjective {
    /// Uploads a mini-batch of `b` samples (inputs `x`, b × n₀, and class
    /// labels) and makes it current.
    fn set_batch(&mut self, x: &[f32], labels: &[u32]) -> Result<(), GpuError>;
    /// Declares that the batch buffers hold `b` samples (filled on the
    /// device, e.g. by a gather).
    fn set_batch_len(&mut self, b: usize);
    /// The running statistics and the batches they tracked. Waits for the
    /// device.
    fn state(&mut self) -> Result<(Vec<f32>, u64), GpuError>;
    /// Restores the running statistics and the count of batches tracked.
    fn set_state(&mut self, st: &[f32], tracked: u64) -> Result<(), GpuError>;
    /// Uploads every parameter of a model that trains some of them
    /// (`fdgr_kernel::model::Train`; `fdgr_kernel::CpuNet::set_frozen` on
    /// the CPU): the layers read the ones they do not train from here, θ
    /// holds the trained ones. Needed before a pass of such a model.
    fn set_frozen(&mut self, whole: &[f32]) -> Result<(), GpuError>;
    /// The forward pass at θ (`theta`: P scalars on the device) in `mode`
    /// (batch norm with batch or running statistics, no state update);
    /// returns where the outputs (B × outputs) are.
    fn forward_outputs(&mut self, theta: DPtr, mode: Mode) -> Result<DPtr, GpuError>;
}

impl<D: Device> DeviceObjective for DeviceNet<D> {
    fn set_batch(&mut self, x: &[f32], labels: &[u32]) -> Result<(), GpuError> {
        self.change_batch(|m, mem| mem.upload_batch(m.outputs(), x, labels))
    }

    fn set_batch_len(&mut self, b: usize) {
        self.change_batch(|_, mem| mem.set_batch_len(b))
    }

    fn state(&mut self) -> Result<(Vec<f32>, u64), GpuError> {
        let st = self.memory_mut().download_state()?;
        Ok((st, self.batches_tracked()))
    }

    fn set_state(&mut self, st: &[f32], tracked: u64) -> Result<(), GpuError> {
        self.memory_mut().upload_state(st)?;
        self.set_batches_tracked(tracked);
        Ok(())
    }

    fn set_frozen(&mut self, whole: &[f32]) -> Result<(), GpuError> {
        let (model, mem) = self.parts_mut();
        mem.upload_frozen(&model.sizes, whole)
    }

    fn forward_outputs(&mut self, theta: DPtr, mode: Mode) -> Result<DPtr, GpuError> {
        let (model, mem) = self.parts_mut();
        let b = mem.batch;
        let c = Ctx {
            nodes: model.nodes(),
            lay: model.layout(b, false),
        };
        let slot = ScalarPlan::OTHER_LOSS;
        mem.with_ops(&c, theta, None, None, slot, |c, o| {
            pass::forward(c, o, mode, false);
            let last = c.nodes[c.nodes.len() - 1];
            o.ptr(c.val(&last), b * last.out_dims.len())
        })?
    }
}

impl<D: Device> VecSpace<f32> for DeviceMem<D> {
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
    /// error (see [`DeviceMem::take_error`]).
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

impl<D: Device> Memory<f32> for DeviceMem<D> {
    type Scalar = DPtr;

    fn batch_len(&self) -> usize {
        self.batch
    }

    fn has_targets(&self) -> bool {
        true
    }

    fn frozen_len(&self) -> usize {
        self.frozen.as_ref().map_or(0, |f| self.dev.len(f))
    }

    fn check_room(&self, sizes: &Sizes, b: usize, hvp: bool) -> Result<(), Error> {
        let need = fdgr_kernel::model::layout(sizes, b, hvp).end;
        let got = self.dev.len(&self.ws);
        if hvp && !self.hvp || got < need {
            return Err(mismatch("workspace", need, got));
        }
        Ok(())
    }

    fn run<R: Run<f32>>(
        &mut self,
        c: &Ctx<'_>,
        loss: Loss,
        theta: &D::Buf,
        v: Option<&D::Buf>,
        out: Option<&mut D::Buf>,
        r: R,
    ) -> Result<Option<DPtr>, Error> {
        let t = self.dev.ptr(theta);
        let v = v.map(|v| self.dev.ptr(v));
        let out = out.map(|o| self.dev.ptr(o));
        let slot = self.slot();
        let res = self.with_ops(c, t, v, out, slot, |c, o| r.run(c, o, loss));
        res.map_err(|e| self.fail(e))
    }

    fn next_loss(&mut self) {
        self.losses += 1;
    }

    /// Reads the loss back (one wait), or a placeholder (0) when the step
    /// is deferred.
    fn loss_value(&mut self, s: DPtr) -> Result<f32, Error> {
        if self.deferred {
            return Ok(0.0);
        }
        let mut l = [0.0f32];
        match self.dev.download(s, &mut l) {
            Ok(()) => Ok(l[0]),
            Err(e) => Err(self.fail(e)),
        }
    }

    fn commit_state(
        &mut self,
        copies: impl Iterator<Item = (usize, usize, usize)>,
    ) -> Result<(), Error> {
        let r = self.copy_state(copies, None);
        r.map_err(|e| self.fail(e))
    }

    fn fill_state(&mut self, at: usize, len: usize, v: f32) -> Result<(), Error> {
        if at + len > self.state_len {
            return Err(mismatch("running statistics", self.state_len, at + len));
        }
        let p = self.dev.ptr(&self.state).at(at);
        let r = self.dev.upload(p, &vec![v; len]);
        r.map_err(|e| self.fail(e))
    }

    fn queues_steps(&self) -> bool {
        self.deferred
    }

    /// On the device without waiting: the finiteness check of the step's
    /// loss and of `d` sets a flag that makes the update, the
    /// running-statistics commit and every later queued step skip, and
    /// `commit_step` keeps the count (the trainer reads the outcome when
    /// it finishes).
    fn queue_finish(
        &mut self,
        theta: &mut D::Buf,
        d: &mut D::Buf,
        s0: Option<&mut D::Buf>,
        s1: Option<&mut D::Buf>,
        h: &OptElem<f32>,
        step: u64,
        copies: Option<impl Iterator<Item = (usize, usize, usize)>>,
    ) -> Result<(), Error> {
        let p = self.params;
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
            .and_then(|()| match copies {
                Some(c) => self.copy_state(c, Some(f)),
                None => Ok(()),
            })
            .and_then(|()| launchers::commit_step(&mut self.dev, f, step));
        r.map_err(|e| self.fail(e))
    }
}
