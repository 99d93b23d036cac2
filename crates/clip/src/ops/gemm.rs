//! A thin, safe wrapper over the `gemm` crate (the matrix multiply candle's CPU backend uses)
//! for strided f32 operands, so fused ops can multiply straight into their own buffers.

use super::amx::{self, PackedB};
use super::bf16_avx512::{self, PackedPairs};
use super::int8::{self, PackedI8};
use super::mode::{products, Products};

/// A read-only strided matrix view: element (i, j) is `data[i·rs + j·cs]`.
#[derive(Clone, Copy)]
pub(crate) struct View<'a> {
    pub data: &'a [f32],
    pub rows: usize,
    pub cols: usize,
    pub rs: usize,
    pub cs: usize,
}

impl<'a> View<'a> {
    /// A row-major `[rows, cols]` matrix.
    pub fn rows(data: &'a [f32], rows: usize, cols: usize) -> Self {
        Self {
            data,
            rows,
            cols,
            rs: cols,
            cs: 1,
        }
    }

    /// The transpose, without moving anything.
    pub fn t(self) -> Self {
        Self {
            data: self.data,
            rows: self.cols,
            cols: self.rows,
            rs: self.cs,
            cs: self.rs,
        }
    }

    fn in_bounds(&self) -> bool {
        self.rows == 0
            || self.cols == 0
            || (self.rows - 1) * self.rs + (self.cols - 1) * self.cs < self.data.len()
    }
}

/// Products smaller than this many multiply-adds run on one thread.
const PARALLEL_MACS: usize = 1 << 18;

/// `c = a·b` (or `c += a·b` with `accumulate`), `c` row-major `[a.rows, b.cols]`; large
/// products split over rayon's threads.
pub(crate) fn matmul(a: View, b: View, c: &mut [f32], accumulate: bool) {
    let n = b.cols;
    let parallel = a.rows * a.cols * n >= PARALLEL_MACS;
    gemm_into(a, b, c, n, accumulate, parallel);
}

/// `c = a·b` (or `+=`) on the calling thread, into rows `ldc` apart: `c[i·ldc + j]`. For the
/// many small products of one attention head, run inside a loop that is itself parallel.
pub(crate) fn matmul_serial_into(a: View, b: View, c: &mut [f32], ldc: usize, accumulate: bool) {
    gemm_into(a, b, c, ldc, accumulate, false);
}

/// Rows per `gemm` call in [`matmul_kept`]. `gemm` 0.19 multiplies a row-major output as its
/// transpose, so our right operand becomes its left one, which it copies into panels ("packs")
/// before multiplying whenever the call has more than 8·6 of our rows (its single-thread
/// packing threshold times the AVX2 kernel's 6). Up to 48 rows, it reads a [`Kept`] operand
/// where it lies. (A kernel of other width packs from a different count: still correct, and
/// no slower than a packed call.)
const UNPACKED_ROWS: usize = 48;

/// The largest [`Kept`] operand read in place, in bytes: one L2 cache (512 KB per core on AMD
/// Zen 3, where it was tuned; not read from the CPU). Each call of [`UNPACKED_ROWS`] rows reads
/// the whole operand again: no slower than a packed call while it stays in L2 (`tiny`'s
/// weights, 205–295 KB), slower once it must come from L3 (`small`'s, 0.6–2.5 MB), which is
/// then multiplied in one packed call per task. The measurements: docs/benchmarks.md.
const IN_PLACE_MAX_BYTES: usize = 512 << 10;

/// A right operand B `[k, n]` kept for many products x·B (a weight, across every task of an
/// op call): row-major, 64-byte aligned, rows `ld` floats apart, `ld` being `n` rounded up to a
/// multiple of 16 floats (one cache line) and then to an odd number of lines, so that the 16
/// values `gemm`'s kernel loads per step of k are one line, and successive steps' lines do not
/// crowd into a few L1 sets as a power-of-two stride would. Built once per op call, it spares
/// every task's product the copy `gemm` would otherwise make of it. Under
/// [`autocast_bf16`](super::autocast_bf16) on a CPU with AMX or AVX512-BF16 it is kept in
/// bf16 instead, in that kernel's layout, and its products run on [`amx`] or [`bf16_avx512`];
/// under [`quantize_int8`](super::quantize_int8) it is kept in i8 and its products run on
/// [`int8`].
pub(crate) struct Kept {
    k: usize,
    n: usize,
    form: Form,
}

/// How a [`Kept`] operand is stored, by the products it serves.
enum Form {
    /// f32, rows `ld` floats apart from `buf[start]`.
    F32 {
        buf: Vec<f32>,
        start: usize,
        ld: usize,
    },
    Amx(PackedB),
    Bf16Pairs(PackedPairs),
    Int8(PackedI8),
}

impl Kept {
    /// A copy of `b`, in the layout above, for the calling thread's products.
    fn of(b: View) -> Self {
        Self::for_products(b, products())
    }

    /// A copy of `b` kept for bf16 products, whatever the calling thread's mode: for work
    /// handed to other threads by an op that found itself under
    /// [`autocast_bf16`](super::autocast_bf16). Only where [`super::bf16_kernel`] has one.
    pub fn bf16(b: View) -> Self {
        Self::for_products(b, Products::Bf16)
    }

    fn for_products(b: View, products: Products) -> Self {
        let (k, n) = (b.rows, b.cols);
        let form = match products {
            Products::Bf16 if amx::available() => Form::Amx(PackedB::of(b.data, k, n, b.rs, b.cs)),
            Products::Bf16 => Form::Bf16Pairs(PackedPairs::of(b.data, k, n, b.rs, b.cs)),
            Products::Int8 => Form::Int8(PackedI8::of(b.data, k, n, b.rs, b.cs)),
            Products::F32 => {
                let ld = (n.div_ceil(16) | 1) * 16;
                let mut buf = vec![0f32; k * ld + 16];
                let start = buf.as_ptr().align_offset(64).min(16);
                for i in 0..k {
                    let row = &mut buf[start + i * ld..][..n];
                    for (j, o) in row.iter_mut().enumerate() {
                        *o = b.data[i * b.rs + j * b.cs];
                    }
                }
                Form::F32 { buf, start, ld }
            }
        };
        Self { k, n, form }
    }

    /// Wᵀ `[in, out]` of a weight W `[out, in]`, row-major: for `x·Wᵀ`.
    pub fn transposed(w: &[f32], out: usize) -> Self {
        Self::of(View::rows(w, out, w.len() / out.max(1)).t())
    }

    /// Columns (n).
    pub fn cols(&self) -> usize {
        self.n
    }

    /// The bytes an f32 product reads: k rows, `ld` floats apart (0 for the other forms).
    #[cfg(test)]
    fn f32_bytes(&self) -> usize {
        match &self.form {
            Form::F32 { ld, .. } => self.k * ld * std::mem::size_of::<f32>(),
            _ => 0,
        }
    }
}

/// `c = x·B` (or `c += x·B`) on the calling thread, x row-major `[rows, k]`, c rows `ldc`
/// apart: in slices of [`UNPACKED_ROWS`] rows, so that `gemm` reads B where it lies, when B
/// fits in [`IN_PLACE_MAX_BYTES`]; otherwise in one call, which packs it.
pub(crate) fn matmul_kept(x: &[f32], b: &Kept, c: &mut [f32], ldc: usize, accumulate: bool) {
    let k = b.k;
    assert!(
        k > 0 && x.len() / k * k == x.len(),
        "matmul_kept: {} values of x are not rows of {k}",
        x.len()
    );
    let (view, bytes) = match &b.form {
        Form::F32 { buf, start, ld } => (
            View {
                data: &buf[*start..],
                rows: k,
                cols: b.n,
                rs: *ld,
                cs: 1,
            },
            k * ld * std::mem::size_of::<f32>(),
        ),
        Form::Amx(packed) => return amx::matmul(x, packed, c, ldc, accumulate),
        Form::Bf16Pairs(packed) => return bf16_avx512::matmul(x, packed, c, ldc, accumulate),
        Form::Int8(packed) => return int8::matmul(x, packed, c, ldc, accumulate),
    };
    let rows = x.len() / k; // x [rows, k] · B [k, n] → c [rows, n]
    let per_call = if bytes <= IN_PLACE_MAX_BYTES {
        UNPACKED_ROWS
    } else {
        rows.max(1)
    };
    for start in (0..rows).step_by(per_call) {
        let n = per_call.min(rows - start);
        let xs = View::rows(&x[start * k..(start + n) * k], n, k);
        gemm_into(xs, view, &mut c[start * ldc..], ldc, accumulate, false);
    }
}

/// The library's one `unsafe` block: `gemm` takes raw pointers and strides.
#[allow(unsafe_code)]
fn gemm_into(a: View, b: View, c: &mut [f32], ldc: usize, accumulate: bool, parallel: bool) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    assert_eq!(k, b.rows, "matmul: inner dimensions {k} and {}", b.rows);
    assert!(
        ldc >= n && (m == 0 || c.len() >= (m - 1) * ldc + n),
        "matmul: output of {} values, rows {ldc} apart, cannot hold {m}×{n}",
        c.len()
    );
    assert!(a.in_bounds() && b.in_bounds(), "matmul: view out of bounds");
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            c.chunks_mut(ldc).take(m).for_each(|row| row[..n].fill(0.0));
        }
        return;
    }
    let threads = rayon::current_num_threads();
    let parallelism = if parallel && threads > 1 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: the two views were checked to lie inside their slices; `c` is exclusively
    // borrowed and holds element (i, j) at i·ldc + j < c.len() for i < m, j < n (checked);
    // gemm reads `c` only when `accumulate`.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            ldc as isize,
            accumulate,
            a.data.as_ptr(),
            a.cs as isize,
            a.rs as isize,
            b.data.as_ptr(),
            b.cs as isize,
            b.rs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(a: View, b: View) -> Vec<f32> {
        let mut c = vec![0f32; a.rows * b.cols];
        for i in 0..a.rows {
            for j in 0..b.cols {
                for p in 0..a.cols {
                    c[i * b.cols + j] += a.data[i * a.rs + p * a.cs] * b.data[p * b.rs + j * b.cs];
                }
            }
        }
        c
    }

    #[test]
    fn strided_products_match_the_definition() {
        let a: Vec<f32> = (0..6 * 5).map(|i| (i as f32 * 0.37).sin()).collect();
        let b: Vec<f32> = (0..5 * 7).map(|i| (i as f32 * 0.11).cos()).collect();
        let (av, bv) = (View::rows(&a, 6, 5), View::rows(&b, 5, 7));
        for (x, y) in [(av, bv), (bv.t(), av.t())] {
            let mut c = vec![1f32; x.rows * y.cols];
            matmul(x, y, &mut c, false);
            let want = naive(x, y);
            for (g, w) in c.iter().zip(&want) {
                assert!((g - w).abs() < 1e-5);
            }
            matmul(x, y, &mut c, true);
            for (g, w) in c.iter().zip(&want) {
                assert!((g - 2.0 * w).abs() < 1e-5);
            }
        }
    }

    #[test]
    fn kept_operands_multiply_as_the_definition_across_slices() {
        // 100 rows: slices of 48, 48, 4; n = 20 and 37 pad to odd line counts.
        let x: Vec<f32> = (0..100 * 7).map(|i| (i as f32 * 0.37).sin()).collect();
        for n in [20, 37] {
            let w: Vec<f32> = (0..n * 7).map(|i| (i as f32 * 0.11).cos()).collect();
            let xv = View::rows(&x, 100, 7);
            let want = naive(xv, View::rows(&w, n, 7).t()); // x·Wᵀ [100, n]
            let kept = Kept::transposed(&w, n);
            assert_eq!(kept.cols(), n);
            let mut c = vec![1f32; 100 * n];
            matmul_kept(&x, &kept, &mut c, n, false);
            for (g, w) in c.iter().zip(&want) {
                assert!((g - w).abs() < 1e-5);
            }
            matmul_kept(&x, &kept, &mut c, n, true);
            for (g, w) in c.iter().zip(&want) {
                assert!((g - 2.0 * w).abs() < 1e-5);
            }
        }
    }

    #[test]
    fn kept_operands_past_the_cache_multiply_in_one_call() {
        // B [384, 400]: 600 KB, over IN_PLACE_MAX_BYTES; 100 rows of x, output rows 410 apart.
        let (rows, k, n, ldc) = (100, 384, 400, 410);
        let x: Vec<f32> = (0..rows * k).map(|i| (i as f32 * 0.37).sin()).collect();
        let w: Vec<f32> = (0..n * k).map(|i| (i as f32 * 0.11).cos()).collect();
        let kept = Kept::transposed(&w, n);
        assert!(kept.f32_bytes() > IN_PLACE_MAX_BYTES);
        let want = naive(View::rows(&x, rows, k), View::rows(&w, n, k).t()); // [rows, n]
        let mut c = vec![7f32; rows * ldc];
        matmul_kept(&x, &kept, &mut c, ldc, false);
        for (idx, &g) in c.iter().enumerate() {
            let (i, j) = (idx / ldc, idx % ldc);
            if j < n {
                let w = want[i * n + j];
                assert!(
                    (g - w).abs() < 1e-4 * (1.0 + w.abs()),
                    "({i}, {j}): {g} vs {w}"
                );
            } else {
                assert_eq!(g, 7.0, "gap at ({i}, {j}) written");
            }
        }
    }

    #[test]
    fn products_into_a_wider_output_leave_the_gaps_alone() {
        let a: Vec<f32> = (0..4 * 3).map(|i| (i as f32 * 0.7).sin()).collect();
        let b: Vec<f32> = (0..3 * 5).map(|i| (i as f32 * 0.3).cos()).collect();
        let (av, bv) = (View::rows(&a, 4, 3), View::rows(&b, 3, 5));
        let want = naive(av, bv);
        let ldc = 9;
        let mut c = vec![7f32; 3 * ldc + 5];
        matmul_serial_into(av, bv, &mut c, ldc, false);
        for (idx, &g) in c.iter().enumerate() {
            let (i, j) = (idx / ldc, idx % ldc);
            if j < 5 {
                assert!((g - want[i * 5 + j]).abs() < 1e-5, "({i}, {j})");
            } else {
                assert_eq!(g, 7.0, "gap at ({i}, {j}) written");
            }
        }
    }
}
