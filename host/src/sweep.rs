//! `fdgr sweep`: a grid over methods × γ × ε × seeds (the paper's
//! Figure 2 style). Writes one JSON row per run (`sweep.jsonl`, resumable:
//! finished runs are skipped when the sweep is started again), a table of
//! mean ± std test accuracy (`table.md`) and a γ × ε heat-map per
//! finite-difference method.

use crate::checkpoint::atomic_write;
use crate::config::{MethodName, TrainConfig};
use crate::cpu::pool;
use crate::data;
use crate::train::{run_on, RunOptions};
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
}

fn key(m: &str, g: f64, e: f64, s: u64) -> String {
    format!("{m}|{g}|{e}|{s}")
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
    let mut rows: Vec<SweepRow> = vec![];
    if let Ok(text) = std::fs::read_to_string(&jsonl) {
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
    let done: std::collections::HashSet<String> = rows
        .iter()
        .map(|r| key(&r.method, r.gamma, r.eps, r.seed))
        .collect();
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
        for &g in &gs {
            for &e in &es {
                for &s in &grid.seeds {
                    if !done.contains(&key(m.as_str(), g, e, s)) {
                        plan.push((m, g, e, s));
                    }
                }
            }
        }
    }
    eprintln!(
        "sweep: {} runs to do ({} already in {})",
        plan.len(),
        rows.len(),
        jsonl.display()
    );
    let (pool, threads) = pool(base.threads)?;
    let mut data_cache = data;
    for (i, (m, g, e, s)) in plan.iter().enumerate() {
        let mut cfg = base.clone();
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
            Ok(sum) => SweepRow {
                method: m.as_str().into(),
                gamma: *g,
                eps: *e,
                seed: *s,
                test_acc: sum.last.test_acc,
                test_loss: sum.last.test_loss,
                train_acc: sum.last.train_acc,
                train_loss: sum.last.train_loss,
                seconds: sum.seconds,
                diverged: false,
            },
            Err(err) if err.downcast_ref::<crate::train::Diverged>().is_some() => SweepRow {
                method: m.as_str().into(),
                gamma: *g,
                eps: *e,
                seed: *s,
                test_acc: 0.0,
                test_loss: f64::MAX,
                train_acc: 0.0,
                train_loss: f64::MAX,
                seconds: 0.0,
                diverged: true,
            },
            Err(err) => return Err(err),
        };
        eprintln!(
            "[{}/{}] {} γ={} ε={} seed {}: test acc {:.2}%{}",
            i + 1,
            plan.len(),
            row.method,
            row.gamma,
            row.eps,
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

/// Runs of one (method index, γ, ε).
type Group<'a> = ((usize, f64, f64), Vec<&'a SweepRow>);

/// Writes `table.md` and the heat-maps; prints the table.
pub fn report(rows: &[SweepRow], grid: &Grid, out: &Path) -> Result<()> {
    // Groups of (method, γ, ε): method order, then γ and ε numerically.
    let mut groups: Vec<Group<'_>> = vec![];
    for r in rows {
        let mi = MethodName::ALL
            .iter()
            .position(|m| m.as_str() == r.method)
            .unwrap_or(99);
        match groups.iter_mut().find(|(k, _)| *k == (mi, r.gamma, r.eps)) {
            Some((_, v)) => v.push(r),
            None => groups.push(((mi, r.gamma, r.eps), vec![r])),
        }
    }
    groups.sort_by(|(a, _), (b, _)| {
        a.0.cmp(&b.0)
            .then(a.1.total_cmp(&b.1))
            .then(a.2.total_cmp(&b.2))
    });
    let mut table = String::from("| method | γ | ε | test accuracy (mean ± std) | seeds | diverged |\n|---|---|---|---|---|---|\n");
    for (_, rs) in &groups {
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
        table.push_str(&format!(
            "| {} | {} | {} | {:.2} ± {:.2} | {} | {} |\n",
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
            mean,
            sd,
            rs.len(),
            rs.iter().filter(|r| r.diverged).count()
        ));
    }
    atomic_write(&out.join("table.md"), table.as_bytes())?;
    println!("{table}");
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
