//! The kernels of dense layers and of every step: bias and activation and
//! their derivatives, column and channel sums, the losses, the vector
//! operations and reductions, the non-finite flag, the optimizer update,
//! the step commit and the row gather.

use super::*;

pub(super) fn check_bias_act(e: &mut Emu, out: &mut Vec<Cmp>) {
    // (N, C, HW, bias): rows of a dense layer, conv planes, no bias
    let cases = [(37, 23, 1, true), (3, 5, 7, true), (4, 6, 9, false)];
    for (i, a) in ACTS.into_iter().enumerate() {
        for (j, (n, c, hw, with_bias)) in cases.into_iter().enumerate() {
            let len = n * c * hw;
            let z = rand(len, 10 + (4 * i + j) as u64, -5.0, 5.0);
            let bias = rand(c, 20 + i as u64, -1.0, 1.0);
            let zp = e.put(&z);
            let bp = with_bias.then(|| e.put(&bias));
            launchers::bias_act(e, zp, bp, len, c, hw, a).unwrap();
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

pub(super) fn check_act_map(e: &mut Emu, out: &mut Vec<Cmp>) {
    let n = 999;
    for a in ACTS {
        let x = rand(n, 3, -4.0, 4.0);
        let (yp, xp) = (e.put(&vec![f32::NAN; n]), e.put(&x));
        launchers::act_map(e, yp, xp, n, a).unwrap();
        let mut want = vec![0.0; n];
        act::act_map(&mut want, &x, a);
        let mut c = Cmp::ulp(Kernel::ActMap, a.name(), 0.0);
        c.ulps(&e.get(yp, n), &want);
        out.push(c);
    }
}

pub(super) fn check_r_act(e: &mut Emu, out: &mut Vec<Cmp>) {
    let n = 555;
    for a in ACTS {
        let rz = rand(n, 3, -2.0, 2.0);
        let av = activations(n, 5, a);
        let (rap, rzp, ap) = (e.put(&vec![f32::NAN; n]), e.put(&rz), e.put(&av));
        launchers::r_act(e, rap, rzp, ap, n, a).unwrap();
        let mut want = vec![0.0; n];
        act::r_act(&mut want, &rz, &av, a);
        let mut c = Cmp::ulp(Kernel::RAct, a.name(), 0.0);
        c.ulps(&e.get(rap, n), &want);
        out.push(c);
    }
}

pub(super) fn check_chan_sum(e: &mut Emu, out: &mut Vec<Cmp>) {
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
            launchers::chan_sum(e, op, mp, n, ch, hw, alpha, beta).unwrap();
            let mut want = o.clone();
            act::chan_sum(&mut want, &m, ch, hw, alpha, beta);
            c.ulps(&e.get(op, ch), &want);
        }
    }
    out.push(c);
}

pub(super) fn check_act_backward(e: &mut Emu, out: &mut Vec<Cmp>) {
    let n = 1000;
    for a in [Act::Relu, Act::Tanh, Act::Sigmoid] {
        let av = activations(n, 1, a);
        let d = rand(n, 2, -2.0, 2.0);
        let (dp, ap) = (e.put(&d), e.put(&av));
        launchers::act_backward(e, dp, ap, n, a).unwrap();
        let mut want = d.clone();
        act::act_backward(&mut want, &av, a);
        let mut c = Cmp::ulp(Kernel::ActBackward, a.name(), 0.0);
        c.ulps(&e.get(dp, n), &want);
        out.push(c);
    }
}

pub(super) fn check_r_act_backward(e: &mut Emu, out: &mut Vec<Cmp>) {
    let n = 777;
    for a in [Act::Relu, Act::Tanh, Act::Sigmoid] {
        let rd = rand(n, 6, -2.0, 2.0);
        let rz = rand(n, 7, -2.0, 2.0);
        let av = activations(n, 8, a);
        let dz = rand(n, 9, -2.0, 2.0);
        let (rdp, rzp, ap, dzp) = (e.put(&rd), e.put(&rz), e.put(&av), e.put(&dz));
        launchers::r_act_backward(e, rdp, rzp, ap, dzp, n, a).unwrap();
        let mut want = rd.clone();
        act::r_act_backward(&mut want, &rz, &av, &dz, a);
        let mut c = Cmp::ulp(Kernel::RActBackward, a.name(), 0.0);
        c.ulps(&e.get(rdp, n), &want);
        out.push(c);
    }
}

pub(super) fn check_col_sum(e: &mut Emu, out: &mut Vec<Cmp>) {
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
            launchers::col_sum(e, op, mp, rows, cols, alpha, beta).unwrap();
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

pub(super) fn check_loss_rows(e: &mut Emu, out: &mut Vec<Cmp>) {
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
        let scale = launchers::mean_scale(l, rows, k);
        launchers::loss(e, l, zp, yp, rows, k, Some(dp), rlp, scale, false, lp).unwrap();
        let row_loss = e.get(rlp, rows);
        // each row's term: the kernel's loss of that row alone (times 1/K
        // for MSE, the kernel's mean over one row)
        let one = launchers::mean_scale(l, 1, k);
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
        launchers::loss(e, l, zp, yp, rows, k, None, rlp2, scale, false, lp).unwrap();
        no_delta.ulps(&e.get(rlp2, rows), &row_loss);
        assert!(e.get(dp2, rows * k).iter().all(|v| v.is_nan()));
    }
    out.extend([terms, grads, mean, no_delta]);
}

pub(super) fn check_loss_hvp(e: &mut Emu, out: &mut Vec<Cmp>) {
    for (i, (l, rows, k)) in LOSS_CASES.into_iter().enumerate() {
        let y = labels(rows, k, 70 + i as u64);
        let z = logits(rows, k, &y, 80 + i as u64);
        let r = rand(rows * k, 90 + i as u64, -1.0, 1.0);
        let (zp, rp, hp) = (e.put(&z), e.put(&r), e.put(&vec![f32::NAN; rows * k]));
        launchers::loss_hvp(e, l, zp, rows, k, rp, hp).unwrap();
        let mut want = vec![0.0; rows * k];
        loss::loss_hvp(l, &z, k, &r, &mut want);
        let mut c = Cmp::ulp(Kernel::LossHvp, format!("{} {rows}x{k}", l.name()), 0.0);
        c.ulps(&e.get(hp, rows * k), &want);
        out.push(c);
    }
}

pub(super) fn check_count_correct(e: &mut Emu, out: &mut Vec<Cmp>) {
    let mut c = Cmp::ulp(Kernel::CountCorrect, "count (ties: first index)", 0.0);
    for (rows, k) in [(1, 3), (130, 4), (300, 10)] {
        // values on a coarse grid: many ties
        let z: Vec<f32> = rand(rows * k, 11, 0.0, 3.0)
            .into_iter()
            .map(f32::floor)
            .collect();
        let y = labels(rows, k, 12);
        let (zp, yp, cp) = (e.put(&z), e.put_u32(&y), e.put_u32(&[7]));
        launchers::count_correct(e, zp, yp, rows, k, cp).unwrap();
        let want = 7 + mlp::correct(&z, k, &y) as u32;
        c.exact(&e.get_u32(cp, 1), &[want]);
    }
    out.push(c);
}

pub(super) fn check_vecops(e: &mut Emu, out: &mut Vec<Cmp>) {
    let n = 1500;
    let x = rand(n, 13, -2.0, 2.0);
    let y = rand(n, 14, -2.0, 2.0);
    let a = -0.37f32;

    let (yp, xp) = (e.put(&y), e.put(&x));
    launchers::axpy(e, yp, a, xp, n).unwrap();
    let mut want = y.clone();
    vecops::axpy(&mut want, a, &x);
    let mut c = Cmp::ulp(Kernel::Axpy, "y + a x", 0.0);
    c.ulps(&e.get(yp, n), &want);
    out.push(c);

    let (wp, xp, yp) = (e.put(&vec![f32::NAN; n]), e.put(&x), e.put(&y));
    launchers::waxpy(e, wp, xp, a, yp, n).unwrap();
    let mut want = vec![0.0; n];
    vecops::waxpy(&mut want, &x, a, &y);
    let mut c = Cmp::ulp(Kernel::Waxpy, "x + a y", 0.0);
    c.ulps(&e.get(wp, n), &want);
    out.push(c);

    let xp = e.put(&x);
    launchers::scale(e, xp, a, n).unwrap();
    let mut want = x.clone();
    vecops::scale(&mut want, a);
    let mut c = Cmp::ulp(Kernel::Scale, "a x", 0.0);
    c.ulps(&e.get(xp, n), &want);
    out.push(c);
}

pub(super) fn check_dot(e: &mut Emu, out: &mut Vec<Cmp>) {
    let mut c = Cmp::sum(Kernel::DotPartial, "n = 0 .. 300000 (+ reduce_sum)");
    let partials = e.put(&vec![f32::NAN; DOT_BLOCKS as usize]);
    for (i, n) in [0usize, 1, 255, 1000, 70_000, 300_000]
        .into_iter()
        .enumerate()
    {
        let x = rand(n, 15 + i as u64, -1.0, 1.0);
        let y = rand(n, 25 + i as u64, -1.0, 1.0);
        let (xp, yp, op) = (e.put(&x), e.put(&y), e.put(&[f32::NAN]));
        launchers::dot(e, xp, yp, n, partials, op).unwrap();
        let want = vecops::dot(&x, &y);
        let terms: f64 = x.iter().zip(&y).map(|(a, b)| (a * b).abs() as f64).sum();
        // kernel: blocks of DOT_BLOCK products (8 lanes of DOT_BLOCK/8, a
        // tree of 8, the tail), then the pairwise tree over the blocks;
        // CUDA C: each thread's strided sum over the grid, block_sum's
        // tree, then reduce_sum over the blocks' partial sums
        let grid = Kernel::DotPartial.config(n as u64).map_or(0, |l| l.grid.0) as usize;
        let threads = grid * crate::grid::REDUCE_THREADS as usize;
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

pub(super) fn check_reduce_sum(e: &mut Emu, out: &mut Vec<Cmp>) {
    let mut c = Cmp::sum(Kernel::ReduceSum, "n = 0 .. 5000, scale, accumulate");
    for (i, n) in [0usize, 1, 100, 256, 1000, 5000].into_iter().enumerate() {
        let v = rand(n, 35 + i as u64, -1.0, 3.0);
        for acc in [false, true] {
            let (vp, op) = (e.put(&v), e.put(&[1.5]));
            let scale = 0.37f32;
            launchers::reduce_sum(e, vp, n as u32, scale, acc, op).unwrap();
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

pub(super) fn check_nonfinite(e: &mut Emu, out: &mut Vec<Cmp>) {
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
                launchers::nonfinite(e, xp, len, sp, fp).unwrap();
                let want = !vecops::all_finite(&x[..len]) || scalar.is_some_and(|s| !s.is_finite());
                c.exact(&e.get_u32(fp, 1), &[u32::from(want)]);
            }
        }
    }
    out.push(c);
}

pub(super) fn check_opt_update(e: &mut Emu, out: &mut Vec<Cmp>) {
    let n = 1200;
    let theta = rand(n, 46, -1.0, 1.0);
    let d = rand(n, 47, -1.0, 1.0);
    let v0 = rand(n, 48, -1.0, 1.0);
    let sq0 = rand(n, 49, 0.0, 0.5);
    let mut c = Cmp::ulp(Kernel::OptUpdate, "every optimizer, grid, skip flags", 0.0);
    let skips = [None, Some([0u32, 0]), Some([1, 0]), Some([0, 1])];
    // Every optimizer of Optimizer::NAMES over a grid of the hyper-parameters
    // (each takes its own), at its first and later steps; each (constants,
    // state vectors) once.
    let mut cases: Vec<(OptElem<f32>, usize)> = vec![];
    for name in Optimizer::<f32>::NAMES {
        for (momentum, nesterov) in [(0.0f32, false), (0.9, false), (0.9, true)] {
            for weight_decay in [0.0f32, 1e-4, 0.01] {
                for (beta1, beta2, eps) in
                    [(0.9f32, 0.999, 1e-8), (0.3, 0.9, 1e-6), (0.0, 0.5, 0.0)]
                {
                    let h = OptHyper {
                        momentum,
                        nesterov,
                        weight_decay,
                        beta1,
                        beta2,
                        eps,
                    };
                    let o = Optimizer::named(name, h).expect("a name of NAMES");
                    if o.validate().is_err() {
                        continue;
                    }
                    for steps in [0u64, 1, 7] {
                        let case = (o.rule_elem(0.05, steps), o.state_vectors());
                        if !cases.contains(&case) {
                            cases.push(case);
                        }
                    }
                }
            }
        }
    }
    for r in Rule::ALL {
        assert!(
            cases.iter().any(|(h, _)| h.rule == r),
            "no optimizer of Optimizer::NAMES applies rule {}",
            r.name()
        );
    }
    for (h, k) in cases {
        for skip in skips {
            let (tp, dp) = (e.put(&theta), e.put(&d));
            let p0 = (k >= 1).then(|| e.put(&v0));
            let p1 = (k >= 2).then(|| e.put(&sq0));
            let sp = skip.map(|s| e.put_u32(&s));
            launchers::opt_update(e, tp, dp, p0, p1, n, &h, sp).unwrap();
            let (mut wt, mut w0, mut w1) = (theta.clone(), v0.clone(), sq0.clone());
            if skip.is_none_or(|s| s == [0, 0]) {
                update_slices(
                    &mut wt,
                    &d,
                    (k >= 1).then_some(&mut w0[..]),
                    (k >= 2).then_some(&mut w1[..]),
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
pub(super) fn check_commit_step(e: &mut Emu, out: &mut Vec<Cmp>) {
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
        launchers::commit_step(e, fp, step).unwrap();
        c.exact(&e.get_u32(fp, 4), &after);
    }
    out.push(c);
}

/// No kernel function to mirror: the rows the host would copy.
pub(super) fn check_gather_rows(e: &mut Emu, out: &mut Vec<Cmp>) {
    let mut c = Cmp::ulp(Kernel::GatherRows, "rows and labels", 0.0);
    let (s, n0, rows) = (40, 7, 29);
    let x = rand(s * n0, 55, -1.0, 1.0);
    let y = labels(s, 10, 56);
    let idx = labels(rows, s, 57);
    let (xp, yp, ip) = (e.put(&x), e.put_u32(&y), e.put_u32(&idx));
    let (xb, yb) = (e.put(&vec![f32::NAN; rows * n0]), e.put_u32(&vec![0; rows]));
    launchers::gather_rows(e, xp, yp, ip, rows, n0, xb, yb).unwrap();
    let want_x: Vec<f32> = idx
        .iter()
        .flat_map(|&i| x[i as usize * n0..(i as usize + 1) * n0].to_vec())
        .collect();
    let want_y: Vec<u32> = idx.iter().map(|&i| y[i as usize]).collect();
    c.ulps(&e.get(xb, rows * n0), &want_x);
    c.exact(&e.get_u32(yb, rows), &want_y);
    out.push(c);
}

pub(super) fn check_axpby_add_copy(e: &mut Emu, out: &mut Vec<Cmp>) {
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
        launchers::axpby(e, yp, xp, n, alpha, beta).unwrap();
        let mut want = init.clone();
        vecops::axpby(&mut want, &x, alpha, beta);
        c.ulps(&e.get(yp, n), &want);
    }
    out.push(c);
    let (wp, ap, bp) = (e.put(&vec![f32::NAN; n]), e.put(&x), e.put(&y));
    launchers::add(e, wp, ap, bp, n).unwrap();
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
        launchers::copy_unless(e, dp, sp, n, fp).unwrap();
        let want = if skip.is_none_or(|f| f == [0, 0]) {
            &x
        } else {
            &y
        };
        c.ulps(&e.get(dp, n), want);
    }
    out.push(c);
}

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
