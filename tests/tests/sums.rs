//! The long f32 sums against float64: batch norm's training-mode
//! statistics (batch mean, 1/σ, the updated running mean and variance)
//! and the squared norm behind SAM's ascent step and gradient clipping,
//! computed in f32 by the serial executor and by the host's parallel one,
//! each within 1e-6 relative of the same quantity computed in f64 from
//! the same f32 inputs.
//!
//! The data is what defeats a plain f32 running sum: batch-norm inputs
//! with a large common offset (1000 + N(0, 1): a channel's running sum
//! reaches 10⁷ to 10⁸, where each addition rounds off up to 1 to 8) at
//! batches of 400 and 4096, as planes (N×4×8×8) and as vectors (N×16);
//! and gradients of over a million entries of mixed magnitudes.

use fdgr::cpu::Par;
use fdgr_kernel::serial::norm::Pending;
use fdgr_kernel::serial::BnGeom;
use fdgr_kernel::{Act, Exec, Rng, Serial};

/// The relative error allowed against float64.
const TOL: f64 = 1e-6;
const EPS: f64 = 1e-5;
const MOMENTUM: f64 = 0.1;

fn pool() -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .expect("a pool of 2 threads")
}

fn rel(got: f32, want: f64) -> f64 {
    (got as f64 - want).abs() / want.abs()
}

/// The statistics of one training-mode forward, in f64: per channel the
/// batch mean, 1/√(σ² + ε) (biased σ²), and the running mean and variance
/// updated from (0, 1) by PyTorch's rule (unbiased variance).
fn reference(g: &BnGeom, x: &[f32]) -> Vec<[f64; 4]> {
    let m = g.m() as f64;
    (0..g.c)
        .map(|ch| {
            let vals = || {
                (0..g.n).flat_map(move |n| {
                    let o = (n * g.c + ch) * g.hw;
                    x[o..o + g.hw].iter().map(|v| *v as f64)
                })
            };
            let mu = vals().sum::<f64>() / m;
            let m2: f64 = vals().map(|v| (v - mu) * (v - mu)).sum();
            [
                mu,
                1.0 / (m2 / m + EPS).sqrt(),
                MOMENTUM * mu,
                MOMENTUM * m2 / (m - 1.0) + (1.0 - MOMENTUM),
            ]
        })
        .collect()
}

/// The worst relative error of each statistic (mean, 1/σ, running mean,
/// running variance) of an f32 training-mode forward on `exec`.
fn bn_errors<E: Exec<f32>>(exec: &mut E, g: &BnGeom, x: &[f32], want: &[[f64; 4]]) -> [f64; 4] {
    let c = g.c;
    let gb: Vec<f32> = [vec![1.0; c], vec![0.0; c]].concat();
    let running: Vec<f32> = [vec![0.0; c], vec![1.0; c]].concat();
    let mut y = vec![0.0f32; g.len()];
    let (mut stats, mut out) = (vec![f32::NAN; 2 * c], vec![f32::NAN; 2 * c]);
    let pending = Pending {
        running: &running,
        out: &mut out,
        momentum: MOMENTUM as f32,
    };
    exec.bn_forward_train(
        g,
        x,
        &mut y,
        &gb,
        &mut stats,
        EPS as f32,
        Act::Identity,
        Some(pending),
    );
    let mut worst = [0.0f64; 4];
    for (ch, w) in want.iter().enumerate() {
        let got = [stats[ch], stats[c + ch], out[ch], out[c + ch]];
        for k in 0..4 {
            worst[k] = worst[k].max(rel(got[k], w[k]));
        }
    }
    worst
}

#[test]
fn batch_norm_statistics_are_within_1e6_of_float64() {
    let p = pool();
    let mut errors = vec![];
    // N×4×8×8 (BatchNorm2d) and N×16 (BatchNorm1d: one value per sample
    // and channel, so no plane to spread over partial sums)
    for (c, hw) in [(4, 64), (16, 1)] {
        for n in [400, 4096] {
            let g = BnGeom { n, c, hw };
            let mut rng = Rng::new((400 + n + hw) as u64);
            let x: Vec<f32> = (0..g.len())
                .map(|_| (1000.0 + rng.normal()) as f32)
                .collect();
            let want = reference(&g, &x);
            errors.push((g, "serial", bn_errors(&mut Serial, &g, &x, &want)));
            let host = p.install(|| bn_errors(&mut Par { threads: 2 }, &g, &x, &want));
            errors.push((g, "host", host));
        }
    }
    for (g, name, e) in &errors {
        eprintln!(
            "batch {} (C {}, HW {}), {name}: relative errors mean {:.2e}, 1/sigma {:.2e}, \
             running mean {:.2e}, running var {:.2e}",
            g.n, g.c, g.hw, e[0], e[1], e[2], e[3]
        );
    }
    for (g, name, e) in &errors {
        for (k, what) in ["mean", "1/sigma", "running mean", "running var"]
            .iter()
            .enumerate()
        {
            assert!(
                e[k] <= TOL,
                "{g:?}, {name}: {what} off by {:.2e} relative",
                e[k]
            );
        }
    }
}

/// ‖g‖ as SAM's ascent step and gradient clipping take it, √(gᵀg), over
/// more than a million entries of mixed magnitudes.
#[test]
fn gradient_norm_is_within_1e6_of_float64() {
    let p = pool();
    let mut errors = vec![];
    for len in [1 << 20, 3_000_017] {
        let mut rng = Rng::new(len as u64);
        let g: Vec<f32> = (0..len)
            .map(|i| {
                let scale = [1e-3, 1.0, 30.0][i % 3];
                (scale * rng.normal()) as f32
            })
            .collect();
        let want = g.iter().map(|v| *v as f64 * *v as f64).sum::<f64>().sqrt();
        let serial = rel(Exec::dot(&mut Serial, &g, &g).sqrt(), want);
        let host = p.install(|| Exec::dot(&mut Par { threads: 2 }, &g, &g));
        errors.push((len, serial, rel(host.sqrt(), want)));
    }
    for (len, serial, host) in &errors {
        eprintln!("{len} values: relative error of the norm, serial {serial:.2e}, host {host:.2e}");
    }
    for (len, serial, host) in errors {
        assert!(serial <= TOL, "{len} values, serial: {serial:.2e}");
        assert!(host <= TOL, "{len} values, host: {host:.2e}");
    }
}
