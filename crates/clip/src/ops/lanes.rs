//! Reductions over f32 slices (sum, max, dot, squared deviations) in independent lanes, so they
//! vectorise: Rust keeps a plain `iter().sum()` in order, one scalar add after another (a
//! chain of dependent adds), a latency-bound scalar loop per row for LayerNorm's statistics
//! and softmax's max and sum.

/// Independent accumulators: two AVX2 registers' worth, enough to hide an add's latency.
const LANES: usize = 16;

/// `Σ f(a[i], b[i])` over two equal-length slices, accumulated in [`LANES`] lanes.
#[inline(always)]
pub(crate) fn fold2(a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f32) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0f32; LANES];
    let (ac, bc) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let (ar, br) = (ac.remainder(), bc.remainder());
    for (x, y) in ac.zip(bc) {
        for l in 0..LANES {
            acc[l] += f(x[l], y[l]);
        }
    }
    let tail: f32 = ar.iter().zip(br).map(|(&x, &y)| f(x, y)).sum();
    acc.iter().sum::<f32>() + tail
}

/// `Σ x[i]`.
#[inline]
pub(crate) fn sum(x: &[f32]) -> f32 {
    fold2(x, x, |v, _| v)
}

/// `Σ a[i]·b[i]`.
#[inline]
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    fold2(a, b, |x, y| x * y)
}

/// `Σ (x[i] − mean)²`.
#[inline]
pub(crate) fn sum_sq_dev(x: &[f32], mean: f32) -> f32 {
    fold2(x, x, |v, _| (v - mean) * (v - mean))
}

/// `max x[i]` (−∞ for an empty slice).
#[inline]
pub(crate) fn max(x: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; LANES];
    let chunks = x.chunks_exact(LANES);
    let rest = chunks.remainder();
    for c in chunks {
        for l in 0..LANES {
            acc[l] = acc[l].max(c[l]);
        }
    }
    acc.iter()
        .chain(rest)
        .fold(f32::NEG_INFINITY, |m, &v| m.max(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reductions_match_the_sequential_ones_at_every_length() {
        for n in 0..70 {
            let a: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin() * 3.0).collect();
            let b: Vec<f32> = (0..n).map(|i| (i as f32 * 0.91).cos()).collect();
            let close = |g: f32, w: f32| (g - w).abs() <= 1e-5 * (1.0 + w.abs());
            let s: f32 = a.iter().sum();
            assert!(close(sum(&a), s), "sum, n = {n}");
            let d: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
            assert!(close(dot(&a, &b), d), "dot, n = {n}");
            let m = 0.25;
            let v: f32 = a.iter().map(|x| (x - m) * (x - m)).sum();
            assert!(close(sum_sq_dev(&a, m), v), "squared deviations, n = {n}");
            let mx = a.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
            assert_eq!(max(&a), mx, "max, n = {n}");
        }
    }
}
