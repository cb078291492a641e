//! Flag groups that several commands share, each defined once and
//! flattened where it is used (the command chooses the help heading), and
//! the parsers of flags that several commands take.

use anyhow::{Context, Result};
use clap::Args;
use fdgr::config::{parse_dims, MethodName, OptimizerName, ScheduleName};
use fdgr::data::{self, DataOptions, Dataset, Normalize};
use fdgr_kernel::{Act, Loss, Shape};

/// The data set and how it is split and scaled (`train`, `sweep`, `eval`).
#[derive(Args, Clone, Debug)]
pub struct DataArgs {
    /// Data set: digits | mnist5k | mnist:DIR | idx:IMAGES,LABELS | cifar10:DIR |
    /// cifar10:FILE.bin | cifar10:FILE.tar.gz | cifar100:DIR|FILE.bin|FILE.tar.gz |
    /// cifar100-coarse:(as cifar100) | csv:FILE[.gz]
    #[arg(long, default_value = "mnist5k")]
    pub data: String,
    /// Seed (the split; in training also initialisation and data order)
    /// [default: 1; eval: the run's own]
    #[arg(long)]
    pub seed: Option<u64>,
    /// Fraction of each class held out for testing (sources without a test
    /// set) [default: 0.2; eval: the run's own]
    #[arg(long)]
    pub test_frac: Option<f64>,
    /// Input normalisation [default: auto; eval: the run's own, with the
    /// statistics of its training split]
    #[arg(long, value_enum)]
    pub normalize: Option<Normalize>,
}

impl DataArgs {
    /// The loader's options (the defaults where a flag is not given).
    pub fn options(&self) -> DataOptions {
        let d = DataOptions::default();
        DataOptions {
            seed: self.seed.unwrap_or(d.seed),
            test_frac: self.test_frac.unwrap_or(d.test_frac),
            normalize: self.normalize.unwrap_or(d.normalize),
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
    /// The network: MLP widths, inputs first (784-512-512-10); a preset
    /// sized to the data (lenet5, resnet20/32/44/56/110, resnet18,
    /// wrn-16-4, wrn-28-10, any wrn-D-K); or a layer list such as
    /// conv:8:3:p1,relu,maxpool:2,conv:16:3:p1,relu,maxpool:2,flatten,linear
    /// (entries: conv:OUT:K[:sS][:pP][:gG][:nobias], dwconv:K[:sS][:pP],
    /// bn, relu, tanh, sigmoid, identity, maxpool:K[:sS][:pP],
    /// avgpool:K[:sS][:pP], gap, flatten, linear[:OUT][:nobias],
    /// block:OUT[:sS] (ResNet), wblock:OUT[:sS] (wide ResNet); any layer
    /// kind by its record: KIND:FIELD=VALUE:..., e.g. maxpool:k=3:stride=2:pad=1)
    /// [default: FEATURES-512-512-CLASSES]
    #[arg(long, verbatim_doc_comment)]
    pub model: Option<String>,
    /// Hidden activation of MLPs and LeNet: relu | tanh | sigmoid | identity
    #[arg(long, default_value = "relu")]
    pub act: String,
}

impl ModelArgs {
    /// `--model` as given, if it is (MLP widths are checked here, before
    /// any data is read; other networks once the data's shape is known).
    pub fn spec(&self) -> Result<Option<String>> {
        match self.model.as_deref() {
            Some(m) if m.chars().all(|c| c.is_ascii_digit() || c == '-') => {
                parse_dims(m)?;
                Ok(Some(m.to_string()))
            }
            Some(m) => Ok(Some(m.trim().to_string())),
            None => Ok(None),
        }
    }

    /// The model without `--model`, sized from the data set:
    /// FEATURES-512-512-CLASSES.
    pub fn default_spec(data: &Dataset) -> String {
        format!("{}-512-512-{}", data.features, data.classes)
    }
}

/// The training method and its hyper-parameters (`train`, `sweep`).
#[derive(Args, Clone, Debug)]
pub struct MethodArgs {
    /// Training method
    #[arg(long, value_enum, default_value_t = MethodName::FGR)]
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
    /// Amortized GR: a fresh ascent (fgr, bgr, cgr: the second gradient;
    /// db: Hv; sam, usam: the perturbation) every k-th step, reused in
    /// between: 1 + 1/k gradients per step
    #[arg(long, default_value_t = 1)]
    pub gr_every: u64,
    /// Amortized GR: a fresh ascent with probability p per step (seeded)
    #[arg(long)]
    pub gr_prob: Option<f64>,
    /// Linear warm-up of γ over the first epochs
    #[arg(long = "gamma-warmup-epochs", default_value_t = 0)]
    pub gamma_warmup: u64,
}

/// The optimizer and its schedule (`train`, `sweep`).
#[derive(Args, Clone, Debug)]
pub struct OptimArgs {
    /// Base optimizer (PyTorch's rules): sgd, adam (coupled weight decay),
    /// adamw (decoupled)
    #[arg(long, value_enum, default_value_t = OptimizerName::SGD)]
    pub optimizer: OptimizerName,
    /// Adam's β₁
    #[arg(long, default_value_t = 0.9)]
    pub beta1: f64,
    /// Adam's β₂
    #[arg(long, default_value_t = 0.999)]
    pub beta2: f64,
    /// Adam's ε (outside the square root)
    #[arg(long, default_value_t = 1e-8)]
    pub adam_eps: f64,
    /// Clip the step direction d to this Euclidean norm (after the method
    /// formed it, as clip_grad_norm_ after SAM's second pass)
    #[arg(long)]
    pub clip_norm: Option<f64>,
    /// Train only these parameters (as `fdgr device run --mode`): full |
    /// last (the last layer) | last:K (the last K layers with parameters) |
    /// bias (every bias) | layers:I,J,… (layer indices, below 32); the
    /// others stay as initialized (--init) or loaded
    #[arg(long, default_value = "full")]
    pub train_layers: String,
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

/// The network of `--model` (any form), `--act`, `--input` (CxHxW, for
/// presets and layer lists) and `--classes`, for the commands without a
/// data set (`bench`).
pub fn arch_of(model: &str, act: &str, input: &str, classes: usize) -> Result<fdgr::arch::Arch> {
    let a = Act::from_name(act).with_context(|| format!("--act {act}: unknown activation"))?;
    let d: Vec<usize> = input
        .split('x')
        .map(|t| t.trim().parse::<usize>())
        .collect::<std::result::Result<_, _>>()
        .ok()
        .filter(|v: &Vec<usize>| v.len() == 3 && v.iter().all(|&x| x > 0))
        .with_context(|| format!("--input {input}: expected CxHxW, e.g. 3x32x32"))?;
    if classes == 0 {
        anyhow::bail!("--classes must be at least 1");
    }
    fdgr::arch::Arch::parse(model, a, fdgr_kernel::Dims::new(d[0], d[1], d[2]), classes)
}
