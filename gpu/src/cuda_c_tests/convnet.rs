//! The kernels of convolution nets: im2col and col2im and their layouts,
//! the convolution GEMM, batch norm, pooling and the augmentation crop.

use super::*;

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

pub(super) fn check_im2col(e: &mut Emu, out: &mut Vec<Cmp>) {
    let mut c = Cmp::ulp(Kernel::Im2col, "6 geometries, chunks, groups", 0.0);
    for (i, g) in conv_geoms().into_iter().enumerate() {
        let x = rand(g.x_len(), 80 + i as u64, -1.0, 1.0);
        let xp = e.put(&x);
        let rows = g.cg() * g.k * g.k;
        let ohw = g.oh * g.ow;
        for (n0, nc) in [(0, g.n), (1, g.n - 1)] {
            for grp in 0..g.groups {
                let cp = e.put(&vec![f32::NAN; rows * nc * ohw]);
                launchers::im2col(e, &g, xp, cp, n0, nc, grp).unwrap();
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

pub(super) fn check_col2im(e: &mut Emu, out: &mut Vec<Cmp>) {
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
                launchers::col2im(e, &g, colp, dxp, n0, nc, grp, beta).unwrap();
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
pub(super) fn check_layouts(e: &mut Emu, out: &mut Vec<Cmp>) {
    let (n, kk, np) = (5, 4, 7);
    let src = rand(n * kk * np, 97, -1.0, 1.0);
    let (n0, nc) = (1, 3);
    let sp = e.put(&src);
    let dp = e.put(&vec![f32::NAN; kk * nc * np]);
    launchers::to_cnp(e, sp, dp, n0, nc, kk, np).unwrap();
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
        launchers::from_cnp(e, tp, yp, n0, nc, kk, np, beta).unwrap();
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
pub(super) fn check_conv_gemm(e: &mut Emu, out: &mut Vec<Cmp>) {
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

pub(super) fn check_bn_stats(e: &mut Emu, out: &mut Vec<Cmp>) {
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
        launchers::bn_stats(e, &g, xp, eps, sp, Some(rp), Some(pp), momentum).unwrap();
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
        launchers::bn_stats(e, &g, xp, eps, sp2, None, None, momentum).unwrap();
        let mut c = Cmp::ulp(Kernel::BnStats, "same stats without pending", 0.0);
        c.ulps(&e.get(sp2, 2 * g.c), &stats);
        out.push(c);
    }
    out.extend([mean, inv, pend]);
}

pub(super) fn check_bn_apply(e: &mut Emu, out: &mut Vec<Cmp>) {
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
                launchers::bn_apply(e, &g, xp, yp, gp, sp, eval, eps, a).unwrap();
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

pub(super) fn check_bn_backward(e: &mut Emu, out: &mut Vec<Cmp>) {
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
            launchers::bn_bwd_sums(e, &g, xp, dyp, sp, sm, Some((pp, alpha, beta))).unwrap();
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
                launchers::bn_bwd_dx(e, &g, xp, dyp, dxp, gp, sp, sm, acc).unwrap();
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

pub(super) fn check_bn_r_forward(e: &mut Emu, out: &mut Vec<Cmp>) {
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
            launchers::bn_rfwd_sums(e, &g, xp, rxo, sp, rs).unwrap();
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
            launchers::bn_rfwd_apply(e, &g, xp, rxo, ryp, gp, vp, sp, rs).unwrap();
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

pub(super) fn check_bn_r_backward(e: &mut Emu, out: &mut Vec<Cmp>) {
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
        let b = launchers::BnRBack {
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
            let b = launchers::BnRBack {
                rx: if with_rx { b.rx } else { None },
                ..b
            };
            let s5 = e.put(&vec![f32::NAN; 5 * c]);
            let rs = e.put(&vec![f32::NAN; 2 * c]);
            launchers::bn_rbwd_sums(e, &g, &b, s5, rs).unwrap();
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
                launchers::bn_rbwd_dx(e, &g, &b, dp, s5, acc).unwrap();
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

pub(super) fn check_pool(e: &mut Emu, out: &mut Vec<Cmp>) {
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
        launchers::pool_fwd(e, &g, xp, yp).unwrap();
        let mut want = vec![0.0; g.y_len()];
        pool::forward(&g, &x, &mut want);
        f.ulps(&e.get(yp, g.y_len()), &want);
        let ryp = e.put(&vec![f32::NAN; g.y_len()]);
        launchers::pool_r(e, &g, xp, rxp, ryp).unwrap();
        pool::r_forward(&g, &x, &rx, &mut want);
        r.ulps(&e.get(ryp, g.y_len()), &want);
        for acc in [false, true] {
            let d0 = if acc {
                rand(g.x_len(), 193, -1.0, 1.0)
            } else {
                vec![f32::NAN; g.x_len()]
            };
            let dxp = e.put(&d0);
            launchers::pool_bwd(e, &g, xp, dyp, dxp, acc).unwrap();
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
pub(super) fn check_gather_crop(e: &mut Emu, out: &mut Vec<Cmp>) {
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
    launchers::gather_crop(e, xp, yp, ip, cp, rows, dims, pad, Some(fp), xb, yb).unwrap();
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
