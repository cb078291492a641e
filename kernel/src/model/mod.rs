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
pub mod linear;
#[cfg(feature = "conv")]
pub mod norm;
pub mod pass;
#[cfg(feature = "conv")]
pub mod pool;

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

/// Totals of a planned model.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Sizes {
    /// Trained parameters P (the length of θ; every parameter unless the
    /// layer list freezes some).
    pub params: usize,
    /// Every parameter, trained or frozen (the length of the frozen
    /// parameter vector a model with frozen parameters reads).
    pub all_params: usize,
    /// Non-θ state (batch-norm running statistics).
    pub state: usize,
    /// Value (and delta) scalars per sample.
    pub vals: usize,
    /// R-derivative scalars per sample.
    pub rvals: usize,
    /// Fixed-size scratch of the gradient pass.
    pub ext: usize,
    /// Fixed-size scratch of the R-pass.
    pub ext_hvp: usize,
    /// Multiply-adds of one forward pass per sample (linear and
    /// convolution layers, padded taps counted).
    pub macs: usize,
    /// Batch-norm layers.
    pub batch_norms: usize,
}

/// Where each buffer starts in a workspace, for a batch of `b` samples:
/// `[ values | deltas | ext | ext_hvp | R-values | R-deltas | state ]`
/// (the last three parts only for Hessian-vector products; the state at
/// the end of the workspace, see [`Model::workspace_len`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    /// Batch size.
    pub b: usize,
    /// Start of the values.
    pub vals: usize,
    /// Start of the deltas.
    pub dlt: usize,
    /// Start of the fixed scratch.
    pub ext: usize,
    /// Start of the fixed R-pass scratch.
    pub ext_hvp: usize,
    /// Start of the R-derivatives of values.
    pub rv: usize,
    /// Start of the R-derivatives of deltas.
    pub rd: usize,
    /// End of the pass area.
    pub end: usize,
}

/// Where a batch-norm node's pending running statistics start in its
/// scratch, in units of C (after the batch mean and 1/σ).
pub const BN_PENDING: usize = 2;
/// The number of batch-norm statistics per channel kept in `ext`.
pub(crate) const BN_EXT: usize = 4;
/// The same in `ext_hvp`.
pub(crate) const BN_EXT_HVP: usize = 4;

/// How a batch-norm layer normalizes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Mode {
    /// With the batch's own statistics (training).
    Train,
    /// With the running statistics (evaluation, and batch 1 on a device).
    Eval,
}

/// Batch norm's ε (PyTorch's default).
pub const BN_EPS: f64 = 1e-5;
/// Batch norm's running-statistics momentum (PyTorch's default).
pub const BN_MOMENTUM: f64 = 0.1;

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

const fn resolve(src: Src, i: usize) -> Result<Ref, Error> {
    match src {
        Src::Prev => {
            if i == 0 {
                Ok(Ref::Input)
            } else {
                Ok(Ref::Node(i - 1))
            }
        }
        Src::Input => Ok(Ref::Input),
        Src::Node(j) => {
            if j < i {
                Ok(Ref::Node(j))
            } else {
                Err(Error::BadModel("a layer may only read an earlier layer"))
            }
        }
    }
}

const fn reads(l: &Layer, i: usize, j: usize) -> bool {
    let direct = match resolve(l.src, i) {
        Ok(Ref::Node(k)) => k == j,
        _ => false,
    };
    let other = match l.op {
        Op::Add { other } => other == j,
        _ => false,
    };
    direct || other
}

/// Consumers of layer `j`'s output among `layers` (an `Add` of a node to
/// itself counts twice).
const fn consumers(layers: &[Layer], j: usize) -> usize {
    let mut n = 0;
    let mut i = j + 1;
    while i < layers.len() {
        let l = &layers[i];
        let direct = matches!(resolve(l.src, i), Ok(Ref::Node(k)) if k == j);
        let other = matches!(l.op, Op::Add { other } if other == j);
        n += direct as usize + other as usize;
        i += 1;
    }
    n
}

/// Whether a consumer after layer `i` (in list order) reads `j`: then
/// layer `i`'s backward accumulates into `j`'s delta (the backward pass
/// visits later layers first, and the first one to write overwrites).
const fn read_after(layers: &[Layer], i: usize, j: usize) -> bool {
    let mut k = i + 1;
    while k < layers.len() {
        if reads(&layers[k], k, j) {
            return true;
        }
        k += 1;
    }
    false
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

/// Plans `layers` on inputs of shape `input` into `nodes` (one node per
/// layer; `nodes.len()` must equal `layers.len()`); returns the totals.
///
/// Fails with [`Error::BadModel`] naming the problem: an empty list, a
/// layer reading a later one, shapes that do not fit (a linear layer on a
/// spatial input, a kernel larger than its padded input, channels not
/// divisible by the groups, an `Add` of two different shapes).
pub const fn plan(layers: &[Layer], input: Dims, nodes: &mut [Node]) -> Result<Sizes, Error> {
    if layers.is_empty() {
        return Err(Error::BadModel("the model has no layers"));
    }
    if nodes.len() != layers.len() {
        return Err(Error::BadModel("node storage must hold one node per layer"));
    }
    if input.is_empty() {
        return Err(Error::BadModel("empty input shape"));
    }
    if input.checked_len().is_none() {
        return Err(TOO_LARGE);
    }
    let mut s = Sizes {
        params: 0,
        all_params: 0,
        state: 0,
        vals: 0,
        rvals: 0,
        ext: 0,
        ext_hvp: 0,
        macs: 0,
        batch_norms: 0,
    };
    let mut i = 0;
    while i < layers.len() {
        let l = layers[i];
        if i + 1 < layers.len() && consumers(layers, i) == 0 {
            return Err(Error::BadModel(
                "a layer's output is used by no later layer",
            ));
        }
        let input_ref = match resolve(l.src, i) {
            Ok(r) => r,
            Err(e) => return Err(e),
        };
        let (in_dims, in_active, in_slot) = match input_ref {
            Ref::Input => (input, false, Slot::Input),
            Ref::Node(j) => (nodes[j].out_dims, nodes[j].active, nodes[j].val),
        };
        let out = match out_dims(&l.op, in_dims) {
            Ok(d) => d,
            Err(e) => return Err(e),
        };
        let mut other = Ref::Input;
        let mut other_active = false;
        if let Op::Add { other: j } = l.op {
            if j >= i {
                return Err(Error::BadModel(
                    "add: the other operand must be an earlier layer",
                ));
            }
            if nodes[j].out_dims.c != in_dims.c
                || nodes[j].out_dims.h != in_dims.h
                || nodes[j].out_dims.w != in_dims.w
            {
                return Err(Error::BadModel("add: the two operands differ in shape"));
            }
            other = Ref::Node(j);
            other_active = nodes[j].active;
        }
        if !cfg!(feature = "conv")
            && matches!(
                l.op,
                Op::Conv2d { .. }
                    | Op::BatchNorm
                    | Op::MaxPool { .. }
                    | Op::AvgPool { .. }
                    | Op::GlobalAvgPool
            )
        {
            return Err(Error::BadModel(
                "convolution, batch norm and pooling need fdgr-kernel's `conv` feature",
            ));
        }
        let np = tri!(checked_param_len(&l.op, in_dims));
        let bias_len = match l.op {
            Op::Linear { out, bias: true }
            | Op::Conv2d {
                out, bias: true, ..
            } => out,
            _ => 0,
        };
        let train = match l.train {
            Train::Bias if bias_len == 0 => Train::Frozen,
            t => t,
        };
        let trained = match train {
            Train::All => np,
            Train::Bias => bias_len,
            Train::Frozen => 0,
        };
        let mut n = Node::EMPTY;
        n.op = l.op;
        n.input = input_ref;
        n.other = other;
        n.in_dims = in_dims;
        n.out_dims = out;
        n.param_off = s.params;
        n.param_len = trained;
        n.train = train;
        n.frozen_off = s.all_params;
        n.all_len = np;
        n.active = trained > 0 || in_active || other_active;
        n.acc_in = match input_ref {
            Ref::Node(j) => read_after(layers, i, j),
            Ref::Input => false,
        };
        n.acc_other = match other {
            Ref::Node(j) => read_after(layers, i, j) || matches!(input_ref, Ref::Node(k) if k == j),
            Ref::Input => false,
        };
        s.params = tri!(cadd(s.params, trained));
        s.all_params = tri!(cadd(s.all_params, np));
        s.macs = s.macs.saturating_add(macs(&l.op, in_dims, out));
        // Where the value lives.
        let mut own = true;
        match l.op {
            Op::Flatten => {
                // a view of its input, unless the input feeds other
                // layers too (their deltas would then share a buffer
                // that two groups of consumers write): then a copy
                let alone = match input_ref {
                    Ref::Input => true,
                    Ref::Node(j) => consumers(layers, j) == 1,
                };
                if alone {
                    n.val = in_slot;
                    own = false;
                }
            }
            Op::Act(a) => {
                if let Ref::Node(j) = input_ref {
                    if consumers(layers, j) == 1 && output_not_needed(&nodes[j].op) {
                        n.val = nodes[j].val;
                        n.inplace = true;
                        own = false;
                        if matches!(
                            nodes[j].op,
                            Op::Linear { .. } | Op::Conv2d { .. } | Op::BatchNorm
                        ) {
                            nodes[j].fuse = Some(a);
                        }
                    }
                }
            }
            _ => {}
        }
        if own {
            n.val = Slot::Ws(s.vals);
            s.vals = tri!(cadd(s.vals, out.len()));
        }
        // R-derivatives: a Flatten view is a view here too; other active
        // nodes own one.
        if n.active {
            let flat_view = matches!(l.op, Op::Flatten) && !own;
            if flat_view {
                if let Ref::Node(j) = input_ref {
                    n.rval = nodes[j].rval;
                }
            } else {
                n.rval = s.rvals;
                s.rvals = tri!(cadd(s.rvals, out.len()));
            }
        }
        if let Op::BatchNorm = l.op {
            n.state_off = s.state;
            s.state = tri!(cadd(s.state, tri!(cmul(2, in_dims.c))));
            n.ext = s.ext;
            s.ext = tri!(cadd(s.ext, tri!(cmul(BN_EXT, in_dims.c))));
            n.ext_hvp = s.ext_hvp;
            s.ext_hvp = tri!(cadd(s.ext_hvp, tri!(cmul(BN_EXT_HVP, in_dims.c))));
            s.batch_norms += 1;
        }
        nodes[i] = n;
        i += 1;
    }
    // the workspace of one sample (with the R-pass) must be addressable,
    // so that the host can size larger batches with checked arithmetic
    if checked_workspace_len(&s, 1, true).is_none() {
        return Err(TOO_LARGE);
    }
    Ok(s)
}

/// A planned model: its nodes (held in `N`: an array, a slice or a `Vec`),
/// the input shape, the loss and the totals.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Model<N> {
    nodes: N,
    /// Shape of one input sample.
    pub input: Dims,
    /// The loss on the last node's output (the logits).
    pub loss: Loss,
    /// Totals.
    pub sizes: Sizes,
}

impl<const K: usize> Model<[Node; K]> {
    /// Plans a fixed list of `K` layers, for `const` items:
    ///
    /// ```
    /// use fdgr_kernel::model::{Dims, Layer, Model};
    /// use fdgr_kernel::{Act, Loss};
    /// const NET: Model<[fdgr_kernel::model::Node; 7]> = match Model::from_layers(
    ///     &[
    ///         Layer::conv(8, 3).pad(1), Layer::act(Act::Relu), Layer::max_pool(2),
    ///         Layer::conv(16, 3).pad(1), Layer::act(Act::Relu), Layer::max_pool(2),
    ///         Layer::flatten(),
    ///     ],
    ///     Dims::new(1, 8, 8),
    ///     Loss::SoftmaxCe,
    /// ) {
    ///     Ok(m) => m,
    ///     Err(_) => panic!("bad model"),
    /// };
    /// const P: usize = NET.sizes.params;
    /// assert_eq!(P, 8 * 9 + 8 + 16 * 8 * 9 + 16);
    /// assert_eq!(NET.out_len(), 64);
    /// ```
    pub const fn from_layers(layers: &[Layer; K], input: Dims, loss: Loss) -> Result<Self, Error> {
        let mut nodes = [Node::EMPTY; K];
        match plan(layers, input, &mut nodes) {
            Ok(sizes) => Ok(Model {
                nodes,
                input,
                loss,
                sizes,
            }),
            Err(e) => Err(e),
        }
    }
}

impl<N> Model<N> {
    /// A model from nodes planned by [`plan`] (with the totals it returned).
    pub const fn from_plan(nodes: N, input: Dims, loss: Loss, sizes: Sizes) -> Self {
        Model {
            nodes,
            input,
            loss,
            sizes,
        }
    }
}

impl<N: AsRef<[Node]>> Model<N> {
    /// The same model with its nodes borrowed (cheap to copy).
    pub fn borrowed(&self) -> Model<&[Node]> {
        Model {
            nodes: self.nodes.as_ref(),
            input: self.input,
            loss: self.loss,
            sizes: self.sizes,
        }
    }

    /// The nodes.
    pub fn nodes(&self) -> &[Node] {
        self.nodes.as_ref()
    }

    /// The node storage.
    pub fn into_nodes(self) -> N {
        self.nodes
    }

    /// The node storage, borrowed.
    pub fn nodes_storage(&self) -> &N {
        &self.nodes
    }

    /// The output node.
    pub fn last(&self) -> &Node {
        let n = self.nodes.as_ref();
        &n[n.len() - 1]
    }

    /// Values per output sample (the number of classes or targets).
    pub fn outputs(&self) -> usize {
        self.last().out_dims.len()
    }

    /// Parameters P.
    pub fn param_count(&self) -> usize {
        self.sizes.params
    }

    /// The trained parameters' blocks: for each layer with trained
    /// parameters, (offset in θ, offset in the whole parameter vector,
    /// length). In a model without frozen parameters both offsets agree.
    pub fn trained_blocks(&self) -> impl Iterator<Item = (usize, usize, usize)> + '_ {
        self.nodes().iter().filter(|n| n.param_len > 0).map(|n| {
            (
                n.param_off,
                n.frozen_off + (n.all_len - n.param_len),
                n.param_len,
            )
        })
    }

    /// θ (the trained parameters) from the whole parameter vector.
    pub fn gather<F: Copy>(&self, whole: &[F], theta: &mut [F]) -> Result<(), Error> {
        crate::error::check_len("whole parameters", self.sizes.all_params, whole.len())?;
        crate::error::check_len("trained parameters", self.sizes.params, theta.len())?;
        for (t, w, n) in self.trained_blocks() {
            theta[t..t + n].copy_from_slice(&whole[w..w + n]);
        }
        Ok(())
    }

    /// Writes θ (the trained parameters) into the whole parameter vector,
    /// whose other entries (the frozen parameters) are left as they are.
    pub fn scatter<F: Copy>(&self, theta: &[F], whole: &mut [F]) -> Result<(), Error> {
        crate::error::check_len("whole parameters", self.sizes.all_params, whole.len())?;
        crate::error::check_len("trained parameters", self.sizes.params, theta.len())?;
        for (t, w, n) in self.trained_blocks() {
            whole[w..w + n].copy_from_slice(&theta[t..t + n]);
        }
        Ok(())
    }

    /// Layouts and totals do not depend on the storage.
    pub fn layout(&self, b: usize, hvp: bool) -> Layout {
        layout(&self.sizes, b, hvp)
    }

    /// Workspace length for a batch of `b`: the pass area of
    /// [`Model::layout`] followed by the non-θ state; `usize::MAX` where
    /// that overflows (see [`checked_workspace_len`]).
    pub fn workspace_len(&self, b: usize, hvp: bool) -> usize {
        checked_workspace_len(&self.sizes, b, hvp).unwrap_or(usize::MAX)
    }
}

impl<const K: usize> Model<[Node; K]> {
    /// Values per output sample, as a `const fn` (see [`Model::outputs`]).
    pub const fn out_len(&self) -> usize {
        self.nodes[K - 1].out_dims.len()
    }

    /// Workspace length, as a `const fn` (see [`Model::workspace_len`]).
    pub const fn ws_len(&self, b: usize, hvp: bool) -> usize {
        workspace_len(&self.sizes, b, hvp)
    }
}

impl<N> Model<N> {
    /// Workspace length for a batch of `b`, as a `const fn` for any node
    /// storage (see [`Model::workspace_len`]).
    pub const fn ws_len_const(&self, b: usize, hvp: bool) -> usize {
        workspace_len(&self.sizes, b, hvp)
    }

    /// The node storage, as a `const fn`.
    pub const fn storage(&self) -> &N {
        &self.nodes
    }
}

/// Where each part of a workspace starts for a batch of `b` (see [`Layout`]).
pub const fn layout(s: &Sizes, b: usize, hvp: bool) -> Layout {
    let vals = 0;
    let dlt = b * s.vals;
    let ext = 2 * b * s.vals;
    let ext_hvp = ext + s.ext;
    let (rv, rd, end) = if hvp {
        let rv = ext_hvp + s.ext_hvp;
        let rd = rv + b * s.rvals;
        (rv, rd, rd + b * s.vals)
    } else {
        (ext_hvp, ext_hvp, ext_hvp)
    };
    Layout {
        b,
        vals,
        dlt,
        ext,
        ext_hvp,
        rv,
        rd,
        end,
    }
}

/// Workspace length for a batch of `b`, state included.
pub const fn workspace_len(s: &Sizes, b: usize, hvp: bool) -> usize {
    layout(s, b, hvp).end + s.state
}

/// [`workspace_len`] with checked arithmetic: `None` where the length
/// would exceed [`MAX_SCALARS`] (a batch too large for the address
/// space). The host sizes every workspace through this before it
/// allocates.
pub const fn checked_workspace_len(s: &Sizes, b: usize, hvp: bool) -> Option<usize> {
    // values and deltas: 2·b·vals; then ext; with the R-pass ext_hvp,
    // b·rvals and b·vals more; then the state (see `layout`)
    let bv = match cmul(b, s.vals) {
        Ok(v) => v,
        Err(_) => return None,
    };
    let mut n = match cmul(2, bv) {
        Ok(v) => v,
        Err(_) => return None,
    };
    n = match cadd(n, s.ext) {
        Ok(v) => v,
        Err(_) => return None,
    };
    if hvp {
        n = match cadd(n, s.ext_hvp) {
            Ok(v) => v,
            Err(_) => return None,
        };
        let br = match cmul(b, s.rvals) {
            Ok(v) => v,
            Err(_) => return None,
        };
        n = match cadd(n, br) {
            Ok(v) => v,
            Err(_) => return None,
        };
        n = match cadd(n, bv) {
            Ok(v) => v,
            Err(_) => return None,
        };
    }
    match cadd(n, s.state) {
        Ok(v) => Some(v),
        Err(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plans(layers: &[Layer], input: Dims) -> Result<Sizes, Error> {
        let mut nodes = [Node::EMPTY; 8];
        plan(layers, input, &mut nodes[..layers.len()])
    }

    /// Shapes, parameter counts and buffers that overflow are errors,
    /// never wrapped sizes (huge channels, padding, widths, inputs).
    #[cfg(feature = "conv")]
    #[test]
    fn overflowing_sizes_are_rejected() {
        let img = Dims::new(1, 8, 8);
        let huge: [(&[Layer], Dims); 7] = [
            // 2^61 output channels: the weight count overflows
            (
                &[Layer::conv(1 << 61, 3), Layer::flatten(), Layer::linear(10)],
                img,
            ),
            // padding 2^62: the padded size fits, the output does not
            (
                &[
                    Layer::conv(8, 3).pad(1 << 62),
                    Layer::flatten(),
                    Layer::linear(10),
                ],
                img,
            ),
            // padding 2^63 − 1: 2·p overflows
            (
                &[
                    Layer::conv(8, 3).pad(usize::MAX / 2),
                    Layer::flatten(),
                    Layer::linear(10),
                ],
                img,
            ),
            (
                &[
                    Layer::max_pool(usize::MAX).pad(usize::MAX / 2 + 1),
                    Layer::flatten(),
                    Layer::linear(10),
                ],
                img,
            ),
            // a hidden width of 2^62
            (&[Layer::linear(1 << 62), Layer::linear(10)], Dims::flat(64)),
            // an input of 2^64 − 1 pixels per channel
            (
                &[Layer::flatten(), Layer::linear(10)],
                Dims::new(1, usize::MAX, usize::MAX),
            ),
            (&[Layer::linear(10)], Dims::flat(usize::MAX)),
        ];
        for (layers, input) in huge {
            let r = plans(layers, input);
            assert!(r.is_err(), "{layers:?} on {input:?} planned: {r:?}");
        }
        // large but addressable: planned, and its workspace is checked
        let s = plans(&[Layer::linear(1 << 30), Layer::linear(10)], Dims::flat(64))
            .expect("a 2^30-wide layer is addressable");
        assert_eq!(
            checked_workspace_len(&s, 1, true),
            Some(workspace_len(&s, 1, true))
        );
        assert_eq!(checked_workspace_len(&s, usize::MAX / 4, false), None);
    }

    /// The checked workspace length equals the plain one wherever both exist.
    #[test]
    fn checked_workspace_len_matches() {
        let layers = [
            Layer::conv(4, 3).pad(1),
            Layer::batch_norm(),
            Layer::act(Act::Relu),
            Layer::flatten(),
            Layer::linear(3),
        ];
        let s = plans(&layers, Dims::new(2, 5, 5)).expect("plans");
        for b in [1, 7, 128] {
            for hvp in [false, true] {
                assert_eq!(
                    checked_workspace_len(&s, b, hvp),
                    Some(workspace_len(&s, b, hvp))
                );
            }
        }
    }

    #[test]
    fn mlp_plan_fuses_and_aliases() {
        let layers = [Layer::linear(8), Layer::act(Act::Tanh), Layer::linear(3)];
        let m = Model::from_layers(&layers, Dims::flat(4), Loss::SoftmaxCe).unwrap();
        let n = m.nodes();
        assert_eq!(m.sizes.params, 4 * 8 + 8 + 8 * 3 + 3);
        assert_eq!(n[0].fuse, Some(Act::Tanh));
        assert!(n[1].inplace);
        assert_eq!(n[1].val, n[0].val);
        assert_eq!(m.sizes.vals, 8 + 3);
        assert_eq!(m.sizes.rvals, 8 + 8 + 3);
        assert_eq!(n[2].param_off, 40);
        assert!(!n[0].acc_in && !n[2].acc_in);
    }

    #[test]
    fn residual_block_plan() {
        // x -> conv -> bn -> relu -> conv -> bn -> (+ x) -> relu
        let layers = [
            Layer::conv(4, 3).pad(1),             // 0
            Layer::batch_norm(),                  // 1
            Layer::act(Act::Relu),                // 2 (in place on 1)
            Layer::conv(4, 3).pad(1).no_bias(),   // 3
            Layer::batch_norm(),                  // 4
            Layer::conv(4, 1).from(Src::Node(2)), // 5: shortcut from 2
            Layer::add(4),                        // 6 = 5 + 4
            Layer::act(Act::Relu),                // 7 (in place on 6)
            Layer::global_avg_pool(),             // 8
            Layer::linear(10),                    // 9
        ];
        let m = Model::from_layers(&layers, Dims::new(3, 6, 6), Loss::SoftmaxCe).unwrap();
        let n = m.nodes();
        assert_eq!(n[1].fuse, Some(Act::Relu));
        assert!(n[2].inplace);
        // node 2 has two consumers (3 and 5); 5 runs backward first and
        // writes, 3 accumulates.
        assert!(n[3].acc_in);
        assert!(!n[5].acc_in);
        assert!(n[7].inplace && n[6].fuse.is_none());
        assert_eq!(m.sizes.state, 2 * 4 * 2);
        assert_eq!(m.sizes.batch_norms, 2);
        assert_eq!(n[9].in_dims, Dims::flat(4));
        assert_eq!(m.outputs(), 10);
    }

    #[test]
    fn bad_models() {
        let e = Model::from_layers(&[Layer::linear(3)], Dims::new(1, 4, 4), Loss::Mse);
        assert!(matches!(e, Err(Error::BadModel(_))));
        let e = Model::from_layers(&[Layer::conv(3, 5)], Dims::new(1, 4, 4), Loss::Mse);
        assert!(matches!(e, Err(Error::BadModel(_))));
        let e = Model::from_layers(
            &[Layer::conv(3, 3).groups(2)],
            Dims::new(3, 4, 4),
            Loss::Mse,
        );
        assert!(matches!(e, Err(Error::BadModel(_))));
        let e = Model::from_layers(
            &[Layer::conv(3, 3), Layer::add(0).from(Src::Input)],
            Dims::new(1, 4, 4),
            Loss::Mse,
        );
        assert!(matches!(e, Err(Error::BadModel(_))));
        let e = Model::from_layers(&[Layer::add(0)], Dims::flat(3), Loss::Mse);
        assert!(matches!(e, Err(Error::BadModel(_))));
        let e = Model::from_layers(&[Layer::max_pool(3).pad(2)], Dims::new(1, 4, 4), Loss::Mse);
        assert!(matches!(e, Err(Error::BadModel(_))));
    }
}
