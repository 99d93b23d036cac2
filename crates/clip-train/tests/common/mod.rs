//! What the training tests share: a model small enough to train in a test, shards to stream
//! and a file listing.
#![allow(dead_code)]

use clip::ClipConfig;
use clip_train::TrainConfig;

/// A one-block model on 16-px scenes, batch 16, warm-up 2, no checkpoints on the way.
pub fn micro_config(steps: u64) -> TrainConfig {
    let model = ClipConfig::from_json_str(
        r#"{"embed_dim": 32,
            "vision_cfg": {"image_size": 16, "patch_size": 8, "width": 32, "layers": 1, "head_width": 16},
            "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}"#,
        "micro",
    )
    .unwrap();
    let mut cfg = TrainConfig::new("micro", model, steps);
    cfg.batch_size = 16;
    cfg.warmup = 2;
    cfg.checkpoint_every = 1000;
    cfg
}

/// `count` built-in scenes as 16-px PNGs in WebDataset shards of `per_shard` in `dir`, sample
/// `corrupt` (if any) a broken image; returns the shards' pattern.
pub fn write_scene_shards(
    dir: &std::path::Path,
    count: u64,
    per_shard: usize,
    corrupt: Option<u64>,
) -> String {
    let mut w = clip_data::files::ShardWriter::new(dir, "shard", per_shard).unwrap();
    for i in 0..count {
        let scene = clip_data::Shapes::new(4, clip_data::Split::Train).scene(i);
        let px: Vec<u8> = scene.render(16).iter().map(|v| (v * 255.0) as u8).collect();
        let mut png = Vec::new();
        image::RgbImage::from_raw(16, 16, px)
            .unwrap()
            .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
            .unwrap();
        if Some(i) == corrupt {
            png = b"\x89PNG\r\n\x1a\nbroken".to_vec();
        }
        w.write(&png, "png", &scene.caption()).unwrap();
    }
    let shards = w.finish().unwrap();
    format!(
        "{}/shard-{{000000..{:06}}}.tar",
        dir.display(),
        shards.len() - 1
    )
}

/// 24 built-in scenes as PNG files and a CSV listing of them; returns the listing.
pub fn write_listing(dir: &std::path::Path) -> std::path::PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let mut csv = String::from("filepath,title\n");
    for i in 0..24 {
        let scene = clip_data::Shapes::new(5, clip_data::Split::Train).scene(i);
        let px: Vec<u8> = scene.render(16).iter().map(|v| (v * 255.0) as u8).collect();
        let name = format!("s{i}.png");
        image::RgbImage::from_raw(16, 16, px)
            .unwrap()
            .save(dir.join(&name))
            .unwrap();
        csv.push_str(&format!("{name},\"{}\"\n", scene.caption()));
    }
    let path = dir.join("list.csv");
    std::fs::write(&path, csv).unwrap();
    path
}
