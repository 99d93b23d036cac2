//! The checks a model config must pass before anything is built from it: every impossible
//! shape named by its JSON key.

use super::{ClipConfig, ProjType, TextKind, VisionKind};
use crate::error::{ClipError, Result};

impl ClipConfig {
    /// Check that the shapes are possible; the error names `origin` and the key.
    pub fn validate(&self, origin: &str) -> Result<()> {
        match self.shape_problem() {
            None => Ok(()),
            Some(msg) => Err(ClipError::Config {
                origin: origin.to_string(),
                msg,
            }),
        }
    }

    /// The first impossible shape, named by its key.
    fn shape_problem(&self) -> Option<String> {
        let v = &self.vision_cfg;
        let t = &self.text_cfg;
        let positive = [
            ("embed_dim", self.embed_dim),
            ("vision_cfg.image_size", v.image_size),
            ("vision_cfg.patch_size", v.patch_size),
            ("vision_cfg.width", v.width),
            ("vision_cfg.layers", v.layers),
            ("vision_cfg.head_width", v.head_width),
            ("text_cfg.context_length", t.context_length),
            ("text_cfg.vocab_size", t.vocab_size),
            ("text_cfg.width", t.width),
            ("text_cfg.heads", t.heads),
            ("text_cfg.layers", t.layers),
            ("vision_cfg.proj_layers", v.proj_layers),
            ("text_cfg.proj_layers", t.proj_layers),
        ];
        for (key, value) in positive {
            if value == 0 {
                return Some(format!("{key} must be positive, got 0"));
            }
        }
        if !v.image_size.is_multiple_of(v.patch_size) {
            return Some(format!(
                "vision_cfg.image_size {} is not divisible by vision_cfg.patch_size {}",
                v.image_size, v.patch_size
            ));
        }
        if !v.width.is_multiple_of(v.head_width) {
            return Some(format!(
                "vision_cfg.width {} is not divisible by vision_cfg.head_width {}",
                v.width, v.head_width
            ));
        }
        if !t.width.is_multiple_of(t.heads) {
            return Some(format!(
                "text_cfg.width {} is not divisible by text_cfg.heads {}",
                t.width, t.heads
            ));
        }
        for (key, kind, width) in [
            ("vision_cfg", v.proj_type, v.width),
            ("text_cfg", t.proj_type, t.width),
        ] {
            if kind == ProjType::None && width != self.embed_dim {
                return Some(format!(
                    "{key}.proj_type \"none\" needs {key}.width ({width}) equal to embed_dim ({})",
                    self.embed_dim
                ));
            }
        }
        if t.context_length < 3 {
            return Some(format!(
                "text_cfg.context_length must be at least 3, got {}",
                t.context_length
            ));
        }
        for (key, r) in [
            ("vision_cfg.mlp_ratio", v.mlp_ratio),
            ("text_cfg.mlp_ratio", t.mlp_ratio),
        ] {
            if !(r.is_finite() && r > 0.0) {
                return Some(format!("{key} must be a positive number, got {r}"));
            }
        }
        if v.kind != VisionKind::Vit && v.pretrained.is_none() {
            return Some("vision_cfg.kind dinov2 needs vision_cfg.pretrained (a fetched model: `clipforge model fetch dinov2-s14`)".into());
        }
        if t.kind != TextKind::Clip && t.pretrained.is_none() {
            return Some("text_cfg.kind bert needs text_cfg.pretrained (a fetched model: `clipforge model fetch minilm-l6`)".into());
        }
        if t.kind == TextKind::Bert && t.context_length > t.bert().max_position_embeddings {
            return Some(format!(
                "text_cfg.context_length {} is more than the {} positions of a bert tower",
                t.context_length,
                t.bert().max_position_embeddings
            ));
        }
        for (key, h) in [
            ("vision_cfg.proj_hidden", v.proj_hidden),
            ("text_cfg.proj_hidden", t.proj_hidden),
        ] {
            if h == Some(0) {
                return Some(format!("{key} must be positive, got 0"));
            }
        }
        None
    }
}
