//! bf16 matrix products on Intel AMX (tile registers and `tdpbf16ps`): f32 operands rounded to
//! bf16, products summed in f32 — the arithmetic of PyTorch's bf16 autocast on the same CPUs.
//!
//! A product `c (+)= x·B` keeps B (a weight) packed once per op call ([`PackedB`]); each call
//! rounds its rows of x into a thread-local bf16 buffer and runs 32×32 blocks of c: four
//! 16×16 f32 accumulator tiles fed by two 16×32 tiles of x and two 32×16 tiles of B per step of
//! 32 along k. Rows and columns past the edges are zero padding, written nowhere.
//!
//! Tile registers are Linux's to grant: [`available`] asks for them once per process
//! (`arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)`) and each call configures and
//! releases the tiles on its own thread. `CLIPFORGE_NO_AMX=1` turns the path off.
#![allow(unsafe_code)]

use std::cell::RefCell;
use std::sync::OnceLock;

use rayon::prelude::*;

/// k per tile step: 32 bf16 values, one 64-byte tile row.
const KB: usize = 32;
/// Rows (of x and c) and columns (of B and c) per tile.
const TILE: usize = 16;

/// Whether this CPU has AMX-BF16, the OS granted its tile state, and `CLIPFORGE_NO_AMX` is
/// unset: asked once per process.
pub(crate) fn available() -> bool {
    static OK: OnceLock<bool> = OnceLock::new();
    *OK.get_or_init(|| std::env::var_os("CLIPFORGE_NO_AMX").is_none() && detect())
}

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
fn detect() -> bool {
    // CPUID leaf 7, sub-leaf 0, EDX: bit 22 AMX-BF16, bit 24 AMX-TILE.
    #[allow(unused_unsafe)]
    // SAFETY: CPUID leaf 7 exists on every x86-64 CPU that can run this binary.
    let edx = unsafe { std::arch::x86_64::__cpuid_count(7, 0) }.edx;
    if edx & (1 << 22) == 0 || edx & (1 << 24) == 0 {
        return false;
    }
    const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
    const XFEATURE_XTILEDATA: libc::c_long = 18;
    // SAFETY: a plain system call with integer arguments; it fails (non-zero) where the kernel
    // does not support AMX, and then we never execute a tile instruction.
    unsafe {
        libc::syscall(
            libc::SYS_arch_prctl,
            ARCH_REQ_XCOMP_PERM,
            XFEATURE_XTILEDATA,
        ) == 0
    }
}

#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
fn detect() -> bool {
    false
}

/// f32 → bf16, rounding to nearest, ties to even (as PyTorch's conversion); NaN stays NaN.
#[inline]
pub(crate) fn to_bf16(v: f32) -> u16 {
    let b = v.to_bits();
    if v.is_nan() {
        return ((b >> 16) | 0x40) as u16;
    }
    ((b + 0x7fff + ((b >> 16) & 1)) >> 16) as u16
}

/// bf16 → f32 (exact).
#[cfg(test)]
pub(crate) fn from_bf16(v: u16) -> f32 {
    f32::from_bits((v as u32) << 16)
}

/// A right operand B `[k, n]` rounded to bf16 in AMX's layout: for each pair of 16-column
/// blocks and each 32-row step of k, a 32×16 tile stored as 16 rows of 16 (k, k+1) pairs
/// (64 bytes a row). k and n are padded with zeros to 32 and to an even count of 16-column
/// blocks.
pub(crate) struct PackedB {
    buf: Vec<u16>,
    start: usize,
    k: usize,
    n: usize,
    ksteps: usize,
    nblocks: usize,
}

impl PackedB {
    /// B `[k, n]` given as element (i, j) = `data[i·rs + j·cs]` (a weight W `[n, k]`, read
    /// as Wᵀ, has rs = 1: each tile then reads 16 runs of 32 contiguous values). Packed in
    /// parallel over pairs of column blocks.
    pub fn of(data: &[f32], k: usize, n: usize, rs: usize, cs: usize) -> Self {
        let ksteps = k.div_ceil(KB);
        let nblocks = n.div_ceil(TILE).next_multiple_of(2);
        let len = nblocks * ksteps * TILE * KB;
        let mut buf = vec![0u16; len + 32];
        let start = buf.as_ptr().align_offset(64).min(32);
        buf[start..start + len]
            .par_chunks_mut(2 * ksteps * TILE * KB)
            .enumerate()
            .for_each(|(pair, tiles)| {
                for (t, tile) in tiles.chunks_mut(TILE * KB).enumerate() {
                    let (j, p) = (2 * pair + t / ksteps, t % ksteps); // column block, k step
                    let (cols, ks) = (TILE.min(n.saturating_sub(j * TILE)), KB.min(k - p * KB));
                    for col in 0..cols {
                        let base = p * KB * rs + (j * TILE + col) * cs; // B[p·32][j·16 + col]
                        for q in 0..ks {
                            // Row q/2 of the tile holds (k, k+1) pairs, column by column.
                            tile[(q / 2) * KB + col * 2 + (q & 1)] = to_bf16(data[base + q * rs]);
                        }
                    }
                }
            });
        Self {
            buf,
            start,
            k,
            n,
            ksteps,
            nblocks,
        }
    }

    fn tile(&self, j: usize, p: usize) -> *const u16 {
        self.buf[self.start + (j * self.ksteps + p) * TILE * KB..].as_ptr()
    }
}

/// The tile configuration: palette 1, eight tiles of 16 rows × 64 bytes (tmm0–3 the f32
/// accumulators, tmm4–5 rows of x, tmm6–7 columns of B).
#[repr(C, align(64))]
struct TileConfig([u8; 64]);

impl TileConfig {
    fn new() -> Self {
        let mut c = [0u8; 64];
        c[0] = 1;
        for t in 0..8 {
            c[16 + 2 * t] = 64; // bytes per row (u16, little-endian)
            c[48 + t] = TILE as u8; // rows
        }
        Self(c)
    }
}

thread_local! {
    /// This thread's rows of x rounded to bf16, `[rows padded to 32, k padded to 32]` in tiles:
    /// 16 rows × 32 of k each.
    static XBUF: RefCell<Vec<u16>> = const { RefCell::new(Vec::new()) };
}

/// One 16×16 f32 tile's worth of c, for the tiles that overhang c's edges.
#[repr(C, align(64))]
struct Edge([f32; TILE * TILE]);

/// `c = x·B` (or `c += x·B` with `accumulate`) on the calling thread: x row-major
/// `[rows, k]`, c rows `ldc` apart. Only when [`available`].
pub(crate) fn matmul(x: &[f32], b: &PackedB, c: &mut [f32], ldc: usize, accumulate: bool) {
    let (k, n) = (b.k, b.n);
    assert!(available(), "amx::matmul without AMX");
    assert!(
        k > 0 && x.len().is_multiple_of(k),
        "amx::matmul: {} values of x are not rows of {k}",
        x.len()
    );
    let rows = x.len() / k;
    assert!(
        ldc >= n && (rows == 0 || c.len() >= (rows - 1) * ldc + n),
        "amx::matmul: output of {} values, rows {ldc} apart, cannot hold {rows}×{n}",
        c.len()
    );
    if rows == 0 || n == 0 {
        return;
    }
    let kp = b.ksteps * KB;
    let rp = rows.next_multiple_of(2 * TILE);
    XBUF.with(|cell| {
        let mut xb = cell.borrow_mut();
        xb.resize(rp * kp + 32, 0); // every value below is written, padding with zeros
        let off = xb.as_ptr().align_offset(64).min(32);
        let xs = &mut xb[off..off + rp * kp];
        // Tile by tile: each 16 rows × 32 of k contiguous (1 KB), the tiles of a row block
        // in order of k.
        for (rb, blk) in xs.chunks_mut(TILE * kp).enumerate() {
            for (p, tile) in blk.chunks_mut(TILE * KB).enumerate() {
                for (r, dst) in tile.chunks_mut(KB).enumerate() {
                    let (row, k0) = (rb * TILE + r, p * KB);
                    let part = if row < rows {
                        &x[row * k + k0..row * k + k.min(k0 + KB)]
                    } else {
                        &[]
                    };
                    dst.iter_mut().zip(part).for_each(|(d, &s)| *d = to_bf16(s));
                    dst[part.len()..].fill(0);
                }
            }
        }
        // SAFETY: AMX is available and this thread's tiles are configured inside; every tile
        // load and store below stays inside `xs`, `b`'s buffer or `c` (see `block`).
        unsafe { run(xs, kp, rows, b, c, ldc, accumulate) }
    });
}

/// Steps of k (32 each) per pass over the rows: the two column blocks' tiles for one pass
/// (2·24 KB) stay in L1/L2 while every 32 rows of x stream past them; each pass past the first
/// reloads and stores c's tiles, which costs more than L2 reads of B (measured on a Xeon with
/// AMX: 8 steps 1.2–2× slower than 24 on ViT-B products), so k = 768 runs in one pass.
const KSTEPS_PER_PASS: usize = 24;

/// All 32×32 blocks of c, with this thread's tiles configured for the call: per pair of
/// column blocks, k in passes of [`KSTEPS_PER_PASS`], each pass adding onto c.
///
/// # Safety
/// AMX must be [`available`]; `xs` holds `rows` rounded up to 32 rows of `kp` values.
unsafe fn run(
    xs: &[u16],
    kp: usize,
    rows: usize,
    b: &PackedB,
    c: &mut [f32],
    ldc: usize,
    accumulate: bool,
) {
    let cfg = TileConfig::new();
    std::arch::asm!("ldtilecfg [{}]", in(reg) cfg.0.as_ptr(), options(nostack, readonly));
    for j in (0..b.nblocks).step_by(2) {
        for p0 in (0..b.ksteps).step_by(KSTEPS_PER_PASS) {
            let steps = p0..(p0 + KSTEPS_PER_PASS).min(b.ksteps);
            for i in (0..rows).step_by(2 * TILE) {
                let onto = accumulate || p0 > 0;
                block(xs, kp, rows, b, c, ldc, onto, i, j, steps.clone());
            }
        }
    }
    std::arch::asm!("tilerelease", options(nostack, nomem));
}

/// Moves one accumulator tile (tmm0–3) between memory and its register.
macro_rules! tile_io {
    (load $t:literal, $p:expr, $s:expr) => {
        std::arch::asm!(concat!("tileloadd tmm", $t, ", [{p} + {s}*1]"),
            p = in(reg) $p, s = in(reg) $s, options(nostack, readonly))
    };
    (store $t:literal, $p:expr, $s:expr) => {
        std::arch::asm!(concat!("tilestored [{p} + {s}*1], tmm", $t),
            p = in(reg) $p, s = in(reg) $s, options(nostack))
    };
}

/// The 32×32 block of c at rows i.., column blocks j and j+1: zeroed or loaded (`accumulate`),
/// 4 tile products per step of k in `steps`, stored — through an [`Edge`] where a tile
/// overhangs c.
///
/// # Safety
/// As [`run`], with the tiles configured.
#[allow(clippy::too_many_arguments)]
unsafe fn block(
    xs: &[u16],
    kp: usize,
    rows: usize,
    b: &PackedB,
    c: &mut [f32],
    ldc: usize,
    accumulate: bool,
    i: usize,
    j: usize,
    steps: std::ops::Range<usize>,
) {
    let n = b.n;
    // Accumulators: tmm0 (i, j), tmm1 (i, j+1), tmm2 (i+16, j), tmm3 (i+16, j+1).
    let spots = [(i, j), (i, j + 1), (i + TILE, j), (i + TILE, j + 1)];
    // The part of each tile that lies in c: its rows and columns (0 when wholly outside).
    let extent = |(r, jj): (usize, usize)| {
        (
            TILE.min(rows.saturating_sub(r)),
            TILE.min(n.saturating_sub(jj * TILE)),
        )
    };
    let cbase = c.as_mut_ptr();
    let inside = i + 2 * TILE <= rows && (j + 2) * TILE <= n;
    // Edge buffers only for blocks that overhang c (the last rows or columns).
    let mut edges: Vec<Edge> = if inside {
        Vec::new()
    } else {
        (0..4).map(|_| Edge([0.0; TILE * TILE])).collect()
    };
    let mut at = [(cbase, 0usize); 4]; // where each tile is loaded from and stored to
    for t in 0..4 {
        let (r, jj) = spots[t];
        let (h, w) = extent(spots[t]);
        at[t] = if (h, w) == (TILE, TILE) {
            (cbase.add(r * ldc + jj * TILE), ldc * 4)
        } else {
            let e = &mut edges[t];
            if accumulate && w > 0 {
                for rr in 0..h {
                    e.0[rr * TILE..rr * TILE + w]
                        .copy_from_slice(&c[(r + rr) * ldc + jj * TILE..][..w]);
                }
            }
            (e.0.as_mut_ptr(), TILE * 4)
        };
    }
    if accumulate {
        tile_io!(load 0, at[0].0, at[0].1);
        tile_io!(load 1, at[1].0, at[1].1);
        tile_io!(load 2, at[2].0, at[2].1);
        tile_io!(load 3, at[3].0, at[3].1);
    } else {
        std::arch::asm!(
            "tilezero tmm0",
            "tilezero tmm1",
            "tilezero tmm2",
            "tilezero tmm3",
            options(nostack, nomem)
        );
    }
    let xrow = KB * 2; // bytes between rows of a tile of x
    let x0 = xs[i * kp..].as_ptr();
    let x1 = xs[(i + TILE) * kp..].as_ptr();
    for p in steps {
        std::arch::asm!(
            // Each load just before the first product that needs it, so that loads overlap
            // the products before them.
            "tileloadd tmm4, [{a0} + {xs}*1]",
            "tileloadd tmm6, [{b0} + {bs}*1]",
            "tdpbf16ps tmm0, tmm4, tmm6",
            "tileloadd tmm7, [{b1} + {bs}*1]",
            "tdpbf16ps tmm1, tmm4, tmm7",
            "tileloadd tmm5, [{a1} + {xs}*1]",
            "tdpbf16ps tmm2, tmm5, tmm6",
            "tdpbf16ps tmm3, tmm5, tmm7",
            a0 = in(reg) x0.add(p * TILE * KB),
            a1 = in(reg) x1.add(p * TILE * KB),
            xs = in(reg) xrow,
            b0 = in(reg) b.tile(j, p),
            b1 = in(reg) b.tile(j + 1, p),
            bs = in(reg) 64usize,
            options(nostack, readonly),
        );
    }
    tile_io!(store 0, at[0].0, at[0].1);
    tile_io!(store 1, at[1].0, at[1].1);
    tile_io!(store 2, at[2].0, at[2].1);
    tile_io!(store 3, at[3].0, at[3].1);
    for (t, e) in edges.iter().enumerate() {
        let (r, jj) = spots[t];
        let (h, w) = extent(spots[t]);
        if (h, w) != (TILE, TILE) && w > 0 {
            for rr in 0..h {
                c[(r + rr) * ldc + jj * TILE..][..w]
                    .copy_from_slice(&e.0[rr * TILE..rr * TILE + w]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounding_is_to_nearest_even() {
        assert_eq!(to_bf16(1.0), 0x3f80);
        // 1 + 2⁻⁸ lies halfway between 1 and 1 + 2⁻⁷: to the even one, 1.
        assert_eq!(to_bf16(1.0 + 1.0 / 256.0), 0x3f80);
        // 1 + 3·2⁻⁸ lies halfway between 1 + 2⁻⁷ and 1 + 2⁻⁶: to the even one, up.
        assert_eq!(to_bf16(1.0 + 3.0 / 256.0), 0x3f82);
        assert_eq!(from_bf16(to_bf16(-2.5)), -2.5);
        assert!(from_bf16(to_bf16(f32::NAN)).is_nan());
        assert_eq!(from_bf16(to_bf16(f32::INFINITY)), f32::INFINITY);
    }

    #[test]
    fn products_match_bf16_arithmetic_at_every_edge() {
        if !available() {
            eprintln!("no AMX on this machine: the bf16 tile path is not exercised");
            return;
        }
        // Rows, k and n on and off the 16/32 multiples.
        let sizes = [
            (1, 1, 1),
            (16, 32, 16),
            (50, 70, 40),
            (100, 768, 96),
            (33, 64, 17),
        ];
        super::super::bf16_check::check(
            &|x, b, _rows, k, n, c, ldc, acc| matmul(x, &PackedB::of(b, k, n, n, 1), c, ldc, acc),
            &sizes,
            1e-4,
        );
    }
}
