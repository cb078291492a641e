//! Tests of fine-tuning: the modes, their splits and what each trains.

use super::*;
use crate::loss::Loss;
use crate::rng::{init_mlp, Rng};
use crate::serial::act::Act;

const S: Shape = Shape::new(&[4, 6, 3], Act::Tanh, Loss::SoftmaxCe);
const P: usize = S.param_count();
const PL: usize = 6 * 3 + 3;

fn tuner(mode: Mode) -> FineTuner<f32, crate::optim::Sgd<f32>, 4, 4> {
    FineTuner {
        ring: SampleRing::new(),
        learner: Learner {
            method: Method::Fgr {
                gamma: 0.05,
                eps: 0.1,
            },
            opt: crate::optim::Sgd::plain(),
            state: SgdState::default(),
            lr: 0.1,
            batch: 2,
            pixel_max: 4.0,
            mode,
        },
    }
}

#[test]
fn last_layer_trains_only_the_head_from_frozen_features() {
    let mut frozen = [0.0f32; P];
    init_mlp(&S, &mut frozen, &mut Rng::new(4));
    assert_eq!(PL, 6 * 3 + 3);
    let mut head: [f32; PL] = core::array::from_fn(|i| frozen[P - PL + i]);
    let (mut dir, mut pt) = ([0.0f32; PL], [0.0f32; PL]);
    let mut ws = [0.0f32; 64];
    let (mut x, mut feats, mut y) = ([0.0f32; 8], [0.0f32; 12], [0u32; 2]);
    let mut t = tuner(Mode::LAST_LAYER);
    let mut losses = [0.0f32; 12];
    for (i, l) in losses.iter_mut().enumerate() {
        let s = Sample {
            x: [i as u8 % 5, 3, (i * 7 % 4) as u8, 1],
            label: (i % 3) as u8,
        };
        let mem = Memory {
            theta: &mut head,
            frozen: Some(&frozen),
            dir: &mut dir,
            point: Some(&mut pt),
            point2: None,
            state: [None, None],
            ws: &mut ws,
            x: &mut x,
            feats: &mut feats,
            y: &mut y,
        };
        *l = t.push_and_step(&S, s, mem).unwrap();
    }
    assert!(losses.iter().all(|l| l.is_finite()));
    assert!(
        head.iter().zip(&frozen[P - PL..]).any(|(a, b)| a != b),
        "the head moved"
    );
    // without the frozen model the step is refused
    let mem = Memory {
        theta: &mut head,
        frozen: None,
        dir: &mut dir,
        point: Some(&mut pt),
        point2: None,
        state: [None, None],
        ws: &mut ws,
        x: &mut x,
        feats: &mut feats,
        y: &mut y,
    };
    let s = Sample {
        x: [1, 2, 3, 4],
        label: 0,
    };
    assert_eq!(
        t.push_and_step(&S, s, mem),
        Err(Error::MissingBuffer("frozen"))
    );
}

const S4: Shape = Shape::new(&[4, 6, 5, 3], Act::Tanh, Loss::SoftmaxCe);

#[test]
fn modes_parse_and_print() {
    for (s, m) in [
        ("full", Mode::Full),
        ("last", Mode::Last(1)),
        ("last:2", Mode::Last(2)),
        ("bias", Mode::Bias),
        ("layers:0,4", Mode::Layers(0b10001)),
    ] {
        assert_eq!(Mode::parse(s), Some(m), "{s}");
        let shown = std::format!("{m}");
        assert_eq!(Mode::parse(&shown), Some(m), "{shown}");
    }
    for bad in [
        "last:0",
        "last:x",
        "layers:",
        "layers:1,1",
        "layers:32",
        "sparse",
    ] {
        assert_eq!(Mode::parse(bad), None, "{bad}");
    }
}

#[test]
fn splits_and_trained_counts() {
    // layers: linear 0, tanh 1, linear 2, tanh 3, linear 4
    let p = S4.param_count();
    let n = |m| models(&S4, m).unwrap();
    assert_eq!(n(Mode::Full).trained_params(), p);
    let last = n(Mode::Last(1));
    assert_eq!(
        (last.split, last.features, last.trained_params()),
        (4, 5, 5 * 3 + 3)
    );
    let two = n(Mode::Last(2));
    assert_eq!(
        (two.split, two.features, two.trained_params()),
        (2, 6, 6 * 5 + 5 + 5 * 3 + 3)
    );
    let bias = n(Mode::Bias);
    assert_eq!((bias.split, bias.trained_params()), (0, 6 + 5 + 3));
    assert!(bias.prefix.is_none());
    let some = n(Mode::Layers(0b10100));
    assert_eq!(
        (some.split, some.trained_params()),
        (2, 6 * 5 + 5 + 5 * 3 + 3)
    );
    let skip = n(Mode::Layers(0b10001));
    assert_eq!(
        (skip.split, skip.trained_params()),
        (0, 4 * 6 + 6 + 5 * 3 + 3)
    );
    assert!(models(&S4, Mode::Last(4)).is_err());
    assert!(
        models(&S4, Mode::Layers(0b10)).is_err(),
        "tanh has no parameters"
    );
    assert!(models(&S4, Mode::Layers(1 << 7)).is_err());
}

/// In every mode the trained part's gradient is, bit for bit, the
/// trained entries of the whole model's gradient; gather and scatter
/// invert each other; the frozen entries are never written.
#[test]
fn sparse_gradients_are_the_whole_gradients_trained_entries() {
    use crate::objective::Objective;
    let p = S4.param_count();
    let mut whole = std::vec![0.0f64; p];
    init_mlp(&S4, &mut whole, &mut Rng::new(9));
    let x: std::vec::Vec<f64> = (0..12).map(|i| ((i * 7 % 11) as f64 - 5.0) / 4.0).collect();
    let y = [2u32, 0, 1];
    let full = models(&S4, Mode::Full).unwrap();
    let mut ws = std::vec![0.0f64; full.workspace_len(3, false)];
    let mut g = std::vec![0.0f64; p];
    {
        let mut net = Net::resume(full.tail.borrowed(), Serial, &mut ws[..]).unwrap();
        net.set_batch(&x, Targets::Classes(&y)).unwrap();
        net.loss_grad(&whole, &mut g, 1.0, 0.0, crate::objective::Pass::Train)
            .unwrap();
    }
    for mode in [
        Mode::Last(1),
        Mode::Last(2),
        Mode::Bias,
        Mode::Layers(0b10001),
        Mode::Layers(0b00100),
    ] {
        let m = models(&S4, mode).unwrap();
        let tp = m.trained_params();
        let mut theta = std::vec![0.0f64; tp];
        m.gather(&whole, &mut theta).unwrap();
        let mut back = std::vec![f64::NAN; p];
        back.copy_from_slice(&whole);
        m.scatter(&theta, &mut back).unwrap();
        assert_eq!(back, whole, "{mode}: scatter(gather) is the identity");
        let mut ws = std::vec![0.0f64; m.workspace_len(3, false)];
        let mut feats = std::vec![0.0f64; m.features_len(3)];
        let inputs = frozen_features(&m, Some(&whole), &x, &mut ws, &mut feats).unwrap();
        let inputs = inputs.to_vec();
        let mut gt = std::vec![0.0f64; tp];
        let mut net = Net::resume(m.trained().borrowed(), Serial, &mut ws[..]).unwrap();
        if m.tail.sizes.params != m.tail.sizes.all_params {
            net.set_frozen(&whole[m.prefix_params()..]).unwrap();
        }
        net.set_batch(&inputs, Targets::Classes(&y)).unwrap();
        net.loss_grad(&theta, &mut gt, 1.0, 0.0, crate::objective::Pass::Train)
            .unwrap();
        let mut want = std::vec![0.0f64; tp];
        m.gather(&g, &mut want).unwrap();
        let bits = |v: &[f64]| v.iter().map(|z| z.to_bits()).collect::<std::vec::Vec<_>>();
        assert_eq!(bits(&gt), bits(&want), "{mode}");
        assert!(gt.iter().any(|&v| v != 0.0), "{mode}: a gradient");
    }
}

/// A bias-mode F-GR step moves biases only; the weights stay as loaded.
#[test]
fn bias_mode_moves_only_biases() {
    let p = S4.param_count();
    let mut whole = [0.0f32; 6 * 4 + 6 + 5 * 6 + 5 + 3 * 5 + 3];
    assert_eq!(whole.len(), p);
    init_mlp(&S4, &mut whole, &mut Rng::new(5));
    let m = models(&S4, Mode::Bias).unwrap();
    let mut theta = [0.0f32; 14];
    m.gather(&whole, &mut theta).unwrap();
    let (mut dir, mut pt) = ([0.0f32; 14], [0.0f32; 14]);
    let mut ws = [0.0f32; 256];
    assert!(m.workspace_len(2, false) <= ws.len());
    let (mut x, mut y) = ([0.0f32; 8], [0u32; 2]);
    let mut t = tuner(Mode::Bias);
    for i in 0..10 {
        let s = Sample {
            x: [i as u8 % 5, 3, (i * 7 % 4) as u8, 1],
            label: (i % 3) as u8,
        };
        let mem = Memory {
            theta: &mut theta,
            frozen: Some(&whole),
            dir: &mut dir,
            point: Some(&mut pt),
            point2: None,
            state: [None, None],
            ws: &mut ws,
            x: &mut x,
            feats: &mut [],
            y: &mut y,
        };
        let l = t.push_and_step_planned(&m, s, mem).unwrap();
        assert!(l.is_finite());
    }
    let mut after = whole;
    m.scatter(&theta, &mut after).unwrap();
    let biases = [24..30, 60..65, 80..83];
    for i in 0..p {
        let moved = after[i] != whole[i];
        let is_bias = biases.iter().any(|r| r.contains(&i));
        assert!(!moved || is_bias, "weight {i} moved");
        assert_eq!(m.whole_param(&theta, &whole, i), after[i]);
    }
    assert!(biases
        .iter()
        .all(|r| r.clone().any(|i| after[i] != whole[i])));
}
