//! `fdgr export`: weights for firmware, in the kernel's FDGR format
//! ([`fdgr_kernel::export`], which the firmware reads): version 2, the
//! layer list, θ and the batch-norm running statistics.

use anyhow::Result;
use clap::Args;
use fdgr::arch::Arch;
use fdgr::checkpoint;
use fdgr::exit::bad_input;
use fdgr_kernel::export;
use std::path::PathBuf;

/// `fdgr export`.
#[derive(Args, Debug)]
#[command(after_help = after_help!(
    "Example:\n  fdgr export --ckpt runs/digits --out digits-64-32-10.fdgr"
))]
pub struct ExportArgs {
    /// Run directory or model .safetensors file
    #[arg(long)]
    pub ckpt: PathBuf,
    /// Output file
    #[arg(long)]
    pub out: PathBuf,
}

/// The model and its file's bytes.
fn prepare(a: &ExportArgs) -> Result<(Arch, Vec<u8>)> {
    let f = checkpoint::load_net(&a.ckpt)?;
    let a2 = &f.arch;
    let n = export::file_len_v2(a2.layers.len(), f.theta.len(), f.state.len());
    let mut buf = vec![0u8; n];
    let n = export::encode_v2(
        &a2.layers,
        a2.model.input,
        a2.model.loss,
        &f.theta,
        &f.state,
        &mut buf,
    )
    .map_err(|e| anyhow::anyhow!("{}: {e}", a.ckpt.display()))?;
    buf.truncate(n);
    Ok((f.arch, buf))
}

/// `fdgr export`.
pub fn run(a: &ExportArgs) -> Result<()> {
    let (arch, bytes) = prepare(a).map_err(bad_input)?;
    checkpoint::atomic_write(&a.out, &bytes)?;
    println!(
        "wrote {} ({} bytes, format version {}): model {}, {} parameters{}",
        a.out.display(),
        bytes.len(),
        export::VERSION_2,
        arch.describe(),
        arch.param_count(),
        if arch.has_state() {
            format!(", {} running statistics", arch.model.sizes.state)
        } else {
            String::new()
        }
    );
    Ok(())
}
