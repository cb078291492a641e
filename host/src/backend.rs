//! Where training runs: the CPU (the kernel's maths on [`Par`]) or a GPU
//! (`fdgr-gpu`). Both run the kernel's method functions; they differ only
//! in where θ and the batch live and who executes the products.

use crate::cpu::Par;
use anyhow::{anyhow, Result};
use fdgr_kernel::{mlp, Buffers, Error as KError, Method, Mlp, Sgd, SgdState, Shape, Targets};

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

/// A training backend holding θ, the optimizer's momentum and the
/// training set.
pub trait Backend {
    /// `cpu` or `gpu`.
    fn name(&self) -> &'static str;
    /// Sets θ and (when the optimizer uses one) the momentum buffer.
    fn set_params(&mut self, theta: &[f32], momentum: Option<&[f32]>) -> Result<()>;
    /// Reads θ and the momentum buffer back.
    fn params(&mut self, theta: &mut [f32], momentum: Option<&mut [f32]>) -> Result<()>;
    /// One step on the training samples `indices`. A backend may queue it
    /// (GPU) and report its outcome at the next [`Backend::flush`]; the CPU
    /// runs it at once.
    fn step(
        &mut self,
        indices: &[u32],
        method: &Method<f32>,
        opt: &Sgd<f32>,
        state: &mut SgdState,
        lr: f32,
    ) -> std::result::Result<(), StepError>;
    /// Waits for queued steps; returns L(θ) before the last step, or
    /// [`StepError::NonFinite`] (then θ, momentum and `state` are those
    /// before the rejected step, and later queued steps were skipped).
    fn flush(&mut self, state: &mut SgdState) -> std::result::Result<f32, StepError>;
    /// Mean loss and number of correct predictions on (x, y).
    fn evaluate(&mut self, x: &[f32], y: &[u32]) -> Result<(f64, usize)>;
}

/// Evaluation batch size.
pub const EVAL_BATCH: usize = 512;

/// The CPU backend.
pub struct CpuBackend {
    shape: Shape,
    exec: Par,
    train_x: Vec<f32>,
    train_y: Vec<u32>,
    theta: Vec<f32>,
    momentum: Vec<f32>,
    dir: Vec<f32>,
    point: Vec<f32>,
    point2: Vec<f32>,
    ws: Vec<f32>,
    bx: Vec<f32>,
    by: Vec<u32>,
    last_loss: f32,
}

impl CpuBackend {
    /// A backend for `shape` training on (x, y) with batches up to
    /// `max_batch`, allocating what `method` and `opt` need.
    pub fn new(
        shape: Shape,
        exec: Par,
        train_x: Vec<f32>,
        train_y: Vec<u32>,
        max_batch: usize,
        method: &Method<f32>,
        opt: &Sgd<f32>,
    ) -> Self {
        let p = shape.param_count();
        let sz = |need: bool| if need { p } else { 0 };
        let b = max_batch.max(EVAL_BATCH);
        CpuBackend {
            shape,
            exec,
            train_x,
            train_y,
            theta: vec![0.0; p],
            momentum: vec![0.0; sz(opt.needs_momentum())],
            dir: vec![0.0; p],
            point: vec![0.0; sz(method.scratch_vectors() >= 1)],
            point2: vec![0.0; sz(method.scratch_vectors() >= 2)],
            ws: vec![0.0; shape.workspace_len(b, method.needs_hvp())],
            bx: Vec::with_capacity(max_batch * shape.inputs()),
            by: Vec::with_capacity(max_batch),
            last_loss: f32::NAN,
        }
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

    fn set_params(&mut self, theta: &[f32], momentum: Option<&[f32]>) -> Result<()> {
        if theta.len() != self.theta.len() {
            return Err(anyhow!(
                "θ has {} values, model needs {}",
                theta.len(),
                self.theta.len()
            ));
        }
        self.theta.copy_from_slice(theta);
        match momentum {
            Some(m) if m.len() == self.momentum.len() => self.momentum.copy_from_slice(m),
            Some(m) => {
                return Err(anyhow!(
                    "momentum has {} values, expected {}",
                    m.len(),
                    self.momentum.len()
                ))
            }
            None => self.momentum.fill(0.0),
        }
        Ok(())
    }

    fn params(&mut self, theta: &mut [f32], momentum: Option<&mut [f32]>) -> Result<()> {
        theta.copy_from_slice(&self.theta);
        if let Some(m) = momentum {
            if m.len() == self.momentum.len() {
                m.copy_from_slice(&self.momentum);
            }
        }
        Ok(())
    }

    fn step(
        &mut self,
        indices: &[u32],
        method: &Method<f32>,
        opt: &Sgd<f32>,
        state: &mut SgdState,
        lr: f32,
    ) -> std::result::Result<(), StepError> {
        let f = self.shape.inputs();
        self.bx.clear();
        self.by.clear();
        for &i in indices {
            let i = i as usize;
            self.bx.extend_from_slice(&self.train_x[i * f..(i + 1) * f]);
            self.by.push(self.train_y[i]);
        }
        let mut net = Mlp::new(self.shape, self.exec, &mut self.ws[..]);
        net.set_batch(&self.bx, Targets::Classes(&self.by))?;
        let bufs = Buffers {
            theta: &mut self.theta[..],
            dir: &mut self.dir[..],
            momentum: opt_slice(&mut self.momentum),
            point: opt_slice(&mut self.point),
            point2: opt_slice(&mut self.point2),
        };
        self.last_loss = fdgr_kernel::step(&mut net, method, opt, state, lr, bufs)?;
        Ok(())
    }

    fn flush(&mut self, _state: &mut SgdState) -> std::result::Result<f32, StepError> {
        Ok(self.last_loss)
    }

    fn evaluate(&mut self, x: &[f32], y: &[u32]) -> Result<(f64, usize)> {
        evaluate_cpu(&self.shape, self.exec, &self.theta, x, y, &mut self.ws)
    }
}

/// Mean loss and correct predictions of θ on (x, y), in batches.
pub fn evaluate_cpu(
    shape: &Shape,
    exec: Par,
    theta: &[f32],
    x: &[f32],
    y: &[u32],
    ws: &mut [f32],
) -> Result<(f64, usize)> {
    let f = shape.inputs();
    let cap = (ws.len() / shape.workspace_len(1, false)).clamp(1, EVAL_BATCH);
    let mut loss_sum = 0.0f64;
    let mut correct = 0usize;
    for (xb, yb) in x.chunks(cap * f).zip(y.chunks(cap)) {
        let mut net = Mlp::new(*shape, exec, &mut ws[..]);
        net.set_batch(xb, Targets::Classes(yb))
            .map_err(|e| anyhow!("{e}"))?;
        let out = net.forward_outputs(theta).map_err(|e| anyhow!("{e}"))?;
        correct += mlp::correct(out, shape.outputs(), yb);
        let l = fdgr_kernel::loss::loss_grad(
            shape.loss,
            out,
            &Targets::Classes(yb),
            shape.outputs(),
            None,
        );
        loss_sum += l as f64 * yb.len() as f64;
    }
    Ok((loss_sum / y.len().max(1) as f64, correct))
}
