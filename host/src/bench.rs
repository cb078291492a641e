//! `fdgr bench`: per-step time of each method on random data, median over
//! repeats (after warm-up), on the CPU or GPU backend.

use crate::arch::Arch;
use crate::backend::{Backend, CpuBackend};
use crate::config::{BackendName, MethodName};
use crate::cpu::{pool, Par};
use crate::data::{Dataset, Split};
use crate::sweep::{has_ascent, Amortize};
use anyhow::{anyhow, Result};
use fdgr_kernel::{init_params, Ascent, Optimizer, Rng, Sgd, SgdState, StepOptions};
use serde::Serialize;
use std::time::Instant;

/// One benchmark result (one `--json` line).
#[derive(Clone, Debug, Serialize)]
pub struct BenchRow {
    /// Method.
    pub method: String,
    /// Backend.
    pub backend: String,
    /// Model widths.
    pub model: String,
    /// Hidden activation.
    pub act: String,
    /// Batch size.
    pub batch: usize,
    /// Threads (CPU).
    pub threads: usize,
    /// Amortized GR: `1` (a fresh ascent every step), `every K` or `p P`;
    /// `-` for methods without an ascent.
    pub ascent: String,
    /// Median time per step. For amortized GR, whose steps are of two
    /// kinds, the medians of each kind weighted by their share of steps:
    /// robust to a busy machine's outliers, unlike the mean.
    pub median_ms: f64,
    /// Mean time per step (all timed steps).
    pub mean_ms: f64,
    /// Share of the timed steps that took a fresh ascent.
    pub fresh_frac: f64,
    /// Median time of the steps with a fresh ascent.
    pub fresh_median_ms: f64,
    /// Median time of the steps that reused the last ascent (NaN if none).
    pub reuse_median_ms: f64,
    /// Fastest step.
    pub min_ms: f64,
    /// Slowest step.
    pub max_ms: f64,
    /// Timed steps.
    pub repeats: usize,
    /// The GPU benchmark's own JSON (CUDA-event timing, GFLOP/s, device).
    #[serde(skip)]
    pub gpu: Option<String>,
}

impl BenchRow {
    /// One JSON object: the fields above, plus the GPU benchmark's.
    pub fn to_json(&self) -> String {
        let mut v = serde_json::to_value(self).unwrap_or_default();
        if let (Some(g), Some(obj)) = (&self.gpu, v.as_object_mut()) {
            if let Ok(serde_json::Value::Object(extra)) =
                serde_json::from_str::<serde_json::Value>(g)
            {
                for (k, x) in extra {
                    obj.entry(k).or_insert(x);
                }
            }
        }
        v.to_string()
    }
}

/// Benchmark settings.
pub struct BenchSpec {
    /// The network.
    pub arch: Arch,
    /// Batch size.
    pub batch: usize,
    /// Methods to time.
    pub methods: Vec<MethodName>,
    /// Backend.
    pub backend: BackendName,
    /// Threads (0 = all cores).
    pub threads: usize,
    /// Timed steps per method.
    pub repeats: usize,
    /// Untimed steps before timing.
    pub warmup: usize,
    /// The arithmetic of the GPU's products.
    pub precision: fdgr_gpu::Precision,
    /// Amortizations to time for methods with an ascent (CPU).
    pub amortize: Vec<Amortize>,
}

/// Runs the benchmark; calls `each` with every finished row. On the CPU
/// the configurations (method × amortization) are timed round-robin, one
/// step of each in turn, so that a machine's load drifts over all of them
/// alike and the ratios between rows stay fair.
pub fn run(spec: &BenchSpec, mut each: impl FnMut(&BenchRow) + Send) -> Result<Vec<BenchRow>> {
    let (pool, threads) = pool(spec.threads)?;
    pool.install(|| {
        let arch = &spec.arch;
        let b = spec.batch;
        let data = random_batch(arch, b);
        let mut theta0 = vec![0.0f32; arch.param_count()];
        init_params(arch.model.nodes(), &mut theta0, &mut Rng::new(1));
        let head = RowHead {
            model: arch.spec.clone(),
            act: match &arch.mlp {
                Some(s) => s.act.name().to_string(),
                None => String::new(),
            },
            batch: b,
            threads,
        };
        let opt: Optimizer<f32> = Sgd::paper().into();
        let mut rows = vec![];
        let mut cpu: Vec<Timed> = vec![];
        for &m in &spec.methods {
            let method = m.method(0.05, 0.1, 0.05, 0.01);
            if spec.backend == BackendName::Gpu {
                let g =
                    crate::gpu::bench(arch, b, &method, spec.repeats, spec.warmup, spec.precision)?;
                let row = head.gpu_row(m, g);
                each(&row);
                rows.push(row);
                continue;
            }
            let amortize: Vec<Option<Amortize>> = if has_ascent(m) {
                spec.amortize.iter().copied().map(Some).collect()
            } else {
                vec![None]
            };
            for a in amortize {
                let mut be: Box<dyn Backend> = Box::new(CpuBackend::new(
                    arch.model.clone(),
                    Par { threads },
                    data.train.x.clone(),
                    data.train.y.clone(),
                    b,
                    &method,
                    &opt,
                    a.is_some_and(|a| a != Amortize::Every(1)),
                )?);
                be.set_params(&theta0, None)?;
                cpu.push(Timed {
                    m,
                    method,
                    a,
                    be,
                    st: SgdState::default(),
                    times: Vec::with_capacity(spec.repeats),
                    fresh: Vec::with_capacity(spec.repeats),
                });
            }
        }
        round_robin(&mut cpu, spec, b, &opt)?;
        for c in cpu.iter_mut() {
            let row = c.row(&head);
            each(&row);
            rows.push(row);
        }
        Ok(rows)
    })
}

/// One batch of `b` random inputs (normal) and labels for `arch`.
fn random_batch(arch: &Arch, b: usize) -> Dataset {
    let (n0, k) = (arch.inputs(), arch.outputs());
    let d = arch.model.input;
    let mut rng = Rng::new(7);
    Dataset {
        name: "random".into(),
        features: n0,
        dims: (d.c, d.h, d.w),
        classes: k,
        train: Split {
            x: (0..b * n0).map(|_| rng.normal() as f32).collect(),
            y: (0..b).map(|_| rng.below(k) as u32).collect(),
        },
        test: Split::default(),
        notes: vec![],
        zero: vec![0.0; d.c],
        pre: Default::default(),
    }
}

/// Times every CPU configuration, one step of each in turn, `spec.warmup`
/// untimed rounds then `spec.repeats` timed ones, on the batch's `b`
/// samples.
fn round_robin(cpu: &mut [Timed], spec: &BenchSpec, b: usize, opt: &Optimizer<f32>) -> Result<()> {
    let idx: Vec<u32> = (0..b as u32).collect();
    for k in 0..spec.warmup + spec.repeats {
        for c in cpu.iter_mut() {
            let ascent = match c.a {
                Some(a) if !a.fresh(1, k as u64) => Ascent::Reuse,
                _ => Ascent::Fresh,
            };
            let so = StepOptions {
                ascent,
                ..StepOptions::default()
            };
            let t = Instant::now();
            c.be.step(&idx, &c.method, opt, &so, &mut c.st, 1e-3)
                .and_then(|()| c.be.flush(&mut c.st).map(|_| ()))
                .map_err(|e| anyhow!("{} step failed: {e}", c.m.as_str()))?;
            if k >= spec.warmup {
                c.times.push(t.elapsed().as_secs_f64() * 1e3);
                c.fresh.push(ascent == Ascent::Fresh);
            }
        }
    }
    Ok(())
}

/// The fields every row of one benchmark shares.
struct RowHead {
    model: String,
    act: String,
    batch: usize,
    threads: usize,
}

impl RowHead {
    /// The row of a GPU measurement.
    fn gpu_row(&self, m: MethodName, g: fdgr_gpu::Bench) -> BenchRow {
        BenchRow {
            method: m.as_str().into(),
            backend: "gpu".into(),
            model: self.model.clone(),
            act: self.act.clone(),
            batch: self.batch,
            threads: self.threads,
            ascent: "1".into(),
            median_ms: g.ms_median,
            mean_ms: f64::NAN,
            fresh_frac: 1.0,
            fresh_median_ms: g.ms_median,
            reuse_median_ms: f64::NAN,
            min_ms: g.ms_min,
            max_ms: f64::NAN,
            repeats: g.steps,
            gpu: Some(g.to_json()),
        }
    }
}

/// One CPU configuration being timed.
struct Timed {
    m: MethodName,
    method: fdgr_kernel::Method<f32>,
    a: Option<Amortize>,
    be: Box<dyn Backend>,
    st: SgdState,
    times: Vec<f64>,
    fresh: Vec<bool>,
}

impl Timed {
    /// The row of its timed steps: the median of fresh and reused ascent
    /// steps weighted by their shares, the mean, the extremes.
    fn row(&mut self, head: &RowHead) -> BenchRow {
        let n = self.times.len().max(1) as f64;
        let mean = self.times.iter().sum::<f64>() / n;
        let kind = |fresh: bool| {
            let mut v: Vec<f64> = (self.times.iter().zip(&self.fresh))
                .filter(|(_, f)| **f == fresh)
                .map(|(t, _)| *t)
                .collect();
            v.sort_by(f64::total_cmp);
            (v.len() as f64 / n, median(&v))
        };
        let (ff, fm) = kind(true);
        let (fr, rm) = kind(false);
        let weighted = if fr > 0.0 { ff * fm + fr * rm } else { fm };
        self.times.sort_by(f64::total_cmp);
        BenchRow {
            method: self.m.as_str().into(),
            backend: self.be.name().into(),
            model: head.model.clone(),
            act: head.act.clone(),
            batch: head.batch,
            threads: head.threads,
            ascent: self.a.map_or_else(|| "-".into(), |a| a.label()),
            median_ms: weighted,
            mean_ms: mean,
            fresh_frac: ff,
            fresh_median_ms: fm,
            reuse_median_ms: rm,
            min_ms: self.times.first().copied().unwrap_or(f64::NAN),
            max_ms: self.times.last().copied().unwrap_or(f64::NAN),
            repeats: self.times.len(),
            gpu: None,
        }
    }
}

/// Median of sorted values.
pub fn median(sorted: &[f64]) -> f64 {
    let n = sorted.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        sorted[n / 2]
    } else {
        0.5 * (sorted[n / 2 - 1] + sorted[n / 2])
    }
}
