//! `fdgr`: train neural networks with finite-difference gradient
//! regularization (F-GR) on CPU or GPU.
//!
//! This file only parses the command line and dispatches. Each command is a
//! module of `cli/` (its flags and its printing); flag groups that several
//! commands share are in `cli/args.rs`.
//!
//! Exit codes ([`fdgr::exit`]): 0 success, 2 bad input (flags, files),
//! 3 training diverged (non-finite loss or gradient), 1 anything else (an
//! output that cannot be written, an internal error).

#[macro_use]
mod cli;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "fdgr",
    version,
    about = "Train neural networks with finite-difference gradient regularization (F-GR), on CPU or GPU",
    long_about = "Gradient regularization adds (γ/2)‖∇L‖² to the loss. F-GR computes its gradient with one \
                  gradient ascent step and one descent step (Karakida et al., ICML 2023) instead of a \
                  Hessian-vector product.",
    after_help = after_help!(
        "Examples:\n  fdgr train                       # F-GR on the shipped MNIST subset, CPU\n  \
        fdgr train --data digits --model 64-32-10 --act tanh\n  \
        fdgr sweep --methods sgd,fgr,bgr --gammas 0.01,0.1 --epss 0.05,0.2 --seeds 1,2,3\n  \
        fdgr bench --model 784-512-512-10 --batch 128\n  \
        fdgr eval --ckpt runs/my-run --data mnist5k\n  \
        fdgr device run --board qemu-m4 --from runs/my-run --verify"
    )
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
    /// Memory this command may use (e.g. 512M, 16G): replaces the
    /// available memory that fdgr checks its estimate against before it
    /// allocates a model, batch or data set
    #[arg(long, global = true, value_name = "SIZE", value_parser = parse_max_memory)]
    max_memory: Option<u64>,
}

fn parse_max_memory(s: &str) -> Result<u64, String> {
    fdgr::memory::parse_size(s).map_err(|e| format!("{e:#}"))
}

#[derive(Subcommand)]
enum Cmd {
    /// Train a model and write metrics, checkpoints, weights and plots
    Train(Box<cli::train::TrainArgs>),
    /// Loss and accuracy of saved weights on a data set
    Eval(cli::eval::EvalArgs),
    /// Grid over methods × γ × ε × seeds; table (mean ± std) and heat-maps
    Sweep(Box<cli::sweep::SweepArgs>),
    /// Per-step time of each method (median over repeats)
    Bench(cli::bench::BenchArgs),
    /// The paper's diagonal linear network: implicit bias of GR, F-GR and B-GR
    Dln(cli::dln::DlnArgs),
    /// GPU against the CPU kernel: every method from the same θ and batches
    Crosscheck(cli::crosscheck::CrossArgs),
    /// Show that two flooding steps equal one forward finite-difference GR step
    FloodCheck(cli::flood::FloodArgs),
    /// Write samples for firmware: per sample its pixels as bytes, then the label
    Samples(cli::samples::SamplesArgs),
    /// Write weights for firmware (the kernel's FDGR format)
    Export(cli::export::ExportArgs),
    /// Fine-tune a run on a microcontroller (or QEMU) and bring it back: run | verify
    Device(cli::device::DeviceArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(b) = cli.max_memory {
        fdgr::memory::set_limit(b);
    }
    let r = if !matches!(cli.cmd, Cmd::Train(_)) && fdgr::dist::in_parallel_job() {
        Err(fdgr::exit::bad_input(anyhow::anyhow!(
            "only `fdgr train` runs as one of several data-parallel processes; run this command \
             once, without mpirun"
        )))
    } else {
        dispatch(&cli.cmd)
    };
    match r {
        Ok(()) => ExitCode::from(fdgr::exit::SUCCESS),
        Err(e) => {
            if !fdgr::exit::is_silent(&e) {
                eprintln!("error: {e:#}");
            }
            ExitCode::from(fdgr::exit::code(&e))
        }
    }
}

fn dispatch(cmd: &Cmd) -> anyhow::Result<()> {
    match cmd {
        Cmd::Train(a) => cli::train::run(a),
        Cmd::Eval(a) => cli::eval::run(a),
        Cmd::Sweep(a) => cli::sweep::run(a),
        Cmd::Bench(a) => cli::bench::run(a),
        Cmd::Dln(a) => cli::dln::run(a),
        Cmd::Crosscheck(a) => cli::crosscheck::run(a),
        Cmd::FloodCheck(a) => cli::flood::run(a),
        Cmd::Samples(a) => cli::samples::run(a),
        Cmd::Export(a) => cli::export::run(a),
        Cmd::Device(a) => cli::device::run(a),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn data_help_lists_every_source() {
        for s in ["digits", "mnist5k", "mnist:", "idx:", "cifar10:", "csv:"] {
            assert!(fdgr::data::DATA_HELP.contains(s));
        }
    }

    #[test]
    fn every_help_states_every_exit_code() {
        let mut cmd = Cli::command();
        let mut helps = vec![cmd.render_long_help().to_string()];
        for sub in cmd.get_subcommands_mut().filter(|s| s.get_name() != "help") {
            helps.push(sub.render_long_help().to_string());
            for subsub in sub.get_subcommands_mut().filter(|s| s.get_name() != "help") {
                helps.push(subsub.render_long_help().to_string());
            }
        }
        assert_eq!(helps.len(), 14);
        for h in &helps {
            for code in [
                fdgr::exit::SUCCESS,
                fdgr::exit::FAILURE,
                fdgr::exit::BAD_INPUT,
                fdgr::exit::DIVERGED,
            ] {
                assert!(
                    h.contains(&format!("\n  {code}  ")),
                    "exit code {code}:\n{h}"
                );
            }
        }
    }
}
