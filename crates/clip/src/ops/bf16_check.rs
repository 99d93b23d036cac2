//! Test support for the bf16 kernels ([`super::amx`], [`super::bf16_avx512`]): a kernel's
//! products against bf16 arithmetic summed in f64, at sizes that cross its edges, into output
//! rows wider than n (the gaps must stay untouched), then accumulated onto themselves.

use super::amx::{from_bf16, to_bf16};

/// A kernel under test: `(x [rows, k], B [k, n] row-major, rows, k, n, c, ldc, accumulate)`.
pub(crate) type Kernel<'a> =
    &'a dyn Fn(&[f32], &[f32], usize, usize, usize, &mut [f32], usize, bool);

/// c = x·B with x and B rounded to bf16 first and products summed in f64.
fn reference(x: &[f32], b: &[f32], rows: usize, k: usize, n: usize) -> Vec<f32> {
    let r = |v: f32| from_bf16(to_bf16(v)) as f64;
    let mut c = vec![0f32; rows * n];
    for i in 0..rows {
        for j in 0..n {
            c[i * n + j] = (0..k)
                .map(|p| r(x[i * k + p]) * r(b[p * n + j]))
                .sum::<f64>() as f32;
        }
    }
    c
}

/// Runs `kernel` at each `(rows, k, n)`; each value must lie within
/// `tol · √k · (1 + |value|)` of the reference (the f32 sums' rounding).
pub(crate) fn check(kernel: Kernel, sizes: &[(usize, usize, usize)], tol: f32) {
    for &(rows, k, n) in sizes {
        let x: Vec<f32> = (0..rows * k).map(|i| (i as f32 * 0.37).sin()).collect();
        let b: Vec<f32> = (0..k * n).map(|i| (i as f32 * 0.11).cos()).collect();
        let want = reference(&x, &b, rows, k, n);
        let ldc = n + 3;
        let mut c = vec![7f32; rows * ldc];
        kernel(&x, &b, rows, k, n, &mut c, ldc, false);
        let bound = |w: f32| tol * (k as f32).sqrt() * (1.0 + w.abs());
        for i in 0..rows {
            for j in 0..ldc {
                let g = c[i * ldc + j];
                if j < n {
                    let w = want[i * n + j];
                    assert!(
                        (g - w).abs() < bound(w),
                        "{rows}×{k}×{n} ({i}, {j}): {g} vs {w}"
                    );
                } else {
                    assert_eq!(g, 7.0, "gap at ({i}, {j}) written");
                }
            }
        }
        kernel(&x, &b, rows, k, n, &mut c, ldc, true);
        for i in 0..rows {
            for j in 0..n {
                let (g, w) = (c[i * ldc + j], 2.0 * want[i * n + j]);
                assert!(
                    (g - w).abs() < 2.0 * bound(w),
                    "accumulate ({i}, {j}): {g} vs {w}"
                );
            }
        }
    }
}
