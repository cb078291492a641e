//! Losses on a mini-batch of B outputs (rows of K values): their mean value,
//! the gradient with respect to the outputs, and the loss Hessian applied to
//! a direction (the first step of the R-operator's backward pass).

use crate::error::Error;
use crate::real::Real;

/// A loss on the network outputs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Loss {
    /// Softmax cross-entropy, mean over the batch (PyTorch `CrossEntropyLoss`).
    SoftmaxCe,
    /// Squared error, mean over all B·K entries (PyTorch `MSELoss`).
    Mse,
}

impl Loss {
    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            Loss::SoftmaxCe => "ce",
            Loss::Mse => "mse",
        }
    }

    /// Parses `ce` / `mse`.
    pub fn from_name(s: &str) -> Option<Loss> {
        match s {
            "ce" | "cross-entropy" | "softmax-ce" => Some(Loss::SoftmaxCe),
            "mse" => Some(Loss::Mse),
            _ => None,
        }
    }
}

/// Targets of a mini-batch.
#[derive(Clone, Copy, Debug)]
pub enum Targets<'a, F> {
    /// One class index per sample (cross-entropy; one-hot for MSE).
    Classes(&'a [u32]),
    /// K real targets per sample, row-major (MSE only).
    Values(&'a [F]),
}

impl<F> Targets<'_, F> {
    /// Number of samples these targets describe, given K outputs.
    pub fn samples(&self, k: usize) -> usize {
        match self {
            Targets::Classes(c) => c.len(),
            Targets::Values(v) => v.len() / k.max(1),
        }
    }
}

/// Checks targets against a batch of `b` samples with `k` outputs.
pub(crate) fn check_targets<F>(
    loss: Loss,
    t: &Targets<'_, F>,
    b: usize,
    k: usize,
) -> Result<(), Error> {
    match t {
        Targets::Classes(c) => {
            crate::error::check_len("targets", b, c.len())?;
            for &y in c.iter() {
                if y as usize >= k {
                    return Err(Error::LabelOutOfRange {
                        label: y,
                        classes: k as u32,
                    });
                }
            }
            Ok(())
        }
        Targets::Values(v) => {
            if loss == Loss::SoftmaxCe {
                return Err(Error::InvalidConfig("cross-entropy needs class targets"));
            }
            crate::error::check_len("targets", b * k, v.len())
        }
    }
}

#[inline]
fn target_of<F: Real>(t: &Targets<'_, F>, row: usize, k: usize, j: usize) -> F {
    match t {
        Targets::Classes(c) => {
            if c[row] as usize == j {
                F::ONE
            } else {
                F::ZERO
            }
        }
        Targets::Values(v) => v[row * k + j],
    }
}

/// max_j z_j and log Σ_j e^{z_j − max}. On a microcontroller (bare-metal
/// ARM) one copy, out of line, serves the loss, its gradient and its
/// Hessian-vector product, and its e^x calls libm's function instead of
/// an inlined copy: that keeps kilobytes of flash; inlined elsewhere.
#[cfg_attr(all(target_arch = "arm", target_os = "none"), inline(never))]
#[cfg_attr(not(all(target_arch = "arm", target_os = "none")), inline)]
fn log_sum_exp<F: Real>(z: &[F]) -> (F, F) {
    let mut m = z[0];
    for &v in &z[1..] {
        m = m.max(v);
    }
    let mut s = F::ZERO;
    for &v in z {
        s += (v - m).exp();
    }
    (m, s.ln())
}

/// Mean loss of `out` (B × K) and, when `delta` is given, δ = ∂L/∂out
/// (which includes the 1/B of the mean). Targets must have been checked.
pub fn loss_grad<F: Real>(
    loss: Loss,
    out: &[F],
    t: &Targets<'_, F>,
    k: usize,
    mut delta: Option<&mut [F]>,
) -> F {
    let b = out.len() / k;
    let inv_b = F::ONE / F::from_usize(b);
    let mut total = F::ZERO;
    match loss {
        Loss::SoftmaxCe => {
            for (r, z) in out.chunks_exact(k).enumerate() {
                // −log p_y = log Σ e^{z_j} − z_y = (m − z_y) + log Σ e^{z_j − m}:
                // grouped so that a confident, correct prediction (z_y = m)
                // loses no digits to cancellation.
                let (m, ls) = log_sum_exp(z);
                let y = match t {
                    Targets::Classes(c) => c[r] as usize,
                    Targets::Values(_) => 0,
                };
                total += (m - z[y]) + ls;
                if let Some(d) = delta.as_deref_mut() {
                    let d = &mut d[r * k..(r + 1) * k];
                    for (j, (dj, zj)) in d.iter_mut().zip(z).enumerate() {
                        let p = ((*zj - m) - ls).exp();
                        let yj = if j == y { F::ONE } else { F::ZERO };
                        *dj = (p - yj) * inv_b;
                    }
                }
            }
            total * inv_b
        }
        Loss::Mse => {
            let inv_n = F::ONE / F::from_usize(b * k);
            let two_inv_n = F::TWO * inv_n;
            for (r, z) in out.chunks_exact(k).enumerate() {
                for (j, zj) in z.iter().enumerate() {
                    let e = *zj - target_of(t, r, k, j);
                    total += e * e;
                    if let Some(d) = delta.as_deref_mut() {
                        d[r * k + j] = two_inv_n * e;
                    }
                }
            }
            total * inv_n
        }
    }
}

/// `h_out = H_loss · r` where H_loss = ∂²L/∂out² (B × K, block-diagonal by
/// sample). Cross-entropy: (p ⊙ r − p·(pᵀr))/B per row; MSE: 2r/(B·K).
pub fn loss_hvp<F: Real>(loss: Loss, out: &[F], k: usize, r: &[F], h_out: &mut [F]) {
    let b = out.len() / k;
    let inv_b = F::ONE / F::from_usize(b);
    match loss {
        Loss::SoftmaxCe => {
            for ((z, rr), h) in out
                .chunks_exact(k)
                .zip(r.chunks_exact(k))
                .zip(h_out.chunks_exact_mut(k))
            {
                // p once per output, kept in h until pᵀr is known
                let (m, ls) = log_sum_exp(z);
                let mut pr = F::ZERO;
                for ((hj, zj), rj) in h.iter_mut().zip(z).zip(rr) {
                    let p = ((*zj - m) - ls).exp();
                    *hj = p;
                    pr += p * *rj;
                }
                for (hj, rj) in h.iter_mut().zip(rr) {
                    *hj = *hj * (*rj - pr) * inv_b;
                }
            }
        }
        Loss::Mse => {
            let two_inv_n = F::TWO / F::from_usize(b * k);
            for (h, rj) in h_out.iter_mut().zip(r) {
                *h = two_inv_n * *rj;
            }
        }
    }
}

/// Index of the largest value (first one on ties).
pub fn argmax<F: Real>(z: &[F]) -> usize {
    let mut best = 0;
    for (j, v) in z.iter().enumerate() {
        if *v > z[best] {
            best = j;
        }
    }
    best
}

/// Accuracy helper: number of rows of `out` (B × k) whose arg-max equals the
/// class label.
pub fn correct<F: Real>(out: &[F], k: usize, labels: &[u32]) -> usize {
    out.chunks_exact(k)
        .zip(labels)
        .filter(|(z, &y)| argmax(z) == y as usize)
        .count()
}
