//! The pre-LayerNorm transformer shared by both towers: open_clip's `ResidualAttentionBlock`
//! and `Transformer` (`src/open_clip/transformer.py`), with PyTorch `nn.MultiheadAttention`'s
//! packed `in_proj_weight` `[3W, W]`. Each block runs as one op ([`ops::residual_block`]): fused
//! on the CPU in f32, composed of candle's ops elsewhere.

use candle_core::{Result, Tensor};
use candle_nn::{Init, Module, VarBuilder};

use crate::nn::{LayerNorm, Linear};
use crate::ops::{self, BlockCfg};

/// Multi-head self-attention's weights, packed q/k/v projection (`attn.in_proj_*`,
/// `attn.out_proj.*`).
#[derive(Debug, Clone)]
pub struct Attention {
    pub in_proj_weight: Tensor,
    pub in_proj_bias: Tensor,
    pub out_proj: Linear,
}

impl Attention {
    pub fn new(vb: VarBuilder, cfg: &BlockCfg) -> Result<Self> {
        let w = cfg.width;
        Ok(Self {
            in_proj_weight: vb.get_with_hints((3 * w, w), "in_proj_weight", Init::Const(0.))?,
            in_proj_bias: vb.get_with_hints(3 * w, "in_proj_bias", Init::Const(0.))?,
            out_proj: Linear::new(vb.pp("out_proj"), w, w, true)?,
        })
    }
}

/// The MLP's weights: `c_fc` → activation → `c_proj`.
#[derive(Debug, Clone)]
pub struct Mlp {
    pub c_fc: Linear,
    pub c_proj: Linear,
}

impl Mlp {
    pub fn new(vb: VarBuilder, cfg: &BlockCfg) -> Result<Self> {
        Ok(Self {
            c_fc: Linear::new(vb.pp("c_fc"), cfg.width, cfg.hidden, true)?,
            c_proj: Linear::new(vb.pp("c_proj"), cfg.hidden, cfg.width, true)?,
        })
    }
}

/// x + attn(ln_1(x)); x + mlp(ln_2(x)).
#[derive(Debug, Clone)]
pub struct ResidualAttentionBlock {
    pub ln_1: LayerNorm,
    pub attn: Attention,
    pub ln_2: LayerNorm,
    pub mlp: Mlp,
    pub cfg: BlockCfg,
}

impl ResidualAttentionBlock {
    pub fn new(vb: VarBuilder, cfg: &BlockCfg) -> Result<Self> {
        Ok(Self {
            ln_1: LayerNorm::new(vb.pp("ln_1"), cfg.width, cfg.eps as f64)?,
            attn: Attention::new(vb.pp("attn"), cfg)?,
            ln_2: LayerNorm::new(vb.pp("ln_2"), cfg.width, cfg.eps as f64)?,
            mlp: Mlp::new(vb.pp("mlp"), cfg)?,
            cfg: *cfg,
        })
    }

    /// `[B, T, W]` → `[B, W]`: row `pos[b]` of each element's output, computing only what
    /// those rows need ([`ops::residual_block_pooled`]).
    pub fn forward_pooled(&self, x: &Tensor, pos: &[usize]) -> Result<Tensor> {
        self.with_params(|p| ops::residual_block_pooled(x, p, &self.cfg, pos))
    }

    /// Calls `f` with the block's parameters in the block ops' terms.
    fn with_params(&self, f: impl FnOnce(&ops::BlockParams) -> Result<Tensor>) -> Result<Tensor> {
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
        f(&ops::BlockParams {
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
        })
    }
}

impl Module for ResidualAttentionBlock {
    /// `[B, T, W]` → `[B, T, W]`.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.with_params(|p| ops::residual_block(x, p, &self.cfg))
    }
}

/// A stack of blocks under `{prefix}.resblocks.{i}`.
#[derive(Debug, Clone)]
pub struct Transformer {
    pub resblocks: Vec<ResidualAttentionBlock>,
}

impl Transformer {
    pub fn new(vb: VarBuilder, cfg: &BlockCfg, layers: usize) -> Result<Self> {
        let vb = vb.pp("resblocks");
        let resblocks = (0..layers)
            .map(|i| ResidualAttentionBlock::new(vb.pp(i), cfg))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { resblocks })
    }

    /// `[B, T, W]` → `[B, W]`: row `pos[b]` of each element after the last block, the only
    /// rows a tower reads (class token, end-of-text token). The last block computes keys and
    /// values for every token and the rest for those rows only: the same values and gradients.
    pub fn forward_pooled(&self, x: &Tensor, pos: &[usize]) -> Result<Tensor> {
        let Some((last, rest)) = self.resblocks.split_last() else {
            return ops::gather_rows(x, pos);
        };
        last.forward_pooled(&Blocks(rest).forward(x)?, pos)
    }
}

/// A run of blocks applied in turn.
struct Blocks<'a>(&'a [ResidualAttentionBlock]);

impl Module for Blocks<'_> {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.0.iter().try_fold(x.clone(), |x, b| b.forward(&x))
    }
}

impl Module for Transformer {
    /// `[B, T, W]` → `[B, T, W]`.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Blocks(&self.resblocks).forward(x)
    }
}
