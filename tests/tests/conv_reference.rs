//! The layer-list model against an independent PyTorch float64 reference
//! (tests/reference/conv_reference.py; its output is committed as
//! tests/data/conv_reference.json). The script defines three conv nets as
//! ordinary `torch.nn.Module`s (ResNet blocks with batch norm, ReLU and
//! max pooling; a smooth net with depthwise and grouped convolutions,
//! average pooling and BatchNorm1d; a strided stem with padded max
//! pooling) and takes everything from autograd: H·v by double backward,
//! the probes' gradients through copies of the batch-norm buffers, the
//! running statistics and θ from a training step on the module with
//! `torch.optim.SGD`.
//!
//! Here the same nets are written as `Layer` lists (checked against the
//! description and parameter shapes in the JSON), and the kernel's loss,
//! gradient, H·v, every method's direction, the training- and
//! evaluation-mode outputs, the running statistics after a step and θ
//! after one SGD step (F-GR, momentum 0.9, weight decay 1e-4) are compared
//! with the reference, in f64, by the norm-wise relative error
//! ‖kernel − reference‖ / ‖reference‖.

use std::collections::BTreeMap;

use fdgr_kernel::method::{self, Buffers, Method};
use fdgr_kernel::model::{FieldValue, Mode, OpFields};
use fdgr_kernel::{step, Act, Dims, Layer, Loss, Net, Objective, Op, Serial, Sgd, SgdState, Src};
use fdgr_kernel::{Pass, Targets};
use fdgr_tests::build;
use serde_json::Value;

/// Bound on every relative error (what f64 reaches here is ~1e-14; see
/// the printed table).
const TOL: f64 = 1e-12;

/// The nets of the reference script, as the kernel writes them.
fn nets() -> Vec<(&'static str, Vec<Layer>)> {
    let conv = |out, k| Layer::conv(out, k).no_bias();
    vec![
        (
            "resnet_relu",
            vec![
                conv(4, 3).pad(1),                        // 0 stem
                Layer::batch_norm(),                      // 1
                Layer::act(Act::Relu),                    // 2
                conv(4, 3).pad(1),                        // 3 block1.conv1
                Layer::batch_norm(),                      // 4
                Layer::act(Act::Relu),                    // 5
                conv(4, 3).pad(1),                        // 6 block1.conv2
                Layer::batch_norm(),                      // 7
                Layer::add(2),                            // 8 = 7 + 2 (identity)
                Layer::act(Act::Relu),                    // 9
                Layer::max_pool(2),                       // 10
                conv(6, 3).stride(2).pad(1),              // 11 block2.conv1
                Layer::batch_norm(),                      // 12
                Layer::act(Act::Relu),                    // 13
                conv(6, 3).pad(1),                        // 14 block2.conv2
                Layer::batch_norm(),                      // 15
                conv(6, 1).stride(2).from(Src::Node(10)), // 16 shortcut conv
                Layer::batch_norm(),                      // 17 shortcut BN
                Layer::add(15),                           // 18 = 17 + 15
                Layer::act(Act::Relu),                    // 19
                Layer::global_avg_pool(),                 // 20
                Layer::flatten(),                         // 21
                Layer::linear(5),                         // 22
            ],
        ),
        (
            "smooth_mse",
            vec![
                Layer::conv(6, 3).pad(1),            // 0
                Layer::act(Act::Tanh),               // 1
                Layer::conv(6, 3).pad(1).groups(6),  // 2 depthwise
                Layer::batch_norm(),                 // 3
                Layer::add(1),                       // 4 = 3 + 1
                Layer::act(Act::Tanh),               // 5
                Layer::avg_pool(3).stride(2).pad(1), // 6
                Layer::conv(4, 3).groups(2),         // 7 grouped
                Layer::act(Act::Tanh),               // 8
                Layer::flatten(),                    // 9
                Layer::linear(5),                    // 10
                Layer::batch_norm(),                 // 11 (BatchNorm1d)
                Layer::act(Act::Sigmoid),            // 12
                Layer::linear(3),                    // 13
            ],
        ),
        (
            "stem_maxpool",
            vec![
                Layer::conv(4, 3).stride(2).pad(1),  // 0
                Layer::batch_norm(),                 // 1
                Layer::act(Act::Sigmoid),            // 2
                Layer::max_pool(3).stride(2).pad(1), // 3
                Layer::conv(4, 1),                   // 4
                Layer::batch_norm(),                 // 5
                Layer::add(3),                       // 6 = 5 + 3
                Layer::act(Act::Tanh),               // 7
                Layer::global_avg_pool(),            // 8
                Layer::linear(3),                    // 9
            ],
        ),
    ]
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_f64().expect("number"))
        .collect()
}

fn uints(v: &Value) -> Vec<usize> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_u64().expect("integer") as usize)
        .collect()
}

/// One layer of the JSON description.
fn parse_layer(l: &Value) -> Layer {
    let name = l["op"].as_str().expect("op");
    let code = Op::code_of(name).unwrap_or_else(|| panic!("unknown op {name}"));
    let mut f = OpFields::default();
    for &field in Op::field_names(code) {
        let v = &l[field];
        let value = match (v.as_u64(), v.as_bool(), v.as_str()) {
            (Some(n), _, _) => FieldValue::Num(n as usize),
            (_, Some(b), _) => FieldValue::Flag(b),
            (_, _, Some(a)) => FieldValue::Act(Act::from_name(a).expect("activation")),
            _ => panic!("{field} in {l}"),
        };
        assert!(f.set(field, value), "{field} in {l}");
    }
    let op = Op::from_fields(code, &f).expect("layer");
    let src = match &l["src"] {
        Value::Null => Src::Prev,
        Value::String(s) if s == "input" => Src::Input,
        v => Src::Node(v.as_u64().expect("src") as usize),
    };
    Layer::new(op).from(src)
}

/// ‖a − b‖ / ‖b‖.
fn rel(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    let d: f64 = a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum();
    let n: f64 = b.iter().map(|y| y * y).sum();
    d.sqrt() / n.sqrt().max(1e-300)
}

/// The worst relative error seen per quantity, over all nets.
#[derive(Default)]
struct Worst(BTreeMap<String, f64>);

impl Worst {
    fn check(&mut self, net: &str, what: &str, got: &[f64], want: &[f64]) {
        let e = rel(got, want);
        let w = self.0.entry(what.to_string()).or_insert(0.0);
        *w = w.max(e);
        assert!(
            e <= TOL,
            "{net}: {what}: relative error {e:.2e} > {TOL:e}\n  kernel    {:?}\n  reference {:?}",
            &got[..got.len().min(6)],
            &want[..want.len().min(6)]
        );
    }
}

/// The kernel node's parameter tensors ([`Op::tensors`]: PyTorch's layout
/// and names) must be the module's `named_parameters()` in order (so θ is
/// laid out alike).
fn check_param_shapes(name: &str, model: &fdgr_kernel::Model<Vec<fdgr_kernel::Node>>, c: &Value) {
    let mut ours: Vec<(&str, Vec<usize>)> = vec![];
    for n in model.nodes() {
        // each kind's tensors (its module's) fill exactly its parameters
        let tensors = n.op.tensors(n.in_dims);
        let numel: usize = tensors.as_slice().iter().map(|t| t.numel()).sum();
        assert_eq!(numel, n.param_len, "{name}: {:?}'s tensors", n.op);
        ours.extend(
            tensors
                .as_slice()
                .iter()
                .map(|t| (t.name, t.shape().to_vec())),
        );
    }
    let named = c["param_shapes"].as_array().expect("param_shapes");
    let theirs: Vec<Vec<usize>> = named.iter().map(|p| uints(&p[1])).collect();
    assert_eq!(
        ours.iter().map(|o| o.1.clone()).collect::<Vec<_>>(),
        theirs,
        "{name}: parameter shapes differ from PyTorch's"
    );
    for ((tensor, _), p) in ours.iter().zip(named) {
        let full = p[0].as_str().expect("parameter name");
        assert!(
            full.ends_with(&format!(".{tensor}")),
            "{name}: {full} is not a `{tensor}`"
        );
    }
    assert_eq!(
        model.param_count(),
        theirs
            .iter()
            .map(|s| s.iter().product::<usize>())
            .sum::<usize>()
    );
}

#[test]
fn kernel_matches_pytorch_reference() {
    let doc: Value =
        serde_json::from_str(include_str!("../data/conv_reference.json")).expect("valid JSON");
    let hp = &doc["hyper"];
    let f = |k: &str| {
        hp[k]
            .as_f64()
            .unwrap_or_else(|| panic!("hyper-parameter {k}"))
    };
    assert_eq!(f("bn_eps"), fdgr_kernel::model::BN_EPS);
    assert_eq!(f("bn_momentum"), fdgr_kernel::model::BN_MOMENTUM);
    let (gamma, eps, rho, level) = (f("gamma"), f("eps"), f("rho"), f("flood_level"));
    let methods = Method::all(gamma, eps, rho, level);
    let opt = Sgd {
        momentum: f("momentum"),
        nesterov: hp["nesterov"].as_bool().expect("nesterov"),
        weight_decay: f("weight_decay"),
    };
    let lr = f("lr");

    let cases = doc["cases"].as_array().expect("cases");
    let nets = nets();
    // the hand-written nets first, in order; then every kind alone
    assert!(cases.len() >= nets.len());
    let names: Vec<&str> = cases.iter().filter_map(|c| c["name"].as_str()).collect();
    for k in Op::NAMES {
        assert!(
            names.contains(&format!("{k} alone").as_str()),
            "no case '{k} alone' in tests/data/conv_reference.json: give the kind its \
             PyTorch module in bench/torch_models.py (Graph, KINDS) and run \
             tests/reference/conv_reference.py"
        );
    }
    let mut worst = Worst::default();
    for (i, c) in cases.iter().enumerate() {
        let name = c["name"].as_str().expect("name");
        let described: Vec<Layer> = c["layers"]
            .as_array()
            .expect("layers")
            .iter()
            .map(parse_layer)
            .collect();
        let layers = &described;
        match nets.get(i) {
            Some((net, written)) => {
                assert_eq!(*net, name);
                assert_eq!(
                    written, layers,
                    "{name}: layer list differs from the reference's"
                );
            }
            None => assert!(name.ends_with(" alone"), "{name}: not a net of nets()"),
        }
        let d = uints(&c["input"]);
        let input = Dims::new(d[0], d[1], d[2]);
        let loss = Loss::from_name(c["loss"].as_str().expect("loss")).expect("loss name");
        let model = build(layers, input, loss);
        check_param_shapes(name, &model, c);

        let theta = floats(&c["theta"]);
        let x = floats(&c["x"]);
        let b = c["batch"].as_u64().expect("batch") as usize;
        assert_eq!(x.len(), b * input.len());
        let labels: Vec<u32> = match loss {
            Loss::SoftmaxCe => uints(&c["labels"]).iter().map(|&l| l as u32).collect(),
            Loss::Mse => vec![],
        };
        let values = match loss {
            Loss::SoftmaxCe => vec![],
            Loss::Mse => floats(&c["values"]),
        };
        let targets = match loss {
            Loss::SoftmaxCe => Targets::Classes(&labels),
            Loss::Mse => Targets::Values(&values),
        };
        let x_eval = floats(&c["x_eval"]);
        let eval_labels = vec![0u32; x_eval.len() / input.len()];
        let n = theta.len();
        let fresh = || {
            let ws = vec![0.0; model.workspace_len(b, true)];
            let mut o = Net::from_model(model.clone(), Serial, ws).expect("workspace");
            o.set_batch(&x, targets).expect("batch");
            o
        };
        let mut o = fresh();

        // loss, gradient (a probe pass: nothing to commit) and H·v
        let mut g = vec![0.0; n];
        let l = o.loss_grad(&theta, &mut g, 1.0, 0.0, Pass::Probe).unwrap();
        let l_ref = c["loss_value"].as_f64().expect("loss value");
        worst.check(name, "loss", &[l], &[l_ref]);
        worst.check(name, "gradient", &g, &floats(&c["grad"]));
        let mut hv = vec![0.0; n];
        o.hvp(&theta, &floats(&c["v"]), &mut hv).unwrap();
        worst.check(name, "Hv", &hv, &floats(&c["hv"]));
        let train = o
            .forward_outputs_mode(&theta, Mode::Train)
            .unwrap()
            .to_vec();
        worst.check(name, "train outputs", &train, &floats(&c["train_outputs"]));

        // every method's direction
        for m in &methods {
            let (mut d, mut p1, mut p2) = (vec![0.0; n], vec![0.0; n], vec![0.0; n]);
            let lm = method::direction(
                &mut o,
                m,
                &theta,
                &mut d,
                &mut Some(&mut p1[..]),
                &mut Some(&mut p2[..]),
            )
            .unwrap();
            worst.check(name, "loss", &[lm], &[l_ref]);
            let want = floats(&c["directions"][m.name()]);
            worst.check(name, &format!("direction {}", m.name()), &d, &want);
        }
        // none of that moved the running statistics
        assert_eq!(o.batches_tracked(), 0, "{name}");
        let init = o.state().to_vec();
        let state_ref = floats(&c["running_state"]);
        assert_eq!(init.len(), state_ref.len(), "{name}: state size");
        for n in model
            .nodes()
            .iter()
            .filter(|n| matches!(n.op, Op::BatchNorm))
        {
            let (off, cc) = (n.state_off, n.in_dims.c);
            assert!(
                init[off..off + cc].iter().all(|&v| v == 0.0)
                    && init[off + cc..off + 2 * cc].iter().all(|&v| v == 1.0),
                "{name}: running statistics moved before any step"
            );
        }

        // one accepted step per method: the same running statistics for
        // all (only the unperturbed pass updates them); θ after the F-GR
        // step with the paper's SGD; evaluation outputs of the updated net
        let tracked = c["batches_tracked"].as_u64().expect("batches tracked");
        for m in &methods {
            let mut o = fresh();
            let mut th = theta.clone();
            let (mut d, mut mom, mut p1, mut p2) =
                (vec![0.0; n], vec![0.0; n], vec![0.0; n], vec![0.0; n]);
            let mut st = SgdState::default();
            let bufs = Buffers {
                theta: &mut th[..],
                dir: &mut d[..],
                state: [Some(&mut mom[..]), None],
                point: Some(&mut p1[..]),
                point2: Some(&mut p2[..]),
                correction: None,
            };
            let lm = step(&mut o, m, &opt, &mut st, lr, bufs).unwrap();
            worst.check(name, "loss", &[lm], &[l_ref]);
            assert_eq!(o.batches_tracked(), tracked, "{name} {}", m.name());
            worst.check(name, "running statistics", o.state(), &state_ref);
            if m.name() != "fgr" {
                continue;
            }
            worst.check(
                name,
                "theta after SGD step",
                &th,
                &floats(&c["theta_after"]),
            );
            let ev = o.forward_outputs(&th).unwrap().to_vec();
            worst.check(name, "eval outputs", &ev, &floats(&c["eval_outputs"]));
            o.set_batch(&x_eval, Targets::Classes(&eval_labels))
                .unwrap();
            let ev = o.forward_outputs(&th).unwrap().to_vec();
            worst.check(name, "eval outputs", &ev, &floats(&c["eval_outputs_other"]));
        }
    }
    println!(
        "worst relative error against PyTorch (f64), over {} nets ({} hand-written, each kind alone):",
        cases.len(),
        nets.len()
    );
    for (what, e) in &worst.0 {
        println!("  {what:<24} {e:.2e}");
    }
}
