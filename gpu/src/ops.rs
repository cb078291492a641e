//! Typed launches of the kernels in `gpu/kernels/`: one function per
//! kernel, building its arguments in the order of its CUDA signature and
//! its launch configuration.

use crate::device::{Arg, DPtr, Device, GemmOp};
use crate::error::GpuError;
use crate::kernels::Kernel;
use crate::launch::Launch;
use fdgr_kernel::optim::SgdElem;
use fdgr_kernel::{Act, Loss};

type R = Result<(), GpuError>;

/// The activation code of common.cuh.
pub fn act_code(act: Act) -> i32 {
    match act {
        Act::Identity => 0,
        Act::Relu => 1,
        Act::Tanh => 2,
        Act::Sigmoid => 3,
    }
}

/// The loss code of common.cuh.
pub fn loss_code(loss: Loss) -> i32 {
    match loss {
        Loss::SoftmaxCe => 0,
        Loss::Mse => 1,
    }
}

fn u32_of(what: &str, n: usize) -> Result<u32, GpuError> {
    u32::try_from(n).map_err(|_| GpuError::Input(format!("{what} = {n} exceeds 2^32 - 1")))
}

fn opt(p: Option<DPtr>) -> Arg {
    p.map_or(Arg::Null, Arg::Ptr)
}

/// C ← α·op(A)·op(B) + β·C, row-major.
#[allow(clippy::too_many_arguments)]
pub fn gemm<D: Device>(
    d: &mut D,
    ta: bool,
    tb: bool,
    m: usize,
    n: usize,
    k: usize,
    alpha: f32,
    a: DPtr,
    b: DPtr,
    beta: f32,
    c: DPtr,
) -> R {
    d.gemm(&GemmOp {
        ta,
        tb,
        m,
        n,
        k,
        alpha,
        a,
        b,
        beta,
        c,
    })
}

/// act::bias_act on `rows × cols` at `z`.
pub fn bias_act<D: Device>(
    d: &mut D,
    z: DPtr,
    bias: DPtr,
    rows: usize,
    cols: usize,
    act: Act,
) -> R {
    let Some(cfg) = Launch::elementwise((rows * cols) as u64) else {
        return Ok(());
    };
    let args = [
        Arg::Ptr(z),
        Arg::Ptr(bias),
        Arg::U64(rows as u64),
        Arg::U32(u32_of("layer width", cols)?),
        Arg::I32(act_code(act)),
    ];
    d.launch(Kernel::BiasAct, cfg, &args)
}

/// act::act_backward (nothing for the identity, as in the kernel).
pub fn act_backward<D: Device>(d: &mut D, delta: DPtr, a: DPtr, n: usize, act: Act) -> R {
    if act == Act::Identity {
        return Ok(());
    }
    let Some(cfg) = Launch::elementwise(n as u64) else {
        return Ok(());
    };
    let args = [
        Arg::Ptr(delta),
        Arg::Ptr(a),
        Arg::U64(n as u64),
        Arg::I32(act_code(act)),
    ];
    d.launch(Kernel::ActBackward, cfg, &args)
}

/// act::bias_add then act::r_act, fused.
#[allow(clippy::too_many_arguments)]
pub fn r_bias_act<D: Device>(
    d: &mut D,
    rz: DPtr,
    ra: DPtr,
    vb: DPtr,
    a: DPtr,
    rows: usize,
    cols: usize,
    act: Act,
) -> R {
    let Some(cfg) = Launch::elementwise((rows * cols) as u64) else {
        return Ok(());
    };
    let args = [
        Arg::Ptr(rz),
        Arg::Ptr(ra),
        Arg::Ptr(vb),
        Arg::Ptr(a),
        Arg::U64(rows as u64),
        Arg::U32(u32_of("layer width", cols)?),
        Arg::I32(act_code(act)),
    ];
    d.launch(Kernel::RBiasAct, cfg, &args)
}

/// act::r_act_backward (nothing for the identity, as in the kernel).
pub fn r_act_backward<D: Device>(
    d: &mut D,
    rd: DPtr,
    rz: DPtr,
    a: DPtr,
    dz: DPtr,
    n: usize,
    act: Act,
) -> R {
    if act == Act::Identity {
        return Ok(());
    }
    let Some(cfg) = Launch::elementwise(n as u64) else {
        return Ok(());
    };
    let args = [
        Arg::Ptr(rd),
        Arg::Ptr(rz),
        Arg::Ptr(a),
        Arg::Ptr(dz),
        Arg::U64(n as u64),
        Arg::I32(act_code(act)),
    ];
    d.launch(Kernel::RActBackward, cfg, &args)
}

/// act::col_sum: out ← β·out + α·Σ_rows m.
#[allow(clippy::too_many_arguments)]
pub fn col_sum<D: Device>(
    d: &mut D,
    out: DPtr,
    m: DPtr,
    rows: usize,
    cols: usize,
    alpha: f32,
    beta: f32,
) -> R {
    let Some(cfg) = Launch::col_sum(u32_of("layer width", cols)?) else {
        return Ok(());
    };
    let args = [
        Arg::Ptr(out),
        Arg::Ptr(m),
        Arg::U32(u32_of("batch", rows)?),
        Arg::U32(cols as u32),
        Arg::F32(alpha),
        Arg::F32(beta),
    ];
    d.launch(Kernel::ColSum, cfg, &args)
}

/// loss::loss_grad on `rows × k` outputs: per-row terms into `row_loss`,
/// δ into `delta` when given, then `*loss_out = scale·Σ row_loss`
/// (`+ *loss_out` when `accumulate`).
#[allow(clippy::too_many_arguments)]
pub fn loss<D: Device>(
    d: &mut D,
    loss: Loss,
    out: DPtr,
    labels: DPtr,
    rows: usize,
    k: usize,
    delta: Option<DPtr>,
    row_loss: DPtr,
    scale: f32,
    accumulate: bool,
    loss_out: DPtr,
) -> R {
    let rows32 = u32_of("batch", rows)?;
    let Some(cfg) = Launch::per_row(rows32) else {
        return Ok(());
    };
    let args = [
        Arg::I32(loss_code(loss)),
        Arg::Ptr(out),
        Arg::Ptr(labels),
        Arg::U32(rows32),
        Arg::U32(u32_of("outputs", k)?),
        opt(delta),
        Arg::Ptr(row_loss),
    ];
    d.launch(Kernel::LossRows, cfg, &args)?;
    reduce_sum(d, row_loss, rows32, scale, accumulate, loss_out)
}

/// The scale of loss::loss_grad's mean: 1/B (CE) or 1/(B·K) (MSE), as the
/// kernel computes it in f32.
pub fn mean_scale(loss: Loss, rows: usize, k: usize) -> f32 {
    match loss {
        Loss::SoftmaxCe => 1.0f32 / rows as f32,
        Loss::Mse => 1.0f32 / (rows * k) as f32,
    }
}

/// `*out = scale·Σ v[..n]` (+ `*out` when `accumulate`), one block.
pub fn reduce_sum<D: Device>(
    d: &mut D,
    v: DPtr,
    n: u32,
    scale: f32,
    accumulate: bool,
    out: DPtr,
) -> R {
    let args = [
        Arg::Ptr(v),
        Arg::U32(n),
        Arg::F32(scale),
        Arg::I32(i32::from(accumulate)),
        Arg::Ptr(out),
    ];
    d.launch(Kernel::ReduceSum, Launch::one_block(), &args)
}

/// loss::loss_hvp: h ← H_loss·r on `rows × k` outputs.
#[allow(clippy::too_many_arguments)]
pub fn loss_hvp<D: Device>(
    d: &mut D,
    loss: Loss,
    out: DPtr,
    rows: usize,
    k: usize,
    r: DPtr,
    h: DPtr,
) -> R {
    let rows32 = u32_of("batch", rows)?;
    let Some(cfg) = Launch::per_row(rows32) else {
        return Ok(());
    };
    let args = [
        Arg::I32(loss_code(loss)),
        Arg::Ptr(out),
        Arg::U32(rows32),
        Arg::U32(u32_of("outputs", k)?),
        Arg::Ptr(r),
        Arg::Ptr(h),
    ];
    d.launch(Kernel::LossHvp, cfg, &args)
}

/// mlp::correct: `*count += #rows whose arg-max is the label`.
pub fn count_correct<D: Device>(
    d: &mut D,
    out: DPtr,
    labels: DPtr,
    rows: usize,
    k: usize,
    count: DPtr,
) -> R {
    let rows32 = u32_of("batch", rows)?;
    let Some(cfg) = Launch::per_row(rows32) else {
        return Ok(());
    };
    let args = [
        Arg::Ptr(out),
        Arg::Ptr(labels),
        Arg::U32(rows32),
        Arg::U32(u32_of("outputs", k)?),
        Arg::Ptr(count),
    ];
    d.launch(Kernel::CountCorrect, cfg, &args)
}

/// vecops::axpy.
pub fn axpy<D: Device>(d: &mut D, y: DPtr, a: f32, x: DPtr, n: usize) -> R {
    let Some(cfg) = Launch::elementwise(n as u64) else {
        return Ok(());
    };
    d.launch(
        Kernel::Axpy,
        cfg,
        &[Arg::Ptr(y), Arg::F32(a), Arg::Ptr(x), Arg::U64(n as u64)],
    )
}

/// vecops::waxpy.
pub fn waxpy<D: Device>(d: &mut D, w: DPtr, x: DPtr, a: f32, y: DPtr, n: usize) -> R {
    let Some(cfg) = Launch::elementwise(n as u64) else {
        return Ok(());
    };
    d.launch(
        Kernel::Waxpy,
        cfg,
        &[
            Arg::Ptr(w),
            Arg::Ptr(x),
            Arg::F32(a),
            Arg::Ptr(y),
            Arg::U64(n as u64),
        ],
    )
}

/// vecops::scale (a = 1 leaves x untouched, as in the kernel).
pub fn scale<D: Device>(d: &mut D, x: DPtr, a: f32, n: usize) -> R {
    if a == 1.0 {
        return Ok(());
    }
    let Some(cfg) = Launch::elementwise(n as u64) else {
        return Ok(());
    };
    d.launch(
        Kernel::Scale,
        cfg,
        &[Arg::Ptr(x), Arg::F32(a), Arg::U64(n as u64)],
    )
}

/// vecops::dot into `*out`, using `partials` (launch::DOT_BLOCKS scalars).
pub fn dot<D: Device>(d: &mut D, x: DPtr, y: DPtr, n: usize, partials: DPtr, out: DPtr) -> R {
    let Some(cfg) = Launch::dot_partial(n as u64) else {
        // empty vectors: dot = 0
        return reduce_sum(d, partials, 0, 1.0, false, out);
    };
    d.launch(
        Kernel::DotPartial,
        cfg,
        &[
            Arg::Ptr(x),
            Arg::Ptr(y),
            Arg::U64(n as u64),
            Arg::Ptr(partials),
        ],
    )?;
    reduce_sum(d, partials, cfg.grid.0, 1.0, false, out)
}

/// Sets `*flag = 1` if x (or `*scalar`) has a non-finite entry; `*flag`
/// must be 0 before.
pub fn nonfinite<D: Device>(d: &mut D, x: DPtr, n: usize, scalar: Option<DPtr>, flag: DPtr) -> R {
    // at least one thread, for the scalar
    let cfg = Launch::elementwise((n as u64).max(1)).unwrap_or(Launch::single());
    d.launch(
        Kernel::NonFinite,
        cfg,
        &[Arg::Ptr(x), Arg::U64(n as u64), opt(scalar), Arg::Ptr(flag)],
    )
}

/// optim::sgd_elem over the vectors; skipped when `skip` flags are set.
#[allow(clippy::too_many_arguments)]
pub fn sgd_update<D: Device>(
    d: &mut D,
    theta: DPtr,
    dir: DPtr,
    v: Option<DPtr>,
    n: usize,
    h: &SgdElem<f32>,
    skip: Option<DPtr>,
) -> R {
    let Some(cfg) = Launch::elementwise(n as u64) else {
        return Ok(());
    };
    let args = [
        Arg::Ptr(theta),
        Arg::Ptr(dir),
        opt(v),
        Arg::U64(n as u64),
        Arg::F32(h.lr),
        Arg::F32(h.momentum),
        Arg::I32(i32::from(h.nesterov)),
        Arg::F32(h.weight_decay),
        Arg::I32(i32::from(h.first)),
        opt(skip),
    ];
    d.launch(Kernel::SgdUpdate, cfg, &args)
}

/// The deferred-step bookkeeping (optim.cu: commit_step).
pub fn commit_step<D: Device>(d: &mut D, flags: DPtr, step: u64) -> R {
    d.launch(
        Kernel::CommitStep,
        Launch::single(),
        &[
            Arg::Ptr(flags),
            Arg::U32(step as u32),
            Arg::U32((step >> 32) as u32),
        ],
    )
}

/// Gathers rows `idx` of the resident data into the batch buffers.
#[allow(clippy::too_many_arguments)]
pub fn gather_rows<D: Device>(
    d: &mut D,
    x: DPtr,
    labels: DPtr,
    idx: DPtr,
    rows: usize,
    n0: usize,
    xb: DPtr,
    yb: DPtr,
) -> R {
    let Some(cfg) = Launch::elementwise((rows * n0) as u64) else {
        return Ok(());
    };
    let args = [
        Arg::Ptr(x),
        Arg::Ptr(labels),
        Arg::Ptr(idx),
        Arg::U32(u32_of("batch", rows)?),
        Arg::U32(u32_of("inputs", n0)?),
        Arg::Ptr(xb),
        Arg::Ptr(yb),
    ];
    d.launch(Kernel::GatherRows, cfg, &args)
}
