//! On-device fine-tuning: samples arrive one at a time into a ring buffer
//! of recent samples, and each arrival triggers one training step on the
//! most recent ones. The firmware and the host's cross-check both run this
//! code, so their results can be compared bit for bit.
//!
//! What is trained ([`Mode`]): every parameter, the last K layers, every
//! bias, or a list of layers (sparse updates, as on-device systems such
//! as MIT's Tiny Training Engine do to fit small SRAM). The model is split
//! at the first trained layer:
//! * the frozen prefix (the layers before it) runs forward only, in eval
//!   mode, on weights read from an immutable slice that may stay in flash:
//!   no gradient, direction, optimizer state or saved activation is kept
//!   for it; its output is the trained part's input (the *features*);
//! * the trained part (the layers from it on) is planned with the layers
//!   it does not train marked [`Train::Frozen`] (or [`Train::Bias`]): θ,
//!   the direction, the perturbed point and the optimizer state hold only
//!   the trained parameters, so F-GR and SAM perturb only those; frozen
//!   weights inside it are read from the same immutable slice.

use crate::error::Error;
use crate::loss::Loss;
use crate::loss::Targets;
use crate::method::{step, Buffers, Method};
use crate::mlp::{self, Mlp};
use crate::model::{plan, Dims, Layer, Model, Node, Op, Src, Train};
use crate::net::{CpuNet, Net};
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
    /// Every parameter.
    Full,
    /// The last K layers that have parameters (K ≥ 1; `Last(1)`: the last
    /// layer alone), and every layer after the first of them.
    Last(u8),
    /// Every bias (linear and convolution layers with one); the weights
    /// stay frozen.
    Bias,
    /// The layers whose bits are set (bit i: layer i of the layer list,
    /// which must have parameters); the others stay frozen.
    Layers(u32),
}

impl Mode {
    /// The last layer alone (`Last(1)`).
    pub const LAST_LAYER: Mode = Mode::Last(1);

    /// Parses `full`, `last` (= `last:1`), `last:K`, `bias` or
    /// `layers:I,J,…` (layer indices of the layer list, below 32).
    pub fn parse(s: &str) -> Option<Mode> {
        match s {
            "full" => return Some(Mode::Full),
            "last" | "last-layer" => return Some(Mode::LAST_LAYER),
            "bias" => return Some(Mode::Bias),
            _ => {}
        }
        if let Some(k) = s.strip_prefix("last:") {
            return match k.parse::<u8>() {
                Ok(k) if k > 0 => Some(Mode::Last(k)),
                _ => None,
            };
        }
        let list = s.strip_prefix("layers:")?;
        let mut bits = 0u32;
        for i in list.split(',') {
            match i.trim().parse::<u32>() {
                Ok(i) if i < 32 && bits & (1 << i) == 0 => bits |= 1 << i,
                _ => return None,
            }
        }
        (bits != 0).then_some(Mode::Layers(bits))
    }
}

impl core::fmt::Display for Mode {
    /// The form [`Mode::parse`] reads: `full`, `last:K`, `bias`,
    /// `layers:I,J`.
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            Mode::Full => f.write_str("full"),
            Mode::Last(k) => write!(f, "last:{k}"),
            Mode::Bias => f.write_str("bias"),
            Mode::Layers(bits) => {
                f.write_str("layers:")?;
                let mut first = true;
                for i in 0..32 {
                    if bits & (1 << i) != 0 {
                        if !first {
                            f.write_str(",")?;
                        }
                        write!(f, "{i}")?;
                        first = false;
                    }
                }
                Ok(())
            }
        }
    }
}

/// Fine-tuning state: the `N` most recent samples of `D` raw inputs, and
/// the [`Learner`] that steps on them.
pub struct FineTuner<F, P, const N: usize, const D: usize> {
    /// The most recent samples.
    pub ring: SampleRing<N, D>,
    /// Method, optimizer and its state, learning rate, batch, input scale,
    /// mode.
    pub learner: Learner<F, P>,
}

/// Everything a fine-tuning step uses but the samples: method, optimizer
/// and its state, learning rate, batch, input scale and mode. It does not
/// depend on the input size, so one host program replays a device's steps
/// for any model ([`Learner::step_planned`]).
#[derive(Clone, Copy, Debug)]
pub struct Learner<F, P> {
    /// Training method.
    pub method: Method<F>,
    /// Optimizer ([`crate::Sgd`], [`crate::Adam`] or [`Optimizer`]; a
    /// concrete type links only its own update code).
    pub opt: P,
    /// Optimizer state.
    pub state: SgdState,
    /// Learning rate.
    pub lr: F,
    /// Samples per step (the most recent ones, at most the ring's N).
    pub batch: usize,
    /// Input scale: x = raw / pixel_max ([`crate::ring::pixels_into`]).
    pub pixel_max: F,
    /// Which parameters are trained.
    pub mode: Mode,
}

/// Memory the caller provides for one fine-tuning step.
pub struct Memory<'a, F> {
    /// The trained parameters ([`Models::trained_params`] scalars: all of
    /// θ in `Full` mode; otherwise the trained ones in layer order, see
    /// [`Models::gather`]).
    pub theta: &'a mut [F],
    /// Every parameter of the model as it was loaded, read-only (the
    /// frozen ones are read from here; it may live in flash). Needed
    /// unless the mode is `Full`.
    pub frozen: Option<&'a [F]>,
    /// Direction, sized for the trained parameters.
    pub dir: &'a mut [F],
    /// Perturbed point (methods that need one), sized for the trained
    /// parameters.
    pub point: Option<&'a mut [F]>,
    /// Second perturbed point (`cgr`).
    pub point2: Option<&'a mut [F]>,
    /// The optimizer's state vectors (SGD with μ > 0: the momentum in
    /// `state[0]`; Adam: its two moments), sized for the trained
    /// parameters.
    pub state: [Option<&'a mut [F]>; 2],
    /// Workspace: [`Models::workspace_len`] scalars.
    pub ws: &'a mut [F],
    /// Batch inputs: batch·n₀ scalars.
    pub x: &'a mut [F],
    /// Batch features (the trained part's inputs, when a frozen prefix
    /// computes them): batch·[`Models::features`] scalars (may be empty
    /// when there is no frozen prefix).
    pub feats: &'a mut [F],
    /// Batch labels: batch entries.
    pub y: &'a mut [u32],
}

/// Most layers a fine-tuned model planned with the default capacity may
/// have (nodes held inline in [`Nodes`]; a firmware plans with exactly its
/// model's number of layers).
pub const MAX_NODES: usize = 64;

/// The nodes of a model planned for fine-tuning, held inline (no heap):
/// at most `N`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Nodes<const N: usize = MAX_NODES> {
    nodes: [Node; N],
    len: usize,
}

impl<const N: usize> AsRef<[Node]> for Nodes<N> {
    fn as_ref(&self) -> &[Node] {
        &self.nodes[..self.len]
    }
}

/// The planned models a fine-tuning step runs: the frozen prefix (if any)
/// and the trained part, each with at most `N` layers. Plan them once,
/// e.g. in a `const`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Models<const N: usize = MAX_NODES> {
    /// The frozen prefix (the layers before the first trained one), when
    /// there is one.
    pub prefix: Option<Model<Nodes<N>>>,
    /// The trained part: the layers from the first trained one on (the
    /// others among them frozen); the whole model in `Full` mode.
    pub tail: Model<Nodes<N>>,
    /// Which parameters are trained.
    pub mode: Mode,
    /// Index of the first layer of the trained part.
    pub split: usize,
    /// Inputs of the trained part (per sample).
    pub features: usize,
    /// Outputs of the model (classes).
    pub outputs: usize,
    /// Parameters of the whole model.
    params: usize,
    /// Values per input sample.
    inputs: usize,
    /// Convolution, batch-norm or pooling layers.
    conv: bool,
}

impl<const N: usize> Models<N> {
    /// The model that is trained.
    pub fn trained(&self) -> &Model<Nodes<N>> {
        &self.tail
    }

    /// Parameters of the whole model P.
    pub const fn params(&self) -> usize {
        self.params
    }

    /// Parameters of the frozen prefix (the first ones of the whole
    /// parameter vector).
    pub const fn prefix_params(&self) -> usize {
        match &self.prefix {
            Some(m) => m.sizes.all_params,
            None => 0,
        }
    }

    /// Trained parameters: the length of θ.
    pub const fn trained_params(&self) -> usize {
        self.tail.sizes.params
    }

    /// θ (the trained parameters) from the whole parameter vector `whole`
    /// (e.g. the loaded model).
    pub fn gather<F: Copy>(&self, whole: &[F], theta: &mut [F]) -> Result<(), Error> {
        crate::error::check_len("whole parameters", self.params(), whole.len())?;
        self.tail.gather(&whole[self.prefix_params()..], theta)
    }

    /// Writes θ (the trained parameters) into the whole parameter vector
    /// `whole` (which holds the frozen ones).
    pub fn scatter<F: Copy>(&self, theta: &[F], whole: &mut [F]) -> Result<(), Error> {
        crate::error::check_len("whole parameters", self.params(), whole.len())?;
        let skip = self.prefix_params();
        self.tail.scatter(theta, &mut whole[skip..])
    }

    /// Parameter `i` of the whole model, from θ where it is trained and
    /// from `frozen` (the whole vector as loaded) where not.
    pub fn whole_param<F: Copy>(&self, theta: &[F], frozen: &[F], i: usize) -> F {
        let skip = self.prefix_params();
        for (t, w, n) in self.tail.trained_blocks() {
            if i >= skip + w && i < skip + w + n {
                return theta[t + (i - skip - w)];
            }
        }
        frozen[i]
    }

    /// Whether the model has convolution, batch-norm or pooling layers (a
    /// firmware then needs the kernel's `conv` feature).
    pub const fn uses_conv(&self) -> bool {
        self.conv
    }

    /// Values per input sample.
    pub const fn inputs(&self) -> usize {
        self.inputs
    }

    /// Feature scalars a batch of `b` needs (0 without a frozen prefix).
    pub const fn features_len(&self, b: usize) -> usize {
        match &self.prefix {
            Some(_) => b * self.features,
            None => 0,
        }
    }

    /// Workspace scalars a step needs for a batch of `b` (with the
    /// Hessian-vector product's buffers when `hvp`): the trained part's,
    /// and at least the frozen prefix's forward pass.
    pub const fn workspace_len(&self, b: usize, hvp: bool) -> usize {
        let t = self.tail.ws_len_const(b, hvp);
        let a = match &self.prefix {
            Some(m) => m.ws_len_const(b, false),
            None => 0,
        };
        if a > t {
            a
        } else {
            t
        }
    }
}

const fn plan_nodes<const N: usize>(
    layers: &[Layer],
    input: Dims,
    loss: Loss,
) -> Result<Model<Nodes<N>>, Error> {
    if layers.len() > N {
        return Err(Error::BadModel(
            "too many layers to fine-tune (more than the node capacity)",
        ));
    }
    let mut nodes = [Node::EMPTY; N];
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

const fn has_params(l: &Layer) -> bool {
    matches!(l.op, Op::Linear { .. } | Op::Conv2d { .. } | Op::BatchNorm)
}

const fn has_bias(l: &Layer) -> bool {
    matches!(
        l.op,
        Op::Linear { bias: true, .. } | Op::Conv2d { bias: true, .. }
    )
}

/// The first trained layer of `layers` in `mode`, and how each layer from
/// it on is trained.
const fn split_of(layers: &[Layer], mode: Mode) -> Result<usize, Error> {
    let n = layers.len();
    match mode {
        Mode::Full => Ok(0),
        Mode::Last(k) => {
            if k == 0 {
                return Err(Error::BadModel("last:K needs K of at least 1"));
            }
            let mut left = k as usize;
            let mut i = n;
            while i > 0 {
                i -= 1;
                if has_params(&layers[i]) {
                    left -= 1;
                    if left == 0 {
                        return Ok(i);
                    }
                }
            }
            Err(Error::BadModel(
                "last:K: the model has fewer than K layers with parameters",
            ))
        }
        Mode::Bias => {
            let mut i = 0;
            while i < n {
                if has_bias(&layers[i]) {
                    return Ok(i);
                }
                i += 1;
            }
            Err(Error::BadModel("bias mode: the model has no bias"))
        }
        Mode::Layers(bits) => {
            let mut i = 0;
            let mut first = n;
            while i < 32 {
                if bits & (1 << i) != 0 {
                    if i >= n {
                        return Err(Error::BadModel(
                            "layers: a listed layer is beyond the model",
                        ));
                    }
                    if !has_params(&layers[i]) {
                        return Err(Error::BadModel("layers: a listed layer has no parameters"));
                    }
                    if first == n {
                        first = i;
                    }
                }
                i += 1;
            }
            if first == n {
                return Err(Error::BadModel("layers: no layer listed"));
            }
            Ok(first)
        }
    }
}

/// Marks each layer of `layers` with how `mode` trains it ([`Layer::train`]):
/// the layers before the first trained one frozen, the others as the mode
/// says. For a host that plans the whole model at once (the frozen prefix
/// then has no delta or gradient: its nodes are inactive); a device plans
/// the prefix apart ([`models_of`]). Fails as [`models_of`] does for a
/// mode that does not fit the layer list.
pub fn mark_trained(layers: &mut [Layer], mode: Mode) -> Result<(), Error> {
    let split = split_of(layers, mode)?;
    for (i, l) in layers.iter_mut().enumerate() {
        l.train = if i < split {
            Train::Frozen
        } else {
            train_of(i, mode)
        };
    }
    Ok(())
}

/// How layer `i` (at or after the split) is trained in `mode`.
const fn train_of(i: usize, mode: Mode) -> Train {
    match mode {
        Mode::Full | Mode::Last(_) => Train::All,
        Mode::Bias => Train::Bias,
        Mode::Layers(bits) => {
            if i < 32 && bits & (1 << i) != 0 {
                Train::All
            } else {
                Train::Frozen
            }
        }
    }
}

/// Plans the models of fine-tuning the layer list `layers` (on inputs of
/// shape `input`) in `mode` (a `const fn`). The trained part's layers may
/// read only layers of the trained part (a residual connection may not
/// cross the split); batch norm is not fine-tuned on a device (its running
/// statistics would live in the workspace), so a model with batch norm is
/// refused: fold it into the convolution first.
pub const fn models_of<const N: usize>(
    layers: &[Layer],
    input: Dims,
    loss: Loss,
    mode: Mode,
) -> Result<Models<N>, Error> {
    if layers.is_empty() {
        return Err(Error::BadModel("the model has no layers"));
    }
    if layers.len() > N {
        return Err(Error::BadModel(
            "too many layers to fine-tune (more than the node capacity)",
        ));
    }
    let mut conv = false;
    let mut i = 0;
    while i < layers.len() {
        if matches!(layers[i].op, Op::BatchNorm) {
            return Err(Error::BadModel(
                "batch norm is not fine-tuned on a device (fold it into the convolution)",
            ));
        }
        conv |= layers[i].op.needs_conv();
        i += 1;
    }
    let n = layers.len();
    let split = match split_of(layers, mode) {
        Ok(s) => s,
        Err(e) => return Err(e),
    };
    // The frozen prefix, then the trained part re-indexed to start at the
    // split (Full: the whole model).
    let prefix = if split == 0 {
        None
    } else {
        let (head, _) = layers.split_at(split);
        match plan_nodes::<N>(head, input, loss) {
            Ok(m) => Some(m),
            Err(e) => return Err(e),
        }
    };
    let tail_in = match &prefix {
        Some(p) => p.storage().nodes[split - 1].out_dims,
        None => input,
    };
    let mut tail = [Layer::flatten(); N];
    let mut i = split;
    while i < n {
        let l = layers[i];
        let src = match l.src {
            Src::Prev => Src::Prev,
            Src::Input if split == 0 => Src::Input,
            Src::Node(j) if j >= split => Src::Node(j - split),
            _ => {
                return Err(Error::BadModel(
                    "a trained layer reads a layer before the trained part (a connection \
                     crosses the split): train from an earlier layer",
                ))
            }
        };
        let op = match l.op {
            Op::Add { other } if other >= split => Op::Add {
                other: other - split,
            },
            Op::Add { .. } => {
                return Err(Error::BadModel(
                    "a residual join adds a layer before the trained part: train from an \
                     earlier layer",
                ))
            }
            op => op,
        };
        tail[i - split] = Layer::new(op).from(src).trained(train_of(i, mode));
        i += 1;
    }
    let (tail, _) = tail.split_at(n - split);
    let tail = match plan_nodes::<N>(tail, tail_in, loss) {
        Ok(m) => m,
        Err(e) => return Err(e),
    };
    let prefix_params = match &prefix {
        Some(p) => p.sizes.all_params,
        None => 0,
    };
    let outputs = tail.storage().nodes[n - split - 1].out_dims.len();
    Ok(Models {
        prefix,
        tail,
        mode,
        split,
        features: tail_in.len(),
        outputs,
        params: prefix_params + tail.sizes.all_params,
        inputs: input.len(),
        conv,
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
        let m = models(shape, self.learner.mode)?;
        self.push_and_step_planned(&m, sample, mem)
    }

    /// [`FineTuner::push_and_step`] with models planned beforehand by
    /// [`models`] (for this tuner's mode): the same arithmetic, without
    /// planning on every step.
    pub fn push_and_step_planned<const M: usize>(
        &mut self,
        models: &Models<M>,
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
        if models.mode != self.learner.mode {
            return Err(Error::InvalidConfig("models planned for another mode"));
        }
        self.ring.push(sample);
        let l = &mut self.learner;
        let b = self.ring.fill_batch(l.batch, l.pixel_max, mem.x, mem.y);
        l.step_planned(models, b, mem)
    }
}

impl<F: Real, P: Optim<F>> Learner<F, P> {
    /// One step on the batch already in `mem`: its first `b` samples
    /// (`mem.x` holds b·[`Models::inputs`] values, scaled as
    /// [`crate::ring::pixels_into`] scales them; `mem.y` b labels).
    /// Returns the loss before the step. This is what
    /// [`FineTuner::push_and_step_planned`] does once it has stored the
    /// sample and filled the batch from its ring.
    pub fn step_planned<const M: usize>(
        &mut self,
        models: &Models<M>,
        b: usize,
        mem: Memory<'_, F>,
    ) -> Result<F, Error> {
        if models.mode != self.mode {
            return Err(Error::InvalidConfig("models planned for another mode"));
        }
        let d = models.inputs();
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
        let n = b
            .checked_mul(d)
            .ok_or(Error::InvalidConfig("batch too large"))?;
        if b == 0 || x.len() < n || y.len() < b {
            return Err(Error::ShapeMismatch {
                what: "batch",
                expected: n.max(d),
                got: x.len(),
            });
        }
        let (x, y) = (&x[..n], &y[..b]);
        // What is trained, on which inputs: the model on x, or its
        // trained part on the features the frozen prefix computes from x.
        let inputs: &[F] = frozen_features(models, frozen, x, ws, feats)?;
        let mut net = trained_net(models, frozen, ws)?;
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

/// A planned model's objective on a borrowed workspace (serial loops).
type TrainedNet<'w, F> = CpuNet<'w, F, Serial, &'w [Node], &'w mut [F]>;

/// The objective of the trained part on the workspace `ws`, reading its
/// frozen layers (if any) from `frozen` (the whole model's parameters).
fn trained_net<'w, F: Real, const M: usize>(
    models: &'w Models<M>,
    frozen: Option<&'w [F]>,
    ws: &'w mut [F],
) -> Result<TrainedNet<'w, F>, Error> {
    let mut net = Net::resume(models.tail.borrowed(), Serial, ws)?;
    let tail = &models.tail;
    if tail.sizes.params != tail.sizes.all_params {
        let frozen = frozen.ok_or(Error::MissingBuffer("frozen"))?;
        net.set_frozen(&frozen[models.prefix_params()..])?;
    }
    Ok(net)
}

/// The inputs of the trained part for the batch `x`: `x` itself without a
/// frozen prefix; otherwise the features the prefix (at `frozen`, eval
/// mode) computes from `x`, copied into `feats`.
fn frozen_features<'f, F: Real, const M: usize>(
    models: &Models<M>,
    frozen: Option<&[F]>,
    x: &'f [F],
    ws: &mut [F],
    feats: &'f mut [F],
) -> Result<&'f [F], Error> {
    let Some(prefix) = &models.prefix else {
        return Ok(x);
    };
    let b = x.len() / models.inputs().max(1);
    let nf = models.features;
    if feats.len() < b * nf {
        return Err(Error::MissingBuffer("features"));
    }
    let frozen = frozen.ok_or(Error::MissingBuffer("frozen"))?;
    crate::error::check_len("frozen", models.params(), frozen.len())?;
    let feats = &mut feats[..b * nf];
    let mut net = Net::resume(prefix.borrowed(), Serial, &mut *ws)?;
    net.set_inputs(x)?;
    feats.copy_from_slice(net.forward_outputs(&frozen[..models.prefix_params()])?);
    Ok(feats)
}

/// The outputs (`models.outputs` scores) of the model on one sample's
/// scaled inputs `x`, into `out`: the frozen prefix at `frozen`, if any,
/// then the trained part at `theta` (and `frozen` for its frozen layers);
/// batch norm, if any, on its running statistics. The same forward pass a
/// fine-tuning step starts with, so a device predicts what it is about to
/// learn from (prequential accuracy). `ws` and `feats` as for
/// [`FineTuner::push_and_step_planned`] with a batch of one.
pub fn outputs_planned<F: Real, const M: usize>(
    models: &Models<M>,
    frozen: Option<&[F]>,
    theta: &[F],
    x: &[F],
    ws: &mut [F],
    feats: &mut [F],
    out: &mut [F],
) -> Result<(), Error> {
    let k = models.outputs;
    crate::error::check_len("outputs", k, out.len())?;
    let inputs: &[F] = frozen_features(models, frozen, x, ws, feats)?;
    let mut net = trained_net(models, frozen, ws)?;
    net.set_inputs(inputs)?;
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
mod tests;
