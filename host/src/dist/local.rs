//! Data-parallel processes on one machine without MPI: `fdgr train --gpus
//! N` (one process per GPU, gradients over NCCL) and `fdgr train
//! --processes N` (CPU processes).
//!
//! The command the user started becomes the *launcher*: it starts N copies
//! of itself (the same arguments less `--gpus`/`--processes`), each with
//! its rank in the environment (and, for `--gpus`, one GPU made visible),
//! and is the hub of their host-side collectives ([`HubComm`]: a
//! localhost TCP connection per process; the launcher sums what every
//! process sent, in rank order, and sends each the same result). Under
//! `--gpus` the gradients do not pass through it (NCCL carries them); the
//! hub only carries the few scalars of preparation, evaluation and the
//! checks, and the NCCL id. Under `--processes` it also carries the
//! gradients (P + 2 floats per all-reduce through the launcher: fine for
//! small models and tests, not for speed; use `mpirun` for CPU jobs).
//!
//! The launcher watches its processes: when one exits with an error or
//! is killed, it stops the others (SIGKILL after a grace of two seconds
//! for those exiting on their own) and exits with the failed process's
//! code (1 when it was killed by a signal, saying which).

use super::Comm;
use anyhow::{anyhow, bail, Context, Result};
use std::io::{BufReader, BufWriter, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Environment of a launched process: its rank.
pub const ENV_RANK: &str = "FDGR_DIST_RANK";
/// Environment of a launched process: the number of processes.
pub const ENV_SIZE: &str = "FDGR_DIST_SIZE";
/// Environment of a launched process: the launcher's hub address.
pub const ENV_HUB: &str = "FDGR_DIST_HUB";

const OP_SUM_F32: u8 = 1;
const OP_SUM_F64: u8 = 2;
const OP_MAX_U64: u8 = 3;

/// A process started by the launcher: its collectives go through the
/// launcher's hub.
pub struct HubComm {
    rank: usize,
    size: usize,
    io: Mutex<(BufReader<TcpStream>, BufWriter<TcpStream>)>,
}

impl HubComm {
    /// The hub connection of a launched process, if this is one (from
    /// [`ENV_RANK`], [`ENV_SIZE`], [`ENV_HUB`]).
    pub fn from_env() -> Result<Option<HubComm>> {
        let (Ok(rank), Ok(size), Ok(hub)) = (
            std::env::var(ENV_RANK),
            std::env::var(ENV_SIZE),
            std::env::var(ENV_HUB),
        ) else {
            return Ok(None);
        };
        let rank: usize = rank.parse().context(ENV_RANK)?;
        let size: usize = size.parse().context(ENV_SIZE)?;
        if rank >= size {
            bail!("{ENV_RANK}={rank} is not below {ENV_SIZE}={size}");
        }
        let s = TcpStream::connect(&hub).with_context(|| format!("launcher hub {hub}"))?;
        s.set_nodelay(true)?;
        let mut w = BufWriter::new(s.try_clone()?);
        w.write_all(&(rank as u32).to_le_bytes())?;
        w.flush()?;
        Ok(Some(HubComm {
            rank,
            size,
            io: Mutex::new((BufReader::new(s), w)),
        }))
    }

    /// Sends `payload` (n values of `width` bytes) under `op`, reads the
    /// result into `out`.
    fn exchange(&self, op: u8, n: usize, payload: &[u8], out: &mut [u8]) -> Result<()> {
        let mut g = self
            .io
            .lock()
            .map_err(|_| anyhow!("hub connection poisoned"))?;
        let (r, w) = &mut *g;
        w.write_all(&[op])?;
        w.write_all(&(n as u64).to_le_bytes())?;
        w.write_all(payload)?;
        w.flush()?;
        r.read_exact(out)
            .context("the launcher's hub closed (another process failed)")
    }
}

impl Comm for HubComm {
    fn rank(&self) -> usize {
        self.rank
    }
    fn size(&self) -> usize {
        self.size
    }
    fn local_size(&self) -> usize {
        self.size
    }
    fn local_rank(&self) -> usize {
        self.rank
    }
    fn describe(&self) -> String {
        "processes of one launcher".into()
    }
    fn sum_f32(&self, send: &[f32], recv: &mut [f32]) -> Result<()> {
        let p: Vec<u8> = send.iter().flat_map(|x| x.to_le_bytes()).collect();
        let mut out = vec![0u8; p.len()];
        self.exchange(OP_SUM_F32, send.len(), &p, &mut out)?;
        for (r, b) in recv.iter_mut().zip(out.chunks_exact(4)) {
            *r = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        }
        Ok(())
    }
    fn sum_f64(&self, v: &mut [f64]) -> Result<()> {
        let p: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        let mut out = vec![0u8; p.len()];
        self.exchange(OP_SUM_F64, v.len(), &p, &mut out)?;
        for (r, b) in v.iter_mut().zip(out.chunks_exact(8)) {
            *r = f64::from_le_bytes(b.try_into().unwrap_or([0; 8]));
        }
        Ok(())
    }
    fn max_u64(&self, v: &mut [u64]) -> Result<()> {
        let p: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        let mut out = vec![0u8; p.len()];
        self.exchange(OP_MAX_U64, v.len(), &p, &mut out)?;
        for (r, b) in v.iter_mut().zip(out.chunks_exact(8)) {
            *r = u64::from_le_bytes(b.try_into().unwrap_or([0; 8]));
        }
        Ok(())
    }
    fn abort(&self, code: u8) -> ! {
        // the launcher stops the others when it sees this one exit
        std::process::exit(code as i32)
    }
}

/// Combines the processes' messages (in rank order) into one result.
fn combine(op: u8, parts: &[Vec<u8>]) -> Result<Vec<u8>> {
    let len = parts[0].len();
    if parts.iter().any(|p| p.len() != len) {
        bail!("processes sent collectives of different lengths");
    }
    let mut out = parts[0].clone();
    match op {
        OP_SUM_F32 => {
            for p in &parts[1..] {
                for (o, b) in out.chunks_exact_mut(4).zip(p.chunks_exact(4)) {
                    let s = f32::from_le_bytes([o[0], o[1], o[2], o[3]])
                        + f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                    o.copy_from_slice(&s.to_le_bytes());
                }
            }
        }
        OP_SUM_F64 | OP_MAX_U64 => {
            for p in &parts[1..] {
                for (o, b) in out.chunks_exact_mut(8).zip(p.chunks_exact(8)) {
                    let (x, y) = (
                        <[u8; 8]>::try_from(&*o).unwrap_or([0; 8]),
                        <[u8; 8]>::try_from(b).unwrap_or([0; 8]),
                    );
                    let r = if op == OP_SUM_F64 {
                        (f64::from_le_bytes(x) + f64::from_le_bytes(y)).to_le_bytes()
                    } else {
                        u64::from_le_bytes(x)
                            .max(u64::from_le_bytes(y))
                            .to_le_bytes()
                    };
                    o.copy_from_slice(&r);
                }
            }
        }
        _ => bail!("unknown collective {op}"),
    }
    Ok(out)
}

/// Serves the processes' collectives until one connection closes.
fn hub(mut conns: Vec<(BufReader<TcpStream>, BufWriter<TcpStream>)>) {
    loop {
        let mut parts = Vec::with_capacity(conns.len());
        let mut op0 = 0u8;
        for (i, (r, _)) in conns.iter_mut().enumerate() {
            let mut head = [0u8; 9];
            if r.read_exact(&mut head).is_err() {
                return;
            }
            let (op, n) = (
                head[0],
                u64::from_le_bytes(head[1..9].try_into().unwrap_or([0; 8])) as usize,
            );
            let width = if op == OP_SUM_F32 { 4 } else { 8 };
            if i == 0 {
                op0 = op;
            } else if op != op0 || n > (1 << 32) {
                return;
            }
            let mut p = vec![0u8; n * width];
            if r.read_exact(&mut p).is_err() {
                return;
            }
            parts.push(p);
        }
        let Ok(out) = combine(op0, &parts) else {
            return;
        };
        for (_, w) in conns.iter_mut() {
            if w.write_all(&out).and_then(|_| w.flush()).is_err() {
                return;
            }
        }
    }
}

/// The arguments of this process less `--gpus N`/`--processes N` (both
/// forms, `--flag N` and `--flag=N`); with `gpus`, less any `--backend`
/// and with `--backend gpu` added.
pub fn child_args(gpus: bool) -> Vec<String> {
    let mut out = vec![];
    let mut skip = false;
    for a in std::env::args().skip(1) {
        if skip {
            skip = false;
            continue;
        }
        let takes = |f: &str| a == f || a.starts_with(&format!("{f}="));
        let with_value = !a.contains('=');
        if takes("--gpus") || takes("--processes") || (gpus && takes("--backend")) {
            skip = with_value;
            continue;
        }
        out.push(a);
    }
    if gpus {
        out.extend(["--backend".to_string(), "gpu".to_string()]);
    }
    out
}

fn describe(status: ExitStatus) -> String {
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(sig) = status.signal() {
            return format!("was killed by signal {sig}");
        }
    }
    match status.code() {
        Some(c) => format!("exited with code {c}"),
        None => format!("ended ({status})"),
    }
}

/// Starts the `n` processes of a job: this executable with `args`, each
/// told its rank, the job's size and the hub's address (`gpus`: each with
/// one GPU of `CUDA_VISIBLE_DEVICES`, else of 0..n, visible). Kills those
/// started when one fails to start.
fn spawn(
    n: usize,
    gpus: bool,
    exe: &std::path::Path,
    args: &[String],
    addr: &str,
) -> Result<Vec<Child>> {
    // the GPUs to hand out: CUDA_VISIBLE_DEVICES's list, else 0..n
    let devices: Vec<String> = match std::env::var("CUDA_VISIBLE_DEVICES") {
        Ok(v) if !v.trim().is_empty() => v.split(',').map(|s| s.trim().to_string()).collect(),
        _ => (0..n).map(|i| i.to_string()).collect(),
    };
    if gpus && devices.len() < n {
        bail!(
            "--gpus {n}: CUDA_VISIBLE_DEVICES lists {} device(s)",
            devices.len()
        );
    }
    let mut children: Vec<Child> = Vec::with_capacity(n);
    for rank in 0..n {
        let mut c = Command::new(exe);
        c.args(args)
            .env(ENV_RANK, rank.to_string())
            .env(ENV_SIZE, n.to_string())
            .env(ENV_HUB, addr)
            .stdin(Stdio::null());
        if let (true, Some(d)) = (gpus, devices.get(rank)) {
            c.env("CUDA_VISIBLE_DEVICES", d);
        }
        match c.spawn() {
            Ok(ch) => children.push(ch),
            Err(e) => {
                for ch in &mut children {
                    let _ = ch.kill();
                    let _ = ch.wait();
                }
                return Err(anyhow!("starting process {rank}: {e}"));
            }
        }
    }
    Ok(children)
}

/// The job's exit code from its failed processes (rank, status) in the
/// order seen: 0 when none failed, else the code of the cause, 1 when it
/// was killed.
fn exit_code(failures: &[(usize, ExitStatus)], n: usize) -> u8 {
    // The cause, not a consequence: a process killed by a signal (the
    // launcher kills none before this point) comes first, since the
    // others then fail on the closed hub, and may be seen to end first.
    let cause = failures
        .iter()
        .find(|(_, st)| st.code().is_none())
        .or(failures.first());
    match cause {
        None => 0,
        Some(&(rank, st)) => match st.code() {
            Some(c) if c > 0 && c < 256 => c as u8,
            _ => {
                eprintln!(
                    "error: process {rank} of {n} {}; stopped the other processes of the job",
                    describe(st)
                );
                crate::exit::FAILURE
            }
        },
    }
}

/// Starts `n` copies of this command (`gpus`: each with its own GPU
/// visible), serves their collectives and waits for them. Returns the
/// exit code of the job: 0 when every process succeeded, else the code of
/// the one that failed first (1 when it was killed; a process killed by a
/// signal is taken as the cause before those that failed after it).
pub fn launch(n: usize, gpus: bool) -> Result<u8> {
    if n == 0 {
        bail!(
            "--{} 0: expected at least 1",
            if gpus { "gpus" } else { "processes" }
        );
    }
    let listener = TcpListener::bind("127.0.0.1:0").context("launcher hub")?;
    let addr = listener.local_addr()?.to_string();
    let exe = std::env::current_exe().context("the fdgr executable")?;
    let args = child_args(gpus);
    let mut children = spawn(n, gpus, &exe, &args, &addr)?;
    // connections, by rank; the hub serves them on its own thread
    listener.set_nonblocking(true)?;
    let mut conns: Vec<Option<(BufReader<TcpStream>, BufWriter<TcpStream>)>> =
        (0..n).map(|_| None).collect();
    let mut connected = 0;
    let mut hub_thread = None;
    // every failure seen, in the order seen, and when the first was seen
    let mut failures: Vec<(usize, ExitStatus)> = vec![];
    let mut first_failure_at: Option<Instant> = None;
    let mut done = vec![false; n];
    loop {
        if connected < n {
            match listener.accept() {
                Ok((s, _)) => {
                    s.set_nonblocking(false)?;
                    s.set_nodelay(true)?;
                    let mut r = BufReader::new(s.try_clone()?);
                    let mut b = [0u8; 4];
                    r.read_exact(&mut b)?;
                    let rank = u32::from_le_bytes(b) as usize;
                    if rank < n && conns[rank].is_none() {
                        conns[rank] = Some((r, BufWriter::new(s)));
                        connected += 1;
                    }
                    if connected == n {
                        let cs: Vec<_> = conns.iter_mut().filter_map(Option::take).collect();
                        hub_thread = Some(std::thread::spawn(move || hub(cs)));
                    }
                    continue;
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e.into()),
            }
        }
        for (rank, ch) in children.iter_mut().enumerate() {
            if done[rank] {
                continue;
            }
            if let Some(st) = ch.try_wait()? {
                done[rank] = true;
                if !st.success() {
                    failures.push((rank, st));
                    first_failure_at.get_or_insert_with(Instant::now);
                }
            }
        }
        if done.iter().all(|&d| d) {
            break;
        }
        if let Some(t) = first_failure_at {
            // the others get two seconds to stop on their own (a failure
            // they all met), then are killed (one that left them waiting)
            if t.elapsed() > Duration::from_secs(2) {
                for (rank, ch) in children.iter_mut().enumerate() {
                    if !done[rank] {
                        let _ = ch.kill();
                        let _ = ch.wait();
                        done[rank] = true;
                    }
                }
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    drop(hub_thread);
    Ok(exit_code(&failures, n))
}
