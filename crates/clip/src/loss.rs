//! The contrastive losses, apart from the model (open_clip `loss.py`): CLIP's symmetric InfoNCE
//! (`ClipLoss`; paper Figure 3) and SigLIP's pairwise sigmoid (`SigLipLoss`). Both take the N×N
//! logits of N (image, text) pairs: the diagonal holds the true pairs, the N² − N others are
//! negatives.

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

/// The symmetric InfoNCE loss on L2-normalised embeddings; scalar. Each row is a softmax over
/// the N texts (image → which text), each column one over the N images (text → which image);
/// the loss is the mean of the two cross-entropies against the diagonal.
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

/// SigLIP's loss on L2-normalised embeddings; scalar. Every one of the N² pairs is its own
/// binary question, "is this a true pair?": logits = exp(t) · I_e · T_eᵀ + b, label +1 on the
/// diagonal and −1 elsewhere, loss = −Σ log σ(label · logit) / N. No softmax couples the
/// pairs, so no row or column needs the whole batch; the learned bias b (−10 at init) offsets
/// the N² − N negatives' weight against the N positives'.
pub fn siglip_loss(
    image_embeds: &Tensor,
    text_embeds: &Tensor,
    logit_scale: &Tensor,
    logit_bias: &Tensor,
) -> Result<Tensor> {
    let logits = clip_logits(image_embeds, text_embeds, logit_scale)?.broadcast_add(logit_bias)?; // [N, N]
    let n = logits.dim(0)?;
    let eye = Tensor::eye(n, logits.dtype(), logits.device())?; // [N, N]
    let signs = ((eye * 2.0)? - 1.0)?; // +1 diagonal, −1 elsewhere
                                       // −log σ(z) = softplus(−z) = max(−z, 0) + log(1 + exp(−|z|)), stable for any z.
    let z = (logits * signs)?.neg()?; // [N, N]
    let softplus = (z.relu()? + (z.abs()?.neg()?.exp()? + 1.0)?.log()?)?;
    (softplus.sum_all()? / n as f64)?.to_dtype(DType::F32)
}

/// What rows `start .. start + n` of the batch contribute to [`clip_loss`] (open_clip's
/// `local_loss`: a process's own images and texts against every column): their image→text
/// and text→image cross-entropies, divided by the whole batch's N, so that the parts of any
/// partition of the rows add up to `clip_loss`, in value and in gradient. `[N, E]`, `[N, E]`,
/// scalar t → scalar.
pub fn clip_loss_rows(
    image_embeds: &Tensor,
    text_embeds: &Tensor,
    logit_scale: &Tensor,
    start: usize,
    n: usize,
) -> Result<Tensor> {
    let total = image_embeds.dim(0)?;
    let img = image_embeds.narrow(0, start, n)?; // [n, E]
    let txt = text_embeds.narrow(0, start, n)?; // [n, E]
    let image_to_text = clip_logits(&img, text_embeds, logit_scale)?; // [n, N]
    let text_to_image = clip_logits(&txt, image_embeds, logit_scale)?; // [n, N]
    let labels = Tensor::arange(start as u32, (start + n) as u32, img.device())?; // [n]
    let i2t = candle_nn::loss::cross_entropy(&image_to_text, &labels)?; // mean over n
    let t2i = candle_nn::loss::cross_entropy(&text_to_image, &labels)?;
    ((i2t + t2i)? * (0.5 * n as f64 / total as f64))?.to_dtype(DType::F32)
}

/// What rows `start .. start + n` (their images against every text) contribute to
/// [`siglip_loss`]; the parts of a partition of the rows add up to it. `[N, E]`, `[N, E]`,
/// scalar t, scalar b → scalar.
pub fn siglip_loss_rows(
    image_embeds: &Tensor,
    text_embeds: &Tensor,
    logit_scale: &Tensor,
    logit_bias: &Tensor,
    start: usize,
    n: usize,
) -> Result<Tensor> {
    let total = image_embeds.dim(0)?;
    let img = image_embeds.narrow(0, start, n)?; // [n, E]
    let logits = clip_logits(&img, text_embeds, logit_scale)?.broadcast_add(logit_bias)?; // [n, N]
    let eye = Tensor::eye(total, logits.dtype(), logits.device())?.narrow(0, start, n)?; // [n, N]
    let signs = ((eye * 2.0)? - 1.0)?;
    let z = (logits * signs)?.neg()?; // [n, N]
    let softplus = (z.relu()? + (z.abs()?.neg()?.exp()? + 1.0)?.log()?)?;
    (softplus.sum_all()? / total as f64)?.to_dtype(DType::F32)
}
