//! Evaluation runners on the built-in scenes: zero-shot classification of held-out
//! (never-seen) colour–shape combinations and of seen ones, among all 64 classes.

use candle_core::{Device, Tensor};
use clip::{Clip, TextTokenizer};
use clip_data::synthetic::{class_names, SHAPES, TEMPLATES};
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

/// Zero-shot results on the built-in scenes, with CLIP's prompt ensemble: each class's
/// templates ("a {}", "a picture of a {}", …) embedded, averaged and normalised into one row.
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
    /// Held-out shape confusions: `[true shape][top-1's shape]` counts, shapes in `SHAPES` order.
    pub heldout_shape_confusion: Vec<Vec<usize>>,
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
    let ensemble = [classifier(&TEMPLATES)?];
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
    let held_best = top5_predictions(&held, &ensemble)?;
    let (heldout_top1, heldout_top5) = top_k_rates(&held_best, &held_labels);
    let (seen_top1, seen_top5) = top_k_rates(&top5_predictions(&seen, &ensemble)?, &seen_labels);
    // Class = colour · 8 + shape.
    let part_rate = |part: fn(usize) -> usize| {
        let hits = held_best.iter().zip(&held_labels);
        hits.filter(|(p, &l)| part(p[0] as usize) == part(l))
            .count() as f64
            / n.max(1) as f64
    };
    let mut confusion = vec![vec![0usize; SHAPES.len()]; SHAPES.len()];
    for (p, &l) in held_best.iter().zip(&held_labels) {
        confusion[l % SHAPES.len()][p[0] as usize % SHAPES.len()] += 1;
    }
    Ok(ZeroShotReport {
        heldout_top1,
        heldout_top5,
        seen_top1,
        seen_top5,
        heldout_colour_top1: part_rate(|c| c / SHAPES.len()),
        heldout_shape_top1: part_rate(|c| c % SHAPES.len()),
        heldout_shape_confusion: confusion,
        classes: names.len(),
        images: n,
    })
}

/// The relation test on two-object scenes: is the true caption ("a red circle to the left of a
/// blue square") more similar to the image than the same words with the objects swapped ("a
/// blue square to the left of a red circle")? Chance is 50%; a model that reads its captions
/// as bags of words cannot tell the two apart.
#[derive(Debug, Clone, Serialize)]
pub struct RelationReport {
    /// Share of scenes whose true caption wins, over all, left/right and above/below scenes.
    pub accuracy: f64,
    pub left_right: f64,
    pub above_below: f64,
    /// Mean cosine(image, true caption) − cosine(image, swapped caption).
    pub mean_margin: f64,
    pub scenes: usize,
}

/// The relation test on `n` fresh two-object scenes of dataset seed `seed` (training split:
/// seen colour–shape combinations, new scenes), captions in their first phrasing.
pub fn relation_test(model: &Clip, seed: u64, n: usize, device: &Device) -> Result<RelationReport> {
    use clip_data::synthetic::Relation;
    let ds = Shapes::new(seed, Split::Train);
    let scenes: Vec<_> = (0u64..)
        .map(|i| ds.scene(i))
        .filter(|s| s.objects.len() == 2)
        .take(n)
        .collect();
    let size = model.config.vision_cfg.image_size;
    let mut pixels = Vec::with_capacity(n * 3 * size * size);
    let (mut truth, mut swapped) = (Vec::new(), Vec::new());
    for s in &scenes {
        pixels.extend(clip_data::batch::normalize_hwc(&s.render(size), size));
        let (t, w) = s.swapped_caption(0).expect("two-object scenes");
        truth.push(t);
        swapped.push(w);
    }
    let pixels = Tensor::from_vec(pixels, (scenes.len(), 3, size, size), device)?; // [n, 3, S, S]
    let img = image_features(model, &pixels, ImageFeature::Embedding)?; // [n, E]
    let tokenizer = TextTokenizer::for_config(&model.config.text_cfg)?;
    let true_emb = crate::encode::text_embeddings(model, &tokenizer, &truth, device)?; // [n, E]
    let swap_emb = crate::encode::text_embeddings(model, &tokenizer, &swapped, device)?; // [n, E]
    let margin: Vec<f32> =
        ((&img * &true_emb)?.sum(1)? - (&img * &swap_emb)?.sum(1)?)?.to_vec1()?; // [n]
    let rate = |keep: &dyn Fn(&clip_data::synthetic::Scene) -> bool| {
        let hits: Vec<bool> = scenes
            .iter()
            .zip(&margin)
            .filter(|(s, _)| keep(s))
            .map(|(_, &m)| m > 0.0)
            .collect();
        hits.iter().filter(|&&h| h).count() as f64 / hits.len().max(1) as f64
    };
    Ok(RelationReport {
        accuracy: rate(&|_| true),
        left_right: rate(&|s| s.relation == Some(Relation::LeftOf)),
        above_below: rate(&|s| s.relation == Some(Relation::Above)),
        mean_margin: margin.iter().map(|&m| m as f64).sum::<f64>() / margin.len().max(1) as f64,
        scenes: scenes.len(),
    })
}
