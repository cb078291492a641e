//! `fdgr device` through the binary, where no firmware needs building:
//! every refusal before the build (a bad flag, a conv model, a model too
//! large for the board, a missing tool, no probe) exits with 2 and one
//! `error:` line and leaves nothing in the run directory; `device verify`
//! on a device folder made from the host's own replay passes, and fails on
//! one flipped bit. (`cargo xtask firmware` runs `fdgr device run` end to
//! end on QEMU, and every board up to its flashing command.)

mod common;

use common::*;
use fdgr::checkpoint::{self, Weights};
use fdgr_mcu::fw_config;
use std::path::{Path, PathBuf};
use std::process::Output;

/// Trains a tiny run on digits.
fn train(dir: &Path, model: &str) -> PathBuf {
    let out = dir.join(model.replace([':', ','], "_"));
    let o = run(&[
        "train",
        "--data",
        "digits",
        "--model",
        model,
        "--act",
        "tanh",
        "--epochs",
        "1",
        "--batch",
        "64",
        "--threads",
        "1",
        "--quiet",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    out
}

/// Nothing `device run` writes is in the run directory.
fn untouched(run_dir: &Path) {
    for e in std::fs::read_dir(run_dir).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().to_string();
        assert!(
            !name.contains("device-"),
            "{name} left in {}",
            run_dir.display()
        );
    }
}

/// A directory of links to cargo and rustc (and nothing else), and the
/// variables that make `fdgr` find them there.
fn bare_path(dir: &Path) -> PathBuf {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let cargo = PathBuf::from(env!("CARGO"));
    for (name, target) in [
        ("cargo", cargo.clone()),
        ("rustc", cargo.with_file_name("rustc")),
    ] {
        let link = bin.join(name);
        if !link.exists() {
            std::os::unix::fs::symlink(target, link).unwrap();
        }
    }
    bin
}

fn device(args: &[&str], path: Option<&Path>) -> Output {
    let mut c = bin();
    c.arg("device").args(args).env_remove("FDGR_FIRMWARE_DIR");
    if let Some(p) = path {
        c.env("PATH", p)
            .env("CARGO", p.join("cargo"))
            .env("RUSTC", p.join("rustc"));
    }
    c.output().unwrap()
}

fn rejected(o: &Output, needles: &[&str]) {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(2), "expected exit 2:\n{err}");
    assert!(!err.contains("panicked"), "panicked:\n{err}");
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("error")).collect();
    assert_eq!(lines.len(), 1, "expected one error line:\n{err}");
    for n in needles {
        assert!(lines[0].contains(n), "'{n}' missing from: {}", lines[0]);
    }
}

#[test]
fn refusals_before_building() {
    let d = dir("device-refusals");
    let mlp = train(&d, "64-8-10");
    let r = mlp.to_str().unwrap();
    let with = |board: &'static str, extra: &[&'static str]| {
        let mut a = vec!["run", "--board", board, "--from", r];
        a.extend_from_slice(extra);
        device(&a, None)
    };
    rejected(
        &with("qemu-m4", &["--method", "lbfgs"]),
        &["--method lbfgs", "sgd, db, fgr, bgr, cgr, sam, usam, flood"],
    );
    rejected(
        &with("qemu-m4", &["--mode", "half"]),
        &["--mode half", "last:K", "bias", "layers:I,J"],
    );
    rejected(
        &with("qemu-m4", &["--mode", "last:3"]),
        &["last:3", "fewer than K layers with parameters"],
    );
    rejected(
        &with("qemu-m4", &["--mode", "layers:1"]),
        &["layers:1", "has no parameters"],
    );
    rejected(
        &with("qemu-m4", &["--opt", "lion"]),
        &["--opt lion", "sgd, adam"],
    );
    rejected(
        &with("qemu-m4", &["--samples", "digits:val:4"]),
        &["SPLIT must be test or train"],
    );
    rejected(
        &with("qemu-m4", &["--samples", "digits:test:5000"]),
        &["--count 5000"],
    );
    rejected(
        &with("qemu-m4", &["--samples", "mnist5k:test:8"]),
        &["784 values", "the model takes 64"],
    );
    rejected(
        &with("qemu-m4", &["--firmware", "/nonexistent"]),
        &["firmware sources", "--firmware"],
    );
    rejected(
        &device(
            &["run", "--board", "qemu-m4", "--from", "/nonexistent/run"],
            None,
        ),
        &["--from /nonexistent/run", "not a run directory"],
    );
    // γ, ε, ρ only where the method has them, and in range.
    rejected(
        &with("qemu-m4", &["--method", "sam", "--gamma", "0.1"]),
        &["--gamma", "method sam has no gamma"],
    );
    rejected(&with("qemu-m4", &["--eps", "0"]), &["--eps 0", "> 0"]);
    rejected(
        &with("qemu-m4", &["--method", "fgr", "--flood-level", "0.1"]),
        &["--flood-level", "method fgr has no flood-level", "flood"],
    );
    rejected(
        &with("qemu-m4", &["--method", "flood", "--flood-level=-1"]),
        &["--flood-level -1", "≥ 0"],
    );
    // --json reports the live image's run: with --samples on qemu-m4 (or
    // --live), not with the samples built into the image.
    rejected(
        &with("qemu-m4", &["--json"]),
        &["--json", "--samples DATA:SPLIT:N"],
    );
    rejected(
        &with(
            "qemu-m4",
            &["--samples", "digits:train:8", "--built-in", "--json"],
        ),
        &["--built-in", "--json"],
    );
    // Fine-tuning on every test sample leaves none to measure on.
    rejected(
        &with("qemu-m4", &["--samples", "digits:test:359"]),
        &["no test samples are left"],
    );
    untouched(&mlp);

    // Batch norm is folded into the convolution before it for the device;
    // one after an activation cannot be, and is refused.
    let conv = train(&d, "conv:4:3:p1,tanh,bn,flatten,linear");
    let o = device(
        &[
            "run",
            "--board",
            "qemu-m4",
            "--from",
            conv.to_str().unwrap(),
        ],
        None,
    );
    rejected(&o, &["batch norm", "cannot be folded"]);
    untouched(&conv);

    // Too large for the STM32F4's 128 KiB (3·4P for F-GR alone: 461 KB),
    // though its last layer would fit; a model whose weights alone (1.2 MB)
    // exceed the nRF52840's 1 MiB of flash does not fit even so.
    let wide = train(&d, "64-512-10");
    let w = wide.to_str().unwrap();
    let o = device(&["run", "--board", "stm32f4", "--from", w], None);
    rejected(
        &o,
        &[
            "too large for the stm32f4",
            "131072 B",
            "memory.x",
            "--mode last",
        ],
    );
    let wide2 = train(&d, "64-512-512-10");
    let o = device(
        &[
            "run",
            "--board",
            "nrf52840",
            "--from",
            wide2.to_str().unwrap(),
            "--mode",
            "last",
        ],
        None,
    );
    rejected(
        &o,
        &["too large for the nrf52840", "of flash", "smaller model"],
    );
    untouched(&wide);
    untouched(&wide2);
}

#[test]
fn missing_tools_and_probes() {
    let d = dir("device-tools");
    let mlp = train(&d, "64-8-10");
    let r = mlp.to_str().unwrap();
    // Only cargo and rustc on PATH: no QEMU, no probe-rs.
    let bare = bare_path(&d);
    let o = device(&["run", "--board", "qemu-m4", "--from", r], Some(&bare));
    rejected(
        &o,
        &[
            "qemu-system-arm not found",
            "apt-get install qemu-system-arm",
        ],
    );
    for board in ["stm32f4", "nrf52840", "rp2040"] {
        let o = device(&["run", "--board", board, "--from", r], Some(&bare));
        rejected(&o, &["probe-rs not found", "cargo install probe-rs-tools"]);
    }
    // probe-rs there, but no probe attached.
    let probe = bare.join("probe-rs");
    std::fs::write(
        &probe,
        "#!/bin/sh\ncase \"$1\" in list) echo 'No debug probes were found.';; esac\nexit 0\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&probe, std::fs::Permissions::from_mode(0o755)).unwrap();
    let o = device(&["run", "--board", "nrf52840", "--from", r], Some(&bare));
    rejected(&o, &["no debug probe attached", "nRF52840-DK", "USB"]);
    untouched(&mlp);
}

/// A device folder as `device run` writes it, made from the host's replay
/// of the fine-tuning instead of a device.
fn replayed_device_dir(d: &Path) -> PathBuf {
    let run_dir = train(d, "64-8-10");
    let r = run_dir.to_str().unwrap();
    let dev = run_dir.join("device-qemu-m4");
    std::fs::create_dir_all(&dev).unwrap();
    let (m, s) = (dev.join("model.fdgr"), dev.join("stream.bin"));
    let o = run(&["export", "--ckpt", r, "--out", m.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = run(&[
        "samples",
        "--data",
        "digits",
        "--count",
        "16",
        "--out",
        s.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let (model, stream) = (std::fs::read(&m).unwrap(), std::fs::read(&s).unwrap());
    let sam = fw_config::method("sam").unwrap();
    let mode = fdgr_kernel::finetune::Mode::LAST_LAYER;
    let (losses, theta) = fdgr_mcu::replay::replay(&model, &stream, sam, mode, 1).unwrap();
    let metrics: String = losses
        .iter()
        .enumerate()
        .map(|(i, b)| {
            format!(
                "{{\"step\":{i},\"loss\":{},\"loss_bits\":\"{b:#010x}\"}}\n",
                f32::from_bits(*b)
            )
        })
        .collect();
    std::fs::write(dev.join("metrics.jsonl"), metrics).unwrap();
    let net = checkpoint::load_net(&run_dir).unwrap();
    let theta: Vec<f32> = theta.iter().map(|&b| f32::from_bits(b)).collect();
    let w = Weights {
        theta: &theta,
        state: &[],
        tracked: 0,
        pre: net.pre.as_ref(),
    };
    checkpoint::save_model(&dev.join("model.safetensors"), &net.arch, &w).unwrap();
    let summary = serde_json::json!({"model": "64-8-10", "board": "qemu-m4", "method": "sam",
                                     "mode": "last", "optimizer": "adam"});
    std::fs::write(dev.join("summary.json"), summary.to_string()).unwrap();
    run_dir
}

#[test]
fn verify_is_bitwise() {
    let d = dir("device-verify");
    let run_dir = replayed_device_dir(&d);
    let r = run_dir.to_str().unwrap();
    let dev = run_dir.join("device-qemu-m4");
    let o = device(&["verify", "--from", r, "--board", "qemu-m4"], None);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("bit-identical: 16 of 16 losses"), "{out}");
    let o = device(&["verify", "--dir", dev.to_str().unwrap()], None);
    assert!(o.status.success(), "{}", stderr(&o));

    // One loss bit: exit 1, naming the step.
    let metrics = std::fs::read_to_string(dev.join("metrics.jsonl")).unwrap();
    let mut lines: Vec<String> = metrics.lines().map(String::from).collect();
    let mut v: serde_json::Value = serde_json::from_str(&lines[3]).unwrap();
    let b = u32::from_str_radix(
        v["loss_bits"].as_str().unwrap().trim_start_matches("0x"),
        16,
    )
    .unwrap();
    v["loss_bits"] = format!("{:#010x}", b ^ 1).into();
    lines[3] = v.to_string();
    std::fs::write(dev.join("metrics.jsonl"), lines.join("\n")).unwrap();
    let o = device(&["verify", "--dir", dev.to_str().unwrap()], None);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("differ in 1 of 16 losses and 0 of"),
        "{}",
        stderr(&o)
    );
    assert!(stderr(&o).contains("first loss: step 3"), "{}", stderr(&o));
    std::fs::write(dev.join("metrics.jsonl"), metrics).unwrap();

    // One weight bit (in the trained last layer, in the safetensors file).
    let net = checkpoint::load_net(&dev).unwrap();
    let mut theta = net.theta.clone();
    let last = theta.len() - 1;
    theta[last] = f32::from_bits(theta[last].to_bits() ^ 1);
    let w = Weights {
        theta: &theta,
        state: &[],
        tracked: 0,
        pre: net.pre.as_ref(),
    };
    let good = std::fs::read(dev.join("model.safetensors")).unwrap();
    checkpoint::save_model(&dev.join("model.safetensors"), &net.arch, &w).unwrap();
    let o = device(&["verify", "--dir", dev.to_str().unwrap()], None);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("1 of 610 weights"), "{}", stderr(&o));
    std::fs::write(dev.join("model.safetensors"), good).unwrap();

    // Missing or unreadable inputs are bad input.
    std::fs::remove_file(dev.join("stream.bin")).unwrap();
    rejected(
        &device(&["verify", "--dir", dev.to_str().unwrap()], None),
        &["stream.bin"],
    );
    rejected(
        &device(&["verify", "--from", r], None),
        &["required arguments"],
    );
}
