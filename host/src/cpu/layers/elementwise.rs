//! The elementwise primitives (bias + activation, channel sums,
//! activation backward, adds) on parallel chunks.

use super::*;

/// Elements per parallel chunk of an elementwise primitive.
const CHUNK: usize = 1 << 14;

/// Per-channel bias + activation in place: samples in parallel (planes)
/// or row blocks (vectors).
pub fn bias_act<T: Real>(z: &mut [T], bias: Option<&[T]>, c: usize, hw: usize, a: Act) {
    let per = c * hw;
    if z.len() < 2 * CHUNK || per == 0 {
        return bias_act_block(z, bias, c, hw, a);
    }
    let rows = (CHUNK / per).max(1);
    z.par_chunks_mut(rows * per)
        .for_each(|zc| bias_act_block(zc, bias, c, hw, a));
}

/// out ← β·out + α·(per-channel sums). Planes (HW > 1): channels in
/// parallel, each plane summed in [`norm::LANES`] interleaved partial sums
/// (vectorized; the kernel's sums rounded in another fixed order).
/// Vectors (HW = 1, a linear layer's bias): the kernel's column sums,
/// bit for bit.
pub fn chan_sum<T: Real>(out: &mut [T], m: &[T], c: usize, hw: usize, alpha: T, beta: T) {
    if hw == 1 {
        return col_sum(&mut out[..c], m, alpha, beta);
    }
    let n = m.len() / (c * hw).max(1);
    out[..c].par_iter_mut().enumerate().for_each(|(ch, o)| {
        let mut acc = if beta == T::ZERO { T::ZERO } else { beta * *o };
        for s in 0..n {
            acc += alpha * plane_sum(&m[(s * c + ch) * hw..(s * c + ch + 1) * hw]);
        }
        *o = acc;
    });
}

simd_fn! {
    /// [`act::col_sum`].
    fn col_sum<T: Real>(out: &mut [T], m: &[T], alpha: T, beta: T) {
        act::col_sum(out, m, alpha, beta)
    }
}

simd_fn! {
    /// Σ p in [`norm::LANES`] interleaved partial sums, added pairwise.
    fn plane_sum<T: Real>(p: &[T]) -> T {
    const L: usize = norm::LANES;
    let mut acc = [T::ZERO; L];
    let mut chunks = p.chunks_exact(L);
    for ch in &mut chunks {
        let ch: &[T; L] = ch.try_into().expect("a chunk of L values");
        for l in 0..L {
            acc[l] += ch[l];
        }
    }
    for (a, v) in acc.iter_mut().zip(chunks.remainder()) {
        *a += *v;
    }
    let mut w = L;
    while w > 1 {
        w /= 2;
        for l in 0..w {
            acc[l] += acc[l + w];
        }
    }
    acc[0]
}
}

simd_fn! {
    /// [`act::bias_act_chw`] on a block of whole samples.
    fn bias_act_block<T: Real>(z: &mut [T], bias: Option<&[T]>, c: usize, hw: usize, a: Act) {
        with_act(a, |a| act::bias_act_chw(z, bias, c, hw, a))
    }
}

simd_fn! {
    /// y ← a + b ([`vecops::add`]).
    pub fn ew_add<T: Real>(y: &mut [T], a: &[T], b: &[T]) {
        vecops::add(y, a, b)
    }
}

simd_fn! {
    /// y ← β·y + α·x ([`vecops::axpby`]).
    pub fn ew_axpby<T: Real>(y: &mut [T], x: &[T], alpha: T, beta: T) {
        vecops::axpby(y, x, alpha, beta)
    }
}

simd_fn! {
    /// y ← y + a·x ([`vecops::axpy`]).
    pub fn ew_axpy<T: Real>(y: &mut [T], a: T, x: &[T]) {
        vecops::axpy(y, a, x)
    }
}

simd_fn! {
    /// y ← σ(x) ([`act::act_map`]).
    pub fn ew_act_map<T: Real>(y: &mut [T], x: &[T], a: Act) {
        with_act(a, |a| act::act_map(y, x, a))
    }
}

simd_fn! {
    /// δ ← δ ⊙ σ'(a) ([`act::act_backward`]).
    pub fn ew_act_backward<T: Real>(d: &mut [T], av: &[T], a: Act) {
        with_act(a, |a| act::act_backward(d, av, a))
    }
}

simd_fn! {
    /// R{a} ← σ'(a) ⊙ R{z} ([`act::r_act`]).
    pub fn ew_r_act<T: Real>(ra: &mut [T], rz: &[T], av: &[T], a: Act) {
        with_act(a, |a| act::r_act(ra, rz, av, a))
    }
}

simd_fn! {
    /// R{δz} in place ([`act::r_act_backward`]).
    pub fn ew_r_act_backward<T: Real>(rd: &mut [T], rz: &[T], av: &[T], dz: &[T], a: Act) {
        with_act(a, |a| act::r_act_backward(rd, rz, av, dz, a))
    }
}

/// Runs an elementwise slice function on matching chunks in parallel.
pub fn chunked<T: Send + Sync>(y: &mut [T], xs: &[&[T]], f: impl Fn(&mut [T], &[&[T]]) + Sync) {
    if y.len() < 2 * CHUNK {
        return f(y, xs);
    }
    y.par_chunks_mut(CHUNK).enumerate().for_each(|(i, yc)| {
        let lo = i * CHUNK;
        let hi = lo + yc.len();
        let parts: [&[T]; 4] = core::array::from_fn(|k| xs.get(k).map_or(&[][..], |x| &x[lo..hi]));
        f(yc, &parts[..xs.len()]);
    });
}
