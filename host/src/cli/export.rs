//! `fdgr export`: weights for firmware, in the kernel's FDGR format
//! ([`fdgr_kernel::export`], which the firmware reads).

use anyhow::Result;
use clap::Args;
use fdgr::checkpoint;
use fdgr::exit::bad_input;
use fdgr_kernel::{export, Shape};
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
fn prepare(a: &ExportArgs) -> Result<(Shape, Vec<u8>)> {
    let (shape, theta) = checkpoint::load_model(&a.ckpt)?;
    let mut buf = vec![0u8; export::file_len(&shape)];
    let n = export::encode(&shape, &theta, &mut buf)
        .map_err(|e| anyhow::anyhow!("{}: {e}", a.ckpt.display()))?;
    buf.truncate(n);
    Ok((shape, buf))
}

/// `fdgr export`.
pub fn run(a: &ExportArgs) -> Result<()> {
    let (shape, bytes) = prepare(a).map_err(bad_input)?;
    checkpoint::atomic_write(&a.out, &bytes)?;
    println!(
        "wrote {} ({} bytes): model {shape} {}, {} parameters",
        a.out.display(),
        bytes.len(),
        shape.act.name(),
        shape.param_count()
    );
    Ok(())
}
