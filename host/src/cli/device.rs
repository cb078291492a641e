//! `fdgr device`: take a trained run onto a microcontroller (or QEMU),
//! fine-tune it there, bring the weights back and check them against the
//! host ([`fdgr::device`]).

use anyhow::{anyhow, bail, Result};
use clap::{Args, Subcommand, ValueEnum};
use fdgr::device::{self as dev, Prepared, RunOptions};
use fdgr::exit::bad_input;
use fdgr_mcu::board::{Board, Runner};
use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::time::Duration;

/// The exit codes of `fdgr device` (the same table, with what each means
/// here).
macro_rules! device_exit_codes {
    () => {
        "Exit codes:\n  \
         0  success (verify: every loss and weight bit-identical)\n  \
         1  anything else: the build or the device failed, device and host differ, an output that cannot be written\n  \
         2  bad input: a flag, the run or the samples; a missing tool (rustup target, qemu-system-arm, probe-rs) or no probe attached; a model too large for the board\n  \
         3  fine-tuning diverged on the device (a step's loss or gradient was not finite)"
    };
}

/// `fdgr device`.
#[derive(Args, Debug)]
#[command(after_help = concat!(
    "Examples:\n  fdgr train --data digits --model 64-32-10 --act tanh --out runs/digits\n  \
    fdgr device run --board qemu-m4 --from runs/digits --verify\n  \
    fdgr device run --board stm32f4 --from runs/digits --method sgd --mode last\n  \
    fdgr device verify --from runs/digits --board qemu-m4\n\n",
    device_exit_codes!()
))]
pub struct DeviceArgs {
    /// What to do.
    #[command(subcommand)]
    pub cmd: DeviceCmd,
}

/// `fdgr device run | verify`.
#[derive(Subcommand, Debug)]
pub enum DeviceCmd {
    /// Build the firmware with the run's model, run it on the board (QEMU or
    /// probe-rs), decode its log live, and write RUN/device-<board>/
    Run(RunArgs),
    /// Replay RUN/device-<board>/ on the host kernel: are every loss and
    /// every weight bit-identical?
    Verify(VerifyArgs),
    /// Build the live image (the on-device learner) for a board with the
    /// run's model, without flashing it: print its RAM and flash against the
    /// board's (exit 2, with the numbers, when it does not fit)
    Build(BuildArgs),
}

/// The flags that choose the firmware image: board, run, method, mode,
/// optimizer and firmware workspace (`device run` and `device build`).
#[derive(Args, Debug)]
pub struct ImageArgs {
    /// The board
    #[arg(long, value_enum)]
    pub board: BoardName,
    /// The run directory (`fdgr train --out`)
    #[arg(long)]
    pub from: PathBuf,
    /// Fine-tuning method: any of `fdgr train --method`'s (sgd, db, fgr,
    /// bgr, cgr, sam, usam, flood), its hyper-parameters as the firmware
    /// sets them
    #[arg(long, default_value = "fgr")]
    pub method: String,
    /// Trained parameters: full | last (the last layer; the others stay in
    /// flash) | last:K (the last K layers with parameters) | bias (every
    /// bias; the weights stay in flash) | layers:I,J,… (those layers of the
    /// layer list)
    #[arg(long, default_value = "full")]
    pub mode: String,
    /// Optimizer on the device: sgd (plain, lr 0.02) | adam (lr 0.001)
    #[arg(long, default_value = "sgd")]
    pub opt: String,
    /// The firmware workspace [default: the firmware-examples folder next to
    /// this build's sources]
    #[arg(long)]
    pub firmware: Option<PathBuf>,
}

impl ImageArgs {
    /// The device options these flags give, the others at their defaults
    /// (no samples, the image with the samples built in, the firmware's
    /// hyper-parameters).
    fn options(&self) -> RunOptions {
        RunOptions {
            board: self.board.board(),
            from: self.from.clone(),
            method: self.method.clone(),
            mode: self.mode.clone(),
            opt: self.opt.clone(),
            samples: None,
            firmware: self
                .firmware
                .clone()
                .or_else(|| std::env::var_os("FDGR_FIRMWARE_DIR").map(PathBuf::from))
                .unwrap_or_else(dev::default_firmware_dir),
            timeout: Duration::from_secs(300),
            live: false,
            lr: None,
            hyper: [None; 4],
            validation: false,
            order_seed: None,
            build_only: false,
        }
    }
}

/// `fdgr device build`.
#[derive(Args, Debug)]
#[command(after_help = concat!(
    "Examples:\n  fdgr device build --board stm32f4 --from runs/src --mode bias\n  \
    fdgr device build --board nrf52840 --from runs/src --mode full --json\n\n",
    device_exit_codes!()
))]
pub struct BuildArgs {
    /// The board, the run and what the image trains.
    #[command(flatten)]
    pub image: ImageArgs,
    /// Print one JSON line (board, mode, ram_bytes, flash_bytes, ...)
    #[arg(long)]
    pub json: bool,
}

/// A board by name: one of `fdgr_mcu::board::Board::ALL` (its folder's
/// name), so that a board added there is a value here with its help line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BoardName(Board);

impl BoardName {
    fn board(self) -> Board {
        self.0
    }
}

impl ValueEnum for BoardName {
    fn value_variants<'a>() -> &'a [Self] {
        const ALL: [BoardName; Board::ALL.len()] = {
            let mut v = [BoardName(Board::ALL[0]); Board::ALL.len()];
            let mut i = 0;
            while i < v.len() {
                v[i] = BoardName(Board::ALL[i]);
                i += 1;
            }
            v
        };
        &ALL
    }
    fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
        let how = match self.0.runner() {
            Runner::Qemu => "no hardware needed",
            Runner::ProbeRs => "through probe-rs",
        };
        let help = format!("{}, {how}", self.0.describe());
        Some(clap::builder::PossibleValue::new(self.0.name()).help(help))
    }
}

/// `fdgr device run`.
#[derive(Args, Debug)]
#[command(after_help = concat!(
    "Writes RUN/device-<board>/: metrics.jsonl (per step: loss, its bits, instructions or cycles), \
    model.safetensors (the fine-tuned weights, same names as the run's: `fdgr eval --ckpt \
    RUN/device-<board>` and PyTorch load it), summary.json (RAM, flash, instructions or cycles \
    per step, held-out accuracy before and after), device.log, and the model.fdgr and stream.bin \
    the firmware was built with. MLPs and plain layer lists (conv nets; batch norm folded into \
    the layer before it) with 64 inputs.\n\n\
    Examples:\n  fdgr device run --board qemu-m4 --from runs/digits --verify\n  \
    fdgr device run --board qemu-m4 --from runs/src --live --samples digits:train:64 --mode bias --verify\n  \
    fdgr device run --board nrf52840 --from runs/digits --method fgr --mode last --samples digits:test:128\n  \
    fdgr device run --board qemu-m4 --from runs/src --samples digits:train:256 --json\n\n",
    device_exit_codes!()
))]
pub struct RunArgs {
    /// The board, the run and what the image trains.
    #[command(flatten)]
    pub image: ImageArgs,
    /// Learning rate on the device [default: the optimizer's]
    #[arg(long)]
    pub lr: Option<f32>,
    /// GR strength γ of db, fgr, bgr, cgr [default: the firmware's, 0.01]
    #[arg(long)]
    pub gamma: Option<f32>,
    /// Finite-difference step ε of fgr, bgr, cgr [default: the firmware's, 0.1]
    #[arg(long)]
    pub eps: Option<f32>,
    /// Radius ρ of sam, usam [default: the firmware's, 0.05]
    #[arg(long)]
    pub rho: Option<f32>,
    /// Flood level b of flood [default: the firmware's, 0.02]
    #[arg(long)]
    pub flood_level: Option<f32>,
    /// Held-out accuracy on the samples' train split (without the samples
    /// streamed) instead of its test split: a validation split to tune
    /// --lr, --gamma, --eps, --rho, --flood-level, --method and --opt on
    #[arg(long)]
    pub validation: bool,
    /// Stream the same samples in a seeded random order (the seeds of a
    /// mean ± sd over sample orders)
    #[arg(long)]
    pub order_seed: Option<u64>,
    /// The samples the device learns, DATA:SPLIT:N (the first N of the
    /// split, split as the run split it). On qemu-m4 they are streamed to
    /// the live image, which starts from the run's model (a factory reset of
    /// the emulated board; --live continues from what it learned), and the
    /// device measures held-out accuracy before and after; --built-in builds
    /// them into the image instead, as without --samples [default: the
    /// run's data, test split, 64, built into the image]
    #[arg(long)]
    pub samples: Option<String>,
    /// With --samples on qemu-m4: build the samples into the image (the
    /// image the boards run without --live) instead of streaming them to
    /// the live image
    #[arg(long, requires = "samples", conflicts_with = "live")]
    pub built_in: bool,
    /// Also replay the fine-tuning on the host kernel and require every loss
    /// and weight to be bit-identical
    #[arg(long)]
    pub verify: bool,
    /// Longest the device may run, in seconds
    #[arg(long, default_value_t = 300)]
    pub timeout: u64,
    /// On-device learning: boot the live image (no samples built in), stream
    /// the samples over the sample link (predict, then learn), keep the
    /// learned state in the board's flash across runs (qemu-m4)
    #[arg(long)]
    pub live: bool,
    /// With --live: start again from the factory model
    #[arg(long, requires = "live")]
    pub factory_reset: bool,
    /// With --live: the device already runs the live image at the other
    /// end of this serial port (a board flashed with `cargo run --release
    /// --features live` in its folder); fdgr does not boot or flash it
    #[arg(long, requires = "live")]
    pub port: Option<PathBuf>,
    /// The serial port's baud rate
    #[arg(long, default_value_t = 115_200, requires = "port")]
    pub baud: u32,
    /// With the live image (--live, or --samples on qemu-m4): print one
    /// JSON line (start_step, end_step, image_sha256, acc_before,
    /// acc_after, prequential_acc, ram_bytes, flash_bytes, ...)
    #[arg(long, conflicts_with = "built_in")]
    pub json: bool,
}

impl RunArgs {
    /// Whether the run streams its samples to the live image: with
    /// `--live`, and on qemu-m4 (which fdgr boots itself) when `--samples`
    /// names them, unless `--built-in`. Otherwise the samples are built
    /// into the image.
    pub fn streams(&self) -> bool {
        self.live
            || (self.image.board.board().runner() == Runner::Qemu
                && self.samples.is_some()
                && !self.built_in)
    }
}

/// `fdgr device verify`.
#[derive(Args, Debug)]
#[command(after_help = concat!(
    "Examples:\n  fdgr device verify --from runs/digits --board qemu-m4\n  \
    fdgr device verify --dir runs/digits/device-stm32f4\n\n",
    device_exit_codes!()
))]
pub struct VerifyArgs {
    /// The run directory (with --board)
    #[arg(long, requires = "board", conflicts_with = "dir")]
    pub from: Option<PathBuf>,
    /// The board (with --from)
    #[arg(long, value_enum)]
    pub board: Option<BoardName>,
    /// A device-<board> folder
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Cut the power of the live image (qemu-m4) at N random moments while
    /// it learns and saves; after each restart its weights must equal the
    /// host replay at the restored step, bit for bit (with --from, --board)
    #[arg(long, requires = "from")]
    pub power_cuts: Option<usize>,
    /// With --power-cuts: the samples learned (DATA:SPLIT:N)
    #[arg(long, requires = "power_cuts")]
    pub samples: Option<String>,
    /// With --power-cuts: seed of the cut moments
    #[arg(long, default_value_t = 1, requires = "power_cuts")]
    pub seed: u64,
    /// With --power-cuts: print one JSON line (cuts, torn, recovered, ...)
    #[arg(long, requires = "power_cuts")]
    pub json: bool,
    /// With --power-cuts: the fine-tuning method (as for `device run`)
    #[arg(long, default_value = "fgr", requires = "power_cuts")]
    pub method: String,
    /// With --power-cuts: the trained parameters (as for `device run`)
    #[arg(long, default_value = "full", requires = "power_cuts")]
    pub mode: String,
}

/// `fdgr device`.
pub fn run(a: &DeviceArgs) -> Result<()> {
    match &a.cmd {
        DeviceCmd::Run(r) => run_on_device(r),
        DeviceCmd::Verify(v) => verify(v),
        DeviceCmd::Build(b) => build_only(b),
    }
}

fn kb(b: u64) -> String {
    let s = b.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn header(p: &Prepared) {
    let arch = &p.net.arch;
    println!(
        "model {} ({} parameters) from {}; exported for the firmware: {} bytes",
        arch.describe(),
        arch.param_count(),
        p.from.join("model.safetensors").display(),
        kb(p.model.len() as u64)
    );
    println!(
        "samples: the first {} of the {} {} split{} ({} bytes)",
        p.steps,
        p.spec.data,
        p.spec.split,
        if p.spec.split == "test" {
            ", held out from pre-training"
        } else {
            ""
        },
        kb(p.stream.len() as u64)
    );
    println!(
        "fine-tuning: {}, {}, {} lr {}, batch {}, {} steps",
        dev::describe_method(&p.method),
        dev::describe_mode(p.mode, p.trained()),
        if p.opt == 0 { "SGD" } else { "Adam" },
        p.lr(),
        fdgr_mcu::fw_config::BATCH,
        p.steps
    );
    println!(
        "{}: {}; estimate RAM {} of {} B (fdgr buffers {} B), flash {} of {} B{}",
        p.board,
        p.board.describe(),
        kb(p.estimate.ram),
        kb(p.map.ram),
        kb(p.estimate.fdgr.total as u64),
        kb(p.estimate.flash),
        kb(p.map.flash),
        match p.probes.first() {
            Some(probe) => format!("; probe {probe}"),
            None => String::new(),
        }
    );
}

fn build_only(a: &BuildArgs) -> Result<()> {
    let o = RunOptions {
        live: true,
        build_only: true,
        ..a.image.options()
    };
    // refuses (exit 2) a model the estimate says does not fit
    let p = dev::prepare(&o).map_err(bad_input)?;
    if !a.json {
        header(&p);
        eprint!(
            "building the live image ({}, {}) ... ",
            p.board.package(),
            p.board.triple()
        );
    }
    let b = dev::build(&p).map_err(|e| {
        if e.is::<dev::Refused>() {
            bad_input(e)
        } else {
            e
        }
    })?;
    let e = &p.estimate;
    if a.json {
        println!(
            "{}",
            serde_json::json!({
                "board": p.board.name(), "mode": p.mode.to_string(), "method": p.method.name(),
                "params": p.models.params(), "trained_params": p.trained(),
                "ram_bytes": b.info.ram, "ram_available": p.map.ram,
                "ram_estimate_with_stack": e.ram, "fdgr_buffers_bytes": e.fdgr.total,
                "flash_bytes": b.info.flash, "flash_available": p.map.flash,
                "image_sha256": fdgr::device_live::sha256(&b.elf),
            })
        );
    } else {
        eprintln!("{:.1} s", b.seconds);
        println!(
            "built the live image for {}: static RAM {} of {} B (with the stack, about {} B), \
             flash {} of {} B; {} mode trains {} of {} parameters",
            p.board,
            kb(b.info.ram),
            kb(p.map.ram),
            kb(e.ram.max(b.info.ram)),
            kb(b.info.flash),
            kb(p.map.flash),
            p.mode,
            p.trained(),
            p.models.params()
        );
    }
    Ok(())
}

/// Builds the firmware for `p`, saying so; a refused build (the model
/// does not fit the board) is bad input.
fn build(p: &dev::Prepared) -> Result<dev::Built> {
    eprint!(
        "building the firmware ({}, {}) ... ",
        p.board.package(),
        p.board.triple()
    );
    let b = match dev::build(p) {
        Ok(b) => b,
        Err(e) => {
            eprintln!();
            return Err(if e.is::<dev::Refused>() {
                bad_input(e)
            } else {
                e
            });
        }
    };
    eprintln!("{:.1} s", b.seconds);
    println!(
        "built: flash {} B, static RAM {} B",
        kb(b.info.flash),
        kb(b.info.ram)
    );

    Ok(b)
}

/// What a run counted per step: exact instructions (QEMU), cycles (a
/// board's counter), or why neither.
fn per_step(d: &dev::DeviceRun) -> String {
    if !d.instructions.is_empty() {
        let mean = d.instructions.iter().sum::<u64>() as f64 / d.instructions.len() as f64;
        format!(
            "{} instructions per step (QEMU, counted exactly)",
            kb(mean.round() as u64)
        )
    } else if !d.log.cycles.is_empty() {
        let mean = d.log.cycles.iter().map(|&c| c as f64).sum::<f64>() / d.log.cycles.len() as f64;
        format!("{} cycles per step", kb(mean.round() as u64))
    } else {
        d.note
            .clone()
            .unwrap_or_else(|| "no per-step counts".into())
    }
}

fn run_on_device(a: &RunArgs) -> Result<()> {
    if a.json && !a.streams() {
        return Err(bad_input(anyhow!(
            "--json reports a run of the live image: give --samples DATA:SPLIT:N (qemu-m4) or --live"
        )));
    }
    let o = RunOptions {
        samples: a.samples.clone(),
        timeout: Duration::from_secs(a.timeout),
        live: a.streams(),
        lr: a.lr,
        hyper: [a.gamma, a.eps, a.rho, a.flood_level],
        validation: a.validation,
        order_seed: a.order_seed,
        ..a.image.options()
    };
    let p = dev::prepare(&o).map_err(bad_input)?;
    header(&p);

    let b = build(&p)?;

    match p.board.runner() {
        Runner::Qemu => eprintln!("running on {} ...", p.board.describe()),
        Runner::ProbeRs => eprintln!(
            "flashing and running the {} (probe-rs) ...",
            p.board.describe()
        ),
    }
    let tty = std::io::stderr().is_terminal();
    let total = p.steps;
    let every = total.div_ceil(4).max(1);
    let mut on_step = |s: &fdgr_mcu::log::StepLine| {
        let n = s.step + 1;
        let cyc = s
            .cycles
            .map(|c| format!("  {c} cycles"))
            .unwrap_or_default();
        if tty {
            eprint!("\r  step {n:>4}/{total}  loss {:.4}{cyc}   ", s.loss);
            if n == total {
                eprintln!();
            }
        } else if n == 1 || n % every == 0 || n == total {
            eprintln!("  step {n:>4}/{total}  loss {:.4}{cyc}", s.loss);
        }
    };
    if p.live {
        return live(a, &p, &b);
    }
    let d = dev::run(&p, &b, &mut on_step)?;
    let (first, last) = dev::loss_means(&d.log.losses);
    let per_step = per_step(&d);
    println!(
        "device: {} steps in {:.1} s; mean loss {:.4} (first 16 steps) -> {:.4} (last 16); RAM {} B \
         (static {} + stack peak {}); flash {} B; {per_step}",
        d.log.losses.len(),
        d.seconds,
        first,
        last,
        kb(b.info.ram + d.log.stack_peak.unwrap_or(0)),
        kb(b.info.ram),
        kb(d.log.stack_peak.unwrap_or(0)),
        kb(b.info.flash)
    );

    let theta: Vec<f32> = d.log.theta.iter().map(|&t| f32::from_bits(t)).collect();
    let acc = dev::accuracy(&p, &theta)?;
    println!(
        "held-out accuracy ({}; evaluated on the host): before {:.2} %, after {:.2} %",
        p.held_out.2,
        100.0 * acc.before.1,
        100.0 * acc.after.1
    );
    let verified = if a.verify {
        let c = dev::verify_bits(&p, &d.log.losses, &d.log.theta)?;
        println!("verify (replayed on the host kernel): {c}");
        Some(c)
    } else {
        None
    };
    let summary = dev::summary(&p, &b, &d, &acc, verified.as_ref());
    dev::write(&p, &d, &summary)?;
    println!("wrote {}/ ({})", p.out.display(), dev::FILES.join(", "));
    if let Some(c) = verified {
        if !c.identical() {
            bail!("{}: {c}", p.board);
        }
    }
    Ok(())
}

fn verify(a: &VerifyArgs) -> Result<()> {
    let dir = match (&a.dir, &a.from, a.board) {
        (Some(d), _, _) => d.clone(),
        (None, Some(f), Some(b)) => f.join(format!("device-{}", b.board())),
        _ => {
            return Err(bad_input(anyhow!(
                "give --dir DIR, or --from RUN and --board BOARD"
            )))
        }
    };
    if let Some(n) = a.power_cuts {
        return power_cuts(a, n);
    }
    let (c, s) = dev::verify(&dir).map_err(bad_input)?;
    println!(
        "{}: {} on {}, {} {} {}, {} steps; replayed on the host kernel: {c}",
        dir.display(),
        s["model"].as_str().unwrap_or("?"),
        s["board"].as_str().unwrap_or("?"),
        s["method"].as_str().unwrap_or("?"),
        s["mode"].as_str().unwrap_or("?"),
        s["optimizer"].as_str().unwrap_or("?"),
        c.losses
    );
    if c.identical() {
        Ok(())
    } else {
        bail!("{}: {c}", dir.display())
    }
}

fn live(a: &RunArgs, p: &Prepared, b: &dev::Built) -> Result<()> {
    use fdgr::device_live as lv;
    // without --live the run starts from the run's model, as the image
    // with the samples built in does: a factory reset of the emulated board
    let o = lv::LiveOptions {
        port: a.port.clone(),
        baud: a.baud,
        factory_reset: a.factory_reset || !a.live,
        verify: a.verify,
    };
    eprintln!(
        "live image {} on {}: streaming {} samples over the link{} ...",
        &lv::sha256(&b.elf)[..12],
        p.board.describe(),
        p.steps,
        if a.live {
            ""
        } else {
            ", from the run's model (factory reset; --live continues from the board's flash)"
        }
    );
    let tty = std::io::stderr().is_terminal();
    let mut on_sample = |i: usize, n: usize, preq: f64| {
        if tty {
            eprint!(
                "\r  sample {i:>5}/{n}  prequential accuracy {:6.2} %   ",
                100.0 * preq
            );
            if i == n {
                eprintln!();
            }
        } else if i == n || i % (n.div_ceil(4).max(1)) == 0 {
            eprintln!(
                "  sample {i:>5}/{n}  prequential accuracy {:6.2} %",
                100.0 * preq
            );
        }
    };
    let r = lv::run(p, b, &o, &mut on_sample)?;
    lv::write(p, &r)?;
    if a.json {
        println!("{}", lv::json_line(p, &r));
    } else {
        println!(
            "device: steps {} -> {}; prequential accuracy {:.2} %; held-out accuracy ({} samples, \
             through predict) {:.2} % -> {:.2} %; {:.2} ms and {:.0} link bytes per sample; \
             RAM {} B (static {} B + stack peak {}), flash {} B",
            r.start_step,
            r.end_step,
            100.0 * r.prequential_acc,
            r.held_out,
            100.0 * r.acc_before,
            100.0 * r.acc_after,
            r.ms_per_sample,
            r.bytes_per_sample,
            kb(r.ram_bytes),
            kb(r.static_ram_bytes),
            r.stack_peak_bytes
                .map_or("not measured".to_string(), |b| format!("{} B", kb(b))),
            kb(r.flash_bytes)
        );
        if let Some(v) = r.verified {
            println!(
                "verify (the whole history, {} samples, replayed on the host kernel): {}",
                r.end_step,
                if v {
                    "bit-identical weights and losses"
                } else {
                    "DIFFERENT"
                }
            );
        }
        println!(
            "wrote {}/ (state in {}/)",
            p.out.display(),
            lv::state_dir(p).display()
        );
    }
    if r.verified == Some(false) {
        bail!(
            "{}: the device's weights differ from the host replay",
            p.board
        );
    }
    Ok(())
}

fn power_cuts(a: &VerifyArgs, n: usize) -> Result<()> {
    use fdgr::device_live as lv;
    let (Some(from), Some(board)) = (&a.from, a.board) else {
        return Err(bad_input(anyhow!(
            "--power-cuts needs --from RUN and --board qemu-m4"
        )));
    };
    if board.board().runner() != Runner::Qemu {
        return Err(bad_input(anyhow!(
            "--power-cuts: only qemu-m4 can be cut here (on a board, reset it through probe-rs)"
        )));
    }
    let o = RunOptions {
        board: board.board(),
        from: from.clone(),
        method: a.method.clone(),
        mode: a.mode.clone(),
        opt: "sgd".into(),
        samples: a.samples.clone(),
        firmware: std::env::var_os("FDGR_FIRMWARE_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(dev::default_firmware_dir),
        timeout: Duration::from_secs(120),
        live: true,
        lr: None,
        hyper: [None; 4],
        validation: false,
        order_seed: None,
        build_only: false,
    };
    let p = dev::prepare(&o).map_err(bad_input)?;
    let b = dev::build(&p).map_err(|e| {
        if e.is::<dev::Refused>() {
            bad_input(e)
        } else {
            e
        }
    })?;
    let t = std::time::Instant::now();
    let r = lv::power_cuts(&p, &b, n, a.seed)?;
    if a.json {
        println!(
            "{}",
            serde_json::json!({"cuts": r.cuts, "torn": r.torn, "recovered": r.recovered,
                               "factory": r.factory, "cut_while_busy": r.during_save,
                               "max_step": r.learned, "seconds": t.elapsed().as_secs_f64()})
        );
    } else {
        println!(
            "power cuts on {}: {} cuts ({} while the device was stepping or saving), {} torn, \
             {} recovered a saved state bit-identical to the host replay, {} came back at the \
             factory model; {:.1} s",
            p.board,
            r.cuts,
            r.during_save,
            r.torn,
            r.recovered,
            r.factory,
            t.elapsed().as_secs_f64()
        );
    }
    if r.torn > 0 {
        bail!(
            "{}: {} of {} restarts restored a torn state",
            p.board,
            r.torn,
            r.cuts
        );
    }
    Ok(())
}
