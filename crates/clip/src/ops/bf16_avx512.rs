//! bf16 matrix products on AVX512-BF16 (`vdpbf16ps`), for CPUs that have it without AMX (AMD
//! Zen 4 and later, Intel Cooper Lake) or where AMX's tiles are not granted: f32 operands
//! rounded to bf16 (nearest, ties to even), pairs of products summed in f32 — the arithmetic
//! of [`super::amx`] and of PyTorch's bf16 autocast there.
//!
//! A weight B `[k, n]` is packed once per op call ([`PackedPairs`]) in panels of [`NR`]
//! columns: for each pair of k, the panel's columns' (k, k+1) values side by side (256
//! bytes, four registers). Each call rounds its rows of x to bf16 pairs in a thread-local
//! buffer and, panel by panel (the panel stays in cache while every row passes it), runs
//! [`MR`] rows × [`NR`] columns a register block: each pair of x broadcast to the four
//! registers of B. `CLIPFORGE_NO_AVX512BF16=1` turns the path off.
#![allow(unsafe_code)]

use std::cell::RefCell;
use std::sync::OnceLock;

use rayon::prelude::*;

use super::amx::to_bf16;

/// Columns per panel of B: four registers of 16 f32 sums.
const NR: usize = 64;
/// Rows of x per register block (4 × MR accumulators, 4 of B, 1 broadcast: 29 of 32
/// registers).
const MR: usize = 6;

/// Whether this CPU has AVX512-BF16 (and the AVX-512 it builds on) and
/// `CLIPFORGE_NO_AVX512BF16` is unset: asked once per process.
pub(crate) fn available() -> bool {
    static OK: OnceLock<bool> = OnceLock::new();
    *OK.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            std::env::var_os("CLIPFORGE_NO_AVX512BF16").is_none()
                && std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("avx512bf16")
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    })
}

/// B `[k, n]` rounded to bf16 in panels of [`NR`] columns: panel `q`, pair `p` (k = 2p, 2p+1)
/// holds `[B[2p, c], B[2p+1, c]]` for its 64 columns c at `data[(q·kp/2 + p)·2·NR ..]`.
/// Columns past n and the odd k past the end are zeros.
pub(crate) struct PackedPairs {
    pub k: usize,
    pub n: usize,
    /// k rounded up to even.
    kp: usize,
    data: Vec<u16>,
}

impl PackedPairs {
    /// B with element (i, j) at `b[i·rs + j·cs]`; packed in parallel over panels.
    pub fn of(b: &[f32], k: usize, n: usize, rs: usize, cs: usize) -> Self {
        let kp = k.next_multiple_of(2);
        let panel = kp * NR; // u16 per panel
        let mut data = vec![0u16; n.div_ceil(NR) * panel];
        data.par_chunks_mut(panel).enumerate().for_each(|(q, out)| {
            for col in 0..NR.min(n - q * NR) {
                let j = q * NR + col;
                for i in 0..k {
                    out[(i / 2) * 2 * NR + col * 2 + i % 2] = to_bf16(b[i * rs + j * cs]);
                }
            }
        });
        Self { k, n, kp, data }
    }

    fn panel(&self, q: usize) -> &[u16] {
        &self.data[q * self.kp * NR..][..self.kp * NR]
    }
}

thread_local! {
    /// A calling thread's rows of x as bf16 pairs (one u32 each), reused across products.
    static XB: RefCell<Vec<u32>> = const { RefCell::new(Vec::new()) };
}

/// `c = x·B` (or `c += x·B` with `accumulate`) on the calling thread: x row-major `[rows, k]`,
/// c rows `ldc` apart. Only when [`available`].
pub(crate) fn matmul(x: &[f32], b: &PackedPairs, c: &mut [f32], ldc: usize, accumulate: bool) {
    let (k, n, kp) = (b.k, b.n, b.kp);
    assert!(available(), "bf16_avx512::matmul without AVX512-BF16");
    assert!(
        k > 0 && x.len().is_multiple_of(k),
        "bf16_avx512::matmul: {} values of x are not rows of {k}",
        x.len()
    );
    let rows = x.len() / k;
    assert!(
        ldc >= n && (rows == 0 || c.len() >= (rows - 1) * ldc + n),
        "bf16_avx512::matmul: output of {} values, rows {ldc} apart, cannot hold {rows}×{n}",
        c.len()
    );
    if rows == 0 || n == 0 {
        return;
    }
    let pairs = kp / 2;
    XB.with(|cell| {
        let mut xb = cell.borrow_mut();
        xb.clear();
        xb.resize(rows.next_multiple_of(MR) * pairs, 0); // rows past the end: zeros
        for (row, dst) in x.chunks(k).zip(xb.chunks_mut(pairs)) {
            for (d, two) in dst.iter_mut().zip(row.chunks(2)) {
                let hi = two.get(1).map_or(0, |&v| to_bf16(v)) as u32;
                *d = to_bf16(two[0]) as u32 | hi << 16;
            }
        }
        for q in 0..n.div_ceil(NR) {
            let panel = b.panel(q);
            let cols = NR.min(n - q * NR);
            for r0 in (0..rows).step_by(MR) {
                let xs = &xb[r0 * pairs..(r0 + MR) * pairs];
                let out = &mut c[r0 * ldc + q * NR..];
                let live = MR.min(rows - r0);
                // SAFETY: AVX512-BF16 is present (asserted above); the kernel's loads stay
                // inside `xs` and `panel` and its stores inside the first `live` rows of
                // `out`, `cols` columns each (asserted in it).
                unsafe { kernel(xs, pairs, panel, out, ldc, live, cols, accumulate) };
            }
        }
    });
}

/// The [`MR`] × [`NR`] block of c at `out` (rows `ldc` apart; the first `live` rows and
/// `cols` columns written): `Σ_p x[r, pair p] · panel[pair p]`, added to c with `accumulate`.
///
/// # Safety
/// AVX512-BF16 must be present.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16")]
#[allow(clippy::too_many_arguments)]
unsafe fn kernel(
    xs: &[u32],
    pairs: usize,
    panel: &[u16],
    out: &mut [f32],
    ldc: usize,
    live: usize,
    cols: usize,
    accumulate: bool,
) {
    use std::arch::x86_64::*;
    assert!(xs.len() >= MR * pairs && panel.len() >= pairs * 2 * NR);
    assert!((1..=MR).contains(&live) && (1..=NR).contains(&cols));
    assert!(out.len() >= (live - 1) * ldc + cols);
    let mut acc = [[_mm512_setzero_ps(); 4]; MR];
    let (x, w) = (xs.as_ptr(), panel.as_ptr());
    for p in 0..pairs {
        let bp = w.add(p * 2 * NR);
        let b: [__m512bh; 4] =
            std::array::from_fn(|v| std::mem::transmute(_mm512_loadu_si512(bp.add(v * 32) as _)));
        for (r, acc_r) in acc.iter_mut().enumerate() {
            let a: __m512bh = std::mem::transmute(_mm512_set1_epi32(*x.add(r * pairs + p) as i32));
            for v in 0..4 {
                acc_r[v] = _mm512_dpbf16_ps(acc_r[v], a, b[v]);
            }
        }
    }
    for (r, acc_r) in acc.iter().enumerate().take(live) {
        let row = out.as_mut_ptr().add(r * ldc);
        for (v, &sums) in acc_r.iter().enumerate() {
            let width = cols.saturating_sub(v * 16).min(16);
            if width == 0 {
                break;
            }
            let mask: __mmask16 = if width == 16 { !0 } else { (1 << width) - 1 };
            let dst = row.add(v * 16);
            let sums = if accumulate {
                _mm512_add_ps(sums, _mm512_maskz_loadu_ps(mask, dst))
            } else {
                sums
            };
            _mm512_mask_storeu_ps(dst, mask, sums);
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
#[allow(clippy::too_many_arguments)]
unsafe fn kernel(
    _: &[u32],
    _: usize,
    _: &[u16],
    _: &mut [f32],
    _: usize,
    _: usize,
    _: usize,
    _: bool,
) {
    unreachable!("AVX512-BF16 is x86-64 only")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn products_match_bf16_arithmetic_at_every_edge() {
        if !available() {
            eprintln!("no AVX512-BF16 on this machine: its bf16 path is not exercised");
            return;
        }
        // Rows on and off MR, k odd and even, n on and off 16 and 64.
        let sizes = [
            (1, 1, 1),
            (6, 2, 64),
            (7, 3, 17),
            (50, 70, 40),
            (100, 768, 130),
            (13, 64, 200),
        ];
        super::super::bf16_check::check(
            &|x, b, _rows, k, n, c, ldc, acc| {
                matmul(x, &PackedPairs::of(b, k, n, n, 1), c, ldc, acc)
            },
            &sizes,
            1e-5,
        );
    }

    #[test]
    fn a_transposed_weight_packs_as_its_copy() {
        // W [n, k] read as Wᵀ (rs = 1, cs = k) packs as Wᵀ written out row-major.
        let (k, n) = (5, 70);
        let w: Vec<f32> = (0..n * k).map(|i| (i as f32 * 0.3).sin()).collect();
        let wt: Vec<f32> = (0..k * n).map(|idx| w[(idx % n) * k + idx / n]).collect();
        assert_eq!(
            PackedPairs::of(&w, k, n, 1, k).data,
            PackedPairs::of(&wt, k, n, n, 1).data
        );
    }
}
