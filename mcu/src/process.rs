//! Commands run with a time limit, their standard output handed over as it
//! arrives (so a device's log is decoded live).

use std::io::Read as _;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Exit code and output of a command run with a time limit.
pub struct Finished {
    /// Exit code (`None`: killed by a signal).
    pub code: Option<i32>,
    /// Standard output.
    pub stdout: Vec<u8>,
    /// Standard error.
    pub stderr: Vec<u8>,
    /// Wall time.
    pub seconds: f64,
}

/// Runs `c`, killing it after `limit`; a timeout is an error.
pub fn run_limited(c: Command, limit: Duration) -> Result<Finished, String> {
    run_streaming(c, limit, &mut |_| Ok(()))
}

/// Runs `c` with its standard output piped to `on_stdout` chunk by chunk
/// as it arrives (and kept in [`Finished::stdout`]); kills it (and the
/// processes it started) after `limit`, which is an error, as is an error
/// of `on_stdout` (the command is killed then too).
pub fn run_streaming(
    mut c: Command,
    limit: Duration,
    on_stdout: &mut dyn FnMut(&[u8]) -> Result<(), String>,
) -> Result<Finished, String> {
    let t = Instant::now();
    let mut child = c
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {:?}: {e}", c.get_program()))?;
    let mut out = child.stdout.take().ok_or("no stdout pipe")?;
    let mut err = child.stderr.take().ok_or("no stderr pipe")?;
    let (tx, rx) = mpsc::channel::<Vec<u8>>();
    let ro = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        loop {
            match out.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if tx.send(buf[..n].to_vec()).is_err() {
                        break;
                    }
                }
            }
        }
    });
    let re = std::thread::spawn(move || {
        let mut b = vec![];
        let _ = err.read_to_end(&mut b);
        b
    });
    let mut stdout = vec![];
    let mut failed: Option<String> = None;
    let status = loop {
        match rx.recv_timeout(Duration::from_millis(20)) {
            Ok(chunk) => {
                if failed.is_none() {
                    if let Err(e) = on_stdout(&chunk) {
                        failed = Some(e);
                    }
                }
                stdout.extend_from_slice(&chunk);
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            // The pipe closed: wait for the exit below.
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                if let Some(s) = child.try_wait().map_err(|e| e.to_string())? {
                    break s;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let timed_out = t.elapsed() > limit;
        if timed_out || failed.is_some() {
            kill_tree(child.id());
            let _ = child.kill();
            let _ = child.wait();
            let _ = ro.join();
            let _ = re.join();
            return Err(match failed {
                Some(e) => e,
                None => format!(
                    "{:?} did not finish within {} s (killed)",
                    c.get_program(),
                    limit.as_secs()
                ),
            });
        }
    };
    // The rest of the output, if any came after the exit was seen.
    let _ = ro.join();
    for chunk in rx.try_iter() {
        if failed.is_none() {
            if let Err(e) = on_stdout(&chunk) {
                failed = Some(e);
            }
        }
        stdout.extend_from_slice(&chunk);
    }
    if let Some(e) = failed {
        return Err(e);
    }
    Ok(Finished {
        code: status.code(),
        stdout,
        stderr: re.join().unwrap_or_default(),
        seconds: t.elapsed().as_secs_f64(),
    })
}

/// Kills the processes `pid` started, depth first (Linux: read from
/// `/proc`; elsewhere nothing), so that a runner started by cargo does not
/// outlive a killed cargo.
fn kill_tree(pid: u32) {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return;
    };
    for t in tasks.flatten() {
        let Ok(children) = std::fs::read_to_string(t.path().join("children")) else {
            continue;
        };
        for c in children
            .split_whitespace()
            .filter_map(|c| c.parse::<u32>().ok())
        {
            kill_tree(c);
            let _ = Command::new("kill")
                .args(["-KILL", &c.to_string()])
                .stderr(Stdio::null())
                .status();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_and_times_out() {
        let mut c = Command::new("sh");
        c.args([
            "-c",
            "printf ab; sleep 0.1; printf cd; echo err >&2; exit 3",
        ]);
        let mut seen = vec![];
        let r = run_streaming(c, Duration::from_secs(20), &mut |b| {
            seen.extend_from_slice(b);
            Ok(())
        })
        .unwrap();
        assert_eq!(r.code, Some(3));
        assert_eq!(r.stdout, b"abcd");
        assert_eq!(seen, b"abcd");
        assert_eq!(r.stderr, b"err\n");

        let mut c = Command::new("sh");
        c.args(["-c", "sleep 30"]);
        let t = Instant::now();
        assert!(run_limited(c, Duration::from_millis(300)).is_err());
        assert!(t.elapsed() < Duration::from_secs(10));

        // An error of the consumer stops the command.
        let mut c = Command::new("sh");
        c.args(["-c", "echo x; sleep 30"]);
        let e = run_streaming(c, Duration::from_secs(20), &mut |_| Err("stop".into()));
        assert_eq!(e.err().as_deref(), Some("stop"));
    }
}
