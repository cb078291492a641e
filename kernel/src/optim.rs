//! The optimizer every method hands its direction d to: SGD exactly as
//! PyTorch's `torch.optim.SGD` computes it (momentum, dampening 0, Nesterov,
//! coupled weight decay), and learning-rate schedules.

use crate::error::Error;
use crate::real::Real;

/// SGD hyper-parameters (PyTorch's names and conventions).
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Sgd<F> {
    /// Momentum μ (0 disables the momentum buffer).
    pub momentum: F,
    /// Nesterov momentum.
    pub nesterov: bool,
    /// Coupled weight decay λ: d ← d + λθ.
    pub weight_decay: F,
}

impl<F: Real> Sgd<F> {
    /// Plain SGD: no momentum, no weight decay.
    pub const fn plain() -> Self {
        Sgd {
            momentum: F::ZERO,
            nesterov: false,
            weight_decay: F::ZERO,
        }
    }

    /// The paper's optimizer: momentum 0.9, weight decay 1e-4.
    pub fn paper() -> Self {
        Sgd {
            momentum: F::from_f64(0.9),
            nesterov: false,
            weight_decay: F::from_f64(1e-4),
        }
    }

    /// Whether a momentum buffer (one more parameter-sized vector) is needed.
    pub fn needs_momentum(&self) -> bool {
        self.momentum != F::ZERO
    }

    /// Checks ranges: μ ∈ [0, 1), λ ≥ 0, Nesterov only with μ > 0.
    pub fn validate(&self) -> Result<(), Error> {
        if !(self.momentum >= F::ZERO && self.momentum < F::ONE) {
            return Err(Error::InvalidConfig("momentum must be in [0, 1)"));
        }
        if self.weight_decay < F::ZERO || !self.weight_decay.is_finite() {
            return Err(Error::InvalidConfig("weight decay must be finite and >= 0"));
        }
        if self.nesterov && self.momentum == F::ZERO {
            return Err(Error::InvalidConfig("nesterov needs momentum > 0"));
        }
        Ok(())
    }

    /// The per-element constants of one update at learning rate `lr`;
    /// `steps_done` is the number of updates already applied (PyTorch
    /// initialises the momentum buffer to d on the first one).
    pub fn elem(&self, lr: F, steps_done: u64) -> SgdElem<F> {
        SgdElem {
            lr,
            momentum: self.momentum,
            nesterov: self.nesterov,
            weight_decay: self.weight_decay,
            first: steps_done == 0,
        }
    }
}

/// The constants of one SGD update, as the elementwise kernel sees them.
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct SgdElem<F> {
    /// Learning rate η of this step.
    pub lr: F,
    /// Momentum μ.
    pub momentum: F,
    /// Nesterov.
    pub nesterov: bool,
    /// Weight decay λ.
    pub weight_decay: F,
    /// First update: the momentum buffer is set to d rather than μ·v + d.
    pub first: bool,
}

/// One parameter's SGD update, in PyTorch's order of operations:
///
/// ```text
/// d ← d + λ·θ                        (if λ ≠ 0)
/// v ← d (first step) or μ·v + d      (if μ ≠ 0)
/// d ← d + μ·v (Nesterov) or v        (if μ ≠ 0)
/// θ ← θ − η·d
/// ```
///
/// Returns the new θ; updates `v` in place. Every backend executes exactly
/// this (the GPU kernel mirrors it line by line).
#[inline]
pub fn sgd_elem<F: Real>(theta: F, d: F, v: Option<&mut F>, h: &SgdElem<F>) -> F {
    let mut d = d;
    if h.weight_decay != F::ZERO {
        d += h.weight_decay * theta;
    }
    if let Some(v) = v {
        if h.momentum != F::ZERO {
            *v = if h.first { d } else { h.momentum * *v + d };
            d = if h.nesterov { d + h.momentum * *v } else { *v };
        }
    }
    theta - h.lr * d
}

/// [`sgd_elem`] over slices.
pub fn sgd_slices<F: Real>(theta: &mut [F], d: &[F], momentum: Option<&mut [F]>, h: &SgdElem<F>) {
    match momentum {
        Some(v) if h.momentum != F::ZERO => {
            for ((t, di), vi) in theta.iter_mut().zip(d).zip(v.iter_mut()) {
                *t = sgd_elem(*t, *di, Some(vi), h);
            }
        }
        _ => {
            for (t, di) in theta.iter_mut().zip(d) {
                *t = sgd_elem(*t, *di, None, h);
            }
        }
    }
}

/// Optimizer state that persists between steps (checkpointed by the host).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct SgdState {
    /// Updates applied so far.
    pub steps: u64,
}

/// Shape of the learning-rate curve.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum ScheduleKind {
    /// η_t = η₀.
    Constant,
    /// Cosine annealing to 0 over the steps after warm-up:
    /// η_t = η₀·(1 + cos(π·s/S))/2 (PyTorch `CosineAnnealingLR`, η_min = 0,
    /// stepped once per update).
    Cosine,
}

/// A learning-rate schedule over `total_steps` updates, with an optional
/// linear warm-up: η_t = η₀·(t + 1)/W for t < W.
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Schedule<F> {
    /// Base learning rate η₀.
    pub base_lr: F,
    /// Curve after warm-up.
    pub kind: ScheduleKind,
    /// Warm-up steps W (0 = none).
    pub warmup_steps: u64,
    /// Total number of updates in the run.
    pub total_steps: u64,
}

impl<F: Real> Schedule<F> {
    /// Constant learning rate.
    pub fn constant(lr: F) -> Self {
        Schedule {
            base_lr: lr,
            kind: ScheduleKind::Constant,
            warmup_steps: 0,
            total_steps: 0,
        }
    }

    /// Learning rate of update `t` (0-based).
    pub fn lr(&self, t: u64) -> F {
        if t < self.warmup_steps {
            return self.base_lr * F::from_usize((t + 1) as usize)
                / F::from_usize(self.warmup_steps as usize);
        }
        match self.kind {
            ScheduleKind::Constant => self.base_lr,
            ScheduleKind::Cosine => {
                let span = self.total_steps.saturating_sub(self.warmup_steps).max(1);
                let s = (t - self.warmup_steps).min(span);
                let frac = F::from_f64(s as f64 / span as f64);
                let pi = F::from_f64(core::f64::consts::PI);
                self.base_lr * (F::ONE + (pi * frac).cos()) / F::TWO
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hand-computed PyTorch SGD steps (μ = 0.9, λ = 0.1, η = 0.5, θ₀ = 1):
    /// step 1, d = 2: d' = 2 + 0.1·1 = 2.1; v = 2.1; θ = 1 − 0.5·2.1 = −0.05.
    /// step 2, d = 1: d' = 1 + 0.1·(−0.05) = 0.995; v = 0.9·2.1 + 0.995 = 2.885;
    ///         θ = −0.05 − 0.5·2.885 = −1.4925.
    #[test]
    fn pytorch_momentum_weight_decay() {
        let opt = Sgd {
            momentum: 0.9f64,
            nesterov: false,
            weight_decay: 0.1,
        };
        let mut v = 0.0;
        let t1 = sgd_elem(1.0, 2.0, Some(&mut v), &opt.elem(0.5, 0));
        assert!((t1 - -0.05).abs() < 1e-15 && (v - 2.1).abs() < 1e-15);
        let t2 = sgd_elem(t1, 1.0, Some(&mut v), &opt.elem(0.5, 1));
        assert!((v - 2.885).abs() < 1e-14);
        assert!((t2 - -1.4925).abs() < 1e-14);
    }

    /// Nesterov (μ = 0.5, λ = 0, η = 0.1, θ₀ = 0):
    /// step 1, d = 1: v = 1; d = 1 + 0.5·1 = 1.5; θ = −0.15.
    /// step 2, d = 2: v = 0.5 + 2 = 2.5; d = 2 + 1.25 = 3.25; θ = −0.15 − 0.325 = −0.475.
    #[test]
    fn pytorch_nesterov() {
        let opt = Sgd {
            momentum: 0.5f64,
            nesterov: true,
            weight_decay: 0.0,
        };
        let mut v = 0.0;
        let t1 = sgd_elem(0.0, 1.0, Some(&mut v), &opt.elem(0.1, 0));
        assert!((t1 - -0.15).abs() < 1e-15);
        let t2 = sgd_elem(t1, 2.0, Some(&mut v), &opt.elem(0.1, 1));
        assert!((v - 2.5).abs() < 1e-15);
        assert!((t2 - -0.475).abs() < 1e-15);
    }

    /// First step ignores whatever the buffer held (PyTorch clones d).
    #[test]
    fn first_step_sets_buffer() {
        let opt = Sgd {
            momentum: 0.9f32,
            nesterov: false,
            weight_decay: 0.0,
        };
        let mut v = 123.0;
        let t = sgd_elem(1.0, 0.5, Some(&mut v), &opt.elem(1.0, 0));
        assert_eq!(v, 0.5);
        assert_eq!(t, 0.5);
    }

    #[test]
    fn schedules() {
        let s = Schedule {
            base_lr: 0.1f64,
            kind: ScheduleKind::Cosine,
            warmup_steps: 0,
            total_steps: 100,
        };
        assert!((s.lr(0) - 0.1).abs() < 1e-15);
        assert!((s.lr(50) - 0.05).abs() < 1e-15);
        assert!(s.lr(100).abs() < 1e-15);
        let w = Schedule {
            warmup_steps: 10,
            ..s
        };
        assert!((w.lr(0) - 0.01).abs() < 1e-15);
        assert!((w.lr(9) - 0.1).abs() < 1e-15);
        assert!((w.lr(10) - 0.1).abs() < 1e-15);
        assert!((w.lr(55) - 0.05).abs() < 1e-15);
        assert_eq!(Schedule::constant(0.3f64).lr(77), 0.3);
    }

    #[test]
    fn validation() {
        assert!(Sgd::<f32>::paper().validate().is_ok());
        let bad = Sgd {
            momentum: 1.0f32,
            ..Sgd::paper()
        };
        assert!(bad.validate().is_err());
        let bad = Sgd {
            nesterov: true,
            ..Sgd::<f32>::plain()
        };
        assert!(bad.validate().is_err());
    }
}
