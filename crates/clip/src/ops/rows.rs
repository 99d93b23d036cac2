//! The steps a fused block runs over one task's rows on the calling thread: products with a
//! bias, residual or activation folded in, their backward, and how rows are cut into tasks.

use std::cell::RefCell;

use super::activation::{act_fwd_slice, Activation};
use super::gemm::{matmul_kept, matmul_serial_into, Kept, View};

/// `a += b`.
pub(super) fn add_into(a: &mut [f32], b: &[f32]) {
    a.iter_mut().zip(b).for_each(|(u, v)| *u += v);
}

/// `y = x·Wᵀ + b` for x `[r, in]`, W `[out, in]` (kept as Wᵀ: [`Kept::transposed`]), into
/// y `[r, out]`.
pub(super) fn affine(x: &[f32], w: &Kept, b: &[f32], y: &mut [f32]) {
    let dout = w.cols();
    y.chunks_mut(dout).for_each(|r| r.copy_from_slice(b));
    matmul_kept(x, w, y, dout, true);
}

/// `y = res + b + x·Wᵀ` for x `[r, in]`, W `[out, in]`, res and y `[r, out]`: the residual
/// and the bias in one pass, the product accumulated onto them.
pub(super) fn affine_onto(x: &[f32], w: &Kept, b: &[f32], res: &[f32], y: &mut [f32]) {
    let dout = w.cols();
    for (yr, rr) in y.chunks_mut(dout).zip(res.chunks(dout)) {
        yr.iter_mut()
            .zip(rr.iter().zip(b))
            .for_each(|(o, (r, b))| *o = r + b);
    }
    matmul_kept(x, w, y, dout, true);
}

/// `hpre = x·Wᵀ + b` and `hact = act(hpre)`: the bias added in the activation's pass instead
/// of written before the product.
pub(super) fn affine_act(
    act: Activation,
    x: &[f32],
    w: &Kept,
    b: &[f32],
    hpre: &mut [f32],
    hact: &mut [f32],
) {
    let dout = w.cols();
    matmul_kept(x, w, hpre, dout, false);
    for (pr, ar) in hpre.chunks_mut(dout).zip(hact.chunks_mut(dout)) {
        add_into(pr, b);
        act_fwd_slice(act, pr, ar);
    }
}

/// Backward of `y = x·Wᵀ + b` over r rows: adds dyᵀ·x to `dw` `[out, in]` and the column sums
/// of dy to `db` `[out]`; with `bf16`, the product in bf16 (dyᵀ written out, x kept in bf16
/// for it).
pub(super) fn affine_param_grads(
    dy: &[f32],
    x: &[f32],
    dw: &mut [f32],
    db: &mut [f32],
    bf16: bool,
) {
    let dout = db.len();
    let din = dw.len() / dout;
    let rows = dy.len() / dout;
    if bf16 && rows > 0 {
        DYT.with(|cell| {
            let mut dyt = cell.borrow_mut(); // [out, r]
            dyt.resize(dout * rows, 0.0);
            for (i, row) in dy.chunks(dout).enumerate() {
                for (j, &v) in row.iter().enumerate() {
                    dyt[j * rows + i] = v;
                }
            }
            let xk = Kept::bf16(View::rows(x, rows, din)); // [r, in]
            matmul_kept(&dyt, &xk, dw, din, true);
        });
    } else {
        let (dyt, xv) = (View::rows(dy, rows, dout).t(), View::rows(x, rows, din));
        matmul_serial_into(dyt, xv, dw, din, true);
    }
    for row in dy.chunks(dout) {
        add_into(db, row);
    }
}

thread_local! {
    /// A thread's dyᵀ for [`affine_param_grads`] in bf16.
    static DYT: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// dx = dy·W `[r, in]` for W `[out, in]`, into `dx`: from `kept` (W kept as it is, in bf16,
/// [`Kept::bf16`]) where given, else in f32 from `w`.
pub(super) fn affine_dx(dy: &[f32], w: &[f32], kept: Option<&Kept>, dout: usize, dx: &mut [f32]) {
    let din = w.len() / dout;
    if let Some(k) = kept {
        return matmul_kept(dy, k, dx, din, false);
    }
    let rows = dy.len() / dout;
    let (dyv, wv) = (View::rows(dy, rows, dout), View::rows(w, dout, din));
    matmul_serial_into(dyv, wv, dx, din, false);
}

/// Batch elements per task, for `b` elements of `t` tokens: whole elements (attention mixes an
/// element's rows), about 256 rows — enough for `gemm` to run well on one thread, few enough
/// that a task's intermediates stay in cache. Each task runs the whole block over its rows, so
/// the element-wise passes (bias, LayerNorm, activation, residual adds) read what the product
/// before them just wrote. When that makes only a few tasks, their count is rounded up to a
/// multiple of the threads, so that no thread is left alone with a last odd task.
pub(super) fn elems_per_task(b: usize, t: usize) -> usize {
    let per = 256usize.div_ceil(t.max(1));
    let tasks = b.div_ceil(per);
    let threads = rayon::current_num_threads().max(1);
    if tasks >= 4 * threads {
        return per;
    }
    b.div_ceil(tasks.div_ceil(threads) * threads).max(1)
}

/// Cuts each buffer into per-task slices of `rows` rows (buffer `i` has `widths[i]` values a
/// row): one array of `N` slices per task, in task order.
pub(super) fn task_rows_mut<const N: usize>(
    bufs: [&mut [f32]; N],
    widths: [usize; N],
    rows: usize,
) -> Vec<[&mut [f32]; N]> {
    let tasks = bufs[0].len().div_ceil(rows * widths[0]);
    let mut cuts: [_; N] = std::array::from_fn(|_| Vec::new());
    for ((cut, buf), c) in cuts.iter_mut().zip(bufs).zip(widths) {
        *cut = buf.chunks_mut(rows * c).rev().collect::<Vec<_>>(); // popped from the back
    }
    (0..tasks)
        .map(|_| cuts.each_mut().map(|c| c.pop().unwrap_or_default()))
        .collect()
}

/// As [`task_rows_mut`], for reading.
pub(super) fn task_rows<const N: usize>(
    bufs: [&[f32]; N],
    widths: [usize; N],
    rows: usize,
) -> Vec<[&[f32]; N]> {
    let tasks = bufs[0].len().div_ceil(rows * widths[0]);
    (0..tasks)
        .map(|i| {
            std::array::from_fn(|k| {
                let n = rows * widths[k];
                let a = (i * n).min(bufs[k].len());
                &bufs[k][a..(a + n).min(bufs[k].len())]
            })
        })
        .collect()
}

/// Cuts `buf` into consecutive slices of the given lengths.
pub(super) fn carve<const N: usize>(mut buf: &mut [f32], lens: [usize; N]) -> [&mut [f32]; N] {
    lens.map(|n| {
        let (head, rest) = std::mem::take(&mut buf).split_at_mut(n);
        buf = rest;
        head
    })
}

thread_local! {
    /// Each thread's scratch for blocks under inference, kept from call to call (it only
    /// grows): a fresh zeroed buffer per task would be a `memset` of every intermediate.
    static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` on `len` values of this thread's scratch (contents unspecified). Should `f` reach
/// here again on the same thread, the inner call gets a fresh buffer.
pub(super) fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut v) => {
            if v.len() < len {
                v.resize(len, 0.0);
            }
            f(&mut v[..len])
        }
        Err(_) => f(&mut vec![0f32; len]),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_rows_cut_every_buffer_at_the_same_rows() {
        let (mut a, mut b) = (
            (0..10).map(|v| v as f32).collect::<Vec<_>>(),
            vec![0f32; 15],
        );
        let tasks = task_rows_mut([&mut a[..], &mut b[..]], [2, 3], 2); // 5 rows
        assert_eq!(tasks.len(), 3);
        let lens: Vec<[usize; 2]> = tasks
            .iter()
            .map(|t| t.each_ref().map(|s| s.len()))
            .collect();
        assert_eq!(lens, vec![[4, 6], [4, 6], [2, 3]]);
        assert_eq!(tasks[2][0], &[8.0, 9.0]);
        let read = task_rows([&a[..], &b[..]], [2, 3], 2);
        assert_eq!(read.len(), 3);
        assert_eq!(read[1][0], &[4.0, 5.0, 6.0, 7.0]);
        assert_eq!(read[2][1].len(), 3);
    }
}
