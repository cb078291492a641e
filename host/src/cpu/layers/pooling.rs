//! Pooling: the kernel's per-plane loops ([`pool`]: one definition of
//! the maths, with its 2×2 max-pool row loops), the planes in parallel and
//! compiled for AVX2 where the CPU has it.

use super::*;

simd_fn! {
    /// [`pool::forward_plane`].
    fn forward_plane<T: Real>(g: &PoolGeom, x: &[T], y: &mut [T]) {
        pool::forward_plane(g, x, y)
    }
}

simd_fn! {
    /// [`pool::backward_plane`].
    fn backward_plane<T: Real>(g: &PoolGeom, x: &[T], dy: &[T], dx: &mut [T], acc: bool) {
        pool::backward_plane(g, x, dy, dx, acc)
    }
}

simd_fn! {
    /// [`pool::r_forward_plane`].
    fn r_forward_plane<T: Real>(g: &PoolGeom, x: &[T], rx: &[T], ry: &mut [T]) {
        pool::r_forward_plane(g, x, rx, ry)
    }
}

/// Pooling forward, planes in parallel.
pub fn pool_forward<T: Real>(g: &PoolGeom, x: &[T], y: &mut [T]) {
    let (hw, ohw) = (g.h * g.w, g.oh * g.ow);
    y[..g.y_len()]
        .par_chunks_mut(ohw)
        .zip(x[..g.x_len()].par_chunks(hw))
        .for_each(|(yp, xp)| forward_plane(g, xp, yp));
}

/// Pooling backward, planes in parallel.
pub fn pool_backward<T: Real>(g: &PoolGeom, x: &[T], dy: &[T], dx: &mut [T], acc: bool) {
    let (hw, ohw) = (g.h * g.w, g.oh * g.ow);
    dx[..g.x_len()]
        .par_chunks_mut(hw)
        .zip(x[..g.x_len()].par_chunks(hw))
        .zip(dy[..g.y_len()].par_chunks(ohw))
        .for_each(|((dxp, xp), dyp)| backward_plane(g, xp, dyp, dxp, acc));
}

/// Pooling R-forward, planes in parallel.
pub fn pool_r_forward<T: Real>(g: &PoolGeom, x: &[T], rx: &[T], ry: &mut [T]) {
    let (hw, ohw) = (g.h * g.w, g.oh * g.ow);
    ry[..g.y_len()]
        .par_chunks_mut(ohw)
        .zip(x[..g.x_len()].par_chunks(hw))
        .zip(rx[..g.x_len()].par_chunks(hw))
        .for_each(|((ryp, xp), rxp)| r_forward_plane(g, xp, rxp, ryp));
}
