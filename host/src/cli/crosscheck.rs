//! `fdgr crosscheck`: every method on the GPU against the CPU kernel.

use super::args::shape;
use anyhow::{bail, Result};
use clap::Args;
use fdgr::exit::bad_input;

/// `fdgr crosscheck`.
#[derive(Args, Debug)]
#[command(after_help = after_help!(
    "Example:\n  fdgr crosscheck --model 784-512-512-10 --act tanh --batch 128 --steps 20"
))]
pub struct CrossArgs {
    /// Layer widths
    #[arg(long, default_value = "784-512-512-10")]
    pub model: String,
    /// Hidden activation
    #[arg(long, default_value = "tanh")]
    pub act: String,
    /// Batch size
    #[arg(long, default_value_t = 128)]
    pub batch: usize,
    /// Steps per method
    #[arg(long, default_value_t = 20)]
    pub steps: usize,
    /// TF32 products on the GPU (tolerance 1e-2 instead of 1e-4)
    #[arg(long)]
    pub tf32: bool,
}

fn prepare(a: &CrossArgs) -> Result<fdgr_kernel::Shape> {
    let shape = shape(&a.model, &a.act)?;
    if a.batch == 0 || a.steps == 0 {
        bail!("--batch and --steps must be at least 1");
    }
    fdgr::gpu::probe()?;
    Ok(shape)
}

/// `fdgr crosscheck`: one JSON line per method; fails (exit code 1) when a
/// method is outside the tolerance.
pub fn run(a: &CrossArgs) -> Result<()> {
    let shape = prepare(a).map_err(bad_input)?;
    let rows = fdgr::gpu::crosscheck(shape, a.batch, a.steps, a.tf32)?;
    for r in &rows {
        println!("{}", r.to_json());
    }
    let failed: Vec<&str> = rows
        .iter()
        .filter(|r| !r.passed)
        .map(|r| r.method)
        .collect();
    if !failed.is_empty() {
        bail!("cross-check failed for {}", failed.join(", "));
    }
    eprintln!(
        "cross-check passed: {} methods within {:e}",
        rows.len(),
        rows.first().map_or(0.0, |r| r.tolerance)
    );
    Ok(())
}
