//! Pooling: the kernel's per-plane loops in parallel, and tiled loops
//! for windows that neither overlap nor leave the input.

use super::*;

/// Whether pooling windows neither overlap nor leave the input (no
/// padding, stride ≥ window, or a single window): then the planes run on
/// [`tiled`] loops without the window clipping of the kernel's.
fn tiles(g: &PoolGeom) -> bool {
    g.pad == 0
        && ((g.stride >= g.kh && g.stride >= g.kw) || (g.oh == 1 && g.ow == 1))
        && (g.oh - 1) * g.stride + g.kh <= g.h
        && (g.ow - 1) * g.stride + g.kw <= g.w
}

/// The per-plane pooling loops for [`tiles`] geometries: the kernel's
/// arithmetic (same comparisons, same order of additions, first maximum
/// of a window in row-major order), so the results are its own bit for
/// bit.
mod tiled {
    use super::{PoolGeom, Real};
    use fdgr_kernel::serial::PoolKind;

    /// Index of the first maximum of the window at `o` (its top-left).
    #[inline(always)]
    fn argmax<T: Real>(g: &PoolGeom, x: &[T], o: usize) -> usize {
        if g.kh == 2 && g.kw == 2 {
            // selects rather than branches (the comparisons are data)
            let (a, b, c, d) = (x[o], x[o + 1], x[o + g.w], x[o + g.w + 1]);
            let (mut i, mut m) = (0, a);
            let t = b > m;
            i = if t { 1 } else { i };
            m = if t { b } else { m };
            let t = c > m;
            i = if t { g.w } else { i };
            m = if t { c } else { m };
            i = if d > m { g.w + 1 } else { i };
            return o + i;
        }
        let mut best = o;
        for iy in 0..g.kh {
            for ix in 0..g.kw {
                let i = o + iy * g.w + ix;
                if x[i] > x[best] {
                    best = i;
                }
            }
        }
        best
    }

    /// Top-left input index of each output, in output order.
    #[inline(always)]
    fn origins(g: &PoolGeom) -> impl Iterator<Item = usize> + '_ {
        (0..g.oh).flat_map(move |oy| (0..g.ow).map(move |ox| (oy * g.w + ox) * g.stride))
    }

    pub fn forward<T: Real>(g: &PoolGeom, x: &[T], y: &mut [T]) {
        if g.kind == PoolKind::Max && (g.kh, g.kw, g.stride) == (2, 2, 2) {
            // the window's maximum as `v > m ? v : m` in window order
            // (what the first-maximum search returns), a row at a time
            for (oy, yr) in y.chunks_exact_mut(g.ow).enumerate() {
                let r0 = &x[2 * oy * g.w..][..2 * g.ow];
                let r1 = &x[(2 * oy + 1) * g.w..][..2 * g.ow];
                for ((yo, p), q) in yr
                    .iter_mut()
                    .zip(r0.chunks_exact(2))
                    .zip(r1.chunks_exact(2))
                {
                    let mut m = p[0];
                    m = if p[1] > m { p[1] } else { m };
                    m = if q[0] > m { q[0] } else { m };
                    *yo = if q[1] > m { q[1] } else { m };
                }
            }
            return;
        }
        let inv = T::ONE / T::from_usize(g.kh * g.kw);
        for (yo, o) in y.iter_mut().zip(origins(g)) {
            *yo = match g.kind {
                PoolKind::Max => x[argmax(g, x, o)],
                PoolKind::Avg => {
                    let mut s = T::ZERO;
                    for iy in 0..g.kh {
                        for v in &x[o + iy * g.w..o + iy * g.w + g.kw] {
                            s += *v;
                        }
                    }
                    s * inv
                }
            };
        }
    }

    pub fn backward<T: Real>(g: &PoolGeom, x: &[T], dy: &[T], dx: &mut [T], acc: bool) {
        if g.kind == PoolKind::Max && (g.kh, g.kw, g.stride) == (2, 2, 2) {
            // dx (zeroed unless accumulating) += dy at each window's first
            // maximum, found by selects and added at a computed index (the
            // comparisons are data: no branches)
            if !acc {
                dx.fill(T::ZERO);
            }
            let (w, ow) = (g.w, g.ow);
            for (oy, dr) in dy.chunks_exact(ow).enumerate() {
                let xa = &x[2 * oy * w..][..2 * ow];
                let xb = &x[(2 * oy + 1) * w..][..2 * ow];
                let pair = &mut dx[2 * oy * w..(2 * oy + 2) * w];
                let rows = xa.chunks_exact(2).zip(xb.chunks_exact(2));
                for (ox, (d, (p, q))) in dr.iter().zip(rows).enumerate() {
                    let (mut i, mut m) = (0, p[0]);
                    let t = p[1] > m;
                    i = if t { 1 } else { i };
                    m = if t { p[1] } else { m };
                    let t = q[0] > m;
                    i = if t { w } else { i };
                    m = if t { q[0] } else { m };
                    i = if q[1] > m { w + 1 } else { i };
                    pair[2 * ox + i] += *d;
                }
            }
            return;
        }
        if !acc {
            dx.fill(T::ZERO);
        }
        let inv = T::ONE / T::from_usize(g.kh * g.kw);
        for (d, o) in dy.iter().zip(origins(g)) {
            match g.kind {
                PoolKind::Max => dx[argmax(g, x, o)] += *d,
                PoolKind::Avg => {
                    let d = *d * inv;
                    for iy in 0..g.kh {
                        for v in &mut dx[o + iy * g.w..o + iy * g.w + g.kw] {
                            *v += d;
                        }
                    }
                }
            }
        }
    }

    pub fn r_forward<T: Real>(g: &PoolGeom, x: &[T], rx: &[T], ry: &mut [T]) {
        match g.kind {
            PoolKind::Max => {
                for (r, o) in ry.iter_mut().zip(origins(g)) {
                    *r = rx[argmax(g, x, o)];
                }
            }
            PoolKind::Avg => forward(g, rx, ry),
        }
    }
}

simd_fn! {
    /// [`tiled::forward`].
    fn tiled_forward<T: Real>(g: &PoolGeom, x: &[T], y: &mut [T]) {
        tiled::forward(g, x, y)
    }
}

simd_fn! {
    /// [`tiled::backward`].
    fn tiled_backward<T: Real>(g: &PoolGeom, x: &[T], dy: &[T], dx: &mut [T], acc: bool) {
        tiled::backward(g, x, dy, dx, acc)
    }
}

simd_fn! {
    /// [`tiled::r_forward`].
    fn tiled_r_forward<T: Real>(g: &PoolGeom, x: &[T], rx: &[T], ry: &mut [T]) {
        tiled::r_forward(g, x, rx, ry)
    }
}

/// Pooling forward, planes in parallel.
pub fn pool_forward<T: Real>(g: &PoolGeom, x: &[T], y: &mut [T]) {
    let (hw, ohw) = (g.h * g.w, g.oh * g.ow);
    let t = tiles(g);
    y[..g.y_len()]
        .par_chunks_mut(ohw)
        .zip(x[..g.x_len()].par_chunks(hw))
        .for_each(|(yp, xp)| {
            if t {
                tiled_forward(g, xp, yp)
            } else {
                pool::forward_plane(g, xp, yp)
            }
        });
}

/// Pooling backward, planes in parallel.
pub fn pool_backward<T: Real>(g: &PoolGeom, x: &[T], dy: &[T], dx: &mut [T], acc: bool) {
    let (hw, ohw) = (g.h * g.w, g.oh * g.ow);
    let t = tiles(g);
    dx[..g.x_len()]
        .par_chunks_mut(hw)
        .zip(x[..g.x_len()].par_chunks(hw))
        .zip(dy[..g.y_len()].par_chunks(ohw))
        .for_each(|((dxp, xp), dyp)| {
            if t {
                tiled_backward(g, xp, dyp, dxp, acc)
            } else {
                pool::backward_plane(g, xp, dyp, dxp, acc)
            }
        });
}

/// Pooling R-forward, planes in parallel.
pub fn pool_r_forward<T: Real>(g: &PoolGeom, x: &[T], rx: &[T], ry: &mut [T]) {
    let (hw, ohw) = (g.h * g.w, g.oh * g.ow);
    let t = tiles(g);
    ry[..g.y_len()]
        .par_chunks_mut(ohw)
        .zip(x[..g.x_len()].par_chunks(hw))
        .zip(rx[..g.x_len()].par_chunks(hw))
        .for_each(|((ryp, xp), rxp)| {
            if t {
                tiled_r_forward(g, xp, rxp, ryp)
            } else {
                pool::r_forward_plane(g, xp, rxp, ryp)
            }
        });
}
