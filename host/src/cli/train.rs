//! `fdgr train`: flags, the run's data loaded once, and the end-of-run table.

use super::args::{DataArgs, MethodArgs, ModelArgs, OptimArgs};
use anyhow::anyhow;
use anyhow::{bail, Result};
use clap::Args;
use fdgr::checkpoint::{self, Loaded};
use fdgr::config::{AscentName, Augment, BackendName, Precision, ScheduleName, TrainConfig};
use fdgr::data::{self, Dataset};
use fdgr::dist::{self, local, Dist};
use fdgr::exit::{self, bad_input};
use fdgr::train::{self, describe_method, Summary};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// `fdgr train`.
#[derive(Args, Clone, Debug)]
#[command(
    allow_negative_numbers = true,
    after_help = after_help!(
        "Examples:\n  fdgr train\n  \
        fdgr train --method db --gamma 0.01 --epochs 10 --out runs/db\n  \
        fdgr train --data digits --model 64-32-10 --act tanh --method fgr --gamma 0.05 --eps 0.1\n  \
        fdgr train --data csv:my.csv.gz --model 20-64-3 --normalize standard\n  \
        fdgr train --data mnist5k --model lenet5 --epochs 10\n  \
        fdgr train --data mnist5k --augment crop --augment-pad 2 --lr 0.05 \\\n      \
        --model conv:16:5:p2,relu,maxpool:2,conv:32:5:p2,relu,maxpool:2,flatten,linear:128,relu,linear\n  \
        fdgr train --data cifar10:cifar-10-binary.tar.gz --normalize channel --augment crop-flip \\\n      \
        --model resnet20 --epochs 200 --gamma 0.01 --eps 0.1\n  \
        fdgr train --resume runs/db          # continue after an interruption, bit-exactly"
    )
)]
pub struct TrainArgs {
    /// Data set, split and scaling.
    #[command(flatten, next_help_heading = "Data")]
    pub data: DataArgs,
    /// The network.
    #[command(flatten, next_help_heading = "Model")]
    pub model: ModelArgs,
    /// Method and hyper-parameters.
    #[command(flatten, next_help_heading = "Method")]
    pub method: MethodArgs,
    /// Optimizer and schedule.
    #[command(flatten, next_help_heading = "Optimizer")]
    pub optim: OptimArgs,
    /// CPU threads (0 = all cores)
    #[arg(long, default_value_t = 0, help_heading = "Run")]
    pub threads: usize,
    /// Augmentation of training batches, for images: crop (random crop
    /// after zero padding: random shifts), crop-flip (and random horizontal
    /// flip: the CIFAR recipe)
    #[arg(long, value_enum, default_value_t = Augment::None, help_heading = "Data")]
    pub augment: Augment,
    /// Zero padding of the random crop, pixels per side
    #[arg(long, default_value_t = 4, help_heading = "Data")]
    pub augment_pad: usize,
    /// Backend
    #[arg(long, value_enum, default_value_t = BackendName::Cpu, help_heading = "Run")]
    pub backend: BackendName,
    /// Allow TF32 tensor-core products on the GPU (faster, ~1e-3 relative
    /// error; the same as --precision tf32)
    #[arg(long, help_heading = "Run")]
    pub tf32: bool,
    /// Arithmetic of the GPU's products and convolutions: f32 (reference),
    /// tf32, or bf16 (bf16 inputs to the cuBLAS products; convolutions on
    /// cuDNN in TF32); the rest stays f32
    #[arg(long, value_enum, default_value_t = Precision::F32, help_heading = "Run")]
    pub precision: Precision,
    /// After each epoch also evaluate the whole training split in eval mode
    /// (`eval_train_loss`/`eval_train_acc` in metrics.jsonl); the train
    /// loss and accuracy logged are otherwise the mean over the epoch's
    /// mini-batches, at θ before each step, as a PyTorch loop logs them
    #[arg(long, help_heading = "Run")]
    pub eval_train: bool,
    /// Start from the weights in this safetensors file instead of a random
    /// initialisation: fdgr's own model files, or a PyTorch state_dict saved
    /// with safetensors (nn.Sequential names; the CIFAR ResNet and
    /// torchvision names: conv1/bn1/layerN.M.…/shortcut|downsample/fc|linear;
    /// a module. prefix); batch-norm running statistics are taken from it.
    /// With --epochs 0 this imports a model: the run directory holds its
    /// weights, evaluated
    #[arg(long, conflicts_with = "resume", help_heading = "Run")]
    pub init: Option<PathBuf>,
    /// Output directory [default: runs/<time>-<data>-<method>]
    #[arg(long, help_heading = "Run")]
    pub out: Option<PathBuf>,
    /// Resume the run in this directory (its saved configuration is used)
    #[arg(long, conflicts_with = "out", help_heading = "Run")]
    pub resume: Option<PathBuf>,
    /// Print only the final table
    #[arg(long, short, help_heading = "Run")]
    pub quiet: bool,
    /// Data-parallel runs (under `mpirun -np N`, or `--gpus N`): start the
    /// ascent of F-GR/B-GR/C-GR/SAM/USAM/DB from the all-reduced gradient
    /// (global: the step of one process on the whole batch, one all-reduce
    /// per gradient evaluation) or from each process's own gradient (local:
    /// "m-sharpness", one all-reduce per step)
    #[arg(long, value_enum, default_value_t = AscentName::Global, help_heading = "Run")]
    pub ascent: AscentName,
    /// Data-parallel on N GPUs of this machine: starts one process per GPU
    /// (--backend gpu, gradients over NCCL); the global batch is --batch
    #[arg(
        long,
        value_name = "N",
        conflicts_with = "processes",
        help_heading = "Run"
    )]
    pub gpus: Option<usize>,
    /// Data-parallel on N CPU processes of this machine without MPI (the
    /// gradients pass through the launching process: for small models and
    /// tests; use `mpirun -np N` for real CPU jobs)
    #[arg(long, value_name = "N", help_heading = "Run")]
    pub processes: Option<usize>,
}

impl TrainArgs {
    /// The configuration, every value checked, and the data set when it
    /// had to be loaded already: without `--model` the data set sizes the
    /// default model; with it, the flags are checked before any data is
    /// read. [`load`] then loads the data set only if it is not loaded yet.
    pub fn config(&self) -> Result<(TrainConfig, Option<Dataset>)> {
        let (model, loaded) = match self.model.spec()? {
            Some(spec) => (spec, None),
            None => {
                let d = self.data.load()?;
                (ModelArgs::default_spec(&d), Some(d))
            }
        };
        let (m, o) = (&self.method, &self.optim);
        let c = TrainConfig {
            data: self.data.data.clone(),
            seed: self.data.options().seed,
            test_frac: self.data.options().test_frac,
            normalize: self.data.options().normalize,
            model,
            act: self.model.act.clone(),
            augment: self.augment,
            augment_pad: self.augment_pad,
            method: m.method,
            gamma: m.gamma,
            eps: m.eps,
            rho: m.rho,
            flood_level: m.flood_level,
            optimizer: o.optimizer,
            beta1: o.beta1,
            beta2: o.beta2,
            adam_eps: o.adam_eps,
            clip_norm: o.clip_norm,
            train_layers: o.train_layers.clone(),
            gr_every: m.gr_every,
            gr_prob: m.gr_prob,
            gamma_warmup: m.gamma_warmup,
            lr: o.lr,
            momentum: o.momentum,
            nesterov: o.nesterov,
            weight_decay: o.wd,
            schedule: o.schedule,
            warmup: o.warmup,
            epochs: o.epochs,
            batch: o.batch,
            threads: self.threads,
            backend: self.backend,
            tf32: self.tf32,
            ascent: self.ascent,
            precision: self.precision,
            eval_train: self.eval_train,
        };
        c.validate()?;
        Ok((c, loaded))
    }
}

/// The data set of `cfg`: `loaded` when [`TrainArgs::config`] loaded it.
pub fn load(cfg: &TrainConfig, loaded: Option<Dataset>) -> Result<Dataset> {
    match loaded {
        Some(d) => Ok(d),
        None => data::load(&cfg.data, &cfg.data_options()),
    }
}

/// A checked run, ready to start.
struct Job {
    cfg: TrainConfig,
    data: Dataset,
    resume: Option<Loaded>,
    out: PathBuf,
    init: Option<checkpoint::InitWeights>,
}

/// Reads and checks everything the run needs, for a run over `processes`
/// data-parallel processes.
fn prepare(a: &TrainArgs, processes: usize) -> Result<Job> {
    let (cfg, data, resume, out) = match &a.resume {
        Some(dir) => {
            let l = checkpoint::load_checkpoint(dir)?;
            let cfg = l.state.config.clone();
            // A run stopped after its last checkpoint but before its final
            // outputs were written is finished by resuming it (a missing
            // or torn plot is drawn again from the metrics).
            let finished = dir.join("summary.json").is_file()
                && fdgr::plot::is_complete_png_file(&dir.join("curves.png"));
            if l.state.epoch >= cfg.epochs && finished {
                bail!(
                    "{}: the run is already complete ({} of {} epochs)",
                    dir.display(),
                    l.state.epoch,
                    cfg.epochs
                );
            }
            cfg.validate()?;
            if cfg.backend == BackendName::Gpu {
                fdgr::gpu::probe()?;
            }
            let data = data::load(&cfg.data, &cfg.data_options())?;
            (cfg, data, Some(l), dir.clone())
        }
        None => {
            if a.backend == BackendName::Gpu {
                fdgr::gpu::probe()?;
            }
            let (cfg, loaded) = a.config()?;
            let out = a
                .out
                .clone()
                .unwrap_or_else(|| super::default_out(&cfg.data, cfg.method.as_str()));
            if out.join("checkpoint.safetensors").exists() {
                bail!(
                    "{}: already holds a run (use --resume {} to continue it, or another --out)",
                    out.display(),
                    out.display()
                );
            }
            let data = load(&cfg, loaded)?;
            (cfg, data, None, out)
        }
    };
    let arch = train::arch_for(&cfg, &data)?;
    train::check_data_parallel(&cfg, &arch, data.train.len(), processes)?;
    let init = match &a.init {
        Some(p) => {
            let w = checkpoint::load_init(p, &arch)?;
            if !a.quiet {
                eprintln!(
                    "init: {} tensors of model {} from {}{}",
                    arch.params().len() + arch.buffers().0.len(),
                    arch.spec,
                    p.display(),
                    if w.renamed.is_empty() {
                        String::new()
                    } else {
                        let r: Vec<String> = w
                            .renamed
                            .iter()
                            .map(|(a, b)| format!("{b} as {a}"))
                            .collect();
                        format!(" ({})", r.join(", "))
                    }
                );
            }
            Some(w)
        }
        None => None,
    };
    Ok(Job {
        cfg,
        data,
        resume,
        out,
        init,
    })
}

/// `fdgr train`.
pub fn run(a: &TrainArgs) -> Result<()> {
    let launched = std::env::var_os(local::ENV_RANK).is_some();
    if !launched {
        if let Some(n) = a.gpus {
            fdgr::gpu::probe().map_err(bad_input)?;
            if n > 1 && !fdgr_gpu::nccl::available() {
                return Err(bad_input(anyhow!(
                    "--gpus {n}: the NCCL library (libnccl.so.2) was not found; install NCCL \
                     (e.g. the libnccl2 package or the nvidia-nccl-cu12 wheel)"
                )));
            }
            return exit_with(local::launch(n, true).map_err(bad_input)?);
        }
        if let Some(n) = a.processes {
            return exit_with(local::launch(n, false).map_err(bad_input)?);
        }
    }
    let dist = Arc::new(dist::init().map_err(bad_input)?);
    if dist.is_parallel() {
        if !launched {
            select_gpu(dist.local_rank());
        }
        return run_parallel(a, dist);
    }
    let job = prepare(a, 1).map_err(bad_input)?;
    let opts = train::RunOptions {
        out: Some(job.out.clone()),
        verbose: !a.quiet,
        dist,
        init: job.init.clone(),
    };
    let s = train::run(&job.cfg, &job.data, job.resume, &opts)?;
    print_summary(&s, Some(&job.out));
    Ok(())
}

/// `fdgr train` as one process of a data-parallel job: every process
/// prepares (reads and checks its input) and they agree on the outcome
/// before any trains; an error in training that the processes do not
/// meet alike (a divergence they do) stops the whole job.
fn run_parallel(a: &TrainArgs, dist: Arc<Dist>) -> Result<()> {
    let (rank, root) = (dist.rank(), dist.is_root());
    let job = prepare(a, dist.size()).map_err(bad_input);
    // every process's exit code of its preparation (0: ready)
    let mut codes = vec![0u64; dist.size()];
    codes[rank] = match &job {
        Ok(_) => 0,
        Err(e) => exit::code(e) as u64,
    };
    dist.max_u64(&mut codes)?;
    let first_failed = codes.iter().position(|&c| c != 0);
    let worst = codes.iter().copied().max().unwrap_or(0) as u8;
    let job = match (job, first_failed) {
        (Ok(j), None) => j,
        // the lowest failing rank says why (on one machine they all fail
        // alike); the others stop with the same exit code, silently
        (Err(e), Some(r)) if r == rank => {
            let code = exit::code(&e);
            let e = if root {
                e
            } else {
                e.context(format!("rank {rank}"))
            };
            return Err(said_then_stop(&dist, Some(e), code));
        }
        _ => return Err(said_then_stop(&dist, None, worst)),
    };
    let opts = train::RunOptions {
        out: Some(job.out.clone()),
        verbose: !a.quiet,
        dist: dist.clone(),
        init: job.init.clone(),
    };
    match train::run(&job.cfg, &job.data, job.resume, &opts) {
        Ok(s) => {
            if root {
                print_summary(&s, Some(&job.out));
            }
            Ok(())
        }
        // every process rejects the same step: rank 0 says so
        Err(e) if exit::code(&e) == exit::DIVERGED => {
            Err(said_then_stop(&dist, root.then_some(e), exit::DIVERGED))
        }
        Err(e) => {
            let code = exit::code(&e);
            eprintln!(
                "error: rank {rank} of {}: {e:#}; stopping every process of the job",
                dist.size()
            );
            dist.abort(code)
        }
    }
}

/// An outcome every process of the job met alike: the one process that
/// has `e` prints it, then all meet once more before they exit with
/// `code`, so that no launcher (mpirun stops the job when the first
/// process exits non-zero) cuts the message off.
fn said_then_stop(dist: &Dist, e: Option<anyhow::Error>, code: u8) -> anyhow::Error {
    if let Some(e) = e {
        eprintln!("error: {e:#}");
    }
    // a barrier; if it fails (a process died meanwhile), exit all the same
    let _ = dist.max_u64(&mut [0]);
    silent(code)
}

/// The launcher's outcome: its processes printed what went wrong.
fn exit_with(code: u8) -> Result<()> {
    if code == 0 {
        Ok(())
    } else {
        Err(silent(code))
    }
}

/// Under an MPI launcher: makes this process's GPU (its index among the
/// processes on its machine, in `CUDA_VISIBLE_DEVICES`'s list when set)
/// the only visible one, so that device 0 of the GPU backend is its own.
/// Set before anything touches CUDA; CPU runs ignore it.
fn select_gpu(local_rank: usize) {
    let dev = match std::env::var("CUDA_VISIBLE_DEVICES") {
        Ok(v) if !v.trim().is_empty() => match v.split(',').nth(local_rank) {
            Some(d) => d.trim().to_string(),
            None => return,
        },
        _ => local_rank.to_string(),
    };
    std::env::set_var("CUDA_VISIBLE_DEVICES", dev);
}

fn silent(code: u8) -> anyhow::Error {
    exit::Silent(code).into()
}

/// Prints the end-of-run table.
pub fn print_summary(s: &Summary, out: Option<&Path>) {
    let c = &s.config;
    println!();
    println!("| run | value |");
    println!("|---|---|");
    println!(
        "| data | {} ({} train / {} test) |",
        c.data, s.train_samples, s.test_samples
    );
    println!(
        "| model | {} {} ({} parameters) |",
        s.model, c.act, s.params
    );
    println!(
        "| method | {} ({}) |",
        c.method.as_str(),
        describe_method(c)
    );
    let sched = match c.schedule {
        ScheduleName::Cosine => "cosine",
        ScheduleName::Constant => "constant",
    };
    let o = c.optimizer();
    let opt = format!("{} lr {} {sched}, {o}", o.label(), c.lr);
    let clip = c
        .clip_norm
        .map_or(String::new(), |n| format!(", clip norm {n}"));
    println!("| optimizer | {opt}{clip}, batch {} |", c.batch);
    println!("| backend | {} ({} threads) |", s.backend, s.threads);
    println!(
        "| epochs | {} ({:.1} s, {:.1} steps/s) |",
        s.last.epoch, s.seconds, s.steps_per_sec
    );
    println!(
        "| final train | loss {:.4}, accuracy {:.2}% |",
        s.last.train_loss,
        100.0 * s.last.train_acc
    );
    println!(
        "| final test | loss {:.4}, accuracy {:.2}% |",
        s.last.test_loss,
        100.0 * s.last.test_acc
    );
    println!(
        "| best test | {:.2}% (epoch {}) |",
        100.0 * s.best_test_acc,
        s.best_epoch
    );
    if let Some(o) = out {
        println!("| outputs | {} |", o.display());
    }
}
