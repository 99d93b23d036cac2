//! Exact GELU (erf) and QuickGELU, element-wise, with their derivatives.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::cpu::{contiguous_f32, fused_ok};
use super::math::{exp, fma};

/// The transformer MLP's activation (and the MLP projection head's).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    /// Exact GELU with erf, x·Φ(x) (PyTorch `nn.GELU()`).
    Gelu,
    /// x·σ(1.702x), OpenAI's CLIP.
    QuickGelu,
}

impl Activation {
    /// Element-wise, any shape.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Activation::Gelu => gelu(x),
            Activation::QuickGelu => quick_gelu(x),
        }
    }
}

impl candle_nn::Module for Activation {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Activation::forward(self, x)
    }
}

/// erf(x) by Abramowitz & Stegun 7.1.26 (|error| ≤ 1.5e-7), given e = exp(−x²): no branches
/// beyond sign; several times faster than libm's `erff` and well inside f32 parity tolerances.
#[inline(always)]
fn erf_given_exp(x: f32, e: f32) -> f32 {
    let t = 1.0 / fma(0.327_591_1, x.abs(), 1.0);
    let poly = t * fma(
        fma(
            fma(fma(1.061_405_4, t, -1.453_152_1), t, 1.421_413_7),
            t,
            -0.284_496_74,
        ),
        t,
        0.254_829_6,
    );
    let y = fma(-poly, e, 1.0);
    y.copysign(x)
}

#[inline(always)]
fn gelu_fwd(x: f32) -> f32 {
    let z = x * std::f32::consts::FRAC_1_SQRT_2;
    0.5 * x * (1.0 + erf_given_exp(z, exp(-z * z)))
}

/// Φ(x) + x·φ(x); erf(x/√2) and the normal density share one exp(−x²/2).
#[inline(always)]
fn gelu_grad(x: f32) -> f32 {
    let z = x * std::f32::consts::FRAC_1_SQRT_2;
    let e = exp(-z * z); // exp(−x²/2)
    let cdf = 0.5 * (1.0 + erf_given_exp(z, e));
    cdf + x * e * 0.398_942_3 // 1/√(2π)
}

#[inline(always)]
fn quick_fwd(x: f32) -> f32 {
    x / (1.0 + exp(-1.702 * x))
}

#[inline(always)]
fn quick_grad(x: f32) -> f32 {
    let s = 1.0 / (1.0 + exp(-1.702 * x));
    s + 1.702 * x * s * (1.0 - s)
}

/// `y[i] = act(x[i])`. The activation is chosen once per slice, outside the loop, so each
/// loop is one straight-line body the compiler vectorises (a per-element `match` and call
/// would keep it scalar).
pub(crate) fn act_fwd_slice(a: Activation, x: &[f32], y: &mut [f32]) {
    match a {
        Activation::Gelu => y.iter_mut().zip(x).for_each(|(o, &v)| *o = gelu_fwd(v)),
        Activation::QuickGelu => y.iter_mut().zip(x).for_each(|(o, &v)| *o = quick_fwd(v)),
    }
}

/// `g[i] *= act'(x[i])`: the incoming gradient times the activation's derivative.
pub(crate) fn act_grad_slice(a: Activation, x: &[f32], g: &mut [f32]) {
    match a {
        Activation::Gelu => g.iter_mut().zip(x).for_each(|(o, &v)| *o *= gelu_grad(v)),
        Activation::QuickGelu => g.iter_mut().zip(x).for_each(|(o, &v)| *o *= quick_grad(v)),
    }
}

/// [`act_fwd_slice`] over a whole buffer, in parallel: a new `[len]` buffer.
pub(crate) fn act_fwd_par(a: Activation, x: &[f32]) -> Vec<f32> {
    let mut y = vec![0f32; x.len()];
    y.par_chunks_mut(CHUNK)
        .zip(x.par_chunks(CHUNK))
        .for_each(|(yc, xc)| act_fwd_slice(a, xc, yc));
    y
}

/// [`act_grad_slice`] over a whole buffer, in parallel, in place.
pub(crate) fn act_grad_par(a: Activation, x: &[f32], g: &mut [f32]) {
    g.par_chunks_mut(CHUNK)
        .zip(x.par_chunks(CHUNK))
        .for_each(|(gc, xc)| act_grad_slice(a, xc, gc));
}

/// Exact GELU (PyTorch `nn.GELU()`).
pub fn gelu(x: &Tensor) -> Result<Tensor> {
    if !fused_ok(x) {
        return x.gelu_erf();
    }
    x.contiguous()?.apply_op1(ActOp(Activation::Gelu))
}

/// QuickGELU x·σ(1.702x) (OpenAI's CLIP).
pub fn quick_gelu(x: &Tensor) -> Result<Tensor> {
    if !fused_ok(x) {
        return x.mul(&candle_nn::ops::sigmoid(&(x * 1.702)?)?);
    }
    x.contiguous()?.apply_op1(ActOp(Activation::QuickGelu))
}

const CHUNK: usize = 16 * 1024;

struct ActOp(Activation);

impl CustomOp1 for ActOp {
    fn name(&self) -> &'static str {
        "clip-activation"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(s, l, self.name())?;
        Ok((CpuStorage::F32(act_fwd_par(self.0, x)), l.shape().clone()))
    }
    fn bwd(&self, x: &Tensor, _res: &Tensor, dy: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(
            x.apply_op2_no_bwd(&dy.contiguous()?, &ActBwdOp(self.0))?,
        ))
    }
}

struct ActBwdOp(Activation);

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
        let mut dx = dy.to_vec();
        act_grad_par(self.0, x, &mut dx);
        Ok((CpuStorage::F32(dx), l1.shape().clone()))
    }
}
