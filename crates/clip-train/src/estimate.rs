//! "How much training would it require?": the model FLOPs of a training run, counted from its
//! config (`clip::flops`), and its time at a rate measured here or given for another device.

use candle_core::Device;
use clip::ClipConfig;
use serde::Serialize;

use crate::error::Result;

/// Seconds in a day, and FLOPs in a petaflop/s-day (the unit of OpenAI's compute plots).
const DAY_S: f64 = 86_400.0;
const PFLOP_S_DAY: f64 = 1e15 * DAY_S;

/// What a training run costs.
#[derive(Debug, Clone, Serialize)]
pub struct Estimate {
    pub model: String,
    pub samples: f64,
    pub batch_size: usize,
    /// Forward FLOPs of one image and one caption.
    pub image_forward_gflops: f64,
    pub text_forward_gflops: f64,
    /// Training FLOPs per pair at this batch size (forward + backward, both towers and logits).
    pub train_gflops_per_pair: f64,
    pub total_flops: f64,
    pub petaflop_s_days: f64,
    /// The rate measured on this machine, if measured.
    pub measured: Option<MeasuredRate>,
    /// Days at the measured rate.
    pub measured_days: Option<f64>,
    /// A device's sustained rate, given (`--device-tflops`), how many such devices share the
    /// work (perfect data parallelism), and the days it takes them.
    pub device_tflops: Option<f64>,
    pub devices: usize,
    pub device_days: Option<f64>,
}

/// A training step timed here.
#[derive(Debug, Clone, Serialize)]
pub struct MeasuredRate {
    pub device: String,
    pub threads: usize,
    pub batch_size: usize,
    pub step_s: f64,
    pub tflops: f64,
}

/// Model FLOPs of training on `samples` pairs in batches of `batch_size`.
pub fn training_flops(cfg: &ClipConfig, samples: f64, batch_size: usize) -> f64 {
    samples / batch_size as f64 * cfg.train_step_flops(batch_size)
}

/// Time training steps of `cfg` at `batch_size` pairs on `device`: the achieved model FLOP/s.
pub fn measure(
    cfg: &ClipConfig,
    batch_size: usize,
    steps: usize,
    device: &Device,
) -> Result<MeasuredRate> {
    let step_s = crate::bench::train_step_seconds(cfg, batch_size, 1, steps, device)?;
    Ok(MeasuredRate {
        device: format!("{:?}", device.location()).to_lowercase(),
        threads: rayon::current_num_threads(),
        batch_size,
        step_s,
        tflops: cfg.train_step_flops(batch_size) / step_s / 1e12,
    })
}

/// The cost of `samples` pairs at `batch_size`, timed at the rates given: the measured one,
/// and `device_tflops` on each of `devices` devices.
pub fn estimate(
    model: &str,
    cfg: &ClipConfig,
    samples: f64,
    batch_size: usize,
    measured: Option<MeasuredRate>,
    device_tflops: Option<f64>,
    devices: usize,
) -> Estimate {
    let total = training_flops(cfg, samples, batch_size);
    let days_at = |tflops: f64| total / (tflops * 1e12) / DAY_S;
    Estimate {
        model: model.to_string(),
        samples,
        batch_size,
        image_forward_gflops: cfg.image_forward_flops() / 1e9,
        text_forward_gflops: cfg.text_forward_flops() / 1e9,
        train_gflops_per_pair: total / samples / 1e9,
        total_flops: total,
        petaflop_s_days: total / PFLOP_S_DAY,
        measured_days: measured.as_ref().map(|m| days_at(m.tflops)),
        measured,
        device_tflops,
        devices,
        device_days: device_tflops.map(|t| days_at(t * devices as f64)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The paper (§2.5): "the largest Vision Transformer took 12 days on 256 V100 GPUs"
    /// (ViT-L/14, 32 epochs of 400M pairs = 12.8B samples, batch 32,768). Counted here, that
    /// is 6.7e21 FLOPs, which those GPU-days carry at about 25 TFLOP/s each: 20% of a V100's
    /// 125 TFLOP/s fp16 tensor peak, a plausible utilisation for mixed precision with
    /// gradient checkpointing. A count off by 2× either way would fall outside 10–40%.
    #[test]
    fn vit_l_14_on_12_8b_samples_fits_the_papers_gpu_days() {
        let cfg = ClipConfig::preset("ViT-L-14").unwrap();
        let total = training_flops(&cfg, 12.8e9, 32_768);
        let per_gpu = total / (256.0 * 12.0 * DAY_S);
        let utilisation = per_gpu / 125e12;
        assert!(
            (0.10..0.40).contains(&utilisation),
            "ViT-L/14: {total:.3e} FLOPs → {:.1} TFLOP/s per V100 ({:.0}%)",
            per_gpu / 1e12,
            utilisation * 100.0
        );
    }

    #[test]
    fn days_scale_with_samples_and_inversely_with_rate() {
        let cfg = ClipConfig::preset("ViT-B-32").unwrap();
        let a = estimate("ViT-B-32", &cfg, 1e9, 32_768, None, Some(100.0), 4);
        let b = estimate("ViT-B-32", &cfg, 2e9, 32_768, None, Some(50.0), 1);
        let ratio = b.device_days.unwrap() / a.device_days.unwrap();
        assert!((ratio - 16.0).abs() < 1e-9, "{ratio}");
        // One ViT-B/32 pair: about 3 × (8.8 + 5.9) GFLOPs forward and backward.
        assert!(
            (a.train_gflops_per_pair - 44.5).abs() < 1.5,
            "{}",
            a.train_gflops_per_pair
        );
    }
}
