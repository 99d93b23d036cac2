//! The text tower: token and positional embeddings, causal transformer, `ln_final`, the feature
//! at the end-of-text token (argmax of ids, as OpenAI's `encode_text`), projection.

use candle_core::{DType, Result, Tensor, D};
use candle_nn::{Init, Module, VarBuilder};

use crate::config::{TextCfg, LN_EPS};
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
            transformer: Transformer::new(vb.pp("transformer"), &cfg.block(act), cfg.layers)?,
            ln_final: LayerNorm::new(vb.pp("ln_final"), w, LN_EPS)?,
            head: ProjectionHead::new(
                (vb.clone(), "text_projection"),
                vb.pp("text_head"),
                &cfg.head(embed_dim),
            )?,
            width: w,
        })
    }

    /// The pooled, pre-projection feature: ids `[B, T]` (u32) → `[B, width]`.
    ///
    /// Under the causal mask no position reads a later one, so the tokens after a caption's
    /// end-of-text (padding) reach no feature that is read. The tower skips them: captions are
    /// encoded in at most two groups by length ([`length_groups`]), each cut after its own last
    /// end-of-text, instead of every caption carried to the full context through every layer.
    /// Same values and gradients as the full computation (open_clip's), up to rounding.
    pub fn pooled(&self, ids: &Tensor) -> Result<Tensor> {
        let (b, _) = ids.dims2()?; // [B, T]

        // End-of-text has the highest id: the feature is read at position argmax(ids[b]).
        let eot: Vec<usize> = ids
            .argmax(D::Minus1)?
            .to_dtype(DType::U32)?
            .to_vec1::<u32>()?
            .into_iter()
            .map(|i| i as usize)
            .collect(); // [B]
        let groups = length_groups(&eot);
        let x = if groups.len() == 1 {
            self.pooled_cut(ids, &eot)? // [B, W]
        } else {
            let dev = ids.device();
            let mut parts = Vec::with_capacity(groups.len());
            for g in &groups {
                let rows = Tensor::from_vec(g.iter().map(|&i| i as u32).collect(), g.len(), dev)?;
                let e: Vec<usize> = g.iter().map(|&i| eot[i]).collect();
                parts.push(self.pooled_cut(&ids.index_select(&rows, 0)?, &e)?); // [n_g, W]
            }
            let mut back = vec![0u32; b]; // where each caption landed in the groups' order
            for (at, &i) in groups.iter().flatten().enumerate() {
                back[i] = at as u32;
            }
            Tensor::cat(&parts, 0)?.index_select(&Tensor::from_vec(back, b, dev)?, 0)?
            // [B, W]
        };
        self.ln_final.forward(&x) // per row, so the same as ln_final before the gather
    }

    /// ids `[n, T]` with end-of-text positions `eot` → the pooled rows `[n, W]` before
    /// `ln_final`, the tokens after the last end-of-text dropped.
    fn pooled_cut(&self, ids: &Tensor, eot: &[usize]) -> Result<Tensor> {
        let (n, t) = ids.dims2()?;
        let t = eot.iter().max().map_or(t, |&e| e + 1);
        let ids = ids.narrow(1, 0, t)?; // [n, T']
        let x = self
            .token_embedding
            .embedding(&ids.flatten_all()?)?
            .reshape((n, t, self.width))?; // [n, T', W]
        let pos = self.positional_embedding.narrow(0, 0, t)?; // [T', W]
        let x = x.broadcast_add(&pos)?; // [n, T', W]
        self.transformer.forward_pooled(&x, eot) // [n, W]
    }

    /// ids `[B, T]` → unnormalised text features `[B, E]`.
    pub fn forward(&self, ids: &Tensor) -> Result<Tensor> {
        self.head.forward(&self.pooled(ids)?)
    }
}

/// The captions (indices into the batch), by end-of-text position, in one group or two: two when
/// cutting each group after its own last end-of-text saves at least a fifth of the rows the
/// tower carries. The split point is the one that carries the fewest rows.
fn length_groups(eot: &[usize]) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..eot.len()).collect();
    order.sort_by_key(|&i| eot[i]);
    let len = |i: usize| eot[order[i]] + 1; // tokens kept for the i-th shortest
    let n = order.len();
    if n < 2 {
        return vec![order];
    }
    let whole = n * len(n - 1);
    // Rows carried with the first k captions (sorted) cut at their longest, the rest at theirs.
    let (k, rows) = (1..n)
        .map(|k| (k, k * len(k - 1) + (n - k) * len(n - 1)))
        .min_by_key(|&(_, r)| r)
        .expect("n ≥ 2");
    if rows * 5 > whole * 4 {
        return vec![order];
    }
    let rest = order.split_off(k);
    vec![order, rest]
}

#[cfg(test)]
mod tests {
    use super::length_groups;

    #[test]
    fn captions_split_by_length_only_when_it_saves_a_fifth() {
        // Equal lengths: one group.
        assert_eq!(length_groups(&[5, 5, 5, 5]), vec![vec![0, 1, 2, 3]]);
        // Two short, two long: 4 × 20 rows whole, 2 × 6 + 2 × 20 split.
        assert_eq!(length_groups(&[19, 5, 4, 18]), vec![vec![2, 1], vec![3, 0]]);
        // One caption a little longer than the rest: saves under a fifth, one group.
        assert_eq!(length_groups(&[9, 9, 9, 11]).len(), 1);
        assert_eq!(length_groups(&[3]), vec![vec![0]]);
        assert_eq!(length_groups(&[]), vec![Vec::<usize>::new()]);
    }
}
