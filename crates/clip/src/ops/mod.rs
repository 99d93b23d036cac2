//! Fused CPU ops with explicit backward, as candle custom ops: LayerNorm, softmax over the last
//! dimension, exact GELU and QuickGELU. candle's generic versions are chains of element-wise
//! ops (each a pass over memory and an allocation, and more in backward); these are one pass,
//! parallel over rows. Off the CPU, or for dtypes other than f32, the composed candle ops run.
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

pub(crate) fn fused_ok(x: &Tensor) -> bool {
    x.device().is_cpu() && x.dtype() == candle_core::DType::F32
}

mod activation;
mod attention;
mod gemm;
mod linear;
mod norm;
mod softmax;

pub use activation::{gelu, quick_gelu};
pub use attention::{attention, attention_composed, causal_mask};
pub use linear::{linear, linear_composed};
pub use norm::{layer_norm, layer_norm_composed};
pub use softmax::softmax_last_dim;
