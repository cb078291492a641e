//! # fdgr-gpu
//!
//! The kernel's training steps (`sgd`, `db`, `fgr`, `bgr`, `cgr`, `sam`,
//! `usam`, `flood`, PyTorch's SGD) batched on an NVIDIA GPU, with the data
//! set, θ and every buffer resident in device memory.
//!
//! Nothing of the methods, the models, their layers or their objective is
//! written here: [`DeviceNet`] is the kernel's own objective
//! (`fdgr_kernel::Net`) on [`DeviceMem`], the device's memory — device
//! buffers (cudarc `CudaSlice<f32>`) as vectors — for any planned model
//! (MLPs, LeNet, ResNets with batch norm and residual adds, wide ResNets),
//! and `fdgr_kernel::step` / `fdgr_kernel::method::direction` run on it
//! unchanged. Its gradients, Hessian products and losses are the kernel's
//! own pass functions (`fdgr_kernel::model::pass`) over [`prims::GpuOps`],
//! the device binding of the kernel's primitives (`fdgr_kernel::ops::Ops`):
//! dense products on cuBLAS SGEMM (row-major through the transpose mapping
//! of [`gemm`]), convolutions on cuDNN when it is present ([`cudnn`]) or
//! im2col + cuBLAS ([`conv`]) otherwise, and everything else in CUDA C
//! kernels (`gpu/kernels/*.cu`, compiled by NVRTC at start-up for the
//! device's architecture), each naming the kernel function it mirrors.
//!
//! Precision ([`Precision`]): f32 by default (cuBLAS and cuDNN in strict
//! FP32), TF32 tensor cores for products and convolutions, or bf16 inputs
//! for the cuBLAS products (f32 accumulation and outputs); every other
//! kernel, the optimizer and the finiteness guard stay in f32.
//!
//! Host round trips: [`GpuTrainer::step`] runs the kernel's `step` as is,
//! which reads back L (once per gradient) and the finiteness flag;
//! [`GpuTrainer::step_async`] queues a step with no round trip (the checks
//! and the rejection of a non-finite step happen on the device) and
//! [`GpuTrainer::finish`] reads the last loss when it is wanted.
//!
//! Without an NVIDIA driver every entry point returns
//! [`GpuError::NoDriver`] (never panics): check [`probe`] first.
//!
//! The CUDA C is the only GPU implementation of each op. The kernels are
//! declared once, in `gpu/kernels/table.rs` (name, file, launch shape; the
//! parameters are the `.cu` declaration), which gives [`kernels::Kernel`]
//! and [`grid::LaunchShape`]. The tests compile the same `.cu` files with
//! the host C++ compiler against a header that maps the CUDA built-ins onto
//! the CPU (`gpu/cpu-runtime`, a test-only dependency), launch them as the
//! device path does, and compare each kernel with the `fdgr_kernel`
//! function it mirrors, bit for bit where the order of operations is the
//! same.
#![deny(missing_docs)]

pub mod check;
pub mod conv;
pub mod cuda;
pub mod cudnn;
pub mod device;
pub mod error;
pub mod gemm;
pub mod grid;
pub mod kernels;
pub mod launchers;
pub mod memory;
pub mod nccl;
pub mod plan;
pub mod prims;
pub mod trainer;

#[cfg(test)]
mod cuda_c_tests;
#[cfg(test)]
mod emu;
#[cfg(test)]
mod tests;

pub use check::{bench, crosscheck, Bench, CrossCheck, CrossCheckConfig};
pub use cuda::Cuda;
pub use error::GpuError;
pub use memory::{device_net, mlp_model, DeviceMem, DeviceNet, DeviceObjective};
pub use trainer::{Augment, CropDraw, Trainer};

use fdgr_kernel::model::{Model, Node};
use fdgr_kernel::{Method, Optim, SgdState};

/// The GPU objective: [`DeviceNet`] on [`Cuda`].
pub type GpuNet = DeviceNet<Cuda>;

/// Returns the name of CUDA device 0 (with its compute capability and
/// memory), or why the GPU backend cannot run here: no driver
/// (`libcuda.so`), no device, or cuBLAS / NVRTC not found. Never panics.
///
/// The host's `--backend gpu` should call it first and, on `Err(e)`, print
/// `e` (one line) and exit non-zero.
pub fn probe() -> Result<String, GpuError> {
    let ctx = cuda::open_context(0)?;
    crate::error::guarded("CUDA device query", || cuda::describe(&ctx))
}

/// The arithmetic of the products (GEMMs and convolutions) on the GPU.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Precision {
    /// Strict f32 everywhere (cuBLAS default math, cuDNN FMA math): the
    /// reference of the cross-checks.
    #[default]
    F32,
    /// TF32 tensor cores for the products and convolutions (10-bit
    /// mantissa inputs, f32 accumulation): results differ from the f32
    /// CPU kernel by ~1e-3 rather than ~1e-6.
    Tf32,
    /// bf16 inputs for the cuBLAS products (`CUBLAS_COMPUTE_32F_FAST_16BF`:
    /// operands rounded to bf16 by cuBLAS, f32 accumulation and outputs);
    /// cuDNN convolutions run with TF32 (their bf16 path needs bf16
    /// tensors, which are not implemented).
    Bf16,
}

impl Precision {
    /// `f32`, `tf32`, `bf16`.
    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Tf32 => "tf32",
            Precision::Bf16 => "bf16",
        }
    }

    /// The precision called `s`.
    pub fn from_name(s: &str) -> Option<Precision> {
        match s {
            "f32" | "fp32" => Some(Precision::F32),
            "tf32" => Some(Precision::Tf32),
            "bf16" => Some(Precision::Bf16),
            _ => None,
        }
    }
}

/// Options of the GPU backend.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GpuOptions {
    /// The arithmetic of the products (f32 by default).
    pub precision: Precision,
}

/// Training on CUDA device 0: the kernel's steps on [`GpuNet`], with the
/// training set, θ, the direction, the momentum and the scratch vectors in
/// device memory.
pub struct GpuTrainer {
    t: Trainer<Cuda>,
}

impl GpuTrainer {
    /// Opens device 0, compiles the kernels, and allocates the buffers of
    /// `method` and `opt` for batches of up to `max_batch` samples
    /// ([`plan`] lists them). θ starts at 0: call
    /// [`GpuTrainer::set_params`].
    pub fn new(
        model: Model<Vec<Node>>,
        max_batch: usize,
        method: &Method<f32>,
        opt: &(impl Optim<f32> + ?Sized),
        options: GpuOptions,
    ) -> Result<Self, GpuError> {
        let dev = Cuda::new(0, &options, max_batch)?;
        crate::error::guarded("GPU trainer setup", || {
            Ok(GpuTrainer {
                t: Trainer::new(dev, model, max_batch, method, opt)?,
            })
        })
    }

    /// How the device runs convolutions: `cuDNN <version>`, or the
    /// im2col + cuBLAS fallback when libcudnn is not present.
    pub fn conv_engine(&self) -> String {
        self.t.obj.memory().dev.conv_engine()
    }

    /// The device: name, compute capability, memory.
    pub fn device_name(&self) -> &str {
        self.t.obj.memory().dev.name()
    }

    /// Number of parameters P.
    pub fn param_count(&self) -> usize {
        self.t.param_count()
    }

    /// The CUDA device (for timing events, see [`bench()`]).
    pub fn cuda(&mut self) -> &mut Cuda {
        self.t.dev()
    }

    /// The objective (to run `fdgr_kernel` functions on it directly, with
    /// device buffers from [`device::Device::alloc`] on [`GpuTrainer::cuda`]).
    pub fn objective(&mut self) -> &mut GpuNet {
        self.t.objective()
    }

    fn run<T>(
        &mut self,
        f: impl FnOnce(&mut Trainer<Cuda>) -> Result<T, GpuError>,
    ) -> Result<T, GpuError> {
        self.t.dev().bind()?;
        let t = &mut self.t;
        crate::error::guarded("GPU call", || f(t))
    }

    /// The batch-norm running statistics and the batches they tracked
    /// (waits for queued steps).
    pub fn state(&mut self) -> Result<(Vec<f32>, u64), GpuError> {
        self.run(|t| t.state())
    }

    /// Restores the running statistics.
    pub fn set_state(&mut self, st: &[f32], tracked: u64) -> Result<(), GpuError> {
        self.run(|t| t.set_state(st, tracked))
    }

    /// Crop + flip augmentation on the device, on or off (see [`Augment`]).
    pub fn set_augment(&mut self, aug: Option<Augment>) -> Result<(), GpuError> {
        self.run(|t| t.set_augment(aug))
    }

    /// [`GpuTrainer::step_async`] with the samples cropped and flipped on
    /// the device as `crops` says.
    pub fn step_async_aug(
        &mut self,
        indices: &[u32],
        crops: Option<&[CropDraw]>,
        method: &Method<f32>,
        opt: &(impl Optim<f32> + ?Sized),
        state: &mut SgdState,
        lr: f32,
    ) -> Result<(), GpuError> {
        self.run(|t| t.step_async_aug(indices, crops, method, opt, state, lr))
    }

    /// Uploads the training set: `x` holds S samples of n₀ inputs
    /// (row-major), `labels` their classes (< n_L).
    pub fn set_data(&mut self, x: &[f32], labels: &[u32]) -> Result<(), GpuError> {
        self.run(|t| t.set_data(x, labels))
    }

    /// Uploads every parameter of a model that trains some of them (its
    /// layers read the frozen ones from there; θ holds the trained ones).
    pub fn set_frozen(&mut self, whole: &[f32]) -> Result<(), GpuError> {
        self.run(|t| t.set_frozen(whole))
    }

    /// Uploads θ (P values, the kernel's layout) and the optimizer's
    /// state vectors, one after the other (`None`: zeros).
    pub fn set_params(&mut self, theta: &[f32], state: Option<&[f32]>) -> Result<(), GpuError> {
        self.run(|t| t.set_params(theta, state))
    }

    /// Downloads θ and the momentum buffer (zeros if the optimizer has
    /// none). Waits for queued steps.
    pub fn params(&mut self, theta: &mut [f32], state: Option<&mut [f32]>) -> Result<(), GpuError> {
        self.run(|t| t.params(theta, state))
    }

    /// One training step on the samples `indices` of the resident data
    /// set; returns L(θ) before the step. Runs `fdgr_kernel::step`
    /// unchanged on [`GpuNet`], so it waits for the device once per
    /// gradient (to return L) and once for the finiteness check. On
    /// [`GpuError::NonFinite`], θ, the momentum and `state` are unchanged.
    pub fn step(
        &mut self,
        indices: &[u32],
        method: &Method<f32>,
        opt: &(impl Optim<f32> + ?Sized),
        state: &mut SgdState,
        lr: f32,
    ) -> Result<f32, GpuError> {
        self.run(|t| t.step(indices, method, opt, state, lr))
    }

    /// The same step, queued without a host round trip (except `sam`'s
    /// ‖g‖ and `flood`'s L); [`GpuTrainer::finish`] returns the loss and
    /// reports a non-finite step (rolling `state` back). Use it in
    /// training loops and benchmarks; read the loss only when it is shown.
    pub fn step_async(
        &mut self,
        indices: &[u32],
        method: &Method<f32>,
        opt: &(impl Optim<f32> + ?Sized),
        state: &mut SgdState,
        lr: f32,
    ) -> Result<(), GpuError> {
        self.run(|t| t.step_async(indices, method, opt, state, lr))
    }

    /// One step with the kernel's step options (gradient clipping, a fresh
    /// or reused ascent: `fdgr_kernel::step_with`, as on the CPU), the
    /// samples cropped and flipped as `crops` says; returns L(θ) before the
    /// step (waits for the device). See [`Trainer::step_with`].
    #[allow(clippy::too_many_arguments)]
    pub fn step_with(
        &mut self,
        indices: &[u32],
        crops: Option<&[CropDraw]>,
        method: &Method<f32>,
        opt: &(impl Optim<f32> + ?Sized),
        x: &fdgr_kernel::StepOptions<f32>,
        state: &mut SgdState,
        lr: f32,
    ) -> Result<f32, GpuError> {
        self.run(|t| t.step_with(indices, crops, method, opt, x, state, lr))
    }

    /// Amortized GR's stored correction on or off
    /// ([`Trainer::set_amortized`]).
    pub fn set_amortized(&mut self, on: bool) -> Result<(), GpuError> {
        self.run(|t| t.set_amortized(on))
    }

    /// Whether the trainer keeps amortized GR's correction.
    pub fn is_amortized(&self) -> bool {
        self.t.correction.is_some()
    }

    /// The stored correction (empty when not amortized).
    pub fn correction(&mut self) -> Result<Vec<f32>, GpuError> {
        self.run(|t| t.correction())
    }

    /// Restores the stored correction.
    pub fn set_correction(&mut self, v: &[f32]) -> Result<(), GpuError> {
        self.run(|t| t.set_correction(v))
    }

    /// Waits for queued steps; returns L(θ) of the last one (before its
    /// update), or [`GpuError::NonFinite`] with `state.steps` set back to
    /// the updates applied (the rejected step and every later queued step
    /// were skipped on the device, as the synchronous loop would stop).
    pub fn finish(&mut self, state: &mut SgdState) -> Result<f32, GpuError> {
        self.run(|t| t.finish(state))
    }

    /// Mean loss and number of correct predictions on (x, labels), in
    /// batches of up to `max_batch`.
    pub fn evaluate(&mut self, x: &[f32], labels: &[u32]) -> Result<(f32, usize), GpuError> {
        self.run(|t| t.evaluate(x, labels))
    }

    /// Waits for all queued work.
    pub fn synchronize(&mut self) -> Result<(), GpuError> {
        self.run(|t| t.synchronize())
    }
}
