//! `fdgr eval`: loss and accuracy of saved weights on a data set.

use super::args::DataArgs;
use anyhow::{bail, Result};
use clap::Args;
use clap::ValueEnum;
use fdgr::checkpoint::NetFile;
use fdgr::data::{self, Dataset, Normalize, Preprocess};
use fdgr::exit::bad_input;
use fdgr::{backend, checkpoint, cpu, train};
use std::path::PathBuf;

/// `fdgr eval`.
#[derive(Args, Debug)]
#[command(after_help = after_help!(
    "Examples:\n  fdgr eval --ckpt runs/my-run --data mnist5k\n  \
    fdgr eval --ckpt runs/my-run/model.safetensors --data mnist:./fashion --split all"
))]
pub struct EvalArgs {
    /// Run directory or model/checkpoint .safetensors file
    #[arg(long)]
    pub ckpt: PathBuf,
    /// Data set, split and scaling (as in training).
    #[command(flatten)]
    pub data: DataArgs,
    /// Which samples: test | train | all
    #[arg(long, default_value = "test")]
    pub split: String,
    /// Print one JSON object
    #[arg(long)]
    pub json: bool,
    /// Also write the evaluated samples and fdgr's outputs to this
    /// safetensors file (`x` [N, C, H, W], `y` [N] I64, `logits` [N, K]),
    /// to evaluate exactly the same inputs elsewhere (bench/torch_eval.py)
    #[arg(long)]
    pub dump: Option<PathBuf>,
}

/// The model and the samples it is evaluated on.
struct Job {
    net: NetFile,
    x: Vec<f32>,
    y: Vec<u32>,
    notes: Vec<String>,
}

fn prepare(a: &EvalArgs) -> Result<Job> {
    let net = checkpoint::load_net(&a.ckpt)?;
    let d = load_data(a, net.pre.as_ref())?;
    train::check_fit(&net.arch, &d, &format!("{} (model", a.ckpt.display()))
        .map_err(|e| anyhow::anyhow!("{e})"))?;
    let (x, y) = match a.split.as_str() {
        "test" => (d.test.x, d.test.y),
        "train" => (d.train.x, d.train.y),
        "all" => (
            [d.train.x, d.test.x].concat(),
            [d.train.y, d.test.y].concat(),
        ),
        s => bail!("--split {s}: expected test, train or all"),
    };
    Ok(Job {
        net,
        x,
        y,
        notes: d.notes,
    })
}

/// The data as the run saw it: its split (seed, fraction) and its
/// normalisation with the statistics of its own training split, stored
/// in the model (`fdgr.preprocess`). A flag given explicitly wins, with a
/// warning that names both where it differs from the run's.
fn load_data(a: &EvalArgs, pre: Option<&Preprocess>) -> Result<Dataset> {
    let Some(pre) = pre else {
        // a file from before the preprocessing was stored
        return a.data.load();
    };
    let d = &a.data;
    let mut opt = d.options();
    let warn = |flag: &str, given: String, own: String| {
        eprintln!(
            "warning: {flag} {given} differs from the run's own {own} (stored in {}); using {given}",
            a.ckpt.display()
        );
    };
    match d.seed {
        Some(s) if s != pre.seed => warn("--seed", s.to_string(), pre.seed.to_string()),
        Some(_) => {}
        None => opt.seed = pre.seed,
    }
    match d.test_frac {
        Some(f) if f != pre.test_frac => {
            warn("--test-frac", f.to_string(), pre.test_frac.to_string())
        }
        Some(_) => {}
        None => opt.test_frac = pre.test_frac,
    }
    let name = |n: Normalize| {
        n.to_possible_value()
            .map_or_else(|| format!("{n:?}"), |v| v.get_name().to_string())
    };
    match d.normalize {
        // the flag, with statistics of this data's own training split
        Some(n) if n != pre.normalize && !(n == Normalize::Auto) => {
            warn("--normalize", name(n), name(pre.normalize));
            data::load(&d.data, &opt)
        }
        _ => data::load_with(&d.data, &opt, Some(pre)),
    }
}

/// `fdgr eval`.
pub fn run(a: &EvalArgs) -> Result<()> {
    let Job { net, x, y, notes } = prepare(a).map_err(bad_input)?;
    let (pool, threads) = cpu::pool(0)?;
    let mut ws = backend::eval_workspace(&net.arch, &net.state);
    let exec = cpu::Par { threads };
    let (loss, ok) =
        pool.install(|| backend::evaluate_cpu(&net.arch.model, exec, &net.theta, &x, &y, &mut ws))?;
    let acc = ok as f64 / y.len().max(1) as f64;
    if let Some(path) = &a.dump {
        let logits =
            pool.install(|| backend::outputs_cpu(&net.arch.model, exec, &net.theta, &x, &mut ws))?;
        checkpoint::save_eval_dump(path, &net.arch, &x, &y, &logits)?;
    }
    if a.json {
        println!(
            "{}",
            serde_json::json!({"ckpt": a.ckpt, "data": a.data.data, "split": a.split, "samples": y.len(),
                               "model": net.arch.spec, "loss": loss, "accuracy": acc})
        );
    } else {
        for n in &notes {
            eprintln!("{n}");
        }
        println!(
            "{} on {} ({} split, {} samples): loss {loss:.4}, accuracy {:.2}%",
            a.ckpt.display(),
            a.data.data,
            a.split,
            y.len(),
            100.0 * acc
        );
    }
    Ok(())
}
