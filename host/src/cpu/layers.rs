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
//! `fdgr_kernel::serial::act`, `fdgr_kernel::serial::vecops`), except for the order of
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

use fdgr_kernel::serial::act::{self, Act};
use fdgr_kernel::serial::conv::{self, col2im_add, im2col_ld, ConvGeom};
use fdgr_kernel::serial::norm::{self, BnGeom, Dp, Dx, Pending, RBack, RSums};
use fdgr_kernel::serial::pool::{self, PoolGeom};
use fdgr_kernel::serial::vecops;
use fdgr_kernel::Real;
use rayon::prelude::*;
use std::sync::Mutex;

/// Scalars with a pool of reusable scratch buffers (so a training step
/// allocates nothing once the buffers have grown to their sizes), a tuned
/// transpose and tuned batch-norm sums.
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

    /// The batch statistics of channel `ch`
    /// ([`norm::channel_stats_blocked`], bit for bit).
    #[inline]
    fn bn_stats(g: &BnGeom, x: &[Self], ch: usize, eps: Self) -> (Self, Self, Self) {
        norm::channel_stats_blocked(g, x, ch, eps)
    }

    /// The backward sums of channel `ch` (Σdy, Σdy·x̂:
    /// [`norm::backward_sums_blocked`], bit for bit).
    #[inline]
    fn bn_backward_sums(
        g: &BnGeom,
        x: &[Self],
        dy: &[Self],
        ch: usize,
        mu: Self,
        is: Self,
    ) -> (Self, Self) {
        norm::backward_sums_blocked(g, x, dy, ch, mu, is)
    }
}

impl Scratch for f32 {
    #[cfg(target_arch = "x86_64")]
    fn bn_stats(g: &BnGeom, x: &[f32], ch: usize, eps: f32) -> (f32, f32, f32) {
        if batchnorm::lanes_fit(g, x.len()) && std::arch::is_x86_feature_detected!("avx2") {
            let k = norm::pilot_mean(g, x, ch);
            // SAFETY: the CPU has AVX2 (detected just above).
            let [s1, s2] = unsafe { batchnorm::stats_lanes_avx2(g, x, ch, k) };
            return norm::shifted_stats(g, k, norm::reduce_lanes(s1), norm::reduce_lanes(s2), eps);
        }
        norm::channel_stats_blocked(g, x, ch, eps)
    }

    #[cfg(target_arch = "x86_64")]
    fn bn_backward_sums(
        g: &BnGeom,
        x: &[f32],
        dy: &[f32],
        ch: usize,
        mu: f32,
        is: f32,
    ) -> (f32, f32) {
        let n = x.len().min(dy.len());
        if batchnorm::lanes_fit(g, n) && std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2 (detected just above).
            let [a, b] = unsafe { batchnorm::backward_lanes_avx2(g, x, dy, ch, mu, is) };
            return (norm::reduce_lanes(a), norm::reduce_lanes(b));
        }
        norm::backward_sums_blocked(g, x, dy, ch, mu, is)
    }

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
    fast_gemm(1, ta, tb, m, n, k, alpha, a, b, beta, c)
}

/// Below this many multiply-adds a product runs on the kernel's serial loops.
const SMALL_GEMM: usize = 1 << 15;

/// A row-major GEMM (the kernel's convention, C ← α·op(A)·op(B) + β·C)
/// on the `gemm` crate with `threads` threads; small products run on the
/// kernel's serial loops.
#[allow(clippy::too_many_arguments)]
pub fn fast_gemm<T: Real>(
    threads: usize,
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
    assert!(
        a.len() >= m * k && b.len() >= k * n && c.len() >= m * n,
        "gemm operand sizes"
    );
    if m * n * k < SMALL_GEMM || k == 0 {
        return vecops::gemm(ta, tb, m, n, k, alpha, a, b, beta, c);
    }
    let lhs = if ta { (a, 1, m) } else { (a, k, 1) };
    let rhs = if tb { (b, 1, k) } else { (b, n, 1) };
    let par = if threads > 1 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    strided(par, m, n, k, alpha, lhs, rhs, beta, c, n);
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
    if k == 0 {
        for row in c.chunks_mut(ldc).take(m) {
            vecops::scale_or_zero(&mut row[..n], beta);
        }
        return;
    }
    strided(
        gemm::Parallelism::None,
        m,
        n,
        k,
        alpha,
        (a, ars, acs),
        (b, brs, bcs),
        beta,
        c,
        ldc,
    );
}

/// C ← α·A·B + β·C on the `gemm` crate with parallelism `par`, strided
/// operands (A m×k, B k×n, C m×n with rows `ldc` apart; m, n, k > 0): the
/// one call of the crate behind [`fast_gemm`] and [`gemm_s`].
#[allow(clippy::too_many_arguments)]
fn strided<T: Real>(
    par: gemm::Parallelism,
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
    let end =
        |rows: usize, cols: usize, rs: usize, cs: usize| (rows - 1) * rs + (cols - 1) * cs + 1;
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
            par,
        );
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

mod batchnorm;
mod convolution;
mod elementwise;
mod pooling;
#[cfg(test)]
mod tests;

pub use batchnorm::*;
pub use convolution::*;
pub use elementwise::*;
pub use pooling::*;
