//! Data-parallel training across GPUs over NCCL (cudarc's `nccl`, loaded
//! at run time like the rest of CUDA): one process per GPU, each holding
//! the same θ and training on its slice of every global batch.
//!
//! [`Nccl`] is the kernel's [`AllReduce`] over device vectors: the
//! gradient (or direction) vector is summed in place on the device and
//! the step's two scalars (weighted loss, error flag) in the same NCCL
//! group, so each gradient evaluation is one grouped collective. The
//! methods run unchanged on [`fdgr_kernel::dist::DataParallel`] around the
//! device objective ([`GpuTrainer::step_data_parallel`]).
//!
//! The processes find each other through a unique id that one of them
//! makes ([`unique_id`]) and the others receive over the host's channel
//! (MPI under `mpirun`, the launcher of `fdgr train --gpus N`).
//!
//! Built and compiled everywhere; not run here (no GPU where it was
//! written).

use std::sync::Arc;

use cudarc::driver::{CudaSlice, CudaStream};
use cudarc::nccl::{group_end, group_start, Comm, Id, ReduceOp};
use fdgr_kernel::dist::{AllReduce, AscentMode, DataParallel};
use fdgr_kernel::method::Buffers;
use fdgr_kernel::{Error, Method, Optim, SgdState};

use crate::error::guarded;
use crate::error::GpuError;
use crate::trainer::CropDraw;
use crate::GpuTrainer;

fn nccl_err(what: &str, e: impl std::fmt::Debug) -> GpuError {
    GpuError::Cuda(format!("NCCL {what}: {e:?}"))
}

/// Whether the NCCL library (`libnccl.so`) can be loaded here.
pub fn available() -> bool {
    // SAFETY: only tries to open the library by its usual names.
    unsafe { cudarc::nccl::sys::is_culib_present() }
}

fn need_library() -> Result<(), GpuError> {
    if available() {
        Ok(())
    } else {
        Err(GpuError::MissingLibrary(
            "NCCL (libnccl.so.2) not found: install NCCL (e.g. the nvidia-nccl-cu12 wheel or \
             the libnccl2 package) for multi-GPU training"
                .into(),
        ))
    }
}

/// A new NCCL unique id (made by one process, sent to the others), as
/// its 128 bytes.
pub fn unique_id() -> Result<[u8; 128], GpuError> {
    need_library()?;
    guarded("NCCL unique id", || {
        let id = Id::new().map_err(|e| nccl_err("unique id", e))?;
        let mut out = [0u8; 128];
        for (o, &c) in out.iter_mut().zip(id.internal().iter()) {
            *o = c as u8;
        }
        Ok(out)
    })
}

/// One process's NCCL communicator, on its GPU's stream.
pub struct Nccl {
    comm: Comm,
    stream: Arc<CudaStream>,
    scalars: CudaSlice<f32>,
}

impl Nccl {
    /// Joins the communicator `id` as rank `rank` of `size`, on the
    /// device of `trainer` (blocks until every rank has joined).
    pub fn new(
        trainer: &mut GpuTrainer,
        rank: usize,
        size: usize,
        id: &[u8; 128],
    ) -> Result<Nccl, GpuError> {
        need_library()?;
        let stream = trainer.cuda().stream().clone();
        guarded("NCCL communicator", || {
            let mut internal = [0 as core::ffi::c_char; 128];
            for (i, &b) in internal.iter_mut().zip(id.iter()) {
                *i = b as core::ffi::c_char;
            }
            let comm = Comm::from_rank(stream.clone(), rank, size, Id::uninit(internal))
                .map_err(|e| nccl_err("init", e))?;
            let scalars = stream
                .alloc_zeros::<f32>(4)
                .map_err(|e| nccl_err("scalar buffer", e))?;
            Ok(Nccl {
                comm,
                stream,
                scalars,
            })
        })
    }

    /// This process's rank.
    pub fn rank(&self) -> usize {
        self.comm.rank()
    }

    /// Number of processes.
    pub fn size(&self) -> usize {
        self.comm.world_size()
    }

    fn sum(&mut self, v: &mut CudaSlice<f32>, scalars: &mut [f32]) -> Result<(), GpuError> {
        if scalars.len() > 4 {
            return Err(GpuError::Input(format!(
                "{} scalars in one all-reduce (at most 4)",
                scalars.len()
            )));
        }
        let mut s = self
            .scalars
            .try_slice_mut(0..scalars.len())
            .ok_or_else(|| GpuError::Input("scalar buffer".into()))?;
        self.stream
            .memcpy_htod(scalars, &mut s)
            .map_err(|e| nccl_err("scalars up", e))?;
        group_start().map_err(|e| nccl_err("group start", e))?;
        let a = self.comm.all_reduce_in_place(v, &ReduceOp::Sum);
        let b = self.comm.all_reduce_in_place(&mut s, &ReduceOp::Sum);
        group_end().map_err(|e| nccl_err("group end", e))?;
        a.map_err(|e| nccl_err("all-reduce", e))?;
        b.map_err(|e| nccl_err("all-reduce", e))?;
        self.stream
            .memcpy_dtoh(&s, scalars)
            .map_err(|e| nccl_err("scalars down", e))?;
        self.stream
            .synchronize()
            .map_err(|e| nccl_err("synchronize", e))
    }
}

impl AllReduce<f32, CudaSlice<f32>> for Nccl {
    fn all_reduce(&mut self, v: &mut CudaSlice<f32>, scalars: &mut [f32]) -> Result<(), Error> {
        let r = guarded("NCCL all-reduce", || self.sum(v, scalars));
        r.map_err(|e| {
            eprintln!("rank {}: {e}", self.rank());
            Error::Peer
        })
    }
}

impl GpuTrainer {
    /// One data-parallel step: this process's `indices` (its slice of the
    /// global batch, a share `weight` of it; `crops`: their augmentation,
    /// as [`crate::trainer::Trainer::step_aug`] takes it), the gradients summed over
    /// the processes of `nccl` (see [`fdgr_kernel::dist`]), the kernel's
    /// own `step_with` with the step options `x` (clipping, amortized GR:
    /// [`GpuTrainer::set_amortized`]). `root` on exactly one process. Waits for the device;
    /// returns the global batch's loss.
    #[allow(clippy::too_many_arguments)]
    pub fn step_data_parallel(
        &mut self,
        indices: &[u32],
        crops: Option<&[CropDraw]>,
        method: &Method<f32>,
        opt: &(impl Optim<f32> + ?Sized),
        x: &fdgr_kernel::StepOptions<f32>,
        state: &mut SgdState,
        lr: f32,
        nccl: &mut Nccl,
        weight: f32,
        root: bool,
        mode: AscentMode,
    ) -> Result<f32, GpuError> {
        let t = &mut self.t;
        if t.pending {
            t.finish(state)?;
        }
        t.ensure(method, opt)?;
        if method.needs_hvp() && mode == AscentMode::Global && t.point2.is_none() {
            // H·g of db at the global g
            let p = t.param_count();
            t.point2 = Some(crate::device::Device::alloc(t.dev(), p)?);
        }
        t.load_batch(indices, crops)?;
        t.obj.memory_mut().begin_step(false);
        // db has no perturbed points: its H·g goes to the second one
        let (point2, scratch) = if method.needs_hvp() {
            (None, t.point2.as_mut())
        } else {
            (t.point2.as_mut(), None)
        };
        let bufs = Buffers {
            theta: &mut t.theta,
            dir: &mut t.dir,
            state: {
                let [a, b] = &mut t.opt_state;
                [a.as_mut(), b.as_mut()]
            },
            point: t.point.as_mut(),
            point2,
            correction: t.correction.as_mut(),
        };
        let mut o = DataParallel::new(&mut t.obj, nccl, weight, root, mode, scratch);
        let r = fdgr_kernel::step_with(&mut o, method, opt, state, lr, x, bufs);
        if let Some(e) = t.obj.memory_mut().take_error() {
            return Err(e);
        }
        r.map_err(GpuError::from)
    }
}
