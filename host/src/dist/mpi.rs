//! [`Comm`] over MPI (rsmpi on the system's MPI library, e.g. Open MPI):
//! `fdgr train` started by `mpirun -np N`.
//!
//! MPI is initialised with `MPI_THREAD_SERIALIZED`: the training loop
//! runs on a worker thread of its rayon pool, not the main thread, and
//! every MPI call goes through one mutex, so no two are ever concurrent.
//! Errors are MPI's default, fatal: a process that dies (`kill -9`) makes
//! the launcher stop the whole job.

use super::Comm;
use anyhow::{bail, Result};
use mpi::collective::SystemOperation;
use mpi::environment::Universe;
use mpi::topology::SimpleCommunicator;
use mpi::traits::*;
use mpi::Threading;
use std::sync::Mutex;

struct Inner {
    world: SimpleCommunicator,
    // dropped last: finalizes MPI
    _universe: Universe,
}

// SAFETY: MPI handles are process-wide values, not tied to the thread that
// made them; MPI was initialised with MPI_THREAD_SERIALIZED (checked in
// `MpiComm::init`) and every use goes through the `Mutex` below, so calls
// from different threads never overlap.
unsafe impl Send for Inner {}

/// MPI's `MPI_COMM_WORLD`.
pub struct MpiComm {
    inner: Mutex<Inner>,
    rank: usize,
    size: usize,
    local: usize,
    local_rank: usize,
    library: String,
}

impl MpiComm {
    /// Initialises MPI (once per process).
    pub fn init() -> Result<MpiComm> {
        let Some((universe, threading)) = mpi::initialize_with_threading(Threading::Serialized)
        else {
            bail!("MPI: already initialised in this process");
        };
        if threading < Threading::Serialized {
            bail!(
                "MPI: the library provides thread level {threading:?}, fdgr needs Serialized \
                 (its training loop runs on a worker thread)"
            );
        }
        let world = universe.world();
        let (rank, size) = (world.rank() as usize, world.size() as usize);
        let (local, local_rank) = {
            let shared = world.split_shared(0);
            (shared.size() as usize, shared.rank() as usize)
        };
        let library = mpi::environment::library_version()
            .ok()
            .and_then(|v| v.split([',', '\n']).next().map(|l| l.trim().to_string()))
            .unwrap_or_else(|| "unknown library".into());
        Ok(MpiComm {
            inner: Mutex::new(Inner {
                world,
                _universe: universe,
            }),
            rank,
            size,
            local,
            local_rank,
            library,
        })
    }

    fn with<R>(&self, f: impl FnOnce(&SimpleCommunicator) -> R) -> Result<R> {
        match self.inner.lock() {
            Ok(g) => Ok(f(&g.world)),
            Err(_) => bail!("MPI: communicator lock poisoned"),
        }
    }
}

impl Comm for MpiComm {
    fn rank(&self) -> usize {
        self.rank
    }
    fn size(&self) -> usize {
        self.size
    }
    fn local_size(&self) -> usize {
        self.local
    }
    fn local_rank(&self) -> usize {
        self.local_rank
    }
    fn describe(&self) -> String {
        format!("MPI ({})", self.library)
    }
    fn sum_f32(&self, send: &[f32], recv: &mut [f32]) -> Result<()> {
        self.with(|w| w.all_reduce_into(send, recv, SystemOperation::sum()))
    }
    fn sum_f64(&self, v: &mut [f64]) -> Result<()> {
        let send = v.to_vec();
        self.with(|w| w.all_reduce_into(&send[..], v, SystemOperation::sum()))
    }
    fn max_u64(&self, v: &mut [u64]) -> Result<()> {
        let send = v.to_vec();
        self.with(|w| w.all_reduce_into(&send[..], v, SystemOperation::max()))
    }
    fn abort(&self, code: u8) -> ! {
        // never blocks on the lock: abort is a last resort
        match self.inner.try_lock() {
            Ok(g) => g.world.abort(code as i32),
            Err(_) => std::process::exit(code as i32),
        }
    }
}
