//! The fine-tuning configuration, in one file that three programs compile:
//! the firmware (`fdgr-firmware`), its build script (which checks the model
//! and the sample stream against it), and the host replay in
//! `cargo xtask firmware` (through `#[path]`). So the device and the host
//! run the very same numbers through the very same
//! [`fdgr_kernel::finetune::FineTuner::push_and_step`].
//!
//! Only `core` and `fdgr_kernel` may be used here.

use fdgr_kernel::finetune::{FineTuner, Mode};
use fdgr_kernel::ring::{Sample, SampleRing};
use fdgr_kernel::{Method, Sgd, SgdState};

/// Inputs per sample (8×8 digits pixels, 0..=16).
pub const INPUTS: usize = 64;
/// Bytes per sample in the stream file: `INPUTS` pixels, then the label.
pub const SAMPLE_BYTES: usize = INPUTS + 1;
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

/// The training methods the firmware examples offer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MethodKind {
    /// Plain SGD: d = g.
    Sgd,
    /// Forward finite-difference GR (the paper's F-GR).
    Fgr,
    /// Exact GR by double backprop (R-operator).
    Db,
    /// Sharpness-aware minimization.
    Sam,
}

impl MethodKind {
    /// Every method, in the order results are reported.
    pub const ALL: [MethodKind; 4] = [
        MethodKind::Sgd,
        MethodKind::Fgr,
        MethodKind::Db,
        MethodKind::Sam,
    ];

    /// Parses `sgd`, `fgr`, `db`, `sam`.
    pub fn parse(s: &str) -> Option<MethodKind> {
        Self::ALL.into_iter().find(|m| m.name() == s)
    }

    /// Short name.
    pub const fn name(self) -> &'static str {
        match self {
            MethodKind::Sgd => "sgd",
            MethodKind::Fgr => "fgr",
            MethodKind::Db => "db",
            MethodKind::Sam => "sam",
        }
    }

    /// The kernel method with this configuration's hyper-parameters.
    pub const fn method(self) -> Method<f32> {
        match self {
            MethodKind::Sgd => Method::Sgd,
            MethodKind::Fgr => Method::Fgr {
                gamma: GAMMA,
                eps: EPS,
            },
            MethodKind::Db => Method::Db { gamma: GAMMA },
            MethodKind::Sam => Method::Sam { rho: RHO },
        }
    }

    /// Whether the method needs the perturbed-point buffer.
    pub const fn needs_point(self) -> bool {
        matches!(self, MethodKind::Fgr | MethodKind::Sam)
    }

    /// Whether the method needs the Hessian-vector workspace (5·B·N).
    pub const fn needs_hvp(self) -> bool {
        matches!(self, MethodKind::Db)
    }
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
pub const fn tuner(kind: MethodKind, mode: Mode) -> FineTuner<f32, RING, INPUTS> {
    FineTuner {
        ring: SampleRing::new(),
        method: kind.method(),
        opt: Sgd {
            momentum: 0.0,
            nesterov: false,
            weight_decay: 0.0,
        },
        state: SgdState { steps: 0 },
        lr: LR,
        batch: BATCH,
        scale: SCALE,
        mode,
    }
}

/// Sample `i` of a stream file (`SAMPLE_BYTES` per sample), if present.
pub fn sample(stream: &[u8], i: usize) -> Option<Sample<INPUTS>> {
    let b = stream.get(i * SAMPLE_BYTES..(i + 1) * SAMPLE_BYTES)?;
    let mut x = [0u8; INPUTS];
    x.copy_from_slice(&b[..INPUTS]);
    Some(Sample {
        x,
        label: b[INPUTS],
    })
}
