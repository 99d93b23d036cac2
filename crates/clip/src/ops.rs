//! Fused CPU ops with explicit backward, as candle custom ops: LayerNorm, softmax over the last
//! dimension, exact GELU and QuickGELU. candle's generic versions are chains of element-wise
//! ops (each a pass over memory and an allocation, and more in backward); these are one pass,
//! parallel over rows. Off the CPU, or for dtypes other than f32, the composed candle ops run.
//! Each is tested against the composition it replaces: values and gradients (tests/fused_ops.rs).

use candle_core::{
    bail, CpuStorage, CustomOp1, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor, D,
};
use rayon::prelude::*;

/// Rows handed to one rayon task at a time.
const ROWS_PER_TASK: usize = 64;

fn contiguous_f32<'a>(s: &'a CpuStorage, l: &Layout, op: &str) -> Result<&'a [f32]> {
    let data = s.as_slice::<f32>()?;
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&data[a..b]),
        None => bail!("{op}: input must be contiguous"),
    }
}

/// A new buffer with `f(input_row, output_row)` applied to every row of width `c`, in parallel.
fn map_rows(x: &[f32], c: usize, f: impl Fn(&[f32], &mut [f32]) + Sync) -> Vec<f32> {
    let mut y = vec![0f32; x.len()];
    y.par_chunks_mut(c * ROWS_PER_TASK)
        .zip(x.par_chunks(c * ROWS_PER_TASK))
        .for_each(|(yr, xr)| {
            for (yrow, xrow) in yr.chunks_mut(c).zip(xr.chunks(c)) {
                f(xrow, yrow);
            }
        });
    y
}

fn fused_ok(x: &Tensor) -> bool {
    x.device().is_cpu() && x.dtype() == candle_core::DType::F32
}

// ---------------------------------------------------------------- LayerNorm

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

// ---------------------------------------------------------------- softmax

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
            let max = xrow.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
            let mut sum = 0f32;
            for i in 0..c {
                let e = (xrow[i] - max).exp();
                yrow[i] = e;
                sum += e;
            }
            let inv = 1.0 / sum;
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
                    let dot: f32 = yrow.iter().zip(dyrow).map(|(a, b)| a * b).sum();
                    for i in 0..c {
                        dxrow[i] = yrow[i] * (dyrow[i] - dot);
                    }
                }
            });
        Ok((CpuStorage::F32(dx), l1.shape().clone()))
    }
}

// ---------------------------------------------------------------- activations

#[derive(Clone, Copy)]
enum Act {
    /// x·Φ(x), Φ by erf.
    Gelu,
    /// x·σ(1.702x).
    QuickGelu,
}

/// erf(x) by Abramowitz & Stegun 7.1.26 (|error| ≤ 1.5e-7): one exp, no branches beyond sign;
/// several times faster than libm's `erff` and well inside f32 parity tolerances.
fn erf(x: f32) -> f32 {
    let t = 1.0 / (1.0 + 0.327_591_1 * x.abs());
    let poly = t
        * (0.254_829_6
            + t * (-0.284_496_74 + t * (1.421_413_7 + t * (-1.453_152_1 + t * 1.061_405_4))));
    let y = 1.0 - poly * (-x * x).exp();
    y.copysign(x)
}

fn act_fwd(a: Act, x: f32) -> f32 {
    match a {
        Act::Gelu => 0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2)),
        Act::QuickGelu => x / (1.0 + (-1.702 * x).exp()),
    }
}

fn act_grad(a: Act, x: f32) -> f32 {
    match a {
        Act::Gelu => {
            let cdf = 0.5 * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2));
            let pdf = (-0.5 * x * x).exp() * 0.398_942_3; // 1/√(2π)
            cdf + x * pdf
        }
        Act::QuickGelu => {
            let s = 1.0 / (1.0 + (-1.702 * x).exp());
            s + 1.702 * x * s * (1.0 - s)
        }
    }
}

/// Exact GELU (PyTorch `nn.GELU()`).
pub fn gelu(x: &Tensor) -> Result<Tensor> {
    if !fused_ok(x) {
        return x.gelu_erf();
    }
    x.contiguous()?.apply_op1(ActOp(Act::Gelu))
}

/// QuickGELU x·σ(1.702x) (OpenAI's CLIP).
pub fn quick_gelu(x: &Tensor) -> Result<Tensor> {
    if !fused_ok(x) {
        return x.mul(&candle_nn::ops::sigmoid(&(x * 1.702)?)?);
    }
    x.contiguous()?.apply_op1(ActOp(Act::QuickGelu))
}

const CHUNK: usize = 16 * 1024;

struct ActOp(Act);

impl CustomOp1 for ActOp {
    fn name(&self) -> &'static str {
        "clip-activation"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(s, l, self.name())?;
        let mut y = vec![0f32; x.len()];
        y.par_chunks_mut(CHUNK)
            .zip(x.par_chunks(CHUNK))
            .for_each(|(yc, xc)| {
                for (o, &v) in yc.iter_mut().zip(xc) {
                    *o = act_fwd(self.0, v);
                }
            });
        Ok((CpuStorage::F32(y), l.shape().clone()))
    }
    fn bwd(&self, x: &Tensor, _res: &Tensor, dy: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(
            x.apply_op2_no_bwd(&dy.contiguous()?, &ActBwdOp(self.0))?,
        ))
    }
}

struct ActBwdOp(Act);

impl CustomOp2 for ActBwdOp {
    fn name(&self) -> &'static str {
        "clip-activation-bwd"
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
        let mut dx = vec![0f32; x.len()];
        dx.par_chunks_mut(CHUNK)
            .zip(x.par_chunks(CHUNK).zip(dy.par_chunks(CHUNK)))
            .for_each(|(dc, (xc, gc))| {
                for ((o, &v), &g) in dc.iter_mut().zip(xc).zip(gc) {
                    *o = g * act_grad(self.0, v);
                }
            });
        Ok((CpuStorage::F32(dx), l1.shape().clone()))
    }
}
