//! Convolution on the `gemm` crate: forward, input gradient and filter
//! gradient, one sample (or a chunk of samples) per task.

use super::*;

/// The one-sample geometry of `g`.
fn one(g: &ConvGeom) -> ConvGeom {
    ConvGeom { n: 1, ..*g }
}

/// Whether the convolution reads its input as is (1×1, stride 1, no
/// padding): then the input plane block is the im2col matrix.
fn pointwise(g: &ConvGeom) -> bool {
    g.k == 1 && g.stride == 1 && g.pad == 0
}

/// Values of the pixel-major padded input of one group ([`pixel_major`]),
/// with (k − 1)·cg zeros after it for the shifted reads of [`shifted`].
fn xp_len(g: &ConvGeom) -> usize {
    ((g.h + 2 * g.pad) * (g.w + 2 * g.pad) + g.k - 1) * g.cg()
}

/// Whether a convolution runs on shifted rows of its pixel-major input
/// instead of materialized patches: stride 1, and the padded row width
/// Wp computes at most 1/8 more outputs than the OW that are kept.
///
/// Output pixel (oy, ox) of a stride-1 convolution reads, for tap row ky,
/// the k·cg contiguous values of `xp` from ((oy + ky)·Wp + ox)·cg on: as a
/// function of the "wide" pixel index q = oy·Wp + ox these are the rows of
/// a matrix whose rows are cg apart (overlapping) in `xp`. So the
/// convolution is k GEMMs (one per ky, depth k·cg) over oh·Wp wide pixels,
/// of which the last Wp − OW of each row are dropped.
fn shifted(g: &ConvGeom) -> bool {
    let wp = g.w + 2 * g.pad;
    g.stride == 1 && (wp - g.ow) * 8 <= g.ow
}

/// The f32 lanes of the widest vectors the GEMM runs on this CPU: 16
/// with AVX-512 (when built with the `avx512` feature, as by default), 8
/// with AVX (2), 4 otherwise.
fn f32_lanes() -> usize {
    static LANES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *LANES.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            if cfg!(feature = "avx512") && std::arch::is_x86_feature_detected!("avx512f") {
                return 16;
            }
            if std::arch::is_x86_feature_detected!("avx") {
                return 8;
            }
        }
        4
    })
}

/// How a convolution's forward and weight-gradient products are formed.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Path {
    /// 1×1, stride 1, no padding: the input planes are the product's
    /// operand as they are.
    Pointwise,
    /// Shifted rows of the pixel-major input ([`shifted`]).
    Shifted,
    /// Shifted runs of the zero-bordered channel planes
    /// ([`padded_planes`]), for the forward products of [`shifted`]
    /// convolutions whose output channels per group fit one vector
    /// register ([`f32_lanes`]): one GEMM per tap, the pixels in the vector
    /// lanes, the result already in channel planes (no transposes). The
    /// pixel-major product would put those few channels in the lanes and
    /// run the GEMM's narrowest microkernel. (Measured: 1.4× on 16
    /// channels with AVX-512; on AVX2 16 channels fill two registers and
    /// the pixel-major product is as fast.)
    Planes,
    /// Materialized pixel rows of the pixel-major input ([`patches`]).
    Patches,
    /// Channel-major im2col rows (`im2col_ld`): for windows of few values
    /// per tap row (k·cg < 16), where the runs [`patches`] copies would be
    /// too short, and 1×1 windows (a strided gather).
    Im2col,
}

fn path(g: &ConvGeom) -> Path {
    if pointwise(g) {
        Path::Pointwise
    } else if g.k == 1 || g.k * g.cg() < 16 {
        Path::Im2col
    } else if shifted(g) && g.kg() <= f32_lanes() {
        Path::Planes
    } else if shifted(g) {
        Path::Shifted
    } else {
        Path::Patches
    }
}

/// The row stride of an im2col buffer with `ohw` columns: `ohw`, padded
/// when a multiple of 256 values (1 KiB), so that the GEMMs' walks down a
/// column do not keep hitting the same cache sets.
fn col_ld(ohw: usize) -> usize {
    if ohw >= 256 && ohw % 256 == 0 {
        ohw + 16
    } else {
        ohw
    }
}

/// Group `grp` of one sample's input `xn` (C planes of H×W) pixel-major,
/// with a zero border of `pad`: xp\[(iy·Wp + ix)·cg + ic\] with Wp = W + 2·pad
/// (a transpose of the channel planes).
fn pixel_major<T: Scratch>(g: &ConvGeom, xn: &[T], grp: usize, xp: &mut [T]) {
    let (cg, p, w) = (g.cg(), g.pad, g.w);
    let wp = w + 2 * p;
    let hw = g.h * w;
    let xp = &mut xp[..xp_len(g)];
    let (top, rest) = xp.split_at_mut(p * wp * cg);
    // (bottom: the lower border and the slack of xp_len)
    let (mid, bottom) = rest.split_at_mut(g.h * wp * cg);
    top.fill(T::ZERO);
    bottom.fill(T::ZERO);
    let planes = &xn[grp * cg * hw..(grp + 1) * cg * hw];
    for (iy, row) in mid.chunks_exact_mut(wp * cg).enumerate() {
        row[..p * cg].fill(T::ZERO);
        row[(p + w) * cg..].fill(T::ZERO);
        // row iy of the cg planes (cg × W, planes hw apart) → W × cg
        T::transpose(
            &planes[iy * w..],
            hw,
            &mut row[p * cg..],
            cg,
            cg,
            w,
            T::ZERO,
        );
    }
}

/// The receptive fields of the pixel-major input `xp` as rows: row p
/// (output pixel) holds the window's values in (ky, kx, ic) order, k
/// contiguous runs of k·cg values.
fn patches<T: Real>(g: &ConvGeom, xp: &[T], colt: &mut [T]) {
    let (cg, k, s) = (g.cg(), g.k, g.stride);
    let wp = g.w + 2 * g.pad;
    let (kc, ckk) = (k * cg, k * k * cg);
    for (p, row) in colt[..g.oh * g.ow * ckk].chunks_exact_mut(ckk).enumerate() {
        let (oy, ox) = (p / g.ow, p % g.ow);
        for (ky, dst) in row.chunks_exact_mut(kc).enumerate() {
            let o = ((oy * s + ky) * wp + ox * s) * cg;
            dst.copy_from_slice(&xp[o..o + kc]);
        }
    }
}

/// The filter with each output channel's taps in the order of
/// [`patches`]: wp\[oc\]\[(ky·k + kx)·cg + ic\] = w\[oc\]\[ic\]\[ky\]\[kx\].
fn permute_filter<T: Real>(g: &ConvGeom, w: &[T], wp: &mut [T]) {
    let (cg, k2) = (g.cg(), g.k * g.k);
    for (src, dst) in w[..g.w_len()]
        .chunks_exact(cg * k2)
        .zip(wp.chunks_exact_mut(cg * k2))
    {
        for ic in 0..cg {
            for t in 0..k2 {
                dst[t * cg + ic] = src[ic * k2 + t];
            }
        }
    }
}

/// y ← β·y + α·conv(x, w), one sample per task. Each group's receptive
/// fields are pixel rows (shifted rows or materialized patches) times the
/// permuted filter, so that the GEMM's vector lanes run over output
/// channels; its pixel-major result is transposed into the output planes.
/// Narrow windows multiply the filter by channel-major im2col rows, and a
/// 1×1 stride-1 convolution the input planes as they are.
pub fn conv_forward<T: Scratch>(g: &ConvGeom, x: &[T], w: &[T], y: &mut [T], alpha: T, beta: T) {
    let (cg, kg) = (g.cg(), g.kg());
    let (hw, ohw, ckk) = (g.h * g.w, g.oh * g.ow, g.cg() * g.k * g.k);
    let pth = path(g);
    let g1 = one(g);
    let ld = col_ld(ohw);
    let mut wp = Buf::<T>::take(if pixel_rows(pth) { g.w_len() } else { 0 });
    if pth == Path::Planes {
        tap_major_filter(g, w, &mut wp);
    } else if pixel_rows(pth) {
        permute_filter(g, w, &mut wp);
    }
    let wp: &[T] = &wp;
    let wide = g.w + 2 * g.pad;
    let kc = g.k * cg;
    // scratch: pixel-major input, patches or im2col rows, GEMM output
    let rows = if matches!(pth, Path::Shifted | Path::Planes) {
        g.oh * wide
    } else {
        ohw
    };
    let (lx, lc, ly) = match pth {
        Path::Pointwise => (0, 0, 0),
        Path::Im2col => (0, ckk * ld, 0),
        Path::Shifted => (xp_len(g), 0, rows * kg),
        Path::Planes => (g.cg() * plane_len(g), 0, rows * kg),
        Path::Patches => (xp_len(g), ohw * ckk, ohw * kg),
    };
    y[..g.y_len()]
        .par_chunks_mut(g.k_out * ohw)
        .zip(x[..g.x_len()].par_chunks(g.c * hw))
        .for_each_init(
            || Buf::<T>::take(lx + lc + ly),
            |buf, (yn, xn)| {
                let (xp, rest) = buf.split_at_mut(lx);
                let (colt, yt) = rest.split_at_mut(lc);
                for grp in 0..g.groups {
                    let wg = &w[grp * kg * ckk..(grp + 1) * kg * ckk];
                    let wpg = &wp[(grp * kg * ckk).min(wp.len())..];
                    let yg = &mut yn[grp * kg * ohw..(grp + 1) * kg * ohw];
                    match pth {
                        Path::Pointwise => {
                            let xg = &xn[grp * cg * hw..(grp + 1) * cg * hw];
                            gemm1(false, false, kg, ohw, ckk, alpha, wg, xg, beta, yg);
                        }
                        Path::Im2col => {
                            im2col_ld(&g1, xn, 0, grp, colt, ld);
                            let (a, b) = ((wg, ckk, 1), (&colt[..], ld, 1));
                            gemm_s(kg, ohw, ckk, alpha, a, b, beta, yg, ohw);
                        }
                        Path::Planes => {
                            let (q, yw) = (&mut *xp, &mut *yt);
                            padded_planes(g, xn, grp, q);
                            let plane = plane_len(g);
                            let k2 = g.k * g.k;
                            for t in 0..k2 {
                                let off = (t / g.k) * wide + t % g.k;
                                let a = (&wpg[t * kg * cg..], cg, 1);
                                let b = (&q[off..], plane, 1);
                                let b0 = if t == 0 { T::ZERO } else { T::ONE };
                                gemm_s(kg, rows, cg, alpha, a, b, b0, yw, rows);
                            }
                            for (src, dst) in yw.chunks_exact(rows).zip(yg.chunks_exact_mut(ohw)) {
                                for (s, d) in src.chunks_exact(wide).zip(dst.chunks_exact_mut(g.ow))
                                {
                                    vecops::axpby(d, &s[..g.ow], T::ONE, beta);
                                }
                            }
                        }
                        Path::Shifted => {
                            pixel_major(g, xn, grp, xp);
                            for ky in 0..g.k {
                                let a = (&xp[ky * wide * cg..], cg, 1);
                                let b = (&wpg[ky * kc..], 1, ckk);
                                let b0 = if ky == 0 { T::ZERO } else { T::ONE };
                                gemm_s(rows, kg, kc, alpha, a, b, b0, yt, kg);
                            }
                            for oy in 0..g.oh {
                                let src = &yt[oy * wide * kg..];
                                T::transpose(src, kg, &mut yg[oy * g.ow..], ohw, g.ow, kg, beta);
                            }
                        }
                        Path::Patches => {
                            pixel_major(g, xn, grp, xp);
                            patches(g, xp, colt);
                            let (a, b) = ((&colt[..], ckk, 1), (wpg, 1, ckk));
                            gemm_s(ohw, kg, ckk, alpha, a, b, T::ZERO, yt, kg);
                            T::transpose(yt, kg, yg, ohw, ohw, kg, beta);
                        }
                    }
                }
            },
        );
}

/// Whether `p` permutes the filter: into [`tap_major_filter`]'s order for
/// a [`Path::Planes`] forward, into [`permute_filter`]'s tap order on the
/// pixel rows of the others (and of every weight gradient but the
/// channel-major ones: a Planes convolution's is formed as a Shifted one's).
fn pixel_rows(p: Path) -> bool {
    matches!(p, Path::Shifted | Path::Planes | Path::Patches)
}

/// dx ← β·dx + α·convᵀ(dy, w), one sample per task. A stride-1
/// convolution that keeps the plane size runs as the forward convolution
/// of dy with the flipped filter (no col2im); others multiply Wᵀ·dy and
/// add the columns back (col2im).
pub fn conv_backward_data<T: Scratch>(
    g: &ConvGeom,
    dy: &[T],
    w: &[T],
    dx: &mut [T],
    alpha: T,
    beta: T,
) {
    let (cg, kg) = (g.cg(), g.kg());
    let (hw, ohw, ckk) = (g.h * g.w, g.oh * g.ow, g.cg() * g.k * g.k);
    if !pointwise(g) && hw <= ohw {
        if let Some(t) = conv::transposed(g) {
            let mut wt = Buf::<T>::take(g.w_len());
            conv::flip_filter(g, w, &mut wt);
            return conv_forward(&t, dy, &wt, dx, alpha, beta);
        }
    }
    if path(g) == Path::Patches {
        return backward_data_rows(g, dy, w, dx, alpha, beta);
    }
    let g1 = one(g);
    let pw = pointwise(g);
    dx[..g.x_len()]
        .par_chunks_mut(g.c * hw)
        .zip(dy[..g.y_len()].par_chunks(g.k_out * ohw))
        .for_each_init(
            || Buf::<T>::take(if pw { 0 } else { ckk * ohw }),
            |col, (dxn, dyn_)| {
                if pw {
                    for grp in 0..g.groups {
                        let wg = &w[grp * kg * ckk..(grp + 1) * kg * ckk];
                        let dyg = &dyn_[grp * kg * ohw..(grp + 1) * kg * ohw];
                        let dxg = &mut dxn[grp * cg * hw..(grp + 1) * cg * hw];
                        gemm1(true, false, ckk, ohw, kg, alpha, wg, dyg, beta, dxg);
                    }
                    return;
                }
                vecops::scale_or_zero(dxn, beta);
                for grp in 0..g.groups {
                    let wg = &w[grp * kg * ckk..(grp + 1) * kg * ckk];
                    let dyg = &dyn_[grp * kg * ohw..(grp + 1) * kg * ohw];
                    gemm1(true, false, ckk, ohw, kg, alpha, wg, dyg, T::ZERO, col);
                    col2im_add(&g1, col, 0, grp, dxn);
                }
            },
        );
}

/// [`conv_backward_data`] on pixel rows, the adjoint of [`Path::Patches`]:
/// the pixel-major dy times the permuted filter gives each output pixel's
/// window gradient as a row, which is added back onto a padded pixel-major
/// input gradient ([`patches_add`]) and transposed into the planes.
fn backward_data_rows<T: Scratch>(
    g: &ConvGeom,
    dy: &[T],
    w: &[T],
    dx: &mut [T],
    alpha: T,
    beta: T,
) {
    let (cg, kg, p) = (g.cg(), g.kg(), g.pad);
    let (hw, ohw, ckk) = (g.h * g.w, g.oh * g.ow, g.cg() * g.k * g.k);
    let wide = g.w + 2 * p;
    let mut wp = Buf::<T>::take(g.w_len());
    permute_filter(g, w, &mut wp);
    let wp: &[T] = &wp;
    let (lx, lc, ly) = (xp_len(g), ohw * ckk, ohw * kg);
    dx[..g.x_len()]
        .par_chunks_mut(g.c * hw)
        .zip(dy[..g.y_len()].par_chunks(g.k_out * ohw))
        .for_each_init(
            || Buf::<T>::take(lx + lc + ly),
            |buf, (dxn, dyn_)| {
                let (dxp, rest) = buf.split_at_mut(lx);
                let (colt, dyt) = rest.split_at_mut(lc);
                for grp in 0..g.groups {
                    let dyg = &dyn_[grp * kg * ohw..(grp + 1) * kg * ohw];
                    T::transpose(dyg, ohw, dyt, kg, kg, ohw, T::ZERO);
                    let wpg = &wp[grp * kg * ckk..(grp + 1) * kg * ckk];
                    let (a, b) = ((&dyt[..], kg, 1), (wpg, ckk, 1));
                    gemm_s(ohw, ckk, kg, alpha, a, b, T::ZERO, colt, ckk);
                    dxp.fill(T::ZERO);
                    patches_add(g, colt, dxp);
                    let dxg = &mut dxn[grp * cg * hw..(grp + 1) * cg * hw];
                    for iy in 0..g.h {
                        let src = &dxp[((iy + p) * wide + p) * cg..];
                        T::transpose(src, cg, &mut dxg[iy * g.w..], hw, g.w, cg, beta);
                    }
                }
            },
        );
}

/// xp += the rows of `colt` put back where [`patches`] took them from
/// (its adjoint).
fn patches_add<T: Real>(g: &ConvGeom, colt: &[T], xp: &mut [T]) {
    let (cg, k, s) = (g.cg(), g.k, g.stride);
    let wp = g.w + 2 * g.pad;
    let (kc, ckk) = (k * cg, k * k * cg);
    for (p, row) in colt[..g.oh * g.ow * ckk].chunks_exact(ckk).enumerate() {
        let (oy, ox) = (p / g.ow, p % g.ow);
        for (ky, src) in row.chunks_exact(kc).enumerate() {
            let o = ((oy * s + ky) * wp + ox * s) * cg;
            for (d, v) in xp[o..o + kc].iter_mut().zip(src) {
                *d += *v;
            }
        }
    }
}

/// dw ← β·dw + α·Σ_batch (x ⋆ dy): the batch is split into one contiguous
/// chunk per thread, each summing its samples into its own partial (dy
/// times the pixel rows or im2col rows of [`conv_forward`]'s paths, in
/// their tap order); the partials are added in chunk order.
#[allow(clippy::too_many_arguments)]
pub fn conv_backward_filter<T: Scratch>(
    threads: usize,
    g: &ConvGeom,
    x: &[T],
    dy: &[T],
    dw: &mut [T],
    alpha: T,
    beta: T,
) {
    let (cg, kg) = (g.cg(), g.kg());
    let (hw, ohw, ckk) = (g.h * g.w, g.oh * g.ow, g.cg() * g.k * g.k);
    let wl = g.w_len();
    let chunks = threads.clamp(1, g.n.max(1));
    let per = g.n.div_ceil(chunks);
    let pth = path(g);
    let g1 = one(g);
    let ld = col_ld(ohw);
    let wide = g.w + 2 * g.pad;
    let (kc, rows) = (g.k * cg, g.oh * wide);
    // pixel-major input; im2col rows, patches, or dy on wide rows (zero
    // past OW)
    let (lx, lc) = match pth {
        Path::Pointwise => (0, 0),
        Path::Im2col => (0, ckk * ld),
        Path::Shifted | Path::Planes => (xp_len(g), kg * rows),
        Path::Patches => (xp_len(g), ohw * ckk),
    };
    let mut partials = Buf::<T>::take(chunks * wl);
    partials
        .par_chunks_mut(wl)
        .enumerate()
        .for_each(|(t, part)| {
            let mut buf = Buf::<T>::take(lx + lc);
            let (xp, colt) = buf.split_at_mut(lx);
            let (n0, n1) = (t * per, ((t + 1) * per).min(g.n));
            if n0 >= n1 {
                part.fill(T::ZERO);
                return;
            }
            for n in n0..n1 {
                let xn = &x[n * g.c * hw..(n + 1) * g.c * hw];
                let dyn_ = &dy[n * g.k_out * ohw..(n + 1) * g.k_out * ohw];
                let b = if n == n0 { T::ZERO } else { T::ONE };
                for grp in 0..g.groups {
                    let dyg = &dyn_[grp * kg * ohw..(grp + 1) * kg * ohw];
                    let pg = &mut part[grp * kg * ckk..(grp + 1) * kg * ckk];
                    match pth {
                        Path::Pointwise => {
                            let xg = &xn[grp * cg * hw..(grp + 1) * cg * hw];
                            gemm1(false, true, kg, ckk, ohw, T::ONE, dyg, xg, b, pg);
                        }
                        Path::Im2col => {
                            im2col_ld(&g1, xn, 0, grp, colt, ld);
                            let (a, c) = ((dyg, ohw, 1), (&colt[..], 1, ld));
                            gemm_s(kg, ckk, ohw, T::ONE, a, c, b, pg, ckk);
                        }
                        Path::Shifted | Path::Planes => {
                            pixel_major(g, xn, grp, xp);
                            let dyw = wide_rows(g, dyg, &mut colt[..kg * rows]);
                            for ky in 0..g.k {
                                let a = (dyw, rows, 1);
                                let c = (&xp[ky * wide * cg..], cg, 1);
                                gemm_s(kg, kc, rows, T::ONE, a, c, b, &mut pg[ky * kc..], ckk);
                            }
                        }
                        Path::Patches => {
                            pixel_major(g, xn, grp, xp);
                            patches(g, xp, colt);
                            let (a, c) = ((dyg, ohw, 1), (&colt[..], ckk, 1));
                            gemm_s(kg, ckk, ohw, T::ONE, a, c, b, pg, ckk);
                        }
                    }
                }
            }
        });
    let dw = &mut dw[..wl];
    vecops::scale_or_zero(dw, beta);
    let k2 = g.k * g.k;
    for part in partials.chunks(wl) {
        if !pixel_rows(pth) {
            vecops::axpy(dw, alpha, part);
            continue;
        }
        // the partials hold each output channel's taps in (ky, kx, ic) order
        for (d, p) in dw.chunks_exact_mut(cg * k2).zip(part.chunks_exact(cg * k2)) {
            for ic in 0..cg {
                for t in 0..k2 {
                    d[ic * k2 + t] += alpha * p[t * cg + ic];
                }
            }
        }
    }
}

/// The values of one channel's zero-bordered plane in [`padded_planes`]:
/// (H + 2·pad + 1) rows of Wp (one row of slack for the shifted reads).
fn plane_len(g: &ConvGeom) -> usize {
    (g.h + 2 * g.pad + 1) * (g.w + 2 * g.pad)
}

/// Group `grp` of one sample's input `xn` as zero-bordered planes:
/// q\[ic·P + (iy + pad)·Wp + ix + pad\] = x\[ic\]\[iy\]\[ix\], P = [`plane_len`].
fn padded_planes<T: Real>(g: &ConvGeom, xn: &[T], grp: usize, q: &mut [T]) {
    let (cg, p, w) = (g.cg(), g.pad, g.w);
    let wp = w + 2 * p;
    let hw = g.h * w;
    let plane = plane_len(g);
    let src = &xn[grp * cg * hw..(grp + 1) * cg * hw];
    for (dst, sp) in q[..cg * plane]
        .chunks_exact_mut(plane)
        .zip(src.chunks_exact(hw))
    {
        dst[..p * wp].fill(T::ZERO);
        for (row, sr) in dst[p * wp..(p + g.h) * wp]
            .chunks_exact_mut(wp)
            .zip(sp.chunks_exact(w))
        {
            row[..p].fill(T::ZERO);
            row[p..p + w].copy_from_slice(sr);
            row[p + w..].fill(T::ZERO);
        }
        dst[(p + g.h) * wp..].fill(T::ZERO);
    }
}

/// The filter tap-major per group: wt\[grp\]\[t\]\[oc\]\[ic\] = w\[oc\]\[ic\]\[t\].
fn tap_major_filter<T: Real>(g: &ConvGeom, w: &[T], wt: &mut [T]) {
    let (cg, kg, k2) = (g.cg(), g.kg(), g.k * g.k);
    let per = kg * cg * k2;
    for (src, dst) in w[..g.w_len()]
        .chunks_exact(per)
        .zip(wt.chunks_exact_mut(per))
    {
        for oc in 0..kg {
            for ic in 0..cg {
                for t in 0..k2 {
                    dst[(t * kg + oc) * cg + ic] = src[(oc * cg + ic) * k2 + t];
                }
            }
        }
    }
}

/// dy of one group (kg planes of OH×OW) on rows of Wp values, zero past
/// OW, in `dyw` (kg × OH·Wp): the layout of a shifted product's output.
fn wide_rows<'a, T: Real>(g: &ConvGeom, dyg: &[T], dyw: &'a mut [T]) -> &'a [T] {
    let wide = g.w + 2 * g.pad;
    for (dw, d) in dyw.chunks_exact_mut(wide).zip(dyg.chunks_exact(g.ow)) {
        dw[..g.ow].copy_from_slice(d);
        dw[g.ow..].fill(T::ZERO);
    }
    dyw
}

#[cfg(test)]
mod paths {
    use super::*;

    fn geom(c: usize, k_out: usize, h: usize, stride: usize, groups: usize) -> ConvGeom {
        let oh = (h + 2 - 3) / stride + 1;
        ConvGeom {
            n: 2,
            c,
            h,
            w: h,
            k_out,
            k: 3,
            stride,
            pad: 1,
            groups,
            oh,
            ow: oh,
        }
    }

    /// The geometries of `convolution_matches_serial_loops` take the paths
    /// they are there to check.
    #[test]
    fn geometries_take_the_paths_the_tests_check() {
        assert_eq!(path(&geom(8, 4, 16, 1, 1)), Path::Planes);
        assert_eq!(path(&geom(16, 8, 16, 1, 2)), Path::Planes);
        assert_eq!(path(&geom(16, 32, 16, 1, 1)), Path::Shifted);
        assert_eq!(path(&geom(12, 12, 9, 2, 2)), Path::Patches);
        assert_eq!(path(&geom(3, 16, 32, 1, 1)), Path::Im2col);
    }
}
