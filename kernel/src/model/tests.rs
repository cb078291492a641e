//! Tests of the planner: sizes, overflow, fusion, aliasing and bad models.

use super::*;

fn plans(layers: &[Layer], input: Dims) -> Result<Sizes, Error> {
    let mut nodes = [Node::EMPTY; 8];
    plan(layers, input, &mut nodes[..layers.len()])
}

/// Shapes, parameter counts and buffers that overflow are errors,
/// never wrapped sizes (huge channels, padding, widths, inputs).
#[cfg(feature = "conv")]
#[test]
fn overflowing_sizes_are_rejected() {
    let img = Dims::new(1, 8, 8);
    let huge: [(&[Layer], Dims); 7] = [
        // 2^61 output channels: the weight count overflows
        (
            &[Layer::conv(1 << 61, 3), Layer::flatten(), Layer::linear(10)],
            img,
        ),
        // padding 2^62: the padded size fits, the output does not
        (
            &[
                Layer::conv(8, 3).pad(1 << 62),
                Layer::flatten(),
                Layer::linear(10),
            ],
            img,
        ),
        // padding 2^63 − 1: 2·p overflows
        (
            &[
                Layer::conv(8, 3).pad(usize::MAX / 2),
                Layer::flatten(),
                Layer::linear(10),
            ],
            img,
        ),
        (
            &[
                Layer::max_pool(usize::MAX).pad(usize::MAX / 2 + 1),
                Layer::flatten(),
                Layer::linear(10),
            ],
            img,
        ),
        // a hidden width of 2^62
        (&[Layer::linear(1 << 62), Layer::linear(10)], Dims::flat(64)),
        // an input of 2^64 − 1 pixels per channel
        (
            &[Layer::flatten(), Layer::linear(10)],
            Dims::new(1, usize::MAX, usize::MAX),
        ),
        (&[Layer::linear(10)], Dims::flat(usize::MAX)),
    ];
    for (layers, input) in huge {
        let r = plans(layers, input);
        assert!(r.is_err(), "{layers:?} on {input:?} planned: {r:?}");
    }
    // large but addressable: planned, and its workspace is checked
    let s = plans(&[Layer::linear(1 << 30), Layer::linear(10)], Dims::flat(64))
        .expect("a 2^30-wide layer is addressable");
    assert_eq!(
        checked_workspace_len(&s, 1, true),
        Some(workspace_len(&s, 1, true))
    );
    assert_eq!(checked_workspace_len(&s, usize::MAX / 4, false), None);
}

/// The checked workspace length equals the plain one wherever both exist.
#[test]
fn checked_workspace_len_matches() {
    let layers = [
        Layer::conv(4, 3).pad(1),
        Layer::batch_norm(),
        Layer::act(Act::Relu),
        Layer::flatten(),
        Layer::linear(3),
    ];
    let s = plans(&layers, Dims::new(2, 5, 5)).expect("plans");
    for b in [1, 7, 128] {
        for hvp in [false, true] {
            assert_eq!(
                checked_workspace_len(&s, b, hvp),
                Some(workspace_len(&s, b, hvp))
            );
        }
    }
}

#[test]
fn mlp_plan_fuses_and_aliases() {
    let layers = [Layer::linear(8), Layer::act(Act::Tanh), Layer::linear(3)];
    let m = Model::from_layers(&layers, Dims::flat(4), Loss::SoftmaxCe).unwrap();
    let n = m.nodes();
    assert_eq!(m.sizes.params, 4 * 8 + 8 + 8 * 3 + 3);
    assert_eq!(n[0].fuse, Some(Act::Tanh));
    assert!(n[1].inplace);
    assert_eq!(n[1].val, n[0].val);
    assert_eq!(m.sizes.vals, 8 + 3);
    assert_eq!(m.sizes.rvals, 8 + 8 + 3);
    assert_eq!(n[2].param_off, 40);
    assert!(!n[0].acc_in && !n[2].acc_in);
}

#[test]
fn residual_block_plan() {
    // x -> conv -> bn -> relu -> conv -> bn -> (+ x) -> relu
    let layers = [
        Layer::conv(4, 3).pad(1),             // 0
        Layer::batch_norm(),                  // 1
        Layer::act(Act::Relu),                // 2 (in place on 1)
        Layer::conv(4, 3).pad(1).no_bias(),   // 3
        Layer::batch_norm(),                  // 4
        Layer::conv(4, 1).from(Src::Node(2)), // 5: shortcut from 2
        Layer::add(4),                        // 6 = 5 + 4
        Layer::act(Act::Relu),                // 7 (in place on 6)
        Layer::global_avg_pool(),             // 8
        Layer::linear(10),                    // 9
    ];
    let m = Model::from_layers(&layers, Dims::new(3, 6, 6), Loss::SoftmaxCe).unwrap();
    let n = m.nodes();
    assert_eq!(n[1].fuse, Some(Act::Relu));
    assert!(n[2].inplace);
    // node 2 has two consumers (3 and 5); 5 runs backward first and
    // writes, 3 accumulates.
    assert!(n[3].acc_in);
    assert!(!n[5].acc_in);
    assert!(n[7].inplace && n[6].fuse.is_none());
    assert_eq!(m.sizes.state, 2 * 4 * 2);
    assert_eq!(m.sizes.batch_norms, 2);
    assert_eq!(n[9].in_dims, Dims::flat(4));
    assert_eq!(m.outputs(), 10);
}

#[test]
fn bad_models() {
    let e = Model::from_layers(&[Layer::linear(3)], Dims::new(1, 4, 4), Loss::Mse);
    assert!(matches!(e, Err(Error::BadModel(_))));
    let e = Model::from_layers(&[Layer::conv(3, 5)], Dims::new(1, 4, 4), Loss::Mse);
    assert!(matches!(e, Err(Error::BadModel(_))));
    let e = Model::from_layers(
        &[Layer::conv(3, 3).groups(2)],
        Dims::new(3, 4, 4),
        Loss::Mse,
    );
    assert!(matches!(e, Err(Error::BadModel(_))));
    let e = Model::from_layers(
        &[Layer::conv(3, 3), Layer::add(0).from(Src::Input)],
        Dims::new(1, 4, 4),
        Loss::Mse,
    );
    assert!(matches!(e, Err(Error::BadModel(_))));
    let e = Model::from_layers(&[Layer::add(0)], Dims::flat(3), Loss::Mse);
    assert!(matches!(e, Err(Error::BadModel(_))));
    let e = Model::from_layers(&[Layer::max_pool(3).pad(2)], Dims::new(1, 4, 4), Loss::Mse);
    assert!(matches!(e, Err(Error::BadModel(_))));
}
