//! Every kernel of `gpu/kernels/`, as compiled for the CPU from the same
//! `.cu` source NVRTC compiles (gpu/cpu-runtime), launched through
//! `launchers.rs` with the grid and block the device path uses, against the
//! `fdgr_kernel` function it mirrors, on random inputs (and the awkward
//! ones: confident logits far from 0, ties, NaN, ±∞, β = 0 over NaN).
//! Each test runs twice: with the device's grids, and with elementwise
//! grids cut to one block so that every grid-stride loop goes round.
//!
//! Tolerances (each test prints its worst error):
//! * **0 ulp**, bit for bit, wherever the CUDA C computes the same terms
//!   in the same order as the kernel: every elementwise kernel, the loss
//!   terms, gradients and Hessian products, `col_sum` over up to 8 rows,
//!   the SGD update, gathers, counts and flags. The CPU build calls the
//!   kernel's own expf / logf / tanhf (cuda_cpu.h), so any difference is
//!   the CUDA C's.
//! * **the rounding bound of two summation orders** where the GPU adds
//!   in another order than the kernel (a block tree, partial sums per
//!   block or per row group): |got − want| ≤ (d₁ + d₂)·2⁻²⁴·Σ|terms|,
//!   where d₁ and d₂ are the depths of the two summations (the most
//!   additions any term goes through), the first-order bound on
//!   |fl(Σ) − Σ| of each. Reported as a fraction of that bound, with the
//!   relative difference.

use fdgr_kernel::optim::{update_slices, OptElem, OptHyper, Optim, Optimizer, Rule};
use fdgr_kernel::serial::{act, vecops};
use fdgr_kernel::serial::{conv, norm, pool, BnGeom, ConvGeom, PoolGeom, PoolKind};
use fdgr_kernel::{loss, mlp, Act, Loss, Rng, Targets};

use crate::emu::Emu;
use crate::grid::DOT_BLOCKS;
use crate::kernels::Kernel;
use crate::launchers;

mod convnet;
mod dense;

use convnet::*;
use dense::*;

/// Unit roundoff of f32.
const U: f64 = f32::EPSILON as f64 / 2.0;
/// Unit roundoff of f64 (batch norm's statistics sum in it).
const U64: f64 = f64::EPSILON / 2.0;

const ACTS: [Act; 4] = [Act::Identity, Act::Relu, Act::Tanh, Act::Sigmoid];

fn rand(n: usize, seed: u64, lo: f64, hi: f64) -> Vec<f32> {
    let mut r = Rng::new(seed);
    (0..n)
        .map(|_| (lo + (hi - lo) * r.uniform()) as f32)
        .collect()
}

fn labels(n: usize, k: usize, seed: u64) -> Vec<u32> {
    let mut r = Rng::new(seed);
    (0..n).map(|_| r.below(k) as u32).collect()
}

/// Distance in units in the last place (0 for equal values and for two
/// NaNs, infinite for a NaN against a number).
fn ulps(a: f32, b: f32) -> f64 {
    if a == b || (a.is_nan() && b.is_nan()) {
        return 0.0;
    }
    if a.is_nan() || b.is_nan() {
        return f64::INFINITY;
    }
    let key = |x: f32| {
        let bits = x.to_bits();
        if bits >> 31 == 1 {
            -((bits & 0x7fff_ffff) as i64)
        } else {
            bits as i64
        }
    };
    (key(a) - key(b)).unsigned_abs() as f64
}

/// The worst error of one comparison, where it was, and its tolerance.
struct Cmp {
    kernel: Kernel,
    case: String,
    unit: &'static str,
    tol: f64,
    worst: f64,
    /// Worst relative difference (sums).
    rel: f64,
    at: String,
    n: usize,
}

impl Cmp {
    fn new(kernel: Kernel, case: impl Into<String>, unit: &'static str, tol: f64) -> Cmp {
        Cmp {
            kernel,
            case: case.into(),
            unit,
            tol,
            worst: 0.0,
            rel: 0.0,
            at: String::new(),
            n: 0,
        }
    }

    /// In ulps.
    fn ulp(kernel: Kernel, case: impl Into<String>, tol: f64) -> Cmp {
        Cmp::new(kernel, case, "ulp", tol)
    }

    /// As a fraction of a reordered sum's rounding bound.
    fn sum(kernel: Kernel, case: impl Into<String>) -> Cmp {
        Cmp::new(kernel, case, "of bound", 1.0)
    }

    fn note(&mut self, e: f64, at: impl FnOnce() -> String) {
        self.n += 1;
        if e > self.worst || (e.is_nan() && !self.worst.is_nan()) {
            self.worst = if e.is_nan() { f64::INFINITY } else { e };
            self.at = at();
        }
    }

    fn ulps(&mut self, got: &[f32], want: &[f32]) {
        assert_eq!(got.len(), want.len());
        for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
            self.note(ulps(g, w), || format!("[{i}]: {g:e} vs {w:e}"));
        }
    }

    fn bounded(&mut self, i: usize, got: f32, want: f32, bound: f64) {
        let diff = (got as f64 - want as f64).abs();
        let e = if got == want { 0.0 } else { diff / bound };
        if want != 0.0 && diff / (want as f64).abs() > self.rel {
            self.rel = diff / (want as f64).abs();
        }
        self.note(e, || {
            format!("[{i}]: {got:e} vs {want:e} (bound {bound:.2e})")
        });
    }

    fn exact<T: PartialEq + std::fmt::Debug>(&mut self, got: &[T], want: &[T]) {
        assert_eq!(got.len(), want.len());
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            let e = if g == w { 0.0 } else { f64::INFINITY };
            self.note(e, || format!("[{i}]: {g:?} vs {w:?}"));
        }
    }
}

/// Runs `check` with the device's grids and with elementwise grids of one
/// block, prints each comparison's worst error, and fails on any beyond
/// its tolerance.
fn run(check: fn(&mut Emu, &mut Vec<Cmp>)) {
    for shrink in [None, Some(1)] {
        let mut e = Emu::new();
        e.shrink_grid = shrink;
        let mut out = vec![];
        check(&mut e, &mut out);
        assert!(!out.is_empty());
        let grids = if shrink.is_some() {
            "1-block grids"
        } else {
            "device grids"
        };
        let mut bad = vec![];
        for c in &out {
            let rel = if c.unit == "ulp" {
                String::new()
            } else {
                format!(", relative {:.1e}", c.rel)
            };
            println!(
                "{:<15} {:<34} {:<13} worst {:>8} {:<8} (tolerance {}{rel}; {} values)",
                c.kernel.name(),
                c.case,
                grids,
                if c.unit == "ulp" {
                    format!("{}", c.worst)
                } else {
                    format!("{:.1e}", c.worst)
                },
                c.unit,
                c.tol,
                c.n
            );
            assert!(c.n > 0, "{} {}: nothing compared", c.kernel.name(), c.case);
            if c.worst > c.tol {
                bad.push(format!(
                    "{} {} ({grids}): {} {} > {} at {}",
                    c.kernel.name(),
                    c.case,
                    c.worst,
                    c.unit,
                    c.tol,
                    c.at
                ));
            }
        }
        assert!(
            bad.is_empty(),
            "CUDA C differs from the kernel:\n{}",
            bad.join("\n")
        );
    }
}

/// The first-order bound on the difference of two sums of the same terms
/// whose summations have depths `d1` and `d2`; `abs_sum` = Σ|terms|.
fn reorder_bound(d1: usize, d2: usize, abs_sum: f64) -> f64 {
    reorder_bound_in(U, d1, d2, abs_sum)
}

/// [`reorder_bound`] of two sums in a precision of unit roundoff `u`.
fn reorder_bound_in(u: f64, d1: usize, d2: usize, abs_sum: f64) -> f64 {
    ((d1 + d2) as f64 * u * abs_sum).max(f64::MIN_POSITIVE)
}

/// Depth of reduce_sum (vecops.cu) over n values: each thread's strided
/// sum, then block_sum's tree over REDUCE_THREADS.
fn reduce_sum_depth(n: usize) -> usize {
    let t = crate::grid::REDUCE_THREADS as usize;
    n.div_ceil(t) + t.trailing_zeros() as usize
}

/// Activations a = σ(z) of random z (the range the derivatives see).
fn activations(n: usize, seed: u64, a: Act) -> Vec<f32> {
    rand(n, seed, -3.0, 3.0)
        .into_iter()
        .map(|z| a.f(z))
        .collect()
}

type Check = fn(&mut Emu, &mut Vec<Cmp>);

const CHECKS: [Check; 29] = [
    check_bias_act,
    check_act_map,
    check_r_act,
    check_chan_sum,
    check_axpby_add_copy,
    check_im2col,
    check_col2im,
    check_layouts,
    check_conv_gemm,
    check_bn_stats,
    check_bn_apply,
    check_bn_backward,
    check_bn_r_forward,
    check_bn_r_backward,
    check_pool,
    check_gather_crop,
    check_act_backward,
    check_r_act_backward,
    check_col_sum,
    check_loss_rows,
    check_loss_hvp,
    check_count_correct,
    check_vecops,
    check_dot,
    check_reduce_sum,
    check_nonfinite,
    check_opt_update,
    check_commit_step,
    check_gather_rows,
];

/// The checks above launch every kernel of the table: a kernel added
/// without a comparison fails here.
#[test]
fn every_kernel_is_compared() {
    let mut e = Emu::new();
    let mut out = vec![];
    for check in CHECKS {
        check(&mut e, &mut out);
    }
    let missing: Vec<&str> = Kernel::ALL
        .iter()
        .filter(|k| !e.launches.contains(k))
        .map(|k| k.name())
        .collect();
    assert!(missing.is_empty(), "kernels never compared: {missing:?}");
    let compared: Vec<Kernel> = out.iter().map(|c| c.kernel).collect();
    for k in Kernel::ALL {
        assert!(compared.contains(k), "no comparison reports {}", k.name());
    }
}

#[test]
fn ulps_measure() {
    assert_eq!(ulps(1.0, 1.0), 0.0);
    assert_eq!(ulps(0.0, -0.0), 0.0);
    assert_eq!(ulps(1.0, f32::from_bits(1.0f32.to_bits() + 3)), 3.0);
    assert_eq!(
        ulps(-f32::MIN_POSITIVE, f32::MIN_POSITIVE),
        2.0 * 0x0080_0000 as f64
    );
    assert_eq!(ulps(f32::NAN, f32::NAN), 0.0);
    assert!(ulps(f32::NAN, 1.0).is_infinite());
}
