//! Typed launches of the kernels in `gpu/kernels/`: one function per
//! kernel, building its arguments in the order of its CUDA signature; the
//! launch configuration is the one the kernel table gives for the size of
//! the work ([`Kernel::config`]).

use crate::device::{Arg, DPtr, Device, GemmOp};
use crate::error::GpuError;
use crate::kernels::Kernel;
use crate::launch::Launch;
use fdgr_kernel::optim::{OptElem, Rule};
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

/// Launches `k` with the configuration of its table shape for `size`, or
/// nothing when there is no work; returns the configuration used.
fn launch<D: Device>(
    d: &mut D,
    k: Kernel,
    size: u64,
    args: &[Arg],
) -> Result<Option<Launch>, GpuError> {
    let Some(cfg) = k.config(size) else {
        return Ok(None);
    };
    d.launch(k, cfg, args)?;
    Ok(Some(cfg))
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
    let args = [
        Arg::Ptr(z),
        Arg::Ptr(bias),
        Arg::U64(rows as u64),
        Arg::U32(u32_of("layer width", cols)?),
        Arg::I32(act_code(act)),
    ];
    launch(d, Kernel::BiasAct, (rows * cols) as u64, &args).map(drop)
}

/// act::act_backward (nothing for the identity, as in the kernel).
pub fn act_backward<D: Device>(d: &mut D, delta: DPtr, a: DPtr, n: usize, act: Act) -> R {
    if act == Act::Identity {
        return Ok(());
    }
    let args = [
        Arg::Ptr(delta),
        Arg::Ptr(a),
        Arg::U64(n as u64),
        Arg::I32(act_code(act)),
    ];
    launch(d, Kernel::ActBackward, n as u64, &args).map(drop)
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
    let args = [
        Arg::Ptr(rz),
        Arg::Ptr(ra),
        Arg::Ptr(vb),
        Arg::Ptr(a),
        Arg::U64(rows as u64),
        Arg::U32(u32_of("layer width", cols)?),
        Arg::I32(act_code(act)),
    ];
    launch(d, Kernel::RBiasAct, (rows * cols) as u64, &args).map(drop)
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
    let args = [
        Arg::Ptr(rd),
        Arg::Ptr(rz),
        Arg::Ptr(a),
        Arg::Ptr(dz),
        Arg::U64(n as u64),
        Arg::I32(act_code(act)),
    ];
    launch(d, Kernel::RActBackward, n as u64, &args).map(drop)
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
    let args = [
        Arg::Ptr(out),
        Arg::Ptr(m),
        Arg::U32(u32_of("batch", rows)?),
        Arg::U32(cols as u32),
        Arg::F32(alpha),
        Arg::F32(beta),
    ];
    launch(d, Kernel::ColSum, cols as u64, &args).map(drop)
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
    let args = [
        Arg::I32(loss_code(loss)),
        Arg::Ptr(out),
        Arg::Ptr(labels),
        Arg::U32(rows32),
        Arg::U32(u32_of("outputs", k)?),
        opt(delta),
        Arg::Ptr(row_loss),
    ];
    if launch(d, Kernel::LossRows, rows as u64, &args)?.is_none() {
        return Ok(());
    }
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
    launch(d, Kernel::ReduceSum, n as u64, &args).map(drop)
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
    let args = [
        Arg::I32(loss_code(loss)),
        Arg::Ptr(out),
        Arg::U32(rows32),
        Arg::U32(u32_of("outputs", k)?),
        Arg::Ptr(r),
        Arg::Ptr(h),
    ];
    launch(d, Kernel::LossHvp, rows as u64, &args).map(drop)
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
    let args = [
        Arg::Ptr(out),
        Arg::Ptr(labels),
        Arg::U32(rows32),
        Arg::U32(u32_of("outputs", k)?),
        Arg::Ptr(count),
    ];
    launch(d, Kernel::CountCorrect, rows as u64, &args).map(drop)
}

/// vecops::axpy.
pub fn axpy<D: Device>(d: &mut D, y: DPtr, a: f32, x: DPtr, n: usize) -> R {
    let args = [Arg::Ptr(y), Arg::F32(a), Arg::Ptr(x), Arg::U64(n as u64)];
    launch(d, Kernel::Axpy, n as u64, &args).map(drop)
}

/// vecops::waxpy.
pub fn waxpy<D: Device>(d: &mut D, w: DPtr, x: DPtr, a: f32, y: DPtr, n: usize) -> R {
    let args = [
        Arg::Ptr(w),
        Arg::Ptr(x),
        Arg::F32(a),
        Arg::Ptr(y),
        Arg::U64(n as u64),
    ];
    launch(d, Kernel::Waxpy, n as u64, &args).map(drop)
}

/// vecops::scale (a = 1 leaves x untouched, as in the kernel).
pub fn scale<D: Device>(d: &mut D, x: DPtr, a: f32, n: usize) -> R {
    if a == 1.0 {
        return Ok(());
    }
    let args = [Arg::Ptr(x), Arg::F32(a), Arg::U64(n as u64)];
    launch(d, Kernel::Scale, n as u64, &args).map(drop)
}

/// vecops::dot into `*out`, using `partials` (launch::DOT_BLOCKS scalars).
pub fn dot<D: Device>(d: &mut D, x: DPtr, y: DPtr, n: usize, partials: DPtr, out: DPtr) -> R {
    let args = [
        Arg::Ptr(x),
        Arg::Ptr(y),
        Arg::U64(n as u64),
        Arg::Ptr(partials),
    ];
    // empty vectors: no partial sums, dot = 0
    let blocks = launch(d, Kernel::DotPartial, n as u64, &args)?.map_or(0, |c| c.grid.0);
    reduce_sum(d, partials, blocks, 1.0, false, out)
}

/// Sets `*flag = 1` if x (or `*scalar`) has a non-finite entry; `*flag`
/// must be 0 before.
pub fn nonfinite<D: Device>(d: &mut D, x: DPtr, n: usize, scalar: Option<DPtr>, flag: DPtr) -> R {
    let args = [Arg::Ptr(x), Arg::U64(n as u64), opt(scalar), Arg::Ptr(flag)];
    // at least one thread, for the scalar
    launch(d, Kernel::NonFinite, (n as u64).max(1), &args).map(drop)
}

/// The code of an optimizer rule (common.cuh: RULE_*).
pub fn rule_code(r: Rule) -> i32 {
    match r {
        Rule::Sgd => 0,
        Rule::Adam => 1,
        Rule::AdamW => 2,
    }
}

/// optim::update_slices over the vectors (state `s0`, `s1`); skipped when
/// `skip` flags are set.
#[allow(clippy::too_many_arguments)]
pub fn opt_update<D: Device>(
    d: &mut D,
    theta: DPtr,
    dir: DPtr,
    s0: Option<DPtr>,
    s1: Option<DPtr>,
    n: usize,
    h: &OptElem<f32>,
    skip: Option<DPtr>,
) -> R {
    let args = [
        Arg::Ptr(theta),
        Arg::Ptr(dir),
        opt(s0),
        opt(s1),
        Arg::U64(n as u64),
        Arg::I32(rule_code(h.rule)),
        Arg::F32(h.lr),
        Arg::F32(h.momentum),
        Arg::I32(i32::from(h.nesterov)),
        Arg::F32(h.weight_decay),
        Arg::I32(i32::from(h.first)),
        Arg::F32(h.beta2),
        Arg::F32(h.eps),
        Arg::F32(h.one_minus_beta1),
        Arg::F32(h.one_minus_beta2),
        Arg::F32(h.step_size),
        Arg::F32(h.bc2_sqrt),
        Arg::F32(h.decay),
        opt(skip),
    ];
    launch(d, Kernel::OptUpdate, n as u64, &args).map(drop)
}

/// The deferred-step bookkeeping (optim.cu: commit_step).
pub fn commit_step<D: Device>(d: &mut D, flags: DPtr, step: u64) -> R {
    let args = [
        Arg::Ptr(flags),
        Arg::U32(step as u32),
        Arg::U32((step >> 32) as u32),
    ];
    launch(d, Kernel::CommitStep, 1, &args).map(drop)
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
    let args = [
        Arg::Ptr(x),
        Arg::Ptr(labels),
        Arg::Ptr(idx),
        Arg::U32(u32_of("batch", rows)?),
        Arg::U32(u32_of("inputs", n0)?),
        Arg::Ptr(xb),
        Arg::Ptr(yb),
    ];
    launch(d, Kernel::GatherRows, (rows * n0) as u64, &args).map(drop)
}
