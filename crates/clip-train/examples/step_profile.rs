//! Where a training step's time goes: `cargo run --release -p clip-train --example step_profile -- [model] [batch]`.
use std::time::Instant;

use clip::{clip_loss, ClipConfig};
use clip_train::optim::{clip_grad_norm, AdamW, AdamWParams};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let name = args.get(1).map(String::as_str).unwrap_or("tiny");
    let batch: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(128);
    let cfg = ClipConfig::resolve(name)?;
    let dev = candle_core::Device::Cpu;
    let (model, varmap) = clip::Clip::with_varmap(&cfg, &dev)?;
    clip::init::init_parameters(&varmap, &cfg, 0)?;
    let mut opt = AdamW::new(&varmap, AdamWParams::default())?;
    let batcher = clip_data::SceneBatcher::new(
        clip_data::Shapes::new(0, clip_data::Split::Train),
        cfg.vision_cfg.image_size,
        cfg.text_cfg.context_length,
        false,
    );
    let steps: u64 = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(4);
    for step in 0..steps {
        let t = Instant::now();
        let b = batcher.batch(step * batch as u64, batch, &dev)?;
        let t_data = t.elapsed();
        let t = Instant::now();
        let img = model.encode_image(&b.pixels)?;
        let t_img = t.elapsed();
        let t = Instant::now();
        let txt = model.encode_text(&b.ids)?;
        let t_txt = t.elapsed();
        let loss = clip_loss(&img, &txt, &model.logit_scale)?;
        let t = Instant::now();
        let mut grads = loss.backward()?;
        let t_bwd = t.elapsed();
        let t = Instant::now();
        clip_grad_norm(&varmap, &mut grads, 1.0)?;
        let t_clip = t.elapsed();
        let t = Instant::now();
        if std::env::var("NO_OPT").is_err() {
            opt.step(&grads, 1e-3)?;
        }
        let t_opt = t.elapsed();
        let rss_mb = std::fs::read_to_string("/proc/self/statm")
            .ok()
            .and_then(|s| {
                s.split_whitespace()
                    .nth(1)
                    .and_then(|p| p.parse::<u64>().ok())
            })
            .unwrap_or(0)
            * 4096
            / (1 << 20);
        println!("rss {rss_mb} MB data {t_data:?} image-fwd {t_img:?} text-fwd {t_txt:?} backward {t_bwd:?} clip {t_clip:?} adamw {t_opt:?}");
    }
    Ok(())
}
