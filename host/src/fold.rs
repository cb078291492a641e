//! Batch norm folded into the convolution or linear layer before it, for
//! deployment (eval mode), as PyTorch's `fuse_conv_bn_eval`: with
//! s = γ/√(running_var + ε) per output channel, w' = w·s and
//! b' = (b − running_mean)·s + β (b = 0 for a layer without bias). The
//! folded network computes the unfolded one's eval-mode outputs; a device
//! then fine-tunes w' and b' as ordinary parameters (the batch statistics
//! of training mode are gone: one sample at a time has none worth using).
//!
//! Folded here: a batch norm whose input is a convolution or linear layer
//! that nothing else reads, in a plain layer list (no residual joins). The
//! folded network is described by a layer list again (`conv:…,relu,…`), so
//! its model file re-plans from its metadata like any other.

use crate::arch::Arch;
use anyhow::{bail, Result};
use fdgr_kernel::model::{Layer, Node, Op, Ref, Src, BN_EPS};

/// A layer-list entry for `l` (the grammar of `--model`).
fn entry(l: &Layer) -> Result<String> {
    Ok(match l.op {
        Op::Linear { out, bias } => format!("linear:{out}{}", if bias { "" } else { ":nobias" }),
        Op::Conv2d {
            out,
            k,
            stride,
            pad,
            groups,
            bias,
        } => {
            let mut e = format!("conv:{out}:{k}");
            if stride != 1 {
                e.push_str(&format!(":s{stride}"));
            }
            if pad != 0 {
                e.push_str(&format!(":p{pad}"));
            }
            if groups != 1 {
                e.push_str(&format!(":g{groups}"));
            }
            if !bias {
                e.push_str(":nobias");
            }
            e
        }
        Op::Act(a) => a.name().to_string(),
        Op::MaxPool { k, stride, pad } | Op::AvgPool { k, stride, pad } => {
            let name = if matches!(l.op, Op::MaxPool { .. }) {
                "maxpool"
            } else {
                "avgpool"
            };
            let mut e = format!("{name}:{k}");
            if stride != k {
                e.push_str(&format!(":s{stride}"));
            }
            if pad != 0 {
                e.push_str(&format!(":p{pad}"));
            }
            e
        }
        Op::GlobalAvgPool => "gap".into(),
        Op::Flatten => "flatten".into(),
        Op::BatchNorm => "bn".into(),
        Op::Add { .. } => bail!("residual joins cannot be written as a plain layer list"),
    })
}

/// `arch` with θ and the running statistics `state`, its batch norms
/// folded: the folded network and its θ; `None` when it has no batch norm.
pub fn fold(arch: &Arch, theta: &[f32], state: &[f32]) -> Result<Option<(Arch, Vec<f32>)>> {
    let nodes: &[Node] = arch.model.nodes();
    if !nodes.iter().any(|n| matches!(n.op, Op::BatchNorm)) {
        return Ok(None);
    }
    if nodes.iter().any(|n| matches!(n.op, Op::Add { .. }))
        || arch
            .layers
            .iter()
            .enumerate()
            .any(|(i, l)| !(matches!(l.src, Src::Prev) || i == 0 && l.src == Src::Input))
    {
        bail!(
            "model {}: batch norm is folded in plain layer lists only (not residual nets) for now",
            arch.spec
        );
    }
    let mut layers: Vec<Layer> = vec![];
    let mut out_theta: Vec<f32> = vec![];
    let mut i = 0;
    while i < nodes.len() {
        let n = &nodes[i];
        let next_bn = nodes
            .get(i + 1)
            .is_some_and(|m| matches!(m.op, Op::BatchNorm) && m.input == Ref::Node(i));
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
                layers.push(Layer::new(op));
                i += 2;
            }
            (Op::BatchNorm, _) => bail!(
                "model {}: layer {i} (batch norm) does not follow a convolution or linear layer: \
                 it cannot be folded",
                arch.spec
            ),
            _ => {
                out_theta.extend_from_slice(&theta[n.param_off..n.param_off + n.param_len]);
                layers.push(Layer::new(n.op));
                i += 1;
            }
        }
    }
    let spec = layers
        .iter()
        .map(entry)
        .collect::<Result<Vec<_>>>()?
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
