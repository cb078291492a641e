//! Hostile input: generated model specs and mutated safetensors files end
//! in a result or a clear error, never a panic, an abort or a signal, and
//! within a memory cap.
//!
//! Each fuzz test re-runs itself in a child process under `ulimit -v`
//! (the cap): an allocation failure there aborts the child, which the
//! parent reports as a failure, so "0 aborts" is checked, not assumed.
//! The child runs the same test function with `FDGR_HOSTILE_CHILD` set.

mod common;

use common::{dir, run, stderr};
use fdgr::arch::Arch;
use fdgr_kernel::model::Dims;
use fdgr_kernel::{Act, Rng};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The address-space cap of the children, KiB (4 GiB).
const CAP_KIB: u64 = 4 << 20;
const CHILD: &str = "FDGR_HOSTILE_CHILD";

/// In the parent: runs the test `name` of this binary in a child under
/// the memory cap, requires it to pass, and returns false. In the child:
/// returns true (run the body).
fn in_child(name: &str, env: &[(&str, &Path)]) -> bool {
    if std::env::var_os(CHILD).is_some() {
        return true;
    }
    let exe = std::env::current_exe().expect("test binary");
    let mut c = Command::new("sh");
    c.arg("-c")
        .arg(format!(
            "ulimit -v {CAP_KIB} && exec \"$0\" --exact {name} --nocapture --test-threads 1"
        ))
        .arg(&exe)
        .env(CHILD, "1")
        .env("RUST_BACKTRACE", "0");
    for (k, v) in env {
        c.env(k, v);
    }
    let o = c.output().expect("child runs");
    let out = String::from_utf8_lossy(&o.stdout);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        o.status.success(),
        "{name} under ulimit -v {CAP_KIB} KiB: {:?} (a signal means an abort)\nstdout:\n{out}\nstderr:\n{err}",
        o.status
    );
    assert!(
        out.contains("1 passed"),
        "{name}: the child ran no test:\n{out}"
    );
    // the child's own summary line
    for l in out.lines().filter(|l| l.starts_with("hostile:")) {
        println!("{l}");
    }
    false
}

/// A number as a hostile user might type it.
fn number(r: &mut Rng) -> String {
    match r.below(20) {
        0..=7 => r.below(21).to_string(),
        8..=10 => [
            "32", "64", "100", "128", "255", "256", "1000", "4096", "65536", "1000000",
        ][r.below(10)]
        .to_string(),
        11..=12 => (1u64 << (20 + r.below(44))).to_string(),
        13..=15 => [
            u64::MAX.to_string(),
            (u64::MAX - 1).to_string(),
            (1u64 << 63).to_string(),
            (1u64 << 62).to_string(),
            (1u64 << 61).to_string(),
            ((1u64 << 63) - 1).to_string(),
        ][r.below(6)]
        .clone(),
        _ => [
            "",
            "-1",
            "1e3",
            "0x10",
            "18446744073709551616",
            "99999999999999999999999",
            "+3",
            " 4",
            "３",
            "1.5",
            "banana",
        ][r.below(11)]
        .to_string(),
    }
}

fn option(r: &mut Rng) -> String {
    match r.below(8) {
        0 => format!("s{}", number(r)),
        1 | 2 => format!("p{}", number(r)),
        3 => format!("g{}", number(r)),
        4 => "nobias".into(),
        5 => ["q3", "s", "p-1", "x", "", "G2", "nobias2"][r.below(7)].into(),
        _ => format!("s{}", r.below(4)),
    }
}

fn entry(r: &mut Rng) -> String {
    let opts =
        |r: &mut Rng| -> String { (0..r.below(3)).map(|_| format!(":{}", option(r))).collect() };
    match r.below(16) {
        0..=2 => format!("conv:{}:{}{}", number(r), number(r), opts(r)),
        3 => format!("dwconv:{}{}", number(r), opts(r)),
        4 => "bn".into(),
        5 => ["relu", "tanh", "sigmoid", "identity"][r.below(4)].into(),
        6 => format!("maxpool:{}{}", number(r), opts(r)),
        7 => format!("avgpool:{}{}", number(r), opts(r)),
        8 => "gap".into(),
        9 | 10 => "flatten".into(),
        11 | 12 => {
            if r.below(2) == 0 {
                "linear".into()
            } else {
                format!("linear:{}{}", number(r), opts(r))
            }
        }
        13 => format!("block:{}{}", number(r), opts(r)),
        14 => format!("wblock:{}{}", number(r), opts(r)),
        _ => format!(
            "{}:{}",
            ["relu", "flatten", "bn", "gap", "fc"][r.below(5)],
            option(r)
        ),
    }
}

/// A model spec: the grammar with extreme numbers, presets, MLP widths,
/// or random bytes.
fn spec(r: &mut Rng) -> String {
    match r.below(10) {
        0..=5 => {
            let n = 1 + r.below(8);
            let mut v: Vec<String> = (0..n).map(|_| entry(r)).collect();
            if r.below(2) == 0 {
                v.push("flatten".into());
                v.push("linear".into());
            }
            v.join(",")
        }
        6 => match r.below(4) {
            0 => format!("resnet{}", number(r)),
            1 => format!("wrn-{}-{}", number(r), number(r)),
            2 => "lenet5".into(),
            _ => format!("resnet{}", 2 + 6 * r.below(4)),
        },
        7 => (0..1 + r.below(6))
            .map(|_| number(r))
            .collect::<Vec<_>>()
            .join("-"),
        8 => {
            let alphabet = b"conv:linear,flatten-0123456789spgbnrelu ,:,:";
            (0..r.below(40))
                .map(|_| alphabet[r.below(alphabet.len())] as char)
                .collect()
        }
        _ => {
            let bytes: Vec<u8> = (0..r.below(48)).map(|_| r.below(256) as u8).collect();
            String::from_utf8_lossy(&bytes).into_owned()
        }
    }
}

/// ≥ 10,000 generated specs: each is planned (or refused with an error
/// naming `--model`); a planned one is checked against memory and, when
/// small, run forward for real on two samples.
#[test]
fn generated_model_specs_never_panic_or_abort() {
    if !in_child("generated_model_specs_never_panic_or_abort", &[]) {
        return;
    }
    let mut r = Rng::new(23);
    let inputs = [Dims::new(1, 8, 8), Dims::flat(64), Dims::new(3, 16, 16)];
    let (mut refused, mut too_big, mut ran) = (0usize, 0usize, 0usize);
    let n = 10_000;
    for _ in 0..n {
        let s = spec(&mut r);
        let input = inputs[r.below(inputs.len())];
        let arch = match Arch::parse(&s, Act::Relu, input, 10) {
            Ok(a) => a,
            Err(e) => {
                let m = format!("{e:#}");
                assert!(m.contains("--model"), "{s:?}: error without the flag: {m}");
                refused += 1;
                continue;
            }
        };
        let bytes = fdgr::memory::train_bytes(&arch, 2, 4, true, 0, 1);
        if let Err(e) = fdgr::memory::check("model", bytes) {
            let m = format!("{e:#}");
            assert!(m.contains("needs") || m.contains("overflows"), "{s:?}: {m}");
            too_big += 1;
            continue;
        }
        let macs = arch.model.sizes.macs;
        if bytes.unwrap_or(u64::MAX) > 256 << 20 || macs > 20_000_000 {
            too_big += 1;
            continue;
        }
        let mut theta = vec![0.0f32; arch.param_count()];
        fdgr_kernel::init_params(arch.model.nodes(), &mut theta, &mut Rng::new(1));
        let state = vec![0.0f32; arch.model.sizes.state];
        let mut ws = fdgr::backend::eval_workspace(&arch, &state);
        let x: Vec<f32> = (0..2 * arch.inputs())
            .map(|i| (i % 7) as f32 * 0.1)
            .collect();
        // labels every model can take (a model with fewer outputs than
        // the data's classes is refused later, by the data check)
        let y = [0u32, 0];
        let exec = fdgr::cpu::Par { threads: 1 };
        fdgr::backend::evaluate_cpu(&arch.model, exec, &theta, &x, &y, &mut ws)
            .unwrap_or_else(|e| panic!("{s:?}: a planned model failed to evaluate: {e:#}"));
        ran += 1;
    }
    println!("hostile: {n} model specs: {refused} refused, {too_big} planned but too large to run here, {ran} planned and run forward");
    assert_eq!(refused + too_big + ran, n);
    assert!(
        refused >= 1000 && ran >= 500,
        "{refused} refused, {ran} ran"
    );
}

/// Trains (zero epochs: the initial weights) and returns the run directory.
fn make_run(root: &Path, name: &str, args: &[&str]) -> PathBuf {
    let d = root.join(name);
    let mut a = vec!["train", "--data", "digits", "--quiet", "--out"];
    let ds = d.display().to_string();
    a.push(&ds);
    a.extend_from_slice(args);
    let o = run(&a);
    assert!(o.status.success(), "{a:?}: {}", stderr(&o));
    d
}

/// A structured mutation of a safetensors file: its header's metadata
/// (extreme numbers and shapes, other specs, a corrupted training state),
/// its tensors' shapes, dtypes and offsets, or the values of a tensor.
fn mutate(bytes: &[u8], r: &mut Rng) -> Vec<u8> {
    let (mut h, mut data) = common::safetensors_parts(bytes);
    let extreme = |r: &mut Rng| -> serde_json::Value {
        let vals = [
            serde_json::json!(u64::MAX),
            serde_json::json!(1u64 << 40),
            serde_json::json!(0),
            serde_json::json!(-1),
            serde_json::json!(1e300),
            serde_json::json!(100000),
            serde_json::json!("x"),
            serde_json::json!(null),
            serde_json::json!([]),
        ];
        vals[r.below(vals.len())].clone()
    };
    let tensors: Vec<String> = h.keys().filter(|k| *k != "__metadata__").cloned().collect();
    match r.below(6) {
        // a metadata value
        0 | 1 => {
            if let Some(serde_json::Value::Object(m)) = h.get_mut("__metadata__") {
                let keys: Vec<String> = m.keys().cloned().collect();
                let k = keys[r.below(keys.len())].clone();
                let v = match k.as_str() {
                    "fdgr.input" => [
                        "[1,100000,100000]",
                        "[0,8,8]",
                        "[1,8]",
                        "[18446744073709551615,1,1]",
                        "[1,8,8,8]",
                        "[3,32,32]",
                        "x",
                    ][r.below(7)]
                    .to_string(),
                    "fdgr.classes" => {
                        ["18446744073709551615", "0", "11", "-3", "1000000000000", ""][r.below(6)]
                            .to_string()
                    }
                    "fdgr.spec" | "dims" => spec(r),
                    "fdgr-state" => {
                        let mut st: serde_json::Value =
                            serde_json::from_str(m[&k].as_str().unwrap_or("")).unwrap_or_default();
                        if let Some(c) = st.get_mut("config").and_then(|c| c.as_object_mut()) {
                            let ck: Vec<String> = c.keys().cloned().collect();
                            let f = ck[r.below(ck.len())].clone();
                            c.insert(f, extreme(r));
                        } else if let Some(o) = st.as_object_mut() {
                            let ok: Vec<String> = o.keys().cloned().collect();
                            let f = ok[r.below(ok.len())].clone();
                            o.insert(f, extreme(r));
                        }
                        st.to_string()
                    }
                    _ => ["", "x", "relu", "ce", "mse", "fdgr-net", "{"][r.below(7)].to_string(),
                };
                if r.below(8) == 0 {
                    m.remove(&k);
                } else {
                    m.insert(k, serde_json::Value::String(v));
                }
            }
        }
        // a tensor's shape
        2 => {
            let t = &tensors[r.below(tensors.len())];
            if let Some(shape) = h[t].get("shape").and_then(|s| s.as_array()).cloned() {
                let mut s: Vec<serde_json::Value> = shape;
                match r.below(4) {
                    0 if !s.is_empty() => {
                        let i = r.below(s.len());
                        s[i] = serde_json::json!([0, 1, 3, 1 << 30, u64::MAX][r.below(5)]);
                    }
                    1 => s.push(serde_json::json!(1)),
                    2 if !s.is_empty() => {
                        s.pop();
                    }
                    _ => s.reverse(),
                }
                h[t]["shape"] = serde_json::Value::Array(s);
            }
        }
        // a tensor's dtype, offsets, name, or its presence
        3 => {
            let t = tensors[r.below(tensors.len())].clone();
            match r.below(4) {
                0 => h[&t]["dtype"] = serde_json::json!(["F16", "I64", "BOOL", "F64"][r.below(4)]),
                1 => {
                    let end = data.len() as u64;
                    h[&t]["data_offsets"] =
                        serde_json::json!([[0, end], [end, 0], [0, u64::MAX], [4, 8]][r.below(4)]);
                }
                2 => {
                    let v = h.remove(&t).expect("present");
                    h.insert(format!("{t}x"), v);
                }
                _ => {
                    h.remove(&t);
                }
            }
        }
        // values: a negative or non-finite number in some tensor
        _ => {
            let t = &tensors[r.below(tensors.len())];
            let pick = if r.below(2) == 0 {
                tensors
                    .iter()
                    .find(|n| n.ends_with("running_var"))
                    .unwrap_or(t)
            } else {
                t
            };
            if let Some(o) = h[pick].get("data_offsets").and_then(|o| o.as_array()) {
                let (a, b) = (
                    o[0].as_u64().unwrap_or(0) as usize,
                    o[1].as_u64().unwrap_or(0) as usize,
                );
                if b >= a + 4 && b <= data.len() {
                    let i = a + 4 * r.below((b - a) / 4);
                    let v = [-1.0f32, f32::NAN, f32::INFINITY, -0.5][r.below(4)];
                    data[i..i + 4].copy_from_slice(&v.to_le_bytes());
                }
            }
        }
    }
    common::safetensors_join(&h, &data)
}

/// ≥ 1,000 structurally mutated files per loader (model files and
/// checkpoints), from an MLP (`nn.Sequential` names), a layer list with
/// batch norm and a ResNet-20 (`conv1`/`bn1`/`layerN.M.…` names): each
/// loads or is refused with an error that names the file; a negative
/// variance is always refused.
#[test]
fn mutated_safetensors_never_panic_or_abort() {
    let root = std::env::var_os("FDGR_HOSTILE_RUNS").map(PathBuf::from);
    let root = match root {
        Some(r) => r,
        None => {
            let root = dir("hostile-runs");
            make_run(&root, "mlp", &["--model", "64-32-10", "--epochs", "1"]);
            make_run(
                &root,
                "bn",
                &[
                    "--model",
                    "conv:4:3:p1:nobias,bn,relu,block:4,gap,linear",
                    "--epochs",
                    "0",
                    "--optimizer",
                    "adam",
                ],
            );
            make_run(&root, "resnet", &["--model", "resnet20", "--epochs", "0"]);
            root
        }
    };
    if !in_child(
        "mutated_safetensors_never_panic_or_abort",
        &[("FDGR_HOSTILE_RUNS", &root)],
    ) {
        return;
    }
    let mut r = Rng::new(2027);
    let work = root.join("mutated");
    std::fs::create_dir_all(&work).expect("dir");
    let (mut ok, mut refused, mut negative) = ([0usize; 3], [0usize; 3], 0usize);
    let per = 400;
    for run_name in ["mlp", "bn", "resnet"] {
        let src = root.join(run_name);
        let model = std::fs::read(src.join("model.safetensors")).expect("model");
        let ckpt = std::fs::read(src.join("checkpoint.safetensors")).expect("checkpoint");
        let arch = fdgr::checkpoint::load_net(&src).expect("source").arch;
        for _ in 0..per {
            let m = mutate(&model, &mut r);
            let p = work.join("model.safetensors");
            std::fs::write(&p, &m).expect("write");
            match fdgr::checkpoint::load_net(&p) {
                Ok(f) => {
                    ok[0] += 1;
                    let (bufs, _) = f.arch.buffers();
                    for t in bufs.iter().filter(|t| t.name.ends_with("running_var")) {
                        assert!(
                            f.state[t.offset..t.offset + t.len]
                                .iter()
                                .all(|v| *v >= 0.0),
                            "a negative variance was accepted"
                        );
                    }
                }
                Err(e) => {
                    let msg = format!("{e:#}");
                    assert!(msg.contains("model.safetensors"), "{msg}");
                    negative += usize::from(msg.contains("negative variance"));
                    refused[0] += 1;
                }
            }
            // the same file as initial weights (`--init`, the loader of
            // PyTorch state dicts, which ignores fdgr's metadata)
            match fdgr::checkpoint::load_init(&p, &arch) {
                Ok(w) => {
                    ok[2] += 1;
                    assert!(w.theta.iter().all(|v| v.is_finite()));
                }
                Err(e) => {
                    let msg = format!("{e:#}");
                    assert!(msg.contains("model.safetensors"), "{msg}");
                    refused[2] += 1;
                }
            }
            let c = mutate(&ckpt, &mut r);
            std::fs::write(work.join("checkpoint.safetensors"), &c).expect("write");
            match fdgr::checkpoint::load_checkpoint(&work) {
                Ok(_) => ok[1] += 1,
                Err(e) => {
                    let msg = format!("{e:#}");
                    assert!(msg.contains("checkpoint.safetensors"), "{msg}");
                    refused[1] += 1;
                }
            }
        }
    }
    println!(
        "hostile: {} mutated model files ({} loaded, {} refused; {negative} negative variances; \
         as --init: {} loaded, {} refused), {} mutated checkpoints ({} loaded, {} refused)",
        3 * per,
        ok[0],
        refused[0],
        ok[2],
        refused[2],
        3 * per,
        ok[1],
        refused[1]
    );
    assert!(refused[0] > 100 && refused[1] > 100 && refused[2] > 100 && negative > 0);
    assert!(ok[0] > 0 && ok[1] > 0 && ok[2] > 0);
}

/// The binary itself on mutated files under the cap: `eval` and
/// `--resume` end with exit 0 or 2 (3 where a resumed run diverges),
/// never a panic or a signal.
#[test]
fn cli_on_mutated_files_exits_cleanly() {
    let root = dir("hostile-cli");
    let src = make_run(
        &root,
        "bn",
        &[
            "--model",
            "conv:4:3:p1,bn,relu,flatten,linear",
            "--epochs",
            "1",
        ],
    );
    let model = std::fs::read(src.join("model.safetensors")).expect("model");
    let ckpt = std::fs::read(src.join("checkpoint.safetensors")).expect("checkpoint");
    let mut r = Rng::new(7);
    let mut codes = std::collections::BTreeMap::new();
    for i in 0..60 {
        let d = root.join(format!("m{i}"));
        std::fs::create_dir_all(&d).expect("dir");
        let (args, bytes, file): (Vec<String>, Vec<u8>, &str) = if i % 2 == 0 {
            (
                vec![
                    "eval".into(),
                    "--ckpt".into(),
                    d.display().to_string(),
                    "--data".into(),
                    "digits".into(),
                ],
                mutate(&model, &mut r),
                "model.safetensors",
            )
        } else {
            (
                vec![
                    "train".into(),
                    "--resume".into(),
                    d.display().to_string(),
                    "--quiet".into(),
                ],
                mutate(&ckpt, &mut r),
                "checkpoint.safetensors",
            )
        };
        std::fs::write(d.join(file), bytes).expect("write");
        let o = Command::new("sh")
            .arg("-c")
            .arg(format!("ulimit -v {CAP_KIB} && exec \"$0\" \"$@\""))
            .arg(env!("CARGO_BIN_EXE_fdgr"))
            .args(&args)
            .env("RUST_BACKTRACE", "0")
            .output()
            .expect("runs");
        let err = stderr(&o);
        assert!(!err.contains("panicked"), "{args:?} panicked:\n{err}");
        let code = o.status.code();
        assert!(
            matches!(code, Some(0) | Some(2) | Some(3)),
            "{args:?}: {:?}\n{err}",
            o.status
        );
        *codes.entry(code).or_insert(0) += 1;
    }
    println!("hostile: 60 CLI runs on mutated files, exit codes {codes:?}");
    assert!(codes.get(&Some(2)).copied().unwrap_or(0) > 10, "{codes:?}");
}

/// `bytes` with metadata `key` set to `value`.
fn set_meta(bytes: &[u8], key: &str, value: &str) -> Vec<u8> {
    let (mut h, data) = common::safetensors_parts(bytes);
    h.entry("__metadata__")
        .or_insert_with(|| serde_json::json!({}))[key] = serde_json::Value::String(value.into());
    common::safetensors_join(&h, &data)
}

/// Exit 2 with one error line naming `needles`, no panic, and no `--out`
/// left behind.
fn refused_without_output(args: &[&str], out: &Path, needles: &[&str]) {
    common::assert_rejected(args, needles);
    assert!(!out.exists(), "{args:?} left {} behind", out.display());
}

/// The rows of the hostile-input table: oversized, overflowing and
/// malformed model specs, and model files whose metadata or statistics
/// do not fit their tensors.
#[test]
fn hostile_models_exit_2_and_leave_nothing() {
    let root = dir("hostile-rows");
    let out = root.join("out");
    let o = out.display().to_string();
    let train = |model: &str, extra: &[&str], needles: &[&str]| {
        let mut a = vec![
            "train", "--data", "digits", "--model", model, "--epochs", "1", "--out", &o,
        ];
        a.extend_from_slice(extra);
        refused_without_output(&a, &out, needles);
    };
    // 1, 2, 4, 5: sizes that overflow
    train(
        "conv:2305843009213693952:3,flatten,linear",
        &[],
        &["--model", "too large"],
    );
    train(
        "conv:8:3:p4611686018427387904,flatten,linear",
        &[],
        &["--model", "overflow"],
    );
    train(
        "conv:8:3:p9223372036854775807,flatten,linear",
        &[],
        &["--model", "overflow"],
    );
    train(
        "maxpool:2:p9223372036854775808,flatten,linear",
        &[],
        &["--model", "maxpool"],
    );
    train("64-4611686018427387904-10", &[], &["--model", "too large"]);
    // 3: addressable but more memory than allowed, estimated before allocating
    let cap = ["--max-memory", "4G"];
    train(
        "conv:100000000:3,flatten,linear",
        &cap,
        &["needs", "TiB", "--max-memory"],
    );
    train("64-1000000000-10", &cap, &["needs", "TiB", "--max-memory"]);
    refused_without_output(
        &[
            "train",
            "--data",
            "mnist5k",
            "--model",
            "wrn-28-10",
            "--batch",
            "1000",
            "--epochs",
            "1",
            "--out",
            &o,
            "--max-memory",
            "4G",
        ],
        &out,
        &["needs", "GiB", "4.0 GiB available (--max-memory)"],
    );
    // 6: a strict parser
    train(
        "relu:banana,flatten,linear",
        &[],
        &["'relu:banana'", "no options"],
    );
    train("flatten:x,linear", &[], &["'flatten:x'", "no options"]);
    train(
        "conv:8:3:s0,flatten,linear",
        &[],
        &["'conv:8:3:s0'", "stride must be positive"],
    );
    train(
        "conv:8:3,dwconv:3:g2,flatten,linear",
        &[],
        &["'dwconv:3:g2'", "does not apply"],
    );
    train("conv:8:3:q1,flatten,linear", &[], &["unknown option 'q1'"]);
    train("conv:8:3:p1:p2,flatten,linear", &[], &["given twice"]);
    train(
        "block:8:p1,flatten,linear",
        &[],
        &["'block:8:p1'", "does not apply"],
    );

    // 7, 8: model files whose metadata or statistics do not fit
    let run = make_run(
        &root,
        "bn",
        &[
            "--model",
            "conv:4:3:p1,bn,relu,flatten,linear",
            "--epochs",
            "0",
        ],
    );
    let model = std::fs::read(run.join("model.safetensors")).expect("model");
    let bad = root.join("bad.safetensors");
    let b = bad.display().to_string();
    let fdgr_out = root.join("m.fdgr");
    let f = fdgr_out.display().to_string();
    for (key, value, needle) in [
        ("fdgr.input", "[1,100000,100000]", "shape"),
        ("fdgr.classes", "18446744073709551615", "fdgr.classes"),
        ("fdgr.classes", "11", "expected [11, 256]"),
    ] {
        std::fs::write(&bad, set_meta(&model, key, value)).expect("write");
        common::assert_rejected(
            &["eval", "--ckpt", &b, "--data", "digits"],
            &["bad.safetensors", needle],
        );
        refused_without_output(
            &["export", "--ckpt", &b, "--out", &f],
            &fdgr_out,
            &["bad.safetensors", needle],
        );
    }
    // a negative running variance
    let n = u64::from_le_bytes(model[..8].try_into().expect("8")) as usize;
    let h: serde_json::Value = serde_json::from_slice(&model[8..8 + n]).expect("header");
    let off = h["1.running_var"]["data_offsets"][0]
        .as_u64()
        .expect("offset") as usize;
    let mut m = model.clone();
    m[8 + n + off..8 + n + off + 4].copy_from_slice(&(-0.25f32).to_le_bytes());
    std::fs::write(&bad, &m).expect("write");
    common::assert_rejected(
        &["eval", "--ckpt", &b, "--data", "digits"],
        &["1.running_var", "negative variance"],
    );
}

/// `fdgr eval` of a run scales and splits the data as the run did (its
/// normalisation statistics and split are stored in the model): it
/// reproduces the run's own final test accuracy; an explicit conflicting
/// flag wins with a warning that names both.
#[test]
fn eval_uses_the_runs_own_preprocessing() {
    let root = dir("hostile-eval");
    let run_dir = make_run(
        &root,
        "std",
        &[
            "--model",
            "64-32-10",
            "--normalize",
            "standard",
            "--seed",
            "4",
            "--epochs",
            "3",
        ],
    );
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run_dir.join("summary.json")).expect("summary"))
            .expect("json");
    let want = summary["last"]["test_acc"].as_f64().expect("test_acc");
    let loss = summary["last"]["test_loss"].as_f64().expect("test_loss");
    let d = run_dir.display().to_string();
    let o = run(&["eval", "--ckpt", &d, "--data", "digits", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(v["accuracy"].as_f64(), Some(want), "{v}");
    assert!(
        (v["loss"].as_f64().expect("loss") - loss).abs() < 1e-6,
        "{v} vs {loss}"
    );
    // an explicit, different normalisation: used, with a warning naming both
    let o = run(&[
        "eval",
        "--ckpt",
        &d,
        "--data",
        "digits",
        "--normalize",
        "unit",
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(
        e.contains("warning: --normalize unit differs from the run's own standard"),
        "{e}"
    );
}

/// The logged train loss and accuracy are the means over the epoch's
/// mini-batches (at θ before each step); `--eval-train` adds the eval-mode
/// pass over the training split. With `--lr 0` (θ frozen, no batch norm)
/// the two agree: the same θ on the same samples.
#[test]
fn train_metrics_are_minibatch_means() {
    let root = dir("hostile-metrics");
    let r = make_run(
        &root,
        "frozen",
        &[
            "--model",
            "64-32-10",
            "--lr",
            "0",
            "--epochs",
            "2",
            "--eval-train",
            "--method",
            "sgd",
        ],
    );
    let text = std::fs::read_to_string(r.join("metrics.jsonl")).expect("metrics");
    let mut n = 0;
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("json");
        let (l, e) = (
            v["train_loss"].as_f64().expect("loss"),
            v["eval_train_loss"].as_f64().expect("eval loss"),
        );
        assert!((l - e).abs() < 1e-5 * e.abs(), "{line}");
        assert_eq!(v["train_acc"], v["eval_train_acc"], "{line}");
        n += 1;
    }
    assert_eq!(n, 2);
    // training moves θ: the mini-batch metrics differ from an eval pass
    // after the epoch, and no eval fields without the flag
    let r = make_run(&root, "trained", &["--model", "64-32-10", "--epochs", "2"]);
    let text = std::fs::read_to_string(r.join("metrics.jsonl")).expect("metrics");
    assert!(!text.contains("eval_train"), "{text}");
}
