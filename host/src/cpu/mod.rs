//! The host CPU executor: the kernel's MLP maths, with matrix products on
//! the `gemm` crate (runtime-dispatched AVX2/AVX-512/NEON kernels) and
//! parameter-vector operations on all cores with rayon. Vector operations
//! run the kernel's own serial functions on chunks, so the arithmetic of
//! every element is the kernel's.
//!
//! Results are deterministic for a given thread count: each output element
//! of a product is computed by one thread in a fixed order.

pub mod layers;

use fdgr_kernel::serial::act::Act;
use fdgr_kernel::serial::vecops;
use fdgr_kernel::serial::{norm, BnGeom, ConvGeom, PoolGeom};
use fdgr_kernel::{Exec, OptElem};
use layers as cl;
use rayon::prelude::*;

/// Elements per parallel chunk of a vector operation.
const CHUNK: usize = 1 << 14;
// A chunk is 2^k of dot's blocks: an aligned subtree of its pairwise sum.
const _: () =
    assert!(CHUNK % vecops::DOT_BLOCK == 0 && (CHUNK / vecops::DOT_BLOCK).is_power_of_two());

/// Parallel executor for `threads` threads (run inside a rayon pool of
/// that size).
#[derive(Clone, Copy, Debug)]
pub struct Par {
    /// Threads used by products and vector operations.
    pub threads: usize,
}

pub use layers::fast_gemm;

macro_rules! par_exec {
    ($t:ty) => {
        impl Exec<$t> for Par {
            fn gemm(
                &mut self,
                ta: bool,
                tb: bool,
                m: usize,
                n: usize,
                k: usize,
                alpha: $t,
                a: &[$t],
                b: &[$t],
                beta: $t,
                c: &mut [$t],
            ) {
                fast_gemm(self.threads, ta, tb, m, n, k, alpha, a, b, beta, c)
            }

            fn axpy(&mut self, y: &mut [$t], a: $t, x: &[$t]) {
                par2(self.threads, y, x, |y, x| cl::ew_axpy(y, a, x));
            }

            fn waxpy(&mut self, w: &mut [$t], x: &[$t], a: $t, y: &[$t]) {
                if self.threads <= 1 || w.len() < 2 * CHUNK {
                    return vecops::waxpy(w, x, a, y);
                }
                w.par_chunks_mut(CHUNK)
                    .zip(x.par_chunks(CHUNK))
                    .zip(y.par_chunks(CHUNK))
                    .for_each(|((w, x), y)| vecops::waxpy(w, x, a, y));
            }

            fn scale(&mut self, x: &mut [$t], a: $t) {
                if self.threads <= 1 || x.len() < 2 * CHUNK {
                    return vecops::scale(x, a);
                }
                x.par_chunks_mut(CHUNK).for_each(|x| vecops::scale(x, a));
            }

            /// The kernel's [`vecops::dot`], bit for bit: chunks are
            /// aligned subtrees of its pairwise tree, so their sums are
            /// added by the same tree ([`vecops::pairwise`]).
            fn dot(&mut self, x: &[$t], y: &[$t]) -> $t {
                let n = x.len().min(y.len());
                if self.threads <= 1 || n < 2 * CHUNK {
                    return vecops::dot(x, y);
                }
                let parts: Vec<$t> = x[..n]
                    .par_chunks(CHUNK)
                    .zip(y[..n].par_chunks(CHUNK))
                    .map(|(x, y)| vecops::dot(x, y))
                    .collect();
                vecops::pairwise(parts.len(), &|j| parts[j])
            }

            fn all_finite(&mut self, x: &[$t]) -> bool {
                if self.threads <= 1 || x.len() < 2 * CHUNK {
                    return vecops::all_finite(x);
                }
                x.par_chunks(CHUNK).all(vecops::all_finite)
            }

            fn opt_update(
                &mut self,
                theta: &mut [$t],
                d: &[$t],
                s0: Option<&mut [$t]>,
                s1: Option<&mut [$t]>,
                h: &OptElem<$t>,
            ) {
                use fdgr_kernel::optim::update_slices;
                if self.threads <= 1 || theta.len() < 2 * CHUNK {
                    return update_slices(theta, d, s0, s1, h);
                }
                match (s0, s1) {
                    (Some(a), Some(b)) => theta
                        .par_chunks_mut(CHUNK)
                        .zip(d.par_chunks(CHUNK))
                        .zip(a.par_chunks_mut(CHUNK).zip(b.par_chunks_mut(CHUNK)))
                        .for_each(|((t, d), (a, b))| update_slices(t, d, Some(a), Some(b), h)),
                    (Some(a), None) => theta
                        .par_chunks_mut(CHUNK)
                        .zip(d.par_chunks(CHUNK))
                        .zip(a.par_chunks_mut(CHUNK))
                        .for_each(|((t, d), a)| update_slices(t, d, Some(a), None, h)),
                    (None, _) => theta
                        .par_chunks_mut(CHUNK)
                        .zip(d.par_chunks(CHUNK))
                        .for_each(|(t, d)| update_slices(t, d, None, None, h)),
                }
            }

            fn axpby(&mut self, y: &mut [$t], x: &[$t], alpha: $t, beta: $t) {
                cl::chunked(y, &[x], |y, xs| cl::ew_axpby(y, xs[0], alpha, beta));
            }

            fn add(&mut self, y: &mut [$t], a: &[$t], b: &[$t]) {
                cl::chunked(y, &[a, b], |y, xs| cl::ew_add(y, xs[0], xs[1]));
            }

            fn bias_act(&mut self, z: &mut [$t], bias: Option<&[$t]>, c: usize, hw: usize, a: Act) {
                cl::bias_act(z, bias, c, hw, a)
            }

            fn act_map(&mut self, y: &mut [$t], x: &[$t], a: Act) {
                cl::chunked(y, &[x], |y, xs| cl::ew_act_map(y, xs[0], a));
            }

            fn act_backward(&mut self, delta: &mut [$t], av: &[$t], a: Act) {
                cl::chunked(delta, &[av], |d, xs| cl::ew_act_backward(d, xs[0], a));
            }

            fn r_act(&mut self, ra: &mut [$t], rz: &[$t], av: &[$t], a: Act) {
                cl::chunked(ra, &[rz, av], |r, xs| cl::ew_r_act(r, xs[0], xs[1], a));
            }

            fn r_act_backward(&mut self, rd: &mut [$t], rz: &[$t], av: &[$t], dz: &[$t], a: Act) {
                cl::chunked(rd, &[rz, av, dz], |r, xs| {
                    cl::ew_r_act_backward(r, xs[0], xs[1], xs[2], a)
                });
            }

            fn chan_sum(
                &mut self,
                out: &mut [$t],
                m: &[$t],
                c: usize,
                hw: usize,
                alpha: $t,
                beta: $t,
            ) {
                cl::chan_sum(out, m, c, hw, alpha, beta)
            }

            fn conv_forward(
                &mut self,
                g: &ConvGeom,
                x: &[$t],
                w: &[$t],
                y: &mut [$t],
                alpha: $t,
                beta: $t,
            ) {
                cl::conv_forward(g, x, w, y, alpha, beta)
            }

            fn conv_backward_data(
                &mut self,
                g: &ConvGeom,
                dy: &[$t],
                w: &[$t],
                dx: &mut [$t],
                alpha: $t,
                beta: $t,
            ) {
                cl::conv_backward_data(g, dy, w, dx, alpha, beta)
            }

            fn conv_backward_filter(
                &mut self,
                g: &ConvGeom,
                x: &[$t],
                dy: &[$t],
                dw: &mut [$t],
                alpha: $t,
                beta: $t,
            ) {
                cl::conv_backward_filter(self.threads, g, x, dy, dw, alpha, beta)
            }

            fn bn_forward_train(
                &mut self,
                g: &BnGeom,
                x: &[$t],
                y: &mut [$t],
                gb: &[$t],
                stats: &mut [$t],
                eps: $t,
                a: Act,
                pending: Option<norm::Pending<'_, $t>>,
            ) {
                cl::bn_forward_train(g, x, y, gb, stats, eps, a, pending)
            }

            fn bn_forward_eval(
                &mut self,
                g: &BnGeom,
                x: &[$t],
                y: &mut [$t],
                gb: &[$t],
                running: &[$t],
                eps: $t,
                a: Act,
            ) {
                cl::bn_forward_eval(g, x, y, gb, running, eps, a)
            }

            fn bn_backward(
                &mut self,
                g: &BnGeom,
                x: &[$t],
                dy: &[$t],
                gb: &[$t],
                stats: &[$t],
                dx: Option<norm::Dx<'_, $t>>,
                dp: Option<norm::Dp<'_, $t>>,
            ) {
                cl::bn_backward(g, x, dy, gb, stats, dx, dp)
            }

            fn bn_r_forward(
                &mut self,
                g: &BnGeom,
                x: &[$t],
                rx: Option<&[$t]>,
                gb: &[$t],
                vgb: &[$t],
                stats: &[$t],
                ry: &mut [$t],
                rstats: &mut [$t],
            ) {
                cl::bn_r_forward(g, x, rx, gb, vgb, stats, ry, rstats)
            }

            fn bn_r_backward(
                &mut self,
                g: &BnGeom,
                a: &norm::RBack<'_, $t>,
                rdx: Option<norm::Dx<'_, $t>>,
                rsums: &mut [$t],
            ) {
                cl::bn_r_backward(g, a, rdx, rsums)
            }

            fn pool_forward(&mut self, g: &PoolGeom, x: &[$t], y: &mut [$t]) {
                cl::pool_forward(g, x, y)
            }

            fn pool_backward(
                &mut self,
                g: &PoolGeom,
                x: &[$t],
                dy: &[$t],
                dx: &mut [$t],
                acc: bool,
            ) {
                cl::pool_backward(g, x, dy, dx, acc)
            }

            fn pool_r_forward(&mut self, g: &PoolGeom, x: &[$t], rx: &[$t], ry: &mut [$t]) {
                cl::pool_r_forward(g, x, rx, ry)
            }
        }
    };
}

par_exec!(f32);
par_exec!(f64);

fn par2<T: Send + Sync, F: Fn(&mut [T], &[T]) + Sync + Send>(
    threads: usize,
    y: &mut [T],
    x: &[T],
    f: F,
) {
    if threads <= 1 || y.len() < 2 * CHUNK {
        return f(y, x);
    }
    y.par_chunks_mut(CHUNK)
        .zip(x.par_chunks(CHUNK))
        .for_each(|(y, x)| f(y, x));
}

/// A rayon pool with `threads` threads (0 = all cores).
pub fn pool(threads: usize) -> anyhow::Result<(rayon::ThreadPool, usize)> {
    let n = if threads == 0 {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    } else {
        threads
    };
    let p = rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .build()
        .map_err(|e| anyhow::anyhow!("cannot start {n} threads: {e}"))?;
    Ok((p, n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_gemm_matches_kernel_loops() {
        let (m, n, k) = (67, 45, 129);
        let a: Vec<f64> = (0..m * k)
            .map(|i| ((i * 37 % 101) as f64 - 50.0) / 50.0)
            .collect();
        let b: Vec<f64> = (0..k * n)
            .map(|i| ((i * 53 % 97) as f64 - 48.0) / 48.0)
            .collect();
        for ta in [false, true] {
            for tb in [false, true] {
                for (alpha, beta) in [(1.0, 0.0), (0.5, 1.0), (-2.0, 0.25)] {
                    let c0: Vec<f64> = (0..m * n).map(|i| i as f64 * 0.01).collect();
                    let mut want = c0.clone();
                    vecops::gemm(ta, tb, m, n, k, alpha, &a, &b, beta, &mut want);
                    let mut got = c0.clone();
                    Par { threads: 2 }.gemm(ta, tb, m, n, k, alpha, &a, &b, beta, &mut got);
                    let err = want
                        .iter()
                        .zip(&got)
                        .map(|(x, y)| (x - y).abs())
                        .fold(0.0, f64::max);
                    assert!(err < 1e-12, "ta={ta} tb={tb} α={alpha} β={beta}: {err}");
                }
            }
        }
    }

    #[test]
    fn parallel_vector_ops_match_serial() {
        let n = 5 * CHUNK + 17;
        let x: Vec<f32> = (0..n).map(|i| (i % 13) as f32 * 0.1).collect();
        let y: Vec<f32> = (0..n).map(|i| (i % 7) as f32 * 0.2).collect();
        let mut p = Par { threads: 2 };
        let mut w1 = vec![0.0; n];
        let mut w2 = vec![0.0; n];
        p.waxpy(&mut w1, &x, 0.3, &y);
        vecops::waxpy(&mut w2, &x, 0.3, &y);
        assert_eq!(w1, w2);
        assert!(p.all_finite(&x));
        let mut z = x.clone();
        z[3 * CHUNK + 5] = f32::NAN;
        assert!(!p.all_finite(&z));
        let d = p.dot(&x, &y);
        let exact: f64 = x.iter().zip(&y).map(|(a, b)| *a as f64 * *b as f64).sum();
        assert!((d as f64 - exact).abs() < 1e-6 * exact);
        // the serial dot's bits, at any length and thread count
        for n in [2 * CHUNK, 2 * CHUNK + 1, 3 * CHUNK + 100, n] {
            for threads in [2, 3] {
                let d = Par { threads }.dot(&x[..n], &y[..n]);
                assert_eq!(d.to_bits(), vecops::dot(&x[..n], &y[..n]).to_bits());
            }
        }
    }
}
