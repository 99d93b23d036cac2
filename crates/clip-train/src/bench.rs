//! Benchmarks of the pieces of training: the step (forward + loss + backward + AdamW), image and
//! text encoding, the tokenizer, and the file loader (PNG decode + random resized crop +
//! normalise). Warm-up runs first, then the median of several timed runs. On a GPU every timed
//! run ends with a device synchronisation, and the model FLOPs of each run (`clip::flops`) give
//! the achieved TFLOP/s.

use std::time::Instant;

use candle_core::{DType, Device};
use clip::{clip_loss, Clip, ClipConfig, Tokenizer};
use clip_data::files::{ImageSource, RawSample, SkipCounts};
use clip_data::{BatchSource, FileBatcher, SceneBatcher, Shapes, Split};
use serde::Serialize;

use crate::error::Result;
use crate::optim::{AdamW, AdamWParams};

/// What to measure.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    pub model: String,
    pub batch_size: usize,
    /// Timed runs of each measurement (after `warmup` untimed ones).
    pub steps: usize,
    pub warmup: usize,
    /// Side of the PNGs the loader decodes (real data is larger than the model's input).
    pub loader_image_size: usize,
    /// Where the model runs.
    pub device: Device,
    /// Dtype of the encoders (the training step always keeps f32 parameters): on a GPU the
    /// parameters' dtype; on the CPU bf16 means f32 parameters with bf16 products
    /// ([`clip::ops::autocast_bf16`]), as PyTorch's CPU autocast, for the training step too.
    pub encode_dtype: DType,
    /// On the CPU, encode with int8 products ([`clip::ops::quantize_int8`], dynamic
    /// quantisation as PyTorch's `quantize_dynamic`); `encode_dtype` is then f32.
    pub int8: bool,
    /// Let f32 matrix products use TF32 on a GPU (cuBLAS; no effect on the CPU).
    pub tf32: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub model: String,
    pub device: String,
    pub encode_dtype: String,
    /// What the encoders' products ran on: `f32`, `AMX-BF16` or `AVX512-BF16` (CPU autocast), `int8 …`, or `bf16` (GPU).
    pub encode_kernel: String,
    pub tf32: bool,
    pub batch_size: usize,
    pub threads: usize,
    pub steps: usize,
    pub train_step_s_median: f64,
    pub train_step_s_min: f64,
    pub train_samples_per_s: f64,
    /// Model FLOPs per second of the training step (3 × forward, `clip::flops`).
    pub train_tflops: f64,
    pub image_encode_per_s: f64,
    pub image_encode_tflops: f64,
    pub text_encode_per_s: f64,
    pub tokenizer_per_s: f64,
    pub loader_images_per_s: f64,
    pub loader_image_size: usize,
    pub peak_rss_mb: f64,
}

/// Passes over the 4,096 benchmark captions per timed tokenizer run.
const TOKENIZE_PASSES: usize = 16;

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    if n % 2 == 1 {
        xs[n / 2]
    } else {
        0.5 * (xs[n / 2 - 1] + xs[n / 2])
    }
}

/// Seconds of each of `runs` timed calls of `f`, after `warmup` untimed ones; each call is
/// followed by a synchronisation of `device` (a no-op on the CPU), so GPU work is counted.
fn time_runs(
    device: &Device,
    warmup: usize,
    runs: usize,
    mut f: impl FnMut() -> Result<()>,
) -> Result<Vec<f64>> {
    for _ in 0..warmup {
        f()?;
    }
    device.synchronize()?;
    (0..runs)
        .map(|_| {
            let t = Instant::now();
            f()?;
            device.synchronize()?;
            Ok(t.elapsed().as_secs_f64())
        })
        .collect()
}

/// Peak resident memory of this process so far (VmHWM), in MiB; 0 where /proc is missing.
pub fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Run every measurement; `progress` is told the name of each as it starts.
pub fn run(cfg: &BenchConfig, mut progress: impl FnMut(&str)) -> Result<BenchReport> {
    let device = &cfg.device;
    candle_core::cuda::set_gemm_reduced_precision_f32(cfg.tf32);
    let model_cfg = ClipConfig::resolve(&cfg.model)?;
    let (model, varmap) = Clip::with_varmap(&model_cfg, device)?;
    clip::init::init_parameters(&varmap, &model_cfg, 0)?;
    let mut opt = AdamW::new(&varmap, AdamWParams::default())?;
    // The encoders run in `encode_dtype`: on the CPU under autocast, on a GPU with the same
    // initial weights converted.
    let autocast = cfg.encode_dtype == DType::BF16 && device.is_cpu();
    let int8 = cfg.int8 && device.is_cpu();
    let encode_kernel = match (cfg.encode_dtype, autocast) {
        _ if int8 => format!("int8 {}", clip::ops::int8_kernel()),
        (DType::F32, _) => "f32".to_string(),
        (_, true) => clip::ops::bf16_kernel()
            .unwrap_or("f32 (no bf16 hardware)")
            .to_string(),
        (d, false) => format!("{d:?}").to_lowercase(),
    };
    // The encoders' weights stay fixed while they are timed: prepared once, in the warm-up.
    let frozen = clip::ops::FrozenWeights::new();
    let encode = |f: &dyn Fn() -> candle_core::Result<candle_core::Tensor>| {
        frozen.run(|| {
            clip::ops::inference(|| {
                if int8 {
                    clip::ops::quantize_int8(f)
                } else if autocast {
                    clip::ops::autocast_bf16(f)
                } else {
                    f()
                }
            })
        })
    };
    let encoder = if cfg.encode_dtype == DType::F32 || autocast {
        model.clone()
    } else {
        let (m, vm) = Clip::with_varmap_dtype(&model_cfg, device, cfg.encode_dtype)?;
        clip::init::init_parameters(&vm, &model_cfg, 0)?;
        m
    };
    let (size, ctx) = (
        model_cfg.vision_cfg.image_size,
        model_cfg.text_cfg.context_length,
    );
    let n = cfg.batch_size;
    let batch =
        SceneBatcher::new(Shapes::new(0, Split::Train), size, ctx, false).batch(0, n, device)?;

    progress("training step");
    let step = time_runs(device, cfg.warmup, cfg.steps, || {
        if autocast {
            clip::ops::autocast_bf16(|| step_once(&model, &mut opt, &batch))?;
        } else {
            step_once(&model, &mut opt, &batch)?;
        }
        Ok(())
    })?;

    progress("image encode");
    let img = time_runs(device, cfg.warmup, cfg.steps, || {
        encode(&|| encoder.encode_image(&batch.pixels))?;
        Ok(())
    })?;
    progress("text encode");
    let txt = time_runs(device, cfg.warmup, cfg.steps, || {
        encode(&|| encoder.encode_text(&batch.ids))?;
        Ok(())
    })?;

    progress("tokenizer");
    let tokenizer_per_s = tokenizer_rate(ctx, cfg.steps)?;

    progress("loader");
    let loader = png_loader(cfg.loader_image_size, size, ctx, 4 * n)?;
    let mut k = 0u64;
    let load = time_runs(&Device::Cpu, 1, cfg.steps, || {
        loader.batch(k * n as u64, n, &Device::Cpu)?;
        k += 1;
        Ok(())
    })?;

    let step_med = median(step.clone());
    let img_med = median(img);
    Ok(BenchReport {
        model: cfg.model.clone(),
        device: format!("{:?}", device.location()),
        encode_dtype: if int8 {
            "int8".to_string()
        } else {
            format!("{:?}", cfg.encode_dtype).to_lowercase()
        },
        encode_kernel,
        tf32: cfg.tf32,
        batch_size: n,
        threads: rayon::current_num_threads(),
        steps: cfg.steps,
        train_step_s_median: step_med,
        train_step_s_min: step.iter().cloned().fold(f64::INFINITY, f64::min),
        train_samples_per_s: n as f64 / step_med,
        train_tflops: model_cfg.train_step_flops(n) / step_med / 1e12,
        image_encode_per_s: n as f64 / img_med,
        image_encode_tflops: n as f64 * model_cfg.image_forward_flops() / img_med / 1e12,
        text_encode_per_s: n as f64 / median(txt),
        tokenizer_per_s,
        loader_images_per_s: n as f64 / median(load),
        loader_image_size: cfg.loader_image_size,
        peak_rss_mb: peak_rss_mb(),
    })
}

/// Captions tokenized per second (to `ctx` tokens), median of `steps` timed runs.
fn tokenizer_rate(ctx: usize, steps: usize) -> Result<f64> {
    let tokenizer = Tokenizer::new();
    let captions: Vec<String> = (0..4096)
        .map(|i| Shapes::new(1, Split::Train).scene(i).caption())
        .collect();
    // One pass over 4,096 captions takes a few milliseconds, too short to time steadily (rayon
    // wake-up, timer noise): each timed run makes TOKENIZE_PASSES passes.
    let tok = time_runs(&Device::Cpu, 1, steps, || {
        for _ in 0..TOKENIZE_PASSES {
            std::hint::black_box(tokenizer.tokenize(&captions, ctx));
        }
        Ok(())
    })?;
    Ok((TOKENIZE_PASSES * captions.len()) as f64 / median(tok))
}

/// One training step: forward, symmetric InfoNCE, backward, AdamW.
fn step_once(model: &Clip, opt: &mut AdamW, batch: &clip_data::Batch) -> Result<()> {
    let img = model.encode_image(&batch.pixels)?;
    let txt = model.encode_text(&batch.ids)?;
    let loss = clip_loss(&img, &txt, &model.logit_scale)?;
    let grads = loss.backward()?;
    opt.step(&grads, 1e-4)?;
    Ok(())
}

/// Median seconds of one training step (forward, loss, backward, AdamW) of `model_cfg` at
/// `batch_size` pairs of built-in scenes, from its initial weights: `steps` timed runs after
/// `warmup` untimed ones.
pub fn train_step_seconds(
    model_cfg: &ClipConfig,
    batch_size: usize,
    warmup: usize,
    steps: usize,
    device: &Device,
) -> Result<f64> {
    let (model, varmap) = Clip::with_varmap(model_cfg, device)?;
    clip::init::init_parameters(&varmap, model_cfg, 0)?;
    let mut opt = AdamW::new(&varmap, AdamWParams::default())?;
    let (size, ctx) = (
        model_cfg.vision_cfg.image_size,
        model_cfg.text_cfg.context_length,
    );
    let batch = SceneBatcher::new(Shapes::new(0, Split::Train), size, ctx, false)
        .batch(0, batch_size, device)?;
    let times = time_runs(device, warmup, steps, || {
        step_once(&model, &mut opt, &batch)
    })?;
    Ok(median(times))
}

/// A file loader over `count` built-in scenes encoded as PNGs of side `png_size`, in memory.
fn png_loader(png_size: usize, size: usize, ctx: usize, count: usize) -> Result<FileBatcher> {
    let ds = Shapes::new(2, Split::Train);
    let samples = (0..count as u64)
        .map(|i| {
            let scene = ds.scene(i);
            let px: Vec<u8> = scene
                .render(png_size)
                .iter()
                .map(|v| (v * 255.0).round() as u8)
                .collect();
            let img = image::RgbImage::from_raw(png_size as u32, png_size as u32, px)
                .expect("rendered buffer has size² pixels");
            let mut bytes = Vec::new();
            img.write_to(
                &mut std::io::Cursor::new(&mut bytes),
                image::ImageFormat::Png,
            )
            .map_err(|e| crate::TrainError::Data(format!("encoding a PNG: {e}")))?;
            Ok(RawSample {
                origin: format!("scene {i}"),
                image: ImageSource::Bytes(std::sync::Arc::new(bytes)),
                caption: scene.caption(),
                label: None,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(FileBatcher::new(
        samples,
        SkipCounts::default(),
        0,
        size,
        ctx,
    ))
}
