//! The learning-rate schedule as a pure function of the step: linear warm-up, then cosine decay
//! to zero (open_clip `scheduler.py` `cosine_lr`).

/// lr at `step` (0-based) of `total` steps with `warmup` warm-up steps.
pub fn cosine_lr(base_lr: f64, step: u64, warmup: u64, total: u64) -> f64 {
    if step < warmup {
        return base_lr * (step + 1) as f64 / warmup as f64;
    }
    let e = (step - warmup) as f64;
    let es = total.saturating_sub(warmup).max(1) as f64;
    0.5 * (1.0 + (std::f64::consts::PI * e / es).cos()) * base_lr
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warms_up_then_decays_to_zero() {
        assert!((cosine_lr(1.0, 0, 10, 100) - 0.1).abs() < 1e-12);
        assert!((cosine_lr(1.0, 9, 10, 100) - 1.0).abs() < 1e-12);
        assert!((cosine_lr(1.0, 10, 10, 100) - 1.0).abs() < 1e-12);
        assert!((cosine_lr(1.0, 55, 10, 100) - 0.5).abs() < 1e-12);
        assert!(cosine_lr(1.0, 99, 10, 100) < 0.001);
        let lrs: Vec<f64> = (10..100).map(|s| cosine_lr(1.0, s, 10, 100)).collect();
        assert!(lrs.windows(2).all(|w| w[1] <= w[0]));
    }
}
