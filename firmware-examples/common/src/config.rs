//! The fine-tuning configuration, in one file that three programs compile:
//! the firmware (`fdgr-firmware`), its build script (which checks the model
//! and the sample stream against it), and the host replay in
//! `cargo xtask firmware` (through `#[path]`). So the device and the host
//! run the very same numbers through the very same
//! [`fdgr_kernel::finetune::FineTuner::push_and_step`].
//!
//! Only `core` and `fdgr_kernel` may be used here.

use fdgr_kernel::finetune::{FineTuner, Mode};
use fdgr_kernel::ring::SampleRing;
use fdgr_kernel::{Adam, Method, Sgd, SgdState};

/// Inputs per sample (8×8 digits pixels, 0..=16); the sample stream's
/// format is [`fdgr_kernel::stream`].
pub const INPUTS: usize = 64;
/// Recent samples kept in the ring buffer.
pub const RING: usize = 8;
/// Samples per training step (the most recent ones).
pub const BATCH: usize = 1;
/// Input scale: x = pixel · 1/16.
pub const SCALE: f32 = 1.0 / 16.0;
/// Learning rate (constant).
pub const LR: f32 = 0.01;
/// GR strength γ (`fgr`, `db`).
pub const GAMMA: f32 = 0.05;
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

/// The index in [`METHODS`] of the method named `name` (`sgd`, `fgr`,
/// `db`, `sam`).
pub fn method_index(name: &str) -> Option<usize> {
    METHODS.iter().position(|m| m.name() == name)
}

/// The method named `name`, if the firmware offers it.
pub fn method(name: &str) -> Option<Method<f32>> {
    method_index(name).map(|i| METHODS[i])
}

/// Parses `full` / `last` (last layer only).
pub fn parse_mode(s: &str) -> Option<Mode> {
    match s {
        "full" => Some(Mode::Full),
        "last" | "last-layer" => Some(Mode::LastLayer),
        _ => None,
    }
}

/// Short name of a mode: `full` or `last`.
pub const fn mode_name(mode: Mode) -> &'static str {
    match mode {
        Mode::Full => "full",
        Mode::LastLayer => "last",
    }
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
