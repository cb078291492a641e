//! Vector operations on slices, and the dense matrix product, as plain
//! serial loops. They define the arithmetic (and its order) that every
//! CPU backend reproduces: the host runs the same functions on chunks in
//! parallel, the firmware runs them as they are.
//!
//! Reductions use 8 independent partial sums combined in a fixed tree, so
//! the compiler may vectorize them without changing a single bit, and a
//! Cortex-M computes exactly what an x86-64 computes. Long reductions
//! ([`dot`]) add such sums of [`DOT_BLOCK`] values as a binary tree
//! ([`pairwise`]), so their rounding error grows with the logarithm of the
//! length rather than with the length.

use crate::real::Real;

/// Number of partial sums in reductions.
pub const LANES: usize = 8;

/// Whether the loops that do more per iteration (eight rows of B per pass
/// over a row of C, the plain SGD update 32 elements at a time) are used:
/// everywhere but soft-float ARM (ARMv6-M, the RP2040), where each
/// arithmetic operation is a call and such loops would take several times
/// the flash of the plain ones. The bits are the same either way.
pub(crate) const WIDE: bool = !cfg!(all(target_arch = "arm", not(target_abi = "eabihf")));

/// Whether the loops that share loads between several outputs of a
/// product run (two dot products per pass over a row of A, eight rows of
/// C per pass over a row of B, eight columns per iteration): on a
/// microcontroller with a floating-point unit and no vector instructions
/// (hard-float bare-metal ARM: Cortex-M4F, M7, M33), where each load and
/// each loop instruction counts. Vector units run the plain loops faster.
/// The bits are the same either way.
const MCU_FPU: bool = cfg!(all(
    target_arch = "arm",
    target_abi = "eabihf",
    target_os = "none"
));

/// Values per leaf of [`dot`]'s tree: each leaf is summed in [`LANES`]
/// partial sums (a power of two, so that aligned chunks of 2^k leaves are
/// subtrees: see [`pairwise`]).
pub const DOT_BLOCK: usize = 128;

/// Σ x_i·y_i with [`LANES`] partial sums in a fixed order.
#[inline]
fn dot_lanes<F: Real>(x: &[F], y: &[F]) -> F {
    let mut acc = [F::ZERO; LANES];
    let xc = x.chunks_exact(LANES);
    let yc = y.chunks_exact(LANES);
    let (xr, yr) = (xc.remainder(), yc.remainder());
    for (a, b) in xc.zip(yc) {
        for l in 0..LANES {
            acc[l] += a[l] * b[l];
        }
    }
    let mut tail = F::ZERO;
    for (a, b) in xr.iter().zip(yr) {
        tail += *a * *b;
    }
    lanes_sum(&acc, tail)
}

/// The fixed tree that ends [`dot_lanes`]: the [`LANES`] partial sums
/// pairwise, then the tail.
#[inline(always)]
fn lanes_sum<F: Real>(acc: &[F; LANES], tail: F) -> F {
    ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7])) + tail
}

/// (x·y0, x·y1), each bit for bit [`dot_lanes`] of its pair: two dot
/// products that share the loads of x. `y0` and `y1` are at least as long
/// as `x`.
///
/// The partial sums start at the first chunk's products p instead of
/// 0 + p, which saves their zeroing and differs only for p = −0 (0 + −0 is
/// +0). That cannot change the result: a sum whose terms differ only in
/// the sign of zeros equals the other one, or both are zeros; so do the
/// tree's sums of such partial sums; and its last addition, of the tail
/// (a sum started at +0, so +0 or not zero at all), turns a zero of
/// either sign into +0 (−0 + +0 is +0) and leaves any other value as it
/// is.
#[inline(never)]
fn dot_lanes2<F: Real>(x: &[F], y0: &[F], y1: &[F]) -> (F, F) {
    let n = x.len();
    let whole = n - n % LANES;
    let (x, xr) = x.split_at(whole);
    let (y0, y0r) = y0[..n].split_at(whole);
    let (y1, y1r) = y1[..n].split_at(whole);
    let (mut p, mut q) = ([F::ZERO; LANES], [F::ZERO; LANES]);
    if let (Some(a), Some(b0), Some(b1)) = (x.get(..LANES), y0.get(..LANES), y1.get(..LANES)) {
        for l in 0..LANES {
            p[l] = a[l] * b0[l];
            q[l] = a[l] * b1[l];
        }
        // the other chunks, two per iteration (the loop's own
        // instructions count on a core without vector instructions)
        let mut xc = x[LANES..].chunks_exact(2 * LANES);
        let mut y0c = y0[LANES..].chunks_exact(2 * LANES);
        let mut y1c = y1[LANES..].chunks_exact(2 * LANES);
        for ((a, b0), b1) in (&mut xc).zip(&mut y0c).zip(&mut y1c) {
            for l in 0..2 * LANES {
                p[l % LANES] += a[l] * b0[l];
                q[l % LANES] += a[l] * b1[l];
            }
        }
        // (one chunk left, or none)
        let (a, b0, b1) = (xc.remainder(), y0c.remainder(), y1c.remainder());
        if a.len() == LANES && b0.len() == LANES && b1.len() == LANES {
            for l in 0..LANES {
                p[l] += a[l] * b0[l];
                q[l] += a[l] * b1[l];
            }
        }
    }
    let (mut tp, mut tq) = (F::ZERO, F::ZERO);
    for ((a, b0), b1) in xr.iter().zip(y0r).zip(y1r) {
        tp += *a * *b0;
        tq += *a * *b1;
    }
    (lanes_sum(&p, tp), lanes_sum(&q, tq))
}

/// Σ of `leaf(i)` for i in 0..n, added as a binary tree: the left subtree
/// of a node over n ≥ 2 leaves holds the largest power of two of them
/// below n. The tree's depth is ⌈log₂ n⌉, and so is its rounding error's
/// growth (a running sum's grows with n).
///
/// The shape depends only on n, and a node over 2^k leaves starting at a
/// multiple of 2^k is a complete subtree: so summing, with this same
/// tree, the sums of aligned chunks of 2^k leaves (the last one possibly
/// shorter) gives the bits of summing the leaves themselves. A parallel
/// executor sums chunks apart and combines them that way.
pub fn pairwise<F: Real>(n: usize, leaf: &impl Fn(usize) -> F) -> F {
    fn node<F: Real>(lo: usize, n: usize, leaf: &impl Fn(usize) -> F) -> F {
        if n <= 1 {
            return if n == 1 { leaf(lo) } else { F::ZERO };
        }
        let h = 1 << (usize::BITS - 1 - (n - 1).leading_zeros());
        node(lo, h, leaf) + node(lo + h, n - h, leaf)
    }
    node(0, n, leaf)
}

/// xᵀy = Σ x_i·y_i (over the shorter length): blocks of [`DOT_BLOCK`]
/// products, each summed in [`LANES`] partial sums in a fixed order, then
/// the block sums added by [`pairwise`]'s tree. Bounded by about
/// (`DOT_BLOCK`/`LANES` + 4 + log₂(n/`DOT_BLOCK`))·2⁻²⁴ relative in f32
/// (the gradient norm of SAM and clipping sums positive terms), instead of
/// the n/`LANES`·2⁻²⁴ of a running sum in each lane. The same bits as one
/// `LANES`-wide sum for n ≤ `DOT_BLOCK`.
#[inline]
pub fn dot<F: Real>(x: &[F], y: &[F]) -> F {
    let n = x.len().min(y.len());
    if n <= DOT_BLOCK {
        // one block: no tree (the short dot products of a GEMM's inner
        // loops pay nothing for it)
        return dot_lanes(&x[..n], &y[..n]);
    }
    pairwise(n.div_ceil(DOT_BLOCK), &|b| {
        let r = b * DOT_BLOCK..((b + 1) * DOT_BLOCK).min(n);
        dot_lanes(&x[r.clone()], &y[r])
    })
}

/// y ← y + a·x.
#[inline]
pub fn axpy<F: Real>(y: &mut [F], a: F, x: &[F]) {
    for (yi, xi) in y.iter_mut().zip(x) {
        *yi += a * *xi;
    }
}

/// y ← a·x (overwrites y).
#[inline]
pub fn scaled<F: Real>(y: &mut [F], a: F, x: &[F]) {
    for (yi, xi) in y.iter_mut().zip(x) {
        *yi = a * *xi;
    }
}

/// y ← β·y + a·x in one pass (β = 1: [`axpy`], the same bits).
#[inline]
pub fn scale_axpy<F: Real>(y: &mut [F], beta: F, a: F, x: &[F]) {
    if beta == F::ONE {
        return axpy(y, a, x);
    }
    for (yi, xi) in y.iter_mut().zip(x) {
        *yi = beta * *yi + a * *xi;
    }
}

/// w ← x + a·y.
#[inline]
pub fn waxpy<F: Real>(w: &mut [F], x: &[F], a: F, y: &[F]) {
    for ((wi, xi), yi) in w.iter_mut().zip(x).zip(y) {
        *wi = *xi + a * *yi;
    }
}

/// x ← a·x (a = 1 leaves x untouched).
#[inline]
pub fn scale<F: Real>(x: &mut [F], a: F) {
    if a == F::ONE {
        return;
    }
    for xi in x.iter_mut() {
        *xi *= a;
    }
}

/// y ← β·y + α·x, where β = 0 overwrites y (NaN included).
#[inline]
pub fn axpby<F: Real>(y: &mut [F], x: &[F], alpha: F, beta: F) {
    if beta == F::ZERO {
        for (yi, xi) in y.iter_mut().zip(x) {
            *yi = alpha * *xi;
        }
    } else {
        for (yi, xi) in y.iter_mut().zip(x) {
            *yi = beta * *yi + alpha * *xi;
        }
    }
}

/// y ← a + b.
#[inline]
pub fn add<F: Real>(y: &mut [F], a: &[F], b: &[F]) {
    for ((yi, ai), bi) in y.iter_mut().zip(a).zip(b) {
        *yi = *ai + *bi;
    }
}

/// x ← β·x, where β = 0 writes zeros (whatever x held, NaN included),
/// the BLAS convention.
#[inline]
pub fn scale_or_zero<F: Real>(x: &mut [F], beta: F) {
    if beta == F::ZERO {
        x.fill(F::ZERO);
    } else {
        scale(x, beta);
    }
}

/// True when every entry is finite.
///
/// First the sums of products of two entries each: an infinite or NaN
/// entry makes its product infinite or NaN (∞·0 is NaN), and a partial
/// sum that once is stays so (∞ + x is ∞ or NaN, NaN + x is NaN). So
/// finite sums prove every entry finite, at one multiply-add per two
/// entries (what a core without vector instructions spends most on).
/// Sums that are not finite (an entry that is not, or products of huge
/// finite entries that overflow) are decided entry by entry, exactly.
#[inline]
pub fn all_finite<F: Real>(x: &[F]) -> bool {
    let mut acc = [F::ZERO; LANES];
    let c = x.chunks_exact(4 * LANES);
    let r = c.remainder();
    for a in c {
        for l in 0..2 * LANES {
            acc[l % LANES] += a[l] * a[2 * LANES + l];
        }
    }
    if acc.iter().all(|v| v.is_finite()) && all_finite_exact(r) {
        return true;
    }
    all_finite_exact(x)
}

/// [`all_finite`] entry by entry: x·0 is 0 for finite x and NaN otherwise
/// (branch-free, so the loop vectorizes).
#[inline]
fn all_finite_exact<F: Real>(x: &[F]) -> bool {
    let mut acc = [F::ZERO; LANES];
    let c = x.chunks_exact(LANES);
    let r = c.remainder();
    for a in c {
        for l in 0..LANES {
            acc[l] += a[l] * F::ZERO;
        }
    }
    let mut ok = true;
    for v in acc.iter().chain(r.iter()) {
        ok &= v.is_finite();
    }
    ok
}

/// C ← α·op(A)·op(B) + β·C, all row-major and contiguous; C is m × n,
/// op(A) is m × k (A is k × m when `ta`), op(B) is k × n (B is n × k when
/// `tb`). β = 0 overwrites C.
///
/// The three shapes an MLP uses each get the loop order that keeps the
/// innermost loop contiguous: `A·Bᵀ` (forward) as dot products, `Aᵀ·B`
/// (weight gradient) and `A·B` (input gradient) as rows of axpy.
///
/// Every element is the same sum, in the same order, as one dot product
/// ([`dot`]) or one run of axpy over p. The loops may share loads between
/// independent elements: eight rows of B per pass over a row of C (except
/// with soft float, for flash); on a microcontroller with a
/// floating-point unit and no vector instructions (a Cortex-M4F) also two
/// dot products per pass over a row of A and eight rows of C per pass
/// over a row of B, so that each operand is loaded fewer times and less
/// is spent on the loops themselves. The bits do not depend on it.
#[allow(clippy::too_many_arguments)]
pub fn gemm<F: Real>(
    ta: bool,
    tb: bool,
    m: usize,
    n: usize,
    k: usize,
    alpha: F,
    a: &[F],
    b: &[F],
    beta: F,
    c: &mut [F],
) {
    gemm_loops(MCU_FPU, WIDE, ta, tb, m, n, k, alpha, a, b, beta, c)
}

/// [`gemm`] with the loops that [`MCU_FPU`] (`mcu`) and [`WIDE`] (`wide`)
/// choose: the same bits for every choice (the tests run each of them on
/// any machine).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn gemm_loops<F: Real>(
    mcu: bool,
    wide: bool,
    ta: bool,
    tb: bool,
    m: usize,
    n: usize,
    k: usize,
    alpha: F,
    a: &[F],
    b: &[F],
    beta: F,
    c: &mut [F],
) {
    let c = &mut c[..m * n];
    match (ta, tb) {
        (false, true) if k == 0 => {
            // empty dot products (+0, as [`dot`] gives them)
            for cij in c.iter_mut() {
                *cij = out_elem(alpha * F::ZERO, *cij, beta);
            }
        }
        (false, true) if mcu && k <= DOT_BLOCK => {
            // one block per dot product: two at a time
            let b = &b[..n * k];
            for (crow, arow) in c.chunks_exact_mut(n).zip(a.chunks_exact(k)) {
                dots_row(crow, arow, b, alpha, beta);
            }
        }
        (false, true) => {
            for (i, crow) in c.chunks_exact_mut(n).enumerate() {
                let arow = &a[i * k..(i + 1) * k];
                for (j, cij) in crow.iter_mut().enumerate() {
                    let s = alpha * dot(arow, &b[j * k..(j + 1) * k]);
                    *cij = out_elem(s, *cij, beta);
                }
            }
        }
        (true, false) if k == 0 => scale_or_zero(c, beta),
        (true, false) if mcu => {
            // the first product row is written (β = 0) or scaled into C in
            // the same pass, eight rows of C at a time, then the others
            // added
            outer_first(c, &a[..m], alpha, &b[..n], beta);
            for p in 1..k {
                let arow = &a[p * m..(p + 1) * m];
                let brow = &b[p * n..(p + 1) * n];
                for (crow, &aip) in c.chunks_exact_mut(n).zip(arow) {
                    axpy_row(crow, alpha * aip, brow);
                }
            }
        }
        (true, false) => {
            // the first product row is written (β = 0) or scaled into C
            // in the same pass
            for (crow, &a0) in c.chunks_exact_mut(n).zip(&a[..m]) {
                if beta == F::ZERO {
                    scaled(crow, alpha * a0, &b[..n]);
                } else {
                    scale_axpy(crow, beta, alpha * a0, &b[..n]);
                }
            }
            for p in 1..k {
                let arow = &a[p * m..(p + 1) * m];
                let brow = &b[p * n..(p + 1) * n];
                for (crow, &aip) in c.chunks_exact_mut(n).zip(arow) {
                    axpy(crow, alpha * aip, brow);
                }
            }
        }
        (false, false) if k == 0 => scale_or_zero(c, beta),
        (false, false) => {
            // each row of C: the first product row written (β = 0) or
            // scaled into it, then the others added eight per pass
            let b = &b[..k * n];
            let (b0, bs) = b.split_at(n);
            for (crow, arow) in c.chunks_exact_mut(n).zip(a.chunks_exact(k)) {
                first_row(crow, beta, alpha * arow[0], b0);
                let mut bq = bs.chunks_exact(8 * n);
                let mut aq = arow[1..].chunks_exact(8);
                if wide {
                    for (bb, aa) in (&mut bq).zip(&mut aq) {
                        let s: [F; 8] = core::array::from_fn(|r| alpha * aa[r]);
                        lincomb8(crow, s, bb);
                    }
                }
                let (br, ar) = if wide {
                    (bq.remainder(), aq.remainder())
                } else {
                    (bs, &arow[1..])
                };
                for (brow, &aip) in br.chunks_exact(n).zip(ar) {
                    axpy_row(crow, alpha * aip, brow);
                }
            }
        }
        (true, true) => {
            for (i, crow) in c.chunks_exact_mut(n).enumerate() {
                for (j, cij) in crow.iter_mut().enumerate() {
                    let mut s = F::ZERO;
                    for p in 0..k {
                        s += a[p * m + i] * b[j * k + p];
                    }
                    *cij = out_elem(alpha * s, *cij, beta);
                }
            }
        }
    }
}

/// An output element of [`gemm`]: `s` (β = 0: the old value is not read,
/// NaN included) or β·c + s.
#[inline(always)]
fn out_elem<F: Real>(s: F, c: F, beta: F) -> F {
    if beta == F::ZERO {
        s
    } else {
        beta * c + s
    }
}

/// One row of `A·Bᵀ` with at most [`DOT_BLOCK`] terms per dot product
/// (so [`dot`] is one [`dot_lanes`]): c_j ← α·(a·b_j) (+ β·c_j) for the
/// rows b_j of `b` (each `a.len()` long, at least `c.len()` of them), two
/// dot products at a time (an odd last one is computed twice).
#[inline(never)]
fn dots_row<F: Real>(c: &mut [F], a: &[F], b: &[F], alpha: F, beta: F) {
    let k = a.len();
    let mut cp = c.chunks_exact_mut(2);
    let mut bp = b.chunks_exact(2 * k);
    for (cc, bb) in (&mut cp).zip(&mut bp) {
        let (b0, b1) = bb.split_at(k);
        let (s0, s1) = dot_lanes2(a, b0, b1);
        cc[0] = out_elem(alpha * s0, cc[0], beta);
        cc[1] = out_elem(alpha * s1, cc[1], beta);
    }
    if let ([cj], bj) = (cp.into_remainder(), bp.remainder()) {
        *cj = out_elem(alpha * dot_lanes2(a, bj, bj).0, *cj, beta);
    }
}

/// The first product row of `Aᵀ·B` into C: c_i ← α·a_i·b (β = 0) or
/// β·c_i + α·a_i·b for the `a.len()` rows of `c` (each `b.len()` long),
/// eight rows per pass over b ([`MCU_FPU`]).
#[inline(never)]
fn outer_first<F: Real>(c: &mut [F], a: &[F], alpha: F, b: &[F], beta: F) {
    let n = b.len();
    let mut cg = c.chunks_exact_mut(8 * n);
    let mut ag = a.chunks_exact(8);
    for (cq, aq) in (&mut cg).zip(&mut ag) {
        let s: [F; 8] = core::array::from_fn(|r| alpha * aq[r]);
        if beta == F::ZERO {
            outer8(cq, s, b, |_, t| t);
        } else {
            // (β = 1 too: 1·c is c, bit for bit)
            outer8(cq, s, b, |c, t| beta * c + t);
        }
    }
    first_rows(cg.into_remainder(), ag.remainder(), alpha, b, beta);
}

/// The rows of C that [`outer_first`] leaves (fewer than eight), one at a
/// time.
#[inline(never)]
fn first_rows<F: Real>(c: &mut [F], a: &[F], alpha: F, b: &[F], beta: F) {
    for (crow, &ai) in c.chunks_exact_mut(b.len()).zip(a) {
        first_row(crow, beta, alpha * ai, b);
    }
}

/// Eight rows of C (`c` holds them one after another, each `b.len()`
/// long): c_r ← start(c_r, s_r·b) elementwise.
#[inline(always)]
fn outer8<F: Real>(c: &mut [F], s: [F; 8], b: &[F], start: impl Fn(F, F) -> F) {
    let n = b.len();
    let (c0, rest) = c.split_at_mut(n);
    let (c1, rest) = rest.split_at_mut(n);
    let (c2, rest) = rest.split_at_mut(n);
    let (c3, rest) = rest.split_at_mut(n);
    let (c4, rest) = rest.split_at_mut(n);
    let (c5, rest) = rest.split_at_mut(n);
    let (c6, c7) = rest.split_at_mut(n);
    // eight columns per iteration (the loop's own instructions count on a
    // core without vector instructions), then the rest one by one
    const W: usize = 8;
    let mut it = c0
        .chunks_exact_mut(W)
        .zip(c1.chunks_exact_mut(W))
        .zip(c2.chunks_exact_mut(W))
        .zip(c3.chunks_exact_mut(W))
        .zip(c4.chunks_exact_mut(W))
        .zip(c5.chunks_exact_mut(W))
        .zip(c6.chunks_exact_mut(W))
        .zip(c7.chunks_exact_mut(W))
        .zip(b.chunks_exact(W));
    for ((((((((o0, o1), o2), o3), o4), o5), o6), o7), bb) in &mut it {
        for j in 0..W {
            let v = bb[j];
            o0[j] = start(o0[j], s[0] * v);
            o1[j] = start(o1[j], s[1] * v);
            o2[j] = start(o2[j], s[2] * v);
            o3[j] = start(o3[j], s[3] * v);
            o4[j] = start(o4[j], s[4] * v);
            o5[j] = start(o5[j], s[5] * v);
            o6[j] = start(o6[j], s[6] * v);
            o7[j] = start(o7[j], s[7] * v);
        }
    }
    let j0 = n - n % W;
    for j in j0..n {
        let v = b[j];
        c0[j] = start(c0[j], s[0] * v);
        c1[j] = start(c1[j], s[1] * v);
        c2[j] = start(c2[j], s[2] * v);
        c3[j] = start(c3[j], s[3] * v);
        c4[j] = start(c4[j], s[4] * v);
        c5[j] = start(c5[j], s[5] * v);
        c6[j] = start(c6[j], s[6] * v);
        c7[j] = start(c7[j], s[7] * v);
    }
}

/// One row of C and eight rows of B (`b` holds them one after another,
/// each `c.len()` long): c ← c + s₀·b₀ + s₁·b₁ + … + s₇·b₇ elementwise,
/// added in that order (eight axpy in one pass).
#[inline(always)]
fn lincomb8<F: Real>(c: &mut [F], s: [F; 8], b: &[F]) {
    let n = c.len();
    let (b0, rest) = b.split_at(n);
    let (b1, rest) = rest.split_at(n);
    let (b2, rest) = rest.split_at(n);
    let (b3, rest) = rest.split_at(n);
    let (b4, rest) = rest.split_at(n);
    let (b5, rest) = rest.split_at(n);
    let (b6, b7) = rest.split_at(n);
    let lo = b0.iter().zip(b1).zip(b2).zip(b3);
    let hi = b4.iter().zip(b5).zip(b6).zip(b7);
    for (cj, ((((x0, x1), x2), x3), (((x4, x5), x6), x7))) in c.iter_mut().zip(lo.zip(hi)) {
        let mut v = *cj;
        v += s[0] * *x0;
        v += s[1] * *x1;
        v += s[2] * *x2;
        v += s[3] * *x3;
        v += s[4] * *x4;
        v += s[5] * *x5;
        v += s[6] * *x6;
        *cj = v + s[7] * *x7;
    }
}

/// A row of C that starts a product: y ← a·x (β = 0) or β·y + a·x (β = 1
/// too: 1·y is y, bit for bit). Out of line: [`gemm`] needs it for a few
/// rows only.
#[inline(never)]
fn first_row<F: Real>(y: &mut [F], beta: F, a: F, x: &[F]) {
    if beta == F::ZERO {
        scaled(y, a, x);
    } else {
        for (yi, xi) in y.iter_mut().zip(x) {
            *yi = beta * *yi + a * *xi;
        }
    }
}

/// [`axpy`] out of line (the few rows [`gemm`] adds one at a time).
#[inline(never)]
fn axpy_row<F: Real>(y: &mut [F], a: F, x: &[F]) {
    axpy(y, a, x);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(
        ta: bool,
        tb: bool,
        m: usize,
        n: usize,
        k: usize,
        a: &[f64],
        b: &[f64],
    ) -> [f64; 64] {
        let mut c = [0.0; 64];
        for i in 0..m {
            for j in 0..n {
                let mut s = 0.0;
                for p in 0..k {
                    let av = if ta { a[p * m + i] } else { a[i * k + p] };
                    let bv = if tb { b[j * k + p] } else { b[p * n + j] };
                    s += av * bv;
                }
                c[i * n + j] = s;
            }
        }
        c
    }

    #[test]
    fn gemm_all_transposes() {
        let (m, n, k) = (3, 5, 11);
        let a: [f64; 33] = core::array::from_fn(|i| (i as f64 * 0.37).sin());
        let b: [f64; 55] = core::array::from_fn(|i| (i as f64 * 0.21).cos());
        for ta in [false, true] {
            for tb in [false, true] {
                let want = reference(ta, tb, m, n, k, &a, &b);
                let mut c = [f64::NAN; 15];
                gemm(ta, tb, m, n, k, 1.0, &a, &b, 0.0, &mut c);
                for i in 0..15 {
                    assert!((c[i] - want[i]).abs() < 1e-12, "{ta} {tb} {i}");
                }
                // β = 1, α = 2: C = 2·AB + previous C
                let prev = c;
                gemm(ta, tb, m, n, k, 2.0, &a, &b, 1.0, &mut c);
                for i in 0..15 {
                    assert!((c[i] - 3.0 * want[i]).abs() < 1e-12);
                    assert!((c[i] - (prev[i] + 2.0 * want[i])).abs() < 1e-12);
                }
            }
        }
    }

    #[test]
    fn finite_detection() {
        let mut x = [1.0f32; 19];
        assert!(all_finite(&x));
        x[3] = f32::INFINITY;
        assert!(!all_finite(&x));
        x[3] = 0.0;
        x[18] = f32::NAN;
        assert!(!all_finite(&x));
        x[18] = f32::MAX;
        assert!(all_finite(&x));
    }

    #[test]
    fn dot_matches_sum() {
        let x: [f64; 21] = core::array::from_fn(|i| i as f64);
        let y = [2.0f64; 21];
        assert_eq!(dot(&x, &y), 420.0);
    }

    /// Values of mixed signs and magnitudes, so that every reordering of
    /// their sum shows in its bits.
    fn mixed(n: usize) -> std::vec::Vec<f32> {
        let mut r = crate::Rng::new(n as u64);
        (0..n)
            .map(|i| ([1e-3, 1.0, 1e3][i % 3] * r.normal()) as f32)
            .collect()
    }

    /// Summing aligned chunks of 2^k leaves apart, then the chunk sums
    /// with the same tree, gives the bits of the whole tree (what the
    /// host's parallel dot relies on).
    #[test]
    fn pairwise_over_aligned_chunks_is_the_same_tree() {
        for n in [0, 1, 2, 3, 5, 8, 13, 64, 100, 257] {
            let v = mixed(n);
            let whole = pairwise(n, &|i| v[i]);
            for k in 0..5 {
                let c = 1 << k;
                let part = |j: usize| {
                    let lo = j * c;
                    pairwise(c.min(n - lo), &|i| v[lo + i])
                };
                let chunked = pairwise(n.div_ceil(c), &part);
                assert_eq!(chunked.to_bits(), whole.to_bits(), "n {n}, chunks of {c}");
            }
        }
    }

    /// One block: the 8-lane sum as it was; longer: within the tree's
    /// bound of the f64 sum, and far closer than the lanes' running sums.
    #[test]
    fn dot_is_pairwise_over_blocks() {
        let x = mixed(DOT_BLOCK);
        assert_eq!(dot(&x, &x).to_bits(), dot_lanes(&x, &x).to_bits());
        let n = 1 << 20;
        let x = mixed(n);
        let exact: f64 = x.iter().map(|v| *v as f64 * *v as f64).sum();
        let depth = DOT_BLOCK / LANES + 4 + (n / DOT_BLOCK).ilog2() as usize;
        let err = |s: f32| (s as f64 - exact).abs() / exact;
        let bound = depth as f64 * f32::EPSILON as f64 / 2.0;
        assert!(err(dot(&x, &x)) <= bound, "{} > {bound}", err(dot(&x, &x)));
        assert!(err(dot(&x, &x)) < 1e-6);
        assert!(err(dot_lanes(&x, &x)) > 10.0 * err(dot(&x, &x)));
    }

    /// The product as it was written before its loops shared loads (one
    /// dot product, or one run of axpy, per element): [`gemm`] must give
    /// its bits.
    #[allow(clippy::too_many_arguments)]
    fn gemm_one_at_a_time(
        ta: bool,
        tb: bool,
        m: usize,
        n: usize,
        k: usize,
        alpha: f32,
        a: &[f32],
        b: &[f32],
        beta: f32,
        c: &mut [f32],
    ) {
        let c = &mut c[..m * n];
        let out = |s: f32, c: f32| if beta == 0.0 { s } else { beta * c + s };
        match (ta, tb) {
            (false, true) | (true, true) if k == 0 => {
                for cij in c.iter_mut() {
                    *cij = out(alpha * 0.0, *cij);
                }
            }
            (false, true) => {
                for (i, crow) in c.chunks_exact_mut(n).enumerate() {
                    for (j, cij) in crow.iter_mut().enumerate() {
                        let s = dot(&a[i * k..(i + 1) * k], &b[j * k..(j + 1) * k]);
                        *cij = out(alpha * s, *cij);
                    }
                }
            }
            (true, false) | (false, false) if k == 0 => scale_or_zero(c, beta),
            (true, false) | (false, false) => {
                for (i, crow) in c.chunks_exact_mut(n).enumerate() {
                    for p in 0..k {
                        let aip = if ta { a[p * m + i] } else { a[i * k + p] };
                        let s = alpha * aip;
                        let brow = &b[p * n..(p + 1) * n];
                        for (cij, bj) in crow.iter_mut().zip(brow) {
                            *cij = match (p, beta == 0.0, beta == 1.0) {
                                (0, true, _) => s * *bj,
                                (0, false, false) => beta * *cij + s * *bj,
                                _ => *cij + s * *bj,
                            };
                        }
                    }
                }
            }
            (true, true) => {
                for (i, crow) in c.chunks_exact_mut(n).enumerate() {
                    for (j, cij) in crow.iter_mut().enumerate() {
                        let mut s = 0.0;
                        for p in 0..k {
                            s += a[p * m + i] * b[j * k + p];
                        }
                        *cij = out(alpha * s, *cij);
                    }
                }
            }
        }
    }

    /// Values with zeros of both signs among mixed signs and magnitudes:
    /// products that are −0 and sums that cancel exercise every sign rule.
    fn with_zeros(n: usize, seed: u64) -> std::vec::Vec<f32> {
        let mut r = crate::Rng::new(seed);
        (0..n)
            .map(|i| match r.below(5) {
                0 => 0.0,
                1 => -0.0,
                _ => ([1e-3, 1.0, 1e3][i % 3] * r.normal()) as f32,
            })
            .collect()
    }

    /// Every shape class (odd and even sizes, fewer rows than a group,
    /// dot products of one block and of several, tails), β ∈ {0, 1, other},
    /// NaN in C when β = 0, every choice of loops (a microcontroller's
    /// included): the bits of one element at a time.
    #[test]
    fn gemm_is_bit_for_bit_one_element_at_a_time() {
        let mut seed = 0;
        for (m, n, k) in [
            (1, 32, 64),
            (1, 10, 32),
            (10, 32, 1),
            (32, 64, 1),
            (1, 32, 10),
            (3, 5, 11),
            (9, 7, 3),
            (17, 13, 2),
            (2, 3, 7),
            (1, 1, 1),
            (4, 3, 0),
            (5, 9, 8),
            (2, 17, 24),
            (3, 4, 40),
            (2, 5, 130),
            (1, 3, 300),
            (11, 19, 9),
        ] {
            for (ta, tb) in [(false, true), (true, false), (false, false), (true, true)] {
                for (alpha, beta) in [(1.0f32, 0.0f32), (0.7, 1.0), (-1.3, 0.45), (1.0, -0.0)] {
                    seed += 1;
                    let a = with_zeros(m * k, seed);
                    let b = with_zeros(k * n, seed + 1000);
                    let c0: std::vec::Vec<f32> = if beta == 0.0 {
                        std::vec![f32::NAN; m * n]
                    } else {
                        with_zeros(m * n, seed + 2000)
                    };
                    let mut want = c0.clone();
                    gemm_one_at_a_time(ta, tb, m, n, k, alpha, &a, &b, beta, &mut want);
                    for (mcu, wide) in [(false, false), (false, true), (true, false), (true, true)]
                    {
                        let mut got = c0.clone();
                        gemm_loops(mcu, wide, ta, tb, m, n, k, alpha, &a, &b, beta, &mut got);
                        for (i, (w, g)) in want.iter().zip(&got).enumerate() {
                            assert_eq!(
                                w.to_bits(),
                                g.to_bits(),
                                "{ta} {tb} m {m} n {n} k {k} α {alpha} β {beta} mcu {mcu} \
                                 wide {wide}: element {i}"
                            );
                        }
                    }
                }
            }
        }
    }

    /// Two dot products at a time are each [`dot_lanes`], bit for bit,
    /// zeros and their signs included (all-zero products make lanes and
    /// whole sums zero).
    #[test]
    fn dot_lanes2_is_dot_lanes_twice() {
        for n in 0..=70 {
            for seed in 0..4 {
                let x = with_zeros(n, 10 * n as u64 + seed);
                let y0 = with_zeros(n, 1000 + 10 * n as u64 + seed);
                let mut y1 = with_zeros(n, 2000 + 10 * n as u64 + seed);
                if seed == 3 {
                    // −0 products only
                    y1.iter_mut().for_each(|v| *v = -0.0);
                }
                let (s0, s1) = dot_lanes2(&x, &y0, &y1);
                assert_eq!(s0.to_bits(), dot_lanes(&x, &y0).to_bits(), "n {n}");
                assert_eq!(s1.to_bits(), dot_lanes(&x, &y1).to_bits(), "n {n}");
            }
        }
    }

    /// The products' quick check never hides a non-finite entry, and
    /// finite entries whose products overflow are still finite.
    #[test]
    fn finite_check_with_overflowing_products() {
        for n in [0, 1, 31, 32, 33, 64, 100, 2410] {
            let mut x = std::vec![3e30f32; n];
            assert!(
                all_finite(&x),
                "n {n}: products overflow, entries are finite"
            );
            x.iter_mut().step_by(2).for_each(|v| *v = -*v);
            assert!(all_finite(&x));
            for i in (0..n).step_by(7) {
                for bad in [f32::INFINITY, f32::NEG_INFINITY, f32::NAN] {
                    let mut y = x.clone();
                    y[i] = bad;
                    assert!(!all_finite(&y), "n {n}: {bad} at {i}");
                    // next to a zero (∞·0 is NaN) and to a tiny value
                    let mut z = std::vec![0.0f32; n];
                    z[i] = bad;
                    assert!(!all_finite(&z), "n {n}: {bad} at {i} among zeros");
                }
            }
        }
    }
}
