//! A planned model: [`Model`], the totals of a plan ([`Sizes`]) and where
//! each buffer starts in a workspace ([`Layout`], [`workspace_len`]).

use super::*;

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

    /// Whether a pass in `mode` on a batch of `b` samples is defined:
    /// batch norm in training mode needs at least two values per channel.
    /// Every backend's objective checks a batch with this.
    pub fn check_batch(&self, b: usize, mode: Mode) -> Result<(), Error> {
        if mode == Mode::Train && self.sizes.batch_norms > 0 {
            for n in self.nodes() {
                if matches!(n.op, Op::BatchNorm) && b * n.in_dims.hw() < 2 {
                    return Err(Error::InvalidConfig(
                        "batch norm in training mode needs more than one value per channel \
                         (a batch of at least 2)",
                    ));
                }
            }
        }
        Ok(())
    }

    /// The copies that commit the running statistics computed by an
    /// unperturbed gradient pass on a batch of `b` samples
    /// ([`crate::Objective::commit`]): per batch-norm layer, (offset in
    /// the state, offset of its pending statistics in the pass area,
    /// length). Every backend's commit is these copies in its own memory.
    pub fn pending_copies(&self, b: usize) -> impl Iterator<Item = (usize, usize, usize)> + '_ {
        let ctx = ctx::Ctx {
            nodes: self.nodes(),
            lay: self.layout(b, false),
        };
        self.nodes()
            .iter()
            .filter(|n| matches!(n.op, Op::BatchNorm))
            .map(move |n| (n.state_off, ctx.ext(n, BN_PENDING).off, 2 * n.in_dims.c))
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
