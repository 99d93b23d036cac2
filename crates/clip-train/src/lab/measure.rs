//! Measurements several experiments share: retrieval among fresh scenes and their captions.

use candle_core::Device;
use clip::Clip;
use clip_data::synthetic::Split;
use clip_data::{Batch, SceneBatcher, Shapes};

use crate::dataset_eval::{retrieval, Captioned, RetrievalMetrics};
use crate::error::Result;

/// `n` fresh training-split scenes (one and two objects) of `seed` with their captions, and
/// the retrieval recalls of `model` among them (R@1 counts a scene's own caption only, so an
/// identical caption of another scene counts as a miss). Returns the batch for further use.
pub fn fresh_retrieval(
    model: &Clip,
    seed: u64,
    n: usize,
    device: &Device,
) -> Result<(RetrievalMetrics, Batch)> {
    let (size, ctx) = (
        model.config.vision_cfg.image_size,
        model.config.text_cfg.context_length,
    );
    let fresh =
        SceneBatcher::new(Shapes::new(seed, Split::Train), size, ctx, false).batch(0, n, device)?;
    let data = Captioned {
        pixels: fresh.pixels.clone(),
        captions: fresh.captions.iter().map(|c| vec![c.clone()]).collect(),
    };
    Ok((retrieval(model, &data)?, fresh))
}
