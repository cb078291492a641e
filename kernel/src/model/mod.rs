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
//! [`pool`], [`add`], [`flatten`], [`act`](mod@crate::model::act)) as calls of
//! the primitives of [`crate::ops::Ops`], each an implementation of [`Maths`];
//! [`pass`] runs them in order.
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

pub mod ctx;
pub mod pass;
mod planned;

pub use planned::*;

use crate::error::Error;
use crate::loss::Loss;
use crate::serial::act::Act;

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

    /// The shape itself when its length is addressable (see
    /// [`Dims::checked_len`]).
    pub const fn checked(self) -> Result<Dims, Error> {
        match self.checked_len() {
            Some(_) => Ok(self),
            None => Err(TOO_LARGE),
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
    /// Its parameter tensors ([`Op::tensors`]) that it trains, each with
    /// the part of it in θ, as a range from [`Node::param_off`]: the trained
    /// parameters are the last [`Node::param_len`] of the layer's, so a
    /// layer that trains its bias alone yields its bias whole and its
    /// weight not at all.
    pub fn trained_tensors(&self) -> impl Iterator<Item = (Tensor, core::ops::Range<usize>)> {
        let frozen = self.all_len.saturating_sub(self.param_len);
        let len = self.param_len;
        let tensors = self.op.tensors(self.in_dims);
        let mut end = 0;
        (0..tensors.as_slice().len()).filter_map(move |i| {
            let t = tensors.as_slice()[i];
            let start = end;
            end += t.numel();
            let lo = start.saturating_sub(frozen).min(len);
            let hi = end.saturating_sub(frozen).min(len);
            (lo < hi).then_some((t, lo..hi))
        })
    }

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

/// How a parameter tensor starts: PyTorch's default initialisation of
/// its module.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Init {
    /// Uniform in ±1/√fan_in (`nn.Linear`, `nn.Conv2d`: what
    /// `kaiming_uniform_(a=√5)` gives for a weight, and their biases).
    Uniform {
        /// The fan-in.
        fan_in: usize,
    },
    /// All ones (batch norm's γ).
    Ones,
    /// All zeros (batch norm's β).
    Zeros,
}

/// One parameter tensor of a layer, as PyTorch names and shapes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tensor {
    /// Its name in the layer's module (`weight`, `bias`).
    pub name: &'static str,
    /// Its shape: the first `rank` entries.
    dims: [usize; 4],
    /// Its rank.
    rank: usize,
    /// How it starts.
    pub init: Init,
}

impl Tensor {
    /// A tensor of shape `dims[..rank]`.
    pub const fn new(name: &'static str, dims: [usize; 4], rank: usize, init: Init) -> Self {
        Tensor {
            name,
            dims,
            rank,
            init,
        }
    }

    /// A vector of `n` values.
    pub const fn vector(name: &'static str, n: usize, init: Init) -> Self {
        Tensor::new(name, [n, 1, 1, 1], 1, init)
    }

    /// Its shape.
    pub fn shape(&self) -> &[usize] {
        &self.dims[..self.rank.min(4)]
    }

    /// Its number of values.
    pub fn numel(&self) -> usize {
        self.shape().iter().product()
    }
}

/// A layer's parameter tensors in θ order (the weight, then the bias),
/// at most two.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tensors {
    list: [Tensor; 2],
    len: usize,
}

impl Tensors {
    /// No parameters.
    pub const NONE: Tensors = Tensors {
        list: [Tensor::vector("", 0, Init::Zeros); 2],
        len: 0,
    };

    /// `first`, then `second` where given.
    pub const fn of(first: Tensor, second: Option<Tensor>) -> Self {
        match second {
            Some(s) => Tensors {
                list: [first, s],
                len: 2,
            },
            None => Tensors {
                list: [first, first],
                len: 1,
            },
        }
    }

    /// The tensors, in θ order.
    pub fn as_slice(&self) -> &[Tensor] {
        &self.list[..self.len.min(2)]
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

// The layer kinds' modules (their facts and maths), after the `tri!`
// macro they use.
pub mod act;
pub mod add;
pub mod conv;
pub mod flatten;
pub mod linear;
pub mod norm;
pub mod pool;

/// The layer kinds ([`Op`]), after the `tri!` macro they use.
mod op;
pub use op::*;

/// The planner ([`plan`]), after the `tri!` macro it uses.
mod planner;
pub use planner::plan;

#[cfg(test)]
mod tests;
