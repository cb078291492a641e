//! Firmware builds and the QEMU cross-check.
//!
//! 1. `qemu-system-arm` must be there (installed with apt-get when missing
//!    and root; otherwise this fails: it never skips).
//! 2. A model is trained and exported with the real CLI (`fdgr train`,
//!    `fdgr export`: digits, 64-32-10, tanh); the fine-tuning stream is
//!    the first 64 samples of the digits test split (`fdgr samples`, 65 bytes
//!    each: samples the model was not trained on), which must
//!    equal the committed `firmware-examples/models/digits-stream.bin`.
//! 3. Every board example builds (release) with the committed default model.
//! 4. `qemu-m4` is built for `sgd`, `fgr`, `db`, `sam` (all parameters) and
//!    `fgr` (last layer only), run under QEMU with an instruction-counting
//!    plugin, and every logged loss and every final weight must equal, bit
//!    for bit, the host's replay through `fdgr-kernel` (libm).
//! 5. The `micromath` build is run too and its difference reported.
//! 6. Deliberate panic and HardFault builds must make QEMU exit with 1.
//! 7. `fdgr device run --board qemu-m4 --verify` runs end to end on the
//!    trained run (build, QEMU, live log, held-out accuracy, bit-identity,
//!    `RUN/device-qemu-m4/`), `fdgr device verify` and `fdgr eval` read what
//!    it wrote, and every board's path runs up to its flashing command
//!    through a stand-in `probe-rs` that records its command line and
//!    replays the QEMU log (no hardware here).
//! 8. The table of flash, RAM, stack and instructions per step is printed
//!    (and written to `firmware-examples/target/xtask/RESULTS.md`); the
//!    budgets below are checked.
//!
//! Environment: `FDGR_FIRMWARE_MODEL=<file.fdgr>` uses that exported model
//! instead of training one; `FDGR_UPDATE_MODELS=1` copies the exported model
//! and the stream over the committed defaults; `FDGR_QEMU_PLUGIN_VERSION`
//! forces the plugin's API version (otherwise the first of 1..=4 that this
//! QEMU loads).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use fdgr_kernel::finetune::Mode;
use fdgr_kernel::Method;

use fdgr_mcu::board::{Board, Runner};
use fdgr_mcu::elf::{elf_info, ElfInfo};
use fdgr_mcu::fw_config;
use fdgr_mcu::log::{decode_defmt, parse_log};
use fdgr_mcu::process::run_limited;
use fdgr_mcu::qemu::{qemu_m4, qemu_version, step_instructions};
use fdgr_mcu::read;
use fdgr_mcu::replay::{fnv1a_bits, replay};

use crate::fw_util as fw;
use crate::util::{cargo, run, Step};

mod cli;
mod live;
mod pretrained;
mod report;

pub(crate) use cli::*;
pub(crate) use pretrained::*;
use report::*;

/// Samples in the fine-tuning stream (= steps on the device).
const STREAM_SAMPLES: usize = 64;
/// Budget for full F-GR fine-tuning: RAM ≤ 3·(parameter bytes) + 8 KiB.
const RAM_SLACK: u64 = 8 * 1024;
/// Budget: flash ≤ 72 KiB (the whole image: code, the model's weights
/// and the 64-sample stream). It was 64 KiB for the MLP-only kernel; the
/// layer-list kernel (one implementation for MLPs and conv nets, layers
/// over buffer locations) costs about 8 KB more code.
const FLASH_BUDGET: u64 = 72 * 1024;
/// Budget: instructions per plain SGD step: the issue's ≤ 40,000 for the
/// M4F update loop (measured 38,910 since the kernel's loops share loads
/// between outputs; was 52,000 at 48,255, and 72,000 before; the earlier
/// target of 35,000 is not met: see RESULTS.md).
const SGD_BUDGET: f64 = 40_000.0;
/// Budget: F-GR step ≤ 2.05 × SGD step.
const FGR_RATIO_BUDGET: f64 = 2.05;
/// AIfES 2.2.0 on the same net (the peer to beat).
const AIFES_SGD_INSTR: u64 = 287_507;
/// The reference conv net on 8×8 digits (1,898 parameters).
const CONV_SPEC: &str = "conv:8:3:p1,relu,maxpool:2,conv:16:3:p1,relu,maxpool:2,flatten,linear";
/// Its committed default export (board builds).
const CONV_FILE: &str = "digits-conv-8-16.fdgr";
/// Budget: instructions per plain SGD step of the conv net (half of
/// F-GR's budget; AIfES's plain SGD step is 11.5× this).
const CONV_SGD_BUDGET: f64 = 300_000.0;
/// Budget: instructions per full F-GR step of the conv net (AIfES's plain
/// SGD step / 5.7).
const CONV_FGR_BUDGET: f64 = 600_000.0;
/// AIfES 2.2.0, plain SGD on the conv net, instructions per step (same
/// emulated Cortex-M4F, gcc -O2).
const AIFES_CONV_SGD_INSTR: u64 = 3_442_619;
/// AIfES 2.2.0's RAM for SGD on the conv net: full F-GR must stay below.
const AIFES_CONV_RAM: u64 = 35_048;
/// Budget: flash of the conv net's example ≤ 128 KiB. Its layer list is
/// data, so the code of every layer kind (convolution, batch norm,
/// pooling, linear) and every method is linked: about 105 KB of code,
/// plus the model (7.6 KB) and the stream (4.2 KB). Every board has room
/// (STM32F411: 512 KiB, nRF52840: 1 MiB, RP2040: 2 MiB).
const CONV_FLASH_BUDGET: u64 = 128 * 1024;
const QEMU_LIMIT: Duration = Duration::from_secs(120);

/// The hardware boards (folder, target, binary), from `Board::ALL`.
fn hardware_boards() -> impl Iterator<Item = (&'static str, &'static str, &'static str)> {
    Board::ALL
        .into_iter()
        .filter(|b| b.runner() == Runner::ProbeRs)
        .map(|b| (b.name(), b.triple(), b.package()))
}

/// The board QEMU runs (the first with a QEMU runner).
fn qemu_board() -> Board {
    Board::ALL
        .into_iter()
        .find(|b| b.runner() == Runner::Qemu)
        .unwrap_or(Board::ALL[0])
}

const M4F: &str = "thumbv7em-none-eabihf";
const V6M: &str = "thumbv6m-none-eabi";

/// One `qemu-m4` build.
#[derive(Clone, Copy)]
struct Variant {
    /// One of the firmware's methods (`fw_config::METHODS`).
    method: Method<f32>,
    /// The index of its optimizer in `fw_config::OPTIMIZER_NAMES`.
    opt: usize,
    mode: Mode,
    micromath: bool,
    /// `thumbv7em-none-eabihf` (M4F, hardware float), or
    /// `thumbv6m-none-eabi` (the RP2040's soft-float code, which the
    /// Cortex-M4 also runs).
    triple: &'static str,
    /// The conv net (built with the `conv` feature), not the MLP.
    conv: bool,
    /// Parameters the mode trains.
    trained: usize,
}

impl Variant {
    fn name(&self) -> String {
        format!(
            "{}{}{}-{}{}{}",
            if self.conv { "conv-" } else { "" },
            self.method.name(),
            if self.opt == 0 {
                String::new()
            } else {
                format!("-{}", fw_config::OPTIMIZER_NAMES[self.opt])
            },
            self.mode.to_string().replace([':', ','], "-"),
            if self.micromath { "-micromath" } else { "" },
            if self.triple == V6M { "-thumbv6m" } else { "" }
        )
    }

    /// The baseline (libm, M4F) run with the same method and mode.
    fn same_config(&self, other: &Variant) -> bool {
        self.method == other.method
            && self.mode == other.mode
            && self.opt == other.opt
            && self.conv == other.conv
    }

    /// The board crate's features of this build.
    fn features(&self) -> Vec<&'static str> {
        let mut f = vec![];
        if self.micromath {
            f.push("micromath");
        }
        if self.conv {
            f.push("conv");
        }
        f
    }
}

/// What one QEMU run measured.
struct Measured {
    v: Variant,
    elf: ElfInfo,
    stack: u64,
    fdgr_ram: u64,
    instr: Vec<u64>,
    losses: Vec<u32>,
    theta: Vec<u32>,
    /// Instructions per function over all steps (the plugin's profile).
    profile: Vec<fdgr_mcu::profile::Entry>,
}

/// The last loss as a float (NaN when there is none).
fn last(bits: &[u32]) -> f32 {
    bits.last().map_or(f32::NAN, |b| f32::from_bits(*b))
}

fn mean(x: &[u64]) -> f64 {
    x.iter().sum::<u64>() as f64 / x.len().max(1) as f64
}

/// What a board build took: the board, its target, whether it is the conv
/// net's, and the ELF's sizes.
type BoardSize = (&'static str, &'static str, bool, ElfInfo);

/// Every board's example built with the committed defaults: the MLP and
/// the conv net (`conv_file`), with their sizes.
fn board_builds(fw_dir: &Path, conv_file: &Path) -> Result<(Vec<Step>, Vec<BoardSize>), String> {
    let mut steps = vec![];
    let mut board_sizes = vec![];
    let conv_s = conv_file.display().to_string();
    for (board, triple, bin) in hardware_boards() {
        let c = fw_cargo("build", board, &[], &[]);
        steps.push(run(&format!("firmware build {board} ({triple})"), c)?);
        let elf = read(&fw_dir.join("target").join(triple).join("release").join(bin))?;
        board_sizes.push((board, triple, false, elf_info(&elf)?));
        // the conv net's example: the committed conv net, `conv` feature
        let c = fw_cargo("build", board, &[("FDGR_MODEL", &conv_s)], &["conv"]);
        steps.push(run(
            &format!("firmware build {board} ({triple}), conv net"),
            c,
        )?);
        let elf = read(&fw_dir.join("target").join(triple).join("release").join(bin))?;
        board_sizes.push((board, triple, true, elf_info(&elf)?));
    }
    Ok((steps, board_sizes))
}

/// What the cross-checks run on: the MLP and the conv net (file, bytes),
/// the sample stream, the QEMU plugin and the output folder.
struct Inputs<'a> {
    model: (&'a Path, &'a [u8]),
    conv: (&'a Path, &'a [u8]),
    stream: (&'a Path, &'a [u8]),
    plugin: &'a Path,
    out: &'a Path,
}

/// Every firmware variant built and run on QEMU, its losses and weights
/// against the host replay (bit for bit; micromath: the difference
/// reported), the host's RAM formula against the firmware's.
fn cross_checks(inputs: &Inputs<'_>) -> Result<(Vec<Step>, Vec<Measured>), String> {
    let mut steps = vec![];
    // every method the firmware offers (the kernel's every method) on the
    // MLP, then the other dimensions with one method or a few
    let every_method = fw_config::METHODS
        .iter()
        .map(|m| (m.name(), "sgd", Mode::Full, false, M4F, false));
    let variants = every_method.chain([
        ("sgd", "adam", Mode::Full, false, M4F, false),
        ("fgr", "adam", Mode::Full, false, M4F, false),
        ("fgr", "sgd", Mode::LAST_LAYER, false, M4F, false),
        ("fgr", "sgd", Mode::Full, false, V6M, false),
        ("fgr", "sgd", Mode::Full, true, M4F, false),
        // the conv net: every layer, and the head alone on the frozen
        // conv stack (read from flash)
        ("sgd", "sgd", Mode::Full, false, M4F, true),
        ("fgr", "sgd", Mode::Full, false, M4F, true),
        ("sgd", "sgd", Mode::LAST_LAYER, false, M4F, true),
        ("fgr", "sgd", Mode::LAST_LAYER, false, M4F, true),
        // sparse updates: every bias (weights in flash), the last two
        // layers with parameters
        ("fgr", "sgd", Mode::Bias, false, M4F, false),
        ("fgr", "sgd", Mode::Bias, false, M4F, true),
        ("fgr", "sgd", Mode::Last(2), false, M4F, true),
    ]);
    let mut results: Vec<Measured> = vec![];
    for (name, opt_name, mode, micromath, triple, conv) in variants {
        let (model_path, model) = if conv { inputs.conv } else { inputs.model };
        let (stream_path, stream) = inputs.stream;
        let method = fw_config::method(name)
            .ok_or_else(|| format!("the firmware configuration offers no method {name}"))?;
        let opt = fw_config::optimizer_index(opt_name)
            .ok_or_else(|| format!("the firmware configuration offers no optimizer {opt_name}"))?;
        let v = Variant {
            method,
            opt,
            mode,
            micromath,
            triple,
            conv,
            trained: fw_config::plan(model, mode)
                .map_err(|e| format!("{}: {mode}: {e}", model_path.display()))?
                .trained_params(),
        };
        let t = Instant::now();
        let m = build_and_run(v, model_path, stream_path, inputs.plugin, inputs.out)?;
        check_ram_formula(&m, model, stream.len())?;
        if micromath {
            report_micromath(&m, &results)?;
        } else {
            let (losses, theta) = replay(model, stream, method, mode, opt)?;
            compare(&m, &losses, &theta)?;
        }
        steps.push(step(
            &format!(
                "qemu-m4 {} {}",
                v.name(),
                if micromath {
                    "(difference reported)"
                } else {
                    "bit-identical to host"
                }
            ),
            t,
        ));
        results.push(m);
    }
    Ok((steps, results))
}

/// `rustfmt` and `clippy -D warnings` of the firmware workspace, for
/// every board (the benchmark and the live image; the boards' live images
/// linked), and of the QEMU plugin for `plugin_version`.
fn lints(fw_dir: &Path, plugin_version: &str) -> Result<Vec<Step>, String> {
    let mut steps = vec![];
    let mut c = Command::new(cargo_bin());
    // Packages by name: `--all` would also take in the kernel's workspace.
    c.current_dir(fw_dir).args(["fmt", "--check"]);
    c.args(["-p", "fdgr-firmware"]);
    for b in Board::ALL {
        c.args(["-p", b.package()]);
    }
    steps.push(run("rustfmt firmware-examples", c)?);
    let mut c = Command::new(cargo_bin());
    c.current_dir(fw_dir)
        .args(["fmt", "--check", "--manifest-path"])
        .arg(fw_dir.join("qemu-icount").join("Cargo.toml"));
    steps.push(run("rustfmt firmware-examples/qemu-icount", c)?);
    for board in Board::ALL.map(|b| b.name()) {
        let mut c = fw_cargo("clippy", board, &[], &[]);
        c.args(["--", "-D", "warnings"]);
        steps.push(run(&format!("clippy -D warnings {board}"), c)?);
        // the live image: the link, the flash store and the board's drivers
        let mut c = fw_cargo("clippy", board, &[], &["live"]);
        c.args(["--", "-D", "warnings"]);
        steps.push(run(&format!("clippy -D warnings {board} (live)"), c)?);
        if board != "qemu-m4" {
            // linked too: the board's UART and flash drivers, its STORE
            let c = fw_cargo("build", board, &[], &["live"]);
            steps.push(run(&format!("build {board} (live image)"), c)?);
        }
    }
    let mut c = Command::new(cargo_bin());
    c.args(["clippy", "--release", "--manifest-path"])
        .arg(fw_dir.join("qemu-icount").join("Cargo.toml"))
        .arg("--target-dir")
        .arg(fw_dir.join("target").join("host"))
        .args(["--", "-D", "warnings"])
        .env("FDGR_QEMU_PLUGIN_VERSION", plugin_version);
    steps.push(run("clippy -D warnings qemu-icount", c)?);
    Ok(steps)
}

/// The two models the firmware checks cross-check, each file and its
/// bytes, with their parameter counts.
struct Trained {
    model_path: PathBuf,
    model: Vec<u8>,
    p: u64,
    conv_path: PathBuf,
    conv_model: Vec<u8>,
    conv_p: u64,
}

/// The MLP and the conv net, trained and exported by the real CLI (or the
/// files `FDGR_FIRMWARE_MODEL` / `FDGR_FIRMWARE_CONV_MODEL` name).
fn trained(out: &Path) -> Result<(Trained, Vec<Step>), String> {
    let mut steps = vec![];
    // The model, from the real CLI (or a given exported file).
    let model_path = match std::env::var_os("FDGR_FIRMWARE_MODEL") {
        Some(p) if !p.is_empty() => {
            let p = PathBuf::from(p);
            println!(
                "FDGR_FIRMWARE_MODEL: cross-checking {} instead of training a model",
                p.display()
            );
            p
        }
        _ => {
            let (p, s) = train_and_export(out, &MLP_RUN)?;
            steps.extend(s);
            p
        }
    };
    let model = read(&model_path)?;
    let shape = fdgr_kernel::export::decode_shape(&model)
        .map_err(|e| format!("{}: {e}", model_path.display()))?;
    let p = shape.param_count() as u64;
    println!(
        "model {shape} ({p} parameters) from {}",
        model_path.display()
    );
    // The conv net, from the real CLI too (or a given exported file).
    let conv_path = match std::env::var_os("FDGR_FIRMWARE_CONV_MODEL") {
        Some(c) if !c.is_empty() => PathBuf::from(c),
        _ => {
            let (c, s) = train_and_export(out, &CONV_RUN)?;
            steps.extend(s);
            c
        }
    };
    let conv_model = read(&conv_path)?;
    let conv_p = fw_config::plan(&conv_model, Mode::Full)
        .map_err(|e| format!("{}: {e}", conv_path.display()))?
        .params() as u64;
    println!(
        "conv net {CONV_SPEC} ({conv_p} parameters) from {}",
        conv_path.display()
    );

    Ok((
        Trained {
            model_path,
            model,
            p,
            conv_path,
            conv_model,
            conv_p,
        },
        steps,
    ))
}

/// Compares the stream and models with the committed defaults the board
/// builds use (`FDGR_UPDATE_MODELS=1` refreshes them first): a stream
/// that differs is an error, a model that differs a note. Returns the
/// committed conv net's path.
fn check_committed(
    fw_dir: &Path,
    stream: &[u8],
    model: &[u8],
    conv_model: &[u8],
) -> Result<PathBuf, String> {
    let committed_stream = fw_dir.join("models").join("digits-stream.bin");
    let committed_model = fw_dir.join("models").join("digits-64-32-10.fdgr");
    let committed_conv = fw_dir.join("models").join(CONV_FILE);
    if std::env::var("FDGR_UPDATE_MODELS").as_deref() == Ok("1") {
        write(&committed_stream, stream)?;
        write(&committed_model, model)?;
        write(&committed_conv, conv_model)?;
        println!("FDGR_UPDATE_MODELS=1: updated the committed default models and stream");
    }
    if read(&committed_conv)? != conv_model {
        println!(
            "note: the committed conv net {} differs from the one cross-checked here \
             (board builds use the committed one; refresh it with FDGR_UPDATE_MODELS=1)",
            committed_conv.display()
        );
    }
    if read(&committed_stream)? != stream {
        return Err(format!(
            "{} differs from `fdgr samples --data digits --split test --count {STREAM_SAMPLES}` \
             (regenerate with FDGR_UPDATE_MODELS=1)",
            committed_stream.display()
        ));
    }
    if read(&committed_model)? != model {
        println!(
            "note: the committed default model {} differs from the one cross-checked here \
             (board builds use the committed one; refresh it with FDGR_UPDATE_MODELS=1)",
            committed_model.display()
        );
    }

    Ok(committed_conv)
}

/// The firmware checks of `cargo xtask test`.
pub fn steps() -> Result<Vec<Step>, String> {
    println!("\n== firmware ==");
    let t0 = Instant::now();
    let mut steps = vec![];
    let fw_dir = fw::fw_dir();
    let out = fw::out_dir();
    std::fs::create_dir_all(&out).map_err(|e| format!("{}: {e}", out.display()))?;

    let t = Instant::now();
    fw::ensure_qemu()?;
    let (qmaj, qmin) = qemu_version()?;
    println!("qemu-system-arm {qmaj}.{qmin}");
    steps.push(step("qemu-system-arm present", t));

    let (
        Trained {
            model_path,
            model,
            p,
            conv_path,
            conv_model,
            conv_p,
        },
        s,
    ) = trained(&out)?;
    steps.extend(s);
    // The stream: held-out digits (the test split the model was not trained
    // on), written by `fdgr samples`; the committed default must match.
    let stream_path = out.join("digits-stream.bin");
    steps.push(samples(&stream_path)?);
    let stream = read(&stream_path)?;
    let committed_conv = check_committed(&fw_dir, &stream, &model, &conv_model)?;
    // The instruction-counting plugin, built for the API version this QEMU
    // loads.
    let (plugin, plugin_version, s) = build_plugin(qmaj)?;
    steps.extend(s);

    // Formatting and lints of the firmware workspace, per target.
    steps.extend(lints(&fw_dir, &plugin_version)?);

    // Board examples, with the committed defaults.
    let (s, board_sizes) = board_builds(&fw_dir, &committed_conv)?;
    steps.extend(s);

    // The cross-checks.
    let inputs = Inputs {
        model: (&model_path, &model),
        conv: (&conv_path, &conv_model),
        stream: (&stream_path, &stream),
        plugin: &plugin,
        out: &out,
    };
    let (s, results) = cross_checks(&inputs)?;
    steps.extend(s);

    // The user's path: `fdgr device run` and `fdgr device verify`.
    steps.extend(device_cli(&out, &model)?);
    steps.extend(live::device_live(&out)?);
    steps.extend(device_cli_conv(&out)?);

    // Failures must exit with 1, not hang.
    for fault in ["panic", "hardfault"] {
        let t = Instant::now();
        check_fault(fault, &model_path, &stream_path)?;
        steps.push(step(&format!("qemu-m4 exits 1 on {fault}"), t));
    }

    let table = results_table(&results, &board_sizes, p, conv_p, (qmaj, qmin))?;
    println!("\n{table}");
    write(&out.join("RESULTS.md"), table.as_bytes())?;
    for r in results
        .iter()
        .filter(|r| !r.v.micromath && r.v.triple == M4F && r.v.opt == 0 && r.v.mode == Mode::Full)
    {
        if matches!(r.v.method.name(), "sgd" | "fgr") {
            println!(
                "instructions per function, qemu-m4 {} (per step):\n{}",
                r.v.name(),
                fdgr_mcu::profile::table(&r.profile, STREAM_SAMPLES)
            );
        }
    }
    check_budgets(&results, &board_sizes, p)?;
    println!(
        "firmware checks passed in {:.0} s",
        t0.elapsed().as_secs_f64()
    );
    Ok(steps)
}

/// `cargo xtask firmware`.
pub fn check() -> Result<(), String> {
    let steps = steps()?;
    println!("\n== summary ==");
    for s in &steps {
        println!("  ok  {:<50} {:>7.1} s", s.name, s.seconds);
    }
    Ok(())
}

/// `cargo xtask fw-profile [--method M] [--mode full|last] [--opt sgd|adam]
/// [--model FILE.fdgr] [--stream FILE]`: one `qemu-m4` build under QEMU
/// (default: the committed model and stream, F-GR, all parameters, SGD),
/// checked bit for bit against the host's replay, with its instructions
/// per step and per function (the plugin's profile mapped to the ELF's
/// symbols).
pub fn profile(args: &[String]) -> Result<(), String> {
    let fw_dir = fw::fw_dir();
    let out = fw::out_dir();
    std::fs::create_dir_all(&out).map_err(|e| format!("{}: {e}", out.display()))?;
    let mut method = "fgr".to_string();
    let mut mode = "full".to_string();
    let mut opt = "sgd".to_string();
    let mut model_path = fw_dir.join("models").join("digits-64-32-10.fdgr");
    let mut stream_path = fw_dir.join("models").join("digits-stream.bin");
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let v = it.next().ok_or_else(|| format!("{a} needs a value"))?;
        match a.as_str() {
            "--method" => method = v.clone(),
            "--mode" => mode = v.clone(),
            "--opt" => opt = v.clone(),
            "--model" => model_path = PathBuf::from(v),
            "--stream" => stream_path = PathBuf::from(v),
            _ => return Err(format!("fw-profile: unknown flag {a}")),
        }
    }
    let mode = fw_config::parse_mode(&mode).ok_or_else(|| format!("no mode {mode}"))?;
    let planned = fw_config::plan(&read(&model_path)?, mode)
        .map_err(|e| format!("{}: {e}", model_path.display()))?;
    let (conv, trained) = (planned.uses_conv(), planned.trained_params());
    let v = Variant {
        method: fw_config::method(&method).ok_or_else(|| format!("no method {method}"))?,
        opt: fw_config::optimizer_index(&opt).ok_or_else(|| format!("no optimizer {opt}"))?,
        mode,
        micromath: false,
        triple: M4F,
        conv,
        trained,
    };
    fw::ensure_qemu()?;
    let (qmaj, _) = qemu_version()?;
    let (plugin, _, _) = build_plugin(qmaj)?;
    let m = build_and_run(v, &model_path, &stream_path, &plugin, &out)?;
    let (model, stream) = (read(&model_path)?, read(&stream_path)?);
    let (losses, theta) = replay(&model, &stream, v.method, v.mode, v.opt)?;
    compare(&m, &losses, &theta)?;
    println!(
        "\n{}: {:.0} instructions per step, static RAM {} B, stack {} B, flash {} B\n",
        v.name(),
        mean(&m.instr),
        m.elf.ram,
        m.stack,
        m.elf.flash
    );
    println!("{}", fdgr_mcu::profile::table(&m.profile, STREAM_SAMPLES));
    Ok(())
}

fn step(name: &str, t: Instant) -> Step {
    Step {
        name: name.to_string(),
        seconds: t.elapsed().as_secs_f64(),
    }
}

fn write(p: &Path, bytes: &[u8]) -> Result<(), String> {
    std::fs::write(p, bytes).map_err(|e| format!("{}: {e}", p.display()))
}

fn cargo_bin() -> String {
    fdgr_mcu::board::cargo_bin()
}

/// `cargo <sub> --release` in a board's folder
/// ([`fdgr_mcu::board::cargo`]).
fn fw_cargo(sub: &str, board: &str, vars: &[(&str, &str)], features: &[&str]) -> Command {
    fdgr_mcu::board::cargo(&fw::fw_dir(), sub, board, vars, features)
}

/// Builds the plugin and checks that QEMU loads it
/// ([`fdgr_mcu::qemu::build_plugin`]).
fn build_plugin(qemu_major: u32) -> Result<(PathBuf, String, Vec<Step>), String> {
    let mut steps = vec![];
    let plugin = fdgr_mcu::qemu::build_plugin(&fw::fw_dir(), qemu_major, &mut |name, c| {
        steps.push(run(name, c)?);
        Ok(())
    })?;
    for (v, why) in &plugin.refused {
        println!("QEMU refuses the plugin with API version {v}: {why}");
    }
    println!("QEMU loads the plugin with API version {}", plugin.version);
    Ok((plugin.path, plugin.version, steps))
}

/// `fdgr samples`: the first test-split digits as the device's stream.
fn samples(path: &Path) -> Result<Step, String> {
    let _ = std::fs::remove_file(path);
    let n = STREAM_SAMPLES.to_string();
    let p = path.display().to_string();
    let c = cargo(&[
        "run",
        "--release",
        "-p",
        "fdgr",
        "--",
        "samples",
        "--data",
        "digits",
        "--split",
        "test",
        "--count",
        &n,
        "--out",
        &p,
    ]);
    run("fdgr samples (digits test split)", c)
}

/// Writes a variant's decoded log to `qemu-m4-NAME.log` and prints it
/// without the per-step and per-weight lines, with QEMU's standard error.
fn show_log(
    v: &Variant,
    out: &Path,
    lines: &[fdgr_mcu::log::LogLine],
    stderr: &[u8],
) -> Result<(), String> {
    let mut log = String::new();
    for l in lines {
        let _ = writeln!(log, "{:<5} {}", l.level, l.text);
    }
    write(
        &out.join(format!("qemu-m4-{}.log", v.name())),
        log.as_bytes(),
    )?;
    // The per-step and per-weight lines go to the log file only.
    for l in lines.iter().filter(|l| !l.is_bulky()) {
        println!("  {:<5} {}", l.level, l.text);
    }
    let stderr = String::from_utf8_lossy(stderr);
    if !stderr.trim().is_empty() {
        println!("  (stderr) {}", stderr.trim());
    }
    Ok(())
}

/// Instructions per function of a variant's steps, from the QEMU plugin's
/// profile `prof` and the ELF's symbols, also written as
/// `qemu-m4-NAME.profile.md`.
fn profile_table(
    v: &Variant,
    elf: &[u8],
    prof: &Path,
    out: &Path,
) -> Result<Vec<fdgr_mcu::profile::Entry>, String> {
    let prof_text =
        std::fs::read_to_string(prof).map_err(|e| format!("{}: {e}", prof.display()))?;
    let profile = fdgr_mcu::profile::per_function(elf, &fdgr_mcu::profile::parse(&prof_text)?)?;
    write(
        &out.join(format!("qemu-m4-{}.profile.md", v.name())),
        fdgr_mcu::profile::table(&profile, STREAM_SAMPLES).as_bytes(),
    )?;
    Ok(profile)
}

fn build_and_run(
    v: Variant,
    model: &Path,
    stream: &Path,
    plugin: &Path,
    out: &Path,
) -> Result<Measured, String> {
    let fw_dir = fw::fw_dir();
    let model_s = model.display().to_string();
    let stream_s = stream.display().to_string();
    let mode_s = v.mode.to_string();
    let mut c = fw_cargo(
        "build",
        "qemu-m4",
        &[
            ("FDGR_MODEL", &model_s),
            ("FDGR_STREAM", &stream_s),
            ("FDGR_METHOD", v.method.name()),
            ("FDGR_OPT", fw_config::OPTIMIZER_NAMES[v.opt]),
            ("FDGR_MODE", &mode_s),
        ],
        &v.features(),
    );
    c.args(["--target", v.triple]);
    run(&format!("firmware build qemu-m4 {}", v.name()), c)?;
    let built = fw_dir
        .join("target")
        .join(v.triple)
        .join("release")
        .join("fdgr-qemu-m4");
    let elf_path = out.join(format!("qemu-m4-{}.elf", v.name()));
    std::fs::copy(&built, &elf_path).map_err(|e| format!("{}: {e}", built.display()))?;
    let elf = read(&elf_path)?;
    let info = elf_info(&elf)?;
    let marker = info.marker.ok_or("fdgr_mark not found in the ELF")?;
    let counts = out.join(format!("qemu-m4-{}.counts", v.name()));
    let prof = out.join(format!("qemu-m4-{}.profile", v.name()));
    let _ = std::fs::remove_file(&counts);
    let _ = std::fs::remove_file(&prof);
    let mut q = qemu_m4();
    q.arg("-kernel").arg(&elf_path).arg("-plugin").arg(format!(
        "{},marker={marker:#x},out={},profile={}",
        plugin.display(),
        counts.display(),
        prof.display()
    ));
    println!("\n== qemu-m4 {} under QEMU ==", v.name());
    let r = run_limited(q, QEMU_LIMIT)?;
    let lines = decode_defmt(&elf, &r.stdout)?;
    show_log(&v, out, &lines, &r.stderr)?;
    if r.code != Some(0) {
        return Err(format!(
            "qemu-m4 {} exited with {:?} (log: {})",
            v.name(),
            r.code,
            out.join(format!("qemu-m4-{}.log", v.name())).display()
        ));
    }
    let d = parse_log(&lines)?;
    if !d.done || !d.errors.is_empty() {
        return Err(format!(
            "qemu-m4 {}: no `fdgr done`, or errors: {:?}",
            v.name(),
            d.errors
        ));
    }
    d.check_whole(STREAM_SAMPLES, None)
        .map_err(|e| format!("qemu-m4 {}: {e}", v.name()))?;
    let counts = std::fs::read_to_string(&counts)
        .map_err(|e| format!("{}: {e} (did the QEMU plugin load?)", counts.display()))?;
    let instr = step_instructions(&counts, STREAM_SAMPLES)?;
    let profile = profile_table(&v, &elf, &prof, out)?;
    println!(
        "  {} steps in {:.2} s of QEMU; {:.0} guest instructions per step (min {}, max {})",
        d.losses.len(),
        r.seconds,
        mean(&instr),
        instr.iter().min().copied().unwrap_or(0),
        instr.iter().max().copied().unwrap_or(0)
    );
    Ok(Measured {
        v,
        elf: info,
        stack: d.stack_peak.ok_or("no stack peak logged")?,
        fdgr_ram: d.fdgr_ram.ok_or("no RAM budget logged")?,
        instr,
        losses: d.losses,
        theta: d.theta,
        profile,
    })
}

fn compare(m: &Measured, losses: &[u32], theta: &[u32]) -> Result<(), String> {
    let name = m.v.name();
    let c = fdgr_mcu::replay::compare(&m.losses, &m.theta, losses, theta)
        .map_err(|e| format!("{name}: {e}"))?;
    if !c.identical() {
        return Err(format!("{name}: {c}"));
    }
    println!(
        "  bit-identical to the host: {} losses (last {}) and {} weights (fnv1a {:#010x})",
        losses.len(),
        last(losses),
        theta.len(),
        fnv1a_bits(theta)
    );
    Ok(())
}

/// The host's RAM formula (what `fdgr device run` checks a board with
/// before building) against the firmware's own sum of its buffers: equal
/// but for the fine-tuner, which the host bounds by `tuner_bytes_max`.
fn check_ram_formula(m: &Measured, model: &[u8], stream: usize) -> Result<(), String> {
    let models = fw_config::plan(model, m.v.mode).map_err(|e| e.to_string())?;
    let e = fdgr_mcu::memory::estimate(&models, m.v.method, m.v.opt, stream, qemu_board());
    let d = models.inputs();
    let slack = fw_config::tuner_bytes_max(d) - fw_config::RING * (d + 1);
    let host = e.fdgr.total as u64;
    if m.fdgr_ram > host || host - m.fdgr_ram > slack as u64 {
        return Err(format!(
            "qemu-m4 {}: the firmware's buffers take {} B, the host's formula gives {host} B \
             (expected equal up to the fine-tuner's bound, {slack} B)",
            m.v.name(),
            m.fdgr_ram
        ));
    }
    println!(
        "  RAM formula: {host} B (fine-tuner at its bound) for the firmware's {} B",
        m.fdgr_ram
    );
    Ok(())
}

/// The micromath build against the libm one (which equals the host).
fn report_micromath(m: &Measured, done: &[Measured]) -> Result<(), String> {
    let base = done
        .iter()
        .find(|r| r.v.same_config(&m.v) && !r.v.micromath && r.v.triple == M4F)
        .ok_or("micromath needs the libm run first")?;
    let diff = |a: &[u32], b: &[u32]| -> (usize, f64, f64) {
        let mut same = 0;
        let (mut max_abs, mut max_rel) = (0.0f64, 0.0f64);
        for (x, y) in a.iter().zip(b) {
            let (x, y) = (f32::from_bits(*x) as f64, f32::from_bits(*y) as f64);
            if x.to_bits() == y.to_bits() {
                same += 1;
            }
            max_abs = max_abs.max((x - y).abs());
            max_rel = max_rel.max((x - y).abs() / y.abs().max(1e-30));
        }
        (same, max_abs, max_rel)
    };
    let (ls, la, lr) = diff(&m.losses, &base.losses);
    let (ts, ta, _) = diff(&m.theta, &base.theta);
    println!(
        "  micromath vs libm (= host): {ls}/{} losses bit-equal, max |Δloss| {la:.3e} (relative {lr:.3e}); \
         {ts}/{} weights bit-equal, max |Δθ| {ta:.3e}; last loss {} vs {}",
        m.losses.len(),
        m.theta.len(),
        last(&m.losses),
        last(&base.losses),
    );
    Ok(())
}

fn check_fault(fault: &str, model: &Path, stream: &Path) -> Result<(), String> {
    let fw_dir = fw::fw_dir();
    let (ms, ss) = (model.display().to_string(), stream.display().to_string());
    let c = fw_cargo(
        "build",
        "qemu-m4",
        &[
            ("FDGR_MODEL", &ms),
            ("FDGR_STREAM", &ss),
            ("FDGR_FAULT", fault),
        ],
        &[],
    );
    run(&format!("firmware build qemu-m4 (FDGR_FAULT={fault})"), c)?;
    let elf = fw_dir
        .join("target")
        .join("thumbv7em-none-eabihf")
        .join("release")
        .join("fdgr-qemu-m4");
    let mut q = qemu_m4();
    q.arg("-kernel").arg(&elf);
    let r = run_limited(q, Duration::from_secs(30))?;
    let stderr = String::from_utf8_lossy(&r.stderr);
    println!("  exit {:?}, stderr: {}", r.code, stderr.trim());
    let want = if fault == "panic" {
        "panic"
    } else {
        "HardFault"
    };
    if r.code != Some(1) || !stderr.contains(want) {
        return Err(format!(
            "FDGR_FAULT={fault}: expected exit status 1 and `{want}` on stderr, got {:?}",
            r.code
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn measured(losses: Vec<u32>, theta: Vec<u32>) -> Measured {
        Measured {
            v: Variant {
                method: fw_config::METHODS[1], // fgr
                opt: 0,
                mode: Mode::Full,
                micromath: false,
                triple: M4F,
                conv: false,
                trained: 2410,
            },
            elf: ElfInfo {
                flash: 0,
                ram: 0,
                marker: None,
            },
            stack: 0,
            fdgr_ram: 0,
            instr: vec![],
            losses,
            theta,
            profile: vec![],
        }
    }

    #[test]
    fn compare_is_bitwise() {
        let m = measured(vec![1, 2], vec![3, 4, 5]);
        assert!(compare(&m, &[1, 2], &[3, 4, 5]).is_ok());
        // One bit anywhere, or a missing value, fails.
        assert!(compare(&m, &[1, 3], &[3, 4, 5]).is_err());
        assert!(compare(&m, &[1, 2], &[3, 4, 4]).is_err());
        assert!(compare(&m, &[1, 2], &[3, 4]).is_err());
        // +0 and −0 are equal floats but different bits.
        let z = measured(vec![0x8000_0000], vec![]);
        assert!(compare(&z, &[0], &[]).is_err());
    }
}
