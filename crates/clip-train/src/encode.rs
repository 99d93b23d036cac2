//! Encoding many inputs for evaluation: in chunks, under `ops::inference`, each chunk's output
//! detached (a kept output would hold its whole forward graph, every activation, alive).

use candle_core::{DType, Device, Result, Tensor};
use clip::{Clip, TextTokenizer};

/// Inputs per forward pass.
pub const CHUNK: usize = 256;

/// Which image feature to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageFeature {
    /// The unit embedding `[E]` in the shared space.
    Embedding,
    /// The pooled feature before the projection head `[width]` (what a linear probe reads).
    PreProjection,
}

/// Runs `f` without a graph and detaches what it returns.
fn detached(f: impl FnOnce() -> Result<Tensor>) -> Result<Tensor> {
    Ok(clip::ops::inference(f)?.detach())
}

/// Features of images `[N, 3, S, S]` → `[N, E]` or `[N, width]`, f32.
pub fn image_features(model: &Clip, pixels: &Tensor, kind: ImageFeature) -> Result<Tensor> {
    let n = pixels.dim(0)?;
    let mut parts = Vec::with_capacity(n.div_ceil(CHUNK));
    for start in (0..n).step_by(CHUNK) {
        let chunk = pixels.narrow(0, start, CHUNK.min(n - start))?;
        parts.push(detached(|| match kind {
            ImageFeature::Embedding => model.encode_image(&chunk),
            ImageFeature::PreProjection => model.visual.pooled(&chunk),
        })?);
    }
    Tensor::cat(&parts, 0)?.to_dtype(DType::F32)
}

/// Unit text embeddings `[M, E]` of `texts`, f32.
pub fn text_embeddings(
    model: &Clip,
    tokenizer: &TextTokenizer,
    texts: &[String],
    device: &Device,
) -> Result<Tensor> {
    let ctx = model.config.text_cfg.context_length;
    let mut parts = Vec::with_capacity(texts.len().div_ceil(CHUNK));
    for part in texts.chunks(CHUNK) {
        let ids = tokenizer.tokenize_tensor(part, ctx, device)?; // [m, T]
        parts.push(detached(|| model.encode_text(&ids))?); // [m, E]
    }
    Tensor::cat(&parts, 0)?.to_dtype(DType::F32)
}
