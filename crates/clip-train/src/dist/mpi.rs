//! The world of an MPI launch (`mpirun -np N clipforge train --distributed …`), through the
//! `mpi` crate's bindings to the installed MPI (Open MPI here). A sum is reduced to rank 0
//! and broadcast from it, so every process holds the same bits whatever order the reduction
//! took. A process that dies makes `mpirun` stop the others; one that fails (an error or a
//! panic) aborts the world through [`MpiLaunch`], since finalising MPI would wait for the
//! others, who wait in a collective for it.

use std::cell::RefCell;

use mpi::collective::SystemOperation;
use mpi::topology::SimpleCommunicator;
use mpi::traits::*;

use super::{failed, Comm};
use crate::error::Result;

/// MPI, initialised for this process's part in a launch. Dropped after a clean end, it
/// finalises MPI; dropped while panicking, or told [`MpiLaunch::abort`], it aborts the whole
/// launch (`MPI_Abort`), so that no other process waits forever in a collective.
pub struct MpiLaunch {
    universe: mpi::environment::Universe,
}

impl MpiLaunch {
    /// Initialise MPI (once per process).
    pub fn init() -> Result<Self> {
        let universe = mpi::initialize().ok_or_else(|| {
            failed(
                "MPI",
                "already initialised in this process (one world per process)",
            )
        })?;
        Ok(Self { universe })
    }

    /// This process's place in the launch's world.
    pub fn comm(&self) -> MpiComm {
        MpiComm {
            world: self.universe.world(),
            sum: RefCell::new(Vec::new()),
        }
    }

    /// End every process of the launch with `code`: `mpirun` stops the others and exits
    /// with an error. For a process that cannot go on (it would otherwise leave the others
    /// waiting for its part of the next collective).
    pub fn abort(&self, code: i32) -> ! {
        self.universe.world().abort(code)
    }
}

impl Drop for MpiLaunch {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.abort(101); // Rust's exit code for a panic
        }
    }
}

/// This process's place in `MPI_COMM_WORLD`, valid while its [`MpiLaunch`] lives.
pub struct MpiComm {
    world: SimpleCommunicator,
    /// Rank 0's receive buffer for a reduction, kept from step to step: a fresh one of a
    /// step's gradients (600 MB at ViT-B-32) would be paged in again inside every reduce.
    sum: RefCell<Vec<f32>>,
}

impl MpiComm {
    /// Rank 0's `buf`, copied into every process's.
    pub fn broadcast_bytes(&self, buf: &mut [u8]) {
        self.world.process_at_rank(0).broadcast_into(buf);
    }

    /// This process's place among the launch's processes on its own machine (its GPU, with
    /// one process per GPU).
    pub fn local_rank(&self) -> usize {
        self.world.split_shared(0).rank() as usize
    }
}

impl Comm for MpiComm {
    fn rank(&self) -> usize {
        self.world.rank() as usize
    }
    fn size(&self) -> usize {
        self.world.size() as usize
    }
    fn all_gather(&self, local: &[f32]) -> Result<Vec<f32>> {
        let mut out = vec![0f32; local.len() * self.size()];
        self.world.all_gather_into(local, &mut out[..]);
        Ok(out)
    }
    fn all_reduce_sum(&self, buf: &mut [f32]) -> Result<()> {
        let root = self.world.process_at_rank(0);
        if self.rank() == 0 {
            let mut sum = self.sum.borrow_mut();
            sum.resize(buf.len(), 0.0);
            root.reduce_into_root(&*buf, &mut sum[..], SystemOperation::sum());
            buf.copy_from_slice(&sum);
        } else {
            root.reduce_into(&*buf, SystemOperation::sum());
        }
        root.broadcast_into(buf);
        Ok(())
    }
    fn transport(&self) -> &'static str {
        "MPI"
    }
}
