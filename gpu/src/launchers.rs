//! Typed launches of the kernels in `gpu/kernels/`: one function per
//! kernel, building its arguments in the order of its CUDA signature; the
//! launch configuration is the one the kernel table gives for the size of
//! the work ([`Kernel::config`]).

use crate::device::{Arg, DPtr, Device, GemmOp};
use crate::error::GpuError;
use crate::kernels::Kernel;
use crate::launch::Launch;
use fdgr_kernel::optim::{OptElem, Rule};
use fdgr_kernel::serial::{BnGeom, ConvGeom, PoolGeom, PoolKind};
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

/// act::bias_act_chw on an N × C × HW block of `n` values at `z`
/// (nothing without a bias for the identity, as in the kernel).
pub fn bias_act<D: Device>(
    d: &mut D,
    z: DPtr,
    bias: Option<DPtr>,
    n: usize,
    c: usize,
    hw: usize,
    act: Act,
) -> R {
    if bias.is_none() && act == Act::Identity {
        return Ok(());
    }
    let args = [
        Arg::Ptr(z),
        opt(bias),
        Arg::U64(n as u64),
        Arg::U32(u32_of("channels", c)?),
        Arg::U32(u32_of("plane size", hw)?),
        Arg::I32(act_code(act)),
    ];
    launch(d, Kernel::BiasAct, n as u64, &args).map(drop)
}

/// act::act_map: y = σ(x).
pub fn act_map<D: Device>(d: &mut D, y: DPtr, x: DPtr, n: usize, act: Act) -> R {
    let args = [
        Arg::Ptr(y),
        Arg::Ptr(x),
        Arg::U64(n as u64),
        Arg::I32(act_code(act)),
    ];
    launch(d, Kernel::ActMap, n as u64, &args).map(drop)
}

/// act::r_act: R{a} = σ'(a)·R{z}.
pub fn r_act<D: Device>(d: &mut D, ra: DPtr, rz: DPtr, a: DPtr, n: usize, act: Act) -> R {
    let args = [
        Arg::Ptr(ra),
        Arg::Ptr(rz),
        Arg::Ptr(a),
        Arg::U64(n as u64),
        Arg::I32(act_code(act)),
    ];
    launch(d, Kernel::RAct, n as u64, &args).map(drop)
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

/// act::chan_sum: out ← β·out + α·(per-channel sums of an N × C × HW
/// block): `col_sum` for HW = 1, `chan_sum` (one block per channel)
/// otherwise.
#[allow(clippy::too_many_arguments)]
pub fn chan_sum<D: Device>(
    d: &mut D,
    out: DPtr,
    m: DPtr,
    n: usize,
    c: usize,
    hw: usize,
    alpha: f32,
    beta: f32,
) -> R {
    if hw == 1 {
        return col_sum(d, out, m, n, c, alpha, beta);
    }
    let args = [
        Arg::Ptr(out),
        Arg::Ptr(m),
        Arg::U32(u32_of("planes", n * c)?),
        Arg::U32(u32_of("channels", c)?),
        Arg::U32(u32_of("plane size", hw)?),
        Arg::F32(alpha),
        Arg::F32(beta),
    ];
    launch(d, Kernel::ChanSum, c as u64, &args).map(drop)
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

/// vecops::axpby: y ← β·y + α·x (β = 0 overwrites).
pub fn axpby<D: Device>(d: &mut D, y: DPtr, x: DPtr, n: usize, alpha: f32, beta: f32) -> R {
    let args = [
        Arg::Ptr(y),
        Arg::Ptr(x),
        Arg::U64(n as u64),
        Arg::F32(alpha),
        Arg::F32(beta),
    ];
    launch(d, Kernel::Axpby, n as u64, &args).map(drop)
}

/// vecops::add: y ← a + b.
pub fn add<D: Device>(d: &mut D, y: DPtr, a: DPtr, b: DPtr, n: usize) -> R {
    let args = [Arg::Ptr(y), Arg::Ptr(a), Arg::Ptr(b), Arg::U64(n as u64)];
    launch(d, Kernel::Add, n as u64, &args).map(drop)
}

/// dst ← src unless the `skip` flags are set (a deferred step's commit).
pub fn copy_unless<D: Device>(d: &mut D, dst: DPtr, src: DPtr, n: usize, skip: Option<DPtr>) -> R {
    let args = [Arg::Ptr(dst), Arg::Ptr(src), Arg::U64(n as u64), opt(skip)];
    launch(d, Kernel::CopyUnless, n as u64, &args).map(drop)
}

/// Gathers rows `idx` of resident C × H × W images into the batch buffers,
/// each cropped and flipped as `crop` says (conv.cu: gather_crop).
#[allow(clippy::too_many_arguments)]
pub fn gather_crop<D: Device>(
    d: &mut D,
    x: DPtr,
    labels: DPtr,
    idx: DPtr,
    crop: DPtr,
    rows: usize,
    dims: (usize, usize, usize),
    pad: usize,
    fill: Option<DPtr>,
    xb: DPtr,
    yb: DPtr,
) -> R {
    let (c, h, w) = dims;
    let args = [
        Arg::Ptr(x),
        Arg::Ptr(labels),
        Arg::Ptr(idx),
        Arg::Ptr(crop),
        Arg::U32(u32_of("batch", rows)?),
        Arg::U32(u32_of("channels", c)?),
        Arg::U32(u32_of("height", h)?),
        Arg::U32(u32_of("width", w)?),
        Arg::U32(u32_of("padding", pad)?),
        opt(fill),
        Arg::Ptr(xb),
        Arg::Ptr(yb),
    ];
    launch(d, Kernel::GatherCrop, (rows * c * h * w) as u64, &args).map(drop)
}

/// The geometry arguments of the conv.cu kernels for samples
/// `n0 .. n0 + nc` and group `grp`: n0, nc, c, h, w, cg, grp, k, stride,
/// pad, oh, ow.
fn conv_args(g: &ConvGeom, n0: usize, nc: usize, grp: usize) -> Result<[Arg; 12], GpuError> {
    let u = |what: &str, v: usize| u32_of(what, v).map(Arg::U32);
    Ok([
        u("sample", n0)?,
        u("samples", nc)?,
        u("channels", g.c)?,
        u("height", g.h)?,
        u("width", g.w)?,
        u("channels per group", g.cg())?,
        u("group", grp)?,
        u("kernel", g.k)?,
        u("stride", g.stride)?,
        u("padding", g.pad)?,
        u("output height", g.oh)?,
        u("output width", g.ow)?,
    ])
}

/// serial::conv::im2col of samples `n0 .. n0 + nc`, group `grp`, into
/// `col` ((C/G)·k² rows × nc·OH·OW columns).
pub fn im2col<D: Device>(
    d: &mut D,
    g: &ConvGeom,
    x: DPtr,
    col: DPtr,
    n0: usize,
    nc: usize,
    grp: usize,
) -> R {
    let mut args = vec![Arg::Ptr(x), Arg::Ptr(col)];
    args.extend(conv_args(g, n0, nc, grp)?);
    let n = g.cg() * g.k * g.k * nc * g.oh * g.ow;
    launch(d, Kernel::Im2col, n as u64, &args).map(drop)
}

/// dx ← β·dx + col2im(col) for samples `n0 .. n0 + nc`, group `grp`.
#[allow(clippy::too_many_arguments)]
pub fn col2im<D: Device>(
    d: &mut D,
    g: &ConvGeom,
    col: DPtr,
    dx: DPtr,
    n0: usize,
    nc: usize,
    grp: usize,
    beta: f32,
) -> R {
    let mut args = vec![Arg::Ptr(col), Arg::Ptr(dx)];
    args.extend(conv_args(g, n0, nc, grp)?);
    args.push(Arg::F32(beta));
    let n = nc * g.cg() * g.h * g.w;
    launch(d, Kernel::Col2im, n as u64, &args).map(drop)
}

/// NCHW → channel-major: dst[c, j, p] = src[n0 + j, c, p] (`kk` channels
/// of `np` positions, `nc` samples).
#[allow(clippy::too_many_arguments)]
pub fn to_cnp<D: Device>(
    d: &mut D,
    src: DPtr,
    dst: DPtr,
    n0: usize,
    nc: usize,
    kk: usize,
    np: usize,
) -> R {
    let args = [
        Arg::Ptr(src),
        Arg::Ptr(dst),
        Arg::U32(u32_of("sample", n0)?),
        Arg::U32(u32_of("samples", nc)?),
        Arg::U32(u32_of("channels", kk)?),
        Arg::U32(u32_of("positions", np)?),
    ];
    launch(d, Kernel::ToCnp, (kk * nc * np) as u64, &args).map(drop)
}

/// Channel-major → NCHW with β: dst[n0 + j, c, p] = β·dst + src[c, j, p].
#[allow(clippy::too_many_arguments)]
pub fn from_cnp<D: Device>(
    d: &mut D,
    src: DPtr,
    dst: DPtr,
    n0: usize,
    nc: usize,
    kk: usize,
    np: usize,
    beta: f32,
) -> R {
    let args = [
        Arg::Ptr(src),
        Arg::Ptr(dst),
        Arg::U32(u32_of("sample", n0)?),
        Arg::U32(u32_of("samples", nc)?),
        Arg::U32(u32_of("channels", kk)?),
        Arg::U32(u32_of("positions", np)?),
        Arg::F32(beta),
    ];
    launch(d, Kernel::FromCnp, (kk * nc * np) as u64, &args).map(drop)
}

fn bn_dims(g: &BnGeom) -> Result<[Arg; 3], GpuError> {
    Ok([
        Arg::U32(u32_of("batch", g.n)?),
        Arg::U32(u32_of("channels", g.c)?),
        Arg::U32(u32_of("plane size", g.hw)?),
    ])
}

fn check_bn(g: &BnGeom) -> R {
    // the per-channel kernels count a channel's values in u32
    u32_of("values per channel", g.m()).map(drop)
}

/// serial::norm::channel_stats (+ running_update into `pending`): the
/// batch statistics of every channel.
#[allow(clippy::too_many_arguments)]
pub fn bn_stats<D: Device>(
    d: &mut D,
    g: &BnGeom,
    x: DPtr,
    eps: f32,
    stats: DPtr,
    running: Option<DPtr>,
    pending: Option<DPtr>,
    momentum: f32,
) -> R {
    check_bn(g)?;
    let [n, c, hw] = bn_dims(g)?;
    let args = [
        Arg::Ptr(x),
        n,
        c,
        hw,
        Arg::F32(eps),
        Arg::Ptr(stats),
        opt(running),
        opt(pending),
        Arg::F32(momentum),
    ];
    launch(d, Kernel::BnStats, g.c as u64, &args).map(drop)
}

/// serial::norm::normalize_plane over the batch (training statistics, or
/// running statistics when `eval`).
#[allow(clippy::too_many_arguments)]
pub fn bn_apply<D: Device>(
    d: &mut D,
    g: &BnGeom,
    x: DPtr,
    y: DPtr,
    gb: DPtr,
    stats: DPtr,
    eval: bool,
    eps: f32,
    act: Act,
) -> R {
    let args = [
        Arg::Ptr(x),
        Arg::Ptr(y),
        Arg::U64(g.len() as u64),
        Arg::U32(u32_of("channels", g.c)?),
        Arg::U32(u32_of("plane size", g.hw)?),
        Arg::Ptr(gb),
        Arg::Ptr(stats),
        Arg::I32(i32::from(eval)),
        Arg::F32(eps),
        Arg::I32(act_code(act)),
    ];
    launch(d, Kernel::BnApply, g.len() as u64, &args).map(drop)
}

/// serial::norm::backward_sums into `sums` (2C), and the parameter
/// gradients dp ← β·dp + α·(dγ, dβ) when `dp` is given.
#[allow(clippy::too_many_arguments)]
pub fn bn_bwd_sums<D: Device>(
    d: &mut D,
    g: &BnGeom,
    x: DPtr,
    dy: DPtr,
    stats: DPtr,
    sums: DPtr,
    dp: Option<(DPtr, f32, f32)>,
) -> R {
    check_bn(g)?;
    let [n, c, hw] = bn_dims(g)?;
    let (p, alpha, beta) = match dp {
        Some((p, a, b)) => (Arg::Ptr(p), a, b),
        None => (Arg::Null, 1.0, 0.0),
    };
    let args = [
        Arg::Ptr(x),
        Arg::Ptr(dy),
        n,
        c,
        hw,
        Arg::Ptr(stats),
        Arg::Ptr(sums),
        p,
        Arg::F32(alpha),
        Arg::F32(beta),
    ];
    launch(d, Kernel::BnBwdSums, g.c as u64, &args).map(drop)
}

/// serial::norm::backward_plane over the batch: dx (+)= ….
#[allow(clippy::too_many_arguments)]
pub fn bn_bwd_dx<D: Device>(
    d: &mut D,
    g: &BnGeom,
    x: DPtr,
    dy: DPtr,
    dx: DPtr,
    gb: DPtr,
    stats: DPtr,
    sums: DPtr,
    acc: bool,
) -> R {
    let [n, c, hw] = bn_dims(g)?;
    let args = [
        Arg::Ptr(x),
        Arg::Ptr(dy),
        Arg::Ptr(dx),
        Arg::U64(g.len() as u64),
        n,
        c,
        hw,
        Arg::Ptr(gb),
        Arg::Ptr(stats),
        Arg::Ptr(sums),
        Arg::I32(i32::from(acc)),
    ];
    launch(d, Kernel::BnBwdDx, g.len() as u64, &args).map(drop)
}

/// serial::norm::r_forward_means into `rstats` (zeros without R{x}).
pub fn bn_rfwd_sums<D: Device>(
    d: &mut D,
    g: &BnGeom,
    x: DPtr,
    rx: Option<DPtr>,
    stats: DPtr,
    rstats: DPtr,
) -> R {
    check_bn(g)?;
    let [n, c, hw] = bn_dims(g)?;
    let args = [
        Arg::Ptr(x),
        opt(rx),
        n,
        c,
        hw,
        Arg::Ptr(stats),
        Arg::Ptr(rstats),
    ];
    launch(d, Kernel::BnRfwdSums, g.c as u64, &args).map(drop)
}

/// serial::norm::r_forward_plane over the batch.
#[allow(clippy::too_many_arguments)]
pub fn bn_rfwd_apply<D: Device>(
    d: &mut D,
    g: &BnGeom,
    x: DPtr,
    rx: Option<DPtr>,
    ry: DPtr,
    gb: DPtr,
    vgb: DPtr,
    stats: DPtr,
    rstats: DPtr,
) -> R {
    let args = [
        Arg::Ptr(x),
        opt(rx),
        Arg::Ptr(ry),
        Arg::U64(g.len() as u64),
        Arg::U32(u32_of("channels", g.c)?),
        Arg::U32(u32_of("plane size", g.hw)?),
        Arg::Ptr(gb),
        Arg::Ptr(vgb),
        Arg::Ptr(stats),
        Arg::Ptr(rstats),
    ];
    launch(d, Kernel::BnRfwdApply, g.len() as u64, &args).map(drop)
}

/// The device pointers of a batch-norm R-backward (see
/// [`fdgr_kernel::ops::BnRBwd`]).
#[derive(Clone, Copy, Debug)]
pub struct BnRBack {
    /// Input of the forward pass.
    pub x: DPtr,
    /// R{x} (None: zero).
    pub rx: Option<DPtr>,
    /// Gradient with respect to the output.
    pub dy: DPtr,
    /// Its R-derivative.
    pub rdy: DPtr,
    /// γ then β.
    pub gb: DPtr,
    /// The direction's γ then β.
    pub vgb: DPtr,
    /// Batch statistics.
    pub stats: DPtr,
    /// R-forward statistics.
    pub rstats: DPtr,
}

/// serial::norm::r_backward_sums into `sums5` (5C) and R{dγ}, R{dβ} into
/// `rsums` (2C).
pub fn bn_rbwd_sums<D: Device>(d: &mut D, g: &BnGeom, a: &BnRBack, sums5: DPtr, rsums: DPtr) -> R {
    check_bn(g)?;
    let [n, c, hw] = bn_dims(g)?;
    let args = [
        Arg::Ptr(a.x),
        opt(a.rx),
        Arg::Ptr(a.dy),
        Arg::Ptr(a.rdy),
        n,
        c,
        hw,
        Arg::Ptr(a.stats),
        Arg::Ptr(a.rstats),
        Arg::Ptr(sums5),
        Arg::Ptr(rsums),
    ];
    launch(d, Kernel::BnRbwdSums, g.c as u64, &args).map(drop)
}

/// serial::norm::r_backward_plane over the batch: R{dx} (+)= ….
pub fn bn_rbwd_dx<D: Device>(
    d: &mut D,
    g: &BnGeom,
    a: &BnRBack,
    rdx: DPtr,
    sums5: DPtr,
    acc: bool,
) -> R {
    let [n, c, hw] = bn_dims(g)?;
    let args = [
        Arg::Ptr(a.x),
        opt(a.rx),
        Arg::Ptr(a.dy),
        Arg::Ptr(a.rdy),
        Arg::Ptr(rdx),
        Arg::U64(g.len() as u64),
        n,
        c,
        hw,
        Arg::Ptr(a.gb),
        Arg::Ptr(a.vgb),
        Arg::Ptr(a.stats),
        Arg::Ptr(a.rstats),
        Arg::Ptr(sums5),
        Arg::I32(i32::from(acc)),
    ];
    launch(d, Kernel::BnRbwdDx, g.len() as u64, &args).map(drop)
}

/// The pooling code of pool.cu.
pub fn pool_code(k: PoolKind) -> i32 {
    match k {
        PoolKind::Max => 0,
        PoolKind::Avg => 1,
    }
}

fn pool_args(g: &PoolGeom) -> Result<[Arg; 8], GpuError> {
    let u = |what: &str, v: usize| u32_of(what, v).map(Arg::U32);
    Ok([
        u("height", g.h)?,
        u("width", g.w)?,
        u("window height", g.kh)?,
        u("window width", g.kw)?,
        u("stride", g.stride)?,
        u("padding", g.pad)?,
        u("output height", g.oh)?,
        u("output width", g.ow)?,
    ])
}

/// serial::pool::forward.
pub fn pool_fwd<D: Device>(d: &mut D, g: &PoolGeom, x: DPtr, y: DPtr) -> R {
    let mut args = vec![Arg::Ptr(x), Arg::Ptr(y), Arg::U64(g.y_len() as u64)];
    args.extend(pool_args(g)?);
    args.push(Arg::I32(pool_code(g.kind)));
    launch(d, Kernel::PoolFwd, g.y_len() as u64, &args).map(drop)
}

/// serial::pool::r_forward.
pub fn pool_r<D: Device>(d: &mut D, g: &PoolGeom, x: DPtr, rx: DPtr, ry: DPtr) -> R {
    let mut args = vec![
        Arg::Ptr(x),
        Arg::Ptr(rx),
        Arg::Ptr(ry),
        Arg::U64(g.y_len() as u64),
    ];
    args.extend(pool_args(g)?);
    args.push(Arg::I32(pool_code(g.kind)));
    launch(d, Kernel::PoolR, g.y_len() as u64, &args).map(drop)
}

/// serial::pool::backward: dx (+)= poolᵀ(dy).
#[allow(clippy::too_many_arguments)]
pub fn pool_bwd<D: Device>(d: &mut D, g: &PoolGeom, x: DPtr, dy: DPtr, dx: DPtr, acc: bool) -> R {
    let mut args = vec![
        Arg::Ptr(x),
        Arg::Ptr(dy),
        Arg::Ptr(dx),
        Arg::U64(g.x_len() as u64),
    ];
    args.extend(pool_args(g)?);
    args.push(Arg::I32(pool_code(g.kind)));
    args.push(Arg::I32(i32::from(acc)));
    launch(d, Kernel::PoolBwd, g.x_len() as u64, &args).map(drop)
}
