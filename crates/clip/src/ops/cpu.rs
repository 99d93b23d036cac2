//! What every fused op shares: when it applies, its input as a plain slice, a row-parallel map.

use candle_core::{bail, CpuStorage, Layout, Result, Tensor};
use rayon::prelude::*;

/// Rows handed to one rayon task at a time.
pub(crate) const ROWS_PER_TASK: usize = 64;

/// Whether the fused ops run on `x` (CPU, f32); elsewhere the composed candle ops do.
pub fn fused_ok(x: &Tensor) -> bool {
    x.device().is_cpu() && x.dtype() == candle_core::DType::F32
}

/// The values of a contiguous f32 input, or an error naming `op`.
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
