//! Every kernel of `gpu/kernels/`, as compiled for the CPU from the same
//! `.cu` source NVRTC compiles (gpu/cpu-runtime), launched through
//! `ops.rs` with the grid and block the device path uses, against the
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

use fdgr_kernel::optim::{update_slices, Adam, OptElem, Optim, Rule};
use fdgr_kernel::{act, loss, mlp, vecops, Act, Loss, Rng, Targets};

use crate::emu::Emu;
use crate::kernels::Kernel;
use crate::launch::DOT_BLOCKS;
use crate::ops;

/// Unit roundoff of f32.
const U: f64 = f32::EPSILON as f64 / 2.0;

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
    ((d1 + d2) as f64 * U * abs_sum).max(f64::MIN_POSITIVE)
}

/// Depth of reduce_sum (vecops.cu) over n values: each thread's strided
/// sum, then block_sum's tree over REDUCE_THREADS.
fn reduce_sum_depth(n: usize) -> usize {
    let t = crate::launch::REDUCE_THREADS as usize;
    n.div_ceil(t) + t.trailing_zeros() as usize
}

/// Activations a = σ(z) of random z (the range the derivatives see).
fn activations(n: usize, seed: u64, a: Act) -> Vec<f32> {
    rand(n, seed, -3.0, 3.0)
        .into_iter()
        .map(|z| a.f(z))
        .collect()
}

fn check_bias_act(e: &mut Emu, out: &mut Vec<Cmp>) {
    let (rows, cols) = (37, 23);
    for (i, a) in ACTS.into_iter().enumerate() {
        let z = rand(rows * cols, 10 + i as u64, -5.0, 5.0);
        let bias = rand(cols, 20 + i as u64, -1.0, 1.0);
        let (zp, bp) = (e.put(&z), e.put(&bias));
        ops::bias_act(e, zp, bp, rows, cols, a).unwrap();
        let mut want = z.clone();
        act::bias_act(&mut want, &bias, a);
        let mut c = Cmp::ulp(Kernel::BiasAct, a.name(), 0.0);
        c.ulps(&e.get(zp, rows * cols), &want);
        out.push(c);
    }
}

fn check_act_backward(e: &mut Emu, out: &mut Vec<Cmp>) {
    let n = 1000;
    for a in [Act::Relu, Act::Tanh, Act::Sigmoid] {
        let av = activations(n, 1, a);
        let d = rand(n, 2, -2.0, 2.0);
        let (dp, ap) = (e.put(&d), e.put(&av));
        ops::act_backward(e, dp, ap, n, a).unwrap();
        let mut want = d.clone();
        act::act_backward(&mut want, &av, a);
        let mut c = Cmp::ulp(Kernel::ActBackward, a.name(), 0.0);
        c.ulps(&e.get(dp, n), &want);
        out.push(c);
    }
}

fn check_r_bias_act(e: &mut Emu, out: &mut Vec<Cmp>) {
    let (rows, cols) = (29, 17);
    let n = rows * cols;
    for a in ACTS {
        let rz = rand(n, 3, -2.0, 2.0);
        let vb = rand(cols, 4, -1.0, 1.0);
        let av = activations(n, 5, a);
        let (rzp, rap, vbp, ap) = (
            e.put(&rz),
            e.put(&vec![f32::NAN; n]),
            e.put(&vb),
            e.put(&av),
        );
        ops::r_bias_act(e, rzp, rap, vbp, ap, rows, cols, a).unwrap();
        let mut want_rz = rz.clone();
        act::bias_add(&mut want_rz, &vb);
        let mut want_ra = vec![0.0; n];
        act::r_act(&mut want_ra, &want_rz, &av, a);
        let mut c = Cmp::ulp(
            Kernel::RBiasAct,
            format!("{} R{{z}}, R{{a}}", a.name()),
            0.0,
        );
        c.ulps(&e.get(rzp, n), &want_rz);
        c.ulps(&e.get(rap, n), &want_ra);
        out.push(c);
    }
}

fn check_r_act_backward(e: &mut Emu, out: &mut Vec<Cmp>) {
    let n = 777;
    for a in [Act::Relu, Act::Tanh, Act::Sigmoid] {
        let rd = rand(n, 6, -2.0, 2.0);
        let rz = rand(n, 7, -2.0, 2.0);
        let av = activations(n, 8, a);
        let dz = rand(n, 9, -2.0, 2.0);
        let (rdp, rzp, ap, dzp) = (e.put(&rd), e.put(&rz), e.put(&av), e.put(&dz));
        ops::r_act_backward(e, rdp, rzp, ap, dzp, n, a).unwrap();
        let mut want = rd.clone();
        act::r_act_backward(&mut want, &rz, &av, &dz, a);
        let mut c = Cmp::ulp(Kernel::RActBackward, a.name(), 0.0);
        c.ulps(&e.get(rdp, n), &want);
        out.push(c);
    }
}

fn check_col_sum(e: &mut Emu, out: &mut Vec<Cmp>) {
    // up to 8 rows, each of the block's 8 row groups holds one row and the
    // CUDA C adds them in the kernel's order: bit-exact
    let mut small = Cmp::ulp(Kernel::ColSum, "1 to 8 rows", 0.0);
    let mut large = Cmp::sum(Kernel::ColSum, "37, 200 rows");
    for (rows, cols) in [(1, 10), (2, 33), (5, 1), (8, 70), (37, 5), (200, 41)] {
        for (i, (alpha, beta)) in [(1.0f32, 0.0f32), (0.3, 0.7), (-2.0, 1.0)]
            .into_iter()
            .enumerate()
        {
            let m = rand(rows * cols, 30 + i as u64, -1.0, 1.0);
            let o = if beta == 0.0 {
                vec![f32::NAN; cols] // β = 0 overwrites, NaN included
            } else {
                rand(cols, 40 + i as u64, -1.0, 1.0)
            };
            let (op, mp) = (e.put(&o), e.put(&m));
            ops::col_sum(e, op, mp, rows, cols, alpha, beta).unwrap();
            let got = e.get(op, cols);
            let mut want = o.clone();
            act::col_sum(&mut want, &m, alpha, beta);
            if rows <= 8 {
                small.ulps(&got, &want);
            } else {
                for c in 0..cols {
                    let prev = if beta == 0.0 {
                        0.0
                    } else {
                        (beta * o[c]).abs() as f64
                    };
                    let terms: f64 = (0..rows)
                        .map(|r| (alpha * m[r * cols + c]).abs() as f64)
                        .sum::<f64>()
                        + prev;
                    // kernel: β·out, then the rows in order; CUDA C: each
                    // row group's strided sum, then β·out + the 8 groups
                    let bound = reorder_bound(rows, rows.div_ceil(8) + 8, terms);
                    large.bounded(c, got[c], want[c], bound);
                }
            }
        }
    }
    out.push(small);
    out.push(large);
}

/// Network outputs that exercise the loss: random rows, rows shifted far
/// from 0, and confident correct rows (z_y the maximum, far from 0),
/// where (m − z_y) + log Σ e^{z−m} and log Σ e^z − z_y differ.
fn logits(rows: usize, k: usize, y: &[u32], seed: u64) -> Vec<f32> {
    let mut z = rand(rows * k, seed, -3.0, 3.0);
    for r in 0..rows {
        let row = &mut z[r * k..(r + 1) * k];
        match r % 3 {
            0 => {
                let m = row.iter().copied().fold(f32::MIN, f32::max);
                for v in row.iter_mut() {
                    *v += 100.0;
                }
                row[y[r] as usize] = m + 100.5;
            }
            1 => row.iter_mut().for_each(|v| *v -= 40.0),
            _ => {}
        }
    }
    z
}

const LOSS_CASES: [(Loss, usize, usize); 6] = [
    (Loss::SoftmaxCe, 1, 3),
    (Loss::SoftmaxCe, 5, 10),
    (Loss::SoftmaxCe, 130, 10),
    (Loss::SoftmaxCe, 4, 1),
    (Loss::Mse, 5, 4),
    (Loss::Mse, 130, 3),
];

fn check_loss_rows(e: &mut Emu, out: &mut Vec<Cmp>) {
    let mut terms = Cmp::ulp(Kernel::LossRows, "row terms", 0.0);
    let mut grads = Cmp::ulp(Kernel::LossRows, "gradient", 0.0);
    let mut mean = Cmp::sum(Kernel::ReduceSum, "mean of the row terms");
    let mut no_delta = Cmp::ulp(Kernel::LossRows, "without gradient", 0.0);
    for (i, (l, rows, k)) in LOSS_CASES.into_iter().enumerate() {
        let y = labels(rows, k, 50 + i as u64);
        let z = logits(rows, k, &y, 60 + i as u64);
        let (zp, yp) = (e.put(&z), e.put_u32(&y));
        let (dp, rlp, lp) = (
            e.put(&vec![f32::NAN; rows * k]),
            e.put(&vec![f32::NAN; rows]),
            e.put(&[f32::NAN]),
        );
        let scale = ops::mean_scale(l, rows, k);
        ops::loss(e, l, zp, yp, rows, k, Some(dp), rlp, scale, false, lp).unwrap();
        let row_loss = e.get(rlp, rows);
        // each row's term: the kernel's loss of that row alone (times 1/K
        // for MSE, the kernel's mean over one row)
        let one = ops::mean_scale(l, 1, k);
        for r in 0..rows {
            let zr = &z[r * k..(r + 1) * k];
            let want = loss::loss_grad(l, zr, &Targets::Classes(&y[r..r + 1]), k, None);
            let got = row_loss[r] * one;
            terms.note(ulps(got, want), || format!("row {r}: {got:e} vs {want:e}"));
        }
        let mut want_d = vec![0.0; rows * k];
        let want_l = loss::loss_grad(l, &z, &Targets::Classes(&y), k, Some(&mut want_d));
        grads.ulps(&e.get(dp, rows * k), &want_d);
        // the kernel adds the row terms in order, then scales; the CUDA C
        // adds them in reduce_sum's tree, then scales (one rounding each)
        let sum_abs: f64 = row_loss.iter().map(|v| v.abs() as f64).sum();
        let bound = reorder_bound(rows + 1, reduce_sum_depth(rows) + 1, sum_abs) * scale as f64;
        mean.bounded(i, e.get(lp, 1)[0], want_l, bound);
        // the same without δ: same terms, δ untouched
        let (dp2, rlp2) = (e.put(&vec![f32::NAN; rows * k]), e.put(&vec![0.0; rows]));
        ops::loss(e, l, zp, yp, rows, k, None, rlp2, scale, false, lp).unwrap();
        no_delta.ulps(&e.get(rlp2, rows), &row_loss);
        assert!(e.get(dp2, rows * k).iter().all(|v| v.is_nan()));
    }
    out.extend([terms, grads, mean, no_delta]);
}

fn check_loss_hvp(e: &mut Emu, out: &mut Vec<Cmp>) {
    for (i, (l, rows, k)) in LOSS_CASES.into_iter().enumerate() {
        let y = labels(rows, k, 70 + i as u64);
        let z = logits(rows, k, &y, 80 + i as u64);
        let r = rand(rows * k, 90 + i as u64, -1.0, 1.0);
        let (zp, rp, hp) = (e.put(&z), e.put(&r), e.put(&vec![f32::NAN; rows * k]));
        ops::loss_hvp(e, l, zp, rows, k, rp, hp).unwrap();
        let mut want = vec![0.0; rows * k];
        loss::loss_hvp(l, &z, k, &r, &mut want);
        let mut c = Cmp::ulp(Kernel::LossHvp, format!("{} {rows}x{k}", l.name()), 0.0);
        c.ulps(&e.get(hp, rows * k), &want);
        out.push(c);
    }
}

fn check_count_correct(e: &mut Emu, out: &mut Vec<Cmp>) {
    let mut c = Cmp::ulp(Kernel::CountCorrect, "count (ties: first index)", 0.0);
    for (rows, k) in [(1, 3), (130, 4), (300, 10)] {
        // values on a coarse grid: many ties
        let z: Vec<f32> = rand(rows * k, 11, 0.0, 3.0)
            .into_iter()
            .map(f32::floor)
            .collect();
        let y = labels(rows, k, 12);
        let (zp, yp, cp) = (e.put(&z), e.put_u32(&y), e.put_u32(&[7]));
        ops::count_correct(e, zp, yp, rows, k, cp).unwrap();
        let want = 7 + mlp::correct(&z, k, &y) as u32;
        c.exact(&e.get_u32(cp, 1), &[want]);
    }
    out.push(c);
}

fn check_vecops(e: &mut Emu, out: &mut Vec<Cmp>) {
    let n = 1500;
    let x = rand(n, 13, -2.0, 2.0);
    let y = rand(n, 14, -2.0, 2.0);
    let a = -0.37f32;

    let (yp, xp) = (e.put(&y), e.put(&x));
    ops::axpy(e, yp, a, xp, n).unwrap();
    let mut want = y.clone();
    vecops::axpy(&mut want, a, &x);
    let mut c = Cmp::ulp(Kernel::Axpy, "y + a x", 0.0);
    c.ulps(&e.get(yp, n), &want);
    out.push(c);

    let (wp, xp, yp) = (e.put(&vec![f32::NAN; n]), e.put(&x), e.put(&y));
    ops::waxpy(e, wp, xp, a, yp, n).unwrap();
    let mut want = vec![0.0; n];
    vecops::waxpy(&mut want, &x, a, &y);
    let mut c = Cmp::ulp(Kernel::Waxpy, "x + a y", 0.0);
    c.ulps(&e.get(wp, n), &want);
    out.push(c);

    let xp = e.put(&x);
    ops::scale(e, xp, a, n).unwrap();
    let mut want = x.clone();
    vecops::scale(&mut want, a);
    let mut c = Cmp::ulp(Kernel::Scale, "a x", 0.0);
    c.ulps(&e.get(xp, n), &want);
    out.push(c);
}

fn check_dot(e: &mut Emu, out: &mut Vec<Cmp>) {
    let mut c = Cmp::sum(Kernel::DotPartial, "n = 0 .. 300000 (+ reduce_sum)");
    let partials = e.put(&vec![f32::NAN; DOT_BLOCKS as usize]);
    for (i, n) in [0usize, 1, 255, 1000, 70_000, 300_000]
        .into_iter()
        .enumerate()
    {
        let x = rand(n, 15 + i as u64, -1.0, 1.0);
        let y = rand(n, 25 + i as u64, -1.0, 1.0);
        let (xp, yp, op) = (e.put(&x), e.put(&y), e.put(&[f32::NAN]));
        ops::dot(e, xp, yp, n, partials, op).unwrap();
        let want = vecops::dot(&x, &y);
        let terms: f64 = x.iter().zip(&y).map(|(a, b)| (a * b).abs() as f64).sum();
        // kernel: 8 lanes of n/8 products, a tree of 8, the tail; CUDA C:
        // each thread's strided sum over the grid, block_sum's tree, then
        // reduce_sum over the blocks' partial sums
        let grid = Kernel::DotPartial.config(n as u64).map_or(0, |l| l.grid.0) as usize;
        let threads = grid * crate::launch::REDUCE_THREADS as usize;
        let d_kernel = n / vecops::LANES + 3 + vecops::LANES;
        let d_gpu = n.div_ceil(threads.max(1)) + 8 + reduce_sum_depth(grid);
        c.bounded(
            n,
            e.get(op, 1)[0],
            want,
            reorder_bound(d_kernel, d_gpu, terms),
        );
    }
    out.push(c);
}

fn check_reduce_sum(e: &mut Emu, out: &mut Vec<Cmp>) {
    let mut c = Cmp::sum(Kernel::ReduceSum, "n = 0 .. 5000, scale, accumulate");
    for (i, n) in [0usize, 1, 100, 256, 1000, 5000].into_iter().enumerate() {
        let v = rand(n, 35 + i as u64, -1.0, 3.0);
        for acc in [false, true] {
            let (vp, op) = (e.put(&v), e.put(&[1.5]));
            let scale = 0.37f32;
            ops::reduce_sum(e, vp, n as u32, scale, acc, op).unwrap();
            // the kernel's mean: a plain sum, times the scale
            let total: f32 = v.iter().sum();
            let want = if acc { 1.5 } else { 0.0 } + total * scale;
            let terms: f64 = v.iter().map(|x| x.abs() as f64).sum();
            // both: a sum (in order / in reduce_sum's tree), a product with
            // the scale, an addition of 1.5 (one rounding each)
            let bound = reorder_bound(n + 1, reduce_sum_depth(n) + 1, terms) * scale as f64
                + 4.0 * U * (1.5 + want.abs() as f64);
            c.bounded(n, e.get(op, 1)[0], want, bound);
        }
    }
    out.push(c);
}

fn check_nonfinite(e: &mut Emu, out: &mut Vec<Cmp>) {
    let mut c = Cmp::ulp(Kernel::NonFinite, "NaN / ±inf anywhere, scalar", 0.0);
    let n = 1000;
    let base = rand(n, 45, -1e30, 1e30);
    for (pos, bad) in [
        (None, 0.0),
        (Some(0), f32::NAN),
        (Some(n - 1), f32::INFINITY),
        (Some(517), f32::NEG_INFINITY),
    ] {
        for scalar in [None, Some(1.0f32), Some(f32::NAN), Some(f32::INFINITY)] {
            for len in [n, 0] {
                let mut x = base.clone();
                if let Some(p) = pos {
                    x[p] = bad;
                }
                let xp = e.put(&x);
                let sp = scalar.map(|s| e.put(&[s]));
                let fp = e.put_u32(&[0]);
                ops::nonfinite(e, xp, len, sp, fp).unwrap();
                let want = !vecops::all_finite(&x[..len]) || scalar.is_some_and(|s| !s.is_finite());
                c.exact(&e.get_u32(fp, 1), &[u32::from(want)]);
            }
        }
    }
    out.push(c);
}

fn check_opt_update(e: &mut Emu, out: &mut Vec<Cmp>) {
    let n = 1200;
    let theta = rand(n, 46, -1.0, 1.0);
    let d = rand(n, 47, -1.0, 1.0);
    let v0 = rand(n, 48, -1.0, 1.0);
    let sq0 = rand(n, 49, 0.0, 0.5);
    let mut c = Cmp::ulp(
        Kernel::OptUpdate,
        "SGD (all options), Adam, AdamW, skip flags",
        0.0,
    );
    let skips = [None, Some([0u32, 0]), Some([1, 0]), Some([0, 1])];
    let mut cases: Vec<(OptElem<f32>, bool)> = vec![];
    for (momentum, nesterov) in [(0.0f32, false), (0.9, false), (0.9, true)] {
        for weight_decay in [0.0f32, 1e-4] {
            for first in [true, false] {
                for with_v in [false, true] {
                    let h = OptElem {
                        lr: 0.1,
                        momentum,
                        nesterov,
                        weight_decay,
                        first,
                        ..OptElem::none()
                    };
                    cases.push((h, with_v));
                }
            }
        }
    }
    for decoupled in [false, true] {
        for weight_decay in [0.0f32, 0.01] {
            for (beta1, steps) in [(0.9f32, 0u64), (0.9, 7), (0.3, 2), (0.0, 1)] {
                let a = Adam {
                    beta1,
                    beta2: 0.999,
                    eps: 1e-8,
                    weight_decay,
                    decoupled,
                };
                cases.push((a.rule_elem(0.01, steps), true));
            }
        }
    }
    for (h, with_state) in cases {
        let adam = h.rule != Rule::Sgd;
        for skip in skips {
            let (tp, dp) = (e.put(&theta), e.put(&d));
            let p0 = with_state.then(|| e.put(&v0));
            let p1 = (with_state && adam).then(|| e.put(&sq0));
            let sp = skip.map(|s| e.put_u32(&s));
            ops::opt_update(e, tp, dp, p0, p1, n, &h, sp).unwrap();
            let (mut wt, mut w0, mut w1) = (theta.clone(), v0.clone(), sq0.clone());
            if skip.is_none_or(|s| s == [0, 0]) {
                update_slices(
                    &mut wt,
                    &d,
                    with_state.then_some(&mut w0[..]),
                    (with_state && adam).then_some(&mut w1[..]),
                    &h,
                );
            }
            c.ulps(&e.get(tp, n), &wt);
            if let Some(p0) = p0 {
                c.ulps(&e.get(p0, n), &w0);
            }
            if let Some(p1) = p1 {
                c.ulps(&e.get(p1, n), &w1);
            }
        }
    }
    out.push(c);
}

/// No kernel function to mirror: the protocol documented in optim.cu.
fn check_commit_step(e: &mut Emu, out: &mut Vec<Cmp>) {
    let mut c = Cmp::ulp(Kernel::CommitStep, "flag protocol", 0.0);
    let step = 0x0000_0003_8000_0001u64;
    let (lo, hi) = (step as u32, (step >> 32) as u32);
    for (before, after) in [
        ([0u32, 0, 9, 9], [0u32, 0, 9, 9]), // finite step, not halted
        ([1, 0, 9, 9], [0, 1, lo, hi]),     // first rejected step: recorded
        ([1, 1, 5, 6], [0, 1, 5, 6]),       // later rejected step: first kept
        ([0, 1, 5, 6], [0, 1, 5, 6]),       // halted stays halted
    ] {
        let fp = e.put_u32(&before);
        ops::commit_step(e, fp, step).unwrap();
        c.exact(&e.get_u32(fp, 4), &after);
    }
    out.push(c);
}

/// No kernel function to mirror: the rows the host would copy.
fn check_gather_rows(e: &mut Emu, out: &mut Vec<Cmp>) {
    let mut c = Cmp::ulp(Kernel::GatherRows, "rows and labels", 0.0);
    let (s, n0, rows) = (40, 7, 29);
    let x = rand(s * n0, 55, -1.0, 1.0);
    let y = labels(s, 10, 56);
    let idx = labels(rows, s, 57);
    let (xp, yp, ip) = (e.put(&x), e.put_u32(&y), e.put_u32(&idx));
    let (xb, yb) = (e.put(&vec![f32::NAN; rows * n0]), e.put_u32(&vec![0; rows]));
    ops::gather_rows(e, xp, yp, ip, rows, n0, xb, yb).unwrap();
    let want_x: Vec<f32> = idx
        .iter()
        .flat_map(|&i| x[i as usize * n0..(i as usize + 1) * n0].to_vec())
        .collect();
    let want_y: Vec<u32> = idx.iter().map(|&i| y[i as usize]).collect();
    c.ulps(&e.get(xb, rows * n0), &want_x);
    c.exact(&e.get_u32(yb, rows), &want_y);
    out.push(c);
}

type Check = fn(&mut Emu, &mut Vec<Cmp>);

const CHECKS: [Check; 15] = [
    check_bias_act,
    check_act_backward,
    check_r_bias_act,
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

#[test]
fn bias_act_matches_kernel() {
    run(check_bias_act);
}

#[test]
fn act_backward_matches_kernel() {
    run(check_act_backward);
}

#[test]
fn r_bias_act_matches_kernel() {
    run(check_r_bias_act);
}

#[test]
fn r_act_backward_matches_kernel() {
    run(check_r_act_backward);
}

#[test]
fn col_sum_matches_kernel() {
    run(check_col_sum);
}

#[test]
fn loss_rows_matches_kernel() {
    run(check_loss_rows);
}

#[test]
fn loss_hvp_matches_kernel() {
    run(check_loss_hvp);
}

#[test]
fn count_correct_matches_kernel() {
    run(check_count_correct);
}

#[test]
fn axpy_waxpy_scale_match_kernel() {
    run(check_vecops);
}

#[test]
fn dot_matches_kernel() {
    run(check_dot);
}

#[test]
fn reduce_sum_matches_kernel() {
    run(check_reduce_sum);
}

#[test]
fn nonfinite_matches_kernel() {
    run(check_nonfinite);
}

#[test]
fn opt_update_matches_kernel() {
    run(check_opt_update);
}

#[test]
fn commit_step_follows_its_protocol() {
    run(check_commit_step);
}

#[test]
fn gather_rows_matches_host_copy() {
    run(check_gather_rows);
}

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
