//! The kernel against the maths (ALGORITHMS.md, "Identities that must
//! hold"), in f64 unless a test says otherwise.

use fdgr_kernel::method::{self, Buffers, Method};
use fdgr_kernel::{step, Act, Error, Loss, Mlp, Objective, Serial, Sgd, SgdState, Targets};
use fdgr_tests::*;

const CASES: &[(&[usize], Act, Loss)] = &[
    (&[5, 4, 3], Act::Tanh, Loss::SoftmaxCe),
    (&[5, 4, 3], Act::Sigmoid, Loss::Mse),
    (&[6, 5, 4, 3], Act::Relu, Loss::SoftmaxCe),
    (&[3, 4, 4, 3, 2], Act::Tanh, Loss::Mse),
    (&[4, 3], Act::Identity, Loss::SoftmaxCe),
];

#[test]
fn gradient_matches_central_differences() {
    for (i, &(dims, act, loss)) in CASES.iter().enumerate() {
        let p = Problem::<f64>::new(dims, act, loss, 3, 10 + i as u64);
        let mut o = p.objective();
        let g = grad(&mut o, &p.theta);
        let num = numerical_grad(&mut o, &p.theta, 1e-6);
        let rel = dist(&g, &num) / norm(&num);
        assert!(
            rel < 1e-7,
            "{dims:?} {act:?} {loss:?}: relative error {rel:e}"
        );
    }
}

#[test]
fn hvp_matches_central_differences() {
    for (i, &(dims, act, loss)) in CASES.iter().enumerate() {
        let p = Problem::<f64>::new(dims, act, loss, 3, 20 + i as u64);
        let mut o = p.objective();
        let v = p.direction(99);
        let mut hv = vec![0.0; v.len()];
        o.hvp(&p.theta, &v, &mut hv).unwrap();
        let num = numerical_hvp(&mut o, &p.theta, &v, 1e-5);
        let rel = dist(&hv, &num) / norm(&num);
        assert!(
            rel < 1e-6,
            "{dims:?} {act:?} {loss:?}: relative error {rel:e}"
        );
    }
}

#[test]
fn hessian_is_symmetric() {
    for (i, &(dims, act, loss)) in CASES.iter().enumerate() {
        let p = Problem::<f64>::new(dims, act, loss, 4, 30 + i as u64);
        let mut o = p.objective();
        let (u, v) = (p.direction(1), p.direction(2));
        let (mut hu, mut hv) = (vec![0.0; u.len()], vec![0.0; u.len()]);
        o.hvp(&p.theta, &u, &mut hu).unwrap();
        o.hvp(&p.theta, &v, &mut hv).unwrap();
        let uhv: f64 = u.iter().zip(&hv).map(|(a, b)| a * b).sum();
        let vhu: f64 = v.iter().zip(&hu).map(|(a, b)| a * b).sum();
        assert!(
            (uhv - vhu).abs() <= 1e-12 * uhv.abs().max(1.0),
            "{dims:?}: uᵀHv = {uhv}, vᵀHu = {vhu}"
        );
    }
}

/// `db`'s in-place d ← g + γ·H·g equals g + γ·hvp(g) computed separately.
#[test]
fn db_direction_is_gradient_plus_gamma_hg() {
    for (i, &(dims, act, loss)) in CASES.iter().enumerate() {
        let p = Problem::<f64>::new(dims, act, loss, 3, 40 + i as u64);
        let mut o = p.objective();
        let g = grad(&mut o, &p.theta);
        let mut hg = vec![0.0; g.len()];
        o.hvp(&p.theta, &g, &mut hg).unwrap();
        let gamma = 0.3;
        let want: Vec<f64> = g.iter().zip(&hg).map(|(g, h)| g + gamma * h).collect();
        let mut d = vec![0.0; g.len()];
        method::db(&mut o, &p.theta, &mut d, gamma).unwrap();
        assert!(dist(&d, &want) <= 1e-13 * norm(&want), "{dims:?}");
    }
}

/// Identity 1: fgr with γ = ε is usam with ρ = ε, bit for bit.
#[test]
fn fgr_with_gamma_eps_is_usam() {
    fn check<F: fdgr_kernel::Real>() {
        for (i, &(dims, act, loss)) in CASES.iter().enumerate() {
            let p = Problem::<F>::new(dims, act, loss, 3, 50 + i as u64);
            let mut o = p.objective();
            let n = p.theta.len();
            let eps = F::from_f64(0.07);
            let (mut d1, mut d2, mut pt) = (vec![F::ZERO; n], vec![F::ZERO; n], vec![F::ZERO; n]);
            let l1 = method::fgr(&mut o, &p.theta, &mut d1, &mut pt, eps, eps).unwrap();
            let l2 = method::usam(&mut o, &p.theta, &mut d2, &mut pt, eps).unwrap();
            assert_eq!(l1, l2);
            assert_eq!(d1, d2, "{dims:?}");
        }
    }
    check::<f32>();
    check::<f64>();
}

fn fd_errors(dims: &[usize], act: Act, loss: Loss, eps: &[f64], seed: u64) -> (Vec<f64>, Vec<f64>) {
    let p = Problem::<f64>::new(dims, act, loss, 4, seed);
    let mut o = p.objective();
    let n = p.theta.len();
    let gamma = 0.5;
    let mut db = vec![0.0; n];
    method::db(&mut o, &p.theta, &mut db, gamma).unwrap();
    let (mut f_err, mut c_err) = (vec![], vec![]);
    for &e in eps {
        let (mut d, mut p1, mut p2) = (vec![0.0; n], vec![0.0; n], vec![0.0; n]);
        method::fgr(&mut o, &p.theta, &mut d, &mut p1, gamma, e).unwrap();
        f_err.push(dist(&d, &db));
        method::cgr(&mut o, &p.theta, &mut d, &mut p1, &mut p2, gamma, e).unwrap();
        c_err.push(dist(&d, &db));
    }
    (f_err, c_err)
}

/// Identity 2: ‖d_fgr − d_db‖ = O(ε) and ‖d_cgr − d_db‖ = O(ε²), by the
/// slope of a log-log fit, for smooth activations.
#[test]
fn finite_difference_orders() {
    let eps = [0.08, 0.04, 0.02, 0.01, 0.005, 0.0025];
    for (dims, act, loss) in [
        (&[5usize, 6, 3][..], Act::Tanh, Loss::SoftmaxCe),
        (&[4, 5, 5, 2][..], Act::Sigmoid, Loss::Mse),
    ] {
        let (f, c) = fd_errors(dims, act, loss, &eps, 61);
        let sf = loglog_slope(&eps, &f);
        let sc = loglog_slope(&eps, &c);
        eprintln!("{act:?}: log-log slope fgr {sf:.3}, cgr {sc:.3}");
        assert!(
            (sf - 1.0).abs() < 0.1,
            "{act:?}: fgr slope {sf}, errors {f:?}"
        );
        assert!(
            (sc - 2.0).abs() < 0.15,
            "{act:?}: cgr slope {sc}, errors {c:?}"
        );
        // and bgr is fgr mirrored: its error has the same size, opposite sign
        // of the leading term, so (fgr + bgr)/2 is the central difference.
    }
}

/// With ReLU, H·g has no kink terms (σ'' = 0 almost everywhere): the finite
/// difference agrees with it to O(ε) only while the step θ + ε·g crosses no
/// kink, and departs from that line once activation patterns flip.
#[test]
fn relu_finite_difference_and_kinks() {
    let p = Problem::<f64>::new(&[6, 16, 16, 3], Act::Relu, Loss::SoftmaxCe, 8, 71);
    let mut o = p.objective();
    let n = p.theta.len();
    let g = grad(&mut o, &p.theta);
    let gamma = 0.5;
    let mut db = vec![0.0; n];
    method::db(&mut o, &p.theta, &mut db, gamma).unwrap();
    // Which hidden pre-activations are positive, computed directly
    // (independently of the kernel).
    let pattern = |t: &[f64]| -> Vec<bool> {
        let mut pat = vec![];
        for s in 0..p.batch {
            let mut a: Vec<f64> = p.x[s * 6..(s + 1) * 6].to_vec();
            for l in 1..p.shape.layers() {
                let (ni, no) = (p.shape.dim(l - 1), p.shape.dim(l));
                let w = &t[p.shape.weight_offset(l)..];
                let z: Vec<f64> = (0..no)
                    .map(|j| (0..ni).map(|i| w[j * ni + i] * a[i]).sum::<f64>() + w[no * ni + j])
                    .collect();
                pat.extend(z.iter().map(|z| *z > 0.0));
                a = z.iter().map(|z| z.max(0.0)).collect();
            }
        }
        pat
    };
    let base = pattern(&p.theta);
    let mut rows = vec![];
    for k in 0..14 {
        let e = 0.3 * 0.5f64.powi(k);
        let (mut d, mut pt) = (vec![0.0; n], vec![0.0; n]);
        method::fgr(&mut o, &p.theta, &mut d, &mut pt, gamma, e).unwrap();
        let moved: Vec<f64> = p.theta.iter().zip(&g).map(|(t, g)| t + e * g).collect();
        let flips = pattern(&moved)
            .iter()
            .zip(&base)
            .filter(|(a, b)| a != b)
            .count();
        rows.push((e, dist(&d, &db), flips));
    }
    let smooth: Vec<&(f64, f64, usize)> = rows.iter().filter(|r| r.2 == 0).collect();
    assert!(
        smooth.len() >= 4,
        "some small ε must cross no kink: {rows:?}"
    );
    assert!(rows[0].2 > 0, "the largest ε must cross kinks: {rows:?}");
    let xs: Vec<f64> = smooth.iter().map(|r| r.0).collect();
    let ys: Vec<f64> = smooth.iter().map(|r| r.1).collect();
    let slope = loglog_slope(&xs, &ys);
    eprintln!(
        "ReLU: kink-free slope {slope:.3} over {} values of ε; largest ε flips {} activations",
        xs.len(),
        rows[0].2
    );
    assert!(
        (slope - 1.0).abs() < 0.1,
        "O(ε) without kinks: slope {slope}, {rows:?}"
    );
    // Extrapolate the kink-free line to the largest ε: the kinks make the
    // actual error differ from it by far more than the O(ε) term predicts.
    let c = ys[0] / xs[0];
    let predicted = c * rows[0].0;
    let rel = (rows[0].1 - predicted).abs() / predicted;
    assert!(
        rel > 0.05,
        "kinks should break the O(ε) line: {rel}, {rows:?}"
    );
}

/// Identity 5: two flooding steps (ascent below b, descent above) equal one
/// forward-difference step on ½‖∇L‖² with ε = η.
#[test]
fn flooding_two_steps_are_a_forward_difference_step() {
    for (i, &(dims, act, loss)) in CASES.iter().enumerate() {
        let p = Problem::<f64>::new(dims, act, loss, 3, 80 + i as u64);
        let mut o = p.objective();
        let n = p.theta.len();
        let eta = 0.05;
        let g0 = grad(&mut o, &p.theta);
        let l0 = o.loss(&p.theta).unwrap();
        let th1: Vec<f64> = p.theta.iter().zip(&g0).map(|(t, g)| t + eta * g).collect();
        let l1 = o.loss(&th1).unwrap();
        assert!(l1 > l0, "an ascent step raises the loss");
        let level = 0.5 * (l0 + l1);
        let m = Method::Flood { level };
        let mut theta = p.theta.clone();
        let mut d = vec![0.0; n];
        let mut st = SgdState::default();
        for _ in 0..2 {
            let b = Buffers {
                theta: &mut theta[..],
                dir: &mut d[..],
                state: [None, None],
                point: None,
                point2: None,
                correction: None,
            };
            step(&mut o, &m, &Sgd::plain(), &mut st, eta, b).unwrap();
        }
        let g1 = grad(&mut o, &th1);
        let want: Vec<f64> = (0..n).map(|k| p.theta[k] - eta * (g1[k] - g0[k])).collect();
        assert!(dist(&theta, &want) <= 1e-14 * norm(&want), "{dims:?}");
        // and ≈ θ₀ − η²·H·g₀ up to O(η³)
        let mut hg = vec![0.0; n];
        o.hvp(&p.theta, &g0, &mut hg).unwrap();
        let approx: Vec<f64> = (0..n).map(|k| p.theta[k] - eta * eta * hg[k]).collect();
        let step_len = eta * eta * norm(&hg);
        assert!(dist(&theta, &approx) < 0.2 * step_len, "{dims:?}");
    }
}

/// A rejected step (NaN input, inf loss) leaves θ, momentum and state as
/// they were, for every method.
#[test]
fn non_finite_leaves_parameters_unchanged() {
    let methods = Method::all(0.1, 0.1, 0.05, 0.1);
    let p = Problem::<f32>::new(&[5, 4, 3], Act::Tanh, Loss::SoftmaxCe, 3, 90);
    let n = p.theta.len();
    let mut bad_x = p.x.clone();
    bad_x[4] = f32::NAN;
    let mut inf_x = p.x.clone();
    inf_x[0] = f32::INFINITY;
    for m in methods {
        for x in [&bad_x, &inf_x] {
            let ws = vec![0.0f32; p.shape.workspace_len(3, true)];
            let mut o = Mlp::new(p.shape, Serial, ws);
            o.set_batch(x, Targets::Classes(&p.labels)).unwrap();
            let mut theta = p.theta.clone();
            let mut mom: Vec<f32> = (0..n).map(|i| i as f32 * 0.01).collect();
            let (mut d, mut p1, mut p2) = (vec![0.0f32; n], vec![0.0f32; n], vec![0.0f32; n]);
            let mut st = SgdState { steps: 5 };
            let b = Buffers {
                theta: &mut theta[..],
                dir: &mut d[..],
                state: [Some(&mut mom[..]), None],
                point: Some(&mut p1[..]),
                point2: Some(&mut p2[..]),
                correction: None,
            };
            let r = step(&mut o, &m, &Sgd::paper(), &mut st, 0.1, b);
            assert_eq!(r, Err(Error::NonFinite), "{m:?}");
            assert_eq!(
                theta.iter().map(|t| t.to_bits()).collect::<Vec<_>>(),
                p.theta.iter().map(|t| t.to_bits()).collect::<Vec<_>>()
            );
            assert!(mom.iter().enumerate().all(|(i, v)| *v == i as f32 * 0.01));
            assert_eq!(st.steps, 5);
        }
    }
}

/// Missing buffers and bad hyper-parameters are errors, not panics.
#[test]
fn configuration_errors_are_values() {
    let p = Problem::<f32>::new(&[5, 4, 3], Act::Tanh, Loss::SoftmaxCe, 2, 91);
    let mut o = p.objective();
    let n = p.theta.len();
    let mut theta = p.theta.clone();
    let mut d = vec![0.0f32; n];
    let mut short = vec![0.0f32; n - 1];
    let mut st = SgdState::default();
    let fgr = |eps| Method::Fgr { gamma: 0.1, eps };
    let mut go = |m: Method<f32>, opt: Sgd<f32>, theta: &mut [f32], point: Option<&mut [f32]>| {
        let b = Buffers {
            theta,
            dir: &mut d[..],
            state: [None, None],
            point,
            point2: None,
            correction: None,
        };
        step(&mut o, &m, &opt, &mut st, 0.1, b)
    };
    let r = go(fgr(0.1), Sgd::plain(), &mut theta, None);
    assert_eq!(r, Err(Error::MissingBuffer("point")));
    let r = go(fgr(0.0), Sgd::plain(), &mut theta, Some(&mut short[..]));
    assert!(matches!(r, Err(Error::InvalidConfig(_))));
    let r = go(Method::Sgd, Sgd::paper(), &mut theta, None);
    assert_eq!(r, Err(Error::MissingBuffer("momentum")));
    let mut short2 = vec![0.0f32; n - 1];
    let r = go(Method::Sgd, Sgd::plain(), &mut short2, None);
    assert!(matches!(r, Err(Error::ShapeMismatch { what: "theta", .. })));
    assert_eq!(theta, p.theta);
    let bad = [7u32, 0];
    assert!(matches!(
        o.set_batch(&p.x[..10], Targets::Classes(&bad)),
        Err(Error::LabelOutOfRange {
            label: 7,
            classes: 3
        })
    ));
    assert!(matches!(
        o.set_batch(&p.x[..9], Targets::Classes(&bad)),
        Err(Error::ShapeMismatch { .. })
    ));
}

/// The same inputs give the same bits, run after run; the fixed-size and
/// run-time-shaped models are one implementation.
#[test]
fn deterministic_and_fixed_equals_runtime() {
    use fdgr_kernel::{FixedMlp, Shape};
    const S: Shape = Shape::new(&[5, 4, 3], Act::Tanh, Loss::SoftmaxCe);
    const W: usize = S.workspace_len(3, true);
    let p = Problem::<f32>::new(&[5, 4, 3], Act::Tanh, Loss::SoftmaxCe, 3, 95);
    let run = |fixed: bool| -> Vec<u32> {
        let mut theta = p.theta.clone();
        let n = theta.len();
        let (mut d, mut pt, mut mom) = (vec![0.0f32; n], vec![0.0f32; n], vec![0.0f32; n]);
        let mut st = SgdState::default();
        let mut fx: FixedMlp<f32, W> = Mlp::fixed(S).unwrap();
        let mut rt = p.objective();
        fx.set_batch(&p.x, Targets::Classes(&p.labels)).unwrap();
        for m in [
            Method::Fgr {
                gamma: 0.05,
                eps: 0.1,
            },
            Method::Db { gamma: 0.05 },
            Method::Sam { rho: 0.05 },
        ] {
            for _ in 0..5 {
                let b = Buffers {
                    theta: &mut theta[..],
                    dir: &mut d[..],
                    state: [Some(&mut mom[..]), None],
                    point: Some(&mut pt[..]),
                    point2: None,
                    correction: None,
                };
                if fixed {
                    step(&mut fx, &m, &Sgd::paper(), &mut st, 0.1, b).unwrap();
                } else {
                    step(&mut rt, &m, &Sgd::paper(), &mut st, 0.1, b).unwrap();
                }
            }
        }
        theta.iter().map(|t| t.to_bits()).collect()
    };
    let a = run(false);
    assert_eq!(a, run(false));
    assert_eq!(a, run(true));
    assert_ne!(a, p.theta.iter().map(|t| t.to_bits()).collect::<Vec<_>>());
}

/// SAM's point is θ + ρ·g/‖g‖: check against the formula directly.
#[test]
fn sam_perturbation_radius() {
    let p = Problem::<f64>::new(&[5, 4, 3], Act::Tanh, Loss::SoftmaxCe, 3, 97);
    let mut o = p.objective();
    let n = p.theta.len();
    let g = grad(&mut o, &p.theta);
    let rho = 0.2;
    let (mut d, mut pt) = (vec![0.0; n], vec![0.0; n]);
    method::sam(&mut o, &p.theta, &mut d, &mut pt, rho).unwrap();
    assert!((dist(&pt, &p.theta) - rho).abs() < 1e-12);
    let gn = norm(&g);
    let want_pt: Vec<f64> = p
        .theta
        .iter()
        .zip(&g)
        .map(|(t, g)| t + rho * g / gn)
        .collect();
    assert!(dist(&pt, &want_pt) < 1e-12);
    assert!(dist(&d, &grad(&mut o, &want_pt)) < 1e-12);
}

/// The diagonal linear network's gradient and H·v against numerical
/// derivatives, and its `db` direction against g + γ·H·g.
#[test]
fn dln_derivatives() {
    use fdgr_kernel::dln::Dln;
    use fdgr_kernel::Rng;
    let (n, d) = (7, 11);
    let mut rng = Rng::new(5);
    let x: Vec<f64> = (0..n * d).map(|_| rng.normal()).collect();
    let y: Vec<f64> = (0..n).map(|_| rng.normal()).collect();
    let theta: Vec<f64> = (0..2 * d).map(|_| 0.5 + 0.3 * rng.normal()).collect();
    let mut ws = vec![0.0; Dln::<f64>::workspace_len(n, d)];
    let mut o = Dln::new(&x, &y, d, &mut ws).unwrap();
    let g = grad(&mut o, &theta);
    let num = numerical_grad(&mut o, &theta, 1e-6);
    assert!(dist(&g, &num) < 1e-8 * norm(&num));
    let v: Vec<f64> = (0..2 * d).map(|i| ((i * 7) % 5) as f64 - 2.0).collect();
    let mut hv = vec![0.0; 2 * d];
    o.hvp(&theta, &v, &mut hv).unwrap();
    let num = numerical_hvp(&mut o, &theta, &v, 1e-5);
    assert!(dist(&hv, &num) < 1e-7 * norm(&num));
    let mut hg = vec![0.0; 2 * d];
    o.hvp(&theta, &g, &mut hg).unwrap();
    let mut dd = vec![0.0; 2 * d];
    method::db(&mut o, &theta, &mut dd, 0.2).unwrap();
    let want: Vec<f64> = g.iter().zip(&hg).map(|(g, h)| g + 0.2 * h).collect();
    assert!(dist(&dd, &want) < 1e-13 * norm(&want));
    // loss = (1/2n)‖Xβ − y‖² directly
    let beta: Vec<f64> = (0..d)
        .map(|i| theta[i] * theta[i] - theta[d + i] * theta[d + i])
        .collect();
    let l: f64 = (0..n)
        .map(|r| {
            let e = (0..d).map(|c| x[r * d + c] * beta[c]).sum::<f64>() - y[r];
            e * e
        })
        .sum::<f64>()
        / (2.0 * n as f64);
    assert!((o.loss(&theta).unwrap() - l).abs() < 1e-13);
}
