//! The layer-list model against the maths, in f64: for every layer type
//! (each kind of `Op::NAMES` alone too) and for a small residual net with batch norm, the loss gradient and the
//! R-operator's H·v against central differences of the whole
//! training-mode loss, H's symmetry, the O(ε)/O(ε²) slopes of fgr/cgr,
//! and the rules for batch norm's running statistics.

use fdgr_kernel::method::{self, Buffers, Method};
use fdgr_kernel::model::{out_dims, Mode, Op, OpFields};
use fdgr_kernel::{
    step, Act, Dims, Error, Layer, Loss, Objective, Pass, Serial, Sgd, SgdState, Src,
};
use fdgr_tests::*;

/// One small net per layer type (smooth activations and average pooling
/// where a slope is fitted; ReLU and max pooling where only exactness at
/// a point is checked), with their input shapes and losses.
fn cases() -> Vec<(&'static str, Vec<Layer>, Dims, Loss)> {
    vec![
        (
            "linear+bn1d",
            vec![
                Layer::linear(6),
                Layer::batch_norm(),
                Layer::act(Act::Tanh),
                Layer::linear(3),
            ],
            Dims::flat(5),
            Loss::SoftmaxCe,
        ),
        (
            "conv stride/pad/groups/depthwise",
            vec![
                Layer::conv(4, 3).pad(1),
                Layer::act(Act::Tanh),
                Layer::conv(4, 3).stride(2).pad(1).groups(2),
                Layer::act(Act::Sigmoid),
                Layer::conv(4, 3).groups(4).no_bias(),
                Layer::act(Act::Tanh),
                Layer::flatten(),
                Layer::linear(3),
            ],
            Dims::new(2, 7, 6),
            Loss::SoftmaxCe,
        ),
        (
            "conv+bn2d+avgpool",
            vec![
                Layer::conv(4, 3).pad(1).no_bias(),
                Layer::batch_norm(),
                Layer::act(Act::Tanh),
                Layer::avg_pool(3).stride(2).pad(1),
                Layer::flatten(),
                Layer::linear(3),
            ],
            Dims::new(3, 5, 5),
            Loss::Mse,
        ),
        (
            "maxpool+relu+gap",
            vec![
                Layer::conv(3, 3),
                Layer::act(Act::Relu),
                Layer::max_pool(2),
                Layer::conv(4, 1),
                Layer::act(Act::Tanh),
                Layer::global_avg_pool(),
                Layer::linear(3),
            ],
            Dims::new(2, 7, 7),
            Loss::SoftmaxCe,
        ),
        (
            "residual",
            residual_net(),
            Dims::new(3, 6, 6),
            Loss::SoftmaxCe,
        ),
        (
            // a node added twice and to itself: deltas accumulated from
            // three consumers
            "dag",
            vec![
                Layer::conv(3, 3).pad(1),         // 0
                Layer::act(Act::Tanh),            // 1
                Layer::conv(3, 3).pad(1),         // 2
                Layer::add(1),                    // 3 = 2 + 1
                Layer::act(Act::Tanh),            // 4
                Layer::add(1),                    // 5 = 4 + 1
                Layer::add(5).from(Src::Node(5)), // 6 = 5 + 5
                Layer::act(Act::Sigmoid),         // 7
                Layer::global_avg_pool(),         // 8
                Layer::linear(3),                 // 9
            ],
            Dims::new(2, 4, 5),
            Loss::Mse,
        ),
    ]
}

/// Every kind of `Op::NAMES` on its own, built from its record with small
/// settings (3 outputs, window 3, stride 1, padding 1, a bias, tanh, adding
/// layer 0), between a tanh and a linear head, on a 2×5×5 input or a
/// vector of 6 where the kind needs one: a new kind is checked here
/// without a line of this file.
fn each_kind() -> Vec<(String, Vec<Layer>, Dims, Loss)> {
    let f = OpFields {
        out: 3,
        k: 3,
        stride: 1,
        pad: 1,
        groups: 1,
        bias: true,
        act: Some(Act::Tanh),
        other: 0,
    };
    (0..Op::NAMES.len())
        .map(|code| {
            let op = Op::from_fields(code as u8, &f).expect("a kind of Op::NAMES");
            let plane = Dims::new(2, 5, 5);
            let input = if out_dims(&op, plane).is_ok() {
                plane
            } else {
                Dims::flat(6)
            };
            let layers = vec![
                Layer::act(Act::Tanh),
                Layer::new(op),
                Layer::flatten(),
                Layer::linear(3),
            ];
            (
                format!("{} alone", Op::NAMES[code]),
                layers,
                input,
                Loss::SoftmaxCe,
            )
        })
        .collect()
}

/// [`cases`], then [`each_kind`].
fn all_cases() -> Vec<(String, Vec<Layer>, Dims, Loss)> {
    let named = cases()
        .into_iter()
        .map(|(n, l, d, loss)| (n.to_string(), l, d, loss));
    named.chain(each_kind()).collect()
}

/// A two-block residual net with batch norm (identity shortcut, then a
/// strided block with a 1×1 conv + BN shortcut), tanh so it is smooth.
fn residual_net() -> Vec<Layer> {
    vec![
        Layer::conv(4, 3).pad(1).no_bias(),                       // 0
        Layer::batch_norm(),                                      // 1
        Layer::act(Act::Tanh),                                    // 2
        Layer::conv(4, 3).pad(1).no_bias(),                       // 3
        Layer::batch_norm(),                                      // 4
        Layer::act(Act::Tanh),                                    // 5
        Layer::conv(4, 3).pad(1).no_bias(),                       // 6
        Layer::batch_norm(),                                      // 7
        Layer::add(2),                                            // 8 = 7 + 2
        Layer::act(Act::Tanh),                                    // 9
        Layer::conv(8, 3).stride(2).pad(1).no_bias(),             // 10
        Layer::batch_norm(),                                      // 11
        Layer::act(Act::Tanh),                                    // 12
        Layer::conv(8, 3).pad(1).no_bias(),                       // 13
        Layer::batch_norm(),                                      // 14
        Layer::conv(8, 1).stride(2).no_bias().from(Src::Node(9)), // 15
        Layer::batch_norm(),                                      // 16
        Layer::add(14),                                           // 17 = 16 + 14
        Layer::act(Act::Tanh),                                    // 18
        Layer::global_avg_pool(),                                 // 19
        Layer::linear(3),                                         // 20
    ]
}

#[test]
fn gradients_match_central_differences() {
    for (i, (name, layers, input, loss)) in all_cases().into_iter().enumerate() {
        let p = NetProblem::<f64>::new(&layers, input, loss, 4, 100 + i as u64);
        let mut o = p.objective();
        let g = grad(&mut o, &p.theta);
        let num = numerical_grad(&mut o, &p.theta, 1e-6);
        let rel = dist(&g, &num) / norm(&num);
        println!("{name}: gradient rel err {rel:.1e} (P = {})", p.theta.len());
        assert!(rel < 1e-7, "{name}: relative error {rel:e}");
    }
}

#[test]
fn hvp_matches_central_differences() {
    for (i, (name, layers, input, loss)) in all_cases().into_iter().enumerate() {
        let p = NetProblem::<f64>::new(&layers, input, loss, 4, 200 + i as u64);
        let mut o = p.objective();
        let v = p.direction(7);
        let mut hv = vec![0.0; v.len()];
        o.hvp(&p.theta, &v, &mut hv).unwrap();
        // h = 2e-6: the central difference's O(h²) error is then ~1e-8
        // on the residual net (it shrinks 25× from h = 1e-5: truncation,
        // not a wrong R-pass).
        let num = numerical_hvp(&mut o, &p.theta, &v, 2e-6);
        let rel = dist(&hv, &num) / norm(&num);
        println!("{name}: Hv rel err {rel:.1e}");
        assert!(rel < 1e-7, "{name}: relative error {rel:e}");
    }
}

#[test]
fn hessian_is_symmetric_and_db_is_g_plus_gamma_hg() {
    for (i, (name, layers, input, loss)) in cases().into_iter().enumerate() {
        let p = NetProblem::<f64>::new(&layers, input, loss, 3, 300 + i as u64);
        let mut o = p.objective();
        let (u, v) = (p.direction(1), p.direction(2));
        let (mut hu, mut hv) = (vec![0.0; u.len()], vec![0.0; u.len()]);
        o.hvp(&p.theta, &u, &mut hu).unwrap();
        o.hvp(&p.theta, &v, &mut hv).unwrap();
        let uhv: f64 = u.iter().zip(&hv).map(|(a, b)| a * b).sum();
        let vhu: f64 = v.iter().zip(&hu).map(|(a, b)| a * b).sum();
        assert!(
            (uhv - vhu).abs() <= 1e-11 * uhv.abs().max(1.0),
            "{name}: uᵀHv = {uhv}, vᵀHu = {vhu}"
        );
        // db's in-place R-pass (v read from the output vector itself).
        let g = grad(&mut o, &p.theta);
        let mut hg = vec![0.0; g.len()];
        o.hvp(&p.theta, &g, &mut hg).unwrap();
        let gamma = 0.3;
        let want: Vec<f64> = g.iter().zip(&hg).map(|(g, h)| g + gamma * h).collect();
        let mut d = vec![0.0; g.len()];
        method::db(&mut o, &p.theta, &mut d, gamma).unwrap();
        assert!(dist(&d, &want) <= 1e-12 * norm(&want), "{name}: db");
    }
}

/// ‖d_fgr − d_db‖ = O(ε) and ‖d_cgr − d_db‖ = O(ε²) on the residual net
/// with batch norm (smooth: tanh, average pooling).
#[test]
fn finite_difference_orders_on_a_residual_bn_net() {
    let p = NetProblem::<f64>::new(&residual_net(), Dims::new(3, 6, 6), Loss::SoftmaxCe, 4, 77);
    let mut o = p.objective();
    let n = p.theta.len();
    let gamma = 0.5;
    let mut db = vec![0.0; n];
    method::db(&mut o, &p.theta, &mut db, gamma).unwrap();
    let eps = [4e-3, 2e-3, 1e-3, 5e-4];
    let (mut fe, mut ce) = (vec![], vec![]);
    for &e in &eps {
        let (mut d, mut p1, mut p2) = (vec![0.0; n], vec![0.0; n], vec![0.0; n]);
        method::fgr(&mut o, &p.theta, &mut d, &mut p1, gamma, e).unwrap();
        fe.push(dist(&d, &db));
        method::cgr(&mut o, &p.theta, &mut d, &mut p1, &mut p2, gamma, e).unwrap();
        ce.push(dist(&d, &db));
    }
    let (sf, sc) = (loglog_slope(&eps, &fe), loglog_slope(&eps, &ce));
    println!("residual BN net: fgr slope {sf:.3}, cgr slope {sc:.3}");
    assert!((sf - 1.0).abs() < 0.05, "fgr slope {sf}");
    assert!((sc - 2.0).abs() < 0.1, "cgr slope {sc}");
}

/// The PyTorch rule for running statistics, computed by hand on a net
/// whose batch norm sees the raw input: r_mean ← 0.9·0 + 0.1·mean,
/// r_var ← 0.9·1 + 0.1·(unbiased variance); evaluation mode then
/// normalizes with them.
#[test]
fn running_statistics_follow_pytorch() {
    let layers = [Layer::batch_norm(), Layer::flatten(), Layer::linear(2)];
    let input = Dims::new(2, 2, 3);
    let p = NetProblem::<f64>::new(&layers, input, Loss::SoftmaxCe, 3, 5);
    let mut o = p.objective();
    let n = p.theta.len();
    let (mut d, mut st) = (vec![0.0; n], SgdState::default());
    let mut theta = p.theta.clone();
    let b = Buffers {
        theta: &mut theta[..],
        dir: &mut d[..],
        state: [None, None],
        point: None,
        point2: None,
        correction: None,
    };
    step(&mut o, &Method::Sgd, &Sgd::plain(), &mut st, 0.1, b).unwrap();
    assert_eq!(o.batches_tracked(), 1);
    let hw = 6;
    for ch in 0..2 {
        let vals: Vec<f64> = (0..3)
            .flat_map(|s| p.x[(s * 2 + ch) * hw..(s * 2 + ch + 1) * hw].to_vec())
            .collect();
        let m = vals.iter().sum::<f64>() / 18.0;
        let var = vals.iter().map(|v| (v - m) * (v - m)).sum::<f64>() / 17.0;
        assert!((o.state()[ch] - 0.1 * m).abs() < 1e-15);
        assert!((o.state()[2 + ch] - (0.9 + 0.1 * var)).abs() < 1e-15);
    }
    // Evaluation mode: y = γ·(x − r_mean)/√(r_var + 1e-5) + β, then the
    // linear layer (θ after the step).
    let state = o.state().to_vec();
    let out = o.forward_outputs(&theta).unwrap().to_vec();
    for s in 0..3 {
        let mut feats = [0.0; 12];
        for ch in 0..2 {
            let (g, bt) = (theta[ch], theta[2 + ch]);
            let is = 1.0 / (state[2 + ch] + 1e-5f64).sqrt();
            for i in 0..hw {
                let x = p.x[(s * 2 + ch) * hw + i];
                feats[ch * hw + i] = g * ((x - state[ch]) * is) + bt;
            }
        }
        for k in 0..2 {
            let w = &theta[4 + k * 12..4 + (k + 1) * 12];
            let z: f64 = w.iter().zip(&feats).map(|(a, b)| a * b).sum::<f64>() + theta[28 + k];
            assert!((z - out[s * 2 + k]).abs() < 1e-12, "eval output");
        }
    }
    // Training mode normalizes with the batch statistics instead.
    let train = o
        .forward_outputs_mode(&theta, Mode::Train)
        .unwrap()
        .to_vec();
    assert!(train.iter().zip(&out).any(|(a, b)| (a - b).abs() > 1e-6));
}

/// Only the unperturbed gradient pass updates the running statistics: an
/// F-GR (and SAM, B-GR, C-GR, USAM, DB) step leaves exactly the running
/// statistics an SGD step leaves; probes and rejected steps leave none.
#[test]
fn ascent_steps_update_running_statistics_like_sgd() {
    let p = NetProblem::<f32>::new(&residual_net(), Dims::new(3, 6, 6), Loss::SoftmaxCe, 4, 9);
    let n = p.theta.len();
    let run = |m: &Method<f32>| {
        let mut o = p.objective();
        let mut theta = p.theta.clone();
        let (mut d, mut p1, mut p2) = (vec![0.0f32; n], vec![0.0f32; n], vec![0.0f32; n]);
        let mut st = SgdState::default();
        let b = Buffers {
            theta: &mut theta[..],
            dir: &mut d[..],
            state: [None, None],
            point: Some(&mut p1[..]),
            point2: Some(&mut p2[..]),
            correction: None,
        };
        step(&mut o, m, &Sgd::plain(), &mut st, 0.05, b).unwrap();
        (o.state().to_vec(), o.batches_tracked())
    };
    let (sgd, t) = run(&Method::Sgd);
    assert_eq!(t, 1);
    assert!(
        sgd.iter().any(|&v| v != 0.0 && v != 1.0),
        "statistics moved"
    );
    for m in Method::all(0.05, 0.1, 0.05, 0.5) {
        let (s, t) = run(&m);
        assert_eq!(t, 1, "{}", m.name());
        assert_eq!(s, sgd, "{}: running statistics differ from SGD's", m.name());
    }
    // A probe pass computes no update, even if commit is called.
    let mut o = p.objective();
    let init = o.state().to_vec();
    let mut g = vec![0.0f32; n];
    o.loss_grad(&p.theta, &mut g, 1.0, 0.0, Pass::Probe)
        .unwrap();
    o.commit();
    assert_eq!(o.state(), &init[..]);
    assert_eq!(o.batches_tracked(), 0);
    // A rejected step (θ with a NaN) leaves them untouched.
    let mut theta = p.theta.clone();
    theta[3] = f32::NAN;
    let (mut d, mut p1) = (vec![0.0f32; n], vec![0.0f32; n]);
    let mut st = SgdState::default();
    let b = Buffers {
        theta: &mut theta[..],
        dir: &mut d[..],
        state: [None, None],
        point: Some(&mut p1[..]),
        point2: None,
        correction: None,
    };
    let r = step(
        &mut o,
        &Method::Fgr {
            gamma: 0.05,
            eps: 0.1,
        },
        &Sgd::plain(),
        &mut st,
        0.1,
        b,
    );
    assert_eq!(r, Err(Error::NonFinite));
    assert_eq!(o.state(), &init[..]);
    assert_eq!(st.steps, 0);
}

/// Batch norm in training mode needs two values per channel: a batch of
/// one vector is an error, not a NaN.
#[test]
fn batch_norm_on_one_value_is_an_error() {
    let layers = [Layer::linear(4), Layer::batch_norm(), Layer::linear(2)];
    let p = NetProblem::<f64>::new(&layers, Dims::flat(3), Loss::SoftmaxCe, 1, 3);
    let mut o = p.objective();
    let mut g = vec![0.0; p.theta.len()];
    let r = o.loss_grad(&p.theta, &mut g, 1.0, 0.0, Pass::Train);
    assert!(matches!(r, Err(Error::InvalidConfig(_))), "{r:?}");
    // evaluation mode is fine with one sample
    assert!(o.forward_outputs(&p.theta).is_ok());
}

/// A `Shape` (`5-7-4-3`, tanh) and its explicit layer list plan to the
/// same computation: identical bits for every method.
#[test]
fn layer_list_mlp_is_the_mlp() {
    use fdgr_kernel::{Mlp, Shape};
    let shape = Shape::try_new(&[5, 7, 4, 3], Act::Tanh, Loss::SoftmaxCe).unwrap();
    let layers = [
        Layer::linear(7),
        Layer::act(Act::Tanh),
        Layer::linear(4),
        Layer::act(Act::Tanh),
        Layer::linear(3),
    ];
    let p = NetProblem::<f32>::new(&layers, Dims::flat(5), Loss::SoftmaxCe, 3, 12);
    let n = p.theta.len();
    assert_eq!(n, shape.param_count());
    for m in Method::all(0.05f32, 0.1, 0.05, 1.0) {
        let mut a = p.objective();
        let mut b = Mlp::new(shape, Serial, vec![0.0f32; shape.workspace_len(3, true)]);
        b.set_batch(&p.x, p.targets()).unwrap();
        let mut da = vec![0.0f32; n];
        let mut db_ = vec![0.0f32; n];
        let (mut p1, mut p2, mut q1, mut q2) = (
            vec![0.0f32; n],
            vec![0.0f32; n],
            vec![0.0f32; n],
            vec![0.0f32; n],
        );
        let la = method::direction(
            &mut a,
            &m,
            &p.theta,
            &mut da,
            &mut Some(&mut p1[..]),
            &mut Some(&mut p2[..]),
        )
        .unwrap();
        let lb = method::direction(
            &mut b,
            &m,
            &p.theta,
            &mut db_,
            &mut Some(&mut q1[..]),
            &mut Some(&mut q2[..]),
        )
        .unwrap();
        assert_eq!(la.to_bits(), lb.to_bits(), "{}", m.name());
        assert_eq!(da, db_, "{}", m.name());
    }
}

/// Initialisation follows PyTorch's defaults, drawn in θ order (written
/// here independently of the layers' tensors): Linear and Conv2d weights
/// and biases uniform in ±1/√fan_in (fan_in = inputs, or (C/groups)·k²),
/// batch norm γ = 1 and β = 0.
#[test]
fn initialisation_follows_pytorch_defaults() {
    let layers = [
        Layer::conv(3, 3).pad(1).groups(3),
        Layer::batch_norm(),
        Layer::act(Act::Tanh),
        Layer::conv(4, 3).stride(2).no_bias(),
        Layer::act(Act::Tanh),
        Layer::flatten(),
        Layer::linear(5),
        Layer::batch_norm(),
        Layer::act(Act::Tanh),
        Layer::linear(3).no_bias(),
    ];
    let model = build(&layers, Dims::new(3, 6, 6), Loss::SoftmaxCe);
    let mut theta = vec![0.0f64; model.param_count()];
    fdgr_kernel::init_params(model.nodes(), &mut theta, &mut fdgr_kernel::Rng::new(11));
    let mut r = fdgr_kernel::Rng::new(11);
    let mut want = vec![];
    for n in model.nodes() {
        let c = n.in_dims.c;
        let fan_in = match n.op {
            Op::Linear { .. } => c,
            Op::Conv2d { k, groups, .. } => c / groups * k * k,
            Op::BatchNorm => {
                want.extend(std::iter::repeat_n(1.0, c));
                want.extend(std::iter::repeat_n(0.0, c));
                continue;
            }
            _ => continue,
        };
        let bound = 1.0 / (fan_in as f64).sqrt();
        for _ in 0..n.param_len {
            want.push((2.0 * r.uniform() - 1.0) * bound);
        }
    }
    assert_eq!(theta.len(), want.len());
    for (i, (a, b)) in theta.iter().zip(&want).enumerate() {
        assert!(
            (a - b).abs() <= 1e-15 * b.abs().max(1.0),
            "θ[{i}]: {a} vs {b}"
        );
    }
}

/// A layer's trained tensors: all of them when it trains everything, its
/// bias alone (whole, at the start of its trained part) in `bias` mode.
#[test]
fn trained_tensors_follow_the_mode() {
    use fdgr_kernel::finetune::{models_of, Mode as Train};
    let layers = [
        Layer::conv(4, 3).pad(1),
        Layer::act(Act::Tanh),
        Layer::flatten(),
        Layer::linear(3),
    ];
    let input = Dims::new(2, 4, 4);
    let names = |mode| -> Vec<(&'static str, usize, usize)> {
        let m = models_of::<16>(&layers, input, Loss::SoftmaxCe, mode).expect("plans");
        m.tail
            .nodes()
            .iter()
            .flat_map(|n| n.trained_tensors().map(|(t, r)| (t.name, r.start, r.end)))
            .collect()
    };
    let full = names(Train::Full);
    assert_eq!(
        full,
        [
            ("weight", 0, 72),
            ("bias", 72, 76),
            ("weight", 0, 192),
            ("bias", 192, 195),
        ]
    );
    let bias = names(Train::Bias);
    assert_eq!(bias, [("bias", 0, 4), ("bias", 0, 3)]);
}
