//! Image-encode time alone, for profilers: `cargo run --release -p clip-train --example encode_profile -- [model] [batch] [runs] [f32|bf16|int8]`
//! (bf16: under `clip::ops::autocast_bf16`; int8: under `clip::ops::quantize_int8`).
use std::time::Instant;

use clip::ClipConfig;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let name = args.get(1).map(String::as_str).unwrap_or("tiny");
    let batch: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(256);
    let runs: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(10);
    let mode = args.get(4).map(String::as_str).unwrap_or("f32");
    let cfg = ClipConfig::resolve(name)?;
    let dev = candle_core::Device::Cpu;
    let (model, varmap) = clip::Clip::with_varmap(&cfg, &dev)?;
    clip::init::init_parameters(&varmap, &cfg, 0)?;
    let batcher = clip_data::SceneBatcher::new(
        clip_data::Shapes::new(0, clip_data::Split::Train),
        cfg.vision_cfg.image_size,
        cfg.text_cfg.context_length,
        false,
    );
    let b = batcher.batch(0, batch, &dev)?;
    let frozen = clip::ops::FrozenWeights::new(); // the weights are prepared in run 0
    for run in 0..runs {
        let t = Instant::now();
        let encode = || frozen.run(|| clip::ops::inference(|| model.encode_image(&b.pixels)));
        let emb = match mode {
            "bf16" => clip::ops::autocast_bf16(encode),
            "int8" => clip::ops::quantize_int8(encode),
            _ => encode(),
        }?; // [B, E]
        let dt = t.elapsed().as_secs_f64();
        println!(
            "run {run}: {:.1} ms, {:.0} img/s ({:?})",
            dt * 1e3,
            batch as f64 / dt,
            emb.dims()
        );
    }
    Ok(())
}
