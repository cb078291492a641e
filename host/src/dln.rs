//! `fdgr dln`: the paper's diagonal linear network experiment.
//!
//! Under-determined sparse regression (n < d, y = Xβ*, β* with k non-zeros,
//! X Gaussian) fitted by β = u⊙u − v⊙v from u = v = α·1, with each method
//! run through the kernel's own `step` on the kernel's [`Dln`] objective
//! (full batch, plain SGD, small constant step). Reports where each method
//! lands: recovery error ‖β̂ − β*‖₂, ‖β̂‖₁, training loss, steps.
//!
//! Reference: plain gradient flow converges to the interpolator minimising
//! Q_α(β) = α²·Σ q(βᵢ/α²), q(z) = 2 − √(4 + z²) + z·asinh(z/2)
//! (Woodworth et al. 2020). [`min_q_interpolator`] computes it from the
//! concave dual max_λ λᵀy − 2α²·Σ(cosh((Xᵀλ)ᵢ) − 1), whose maximiser gives
//! β = 2α²·sinh(Xᵀλ), by Newton's method with backtracking.

use anyhow::{bail, Result};
use fdgr_kernel::dln::Dln;
use fdgr_kernel::{step, Buffers, Method, Objective, Rng, Sgd, SgdState};
use serde::Serialize;

/// A sparse regression problem.
#[derive(Clone, Debug)]
pub struct Problem {
    /// Dimension d.
    pub d: usize,
    /// Samples n.
    pub n: usize,
    /// X, n × d row-major, entries N(0, 1).
    pub x: Vec<f64>,
    /// y = Xβ*.
    pub y: Vec<f64>,
    /// The sparse truth: k entries ±1 at random positions, the rest 0.
    pub beta_star: Vec<f64>,
}

impl Problem {
    /// A seeded problem.
    pub fn new(d: usize, n: usize, k: usize, seed: u64) -> Result<Problem> {
        if n == 0 || d == 0 || k == 0 || k > d {
            bail!("dln: need d, n, k > 0 and k <= d (got d={d}, n={n}, k={k})");
        }
        let mut rng = Rng::new(seed);
        let x: Vec<f64> = (0..n * d).map(|_| rng.normal()).collect();
        let mut idx: Vec<usize> = (0..d).collect();
        rng.shuffle(&mut idx);
        let mut beta_star = vec![0.0; d];
        for &i in &idx[..k] {
            beta_star[i] = if rng.uniform() < 0.5 { -1.0 } else { 1.0 };
        }
        let y = (0..n)
            .map(|r| (0..d).map(|c| x[r * d + c] * beta_star[c]).sum())
            .collect();
        Ok(Problem {
            d,
            n,
            x,
            y,
            beta_star,
        })
    }

    /// ‖β − β*‖₂.
    pub fn recovery_error(&self, beta: &[f64]) -> f64 {
        beta.iter()
            .zip(&self.beta_star)
            .map(|(a, b)| (a - b) * (a - b))
            .sum::<f64>()
            .sqrt()
    }

    /// Training loss (1/2n)‖Xβ − y‖².
    pub fn loss(&self, beta: &[f64]) -> f64 {
        let (n, d) = (self.n, self.d);
        (0..n)
            .map(|r| {
                let e = (0..d).map(|c| self.x[r * d + c] * beta[c]).sum::<f64>() - self.y[r];
                e * e
            })
            .sum::<f64>()
            / (2.0 * n as f64)
    }
}

/// One DLN run's result (a `--json` line).
#[derive(Clone, Debug, Serialize)]
pub struct DlnRow {
    /// Method.
    pub method: String,
    /// Signed ε: positive for fgr (ascent first), negative for bgr; 0 otherwise.
    pub eps: f64,
    /// γ (0 for sgd).
    pub gamma: f64,
    /// Initialisation scale α.
    pub alpha: f64,
    /// ‖β̂ − β*‖₂.
    pub recovery_error: f64,
    /// ‖β̂‖₁.
    pub l1_norm: f64,
    /// Final training loss.
    pub train_loss: f64,
    /// Effective scale √(mean uᵢvᵢ): uᵢvᵢ = α² is conserved by gradient
    /// flow, so a value below α means the run behaved as if α were smaller.
    pub alpha_eff: f64,
    /// Spread of the per-coordinate scales √(uᵢvᵢ): max / min.
    pub alpha_eff_spread: f64,
    /// Steps taken.
    pub steps: u64,
    /// Whether the training loss reached the tolerance.
    pub converged: bool,
}

/// Training settings.
#[derive(Clone, Copy, Debug)]
pub struct Settings {
    /// Step size.
    pub lr: f64,
    /// Step budget.
    pub max_steps: u64,
    /// Stop when L < tol·L(0).
    pub tol: f64,
}

/// Trains the DLN from u = v = α·1 with `method`; returns β̂ and its row.
pub fn train(
    p: &Problem,
    method: Method<f64>,
    alpha: f64,
    s: &Settings,
) -> Result<(Vec<f64>, DlnRow)> {
    let d = p.d;
    let mut ws = vec![0.0; Dln::<f64>::workspace_len(p.n, d)];
    let mut obj = Dln::new(&p.x, &p.y, d, &mut ws).map_err(|e| anyhow::anyhow!("dln: {e}"))?;
    let mut theta = vec![alpha; 2 * d];
    let (mut dir, mut pt, mut pt2) = (vec![0.0; 2 * d], vec![0.0; 2 * d], vec![0.0; 2 * d]);
    let l0 = obj.loss(&theta).map_err(|e| anyhow::anyhow!("dln: {e}"))?;
    let mut st = SgdState::default();
    let mut loss = l0;
    let mut steps = 0;
    while steps < s.max_steps && loss > s.tol * l0 {
        let b = Buffers {
            theta: &mut theta[..],
            dir: &mut dir[..],
            state: [None, None],
            point: Some(&mut pt[..]),
            point2: Some(&mut pt2[..]),
            correction: None,
        };
        loss = step(&mut obj, &method, &Sgd::plain(), &mut st, s.lr, b).map_err(|e| {
            let msg = format!("dln: {} diverged at step {steps}: {e}", method.name());
            match e {
                fdgr_kernel::Error::NonFinite => crate::train::Diverged(msg).into(),
                _ => anyhow::anyhow!(msg),
            }
        })?;
        steps += 1;
    }
    let mut beta = vec![0.0; d];
    Dln::<f64>::beta(&theta, &mut beta);
    let train_loss = p.loss(&beta);
    let (gamma, eps) = match method {
        Method::Db { gamma } => (gamma, 0.0),
        Method::Fgr { gamma, eps } => (gamma, eps),
        Method::Bgr { gamma, eps } => (gamma, -eps),
        Method::Cgr { gamma, eps } => (gamma, eps),
        _ => (0.0, 0.0),
    };
    let uv: Vec<f64> = (0..d)
        .map(|i| (theta[i] * theta[d + i]).abs().sqrt())
        .collect();
    let alpha_eff = (uv.iter().map(|v| v * v).sum::<f64>() / d as f64).sqrt();
    let spread =
        uv.iter().cloned().fold(0.0, f64::max) / uv.iter().cloned().fold(f64::INFINITY, f64::min);
    let row = DlnRow {
        method: method.name().into(),
        eps,
        gamma,
        alpha,
        recovery_error: p.recovery_error(&beta),
        l1_norm: beta.iter().map(|b| b.abs()).sum(),
        train_loss,
        alpha_eff,
        alpha_eff_spread: spread,
        steps,
        converged: train_loss <= s.tol * l0 * 1.0001,
    };
    Ok((beta, row))
}

/// Solves A·x = b (n × n, row-major) by Gaussian elimination with partial
/// pivoting; None if singular.
fn solve(mut a: Vec<f64>, mut b: Vec<f64>, n: usize) -> Option<Vec<f64>> {
    for c in 0..n {
        let piv = (c..n).max_by(|&i, &j| a[i * n + c].abs().total_cmp(&a[j * n + c].abs()))?;
        if a[piv * n + c].abs() < 1e-300 {
            return None;
        }
        if piv != c {
            for k in 0..n {
                a.swap(piv * n + k, c * n + k);
            }
            b.swap(piv, c);
        }
        for r in c + 1..n {
            let f = a[r * n + c] / a[c * n + c];
            for k in c..n {
                a[r * n + k] -= f * a[c * n + k];
            }
            b[r] -= f * b[c];
        }
    }
    let mut x = vec![0.0; n];
    for r in (0..n).rev() {
        let s: f64 = (r + 1..n).map(|k| a[r * n + k] * x[k]).sum();
        x[r] = (b[r] - s) / a[r * n + r];
    }
    Some(x)
}

/// The interpolator (Xβ = y) minimising Q_α: where gradient flow from
/// u = v = α lands. Returns β.
pub fn min_q_interpolator(p: &Problem, alpha: f64) -> Result<Vec<f64>> {
    let (n, d) = (p.n, p.d);
    let a2 = 2.0 * alpha * alpha;
    let s_of = |lam: &[f64]| -> Vec<f64> {
        (0..d)
            .map(|c| (0..n).map(|r| p.x[r * d + c] * lam[r]).sum())
            .collect()
    };
    let dual = |lam: &[f64], s: &[f64]| -> f64 {
        if s.iter().any(|v| v.abs() > 700.0) {
            return f64::NEG_INFINITY;
        }
        lam.iter().zip(&p.y).map(|(l, y)| l * y).sum::<f64>()
            - a2 * s.iter().map(|v| v.cosh() - 1.0).sum::<f64>()
    };
    let ynorm = p.y.iter().map(|v| v * v).sum::<f64>().sqrt();
    let mut lam = vec![0.0; n];
    let mut s = s_of(&lam);
    for _ in 0..500 {
        let beta: Vec<f64> = s.iter().map(|v| a2 * v.sinh()).collect();
        let resid: Vec<f64> = (0..n)
            .map(|r| p.y[r] - (0..d).map(|c| p.x[r * d + c] * beta[c]).sum::<f64>())
            .collect();
        let rn = resid.iter().map(|v| v * v).sum::<f64>().sqrt();
        if rn <= 1e-11 * ynorm.max(1e-300) {
            return Ok(beta);
        }
        let w: Vec<f64> = s.iter().map(|v| a2 * v.cosh()).collect();
        let mut h = vec![0.0; n * n];
        for i in 0..n {
            for j in i..n {
                let v: f64 = (0..d).map(|c| p.x[i * d + c] * w[c] * p.x[j * d + c]).sum();
                h[i * n + j] = v;
                h[j * n + i] = v;
            }
        }
        let step = solve(h, resid.clone(), n)
            .ok_or_else(|| anyhow::anyhow!("dln reference: singular Newton system"))?;
        let f0 = dual(&lam, &s);
        let slope: f64 = step.iter().zip(&resid).map(|(a, b)| a * b).sum();
        let resid_norm = |s: &[f64]| -> f64 {
            let beta: Vec<f64> = s.iter().map(|v| a2 * v.sinh()).collect();
            (0..n)
                .map(|r| {
                    let e = p.y[r] - (0..d).map(|c| p.x[r * d + c] * beta[c]).sum::<f64>();
                    e * e
                })
                .sum::<f64>()
                .sqrt()
        };
        let mut t = 1.0;
        loop {
            let cand: Vec<f64> = lam.iter().zip(&step).map(|(l, d)| l + t * d).collect();
            let cs = s_of(&cand);
            let fc = dual(&cand, &cs);
            // Armijo on the dual; near the optimum, where the dual's change
            // is below rounding, a full step that shrinks the residual.
            let armijo = fc >= f0 + 1e-4 * t * slope;
            let flat = fc.is_finite() && (fc - f0).abs() <= 1e-12 * f0.abs().max(1.0);
            if armijo || (flat && resid_norm(&cs) < rn) || t < 1e-12 {
                lam = cand;
                s = cs;
                break;
            }
            t *= 0.5;
        }
    }
    bail!("dln reference: Newton's method did not converge (α = {alpha})")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Small steps of plain GD land on the minimum-Q_α interpolator.
    #[test]
    fn gradient_descent_lands_on_the_min_q_interpolator() {
        let p = Problem::new(30, 12, 3, 3).unwrap();
        for alpha in [0.3, 1.0] {
            let r = min_q_interpolator(&p, alpha).unwrap();
            assert!(p.loss(&r) < 1e-20);
            let s = Settings {
                lr: 0.01,
                max_steps: 400_000,
                tol: 1e-14,
            };
            let (beta, row) = train(&p, Method::Sgd, alpha, &s).unwrap();
            assert!(row.converged, "{row:?}");
            let gap: f64 = beta
                .iter()
                .zip(&r)
                .map(|(a, b)| (a - b) * (a - b))
                .sum::<f64>()
                .sqrt();
            let scale = r.iter().map(|v| v * v).sum::<f64>().sqrt();
            assert!(
                gap < 0.02 * scale,
                "α={alpha}: GD {gap} away from the reference"
            );
        }
        // and the reference interpolates differently for different α
        let a = min_q_interpolator(&p, 0.05).unwrap();
        let b = min_q_interpolator(&p, 2.0).unwrap();
        let l1 = |v: &[f64]| v.iter().map(|x| x.abs()).sum::<f64>();
        assert!(l1(&a) < l1(&b), "small α is closer to minimum ℓ1");
    }
}

/// The grid of a `fdgr dln` experiment.
#[derive(Clone, Debug)]
pub struct Grid {
    /// Methods (sgd, db, fgr, bgr, cgr).
    pub methods: Vec<crate::config::MethodName>,
    /// Signed ε values: > 0 runs fgr (and cgr), < 0 runs bgr with |ε|.
    pub epss: Vec<f64>,
    /// γ values.
    pub gammas: Vec<f64>,
    /// α values.
    pub alphas: Vec<f64>,
}

/// The runs of a grid, and the gradient-flow reference per α.
pub type GridResult = (Vec<DlnRow>, Vec<(f64, DlnRow)>);

/// Every run of the grid, in parallel over runs, and the references.
pub fn run_grid(p: &Problem, g: &Grid, s: &Settings) -> Result<GridResult> {
    use rayon::prelude::*;
    let mut jobs: Vec<(Method<f64>, f64)> = vec![];
    for &alpha in &g.alphas {
        for &m in &g.methods {
            // the kind of method; its γ and ε come from the grid
            let kind = m.method(0.0, 1.0, 0.0, 0.0);
            match kind {
                Method::Sgd => jobs.push((Method::Sgd, alpha)),
                Method::Db { .. } => {
                    jobs.extend(g.gammas.iter().map(|&gamma| (Method::Db { gamma }, alpha)))
                }
                Method::Fgr { .. } | Method::Bgr { .. } | Method::Cgr { .. } => {
                    for &gamma in &g.gammas {
                        for &e in &g.epss {
                            let job = match kind {
                                Method::Fgr { .. } if e > 0.0 => Method::Fgr { gamma, eps: e },
                                Method::Bgr { .. } if e < 0.0 => Method::Bgr { gamma, eps: -e },
                                Method::Cgr { .. } if e > 0.0 => Method::Cgr { gamma, eps: e },
                                _ => continue,
                            };
                            jobs.push((job, alpha));
                        }
                    }
                }
                _ => bail!(
                    "dln: method {} is not part of this experiment (use sgd, db, fgr, bgr, cgr)",
                    m.as_str()
                ),
            }
        }
    }
    let rows: Vec<DlnRow> = jobs
        .par_iter()
        .map(|(m, a)| train(p, *m, *a, s).map(|r| r.1))
        .collect::<Result<_>>()?;
    let refs = g
        .alphas
        .iter()
        .map(|&a| {
            let b = min_q_interpolator(p, a)?;
            Ok((
                a,
                DlnRow {
                    method: "gradient-flow reference (min Q_α)".into(),
                    eps: 0.0,
                    gamma: 0.0,
                    alpha: a,
                    recovery_error: p.recovery_error(&b),
                    l1_norm: b.iter().map(|v| v.abs()).sum(),
                    train_loss: p.loss(&b),
                    alpha_eff: a,
                    alpha_eff_spread: 1.0,
                    steps: 0,
                    converged: true,
                },
            ))
        })
        .collect::<Result<_>>()?;
    Ok((rows, refs))
}

/// What a DLN plot shows on its y axis.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Metric {
    /// ‖β̂ − β*‖₂.
    Recovery,
    /// α_eff = √(mean uᵢvᵢ).
    AlphaEff,
}

impl Metric {
    fn of(self, r: &DlnRow) -> f64 {
        match self {
            Metric::Recovery => r.recovery_error,
            Metric::AlphaEff => r.alpha_eff,
        }
    }
}

/// Writes the metric-versus-signed-ε plot for one α: one line per γ for
/// F-GR (ε > 0) and B-GR (ε < 0), with DB, GD and the reference dashed.
pub fn plot(
    path: &std::path::Path,
    rows: &[DlnRow],
    reference: Option<&DlnRow>,
    alpha: f64,
    metric: Metric,
) -> Result<()> {
    use crate::plot::{lines, Series};
    let rs: Vec<&DlnRow> = rows.iter().filter(|r| r.alpha == alpha).collect();
    let fd = |r: &&&DlnRow| r.method == "fgr" || r.method == "bgr";
    let mut epss: Vec<f64> = rs.iter().filter(fd).map(|r| r.eps).collect();
    epss.sort_by(f64::total_cmp);
    epss.dedup();
    let (lo, hi) = (
        epss.first().copied().unwrap_or(-1.0),
        epss.last().copied().unwrap_or(1.0),
    );
    let flat = |label: String, v: f64| Series {
        label,
        points: vec![(lo, v), (hi, v)],
        dashed: true,
    };
    let mut gammas: Vec<f64> = rs.iter().filter(fd).map(|r| r.gamma).collect();
    gammas.sort_by(f64::total_cmp);
    gammas.dedup();
    let mut series = vec![];
    for &g in &gammas {
        let mut pts: Vec<(f64, f64)> = rs
            .iter()
            .filter(fd)
            .filter(|r| r.gamma == g)
            .map(|r| (r.eps, metric.of(r)))
            .collect();
        pts.sort_by(|a, b| a.0.total_cmp(&b.0));
        series.push(Series {
            label: format!("F-GR (ε>0) / B-GR (ε<0), γ={g}"),
            points: pts,
            dashed: false,
        });
    }
    for r in rs.iter().filter(|r| r.method == "db") {
        series.push(flat(format!("DB (exact GR), γ={}", r.gamma), metric.of(r)));
    }
    if let Some(r) = rs.iter().find(|r| r.method == "sgd") {
        series.push(flat("GD (no GR)".into(), metric.of(r)));
    }
    if let Some(r) = reference {
        let label = match metric {
            Metric::Recovery => "gradient-flow reference: min Q_α",
            Metric::AlphaEff => "α (gradient flow conserves uᵢvᵢ = α²)",
        };
        series.push(flat(label.into(), metric.of(r)));
    }
    let (title, y) = match metric {
        Metric::Recovery => (
            format!("DLN: recovery error ‖β̂ − β*‖ vs ε (α = {alpha})"),
            "‖β̂ − β*‖₂",
        ),
        Metric::AlphaEff => (
            format!("DLN: effective scale √(mean uᵢvᵢ) vs ε (α = {alpha})"),
            "α_eff",
        ),
    };
    lines(
        path,
        &title,
        "ε (negative: B-GR, positive: F-GR)",
        y,
        &series,
    )
}

#[cfg(test)]
mod claim_tests {
    use super::*;

    /// The paper's mechanism, measured: GR shrinks the effective scale
    /// α_eff = √(mean uᵢvᵢ) (which gradient flow conserves), F-GR more so as
    /// ε grows, B-GR less.
    #[test]
    fn gr_shrinks_the_effective_alpha_in_the_papers_order() {
        let p = Problem::new(60, 24, 4, 2).unwrap();
        let s = Settings {
            lr: 0.01,
            max_steps: 200_000,
            tol: 1e-10,
        };
        let alpha = 0.2;
        let a = |m: Method<f64>| train(&p, m, alpha, &s).unwrap().1.alpha_eff;
        let gd = a(Method::Sgd);
        let db = a(Method::Db { gamma: 0.05 });
        let f_small = a(Method::Fgr {
            gamma: 0.05,
            eps: 0.1,
        });
        let f_large = a(Method::Fgr {
            gamma: 0.05,
            eps: 0.5,
        });
        let b_large = a(Method::Bgr {
            gamma: 0.05,
            eps: 0.5,
        });
        assert!(
            gd <= alpha && gd > 0.99 * alpha,
            "GD nearly conserves uv: {gd}"
        );
        assert!(db < gd, "DB shrinks α_eff: {db} vs {gd}");
        assert!(
            f_large < f_small && f_small < db,
            "F-GR stronger with ε: {f_large} {f_small} {db}"
        );
        assert!(b_large > db, "B-GR weaker: {b_large} vs {db}");
    }
}
