//! CIFAR-10 binary batches: records of 1 label byte (0..9) and 3072 pixel
//! bytes (1024 red, 1024 green, 1024 blue, each 32×32 row-major).

use super::{read_maybe_gz, Raw};
use anyhow::{bail, Result};
use std::path::Path;

const REC: usize = 1 + 3072;

/// Appends the records of one batch file.
pub(crate) fn append(path: &Path, raw: &mut Raw) -> Result<()> {
    let name = path.display().to_string();
    let b = read_maybe_gz(path)?;
    if b.is_empty() || b.len() % REC != 0 {
        bail!(
            "{name}: {} bytes is not a whole number of CIFAR-10 records ({REC} bytes: label + 3072 pixels)",
            b.len()
        );
    }
    for (i, rec) in b.chunks_exact(REC).enumerate() {
        if rec[0] > 9 {
            bail!(
                "{name}: record {i}: label {} out of range (expected 0..9)",
                rec[0]
            );
        }
        raw.y.push(rec[0] as u32);
        raw.x.extend(rec[1..].iter().map(|&v| v as f32));
    }
    raw.features = 3072;
    raw.pixel_max = Some(255.0);
    Ok(())
}
