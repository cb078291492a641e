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

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// Makes sure `prog` is on PATH: installs the Debian package `package`
/// with apt-get when it is missing and we run as root; fails otherwise
/// (never skips; `why` says what needs it).
pub fn ensure_apt(prog: &str, package: &str, why: &str) -> Result<(), String> {
    ensure_apt_if(prog, || have(prog), package, why)
}

/// Makes sure `what` is there (`present`): installs the Debian package
/// `package` with apt-get when it is not and we run as root; fails
/// otherwise.
pub fn ensure_apt_if(
    what: &str,
    present: impl Fn() -> bool,
    package: &str,
    why: &str,
) -> Result<(), String> {
    let prog = what;
    if present() {
        return Ok(());
    }
    if !is_root() || !have("apt-get") {
        return Err(format!(
            "{prog} not found, and it cannot be installed here (needs root and apt-get). \
             Install it (Debian/Ubuntu: `apt-get install {package}`): {why}"
        ));
    }
    println!("{prog} not found: installing {package} with apt-get");
    for args in [
        &["update"][..],
        &["install", "-y", "--no-install-recommends", package][..],
    ] {
        let st = Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .map_err(|e| format!("apt-get: {e}"))?;
        if !st.success() {
            return Err(format!("apt-get {} failed ({st})", args.join(" ")));
        }
    }
    if present() {
        Ok(())
    } else {
        Err(format!(
            "apt-get installed {package}, but {prog} is still not found"
        ))
    }
}

/// Whether libclang (which bindgen loads) is installed: `LIBCLANG_PATH`,
/// or a `libclang*.so*` in an LLVM or the system's library directory.
pub fn have_libclang() -> bool {
    if std::env::var_os("LIBCLANG_PATH").is_some() {
        return true;
    }
    let mut dirs: Vec<PathBuf> = vec![
        "/usr/lib/x86_64-linux-gnu".into(),
        "/usr/lib/aarch64-linux-gnu".into(),
        "/usr/lib64".into(),
        "/usr/lib".into(),
    ];
    if let Ok(rd) = std::fs::read_dir("/usr/lib") {
        dirs.extend(
            rd.flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with("llvm-"))
                .map(|e| e.path().join("lib")),
        );
    }
    dirs.iter().any(|d| {
        std::fs::read_dir(d).is_ok_and(|rd| {
            rd.flatten().any(|e| {
                let n = e.file_name().to_string_lossy().into_owned();
                n.starts_with("libclang") && n.contains(".so") && !n.starts_with("libclang-cpp")
            })
        })
    })
}

/// Makes sure Open MPI (`mpicc` and its headers, `mpirun`) and libclang
/// are installed: the `mpi` feature's bindings are generated by bindgen
/// from the MPI headers, and its tests launch `mpirun`.
pub fn ensure_mpi() -> Result<(), String> {
    let why =
        "fdgr's data-parallel training (feature mpi) builds against MPI and its tests run mpirun";
    ensure_apt("mpicc", "libopenmpi-dev", why)?;
    ensure_apt("mpirun", "openmpi-bin", why)?;
    ensure_apt_if("libclang", have_libclang, "libclang-dev", why)
}

/// Makes sure the C++ compiler that the `cc` crate calls (`$CXX`, else
/// `c++`) is there: the GPU tests compile the CUDA sources with it.
pub fn ensure_cxx() -> Result<(), String> {
    let why = "the GPU tests compile the CUDA kernels with the host C++ compiler (gpu/cpu-runtime)";
    match std::env::var("CXX") {
        Ok(cxx) if !cxx.trim().is_empty() => {
            let prog = cxx.split_whitespace().next().unwrap_or_default();
            if have(prog) {
                Ok(())
            } else {
                Err(format!("CXX={cxx} is not on PATH: {why}"))
            }
        }
        _ => ensure_apt("c++", "g++", why),
    }
}
