//! NVRTC compilation of the CUDA kernels, without a GPU.
//!
//! Installs the PyPI wheel `nvidia-cuda-nvrtc==13.0.*` under
//! `target/nvrtc/` (pip `--target`, no virtual environment needed; newer
//! wheels emit PTX that the CUDA 13.0 / driver 580 stack rejects), points
//! `FDGR_NVRTC_LIB_DIR` and `LD_LIBRARY_PATH` at its `lib/`, and runs
//! `gpu/tests/nvrtc.rs`, which compiles every `gpu/kernels/*.cu` to PTX for
//! `compute_90` through cudarc's NVRTC API and writes the PTX to
//! `target/nvrtc/ptx/`. Then, optionally, `ptxas -arch=sm_90` from the
//! `nvidia-cuda-nvcc==13.0.*` wheel assembles each PTX file and the
//! registers and spills of every kernel are printed.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use crate::util::{cargo, have, root, run, Step};

const NVRTC_WHEEL: &str = "nvidia-cuda-nvrtc==13.0.*";
const NVCC_WHEEL: &str = "nvidia-cuda-nvcc==13.0.*";
const ARCH: &str = "sm_90";

fn base() -> PathBuf {
    root().join("target").join("nvrtc")
}

fn python() -> Result<&'static str, String> {
    ["python3", "python"]
        .into_iter()
        .find(|p| have(p))
        .ok_or_else(|| "python3 not found: it installs NVRTC from PyPI (pip)".to_string())
}

/// Files under `dir` (recursively) whose name satisfies `pred`.
fn find(dir: &Path, pred: &dyn Fn(&str) -> bool) -> Vec<PathBuf> {
    let mut out = vec![];
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(find(&p, pred));
        } else if p.file_name().and_then(|n| n.to_str()).is_some_and(pred) {
            out.push(p);
        }
    }
    out
}

fn is_nvrtc(n: &str) -> bool {
    n.starts_with("libnvrtc.so") && !n.contains("builtins") && !n.contains(".alt.")
}

/// `pip install --target <target> <spec>` unless `probe` already finds
/// what the wheel provides there.
fn pip(
    spec: &str,
    target: &Path,
    no_deps: bool,
    probe: &dyn Fn(&str) -> bool,
) -> Result<Option<Step>, String> {
    if !find(target, probe).is_empty() {
        println!("{spec}: already installed in {}", target.display());
        return Ok(None);
    }
    let py = python()?;
    let mut c = Command::new(py);
    c.args([
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
        "--target",
    ])
    .arg(target);
    if no_deps {
        c.arg("--no-deps");
    }
    c.arg(spec);
    run(&format!("pip install {spec}"), c).map(Some)
}

/// Installs NVRTC 13.0 if needed and exports `FDGR_NVRTC_LIB_DIR` and
/// `LD_LIBRARY_PATH` to this process, so every later `cargo test` finds
/// it. Call it before the workspace tests when `CI` is set: the NVRTC test
/// fails in CI without the variable.
pub fn prepare() -> Result<Vec<Step>, String> {
    let target = base().join("nvrtc-13.0");
    let mut steps = vec![];
    steps.extend(pip(NVRTC_WHEEL, &target, false, &is_nvrtc)?);
    let lib = find(&target, &is_nvrtc).into_iter().next().ok_or_else(|| {
        format!(
            "no libnvrtc.so* under {} after installing {NVRTC_WHEEL}",
            target.display()
        )
    })?;
    let dir = lib
        .parent()
        .ok_or("library without a directory")?
        .to_path_buf();
    let ld = match std::env::var("LD_LIBRARY_PATH") {
        Ok(v) if !v.is_empty() => format!("{}:{v}", dir.display()),
        _ => dir.display().to_string(),
    };
    // xtask is single-threaded: setting its environment is sound
    std::env::set_var("FDGR_NVRTC_LIB_DIR", &dir);
    std::env::set_var("LD_LIBRARY_PATH", ld);
    println!("NVRTC: {}", lib.display());
    Ok(steps)
}

/// Registers, spills and shared memory of one kernel, from `ptxas -v`.
#[derive(Default)]
struct Usage {
    kernel: String,
    regs: u32,
    spill_st: u32,
    spill_ld: u32,
    smem: u32,
}

fn number_before(line: &str, unit: &str) -> Option<u32> {
    let i = line.find(unit)?;
    line[..i].split_whitespace().last()?.parse().ok()
}

fn parse_ptxas(out: &str) -> Vec<Usage> {
    let mut v: Vec<Usage> = vec![];
    for line in out.lines() {
        if let Some(i) = line.find("Compiling entry function '") {
            let rest = &line[i + "Compiling entry function '".len()..];
            let name = rest.split('\'').next().unwrap_or("?");
            v.push(Usage {
                kernel: name.to_string(),
                ..Usage::default()
            });
        } else if let Some(u) = v.last_mut() {
            if line.contains("spill stores") {
                u.spill_st = number_before(line, "bytes spill stores").unwrap_or(0);
                u.spill_ld = number_before(line, "bytes spill loads").unwrap_or(0);
            } else if line.contains("Used") && line.contains("registers") {
                u.regs = number_before(line, "registers").unwrap_or(0);
                u.smem = number_before(line, "bytes smem").unwrap_or(0);
            }
        }
    }
    v
}

/// Assembles every PTX file with ptxas (from the nvcc wheel) and prints
/// registers and spills. Optional: a missing ptxas is reported, not fatal;
/// PTX that does not assemble is an error.
fn ptxas(ptx: &[PathBuf]) -> Result<Option<Step>, String> {
    let target = base().join("nvcc-13.0");
    let is_ptxas = |n: &str| n == "ptxas";
    if let Err(e) = pip(NVCC_WHEEL, &target, true, &is_ptxas) {
        println!("ptxas: SKIPPED (optional): {e}");
        return Ok(None);
    }
    let Some(bin) = find(&target, &is_ptxas).into_iter().next() else {
        println!("ptxas: SKIPPED (optional): not found in {NVCC_WHEEL}");
        return Ok(None);
    };
    println!("\n== ptxas -arch={ARCH} ==");
    let t = Instant::now();
    println!(
        "{:<11} {:<16} {:>9} {:>12} {:>11} {:>10}",
        "file", "kernel", "registers", "spill st (B)", "spill ld (B)", "smem (B)"
    );
    let mut spills = 0;
    for p in ptx {
        let out = Command::new(&bin)
            .arg(format!("-arch={ARCH}"))
            .arg("-v")
            .arg(p)
            .args(["-o", "/dev/null"])
            .output()
            .map_err(|e| format!("{}: {e}", bin.display()))?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if !out.status.success() {
            return Err(format!("ptxas failed on {}:\n{text}", p.display()));
        }
        let file = p
            .file_name()
            .map(|n| n.to_string_lossy().replace(".ptx", ".cu"));
        for u in parse_ptxas(&text) {
            spills += u.spill_st + u.spill_ld;
            println!(
                "{:<11} {:<16} {:>9} {:>12} {:>11} {:>10}",
                file.as_deref().unwrap_or("?"),
                u.kernel,
                u.regs,
                u.spill_st,
                u.spill_ld,
                u.smem
            );
        }
    }
    println!("total spill traffic: {spills} bytes");
    Ok(Some(Step {
        name: format!("ptxas -arch={ARCH} (registers/spills above)"),
        seconds: t.elapsed().as_secs_f64(),
    }))
}

/// The NVRTC checks of `cargo xtask test`.
pub fn steps() -> Result<Vec<Step>, String> {
    let mut steps = prepare()?;
    let ptx_dir = base().join("ptx");
    let _ = std::fs::remove_dir_all(&ptx_dir);
    let mut t = cargo(&[
        "test",
        "-p",
        "fdgr-gpu",
        "--release",
        "--test",
        "nvrtc",
        "--",
        "--nocapture",
    ]);
    t.env("FDGR_PTX_OUT", &ptx_dir);
    steps.push(run(
        "nvrtc: compile every CUDA kernel to PTX for compute_90",
        t,
    )?);
    // the test must really have compiled: one PTX per .cu source
    let sources = find(&root().join("gpu").join("kernels"), &|n: &str| {
        n.ends_with(".cu")
    });
    if sources.is_empty() {
        return Err("no CUDA sources in gpu/kernels".into());
    }
    let mut ptx = vec![];
    for s in &sources {
        let name = s
            .file_name()
            .map(|n| n.to_string_lossy().replace(".cu", ".ptx"))
            .unwrap_or_default();
        let p = ptx_dir.join(&name);
        if !p.is_file() {
            return Err(format!(
                "nvrtc test produced no {}: was it skipped?",
                p.display()
            ));
        }
        ptx.push(p);
    }
    ptx.sort();
    steps.extend(ptxas(&ptx)?);
    Ok(steps)
}

/// `cargo xtask nvrtc`.
pub fn check() -> Result<(), String> {
    steps().map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ptxas_output() {
        let out = "ptxas info    : 0 bytes gmem\n\
                   ptxas info    : Compiling entry function 'col_sum' for 'sm_90'\n\
                   ptxas info    : Function properties for col_sum\n    \
                   0 bytes stack frame, 8 bytes spill stores, 4 bytes spill loads\n\
                   ptxas info    : Used 26 registers, used 1 barriers, 1056 bytes smem\n\
                   ptxas info    : Compiling entry function 'axpy' for 'sm_90'\n\
                   ptxas info    : Used 14 registers, used 0 barriers\n";
        let u = parse_ptxas(out);
        assert_eq!(u.len(), 2);
        assert_eq!(
            (
                u[0].kernel.as_str(),
                u[0].regs,
                u[0].spill_st,
                u[0].spill_ld,
                u[0].smem
            ),
            ("col_sum", 26, 8, 4, 1056)
        );
        assert_eq!(
            (u[1].kernel.as_str(), u[1].regs, u[1].smem),
            ("axpy", 14, 0)
        );
    }
}
