//! On-device fine-tuning: samples arrive one at a time into a ring buffer
//! of recent samples, and each arrival triggers one training step on the
//! most recent ones. The firmware and the host's cross-check both run this
//! code, so their results can be compared bit for bit.
//!
//! Two modes:
//! * full: every parameter is trained (θ, d, point in RAM: 3P scalars);
//! * last layer only: the frozen layers compute features, and only
//!   W_L, b_L (the contiguous tail of θ) are trained, as on-device systems
//!   such as MIT's Tiny Training Engine do to fit small SRAM. The frozen
//!   weights are read from an immutable slice, so they can stay in flash:
//!   RAM is 3·P_L scalars plus the workspace.

use crate::error::Error;
use crate::loss::Loss;
use crate::loss::Targets;
use crate::method::{step, Buffers, Method};
use crate::mlp::{self, Mlp};
use crate::model::{plan, Dims, Layer, Model, Node, Op, Ref, Slot};
use crate::net::Net;
use crate::objective::Serial;
#[allow(unused_imports)]
use crate::optim::Optimizer;
use crate::optim::{Optim, SgdState};
use crate::real::Real;
use crate::ring::{Sample, SampleRing};
use crate::shape::Shape;

/// Which parameters are trained.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Mode {
    /// All layers.
    Full,
    /// The last dense layer only.
    LastLayer,
}

/// The shape trained in `mode`: the model itself, or its last layer alone
/// (inputs n_{L−1}, outputs n_L, same loss).
pub const fn trained_shape(shape: &Shape, mode: Mode) -> Shape {
    match mode {
        Mode::Full => *shape,
        Mode::LastLayer => {
            let l = shape.layers();
            match Shape::try_new(&[shape.dim(l - 1), shape.dim(l)], shape.act, shape.loss) {
                Ok(s) => s,
                Err(_) => *shape,
            }
        }
    }
}

/// Fine-tuning state: recent samples, method, optimizer and its state.
pub struct FineTuner<F, P, const N: usize, const D: usize> {
    /// The most recent samples.
    pub ring: SampleRing<N, D>,
    /// Training method.
    pub method: Method<F>,
    /// Optimizer ([`crate::Sgd`], [`crate::Adam`] or [`Optimizer`]; a
    /// concrete type links only its own update code).
    pub opt: P,
    /// Optimizer state.
    pub state: SgdState,
    /// Learning rate.
    pub lr: F,
    /// Samples per step (the most recent ones, at most N).
    pub batch: usize,
    /// Input scale: x = raw · scale.
    pub scale: F,
    /// Which parameters are trained.
    pub mode: Mode,
}

/// Memory the caller provides for one fine-tuning step.
pub struct Memory<'a, F> {
    /// The trained parameters: all of θ in `Full` mode; in `LastLayer`
    /// mode only the last layer (W_L then b_L, P_L scalars).
    pub theta: &'a mut [F],
    /// `LastLayer` mode: the whole model θ, read-only (its first layers
    /// compute the features; its last-layer part is not used). May live in
    /// flash. Ignored in `Full` mode.
    pub frozen: Option<&'a [F]>,
    /// Direction, sized for the trained shape.
    pub dir: &'a mut [F],
    /// Perturbed point (methods that need one), sized for the trained shape.
    pub point: Option<&'a mut [F]>,
    /// Second perturbed point (`cgr`).
    pub point2: Option<&'a mut [F]>,
    /// The optimizer's state vectors (SGD with μ > 0: the momentum in
    /// `state[0]`; Adam: its two moments), sized for the trained shape.
    pub state: [Option<&'a mut [F]>; 2],
    /// Workspace: `shape.workspace_len(batch, hvp)` scalars.
    pub ws: &'a mut [F],
    /// Batch inputs: batch·n₀ scalars.
    pub x: &'a mut [F],
    /// Batch features for `LastLayer`: batch·n_{L−1} scalars (may be empty
    /// in `Full` mode).
    pub feats: &'a mut [F],
    /// Batch labels: batch entries.
    pub y: &'a mut [u32],
}

/// Most layers a fine-tuned model may have (nodes held inline in
/// [`Nodes`]).
pub const MAX_NODES: usize = 16;

/// The nodes of a model planned for fine-tuning, held inline (no heap).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Nodes {
    nodes: [Node; MAX_NODES],
    len: usize,
}

impl AsRef<[Node]> for Nodes {
    fn as_ref(&self) -> &[Node] {
        &self.nodes[..self.len]
    }
}

/// The planned models a fine-tuning step runs: the whole model (its
/// frozen forward pass in last-layer mode) and the trained one (the model
/// itself, or its last layer). Plan them once, e.g. in a `const`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Models {
    /// The whole model.
    pub full: Model<Nodes>,
    /// The trained model in last-layer mode (in full mode it is `full`).
    pub last: Option<Model<Nodes>>,
    /// Which parameters are trained.
    pub mode: Mode,
    /// Inputs of the last layer (the features last-layer mode trains on).
    pub features: usize,
    /// Outputs of the model (classes).
    pub outputs: usize,
}

impl Models {
    /// The model that is trained.
    pub fn trained(&self) -> &Model<Nodes> {
        match &self.last {
            Some(m) => m,
            None => &self.full,
        }
    }

    /// Parameters of the whole model P.
    pub const fn params(&self) -> usize {
        self.full.sizes.params
    }

    /// Trained parameters: P, or the last layer's P_L.
    pub const fn trained_params(&self) -> usize {
        match &self.last {
            Some(m) => m.sizes.params,
            None => self.full.sizes.params,
        }
    }

    /// Whether the model has convolution or pooling layers (a firmware
    /// then needs the kernel's `conv` feature).
    pub fn uses_conv(&self) -> bool {
        self.full.nodes().iter().any(|n| {
            matches!(
                n.op,
                Op::Conv2d { .. }
                    | Op::BatchNorm
                    | Op::MaxPool { .. }
                    | Op::AvgPool { .. }
                    | Op::GlobalAvgPool
            )
        })
    }

    /// Values per input sample.
    pub const fn inputs(&self) -> usize {
        self.full.input.len()
    }

    /// Workspace scalars a step needs for a batch of `b` (with the
    /// Hessian-vector product's buffers when `hvp`): the trained model's,
    /// and in last-layer mode at least the whole model's forward pass.
    pub const fn workspace_len(&self, b: usize, hvp: bool) -> usize {
        match &self.last {
            Some(m) => {
                let (a, t) = (self.full.ws_len_const(b, false), m.ws_len_const(b, hvp));
                if a > t {
                    a
                } else {
                    t
                }
            }
            None => self.full.ws_len_const(b, hvp),
        }
    }
}

const fn plan_nodes(layers: &[Layer], input: Dims, loss: Loss) -> Result<Model<Nodes>, Error> {
    if layers.len() > MAX_NODES {
        return Err(Error::BadModel("too many layers to fine-tune (at most 16)"));
    }
    let mut nodes = [Node::EMPTY; MAX_NODES];
    let (used, _) = nodes.split_at_mut(layers.len());
    match plan(layers, input, used) {
        Ok(sizes) => Ok(Model::from_plan(
            Nodes {
                nodes,
                len: layers.len(),
            },
            input,
            loss,
            sizes,
        )),
        Err(e) => Err(e),
    }
}

/// Plans the models of fine-tuning the layer list `layers` (on inputs of
/// shape `input`) in `mode` (a `const fn`). Last-layer mode needs a last
/// layer that is `Linear` on the previous layer's output; batch norm is
/// not fine-tuned on a device (its running statistics would live in the
/// workspace), so a model with batch norm is refused.
pub const fn models_of(
    layers: &[Layer],
    input: Dims,
    loss: Loss,
    mode: Mode,
) -> Result<Models, Error> {
    let mut i = 0;
    while i < layers.len() {
        if matches!(layers[i].op, Op::BatchNorm) {
            return Err(Error::BadModel(
                "batch norm is not fine-tuned on a device (fold it into the convolution)",
            ));
        }
        i += 1;
    }
    let full = match plan_nodes(layers, input, loss) {
        Ok(m) => m,
        Err(e) => return Err(e),
    };
    let n = full.storage().len;
    let lastn = full.storage().nodes[n - 1];
    let features = lastn.in_dims.len();
    let outputs = lastn.out_dims.len();
    let last = match mode {
        Mode::Full => None,
        Mode::LastLayer => {
            let bias = match lastn.op {
                Op::Linear { bias, .. } => bias,
                _ => return Err(Error::BadModel("last-layer mode needs a linear last layer")),
            };
            if n < 2 || !matches!(layers[n - 1].src, crate::model::Src::Prev) {
                return Err(Error::BadModel(
                    "last-layer mode needs a linear last layer after at least one other",
                ));
            }
            let head = [Layer::new(Op::Linear { out: outputs, bias })];
            match plan_nodes(&head, Dims::flat(features), loss) {
                Ok(m) => Some(m),
                Err(e) => return Err(e),
            }
        }
    };
    Ok(Models {
        full,
        last,
        mode,
        features,
        outputs,
    })
}

/// Plans the models of fine-tuning the MLP `shape` in `mode` (a `const fn`).
pub const fn models(shape: &Shape, mode: Mode) -> Result<Models, Error> {
    let (ls, k) = mlp::layers(shape);
    let (layers, _) = ls.split_at(k);
    models_of(layers, Dims::flat(shape.inputs()), shape.loss, mode)
}

impl<F: Real, P: Optim<F>, const N: usize, const D: usize> FineTuner<F, P, N, D> {
    /// Stores `sample` and takes one step on the most recent samples;
    /// returns the loss before the step. Plans the models on every call:
    /// see [`FineTuner::push_and_step_planned`].
    pub fn push_and_step(
        &mut self,
        shape: &Shape,
        sample: Sample<D>,
        mem: Memory<'_, F>,
    ) -> Result<F, Error> {
        let m = models(shape, self.mode)?;
        self.push_and_step_planned(&m, sample, mem)
    }

    /// [`FineTuner::push_and_step`] with models planned beforehand by
    /// [`models`] (for this tuner's mode): the same arithmetic, without
    /// planning on every step.
    pub fn push_and_step_planned(
        &mut self,
        models: &Models,
        sample: Sample<D>,
        mem: Memory<'_, F>,
    ) -> Result<F, Error> {
        if D != models.inputs() {
            return Err(Error::ShapeMismatch {
                what: "sample width",
                expected: models.inputs(),
                got: D,
            });
        }
        if models.mode != self.mode {
            return Err(Error::InvalidConfig("models planned for another mode"));
        }
        self.ring.push(sample);
        let Memory {
            theta,
            frozen,
            dir,
            point,
            point2,
            state,
            ws,
            x,
            feats,
            y,
        } = mem;
        let b = self.ring.fill_batch(self.batch, self.scale, x, y);
        let (x, y) = (&x[..b * D], &y[..b]);
        // What is trained, on which inputs: the model on x, or its last
        // layer on the features the frozen layers compute from x.
        let inputs: &[F] = match self.mode {
            Mode::Full => x,
            Mode::LastLayer => frozen_features(models, frozen, x, y, ws, feats)?,
        };
        let mut net = Net::resume(models.trained().borrowed(), Serial, ws)?;
        net.set_batch(inputs, Targets::Classes(y))?;
        let bufs = Buffers {
            theta,
            dir,
            state,
            point,
            point2,
            correction: None,
        };
        step(
            &mut net,
            &self.method,
            &self.opt,
            &mut self.state,
            self.lr,
            bufs,
        )
    }
}

/// Last-layer mode: the features the frozen layers (at `frozen`, eval mode)
/// compute from the batch `x` (labels `y`), copied into `feats`: the
/// inputs of the trained last layer. The last layer's own output is
/// computed too, and ignored.
fn frozen_features<'f, F: Real>(
    models: &Models,
    frozen: Option<&[F]>,
    x: &[F],
    y: &[u32],
    ws: &mut [F],
    feats: &'f mut [F],
) -> Result<&'f [F], Error> {
    let (b, nf) = (y.len(), models.features);
    if feats.len() < b * nf {
        return Err(Error::MissingBuffer("features"));
    }
    let frozen = frozen.ok_or(Error::MissingBuffer("frozen"))?;
    crate::error::check_len("frozen", models.params(), frozen.len())?;
    let feats = &mut feats[..b * nf];
    let full = models.full.borrowed();
    // Where the last layer's input lives in the workspace.
    let at = match full.last().input {
        Ref::Node(j) => match full.nodes()[j].val {
            Slot::Ws(o) => full.layout(b, false).vals + b * o,
            Slot::Input => return Err(Error::BadShape),
        },
        Ref::Input => return Err(Error::BadShape),
    };
    {
        let mut net = Net::resume(full, Serial, &mut *ws)?;
        net.set_batch(x, Targets::Classes(y))?;
        net.forward_outputs(frozen)?;
    }
    feats.copy_from_slice(&ws[at..at + b * nf]);
    Ok(feats)
}

/// The outputs (`models.outputs` scores) of the model on one sample's
/// scaled inputs `x`, into `out`: the frozen layers at `frozen` then, in
/// last-layer mode, the trained last layer at `theta` (in full mode θ is
/// the whole model); batch norm, if any, on its running statistics. The
/// same forward pass a fine-tuning step starts with, so a device predicts
/// what it is about to learn from (prequential accuracy). `ws` and `feats`
/// as for [`FineTuner::push_and_step_planned`] with a batch of one.
pub fn outputs_planned<F: Real>(
    models: &Models,
    frozen: Option<&[F]>,
    theta: &[F],
    x: &[F],
    ws: &mut [F],
    feats: &mut [F],
    out: &mut [F],
) -> Result<(), Error> {
    let k = models.outputs;
    crate::error::check_len("outputs", k, out.len())?;
    let label = [0u32];
    let inputs: &[F] = match models.mode {
        Mode::Full => x,
        Mode::LastLayer => frozen_features(models, frozen, x, &label, ws, feats)?,
    };
    let mut net = Net::resume(models.trained().borrowed(), Serial, ws)?;
    net.set_batch(inputs, Targets::Classes(&label))?;
    out.copy_from_slice(net.forward_outputs(theta)?);
    Ok(())
}

/// Classification accuracy of θ on `n` samples (x: n·n₀ scaled inputs),
/// evaluated one sample at a time with a one-sample workspace.
pub fn count_correct<F: Real>(
    shape: &Shape,
    theta: &[F],
    x: &[F],
    y: &[u32],
    ws: &mut [F],
) -> Result<usize, Error> {
    let n0 = shape.inputs();
    let mut ok = 0;
    for (xi, yi) in x.chunks_exact(n0).zip(y) {
        let mut net = Mlp::try_new(*shape, Serial, &mut *ws)?;
        net.set_batch(xi, Targets::Classes(core::slice::from_ref(yi)))?;
        let out = net.forward_outputs(theta)?;
        ok += mlp::correct(out, shape.outputs(), core::slice::from_ref(yi));
    }
    Ok(ok)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::act::Act;
    use crate::loss::Loss;
    use crate::rng::{init_mlp, Rng};

    const S: Shape = Shape::new(&[4, 6, 3], Act::Tanh, Loss::SoftmaxCe);
    const P: usize = S.param_count();
    const H: Shape = trained_shape(&S, Mode::LastLayer);
    const PL: usize = H.param_count();

    fn tuner(mode: Mode) -> FineTuner<f32, crate::optim::Sgd<f32>, 4, 4> {
        FineTuner {
            ring: SampleRing::new(),
            method: Method::Fgr {
                gamma: 0.05,
                eps: 0.1,
            },
            opt: crate::optim::Sgd::plain(),
            state: SgdState::default(),
            lr: 0.1,
            batch: 2,
            scale: 0.25,
            mode,
        }
    }

    #[test]
    fn last_layer_trains_only_the_head_from_frozen_features() {
        let mut frozen = [0.0f32; P];
        init_mlp(&S, &mut frozen, &mut Rng::new(4));
        assert_eq!(PL, 6 * 3 + 3);
        let mut head: [f32; PL] = core::array::from_fn(|i| frozen[P - PL + i]);
        let (mut dir, mut pt) = ([0.0f32; PL], [0.0f32; PL]);
        let mut ws = [0.0f32; 64];
        let (mut x, mut feats, mut y) = ([0.0f32; 8], [0.0f32; 12], [0u32; 2]);
        let mut t = tuner(Mode::LastLayer);
        let mut losses = [0.0f32; 12];
        for (i, l) in losses.iter_mut().enumerate() {
            let s = Sample {
                x: [i as u8 % 5, 3, (i * 7 % 4) as u8, 1],
                label: (i % 3) as u8,
            };
            let mem = Memory {
                theta: &mut head,
                frozen: Some(&frozen),
                dir: &mut dir,
                point: Some(&mut pt),
                point2: None,
                state: [None, None],
                ws: &mut ws,
                x: &mut x,
                feats: &mut feats,
                y: &mut y,
            };
            *l = t.push_and_step(&S, s, mem).unwrap();
        }
        assert!(losses.iter().all(|l| l.is_finite()));
        assert!(
            head.iter().zip(&frozen[P - PL..]).any(|(a, b)| a != b),
            "the head moved"
        );
        // without the frozen model the step is refused
        let mem = Memory {
            theta: &mut head,
            frozen: None,
            dir: &mut dir,
            point: Some(&mut pt),
            point2: None,
            state: [None, None],
            ws: &mut ws,
            x: &mut x,
            feats: &mut feats,
            y: &mut y,
        };
        let s = Sample {
            x: [1, 2, 3, 4],
            label: 0,
        };
        assert_eq!(
            t.push_and_step(&S, s, mem),
            Err(Error::MissingBuffer("frozen"))
        );
    }
}
