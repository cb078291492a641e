//! Batch norm folded for deployment: the folded network's eval-mode
//! outputs equal the unfolded one's; `mnist8` is the MNIST subset in the
//! UCI digits' format.

mod common;

use common::{dir, run, stderr};

/// `model` trained briefly on mnist8, folded: logits within 1e-5
/// (relative to the largest), the same predictions, hence the same
/// accuracy; its FDGR export holds the folded list (no batch norm).
/// Returns the layers folded away.
fn folds_to_the_same_outputs(name: &str, model: &str) -> usize {
    let d = dir(name);
    let out = d.join("run");
    let o = run(&[
        "train",
        "--data",
        "mnist8",
        "--model",
        model,
        "--epochs",
        "2",
        "--quiet",
        "--out",
        &out.display().to_string(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let net = fdgr::checkpoint::load_net(&out).expect("model");
    let (folded, theta) = fdgr::fold::fold(&net.arch, &net.theta, &net.state)
        .expect("folds")
        .expect("has batch norm");
    assert!(!folded.has_state());
    let data = fdgr::data::load("digits", &Default::default()).expect("digits");
    let exec = fdgr::cpu::Par { threads: 1 };
    let mut ws = fdgr::backend::eval_workspace(&net.arch, &net.state);
    let a = fdgr::backend::outputs_cpu(&net.arch.model, exec, &net.theta, &data.test.x, &mut ws)
        .expect("outputs");
    let mut ws = fdgr::backend::eval_workspace(&folded, &[]);
    let b = fdgr::backend::outputs_cpu(&folded.model, exec, &theta, &data.test.x, &mut ws)
        .expect("outputs");
    let scale = a.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let worst = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0f32, f32::max);
    assert!(worst <= 1e-5 * scale, "{model}: worst {worst} of {scale}");
    let k = net.arch.outputs();
    let argmax = |v: &[f32]| {
        v.chunks_exact(k)
            .map(fdgr_kernel::loss::argmax)
            .collect::<Vec<_>>()
    };
    assert_eq!(argmax(&a), argmax(&b), "{model}");
    // the export folds it: no batch norm left for the firmware
    let f = d.join("m.fdgr");
    let o = run(&[
        "export",
        "--ckpt",
        &out.display().to_string(),
        "--out",
        &f.display().to_string(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let bytes = std::fs::read(&f).expect("export");
    let mut layers = vec![fdgr_kernel::Layer::flatten(); 256];
    let h = fdgr_kernel::export::decode_layers(&bytes, &mut layers).expect("decodes");
    assert_eq!(h.layers, folded.layers.len());
    assert!(layers[..h.layers]
        .iter()
        .all(|l| !matches!(l.op, fdgr_kernel::Op::BatchNorm)));
    net.arch.layers.len() - folded.layers.len()
}

/// A plain conv net with batch norm after convolutions and a linear layer.
#[test]
fn folded_batch_norm_computes_the_same_outputs() {
    let gone = folds_to_the_same_outputs(
        "fold",
        "conv:8:3:p1,bn,relu,maxpool:2,conv:16:3:p1:nobias,bn,relu,maxpool:2,flatten,linear:32,bn,relu,linear",
    );
    assert_eq!(gone, 3);
}

/// Residual nets: a CIFAR ResNet (projection shortcuts: conv → bn on both
/// paths of a join) and residual blocks in a layer list fold to a layer
/// list with `add:I` / `@I` that computes the same outputs.
#[test]
fn folded_residual_nets_compute_the_same_outputs() {
    // resnet8: 7 convolutions, each with its batch norm, 2 shortcut pairs
    assert_eq!(folds_to_the_same_outputs("fold-resnet8", "resnet8"), 9);
    assert_eq!(
        folds_to_the_same_outputs(
            "fold-blocks",
            "conv:8:3:p1,bn,relu,block:8,block:16:s2,gap,linear"
        ),
        1 + 2 + 3
    );
}

/// A batch norm after a residual join (pre-activation blocks) has no
/// convolution to fold into: `fdgr device build` refuses the run before
/// building, naming the layer (`fdgr export` keeps batch norm for the host).
#[test]
fn unfoldable_batch_norm_is_refused() {
    let d = dir("fold-wrn");
    let out = d.join("run");
    let o = run(&[
        "train",
        "--data",
        "mnist8",
        "--model",
        "conv:8:3:p1,wblock:8,bn,relu,gap,linear",
        "--epochs",
        "1",
        "--quiet",
        "--out",
        &out.display().to_string(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = run(&[
        "device",
        "build",
        "--board",
        "stm32f4",
        "--from",
        &out.display().to_string(),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(
        e.contains("layer 1 (batch norm)") && e.contains("cannot be folded"),
        "{e}"
    );
    assert!(!out.join("device-stm32f4").exists());
}

/// `mnist8`: 8×8 images with values 0..16, as the UCI digits; the same
/// labels as mnist5k.
#[test]
fn mnist8_is_mnist_in_the_uci_digits_format() {
    let opt = fdgr::data::DataOptions {
        normalize: fdgr::data::Normalize::None,
        ..Default::default()
    };
    let m8 = fdgr::data::load("mnist8", &opt).expect("mnist8");
    let m5 = fdgr::data::load("mnist5k", &opt).expect("mnist5k");
    assert_eq!(m8.dims, (1, 8, 8));
    assert_eq!(m8.train.y, m5.train.y);
    assert!(m8
        .train
        .x
        .iter()
        .all(|v| (0.0..=16.0).contains(v) && v.fract() == 0.0));
    // every block count is the number of pixels ≥ 128 in its 4×4 block of
    // the image centred in 32×32: the total equals the image's on pixels
    for (a, b) in m8
        .train
        .x
        .chunks_exact(64)
        .zip(m5.train.x.chunks_exact(784))
        .take(50)
    {
        let on = b.iter().filter(|&&v| v >= 128.0).count() as f32;
        assert_eq!(a.iter().sum::<f32>(), on);
    }
}

/// `bytes` (a safetensors file) with tensors renamed by `f`.
fn rename(bytes: &[u8], f: impl Fn(&str) -> Option<String>) -> Vec<u8> {
    let (h, data) = common::safetensors_parts(bytes);
    let mut out = serde_json::Map::new();
    for (k, v) in h {
        if k == "__metadata__" {
            continue; // a PyTorch file has no fdgr metadata
        }
        if let Some(k2) = f(&k) {
            out.insert(k2, v);
        }
    }
    common::safetensors_join(&out, &data)
}

/// `--init` imports a PyTorch-style state_dict (no fdgr metadata, the last
/// layer named `fc`), batch-norm statistics included: with `--epochs 0`
/// the run evaluates to the source run's accuracy; a file that does not
/// fit names every missing, extra and mis-shaped tensor (exit 2).
#[test]
fn init_imports_pytorch_names() {
    let d = dir("init");
    let src = d.join("src");
    let spec = "conv:4:3:p1,bn,relu,maxpool:2,flatten,linear";
    let o = run(&[
        "train",
        "--data",
        "digits",
        "--model",
        spec,
        "--epochs",
        "2",
        "--quiet",
        "--out",
        &src.display().to_string(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let bytes = std::fs::read(src.join("model.safetensors")).expect("model");
    let file = d.join("torch.safetensors");
    std::fs::write(
        &file,
        rename(&bytes, |k| {
            Some(match k {
                "5.weight" => "fc.weight".into(),
                "5.bias" => "fc.bias".into(),
                _ => format!("module.{k}"),
            })
        }),
    )
    .expect("write");
    let imp = d.join("imported");
    let o = run(&[
        "train",
        "--data",
        "digits",
        "--model",
        spec,
        "--init",
        &file.display().to_string(),
        "--epochs",
        "0",
        "--out",
        &imp.display().to_string(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("fc.weight as 5.weight"),
        "{}",
        stderr(&o)
    );
    let acc = |p: &std::path::Path| {
        let v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(p.join("summary.json")).expect("summary"))
                .expect("json");
        v["last"]["test_acc"].as_f64().expect("acc")
    };
    assert_eq!(acc(&src), acc(&imp));
    // a file that does not fit: every problem named, exit 2, nothing written
    std::fs::write(
        &file,
        rename(&bytes, |k| match k {
            "1.running_var" => Some("1.var".into()),
            "0.weight" => Some("0.kernel".into()),
            _ => Some(k.to_string()),
        }),
    )
    .expect("write");
    let bad = d.join("bad");
    common::assert_rejected(
        &[
            "train",
            "--data",
            "digits",
            "--model",
            spec,
            "--init",
            &file.display().to_string(),
            "--epochs",
            "0",
            "--out",
            &bad.display().to_string(),
        ],
        &[
            "0.weight [4, 1, 3, 3] missing",
            "1.running_var [4] missing",
            "not in model",
            "0.kernel",
        ],
    );
    assert!(!bad.exists());
    // a different architecture: shapes named
    common::assert_rejected(
        &[
            "train",
            "--data",
            "digits",
            "--model",
            "conv:8:3:p1,bn,relu,maxpool:2,flatten,linear",
            "--init",
            &src.join("model.safetensors").display().to_string(),
            "--epochs",
            "0",
            "--out",
            &bad.display().to_string(),
        ],
        &["0.weight has shape [4, 1, 3, 3], expected [8, 1, 3, 3]"],
    );
}
