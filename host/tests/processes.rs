//! Data-parallel processes started by `fdgr train` itself
//! (`--processes N` on CPUs; `--gpus N` takes the same launcher with one
//! GPU per process and NCCL, which only the refusal without a GPU shows
//! here): the same run as one process to f32 reduction-order tolerance
//! (the tolerance and why: `mpi.rs`), and `kill -9` of one process stops
//! the job with a message naming it, the checkpoint intact and resumable
//! on another number of processes.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const TOL: f64 = 1e-5;

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("fdgr-procs-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn fdgr(args: &[&str], out: &Path, extra: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_fdgr"));
    c.arg("train")
        .args(args)
        .arg("--out")
        .arg(out)
        .arg("-q")
        .args(extra)
        .stdin(Stdio::null());
    c
}

fn ok(mut c: Command) -> Output {
    let o = c.output().unwrap();
    assert!(
        o.status.success(),
        "{:?}: {}\n{}",
        c,
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

fn weights(p: &Path) -> Vec<f32> {
    let bytes = std::fs::read(p.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut names: Vec<String> = st
        .names()
        .into_iter()
        .filter(|n| {
            st.tensor(n)
                .is_ok_and(|t| t.dtype() == safetensors::Dtype::F32)
        })
        .map(|s| s.to_string())
        .collect();
    names.sort();
    names
        .iter()
        .flat_map(|n| {
            st.tensor(n)
                .unwrap()
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect::<Vec<_>>()
        })
        .collect()
}

fn losses(p: &Path) -> Vec<f64> {
    std::fs::read_to_string(p.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .flat_map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            [
                v["train_loss"].as_f64().unwrap(),
                v["test_loss"].as_f64().unwrap(),
            ]
        })
        .collect()
}

fn max_diff(a: &Path, b: &Path) -> (f64, f64) {
    let (wa, wb) = (weights(a), weights(b));
    assert_eq!(wa.len(), wb.len());
    let dw = wa
        .iter()
        .zip(&wb)
        .map(|(x, y)| (*x as f64 - *y as f64).abs())
        .fold(0.0, f64::max);
    let (la, lb) = (losses(a), losses(b));
    assert_eq!(la.len(), lb.len());
    let dl = la
        .iter()
        .zip(&lb)
        .map(|(x, y)| (x - y).abs() / x.abs().max(1e-3))
        .fold(0.0, f64::max);
    (dw, dl)
}

const MLP: &[&str] = &[
    "--data", "digits", "--model", "64-32-10", "--act", "tanh", "--method", "fgr", "--epochs", "3",
    "--batch", "100",
];

#[test]
fn processes_equal_one_process() {
    let one = tmp("one");
    ok(fdgr(MLP, &one, &[]));
    for n in ["2", "3"] {
        let many = tmp(&format!("p{n}"));
        ok(fdgr(MLP, &many, &["--processes", n]));
        let (dw, dl) = max_diff(&one, &many);
        eprintln!("--processes {n}: max |Δθ| {dw:.2e}, relative Δloss {dl:.2e}");
        assert!(dw <= TOL && dl <= TOL, "{n}: Δθ {dw:e}, Δloss {dl:e}");
    }
}

/// The launched process of `rank`, found by its environment.
fn process_of_rank(out: &Path, rank: usize) -> Option<u32> {
    let want = format!("FDGR_DIST_RANK={rank}");
    for e in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if !String::from_utf8_lossy(&cmd).contains(&*out.to_string_lossy()) {
            continue;
        }
        let env = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
        if env.split(|&b| b == 0).any(|kv| kv == want.as_bytes()) {
            return Some(pid);
        }
    }
    None
}

#[test]
fn kill_9_of_one_process_stops_the_job_and_it_resumes() {
    let args: &[&str] = &[
        "--data", "digits", "--model", "64-64-10", "--act", "tanh", "--epochs", "40", "--batch",
        "64",
    ];
    let reference = tmp("kill-reference");
    ok(fdgr(args, &reference, &[]));
    let run = tmp("kill-run");
    let mut child = fdgr(args, &run, &["--processes", "2"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    let victim = loop {
        let done =
            std::fs::read_to_string(run.join("metrics.jsonl")).map_or(0, |m| m.lines().count());
        if done >= 2 {
            if let Some(p) = process_of_rank(&run, 1) {
                break p;
            }
        }
        assert!(child.try_wait().unwrap().is_none(), "ended before the kill");
        assert!(t0.elapsed() < Duration::from_secs(120));
        std::thread::sleep(Duration::from_millis(5));
    };
    Command::new("kill")
        .args(["-9", &victim.to_string()])
        .status()
        .unwrap();
    let o = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("process 1 of 2 was killed by signal 9"),
        "no clear error:\n{err}"
    );
    assert!(process_of_rank(&run, 0).is_none(), "rank 0 left running");
    // resume on 3 processes from the last checkpoint
    let mut c = Command::new(env!("CARGO_BIN_EXE_fdgr"));
    c.args(["train", "-q", "--processes", "3", "--resume"])
        .arg(&run);
    ok(c);
    let (dw, dl) = max_diff(&reference, &run);
    eprintln!("killed, resumed on 3 processes: max |Δθ| {dw:.2e}, Δloss {dl:.2e}");
    assert!(dw <= TOL && dl <= TOL, "Δθ {dw:e}, Δloss {dl:e}");
}

#[test]
fn gpus_without_a_gpu_is_refused_before_anything_starts() {
    let out = tmp("gpus");
    let o = fdgr(
        &["--data", "digits", "--model", "64-10"],
        &out,
        &["--gpus", "2"],
    )
    .output()
    .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert_eq!(
        err.lines().filter(|l| l.starts_with("error:")).count(),
        1,
        "{err}"
    );
    assert!(err.contains("GPU"), "{err}");
    assert!(!out.exists());
}
