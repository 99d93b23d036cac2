//! int8 products on AVX512-VNNI (`vpdpbusd`: 64 u8·i8 products summed in fours into 16 i32),
//! for [`super::int8`]'s quantised operands on CPUs that have it (Intel since Cascade Lake,
//! AMD since Zen 4).
//!
//! `vpdpbusd` multiplies unsigned bytes by signed ones, so x's values q ∈ −127…127 enter as
//! q + 128 ∈ 1…255, and each column's `128 · Σ_k B[k, j]` is taken off its sums afterwards:
//! the i32 sums are exactly those of the signed product. B is kept in panels of [`NR`]
//! columns, each step of 4 along k one 256-byte row (four registers: 16 columns × 4 k each);
//! each call walks the panels, the panel staying in cache while every row passes it, in
//! register blocks of [`MR`] rows × [`NR`] columns.
#![allow(unsafe_code)]

use std::sync::OnceLock;

/// Columns per panel: four registers of 16 i32 sums.
const NR: usize = 64;
/// Rows of x per register block (24 accumulators, 4 of B, 1 broadcast).
pub(crate) const MR: usize = 6;

/// Whether this CPU has AVX512-VNNI (with AVX512-BW) and `CLIPFORGE_NO_VNNI` is unset.
pub(crate) fn available() -> bool {
    static OK: OnceLock<bool> = OnceLock::new();
    *OK.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            std::env::var_os("CLIPFORGE_NO_VNNI").is_none()
                && std::arch::is_x86_feature_detected!("avx512bw")
                && std::arch::is_x86_feature_detected!("avx512vnni")
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    })
}

/// Quantised B `[k, n]` in panels: panel `q`, step `p` (k = 4p … 4p+3) holds, for each of its
/// 64 columns, the four values of those k at `data[(q·kq/4 + p)·4·NR + col·4 ..][..4]`; k past
/// the end and columns past n are zeros.
pub(crate) struct PackedQuads {
    /// k rounded up to a multiple of 4.
    kq: usize,
    data: Vec<i8>,
    /// `[n rounded up to NR]`: `128 · Σ_k B[k, j]`, what the unsigned x adds to column j.
    offset: Vec<i32>,
}

impl PackedQuads {
    /// From the quantised values `q(i, j)` of B, i < k, j < n.
    pub fn of(k: usize, n: usize, q: impl Fn(usize, usize) -> i8) -> Self {
        let kq = k.next_multiple_of(4);
        let cols = n.next_multiple_of(NR);
        let mut data = vec![0i8; cols * kq];
        let mut offset = vec![0i32; cols];
        for (j, off) in offset.iter_mut().enumerate().take(n) {
            let (panel, col) = (j / NR, j % NR);
            for i in 0..k {
                let v = q(i, j);
                data[(panel * kq / 4 + i / 4) * 4 * NR + col * 4 + i % 4] = v;
                *off += 128 * v as i32;
            }
        }
        Self { kq, data, offset }
    }

    /// Values per row of x in this layout: k rounded up to 4.
    pub fn row_len(&self) -> usize {
        self.kq
    }
}

/// `c = xq·B` scaled (or `c +=` with `accumulate`): `xq` the rows of x already quantised
/// and offset to u8 (`rows` rounded up to [`MR`], each [`PackedQuads::row_len`] long, padded
/// with anything), `sx` their scales, `scale` B's column scales; c rows `ldc` apart, n
/// columns written. Each value is `(sum as f32 · sx[r]) · scale[j]`, as the portable kernel's.
/// Only when [`available`].
#[allow(clippy::too_many_arguments)]
pub(crate) fn matmul(
    xq: &[u8],
    sx: &[f32],
    rows: usize,
    b: &PackedQuads,
    scale: &[f32],
    n: usize,
    c: &mut [f32],
    ldc: usize,
    accumulate: bool,
) {
    assert!(available(), "int8_vnni::matmul without AVX512-VNNI");
    let kq = b.kq;
    assert!(xq.len() >= rows.next_multiple_of(MR) * kq && sx.len() >= rows);
    assert!(scale.len() >= n && b.offset.len() >= n.next_multiple_of(NR));
    assert!(ldc >= n && (rows == 0 || c.len() >= (rows - 1) * ldc + n));
    let mut sb = vec![0f32; n.next_multiple_of(NR)];
    sb[..n].copy_from_slice(&scale[..n]);
    for q in 0..n.div_ceil(NR) {
        let panel = &b.data[q * kq * NR..][..kq * NR];
        let cols = NR.min(n - q * NR);
        let (off, s) = (&b.offset[q * NR..][..NR], &sb[q * NR..][..NR]);
        for r0 in (0..rows).step_by(MR) {
            let live = MR.min(rows - r0);
            let out = &mut c[r0 * ldc + q * NR..];
            // SAFETY: AVX512-VNNI is present (asserted above); the kernel's loads stay inside
            // its slices and its stores inside `live` rows of `cols` columns of `out`
            // (asserted in it).
            unsafe {
                kernel(
                    &xq[r0 * kq..(r0 + MR) * kq],
                    kq / 4,
                    panel,
                    Epilogue {
                        offset: off,
                        sx: &sx[r0..r0 + live],
                        scale: s,
                        cols,
                        accumulate,
                    },
                    out,
                    ldc,
                )
            };
        }
    }
}

/// What turns a block's i32 sums into c's values: `((sum − offset[j]) as f32 · sx[r]) ·
/// scale[j]` for the block's `sx.len()` rows and `cols` columns.
struct Epilogue<'a> {
    offset: &'a [i32],
    sx: &'a [f32],
    scale: &'a [f32],
    cols: usize,
    accumulate: bool,
}

/// One [`MR`] × [`NR`] block: `steps` steps of 4 along k.
///
/// # Safety
/// AVX512-VNNI and AVX512-BW must be present.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn kernel(xs: &[u8], steps: usize, panel: &[i8], e: Epilogue, out: &mut [f32], ldc: usize) {
    use std::arch::x86_64::*;
    let live = e.sx.len();
    assert!(xs.len() >= MR * steps * 4 && panel.len() >= steps * 4 * NR);
    assert!(e.offset.len() >= NR && e.scale.len() >= NR);
    assert!((1..=MR).contains(&live) && (1..=NR).contains(&e.cols));
    assert!(out.len() >= (live - 1) * ldc + e.cols);
    let mut acc = [[_mm512_setzero_si512(); 4]; MR];
    let (x, w) = (xs.as_ptr() as *const i32, panel.as_ptr());
    for p in 0..steps {
        let bp = w.add(p * 4 * NR);
        let b: [__m512i; 4] = std::array::from_fn(|v| _mm512_loadu_si512(bp.add(v * 64) as _));
        for (r, acc_r) in acc.iter_mut().enumerate() {
            let a = _mm512_set1_epi32(x.add(r * steps + p).read_unaligned());
            for v in 0..4 {
                acc_r[v] = _mm512_dpbusd_epi32(acc_r[v], a, b[v]);
            }
        }
    }
    for (r, acc_r) in acc.iter().enumerate().take(live) {
        let row = out.as_mut_ptr().add(r * ldc);
        let sx = _mm512_set1_ps(e.sx[r]);
        for (v, &sums) in acc_r.iter().enumerate() {
            let width = e.cols.saturating_sub(v * 16).min(16);
            if width == 0 {
                break;
            }
            let mask: __mmask16 = if width == 16 { !0 } else { (1 << width) - 1 };
            let off = _mm512_loadu_si512(e.offset.as_ptr().add(v * 16) as _);
            let sb = _mm512_loadu_ps(e.scale.as_ptr().add(v * 16));
            let f = _mm512_cvtepi32_ps(_mm512_sub_epi32(sums, off));
            let y = _mm512_mul_ps(_mm512_mul_ps(f, sx), sb);
            let dst = row.add(v * 16);
            let y = if e.accumulate {
                _mm512_add_ps(_mm512_maskz_loadu_ps(mask, dst), y)
            } else {
                y
            };
            _mm512_mask_storeu_ps(dst, mask, y);
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn kernel(_: &[u8], _: usize, _: &[i8], _: Epilogue, _: &mut [f32], _: usize) {
    unreachable!("AVX512-VNNI is x86-64 only")
}
