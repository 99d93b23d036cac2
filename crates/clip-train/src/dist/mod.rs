//! Data-parallel training across processes: the collectives a step needs ([`Comm`]), a world
//! of one ([`Single`]), a world of threads for tests ([`threads`]), MPI's ([`mpi`], feature
//! `mpi`) and NCCL's for GPUs ([`nccl`], feature `nccl`); and the step's distributed gradient
//! ([`grads`]).
//!
//! Each process encodes its share of the global batch; the features are all-gathered so that
//! every loss sees all N² pairs of the global batch; each process pushes the loss's gradient
//! for its own features back through its towers; the parameter gradients are summed over the
//! processes. The result is the gradient one process would get from the whole global batch.

pub mod grads;
#[cfg(feature = "mpi")]
pub mod mpi;
#[cfg(feature = "nccl")]
pub mod nccl;
pub mod threads;
pub mod watchdog;

use candle_core::{DType, Storage, Tensor};

use crate::error::{Result, TrainError};

/// The collective operations of a data-parallel step, over `size()` processes.
pub trait Comm {
    /// This process's place, 0 ..= size − 1; rank 0 writes the run directory.
    fn rank(&self) -> usize;
    fn size(&self) -> usize;
    /// Every process's `local` (all the same length), concatenated in rank order.
    fn all_gather(&self, local: &[f32]) -> Result<Vec<f32>>;
    /// The element-wise sum over the processes, into `buf`, the same bits on every process.
    fn all_reduce_sum(&self, buf: &mut [f32]) -> Result<()>;
    /// What carries the messages, for reports.
    fn transport(&self) -> &'static str;
    /// Whether the step takes the distributed path (gather, surrogate, all-reduce): for every
    /// launched world, a world of one included (it exercises the path), not for [`Single`].
    fn launched(&self) -> bool {
        true
    }

    /// [`Comm::all_gather`] on an f32 tensor of any shape, where it lives: every process's
    /// `local` flattened and concatenated in rank order, `[size · local.elem_count()]`. By
    /// default through host memory; a GPU transport overrides it to stay on the device.
    fn all_gather_tensor(&self, local: &Tensor) -> Result<Tensor> {
        let all = self.all_gather(&host(local)?)?;
        let n = all.len();
        Ok(Tensor::from_vec(all, n, local.device())?)
    }

    /// [`Comm::all_reduce_sum`] on an f32 tensor: the element-wise sum over the processes, in
    /// `t`'s shape and place, the same bits on every process.
    fn all_reduce_sum_tensor(&self, t: &Tensor) -> Result<Tensor> {
        let mut buf = host(t)?;
        self.all_reduce_sum(&mut buf)?;
        Ok(Tensor::from_vec(buf, t.shape(), t.device())?)
    }

    /// [`Comm::all_reduce_sum_tensor`] on several f32 tensors as one message (a step's
    /// gradients): each one's sum over the processes, in its shape and place. By default the
    /// parts are copied straight into one host buffer and back out of it; a GPU transport
    /// overrides it to concatenate them where they are.
    fn all_reduce_sum_tensors(&self, parts: &[Tensor]) -> Result<Vec<Tensor>> {
        let mut buf = Vec::with_capacity(parts.iter().map(Tensor::elem_count).sum());
        for t in parts {
            extend_host(&mut buf, t)?;
        }
        self.all_reduce_sum(&mut buf)?;
        let mut at = 0;
        let mut sums = Vec::with_capacity(parts.len());
        for t in parts {
            let len = t.elem_count();
            sums.push(Tensor::from_slice(
                &buf[at..at + len],
                t.shape(),
                t.device(),
            )?);
            at += len;
        }
        Ok(sums)
    }
}

/// `t`'s values, row-major, appended to `buf`: a plain copy from a contiguous f32 tensor in
/// host memory (a step's gradients, hundreds of megabytes at ViT-B-32), through a vector
/// otherwise.
fn extend_host(buf: &mut Vec<f32>, t: &Tensor) -> Result<()> {
    let t = t.to_dtype(DType::F32)?;
    {
        let (storage, layout) = t.storage_and_layout();
        if let (Storage::Cpu(cpu), Some((from, to))) = (&*storage, layout.contiguous_offsets()) {
            buf.extend_from_slice(&cpu.as_slice::<f32>()?[from..to]);
            return Ok(());
        }
    }
    buf.extend(host(&t)?);
    Ok(())
}

/// `t`'s values, row-major, in host memory.
fn host(t: &Tensor) -> Result<Vec<f32>> {
    Ok(t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?)
}

/// A world of one process: the collectives are the identity.
#[derive(Debug, Clone, Copy, Default)]
pub struct Single;

impl Comm for Single {
    fn rank(&self) -> usize {
        0
    }
    fn size(&self) -> usize {
        1
    }
    fn all_gather(&self, local: &[f32]) -> Result<Vec<f32>> {
        Ok(local.to_vec())
    }
    fn all_reduce_sum(&self, _buf: &mut [f32]) -> Result<()> {
        Ok(())
    }
    fn transport(&self) -> &'static str {
        "none"
    }
    fn launched(&self) -> bool {
        false
    }
}

/// A world whose collectives are timed: the seconds spent in them, waiting for the slowest
/// process included (what a step loses to being distributed, beside the work it shares).
pub struct Timed {
    inner: Box<dyn Comm>,
    spent: std::cell::Cell<f64>,
}

impl Timed {
    pub fn new(inner: Box<dyn Comm>) -> Self {
        Self {
            inner,
            spent: std::cell::Cell::new(0.0),
        }
    }

    /// Seconds in collectives since the last call.
    pub fn take_seconds(&self) -> f64 {
        self.spent.replace(0.0)
    }

    fn timed<R>(&self, f: impl FnOnce() -> R) -> R {
        let t = std::time::Instant::now();
        let out = f();
        self.spent.set(self.spent.get() + t.elapsed().as_secs_f64());
        out
    }
}

impl Comm for Timed {
    fn rank(&self) -> usize {
        self.inner.rank()
    }
    fn size(&self) -> usize {
        self.inner.size()
    }
    fn all_gather(&self, local: &[f32]) -> Result<Vec<f32>> {
        self.timed(|| self.inner.all_gather(local))
    }
    fn all_reduce_sum(&self, buf: &mut [f32]) -> Result<()> {
        self.timed(|| self.inner.all_reduce_sum(buf))
    }
    fn transport(&self) -> &'static str {
        self.inner.transport()
    }
    fn launched(&self) -> bool {
        self.inner.launched()
    }
    fn all_gather_tensor(&self, local: &Tensor) -> Result<Tensor> {
        self.timed(|| self.inner.all_gather_tensor(local))
    }
    fn all_reduce_sum_tensor(&self, t: &Tensor) -> Result<Tensor> {
        self.timed(|| self.inner.all_reduce_sum_tensor(t))
    }
    fn all_reduce_sum_tensors(&self, parts: &[Tensor]) -> Result<Vec<Tensor>> {
        self.timed(|| self.inner.all_reduce_sum_tensors(parts))
    }
}

/// A failed collective, naming what the step was doing.
pub(crate) fn failed(what: &str, msg: impl std::fmt::Display) -> TrainError {
    TrainError::Distributed(format!("{what}: {msg}"))
}
