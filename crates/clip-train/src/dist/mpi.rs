//! The world of an MPI launch (`mpirun -np N clipforge train --distributed …`), through the
//! `mpi` crate's bindings to the installed MPI (Open MPI here). A sum is reduced to rank 0
//! and broadcast from it, so every process holds the same bits whatever order the reduction
//! took; a process that dies makes `mpirun` stop the others.

use mpi::collective::SystemOperation;
use mpi::topology::SimpleCommunicator;
use mpi::traits::*;

use super::{failed, Comm};
use crate::error::Result;

/// This process's place in `MPI_COMM_WORLD`; MPI is finalised when it is dropped.
pub struct MpiComm {
    world: SimpleCommunicator,
    // Dropped after `world`: finalises MPI.
    _universe: mpi::environment::Universe,
}

impl MpiComm {
    /// Initialise MPI (once per process) and join the launch's world.
    pub fn init() -> Result<Self> {
        let universe = mpi::initialize().ok_or_else(|| {
            failed(
                "MPI",
                "already initialised in this process (one world per process)",
            )
        })?;
        let world = universe.world();
        Ok(Self {
            world,
            _universe: universe,
        })
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
            let mut sum = vec![0f32; buf.len()];
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
