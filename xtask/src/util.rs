//! Running commands and installing tools.

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

/// A finished check.
pub struct Step {
    /// What ran.
    pub name: String,
    /// Wall time.
    pub seconds: f64,
}

/// The workspace root.
pub fn root() -> PathBuf {
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    here.parent().map(PathBuf::from).unwrap_or(here)
}

/// `cargo <args>` in the workspace root.
pub fn cargo(args: &[&str]) -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.args(args).current_dir(root());
    c
}

/// Runs a command, failing with its name if it fails.
pub fn run(name: &str, mut c: Command) -> Result<Step, String> {
    println!("\n== {name} ==");
    let t = Instant::now();
    let status = c
        .status()
        .map_err(|e| format!("{name}: cannot start: {e}"))?;
    if !status.success() {
        return Err(format!("{name} ({status})"));
    }
    Ok(Step {
        name: name.to_string(),
        seconds: t.elapsed().as_secs_f64(),
    })
}

/// Whether a program is on PATH.
pub fn have(prog: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {prog} >/dev/null 2>&1")])
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// Adds rustup targets that are missing.
pub fn ensure_targets(targets: &[&str]) -> Result<(), String> {
    if !have("rustup") {
        println!("rustup not found: assuming targets {targets:?} are installed");
        return Ok(());
    }
    let out = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .map_err(|e| format!("rustup: {e}"))?;
    let installed = String::from_utf8_lossy(&out.stdout).to_string();
    let missing: Vec<&str> = targets
        .iter()
        .copied()
        .filter(|t| !installed.lines().any(|l| l.trim() == *t))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let mut c = Command::new("rustup");
    c.args(["target", "add"]).args(&missing);
    run(&format!("rustup target add {}", missing.join(" ")), c).map(|_| ())
}
