//! A training run's full configuration: what `fdgr train` takes, what
//! `summary.json` and the checkpoint record, and what `--resume` restores.

use crate::arch::Arch;
use crate::data::{DataOptions, Normalize};
use anyhow::{bail, Context, Result};
use fdgr_kernel::{Act, Dims, Loss, Method, Schedule, ScheduleKind, Sgd, Shape};
use serde::{Deserialize, Serialize};

/// Training methods by name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum MethodName {
    /// Plain SGD: d = g.
    Sgd,
    /// Exact GR by double backprop (Hessian-vector product): d = g + γHg.
    Db,
    /// Forward finite-difference GR (ascent step first; the paper's F-GR).
    Fgr,
    /// Backward finite-difference GR (descent step first).
    Bgr,
    /// Central finite-difference GR.
    Cgr,
    /// Sharpness-aware minimisation.
    Sam,
    /// Unnormalised SAM.
    Usam,
    /// Flooding at level b.
    Flood,
}

impl MethodName {
    /// All methods.
    pub const ALL: [MethodName; 8] = [
        MethodName::Sgd,
        MethodName::Db,
        MethodName::Fgr,
        MethodName::Bgr,
        MethodName::Cgr,
        MethodName::Sam,
        MethodName::Usam,
        MethodName::Flood,
    ];

    /// Parses a name.
    pub fn parse(s: &str) -> Result<MethodName> {
        MethodName::ALL
            .into_iter()
            .find(|m| m.as_str() == s)
            .with_context(|| {
                format!("unknown method '{s}' (expected sgd|db|fgr|bgr|cgr|sam|usam|flood)")
            })
    }

    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            MethodName::Sgd => "sgd",
            MethodName::Db => "db",
            MethodName::Fgr => "fgr",
            MethodName::Bgr => "bgr",
            MethodName::Cgr => "cgr",
            MethodName::Sam => "sam",
            MethodName::Usam => "usam",
            MethodName::Flood => "flood",
        }
    }

    /// Whether γ is a hyper-parameter of this method.
    pub fn uses_gamma(self) -> bool {
        matches!(
            self,
            MethodName::Db | MethodName::Fgr | MethodName::Bgr | MethodName::Cgr
        )
    }

    /// Whether ε is a hyper-parameter of this method.
    pub fn uses_eps(self) -> bool {
        matches!(self, MethodName::Fgr | MethodName::Bgr | MethodName::Cgr)
    }

    /// The kernel method with these hyper-parameters.
    pub fn method(self, gamma: f64, eps: f64, rho: f64, flood_level: f64) -> Method<f32> {
        let (gamma, eps, rho, level) = (gamma as f32, eps as f32, rho as f32, flood_level as f32);
        match self {
            MethodName::Sgd => Method::Sgd,
            MethodName::Db => Method::Db { gamma },
            MethodName::Fgr => Method::Fgr { gamma, eps },
            MethodName::Bgr => Method::Bgr { gamma, eps },
            MethodName::Cgr => Method::Cgr { gamma, eps },
            MethodName::Sam => Method::Sam { rho },
            MethodName::Usam => Method::Usam { rho },
            MethodName::Flood => Method::Flood { level },
        }
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

/// Backend by name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum BackendName {
    /// CPU: the kernel's maths on all cores with a tuned GEMM.
    Cpu,
    /// NVIDIA GPU through CUDA (cudarc: cuBLAS + NVRTC kernels).
    Gpu,
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
    /// Allow TF32 tensor-core products on the GPU.
    pub tf32: bool,
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
    pub fn optimizer(&self) -> Sgd<f32> {
        Sgd {
            momentum: self.momentum as f32,
            nesterov: self.nesterov,
            weight_decay: self.weight_decay as f32,
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

    /// Checks every value; errors name the flag.
    pub fn validate(&self) -> Result<()> {
        self.act()?;
        if crate::arch::parse_dims(&self.model).is_some() {
            self.shape()?;
        }
        self.method()
            .validate()
            .map_err(|e| anyhow::anyhow!("--method {}: {e}", self.method.as_str()))?;
        self.optimizer()
            .validate()
            .map_err(|e| anyhow::anyhow!("optimizer: {e}"))?;
        if !(self.lr.is_finite() && self.lr > 0.0) {
            bail!("--lr {}: expected a positive number", self.lr);
        }
        if self.augment != Augment::None && self.augment_pad > 64 {
            bail!(
                "--augment-pad {}: expected at most 64 pixels",
                self.augment_pad
            );
        }
        if self.epochs == 0 {
            bail!("--epochs must be at least 1");
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
