//! LayerNorm over the last dimension, one pass per row forward and backward.

use candle_core::{CpuStorage, CustomOp1, CustomOp3, Layout, Result, Shape, Tensor, D};
use rayon::prelude::*;

use super::{contiguous_f32, fused_ok, map_rows, ROWS_PER_TASK};

/// LayerNorm over the last dimension: x `[..., C]`, weight `[C]`, bias `[C]` → `[..., C]`.
pub fn layer_norm(x: &Tensor, weight: &Tensor, bias: &Tensor, eps: f64) -> Result<Tensor> {
    if !fused_ok(x) {
        return layer_norm_composed(x, weight, bias, eps);
    }
    x.contiguous()?.apply_op3(
        &weight.contiguous()?,
        &bias.contiguous()?,
        LayerNormOp { eps: eps as f32 },
    )
}

/// The same LayerNorm out of candle's element-wise ops (the reference and the non-CPU path).
pub fn layer_norm_composed(x: &Tensor, weight: &Tensor, bias: &Tensor, eps: f64) -> Result<Tensor> {
    let mean = x.mean_keepdim(D::Minus1)?; // [..., 1]
    let xc = x.broadcast_sub(&mean)?; // [..., C]
    let var = xc.sqr()?.mean_keepdim(D::Minus1)?; // [..., 1]
    let inv = (var + eps)?.sqrt()?.recip()?; // [..., 1]
    xc.broadcast_mul(&inv)?
        .broadcast_mul(weight)?
        .broadcast_add(bias)
}

/// Mean and 1/std of one row.
fn row_stats(row: &[f32], eps: f32) -> (f32, f32) {
    let c = row.len() as f32;
    let mean = row.iter().sum::<f32>() / c;
    let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / c;
    (mean, 1.0 / (var + eps).sqrt())
}

struct LayerNormOp {
    eps: f32,
}

impl CustomOp3 for LayerNormOp {
    fn name(&self) -> &'static str {
        "clip-layer-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(s1, l1, self.name())?;
        let w = contiguous_f32(s2, l2, self.name())?;
        let b = contiguous_f32(s3, l3, self.name())?;
        let c = w.len();
        let y = map_rows(x, c, |xrow, yrow| {
            let (mean, rstd) = row_stats(xrow, self.eps);
            for i in 0..c {
                yrow[i] = (xrow[i] - mean) * rstd * w[i] + b[i];
            }
        });
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        _res: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let dy = dy.contiguous()?;
        let c = w.dim(0)?;
        let rows = x.elem_count() / c;
        // dx = rstd · (dy·w − mean(dy·w) − x̂ · mean(dy·w·x̂))
        let dx = x.apply_op3_no_bwd(w, &dy, &LayerNormBwdOp { eps: self.eps })?;
        // dw = Σ_rows dy·x̂, db = Σ_rows dy
        let xhat = x.apply_op1_no_bwd(&NormalizeOp { eps: self.eps })?;
        let dw = (dy.reshape((rows, c))? * xhat.reshape((rows, c))?)?.sum(0)?; // [C]
        let db = dy.reshape((rows, c))?.sum(0)?; // [C]
        Ok((Some(dx), Some(dw), Some(db)))
    }
}

/// x̂ = (x − mean) / std per row (no affine).
struct NormalizeOp {
    eps: f32,
}

impl CustomOp1 for NormalizeOp {
    fn name(&self) -> &'static str {
        "clip-normalize"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(s, l, self.name())?;
        let c = l.dims()[l.dims().len() - 1];
        let y = map_rows(x, c, |xrow, yrow| {
            let (mean, rstd) = row_stats(xrow, self.eps);
            for i in 0..c {
                yrow[i] = (xrow[i] - mean) * rstd;
            }
        });
        Ok((CpuStorage::F32(y), l.shape().clone()))
    }
}

struct LayerNormBwdOp {
    eps: f32,
}

impl CustomOp3 for LayerNormBwdOp {
    fn name(&self) -> &'static str {
        "clip-layer-norm-bwd"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(s1, l1, self.name())?;
        let w = contiguous_f32(s2, l2, self.name())?;
        let dy = contiguous_f32(s3, l3, self.name())?;
        let c = w.len();
        let mut dx = vec![0f32; x.len()];
        dx.par_chunks_mut(c * ROWS_PER_TASK)
            .zip(
                x.par_chunks(c * ROWS_PER_TASK)
                    .zip(dy.par_chunks(c * ROWS_PER_TASK)),
            )
            .for_each(|(dxr, (xr, dyr))| {
                for ((dxrow, xrow), dyrow) in dxr.chunks_mut(c).zip(xr.chunks(c)).zip(dyr.chunks(c))
                {
                    let (mean, rstd) = row_stats(xrow, self.eps);
                    let (mut m1, mut m2) = (0f32, 0f32);
                    for i in 0..c {
                        let g = dyrow[i] * w[i];
                        m1 += g;
                        m2 += g * (xrow[i] - mean) * rstd;
                    }
                    let (m1, m2) = (m1 / c as f32, m2 / c as f32);
                    for i in 0..c {
                        let xhat = (xrow[i] - mean) * rstd;
                        dxrow[i] = rstd * (dyrow[i] * w[i] - m1 - xhat * m2);
                    }
                }
            });
        Ok((CpuStorage::F32(dx), l1.shape().clone()))
    }
}
