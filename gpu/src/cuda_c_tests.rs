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
use fdgr_kernel::serial::{conv, norm, pool, BnGeom, ConvGeom, PoolGeom, PoolKind};
use fdgr_kernel::{act, loss, mlp, vecops, Act, Loss, Rng, Targets};

use crate::emu::Emu;
use crate::kernels::Kernel;
use crate::launch::DOT_BLOCKS;
use crate::ops;

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
    // (N, C, HW, bias): rows of a dense layer, conv planes, no bias
    let cases = [(37, 23, 1, true), (3, 5, 7, true), (4, 6, 9, false)];
    for (i, a) in ACTS.into_iter().enumerate() {
        for (j, (n, c, hw, with_bias)) in cases.into_iter().enumerate() {
            let len = n * c * hw;
            let z = rand(len, 10 + (4 * i + j) as u64, -5.0, 5.0);
            let bias = rand(c, 20 + i as u64, -1.0, 1.0);
            let zp = e.put(&z);
            let bp = with_bias.then(|| e.put(&bias));
            ops::bias_act(e, zp, bp, len, c, hw, a).unwrap();
            let mut want = z.clone();
            act::bias_act_chw(&mut want, with_bias.then_some(&bias[..]), c, hw, a);
            let case = format!(
                "{} N{n} C{c} HW{hw}{}",
                a.name(),
                if with_bias { "" } else { " no bias" }
            );
            let mut cmp = Cmp::ulp(Kernel::BiasAct, case, 0.0);
            cmp.ulps(&e.get(zp, len), &want);
            out.push(cmp);
        }
    }
}

fn check_act_map(e: &mut Emu, out: &mut Vec<Cmp>) {
    let n = 999;
    for a in ACTS {
        let x = rand(n, 3, -4.0, 4.0);
        let (yp, xp) = (e.put(&vec![f32::NAN; n]), e.put(&x));
        ops::act_map(e, yp, xp, n, a).unwrap();
        let mut want = vec![0.0; n];
        act::act_map(&mut want, &x, a);
        let mut c = Cmp::ulp(Kernel::ActMap, a.name(), 0.0);
        c.ulps(&e.get(yp, n), &want);
        out.push(c);
    }
}

fn check_r_act(e: &mut Emu, out: &mut Vec<Cmp>) {
    let n = 555;
    for a in ACTS {
        let rz = rand(n, 3, -2.0, 2.0);
        let av = activations(n, 5, a);
        let (rap, rzp, ap) = (e.put(&vec![f32::NAN; n]), e.put(&rz), e.put(&av));
        ops::r_act(e, rap, rzp, ap, n, a).unwrap();
        let mut want = vec![0.0; n];
        act::r_act(&mut want, &rz, &av, a);
        let mut c = Cmp::ulp(Kernel::RAct, a.name(), 0.0);
        c.ulps(&e.get(rap, n), &want);
        out.push(c);
    }
}

fn check_chan_sum(e: &mut Emu, out: &mut Vec<Cmp>) {
    // the kernel's terms in the kernel's order (per plane left to right,
    // planes in order): bit for bit, also beyond one block of planes
    let mut c = Cmp::ulp(Kernel::ChanSum, "N 1..300, HW 2..64, alpha, beta", 0.0);
    for (n, ch, hw) in [(1, 3, 2), (5, 4, 9), (300, 2, 3), (2, 7, 64)] {
        for (i, (alpha, beta)) in [(1.0f32, 0.0f32), (0.3, 0.7), (-2.0, 1.0)]
            .into_iter()
            .enumerate()
        {
            let m = rand(n * ch * hw, 60 + i as u64, -1.0, 1.0);
            let o = if beta == 0.0 {
                vec![f32::NAN; ch]
            } else {
                rand(ch, 61, -1.0, 1.0)
            };
            let (op, mp) = (e.put(&o), e.put(&m));
            ops::chan_sum(e, op, mp, n, ch, hw, alpha, beta).unwrap();
            let mut want = o.clone();
            act::chan_sum(&mut want, &m, ch, hw, alpha, beta);
            c.ulps(&e.get(op, ch), &want);
        }
    }
    out.push(c);
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
        // kernel: blocks of DOT_BLOCK products (8 lanes of DOT_BLOCK/8, a
        // tree of 8, the tail), then the pairwise tree over the blocks;
        // CUDA C: each thread's strided sum over the grid, block_sum's
        // tree, then reduce_sum over the blocks' partial sums
        let grid = Kernel::DotPartial.config(n as u64).map_or(0, |l| l.grid.0) as usize;
        let threads = grid * crate::launch::REDUCE_THREADS as usize;
        let blocks = n.div_ceil(vecops::DOT_BLOCK);
        let d_kernel = n.min(vecops::DOT_BLOCK) / vecops::LANES
            + 3
            + vecops::LANES
            + blocks.next_power_of_two().trailing_zeros() as usize;
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

#[test]
fn bias_act_matches_kernel() {
    run(check_bias_act);
}

#[test]
fn act_backward_matches_kernel() {
    run(check_act_backward);
}

#[test]
fn act_map_r_act_chan_sum_match_kernel() {
    run(check_act_map);
    run(check_r_act);
    run(check_chan_sum);
}

#[test]
fn axpby_add_copy_unless_match_kernel() {
    run(check_axpby_add_copy);
}

#[test]
fn im2col_col2im_layouts_match_kernel() {
    run(check_im2col);
    run(check_col2im);
    run(check_layouts);
}

#[test]
fn gemm_convolution_matches_kernel() {
    run(check_conv_gemm);
}

#[test]
fn batch_norm_matches_kernel() {
    run(check_bn_stats);
    run(check_bn_apply);
    run(check_bn_backward);
    run(check_bn_r_forward);
    run(check_bn_r_backward);
}

#[test]
fn pooling_matches_kernel() {
    run(check_pool);
}

#[test]
fn gather_crop_matches_host_augmentation() {
    run(check_gather_crop);
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

fn check_axpby_add_copy(e: &mut Emu, out: &mut Vec<Cmp>) {
    let n = 1300;
    let x = rand(n, 71, -2.0, 2.0);
    let y = rand(n, 72, -2.0, 2.0);
    let mut c = Cmp::ulp(Kernel::Axpby, "beta = 0 (over NaN), 1, 0.7", 0.0);
    for (alpha, beta) in [(0.3f32, 0.0f32), (1.0, 1.0), (-1.5, 0.7)] {
        let init = if beta == 0.0 {
            vec![f32::NAN; n]
        } else {
            y.clone()
        };
        let (yp, xp) = (e.put(&init), e.put(&x));
        ops::axpby(e, yp, xp, n, alpha, beta).unwrap();
        let mut want = init.clone();
        vecops::axpby(&mut want, &x, alpha, beta);
        c.ulps(&e.get(yp, n), &want);
    }
    out.push(c);
    let (wp, ap, bp) = (e.put(&vec![f32::NAN; n]), e.put(&x), e.put(&y));
    ops::add(e, wp, ap, bp, n).unwrap();
    let mut want = vec![0.0; n];
    vecops::add(&mut want, &x, &y);
    let mut c = Cmp::ulp(Kernel::Add, "a + b", 0.0);
    c.ulps(&e.get(wp, n), &want);
    out.push(c);
    // no kernel function to mirror: Objective::commit's copy, skipped on a
    // rejected deferred step
    let mut c = Cmp::ulp(Kernel::CopyUnless, "copy, skip flags", 0.0);
    for skip in [None, Some([0u32, 0]), Some([1, 0]), Some([0, 1])] {
        let (dp, sp) = (e.put(&y), e.put(&x));
        let fp = skip.map(|f| e.put_u32(&f));
        ops::copy_unless(e, dp, sp, n, fp).unwrap();
        let want = if skip.is_none_or(|f| f == [0, 0]) {
            &x
        } else {
            &y
        };
        c.ulps(&e.get(dp, n), want);
    }
    out.push(c);
}

/// Convolution geometries: stride 1 keeping the size, stride 2, no
/// padding, 1×1, groups, depthwise; batch N.
fn conv_geoms() -> Vec<ConvGeom> {
    let g = |n, c, h, w, k_out, k, stride, pad, groups| {
        let oh = (h + 2 * pad - k) / stride + 1;
        let ow = (w + 2 * pad - k) / stride + 1;
        ConvGeom {
            n,
            c,
            h,
            w,
            k_out,
            k,
            stride,
            pad,
            groups,
            oh,
            ow,
        }
    };
    vec![
        g(3, 2, 6, 5, 4, 3, 1, 1, 1),
        g(2, 3, 7, 7, 5, 3, 2, 1, 1),
        g(3, 4, 5, 6, 6, 3, 1, 0, 2),
        g(2, 6, 6, 6, 6, 3, 1, 1, 6),
        g(4, 3, 5, 5, 2, 1, 2, 0, 1),
        g(2, 2, 9, 8, 3, 5, 3, 2, 1),
    ]
}

fn check_im2col(e: &mut Emu, out: &mut Vec<Cmp>) {
    let mut c = Cmp::ulp(Kernel::Im2col, "6 geometries, chunks, groups", 0.0);
    for (i, g) in conv_geoms().into_iter().enumerate() {
        let x = rand(g.x_len(), 80 + i as u64, -1.0, 1.0);
        let xp = e.put(&x);
        let rows = g.cg() * g.k * g.k;
        let ohw = g.oh * g.ow;
        for (n0, nc) in [(0, g.n), (1, g.n - 1)] {
            for grp in 0..g.groups {
                let cp = e.put(&vec![f32::NAN; rows * nc * ohw]);
                ops::im2col(e, &g, xp, cp, n0, nc, grp).unwrap();
                let got = e.get(cp, rows * nc * ohw);
                for j in 0..nc {
                    let mut want = vec![f32::NAN; rows * ohw];
                    conv::im2col(&g, &x, n0 + j, grp, &mut want);
                    let mine: Vec<f32> = (0..rows * ohw)
                        .map(|q| got[(q / ohw) * nc * ohw + j * ohw + q % ohw])
                        .collect();
                    c.ulps(&mine, &want);
                }
            }
        }
    }
    out.push(c);
}

fn check_col2im(e: &mut Emu, out: &mut Vec<Cmp>) {
    let mut c = Cmp::ulp(Kernel::Col2im, "6 geometries, beta 0 / 1 / 0.5", 0.0);
    for (i, g) in conv_geoms().into_iter().enumerate() {
        let rows = g.cg() * g.k * g.k;
        let ohw = g.oh * g.ow;
        let (n0, nc) = (1, g.n - 1);
        let col = rand(rows * nc * ohw, 90 + i as u64, -1.0, 1.0);
        let colp = e.put(&col);
        for beta in [0.0f32, 1.0, 0.5] {
            for grp in 0..g.groups {
                let dx0 = if beta == 0.0 {
                    vec![f32::NAN; g.x_len()]
                } else {
                    rand(g.x_len(), 95, -1.0, 1.0)
                };
                let dxp = e.put(&dx0);
                ops::col2im(e, &g, colp, dxp, n0, nc, grp, beta).unwrap();
                let mut want = dx0.clone();
                let hw = g.h * g.w;
                for j in 0..nc {
                    let n = n0 + j;
                    for ic in 0..g.cg() {
                        let o = (n * g.c + grp * g.cg() + ic) * hw;
                        vecops::scale_or_zero(&mut want[o..o + hw], beta);
                    }
                    let cj: Vec<f32> = (0..rows * ohw)
                        .map(|q| col[(q / ohw) * nc * ohw + j * ohw + q % ohw])
                        .collect();
                    conv::col2im_add(&g, &cj, n, grp, &mut want);
                }
                c.ulps(&e.get(dxp, g.x_len()), &want);
            }
        }
    }
    out.push(c);
}

/// No kernel function to mirror: the layout changes around the GEMMs, and
/// from_cnp's β·y + src (serial::conv::forward's last operation).
fn check_layouts(e: &mut Emu, out: &mut Vec<Cmp>) {
    let (n, kk, np) = (5, 4, 7);
    let src = rand(n * kk * np, 97, -1.0, 1.0);
    let (n0, nc) = (1, 3);
    let sp = e.put(&src);
    let dp = e.put(&vec![f32::NAN; kk * nc * np]);
    ops::to_cnp(e, sp, dp, n0, nc, kk, np).unwrap();
    let mut want = vec![0.0; kk * nc * np];
    for c in 0..kk {
        for j in 0..nc {
            for p in 0..np {
                want[(c * nc + j) * np + p] = src[((n0 + j) * kk + c) * np + p];
            }
        }
    }
    let mut cmp = Cmp::ulp(Kernel::ToCnp, "NCHW -> channel-major", 0.0);
    cmp.ulps(&e.get(dp, kk * nc * np), &want);
    out.push(cmp);
    let mut cmp = Cmp::ulp(Kernel::FromCnp, "channel-major -> NCHW, beta", 0.0);
    let t = rand(kk * nc * np, 98, -1.0, 1.0);
    let tp = e.put(&t);
    for beta in [0.0f32, 0.6] {
        let y0 = if beta == 0.0 {
            vec![f32::NAN; n * kk * np]
        } else {
            src.clone()
        };
        let yp = e.put(&y0);
        ops::from_cnp(e, tp, yp, n0, nc, kk, np, beta).unwrap();
        let mut want = y0.clone();
        for c in 0..kk {
            for j in 0..nc {
                for p in 0..np {
                    let v = t[(c * nc + j) * np + p];
                    let at = ((n0 + j) * kk + c) * np + p;
                    want[at] = if beta == 0.0 { v } else { beta * want[at] + v };
                }
            }
        }
        cmp.ulps(&e.get(yp, n * kk * np), &want);
    }
    out.push(cmp);
}

/// The whole im2col + GEMM convolution (crate::conv::run, the emulator's
/// SGEMM standing for cuBLAS) against serial::conv's direct loops: the
/// same products summed in another order, so each output is within the
/// reordered-sum bound of its terms (depth d = the number of terms, which
/// bounds any summation order), plus one rounding each for α·s and β·y.
/// Small scratch: the batch runs in chunks of samples.
fn check_conv_gemm(e: &mut Emu, out: &mut Vec<Cmp>) {
    let mut fwd = Cmp::sum(Kernel::Im2col, "conv::run forward vs serial");
    let mut data = Cmp::sum(Kernel::Col2im, "conv::run backward data vs serial");
    let mut filt = Cmp::sum(Kernel::ToCnp, "conv::run backward filter vs serial");
    let abs = |v: &[f32]| -> Vec<f64> { v.iter().map(|x| x.abs() as f64).collect() };
    for (i, g) in conv_geoms().into_iter().enumerate() {
        let x = rand(g.x_len(), 100 + i as u64, -1.0, 1.0);
        let w = rand(g.w_len(), 110 + i as u64, -1.0, 1.0);
        let dy = rand(g.y_len(), 120 + i as u64, -1.0, 1.0);
        let per = crate::conv::scratch_per_sample(&g);
        let scratch = e.put(&vec![f32::NAN; 2 * per]);
        let (xp, wp, dyp) = (e.put(&x), e.put(&w), e.put(&dy));
        let (ax, aw, ady) = (abs(&x), abs(&w), abs(&dy));
        for (alpha, beta) in [(1.0f32, 0.0f32), (0.5, 1.0), (-1.0, 0.3)] {
            let run = |e: &mut Emu, kind, a, b, o0: &[f32]| {
                let op = e.put(o0);
                let cop = crate::device::ConvOp {
                    kind,
                    g,
                    a,
                    b,
                    out: op,
                    alpha,
                    beta,
                };
                crate::conv::run(e, &cop, scratch, 2 * per).unwrap();
                e.get(op, o0.len())
            };
            let init = |len: usize, seed| {
                if beta == 0.0 {
                    vec![f32::NAN; len]
                } else {
                    rand(len, seed, -1.0, 1.0)
                }
            };
            let bound = |d: usize, t: f64, o: f32, r: f32| {
                reorder_bound(d, d, alpha.abs() as f64 * t)
                    + 4.0 * U * ((beta * o).abs() as f64 + r.abs() as f64)
            };
            // forward
            let y0 = init(g.y_len(), 130);
            let got = run(e, crate::device::ConvKind::Forward, xp, wp, &y0);
            let mut want = y0.clone();
            conv::forward(&g, &x, &w, &mut want, alpha, beta);
            let mut terms = vec![0.0f64; g.y_len()];
            conv::forward(&g, &ax, &aw, &mut terms, 1.0, 0.0);
            let d = g.cg() * g.k * g.k;
            for q in 0..g.y_len() {
                let o = if beta == 0.0 { 0.0 } else { y0[q] };
                fwd.bounded(q, got[q], want[q], bound(d, terms[q], o, want[q]));
            }
            // backward data
            let dx0 = init(g.x_len(), 131);
            let got = run(e, crate::device::ConvKind::BackwardData, dyp, wp, &dx0);
            let mut want = dx0.clone();
            conv::backward_data(&g, &dy, &w, &mut want, alpha, beta);
            let mut terms = vec![0.0f64; g.x_len()];
            conv::backward_data(&g, &ady, &aw, &mut terms, 1.0, 0.0);
            let d = g.kg() * g.k * g.k;
            for q in 0..g.x_len() {
                let o = if beta == 0.0 { 0.0 } else { dx0[q] };
                data.bounded(q, got[q], want[q], bound(d, terms[q], o, want[q]));
            }
            // backward filter
            let dw0 = init(g.w_len(), 132);
            let got = run(e, crate::device::ConvKind::BackwardFilter, xp, dyp, &dw0);
            let mut want = dw0.clone();
            conv::backward_filter(&g, &x, &dy, &mut want, alpha, beta);
            let mut terms = vec![0.0f64; g.w_len()];
            conv::backward_filter(&g, &ax, &ady, &mut terms, 1.0, 0.0);
            let d = g.n * g.oh * g.ow;
            for q in 0..g.w_len() {
                let o = if beta == 0.0 { 0.0 } else { dw0[q] };
                filt.bounded(q, got[q], want[q], bound(d, terms[q], o, want[q]));
            }
        }
    }
    out.extend([fwd, data, filt]);
}

/// Batch-norm geometries (N, C, HW): vectors (BatchNorm1d), planes, more
/// values per channel than a block has threads.
const BN_GEOMS: [(usize, usize, usize); 4] = [(4, 3, 1), (3, 5, 6), (2, 2, 300), (7, 4, 49)];

fn bn_geom(i: usize) -> BnGeom {
    let (n, c, hw) = BN_GEOMS[i];
    BnGeom { n, c, hw }
}

/// Depth of a per-channel block sum over m values: each thread's strided
/// sum, then block_sum's tree.
fn chan_depth(m: usize) -> usize {
    reduce_sum_depth(m)
}

/// Σ over channel `ch`'s values of f(i), in the kernel's order (f64 for
/// the bound's Σ|terms|).
fn chan_abs(g: &BnGeom, ch: usize, f: impl Fn(usize) -> f64) -> f64 {
    let mut s = 0.0;
    for n in 0..g.n {
        for p in 0..g.hw {
            s += f((n * g.c + ch) * g.hw + p).abs();
        }
    }
    s
}

fn check_bn_stats(e: &mut Emu, out: &mut Vec<Cmp>) {
    let mut mean = Cmp::sum(Kernel::BnStats, "batch mean");
    let mut inv = Cmp::sum(Kernel::BnStats, "1/sigma");
    let mut pend = Cmp::sum(Kernel::BnStats, "running statistics update");
    let eps = 1e-5f32;
    let momentum = 0.1f32;
    for i in 0..BN_GEOMS.len() {
        let g = bn_geom(i);
        let x = rand(g.len(), 140 + i as u64, -1.0, 3.0);
        let running = rand(2 * g.c, 141, 0.1, 1.0);
        let (xp, rp) = (e.put(&x), e.put(&running));
        let sp = e.put(&vec![f32::NAN; 2 * g.c]);
        let pp = e.put(&vec![f32::NAN; 2 * g.c]);
        ops::bn_stats(e, &g, xp, eps, sp, Some(rp), Some(pp), momentum).unwrap();
        let (stats, pending) = (e.get(sp, 2 * g.c), e.get(pp, 2 * g.c));
        let m = g.m();
        let (d1, d2) = (m, chan_depth(m));
        for ch in 0..g.c {
            let (mu, is, m2) = norm::channel_stats(&g, &x, ch, eps);
            // both sum in f64 (unit U64) and round each statistic to f32
            // once: the sums' bound in f64, then the two roundings
            // (|fl(a) − fl(b)| ≤ |a − b| + U·|a| + U·|b|)
            let bm = reorder_bound_in(U64, d1, d2, chan_abs(&g, ch, |i| x[i] as f64)) / m as f64
                + 2.0 * U * mu.abs() as f64;
            mean.bounded(ch, stats[ch], mu, bm);
            // Σ(x − μ)² has positive terms: relative bound (d1 + d2)·U64
            // on it (around means that differ by the f64 sums' bound,
            // second order), ½ of it on 1/√(σ² + ε), then the two roundings
            let dmu = reorder_bound_in(U64, d1, d2, chan_abs(&g, ch, |i| x[i] as f64)) / m as f64;
            let rel = 0.5 * (d1 + d2) as f64 * U64 + 2.0 * U + m as f64 * dmu * dmu / m2 as f64;
            inv.bounded(ch, stats[g.c + ch], is, rel * is as f64);
            // the running statistics, in f32 from the rounded mean and Σ(x − μ)²
            let (rm, rv) = norm::running_update(&g, &running, ch, mu, m2, momentum);
            let bmean = momentum as f64 * bm + 3.0 * U * (rm.abs() as f64 + running[ch] as f64);
            pend.bounded(ch, pending[ch], rm, bmean);
            let unbiased = m2 as f64 / (m - 1) as f64;
            let brv = momentum as f64 * ((d1 + d2) as f64 * U64 + 6.0 * U) * unbiased
                + 3.0 * U * (rv.abs() as f64 + running[g.c + ch] as f64);
            pend.bounded(g.c + ch, pending[g.c + ch], rv, brv);
        }
        // without a pending update: the same statistics, nothing else
        let sp2 = e.put(&vec![f32::NAN; 2 * g.c]);
        ops::bn_stats(e, &g, xp, eps, sp2, None, None, momentum).unwrap();
        let mut c = Cmp::ulp(Kernel::BnStats, "same stats without pending", 0.0);
        c.ulps(&e.get(sp2, 2 * g.c), &stats);
        out.push(c);
    }
    out.extend([mean, inv, pend]);
}

fn check_bn_apply(e: &mut Emu, out: &mut Vec<Cmp>) {
    let eps = 1e-5f32;
    for i in 0..BN_GEOMS.len() {
        let g = bn_geom(i);
        let x = rand(g.len(), 150 + i as u64, -2.0, 2.0);
        let mut gb = rand(2 * g.c, 151, -1.0, 1.0);
        gb[..g.c].iter_mut().for_each(|v| *v += 1.5);
        let stats: Vec<f32> = rand(g.c, 152, -0.5, 0.5)
            .into_iter()
            .chain(rand(g.c, 153, 0.5, 2.0))
            .collect();
        for a in ACTS {
            for eval in [false, true] {
                let (xp, gp, sp) = (e.put(&x), e.put(&gb), e.put(&stats));
                let yp = e.put(&vec![f32::NAN; g.len()]);
                ops::bn_apply(e, &g, xp, yp, gp, sp, eval, eps, a).unwrap();
                let mut want = vec![0.0; g.len()];
                if eval {
                    norm::forward_eval(&g, &x, &mut want, &gb, &stats, eps, a);
                } else {
                    // forward_train's planes with these statistics
                    for ch in 0..g.c {
                        for n in 0..g.n {
                            let o = (n * g.c + ch) * g.hw;
                            norm::normalize_plane(
                                &x[o..o + g.hw],
                                &mut want[o..o + g.hw],
                                gb[ch],
                                gb[g.c + ch],
                                stats[ch],
                                stats[g.c + ch],
                                a,
                            );
                        }
                    }
                }
                let case = format!("{} {}", a.name(), if eval { "eval" } else { "train" });
                let mut c = Cmp::ulp(Kernel::BnApply, case, 0.0);
                c.ulps(&e.get(yp, g.len()), &want);
                out.push(c);
            }
        }
    }
}

/// Random batch statistics (mean, then 1/σ) for `g`.
fn bn_stats_of(g: &BnGeom, x: &[f32]) -> Vec<f32> {
    let mut st = vec![0.0; 2 * g.c];
    for ch in 0..g.c {
        let (mu, is, _) = norm::channel_stats(g, x, ch, 1e-5);
        st[ch] = mu;
        st[g.c + ch] = is;
    }
    st
}

fn check_bn_backward(e: &mut Emu, out: &mut Vec<Cmp>) {
    let mut sums = Cmp::sum(Kernel::BnBwdSums, "sum dy, sum dy xhat");
    let mut dp = Cmp::ulp(Kernel::BnBwdSums, "d gamma, d beta from the sums", 0.0);
    let mut dx = Cmp::ulp(Kernel::BnBwdDx, "dx from the sums (acc or not)", 0.0);
    for i in 0..BN_GEOMS.len() {
        let g = bn_geom(i);
        let x = rand(g.len(), 160 + i as u64, -2.0, 2.0);
        let dy = rand(g.len(), 161, -1.0, 1.0);
        let gb = rand(2 * g.c, 162, 0.5, 1.5);
        let st = bn_stats_of(&g, &x);
        let (xp, dyp, gp, sp) = (e.put(&x), e.put(&dy), e.put(&gb), e.put(&st));
        for (alpha, beta) in [(1.0f32, 0.0f32), (0.4, 0.6)] {
            let sm = e.put(&vec![f32::NAN; 2 * g.c]);
            let p0 = if beta == 0.0 {
                vec![f32::NAN; 2 * g.c]
            } else {
                rand(2 * g.c, 163, -1.0, 1.0)
            };
            let pp = e.put(&p0);
            ops::bn_bwd_sums(e, &g, xp, dyp, sp, sm, Some((pp, alpha, beta))).unwrap();
            let got = e.get(sm, 2 * g.c);
            let d2 = chan_depth(g.m());
            for ch in 0..g.c {
                let (mu, is) = (st[ch], st[g.c + ch]);
                let (sdy, sdyx) = norm::backward_sums(&g, &x, &dy, ch, mu, is);
                let t0 = chan_abs(&g, ch, |i| dy[i] as f64);
                let t1 = chan_abs(&g, ch, |i| (dy[i] * ((x[i] - mu) * is)) as f64);
                sums.bounded(ch, got[ch], sdy, reorder_bound(g.m(), d2, t0));
                sums.bounded(g.c + ch, got[g.c + ch], sdyx, reorder_bound(g.m(), d2, t1));
            }
            let mut want_p = p0.clone();
            for ch in 0..g.c {
                norm::put(&mut want_p[ch], got[g.c + ch], alpha, beta);
                norm::put(&mut want_p[g.c + ch], got[ch], alpha, beta);
            }
            dp.ulps(&e.get(pp, 2 * g.c), &want_p);
            for acc in [false, true] {
                let d0 = if acc {
                    rand(g.len(), 164, -1.0, 1.0)
                } else {
                    vec![f32::NAN; g.len()]
                };
                let dxp = e.put(&d0);
                ops::bn_bwd_dx(e, &g, xp, dyp, dxp, gp, sp, sm, acc).unwrap();
                let mut want = d0.clone();
                for ch in 0..g.c {
                    for n in 0..g.n {
                        let o = (n * g.c + ch) * g.hw;
                        let r = o..o + g.hw;
                        norm::backward_plane(
                            &g,
                            &x[r.clone()],
                            &dy[r.clone()],
                            &mut want[r],
                            acc,
                            gb[ch],
                            (st[ch], st[g.c + ch]),
                            (got[ch], got[g.c + ch]),
                        );
                    }
                }
                dx.ulps(&e.get(dxp, g.len()), &want);
            }
        }
    }
    out.extend([sums, dp, dx]);
}

fn check_bn_r_forward(e: &mut Emu, out: &mut Vec<Cmp>) {
    let mut sums = Cmp::sum(Kernel::BnRfwdSums, "mean R{x}, mean xhat R{x}");
    let mut ry = Cmp::ulp(
        Kernel::BnRfwdApply,
        "R{y} from the means (with, without R{x})",
        0.0,
    );
    for i in 0..BN_GEOMS.len() {
        let g = bn_geom(i);
        let x = rand(g.len(), 170 + i as u64, -2.0, 2.0);
        let rx = rand(g.len(), 171, -1.0, 1.0);
        let gb = rand(2 * g.c, 172, 0.5, 1.5);
        let vgb = rand(2 * g.c, 173, -1.0, 1.0);
        let st = bn_stats_of(&g, &x);
        let (xp, rxp, gp, vp, sp) = (e.put(&x), e.put(&rx), e.put(&gb), e.put(&vgb), e.put(&st));
        for with_rx in [true, false] {
            let rxo = with_rx.then_some(rxp);
            let rs = e.put(&vec![f32::NAN; 2 * g.c]);
            ops::bn_rfwd_sums(e, &g, xp, rxo, sp, rs).unwrap();
            let got = e.get(rs, 2 * g.c);
            let m = g.m() as f64;
            for ch in 0..g.c {
                let (mu, is) = (st[ch], st[g.c + ch]);
                let (ma, mb) = if with_rx {
                    norm::r_forward_means(&g, &x, &rx, ch, mu, is)
                } else {
                    (0.0, 0.0)
                };
                let d2 = chan_depth(g.m());
                let t0 = chan_abs(&g, ch, |i| rx[i] as f64);
                let t1 = chan_abs(&g, ch, |i| (((x[i] - mu) * is) * rx[i]) as f64);
                let b0 = reorder_bound(g.m(), d2, t0) / m + 2.0 * U * ma.abs() as f64;
                let b1 = reorder_bound(g.m(), d2, t1) / m + 2.0 * U * mb.abs() as f64;
                sums.bounded(ch, got[ch], ma, b0);
                sums.bounded(g.c + ch, got[g.c + ch], mb, b1);
            }
            let ryp = e.put(&vec![f32::NAN; g.len()]);
            ops::bn_rfwd_apply(e, &g, xp, rxo, ryp, gp, vp, sp, rs).unwrap();
            let mut want = vec![0.0; g.len()];
            for ch in 0..g.c {
                for n in 0..g.n {
                    let o = (n * g.c + ch) * g.hw;
                    let r = o..o + g.hw;
                    norm::r_forward_plane(
                        &x[r.clone()],
                        with_rx.then(|| &rx[r.clone()]),
                        &mut want[r],
                        (gb[ch], vgb[ch], vgb[g.c + ch]),
                        (st[ch], st[g.c + ch]),
                        (got[ch], got[g.c + ch]),
                    );
                }
            }
            ry.ulps(&e.get(ryp, g.len()), &want);
        }
    }
    out.extend([sums, ry]);
}

fn check_bn_r_backward(e: &mut Emu, out: &mut Vec<Cmp>) {
    let mut sums = Cmp::sum(Kernel::BnRbwdSums, "the five R-backward sums");
    let mut rsums = Cmp::ulp(
        Kernel::BnRbwdSums,
        "R{d gamma}, R{d beta} from the sums",
        0.0,
    );
    let mut rdx = Cmp::ulp(
        Kernel::BnRbwdDx,
        "R{dx} from the sums (acc, R{x} or not)",
        0.0,
    );
    for i in 0..BN_GEOMS.len() {
        let g = bn_geom(i);
        let c = g.c;
        let x = rand(g.len(), 180 + i as u64, -2.0, 2.0);
        let rx = rand(g.len(), 181, -1.0, 1.0);
        let dy = rand(g.len(), 182, -1.0, 1.0);
        let rdy = rand(g.len(), 183, -1.0, 1.0);
        let gb = rand(2 * c, 184, 0.5, 1.5);
        let vgb = rand(2 * c, 185, -1.0, 1.0);
        let st = bn_stats_of(&g, &x);
        let rst = rand(2 * c, 186, -0.3, 0.3);
        let b = ops::BnRBack {
            x: e.put(&x),
            rx: Some(e.put(&rx)),
            dy: e.put(&dy),
            rdy: e.put(&rdy),
            gb: e.put(&gb),
            vgb: e.put(&vgb),
            stats: e.put(&st),
            rstats: e.put(&rst),
        };
        for with_rx in [true, false] {
            let b = ops::BnRBack {
                rx: if with_rx { b.rx } else { None },
                ..b
            };
            let s5 = e.put(&vec![f32::NAN; 5 * c]);
            let rs = e.put(&vec![f32::NAN; 2 * c]);
            ops::bn_rbwd_sums(e, &g, &b, s5, rs).unwrap();
            let got = e.get(s5, 5 * c);
            let a = norm::RBack {
                x: &x,
                rx: with_rx.then_some(&rx[..]),
                dy: &dy,
                rdy: &rdy,
                gb: &gb,
                vgb: &vgb,
                stats: &st,
                rstats: &rst,
            };
            let d2 = chan_depth(g.m());
            for ch in 0..c {
                let w = norm::r_backward_sums(&g, &a, ch);
                let (mu, is, ma, mb) = (st[ch], st[c + ch], rst[ch], rst[c + ch]);
                let xh = |i: usize| (x[i] - mu) * is;
                let rxh = |i: usize| {
                    if with_rx {
                        is * (rx[i] - ma - xh(i) * mb)
                    } else {
                        0.0
                    }
                };
                let terms: [(f32, f64); 5] = [
                    (w.dy, chan_abs(&g, ch, |i| dy[i] as f64)),
                    (w.dyx, chan_abs(&g, ch, |i| (dy[i] * xh(i)) as f64)),
                    (w.rdy, chan_abs(&g, ch, |i| rdy[i] as f64)),
                    (w.rdyx, chan_abs(&g, ch, |i| (rdy[i] * xh(i)) as f64)),
                    (w.dyrxh, chan_abs(&g, ch, |i| (dy[i] * rxh(i)) as f64)),
                ];
                for (k, (want, t)) in terms.into_iter().enumerate() {
                    sums.bounded(
                        k * c + ch,
                        got[k * c + ch],
                        want,
                        reorder_bound(g.m(), d2, t),
                    );
                }
            }
            let mut want_rs = vec![0.0f32; 2 * c];
            for ch in 0..c {
                want_rs[ch] = got[3 * c + ch] + got[4 * c + ch];
                want_rs[c + ch] = got[2 * c + ch];
            }
            rsums.ulps(&e.get(rs, 2 * c), &want_rs);
            for acc in [false, true] {
                let d0 = if acc {
                    rand(g.len(), 187, -1.0, 1.0)
                } else {
                    vec![f32::NAN; g.len()]
                };
                let dp = e.put(&d0);
                ops::bn_rbwd_dx(e, &g, &b, dp, s5, acc).unwrap();
                let mut want = d0.clone();
                for ch in 0..c {
                    let s = norm::RSums {
                        dy: got[ch],
                        dyx: got[c + ch],
                        rdy: got[2 * c + ch],
                        rdyx: got[3 * c + ch],
                        dyrxh: got[4 * c + ch],
                    };
                    for n in 0..g.n {
                        let o = (n * c + ch) * g.hw;
                        norm::r_backward_plane(&g, &a, ch, o, &s, &mut want[o..o + g.hw], acc);
                    }
                }
                rdx.ulps(&e.get(dp, g.len()), &want);
            }
        }
    }
    out.extend([sums, rsums, rdx]);
}

fn check_pool(e: &mut Emu, out: &mut Vec<Cmp>) {
    let mut f = Cmp::ulp(
        Kernel::PoolFwd,
        "max / avg / global, stride, padding, ties",
        0.0,
    );
    let mut b = Cmp::ulp(
        Kernel::PoolBwd,
        "gather = the kernel's scatter (acc or not)",
        0.0,
    );
    let mut r = Cmp::ulp(Kernel::PoolR, "R{y} at the arg-max / pooled R{x}", 0.0);
    let pg = |kind, n, c, h, w, k, stride, pad| {
        let oh = (h + 2 * pad - k) / stride + 1;
        let ow = (w + 2 * pad - k) / stride + 1;
        PoolGeom {
            kind,
            n,
            c,
            h,
            w,
            kh: k,
            kw: k,
            stride,
            pad,
            oh,
            ow,
        }
    };
    let global = PoolGeom {
        kind: PoolKind::Avg,
        n: 3,
        c: 4,
        h: 5,
        w: 6,
        kh: 5,
        kw: 6,
        stride: 1,
        pad: 0,
        oh: 1,
        ow: 1,
    };
    let geoms = [
        pg(PoolKind::Max, 2, 3, 6, 6, 2, 2, 0),
        pg(PoolKind::Max, 2, 2, 7, 5, 3, 1, 1),
        pg(PoolKind::Max, 1, 2, 9, 9, 3, 2, 1),
        pg(PoolKind::Avg, 2, 3, 6, 6, 2, 2, 0),
        pg(PoolKind::Avg, 2, 2, 7, 7, 3, 2, 1),
        global,
    ];
    for (i, g) in geoms.into_iter().enumerate() {
        // a coarse grid: many ties, where the first maximum must win
        let x: Vec<f32> = rand(g.x_len(), 190 + i as u64, 0.0, 4.0)
            .into_iter()
            .map(f32::floor)
            .collect();
        let rx = rand(g.x_len(), 191, -1.0, 1.0);
        let dy = rand(g.y_len(), 192, -1.0, 1.0);
        let (xp, rxp, dyp) = (e.put(&x), e.put(&rx), e.put(&dy));
        let yp = e.put(&vec![f32::NAN; g.y_len()]);
        ops::pool_fwd(e, &g, xp, yp).unwrap();
        let mut want = vec![0.0; g.y_len()];
        pool::forward(&g, &x, &mut want);
        f.ulps(&e.get(yp, g.y_len()), &want);
        let ryp = e.put(&vec![f32::NAN; g.y_len()]);
        ops::pool_r(e, &g, xp, rxp, ryp).unwrap();
        pool::r_forward(&g, &x, &rx, &mut want);
        r.ulps(&e.get(ryp, g.y_len()), &want);
        for acc in [false, true] {
            let d0 = if acc {
                rand(g.x_len(), 193, -1.0, 1.0)
            } else {
                vec![f32::NAN; g.x_len()]
            };
            let dxp = e.put(&d0);
            ops::pool_bwd(e, &g, xp, dyp, dxp, acc).unwrap();
            let mut want = d0.clone();
            pool::backward(&g, &x, &dy, &mut want, acc);
            b.ulps(&e.get(dxp, g.x_len()), &want);
        }
    }
    out.extend([f, b, r]);
}

/// The reference of gather_crop: host/src/augment.rs's definition (pad by
/// `pad` with `fill`, take the window at (top, left), mirror when
/// flipped), written out for one sample.
fn crop_ref(
    img: &[f32],
    dims: (usize, usize, usize),
    pad: usize,
    fill: &[f32],
    cr: (u32, u32, bool),
) -> Vec<f32> {
    let (c, h, w) = dims;
    let mut o = vec![0.0; c * h * w];
    for ch in 0..c {
        for y in 0..h {
            for x in 0..w {
                let xx = if cr.2 { w - 1 - x } else { x };
                let sy = y as isize + cr.0 as isize - pad as isize;
                let sx = xx as isize + cr.1 as isize - pad as isize;
                let inside = sy >= 0 && sy < h as isize && sx >= 0 && sx < w as isize;
                o[(ch * h + y) * w + x] = if inside {
                    img[(ch * h + sy as usize) * w + sx as usize]
                } else {
                    fill[ch]
                };
            }
        }
    }
    o
}

/// No kernel function to mirror: the host's augmentation (see crop_ref).
fn check_gather_crop(e: &mut Emu, out: &mut Vec<Cmp>) {
    let mut c = Cmp::ulp(Kernel::GatherCrop, "crop + flip + fill, labels", 0.0);
    let dims = (3, 5, 6);
    let f = 3 * 5 * 6;
    let (s, rows, pad) = (9, 7, 2);
    let x = rand(s * f, 200, -1.0, 1.0);
    let y = labels(s, 10, 201);
    let idx = labels(rows, s, 202);
    let fill = [0.25f32, -0.5, 0.75];
    let mut r = Rng::new(203);
    let crops: Vec<(u32, u32, bool)> = (0..rows)
        .map(|_| {
            (
                r.below(2 * pad + 1) as u32,
                r.below(2 * pad + 1) as u32,
                r.below(2) == 1,
            )
        })
        .collect();
    let packed: Vec<u32> = crops
        .iter()
        .map(|&(t, l, fl)| {
            crate::trainer::CropDraw {
                top: t,
                left: l,
                flip: fl,
            }
            .packed()
        })
        .collect();
    let (xp, yp, ip, cp, fp) = (
        e.put(&x),
        e.put_u32(&y),
        e.put_u32(&idx),
        e.put_u32(&packed),
        e.put(&fill),
    );
    let (xb, yb) = (e.put(&vec![f32::NAN; rows * f]), e.put_u32(&vec![0; rows]));
    ops::gather_crop(e, xp, yp, ip, cp, rows, dims, pad, Some(fp), xb, yb).unwrap();
    let mut want = vec![];
    for (j, &i) in idx.iter().enumerate() {
        let img = &x[i as usize * f..(i as usize + 1) * f];
        want.extend(crop_ref(img, dims, pad, &fill, crops[j]));
    }
    c.ulps(&e.get(xb, rows * f), &want);
    let want_y: Vec<u32> = idx.iter().map(|&i| y[i as usize]).collect();
    c.exact(&e.get_u32(yb, rows), &want_y);
    out.push(c);
}
