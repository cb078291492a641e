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
use fdgr_kernel::{Method, Optimizer, Sgd, SgdState};

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

/// The fine-tuner both sides start from: an empty ring, plain SGD (μ = 0,
/// so no momentum buffer), constant learning rate.
pub const fn tuner(method: Method<f32>, mode: Mode) -> FineTuner<f32, RING, INPUTS> {
    FineTuner {
        ring: SampleRing::new(),
        method,
        opt: Optimizer::Sgd(Sgd {
            momentum: 0.0,
            nesterov: false,
            weight_decay: 0.0,
        }),
        state: SgdState { steps: 0 },
        lr: LR,
        batch: BATCH,
        scale: SCALE,
        mode,
    }
}
