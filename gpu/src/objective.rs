//! The MLP objective on a device: `fdgr_kernel::VecSpace<f32>` and
//! `fdgr_kernel::Objective<f32>` with device buffers as vectors, so
//! `fdgr_kernel::method::step` and `direction` run unchanged on the GPU.
//!
//! It mirrors `fdgr_kernel::mlp` call by call: the same passes, the same
//! workspace layout ([`WsPlan`]), the same products (cuBLAS SGEMM with the
//! transpose mapping of [`crate::gemm`]) and the same elementwise maths
//! (the kernels of `gpu/kernels/`, each naming the Rust it mirrors).
//!
//! Host round trips: `loss_grad`, `loss_grad_gr` and `loss` return L(θ) as
//! an `f32`, so they wait for the device (one 4-byte read), as do `dot` and
//! `all_finite`. That is the price of running the kernel's `step`
//! unchanged; [`crate::GpuTrainer::step_async`] runs the kernel's
//! `direction` in *deferred* mode instead, where the losses stay on the
//! device and no call waits (except `dot`, i.e. SAM's ‖g‖).

use crate::device::{DPtr, Device};
use crate::error::GpuError;
use crate::ops;
use crate::plan::{flags, ScalarPlan, WsPlan};
use fdgr_kernel::optim::OptElem;
use fdgr_kernel::{Error, Objective, Shape, VecSpace};

/// What a device error turns into at the `fdgr_kernel` interface; the
/// [`GpuError`] itself is kept (see [`DeviceMlp::take_error`]).
pub const DEVICE_ERROR: Error = Error::Unsupported("device error (see GpuError)");

/// The MLP objective on the current mini-batch, on device `D`.
pub struct DeviceMlp<D: Device> {
    pub(crate) dev: D,
    shape: Shape,
    max_batch: usize,
    ws: D::Buf,
    pub(crate) xb: D::Buf,
    pub(crate) yb: D::IBuf,
    pub(crate) scal: D::Buf,
    pub(crate) flags: D::IBuf,
    batch: usize,
    deferred: bool,
    losses: usize,
    err: Option<GpuError>,
}

/// (W_l, b_l) of layer `l` in a parameter-sized vector at `base`.
#[inline]
fn layer(s: &Shape, base: DPtr, l: usize) -> (DPtr, DPtr) {
    let o = s.weight_offset(l);
    (base.at(o), base.at(o + s.dim(l) * s.dim(l - 1)))
}

/// Layer `l`'s block (B × n_l) of the per-layer buffer at `base`.
#[inline]
fn blk(s: &Shape, base: DPtr, l: usize, b: usize) -> DPtr {
    base.at(s.unit_offset(l, b))
}

fn mismatch(what: &'static str, expected: usize, got: usize) -> Error {
    Error::ShapeMismatch {
        what,
        expected,
        got,
    }
}

impl<D: Device> DeviceMlp<D> {
    /// An objective for `shape` on `dev`, with room for batches of up to
    /// `max_batch` samples (and Hessian-vector products when `hvp`).
    pub fn new(mut dev: D, shape: Shape, max_batch: usize, hvp: bool) -> Result<Self, GpuError> {
        if max_batch == 0 {
            return Err(GpuError::Input("max_batch must be >= 1".into()));
        }
        let ws = dev.alloc(shape.workspace_len(max_batch, hvp))?;
        let xb = dev.alloc(max_batch * shape.inputs())?;
        let yb = dev.alloc_u32(max_batch)?;
        let scal = dev.alloc(ScalarPlan { max_batch }.len())?;
        let flags = dev.alloc_u32(flags::LEN)?;
        Ok(DeviceMlp {
            dev,
            shape,
            max_batch,
            ws,
            xb,
            yb,
            scal,
            flags,
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

    /// The model shape.
    pub fn shape(&self) -> &Shape {
        &self.shape
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
    /// from 2·B·N to 5·B·N scalars.
    pub fn ensure_hvp(&mut self) -> Result<(), GpuError> {
        let need = self.shape.workspace_len(self.max_batch, true);
        if self.dev.len(&self.ws) < need {
            self.ws = self.dev.alloc(need)?;
        }
        Ok(())
    }

    /// Uploads a mini-batch of `b` samples (inputs `x`, b × n₀, and class
    /// labels) into the batch buffers and makes it current.
    pub fn set_batch(&mut self, x: &[f32], labels: &[u32]) -> Result<(), GpuError> {
        let (n0, k) = (self.shape.inputs(), self.shape.outputs());
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
        self.batch = b;
        Ok(())
    }

    /// Declares that the batch buffers hold `b` samples (filled on the
    /// device, e.g. by a gather).
    pub(crate) fn set_batch_len(&mut self, b: usize) {
        self.batch = b;
    }

    /// Samples in the current batch (0 if none).
    pub fn batch_len(&self) -> usize {
        self.batch
    }

    /// The first device error since the last call, if any. Device errors
    /// surface at the kernel interface as [`DEVICE_ERROR`] (or a NaN from
    /// `dot`, `false` from `all_finite`); this is the real error.
    pub fn take_error(&mut self) -> Option<GpuError> {
        self.err.take()
    }

    /// Starts a training step: the step's first loss (at θ) goes to the
    /// step-loss slot. `deferred`: losses are left on the device and the
    /// returned values are placeholders (0), see the module docs.
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

    fn ready(&self, theta: &D::Buf, hvp: bool) -> Result<WsPlan, Error> {
        if self.batch == 0 {
            return Err(Error::NoBatch);
        }
        let p = self.shape.param_count();
        if self.dev.len(theta) != p {
            return Err(mismatch("theta", p, self.dev.len(theta)));
        }
        let plan = WsPlan::new(&self.shape, self.batch, hvp);
        if self.dev.len(&self.ws) < plan.len() {
            return Err(mismatch("workspace", plan.len(), self.dev.len(&self.ws)));
        }
        Ok(plan)
    }

    fn check_vec(&self, what: &'static str, v: &D::Buf) -> Result<(), Error> {
        let p = self.shape.param_count();
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

    /// mlp::forward: a_l = σ_l(a_{l−1}·W_lᵀ + b_l), l = 1..L.
    pub(crate) fn forward(&mut self, t: DPtr, plan: &WsPlan) -> Result<(), GpuError> {
        let s = self.shape;
        let b = plan.batch;
        let acts = self.dev.ptr(&self.ws).at(plan.acts());
        let x = self.dev.ptr(&self.xb);
        for l in 1..=s.layers() {
            let (w, bias) = layer(&s, t, l);
            let (n_in, n_out) = (s.dim(l - 1), s.dim(l));
            let a_in = if l == 1 { x } else { blk(&s, acts, l - 1, b) };
            let z = blk(&s, acts, l, b);
            ops::gemm(
                &mut self.dev,
                false,
                true,
                b,
                n_out,
                n_in,
                1.0,
                a_in,
                w,
                0.0,
                z,
            )?;
            ops::bias_act(&mut self.dev, z, bias, b, n_out, s.act_of(l))?;
        }
        Ok(())
    }

    /// The outputs (B × n_L) of the last forward pass.
    pub(crate) fn outputs_ptr(&self, plan: &WsPlan) -> DPtr {
        let acts = self.dev.ptr(&self.ws).at(plan.acts());
        blk(&self.shape, acts, self.shape.layers(), plan.batch)
    }

    /// Mlp::fwd_bwd: forward, loss into `slot`, δ at the outputs, backward
    /// with grad ← β·grad + α·∇L when `grad` is given.
    fn fwd_bwd(
        &mut self,
        t: DPtr,
        grad: Option<(DPtr, f32, f32)>,
        plan: &WsPlan,
        slot: usize,
    ) -> Result<(), GpuError> {
        let s = self.shape;
        let b = plan.batch;
        let (nl, k) = (s.layers(), s.outputs());
        self.forward(t, plan)?;
        let ws = self.dev.ptr(&self.ws);
        let (acts, deltas) = (ws.at(plan.acts()), ws.at(plan.deltas()));
        let out = blk(&s, acts, nl, b);
        let dl = blk(&s, deltas, nl, b);
        let yb = self.dev.iptr(&self.yb);
        let row_loss = self.scal_ptr(ScalarPlan::ROW_LOSS);
        let loss_out = self.scal_ptr(slot);
        let scale = ops::mean_scale(s.loss, b, k);
        ops::loss(
            &mut self.dev,
            s.loss,
            out,
            yb,
            b,
            k,
            Some(dl),
            row_loss,
            scale,
            false,
            loss_out,
        )?;
        ops::act_backward(&mut self.dev, dl, out, b * k, s.act_of(nl))?;
        // mlp::backward
        let x = self.dev.ptr(&self.xb);
        for l in (1..=nl).rev() {
            let (n_in, n_out) = (s.dim(l - 1), s.dim(l));
            let a_in = if l == 1 { x } else { blk(&s, acts, l - 1, b) };
            let dz = blk(&s, deltas, l, b);
            if let Some((g, alpha, beta)) = grad {
                let (gw, gb) = layer(&s, g, l);
                // the F-GR combination happens here: β·g + α·g' in the
                // SGEMM's epilogue (and in col_sum for the biases)
                ops::gemm(
                    &mut self.dev,
                    true,
                    false,
                    n_out,
                    n_in,
                    b,
                    alpha,
                    dz,
                    a_in,
                    beta,
                    gw,
                )?;
                ops::col_sum(&mut self.dev, gb, dz, b, n_out, alpha, beta)?;
            }
            if l > 1 {
                let (w, _) = layer(&s, t, l);
                let prev = blk(&s, deltas, l - 1, b);
                ops::gemm(
                    &mut self.dev,
                    false,
                    false,
                    b,
                    n_in,
                    n_out,
                    1.0,
                    dz,
                    w,
                    0.0,
                    prev,
                )?;
                let a_prev = blk(&s, acts, l - 1, b);
                ops::act_backward(&mut self.dev, prev, a_prev, b * n_in, s.act_of(l - 1))?;
            }
        }
        Ok(())
    }

    /// mlp::r_pass after fwd_bwd: out ← β·out + α·H·v. `v` may be `out`
    /// itself (in place, as the kernel does for `db`): each V_l is read
    /// before out_l is written, and the stream keeps that order.
    fn rpass(
        &mut self,
        t: DPtr,
        v: DPtr,
        out: DPtr,
        alpha: f32,
        beta: f32,
        plan: &WsPlan,
    ) -> Result<(), GpuError> {
        let s = self.shape;
        let b = plan.batch;
        let nl = s.layers();
        let ws = self.dev.ptr(&self.ws);
        let acts = ws.at(plan.acts());
        let deltas = ws.at(plan.deltas());
        let rz = ws.at(plan.rz());
        let ra = ws.at(plan.ra());
        let rd = ws.at(plan.rd());
        let x = self.dev.ptr(&self.xb);
        let d = &mut self.dev;
        // R-forward
        for l in 1..=nl {
            let (n_in, n_out) = (s.dim(l - 1), s.dim(l));
            let a_in = if l == 1 { x } else { blk(&s, acts, l - 1, b) };
            let rzl = blk(&s, rz, l, b);
            let (vw, vb) = layer(&s, v, l);
            ops::gemm(d, false, true, b, n_out, n_in, 1.0, a_in, vw, 0.0, rzl)?;
            if l > 1 {
                let (w, _) = layer(&s, t, l);
                let ra_prev = blk(&s, ra, l - 1, b);
                ops::gemm(d, false, true, b, n_out, n_in, 1.0, ra_prev, w, 1.0, rzl)?;
            }
            let (ral, al) = (blk(&s, ra, l, b), blk(&s, acts, l, b));
            ops::r_bias_act(d, rzl, ral, vb, al, b, n_out, s.act_of(l))?;
        }
        // R-backward: the loss Hessian at the outputs
        let k = s.outputs();
        let rdl = blk(&s, rd, nl, b);
        ops::loss_hvp(
            d,
            s.loss,
            blk(&s, acts, nl, b),
            b,
            k,
            blk(&s, ra, nl, b),
            rdl,
        )?;
        ops::r_act_backward(
            d,
            rdl,
            blk(&s, rz, nl, b),
            blk(&s, acts, nl, b),
            blk(&s, deltas, nl, b),
            b * k,
            s.act_of(nl),
        )?;
        for l in (1..=nl).rev() {
            let (n_in, n_out) = (s.dim(l - 1), s.dim(l));
            let dz = blk(&s, deltas, l, b);
            let rdz = blk(&s, rd, l, b);
            if l > 1 {
                let (vw, _) = layer(&s, v, l);
                let (w, _) = layer(&s, t, l);
                let prev = blk(&s, rd, l - 1, b);
                ops::gemm(d, false, false, b, n_in, n_out, 1.0, dz, vw, 0.0, prev)?;
                ops::gemm(d, false, false, b, n_in, n_out, 1.0, rdz, w, 1.0, prev)?;
                ops::r_act_backward(
                    d,
                    prev,
                    blk(&s, rz, l - 1, b),
                    blk(&s, acts, l - 1, b),
                    blk(&s, deltas, l - 1, b),
                    b * n_in,
                    s.act_of(l - 1),
                )?;
            }
            let a_in = if l == 1 { x } else { blk(&s, acts, l - 1, b) };
            let (ow, ob) = layer(&s, out, l);
            ops::gemm(d, true, false, n_out, n_in, b, alpha, rdz, a_in, beta, ow)?;
            if l > 1 {
                let ra_prev = blk(&s, ra, l - 1, b);
                ops::gemm(d, true, false, n_out, n_in, b, alpha, dz, ra_prev, 1.0, ow)?;
            }
            ops::col_sum(d, ob, rdz, b, n_out, alpha, beta)?;
        }
        Ok(())
    }
}

impl<D: Device> VecSpace<f32> for DeviceMlp<D> {
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
        let r = ops::axpy(&mut self.dev, yp, a, xp, n);
        self.note(r);
    }

    fn waxpy(&mut self, w: &mut D::Buf, x: &D::Buf, a: f32, y: &D::Buf) {
        let n = self.dev.len(w).min(self.dev.len(x)).min(self.dev.len(y));
        let (wp, xp, yp) = (self.dev.ptr(w), self.dev.ptr(x), self.dev.ptr(y));
        let r = ops::waxpy(&mut self.dev, wp, xp, a, yp, n);
        self.note(r);
    }

    fn scale(&mut self, x: &mut D::Buf, a: f32) {
        let n = self.dev.len(x);
        let xp = self.dev.ptr(x);
        let r = ops::scale(&mut self.dev, xp, a, n);
        self.note(r);
    }

    /// Waits for the device (the result is read back). NaN on a device
    /// error (see [`DeviceMlp::take_error`]).
    fn dot(&mut self, x: &D::Buf, y: &D::Buf) -> f32 {
        let n = self.dev.len(x).min(self.dev.len(y));
        let (xp, yp) = (self.dev.ptr(x), self.dev.ptr(y));
        let partials = self.scal_ptr(ScalarPlan::PARTIALS);
        let out = self.scal_ptr(ScalarPlan::DOT);
        let mut v = [0.0f32];
        let r = ops::dot(&mut self.dev, xp, yp, n, partials, out)
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
            .and_then(|()| ops::nonfinite(&mut self.dev, xp, n, None, flag))
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
        let r = ops::opt_update(&mut self.dev, tp, dp, p0, p1, n, h, None);
        self.note(r);
    }
}

impl<D: Device> Objective<f32> for DeviceMlp<D> {
    fn param_count(&self) -> usize {
        self.shape.param_count()
    }

    fn loss_grad(
        &mut self,
        theta: &D::Buf,
        grad: &mut D::Buf,
        alpha: f32,
        beta: f32,
        _pass: fdgr_kernel::Pass,
    ) -> Result<f32, Error> {
        let plan = self.ready(theta, false)?;
        self.check_vec("gradient", grad)?;
        let slot = self.next_loss_slot();
        let (t, g) = (self.dev.ptr(theta), self.dev.ptr(grad));
        let r = self.fwd_bwd(t, Some((g, alpha, beta)), &plan, slot);
        r.map_err(|e| self.fail(e))?;
        self.read_loss(slot)
    }

    /// One gradient, then the in-place R-pass d ← d + γ·H·d (mlp.rs).
    fn loss_grad_gr(&mut self, theta: &D::Buf, d: &mut D::Buf, gamma: f32) -> Result<f32, Error> {
        let plan = self.ready(theta, true)?;
        self.check_vec("direction", d)?;
        let slot = self.next_loss_slot();
        let (t, dp) = (self.dev.ptr(theta), self.dev.ptr(d));
        let r = self
            .fwd_bwd(t, Some((dp, 1.0, 0.0)), &plan, slot)
            .and_then(|()| self.rpass(t, dp, dp, gamma, 1.0, &plan));
        r.map_err(|e| self.fail(e))?;
        self.read_loss(slot)
    }

    fn hvp(&mut self, theta: &D::Buf, v: &D::Buf, out: &mut D::Buf) -> Result<(), Error> {
        let plan = self.ready(theta, true)?;
        self.check_vec("v", v)?;
        self.check_vec("hvp output", out)?;
        let slot = self.next_loss_slot();
        let (t, vp, op) = (self.dev.ptr(theta), self.dev.ptr(v), self.dev.ptr(out));
        let r = self
            .fwd_bwd(t, None, &plan, slot)
            .and_then(|()| self.rpass(t, vp, op, 1.0, 0.0, &plan));
        r.map_err(|e| self.fail(e))
    }

    fn loss(&mut self, theta: &D::Buf) -> Result<f32, Error> {
        let plan = self.ready(theta, false)?;
        let slot = self.next_loss_slot();
        let s = self.shape;
        let t = self.dev.ptr(theta);
        let r = self.forward(t, &plan).and_then(|()| {
            let out = self.outputs_ptr(&plan);
            let yb = self.dev.iptr(&self.yb);
            let row_loss = self.scal_ptr(ScalarPlan::ROW_LOSS);
            let loss_out = self.scal_ptr(slot);
            let scale = ops::mean_scale(s.loss, plan.batch, s.outputs());
            ops::loss(
                &mut self.dev,
                s.loss,
                out,
                yb,
                plan.batch,
                s.outputs(),
                None,
                row_loss,
                scale,
                false,
                loss_out,
            )
        });
        r.map_err(|e| self.fail(e))?;
        self.read_loss(slot)
    }
}
