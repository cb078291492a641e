//! `fdgr bench`: per-step time of each method, as a table or JSON lines.

use super::args::{arch_of, parse_methods};
use anyhow::{bail, Result};
use clap::Args;
use fdgr::bench::{self, BenchRow, BenchSpec};
use fdgr::config::{BackendName, Precision};
use fdgr::exit::bad_input;
use fdgr::sweep::Amortize;

/// `fdgr bench`.
#[derive(Args, Debug)]
#[command(after_help = after_help!(
    "Examples:\n  fdgr bench --model 784-512-512-10 --batch 128\n  \
    fdgr bench --model 64-32-10 --act tanh --batch 1 --threads 1 --json\n  \
    fdgr bench --model resnet20 --input 3x32x32 --classes 10 --methods sgd,fgr,db"
))]
pub struct BenchArgs {
    /// The network (as `fdgr train --model`: widths, a preset or a layer list)
    #[arg(long, default_value = "784-512-512-10")]
    pub model: String,
    /// Hidden activation
    #[arg(long, default_value = "relu")]
    pub act: String,
    /// Input shape CxHxW for presets and layer lists (MLP widths give their own)
    #[arg(long, default_value = "3x32x32")]
    pub input: String,
    /// Classes for presets and layer lists
    #[arg(long, default_value_t = 10)]
    pub classes: usize,
    /// Batch size
    #[arg(long, default_value_t = 128)]
    pub batch: usize,
    /// Methods, comma-separated
    #[arg(
        long,
        alias = "method",
        default_value = "sgd,db,fgr,bgr,cgr,sam,usam,flood"
    )]
    pub methods: String,
    /// Backend
    #[arg(long, value_enum, default_value_t = BackendName::Cpu)]
    pub backend: BackendName,
    /// CPU threads (0 = all cores)
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Timed steps per method
    #[arg(long, default_value_t = 30)]
    pub repeats: usize,
    /// Untimed warm-up steps per method
    #[arg(long, default_value_t = 3)]
    pub warmup: usize,
    /// Allow TF32 on the GPU (the same as --precision tf32)
    #[arg(long)]
    pub tf32: bool,
    /// Arithmetic of the GPU's products: f32, tf32, bf16
    #[arg(long, value_enum, default_value_t = Precision::F32)]
    pub precision: Precision,
    /// Amortized GR for methods with an ascent (CPU): a comma-separated
    /// list of k (a fresh ascent every k-th step) and pP (with probability
    /// P); each is timed as its own row (compare the mean column)
    #[arg(long, default_value = "1")]
    pub amortize: String,
    /// One JSON object per line
    #[arg(long)]
    pub json: bool,
}

fn prepare(a: &BenchArgs) -> Result<BenchSpec> {
    let arch = arch_of(&a.model, &a.act, &a.input, a.classes)?;
    if a.batch == 0 || a.repeats == 0 {
        bail!("--batch and --repeats must be at least 1");
    }
    if a.backend == BackendName::Gpu {
        fdgr::gpu::probe()?;
    }
    Ok(BenchSpec {
        arch,
        batch: a.batch,
        methods: parse_methods(&a.methods)?,
        backend: a.backend,
        threads: a.threads,
        repeats: a.repeats,
        warmup: a.warmup,
        precision: a.precision.gpu(a.tf32),
        amortize: Amortize::parse_list("--amortize", &a.amortize)?,
    })
}

/// `fdgr bench`.
pub fn run(a: &BenchArgs) -> Result<()> {
    let spec = prepare(a).map_err(bad_input)?;
    if !a.json {
        println!("| method | ascent | fresh | backend | model | batch | threads | median ms | fresh median | reuse median | min ms | max ms | steps/s | ÷ SGD's |");
        println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    }
    let json = a.json;
    let mut sgd = None;
    bench::run(&spec, |r| {
        if r.method == "sgd" {
            sgd = Some(r.median_ms);
        }
        if json {
            println!("{}", r.to_json());
        } else {
            print_row(r, sgd);
        }
    })?;
    Ok(())
}

fn print_row(r: &BenchRow, sgd: Option<f64>) {
    let ratio = match sgd {
        Some(s) if s > 0.0 => format!("{:.2}", r.median_ms / s),
        _ => "-".into(),
    };
    let opt = |v: f64| {
        if v.is_finite() {
            format!("{v:.4}")
        } else {
            "-".into()
        }
    };
    println!(
        "| {} | {} | {:.0}% | {} | {} | {} | {} | {:.4} | {} | {} | {:.4} | {:.4} | {:.1} | {} |",
        r.method,
        r.ascent,
        100.0 * r.fresh_frac,
        r.backend,
        format!("{} {}", r.model, r.act).trim_end(),
        r.batch,
        r.threads,
        r.median_ms,
        opt(r.fresh_median_ms),
        opt(r.reuse_median_ms),
        r.min_ms,
        r.max_ms,
        1e3 / r.median_ms,
        ratio
    );
}
