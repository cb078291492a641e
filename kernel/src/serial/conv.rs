//! 2-d convolution over NCHW slices, serial direct loops (no im2col
//! buffer, so no memory beyond the operands): the reference every other
//! executor is checked against, and what a microcontroller runs.

use crate::real::Real;
use crate::serial::vecops::scale_or_zero;

/// The geometry of one convolution on a batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct ConvGeom {
    /// Batch size N.
    pub n: usize,
    /// Input channels C.
    pub c: usize,
    /// Input height.
    pub h: usize,
    /// Input width.
    pub w: usize,
    /// Output channels K.
    pub k_out: usize,
    /// Kernel size (k × k).
    pub k: usize,
    /// Stride.
    pub stride: usize,
    /// Zero padding.
    pub pad: usize,
    /// Groups.
    pub groups: usize,
    /// Output height.
    pub oh: usize,
    /// Output width.
    pub ow: usize,
}

impl ConvGeom {
    /// Input channels per group.
    #[inline]
    pub const fn cg(&self) -> usize {
        self.c / self.groups
    }
    /// Output channels per group.
    #[inline]
    pub const fn kg(&self) -> usize {
        self.k_out / self.groups
    }
    /// Input values of the batch.
    pub const fn x_len(&self) -> usize {
        self.n * self.c * self.h * self.w
    }
    /// Output values of the batch.
    pub const fn y_len(&self) -> usize {
        self.n * self.k_out * self.oh * self.ow
    }
    /// Weights (without bias).
    pub const fn w_len(&self) -> usize {
        self.k_out * self.cg() * self.k * self.k
    }
    /// Input coordinate of output coordinate `o` and tap `t`, if inside.
    #[inline]
    fn at(&self, o: usize, t: usize, n: usize) -> Option<usize> {
        let p = o * self.stride + t;
        if p < self.pad || p - self.pad >= n {
            None
        } else {
            Some(p - self.pad)
        }
    }
}

/// y ← β·y + α·conv(x, w) (no bias). β = 0 overwrites y.
///
/// A 3×3 convolution of stride 1 and padding 1 with α = 1 and β ∈ {0, 1}
/// (what the layers ask for) runs on [`k3`]'s rows, every other one on
/// direct loops; both skip the taps that fall on the padding.
pub fn forward<F: Real>(g: &ConvGeom, x: &[F], w: &[F], y: &mut [F], alpha: F, beta: F) {
    if k3::applies(g) && alpha == F::ONE && (beta == F::ZERO || beta == F::ONE) {
        return k3::forward(g, x, w, y, beta == F::ONE);
    }
    let (cg, kg, k) = (g.cg(), g.kg(), g.k);
    let (ihw, ohw) = (g.h * g.w, g.oh * g.ow);
    for n in 0..g.n {
        for oc in 0..g.k_out {
            let grp = oc / kg;
            let wo = oc * cg * k * k;
            let yo = (n * g.k_out + oc) * ohw;
            for oy in 0..g.oh {
                for ox in 0..g.ow {
                    let mut s = F::ZERO;
                    for ic in 0..cg {
                        let xo = (n * g.c + grp * cg + ic) * ihw;
                        let wc = wo + ic * k * k;
                        for ky in 0..k {
                            let Some(iy) = g.at(oy, ky, g.h) else {
                                continue;
                            };
                            for kx in 0..k {
                                if let Some(ix) = g.at(ox, kx, g.w) {
                                    s += x[xo + iy * g.w + ix] * w[wc + ky * k + kx];
                                }
                            }
                        }
                    }
                    let yi = yo + oy * g.ow + ox;
                    y[yi] = if beta == F::ZERO {
                        alpha * s
                    } else {
                        beta * y[yi] + alpha * s
                    };
                }
            }
        }
    }
}

/// dx ← β·dx + α·convᵀ(dy, w): the gradient with respect to the input
/// (3×3, stride 1, padding 1, α = 1, β ∈ {0, 1}: [`k3`]'s rows, as a
/// correlation of dy with the flipped filter).
pub fn backward_data<F: Real>(g: &ConvGeom, dy: &[F], w: &[F], dx: &mut [F], alpha: F, beta: F) {
    if k3::applies(g) && alpha == F::ONE && (beta == F::ZERO || beta == F::ONE) {
        return k3::backward_data(g, dy, w, dx, beta == F::ONE);
    }
    let (cg, kg, k) = (g.cg(), g.kg(), g.k);
    let (ihw, ohw) = (g.h * g.w, g.oh * g.ow);
    scale_or_zero(&mut dx[..g.x_len()], beta);
    for n in 0..g.n {
        for oc in 0..g.k_out {
            let grp = oc / kg;
            let wo = oc * cg * k * k;
            let yo = (n * g.k_out + oc) * ohw;
            for oy in 0..g.oh {
                for ox in 0..g.ow {
                    let d = alpha * dy[yo + oy * g.ow + ox];
                    for ic in 0..cg {
                        let xo = (n * g.c + grp * cg + ic) * ihw;
                        let wc = wo + ic * k * k;
                        for ky in 0..k {
                            let Some(iy) = g.at(oy, ky, g.h) else {
                                continue;
                            };
                            for kx in 0..k {
                                if let Some(ix) = g.at(ox, kx, g.w) {
                                    dx[xo + iy * g.w + ix] += w[wc + ky * k + kx] * d;
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// dw ← β·dw + α·Σ_batch x ⋆ dy: the gradient with respect to the weights
/// (3×3, stride 1, padding 1: [`k3`]'s rows, the nine sums of a filter
/// kept in registers).
pub fn backward_filter<F: Real>(g: &ConvGeom, x: &[F], dy: &[F], dw: &mut [F], alpha: F, beta: F) {
    if k3::applies(g) {
        return k3::backward_filter(g, x, dy, dw, alpha, beta);
    }
    let (cg, kg, k) = (g.cg(), g.kg(), g.k);
    let (ihw, ohw) = (g.h * g.w, g.oh * g.ow);
    for oc in 0..g.k_out {
        let grp = oc / kg;
        for ic in 0..cg {
            for ky in 0..k {
                for kx in 0..k {
                    let mut s = F::ZERO;
                    for n in 0..g.n {
                        let xo = (n * g.c + grp * cg + ic) * ihw;
                        let yo = (n * g.k_out + oc) * ohw;
                        for oy in 0..g.oh {
                            let Some(iy) = g.at(oy, ky, g.h) else {
                                continue;
                            };
                            for ox in 0..g.ow {
                                if let Some(ix) = g.at(ox, kx, g.w) {
                                    s += x[xo + iy * g.w + ix] * dy[yo + oy * g.ow + ox];
                                }
                            }
                        }
                    }
                    let wi = ((oc * cg + ic) * k + ky) * k + kx;
                    dw[wi] = if beta == F::ZERO {
                        alpha * s
                    } else {
                        beta * dw[wi] + alpha * s
                    };
                }
            }
        }
    }
}

/// 3×3 convolutions of stride 1 and padding 1 ("same" convolutions, the
/// common case), row by row: each output row gathers the two or three
/// input rows its taps reach (so taps on the padding are never computed),
/// the nine weights of a filter plane stay in registers, and the inner
/// loops run over contiguous rows without per-tap bounds.
///
/// Order of the sums: the forward pass and the input gradient add, for
/// each input plane in turn, each output value's taps (rows top to
/// bottom, columns left to right) onto it; the weight gradient sums each
/// tap over the batch, the output rows and columns in order, then scales.
pub mod k3 {
    use super::ConvGeom;
    use crate::real::Real;

    /// Whether `g` is a 3×3 convolution of stride 1 and padding 1.
    #[inline]
    pub const fn applies(g: &ConvGeom) -> bool {
        g.k == 3 && g.stride == 1 && g.pad == 1 && g.oh == g.h && g.ow == g.w && g.w > 0
    }

    /// out\[o\] += Σ_r Σ_t w\[r\]\[t\]·x\[r\]\[o + t − 1\] over the taps inside the row.
    #[inline(always)]
    fn row<F: Real, const R: usize>(out: &mut [F], xs: [&[F]; R], ws: [[F; 3]; R]) {
        let n = out.len();
        let xs = xs.map(|x| &x[..n]);
        if n == 1 {
            let mut s = out[0];
            for r in 0..R {
                s += ws[r][1] * xs[r][0];
            }
            out[0] = s;
            return;
        }
        let mut s = out[0];
        for r in 0..R {
            s += ws[r][1] * xs[r][0];
            s += ws[r][2] * xs[r][1];
        }
        out[0] = s;
        for o in 1..n - 1 {
            let mut s = out[o];
            for r in 0..R {
                s += ws[r][0] * xs[r][o - 1];
                s += ws[r][1] * xs[r][o];
                s += ws[r][2] * xs[r][o + 1];
            }
            out[o] = s;
        }
        let mut s = out[n - 1];
        for r in 0..R {
            s += ws[r][0] * xs[r][n - 2];
            s += ws[r][1] * xs[r][n - 1];
        }
        out[n - 1] = s;
    }

    /// out (h×w) += the correlation of `inp` (h×w) with the 3×3 `wk`,
    /// padding 1.
    #[inline(always)]
    fn plane<F: Real>(out: &mut [F], inp: &[F], h: usize, w: usize, wk: &[F; 9]) {
        let ws = [
            [wk[0], wk[1], wk[2]],
            [wk[3], wk[4], wk[5]],
            [wk[6], wk[7], wk[8]],
        ];
        let mut rows = inp[..h * w].chunks_exact(w);
        let (mut prev, mut cur, mut next) = (None, rows.next(), rows.next());
        for orow in out[..h * w].chunks_exact_mut(w) {
            match (prev, cur, next) {
                (Some(p), Some(c), Some(n)) => row::<F, 3>(orow, [p, c, n], ws),
                (None, Some(c), Some(n)) => row::<F, 2>(orow, [c, n], [ws[1], ws[2]]),
                (Some(p), Some(c), None) => row::<F, 2>(orow, [p, c], [ws[0], ws[1]]),
                (None, Some(c), None) => row::<F, 1>(orow, [c], [ws[1]]),
                _ => {}
            }
            (prev, cur, next) = (cur, next, rows.next());
        }
    }

    fn filter<F: Real>(w: &[F], at: usize) -> [F; 9] {
        let mut f = [F::ZERO; 9];
        f.copy_from_slice(&w[at..at + 9]);
        f
    }

    /// y ← conv(x, w), or y ← y + conv(x, w) when `acc`.
    pub fn forward<F: Real>(g: &ConvGeom, x: &[F], w: &[F], y: &mut [F], acc: bool) {
        let (cg, kg, hw) = (g.cg(), g.kg(), g.h * g.w);
        for n in 0..g.n {
            for oc in 0..g.k_out {
                let grp = oc / kg;
                let yp = &mut y[(n * g.k_out + oc) * hw..][..hw];
                if !acc {
                    yp.fill(F::ZERO);
                }
                for ic in 0..cg {
                    let xp = &x[(n * g.c + grp * cg + ic) * hw..][..hw];
                    plane(yp, xp, g.h, g.w, &filter(w, (oc * cg + ic) * 9));
                }
            }
        }
    }

    /// dx ← convᵀ(dy, w), or dx ← dx + convᵀ(dy, w) when `acc`: the
    /// correlation of dy with the flipped filters.
    pub fn backward_data<F: Real>(g: &ConvGeom, dy: &[F], w: &[F], dx: &mut [F], acc: bool) {
        let (cg, kg, hw) = (g.cg(), g.kg(), g.h * g.w);
        for n in 0..g.n {
            for c in 0..g.c {
                let (grp, ic) = (c / cg, c % cg);
                let dxp = &mut dx[(n * g.c + c) * hw..][..hw];
                if !acc {
                    dxp.fill(F::ZERO);
                }
                for kk in 0..kg {
                    let oc = grp * kg + kk;
                    let dyp = &dy[(n * g.k_out + oc) * hw..][..hw];
                    let mut f = filter(w, (oc * cg + ic) * 9);
                    f.reverse();
                    plane(dxp, dyp, g.h, g.w, &f);
                }
            }
        }
    }

    /// a\[r\]\[t\] += Σ_o x\[r\]\[o + t − 1\]·d\[o\] over the taps inside the row.
    #[inline(always)]
    fn frow<F: Real, const R: usize>(d: &[F], xs: [&[F]; R], a: [&mut [F; 3]; R]) {
        let n = d.len();
        let xs = xs.map(|x| &x[..n]);
        if n == 1 {
            for r in 0..R {
                a[r][1] += xs[r][0] * d[0];
            }
            return;
        }
        for r in 0..R {
            a[r][1] += xs[r][0] * d[0];
            a[r][2] += xs[r][1] * d[0];
        }
        for o in 1..n - 1 {
            let dv = d[o];
            for r in 0..R {
                a[r][0] += xs[r][o - 1] * dv;
                a[r][1] += xs[r][o] * dv;
                a[r][2] += xs[r][o + 1] * dv;
            }
        }
        for r in 0..R {
            a[r][0] += xs[r][n - 2] * d[n - 1];
            a[r][1] += xs[r][n - 1] * d[n - 1];
        }
    }

    /// dw ← β·dw + α·Σ_batch x ⋆ dy.
    pub fn backward_filter<F: Real>(
        g: &ConvGeom,
        x: &[F],
        dy: &[F],
        dw: &mut [F],
        alpha: F,
        beta: F,
    ) {
        let (cg, kg, hw, w) = (g.cg(), g.kg(), g.h * g.w, g.w);
        for oc in 0..g.k_out {
            let grp = oc / kg;
            for ic in 0..cg {
                let [mut a0, mut a1, mut a2] = [[F::ZERO; 3]; 3];
                for n in 0..g.n {
                    let xp = &x[(n * g.c + grp * cg + ic) * hw..][..hw];
                    let dyp = &dy[(n * g.k_out + oc) * hw..][..hw];
                    let mut rows = xp.chunks_exact(w);
                    let (mut prev, mut cur, mut next) = (None, rows.next(), rows.next());
                    for drow in dyp.chunks_exact(w) {
                        match (prev, cur, next) {
                            (Some(p), Some(c), Some(n)) => {
                                frow::<F, 3>(drow, [p, c, n], [&mut a0, &mut a1, &mut a2])
                            }
                            (None, Some(c), Some(n)) => {
                                frow::<F, 2>(drow, [c, n], [&mut a1, &mut a2])
                            }
                            (Some(p), Some(c), None) => {
                                frow::<F, 2>(drow, [p, c], [&mut a0, &mut a1])
                            }
                            (None, Some(c), None) => frow::<F, 1>(drow, [c], [&mut a1]),
                            _ => {}
                        }
                        (prev, cur, next) = (cur, next, rows.next());
                    }
                }
                let out = &mut dw[(oc * cg + ic) * 9..][..9];
                let sums = [a0, a1, a2];
                for (o, s) in out.iter_mut().zip(sums.iter().flatten()) {
                    *o = if beta == F::ZERO {
                        alpha * *s
                    } else {
                        beta * *o + alpha * *s
                    };
                }
            }
        }
    }
}

/// The output coordinates `[lo, hi)` along an axis (of `out` outputs, over
/// an input of length `len`) whose tap `t` falls inside the input: the
/// outputs `o` with 0 ≤ o·stride + t − pad < len.
#[inline]
fn inside(out: usize, stride: usize, t: usize, pad: usize, len: usize) -> (usize, usize) {
    let lo = if t >= pad {
        0
    } else {
        (pad - t).div_ceil(stride)
    };
    let hi = if len + pad <= t {
        0
    } else {
        ((len - 1 + pad - t) / stride + 1).min(out)
    };
    (lo.min(hi), hi)
}

/// Copies sample `n`'s receptive fields into `col` (rows: (ic, ky, kx) of
/// group `grp`; columns: output positions), zero where the window leaves
/// the input. `col` holds (C/groups)·k²·OH·OW values.
pub fn im2col<F: Real>(g: &ConvGeom, x: &[F], n: usize, grp: usize, col: &mut [F]) {
    im2col_ld(g, x, n, grp, col, g.oh * g.ow)
}

/// [`im2col`] with rows `ld` ≥ OH·OW values apart (the values between rows
/// are left as they are): a leading dimension that is not a multiple of
/// the page size keeps a GEMM's reads down a column from aliasing in the
/// cache. `col` holds ((C/groups)·k² − 1)·ld + OH·OW values.
pub fn im2col_ld<F: Real>(g: &ConvGeom, x: &[F], n: usize, grp: usize, col: &mut [F], ld: usize) {
    let (cg, k, s) = (g.cg(), g.k, g.stride);
    let ihw = g.h * g.w;
    let ohw = g.oh * g.ow;
    assert!(ld >= ohw, "im2col: leading dimension below OH·OW");
    if s == 1 && g.oh == g.h && g.ow == g.w {
        return im2col_same(g, x, n, grp, col, ld);
    }
    for ic in 0..cg {
        let xo = (n * g.c + grp * cg + ic) * ihw;
        for ky in 0..k {
            for kx in 0..k {
                let row = ((ic * k + ky) * k + kx) * ld;
                // the columns whose tap kx is inside the input, and where
                // the first of them reads
                let (x0, x1) = inside(g.ow, s, kx, g.pad, g.w);
                let first = (x0 * s + kx).wrapping_sub(g.pad);
                for oy in 0..g.oh {
                    let r = &mut col[row + oy * g.ow..row + (oy + 1) * g.ow];
                    match g.at(oy, ky, g.h) {
                        None => r.fill(F::ZERO),
                        Some(iy) => {
                            let (head, rest) = r.split_at_mut(x0);
                            let (mid, tail) = rest.split_at_mut(x1 - x0);
                            head.fill(F::ZERO);
                            tail.fill(F::ZERO);
                            if mid.is_empty() {
                                continue;
                            }
                            let src = &x[xo + iy * g.w + first..];
                            if s == 1 {
                                mid.copy_from_slice(&src[..mid.len()]);
                            } else {
                                for (j, c) in mid.iter_mut().enumerate() {
                                    *c = src[j * s];
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// [`im2col_ld`] of a stride-1 convolution that keeps the plane size:
/// each tap's row is the input plane shifted by (ky − pad, kx − pad), one
/// contiguous copy per tap, with the window's outside zeroed.
fn im2col_same<F: Real>(g: &ConvGeom, x: &[F], n: usize, grp: usize, col: &mut [F], ld: usize) {
    let (cg, k, w) = (g.cg(), g.k, g.w);
    let hw = g.h * w;
    for ic in 0..cg {
        let plane = &x[(n * g.c + grp * cg + ic) * hw..][..hw];
        for ky in 0..k {
            let (y0, y1) = inside(g.oh, 1, ky, g.pad, g.h);
            for kx in 0..k {
                let row = &mut col[((ic * k + ky) * k + kx) * ld..][..hw];
                let (above, rest) = row.split_at_mut(y0 * w);
                let (block, below) = rest.split_at_mut((y1 - y0) * w);
                above.fill(F::ZERO);
                below.fill(F::ZERO);
                if block.is_empty() {
                    continue;
                }
                // block[j] reads plane[start + j] (start may be before the
                // plane or the end past it: those land in zeroed columns)
                let start = ((y0 + ky) * w + kx) as isize - (g.pad * w + g.pad) as isize;
                let lo = (-start).max(0) as usize;
                let hi = ((hw as isize - start) as usize).min(block.len());
                block[..lo].fill(F::ZERO);
                block[hi..].fill(F::ZERO);
                let s0 = (start + lo as isize) as usize;
                block[lo..hi].copy_from_slice(&plane[s0..s0 + hi - lo]);
                // the columns where tap kx leaves the input wrapped to the
                // neighbouring row: zero them (a few columns, so strided
                // stores rather than a fill call per row)
                let (c0, c1) = inside(g.ow, 1, kx, g.pad, w);
                for j in (0..c0).chain(c1..w) {
                    for v in block[j..].iter_mut().step_by(w) {
                        *v = F::ZERO;
                    }
                }
            }
        }
    }
}

/// Adds the columns of `col` (layout of [`im2col`]) back onto sample `n`'s
/// input gradient: the adjoint of [`im2col`].
pub fn col2im_add<F: Real>(g: &ConvGeom, col: &[F], n: usize, grp: usize, dx: &mut [F]) {
    let (cg, k, s) = (g.cg(), g.k, g.stride);
    let ihw = g.h * g.w;
    let ohw = g.oh * g.ow;
    for ic in 0..cg {
        let xo = (n * g.c + grp * cg + ic) * ihw;
        for ky in 0..k {
            for kx in 0..k {
                let row = ((ic * k + ky) * k + kx) * ohw;
                let (x0, x1) = inside(g.ow, s, kx, g.pad, g.w);
                if x0 == x1 {
                    continue;
                }
                let first = (x0 * s + kx).wrapping_sub(g.pad);
                for oy in 0..g.oh {
                    let Some(iy) = g.at(oy, ky, g.h) else {
                        continue;
                    };
                    let src = &col[row + oy * g.ow + x0..row + oy * g.ow + x1];
                    let dst = &mut dx[xo + iy * g.w + first..];
                    if s == 1 {
                        for (d, c) in dst[..src.len()].iter_mut().zip(src) {
                            *d += *c;
                        }
                    } else {
                        for (j, c) in src.iter().enumerate() {
                            dst[j * s] += *c;
                        }
                    }
                }
            }
        }
    }
}

/// The input gradient of a stride-1 convolution as a forward convolution:
/// convᵀ(dy, W) = conv(dy, W′) with W′ the flipped, channel-transposed
/// filter ([`flip_filter`]) and padding k − 1 − pad. The geometry of that
/// convolution (input dy: K channels of OH×OW; output: C channels of
/// H×W), or `None` when the convolution is strided or padded by k or more.
pub const fn transposed(g: &ConvGeom) -> Option<ConvGeom> {
    if g.stride != 1 || g.pad >= g.k {
        return None;
    }
    Some(ConvGeom {
        n: g.n,
        c: g.k_out,
        h: g.oh,
        w: g.ow,
        k_out: g.c,
        k: g.k,
        stride: 1,
        pad: g.k - 1 - g.pad,
        groups: g.groups,
        oh: g.h,
        ow: g.w,
    })
}

/// W′ of [`transposed`]: for input channel c of group grp and output
/// channel grp·K/G + kk, W′(c, kk, ty, tx) = W(grp·K/G + kk, c − grp·C/G,
/// k−1−ty, k−1−tx) (`wt` holds [`ConvGeom::w_len`] values).
pub fn flip_filter<F: Real>(g: &ConvGeom, w: &[F], wt: &mut [F]) {
    let (cg, kg, k) = (g.cg(), g.kg(), g.k);
    let kk2 = k * k;
    for grp in 0..g.groups {
        for kk in 0..kg {
            for ic in 0..cg {
                let src = &w[((grp * kg + kk) * cg + ic) * kk2..][..kk2];
                let dst = &mut wt[((grp * cg + ic) * kg + kk) * kk2..][..kk2];
                for (d, s) in dst.iter_mut().zip(src.iter().rev()) {
                    *d = *s;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec;
    use std::vec::Vec;

    fn geom(
        c: usize,
        k_out: usize,
        k: usize,
        stride: usize,
        pad: usize,
        groups: usize,
    ) -> ConvGeom {
        let (h, w) = (5, 4);
        ConvGeom {
            n: 2,
            c,
            h,
            w,
            k_out,
            k,
            stride,
            pad,
            groups,
            oh: (h + 2 * pad - k) / stride + 1,
            ow: (w + 2 * pad - k) / stride + 1,
        }
    }

    fn data(n: usize, seed: usize) -> Vec<f64> {
        (0..n)
            .map(|i| (((i * 7919 + seed * 104729) % 211) as f64 - 105.0) / 50.0)
            .collect()
    }

    /// ⟨conv(x, w), dy⟩ = ⟨x, convᵀ(dy, w)⟩ = ⟨w, x ⋆ dy⟩: the three
    /// loops are adjoint to each other, and im2col/col2im agree with them.
    #[test]
    fn adjoint_identities() {
        for g in [
            geom(3, 4, 3, 1, 1, 1),
            geom(4, 6, 3, 2, 1, 2),
            geom(4, 4, 3, 1, 0, 4),
            geom(2, 3, 1, 2, 0, 1),
            geom(2, 2, 5, 1, 2, 1),
        ] {
            let x = data(g.x_len(), 1);
            let w = data(g.w_len(), 2);
            let dy = data(g.y_len(), 3);
            let mut y = vec![0.0; g.y_len()];
            forward(&g, &x, &w, &mut y, 1.0, 0.0);
            let mut dx = vec![0.0; g.x_len()];
            backward_data(&g, &dy, &w, &mut dx, 1.0, 0.0);
            let mut dw = vec![0.0; g.w_len()];
            backward_filter(&g, &x, &dy, &mut dw, 1.0, 0.0);
            let ip = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(p, q)| p * q).sum::<f64>();
            let (a, b, c) = (ip(&y, &dy), ip(&x, &dx), ip(&w, &dw));
            assert!((a - b).abs() < 1e-9 * a.abs().max(1.0), "{g:?}: {a} {b}");
            assert!((a - c).abs() < 1e-9 * a.abs().max(1.0), "{g:?}: {a} {c}");
            // im2col reproduces the forward pass with a plain product.
            let ohw = g.oh * g.ow;
            let rows = g.cg() * g.k * g.k;
            let mut col = vec![0.0; rows * ohw];
            let mut dx2 = vec![0.0; g.x_len()];
            for n in 0..g.n {
                for grp in 0..g.groups {
                    im2col(&g, &x, n, grp, &mut col);
                    for oc in grp * g.kg()..(grp + 1) * g.kg() {
                        for p in 0..ohw {
                            let s: f64 =
                                (0..rows).map(|r| w[oc * rows + r] * col[r * ohw + p]).sum();
                            let yi = (n * g.k_out + oc) * ohw + p;
                            assert!((s - y[yi]).abs() < 1e-12);
                        }
                    }
                    // col2im of (wᵀ·dy) equals backward_data.
                    let mut cd = vec![0.0; rows * ohw];
                    for r in 0..rows {
                        for p in 0..ohw {
                            cd[r * ohw + p] = (grp * g.kg()..(grp + 1) * g.kg())
                                .map(|oc| w[oc * rows + r] * dy[(n * g.k_out + oc) * ohw + p])
                                .sum();
                        }
                    }
                    col2im_add(&g, &cd, n, grp, &mut dx2);
                }
            }
            for (p, q) in dx.iter().zip(&dx2) {
                assert!((p - q).abs() < 1e-12);
            }
        }
    }

    #[test]
    fn alpha_beta() {
        let g = geom(2, 2, 3, 1, 1, 1);
        let x = data(g.x_len(), 4);
        let w = data(g.w_len(), 5);
        let mut y1 = vec![0.0; g.y_len()];
        forward(&g, &x, &w, &mut y1, 1.0, 0.0);
        let mut y2 = data(g.y_len(), 6);
        let y0 = y2.clone();
        forward(&g, &x, &w, &mut y2, 0.5, 2.0);
        for i in 0..y1.len() {
            assert!((y2[i] - (2.0 * y0[i] + 0.5 * y1[i])).abs() < 1e-12);
        }
    }

    /// The 3×3 rows ([`k3`]) against the direct loops (α = 2 takes those;
    /// a power of two scales exactly) on planes of one row or column,
    /// groups and batches, for all three passes.
    #[test]
    fn k3_rows_match_direct_loops() {
        for (h, w, c, ko, groups, n) in [
            (5, 4, 3, 4, 1, 2),
            (1, 1, 2, 3, 1, 1),
            (1, 6, 2, 2, 1, 1),
            (6, 1, 2, 2, 2, 2),
            (2, 2, 4, 4, 4, 1),
            (8, 8, 1, 8, 1, 1),
        ] {
            let g = ConvGeom {
                n,
                c,
                h,
                w,
                k_out: ko,
                k: 3,
                stride: 1,
                pad: 1,
                groups,
                oh: h,
                ow: w,
            };
            assert!(k3::applies(&g));
            let x = data(g.x_len(), 1);
            let wt = data(g.w_len(), 2);
            let dy = data(g.y_len(), 3);
            let close = |a: &[f64], b: &[f64], what: &str| {
                for (i, (p, q)) in a.iter().zip(b).enumerate() {
                    assert!(
                        (p - q).abs() < 1e-12 * (1.0 + q.abs()),
                        "{what} {g:?} [{i}] {p} {q}"
                    );
                }
            };
            let (mut fast, mut slow) = (vec![0.0; g.y_len()], vec![0.0; g.y_len()]);
            forward(&g, &x, &wt, &mut fast, 1.0, 0.0);
            forward(&g, &x, &wt, &mut slow, 2.0, 0.0);
            slow.iter_mut().for_each(|v| *v *= 0.5);
            close(&fast, &slow, "forward");
            let (mut fast, mut slow) = (vec![0.0; g.x_len()], vec![0.0; g.x_len()]);
            backward_data(&g, &dy, &wt, &mut fast, 1.0, 0.0);
            backward_data(&g, &dy, &wt, &mut slow, 2.0, 0.0);
            slow.iter_mut().for_each(|v| *v *= 0.5);
            close(&fast, &slow, "data");
            // the weight gradient against im2col and a product
            let mut fast = data(g.w_len(), 4);
            let before = fast.clone();
            backward_filter(&g, &x, &dy, &mut fast, 0.5, 2.0);
            let mut want = vec![0.0; g.w_len()];
            let (cg, kg, ohw) = (g.cg(), g.kg(), h * w);
            let mut col = vec![0.0; cg * 9 * ohw];
            for s in 0..n {
                for grp in 0..groups {
                    im2col_ref(&g, &x, s, grp, &mut col);
                    for kk in 0..kg {
                        let oc = grp * kg + kk;
                        for r in 0..cg * 9 {
                            let mut acc = 0.0;
                            for p in 0..ohw {
                                acc += col[r * ohw + p] * dy[(s * ko + oc) * ohw + p];
                            }
                            want[oc * cg * 9 + r] += acc;
                        }
                    }
                }
            }
            for i in 0..want.len() {
                want[i] = 2.0 * before[i] + 0.5 * want[i];
            }
            close(&fast, &want, "filter");
        }
    }

    /// The direct loops of im2col / col2im, tap by tap.
    fn im2col_ref(g: &ConvGeom, x: &[f64], n: usize, grp: usize, col: &mut [f64]) {
        let (cg, k, ohw) = (g.cg(), g.k, g.oh * g.ow);
        for ic in 0..cg {
            let xo = (n * g.c + grp * cg + ic) * g.h * g.w;
            for t in 0..k * k {
                for oy in 0..g.oh {
                    for ox in 0..g.ow {
                        col[(ic * k * k + t) * ohw + oy * g.ow + ox] =
                            match (g.at(oy, t / k, g.h), g.at(ox, t % k, g.w)) {
                                (Some(iy), Some(ix)) => x[xo + iy * g.w + ix],
                                _ => 0.0,
                            };
                    }
                }
            }
        }
    }

    /// im2col and col2im agree with the tap-by-tap loops (bit for bit: the
    /// additions of col2im happen in the same order) on every mix of
    /// stride, padding (also ≥ k) and kernel size, including windows that
    /// miss the input.
    #[test]
    fn im2col_and_col2im_match_direct_loops() {
        for (h, w) in [(5, 4), (7, 9), (2, 3)] {
            for k in [1, 2, 3, 5] {
                for stride in [1, 2, 3] {
                    for pad in [0, 1, 2, 4] {
                        if h + 2 * pad < k || w + 2 * pad < k {
                            continue;
                        }
                        let g = ConvGeom {
                            n: 2,
                            c: 4,
                            h,
                            w,
                            k_out: 2,
                            k,
                            stride,
                            pad,
                            groups: 2,
                            oh: (h + 2 * pad - k) / stride + 1,
                            ow: (w + 2 * pad - k) / stride + 1,
                        };
                        let x = data(g.x_len(), 7);
                        let rows = g.cg() * k * k * g.oh * g.ow;
                        for n in 0..2 {
                            for grp in 0..2 {
                                let mut a = vec![1.0; rows];
                                let mut b = vec![2.0; rows];
                                im2col(&g, &x, n, grp, &mut a);
                                im2col_ref(&g, &x, n, grp, &mut b);
                                assert_eq!(a, b, "{g:?}");
                                // col2im: the adjoint, added in tap order
                                let col = data(rows, 8);
                                let mut d1 = data(g.x_len(), 9);
                                let mut d2 = d1.clone();
                                col2im_add(&g, &col, n, grp, &mut d1);
                                let ohw = g.oh * g.ow;
                                for ic in 0..g.cg() {
                                    let xo = (n * g.c + grp * g.cg() + ic) * h * w;
                                    for t in 0..k * k {
                                        for oy in 0..g.oh {
                                            for ox in 0..g.ow {
                                                let (Some(iy), Some(ix)) =
                                                    (g.at(oy, t / k, h), g.at(ox, t % k, w))
                                                else {
                                                    continue;
                                                };
                                                d2[xo + iy * w + ix] +=
                                                    col[(ic * k * k + t) * ohw + oy * g.ow + ox];
                                            }
                                        }
                                    }
                                }
                                assert_eq!(d1, d2, "{g:?}");
                            }
                        }
                    }
                }
            }
        }
    }

    /// convᵀ(dy, W) = conv(dy, W′) with the transposed geometry.
    #[test]
    fn backward_data_is_a_flipped_forward() {
        for g in [
            geom(3, 4, 3, 1, 1, 1),
            geom(4, 6, 3, 1, 0, 2),
            geom(4, 4, 3, 1, 2, 4),
            geom(2, 3, 1, 1, 0, 1),
            geom(2, 2, 5, 1, 2, 1),
            geom(2, 4, 5, 1, 1, 2),
        ] {
            let t = transposed(&g).unwrap();
            let w = data(g.w_len(), 2);
            let dy = data(g.y_len(), 3);
            let mut want = data(g.x_len(), 4);
            let mut got = want.clone();
            backward_data(&g, &dy, &w, &mut want, 0.5, 2.0);
            let mut wt = vec![0.0; g.w_len()];
            flip_filter(&g, &w, &mut wt);
            assert_eq!(t.w_len(), g.w_len());
            assert_eq!((t.x_len(), t.y_len()), (g.y_len(), g.x_len()));
            forward(&t, &dy, &wt, &mut got, 0.5, 2.0);
            for (p, q) in want.iter().zip(&got) {
                assert!((p - q).abs() < 1e-12, "{g:?}: {p} {q}");
            }
        }
        assert!(transposed(&geom(3, 4, 3, 2, 1, 1)).is_none());
        assert!(transposed(&geom(3, 4, 1, 1, 1, 1)).is_none());
    }
}
