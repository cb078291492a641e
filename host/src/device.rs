//! `fdgr device`: a trained run taken onto a microcontroller, fine-tuned
//! there, and brought back.
//!
//! [`prepare`] reads and checks everything before anything is built: the
//! run's model (exported to the FDGR file the firmware embeds), the sample
//! stream, the method, the tools the board needs (rustup target, QEMU or
//! probe-rs and an attached probe) and whether the model fits the board's
//! RAM and flash (the firmware's buffer formula against its `memory.x`).
//! [`build`] builds the board's firmware with them (its own
//! `.cargo/config.toml`); [`run`] starts it through the board's cargo
//! runner (QEMU, or probe-rs, which flashes it) and decodes its defmt log
//! as it arrives; [`accuracy`] evaluates held-out accuracy before and after
//! on the host and [`write()`] writes `RUN/device-<board>/` in one rename; [`verify`]
//! replays the fine-tuning on the host kernel and compares every loss and
//! weight bit for bit.
//!
//! The model file is whatever `fdgr export` writes (the layer list, batch
//! norm folded); the firmware fine-tunes any layer list of at most 24
//! layers (MLPs, conv nets, residual joins) with the model's own input
//! size; what it cannot take (too many layers, a batch norm that cannot be
//! folded, a board too small) is refused before building, with a clear
//! message.

use crate::arch::Arch;
use crate::checkpoint::{self, NetFile, Weights};
use crate::config::TrainConfig;
use crate::data::{self, DataOptions, Normalize};
use crate::firmware::{self, StreamSpec};
use anyhow::{anyhow, bail, Context, Result};
use fdgr_kernel::finetune::{Mode, Models};
use fdgr_kernel::{Hyper, Method};
use fdgr_mcu::board::{self, Board, MemoryMap, Runner};
use fdgr_mcu::elf::ElfInfo;
use fdgr_mcu::fw_config;
use fdgr_mcu::log::{self, DeviceLog, LogLine, StepLine};
use fdgr_mcu::memory::{self, Estimate};
use fdgr_mcu::replay::{self, Comparison};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

mod results;

pub use results::*;

/// The firmware workspace this binary was built next to.
pub fn default_firmware_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(|p| p.join("firmware-examples"))
        .unwrap_or_else(|| PathBuf::from("firmware-examples"))
}

/// What `fdgr device run` was asked for.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// The board.
    pub board: Board,
    /// The run directory (its `model.safetensors`, `summary.json`).
    pub from: PathBuf,
    /// `sgd`, `fgr`, `db` or `sam` (the firmware's methods).
    pub method: String,
    /// `full` or `last`.
    pub mode: String,
    /// `sgd` or `adam` (the firmware's optimizers).
    pub opt: String,
    /// `DATA:SPLIT:N`; default: the run's data, test split, 64 samples.
    pub samples: Option<String>,
    /// The firmware workspace (`firmware-examples/`).
    pub firmware: PathBuf,
    /// Longest the device may run.
    pub timeout: Duration,
    /// The live image (samples over the link, state in flash) instead of
    /// the image with the samples built in.
    pub live: bool,
    /// Only build (`fdgr device build`): the runner (QEMU, probe-rs and a
    /// probe) is not needed.
    pub build_only: bool,
    /// The learning rate, where not the optimizer's default (`FDGR_LR`).
    pub lr: Option<f32>,
    /// The method's hyper-parameters where not the firmware's, in the
    /// order of [`Hyper::NAMES`] (`--gamma`, `--eps`, `--rho`,
    /// `--flood-level`; the build's `FDGR_GAMMA`, …).
    pub hyper: [Option<f32>; 4],
    /// Measure held-out accuracy on the samples' train split (without the
    /// fine-tuning samples) instead of its test split: a validation split
    /// to tune the device's hyper-parameters on.
    pub validation: bool,
    /// Stream the samples in the order of this seeded shuffle.
    pub order_seed: Option<u64>,
}

/// Samples fine-tuned on when `--samples` is not given.
pub const DEFAULT_SAMPLES: usize = 64;

/// Everything [`prepare`] read and checked.
pub struct Prepared {
    /// The board.
    pub board: Board,
    /// The firmware workspace.
    pub fw: PathBuf,
    /// The run directory.
    pub from: PathBuf,
    /// Where the results go: `RUN/device-<board>`.
    pub out: PathBuf,
    /// The run's network and weights.
    pub net: NetFile,
    /// The model's layer list planned for fine-tuning in [`Prepared::mode`]
    /// (what the firmware plans from the same file at compile time).
    pub models: Models,
    /// The FDGR file the firmware embeds.
    pub model: Vec<u8>,
    /// Which samples.
    pub spec: StreamSpec,
    /// The sample stream.
    pub stream: Vec<u8>,
    /// Steps (= samples).
    pub steps: usize,
    /// Method, as the firmware runs it (its hyper-parameters included).
    pub method: Method<f32>,
    /// Its hyper-parameters where given, in the order of [`Hyper::NAMES`]
    /// (the build's `FDGR_GAMMA`, `FDGR_EPS`, `FDGR_RHO`,
    /// `FDGR_FLOOD_LEVEL`).
    pub hyper: [Option<f32>; 4],
    /// Trained parameters.
    pub mode: Mode,
    /// Optimizer: index in [`fw_config::OPTIMIZER_NAMES`].
    pub opt: usize,
    /// The board's memory.
    pub map: MemoryMap,
    /// What the firmware is expected to need.
    pub estimate: Estimate,
    /// The debug probes found (boards).
    pub probes: Vec<String>,
    /// Held-out samples, scaled as the device scales them, and a description.
    pub held_out: (Vec<f32>, Vec<u32>, String),
    /// Longest the device may run.
    pub timeout: Duration,
    /// The live image ([`RunOptions::live`]).
    pub live: bool,
    /// The learning rate, where not the optimizer's default.
    pub lr: Option<f32>,
    /// What the device divides pixels by: the run's (its data set's pixel
    /// maximum, `FDGR_PIXEL_MAX`).
    pub pixel_max: f32,
}

impl Prepared {
    /// The trained parameters.
    pub fn trained(&self) -> usize {
        self.models.trained_params()
    }

    /// The board crate's features the model needs (`conv` for a conv net;
    /// `live` for the live image).
    pub fn features(&self) -> Vec<&'static str> {
        let mut f = vec![];
        if self.models.uses_conv() {
            f.push("conv");
        }
        if self.live {
            f.push("live");
        }
        f
    }

    /// The optimizer's name.
    pub fn opt_name(&self) -> &'static str {
        fw_config::OPTIMIZER_NAMES[self.opt]
    }

    /// The learning rate the firmware uses with it.
    pub fn lr(&self) -> f32 {
        if let Some(lr) = self.lr {
            lr
        } else if self.opt == 0 {
            fw_config::LR
        } else {
            fw_config::ADAM_LR
        }
    }
}

/// The method's hyper-parameters as the firmware sets them.
pub fn describe_method(m: &Method<f32>) -> String {
    let hyper: Vec<String> = m
        .hypers()
        .into_iter()
        .filter_map(|(n, v)| v.map(|v| format!("{n} {v}")))
        .collect();
    if hyper.is_empty() {
        m.name().to_string()
    } else {
        format!("{} ({})", m.name(), hyper.join(", "))
    }
}

/// What `mode` trains, for people (`trained` parameters).
pub fn describe_mode(mode: Mode, trained: usize) -> String {
    match mode {
        Mode::Full => format!("all {trained} parameters"),
        Mode::Last(1) => format!("the last layer ({trained} parameters)"),
        Mode::Last(k) => format!("the last {k} layers with parameters ({trained} parameters)"),
        Mode::Bias => format!("every bias ({trained} parameters; the weights frozen in flash)"),
        Mode::Layers(_) => format!("{mode} ({trained} parameters)"),
    }
}

/// `method` with the hyper-parameters given, in the order of
/// [`Hyper::NAMES`] (`--gamma`, `--eps`, `--rho`, `--flood-level`), each
/// checked ([`fw_config::hyper_ok`]) and refused for a method without it.
pub fn with_hyper(method: Method<f32>, given: [Option<f32>; 4]) -> Result<Method<f32>> {
    let mut h = fw_config::hyper(method).to_array();
    for (i, v) in given.into_iter().enumerate() {
        let Some(v) = v else { continue };
        let flag = Hyper::<f32>::NAMES[i].replace('_', "-");
        if method.hypers()[i].1.is_none() {
            let with: Vec<&str> = fw_config::METHODS
                .iter()
                .filter(|m| m.hypers()[i].1.is_some())
                .map(|m| m.name())
                .collect();
            bail!(
                "--{flag}: method {} has no {flag} (the methods with one: {})",
                method.name(),
                with.join(", ")
            );
        }
        if let Err(what) = fw_config::hyper_ok(i, v) {
            bail!("--{flag} {v}: expected {what}");
        }
        h[i] = v;
    }
    Ok(method.with_hyper(Hyper::from_array(h)))
}

/// The method's hyper-parameters as the firmware runs it, as fields of a
/// summary (`"gamma"`, `"eps"`, `"rho"`, `"flood_level"`), added to `v`.
pub fn add_hyper_json(v: &mut serde_json::Value, m: Method<f32>) {
    for (k, x) in Hyper::<f32>::NAMES
        .into_iter()
        .zip(fw_config::hyper(m).to_array())
    {
        v[k] = serde_json::json!(x);
    }
}

/// The run's configuration, from its `summary.json`.
fn run_config(from: &Path) -> Result<Option<TrainConfig>> {
    let p = from.join("summary.json");
    let Ok(text) = std::fs::read_to_string(&p) else {
        return Ok(None);
    };
    let v: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{}: not JSON", p.display()))?;
    let cfg = v
        .get("config")
        .cloned()
        .ok_or_else(|| anyhow!("{}: no \"config\"", p.display()))?;
    Ok(Some(serde_json::from_value(cfg).with_context(|| {
        format!("{}: cannot read \"config\"", p.display())
    })?))
}

/// Parses `DATA:SPLIT:N` (DATA may itself hold colons: `csv:FILE`).
pub fn parse_samples(s: &str, seed: u64, test_frac: f64) -> Result<StreamSpec> {
    let mut it = s.rsplitn(3, ':');
    let (n, split, data) = match (it.next(), it.next(), it.next()) {
        (Some(n), Some(split), Some(data)) if !data.is_empty() => (n, split, data),
        _ => bail!("--samples {s}: expected DATA:SPLIT:N, e.g. digits:test:64"),
    };
    let count: usize = n
        .parse()
        .map_err(|_| anyhow!("--samples {s}: N must be a positive count, not {n:?}"))?;
    if !matches!(split, "test" | "train") {
        bail!("--samples {s}: SPLIT must be test or train, not {split:?}");
    }
    Ok(StreamSpec {
        data: data.to_string(),
        split: split.to_string(),
        count,
        seed,
        test_frac,
    })
}

/// Checks the firmware folder and the run directory of `o`, and parses
/// the method (with its hyper-parameters), mode and optimizer it asks of
/// the firmware.
fn choices(o: &RunOptions) -> Result<(Method<f32>, Mode, usize)> {
    let fw = &o.firmware;
    if !fw.join("Cargo.toml").is_file() || !o.board.dir(fw).is_dir() {
        bail!(
            "the firmware sources are not at {} (expected the firmware-examples folder of the fdgr \
             repository, with {}/): pass --firmware DIR",
            fw.display(),
            o.board
        );
    }
    if !o.from.is_dir() {
        bail!(
            "--from {}: not a run directory (expected the folder `fdgr train` wrote)",
            o.from.display()
        );
    }
    // The method, mode and optimizer the firmware offers.
    let method = fw_config::method(&o.method).ok_or_else(|| {
        let names: Vec<&str> = fw_config::METHODS.iter().map(|m| m.name()).collect();
        anyhow!(
            "--method {}: the firmware offers {}",
            o.method,
            names.join(", ")
        )
    })?;
    let method = with_hyper(method, o.hyper)?;
    let mode = fw_config::parse_mode(&o.mode).ok_or_else(|| {
        anyhow!(
            "--mode {}: expected full, last (the last layer), last:K (the last K layers \
                 with parameters), bias (every bias) or layers:I,J,… (layer indices)",
            o.mode
        )
    })?;
    let opt = fw_config::optimizer_index(&o.opt).ok_or_else(|| {
        anyhow!(
            "--opt {}: the firmware offers {}",
            o.opt,
            fw_config::OPTIMIZER_NAMES.join(", ")
        )
    })?;
    Ok((method, mode, opt))
}

/// Reads and checks everything before building: every error here is the
/// input's (a flag, the run, the samples, a missing tool or probe, a model
/// that does not fit the board).
pub fn prepare(o: &RunOptions) -> Result<Prepared> {
    let fw = &o.firmware;
    let (method, mode, opt) = choices(o)?;

    // The model, exported as `fdgr export` does.
    let (net, model) = firmware::export_run(&o.from, true)?;
    let models = fw_config::plan(&model, mode).map_err(|e| {
        anyhow!(
            "{}: model {} ({} mode): {e}",
            checkpoint::model_path(&o.from).display(),
            net.arch.spec,
            mode
        )
    })?;

    // The samples: by default the run's own held-out split.
    let cfg = run_config(&o.from)?;
    let (spec, stream) = samples(o, cfg.as_ref())?;
    if stream.features != models.inputs() {
        bail!(
            "--samples {}:{}:{}: its samples have {} values, the model takes {}",
            spec.data,
            spec.split,
            spec.count,
            stream.features,
            models.inputs(),
        );
    }
    let pixel_max = pixel_max_of(&net, &o.from)?;
    let steps = fw_config::check(&models, &stream.bytes, pixel_max).map_err(|e| {
        anyhow!(
            "model {} on {} ({} split): {e}",
            net.arch.spec,
            spec.data,
            spec.split
        )
    })?;
    let held_out = held_out(&spec, cfg.as_ref(), o.validation, pixel_max)?;

    // Does it fit? (before building, from the formula and memory.x)
    let map = o.board.memory(fw).map_err(|e| anyhow!(e))?;
    let fit = Fit {
        model: &model,
        models: &models,
        method,
        mode,
        opt,
        stream_bytes: stream.bytes.len(),
    };
    let estimate = fit.check(o, &map, &net.arch.spec)?;

    // The tools, last: a missing probe is the most likely thing to fix.
    let probes = if o.build_only {
        fdgr_mcu::tools::check_target(o.board.triple()).map_err(|e| anyhow!(e))?;
        vec![]
    } else {
        fdgr_mcu::tools::check(o.board).map_err(|e| anyhow!(e))?
    };

    Ok(Prepared {
        board: o.board,
        fw: fw.clone(),
        out: o.from.join(format!("device-{}", o.board)),
        from: o.from.clone(),
        net,
        models,
        model,
        spec,
        stream: stream.bytes,
        steps,
        method,
        hyper: o.hyper,
        mode,
        opt,
        map,
        estimate,
        probes,
        held_out,
        timeout: o.timeout,
        live: o.live,
        lr: o.lr,
        pixel_max,
    })
}

/// The samples of `--samples` (by default the run's own test split, the
/// first [`DEFAULT_SAMPLES`]), as a stream, in `--order-seed`'s order.
fn samples(o: &RunOptions, cfg: Option<&TrainConfig>) -> Result<(StreamSpec, firmware::Stream)> {
    let (seed, test_frac) = cfg.map_or((1, 0.2), |c| (c.seed, c.test_frac));
    let spec = match (&o.samples, cfg) {
        (Some(s), _) => parse_samples(s, seed, test_frac)?,
        (None, Some(c)) => StreamSpec {
            data: c.data.clone(),
            split: "test".into(),
            count: DEFAULT_SAMPLES,
            seed,
            test_frac,
        },
        (None, None) => bail!(
            "{}: no summary.json to take the data set from: pass --samples DATA:SPLIT:N",
            o.from.display()
        ),
    };
    let mut stream = firmware::stream_bytes(&spec)
        .with_context(|| format!("--samples {}:{}:{}", spec.data, spec.split, spec.count))?;
    if let Some(seed) = o.order_seed {
        // the same samples in another order (a seeded shuffle)
        let rec = fdgr_kernel::stream::record_len(stream.features);
        let mut order: Vec<u32> = (0..(stream.bytes.len() / rec) as u32).collect();
        fdgr_kernel::Rng::new(seed).shuffle(&mut order);
        stream.bytes = order
            .iter()
            .flat_map(|&i| stream.bytes[i as usize * rec..(i as usize + 1) * rec].to_vec())
            .collect();
    }
    Ok((spec, stream))
}

/// What [`prepare`] checks against a board's memory before building.
struct Fit<'a> {
    model: &'a [u8],
    models: &'a Models,
    method: Method<f32>,
    mode: Mode,
    opt: usize,
    stream_bytes: usize,
}

impl Fit<'_> {
    /// The estimate when it fits the board's memory map `map`; else an
    /// error with the numbers and the sparser modes that would fit.
    fn check(&self, o: &RunOptions, map: &MemoryMap, spec: &str) -> Result<Estimate> {
        let (method, opt, board) = (self.method, self.opt, o.board);
        let estimate = memory::estimate(self.models, method, opt, self.stream_bytes, board);
        let Err(why) = memory::check_estimate(&estimate, map, board) else {
            return Ok(estimate);
        };
        // the sparser modes that would fit
        let fits: Vec<String> = [
            (Mode::LAST_LAYER, "the last layer"),
            (Mode::Bias, "every bias"),
        ]
        .into_iter()
        .filter(|(m, _)| *m != self.mode)
        .filter_map(|(m, what)| {
            let e = memory::estimate(
                &fw_config::plan(self.model, m).ok()?,
                method,
                opt,
                self.stream_bytes,
                board,
            );
            memory::check_estimate(&e, map, board)
                .is_ok()
                .then(|| format!("--mode {m} ({what}: about {} B of RAM)", e.ram))
        })
        .collect();
        let hint = if fits.is_empty() {
            "; use a smaller model".to_string()
        } else {
            format!("; {} fits", fits.join(" or "))
        };
        bail!(
            "model {spec} ({} parameters, {} {}) is too large for the {board} ({}): it needs {why}{hint}",
            self.models.params(),
            method.name(),
            self.mode,
            board.memory_x(&o.firmware).display(),
        );
    }
}

/// What the device divides a sample's pixels by: the pixel maximum the run
/// divided its inputs by (`--normalize auto` on images: 16 for the UCI
/// digits, 255 for 8-bit images; 1 for `none`). A run without stored
/// preprocessing gets [`fw_config::DEFAULT_PIXEL_MAX`] (the held-out check
/// then tells whether that is how it was trained).
fn pixel_max_of(net: &NetFile, from: &Path) -> Result<f32> {
    let Some(pre) = &net.pre else {
        return Ok(fw_config::DEFAULT_PIXEL_MAX);
    };
    let m = match (pre.normalize, pre.scale.as_slice()) {
        (Normalize::Auto, [m]) => *m,
        (Normalize::None, _) => 1.0,
        _ => f32::NAN,
    };
    if !fw_config::pixel_max_ok(m) {
        bail!(
            "{}: the run scaled its inputs with --normalize {:?} (scale {:?}); the device divides \
             8-bit pixels by one maximum from 1 to 255: fine-tune a run trained with \
             --normalize auto on image data",
            checkpoint::model_path(from).display(),
            pre.normalize,
            pre.scale
        );
    }
    Ok(m)
}

/// The samples held out from pre-training and from fine-tuning: the test
/// split of the samples' data set (split as the run split it), without the
/// fine-tuning samples when they come from it; scaled as the firmware
/// scales them (pixel / `pixel_max`), which must be how the run was
/// trained.
fn held_out(
    spec: &StreamSpec,
    cfg: Option<&TrainConfig>,
    validation: bool,
    pixel_max: f32,
) -> Result<(Vec<f32>, Vec<u32>, String)> {
    let raw = data::load(
        &spec.data,
        &DataOptions {
            seed: spec.seed,
            test_frac: spec.test_frac,
            normalize: Normalize::None,
        },
    )?;
    let f = raw.features;
    // validation: the train split (to tune the device's hyper-parameters
    // without looking at the test split)
    let (part, name) = if validation {
        (&raw.train, "train")
    } else {
        (&raw.test, "test")
    };
    let skip = if spec.split == name { spec.count } else { 0 };
    let x: Vec<f32> = part.x[skip * f..].iter().map(|&v| v / pixel_max).collect();
    let y = part.y[skip..].to_vec();
    if y.is_empty() {
        bail!(
            "--samples {}:{}:{}: no test samples are left to measure held-out accuracy on",
            spec.data,
            spec.split,
            spec.count
        );
    }
    // The run must have seen its inputs as the device does.
    if let Some(c) = cfg {
        let seen = data::load(&spec.data, &c.data_options())?;
        let same = seen.test.x.len() == raw.test.x.len()
            && seen
                .test
                .x
                .iter()
                .zip(&raw.test.x)
                .all(|(n, r)| *n == r / pixel_max);
        if !same {
            bail!(
                "the run was trained on {} with --normalize {:?}, which is not how the firmware \
                 scales inputs (pixel / {pixel_max}): fine-tune a run trained with --normalize \
                 auto on data of the same pixel range as the samples",
                spec.data,
                c.normalize,
            );
        }
    }
    let what = format!(
        "{} {name} split{}{}, {} samples",
        spec.data,
        if validation { " (validation)" } else { "" },
        if skip > 0 {
            format!(" without the {skip} fine-tuning samples")
        } else {
            String::new()
        },
        y.len()
    );
    Ok((x, y, what))
}

/// A built firmware.
pub struct Built {
    /// Its ELF.
    pub elf: Vec<u8>,
    /// Its flash and RAM.
    pub info: ElfInfo,
    /// Seconds the build took.
    pub seconds: f64,
    /// The model and stream files it was built from.
    pub inputs: (PathBuf, PathBuf),
}

/// A build error that is the input's (the firmware's build script refused
/// the model or the stream, or the result does not fit the board).
#[derive(Debug)]
pub struct Refused(pub String);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Refused {}

/// Writes `bytes` to `p` unless it already holds them (so its time stays,
/// and cargo does not rebuild the firmware for the same inputs).
fn write_if_changed(p: &Path, bytes: &[u8]) -> Result<()> {
    if std::fs::read(p).ok().as_deref() == Some(bytes) {
        return Ok(());
    }
    checkpoint::atomic_write(p, bytes)
}

/// The `FDGR_*` variables of the build.
fn build_vars(p: &Prepared, model: &Path, stream: &Path) -> Vec<(&'static str, String)> {
    let mut v = vec![
        ("FDGR_MODEL", model.display().to_string()),
        ("FDGR_METHOD", p.method.name().to_string()),
        ("FDGR_OPT", p.opt_name().to_string()),
        ("FDGR_MODE", p.mode.to_string()),
    ];
    if let Some(lr) = p.lr {
        v.push(("FDGR_LR", lr.to_string()));
    }
    for (var, h) in fw_config::HYPER_VARS.into_iter().zip(p.hyper) {
        if let Some(h) = h {
            v.push((var, h.to_string()));
        }
    }
    v.push(("FDGR_PIXEL_MAX", p.pixel_max.to_string()));
    // the live image carries no samples: one image for any stream
    if !p.live {
        v.push(("FDGR_STREAM", stream.display().to_string()));
    }
    v
}

/// Builds the board's firmware for `p` (`cargo build --release` in its
/// folder, its `.cargo/config.toml` applying). The model and stream files
/// go to `firmware-examples/target/fdgr-device/<board>/`.
pub fn build(p: &Prepared) -> Result<Built> {
    let t = Instant::now();
    let stage = p.fw.join("target").join("fdgr-device").join(p.board.name());
    std::fs::create_dir_all(&stage).with_context(|| format!("{}", stage.display()))?;
    let (model, stream) = (stage.join("model.fdgr"), stage.join("stream.bin"));
    write_if_changed(&model, &p.model)?;
    write_if_changed(&stream, &p.stream)?;
    let vars = build_vars(p, &model, &stream);
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let c = board::cargo(&p.fw, "build", p.board.name(), &vars, &p.features());
    let r = fdgr_mcu::process::run_limited(c, Duration::from_secs(1800))
        .map_err(|e| anyhow!("firmware build for {}: {e}", p.board))?;
    if r.code != Some(0) {
        let err = String::from_utf8_lossy(&r.stderr);
        if let Some(l) = err.lines().find(|l| l.contains("fdgr-firmware build:")) {
            return Err(Refused(l.trim().to_string()).into());
        }
        let tail: Vec<&str> = err.lines().rev().take(15).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        bail!(
            "the firmware build for {} failed ({}):\n{}",
            p.board,
            p.board.dir(&p.fw).display(),
            tail.join("\n")
        );
    }
    let elf_path = p.board.elf(&p.fw, p.board.triple());
    let elf = fdgr_mcu::read(&elf_path).map_err(|e| anyhow!(e))?;
    let info = fdgr_mcu::elf::elf_info(&elf).map_err(|e| anyhow!("{}: {e}", elf_path.display()))?;
    if let Err(why) = memory::check_elf(&info, &p.map) {
        return Err(Refused(format!(
            "the firmware built for {} does not fit it ({}): {why}",
            p.board,
            p.board.memory_x(&p.fw).display()
        ))
        .into());
    }
    Ok(Built {
        elf,
        info,
        seconds: t.elapsed().as_secs_f64(),
        inputs: (model, stream),
    })
}

/// What came back from the device.
pub struct DeviceRun {
    /// The decoded log.
    pub lines: Vec<LogLine>,
    /// The values in it.
    pub log: DeviceLog,
    /// Guest instructions per step (QEMU with the counting plugin).
    pub instructions: Vec<u64>,
    /// Seconds the device ran (flashing included).
    pub seconds: f64,
    /// Why instructions were not counted, if they were not.
    pub note: Option<String>,
}

/// Builds the QEMU instruction-count plugin if it can (quietly; the run
/// goes on without counts otherwise, and says why).
pub fn plugin(p: &Prepared) -> Result<PathBuf, String> {
    let (major, _) = fdgr_mcu::qemu::qemu_version()?;
    let built = fdgr_mcu::qemu::build_plugin(&p.fw, major, &mut |name, c| {
        let r = fdgr_mcu::process::run_limited(c, Duration::from_secs(600))?;
        if r.code == Some(0) {
            Ok(())
        } else {
            Err(format!("{name}: build failed"))
        }
    })?;
    Ok(built.path)
}

/// Adds to the board's runner command `c` the arguments that count
/// instructions into `counts` (QEMU, with the plugin and the image's
/// marker) or format the log (probe-rs); returns whether instructions are
/// counted, or why not.
fn runner_args(
    p: &Prepared,
    b: &Built,
    c: &mut std::process::Command,
    counts: &Path,
) -> (bool, Option<String>) {
    match p.board.runner() {
        Runner::Qemu => match (plugin(p), b.info.marker) {
            (Ok(plugin), Some(marker)) => {
                c.args(["--", "-plugin"])
                    .arg(fdgr_mcu::qemu::plugin_arg(&plugin, marker, counts));
                (true, None)
            }
            (Err(e), _) => (false, Some(format!("instructions not counted: {e}"))),
            (_, None) => (
                false,
                Some("instructions not counted: no fdgr_mark in the ELF".into()),
            ),
        },
        Runner::ProbeRs => {
            c.args(["--", "--log-format", log::PROBE_RS_LOG_FORMAT]);
            (false, None)
        }
    }
}

/// Fails unless the firmware finished (`fdgr done`, exit 0, no errors)
/// with one loss per sample and all of θ under the device's hash; a
/// rejected non-finite step is [`crate::train::Diverged`].
fn check_finished(p: &Prepared, r: &fdgr_mcu::process::Finished, d: &log::DeviceLog) -> Result<()> {
    let stderr = String::from_utf8_lossy(&r.stderr);
    let tail = || {
        let t: Vec<&str> = stderr.lines().rev().take(8).collect();
        t.into_iter().rev().collect::<Vec<_>>().join("\n")
    };
    if let Some(e) = d.errors.iter().find(|e| e.contains("NonFinite")) {
        return Err(crate::train::Diverged(format!(
            "fine-tuning on {} diverged: {e} (the step was rejected on the device)",
            p.board
        ))
        .into());
    }
    if r.code != Some(0) || !d.done || !d.errors.is_empty() {
        bail!(
            "the firmware on {} did not finish ({}{}{}); its output:\n{}",
            p.board,
            r.code.map_or("killed by a signal".to_string(), |c| format!(
                "exit code {c}"
            )),
            if d.done { "" } else { ", no `fdgr done`" },
            if d.errors.is_empty() {
                String::new()
            } else {
                format!(", errors: {}", d.errors.join("; "))
            },
            tail()
        );
    }
    d.check_whole(p.steps, Some(p.models.params()))
        .map_err(|e| anyhow!("the firmware on {}: {e}", p.board))?;
    Ok(())
}

/// Runs the built firmware through the board's cargo runner (`cargo run
/// --release` in its folder: QEMU for `qemu-m4`, `probe-rs run`, which
/// flashes, for the boards), decoding its log as it arrives; `on_step` sees
/// every step line. Fails unless the firmware finished (`fdgr done`, exit
/// 0) with one loss per sample and all of θ.
pub fn run(p: &Prepared, b: &Built, on_step: &mut dyn FnMut(&StepLine)) -> Result<DeviceRun> {
    let (model, stream) = &b.inputs;
    let vars = build_vars(p, model, stream);
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut c = board::cargo(&p.fw, "run", p.board.name(), &vars, &p.features());
    let counts =
        p.fw.join("target")
            .join("fdgr-device")
            .join(p.board.name())
            .join("counts.txt");
    let _ = std::fs::remove_file(&counts);
    let (counting, mut note) = runner_args(p, b, &mut c, &counts);
    let defmt = log::Defmt::new(&b.elf).map_err(|e| anyhow!(e))?;
    let mut frames = defmt.stream();
    let mut text = String::new();
    let mut lines: Vec<LogLine> = vec![];
    let runner = p.board.runner();
    let mut feed = |chunk: &[u8]| -> Result<(), String> {
        let new = match runner {
            Runner::Qemu => frames.received(chunk)?,
            Runner::ProbeRs => {
                text.push_str(&String::from_utf8_lossy(chunk));
                let mut new = vec![];
                while let Some(i) = text.find('\n') {
                    let line: String = text.drain(..=i).collect();
                    new.extend(log::parse_text_line(&line));
                }
                new
            }
        };
        for l in new {
            if let Some(s) = log::parse_step(&l)? {
                on_step(&s);
            }
            lines.push(l);
        }
        Ok(())
    };
    let r = fdgr_mcu::process::run_streaming(c, p.timeout, &mut feed)
        .map_err(|e| anyhow!("running on {}: {e}", p.board))?;
    if runner == Runner::ProbeRs {
        lines.extend(log::parse_text_line(&text));
    }
    let d = log::parse_log(&lines).map_err(|e| anyhow!("the {} log: {e}", p.board))?;
    check_finished(p, &r, &d)?;
    let instructions = if counting {
        match std::fs::read_to_string(&counts)
            .map_err(|e| e.to_string())
            .and_then(|c| fdgr_mcu::qemu::step_instructions(&c, p.steps))
        {
            Ok(v) => v,
            Err(e) => {
                note = Some(format!("instructions not counted: {e}"));
                vec![]
            }
        }
    } else {
        vec![]
    };
    Ok(DeviceRun {
        lines,
        log: d,
        instructions,
        seconds: r.seconds,
        note,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_flag() {
        let s = parse_samples("digits:test:64", 3, 0.25).unwrap();
        assert_eq!(
            (s.data.as_str(), s.split.as_str(), s.count),
            ("digits", "test", 64)
        );
        assert_eq!((s.seed, s.test_frac), (3, 0.25));
        let s = parse_samples("csv:/tmp/a:b.csv:train:5", 1, 0.2).unwrap();
        assert_eq!(
            (s.data.as_str(), s.split.as_str(), s.count),
            ("csv:/tmp/a:b.csv", "train", 5)
        );
        for bad in [
            "digits",
            "digits:test",
            ":test:4",
            "digits:val:4",
            "digits:test:x",
            "digits:test:-1",
        ] {
            assert!(parse_samples(bad, 1, 0.2).is_err(), "{bad}");
        }
    }

    #[test]
    fn loss_means_of_few_and_many() {
        let b = |v: f32| v.to_bits();
        assert_eq!(loss_means(&[b(1.0), b(3.0)]), (2.0, 2.0));
        let many: Vec<u32> = (0..32).map(|i| b(if i < 16 { 1.0 } else { 0.5 })).collect();
        assert_eq!(loss_means(&many), (1.0, 0.5));
    }
}
