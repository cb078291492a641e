//! `fdgr train`: the training loop, metrics, checkpoints and resume.
//!
//! Determinism: θ is initialised from `Rng::new(seed)`; the data order of
//! each epoch is a shuffle by a second generator whose state is saved in
//! every checkpoint. With the same configuration (thread count included) a
//! resumed run reproduces the uninterrupted one bit for bit.

use crate::arch::Arch;
use crate::augment::CropFlip;
use crate::backend::{Backend, CpuBackend, StepError};
use crate::checkpoint::{self, EpochRecord, Loaded, TrainState, Weights};
use crate::config::{Augment, BackendName, TrainConfig};
use crate::cpu::{pool, Par};
use crate::data::Dataset;
use crate::dist::{self, Dist};
use anyhow::{bail, Context, Result};
use fdgr_kernel::{init_params, Rng, SgdState};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

/// Steps between loss reads (device round trips).
const FLUSH_EVERY: usize = 8;

/// Exit code of a run stopped by a non-finite loss or gradient.
pub const EXIT_DIVERGED: u8 = crate::exit::DIVERGED;

pub use crate::exit::Diverged;

/// How a run reports and where it writes.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// Output directory; `None` writes nothing (sweeps).
    pub out: Option<PathBuf>,
    /// Show the progress bar and per-epoch lines.
    pub verbose: bool,
    /// The processes of a data-parallel run (default: this one alone).
    /// Every process runs [`run`] alike; rank 0 alone prints and writes
    /// `out`.
    pub dist: Arc<Dist>,
    /// Start from these weights instead of a random initialisation
    /// (`--init`).
    pub init: Option<checkpoint::InitWeights>,
}

/// What a finished run returns.
#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    /// Configuration.
    pub config: TrainConfig,
    /// Model, e.g. 784-512-512-10.
    pub model: String,
    /// Number of parameters.
    pub params: usize,
    /// Data description (source, split, normalisation).
    pub data: Vec<String>,
    /// Training samples.
    pub train_samples: usize,
    /// Test samples.
    pub test_samples: usize,
    /// Backend actually used.
    pub backend: String,
    /// Threads actually used (CPU).
    pub threads: usize,
    /// Last epoch's metrics.
    pub last: EpochRecord,
    /// Best test accuracy and its epoch.
    pub best_test_acc: f64,
    /// Epoch of the best test accuracy.
    pub best_epoch: u64,
    /// Optimizer steps per second of training (evaluation excluded).
    pub steps_per_sec: f64,
    /// Optimizer steps taken in all (resumed runs included).
    #[serde(default)]
    pub steps: u64,
    /// Of those, the steps that took a fresh ascent (amortized GR reuses
    /// the last one on the others; every step when not amortized).
    #[serde(default)]
    pub fresh_ascents: u64,
    /// Wall time in seconds.
    pub seconds: f64,
    /// Processes of the data-parallel run (1: one process).
    pub processes: usize,
    /// All-reduces per training step (0 on one process).
    #[serde(default)]
    pub allreduce_per_step: f64,
    /// Bytes each process sent into all-reduces per training step.
    #[serde(default)]
    pub allreduce_bytes_per_step: f64,
    /// Seconds rank 0 spent per training step in its all-reduces (the
    /// transfer and the wait for the slowest process).
    #[serde(default)]
    pub allreduce_seconds_per_step: f64,
    /// Every epoch.
    pub history: Vec<EpochRecord>,
}

fn order_rng(seed: u64) -> Rng {
    Rng::new(seed.wrapping_mul(0x2545_F491_4F6C_DD1D) ^ 0xD1B5_4A32_D192_ED03)
}

/// Checks that the network fits the data: its input takes one sample
/// (C·H·W values) and it has one output per class.
pub fn check_fit(arch: &Arch, data: &Dataset, model_flag: &str) -> Result<()> {
    if arch.inputs() != data.features {
        bail!(
            "{model_flag} {}: input width {} but data {} has {} features per sample ({}x{}x{})",
            arch.spec,
            arch.inputs(),
            data.name,
            data.features,
            data.dims.0,
            data.dims.1,
            data.dims.2
        );
    }
    if arch.outputs() != data.classes {
        bail!(
            "{model_flag} {}: {} outputs but data {} has {} classes",
            arch.spec,
            arch.outputs(),
            data.name,
            data.classes
        );
    }
    Ok(())
}

/// Checks that every process of a data-parallel run of `cfg` on `n_train`
/// training samples gets samples in every global batch (the epoch's last,
/// shorter batch included), enough for batch norm's batch statistics.
pub fn check_data_parallel(
    cfg: &TrainConfig,
    arch: &Arch,
    n_train: usize,
    processes: usize,
) -> Result<()> {
    if processes <= 1 {
        return Ok(());
    }
    let last = match n_train % cfg.batch {
        0 => cfg.batch,
        r => r,
    };
    let smallest = last.min(cfg.batch) / processes;
    let where_ = if last < cfg.batch {
        format!("the last batch of each epoch has {last} samples ({n_train} training samples, --batch {})", cfg.batch)
    } else {
        format!("--batch {}", cfg.batch)
    };
    if smallest == 0 {
        bail!("{processes} processes: {where_}, fewer than one per process; use a larger batch or fewer processes");
    }
    let bn_hw = arch
        .model
        .nodes()
        .iter()
        .filter(|n| matches!(n.op, fdgr_kernel::Op::BatchNorm))
        .map(|n| n.in_dims.hw())
        .min();
    if let Some(hw) = bn_hw {
        if smallest * hw < 2 {
            bail!(
                "{processes} processes: {where_}, so a process may get {smallest} sample(s), too few for \
                 batch norm's per-process batch statistics (at least 2 values per channel); use a larger \
                 batch or fewer processes"
            );
        }
    }
    Ok(())
}

/// The network of `cfg` on `data`, checked against it.
pub fn arch_for(cfg: &TrainConfig, data: &Dataset) -> Result<Arch> {
    let arch = cfg.arch(data.dims, data.classes)?;
    check_fit(&arch, data, "--model")?;
    // the subset --train-layers names exists in this layer list
    let mode = cfg.train_layers()?;
    fdgr_kernel::finetune::mark_trained(&mut arch.layers.clone(), mode)
        .map_err(|e| anyhow::anyhow!("--train-layers {mode}: {e} (model {})", arch.spec))?;
    Ok(arch)
}

/// Refuses (exit code 2) a CPU run whose buffers need more memory than
/// the process may use ([`crate::memory`]), before anything is allocated.
pub fn check_memory(cfg: &TrainConfig, arch: &Arch, data: &Dataset, threads: usize) -> Result<()> {
    if cfg.backend != BackendName::Cpu {
        return Ok(());
    }
    let method = cfg.method();
    let opt = cfg.optimizer();
    // the backend's θ, direction, scratch points, optimizer state and
    // amortized correction; the trainer's θ and optimizer-state copies
    let states = fdgr_kernel::Optim::state_vectors(&opt);
    let vectors = 2 + method.scratch_vectors() + states + usize::from(cfg.amortized()) + 1 + states;
    crate::memory::check(
        &format!(
            "model {} with batch {} ({} parameters)",
            arch.spec,
            cfg.batch,
            arch.param_count()
        ),
        crate::memory::train_bytes(
            arch,
            cfg.batch,
            vectors,
            method.needs_hvp(),
            data.train.x.len(),
            threads,
        ),
    )
}

/// Builds the backend of `cfg`.
pub fn make_backend(
    cfg: &TrainConfig,
    arch: &Arch,
    data: &Dataset,
    threads: usize,
) -> Result<Box<dyn Backend>> {
    let method = cfg.method();
    let opt = cfg.optimizer();
    Ok(match cfg.backend {
        BackendName::Cpu => match cfg.train_layers()? {
            fdgr_kernel::finetune::Mode::Full => Box::new(CpuBackend::new(
                arch.model.clone(),
                Par { threads },
                data.train.x.clone(),
                data.train.y.clone(),
                cfg.batch,
                &method,
                &opt,
                cfg.amortized(),
            )?),
            mode => Box::new(CpuBackend::partial(
                arch.model.clone(),
                &arch.layers,
                mode,
                Par { threads },
                data.train.x.clone(),
                data.train.y.clone(),
                cfg.batch,
                &method,
                &opt,
                cfg.amortized(),
            )?),
        },
        BackendName::Gpu => crate::gpu::backend(
            arch,
            data,
            cfg.batch,
            &method,
            &opt,
            cfg.precision.gpu(cfg.tf32),
            cfg.amortized(),
            cfg.train_layers()?,
        )?,
    })
}

/// The augmentation generator of `epoch` (1-based): derived from the seed
/// and the epoch, so a run resumed at an epoch boundary draws the same
/// crops and flips as an uninterrupted one.
fn augment_rng(seed: u64, epoch: u64) -> Rng {
    let mut r = Rng::new(seed ^ 0xA076_1D64_78BD_642F);
    let mut s = r.next_u64();
    for _ in 0..epoch % 64 {
        s = Rng::new(s).next_u64();
    }
    Rng::new(s ^ epoch.wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

/// Runs (or resumes) a training run on `data`, the data set of `cfg`
/// (loaded once by the caller, who may have sized the model from it).
pub fn run(
    cfg: &TrainConfig,
    data: &Dataset,
    resume: Option<Loaded>,
    opts: &RunOptions,
) -> Result<Summary> {
    cfg.validate()?;
    let want = if cfg.threads == 0 && opts.dist.is_parallel() {
        opts.dist.default_threads()
    } else {
        cfg.threads
    };
    let (pool, threads) = pool(want)?;
    pool.install(|| run_on(cfg, data, resume, opts, threads))
}

/// Runs on already loaded data (sweeps load once).
pub fn run_on(
    cfg: &TrainConfig,
    data: &Dataset,
    resume: Option<Loaded>,
    opts: &RunOptions,
    threads: usize,
) -> Result<Summary> {
    let arch = arch_for(cfg, data)?;
    let dist = opts.dist.clone();
    let par = dist.is_parallel();
    // rank 0 alone prints and writes
    let verbose = opts.verbose && dist.is_root();
    let out_dir = if dist.is_root() {
        opts.out.clone()
    } else {
        None
    };
    check_data_parallel(cfg, &arch, data.train.len(), dist.size())?;
    if verbose {
        for n in &data.notes {
            eprintln!("{n}");
        }
    }
    let spe = data.train.len().div_ceil(cfg.batch) as u64;
    check_memory(cfg, &arch, data, threads)?;
    let mut backend = make_backend(cfg, &arch, data, threads)?;
    if par {
        backend.set_data_parallel(dist.clone(), cfg.ascent.mode())?;
    }
    let (mut st, theta, mom) = start(cfg, &arch, &mut *backend, resume, opts)?;
    if let Some(out) = &out_dir {
        std::fs::create_dir_all(out)
            .with_context(|| format!("{}: cannot create directory", out.display()))?;
    }
    if verbose {
        announce(cfg, &arch, &dist, &*backend, threads, spe, &st);
    }
    let pb = progress_bar(verbose, cfg.epochs * spe, st.step);
    let mut run = Run {
        cfg,
        data,
        arch: &arch,
        dist: &dist,
        out: out_dir.as_deref(),
        last_good: opts.out.as_deref(),
        pb: &pb,
        verbose,
        spe,
        started: Instant::now(),
        base_seconds: st.seconds,
        theta,
        mom,
    };
    let mut timed = (0.0f64, 0u64);
    let traffic0 = dist.step_traffic();
    let comm0 = dist.step_seconds();
    let mut order: Vec<u32> = (0..data.train.len() as u32).collect();
    while st.epoch < cfg.epochs {
        let epoch = st.epoch + 1;
        let t0 = Instant::now();
        let (rng, sgd, step, lr) = run.epoch(&mut *backend, &st, &mut order)?;
        timed.0 += t0.elapsed().as_secs_f64();
        timed.1 += step - st.step;
        if par {
            average_state(&mut *backend, &dist)?;
        }
        let rec = run.record(&mut *backend, (epoch, step, lr as f64))?;
        st.epoch = epoch;
        st.step = step;
        st.sgd_steps = sgd.steps;
        st.rng = rng.state;
        st.seconds = rec.seconds;
        st.history.push(rec);
        if par {
            run.check_identical(&mut *backend)?;
        }
        run.save(&mut *backend, &st)?;
    }
    if st.history.is_empty() {
        // --epochs 0: the initial (or given) weights, evaluated and
        // written as a finished run of no steps
        let lr = cfg.schedule(spe).lr(st.step);
        let rec = run.record(&mut *backend, (0, st.step, lr as f64))?;
        st.history.push(rec);
        run.save(&mut *backend, &st)?;
    }
    pb.finish_and_clear();
    let comm = Comm {
        traffic0,
        comm0,
        steps: timed.1,
    };
    let summary = run.summary(&mut *backend, &st, threads, timed, comm)?;
    if let Some(out) = &out_dir {
        checkpoint::atomic_write(
            &out.join("summary.json"),
            serde_json::to_string_pretty(&summary)?.as_bytes(),
        )?;
        let title = format!("{} {} on {}", summary.model, cfg.method.as_str(), cfg.data);
        crate::plot::curves(&out.join("curves.png"), &title, &st.history)?;
    }
    Ok(summary)
}

/// The state a run starts from: the resumed checkpoint's, or step 0 with
/// `--init`'s weights or fresh ones; θ and the optimizer state are on the
/// backend, and returned as the host's copies.
fn start(
    cfg: &TrainConfig,
    arch: &Arch,
    backend: &mut dyn Backend,
    resume: Option<Loaded>,
    opts: &RunOptions,
) -> Result<(TrainState, Vec<f32>, Vec<f32>)> {
    let p = arch.param_count();
    let (st, theta, mom) = match resume {
        Some(l) => {
            backend.set_state(&l.bn_state, l.tracked)?;
            backend.set_correction(&l.correction)?;
            (l.state, l.theta, l.opt_state)
        }
        None => {
            let mut theta = crate::memory::zeros("parameters", p)?;
            match &opts.init {
                Some(w) => {
                    theta.copy_from_slice(&w.theta);
                    backend.set_state(&w.state, w.tracked)?;
                }
                None => init_params(arch.model.nodes(), &mut theta, &mut Rng::new(cfg.seed)),
            }
            let st = TrainState {
                config: cfg.clone(),
                epoch: 0,
                step: 0,
                sgd_steps: 0,
                rng: order_rng(cfg.seed).state,
                history: vec![],
                seconds: 0.0,
            };
            let mom = crate::memory::zeros(
                "optimizer state",
                p * fdgr_kernel::Optim::state_vectors(&cfg.optimizer()),
            )?;
            (st, theta, mom)
        }
    };
    backend.set_params(&theta, if mom.is_empty() { None } else { Some(&mom) })?;
    Ok((st, theta, mom))
}

/// The start-up lines: data parallelism, model, method, backend, batch,
/// augmentation, where a resumed run continues.
fn announce(
    cfg: &TrainConfig,
    arch: &Arch,
    dist: &Dist,
    backend: &dyn Backend,
    threads: usize,
    spe: u64,
    st: &TrainState,
) {
    if dist.is_parallel() {
        eprintln!(
            "data-parallel: {} processes over {}, {threads} thread(s) each; each takes its slice \
             of every global batch of {} ({}..{} samples); ascent {}",
            dist.size(),
            dist.describe(),
            cfg.batch,
            cfg.batch / dist.size(),
            cfg.batch.div_ceil(dist.size()),
            cfg.ascent.as_str()
        );
    }
    eprintln!(
        "model {} ({} parameters), method {} ({}), {} backend, {threads} thread(s), batch {}, {} steps/epoch{}",
        arch.describe(),
        arch.param_count(),
        cfg.method.as_str(),
        describe_method(cfg),
        backend.name(),
        cfg.batch,
        spe,
        match cfg.augment {
            Augment::None => String::new(),
            Augment::Crop => format!(", augmentation: random crop ({}-pixel zero padding)", cfg.augment_pad),
            Augment::CropFlip => format!(
                ", augmentation: random crop ({}-pixel zero padding) + horizontal flip",
                cfg.augment_pad
            ),
        }
    );
    if st.epoch > 0 {
        eprintln!(
            "resuming at epoch {}/{} (step {})",
            st.epoch, cfg.epochs, st.step
        );
    }
}

/// The progress bar of `total` steps at `pos` (hidden unless `verbose`).
fn progress_bar(verbose: bool, total: u64, pos: u64) -> ProgressBar {
    if !verbose {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    pb.set_style(
        ProgressStyle::with_template(
            "{spinner} [{bar:30}] {pos}/{len} steps  {msg}  {per_sec}  ETA {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    pb.set_position(pos);
    pb
}

/// What the epochs of one run share.
struct Run<'a> {
    cfg: &'a TrainConfig,
    data: &'a Dataset,
    arch: &'a Arch,
    dist: &'a Dist,
    /// Where rank 0 writes.
    out: Option<&'a Path>,
    /// The run directory named in a divergence message.
    last_good: Option<&'a Path>,
    pb: &'a ProgressBar,
    verbose: bool,
    /// Steps per epoch.
    spe: u64,
    started: Instant,
    base_seconds: f64,
    /// The host's copies of θ and the optimizer state (for checkpoints).
    theta: Vec<f32>,
    mom: Vec<f32>,
}

/// The data-parallel traffic counters at the start and the timed steps.
struct Comm {
    traffic0: (u64, u64),
    comm0: f64,
    steps: u64,
}

impl Run<'_> {
    /// One epoch's steps over a fresh shuffle of `order` from `st`: the
    /// epoch's order generator, the SGD state, the step count and the last
    /// learning rate after it. A non-finite step stops the run
    /// ([`Diverged`]).
    fn epoch(
        &self,
        backend: &mut dyn Backend,
        st: &TrainState,
        order: &mut [u32],
    ) -> Result<(Rng, SgdState, u64, f32)> {
        let (cfg, data) = (self.cfg, self.data);
        let epoch = st.epoch + 1;
        let sched = cfg.schedule(self.spe);
        let opt = cfg.optimizer();
        let mut rng = Rng { state: st.rng };
        if cfg.augment != Augment::None {
            let a = CropFlip::new(data.dims, cfg.augment_pad)
                .with_fill(if data.zero.len() == data.dims.0 {
                    &data.zero
                } else {
                    &[0.0]
                })
                .with_flip(cfg.augment == Augment::CropFlip);
            backend.set_augment(Some((a, augment_rng(cfg.seed, epoch))))?;
        }
        order
            .iter_mut()
            .enumerate()
            .for_each(|(i, o)| *o = i as u32);
        rng.shuffle(order);
        let mut sgd = SgdState {
            steps: st.sgd_steps,
        };
        let mut step = st.step;
        let mut shown = f32::NAN;
        let mut lr = sched.lr(step);
        let n_batches = order.len().div_ceil(cfg.batch);
        for (k, idx) in order.chunks(cfg.batch).enumerate() {
            lr = sched.lr(step);
            let method = cfg.method_at(step, self.spe);
            let mut r = backend.step(idx, &method, &opt, &cfg.step_options(step), &mut sgd, lr);
            // Read the loss (a device round trip on a GPU) only every few
            // steps and at the end of the epoch.
            if r.is_ok() && (k % FLUSH_EVERY == FLUSH_EVERY - 1 || k + 1 == n_batches) {
                r = backend.flush(&mut sgd).map(|l| shown = l);
            }
            match r {
                Ok(()) => {}
                Err(StepError::NonFinite) => {
                    self.pb.abandon();
                    let last = match self.last_good {
                        Some(o) if st.epoch > 0 => format!(
                            "; the last good checkpoint {} (epoch {}) is intact",
                            o.join("checkpoint.safetensors").display(),
                            st.epoch
                        ),
                        _ => String::new(),
                    };
                    return Err(Diverged(format!(
                        "diverged: non-finite loss or gradient in epoch {epoch} (at or before step {}, lr {lr:.4}); the step was rejected and training stopped{last}",
                        step + 1
                    ))
                    .into());
                }
                Err(StepError::Other(e)) => return Err(e),
            }
            step += 1;
            self.pb.inc(1);
            if k % FLUSH_EVERY == FLUSH_EVERY - 1 {
                let acc = st.history.last().map_or(String::new(), |r| {
                    format!(" test acc {:.2}%", 100.0 * r.test_acc)
                });
                self.pb
                    .set_message(format!("epoch {epoch}/{} loss {shown:.4}{acc}", cfg.epochs));
            }
        }
        Ok((rng, sgd, step, lr))
    }

    /// The epoch's record (evaluated now), printed.
    fn record(&self, backend: &mut dyn Backend, at: (u64, u64, f64)) -> Result<EpochRecord> {
        let rec = record(
            backend,
            self.data,
            self.dist,
            at,
            self.base_seconds + self.started.elapsed().as_secs_f64(),
            self.cfg.eval_train,
        )?;
        say(
            self.pb,
            self.verbose,
            describe_record(&rec, self.cfg.epochs),
        );
        Ok(rec)
    }

    /// Data parallel: θ, the optimizer state and the running statistics
    /// are the same on every process.
    fn check_identical(&mut self, backend: &mut dyn Backend) -> Result<()> {
        let mom = &mut self.mom;
        backend.params(
            &mut self.theta,
            if mom.is_empty() { None } else { Some(mom) },
        )?;
        let (bn, _) = backend.state()?;
        self.dist.check_identical(
            "θ, optimizer state or running statistics",
            &[&self.theta, &self.mom, &bn],
        )
    }

    /// The epoch's checkpoint, model file and metrics (rank 0).
    fn save(&mut self, backend: &mut dyn Backend, st: &TrainState) -> Result<()> {
        match self.out {
            Some(out) => save_epoch(
                out,
                st,
                self.arch,
                backend,
                &mut self.theta,
                &mut self.mom,
                &self.data.pre,
            ),
            None => Ok(()),
        }
    }

    /// The run's summary, θ read back from the backend.
    fn summary(
        &mut self,
        backend: &mut dyn Backend,
        st: &TrainState,
        threads: usize,
        (train_time, train_steps): (f64, u64),
        comm: Comm,
    ) -> Result<Summary> {
        let (cfg, dist) = (self.cfg, self.dist);
        let mom = &mut self.mom;
        backend.params(
            &mut self.theta,
            if mom.is_empty() { None } else { Some(mom) },
        )?;
        let last = st.history.last().cloned().context("no epoch completed")?;
        let (best_epoch, best_test_acc) = st
            .history
            .iter()
            .map(|r| (r.epoch, r.test_acc))
            .fold((0, f64::NEG_INFINITY), |b, x| if x.1 > b.1 { x } else { b });
        Ok(Summary {
            config: cfg.clone(),
            model: self.arch.spec.clone(),
            params: self.arch.param_count(),
            data: self.data.notes.clone(),
            train_samples: self.data.train.len(),
            test_samples: self.data.test.len(),
            backend: backend.name().into(),
            threads,
            last,
            best_test_acc,
            best_epoch,
            steps_per_sec: if train_time > 0.0 {
                train_steps as f64 / train_time
            } else {
                0.0
            },
            processes: dist.size(),
            allreduce_per_step: per_step(comm.traffic0.0, dist.step_traffic().0, comm.steps),
            allreduce_bytes_per_step: per_step(comm.traffic0.1, dist.step_traffic().1, comm.steps),
            allreduce_seconds_per_step: if comm.steps > 0 {
                (dist.step_seconds() - comm.comm0) / comm.steps as f64
            } else {
                0.0
            },
            steps: st.step,
            fresh_ascents: (0..st.step).filter(|&s| cfg.fresh_ascent(s)).count() as u64,
            seconds: st.seconds,
            history: st.history.clone(),
        })
    }
}

fn per_step(before: u64, after: u64, steps: u64) -> f64 {
    if steps == 0 {
        0.0
    } else {
        (after - before) as f64 / steps as f64
    }
}

/// Replaces the running statistics of every process by their mean over
/// the processes (see [`crate::dist`]).
fn average_state(backend: &mut dyn Backend, dist: &Dist) -> Result<()> {
    let (bn, tracked) = backend.state()?;
    if bn.is_empty() {
        return Ok(());
    }
    let mut sum: Vec<f64> = bn.iter().map(|&v| v as f64).collect();
    dist.sum_f64(&mut sum)?;
    let n = dist.size() as f64;
    let mean: Vec<f32> = sum.iter().map(|&v| (v / n) as f32).collect();
    backend.set_state(&mean, tracked)
}

/// Mean loss and correct predictions on (x, y): each process evaluates
/// its slice of the rows, and the sums are all-reduced.
fn evaluate_split(
    backend: &mut dyn Backend,
    x: &[f32],
    y: &[u32],
    features: usize,
    dist: &Dist,
) -> Result<(f64, usize)> {
    if !dist.is_parallel() {
        return backend.evaluate(x, y);
    }
    let n = y.len();
    let (lo, hi) = dist::slice(n, dist.rank(), dist.size());
    let (loss, ok) = if hi > lo {
        backend.evaluate(&x[lo * features..hi * features], &y[lo..hi])?
    } else {
        (0.0, 0)
    };
    let mut v = [loss * (hi - lo) as f64, ok as f64];
    dist.sum_f64(&mut v)?;
    Ok((v[0] / n.max(1) as f64, v[1] as usize))
}

/// Prints a line above the progress bar, or plainly when stderr is not a
/// terminal (the bar is hidden there).
fn say(pb: &ProgressBar, verbose: bool, line: String) {
    use std::io::IsTerminal;
    if !verbose {
        return;
    }
    if std::io::stderr().is_terminal() {
        pb.println(line);
    } else {
        eprintln!("{line}");
    }
}

/// The method's hyper-parameters in words.
pub fn describe_method(cfg: &TrainConfig) -> String {
    let base = cfg
        .method
        .method(cfg.gamma, cfg.eps, cfg.rho, cfg.flood_level)
        .to_string();
    let mut extra = String::new();
    if cfg.gamma_warmup > 0 && cfg.method.uses_gamma() {
        extra += &format!(", γ warm-up {} epochs", cfg.gamma_warmup);
    }
    if cfg.gr_every > 1 {
        extra += &format!(", fresh ascent every {} steps", cfg.gr_every);
    }
    if let Some(p) = cfg.gr_prob {
        extra += &format!(", fresh ascent with probability {p}");
    }
    base + &extra
}

/// Writes an epoch's outputs, each atomically. The checkpoint is the
/// commit point and comes last: a kill before it leaves the previous
/// epoch's checkpoint, and the resumed run redoes this epoch and rewrites
/// the model and the metrics with the same bytes; a kill after it finds
/// them written already. (Written first, a kill between the checkpoint
/// and the metrics lost the epoch's metrics line.)
/// The metrics of the model as it stands after `at` = (epoch, step, lr):
/// loss and accuracy on both splits, batch norm on its running
/// statistics.
fn record(
    backend: &mut dyn Backend,
    data: &Dataset,
    dist: &Dist,
    at: (u64, u64, f64),
    seconds: f64,
    eval_train: bool,
) -> Result<EpochRecord> {
    let f = data.features;
    // the mini-batch metrics of the epoch's steps, summed over processes
    let steps = match backend.take_step_metrics()? {
        Some(m) => {
            let mut v = [m.loss_sum, m.correct as f64, m.samples as f64];
            if dist.is_parallel() {
                dist.sum_f64(&mut v)?;
            }
            (v[2] > 0.0).then(|| (v[0] / v[2], v[1] / v[2]))
        }
        None => None,
    };
    let eval = if eval_train || steps.is_none() {
        let (l, ok) = evaluate_split(backend, &data.train.x, &data.train.y, f, dist)?;
        Some((l, ok as f64 / data.train.len().max(1) as f64))
    } else {
        None
    };
    let (test_loss, test_ok) = evaluate_split(backend, &data.test.x, &data.test.y, f, dist)?;
    let (train_loss, train_acc) = steps.or(eval).unwrap_or((f64::NAN, f64::NAN));
    let eval = eval.filter(|_| eval_train);
    Ok(EpochRecord {
        epoch: at.0,
        step: at.1,
        lr: at.2,
        train_loss,
        train_acc,
        eval_train_loss: eval.map(|e| e.0),
        eval_train_acc: eval.map(|e| e.1),
        test_loss,
        test_acc: test_ok as f64 / data.test.len().max(1) as f64,
        seconds,
    })
}

/// The progress line of one epoch's metrics.
fn describe_record(r: &EpochRecord, epochs: u64) -> String {
    format!(
        "epoch {:>3}/{epochs}  train loss {:.4} acc {:6.2}%  test loss {:.4} acc {:6.2}%  lr {:.4}  {:.1}s",
        r.epoch,
        r.train_loss,
        100.0 * r.train_acc,
        r.test_loss,
        100.0 * r.test_acc,
        r.lr,
        r.seconds
    )
}

/// Writes the epoch's model, metrics and (last: the commit point) its
/// checkpoint, reading θ, the optimizer's state and the running
/// statistics back from the backend into `theta` and `mom`.
fn save_epoch(
    out: &Path,
    st: &TrainState,
    arch: &Arch,
    backend: &mut dyn Backend,
    theta: &mut [f32],
    mom: &mut [f32],
    pre: &crate::data::Preprocess,
) -> Result<()> {
    backend.params(theta, if mom.is_empty() { None } else { Some(mom) })?;
    let (bn, tracked) = backend.state()?;
    let w = &Weights {
        theta,
        state: &bn,
        tracked,
        pre: Some(pre),
    };
    let (opt_state, correction) = (&*mom, &backend.correction()?);
    checkpoint::save_model(&out.join("model.safetensors"), arch, w)?;
    let mut lines = String::new();
    for r in &st.history {
        lines.push_str(&serde_json::to_string(r)?);
        lines.push('\n');
    }
    checkpoint::atomic_write(&out.join("metrics.jsonl"), lines.as_bytes())?;
    checkpoint::save_checkpoint(out, st, arch, w, opt_state, correction)
}
