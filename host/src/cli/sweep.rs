//! `fdgr sweep`: a grid over methods × γ × ε × amortizations × seeds.

use super::args::parse_methods;
use super::train::{self, TrainArgs};
use anyhow::{bail, Context, Result};
use clap::Args;
use fdgr::config::{parse_list, TrainConfig};
use fdgr::exit::bad_input;
use fdgr::sweep::{self, Amortize, Grid};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// `fdgr sweep`: the flags of `fdgr train` (the base of every run) and the
/// grid.
#[derive(Args, Debug)]
#[command(after_help = after_help!(
    "Example:\n  fdgr sweep --data mnist5k --epochs 10 --methods sgd,db,fgr,bgr \\\n    \
    --gammas 0.001,0.01,0.1 --epss 0.01,0.1,0.5 --seeds 1,2,3 --out runs/sweep"
))]
pub struct SweepArgs {
    /// Every run's configuration, less what the grid sets.
    #[command(flatten)]
    pub base: TrainArgs,
    /// The grid.
    #[command(flatten, next_help_heading = "Grid")]
    pub grid: GridArgs,
}

/// The grid of `fdgr sweep`.
#[derive(Args, Clone, Debug)]
pub struct GridArgs {
    /// Methods, comma-separated
    #[arg(long, default_value = "sgd,db,fgr,bgr")]
    pub methods: String,
    /// γ values, comma-separated
    #[arg(long, default_value = "0.001,0.01,0.1")]
    pub gammas: String,
    /// ε values, comma-separated
    #[arg(long, default_value = "0.01,0.1,0.5")]
    pub epss: String,
    /// Seeds, comma-separated
    #[arg(long, default_value = "1,2,3")]
    pub seeds: String,
    /// Amortized GR, comma-separated: k (a fresh ascent every k-th step)
    /// or pP (with probability P), e.g. 1,2,4,p0.5 (methods with an ascent)
    #[arg(long, default_value = "1")]
    pub amortize: String,
}

impl GridArgs {
    /// The grid, checked.
    pub fn grid(&self) -> Result<Grid> {
        let seeds: Vec<u64> = self
            .seeds
            .split(',')
            .map(|s| {
                s.trim()
                    .parse::<u64>()
                    .with_context(|| format!("--seeds {}: '{s}' is not an integer", self.seeds))
            })
            .collect::<Result<_>>()?;
        let amortize = Amortize::parse_list("--amortize", &self.amortize)?;
        let grid = Grid {
            amortize,
            methods: parse_methods(&self.methods)?,
            gammas: parse_list("--gammas", &self.gammas)?,
            epss: parse_list("--epss", &self.epss)?,
            seeds,
        };
        if grid.epss.iter().any(|e| *e <= 0.0) {
            bail!(
                "--epss {}: every ε must be > 0 (bgr applies −ε itself)",
                self.epss
            );
        }
        Ok(grid)
    }
}

/// A checked sweep, ready to start.
struct Job {
    base: TrainConfig,
    grid: Grid,
    /// The data set of the first seed, loaded once (it also sized the
    /// default model).
    data: BTreeMap<u64, fdgr::data::Dataset>,
    out: PathBuf,
}

fn prepare(a: &SweepArgs) -> Result<Job> {
    let grid = a.grid.grid()?;
    // The first seed's data set: loaded here once (the sweep reuses it),
    // so that a bad data set is reported before anything runs.
    let mut args = a.base.clone();
    if let Some(&s) = grid.seeds.first() {
        args.data.seed = Some(s);
    }
    let (base, loaded) = args.config()?;
    // Every run's configuration is valid before the first one starts.
    for &m in &grid.methods {
        let mut c = base.clone();
        c.method = m;
        for &g in &grid.gammas {
            for &e in &grid.epss {
                c.gamma = if m.uses_gamma() { g } else { base.gamma };
                c.eps = if m.uses_eps() { e } else { base.eps };
                for a in &grid.amortize {
                    a.apply(&mut c);
                    c.validate()?;
                }
            }
        }
    }
    let data = train::load(&base, loaded)?;
    fdgr::train::arch_for(&base, &data)?;
    let out = a
        .base
        .out
        .clone()
        .unwrap_or_else(|| super::default_out(&base.data, "sweep"));
    Ok(Job {
        data: BTreeMap::from([(base.seed, data)]),
        base,
        grid,
        out,
    })
}

/// `fdgr sweep`.
pub fn run(a: &SweepArgs) -> Result<()> {
    let job = prepare(a).map_err(bad_input)?;
    sweep::run(&job.base, &job.grid, &job.out, job.data)?;
    eprintln!("wrote {}", job.out.display());
    Ok(())
}
