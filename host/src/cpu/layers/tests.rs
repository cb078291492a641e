use super::*;
use fdgr_kernel::serial::conv as sconv;
use fdgr_kernel::serial::pool::PoolKind;

fn data(n: usize, seed: usize) -> Vec<f64> {
    (0..n)
        .map(|i| (((i * 7919 + seed * 104729) % 211) as f64 - 105.0) / 50.0)
        .collect()
}

fn pool2() -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .unwrap()
}

fn close(what: &str, want: &[f64], got: &[f64], tol: f64) {
    assert_eq!(want.len(), got.len(), "{what}");
    let scale = want.iter().fold(1e-300f64, |s, v| s.max(v.abs()));
    let err = want
        .iter()
        .zip(got)
        .fold(0.0f64, |s, (a, b)| s.max((a - b).abs()));
    assert!(
        err <= tol * scale,
        "{what}: max diff {err:e} (scale {scale:e})"
    );
}

#[allow(clippy::too_many_arguments)]
fn conv(
    n: usize,
    c: usize,
    k_out: usize,
    hw: (usize, usize),
    k: usize,
    stride: usize,
    pad: usize,
    groups: usize,
) -> ConvGeom {
    ConvGeom {
        n,
        c,
        h: hw.0,
        w: hw.1,
        k_out,
        k,
        stride,
        pad,
        groups,
        oh: (hw.0 + 2 * pad - k) / stride + 1,
        ow: (hw.1 + 2 * pad - k) / stride + 1,
    }
}

/// Every convolution path (im2col with and without a padded leading
/// dimension, 1×1, strided, grouped, shifted pixel rows and channel
/// planes, the transposed-forward input gradient and the col2im one)
/// against the kernel's direct loops.
#[test]
fn convolution_matches_serial_loops() {
    let p = pool2();
    for g in [
        conv(3, 16, 16, (16, 16), 3, 1, 1, 1),
        conv(3, 3, 16, (32, 32), 3, 1, 1, 1),
        conv(2, 8, 12, (16, 16), 3, 2, 1, 1),
        conv(3, 6, 16, (14, 14), 5, 1, 0, 1),
        conv(2, 4, 6, (28, 28), 5, 1, 2, 1),
        conv(3, 4, 8, (16, 16), 1, 2, 0, 1),
        conv(2, 8, 8, (16, 16), 1, 1, 0, 2),
        conv(2, 8, 8, (16, 16), 3, 1, 1, 2),
        conv(2, 4, 4, (9, 7), 3, 1, 1, 4),
        conv(2, 4, 6, (7, 9), 3, 1, 2, 2),
        conv(2, 16, 16, (16, 16), 3, 1, 1, 2),
        conv(2, 12, 12, (9, 9), 3, 2, 1, 2),
        conv(2, 8, 4, (12, 12), 3, 1, 1, 1),
        conv(2, 16, 32, (16, 16), 3, 1, 1, 1),
        conv(2, 8, 24, (16, 20), 3, 1, 1, 1),
        conv(2, 8, 4, (16, 16), 3, 1, 1, 1),
        conv(2, 16, 8, (16, 16), 3, 1, 1, 2),
    ] {
        let x = data(g.x_len(), 1);
        let w = data(g.w_len(), 2);
        let dy = data(g.y_len(), 3);
        for (alpha, beta) in [(1.0, 0.0), (0.5, 2.0)] {
            let what = format!("{g:?} α={alpha} β={beta}");
            let mut want = data(g.y_len(), 4);
            let mut got = want.clone();
            sconv::forward(&g, &x, &w, &mut want, alpha, beta);
            p.install(|| conv_forward(&g, &x, &w, &mut got, alpha, beta));
            close(&format!("forward {what}"), &want, &got, 1e-12);
            let mut want = data(g.x_len(), 5);
            let mut got = want.clone();
            sconv::backward_data(&g, &dy, &w, &mut want, alpha, beta);
            p.install(|| conv_backward_data(&g, &dy, &w, &mut got, alpha, beta));
            close(&format!("data {what}"), &want, &got, 1e-12);
            let mut want = data(g.w_len(), 6);
            let mut got = want.clone();
            sconv::backward_filter(&g, &x, &dy, &mut want, alpha, beta);
            p.install(|| conv_backward_filter(2, &g, &x, &dy, &mut got, alpha, beta));
            close(&format!("filter {what}"), &want, &got, 1e-12);
        }
    }
}

/// Batch norm's blocked statistics and the parallel passes against
/// the kernel's serial loops, with and without R{x} and accumulation.
#[test]
fn batch_norm_matches_serial_loops() {
    let p = pool2();
    for (n, c, hw) in [(4, 3, 64), (3, 5, 49), (8, 4, 1)] {
        let g = BnGeom { n, c, hw };
        let (x, rx, dy, rdy) = (
            data(g.len(), 1),
            data(g.len(), 2),
            data(g.len(), 3),
            data(g.len(), 4),
        );
        let gb = data(2 * c, 5);
        let vgb = data(2 * c, 6);
        let run: Vec<f64> = data(2 * c, 7).iter().map(|v| v.abs() + 0.1).collect();
        for act in [Act::Identity, Act::Relu, Act::Tanh] {
            let (mut y1, mut y2) = (vec![0.0; g.len()], vec![0.0; g.len()]);
            let (mut s1, mut s2) = (vec![0.0; 2 * c], vec![0.0; 2 * c]);
            let (mut o1, mut o2) = (vec![0.0; 2 * c], vec![0.0; 2 * c]);
            let pend = |out| Pending {
                running: &run,
                out,
                momentum: 0.1,
            };
            norm::forward_train(
                &g,
                &x,
                &mut y1,
                &gb,
                &mut s1,
                1e-5,
                act,
                Some(pend(&mut o1)),
            );
            p.install(|| {
                bn_forward_train(
                    &g,
                    &x,
                    &mut y2,
                    &gb,
                    &mut s2,
                    1e-5,
                    act,
                    Some(pend(&mut o2)),
                )
            });
            close("bn forward", &y1, &y2, 1e-12);
            close("bn stats", &s1, &s2, 1e-12);
            close("bn running", &o1, &o2, 1e-12);
            norm::forward_eval(&g, &x, &mut y1, &gb, &run, 1e-5, act);
            p.install(|| bn_forward_eval(&g, &x, &mut y2, &gb, &run, 1e-5, act));
            close("bn eval", &y1, &y2, 1e-12);
        }
        let stats = {
            let mut s = vec![0.0; 2 * c];
            let mut y = vec![0.0; g.len()];
            norm::forward_train(&g, &x, &mut y, &gb, &mut s, 1e-5, Act::Identity, None);
            s
        };
        for acc in [false, true] {
            let (mut d1, mut d2) = (data(g.len(), 8), data(g.len(), 8));
            let (mut p1, mut p2) = (data(2 * c, 9), data(2 * c, 9));
            fn dx(dx: &mut [f64], acc: bool) -> Option<Dx<'_, f64>> {
                Some(Dx { dx, acc })
            }
            fn dp(out: &mut [f64]) -> Option<Dp<'_, f64>> {
                Some(Dp {
                    out,
                    alpha: 0.5,
                    beta: 2.0,
                })
            }
            norm::backward(&g, &x, &dy, &gb, &stats, dx(&mut d1, acc), dp(&mut p1));
            p.install(|| bn_backward(&g, &x, &dy, &gb, &stats, dx(&mut d2, acc), dp(&mut p2)));
            close("bn backward dx", &d1, &d2, 1e-12);
            close("bn backward dp", &p1, &p2, 1e-12);
            for rxo in [Some(&rx[..]), None] {
                let (mut r1, mut r2) = (vec![0.0; g.len()], vec![0.0; g.len()]);
                let (mut rs1, mut rs2) = (vec![0.0; 2 * c], vec![0.0; 2 * c]);
                norm::r_forward(&g, &x, rxo, &gb, &vgb, &stats, &mut r1, &mut rs1);
                p.install(|| bn_r_forward(&g, &x, rxo, &gb, &vgb, &stats, &mut r2, &mut rs2));
                close("bn r-forward", &r1, &r2, 1e-12);
                close("bn r-forward stats", &rs1, &rs2, 1e-12);
                let a = RBack {
                    x: &x,
                    rx: rxo,
                    dy: &dy,
                    rdy: &rdy,
                    gb: &gb,
                    vgb: &vgb,
                    stats: &stats,
                    rstats: &rs1,
                };
                let (mut q1, mut q2) = (data(g.len(), 10), data(g.len(), 10));
                let (mut u1, mut u2) = (vec![0.0; 2 * c], vec![0.0; 2 * c]);
                norm::r_backward(&g, &a, dx(&mut q1, acc), &mut u1);
                p.install(|| bn_r_backward(&g, &a, dx(&mut q2, acc), &mut u2));
                close("bn r-backward", &q1, &q2, 1e-12);
                close("bn r-backward sums", &u1, &u2, 1e-12);
            }
        }
    }
}

/// Pooling (max and average, with and without padding, windows equal
/// to and overlapping the stride) against the kernel's serial loops.
#[test]
fn pooling_matches_serial_loops() {
    let p = pool2();
    for kind in [PoolKind::Max, PoolKind::Avg] {
        for (h, w, k, stride, pad) in [
            (28, 28, 2, 2, 0),
            (10, 10, 2, 2, 0),
            (9, 7, 2, 2, 0),
            (8, 8, 3, 2, 1),
            (7, 9, 3, 1, 1),
            (6, 6, 6, 1, 0),
            (8, 8, 8, 1, 0),
            (9, 11, 3, 3, 0),
            (7, 7, 2, 3, 0),
        ] {
            let g = PoolGeom {
                kind,
                n: 3,
                c: 4,
                h,
                w,
                kh: k,
                kw: k,
                stride,
                pad,
                oh: (h + 2 * pad - k) / stride + 1,
                ow: (w + 2 * pad - k) / stride + 1,
            };
            // ties (repeated values) exercise the first-maximum rule
            let x: Vec<f64> = data(g.x_len(), 1)
                .iter()
                .map(|v| (v * 2.0).round())
                .collect();
            let rx = data(g.x_len(), 2);
            let dy = data(g.y_len(), 3);
            let what = format!("{g:?}");
            let (mut y1, mut y2) = (vec![0.0; g.y_len()], vec![0.0; g.y_len()]);
            pool::forward(&g, &x, &mut y1);
            p.install(|| pool_forward(&g, &x, &mut y2));
            assert_eq!(y1, y2, "forward {what}");
            pool::r_forward(&g, &x, &rx, &mut y1);
            p.install(|| pool_r_forward(&g, &x, &rx, &mut y2));
            assert_eq!(y1, y2, "r-forward {what}");
            for acc in [false, true] {
                let (mut d1, mut d2) = (data(g.x_len(), 4), data(g.x_len(), 4));
                pool::backward(&g, &x, &dy, &mut d1, acc);
                p.install(|| pool_backward(&g, &x, &dy, &mut d2, acc));
                assert_eq!(d1, d2, "backward {what} acc={acc}");
            }
        }
    }
}

/// The SSE transpose of f32 equals the element loop (bit for bit),
/// edges, both tile orders and β included.
#[test]
fn transpose_matches_scalar() {
    let shapes = [
        (4, 4),
        (7, 9),
        (16, 33),
        (3, 2),
        (1, 5),
        (12, 1),
        (8, 8),
        (16, 64),
        (24, 17),
        (9, 40),
        (40, 9),
        (64, 8),
        (21, 30),
    ];
    for (rows, cols) in shapes {
        let (ls, ld) = (cols + 3, rows + 5);
        let src: Vec<f32> = data(rows * ls, 1).iter().map(|v| *v as f32).collect();
        for beta in [0.0f32, 0.5] {
            let mut a: Vec<f32> = data(cols * ld, 2).iter().map(|v| *v as f32).collect();
            let mut b = a.clone();
            <f32 as Scratch>::transpose(&src, ls, &mut a, ld, rows, cols, beta);
            transpose_scalar(&src, ls, &mut b, ld, rows, cols, beta);
            assert_eq!(a, b, "{rows}×{cols} β={beta}");
            for r in 0..rows {
                for c in 0..cols {
                    if beta == 0.0 {
                        assert_eq!(a[c * ld + r], src[r * ls + c]);
                    }
                }
            }
        }
    }
}

/// The f32 batch-norm sums in vector registers are the kernel's blocked
/// sums bit for bit (planes of whole lane blocks, and the fallback for
/// the others), offsets included.
#[test]
fn f32_batch_norm_sums_are_the_kernels_bit_for_bit() {
    for (n, c, hw) in [
        (3, 2, 16),
        (5, 3, 64),
        (2, 2, 1024),
        (4, 2, 48),
        (3, 2, 20),
        (6, 2, 1),
    ] {
        let g = BnGeom { n, c, hw };
        for offset in [0.0, 300.0] {
            let x: Vec<f32> = data(g.len(), 1)
                .iter()
                .map(|v| (v + offset) as f32)
                .collect();
            let dy: Vec<f32> = data(g.len(), 2).iter().map(|v| *v as f32).collect();
            for ch in 0..c {
                let want = norm::channel_stats_blocked(&g, &x, ch, 1e-5f32);
                let got = <f32 as Scratch>::bn_stats(&g, &x, ch, 1e-5);
                assert_eq!(
                    [want.0, want.1, want.2].map(f32::to_bits),
                    [got.0, got.1, got.2].map(f32::to_bits),
                    "stats {g:?} offset {offset} channel {ch}"
                );
                let (mu, is) = (want.0, want.1);
                let want = norm::backward_sums_blocked(&g, &x, &dy, ch, mu, is);
                let got = <f32 as Scratch>::bn_backward_sums(&g, &x, &dy, ch, mu, is);
                assert_eq!(
                    [want.0, want.1].map(f32::to_bits),
                    [got.0, got.1].map(f32::to_bits),
                    "backward sums {g:?} offset {offset} channel {ch}"
                );
            }
        }
    }
}
