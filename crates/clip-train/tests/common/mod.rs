//! What the training tests share: a model small enough to train in a test.
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
