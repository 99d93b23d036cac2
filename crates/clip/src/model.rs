//! The CLIP model: an image tower and a text tower into one embedding space, and the learned
//! temperature. Returns normalised embeddings and the raw logit scale; the loss lives in `loss`.

use candle_core::{DType, Device, Result, Tensor};
use candle_nn::{Init, VarBuilder, VarMap};

use crate::config::ClipConfig;
use crate::nn::l2_normalize;
use crate::towers::{ImageTower, TextTower};

/// ln(1/0.07): the initial temperature parameter (paper §2.5).
pub const LOGIT_SCALE_INIT: f64 = 2.659_260_036_932_778_4;
/// ln(100): the largest allowed logit scale parameter.
pub const LOGIT_SCALE_MAX: f64 = 4.605_170_185_988_092;

#[derive(Debug, Clone)]
pub struct Clip {
    pub visual: ImageTower,
    pub text: TextTower,
    /// The temperature parameter t; logits are multiplied by exp(t).
    pub logit_scale: Tensor,
    /// SigLIP's learned logit bias b (scalar), when the config asks for one.
    pub logit_bias: Option<Tensor>,
    pub config: ClipConfig,
}

/// What a forward pass returns: L2-normalised embeddings and the raw (log) logit scale.
#[derive(Debug, Clone)]
pub struct ClipOutput {
    /// `[N, E]`, unit rows.
    pub image_embeds: Tensor,
    /// `[N, E]`, unit rows.
    pub text_embeds: Tensor,
    /// Scalar t (the loss multiplies by exp(t)).
    pub logit_scale: Tensor,
}

impl Clip {
    /// Build on a VarBuilder whose paths are open_clip's state-dict keys.
    pub fn new(vb: VarBuilder, cfg: &ClipConfig) -> Result<Self> {
        let act = cfg.activation();
        Ok(Self {
            visual: ImageTower::new(vb.pp("visual"), &cfg.vision_cfg, cfg.embed_dim, act)?,
            text: TextTower::new(vb.clone(), &cfg.text_cfg, cfg.embed_dim, act)?,
            logit_scale: vb.get_with_hints(
                (),
                "logit_scale",
                Init::Const(cfg.init_logit_scale.unwrap_or(LOGIT_SCALE_INIT)),
            )?,
            logit_bias: cfg
                .init_logit_bias
                .map(|b| vb.get_with_hints((), "logit_bias", Init::Const(b)))
                .transpose()?,
            config: cfg.clone(),
        })
    }

    /// A model whose parameters live in a fresh `VarMap` (trainable), all zero until
    /// initialised (`init::init_parameters`) or loaded (`weights::load_into`).
    pub fn with_varmap(cfg: &ClipConfig, device: &Device) -> Result<(Self, VarMap)> {
        Self::with_varmap_dtype(cfg, device, DType::F32)
    }

    /// As [`Clip::with_varmap`], with parameters of `dtype` (bf16 for encoding on a GPU). A
    /// model larger than the memory available is an error ([`crate::memory::check_fits`]).
    pub fn with_varmap_dtype(
        cfg: &ClipConfig,
        device: &Device,
        dtype: DType,
    ) -> Result<(Self, VarMap)> {
        crate::memory::check_fits(cfg, "model", dtype.size_in_bytes() as f64)
            .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, dtype, device);
        let model = Self::new(vb, cfg)?;
        Ok((model, varmap))
    }

    /// Pixels `[N, 3, H, W]` → unit image embeddings `[N, E]`.
    pub fn encode_image(&self, pixels: &Tensor) -> Result<Tensor> {
        let pixels = pixels.to_dtype(self.logit_scale.dtype())?; // the parameters' dtype
        l2_normalize(&self.visual.forward(&pixels)?)
    }

    /// Token ids `[N, T]` (u32) → unit text embeddings `[N, E]`.
    pub fn encode_text(&self, ids: &Tensor) -> Result<Tensor> {
        l2_normalize(&self.text.forward(ids)?)
    }

    pub fn forward(&self, pixels: &Tensor, ids: &Tensor) -> Result<ClipOutput> {
        Ok(ClipOutput {
            image_embeds: self.encode_image(pixels)?,
            text_embeds: self.encode_text(ids)?,
            logit_scale: self.logit_scale.clone(),
        })
    }
}

/// Clamp the temperature parameter to [0, ln 100] in place, as open_clip does after every
/// optimiser step. `varmap` must hold `logit_scale`.
pub fn clamp_logit_scale(varmap: &VarMap) -> Result<()> {
    let data = varmap.data().lock().expect("varmap lock");
    if let Some(var) = data.get("logit_scale") {
        let clamped = var.as_tensor().clamp(0f64, LOGIT_SCALE_MAX)?;
        var.set(&clamped)?;
    }
    Ok(())
}
