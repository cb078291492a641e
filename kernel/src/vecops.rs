//! Vector operations on slices, and the dense matrix product, as plain
//! serial loops. They define the arithmetic (and its order) that every
//! CPU backend reproduces: the host runs the same functions on chunks in
//! parallel, the firmware runs them as they are.
//!
//! Reductions use 8 independent partial sums combined in a fixed tree, so
//! the compiler may vectorize them without changing a single bit, and a
//! Cortex-M computes exactly what an x86-64 computes. Long reductions
//! ([`dot`]) add such sums of [`DOT_BLOCK`] values as a binary tree
//! ([`pairwise`]), so their rounding error grows with the logarithm of the
//! length rather than with the length.

use crate::real::Real;

/// Number of partial sums in reductions.
pub const LANES: usize = 8;

/// Values per leaf of [`dot`]'s tree: each leaf is summed in [`LANES`]
/// partial sums (a power of two, so that aligned chunks of 2^k leaves are
/// subtrees: see [`pairwise`]).
pub const DOT_BLOCK: usize = 128;

/// Σ x_i·y_i with [`LANES`] partial sums in a fixed order.
#[inline]
fn dot_lanes<F: Real>(x: &[F], y: &[F]) -> F {
    let mut acc = [F::ZERO; LANES];
    let xc = x.chunks_exact(LANES);
    let yc = y.chunks_exact(LANES);
    let (xr, yr) = (xc.remainder(), yc.remainder());
    for (a, b) in xc.zip(yc) {
        for l in 0..LANES {
            acc[l] += a[l] * b[l];
        }
    }
    let mut tail = F::ZERO;
    for (a, b) in xr.iter().zip(yr) {
        tail += *a * *b;
    }
    ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7])) + tail
}

/// Σ of `leaf(i)` for i in 0..n, added as a binary tree: the left subtree
/// of a node over n ≥ 2 leaves holds the largest power of two of them
/// below n. The tree's depth is ⌈log₂ n⌉, and so is its rounding error's
/// growth (a running sum's grows with n).
///
/// The shape depends only on n, and a node over 2^k leaves starting at a
/// multiple of 2^k is a complete subtree: so summing, with this same
/// tree, the sums of aligned chunks of 2^k leaves (the last one possibly
/// shorter) gives the bits of summing the leaves themselves. A parallel
/// executor sums chunks apart and combines them that way.
pub fn pairwise<F: Real>(n: usize, leaf: &impl Fn(usize) -> F) -> F {
    fn node<F: Real>(lo: usize, n: usize, leaf: &impl Fn(usize) -> F) -> F {
        if n <= 1 {
            return if n == 1 { leaf(lo) } else { F::ZERO };
        }
        let h = 1 << (usize::BITS - 1 - (n - 1).leading_zeros());
        node(lo, h, leaf) + node(lo + h, n - h, leaf)
    }
    node(0, n, leaf)
}

/// xᵀy = Σ x_i·y_i (over the shorter length): blocks of [`DOT_BLOCK`]
/// products, each summed in [`LANES`] partial sums in a fixed order, then
/// the block sums added by [`pairwise`]'s tree. Bounded by about
/// (`DOT_BLOCK`/`LANES` + 4 + log₂(n/`DOT_BLOCK`))·2⁻²⁴ relative in f32
/// (the gradient norm of SAM and clipping sums positive terms), instead of
/// the n/`LANES`·2⁻²⁴ of a running sum in each lane. The same bits as one
/// `LANES`-wide sum for n ≤ `DOT_BLOCK`.
#[inline]
pub fn dot<F: Real>(x: &[F], y: &[F]) -> F {
    let n = x.len().min(y.len());
    if n <= DOT_BLOCK {
        // one block: no tree (the short dot products of a GEMM's inner
        // loops pay nothing for it)
        return dot_lanes(&x[..n], &y[..n]);
    }
    pairwise(n.div_ceil(DOT_BLOCK), &|b| {
        let r = b * DOT_BLOCK..((b + 1) * DOT_BLOCK).min(n);
        dot_lanes(&x[r.clone()], &y[r])
    })
}

/// y ← y + a·x.
#[inline]
pub fn axpy<F: Real>(y: &mut [F], a: F, x: &[F]) {
    for (yi, xi) in y.iter_mut().zip(x) {
        *yi += a * *xi;
    }
}

/// y ← a·x (overwrites y).
#[inline]
pub fn scaled<F: Real>(y: &mut [F], a: F, x: &[F]) {
    for (yi, xi) in y.iter_mut().zip(x) {
        *yi = a * *xi;
    }
}

/// y ← β·y + a·x in one pass (β = 1: [`axpy`], the same bits).
#[inline]
pub fn scale_axpy<F: Real>(y: &mut [F], beta: F, a: F, x: &[F]) {
    if beta == F::ONE {
        return axpy(y, a, x);
    }
    for (yi, xi) in y.iter_mut().zip(x) {
        *yi = beta * *yi + a * *xi;
    }
}

/// w ← x + a·y.
#[inline]
pub fn waxpy<F: Real>(w: &mut [F], x: &[F], a: F, y: &[F]) {
    for ((wi, xi), yi) in w.iter_mut().zip(x).zip(y) {
        *wi = *xi + a * *yi;
    }
}

/// x ← a·x (a = 1 leaves x untouched).
#[inline]
pub fn scale<F: Real>(x: &mut [F], a: F) {
    if a == F::ONE {
        return;
    }
    for xi in x.iter_mut() {
        *xi *= a;
    }
}

/// y ← β·y + α·x, where β = 0 overwrites y (NaN included).
#[inline]
pub fn axpby<F: Real>(y: &mut [F], x: &[F], alpha: F, beta: F) {
    if beta == F::ZERO {
        for (yi, xi) in y.iter_mut().zip(x) {
            *yi = alpha * *xi;
        }
    } else {
        for (yi, xi) in y.iter_mut().zip(x) {
            *yi = beta * *yi + alpha * *xi;
        }
    }
}

/// y ← a + b.
#[inline]
pub fn add<F: Real>(y: &mut [F], a: &[F], b: &[F]) {
    for ((yi, ai), bi) in y.iter_mut().zip(a).zip(b) {
        *yi = *ai + *bi;
    }
}

/// x ← β·x, where β = 0 writes zeros (whatever x held, NaN included),
/// the BLAS convention.
#[inline]
pub fn scale_or_zero<F: Real>(x: &mut [F], beta: F) {
    if beta == F::ZERO {
        x.fill(F::ZERO);
    } else {
        scale(x, beta);
    }
}

/// True when every entry is finite.
#[inline]
pub fn all_finite<F: Real>(x: &[F]) -> bool {
    // Branch-free accumulation so the loop vectorizes: x·0 is 0 for
    // finite x and NaN otherwise.
    let mut acc = [F::ZERO; LANES];
    let c = x.chunks_exact(LANES);
    let r = c.remainder();
    for a in c {
        for l in 0..LANES {
            acc[l] += a[l] * F::ZERO;
        }
    }
    let mut ok = true;
    for v in acc.iter().chain(r.iter()) {
        ok &= v.is_finite();
    }
    ok
}

/// C ← α·op(A)·op(B) + β·C, all row-major and contiguous; C is m × n,
/// op(A) is m × k (A is k × m when `ta`), op(B) is k × n (B is n × k when
/// `tb`). β = 0 overwrites C.
///
/// The three shapes an MLP uses each get the loop order that keeps the
/// innermost loop contiguous: `A·Bᵀ` (forward) as dot products, `Aᵀ·B`
/// (weight gradient) and `A·B` (input gradient) as rows of axpy.
#[allow(clippy::too_many_arguments)]
pub fn gemm<F: Real>(
    ta: bool,
    tb: bool,
    m: usize,
    n: usize,
    k: usize,
    alpha: F,
    a: &[F],
    b: &[F],
    beta: F,
    c: &mut [F],
) {
    let c = &mut c[..m * n];
    match (ta, tb) {
        (false, true) => {
            for (i, crow) in c.chunks_exact_mut(n).enumerate() {
                let arow = &a[i * k..(i + 1) * k];
                for (j, cij) in crow.iter_mut().enumerate() {
                    let s = alpha * dot(arow, &b[j * k..(j + 1) * k]);
                    *cij = if beta == F::ZERO { s } else { beta * *cij + s };
                }
            }
        }
        (true, false) => {
            // the first product row is written (β = 0) or scaled into C
            // in the same pass
            let first = if k > 0 {
                for (crow, &a0) in c.chunks_exact_mut(n).zip(&a[..m]) {
                    if beta == F::ZERO {
                        scaled(crow, alpha * a0, &b[..n]);
                    } else {
                        scale_axpy(crow, beta, alpha * a0, &b[..n]);
                    }
                }
                1
            } else {
                scale_or_zero(c, beta);
                0
            };
            for p in first..k {
                let arow = &a[p * m..(p + 1) * m];
                let brow = &b[p * n..(p + 1) * n];
                for (crow, &aip) in c.chunks_exact_mut(n).zip(arow) {
                    axpy(crow, alpha * aip, brow);
                }
            }
        }
        (false, false) if k == 0 => scale_or_zero(c, beta),
        (false, false) => {
            for (crow, arow) in c.chunks_exact_mut(n).zip(a.chunks_exact(k)) {
                let mut rows = b.chunks_exact(n).zip(arow);
                match rows.next() {
                    Some((b0, &a0)) if beta == F::ZERO => scaled(crow, alpha * a0, b0),
                    Some((b0, &a0)) => scale_axpy(crow, beta, alpha * a0, b0),
                    None => scale_or_zero(crow, beta),
                }
                for (brow, &aip) in rows {
                    axpy(crow, alpha * aip, brow);
                }
            }
        }
        (true, true) => {
            for (i, crow) in c.chunks_exact_mut(n).enumerate() {
                for (j, cij) in crow.iter_mut().enumerate() {
                    let mut s = F::ZERO;
                    for p in 0..k {
                        s += a[p * m + i] * b[j * k + p];
                    }
                    let s = alpha * s;
                    *cij = if beta == F::ZERO { s } else { beta * *cij + s };
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(
        ta: bool,
        tb: bool,
        m: usize,
        n: usize,
        k: usize,
        a: &[f64],
        b: &[f64],
    ) -> [f64; 64] {
        let mut c = [0.0; 64];
        for i in 0..m {
            for j in 0..n {
                let mut s = 0.0;
                for p in 0..k {
                    let av = if ta { a[p * m + i] } else { a[i * k + p] };
                    let bv = if tb { b[j * k + p] } else { b[p * n + j] };
                    s += av * bv;
                }
                c[i * n + j] = s;
            }
        }
        c
    }

    #[test]
    fn gemm_all_transposes() {
        let (m, n, k) = (3, 5, 11);
        let a: [f64; 33] = core::array::from_fn(|i| (i as f64 * 0.37).sin());
        let b: [f64; 55] = core::array::from_fn(|i| (i as f64 * 0.21).cos());
        for ta in [false, true] {
            for tb in [false, true] {
                let want = reference(ta, tb, m, n, k, &a, &b);
                let mut c = [f64::NAN; 15];
                gemm(ta, tb, m, n, k, 1.0, &a, &b, 0.0, &mut c);
                for i in 0..15 {
                    assert!((c[i] - want[i]).abs() < 1e-12, "{ta} {tb} {i}");
                }
                // β = 1, α = 2: C = 2·AB + previous C
                let prev = c;
                gemm(ta, tb, m, n, k, 2.0, &a, &b, 1.0, &mut c);
                for i in 0..15 {
                    assert!((c[i] - 3.0 * want[i]).abs() < 1e-12);
                    assert!((c[i] - (prev[i] + 2.0 * want[i])).abs() < 1e-12);
                }
            }
        }
    }

    #[test]
    fn finite_detection() {
        let mut x = [1.0f32; 19];
        assert!(all_finite(&x));
        x[3] = f32::INFINITY;
        assert!(!all_finite(&x));
        x[3] = 0.0;
        x[18] = f32::NAN;
        assert!(!all_finite(&x));
        x[18] = f32::MAX;
        assert!(all_finite(&x));
    }

    #[test]
    fn dot_matches_sum() {
        let x: [f64; 21] = core::array::from_fn(|i| i as f64);
        let y = [2.0f64; 21];
        assert_eq!(dot(&x, &y), 420.0);
    }

    /// Values of mixed signs and magnitudes, so that every reordering of
    /// their sum shows in its bits.
    fn mixed(n: usize) -> std::vec::Vec<f32> {
        let mut r = crate::Rng::new(n as u64);
        (0..n)
            .map(|i| ([1e-3, 1.0, 1e3][i % 3] * r.normal()) as f32)
            .collect()
    }

    /// Summing aligned chunks of 2^k leaves apart, then the chunk sums
    /// with the same tree, gives the bits of the whole tree (what the
    /// host's parallel dot relies on).
    #[test]
    fn pairwise_over_aligned_chunks_is_the_same_tree() {
        for n in [0, 1, 2, 3, 5, 8, 13, 64, 100, 257] {
            let v = mixed(n);
            let whole = pairwise(n, &|i| v[i]);
            for k in 0..5 {
                let c = 1 << k;
                let part = |j: usize| {
                    let lo = j * c;
                    pairwise(c.min(n - lo), &|i| v[lo + i])
                };
                let chunked = pairwise(n.div_ceil(c), &part);
                assert_eq!(chunked.to_bits(), whole.to_bits(), "n {n}, chunks of {c}");
            }
        }
    }

    /// One block: the 8-lane sum as it was; longer: within the tree's
    /// bound of the f64 sum, and far closer than the lanes' running sums.
    #[test]
    fn dot_is_pairwise_over_blocks() {
        let x = mixed(DOT_BLOCK);
        assert_eq!(dot(&x, &x).to_bits(), dot_lanes(&x, &x).to_bits());
        let n = 1 << 20;
        let x = mixed(n);
        let exact: f64 = x.iter().map(|v| *v as f64 * *v as f64).sum();
        let depth = DOT_BLOCK / LANES + 4 + (n / DOT_BLOCK).ilog2() as usize;
        let err = |s: f32| (s as f64 - exact).abs() / exact;
        let bound = depth as f64 * f32::EPSILON as f64 / 2.0;
        assert!(err(dot(&x, &x)) <= bound, "{} > {bound}", err(dot(&x, &x)));
        assert!(err(dot(&x, &x)) < 1e-6);
        assert!(err(dot_lanes(&x, &x)) > 10.0 * err(dot(&x, &x)));
    }
}
