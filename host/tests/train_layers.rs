//! `fdgr train --train-layers`: the parameters a mode does not train stay
//! bit for bit as loaded (`--init`), the trained ones move, a run that is
//! killed and resumed ends bit-identical, and the combinations that cannot
//! work are refused with exit 2.

mod common;
use common::*;
use std::collections::BTreeMap;
use std::path::Path;

/// Every tensor of a safetensors file: name → raw bytes.
fn tensors(p: &Path) -> BTreeMap<String, Vec<u8>> {
    let bytes = std::fs::read(p).unwrap();
    let (h, data) = safetensors_parts(&bytes);
    h.iter()
        .filter(|(k, _)| *k != "__metadata__")
        .map(|(k, v)| {
            let o = v["data_offsets"].as_array().unwrap();
            let (a, b) = (
                o[0].as_u64().unwrap() as usize,
                o[1].as_u64().unwrap() as usize,
            );
            (k.clone(), data[a..b].to_vec())
        })
        .collect()
}

fn train(args: &[&str]) {
    let o = run(args);
    assert!(o.status.success(), "{:?}: {}", args, stderr(&o));
}

#[test]
fn frozen_parameters_stay_as_loaded() {
    let d = dir("train-layers");
    let base = d.join("base");
    let b = base.to_str().unwrap();
    let common = [
        "--data",
        "digits",
        "--model",
        "64-16-12-10",
        "--act",
        "tanh",
        "--quiet",
        "--lr",
        "0.05",
    ];
    let mut a = vec!["train"];
    a.extend_from_slice(&common);
    a.extend_from_slice(&["--epochs", "2", "--out", b]);
    train(&a);
    let init = base.join("model.safetensors");
    let before = tensors(&init);
    // (mode, the tensors it trains) on the layer list linear, tanh,
    // linear, tanh, linear
    let cases: [(&str, &[&str]); 4] = [
        ("bias", &["0.bias", "2.bias", "4.bias"]),
        ("last", &["4.weight", "4.bias"]),
        ("last:2", &["2.weight", "2.bias", "4.weight", "4.bias"]),
        ("layers:0,4", &["0.weight", "0.bias", "4.weight", "4.bias"]),
    ];
    assert!(
        before.keys().any(|k| k == "0.weight"),
        "tensor names: {:?}",
        before.keys()
    );
    for (mode, trained) in cases {
        for method in ["sgd", "fgr", "sam"] {
            let out = d.join(format!("{}-{method}", mode.replace([':', ','], "-")));
            let o = out.to_str().unwrap();
            let mut a = vec!["train"];
            a.extend_from_slice(&common);
            a.extend_from_slice(&[
                "--epochs",
                "2",
                "--method",
                method,
                "--init",
                init.to_str().unwrap(),
                "--train-layers",
                mode,
                "--out",
                o,
            ]);
            train(&a);
            let after = tensors(&out.join("model.safetensors"));
            for (name, b) in &before {
                let moved = after[name] != *b;
                assert_eq!(
                    moved,
                    trained.contains(&name.as_str()),
                    "{mode} {method}: {name} {}",
                    if moved { "moved" } else { "did not move" }
                );
            }
        }
    }
}

#[test]
fn partial_training_resumes_bit_exact() {
    let d = dir("train-layers-resume");
    let base = d.join("base");
    train(&[
        "train",
        "--data",
        "digits",
        "--model",
        "64-256-256-10",
        "--act",
        "tanh",
        "--epochs",
        "1",
        "--quiet",
        "--out",
        base.to_str().unwrap(),
    ]);
    let init = base.join("model.safetensors").display().to_string();
    let args = move |out: &Path| -> Vec<String> {
        [
            "train",
            "--data",
            "digits",
            "--model",
            "64-256-256-10",
            "--act",
            "tanh",
            "--epochs",
            "30",
            "--method",
            "fgr",
            "--train-layers",
            "last:2",
            "--batch",
            "8",
            "--threads",
            "2",
            "--quiet",
            "--init",
            &init,
            "--out",
        ]
        .iter()
        .map(|s| s.to_string())
        .chain([out.display().to_string()])
        .collect()
    };
    kill_resume_is_bit_exact(&args, &d.join("clean"), &d.join("killed"));
}

#[test]
fn impossible_combinations_exit_2() {
    let d = dir("train-layers-refused");
    let o = d.join("x");
    let o = o.to_str().unwrap();
    let base = [
        "train", "--data", "digits", "--model", "64-32-10", "--epochs", "1", "--out", o,
    ];
    let with = |extra: &[&'static str]| -> Vec<&str> {
        let mut a = base.to_vec();
        a.extend_from_slice(extra);
        a
    };
    assert_rejected(
        &with(&["--train-layers", "half"]),
        &["--train-layers half", "bias"],
    );
    assert_rejected(
        &with(&["--train-layers", "layers:1"]),
        &["--train-layers layers:1", "no parameters"],
    );
    assert_rejected(
        &with(&["--train-layers", "last:3"]),
        &["--train-layers last:3", "fewer than K"],
    );
    assert_rejected(
        &with(&["--train-layers", "bias", "--method", "db"]),
        &["--train-layers bias", "Hessian-vector"],
    );
    assert!(!Path::new(o).exists(), "nothing written");
}
