//! A training run's full configuration: what `fdgr train` takes, what
//! `summary.json` and the checkpoint record, and what `--resume` restores.

use crate::arch::Arch;
use crate::data::{DataOptions, Normalize};
use anyhow::{bail, Context, Result};
use fdgr_kernel::finetune::Mode;
use fdgr_kernel::{
    Act, Ascent, Dims, Loss, Method, Optimizer, Schedule, ScheduleKind, Sgd, Shape, StepOptions,
};
use serde::{Deserialize, Serialize};

/// A name from a kernel list, as a type: `all`, `parse` (an error naming
/// the list), `as_str`, `Display`, `FromStr`, serde as the name, and clap's
/// values with each one's help line (`$help`: name → help). What
/// [`MethodName`] and [`OptimizerName`] share, so that a method or an
/// optimizer added to the kernel needs no line here.
macro_rules! kernel_name {
    ($t:ident, $what:literal, $names:expr, $help:expr) => {
        impl $t {
            /// Every name, in the kernel's order.
            pub fn all() -> impl Iterator<Item = $t> {
                $names.into_iter().map($t)
            }

            /// Parses a name.
            pub fn parse(s: &str) -> Result<$t> {
                $t::all().find(|m| m.0 == s).with_context(|| {
                    let names: Vec<&str> = $t::all().map(|m| m.0).collect();
                    format!(
                        concat!("unknown ", $what, " '{}' (expected {})"),
                        s,
                        names.join("|")
                    )
                })
            }

            /// Lower-case name.
            pub fn as_str(self) -> &'static str {
                self.0
            }
        }

        impl std::fmt::Display for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.0)
            }
        }

        impl std::str::FromStr for $t {
            type Err = anyhow::Error;
            fn from_str(s: &str) -> Result<$t> {
                $t::parse(s)
            }
        }

        impl Serialize for $t {
            fn serialize<S: serde::Serializer>(
                &self,
                s: S,
            ) -> std::result::Result<S::Ok, S::Error> {
                s.serialize_str(self.0)
            }
        }

        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(
                d: D,
            ) -> std::result::Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                $t::parse(&s).map_err(serde::de::Error::custom)
            }
        }

        impl clap::ValueEnum for $t {
            fn value_variants<'a>() -> &'a [Self] {
                static ALL: std::sync::OnceLock<Vec<$t>> = std::sync::OnceLock::new();
                ALL.get_or_init(|| $t::all().collect())
            }
            fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
                let help: fn(&'static str) -> &'static str = $help;
                Some(clap::builder::PossibleValue::new(self.0).help(help(self.0)))
            }
        }
    };
}

/// A training method by name: one of the kernel's ([`Method::names`]), so
/// that a method added to the kernel is a name here without a line of this
/// crate. Serialized as its name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MethodName(&'static str);

kernel_name!(MethodName, "method", Method::<f32>::names(), |n| {
    MethodName(n).kind().about()
});

impl MethodName {
    /// F-GR, the default.
    pub const FGR: MethodName = MethodName("fgr");
    /// Plain SGD.
    pub const SGD: MethodName = MethodName("sgd");

    /// The kernel method with these hyper-parameters.
    pub fn method(self, gamma: f64, eps: f64, rho: f64, flood_level: f64) -> Method<f32> {
        let h = fdgr_kernel::Hyper {
            gamma: gamma as f32,
            eps: eps as f32,
            rho: rho as f32,
            level: flood_level as f32,
        };
        // every name comes from the kernel's list
        Method::named(self.0, h).unwrap_or(Method::Sgd)
    }

    /// The kernel method with placeholder hyper-parameters, for what does
    /// not depend on them.
    fn kind(self) -> Method<f32> {
        self.method(0.0, 0.0, 0.0, 0.0)
    }

    /// Whether γ is a hyper-parameter of this method.
    pub fn uses_gamma(self) -> bool {
        self.kind().uses_gamma()
    }

    /// Whether ε is a hyper-parameter of this method.
    pub fn uses_eps(self) -> bool {
        self.kind().uses_eps()
    }

    /// Whether the method has an ascent step that amortized GR can keep.
    pub fn has_ascent(self) -> bool {
        self.kind().has_ascent()
    }
}

/// Learning-rate schedule by name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ScheduleName {
    /// Constant learning rate.
    Constant,
    /// Cosine annealing to 0 over the run (per step).
    Cosine,
}

/// A base optimizer by name: one of the kernel's ([`Optimizer::NAMES`]).
/// Serialized as its name; `sgd` by default.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct OptimizerName(&'static str);

kernel_name!(OptimizerName, "optimizer", Optimizer::<f32>::NAMES, |n| {
    let zero = fdgr_kernel::OptHyper {
        momentum: 0.0,
        nesterov: false,
        weight_decay: 0.0,
        beta1: 0.0,
        beta2: 0.0,
        eps: 0.0,
    };
    Optimizer::<f32>::named(n, zero).map_or("", |o| o.about())
});

impl Default for OptimizerName {
    fn default() -> Self {
        OptimizerName::SGD
    }
}

impl OptimizerName {
    /// SGD (momentum, Nesterov, coupled weight decay), PyTorch's.
    pub const SGD: OptimizerName = OptimizerName("sgd");
}

fn default_beta1() -> f64 {
    0.9
}
fn default_beta2() -> f64 {
    0.999
}
fn default_adam_eps() -> f64 {
    1e-8
}
fn default_train_layers() -> String {
    "full".into()
}

fn default_gr_every() -> u64 {
    1
}

/// Backend by name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum BackendName {
    /// CPU: the kernel's maths on all cores with a tuned GEMM.
    Cpu,
    /// NVIDIA GPU through CUDA (cudarc: cuBLAS + NVRTC kernels).
    Gpu,
}

/// Where the ascent of a data-parallel step starts (`--ascent`; see
/// [`fdgr_kernel::dist::AscentMode`]). One process: both are the same.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum AscentName {
    /// From the all-reduced gradient: the step of one process on the
    /// global batch (one all-reduce per gradient evaluation).
    #[default]
    Global,
    /// From each process's own gradient ("m-sharpness"); the directions
    /// are averaged once per step (one all-reduce per step).
    Local,
}

impl AscentName {
    /// The kernel's mode.
    pub fn mode(self) -> fdgr_kernel::dist::AscentMode {
        match self {
            AscentName::Global => fdgr_kernel::dist::AscentMode::Global,
            AscentName::Local => fdgr_kernel::dist::AscentMode::Local,
        }
    }

    /// `global` or `local`.
    pub fn as_str(self) -> &'static str {
        match self {
            AscentName::Global => "global",
            AscentName::Local => "local",
        }
    }
}

/// Everything that defines a training run.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct TrainConfig {
    /// `--data` spec.
    pub data: String,
    /// Seed of initialisation, data order and split.
    pub seed: u64,
    /// Test fraction for sources without their own test set.
    pub test_frac: f64,
    /// Input normalisation.
    pub normalize: Normalize,
    /// `--model`: MLP widths (`784-512-512-10`), a preset (`resnet20`) or
    /// a layer list (see [`crate::arch`]). Older checkpoints stored the
    /// widths as a list; they still read.
    #[serde(deserialize_with = "model_de")]
    pub model: String,
    /// Hidden activation (MLPs, LeNet).
    pub act: String,
    /// Data augmentation of training batches.
    #[serde(default)]
    pub augment: Augment,
    /// Padding of the random crop, on each side.
    #[serde(default = "default_pad")]
    pub augment_pad: usize,
    /// Method.
    pub method: MethodName,
    /// GR strength γ (db, fgr, bgr, cgr).
    pub gamma: f64,
    /// Finite-difference step ε (fgr, bgr, cgr).
    pub eps: f64,
    /// SAM radius ρ (sam, usam).
    pub rho: f64,
    /// Flood level b (flood).
    pub flood_level: f64,
    /// Base learning rate.
    pub lr: f64,
    /// Momentum μ.
    pub momentum: f64,
    /// Nesterov momentum.
    pub nesterov: bool,
    /// Weight decay λ (coupled, PyTorch SGD).
    pub weight_decay: f64,
    /// Base optimizer.
    #[serde(default)]
    pub optimizer: OptimizerName,
    /// Adam's β₁.
    #[serde(default = "default_beta1")]
    pub beta1: f64,
    /// Adam's β₂.
    #[serde(default = "default_beta2")]
    pub beta2: f64,
    /// Adam's ε.
    #[serde(default = "default_adam_eps")]
    pub adam_eps: f64,
    /// Clip the step direction to this Euclidean norm.
    #[serde(default)]
    pub clip_norm: Option<f64>,
    /// Which parameters are trained (`--train-layers`: full, last:K, bias,
    /// layers:I,J).
    #[serde(default = "default_train_layers")]
    pub train_layers: String,
    /// Amortized GR: a fresh ascent every k-th step (1: every step).
    #[serde(default = "default_gr_every")]
    pub gr_every: u64,
    /// Amortized GR: a fresh ascent with this probability per step.
    #[serde(default)]
    pub gr_prob: Option<f64>,
    /// Linear warm-up of γ, in epochs (0: none).
    #[serde(default)]
    pub gamma_warmup: u64,
    /// Learning-rate schedule.
    pub schedule: ScheduleName,
    /// Linear warm-up, in epochs.
    pub warmup: u64,
    /// Epochs.
    pub epochs: u64,
    /// Mini-batch size.
    pub batch: usize,
    /// CPU threads (0 = all cores).
    pub threads: usize,
    /// Backend.
    pub backend: BackendName,
    /// Allow TF32 tensor-core products on the GPU (older runs; see
    /// `precision`).
    pub tf32: bool,
    /// The arithmetic of the GPU's products.
    #[serde(default)]
    pub precision: Precision,
    /// `--ascent`: where a data-parallel step's ascent starts.
    #[serde(default)]
    pub ascent: AscentName,
    /// `--eval-train`: also evaluate the whole training split in eval
    /// mode after each epoch (besides the mini-batch metrics).
    #[serde(default)]
    pub eval_train: bool,
}

/// The arithmetic of the GPU's products and convolutions (`--precision`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// Strict f32 (the reference).
    #[default]
    F32,
    /// TF32 tensor cores for products and convolutions.
    Tf32,
    /// bf16 inputs for the cuBLAS products (f32 accumulation); cuDNN
    /// convolutions in TF32.
    Bf16,
}

impl Precision {
    /// The GPU crate's precision, with `--tf32` (older flag) meaning TF32.
    pub fn gpu(self, tf32: bool) -> fdgr_gpu::Precision {
        match self {
            Precision::F32 if tf32 => fdgr_gpu::Precision::Tf32,
            Precision::F32 => fdgr_gpu::Precision::F32,
            Precision::Tf32 => fdgr_gpu::Precision::Tf32,
            Precision::Bf16 => fdgr_gpu::Precision::Bf16,
        }
    }
}

/// Augmentation of training batches.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Augment {
    /// None.
    #[default]
    None,
    /// Random crop after zero padding (random shifts; for digits).
    Crop,
    /// Random crop after zero padding, and random horizontal flip (the
    /// standard CIFAR augmentation, with 4-pixel padding).
    CropFlip,
}

fn default_pad() -> usize {
    4
}

/// Reads `model` as a string, or as the list of widths older checkpoints
/// stored.
fn model_de<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum M {
        S(String),
        W(Vec<usize>),
    }
    Ok(match M::deserialize(d)? {
        M::S(s) => s,
        M::W(w) => dims_str(&w),
    })
}

impl TrainConfig {
    /// The hidden activation.
    pub fn act(&self) -> Result<Act> {
        Act::from_name(&self.act)
            .with_context(|| format!("--act {}: expected identity|relu|tanh|sigmoid", self.act))
    }

    /// The network on inputs of shape `input` (C, H, W) with `classes`
    /// outputs.
    pub fn arch(&self, input: (usize, usize, usize), classes: usize) -> Result<Arch> {
        Arch::parse(
            &self.model,
            self.act()?,
            Dims::new(input.0, input.1, input.2),
            classes,
        )
    }

    /// The model shape, when the model is an MLP given by its widths.
    pub fn shape(&self) -> Result<Shape> {
        let act = self.act()?;
        let dims = crate::arch::parse_dims(&self.model).with_context(|| {
            format!(
                "--model {}: an MLP given by its widths is needed here (e.g. 784-512-512-10)",
                self.model
            )
        })?;
        Shape::try_new(&dims, act, Loss::SoftmaxCe).map_err(|_| {
            anyhow::anyhow!(
                "--model {}: expected 2 to 5 non-zero widths, inputs first (e.g. 784-512-512-10)",
                self.model
            )
        })
    }

    /// The kernel method.
    pub fn method(&self) -> Method<f32> {
        self.method
            .method(self.gamma, self.eps, self.rho, self.flood_level)
    }

    /// The optimizer.
    pub fn optimizer(&self) -> Optimizer<f32> {
        let h = fdgr_kernel::OptHyper {
            momentum: self.momentum as f32,
            nesterov: self.nesterov,
            weight_decay: self.weight_decay as f32,
            beta1: self.beta1 as f32,
            beta2: self.beta2 as f32,
            eps: self.adam_eps as f32,
        };
        // every name comes from the kernel's list
        Optimizer::named(self.optimizer.as_str(), h).unwrap_or(Optimizer::Sgd(Sgd::plain()))
    }

    /// The method at optimizer step `step` (0-based) of a run with
    /// `steps_per_epoch`: γ warmed up linearly over `gamma_warmup` epochs.
    pub fn method_at(&self, step: u64, steps_per_epoch: u64) -> Method<f32> {
        let w = self.gamma_warmup * steps_per_epoch;
        let g = if w > 0 && step < w {
            self.gamma * (step + 1) as f64 / w as f64
        } else {
            self.gamma
        };
        self.method.method(g, self.eps, self.rho, self.flood_level)
    }

    /// Whether amortized GR is on (a stored correction is kept).
    pub fn amortized(&self) -> bool {
        self.gr_every > 1 || self.gr_prob.is_some()
    }

    /// Whether step `step` (0-based) takes a fresh ascent: every
    /// `gr_every`-th step, or with probability `gr_prob` (drawn from the
    /// seed and the step, so a resumed run decides alike); step 0 always.
    pub fn fresh_ascent(&self, step: u64) -> bool {
        fresh_ascent(self.gr_every, self.gr_prob, self.seed, step)
    }

    /// The step options of step `step`.
    pub fn step_options(&self, step: u64) -> StepOptions<f32> {
        StepOptions {
            clip_norm: self.clip_norm.map(|c| c as f32),
            ascent: if self.fresh_ascent(step) {
                Ascent::Fresh
            } else {
                Ascent::Reuse
            },
        }
    }

    /// Data options.
    pub fn data_options(&self) -> DataOptions {
        DataOptions {
            seed: self.seed,
            test_frac: self.test_frac,
            normalize: self.normalize,
        }
    }

    /// The learning-rate schedule for `steps_per_epoch`.
    pub fn schedule(&self, steps_per_epoch: u64) -> Schedule<f32> {
        Schedule {
            base_lr: self.lr as f32,
            kind: match self.schedule {
                ScheduleName::Constant => ScheduleKind::Constant,
                ScheduleName::Cosine => ScheduleKind::Cosine,
            },
            warmup_steps: self.warmup * steps_per_epoch,
            total_steps: self.epochs * steps_per_epoch,
        }
    }

    /// Which parameters are trained (`--train-layers`).
    pub fn train_layers(&self) -> Result<Mode> {
        Mode::parse(&self.train_layers).ok_or_else(|| {
            anyhow::anyhow!(
                "--train-layers {}: expected full, last, last:K, bias or layers:I,J,… (layer \
                 indices below 32)",
                self.train_layers
            )
        })
    }

    /// Checks every value; errors name the flag.
    pub fn validate(&self) -> Result<()> {
        self.act()?;
        if crate::arch::parse_dims(&self.model).is_some() {
            self.shape()?;
        }
        self.method()
            .validate()
            .map_err(|e| anyhow::anyhow!("--method {}: {e}", self.method.as_str()))?;
        fdgr_kernel::Optim::validate(&self.optimizer())
            .map_err(|e| anyhow::anyhow!("--optimizer {}: {e}", self.optimizer.as_str()))?;
        if let Some(c) = self.clip_norm {
            if !(c > 0.0 && c.is_finite()) {
                bail!("--clip-norm {c}: expected a positive number");
            }
        }
        if self.gr_every == 0 {
            bail!("--gr-every must be at least 1");
        }
        let train = self.train_layers()?;
        if train != Mode::Full && self.method().needs_hvp() {
            bail!(
                "--train-layers {train} with --method {}: the exact Hessian-vector product is not \
                 offered with frozen parameters (use fgr, the finite-difference GR)",
                self.method.as_str()
            );
        }
        if let Some(p) = self.gr_prob {
            if !(p > 0.0 && p <= 1.0) {
                bail!("--gr-prob {p}: expected a probability in (0, 1]");
            }
            if self.gr_every > 1 {
                bail!("--gr-every and --gr-prob exclude each other");
            }
        }
        if self.ascent == AscentName::Local && self.amortized() {
            bail!(
                "--ascent local with --gr-every/--gr-prob: each process would keep its own stored \
                 correction, which the checkpoint cannot hold; use --ascent global"
            );
        }
        if self.gamma_warmup > 0 && self.gamma_warmup >= self.epochs {
            bail!(
                "--gamma-warmup-epochs {} must be shorter than --epochs {}",
                self.gamma_warmup,
                self.epochs
            );
        }
        if !(self.lr.is_finite() && self.lr >= 0.0) {
            bail!(
                "--lr {}: expected a number ≥ 0 (0 keeps the weights: a frozen baseline)",
                self.lr
            );
        }
        if self.augment != Augment::None && self.augment_pad > 64 {
            bail!(
                "--augment-pad {}: expected at most 64 pixels",
                self.augment_pad
            );
        }
        if self.batch == 0 {
            bail!("--batch must be at least 1");
        }
        if self.warmup >= self.epochs && self.warmup > 0 {
            bail!(
                "--warmup {} must be shorter than --epochs {}",
                self.warmup,
                self.epochs
            );
        }
        Ok(())
    }
}

/// "784-512-512-10".
pub fn dims_str(d: &[usize]) -> String {
    d.iter()
        .map(|x| x.to_string())
        .collect::<Vec<_>>()
        .join("-")
}

/// Parses "784-512-512-10".
pub fn parse_dims(s: &str) -> Result<Vec<usize>> {
    let dims: Result<Vec<usize>, _> = s
        .split(['-', 'x', ','])
        .map(|p| p.trim().parse::<usize>())
        .collect();
    match dims {
        Ok(d) if (2..=5).contains(&d.len()) && d.iter().all(|&x| x > 0) => Ok(d),
        _ => bail!(
            "--model {s}: expected 2 to 5 positive widths separated by '-', e.g. 784-512-512-10"
        ),
    }
}

/// Parses a comma-separated list of numbers.
pub fn parse_list(flag: &str, s: &str) -> Result<Vec<f64>> {
    s.split(',')
        .map(|p| {
            p.trim()
                .parse::<f64>()
                .ok()
                .filter(|v| v.is_finite())
                .with_context(|| format!("{flag} {s}: '{p}' is not a number"))
        })
        .collect()
}

/// Whether step `step` of amortized GR takes a fresh ascent: every
/// `gr_every`-th step, or with probability `gr_prob` drawn from `seed` and
/// the step (so a resumed run decides alike); step 0 always.
pub fn fresh_ascent(gr_every: u64, gr_prob: Option<f64>, seed: u64, step: u64) -> bool {
    if step == 0 {
        return true;
    }
    match gr_prob {
        Some(p) => {
            let mut r = fdgr_kernel::Rng::new(seed ^ step.wrapping_mul(0xD6E8_FEB8_6659_FD93));
            r.next_u64();
            r.uniform() < p
        }
        None => step % gr_every.max(1) == 0,
    }
}
