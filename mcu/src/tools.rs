//! The tools a board needs, each checked before anything is built; a
//! missing one is named with how to get it.

use std::path::PathBuf;
use std::process::{Command, Stdio};

use crate::board::{Board, Runner};

/// Whether `prog` runs from PATH (or is a path to a program).
pub fn have(prog: &str) -> bool {
    Command::new(prog)
        .arg("--version")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// The sysroot of the `rustc` cargo builds with.
fn sysroot() -> Option<PathBuf> {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let out = Command::new(rustc)
        .args(["--print", "sysroot"])
        .stderr(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
}

/// `Ok` when the Rust standard library for `triple` is installed.
pub fn check_target(triple: &str) -> Result<(), String> {
    let Some(root) = sysroot() else {
        return Err(
            "rustc not found: install Rust with rustup (https://rustup.rs), then \
             `rustup target add thumbv7em-none-eabihf thumbv6m-none-eabi`"
                .into(),
        );
    };
    if root
        .join("lib")
        .join("rustlib")
        .join(triple)
        .join("lib")
        .is_dir()
    {
        Ok(())
    } else {
        Err(format!(
            "the Rust target {triple} is not installed (no {}): `rustup target add {triple}`",
            root.join("lib").join("rustlib").join(triple).display()
        ))
    }
}

/// The debug probes `probe-rs list` finds (its `[n]: …` lines).
pub fn probes() -> Result<Vec<String>, String> {
    let out = Command::new("probe-rs")
        .arg("list")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("probe-rs list: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with('[') && l.contains("]:"))
        .map(String::from)
        .collect())
}

/// Checks everything `board` needs before building: cargo, the rustup
/// target, and QEMU, or probe-rs and an attached probe. Returns the probes
/// found (empty for QEMU).
pub fn check(board: Board) -> Result<Vec<String>, String> {
    if !have(&crate::board::cargo_bin()) {
        return Err("cargo not found: install Rust with rustup (https://rustup.rs)".into());
    }
    check_target(board.triple())?;
    match board.runner() {
        Runner::Qemu => {
            if !have("qemu-system-arm") {
                return Err(
                    "qemu-system-arm not found (it runs the qemu-m4 firmware): install it \
                     (Debian/Ubuntu: `apt-get install qemu-system-arm`; macOS: `brew install qemu`)"
                        .into(),
                );
            }
            Ok(vec![])
        }
        Runner::ProbeRs => {
            if !have("probe-rs") {
                return Err(format!(
                    "probe-rs not found (it flashes the {board} and reads its log): install it with \
                     `cargo install probe-rs-tools --locked` (or see https://probe.rs/docs/getting-started/installation/)"
                ));
            }
            let found = probes()?;
            if found.is_empty() {
                return Err(format!(
                    "no debug probe attached (`probe-rs list` found none): connect the {} by USB \
                     (its on-board probe, or a debug probe wired to its SWD pins), check the udev \
                     rules on Linux (https://probe.rs/docs/getting-started/probe-setup/), then retry",
                    board.describe()
                ));
            }
            Ok(found)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absent_tools_and_targets() {
        assert!(!have("fdgr-no-such-program"));
        let e = check_target("thumbv99-none-eabi").unwrap_err();
        assert!(e.contains("rustup target add thumbv99-none-eabi"), "{e}");
    }
}
