//! NCCL's collectives for one process per GPU (feature `nccl`, through cudarc's bindings): the
//! features and the gradients are gathered and summed on the GPUs, on the stream candle's
//! kernels run on, so a step's tensors never leave the device. The launch, the exchange of
//! NCCL's id, and the few host-side numbers (the shares' sizes, the loss, the gradient flags)
//! go through MPI. NCCL's all-reduce sums each element once and hands that result to every
//! rank (ring or tree), so every process holds the same bits, as the MPI world does.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CudaStorage, CustomOp1, DType, Device, Layout, Shape, Tensor};
use cudarc::nccl::{Comm as Nccl, Id, ReduceOp};

use super::mpi::MpiComm;
use super::{failed, Comm};
use crate::error::Result;

/// This process's place among the GPUs of an MPI launch.
pub struct NcclComm {
    nccl: Nccl,
    /// For the host-side collectives.
    mpi: MpiComm,
}

impl NcclComm {
    /// Join the launch's NCCL world on `device` (a CUDA device, this process's GPU): rank 0
    /// makes NCCL's id and MPI hands it to every rank.
    pub fn join(mpi: MpiComm, device: &Device) -> Result<Self> {
        let Device::Cuda(gpu) = device else {
            return Err(failed(
                "NCCL",
                "the collectives run on a GPU; the device is the CPU",
            ));
        };
        let mut id = [0u8; 128];
        if mpi.rank() == 0 {
            let made = Id::new().map_err(|e| failed("NCCL id", format!("{e:?}")))?;
            for (b, c) in id.iter_mut().zip(made.internal()) {
                *b = *c as u8;
            }
        }
        mpi.broadcast_bytes(&mut id);
        let id = Id::uninit(id.map(|b| b as std::ffi::c_char));
        let nccl = Nccl::from_rank(gpu.cuda_stream(), mpi.rank(), mpi.size(), id)
            .map_err(|e| failed("NCCL init", format!("{e:?} (rank {})", mpi.rank())))?;
        Ok(Self { nccl, mpi })
    }
}

impl Comm for NcclComm {
    fn rank(&self) -> usize {
        self.nccl.rank()
    }
    fn size(&self) -> usize {
        self.nccl.world_size()
    }
    fn all_gather(&self, local: &[f32]) -> Result<Vec<f32>> {
        self.mpi.all_gather(local)
    }
    fn all_reduce_sum(&self, buf: &mut [f32]) -> Result<()> {
        self.mpi.all_reduce_sum(buf)
    }
    fn transport(&self) -> &'static str {
        "NCCL"
    }
    fn all_gather_tensor(&self, local: &Tensor) -> Result<Tensor> {
        let local = local.to_dtype(DType::F32)?.flatten_all()?.contiguous()?;
        Ok(local.apply_op1_no_bwd(&Collective {
            nccl: &self.nccl,
            gather: true,
        })?)
    }
    fn all_reduce_sum_tensor(&self, t: &Tensor) -> Result<Tensor> {
        let flat = t.to_dtype(DType::F32)?.flatten_all()?.contiguous()?;
        let sum = flat.apply_op1_no_bwd(&Collective {
            nccl: &self.nccl,
            gather: false,
        })?;
        Ok(sum.reshape(t.shape())?)
    }
    fn all_reduce_sum_tensors(&self, parts: &[Tensor]) -> Result<Vec<Tensor>> {
        let flat: Vec<Tensor> = parts
            .iter()
            .map(|t| t.to_dtype(DType::F32)?.flatten_all())
            .collect::<candle_core::Result<_>>()?;
        let sum = self.all_reduce_sum_tensor(&Tensor::cat(&flat, 0)?)?; // [Σ n]
        let mut at = 0;
        let mut sums = Vec::with_capacity(parts.len());
        for t in parts {
            let len = t.elem_count();
            sums.push(sum.narrow(0, at, len)?.reshape(t.shape())?);
            at += len;
        }
        Ok(sums)
    }
}

/// An all-gather or an all-reduce (sum) of a contiguous f32 vector on the GPU, as a candle op:
/// its output is a new device buffer, written on the device's stream.
struct Collective<'a> {
    nccl: &'a Nccl,
    gather: bool,
}

impl CustomOp1 for Collective<'_> {
    fn name(&self) -> &'static str {
        if self.gather {
            "nccl-all-gather"
        } else {
            "nccl-all-reduce"
        }
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        candle_core::bail!(
            "{}: the tensor is in host memory, NCCL works on GPUs",
            self.name()
        )
    }

    fn cuda_fwd(&self, s: &CudaStorage, l: &Layout) -> candle_core::Result<(CudaStorage, Shape)> {
        let Some((from, to)) = l.contiguous_offsets() else {
            candle_core::bail!("{}: the tensor is not contiguous", self.name());
        };
        let src = s.as_cuda_slice::<f32>()?.slice(from..to); // [n]
        let n = to - from;
        let out = if self.gather {
            n * self.nccl.world_size()
        } else {
            n
        };
        let dev = s.device().clone();
        let mut dst = dev.alloc_zeros::<f32>(out)?; // [n · W] or [n]
        let done = if self.gather {
            self.nccl.all_gather(&src, &mut dst)
        } else {
            self.nccl.all_reduce(&src, &mut dst, &ReduceOp::Sum)
        };
        done.map_err(|e| candle_core::Error::Msg(format!("{}: {e:?}", self.name())))?;
        Ok((CudaStorage::wrap_cuda_slice(dst, dev), Shape::from(out)))
    }
}
