//! The layer kinds: what each [`Op`] is (its settings, its flat record
//! [`OpFields`] and name, what every serialized form is written over), and
//! which module holds its facts and its maths: its output shape, parameter
//! count, multiply-adds and parameter tensors ([`out_dims`],
//! [`checked_param_len`], [`macs`], [`Op::tensors`], each dispatched here to
//! the kind's module) and its passes ([`Maths`], picked by `with_maths!` for
//! the walks of [`pass`](super::pass)). A new kind is registered here, and
//! its facts and maths written in its own module.

use super::ctx::Ctx;
use super::{conv, flatten, linear, norm, pool, Dims, Mode, Node, Tensors};
use crate::error::Error;
use crate::ops::Ops;
use crate::real::Real;
use crate::serial::act::Act;

/// What a layer computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Op {
    /// y = x·Wᵀ + b on a vector input (PyTorch `nn.Linear(in, out, bias)`).
    Linear {
        /// Output features.
        out: usize,
        /// With a bias.
        bias: bool,
    },
    /// 2-d convolution (PyTorch `nn.Conv2d(in, out, k, stride, padding,
    /// groups=groups, bias=bias)`, square kernel, zero padding).
    Conv2d {
        /// Output channels.
        out: usize,
        /// Kernel size k (k × k).
        k: usize,
        /// Stride.
        stride: usize,
        /// Zero padding on each side.
        pad: usize,
        /// Groups (1: dense; = channels: depthwise).
        groups: usize,
        /// With a bias.
        bias: bool,
    },
    /// Batch normalization over N·H·W per channel (`nn.BatchNorm2d`, or
    /// `nn.BatchNorm1d` on vectors), affine, eps 1e-5, momentum 0.1.
    BatchNorm,
    /// An elementwise activation.
    Act(Act),
    /// Max pooling (`nn.MaxPool2d(k, stride, padding)`, padding with −∞).
    MaxPool {
        /// Window k × k.
        k: usize,
        /// Stride.
        stride: usize,
        /// Padding (≤ k/2).
        pad: usize,
    },
    /// Average pooling (`nn.AvgPool2d(k, stride, padding)`, zero padding
    /// counted in the average as PyTorch's default).
    AvgPool {
        /// Window k × k.
        k: usize,
        /// Stride.
        stride: usize,
        /// Padding (≤ k/2).
        pad: usize,
    },
    /// Mean over H × W per channel (`nn.AdaptiveAvgPool2d(1)`), giving C × 1 × 1.
    GlobalAvgPool,
    /// C × H × W as one vector (a view: no copy).
    Flatten,
    /// y = x + (output of node `other`): the join of a residual block.
    Add {
        /// The node whose output is added (an earlier node).
        other: usize,
    },
}

/// A layer kind's settings as one flat record: what every serialized form
/// of a layer list holds (the FDGR file's layer entry, the layer list's
/// JSON, the source a firmware build generates), so that each form is
/// written once over it. A kind reads the fields it has
/// ([`Op::field_names`]); the others are 0 / `false` / `None`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OpFields {
    /// Output features or channels.
    pub out: usize,
    /// Kernel or window size.
    pub k: usize,
    /// Stride.
    pub stride: usize,
    /// Padding.
    pub pad: usize,
    /// Groups.
    pub groups: usize,
    /// With a bias.
    pub bias: bool,
    /// The activation.
    pub act: Option<Act>,
    /// The node an `Add` reads.
    pub other: usize,
}

/// One field of an [`OpFields`] by name ([`OpFields::get`],
/// [`OpFields::set`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldValue {
    /// A count (`out`, `k`, `stride`, `pad`, `groups`, `other`).
    Num(usize),
    /// A flag (`bias`).
    Flag(bool),
    /// An activation (`act`).
    Act(Act),
}

impl OpFields {
    /// Every count 0, no bias, no activation.
    pub const NONE: OpFields = OpFields {
        out: 0,
        k: 0,
        stride: 0,
        pad: 0,
        groups: 0,
        bias: false,
        act: None,
        other: 0,
    };

    /// The field named `name` (one of [`Op::field_names`]'s).
    pub fn get(&self, name: &str) -> Option<FieldValue> {
        Some(match name {
            "out" => FieldValue::Num(self.out),
            "k" => FieldValue::Num(self.k),
            "stride" => FieldValue::Num(self.stride),
            "pad" => FieldValue::Num(self.pad),
            "groups" => FieldValue::Num(self.groups),
            "other" => FieldValue::Num(self.other),
            "bias" => FieldValue::Flag(self.bias),
            "act" => FieldValue::Act(self.act?),
            _ => return None,
        })
    }

    /// Sets the field named `name`; false when there is none of that name
    /// and type.
    pub fn set(&mut self, name: &str, v: FieldValue) -> bool {
        match (name, v) {
            ("out", FieldValue::Num(n)) => self.out = n,
            ("k", FieldValue::Num(n)) => self.k = n,
            ("stride", FieldValue::Num(n)) => self.stride = n,
            ("pad", FieldValue::Num(n)) => self.pad = n,
            ("groups", FieldValue::Num(n)) => self.groups = n,
            ("other", FieldValue::Num(n)) => self.other = n,
            ("bias", FieldValue::Flag(b)) => self.bias = b,
            ("act", FieldValue::Act(a)) => self.act = Some(a),
            _ => return false,
        }
        true
    }
}

impl Op {
    /// Every kind's name, its code the index (the FDGR file's op code).
    pub const NAMES: [&'static str; 9] = [
        "linear", "conv", "bn", "act", "maxpool", "avgpool", "gap", "flatten", "add",
    ];

    /// The kind's code: its index in [`Op::NAMES`].
    pub const fn code(&self) -> u8 {
        match self {
            Op::Linear { .. } => 0,
            Op::Conv2d { .. } => 1,
            Op::BatchNorm => 2,
            Op::Act(_) => 3,
            Op::MaxPool { .. } => 4,
            Op::AvgPool { .. } => 5,
            Op::GlobalAvgPool => 6,
            Op::Flatten => 7,
            Op::Add { .. } => 8,
        }
    }

    /// Whether the kind needs the kernel's `conv` feature (convolution,
    /// batch norm, pooling).
    pub const fn needs_conv(&self) -> bool {
        matches!(
            self,
            Op::Conv2d { .. }
                | Op::BatchNorm
                | Op::MaxPool { .. }
                | Op::AvgPool { .. }
                | Op::GlobalAvgPool
        )
    }

    /// The kind's name (`linear`, `conv`, `bn`, …).
    pub const fn name(&self) -> &'static str {
        Self::NAMES[self.code() as usize]
    }

    /// The code of the kind named `name`.
    pub fn code_of(name: &str) -> Option<u8> {
        Self::NAMES.iter().position(|n| *n == name).map(|i| i as u8)
    }

    /// The fields ([`OpFields`]) the kind of code `code` has, by name.
    pub const fn field_names(code: u8) -> &'static [&'static str] {
        match code {
            0 => &["out", "bias"],
            1 => &["out", "k", "stride", "pad", "groups", "bias"],
            3 => &["act"],
            4 | 5 => &["k", "stride", "pad"],
            8 => &["other"],
            _ => &[],
        }
    }

    /// The layer's settings as a flat record.
    pub const fn fields(&self) -> OpFields {
        let z = OpFields::NONE;
        match *self {
            Op::Linear { out, bias } => OpFields { out, bias, ..z },
            Op::Conv2d {
                out,
                k,
                stride,
                pad,
                groups,
                bias,
            } => OpFields {
                out,
                k,
                stride,
                pad,
                groups,
                bias,
                ..z
            },
            Op::Act(a) => OpFields { act: Some(a), ..z },
            Op::MaxPool { k, stride, pad } | Op::AvgPool { k, stride, pad } => OpFields {
                k,
                stride,
                pad,
                ..z
            },
            Op::Add { other } => OpFields { other, ..z },
            Op::BatchNorm | Op::GlobalAvgPool | Op::Flatten => z,
        }
    }

    /// The layer of kind `code` with settings `f` (the fields it does not
    /// have are ignored); None for an unknown code or an activation
    /// missing.
    pub const fn from_fields(code: u8, f: &OpFields) -> Option<Op> {
        let (out, k, stride, pad, groups, bias) = (f.out, f.k, f.stride, f.pad, f.groups, f.bias);
        Some(match code {
            0 => Op::Linear { out, bias },
            1 => Op::Conv2d {
                out,
                k,
                stride,
                pad,
                groups,
                bias,
            },
            2 => Op::BatchNorm,
            3 => match f.act {
                Some(a) => Op::Act(a),
                None => return None,
            },
            4 => Op::MaxPool { k, stride, pad },
            5 => Op::AvgPool { k, stride, pad },
            6 => Op::GlobalAvgPool,
            7 => Op::Flatten,
            8 => Op::Add { other: f.other },
            _ => return None,
        })
    }

    /// [`Op::from_fields`] for generated source (a const context: an
    /// unknown kind fails the build).
    pub const fn of_fields(code: u8, f: &OpFields) -> Op {
        match Op::from_fields(code, f) {
            Some(op) => op,
            None => panic!("unknown layer kind"),
        }
    }
}

/// The output shape of `op` on `d`, or why it does not apply (each kind's
/// module says).
pub const fn out_dims(op: &Op, d: Dims) -> Result<Dims, Error> {
    match *op {
        Op::Linear { out, .. } => linear::out_dims(out, d),
        Op::Conv2d {
            out,
            k,
            stride,
            pad,
            groups,
            ..
        } => conv::out_dims(out, k, stride, pad, groups, d),
        Op::MaxPool { k, stride, pad } | Op::AvgPool { k, stride, pad } => {
            pool::out_dims(k, stride, pad, d)
        }
        Op::GlobalAvgPool => pool::global_out_dims(d),
        Op::Flatten => flatten::out_dims(d),
        // the same shape as the input
        Op::BatchNorm | Op::Act(_) | Op::Add { .. } => d.checked(),
    }
}

/// Parameters of `op` with input `d` (weights first, then the bias);
/// saturates at `usize::MAX` where the count overflows (never for a
/// planned node: [`plan`](super::plan) rejects those).
pub const fn param_len(op: &Op, d: Dims) -> usize {
    match checked_param_len(op, d) {
        Ok(n) => n,
        Err(_) => usize::MAX,
    }
}

/// [`param_len`], or the error of a count past [`MAX_SCALARS`](super::MAX_SCALARS)
/// (each kind's module counts).
pub const fn checked_param_len(op: &Op, d: Dims) -> Result<usize, Error> {
    match *op {
        Op::Linear { out, bias } => linear::checked_param_len(out, bias, d),
        Op::Conv2d {
            out,
            k,
            groups,
            bias,
            ..
        } => conv::checked_param_len(out, k, groups, bias, d),
        Op::BatchNorm => norm::checked_param_len(d),
        _ => Ok(0),
    }
}

/// Multiply-adds of `op` per sample, from `d` to `o` (each kind's module
/// counts); saturates at `usize::MAX` where the count overflows.
pub const fn macs(op: &Op, d: Dims, o: Dims) -> usize {
    let r = match *op {
        Op::Linear { out, .. } => linear::macs(out, d),
        Op::Conv2d { k, groups, .. } => conv::macs(k, groups, d, o),
        _ => Some(0),
    };
    match r {
        Some(v) => v,
        None => usize::MAX,
    }
}

impl Op {
    /// Its parameter tensors on input `d`, in θ order, as its PyTorch
    /// module names and shapes them, with their initialisation (each
    /// kind's module says): what checkpoints name, initialisation draws
    /// and the checks split θ by.
    pub const fn tensors(&self, d: Dims) -> Tensors {
        match *self {
            Op::Linear { out, bias } => linear::tensors(out, bias, d),
            Op::Conv2d {
                out,
                k,
                groups,
                bias,
                ..
            } => conv::tensors(out, k, groups, bias, d),
            Op::BatchNorm => norm::tensors(d),
            _ => Tensors::NONE,
        }
    }
}

/// Whether a node's backward and R-passes do without its own output, so
/// that an activation may overwrite it.
pub(crate) const fn output_not_needed(op: &Op) -> bool {
    matches!(
        op,
        Op::Linear { .. }
            | Op::Conv2d { .. }
            | Op::BatchNorm
            | Op::MaxPool { .. }
            | Op::AvgPool { .. }
            | Op::GlobalAvgPool
            | Op::Add { .. }
    )
}

/// A layer kind's maths over the backend's primitives ([`Ops`]): its four
/// passes, each for node `n` of the walk `c`. Each kind's module
/// implements it on a unit type; the crate's `with_maths!` macro picks that type for a
/// node's [`Op`], so the walks of [`pass`](super::pass) are written once
/// for every kind.
pub trait Maths {
    /// The node's value. In [`Mode::Train`] batch norm uses the batch's
    /// statistics and, when `update`, computes the running statistics'
    /// update; the other kinds ignore both.
    fn forward<F: Real, O: Ops<F>>(c: &Ctx<'_>, n: &Node, o: &mut O, mode: Mode, update: bool);
    /// Its input's delta (and, with `grad` = (α, β), out ← β·out + α·∇L
    /// for its parameters).
    fn backward<F: Real, O: Ops<F>>(c: &Ctx<'_>, n: &Node, o: &mut O, grad: Option<(F, F)>);
    /// Its R-value along V.
    fn r_forward<F: Real, O: Ops<F>>(c: &Ctx<'_>, n: &Node, o: &mut O);
    /// Its input's R-delta (and out ← β·out + α·H·V for its parameters).
    fn r_backward<F: Real, O: Ops<F>>(c: &Ctx<'_>, n: &Node, o: &mut O, alpha: F, beta: F);
}

/// `with_maths!(op, K => expr)`: `expr` with `K` the [`Maths`] of `op`'s
/// kind — the one list of which module computes which kind. Kinds behind
/// the `conv` feature do nothing without it (they cannot be planned).
macro_rules! with_maths {
    ($op:expr, $k:ident => $e:expr) => {
        match $op {
            $crate::model::Op::Linear { .. } => {
                type $k = $crate::model::linear::Linear;
                $e
            }
            #[cfg(feature = "conv")]
            $crate::model::Op::Conv2d { .. } => {
                type $k = $crate::model::conv::Conv;
                $e
            }
            #[cfg(feature = "conv")]
            $crate::model::Op::BatchNorm => {
                type $k = $crate::model::norm::BatchNorm;
                $e
            }
            $crate::model::Op::Act(_) => {
                type $k = $crate::model::act::Activation;
                $e
            }
            #[cfg(feature = "conv")]
            $crate::model::Op::MaxPool { .. }
            | $crate::model::Op::AvgPool { .. }
            | $crate::model::Op::GlobalAvgPool => {
                type $k = $crate::model::pool::Pool;
                $e
            }
            $crate::model::Op::Flatten => {
                type $k = $crate::model::flatten::Flatten;
                $e
            }
            $crate::model::Op::Add { .. } => {
                type $k = $crate::model::add::Add;
                $e
            }
            #[cfg(not(feature = "conv"))]
            _ => {}
        }
    };
}
pub(crate) use with_maths;
