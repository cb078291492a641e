//! Batch norm folded into the convolution or linear layer before it, for
//! deployment (eval mode), as PyTorch's `fuse_conv_bn_eval`: with
//! s = γ/√(running_var + ε) per output channel, w' = w·s and
//! b' = (b − running_mean)·s + β (b = 0 for a layer without bias). The
//! folded network computes the unfolded one's eval-mode outputs; a device
//! then fine-tunes w' and b' as ordinary parameters (the batch statistics
//! of training mode are gone: one sample at a time has none worth using).
//!
//! Folded here: a batch norm whose input is a convolution or linear layer
//! that nothing else reads, in any layer list, residual nets included
//! (ResNets' `conv → bn`, shortcut `conv → bn`). The folded network is
//! described by a layer list again (`conv:…,relu,…`, residual joins as
//! `add:I` and `@I`), so its model file re-plans from its metadata like any
//! other. A batch norm after anything else (pre-activation blocks: after
//! an add) cannot be folded, and is refused.

use crate::arch::Arch;
use anyhow::{bail, Result};
use fdgr_kernel::model::{Layer, Node, Op, Ref, Src, BN_EPS};

/// `arch` with θ and the running statistics `state`, its batch norms
/// folded: the folded network and its θ; `None` when it has no batch norm.
pub fn fold(arch: &Arch, theta: &[f32], state: &[f32]) -> Result<Option<(Arch, Vec<f32>)>> {
    let nodes: &[Node] = arch.model.nodes();
    if !nodes.iter().any(|n| matches!(n.op, Op::BatchNorm)) {
        return Ok(None);
    }
    // Which nodes read each node (their input, or the other term of an add).
    let mut readers = vec![0usize; nodes.len()];
    for n in nodes {
        if let Ref::Node(j) = n.input {
            readers[j] += 1;
        }
        if let Op::Add { other } = n.op {
            readers[other] += 1;
        }
    }
    // Where each node is in the folded list (a folded batch norm is its
    // convolution).
    let mut at = vec![0usize; nodes.len()];
    let mut layers: Vec<Layer> = vec![];
    let mut out_theta: Vec<f32> = vec![];
    let mut i = 0;
    while i < nodes.len() {
        let n = &nodes[i];
        let next_bn = nodes
            .get(i + 1)
            .is_some_and(|m| matches!(m.op, Op::BatchNorm) && m.input == Ref::Node(i))
            && readers[i] == 1;
        let src = |layers: &Vec<Layer>| match n.input {
            Ref::Input if layers.is_empty() => Src::Prev,
            Ref::Input => Src::Input,
            Ref::Node(j) if at[j] + 1 == layers.len() => Src::Prev,
            Ref::Node(j) => Src::Node(at[j]),
        };
        match (n.op, next_bn) {
            (Op::Conv2d { out, bias, .. } | Op::Linear { out, bias }, true) => {
                let bn = &nodes[i + 1];
                let fan = n.param_len - if bias { out } else { 0 };
                let per = fan / out;
                let w = &theta[n.param_off..n.param_off + fan];
                let b = bias.then(|| &theta[n.param_off + fan..n.param_off + fan + out]);
                let (gamma, beta) = (
                    &theta[bn.param_off..bn.param_off + out],
                    &theta[bn.param_off + out..bn.param_off + 2 * out],
                );
                let (mean, var) = (
                    &state[bn.state_off..bn.state_off + out],
                    &state[bn.state_off + out..bn.state_off + 2 * out],
                );
                let s: Vec<f64> = (0..out)
                    .map(|c| f64::from(gamma[c]) / (f64::from(var[c]) + BN_EPS).sqrt())
                    .collect();
                for c in 0..out {
                    out_theta.extend(
                        w[c * per..(c + 1) * per]
                            .iter()
                            .map(|&v| (f64::from(v) * s[c]) as f32),
                    );
                }
                for c in 0..out {
                    let b0 = b.map_or(0.0, |b| f64::from(b[c]));
                    out_theta.push(((b0 - f64::from(mean[c])) * s[c] + f64::from(beta[c])) as f32);
                }
                let op = match n.op {
                    Op::Conv2d {
                        out,
                        k,
                        stride,
                        pad,
                        groups,
                        ..
                    } => Op::Conv2d {
                        out,
                        k,
                        stride,
                        pad,
                        groups,
                        bias: true,
                    },
                    _ => Op::Linear { out, bias: true },
                };
                let l = Layer::new(op).from(src(&layers));
                at[i] = layers.len();
                at[i + 1] = layers.len();
                layers.push(l);
                i += 2;
            }
            (Op::BatchNorm, _) => bail!(
                "model {}: layer {i} (batch norm) does not follow a convolution or linear layer \
                 that only it reads: it cannot be folded",
                arch.spec
            ),
            (op, _) => {
                out_theta.extend_from_slice(&theta[n.param_off..n.param_off + n.param_len]);
                let op = match op {
                    Op::Add { other } => Op::Add { other: at[other] },
                    op => op,
                };
                let l = Layer::new(op).from(src(&layers));
                at[i] = layers.len();
                layers.push(l);
                i += 1;
            }
        }
    }
    let spec = layers
        .iter()
        .enumerate()
        .map(|(i, l)| crate::arch::entry_of(i, l))
        .collect::<Vec<_>>()
        .join(",");
    let d = arch.model.input;
    let mut folded = Arch::parse(&spec, arch.act, d, arch.outputs())?;
    if folded.param_count() != out_theta.len() || folded.layers != layers {
        bail!(
            "model {}: the folded layer list {spec} does not re-plan to itself",
            arch.spec
        );
    }
    folded.act = arch.act;
    Ok(Some((folded, out_theta)))
}
