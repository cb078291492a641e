//! `fdgr device run --live` and `fdgr device verify --power-cuts`: the
//! device learns from samples streamed to it over the sample link
//! ([`fdgr_kernel::link`]) and keeps what it learned in its flash
//! ([`fdgr_kernel::store`]) across runs, resets and power cuts.
//!
//! The board's state lives in `RUN/device-<board>/board/`: the image
//! flashed (`image.elf`), its flash (`fdgr-flash.bin`, QEMU's emulated
//! NOR flash) and `history.bin`, every sample the device has learned
//! since the factory model, in order (the sample-stream format,
//! [`fdgr_kernel::stream`]), so that `--verify` can replay the whole
//! history on the host kernel and require bit-identical weights.

use crate::checkpoint::{self, Weights};
use crate::device::{Built, Prepared};
use anyhow::{anyhow, bail, Context, Result};
use fdgr_kernel::link;
use fdgr_kernel::stream;
use fdgr_mcu::fw_config;
use fdgr_mcu::session::{Answer, Session};
use serde_json::json;
use sha2::Digest as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// What `device run --live` was asked for beyond [`Prepared`].
#[derive(Clone, Debug, Default)]
pub struct LiveOptions {
    /// A device already running the live image at the other end of this
    /// serial port (a board), instead of booting QEMU.
    pub port: Option<PathBuf>,
    /// The serial port's baud rate.
    pub baud: u32,
    /// Start again from the factory model (the history is cleared).
    pub factory_reset: bool,
    /// Replay the whole history on the host and require bit-identical
    /// weights.
    pub verify: bool,
}

/// The outcome of a live run.
#[derive(Clone, Debug)]
pub struct LiveRun {
    /// Samples the device had learned when the run started (restored).
    pub start_step: u64,
    /// … and when it ended (saved).
    pub end_step: u64,
    /// SHA-256 of the image.
    pub image_sha256: String,
    /// Held-out accuracy before and after (through `predict`).
    pub acc_before: f64,
    /// See `acc_before`.
    pub acc_after: f64,
    /// Held-out samples.
    pub held_out: usize,
    /// Predict-before-learn accuracy on the streamed samples.
    pub prequential_acc: f64,
    /// Per sample: label, class predicted before learning, loss.
    pub steps: Vec<(u32, u16, f32)>,
    /// RAM in use: the image's static RAM plus the stack's measured peak
    /// (bytes).
    pub ram_bytes: u64,
    /// Static RAM of the image (.data + .bss, bytes).
    pub static_ram_bytes: u64,
    /// The stack's peak since boot, as the device measured it (painted
    /// stack; `None` when it left the painted window).
    pub stack_peak_bytes: Option<u64>,
    /// Flash of the image (bytes).
    pub flash_bytes: u64,
    /// Mean time of one learn request, round trip (ms).
    pub ms_per_sample: f64,
    /// Bytes on the link per learned sample (request + reply).
    pub bytes_per_sample: f64,
    /// Whether the history replayed on the host gave the device's weights
    /// bit for bit (`--verify`).
    pub verified: Option<bool>,
    /// Guest instructions per learned sample (prediction excluded: the
    /// step), mean, where QEMU counted them.
    pub instructions_per_step: Option<f64>,
    /// Guest instructions per save: (mean, max), where counted.
    pub instructions_per_save: Option<(f64, u64)>,
    /// Saves during the run (every `DEFAULT_SAVE_EVERY` steps, and one at
    /// the end).
    pub saves: usize,
    /// Bytes one save writes to flash (the record).
    pub save_bytes: u64,
    /// Why instructions were not counted, if they were not.
    pub count_note: Option<String>,
    /// The weights pulled from the device.
    pub theta: Vec<f32>,
    /// The decoded device log.
    pub log: String,
}

/// The board's state directory.
pub fn state_dir(p: &Prepared) -> PathBuf {
    p.out.join("board")
}

/// The samples the device has learned in this mode (the device saves
/// each mode's state apart).
fn history_path(p: &Prepared) -> PathBuf {
    match p.mode {
        fdgr_kernel::finetune::Mode::Full => state_dir(p).join("history.bin"),
        m => state_dir(p).join(format!(
            "history-{}.bin",
            m.to_string().replace([':', ','], "-")
        )),
    }
}

/// Pixels of a held-out sample as the device receives them (the host
/// divided them by `pixel_max`; the nearest byte undoes it).
fn pixels(x: &[f32], pixel_max: f32) -> Vec<u8> {
    x.iter()
        .map(|v| (v * pixel_max).round().clamp(0.0, 255.0) as u8)
        .collect()
}

fn accuracy(s: &mut Session, p: &Prepared) -> Result<f64> {
    let (x, y, _) = &p.held_out;
    let f = p.models.inputs();
    let mut ok = 0usize;
    for (xi, yi) in x.chunks_exact(f).zip(y) {
        let (class, _) = s
            .predict(&pixels(xi, p.pixel_max))
            .map_err(|e| anyhow!(e))?;
        ok += usize::from(u32::from(class) == *yi);
    }
    Ok(ok as f64 / y.len().max(1) as f64)
}

/// Boots the board's live image on its state (QEMU), with `extra` QEMU
/// arguments.
pub fn boot_with(p: &Prepared, b: &Built, extra: &[String]) -> Result<Session> {
    let dir = state_dir(p);
    std::fs::create_dir_all(&dir).with_context(|| format!("{}: cannot create", dir.display()))?;
    let elf = dir.join("image.elf");
    if std::fs::read(&elf).ok().as_deref() != Some(&b.elf[..]) {
        checkpoint::atomic_write(&elf, &b.elf)?;
    }
    Session::qemu_with(&elf, &dir, p.timeout.min(Duration::from_secs(60)), extra)
        .map_err(|e| anyhow!(e))
}

/// Boots the board's live image on its state (QEMU).
pub fn boot(p: &Prepared, b: &Built) -> Result<Session> {
    boot_with(p, b, &[])
}

/// Bytes of one saved record of `p`'s state (meta, trained parameters,
/// optimizer state) on the emulated flash (16-byte writes).
pub fn record_bytes(p: &Prepared) -> u64 {
    let lens = fw_config::buffer_lens(&p.models, p.method, if p.opt == 0 { 0 } else { 2 });
    let payload = 24 + 4 * (lens.trained + 2 * lens.state);
    fdgr_kernel::store::record_len(payload as u32, 16).map_or(0, u64::from)
}

/// Step and save instructions from the plugin's marks: after the two
/// calibration marks, a pair around each event of `events` (true: a save).
fn event_instructions(counts: &str, events: &[bool]) -> Result<(Vec<u64>, Vec<u64>), String> {
    let marks: Vec<u64> = counts
        .lines()
        .filter_map(|l| l.strip_prefix("mark "))
        .map(|v| v.trim().parse::<u64>().map_err(|e| e.to_string()))
        .collect::<Result<_, _>>()?;
    if marks.len() != 2 + 2 * events.len() {
        return Err(format!(
            "expected {} marker hits, got {}",
            2 + 2 * events.len(),
            marks.len()
        ));
    }
    let overhead = marks[1].saturating_sub(marks[0]);
    let (mut steps, mut saves) = (vec![], vec![]);
    for (i, &save) in events.iter().enumerate() {
        let d = marks[3 + 2 * i]
            .checked_sub(marks[2 + 2 * i])
            .and_then(|d| d.checked_sub(overhead))
            .ok_or("marker counts out of order")?;
        if save {
            saves.push(d);
        } else {
            steps.push(d);
        }
    }
    Ok((steps, saves))
}

/// The device's samples learned so far, checked against its identity;
/// `None` when the host's history does not cover them.
fn start(s: &mut Session, p: &Prepared, o: &LiveOptions) -> Result<(u64, Option<Vec<u8>>)> {
    let want = link::model_id(&p.model);
    let mut st = s.status().map_err(|e| anyhow!(e))?;
    if st.model_id != want {
        bail!(
            "the device runs model {:#018x}, this run's model is {want:#018x}: rebuild",
            st.model_id
        );
    }
    let rec = stream::record_len(p.models.inputs());
    let mut history = std::fs::read(history_path(p)).unwrap_or_default();
    if o.factory_reset {
        st = s.factory_reset().map_err(|e| anyhow!(e))?;
        history.clear();
        checkpoint::atomic_write(&history_path(p), &history)?;
    }
    let have = (history.len() / rec) as u64;
    let step = st.seen;
    if have >= step {
        // samples sent after the device's last save were lost with it
        history.truncate(step as usize * rec);
        Ok((step, Some(history)))
    } else {
        Ok((step, None))
    }
}

/// `fdgr device run --live`: boots the live image, streams the samples
/// (predict, then learn: prequential), measures held-out accuracy before
/// and after through `predict`, saves, pulls the weights, and (with
/// `verify`) replays the whole history on the host. `on_sample(i, n,
/// prequential so far)` follows the stream.
pub fn run(
    p: &Prepared,
    b: &Built,
    o: &LiveOptions,
    on_sample: &mut dyn FnMut(usize, usize, f64),
) -> Result<LiveRun> {
    // QEMU counts the guest's instructions where the plugin builds
    let dir = state_dir(p);
    std::fs::create_dir_all(&dir).with_context(|| format!("{}: cannot create", dir.display()))?;
    // QEMU runs in the state directory: an absolute path for the counts
    let counts = std::fs::canonicalize(&dir)
        .with_context(|| format!("{}", dir.display()))?
        .join("counts.txt");
    let _ = std::fs::remove_file(&counts);
    let (extra, count_note) = counting(p, b, o, &counts);
    let mut s = match &o.port {
        Some(port) => Session::serial(port, o.baud, p.timeout.min(Duration::from_secs(60)))
            .map_err(|e| anyhow!(e))?,
        None => boot_with(p, b, &extra)?,
    };
    let (start_step, history) = start(&mut s, p, o)?;
    // the events the marks will bracket: a factory reset saves, each step,
    // a save every DEFAULT_SAVE_EVERY steps, the save at the end
    let mut events = vec![];
    if o.factory_reset {
        events.push(true);
    }
    if o.verify && history.is_none() {
        bail!(
            "{}: holds fewer samples than the device has learned ({start_step}): the history \
             cannot be replayed; start again with --factory-reset",
            history_path(p).display()
        );
    }
    let acc_before = accuracy(&mut s, p)?;
    let rec = stream::record_len(p.models.inputs());
    let n = p.stream.len() / rec;
    let (t0, bytes0) = (Instant::now(), s.traffic);
    let (steps, ok) = learn_stream(&mut s, p, start_step, &mut events, on_sample)?;
    let secs = t0.elapsed().as_secs_f64();
    let traffic = (s.traffic.0 - bytes0.0) + (s.traffic.1 - bytes0.1);
    let st = s.save().map_err(|e| anyhow!(e))?;
    events.push(true);
    let end_step = st.seen;
    let stack_peak = (st.stack_peak > 0).then_some(u64::from(st.stack_peak));
    if end_step != start_step + n as u64 {
        bail!(
            "the device reports {end_step} samples learned, expected {} + {n}",
            start_step
        );
    }
    // the device has saved: the history follows it
    let history = history.map(|mut h| {
        h.extend_from_slice(&p.stream[..n * rec]);
        h
    });
    if let Some(h) = &history {
        checkpoint::atomic_write(&history_path(p), h)?;
    }
    let acc_after = accuracy(&mut s, p)?;
    let theta = s.pull().map_err(|e| anyhow!(e))?;
    let log_bytes = s.stop();
    let (instructions_per_step, instructions_per_save, count_note) = match count_note {
        None => instruction_counts(&counts, &events),
        note => (None, None, note),
    };
    let verified = match (&history, o.verify) {
        (Some(h), true) => Some(replay_matches(p, h, &theta, &steps, start_step)?),
        _ => None,
    };
    let log = fdgr_mcu::log::decode_defmt(&b.elf, &log_bytes)
        .map(|l| fdgr_mcu::log::to_text(&l))
        .unwrap_or_else(|e| format!("(log not decoded: {e})"));
    Ok(LiveRun {
        start_step,
        end_step,
        image_sha256: sha256(&b.elf),
        acc_before,
        acc_after,
        held_out: p.held_out.1.len(),
        prequential_acc: ok as f64 / n.max(1) as f64,
        steps,
        ram_bytes: b.info.ram + stack_peak.unwrap_or(0),
        static_ram_bytes: b.info.ram,
        stack_peak_bytes: stack_peak,
        flash_bytes: b.info.flash,
        ms_per_sample: 1000.0 * secs / n.max(1) as f64,
        bytes_per_sample: traffic as f64 / n.max(1) as f64,
        verified,
        instructions_per_step,
        instructions_per_save,
        saves: events.iter().filter(|&&e| e).count(),
        save_bytes: record_bytes(p),
        count_note,
        theta,
        log,
    })
}

/// The QEMU arguments that count the guest's instructions between the
/// image's marks into `counts`, or why there are none (a serial port, no
/// plugin, no marker symbol).
fn counting(
    p: &Prepared,
    b: &Built,
    o: &LiveOptions,
    counts: &Path,
) -> (Vec<String>, Option<String>) {
    match (crate::device::plugin(p), b.info.marker) {
        _ if o.port.is_some() => (
            vec![],
            Some("instructions not counted: a device over a serial port".into()),
        ),
        (Ok(plugin), Some(marker)) => (
            vec![
                "-plugin".to_string(),
                fdgr_mcu::qemu::plugin_arg(&plugin, marker, counts),
            ],
            None,
        ),
        (Err(e), _) => (vec![], Some(format!("instructions not counted: {e}"))),
        (_, None) => (
            vec![],
            Some("instructions not counted: no marker symbol".into()),
        ),
    }
}

/// One learned sample: (label, predicted class before learning, loss).
type Learned = (u32, u16, f32);

/// Streams `p`'s samples to the device (predict, then learn), noting each
/// step and each periodic save in `events`; returns the steps and how
/// many the device predicted right before learning them.
fn learn_stream(
    s: &mut Session,
    p: &Prepared,
    start_step: u64,
    events: &mut Vec<bool>,
    on_sample: &mut dyn FnMut(usize, usize, f64),
) -> Result<(Vec<Learned>, usize)> {
    let rec = stream::record_len(p.models.inputs());
    let n = p.stream.len() / rec;
    let mut steps = Vec::with_capacity(n);
    let mut ok = 0usize;
    for i in 0..n {
        let r = &p.stream[i * rec..(i + 1) * rec];
        let (x, y) = (&r[..rec - 1], r[rec - 1]);
        match s.learn(x, u16::from(y)).map_err(|e| anyhow!(e))? {
            Answer::Ack { class, loss } => {
                ok += usize::from(class == u16::from(y));
                steps.push((u32::from(y), class, loss));
                events.push(false);
                if (start_step + steps.len() as u64) % DEFAULT_SAVE_EVERY as u64 == 0 {
                    events.push(true);
                }
            }
            Answer::Nack(nack) => bail!(
                "sample {i}: the device refused it ({} {})",
                nack.reason.name(),
                nack.detail
            ),
            a => bail!("sample {i}: unexpected reply {a:?}"),
        }
        on_sample(i + 1, n, ok as f64 / (i + 1) as f64);
    }
    Ok((steps, ok))
}

/// Instructions per step (mean) and per save (mean, largest) from the
/// QEMU counts file, or why not.
#[allow(clippy::type_complexity)]
fn instruction_counts(
    counts: &Path,
    events: &[bool],
) -> (Option<f64>, Option<(f64, u64)>, Option<String>) {
    match std::fs::read_to_string(counts)
        .map_err(|e| format!("{}: {e}", counts.display()))
        .and_then(|c| event_instructions(&c, events))
    {
        Ok((st, sv)) => {
            let mean = |v: &[u64]| v.iter().sum::<u64>() as f64 / v.len().max(1) as f64;
            (
                (!st.is_empty()).then(|| mean(&st)),
                (!sv.is_empty()).then(|| (mean(&sv), sv.iter().copied().max().unwrap_or(0))),
                None,
            )
        }
        Err(e) => (None, None, Some(format!("instructions not counted: {e}"))),
    }
}

/// SHA-256 of `bytes`, hex.
pub fn sha256(bytes: &[u8]) -> String {
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Replays `history` from the factory model on the host kernel: do its
/// weights equal `theta` bit for bit, and its losses of this run's steps
/// (from `start`) the device's?
fn replay_matches(
    p: &Prepared,
    history: &[u8],
    theta: &[f32],
    steps: &[(u32, u16, f32)],
    start: u64,
) -> Result<bool> {
    let (losses, bits) = fdgr_mcu::replay::replay_lr(
        &p.model,
        history,
        p.method,
        p.mode,
        p.opt,
        p.lr,
        p.pixel_max,
    )
    .map_err(|e| anyhow!(e))?;
    let same_theta =
        bits.len() == theta.len() && bits.iter().zip(theta).all(|(a, b)| *a == b.to_bits());
    let same_losses = steps
        .iter()
        .enumerate()
        .all(|(i, s)| losses.get(start as usize + i) == Some(&s.2.to_bits()));
    Ok(same_theta && same_losses)
}

/// The run's one-line JSON (`--json`).
pub fn json_line(p: &Prepared, r: &LiveRun) -> serde_json::Value {
    let mut v = json!({
        "board": p.board.to_string(),
        "model": p.net.arch.spec,
        "method": p.method.name(),
        "mode": p.mode.to_string(),
        "optimizer": p.opt_name(),
        "lr": p.lr(),
        "pixel_max": p.pixel_max,
        "samples": format!("{}:{}:{}", p.spec.data, p.spec.split, p.spec.count),
        "start_step": r.start_step,
        "end_step": r.end_step,
        "image_sha256": r.image_sha256,
        "acc_before": r.acc_before,
        "acc_after": r.acc_after,
        "held_out": r.held_out,
        "prequential_acc": r.prequential_acc,
        "ram_bytes": r.ram_bytes,
        "static_ram_bytes": r.static_ram_bytes,
        "stack_peak_bytes": r.stack_peak_bytes,
        "flash_bytes": r.flash_bytes,
        "ms_per_sample": r.ms_per_sample,
        "bytes_per_sample": r.bytes_per_sample,
        "verified": r.verified,
        "instructions_per_step": r.instructions_per_step,
        "instructions_per_save": r.instructions_per_save.map(|s| s.0),
        "instructions_per_save_max": r.instructions_per_save.map(|s| s.1),
        "saves": r.saves,
        "save_bytes": r.save_bytes,
        "note": r.count_note,
    });
    crate::device::add_hyper_json(&mut v, p.method);
    v
}

/// Writes the run's outputs into `RUN/device-<board>/` (each file
/// atomically; the board's state beside them is kept).
pub fn write(p: &Prepared, r: &LiveRun) -> Result<()> {
    std::fs::create_dir_all(&p.out)
        .with_context(|| format!("{}: cannot create", p.out.display()))?;
    let mut metrics = String::new();
    for (i, (y, c, l)) in r.steps.iter().enumerate() {
        let row = json!({"step": r.start_step + i as u64 + 1, "label": y, "predicted": c,
                         "loss": l, "loss_bits": format!("{:#010x}", l.to_bits())});
        metrics.push_str(&row.to_string());
        metrics.push('\n');
    }
    checkpoint::atomic_write(&p.out.join("metrics.jsonl"), metrics.as_bytes())?;
    checkpoint::save_model(
        &p.out.join("model.safetensors"),
        &p.net.arch,
        &Weights {
            theta: &r.theta,
            state: &p.net.state,
            tracked: p.net.tracked,
            pre: p.net.pre.as_ref(),
        },
    )?;
    checkpoint::atomic_write(
        &p.out.join("summary.json"),
        serde_json::to_string_pretty(&json_line(p, r))?.as_bytes(),
    )?;
    checkpoint::atomic_write(&p.out.join("device.log"), r.log.as_bytes())?;
    checkpoint::atomic_write(&p.out.join("model.fdgr"), &p.model)?;
    Ok(())
}

/// The outcome of a power-cut check.
#[derive(Clone, Debug, Default)]
pub struct PowerCuts {
    /// Cuts made.
    pub cuts: usize,
    /// Restarts whose state matched no host replay of a saved step.
    pub torn: usize,
    /// Restarts that restored a state equal to the host replay at its step.
    pub recovered: usize,
    /// Restarts that came back at the factory model.
    pub factory: usize,
    /// Cuts made right after a learn request was sent, while the device
    /// was stepping or (on every `DEFAULT_SAVE_EVERY`-th sample) saving.
    pub during_save: usize,
    /// Samples learned in all.
    pub learned: u64,
}

/// `fdgr device verify --power-cuts N`: learns the samples of `p` over
/// and over, cutting the power (killing QEMU) at `cuts` random moments —
/// during learning and during saving — and after each restart requires the
/// restored weights to equal the host replay of the history at the
/// restored step, bit for bit (either the previous or the new save, never
/// a mix).
pub fn power_cuts(p: &Prepared, b: &Built, cuts: usize, seed: u64) -> Result<PowerCuts> {
    let mut rng = fdgr_kernel::Rng::new(seed);
    let rec = stream::record_len(p.models.inputs());
    let n = p.stream.len() / rec;
    if n == 0 {
        bail!("no samples to learn from");
    }
    let mut out = PowerCuts::default();
    // start from the factory model, with a known history
    let mut s = boot(p, b)?;
    let (_, _) = start(
        &mut s,
        p,
        &LiveOptions {
            factory_reset: true,
            ..Default::default()
        },
    )?;
    let mut history: Vec<u8> = vec![];
    let mut next = 0usize;
    while out.cuts < cuts {
        // learn a random number of samples, then cut: often right after a
        // learn that triggers a save, while the device writes its flash
        let every = DEFAULT_SAVE_EVERY;
        let cur = history.len() / rec;
        let k = if rng.below(2) == 0 {
            // end on a save: the cut lands in it or right after it
            every - cur % every
        } else {
            1 + rng.below(2 * every)
        };
        let mut cut_in_save = false;
        for j in 0..k {
            let r = &p.stream[next * rec..(next + 1) * rec];
            next = (next + 1) % n;
            let (x, y) = (&r[..rec - 1], r[rec - 1]);
            let last = j + 1 == k;
            if last && rng.below(2) == 0 {
                // send the last sample and cut while the device is busy
                // with it (its step, or the save after it)
                s.send_only(&link::Request::Learn {
                    x: link::Input::U8(x),
                    label: u16::from(y),
                })
                .map_err(|e| anyhow!(e))?;
                history.extend_from_slice(r);
                std::thread::sleep(Duration::from_micros(rng.below(20_000) as u64));
                cut_in_save = true;
                break;
            }
            match s.learn(x, u16::from(y)).map_err(|e| anyhow!(e))? {
                Answer::Ack { .. } => history.extend_from_slice(r),
                a => bail!("unexpected reply {a:?}"),
            }
        }
        // the power cut
        drop(s.kill());
        out.cuts += 1;
        out.during_save += usize::from(cut_in_save);
        s = boot(p, b)?;
        let st = s.status().map_err(|e| anyhow!(e))?;
        let step = st.seen as usize;
        if step * rec > history.len() {
            out.torn += 1;
            continue;
        }
        history.truncate(step * rec);
        out.learned = out.learned.max(step as u64);
        let theta = s.pull().map_err(|e| anyhow!(e))?;
        let (_, bits) = fdgr_mcu::replay::replay_lr(
            &p.model,
            &history,
            p.method,
            p.mode,
            p.opt,
            p.lr,
            p.pixel_max,
        )
        .map_err(|e| anyhow!(e))?;
        let same =
            bits.len() == theta.len() && bits.iter().zip(&theta).all(|(a, b)| *a == b.to_bits());
        if !same {
            out.torn += 1;
        } else if step == 0 {
            out.factory += 1;
        } else {
            out.recovered += 1;
        }
    }
    drop(s.kill());
    checkpoint::atomic_write(&history_path(p), &history)?;
    Ok(out)
}

/// The live image's save interval (`FDGR_SAVE_EVERY`, the build default).
pub const DEFAULT_SAVE_EVERY: usize = 16;

/// Whether `dir` holds a board state.
pub fn has_state(dir: &Path) -> bool {
    dir.join("board").join("fdgr-flash.bin").is_file()
}
