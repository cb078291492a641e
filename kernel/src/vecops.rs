//! Vector operations on slices, and the dense matrix product, as plain
//! serial loops. They define the arithmetic (and its order) that every
//! CPU backend reproduces: the host runs the same functions on chunks in
//! parallel, the firmware runs them as they are.
//!
//! Reductions use 8 independent partial sums combined in a fixed tree, so
//! the compiler may vectorize them without changing a single bit, and a
//! Cortex-M computes exactly what an x86-64 computes.

use crate::real::Real;

/// Number of partial sums in reductions.
pub const LANES: usize = 8;

/// Σ x_i·y_i with [`LANES`] partial sums in a fixed order.
#[inline]
pub fn dot<F: Real>(x: &[F], y: &[F]) -> F {
    let n = x.len().min(y.len());
    let (x, y) = (&x[..n], &y[..n]);
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
}
