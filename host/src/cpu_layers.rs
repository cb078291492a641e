//! The host's parallel execution of the layer primitives beyond dense
//! products: convolution by im2col + GEMM (one sample per task), batch
//! norm and pooling with the kernel's own per-channel and per-plane
//! functions run in parallel, and the elementwise primitives on chunks.
//! The arithmetic of every element is the kernel's (`fdgr_kernel::serial`,
//! `fdgr_kernel::act`, `fdgr_kernel::vecops`); only convolution sums in
//! another order (a GEMM's), so it matches the serial loops to rounding.
//!
//! Results are deterministic for a given thread count: every output is
//! written by one task in a fixed order, and the weight gradient of a
//! convolution sums per-chunk partials in chunk order.

use fdgr_kernel::act::{self, Act};
use fdgr_kernel::serial::conv::{self, col2im_add, im2col, ConvGeom};
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
    y[..g.y_len()]
        .par_chunks_mut(g.k_out * ohw)
        .zip(x[..g.x_len()].par_chunks(g.c * hw))
        .for_each_init(
            || Buf::<T>::take(if pw { 0 } else { ckk * ohw }),
            |col, (yn, xn)| {
                for grp in 0..g.groups {
                    let wg = &w[grp * kg * ckk..(grp + 1) * kg * ckk];
                    let yg = &mut yn[grp * kg * ohw..(grp + 1) * kg * ohw];
                    if pw {
                        let xg = &xn[grp * cg * hw..(grp + 1) * cg * hw];
                        gemm1(false, false, kg, ohw, ckk, alpha, wg, xg, beta, yg);
                    } else {
                        im2col(&g1, xn, 0, grp, col);
                        gemm1(false, false, kg, ohw, ckk, alpha, wg, col, beta, yg);
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
    let mut partials = Buf::<T>::take(chunks * wl);
    partials
        .par_chunks_mut(wl)
        .enumerate()
        .for_each(|(t, part)| {
            let mut col = Buf::<T>::take(if pointwise(g) { 0 } else { ckk * ohw });
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
                        im2col(&g1, xn, 0, grp, &mut col);
                        gemm1(false, true, kg, ckk, ohw, T::ONE, dyg, &col, b, pg);
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
                    let (mu, is, m2) = norm::channel_stats(g, x, ch, eps);
                    (*m, *i) = (mu, is);
                    (*rm, *rv) = norm::running_update(g, run, ch, mu, m2, mom);
                });
        }
        None => {
            mean.par_iter_mut()
                .zip(invstd.par_iter_mut())
                .enumerate()
                .for_each(|(ch, (m, i))| {
                    let (mu, is, _) = norm::channel_stats(g, x, ch, eps);
                    (*m, *i) = (mu, is);
                });
        }
    }
    let (mean, invstd): (&[T], &[T]) = (mean, invstd);
    let (gamma, beta) = gb.split_at(c);
    per_sample(g, y, |n, yn| {
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
    });
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
                (*a, *b) = norm::backward_sums(g, x, dy, ch, stats[ch], stats[c + ch]);
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
                    Some(rx) => norm::r_forward_means(g, x, rx, ch, stats[ch], stats[c + ch]),
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
        let r = norm::r_backward_sums(g, a, ch);
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
        return act::bias_act_chw(z, bias, c, hw, a);
    }
    let rows = (CHUNK / per).max(1);
    z.par_chunks_mut(rows * per)
        .for_each(|zc| act::bias_act_chw(zc, bias, c, hw, a));
}

/// out ← β·out + α·(per-channel sums), channels in parallel (each in the
/// serial order, so the result is the kernel's bit for bit).
pub fn chan_sum<T: Real>(out: &mut [T], m: &[T], c: usize, hw: usize, alpha: T, beta: T) {
    let n = m.len() / (c * hw).max(1);
    out[..c].par_iter_mut().enumerate().for_each(|(ch, o)| {
        let mut acc = if beta == T::ZERO { T::ZERO } else { beta * *o };
        for s in 0..n {
            let p = &m[(s * c + ch) * hw..(s * c + ch + 1) * hw];
            let mut t = p[0];
            for v in &p[1..] {
                t += *v;
            }
            acc += alpha * t;
        }
        *o = acc;
    });
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
