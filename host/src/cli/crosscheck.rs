//! `fdgr crosscheck`: every method on the GPU against the CPU kernel.

use super::args::arch_of;
use anyhow::{anyhow, bail, Result};
use clap::Args;
use fdgr::config::Precision;
use fdgr::exit::bad_input;
use fdgr_kernel::finetune::Mode;

/// `fdgr crosscheck`.
#[derive(Args, Debug)]
#[command(after_help = after_help!(
    "Examples:\n  fdgr crosscheck --model 784-512-512-10 --act tanh --batch 128 --steps 20\n  \
    fdgr crosscheck --model resnet20 --input 3x32x32 --classes 10 --batch 128 --steps 20\n  \
    fdgr crosscheck --model resnet20 --input 3x32x32 --classes 10 --train-layers last:2"
))]
pub struct CrossArgs {
    /// The network (as `fdgr train --model`: widths, a preset or a layer list)
    #[arg(long, default_value = "784-512-512-10")]
    pub model: String,
    /// Hidden activation (MLPs and LeNet)
    #[arg(long, default_value = "tanh")]
    pub act: String,
    /// Input shape CxHxW for presets and layer lists (MLP widths give their own)
    #[arg(long, default_value = "3x32x32")]
    pub input: String,
    /// Classes for presets and layer lists
    #[arg(long, default_value_t = 10)]
    pub classes: usize,
    /// Batch size
    #[arg(long, default_value_t = 128)]
    pub batch: usize,
    /// Steps per method
    #[arg(long, default_value_t = 20)]
    pub steps: usize,
    /// CPU threads of the reference (0 = all cores)
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// TF32 products on the GPU (tolerance 1e-2 instead of 1e-4)
    #[arg(long)]
    pub tf32: bool,
    /// Arithmetic of the GPU's products: f32 (tolerance 1e-4), tf32 (1e-2),
    /// bf16 (5e-2)
    #[arg(long, value_enum, default_value_t = Precision::F32)]
    pub precision: Precision,
    /// Train only these parameters, the others frozen (as `fdgr train
    /// --train-layers`: full, last, last:K, bias, layers:I,J); the methods
    /// with an exact Hessian product are left out then
    #[arg(long, default_value = "full")]
    pub train_layers: String,
}

fn prepare(a: &CrossArgs) -> Result<(fdgr::arch::Arch, Mode)> {
    let arch = arch_of(&a.model, &a.act, &a.input, a.classes)?;
    if a.batch == 0 || a.steps == 0 {
        bail!("--batch and --steps must be at least 1");
    }
    let mode = Mode::parse(&a.train_layers).ok_or_else(|| {
        anyhow!(
            "--train-layers {}: expected full, last, last:K, bias or layers:I,J",
            a.train_layers
        )
    })?;
    // the subset exists in this model (before any GPU is touched)
    fdgr::backend::marked_model(&arch.model, &arch.layers, mode)?;
    fdgr::gpu::probe()?;
    Ok((arch, mode))
}

/// `fdgr crosscheck`: one JSON line per method; fails (exit code 1) when a
/// method is outside the tolerance.
pub fn run(a: &CrossArgs) -> Result<()> {
    let (arch, mode) = prepare(a).map_err(bad_input)?;
    let precision = a.precision.gpu(a.tf32);
    let (pool, threads) = fdgr::cpu::pool(a.threads)?;
    let rows =
        pool.install(|| fdgr::gpu::crosscheck(&arch, mode, a.batch, a.steps, precision, threads))?;
    for r in &rows {
        println!("{}", r.to_json());
    }
    let failed: Vec<&str> = rows
        .iter()
        .filter(|r| !r.passed)
        .map(|r| r.method)
        .collect();
    if !failed.is_empty() {
        return Err(anyhow!("cross-check failed for {}", failed.join(", ")));
    }
    eprintln!(
        "cross-check passed: {} methods within {:e}",
        rows.len(),
        rows.first().map_or(0.0, |r| r.tolerance)
    );
    Ok(())
}
