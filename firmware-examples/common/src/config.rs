//! The fine-tuning configuration, in one file that three programs compile:
//! the firmware (`fdgr-firmware`), its build script (which checks the model
//! and the sample stream against it), and the host side in the
//! `fdgr-device` crate (through `#[path]`), whose replay `fdgr device` and
//! `cargo xtask firmware` check the device against. So the device and the host
//! run the very same numbers through the very same
//! [`fdgr_kernel::finetune::FineTuner::push_and_step`].
//!
//! It also holds what the host must know before it builds a firmware: the
//! checks a model and a sample stream must pass (`check`), the lengths of
//! the static buffers (`buffer_lens`) and the RAM they take
//! (`ram_bytes`), so `fdgr device run` can refuse a model that does not
//! fit a board before building anything.
//!
//! Only `core` and `fdgr_kernel` may be used here.

use fdgr_kernel::export::{self, ExportError};
use fdgr_kernel::finetune::{self, FineTuner, Mode, Models};
use fdgr_kernel::ring::SampleRing;
use fdgr_kernel::stream::{self, StreamError};
use fdgr_kernel::{Adam, Layer, Method, Sample, Sgd, SgdState};

/// Inputs per sample (8×8 digits pixels, 0..=16); the sample stream's
/// format is [`fdgr_kernel::stream`].
pub const INPUTS: usize = 64;
/// Recent samples kept in the ring buffer.
pub const RING: usize = 8;
/// Samples per training step (the most recent ones).
pub const BATCH: usize = 1;
/// Input scale: x = pixel · 1/16.
pub const SCALE: f32 = 1.0 / 16.0;
/// Learning rate (constant). With [`GAMMA`] and [`EPS`] tuned for F-GR
/// at batch 1 on a validation split (docs/domain-shift.md: a conv net
/// pretrained on MNIST learning the UCI digits on the device).
pub const LR: f32 = 0.02;
/// GR strength γ (`fgr`, `db`).
pub const GAMMA: f32 = 0.01;
/// Finite-difference step ε (`fgr`).
pub const EPS: f32 = 0.1;
/// SAM radius ρ.
pub const RHO: f32 = 0.05;

/// The training methods the firmware examples offer: the kernel's
/// [`Method`]s with this configuration's hyper-parameters, chosen by their
/// [`Method::name`] (`FDGR_METHOD`), in the order results are reported.
/// Each needs at most one perturbed-point buffer.
pub const METHODS: [Method<f32>; 4] = [
    Method::Sgd,
    Method::Fgr {
        gamma: GAMMA,
        eps: EPS,
    },
    Method::Db { gamma: GAMMA },
    Method::Sam { rho: RHO },
];

/// Adam's learning rate (constant; SGD uses [`LR`]).
pub const ADAM_LR: f32 = 0.001;

/// Plain SGD (μ = 0, so no state vector): `FDGR_OPT=sgd`.
pub const SGD: Sgd<f32> = Sgd {
    momentum: 0.0,
    nesterov: false,
    weight_decay: 0.0,
};

/// Adam with PyTorch's defaults and no weight decay (two state vectors):
/// `FDGR_OPT=adam`.
pub const ADAM: Adam<f32> = Adam {
    beta1: 0.9,
    beta2: 0.999,
    eps: 1e-8,
    weight_decay: 0.0,
    decoupled: false,
};

/// Names of the optimizers the firmware offers (`FDGR_OPT`), in the order
/// results are reported.
pub const OPTIMIZER_NAMES: [&str; 2] = ["sgd", "adam"];

/// The index in [`OPTIMIZER_NAMES`] of the optimizer named `name`.
pub fn optimizer_index(name: &str) -> Option<usize> {
    OPTIMIZER_NAMES.iter().position(|n| *n == name)
}

/// `m` with the hyper-parameters γ, ε, ρ replaced where it has them
/// (`FDGR_GAMMA`, `FDGR_EPS`, `FDGR_RHO`; `fdgr device run --gamma --eps
/// --rho`): γ for `fgr` and `db`, ε for `fgr`, ρ for `sam`; `None` keeps
/// the method's value.
pub const fn with_hyper(
    m: Method<f32>,
    gamma: Option<f32>,
    eps: Option<f32>,
    rho: Option<f32>,
) -> Method<f32> {
    const fn or(v: Option<f32>, d: f32) -> f32 {
        match v {
            Some(v) => v,
            None => d,
        }
    }
    match m {
        Method::Fgr { gamma: g, eps: e } => Method::Fgr {
            gamma: or(gamma, g),
            eps: or(eps, e),
        },
        Method::Db { gamma: g } => Method::Db {
            gamma: or(gamma, g),
        },
        Method::Sam { rho: r } => Method::Sam { rho: or(rho, r) },
        m => m,
    }
}

/// γ, ε and ρ as `m` uses them: its own where it has them, this
/// configuration's defaults for the others (the firmware's log line).
pub const fn hyper(m: Method<f32>) -> (f32, f32, f32) {
    match m {
        Method::Fgr { gamma, eps } => (gamma, eps, RHO),
        Method::Db { gamma } => (gamma, EPS, RHO),
        Method::Sam { rho } => (GAMMA, EPS, rho),
        _ => (GAMMA, EPS, RHO),
    }
}

/// The index in [`METHODS`] of the method named `name` (`sgd`, `fgr`,
/// `db`, `sam`).
pub fn method_index(name: &str) -> Option<usize> {
    METHODS.iter().position(|m| m.name() == name)
}

/// The method named `name`, if the firmware offers it.
pub fn method(name: &str) -> Option<Method<f32>> {
    method_index(name).map(|i| METHODS[i])
}

/// Parses a mode: `full`, `last` (= `last:1`), `last:K`, `bias` or
/// `layers:I,J,…` (see [`Mode::parse`]).
pub fn parse_mode(s: &str) -> Option<Mode> {
    Mode::parse(s)
}

/// The fine-tuner both sides start from: an empty ring, the optimizer
/// `opt` (its type picks the update code that is linked), constant
/// learning rate `lr`.
pub const fn tuner<P: Copy>(
    method: Method<f32>,
    mode: Mode,
    opt: P,
    lr: f32,
) -> FineTuner<f32, P, RING, INPUTS> {
    FineTuner {
        ring: SampleRing::new(),
        method,
        opt,
        state: SgdState { steps: 0 },
        lr,
        batch: BATCH,
        scale: SCALE,
        mode,
    }
}

/// Lengths, in scalars, of the static buffers that fine-tuning a model
/// needs (the firmware's `ram` module allocates exactly these).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BufferLens {
    /// Trained parameters: P (full) or P_L (last layer). θ and d each hold
    /// this many.
    pub trained: usize,
    /// The perturbed point (0 for methods without one).
    pub point: usize,
    /// Each of the optimizer's two state vectors (0 when it keeps none).
    pub state: usize,
    /// The workspace: the trained net's gradient (or HVP) workspace, and
    /// in last-layer mode at least the frozen forward pass's.
    pub ws: usize,
    /// Last-layer mode: the features of the batch (inputs of the last layer).
    pub feats: usize,
}

/// The buffer lengths for fine-tuning the planned `models` (full or last
/// layer) with `method`, with an optimizer that keeps `opt_state` state
/// vectors (0 or 2).
pub const fn buffer_lens<const N: usize>(
    models: &Models<N>,
    method: Method<f32>,
    opt_state: usize,
) -> BufferLens {
    let tp = models.trained_params();
    BufferLens {
        trained: tp,
        point: if method.scratch_vectors() > 0 { tp } else { 0 },
        state: if opt_state != 0 { tp } else { 0 },
        ws: models.workspace_len(BATCH, method.needs_hvp()),
        feats: models.features_len(BATCH),
    }
}

/// The bytes of RAM each fdgr buffer takes (f32 and u32 are 4 bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RamBytes {
    /// θ: the trained parameters.
    pub theta: usize,
    /// The direction d.
    pub dir: usize,
    /// The perturbed point.
    pub point: usize,
    /// The optimizer's two state vectors.
    pub state: usize,
    /// The workspace.
    pub ws: usize,
    /// The batch (inputs, labels) and the last-layer features.
    pub batch: usize,
    /// The fine-tuner: ring of recent samples, method, optimizer.
    pub tuner: usize,
    /// Everything together.
    pub total: usize,
}

/// The RAM of the buffers `b`, with a fine-tuner of `tuner` bytes (the
/// firmware passes its exact size; the host, which cannot know the
/// target's layout, [`TUNER_BYTES_MAX`]).
pub const fn ram_bytes(b: &BufferLens, tuner: usize) -> RamBytes {
    let theta = 4 * b.trained;
    let dir = 4 * b.trained;
    let point = 4 * b.point;
    let state = 2 * 4 * b.state;
    let ws = 4 * b.ws;
    let batch = 4 * (BATCH * INPUTS + b.feats + BATCH);
    RamBytes {
        theta,
        dir,
        point,
        state,
        ws,
        batch,
        tuner,
        total: theta + dir + point + state + ws + batch + tuner,
    }
}

/// An upper bound of the fine-tuner's size on a 32-bit target (its ring
/// of [`RING`] samples of [`INPUTS`] + 1 bytes and a few words; 584 bytes
/// with SGD on Cortex-M). The firmware asserts it at compile time.
pub const TUNER_BYTES_MAX: usize = RING * (INPUTS + 1) + 128;

/// Why a model or a sample stream cannot be fine-tuned by the firmware.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Unfit {
    /// Not a weight file the kernel reads.
    File(ExportError),
    /// The layer list cannot be fine-tuned in this mode (too many layers,
    /// batch norm, no linear last layer for last-layer mode), or does not
    /// plan.
    Model(&'static str),
    /// The model does not take [`INPUTS`] inputs.
    Inputs(usize),
    /// The stream is not whole samples of [`INPUTS`] bytes and a label.
    Stream(StreamError),
    /// The stream holds no sample.
    Empty,
    /// A sample's label is not one of the model's classes.
    Label {
        /// The sample.
        index: usize,
        /// Its label.
        label: u8,
        /// The model's classes.
        classes: usize,
    },
    /// A sample has a pixel above 16 (the firmware scales by [`SCALE`]).
    Pixel {
        /// The sample.
        index: usize,
        /// The value.
        value: u8,
    },
}

impl core::fmt::Display for Unfit {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            Unfit::Inputs(n) => write!(
                f,
                "the model has {n} inputs; the firmware streams {INPUTS}-pixel samples"
            ),
            Unfit::File(e) => write!(f, "not a valid fdgr weight file: {e}"),
            Unfit::Model(why) => write!(f, "the firmware cannot fine-tune this model: {why}"),
            Unfit::Stream(e) => write!(f, "not a sample stream: {e}"),
            Unfit::Empty => write!(f, "the sample stream is empty"),
            Unfit::Label {
                index,
                label,
                classes,
            } => write!(
                f,
                "sample {index} has label {label}; the model has {classes} classes"
            ),
            Unfit::Pixel { index, value } => write!(
                f,
                "sample {index} has a pixel of {value}; the firmware expects 0..=16 (it scales by 1/16)"
            ),
        }
    }
}

/// The layer list of a weight file (either version), its input shape and
/// loss, in `layers` (at most [`finetune::MAX_NODES`]); returns the count.
pub fn layers_of(
    model: &[u8],
    layers: &mut [Layer; finetune::MAX_NODES],
) -> Result<(usize, fdgr_kernel::Dims, fdgr_kernel::Loss), Unfit> {
    match export::decode_model(model, layers) {
        Ok(r) => Ok(r),
        Err(ExportError::BufferTooSmall) => Err(Unfit::Model(
            "too many layers (the firmware plans at most 16)",
        )),
        Err(e) => Err(Unfit::File(e)),
    }
}

/// The models of fine-tuning the weight file `model` in `mode`, planned.
pub fn plan(model: &[u8], mode: Mode) -> Result<Models, Unfit> {
    let mut layers = [Layer::flatten(); finetune::MAX_NODES];
    let (k, input, loss) = layers_of(model, &mut layers)?;
    finetune::models_of(&layers[..k], input, loss, mode).map_err(|e| match e {
        fdgr_kernel::Error::BadModel(why) => Unfit::Model(why),
        _ => Unfit::Model("the layer list does not plan"),
    })
}

/// Checks that the firmware can fine-tune the planned `models` on
/// `stream`; returns the number of samples (= steps).
pub fn check<const N: usize>(models: &Models<N>, stream: &[u8]) -> Result<usize, Unfit> {
    if models.inputs() != INPUTS {
        return Err(Unfit::Inputs(models.inputs()));
    }
    let n = stream::count(stream, INPUTS).map_err(Unfit::Stream)?;
    if n == 0 {
        return Err(Unfit::Empty);
    }
    for index in 0..n {
        let s: Sample<INPUTS> = match stream::sample(stream, index) {
            Some(s) => s,
            None => return Err(Unfit::Empty),
        };
        if s.label as usize >= models.outputs {
            return Err(Unfit::Label {
                index,
                label: s.label,
                classes: models.outputs,
            });
        }
        if let Some(&value) = s.x.iter().find(|&&p| p > 16) {
            return Err(Unfit::Pixel { index, value });
        }
    }
    Ok(n)
}
