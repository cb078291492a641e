//! The host's run of the device's fine-tuning, and the bit-for-bit
//! comparison of what the device logged with it.

use std::fmt::Write as _;

use fdgr_kernel::finetune::{Learner, Memory, Mode};
use fdgr_kernel::{export, stream, Method};

use crate::fw_config;

/// FNV-1a over the little-endian bytes of bit patterns (as the firmware
/// hashes θ).
pub fn fnv1a_bits(bits: &[u32]) -> u32 {
    let bytes: Vec<u8> = bits.iter().flat_map(|b| b.to_le_bytes()).collect();
    export::fnv1a(&bytes)
}

/// The host's run of the device's fine-tuning: same model file, same
/// stream, same configuration, same
/// [`fdgr_kernel::finetune::Learner::step_planned`] on the models the
/// firmware plans from the same file; `opt` is the index of the optimizer
/// in [`fw_config::OPTIMIZER_NAMES`]; pixels divided by
/// [`fw_config::DEFAULT_PIXEL_MAX`]. Returns the loss bits of every step and
/// the final θ's bits.
pub fn replay(
    model: &[u8],
    samples: &[u8],
    method: Method<f32>,
    mode: Mode,
    opt: usize,
) -> Result<(Vec<u32>, Vec<u32>), String> {
    replay_lr(
        model,
        samples,
        method,
        mode,
        opt,
        None,
        fw_config::DEFAULT_PIXEL_MAX,
    )
}

/// [`replay`] with the learning rate `lr` where the firmware was built
/// with one (`FDGR_LR`) instead of the optimizer's default, and pixels
/// divided by `pixel_max` (`FDGR_PIXEL_MAX`).
pub fn replay_lr(
    model: &[u8],
    samples: &[u8],
    method: Method<f32>,
    mode: Mode,
    opt: usize,
    lr: Option<f32>,
    pixel_max: f32,
) -> Result<(Vec<u32>, Vec<u32>), String> {
    match opt {
        0 => replay_with(
            model,
            samples,
            fw_config::learner(
                method,
                mode,
                fw_config::SGD,
                lr.unwrap_or(fw_config::LR),
                pixel_max,
            ),
            0,
        ),
        _ => replay_with(
            model,
            samples,
            fw_config::learner(
                method,
                mode,
                fw_config::ADAM,
                lr.unwrap_or(fw_config::ADAM_LR),
                pixel_max,
            ),
            2,
        ),
    }
}

fn replay_with<P: fdgr_kernel::Optim<f32> + Copy>(
    model: &[u8],
    samples: &[u8],
    mut learner: Learner<f32, P>,
    opt_state: usize,
) -> Result<(Vec<u32>, Vec<u32>), String> {
    let mode = learner.mode;
    let method = learner.method;
    let models = fw_config::plan(model, mode).map_err(|e| format!("model: {e}"))?;
    let mut frozen = vec![0.0f32; models.params()];
    export::decode_theta(model, &mut frozen).map_err(|e| format!("model: {e}"))?;
    let lens = fw_config::buffer_lens(&models, method, opt_state);
    // The trained parameters (all of θ, or the mode's subset).
    let mut theta = vec![0.0f32; models.trained_params()];
    models
        .gather(&frozen, &mut theta)
        .map_err(|e| format!("model: {e}"))?;
    let d = models.inputs();
    let rec = stream::record_len(d);
    if samples.len() % rec != 0 {
        return Err(format!(
            "samples: {} bytes, not whole samples of {rec} bytes (the model's {d} inputs and a label)",
            samples.len()
        ));
    }
    let b = fw_config::BATCH;
    let mut dir = vec![0.0f32; lens.trained];
    let mut point = vec![0.0f32; lens.point];
    let mut point2 = vec![0.0f32; lens.point2];
    let mut ws = vec![0.0f32; lens.ws];
    let mut x = vec![0.0f32; lens.x];
    let mut feats = vec![0.0f32; lens.feats];
    let mut y = vec![0u32; b];
    let (mut s0, mut s1) = (vec![0.0f32; lens.state], vec![0.0f32; lens.state]);
    let mut losses = vec![];
    let records: Vec<&[u8]> = samples.chunks_exact(rec).collect();
    for (i, _) in records.iter().enumerate() {
        // The batch: the most recent samples, oldest first, as the
        // device's ring gives them.
        let window = &records[(i + 1).saturating_sub(learner.batch.min(b))..=i];
        for (k, r) in window.iter().enumerate() {
            fdgr_kernel::ring::pixels_into(&r[..d], learner.pixel_max, &mut x[k * d..(k + 1) * d]);
            y[k] = u32::from(r[d]);
        }
        let mem = Memory {
            theta: &mut theta,
            frozen: Some(&frozen),
            dir: &mut dir,
            point: if point.is_empty() {
                None
            } else {
                Some(&mut point[..])
            },
            point2: if point2.is_empty() {
                None
            } else {
                Some(&mut point2[..])
            },
            state: if lens.state > 0 {
                [Some(&mut s0[..]), Some(&mut s1[..])]
            } else {
                [None, None]
            },
            ws: &mut ws,
            x: &mut x,
            feats: &mut feats,
            y: &mut y,
        };
        let loss = learner
            .step_planned(&models, window.len(), mem)
            .map_err(|e| format!("host replay, step {i}: {e}"))?;
        losses.push(loss.to_bits());
    }
    let mut full = frozen.clone();
    models
        .scatter(&theta, &mut full)
        .map_err(|e| format!("host replay: {e}"))?;
    Ok((losses, full.iter().map(|t| t.to_bits()).collect()))
}

/// The device's losses and weights against the host's, bit for bit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Comparison {
    /// Losses compared.
    pub losses: usize,
    /// Weights compared.
    pub weights: usize,
    /// Steps whose loss differs.
    pub bad_losses: Vec<usize>,
    /// Weights that differ.
    pub bad_weights: Vec<usize>,
    /// The first differing loss and weight, described.
    pub first: String,
}

impl Comparison {
    /// Every loss and every weight is bit-identical.
    pub fn identical(&self) -> bool {
        self.bad_losses.is_empty() && self.bad_weights.is_empty()
    }
}

/// Compares the device's loss and weight bits with the host's. Different
/// counts are an error; different bits are reported in the result (+0 and
/// −0 differ).
pub fn compare(
    dev_losses: &[u32],
    dev_theta: &[u32],
    losses: &[u32],
    theta: &[u32],
) -> Result<Comparison, String> {
    if dev_losses.len() != losses.len() || dev_theta.len() != theta.len() {
        return Err(format!(
            "device logged {} losses and {} weights, host has {} and {}",
            dev_losses.len(),
            dev_theta.len(),
            losses.len(),
            theta.len()
        ));
    }
    let bad_losses: Vec<usize> = (0..losses.len())
        .filter(|&i| dev_losses[i] != losses[i])
        .collect();
    let bad_weights: Vec<usize> = (0..theta.len())
        .filter(|&i| dev_theta[i] != theta[i])
        .collect();
    let mut first = String::new();
    if let Some(&i) = bad_losses.first() {
        let _ = write!(
            first,
            "; first loss: step {i}: device {:#010x} ({}), host {:#010x} ({})",
            dev_losses[i],
            f32::from_bits(dev_losses[i]),
            losses[i],
            f32::from_bits(losses[i])
        );
    }
    if let Some(&i) = bad_weights.first() {
        let _ = write!(
            first,
            "; first weight: θ[{i}]: device {:#010x}, host {:#010x}",
            dev_theta[i], theta[i]
        );
    }
    Ok(Comparison {
        losses: losses.len(),
        weights: theta.len(),
        bad_losses,
        bad_weights,
        first,
    })
}

impl std::fmt::Display for Comparison {
    /// `bit-identical: …` or `… differ in …`, with the first differences.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.identical() {
            write!(
                f,
                "bit-identical: {} of {} losses and {} of {} weights",
                self.losses, self.losses, self.weights, self.weights
            )
        } else {
            write!(
                f,
                "device and host differ in {} of {} losses and {} of {} weights{}",
                self.bad_losses.len(),
                self.losses,
                self.bad_weights.len(),
                self.weights,
                self.first
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compare_is_bitwise() {
        assert!(compare(&[1, 2], &[3, 4, 5], &[1, 2], &[3, 4, 5])
            .unwrap()
            .identical());
        // One bit anywhere, or a missing value, fails.
        let c = compare(&[1, 2], &[3, 4, 5], &[1, 3], &[3, 4, 5]).unwrap();
        assert_eq!(c.bad_losses, vec![1]);
        assert!(c.to_string().contains("1 of 2 losses"));
        assert!(!compare(&[1, 2], &[3, 4, 5], &[1, 2], &[3, 4, 4])
            .unwrap()
            .identical());
        assert!(compare(&[1, 2], &[3, 4, 5], &[1, 2], &[3, 4]).is_err());
        // +0 and −0 are equal floats but different bits.
        assert!(!compare(&[0x8000_0000], &[], &[0], &[]).unwrap().identical());
    }

    #[test]
    fn hash_matches_kernel_fnv1a() {
        let bits = [0x3f80_0000u32, 7];
        let bytes: Vec<u8> = bits.iter().flat_map(|b| b.to_le_bytes()).collect();
        assert_eq!(fnv1a_bits(&bits), export::fnv1a(&bytes));
    }

    #[test]
    fn replay_of_the_committed_model_moves_it() {
        let fw =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../firmware-examples/models");
        let model = std::fs::read(fw.join("digits-64-32-10.fdgr")).unwrap();
        let stream = std::fs::read(fw.join("digits-stream.bin")).unwrap();
        let fgr = fw_config::method("fgr").unwrap();
        let (l, t) = replay(&model, &stream, fgr, Mode::Full, 0).unwrap();
        assert_eq!(l.len(), 64);
        assert_eq!(t.len(), 2410);
        // Deterministic, and the last layer alone leaves the rest as it was.
        assert_eq!(
            replay(&model, &stream, fgr, Mode::Full, 0).unwrap(),
            (l, t.clone())
        );
        let (_, t2) = replay(&model, &stream, fgr, Mode::LAST_LAYER, 0).unwrap();
        let mut th = vec![0.0f32; 2410];
        export::decode(&model, None, &mut th).unwrap();
        assert!(t2[..2080].iter().zip(&th).all(|(a, b)| *a == b.to_bits()));
        assert_ne!(t2[2080..], t[2080..]);
    }
}
