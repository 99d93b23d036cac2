//! Fused CPU ops with explicit backward, as candle custom ops: a whole residual block (`block`),
//! the last block reduced to the rows pooled after it (`pooled_block`),
//! linear, multi-head attention, LayerNorm, softmax over the last dimension, exact GELU and
//! QuickGELU. candle's generic versions are chains of element-wise ops (each a pass over memory
//! and an allocation, and more in backward); these work over plain buffers, parallel over rows. Off the CPU, or for dtypes other than f32, the composed candle ops run.
//! Each is tested against the composition it replaces: values and gradients (tests/fused_ops.rs).

use candle_core::{bail, CpuStorage, Layout, Result, Tensor};
use rayon::prelude::*;

/// Rows handed to one rayon task at a time.
pub(crate) const ROWS_PER_TASK: usize = 64;

pub(crate) fn contiguous_f32<'a>(s: &'a CpuStorage, l: &Layout, op: &str) -> Result<&'a [f32]> {
    let data = s.as_slice::<f32>()?;
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&data[a..b]),
        None => bail!("{op}: input must be contiguous"),
    }
}

/// A new buffer with `f(input_row, output_row)` applied to every row of width `c`, in parallel.
pub(crate) fn map_rows(x: &[f32], c: usize, f: impl Fn(&[f32], &mut [f32]) + Sync) -> Vec<f32> {
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

/// eˣ for f32 without a libm call (Cephes `expf`: x = k·ln 2 + r, |r| ≤ ln 2 / 2, degree-6
/// polynomial for eʳ, 2ᵏ built in the exponent bits). Relative error about 1e-7; 0 below
/// −87.3, so −∞ (a masked score) gives 0. Branch-free, so loops over slices vectorise; libm's
/// `expf` cannot, and was 8% of a training step.
#[inline(always)]
pub(crate) fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const C1: f32 = 0.693_359_4;
    const C2: f32 = -2.121_944_4e-4;
    let xc = x.clamp(-87.3, 88.7);
    // Round to nearest by the 1.5·2²³ trick: no `floor`, which is a libm call on baseline x86-64.
    // The sum's low mantissa bits then hold k as an integer, read by a bit cast: an `as i32`
    // cast saturates, which LLVM does one lane at a time and which kept every caller scalar.
    const MAGIC: f32 = 12_582_912.0;
    let shifted = xc * LOG2E + MAGIC;
    let k = shifted - MAGIC;
    let ki = (shifted.to_bits() as i32).wrapping_sub(MAGIC.to_bits() as i32); // k, −126 … 128
    let r = fma(-k, C2, fma(-k, C1, xc));
    let p = fma(
        fma(
            fma(
                fma(fma(1.987_569_1e-4, r, 1.398_2e-3), r, 8.333_452e-3),
                r,
                4.166_579_6e-2,
            ),
            r,
            1.666_666_5e-1,
        ),
        r,
        0.5,
    );
    let e = fma(p, r * r, r) + 1.0;
    let scale = f32::from_bits(((ki + 127) as u32) << 23);
    if x < -87.3 {
        0.0
    } else {
        e * scale
    }
}

/// `a·b + c`, one rounding where the CPU has FMA (the build targets the native CPU), else two;
/// `f32::mul_add` without the instruction would be a libm call.
#[inline(always)]
pub(crate) fn fma(a: f32, b: f32, c: f32) -> f32 {
    #[cfg(target_feature = "fma")]
    {
        a.mul_add(b, c)
    }
    #[cfg(not(target_feature = "fma"))]
    {
        a * b + c
    }
}

pub fn fused_ok(x: &Tensor) -> bool {
    x.device().is_cpu() && x.dtype() == candle_core::DType::F32
}

mod accumulate;
mod activation;
mod attention;
mod block;
mod gemm;
mod lanes;
mod linear;
mod norm;
mod pooled_block;
mod softmax;

pub use activation::{gelu, quick_gelu};
pub use attention::{attention, attention_composed, causal_mask};
pub use block::{inference, residual_block, residual_block_composed, BlockCfg, BlockParams};
pub use linear::{linear, linear_composed};
pub use norm::{layer_norm, layer_norm_composed};
pub use pooled_block::{gather_rows, residual_block_pooled, residual_block_pooled_composed};
pub use softmax::softmax_last_dim;

#[cfg(test)]
mod tests {
    #[test]
    fn exp_matches_libm() {
        let mut worst = 0f32;
        for i in -2_000_000..=2_000_000 {
            let x = i as f32 * 4.4e-5; // −88 … 88
            let (got, want) = (super::exp(x), x.exp());
            if want > 1e-37 {
                worst = worst.max(((got - want) / want).abs());
            }
        }
        assert!(worst < 3e-7, "worst relative error {worst}");
        assert_eq!(super::exp(f32::NEG_INFINITY), 0.0);
        assert_eq!(super::exp(-100.0), 0.0);
    }
}
