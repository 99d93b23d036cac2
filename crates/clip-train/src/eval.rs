//! Evaluation runners on the built-in scenes: zero-shot classification of held-out
//! (never-seen) colour–shape combinations and of seen ones, among all 64 classes.

use candle_core::Device;
use clip::{Clip, Tokenizer};
use clip_data::synthetic::{class_names, TEMPLATES};
use clip_data::{SceneBatcher, Shapes, Split};
use serde::Serialize;

use crate::error::Result;
use crate::zeroshot::{accuracy, zero_shot_classifier};

#[derive(Debug, Clone, Serialize)]
pub struct ZeroShotReport {
    /// On held-out colour–shape combinations, never in training.
    pub zero_shot_top1: f64,
    pub zero_shot_top5: f64,
    /// On seen combinations (single objects, fresh scenes).
    pub seen_top1: f64,
    pub seen_top5: f64,
    pub classes: usize,
    pub images: usize,
}

/// Zero-shot accuracy on `n` held-out and `n` seen scenes of dataset seed `seed`.
pub fn zero_shot_builtin(
    model: &Clip,
    seed: u64,
    n: usize,
    device: &Device,
) -> Result<ZeroShotReport> {
    let names = class_names();
    let tokenizer = Tokenizer::new();
    let classifier = zero_shot_classifier(model, &tokenizer, &names, &TEMPLATES, device)?; // [64, E]
    let size = model.config.vision_cfg.image_size;
    let ctx = model.config.text_cfg.context_length;
    let run = |split: Split| -> Result<(f64, f64)> {
        let b = SceneBatcher::new(Shapes::new(seed, split), size, ctx, true).batch(0, n, device)?;
        Ok(accuracy(model, &classifier, &b.pixels, &b.labels, 256)?)
    };
    let (zero_shot_top1, zero_shot_top5) = run(Split::Heldout)?;
    let (seen_top1, seen_top5) = run(Split::Test)?;
    Ok(ZeroShotReport {
        zero_shot_top1,
        zero_shot_top5,
        seen_top1,
        seen_top5,
        classes: names.len(),
        images: n,
    })
}
