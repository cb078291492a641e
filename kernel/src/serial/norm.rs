//! Batch normalization over NCHW slices, serial loops: training-mode
//! forward (batch statistics), evaluation-mode forward (running
//! statistics), backward, and both R-operator passes. Per channel, over
//! the M = N·H·W values of that channel.
//!
//! With s = 1/√(σ² + ε) and x̂ = (x − μ)·s (μ, σ² the batch mean and
//! biased variance), y = γ·x̂ + β, and for a direction V = (V_γ, V_β) and
//! input derivative R{x}:
//!
//! ```text
//! backward   dγ = Σ dy·x̂,  dβ = Σ dy,  dx = γ·s·(dy − mean(dy) − x̂·mean(dy·x̂))
//! R-forward  R{x̂} = s·(R{x} − mean(R{x}) − x̂·mean(x̂·R{x})),
//!            R{y} = V_γ·x̂ + γ·R{x̂} + V_β,   R{s} = −s²·mean(x̂·R{x})
//! R-backward with g = γ·dy and R{g} = V_γ·dy + γ·R{dy}:
//!            R{dx} = R{s}·(g − mean(g) − x̂·mean(g·x̂))
//!                  + s·(R{g} − mean(R{g}) − R{x̂}·mean(g·x̂)
//!                       − x̂·(mean(R{g}·x̂) + mean(g·R{x̂})))
//!            R{dγ} = Σ (R{dy}·x̂ + dy·R{x̂}),  R{dβ} = Σ R{dy}
//! ```
//!
//! The batch statistics depend on θ, so the R-pass differentiates them
//! too (the mean-subtraction terms above); the tests check every formula
//! against central differences of the whole training-mode loss.

use crate::real::Real;
use crate::serial::act::Act;

/// How a batch-norm layer normalizes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Mode {
    /// With the batch's own statistics (training).
    Train,
    /// With the running statistics (evaluation, and batch 1 on a device).
    Eval,
}

/// Batch norm's ε (PyTorch's default).
pub const BN_EPS: f64 = 1e-5;
/// Batch norm's running-statistics momentum (PyTorch's default).
pub const BN_MOMENTUM: f64 = 0.1;

/// The geometry of one batch-norm layer on a batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct BnGeom {
    /// Batch size N.
    pub n: usize,
    /// Channels C.
    pub c: usize,
    /// Values per channel and sample, H·W (1 for a vector).
    pub hw: usize,
}

impl BnGeom {
    /// Values per channel over the batch, M = N·H·W.
    pub const fn m(&self) -> usize {
        self.n * self.hw
    }
    /// Values of the batch.
    pub const fn len(&self) -> usize {
        self.n * self.c * self.hw
    }
    /// True when the batch is empty.
    pub const fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Visits every value of channel `ch` in a fixed order (sample, then
/// position), giving its index.
#[inline]
fn each(g: &BnGeom, ch: usize, mut f: impl FnMut(usize)) {
    for n in 0..g.n {
        let o = (n * g.c + ch) * g.hw;
        for i in o..o + g.hw {
            f(i);
        }
    }
}

/// The order a channel's sums are added in: [`InOrder`] (the serial
/// loops) or [`Blocked`] (interleaved lanes). Each batch-norm sum is
/// written once, as its per-value terms (the `*_terms` functions below),
/// and summed in either order.
trait Order {
    /// Σ over channel `ch` of `f` of the aligned values of the `M` arrays
    /// in `src`, into `K` sums of type `A`.
    fn sum<F: Real, A: Real, const M: usize, const K: usize>(
        g: &BnGeom,
        ch: usize,
        src: [&[F]; M],
        f: impl Fn([F; M]) -> [A; K],
    ) -> [A; K];
}

/// The serial loops' order ([`in_order`]).
struct InOrder;

/// Interleaved lanes ([`blocked`]).
struct Blocked;

impl Order for InOrder {
    #[inline(always)]
    fn sum<F: Real, A: Real, const M: usize, const K: usize>(
        g: &BnGeom,
        ch: usize,
        src: [&[F]; M],
        f: impl Fn([F; M]) -> [A; K],
    ) -> [A; K] {
        in_order(g, ch, src, f)
    }
}

impl Order for Blocked {
    #[inline(always)]
    fn sum<F: Real, A: Real, const M: usize, const K: usize>(
        g: &BnGeom,
        ch: usize,
        src: [&[F]; M],
        f: impl Fn([F; M]) -> [A; K],
    ) -> [A; K] {
        blocked(g, ch, src, f)
    }
}

/// Σ over channel `ch`, in order (sample, then position), of `f` of the
/// aligned values of the `M` arrays in `src`, into `K` sums of type `A`:
/// the serial loops' order.
#[inline(always)]
fn in_order<F: Real, A: Real, const M: usize, const K: usize>(
    g: &BnGeom,
    ch: usize,
    src: [&[F]; M],
    f: impl Fn([F; M]) -> [A; K],
) -> [A; K] {
    let mut s = [A::ZERO; K];
    each(g, ch, |i| {
        let v = f(src.map(|a| a[i]));
        for k in 0..K {
            s[k] += v[k];
        }
    });
    s
}

/// Running statistics to update from this batch: `running` holds the
/// current mean (C) then variance (C); `out` receives the updated ones
/// (PyTorch's rule: r ← (1 − m)·r + m·batch value, with the unbiased
/// variance).
pub struct Pending<'a, F> {
    /// Current running mean, then running variance.
    pub running: &'a [F],
    /// Updated running mean, then running variance.
    pub out: &'a mut [F],
    /// Momentum m.
    pub momentum: F,
}

/// The batch statistics of channel `ch`: (mean μ, 1/√(σ² + ε), Σ(x − μ)²).
///
/// The two sums (Σx, then Σ(x − μ)² around the unrounded mean) run in
/// f64 whatever `F` is, and the statistics are rounded to `F` once, at
/// the end ([`finish_stats`]): the rounding error of an f32 running sum
/// over the M = N·H·W values of a channel grows with M (up to M·2⁻²⁴
/// relative on the mean, and through x − μ more on the variance when the
/// values share a large offset). Batch norm is trained on hosts only (the
/// firmware refuses such nets), where f64 costs little.
#[inline]
pub fn channel_stats<F: Real>(g: &BnGeom, x: &[F], ch: usize, eps: F) -> (F, F, F) {
    let [s] = in_order(g, ch, [x], |[v]| [v.to_f64()]);
    let mu = s / g.m() as f64;
    let [v] = in_order(g, ch, [x], |[v]| {
        let d = v.to_f64() - mu;
        [d * d]
    });
    finish_stats(g, mu, v, eps)
}

/// The statistics of [`channel_stats`] from the mean `mu` and
/// m2 = Σ(x − μ)², both in f64: (μ, 1/√(m2/M + ε), m2), each rounded to
/// `F` once.
#[inline]
pub fn finish_stats<F: Real>(g: &BnGeom, mu: f64, m2: f64, eps: F) -> (F, F, F) {
    let is = 1.0 / <f64 as Real>::sqrt(m2 / g.m() as f64 + eps.to_f64());
    (F::from_f64(mu), F::from_f64(is), F::from_f64(m2))
}

/// y = act(γ·(x − μ)·s + β) over one plane (the H·W values of one sample
/// and channel).
#[inline]
pub fn normalize_plane<F: Real>(x: &[F], y: &mut [F], gamma: F, beta: F, mu: F, is: F, act: Act) {
    for (yi, xi) in y.iter_mut().zip(x) {
        *yi = act.f(gamma * ((*xi - mu) * is) + beta);
    }
}

/// The running-statistics update of one channel from its batch mean and
/// Σ(x − μ)² (`m2`): (new mean, new variance), PyTorch's rule with the
/// unbiased variance.
#[inline]
pub fn running_update<F: Real>(
    g: &BnGeom,
    running: &[F],
    ch: usize,
    mu: F,
    m2: F,
    momentum: F,
) -> (F, F) {
    let unbiased = m2 / F::from_usize(g.m() - 1);
    let keep = F::ONE - momentum;
    (
        momentum * mu + keep * running[ch],
        momentum * unbiased + keep * running[g.c + ch],
    )
}

/// Training-mode forward: batch statistics into `stats` (mean, then 1/σ;
/// C each), y = act(γ·x̂ + β), and the running-statistics update into
/// `pending` when given. `gb` holds γ (C) then β (C). Needs M ≥ 2.
#[allow(clippy::too_many_arguments)]
pub fn forward_train<F: Real>(
    g: &BnGeom,
    x: &[F],
    y: &mut [F],
    gb: &[F],
    stats: &mut [F],
    eps: F,
    act: Act,
    mut pending: Option<Pending<'_, F>>,
) {
    let (gamma, beta) = gb.split_at(g.c);
    for ch in 0..g.c {
        let (mu, is, m2) = channel_stats(g, x, ch, eps);
        stats[ch] = mu;
        stats[g.c + ch] = is;
        if let Some(p) = pending.as_mut() {
            let (rm, rv) = running_update(g, p.running, ch, mu, m2, p.momentum);
            p.out[ch] = rm;
            p.out[g.c + ch] = rv;
        }
        for n in 0..g.n {
            let o = (n * g.c + ch) * g.hw;
            normalize_plane(
                &x[o..o + g.hw],
                &mut y[o..o + g.hw],
                gamma[ch],
                beta[ch],
                mu,
                is,
                act,
            );
        }
    }
}

/// Evaluation-mode forward: y = act(γ·(x − r_mean)/√(r_var + ε) + β) with
/// the running statistics `running` (mean C, then variance C).
#[allow(clippy::too_many_arguments)]
pub fn forward_eval<F: Real>(
    g: &BnGeom,
    x: &[F],
    y: &mut [F],
    gb: &[F],
    running: &[F],
    eps: F,
    act: Act,
) {
    for ch in 0..g.c {
        let mu = running[ch];
        let is = F::ONE / (running[g.c + ch] + eps).sqrt();
        for n in 0..g.n {
            let o = (n * g.c + ch) * g.hw;
            normalize_plane(
                &x[o..o + g.hw],
                &mut y[o..o + g.hw],
                gb[ch],
                gb[g.c + ch],
                mu,
                is,
                act,
            );
        }
    }
}

/// Where a backward pass writes the input gradient: overwrite or add.
pub struct Dx<'a, F> {
    /// The input gradient.
    pub dx: &'a mut [F],
    /// Add to it rather than overwrite.
    pub acc: bool,
}

/// Where a backward pass writes parameter gradients: out ← β·out + α·grad
/// (γ's C entries, then β's).
pub struct Dp<'a, F> {
    /// The gradients of γ then β.
    pub out: &'a mut [F],
    /// α.
    pub alpha: F,
    /// β (0 overwrites).
    pub beta: F,
}

/// out ← β·out + α·v (β = 0 overwrites).
#[inline]
pub fn put<F: Real>(o: &mut F, v: F, alpha: F, beta: F) {
    *o = if beta == F::ZERO {
        alpha * v
    } else {
        beta * *o + alpha * v
    };
}

/// The terms of the backward sums at one (x, dy): (dy, dy·x̂).
#[inline(always)]
fn backward_terms<F: Real>(mu: F, is: F) -> impl Fn([F; 2]) -> [F; 2] {
    move |[x, dy]| [dy, dy * ((x - mu) * is)]
}

/// Backward sums of channel `ch`: (Σ dy, Σ dy·x̂).
#[inline]
pub fn backward_sums<F: Real>(g: &BnGeom, x: &[F], dy: &[F], ch: usize, mu: F, is: F) -> (F, F) {
    let [sdy, sdyx] = in_order(g, ch, [x, dy], backward_terms(mu, is));
    (sdy, sdyx)
}

/// The input gradient over one plane: dx (+)= γ·s·(dy − Σdy/M − x̂·Σdy·x̂/M).
#[allow(clippy::too_many_arguments)]
#[inline]
pub fn backward_plane<F: Real>(
    g: &BnGeom,
    x: &[F],
    dy: &[F],
    dx: &mut [F],
    acc: bool,
    gamma: F,
    (mu, is): (F, F),
    (sdy, sdyx): (F, F),
) {
    let m = F::from_usize(g.m());
    let k = gamma * is;
    let (mdy, mdyx) = (sdy / m, sdyx / m);
    for ((d, xi), dyi) in dx.iter_mut().zip(x).zip(dy) {
        let v = k * (*dyi - mdy - ((*xi - mu) * is) * mdyx);
        if acc {
            *d += v;
        } else {
            *d = v;
        }
    }
}

/// Training-mode backward from dy (the gradient with respect to y, after
/// any fused activation's derivative): parameter gradients into `dp` and
/// the input gradient into `dx`, each when given. `stats` as written by
/// [`forward_train`].
#[allow(clippy::too_many_arguments)]
pub fn backward<F: Real>(
    g: &BnGeom,
    x: &[F],
    dy: &[F],
    gb: &[F],
    stats: &[F],
    mut dx: Option<Dx<'_, F>>,
    mut dp: Option<Dp<'_, F>>,
) {
    for ch in 0..g.c {
        let (mu, is) = (stats[ch], stats[g.c + ch]);
        let (sdy, sdyx) = backward_sums(g, x, dy, ch, mu, is);
        if let Some(p) = dp.as_mut() {
            put(&mut p.out[ch], sdyx, p.alpha, p.beta);
            put(&mut p.out[g.c + ch], sdy, p.alpha, p.beta);
        }
        if let Some(d) = dx.as_mut() {
            for n in 0..g.n {
                let o = (n * g.c + ch) * g.hw;
                let r = o..o + g.hw;
                backward_plane(
                    g,
                    &x[r.clone()],
                    &dy[r.clone()],
                    &mut d.dx[r],
                    d.acc,
                    gb[ch],
                    (mu, is),
                    (sdy, sdyx),
                );
            }
        }
    }
}

/// R-forward sums of channel `ch`: (mean(R{x}), mean(x̂·R{x})).
#[inline]
pub fn r_forward_means<F: Real>(g: &BnGeom, x: &[F], rx: &[F], ch: usize, mu: F, is: F) -> (F, F) {
    let m = F::from_usize(g.m());
    let [a, b] = in_order(g, ch, [x, rx], r_forward_terms(mu, is));
    (a / m, b / m)
}

/// The terms of the R-forward sums at one (x, R{x}): (R{x}, x̂·R{x}).
#[inline(always)]
fn r_forward_terms<F: Real>(mu: F, is: F) -> impl Fn([F; 2]) -> [F; 2] {
    move |[x, rx]| [rx, ((x - mu) * is) * rx]
}

/// R{y} over one plane: V_γ·x̂ + γ·R{x̂} + V_β (R{x̂} = 0 without R{x}).
#[allow(clippy::too_many_arguments)]
#[inline]
pub fn r_forward_plane<F: Real>(
    x: &[F],
    rx: Option<&[F]>,
    ry: &mut [F],
    (ga, vga, vbe): (F, F, F),
    (mu, is): (F, F),
    (ma, mb): (F, F),
) {
    match rx {
        Some(rx) => {
            for ((r, xi), rxi) in ry.iter_mut().zip(x).zip(rx) {
                let xh = (*xi - mu) * is;
                let rxh = is * (*rxi - ma - xh * mb);
                *r = vga * xh + ga * rxh + vbe;
            }
        }
        None => {
            for (r, xi) in ry.iter_mut().zip(x) {
                *r = vga * ((*xi - mu) * is) + vbe;
            }
        }
    }
}

/// R-forward: R{y} from R{x} (`rx`; `None` when it is zero) and the
/// direction's γ, β (`vgb`), and the per-channel means mean(R{x}) and
/// mean(x̂·R{x}) into `rstats` (C each) for [`r_backward`].
#[allow(clippy::too_many_arguments)]
pub fn r_forward<F: Real>(
    g: &BnGeom,
    x: &[F],
    rx: Option<&[F]>,
    gb: &[F],
    vgb: &[F],
    stats: &[F],
    ry: &mut [F],
    rstats: &mut [F],
) {
    for ch in 0..g.c {
        let (mu, is) = (stats[ch], stats[g.c + ch]);
        let (ma, mb) = match rx {
            Some(rx) => r_forward_means(g, x, rx, ch, mu, is),
            None => (F::ZERO, F::ZERO),
        };
        rstats[ch] = ma;
        rstats[g.c + ch] = mb;
        let k = (gb[ch], vgb[ch], vgb[g.c + ch]);
        for n in 0..g.n {
            let o = (n * g.c + ch) * g.hw;
            let r = o..o + g.hw;
            r_forward_plane(
                &x[r.clone()],
                rx.map(|v| &v[r.clone()]),
                &mut ry[r],
                k,
                (mu, is),
                (ma, mb),
            );
        }
    }
}

/// The inputs of [`r_backward`] that come from the earlier passes.
pub struct RBack<'a, F> {
    /// The layer input x.
    pub x: &'a [F],
    /// R{x} (`None`: zero).
    pub rx: Option<&'a [F]>,
    /// dy (after the fused activation's derivative).
    pub dy: &'a [F],
    /// R{dy}.
    pub rdy: &'a [F],
    /// γ then β.
    pub gb: &'a [F],
    /// The direction's γ then β.
    pub vgb: &'a [F],
    /// Batch mean then 1/σ ([`forward_train`]).
    pub stats: &'a [F],
    /// mean(R{x}) then mean(x̂·R{x}) ([`r_forward`]).
    pub rstats: &'a [F],
}

/// The per-channel sums of the R-backward: Σdy, Σdy·x̂, ΣR{dy},
/// ΣR{dy}·x̂, Σdy·R{x̂}.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct RSums<F> {
    /// Σ dy.
    pub dy: F,
    /// Σ dy·x̂.
    pub dyx: F,
    /// Σ R{dy}.
    pub rdy: F,
    /// Σ R{dy}·x̂.
    pub rdyx: F,
    /// Σ dy·R{x̂}.
    pub dyrxh: F,
}

#[inline]
fn rxh_at<F: Real>(rx: Option<&[F]>, i: usize, xh: F, is: F, ma: F, mb: F) -> F {
    match rx {
        Some(rx) => is * (rx[i] - ma - xh * mb),
        None => F::ZERO,
    }
}

/// The terms of the R-backward sums at one (x, R{x}, dy, R{dy}), in the
/// order of [`RSums`].
#[inline(always)]
fn r_backward_terms<F: Real>((mu, is): (F, F), (ma, mb): (F, F)) -> impl Fn([F; 4]) -> [F; 5] {
    move |[x, rx, dy, rdy]| {
        let xh = (x - mu) * is;
        let rxh = is * (rx - ma - xh * mb);
        [dy, dy * xh, rdy, rdy * xh, dy * rxh]
    }
}

/// [`r_backward_terms`] where R{x} = 0 (so R{x̂} = 0): the last sum is 0.
#[inline(always)]
fn r_backward_terms_no_rx<F: Real>((mu, is): (F, F)) -> impl Fn([F; 3]) -> [F; 5] {
    move |[x, dy, rdy]| {
        let xh = (x - mu) * is;
        [dy, dy * xh, rdy, rdy * xh, F::ZERO]
    }
}

/// The R-backward sums of channel `ch`, added in the order `O`.
#[inline(always)]
fn r_backward_sums_in<O: Order, F: Real>(g: &BnGeom, a: &RBack<'_, F>, ch: usize) -> RSums<F> {
    let st = (a.stats[ch], a.stats[g.c + ch]);
    let rst = (a.rstats[ch], a.rstats[g.c + ch]);
    let [dy, dyx, rdy, rdyx, dyrxh] = match a.rx {
        Some(rx) => O::sum(g, ch, [a.x, rx, a.dy, a.rdy], r_backward_terms(st, rst)),
        None => O::sum(g, ch, [a.x, a.dy, a.rdy], r_backward_terms_no_rx(st)),
    };
    RSums {
        dy,
        dyx,
        rdy,
        rdyx,
        dyrxh,
    }
}

/// The R-backward sums of channel `ch`.
#[inline]
pub fn r_backward_sums<F: Real>(g: &BnGeom, a: &RBack<'_, F>, ch: usize) -> RSums<F> {
    r_backward_sums_in::<InOrder, F>(g, a, ch)
}

/// Interleaved partial sums of the blocked channel sums
/// ([`channel_stats_blocked`] and the other `*_blocked` functions).
pub const LANES: usize = 16;

/// Σ over channel `ch` (every sample's plane, in order) of `f` of the
/// aligned values of the `M` arrays in `src`, into `K` sums of type `A`
/// (`F`, or f64 for [`channel_stats_blocked`]). Value j of a plane goes to
/// partial sum j mod [`LANES`] (independent chains, so the loop
/// vectorizes); the partials are added pairwise at the end. The same sums
/// as the serial loops, rounded in another (fixed) order.
#[inline(always)]
fn blocked<F: Real, A: Real, const M: usize, const K: usize>(
    g: &BnGeom,
    ch: usize,
    src: [&[F]; M],
    f: impl Fn([F; M]) -> [A; K],
) -> [A; K] {
    let mut acc = [[A::ZERO; LANES]; K];
    if g.hw == 1 {
        // One value per plane (a vector's batch norm): all go to lane 0,
        // as in the loop below, summed here in a local that stays in a
        // register (the same additions in the same order).
        let mut a = [A::ZERO; K];
        for n in 0..g.n {
            let v = f(src.map(|s| s[n * g.c + ch]));
            for k in 0..K {
                a[k] += v[k];
            }
        }
        for k in 0..K {
            acc[k][0] = a[k];
        }
    } else {
        for n in 0..g.n {
            let o = (n * g.c + ch) * g.hw;
            let planes = src.map(|s| &s[o..o + g.hw]);
            let full = g.hw - g.hw % LANES;
            let mut i = 0;
            while i < full {
                let chunks: [&[F; LANES]; M] =
                    planes.map(|p| p[i..i + LANES].try_into().expect("a slice of LANES values"));
                for l in 0..LANES {
                    let v = f(chunks.map(|c| c[l]));
                    for k in 0..K {
                        acc[k][l] += v[k];
                    }
                }
                i += LANES;
            }
            for (l, i) in (full..g.hw).enumerate() {
                let v = f(planes.map(|p| p[i]));
                for k in 0..K {
                    acc[k][l] += v[k];
                }
            }
        }
    }
    acc.map(reduce_lanes)
}

/// The sum of [`LANES`] partial sums, added pairwise (lane l + lane
/// l + w for w = 8, 4, 2, 1): how every blocked sum ends.
#[inline]
pub fn reduce_lanes<A: Real>(mut a: [A; LANES]) -> A {
    let mut w = LANES;
    while w > 1 {
        w /= 2;
        for l in 0..w {
            a[l] += a[l + w];
        }
    }
    a[0]
}

/// [`channel_stats`] with blocked sums (see [`LANES`]), in f64 as there,
/// in one pass over the channel's values instead of two: Σd and Σd² of
/// d = x − K around a pilot mean K (the mean of the first sample's plane),
/// so μ = K + Σd/M and Σ(x − μ)² = Σd² − (Σd)²/M. Shifting by K keeps the
/// subtraction from cancelling (the sums' size is set by the spread of x
/// around K, not by x's offset), so the results agree with the two-pass
/// sums to within f64 rounding before they are rounded to `F`.
#[inline]
pub fn channel_stats_blocked<F: Real>(g: &BnGeom, x: &[F], ch: usize, eps: F) -> (F, F, F) {
    if g.m() == 0 {
        return finish_stats(g, 0.0, 0.0, eps);
    }
    let k = pilot_mean(g, x, ch);
    let [s1, s2] = blocked(g, ch, [x], |[v]| {
        let d = v.to_f64() - k;
        [d, d * d]
    });
    shifted_stats(g, k, s1, s2, eps)
}

/// The pilot mean K of [`channel_stats_blocked`]: the mean of channel
/// `ch`'s values in the first sample, summed in order in f64.
#[inline]
pub fn pilot_mean<F: Real>(g: &BnGeom, x: &[F], ch: usize) -> f64 {
    let o = ch * g.hw;
    x[o..o + g.hw].iter().fold(0.0f64, |a, v| a + v.to_f64()) / g.hw as f64
}

/// The statistics of [`channel_stats_blocked`] from its sums around the
/// pilot mean `k`: s1 = Σ(x − K), s2 = Σ(x − K)².
#[inline]
pub fn shifted_stats<F: Real>(g: &BnGeom, k: f64, s1: f64, s2: f64, eps: F) -> (F, F, F) {
    let m = g.m() as f64;
    let m2 = s2 - s1 * (s1 / m);
    finish_stats(g, k + s1 / m, m2.max(0.0), eps)
}

/// [`backward_sums`] with blocked sums (see [`LANES`]).
#[inline]
pub fn backward_sums_blocked<F: Real>(
    g: &BnGeom,
    x: &[F],
    dy: &[F],
    ch: usize,
    mu: F,
    is: F,
) -> (F, F) {
    let [a, b] = blocked(g, ch, [x, dy], backward_terms(mu, is));
    (a, b)
}

/// [`r_forward_means`] with blocked sums (see [`LANES`]).
#[inline]
pub fn r_forward_means_blocked<F: Real>(
    g: &BnGeom,
    x: &[F],
    rx: &[F],
    ch: usize,
    mu: F,
    is: F,
) -> (F, F) {
    let m = F::from_usize(g.m());
    let [a, b] = blocked(g, ch, [x, rx], r_forward_terms(mu, is));
    (a / m, b / m)
}

/// [`r_backward_sums`] with blocked sums (see [`LANES`]).
#[inline]
pub fn r_backward_sums_blocked<F: Real>(g: &BnGeom, a: &RBack<'_, F>, ch: usize) -> RSums<F> {
    r_backward_sums_in::<Blocked, F>(g, a, ch)
}

/// R{dx} over the plane starting at index `o` (H·W values) of channel `ch`.
#[inline]
pub fn r_backward_plane<F: Real>(
    g: &BnGeom,
    a: &RBack<'_, F>,
    ch: usize,
    o: usize,
    s: &RSums<F>,
    rdx: &mut [F],
    acc: bool,
) {
    let m = F::from_usize(g.m());
    let (mu, is) = (a.stats[ch], a.stats[g.c + ch]);
    let (ga, vga) = (a.gb[ch], a.vgb[ch]);
    let (ma, mb) = (a.rstats[ch], a.rstats[g.c + ch]);
    let rs = -(is * is) * mb;
    let mg = ga * s.dy / m;
    let mgx = ga * s.dyx / m;
    let mrg = (vga * s.dy + ga * s.rdy) / m;
    let mrgx = (vga * s.dyx + ga * s.rdyx) / m;
    let mgrx = ga * s.dyrxh / m;
    for (j, d) in rdx.iter_mut().enumerate() {
        let i = o + j;
        let xh = (a.x[i] - mu) * is;
        let gi = ga * a.dy[i];
        let rgi = vga * a.dy[i] + ga * a.rdy[i];
        let v = rs * (gi - mg - xh * mgx)
            + is * (rgi - mrg - rxh_at(a.rx, i, xh, is, ma, mb) * mgx - xh * (mrgx + mgrx));
        if acc {
            *d += v;
        } else {
            *d = v;
        }
    }
}

/// R-backward: R{dx} into `rdx` (when given) and R{dγ} (C), R{dβ} (C)
/// into `rsums`.
pub fn r_backward<F: Real>(
    g: &BnGeom,
    a: &RBack<'_, F>,
    mut rdx: Option<Dx<'_, F>>,
    rsums: &mut [F],
) {
    for ch in 0..g.c {
        let s = r_backward_sums(g, a, ch);
        rsums[ch] = s.rdyx + s.dyrxh;
        rsums[g.c + ch] = s.rdy;
        if let Some(d) = rdx.as_mut() {
            for n in 0..g.n {
                let o = (n * g.c + ch) * g.hw;
                r_backward_plane(g, a, ch, o, &s, &mut d.dx[o..o + g.hw], d.acc);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec::Vec;

    fn data(n: usize, seed: usize) -> Vec<f64> {
        (0..n)
            .map(|i| (((i * 7919 + seed * 104729) % 211) as f64 - 105.0) / 50.0)
            .collect()
    }

    /// With one value per plane every value goes to the first partial
    /// sum, in the serial loops' order: the same bits.
    #[test]
    fn blocked_sums_of_vectors_are_the_serial_ones() {
        let g = BnGeom { n: 37, c: 3, hw: 1 };
        let f = |v: Vec<f64>| v.into_iter().map(|x| x as f32).collect::<Vec<f32>>();
        let (x, dy) = (f(data(g.len(), 1)), f(data(g.len(), 3)));
        for ch in 0..3 {
            let (a1, b1) = backward_sums(&g, &x, &dy, ch, 0.25, 1.5);
            let (a2, b2) = backward_sums_blocked(&g, &x, &dy, ch, 0.25, 1.5);
            assert_eq!((a1.to_bits(), b1.to_bits()), (a2.to_bits(), b2.to_bits()));
        }
    }

    /// The one-pass statistics keep the two-pass ones' accuracy where a
    /// single pass around zero would cancel: values sharing a large
    /// offset, and a first plane (the pilot mean) far from the rest.
    #[test]
    fn one_pass_stats_match_two_pass_under_offsets() {
        let g = BnGeom {
            n: 64,
            c: 2,
            hw: 37,
        };
        for (offset, outlier) in [(1e6, 0.0), (1e3, 0.0), (0.0, 1e3), (1e6, -1e4)] {
            let mut x: Vec<f64> = data(g.len(), 8).iter().map(|v| v + offset).collect();
            for v in &mut x[..g.hw] {
                *v += outlier;
            }
            for ch in 0..2 {
                let (m1, i1, v1) = channel_stats(&g, &x, ch, 1e-5);
                let (m2, i2, v2) = channel_stats_blocked(&g, &x, ch, 1e-5);
                let rel = |a: f64, b: f64| (a - b).abs() / a.abs().max(1e-300);
                assert!(
                    rel(m1, m2) <= 1e-14 && rel(i1, i2) <= 1e-9 && rel(v1, v2) <= 1e-9,
                    "offset {offset} outlier {outlier}: {m1} {m2} {i1} {i2} {v1} {v2}"
                );
            }
        }
    }

    /// The blocked sums are the serial ones, rounded in another order:
    /// planes that fill the lanes, planes with a remainder, planes
    /// shorter than a lane.
    #[test]
    fn blocked_sums_match_serial() {
        for hw in [1, 5, 16, 37, 64] {
            let g = BnGeom { n: 3, c: 2, hw };
            let (x, rx, dy, rdy) = (
                data(g.len(), 1),
                data(g.len(), 2),
                data(g.len(), 3),
                data(g.len(), 4),
            );
            let close = |a: f64, b: f64| (a - b).abs() <= 1e-12 * (1.0 + a.abs());
            for ch in 0..2 {
                let (m1, i1, v1) = channel_stats(&g, &x, ch, 1e-5);
                let (m2, i2, v2) = channel_stats_blocked(&g, &x, ch, 1e-5);
                assert!(close(m1, m2) && close(i1, i2) && close(v1, v2), "hw {hw}");
                let (a1, b1) = backward_sums(&g, &x, &dy, ch, m1, i1);
                let (a2, b2) = backward_sums_blocked(&g, &x, &dy, ch, m1, i1);
                assert!(close(a1, a2) && close(b1, b2), "hw {hw}");
                let (a1, b1) = r_forward_means(&g, &x, &rx, ch, m1, i1);
                let (a2, b2) = r_forward_means_blocked(&g, &x, &rx, ch, m1, i1);
                assert!(close(a1, a2) && close(b1, b2), "hw {hw}");
            }
            let (stats, rstats) = (data(4, 5), data(4, 6));
            let gb = data(4, 7);
            for rx in [Some(&rx[..]), None] {
                let a = RBack {
                    x: &x,
                    rx,
                    dy: &dy,
                    rdy: &rdy,
                    gb: &gb,
                    vgb: &gb,
                    stats: &stats,
                    rstats: &rstats,
                };
                for ch in 0..2 {
                    let (s, t) = (
                        r_backward_sums(&g, &a, ch),
                        r_backward_sums_blocked(&g, &a, ch),
                    );
                    for (p, q) in [
                        (s.dy, t.dy),
                        (s.dyx, t.dyx),
                        (s.rdy, t.rdy),
                        (s.rdyx, t.rdyx),
                        (s.dyrxh, t.dyrxh),
                    ] {
                        assert!(close(p, q), "hw {hw}: {p} {q}");
                    }
                }
            }
        }
    }
}
