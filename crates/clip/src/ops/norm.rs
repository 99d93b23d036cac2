//! LayerNorm over the last dimension, one pass per row forward and backward.

use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor, D};
use rayon::prelude::*;

use super::cpu::{contiguous_f32, fused_ok, map_rows, ROWS_PER_TASK};
use super::lanes;

/// LayerNorm over the last dimension: x `[..., C]`, weight `[C]`, bias `[C]` → `[..., C]`.
pub fn layer_norm(x: &Tensor, weight: &Tensor, bias: &Tensor, eps: f64) -> Result<Tensor> {
    if !fused_ok(x) {
        if super::mode::in_inference() {
            // candle's one-kernel LayerNorm (CUDA, bf16); it has no backward.
            return candle_nn::ops::layer_norm(&x.contiguous()?, weight, bias, eps as f32);
        }
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
    let mean = lanes::sum(row) / c;
    let var = lanes::sum_sq_dev(row, mean) / c;
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
        Ok((
            CpuStorage::F32(ln_fwd(x, w, b, self.eps)),
            l1.shape().clone(),
        ))
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
        // dx = rstd · (dy·w − mean(dy·w) − x̂ · mean(dy·w·x̂))
        let dx = x.apply_op3_no_bwd(w, &dy, &LayerNormBwdOp { eps: self.eps })?;
        // dw = Σ_rows dy·x̂, db = Σ_rows dy, in one pass: [2, C].
        let g = x.apply_op2_no_bwd(&dy, &LayerNormParamGradOp { eps: self.eps })?;
        Ok((Some(dx), Some(g.get(0)?), Some(g.get(1)?)))
    }
}

/// (x, dy) → `[2, C]`: Σ_rows dy·x̂ (the gain's gradient) and Σ_rows dy (the bias's), one pass.
struct LayerNormParamGradOp {
    eps: f32,
}

impl CustomOp2 for LayerNormParamGradOp {
    fn name(&self) -> &'static str {
        "clip-layer-norm-param-grad"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(s1, l1, self.name())?;
        let dy = contiguous_f32(s2, l2, self.name())?;
        let c = l1.dims()[l1.dims().len() - 1];
        let sums = ln_param_grads(x, dy, c, self.eps);
        Ok((CpuStorage::F32(sums), Shape::from((2, c))))
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
        let dx = ln_bwd_dx(x, w, dy, self.eps);
        Ok((CpuStorage::F32(dx), l1.shape().clone()))
    }
}

/// LayerNorm of one row.
#[inline]
pub(crate) fn ln_row(xrow: &[f32], w: &[f32], b: &[f32], eps: f32, yrow: &mut [f32]) {
    let (mean, rstd) = row_stats(xrow, eps);
    for i in 0..w.len() {
        yrow[i] = (xrow[i] - mean) * rstd * w[i] + b[i];
    }
}

/// LayerNorm of every row of `x` (width `w.len()`).
pub(crate) fn ln_fwd(x: &[f32], w: &[f32], b: &[f32], eps: f32) -> Vec<f32> {
    map_rows(x, w.len(), |xrow, yrow| ln_row(xrow, w, b, eps, yrow))
}

/// dx of one row: rstd · (dy·w − mean(dy·w) − x̂ · mean(dy·w·x̂)).
#[inline]
pub(crate) fn ln_bwd_row(xrow: &[f32], w: &[f32], dyrow: &[f32], eps: f32, dxrow: &mut [f32]) {
    let c = w.len();
    let (mean, rstd) = row_stats(xrow, eps);
    let g = &mut dxrow[..c]; // dy·w, then overwritten by dx
    g.iter_mut()
        .zip(dyrow.iter().zip(w))
        .for_each(|(g, (d, w))| *g = d * w);
    let m1 = lanes::sum(g) / c as f32;
    let m2 = lanes::fold2(g, xrow, |g, x| g * (x - mean)) * rstd / c as f32;
    for (g, &x) in g.iter_mut().zip(xrow) {
        let xhat = (x - mean) * rstd;
        *g = rstd * (*g - m1 - xhat * m2);
    }
}

/// dx for every row (see [`ln_bwd_row`]), in parallel.
pub(crate) fn ln_bwd_dx(x: &[f32], w: &[f32], dy: &[f32], eps: f32) -> Vec<f32> {
    let c = w.len();
    let mut dx = vec![0f32; x.len()];
    dx.par_chunks_mut(c * ROWS_PER_TASK)
        .zip(
            x.par_chunks(c * ROWS_PER_TASK)
                .zip(dy.par_chunks(c * ROWS_PER_TASK)),
        )
        .for_each(|(dxr, (xr, dyr))| {
            for ((dxrow, xrow), dyrow) in dxr.chunks_mut(c).zip(xr.chunks(c)).zip(dyr.chunks(c)) {
                ln_bwd_row(xrow, w, dyrow, eps, dxrow);
            }
        });
    dx
}

/// Adds Σ_rows dy·x̂ (the gain's gradient) to `dw` `[C]` and Σ_rows dy (the bias's) to `db`
/// `[C]`, on the calling thread.
pub(crate) fn ln_param_grads_into(
    x: &[f32],
    dy: &[f32],
    c: usize,
    eps: f32,
    dw: &mut [f32],
    db: &mut [f32],
) {
    for (xrow, dyrow) in x.chunks(c).zip(dy.chunks(c)) {
        let (mean, rstd) = row_stats(xrow, eps);
        for i in 0..c {
            dw[i] += dyrow[i] * (xrow[i] - mean) * rstd;
            db[i] += dyrow[i];
        }
    }
}

/// `[2·C]`: Σ_rows dy·x̂ (the gain's gradient), then Σ_rows dy (the bias's), in one pass;
/// blocks of rows in parallel, their sums added in block order (the same bits every run).
pub(crate) fn ln_param_grads(x: &[f32], dy: &[f32], c: usize, eps: f32) -> Vec<f32> {
    let parts: Vec<Vec<f32>> = x
        .par_chunks(c * ROWS_PER_TASK)
        .zip(dy.par_chunks(c * ROWS_PER_TASK))
        .map(|(xr, dyr)| {
            let mut acc = vec![0f32; 2 * c];
            let (dw, db) = acc.split_at_mut(c);
            ln_param_grads_into(xr, dyr, c, eps, dw, db);
            acc
        })
        .collect(); // in block order
    super::linear::sum_in_order(parts, 2 * c)
}
