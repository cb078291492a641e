//! Buffer plans and operation counts: where everything lives in device
//! memory, and how many floating-point operations a step issues.
//!
//! Device memory of a [`crate::GpuTrainer`], in f32 scalars, for P
//! parameters, a largest batch B, N = n₁ + … + n_L units and n₀ inputs:
//!
//! | buffer | scalars |
//! |---|---|
//! | θ, d | 2P |
//! | momentum (μ > 0) | P |
//! | point (fgr, bgr, sam, usam), point₂ (cgr) | P each |
//! | workspace (the kernel's layout, [`WsPlan`]) | 2·B·N, 5·B·N for `db` |
//! | mini-batch inputs, labels | B·n₀ + B |
//! | scalars (losses, partial sums, per-row losses, [`ScalarPlan`]) | 16 + 1024 + B |
//! | resident data set | S·(n₀ + 1) for S samples |
//!
//! That is the kernel's RAM formula (method.rs) plus the batch and the data.

use fdgr_kernel::{Method, Shape};

/// The workspace of one batch: the kernel's layout
/// `[ a | δz | R{z} | R{a} | R{δ} ]`, each B·N scalars (mlp.rs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WsPlan {
    /// Samples in the batch.
    pub batch: usize,
    /// B·N: one per-layer buffer.
    pub per: usize,
    /// Whether the R-operator blocks exist.
    pub hvp: bool,
}

impl WsPlan {
    /// The plan of a batch of `batch` samples.
    pub fn new(shape: &Shape, batch: usize, hvp: bool) -> WsPlan {
        WsPlan {
            batch,
            per: batch * shape.units(),
            hvp,
        }
    }
    /// Offset of the activations a_l.
    pub fn acts(&self) -> usize {
        0
    }
    /// Offset of δz_l.
    pub fn deltas(&self) -> usize {
        self.per
    }
    /// Offset of R{z_l}.
    pub fn rz(&self) -> usize {
        2 * self.per
    }
    /// Offset of R{a_l}.
    pub fn ra(&self) -> usize {
        3 * self.per
    }
    /// Offset of R{δ_l}.
    pub fn rd(&self) -> usize {
        4 * self.per
    }
    /// Scalars used.
    pub fn len(&self) -> usize {
        if self.hvp {
            5 * self.per
        } else {
            2 * self.per
        }
    }
    /// True for an empty batch.
    pub fn is_empty(&self) -> bool {
        self.per == 0
    }
}

/// The small f32 buffer of device-side scalars.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScalarPlan {
    /// Largest batch.
    pub max_batch: usize,
}

impl ScalarPlan {
    /// L(θ) of the current step: the first loss a step computes.
    pub const STEP_LOSS: usize = 0;
    /// The losses a step computes after the first (at perturbed points).
    pub const OTHER_LOSS: usize = 1;
    /// Result of `dot`.
    pub const DOT: usize = 2;
    /// Running loss sum of `evaluate`.
    pub const EVAL_LOSS: usize = 3;
    /// Start of the `dot_partial` partial sums.
    pub const PARTIALS: usize = 16;
    /// Start of the per-row losses.
    pub const ROW_LOSS: usize = Self::PARTIALS + crate::launch::DOT_BLOCKS as usize;

    /// Scalars in the buffer.
    pub fn len(&self) -> usize {
        Self::ROW_LOSS + self.max_batch
    }
    /// Never empty.
    pub fn is_empty(&self) -> bool {
        false
    }
}

/// The u32 flags buffer: `[bad, halted, halted_step_lo, halted_step_hi,
/// correct, check]` (optim.cu: commit_step; loss.cu: count_correct).
pub mod flags {
    /// Non-finite flag of the current check.
    pub const BAD: usize = 0;
    /// Sticky: a deferred step was rejected, later updates are skipped.
    pub const HALTED: usize = 1;
    /// SgdState::steps of the first rejected deferred step (low 32 bits).
    pub const STEP_LO: usize = 2;
    /// High 32 bits of it.
    pub const STEP_HI: usize = 3;
    /// Correct-prediction counter of `evaluate`.
    pub const CORRECT: usize = 4;
    /// Non-finite flag of the synchronous `all_finite` (kept apart from
    /// [`BAD`], which deferred steps rely on being 0 between steps).
    pub const CHECK: usize = 5;
    /// Length of the buffer.
    pub const LEN: usize = 8;
    const _: () = assert!(CORRECT < LEN && CHECK < LEN && STEP_HI < CORRECT);
}

/// Multiply-adds of the matrix products of one gradient (forward and
/// backward) on a batch of `b`: forward Σ B·n_l·n_{l−1}, weight gradients
/// the same, input gradients for l ≥ 2.
pub fn grad_macs(shape: &Shape, b: usize) -> u64 {
    let mut m = 0u64;
    for l in 1..=shape.layers() {
        let mn = (b * shape.dim(l) * shape.dim(l - 1)) as u64;
        m += 2 * mn;
        if l > 1 {
            m += mn;
        }
    }
    m
}

/// Multiply-adds of the matrix products of one R-pass (mlp.rs r_pass):
/// layer 1 needs 2 products (R{a₀} = 0), every other layer 6.
pub fn rpass_macs(shape: &Shape, b: usize) -> u64 {
    let mut m = 0u64;
    for l in 1..=shape.layers() {
        let mn = (b * shape.dim(l) * shape.dim(l - 1)) as u64;
        m += if l == 1 { 2 * mn } else { 6 * mn };
    }
    m
}

/// Floating-point operations (2 per multiply-add) of the matrix products
/// of one training step of `method` on a batch of `b`; the elementwise
/// kernels are not counted. This is the numerator of the GFLOP/s figures.
pub fn step_flops(shape: &Shape, b: usize, method: &Method<f32>) -> f64 {
    let g = grad_macs(shape, b);
    let macs = match method {
        Method::Db { .. } => g + rpass_macs(shape, b),
        m => g * m.gradient_evals() as u64,
    };
    2.0 * macs as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use fdgr_kernel::{Act, Loss};

    #[test]
    fn workspace_equals_kernel_formula() {
        for dims in [
            &[784usize, 512, 512, 10][..],
            &[3072, 512, 512, 512, 10],
            &[4, 3],
            &[4096, 4096, 4096, 10],
        ] {
            let s = Shape::try_new(dims, Act::Relu, Loss::SoftmaxCe).unwrap();
            for b in [1usize, 7, 128, 4096] {
                for hvp in [false, true] {
                    let p = WsPlan::new(&s, b, hvp);
                    assert_eq!(p.len(), s.workspace_len(b, hvp));
                    let blocks = if hvp { 5 } else { 2 };
                    let offs = [p.acts(), p.deltas(), p.rz(), p.ra(), p.rd()];
                    // contiguous, disjoint, in the kernel's order
                    for (i, o) in offs.iter().enumerate().take(blocks) {
                        assert_eq!(*o, i * b * s.units());
                    }
                    // the last layer's block ends exactly at the buffer end
                    let l = s.layers();
                    let end = offs[blocks - 1] + s.unit_offset(l, b) + b * s.dim(l);
                    assert_eq!(end, p.len());
                }
            }
        }
    }

    #[test]
    fn scalars_do_not_overlap() {
        let p = ScalarPlan { max_batch: 128 };
        let singles = [
            ScalarPlan::STEP_LOSS,
            ScalarPlan::OTHER_LOSS,
            ScalarPlan::DOT,
            ScalarPlan::EVAL_LOSS,
        ];
        assert!(singles.iter().all(|&s| s < ScalarPlan::PARTIALS));
        assert_eq!(
            ScalarPlan::ROW_LOSS - ScalarPlan::PARTIALS,
            crate::launch::DOT_BLOCKS as usize
        );
        assert_eq!(p.len(), ScalarPlan::ROW_LOSS + 128);
    }

    #[test]
    fn flop_counts_match_the_paper() {
        // one hidden layer of n and inputs n: sgd 3 products per hidden layer
        // (the first layer has no input gradient), db 9 per hidden layer
        // (4 for the input layer), fgr twice sgd
        let s = Shape::try_new(&[100, 100, 100], Act::Tanh, Loss::Mse).unwrap();
        let mn = 100 * 100 * 8;
        assert_eq!(grad_macs(&s, 8), (2 + 3) * mn);
        assert_eq!(rpass_macs(&s, 8), (2 + 6) * mn);
        let sgd = step_flops(&s, 8, &Method::Sgd);
        assert_eq!(sgd, 2.0 * 5.0 * mn as f64);
        assert_eq!(
            step_flops(
                &s,
                8,
                &Method::Fgr {
                    gamma: 0.1,
                    eps: 0.1
                }
            ),
            2.0 * sgd
        );
        assert_eq!(
            step_flops(
                &s,
                8,
                &Method::Cgr {
                    gamma: 0.1,
                    eps: 0.1
                }
            ),
            3.0 * sgd
        );
        assert_eq!(
            step_flops(&s, 8, &Method::Db { gamma: 0.1 }),
            2.0 * (4 + 9) as f64 * mn as f64
        );
        assert_eq!(step_flops(&s, 8, &Method::Flood { level: 0.1 }), sgd);
    }
}
