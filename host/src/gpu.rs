//! The GPU backend adapter: `fdgr-gpu`'s trainer behind [`Backend`], for
//! any network (MLPs, LeNet, ResNets, wide ResNets).
//!
//! `fdgr_gpu::probe()` is always called first: on a machine without an
//! NVIDIA driver it returns one clear error (nothing from CUDA is touched,
//! so nothing can panic), and the CLI exits with code 2. cuDNN is
//! optional: without libcudnn the convolutions run as im2col + cuBLAS, and
//! the start-up line says so.

use crate::arch::Arch;
use crate::augment::{Crop, CropFlip};
use crate::backend::{marked_model, Backend, Partial, StepError};
use crate::data::Dataset;
use crate::dist::{self, Dist};
use anyhow::{anyhow, Result};
use fdgr_gpu::check::Subject;
use fdgr_gpu::nccl::Nccl;
use fdgr_gpu::{Augment, CropDraw, GpuError, GpuOptions, GpuTrainer, Precision};
use fdgr_kernel::dist::AscentMode;
use fdgr_kernel::finetune::Mode;
use fdgr_kernel::model::{Model, Node};
use fdgr_kernel::{Method, Optimizer, Rng, SgdState, StepOptions};
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
    aug: Option<(CropFlip, Rng)>,
    crops: Vec<CropDraw>,
    dp: Option<GpuParallel>,
    /// L(θ) of the last step when it ran synchronously (with step
    /// options), for [`Backend::flush`].
    last_loss: Option<f32>,
    /// Training a subset of the parameters (`--train-layers`): the
    /// trainer's model (its θ and optimizer state hold the trained ones),
    /// and every parameter as set (on the device too, for the layers to
    /// read the frozen ones).
    partial: Option<(Partial, Model<Vec<Node>>)>,
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
        let Some((part, marked)) = &mut self.partial else {
            return self
                .t
                .set_params(theta, opt_state)
                .map_err(|e| anyhow!("{e}"));
        };
        // the whole vectors in: every parameter to the device (the frozen
        // ones are read there), the trained parts as θ and its state
        let (p, all) = (marked.param_count(), part.whole.len());
        let k = opt_state.map_or(0, |m| m.len() / all.max(1));
        let (mut trained, mut state) = (vec![0.0f32; p], vec![0.0f32; k * p]);
        let mut blocks: Vec<&mut [f32]> = state.chunks_mut(p.max(1)).collect();
        part.split(marked, theta, opt_state, &mut trained, &mut blocks)?;
        self.t.set_frozen(&part.whole).map_err(|e| anyhow!("{e}"))?;
        let st = opt_state.map(|_| &state[..]);
        self.t.set_params(&trained, st).map_err(|e| anyhow!("{e}"))
    }

    fn params(&mut self, theta: &mut [f32], opt_state: Option<&mut [f32]>) -> Result<()> {
        let Some((part, marked)) = &self.partial else {
            return self.t.params(theta, opt_state).map_err(|e| anyhow!("{e}"));
        };
        let (p, all) = (marked.param_count(), part.whole.len());
        let k = opt_state.as_ref().map_or(0, |m| m.len() / all.max(1));
        let (mut trained, mut state) = (vec![0.0f32; p], vec![0.0f32; k * p]);
        let st = opt_state.as_ref().map(|_| &mut state[..]);
        self.t
            .params(&mut trained, st)
            .map_err(|e| anyhow!("{e}"))?;
        let blocks: Vec<&[f32]> = state.chunks(p.max(1)).collect();
        part.join(marked, &trained, &blocks, theta, opt_state)
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
        let with_options = *x != StepOptions::default() || self.t.is_amortized();
        let crops = match self.aug.as_mut() {
            Some((a, rng)) => {
                // the CPU backend's draws, in the same order (augment.rs)
                self.crops.clear();
                for _ in indices {
                    let c = Crop::draw(a.pad(), rng);
                    self.crops.push(CropDraw {
                        top: c.top as u32,
                        left: c.left as u32,
                        flip: c.flip && a.flips(),
                    });
                }
                Some(&self.crops[..])
            }
            None => None,
        };
        if let Some(dp) = &mut self.dp {
            let b = indices.len();
            let (lo, hi) = dist::slice(b, dp.dist.rank(), dp.dist.size());
            let w = (hi - lo) as f32 / b as f32;
            let root = dp.dist.is_root();
            dp.last_loss = self
                .t
                .step_data_parallel(
                    &indices[lo..hi],
                    crops.map(|c| &c[lo..hi]),
                    method,
                    opt,
                    x,
                    state,
                    lr,
                    &mut dp.nccl,
                    w,
                    root,
                    dp.mode,
                )
                .map_err(step_err)?;
            // gradients summed over NCCL: every one of the step's (a reused
            // ascent takes one), or the direction once (local ascent)
            let calls = match (dp.mode, x.ascent) {
                (AscentMode::Global, fdgr_kernel::Ascent::Fresh) => method.gradient_evals() as u64,
                (AscentMode::Global, fdgr_kernel::Ascent::Reuse) => 1,
                (AscentMode::Local, _) => 1,
            };
            let p = self.t.param_count() as u64;
            dp.dist.record_step_traffic(calls, calls * 4 * (p + 2));
            return Ok(());
        }
        if with_options {
            // the kernel's step with its options, waiting for the device
            // (the queued path has no clipping or stored correction)
            let l = self
                .t
                .step_with(indices, crops, method, opt, x, state, lr)
                .map_err(step_err)?;
            self.last_loss = Some(l);
            return Ok(());
        }
        self.last_loss = None;
        self.t
            .step_async_aug(indices, crops, method, opt, state, lr)
            .map_err(step_err)
    }

    fn correction(&mut self) -> Result<Vec<f32>> {
        self.t.correction().map_err(|e| anyhow!("{e}"))
    }

    fn set_correction(&mut self, c: &[f32]) -> Result<()> {
        self.t.set_correction(c).map_err(|e| anyhow!("{e}"))
    }

    fn flush(&mut self, state: &mut SgdState) -> std::result::Result<f32, StepError> {
        match (&self.dp, self.last_loss) {
            (Some(dp), _) => Ok(dp.last_loss),
            (None, Some(l)) => Ok(l),
            (None, None) => self.t.finish(state).map_err(step_err),
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

    fn state(&mut self) -> Result<(Vec<f32>, u64)> {
        self.t.state().map_err(|e| anyhow!("{e}"))
    }

    fn set_state(&mut self, state: &[f32], tracked: u64) -> Result<()> {
        self.t.set_state(state, tracked).map_err(|e| anyhow!("{e}"))
    }

    fn set_augment(&mut self, aug: Option<(CropFlip, Rng)>) -> Result<()> {
        let spec = aug.as_ref().map(|(a, _)| Augment {
            dims: a.dims(),
            pad: a.pad(),
            fill: a.fill().to_vec(),
        });
        self.t.set_augment(spec).map_err(|e| anyhow!("{e}"))?;
        self.aug = aug;
        Ok(())
    }
}

/// The start-up line: device, precision, how convolutions run.
fn announce(t: &GpuTrainer, precision: Precision, has_conv: bool) {
    let conv = if has_conv {
        format!("; convolutions: {}", t.conv_engine())
    } else {
        String::new()
    };
    eprintln!(
        "GPU: {} ({} products{conv})",
        t.device_name(),
        precision.name()
    );
}

fn has_conv(arch: &Arch) -> bool {
    arch.model
        .nodes()
        .iter()
        .any(|n| matches!(n.op, fdgr_kernel::Op::Conv2d { .. }))
}

/// A GPU backend for `arch` holding the training split of `data`,
/// training the parameters `mode` names (`--train-layers`; the others
/// frozen at the values [`Backend::set_params`] gives); with `amortized`,
/// it keeps amortized GR's correction (`--gr-every`, `--gr-prob`).
#[allow(clippy::too_many_arguments)]
pub fn backend(
    arch: &Arch,
    data: &Dataset,
    max_batch: usize,
    method: &Method<f32>,
    opt: &Optimizer<f32>,
    precision: Precision,
    amortized: bool,
    mode: Mode,
) -> Result<Box<dyn Backend>> {
    probe()?;
    let (model, partial) = match mode {
        Mode::Full => (arch.model.clone(), None),
        mode => {
            let marked = marked_model(&arch.model, &arch.layers, mode)?;
            let whole = vec![0.0f32; marked.sizes.all_params];
            let part = Partial {
                full: arch.model.clone(),
                whole,
            };
            (marked.clone(), Some((part, marked)))
        }
    };
    let mut t = GpuTrainer::new(model, max_batch, method, opt, GpuOptions { precision })
        .map_err(|e| anyhow!("{e}"))?;
    announce(&t, precision, has_conv(arch));
    t.set_data(&data.train.x, &data.train.y)
        .map_err(|e| anyhow!("{e}"))?;
    t.set_amortized(amortized).map_err(|e| anyhow!("{e}"))?;
    Ok(Box::new(GpuBackend {
        t,
        aug: None,
        crops: Vec::with_capacity(max_batch),
        dp: None,
        last_loss: None,
        partial,
    }))
}

fn subject(arch: &Arch) -> Subject {
    Subject {
        model: arch.model.clone(),
        name: arch.spec.clone(),
        act: arch.act.name(),
    }
}

/// `fdgr crosscheck`: every method for `steps` steps on GPU and CPU kernel
/// (the host's parallel executor) from the same θ and batches, training the
/// parameters `mode` names (the others frozen, drawn with θ; then without
/// the methods that need an exact Hessian product). Returns the JSON lines
/// and whether all passed.
pub fn crosscheck(
    arch: &Arch,
    mode: Mode,
    batch: usize,
    steps: usize,
    precision: Precision,
    threads: usize,
) -> Result<Vec<fdgr_gpu::CrossCheck>> {
    probe()?;
    let cfg = fdgr_gpu::check::CrossCheckConfig::new(batch, steps, precision);
    let exec = crate::cpu::Par { threads };
    let mut s = subject(arch);
    let mut methods = fdgr_gpu::check::crosscheck_methods().to_vec();
    if mode != Mode::Full {
        s.model = marked_model(&arch.model, &arch.layers, mode)?;
        s.name = format!("{} --train-layers {mode}", s.name);
        methods.retain(|m| !m.needs_hvp());
    }
    fdgr_gpu::check::crosscheck_all(&s, &methods, &cfg, GpuOptions { precision }, exec)
        .map_err(|e| anyhow!("{e}"))
}

/// `fdgr bench --backend gpu`: CUDA-event timing of queued steps.
pub fn bench(
    arch: &Arch,
    batch: usize,
    method: &Method<f32>,
    steps: usize,
    warmup: usize,
    precision: Precision,
) -> Result<fdgr_gpu::Bench> {
    probe()?;
    fdgr_gpu::bench(
        &subject(arch),
        batch,
        method,
        steps,
        warmup,
        GpuOptions { precision },
    )
    .map_err(|e| anyhow!("{e}"))
}
