//! The MLP as a special case of the layer-list model: a [`Shape`]
//! (`784-512-512-10`, one hidden activation) is the layer list
//! `Linear, σ, Linear, σ, …, Linear`, planned into a small inline node
//! array ([`MlpNodes`]), and [`Mlp`] is the [`Net`] objective on it.
//!
//! The activations run in place on the linear layers' outputs, so the
//! workspace is 2·B·N scalars for gradients (values and deltas, N =
//! n₁ + … + n_L), at most 5·B·N with Hessian-vector products
//! ([`Shape::workspace_len`] gives that bound), plus nothing else.

use crate::error::Error;
use crate::model::{plan, Dims, Layer, Model, Node};
use crate::net::{CpuNet, Net};
use crate::objective::Serial;
use crate::real::Real;
use crate::serial::act::Act;
use crate::shape::{Shape, MAX_LAYERS};

/// Accuracy helper, defined with the losses.
pub use crate::loss::correct;
pub use crate::net::Batch;

/// Most nodes an MLP plans into: L linear layers and L − 1 activations.
pub const MAX_NODES: usize = 2 * MAX_LAYERS - 1;

/// The nodes of an MLP, held inline (no heap), with its shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MlpNodes {
    nodes: [Node; MAX_NODES],
    len: usize,
    shape: Shape,
}

impl AsRef<[Node]> for MlpNodes {
    fn as_ref(&self) -> &[Node] {
        &self.nodes[..self.len]
    }
}

impl MlpNodes {
    /// The shape these nodes were planned from.
    pub fn shape(&self) -> &Shape {
        &self.shape
    }
}

/// The layer list of an MLP: `Linear(n₁), σ, …, Linear(n_L)` (no
/// activation on the outputs, none at all for the identity), and how many
/// of the entries are used.
pub const fn layers(shape: &Shape) -> ([Layer; MAX_NODES], usize) {
    let mut out = [Layer::flatten(); MAX_NODES];
    let mut k = 0;
    let mut l = 1;
    while l <= shape.layers() {
        out[k] = Layer::linear(shape.dim(l));
        k += 1;
        if l < shape.layers() && !matches!(shape.act, Act::Identity) {
            out[k] = Layer::act(shape.act);
            k += 1;
        }
        l += 1;
    }
    (out, k)
}

/// The planned model of an MLP shape (a `const fn`: a microcontroller
/// plans its model at compile time).
pub const fn model(shape: &Shape) -> Result<Model<MlpNodes>, Error> {
    let (ls, k) = layers(shape);
    let mut nodes = [Node::EMPTY; MAX_NODES];
    let (used, _) = nodes.split_at_mut(k);
    let (layers, _) = ls.split_at(k);
    match plan(layers, Dims::flat(shape.inputs()), used) {
        Ok(sizes) => Ok(Model::from_plan(
            MlpNodes {
                nodes,
                len: k,
                shape: *shape,
            },
            Dims::flat(shape.inputs()),
            shape.loss,
            sizes,
        )),
        Err(e) => Err(e),
    }
}

/// An MLP objective on the current mini-batch: [`Net`] on an MLP's nodes.
pub type Mlp<'b, F, E, S> = CpuNet<'b, F, E, MlpNodes, S>;

/// A fixed-size MLP objective: the serial executor and a workspace of `W`
/// scalars held inline (e.g. in a `static`). Pick
/// `W = SHAPE.workspace_len(B, hvp)` in a `const`.
pub type FixedMlp<'b, F, const W: usize> = Mlp<'b, F, Serial, [F; W]>;

impl<'b, F: Real, const W: usize> CpuNet<'b, F, Serial, MlpNodes, [F; W]> {
    /// A fixed-size objective for `shape`; fails unless `W` holds at least
    /// the gradient workspace of one sample.
    pub fn fixed(shape: Shape) -> Result<Self, Error> {
        Net::from_model(model(&shape)?, Serial, [F::ZERO; W])
    }
}

impl<'b, F: Real, E: crate::objective::Exec<F>, S: AsMut<[F]> + AsRef<[F]>>
    CpuNet<'b, F, E, MlpNodes, S>
{
    /// An MLP objective for `shape` executing with `exec`, with workspace
    /// `ws` (`shape.workspace_len(B, hvp)` scalars for batches of B).
    ///
    /// # Panics
    /// If `ws` is smaller than one sample's gradient workspace; use
    /// [`Mlp::try_new`] for sizes that come from input.
    pub fn new(shape: Shape, exec: E, ws: S) -> Self {
        match Self::try_new(shape, exec, ws) {
            Ok(n) => n,
            Err(e) => panic!("Mlp::new: {e}"),
        }
    }

    /// An MLP objective, or why not (a workspace too small for one sample).
    pub fn try_new(shape: Shape, exec: E, ws: S) -> Result<Self, Error> {
        Net::from_model(model(&shape)?, exec, ws)
    }

    /// The model shape.
    pub fn shape(&self) -> &Shape {
        self.model().nodes_storage().shape()
    }
}

/// (W_l, b_l) of layer `l` (1-based) in a parameter-sized vector.
#[inline]
pub fn layer<'a, F>(s: &Shape, theta: &'a [F], l: usize) -> (&'a [F], &'a [F]) {
    let o = s.weight_offset(l);
    let nw = s.dim(l) * s.dim(l - 1);
    let (w, rest) = theta[o..].split_at(nw);
    (w, &rest[..s.dim(l)])
}
