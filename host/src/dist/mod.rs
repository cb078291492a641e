//! Data-parallel training: processes that each hold the same θ, take
//! their slice of every global batch and sum their gradients with
//! all-reduces (see [`fdgr_kernel::dist`] for the maths).
//!
//! A [`Comm`] is what the processes talk through: [`Single`] (one
//! process, nothing to talk to), MPI (the `mpi` module, feature `mpi`: `fdgr train`
//! launched by `mpirun -np N`), NCCL between GPUs (the GPU backend's
//! communicator, see [`crate::gpu`]). [`Dist`] is a communicator with the
//! buffers and counters of a run; [`init`] finds out how the process was
//! launched.
//!
//! What the training loop does with it ([`crate::train`]):
//!
//! * every process loads the same data and draws the same seeded order;
//!   rank r takes the contiguous slice [`slice()`] of each global batch (the
//!   sizes differ by at most one); augmentation draws stay in global-batch
//!   order (each rank skips the draws of the other slices), so a sample is
//!   augmented alike whatever the number of processes;
//! * each gradient evaluation is one all-reduce of P + 2 floats (the
//!   weighted gradient, the weighted loss, an error flag) under `--ascent
//!   global`; under `--ascent local` one per step;
//! * batch-norm running statistics: each process updates them from its own
//!   slice (per-rank batch statistics, as PyTorch's DDP); at the end of
//!   every epoch, before evaluation and the checkpoint, they are replaced
//!   by their mean over the processes (and are then identical). The
//!   running-statistics update is linear, so the running mean is exactly
//!   what updating every step from the mean of the slices' batch means
//!   would give; the running variance is the mean of the slices' unbiased
//!   variances (it leaves out the spread of the slice means);
//! * θ and the optimizer's state are checked identical on every process
//!   at every epoch end (a hash, all-reduced), and rank 0 alone writes
//!   metrics and checkpoints.

pub mod local;
#[cfg(feature = "mpi")]
pub mod mpi;

use anyhow::{anyhow, bail, Result};
use fdgr_kernel::dist::AllReduce;
use fdgr_kernel::Error as KError;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// The collective operations a data-parallel run needs.
///
/// Every process must call the same operations in the same order with
/// the same lengths; the results are identical on every process.
pub trait Comm: Send + Sync {
    /// This process's rank, 0..size.
    fn rank(&self) -> usize;
    /// Number of processes.
    fn size(&self) -> usize;
    /// Number of processes on this machine (to share its cores).
    fn local_size(&self) -> usize;
    /// This process's index among those on its machine (its GPU).
    fn local_rank(&self) -> usize;
    /// What it is, e.g. `MPI (Open MPI v4.1.4)`.
    fn describe(&self) -> String;
    /// recv ← Σ over processes of send (equal lengths).
    fn sum_f32(&self, send: &[f32], recv: &mut [f32]) -> Result<()>;
    /// v ← Σ over processes of v.
    fn sum_f64(&self, v: &mut [f64]) -> Result<()>;
    /// v ← max over processes of v.
    fn max_u64(&self, v: &mut [u64]) -> Result<()>;
    /// Stops every process of the job with exit code `code`.
    fn abort(&self, code: u8) -> !;
}

/// One process: every sum is the value itself.
#[derive(Clone, Copy, Debug, Default)]
pub struct Single;

impl Comm for Single {
    fn rank(&self) -> usize {
        0
    }
    fn size(&self) -> usize {
        1
    }
    fn local_size(&self) -> usize {
        1
    }
    fn local_rank(&self) -> usize {
        0
    }
    fn describe(&self) -> String {
        "one process".into()
    }
    fn sum_f32(&self, send: &[f32], recv: &mut [f32]) -> Result<()> {
        recv.copy_from_slice(send);
        Ok(())
    }
    fn sum_f64(&self, _v: &mut [f64]) -> Result<()> {
        Ok(())
    }
    fn max_u64(&self, _v: &mut [u64]) -> Result<()> {
        Ok(())
    }
    fn abort(&self, code: u8) -> ! {
        std::process::exit(code as i32)
    }
}

/// A communicator with the pack buffers and the traffic counters of a
/// run.
pub struct Dist {
    comm: Box<dyn Comm>,
    bufs: Mutex<(Vec<f32>, Vec<f32>)>,
    step_calls: AtomicU64,
    step_bytes: AtomicU64,
    step_nanos: AtomicU64,
}

impl std::fmt::Debug for Dist {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Dist({}, rank {} of {})",
            self.comm.describe(),
            self.rank(),
            self.size()
        )
    }
}

impl Default for Dist {
    fn default() -> Self {
        Dist::new(Box::new(Single))
    }
}

impl Dist {
    /// A run over `comm`.
    pub fn new(comm: Box<dyn Comm>) -> Dist {
        Dist {
            comm,
            bufs: Mutex::new((vec![], vec![])),
            step_calls: AtomicU64::new(0),
            step_bytes: AtomicU64::new(0),
            step_nanos: AtomicU64::new(0),
        }
    }

    /// This process's rank.
    pub fn rank(&self) -> usize {
        self.comm.rank()
    }

    /// Number of processes.
    pub fn size(&self) -> usize {
        self.comm.size()
    }

    /// Whether this process writes the run's files (rank 0).
    pub fn is_root(&self) -> bool {
        self.rank() == 0
    }

    /// Whether there is more than one process.
    pub fn is_parallel(&self) -> bool {
        self.size() > 1
    }

    /// Processes on this machine.
    pub fn local_size(&self) -> usize {
        self.comm.local_size()
    }

    /// This process's index among those on its machine.
    pub fn local_rank(&self) -> usize {
        self.comm.local_rank()
    }

    /// What the communicator is.
    pub fn describe(&self) -> String {
        self.comm.describe()
    }

    /// The threads each process uses when `--threads 0`: this machine's
    /// cores shared by its processes (at least 1).
    pub fn default_threads(&self) -> usize {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        (cores / self.local_size().max(1)).max(1)
    }

    /// v ← Σ over processes of v and scalars ← Σ of scalars, in one
    /// all-reduce (of v.len() + scalars.len() floats), counted as a
    /// training step's traffic.
    pub fn all_reduce(&self, v: &mut [f32], scalars: &mut [f32]) -> Result<()> {
        let mut g = self
            .bufs
            .lock()
            .map_err(|_| anyhow!("all-reduce buffers poisoned"))?;
        let (send, recv) = &mut *g;
        send.clear();
        send.extend_from_slice(v);
        send.extend_from_slice(scalars);
        recv.resize(send.len(), 0.0);
        let t = std::time::Instant::now();
        self.comm.sum_f32(send, recv)?;
        self.step_nanos
            .fetch_add(t.elapsed().as_nanos() as u64, Ordering::Relaxed);
        let (a, b) = recv.split_at(v.len());
        v.copy_from_slice(a);
        scalars.copy_from_slice(b);
        self.step_calls.fetch_add(1, Ordering::Relaxed);
        self.step_bytes
            .fetch_add(4 * send.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    /// v ← Σ over processes of v (f64; not counted as step traffic).
    pub fn sum_f64(&self, v: &mut [f64]) -> Result<()> {
        self.comm.sum_f64(v)
    }

    /// v ← max over processes of v.
    pub fn max_u64(&self, v: &mut [u64]) -> Result<()> {
        self.comm.max_u64(v)
    }

    /// Counts `calls` all-reduces of `bytes` in all made outside
    /// [`Dist::all_reduce`] (NCCL's, on the GPU) as step traffic.
    pub fn record_step_traffic(&self, calls: u64, bytes: u64) {
        self.step_calls.fetch_add(calls, Ordering::Relaxed);
        self.step_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// All-reduces and bytes sent into them by training steps so far
    /// (per process).
    pub fn step_traffic(&self) -> (u64, u64) {
        (
            self.step_calls.load(Ordering::Relaxed),
            self.step_bytes.load(Ordering::Relaxed),
        )
    }

    /// Seconds this process spent in training steps' all-reduces so far
    /// (the transfer and the wait for the slowest process; not counted
    /// for NCCL's, which run on the GPU's stream).
    pub fn step_seconds(&self) -> f64 {
        self.step_nanos.load(Ordering::Relaxed) as f64 * 1e-9
    }

    /// Stops every process of the job with exit code `code`.
    pub fn abort(&self, code: u8) -> ! {
        self.comm.abort(code)
    }

    /// Checks that `parts` (θ, optimizer state, …) are bit for bit the
    /// same on every process.
    pub fn check_identical(&self, what: &str, parts: &[&[f32]]) -> Result<()> {
        if !self.is_parallel() {
            return Ok(());
        }
        let h = hash(parts);
        let mut v = [h, !h];
        self.max_u64(&mut v)?;
        if v[0] != h || !v[1] != h {
            bail!(
                "internal error: {what} differs between the processes of the job (rank {})",
                self.rank()
            );
        }
        Ok(())
    }
}

/// FNV-1a over the bits of the values.
fn hash(parts: &[&[f32]]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for p in parts {
        for x in p.iter() {
            h ^= x.to_bits() as u64;
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        h ^= p.len() as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The kernel's [`AllReduce`] over a [`Dist`], for slices.
pub struct Reducer<'a>(pub &'a Dist);

impl AllReduce<f32, [f32]> for Reducer<'_> {
    fn all_reduce(&mut self, v: &mut [f32], scalars: &mut [f32]) -> Result<(), KError> {
        self.0.all_reduce(v, scalars).map_err(|e| {
            eprintln!("rank {}: all-reduce failed: {e:#}", self.0.rank());
            KError::Peer
        })
    }
}

/// The slice `lo..hi` of a global batch of `b` samples that rank `rank` of
/// `n` takes: contiguous, in rank order, the first `b mod n` ranks one
/// sample more.
pub fn slice(b: usize, rank: usize, n: usize) -> (usize, usize) {
    let n = n.max(1);
    let (q, r) = (b / n, b % n);
    let lo = rank * q + rank.min(r);
    (lo, lo + q + usize::from(rank < r))
}

/// How this process was launched, from the environment: the number of
/// processes an MPI launcher (`mpirun`, `srun`) started, if any.
pub fn launched_processes() -> Option<usize> {
    ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "MV2_COMM_WORLD_SIZE"]
        .iter()
        .find_map(|v| std::env::var(v).ok())
        .and_then(|s| s.trim().parse().ok())
}

/// Whether this process is one of several of a data-parallel job (started
/// by an MPI launcher with more than one process, or by `fdgr train
/// --gpus`/`--processes`).
pub fn in_parallel_job() -> bool {
    launched_processes().is_some_and(|n| n > 1) || std::env::var_os(local::ENV_RANK).is_some()
}

/// Whether this `fdgr` was built with MPI support (feature `mpi`).
pub const MPI_BUILT: bool = cfg!(feature = "mpi");

/// The communicator of this process: the launcher's hub when `fdgr train
/// --gpus N`/`--processes N` started it ([`local`]), MPI when an MPI
/// launcher started it (feature `mpi`), else [`Single`]. Launched by
/// `mpirun` with more than one process but built without MPI: an error
/// (the processes would each train alone and write the same files).
pub fn init() -> Result<Dist> {
    if let Some(h) = local::HubComm::from_env()? {
        return Ok(Dist::new(Box::new(h)));
    }
    let n = launched_processes();
    #[cfg(feature = "mpi")]
    if n.is_some() {
        return Ok(Dist::new(Box::new(mpi::MpiComm::init()?)));
    }
    match n {
        Some(n) if n > 1 => bail!(
            "launched by an MPI launcher with {n} processes, but this fdgr was built without MPI \
             support: build it with `cargo build --release --features mpi` (needs an MPI library \
             such as Open MPI: apt-get install libopenmpi-dev openmpi-bin libclang-dev)"
        ),
        _ => Ok(Dist::default()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_cover_the_batch_in_order() {
        for b in 1..40 {
            for n in 1..6 {
                let mut next = 0;
                for r in 0..n {
                    let (lo, hi) = slice(b, r, n);
                    assert_eq!(lo, next);
                    assert!(hi - lo == b / n || hi - lo == b / n + 1);
                    next = hi;
                }
                assert_eq!(next, b);
            }
        }
    }

    #[test]
    fn single_process_sums_are_identities() {
        let d = Dist::default();
        let mut v = [1.0f32, 2.0];
        let mut s = [3.0f32];
        d.all_reduce(&mut v, &mut s).unwrap();
        assert_eq!((v, s), ([1.0, 2.0], [3.0]));
        assert_eq!(d.step_traffic(), (1, 12));
        d.check_identical("θ", &[&v]).unwrap();
    }
}
