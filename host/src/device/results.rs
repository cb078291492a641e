//! After a run: the host's bit-for-bit replay ([`verify_bits`],
//! [`verify`]), held-out [`accuracy`], the [`summary`] and the files
//! [`write()`] puts in `RUN/device-<board>/` ([`FILES`]).

use super::*;

/// The host's replay of `p`'s fine-tuning against the device's losses and
/// weights.
pub fn verify_bits(p: &Prepared, losses: &[u32], theta: &[u32]) -> Result<Comparison> {
    compare_replay(
        &p.model,
        &p.stream,
        (p.method, p.mode, p.opt, p.lr, p.pixel_max),
        losses,
        theta,
    )
}

fn compare_replay(
    model: &[u8],
    stream: &[u8],
    (method, mode, opt, lr, pixel_max): (Method<f32>, Mode, usize, Option<f32>, f32),
    losses: &[u32],
    theta: &[u32],
) -> Result<Comparison> {
    let (hl, ht) = replay::replay_lr(model, stream, method, mode, opt, lr, pixel_max)
        .map_err(|e| anyhow!(e))?;
    replay::compare(losses, theta, &hl, &ht).map_err(|e| anyhow!(e))
}

/// Held-out loss and accuracy of the model before and after.
#[derive(Clone, Copy, Debug)]
pub struct Accuracy {
    /// (loss, accuracy) of the run's model.
    pub before: (f64, f64),
    /// (loss, accuracy) of the weights that came back.
    pub after: (f64, f64),
}

/// Evaluates the run's weights and the device's on the held-out samples.
pub fn accuracy(p: &Prepared, theta: &[f32]) -> Result<Accuracy> {
    let (x, y, _) = &p.held_out;
    let a: &Arch = &p.net.arch;
    Ok(Accuracy {
        before: crate::backend::evaluate_net(a, &p.net.theta, &p.net.state, x, y)?,
        after: crate::backend::evaluate_net(a, theta, &p.net.state, x, y)?,
    })
}

fn stats(v: &[u64]) -> serde_json::Value {
    if v.is_empty() {
        return serde_json::Value::Null;
    }
    let mean = v.iter().sum::<u64>() as f64 / v.len() as f64;
    json!({"mean": mean, "min": v.iter().min(), "max": v.iter().max()})
}

/// Mean of the first and the last (up to) 16 losses.
pub fn loss_means(bits: &[u32]) -> (f64, f64) {
    let m = |s: &[u32]| {
        s.iter().map(|&b| f32::from_bits(b) as f64).sum::<f64>() / s.len().max(1) as f64
    };
    let k = bits.len().min(16);
    (m(&bits[..k]), m(&bits[bits.len() - k..]))
}

/// The summary of a device run (`summary.json`).
pub fn summary(
    p: &Prepared,
    b: &Built,
    d: &DeviceRun,
    acc: &Accuracy,
    verified: Option<&Comparison>,
) -> serde_json::Value {
    let (first, last) = loss_means(&d.log.losses);
    let cycles: Vec<u64> = d.log.cycles.iter().map(|&c| c as u64).collect();
    let mut v = json!({
        "board": p.board.name(),
        "hardware": p.board.describe(),
        "target": p.board.triple(),
        "from": p.from,
        "model": p.net.arch.spec,
        "params": p.models.params(),
        "method": p.method.name(),
        "mode": p.mode.to_string(),
        "optimizer": p.opt_name(),
        "lr": p.lr(),
        "batch": fw_config::BATCH,
        "ring": fw_config::RING,
        "pixel_max": p.pixel_max,
        "trained_params": p.trained(),
        "samples": {"data": p.spec.data, "split": p.spec.split, "count": p.spec.count,
                    "seed": p.spec.seed, "test_frac": p.spec.test_frac},
        "steps": d.log.losses.len(),
        "loss_first16": first,
        "loss_last16": last,
        "held_out": {"samples": p.held_out.1.len(), "what": p.held_out.2,
                     "before": {"loss": acc.before.0, "accuracy": acc.before.1},
                     "after": {"loss": acc.after.0, "accuracy": acc.after.1}},
        "flash_bytes": b.info.flash,
        "static_ram_bytes": b.info.ram,
        "stack_peak_bytes": d.log.stack_peak,
        "ram_bytes": d.log.stack_peak.map(|s| s + b.info.ram),
        "fdgr_ram_bytes": d.log.fdgr_ram,
        "board_flash_bytes": p.map.flash,
        "board_ram_bytes": p.map.ram,
        "estimate": {"ram_bytes": p.estimate.ram, "flash_bytes": p.estimate.flash,
                     "fdgr_ram_bytes": p.estimate.fdgr.total},
        "instructions_per_step": stats(&d.instructions),
        "cycles_per_step": stats(&cycles),
        "theta_fnv1a": d.log.hash.map(|h| format!("{h:#010x}")),
        "build_seconds": b.seconds,
        "run_seconds": d.seconds,
        "verified": verified.map(|c| json!({"bit_identical": c.identical(), "losses": c.losses,
            "weights": c.weights, "losses_differing": c.bad_losses.len(),
            "weights_differing": c.bad_weights.len()})),
    });
    add_hyper_json(&mut v, p.method);
    v
}

/// The files of `RUN/device-<board>/`.
pub const FILES: [&str; 6] = [
    "metrics.jsonl",
    "model.safetensors",
    "summary.json",
    "device.log",
    "model.fdgr",
    "stream.bin",
];

/// Writes `RUN/device-<board>/`: `metrics.jsonl` (per step: loss, its
/// bits, and instructions or cycles where counted), `model.safetensors`
/// (the device's weights under the run's names), `summary.json`,
/// `device.log` (the decoded log), `model.fdgr` and `stream.bin` (what the
/// firmware was built with). All of it appears at once: the files are
/// written to a hidden folder next to it, which is then renamed.
pub fn write(p: &Prepared, d: &DeviceRun, summary: &serde_json::Value) -> Result<()> {
    let name = format!("device-{}", p.board);
    let tmp = p.from.join(format!(".{name}.tmp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let res = (|| -> Result<()> {
        std::fs::create_dir(&tmp).with_context(|| format!("{}: cannot create", tmp.display()))?;
        let mut metrics = String::new();
        for (i, &bits) in d.log.losses.iter().enumerate() {
            let mut row = json!({"step": i, "loss": f32::from_bits(bits), "loss_bits": format!("{bits:#010x}")});
            if let Some(n) = d.instructions.get(i) {
                row["instructions"] = json!(n);
            }
            if let Some(c) = d.log.cycles.get(i) {
                row["cycles"] = json!(c);
            }
            metrics.push_str(&row.to_string());
            metrics.push('\n');
        }
        checkpoint::atomic_write(&tmp.join("metrics.jsonl"), metrics.as_bytes())?;
        let theta: Vec<f32> = d.log.theta.iter().map(|&b| f32::from_bits(b)).collect();
        checkpoint::save_model(
            &tmp.join("model.safetensors"),
            &p.net.arch,
            &Weights {
                theta: &theta,
                state: &p.net.state,
                tracked: p.net.tracked,
                pre: p.net.pre.as_ref(),
            },
        )?;
        checkpoint::atomic_write(
            &tmp.join("summary.json"),
            serde_json::to_string_pretty(summary)?.as_bytes(),
        )?;
        checkpoint::atomic_write(&tmp.join("device.log"), log::to_text(&d.lines).as_bytes())?;
        checkpoint::atomic_write(&tmp.join("model.fdgr"), &p.model)?;
        checkpoint::atomic_write(&tmp.join("stream.bin"), &p.stream)?;
        // a live board's state (its flash, its history) stays with it
        let state = p.out.join("board");
        if state.is_dir() {
            std::fs::rename(&state, tmp.join("board"))
                .with_context(|| format!("{}: cannot keep", state.display()))?;
        }
        let old = p.from.join(format!(".{name}.old-{}", std::process::id()));
        if p.out.exists() {
            std::fs::rename(&p.out, &old)
                .with_context(|| format!("{}: cannot replace", p.out.display()))?;
        }
        std::fs::rename(&tmp, &p.out)
            .with_context(|| format!("{}: cannot write", p.out.display()))?;
        let _ = std::fs::remove_dir_all(&old);
        if let Ok(dir) = std::fs::File::open(&p.from) {
            let _ = dir.sync_all();
        }
        Ok(())
    })();
    if res.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    res
}

/// `fdgr device verify`: replays what `RUN/device-<board>/` records (its
/// `model.fdgr`, `stream.bin`, method, mode and optimizer) on the host
/// kernel and compares it with the losses in its `metrics.jsonl` and the
/// weights in its `model.safetensors`, bit for bit. Errors are the input's.
pub fn verify(dir: &Path) -> Result<(Comparison, serde_json::Value)> {
    let read = |f: &str| -> Result<Vec<u8>> {
        std::fs::read(dir.join(f))
            .with_context(|| format!("{}: cannot read", dir.join(f).display()))
    };
    let s: serde_json::Value = serde_json::from_slice(&read("summary.json")?)
        .with_context(|| format!("{}: not JSON", dir.join("summary.json").display()))?;
    let field = |k: &str| -> Result<String> {
        s.get(k)
            .and_then(|v| v.as_str())
            .map(String::from)
            .ok_or_else(|| anyhow!("{}: no \"{k}\"", dir.join("summary.json").display()))
    };
    let method = fw_config::method(&field("method")?)
        .ok_or_else(|| anyhow!("{}: unknown method", dir.join("summary.json").display()))?;
    // the hyper-parameters the firmware was built with (where recorded)
    let mut h = fw_config::hyper(method).to_array();
    for (i, k) in Hyper::<f32>::NAMES.into_iter().enumerate() {
        if let Some(v) = s[k].as_f64() {
            h[i] = v as f32;
        }
    }
    let method = method.with_hyper(Hyper::from_array(h));
    let mode = fw_config::parse_mode(&field("mode")?)
        .ok_or_else(|| anyhow!("{}: unknown mode", dir.join("summary.json").display()))?;
    let opt = fw_config::optimizer_index(&field("optimizer")?)
        .ok_or_else(|| anyhow!("{}: unknown optimizer", dir.join("summary.json").display()))?;
    let model = read("model.fdgr")?;
    let stream = read("stream.bin")?;
    let metrics = String::from_utf8(read("metrics.jsonl")?)
        .map_err(|_| anyhow!("{}: not text", dir.join("metrics.jsonl").display()))?;
    let mut losses = vec![];
    for (i, l) in metrics.lines().enumerate() {
        let v: serde_json::Value = serde_json::from_str(l)
            .with_context(|| format!("{}: line {}", dir.join("metrics.jsonl").display(), i + 1))?;
        let bits = v
            .get("loss_bits")
            .and_then(|b| b.as_str())
            .and_then(|b| u32::from_str_radix(b.trim_start_matches("0x"), 16).ok())
            .ok_or_else(|| {
                anyhow!(
                    "{}: line {}: no loss_bits",
                    dir.join("metrics.jsonl").display(),
                    i + 1
                )
            })?;
        losses.push(bits);
    }
    let net = checkpoint::load_net(&dir.join("model.safetensors"))?;
    let theta: Vec<u32> = net.theta.iter().map(|t| t.to_bits()).collect();
    // the learning rate the firmware was built with (where recorded)
    let lr = s["lr"].as_f64().map(|v| v as f32);
    // what the firmware divided pixels by (older records: the default)
    let pixel_max = s["pixel_max"]
        .as_f64()
        .map_or(fw_config::DEFAULT_PIXEL_MAX, |v| v as f32);
    let c = compare_replay(
        &model,
        &stream,
        (method, mode, opt, lr, pixel_max),
        &losses,
        &theta,
    )?;
    Ok((c, s))
}
