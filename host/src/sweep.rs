//! `fdgr sweep`: a grid over methods × γ × ε × amortizations × seeds (the
//! paper's Figure 2 style, and the cost/accuracy trade-off of amortized
//! GR). Writes one JSON row per run (`sweep.jsonl`, resumable:
//! finished runs are skipped when the sweep is started again), a table of
//! mean ± std test accuracy (`table.md`) and a γ × ε heat-map per
//! finite-difference method.

use crate::checkpoint::atomic_write;
use crate::config::{MethodName, TrainConfig};
use crate::cpu::pool;
use crate::data;
use crate::train::{run_on, RunOptions, Summary};
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// One finished run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SweepRow {
    /// Method.
    pub method: String,
    /// γ (NaN-free: 0 when unused).
    pub gamma: f64,
    /// ε (0 when unused).
    pub eps: f64,
    /// Seed.
    pub seed: u64,
    /// Final test accuracy.
    pub test_acc: f64,
    /// Final test loss.
    pub test_loss: f64,
    /// Final training accuracy.
    pub train_acc: f64,
    /// Final training loss.
    pub train_loss: f64,
    /// Wall time.
    pub seconds: f64,
    /// Whether the run diverged (then the metrics are of the last good epoch or 0).
    pub diverged: bool,
    /// Amortized GR: `1` (a fresh ascent every step), `every K` or `p P`.
    #[serde(default = "every_one")]
    pub ascent: String,
    /// Optimizer steps per second of training.
    #[serde(default)]
    pub steps_per_sec: f64,
    /// Fraction of the steps that took a fresh ascent (1 when every step
    /// does; the gradient evaluations per two-pass step are 1 + this).
    /// None (shown as "-") for diverged runs and in rows written before
    /// it was recorded.
    #[serde(default)]
    pub fresh_frac: Option<f64>,
}

fn every_one() -> String {
    "1".into()
}

/// How often a step takes a fresh ascent (the amortization axis).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Amortize {
    /// Every k-th step (k = 1: every step, plain GR).
    Every(u64),
    /// With probability p per step.
    Prob(f64),
}

impl Amortize {
    /// The label in rows and tables: `1`, `every 4`, `p 0.25`.
    pub fn label(&self) -> String {
        match *self {
            Amortize::Every(1) => "1".into(),
            Amortize::Every(k) => format!("every {k}"),
            Amortize::Prob(p) => format!("p {p}"),
        }
    }

    /// Gradient evaluations per step of a two-gradient method, expected.
    pub fn cost(&self) -> f64 {
        match *self {
            Amortize::Every(k) => 1.0 + 1.0 / k.max(1) as f64,
            Amortize::Prob(p) => 1.0 + p,
        }
    }

    /// Parses a comma-separated list of `k` (≥ 1) and `pP` (0 < P ≤ 1) for
    /// the flag `flag`.
    pub fn parse_list(flag: &str, list: &str) -> anyhow::Result<Vec<Amortize>> {
        list.split(',')
            .map(|a| {
                let a = a.trim();
                let bad = || format!("{flag} {list}: '{a}' is not k (≥ 1) or pP (0 < P ≤ 1)");
                match a.strip_prefix('p') {
                    Some(p) => p
                        .parse::<f64>()
                        .ok()
                        .filter(|p| *p > 0.0 && *p <= 1.0)
                        .map(Amortize::Prob)
                        .with_context(bad),
                    None => a
                        .parse::<u64>()
                        .ok()
                        .filter(|k| *k >= 1)
                        .map(Amortize::Every)
                        .with_context(bad),
                }
            })
            .collect()
    }

    /// Whether step `step` takes a fresh ascent (as a training run with
    /// this amortization and `seed` decides).
    pub fn fresh(&self, seed: u64, step: u64) -> bool {
        match *self {
            Amortize::Every(k) => crate::config::fresh_ascent(k, None, seed, step),
            Amortize::Prob(p) => crate::config::fresh_ascent(1, Some(p), seed, step),
        }
    }

    /// Sets the amortization of `cfg`.
    pub fn apply(&self, cfg: &mut TrainConfig) {
        match *self {
            Amortize::Every(k) => {
                cfg.gr_every = k;
                cfg.gr_prob = None;
            }
            Amortize::Prob(p) => {
                cfg.gr_every = 1;
                cfg.gr_prob = Some(p);
            }
        }
    }
}

/// The grid.
pub struct Grid {
    /// Methods.
    pub methods: Vec<MethodName>,
    /// γ values (for methods that use γ).
    pub gammas: Vec<f64>,
    /// ε values (for methods that use ε).
    pub epss: Vec<f64>,
    /// Seeds.
    pub seeds: Vec<u64>,
    /// Amortizations (for the methods with an ascent).
    pub amortize: Vec<Amortize>,
}

fn key(m: &str, g: f64, e: f64, s: u64, a: &str) -> String {
    format!("{m}|{g}|{e}|{s}|{a}")
}

/// Whether `m` has an ascent to amortize.
/// Whether the method takes an ascent (or perturbation) step that amortized
/// GR can reuse.
pub fn has_ascent(m: MethodName) -> bool {
    m.has_ascent()
}

/// (mean, sample std) of values.
pub fn mean_std(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let m = v.iter().sum::<f64>() / n;
    let var = if v.len() > 1 {
        v.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / (n - 1.0)
    } else {
        0.0
    };
    (m, var.sqrt())
}

/// Runs the grid on `base` (its method/γ/ε/seed are overridden). `data`
/// holds the data sets already loaded, by seed; the others are loaded once
/// each when first needed.
pub fn run(
    base: &TrainConfig,
    grid: &Grid,
    out: &Path,
    data: BTreeMap<u64, data::Dataset>,
) -> Result<Vec<SweepRow>> {
    std::fs::create_dir_all(out)
        .with_context(|| format!("{}: cannot create directory", out.display()))?;
    let jsonl = out.join("sweep.jsonl");
    let mut rows = read_rows(&jsonl)?;
    let done: std::collections::HashSet<String> = rows
        .iter()
        .map(|r| key(&r.method, r.gamma, r.eps, r.seed, &r.ascent))
        .collect();
    let plan = plan(grid, &done);
    eprintln!(
        "sweep: {} runs to do ({} already in {})",
        plan.len(),
        rows.len(),
        jsonl.display()
    );
    let (pool, threads) = pool(base.threads)?;
    let mut data_cache = data;
    for (i, (m, g, e, s, a)) in plan.iter().enumerate() {
        let mut cfg = base.clone();
        a.apply(&mut cfg);
        cfg.method = *m;
        if m.uses_gamma() {
            cfg.gamma = *g;
        }
        if m.uses_eps() {
            cfg.eps = *e;
        }
        cfg.seed = *s;
        cfg.validate()?;
        if !data_cache.contains_key(s) {
            data_cache.insert(*s, data::load(&cfg.data, &cfg.data_options())?);
        }
        let data = &data_cache[s];
        let res = pool.install(|| run_on(&cfg, data, None, &RunOptions::default(), threads));
        let row = match res {
            Ok(sum) => SweepRow::finished(m.as_str(), (*g, *e, *s), &a.label(), &sum),
            Err(err) if err.downcast_ref::<crate::train::Diverged>().is_some() => {
                SweepRow::diverged(m.as_str(), (*g, *e, *s), &a.label())
            }
            Err(err) => return Err(err),
        };
        eprintln!(
            "[{}/{}] {} γ={} ε={} ascent {} seed {}: test acc {:.2}%{}",
            i + 1,
            plan.len(),
            row.method,
            row.gamma,
            row.eps,
            row.ascent,
            row.seed,
            100.0 * row.test_acc,
            if row.diverged { " (diverged)" } else { "" }
        );
        rows.push(row);
        let text: String = rows
            .iter()
            .map(|r| serde_json::to_string(r).map(|s| s + "\n"))
            .collect::<Result<_, _>>()?;
        atomic_write(&jsonl, text.as_bytes())?;
    }
    report(&rows, grid, out)?;
    Ok(rows)
}

/// The rows of an earlier, interrupted sweep (none when `jsonl` is
/// absent); a corrupt row is bad input naming its line.
fn read_rows(jsonl: &Path) -> Result<Vec<SweepRow>> {
    let mut rows = vec![];
    if let Ok(text) = std::fs::read_to_string(jsonl) {
        for (i, line) in text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
        {
            rows.push(
                serde_json::from_str(line)
                    .with_context(|| format!("{}:{}: corrupt row", jsonl.display(), i + 1))
                    .map_err(crate::exit::bad_input)?,
            );
        }
    }
    Ok(rows)
}

/// One run of the grid: method, γ, ε, seed, ascent.
type Planned = (MethodName, f64, f64, u64, Amortize);

/// The grid's runs not in `done` (their [`key`]s), in grid order: γ and
/// ε only for the methods that use them, amortization only for those
/// with an ascent.
fn plan(grid: &Grid, done: &std::collections::HashSet<String>) -> Vec<Planned> {
    let mut plan = vec![];
    for &m in &grid.methods {
        let gs = if m.uses_gamma() {
            grid.gammas.clone()
        } else {
            vec![0.0]
        };
        let es = if m.uses_eps() {
            grid.epss.clone()
        } else {
            vec![0.0]
        };
        let am = if has_ascent(m) {
            grid.amortize.clone()
        } else {
            vec![Amortize::Every(1)]
        };
        for &g in &gs {
            for &e in &es {
                for a in &am {
                    for &s in &grid.seeds {
                        if !done.contains(&key(m.as_str(), g, e, s, &a.label())) {
                            plan.push((m, g, e, s, *a));
                        }
                    }
                }
            }
        }
    }
    plan
}

impl SweepRow {
    /// The row of a finished run.
    fn finished(
        method: &str,
        (gamma, eps, seed): (f64, f64, u64),
        ascent: &str,
        sum: &Summary,
    ) -> Self {
        SweepRow {
            method: method.into(),
            gamma,
            eps,
            seed,
            test_acc: sum.last.test_acc,
            test_loss: sum.last.test_loss,
            train_acc: sum.last.train_acc,
            train_loss: sum.last.train_loss,
            seconds: sum.seconds,
            diverged: false,
            ascent: ascent.into(),
            steps_per_sec: sum.steps_per_sec,
            fresh_frac: (sum.steps > 0).then(|| sum.fresh_ascents as f64 / sum.steps as f64),
        }
    }

    /// The row of a run that diverged.
    fn diverged(method: &str, (gamma, eps, seed): (f64, f64, u64), ascent: &str) -> Self {
        SweepRow {
            method: method.into(),
            gamma,
            eps,
            seed,
            test_acc: 0.0,
            test_loss: f64::MAX,
            train_acc: 0.0,
            train_loss: f64::MAX,
            seconds: 0.0,
            diverged: true,
            ascent: ascent.into(),
            steps_per_sec: 0.0,
            fresh_frac: None,
        }
    }
}

/// Runs of one (method index, γ, ε, ascent).
type Group<'a> = ((usize, f64, f64, String), Vec<&'a SweepRow>);

/// Writes `table.md` and the heat-maps; prints the table.
pub fn report(rows: &[SweepRow], grid: &Grid, out: &Path) -> Result<()> {
    let groups = groups(rows);
    let sgd_rate = {
        let v: Vec<f64> = rows
            .iter()
            .filter(|r| r.method == "sgd" && !r.diverged && r.steps_per_sec > 0.0)
            .map(|r| r.steps_per_sec)
            .collect();
        (!v.is_empty()).then(|| mean_std(&v).0)
    };
    let mut table = String::from("| method | γ | ε | ascent | fresh ascents | test accuracy (mean ± std) | time/step ÷ SGD's | seeds | diverged |\n|---|---|---|---|---|---|---|---|---|\n");
    for (_, rs) in &groups {
        table.push_str(&table_line(rs, sgd_rate)?);
    }
    atomic_write(&out.join("table.md"), table.as_bytes())?;
    println!("{table}");
    heatmaps(rows, grid, out)
}

/// The runs grouped by (method, γ, ε, ascent): method order, then γ and ε
/// numerically, then ascent by expected cost.
fn groups(rows: &[SweepRow]) -> Vec<Group<'_>> {
    let mut groups: Vec<Group<'_>> = vec![];
    for r in rows {
        let mi = MethodName::all()
            .position(|m| m.as_str() == r.method)
            .unwrap_or(99);
        let k = (mi, r.gamma, r.eps, r.ascent.clone());
        match groups.iter_mut().find(|(g, _)| *g == k) {
            Some((_, v)) => v.push(r),
            None => groups.push((k, vec![r])),
        }
    }
    groups.sort_by(|(a, _), (b, _)| {
        a.0.cmp(&b.0)
            .then(a.1.total_cmp(&b.1))
            .then(a.2.total_cmp(&b.2))
            .then(ascent_rank(&a.3).total_cmp(&ascent_rank(&b.3)))
    });
    groups
}

/// The table line of one group: mean ± std test accuracy over its seeds,
/// its time per step against SGD's (`sgd_rate`, steps/s), its fresh
/// ascents.
fn table_line(rs: &[&SweepRow], sgd_rate: Option<f64>) -> Result<String> {
    let r0 = rs[0];
    let m = MethodName::parse(&r0.method)?;
    let ok: Vec<f64> = rs
        .iter()
        .filter(|r| !r.diverged)
        .map(|r| 100.0 * r.test_acc)
        .collect();
    let (mean, sd) = if ok.is_empty() {
        (f64::NAN, f64::NAN)
    } else {
        mean_std(&ok)
    };
    let rate: Vec<f64> = rs
        .iter()
        .filter(|r| !r.diverged && r.steps_per_sec > 0.0)
        .map(|r| r.steps_per_sec)
        .collect();
    let cost = match (sgd_rate, rate.is_empty()) {
        (Some(sr), false) => format!("{:.2}", sr / mean_std(&rate).0),
        _ => "-".into(),
    };
    let fr: Vec<f64> = rs
        .iter()
        .filter(|r| !r.diverged)
        .filter_map(|r| r.fresh_frac)
        .collect();
    let fresh = if has_ascent(m) && !fr.is_empty() {
        format!("{:.0}%", 100.0 * mean_std(&fr).0)
    } else {
        "-".into()
    };
    Ok(format!(
        "| {} | {} | {} | {} | {} | {:.2} ± {:.2} | {} | {} | {} |\n",
        r0.method,
        if m.uses_gamma() {
            r0.gamma.to_string()
        } else {
            "-".into()
        },
        if m.uses_eps() {
            r0.eps.to_string()
        } else {
            "-".into()
        },
        if has_ascent(m) {
            r0.ascent.as_str()
        } else {
            "-"
        },
        fresh,
        mean,
        sd,
        cost,
        rs.len(),
        rs.iter().filter(|r| r.diverged).count()
    ))
}

/// One heat-map per method with an ε: mean test accuracy over γ × ε (runs
/// with a fresh ascent every step), SGD's in the title.
fn heatmaps(rows: &[SweepRow], grid: &Grid, out: &Path) -> Result<()> {
    let reference = |name: &str| -> Option<f64> {
        let v: Vec<f64> = rows
            .iter()
            .filter(|r| r.method == name && !r.diverged)
            .map(|r| 100.0 * r.test_acc)
            .collect();
        (!v.is_empty()).then(|| mean_std(&v).0)
    };
    for m in grid.methods.iter().filter(|m| m.uses_eps()) {
        let vals: Vec<Vec<f64>> = grid
            .gammas
            .iter()
            .map(|g| {
                grid.epss
                    .iter()
                    .map(|e| {
                        let v: Vec<f64> = rows
                            .iter()
                            .filter(|r| {
                                r.method == m.as_str()
                                    && r.gamma == *g
                                    && r.eps == *e
                                    && r.ascent == "1"
                                    && !r.diverged
                            })
                            .map(|r| 100.0 * r.test_acc)
                            .collect();
                        if v.is_empty() {
                            f64::NAN
                        } else {
                            mean_std(&v).0
                        }
                    })
                    .collect()
            })
            .collect();
        let mut title = format!("{} test accuracy (%)", m.as_str());
        if let Some(s) = reference("sgd") {
            title.push_str(&format!(", sgd {s:.2}"));
        }
        let xs: Vec<String> = grid.epss.iter().map(|e| e.to_string()).collect();
        let ys: Vec<String> = grid.gammas.iter().map(|g| g.to_string()).collect();
        crate::plot::heatmap(
            &out.join(format!("heatmap-{}.png", m.as_str())),
            &title,
            "ε",
            &xs,
            "γ",
            &ys,
            &vals,
        )?;
    }
    Ok(())
}

/// Sort key of an ascent label: plain first, then by expected cost, falling.
fn ascent_rank(a: &str) -> f64 {
    if a == "1" {
        return 0.0;
    }
    if let Some(k) = a.strip_prefix("every ").and_then(|k| k.parse::<f64>().ok()) {
        return 1.0 + 1.0 / (1.0 + 1.0 / k);
    }
    if let Some(p) = a.strip_prefix("p ").and_then(|p| p.parse::<f64>().ok()) {
        return 1.0 + 1.0 / (1.0 + p);
    }
    9.0
}
