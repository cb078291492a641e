//! Flag groups that several commands share, each defined once and
//! flattened where it is used (the command chooses the help heading), and
//! the parsers of flags that several commands take.

use anyhow::{Context, Result};
use clap::Args;
use fdgr::config::{parse_dims, MethodName, ScheduleName};
use fdgr::data::{self, DataOptions, Dataset, Normalize};
use fdgr_kernel::{Act, Loss, Shape};

/// The data set and how it is split and scaled (`train`, `sweep`, `eval`).
#[derive(Args, Clone, Debug)]
pub struct DataArgs {
    /// Data set: digits | mnist5k | mnist:DIR | idx:IMAGES,LABELS | cifar10:DIR | cifar10:FILE | csv:FILE
    #[arg(long, default_value = "mnist5k")]
    pub data: String,
    /// Seed (the split; in training also initialisation and data order)
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Fraction of each class held out for testing (sources without a test set)
    #[arg(long, default_value_t = 0.2)]
    pub test_frac: f64,
    /// Input normalisation
    #[arg(long, value_enum, default_value_t = Normalize::Auto)]
    pub normalize: Normalize,
}

impl DataArgs {
    /// The loader's options.
    pub fn options(&self) -> DataOptions {
        DataOptions {
            seed: self.seed,
            test_frac: self.test_frac,
            normalize: self.normalize,
        }
    }

    /// Loads the data set.
    pub fn load(&self) -> Result<Dataset> {
        data::load(&self.data, &self.options())
    }
}

/// The network that is trained (`train`, `sweep`).
#[derive(Args, Clone, Debug)]
pub struct ModelArgs {
    /// Layer widths, inputs first [default: FEATURES-512-512-CLASSES]
    #[arg(long)]
    pub model: Option<String>,
    /// Hidden activation: relu | tanh | sigmoid | identity
    #[arg(long, default_value = "relu")]
    pub act: String,
}

impl ModelArgs {
    /// The widths `--model` gives, if it is given (checked before any data
    /// is read).
    pub fn dims(&self) -> Result<Option<Vec<usize>>> {
        self.model.as_deref().map(parse_dims).transpose()
    }

    /// The model without `--model`, sized from the data set:
    /// FEATURES-512-512-CLASSES.
    pub fn default_dims(data: &Dataset) -> Vec<usize> {
        vec![data.features, 512, 512, data.classes]
    }
}

/// The training method and its hyper-parameters (`train`, `sweep`).
#[derive(Args, Clone, Debug)]
pub struct MethodArgs {
    /// Training method
    #[arg(long, value_enum, default_value_t = MethodName::Fgr)]
    pub method: MethodName,
    /// GR strength γ (db, fgr, bgr, cgr)
    #[arg(long, default_value_t = 0.05)]
    pub gamma: f64,
    /// Finite-difference step ε > 0 (fgr, bgr, cgr)
    #[arg(long, default_value_t = 0.1)]
    pub eps: f64,
    /// SAM radius ρ (sam, usam)
    #[arg(long, default_value_t = 0.05)]
    pub rho: f64,
    /// Flood level b (flood)
    #[arg(long, default_value_t = 0.02)]
    pub flood_level: f64,
}

/// The optimizer (SGD) and its schedule (`train`, `sweep`).
#[derive(Args, Clone, Debug)]
pub struct OptimArgs {
    /// Base learning rate
    #[arg(long, default_value_t = 0.1)]
    pub lr: f64,
    /// Momentum μ (0 disables the buffer)
    #[arg(long, default_value_t = 0.9)]
    pub momentum: f64,
    /// Nesterov momentum
    #[arg(long)]
    pub nesterov: bool,
    /// Weight decay λ (coupled, as PyTorch SGD)
    #[arg(long, default_value_t = 1e-4)]
    pub wd: f64,
    /// Learning-rate schedule
    #[arg(long, value_enum, default_value_t = ScheduleName::Cosine)]
    pub schedule: ScheduleName,
    /// Linear warm-up epochs
    #[arg(long, default_value_t = 0)]
    pub warmup: u64,
    /// Epochs
    #[arg(long, default_value_t = 30)]
    pub epochs: u64,
    /// Mini-batch size
    #[arg(long, default_value_t = 128)]
    pub batch: usize,
}

/// Parses `--methods` (or `--method`): names, comma-separated.
pub fn parse_methods(s: &str) -> Result<Vec<MethodName>> {
    s.split(',')
        .map(|m| MethodName::parse(m.trim()))
        .collect::<Result<_>>()
        .context("--methods")
}

/// The model of `--model` (widths) and `--act`, for the commands that take
/// both as plain values (`bench`, `crosscheck`, `flood-check`).
pub fn shape(model: &str, act: &str) -> Result<Shape> {
    let act = Act::from_name(act).with_context(|| format!("--act {act}: unknown activation"))?;
    Shape::try_new(&parse_dims(model)?, act, Loss::SoftmaxCe)
        .map_err(|e| anyhow::anyhow!("--model {model}: {e}"))
}
