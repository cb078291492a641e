//! Activations, with their derivatives written in terms of the OUTPUT
//! a = σ(z), so no pre-activation has to be stored:
//! σ'(z) as a function of a, and κ = σ''(z)/σ'(z) as a function of a
//! (needed by the R-operator; zero for piecewise-linear activations).

use crate::real::Real;

/// An elementwise activation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Act {
    /// a = z.
    Identity,
    /// a = max(z, 0).
    Relu,
    /// a = tanh z.
    Tanh,
    /// a = 1 / (1 + e^{−z}).
    Sigmoid,
}

impl Act {
    /// σ(z).
    #[inline]
    pub fn f<F: Real>(self, z: F) -> F {
        match self {
            Act::Identity => z,
            Act::Relu => {
                if z > F::ZERO {
                    z
                } else {
                    F::ZERO
                }
            }
            Act::Tanh => z.tanh(),
            Act::Sigmoid => F::ONE / (F::ONE + (-z).exp()),
        }
    }

    /// σ'(z), written as a function of a = σ(z).
    #[inline]
    pub fn df<F: Real>(self, a: F) -> F {
        match self {
            Act::Identity => F::ONE,
            Act::Relu => {
                if a > F::ZERO {
                    F::ONE
                } else {
                    F::ZERO
                }
            }
            Act::Tanh => F::ONE - a * a,
            Act::Sigmoid => a * (F::ONE - a),
        }
    }

    /// κ = σ''(z)/σ'(z) as a function of a = σ(z): tanh −2a, sigmoid 1 − 2a,
    /// identity and ReLU 0. Then σ''(z)·x = κ·σ'(z)·x without a division.
    #[inline]
    pub fn kappa<F: Real>(self, a: F) -> F {
        match self {
            Act::Identity | Act::Relu => F::ZERO,
            Act::Tanh => -(F::TWO * a),
            Act::Sigmoid => F::ONE - F::TWO * a,
        }
    }

    /// True when σ'' ≡ 0 (the R-operator's curvature term vanishes).
    #[inline]
    pub fn is_piecewise_linear(self) -> bool {
        matches!(self, Act::Identity | Act::Relu)
    }

    /// Lower-case name (`relu`, `tanh`, …).
    pub fn name(self) -> &'static str {
        match self {
            Act::Identity => "identity",
            Act::Relu => "relu",
            Act::Tanh => "tanh",
            Act::Sigmoid => "sigmoid",
        }
    }

    /// Parses a lower-case name.
    pub fn from_name(s: &str) -> Option<Act> {
        match s {
            "identity" | "linear" => Some(Act::Identity),
            "relu" => Some(Act::Relu),
            "tanh" => Some(Act::Tanh),
            "sigmoid" => Some(Act::Sigmoid),
            _ => None,
        }
    }
}

/// `z[r, c] += bias[c]`, then a = σ(z), in place (`z` is rows × `bias.len()`).
#[inline]
pub fn bias_act<F: Real>(z: &mut [F], bias: &[F], act: Act) {
    for row in z.chunks_exact_mut(bias.len()) {
        for (v, b) in row.iter_mut().zip(bias) {
            *v = act.f(*v + *b);
        }
    }
}

/// `z[r, c] += bias[c]` (no activation).
#[inline]
pub fn bias_add<F: Real>(z: &mut [F], bias: &[F]) {
    for row in z.chunks_exact_mut(bias.len()) {
        for (v, b) in row.iter_mut().zip(bias) {
            *v += *b;
        }
    }
}

/// Per-channel bias and activation in place on an NCHW block `z`
/// (`z.len()` = N·C·HW): z ← σ(z + bias\[ch\]) (bias optional). With HW = 1
/// this is [`bias_act`] on N rows of C.
#[inline]
pub fn bias_act_chw<F: Real>(z: &mut [F], bias: Option<&[F]>, c: usize, hw: usize, act: Act) {
    #[cfg(not(feature = "conv"))]
    let _ = hw;
    match bias {
        // (a bias over planes only comes from a convolution)
        #[cfg(feature = "conv")]
        Some(b) if hw != 1 => {
            for (i, plane) in z.chunks_exact_mut(hw).enumerate() {
                let bc = b[i % c];
                for v in plane.iter_mut() {
                    *v = act.f(*v + bc);
                }
            }
        }
        Some(b) => bias_act(z, &b[..c], act),
        None => {
            if act != Act::Identity {
                for v in z.iter_mut() {
                    *v = act.f(*v);
                }
            }
        }
    }
}

/// y = σ(x), elementwise (out of place).
#[inline]
pub fn act_map<F: Real>(y: &mut [F], x: &[F], act: Act) {
    for (y, x) in y.iter_mut().zip(x) {
        *y = act.f(*x);
    }
}

/// out = β·out + α·Σ_{n, hw} m[n, ch, hw] per channel of an NCHW block `m`
/// (the bias gradient of a convolution; with HW = 1 exactly [`col_sum`]).
#[inline]
pub fn chan_sum<F: Real>(out: &mut [F], m: &[F], c: usize, hw: usize, alpha: F, beta: F) {
    // (spatial sums only come from convolutions)
    if hw == 1 || cfg!(not(feature = "conv")) {
        return col_sum(&mut out[..c], m, alpha, beta);
    }
    crate::serial::vecops::scale_or_zero(&mut out[..c], beta);
    for (i, plane) in m.chunks_exact(hw).enumerate() {
        let mut s = plane[0];
        for v in &plane[1..] {
            s += *v;
        }
        out[i % c] += alpha * s;
    }
}

/// δz = δa ⊙ σ'(a), in place on `delta`.
#[inline]
pub fn act_backward<F: Real>(delta: &mut [F], a: &[F], act: Act) {
    if act == Act::Identity {
        return;
    }
    for (d, a) in delta.iter_mut().zip(a) {
        *d *= act.df(*a);
    }
}

/// R{a} = σ'(a) ⊙ R{z}.
#[inline]
pub fn r_act<F: Real>(ra: &mut [F], rz: &[F], a: &[F], act: Act) {
    for ((r, z), a) in ra.iter_mut().zip(rz).zip(a) {
        *r = act.df(*a) * *z;
    }
}

/// R{δz} = σ''(z)·R{z}⊙δa + σ'(z)⊙R{δa} = κ(a)·R{z}⊙δz + σ'(a)⊙R{δa},
/// in place on `rd` (holds R{δa} on entry, R{δz} on exit).
#[inline]
pub fn r_act_backward<F: Real>(rd: &mut [F], rz: &[F], a: &[F], dz: &[F], act: Act) {
    match act {
        Act::Identity => {}
        Act::Relu => {
            for (r, a) in rd.iter_mut().zip(a) {
                *r *= act.df(*a);
            }
        }
        Act::Tanh | Act::Sigmoid => {
            for (((r, z), a), d) in rd.iter_mut().zip(rz).zip(a).zip(dz) {
                *r = act.kappa(*a) * *z * *d + act.df(*a) * *r;
            }
        }
    }
}

/// out = β·out + α·Σ_rows m (column sums of a rows × out.len() matrix).
/// β = 0 overwrites `out`.
#[inline]
pub fn col_sum<F: Real>(out: &mut [F], m: &[F], alpha: F, beta: F) {
    let mut rows = m.chunks_exact(out.len());
    if beta != F::ZERO {
        crate::serial::vecops::scale(out, beta);
    } else if let Some(first) = rows.next() {
        // 0 + α·v in one pass, as zeroing then adding gives it (−0 + 0
        // is +0, so the 0 + stays)
        for (o, v) in out.iter_mut().zip(first) {
            *o = F::ZERO + alpha * *v;
        }
    } else {
        out.fill(F::ZERO);
    }
    for row in rows {
        for (o, v) in out.iter_mut().zip(row) {
            *o += alpha * *v;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derivatives_match_numerical() {
        for act in [Act::Identity, Act::Relu, Act::Tanh, Act::Sigmoid] {
            for &z in &[-1.7f64, -0.3, 0.4, 2.2] {
                let h = 1e-5;
                let a = act.f(z);
                let num1 = (act.f(z + h) - act.f(z - h)) / (2.0 * h);
                let num2 = (act.f(z + h) - 2.0 * a + act.f(z - h)) / (h * h);
                assert!((act.df(a) - num1).abs() < 1e-8, "{act:?} σ' at {z}");
                assert!(
                    (act.kappa(a) * act.df(a) - num2).abs() < 1e-4,
                    "{act:?} σ'' at {z}"
                );
            }
        }
    }

    /// Column sums as zeroing (or scaling) and then adding each row give
    /// them, bit for bit: −0 terms, NaN in the output when β = 0.
    #[test]
    fn col_sum_is_zero_then_add() {
        let m: [f32; 12] = [
            -0.0, 1.5, 0.0, -2.0, -0.0, 0.25, 3.0, -0.0, -1e-3, 0.0, 7.0, -0.0,
        ];
        for (cols, alpha, beta) in [
            (4, 1.0f32, 0.0f32),
            (4, -0.5, 0.0),
            (3, 2.0, 1.0),
            (6, 1.0, 0.3),
            (12, -1.0, -0.0),
        ] {
            let start: [f32; 12] = core::array::from_fn(|i| {
                if beta == 0.0 {
                    f32::NAN
                } else {
                    i as f32 - 4.0
                }
            });
            let mut want = start;
            let want = &mut want[..cols];
            crate::serial::vecops::scale_or_zero(want, beta);
            for row in m.chunks_exact(cols) {
                for (o, v) in want.iter_mut().zip(row) {
                    *o += alpha * *v;
                }
            }
            let mut got = start;
            col_sum(&mut got[..cols], &m, alpha, beta);
            for (w, g) in want.iter().zip(&got[..cols]) {
                assert_eq!(w.to_bits(), g.to_bits(), "{cols} cols, α {alpha}, β {beta}");
            }
        }
    }
}
