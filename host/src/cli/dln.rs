//! `fdgr dln`: the paper's diagonal linear network, as a table or JSON
//! lines, and optionally `dln.jsonl` and plots.

use super::args::parse_methods;
use anyhow::{bail, Context, Result};
use clap::Args;
use fdgr::config::{parse_list, MethodName};
use fdgr::dln::{self, DlnRow, Grid, Problem, Settings};
use fdgr::exit::bad_input;
use fdgr::{checkpoint, cpu};
use std::path::{Path, PathBuf};

/// `fdgr dln`.
#[derive(Args, Debug)]
#[command(
    allow_negative_numbers = true,
    after_help = after_help!(
        "Example:\n  fdgr dln --alphas 0.5,1 --gammas 0.01,0.05 \\\n    \
        --epss=-0.5,-0.2,-0.1,-0.05,0.05,0.1,0.2,0.5 --out runs/dln"
    )
)]
pub struct DlnArgs {
    /// Dimension d
    #[arg(long, default_value_t = 100)]
    pub d: usize,
    /// Samples n (< d: under-determined)
    #[arg(long, default_value_t = 40)]
    pub n: usize,
    /// Non-zeros of β* (±1)
    #[arg(long, default_value_t = 5)]
    pub k: usize,
    /// Seed of X and β*
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Methods: sgd, db, fgr, bgr, cgr
    #[arg(long, default_value = "sgd,db,fgr,bgr")]
    pub methods: String,
    /// Initialisation scales α
    #[arg(long, default_value = "0.5,1")]
    pub alphas: String,
    /// GR strengths γ
    #[arg(long, default_value = "0.01,0.05")]
    pub gammas: String,
    /// Signed ε values: positive runs F-GR, negative runs B-GR
    #[arg(long, default_value = "-0.5,-0.2,-0.1,-0.05,0.05,0.1,0.2,0.5")]
    pub epss: String,
    /// Step size
    #[arg(long, default_value_t = 0.01)]
    pub lr: f64,
    /// Step budget per run
    #[arg(long, default_value_t = 400_000)]
    pub max_steps: u64,
    /// Stop when the training loss falls below tol × its initial value
    #[arg(long, default_value_t = 1e-10)]
    pub tol: f64,
    /// CPU threads for parallel runs (0 = all cores)
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// One JSON object per run on stdout
    #[arg(long)]
    pub json: bool,
    /// Directory for dln.jsonl and the plots
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// The experiment, checked.
struct Job {
    problem: Problem,
    grid: Grid,
    settings: Settings,
}

fn prepare(a: &DlnArgs) -> Result<Job> {
    let problem = Problem::new(a.d, a.n, a.k, a.seed)?;
    let grid = Grid {
        methods: parse_methods(&a.methods)?,
        epss: parse_list("--epss", &a.epss)?,
        gammas: parse_list("--gammas", &a.gammas)?,
        alphas: parse_list("--alphas", &a.alphas)?,
    };
    // sgd and the GR methods (those with a γ) are the experiment's.
    if let Some(m) = grid
        .methods
        .iter()
        .find(|m| **m != MethodName::SGD && !m.uses_gamma())
    {
        bail!(
            "dln: method {} is not part of this experiment (use sgd, db, fgr, bgr, cgr)",
            m.as_str()
        );
    }
    if grid.alphas.iter().any(|x| *x <= 0.0) || grid.epss.contains(&0.0) {
        bail!("--alphas must be > 0 and --epss non-zero");
    }
    if !(a.lr > 0.0 && a.lr.is_finite()) {
        bail!("--lr {}: expected a positive number", a.lr);
    }
    let settings = Settings {
        lr: a.lr,
        max_steps: a.max_steps,
        tol: a.tol,
    };
    Ok(Job {
        problem,
        grid,
        settings,
    })
}

/// `fdgr dln`.
pub fn run(a: &DlnArgs) -> Result<()> {
    let Job {
        problem,
        grid,
        settings,
    } = prepare(a).map_err(bad_input)?;
    eprintln!(
        "DLN: d={} n={} k={} seed {}, β* = ±1 on k entries, X ~ N(0,1); full-batch steps of {} until L < {:e}·L(0) (max {} steps)",
        a.d, a.n, a.k, a.seed, a.lr, a.tol, a.max_steps
    );
    let (pool, _) = cpu::pool(a.threads)?;
    let (rows, refs) = pool.install(|| dln::run_grid(&problem, &grid, &settings))?;
    if a.json {
        for r in refs.iter().map(|(_, r)| r).chain(rows.iter()) {
            println!("{}", serde_json::to_string(r)?);
        }
    } else {
        print_table(&rows, &refs, a.k);
    }
    if let Some(out) = &a.out {
        write(out, &rows, &refs)?;
        eprintln!("wrote {}", out.display());
    }
    Ok(())
}

/// The table: per α, the gradient-flow reference, then its runs.
fn print_table(rows: &[DlnRow], refs: &[(f64, DlnRow)], k: usize) {
    println!(
        "| α | method | γ | ε | ‖β̂ − β*‖₂ | ‖β̂‖₁ | α_eff | α_eff max/min | train loss | steps |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for (alpha, r) in refs {
        println!(
            "| {alpha} | {} | - | - | {:.4} | {:.4} | {alpha} | 1 | {:.1e} | - |",
            r.method, r.recovery_error, r.l1_norm, r.train_loss
        );
        for r in rows.iter().filter(|r| r.alpha == *alpha) {
            println!(
                "| {alpha} | {} | {} | {} | {:.4} | {:.4} | {:.4} | {:.2} | {:.1e} | {}{} |",
                r.method,
                if r.method == "sgd" {
                    "-".to_string()
                } else {
                    r.gamma.to_string()
                },
                if r.eps == 0.0 {
                    "-".to_string()
                } else {
                    r.eps.to_string()
                },
                r.recovery_error,
                r.l1_norm,
                r.alpha_eff,
                r.alpha_eff_spread,
                r.train_loss,
                r.steps,
                if r.converged { "" } else { " (not converged)" }
            );
        }
    }
    println!("| - | β* | - | - | 0 | {k} | - | - | 0 | - |");
}

/// `dln.jsonl` (the references, then the runs) and the plots per α.
fn write(out: &Path, rows: &[DlnRow], refs: &[(f64, DlnRow)]) -> Result<()> {
    std::fs::create_dir_all(out)
        .with_context(|| format!("{}: cannot create directory", out.display()))?;
    let text: String = refs
        .iter()
        .map(|(_, r)| r)
        .chain(rows.iter())
        .map(|r| serde_json::to_string(r).map(|s| s + "\n"))
        .collect::<Result<_, _>>()?;
    checkpoint::atomic_write(&out.join("dln.jsonl"), text.as_bytes())?;
    for (alpha, r) in refs {
        dln::plot(
            &out.join(format!("dln-alpha{alpha}.png")),
            rows,
            Some(r),
            *alpha,
            dln::Metric::Recovery,
        )?;
        let eff = out.join(format!("dln-alpha-eff-alpha{alpha}.png"));
        dln::plot(&eff, rows, Some(r), *alpha, dln::Metric::AlphaEff)?;
    }
    Ok(())
}
