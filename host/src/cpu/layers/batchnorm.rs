//! Batch norm: per-channel statistics and sums in parallel over channels,
//! the elementwise passes in parallel over samples.

use super::*;

simd_fn! {
    /// The batch statistics of channel `ch` ([`Scratch::bn_stats`]).
    fn stats_ch<T: Scratch>(g: &BnGeom, x: &[T], ch: usize, eps: T) -> (T, T, T) {
        T::bn_stats(g, x, ch, eps)
    }
}

/// Whether the lane loops below apply: planes of whole lane blocks
/// ([`norm::LANES`] values), and `len` values to read.
pub(super) fn lanes_fit(g: &BnGeom, len: usize) -> bool {
    g.hw >= norm::LANES && g.hw % norm::LANES == 0 && g.m() > 0 && len >= g.len()
}

/// The lane sums of [`norm::channel_stats_blocked`] for f32 in AVX2
/// registers: lane l of s1 and s2 sums d and d² of d = x − k over the
/// values j ≡ l (mod [`norm::LANES`]) of channel `ch`'s planes, in the
/// same order and with the same roundings (no fused multiply-add) as the
/// kernel's loop, which compilers leave scalar. Needs [`lanes_fit`].
///
/// # Safety
/// The CPU must have AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
pub(super) unsafe fn stats_lanes_avx2(
    g: &BnGeom,
    x: &[f32],
    ch: usize,
    k: f64,
) -> [[f64; norm::LANES]; 2] {
    use std::arch::x86_64::*;
    let kv = _mm256_set1_pd(k);
    let (mut s1, mut s2) = ([_mm256_setzero_pd(); 4], [_mm256_setzero_pd(); 4]);
    for n in 0..g.n {
        let o = (n * g.c + ch) * g.hw;
        for c in x[o..o + g.hw].chunks_exact(norm::LANES) {
            for q in 0..4 {
                // SAFETY: lanes 4q..4q + 4 of a chunk of LANES = 16 values.
                let v = _mm256_cvtps_pd(unsafe { _mm_loadu_ps(c.as_ptr().add(4 * q)) });
                let d = _mm256_sub_pd(v, kv);
                s1[q] = _mm256_add_pd(s1[q], d);
                s2[q] = _mm256_add_pd(s2[q], _mm256_mul_pd(d, d));
            }
        }
    }
    let mut out = [[0.0; norm::LANES]; 2];
    for (o, s) in out.iter_mut().zip([s1, s2]) {
        for (q, v) in s.into_iter().enumerate() {
            // SAFETY: 4 values at 4q < LANES.
            unsafe { _mm256_storeu_pd(o.as_mut_ptr().add(4 * q), v) };
        }
    }
    out
}

/// The lane sums of [`norm::backward_sums_blocked`] for f32 in AVX2
/// registers (Σdy and Σdy·((x − μ)·s) per lane, as
/// [`stats_lanes_avx2`] does for the statistics). Needs [`lanes_fit`].
///
/// # Safety
/// The CPU must have AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
pub(super) unsafe fn backward_lanes_avx2(
    g: &BnGeom,
    x: &[f32],
    dy: &[f32],
    ch: usize,
    mu: f32,
    is: f32,
) -> [[f32; norm::LANES]; 2] {
    use std::arch::x86_64::*;
    let (muv, isv) = (_mm256_set1_ps(mu), _mm256_set1_ps(is));
    let (mut a, mut b) = ([_mm256_setzero_ps(); 2], [_mm256_setzero_ps(); 2]);
    for n in 0..g.n {
        let o = (n * g.c + ch) * g.hw;
        let planes = x[o..o + g.hw].chunks_exact(norm::LANES);
        for (xc, dc) in planes.zip(dy[o..o + g.hw].chunks_exact(norm::LANES)) {
            for q in 0..2 {
                // SAFETY: lanes 8q..8q + 8 of chunks of LANES = 16 values.
                let (xv, dv) = unsafe {
                    (
                        _mm256_loadu_ps(xc.as_ptr().add(8 * q)),
                        _mm256_loadu_ps(dc.as_ptr().add(8 * q)),
                    )
                };
                a[q] = _mm256_add_ps(a[q], dv);
                let xh = _mm256_mul_ps(_mm256_sub_ps(xv, muv), isv);
                b[q] = _mm256_add_ps(b[q], _mm256_mul_ps(dv, xh));
            }
        }
    }
    let mut out = [[0.0; norm::LANES]; 2];
    for (o, s) in out.iter_mut().zip([a, b]) {
        for (q, v) in s.into_iter().enumerate() {
            // SAFETY: 8 values at 8q < LANES.
            unsafe { _mm256_storeu_ps(o.as_mut_ptr().add(8 * q), v) };
        }
    }
    out
}

simd_fn! {
    /// y = act(γ·(x − μ)·s + β) over every channel of sample `n` (`yn`).
    #[allow(clippy::too_many_arguments)]
    fn normalize_sample<T: Real>(
        g: &BnGeom,
        x: &[T],
        yn: &mut [T],
        n: usize,
        gb: &[T],
        mean: &[T],
        invstd: &[T],
        act: Act,
    ) {
        let (c, hw) = (g.c, g.hw);
        with_act(act, |act| {
            for ch in 0..c {
                let o = (n * c + ch) * hw;
                norm::normalize_plane(
                    &x[o..o + hw],
                    &mut yn[ch * hw..(ch + 1) * hw],
                    gb[ch],
                    gb[c + ch],
                    mean[ch],
                    invstd[ch],
                    act,
                );
            }
        })
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
                    let (mu, is, m2) = stats_ch(g, x, ch, eps);
                    (*m, *i) = (mu, is);
                    (*rm, *rv) = norm::running_update(g, run, ch, mu, m2, mom);
                });
        }
        None => {
            mean.par_iter_mut()
                .zip(invstd.par_iter_mut())
                .enumerate()
                .for_each(|(ch, (m, i))| {
                    let (mu, is, _) = stats_ch(g, x, ch, eps);
                    (*m, *i) = (mu, is);
                });
        }
    }
    let (mean, invstd): (&[T], &[T]) = (mean, invstd);
    per_sample(g, y, |n, yn| {
        normalize_sample(g, x, yn, n, gb, mean, invstd, act)
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
    let mut invstd = Buf::<T>::take(c);
    for (ch, i) in invstd.iter_mut().enumerate() {
        *i = T::ONE / (running[c + ch] + eps).sqrt();
    }
    let invstd: &[T] = &invstd;
    per_sample(g, y, |n, yn| {
        normalize_sample(g, x, yn, n, gb, &running[..c], invstd, act)
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

simd_fn! {
    /// The backward sums of channel `ch` ([`Scratch::bn_backward_sums`]).
    fn backward_sums_ch<T: Scratch>(g: &BnGeom, x: &[T], dy: &[T], ch: usize, stats: &[T]) -> (T, T) {
        T::bn_backward_sums(g, x, dy, ch, stats[ch], stats[g.c + ch])
    }
}

simd_fn! {
    /// The input gradient of every channel of sample `n` (`dxn`).
    #[allow(clippy::too_many_arguments)]
    fn backward_sample<T: Real>(
        g: &BnGeom,
        x: &[T],
        dy: &[T],
        dxn: &mut [T],
        n: usize,
        acc: bool,
        gb: &[T],
        stats: &[T],
        sums: &[T],
    ) {
        let (c, hw) = (g.c, g.hw);
        for ch in 0..c {
            let o = (n * c + ch) * hw;
            norm::backward_plane(
                g,
                &x[o..o + hw],
                &dy[o..o + hw],
                &mut dxn[ch * hw..(ch + 1) * hw],
                acc,
                gb[ch],
                (stats[ch], stats[c + ch]),
                (sums[ch], sums[c + ch]),
            );
        }
    }
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
                (*a, *b) = backward_sums_ch(g, x, dy, ch, stats);
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
            backward_sample(g, x, dy, dxn, n, acc, gb, stats, sums)
        });
    }
}

simd_fn! {
    /// mean(R{x}) and mean(x̂·R{x}) of channel `ch`.
    fn r_forward_means_ch<T: Real>(g: &BnGeom, x: &[T], rx: &[T], ch: usize, stats: &[T]) -> (T, T) {
        norm::r_forward_means_blocked(g, x, rx, ch, stats[ch], stats[g.c + ch])
    }
}

simd_fn! {
    /// R{y} over every channel of sample `n` (`ryn`).
    #[allow(clippy::too_many_arguments)]
    fn r_forward_sample<T: Real>(
        g: &BnGeom,
        x: &[T],
        rx: Option<&[T]>,
        ryn: &mut [T],
        n: usize,
        gb: &[T],
        vgb: &[T],
        stats: &[T],
        rstats: &[T],
    ) {
        let (c, hw) = (g.c, g.hw);
        for ch in 0..c {
            let o = (n * c + ch) * hw;
            norm::r_forward_plane(
                &x[o..o + hw],
                rx.map(|v| &v[o..o + hw]),
                &mut ryn[ch * hw..(ch + 1) * hw],
                (gb[ch], vgb[ch], vgb[c + ch]),
                (stats[ch], stats[c + ch]),
                (rstats[ch], rstats[c + ch]),
            );
        }
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
                    Some(rx) => r_forward_means_ch(g, x, rx, ch, stats),
                    None => (T::ZERO, T::ZERO),
                };
            });
    }
    let rstats: &[T] = rstats;
    per_sample(g, ry, |n, ryn| {
        r_forward_sample(g, x, rx, ryn, n, gb, vgb, stats, rstats)
    });
}

simd_fn! {
    /// The R-backward sums of channel `ch`, packed (Σdy, Σdy·x̂, ΣR{dy},
    /// ΣR{dy}·x̂, Σdy·R{x̂}).
    fn r_backward_sums_ch<T: Real>(g: &BnGeom, a: &RBack<'_, T>, ch: usize, out: &mut [T]) {
        let r = norm::r_backward_sums_blocked(g, a, ch);
        out.copy_from_slice(&[r.dy, r.dyx, r.rdy, r.rdyx, r.dyrxh]);
    }
}

/// The sums of channel `ch` packed by [`r_backward_sums_ch`].
fn unpack<T: Real>(packed: &[T], ch: usize) -> RSums<T> {
    let s = &packed[5 * ch..5 * ch + 5];
    RSums {
        dy: s[0],
        dyx: s[1],
        rdy: s[2],
        rdyx: s[3],
        dyrxh: s[4],
    }
}

simd_fn! {
    /// R{dx} over every channel of sample `n` (`dxn`).
    fn r_backward_sample<T: Real>(
        g: &BnGeom,
        a: &RBack<'_, T>,
        packed: &[T],
        dxn: &mut [T],
        n: usize,
        acc: bool,
    ) {
        let (c, hw) = (g.c, g.hw);
        for ch in 0..c {
            let o = (n * c + ch) * hw;
            let s = unpack(packed, ch);
            norm::r_backward_plane(g, a, ch, o, &s, &mut dxn[ch * hw..(ch + 1) * hw], acc);
        }
    }
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
    packed
        .par_chunks_mut(5)
        .enumerate()
        .for_each(|(ch, s)| r_backward_sums_ch(g, a, ch, s));
    for ch in 0..c {
        let s = unpack(&packed, ch);
        rsums[ch] = s.rdyx + s.dyrxh;
        rsums[c + ch] = s.rdy;
    }
    if let Some(d) = rdx {
        let acc = d.acc;
        let packed: &[T] = &packed;
        per_sample(g, d.dx, |n, dxn| {
            r_backward_sample(g, a, packed, dxn, n, acc)
        });
    }
}
