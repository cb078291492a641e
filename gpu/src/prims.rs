//! The kernel's layer primitives ([`fdgr_kernel::ops::Ops`]) on a device:
//! every [`Loc`] of a pass resolves to a device pointer, every primitive
//! launches the `.cu` kernel that mirrors the kernel's serial function (or
//! a cuBLAS product, or a convolution on cuDNN / im2col + GEMM). With
//! this, the kernel's own pass functions (`fdgr_kernel::model::pass`)
//! drive the GPU: no layer or model maths is written here.
//!
//! Nothing waits for the device: the loss goes to a device scalar, whose
//! location [`Ops::loss_grad`] returns ([`Ops::Scalar`] = [`DPtr`]).
//! Errors are sticky: the first one is kept and every later primitive of
//! the pass is skipped ([`GpuOps::finish`] returns it).

use fdgr_kernel::model::{Mode, BN_EPS, BN_MOMENTUM};
use fdgr_kernel::ops::{BnBwd, BnFwd, BnRBwd, BnRFwd, Loc, Mem, Ops};
use fdgr_kernel::serial::act::Act;
use fdgr_kernel::serial::{BnGeom, ConvGeom, PoolGeom};
use fdgr_kernel::Loss;

use crate::conv;
use crate::device::{ConvKind, ConvOp, DPtr, Device};
use crate::error::GpuError;
use crate::launchers;

/// A device memory of a pass: where it starts and how many scalars it has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Region {
    /// Start.
    pub ptr: DPtr,
    /// Scalars.
    pub len: usize,
}

impl Region {
    /// A region.
    pub fn new(ptr: DPtr, len: usize) -> Region {
        Region { ptr, len }
    }
}

/// The device memories of one pass (see [`Mem`]).
#[derive(Clone, Copy, Debug)]
pub struct Mems {
    /// The batch inputs.
    pub x: Region,
    /// θ.
    pub theta: Region,
    /// The direction (`None`: the output vector itself, in place).
    pub v: Option<Region>,
    /// The parameter-sized output (`None`: not bound).
    pub out: Option<Region>,
    /// The pass area of the workspace.
    pub ws: Region,
    /// The running statistics.
    pub state: Region,
    /// Every parameter of a model that trains some of them, of which the
    /// layers read the ones they do not train (`None`: the model trains
    /// every parameter).
    pub frozen: Option<Region>,
}

/// Device scratch the primitives use beyond the kernel's workspace.
#[derive(Clone, Copy, Debug)]
pub struct Scratch {
    /// Batch-norm channel sums (5·C for the widest layer).
    pub sums: Region,
    /// The im2col + GEMM convolution scratch (`None` with native
    /// convolutions).
    pub conv: Option<Region>,
    /// Per-row loss terms (the batch size).
    pub row_loss: DPtr,
    /// Where [`Ops::loss_grad`] writes the loss.
    pub loss: DPtr,
}

/// [`Ops`] on device `D` for one pass.
pub struct GpuOps<'a, D: Device> {
    dev: &'a mut D,
    mem: Mems,
    labels: DPtr,
    scratch: Scratch,
    err: Option<GpuError>,
}

type R = Result<(), GpuError>;

impl<'a, D: Device> GpuOps<'a, D> {
    /// The primitives over `mem` on `dev`; `labels`: the batch's class
    /// labels (u32).
    pub fn new(dev: &'a mut D, mem: Mems, labels: DPtr, scratch: Scratch) -> Self {
        GpuOps {
            dev,
            mem,
            labels,
            scratch,
            err: None,
        }
    }

    /// The first error of the pass, if any.
    pub fn finish(self) -> Result<(), GpuError> {
        match self.err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// The device pointer of `l`, `n` scalars long (checked against its
    /// memory: a layout bug is an error, never a stray write).
    pub fn ptr(&self, l: Loc, n: usize) -> Result<DPtr, GpuError> {
        let m = &self.mem;
        let region = match l.mem {
            Mem::X => Some(m.x),
            Mem::Theta => Some(m.theta),
            Mem::V => m.v.or(m.out),
            Mem::Out => m.out,
            Mem::Ws => Some(m.ws),
            Mem::State => Some(m.state),
            Mem::Frozen => m.frozen,
        };
        match region {
            Some(r) if l.off + n <= r.len => Ok(r.ptr.at(l.off)),
            _ => Err(GpuError::Input(format!(
                "buffer layout bug: {:?} + {n} outside its device memory",
                l
            ))),
        }
    }

    fn go(&mut self, f: impl FnOnce(&mut Self) -> R) {
        if self.err.is_none() {
            if let Err(e) = f(self) {
                self.err = Some(e);
            }
        }
    }

    fn conv_op(&mut self, op: ConvOp) -> R {
        if self.dev.conv(&op)? {
            return Ok(());
        }
        match self.scratch.conv {
            Some(s) => conv::run(self.dev, &op, s.ptr, s.len),
            None => Err(GpuError::Input(
                "no convolution scratch and no native convolutions".into(),
            )),
        }
    }
}

fn opt_ptr<D: Device>(
    o: &GpuOps<'_, D>,
    l: Option<Loc>,
    n: usize,
) -> Result<Option<DPtr>, GpuError> {
    l.map(|l| o.ptr(l, n)).transpose()
}

impl<D: Device> Ops<f32> for GpuOps<'_, D> {
    type Scalar = DPtr;

    fn gemm(
        &mut self,
        ta: bool,
        tb: bool,
        m: usize,
        n: usize,
        k: usize,
        alpha: f32,
        a: Loc,
        b: Loc,
        beta: f32,
        c: Loc,
    ) {
        self.go(|s| {
            let (a, b, c) = (s.ptr(a, m * k)?, s.ptr(b, k * n)?, s.ptr(c, m * n)?);
            launchers::gemm(s.dev, ta, tb, m, n, k, alpha, a, b, beta, c)
        });
    }

    fn bias_act(&mut self, z: Loc, bias: Option<Loc>, n: usize, c: usize, hw: usize, act: Act) {
        self.go(|s| {
            let len = n * c * hw;
            let (z, b) = (s.ptr(z, len)?, opt_ptr(s, bias, c)?);
            launchers::bias_act(s.dev, z, b, len, c, hw, act)
        });
    }

    fn act_map(&mut self, y: Loc, x: Loc, len: usize, act: Act) {
        self.go(|s| {
            let (y, x) = (s.ptr(y, len)?, s.ptr(x, len)?);
            launchers::act_map(s.dev, y, x, len, act)
        });
    }

    fn act_backward(&mut self, delta: Loc, a: Loc, len: usize, act: Act) {
        self.go(|s| {
            let (d, a) = (s.ptr(delta, len)?, s.ptr(a, len)?);
            launchers::act_backward(s.dev, d, a, len, act)
        });
    }

    fn r_act(&mut self, ra: Loc, rz: Loc, a: Loc, len: usize, act: Act) {
        self.go(|s| {
            let (ra, rz, a) = (s.ptr(ra, len)?, s.ptr(rz, len)?, s.ptr(a, len)?);
            launchers::r_act(s.dev, ra, rz, a, len, act)
        });
    }

    fn r_act_backward(&mut self, rd: Loc, rz: Loc, a: Loc, dz: Loc, len: usize, act: Act) {
        self.go(|s| {
            let (rd, rz) = (s.ptr(rd, len)?, s.ptr(rz, len)?);
            let (a, dz) = (s.ptr(a, len)?, s.ptr(dz, len)?);
            launchers::r_act_backward(s.dev, rd, rz, a, dz, len, act)
        });
    }

    fn chan_sum(&mut self, out: Loc, m: Loc, n: usize, c: usize, hw: usize, alpha: f32, beta: f32) {
        self.go(|s| {
            let (o, m) = (s.ptr(out, c)?, s.ptr(m, n * c * hw)?);
            launchers::chan_sum(s.dev, o, m, n, c, hw, alpha, beta)
        });
    }

    fn conv(&mut self, g: &ConvGeom, x: Loc, w: Loc, y: Loc, alpha: f32, beta: f32) {
        self.go(|s| {
            let op = ConvOp {
                kind: ConvKind::Forward,
                g: *g,
                a: s.ptr(x, g.x_len())?,
                b: s.ptr(w, g.w_len())?,
                out: s.ptr(y, g.y_len())?,
                alpha,
                beta,
            };
            s.conv_op(op)
        });
    }

    fn conv_backward_data(
        &mut self,
        g: &ConvGeom,
        dy: Loc,
        w: Loc,
        dx: Loc,
        alpha: f32,
        beta: f32,
    ) {
        self.go(|s| {
            let op = ConvOp {
                kind: ConvKind::BackwardData,
                g: *g,
                a: s.ptr(dy, g.y_len())?,
                b: s.ptr(w, g.w_len())?,
                out: s.ptr(dx, g.x_len())?,
                alpha,
                beta,
            };
            s.conv_op(op)
        });
    }

    fn conv_backward_filter(
        &mut self,
        g: &ConvGeom,
        x: Loc,
        dy: Loc,
        dw: Loc,
        alpha: f32,
        beta: f32,
    ) {
        self.go(|s| {
            let op = ConvOp {
                kind: ConvKind::BackwardFilter,
                g: *g,
                a: s.ptr(x, g.x_len())?,
                b: s.ptr(dy, g.y_len())?,
                out: s.ptr(dw, g.w_len())?,
                alpha,
                beta,
            };
            s.conv_op(op)
        });
    }

    fn bn_forward(&mut self, g: &BnGeom, a: &BnFwd) {
        self.go(|s| {
            let (len, c) = (g.len(), g.c);
            let eps = BN_EPS as f32;
            let (x, y, gb) = (s.ptr(a.x, len)?, s.ptr(a.y, len)?, s.ptr(a.gb, 2 * c)?);
            match a.mode {
                Mode::Eval => {
                    let run = s.ptr(a.running, 2 * c)?;
                    launchers::bn_apply(s.dev, g, x, y, gb, run, true, eps, a.act)
                }
                Mode::Train => {
                    let stats = s.ptr(a.stats, 2 * c)?;
                    let (run, pend) = match a.pending {
                        Some(p) => (Some(s.ptr(a.running, 2 * c)?), Some(s.ptr(p, 2 * c)?)),
                        None => (None, None),
                    };
                    let m = BN_MOMENTUM as f32;
                    launchers::bn_stats(s.dev, g, x, eps, stats, run, pend, m)?;
                    launchers::bn_apply(s.dev, g, x, y, gb, stats, false, eps, a.act)
                }
            }
        });
    }

    fn bn_backward(&mut self, g: &BnGeom, a: &BnBwd<f32>) {
        if a.dx.is_none() && a.dp.is_none() {
            return;
        }
        self.go(|s| {
            let (len, c) = (g.len(), g.c);
            let (x, dy) = (s.ptr(a.x, len)?, s.ptr(a.dy, len)?);
            let (gb, stats) = (s.ptr(a.gb, 2 * c)?, s.ptr(a.stats, 2 * c)?);
            let sums = s.sums(2 * c)?;
            let dp = match a.dp {
                Some((p, alpha, beta)) => Some((s.ptr(p, 2 * c)?, alpha, beta)),
                None => None,
            };
            launchers::bn_bwd_sums(s.dev, g, x, dy, stats, sums, dp)?;
            if let Some((dx, acc)) = a.dx {
                let dx = s.ptr(dx, len)?;
                launchers::bn_bwd_dx(s.dev, g, x, dy, dx, gb, stats, sums, acc)?;
            }
            Ok(())
        });
    }

    fn bn_r_forward(&mut self, g: &BnGeom, a: &BnRFwd) {
        self.go(|s| {
            let (len, c) = (g.len(), g.c);
            let (x, rx) = (s.ptr(a.x, len)?, opt_ptr(s, a.rx, len)?);
            let (gb, vgb) = (s.ptr(a.gb, 2 * c)?, s.ptr(a.vgb, 2 * c)?);
            let (stats, ry) = (s.ptr(a.stats, 2 * c)?, s.ptr(a.ry, len)?);
            let rstats = s.ptr(a.rstats, 2 * c)?;
            launchers::bn_rfwd_sums(s.dev, g, x, rx, stats, rstats)?;
            launchers::bn_rfwd_apply(s.dev, g, x, rx, ry, gb, vgb, stats, rstats)
        });
    }

    fn bn_r_backward(&mut self, g: &BnGeom, a: &BnRBwd) {
        self.go(|s| {
            let (len, c) = (g.len(), g.c);
            let b = launchers::BnRBack {
                x: s.ptr(a.x, len)?,
                rx: opt_ptr(s, a.rx, len)?,
                dy: s.ptr(a.dy, len)?,
                rdy: s.ptr(a.rdy, len)?,
                gb: s.ptr(a.gb, 2 * c)?,
                vgb: s.ptr(a.vgb, 2 * c)?,
                stats: s.ptr(a.stats, 2 * c)?,
                rstats: s.ptr(a.rstats, 2 * c)?,
            };
            let sums5 = s.sums(5 * c)?;
            let rsums = s.ptr(a.rsums, 2 * c)?;
            launchers::bn_rbwd_sums(s.dev, g, &b, sums5, rsums)?;
            if let Some((rdx, acc)) = a.rdx {
                let rdx = s.ptr(rdx, len)?;
                launchers::bn_rbwd_dx(s.dev, g, &b, rdx, sums5, acc)?;
            }
            Ok(())
        });
    }

    fn pool(&mut self, g: &PoolGeom, x: Loc, y: Loc) {
        self.go(|s| {
            let (x, y) = (s.ptr(x, g.x_len())?, s.ptr(y, g.y_len())?);
            launchers::pool_fwd(s.dev, g, x, y)
        });
    }

    fn pool_backward(&mut self, g: &PoolGeom, x: Loc, dy: Loc, dx: Loc, acc: bool) {
        self.go(|s| {
            let (x, dy) = (s.ptr(x, g.x_len())?, s.ptr(dy, g.y_len())?);
            let dx = s.ptr(dx, g.x_len())?;
            launchers::pool_bwd(s.dev, g, x, dy, dx, acc)
        });
    }

    fn pool_r(&mut self, g: &PoolGeom, x: Loc, rx: Loc, ry: Loc) {
        self.go(|s| {
            let (x, rx) = (s.ptr(x, g.x_len())?, s.ptr(rx, g.x_len())?);
            let ry = s.ptr(ry, g.y_len())?;
            launchers::pool_r(s.dev, g, x, rx, ry)
        });
    }

    fn add(&mut self, y: Loc, a: Loc, b: Loc, len: usize) {
        self.go(|s| {
            let (y, a, b) = (s.ptr(y, len)?, s.ptr(a, len)?, s.ptr(b, len)?);
            launchers::add(s.dev, y, a, b, len)
        });
    }

    fn acc(&mut self, dst: Loc, src: Loc, len: usize, acc: bool) {
        self.go(|s| {
            let (d, x) = (s.ptr(dst, len)?, s.ptr(src, len)?);
            if acc {
                launchers::axpy(s.dev, d, 1.0, x, len)
            } else {
                s.dev.copy(d, x, len)
            }
        });
    }

    fn axpby(&mut self, out: Loc, src: Loc, len: usize, alpha: f32, beta: f32) {
        self.go(|s| {
            let (o, x) = (s.ptr(out, len)?, s.ptr(src, len)?);
            launchers::axpby(s.dev, o, x, len, alpha, beta)
        });
    }

    fn loss_grad(
        &mut self,
        loss: Loss,
        out: Loc,
        rows: usize,
        k: usize,
        delta: Option<Loc>,
    ) -> DPtr {
        let slot = self.scratch.loss;
        self.go(|s| {
            let o = s.ptr(out, rows * k)?;
            let d = opt_ptr(s, delta, rows * k)?;
            let scale = launchers::mean_scale(loss, rows, k);
            let (labels, row_loss) = (s.labels, s.scratch.row_loss);
            launchers::loss(
                s.dev, loss, o, labels, rows, k, d, row_loss, scale, false, slot,
            )
        });
        slot
    }

    fn loss_hvp(&mut self, loss: Loss, out: Loc, rows: usize, k: usize, r: Loc, h: Loc) {
        self.go(|s| {
            let n = rows * k;
            let (o, r, h) = (s.ptr(out, n)?, s.ptr(r, n)?, s.ptr(h, n)?);
            launchers::loss_hvp(s.dev, loss, o, rows, k, r, h)
        });
    }
}

impl<D: Device> GpuOps<'_, D> {
    fn sums(&self, n: usize) -> Result<DPtr, GpuError> {
        if n <= self.scratch.sums.len {
            Ok(self.scratch.sums.ptr)
        } else {
            Err(GpuError::Input(format!(
                "batch-norm scratch of {} scalars, need {n}",
                self.scratch.sums.len
            )))
        }
    }
}
