//! `fdgr flood-check`: flooding performs F-GR implicitly.
//!
//! Near the flood level b, with step size η on one fixed batch: if
//! L(θ₀) < b the flooding step ascends, θ₁ = θ₀ + η·g₀; if then L(θ₁) > b
//! the next step descends, θ₂ = θ₁ − η·∇L(θ₁). So
//! θ₂ = θ₀ − η·(∇L(θ₀ + η·g₀) − g₀): one forward finite-difference step on
//! ½‖∇L‖² with ε = η (≈ θ₀ − η²·H·g₀). This runs the real `flood` method
//! through the kernel's `step` and compares θ₂ with that expression, pair
//! by pair.

use crate::cpu::Par;
use crate::data::Dataset;
use anyhow::{anyhow, Result};
use fdgr_kernel::{
    init_mlp, step, Buffers, Method, Mlp, Objective, Rng, Sgd, SgdState, Shape, Targets,
};
use serde::Serialize;

/// One step pair.
#[derive(Clone, Debug, Serialize)]
pub struct PairRow {
    /// Pair number.
    pub pair: usize,
    /// L(θ₀).
    pub loss0: f64,
    /// Flood level b.
    pub level: f64,
    /// L(θ₁).
    pub loss1: f64,
    /// Whether the pair was an ascent then a descent (the identity's premise).
    pub ascent_then_descent: bool,
    /// max |θ₂ − (θ₀ − η(∇L(θ₀+ηg₀) − g₀))|.
    pub max_abs_diff: f64,
    /// The same in units of the f32 spacing at max |θ|.
    pub ulps: f64,
    /// ‖θ₂ − θ₀‖.
    pub step_norm: f64,
    /// ‖θ₂ − (θ₀ − η²Hg₀)‖ / ‖θ₂ − θ₀‖ (the second-order approximation).
    pub hessian_rel_err: f64,
}

/// Settings.
pub struct FloodCheck {
    /// Model.
    pub shape: Shape,
    /// Batch size (one fixed batch).
    pub batch: usize,
    /// Step size η (= ε of the implied finite difference).
    pub lr: f32,
    /// Plain SGD steps before the check, to reach a low loss.
    pub pretrain: usize,
    /// Step pairs to check.
    pub pairs: usize,
    /// Seed.
    pub seed: u64,
}

fn norm(v: impl Iterator<Item = f64>) -> f64 {
    v.map(|x| x * x).sum::<f64>().sqrt()
}

/// Runs the check; rows per pair.
pub fn run(c: &FloodCheck, data: &Dataset) -> Result<Vec<PairRow>> {
    let s = c.shape;
    let p = s.param_count();
    let f = s.inputs();
    let b = c.batch.min(data.train.len());
    let mut order: Vec<usize> = (0..data.train.len()).collect();
    let mut rng = Rng::new(c.seed);
    rng.shuffle(&mut order);
    let x: Vec<f32> = order[..b]
        .iter()
        .flat_map(|&i| data.train.x[i * f..(i + 1) * f].iter().copied())
        .collect();
    let y: Vec<u32> = order[..b].iter().map(|&i| data.train.y[i]).collect();
    let mut theta = vec![0.0f32; p];
    init_mlp(&s, &mut theta, &mut Rng::new(c.seed));
    let mut net = Mlp::new(
        s,
        Par { threads: 1 },
        vec![0.0f32; s.workspace_len(b, true)],
    );
    net.set_batch(&x, Targets::Classes(&y))
        .map_err(|e| anyhow!("{e}"))?;
    // A non-finite step is a divergence (exit code 3).
    let e = |e: fdgr_kernel::Error| -> anyhow::Error {
        match e {
            fdgr_kernel::Error::NonFinite => crate::train::Diverged(e.to_string()).into(),
            e => anyhow!("{e}"),
        }
    };
    let mut d = vec![0.0f32; p];
    let mut st = SgdState::default();
    for _ in 0..c.pretrain {
        let bufs = Buffers {
            theta: &mut theta[..],
            dir: &mut d[..],
            state: [None, None],
            point: None,
            point2: None,
            correction: None,
        };
        step(&mut net, &Method::Sgd, &Sgd::plain(), &mut st, c.lr, bufs).map_err(e)?;
    }
    let eta = c.lr;
    // the level: between L(θ₀) and L(θ₀ + η·g₀)
    let mut g0 = vec![0.0f32; p];
    let l0 = net
        .loss_grad(&theta, &mut g0, 1.0, 0.0, fdgr_kernel::Pass::Train)
        .map_err(e)?;
    let up: Vec<f32> = theta.iter().zip(&g0).map(|(t, g)| t + eta * g).collect();
    let l1 = net.loss(&up).map_err(e)?;
    let level = 0.5 * (l0 + l1);
    let method = Method::Flood { level };
    let mut rows = vec![];
    let (mut g1, mut pt, mut hg) = (vec![0.0f32; p], vec![0.0f32; p], vec![0.0f32; p]);
    for pair in 1..=c.pairs {
        let th0 = theta.clone();
        let loss0 = net
            .loss_grad(&th0, &mut g0, 1.0, 0.0, fdgr_kernel::Pass::Train)
            .map_err(e)?;
        for _ in 0..2 {
            let bufs = Buffers {
                theta: &mut theta[..],
                dir: &mut d[..],
                state: [None, None],
                point: None,
                point2: None,
                correction: None,
            };
            step(&mut net, &method, &Sgd::plain(), &mut st, eta, bufs).map_err(e)?;
        }
        // the forward finite-difference expression, evaluated independently
        for ((q, t), g) in pt.iter_mut().zip(&th0).zip(&g0) {
            *q = t + eta * g;
        }
        let loss1 = net
            .loss_grad(&pt, &mut g1, 1.0, 0.0, fdgr_kernel::Pass::Train)
            .map_err(e)?;
        let fd: Vec<f32> = (0..p).map(|k| th0[k] - eta * (g1[k] - g0[k])).collect();
        net.hvp(&th0, &g0, &mut hg).map_err(e)?;
        let max_abs = theta
            .iter()
            .zip(&fd)
            .map(|(a, b)| (a - b).abs() as f64)
            .fold(0.0, f64::max);
        let tmax = th0.iter().map(|t| t.abs()).fold(0.0f32, f32::max);
        let ulp = (f32::from_bits(tmax.to_bits() + 1) - tmax) as f64;
        let step_norm = norm(theta.iter().zip(&th0).map(|(a, b)| (a - b) as f64));
        let herr = norm(
            (0..p).map(|k| theta[k] as f64 - (th0[k] as f64 - (eta as f64).powi(2) * hg[k] as f64)),
        );
        rows.push(PairRow {
            pair,
            loss0: loss0 as f64,
            level: level as f64,
            loss1: loss1 as f64,
            ascent_then_descent: loss0 < level && loss1 > level,
            max_abs_diff: max_abs,
            ulps: max_abs / ulp,
            step_norm,
            hessian_rel_err: herr / step_norm.max(1e-300),
        });
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use fdgr_kernel::{Act, Loss};

    #[test]
    fn two_flood_steps_equal_one_fd_step_to_rounding() {
        let data = crate::data::load("digits", &Default::default()).unwrap();
        let c = FloodCheck {
            shape: Shape::try_new(&[64, 32, 10], Act::Tanh, Loss::SoftmaxCe).unwrap(),
            batch: 64,
            lr: 0.05,
            pretrain: 100,
            pairs: 6,
            seed: 1,
        };
        let rows = run(&c, &data).unwrap();
        let pairs: Vec<&PairRow> = rows.iter().filter(|r| r.ascent_then_descent).collect();
        assert!(
            pairs.len() >= 3,
            "most pairs must straddle the level: {rows:?}"
        );
        for r in pairs {
            assert!(r.ulps <= 4.0, "pair {}: {} ulps", r.pair, r.ulps);
            assert!(r.step_norm > 0.0);
            assert!(
                r.hessian_rel_err < 0.5,
                "η²Hg approximation: {}",
                r.hessian_rel_err
            );
        }
    }
}
