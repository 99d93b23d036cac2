//! The contrastive loss, apart from the model (open_clip `loss.py` `ClipLoss`; paper Figure 3):
//! N (image, text) pairs → N×N logits; cross-entropy against the diagonal over rows
//! (image → which text) and over columns (text → which image), averaged.

use candle_core::{DType, Result, Tensor};

/// logits = exp(t) · I_e · T_eᵀ: `[N, E]`, `[N, E]`, scalar t → `[N, N]` (row i: image i vs all texts).
pub fn clip_logits(
    image_embeds: &Tensor,
    text_embeds: &Tensor,
    logit_scale: &Tensor,
) -> Result<Tensor> {
    let sims = image_embeds.matmul(&text_embeds.t()?)?; // [N, N]
    sims.broadcast_mul(&logit_scale.exp()?)
}

/// The symmetric InfoNCE loss on L2-normalised embeddings; scalar.
pub fn clip_loss(
    image_embeds: &Tensor,
    text_embeds: &Tensor,
    logit_scale: &Tensor,
) -> Result<Tensor> {
    let logits = clip_logits(image_embeds, text_embeds, logit_scale)?; // [N, N]
    let n = logits.dim(0)?;
    let labels = Tensor::arange(0u32, n as u32, logits.device())?; // [N]
    let image_to_text = candle_nn::loss::cross_entropy(&logits, &labels)?;
    let text_to_image = candle_nn::loss::cross_entropy(&logits.t()?.contiguous()?, &labels)?;
    ((image_to_text + text_to_image)? * 0.5)?.to_dtype(DType::F32)
}
