//! The `fdgr` binary end to end: the bad-input corpus, checkpoint layout,
//! resume after `kill -9` (bit-exact), divergence handling, eval and export.

use std::path::{Path, PathBuf};
use std::process::Output;

mod common;

use common::{assert_rejected, run, stderr};

fn corpus(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/corpus")
        .join(name)
        .display()
        .to_string()
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("fdgr-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}

#[test]
fn bad_data_files_are_rejected_clearly() {
    let pair = |img: &str, lab: &str| format!("idx:{},{}", corpus(img), corpus(lab));
    let cases: Vec<(String, Vec<&str>)> = vec![
        (
            pair("idx-truncated-images", "idx-good-labels"),
            vec!["idx-truncated-images", "truncated"],
        ),
        (
            pair("idx-wrong-magic-images", "idx-good-labels"),
            vec!["idx-wrong-magic-images", "magic"],
        ),
        (
            pair("idx-float-images", "idx-good-labels"),
            vec!["idx-float-images", "element type"],
        ),
        (
            pair("idx-good-images", "idx-short-labels"),
            vec!["idx-short-labels", "2 labels"],
        ),
        (
            pair("idx-good-images", "idx-images-as-labels"),
            vec!["idx-images-as-labels", "dimensions"],
        ),
        (
            format!("csv:{}", corpus("corrupt.gz")),
            vec!["corrupt.gz", "gzip"],
        ),
        (
            format!("cifar10:{}", corpus("cifar-wrong-size.bin")),
            vec!["cifar-wrong-size.bin", "CIFAR-10 records"],
        ),
        (
            format!("cifar10:{}", corpus("cifar-bad-label.bin")),
            vec!["cifar-bad-label.bin", "label 11"],
        ),
        (
            format!("csv:{}", corpus("nan.csv")),
            vec!["nan.csv:2 column 2", "NaN"],
        ),
        (
            format!("csv:{}", corpus("ragged.csv")),
            vec!["ragged.csv:2", "columns"],
        ),
        (
            format!("csv:{}", corpus("bad-label.csv")),
            vec!["bad-label.csv:2", "label '1.5'"],
        ),
        (
            format!("csv:{}", corpus("empty.csv")),
            vec!["empty.csv", "no data rows"],
        ),
        (
            format!("csv:{}", corpus("text.csv")),
            vec!["text.csv:2 column 1", "not a number"],
        ),
        (
            format!("csv:{}", corpus("does-not-exist.csv")),
            vec!["does-not-exist.csv", "cannot read"],
        ),
        (
            format!("mnist:{}", corpus("no-such-dir")),
            vec!["no-such-dir", "not a directory"],
        ),
        ("imagenet".into(), vec!["imagenet", "unknown data set"]),
    ];
    for (data, needles) in &cases {
        assert_rejected(
            &[
                "train",
                "--data",
                data,
                "--model",
                "4-3-3",
                "--epochs",
                "1",
                "--out",
                "/nonexistent/x",
            ],
            needles,
        );
    }
    // labels beyond the model's outputs
    assert_rejected(
        &[
            "train",
            "--data",
            &format!("csv:{}", corpus("labels-12.csv")),
            "--model",
            "2-8-10",
            "--epochs",
            "1",
        ],
        &["--model", "10 outputs", "13 classes"],
    );
}

#[test]
fn bad_flags_are_rejected_clearly() {
    let base = [
        "train",
        "--data",
        "digits",
        "--epochs",
        "1",
        "--out",
        "/nonexistent/x",
    ];
    let cases: &[(&[&str], &[&str])] = &[
        (&["--lr", "-1"], &["--lr"]),
        (&["--method", "fgr", "--eps", "0"], &["eps"]),
        (&["--model", "0-3"], &["--model"]),
        (
            &["--model", "784-32-10"],
            &["input width 784", "64 features"],
        ),
        (&["--momentum", "1.5"], &["momentum"]),
        (&["--act", "swish"], &["--act swish"]),
        (&["--test-frac", "1.5"], &["--test-frac"]),
        (&["--batch", "0"], &["--batch"]),
        (&["--warmup", "5"], &["--warmup"]),
    ];
    for (extra, needles) in cases {
        let mut args: Vec<&str> = base.to_vec();
        args.extend_from_slice(extra);
        assert_rejected(&args, needles);
    }
    // clap's own errors also exit with 2
    let o = run(&["train", "--method", "adam"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(!stderr(&o).contains("panicked"));
}

#[test]
fn bad_model_files_are_rejected_clearly() {
    for f in [
        "not-safetensors.safetensors",
        "truncated.safetensors",
        "empty",
    ] {
        assert_rejected(&["eval", "--ckpt", &corpus(f), "--data", "digits"], &[f]);
        assert_rejected(
            &["export", "--ckpt", &corpus(f), "--out", "/tmp/x.fdgr"],
            &[f],
        );
    }
    assert_rejected(
        &[
            "eval",
            "--ckpt",
            &corpus("nope.safetensors"),
            "--data",
            "digits",
        ],
        &["nope.safetensors", "cannot read"],
    );
    assert_rejected(
        &["train", "--resume", &corpus("no-run-here")],
        &["no-run-here", "cannot read"],
    );
}

fn train_digits(out: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "train",
        "--data",
        "digits",
        "--model",
        "64-24-10",
        "--act",
        "tanh",
        "--batch",
        "64",
        "--threads",
        "1",
        "--quiet",
        "--out",
    ];
    let o = out.display().to_string();
    args.push(&o);
    args.extend_from_slice(extra);
    run(&args)
}

#[test]
fn model_file_has_pytorch_sequential_layout() {
    let dir = tmp("layout");
    let o = train_digits(&dir, &["--epochs", "2"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let bytes = std::fs::read(dir.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut names = st.names();
    names.sort();
    assert_eq!(names, vec!["0.bias", "0.weight", "2.bias", "2.weight"]);
    assert_eq!(st.tensor("0.weight").unwrap().shape(), &[24, 64]);
    assert_eq!(st.tensor("0.bias").unwrap().shape(), &[24]);
    assert_eq!(st.tensor("2.weight").unwrap().shape(), &[10, 24]);
    assert_eq!(st.tensor("2.bias").unwrap().shape(), &[10]);
    // [out, in] row-major = the kernel's θ order: W1, b1, W2, b2
    let (shape, theta) = fdgr::checkpoint::load_model(&dir).unwrap();
    let w1: Vec<f32> = st
        .tensor("0.weight")
        .unwrap()
        .data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    assert_eq!(&theta[..24 * 64], &w1[..]);
    let b2: Vec<f32> = st
        .tensor("2.bias")
        .unwrap()
        .data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    assert_eq!(&theta[shape.param_count() - 10..], &b2[..]);
    // checkpoint and model agree; export round-trips through the kernel's reader
    let ck = fdgr::checkpoint::load_checkpoint(&dir).unwrap();
    assert_eq!(ck.theta, theta);
    assert_eq!(ck.state.epoch, 2);
    let f = dir.join("m.fdgr");
    let o = run(&[
        "export",
        "--ckpt",
        &dir.display().to_string(),
        "--out",
        &f.display().to_string(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let mut back = vec![0.0f32; theta.len()];
    let s2 =
        fdgr_kernel::export::decode(&std::fs::read(&f).unwrap(), Some(&shape), &mut back).unwrap();
    assert_eq!(s2, shape);
    assert_eq!(back, theta);
    // eval reproduces the run's final test accuracy
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("summary.json")).unwrap()).unwrap();
    let o = run(&[
        "eval",
        "--ckpt",
        &dir.display().to_string(),
        "--data",
        "digits",
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let ev: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        ev["accuracy"].as_f64(),
        summary["last"]["test_acc"].as_f64()
    );
    // metrics.jsonl: one line per epoch with the documented fields
    let m = std::fs::read_to_string(dir.join("metrics.jsonl")).unwrap();
    assert_eq!(m.lines().count(), 2);
    let rec: serde_json::Value = serde_json::from_str(m.lines().next().unwrap()).unwrap();
    for k in [
        "epoch",
        "step",
        "lr",
        "train_loss",
        "train_acc",
        "test_loss",
        "test_acc",
        "seconds",
    ] {
        assert!(rec.get(k).is_some(), "metrics field {k}");
    }
    // a model of another shape is refused by eval on mismatched data
    assert_rejected(
        &[
            "eval",
            "--ckpt",
            &dir.display().to_string(),
            "--data",
            "mnist5k",
        ],
        &["input width 64", "784"],
    );
    // and a run directory is not overwritten
    assert_rejected(
        &[
            "train",
            "--data",
            "digits",
            "--model",
            "64-24-10",
            "--out",
            &dir.display().to_string(),
        ],
        &["already holds a run"],
    );
}

/// `kill -9` at random moments, then `--resume`, until the run completes:
/// the final weights equal an uninterrupted run's, byte for byte.
#[test]
fn resume_after_kill_is_bit_exact() {
    let args = |out: &Path| -> Vec<String> {
        [
            "train",
            "--data",
            "digits",
            "--model",
            "64-256-256-10",
            "--act",
            "tanh",
            "--method",
            "fgr",
            "--epochs",
            "30",
            "--batch",
            "8",
            "--threads",
            "2",
            "--quiet",
            "--out",
        ]
        .iter()
        .map(|s| s.to_string())
        .chain([out.display().to_string()])
        .collect()
    };
    common::kill_resume_is_bit_exact(&args, &tmp("resume-clean"), &tmp("resume-killed"));
}

#[test]
fn divergence_stops_with_a_clear_message_and_keeps_the_checkpoint() {
    let dir = tmp("diverge");
    // warm-up ramps the learning rate from tiny to absurd: the first epoch
    // is fine, a later one diverges.
    let o = train_digits(
        &dir,
        &[
            "--epochs",
            "6",
            "--warmup",
            "5",
            "--lr",
            "1e5",
            "--schedule",
            "constant",
            "--momentum",
            "0",
        ],
    );
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(3), "{err}");
    assert!(
        err.contains("diverged") && err.contains("non-finite"),
        "{err}"
    );
    assert!(!err.contains("panicked"));
    let ck = fdgr::checkpoint::load_checkpoint(&dir).expect("last good checkpoint intact");
    assert!(ck.state.epoch >= 1, "at least one good epoch was saved");
    assert!(ck.theta.iter().all(|t| t.is_finite()));
    assert!(
        err.contains(&format!("(epoch {})", ck.state.epoch)),
        "{err}"
    );
}

/// Without an NVIDIA driver, `--backend gpu` is one clear error line and
/// exit code 2 (with a GPU, the run must succeed).
#[test]
fn gpu_backend_without_driver_fails_cleanly() {
    let dir = tmp("gpu");
    let o = train_digits(&dir, &["--epochs", "1", "--backend", "gpu"]);
    if o.status.success() {
        eprintln!("NOTE: a GPU is present; the no-driver path was not exercised");
        return;
    }
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("error")).collect();
    assert_eq!(lines.len(), 1, "{err}");
    assert!(lines[0].contains("GPU backend unavailable"), "{err}");
    for args in [
        &["bench", "--backend", "gpu", "--method", "fgr"][..],
        &["crosscheck", "--steps", "1"][..],
        &[
            "crosscheck",
            "--model",
            "64-32-10",
            "--steps",
            "1",
            "--train-layers",
            "bias",
        ][..],
        &[
            "bench",
            "--backend",
            "gpu",
            "--model",
            "resnet18",
            "--method",
            "fgr",
        ][..],
        &[
            "crosscheck",
            "--model",
            "resnet20",
            "--steps",
            "1",
            "--precision",
            "bf16",
        ][..],
    ] {
        let o = run(args);
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        assert!(stderr(&o).contains("GPU backend unavailable"));
    }
}
