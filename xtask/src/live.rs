//! `cargo xtask firmware`'s checks of on-device learning on the live
//! image (`fdgr device run --live`, `fdgr device verify --power-cuts`).

use std::path::Path;
use std::time::Instant;

use crate::firmware::{fdgr_device, train_and_export, CONV_RUN, MLP_RUN};
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
/// and for the MLP, power cuts at random moments while it learns and
/// saves, each restart bit-identical to the host replay (0 torn).
pub(crate) fn device_live(out: &Path) -> Result<Vec<Step>, String> {
    let mut steps = vec![];
    for (run_spec, n) in [(&MLP_RUN, 64u64), (&CONV_RUN, 32)] {
        let ckpt = out.join(run_spec.ckpt);
        if !ckpt.join("model.safetensors").is_file() {
            steps.extend(train_and_export(out, run_spec)?.1);
        }
        let ck = ckpt.display().to_string();
        let train = format!("digits:train:{n}");
        let base = ["run", "--board", "qemu-m4", "--from", &ck, "--live"];
        let with = |extra: &[&'static str], samples: &str| -> Vec<String> {
            let mut v: Vec<String> = base.iter().map(|s| s.to_string()).collect();
            v.extend(["--samples".to_string(), samples.to_string()]);
            v.extend(extra.iter().map(|s| s.to_string()));
            v
        };
        let model = run_spec.file;
        let mut sha = None;
        let test = format!("digits:test:{}", n / 2);
        for (i, (args, start, verify)) in [
            (with(&["--factory-reset"], &train), 0, false),
            (with(&[], &train), n, false),
            (with(&["--verify"], &test), 2 * n, true),
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
        }
        if run_spec.ckpt == MLP_RUN.ckpt {
            let (v, st) = device_json(
                "fdgr device verify --power-cuts 12 (MLP, live image)",
                &[
                    "verify",
                    "--board",
                    "qemu-m4",
                    "--from",
                    &ck,
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
        }
    }
    Ok(steps)
}
