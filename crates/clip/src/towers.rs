//! The two towers a model config can name, each with its projection head into the shared
//! space: the image tower is CLIP's ViT or a pretrained DINOv2; the text tower is CLIP's
//! transformer or a pretrained BERT. Either pretrained tower may sit beside either of ours.

use candle_core::{DType, Result, Tensor};
use candle_nn::{Module, VarBuilder};

use crate::bert::Bert;
use crate::config::{ProjType, TextCfg, TextKind, VisionCfg, VisionKind};
use crate::dinov2::Dinov2;
use crate::heads::ProjectionHead;
use crate::nn::Activation;
use crate::text::TextTransformer;
use crate::transform::{CLIP_MEAN, CLIP_STD};
use crate::vision::VisionTransformer;

/// DINOv2 under its projection head. Pixels arrive normalised as CLIP's are; the tower turns
/// them into its own normalisation (ImageNet's) first, x·(σ_clip/σ) + (μ_clip − μ)/σ per
/// channel, so one data pipeline serves every tower.
#[derive(Debug, Clone)]
pub struct DinoTower {
    pub trunk: Dinov2,
    pub head: ProjectionHead,
    /// `[1, 3, 1, 1]` each.
    scale: Tensor,
    shift: Tensor,
}

impl DinoTower {
    /// `vb` rooted at `visual`.
    fn new(vb: VarBuilder, cfg: &VisionCfg, embed_dim: usize) -> Result<Self> {
        let dcfg = cfg.dinov2();
        let trunk = Dinov2::new(vb.pp("trunk"), &dcfg)?;
        let (m, s) = (dcfg.image_mean, dcfg.image_std);
        let scale: Vec<f32> = (0..3).map(|c| CLIP_STD[c] / s[c]).collect();
        let shift: Vec<f32> = (0..3).map(|c| (CLIP_MEAN[c] - m[c]) / s[c]).collect();
        let dev = vb.device();
        Ok(Self {
            trunk,
            head: ProjectionHead::new((vb.clone(), "proj"), vb.pp("head"), &cfg.head(embed_dim))?,
            scale: Tensor::from_vec(scale, (1, 3, 1, 1), dev)?.to_dtype(vb.dtype())?,
            shift: Tensor::from_vec(shift, (1, 3, 1, 1), dev)?.to_dtype(vb.dtype())?,
        })
    }

    fn pooled(&self, pixels: &Tensor) -> Result<Tensor> {
        let own = pixels
            .broadcast_mul(&self.scale)?
            .broadcast_add(&self.shift)?; // [B, 3, H, W]
        self.trunk.pooled(&own)
    }
}

/// BERT under its projection head. Ids arrive padded with 0 (`[PAD]`), which gives the mask.
#[derive(Debug, Clone)]
pub struct BertTower {
    pub trunk: Bert,
    pub head: ProjectionHead,
}

impl BertTower {
    /// `vb` is the model root: the trunk at `text.transformer`, the head as our text tower's.
    fn new(vb: VarBuilder, cfg: &TextCfg, embed_dim: usize) -> Result<Self> {
        Ok(Self {
            trunk: Bert::new(vb.pp("text.transformer"), &cfg.bert())?,
            head: ProjectionHead::new(
                (vb.clone(), "text_projection"),
                vb.pp("text_head"),
                &cfg.head(embed_dim),
            )?,
        })
    }

    /// ids `[B, T]` (u32, 0 = padding) → `[B, W]`; columns that are padding in every row are
    /// cut first (they change nothing: padding is masked).
    fn pooled(&self, ids: &Tensor) -> Result<Tensor> {
        let mask = ids.ne(0u32)?.to_dtype(DType::U32)?; // [B, T]
        let lens = mask.sum(1)?.to_vec1::<u32>()?;
        let t = lens.iter().copied().max().unwrap_or(1).max(1) as usize;
        let (ids, mask) = (ids.narrow(1, 0, t)?, mask.narrow(1, 0, t)?);
        self.trunk.pooled(&ids, &mask)
    }
}

/// The image tower.
#[derive(Debug, Clone)]
pub enum ImageTower {
    Vit(VisionTransformer),
    Dinov2(DinoTower),
}

impl ImageTower {
    /// `vb` rooted at `visual`.
    pub fn new(vb: VarBuilder, cfg: &VisionCfg, embed_dim: usize, act: Activation) -> Result<Self> {
        Ok(match cfg.kind {
            VisionKind::Vit => Self::Vit(VisionTransformer::new(vb, cfg, embed_dim, act)?),
            VisionKind::Dinov2 => Self::Dinov2(DinoTower::new(vb, cfg, embed_dim)?),
        })
    }

    /// The pooled, pre-projection feature: pixels `[B, 3, H, W]` (CLIP's normalisation) →
    /// `[B, width]` (what a linear probe reads, and what a feature cache keeps).
    pub fn pooled(&self, pixels: &Tensor) -> Result<Tensor> {
        match self {
            Self::Vit(v) => v.pooled(pixels),
            Self::Dinov2(d) => d.pooled(pixels),
        }
    }

    pub fn head(&self) -> &ProjectionHead {
        match self {
            Self::Vit(v) => &v.head,
            Self::Dinov2(d) => &d.head,
        }
    }

    /// Pixels `[B, 3, H, W]` → unnormalised image features `[B, E]`.
    pub fn forward(&self, pixels: &Tensor) -> Result<Tensor> {
        self.head().forward(&self.pooled(pixels)?)
    }

    pub fn proj_type(&self) -> ProjType {
        self.head().kind()
    }

    /// CLIP's ViT, when the tower is one.
    pub fn vit(&self) -> Option<&VisionTransformer> {
        match self {
            Self::Vit(v) => Some(v),
            Self::Dinov2(_) => None,
        }
    }
}

/// The text tower.
#[derive(Debug, Clone)]
pub enum TextTower {
    Clip(TextTransformer),
    Bert(BertTower),
}

impl TextTower {
    /// `vb` is the model root (open_clip keeps its text tower's keys there).
    pub fn new(vb: VarBuilder, cfg: &TextCfg, embed_dim: usize, act: Activation) -> Result<Self> {
        Ok(match cfg.kind {
            TextKind::Clip => Self::Clip(TextTransformer::new(vb, cfg, embed_dim, act)?),
            TextKind::Bert => Self::Bert(BertTower::new(vb, cfg, embed_dim)?),
        })
    }

    /// ids `[B, T]` (u32) → the pooled, pre-projection feature `[B, width]`.
    pub fn pooled(&self, ids: &Tensor) -> Result<Tensor> {
        match self {
            Self::Clip(t) => t.pooled(ids),
            Self::Bert(b) => b.pooled(ids),
        }
    }

    pub fn head(&self) -> &ProjectionHead {
        match self {
            Self::Clip(t) => &t.head,
            Self::Bert(b) => &b.head,
        }
    }

    /// ids `[B, T]` → unnormalised text features `[B, E]`.
    pub fn forward(&self, ids: &Tensor) -> Result<Tensor> {
        self.head().forward(&self.pooled(ids)?)
    }
}
