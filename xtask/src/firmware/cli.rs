//! `fdgr device` end to end: on QEMU with `--verify` (the MLP and the conv
//! net), `fdgr device verify`, `fdgr eval` of what came back, and every
//! probe-rs board up to its flashing command through a stand-in `probe-rs`.

use super::*;

/// A stand-in for `probe-rs`: `list` finds one probe; `run` records its
/// command line in `$FDGR_FAKE_RECORD`, prints `$FDGR_FAKE_LOG` as
/// `probe-rs run --log-format '{L} {s}'` would, and exits with 0.
const FAKE_PROBE_RS: &str = "#!/bin/sh
case \"$1\" in
  --version) echo 'probe-rs 0.0.0 (stand-in of cargo xtask firmware)' ;;
  list) echo 'The following debug probes were found:'
        echo '[0]: STLink V2-1 -- 0483:374b:0000 (ST-LINK)' ;;
  run) printf '%s\\n' \"$@\" > \"$FDGR_FAKE_RECORD\"
       if [ -n \"$FDGR_FAKE_LOG\" ]; then cat \"$FDGR_FAKE_LOG\"; fi ;;
  *) exit 1 ;;
esac
";

/// `fdgr device ...` through cargo.
pub(crate) fn fdgr_device(args: &[&str]) -> Command {
    let mut a = vec!["run", "--release", "-p", "fdgr", "--", "device"];
    a.extend_from_slice(args);
    let mut c = cargo(&a);
    c.env_remove("FDGR_FIRMWARE_DIR");
    c
}

fn json(p: &Path) -> Result<serde_json::Value, String> {
    serde_json::from_slice(&read(p)?).map_err(|e| format!("{}: {e}", p.display()))
}

/// `fdgr device run` end to end on QEMU with `--verify`, `fdgr device
/// verify`, `fdgr eval` of what came back, and each board up to its
/// flashing command through [`FAKE_PROBE_RS`].
pub(super) fn device_cli(out: &Path, model: &[u8]) -> Result<Vec<Step>, String> {
    let mut steps = vec![];
    let ckpt = out.join(MLP_RUN.ckpt);
    if !ckpt.join("model.safetensors").is_file() {
        // (FDGR_FIRMWARE_MODEL skipped the training above)
        steps.extend(train_and_export(out, &MLP_RUN)?.1);
    }
    for b in Board::ALL {
        let _ = std::fs::remove_dir_all(ckpt.join(format!("device-{b}")));
    }
    let ck = ckpt.display().to_string();
    let dev = ckpt.join("device-qemu-m4");
    steps.extend(qemu_verified(&ckpt, &ck, model)?);
    // The boards, up to the flashing command.
    let path = fake_probe_rs_path(out)?;
    steps.extend(boards_up_to_probe_rs(
        out,
        &ck,
        &path,
        &dev.join("device.log"),
    )?);
    silent_device(out, &ckpt, &ck, &path)?;
    Ok(steps)
}

/// `fdgr device run --board qemu-m4 --verify` of the MLP's run at `ck`
/// (bit-identical, with held-out accuracy and instruction counts, the
/// weights `fdgr export` wrote), then `fdgr device verify` and `fdgr eval`
/// of the weights that came back.
fn qemu_verified(ckpt: &Path, ck: &str, model: &[u8]) -> Result<Vec<Step>, String> {
    let mut steps = vec![];
    let t = Instant::now();
    run(
        "fdgr device run --board qemu-m4 --verify",
        fdgr_device(&["run", "--board", "qemu-m4", "--from", ck, "--verify"]),
    )?;
    let dev = ckpt.join("device-qemu-m4");
    let s = json(&dev.join("summary.json"))?;
    let ok = s["verified"]["bit_identical"] == serde_json::json!(true)
        && s["steps"] == serde_json::json!(STREAM_SAMPLES)
        && s["held_out"]["after"]["accuracy"].is_number()
        && s["instructions_per_step"]["mean"].is_number();
    if !ok {
        return Err(format!(
            "{}: expected a verified run of {STREAM_SAMPLES} steps with held-out accuracy and \
             instruction counts",
            dev.join("summary.json").display()
        ));
    }
    if read(&dev.join("model.fdgr"))? != model {
        return Err(format!(
            "{} differs from what `fdgr export` wrote for the same run",
            dev.join("model.fdgr").display()
        ));
    }
    steps.push(step("fdgr device run --board qemu-m4 (bit-identical)", t));
    let t = Instant::now();
    run(
        "fdgr device verify",
        fdgr_device(&["verify", "--from", ck, "--board", "qemu-m4"]),
    )?;
    let d = dev.display().to_string();
    run(
        "fdgr eval of the weights that came back",
        cargo(&[
            "run",
            "--release",
            "-p",
            "fdgr",
            "--",
            "eval",
            "--ckpt",
            &d,
            "--data",
            "digits",
        ]),
    )?;
    steps.push(step("fdgr device verify, fdgr eval (device weights)", t));

    Ok(steps)
}

/// A PATH with a stand-in `probe-rs` ([`FAKE_PROBE_RS`]) first.
fn fake_probe_rs_path(out: &Path) -> Result<std::ffi::OsString, String> {
    let fake = out.join("fake-bin");
    std::fs::create_dir_all(&fake).map_err(|e| format!("{}: {e}", fake.display()))?;
    let probe_rs = fake.join("probe-rs");
    write(&probe_rs, FAKE_PROBE_RS.as_bytes())?;
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&probe_rs, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| format!("{}: {e}", probe_rs.display()))?;
    }
    std::env::join_paths(std::iter::once(fake.clone()).chain(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    )))
    .map_err(|e| e.to_string())
}

/// Each board up to its flashing command: `fdgr device run --verify`
/// calls the stand-in probe-rs (on `path`) with the board's chip, ELF and
/// log format, and decodes the log it replays (`qemu_log`).
fn boards_up_to_probe_rs(
    out: &Path,
    ck: &str,
    path: &std::ffi::OsStr,
    qemu_log: &Path,
) -> Result<Vec<Step>, String> {
    let mut steps = vec![];
    for board in Board::ALL {
        // the chip its `.cargo/config.toml` runner names
        let Some(chip) = board.chip() else { continue };
        let t = Instant::now();
        let record = out.join(format!("fake-probe-rs-{board}.txt"));
        let _ = std::fs::remove_file(&record);
        let mut c = fdgr_device(&["run", "--board", board.name(), "--from", ck, "--verify"]);
        c.env("PATH", path)
            .env("FDGR_FAKE_RECORD", &record)
            .env("FDGR_FAKE_LOG", qemu_log);
        run(
            &format!("fdgr device run --board {board} (stand-in probe-rs)"),
            c,
        )?;
        let got = std::fs::read_to_string(&record)
            .map_err(|e| format!("{}: {e} (was probe-rs run?)", record.display()))?;
        let elf = board.elf(&fw::fw_dir(), board.triple());
        let want = format!(
            "run\n--chip\n{chip}\n{}\n--log-format\n{}\n",
            elf.display(),
            fdgr_mcu::log::PROBE_RS_LOG_FORMAT
        );
        if got != want {
            return Err(format!(
                "{board}: the runner was called as\n{got}expected\n{want}"
            ));
        }
        println!("  runner command line: {}", got.trim().replace('\n', " "));
        steps.push(step(
            &format!("fdgr device run --board {board} up to probe-rs"),
            t,
        ));
    }
    Ok(steps)
}

/// A device that stops early: exit 1, and the previous results stay
/// whole (no half-written run directory).
fn silent_device(out: &Path, ckpt: &Path, ck: &str, path: &std::ffi::OsStr) -> Result<(), String> {
    let before = read(&ckpt.join("device-stm32f4").join("summary.json"))?;
    let mut c = fdgr_device(&["run", "--board", "stm32f4", "--from", ck]);
    c.env("PATH", path)
        .env("FDGR_FAKE_RECORD", out.join("fake-probe-rs-silent.txt"))
        .env("FDGR_FAKE_LOG", "");
    let st = c.status().map_err(|e| e.to_string())?;
    let leftovers: Vec<String> = std::fs::read_dir(ckpt)
        .map_err(|e| e.to_string())?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| n.starts_with(".device-"))
        .collect();
    if st.code() != Some(1)
        || read(&ckpt.join("device-stm32f4").join("summary.json"))? != before
        || !leftovers.is_empty()
    {
        return Err(format!(
            "a device run without a log must exit with 1 ({st}) and leave the run directory as \
             it was (left: {leftovers:?})"
        ));
    }
    println!("  a silent device: exit 1, previous device-stm32f4/ untouched");
    Ok(())
}

/// `fdgr device run --board qemu-m4 --verify` on the conv net's run, in
/// both modes (every layer; the head on the frozen conv stack).
pub(super) fn device_cli_conv(out: &Path) -> Result<Vec<Step>, String> {
    let mut steps = vec![];
    let ckpt = out.join(CONV_RUN.ckpt);
    if !ckpt.join("model.safetensors").is_file() {
        // (FDGR_FIRMWARE_CONV_MODEL skipped the training above)
        steps.extend(train_and_export(out, &CONV_RUN)?.1);
    }
    let ck = ckpt.display().to_string();
    for mode in ["full", "last"] {
        let _ = std::fs::remove_dir_all(ckpt.join("device-qemu-m4"));
        let t = Instant::now();
        run(
            &format!("fdgr device run --board qemu-m4 --verify (conv net, --mode {mode})"),
            fdgr_device(&[
                "run", "--board", "qemu-m4", "--from", &ck, "--mode", mode, "--verify",
            ]),
        )?;
        let dev = ckpt.join("device-qemu-m4");
        let s = json(&dev.join("summary.json"))?;
        if s["verified"]["bit_identical"] != serde_json::json!(true)
            || s["steps"] != serde_json::json!(STREAM_SAMPLES)
        {
            return Err(format!(
                "{}: expected a verified run of {STREAM_SAMPLES} steps",
                dev.join("summary.json").display()
            ));
        }
        steps.push(step(
            &format!("fdgr device run --board qemu-m4, conv net --mode {mode}"),
            t,
        ));
    }
    Ok(steps)
}
