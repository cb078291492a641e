//! The training methods, each written once over [`Objective`]: they differ
//! only in where they ask for gradients and how they combine the answers
//! into the step direction d. [`step`] then hands d to the optimizer.
//!
//! RAM of one training step, in scalars, for P parameters, a batch of B
//! samples and N = n₁ + … + n_L units (add P for the momentum buffer when
//! μ > 0; multiply by 4 for bytes in f32):
//!
//! | method | vectors | workspace | total |
//! |---|---|---|---|
//! | `sgd`, `flood` | θ, d | 2·B·N | 2P + 2BN |
//! | `db` | θ, d | 5·B·N | 2P + 5BN |
//! | `fgr`, `bgr`, `sam`, `usam` | θ, d, point | 2·B·N | 3P + 2BN |
//! | `cgr` | θ, d, point, point₂ | 2·B·N | 4P + 2BN |
//!
//! θ is never perturbed in place: the perturbed point θ + ε·g is written to
//! its own buffer, so θ needs no restoring (restoring by θ − ε·g would not
//! be bit-exact) and a rejected step leaves θ untouched.

use crate::error::{check_len, Error};
use crate::objective::{Objective, Pass};
use crate::optim::{Optim, SgdState};
#[allow(unused_imports)]
use crate::optim::{Optimizer, Sgd};
use crate::real::Real;

/// A training method and its hyper-parameters.
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Method<F> {
    /// d = g.
    Sgd,
    /// Exact GR by double backprop: d = g + γ·H·g (R-operator).
    Db {
        /// GR strength γ.
        gamma: F,
    },
    /// Forward finite-difference GR (the paper's F-GR, an ascent step):
    /// g' = ∇L(θ + ε·g), d = (1 − γ/ε)·g + (γ/ε)·g'.
    Fgr {
        /// GR strength γ.
        gamma: F,
        /// Finite-difference step ε > 0.
        eps: F,
    },
    /// Backward finite-difference GR: `fgr` at the point θ − ε·g.
    Bgr {
        /// GR strength γ.
        gamma: F,
        /// Finite-difference step ε > 0 (applied as −ε).
        eps: F,
    },
    /// Central finite-difference GR: d = g + γ·(g₊ − g₋)/(2ε),
    /// g± = ∇L(θ ± ε·g).
    Cgr {
        /// GR strength γ.
        gamma: F,
        /// Finite-difference step ε > 0.
        eps: F,
    },
    /// SAM: d = ∇L(θ + ρ·g/‖g‖) (d = g when g = 0).
    Sam {
        /// Radius ρ ≥ 0.
        rho: F,
    },
    /// Unnormalized SAM: d = ∇L(θ + ρ·g).
    Usam {
        /// Step ρ.
        rho: F,
    },
    /// Flooding at level b: d = sign(L − b)·g.
    Flood {
        /// Flood level b.
        level: F,
    },
}

impl<F: Real> Method<F> {
    /// Short name (`sgd`, `db`, `fgr`, …).
    pub const fn name(&self) -> &'static str {
        match self {
            Method::Sgd => "sgd",
            Method::Db { .. } => "db",
            Method::Fgr { .. } => "fgr",
            Method::Bgr { .. } => "bgr",
            Method::Cgr { .. } => "cgr",
            Method::Sam { .. } => "sam",
            Method::Usam { .. } => "usam",
            Method::Flood { .. } => "flood",
        }
    }

    /// Every method, in the order of [`Method`]'s variants, with the given
    /// hyper-parameters (γ, ε for the GR methods, ρ for SAM and USAM, b for
    /// flooding).
    pub const fn all(gamma: F, eps: F, rho: F, level: F) -> [Method<F>; 8] {
        [
            Method::Sgd,
            Method::Db { gamma },
            Method::Fgr { gamma, eps },
            Method::Bgr { gamma, eps },
            Method::Cgr { gamma, eps },
            Method::Sam { rho },
            Method::Usam { rho },
            Method::Flood { level },
        ]
    }

    /// One line about the method (what `--method`'s help shows).
    pub const fn about(&self) -> &'static str {
        match self {
            Method::Sgd => "Plain SGD: d = g",
            Method::Db { .. } => {
                "Exact GR by double backprop (Hessian-vector product): d = g + γHg"
            }
            Method::Fgr { .. } => {
                "Forward finite-difference GR (ascent step first; the paper's F-GR)"
            }
            Method::Bgr { .. } => "Backward finite-difference GR (descent step first)",
            Method::Cgr { .. } => "Central finite-difference GR",
            Method::Sam { .. } => "Sharpness-aware minimisation",
            Method::Usam { .. } => "Unnormalised SAM",
            Method::Flood { .. } => "Flooding at level b",
        }
    }

    /// The method named `name` (see [`Method::name`]), its hyper-parameters
    /// taken from `h`.
    pub fn named(name: &str, h: Hyper<F>) -> Option<Self> {
        Self::all(h.gamma, h.eps, h.rho, h.level)
            .into_iter()
            .find(|m| m.name() == name)
    }

    /// Every method's name, in the order of [`Method::all`].
    pub fn names() -> [&'static str; 8] {
        Self::all(F::ZERO, F::ZERO, F::ZERO, F::ZERO).map(|m| m.name())
    }

    /// γ, if it is one of the method's hyper-parameters.
    pub const fn gamma(&self) -> Option<F> {
        match *self {
            Method::Db { gamma }
            | Method::Fgr { gamma, .. }
            | Method::Bgr { gamma, .. }
            | Method::Cgr { gamma, .. } => Some(gamma),
            _ => None,
        }
    }

    /// ε, if it is one of the method's hyper-parameters.
    pub const fn eps(&self) -> Option<F> {
        match *self {
            Method::Fgr { eps, .. } | Method::Bgr { eps, .. } | Method::Cgr { eps, .. } => {
                Some(eps)
            }
            _ => None,
        }
    }

    /// ρ, if it is one of the method's hyper-parameters.
    pub const fn rho(&self) -> Option<F> {
        match *self {
            Method::Sam { rho } | Method::Usam { rho } => Some(rho),
            _ => None,
        }
    }

    /// The flood level b, if it is one of the method's hyper-parameters.
    pub const fn level(&self) -> Option<F> {
        match *self {
            Method::Flood { level } => Some(level),
            _ => None,
        }
    }

    /// Its hyper-parameters by symbol (`γ`, `ε`, `ρ`, `b`), `None` for
    /// those it does not have: what its descriptions list.
    pub const fn hypers(&self) -> [(&'static str, Option<F>); 4] {
        [
            ("γ", self.gamma()),
            ("ε", self.eps()),
            ("ρ", self.rho()),
            ("b", self.level()),
        ]
    }

    /// Its hyper-parameters, `defaults`' for those it does not have.
    pub const fn hyper_or(&self, defaults: Hyper<F>) -> Hyper<F> {
        const fn or<F: Copy>(v: Option<F>, d: F) -> F {
            match v {
                Some(v) => v,
                None => d,
            }
        }
        Hyper {
            gamma: or(self.gamma(), defaults.gamma),
            eps: or(self.eps(), defaults.eps),
            rho: or(self.rho(), defaults.rho),
            level: or(self.level(), defaults.level),
        }
    }

    /// The same method with `h`'s values for the hyper-parameters it has.
    pub fn with_hyper(&self, h: Hyper<F>) -> Self {
        Self::named(self.name(), h).unwrap_or(*self)
    }

    /// Whether γ is one of the method's hyper-parameters.
    pub const fn uses_gamma(&self) -> bool {
        self.gamma().is_some()
    }

    /// Whether ε is one of the method's hyper-parameters.
    pub const fn uses_eps(&self) -> bool {
        self.eps().is_some()
    }

    /// Whether ρ is one of the method's hyper-parameters.
    pub const fn uses_rho(&self) -> bool {
        self.rho().is_some()
    }

    /// Whether the method takes an ascent step that amortized GR can keep
    /// (every method but SGD and flooding, whose direction is the
    /// gradient's).
    pub const fn has_ascent(&self) -> bool {
        !matches!(self, Method::Sgd | Method::Flood { .. })
    }

    /// The method with γ replaced by `gamma` (as a γ warm-up ramps it);
    /// unchanged when it has no γ.
    pub const fn with_gamma(self, gamma: F) -> Self {
        match self {
            Method::Db { .. } => Method::Db { gamma },
            Method::Fgr { eps, .. } => Method::Fgr { gamma, eps },
            Method::Bgr { eps, .. } => Method::Bgr { gamma, eps },
            Method::Cgr { eps, .. } => Method::Cgr { gamma, eps },
            m => m,
        }
    }

    /// Checks the hyper-parameters: finite, ε > 0, ρ ≥ 0.
    pub fn validate(&self) -> Result<(), Error> {
        let fin = |x: F, what| {
            if x.is_finite() {
                Ok(())
            } else {
                Err(Error::InvalidConfig(what))
            }
        };
        match *self {
            Method::Sgd => Ok(()),
            Method::Db { gamma } => fin(gamma, "gamma must be finite"),
            Method::Fgr { gamma, eps }
            | Method::Bgr { gamma, eps }
            | Method::Cgr { gamma, eps } => {
                fin(gamma, "gamma must be finite")?;
                fin(eps, "eps must be finite")?;
                if eps > F::ZERO {
                    Ok(())
                } else {
                    Err(Error::InvalidConfig("eps must be > 0"))
                }
            }
            Method::Sam { rho } | Method::Usam { rho } => {
                fin(rho, "rho must be finite")?;
                if rho >= F::ZERO {
                    Ok(())
                } else {
                    Err(Error::InvalidConfig("rho must be >= 0"))
                }
            }
            Method::Flood { level } => fin(level, "flood level must be finite"),
        }
    }

    /// Parameter-sized scratch vectors the method needs besides θ and d.
    pub const fn scratch_vectors(&self) -> usize {
        match self {
            Method::Sgd | Method::Db { .. } | Method::Flood { .. } => 0,
            Method::Fgr { .. } | Method::Bgr { .. } | Method::Sam { .. } | Method::Usam { .. } => 1,
            Method::Cgr { .. } => 2,
        }
    }

    /// Whether the method needs Hessian-vector products (a 5·B·N workspace).
    pub const fn needs_hvp(&self) -> bool {
        matches!(self, Method::Db { .. })
    }

    /// Gradient evaluations per step (a Hessian-vector product counts as one).
    pub const fn gradient_evals(&self) -> usize {
        match self {
            Method::Sgd | Method::Flood { .. } => 1,
            Method::Cgr { .. } => 3,
            _ => 2,
        }
    }
}

/// The hyper-parameters every method draws its own from
/// ([`Method::named`]): γ and ε for the GR methods, ρ for SAM and USAM, b
/// for flooding.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Hyper<F> {
    /// GR strength γ.
    pub gamma: F,
    /// Finite-difference step ε.
    pub eps: F,
    /// SAM's radius ρ.
    pub rho: F,
    /// Flood level b.
    pub level: F,
}

impl<F: Copy> Hyper<F> {
    /// The fields' names, in the order of [`Hyper::to_array`] and of
    /// [`Method::hypers`]: how flags (`--flood-level`), build variables
    /// (`FDGR_FLOOD_LEVEL`) and summaries (`"flood_level"`) spell them.
    pub const NAMES: [&'static str; 4] = ["gamma", "eps", "rho", "flood_level"];

    /// The fields in the order of [`Hyper::NAMES`].
    pub const fn to_array(&self) -> [F; 4] {
        [self.gamma, self.eps, self.rho, self.level]
    }

    /// The hyper-parameters from their values in the order of
    /// [`Hyper::NAMES`].
    pub const fn from_array([gamma, eps, rho, level]: [F; 4]) -> Self {
        Hyper {
            gamma,
            eps,
            rho,
            level,
        }
    }
}

/// The hyper-parameters in words: `plain gradient`, `γ=0.1`,
/// `γ=0.1 ε=0.01`, `ρ=0.05`, `b=0.02`.
impl<F: Real + core::fmt::Display> core::fmt::Display for Method<F> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let mut sep = "";
        for (name, v) in self.hypers() {
            if let Some(v) = v {
                write!(f, "{sep}{name}={v}")?;
                sep = " ";
            }
        }
        if sep.is_empty() {
            f.write_str("plain gradient")?;
        }
        Ok(())
    }
}

/// sgd: d = g. RAM 2P + 2BN scalars. Returns L(θ).
pub fn sgd<F: Real, O: Objective<F> + ?Sized>(
    o: &mut O,
    theta: &O::Vec,
    d: &mut O::Vec,
) -> Result<F, Error> {
    o.loss_grad(theta, d, F::ONE, F::ZERO, Pass::Train)
}

/// db: d = g + γ·H·g, the exact GR gradient (one gradient, one R-pass).
/// RAM 2P + 5BN scalars. Returns L(θ).
pub fn db<F: Real, O: Objective<F> + ?Sized>(
    o: &mut O,
    theta: &O::Vec,
    d: &mut O::Vec,
    gamma: F,
) -> Result<F, Error> {
    o.loss_grad_gr(theta, d, gamma)
}

/// fgr: g = ∇L(θ); g' = ∇L(θ + ε·g); d = (1 − γ/ε)·g + (γ/ε)·g'.
/// The second gradient is accumulated straight into d, so F-GR needs one
/// parameter-sized buffer (`point`) more than SGD: RAM 3P + 2BN scalars.
/// Returns L(θ).
pub fn fgr<F: Real, O: Objective<F> + ?Sized>(
    o: &mut O,
    theta: &O::Vec,
    d: &mut O::Vec,
    point: &mut O::Vec,
    gamma: F,
    eps: F,
) -> Result<F, Error> {
    let loss = sgd(o, theta, d)?;
    let r = gamma / eps;
    at_point(o, theta, d, point, eps, r, F::ONE - r)?;
    Ok(loss)
}

/// The step every two-gradient method shares: point ← θ + s·d, then
/// d ← β·d + α·∇L(point).
fn at_point<F: Real, O: Objective<F> + ?Sized>(
    o: &mut O,
    theta: &O::Vec,
    d: &mut O::Vec,
    point: &mut O::Vec,
    s: F,
    alpha: F,
    beta: F,
) -> Result<(), Error> {
    o.waxpy(point, theta, s, d);
    o.loss_grad(point, d, alpha, beta, Pass::Probe).map(|_| ())
}

/// bgr: [`fgr`] with ε replaced by −ε (a descent step first). RAM 3P + 2BN.
pub fn bgr<F: Real, O: Objective<F> + ?Sized>(
    o: &mut O,
    theta: &O::Vec,
    d: &mut O::Vec,
    point: &mut O::Vec,
    gamma: F,
    eps: F,
) -> Result<F, Error> {
    fgr(o, theta, d, point, gamma, -eps)
}

/// cgr: d = g + γ·(g₊ − g₋)/(2ε) with g± = ∇L(θ ± ε·g); second-order
/// accurate in ε. RAM 4P + 2BN scalars. Returns L(θ).
pub fn cgr<F: Real, O: Objective<F> + ?Sized>(
    o: &mut O,
    theta: &O::Vec,
    d: &mut O::Vec,
    plus: &mut O::Vec,
    minus: &mut O::Vec,
    gamma: F,
    eps: F,
) -> Result<F, Error> {
    let loss = sgd(o, theta, d)?;
    o.waxpy(plus, theta, eps, d);
    o.waxpy(minus, theta, -eps, d);
    let c = gamma / (F::TWO * eps);
    o.loss_grad(plus, d, c, F::ONE, Pass::Probe)?;
    o.loss_grad(minus, d, -c, F::ONE, Pass::Probe)?;
    Ok(loss)
}

/// sam: d = ∇L(θ + ρ·g/‖g‖); when g = 0 the point is θ. RAM 3P + 2BN.
/// Returns L(θ).
pub fn sam<F: Real, O: Objective<F> + ?Sized>(
    o: &mut O,
    theta: &O::Vec,
    d: &mut O::Vec,
    point: &mut O::Vec,
    rho: F,
) -> Result<F, Error> {
    let loss = sgd(o, theta, d)?;
    let norm = o.dot(d, d).sqrt();
    let scale = if norm > F::ZERO { rho / norm } else { F::ZERO };
    at_point(o, theta, d, point, scale, F::ONE, F::ZERO)?;
    Ok(loss)
}

/// usam: d = ∇L(θ + ρ·g). RAM 3P + 2BN. Returns L(θ).
pub fn usam<F: Real, O: Objective<F> + ?Sized>(
    o: &mut O,
    theta: &O::Vec,
    d: &mut O::Vec,
    point: &mut O::Vec,
    rho: F,
) -> Result<F, Error> {
    let loss = sgd(o, theta, d)?;
    at_point(o, theta, d, point, rho, F::ONE, F::ZERO)?;
    Ok(loss)
}

/// flood: the gradient of |L − b| + b, d = sign(L − b)·g (sign 0 at L = b,
/// as autograd differentiates |·|). RAM 2P + 2BN. Returns L(θ).
pub fn flood<F: Real, O: Objective<F> + ?Sized>(
    o: &mut O,
    theta: &O::Vec,
    d: &mut O::Vec,
    level: F,
) -> Result<F, Error> {
    let loss = sgd(o, theta, d)?;
    if loss < level {
        o.scale(d, -F::ONE);
    } else if loss == level {
        o.scale(d, F::ZERO);
    }
    Ok(loss)
}

/// The buffers of one training step, all parameter-sized.
pub struct Buffers<'a, V: ?Sized> {
    /// Parameters θ (updated by the step).
    pub theta: &'a mut V,
    /// Direction d (scratch).
    pub dir: &'a mut V,
    /// The optimizer's state vectors ([`Optim::state_vectors`] of them):
    /// SGD's momentum in `state[0]` (when μ > 0); Adam's first moment in
    /// `state[0]`, its second in `state[1]`. Start at zero.
    pub state: [Option<&'a mut V>; 2],
    /// Perturbed point (fgr, bgr, cgr, sam, usam).
    pub point: Option<&'a mut V>,
    /// Second perturbed point (cgr).
    pub point2: Option<&'a mut V>,
    /// Amortized GR ([`StepOptions::ascent`]): the stored correction
    /// (fgr, bgr, cgr, db: d − g) or perturbation (sam, usam: the offset
    /// added to θ) that steps without an ascent reuse.
    pub correction: Option<&'a mut V>,
}

/// Whether a step computes its ascent (the second gradient of fgr, bgr,
/// cgr, sam, usam; the Hessian-vector product of db) afresh or reuses the
/// one stored in [`Buffers::correction`] (amortized GR, cost 1 + 1/k
/// gradients per step when the ascent is fresh every k-th step).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Ascent {
    /// Compute it (and store it when a correction buffer is given).
    Fresh,
    /// Reuse the stored one: fgr, bgr, cgr, db take d = g + (stored
    /// d − g), one gradient; sam and usam take d = ∇L(θ + stored
    /// perturbation), one gradient, at the perturbed point (the step's
    /// loss is then L there, and it is that pass that updates batch
    /// norm's running statistics). sgd and flood do not change.
    Reuse,
}

/// What a step does besides the method and the optimizer.
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct StepOptions<F> {
    /// Scale d down to this Euclidean norm when it is longer (PyTorch's
    /// `clip_grad_norm_`: d ← d·c/(‖d‖ + 1e-6)), after the method formed
    /// it.
    pub clip_norm: Option<F>,
    /// Fresh or reused ascent.
    pub ascent: Ascent,
}

impl<F> Default for StepOptions<F> {
    fn default() -> Self {
        StepOptions {
            clip_norm: None,
            ascent: Ascent::Fresh,
        }
    }
}

fn need<'a, V: ?Sized>(b: &'a mut Option<&mut V>, what: &'static str) -> Result<&'a mut V, Error> {
    match b {
        Some(v) => Ok(&mut **v),
        None => Err(Error::MissingBuffer(what)),
    }
}

/// The direction d of `method` at θ on the objective's current batch;
/// returns L(θ). θ is not modified.
pub fn direction<F: Real, O: Objective<F> + ?Sized>(
    o: &mut O,
    method: &Method<F>,
    theta: &O::Vec,
    d: &mut O::Vec,
    point: &mut Option<&mut O::Vec>,
    point2: &mut Option<&mut O::Vec>,
) -> Result<F, Error> {
    match *method {
        Method::Sgd => sgd(o, theta, d),
        Method::Db { gamma } => db(o, theta, d, gamma),
        Method::Fgr { gamma, eps } => fgr(o, theta, d, need(point, "point")?, gamma, eps),
        Method::Bgr { gamma, eps } => bgr(o, theta, d, need(point, "point")?, gamma, eps),
        Method::Cgr { gamma, eps } => {
            let p2 = need(point2, "point2")?;
            cgr(o, theta, d, need(point, "point")?, p2, gamma, eps)
        }
        Method::Sam { rho } => sam(o, theta, d, need(point, "point")?, rho),
        Method::Usam { rho } => usam(o, theta, d, need(point, "point")?, rho),
        Method::Flood { level } => flood(o, theta, d, level),
    }
}

/// The direction with amortized GR: a fresh ascent that stores its
/// correction (or perturbation) in `c`, or a step that reuses it (see
/// [`Ascent`]). A fresh step's d is [`direction`]'s, bit for bit.
#[allow(clippy::too_many_arguments)]
pub fn direction_amortized<F: Real, O: Objective<F> + ?Sized>(
    o: &mut O,
    method: &Method<F>,
    theta: &O::Vec,
    d: &mut O::Vec,
    point: &mut Option<&mut O::Vec>,
    point2: &mut Option<&mut O::Vec>,
    c: &mut O::Vec,
    ascent: Ascent,
) -> Result<F, Error> {
    let perturbs = matches!(method, Method::Sam { .. } | Method::Usam { .. });
    let corrects = matches!(
        method,
        Method::Fgr { .. } | Method::Bgr { .. } | Method::Cgr { .. } | Method::Db { .. }
    );
    match ascent {
        Ascent::Fresh if corrects => {
            // d as the method forms it; c ← d − g
            let loss = match *method {
                Method::Db { gamma } => {
                    // d = g + γHg, and g in c to take the difference
                    let l = o.loss_grad_gr_and_grad(theta, d, c, gamma)?;
                    o.scale(c, -F::ONE);
                    o.axpy(c, F::ONE, d);
                    return Ok(l);
                }
                _ => sgd(o, theta, d)?,
            };
            o.copy(c, d);
            match *method {
                Method::Fgr { gamma, eps } | Method::Bgr { gamma, eps } => {
                    let e = if matches!(method, Method::Bgr { .. }) {
                        -eps
                    } else {
                        eps
                    };
                    let r = gamma / e;
                    at_point(o, theta, d, need(point, "point")?, e, r, F::ONE - r)?;
                }
                Method::Cgr { gamma, eps } => {
                    let plus = need(point, "point")?;
                    o.waxpy(plus, theta, eps, d);
                    let minus = need(point2, "point2")?;
                    o.waxpy(minus, theta, -eps, d);
                    let k = gamma / (F::TWO * eps);
                    o.loss_grad(plus, d, k, F::ONE, Pass::Probe)?;
                    o.loss_grad(minus, d, -k, F::ONE, Pass::Probe)?;
                }
                _ => {}
            }
            o.scale(c, -F::ONE);
            o.axpy(c, F::ONE, d);
            Ok(loss)
        }
        Ascent::Fresh if perturbs => {
            let loss = sgd(o, theta, d)?;
            let s = match *method {
                Method::Sam { rho } => {
                    let norm = o.dot(d, d).sqrt();
                    if norm > F::ZERO {
                        rho / norm
                    } else {
                        F::ZERO
                    }
                }
                Method::Usam { rho } => rho,
                _ => F::ZERO,
            };
            // c ← s·g, the offset; point ← θ + s·g as sam/usam compute it
            o.copy(c, d);
            o.scale(c, s);
            at_point(o, theta, d, need(point, "point")?, s, F::ONE, F::ZERO)?;
            Ok(loss)
        }
        Ascent::Reuse if corrects => {
            let loss = sgd(o, theta, d)?;
            o.axpy(d, F::ONE, c);
            Ok(loss)
        }
        Ascent::Reuse if perturbs => {
            let p = need(point, "point")?;
            o.waxpy(p, theta, F::ONE, c);
            o.loss_grad(p, d, F::ONE, F::ZERO, Pass::Train)
        }
        _ => direction(o, method, theta, d, point, point2),
    }
}

/// One training step: the method's direction on the current batch, then
/// the optimizer's update at learning rate `lr`. Returns L(θ) before the
/// update. `opt` is any [`Optim`]: [`Sgd`], [`crate::optim::Adam`],
/// [`Optimizer`].
///
/// If the loss or the direction is not finite, returns
/// [`Error::NonFinite`] and leaves θ, the optimizer's state vectors,
/// `state` and the objective's own state (batch-norm running statistics)
/// exactly as they were; otherwise the objective's state update of the
/// unperturbed pass is committed ([`Objective::commit`]).
pub fn step<F: Real, O: Objective<F> + ?Sized, P: Optim<F> + ?Sized>(
    o: &mut O,
    method: &Method<F>,
    opt: &P,
    state: &mut SgdState,
    lr: F,
    b: Buffers<'_, O::Vec>,
) -> Result<F, Error> {
    step_with(o, method, opt, state, lr, &StepOptions::default(), b)
}

/// [`step`] with gradient clipping and amortized GR ([`StepOptions`]).
pub fn step_with<F: Real, O: Objective<F> + ?Sized, P: Optim<F> + ?Sized>(
    o: &mut O,
    method: &Method<F>,
    opt: &P,
    state: &mut SgdState,
    lr: F,
    x: &StepOptions<F>,
    b: Buffers<'_, O::Vec>,
) -> Result<F, Error> {
    method.validate()?;
    opt.validate()?;
    if !lr.is_finite() {
        return Err(Error::InvalidConfig("learning rate must be finite"));
    }
    if let Some(c) = x.clip_norm {
        if !(c > F::ZERO && c.is_finite()) {
            return Err(Error::InvalidConfig(
                "clip norm must be positive and finite",
            ));
        }
    }
    let Buffers {
        theta,
        dir,
        state: [s0, s1],
        mut point,
        mut point2,
        correction,
    } = b;
    let p = o.param_count();
    check_len("theta", p, o.len(theta))?;
    check_len("direction", p, o.len(dir))?;
    for (buf, what) in [
        (&point, "point"),
        (&point2, "point2"),
        (&s0, "optimizer state"),
        (&s1, "optimizer state"),
        (&correction, "correction"),
    ] {
        if let Some(v) = buf {
            check_len(what, p, o.len(v))?;
        }
    }
    let k = opt.state_vectors();
    if (k >= 1 && s0.is_none()) || (k >= 2 && s1.is_none()) {
        return Err(Error::MissingBuffer(if k == 1 {
            "momentum"
        } else {
            "optimizer state (two vectors)"
        }));
    }
    let loss = match correction {
        Some(c) => {
            direction_amortized(o, method, theta, dir, &mut point, &mut point2, c, x.ascent)?
        }
        None if x.ascent == Ascent::Reuse => return Err(Error::MissingBuffer("correction")),
        None => direction(o, method, theta, dir, &mut point, &mut point2)?,
    };
    let loss = o.end_direction(dir, loss)?;
    if let Some(c) = x.clip_norm {
        let n = o.dot(dir, dir).sqrt();
        let coef = c / (n + F::from_f64(1e-6));
        if coef < F::ONE {
            o.scale(dir, coef);
        }
    }
    let h = opt.rule_elem(lr, state.steps);
    o.finish_step(theta, dir, s0, s1, loss, &h, state.steps)?;
    state.steps += 1;
    Ok(loss)
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: Hyper<f64> = Hyper {
        gamma: 0.1,
        eps: 0.2,
        rho: 0.3,
        level: 0.4,
    };
    const D: Hyper<f64> = Hyper {
        gamma: 1.0,
        eps: 2.0,
        rho: 3.0,
        level: 4.0,
    };

    /// `hyper_or` reads a method's own values and the defaults for the
    /// others; `with_hyper` replaces exactly the ones it has.
    #[test]
    fn hyper_or_and_with_hyper() {
        assert_eq!(Hyper::from_array(H.to_array()), H);
        for m in Method::all(H.gamma, H.eps, H.rho, H.level) {
            let h = m.hyper_or(D).to_array();
            for (i, (_, own)) in m.hypers().into_iter().enumerate() {
                let want = if own.is_some() {
                    H.to_array()[i]
                } else {
                    D.to_array()[i]
                };
                assert_eq!(h[i], want, "{} {}", m.name(), Hyper::<f64>::NAMES[i]);
            }
            let n = m.with_hyper(D);
            assert_eq!(n.name(), m.name());
            assert_eq!(
                n.hyper_or(H),
                Method::named(m.name(), D).unwrap().hyper_or(H)
            );
            for (i, (_, own)) in n.hypers().into_iter().enumerate() {
                assert_eq!(own, m.hypers()[i].1.map(|_| D.to_array()[i]));
            }
        }
    }
}
