//! The pre-LayerNorm transformer shared by both towers: open_clip's `ResidualAttentionBlock`
//! and `Transformer` (`src/open_clip/transformer.py`), with PyTorch `nn.MultiheadAttention`'s
//! packed `in_proj_weight` `[3W, W]`.

use candle_core::{Result, Tensor};
use candle_nn::{Init, VarBuilder};

use crate::nn::{Activation, LayerNorm, Linear};
use crate::ops;

/// Multi-head self-attention with packed q/k/v projection (`attn.in_proj_*`, `attn.out_proj.*`).
#[derive(Debug, Clone)]
pub struct Attention {
    pub in_proj_weight: Tensor,
    pub in_proj_bias: Tensor,
    pub out_proj: Linear,
    pub heads: usize,
}

impl Attention {
    pub fn new(vb: VarBuilder, width: usize, heads: usize) -> Result<Self> {
        let in_proj_weight =
            vb.get_with_hints((3 * width, width), "in_proj_weight", Init::Const(0.))?;
        let in_proj_bias = vb.get_with_hints(3 * width, "in_proj_bias", Init::Const(0.))?;
        let out_proj = Linear::new(vb.pp("out_proj"), width, width, true)?;
        Ok(Self {
            in_proj_weight,
            in_proj_bias,
            out_proj,
            heads,
        })
    }

    /// x: `[B, T, W]` → `[B, T, W]`; `causal`: token i attends to tokens ≤ i only.
    pub fn forward(&self, x: &Tensor, causal: bool) -> Result<Tensor> {
        let (b, t, w) = x.dims3()?;
        let x2 = x.reshape((b * t, w))?; // [B·T, W]
        let qkv = ops::linear(&x2, &self.in_proj_weight, &self.in_proj_bias)?; // [B·T, 3W]
        let ctx = ops::attention(&qkv.reshape((b, t, 3 * w))?, self.heads, causal)?; // [B, T, W]
        self.out_proj.forward(&ctx)
    }
}

/// `c_fc` → activation → `c_proj`.
#[derive(Debug, Clone)]
pub struct Mlp {
    pub c_fc: Linear,
    pub c_proj: Linear,
    pub act: Activation,
}

impl Mlp {
    pub fn new(vb: VarBuilder, width: usize, hidden: usize, act: Activation) -> Result<Self> {
        Ok(Self {
            c_fc: Linear::new(vb.pp("c_fc"), width, hidden, true)?,
            c_proj: Linear::new(vb.pp("c_proj"), hidden, width, true)?,
            act,
        })
    }

    /// `[B, T, W]` → `[B, T, W]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let h = self.c_fc.forward(x)?; // [B, T, 4W]
        self.c_proj.forward(&self.act.forward(&h)?)
    }
}

/// x + attn(ln_1(x)); x + mlp(ln_2(x)).
#[derive(Debug, Clone)]
pub struct ResidualAttentionBlock {
    pub ln_1: LayerNorm,
    pub attn: Attention,
    pub ln_2: LayerNorm,
    pub mlp: Mlp,
}

impl ResidualAttentionBlock {
    pub fn new(
        vb: VarBuilder,
        width: usize,
        heads: usize,
        mlp_width: usize,
        act: Activation,
    ) -> Result<Self> {
        Ok(Self {
            ln_1: LayerNorm::new(vb.pp("ln_1"), width)?,
            attn: Attention::new(vb.pp("attn"), width, heads)?,
            ln_2: LayerNorm::new(vb.pp("ln_2"), width)?,
            mlp: Mlp::new(vb.pp("mlp"), width, mlp_width, act)?,
        })
    }

    /// `[B, T, W]` → `[B, T, W]`. On the CPU in f32, one fused op ([`ops::residual_block`]).
    pub fn forward(&self, x: &Tensor, causal: bool) -> Result<Tensor> {
        if ops::fused_ok(x) {
            return self.fused(causal, |p, cfg| ops::residual_block(x, p, cfg));
        }
        let x = (x + self.attn.forward(&self.ln_1.forward(x)?, causal)?)?;
        &x + self.mlp.forward(&self.ln_2.forward(&x)?)?
    }

    /// `[B, T, W]` → `[B, W]`: row `pos[b]` of each element's output. On the CPU in f32 one
    /// fused op that computes only what those rows need ([`ops::residual_block_pooled`]).
    pub fn forward_pooled(&self, x: &Tensor, causal: bool, pos: &[usize]) -> Result<Tensor> {
        if ops::fused_ok(x) {
            return self.fused(causal, |p, cfg| ops::residual_block_pooled(x, p, cfg, pos));
        }
        ops::gather_rows(&self.forward(x, causal)?, pos)
    }

    /// Calls `f` with the block's parameters and shape in the fused ops' terms.
    fn fused(
        &self,
        causal: bool,
        f: impl FnOnce(&ops::BlockParams, ops::BlockCfg) -> Result<Tensor>,
    ) -> Result<Tensor> {
        let bias = |l: &'_ Linear| -> Result<Tensor> {
            l.bias
                .clone()
                .ok_or_else(|| candle_core::Error::Msg("block linear without bias".into()))
        };
        let (out_b, fc_b, proj_b) = (
            bias(&self.attn.out_proj)?,
            bias(&self.mlp.c_fc)?,
            bias(&self.mlp.c_proj)?,
        );
        let p = ops::BlockParams {
            ln_1_weight: &self.ln_1.weight,
            ln_1_bias: &self.ln_1.bias,
            in_proj_weight: &self.attn.in_proj_weight,
            in_proj_bias: &self.attn.in_proj_bias,
            out_proj_weight: &self.attn.out_proj.weight,
            out_proj_bias: &out_b,
            ln_2_weight: &self.ln_2.weight,
            ln_2_bias: &self.ln_2.bias,
            c_fc_weight: &self.mlp.c_fc.weight,
            c_fc_bias: &fc_b,
            c_proj_weight: &self.mlp.c_proj.weight,
            c_proj_bias: &proj_b,
        };
        let cfg = ops::BlockCfg {
            width: self.ln_1.weight.dim(0)?,
            heads: self.attn.heads,
            hidden: self.mlp.c_fc.weight.dim(0)?,
            quick_gelu: self.mlp.act == Activation::QuickGelu,
            causal,
            eps: self.ln_1.eps as f32,
        };
        f(&p, cfg)
    }
}

/// A stack of blocks under `{prefix}.resblocks.{i}`.
#[derive(Debug, Clone)]
pub struct Transformer {
    pub resblocks: Vec<ResidualAttentionBlock>,
}

impl Transformer {
    pub fn new(
        vb: VarBuilder,
        width: usize,
        layers: usize,
        heads: usize,
        mlp_width: usize,
        act: Activation,
    ) -> Result<Self> {
        let vb = vb.pp("resblocks");
        let resblocks = (0..layers)
            .map(|i| ResidualAttentionBlock::new(vb.pp(i), width, heads, mlp_width, act))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { resblocks })
    }

    /// `[B, T, W]` → `[B, T, W]`.
    pub fn forward(&self, x: &Tensor, causal: bool) -> Result<Tensor> {
        let mut x = x.clone();
        for block in &self.resblocks {
            x = block.forward(&x, causal)?;
        }
        Ok(x)
    }

    /// `[B, T, W]` → `[B, W]`: row `pos[b]` of each element after the last block, the only
    /// rows a tower reads (class token, end-of-text token). The last block computes keys and
    /// values for every token and the rest for those rows only: the same values and gradients.
    pub fn forward_pooled(&self, x: &Tensor, causal: bool, pos: &[usize]) -> Result<Tensor> {
        let Some((last, rest)) = self.resblocks.split_last() else {
            return ops::gather_rows(x, pos);
        };
        let mut x = x.clone();
        for block in rest {
            x = block.forward(&x, causal)?;
        }
        last.forward_pooled(&x, causal, pos)
    }
}
