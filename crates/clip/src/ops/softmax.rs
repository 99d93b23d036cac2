//! Softmax over the last dimension, with its backward dx = y·(dy − Σ dy·y).

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor, D};
use rayon::prelude::*;

use super::cpu::{contiguous_f32, fused_ok, map_rows, ROWS_PER_TASK};
use super::lanes;
use super::math::exp;

/// Softmax over the last dimension.
pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    if !fused_ok(x) {
        return candle_nn::ops::softmax(x, D::Minus1);
    }
    x.contiguous()?.apply_op1(SoftmaxOp)
}

struct SoftmaxOp;

impl CustomOp1 for SoftmaxOp {
    fn name(&self) -> &'static str {
        "clip-softmax"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(s, l, self.name())?;
        let c = l.dims()[l.dims().len() - 1];
        let y = map_rows(x, c, |xrow, yrow| {
            let max = lanes::max(xrow);
            for (y, &x) in yrow.iter_mut().zip(xrow) {
                *y = exp(x - max);
            }
            let inv = 1.0 / lanes::sum(yrow);
            yrow.iter_mut().for_each(|v| *v *= inv);
        });
        Ok((CpuStorage::F32(y), l.shape().clone()))
    }
    fn bwd(&self, _x: &Tensor, y: &Tensor, dy: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(y.apply_op2_no_bwd(&dy.contiguous()?, &SoftmaxBwdOp)?))
    }
}

/// dx = y · (dy − Σ dy·y) per row.
struct SoftmaxBwdOp;

impl CustomOp2 for SoftmaxBwdOp {
    fn name(&self) -> &'static str {
        "clip-softmax-bwd"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let y = contiguous_f32(s1, l1, self.name())?;
        let dy = contiguous_f32(s2, l2, self.name())?;
        let c = l1.dims()[l1.dims().len() - 1];
        let mut dx = vec![0f32; y.len()];
        dx.par_chunks_mut(c * ROWS_PER_TASK)
            .zip(
                y.par_chunks(c * ROWS_PER_TASK)
                    .zip(dy.par_chunks(c * ROWS_PER_TASK)),
            )
            .for_each(|(dxr, (yr, dyr))| {
                for ((dxrow, yrow), dyrow) in dxr.chunks_mut(c).zip(yr.chunks(c)).zip(dyr.chunks(c))
                {
                    let dot = lanes::dot(yrow, dyrow);
                    for i in 0..c {
                        dxrow[i] = yrow[i] * (dyrow[i] - dot);
                    }
                }
            });
        Ok((CpuStorage::F32(dx), l1.shape().clone()))
    }
}
