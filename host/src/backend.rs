//! Where training runs: the CPU (the kernel's maths on [`Par`]) or a GPU
//! (`fdgr-gpu`). Both run the kernel's method functions; they differ only
//! in where θ and the batch live and who executes the products.

use crate::augment::CropFlip;
use crate::cpu::Par;
use crate::dist::{self, Dist, Reducer};
use anyhow::{anyhow, Result};
use fdgr_kernel::dist::{AscentMode, DataParallel};
use fdgr_kernel::model::{Model, Node};
use fdgr_kernel::{
    mlp, Buffers, Error as KError, Method, Net, Optim, Optimizer, Rng, SgdState, StepOptions,
    Targets,
};
use std::sync::Arc;

/// Why a training step failed.
#[derive(Debug)]
pub enum StepError {
    /// Non-finite loss or direction: the step was rejected, θ unchanged.
    NonFinite,
    /// Anything else.
    Other(anyhow::Error),
}

impl std::fmt::Display for StepError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StepError::NonFinite => write!(f, "non-finite loss or gradient"),
            StepError::Other(e) => write!(f, "{e:#}"),
        }
    }
}

impl From<KError> for StepError {
    fn from(e: KError) -> Self {
        match e {
            KError::NonFinite => StepError::NonFinite,
            e => StepError::Other(anyhow!("{e}")),
        }
    }
}

/// Sums over the samples of training steps (this process's slices of
/// them): Σ loss, correct predictions, samples.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct StepMetrics {
    /// Σ over steps of the step's mean loss × its samples.
    pub loss_sum: f64,
    /// Correct predictions (arg max = label).
    pub correct: u64,
    /// Samples.
    pub samples: u64,
}

/// A training backend holding θ, the optimizer's state and the training
/// set.
pub trait Backend {
    /// `cpu` or `gpu`.
    fn name(&self) -> &'static str;
    /// Sets θ and the optimizer's state vectors, one after the other (P
    /// values per vector: SGD's momentum; Adam's m then v; `None`: zeros).
    fn set_params(&mut self, theta: &[f32], opt_state: Option<&[f32]>) -> Result<()>;
    /// Reads θ and the optimizer's state vectors back.
    fn params(&mut self, theta: &mut [f32], opt_state: Option<&mut [f32]>) -> Result<()>;
    /// One step on the training samples `indices`. A backend may queue it
    /// (GPU) and report its outcome at the next [`Backend::flush`]; the CPU
    /// runs it at once.
    #[allow(clippy::too_many_arguments)]
    fn step(
        &mut self,
        indices: &[u32],
        method: &Method<f32>,
        opt: &Optimizer<f32>,
        x: &StepOptions<f32>,
        state: &mut SgdState,
        lr: f32,
    ) -> std::result::Result<(), StepError>;
    /// Amortized GR's stored correction (empty when there is none).
    fn correction(&mut self) -> Result<Vec<f32>> {
        Ok(vec![])
    }
    /// Restores the stored correction.
    fn set_correction(&mut self, c: &[f32]) -> Result<()> {
        if c.is_empty() {
            Ok(())
        } else {
            Err(anyhow!("the {} backend does not amortize GR", self.name()))
        }
    }
    /// Waits for queued steps; returns L(θ) before the last step, or
    /// [`StepError::NonFinite`] (then θ, momentum and `state` are those
    /// before the rejected step, and later queued steps were skipped).
    fn flush(&mut self, state: &mut SgdState) -> std::result::Result<f32, StepError>;
    /// Mean loss and number of correct predictions on (x, y), batch norm
    /// on its running statistics.
    fn evaluate(&mut self, x: &[f32], y: &[u32]) -> Result<(f64, usize)>;
    /// The loss and correct predictions of the training steps since the
    /// last call, at θ before each step on its own mini-batch (training
    /// mode): what a PyTorch training loop logs. `None` where the backend
    /// does not keep them (then the trainer evaluates the training split).
    fn take_step_metrics(&mut self) -> Result<Option<StepMetrics>> {
        Ok(None)
    }
    /// The non-θ state: batch-norm running statistics (empty for models
    /// without batch norm) and the count of batches they tracked.
    fn state(&mut self) -> Result<(Vec<f32>, u64)> {
        Ok((vec![], 0))
    }
    /// Restores the non-θ state.
    fn set_state(&mut self, state: &[f32], tracked: u64) -> Result<()> {
        if state.is_empty() {
            let _ = tracked;
            Ok(())
        } else {
            Err(anyhow!(
                "the {} backend keeps no running statistics",
                self.name()
            ))
        }
    }
    /// Makes every following step this process's part of a data-parallel
    /// step over `dist`: [`Backend::step`] then gets the indices of the
    /// whole global batch, takes its slice ([`dist::slice`]) and sums the
    /// gradients over the processes (see [`fdgr_kernel::dist`]).
    fn set_data_parallel(&mut self, dist: Arc<Dist>, mode: AscentMode) -> Result<()> {
        let _ = (dist, mode);
        Err(anyhow!(
            "the {} backend does not train data-parallel",
            self.name()
        ))
    }
    /// Augments every following training batch with `aug`, drawing from
    /// `rng` (None: no augmentation).
    fn set_augment(&mut self, aug: Option<(CropFlip, Rng)>) -> Result<()> {
        match aug {
            None => Ok(()),
            Some(_) => Err(anyhow!(
                "the {} backend does not augment batches yet (use --backend cpu)",
                self.name()
            )),
        }
    }
}

pub use crate::memory::{EVAL_BATCH, EVAL_WS_MAX};

/// The CPU backend: the kernel's layer maths on [`Par`] (all cores, a
/// tuned GEMM), for any network.
pub struct CpuBackend {
    model: Model<Vec<Node>>,
    exec: Par,
    train_x: Vec<f32>,
    train_y: Vec<u32>,
    theta: Vec<f32>,
    /// The optimizer's state vectors (empty when it keeps fewer).
    opt_state: [Vec<f32>; 2],
    /// Amortized GR's correction (empty when not amortized).
    correction: Vec<f32>,
    dir: Vec<f32>,
    point: Vec<f32>,
    point2: Vec<f32>,
    /// The workspace; its tail holds the running statistics.
    ws: Vec<f32>,
    tracked: u64,
    bx: Vec<f32>,
    by: Vec<u32>,
    aug: Option<(CropFlip, Rng)>,
    last_loss: f32,
    /// Since the last [`Backend::take_step_metrics`] (None once a step
    /// could not count its predictions).
    metrics: Option<StepMetrics>,
    dp: Option<CpuParallel>,
    /// Training a subset of the parameters (`--train-layers`): θ and the
    /// vectors above hold the trained ones only.
    partial: Option<Partial>,
}

/// What a backend that trains a subset of the parameters
/// (`--train-layers`) keeps besides θ; the CPU and the GPU backends move
/// whole vectors in and out through it.
pub(crate) struct Partial {
    /// The model with every parameter trained (evaluation).
    pub(crate) full: Model<Vec<Node>>,
    /// Every parameter as set (the frozen ones are read from here).
    pub(crate) whole: Vec<f32>,
}

/// The model of `layers` (planned as `full`) that trains only the
/// parameters `mode` names, the others frozen.
pub fn marked_model(
    full: &Model<Vec<Node>>,
    layers: &[fdgr_kernel::Layer],
    mode: fdgr_kernel::finetune::Mode,
) -> Result<Model<Vec<Node>>> {
    let mut marked = layers.to_vec();
    fdgr_kernel::finetune::mark_trained(&mut marked, mode)
        .map_err(|e| anyhow!("--train-layers {mode}: {e}"))?;
    let mut nodes = vec![Node::EMPTY; marked.len()];
    let sizes = fdgr_kernel::model::plan(&marked, full.input, &mut nodes)
        .map_err(|e| anyhow!("--train-layers {mode}: {e}"))?;
    Ok(Model::from_plan(nodes, full.input, full.loss, sizes))
}

impl Partial {
    /// Every parameter in (`theta`: the whole vector; `opt_state`: whole
    /// blocks, one per optimizer state vector; `None`: zeros), kept for
    /// the frozen ones; the trained parts of `marked` out, into `trained`
    /// and the blocks of `state` (one per state vector).
    pub(crate) fn split(
        &mut self,
        marked: &Model<Vec<Node>>,
        theta: &[f32],
        opt_state: Option<&[f32]>,
        trained: &mut [f32],
        state: &mut [&mut [f32]],
    ) -> Result<()> {
        let all = self.whole.len();
        if theta.len() != all {
            return Err(anyhow!("θ has {} values, model needs {all}", theta.len()));
        }
        if let Some(m) = opt_state {
            if m.len() != state.len() * all {
                return Err(anyhow!(
                    "optimizer state has {} values, expected {}",
                    m.len(),
                    state.len() * all
                ));
            }
        }
        self.whole.copy_from_slice(theta);
        marked.gather(theta, trained).map_err(|e| anyhow!("{e}"))?;
        match opt_state {
            Some(m) => {
                for (v, w) in state.iter_mut().zip(m.chunks(all)) {
                    marked.gather(w, v).map_err(|e| anyhow!("{e}"))?;
                }
            }
            None => state.iter_mut().for_each(|v| v.fill(0.0)),
        }
        Ok(())
    }

    /// The whole vectors out: θ the frozen parameters as set and the
    /// trained ones of `marked` from `trained`; the optimizer state (one
    /// whole block per block of `state`) zero for a frozen parameter.
    pub(crate) fn join(
        &self,
        marked: &Model<Vec<Node>>,
        trained: &[f32],
        state: &[&[f32]],
        theta: &mut [f32],
        opt_state: Option<&mut [f32]>,
    ) -> Result<()> {
        let all = self.whole.len();
        theta.copy_from_slice(&self.whole);
        marked.scatter(trained, theta).map_err(|e| anyhow!("{e}"))?;
        if let Some(m) = opt_state {
            m.fill(0.0);
            for (v, w) in state.iter().zip(m.chunks_mut(all)) {
                marked.scatter(v, w).map_err(|e| anyhow!("{e}"))?;
            }
        }
        Ok(())
    }
}

/// A CPU backend's part in data-parallel training.
struct CpuParallel {
    dist: Arc<Dist>,
    mode: AscentMode,
    /// H·g of `db` under the global ascent (empty otherwise).
    scratch: Vec<f32>,
}

impl CpuBackend {
    /// A backend for `model` training on (x, y) with batches up to
    /// `max_batch`, allocating what `method` and `opt` need. Running
    /// statistics start at PyTorch's initial values.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        model: Model<Vec<Node>>,
        exec: Par,
        train_x: Vec<f32>,
        train_y: Vec<u32>,
        max_batch: usize,
        method: &Method<f32>,
        opt: &Optimizer<f32>,
        amortized: bool,
    ) -> Result<Self> {
        let p = model.param_count();
        let sz = |need: bool| if need { p } else { 0 };
        let zeros = crate::memory::zeros;
        // Evaluation runs in batches of EVAL_BATCH when that workspace is
        // small (MLPs), else in training-size batches.
        let hvp = method.needs_hvp();
        let eval_b = if model.workspace_len(EVAL_BATCH, hvp) <= EVAL_WS_MAX {
            EVAL_BATCH
        } else {
            1
        };
        let ws = zeros("workspace", model.workspace_len(max_batch.max(eval_b), hvp))?;
        // running statistics: mean 0, variance 1
        let net = Net::from_model(model.borrowed(), exec, ws).map_err(|e| anyhow!("{e}"))?;
        let ws = net.into_workspace();
        Ok(CpuBackend {
            exec,
            train_x,
            train_y,
            theta: zeros("parameters", p)?,
            opt_state: [
                zeros("optimizer state", sz(opt.state_vectors() >= 1))?,
                zeros("optimizer state", sz(opt.state_vectors() >= 2))?,
            ],
            correction: zeros("amortized correction", sz(amortized))?,
            dir: zeros("update direction", p)?,
            point: zeros("perturbed parameters", sz(method.scratch_vectors() >= 1))?,
            point2: zeros("perturbed parameters", sz(method.scratch_vectors() >= 2))?,
            tracked: 0,
            bx: Vec::with_capacity(max_batch * model.input.len()),
            by: Vec::with_capacity(max_batch),
            aug: None,
            last_loss: f32::NAN,
            metrics: Some(StepMetrics::default()),
            dp: None,
            partial: None,
            ws,
            model,
        })
    }

    /// A backend that trains only the parameters `mode` names
    /// (`--train-layers`) of `full`, the others frozen at the values
    /// [`Backend::set_params`] gives: θ, the direction, the perturbed
    /// points and the optimizer state hold the trained parameters only;
    /// the frozen prefix has no delta or gradient. Otherwise as
    /// [`CpuBackend::new`].
    #[allow(clippy::too_many_arguments)]
    pub fn partial(
        full: Model<Vec<Node>>,
        layers: &[fdgr_kernel::Layer],
        mode: fdgr_kernel::finetune::Mode,
        exec: Par,
        train_x: Vec<f32>,
        train_y: Vec<u32>,
        max_batch: usize,
        method: &Method<f32>,
        opt: &Optimizer<f32>,
        amortized: bool,
    ) -> Result<Self> {
        let model = marked_model(&full, layers, mode)?;
        let whole = crate::memory::zeros("parameters", model.sizes.all_params)?;
        let mut b = CpuBackend::new(
            model, exec, train_x, train_y, max_batch, method, opt, amortized,
        )?;
        b.partial = Some(Partial { full, whole });
        Ok(b)
    }

    /// θ on the host (no copy).
    pub fn theta(&self) -> &[f32] {
        &self.theta
    }
}

fn opt_slice(v: &mut [f32]) -> Option<&mut [f32]> {
    if v.is_empty() {
        None
    } else {
        Some(v)
    }
}

impl Backend for CpuBackend {
    fn name(&self) -> &'static str {
        "cpu"
    }

    fn set_params(&mut self, theta: &[f32], opt_state: Option<&[f32]>) -> Result<()> {
        if let Some(part) = &mut self.partial {
            // the whole vectors in, the trained parts kept
            let mut state: Vec<&mut [f32]> = self
                .opt_state
                .iter_mut()
                .filter(|v| !v.is_empty())
                .map(|v| &mut v[..])
                .collect();
            return part.split(&self.model, theta, opt_state, &mut self.theta, &mut state);
        }
        if theta.len() != self.theta.len() {
            return Err(anyhow!(
                "θ has {} values, model needs {}",
                theta.len(),
                self.theta.len()
            ));
        }
        self.theta.copy_from_slice(theta);
        let want: usize = self.opt_state.iter().map(Vec::len).sum();
        match opt_state {
            Some(m) if m.len() == want => {
                let (a, b) = m.split_at(self.opt_state[0].len());
                self.opt_state[0].copy_from_slice(a);
                self.opt_state[1].copy_from_slice(b);
            }
            Some(m) => {
                return Err(anyhow!(
                    "optimizer state has {} values, expected {want}",
                    m.len()
                ))
            }
            None => self.opt_state.iter_mut().for_each(|v| v.fill(0.0)),
        }
        Ok(())
    }

    fn params(&mut self, theta: &mut [f32], opt_state: Option<&mut [f32]>) -> Result<()> {
        if let Some(part) = &self.partial {
            // the frozen parameters as set, the trained ones as trained;
            // the optimizer state of a frozen parameter is zero
            let state: Vec<&[f32]> = self
                .opt_state
                .iter()
                .filter(|v| !v.is_empty())
                .map(|v| &v[..])
                .collect();
            return part.join(&self.model, &self.theta, &state, theta, opt_state);
        }
        theta.copy_from_slice(&self.theta);
        if let Some(m) = opt_state {
            let n0 = self.opt_state[0].len();
            if m.len() == n0 + self.opt_state[1].len() {
                m[..n0].copy_from_slice(&self.opt_state[0]);
                m[n0..].copy_from_slice(&self.opt_state[1]);
            }
        }
        Ok(())
    }

    fn correction(&mut self) -> Result<Vec<f32>> {
        Ok(self.correction.clone())
    }

    fn set_correction(&mut self, c: &[f32]) -> Result<()> {
        if c.len() != self.correction.len() {
            return Err(anyhow!(
                "GR correction has {} values, expected {}",
                c.len(),
                self.correction.len()
            ));
        }
        self.correction.copy_from_slice(c);
        Ok(())
    }

    fn step(
        &mut self,
        indices: &[u32],
        method: &Method<f32>,
        opt: &Optimizer<f32>,
        x: &StepOptions<f32>,
        state: &mut SgdState,
        lr: f32,
    ) -> std::result::Result<(), StepError> {
        let f = self.model.input.len();
        let b = indices.len();
        // this process's slice of the global batch
        let (lo, hi) = match &self.dp {
            Some(dp) => dist::slice(b, dp.dist.rank(), dp.dist.size()),
            None => (0, b),
        };
        if hi == lo {
            return Err(StepError::Other(anyhow!(
                "a global batch of {b} samples leaves no sample to this process"
            )));
        }
        self.bx.clear();
        self.by.clear();
        for &i in &indices[lo..hi] {
            let i = i as usize;
            self.bx.extend_from_slice(&self.train_x[i * f..(i + 1) * f]);
            self.by.push(self.train_y[i]);
        }
        if let Some((a, rng)) = self.aug.as_mut() {
            // the draws of the whole global batch, in its order
            a.skip(rng, lo);
            a.apply(&mut self.bx, rng);
            a.skip(rng, b - hi);
        }
        let mut net = Net::resume(self.model.borrowed(), self.exec, &mut self.ws[..])?;
        if let Some(part) = &self.partial {
            net.set_frozen(&part.whole)?;
        }
        net.set_batch(&self.bx, Targets::Classes(&self.by))?;
        net.count_correct(true);
        let p = self.theta.len();
        let [s0, s1] = &mut self.opt_state;
        let bufs = Buffers {
            theta: &mut self.theta[..],
            dir: &mut self.dir[..],
            state: [opt_slice(s0), opt_slice(s1)],
            point: opt_slice(&mut self.point),
            point2: opt_slice(&mut self.point2),
            correction: opt_slice(&mut self.correction),
        };
        self.last_loss = match &mut self.dp {
            None => fdgr_kernel::step_with(&mut net, method, opt, state, lr, x, bufs)?,
            Some(dp) => {
                if method.needs_hvp() && dp.mode == AscentMode::Global {
                    dp.scratch.resize(p, 0.0);
                }
                let weight = (hi - lo) as f32 / b as f32;
                let mut red = Reducer(&dp.dist);
                let mut o = DataParallel::new(
                    &mut net,
                    &mut red,
                    weight,
                    dp.dist.is_root(),
                    dp.mode,
                    opt_slice(&mut dp.scratch),
                );
                fdgr_kernel::step_with(&mut o, method, opt, state, lr, x, bufs)?
            }
        };
        self.tracked += net.batches_tracked();
        let n = (hi - lo) as u64;
        self.metrics = match (self.metrics, net.train_correct()) {
            (Some(m), Some(c)) => Some(StepMetrics {
                loss_sum: m.loss_sum + f64::from(self.last_loss) * n as f64,
                correct: m.correct + c as u64,
                samples: m.samples + n,
            }),
            _ => None,
        };
        Ok(())
    }

    fn take_step_metrics(&mut self) -> Result<Option<StepMetrics>> {
        Ok(self.metrics.replace(StepMetrics::default()))
    }

    fn flush(&mut self, _state: &mut SgdState) -> std::result::Result<f32, StepError> {
        Ok(self.last_loss)
    }

    fn evaluate(&mut self, x: &[f32], y: &[u32]) -> Result<(f64, usize)> {
        if let Some(part) = &self.partial {
            let mut whole = part.whole.clone();
            self.model
                .scatter(&self.theta, &mut whole)
                .map_err(|e| anyhow!("{e}"))?;
            return evaluate_cpu(&part.full, self.exec, &whole, x, y, &mut self.ws);
        }
        evaluate_cpu(&self.model, self.exec, &self.theta, x, y, &mut self.ws)
    }

    fn state(&mut self) -> Result<(Vec<f32>, u64)> {
        let n = self.model.sizes.state;
        Ok((self.ws[self.ws.len() - n..].to_vec(), self.tracked))
    }

    fn set_state(&mut self, state: &[f32], tracked: u64) -> Result<()> {
        let n = self.model.sizes.state;
        if state.len() != n {
            return Err(anyhow!(
                "running statistics: {} values, the model keeps {n}",
                state.len()
            ));
        }
        let len = self.ws.len();
        self.ws[len - n..].copy_from_slice(state);
        self.tracked = tracked;
        Ok(())
    }

    fn set_augment(&mut self, aug: Option<(CropFlip, Rng)>) -> Result<()> {
        self.aug = aug;
        Ok(())
    }

    fn set_data_parallel(&mut self, dist: Arc<Dist>, mode: AscentMode) -> Result<()> {
        self.dp = Some(CpuParallel {
            dist,
            mode,
            scratch: vec![],
        });
        Ok(())
    }
}

/// A workspace for evaluating `arch` holding `state` (its running
/// statistics) at its end.
pub fn eval_workspace(arch: &crate::arch::Arch, state: &[f32]) -> Vec<f32> {
    let m = &arch.model;
    let b = if m.workspace_len(EVAL_BATCH, false) <= EVAL_WS_MAX {
        EVAL_BATCH
    } else {
        32
    };
    let mut ws = vec![0.0f32; m.workspace_len(b, false)];
    let n = ws.len();
    ws[n - state.len()..].copy_from_slice(state);
    ws
}

/// Mean loss and accuracy of a network (θ and its running statistics) on
/// (x, y), on all cores.
pub fn evaluate_net(
    arch: &crate::arch::Arch,
    theta: &[f32],
    state: &[f32],
    x: &[f32],
    y: &[u32],
) -> Result<(f64, f64)> {
    let (pool, threads) = crate::cpu::pool(0)?;
    let mut ws = eval_workspace(arch, state);
    let exec = Par { threads };
    let (loss, ok) = pool.install(|| evaluate_cpu(&arch.model, exec, theta, x, y, &mut ws))?;
    Ok((loss, ok as f64 / y.len().max(1) as f64))
}

/// Mean loss and correct predictions of θ on (x, y), in batches, batch
/// norm on the running statistics held at the end of `ws` (which must be
/// a workspace of `model`: see [`Model::workspace_len`]).
pub fn evaluate_cpu(
    model: &Model<Vec<Node>>,
    exec: Par,
    theta: &[f32],
    x: &[f32],
    y: &[u32],
    ws: &mut [f32],
) -> Result<(f64, usize)> {
    let f = model.input.len();
    let k = model.outputs();
    let mut loss_sum = 0.0f64;
    let mut correct = 0usize;
    let cap = {
        let net = Net::resume(model.borrowed(), exec, &mut ws[..]).map_err(|e| anyhow!("{e}"))?;
        net.capacity(false).clamp(1, EVAL_BATCH)
    };
    for (xb, yb) in x.chunks(cap * f).zip(y.chunks(cap)) {
        let mut net =
            Net::resume(model.borrowed(), exec, &mut ws[..]).map_err(|e| anyhow!("{e}"))?;
        net.set_batch(xb, Targets::Classes(yb))
            .map_err(|e| anyhow!("{e}"))?;
        let out = net.forward_outputs(theta).map_err(|e| anyhow!("{e}"))?;
        correct += mlp::correct(out, k, yb);
        let l = fdgr_kernel::loss::loss_grad(model.loss, out, &Targets::Classes(yb), k, None);
        loss_sum += l as f64 * yb.len() as f64;
    }
    Ok((loss_sum / y.len().max(1) as f64, correct))
}

/// The outputs (logits, N × classes) of θ on the inputs `x`, batch norm on
/// the running statistics held at the end of `ws`.
pub fn outputs_cpu(
    model: &Model<Vec<Node>>,
    exec: Par,
    theta: &[f32],
    x: &[f32],
    ws: &mut [f32],
) -> Result<Vec<f32>> {
    let f = model.input.len();
    let k = model.outputs();
    let mut out = Vec::with_capacity(x.len() / f.max(1) * k);
    let cap = {
        let net = Net::resume(model.borrowed(), exec, &mut ws[..]).map_err(|e| anyhow!("{e}"))?;
        net.capacity(false).clamp(1, EVAL_BATCH)
    };
    let dummy = vec![0u32; cap];
    for xb in x.chunks(cap * f) {
        let b = xb.len() / f;
        let mut net =
            Net::resume(model.borrowed(), exec, &mut ws[..]).map_err(|e| anyhow!("{e}"))?;
        net.set_batch(xb, Targets::Classes(&dummy[..b]))
            .map_err(|e| anyhow!("{e}"))?;
        out.extend_from_slice(net.forward_outputs(theta).map_err(|e| anyhow!("{e}"))?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use fdgr_kernel::finetune::Mode;
    use fdgr_kernel::model::{Dims, Layer};

    /// Whole vectors in and out through a trained subset (the path of both
    /// the CPU and the GPU backend for `--train-layers`): the trained parts
    /// out are the whole vectors' trained entries, the whole θ comes back
    /// with the trained entries replaced, and a frozen parameter's
    /// optimizer state comes back zero.
    #[test]
    fn partial_split_and_join() {
        let layers = [
            Layer::linear(4),
            Layer::act(fdgr_kernel::Act::Tanh),
            Layer::linear(3),
        ];
        let input = Dims::flat(5);
        let mut nodes = vec![Node::EMPTY; layers.len()];
        let sizes = fdgr_kernel::model::plan(&layers, input, &mut nodes).unwrap();
        let full = Model::from_plan(nodes, input, fdgr_kernel::Loss::SoftmaxCe, sizes);
        let marked = marked_model(&full, &layers, Mode::Bias).unwrap();
        let (all, p) = (marked.sizes.all_params, marked.param_count());
        assert_eq!((all, p), (5 * 4 + 4 + 4 * 3 + 3, 4 + 3));
        let mut part = Partial {
            full,
            whole: vec![0.0; all],
        };
        let theta: Vec<f32> = (0..all).map(|i| i as f32).collect();
        let opt: Vec<f32> = (0..2 * all).map(|i| 1000.0 + i as f32).collect();
        let (mut t, mut s0, mut s1) = (vec![0.0; p], vec![0.0; p], vec![0.0; p]);
        part.split(&marked, &theta, Some(&opt), &mut t, &mut [&mut s0, &mut s1])
            .unwrap();
        // the biases: entries 20..24 and 36..39 of the whole vector
        let bias: Vec<usize> = (20..24).chain(36..39).collect();
        assert_eq!(t, bias.iter().map(|&i| i as f32).collect::<Vec<_>>());
        assert_eq!(
            s1,
            bias.iter()
                .map(|&i| 1000.0 + (all + i) as f32)
                .collect::<Vec<_>>()
        );
        // trained values move; the whole vectors come back around them
        t.iter_mut().for_each(|v| *v = -*v);
        let (mut back, mut back_opt) = (vec![0.0; all], vec![7.0; 2 * all]);
        part.join(&marked, &t, &[&s0, &s1], &mut back, Some(&mut back_opt))
            .unwrap();
        for i in 0..all {
            let trained = bias.contains(&i);
            assert_eq!(back[i], if trained { -(i as f32) } else { i as f32 });
            let want = if trained { 1000.0 + i as f32 } else { 0.0 };
            assert_eq!(back_opt[i], want, "state of parameter {i}");
        }
        // wrong lengths are errors, not panics
        assert!(part
            .split(&marked, &theta[1..], None, &mut t, &mut [])
            .is_err());
        assert!(part
            .split(
                &marked,
                &theta,
                Some(&opt[1..]),
                &mut t,
                &mut [&mut s0, &mut s1]
            )
            .is_err());
    }
}
