//! The fine-tuning configuration, in one file that three programs compile:
//! the firmware (`fdgr-firmware`), its build script (which checks the model
//! and the sample stream against it), and the host side in the
//! `fdgr-mcu` crate (through `#[path]`), whose replay `fdgr device` and
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
use fdgr_kernel::finetune::{self, FineTuner, Learner, Mode, Models};
use fdgr_kernel::ring::SampleRing;
use fdgr_kernel::stream::{self, StreamError};
use fdgr_kernel::{Adam, Hyper, Layer, Method, Sgd, SgdState};

/// Samples per training step (the most recent ones).
pub const BATCH: usize = 1;
/// Recent samples kept in the ring buffer: the batch, no more (a sample
/// holds the model's input count of bytes, 784 for 28×28).
pub const RING: usize = BATCH;
/// The inputs' scale when none is given (`FDGR_PIXEL_MAX`): x = pixel /
/// 16, the UCI digits' 0..=16. `fdgr device` passes the run's own (255 for
/// 8-bit images). The number of inputs is the model's (generated).
pub const DEFAULT_PIXEL_MAX: f32 = 16.0;

/// Whether `v` can scale pixels: finite, 1 to 255 (a stream's pixel is a
/// byte).
pub fn pixel_max_ok(v: f32) -> bool {
    v.is_finite() && (1.0..=255.0).contains(&v)
}
/// Learning rate (constant). With [`GAMMA`] and [`EPS`] tuned for F-GR
/// at batch 1 on a validation split (docs/domain-shift.md: a conv net
/// pretrained on MNIST learning the UCI digits on the device).
pub const LR: f32 = 0.02;
/// GR strength γ (`db`, `fgr`, `bgr`, `cgr`).
pub const GAMMA: f32 = 0.01;
/// Finite-difference step ε (`fgr`, `bgr`, `cgr`).
pub const EPS: f32 = 0.1;
/// SAM's radius ρ (`sam`, `usam`).
pub const RHO: f32 = 0.05;
/// Flood level b (`flood`): `fdgr train`'s default, not tuned on the
/// device.
pub const FLOOD_LEVEL: f32 = 0.02;

/// The hyper-parameters every method takes its own from, where the build
/// gives none (`FDGR_GAMMA`, `FDGR_EPS`, `FDGR_RHO`, `FDGR_FLOOD_LEVEL`;
/// `fdgr device run --gamma --eps --rho --flood-level`).
pub const HYPER: Hyper<f32> = Hyper {
    gamma: GAMMA,
    eps: EPS,
    rho: RHO,
    level: FLOOD_LEVEL,
};

/// The build variables of the hyper-parameters, in the order of
/// [`Hyper::NAMES`] (`FDGR_` and the name in capitals).
pub const HYPER_VARS: [&str; 4] = ["FDGR_GAMMA", "FDGR_EPS", "FDGR_RHO", "FDGR_FLOOD_LEVEL"];

/// The training methods the firmware offers: every [`Method`] of the
/// kernel ([`Method::all`]) with [`HYPER`], chosen by its [`Method::name`]
/// (`FDGR_METHOD`). A method's perturbed points ([`Method::scratch_vectors`],
/// at most two) are buffers of the image.
pub const METHODS: &[Method<f32>] = &Method::all(GAMMA, EPS, RHO, FLOOD_LEVEL);

/// Checks the value of the hyper-parameter `Hyper::NAMES[i]` a build or a
/// flag gives: finite, γ and the flood level ≥ 0, ε and ρ > 0.
pub fn hyper_ok(i: usize, v: f32) -> Result<(), &'static str> {
    let zero_ok = matches!(Hyper::<f32>::NAMES.get(i), Some(&"gamma" | &"flood_level"));
    if v.is_finite() && (v > 0.0 || (zero_ok && v == 0.0)) {
        Ok(())
    } else if zero_ok {
        Err("a finite number ≥ 0")
    } else {
        Err("a finite number > 0")
    }
}

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

/// The hyper-parameters as `m` uses them: its own where it has them,
/// [`HYPER`]'s for the others (the firmware's log line, the summaries).
pub const fn hyper(m: Method<f32>) -> Hyper<f32> {
    m.hyper_or(HYPER)
}

/// The index in [`METHODS`] of the method named `name`.
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

/// The learner both sides start from: the optimizer `opt` (its type
/// picks the update code that is linked), constant learning rate `lr`,
/// inputs divided by `pixel_max`.
pub const fn learner<P: Copy>(
    method: Method<f32>,
    mode: Mode,
    opt: P,
    lr: f32,
    pixel_max: f32,
) -> Learner<f32, P> {
    Learner {
        method,
        opt,
        state: SgdState { steps: 0 },
        lr,
        batch: BATCH,
        pixel_max,
        mode,
    }
}

/// The firmware's fine-tuner: an empty ring of samples of `D` inputs and
/// [`learner`].
pub const fn tuner<P: Copy, const D: usize>(
    method: Method<f32>,
    mode: Mode,
    opt: P,
    lr: f32,
    pixel_max: f32,
) -> FineTuner<f32, P, RING, D> {
    FineTuner {
        ring: SampleRing::new(),
        learner: learner(method, mode, opt, lr, pixel_max),
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
    /// The second perturbed point (`cgr`; 0 for the others).
    pub point2: usize,
    /// Each of the optimizer's two state vectors (0 when it keeps none).
    pub state: usize,
    /// The workspace: the trained net's gradient (or HVP) workspace, and
    /// in last-layer mode at least the frozen forward pass's.
    pub ws: usize,
    /// Last-layer mode: the features of the batch (inputs of the last layer).
    pub feats: usize,
    /// The batch's inputs: [`BATCH`] · the model's inputs.
    pub x: usize,
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
        point2: if method.scratch_vectors() > 1 { tp } else { 0 },
        state: if opt_state != 0 { tp } else { 0 },
        ws: models.workspace_len(BATCH, method.needs_hvp()),
        feats: models.features_len(BATCH),
        x: BATCH * models.inputs(),
    }
}

/// The bytes of RAM each fdgr buffer takes (f32 and u32 are 4 bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RamBytes {
    /// θ: the trained parameters.
    pub theta: usize,
    /// The direction d.
    pub dir: usize,
    /// The perturbed points.
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
/// target's layout, [`tuner_bytes_max`]).
pub const fn ram_bytes(b: &BufferLens, tuner: usize) -> RamBytes {
    let theta = 4 * b.trained;
    let dir = 4 * b.trained;
    let point = 4 * (b.point + b.point2);
    let state = 2 * 4 * b.state;
    let ws = 4 * b.ws;
    let batch = 4 * (b.x + b.feats + BATCH);
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

/// An upper bound of the fine-tuner's size on a 32-bit target for a model
/// of `inputs` inputs (its ring of [`RING`] samples of `inputs` + 1 bytes
/// and a few words). The firmware asserts it at compile time.
pub const fn tuner_bytes_max(inputs: usize) -> usize {
    RING * (inputs + 1) + 128
}

/// Why a model or a sample stream cannot be fine-tuned by the firmware.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Unfit {
    /// Not a weight file the kernel reads.
    File(ExportError),
    /// The layer list cannot be fine-tuned in this mode (too many layers,
    /// batch norm, no linear last layer for last-layer mode), or does not
    /// plan.
    Model(&'static str),
    /// The stream is not whole samples of the model's input count of bytes
    /// and a label.
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
    /// A sample has a pixel above the pixel maximum the firmware divides by.
    Pixel {
        /// The sample.
        index: usize,
        /// The value.
        value: u8,
        /// The pixel maximum.
        max: f32,
    },
}

impl core::fmt::Display for Unfit {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
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
            Unfit::Pixel { index, value, max } => write!(
                f,
                "sample {index} has a pixel of {value}; the firmware expects 0..={max} (it divides by {max})"
            ),
        }
    }
}

/// Why a model with more than [`finetune::MAX_NODES`] layers is refused.
const TOO_MANY_LAYERS: &str = "too many layers (the firmware plans at most 64)";
// The message above names the capacity.
const _: () = assert!(finetune::MAX_NODES == 64);

/// The layer list of a weight file (either version), its input shape and
/// loss, in `layers` (at most [`finetune::MAX_NODES`]); returns the count.
pub fn layers_of(
    model: &[u8],
    layers: &mut [Layer; finetune::MAX_NODES],
) -> Result<(usize, fdgr_kernel::Dims, fdgr_kernel::Loss), Unfit> {
    match export::decode_model(model, layers) {
        Ok(r) => Ok(r),
        Err(ExportError::BufferTooSmall) => Err(Unfit::Model(TOO_MANY_LAYERS)),
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
/// `stream`, whose pixels it divides by `pixel_max`; returns the number of
/// samples (= steps).
pub fn check<const N: usize>(
    models: &Models<N>,
    stream: &[u8],
    pixel_max: f32,
) -> Result<usize, Unfit> {
    let d = models.inputs();
    let n = stream::count(stream, d).map_err(Unfit::Stream)?;
    if n == 0 {
        return Err(Unfit::Empty);
    }
    let rec = stream::record_len(d);
    for (index, s) in stream.chunks_exact(rec).enumerate() {
        let (x, label) = s.split_at(d);
        let label = label[0];
        if label as usize >= models.outputs {
            return Err(Unfit::Label {
                index,
                label,
                classes: models.outputs,
            });
        }
        if let Some(&value) = x.iter().find(|&&p| p as f32 > pixel_max) {
            return Err(Unfit::Pixel {
                index,
                value,
                max: pixel_max,
            });
        }
    }
    Ok(n)
}
