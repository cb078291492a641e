//! A small deterministic random number generator (SplitMix64): one `u64`
//! of state, so it is trivially checkpointed, and the same stream on every
//! target. Used for initialisation, shuffling and synthetic problems.

use crate::model::{Init, Node};
use crate::real::Real;
use crate::shape::Shape;

/// SplitMix64 (Steele, Lea, Flood 2014).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Rng {
    /// The whole state.
    pub state: u64,
}

impl Rng {
    /// A generator seeded with `seed`.
    pub const fn new(seed: u64) -> Rng {
        Rng { state: seed }
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1) with 53 random bits.
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform integer in [0, n) (n > 0; Lemire's multiply-shift, bias < 2⁻⁴⁰
    /// for the sizes used here).
    pub fn below(&mut self, n: usize) -> usize {
        (((self.next_u64() >> 32) * n as u64) >> 32) as usize
    }

    /// Standard normal (Box–Muller, one value per call).
    pub fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.uniform();
        let u2 = self.uniform();
        let r = libm::sqrt(-2.0 * libm::log(u1));
        r * libm::cos(2.0 * core::f64::consts::PI * u2)
    }

    /// Fisher–Yates shuffle.
    pub fn shuffle<T>(&mut self, xs: &mut [T]) {
        for i in (1..xs.len()).rev() {
            let j = self.below(i + 1);
            xs.swap(i, j);
        }
    }
}

/// PyTorch's default `nn.Linear` initialisation: weights and biases
/// uniform in ±1/√(fan_in).
pub fn init_mlp<F: Real>(shape: &Shape, theta: &mut [F], rng: &mut Rng) {
    for l in 1..=shape.layers() {
        let bound = 1.0 / libm::sqrt(shape.dim(l - 1) as f64);
        let o = shape.weight_offset(l);
        let n = shape.dim(l) * (shape.dim(l - 1) + 1);
        for t in theta[o..o + n].iter_mut() {
            *t = F::from_f64((2.0 * rng.uniform() - 1.0) * bound);
        }
    }
}

/// PyTorch's default initialisation of a planned model's parameters, as
/// each layer's tensors say ([`Op::tensors`](crate::model::Op::tensors)):
/// `Linear` and `Conv2d` weights and biases uniform in ±1/√(fan_in)
/// (fan_in = inputs, or (C/groups)·k² for a convolution: what
/// `kaiming_uniform_(a=√5)` gives), batch-norm γ = 1 and β = 0. Draws in
/// θ order, so an MLP gets exactly [`init_mlp`]'s values. A layer that
/// trains part of its parameters (its last ones, as its bias) has that
/// part initialised.
pub fn init_params<F: Real>(nodes: &[Node], theta: &mut [F], rng: &mut Rng) {
    for n in nodes {
        let p = &mut theta[n.param_off..n.param_off + n.param_len];
        for (t, r) in n.trained_tensors() {
            let part = &mut p[r];
            match t.init {
                Init::Uniform { fan_in } => {
                    let bound = 1.0 / libm::sqrt(fan_in as f64);
                    for x in part.iter_mut() {
                        *x = F::from_f64((2.0 * rng.uniform() - 1.0) * bound);
                    }
                }
                Init::Ones => part.fill(F::ONE),
                Init::Zeros => part.fill(F::ZERO),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reproducible_and_in_range() {
        let mut a = Rng::new(7);
        let mut b = Rng::new(7);
        for _ in 0..1000 {
            let (x, y) = (a.uniform(), b.uniform());
            assert_eq!(x, y);
            assert!((0.0..1.0).contains(&x));
            assert!(a.below(10) < 10);
            b.below(10);
        }
        let mut v = [0usize, 1, 2, 3, 4, 5, 6, 7];
        Rng::new(1).shuffle(&mut v);
        let mut s = v;
        s.sort_unstable();
        assert_eq!(s, [0, 1, 2, 3, 4, 5, 6, 7]);
        assert_ne!(v, [0, 1, 2, 3, 4, 5, 6, 7]);
    }

    #[test]
    fn normal_moments() {
        let mut r = Rng::new(3);
        let n = 20000;
        let (mut s, mut s2) = (0.0, 0.0);
        for _ in 0..n {
            let z = r.normal();
            s += z;
            s2 += z * z;
        }
        let m = s / n as f64;
        assert!(m.abs() < 0.03, "mean {m}");
        assert!((s2 / n as f64 - 1.0).abs() < 0.05);
    }
}
