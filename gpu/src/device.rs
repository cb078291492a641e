//! What the GPU objective needs from a device: memory, cuBLAS SGEMM and
//! kernel launches, all enqueued in order on one stream.
//!
//! [`crate::cuda::Cuda`] implements it with cudarc. The unit tests
//! implement it with a CPU emulator that runs the `.cu` kernels themselves,
//! compiled for the CPU (gpu/cpu-runtime), with the same grids and blocks,
//! and checks every launch's arguments against the kernel's compiled
//! signature, so both the CUDA C and the host-side orchestration (offsets,
//! transposes, α/β, launch arguments, the deferred-step protocol) are
//! tested against the CPU kernel without a GPU.

use crate::error::GpuError;
use crate::grid::Launch;
use crate::kernels::Kernel;

/// A position in device memory: an allocation (`base`: its device address
/// on CUDA, an id in the emulator) and an element offset (f32 or u32, both
/// 4 bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DPtr {
    /// The allocation.
    pub base: u64,
    /// Offset in elements.
    pub off: usize,
}

impl DPtr {
    /// The pointer `n` elements further.
    #[inline]
    pub fn at(self, n: usize) -> DPtr {
        DPtr {
            base: self.base,
            off: self.off + n,
        }
    }
}

/// One kernel argument.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Arg {
    /// A device pointer.
    Ptr(DPtr),
    /// A null pointer (the "nullable" parameters).
    Null,
    /// `float`.
    F32(f32),
    /// `u32`.
    U32(u32),
    /// `int`.
    I32(i32),
    /// `u64`.
    U64(u64),
}

/// A row-major product `C ← α·op(A)·op(B) + β·C` (the kernel's
/// [`fdgr_kernel::serial::vecops::gemm`] convention; C is m × n).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GemmOp {
    /// A is k × m (transposed) rather than m × k.
    pub ta: bool,
    /// B is n × k (transposed) rather than k × n.
    pub tb: bool,
    /// Rows of C.
    pub m: usize,
    /// Columns of C.
    pub n: usize,
    /// Inner dimension.
    pub k: usize,
    /// α.
    pub alpha: f32,
    /// A.
    pub a: DPtr,
    /// B.
    pub b: DPtr,
    /// β (0 overwrites C).
    pub beta: f32,
    /// C.
    pub c: DPtr,
}

/// Which convolution product (see [`ConvOp`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConvKind {
    /// y ← β·y + α·conv(x, w): `a` = x, `b` = w, `out` = y.
    Forward,
    /// dx ← β·dx + α·convᵀ(dy, w): `a` = dy, `b` = w, `out` = dx.
    BackwardData,
    /// dw ← β·dw + α·(x ⋆ dy): `a` = x, `b` = dy, `out` = dw.
    BackwardFilter,
}

/// One convolution product on NCHW device buffers, with the kernel's
/// geometry and α/β convention (`fdgr_kernel::serial::conv`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ConvOp {
    /// Which product.
    pub kind: ConvKind,
    /// Geometry.
    pub g: fdgr_kernel::serial::ConvGeom,
    /// First operand (see [`ConvKind`]).
    pub a: DPtr,
    /// Second operand.
    pub b: DPtr,
    /// Output.
    pub out: DPtr,
    /// α.
    pub alpha: f32,
    /// β (0 overwrites the output).
    pub beta: f32,
}

/// A device with one in-order stream.
pub trait Device {
    /// An f32 allocation.
    type Buf;
    /// A u32 allocation.
    type IBuf;

    /// A zeroed f32 buffer of `n` elements.
    fn alloc(&mut self, n: usize) -> Result<Self::Buf, GpuError>;
    /// A zeroed u32 buffer of `n` elements.
    fn alloc_u32(&mut self, n: usize) -> Result<Self::IBuf, GpuError>;
    /// Elements of a buffer.
    fn len(&self, b: &Self::Buf) -> usize;
    /// Start of an f32 buffer.
    fn ptr(&self, b: &Self::Buf) -> DPtr;
    /// Start of a u32 buffer.
    fn iptr(&self, b: &Self::IBuf) -> DPtr;

    /// Host → device (ordered on the stream; `src` may be reused on return).
    fn upload(&mut self, dst: DPtr, src: &[f32]) -> Result<(), GpuError>;
    /// Host → device, u32.
    fn upload_u32(&mut self, dst: DPtr, src: &[u32]) -> Result<(), GpuError>;
    /// Small host → device copy that does not wait for the device (the
    /// mini-batch indices of a step).
    fn stage_u32(&mut self, dst: DPtr, src: &[u32]) -> Result<(), GpuError>;
    /// Device → host; waits for the stream.
    fn download(&mut self, src: DPtr, dst: &mut [f32]) -> Result<(), GpuError>;
    /// Device → host, u32; waits for the stream.
    fn download_u32(&mut self, src: DPtr, dst: &mut [u32]) -> Result<(), GpuError>;
    /// Device → device copy of `n` f32.
    fn copy(&mut self, dst: DPtr, src: DPtr, n: usize) -> Result<(), GpuError>;
    /// Sets `n` u32 to `value`.
    fn fill_u32(&mut self, dst: DPtr, value: u32, n: usize) -> Result<(), GpuError>;
    /// Waits for everything enqueued.
    fn synchronize(&mut self) -> Result<(), GpuError>;

    /// A row-major SGEMM.
    fn gemm(&mut self, g: &GemmOp) -> Result<(), GpuError>;
    /// Launches `kernel` with `args` (in the order of its CUDA signature).
    fn launch(&mut self, kernel: Kernel, cfg: Launch, args: &[Arg]) -> Result<(), GpuError>;

    /// Whether [`Device::conv`] runs convolutions natively (cuDNN). When
    /// it does not, the objective keeps a scratch buffer for the im2col +
    /// GEMM path of [`crate::conv`].
    fn native_conv(&self) -> bool {
        false
    }

    /// Runs `op` natively and returns `true`, or returns `false` when the
    /// device has no native convolutions (the caller then runs the im2col
    /// + GEMM path).
    fn conv(&mut self, op: &ConvOp) -> Result<bool, GpuError> {
        let _ = op;
        Ok(false)
    }
}
