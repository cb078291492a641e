//! The GPU backend adapter: `fdgr-gpu`'s trainer behind [`Backend`].
//!
//! `fdgr_gpu::probe()` is always called first: on a machine without an
//! NVIDIA driver it returns one clear error (nothing from CUDA is touched,
//! so nothing can panic), and the CLI exits with code 2.

use crate::backend::{Backend, StepError};
use crate::data::Dataset;
use anyhow::{anyhow, Result};
use fdgr_gpu::{GpuError, GpuOptions, GpuTrainer};
use fdgr_kernel::{Method, Optimizer, SgdState, Shape, StepOptions};

fn step_err(e: GpuError) -> StepError {
    if e.is_non_finite() {
        StepError::NonFinite
    } else {
        StepError::Other(anyhow!("{e}"))
    }
}

/// Checks that a GPU can be used here; returns its description.
pub fn probe() -> Result<String> {
    fdgr_gpu::probe().map_err(|e| anyhow!("{e}"))
}

/// The GPU backend.
pub struct GpuBackend {
    t: GpuTrainer,
}

impl Backend for GpuBackend {
    fn name(&self) -> &'static str {
        "gpu"
    }

    fn set_params(&mut self, theta: &[f32], opt_state: Option<&[f32]>) -> Result<()> {
        self.t
            .set_params(theta, opt_state)
            .map_err(|e| anyhow!("{e}"))
    }

    fn params(&mut self, theta: &mut [f32], opt_state: Option<&mut [f32]>) -> Result<()> {
        self.t.params(theta, opt_state).map_err(|e| anyhow!("{e}"))
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
        if *x != StepOptions::default() {
            return Err(StepError::Other(anyhow!(
                "--clip-norm, --gr-every and --gr-prob run on the CPU backend only"
            )));
        }
        self.t
            .step_async(indices, method, opt, state, lr)
            .map_err(step_err)
    }

    fn flush(&mut self, state: &mut SgdState) -> std::result::Result<f32, StepError> {
        self.t.finish(state).map_err(step_err)
    }

    fn evaluate(&mut self, x: &[f32], y: &[u32]) -> Result<(f64, usize)> {
        let (l, c) = self.t.evaluate(x, y).map_err(|e| anyhow!("{e}"))?;
        Ok((l as f64, c))
    }
}

/// A GPU backend for `shape` holding the training split of `data`.
pub fn backend(
    shape: Shape,
    data: &Dataset,
    max_batch: usize,
    method: &Method<f32>,
    opt: &Optimizer<f32>,
    tf32: bool,
) -> Result<Box<dyn Backend>> {
    let dev = probe()?;
    eprintln!("GPU: {dev}{}", if tf32 { " (TF32 products)" } else { "" });
    let mut t = GpuTrainer::new(shape, max_batch, method, opt, GpuOptions { tf32 })
        .map_err(|e| anyhow!("{e}"))?;
    t.set_data(&data.train.x, &data.train.y)
        .map_err(|e| anyhow!("{e}"))?;
    Ok(Box::new(GpuBackend { t }))
}

/// `fdgr crosscheck`: every method for `steps` steps on GPU and CPU kernel
/// from the same θ and batches. Returns the JSON lines and whether all passed.
pub fn crosscheck(
    shape: Shape,
    batch: usize,
    steps: usize,
    tf32: bool,
) -> Result<Vec<fdgr_gpu::CrossCheck>> {
    probe()?;
    let cfg = fdgr_gpu::check::CrossCheckConfig::new(batch, steps, tf32);
    fdgr_gpu::check::crosscheck_all(shape, &cfg, GpuOptions { tf32 }).map_err(|e| anyhow!("{e}"))
}

/// `fdgr bench --backend gpu`: CUDA-event timing of queued steps.
pub fn bench(
    shape: Shape,
    batch: usize,
    method: &Method<f32>,
    steps: usize,
    warmup: usize,
    tf32: bool,
) -> Result<fdgr_gpu::Bench> {
    probe()?;
    fdgr_gpu::bench(shape, batch, method, steps, warmup, GpuOptions { tf32 })
        .map_err(|e| anyhow!("{e}"))
}
