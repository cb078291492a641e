//! Convolutions on a device without cuDNN: im2col + GEMM (the kernels of
//! `gpu/kernels/conv.cu` around [`Device::gemm`]), a chunk of samples at a
//! time in a scratch buffer. With cuDNN present ([`Device::native_conv`])
//! the device runs them itself and none of this is used.
//!
//! For a chunk of `nc` samples and group `grp`, with the column matrix
//! `col` ((C/G)·k² rows × nc·OH·OW columns, conv.cu) and the output's
//! gradient in channel-major layout `dyᵀ` (K × nc·OH·OW):
//!
//! ```text
//! forward          tmp_grp = α·W_grp·col            then y ← β·y + tmp (from_cnp)
//! backward data    dcol = α·W_grpᵀ·dyᵀ_grp          then dx ← β·dx + col2im(dcol)
//! backward filter  dW_grp ← β′·dW_grp + α·dyᵀ_grp·colᵀ   (β′ = β, then 1)
//! ```
//!
//! Each is the kernel's `serial::conv` product with its sums in another
//! order (cuBLAS's): the tests bound the difference by the rounding of
//! two summation orders.

use crate::device::{ConvKind, ConvOp, DPtr, Device};
use crate::error::GpuError;
use crate::launchers;
use fdgr_kernel::serial::ConvGeom;

type R = Result<(), GpuError>;

/// Scratch scalars per sample of a convolution's chunk: the column matrix
/// of one group ((C/G)·k²·OH·OW) and the K·OH·OW of the channel-major
/// output (or output gradient).
pub fn scratch_per_sample(g: &ConvGeom) -> usize {
    (g.cg() * g.k * g.k + g.k_out) * g.oh * g.ow
}

/// The largest scratch a convolution on a batch of `b` is given: at most
/// `cap` scalars, at least one sample's worth.
pub fn scratch_len(g: &ConvGeom, cap: usize) -> usize {
    let per = scratch_per_sample(g);
    per * (cap / per.max(1)).clamp(1, g.n.max(1))
}

/// Runs `op` with im2col + GEMM in `scratch` (`len` scalars, at least
/// [`scratch_per_sample`]).
pub fn run<D: Device>(d: &mut D, op: &ConvOp, scratch: DPtr, len: usize) -> R {
    let g = &op.g;
    let per = scratch_per_sample(g);
    if len < per {
        return Err(GpuError::Input(format!(
            "convolution scratch of {len} scalars, need {per}"
        )));
    }
    let chunk = (len / per).clamp(1, g.n.max(1));
    let ohw = g.oh * g.ow;
    let (cgkk, kg) = (g.cg() * g.k * g.k, g.kg());
    let mut n0 = 0;
    while n0 < g.n {
        let nc = chunk.min(g.n - n0);
        let cols = nc * ohw;
        match op.kind {
            ConvKind::Forward => {
                let (col, tmp) = (scratch, scratch.at(cgkk * cols));
                for grp in 0..g.groups {
                    launchers::im2col(d, g, op.a, col, n0, nc, grp)?;
                    let w = op.b.at(grp * kg * cgkk);
                    let t = tmp.at(grp * kg * cols);
                    launchers::gemm(d, false, false, kg, cols, cgkk, op.alpha, w, col, 0.0, t)?;
                }
                launchers::from_cnp(d, tmp, op.out, n0, nc, g.k_out, ohw, op.beta)?;
            }
            ConvKind::BackwardData => {
                let (dyt, dcol) = (scratch, scratch.at(g.k_out * cols));
                launchers::to_cnp(d, op.a, dyt, n0, nc, g.k_out, ohw)?;
                for grp in 0..g.groups {
                    let w = op.b.at(grp * kg * cgkk);
                    let dy = dyt.at(grp * kg * cols);
                    launchers::gemm(d, true, false, cgkk, cols, kg, op.alpha, w, dy, 0.0, dcol)?;
                    launchers::col2im(d, g, dcol, op.out, n0, nc, grp, op.beta)?;
                }
            }
            ConvKind::BackwardFilter => {
                let (dyt, col) = (scratch, scratch.at(g.k_out * cols));
                launchers::to_cnp(d, op.b, dyt, n0, nc, g.k_out, ohw)?;
                let beta = if n0 == 0 { op.beta } else { 1.0 };
                for grp in 0..g.groups {
                    launchers::im2col(d, g, op.a, col, n0, nc, grp)?;
                    let dy = dyt.at(grp * kg * cols);
                    let dw = op.out.at(grp * kg * cgkk);
                    launchers::gemm(d, false, true, kg, cgkk, cols, op.alpha, dy, col, beta, dw)?;
                }
            }
        }
        n0 += nc;
    }
    Ok(())
}
