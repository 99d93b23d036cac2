//! int8 matrix products for inference, as PyTorch's dynamic quantisation: a weight B `[k, n]`
//! quantised once, symmetric, with one scale per output column (`max|B[:, j]| / 127`); the
//! rows of x quantised at each product, one scale per row (`max|x[i, :]| / 127`); the i8·i8
//! products summed exactly in i32, then scaled back to f32 by `scale_x[i] · scale_b[j]`.
//!
//! Where the CPU has AVX512-VNNI the products run on [`super::int8_vnni`]. Otherwise the AVX2
//! kernel multiplies pairs of k at once (`vpmaddwd`: 16 i16 products summed in pairs into 8
//! i32): B is kept as i8 in blocks of 8 columns, each step of 2 along k one 16-byte row
//! `[c0k0, c0k1, c1k0, c1k1, …, c7k1]` (widened to i16 as it is loaded); x's rows are kept as
//! i16 pairs, each pair broadcast to all 8 columns. A register block is 4 rows × 16 columns
//! (8 accumulators). Without either the same arithmetic runs in plain Rust. All three give
//! identical results (the same integer sums, scaled in the same order); only speed differs.
#![allow(unsafe_code)]

use std::cell::RefCell;
use std::sync::OnceLock;

use super::int8_vnni::{self, PackedQuads};

/// Columns per block of B (one register of 8 i32 sums).
const NB: usize = 8;
/// Rows of x per register block.
const MR: usize = 4;
/// The largest quantised magnitude (symmetric: −127…127, so that −x is representable).
const QMAX: f32 = 127.0;

/// Whether the AVX2 kernel runs here (asked once per process; `CLIPFORGE_NO_AVX2_INT8=1`
/// forces the portable one, for tests).
pub(crate) fn avx2() -> bool {
    static OK: OnceLock<bool> = OnceLock::new();
    *OK.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            std::env::var_os("CLIPFORGE_NO_AVX2_INT8").is_none()
                && std::arch::is_x86_feature_detected!("avx2")
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    })
}

/// The kernel int8 products run on here, for reports.
pub fn int8_kernel() -> &'static str {
    if int8_vnni::available() {
        "AVX512-VNNI (vpdpbusd, i32 sums)"
    } else if avx2() {
        "AVX2 (vpmaddwd, i32 sums)"
    } else {
        "portable (i32 sums)"
    }
}

/// A weight B `[k, n]` quantised to i8 per column, in the layout of the kernel that runs here.
pub(crate) struct PackedI8 {
    pub k: usize,
    pub n: usize,
    /// `[n]`: the value of one quantisation step of each column.
    scale: Vec<f32>,
    form: Form,
}

/// The quantised values' layout.
enum Form {
    /// For the AVX2 and portable kernels: column block `j` (columns `8j … 8j+7`), pair `p`
    /// (k = 2p, 2p+1) at `data[(j·kp/2 + p)·16 ..][..16]`, kp being k rounded up to even;
    /// columns past n and the odd k past the end are zeros.
    Pairs { kp: usize, data: Vec<i8> },
    /// For AVX512-VNNI.
    Quads(PackedQuads),
}

impl PackedI8 {
    /// B with element (i, j) at `b[i·rs + j·cs]`.
    pub fn of(b: &[f32], k: usize, n: usize, rs: usize, cs: usize) -> Self {
        Self::laid_out(b, k, n, rs, cs, int8_vnni::available())
    }

    /// As [`PackedI8::of`], for the VNNI kernel or (`vnni` false) the others.
    fn laid_out(b: &[f32], k: usize, n: usize, rs: usize, cs: usize, vnni: bool) -> Self {
        let scale: Vec<f32> = (0..n)
            .map(|j| {
                let m = (0..k).fold(0f32, |m, i| m.max(b[i * rs + j * cs].abs()));
                if m > 0.0 {
                    m / QMAX
                } else {
                    1.0
                }
            })
            .collect();
        let q = |i: usize, j: usize| {
            (b[i * rs + j * cs] / scale[j])
                .round_ties_even()
                .clamp(-QMAX, QMAX) as i8
        };
        let form = if vnni {
            Form::Quads(PackedQuads::of(k, n, q))
        } else {
            let kp = k.next_multiple_of(2);
            let mut data = vec![0i8; n.div_ceil(NB) * kp * NB];
            for j in 0..n {
                let (blk, col) = (j / NB, j % NB);
                for i in 0..k {
                    data[(blk * kp / 2 + i / 2) * 2 * NB + col * 2 + i % 2] = q(i, j);
                }
            }
            Form::Pairs { kp, data }
        };
        Self { k, n, scale, form }
    }
}

thread_local! {
    /// A calling thread's quantised rows of x, reused across products: as i16 for the AVX2
    /// and portable kernels, offset to u8 for VNNI's.
    static XQ: RefCell<Vec<i16>> = const { RefCell::new(Vec::new()) };
    static XU: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Quantises the rows of x `[rows, k]` into `buf` (rows `len` ≥ k apart, `padded_rows` rows,
/// zeros past x), each value q given as `put(q)`; returns each row's scale.
fn quantise_rows<T: Copy + Default>(
    x: &[f32],
    k: usize,
    len: usize,
    padded_rows: usize,
    buf: &mut Vec<T>,
    put: impl Fn(i16) -> T,
) -> Vec<f32> {
    buf.clear();
    buf.resize(padded_rows * len, T::default());
    let mut sx = vec![0f32; padded_rows];
    for (r, (row, q)) in x.chunks(k).zip(buf.chunks_mut(len)).enumerate() {
        let m = row.iter().fold(0f32, |m, v| m.max(v.abs()));
        let s = if m > 0.0 { m / QMAX } else { 1.0 };
        sx[r] = s;
        let inv = 1.0 / s;
        // Rounded to nearest, ties to even, as PyTorch rounds.
        for (d, &v) in q.iter_mut().zip(row) {
            *d = put((v * inv).round_ties_even().clamp(-QMAX, QMAX) as i16);
        }
    }
    sx
}

/// `c = x·B` (or `c += x·B` with `accumulate`) on the calling thread, x row-major `[rows, k]`,
/// c rows `ldc` apart; x quantised per row, B as packed.
pub(crate) fn matmul(x: &[f32], b: &PackedI8, c: &mut [f32], ldc: usize, accumulate: bool) {
    let (k, n) = (b.k, b.n);
    assert!(
        k > 0 && x.len().is_multiple_of(k),
        "int8::matmul: {} values of x are not rows of {k}",
        x.len()
    );
    let rows = x.len() / k;
    assert!(
        ldc >= n && (rows == 0 || c.len() >= (rows - 1) * ldc + n),
        "int8::matmul: output of {} values, rows {ldc} apart, cannot hold {rows}×{n}",
        c.len()
    );
    if rows == 0 || n == 0 {
        return;
    }
    let (kp, data) = match &b.form {
        Form::Pairs { kp, data } => (*kp, data),
        Form::Quads(quads) => {
            return XU.with(|cell| {
                let mut xu = cell.borrow_mut();
                let padded = rows.next_multiple_of(int8_vnni::MR);
                let sx = quantise_rows(x, k, quads.row_len(), padded, &mut xu, |q| (q + 128) as u8);
                int8_vnni::matmul(&xu, &sx, rows, quads, &b.scale, n, c, ldc, accumulate);
            })
        }
    };
    let block = |blk: usize| &data[blk * kp * NB..][..kp * NB]; // `kp/2` rows of 16 i8
    XQ.with(|cell| {
        let mut xq = cell.borrow_mut();
        let sx = quantise_rows(x, k, kp, rows.next_multiple_of(MR), &mut xq, |q| q);
        let mut acc = [[0i32; 2 * NB]; MR];
        for r0 in (0..rows).step_by(MR) {
            let xs = &xq[r0 * kp..(r0 + MR) * kp];
            for j0 in (0..n).step_by(2 * NB) {
                let (b0, b1) = (j0 / NB, (j0 / NB + 1).min(n.div_ceil(NB) - 1));
                kernel(xs, kp, block(b0), block(b1), &mut acc);
                for (r, sums) in acc.iter().enumerate().take(rows - r0) {
                    let row = &mut c[(r0 + r) * ldc..];
                    for (j, &v) in sums.iter().enumerate().take(n - j0) {
                        let y = v as f32 * sx[r0 + r] * b.scale[j0 + j];
                        if accumulate {
                            row[j0 + j] += y;
                        } else {
                            row[j0 + j] = y;
                        }
                    }
                }
            }
        }
    });
}

/// `acc[r][0..8] = Σ_k x[r, k]·B[k, block b0]`, `acc[r][8..16]` the same for block b1, for
/// the MR rows of `xs` (`[MR, kp]` i16, each row `kp/2` pairs).
fn kernel(xs: &[i16], kp: usize, b0: &[i8], b1: &[i8], acc: &mut [[i32; 2 * NB]; MR]) {
    #[cfg(target_arch = "x86_64")]
    if avx2() {
        // SAFETY: AVX2 is present (checked above); every load below is inside `xs`, `b0`, `b1`
        // (asserted) and every store inside `acc`.
        unsafe { kernel_avx2(xs, kp, b0, b1, acc) };
        return;
    }
    kernel_portable(xs, kp, b0, b1, acc);
}

/// [`kernel`] in plain Rust.
fn kernel_portable(xs: &[i16], kp: usize, b0: &[i8], b1: &[i8], acc: &mut [[i32; 2 * NB]; MR]) {
    for (r, sums) in acc.iter_mut().enumerate() {
        let x = &xs[r * kp..][..kp];
        for (half, blk) in [b0, b1].into_iter().enumerate() {
            for col in 0..NB {
                sums[half * NB + col] = (0..kp)
                    .map(|i| x[i] as i32 * blk[(i / 2) * 2 * NB + col * 2 + i % 2] as i32)
                    .sum();
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn kernel_avx2(xs: &[i16], kp: usize, b0: &[i8], b1: &[i8], acc: &mut [[i32; 2 * NB]; MR]) {
    use std::arch::x86_64::*;
    assert!(xs.len() >= MR * kp && b0.len() >= kp * NB && b1.len() >= kp * NB);
    let mut s = [[_mm256_setzero_si256(); 2]; MR];
    let x = xs.as_ptr() as *const i32; // pairs of i16 as one i32
    let pairs = kp / 2;
    for p in 0..pairs {
        let w0 = _mm256_cvtepi8_epi16(_mm_loadu_si128(b0.as_ptr().add(p * 2 * NB) as *const _));
        let w1 = _mm256_cvtepi8_epi16(_mm_loadu_si128(b1.as_ptr().add(p * 2 * NB) as *const _));
        for (r, acc_r) in s.iter_mut().enumerate() {
            let a = _mm256_set1_epi32(x.add(r * pairs + p).read_unaligned());
            acc_r[0] = _mm256_add_epi32(acc_r[0], _mm256_madd_epi16(a, w0));
            acc_r[1] = _mm256_add_epi32(acc_r[1], _mm256_madd_epi16(a, w1));
        }
    }
    for (r, acc_r) in s.iter().enumerate() {
        _mm256_storeu_si256(acc[r].as_mut_ptr() as *mut __m256i, acc_r[0]);
        _mm256_storeu_si256(acc[r].as_mut_ptr().add(NB) as *mut __m256i, acc_r[1]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rand(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 33) as f32 / (1u64 << 31) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    /// Against the product of the same quantised values summed in i32 (to f32 rounding), and
    /// within quantisation error of the f32 product; odd sizes cross every edge.
    #[test]
    fn int8_product_is_the_product_of_the_quantised_operands() {
        for &(rows, k, n) in &[
            (1, 1, 1),
            (5, 7, 9),
            (9, 33, 17),
            (13, 64, 40),
            (70, 1100, 20),
        ] {
            let x = rand(rows * k, 1);
            let w = rand(n * k, 2); // W [n, k]: B = Wᵀ
            let b = PackedI8::of(&w, k, n, 1, k);
            let mut c = vec![7f32; rows * n];
            matmul(&x, &b, &mut c, n, false);
            for r in 0..rows {
                let xr = &x[r * k..][..k];
                let sx = xr.iter().fold(0f32, |m, v| m.max(v.abs())) / QMAX;
                for j in 0..n {
                    let wj = &w[j * k..][..k];
                    let exact: f32 = xr.iter().zip(wj).map(|(a, b)| a * b).sum();
                    let q: i32 = xr
                        .iter()
                        .zip(wj)
                        .map(|(a, w)| {
                            let qa = (a * (1.0 / sx)).round_ties_even() as i32;
                            let qw = (w / b.scale[j]).round_ties_even() as i32;
                            qa * qw
                        })
                        .sum();
                    let want = q as f32 * sx * b.scale[j];
                    let got = c[r * n + j];
                    assert!(
                        (got - want).abs() <= 1e-5 * want.abs().max(1.0),
                        "{got} {want}"
                    );
                    let tol = 2.0 * (k as f32).sqrt() / QMAX;
                    assert!(
                        (got - exact).abs() < tol,
                        "{rows}x{k}x{n}: {got} vs f32 {exact}"
                    );
                }
            }
            // accumulate adds onto c
            let before = c.clone();
            matmul(&x, &b, &mut c, n, true);
            for (a, b) in c.iter().zip(&before) {
                assert!((a - 2.0 * b).abs() <= 1e-5 * b.abs().max(1.0));
            }
        }
    }

    /// The AVX2 kernel's sums are the portable kernel's, to the bit (integer arithmetic), with
    /// the extreme values −127 and 127 everywhere they can meet.
    #[test]
    fn avx2_kernel_sums_as_the_portable_one() {
        if !avx2() {
            eprintln!("no AVX2 here: only the portable kernel was checked");
            return;
        }
        let kp = 3072;
        let xs: Vec<i16> = (0..MR * kp)
            .map(|i| {
                if i < kp {
                    127
                } else {
                    [127, -127, 5, -1][i % 4]
                }
            })
            .collect();
        let b: Vec<i8> = (0..2 * kp * NB)
            .map(|i| [-127i8, 127, 127, 127, -9][i % 5])
            .collect();
        let (b0, b1) = b.split_at(kp * NB);
        let (mut fast, mut slow) = ([[0i32; 2 * NB]; MR], [[0i32; 2 * NB]; MR]);
        kernel(&xs, kp, b0, b1, &mut fast);
        kernel_portable(&xs, kp, b0, b1, &mut slow);
        assert_eq!(fast, slow);
        assert!(fast.iter().flatten().any(|&v| v.abs() > 1 << 20));
    }

    /// The VNNI kernel's products are the other kernels', to the bit: the same integer sums
    /// (its unsigned offset taken off exactly) scaled in the same order; ±127 where the rows'
    /// and columns' largest values fall; sizes across its 6-row and 64-column edges.
    #[test]
    fn vnni_products_equal_the_other_kernels() {
        if !int8_vnni::available() {
            eprintln!("no AVX512-VNNI here: its kernel was not checked");
            return;
        }
        for &(rows, k, n) in &[(1, 1, 1), (7, 5, 70), (6, 64, 64), (13, 1100, 130)] {
            let x = rand(rows * k, 3);
            let w = rand(n * k, 4);
            let (quads, pairs) = (
                PackedI8::laid_out(&w, k, n, 1, k, true),
                PackedI8::laid_out(&w, k, n, 1, k, false),
            );
            let ldc = n + 2;
            let (mut fast, mut slow) = (vec![7f32; rows * ldc], vec![7f32; rows * ldc]);
            for accumulate in [false, true] {
                matmul(&x, &quads, &mut fast, ldc, accumulate);
                matmul(&x, &pairs, &mut slow, ldc, accumulate);
                assert_eq!(fast, slow, "{rows}×{k}×{n}, accumulate {accumulate}");
            }
        }
    }

    #[test]
    fn zero_rows_and_columns_quantise_without_dividing_by_zero() {
        let (k, n) = (4, 3);
        let w = vec![0f32; k * n];
        let b = PackedI8::of(&w, k, n, n, 1);
        let x = vec![0f32; 2 * k];
        let mut c = vec![1f32; 2 * n];
        matmul(&x, &b, &mut c, n, false);
        assert!(c.iter().all(|&v| v == 0.0));
    }
}
