//! 2-d convolution over NCHW slices, serial direct loops (no im2col
//! buffer, so no memory beyond the operands): the reference every other
//! executor is checked against, and what a microcontroller runs.

use crate::real::Real;
use crate::vecops::scale_or_zero;

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
pub fn forward<F: Real>(g: &ConvGeom, x: &[F], w: &[F], y: &mut [F], alpha: F, beta: F) {
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

/// dx ← β·dx + α·convᵀ(dy, w): the gradient with respect to the input.
pub fn backward_data<F: Real>(g: &ConvGeom, dy: &[F], w: &[F], dx: &mut [F], alpha: F, beta: F) {
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

/// dw ← β·dw + α·Σ_batch x ⋆ dy: the gradient with respect to the weights.
pub fn backward_filter<F: Real>(g: &ConvGeom, x: &[F], dy: &[F], dw: &mut [F], alpha: F, beta: F) {
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

/// Copies sample `n`'s receptive fields into `col` (rows: (ic, ky, kx) of
/// group `grp`; columns: output positions), zero where the window leaves
/// the input. `col` holds (C/groups)·k²·OH·OW values.
pub fn im2col<F: Real>(g: &ConvGeom, x: &[F], n: usize, grp: usize, col: &mut [F]) {
    let (cg, k) = (g.cg(), g.k);
    let ihw = g.h * g.w;
    let ohw = g.oh * g.ow;
    for ic in 0..cg {
        let xo = (n * g.c + grp * cg + ic) * ihw;
        for ky in 0..k {
            for kx in 0..k {
                let row = ((ic * k + ky) * k + kx) * ohw;
                for oy in 0..g.oh {
                    let r = &mut col[row + oy * g.ow..row + (oy + 1) * g.ow];
                    match g.at(oy, ky, g.h) {
                        None => r.fill(F::ZERO),
                        Some(iy) => {
                            for (ox, c) in r.iter_mut().enumerate() {
                                *c = match g.at(ox, kx, g.w) {
                                    Some(ix) => x[xo + iy * g.w + ix],
                                    None => F::ZERO,
                                };
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Adds the columns of `col` (layout of [`im2col`]) back onto sample `n`'s
/// input gradient: the adjoint of [`im2col`].
pub fn col2im_add<F: Real>(g: &ConvGeom, col: &[F], n: usize, grp: usize, dx: &mut [F]) {
    let (cg, k) = (g.cg(), g.k);
    let ihw = g.h * g.w;
    let ohw = g.oh * g.ow;
    for ic in 0..cg {
        let xo = (n * g.c + grp * cg + ic) * ihw;
        for ky in 0..k {
            for kx in 0..k {
                let row = ((ic * k + ky) * k + kx) * ohw;
                for oy in 0..g.oh {
                    let Some(iy) = g.at(oy, ky, g.h) else {
                        continue;
                    };
                    for ox in 0..g.ow {
                        if let Some(ix) = g.at(ox, kx, g.w) {
                            dx[xo + iy * g.w + ix] += col[row + oy * g.ow + ox];
                        }
                    }
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
}
