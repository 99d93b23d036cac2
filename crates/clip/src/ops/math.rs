//! Scalar f32 math the kernels inline: a branch-free `exp` and a fused multiply-add.

/// eˣ for f32 without a libm call (Cephes `expf`: x = k·ln 2 + r, |r| ≤ ln 2 / 2, degree-6
/// polynomial for eʳ, 2ᵏ built in the exponent bits). Relative error about 1e-7; 0 below
/// −87.3, so −∞ (a masked score) gives 0. Branch-free, so loops over slices vectorise, which
/// libm's `expf` does not (docs/benchmarks.md).
#[inline(always)]
pub(crate) fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const C1: f32 = 0.693_359_4;
    const C2: f32 = -2.121_944_4e-4;
    let xc = x.clamp(-87.3, 88.7);
    // Round to nearest by the 1.5·2²³ trick: no `floor`, which is a libm call on baseline x86-64.
    // The sum's low mantissa bits then hold k as an integer, read by a bit cast: an `as i32`
    // cast saturates, which LLVM does one lane at a time and which kept every caller scalar.
    const MAGIC: f32 = 12_582_912.0;
    let shifted = xc * LOG2E + MAGIC;
    let k = shifted - MAGIC;
    let ki = (shifted.to_bits() as i32).wrapping_sub(MAGIC.to_bits() as i32); // k, −126 … 128
    let r = fma(-k, C2, fma(-k, C1, xc));
    let p = fma(
        fma(
            fma(
                fma(fma(1.987_569_1e-4, r, 1.398_2e-3), r, 8.333_452e-3),
                r,
                4.166_579_6e-2,
            ),
            r,
            1.666_666_5e-1,
        ),
        r,
        0.5,
    );
    let e = fma(p, r * r, r) + 1.0;
    let scale = f32::from_bits(((ki + 127) as u32) << 23);
    if x < -87.3 {
        0.0
    } else {
        e * scale
    }
}

/// `a·b + c`, one rounding where the CPU has FMA (the build targets the native CPU), else two;
/// `f32::mul_add` without the instruction would be a libm call.
#[inline(always)]
pub(crate) fn fma(a: f32, b: f32, c: f32) -> f32 {
    #[cfg(target_feature = "fma")]
    {
        a.mul_add(b, c)
    }
    #[cfg(not(target_feature = "fma"))]
    {
        a * b + c
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn exp_matches_libm() {
        let mut worst = 0f32;
        for i in -2_000_000..=2_000_000 {
            let x = i as f32 * 4.4e-5; // −88 … 88
            let (got, want) = (super::exp(x), x.exp());
            if want > 1e-37 {
                worst = worst.max(((got - want) / want).abs());
            }
        }
        assert!(worst < 3e-7, "worst relative error {worst}");
        assert_eq!(super::exp(f32::NEG_INFINITY), 0.0);
        assert_eq!(super::exp(-100.0), 0.0);
    }
}
