//! Data-parallel training under `mpirun` on this machine (feature `mpi`;
//! needs Open MPI's `mpirun`, which `cargo xtask test` installs).
//!
//! * 2 and 3 processes with `--ascent global` give the losses and final
//!   weights of one process on the same global batches, to f32
//!   reduction-order tolerance ([`TOL`]), for F-GR on an MLP (uneven
//!   slices: the epoch's last batch of 38 samples) and for SAM on a conv
//!   net with random-crop augmentation;
//! * `--ascent local` takes one all-reduce per step and another step;
//! * `kill -9` of one process stops the job with the launcher's error
//!   naming the process, leaves no process behind and the last checkpoint
//!   intact, and the run resumes from it with another number of processes
//!   to the uninterrupted run's weights;
//! * exit codes: bad input 2 and divergence 3 with one message, whatever
//!   the number of processes.
//!
//! The tolerance. Every gradient entry is a sum over the B samples of the
//! global batch; one process adds them in the order its executor chooses,
//! N processes add their slices' terms and then the N partial sums (and
//! scale each slice's mean by b_r/B instead of dividing by B once). The
//! terms are the same, only the order of the f32 additions differs, so
//! each step's gradients differ by a few units in the last place (u =
//! 2⁻²⁴ ≈ 6e-8 relative), and θ by about η·(that) per step, carried
//! forward by momentum. Measured here: 4e-8 on weights of size ≤ 0.4
//! after 48 steps, 3e-7 on the losses, the same size as between one process
//! on 1 and 2 threads. [`TOL`] = 1e-5 (absolute on θ, relative on losses)
//! leaves two orders of magnitude for other machines' summation orders,
//! while any real error (a slice counted twice or not at all, a missing
//! all-reduce, a wrong weight b_r/B, a different augmentation draw) moves
//! θ by 1e-3 or more in the first step.
//!
//! The nets here are smooth (tanh, average pooling) on purpose: with ReLU
//! or max pooling, a difference of one ulp flips, once in a few million
//! pre-activations, a unit across its kink (or a max to another input),
//! and that sample's term then jumps by O(η): a 40-epoch ReLU run on 2 → 3
//! processes ended 2e-3 from one process here, as any change of summation
//! order (another BLAS, another thread split) would do.
#![cfg(feature = "mpi")]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// f32 reduction-order tolerance (see the module documentation).
const TOL: f64 = 1e-5;

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_fdgr")
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("fdgr-mpi-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// `mpirun -np N fdgr <args>` on this machine: as root where the tests run
/// as root, more processes than cores allowed, no core binding, shared
/// memory without the single-copy mechanism containers often forbid,
/// waiting processes yielding their core.
fn mpirun(np: usize) -> Command {
    let mut c = Command::new("mpirun");
    c.args([
        "-np",
        &np.to_string(),
        "--oversubscribe",
        "--bind-to",
        "none",
    ])
    .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
    .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
    .env("OMPI_MCA_btl_vader_single_copy_mechanism", "none")
    .env("OMPI_MCA_orte_base_help_aggregate", "0")
    .arg(bin());
    c
}

/// `fdgr train ARGS --out OUT -q` on `np` processes (1: plain, no mpirun).
fn train(np: usize, args: &[&str], out: &Path) -> Output {
    let mut c = if np == 1 {
        Command::new(bin())
    } else {
        mpirun(np)
    };
    c.arg("train")
        .args(args)
        .arg("--out")
        .arg(out)
        .arg("-q")
        .stdin(Stdio::null());
    let o = c.output().expect("run mpirun (Open MPI) / fdgr");
    assert!(
        o.status.success(),
        "{np} process(es) {args:?}: {}\n{}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

/// The f32 tensors of a safetensors file, by name.
fn tensors(p: &Path) -> Vec<(String, Vec<f32>)> {
    let bytes = std::fs::read(p).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut v: Vec<(String, Vec<f32>)> = st
        .tensors()
        .into_iter()
        .filter(|(_, t)| t.dtype() == safetensors::Dtype::F32)
        .map(|(n, t)| {
            let d = t
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            (n, d)
        })
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

fn json(p: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn metrics(dir: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Largest difference of weights (absolute) and of the per-epoch losses
/// (relative) between two runs.
fn differences(a: &Path, b: &Path) -> (f64, f64) {
    let (ta, tb) = (
        tensors(&a.join("model.safetensors")),
        tensors(&b.join("model.safetensors")),
    );
    assert_eq!(ta.len(), tb.len());
    let mut dw = 0.0f64;
    for ((na, va), (nb, vb)) in ta.iter().zip(&tb) {
        assert_eq!((na, va.len()), (nb, vb.len()));
        for (x, y) in va.iter().zip(vb) {
            dw = dw.max((*x as f64 - *y as f64).abs());
        }
    }
    let (ma, mb) = (metrics(a), metrics(b));
    assert_eq!(ma.len(), mb.len());
    let mut dl = 0.0f64;
    for (ra, rb) in ma.iter().zip(&mb) {
        for k in ["train_loss", "test_loss"] {
            let (x, y) = (ra[k].as_f64().unwrap(), rb[k].as_f64().unwrap());
            dl = dl.max((x - y).abs() / x.abs().max(1e-3));
        }
    }
    (dw, dl)
}

const MLP: &[&str] = &[
    "--data", "digits", "--model", "64-32-10", "--act", "tanh", "--method", "fgr", "--epochs", "4",
    "--batch", "100",
];

#[test]
fn two_and_three_processes_equal_one_with_the_same_global_batch() {
    let conv: &[&str] = &[
        "--data",
        "digits",
        "--model",
        "conv:4:3:p1,tanh,avgpool:2,flatten,linear",
        "--method",
        "sam",
        "--rho",
        "0.05",
        "--augment",
        "crop",
        "--augment-pad",
        "1",
        "--epochs",
        "2",
        "--batch",
        "64",
    ];
    for (name, args, evals) in [("mlp-fgr", MLP, 2.0), ("conv-sam-crop", conv, 2.0)] {
        let one = tmp(&format!("{name}-1"));
        train(1, args, &one);
        for np in [2, 3] {
            let many = tmp(&format!("{name}-{np}"));
            train(np, args, &many);
            let (dw, dl) = differences(&one, &many);
            eprintln!(
                "{name}: {np} processes vs 1: max |Δθ| {dw:.2e}, max relative Δloss {dl:.2e}"
            );
            assert!(
                dw <= TOL && dl <= TOL,
                "{name}, {np} processes: Δθ {dw:e}, Δloss {dl:e}"
            );
            let s = json(&many.join("summary.json"));
            assert_eq!(s["processes"], np);
            assert_eq!(s["allreduce_per_step"].as_f64(), Some(evals));
            // P + 2 floats per all-reduce
            let p = s["params"].as_f64().unwrap();
            assert_eq!(
                s["allreduce_bytes_per_step"].as_f64(),
                Some(evals * 4.0 * (p + 2.0))
            );
            // rank 0 alone wrote the run
            let mut files: Vec<String> = std::fs::read_dir(&many)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            files.sort();
            assert_eq!(
                files,
                [
                    "checkpoint.safetensors",
                    "curves.png",
                    "metrics.jsonl",
                    "model.safetensors",
                    "summary.json"
                ]
            );
        }
    }
}

#[test]
fn local_ascent_takes_one_all_reduce_per_step_and_another_step() {
    let global = tmp("global-2");
    train(2, MLP, &global);
    let local = tmp("local-2");
    let mut args = MLP.to_vec();
    args.extend(["--ascent", "local"]);
    train(2, &args, &local);
    let s = json(&local.join("summary.json"));
    assert_eq!(s["allreduce_per_step"].as_f64(), Some(1.0));
    assert_eq!(s["config"]["ascent"], "local");
    let (dw, _) = differences(&global, &local);
    assert!(dw > 100.0 * TOL, "local and global ascent: Δθ {dw:e}");
    // and on one process both are the same step
    let (a, b) = (tmp("global-1"), tmp("local-1"));
    train(1, MLP, &a);
    train(1, &args, &b);
    assert_eq!(
        std::fs::read(a.join("model.safetensors")).unwrap(),
        std::fs::read(b.join("model.safetensors")).unwrap()
    );
}

/// The fdgr processes mpirun `launcher` started, with their ranks.
fn ranks_of(launcher: u32) -> Vec<(u32, usize)> {
    let mut v = vec![];
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // pid (comm) state ppid ...
        let after = stat.rsplit_once(')').map_or("", |x| x.1);
        let ppid: u32 = after
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        if ppid != launcher {
            continue;
        }
        let env = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
        for kv in env.split(|&b| b == 0) {
            if let Some(r) = kv.strip_prefix(b"OMPI_COMM_WORLD_RANK=") {
                if let Ok(r) = std::str::from_utf8(r).unwrap_or("").parse() {
                    v.push((pid, r));
                }
            }
        }
    }
    v
}

#[test]
fn kill_9_of_one_process_stops_the_job_and_it_resumes_on_another_count() {
    let args: &[&str] = &[
        "--data", "digits", "--model", "64-64-10", "--act", "tanh", "--method", "fgr", "--epochs",
        "40", "--batch", "64",
    ];
    let reference = tmp("kill-reference");
    train(1, args, &reference);

    let run = tmp("kill-run");
    let mut child = mpirun(2)
        .arg("train")
        .args(args)
        .arg("--out")
        .arg(&run)
        .arg("-q")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("mpirun");
    // wait for the second epoch's checkpoint, then kill rank 1
    let t0 = Instant::now();
    let victim = loop {
        let done =
            std::fs::read_to_string(run.join("metrics.jsonl")).map_or(0, |m| m.lines().count());
        let ranks = ranks_of(child.id());
        if done >= 2 && ranks.len() == 2 {
            break ranks.iter().find(|r| r.1 == 1).unwrap().0;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before it could be killed"
        );
        assert!(t0.elapsed() < Duration::from_secs(120), "no checkpoint");
        std::thread::sleep(Duration::from_millis(5));
    };
    let others: Vec<u32> = ranks_of(child.id())
        .into_iter()
        .filter(|r| r.1 != 1)
        .map(|r| r.0)
        .collect();
    Command::new("kill")
        .args(["-9", &victim.to_string()])
        .status()
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the job went on: {err}");
    assert!(
        err.contains("rank 1") && err.contains("signal 9"),
        "no clear error naming the killed process:\n{err}"
    );
    std::thread::sleep(Duration::from_millis(200));
    for pid in others {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = stat.rsplit_once(')').map_or("", |x| x.1.trim());
        assert!(
            stat.is_empty() || state.starts_with('Z'),
            "rank 0 (pid {pid}) still running: {state}"
        );
    }
    let done = metrics(&run).len();
    assert!((2..40).contains(&done), "{done} epochs recorded");

    // the last checkpoint resumes, on 3 processes, to the uninterrupted
    // run's weights
    let o = mpirun(3)
        .args(["train", "-q", "--resume"])
        .arg(&run)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "resume on 3 processes: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let (dw, dl) = differences(&reference, &run);
    eprintln!("killed after {done} epochs, resumed on 3: max |Δθ| {dw:.2e}, Δloss {dl:.2e}");
    assert!(dw <= TOL && dl <= TOL, "Δθ {dw:e}, Δloss {dl:e}");
    let s = json(&run.join("summary.json"));
    assert_eq!(s["processes"], 3);
    assert_eq!(s["last"]["epoch"], 40);
}

#[test]
fn bad_input_and_divergence_exit_alike_on_every_count() {
    for np in [2, 3] {
        for (args, code, says) in [
            (
                &["--data", "digits", "--model", "64-10", "--lr", "-1"][..],
                2,
                "--lr -1",
            ),
            (
                &["--data", "digits", "--model", "64-10", "--batch", "2"][..],
                2,
                "fewer than one per process",
            ),
            (
                &[
                    "--data", "digits", "--model", "64-10", "--lr", "1e30", "--epochs", "2",
                ][..],
                3,
                "diverged",
            ),
        ] {
            if np == 2 && says.starts_with("fewer") {
                continue; // batches of 2 on 2 processes: one sample each, allowed
            }
            let out = tmp(&format!("codes-{np}-{code}"));
            let o = mpirun(np)
                .arg("train")
                .args(args)
                .arg("--out")
                .arg(&out)
                .arg("-q")
                .stdin(Stdio::null())
                .output()
                .unwrap();
            let err = String::from_utf8_lossy(&o.stderr);
            assert_eq!(o.status.code(), Some(code), "{np} {args:?}:\n{err}");
            assert_eq!(
                err.lines().filter(|l| l.starts_with("error:")).count(),
                1,
                "{np} {args:?}: one error line:\n{err}"
            );
            assert!(err.contains(says), "{np} {args:?}:\n{err}");
        }
    }
}
