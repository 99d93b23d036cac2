//! The text tower: token and positional embeddings, causal transformer, `ln_final`, the feature
//! at the end-of-text token (argmax of ids, as OpenAI's `encode_text`), projection.

use candle_core::{DType, Result, Tensor, D};
use candle_nn::{Init, VarBuilder};

use crate::config::TextCfg;
use crate::heads::ProjectionHead;
use crate::nn::{Activation, LayerNorm};
use crate::transformer::Transformer;

#[derive(Debug, Clone)]
pub struct TextTransformer {
    pub token_embedding: Tensor,
    pub positional_embedding: Tensor,
    pub transformer: Transformer,
    pub ln_final: LayerNorm,
    pub head: ProjectionHead,
    pub width: usize,
}

impl TextTransformer {
    /// `vb` is the model root: open_clip keeps the text tower's keys at the top level.
    pub fn new(vb: VarBuilder, cfg: &TextCfg, embed_dim: usize, act: Activation) -> Result<Self> {
        let w = cfg.width;
        Ok(Self {
            token_embedding: vb.get_with_hints(
                (cfg.vocab_size, w),
                "token_embedding.weight",
                Init::Const(0.),
            )?,
            positional_embedding: vb.get_with_hints(
                (cfg.context_length, w),
                "positional_embedding",
                Init::Const(0.),
            )?,
            transformer: Transformer::new(
                vb.pp("transformer"),
                w,
                cfg.layers,
                cfg.heads,
                cfg.mlp_width(),
                act,
            )?,
            ln_final: LayerNorm::new(vb.pp("ln_final"), w)?,
            head: ProjectionHead::new(
                (vb.clone(), "text_projection"),
                vb.pp("text_head"),
                cfg.proj_type,
                w,
                embed_dim,
                cfg.proj_hidden,
                cfg.proj_layers,
            )?,
            width: w,
        })
    }

    /// The pooled, pre-projection feature: ids `[B, T]` (u32) → `[B, width]`.
    pub fn pooled(&self, ids: &Tensor) -> Result<Tensor> {
        let (b, t) = ids.dims2()?;
        // End-of-text has the highest id: the feature is read at position argmax(ids[b]).
        let eot: Vec<usize> = ids
            .argmax(D::Minus1)?
            .to_dtype(DType::U32)?
            .to_vec1::<u32>()?
            .into_iter()
            .map(|i| i as usize)
            .collect(); // [B]
                        // Under the causal mask no position reads a later one, so the tokens after the batch's
                        // last end-of-text (padding) cannot reach any feature that is read: they are dropped
                        // before the tower instead of carried through every layer. Same values, same gradients.
        let t = eot.iter().max().map_or(t, |&e| e + 1);
        let ids = ids.narrow(1, 0, t)?; // [B, T']
        let x = self
            .token_embedding
            .embedding(&ids.flatten_all()?)?
            .reshape((b, t, self.width))?; // [B, T', W]
        let pos = self.positional_embedding.narrow(0, 0, t)?; // [T', W]
        let x = x.broadcast_add(&pos)?; // [B, T', W]
        let x = self.transformer.forward_pooled(&x, true, &eot)?; // [B, W], causal
        self.ln_final.forward(&x) // per row, so the same as ln_final before the gather
    }

    /// ids `[B, T]` → unnormalised text features `[B, E]`.
    pub fn forward(&self, ids: &Tensor) -> Result<Tensor> {
        self.head.forward(&self.pooled(ids)?)
    }
}
