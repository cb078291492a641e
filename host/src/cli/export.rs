//! `fdgr export`: weights for firmware, in the kernel's FDGR format
//! ([`fdgr_kernel::export`], which the firmware reads): version 2, the
//! layer list, θ and the batch-norm running statistics.

use anyhow::Result;
use clap::Args;
use fdgr::exit::bad_input;
use fdgr::{checkpoint, firmware};
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

/// `fdgr export`.
pub fn run(a: &ExportArgs) -> Result<()> {
    let (net, bytes) = firmware::export_run(&a.ckpt, false).map_err(bad_input)?;
    let arch = &net.arch;
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
