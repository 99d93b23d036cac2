//! The affine map `y = x Wᵀ + b` as one op: the bias is written into the output before the
//! matrix product accumulates onto it, and the backward pass computes dx = dy W, dW = dyᵀ x
//! and db = Σ_rows dy straight into fresh buffers (candle's composition allocates a broadcast
//! add forward, and a strided reduction plus transposes backward).

use candle_core::{CpuStorage, CustomOp1, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::cpu::{contiguous_f32, fused_ok};
use super::gemm::{matmul, View};

/// x `[R, in]`, weight `[out, in]`, bias `[out]` → `[R, out]`.
pub fn linear(x: &Tensor, weight: &Tensor, bias: &Tensor) -> Result<Tensor> {
    if !fused_ok(x) {
        return linear_composed(x, weight, bias);
    }
    x.contiguous()?
        .apply_op3(&weight.contiguous()?, &bias.contiguous()?, LinearOp)
}

/// The same map out of candle's matmul and broadcast add (the reference, and the non-CPU path).
pub fn linear_composed(x: &Tensor, weight: &Tensor, bias: &Tensor) -> Result<Tensor> {
    x.matmul(&weight.t()?)?.broadcast_add(bias) // [R, out]
}

struct LinearOp;

impl CustomOp3 for LinearOp {
    fn name(&self) -> &'static str {
        "clip-linear"
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
        let (rows, din) = l1.shape().dims2()?;
        let (dout, win) = l2.shape().dims2()?;
        if win != din || b.len() != dout {
            candle_core::bail!(
                "linear: x [{rows}, {din}], weight [{dout}, {win}], bias [{}]",
                b.len()
            );
        }
        let y = linear_fwd(x, rows, w, b); // [R, out]
        Ok((CpuStorage::F32(y), Shape::from((rows, dout))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let dy = dy.contiguous()?;
        let dx = dy.apply_op2_no_bwd(w, &Product::DyW)?; // [R, in]
        let dw = dy.apply_op2_no_bwd(x, &Product::DytX)?; // [out, in]
        let db = dy.apply_op1_no_bwd(&ColumnSum)?; // [out]
        Ok((Some(dx), Some(dw), Some(db)))
    }
}

/// The two products of the backward pass.
enum Product {
    /// dy `[R, out]` · W `[out, in]` → `[R, in]`.
    DyW,
    /// dyᵀ `[out, R]` · x `[R, in]` → `[out, in]`.
    DytX,
}

impl CustomOp2 for Product {
    fn name(&self) -> &'static str {
        "clip-linear-bwd"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let dy = contiguous_f32(s1, l1, self.name())?;
        let other = contiguous_f32(s2, l2, self.name())?;
        let (rows, dout) = l1.shape().dims2()?;
        let (r2, c2) = l2.shape().dims2()?;
        let dyv = View::rows(dy, rows, dout);
        let ov = View::rows(other, r2, c2);
        let (a, b) = match self {
            Product::DyW => (dyv, ov),
            Product::DytX => (dyv.t(), ov),
        };
        let mut out = vec![0f32; a.rows * b.cols];
        matmul(a, b, &mut out, false);
        Ok((CpuStorage::F32(out), Shape::from((a.rows, b.cols))))
    }
}

/// Σ over rows of `[R, C]` → `[C]`, in parallel over row blocks.
struct ColumnSum;

impl CustomOp1 for ColumnSum {
    fn name(&self) -> &'static str {
        "clip-column-sum"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(s, l, self.name())?;
        let (_, c) = l.shape().dims2()?;
        let sum = column_sum(x, c);
        Ok((CpuStorage::F32(sum), Shape::from(c)))
    }
}

/// x `[rows, in]` · wᵀ + b with w `[out, in]`, b `[out]` → `[rows, out]`.
pub(crate) fn linear_fwd(x: &[f32], rows: usize, w: &[f32], b: &[f32]) -> Vec<f32> {
    let dout = b.len();
    let din = w.len() / dout;
    let mut y = vec![0f32; rows * dout];
    y.par_chunks_mut(dout * 256)
        .for_each(|chunk| chunk.chunks_mut(dout).for_each(|r| r.copy_from_slice(b)));
    matmul(
        View::rows(x, rows, din),
        View::rows(w, dout, din).t(),
        &mut y,
        true,
    );
    y
}

/// Σ over the rows of a row-major `[R, c]` matrix → `[c]`. Blocks of rows are summed in
/// parallel and the block sums added in block order, so the result is the same, bit for bit,
/// on every run (a rayon `reduce` would add them in whichever order the threads finish).
pub(crate) fn column_sum(x: &[f32], c: usize) -> Vec<f32> {
    let parts: Vec<Vec<f32>> = x
        .par_chunks(c * 512)
        .map(|block| {
            let mut acc = vec![0f32; c];
            for row in block.chunks(c) {
                acc.iter_mut().zip(row).for_each(|(a, v)| *a += v);
            }
            acc
        })
        .collect(); // in block order
    sum_in_order(parts, c)
}

/// Σ of equal-length vectors, added in the order given.
pub(crate) fn sum_in_order(parts: Vec<Vec<f32>>, len: usize) -> Vec<f32> {
    let mut it = parts.into_iter();
    let mut total = it.next().unwrap_or_else(|| vec![0f32; len]);
    for p in it {
        total.iter_mut().zip(&p).for_each(|(x, y)| *x += y);
    }
    total
}

#[cfg(test)]
mod tests {
    use super::column_sum;

    /// The bias gradient's column sums are a left fold of the 512-row block sums, whatever the
    /// threads do: values of very different magnitudes make any other order of adding the
    /// blocks give other bits.
    #[test]
    fn column_sums_add_blocks_in_order() {
        let (rows, c) = (512 * 9 + 100, 3);
        let x: Vec<f32> = (0..rows * c)
            .map(|i| {
                let block = i / (512 * c);
                let scale = [1e7f32, 1.0, -1e7, 3e-3, 5e6, -7.0, 1e-4, 2e3, -5e6, 0.37][block];
                scale * (1.0 + (i % 97) as f32 * 1e-3)
            })
            .collect();
        let want: Vec<f32> = x
            .chunks(512 * c)
            .map(|block| {
                let mut acc = vec![0f32; c];
                for row in block.chunks(c) {
                    acc.iter_mut().zip(row).for_each(|(a, v)| *a += v);
                }
                acc
            })
            .fold(None, |total: Option<Vec<f32>>, p| match total {
                None => Some(p),
                Some(mut t) => {
                    t.iter_mut().zip(&p).for_each(|(a, b)| *a += b);
                    Some(t)
                }
            })
            .unwrap();
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(4)
            .build()
            .unwrap();
        for _ in 0..20 {
            let got = pool.install(|| column_sum(&x, c));
            assert_eq!(
                got.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                want.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
            );
        }
    }
}
