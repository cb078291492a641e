//! Convolutions on cuDNN (cudarc's `cudnn` feature, loaded at run time
//! like the driver, NVRTC and cuBLAS). Everything that touches cuDNN is in
//! this file: [`CudnnConv::open`] returns `None` when libcudnn cannot be
//! loaded (then the objective runs the im2col + cuBLAS path of
//! [`crate::conv`], and the start-up line says so), and [`CudnnConv::run`]
//! runs one [`ConvOp`] on raw device addresses of the one stream.
//!
//! Per shape (the kernel's [`ConvGeom`] and the product), the descriptors
//! and the algorithm are chosen once (cuDNN's heuristics,
//! `cudnnGet…Algorithm_v7`, keeping the first deterministic algorithm that
//! fits the math type) and cached; one workspace, grown to the largest any
//! cached shape needs, is shared (the stream runs one product at a time).
//! Math: strict FP32 (`CUDNN_FMA_MATH`) for [`Precision::F32`], tensor
//! cores (`CUDNN_DEFAULT_MATH`, TF32 on Ampere and later) otherwise.
//! Grouped and depthwise convolutions use the group count of the
//! descriptor.
//!
//! Nothing here can run without a GPU: it is compiled and checked by
//! `cargo clippy`, and exercised by `gpu/check.sh` on a GPU machine.

use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::Arc;

use cudarc::cudnn::{result as cr, sys};
use cudarc::driver::{CudaSlice, CudaStream, DevicePtr};
use fdgr_kernel::serial::ConvGeom;

use crate::device::{ConvKind, ConvOp, DPtr};
use crate::error::GpuError;
use crate::Precision;

fn err(what: &str, e: impl std::fmt::Display) -> GpuError {
    GpuError::Cuda(format!("cuDNN {what}: {e}"))
}

/// The algorithm of one kind of product.
#[derive(Clone, Copy)]
enum Algo {
    Fwd(sys::cudnnConvolutionFwdAlgo_t),
    Data(sys::cudnnConvolutionBwdDataAlgo_t),
    Filter(sys::cudnnConvolutionBwdFilterAlgo_t),
}

/// The descriptors and algorithm of one (shape, product).
struct Plan {
    x: sys::cudnnTensorDescriptor_t,
    y: sys::cudnnTensorDescriptor_t,
    w: sys::cudnnFilterDescriptor_t,
    conv: sys::cudnnConvolutionDescriptor_t,
    algo: Algo,
    ws_bytes: usize,
}

impl Drop for Plan {
    fn drop(&mut self) {
        // SAFETY: created by this plan and destroyed once, here.
        unsafe {
            let _ = cr::destroy_tensor_descriptor(self.x);
            let _ = cr::destroy_tensor_descriptor(self.y);
            let _ = cr::destroy_filter_descriptor(self.w);
            let _ = cr::destroy_convolution_descriptor(self.conv);
        }
    }
}

/// cuDNN convolutions on one stream.
pub struct CudnnConv {
    handle: sys::cudnnHandle_t,
    stream: Arc<CudaStream>,
    math: sys::cudnnMathType_t,
    plans: HashMap<(u8, ConvGeom), Plan>,
    ws: Option<CudaSlice<u8>>,
    version: usize,
}

impl Drop for CudnnConv {
    fn drop(&mut self) {
        self.plans.clear();
        // SAFETY: the handle was created in `open` and is destroyed once.
        unsafe {
            let _ = cr::destroy_handle(self.handle);
        }
    }
}

fn i32_of(what: &str, v: usize) -> Result<i32, GpuError> {
    i32::try_from(v)
        .map_err(|_| GpuError::Input(format!("{what} = {v} exceeds cuDNN's 32-bit sizes")))
}

fn kind_code(k: ConvKind) -> u8 {
    match k {
        ConvKind::Forward => 0,
        ConvKind::BackwardData => 1,
        ConvKind::BackwardFilter => 2,
    }
}

impl CudnnConv {
    /// cuDNN on `stream`, or `None` when libcudnn cannot be loaded (or
    /// refuses to start: the reason is returned beside it).
    pub fn open(stream: Arc<CudaStream>, precision: Precision) -> (Option<CudnnConv>, String) {
        // SAFETY: only tries dlopen on cudarc's candidate names.
        if !unsafe { sys::is_culib_present() } {
            return (None, "libcudnn not found".into());
        }
        let opened = crate::error::guarded("cuDNN initialisation", || {
            let handle = cr::create_handle().map_err(|e| err("handle", e))?;
            // SAFETY: a valid handle and the context's stream.
            unsafe { cr::set_stream(handle, stream.cu_stream() as sys::cudaStream_t) }
                .map_err(|e| err("stream", e))?;
            Ok(handle)
        });
        match opened {
            Ok(handle) => {
                let math = match precision {
                    Precision::F32 => sys::cudnnMathType_t::CUDNN_FMA_MATH,
                    Precision::Tf32 | Precision::Bf16 => sys::cudnnMathType_t::CUDNN_DEFAULT_MATH,
                };
                let version = cr::get_version();
                let c = CudnnConv {
                    handle,
                    stream,
                    math,
                    plans: HashMap::new(),
                    ws: None,
                    version,
                };
                (Some(c), String::new())
            }
            Err(e) => (None, e.to_string()),
        }
    }

    /// `cuDNN 9.x.y`.
    pub fn describe(&self) -> String {
        let v = self.version;
        format!("cuDNN {}.{}.{}", v / 10000, (v / 100) % 100, v % 100)
    }

    fn plan(&mut self, kind: ConvKind, g: &ConvGeom) -> Result<&Plan, GpuError> {
        let key = (kind_code(kind), *g);
        if !self.plans.contains_key(&key) {
            let p = self.make_plan(kind, g)?;
            if p.ws_bytes > self.ws.as_ref().map_or(0, |w| w.len()) {
                self.ws = Some(
                    self.stream
                        .alloc_zeros::<u8>(p.ws_bytes)
                        .map_err(|e| err("workspace", e))?,
                );
            }
            self.plans.insert(key, p);
        }
        self.plans
            .get(&key)
            .ok_or_else(|| GpuError::Cuda("cuDNN plan cache".into()))
    }

    fn make_plan(&self, kind: ConvKind, g: &ConvGeom) -> Result<Plan, GpuError> {
        let mut p = self.descriptors(g)?;
        // SAFETY: the descriptors are the plan's own, set by `descriptors`.
        unsafe { self.choose_algo(kind, &mut p)? };
        Ok(p)
    }

    /// The descriptors of `g`'s tensors, filter and convolution (the
    /// algorithm still the default).
    fn descriptors(&self, g: &ConvGeom) -> Result<Plan, GpuError> {
        use sys::cudnnDataType_t::CUDNN_DATA_FLOAT as F;
        use sys::cudnnTensorFormat_t::CUDNN_TENSOR_NCHW as NCHW;
        let n = i32_of("batch", g.n)?;
        let dims_x = [
            n,
            i32_of("channels", g.c)?,
            i32_of("height", g.h)?,
            i32_of("width", g.w)?,
        ];
        let dims_y = [
            n,
            i32_of("channels", g.k_out)?,
            i32_of("height", g.oh)?,
            i32_of("width", g.ow)?,
        ];
        let k = i32_of("kernel", g.k)?;
        let dims_w = [
            i32_of("channels", g.k_out)?,
            i32_of("channels", g.cg())?,
            k,
            k,
        ];
        let (pad, stride) = (i32_of("padding", g.pad)?, i32_of("stride", g.stride)?);
        let groups = i32_of("groups", g.groups)?;
        // SAFETY: descriptors are created here, set once, owned by the plan
        // (destroyed in its Drop, also when a later call fails).
        unsafe {
            let p = Plan {
                x: cr::create_tensor_descriptor().map_err(|e| err("descriptor", e))?,
                y: cr::create_tensor_descriptor().map_err(|e| err("descriptor", e))?,
                w: cr::create_filter_descriptor().map_err(|e| err("descriptor", e))?,
                conv: cr::create_convolution_descriptor().map_err(|e| err("descriptor", e))?,
                algo: Algo::Fwd(
                    sys::cudnnConvolutionFwdAlgo_t::CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM,
                ),
                ws_bytes: 0,
            };
            cr::set_tensor4d_descriptor(p.x, NCHW, F, dims_x).map_err(|e| err("x", e))?;
            cr::set_tensor4d_descriptor(p.y, NCHW, F, dims_y).map_err(|e| err("y", e))?;
            cr::set_filter4d_descriptor(p.w, F, NCHW, dims_w).map_err(|e| err("w", e))?;
            cr::set_convolution2d_descriptor(
                p.conv,
                pad,
                pad,
                stride,
                stride,
                1,
                1,
                sys::cudnnConvolutionMode_t::CUDNN_CROSS_CORRELATION,
                F,
            )
            .map_err(|e| err("convolution", e))?;
            cr::set_convolution_group_count(p.conv, groups).map_err(|e| err("groups", e))?;
            cr::set_convolution_math_type(p.conv, self.math).map_err(|e| err("math", e))?;
            Ok(p)
        }
    }

    /// Picks the fastest deterministic algorithm for `kind` and its
    /// workspace size.
    ///
    /// # Safety
    /// `p`'s descriptors are live and set.
    unsafe fn choose_algo(&self, kind: ConvKind, p: &mut Plan) -> Result<(), GpuError> {
        // SAFETY: the caller's descriptors; the out-arrays are N long.
        unsafe {
            let h = self.handle;
            const N: usize = 16;
            let mut got = 0i32;
            let ok = sys::cudnnStatus_t::CUDNN_STATUS_SUCCESS;
            let det = sys::cudnnDeterminism_t::CUDNN_DETERMINISTIC;
            match kind {
                ConvKind::Forward => {
                    let mut perf = [std::mem::zeroed::<sys::cudnnConvolutionFwdAlgoPerf_t>(); N];
                    cr::get_convolution_forward_algorithm(
                        h,
                        p.x,
                        p.w,
                        p.conv,
                        p.y,
                        N as i32,
                        &mut got,
                        perf.as_mut_ptr(),
                    )
                    .map_err(|e| err("forward algorithm", e))?;
                    let best = perf[..got.max(0) as usize]
                        .iter()
                        .find(|r| r.status == ok && r.determinism == det)
                        .ok_or_else(|| err("forward algorithm", "none applies"))?;
                    p.algo = Algo::Fwd(best.algo);
                    p.ws_bytes = cr::get_convolution_forward_workspace_size(
                        h, p.x, p.w, p.conv, p.y, best.algo,
                    )
                    .map_err(|e| err("forward workspace", e))?;
                }
                ConvKind::BackwardData => {
                    let mut perf =
                        [std::mem::zeroed::<sys::cudnnConvolutionBwdDataAlgoPerf_t>(); N];
                    cr::get_convolution_backward_data_algorithm(
                        h,
                        p.w,
                        p.y,
                        p.conv,
                        p.x,
                        N as i32,
                        &mut got,
                        perf.as_mut_ptr(),
                    )
                    .map_err(|e| err("backward-data algorithm", e))?;
                    let best = perf[..got.max(0) as usize]
                        .iter()
                        .find(|r| r.status == ok && r.determinism == det)
                        .ok_or_else(|| err("backward-data algorithm", "none applies"))?;
                    p.algo = Algo::Data(best.algo);
                    p.ws_bytes = cr::get_convolution_backward_data_workspace_size(
                        h, p.w, p.y, p.conv, p.x, best.algo,
                    )
                    .map_err(|e| err("backward-data workspace", e))?;
                }
                ConvKind::BackwardFilter => {
                    let mut perf =
                        [std::mem::zeroed::<sys::cudnnConvolutionBwdFilterAlgoPerf_t>(); N];
                    cr::get_convolution_backward_filter_algorithm(
                        h,
                        p.x,
                        p.y,
                        p.conv,
                        p.w,
                        N as i32,
                        &mut got,
                        perf.as_mut_ptr(),
                    )
                    .map_err(|e| err("backward-filter algorithm", e))?;
                    let best = perf[..got.max(0) as usize]
                        .iter()
                        .find(|r| r.status == ok && r.determinism == det)
                        .ok_or_else(|| err("backward-filter algorithm", "none applies"))?;
                    p.algo = Algo::Filter(best.algo);
                    p.ws_bytes = cr::get_convolution_backward_filter_workspace_size(
                        h, p.x, p.y, p.conv, p.w, best.algo,
                    )
                    .map_err(|e| err("backward-filter workspace", e))?;
                }
            }
            Ok(())
        }
    }

    /// Runs `op` (its pointers are device addresses: `addr` turns a
    /// [`DPtr`] into one).
    pub fn run(&mut self, op: &ConvOp, addr: impl Fn(DPtr) -> u64) -> Result<(), GpuError> {
        let handle = self.handle;
        let (alpha, beta) = (op.alpha, op.beta);
        let (a, b, out) = (addr(op.a), addr(op.b), addr(op.out));
        let plan = self.plan(op.kind, &op.g)?;
        let (algo, ws_bytes) = (plan.algo, plan.ws_bytes);
        let (x, y, w, conv) = (plan.x, plan.y, plan.w, plan.conv);
        let ws_ptr = match &self.ws {
            Some(ws) if ws_bytes > 0 => {
                let (p, _g) = ws.device_ptr(&self.stream);
                p as *mut c_void
            }
            _ => std::ptr::null_mut(),
        };
        let al = &alpha as *const f32 as *const c_void;
        let be = &beta as *const f32 as *const c_void;
        // SAFETY: the operands lie in live device allocations of the sizes
        // of `op.g` (the objective's layout, checked by GpuOps); the
        // descriptors and workspace belong to this plan; all on one stream.
        unsafe {
            match algo {
                Algo::Fwd(a_) => cr::convolution_forward(
                    handle,
                    al,
                    x,
                    a as *const c_void,
                    w,
                    b as *const c_void,
                    conv,
                    a_,
                    ws_ptr,
                    ws_bytes,
                    be,
                    y,
                    out as *mut c_void,
                ),
                Algo::Data(a_) => cr::convolution_backward_data(
                    handle,
                    al,
                    w,
                    b as *const c_void,
                    y,
                    a as *const c_void,
                    conv,
                    a_,
                    ws_ptr,
                    ws_bytes,
                    be,
                    x,
                    out as *mut c_void,
                ),
                Algo::Filter(a_) => cr::convolution_backward_filter(
                    handle,
                    al,
                    x,
                    a as *const c_void,
                    y,
                    b as *const c_void,
                    conv,
                    a_,
                    ws_ptr,
                    ws_bytes,
                    be,
                    w,
                    out as *mut c_void,
                ),
            }
        }
        .map_err(|e| err("convolution", e))
    }
}
