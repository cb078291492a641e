//! Max and average pooling over NCHW slices, serial loops. Max pooling
//! keeps no index buffer: the backward and R-passes find each window's
//! arg-max again in the input (the first maximum, as PyTorch's CPU
//! kernel). Average pooling divides by the whole window, padding included
//! (PyTorch's `count_include_pad=True`).

use crate::real::Real;

/// Max or average.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum PoolKind {
    /// The window's maximum.
    Max,
    /// The window's mean.
    Avg,
}

/// The geometry of one pooling layer on a batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct PoolGeom {
    /// Max or average.
    pub kind: PoolKind,
    /// Batch size N.
    pub n: usize,
    /// Channels.
    pub c: usize,
    /// Input height.
    pub h: usize,
    /// Input width.
    pub w: usize,
    /// Window height.
    pub kh: usize,
    /// Window width.
    pub kw: usize,
    /// Stride (both directions).
    pub stride: usize,
    /// Padding (both directions).
    pub pad: usize,
    /// Output height.
    pub oh: usize,
    /// Output width.
    pub ow: usize,
}

impl PoolGeom {
    /// Input values of the batch.
    pub const fn x_len(&self) -> usize {
        self.n * self.c * self.h * self.w
    }
    /// Output values of the batch.
    pub const fn y_len(&self) -> usize {
        self.n * self.c * self.oh * self.ow
    }
    /// The input rows or columns [lo, hi) of output coordinate `o` along
    /// an axis of length `len` with window `k`.
    #[inline]
    fn span(&self, o: usize, k: usize, len: usize) -> (usize, usize) {
        let start = o * self.stride;
        let lo = start.saturating_sub(self.pad);
        let hi = (start + k).saturating_sub(self.pad).min(len);
        (lo, hi)
    }
}

/// Index (in the plane `x`) of the first maximum of output (oy, ox)'s window.
#[inline]
fn argmax<F: Real>(g: &PoolGeom, x: &[F], oy: usize, ox: usize) -> usize {
    let (y0, y1) = g.span(oy, g.kh, g.h);
    let (x0, x1) = g.span(ox, g.kw, g.w);
    let mut best = y0 * g.w + x0;
    for iy in y0..y1 {
        for ix in x0..x1 {
            let i = iy * g.w + ix;
            if x[i] > x[best] {
                best = i;
            }
        }
    }
    best
}

/// Whether `g` is a 2×2 max pooling of stride 2 without padding (the
/// common one): then the planes run on [`max2`]'s row pairs, with the
/// same comparisons in the same order as the general loops.
#[inline]
fn is_max2(g: &PoolGeom) -> bool {
    g.kind == PoolKind::Max
        && g.kh == 2
        && g.kw == 2
        && g.stride == 2
        && g.pad == 0
        && g.oh == g.h / 2
        && g.ow == g.w / 2
}

/// 2×2 max pooling of stride 2 over row pairs: each window's first
/// maximum (top left, top right, bottom left, bottom right, strict `>`),
/// as [`argmax`] finds it.
mod max2 {
    use crate::real::Real;

    /// The window's maximum and which of its four values it is.
    #[inline(always)]
    fn pick<F: Real>(a: F, b: F, c: F, d: F) -> (F, usize) {
        let (mut m, mut k) = (a, 0);
        if b > m {
            (m, k) = (b, 1);
        }
        if c > m {
            (m, k) = (c, 2);
        }
        if d > m {
            (m, k) = (d, 3);
        }
        (m, k)
    }

    /// The row pairs of a plane of width `w` and the output rows.
    #[inline(always)]
    fn pairs<F>(x: &[F], w: usize, oh: usize) -> impl Iterator<Item = (&[F], &[F], usize)> {
        (0..oh).map(move |oy| {
            let r = &x[2 * oy * w..(2 * oy + 2) * w];
            let (r0, r1) = r.split_at(w);
            (r0, r1, oy)
        })
    }

    pub fn forward<F: Real>(w: usize, oh: usize, ow: usize, x: &[F], y: &mut [F]) {
        for (r0, r1, oy) in pairs(x, w, oh) {
            let yr = &mut y[oy * ow..(oy + 1) * ow];
            for ((v, t), b) in yr
                .iter_mut()
                .zip(r0.chunks_exact(2))
                .zip(r1.chunks_exact(2))
            {
                *v = pick(t[0], t[1], b[0], b[1]).0;
            }
        }
    }

    pub fn gather<F: Real>(w: usize, oh: usize, ow: usize, x: &[F], rx: &[F], ry: &mut [F]) {
        for (r0, r1, oy) in pairs(x, w, oh) {
            let yr = &mut ry[oy * ow..(oy + 1) * ow];
            for (ox, ((v, t), b)) in yr
                .iter_mut()
                .zip(r0.chunks_exact(2))
                .zip(r1.chunks_exact(2))
                .enumerate()
            {
                let k = pick(t[0], t[1], b[0], b[1]).1;
                *v = rx[(2 * oy + (k >> 1)) * w + 2 * ox + (k & 1)];
            }
        }
    }

    pub fn backward<F: Real>(w: usize, oh: usize, ow: usize, x: &[F], dy: &[F], dx: &mut [F]) {
        for (r0, r1, oy) in pairs(x, w, oh) {
            let dr = &dy[oy * ow..(oy + 1) * ow];
            for (ox, ((d, t), b)) in dr
                .iter()
                .zip(r0.chunks_exact(2))
                .zip(r1.chunks_exact(2))
                .enumerate()
            {
                let k = pick(t[0], t[1], b[0], b[1]).1;
                dx[(2 * oy + (k >> 1)) * w + 2 * ox + (k & 1)] += *d;
            }
        }
    }
}

/// y = pool(x) over one plane (x: H·W values, y: OH·OW).
pub fn forward_plane<F: Real>(g: &PoolGeom, x: &[F], y: &mut [F]) {
    if is_max2(g) {
        return max2::forward(g.w, g.oh, g.ow, x, y);
    }
    let inv = F::ONE / F::from_usize(g.kh * g.kw);
    for oy in 0..g.oh {
        for ox in 0..g.ow {
            y[oy * g.ow + ox] = match g.kind {
                PoolKind::Max => x[argmax(g, x, oy, ox)],
                PoolKind::Avg => {
                    let (y0, y1) = g.span(oy, g.kh, g.h);
                    let (x0, x1) = g.span(ox, g.kw, g.w);
                    let mut s = F::ZERO;
                    for iy in y0..y1 {
                        for ix in x0..x1 {
                            s += x[iy * g.w + ix];
                        }
                    }
                    s * inv
                }
            };
        }
    }
}

/// dx (+)= poolᵀ(dy) over one plane; overwrites dx unless `acc`.
pub fn backward_plane<F: Real>(g: &PoolGeom, x: &[F], dy: &[F], dx: &mut [F], acc: bool) {
    if !acc {
        dx.fill(F::ZERO);
    }
    if is_max2(g) {
        return max2::backward(g.w, g.oh, g.ow, x, dy, dx);
    }
    let inv = F::ONE / F::from_usize(g.kh * g.kw);
    for oy in 0..g.oh {
        for ox in 0..g.ow {
            let o = oy * g.ow + ox;
            match g.kind {
                PoolKind::Max => dx[argmax(g, x, oy, ox)] += dy[o],
                PoolKind::Avg => {
                    let (y0, y1) = g.span(oy, g.kh, g.h);
                    let (x0, x1) = g.span(ox, g.kw, g.w);
                    let d = dy[o] * inv;
                    for iy in y0..y1 {
                        for ix in x0..x1 {
                            dx[iy * g.w + ix] += d;
                        }
                    }
                }
            }
        }
    }
}

/// R{y} over one plane: R{x} at the window's arg-max of x (max), or the
/// pooled R{x} (average).
pub fn r_forward_plane<F: Real>(g: &PoolGeom, x: &[F], rx: &[F], ry: &mut [F]) {
    match g.kind {
        PoolKind::Max if is_max2(g) => max2::gather(g.w, g.oh, g.ow, x, rx, ry),
        PoolKind::Max => {
            for oy in 0..g.oh {
                for ox in 0..g.ow {
                    ry[oy * g.ow + ox] = rx[argmax(g, x, oy, ox)];
                }
            }
        }
        PoolKind::Avg => forward_plane(g, rx, ry),
    }
}

/// The (input, output) ranges of plane `p`.
#[inline]
fn planes(g: &PoolGeom, p: usize) -> (core::ops::Range<usize>, core::ops::Range<usize>) {
    let (i, o) = (g.h * g.w, g.oh * g.ow);
    (p * i..(p + 1) * i, p * o..(p + 1) * o)
}

/// y = pool(x).
pub fn forward<F: Real>(g: &PoolGeom, x: &[F], y: &mut [F]) {
    for p in 0..g.n * g.c {
        let (i, o) = planes(g, p);
        forward_plane(g, &x[i], &mut y[o]);
    }
}

/// dx (+)= poolᵀ(dy): each output's gradient to its window's arg-max
/// (max) or spread over the window (average). `x` is the forward input
/// (used by max pooling only). Overwrites dx unless `acc`.
pub fn backward<F: Real>(g: &PoolGeom, x: &[F], dy: &[F], dx: &mut [F], acc: bool) {
    for p in 0..g.n * g.c {
        let (i, o) = planes(g, p);
        backward_plane(g, &x[i.clone()], &dy[o], &mut dx[i], acc);
    }
}

/// R-forward: R{y} = R{x} at each window's arg-max of `x` (max), or the
/// pooled R{x} (average).
pub fn r_forward<F: Real>(g: &PoolGeom, x: &[F], rx: &[F], ry: &mut [F]) {
    for p in 0..g.n * g.c {
        let (i, o) = planes(g, p);
        r_forward_plane(g, &x[i.clone()], &rx[i], &mut ry[o]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec;
    use std::vec::Vec;

    /// The 2×2 row pairs against the general loops (ties and odd sizes
    /// included): the same values and the same arg-max.
    #[test]
    fn max2_matches_general_loops() {
        for (h, w) in [(4, 4), (5, 7), (2, 2), (8, 8)] {
            let g = PoolGeom {
                kind: PoolKind::Max,
                n: 1,
                c: 1,
                h,
                w,
                kh: 2,
                kw: 2,
                stride: 2,
                pad: 0,
                oh: h / 2,
                ow: w / 2,
            };
            assert!(is_max2(&g));
            let x: Vec<f64> = (0..h * w).map(|i| ((i * 7) % 5) as f64).collect();
            let rx: Vec<f64> = (0..h * w).map(|i| i as f64).collect();
            let dy: Vec<f64> = (0..g.y_len()).map(|i| 1.0 + i as f64).collect();
            let (mut y, mut ry, mut dx) =
                (vec![0.0; g.y_len()], vec![0.0; g.y_len()], vec![0.5; h * w]);
            forward_plane(&g, &x, &mut y);
            r_forward_plane(&g, &x, &rx, &mut ry);
            backward_plane(&g, &x, &dy, &mut dx, true);
            for oy in 0..g.oh {
                for ox in 0..g.ow {
                    let i = argmax(&g, &x, oy, ox);
                    assert_eq!(y[oy * g.ow + ox], x[i]);
                    assert_eq!(ry[oy * g.ow + ox], rx[i]);
                    assert_eq!(dx[i], 0.5 + dy[oy * g.ow + ox]);
                }
            }
        }
    }

    #[test]
    fn max_and_avg_match_hand_values() {
        // one 3×4 plane, window 2, stride 2, padding 1 → 2×3 outputs
        let x = [
            1.0f64, 5.0, 2.0, 0.0, 3.0, 3.0, 7.0, 1.0, 4.0, 9.0, 2.0, 8.0,
        ];
        let g = PoolGeom {
            kind: PoolKind::Max,
            n: 1,
            c: 1,
            h: 3,
            w: 4,
            kh: 2,
            kw: 2,
            stride: 2,
            pad: 1,
            oh: 2,
            ow: 3,
        };
        let mut y = [0.0; 6];
        forward(&g, &x, &mut y);
        assert_eq!(y, [1.0, 5.0, 0.0, 4.0, 9.0, 8.0]);
        let dy = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let mut dx = [0.0; 12];
        backward(&g, &x, &dy, &mut dx, false);
        assert_eq!(
            dx,
            [1.0, 2.0, 0.0, 3.0, 0.0, 0.0, 0.0, 0.0, 4.0, 5.0, 0.0, 6.0]
        );
        let ga = PoolGeom {
            kind: PoolKind::Avg,
            ..g
        };
        forward(&ga, &x, &mut y);
        assert_eq!(y, [0.25, 7.0 / 4.0, 0.0, 7.0 / 4.0, 5.25, 2.25]);
        // adjoint: ⟨pool(x), dy⟩ = ⟨x, poolᵀ(dy)⟩
        let mut dxa = vec![0.0; 12];
        backward(&ga, &x, &dy, &mut dxa, false);
        let l: f64 = y.iter().zip(&dy).map(|(a, b)| a * b).sum();
        let r: f64 = x.iter().zip(&dxa).map(|(a, b)| a * b).sum();
        assert!((l - r).abs() < 1e-12);
    }
}
