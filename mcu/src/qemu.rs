//! The emulated Cortex-M4F (`qemu-system-arm -machine mps2-an386`) and the
//! TCG plugin that counts its instructions exactly
//! (`firmware-examples/qemu-icount`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::process::run_limited;

/// `qemu-system-arm --version` as (major, minor).
pub fn qemu_version() -> Result<(u32, u32), String> {
    let out = Command::new("qemu-system-arm")
        .arg("--version")
        .output()
        .map_err(|e| format!("qemu-system-arm --version: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let v = text
        .split_whitespace()
        .skip_while(|w| *w != "version")
        .nth(1)
        .ok_or_else(|| format!("cannot read the QEMU version from {text:?}"))?;
    let mut it = v.split('.').map(|p| p.parse::<u32>().ok());
    match (it.next().flatten(), it.next().flatten()) {
        (Some(a), Some(b)) => Ok((a, b)),
        _ => Err(format!("cannot read the QEMU version from {text:?}")),
    }
}

/// `qemu-system-arm` for the MPS2-AN386 board (Cortex-M4F), no display,
/// semihosting on (the `qemu-m4` runner's arguments); the caller adds
/// `-kernel ELF`.
pub fn qemu_m4() -> Command {
    let mut q = Command::new("qemu-system-arm");
    q.args(QEMU_M4_ARGS);
    q
}

/// The arguments of [`qemu_m4`].
pub const QEMU_M4_ARGS: [&str; 12] = [
    "-machine",
    "mps2-an386",
    "-cpu",
    "cortex-m4",
    "-display",
    "none",
    "-monitor",
    "none",
    "-serial",
    "null",
    "-semihosting-config",
    "enable=on,target=native",
];

/// Where the plugin is built (`libfdgr_qemu_icount.so`).
pub fn plugin_path(fw: &Path) -> PathBuf {
    fw.join("target")
        .join("host")
        .join("release")
        .join("libfdgr_qemu_icount.so")
}

/// The `-plugin` argument that records the instruction count at every
/// call of `fdgr_mark` (at `marker`) into `out`.
pub fn plugin_arg(plugin: &Path, marker: u64, out: &Path) -> String {
    format!(
        "{},marker={marker:#x},out={}",
        plugin.display(),
        out.display()
    )
}

/// The instruction-count plugin, built for the QEMU at hand.
#[derive(Clone, Debug)]
pub struct Plugin {
    /// The shared library.
    pub path: PathBuf,
    /// The plugin API version QEMU loaded.
    pub version: String,
    /// The versions QEMU refused before, with its message.
    pub refused: Vec<(String, String)>,
}

/// Builds the instruction-count plugin and checks that QEMU loads it,
/// trying API versions (`FDGR_QEMU_PLUGIN_VERSION` alone when set; else 1
/// first up to QEMU 8, 2 first from QEMU 9, then the others up to 4).
/// `build` runs each cargo build (the caller decides what it prints).
pub fn build_plugin(
    fw: &Path,
    qemu_major: u32,
    build: &mut dyn FnMut(&str, Command) -> Result<(), String>,
) -> Result<Plugin, String> {
    let candidates: Vec<String> = match std::env::var("FDGR_QEMU_PLUGIN_VERSION") {
        Ok(v) if !v.is_empty() => vec![v],
        _ if qemu_major >= 9 => ["2", "3", "4", "1"].map(String::from).to_vec(),
        _ => ["1", "2", "3", "4"].map(String::from).to_vec(),
    };
    let plugin = plugin_path(fw);
    let mut refused = vec![];
    let mut why = String::new();
    for v in &candidates {
        let mut c = Command::new(crate::board::cargo_bin());
        c.args(["build", "--release", "--manifest-path"])
            .arg(fw.join("qemu-icount").join("Cargo.toml"))
            .arg("--target-dir")
            .arg(fw.join("target").join("host"))
            .env("FDGR_QEMU_PLUGIN_VERSION", v);
        build(
            &format!("QEMU instruction-count plugin (API version {v})"),
            c,
        )?;
        // QEMU loads plugins before the kernel: a missing kernel then
        // fails with its own message, a refused plugin with "plugin".
        let mut q = Command::new("qemu-system-arm");
        q.args([
            "-machine",
            "mps2-an386",
            "-display",
            "none",
            "-monitor",
            "none",
            "-serial",
            "null",
            "-plugin",
        ])
        .arg(format!("{},marker=0x0", plugin.display()))
        .arg("-kernel")
        .arg(fw.join("target").join("no-such-kernel.elf"));
        let r = run_limited(q, Duration::from_secs(30))?;
        let err = String::from_utf8_lossy(&r.stderr).to_string();
        if !err.contains("Could not load plugin") {
            return Ok(Plugin {
                path: plugin,
                version: v.clone(),
                refused,
            });
        }
        why = err.trim().to_string();
        refused.push((v.clone(), why.clone()));
    }
    Err(format!(
        "QEMU does not load the instruction-count plugin ({why}); set FDGR_QEMU_PLUGIN_VERSION"
    ))
}

/// Instructions of every step from the plugin's `mark` lines: the first
/// two marks measure the marker's own cost, then each step lies between a
/// pair of marks.
pub fn step_instructions(counts: &str, steps: usize) -> Result<Vec<u64>, String> {
    let marks: Vec<u64> = counts
        .lines()
        .filter_map(|l| l.strip_prefix("mark "))
        .map(|v| v.trim().parse::<u64>().map_err(|e| e.to_string()))
        .collect::<Result<_, _>>()?;
    if marks.len() != 2 + 2 * steps {
        return Err(format!(
            "expected {} marker hits, got {}",
            2 + 2 * steps,
            marks.len()
        ));
    }
    let overhead = marks[1]
        .checked_sub(marks[0])
        .ok_or("marker counts out of order")?;
    (0..steps)
        .map(|i| {
            marks[3 + 2 * i]
                .checked_sub(marks[2 + 2 * i])
                .and_then(|d| d.checked_sub(overhead))
                .ok_or_else(|| format!("marker counts of step {i} out of order"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instruction_counts() {
        let counts = "total 999\nmark 100\nmark 105\nmark 200\nmark 305\nmark 400\nmark 455\n";
        assert_eq!(step_instructions(counts, 2).unwrap(), vec![100, 50]);
        assert!(step_instructions(counts, 3).is_err());
        assert!(step_instructions("mark 5\nmark 1\n", 0).is_err());
    }
}
