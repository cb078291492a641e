//! `fdgr samples`: the first samples of a split as the firmware's sample
//! stream (the format is [`fdgr_kernel::stream`], which the firmware reads).

use anyhow::Result;
use clap::Args;
use fdgr::exit::bad_input;
use fdgr::firmware;
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

/// `fdgr samples`.
pub fn run(a: &SamplesArgs) -> Result<()> {
    let spec = firmware::StreamSpec {
        data: a.data.clone(),
        split: a.split.clone(),
        count: a.count,
        seed: a.seed,
        test_frac: a.test_frac,
    };
    let firmware::Stream { bytes, features: f } =
        firmware::stream_bytes(&spec).map_err(bad_input)?;
    fdgr::checkpoint::atomic_write(&a.out, &bytes)?;
    println!(
        "wrote {} ({} samples of {f} bytes + label, the first of the {} split)",
        a.out.display(),
        a.count,
        a.split
    );
    Ok(())
}
