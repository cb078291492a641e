//! One model description for every network fdgr trains: a list of layers.
//!
//! A [`Layer`] is an operation ([`Op`]: linear, 2-d convolution, batch
//! norm, activation, pooling, flatten, residual add) and where it reads
//! its input ([`Src`]). [`plan`] turns a layer list and the input's
//! [`Dims`] into [`Node`]s: every shape, parameter offset and buffer
//! offset resolved once, in a `const fn`, so a microcontroller's model is
//! a `const` with its buffer sizes known at compile time and a host's is
//! planned at run time by the same code.
//!
//! The maths of each layer (forward, backward and the R-operator passes)
//! is written once in the submodules ([`linear`], [`conv`], [`norm`],
//! [`pool`], [`add`], [`act`](mod@crate::model::act)) as calls of the
//! primitives of [`crate::ops::Ops`]; [`pass`] runs them in order.
//!
//! Conventions are PyTorch's: NCHW tensors (a batch of B samples is B
//! blocks of C·H·W values), `Conv2d` weights `[out, in/groups, k, k]`,
//! `Linear` weights `[out, in]`, floor division for output sizes, batch
//! norm with eps 1e-5, momentum 0.1 and the unbiased variance in the
//! running statistics. θ holds the parameters node after node (weight,
//! then bias; batch norm: γ then β), which is a PyTorch module's
//! `parameters()` order when the module registers its layers in list
//! order.
//!
//! ## Buffers
//!
//! A node's output (its *value*) lives in the workspace, except for
//! `Flatten` (a view of its input) and an activation that may run in
//! place on its producer's output (when that producer feeds nothing else
//! and does not need its own output in the backward pass: a linear,
//! convolution, batch-norm, pooling or add node; the activation is then
//! fused into a linear, convolution or batch-norm forward). Gradients
//! with respect to values (*deltas*) and the R-operator's derivatives of
//! deltas use the same layout; the R-derivatives of values have their
//! own, without in-place sharing. See [`Layout`].

pub mod act;
pub mod add;
#[cfg(feature = "conv")]
pub mod conv;
pub mod ctx;
pub mod linear;
#[cfg(feature = "conv")]
pub mod norm;
pub mod pass;
mod planned;
#[cfg(feature = "conv")]
pub mod pool;

pub use planned::*;

use crate::act::Act;
use crate::error::Error;
use crate::loss::Loss;

/// The shape of one sample: channels × height × width (a vector of n
/// features is n × 1 × 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Dims {
    /// Channels (features for a vector).
    pub c: usize,
    /// Height.
    pub h: usize,
    /// Width.
    pub w: usize,
}

impl Dims {
    /// C × H × W.
    pub const fn new(c: usize, h: usize, w: usize) -> Dims {
        Dims { c, h, w }
    }

    /// A vector of `n` features (n × 1 × 1).
    pub const fn flat(n: usize) -> Dims {
        Dims { c: n, h: 1, w: 1 }
    }

    /// Values per sample, C·H·W.
    pub const fn len(&self) -> usize {
        self.c * self.h * self.w
    }

    /// C·H·W, or `None` when it overflows `usize` or exceeds
    /// [`MAX_SCALARS`] (every planned shape passes this check, so
    /// [`Dims::len`] cannot overflow on them).
    pub const fn checked_len(&self) -> Option<usize> {
        match self.c.checked_mul(self.h) {
            Some(ch) => match ch.checked_mul(self.w) {
                Some(n) if n <= MAX_SCALARS => Some(n),
                _ => None,
            },
            None => None,
        }
    }

    /// True when C·H·W = 0.
    pub const fn is_empty(&self) -> bool {
        self.c == 0 || self.h == 0 || self.w == 0
    }

    /// Values per channel, H·W.
    pub const fn hw(&self) -> usize {
        self.h * self.w
    }

    /// True for a vector (H = W = 1).
    pub const fn is_flat(&self) -> bool {
        self.h == 1 && self.w == 1
    }
}

impl core::fmt::Display for Dims {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        if self.is_flat() {
            write!(f, "{}", self.c)
        } else {
            write!(f, "{}x{}x{}", self.c, self.h, self.w)
        }
    }
}

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
        let z = OpFields {
            out: 0,
            k: 0,
            stride: 0,
            pad: 0,
            groups: 0,
            bias: false,
            act: None,
            other: 0,
        };
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

/// Where a layer reads its input.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Src {
    /// The previous layer's output (the network input for the first layer).
    Prev,
    /// The network input.
    Input,
    /// The output of layer `i` (an earlier one).
    Node(usize),
}

/// Which of a layer's parameters are trained (sparse updates): the rest
/// are read from a separate, read-only parameter vector (which may stay in
/// flash on a device) and get no gradient, direction, perturbation or
/// optimizer state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Train {
    /// Every parameter of the layer (the default).
    All,
    /// The bias only (a linear or convolution layer with a bias; on any
    /// other layer the same as [`Train::Frozen`]).
    Bias,
    /// None: the layer is frozen.
    Frozen,
}

/// One entry of a model's layer list.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Layer {
    /// What it computes.
    pub op: Op,
    /// Where it reads its input.
    pub src: Src,
    /// Which of its parameters are trained.
    pub train: Train,
}

impl Layer {
    /// A layer reading the previous output.
    pub const fn new(op: Op) -> Layer {
        Layer {
            op,
            src: Src::Prev,
            train: Train::All,
        }
    }
    /// The same layer with its parameters trained as `t`.
    pub const fn trained(self, t: Train) -> Layer {
        Layer {
            op: self.op,
            src: self.src,
            train: t,
        }
    }
    /// `Linear(in, out)` with bias.
    pub const fn linear(out: usize) -> Layer {
        Layer::new(Op::Linear { out, bias: true })
    }
    /// `Conv2d(in, out, k, stride 1, padding 0)` with bias, groups 1.
    pub const fn conv(out: usize, k: usize) -> Layer {
        Layer::new(Op::Conv2d {
            out,
            k,
            stride: 1,
            pad: 0,
            groups: 1,
            bias: true,
        })
    }
    /// Batch normalization.
    pub const fn batch_norm() -> Layer {
        Layer::new(Op::BatchNorm)
    }
    /// An activation.
    pub const fn act(a: Act) -> Layer {
        Layer::new(Op::Act(a))
    }
    /// `MaxPool2d(k)` (stride k).
    pub const fn max_pool(k: usize) -> Layer {
        Layer::new(Op::MaxPool {
            k,
            stride: k,
            pad: 0,
        })
    }
    /// `AvgPool2d(k)` (stride k).
    pub const fn avg_pool(k: usize) -> Layer {
        Layer::new(Op::AvgPool {
            k,
            stride: k,
            pad: 0,
        })
    }
    /// Global average pooling.
    pub const fn global_avg_pool() -> Layer {
        Layer::new(Op::GlobalAvgPool)
    }
    /// Flatten.
    pub const fn flatten() -> Layer {
        Layer::new(Op::Flatten)
    }
    /// Residual join: previous output + output of layer `other`.
    pub const fn add(other: usize) -> Layer {
        Layer::new(Op::Add { other })
    }
    /// The same layer with stride `s` (convolution and pooling).
    pub const fn stride(self, s: usize) -> Layer {
        let op = match self.op {
            Op::Conv2d {
                out,
                k,
                pad,
                groups,
                bias,
                ..
            } => Op::Conv2d {
                out,
                k,
                stride: s,
                pad,
                groups,
                bias,
            },
            Op::MaxPool { k, pad, .. } => Op::MaxPool { k, stride: s, pad },
            Op::AvgPool { k, pad, .. } => Op::AvgPool { k, stride: s, pad },
            op => op,
        };
        Layer { op, ..self }
    }
    /// The same layer with padding `p` (convolution and pooling).
    pub const fn pad(self, p: usize) -> Layer {
        let op = match self.op {
            Op::Conv2d {
                out,
                k,
                stride,
                groups,
                bias,
                ..
            } => Op::Conv2d {
                out,
                k,
                stride,
                pad: p,
                groups,
                bias,
            },
            Op::MaxPool { k, stride, .. } => Op::MaxPool { k, stride, pad: p },
            Op::AvgPool { k, stride, .. } => Op::AvgPool { k, stride, pad: p },
            op => op,
        };
        Layer { op, ..self }
    }
    /// The same convolution with `g` groups.
    pub const fn groups(self, g: usize) -> Layer {
        let op = match self.op {
            Op::Conv2d {
                out,
                k,
                stride,
                pad,
                bias,
                ..
            } => Op::Conv2d {
                out,
                k,
                stride,
                pad,
                groups: g,
                bias,
            },
            op => op,
        };
        Layer { op, ..self }
    }
    /// The same linear or convolution layer without a bias.
    pub const fn no_bias(self) -> Layer {
        let op = match self.op {
            Op::Linear { out, .. } => Op::Linear { out, bias: false },
            Op::Conv2d {
                out,
                k,
                stride,
                pad,
                groups,
                ..
            } => Op::Conv2d {
                out,
                k,
                stride,
                pad,
                groups,
                bias: false,
            },
            op => op,
        };
        Layer { op, ..self }
    }
    /// The same layer reading its input from `src`.
    pub const fn from(self, src: Src) -> Layer {
        Layer { src, ..self }
    }
}

/// The input of a planned node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Ref {
    /// The network input x.
    Input,
    /// The output of node `i`.
    Node(usize),
}

/// Where a node's value (and delta) lives, per sample.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Slot {
    /// In the network input (a `Flatten` of x).
    Input,
    /// At this offset (× batch) of the value region.
    Ws(usize),
}

/// A planned layer: its operation with every size and offset resolved.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Node {
    /// What it computes.
    pub op: Op,
    /// Its input.
    pub input: Ref,
    /// `Add`: the node added to the input.
    pub other: Ref,
    /// Input shape per sample.
    pub in_dims: Dims,
    /// Output shape per sample.
    pub out_dims: Dims,
    /// First trained parameter in θ (the trained parameters: all of the
    /// layer's, or its bias alone; see [`Node::train`]).
    pub param_off: usize,
    /// Number of trained parameters.
    pub param_len: usize,
    /// Which of its parameters are trained ([`Train::All`] unless the
    /// layer list asked otherwise; [`Train::Bias`] only on a layer with a
    /// bias).
    pub train: Train,
    /// First parameter in the whole parameter vector (every parameter,
    /// trained or not, in layer order): where the frozen ones are read
    /// ([`crate::ops::Mem::Frozen`]). Equals `param_off` in a model
    /// without frozen parameters.
    pub frozen_off: usize,
    /// Number of parameters, trained or not (the layer's block in the
    /// whole parameter vector; the trained ones are its last `param_len`).
    pub all_len: usize,
    /// First non-θ state entry (batch norm: running mean, then running
    /// variance, C each).
    pub state_off: usize,
    /// Where the value and the delta live.
    pub val: Slot,
    /// Per-sample offset of the R-derivative of the value (meaningful
    /// when `active`).
    pub rval: usize,
    /// Offset of this node's fixed-size scratch (batch norm: saved batch
    /// mean and 1/σ, the pending running statistics; 4·C).
    pub ext: usize,
    /// Offset of its fixed-size R-pass scratch (batch norm: 4·C).
    pub ext_hvp: usize,
    /// An activation that this node's forward applies in place (the next
    /// node is that activation, running in place).
    pub fuse: Option<Act>,
    /// An activation running in place on its producer's buffer.
    pub inplace: bool,
    /// The backward pass adds to the input's delta rather than writing it
    /// (another consumer of the input has written it first).
    pub acc_in: bool,
    /// The same for `Add`'s other operand.
    pub acc_other: bool,
    /// θ influences this node's output (it or a node before it has
    /// parameters): its delta and R-derivative are needed.
    pub active: bool,
}

impl Node {
    /// A placeholder, overwritten by [`plan`].
    pub const EMPTY: Node = Node {
        op: Op::Flatten,
        input: Ref::Input,
        other: Ref::Input,
        in_dims: Dims::flat(0),
        out_dims: Dims::flat(0),
        param_off: 0,
        param_len: 0,
        train: Train::All,
        frozen_off: 0,
        all_len: 0,
        state_off: 0,
        val: Slot::Input,
        rval: 0,
        ext: 0,
        ext_hvp: 0,
        fuse: None,
        inplace: false,
        acc_in: false,
        acc_other: false,
        active: false,
    };
}

/// Where a batch-norm node's pending running statistics start in its
/// scratch, in units of C (after the batch mean and 1/σ).
pub const BN_PENDING: usize = 2;
/// The number of batch-norm statistics per channel kept in `ext`.
pub(crate) const BN_EXT: usize = 4;
/// The same in `ext_hvp`.
pub(crate) const BN_EXT_HVP: usize = 4;

// How batch norm normalizes, and its constants: defined with its maths
// (the primitives use them too).
pub use crate::serial::norm::{Mode, BN_EPS, BN_MOMENTUM};

/// The largest count of scalars any size of a planned model may reach: a
/// buffer of that many `f64` values still fits in the address space, so
/// the sizes [`plan`] returns, and small multiples of them, cannot wrap.
/// [`plan`] rejects a model with a larger shape, parameter count or
/// buffer (the host then checks memory before it allocates anything).
pub const MAX_SCALARS: usize = (isize::MAX as usize) / 8;

/// The error of a size that overflows (see [`MAX_SCALARS`]).
const TOO_LARGE: Error = Error::BadModel(
    "a size overflows: the model is too large to address (shapes, parameters or buffers)",
);

/// `a + b`, bounded by [`MAX_SCALARS`].
const fn cadd(a: usize, b: usize) -> Result<usize, Error> {
    match a.checked_add(b) {
        Some(v) if v <= MAX_SCALARS => Ok(v),
        _ => Err(TOO_LARGE),
    }
}

/// `a · b`, bounded by [`MAX_SCALARS`].
const fn cmul(a: usize, b: usize) -> Result<usize, Error> {
    match a.checked_mul(b) {
        Some(v) if v <= MAX_SCALARS => Ok(v),
        _ => Err(TOO_LARGE),
    }
}

/// `?` for `const fn`s.
macro_rules! tri {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(e) => return Err(e),
        }
    };
}

/// Output length of a window of `k` with stride `s` and padding `p` on
/// `n` values: `None` for a zero stride or window, a window larger than
/// the padded input, or sizes that overflow.
const fn out_len(n: usize, k: usize, s: usize, p: usize) -> Option<usize> {
    if s == 0 || k == 0 {
        return None;
    }
    let padded = match p.checked_mul(2) {
        Some(pp) => match n.checked_add(pp) {
            Some(v) if v <= MAX_SCALARS => v,
            _ => return None,
        },
        None => return None,
    };
    if padded < k {
        return None;
    }
    Some((padded - k) / s + 1)
}

/// The output shape of `op` on `d`, or why it does not apply.
pub const fn out_dims(op: &Op, d: Dims) -> Result<Dims, Error> {
    match *op {
        Op::Linear { out, .. } => {
            if !d.is_flat() || out == 0 || d.c == 0 {
                return Err(Error::BadModel(
                    "linear needs a non-empty vector input (flatten first)",
                ));
            }
            Ok(Dims::flat(out))
        }
        Op::Conv2d {
            out,
            k,
            stride,
            pad,
            groups,
            ..
        } => {
            if groups == 0 || out == 0 || d.c == 0 || d.c % groups != 0 || out % groups != 0 {
                return Err(Error::BadModel(
                    "conv: channels in and out must be non-zero multiples of groups",
                ));
            }
            match (out_len(d.h, k, stride, pad), out_len(d.w, k, stride, pad)) {
                (Some(h), Some(w)) => checked(Dims::new(out, h, w)),
                _ => Err(Error::BadModel(
                    "conv: kernel larger than the padded input, zero stride, or sizes that overflow",
                )),
            }
        }
        Op::MaxPool { k, stride, pad } | Op::AvgPool { k, stride, pad } => {
            if pad > k / 2 {
                return Err(Error::BadModel(
                    "pool: padding must be at most half the window",
                ));
            }
            match (out_len(d.h, k, stride, pad), out_len(d.w, k, stride, pad)) {
                (Some(h), Some(w)) => checked(Dims::new(d.c, h, w)),
                _ => Err(Error::BadModel(
                    "pool: window larger than the padded input, zero stride, or sizes that overflow",
                )),
            }
        }
        Op::GlobalAvgPool => Ok(Dims::flat(d.c)),
        Op::Flatten => match d.checked_len() {
            Some(n) => Ok(Dims::flat(n)),
            None => Err(TOO_LARGE),
        },
        Op::BatchNorm | Op::Act(_) | Op::Add { .. } => checked(d),
    }
}

/// `d` when its length is addressable (see [`Dims::checked_len`]).
const fn checked(d: Dims) -> Result<Dims, Error> {
    match d.checked_len() {
        Some(_) => Ok(d),
        None => Err(TOO_LARGE),
    }
}

/// Parameters of `op` with input `d` (weights first, then the bias);
/// saturates at `usize::MAX` where the count overflows (never for a
/// planned node: [`plan`] rejects those).
pub const fn param_len(op: &Op, d: Dims) -> usize {
    match checked_param_len(op, d) {
        Ok(n) => n,
        Err(_) => usize::MAX,
    }
}

/// [`param_len`], or the error of a count past [`MAX_SCALARS`].
pub const fn checked_param_len(op: &Op, d: Dims) -> Result<usize, Error> {
    match *op {
        Op::Linear { out, bias } => {
            let w = tri!(cmul(out, d.c));
            cadd(w, if bias { out } else { 0 })
        }
        Op::Conv2d {
            out,
            k,
            groups,
            bias,
            ..
        } => {
            if groups == 0 {
                return Err(Error::BadModel("conv: groups must be positive"));
            }
            let kk = tri!(cmul(k, k));
            let w = tri!(cmul(tri!(cmul(out, d.c / groups)), kk));
            cadd(w, if bias { out } else { 0 })
        }
        Op::BatchNorm => cmul(2, d.c),
        _ => Ok(0),
    }
}

/// Multiply-adds of `op` per sample; saturates at `usize::MAX` where the
/// count overflows.
pub const fn macs(op: &Op, d: Dims, o: Dims) -> usize {
    let groups = match *op {
        Op::Conv2d { groups, .. } if groups > 0 => groups,
        _ => 1,
    };
    let r = match *op {
        Op::Linear { out, .. } => out.checked_mul(d.c),
        Op::Conv2d { k, .. } => match o.c.checked_mul(o.h) {
            Some(v) => match v.checked_mul(o.w) {
                Some(v) => match v.checked_mul(d.c / groups) {
                    Some(v) => match v.checked_mul(k) {
                        Some(v) => v.checked_mul(k),
                        None => None,
                    },
                    None => None,
                },
                None => None,
            },
            None => None,
        },
        _ => Some(0),
    };
    match r {
        Some(v) => v,
        None => usize::MAX,
    }
}

/// Whether a node's backward and R-passes do without its own output, so
/// that an activation may overwrite it.
const fn output_not_needed(op: &Op) -> bool {
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

/// The planner ([`plan`]), after the `tri!` macro it uses.
mod planner;
pub use planner::plan;

#[cfg(test)]
mod tests;
