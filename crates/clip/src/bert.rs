//! A pretrained BERT text encoder (Hugging Face `BertModel`, e.g. all-MiniLM-L6-v2): word,
//! position and token-type embeddings, post-LayerNorm encoder layers with padding masked in
//! attention, and the tokens' mean (padding left out) or the `[CLS]` row as the pooled feature.
//! Weight paths are Hugging Face's (`embeddings.*`, `encoder.layer.{i}.*`).
//!
//! Shapes: B texts, T tokens, W hidden width, H heads, Dh = W/H, M the intermediate width.

use candle_core::{DType, Result, Tensor, D};
use candle_nn::{Init, Module, VarBuilder};
use serde::{Deserialize, Serialize};

use crate::nn::{LayerNorm, Linear};
use crate::ops::{self, Activation};

/// How a sentence's tokens become one feature.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Pooling {
    /// The mean of the token rows, padding left out (sentence-transformers' default).
    #[default]
    Mean,
    /// The `[CLS]` row.
    Cls,
}

/// The fields of a Hugging Face BERT `config.json` the encoder reads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BertCfg {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    pub max_position_embeddings: usize,
    pub type_vocab_size: usize,
    pub layer_norm_eps: f64,
    #[serde(default)]
    pub pooling: Pooling,
}

/// One encoder layer: self-attention, then the feed-forward block, each followed by a residual
/// add and LayerNorm.
#[derive(Debug, Clone)]
struct Layer {
    query: Linear,
    key: Linear,
    value: Linear,
    attn_out: Linear,
    attn_norm: LayerNorm,
    intermediate: Linear,
    output: Linear,
    out_norm: LayerNorm,
    heads: usize,
}

impl Layer {
    fn new(vb: VarBuilder, c: &BertCfg) -> Result<Self> {
        let (w, m, eps) = (c.hidden_size, c.intermediate_size, c.layer_norm_eps);
        let (att, out) = (vb.pp("attention"), vb.pp("output"));
        Ok(Self {
            query: Linear::new(att.pp("self.query"), w, w, true)?,
            key: Linear::new(att.pp("self.key"), w, w, true)?,
            value: Linear::new(att.pp("self.value"), w, w, true)?,
            attn_out: Linear::new(att.pp("output.dense"), w, w, true)?,
            attn_norm: LayerNorm::new(att.pp("output.LayerNorm"), w, eps)?,
            intermediate: Linear::new(vb.pp("intermediate.dense"), w, m, true)?,
            output: Linear::new(out.pp("dense"), m, w, true)?,
            out_norm: LayerNorm::new(out.pp("LayerNorm"), w, eps)?,
            heads: c.num_attention_heads,
        })
    }

    /// x `[B, T, W]`, `bias` `[B, 1, 1, T]` (0 for tokens, a large negative for padding) →
    /// `[B, T, W]`.
    fn forward(&self, x: &Tensor, bias: &Tensor) -> Result<Tensor> {
        let (b, t, w) = x.dims3()?;
        let (h, dh) = (self.heads, w / self.heads);
        let split = |l: &Linear| -> Result<Tensor> {
            l.forward(x)?
                .reshape((b, t, h, dh))?
                .transpose(1, 2)?
                .contiguous() // [B, H, T, Dh]
        };
        let (q, k, v) = (split(&self.query)?, split(&self.key)?, split(&self.value)?);
        let scores = (q.matmul(&k.t()?)? * (dh as f64).powf(-0.5))?; // [B, H, T, T]
        let probs = ops::softmax_last_dim(&scores.broadcast_add(bias)?)?;
        let ctx = probs.matmul(&v)?.transpose(1, 2)?.reshape((b, t, w))?; // [B, T, W]
        let x = self
            .attn_norm
            .forward(&(self.attn_out.forward(&ctx)? + x)?)?;
        let hid = Activation::Gelu.forward(&self.intermediate.forward(&x)?)?; // [B, T, M]
        self.out_norm.forward(&(self.output.forward(&hid)? + x)?)
    }
}

/// The encoder, its pooling included.
#[derive(Debug, Clone)]
pub struct Bert {
    word: Tensor,
    position: Tensor,
    token_type: Tensor,
    norm: LayerNorm,
    layers: Vec<Layer>,
    pub cfg: BertCfg,
}

impl Bert {
    /// `vb` rooted where Hugging Face's `BertModel` keys start (`embeddings.…`).
    pub fn new(vb: VarBuilder, c: &BertCfg) -> Result<Self> {
        let (e, w) = (vb.pp("embeddings"), c.hidden_size);
        let get = |name: &str, rows: usize| {
            e.get_with_hints((rows, w), &format!("{name}.weight"), Init::Const(0.))
        };
        let layers = (0..c.num_hidden_layers)
            .map(|i| Layer::new(vb.pp(format!("encoder.layer.{i}")), c))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            word: get("word_embeddings", c.vocab_size)?,
            position: get("position_embeddings", c.max_position_embeddings)?,
            token_type: get("token_type_embeddings", c.type_vocab_size)?,
            norm: LayerNorm::new(e.pp("LayerNorm"), w, c.layer_norm_eps)?,
            layers,
            cfg: c.clone(),
        })
    }

    /// Token ids `[B, T]` (u32) and the attention mask `[B, T]` (1 token, 0 padding) → the last
    /// layer's rows `[B, T, W]`.
    pub fn hidden(&self, ids: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let (b, t) = ids.dims2()?;
        if t > self.cfg.max_position_embeddings {
            candle_core::bail!(
                "bert: {t} tokens, more than its {} positions",
                self.cfg.max_position_embeddings
            );
        }
        let w = self.cfg.hidden_size;
        let words = self
            .word
            .embedding(&ids.flatten_all()?)?
            .reshape((b, t, w))?;
        let pos = self.position.narrow(0, 0, t)?; // [T, W]
        let kind = self.token_type.narrow(0, 0, 1)?; // [1, W], every token of segment 0
        let x = words.broadcast_add(&pos)?.broadcast_add(&kind)?; // [B, T, W]
        let mut x = self.norm.forward(&x)?;
        let mask = mask.to_dtype(DType::F32)?;
        // 0 where a token is, −1e9 where padding is: exp() of it is 0 after the row's max.
        let bias = ((mask.ones_like()? - &mask)? * -1e9)?.reshape((b, 1, 1, t))?;
        for layer in &self.layers {
            x = layer.forward(&x, &bias)?;
        }
        Ok(x)
    }

    /// The pooled feature `[B, W]`: the tokens' mean (padding left out) or the `[CLS]` row.
    pub fn pooled(&self, ids: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let x = self.hidden(ids, mask)?; // [B, T, W]
        match self.cfg.pooling {
            Pooling::Cls => x.narrow(1, 0, 1)?.squeeze(1),
            Pooling::Mean => {
                let m = mask.to_dtype(DType::F32)?.unsqueeze(D::Minus1)?; // [B, T, 1]
                let sum = x.broadcast_mul(&m)?.sum(1)?; // [B, W]
                let count = m.sum(1)?.clamp(1e-9, f64::INFINITY)?; // [B, 1]
                sum.broadcast_div(&count)
            }
        }
    }
}
