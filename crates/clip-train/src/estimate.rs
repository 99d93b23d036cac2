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
    /// With several devices: what each step moves between them.
    pub communication: Option<Communication>,
}

/// What one data-parallel step moves, per device, over `devices` devices (`crate::dist`),
/// counted as ring collectives do: an all-gather brings each device the (W − 1)/W of the
/// buffer it lacks, an all-reduce sends and receives 2(W − 1)/W of the buffer. f32 throughout.
#[derive(Debug, Clone, Serialize)]
pub struct Communication {
    pub devices: usize,
    pub per_device_batch: f64,
    pub parameters: f64,
    /// Image and text features of the global batch, all-gathered: bytes per device per step.
    pub feature_gather_bytes: f64,
    /// With the local loss, the features' gradients summed as well: bytes per device per step.
    pub local_loss_extra_bytes: f64,
    /// The parameter gradients summed: bytes per device per step.
    pub gradient_reduce_bytes: f64,
    /// Model FLOPs per device per step.
    pub compute_flops: f64,
    /// Model FLOPs per byte moved (whole-N×N loss): the higher, the less the link matters.
    pub flops_per_byte: f64,
    /// Given a link of `link_gbytes` GB/s per device and `--device-tflops`: seconds per step
    /// of moving and of computing (no overlap assumed).
    pub link_gbytes: Option<f64>,
    pub comm_s: Option<f64>,
    pub compute_s: Option<f64>,
}

/// The communication of a step of global batch `batch_size` over `devices` devices.
pub fn communication(
    cfg: &ClipConfig,
    batch_size: usize,
    devices: usize,
    device_tflops: Option<f64>,
    link_gbytes: Option<f64>,
) -> Communication {
    let w = devices as f64;
    let b = batch_size as f64;
    let e = cfg.embed_dim as f64;
    let parameters = clip::memory::param_count(cfg);
    let gather = (w - 1.0) / w * 2.0 * b * e * 4.0;
    let reduce = |bytes: f64| 2.0 * (w - 1.0) / w * bytes;
    let gradient_reduce_bytes = reduce(parameters * 4.0);
    let compute_flops = cfg.train_step_flops(batch_size) / w;
    let moved = gather + gradient_reduce_bytes;
    Communication {
        devices,
        per_device_batch: b / w,
        parameters,
        feature_gather_bytes: gather,
        local_loss_extra_bytes: reduce(2.0 * b * e * 4.0),
        gradient_reduce_bytes,
        compute_flops,
        flops_per_byte: compute_flops / moved.max(1.0),
        link_gbytes,
        comm_s: link_gbytes.map(|g| moved / (g * 1e9)),
        compute_s: device_tflops.map(|t| compute_flops / (t * 1e12)),
    }
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
/// and `device_tflops` on each of `devices` devices (linked at `link_gbytes` GB/s).
#[allow(clippy::too_many_arguments)]
pub fn estimate(
    model: &str,
    cfg: &ClipConfig,
    samples: f64,
    batch_size: usize,
    measured: Option<MeasuredRate>,
    device_tflops: Option<f64>,
    devices: usize,
    link_gbytes: Option<f64>,
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
        communication: (devices > 1)
            .then(|| communication(cfg, batch_size, devices, device_tflops, link_gbytes)),
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
        let a = estimate("ViT-B-32", &cfg, 1e9, 32_768, None, Some(100.0), 4, None);
        let b = estimate("ViT-B-32", &cfg, 2e9, 32_768, None, Some(50.0), 1, None);
        let ratio = b.device_days.unwrap() / a.device_days.unwrap();
        assert!((ratio - 16.0).abs() < 1e-9, "{ratio}");
        // One ViT-B/32 pair: about 3 × (8.8 + 5.9) GFLOPs forward and backward.
        assert!(
            (a.train_gflops_per_pair - 44.5).abs() < 1.5,
            "{}",
            a.train_gflops_per_pair
        );
    }

    /// ViT-B/32 over 2 devices: the gradient all-reduce moves its 151M parameters' f32
    /// once out and once in (2 × ½ × 605 MB), the all-gather half of the 2 × N × 512 features.
    #[test]
    fn a_step_over_two_devices_moves_the_gradients_and_half_the_features() {
        let cfg = ClipConfig::preset("ViT-B-32").unwrap();
        let c = communication(&cfg, 1024, 2, Some(100.0), Some(10.0));
        assert!((c.parameters / 1e6 - 151.3).abs() < 0.5, "{}", c.parameters);
        assert!((c.gradient_reduce_bytes - c.parameters * 4.0).abs() < 1.0);
        assert!((c.feature_gather_bytes - 1024.0 * 512.0 * 4.0).abs() < 1.0);
        assert!((c.local_loss_extra_bytes - 2.0 * 1024.0 * 512.0 * 4.0).abs() < 1.0);
        let moved = c.feature_gather_bytes + c.gradient_reduce_bytes;
        assert!((c.comm_s.unwrap() - moved / 1e10).abs() < 1e-9);
        assert!((c.compute_flops - cfg.train_step_flops(1024) / 2.0).abs() < 1.0);
    }
}
