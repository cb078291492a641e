//! The exit-code table of `fdgr` (0 success, 1 anything else, 2 bad input,
//! 3 diverged), provoked case by case through the binary, and stated in
//! every `--help`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fdgr"))
        .args(args)
        .output()
        .expect("fdgr runs")
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("fdgr-exit-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

/// `args` exits with `code`; on failure with exactly one `error:` line
/// that contains every `needles`, and no panic.
fn expect(args: &[&str], code: i32, needles: &[&str]) -> Output {
    let o = run(args);
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert_eq!(
        o.status.code(),
        Some(code),
        "{args:?}: expected exit {code}; stderr:\n{err}"
    );
    assert!(!err.contains("panicked"), "{args:?} panicked:\n{err}");
    if code != 0 {
        let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("error")).collect();
        assert_eq!(lines.len(), 1, "{args:?}: expected one error line:\n{err}");
        for n in needles {
            assert!(
                lines[0].contains(n),
                "{args:?}: '{n}' missing: {}",
                lines[0]
            );
        }
    }
    o
}

const TINY: [&str; 12] = [
    "--data",
    "digits",
    "--model",
    "64-8-10",
    "--act",
    "tanh",
    "--batch",
    "64",
    "--threads",
    "1",
    "--quiet",
    "--epochs",
];

fn train_args<'a>(out: &'a str, epochs: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut a = vec!["train"];
    a.extend_from_slice(&TINY);
    a.extend_from_slice(&[epochs, "--out", out]);
    a.extend_from_slice(extra);
    a
}

#[test]
fn exit_code_table() {
    let dir = tmp("table");
    let run_dir = s(&dir.join("run"));
    // A regular file: nothing can be created below it, not even by root.
    let file = dir.join("a-file");
    std::fs::write(&file, b"not a directory").unwrap();
    let below = |name: &str| s(&file.join(name));

    // 0: success.
    expect(&train_args(&run_dir, "1", &[]), 0, &[]);
    let fdgr = s(&dir.join("m.fdgr"));
    expect(&["export", "--ckpt", &run_dir, "--out", &fdgr], 0, &[]);
    expect(&["--help"], 0, &[]);

    // 2: bad flags and bad files.
    expect(&["train", "--method", "adam"], 2, &[]); // clap's own error
    expect(&train_args(&below("x"), "1", &["--lr", "-1"]), 2, &["--lr"]);
    expect(
        &["eval", "--ckpt", &fdgr, "--data", "digits"],
        2,
        &[&fdgr, "safetensors"],
    );
    expect(
        &["train", "--data", "csv:/no/such.csv", "--out", &below("x")],
        2,
        &["/no/such.csv", "cannot read"],
    );
    expect(&train_args(&run_dir, "1", &[]), 2, &["already holds a run"]);

    // 1: an output that cannot be written (its directory cannot be created).
    let out = below("run");
    expect(
        &train_args(&out, "1", &[]),
        1,
        &[&out, "cannot create directory"],
    );
    let out = below("m.fdgr");
    expect(
        &["export", "--ckpt", &run_dir, "--out", &out],
        1,
        &[&out, "cannot write"],
    );
    let out = below("s.bin");
    expect(
        &["samples", "--data", "digits", "--count", "4", "--out", &out],
        1,
        &[&out, "cannot write"],
    );
    let out = below("dln");
    expect(
        &[
            "dln",
            "--d",
            "6",
            "--n",
            "3",
            "--k",
            "1",
            "--methods",
            "sgd",
            "--alphas",
            "1",
            "--max-steps",
            "10",
            "--threads",
            "1",
            "--out",
            &out,
        ],
        1,
        &[&out, "cannot create directory"],
    );
    let out = below("sweep");
    let mut sweep = train_args(&out, "1", &["--methods", "sgd", "--seeds", "1"]);
    sweep[0] = "sweep";
    expect(&sweep, 1, &[&out, "cannot create directory"]);

    // 3: training diverged (the learning rate warms up to an absurd value).
    let div = s(&dir.join("diverge"));
    let o = expect(
        &train_args(
            &div,
            "6",
            &[
                "--warmup",
                "5",
                "--lr",
                "1e5",
                "--schedule",
                "constant",
                "--momentum",
                "0",
            ],
        ),
        3,
        &["diverged", "non-finite"],
    );
    drop(o);
    // So do flood-check's pre-training and the DLN's gradient descent.
    expect(
        &[
            "flood-check",
            "--act",
            "relu",
            "--lr",
            "1e30",
            "--pretrain",
            "50",
            "--pairs",
            "1",
        ],
        3,
        &["non-finite"],
    );
    expect(
        &[
            "dln",
            "--d",
            "10",
            "--n",
            "5",
            "--k",
            "2",
            "--methods",
            "sgd",
            "--alphas",
            "1",
            "--lr",
            "1e6",
            "--max-steps",
            "100",
            "--threads",
            "1",
        ],
        3,
        &["diverged", "non-finite"],
    );
}

/// Nothing is left behind by a command that failed on its input.
#[test]
fn bad_input_writes_nothing() {
    let dir = tmp("nothing");
    let out = dir.join("s.bin");
    expect(
        &[
            "samples",
            "--data",
            "digits",
            "--split",
            "validation",
            "--out",
            &s(&out),
        ],
        2,
        &["--split validation"],
    );
    let run_dir = dir.join("run");
    let r = s(&run_dir);
    expect(
        &[
            "train", "--data", "digits", "--model", "64-8-3", "--out", &r,
        ],
        2,
        &["--model", "3 outputs", "10 classes"],
    );
    assert!(!out.exists() && !run_dir.exists());
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
}

#[test]
fn every_help_states_the_exit_codes() {
    for cmd in [
        "",
        "train",
        "eval",
        "sweep",
        "bench",
        "dln",
        "crosscheck",
        "flood-check",
        "samples",
        "export",
    ] {
        let args: Vec<&str> = [cmd, "--help"]
            .into_iter()
            .filter(|a| !a.is_empty())
            .collect();
        let o = expect(&args, 0, &[]);
        let help = String::from_utf8_lossy(&o.stdout);
        for line in [
            "Exit codes:",
            "  0  success",
            "  1  anything else",
            "  2  bad input",
            "  3  training diverged",
        ] {
            assert!(
                help.contains(line),
                "fdgr {cmd} --help lacks '{line}':\n{help}"
            );
        }
    }
}

/// A run stopped after its last checkpoint but before its summary and plot
/// were written is finished by `--resume` (exit 0); a finished run is not
/// resumed again (exit 2).
#[test]
fn resume_finishes_a_run_stopped_after_its_last_checkpoint() {
    let dir = tmp("finish");
    let run_dir = dir.join("run");
    let r = s(&run_dir);
    expect(&train_args(&r, "1", &[]), 0, &[]);
    let summary = std::fs::read(run_dir.join("summary.json")).unwrap();
    for f in ["summary.json", "curves.png"] {
        std::fs::remove_file(run_dir.join(f)).unwrap();
    }
    expect(&["train", "--resume", &r, "--quiet"], 0, &[]);
    let again = std::fs::read(run_dir.join("summary.json")).unwrap();
    let fields = |b: &[u8]| {
        let mut v: serde_json::Value = serde_json::from_slice(b).unwrap();
        let o = v.as_object_mut().unwrap();
        o.remove("steps_per_sec");
        o.remove("seconds");
        v
    };
    assert_eq!(fields(&again), fields(&summary));
    assert!(run_dir.join("curves.png").is_file());
    expect(
        &["train", "--resume", &r, "--quiet"],
        2,
        &["already complete"],
    );
}

/// True when `b` is a PNG file that ends with its IEND chunk: the PNG
/// signature first, the 12 bytes of an empty IEND chunk (length 0,
/// "IEND", its CRC) last.
fn whole_png(b: &[u8]) -> bool {
    b.starts_with(b"\x89PNG\r\n\x1a\n")
        && b.ends_with(&[0, 0, 0, 0, b'I', b'E', b'N', b'D', 0xae, 0x42, 0x60, 0x82])
}

/// A torn `curves.png` (a full disk or a kill while it was written) does
/// not make `--resume` refuse the run as complete: the plot is drawn
/// again from the run's metrics, as a whole PNG.
#[test]
fn resume_redraws_a_torn_plot() {
    let dir = tmp("torn-plot");
    let run_dir = dir.join("run");
    let r = s(&run_dir);
    expect(&train_args(&r, "2", &[]), 0, &[]);
    let plot = run_dir.join("curves.png");
    let good = std::fs::read(&plot).unwrap();
    assert!(whole_png(&good));
    for torn in [
        &good[..good.len() / 2],
        &good[..8],
        b"garbage, not a PNG".as_slice(),
    ] {
        std::fs::write(&plot, torn).unwrap();
        expect(&["train", "--resume", &r, "--quiet"], 0, &[]);
        let again = std::fs::read(&plot).unwrap();
        assert!(whole_png(&again), "{} bytes", again.len());
        // no temporary file is left beside it
        let names: Vec<String> = std::fs::read_dir(&run_dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with('.'))
            .collect();
        assert!(names.is_empty(), "{names:?}");
    }
    // whole again, the run is complete
    expect(
        &["train", "--resume", &r, "--quiet"],
        2,
        &["already complete"],
    );
}

/// `fdgr crosscheck --train-layers`: a mode that is not one, or names a
/// layer without parameters, is bad input (exit 2) found before any GPU is
/// looked for, so it reads the same with or without one.
#[test]
fn crosscheck_refuses_a_bad_trained_subset() {
    let base = ["crosscheck", "--model", "64-32-10", "--steps", "1"];
    let with = |extra: &[&'static str]| -> Vec<&str> {
        let mut a = base.to_vec();
        a.extend_from_slice(extra);
        a
    };
    expect(
        &with(&["--train-layers", "half"]),
        2,
        &["--train-layers half", "expected full"],
    );
    expect(
        &with(&["--train-layers", "layers:1"]),
        2,
        &["--train-layers layers:1", "no parameters"],
    );
    expect(
        &with(&["--train-layers", "last:3"]),
        2,
        &["--train-layers last:3"],
    );
}
