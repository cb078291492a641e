//! Buffer plans and operation counts: where everything lives in device
//! memory, and how many floating-point operations a step issues.
//!
//! Device memory of a [`crate::GpuTrainer`], in f32 scalars, for P
//! parameters, a largest batch B and a model whose layout
//! (`fdgr_kernel::model::Layout`) has V values and R R-values per sample
//! and E, E_R fixed scratch:
//!
//! | buffer | scalars |
//! |---|---|
//! | θ, d | 2P |
//! | optimizer state (momentum; Adam's m, v) | P or 2P |
//! | point (fgr, bgr, sam, usam), point₂ (cgr) | P each |
//! | workspace (the kernel's layout) | 2·B·V + E, plus E_R + B·(R + V) for `db` |
//! | running statistics (batch norm) | 2 per channel |
//! | batch-norm sums | 5·C of the widest batch norm |
//! | im2col + GEMM scratch (no cuDNN) | ≤ [`crate::memory::CONV_SCRATCH_CAP`] |
//! | mini-batch inputs, labels | B·n₀ + B |
//! | scalars (losses, partial sums, per-row losses, [`ScalarPlan`]) | 16 + 1024 + B |
//! | resident data set | S·(n₀ + 1) for S samples |
//!
//! That is the kernel's RAM formula (method.rs, `Model::workspace_len`)
//! plus the batch, the data and the device scratch.

use fdgr_kernel::model::{Model, Node};
use fdgr_kernel::Method;

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
    pub const ROW_LOSS: usize = Self::PARTIALS + crate::grid::DOT_BLOCKS as usize;

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

/// Multiply-adds of the products (dense layers and convolutions) of one
/// gradient on a batch of `b`: the forward pass, the weight gradients (as
/// many) and the input gradients (as many, except the first layer's):
/// about 3 forward passes.
pub fn grad_macs(model: &Model<Vec<Node>>, b: usize) -> u64 {
    let mut m = 0u64;
    for n in model.nodes() {
        let mn = (b * fdgr_kernel::model::macs(&n.op, n.in_dims, n.out_dims)) as u64;
        m += if active_input(model, n) {
            3 * mn
        } else {
            2 * mn
        };
    }
    m
}

/// Whether node `n`'s input depends on θ (then its backward and R-passes
/// take the products with the input's delta).
fn active_input(model: &Model<Vec<Node>>, n: &Node) -> bool {
    match n.input {
        fdgr_kernel::model::Ref::Input => false,
        fdgr_kernel::model::Ref::Node(j) => model.nodes().get(j).is_some_and(|m| m.active),
    }
}

/// Multiply-adds of the products of one R-pass (the kernel's
/// `hessian_vector`): a layer reading the input needs 2 products (R{x} =
/// 0), every other layer 6.
pub fn rpass_macs(model: &Model<Vec<Node>>, b: usize) -> u64 {
    let mut m = 0u64;
    for n in model.nodes() {
        let mn = (b * fdgr_kernel::model::macs(&n.op, n.in_dims, n.out_dims)) as u64;
        m += if active_input(model, n) {
            6 * mn
        } else {
            2 * mn
        };
    }
    m
}

/// Floating-point operations (2 per multiply-add) of the products of one
/// training step of `method` on a batch of `b`; the elementwise kernels
/// are not counted. This is the numerator of the GFLOP/s figures.
pub fn step_flops(model: &Model<Vec<Node>>, b: usize, method: &Method<f32>) -> f64 {
    let g = grad_macs(model, b);
    let macs = match method {
        Method::Db { .. } => g + rpass_macs(model, b),
        m => g * m.gradient_evals() as u64,
    };
    2.0 * macs as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use fdgr_kernel::{Act, Loss};

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
            crate::grid::DOT_BLOCKS as usize
        );
        assert_eq!(p.len(), ScalarPlan::ROW_LOSS + 128);
    }

    #[test]
    fn flop_counts_match_the_paper() {
        // one hidden layer of n and inputs n: sgd 3 products per hidden layer
        // (the first layer has no input gradient), db 9 per hidden layer
        // (4 for the input layer), fgr twice sgd
        let sh = fdgr_kernel::Shape::try_new(&[100, 100, 100], Act::Tanh, Loss::Mse).unwrap();
        let s = crate::memory::mlp_model(&sh).unwrap();
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
