//! Encoding many inputs for evaluation: in chunks, under `ops::inference`, each chunk's output
//! detached (a kept output would hold its whole forward graph, every activation, alive), the
//! blocks' weights prepared once per call, or once for a whole job when the caller runs it
//! inside a [`clip::ops::FrozenWeights::run`] (nothing trains while either runs).

use candle_core::{DType, Device, Result, Tensor};
use candle_nn::Module;
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

/// Features of images `[N, 3, S, S]` → `[N, E]` or `[N, width]`, f32. A pretrained image
/// tower's pooled features are kept in the feature cache ([`pooled_cached`]): evaluating
/// several heads on one locked tower encodes each image set once.
pub fn image_features(model: &Clip, pixels: &Tensor, kind: ImageFeature) -> Result<Tensor> {
    if model.config.vision_cfg.kind != clip::config::VisionKind::Vit {
        let pooled = pooled_cached(model, pixels)?; // [N, W]
        return match kind {
            ImageFeature::PreProjection => Ok(pooled),
            ImageFeature::Embedding => {
                let dev = model.logit_scale.device();
                let f = pooled.to_device(dev)?.to_dtype(model.logit_scale.dtype())?;
                detached(|| clip::nn::l2_normalize(&model.visual.head().forward(&f)?))?
                    .to_dtype(DType::F32)
            }
        };
    }
    let n = pixels.dim(0)?;
    let mut parts = Vec::with_capacity(n.div_ceil(CHUNK));
    let frozen = clip::ops::FrozenWeights::active_or_new();
    for start in (0..n).step_by(CHUNK) {
        let chunk = pixels.narrow(0, start, CHUNK.min(n - start))?;
        parts.push(frozen.run(|| {
            detached(|| match kind {
                ImageFeature::Embedding => model.encode_image(&chunk),
                ImageFeature::PreProjection => model.visual.pooled(&chunk),
            })
        })?);
    }
    Tensor::cat(&parts, 0)?.to_dtype(DType::F32)
}

/// The image tower's pooled features of `pixels`, `[N, W]` f32, read from the feature cache
/// when there. The key: the pixels' bytes and the features of the first few images (which tell
/// one tower's weights from another's), so a cache is never read for other images or another
/// tower.
fn pooled_cached(model: &Clip, pixels: &Tensor) -> Result<Tensor> {
    let n = pixels.dim(0)?;
    let probe = detached(|| model.visual.pooled(&pixels.narrow(0, 0, n.min(4))?))?;
    let mut key: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |t: &Tensor| -> Result<()> {
        for x in t.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()? {
            for b in x.to_le_bytes() {
                key = (key ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3);
            }
        }
        Ok(())
    };
    eat(&probe)?;
    eat(pixels)?;
    let path = std::path::Path::new(crate::feature_cache::DEFAULT_DIR)
        .join(format!("eval-image-{key:016x}.safetensors"));
    if let Ok(t) = clip::weights::read_safetensors(&path, &Device::Cpu) {
        if let Some(f) = t.get("features").filter(|f| f.dim(0).ok() == Some(n)) {
            return Ok(f.clone());
        }
    }
    let mut parts = Vec::with_capacity(n.div_ceil(32));
    for start in (0..n).step_by(32) {
        let chunk = pixels.narrow(0, start, 32.min(n - start))?;
        parts.push(detached(|| model.visual.pooled(&chunk))?.to_dtype(DType::F32)?);
    }
    let f = Tensor::cat(&parts, 0)?.to_device(&Device::Cpu)?; // [N, W]
    let map = std::collections::HashMap::from([("features".to_string(), f.clone())]);
    if std::fs::create_dir_all(path.parent().expect("has a parent")).is_ok() {
        // A cache that cannot be written is only a slower next evaluation.
        if let Err(e) = clip::weights::save_tensors(&map, &path) {
            tracing::warn!("feature cache: {e}");
        }
    }
    Ok(f)
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
    let frozen = clip::ops::FrozenWeights::active_or_new();
    for part in texts.chunks(CHUNK) {
        let ids = tokenizer.tokenize_tensor(part, ctx, device)?; // [m, T]
        parts.push(frozen.run(|| detached(|| model.encode_text(&ids)))?); // [m, E]
    }
    Tensor::cat(&parts, 0)?.to_dtype(DType::F32)
}
