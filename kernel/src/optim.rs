//! The optimizer every method hands its direction d to, as a per-element
//! rule with state vectors ([`Optim`]): SGD exactly as PyTorch's
//! `torch.optim.SGD` computes it (momentum, dampening 0, Nesterov, coupled
//! weight decay), Adam and AdamW as `torch.optim.Adam` / `AdamW` do (bias
//! correction, ε outside the square root, coupled or decoupled weight
//! decay); and learning-rate schedules.
//!
//! A backend applies any rule with one function
//! ([`crate::VecSpace::opt_update`]: one fused kernel on a GPU), given the
//! step's constants ([`OptElem`]) and up to two state vectors.
//!
//! Rounding: every rule follows PyTorch's order of operations (its `lerp`,
//! `addcmul` and `addcdiv` included, with the step's scalars computed in
//! f64 as Python does), so "the same rule as PyTorch" holds exactly; equal
//! bits with PyTorch's float32 also need its fusion of multiply-adds, which
//! this code does not assume.

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
        OptElem {
            rule: Rule::Sgd,
            lr,
            momentum: self.momentum,
            nesterov: self.nesterov,
            weight_decay: self.weight_decay,
            first: steps_done == 0,
            ..OptElem::none()
        }
    }
}

/// Which per-element rule an [`OptElem`] applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Rule {
    /// SGD ([`sgd_elem`]).
    Sgd,
    /// Adam with coupled weight decay ([`adam_elem`]).
    Adam,
    /// AdamW: decoupled weight decay.
    AdamW,
}

impl Rule {
    /// Every rule, in the order of their codes ([`Rule::code`]).
    pub const ALL: [Rule; 3] = [Rule::Sgd, Rule::Adam, Rule::AdamW];

    /// Its name (the optimizer's that applies it: `sgd`, `adam`, `adamw`);
    /// the GPU's CUDA C knows it as `RULE_<NAME>`.
    pub const fn name(self) -> &'static str {
        match self {
            Rule::Sgd => "sgd",
            Rule::Adam => "adam",
            Rule::AdamW => "adamw",
        }
    }

    /// The number a GPU kernel receives for it: its place in [`Rule::ALL`].
    pub const fn code(self) -> i32 {
        self as i32
    }
}

/// The constants of one update, as the elementwise kernel sees them (one
/// struct for every rule; a rule reads its own fields).
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct OptElem<F> {
    /// The rule.
    pub rule: Rule,
    /// Learning rate η of this step.
    pub lr: F,
    /// Momentum μ (SGD).
    pub momentum: F,
    /// Nesterov (SGD).
    pub nesterov: bool,
    /// Weight decay λ.
    pub weight_decay: F,
    /// First update: SGD's momentum buffer is set to d rather than μ·v + d.
    pub first: bool,
    /// β₁ (Adam).
    pub beta1: F,
    /// β₂ (Adam).
    pub beta2: F,
    /// ε (Adam, added outside the square root).
    pub eps: F,
    /// 1 − β₁, the `lerp` weight of the first moment (Adam).
    pub one_minus_beta1: F,
    /// 1 − β₂ (Adam).
    pub one_minus_beta2: F,
    /// η / (1 − β₁ᵗ) (Adam).
    pub step_size: F,
    /// √(1 − β₂ᵗ) (Adam).
    pub bc2_sqrt: F,
    /// 1 − η·λ, AdamW's decay factor.
    pub decay: F,
}

impl<F: Real> OptElem<F> {
    /// Every field zero (a base for struct updates).
    pub const fn none() -> Self {
        OptElem {
            rule: Rule::Sgd,
            lr: F::ZERO,
            momentum: F::ZERO,
            nesterov: false,
            weight_decay: F::ZERO,
            first: false,
            beta1: F::ZERO,
            beta2: F::ZERO,
            eps: F::ZERO,
            one_minus_beta1: F::ZERO,
            one_minus_beta2: F::ZERO,
            step_size: F::ZERO,
            bc2_sqrt: F::ZERO,
            decay: F::ONE,
        }
    }
}

/// The SGD update's constants (the fields of [`OptElem`] SGD reads).
pub type SgdElem<F> = OptElem<F>;

/// Adam / AdamW hyper-parameters (PyTorch's names and conventions,
/// amsgrad off).
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Adam<F> {
    /// β₁: decay of the first moment.
    pub beta1: F,
    /// β₂: decay of the second moment.
    pub beta2: F,
    /// ε, added to √v̂ (outside the square root).
    pub eps: F,
    /// Weight decay λ.
    pub weight_decay: F,
    /// Decoupled weight decay (AdamW: θ ← θ·(1 − ηλ) first) rather than
    /// coupled (Adam: d ← d + λθ).
    pub decoupled: bool,
}

impl<F: Real> Adam<F> {
    /// PyTorch's `Adam` defaults: β = (0.9, 0.999), ε = 1e-8, λ = 0.
    pub fn adam_defaults() -> Self {
        Adam {
            beta1: F::from_f64(0.9),
            beta2: F::from_f64(0.999),
            eps: F::from_f64(1e-8),
            weight_decay: F::ZERO,
            decoupled: false,
        }
    }

    /// PyTorch's `AdamW` defaults: β = (0.9, 0.999), ε = 1e-8, λ = 0.01.
    pub fn adamw_defaults() -> Self {
        Adam {
            weight_decay: F::from_f64(0.01),
            decoupled: true,
            ..Adam::adam_defaults()
        }
    }
}

/// An optimizer: a per-element rule, its state vectors and the constants
/// of each update.
pub trait Optim<F: Real> {
    /// Parameter-sized state vectors it keeps (SGD: 1 with momentum, else
    /// 0; Adam: 2).
    fn state_vectors(&self) -> usize;
    /// Checks the hyper-parameters.
    fn validate(&self) -> Result<(), Error>;
    /// The constants of update number `steps_done + 1` at learning rate `lr`.
    fn rule_elem(&self, lr: F, steps_done: u64) -> OptElem<F>;
    /// `sgd`, `adam` or `adamw`.
    fn name(&self) -> &'static str;
    /// The names of its state vectors, in order ([`Optim::state_vectors`]
    /// of them): PyTorch's state keys (`momentum`; `exp_avg`,
    /// `exp_avg_sq`), what a checkpoint stores them under.
    fn state_names(&self) -> &'static [&'static str];
}

impl<F: Real> Optim<F> for Sgd<F> {
    fn state_vectors(&self) -> usize {
        self.needs_momentum() as usize
    }
    fn validate(&self) -> Result<(), Error> {
        Sgd::validate(self)
    }
    fn rule_elem(&self, lr: F, steps_done: u64) -> OptElem<F> {
        self.elem(lr, steps_done)
    }
    fn name(&self) -> &'static str {
        "sgd"
    }
    fn state_names(&self) -> &'static [&'static str] {
        if self.needs_momentum() {
            &["momentum"]
        } else {
            &[]
        }
    }
}

impl<F: Real> Optim<F> for Adam<F> {
    fn state_vectors(&self) -> usize {
        2
    }
    fn validate(&self) -> Result<(), Error> {
        let ok01 = |b: F| b >= F::ZERO && b < F::ONE;
        if !(ok01(self.beta1) && ok01(self.beta2)) {
            return Err(Error::InvalidConfig("adam betas must be in [0, 1)"));
        }
        if !(self.eps >= F::ZERO && self.eps.is_finite()) {
            return Err(Error::InvalidConfig("adam eps must be finite and >= 0"));
        }
        if self.weight_decay < F::ZERO || !self.weight_decay.is_finite() {
            return Err(Error::InvalidConfig("weight decay must be finite and >= 0"));
        }
        Ok(())
    }
    fn rule_elem(&self, lr: F, steps_done: u64) -> OptElem<F> {
        // the step's scalars in f64, as torch.optim computes them in Python
        let t = (steps_done + 1) as i32;
        let (b1, b2) = (self.beta1.to_f64(), self.beta2.to_f64());
        let bc1 = 1.0 - libm::pow(b1, t as f64);
        let bc2 = 1.0 - libm::pow(b2, t as f64);
        let lr64 = lr.to_f64();
        OptElem {
            rule: if self.decoupled {
                Rule::AdamW
            } else {
                Rule::Adam
            },
            lr,
            weight_decay: self.weight_decay,
            beta1: self.beta1,
            beta2: self.beta2,
            eps: self.eps,
            one_minus_beta1: F::from_f64(1.0 - b1),
            one_minus_beta2: F::from_f64(1.0 - b2),
            step_size: F::from_f64(lr64 / bc1),
            bc2_sqrt: F::from_f64(libm::sqrt(bc2)),
            decay: F::from_f64(1.0 - lr64 * self.weight_decay.to_f64()),
            ..OptElem::none()
        }
    }
    fn name(&self) -> &'static str {
        if self.decoupled {
            "adamw"
        } else {
            "adam"
        }
    }
    fn state_names(&self) -> &'static [&'static str] {
        &["exp_avg", "exp_avg_sq"]
    }
}

/// Any of the optimizers.
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Optimizer<F> {
    /// SGD.
    Sgd(Sgd<F>),
    /// Adam or AdamW.
    Adam(Adam<F>),
}

impl<F: Real> Optim<F> for Optimizer<F> {
    fn state_vectors(&self) -> usize {
        match self {
            Optimizer::Sgd(o) => o.state_vectors(),
            Optimizer::Adam(o) => o.state_vectors(),
        }
    }
    fn validate(&self) -> Result<(), Error> {
        match self {
            Optimizer::Sgd(o) => Optim::validate(o),
            Optimizer::Adam(o) => Optim::validate(o),
        }
    }
    fn rule_elem(&self, lr: F, steps_done: u64) -> OptElem<F> {
        match self {
            Optimizer::Sgd(o) => o.rule_elem(lr, steps_done),
            Optimizer::Adam(o) => o.rule_elem(lr, steps_done),
        }
    }
    fn name(&self) -> &'static str {
        match self {
            Optimizer::Sgd(o) => Optim::name(o),
            Optimizer::Adam(o) => Optim::name(o),
        }
    }
    fn state_names(&self) -> &'static [&'static str] {
        match self {
            Optimizer::Sgd(o) => o.state_names(),
            Optimizer::Adam(o) => o.state_names(),
        }
    }
}

/// The hyper-parameters every optimizer draws its own from
/// ([`Optimizer::named`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct OptHyper<F> {
    /// SGD's momentum μ.
    pub momentum: F,
    /// SGD's Nesterov momentum.
    pub nesterov: bool,
    /// Weight decay λ (coupled, or decoupled for AdamW).
    pub weight_decay: F,
    /// Adam's β₁.
    pub beta1: F,
    /// Adam's β₂.
    pub beta2: F,
    /// Adam's ε.
    pub eps: F,
}

impl<F: Real> Optimizer<F> {
    /// Every optimizer's name ([`Optim::name`]).
    pub const NAMES: [&'static str; 3] = ["sgd", "adam", "adamw"];

    /// The optimizer named `name`, its hyper-parameters from `h`.
    pub fn named(name: &str, h: OptHyper<F>) -> Option<Self> {
        let adam = |decoupled| {
            Optimizer::Adam(Adam {
                beta1: h.beta1,
                beta2: h.beta2,
                eps: h.eps,
                weight_decay: h.weight_decay,
                decoupled,
            })
        };
        Some(match name {
            "sgd" => Optimizer::Sgd(Sgd {
                momentum: h.momentum,
                nesterov: h.nesterov,
                weight_decay: h.weight_decay,
            }),
            "adam" => adam(false),
            "adamw" => adam(true),
            _ => return None,
        })
    }

    /// One line about it (what `--optimizer`'s help shows).
    pub fn about(&self) -> &'static str {
        match self {
            Optimizer::Sgd(_) => "SGD (momentum, Nesterov, coupled weight decay), PyTorch's",
            Optimizer::Adam(a) if a.decoupled => "AdamW (decoupled weight decay), PyTorch's",
            Optimizer::Adam(_) => "Adam (coupled weight decay), PyTorch's",
        }
    }

    /// Its name for people: `SGD`, `Adam`, `AdamW`.
    pub fn label(&self) -> &'static str {
        match self {
            Optimizer::Sgd(_) => "SGD",
            Optimizer::Adam(a) if a.decoupled => "AdamW",
            Optimizer::Adam(_) => "Adam",
        }
    }
}

/// The hyper-parameters in words: `momentum 0.9 (Nesterov), weight decay
/// 0.0005`; `betas (0.9, 0.999), eps 1e-8, weight decay 0.01`.
impl<F: Real + core::fmt::Display + core::fmt::LowerExp> core::fmt::Display for Optimizer<F> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Optimizer::Sgd(s) => write!(
                f,
                "momentum {}{}, weight decay {}",
                s.momentum,
                if s.nesterov { " (Nesterov)" } else { "" },
                s.weight_decay
            ),
            Optimizer::Adam(a) => write!(
                f,
                "betas ({}, {}), eps {:e}, weight decay {}",
                a.beta1, a.beta2, a.eps, a.weight_decay
            ),
        }
    }
}

impl<F> From<Sgd<F>> for Optimizer<F> {
    fn from(o: Sgd<F>) -> Self {
        Optimizer::Sgd(o)
    }
}

impl<F> From<Adam<F>> for Optimizer<F> {
    fn from(o: Adam<F>) -> Self {
        Optimizer::Adam(o)
    }
}

/// PyTorch's `lerp(a, b, w)`: a + w·(b − a) for |w| < ½, else
/// b − (b − a)·(1 − w).
#[inline]
pub fn lerp<F: Real>(a: F, b: F, w: F) -> F {
    if w.abs() < F::from_f64(0.5) {
        a + w * (b - a)
    } else {
        b - (b - a) * (F::ONE - w)
    }
}

/// One parameter's Adam / AdamW update in `torch.optim.Adam`'s order of
/// operations (single-tensor path):
///
/// ```text
/// θ ← θ·(1 − ηλ)                                   (AdamW, λ ≠ 0)
/// d ← d + λ·θ                                      (Adam, λ ≠ 0)
/// m ← lerp(m, d, 1 − β₁)
/// v ← v·β₂ + ((1 − β₂)·d)·d
/// θ ← θ + (−η/(1 − β₁ᵗ))·m / (√v / √(1 − β₂ᵗ) + ε)
/// ```
///
/// Returns the new θ; updates `m` and `v` in place (both start at 0).
#[inline]
pub fn adam_elem<F: Real>(theta: F, d: F, m: &mut F, v: &mut F, h: &OptElem<F>) -> F {
    let mut t = theta;
    let mut g = d;
    if h.weight_decay != F::ZERO {
        if h.rule == Rule::AdamW {
            t *= h.decay;
        } else {
            g += h.weight_decay * t;
        }
    }
    *m = lerp(*m, g, h.one_minus_beta1);
    *v = *v * h.beta2 + h.one_minus_beta2 * g * g;
    let denom = v.sqrt() / h.bc2_sqrt + h.eps;
    t + (-h.step_size) * *m / denom
}

/// One parameter's update by any rule; `s0`, `s1` are its state slots
/// (SGD: the momentum in `s0`; Adam: m in `s0`, v in `s1`).
#[inline]
pub fn update_elem<F: Real>(
    theta: F,
    d: F,
    s0: Option<&mut F>,
    s1: Option<&mut F>,
    h: &OptElem<F>,
) -> F {
    match (h.rule, s0, s1) {
        (Rule::Sgd, s0, _) => sgd_elem(theta, d, s0, h),
        (_, Some(m), Some(v)) => adam_elem(theta, d, m, v, h),
        // a rule without its state: no update (the step validated the
        // buffers, so this is not reached)
        _ => theta,
    }
}

/// [`update_elem`] over slices: what every CPU backend runs.
pub fn update_slices<F: Real>(
    theta: &mut [F],
    d: &[F],
    s0: Option<&mut [F]>,
    s1: Option<&mut [F]>,
    h: &OptElem<F>,
) {
    match h.rule {
        Rule::Sgd => sgd_slices(theta, d, s0, h),
        Rule::Adam | Rule::AdamW => {
            if let (Some(m), Some(v)) = (s0, s1) {
                for (((t, di), mi), vi) in
                    theta.iter_mut().zip(d).zip(m.iter_mut()).zip(v.iter_mut())
                {
                    *t = adam_elem(*t, *di, mi, vi, h);
                }
            }
        }
    }
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
        _ if h.weight_decay == F::ZERO => plain_sgd(theta, d, h.lr),
        _ => {
            for (t, di) in theta.iter_mut().zip(d) {
                *t = sgd_elem(*t, *di, None, h);
            }
        }
    }
}

/// θ ← θ − η·d: [`sgd_elem`] without weight decay and momentum, bit for
/// bit, 32 elements per iteration (a core without vector instructions
/// spends less on the loop itself; one at a time without
/// [`crate::serial::vecops::WIDE`]). Out of line, so that the other rules' loops
/// are optimized as they were.
#[inline(never)]
fn plain_sgd<F: Real>(theta: &mut [F], d: &[F], lr: F) {
    if !crate::serial::vecops::WIDE {
        for (t, g) in theta.iter_mut().zip(d) {
            *t -= lr * *g;
        }
        return;
    }
    let n = theta.len().min(d.len());
    let mut tc = theta[..n].chunks_exact_mut(32);
    let mut dc = d[..n].chunks_exact(32);
    for (t, g) in (&mut tc).zip(&mut dc) {
        for l in 0..32 {
            t[l] -= lr * g[l];
        }
    }
    for (t, g) in tc.into_remainder().iter_mut().zip(dc.remainder()) {
        *t -= lr * *g;
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

    /// Hand-computed Adam steps (β₁ = 0.9, β₂ = 0.999, ε = 1e-8, η = 0.1,
    /// θ₀ = 1, no decay). Step 1, d = 2: m = 0.2, v = 0.004, m̂ = 2,
    /// v̂ = 4, θ = 1 − 0.1·2/(2 + 1e-8). Step 2, d = −1: m = 0.18 − 0.1 =
    /// 0.08, v = 0.003996 + 0.001 = 0.004996, m̂ = 0.08/0.19,
    /// v̂ = 0.004996/0.001999.
    #[test]
    fn adam_hand_steps() {
        let a = Adam::<f64>::adam_defaults();
        let (mut m, mut v) = (0.0, 0.0);
        let t1 = adam_elem(1.0, 2.0, &mut m, &mut v, &a.rule_elem(0.1, 0));
        assert!((m - 0.2).abs() < 1e-15 && (v - 0.004).abs() < 1e-15);
        assert!((t1 - (1.0 - 0.1 * 2.0 / (2.0 + 1e-8))).abs() < 1e-14);
        let t2 = adam_elem(t1, -1.0, &mut m, &mut v, &a.rule_elem(0.1, 1));
        assert!((m - 0.08).abs() < 1e-15 && (v - 0.004996).abs() < 1e-15);
        let mh = 0.08 / (1.0 - 0.81);
        let vh = 0.004996 / (1.0 - 0.998001);
        assert!((t2 - (t1 - 0.1 * mh / (vh.sqrt() + 1e-8))).abs() < 1e-14);
        // AdamW decays θ first; Adam adds λθ to d
        let w = Adam {
            weight_decay: 0.5,
            ..Adam::<f64>::adamw_defaults()
        };
        let (mut m, mut v) = (0.0, 0.0);
        let t = adam_elem(2.0, 0.0, &mut m, &mut v, &w.rule_elem(0.1, 0));
        assert!((t - 2.0 * 0.95).abs() < 1e-15, "{t}");
        let c = Adam {
            weight_decay: 0.5,
            ..Adam::<f64>::adam_defaults()
        };
        let (mut m, mut v) = (0.0, 0.0);
        adam_elem(2.0, 0.0, &mut m, &mut v, &c.rule_elem(0.1, 0));
        assert!((m - 0.1).abs() < 1e-15, "{m}");
    }

    /// With β₁ = 0, Adam's step is RMSprop-like: θ − η·d/(√(v/(1−β₂ᵗ)) + ε)
    /// with v the decayed mean of d².
    #[test]
    fn adam_without_momentum_is_rmsprop_like() {
        let a = Adam {
            beta1: 0.0,
            beta2: 0.5,
            eps: 0.0,
            weight_decay: 0.0,
            decoupled: false,
        };
        let (mut m, mut v) = (0.0f64, 0.0f64);
        let mut theta = 0.0;
        let ds = [3.0, -1.0, 2.0];
        let mut vv = 0.0;
        for (t, d) in ds.iter().enumerate() {
            theta = adam_elem(theta, *d, &mut m, &mut v, &a.rule_elem(1.0, t as u64));
            vv = 0.5 * vv + 0.5 * d * d;
            assert!((m - d).abs() < 1e-15);
            assert!((v - vv).abs() < 1e-15);
        }
        let want =
            -(3.0 / 3.0) - (-1.0 / (2.75f64 / 0.75).sqrt()) - 2.0 / (3.375f64 / 0.875).sqrt();
        assert!((theta - want).abs() < 1e-14, "{theta} vs {want}");
    }

    #[test]
    fn lerp_is_pytorchs() {
        assert_eq!(lerp(1.0f64, 3.0, 0.25), 1.5);
        assert_eq!(lerp(1.0f64, 3.0, 0.75), 3.0 - 2.0 * 0.25);
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
