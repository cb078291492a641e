//! Optimizers and step options against PyTorch and against the exact
//! reductions they must satisfy: Adam, AdamW and SGD against a committed
//! PyTorch float64 trace; fgr with γ = 0 is sgd; amortized GR with a fresh
//! ascent every step is the plain method; a reused ascent is g + the
//! stored correction; clipping by global norm.

use fdgr_kernel::method::{self, Ascent, Buffers, Method, StepOptions};
use fdgr_kernel::optim::{update_slices, Adam, OptHyper, Optim, Optimizer, Sgd};
use fdgr_kernel::{step, step_with, Act, Loss, Objective, Pass, SgdState};
use fdgr_tests::*;

fn json() -> serde_json::Value {
    let p = concat!(env!("CARGO_MANIFEST_DIR"), "/data/optim_reference.json");
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn vec_of(v: &serde_json::Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

/// Each PyTorch optimizer's θ and state after every step, from the same
/// directions: fdgr's rule lands on the same float64 numbers. Each case is
/// run by the optimizer of `Optimizer::NAMES` whose label is its PyTorch
/// class, and every optimizer must have a case.
#[test]
fn optimizers_follow_pytorch_float64_trace() {
    let j = json();
    let theta0 = vec_of(&j["theta0"]);
    let ds: Vec<Vec<f64>> = j["directions"]
        .as_array()
        .unwrap()
        .iter()
        .map(vec_of)
        .collect();
    let n = theta0.len();
    let mut covered = vec![];
    for c in j["cases"].as_array().unwrap() {
        let name = c["name"].as_str().unwrap();
        let h = &c["hyper"];
        let f = |k: &str| h[k].as_f64().unwrap_or(0.0);
        let beta = |i: usize| h["betas"].get(i).and_then(|b| b.as_f64()).unwrap_or(0.0);
        let hyper = OptHyper {
            momentum: f("momentum"),
            nesterov: h["nesterov"].as_bool().unwrap_or(false),
            weight_decay: f("weight_decay"),
            beta1: beta(0),
            beta2: beta(1),
            eps: f("eps"),
        };
        let class = c["optimizer"].as_str().unwrap();
        let opt = Optimizer::<f64>::NAMES
            .iter()
            .filter_map(|o| Optimizer::named(o, hyper))
            .find(|o| o.label() == class)
            .unwrap_or_else(|| panic!("{name}: no optimizer of fdgr is PyTorch's {class}"));
        opt.validate().unwrap();
        covered.push(opt.name());
        let lr = f("lr");
        let mut theta = theta0.clone();
        let mut state = [vec![0.0; n], vec![0.0; n]];
        let mut worst = 0.0f64;
        let k = opt.state_vectors();
        for (t, d) in ds.iter().enumerate() {
            let e = opt.rule_elem(lr, t as u64);
            let [s0, s1] = &mut state;
            update_slices(
                &mut theta,
                d,
                (k >= 1).then_some(&mut s0[..]),
                (k >= 2).then_some(&mut s1[..]),
                &e,
            );
            let want = vec_of(&c["theta"][t]);
            let err = dist(&theta, &want) / norm(&want);
            worst = worst.max(err);
        }
        // each state vector under its PyTorch key (SGD's momentum is
        // torch's momentum_buffer)
        for (s, key) in state.iter().zip(opt.state_names()) {
            let st = &c["state"];
            let m = st
                .get(*key)
                .or_else(|| st.get(format!("{key}_buffer")))
                .unwrap_or_else(|| panic!("{name}: no state {key} in the reference"));
            worst = worst.max(dist(s, &vec_of(m)) / norm(&vec_of(m)));
        }
        println!("{name:<18} {class:<6} worst relative error {worst:.1e}");
        assert!(worst < 1e-14, "{name}: {worst:e}");
    }
    for o in Optimizer::<f64>::NAMES {
        assert!(
            covered.contains(&o),
            "optimizer {o} has no case in tests/data/optim_reference.json \
             (tests/reference/optim_reference.py)"
        );
    }
}

fn run_steps(
    p: &NetProblem<f64>,
    m: &Method<f64>,
    opt: &Optimizer<f64>,
    x: &[StepOptions<f64>],
    with_correction: bool,
) -> Vec<f64> {
    let mut o = p.objective();
    let n = p.theta.len();
    let mut theta = p.theta.clone();
    let (mut d, mut p1, mut p2) = (vec![0.0; n], vec![0.0; n], vec![0.0; n]);
    let (mut s0, mut s1, mut c) = (vec![0.0; n], vec![0.0; n], vec![0.0; n]);
    let mut st = SgdState::default();
    for opts in x {
        let b = Buffers {
            theta: &mut theta[..],
            dir: &mut d[..],
            state: [Some(&mut s0[..]), Some(&mut s1[..])],
            point: Some(&mut p1[..]),
            point2: Some(&mut p2[..]),
            correction: with_correction.then_some(&mut c[..]),
        };
        step_with(&mut o, m, opt, &mut st, 0.05, opts, b).unwrap();
    }
    theta
}

fn net() -> NetProblem<f64> {
    use fdgr_kernel::{Dims, Layer};
    let layers = [
        Layer::conv(4, 3).pad(1).no_bias(),
        Layer::batch_norm(),
        Layer::act(Act::Tanh),
        Layer::avg_pool(2),
        Layer::flatten(),
        Layer::linear(3),
    ];
    NetProblem::new(&layers, Dims::new(2, 6, 6), Loss::SoftmaxCe, 4, 31)
}

fn bits(v: &[f64]) -> Vec<u64> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// fgr with γ = 0 is sgd, bit for bit (step after step, SGD and Adam).
#[test]
fn fgr_with_zero_gamma_is_sgd() {
    let p = net();
    let x = [StepOptions::default(); 4];
    for opt in [Optimizer::Sgd(Sgd::paper()), Adam::adam_defaults().into()] {
        let a = run_steps(&p, &Method::Sgd, &opt, &x, false);
        let b = run_steps(
            &p,
            &Method::Fgr {
                gamma: 0.0,
                eps: 0.1,
            },
            &opt,
            &x,
            false,
        );
        assert_eq!(bits(&a), bits(&b), "{}", opt.name());
    }
}

/// Amortized GR with a fresh ascent every step (`--gr-every 1`) is the
/// plain method, bit for bit, for every method and both optimizers.
#[test]
fn fresh_every_step_is_the_plain_method() {
    let p = net();
    let x = [StepOptions::default(); 3];
    for m in Method::all(0.05, 0.1, 0.05, 1.0) {
        for opt in [Optimizer::Sgd(Sgd::paper()), Adam::adamw_defaults().into()] {
            let a = run_steps(&p, &m, &opt, &x, false);
            let b = run_steps(&p, &m, &opt, &x, true);
            assert_eq!(bits(&a), bits(&b), "{} {}", m.name(), opt.name());
        }
    }
}

/// A reused ascent: fgr, bgr, cgr, db take d = g + (the fresh step's
/// d − g); sam and usam take the gradient at θ + the fresh step's offset.
#[test]
fn reused_ascent_applies_the_stored_correction() {
    let p = net();
    let n = p.theta.len();
    for m in Method::all(0.05, 0.1, 0.05, 1.0) {
        let mut o = p.objective();
        let (mut d, mut p1, mut p2, mut c) =
            (vec![0.0; n], vec![0.0; n], vec![0.0; n], vec![0.0; n]);
        // a fresh direction at θ stores the correction...
        method::direction_amortized(
            &mut o,
            &m,
            &p.theta,
            &mut d,
            &mut Some(&mut p1[..]),
            &mut Some(&mut p2[..]),
            &mut c,
            Ascent::Fresh,
        )
        .unwrap();
        let fresh = d.clone();
        let g = grad(&mut o, &p.theta);
        // ... which a reused step at θ' applies
        let theta2: Vec<f64> = p.theta.iter().map(|t| t * 0.97 + 0.01).collect();
        method::direction_amortized(
            &mut o,
            &m,
            &theta2,
            &mut d,
            &mut Some(&mut p1[..]),
            &mut Some(&mut p2[..]),
            &mut c,
            Ascent::Reuse,
        )
        .unwrap();
        let g2 = grad(&mut o, &theta2);
        let want: Vec<f64> = match m {
            Method::Sam { .. } | Method::Usam { .. } => {
                // the offset of the fresh step, θ + offset
                let mut pt = vec![0.0; n];
                method::direction(
                    &mut o,
                    &m,
                    &p.theta,
                    &mut pt,
                    &mut Some(&mut p1[..]),
                    &mut None,
                )
                .unwrap();
                let off: Vec<f64> = p1.iter().zip(&p.theta).map(|(a, b)| a - b).collect();
                let q: Vec<f64> = theta2.iter().zip(&off).map(|(t, o)| t + o).collect();
                let mut gq = vec![0.0; n];
                o.loss_grad(&q, &mut gq, 1.0, 0.0, Pass::Probe).unwrap();
                gq
            }
            Method::Sgd | Method::Flood { .. } => {
                let mut dd = vec![0.0; n];
                method::direction(&mut o, &m, &theta2, &mut dd, &mut None, &mut None).unwrap();
                dd
            }
            _ => g2
                .iter()
                .zip(&fresh)
                .zip(&g)
                .map(|((a, f), g)| a + (f - g))
                .collect(),
        };
        let err = dist(&d, &want) / norm(&want);
        assert!(err < 1e-12, "{}: {err:e}", m.name());
    }
}

/// Clipping by global norm: a long direction is scaled to the limit (as
/// PyTorch's clip_grad_norm_ does, c/(‖d‖ + 1e-6)), a short one is not.
#[test]
fn clipping_by_global_norm() {
    let p = net();
    let n = p.theta.len();
    let mut o = p.objective();
    let g = grad(&mut o, &p.theta);
    let gn = norm(&g);
    for (limit, scaled) in [(gn / 4.0, true), (gn * 4.0, false)] {
        let mut theta = p.theta.clone();
        let mut d = vec![0.0; n];
        let mut st = SgdState::default();
        let b = Buffers {
            theta: &mut theta[..],
            dir: &mut d[..],
            state: [None, None],
            point: None,
            point2: None,
            correction: None,
        };
        let x = StepOptions {
            clip_norm: Some(limit),
            ascent: Ascent::Fresh,
        };
        step_with(&mut o, &Method::Sgd, &Sgd::plain(), &mut st, 1.0, &x, b).unwrap();
        let dn = norm(&d);
        if scaled {
            assert!(
                (dn - limit * gn / (gn + 1e-6)).abs() < 1e-12 * limit,
                "{dn} vs {limit}"
            );
        } else {
            assert_eq!(bits(&d), bits(&g));
        }
        // θ moved by exactly −d (lr 1, plain SGD)
        let moved: Vec<f64> = p.theta.iter().zip(&theta).map(|(a, b)| a - b).collect();
        assert!(dist(&moved, &d) < 1e-12 * dn);
    }
}

/// Adam needs its two state vectors; an SGD step gets the same result
/// through `step` and `step_with` with default options.
#[test]
fn optimizer_buffers_are_checked() {
    let p = net();
    let n = p.theta.len();
    let mut o = p.objective();
    let mut theta = p.theta.clone();
    let (mut d, mut s0) = (vec![0.0; n], vec![0.0; n]);
    let mut st = SgdState::default();
    let b = Buffers {
        theta: &mut theta[..],
        dir: &mut d[..],
        state: [Some(&mut s0[..]), None],
        point: None,
        point2: None,
        correction: None,
    };
    let r = step(
        &mut o,
        &Method::Sgd,
        &Adam::adam_defaults(),
        &mut st,
        0.1,
        b,
    );
    assert!(
        matches!(r, Err(fdgr_kernel::Error::MissingBuffer(_))),
        "{r:?}"
    );
    assert_eq!(theta, p.theta);
    let bad = Adam {
        beta1: 1.0,
        ..Adam::adam_defaults()
    };
    assert!(Optim::validate(&bad).is_err());
}

/// Adam with β₁ = 0 is RMSprop with bias correction, computed here by hand
/// in the textbook form: m = d, v ← β₂v + (1 − β₂)d², θ ← θ − lr·d /
/// (√(v / (1 − β₂ᵗ)) + ε). The state vectors hold d and v.
#[test]
fn adam_with_zero_beta1_is_the_rmsprop_like_hand_case() {
    let (lr, beta2, eps) = (0.01, 0.9, 1e-3);
    let opt: Optimizer<f64> = Adam {
        beta1: 0.0,
        beta2,
        eps,
        weight_decay: 0.0,
        decoupled: false,
    }
    .into();
    let ds = [[0.5, -2.0, 0.0], [1.5, 1.0, -0.25], [-0.5, 4.0, 0.125]];
    let mut theta = vec![1.0, -1.0, 0.5];
    let (mut s0, mut s1) = (vec![0.0; 3], vec![0.0; 3]);
    let mut hand = theta.clone();
    let mut v = [0.0f64; 3];
    for (t, d) in ds.iter().enumerate() {
        update_slices(
            &mut theta,
            d,
            Some(&mut s0[..]),
            Some(&mut s1[..]),
            &opt.rule_elem(lr, t as u64),
        );
        let bc2 = 1.0 - beta2.powi(t as i32 + 1);
        for i in 0..3 {
            v[i] = beta2 * v[i] + (1.0 - beta2) * d[i] * d[i];
            hand[i] -= lr * d[i] / ((v[i] / bc2).sqrt() + eps);
        }
        for i in 0..3 {
            assert!(
                (theta[i] - hand[i]).abs() <= 1e-15 * hand[i].abs().max(1.0),
                "step {t} element {i}: {} vs hand {}",
                theta[i],
                hand[i]
            );
            assert_eq!(s0[i], d[i], "β₁ = 0: the first moment is d");
            assert!((s1[i] - v[i]).abs() <= 1e-16 * v[i].max(1.0));
        }
    }
}

/// The net's one-pass `loss_grad_gr_and_grad` (g copied out between the
/// gradient and the R-pass) gives the bits of the two-pass default.
#[test]
fn gr_direction_with_gradient_in_one_pass() {
    let p = net();
    let n = p.theta.len();
    let mut o = p.objective();
    let (mut d, mut g) = (vec![0.0; n], vec![0.0; n]);
    let l = o
        .loss_grad_gr_and_grad(&p.theta, &mut d, &mut g, 0.05)
        .unwrap();
    let (mut d2, mut g2) = (vec![0.0; n], vec![0.0; n]);
    let l2 = o.loss_grad_gr(&p.theta, &mut d2, 0.05).unwrap();
    o.loss_grad(&p.theta, &mut g2, 1.0, 0.0, Pass::Probe)
        .unwrap();
    assert_eq!(l.to_bits(), l2.to_bits());
    assert_eq!(bits(&d), bits(&d2));
    assert_eq!(bits(&g), bits(&g2));
    assert_ne!(bits(&d), bits(&g), "γ·Hg is not zero here");
}
