//! `fdgr flood-check`: two flooding steps against one forward-difference
//! GR step, as a table or JSON lines.

use super::args::shape;
use anyhow::{bail, Result};
use clap::Args;
use fdgr::data::{self, Dataset};
use fdgr::exit::bad_input;
use fdgr::flood::{self, FloodCheck};

/// `fdgr flood-check`.
#[derive(Args, Debug)]
#[command(after_help = after_help!(
    "Example:\n  fdgr flood-check --data digits --model 64-32-10 --act tanh --lr 0.05 --pairs 10"
))]
pub struct FloodArgs {
    /// Data set
    #[arg(long, default_value = "digits")]
    pub data: String,
    /// Layer widths
    #[arg(long, default_value = "64-32-10")]
    pub model: String,
    /// Hidden activation
    #[arg(long, default_value = "tanh")]
    pub act: String,
    /// Size of the one fixed batch
    #[arg(long, default_value_t = 64)]
    pub batch: usize,
    /// Step size η (the implied finite-difference ε)
    #[arg(long, default_value_t = 0.05)]
    pub lr: f32,
    /// SGD steps before the check
    #[arg(long, default_value_t = 200)]
    pub pretrain: usize,
    /// Step pairs to check
    #[arg(long, default_value_t = 10)]
    pub pairs: usize,
    /// Seed
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// One JSON object per pair
    #[arg(long)]
    pub json: bool,
}

fn prepare(a: &FloodArgs) -> Result<(FloodCheck, Dataset)> {
    let shape = shape(&a.model, &a.act)?;
    if !(a.lr > 0.0 && a.lr.is_finite()) || a.batch == 0 {
        bail!("--lr must be positive and --batch at least 1");
    }
    let d = data::load(&a.data, &data::DataOptions::default())?;
    fdgr::train::check_fit(
        &fdgr::arch::Arch::mlp(shape.dims(), shape.act)?,
        &d,
        "--model",
    )?;
    let c = FloodCheck {
        shape,
        batch: a.batch,
        lr: a.lr,
        pretrain: a.pretrain,
        pairs: a.pairs,
        seed: a.seed,
    };
    Ok((c, d))
}

/// `fdgr flood-check`.
pub fn run(a: &FloodArgs) -> Result<()> {
    let (c, d) = prepare(a).map_err(bad_input)?;
    let rows = flood::run(&c, &d)?;
    if a.json {
        for r in &rows {
            println!("{}", serde_json::to_string(r)?);
        }
        return Ok(());
    }
    println!(
        "flooding on one batch of {} {} samples, model {} {}, η = {}: θ₂ vs θ₀ − η(∇L(θ₀+ηg₀) − g₀)",
        a.batch, a.data, c.shape, a.act, a.lr
    );
    println!("| pair | L(θ₀) | b | L(θ₀+ηg₀) | ascent→descent | max |Δθ| | ulps | ‖θ₂−θ₀‖ | rel. err of θ₀−η²Hg₀ |");
    println!("|---|---|---|---|---|---|---|---|---|");
    for r in &rows {
        println!(
            "| {} | {:.6} | {:.6} | {:.6} | {} | {:.2e} | {:.1} | {:.3e} | {:.3} |",
            r.pair,
            r.loss0,
            r.level,
            r.loss1,
            if r.ascent_then_descent { "yes" } else { "no" },
            r.max_abs_diff,
            r.ulps,
            r.step_norm,
            r.hessian_rel_err
        );
    }
    Ok(())
}
