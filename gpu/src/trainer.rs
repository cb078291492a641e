//! Training on a device: parameters, optimizer state and the data set
//! resident in device memory, steps run by the kernel's own `step` (or its
//! `direction` plus an on-device update, for steps without a host round
//! trip).

use fdgr_kernel::method::Buffers;
use fdgr_kernel::model::{Mode, Model, Node};
use fdgr_kernel::{Error, Loss, Method, Objective, Optim, SgdState, StepOptions};

use crate::device::Device;
use crate::error::GpuError;
use crate::launchers;
use crate::memory::{device_net, DeviceNet, DeviceObjective};
use crate::plan::{flags, ScalarPlan};

struct Resident<D: Device> {
    x: D::Buf,
    y: D::IBuf,
    n: usize,
}

/// Crop + flip augmentation on the device (the CIFAR recipe of the host's
/// `augment` module): images of `dims` (C, H, W) padded by `pad`, padding
/// value `fill` per channel. The crops themselves are drawn on the host
/// (three draws per sample, as the CPU backend draws them) and handed to
/// each step ([`Trainer::step_async_aug`]).
#[derive(Clone, Debug, PartialEq)]
pub struct Augment {
    /// The image shape (C, H, W).
    pub dims: (usize, usize, usize),
    /// Padding on each side.
    pub pad: usize,
    /// Padding value per channel.
    pub fill: Vec<f32>,
}

/// One sample's crop: the window's top and left in the padded image
/// (0..=2·pad) and whether it is mirrored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CropDraw {
    /// Top row of the window in the padded image.
    pub top: u32,
    /// Left column.
    pub left: u32,
    /// Mirrored left-right.
    pub flip: bool,
}

impl CropDraw {
    /// The packed form data.cu's gather_crop reads.
    pub fn packed(self) -> u32 {
        self.top | self.left << 10 | u32::from(self.flip) << 20
    }
}

struct AugState<D: Device> {
    spec: Augment,
    crops: D::IBuf,
    fill: D::Buf,
}

/// The device-generic trainer behind [`crate::GpuTrainer`].
pub struct Trainer<D: Device> {
    pub(crate) obj: DeviceNet<D>,
    pub(crate) theta: D::Buf,
    pub(crate) dir: D::Buf,
    /// The optimizer's state vectors (SGD: momentum; Adam: m, v).
    pub(crate) opt_state: [Option<D::Buf>; 2],
    pub(crate) point: Option<D::Buf>,
    pub(crate) point2: Option<D::Buf>,
    /// Amortized GR's stored correction ([`Trainer::set_amortized`]).
    pub(crate) correction: Option<D::Buf>,
    idx: D::IBuf,
    data: Option<Resident<D>>,
    aug: Option<AugState<D>>,
    pub(crate) pending: bool,
    /// The steps queued since the last [`Trainer::finish`]: the step count
    /// and the count of batches tracked after each, and the latter before
    /// the first, so a rejected queue rolls the count back to the steps
    /// really applied.
    queued: Queued,
}

/// What [`Trainer::finish`] rolls back to after a rejected queued step.
#[derive(Default)]
struct Queued {
    /// Batches tracked before the first queued step.
    base: u64,
    /// (`SgdState::steps`, batches tracked) after each queued step.
    after: Vec<(u64, u64)>,
}

impl Queued {
    /// The batches tracked once the first `applied` steps counted are the
    /// ones applied.
    fn tracked_at(&self, applied: u64) -> u64 {
        self.after
            .iter()
            .rev()
            .find(|(steps, _)| *steps <= applied)
            .map_or(self.base, |(_, t)| *t)
    }
}

fn input(msg: String) -> GpuError {
    GpuError::Input(msg)
}

fn check_model(model: &Model<Vec<Node>>, max_batch: usize) -> Result<(), GpuError> {
    let lim = i32::MAX as usize;
    let big = model
        .nodes()
        .iter()
        .any(|n| n.in_dims.len() > lim || n.out_dims.len() > lim);
    if max_batch == 0 || max_batch > lim || big || model.param_count() > u32::MAX as usize {
        return Err(input(format!(
            "model with batch {max_batch}: sizes must be in 1..=2^31-1"
        )));
    }
    Ok(())
}

fn check_labels(labels: &[u32], k: usize) -> Result<(), GpuError> {
    match labels.iter().find(|&&y| y as usize >= k) {
        Some(&y) => Err(Error::LabelOutOfRange {
            label: y,
            classes: k as u32,
        }
        .into()),
        None => Ok(()),
    }
}

impl<D: Device> Trainer<D> {
    /// A trainer for `model` on `dev`, with buffers for `method` and `opt`
    /// and batches of up to `max_batch`; θ starts at 0 (see
    /// [`Trainer::set_params`]).
    pub fn new(
        mut dev: D,
        model: Model<Vec<Node>>,
        max_batch: usize,
        method: &Method<f32>,
        opt: &(impl Optim<f32> + ?Sized),
    ) -> Result<Self, GpuError> {
        check_model(&model, max_batch)?;
        method.validate()?;
        opt.validate()?;
        let p = model.param_count();
        let theta = dev.alloc(p)?;
        let dir = dev.alloc(p)?;
        let idx = dev.alloc_u32(max_batch)?;
        let obj = device_net(dev, model, max_batch, method.needs_hvp())?;
        let mut t = Trainer {
            obj,
            theta,
            dir,
            opt_state: [None, None],
            point: None,
            point2: None,
            correction: None,
            idx,
            data: None,
            aug: None,
            pending: false,
            queued: Queued::default(),
        };
        t.ensure(method, opt)?;
        Ok(t)
    }

    /// Allocates what `method` and `opt` need and is missing.
    pub(crate) fn ensure(
        &mut self,
        method: &Method<f32>,
        opt: &(impl Optim<f32> + ?Sized),
    ) -> Result<(), GpuError> {
        let p = self.obj.param_count();
        let n = method.scratch_vectors();
        if n >= 1 && self.point.is_none() {
            self.point = Some(self.dev().alloc(p)?);
        }
        if n >= 2 && self.point2.is_none() {
            self.point2 = Some(self.dev().alloc(p)?);
        }
        for i in 0..opt.state_vectors().min(2) {
            if self.opt_state[i].is_none() {
                self.opt_state[i] = Some(self.dev().alloc(p)?);
            }
        }
        if method.needs_hvp() {
            self.obj.memory_mut().ensure_hvp()?;
        }
        Ok(())
    }

    /// Frees the buffers and returns the device (to reuse its compiled
    /// kernels).
    pub fn into_device(self) -> D {
        self.obj.into_memory().into_device()
    }

    /// Parameters P.
    pub fn param_count(&self) -> usize {
        self.obj.param_count()
    }

    /// The objective (for running `fdgr_kernel` functions on it directly).
    pub fn objective(&mut self) -> &mut DeviceNet<D> {
        &mut self.obj
    }

    /// The device.
    pub(crate) fn dev(&mut self) -> &mut D {
        &mut self.obj.memory_mut().dev
    }

    /// The batch-norm running statistics and the batches they tracked
    /// (waits for queued steps).
    pub fn state(&mut self) -> Result<(Vec<f32>, u64), GpuError> {
        self.obj.state()
    }

    /// Restores the running statistics.
    pub fn set_state(&mut self, st: &[f32], tracked: u64) -> Result<(), GpuError> {
        self.obj.set_state(st, tracked)
    }

    /// Turns crop + flip augmentation on the device on (`Some`) or off.
    pub fn set_augment(&mut self, aug: Option<Augment>) -> Result<(), GpuError> {
        self.aug = None;
        let Some(spec) = aug else {
            return Ok(());
        };
        let (c, h, w) = spec.dims;
        if c * h * w != self.obj.model().input.len() || spec.fill.len() != c || spec.pad >= 512 {
            return Err(input(format!(
                "augmentation of {c}x{h}x{w} images (padding {}, {} fill values) for inputs of {}",
                spec.pad,
                spec.fill.len(),
                self.obj.model().input.len()
            )));
        }
        let m = self.obj.memory_mut();
        let crops = m.dev.alloc_u32(m.max_batch())?;
        let fill = m.dev.alloc(c)?;
        let fp = m.dev.ptr(&fill);
        m.dev.upload(fp, &spec.fill)?;
        self.aug = Some(AugState { spec, crops, fill });
        Ok(())
    }

    /// Uploads the training set (S samples: `x` S × n₀, class labels).
    pub fn set_data(&mut self, x: &[f32], labels: &[u32]) -> Result<(), GpuError> {
        let (n0, k) = (self.obj.model().input.len(), self.obj.model().outputs());
        let n = labels.len();
        if n == 0 || x.len() != n * n0 || n > u32::MAX as usize {
            return Err(input(format!(
                "data set of {} labels and {} inputs (need >= 1 samples of {})",
                n,
                x.len(),
                n0
            )));
        }
        check_labels(labels, k)?;
        self.data = None;
        let d = self.dev();
        let xb = d.alloc(x.len())?;
        let yb = d.alloc_u32(n)?;
        let (xp, yp) = (d.ptr(&xb), d.iptr(&yb));
        d.upload(xp, x)?;
        d.upload_u32(yp, labels)?;
        self.data = Some(Resident { x: xb, y: yb, n });
        Ok(())
    }

    /// Every parameter of a model that trains some of them (see
    /// [`DeviceNet::set_frozen`]): θ, the direction and the optimizer's
    /// state hold the trained parameters only.
    pub fn set_frozen(&mut self, whole: &[f32]) -> Result<(), GpuError> {
        self.obj.set_frozen(whole)
    }

    /// Uploads θ and the optimizer's state (its vectors one after the
    /// other: P values for SGD's momentum, 2P for Adam's m and v; `None`:
    /// zeros).
    pub fn set_params(&mut self, theta: &[f32], state: Option<&[f32]>) -> Result<(), GpuError> {
        let p = self.param_count();
        if theta.len() != p {
            return Err(Error::ShapeMismatch {
                what: "theta",
                expected: p,
                got: theta.len(),
            }
            .into());
        }
        if let Some(st) = state {
            if st.len() % p.max(1) != 0 || st.len() / p.max(1) > 2 {
                return Err(Error::ShapeMismatch {
                    what: "optimizer state",
                    expected: p,
                    got: st.len(),
                }
                .into());
            }
        }
        let tp = self.obj.memory_mut().dev.ptr(&self.theta);
        self.obj.memory_mut().dev.upload(tp, theta)?;
        for i in 0..2 {
            let part = state.and_then(|st| st.chunks_exact(p.max(1)).nth(i));
            if part.is_some() && self.opt_state[i].is_none() {
                self.opt_state[i] = Some(self.dev().alloc(p)?);
            }
            if let Some(v) = &self.opt_state[i] {
                let vp = self.obj.memory_mut().dev.ptr(v);
                match part {
                    Some(m) => self.obj.memory_mut().dev.upload(vp, m)?,
                    // 0.0f32 is all-zero bits
                    None => self.obj.memory_mut().dev.fill_u32(vp, 0, p)?,
                }
            }
        }
        Ok(())
    }

    /// Downloads θ and the optimizer's state (as many vectors as `state`
    /// holds P-blocks; zeros for vectors the optimizer does not keep).
    pub fn params(&mut self, theta: &mut [f32], state: Option<&mut [f32]>) -> Result<(), GpuError> {
        let p = self.param_count();
        if theta.len() != p {
            return Err(Error::ShapeMismatch {
                what: "theta",
                expected: p,
                got: theta.len(),
            }
            .into());
        }
        let tp = self.obj.memory_mut().dev.ptr(&self.theta);
        self.obj.memory_mut().dev.download(tp, theta)?;
        if let Some(st) = state {
            if st.len() % p.max(1) != 0 || st.len() / p.max(1) > 2 {
                return Err(Error::ShapeMismatch {
                    what: "optimizer state",
                    expected: p,
                    got: st.len(),
                }
                .into());
            }
            for (i, m) in st.chunks_exact_mut(p.max(1)).enumerate() {
                match &self.opt_state[i] {
                    Some(v) => {
                        let vp = self.obj.memory_mut().dev.ptr(v);
                        self.obj.memory_mut().dev.download(vp, m)?;
                    }
                    None => m.fill(0.0),
                }
            }
        }
        Ok(())
    }

    /// Gathers the rows `indices` of the resident data set into the batch,
    /// cropped and flipped as `crops` says (with augmentation on).
    pub(crate) fn load_batch(
        &mut self,
        indices: &[u32],
        crops: Option<&[CropDraw]>,
    ) -> Result<(), GpuError> {
        let max = self.obj.memory().max_batch();
        let n0 = self.obj.model().input.len();
        let data = self
            .data
            .as_ref()
            .ok_or_else(|| input("no training data on the device (call set_data first)".into()))?;
        let b = indices.len();
        if b == 0 || b > max {
            return Err(input(format!("batch of {b} samples (need 1..={max})")));
        }
        if let Some(&i) = indices.iter().find(|&&i| i as usize >= data.n) {
            return Err(input(format!(
                "sample index {i} out of range ({} samples)",
                data.n
            )));
        }
        let m = self.obj.memory_mut();
        let d = &mut m.dev;
        let idx = d.iptr(&self.idx);
        d.stage_u32(idx, indices)?;
        let (x, y) = (d.ptr(&data.x), d.iptr(&data.y));
        let (xb, yb) = (d.ptr(&m.xb), d.iptr(&m.yb));
        match (crops, &self.aug) {
            (None, _) => launchers::gather_rows(d, x, y, idx, b, n0, xb, yb)?,
            (Some(c), Some(a)) => {
                if c.len() != b {
                    return Err(input(format!("{} crops for {b} samples", c.len())));
                }
                let bad = c
                    .iter()
                    .any(|c| c.top as usize > 2 * a.spec.pad || c.left as usize > 2 * a.spec.pad);
                if bad {
                    return Err(input("a crop outside the padding".into()));
                }
                let packed: Vec<u32> = c.iter().map(|c| c.packed()).collect();
                let cp = d.iptr(&a.crops);
                d.stage_u32(cp, &packed)?;
                let fill = d.ptr(&a.fill);
                let (dims, pad) = (a.spec.dims, a.spec.pad);
                launchers::gather_crop(d, x, y, idx, cp, b, dims, pad, Some(fill), xb, yb)?;
            }
            (Some(_), None) => {
                return Err(input("crops given but augmentation is off".into()));
            }
        }
        self.obj.set_batch_len(b);
        Ok(())
    }

    /// One training step with the kernel's own `fdgr_kernel::step`: the
    /// direction of `method` on samples `indices`, the finiteness check,
    /// the SGD update. Returns L(θ) before the step. Waits for the device
    /// (the loss and the finiteness flag are read back).
    pub fn step(
        &mut self,
        indices: &[u32],
        method: &Method<f32>,
        opt: &(impl Optim<f32> + ?Sized),
        state: &mut SgdState,
        lr: f32,
    ) -> Result<f32, GpuError> {
        self.step_aug(indices, None, method, opt, state, lr)
    }

    /// [`Trainer::step`] with the samples cropped and flipped on the
    /// device as `crops` says (augmentation on: [`Trainer::set_augment`]).
    pub fn step_aug(
        &mut self,
        indices: &[u32],
        crops: Option<&[CropDraw]>,
        method: &Method<f32>,
        opt: &(impl Optim<f32> + ?Sized),
        state: &mut SgdState,
        lr: f32,
    ) -> Result<f32, GpuError> {
        let x = StepOptions::default();
        self.step_with(indices, crops, method, opt, &x, state, lr)
    }

    /// Keeps amortized GR's correction (`--gr-every`, `--gr-prob`): a
    /// parameter-sized buffer on the device, zeros at first, that steps with
    /// a fresh ascent store and the others reuse ([`Trainer::step_with`]);
    /// `false` frees it.
    pub fn set_amortized(&mut self, on: bool) -> Result<(), GpuError> {
        if on && self.correction.is_none() {
            let p = self.param_count();
            self.correction = Some(self.dev().alloc(p)?);
        } else if !on {
            self.correction = None;
        }
        Ok(())
    }

    /// The stored correction (empty when not amortized; waits for the
    /// device).
    pub fn correction(&mut self) -> Result<Vec<f32>, GpuError> {
        let Some(c) = &self.correction else {
            return Ok(vec![]);
        };
        let mut v = vec![0.0f32; self.param_count()];
        let cp = self.obj.memory_mut().dev.ptr(c);
        self.obj.memory_mut().dev.download(cp, &mut v)?;
        Ok(v)
    }

    /// Restores the stored correction (P values; amortized GR must be on).
    pub fn set_correction(&mut self, v: &[f32]) -> Result<(), GpuError> {
        let p = self.param_count();
        match &self.correction {
            None if v.is_empty() => Ok(()),
            None => Err(input(
                "a stored GR correction, but amortized GR is off".into(),
            )),
            Some(_) if v.len() != p => Err(Error::ShapeMismatch {
                what: "GR correction",
                expected: p,
                got: v.len(),
            }
            .into()),
            Some(c) => {
                let cp = self.obj.memory_mut().dev.ptr(c);
                self.obj.memory_mut().dev.upload(cp, v)
            }
        }
    }

    /// One training step with every option the kernel's step takes
    /// (`fdgr_kernel::step_with`, the same function the CPU and the
    /// firmware run): gradient clipping and a fresh or reused ascent
    /// (amortized GR needs [`Trainer::set_amortized`]). Returns L(θ)
    /// before the step; waits for the device as [`Trainer::step`] does.
    #[allow(clippy::too_many_arguments)]
    pub fn step_with(
        &mut self,
        indices: &[u32],
        crops: Option<&[CropDraw]>,
        method: &Method<f32>,
        opt: &(impl Optim<f32> + ?Sized),
        x: &StepOptions<f32>,
        state: &mut SgdState,
        lr: f32,
    ) -> Result<f32, GpuError> {
        if self.pending {
            self.finish(state)?;
        }
        self.ensure(method, opt)?;
        self.load_batch(indices, crops)?;
        self.kernel_step(false, method, opt, state, lr, x)
    }

    /// `fdgr_kernel::step_with` on the objective and the trainer's buffers.
    /// Synchronous (`deferred` false): the step options as given, with the
    /// amortized correction when the trainer keeps one; the losses are read
    /// back. Deferred: the losses stay on the device and
    /// `DeviceNet::finish_step` queues the check and the update (no stored
    /// correction: the queued path takes no step options). A device error
    /// comes before the kernel's.
    fn kernel_step(
        &mut self,
        deferred: bool,
        method: &Method<f32>,
        opt: &(impl Optim<f32> + ?Sized),
        state: &mut SgdState,
        lr: f32,
        x: &StepOptions<f32>,
    ) -> Result<f32, GpuError> {
        self.obj.memory_mut().begin_step(deferred);
        let bufs = Buffers {
            theta: &mut self.theta,
            dir: &mut self.dir,
            state: {
                let [a, b] = &mut self.opt_state;
                [a.as_mut(), b.as_mut()]
            },
            point: self.point.as_mut(),
            point2: self.point2.as_mut(),
            correction: if deferred {
                None
            } else {
                self.correction.as_mut()
            },
        };
        let r = fdgr_kernel::step_with(&mut self.obj, method, opt, state, lr, x, bufs);
        self.obj.memory_mut().end_step();
        if let Some(e) = self.obj.memory_mut().take_error() {
            return Err(e);
        }
        r.map_err(GpuError::from)
    }

    /// One training step queued without waiting for the device: the
    /// kernel's `direction` (losses left on the device), then on the device
    /// the finiteness check of L and d, the SGD update (skipped if not
    /// finite) and the bookkeeping of `commit_step`. `state.steps` is
    /// advanced at once; [`Trainer::finish`] reads the outcome.
    ///
    /// `flood` needs L on the host to pick the sign of d, and `sam` needs
    /// ‖g‖: those two wait for the device once per step (`flood` runs as
    /// [`Trainer::step`]).
    pub fn step_async(
        &mut self,
        indices: &[u32],
        method: &Method<f32>,
        opt: &(impl Optim<f32> + ?Sized),
        state: &mut SgdState,
        lr: f32,
    ) -> Result<(), GpuError> {
        self.step_async_aug(indices, None, method, opt, state, lr)
    }

    /// [`Trainer::step_async`] with the samples cropped and flipped on the
    /// device as `crops` says (augmentation on: [`Trainer::set_augment`]).
    pub fn step_async_aug(
        &mut self,
        indices: &[u32],
        crops: Option<&[CropDraw]>,
        method: &Method<f32>,
        opt: &(impl Optim<f32> + ?Sized),
        state: &mut SgdState,
        lr: f32,
    ) -> Result<(), GpuError> {
        if matches!(method, Method::Flood { .. }) {
            return self
                .step_aug(indices, crops, method, opt, state, lr)
                .map(|_| ());
        }
        self.ensure(method, opt)?;
        self.load_batch(indices, crops)?;
        if self.queued.after.is_empty() {
            self.queued.base = self.obj.batches_tracked();
        }
        // the kernel's step (checks, direction, the count in `state`) with
        // the objective deferred
        self.kernel_step(true, method, opt, state, lr, &StepOptions::default())?;
        self.pending = true;
        let tracked = self.obj.batches_tracked();
        self.queued.after.push((state.steps, tracked));
        Ok(())
    }

    /// Waits for the queued steps and returns L(θ) of the last step (before
    /// its update). If a queued step was not finite: that step and every
    /// later queued one were not applied (θ, the optimizer's state and the
    /// batch-norm running statistics are as after the last good step),
    /// `state.steps` and the count of batches tracked are set back to the
    /// updates applied, and the result is [`GpuError::NonFinite`].
    pub fn finish(&mut self, state: &mut SgdState) -> Result<f32, GpuError> {
        let m = self.obj.memory_mut();
        let d = &mut m.dev;
        let f = d.iptr(&m.flags);
        let mut fl = [0u32; 4];
        d.download_u32(f, &mut fl)?;
        let mut loss = [0.0f32];
        let lp = d.ptr(&m.scal).at(ScalarPlan::STEP_LOSS);
        d.download(lp, &mut loss)?;
        self.pending = false;
        let queued = std::mem::take(&mut self.queued);
        if fl[flags::HALTED] != 0 {
            state.steps = fl[flags::STEP_LO] as u64 | (fl[flags::STEP_HI] as u64) << 32;
            d.fill_u32(f, 0, 4)?;
            // the running statistics of the steps not applied were not
            // copied on the device; nor are their batches counted
            self.obj.set_batches_tracked(queued.tracked_at(state.steps));
            return Err(GpuError::NonFinite);
        }
        Ok(loss[0])
    }

    /// Mean loss and number of correct predictions on (x, labels), in
    /// batches of up to `max_batch`, at the current θ, batch norm on its
    /// running statistics (evaluation mode). One wait at the end.
    pub fn evaluate(&mut self, x: &[f32], labels: &[u32]) -> Result<(f32, usize), GpuError> {
        let (n0, k) = (self.obj.model().input.len(), self.obj.model().outputs());
        let loss_kind = self.obj.model().loss;
        let n = labels.len();
        if n == 0 || x.len() != n * n0 {
            return Err(input(format!(
                "evaluation set of {} labels and {} inputs (need >= 1 samples of {n0})",
                n,
                x.len()
            )));
        }
        check_labels(labels, k)?;
        let max = self.obj.memory().max_batch();
        let m = self.obj.memory_mut();
        let acc = m.scal_ptr(ScalarPlan::EVAL_LOSS);
        let row_loss = m.scal_ptr(ScalarPlan::ROW_LOSS);
        let correct = m.flags_ptr().at(flags::CORRECT);
        let (xb, yb) = (m.dev.ptr(&m.xb), m.dev.iptr(&m.yb));
        m.dev.upload(acc, &[0.0])?;
        m.dev.fill_u32(correct, 0, 1)?;
        let theta = m.dev.ptr(&self.theta);
        let mut start = 0;
        while start < n {
            let b = max.min(n - start);
            let d = self.dev();
            d.upload(xb, &x[start * n0..(start + b) * n0])?;
            d.upload_u32(yb, &labels[start..start + b])?;
            self.obj.set_batch_len(b);
            let out = self.obj.forward_outputs(theta, Mode::Eval)?;
            let d = self.dev();
            launchers::loss(d, loss_kind, out, yb, b, k, None, row_loss, 1.0, true, acc)?;
            launchers::count_correct(d, out, yb, b, k, correct)?;
            start += b;
        }
        let mut total = [0.0f32];
        let mut c = [0u32];
        self.dev().download(acc, &mut total)?;
        self.dev().download_u32(correct, &mut c)?;
        let denom = match loss_kind {
            Loss::SoftmaxCe => n as f64,
            Loss::Mse => (n * k) as f64,
        };
        Ok(((total[0] as f64 / denom) as f32, c[0] as usize))
    }

    /// Waits for everything queued.
    pub fn synchronize(&mut self) -> Result<(), GpuError> {
        self.dev().synchronize()
    }
}
