//! `fdgr`: train neural networks with finite-difference gradient
//! regularization (F-GR) on CPU or GPU.
//!
//! Exit codes: 0 success, 2 bad input (flags, files), 3 training diverged
//! (non-finite loss or gradient), 1 anything else.

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use fdgr::config::{
    dims_str, parse_dims, parse_list, BackendName, MethodName, ScheduleName, TrainConfig,
};
use fdgr::data::{self, Normalize};
use fdgr::{bench, checkpoint, sweep, train};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "fdgr",
    version,
    about = "Train neural networks with finite-difference gradient regularization (F-GR), on CPU or GPU",
    long_about = "Gradient regularization adds (γ/2)‖∇L‖² to the loss. F-GR computes its gradient with one \
                  gradient ascent step and one descent step (Karakida et al., ICML 2023) instead of a \
                  Hessian-vector product.",
    after_help = "Examples:\n  fdgr train                       # F-GR on the shipped MNIST subset, CPU\n  \
                  fdgr train --data digits --model 64-32-10 --act tanh\n  \
                  fdgr sweep --methods sgd,fgr,bgr --gammas 0.01,0.1 --epss 0.05,0.2 --seeds 1,2,3\n  \
                  fdgr bench --model 784-512-512-10 --batch 128\n  \
                  fdgr eval --ckpt runs/my-run --data mnist5k"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Train a model and write metrics, checkpoints, weights and plots
    #[command(
        allow_negative_numbers = true,
        after_help = "Examples:\n  fdgr train\n  \
        fdgr train --method db --gamma 0.01 --epochs 10 --out runs/db\n  \
        fdgr train --data digits --model 64-32-10 --act tanh --method fgr --gamma 0.05 --eps 0.1\n  \
        fdgr train --data csv:my.csv.gz --model 20-64-3 --normalize standard\n  \
        fdgr train --resume runs/db          # continue after an interruption, bit-exactly"
    )]
    Train(Box<TrainArgs>),
    /// Loss and accuracy of saved weights on a data set
    #[command(
        after_help = "Examples:\n  fdgr eval --ckpt runs/my-run --data mnist5k\n  \
        fdgr eval --ckpt runs/my-run/model.safetensors --data mnist:./fashion --split all"
    )]
    Eval(EvalArgs),
    /// Grid over methods × γ × ε × seeds; table (mean ± std) and heat-maps
    #[command(
        after_help = "Example:\n  fdgr sweep --data mnist5k --epochs 10 --methods sgd,db,fgr,bgr \\\n    \
        --gammas 0.001,0.01,0.1 --epss 0.01,0.1,0.5 --seeds 1,2,3 --out runs/sweep"
    )]
    Sweep(Box<SweepArgs>),
    /// Per-step time of each method (median over repeats)
    #[command(
        after_help = "Examples:\n  fdgr bench --model 784-512-512-10 --batch 128\n  \
        fdgr bench --model 64-32-10 --act tanh --batch 1 --threads 1 --json"
    )]
    Bench(BenchArgs),
    /// The paper's diagonal linear network: implicit bias of GR, F-GR and B-GR
    #[command(
        allow_negative_numbers = true,
        after_help = "Example:\n  fdgr dln --alphas 0.5,1 --gammas 0.01,0.05 \\\n    \
        --epss=-0.5,-0.2,-0.1,-0.05,0.05,0.1,0.2,0.5 --out runs/dln"
    )]
    Dln(DlnArgs),
    /// GPU against the CPU kernel: every method from the same θ and batches
    #[command(
        after_help = "Example:\n  fdgr crosscheck --model 784-512-512-10 --act tanh --batch 128 --steps 20"
    )]
    Crosscheck(CrossArgs),
    /// Show that two flooding steps equal one forward finite-difference GR step
    #[command(
        after_help = "Example:\n  fdgr flood-check --data digits --model 64-32-10 --act tanh --lr 0.05 --pairs 10"
    )]
    FloodCheck(FloodArgs),
    /// Write samples for firmware: per sample its pixels as bytes, then the label
    #[command(
        after_help = "Example:\n  fdgr samples --data digits --split test --count 64 --out stream.bin"
    )]
    Samples(SamplesArgs),
    /// Write weights for firmware (the kernel's FDGR format)
    #[command(
        after_help = "Example:\n  fdgr export --ckpt runs/digits --out digits-64-32-10.fdgr"
    )]
    Export(ExportArgs),
}

#[derive(Args, Clone)]
struct TrainArgs {
    /// Data set: digits | mnist5k | mnist:DIR | idx:IMAGES,LABELS | cifar10:DIR | cifar10:FILE | csv:FILE
    #[arg(long, default_value = "mnist5k")]
    data: String,
    /// Layer widths, inputs first [default: FEATURES-512-512-CLASSES]
    #[arg(long)]
    model: Option<String>,
    /// Hidden activation: relu | tanh | sigmoid | identity
    #[arg(long, default_value = "relu")]
    act: String,
    /// Training method
    #[arg(long, value_enum, default_value_t = MethodName::Fgr)]
    method: MethodName,
    /// GR strength γ (db, fgr, bgr, cgr)
    #[arg(long, default_value_t = 0.05)]
    gamma: f64,
    /// Finite-difference step ε > 0 (fgr, bgr, cgr)
    #[arg(long, default_value_t = 0.1)]
    eps: f64,
    /// SAM radius ρ (sam, usam)
    #[arg(long, default_value_t = 0.05)]
    rho: f64,
    /// Flood level b (flood)
    #[arg(long, default_value_t = 0.02)]
    flood_level: f64,
    /// Base learning rate
    #[arg(long, default_value_t = 0.1)]
    lr: f64,
    /// Momentum μ (0 disables the buffer)
    #[arg(long, default_value_t = 0.9)]
    momentum: f64,
    /// Nesterov momentum
    #[arg(long)]
    nesterov: bool,
    /// Weight decay λ (coupled, as PyTorch SGD)
    #[arg(long, default_value_t = 1e-4)]
    wd: f64,
    /// Learning-rate schedule
    #[arg(long, value_enum, default_value_t = ScheduleName::Cosine)]
    schedule: ScheduleName,
    /// Linear warm-up epochs
    #[arg(long, default_value_t = 0)]
    warmup: u64,
    /// Epochs
    #[arg(long, default_value_t = 30)]
    epochs: u64,
    /// Mini-batch size
    #[arg(long, default_value_t = 128)]
    batch: usize,
    /// Seed (initialisation, data order, split)
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// CPU threads (0 = all cores)
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Backend
    #[arg(long, value_enum, default_value_t = BackendName::Cpu)]
    backend: BackendName,
    /// Allow TF32 tensor-core products on the GPU (faster, ~1e-3 relative error)
    #[arg(long)]
    tf32: bool,
    /// Fraction of each class held out for testing (sources without a test set)
    #[arg(long, default_value_t = 0.2)]
    test_frac: f64,
    /// Input normalisation
    #[arg(long, value_enum, default_value_t = Normalize::Auto)]
    normalize: Normalize,
    /// Output directory [default: runs/<time>-<data>-<method>]
    #[arg(long)]
    out: Option<PathBuf>,
    /// Resume the run in this directory (its saved configuration is used)
    #[arg(long, conflicts_with = "out")]
    resume: Option<PathBuf>,
    /// Print only the final table
    #[arg(long, short)]
    quiet: bool,
}

impl TrainArgs {
    fn config(&self) -> Result<TrainConfig> {
        let model = match &self.model {
            Some(m) => parse_dims(m)?,
            None => {
                let d = data::load(
                    &self.data,
                    &data::DataOptions {
                        seed: self.seed,
                        test_frac: self.test_frac,
                        normalize: self.normalize,
                    },
                )?;
                vec![d.features, 512, 512, d.classes]
            }
        };
        let c = TrainConfig {
            data: self.data.clone(),
            seed: self.seed,
            test_frac: self.test_frac,
            normalize: self.normalize,
            model,
            act: self.act.clone(),
            method: self.method,
            gamma: self.gamma,
            eps: self.eps,
            rho: self.rho,
            flood_level: self.flood_level,
            lr: self.lr,
            momentum: self.momentum,
            nesterov: self.nesterov,
            weight_decay: self.wd,
            schedule: self.schedule,
            warmup: self.warmup,
            epochs: self.epochs,
            batch: self.batch,
            threads: self.threads,
            backend: self.backend,
            tf32: self.tf32,
        };
        c.validate()?;
        Ok(c)
    }
}

#[derive(Args)]
struct EvalArgs {
    /// Run directory or model/checkpoint .safetensors file
    #[arg(long)]
    ckpt: PathBuf,
    /// Data set (see `fdgr train --help`)
    #[arg(long, default_value = "mnist5k")]
    data: String,
    /// Which samples: test | train | all
    #[arg(long, default_value = "test")]
    split: String,
    /// Split seed (as in training)
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Test fraction (as in training)
    #[arg(long, default_value_t = 0.2)]
    test_frac: f64,
    /// Input normalisation (as in training)
    #[arg(long, value_enum, default_value_t = Normalize::Auto)]
    normalize: Normalize,
    /// Print one JSON object
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct SweepArgs {
    #[command(flatten)]
    base: TrainArgs,
    /// Methods, comma-separated
    #[arg(long, default_value = "sgd,db,fgr,bgr")]
    methods: String,
    /// γ values, comma-separated
    #[arg(long, default_value = "0.001,0.01,0.1")]
    gammas: String,
    /// ε values, comma-separated
    #[arg(long, default_value = "0.01,0.1,0.5")]
    epss: String,
    /// Seeds, comma-separated
    #[arg(long, default_value = "1,2,3")]
    seeds: String,
}

#[derive(Args)]
struct BenchArgs {
    /// Layer widths
    #[arg(long, default_value = "784-512-512-10")]
    model: String,
    /// Hidden activation
    #[arg(long, default_value = "relu")]
    act: String,
    /// Batch size
    #[arg(long, default_value_t = 128)]
    batch: usize,
    /// Methods, comma-separated
    #[arg(
        long,
        alias = "method",
        default_value = "sgd,db,fgr,bgr,cgr,sam,usam,flood"
    )]
    methods: String,
    /// Backend
    #[arg(long, value_enum, default_value_t = BackendName::Cpu)]
    backend: BackendName,
    /// CPU threads (0 = all cores)
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Timed steps per method
    #[arg(long, default_value_t = 30)]
    repeats: usize,
    /// Untimed warm-up steps per method
    #[arg(long, default_value_t = 3)]
    warmup: usize,
    /// Allow TF32 on the GPU
    #[arg(long)]
    tf32: bool,
    /// One JSON object per line
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct DlnArgs {
    /// Dimension d
    #[arg(long, default_value_t = 100)]
    d: usize,
    /// Samples n (< d: under-determined)
    #[arg(long, default_value_t = 40)]
    n: usize,
    /// Non-zeros of β* (±1)
    #[arg(long, default_value_t = 5)]
    k: usize,
    /// Seed of X and β*
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Methods: sgd, db, fgr, bgr, cgr
    #[arg(long, default_value = "sgd,db,fgr,bgr")]
    methods: String,
    /// Initialisation scales α
    #[arg(long, default_value = "0.5,1")]
    alphas: String,
    /// GR strengths γ
    #[arg(long, default_value = "0.01,0.05")]
    gammas: String,
    /// Signed ε values: positive runs F-GR, negative runs B-GR
    #[arg(long, default_value = "-0.5,-0.2,-0.1,-0.05,0.05,0.1,0.2,0.5")]
    epss: String,
    /// Step size
    #[arg(long, default_value_t = 0.01)]
    lr: f64,
    /// Step budget per run
    #[arg(long, default_value_t = 400_000)]
    max_steps: u64,
    /// Stop when the training loss falls below tol × its initial value
    #[arg(long, default_value_t = 1e-10)]
    tol: f64,
    /// CPU threads for parallel runs (0 = all cores)
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// One JSON object per run on stdout
    #[arg(long)]
    json: bool,
    /// Directory for dln.jsonl and the plots
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(Args)]
struct CrossArgs {
    /// Layer widths
    #[arg(long, default_value = "784-512-512-10")]
    model: String,
    /// Hidden activation
    #[arg(long, default_value = "tanh")]
    act: String,
    /// Batch size
    #[arg(long, default_value_t = 128)]
    batch: usize,
    /// Steps per method
    #[arg(long, default_value_t = 20)]
    steps: usize,
    /// TF32 products on the GPU (tolerance 1e-2 instead of 1e-4)
    #[arg(long)]
    tf32: bool,
}

#[derive(Args)]
struct FloodArgs {
    /// Data set
    #[arg(long, default_value = "digits")]
    data: String,
    /// Layer widths
    #[arg(long, default_value = "64-32-10")]
    model: String,
    /// Hidden activation
    #[arg(long, default_value = "tanh")]
    act: String,
    /// Size of the one fixed batch
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// Step size η (the implied finite-difference ε)
    #[arg(long, default_value_t = 0.05)]
    lr: f32,
    /// SGD steps before the check
    #[arg(long, default_value_t = 200)]
    pretrain: usize,
    /// Step pairs to check
    #[arg(long, default_value_t = 10)]
    pairs: usize,
    /// Seed
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// One JSON object per pair
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct SamplesArgs {
    /// Data set (its values must be integers 0..=255, as stored)
    #[arg(long, default_value = "digits")]
    data: String,
    /// Which split: test | train
    #[arg(long, default_value = "test")]
    split: String,
    /// Number of samples (the first ones of the split, in file order)
    #[arg(long, default_value_t = 64)]
    count: usize,
    /// Split seed (as in training)
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Test fraction (as in training)
    #[arg(long, default_value_t = 0.2)]
    test_frac: f64,
    /// Output file
    #[arg(long)]
    out: PathBuf,
}

#[derive(Args)]
struct ExportArgs {
    /// Run directory or model .safetensors file
    #[arg(long)]
    ckpt: PathBuf,
    /// Output file
    #[arg(long)]
    out: PathBuf,
}

fn default_out(data: &str, method: &str) -> PathBuf {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = ((secs / 86400) as i64, secs % 86400);
    // civil-from-days (H. Hinnant), UTC
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    let clean: String = data
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    PathBuf::from("runs").join(format!(
        "{y:04}{m:02}{d:02}-{:02}{:02}{:02}-{clean}-{method}",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    ))
}

fn cmd_train(a: &TrainArgs) -> Result<()> {
    if a.backend == BackendName::Gpu && a.resume.is_none() {
        fdgr::gpu::probe()?;
    }
    let (cfg, resume, out) = match &a.resume {
        Some(dir) => {
            let l = checkpoint::load_checkpoint(dir)?;
            let cfg = l.state.config.clone();
            if l.state.epoch >= cfg.epochs {
                bail!(
                    "{}: the run is already complete ({} of {} epochs)",
                    dir.display(),
                    l.state.epoch,
                    cfg.epochs
                );
            }
            (cfg, Some(l), dir.clone())
        }
        None => {
            let cfg = a.config()?;
            let out = a
                .out
                .clone()
                .unwrap_or_else(|| default_out(&cfg.data, cfg.method.as_str()));
            if out.join("checkpoint.safetensors").exists() {
                bail!(
                    "{}: already holds a run (use --resume {} to continue it, or another --out)",
                    out.display(),
                    out.display()
                );
            }
            (cfg, None, out)
        }
    };
    let opts = train::RunOptions {
        out: Some(out.clone()),
        verbose: !a.quiet,
    };
    let s = train::run(&cfg, resume, &opts)?;
    train::print_summary(&s, Some(&out));
    Ok(())
}

fn cmd_eval(a: &EvalArgs) -> Result<()> {
    let (shape, theta) = checkpoint::load_model(&a.ckpt)?;
    let d = data::load(
        &a.data,
        &data::DataOptions {
            seed: a.seed,
            test_frac: a.test_frac,
            normalize: a.normalize,
        },
    )?;
    train::check_fit(&shape, &d, &format!("{} (model", a.ckpt.display()))
        .map_err(|e| anyhow::anyhow!("{e})"))?;
    let (x, y): (Vec<f32>, Vec<u32>) = match a.split.as_str() {
        "test" => (d.test.x.clone(), d.test.y.clone()),
        "train" => (d.train.x.clone(), d.train.y.clone()),
        "all" => (
            [d.train.x.clone(), d.test.x.clone()].concat(),
            [d.train.y.clone(), d.test.y.clone()].concat(),
        ),
        s => bail!("--split {s}: expected test, train or all"),
    };
    let (pool, threads) = fdgr::cpu::pool(0)?;
    let mut ws = vec![0.0f32; shape.workspace_len(fdgr::backend::EVAL_BATCH, false)];
    let (loss, ok) = pool.install(|| {
        fdgr::backend::evaluate_cpu(&shape, fdgr::cpu::Par { threads }, &theta, &x, &y, &mut ws)
    })?;
    let acc = ok as f64 / y.len().max(1) as f64;
    if a.json {
        println!(
            "{}",
            serde_json::json!({"ckpt": a.ckpt, "data": a.data, "split": a.split, "samples": y.len(),
                               "model": dims_str(shape.dims()), "loss": loss, "accuracy": acc})
        );
    } else {
        for n in &d.notes {
            eprintln!("{n}");
        }
        println!(
            "{} on {} ({} split, {} samples): loss {loss:.4}, accuracy {:.2}%",
            a.ckpt.display(),
            a.data,
            a.split,
            y.len(),
            100.0 * acc
        );
    }
    Ok(())
}

fn parse_methods(s: &str) -> Result<Vec<MethodName>> {
    s.split(',')
        .map(|m| MethodName::parse(m.trim()))
        .collect::<Result<_>>()
        .context("--methods")
}

fn cmd_sweep(a: &SweepArgs) -> Result<()> {
    let base = a.base.config()?;
    let seeds: Vec<u64> = a
        .seeds
        .split(',')
        .map(|s| {
            s.trim()
                .parse::<u64>()
                .with_context(|| format!("--seeds {}: '{s}' is not an integer", a.seeds))
        })
        .collect::<Result<_>>()?;
    let grid = sweep::Grid {
        methods: parse_methods(&a.methods)?,
        gammas: parse_list("--gammas", &a.gammas)?,
        epss: parse_list("--epss", &a.epss)?,
        seeds,
    };
    if grid.epss.iter().any(|e| *e <= 0.0) {
        bail!(
            "--epss {}: every ε must be > 0 (bgr applies −ε itself)",
            a.epss
        );
    }
    let out = a
        .base
        .out
        .clone()
        .unwrap_or_else(|| default_out(&base.data, "sweep"));
    sweep::run(&base, &grid, &out)?;
    eprintln!("wrote {}", out.display());
    Ok(())
}

fn cmd_bench(a: &BenchArgs) -> Result<()> {
    let act = fdgr_kernel::Act::from_name(&a.act)
        .with_context(|| format!("--act {}: unknown activation", a.act))?;
    let dims = parse_dims(&a.model)?;
    let shape = fdgr_kernel::Shape::try_new(&dims, act, fdgr_kernel::Loss::SoftmaxCe)
        .map_err(|e| anyhow::anyhow!("--model {}: {e}", a.model))?;
    if a.batch == 0 || a.repeats == 0 {
        bail!("--batch and --repeats must be at least 1");
    }
    if a.backend == BackendName::Gpu {
        fdgr::gpu::probe()?;
    }
    let spec = bench::BenchSpec {
        shape,
        batch: a.batch,
        methods: parse_methods(&a.methods)?,
        backend: a.backend,
        threads: a.threads,
        repeats: a.repeats,
        warmup: a.warmup,
        tf32: a.tf32,
    };
    if !a.json {
        println!("| method | backend | model | batch | threads | median ms | min ms | max ms | steps/s |");
        println!("|---|---|---|---|---|---|---|---|---|");
    }
    let json = a.json;
    bench::run(&spec, |r| {
        if json {
            println!("{}", r.to_json());
        } else {
            println!(
                "| {} | {} | {} {} | {} | {} | {:.4} | {:.4} | {:.4} | {:.1} |",
                r.method,
                r.backend,
                r.model,
                r.act,
                r.batch,
                r.threads,
                r.median_ms,
                r.min_ms,
                r.max_ms,
                1e3 / r.median_ms
            );
        }
    })?;
    Ok(())
}

fn cmd_dln(a: &DlnArgs) -> Result<()> {
    use fdgr::dln;
    let p = dln::Problem::new(a.d, a.n, a.k, a.seed)?;
    let grid = dln::Grid {
        methods: parse_methods(&a.methods)?,
        epss: parse_list("--epss", &a.epss)?,
        gammas: parse_list("--gammas", &a.gammas)?,
        alphas: parse_list("--alphas", &a.alphas)?,
    };
    if grid.alphas.iter().any(|x| *x <= 0.0) || grid.epss.contains(&0.0) {
        bail!("--alphas must be > 0 and --epss non-zero");
    }
    if !(a.lr > 0.0 && a.lr.is_finite()) {
        bail!("--lr {}: expected a positive number", a.lr);
    }
    let s = dln::Settings {
        lr: a.lr,
        max_steps: a.max_steps,
        tol: a.tol,
    };
    eprintln!(
        "DLN: d={} n={} k={} seed {}, β* = ±1 on k entries, X ~ N(0,1); full-batch steps of {} until L < {:e}·L(0) (max {} steps)",
        a.d, a.n, a.k, a.seed, a.lr, a.tol, a.max_steps
    );
    let (pool, _) = fdgr::cpu::pool(a.threads)?;
    let (rows, refs) = pool.install(|| dln::run_grid(&p, &grid, &s))?;
    if a.json {
        for r in refs.iter().map(|(_, r)| r).chain(rows.iter()) {
            println!("{}", serde_json::to_string(r)?);
        }
    } else {
        println!("| α | method | γ | ε | ‖β̂ − β*‖₂ | ‖β̂‖₁ | α_eff | α_eff max/min | train loss | steps |");
        println!("|---|---|---|---|---|---|---|---|---|---|");
        for (alpha, r) in &refs {
            println!(
                "| {alpha} | {} | - | - | {:.4} | {:.4} | {alpha} | 1 | {:.1e} | - |",
                r.method, r.recovery_error, r.l1_norm, r.train_loss
            );
            for r in rows.iter().filter(|r| r.alpha == *alpha) {
                println!(
                    "| {alpha} | {} | {} | {} | {:.4} | {:.4} | {:.4} | {:.2} | {:.1e} | {}{} |",
                    r.method,
                    if r.method == "sgd" {
                        "-".to_string()
                    } else {
                        r.gamma.to_string()
                    },
                    if r.eps == 0.0 {
                        "-".to_string()
                    } else {
                        r.eps.to_string()
                    },
                    r.recovery_error,
                    r.l1_norm,
                    r.alpha_eff,
                    r.alpha_eff_spread,
                    r.train_loss,
                    r.steps,
                    if r.converged { "" } else { " (not converged)" }
                );
            }
        }
        println!("| - | β* | - | - | 0 | {} | - | - | 0 | - |", a.k);
    }
    if let Some(out) = &a.out {
        std::fs::create_dir_all(out)
            .with_context(|| format!("{}: cannot create directory", out.display()))?;
        let text: String = refs
            .iter()
            .map(|(_, r)| r)
            .chain(rows.iter())
            .map(|r| serde_json::to_string(r).map(|s| s + "\n"))
            .collect::<Result<_, _>>()?;
        checkpoint::atomic_write(&out.join("dln.jsonl"), text.as_bytes())?;
        for (alpha, r) in &refs {
            dln::plot(
                &out.join(format!("dln-alpha{alpha}.png")),
                &rows,
                Some(r),
                *alpha,
                dln::Metric::Recovery,
            )?;
            let eff = out.join(format!("dln-alpha-eff-alpha{alpha}.png"));
            dln::plot(&eff, &rows, Some(r), *alpha, dln::Metric::AlphaEff)?;
        }
        eprintln!("wrote {}", out.display());
    }
    Ok(())
}

fn cmd_crosscheck(a: &CrossArgs) -> Result<()> {
    let act = fdgr_kernel::Act::from_name(&a.act)
        .with_context(|| format!("--act {}: unknown activation", a.act))?;
    let shape =
        fdgr_kernel::Shape::try_new(&parse_dims(&a.model)?, act, fdgr_kernel::Loss::SoftmaxCe)
            .map_err(|e| anyhow::anyhow!("--model {}: {e}", a.model))?;
    if a.batch == 0 || a.steps == 0 {
        bail!("--batch and --steps must be at least 1");
    }
    let rows = fdgr::gpu::crosscheck(shape, a.batch, a.steps, a.tf32)?;
    for r in &rows {
        println!("{}", r.to_json());
    }
    let failed: Vec<&str> = rows
        .iter()
        .filter(|r| !r.passed)
        .map(|r| r.method)
        .collect();
    if !failed.is_empty() {
        bail!("cross-check failed for {}", failed.join(", "));
    }
    eprintln!(
        "cross-check passed: {} methods within {:e}",
        rows.len(),
        rows.first().map_or(0.0, |r| r.tolerance)
    );
    Ok(())
}

fn cmd_flood(a: &FloodArgs) -> Result<()> {
    let act = fdgr_kernel::Act::from_name(&a.act)
        .with_context(|| format!("--act {}: unknown activation", a.act))?;
    let shape =
        fdgr_kernel::Shape::try_new(&parse_dims(&a.model)?, act, fdgr_kernel::Loss::SoftmaxCe)
            .map_err(|e| anyhow::anyhow!("--model {}: {e}", a.model))?;
    if !(a.lr > 0.0 && a.lr.is_finite()) || a.batch == 0 {
        bail!("--lr must be positive and --batch at least 1");
    }
    let d = data::load(&a.data, &data::DataOptions::default())?;
    train::check_fit(&shape, &d, "--model")?;
    let c = fdgr::flood::FloodCheck {
        shape,
        batch: a.batch,
        lr: a.lr,
        pretrain: a.pretrain,
        pairs: a.pairs,
        seed: a.seed,
    };
    let rows = fdgr::flood::run(&c, &d)?;
    if a.json {
        for r in &rows {
            println!("{}", serde_json::to_string(r)?);
        }
        return Ok(());
    }
    println!(
        "flooding on one batch of {} {} samples, model {shape} {}, η = {}: θ₂ vs θ₀ − η(∇L(θ₀+ηg₀) − g₀)",
        a.batch, a.data, a.act, a.lr
    );
    println!("| pair | L(θ₀) | b | L(θ₀+ηg₀) | ascent→descent | max |Δθ| | ulps | ‖θ₂−θ₀‖ | rel. err of θ₀−η²Hg₀ |");
    println!("|---|---|---|---|---|---|---|---|---|");
    for r in &rows {
        println!(
            "| {} | {:.6} | {:.6} | {:.6} | {} | {:.2e} | {:.1} | {:.3e} | {:.3} |",
            r.pair,
            r.loss0,
            r.level,
            r.loss1,
            if r.ascent_then_descent { "yes" } else { "no" },
            r.max_abs_diff,
            r.ulps,
            r.step_norm,
            r.hessian_rel_err
        );
    }
    Ok(())
}

fn cmd_samples(a: &SamplesArgs) -> Result<()> {
    let d = data::load(
        &a.data,
        &data::DataOptions {
            seed: a.seed,
            test_frac: a.test_frac,
            normalize: Normalize::None,
        },
    )?;
    let s = match a.split.as_str() {
        "test" => &d.test,
        "train" => &d.train,
        s => bail!("--split {s}: expected test or train"),
    };
    if a.count == 0 || a.count > s.len() {
        bail!(
            "--count {}: the {} split has {} samples",
            a.count,
            a.split,
            s.len()
        );
    }
    let f = d.features;
    let mut out = Vec::with_capacity(a.count * (f + 1));
    for i in 0..a.count {
        for &v in &s.x[i * f..(i + 1) * f] {
            if v.fract() != 0.0 || !(0.0..=255.0).contains(&v) {
                bail!(
                    "--data {}: value {v} is not a byte (samples need integer values 0..=255)",
                    a.data
                );
            }
            out.push(v as u8);
        }
        let y = s.y[i];
        if y > 255 {
            bail!("--data {}: label {y} does not fit a byte", a.data);
        }
        out.push(y as u8);
    }
    checkpoint::atomic_write(&a.out, &out)?;
    println!(
        "wrote {} ({} samples of {f} bytes + label, the first of the {} split)",
        a.out.display(),
        a.count,
        a.split
    );
    Ok(())
}

fn cmd_export(a: &ExportArgs) -> Result<()> {
    let (shape, theta) = checkpoint::load_model(&a.ckpt)?;
    let mut buf = vec![0u8; fdgr_kernel::export::file_len(&shape)];
    let n = fdgr_kernel::export::encode(&shape, &theta, &mut buf)
        .map_err(|e| anyhow::anyhow!("{}: {e}", a.ckpt.display()))?;
    checkpoint::atomic_write(&a.out, &buf[..n])?;
    println!(
        "wrote {} ({n} bytes): model {shape} {}, {} parameters",
        a.out.display(),
        shape.act.name(),
        shape.param_count()
    );
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let r = match &cli.cmd {
        Cmd::Train(a) => cmd_train(a),
        Cmd::Eval(a) => cmd_eval(a),
        Cmd::Sweep(a) => cmd_sweep(a),
        Cmd::Bench(a) => cmd_bench(a),
        Cmd::Dln(a) => cmd_dln(a),
        Cmd::FloodCheck(a) => cmd_flood(a),
        Cmd::Crosscheck(a) => cmd_crosscheck(a),
        Cmd::Samples(a) => cmd_samples(a),
        Cmd::Export(a) => cmd_export(a),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            if e.downcast_ref::<train::Diverged>().is_some() {
                ExitCode::from(train::EXIT_DIVERGED)
            } else {
                ExitCode::from(2)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn data_help_lists_every_source() {
        for s in ["digits", "mnist5k", "mnist:", "idx:", "cifar10:", "csv:"] {
            assert!(fdgr::data::DATA_HELP.contains(s));
        }
    }
}
