//! The GPU backend adapter: `fdgr-gpu`'s trainer behind [`Backend`].
//!
//! `fdgr_gpu::probe()` is always called first: on a machine without an
//! NVIDIA driver it returns one clear error (nothing from CUDA is touched,
//! so nothing can panic), and the CLI exits with code 2.

use crate::backend::{Backend, StepError};
use crate::data::Dataset;
use crate::dist::{self, Dist};
use anyhow::{anyhow, Result};
use fdgr_gpu::nccl::Nccl;
use fdgr_gpu::{GpuError, GpuOptions, GpuTrainer};
use fdgr_kernel::dist::AscentMode;
use fdgr_kernel::{Method, Optimizer, SgdState, Shape, StepOptions};
use std::sync::Arc;

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
    dp: Option<GpuParallel>,
}

/// A GPU backend's part in data-parallel training: one GPU per process,
/// gradients summed over NCCL (compiled, not run where it was written).
struct GpuParallel {
    dist: Arc<Dist>,
    mode: AscentMode,
    nccl: Nccl,
    last_loss: f32,
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
        if let Some(dp) = &mut self.dp {
            let b = indices.len();
            let (lo, hi) = dist::slice(b, dp.dist.rank(), dp.dist.size());
            let w = (hi - lo) as f32 / b as f32;
            let root = dp.dist.is_root();
            dp.last_loss = self
                .t
                .step_data_parallel(
                    &indices[lo..hi],
                    method,
                    opt,
                    state,
                    lr,
                    &mut dp.nccl,
                    w,
                    root,
                    dp.mode,
                )
                .map_err(step_err)?;
            let calls = match dp.mode {
                AscentMode::Global => method.gradient_evals() as u64,
                AscentMode::Local => 1,
            };
            let p = self.t.param_count() as u64;
            dp.dist.record_step_traffic(calls, calls * 4 * (p + 2));
            return Ok(());
        }
        self.t
            .step_async(indices, method, opt, state, lr)
            .map_err(step_err)
    }

    fn flush(&mut self, state: &mut SgdState) -> std::result::Result<f32, StepError> {
        match &self.dp {
            Some(dp) => Ok(dp.last_loss),
            None => self.t.finish(state).map_err(step_err),
        }
    }

    /// Joins the NCCL communicator of the job: rank 0 makes the id, the
    /// host's collectives carry it to the others.
    fn set_data_parallel(&mut self, dist: Arc<Dist>, mode: AscentMode) -> Result<()> {
        let mut words = [0u64; 16];
        if dist.is_root() {
            let id = fdgr_gpu::nccl::unique_id().map_err(|e| anyhow!("{e}"))?;
            for (w, b) in words.iter_mut().zip(id.chunks_exact(8)) {
                *w = u64::from_le_bytes(b.try_into().unwrap_or([0; 8]));
            }
        }
        // a broadcast from rank 0: the others hold zeros
        dist.max_u64(&mut words)?;
        let mut id = [0u8; 128];
        for (b, w) in id.chunks_exact_mut(8).zip(words) {
            b.copy_from_slice(&w.to_le_bytes());
        }
        let nccl =
            Nccl::new(&mut self.t, dist.rank(), dist.size(), &id).map_err(|e| anyhow!("{e}"))?;
        self.dp = Some(GpuParallel {
            dist,
            mode,
            nccl,
            last_loss: f32::NAN,
        });
        Ok(())
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
    Ok(Box::new(GpuBackend { t, dp: None }))
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
