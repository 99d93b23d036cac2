//! Evaluation runners on the built-in scenes: zero-shot classification of held-out
//! (never-seen) colour–shape combinations and of seen ones, among all 64 classes.

use candle_core::{Device, Tensor};
use clip::{Clip, TextTokenizer};
use clip_data::synthetic::{class_names, SHAPES, TEMPLATES_BY_SIZE};
use clip_data::{SceneBatcher, Shapes, Split};
use serde::Serialize;

use crate::encode::{image_features, ImageFeature};
use crate::error::Result;
use crate::zeroshot::{top5_predictions, top_k_rates, zero_shot_classifier};

/// The seed of the scenes evaluated for a run whose data seed is `seed`: fresh scenes, not the
/// run's training scenes.
pub fn eval_seed(seed: u64) -> u64 {
    seed ^ 0xe7a1
}

/// Zero-shot results on the built-in scenes. The headline classifier scores each class by its
/// better size: the templates of each size are averaged into one row per class (CLIP's prompt
/// ensemble), and a class scores the larger of its two rows. `ensemble_*` are CLIP's plain
/// ensemble of all six templates in one row, for comparison: a tower that ties shape to size
/// (a large star covers about as many pixels as a small circle) loses the shape in that average.
#[derive(Debug, Clone, Serialize)]
pub struct ZeroShotReport {
    /// On held-out colour–shape combinations, never in training.
    pub heldout_top1: f64,
    pub heldout_top5: f64,
    /// On seen combinations (single objects, fresh scenes).
    pub seen_top1: f64,
    pub seen_top5: f64,
    /// Of the held-out images, how many have a top-1 class of the right colour (any shape),
    /// and how many of the right shape (any colour): which half of the name failed.
    pub heldout_colour_top1: f64,
    pub heldout_shape_top1: f64,
    /// The same with one ensemble of all templates (both sizes averaged into one row).
    pub ensemble_heldout_top1: f64,
    pub ensemble_heldout_top5: f64,
    pub ensemble_seen_top1: f64,
    pub ensemble_seen_top5: f64,
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
    let tokenizer = TextTokenizer::for_config(&model.config.text_cfg)?;
    let classifier = |templates: &[&str]| -> Result<Tensor> {
        Ok(zero_shot_classifier(
            model, &tokenizer, &names, templates, device,
        )?) // [64, E]
    };
    let by_size = [
        classifier(&TEMPLATES_BY_SIZE[0])?,
        classifier(&TEMPLATES_BY_SIZE[1])?,
    ];
    let ensemble = [classifier(&TEMPLATES_BY_SIZE.concat())?];
    let size = model.config.vision_cfg.image_size;
    let ctx = model.config.text_cfg.context_length;
    let embed = |split: Split| -> Result<(Tensor, Vec<usize>)> {
        let b = SceneBatcher::new(Shapes::new(seed, split), size, ctx, true).batch(0, n, device)?;
        Ok((
            image_features(model, &b.pixels, ImageFeature::Embedding)?,
            b.labels,
        )) // [n, E]
    };
    let (held, held_labels) = embed(Split::Heldout)?;
    let (seen, seen_labels) = embed(Split::Test)?;
    let held_best = top5_predictions(&held, &by_size)?;
    let (heldout_top1, heldout_top5) = top_k_rates(&held_best, &held_labels);
    let (seen_top1, seen_top5) = top_k_rates(&top5_predictions(&seen, &by_size)?, &seen_labels);
    let (ensemble_heldout_top1, ensemble_heldout_top5) =
        top_k_rates(&top5_predictions(&held, &ensemble)?, &held_labels);
    let (ensemble_seen_top1, ensemble_seen_top5) =
        top_k_rates(&top5_predictions(&seen, &ensemble)?, &seen_labels);
    // Class = colour · 8 + shape.
    let part_rate = |part: fn(usize) -> usize| {
        let hits = held_best.iter().zip(&held_labels);
        hits.filter(|(p, &l)| part(p[0] as usize) == part(l))
            .count() as f64
            / n.max(1) as f64
    };
    Ok(ZeroShotReport {
        heldout_top1,
        heldout_top5,
        seen_top1,
        seen_top5,
        heldout_colour_top1: part_rate(|c| c / SHAPES.len()),
        heldout_shape_top1: part_rate(|c| c % SHAPES.len()),
        ensemble_heldout_top1,
        ensemble_heldout_top5,
        ensemble_seen_top1,
        ensemble_seen_top5,
        classes: names.len(),
        images: n,
    })
}
