//! The host's parallel execution of the layer primitives beyond dense
//! products: convolution by im2col + GEMM (one sample per task; the input
//! gradient of a stride-1 "same" convolution as the forward convolution
//! of dy with the flipped filter), batch norm and pooling with the
//! kernel's own per-channel and per-plane functions run in parallel, and
//! the elementwise primitives on chunks.
//!
//! The arithmetic of every element is the kernel's (`fdgr_kernel::serial`,
//! `fdgr_kernel::act`, `fdgr_kernel::vecops`), except for the order of
//! long sums: convolution sums in a GEMM's order, and batch-norm
//! statistics and bias gradients in interleaved partial sums
//! (`norm::LANES`), so they match the serial loops to rounding.
//!
//! Results are deterministic for a given thread count: every output is
//! written by one task in a fixed order, and the weight gradient of a
//! convolution sums per-chunk partials in chunk order. Scratch buffers
//! come from a pool, so a step allocates nothing once they have grown.

use fdgr_kernel::act::{self, Act};
use fdgr_kernel::serial::conv::{self, col2im_add, im2col_ld, ConvGeom};
use fdgr_kernel::serial::norm::{self, BnGeom, Dp, Dx, Pending, RBack, RSums};
use fdgr_kernel::serial::pool::{self, PoolGeom};
use fdgr_kernel::{vecops, Real};
use rayon::prelude::*;
use std::sync::Mutex;

/// Scalars with a pool of reusable scratch buffers (so a training step
/// allocates nothing once the buffers have grown to their sizes).
pub trait Scratch: Real {
    /// The pool.
    fn pool() -> &'static Mutex<Vec<Vec<Self>>>;
}

impl Scratch for f32 {
    fn pool() -> &'static Mutex<Vec<Vec<f32>>> {
        static P: Mutex<Vec<Vec<f32>>> = Mutex::new(Vec::new());
        &P
    }
}

impl Scratch for f64 {
    fn pool() -> &'static Mutex<Vec<Vec<f64>>> {
        static P: Mutex<Vec<Vec<f64>>> = Mutex::new(Vec::new());
        &P
    }
}

/// A scratch buffer of `n` values (contents unspecified), returned to the
/// pool when dropped. Buffers keep their full length in the pool, so
/// taking one never fills it (only growing a buffer does).
pub struct Buf<T: Scratch>(Vec<T>, usize);

impl<T: Scratch> Buf<T> {
    /// Takes a buffer of `n` values from the pool.
    pub fn take(n: usize) -> Self {
        let mut v = match T::pool().lock() {
            Ok(mut p) => p.pop().unwrap_or_default(),
            Err(_) => Vec::new(),
        };
        if v.len() < n {
            v.resize(n, T::ZERO);
        }
        Buf(v, n)
    }
}

impl<T: Scratch> std::ops::Deref for Buf<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        &self.0[..self.1]
    }
}

impl<T: Scratch> std::ops::DerefMut for Buf<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        &mut self.0[..self.1]
    }
}

impl<T: Scratch> Drop for Buf<T> {
    fn drop(&mut self) {
        if let Ok(mut p) = T::pool().lock() {
            p.push(std::mem::take(&mut self.0));
        }
    }
}

/// A single-threaded row-major GEMM on the `gemm` crate (the kernel's
/// convention: C ← α·op(A)·op(B) + β·C); callers parallelize around it.
#[allow(clippy::too_many_arguments)]
pub fn gemm1<T: Real>(
    ta: bool,
    tb: bool,
    m: usize,
    n: usize,
    k: usize,
    alpha: T,
    a: &[T],
    b: &[T],
    beta: T,
    c: &mut [T],
) {
    crate::cpu::fast_gemm(1, ta, tb, m, n, k, alpha, a, b, beta, c)
}

/// A matrix operand of [`gemm_s`]: values, row stride, column stride.
pub type Mat<'a, T> = (&'a [T], usize, usize);

/// C ← α·A·B + β·C on the `gemm` crate, single-threaded, with strided
/// operands: A is m×k, B is k×n, C is m×n with rows `ldc` apart (β = 0
/// overwrites C).
#[allow(clippy::too_many_arguments)]
pub fn gemm_s<T: Real>(
    m: usize,
    n: usize,
    k: usize,
    alpha: T,
    (a, ars, acs): Mat<'_, T>,
    (b, brs, bcs): Mat<'_, T>,
    beta: T,
    c: &mut [T],
    ldc: usize,
) {
    if m == 0 || n == 0 {
        return;
    }
    let end =
        |rows: usize, cols: usize, rs: usize, cs: usize| (rows - 1) * rs + (cols - 1) * cs + 1;
    if k == 0 {
        for row in c.chunks_mut(ldc).take(m) {
            vecops::scale_or_zero(&mut row[..n], beta);
        }
        return;
    }
    assert!(
        a.len() >= end(m, k, ars, acs)
            && b.len() >= end(k, n, brs, bcs)
            && c.len() >= end(m, n, ldc, 1),
        "gemm operand sizes"
    );
    // SAFETY: the assert above bounds every index the strides reach; c
    // does not alias a or b (distinct borrows). The crate computes
    // dst ← α'·dst + β'·lhs·rhs, so the kernel's (α, β) go in as (β, α).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            ldc as isize,
            beta != T::ZERO,
            a.as_ptr(),
            acs as isize,
            ars as isize,
            b.as_ptr(),
            bcs as isize,
            brs as isize,
            beta,
            alpha,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

/// The row stride of an im2col buffer with `ohw` columns: `ohw`, padded
/// when a multiple of 256 values (1 KiB), so that the GEMMs' walks down a
/// column do not keep hitting the same cache sets.
fn col_ld(ohw: usize) -> usize {
    if ohw >= 256 && ohw % 256 == 0 {
        ohw + 16
    } else {
        ohw
    }
}

/// The one-sample geometry of `g`.
fn one(g: &ConvGeom) -> ConvGeom {
    ConvGeom { n: 1, ..*g }
}

/// Whether the convolution reads its input as is (1×1, stride 1, no
/// padding): then the input plane block is the im2col matrix.
fn pointwise(g: &ConvGeom) -> bool {
    g.k == 1 && g.stride == 1 && g.pad == 0
}

/// y ← β·y + α·conv(x, w), one sample per task.
pub fn conv_forward<T: Scratch>(g: &ConvGeom, x: &[T], w: &[T], y: &mut [T], alpha: T, beta: T) {
    let (cg, kg) = (g.cg(), g.kg());
    let (hw, ohw, ckk) = (g.h * g.w, g.oh * g.ow, g.cg() * g.k * g.k);
    let g1 = one(g);
    let pw = pointwise(g);
    let ld = col_ld(ohw);
    y[..g.y_len()]
        .par_chunks_mut(g.k_out * ohw)
        .zip(x[..g.x_len()].par_chunks(g.c * hw))
        .for_each_init(
            || Buf::<T>::take(if pw { 0 } else { ckk * ld }),
            |col, (yn, xn)| {
                for grp in 0..g.groups {
                    let wg = &w[grp * kg * ckk..(grp + 1) * kg * ckk];
                    let yg = &mut yn[grp * kg * ohw..(grp + 1) * kg * ohw];
                    if pw {
                        let xg = &xn[grp * cg * hw..(grp + 1) * cg * hw];
                        gemm1(false, false, kg, ohw, ckk, alpha, wg, xg, beta, yg);
                    } else {
                        im2col_ld(&g1, xn, 0, grp, col, ld);
                        let (a, b) = ((wg, ckk, 1), (&col[..], ld, 1));
                        gemm_s(kg, ohw, ckk, alpha, a, b, beta, yg, ohw);
                    }
                }
            },
        );
}

/// dx ← β·dx + α·convᵀ(dy, w), one sample per task. A stride-1
/// convolution that keeps the plane size runs as the forward convolution
/// of dy with the flipped filter (no col2im); others multiply Wᵀ·dy and
/// add the columns back (col2im).
pub fn conv_backward_data<T: Scratch>(
    g: &ConvGeom,
    dy: &[T],
    w: &[T],
    dx: &mut [T],
    alpha: T,
    beta: T,
) {
    let (cg, kg) = (g.cg(), g.kg());
    let (hw, ohw, ckk) = (g.h * g.w, g.oh * g.ow, g.cg() * g.k * g.k);
    if !pointwise(g) && hw <= ohw {
        if let Some(t) = conv::transposed(g) {
            let mut wt = Buf::<T>::take(g.w_len());
            conv::flip_filter(g, w, &mut wt);
            return conv_forward(&t, dy, &wt, dx, alpha, beta);
        }
    }
    let g1 = one(g);
    let pw = pointwise(g);
    dx[..g.x_len()]
        .par_chunks_mut(g.c * hw)
        .zip(dy[..g.y_len()].par_chunks(g.k_out * ohw))
        .for_each_init(
            || Buf::<T>::take(if pw { 0 } else { ckk * ohw }),
            |col, (dxn, dyn_)| {
                if pw {
                    for grp in 0..g.groups {
                        let wg = &w[grp * kg * ckk..(grp + 1) * kg * ckk];
                        let dyg = &dyn_[grp * kg * ohw..(grp + 1) * kg * ohw];
                        let dxg = &mut dxn[grp * cg * hw..(grp + 1) * cg * hw];
                        gemm1(true, false, ckk, ohw, kg, alpha, wg, dyg, beta, dxg);
                    }
                    return;
                }
                vecops::scale_or_zero(dxn, beta);
                for grp in 0..g.groups {
                    let wg = &w[grp * kg * ckk..(grp + 1) * kg * ckk];
                    let dyg = &dyn_[grp * kg * ohw..(grp + 1) * kg * ohw];
                    gemm1(true, false, ckk, ohw, kg, alpha, wg, dyg, T::ZERO, col);
                    col2im_add(&g1, col, 0, grp, dxn);
                }
            },
        );
}

/// dw ← β·dw + α·Σ_batch (x ⋆ dy): the batch is split into one contiguous
/// chunk per thread, each summing its samples into its own partial; the
/// partials are added in chunk order.
#[allow(clippy::too_many_arguments)]
pub fn conv_backward_filter<T: Scratch>(
    threads: usize,
    g: &ConvGeom,
    x: &[T],
    dy: &[T],
    dw: &mut [T],
    alpha: T,
    beta: T,
) {
    let (cg, kg) = (g.cg(), g.kg());
    let (hw, ohw, ckk) = (g.h * g.w, g.oh * g.ow, g.cg() * g.k * g.k);
    let wl = g.w_len();
    let chunks = threads.clamp(1, g.n.max(1));
    let per = g.n.div_ceil(chunks);
    let g1 = one(g);
    let ld = col_ld(ohw);
    let mut partials = Buf::<T>::take(chunks * wl);
    partials
        .par_chunks_mut(wl)
        .enumerate()
        .for_each(|(t, part)| {
            let mut col = Buf::<T>::take(if pointwise(g) { 0 } else { ckk * ld });
            let (n0, n1) = (t * per, ((t + 1) * per).min(g.n));
            if n0 >= n1 {
                part.fill(T::ZERO);
                return;
            }
            for n in n0..n1 {
                let xn = &x[n * g.c * hw..(n + 1) * g.c * hw];
                let dyn_ = &dy[n * g.k_out * ohw..(n + 1) * g.k_out * ohw];
                let b = if n == n0 { T::ZERO } else { T::ONE };
                for grp in 0..g.groups {
                    let dyg = &dyn_[grp * kg * ohw..(grp + 1) * kg * ohw];
                    let pg = &mut part[grp * kg * ckk..(grp + 1) * kg * ckk];
                    if pointwise(g) {
                        let xg = &xn[grp * cg * hw..(grp + 1) * cg * hw];
                        gemm1(false, true, kg, ckk, ohw, T::ONE, dyg, xg, b, pg);
                    } else {
                        im2col_ld(&g1, xn, 0, grp, &mut col, ld);
                        let (a, c) = ((dyg, ohw, 1), (&col[..], 1, ld));
                        gemm_s(kg, ckk, ohw, T::ONE, a, c, b, pg, ckk);
                    }
                }
            }
        });
    let dw = &mut dw[..wl];
    vecops::scale_or_zero(dw, beta);
    for part in partials.chunks(wl) {
        vecops::axpy(dw, alpha, part);
    }
}

/// Training-mode batch norm forward: statistics per channel in parallel,
/// then each sample normalized in parallel.
#[allow(clippy::too_many_arguments)]
pub fn bn_forward_train<T: Scratch>(
    g: &BnGeom,
    x: &[T],
    y: &mut [T],
    gb: &[T],
    stats: &mut [T],
    eps: T,
    act: Act,
    pending: Option<Pending<'_, T>>,
) {
    let c = g.c;
    let (mean, invstd) = stats[..2 * c].split_at_mut(c);
    match pending {
        Some(p) => {
            let (pm, pv) = p.out[..2 * c].split_at_mut(c);
            let (run, mom) = (p.running, p.momentum);
            mean.par_iter_mut()
                .zip(invstd.par_iter_mut())
                .zip(pm.par_iter_mut().zip(pv.par_iter_mut()))
                .enumerate()
                .for_each(|(ch, ((m, i), (rm, rv)))| {
                    let (mu, is, m2) = norm::channel_stats_blocked(g, x, ch, eps);
                    (*m, *i) = (mu, is);
                    (*rm, *rv) = norm::running_update(g, run, ch, mu, m2, mom);
                });
        }
        None => {
            mean.par_iter_mut()
                .zip(invstd.par_iter_mut())
                .enumerate()
                .for_each(|(ch, (m, i))| {
                    let (mu, is, _) = norm::channel_stats_blocked(g, x, ch, eps);
                    (*m, *i) = (mu, is);
                });
        }
    }
    let (mean, invstd): (&[T], &[T]) = (mean, invstd);
    let (gamma, beta) = gb.split_at(c);
    per_sample(g, y, |n, yn| {
        with_act(act, |act| {
            for ch in 0..c {
                let o = (n * c + ch) * g.hw;
                let r = ch * g.hw..(ch + 1) * g.hw;
                norm::normalize_plane(
                    &x[o..o + g.hw],
                    &mut yn[r],
                    gamma[ch],
                    beta[ch],
                    mean[ch],
                    invstd[ch],
                    act,
                );
            }
        })
    });
}

/// Evaluation-mode batch norm forward, each sample in parallel.
#[allow(clippy::too_many_arguments)]
pub fn bn_forward_eval<T: Scratch>(
    g: &BnGeom,
    x: &[T],
    y: &mut [T],
    gb: &[T],
    running: &[T],
    eps: T,
    act: Act,
) {
    let c = g.c;
    per_sample(g, y, |n, yn| {
        with_act(act, |act| {
            for ch in 0..c {
                let is = T::ONE / (running[c + ch] + eps).sqrt();
                let o = (n * c + ch) * g.hw;
                let r = ch * g.hw..(ch + 1) * g.hw;
                norm::normalize_plane(
                    &x[o..o + g.hw],
                    &mut yn[r],
                    gb[ch],
                    gb[c + ch],
                    running[ch],
                    is,
                    act,
                );
            }
        })
    });
}

/// Calls `f` with `act` as a constant, so that an elementwise loop over
/// `act.f` compiles once per activation, without a branch per element.
#[inline(always)]
pub fn with_act<R>(act: Act, mut f: impl FnMut(Act) -> R) -> R {
    match act {
        Act::Identity => f(Act::Identity),
        Act::Relu => f(Act::Relu),
        Act::Tanh => f(Act::Tanh),
        Act::Sigmoid => f(Act::Sigmoid),
    }
}

/// Runs `f(n, sample n's values)` over the samples of an N×C×HW block in
/// parallel.
fn per_sample<T: Send>(g: &BnGeom, y: &mut [T], f: impl Fn(usize, &mut [T]) + Sync) {
    y[..g.len()]
        .par_chunks_mut(g.c * g.hw)
        .enumerate()
        .for_each(|(n, yn)| f(n, yn));
}

/// Training-mode batch norm backward.
#[allow(clippy::too_many_arguments)]
pub fn bn_backward<T: Scratch>(
    g: &BnGeom,
    x: &[T],
    dy: &[T],
    gb: &[T],
    stats: &[T],
    dx: Option<Dx<'_, T>>,
    dp: Option<Dp<'_, T>>,
) {
    let c = g.c;
    let mut sums = Buf::<T>::take(2 * c);
    {
        let (s1, s2) = sums.split_at_mut(c);
        s1.par_iter_mut()
            .zip(s2.par_iter_mut())
            .enumerate()
            .for_each(|(ch, (a, b))| {
                (*a, *b) = norm::backward_sums_blocked(g, x, dy, ch, stats[ch], stats[c + ch]);
            });
    }
    if let Some(p) = dp {
        for ch in 0..c {
            norm::put(&mut p.out[ch], sums[c + ch], p.alpha, p.beta);
            norm::put(&mut p.out[c + ch], sums[ch], p.alpha, p.beta);
        }
    }
    if let Some(d) = dx {
        let acc = d.acc;
        let sums: &[T] = &sums;
        per_sample(g, d.dx, |n, dxn| {
            for ch in 0..c {
                let o = (n * c + ch) * g.hw;
                let r = ch * g.hw..(ch + 1) * g.hw;
                norm::backward_plane(
                    g,
                    &x[o..o + g.hw],
                    &dy[o..o + g.hw],
                    &mut dxn[r],
                    acc,
                    gb[ch],
                    (stats[ch], stats[c + ch]),
                    (sums[ch], sums[c + ch]),
                );
            }
        });
    }
}

/// Batch norm R-forward.
#[allow(clippy::too_many_arguments)]
pub fn bn_r_forward<T: Scratch>(
    g: &BnGeom,
    x: &[T],
    rx: Option<&[T]>,
    gb: &[T],
    vgb: &[T],
    stats: &[T],
    ry: &mut [T],
    rstats: &mut [T],
) {
    let c = g.c;
    {
        let (ma, mb) = rstats[..2 * c].split_at_mut(c);
        ma.par_iter_mut()
            .zip(mb.par_iter_mut())
            .enumerate()
            .for_each(|(ch, (a, b))| {
                (*a, *b) = match rx {
                    Some(rx) => {
                        norm::r_forward_means_blocked(g, x, rx, ch, stats[ch], stats[c + ch])
                    }
                    None => (T::ZERO, T::ZERO),
                };
            });
    }
    let rstats: &[T] = rstats;
    per_sample(g, ry, |n, ryn| {
        for ch in 0..c {
            let o = (n * c + ch) * g.hw;
            let r = ch * g.hw..(ch + 1) * g.hw;
            norm::r_forward_plane(
                &x[o..o + g.hw],
                rx.map(|v| &v[o..o + g.hw]),
                &mut ryn[r],
                (gb[ch], vgb[ch], vgb[c + ch]),
                (stats[ch], stats[c + ch]),
                (rstats[ch], rstats[c + ch]),
            );
        }
    });
}

/// Batch norm R-backward.
pub fn bn_r_backward<T: Scratch>(
    g: &BnGeom,
    a: &RBack<'_, T>,
    rdx: Option<Dx<'_, T>>,
    rsums: &mut [T],
) {
    let c = g.c;
    let mut packed = Buf::<T>::take(5 * c);
    packed.par_chunks_mut(5).enumerate().for_each(|(ch, s)| {
        let r = norm::r_backward_sums_blocked(g, a, ch);
        s.copy_from_slice(&[r.dy, r.dyx, r.rdy, r.rdyx, r.dyrxh]);
    });
    let get = |ch: usize| {
        let s = &packed[5 * ch..5 * ch + 5];
        RSums {
            dy: s[0],
            dyx: s[1],
            rdy: s[2],
            rdyx: s[3],
            dyrxh: s[4],
        }
    };
    for ch in 0..c {
        let s = get(ch);
        rsums[ch] = s.rdyx + s.dyrxh;
        rsums[c + ch] = s.rdy;
    }
    if let Some(d) = rdx {
        let acc = d.acc;
        per_sample(g, d.dx, |n, dxn| {
            for ch in 0..c {
                let o = (n * c + ch) * g.hw;
                let s = get(ch);
                norm::r_backward_plane(g, a, ch, o, &s, &mut dxn[ch * g.hw..(ch + 1) * g.hw], acc);
            }
        });
    }
}

/// Pooling forward, planes in parallel.
pub fn pool_forward<T: Real>(g: &PoolGeom, x: &[T], y: &mut [T]) {
    let (hw, ohw) = (g.h * g.w, g.oh * g.ow);
    y[..g.y_len()]
        .par_chunks_mut(ohw)
        .zip(x[..g.x_len()].par_chunks(hw))
        .for_each(|(yp, xp)| pool::forward_plane(g, xp, yp));
}

/// Pooling backward, planes in parallel.
pub fn pool_backward<T: Real>(g: &PoolGeom, x: &[T], dy: &[T], dx: &mut [T], acc: bool) {
    let (hw, ohw) = (g.h * g.w, g.oh * g.ow);
    dx[..g.x_len()]
        .par_chunks_mut(hw)
        .zip(x[..g.x_len()].par_chunks(hw))
        .zip(dy[..g.y_len()].par_chunks(ohw))
        .for_each(|((dxp, xp), dyp)| pool::backward_plane(g, xp, dyp, dxp, acc));
}

/// Pooling R-forward, planes in parallel.
pub fn pool_r_forward<T: Real>(g: &PoolGeom, x: &[T], rx: &[T], ry: &mut [T]) {
    let (hw, ohw) = (g.h * g.w, g.oh * g.ow);
    ry[..g.y_len()]
        .par_chunks_mut(ohw)
        .zip(x[..g.x_len()].par_chunks(hw))
        .zip(rx[..g.x_len()].par_chunks(hw))
        .for_each(|((ryp, xp), rxp)| pool::r_forward_plane(g, xp, rxp, ryp));
}

/// Elements per parallel chunk of an elementwise primitive.
const CHUNK: usize = 1 << 14;

/// Per-channel bias + activation in place: samples in parallel (planes)
/// or row blocks (vectors).
pub fn bias_act<T: Real>(z: &mut [T], bias: Option<&[T]>, c: usize, hw: usize, a: Act) {
    let per = c * hw;
    if z.len() < 2 * CHUNK || per == 0 {
        return with_act(a, |a| act::bias_act_chw(z, bias, c, hw, a));
    }
    let rows = (CHUNK / per).max(1);
    z.par_chunks_mut(rows * per)
        .for_each(|zc| with_act(a, |a| act::bias_act_chw(zc, bias, c, hw, a)));
}

/// out ← β·out + α·(per-channel sums), channels in parallel; each plane
/// summed in [`norm::LANES`] interleaved partial sums (vectorized; the
/// kernel's sums rounded in another fixed order).
pub fn chan_sum<T: Real>(out: &mut [T], m: &[T], c: usize, hw: usize, alpha: T, beta: T) {
    let n = m.len() / (c * hw).max(1);
    out[..c].par_iter_mut().enumerate().for_each(|(ch, o)| {
        let mut acc = if beta == T::ZERO { T::ZERO } else { beta * *o };
        for s in 0..n {
            acc += alpha * plane_sum(&m[(s * c + ch) * hw..(s * c + ch + 1) * hw]);
        }
        *o = acc;
    });
}

/// Σ p in [`norm::LANES`] interleaved partial sums, added pairwise.
fn plane_sum<T: Real>(p: &[T]) -> T {
    const L: usize = norm::LANES;
    let mut acc = [T::ZERO; L];
    let mut chunks = p.chunks_exact(L);
    for ch in &mut chunks {
        for (a, v) in acc.iter_mut().zip(ch) {
            *a += *v;
        }
    }
    for (a, v) in acc.iter_mut().zip(chunks.remainder()) {
        *a += *v;
    }
    let mut w = L;
    while w > 1 {
        w /= 2;
        for l in 0..w {
            acc[l] += acc[l + w];
        }
    }
    acc[0]
}

/// Runs an elementwise slice function on matching chunks in parallel.
pub fn chunked<T: Send + Sync>(y: &mut [T], xs: &[&[T]], f: impl Fn(&mut [T], &[&[T]]) + Sync) {
    if y.len() < 2 * CHUNK {
        return f(y, xs);
    }
    y.par_chunks_mut(CHUNK).enumerate().for_each(|(i, yc)| {
        let lo = i * CHUNK;
        let hi = lo + yc.len();
        let parts: [&[T]; 4] = core::array::from_fn(|k| xs.get(k).map_or(&[][..], |x| &x[lo..hi]));
        f(yc, &parts[..xs.len()]);
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use fdgr_kernel::serial::conv as sconv;
    use fdgr_kernel::serial::pool::PoolKind;

    fn data(n: usize, seed: usize) -> Vec<f64> {
        (0..n)
            .map(|i| (((i * 7919 + seed * 104729) % 211) as f64 - 105.0) / 50.0)
            .collect()
    }

    fn pool2() -> rayon::ThreadPool {
        rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap()
    }

    fn close(what: &str, want: &[f64], got: &[f64], tol: f64) {
        assert_eq!(want.len(), got.len(), "{what}");
        let scale = want.iter().fold(1e-300f64, |s, v| s.max(v.abs()));
        let err = want
            .iter()
            .zip(got)
            .fold(0.0f64, |s, (a, b)| s.max((a - b).abs()));
        assert!(
            err <= tol * scale,
            "{what}: max diff {err:e} (scale {scale:e})"
        );
    }

    #[allow(clippy::too_many_arguments)]
    fn conv(
        n: usize,
        c: usize,
        k_out: usize,
        hw: (usize, usize),
        k: usize,
        stride: usize,
        pad: usize,
        groups: usize,
    ) -> ConvGeom {
        ConvGeom {
            n,
            c,
            h: hw.0,
            w: hw.1,
            k_out,
            k,
            stride,
            pad,
            groups,
            oh: (hw.0 + 2 * pad - k) / stride + 1,
            ow: (hw.1 + 2 * pad - k) / stride + 1,
        }
    }

    /// Every convolution path (im2col with and without a padded leading
    /// dimension, 1×1, strided, grouped, the transposed-forward input
    /// gradient and the col2im one) against the kernel's direct loops.
    #[test]
    fn convolution_matches_serial_loops() {
        let p = pool2();
        for g in [
            conv(3, 16, 16, (16, 16), 3, 1, 1, 1),
            conv(3, 3, 16, (32, 32), 3, 1, 1, 1),
            conv(2, 8, 12, (16, 16), 3, 2, 1, 1),
            conv(3, 6, 16, (14, 14), 5, 1, 0, 1),
            conv(2, 4, 6, (28, 28), 5, 1, 2, 1),
            conv(3, 4, 8, (16, 16), 1, 2, 0, 1),
            conv(2, 8, 8, (16, 16), 1, 1, 0, 2),
            conv(2, 8, 8, (16, 16), 3, 1, 1, 2),
            conv(2, 4, 4, (9, 7), 3, 1, 1, 4),
            conv(2, 4, 6, (7, 9), 3, 1, 2, 2),
        ] {
            let x = data(g.x_len(), 1);
            let w = data(g.w_len(), 2);
            let dy = data(g.y_len(), 3);
            for (alpha, beta) in [(1.0, 0.0), (0.5, 2.0)] {
                let what = format!("{g:?} α={alpha} β={beta}");
                let mut want = data(g.y_len(), 4);
                let mut got = want.clone();
                sconv::forward(&g, &x, &w, &mut want, alpha, beta);
                p.install(|| conv_forward(&g, &x, &w, &mut got, alpha, beta));
                close(&format!("forward {what}"), &want, &got, 1e-12);
                let mut want = data(g.x_len(), 5);
                let mut got = want.clone();
                sconv::backward_data(&g, &dy, &w, &mut want, alpha, beta);
                p.install(|| conv_backward_data(&g, &dy, &w, &mut got, alpha, beta));
                close(&format!("data {what}"), &want, &got, 1e-12);
                let mut want = data(g.w_len(), 6);
                let mut got = want.clone();
                sconv::backward_filter(&g, &x, &dy, &mut want, alpha, beta);
                p.install(|| conv_backward_filter(2, &g, &x, &dy, &mut got, alpha, beta));
                close(&format!("filter {what}"), &want, &got, 1e-12);
            }
        }
    }

    /// Batch norm's blocked statistics and the parallel passes against
    /// the kernel's serial loops, with and without R{x} and accumulation.
    #[test]
    fn batch_norm_matches_serial_loops() {
        let p = pool2();
        for (n, c, hw) in [(4, 3, 64), (3, 5, 49), (8, 4, 1)] {
            let g = BnGeom { n, c, hw };
            let (x, rx, dy, rdy) = (
                data(g.len(), 1),
                data(g.len(), 2),
                data(g.len(), 3),
                data(g.len(), 4),
            );
            let gb = data(2 * c, 5);
            let vgb = data(2 * c, 6);
            let run: Vec<f64> = data(2 * c, 7).iter().map(|v| v.abs() + 0.1).collect();
            for act in [Act::Identity, Act::Relu, Act::Tanh] {
                let (mut y1, mut y2) = (vec![0.0; g.len()], vec![0.0; g.len()]);
                let (mut s1, mut s2) = (vec![0.0; 2 * c], vec![0.0; 2 * c]);
                let (mut o1, mut o2) = (vec![0.0; 2 * c], vec![0.0; 2 * c]);
                let pend = |out| Pending {
                    running: &run,
                    out,
                    momentum: 0.1,
                };
                norm::forward_train(
                    &g,
                    &x,
                    &mut y1,
                    &gb,
                    &mut s1,
                    1e-5,
                    act,
                    Some(pend(&mut o1)),
                );
                p.install(|| {
                    bn_forward_train(
                        &g,
                        &x,
                        &mut y2,
                        &gb,
                        &mut s2,
                        1e-5,
                        act,
                        Some(pend(&mut o2)),
                    )
                });
                close("bn forward", &y1, &y2, 1e-12);
                close("bn stats", &s1, &s2, 1e-12);
                close("bn running", &o1, &o2, 1e-12);
                norm::forward_eval(&g, &x, &mut y1, &gb, &run, 1e-5, act);
                p.install(|| bn_forward_eval(&g, &x, &mut y2, &gb, &run, 1e-5, act));
                close("bn eval", &y1, &y2, 1e-12);
            }
            let stats = {
                let mut s = vec![0.0; 2 * c];
                let mut y = vec![0.0; g.len()];
                norm::forward_train(&g, &x, &mut y, &gb, &mut s, 1e-5, Act::Identity, None);
                s
            };
            for acc in [false, true] {
                let (mut d1, mut d2) = (data(g.len(), 8), data(g.len(), 8));
                let (mut p1, mut p2) = (data(2 * c, 9), data(2 * c, 9));
                fn dx(dx: &mut [f64], acc: bool) -> Option<Dx<'_, f64>> {
                    Some(Dx { dx, acc })
                }
                fn dp(out: &mut [f64]) -> Option<Dp<'_, f64>> {
                    Some(Dp {
                        out,
                        alpha: 0.5,
                        beta: 2.0,
                    })
                }
                norm::backward(&g, &x, &dy, &gb, &stats, dx(&mut d1, acc), dp(&mut p1));
                p.install(|| bn_backward(&g, &x, &dy, &gb, &stats, dx(&mut d2, acc), dp(&mut p2)));
                close("bn backward dx", &d1, &d2, 1e-12);
                close("bn backward dp", &p1, &p2, 1e-12);
                for rxo in [Some(&rx[..]), None] {
                    let (mut r1, mut r2) = (vec![0.0; g.len()], vec![0.0; g.len()]);
                    let (mut rs1, mut rs2) = (vec![0.0; 2 * c], vec![0.0; 2 * c]);
                    norm::r_forward(&g, &x, rxo, &gb, &vgb, &stats, &mut r1, &mut rs1);
                    p.install(|| bn_r_forward(&g, &x, rxo, &gb, &vgb, &stats, &mut r2, &mut rs2));
                    close("bn r-forward", &r1, &r2, 1e-12);
                    close("bn r-forward stats", &rs1, &rs2, 1e-12);
                    let a = RBack {
                        x: &x,
                        rx: rxo,
                        dy: &dy,
                        rdy: &rdy,
                        gb: &gb,
                        vgb: &vgb,
                        stats: &stats,
                        rstats: &rs1,
                    };
                    let (mut q1, mut q2) = (data(g.len(), 10), data(g.len(), 10));
                    let (mut u1, mut u2) = (vec![0.0; 2 * c], vec![0.0; 2 * c]);
                    norm::r_backward(&g, &a, dx(&mut q1, acc), &mut u1);
                    p.install(|| bn_r_backward(&g, &a, dx(&mut q2, acc), &mut u2));
                    close("bn r-backward", &q1, &q2, 1e-12);
                    close("bn r-backward sums", &u1, &u2, 1e-12);
                }
            }
        }
    }

    /// Pooling (max and average, with and without padding, windows equal
    /// to and overlapping the stride) against the kernel's serial loops.
    #[test]
    fn pooling_matches_serial_loops() {
        let p = pool2();
        for kind in [PoolKind::Max, PoolKind::Avg] {
            for (h, w, k, stride, pad) in [
                (28, 28, 2, 2, 0),
                (10, 10, 2, 2, 0),
                (9, 7, 2, 2, 0),
                (8, 8, 3, 2, 1),
                (7, 9, 3, 1, 1),
                (6, 6, 6, 1, 0),
            ] {
                let g = PoolGeom {
                    kind,
                    n: 3,
                    c: 4,
                    h,
                    w,
                    kh: k,
                    kw: k,
                    stride,
                    pad,
                    oh: (h + 2 * pad - k) / stride + 1,
                    ow: (w + 2 * pad - k) / stride + 1,
                };
                // ties (repeated values) exercise the first-maximum rule
                let x: Vec<f64> = data(g.x_len(), 1)
                    .iter()
                    .map(|v| (v * 2.0).round())
                    .collect();
                let rx = data(g.x_len(), 2);
                let dy = data(g.y_len(), 3);
                let what = format!("{g:?}");
                let (mut y1, mut y2) = (vec![0.0; g.y_len()], vec![0.0; g.y_len()]);
                pool::forward(&g, &x, &mut y1);
                p.install(|| pool_forward(&g, &x, &mut y2));
                assert_eq!(y1, y2, "forward {what}");
                pool::r_forward(&g, &x, &rx, &mut y1);
                p.install(|| pool_r_forward(&g, &x, &rx, &mut y2));
                assert_eq!(y1, y2, "r-forward {what}");
                for acc in [false, true] {
                    let (mut d1, mut d2) = (data(g.x_len(), 4), data(g.x_len(), 4));
                    pool::backward(&g, &x, &dy, &mut d1, acc);
                    p.install(|| pool_backward(&g, &x, &dy, &mut d2, acc));
                    assert_eq!(d1, d2, "backward {what} acc={acc}");
                }
            }
        }
    }
}
