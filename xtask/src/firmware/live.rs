//! `cargo xtask firmware`'s checks of on-device learning on the live
//! image (`fdgr device run --live`, `fdgr device verify --power-cuts`).

use std::path::Path;
use std::time::Instant;

use super::{
    fdgr_device, train_and_export, Pretrained, CONV_RUN, DSCNN_RUN, MLP_RUN, RESIDUAL_RUN,
    RESNET_RUN,
};
use crate::util::Step;

/// Runs `fdgr device` with `args` and `--json`, echoing its standard
/// error; returns the JSON line it printed last.
fn device_json(name: &str, args: &[&str]) -> Result<(serde_json::Value, Step), String> {
    println!("\n== {name} ==");
    let t = Instant::now();
    let mut a = args.to_vec();
    a.push("--json");
    let o = fdgr_device(&a)
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|e| format!("{name}: cannot start: {e}"))?;
    let text = String::from_utf8_lossy(&o.stdout).to_string();
    print!("{text}");
    if !o.status.success() {
        return Err(format!("{name} ({})", o.status));
    }
    let line = text.lines().last().unwrap_or("");
    let v =
        serde_json::from_str(line).map_err(|e| format!("{name}: not a JSON line ({e}): {line}"))?;
    Ok((
        v,
        Step {
            name: name.to_string(),
            seconds: t.elapsed().as_secs_f64(),
        },
    ))
}

/// On-device learning on the live image, for the MLP and the conv net:
/// two runs continue one from the other through the device's flash (0 → N
/// → 2N, the same image), a third on other samples replays the whole
/// history on the host bit for bit, a factory reset starts again from 0;
/// for the conv net, `--samples` without `--live` runs the same image from
/// the run's model, twice alike; and for the MLP, power cuts at random
/// moments while it learns and saves, each restart bit-identical to the
/// host replay (0 torn).
pub(crate) fn device_live(out: &Path) -> Result<Vec<Step>, String> {
    let mut steps = vec![];
    for (run_spec, n) in [(&MLP_RUN, 64u64), (&CONV_RUN, 32)] {
        let ckpt = out.join(run_spec.ckpt);
        if !ckpt.join("model.safetensors").is_file() {
            steps.extend(train_and_export(out, run_spec)?.1);
        }
        let ck = ckpt.display().to_string();
        let train = format!("digits:train:{n}");
        let model = run_spec.file;
        let (s, first) = continued_runs(&ck, model, n, &train)?;
        steps.extend(s);
        if run_spec.ckpt == CONV_RUN.ckpt {
            steps.extend(without_live(&ck, model, n, &train, &first)?);
            steps.extend(sparse_modes(&ck)?);
        }
        if run_spec.ckpt == MLP_RUN.ckpt {
            steps.extend(serial_and_power_cuts(&ckpt, &ck, n)?);
        }
    }
    steps.extend(real_models(out)?);
    Ok(steps)
}

/// Three live runs of `model` from the run at `ck`: 0 → n after a factory
/// reset, n → 2n continuing from the flash, then n/2 held-out samples in a
/// seeded order with `--verify`; one image throughout. Returns the first
/// run's report.
fn continued_runs(
    ck: &str,
    model: &str,
    n: u64,
    train: &str,
) -> Result<(Vec<Step>, serde_json::Value), String> {
    let mut steps = vec![];
    let base = ["run", "--board", "qemu-m4", "--from", ck, "--live"];
    let with = |extra: &[&'static str], samples: &str| -> Vec<String> {
        let mut v: Vec<String> = base.iter().map(|s| s.to_string()).collect();
        v.extend(["--samples".to_string(), samples.to_string()]);
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    let mut sha = None;
    let mut first = serde_json::Value::Null;
    let test = format!("digits:test:{}", n / 2);
    for (i, (args, start, verify)) in [
        (with(&["--factory-reset"], train), 0, false),
        (with(&[], train), n, false),
        // the same samples in a seeded order: what the device learns
        // and what the host replays follow it
        (with(&["--verify", "--order-seed", "7"], &test), 2 * n, true),
    ]
    .into_iter()
    .enumerate()
    {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        let (v, st) = device_json(&format!("fdgr device run --live {model} ({})", i + 1), &a)?;
        steps.push(st);
        let end = if verify { start + n / 2 } else { start + n };
        let ok = v["start_step"] == serde_json::json!(start)
            && v["end_step"] == serde_json::json!(end)
            && v["prequential_acc"].is_number()
            && v["acc_before"].is_number()
            && (!verify || v["verified"] == serde_json::json!(true));
        if !ok {
            return Err(format!(
                "fdgr device run --live {model}: expected steps {start} -> {end}{}: {v}",
                if verify { ", verified" } else { "" }
            ));
        }
        let s = v["image_sha256"].as_str().unwrap_or("").to_string();
        if *sha.get_or_insert(s.clone()) != s {
            return Err(format!(
                "fdgr device run --live {model}: the image changed between runs"
            ));
        }
        if i == 0 {
            first = v;
        }
    }
    Ok((steps, first))
}

/// Without `--live`, `--samples` on qemu-m4 streams them to the same live
/// image from the run's model, every time: twice the `first` run
/// (`--live --factory-reset`) again, held-out accuracy included.
fn without_live(
    ck: &str,
    model: &str,
    n: u64,
    train: &str,
    first: &serde_json::Value,
) -> Result<Vec<Step>, String> {
    let mut steps = vec![];
    // without --live, --samples on qemu-m4 streams them to the same
    // live image from the run's model, every time: twice the first
    // run (--live --factory-reset) again, held-out accuracy included
    let args: Vec<String> = [
        "run",
        "--board",
        "qemu-m4",
        "--from",
        ck,
        "--samples",
        train,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    for i in 1..=2 {
        let name = format!("fdgr device run --samples {train} {model} (no --live, {i})");
        let (v, st) = device_json(&name, &a)?;
        steps.push(st);
        let same = [
            "image_sha256",
            "acc_before",
            "acc_after",
            "prequential_acc",
            "held_out",
        ]
        .iter()
        .all(|k| v[k] == first[k] && v[k] != serde_json::Value::Null);
        if v["start_step"] != serde_json::json!(0) || v["end_step"] != serde_json::json!(n) || !same
        {
            return Err(format!(
                "{name}: expected the live image's steps 0 -> {n} and the accuracies of \
                 the first --live --factory-reset run ({first}): {v}"
            ));
        }
    }
    Ok(steps)
}

/// The serial transport a board is driven through (the same image on its
/// flash, its UART on a pseudo-terminal) continuing the MLP's runs, and
/// 12 power cuts while it learns and saves, 0 torn.
fn serial_and_power_cuts(ckpt: &Path, ck: &str, n: u64) -> Result<Vec<Step>, String> {
    let mut steps = vec![];
    // the serial transport a board is driven through: the same
    // image on its flash, its UART on a pseudo-terminal
    let start = 2 * n + n / 2;
    let (v, st) = over_serial(ckpt, ck)?;
    steps.push(st);
    if v["start_step"] != serde_json::json!(start)
        || v["end_step"] != serde_json::json!(start + 16)
        || v["verified"] != serde_json::json!(true)
    {
        return Err(format!(
            "fdgr device run --live --port: expected steps {start} -> {}, verified: {v}",
            start + 16
        ));
    }
    let (v, st) = device_json(
        "fdgr device verify --power-cuts 12 (MLP, live image)",
        &[
            "verify",
            "--board",
            "qemu-m4",
            "--from",
            ck,
            "--power-cuts",
            "12",
            "--samples",
            "digits:train:200",
        ],
    )?;
    steps.push(st);
    if v["cuts"] != serde_json::json!(12) || v["torn"] != serde_json::json!(0) {
        return Err(format!("power cuts: expected 12 cuts and 0 torn: {v}"));
    }
    Ok(steps)
}

/// Real models: the 28×28 `dscnn` (784 inputs, pixels divided by 255):
/// `fdgr device build` builds its live image for stm32f4 (128 KiB of RAM)
/// in bias mode and for nrf52840 (256 KiB) in full mode, and on qemu-m4
/// it learns in bias mode bit-identically to the host replay; a residual
/// net with batch norm, folded, learns bit-identically too, and so does a
/// folded ResNet-14 (34 layers) in bias mode.
fn real_models(out: &Path) -> Result<Vec<Step>, String> {
    let (_, mut steps) = train_and_export(out, &DSCNN_RUN)?;
    let ck = out.join(DSCNN_RUN.ckpt).display().to_string();
    steps.extend(board_builds(&ck, "28x28 dscnn")?);
    steps.push(built_in_verify(
        out,
        &DSCNN_RUN,
        "mnist5k:train:4",
        "bias",
        255.0,
    )?);
    // a residual net with batch norm, folded (joins as `add:I` / `@I`)
    steps.extend(train_and_export(out, &RESIDUAL_RUN)?.1);
    steps.push(built_in_verify(
        out,
        &RESIDUAL_RUN,
        "digits:train:4",
        "full",
        16.0,
    )?);
    // a ResNet, folded to more layers than the first firmware planned
    steps.extend(train_and_export(out, &RESNET_RUN)?.1);
    steps.push(built_in_verify(
        out,
        &RESNET_RUN,
        "digits:train:4",
        "bias",
        16.0,
    )?);
    Ok(steps)
}

/// `fdgr device run --board qemu-m4 --built-in --verify` on `net`'s run
/// with `samples` in `mode`: 4 steps, pixels divided by `pixel_max`, every
/// loss and weight bit-identical to the host replay.
fn built_in_verify(
    out: &Path,
    net: &Pretrained,
    samples: &str,
    mode: &str,
    pixel_max: f64,
) -> Result<Step, String> {
    let ck = out.join(net.ckpt).display().to_string();
    let name = format!(
        "fdgr device run --mode {mode} --verify ({}, built-in samples)",
        net.ckpt
    );
    println!("\n== {name} ==");
    let t = Instant::now();
    let o = fdgr_device(&[
        "run",
        "--board",
        "qemu-m4",
        "--from",
        &ck,
        "--samples",
        samples,
        "--built-in",
        "--mode",
        mode,
        "--verify",
    ])
    .stderr(std::process::Stdio::inherit())
    .output()
    .map_err(|e| format!("{name}: cannot start: {e}"))?;
    print!("{}", String::from_utf8_lossy(&o.stdout));
    if !o.status.success() {
        return Err(format!("{name} ({})", o.status));
    }
    let summary = out
        .join(net.ckpt)
        .join("device-qemu-m4")
        .join("summary.json");
    let v: serde_json::Value = std::fs::read(&summary)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(|| format!("{name}: no {}", summary.display()))?;
    if v["verified"]["bit_identical"] != serde_json::json!(true)
        || v["pixel_max"] != serde_json::json!(pixel_max)
        || v["steps"] != serde_json::json!(4)
    {
        return Err(format!(
            "{name}: expected 4 steps, pixels / {pixel_max}, bit-identical to the host: {v}"
        ));
    }
    Ok(Step {
        name,
        seconds: t.elapsed().as_secs_f64(),
    })
}

/// Sparse updates on the conv net: `--mode bias` and `--mode last:1`
/// learn on the live image and replay bit for bit on the host, bias mode
/// takes less RAM than full (static + measured stack peak), and `fdgr
/// device build` builds the live image for stm32f4 in bias mode and
/// nrf52840 in full mode without a probe.
fn sparse_modes(ck: &str) -> Result<Vec<Step>, String> {
    let mut steps = vec![];
    let mut ram = vec![];
    for mode in ["full", "bias", "last:1"] {
        let (v, st) = device_json(
            &format!("fdgr device run --live --mode {mode} --verify (conv net)"),
            &[
                "run",
                "--board",
                "qemu-m4",
                "--from",
                ck,
                "--live",
                "--factory-reset",
                "--samples",
                "digits:train:16",
                "--mode",
                mode,
                "--verify",
            ],
        )?;
        steps.push(st);
        let peak = v["stack_peak_bytes"].as_u64().unwrap_or(0);
        if v["verified"] != serde_json::json!(true)
            || v["end_step"] != serde_json::json!(16)
            || peak == 0
            || v["ram_bytes"].as_u64() != v["static_ram_bytes"].as_u64().map(|s| s + peak)
        {
            return Err(format!(
                "--mode {mode}: expected 0 -> 16 steps, verified, RAM = static + stack peak: {v}"
            ));
        }
        ram.push((mode, v["ram_bytes"].as_u64().unwrap_or(0)));
    }
    println!("RAM (static + stack peak) by mode: {ram:?}");
    if ram[1].1 >= ram[0].1 {
        return Err(format!("bias mode should take less RAM than full: {ram:?}"));
    }
    steps.extend(board_builds(ck, "conv net")?);
    Ok(steps)
}

/// Boots the MLP's live image (its board state) under QEMU with UART0 on a
/// pseudo-terminal and runs `fdgr device run --live --port PTY` on it: the
/// serial transport a board uses, here against QEMU.
fn over_serial(ckpt: &Path, ck: &str) -> Result<(serde_json::Value, Step), String> {
    use std::io::Read as _;
    let dir = ckpt.join("device-qemu-m4").join("board");
    let mut q = std::process::Command::new("qemu-system-arm");
    for a in fdgr_mcu::qemu::QEMU_M4_ARGS {
        q.arg(if a == "null" { "pty" } else { a });
    }
    let mut child = q
        .arg("-kernel")
        .arg("image.elf")
        .current_dir(&dir)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("qemu-system-arm: {e}"))?;
    // QEMU names the pseudo-terminal first: "char device redirected to
    // /dev/pts/N (label serial0)"
    let mut out = child.stdout.take().ok_or("no QEMU stdout")?;
    let mut seen = Vec::new();
    let mut b = [0u8; 1];
    let pty = loop {
        if seen.len() > 4096 || out.read(&mut b).map_err(|e| e.to_string())? == 0 {
            let _ = child.kill();
            return Err("QEMU did not name its pseudo-terminal".into());
        }
        seen.push(b[0]);
        let text = String::from_utf8_lossy(&seen);
        if let Some(i) = text.find("/dev/pts/") {
            let rest = &text[i..];
            if let Some(end) = rest.find(|c: char| c.is_whitespace()) {
                break rest[..end].to_string();
            }
        }
    };
    // keep draining QEMU's output (the device's log) so it never blocks
    let drain = std::thread::spawn(move || {
        let mut b = [0u8; 4096];
        while matches!(out.read(&mut b), Ok(n) if n > 0) {}
    });
    let r = device_json(
        "fdgr device run --live --port (MLP over a serial port)",
        &[
            "run",
            "--board",
            "qemu-m4",
            "--from",
            ck,
            "--live",
            "--port",
            &pty,
            "--samples",
            "digits:train:16",
            "--verify",
        ],
    );
    let _ = child.kill();
    let _ = child.wait();
    let _ = drain.join();
    r
}

/// `fdgr device build` of the run at `ck` (`what`, for the messages) for
/// stm32f4 in bias mode and nrf52840 in full mode: each reports its mode
/// and a static RAM above 0 and below the board's.
fn board_builds(ck: &str, what: &str) -> Result<Vec<Step>, String> {
    let mut steps = vec![];
    let mut built = vec![];
    for (board, mode) in [("stm32f4", "bias"), ("nrf52840", "full")] {
        let (v, st) = device_json(
            &format!("fdgr device build --board {board} --mode {mode} ({what})"),
            &["build", "--board", board, "--from", ck, "--mode", mode],
        )?;
        steps.push(st);
        let (r, avail) = (v["ram_bytes"].as_u64(), v["ram_available"].as_u64());
        if v["mode"] != serde_json::json!(mode)
            || !matches!((r, avail), (Some(r), Some(a)) if r > 0 && r < a)
        {
            return Err(format!("fdgr device build --board {board} ({what}): {v}"));
        }
        built.push((board, mode, r));
    }
    println!("device build ({what}): {built:?}");
    Ok(steps)
}
