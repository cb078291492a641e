//! The primitives every layer's maths is written in, and their CPU
//! binding.
//!
//! Layer code ([`crate::model`]) never touches memory itself: it names
//! buffers by [`Loc`] (which memory, which offset) and calls the
//! primitives of [`Ops`]: products, per-channel bias + activation,
//! convolution, batch-norm, pooling and loss passes. A backend implements
//! the primitives once; it does not implement layers or models:
//!
//! * [`CpuOps`] binds the memories of one pass (the batch, θ, the
//!   direction, the output vector, the workspace, the running statistics)
//!   as slices, resolves each [`Loc`] to a slice and runs the slice
//!   functions of an [`Exec`]: the serial reference loops on a
//!   microcontroller, the host's parallel ones on a server.
//! * A GPU backend maps each [`Loc`] to a device pointer and launches a
//!   kernel (or a cuDNN / cuBLAS call) per primitive.

use crate::loss::{self, Loss, Targets};
use crate::optim::OptElem;
use crate::real::Real;
use crate::serial::act::{self, Act};
use crate::serial::norm::{self, Dp, Dx, Mode, Pending, RBack};
use crate::serial::{conv, pool, BnGeom, ConvGeom, PoolGeom};

/// The memories of a pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Mem {
    /// The mini-batch inputs (read-only).
    X,
    /// The parameters θ (read-only).
    Theta,
    /// The direction v of a Hessian-vector product (read-only; the output
    /// vector itself when the product is taken in place).
    V,
    /// The parameter-sized output: the gradient, or H·v.
    Out,
    /// The workspace.
    Ws,
    /// Non-θ state (batch-norm running statistics).
    State,
    /// The frozen parameters (read-only): every parameter of the model in
    /// layer order, of which the layers read the ones they do not train
    /// (see [`crate::model::Train`]). Empty unless the model freezes some.
    Frozen,
}

/// A position in one of the memories of a pass (in scalars).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Loc {
    /// Which memory.
    pub mem: Mem,
    /// Offset in scalars.
    pub off: usize,
}

impl Loc {
    /// A location.
    pub const fn new(mem: Mem, off: usize) -> Loc {
        Loc { mem, off }
    }
    /// The location `n` scalars further.
    pub const fn at(self, n: usize) -> Loc {
        Loc {
            mem: self.mem,
            off: self.off + n,
        }
    }
}

/// Arguments of [`Ops::bn_forward`].
#[derive(Clone, Copy, Debug)]
pub struct BnFwd {
    /// Input.
    pub x: Loc,
    /// Output (may equal nothing else).
    pub y: Loc,
    /// γ (C) then β (C).
    pub gb: Loc,
    /// Batch statistics out (training): mean (C) then 1/σ (C).
    pub stats: Loc,
    /// Batch or running statistics.
    pub mode: Mode,
    /// Running mean (C) then variance (C).
    pub running: Loc,
    /// Where the updated running statistics go (training, unperturbed pass).
    pub pending: Option<Loc>,
    /// Activation applied to the output (identity for none).
    pub act: Act,
}

/// Arguments of [`Ops::bn_backward`] (training mode).
#[derive(Clone, Copy, Debug)]
pub struct BnBwd<F> {
    /// Input of the forward pass.
    pub x: Loc,
    /// Gradient with respect to the output.
    pub dy: Loc,
    /// γ then β.
    pub gb: Loc,
    /// Batch statistics of the forward pass.
    pub stats: Loc,
    /// Input gradient, and whether to add to it.
    pub dx: Option<(Loc, bool)>,
    /// Parameter gradients (γ then β): out ← β·out + α·grad.
    pub dp: Option<(Loc, F, F)>,
}

/// Arguments of [`Ops::bn_r_forward`].
#[derive(Clone, Copy, Debug)]
pub struct BnRFwd {
    /// Input of the forward pass.
    pub x: Loc,
    /// R{x} (`None`: zero).
    pub rx: Option<Loc>,
    /// γ then β.
    pub gb: Loc,
    /// The direction's γ then β.
    pub vgb: Loc,
    /// Batch statistics.
    pub stats: Loc,
    /// R{y} out.
    pub ry: Loc,
    /// Out: mean(R{x}) (C) then mean(x̂·R{x}) (C).
    pub rstats: Loc,
}

/// Arguments of [`Ops::bn_r_backward`].
#[derive(Clone, Copy, Debug)]
pub struct BnRBwd {
    /// Input of the forward pass.
    pub x: Loc,
    /// R{x} (`None`: zero).
    pub rx: Option<Loc>,
    /// Gradient with respect to the output.
    pub dy: Loc,
    /// Its R-derivative.
    pub rdy: Loc,
    /// γ then β.
    pub gb: Loc,
    /// The direction's γ then β.
    pub vgb: Loc,
    /// Batch statistics.
    pub stats: Loc,
    /// R-forward statistics.
    pub rstats: Loc,
    /// R{dx}, and whether to add to it.
    pub rdx: Option<(Loc, bool)>,
    /// Out: R{dγ} (C) then R{dβ} (C).
    pub rsums: Loc,
}

/// The primitives of the layer maths. Every location names a buffer of
/// the current pass; lengths are in scalars. A primitive with an output
/// and inputs in the same memory never has them overlap (in-place
/// primitives take one location that is read and written).
pub trait Ops<F: Real> {
    /// The loss as this backend holds it after [`Ops::loss_grad`]: the
    /// value itself on a CPU; on a GPU, the device location it was
    /// written to, so that a pass never waits for the device to return
    /// it (the objective reads it back when, and if, it is wanted).
    type Scalar: Copy;
    /// C ← α·op(A)·op(B) + β·C, row-major (see [`crate::serial::vecops::gemm`]).
    #[allow(clippy::too_many_arguments)]
    fn gemm(
        &mut self,
        ta: bool,
        tb: bool,
        m: usize,
        n: usize,
        k: usize,
        alpha: F,
        a: Loc,
        b: Loc,
        beta: F,
        c: Loc,
    );
    /// In place on an N×C×HW block: z ← σ(z + bias\[ch\]) (bias optional).
    fn bias_act(&mut self, z: Loc, bias: Option<Loc>, n: usize, c: usize, hw: usize, act: Act);
    /// y ← σ(x) (out of place).
    fn act_map(&mut self, y: Loc, x: Loc, len: usize, act: Act);
    /// δ ← δ ⊙ σ'(a), in place.
    fn act_backward(&mut self, delta: Loc, a: Loc, len: usize, act: Act);
    /// R{a} ← σ'(a) ⊙ R{z}.
    fn r_act(&mut self, ra: Loc, rz: Loc, a: Loc, len: usize, act: Act);
    /// R{δz} ← κ(a)·R{z}⊙δz + σ'(a)⊙R{δa}, in place on `rd`.
    fn r_act_backward(&mut self, rd: Loc, rz: Loc, a: Loc, dz: Loc, len: usize, act: Act);
    /// out ← β·out + α·(per-channel sums of an N×C×HW block).
    #[allow(clippy::too_many_arguments)]
    fn chan_sum(&mut self, out: Loc, m: Loc, n: usize, c: usize, hw: usize, alpha: F, beta: F);
    /// y ← β·y + α·conv(x, w).
    fn conv(&mut self, g: &ConvGeom, x: Loc, w: Loc, y: Loc, alpha: F, beta: F);
    /// dx ← β·dx + α·convᵀ(dy, w).
    fn conv_backward_data(&mut self, g: &ConvGeom, dy: Loc, w: Loc, dx: Loc, alpha: F, beta: F);
    /// dw ← β·dw + α·(x ⋆ dy).
    fn conv_backward_filter(&mut self, g: &ConvGeom, x: Loc, dy: Loc, dw: Loc, alpha: F, beta: F);
    /// Batch-norm forward (see [`crate::serial::norm`]).
    fn bn_forward(&mut self, g: &BnGeom, a: &BnFwd);
    /// Batch-norm backward, training mode.
    fn bn_backward(&mut self, g: &BnGeom, a: &BnBwd<F>);
    /// Batch-norm R-forward.
    fn bn_r_forward(&mut self, g: &BnGeom, a: &BnRFwd);
    /// Batch-norm R-backward.
    fn bn_r_backward(&mut self, g: &BnGeom, a: &BnRBwd);
    /// y ← pool(x).
    fn pool(&mut self, g: &PoolGeom, x: Loc, y: Loc);
    /// dx (+)= poolᵀ(dy) (`x`: the forward input, for max pooling).
    fn pool_backward(&mut self, g: &PoolGeom, x: Loc, dy: Loc, dx: Loc, acc: bool);
    /// R{y} from R{x} (max pooling: at the arg-max of `x`).
    fn pool_r(&mut self, g: &PoolGeom, x: Loc, rx: Loc, ry: Loc);
    /// y ← a + b.
    fn add(&mut self, y: Loc, a: Loc, b: Loc, len: usize);
    /// dst ← src, or dst ← dst + src when `acc`.
    fn acc(&mut self, dst: Loc, src: Loc, len: usize, acc: bool);
    /// out ← β·out + α·src (β = 0 overwrites).
    fn axpby(&mut self, out: Loc, src: Loc, len: usize, alpha: F, beta: F);
    /// Mean loss of the B × K outputs `out` against the pass's targets,
    /// and, when `delta` is given, ∂L/∂out into it.
    fn loss_grad(
        &mut self,
        loss: Loss,
        out: Loc,
        rows: usize,
        k: usize,
        delta: Option<Loc>,
    ) -> Self::Scalar;
    /// h ← H_loss·r.
    fn loss_hvp(&mut self, loss: Loss, out: Loc, rows: usize, k: usize, r: Loc, h: Loc);
}

/// The memories of one pass on a CPU, as slices.
pub struct Bound<'a, F> {
    /// Batch inputs.
    pub x: &'a [F],
    /// θ.
    pub theta: &'a [F],
    /// The HVP direction (`None`: read it from `out`, in place).
    pub v: Option<&'a [F]>,
    /// The parameter-sized output.
    pub out: Option<&'a mut [F]>,
    /// The workspace.
    pub ws: &'a mut [F],
    /// The running statistics.
    pub state: &'a mut [F],
    /// The frozen parameters (see [`Mem::Frozen`]; empty when none).
    pub frozen: &'a [F],
    /// The batch's targets.
    pub targets: Targets<'a, F>,
}

/// An internal invariant of the planned layout does not hold: a bug in
/// the layer code, not something input can cause.
#[cold]
#[inline(never)]
fn layout_bug(what: &str) -> ! {
    panic!("fdgr-kernel: buffer layout bug: {what}")
}

const MAX_GAPS: usize = 8;

/// The read-only pieces of a memory between its carved-out writes.
struct Gaps<'s, F> {
    gaps: [(usize, &'s [F]); MAX_GAPS],
    n: usize,
}

impl<'s, F> Gaps<'s, F> {
    fn get(&self, off: usize, len: usize) -> &'s [F] {
        for &(start, g) in &self.gaps[..self.n] {
            if off >= start && off + len <= start + g.len() {
                return &g[off - start..off - start + len];
            }
        }
        layout_bug("a read overlaps a write or leaves its memory")
    }
}

/// Splits `buf` at the writes `w` that fall in `mem` (disjoint ranges),
/// handing each write its mutable piece and returning the rest.
fn carve<'s, F, const W: usize>(
    buf: &'s mut [F],
    mem: Mem,
    w: &[(Loc, usize); W],
    outs: &mut [Option<&'s mut [F]>; W],
) -> Gaps<'s, F> {
    let mut order = [0usize; W];
    let mut k = 0;
    for (j, (l, _)) in w.iter().enumerate() {
        if l.mem == mem {
            // insertion by offset
            let mut p = k;
            while p > 0 && w[order[p - 1]].0.off > l.off {
                order[p] = order[p - 1];
                p -= 1;
            }
            order[p] = j;
            k += 1;
        }
    }
    let mut gaps = Gaps {
        gaps: [(0, &[][..]); MAX_GAPS],
        n: 0,
    };
    let mut rest = buf;
    let mut pos = 0;
    for &j in &order[..k] {
        let (l, len) = w[j];
        if l.off < pos || l.off + len - pos > rest.len() || gaps.n + 1 >= MAX_GAPS {
            layout_bug("overlapping or out-of-range writes");
        }
        let (gap, tail) = core::mem::take(&mut rest).split_at_mut(l.off - pos);
        gaps.gaps[gaps.n] = (pos, gap);
        gaps.n += 1;
        let (piece, tail) = tail.split_at_mut(len);
        outs[j] = Some(piece);
        rest = tail;
        pos = l.off + len;
    }
    gaps.gaps[gaps.n] = (pos, rest);
    gaps.n += 1;
    gaps
}

impl<F: Real> Bound<'_, F> {
    /// Resolves `R` read-only and `W` writable locations (with lengths)
    /// to slices. Writes must not overlap each other or any read in the
    /// same memory.
    pub fn bind<const R: usize, const W: usize>(
        &mut self,
        r: [(Loc, usize); R],
        w: [(Loc, usize); W],
    ) -> ([&[F]; R], [&mut [F]; W]) {
        let in_place = self.v.is_none();
        let norm = |l: Loc| {
            if l.mem == Mem::V && in_place {
                Loc::new(Mem::Out, l.off)
            } else {
                l
            }
        };
        let w = w.map(|(l, n)| (norm(l), n));
        let x: &[F] = self.x;
        let theta: &[F] = self.theta;
        let frozen: &[F] = self.frozen;
        let v: Option<&[F]> = self.v;
        let mut outs: [Option<&mut [F]>; W] = [const { None }; W];
        let ws = carve(&mut *self.ws, Mem::Ws, &w, &mut outs);
        let st = carve(&mut *self.state, Mem::State, &w, &mut outs);
        let out = match self.out.as_deref_mut() {
            Some(o) => Some(carve(o, Mem::Out, &w, &mut outs)),
            None => None,
        };
        let reads = r.map(|(l, n)| {
            let l = norm(l);
            let whole = |s: &'_ [F]| -> usize { s.len() };
            match l.mem {
                Mem::X if l.off + n <= whole(x) => &x[l.off..l.off + n],
                Mem::Theta if l.off + n <= whole(theta) => &theta[l.off..l.off + n],
                Mem::Frozen if l.off + n <= whole(frozen) => &frozen[l.off..l.off + n],
                Mem::V => match v {
                    Some(v) if l.off + n <= v.len() => &v[l.off..l.off + n],
                    _ => layout_bug("direction read out of range"),
                },
                Mem::Ws => ws.get(l.off, n),
                Mem::State => st.get(l.off, n),
                Mem::Out => match &out {
                    Some(o) => o.get(l.off, n),
                    None => layout_bug("no output vector bound"),
                },
                _ => layout_bug("read out of range"),
            }
        });
        let writes = outs.map(|o| match o {
            Some(s) => s,
            None => layout_bug("a write names an unbound memory"),
        });
        (reads, writes)
    }
}

/// The CPU backend of [`Ops`]: the bound memories of one pass and an
/// executor of slice functions.
pub struct CpuOps<'a, F, E> {
    /// The executor (serial loops or the host's parallel ones).
    pub exec: &'a mut E,
    /// The memories.
    pub mem: Bound<'a, F>,
}

impl<F: Real, E: Exec<F>> Ops<F> for CpuOps<'_, F, E> {
    type Scalar = F;

    fn gemm(
        &mut self,
        ta: bool,
        tb: bool,
        m: usize,
        n: usize,
        k: usize,
        alpha: F,
        a: Loc,
        b: Loc,
        beta: F,
        c: Loc,
    ) {
        let ([a, b], [c]) = self.mem.bind([(a, m * k), (b, k * n)], [(c, m * n)]);
        self.exec.gemm(ta, tb, m, n, k, alpha, a, b, beta, c);
    }

    fn bias_act(&mut self, z: Loc, bias: Option<Loc>, n: usize, c: usize, hw: usize, act: Act) {
        match bias {
            Some(bl) => {
                let ([b], [z]) = self.mem.bind([(bl, c)], [(z, n * c * hw)]);
                self.exec.bias_act(z, Some(b), c, hw, act);
            }
            None => {
                let ([], [z]) = self.mem.bind([], [(z, n * c * hw)]);
                self.exec.bias_act(z, None, c, hw, act);
            }
        }
    }

    fn act_map(&mut self, y: Loc, x: Loc, len: usize, act: Act) {
        let ([x], [y]) = self.mem.bind([(x, len)], [(y, len)]);
        self.exec.act_map(y, x, act);
    }

    fn act_backward(&mut self, delta: Loc, a: Loc, len: usize, act: Act) {
        let ([a], [d]) = self.mem.bind([(a, len)], [(delta, len)]);
        self.exec.act_backward(d, a, act);
    }

    fn r_act(&mut self, ra: Loc, rz: Loc, a: Loc, len: usize, act: Act) {
        let ([rz, a], [ra]) = self.mem.bind([(rz, len), (a, len)], [(ra, len)]);
        self.exec.r_act(ra, rz, a, act);
    }

    fn r_act_backward(&mut self, rd: Loc, rz: Loc, a: Loc, dz: Loc, len: usize, act: Act) {
        let ([rz, a, dz], [rd]) = self.mem.bind([(rz, len), (a, len), (dz, len)], [(rd, len)]);
        self.exec.r_act_backward(rd, rz, a, dz, act);
    }

    fn chan_sum(&mut self, out: Loc, m: Loc, n: usize, c: usize, hw: usize, alpha: F, beta: F) {
        let ([m], [o]) = self.mem.bind([(m, n * c * hw)], [(out, c)]);
        self.exec.chan_sum(o, m, c, hw, alpha, beta);
    }

    fn conv(&mut self, g: &ConvGeom, x: Loc, w: Loc, y: Loc, alpha: F, beta: F) {
        let ([x, w], [y]) = self
            .mem
            .bind([(x, g.x_len()), (w, g.w_len())], [(y, g.y_len())]);
        self.exec.conv_forward(g, x, w, y, alpha, beta);
    }

    fn conv_backward_data(&mut self, g: &ConvGeom, dy: Loc, w: Loc, dx: Loc, alpha: F, beta: F) {
        let ([dy, w], [dx]) = self
            .mem
            .bind([(dy, g.y_len()), (w, g.w_len())], [(dx, g.x_len())]);
        self.exec.conv_backward_data(g, dy, w, dx, alpha, beta);
    }

    fn conv_backward_filter(&mut self, g: &ConvGeom, x: Loc, dy: Loc, dw: Loc, alpha: F, beta: F) {
        let ([x, dy], [dw]) = self
            .mem
            .bind([(x, g.x_len()), (dy, g.y_len())], [(dw, g.w_len())]);
        self.exec.conv_backward_filter(g, x, dy, dw, alpha, beta);
    }

    fn bn_forward(&mut self, g: &BnGeom, a: &BnFwd) {
        let (len, c) = (g.len(), g.c);
        let eps = F::from_f64(norm::BN_EPS);
        match a.mode {
            Mode::Eval => {
                let ([x, gb, run], [y]) = self.mem.bind(
                    [(a.x, len), (a.gb, 2 * c), (a.running, 2 * c)],
                    [(a.y, len)],
                );
                self.exec.bn_forward_eval(g, x, y, gb, run, eps, a.act);
            }
            Mode::Train => {
                let momentum = F::from_f64(norm::BN_MOMENTUM);
                match a.pending {
                    Some(p) => {
                        let ([x, gb, run], [y, stats, out]) = self.mem.bind(
                            [(a.x, len), (a.gb, 2 * c), (a.running, 2 * c)],
                            [(a.y, len), (a.stats, 2 * c), (p, 2 * c)],
                        );
                        let pending = Pending {
                            running: run,
                            out,
                            momentum,
                        };
                        self.exec
                            .bn_forward_train(g, x, y, gb, stats, eps, a.act, Some(pending));
                    }
                    None => {
                        let ([x, gb], [y, stats]) = self
                            .mem
                            .bind([(a.x, len), (a.gb, 2 * c)], [(a.y, len), (a.stats, 2 * c)]);
                        self.exec
                            .bn_forward_train(g, x, y, gb, stats, eps, a.act, None);
                    }
                }
            }
        }
    }

    fn bn_backward(&mut self, g: &BnGeom, a: &BnBwd<F>) {
        let (len, c) = (g.len(), g.c);
        let reads = [(a.x, len), (a.dy, len), (a.gb, 2 * c), (a.stats, 2 * c)];
        match (a.dx, a.dp) {
            (Some((dx, acc)), Some((dp, alpha, beta))) => {
                let ([x, dy, gb, st], [dx, out]) = self.mem.bind(reads, [(dx, len), (dp, 2 * c)]);
                let dx = Some(Dx { dx, acc });
                let dp = Some(Dp { out, alpha, beta });
                self.exec.bn_backward(g, x, dy, gb, st, dx, dp);
            }
            (Some((dx, acc)), None) => {
                let ([x, dy, gb, st], [dx]) = self.mem.bind(reads, [(dx, len)]);
                self.exec
                    .bn_backward(g, x, dy, gb, st, Some(Dx { dx, acc }), None);
            }
            (None, Some((dp, alpha, beta))) => {
                let ([x, dy, gb, st], [out]) = self.mem.bind(reads, [(dp, 2 * c)]);
                let dp = Some(Dp { out, alpha, beta });
                self.exec.bn_backward(g, x, dy, gb, st, None, dp);
            }
            (None, None) => {}
        }
    }

    fn bn_r_forward(&mut self, g: &BnGeom, a: &BnRFwd) {
        let (len, c) = (g.len(), g.c);
        let writes = [(a.ry, len), (a.rstats, 2 * c)];
        match a.rx {
            Some(rx) => {
                let ([x, rx, gb, vgb, st], [ry, rs]) = self.mem.bind(
                    [
                        (a.x, len),
                        (rx, len),
                        (a.gb, 2 * c),
                        (a.vgb, 2 * c),
                        (a.stats, 2 * c),
                    ],
                    writes,
                );
                self.exec.bn_r_forward(g, x, Some(rx), gb, vgb, st, ry, rs);
            }
            None => {
                let ([x, gb, vgb, st], [ry, rs]) = self.mem.bind(
                    [(a.x, len), (a.gb, 2 * c), (a.vgb, 2 * c), (a.stats, 2 * c)],
                    writes,
                );
                self.exec.bn_r_forward(g, x, None, gb, vgb, st, ry, rs);
            }
        }
    }

    fn bn_r_backward(&mut self, g: &BnGeom, a: &BnRBwd) {
        let (len, c) = (g.len(), g.c);
        // R{x} may be absent: bind it as an empty read then.
        let (rxl, rxn) = match a.rx {
            Some(l) => (l, len),
            None => (a.x, 0),
        };
        let reads = [
            (a.x, len),
            (rxl, rxn),
            (a.dy, len),
            (a.rdy, len),
            (a.gb, 2 * c),
            (a.vgb, 2 * c),
            (a.stats, 2 * c),
            (a.rstats, 2 * c),
        ];
        let has_rx = a.rx.is_some();
        match a.rdx {
            Some((rdx, acc)) => {
                let ([x, rx, dy, rdy, gb, vgb, stats, rstats], [dx, rsums]) =
                    self.mem.bind(reads, [(rdx, len), (a.rsums, 2 * c)]);
                let args = RBack {
                    x,
                    rx: if has_rx { Some(rx) } else { None },
                    dy,
                    rdy,
                    gb,
                    vgb,
                    stats,
                    rstats,
                };
                self.exec
                    .bn_r_backward(g, &args, Some(Dx { dx, acc }), rsums);
            }
            None => {
                let ([x, rx, dy, rdy, gb, vgb, stats, rstats], [rsums]) =
                    self.mem.bind(reads, [(a.rsums, 2 * c)]);
                let args = RBack {
                    x,
                    rx: if has_rx { Some(rx) } else { None },
                    dy,
                    rdy,
                    gb,
                    vgb,
                    stats,
                    rstats,
                };
                self.exec.bn_r_backward(g, &args, None, rsums);
            }
        }
    }

    fn pool(&mut self, g: &PoolGeom, x: Loc, y: Loc) {
        let ([x], [y]) = self.mem.bind([(x, g.x_len())], [(y, g.y_len())]);
        self.exec.pool_forward(g, x, y);
    }

    fn pool_backward(&mut self, g: &PoolGeom, x: Loc, dy: Loc, dx: Loc, acc: bool) {
        let ([x, dy], [dx]) = self
            .mem
            .bind([(x, g.x_len()), (dy, g.y_len())], [(dx, g.x_len())]);
        self.exec.pool_backward(g, x, dy, dx, acc);
    }

    fn pool_r(&mut self, g: &PoolGeom, x: Loc, rx: Loc, ry: Loc) {
        let ([x, rx], [ry]) = self
            .mem
            .bind([(x, g.x_len()), (rx, g.x_len())], [(ry, g.y_len())]);
        self.exec.pool_r_forward(g, x, rx, ry);
    }

    fn add(&mut self, y: Loc, a: Loc, b: Loc, len: usize) {
        let ([a, b], [y]) = self.mem.bind([(a, len), (b, len)], [(y, len)]);
        self.exec.add(y, a, b);
    }

    fn acc(&mut self, dst: Loc, src: Loc, len: usize, acc: bool) {
        let ([s], [d]) = self.mem.bind([(src, len)], [(dst, len)]);
        if acc {
            self.exec.axpy(d, F::ONE, s);
        } else {
            d.copy_from_slice(s);
        }
    }

    fn axpby(&mut self, out: Loc, src: Loc, len: usize, alpha: F, beta: F) {
        let ([s], [o]) = self.mem.bind([(src, len)], [(out, len)]);
        self.exec.axpby(o, s, alpha, beta);
    }

    fn loss_grad(&mut self, loss: Loss, out: Loc, rows: usize, k: usize, delta: Option<Loc>) -> F {
        let t = self.mem.targets;
        match delta {
            Some(d) => {
                let ([o], [d]) = self.mem.bind([(out, rows * k)], [(d, rows * k)]);
                loss::loss_grad(loss, o, &t, k, Some(d))
            }
            None => {
                let ([o], []) = self.mem.bind([(out, rows * k)], []);
                loss::loss_grad(loss, o, &t, k, None)
            }
        }
    }

    fn loss_hvp(&mut self, loss: Loss, out: Loc, rows: usize, k: usize, r: Loc, h: Loc) {
        let n = rows * k;
        let ([o, r], [h]) = self.mem.bind([(out, n), (r, n)], [(h, n)]);
        loss::loss_hvp(loss, o, k, r, h);
    }
}

/// How dense maths is executed on CPU memory: the matrix product and the
/// parameter-vector operations. The defaults are the serial reference loops
/// of [`crate::serial::vecops`]; a host backend may run the same functions on
/// chunks in parallel or call a tuned GEMM.
pub trait Exec<F: Real> {
    /// C ← α·op(A)·op(B) + β·C (see [`crate::serial::vecops::gemm`]).
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
        crate::serial::vecops::gemm(ta, tb, m, n, k, alpha, a, b, beta, c)
    }
    /// y ← y + a·x.
    fn axpy(&mut self, y: &mut [F], a: F, x: &[F]) {
        crate::serial::vecops::axpy(y, a, x)
    }
    /// w ← x + a·y.
    fn waxpy(&mut self, w: &mut [F], x: &[F], a: F, y: &[F]) {
        crate::serial::vecops::waxpy(w, x, a, y)
    }
    /// x ← a·x.
    fn scale(&mut self, x: &mut [F], a: F) {
        crate::serial::vecops::scale(x, a)
    }
    /// xᵀy.
    fn dot(&mut self, x: &[F], y: &[F]) -> F {
        crate::serial::vecops::dot(x, y)
    }
    /// True when every entry is finite.
    fn all_finite(&mut self, x: &[F]) -> bool {
        crate::serial::vecops::all_finite(x)
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
        crate::serial::vecops::axpby(y, x, alpha, beta)
    }
    /// y ← a + b.
    fn add(&mut self, y: &mut [F], a: &[F], b: &[F]) {
        crate::serial::vecops::add(y, a, b)
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

/// The serial reference executor: the loops of [`crate::serial::vecops`] as they
/// are. Deterministic and identical on every target.
#[derive(Clone, Copy, Debug, Default)]
pub struct Serial;

impl<F: Real> Exec<F> for Serial {}
