//! Zero-shot classification (paper §3.1.4; open_clip `zero_shot_classifier.py`): each class
//! name in every prompt template → normalised text embeddings, averaged and renormalised into
//! one classifier row; an image's class is the row most similar to its embedding.

use candle_core::{Device, Result, Tensor, D};
use clip::nn::l2_normalize;
use clip::{Clip, Tokenizer};

/// Classifier `[C, E]`: for class c, normalise(mean over templates of embed(template(c))).
pub fn zero_shot_classifier(
    model: &Clip,
    tokenizer: &Tokenizer,
    class_names: &[String],
    templates: &[&str],
    device: &Device,
) -> Result<Tensor> {
    let ctx = model.config.text_cfg.context_length;
    let mut rows = Vec::with_capacity(class_names.len());
    for name in class_names {
        let prompts: Vec<String> = templates.iter().map(|t| t.replace("{}", name)).collect();
        let ids = tokenizer.tokenize_tensor(&prompts, ctx, device)?; // [K, T]
        let emb = clip::ops::inference(|| model.encode_text(&ids))?; // [K, E], unit rows
        rows.push(emb.mean(0)?); // [E]
    }
    l2_normalize(&Tensor::stack(&rows, 0)?) // [C, E]
}

/// Top-1 and top-5 accuracy of `classifier` on images `[N, 3, S, S]` with `labels`, in chunks.
pub fn accuracy(
    model: &Clip,
    classifier: &Tensor,
    pixels: &Tensor,
    labels: &[usize],
    chunk: usize,
) -> Result<(f64, f64)> {
    let n = pixels.dim(0)?;
    let (mut top1, mut top5) = (0usize, 0usize);
    let mut start = 0;
    while start < n {
        let len = chunk.min(n - start);
        let chunk = pixels.narrow(0, start, len)?;
        let emb = clip::ops::inference(|| model.encode_image(&chunk))?; // [n, E]
        let scores = emb.matmul(&classifier.t()?)?; // [n, C]
        let ranked = scores.arg_sort_last_dim(false)?; // [n, C], best first
        let k = 5.min(scores.dim(D::Minus1)?);
        let best: Vec<Vec<u32>> = ranked.narrow(1, 0, k)?.to_vec2()?;
        for (row, label) in best.iter().zip(&labels[start..start + len]) {
            top1 += (row[0] as usize == *label) as usize;
            top5 += row.iter().any(|&c| c as usize == *label) as usize;
        }
        start += len;
    }
    Ok((top1 as f64 / n as f64, top5 as f64 / n as f64))
}
