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

use fdgr_device::board::Board;
use fdgr_device::elf::{elf_info, ElfInfo};
use fdgr_device::fw_config;
use fdgr_device::log::{decode_defmt, parse_log};
use fdgr_device::process::run_limited;
use fdgr_device::qemu::{qemu_m4, qemu_version, step_instructions};
use fdgr_device::read;
use fdgr_device::replay::{fnv1a_bits, replay};

use crate::fw_util as fw;
use crate::util::{cargo, run, Step};

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

const BOARDS: [(&str, &str, &str); 3] = [
    ("stm32f4", "thumbv7em-none-eabihf", "fdgr-stm32f4"),
    ("nrf52840", "thumbv7em-none-eabihf", "fdgr-nrf52840"),
    ("rp2040", "thumbv6m-none-eabi", "fdgr-rp2040"),
];

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
    profile: Vec<fdgr_device::profile::Entry>,
}

/// The last loss as a float (NaN when there is none).
fn last(bits: &[u32]) -> f32 {
    bits.last().map_or(f32::NAN, |b| f32::from_bits(*b))
}

fn mean(x: &[u64]) -> f64 {
    x.iter().sum::<u64>() as f64 / x.len().max(1) as f64
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
            let (p, s) = train_and_export(&out, &MLP_RUN)?;
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
            let (c, s) = train_and_export(&out, &CONV_RUN)?;
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

    // The stream: held-out digits (the test split the model was not trained
    // on), written by `fdgr samples`; the committed default must match.
    let stream_path = out.join("digits-stream.bin");
    steps.push(samples(&stream_path)?);
    let stream = read(&stream_path)?;
    let committed_stream = fw_dir.join("models").join("digits-stream.bin");
    let committed_model = fw_dir.join("models").join("digits-64-32-10.fdgr");
    let committed_conv = fw_dir.join("models").join(CONV_FILE);
    if std::env::var("FDGR_UPDATE_MODELS").as_deref() == Ok("1") {
        write(&committed_stream, &stream)?;
        write(&committed_model, &model)?;
        write(&committed_conv, &conv_model)?;
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

    // The instruction-counting plugin, built for the API version this QEMU
    // loads.
    let (plugin, plugin_version, s) = build_plugin(qmaj)?;
    steps.extend(s);

    // Formatting and lints of the firmware workspace, per target.
    let mut c = Command::new(cargo_bin());
    // Packages by name: `--all` would also take in the kernel's workspace.
    c.current_dir(&fw_dir).args(["fmt", "--check"]);
    for p in [
        "fdgr-firmware",
        "fdgr-qemu-m4",
        "fdgr-stm32f4",
        "fdgr-nrf52840",
        "fdgr-rp2040",
    ] {
        c.args(["-p", p]);
    }
    steps.push(run("rustfmt firmware-examples", c)?);
    let mut c = Command::new(cargo_bin());
    c.current_dir(&fw_dir)
        .args(["fmt", "--check", "--manifest-path"])
        .arg(fw_dir.join("qemu-icount").join("Cargo.toml"));
    steps.push(run("rustfmt firmware-examples/qemu-icount", c)?);
    for board in ["qemu-m4", "stm32f4", "nrf52840", "rp2040"] {
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
        .env("FDGR_QEMU_PLUGIN_VERSION", &plugin_version);
    steps.push(run("clippy -D warnings qemu-icount", c)?);

    // Board examples, with the committed defaults.
    let mut board_sizes = vec![];
    let conv_s = committed_conv.display().to_string();
    for (board, triple, bin) in BOARDS {
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

    // The cross-checks.
    let variants = [
        ("sgd", "sgd", Mode::Full, false, M4F, false),
        ("fgr", "sgd", Mode::Full, false, M4F, false),
        ("db", "sgd", Mode::Full, false, M4F, false),
        ("sam", "sgd", Mode::Full, false, M4F, false),
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
    ];
    let mut results: Vec<Measured> = vec![];
    for (name, opt_name, mode, micromath, triple, conv) in variants {
        let (model_path, model) = if conv {
            (&conv_path, &conv_model)
        } else {
            (&model_path, &model)
        };
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
        let m = build_and_run(v, model_path, &stream_path, &plugin, &out)?;
        check_ram_formula(&m, model, stream.len())?;
        if micromath {
            report_micromath(&m, &results)?;
        } else {
            let (losses, theta) = replay(model, &stream, method, mode, opt)?;
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

    // The user's path: `fdgr device run` and `fdgr device verify`.
    steps.extend(device_cli(&out, &model)?);
    steps.extend(crate::live::device_live(&out)?);
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
                fdgr_device::profile::table(&r.profile, STREAM_SAMPLES)
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
    println!(
        "{}",
        fdgr_device::profile::table(&m.profile, STREAM_SAMPLES)
    );
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
    fdgr_device::board::cargo_bin()
}

/// `cargo <sub> --release` in a board's folder
/// ([`fdgr_device::board::cargo`]).
fn fw_cargo(sub: &str, board: &str, vars: &[(&str, &str)], features: &[&str]) -> Command {
    fdgr_device::board::cargo(&fw::fw_dir(), sub, board, vars, features)
}

/// Builds the plugin and checks that QEMU loads it
/// ([`fdgr_device::qemu::build_plugin`]).
fn build_plugin(qemu_major: u32) -> Result<(PathBuf, String, Vec<Step>), String> {
    let mut steps = vec![];
    let plugin = fdgr_device::qemu::build_plugin(&fw::fw_dir(), qemu_major, &mut |name, c| {
        steps.push(run(name, c)?);
        Ok(())
    })?;
    for (v, why) in &plugin.refused {
        println!("QEMU refuses the plugin with API version {v}: {why}");
    }
    println!("QEMU loads the plugin with API version {}", plugin.version);
    Ok((plugin.path, plugin.version, steps))
}

/// The chip each probe-rs board's runner names (its `.cargo/config.toml`).
const CHIPS: [(Board, &str); 3] = [
    (Board::Stm32f4, "STM32F411RETx"),
    (Board::Nrf52840, "nRF52840_xxAA"),
    (Board::Rp2040, "RP2040"),
];

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
fn device_cli(out: &Path, model: &[u8]) -> Result<Vec<Step>, String> {
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
    let t = Instant::now();
    run(
        "fdgr device run --board qemu-m4 --verify",
        fdgr_device(&["run", "--board", "qemu-m4", "--from", &ck, "--verify"]),
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
        fdgr_device(&["verify", "--from", &ck, "--board", "qemu-m4"]),
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

    // The boards, up to the flashing command.
    let fake = out.join("fake-bin");
    std::fs::create_dir_all(&fake).map_err(|e| format!("{}: {e}", fake.display()))?;
    let probe_rs = fake.join("probe-rs");
    write(&probe_rs, FAKE_PROBE_RS.as_bytes())?;
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&probe_rs, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| format!("{}: {e}", probe_rs.display()))?;
    }
    let path = std::env::join_paths(std::iter::once(fake.clone()).chain(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    )))
    .map_err(|e| e.to_string())?;
    let qemu_log = dev.join("device.log");
    for (board, chip) in CHIPS {
        let t = Instant::now();
        let record = out.join(format!("fake-probe-rs-{board}.txt"));
        let _ = std::fs::remove_file(&record);
        let mut c = fdgr_device(&["run", "--board", board.name(), "--from", &ck, "--verify"]);
        c.env("PATH", &path)
            .env("FDGR_FAKE_RECORD", &record)
            .env("FDGR_FAKE_LOG", &qemu_log);
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
            fdgr_device::log::PROBE_RS_LOG_FORMAT
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
    // A device that stops early: exit 1, and the previous results stay whole.
    let before = read(&ckpt.join("device-stm32f4").join("summary.json"))?;
    let mut c = fdgr_device(&["run", "--board", "stm32f4", "--from", &ck]);
    c.env("PATH", &path)
        .env("FDGR_FAKE_RECORD", out.join("fake-probe-rs-silent.txt"))
        .env("FDGR_FAKE_LOG", "");
    let st = c.status().map_err(|e| e.to_string())?;
    let leftovers: Vec<String> = std::fs::read_dir(&ckpt)
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
    Ok(steps)
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

/// A net the firmware checks fine-tune: pre-trained on digits with the
/// CLI and exported, as `models/README.md` says.
pub(crate) struct Pretrained {
    /// Checkpoint directory under the output directory.
    pub(crate) ckpt: &'static str,
    /// Exported weight file under the output directory.
    pub(crate) file: &'static str,
    /// `fdgr train` flags besides `--out`.
    train: &'static [&'static str],
    /// Step names of the training and the export.
    steps: (&'static str, &'static str),
}

/// The 64-32-10 MLP.
pub(crate) const MLP_RUN: Pretrained = Pretrained {
    ckpt: "digits-64-32-10-ckpt",
    file: "digits-64-32-10.fdgr",
    train: &[
        "--data", "digits", "--model", "64-32-10", "--act", "tanh", "--method", "fgr", "--gamma",
        "0.01", "--eps", "0.1", "--epochs", "30", "--batch", "32", "--lr", "0.1", "--seed", "1",
    ],
    steps: ("fdgr train (digits 64-32-10 tanh, F-GR)", "fdgr export"),
};

/// The reference conv net.
pub(crate) const CONV_RUN: Pretrained = Pretrained {
    ckpt: "digits-conv-ckpt",
    file: CONV_FILE,
    train: &[
        "--data", "digits", "--model", CONV_SPEC, "--method", "fgr", "--gamma", "0.01", "--eps",
        "0.1", "--epochs", "15", "--batch", "32", "--lr", "0.05", "--seed", "1",
    ],
    steps: (
        "fdgr train (digits conv net, F-GR)",
        "fdgr export (conv net)",
    ),
};

/// The `dscnn` preset on 28×28 MNIST (one epoch: what is checked is that
/// a real-sized depthwise-separable net builds for the boards and learns
/// bit for bit on the device, not its accuracy).
pub(crate) const DSCNN_RUN: Pretrained = Pretrained {
    ckpt: "mnist5k-dscnn-ckpt",
    file: "mnist5k-dscnn.fdgr",
    train: &[
        "--data", "mnist5k", "--model", "dscnn", "--method", "sgd", "--epochs", "1", "--lr", "0.1",
        "--seed", "1",
    ],
    steps: (
        "fdgr train (mnist5k 28x28 dscnn, 1 epoch)",
        "fdgr export (dscnn)",
    ),
};

/// A residual net with batch norm (ResNet basic blocks, one with a
/// projection shortcut): folded into a layer list with residual joins for
/// the device.
pub(crate) const RESIDUAL_RUN: Pretrained = Pretrained {
    ckpt: "digits-residual-ckpt",
    file: "digits-residual.fdgr",
    train: &[
        "--data",
        "digits",
        "--model",
        "conv:8:3:p1,bn,relu,block:8,block:16:s2,gap,linear",
        "--epochs",
        "2",
        "--seed",
        "1",
    ],
    steps: (
        "fdgr train (digits residual net with batch norm)",
        "fdgr export (residual net, folded)",
    ),
};

/// A CIFAR-style ResNet on the 8×8 digits: `resnet14`, 34 layers once
/// its batch norms are folded (more than the 24 a firmware planned with
/// at first), fine-tuned in bias mode.
pub(crate) const RESNET_RUN: Pretrained = Pretrained {
    ckpt: "digits-resnet14-ckpt",
    file: "digits-resnet14.fdgr",
    train: &[
        "--data", "digits", "--model", "resnet14", "--epochs", "1", "--seed", "1",
    ],
    steps: (
        "fdgr train (digits resnet14, 1 epoch)",
        "fdgr export (resnet14, folded)",
    ),
};

/// `fdgr train` and `fdgr export` of `net` into `out`.
pub(crate) fn train_and_export(
    out: &Path,
    net: &Pretrained,
) -> Result<(PathBuf, Vec<Step>), String> {
    let ckpt = out.join(net.ckpt);
    let model = out.join(net.file);
    // Stale outputs must not pass for fresh ones.
    let _ = std::fs::remove_dir_all(&ckpt);
    let _ = std::fs::remove_file(&model);
    let (ckpt_s, model_s) = (ckpt.display().to_string(), model.display().to_string());
    let mut steps = vec![];
    let mut train = vec!["run", "--release", "-p", "fdgr", "--", "train"];
    train.extend_from_slice(net.train);
    train.extend(["--out", &ckpt_s]);
    steps.push(run(net.steps.0, cargo(&train))?);
    let export = cargo(&[
        "run",
        "--release",
        "-p",
        "fdgr",
        "--",
        "export",
        "--ckpt",
        &ckpt_s,
        "--out",
        &model_s,
    ]);
    steps.push(run(net.steps.1, export)?);
    if !model.is_file() {
        return Err(format!(
            "`fdgr export` did not write {} (is the fdgr CLI complete?)",
            model.display()
        ));
    }
    Ok((model, steps))
}

/// `fdgr device run --board qemu-m4 --verify` on the conv net's run, in
/// both modes (every layer; the head on the frozen conv stack).
fn device_cli_conv(out: &Path) -> Result<Vec<Step>, String> {
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
    let mut log = String::new();
    for l in &lines {
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
    let stderr = String::from_utf8_lossy(&r.stderr);
    if !stderr.trim().is_empty() {
        println!("  (stderr) {}", stderr.trim());
    }
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
    if d.losses.len() != STREAM_SAMPLES {
        return Err(format!(
            "qemu-m4 {}: {} losses logged, expected {STREAM_SAMPLES}",
            v.name(),
            d.losses.len()
        ));
    }
    if d.hash != Some(fnv1a_bits(&d.theta)) {
        return Err(format!(
            "qemu-m4 {}: the logged weights do not match the device's hash",
            v.name()
        ));
    }
    let counts = std::fs::read_to_string(&counts)
        .map_err(|e| format!("{}: {e} (did the QEMU plugin load?)", counts.display()))?;
    let instr = step_instructions(&counts, STREAM_SAMPLES)?;
    let prof_text =
        std::fs::read_to_string(&prof).map_err(|e| format!("{}: {e}", prof.display()))?;
    let profile =
        fdgr_device::profile::per_function(&elf, &fdgr_device::profile::parse(&prof_text)?)?;
    write(
        &out.join(format!("qemu-m4-{}.profile.md", v.name())),
        fdgr_device::profile::table(&profile, STREAM_SAMPLES).as_bytes(),
    )?;
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
    let c = fdgr_device::replay::compare(&m.losses, &m.theta, losses, theta)
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
    let e = fdgr_device::memory::estimate(
        &models,
        m.v.method,
        m.v.opt,
        stream,
        fdgr_device::board::Board::QemuM4,
    );
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

/// Whether `r` is the M4F, libm, all-parameter, plain-SGD run of
/// `method` on the MLP (`conv`: on the conv net).
fn is_base_of(r: &Measured, method: &str, conv: bool) -> bool {
    r.v.method.name() == method
        && r.v.opt == 0
        && r.v.mode == Mode::Full
        && !r.v.micromath
        && r.v.triple == M4F
        && r.v.conv == conv
}

fn results_table(
    results: &[Measured],
    boards: &[(&str, &str, bool, ElfInfo)],
    p: u64,
    conv_p: u64,
    qemu: (u32, u32),
) -> Result<String, String> {
    let mut s = String::new();
    let base = |m: &str, conv: bool| results.iter().find(|r| is_base_of(r, m, conv));
    let sgd = base("sgd", false)
        .map(|r| mean(&r.instr))
        .ok_or("no sgd result")?;
    let conv_sgd = base("sgd", true)
        .map(|r| mean(&r.instr))
        .ok_or("no conv sgd result")?;
    let _ = writeln!(
        s,
        "| example | model | method | optimizer | trained | flash (B) | static RAM .data+.bss (B) | peak stack (B) | RAM total (B) | guest instructions / step: mean (min–max) | × SGD |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---:|---:|---:|---:|---:|---:|");
    for r in results {
        let (model, np, base_sgd) = if r.v.conv {
            ("conv 8-16", conv_p, conv_sgd)
        } else {
            ("MLP 64-32-10", p, sgd)
        };
        let trained = match (r.v.mode, r.v.conv) {
            (Mode::Full, _) => format!("all {np}"),
            (Mode::LAST_LAYER, false) => "last layer".to_string(),
            (Mode::LAST_LAYER, true) => "head (650; conv stack frozen in flash)".to_string(),
            (Mode::Bias, _) => format!("biases ({}; weights frozen in flash)", r.v.trained),
            (m, _) => format!("{m} ({})", r.v.trained),
        };
        let _ = writeln!(
            s,
            "| qemu-m4 ({}{}) | {model} | {} | {} | {} | {} | {} | {} | {} | {:.0} ({}–{}) | {} |",
            if r.v.triple == V6M {
                "thumbv6m, soft float"
            } else {
                "M4F"
            },
            if r.v.micromath { ", micromath" } else { "" },
            r.v.method.name(),
            fw_config::OPTIMIZER_NAMES[r.v.opt],
            trained,
            r.elf.flash,
            r.elf.ram,
            r.stack,
            r.elf.ram + r.stack,
            mean(&r.instr),
            r.instr.iter().min().copied().unwrap_or(0),
            r.instr.iter().max().copied().unwrap_or(0),
            if r.v.triple == M4F {
                format!("{:.2}", mean(&r.instr) / base_sgd)
            } else {
                "—".to_string()
            }
        );
    }
    for (board, triple, conv, e) in boards {
        let _ = writeln!(
            s,
            "| {board} ({triple}) | {} | fgr | sgd | all {} | {} | {} | not measured (needs hardware) | — | not measured ({} cycles are logged on hardware) | — |",
            if *conv { "conv 8-16" } else { "MLP 64-32-10" },
            if *conv { conv_p } else { p },
            e.flash,
            e.ram,
            if *triple == V6M { "SysTick" } else { "DWT" }
        );
    }
    let fgr = base("fgr", false).ok_or("no fgr result")?;
    let _ = writeln!(
        s,
        "\nBatch 1, 64 steps on 64 held-out digits samples (test split); fdgr's own buffers for full F-GR: {} B \
         (θ, d, point = 3P floats + workspace + batch + ring). Budgets: SGD ≤ {SGD_BUDGET:.0} \
         instructions (measured {sgd:.0}; AIfES 2.2.0: {AIFES_SGD_INSTR}, {:.1}× more); F-GR ≤ \
         {FGR_RATIO_BUDGET}× SGD (measured {:.2}×); RAM ≤ 3·4P + 8 KiB = {} B (measured {} B); \
         flash ≤ {FLASH_BUDGET} B (measured {} B).",
        fgr.fdgr_ram,
        AIFES_SGD_INSTR as f64 / sgd,
        mean(&fgr.instr) / sgd,
        12 * p + RAM_SLACK,
        fgr.elf.ram + fgr.stack,
        fgr.elf.flash
    );
    let cfgr = base("fgr", true).ok_or("no conv fgr result")?;
    let _ = writeln!(
        s,
        "\nConv net `{CONV_SPEC}` ({conv_p} parameters): SGD {conv_sgd:.0} instructions per step \
         (budget {CONV_SGD_BUDGET:.0}; AIfES 2.2.0 plain SGD: {AIFES_CONV_SGD_INSTR}, {:.1}× more), \
         full F-GR {:.0} (budget {CONV_FGR_BUDGET:.0}, {:.2}× SGD), full F-GR RAM {} B (static {} + \
         stack {}; budget < AIfES's {AIFES_CONV_RAM} B for SGD), flash {} B (budget \
         {CONV_FLASH_BUDGET} B).",
        AIFES_CONV_SGD_INSTR as f64 / conv_sgd,
        mean(&cfgr.instr),
        mean(&cfgr.instr) / conv_sgd,
        cfgr.elf.ram + cfgr.stack,
        cfgr.elf.ram,
        cfgr.stack,
        cfgr.elf.flash
    );
    let _ = writeln!(
        s,
        "Measured with `cargo xtask firmware`: QEMU {}.{} `mps2-an386`, instructions counted by \
         a TCG plugin (`firmware-examples/qemu-icount`) between calls of `fdgr_mark` around each \
         `push_and_step`, minus the marker's own cost; sizes from the ELF section headers; peak \
         stack by stack painting.",
        qemu.0, qemu.1
    );
    Ok(s)
}

fn check_budgets(
    results: &[Measured],
    boards: &[(&str, &str, bool, ElfInfo)],
    p: u64,
) -> Result<(), String> {
    let find = |m: &str, conv: bool| results.iter().find(|r| is_base_of(r, m, conv));
    let (Some(sgd), Some(fgr), Some(csgd), Some(cfgr)) = (
        find("sgd", false),
        find("fgr", false),
        find("sgd", true),
        find("fgr", true),
    ) else {
        return Err("missing sgd or fgr results".into());
    };
    let mut bad = vec![];
    let s = mean(&sgd.instr);
    if s > SGD_BUDGET {
        bad.push(format!("SGD step {s:.0} > {SGD_BUDGET:.0} instructions"));
    }
    let ratio = mean(&fgr.instr) / s;
    if ratio > FGR_RATIO_BUDGET {
        bad.push(format!("F-GR step {ratio:.2}× SGD > {FGR_RATIO_BUDGET}×"));
    }
    let ram = fgr.elf.ram + fgr.stack;
    if ram > 12 * p + RAM_SLACK {
        bad.push(format!(
            "F-GR RAM {ram} B > 3·4·{p} + 8 KiB = {} B",
            12 * p + RAM_SLACK
        ));
    }
    let cs = mean(&csgd.instr);
    if cs > CONV_SGD_BUDGET {
        bad.push(format!(
            "conv SGD step {cs:.0} > {CONV_SGD_BUDGET:.0} instructions"
        ));
    }
    let cf = mean(&cfgr.instr);
    if cf > CONV_FGR_BUDGET {
        bad.push(format!(
            "conv F-GR step {cf:.0} > {CONV_FGR_BUDGET:.0} instructions"
        ));
    }
    let cram = cfgr.elf.ram + cfgr.stack;
    if cram >= AIFES_CONV_RAM {
        bad.push(format!(
            "conv F-GR RAM {cram} B ≥ AIfES's {AIFES_CONV_RAM} B"
        ));
    }
    // (the budgets are the SGD builds'; Adam's rows are reported)
    for r in results
        .iter()
        .filter(|r| !r.v.micromath && r.v.triple == M4F && r.v.opt == 0)
    {
        let budget = if r.v.conv {
            CONV_FLASH_BUDGET
        } else {
            FLASH_BUDGET
        };
        if r.elf.flash > budget {
            bad.push(format!(
                "qemu-m4 {} flash {} B > {} KiB",
                r.v.name(),
                r.elf.flash,
                budget / 1024
            ));
        }
    }
    for (b, _, conv, e) in boards {
        let budget = if *conv {
            CONV_FLASH_BUDGET
        } else {
            FLASH_BUDGET
        };
        if e.flash > budget {
            bad.push(format!(
                "{b}{} flash {} B > {} KiB",
                if *conv { " (conv net)" } else { "" },
                e.flash,
                budget / 1024
            ));
        }
    }
    if bad.is_empty() {
        println!(
            "budgets met: SGD ≤ {SGD_BUDGET:.0} instructions, F-GR ≤ {FGR_RATIO_BUDGET}× SGD, RAM ≤ \
             3·4P + 8 KiB, flash ≤ {} KiB; conv net: SGD ≤ {CONV_SGD_BUDGET:.0}, F-GR ≤ \
             {CONV_FGR_BUDGET:.0} instructions, F-GR RAM < {AIFES_CONV_RAM} B, flash ≤ {} KiB",
            FLASH_BUDGET / 1024,
            CONV_FLASH_BUDGET / 1024
        );
        Ok(())
    } else {
        Err(format!("firmware budgets missed: {}", bad.join("; ")))
    }
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
