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

use crate::act::Act;
use crate::real::Real;

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
    let m = F::from_usize(g.m());
    let (gamma, beta) = gb.split_at(g.c);
    let (mean, invstd) = stats.split_at_mut(g.c);
    for ch in 0..g.c {
        let mut s = F::ZERO;
        each(g, ch, |i| s += x[i]);
        let mu = s / m;
        let mut v = F::ZERO;
        each(g, ch, |i| {
            let d = x[i] - mu;
            v += d * d;
        });
        let var = v / m;
        let is = F::ONE / (var + eps).sqrt();
        mean[ch] = mu;
        invstd[ch] = is;
        let (ga, be) = (gamma[ch], beta[ch]);
        each(g, ch, |i| y[i] = act.f(ga * ((x[i] - mu) * is) + be));
        if let Some(p) = pending.as_mut() {
            let unbiased = v / F::from_usize(g.m() - 1);
            let keep = F::ONE - p.momentum;
            p.out[ch] = p.momentum * mu + keep * p.running[ch];
            p.out[g.c + ch] = p.momentum * unbiased + keep * p.running[g.c + ch];
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
        let (ga, be) = (gb[ch], gb[g.c + ch]);
        each(g, ch, |i| y[i] = act.f(ga * ((x[i] - mu) * is) + be));
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

#[inline]
fn put<F: Real>(o: &mut F, v: F, alpha: F, beta: F) {
    *o = if beta == F::ZERO {
        alpha * v
    } else {
        beta * *o + alpha * v
    };
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
    let m = F::from_usize(g.m());
    for ch in 0..g.c {
        let (mu, is) = (stats[ch], stats[g.c + ch]);
        let (mut sdy, mut sdyx) = (F::ZERO, F::ZERO);
        each(g, ch, |i| {
            sdy += dy[i];
            sdyx += dy[i] * ((x[i] - mu) * is);
        });
        if let Some(p) = dp.as_mut() {
            put(&mut p.out[ch], sdyx, p.alpha, p.beta);
            put(&mut p.out[g.c + ch], sdy, p.alpha, p.beta);
        }
        if let Some(d) = dx.as_mut() {
            let k = gb[ch] * is;
            let (mdy, mdyx) = (sdy / m, sdyx / m);
            each(g, ch, |i| {
                let v = k * (dy[i] - mdy - ((x[i] - mu) * is) * mdyx);
                if d.acc {
                    d.dx[i] += v;
                } else {
                    d.dx[i] = v;
                }
            });
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
    let m = F::from_usize(g.m());
    for ch in 0..g.c {
        let (mu, is) = (stats[ch], stats[g.c + ch]);
        let (ga, vga, vbe) = (gb[ch], vgb[ch], vgb[g.c + ch]);
        match rx {
            Some(rx) => {
                let (mut a, mut b) = (F::ZERO, F::ZERO);
                each(g, ch, |i| {
                    a += rx[i];
                    b += ((x[i] - mu) * is) * rx[i];
                });
                let (a, b) = (a / m, b / m);
                rstats[ch] = a;
                rstats[g.c + ch] = b;
                each(g, ch, |i| {
                    let xh = (x[i] - mu) * is;
                    let rxh = is * (rx[i] - a - xh * b);
                    ry[i] = vga * xh + ga * rxh + vbe;
                });
            }
            None => {
                rstats[ch] = F::ZERO;
                rstats[g.c + ch] = F::ZERO;
                each(g, ch, |i| ry[i] = vga * ((x[i] - mu) * is) + vbe);
            }
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

/// R-backward: R{dx} into `rdx` (when given) and R{dγ} (C), R{dβ} (C)
/// into `rsums`.
pub fn r_backward<F: Real>(
    g: &BnGeom,
    a: &RBack<'_, F>,
    mut rdx: Option<Dx<'_, F>>,
    rsums: &mut [F],
) {
    let m = F::from_usize(g.m());
    let (x, dy, rdy) = (a.x, a.dy, a.rdy);
    for ch in 0..g.c {
        let (mu, is) = (a.stats[ch], a.stats[g.c + ch]);
        let (ga, vga) = (a.gb[ch], a.vgb[ch]);
        let (ma, mb) = (a.rstats[ch], a.rstats[g.c + ch]);
        // R{x̂} at index i (zero without R{x}).
        let rxh = |i: usize, xh: F| match a.rx {
            Some(rx) => is * (rx[i] - ma - xh * mb),
            None => F::ZERO,
        };
        let (mut sdy, mut sdyx, mut srdy, mut srdyx, mut sdyrxh) =
            (F::ZERO, F::ZERO, F::ZERO, F::ZERO, F::ZERO);
        each(g, ch, |i| {
            let xh = (x[i] - mu) * is;
            sdy += dy[i];
            sdyx += dy[i] * xh;
            srdy += rdy[i];
            srdyx += rdy[i] * xh;
            sdyrxh += dy[i] * rxh(i, xh);
        });
        rsums[ch] = srdyx + sdyrxh;
        rsums[g.c + ch] = srdy;
        if let Some(d) = rdx.as_mut() {
            let rs = -(is * is) * mb;
            let mg = ga * sdy / m;
            let mgx = ga * sdyx / m;
            let mrg = (vga * sdy + ga * srdy) / m;
            let mrgx = (vga * sdyx + ga * srdyx) / m;
            let mgrx = ga * sdyrxh / m;
            each(g, ch, |i| {
                let xh = (x[i] - mu) * is;
                let gi = ga * dy[i];
                let rgi = vga * dy[i] + ga * rdy[i];
                let v = rs * (gi - mg - xh * mgx)
                    + is * (rgi - mrg - rxh(i, xh) * mgx - xh * (mrgx + mgrx));
                if d.acc {
                    d.dx[i] += v;
                } else {
                    d.dx[i] = v;
                }
            });
        }
    }
}
