//! # fdgr-gpu
//!
//! The kernel's training steps (`sgd`, `db`, `fgr`, `bgr`, `cgr`, `sam`,
//! `usam`, `flood`, PyTorch's SGD) batched on an NVIDIA GPU, with the data
//! set, θ and every buffer resident in device memory.
//!
//! Nothing of the methods is written here: [`DeviceMlp`] implements
//! `fdgr_kernel::VecSpace<f32>` and `fdgr_kernel::Objective<f32>` with
//! device buffers (cudarc `CudaSlice<f32>`) as vectors, and
//! `fdgr_kernel::step` / `fdgr_kernel::method::direction` run on it
//! unchanged. The objective mirrors `fdgr_kernel::mlp` call by call: dense
//! layers through cuBLAS SGEMM (row-major through the transpose mapping of
//! [`gemm`]; TF32 only with [`GpuOptions::tf32`]), the rest in CUDA C
//! kernels (`gpu/kernels/*.cu`, compiled by NVRTC at start-up for the
//! device's architecture), each naming the Rust function it mirrors.
//!
//! Fused where it saves memory traffic: bias + activation after each
//! forward product; softmax-CE value and gradient in one pass; the
//! ε-perturbation θ + ε·g in one `waxpy`; F-GR's combination
//! (1 − γ/ε)·g + (γ/ε)·g' inside the weight-gradient SGEMM (β, α) and the
//! bias column sums, so g' never exists as a buffer; the R-operator's
//! bias + σ' terms; and the whole SGD update (weight decay, momentum,
//! Nesterov) in one kernel.
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
//! and [`launch::LaunchShape`]. The tests compile the same `.cu` files with
//! the host C++ compiler against a header that maps the CUDA built-ins onto
//! the CPU (`gpu/cpu-runtime`, a test-only dependency), launch them as the
//! device path does, and compare each kernel with the `fdgr_kernel`
//! function it mirrors, bit for bit where the order of operations is the
//! same.
#![deny(missing_docs)]

pub mod check;
pub mod cuda;
pub mod device;
pub mod error;
pub mod gemm;
pub mod kernels;
pub mod launch;
pub mod nccl;
pub mod objective;
pub mod ops;
pub mod plan;
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
pub use objective::DeviceMlp;
pub use trainer::Trainer;

use fdgr_kernel::{Method, Optim, SgdState, Shape};

/// The GPU objective: [`DeviceMlp`] on [`Cuda`].
pub type GpuMlp = DeviceMlp<Cuda>;

/// Returns the name of CUDA device 0 (with its compute capability and
/// memory), or why the GPU backend cannot run here: no driver
/// (`libcuda.so`), no device, or cuBLAS / NVRTC not found. Never panics.
///
/// The host's `--backend gpu` should call it first and, on `Err(e)`, print
/// `e` (one line) and exit non-zero.
pub fn probe() -> Result<String, GpuError> {
    let ctx = cuda::open_context(0)?;
    cuda::guarded("CUDA device query", || cuda::describe(&ctx))
}

/// Options of the GPU backend.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GpuOptions {
    /// Let cuBLAS use TF32 tensor cores for the SGEMMs (10-bit mantissa
    /// products: faster on Ampere and later, but results then differ from
    /// the f32 CPU kernel by ~1e-3 rather than ~1e-6). Off by default.
    pub tf32: bool,
}

/// Training on CUDA device 0: the kernel's steps on [`GpuMlp`], with the
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
        shape: Shape,
        max_batch: usize,
        method: &Method<f32>,
        opt: &(impl Optim<f32> + ?Sized),
        options: GpuOptions,
    ) -> Result<Self, GpuError> {
        let dev = Cuda::new(0, &options, max_batch)?;
        cuda::guarded("GPU trainer setup", || {
            Ok(GpuTrainer {
                t: Trainer::new(dev, shape, max_batch, method, opt)?,
            })
        })
    }

    /// The device: name, compute capability, memory.
    pub fn device_name(&self) -> &str {
        self.t.obj.dev.name()
    }

    /// Number of parameters P.
    pub fn param_count(&self) -> usize {
        self.t.param_count()
    }

    /// The CUDA device (for timing events, see [`bench()`]).
    pub fn cuda(&mut self) -> &mut Cuda {
        &mut self.t.obj.dev
    }

    /// The objective (to run `fdgr_kernel` functions on it directly, with
    /// device buffers from [`device::Device::alloc`] on [`GpuTrainer::cuda`]).
    pub fn objective(&mut self) -> &mut GpuMlp {
        self.t.objective()
    }

    fn run<T>(
        &mut self,
        f: impl FnOnce(&mut Trainer<Cuda>) -> Result<T, GpuError>,
    ) -> Result<T, GpuError> {
        self.t.obj.dev.bind()?;
        let t = &mut self.t;
        cuda::guarded("GPU call", || f(t))
    }

    /// Uploads the training set: `x` holds S samples of n₀ inputs
    /// (row-major), `labels` their classes (< n_L).
    pub fn set_data(&mut self, x: &[f32], labels: &[u32]) -> Result<(), GpuError> {
        self.run(|t| t.set_data(x, labels))
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
    /// unchanged on [`GpuMlp`], so it waits for the device once per
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
