//! The image tower: OpenAI CLIP's `VisionTransformer` (open_clip `transformer.py`): bias-free
//! patch embedding, class token, positional embedding, `ln_pre`, blocks, `ln_post` on the class
//! token, projection.

use candle_core::{Result, Tensor};
use candle_nn::{Init, Module, VarBuilder};

use crate::config::{ProjType, VisionCfg, LN_EPS};
use crate::heads::ProjectionHead;
use crate::nn::{Activation, LayerNorm};
use crate::transformer::Transformer;

#[derive(Debug, Clone)]
pub struct VisionTransformer {
    /// `visual.conv1.weight` `[W, 3, P, P]`; applied as a matmul over flattened patches.
    pub conv1: Tensor,
    pub class_embedding: Tensor,
    pub positional_embedding: Tensor,
    pub ln_pre: LayerNorm,
    pub transformer: Transformer,
    pub ln_post: LayerNorm,
    pub head: ProjectionHead,
    pub patch_size: usize,
    pub width: usize,
}

impl VisionTransformer {
    /// `vb` is rooted at `visual`.
    pub fn new(vb: VarBuilder, cfg: &VisionCfg, embed_dim: usize, act: Activation) -> Result<Self> {
        let (w, p) = (cfg.width, cfg.patch_size);
        let tokens = cfg.grid() * cfg.grid() + 1;
        Ok(Self {
            conv1: vb.get_with_hints((w, 3, p, p), "conv1.weight", Init::Const(0.))?,
            class_embedding: vb.get_with_hints(w, "class_embedding", Init::Const(0.))?,
            positional_embedding: vb.get_with_hints(
                (tokens, w),
                "positional_embedding",
                Init::Const(0.),
            )?,
            ln_pre: LayerNorm::new(vb.pp("ln_pre"), w, LN_EPS)?,
            transformer: Transformer::new(vb.pp("transformer"), &cfg.block(act), cfg.layers)?,
            ln_post: LayerNorm::new(vb.pp("ln_post"), w, LN_EPS)?,
            head: ProjectionHead::new((vb.clone(), "proj"), vb.pp("head"), &cfg.head(embed_dim))?,
            patch_size: p,
            width: w,
        })
    }

    /// The pooled, pre-projection feature: pixels `[B, 3, H, W]` → `[B, width]`
    /// (what a linear probe reads).
    pub fn pooled(&self, pixels: &Tensor) -> Result<Tensor> {
        let (b, c, hgt, wid) = pixels.dims4()?;
        let p = self.patch_size;
        let (gh, gw) = (hgt / p, wid / p);
        // A stride-P convolution without bias is a matmul over flattened patches.
        let patches = pixels
            .reshape((b, c, gh, p, gw, p))? // [B, 3, gh, P, gw, P]
            .permute((0, 2, 4, 1, 3, 5))? // [B, gh, gw, 3, P, P]
            .reshape((b * gh * gw, c * p * p))?; // [B·G, 3·P·P]
        let kernel = self.conv1.reshape((self.width, c * p * p))?; // [W, 3·P·P]
        let x = patches
            .matmul(&kernel.t()?)?
            .reshape((b, gh * gw, self.width))?; // [B, G, W]
        let cls = self
            .class_embedding
            .reshape((1, 1, self.width))?
            .broadcast_as((b, 1, self.width))?; // [B, 1, W]
        let x = Tensor::cat(&[&cls, &x], 1)?; // [B, G+1, W]
        let x = x.broadcast_add(&self.positional_embedding)?; // [B, G+1, W]
        let x = self.ln_pre.forward(&x)?;
        let cls = self.transformer.forward_pooled(&x, &vec![0; b])?; // [B, W], class token
        self.ln_post.forward(&cls)
    }

    /// Pixels `[B, 3, H, W]` → unnormalised image features `[B, E]`.
    pub fn forward(&self, pixels: &Tensor) -> Result<Tensor> {
        self.head.forward(&self.pooled(pixels)?)
    }

    pub fn proj_type(&self) -> ProjType {
        self.head.kind()
    }
}
