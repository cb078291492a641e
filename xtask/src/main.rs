//! `cargo xtask test`: everything CI checks, in one command.
//!
//! Installs what the checks need where it can (rustup targets, a C++
//! compiler, Open MPI, libclang and QEMU via apt, the NVRTC wheel via pip),
//! then runs: rustfmt, clippy -D warnings (the host with and without its
//! `mpi` feature), rustdoc -D warnings, all workspace tests with the `mpi`
//! feature (among them the CUDA kernels compiled for and run on the CPU
//! against the CPU kernel, and data-parallel training under `mpirun`), the
//! kernel's no_std builds for Cortex-M4F and Cortex-M0+,
//! the firmware builds and the QEMU cross-check, and the NVRTC compilation
//! of every CUDA kernel. `cargo xtask mutants` (not part of `test`) breaks
//! one line of each CUDA source in turn and checks that a test fails.

mod firmware;
mod fw_util;
mod modules;
mod mutants;
mod nvrtc;
mod util;

use std::process::ExitCode;
use util::{cargo, run, Step};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let cmd = args.first().map(String::as_str).unwrap_or("help");
    let result = match cmd {
        "test" => test(&args[1..]),
        "firmware" => firmware::check(),
        "fw-profile" => firmware::profile(&args[1..]),
        "nvrtc" => nvrtc::check(),
        "modules" => modules::check().map(drop),
        "mutants" => mutants::check(args.get(1).map(String::as_str)),
        _ => {
            eprintln!(
                "usage: cargo xtask <command>\n\n\
                 commands:\n  \
                 test       fmt, clippy, docs, all tests, thumb builds, QEMU cross-check, NVRTC\n  \
                 firmware   build the firmware examples and run the QEMU cross-check only\n  \
                 fw-profile one qemu-m4 build: instructions per step and per function\n             \
                 (`--method M --mode full|last --opt sgd|adam --model F --stream F`)\n  \
                 nvrtc      compile every CUDA kernel to PTX with NVRTC only\n  \
                 modules    the module dependency cycles check only\n  \
                 mutants    break one line of each CUDA source in turn; the GPU tests must fail\n             \
                 (`mutants FILTER`: only those whose file or description contains FILTER)"
            );
            return if cmd == "help" {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(2)
            };
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("\nxtask: FAILED: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The targets the boards build for (each one's `.cargo/config.toml`),
/// each once: the rustup targets CI installs and the kernel's `no_std`
/// builds.
fn thumb_targets() -> Vec<&'static str> {
    let mut v = vec![];
    for b in fdgr_mcu::board::Board::ALL {
        if !v.contains(&b.triple()) {
            v.push(b.triple());
        }
    }
    v
}

fn test(args: &[String]) -> Result<(), String> {
    let quick = args.iter().any(|a| a == "--quick");
    let mut steps: Vec<Step> = vec![];
    let thumb = thumb_targets();
    util::ensure_targets(&thumb)?;
    util::ensure_cxx()?;
    util::ensure_mpi()?;
    steps.push(run("rustfmt", cargo(&["fmt", "--all", "--check"]))?);
    steps.push(modules::check()?);
    steps.push(run(
        "clippy -D warnings",
        cargo(&[
            "clippy",
            "--workspace",
            "--all-targets",
            "--features",
            "fdgr/mpi",
            "--",
            "-D",
            "warnings",
        ]),
    )?);
    steps.push(run(
        "clippy -D warnings (host without mpi)",
        cargo(&[
            "clippy",
            "-p",
            "fdgr",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]),
    )?);
    let mut doc = cargo(&["doc", "--workspace", "--no-deps", "--features", "fdgr/mpi"]);
    doc.env("RUSTDOCFLAGS", "-D warnings");
    steps.push(run("rustdoc -D warnings", doc)?);
    let mut doc = cargo(&["doc", "-p", "fdgr", "--no-deps"]);
    doc.env("RUSTDOCFLAGS", "-D warnings");
    steps.push(run("rustdoc -D warnings (host without mpi)", doc)?);
    // The NVRTC wheel that the GPU crate's PTX test compiles with (under CI
    // that test fails without it, by design).
    if !quick {
        steps.extend(nvrtc::prepare()?);
    }
    steps.push(run(
        "workspace tests (host with mpi; release speed, overflow checks on)",
        cargo(&[
            "test",
            "--workspace",
            "--profile",
            "ci",
            "--features",
            "fdgr/mpi",
        ]),
    )?);
    for t in thumb {
        steps.push(run(
            &format!("kernel no_std build {t}"),
            cargo(&["build", "-p", "fdgr-kernel", "--release", "--target", t]),
        )?);
        steps.push(run(
            &format!("kernel no_std build {t} (micromath, defmt)"),
            cargo(&[
                "build",
                "-p",
                "fdgr-kernel",
                "--release",
                "--target",
                t,
                "--no-default-features",
                "--features",
                "micromath,defmt",
            ]),
        )?);
    }
    if !quick {
        steps.extend(firmware::steps()?);
        steps.extend(nvrtc::steps()?);
    }
    println!("\n== summary ==");
    for s in &steps {
        println!("  ok  {:<50} {:>7.1} s", s.name, s.seconds);
    }
    if quick {
        println!("  SKIPPED (--quick): firmware/QEMU cross-check and NVRTC compilation");
    }
    Ok(())
}
