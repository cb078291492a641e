//! The row-major products of the kernel crate on column-major cuBLAS.
//!
//! The kernel computes `C ← α·op(A)·op(B) + β·C` with every matrix
//! row-major ([`fdgr_kernel::serial::vecops::gemm`]). cuBLAS is column-major, and a
//! row-major r × c matrix is, in memory, the column-major c × r matrix of
//! its transpose. So the row-major product is the column-major product
//! `Cᵀ = op(B)ᵀ·op(A)ᵀ`: swap the operands, swap the transpose flags, swap
//! m and n. No data moves.

/// One `cublasSgemm` call (column-major), for a row-major product whose
/// operands are passed swapped: cuBLAS's A is the kernel's B and cuBLAS's B
/// is the kernel's A.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ColMajor {
    /// cuBLAS `transa` (applies to the kernel's B).
    pub transa: bool,
    /// cuBLAS `transb` (applies to the kernel's A).
    pub transb: bool,
    /// Rows of the column-major result (= the kernel's n).
    pub m: usize,
    /// Columns of the column-major result (= the kernel's m).
    pub n: usize,
    /// Inner dimension.
    pub k: usize,
    /// Leading dimension of cuBLAS's A (the kernel's B).
    pub lda: usize,
    /// Leading dimension of cuBLAS's B (the kernel's A).
    pub ldb: usize,
    /// Leading dimension of C.
    pub ldc: usize,
}

/// Maps the kernel's row-major `gemm(ta, tb, m, n, k, …)` (C is m × n,
/// op(A) m × k, op(B) k × n, all contiguous) to the cuBLAS call.
pub fn col_major(ta: bool, tb: bool, m: usize, n: usize, k: usize) -> ColMajor {
    ColMajor {
        transa: tb,
        transb: ta,
        m: n,
        n: m,
        k,
        // row-major B is n × k when tb, else k × n: its row length is the ld
        lda: if tb { k } else { n },
        // row-major A is k × m when ta, else m × k
        ldb: if ta { m } else { k },
        ldc: n,
    }
}

impl ColMajor {
    /// Whether every dimension fits cuBLAS's 32-bit `int`.
    pub fn fits_i32(&self) -> bool {
        [self.m, self.n, self.k, self.lda, self.ldb, self.ldc]
            .iter()
            .all(|&v| v <= i32::MAX as usize)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Reference column-major SGEMM with BLAS semantics (β = 0 does not
    /// read C): C[i + j·ldc] = α·Σ_p opA(i, p)·opB(p, j) + β·C.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn blas_sgemm(
        transa: bool,
        transb: bool,
        m: usize,
        n: usize,
        k: usize,
        alpha: f32,
        a: &[f32],
        lda: usize,
        b: &[f32],
        ldb: usize,
        beta: f32,
        c: &mut [f32],
        ldc: usize,
    ) {
        // BLAS argument checks (what cuBLAS rejects with INVALID_VALUE)
        assert!(lda >= if transa { k } else { m }.max(1), "lda");
        assert!(ldb >= if transb { n } else { k }.max(1), "ldb");
        assert!(ldc >= m.max(1), "ldc");
        for j in 0..n {
            for i in 0..m {
                let mut s = 0.0f64;
                for p in 0..k {
                    let av = if transa {
                        a[p + i * lda]
                    } else {
                        a[i + p * lda]
                    };
                    let bv = if transb {
                        b[j + p * ldb]
                    } else {
                        b[p + j * ldb]
                    };
                    s += av as f64 * bv as f64;
                }
                let prev = if beta == 0.0 {
                    0.0
                } else {
                    beta * c[i + j * ldc]
                };
                c[i + j * ldc] = prev + alpha * s as f32;
            }
        }
    }

    fn fill(n: usize, seed: u64) -> Vec<f32> {
        let mut r = fdgr_kernel::Rng::new(seed);
        (0..n).map(|_| (r.uniform() * 2.0 - 1.0) as f32).collect()
    }

    /// Every transpose combination the MLP uses (and the fourth), at the
    /// shapes of each pass, through the mapping and the column-major
    /// reference, equals `fdgr_kernel::serial::vecops::gemm`.
    #[test]
    fn mapping_matches_kernel_gemm() {
        // (b, n_in, n_out) of a layer
        for &(b, n_in, n_out) in &[(3usize, 5usize, 4usize), (7, 1, 9), (1, 6, 1), (16, 33, 10)] {
            let cases: [(bool, bool, usize, usize, usize); 4] = [
                (false, true, b, n_out, n_in),  // forward: z = a·Wᵀ
                (true, false, n_out, n_in, b),  // weight gradient: δzᵀ·a
                (false, false, b, n_in, n_out), // input gradient: δz·W
                (true, true, n_in, b, n_out),   // unused by the MLP, still mapped
            ];
            for (ci, &(ta, tb, m, n, k)) in cases.iter().enumerate() {
                let a = fill(m * k, 1 + ci as u64);
                let bm = fill(k * n, 11 + ci as u64);
                for &(alpha, beta) in &[(1.0f32, 0.0f32), (0.3, 0.7), (-2.0, 1.0)] {
                    let c0 = fill(m * n, 99);
                    let mut want = c0.clone();
                    fdgr_kernel::serial::vecops::gemm(
                        ta, tb, m, n, k, alpha, &a, &bm, beta, &mut want,
                    );
                    let g = col_major(ta, tb, m, n, k);
                    assert!(g.fits_i32());
                    let mut got = c0.clone();
                    blas_sgemm(
                        g.transa, g.transb, g.m, g.n, g.k, alpha, &bm, g.lda, &a, g.ldb, beta,
                        &mut got, g.ldc,
                    );
                    for (x, y) in got.iter().zip(&want) {
                        assert!(
                            (x - y).abs() <= 1e-5 * (1.0 + y.abs()),
                            "{ta} {tb}: {x} vs {y}"
                        );
                    }
                }
            }
        }
    }

    /// β = 0 overwrites C even when it holds NaN (as the kernel's gemm and
    /// BLAS do): loss_grad(…, β = 0) on a fresh gradient buffer relies on it.
    #[test]
    fn beta_zero_ignores_garbage() {
        let g = col_major(true, false, 2, 3, 4);
        let a = fill(8, 1);
        let b = fill(12, 2);
        let mut c = vec![f32::NAN; 6];
        blas_sgemm(
            g.transa, g.transb, g.m, g.n, g.k, 1.0, &b, g.lda, &a, g.ldb, 0.0, &mut c, g.ldc,
        );
        assert!(c.iter().all(|v| v.is_finite()));
    }

    #[test]
    fn forward_is_the_transpose_trick() {
        // z (B × n_out) = a (B × n_in) · Wᵀ, W row-major [n_out, n_in]
        let g = col_major(false, true, 128, 512, 784);
        assert_eq!(
            g,
            ColMajor {
                transa: true,
                transb: false,
                m: 512,
                n: 128,
                k: 784,
                lda: 784,
                ldb: 784,
                ldc: 512
            }
        );
    }
}
