//! `fdgr samples`: the first samples of a split as the firmware's sample
//! stream (the format is [`fdgr_kernel::stream`], which the firmware reads).

use anyhow::{bail, Result};
use clap::Args;
use fdgr::data::{self, Normalize};
use fdgr::exit::bad_input;
use fdgr_kernel::stream::{self, StreamError};
use std::path::PathBuf;

/// `fdgr samples`.
#[derive(Args, Debug)]
#[command(after_help = after_help!(
    "Example:\n  fdgr samples --data digits --split test --count 64 --out stream.bin"
))]
pub struct SamplesArgs {
    /// Data set (its values must be integers 0..=255, as stored)
    #[arg(long, default_value = "digits")]
    pub data: String,
    /// Which split: test | train
    #[arg(long, default_value = "test")]
    pub split: String,
    /// Number of samples (the first ones of the split, in file order)
    #[arg(long, default_value_t = 64)]
    pub count: usize,
    /// Split seed (as in training)
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Test fraction (as in training)
    #[arg(long, default_value_t = 0.2)]
    pub test_frac: f64,
    /// Output file
    #[arg(long)]
    pub out: PathBuf,
}

/// The stream's bytes and the inputs per sample.
fn prepare(a: &SamplesArgs) -> Result<(Vec<u8>, usize)> {
    let d = data::load(
        &a.data,
        &data::DataOptions {
            seed: a.seed,
            test_frac: a.test_frac,
            normalize: Normalize::None,
        },
    )?;
    let s = match a.split.as_str() {
        "test" => &d.test,
        "train" => &d.train,
        s => bail!("--split {s}: expected test or train"),
    };
    if a.count == 0 || a.count > s.len() {
        bail!(
            "--count {}: the {} split has {} samples",
            a.count,
            a.split,
            s.len()
        );
    }
    let f = d.features;
    let mut out = vec![0u8; a.count * stream::record_len(f)];
    let mut at = 0;
    for (i, &y) in s.y.iter().enumerate().take(a.count) {
        at += match stream::write_sample(&s.x[i * f..(i + 1) * f], y, &mut out[at..]) {
            Ok(n) => n,
            Err(StreamError::NotAByte(v)) => bail!(
                "--data {}: value {v} is not a byte (samples need integer values 0..=255)",
                a.data
            ),
            Err(e) => bail!("--data {}: {e}", a.data),
        };
    }
    Ok((out, f))
}

/// `fdgr samples`.
pub fn run(a: &SamplesArgs) -> Result<()> {
    let (bytes, f) = prepare(a).map_err(bad_input)?;
    fdgr::checkpoint::atomic_write(&a.out, &bytes)?;
    println!(
        "wrote {} ({} samples of {f} bytes + label, the first of the {} split)",
        a.out.display(),
        a.count,
        a.split
    );
    Ok(())
}
