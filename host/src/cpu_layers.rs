//! The host's parallel execution of the layer primitives beyond dense
//! products: convolution as GEMMs on the `gemm` crate (one sample per
//! task), batch norm and pooling with the kernel's own per-channel and
//! per-plane functions run in parallel, and the elementwise primitives on
//! chunks.
//!
//! Convolution keeps the output channels in the GEMM's vector lanes: the
//! input is transposed to pixel-major rows (SSE 4×4 tiles), a stride-1
//! convolution is k GEMMs over shifted rows of it (no im2col at all) and
//! others one GEMM over materialized pixel rows; the pixel-major result is
//! transposed into the output planes. The input gradient of a stride-1
//! convolution is the forward convolution of dy with the flipped filter;
//! windows with few values per row (k·cg < 16, 1×1) use channel-major
//! im2col instead. See [`conv_forward`].
//!
//! The arithmetic of every element is the kernel's (`fdgr_kernel::serial`,
//! `fdgr_kernel::act`, `fdgr_kernel::vecops`), except for the order of
//! long sums: convolution sums in a GEMM's order, and batch-norm
//! statistics and bias gradients in interleaved partial sums
//! (`norm::LANES`), so they match the serial loops to rounding; pooling is
//! bit-identical. The batch-norm, pooling and elementwise loops run
//! compiled for AVX2 when the CPU has it, with the same results.
//!
//! Results are deterministic for a given thread count: every output is
//! written by one task in a fixed order, and the weight gradient of a
//! convolution sums per-chunk partials in chunk order. Scratch buffers
//! come from a pool, so a step allocates nothing once they have grown.

use fdgr_kernel::act::{self, Act};
use fdgr_kernel::serial::conv::{self, col2im_add, im2col_ld, ConvGeom};
use fdgr_kernel::serial::norm::{self, BnGeom, Dp, Dx, Pending, RBack, RSums};
use fdgr_kernel::serial::pool::{self, PoolGeom};
use fdgr_kernel::{vecops, Real};
use rayon::prelude::*;
use std::sync::Mutex;

/// Scalars with a pool of reusable scratch buffers (so a training step
/// allocates nothing once the buffers have grown to their sizes), and a
/// tuned transpose.
pub trait Scratch: Real {
    /// The pool.
    fn pool() -> &'static Mutex<Vec<Vec<Self>>>;

    /// dst\[c·ld + r\] ← src\[r·ls + c\] + β·dst\[c·ld + r\] for r < rows, c < cols
    /// (β = 0 overwrites): dst (cols × rows, rows `ld` apart) becomes the
    /// transpose of src (rows × cols, rows `ls` apart), plus β·dst.
    fn transpose(
        src: &[Self],
        ls: usize,
        dst: &mut [Self],
        ld: usize,
        rows: usize,
        cols: usize,
        beta: Self,
    ) {
        transpose_scalar(src, ls, dst, ld, rows, cols, beta)
    }
}

impl Scratch for f32 {
    fn pool() -> &'static Mutex<Vec<Vec<f32>>> {
        static P: Mutex<Vec<Vec<f32>>> = Mutex::new(Vec::new());
        &P
    }

    #[cfg(target_arch = "x86_64")]
    fn transpose(
        src: &[f32],
        ls: usize,
        dst: &mut [f32],
        ld: usize,
        rows: usize,
        cols: usize,
        beta: f32,
    ) {
        if rows == 0 || cols == 0 {
            return;
        }
        assert!(
            src.len() > (rows - 1) * ls + cols - 1 && dst.len() > (cols - 1) * ld + rows - 1,
            "transpose operand sizes"
        );
        let (r4, c4) = (rows / 4 * 4, cols / 4 * 4);
        // SAFETY: each 4×4 tile at (r, c) lies inside both operands by the
        // assert above (r + 3 < rows, c + 3 < cols); SSE is part of x86_64.
        let mut tile = |r: usize, c: usize| unsafe {
            t4x4(
                src.as_ptr().add(r * ls + c),
                ls,
                dst.as_mut_ptr().add(c * ld + r),
                ld,
                beta,
            )
        };
        // Keep few lines of the operand with the long row stride in use at
        // a time (long strides map rows to the same cache sets): along a
        // 4-row band of src, or, when dst's rows are the far-apart ones,
        // finishing 16 values (a cache line) of 4 dst rows at a time.
        if ld <= ls {
            for r in (0..r4).step_by(4) {
                for c in (0..c4).step_by(4) {
                    tile(r, c);
                }
            }
        } else {
            for r0 in (0..r4).step_by(16) {
                for c in (0..c4).step_by(4) {
                    for r in (r0..(r0 + 16).min(r4)).step_by(4) {
                        tile(r, c);
                    }
                }
            }
        }
        // the edges: the last rows and the last columns
        if r4 < rows {
            transpose_scalar(
                &src[r4 * ls..],
                ls,
                &mut dst[r4..],
                ld,
                rows - r4,
                cols,
                beta,
            );
        }
        if c4 < cols {
            transpose_scalar(&src[c4..], ls, &mut dst[c4 * ld..], ld, r4, cols - c4, beta);
        }
    }
}

impl Scratch for f64 {
    fn pool() -> &'static Mutex<Vec<Vec<f64>>> {
        static P: Mutex<Vec<Vec<f64>>> = Mutex::new(Vec::new());
        &P
    }
}

/// [`Scratch::transpose`], element by element.
fn transpose_scalar<T: Real>(
    src: &[T],
    ls: usize,
    dst: &mut [T],
    ld: usize,
    rows: usize,
    cols: usize,
    beta: T,
) {
    for c in 0..cols {
        let d = &mut dst[c * ld..c * ld + rows];
        let s = src[c..].iter().step_by(ls);
        if beta == T::ZERO {
            for (d, v) in d.iter_mut().zip(s) {
                *d = *v;
            }
        } else {
            for (d, v) in d.iter_mut().zip(s) {
                *d = *v + beta * *d;
            }
        }
    }
}

/// One 4×4 tile of [`Scratch::transpose`] in SSE registers.
///
/// # Safety
/// Rows 0..4 of `s` (`ls` apart) and of `d` (`ld` apart) must each hold 4
/// readable (writable) values.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn t4x4(s: *const f32, ls: usize, d: *mut f32, ld: usize, beta: f32) {
    use core::arch::x86_64::*;
    let (r0, r1, r2, r3) = (
        _mm_loadu_ps(s),
        _mm_loadu_ps(s.add(ls)),
        _mm_loadu_ps(s.add(2 * ls)),
        _mm_loadu_ps(s.add(3 * ls)),
    );
    let (t0, t1) = (_mm_unpacklo_ps(r0, r1), _mm_unpacklo_ps(r2, r3));
    let (t2, t3) = (_mm_unpackhi_ps(r0, r1), _mm_unpackhi_ps(r2, r3));
    let cols = [
        _mm_movelh_ps(t0, t1),
        _mm_movehl_ps(t1, t0),
        _mm_movelh_ps(t2, t3),
        _mm_movehl_ps(t3, t2),
    ];
    if beta == 0.0 {
        for (j, c) in cols.into_iter().enumerate() {
            _mm_storeu_ps(d.add(j * ld), c);
        }
    } else {
        let b = _mm_set1_ps(beta);
        for (j, c) in cols.into_iter().enumerate() {
            let o = _mm_loadu_ps(d.add(j * ld));
            _mm_storeu_ps(d.add(j * ld), _mm_add_ps(c, _mm_mul_ps(b, o)));
        }
    }
}

/// A scratch buffer of `n` values (contents unspecified), returned to the
/// pool when dropped. Buffers keep their full length in the pool, so
/// taking one never fills it (only growing a buffer does).
pub struct Buf<T: Scratch>(Vec<T>, usize);

impl<T: Scratch> Buf<T> {
    /// Takes a buffer of `n` values from the pool.
    pub fn take(n: usize) -> Self {
        let mut v = match T::pool().lock() {
            Ok(mut p) => p.pop().unwrap_or_default(),
            Err(_) => Vec::new(),
        };
        if v.len() < n {
            v.resize(n, T::ZERO);
        }
        Buf(v, n)
    }
}

impl<T: Scratch> std::ops::Deref for Buf<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        &self.0[..self.1]
    }
}

impl<T: Scratch> std::ops::DerefMut for Buf<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        &mut self.0[..self.1]
    }
}

impl<T: Scratch> Drop for Buf<T> {
    fn drop(&mut self) {
        if let Ok(mut p) = T::pool().lock() {
            p.push(std::mem::take(&mut self.0));
        }
    }
}

/// A single-threaded row-major GEMM on the `gemm` crate (the kernel's
/// convention: C ← α·op(A)·op(B) + β·C); callers parallelize around it.
#[allow(clippy::too_many_arguments)]
pub fn gemm1<T: Real>(
    ta: bool,
    tb: bool,
    m: usize,
    n: usize,
    k: usize,
    alpha: T,
    a: &[T],
    b: &[T],
    beta: T,
    c: &mut [T],
) {
    crate::cpu::fast_gemm(1, ta, tb, m, n, k, alpha, a, b, beta, c)
}

/// A matrix operand of [`gemm_s`]: values, row stride, column stride.
pub type Mat<'a, T> = (&'a [T], usize, usize);

/// C ← α·A·B + β·C on the `gemm` crate, single-threaded, with strided
/// operands: A is m×k, B is k×n, C is m×n with rows `ldc` apart (β = 0
/// overwrites C).
#[allow(clippy::too_many_arguments)]
pub fn gemm_s<T: Real>(
    m: usize,
    n: usize,
    k: usize,
    alpha: T,
    (a, ars, acs): Mat<'_, T>,
    (b, brs, bcs): Mat<'_, T>,
    beta: T,
    c: &mut [T],
    ldc: usize,
) {
    if m == 0 || n == 0 {
        return;
    }
    let end =
        |rows: usize, cols: usize, rs: usize, cs: usize| (rows - 1) * rs + (cols - 1) * cs + 1;
    if k == 0 {
        for row in c.chunks_mut(ldc).take(m) {
            vecops::scale_or_zero(&mut row[..n], beta);
        }
        return;
    }
    assert!(
        a.len() >= end(m, k, ars, acs)
            && b.len() >= end(k, n, brs, bcs)
            && c.len() >= end(m, n, ldc, 1),
        "gemm operand sizes"
    );
    // SAFETY: the assert above bounds every index the strides reach; c
    // does not alias a or b (distinct borrows). The crate computes
    // dst ← α'·dst + β'·lhs·rhs, so the kernel's (α, β) go in as (β, α).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            ldc as isize,
            beta != T::ZERO,
            a.as_ptr(),
            acs as isize,
            ars as isize,
            b.as_ptr(),
            bcs as isize,
            brs as isize,
            beta,
            alpha,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

/// The one-sample geometry of `g`.
fn one(g: &ConvGeom) -> ConvGeom {
    ConvGeom { n: 1, ..*g }
}

/// Whether the convolution reads its input as is (1×1, stride 1, no
/// padding): then the input plane block is the im2col matrix.
fn pointwise(g: &ConvGeom) -> bool {
    g.k == 1 && g.stride == 1 && g.pad == 0
}

/// Values of the pixel-major padded input of one group ([`pixel_major`]),
/// with (k − 1)·cg zeros after it for the shifted reads of [`shifted`].
fn xp_len(g: &ConvGeom) -> usize {
    ((g.h + 2 * g.pad) * (g.w + 2 * g.pad) + g.k - 1) * g.cg()
}

/// Whether a convolution runs on shifted rows of its pixel-major input
/// instead of materialized patches: stride 1, and the padded row width
/// Wp computes at most 1/8 more outputs than the OW that are kept.
///
/// Output pixel (oy, ox) of a stride-1 convolution reads, for tap row ky,
/// the k·cg contiguous values of `xp` from ((oy + ky)·Wp + ox)·cg on: as a
/// function of the "wide" pixel index q = oy·Wp + ox these are the rows of
/// a matrix whose rows are cg apart (overlapping) in `xp`. So the
/// convolution is k GEMMs (one per ky, depth k·cg) over oh·Wp wide pixels,
/// of which the last Wp − OW of each row are dropped.
fn shifted(g: &ConvGeom) -> bool {
    let wp = g.w + 2 * g.pad;
    g.stride == 1 && (wp - g.ow) * 8 <= g.ow
}

/// How a convolution's forward and weight-gradient products are formed.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Path {
    /// 1×1, stride 1, no padding: the input planes are the product's
    /// operand as they are.
    Pointwise,
    /// Shifted rows of the pixel-major input ([`shifted`]).
    Shifted,
    /// Materialized pixel rows of the pixel-major input ([`patches`]).
    Patches,
    /// Channel-major im2col rows (`im2col_ld`): for windows of few values
    /// per tap row (k·cg < 16), where the runs [`patches`] copies would be
    /// too short, and 1×1 windows (a strided gather).
    Im2col,
}

fn path(g: &ConvGeom) -> Path {
    if pointwise(g) {
        Path::Pointwise
    } else if g.k == 1 || g.k * g.cg() < 16 {
        Path::Im2col
    } else if shifted(g) {
        Path::Shifted
    } else {
        Path::Patches
    }
}

/// The row stride of an im2col buffer with `ohw` columns: `ohw`, padded
/// when a multiple of 256 values (1 KiB), so that the GEMMs' walks down a
/// column do not keep hitting the same cache sets.
fn col_ld(ohw: usize) -> usize {
    if ohw >= 256 && ohw % 256 == 0 {
        ohw + 16
    } else {
        ohw
    }
}

/// Group `grp` of one sample's input `xn` (C planes of H×W) pixel-major,
/// with a zero border of `pad`: xp\[(iy·Wp + ix)·cg + ic\] with Wp = W + 2·pad
/// (a transpose of the channel planes).
fn pixel_major<T: Scratch>(g: &ConvGeom, xn: &[T], grp: usize, xp: &mut [T]) {
    let (cg, p, w) = (g.cg(), g.pad, g.w);
    let wp = w + 2 * p;
    let hw = g.h * w;
    let xp = &mut xp[..xp_len(g)];
    let (top, rest) = xp.split_at_mut(p * wp * cg);
    // (bottom: the lower border and the slack of xp_len)
    let (mid, bottom) = rest.split_at_mut(g.h * wp * cg);
    top.fill(T::ZERO);
    bottom.fill(T::ZERO);
    let planes = &xn[grp * cg * hw..(grp + 1) * cg * hw];
    for (iy, row) in mid.chunks_exact_mut(wp * cg).enumerate() {
        row[..p * cg].fill(T::ZERO);
        row[(p + w) * cg..].fill(T::ZERO);
        // row iy of the cg planes (cg × W, planes hw apart) → W × cg
        T::transpose(
            &planes[iy * w..],
            hw,
            &mut row[p * cg..],
            cg,
            cg,
            w,
            T::ZERO,
        );
    }
}

/// The receptive fields of the pixel-major input `xp` as rows: row p
/// (output pixel) holds the window's values in (ky, kx, ic) order, k
/// contiguous runs of k·cg values.
fn patches<T: Real>(g: &ConvGeom, xp: &[T], colt: &mut [T]) {
    let (cg, k, s) = (g.cg(), g.k, g.stride);
    let wp = g.w + 2 * g.pad;
    let (kc, ckk) = (k * cg, k * k * cg);
    for (p, row) in colt[..g.oh * g.ow * ckk].chunks_exact_mut(ckk).enumerate() {
        let (oy, ox) = (p / g.ow, p % g.ow);
        for (ky, dst) in row.chunks_exact_mut(kc).enumerate() {
            let o = ((oy * s + ky) * wp + ox * s) * cg;
            dst.copy_from_slice(&xp[o..o + kc]);
        }
    }
}

/// The filter with each output channel's taps in the order of
/// [`patches`]: wp\[oc\]\[(ky·k + kx)·cg + ic\] = w\[oc\]\[ic\]\[ky\]\[kx\].
fn permute_filter<T: Real>(g: &ConvGeom, w: &[T], wp: &mut [T]) {
    let (cg, k2) = (g.cg(), g.k * g.k);
    for (src, dst) in w[..g.w_len()]
        .chunks_exact(cg * k2)
        .zip(wp.chunks_exact_mut(cg * k2))
    {
        for ic in 0..cg {
            for t in 0..k2 {
                dst[t * cg + ic] = src[ic * k2 + t];
            }
        }
    }
}

/// y ← β·y + α·conv(x, w), one sample per task. Each group's receptive
/// fields are pixel rows (shifted rows or materialized patches) times the
/// permuted filter, so that the GEMM's vector lanes run over output
/// channels; its pixel-major result is transposed into the output planes.
/// Narrow windows multiply the filter by channel-major im2col rows, and a
/// 1×1 stride-1 convolution the input planes as they are.
pub fn conv_forward<T: Scratch>(g: &ConvGeom, x: &[T], w: &[T], y: &mut [T], alpha: T, beta: T) {
    let (cg, kg) = (g.cg(), g.kg());
    let (hw, ohw, ckk) = (g.h * g.w, g.oh * g.ow, g.cg() * g.k * g.k);
    let pth = path(g);
    let g1 = one(g);
    let ld = col_ld(ohw);
    let mut wp = Buf::<T>::take(if pixel_rows(pth) { g.w_len() } else { 0 });
    if pixel_rows(pth) {
        permute_filter(g, w, &mut wp);
    }
    let wp: &[T] = &wp;
    let wide = g.w + 2 * g.pad;
    let kc = g.k * cg;
    // scratch: pixel-major input, patches or im2col rows, GEMM output
    let rows = if pth == Path::Shifted {
        g.oh * wide
    } else {
        ohw
    };
    let (lx, lc, ly) = match pth {
        Path::Pointwise => (0, 0, 0),
        Path::Im2col => (0, ckk * ld, 0),
        Path::Shifted => (xp_len(g), 0, rows * kg),
        Path::Patches => (xp_len(g), ohw * ckk, ohw * kg),
    };
    y[..g.y_len()]
        .par_chunks_mut(g.k_out * ohw)
        .zip(x[..g.x_len()].par_chunks(g.c * hw))
        .for_each_init(
            || Buf::<T>::take(lx + lc + ly),
            |buf, (yn, xn)| {
                let (xp, rest) = buf.split_at_mut(lx);
                let (colt, yt) = rest.split_at_mut(lc);
                for grp in 0..g.groups {
                    let wg = &w[grp * kg * ckk..(grp + 1) * kg * ckk];
                    let wpg = &wp[(grp * kg * ckk).min(wp.len())..];
                    let yg = &mut yn[grp * kg * ohw..(grp + 1) * kg * ohw];
                    match pth {
                        Path::Pointwise => {
                            let xg = &xn[grp * cg * hw..(grp + 1) * cg * hw];
                            gemm1(false, false, kg, ohw, ckk, alpha, wg, xg, beta, yg);
                        }
                        Path::Im2col => {
                            im2col_ld(&g1, xn, 0, grp, colt, ld);
                            let (a, b) = ((wg, ckk, 1), (&colt[..], ld, 1));
                            gemm_s(kg, ohw, ckk, alpha, a, b, beta, yg, ohw);
                        }
                        Path::Shifted => {
                            pixel_major(g, xn, grp, xp);
                            for ky in 0..g.k {
                                let a = (&xp[ky * wide * cg..], cg, 1);
                                let b = (&wpg[ky * kc..], 1, ckk);
                                let b0 = if ky == 0 { T::ZERO } else { T::ONE };
                                gemm_s(rows, kg, kc, alpha, a, b, b0, yt, kg);
                            }
                            for oy in 0..g.oh {
                                let src = &yt[oy * wide * kg..];
                                T::transpose(src, kg, &mut yg[oy * g.ow..], ohw, g.ow, kg, beta);
                            }
                        }
                        Path::Patches => {
                            pixel_major(g, xn, grp, xp);
                            patches(g, xp, colt);
                            let (a, b) = ((&colt[..], ckk, 1), (wpg, 1, ckk));
                            gemm_s(ohw, kg, ckk, alpha, a, b, T::ZERO, yt, kg);
                            T::transpose(yt, kg, yg, ohw, ohw, kg, beta);
                        }
                    }
                }
            },
        );
}

/// Whether `p` works on pixel rows with the filter in [`permute_filter`]'s
/// tap order.
fn pixel_rows(p: Path) -> bool {
    matches!(p, Path::Shifted | Path::Patches)
}

/// dx ← β·dx + α·convᵀ(dy, w), one sample per task. A stride-1
/// convolution that keeps the plane size runs as the forward convolution
/// of dy with the flipped filter (no col2im); others multiply Wᵀ·dy and
/// add the columns back (col2im).
pub fn conv_backward_data<T: Scratch>(
    g: &ConvGeom,
    dy: &[T],
    w: &[T],
    dx: &mut [T],
    alpha: T,
    beta: T,
) {
    let (cg, kg) = (g.cg(), g.kg());
    let (hw, ohw, ckk) = (g.h * g.w, g.oh * g.ow, g.cg() * g.k * g.k);
    if !pointwise(g) && hw <= ohw {
        if let Some(t) = conv::transposed(g) {
            let mut wt = Buf::<T>::take(g.w_len());
            conv::flip_filter(g, w, &mut wt);
            return conv_forward(&t, dy, &wt, dx, alpha, beta);
        }
    }
    if path(g) == Path::Patches {
        return backward_data_rows(g, dy, w, dx, alpha, beta);
    }
    let g1 = one(g);
    let pw = pointwise(g);
    dx[..g.x_len()]
        .par_chunks_mut(g.c * hw)
        .zip(dy[..g.y_len()].par_chunks(g.k_out * ohw))
        .for_each_init(
            || Buf::<T>::take(if pw { 0 } else { ckk * ohw }),
            |col, (dxn, dyn_)| {
                if pw {
                    for grp in 0..g.groups {
                        let wg = &w[grp * kg * ckk..(grp + 1) * kg * ckk];
                        let dyg = &dyn_[grp * kg * ohw..(grp + 1) * kg * ohw];
                        let dxg = &mut dxn[grp * cg * hw..(grp + 1) * cg * hw];
                        gemm1(true, false, ckk, ohw, kg, alpha, wg, dyg, beta, dxg);
                    }
                    return;
                }
                vecops::scale_or_zero(dxn, beta);
                for grp in 0..g.groups {
                    let wg = &w[grp * kg * ckk..(grp + 1) * kg * ckk];
                    let dyg = &dyn_[grp * kg * ohw..(grp + 1) * kg * ohw];
                    gemm1(true, false, ckk, ohw, kg, alpha, wg, dyg, T::ZERO, col);
                    col2im_add(&g1, col, 0, grp, dxn);
                }
            },
        );
}

/// [`conv_backward_data`] on pixel rows, the adjoint of [`Path::Patches`]:
/// the pixel-major dy times the permuted filter gives each output pixel's
/// window gradient as a row, which is added back onto a padded pixel-major
/// input gradient ([`patches_add`]) and transposed into the planes.
fn backward_data_rows<T: Scratch>(
    g: &ConvGeom,
    dy: &[T],
    w: &[T],
    dx: &mut [T],
    alpha: T,
    beta: T,
) {
    let (cg, kg, p) = (g.cg(), g.kg(), g.pad);
    let (hw, ohw, ckk) = (g.h * g.w, g.oh * g.ow, g.cg() * g.k * g.k);
    let wide = g.w + 2 * p;
    let mut wp = Buf::<T>::take(g.w_len());
    permute_filter(g, w, &mut wp);
    let wp: &[T] = &wp;
    let (lx, lc, ly) = (xp_len(g), ohw * ckk, ohw * kg);
    dx[..g.x_len()]
        .par_chunks_mut(g.c * hw)
        .zip(dy[..g.y_len()].par_chunks(g.k_out * ohw))
        .for_each_init(
            || Buf::<T>::take(lx + lc + ly),
            |buf, (dxn, dyn_)| {
                let (dxp, rest) = buf.split_at_mut(lx);
                let (colt, dyt) = rest.split_at_mut(lc);
                for grp in 0..g.groups {
                    let dyg = &dyn_[grp * kg * ohw..(grp + 1) * kg * ohw];
                    T::transpose(dyg, ohw, dyt, kg, kg, ohw, T::ZERO);
                    let wpg = &wp[grp * kg * ckk..(grp + 1) * kg * ckk];
                    let (a, b) = ((&dyt[..], kg, 1), (wpg, ckk, 1));
                    gemm_s(ohw, ckk, kg, alpha, a, b, T::ZERO, colt, ckk);
                    dxp.fill(T::ZERO);
                    patches_add(g, colt, dxp);
                    let dxg = &mut dxn[grp * cg * hw..(grp + 1) * cg * hw];
                    for iy in 0..g.h {
                        let src = &dxp[((iy + p) * wide + p) * cg..];
                        T::transpose(src, cg, &mut dxg[iy * g.w..], hw, g.w, cg, beta);
                    }
                }
            },
        );
}

/// xp += the rows of `colt` put back where [`patches`] took them from
/// (its adjoint).
fn patches_add<T: Real>(g: &ConvGeom, colt: &[T], xp: &mut [T]) {
    let (cg, k, s) = (g.cg(), g.k, g.stride);
    let wp = g.w + 2 * g.pad;
    let (kc, ckk) = (k * cg, k * k * cg);
    for (p, row) in colt[..g.oh * g.ow * ckk].chunks_exact(ckk).enumerate() {
        let (oy, ox) = (p / g.ow, p % g.ow);
        for (ky, src) in row.chunks_exact(kc).enumerate() {
            let o = ((oy * s + ky) * wp + ox * s) * cg;
            for (d, v) in xp[o..o + kc].iter_mut().zip(src) {
                *d += *v;
            }
        }
    }
}

/// dw ← β·dw + α·Σ_batch (x ⋆ dy): the batch is split into one contiguous
/// chunk per thread, each summing its samples into its own partial (dy
/// times the pixel rows or im2col rows of [`conv_forward`]'s paths, in
/// their tap order); the partials are added in chunk order.
#[allow(clippy::too_many_arguments)]
pub fn conv_backward_filter<T: Scratch>(
    threads: usize,
    g: &ConvGeom,
    x: &[T],
    dy: &[T],
    dw: &mut [T],
    alpha: T,
    beta: T,
) {
    let (cg, kg) = (g.cg(), g.kg());
    let (hw, ohw, ckk) = (g.h * g.w, g.oh * g.ow, g.cg() * g.k * g.k);
    let wl = g.w_len();
    let chunks = threads.clamp(1, g.n.max(1));
    let per = g.n.div_ceil(chunks);
    let pth = path(g);
    let g1 = one(g);
    let ld = col_ld(ohw);
    let wide = g.w + 2 * g.pad;
    let (kc, rows) = (g.k * cg, g.oh * wide);
    // pixel-major input; im2col rows, patches, or dy on wide rows (zero
    // past OW)
    let (lx, lc) = match pth {
        Path::Pointwise => (0, 0),
        Path::Im2col => (0, ckk * ld),
        Path::Shifted => (xp_len(g), kg * rows),
        Path::Patches => (xp_len(g), ohw * ckk),
    };
    let mut partials = Buf::<T>::take(chunks * wl);
    partials
        .par_chunks_mut(wl)
        .enumerate()
        .for_each(|(t, part)| {
            let mut buf = Buf::<T>::take(lx + lc);
            let (xp, colt) = buf.split_at_mut(lx);
            let (n0, n1) = (t * per, ((t + 1) * per).min(g.n));
            if n0 >= n1 {
                part.fill(T::ZERO);
                return;
            }
            for n in n0..n1 {
                let xn = &x[n * g.c * hw..(n + 1) * g.c * hw];
                let dyn_ = &dy[n * g.k_out * ohw..(n + 1) * g.k_out * ohw];
                let b = if n == n0 { T::ZERO } else { T::ONE };
                for grp in 0..g.groups {
                    let dyg = &dyn_[grp * kg * ohw..(grp + 1) * kg * ohw];
                    let pg = &mut part[grp * kg * ckk..(grp + 1) * kg * ckk];
                    match pth {
                        Path::Pointwise => {
                            let xg = &xn[grp * cg * hw..(grp + 1) * cg * hw];
                            gemm1(false, true, kg, ckk, ohw, T::ONE, dyg, xg, b, pg);
                        }
                        Path::Im2col => {
                            im2col_ld(&g1, xn, 0, grp, colt, ld);
                            let (a, c) = ((dyg, ohw, 1), (&colt[..], 1, ld));
                            gemm_s(kg, ckk, ohw, T::ONE, a, c, b, pg, ckk);
                        }
                        Path::Shifted => {
                            pixel_major(g, xn, grp, xp);
                            let dyw = &mut colt[..kg * rows];
                            for (dw, d) in dyw.chunks_exact_mut(wide).zip(dyg.chunks_exact(g.ow)) {
                                dw[..g.ow].copy_from_slice(d);
                                dw[g.ow..].fill(T::ZERO);
                            }
                            let dyw: &[T] = dyw;
                            for ky in 0..g.k {
                                let a = (dyw, rows, 1);
                                let c = (&xp[ky * wide * cg..], cg, 1);
                                gemm_s(kg, kc, rows, T::ONE, a, c, b, &mut pg[ky * kc..], ckk);
                            }
                        }
                        Path::Patches => {
                            pixel_major(g, xn, grp, xp);
                            patches(g, xp, colt);
                            let (a, c) = ((dyg, ohw, 1), (&colt[..], ckk, 1));
                            gemm_s(kg, ckk, ohw, T::ONE, a, c, b, pg, ckk);
                        }
                    }
                }
            }
        });
    let dw = &mut dw[..wl];
    vecops::scale_or_zero(dw, beta);
    let k2 = g.k * g.k;
    for part in partials.chunks(wl) {
        if !pixel_rows(pth) {
            vecops::axpy(dw, alpha, part);
            continue;
        }
        // the partials hold each output channel's taps in (ky, kx, ic) order
        for (d, p) in dw.chunks_exact_mut(cg * k2).zip(part.chunks_exact(cg * k2)) {
            for ic in 0..cg {
                for t in 0..k2 {
                    d[ic * k2 + t] += alpha * p[t * cg + ic];
                }
            }
        }
    }
}

/// Defines `fn $name`, which runs `$body` compiled for AVX2 when the CPU
/// has it (detected at run time) and as is otherwise. The body's loops,
/// its closures and the kernel's `#[inline]` functions it calls are
/// compiled with it, so they use 8-wide vectors instead of SSE's 4. The
/// results are the same on both paths: these loops are elementwise or sum
/// in a fixed number of interleaved partial sums (`norm::LANES`), and Rust
/// never contracts a·b + c into an FMA.
macro_rules! simd_fn {
    ($(#[$m:meta])* $v:vis fn $name:ident<$T:ident: $B:ident>($($a:ident: $t:ty),* $(,)?) $(-> $r:ty)? $body:block) => {
        $(#[$m])*
        $v fn $name<$T: $B>($($a: $t),*) $(-> $r)? {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2")]
                #[allow(clippy::too_many_arguments)]
                fn avx2<$T: $B>($($a: $t),*) $(-> $r)? $body
                if std::arch::is_x86_feature_detected!("avx2") {
                    // SAFETY: the CPU has AVX2 (detected just above).
                    return unsafe { avx2($($a),*) };
                }
            }
            $body
        }
    };
}

simd_fn! {
    /// The batch statistics of channel `ch` ([`norm::channel_stats_blocked`]).
    fn stats_ch<T: Real>(g: &BnGeom, x: &[T], ch: usize, eps: T) -> (T, T, T) {
        norm::channel_stats_blocked(g, x, ch, eps)
    }
}

simd_fn! {
    /// y = act(γ·(x − μ)·s + β) over every channel of sample `n` (`yn`).
    #[allow(clippy::too_many_arguments)]
    fn normalize_sample<T: Real>(
        g: &BnGeom,
        x: &[T],
        yn: &mut [T],
        n: usize,
        gb: &[T],
        mean: &[T],
        invstd: &[T],
        act: Act,
    ) {
        let (c, hw) = (g.c, g.hw);
        with_act(act, |act| {
            for ch in 0..c {
                let o = (n * c + ch) * hw;
                norm::normalize_plane(
                    &x[o..o + hw],
                    &mut yn[ch * hw..(ch + 1) * hw],
                    gb[ch],
                    gb[c + ch],
                    mean[ch],
                    invstd[ch],
                    act,
                );
            }
        })
    }
}

/// Training-mode batch norm forward: statistics per channel in parallel,
/// then each sample normalized in parallel.
#[allow(clippy::too_many_arguments)]
pub fn bn_forward_train<T: Scratch>(
    g: &BnGeom,
    x: &[T],
    y: &mut [T],
    gb: &[T],
    stats: &mut [T],
    eps: T,
    act: Act,
    pending: Option<Pending<'_, T>>,
) {
    let c = g.c;
    let (mean, invstd) = stats[..2 * c].split_at_mut(c);
    match pending {
        Some(p) => {
            let (pm, pv) = p.out[..2 * c].split_at_mut(c);
            let (run, mom) = (p.running, p.momentum);
            mean.par_iter_mut()
                .zip(invstd.par_iter_mut())
                .zip(pm.par_iter_mut().zip(pv.par_iter_mut()))
                .enumerate()
                .for_each(|(ch, ((m, i), (rm, rv)))| {
                    let (mu, is, m2) = stats_ch(g, x, ch, eps);
                    (*m, *i) = (mu, is);
                    (*rm, *rv) = norm::running_update(g, run, ch, mu, m2, mom);
                });
        }
        None => {
            mean.par_iter_mut()
                .zip(invstd.par_iter_mut())
                .enumerate()
                .for_each(|(ch, (m, i))| {
                    let (mu, is, _) = stats_ch(g, x, ch, eps);
                    (*m, *i) = (mu, is);
                });
        }
    }
    let (mean, invstd): (&[T], &[T]) = (mean, invstd);
    per_sample(g, y, |n, yn| {
        normalize_sample(g, x, yn, n, gb, mean, invstd, act)
    });
}

/// Evaluation-mode batch norm forward, each sample in parallel.
#[allow(clippy::too_many_arguments)]
pub fn bn_forward_eval<T: Scratch>(
    g: &BnGeom,
    x: &[T],
    y: &mut [T],
    gb: &[T],
    running: &[T],
    eps: T,
    act: Act,
) {
    let c = g.c;
    let mut invstd = Buf::<T>::take(c);
    for (ch, i) in invstd.iter_mut().enumerate() {
        *i = T::ONE / (running[c + ch] + eps).sqrt();
    }
    let invstd: &[T] = &invstd;
    per_sample(g, y, |n, yn| {
        normalize_sample(g, x, yn, n, gb, &running[..c], invstd, act)
    });
}

/// Calls `f` with `act` as a constant, so that an elementwise loop over
/// `act.f` compiles once per activation, without a branch per element.
#[inline(always)]
pub fn with_act<R>(act: Act, mut f: impl FnMut(Act) -> R) -> R {
    match act {
        Act::Identity => f(Act::Identity),
        Act::Relu => f(Act::Relu),
        Act::Tanh => f(Act::Tanh),
        Act::Sigmoid => f(Act::Sigmoid),
    }
}

/// Runs `f(n, sample n's values)` over the samples of an N×C×HW block in
/// parallel.
fn per_sample<T: Send>(g: &BnGeom, y: &mut [T], f: impl Fn(usize, &mut [T]) + Sync) {
    y[..g.len()]
        .par_chunks_mut(g.c * g.hw)
        .enumerate()
        .for_each(|(n, yn)| f(n, yn));
}

simd_fn! {
    /// The backward sums of channel `ch` ([`norm::backward_sums_blocked`]).
    fn backward_sums_ch<T: Real>(g: &BnGeom, x: &[T], dy: &[T], ch: usize, stats: &[T]) -> (T, T) {
        norm::backward_sums_blocked(g, x, dy, ch, stats[ch], stats[g.c + ch])
    }
}

simd_fn! {
    /// The input gradient of every channel of sample `n` (`dxn`).
    #[allow(clippy::too_many_arguments)]
    fn backward_sample<T: Real>(
        g: &BnGeom,
        x: &[T],
        dy: &[T],
        dxn: &mut [T],
        n: usize,
        acc: bool,
        gb: &[T],
        stats: &[T],
        sums: &[T],
    ) {
        let (c, hw) = (g.c, g.hw);
        for ch in 0..c {
            let o = (n * c + ch) * hw;
            norm::backward_plane(
                g,
                &x[o..o + hw],
                &dy[o..o + hw],
                &mut dxn[ch * hw..(ch + 1) * hw],
                acc,
                gb[ch],
                (stats[ch], stats[c + ch]),
                (sums[ch], sums[c + ch]),
            );
        }
    }
}

/// Training-mode batch norm backward.
#[allow(clippy::too_many_arguments)]
pub fn bn_backward<T: Scratch>(
    g: &BnGeom,
    x: &[T],
    dy: &[T],
    gb: &[T],
    stats: &[T],
    dx: Option<Dx<'_, T>>,
    dp: Option<Dp<'_, T>>,
) {
    let c = g.c;
    let mut sums = Buf::<T>::take(2 * c);
    {
        let (s1, s2) = sums.split_at_mut(c);
        s1.par_iter_mut()
            .zip(s2.par_iter_mut())
            .enumerate()
            .for_each(|(ch, (a, b))| {
                (*a, *b) = backward_sums_ch(g, x, dy, ch, stats);
            });
    }
    if let Some(p) = dp {
        for ch in 0..c {
            norm::put(&mut p.out[ch], sums[c + ch], p.alpha, p.beta);
            norm::put(&mut p.out[c + ch], sums[ch], p.alpha, p.beta);
        }
    }
    if let Some(d) = dx {
        let acc = d.acc;
        let sums: &[T] = &sums;
        per_sample(g, d.dx, |n, dxn| {
            backward_sample(g, x, dy, dxn, n, acc, gb, stats, sums)
        });
    }
}

simd_fn! {
    /// mean(R{x}) and mean(x̂·R{x}) of channel `ch`.
    fn r_forward_means_ch<T: Real>(g: &BnGeom, x: &[T], rx: &[T], ch: usize, stats: &[T]) -> (T, T) {
        norm::r_forward_means_blocked(g, x, rx, ch, stats[ch], stats[g.c + ch])
    }
}

simd_fn! {
    /// R{y} over every channel of sample `n` (`ryn`).
    #[allow(clippy::too_many_arguments)]
    fn r_forward_sample<T: Real>(
        g: &BnGeom,
        x: &[T],
        rx: Option<&[T]>,
        ryn: &mut [T],
        n: usize,
        gb: &[T],
        vgb: &[T],
        stats: &[T],
        rstats: &[T],
    ) {
        let (c, hw) = (g.c, g.hw);
        for ch in 0..c {
            let o = (n * c + ch) * hw;
            norm::r_forward_plane(
                &x[o..o + hw],
                rx.map(|v| &v[o..o + hw]),
                &mut ryn[ch * hw..(ch + 1) * hw],
                (gb[ch], vgb[ch], vgb[c + ch]),
                (stats[ch], stats[c + ch]),
                (rstats[ch], rstats[c + ch]),
            );
        }
    }
}

/// Batch norm R-forward.
#[allow(clippy::too_many_arguments)]
pub fn bn_r_forward<T: Scratch>(
    g: &BnGeom,
    x: &[T],
    rx: Option<&[T]>,
    gb: &[T],
    vgb: &[T],
    stats: &[T],
    ry: &mut [T],
    rstats: &mut [T],
) {
    let c = g.c;
    {
        let (ma, mb) = rstats[..2 * c].split_at_mut(c);
        ma.par_iter_mut()
            .zip(mb.par_iter_mut())
            .enumerate()
            .for_each(|(ch, (a, b))| {
                (*a, *b) = match rx {
                    Some(rx) => r_forward_means_ch(g, x, rx, ch, stats),
                    None => (T::ZERO, T::ZERO),
                };
            });
    }
    let rstats: &[T] = rstats;
    per_sample(g, ry, |n, ryn| {
        r_forward_sample(g, x, rx, ryn, n, gb, vgb, stats, rstats)
    });
}

simd_fn! {
    /// The R-backward sums of channel `ch`, packed (Σdy, Σdy·x̂, ΣR{dy},
    /// ΣR{dy}·x̂, Σdy·R{x̂}).
    fn r_backward_sums_ch<T: Real>(g: &BnGeom, a: &RBack<'_, T>, ch: usize, out: &mut [T]) {
        let r = norm::r_backward_sums_blocked(g, a, ch);
        out.copy_from_slice(&[r.dy, r.dyx, r.rdy, r.rdyx, r.dyrxh]);
    }
}

/// The sums of channel `ch` packed by [`r_backward_sums_ch`].
fn unpack<T: Real>(packed: &[T], ch: usize) -> RSums<T> {
    let s = &packed[5 * ch..5 * ch + 5];
    RSums {
        dy: s[0],
        dyx: s[1],
        rdy: s[2],
        rdyx: s[3],
        dyrxh: s[4],
    }
}

simd_fn! {
    /// R{dx} over every channel of sample `n` (`dxn`).
    fn r_backward_sample<T: Real>(
        g: &BnGeom,
        a: &RBack<'_, T>,
        packed: &[T],
        dxn: &mut [T],
        n: usize,
        acc: bool,
    ) {
        let (c, hw) = (g.c, g.hw);
        for ch in 0..c {
            let o = (n * c + ch) * hw;
            let s = unpack(packed, ch);
            norm::r_backward_plane(g, a, ch, o, &s, &mut dxn[ch * hw..(ch + 1) * hw], acc);
        }
    }
}

/// Batch norm R-backward.
pub fn bn_r_backward<T: Scratch>(
    g: &BnGeom,
    a: &RBack<'_, T>,
    rdx: Option<Dx<'_, T>>,
    rsums: &mut [T],
) {
    let c = g.c;
    let mut packed = Buf::<T>::take(5 * c);
    packed
        .par_chunks_mut(5)
        .enumerate()
        .for_each(|(ch, s)| r_backward_sums_ch(g, a, ch, s));
    for ch in 0..c {
        let s = unpack(&packed, ch);
        rsums[ch] = s.rdyx + s.dyrxh;
        rsums[c + ch] = s.rdy;
    }
    if let Some(d) = rdx {
        let acc = d.acc;
        let packed: &[T] = &packed;
        per_sample(g, d.dx, |n, dxn| {
            r_backward_sample(g, a, packed, dxn, n, acc)
        });
    }
}

/// Whether pooling windows neither overlap nor leave the input (no
/// padding, stride ≥ window, or a single window): then the planes run on
/// [`tiled`] loops without the window clipping of the kernel's.
fn tiles(g: &PoolGeom) -> bool {
    g.pad == 0
        && ((g.stride >= g.kh && g.stride >= g.kw) || (g.oh == 1 && g.ow == 1))
        && (g.oh - 1) * g.stride + g.kh <= g.h
        && (g.ow - 1) * g.stride + g.kw <= g.w
}

/// The per-plane pooling loops for [`tiles`] geometries: the kernel's
/// arithmetic (same comparisons, same order of additions, first maximum
/// of a window in row-major order), so the results are its own bit for
/// bit.
mod tiled {
    use super::{PoolGeom, Real};
    use fdgr_kernel::serial::PoolKind;

    /// Index of the first maximum of the window at `o` (its top-left).
    #[inline(always)]
    fn argmax<T: Real>(g: &PoolGeom, x: &[T], o: usize) -> usize {
        if g.kh == 2 && g.kw == 2 {
            // selects rather than branches (the comparisons are data)
            let (a, b, c, d) = (x[o], x[o + 1], x[o + g.w], x[o + g.w + 1]);
            let (mut i, mut m) = (0, a);
            let t = b > m;
            i = if t { 1 } else { i };
            m = if t { b } else { m };
            let t = c > m;
            i = if t { g.w } else { i };
            m = if t { c } else { m };
            i = if d > m { g.w + 1 } else { i };
            return o + i;
        }
        let mut best = o;
        for iy in 0..g.kh {
            for ix in 0..g.kw {
                let i = o + iy * g.w + ix;
                if x[i] > x[best] {
                    best = i;
                }
            }
        }
        best
    }

    /// Top-left input index of each output, in output order.
    #[inline(always)]
    fn origins(g: &PoolGeom) -> impl Iterator<Item = usize> + '_ {
        (0..g.oh).flat_map(move |oy| (0..g.ow).map(move |ox| (oy * g.w + ox) * g.stride))
    }

    pub fn forward<T: Real>(g: &PoolGeom, x: &[T], y: &mut [T]) {
        if g.kind == PoolKind::Max && (g.kh, g.kw, g.stride) == (2, 2, 2) {
            // the window's maximum as `v > m ? v : m` in window order
            // (what the first-maximum search returns), a row at a time
            for (oy, yr) in y.chunks_exact_mut(g.ow).enumerate() {
                let r0 = &x[2 * oy * g.w..][..2 * g.ow];
                let r1 = &x[(2 * oy + 1) * g.w..][..2 * g.ow];
                for ((yo, p), q) in yr
                    .iter_mut()
                    .zip(r0.chunks_exact(2))
                    .zip(r1.chunks_exact(2))
                {
                    let mut m = p[0];
                    m = if p[1] > m { p[1] } else { m };
                    m = if q[0] > m { q[0] } else { m };
                    *yo = if q[1] > m { q[1] } else { m };
                }
            }
            return;
        }
        let inv = T::ONE / T::from_usize(g.kh * g.kw);
        for (yo, o) in y.iter_mut().zip(origins(g)) {
            *yo = match g.kind {
                PoolKind::Max => x[argmax(g, x, o)],
                PoolKind::Avg => {
                    let mut s = T::ZERO;
                    for iy in 0..g.kh {
                        for v in &x[o + iy * g.w..o + iy * g.w + g.kw] {
                            s += *v;
                        }
                    }
                    s * inv
                }
            };
        }
    }

    pub fn backward<T: Real>(g: &PoolGeom, x: &[T], dy: &[T], dx: &mut [T], acc: bool) {
        if g.kind == PoolKind::Max && (g.kh, g.kw, g.stride) == (2, 2, 2) {
            // dx (zeroed unless accumulating) += dy at each window's first
            // maximum, found by selects and added at a computed index (the
            // comparisons are data: no branches)
            if !acc {
                dx.fill(T::ZERO);
            }
            let (w, ow) = (g.w, g.ow);
            for (oy, dr) in dy.chunks_exact(ow).enumerate() {
                let xa = &x[2 * oy * w..][..2 * ow];
                let xb = &x[(2 * oy + 1) * w..][..2 * ow];
                let pair = &mut dx[2 * oy * w..(2 * oy + 2) * w];
                let rows = xa.chunks_exact(2).zip(xb.chunks_exact(2));
                for (ox, (d, (p, q))) in dr.iter().zip(rows).enumerate() {
                    let (mut i, mut m) = (0, p[0]);
                    let t = p[1] > m;
                    i = if t { 1 } else { i };
                    m = if t { p[1] } else { m };
                    let t = q[0] > m;
                    i = if t { w } else { i };
                    m = if t { q[0] } else { m };
                    i = if q[1] > m { w + 1 } else { i };
                    pair[2 * ox + i] += *d;
                }
            }
            return;
        }
        if !acc {
            dx.fill(T::ZERO);
        }
        let inv = T::ONE / T::from_usize(g.kh * g.kw);
        for (d, o) in dy.iter().zip(origins(g)) {
            match g.kind {
                PoolKind::Max => dx[argmax(g, x, o)] += *d,
                PoolKind::Avg => {
                    let d = *d * inv;
                    for iy in 0..g.kh {
                        for v in &mut dx[o + iy * g.w..o + iy * g.w + g.kw] {
                            *v += d;
                        }
                    }
                }
            }
        }
    }

    pub fn r_forward<T: Real>(g: &PoolGeom, x: &[T], rx: &[T], ry: &mut [T]) {
        match g.kind {
            PoolKind::Max => {
                for (r, o) in ry.iter_mut().zip(origins(g)) {
                    *r = rx[argmax(g, x, o)];
                }
            }
            PoolKind::Avg => forward(g, rx, ry),
        }
    }
}

simd_fn! {
    /// [`tiled::forward`].
    fn tiled_forward<T: Real>(g: &PoolGeom, x: &[T], y: &mut [T]) {
        tiled::forward(g, x, y)
    }
}

simd_fn! {
    /// [`tiled::backward`].
    fn tiled_backward<T: Real>(g: &PoolGeom, x: &[T], dy: &[T], dx: &mut [T], acc: bool) {
        tiled::backward(g, x, dy, dx, acc)
    }
}

simd_fn! {
    /// [`tiled::r_forward`].
    fn tiled_r_forward<T: Real>(g: &PoolGeom, x: &[T], rx: &[T], ry: &mut [T]) {
        tiled::r_forward(g, x, rx, ry)
    }
}

/// Pooling forward, planes in parallel.
pub fn pool_forward<T: Real>(g: &PoolGeom, x: &[T], y: &mut [T]) {
    let (hw, ohw) = (g.h * g.w, g.oh * g.ow);
    let t = tiles(g);
    y[..g.y_len()]
        .par_chunks_mut(ohw)
        .zip(x[..g.x_len()].par_chunks(hw))
        .for_each(|(yp, xp)| {
            if t {
                tiled_forward(g, xp, yp)
            } else {
                pool::forward_plane(g, xp, yp)
            }
        });
}

/// Pooling backward, planes in parallel.
pub fn pool_backward<T: Real>(g: &PoolGeom, x: &[T], dy: &[T], dx: &mut [T], acc: bool) {
    let (hw, ohw) = (g.h * g.w, g.oh * g.ow);
    let t = tiles(g);
    dx[..g.x_len()]
        .par_chunks_mut(hw)
        .zip(x[..g.x_len()].par_chunks(hw))
        .zip(dy[..g.y_len()].par_chunks(ohw))
        .for_each(|((dxp, xp), dyp)| {
            if t {
                tiled_backward(g, xp, dyp, dxp, acc)
            } else {
                pool::backward_plane(g, xp, dyp, dxp, acc)
            }
        });
}

/// Pooling R-forward, planes in parallel.
pub fn pool_r_forward<T: Real>(g: &PoolGeom, x: &[T], rx: &[T], ry: &mut [T]) {
    let (hw, ohw) = (g.h * g.w, g.oh * g.ow);
    let t = tiles(g);
    ry[..g.y_len()]
        .par_chunks_mut(ohw)
        .zip(x[..g.x_len()].par_chunks(hw))
        .zip(rx[..g.x_len()].par_chunks(hw))
        .for_each(|((ryp, xp), rxp)| {
            if t {
                tiled_r_forward(g, xp, rxp, ryp)
            } else {
                pool::r_forward_plane(g, xp, rxp, ryp)
            }
        });
}

/// Elements per parallel chunk of an elementwise primitive.
const CHUNK: usize = 1 << 14;

/// Per-channel bias + activation in place: samples in parallel (planes)
/// or row blocks (vectors).
pub fn bias_act<T: Real>(z: &mut [T], bias: Option<&[T]>, c: usize, hw: usize, a: Act) {
    let per = c * hw;
    if z.len() < 2 * CHUNK || per == 0 {
        return bias_act_block(z, bias, c, hw, a);
    }
    let rows = (CHUNK / per).max(1);
    z.par_chunks_mut(rows * per)
        .for_each(|zc| bias_act_block(zc, bias, c, hw, a));
}

/// out ← β·out + α·(per-channel sums). Planes (HW > 1): channels in
/// parallel, each plane summed in [`norm::LANES`] interleaved partial sums
/// (vectorized; the kernel's sums rounded in another fixed order).
/// Vectors (HW = 1, a linear layer's bias): the kernel's column sums,
/// bit for bit.
pub fn chan_sum<T: Real>(out: &mut [T], m: &[T], c: usize, hw: usize, alpha: T, beta: T) {
    if hw == 1 {
        return col_sum(&mut out[..c], m, alpha, beta);
    }
    let n = m.len() / (c * hw).max(1);
    out[..c].par_iter_mut().enumerate().for_each(|(ch, o)| {
        let mut acc = if beta == T::ZERO { T::ZERO } else { beta * *o };
        for s in 0..n {
            acc += alpha * plane_sum(&m[(s * c + ch) * hw..(s * c + ch + 1) * hw]);
        }
        *o = acc;
    });
}

simd_fn! {
    /// [`act::col_sum`].
    fn col_sum<T: Real>(out: &mut [T], m: &[T], alpha: T, beta: T) {
        act::col_sum(out, m, alpha, beta)
    }
}

simd_fn! {
    /// Σ p in [`norm::LANES`] interleaved partial sums, added pairwise.
    fn plane_sum<T: Real>(p: &[T]) -> T {
    const L: usize = norm::LANES;
    let mut acc = [T::ZERO; L];
    let mut chunks = p.chunks_exact(L);
    for ch in &mut chunks {
        let ch: &[T; L] = ch.try_into().expect("a chunk of L values");
        for l in 0..L {
            acc[l] += ch[l];
        }
    }
    for (a, v) in acc.iter_mut().zip(chunks.remainder()) {
        *a += *v;
    }
    let mut w = L;
    while w > 1 {
        w /= 2;
        for l in 0..w {
            acc[l] += acc[l + w];
        }
    }
    acc[0]
}
}

simd_fn! {
    /// [`act::bias_act_chw`] on a block of whole samples.
    fn bias_act_block<T: Real>(z: &mut [T], bias: Option<&[T]>, c: usize, hw: usize, a: Act) {
        with_act(a, |a| act::bias_act_chw(z, bias, c, hw, a))
    }
}

simd_fn! {
    /// y ← a + b ([`vecops::add`]).
    pub fn ew_add<T: Real>(y: &mut [T], a: &[T], b: &[T]) {
        vecops::add(y, a, b)
    }
}

simd_fn! {
    /// y ← β·y + α·x ([`vecops::axpby`]).
    pub fn ew_axpby<T: Real>(y: &mut [T], x: &[T], alpha: T, beta: T) {
        vecops::axpby(y, x, alpha, beta)
    }
}

simd_fn! {
    /// y ← y + a·x ([`vecops::axpy`]).
    pub fn ew_axpy<T: Real>(y: &mut [T], a: T, x: &[T]) {
        vecops::axpy(y, a, x)
    }
}

simd_fn! {
    /// y ← σ(x) ([`act::act_map`]).
    pub fn ew_act_map<T: Real>(y: &mut [T], x: &[T], a: Act) {
        with_act(a, |a| act::act_map(y, x, a))
    }
}

simd_fn! {
    /// δ ← δ ⊙ σ'(a) ([`act::act_backward`]).
    pub fn ew_act_backward<T: Real>(d: &mut [T], av: &[T], a: Act) {
        with_act(a, |a| act::act_backward(d, av, a))
    }
}

simd_fn! {
    /// R{a} ← σ'(a) ⊙ R{z} ([`act::r_act`]).
    pub fn ew_r_act<T: Real>(ra: &mut [T], rz: &[T], av: &[T], a: Act) {
        with_act(a, |a| act::r_act(ra, rz, av, a))
    }
}

simd_fn! {
    /// R{δz} in place ([`act::r_act_backward`]).
    pub fn ew_r_act_backward<T: Real>(rd: &mut [T], rz: &[T], av: &[T], dz: &[T], a: Act) {
        with_act(a, |a| act::r_act_backward(rd, rz, av, dz, a))
    }
}

/// Runs an elementwise slice function on matching chunks in parallel.
pub fn chunked<T: Send + Sync>(y: &mut [T], xs: &[&[T]], f: impl Fn(&mut [T], &[&[T]]) + Sync) {
    if y.len() < 2 * CHUNK {
        return f(y, xs);
    }
    y.par_chunks_mut(CHUNK).enumerate().for_each(|(i, yc)| {
        let lo = i * CHUNK;
        let hi = lo + yc.len();
        let parts: [&[T]; 4] = core::array::from_fn(|k| xs.get(k).map_or(&[][..], |x| &x[lo..hi]));
        f(yc, &parts[..xs.len()]);
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use fdgr_kernel::serial::conv as sconv;
    use fdgr_kernel::serial::pool::PoolKind;

    fn data(n: usize, seed: usize) -> Vec<f64> {
        (0..n)
            .map(|i| (((i * 7919 + seed * 104729) % 211) as f64 - 105.0) / 50.0)
            .collect()
    }

    fn pool2() -> rayon::ThreadPool {
        rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap()
    }

    fn close(what: &str, want: &[f64], got: &[f64], tol: f64) {
        assert_eq!(want.len(), got.len(), "{what}");
        let scale = want.iter().fold(1e-300f64, |s, v| s.max(v.abs()));
        let err = want
            .iter()
            .zip(got)
            .fold(0.0f64, |s, (a, b)| s.max((a - b).abs()));
        assert!(
            err <= tol * scale,
            "{what}: max diff {err:e} (scale {scale:e})"
        );
    }

    #[allow(clippy::too_many_arguments)]
    fn conv(
        n: usize,
        c: usize,
        k_out: usize,
        hw: (usize, usize),
        k: usize,
        stride: usize,
        pad: usize,
        groups: usize,
    ) -> ConvGeom {
        ConvGeom {
            n,
            c,
            h: hw.0,
            w: hw.1,
            k_out,
            k,
            stride,
            pad,
            groups,
            oh: (hw.0 + 2 * pad - k) / stride + 1,
            ow: (hw.1 + 2 * pad - k) / stride + 1,
        }
    }

    /// Every convolution path (im2col with and without a padded leading
    /// dimension, 1×1, strided, grouped, the transposed-forward input
    /// gradient and the col2im one) against the kernel's direct loops.
    #[test]
    fn convolution_matches_serial_loops() {
        let p = pool2();
        for g in [
            conv(3, 16, 16, (16, 16), 3, 1, 1, 1),
            conv(3, 3, 16, (32, 32), 3, 1, 1, 1),
            conv(2, 8, 12, (16, 16), 3, 2, 1, 1),
            conv(3, 6, 16, (14, 14), 5, 1, 0, 1),
            conv(2, 4, 6, (28, 28), 5, 1, 2, 1),
            conv(3, 4, 8, (16, 16), 1, 2, 0, 1),
            conv(2, 8, 8, (16, 16), 1, 1, 0, 2),
            conv(2, 8, 8, (16, 16), 3, 1, 1, 2),
            conv(2, 4, 4, (9, 7), 3, 1, 1, 4),
            conv(2, 4, 6, (7, 9), 3, 1, 2, 2),
            conv(2, 16, 16, (16, 16), 3, 1, 1, 2),
            conv(2, 12, 12, (9, 9), 3, 2, 1, 2),
            conv(2, 8, 4, (12, 12), 3, 1, 1, 1),
        ] {
            let x = data(g.x_len(), 1);
            let w = data(g.w_len(), 2);
            let dy = data(g.y_len(), 3);
            for (alpha, beta) in [(1.0, 0.0), (0.5, 2.0)] {
                let what = format!("{g:?} α={alpha} β={beta}");
                let mut want = data(g.y_len(), 4);
                let mut got = want.clone();
                sconv::forward(&g, &x, &w, &mut want, alpha, beta);
                p.install(|| conv_forward(&g, &x, &w, &mut got, alpha, beta));
                close(&format!("forward {what}"), &want, &got, 1e-12);
                let mut want = data(g.x_len(), 5);
                let mut got = want.clone();
                sconv::backward_data(&g, &dy, &w, &mut want, alpha, beta);
                p.install(|| conv_backward_data(&g, &dy, &w, &mut got, alpha, beta));
                close(&format!("data {what}"), &want, &got, 1e-12);
                let mut want = data(g.w_len(), 6);
                let mut got = want.clone();
                sconv::backward_filter(&g, &x, &dy, &mut want, alpha, beta);
                p.install(|| conv_backward_filter(2, &g, &x, &dy, &mut got, alpha, beta));
                close(&format!("filter {what}"), &want, &got, 1e-12);
            }
        }
    }

    /// Batch norm's blocked statistics and the parallel passes against
    /// the kernel's serial loops, with and without R{x} and accumulation.
    #[test]
    fn batch_norm_matches_serial_loops() {
        let p = pool2();
        for (n, c, hw) in [(4, 3, 64), (3, 5, 49), (8, 4, 1)] {
            let g = BnGeom { n, c, hw };
            let (x, rx, dy, rdy) = (
                data(g.len(), 1),
                data(g.len(), 2),
                data(g.len(), 3),
                data(g.len(), 4),
            );
            let gb = data(2 * c, 5);
            let vgb = data(2 * c, 6);
            let run: Vec<f64> = data(2 * c, 7).iter().map(|v| v.abs() + 0.1).collect();
            for act in [Act::Identity, Act::Relu, Act::Tanh] {
                let (mut y1, mut y2) = (vec![0.0; g.len()], vec![0.0; g.len()]);
                let (mut s1, mut s2) = (vec![0.0; 2 * c], vec![0.0; 2 * c]);
                let (mut o1, mut o2) = (vec![0.0; 2 * c], vec![0.0; 2 * c]);
                let pend = |out| Pending {
                    running: &run,
                    out,
                    momentum: 0.1,
                };
                norm::forward_train(
                    &g,
                    &x,
                    &mut y1,
                    &gb,
                    &mut s1,
                    1e-5,
                    act,
                    Some(pend(&mut o1)),
                );
                p.install(|| {
                    bn_forward_train(
                        &g,
                        &x,
                        &mut y2,
                        &gb,
                        &mut s2,
                        1e-5,
                        act,
                        Some(pend(&mut o2)),
                    )
                });
                close("bn forward", &y1, &y2, 1e-12);
                close("bn stats", &s1, &s2, 1e-12);
                close("bn running", &o1, &o2, 1e-12);
                norm::forward_eval(&g, &x, &mut y1, &gb, &run, 1e-5, act);
                p.install(|| bn_forward_eval(&g, &x, &mut y2, &gb, &run, 1e-5, act));
                close("bn eval", &y1, &y2, 1e-12);
            }
            let stats = {
                let mut s = vec![0.0; 2 * c];
                let mut y = vec![0.0; g.len()];
                norm::forward_train(&g, &x, &mut y, &gb, &mut s, 1e-5, Act::Identity, None);
                s
            };
            for acc in [false, true] {
                let (mut d1, mut d2) = (data(g.len(), 8), data(g.len(), 8));
                let (mut p1, mut p2) = (data(2 * c, 9), data(2 * c, 9));
                fn dx(dx: &mut [f64], acc: bool) -> Option<Dx<'_, f64>> {
                    Some(Dx { dx, acc })
                }
                fn dp(out: &mut [f64]) -> Option<Dp<'_, f64>> {
                    Some(Dp {
                        out,
                        alpha: 0.5,
                        beta: 2.0,
                    })
                }
                norm::backward(&g, &x, &dy, &gb, &stats, dx(&mut d1, acc), dp(&mut p1));
                p.install(|| bn_backward(&g, &x, &dy, &gb, &stats, dx(&mut d2, acc), dp(&mut p2)));
                close("bn backward dx", &d1, &d2, 1e-12);
                close("bn backward dp", &p1, &p2, 1e-12);
                for rxo in [Some(&rx[..]), None] {
                    let (mut r1, mut r2) = (vec![0.0; g.len()], vec![0.0; g.len()]);
                    let (mut rs1, mut rs2) = (vec![0.0; 2 * c], vec![0.0; 2 * c]);
                    norm::r_forward(&g, &x, rxo, &gb, &vgb, &stats, &mut r1, &mut rs1);
                    p.install(|| bn_r_forward(&g, &x, rxo, &gb, &vgb, &stats, &mut r2, &mut rs2));
                    close("bn r-forward", &r1, &r2, 1e-12);
                    close("bn r-forward stats", &rs1, &rs2, 1e-12);
                    let a = RBack {
                        x: &x,
                        rx: rxo,
                        dy: &dy,
                        rdy: &rdy,
                        gb: &gb,
                        vgb: &vgb,
                        stats: &stats,
                        rstats: &rs1,
                    };
                    let (mut q1, mut q2) = (data(g.len(), 10), data(g.len(), 10));
                    let (mut u1, mut u2) = (vec![0.0; 2 * c], vec![0.0; 2 * c]);
                    norm::r_backward(&g, &a, dx(&mut q1, acc), &mut u1);
                    p.install(|| bn_r_backward(&g, &a, dx(&mut q2, acc), &mut u2));
                    close("bn r-backward", &q1, &q2, 1e-12);
                    close("bn r-backward sums", &u1, &u2, 1e-12);
                }
            }
        }
    }

    /// Pooling (max and average, with and without padding, windows equal
    /// to and overlapping the stride) against the kernel's serial loops.
    #[test]
    fn pooling_matches_serial_loops() {
        let p = pool2();
        for kind in [PoolKind::Max, PoolKind::Avg] {
            for (h, w, k, stride, pad) in [
                (28, 28, 2, 2, 0),
                (10, 10, 2, 2, 0),
                (9, 7, 2, 2, 0),
                (8, 8, 3, 2, 1),
                (7, 9, 3, 1, 1),
                (6, 6, 6, 1, 0),
                (8, 8, 8, 1, 0),
                (9, 11, 3, 3, 0),
                (7, 7, 2, 3, 0),
            ] {
                let g = PoolGeom {
                    kind,
                    n: 3,
                    c: 4,
                    h,
                    w,
                    kh: k,
                    kw: k,
                    stride,
                    pad,
                    oh: (h + 2 * pad - k) / stride + 1,
                    ow: (w + 2 * pad - k) / stride + 1,
                };
                // ties (repeated values) exercise the first-maximum rule
                let x: Vec<f64> = data(g.x_len(), 1)
                    .iter()
                    .map(|v| (v * 2.0).round())
                    .collect();
                let rx = data(g.x_len(), 2);
                let dy = data(g.y_len(), 3);
                let what = format!("{g:?}");
                let (mut y1, mut y2) = (vec![0.0; g.y_len()], vec![0.0; g.y_len()]);
                pool::forward(&g, &x, &mut y1);
                p.install(|| pool_forward(&g, &x, &mut y2));
                assert_eq!(y1, y2, "forward {what}");
                pool::r_forward(&g, &x, &rx, &mut y1);
                p.install(|| pool_r_forward(&g, &x, &rx, &mut y2));
                assert_eq!(y1, y2, "r-forward {what}");
                for acc in [false, true] {
                    let (mut d1, mut d2) = (data(g.x_len(), 4), data(g.x_len(), 4));
                    pool::backward(&g, &x, &dy, &mut d1, acc);
                    p.install(|| pool_backward(&g, &x, &dy, &mut d2, acc));
                    assert_eq!(d1, d2, "backward {what} acc={acc}");
                }
            }
        }
    }

    /// The SSE transpose of f32 equals the element loop (bit for bit),
    /// edges and β included.
    #[test]
    fn transpose_matches_scalar() {
        for (rows, cols) in [(4, 4), (7, 9), (16, 33), (3, 2), (1, 5), (12, 1)] {
            let (ls, ld) = (cols + 3, rows + 5);
            let src: Vec<f32> = data(rows * ls, 1).iter().map(|v| *v as f32).collect();
            for beta in [0.0f32, 0.5] {
                let mut a: Vec<f32> = data(cols * ld, 2).iter().map(|v| *v as f32).collect();
                let mut b = a.clone();
                <f32 as Scratch>::transpose(&src, ls, &mut a, ld, rows, cols, beta);
                transpose_scalar(&src, ls, &mut b, ld, rows, cols, beta);
                assert_eq!(a, b, "{rows}×{cols} β={beta}");
                for r in 0..rows {
                    for c in 0..cols {
                        if beta == 0.0 {
                            assert_eq!(a[c * ld + r], src[r * ls + c]);
                        }
                    }
                }
            }
        }
    }
}
