//! The CUDA device: cudarc's driver API, cuBLAS and NVRTC, loaded at run
//! time (`dynamic-loading`), everything on the context's default stream.
//!
//! cudarc panics when a CUDA library it needs cannot be loaded, so every
//! entry point here first checks that the driver (`libcuda.so`), cuBLAS
//! and NVRTC can be loaded (`is_culib_present`) and returns a
//! [`GpuError`] otherwise; CUDA calls are then wrapped in `catch_unwind`
//! as a last line of defence.

use crate::error::guarded;
use std::sync::Arc;

use cudarc::cublas::sys::{cublasMath_t, cublasOperation_t};
use cudarc::cublas::CudaBlas;
use cudarc::driver::sys::CUevent_flags;
use cudarc::driver::{
    result as dres, CudaContext, CudaEvent, CudaFunction, CudaModule, CudaSlice, CudaStream,
    DevicePtr, LaunchConfig, PinnedHostSlice, PushKernelArg,
};

use crate::cudnn::CudnnConv;
use crate::device::{Arg, ConvOp, DPtr, Device, GemmOp};
use crate::error::GpuError;
use crate::gemm::col_major;
use crate::grid::Launch;
use crate::kernels::{self, Kernel, Module};
use crate::{GpuOptions, Precision};

/// Pinned staging buffers for the per-step mini-batch indices: the host
/// fills one while the device may still read the previous ones.
const STAGING_SLOTS: usize = 8;

fn cuda_err(e: impl std::fmt::Display) -> GpuError {
    GpuError::Cuda(e.to_string())
}

/// Checks that the driver, cuBLAS and NVRTC libraries can be loaded, so
/// that no cudarc call below can panic for a missing library.
pub(crate) fn check_libraries() -> Result<(), GpuError> {
    // SAFETY: each call only tries dlopen on cudarc's candidate names.
    if !unsafe { cudarc::driver::sys::is_culib_present() } {
        return Err(GpuError::NoDriver("libcuda.so".into()));
    }
    if !unsafe { cudarc::cublas::sys::is_culib_present() } {
        return Err(GpuError::MissingLibrary("cuBLAS (libcublas.so)".into()));
    }
    if !kernels::nvrtc_available() {
        return Err(GpuError::MissingLibrary("NVRTC (libnvrtc.so)".into()));
    }
    Ok(())
}

/// The device's name, compute capability and memory, e.g.
/// `NVIDIA H200 (compute 9.0, 140 GiB)`.
pub(crate) fn describe(ctx: &Arc<CudaContext>) -> Result<String, GpuError> {
    let name = ctx.name().map_err(cuda_err)?;
    let (maj, min) = ctx.compute_capability().map_err(cuda_err)?;
    let mem = ctx.total_mem().map_err(cuda_err)? as f64 / (1u64 << 30) as f64;
    Ok(format!("{name} (compute {maj}.{min}, {mem:.0} GiB)"))
}

pub(crate) fn open_context(ordinal: usize) -> Result<Arc<CudaContext>, GpuError> {
    check_libraries()?;
    guarded("CUDA initialisation", || {
        CudaContext::new(ordinal).map_err(|e| GpuError::NoDevice(e.to_string()))
    })
}

/// One CUDA device: context, default stream, cuBLAS handle and the
/// kernels of `gpu/kernels/` compiled for it by NVRTC.
pub struct Cuda {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    blas: CudaBlas,
    funcs: Vec<CudaFunction>,
    _modules: Vec<Arc<CudaModule>>,
    staging: Vec<PinnedHostSlice<u32>>,
    staged: Vec<CudaEvent>,
    next_slot: usize,
    name: String,
    arch: String,
    precision: Precision,
    cudnn: Option<CudnnConv>,
    conv_engine: String,
}

fn op(t: bool) -> cublasOperation_t {
    if t {
        cublasOperation_t::CUBLAS_OP_T
    } else {
        cublasOperation_t::CUBLAS_OP_N
    }
}

#[inline]
fn addr(p: DPtr) -> u64 {
    p.base + 4 * p.off as u64
}

impl Cuda {
    /// Opens device `ordinal`, compiles the kernels with NVRTC for its
    /// architecture, sets cuBLAS's math mode (strict FP32, or TF32 tensor
    /// cores for [`Precision::Tf32`]) and opens cuDNN when libcudnn is
    /// present ([`Cuda::conv_engine`] says which convolutions run).
    /// `stage_len`: largest mini-batch of indices.
    pub fn new(ordinal: usize, options: &GpuOptions, stage_len: usize) -> Result<Cuda, GpuError> {
        let ctx = open_context(ordinal)?;
        guarded("CUDA setup", || Cuda::setup(ctx, options, stage_len))
    }

    fn setup(
        ctx: Arc<CudaContext>,
        options: &GpuOptions,
        stage_len: usize,
    ) -> Result<Cuda, GpuError> {
        // One stream only: cudarc's cross-stream event tracking is not
        // needed (and every buffer would carry two events).
        // SAFETY: all work of this context goes to its default stream, in
        // order, so no cross-stream synchronisation is needed.
        unsafe { ctx.disable_event_tracking() };
        let stream = ctx.default_stream();
        let blas = CudaBlas::new(stream.clone()).map_err(cuda_err)?;
        let mode = match options.precision {
            Precision::Tf32 => cublasMath_t::CUBLAS_TF32_TENSOR_OP_MATH,
            // bf16 goes through cublasGemmEx's compute type (Device::gemm)
            Precision::F32 | Precision::Bf16 => cublasMath_t::CUBLAS_DEFAULT_MATH,
        };
        // SAFETY: a valid handle and a valid enum value.
        unsafe { cudarc::cublas::sys::cublasSetMathMode(*blas.handle(), mode) }
            .result()
            .map_err(cuda_err)?;
        let (maj, min) = ctx.compute_capability().map_err(cuda_err)?;
        let arch = kernels::arch_for(maj, min);
        let mut modules = Vec::with_capacity(Module::ALL.len());
        for &m in Module::ALL {
            let ptx = kernels::compile(m, &arch)?;
            let module = ctx
                .load_module(cudarc::nvrtc::Ptx::from_src(ptx))
                .map_err(|e| GpuError::Cuda(format!("loading {}: {e}", m.file())))?;
            modules.push((m, module));
        }
        let mut funcs = Vec::with_capacity(Kernel::ALL.len());
        for &k in Kernel::ALL {
            let module = modules
                .iter()
                .find(|(m, _)| *m == k.module())
                .map(|(_, module)| module)
                .ok_or_else(|| GpuError::Cuda(format!("no module for {}", k.name())))?;
            funcs.push(module.load_function(k.name()).map_err(cuda_err)?);
        }
        let mut staging = Vec::with_capacity(STAGING_SLOTS);
        let mut staged = Vec::with_capacity(STAGING_SLOTS);
        for _ in 0..STAGING_SLOTS {
            // SAFETY: the contents are written before every use.
            staging.push(unsafe { ctx.alloc_pinned::<u32>(stage_len.max(1)) }.map_err(cuda_err)?);
            // cudarc records a pinned slice's own event only in multi-stream
            // mode, so each slot gets an event recorded after its copy
            staged.push(ctx.new_event(None).map_err(cuda_err)?);
        }
        let name = describe(&ctx)?;
        let (cudnn, why) = CudnnConv::open(stream.clone(), options.precision);
        let conv_engine = match &cudnn {
            Some(c) => c.describe(),
            None => format!("im2col + cuBLAS ({why})"),
        };
        Ok(Cuda {
            ctx,
            stream,
            blas,
            funcs,
            _modules: modules.into_iter().map(|(_, m)| m).collect(),
            staging,
            staged,
            next_slot: 0,
            name,
            arch,
            precision: options.precision,
            cudnn,
            conv_engine,
        })
    }

    /// The stream all of this device's work goes to (NCCL joins it).
    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    /// How convolutions run: `cuDNN <version>`, or `im2col + cuBLAS
    /// (<why cuDNN is not used>)`.
    pub fn conv_engine(&self) -> String {
        self.conv_engine.clone()
    }

    /// The precision of the products.
    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// Device name, compute capability, memory.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// NVRTC target (`compute_90`, …).
    pub fn arch(&self) -> &str {
        &self.arch
    }

    /// Makes the context current on the calling thread.
    pub fn bind(&self) -> Result<(), GpuError> {
        self.ctx.bind_to_thread().map_err(cuda_err)
    }

    /// A timing event.
    pub fn timer(&self) -> Result<CudaEvent, GpuError> {
        self.ctx
            .new_event(Some(CUevent_flags::CU_EVENT_DEFAULT))
            .map_err(cuda_err)
    }

    /// Records `ev` on the stream.
    pub fn record(&self, ev: &CudaEvent) -> Result<(), GpuError> {
        ev.record(&self.stream).map_err(cuda_err)
    }

    fn ptr_of<T>(&self, b: &CudaSlice<T>) -> DPtr {
        // With event tracking off the guard records nothing.
        let (p, _guard) = b.device_ptr(&self.stream);
        DPtr { base: p, off: 0 }
    }

    fn cu(&self) -> cudarc::driver::sys::CUstream {
        self.stream.cu_stream()
    }
}

impl Device for Cuda {
    type Buf = CudaSlice<f32>;
    type IBuf = CudaSlice<u32>;

    fn alloc(&mut self, n: usize) -> Result<CudaSlice<f32>, GpuError> {
        self.stream.alloc_zeros::<f32>(n).map_err(cuda_err)
    }

    fn alloc_u32(&mut self, n: usize) -> Result<CudaSlice<u32>, GpuError> {
        self.stream.alloc_zeros::<u32>(n).map_err(cuda_err)
    }

    fn len(&self, b: &CudaSlice<f32>) -> usize {
        b.len()
    }

    fn ptr(&self, b: &CudaSlice<f32>) -> DPtr {
        self.ptr_of(b)
    }

    fn iptr(&self, b: &CudaSlice<u32>) -> DPtr {
        self.ptr_of(b)
    }

    fn upload(&mut self, dst: DPtr, src: &[f32]) -> Result<(), GpuError> {
        // SAFETY: callers pass a destination inside an allocation of at
        // least src.len() elements; pageable source is staged by the driver
        // before return.
        unsafe { dres::memcpy_htod_async(addr(dst), src, self.cu()) }.map_err(cuda_err)
    }

    fn upload_u32(&mut self, dst: DPtr, src: &[u32]) -> Result<(), GpuError> {
        // SAFETY: as `upload`.
        unsafe { dres::memcpy_htod_async(addr(dst), src, self.cu()) }.map_err(cuda_err)
    }

    fn stage_u32(&mut self, dst: DPtr, src: &[u32]) -> Result<(), GpuError> {
        let i = self.next_slot;
        if src.len() > self.staging[i].len() {
            return self.upload_u32(dst, src);
        }
        self.next_slot = (i + 1) % STAGING_SLOTS;
        let done = &self.staged[i];
        // the device has copied this slot's previous contents (usually long
        // ago: the host waits only when it runs STAGING_SLOTS steps ahead)
        done.synchronize().map_err(cuda_err)?;
        let host = self.staging[i].as_mut_slice().map_err(cuda_err)?;
        host[..src.len()].copy_from_slice(src);
        // SAFETY: pinned source of src.len() elements, destination inside
        // the device index buffer (checked by the caller); the slot is not
        // written again before `done` says this copy has run.
        unsafe { dres::memcpy_htod_async(addr(dst), &host[..src.len()], self.stream.cu_stream()) }
            .map_err(cuda_err)?;
        done.record(&self.stream).map_err(cuda_err)
    }

    fn download(&mut self, src: DPtr, dst: &mut [f32]) -> Result<(), GpuError> {
        // SAFETY: `src` holds dst.len() elements; we wait before returning.
        unsafe { dres::memcpy_dtoh_async(dst, addr(src), self.cu()) }.map_err(cuda_err)?;
        self.stream.synchronize().map_err(cuda_err)
    }

    fn download_u32(&mut self, src: DPtr, dst: &mut [u32]) -> Result<(), GpuError> {
        // SAFETY: as `download`.
        unsafe { dres::memcpy_dtoh_async(dst, addr(src), self.cu()) }.map_err(cuda_err)?;
        self.stream.synchronize().map_err(cuda_err)
    }

    fn copy(&mut self, dst: DPtr, src: DPtr, n: usize) -> Result<(), GpuError> {
        if n == 0 {
            return Ok(());
        }
        // SAFETY: both ranges lie in live allocations (lengths checked by
        // the caller).
        unsafe { dres::memcpy_dtod_async(addr(dst), addr(src), 4 * n, self.cu()) }.map_err(cuda_err)
    }

    fn fill_u32(&mut self, dst: DPtr, value: u32, n: usize) -> Result<(), GpuError> {
        if n == 0 {
            return Ok(());
        }
        // SAFETY: the range lies in a live allocation.
        unsafe { cudarc::driver::sys::cuMemsetD32Async(addr(dst), value, n, self.cu()) }
            .result()
            .map_err(cuda_err)
    }

    fn synchronize(&mut self) -> Result<(), GpuError> {
        self.stream.synchronize().map_err(cuda_err)?;
        self.ctx.check_err().map_err(cuda_err)
    }

    fn gemm(&mut self, g: &GemmOp) -> Result<(), GpuError> {
        let c = col_major(g.ta, g.tb, g.m, g.n, g.k);
        if !c.fits_i32() {
            return Err(GpuError::Input(format!(
                "matrix product {}x{}x{} exceeds cuBLAS's 32-bit sizes",
                g.m, g.n, g.k
            )));
        }
        let (alpha, beta) = (g.alpha, g.beta);
        if self.precision == Precision::Bf16 {
            use cudarc::cublas::sys::{cublasComputeType_t, cublasGemmAlgo_t, cudaDataType};
            let f = cudaDataType::CUDA_R_32F;
            // SAFETY: as below; f32 operands and output, bf16 products
            // with f32 accumulation inside cuBLAS.
            return unsafe {
                cudarc::cublas::result::gemm_ex(
                    *self.blas.handle(),
                    op(c.transa),
                    op(c.transb),
                    c.m as i32,
                    c.n as i32,
                    c.k as i32,
                    &alpha as *const f32 as *const _,
                    addr(g.b) as *const _,
                    f,
                    c.lda as i32,
                    addr(g.a) as *const _,
                    f,
                    c.ldb as i32,
                    &beta as *const f32 as *const _,
                    addr(g.c) as *mut _,
                    f,
                    c.ldc as i32,
                    cublasComputeType_t::CUBLAS_COMPUTE_32F_FAST_16BF,
                    cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
                )
            }
            .map_err(cuda_err);
        }
        // SAFETY: the operands lie in live allocations of the sizes the
        // row-major product needs (the objective's plans); cuBLAS's A is the
        // kernel's B and vice versa (crate::gemm).
        unsafe {
            cudarc::cublas::result::sgemm(
                *self.blas.handle(),
                op(c.transa),
                op(c.transb),
                c.m as i32,
                c.n as i32,
                c.k as i32,
                &alpha,
                addr(g.b) as *const f32,
                c.lda as i32,
                addr(g.a) as *const f32,
                c.ldb as i32,
                &beta,
                addr(g.c) as *mut f32,
                c.ldc as i32,
            )
        }
        .map_err(cuda_err)
    }

    fn launch(&mut self, kernel: Kernel, cfg: Launch, args: &[Arg]) -> Result<(), GpuError> {
        let f = &self.funcs[kernel.index()];
        let ptrs: Vec<u64> = args
            .iter()
            .map(|a| match a {
                Arg::Ptr(p) => addr(*p),
                _ => 0,
            })
            .collect();
        let mut b = self.stream.launch_builder(f);
        for (a, p) in args.iter().zip(&ptrs) {
            match a {
                Arg::Ptr(_) | Arg::Null => b.arg(p),
                Arg::F32(v) => b.arg(v),
                Arg::U32(v) => b.arg(v),
                Arg::I32(v) => b.arg(v),
                Arg::U64(v) => b.arg(v),
            };
        }
        let lc = LaunchConfig {
            grid_dim: cfg.grid,
            block_dim: cfg.block,
            shared_mem_bytes: 0,
        };
        // SAFETY: `args` follow the kernel's CUDA signature (checked against
        // the .cu sources by the unit tests) and point into live
        // allocations of the sizes the kernel reads.
        unsafe { b.launch(lc) }
            .map(|_| ())
            .map_err(|e| GpuError::Cuda(format!("{}: {e}", kernel.name())))
    }

    fn native_conv(&self) -> bool {
        self.cudnn.is_some()
    }

    fn conv(&mut self, op: &ConvOp) -> Result<bool, GpuError> {
        match self.cudnn.as_mut() {
            Some(c) => c.run(op, addr).map(|()| true),
            None => Ok(false),
        }
    }
}
