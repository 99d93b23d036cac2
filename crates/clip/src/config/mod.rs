//! Model configuration in open_clip's JSON format (`src/open_clip/model_configs/*.json`):
//! `embed_dim`, `vision_cfg`, `text_cfg`, `quick_gelu`, plus clipforge's projection-head choice.

use serde::{Deserialize, Serialize};
use std::path::Path;

use crate::bert::{BertCfg, Pooling};
use crate::dinov2::Dinov2Cfg;
use crate::error::{ClipError, Result};
use crate::ops::{Activation, BlockCfg};

mod validate;

/// Which encoder the image tower is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum VisionKind {
    /// CLIP's vision transformer, trained here (`visual.conv1`, `visual.transformer.*`).
    #[default]
    Vit,
    /// A pretrained DINOv2 ViT (`visual.trunk.*`, the hub's keys below it), named by
    /// `pretrained`; the shape fields describe it (width, layers, head_width, patch_size).
    Dinov2,
}

/// Which encoder the text tower is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum TextKind {
    /// CLIP's causal text transformer with OpenAI's BPE tokenizer, trained here.
    #[default]
    Clip,
    /// A pretrained BERT encoder (`text.transformer.*`, Hugging Face's keys below it) with its
    /// own WordPiece tokenizer, named by `pretrained`.
    Bert,
}

fn is_default<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

/// Which projection maps a tower's pooled feature into the shared embedding space.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ProjType {
    /// One matrix, no bias: the paper's choice (`visual.proj`, `text_projection`).
    #[default]
    Linear,
    /// `proj_layers` × (Linear → GELU), then a Linear to `embed_dim` (keys `visual.head.{i}`,
    /// `text_head.{i}`, numbered as a PyTorch `nn.Sequential`).
    Mlp,
    /// No head: the pooled feature is the embedding (the tower's width must equal
    /// `embed_dim`). The baseline the paper's §2.4 compares heads against.
    None,
}

fn default_head_width() -> usize {
    64
}
fn default_mlp_ratio() -> f64 {
    4.0
}
fn default_proj_layers() -> usize {
    1
}
fn default_context_length() -> usize {
    77
}
fn default_vocab_size() -> usize {
    49408
}
fn default_text_width() -> usize {
    512
}
fn default_text_heads() -> usize {
    8
}
fn default_text_layers() -> usize {
    12
}

/// open_clip's `CLIPVisionCfg`, the ViT subset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VisionCfg {
    #[serde(default, skip_serializing_if = "is_default")]
    pub kind: VisionKind,
    /// A fetched model (`clipforge model fetch NAME`, or a directory) whose weights start the
    /// tower when the model is initialised.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pretrained: Option<String>,
    /// `dinov2`: the image size its position grid was learnt at (default 518).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pretrained_image_size: Option<usize>,
    pub image_size: usize,
    pub patch_size: usize,
    pub width: usize,
    pub layers: usize,
    /// Width of one attention head; heads = width / head_width.
    #[serde(default = "default_head_width")]
    pub head_width: usize,
    #[serde(default = "default_mlp_ratio")]
    pub mlp_ratio: f64,
    #[serde(default)]
    pub proj_type: ProjType,
    /// Hidden width of an `mlp` head (default: the tower's width).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proj_hidden: Option<usize>,
    /// Number of hidden (Linear → GELU) layers of an `mlp` head.
    #[serde(default = "default_proj_layers")]
    pub proj_layers: usize,
}

/// open_clip's `CLIPTextCfg`, the native-transformer subset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TextCfg {
    #[serde(default, skip_serializing_if = "is_default")]
    pub kind: TextKind,
    /// A fetched model (`clipforge model fetch NAME`, or a directory): its weights start the
    /// tower, its `tokenizer.json` tokenizes (`bert`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pretrained: Option<String>,
    /// `bert`: the pooled feature (default `mean`, as sentence-transformers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pooling: Option<Pooling>,
    /// `bert`: rows of its position table (default 512).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_positions: Option<usize>,
    #[serde(default = "default_context_length")]
    pub context_length: usize,
    #[serde(default = "default_vocab_size")]
    pub vocab_size: usize,
    #[serde(default = "default_text_width")]
    pub width: usize,
    #[serde(default = "default_text_heads")]
    pub heads: usize,
    #[serde(default = "default_text_layers")]
    pub layers: usize,
    #[serde(default = "default_mlp_ratio")]
    pub mlp_ratio: f64,
    #[serde(default)]
    pub proj_type: ProjType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proj_hidden: Option<usize>,
    #[serde(default = "default_proj_layers")]
    pub proj_layers: usize,
}

/// A whole CLIP model: two towers into one `embed_dim`-wide space.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClipConfig {
    pub embed_dim: usize,
    /// QuickGELU x·σ(1.702x) (OpenAI's models) instead of exact GELU in the transformer MLPs.
    #[serde(default)]
    pub quick_gelu: bool,
    pub vision_cfg: VisionCfg,
    pub text_cfg: TextCfg,
    /// Initial temperature parameter t (logits × exp(t)); unset: ln(1/0.07), the paper's.
    /// SigLIP training starts at ln 10.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init_logit_scale: Option<f64>,
    /// A learned logit bias b (SigLIP's, −10 at init; open_clip's `init_logit_bias`): the model
    /// then has a `logit_bias` parameter. Unset: no bias (CLIP's softmax loss has no use for one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init_logit_bias: Option<f64>,
}

/// The presets built into the binary, by name.
pub const PRESETS: &[(&str, &str)] = &[
    ("tiny", include_str!("../../../../configs/models/tiny.json")),
    (
        "small",
        include_str!("../../../../configs/models/small.json"),
    ),
    (
        "ViT-B-32",
        include_str!("../../../../configs/models/ViT-B-32.json"),
    ),
    (
        "ViT-B-16",
        include_str!("../../../../configs/models/ViT-B-16.json"),
    ),
    (
        "ViT-L-14",
        include_str!("../../../../configs/models/ViT-L-14.json"),
    ),
    (
        "lit-dinov2-s14",
        include_str!("../../../../configs/models/lit-dinov2-s14.json"),
    ),
    (
        "lit-dinov2-s14-minilm",
        include_str!("../../../../configs/models/lit-dinov2-s14-minilm.json"),
    ),
];

/// A projection head's shape: tower width → `embed_dim` (see `heads::ProjectionHead`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeadCfg {
    pub kind: ProjType,
    /// The tower's pooled width, the head's input.
    pub width: usize,
    pub embed_dim: usize,
    /// The MLP head's hidden width (default: `width`).
    pub hidden: Option<usize>,
    /// The MLP head's hidden layers.
    pub layers: usize,
}

impl HeadCfg {
    pub fn new(
        kind: ProjType,
        width: usize,
        embed_dim: usize,
        hidden: Option<usize>,
        layers: usize,
    ) -> Self {
        Self {
            kind,
            width,
            embed_dim,
            hidden,
            layers,
        }
    }
}

/// LayerNorm's ε in every block (open_clip's default).
pub const LN_EPS: f64 = 1e-5;

/// A tower's block: `heads` heads over `width`, MLP `hidden`.
fn block_cfg(width: usize, heads: usize, hidden: usize, act: Activation, causal: bool) -> BlockCfg {
    BlockCfg {
        width,
        heads,
        hidden,
        act,
        causal,
        eps: LN_EPS as f32,
    }
}

impl VisionCfg {
    pub fn heads(&self) -> usize {
        self.width / self.head_width
    }
    /// The shape of each of the tower's blocks.
    pub fn block(&self, act: Activation) -> BlockCfg {
        block_cfg(self.width, self.heads(), self.mlp_width(), act, false)
    }
    /// The tower's projection head into `embed_dim`.
    pub fn head(&self, embed_dim: usize) -> HeadCfg {
        let (kind, hidden, layers) = (self.proj_type, self.proj_hidden, self.proj_layers);
        HeadCfg::new(kind, self.width, embed_dim, hidden, layers)
    }
    /// Patches per side.
    pub fn grid(&self) -> usize {
        self.image_size / self.patch_size
    }
    pub fn mlp_width(&self) -> usize {
        (self.width as f64 * self.mlp_ratio) as usize
    }
    /// A `dinov2` tower's shape in its own terms.
    pub fn dinov2(&self) -> Dinov2Cfg {
        Dinov2Cfg {
            hidden_size: self.width,
            num_hidden_layers: self.layers,
            num_attention_heads: self.heads(),
            mlp_ratio: self.mlp_ratio,
            patch_size: self.patch_size,
            image_size: self.pretrained_image_size.unwrap_or(518),
            layer_norm_eps: 1e-6,
            image_mean: [0.485, 0.456, 0.406],
            image_std: [0.229, 0.224, 0.225],
        }
    }
}

impl TextCfg {
    /// A `bert` tower's shape in its own terms.
    pub fn bert(&self) -> BertCfg {
        BertCfg {
            vocab_size: self.vocab_size,
            hidden_size: self.width,
            num_hidden_layers: self.layers,
            num_attention_heads: self.heads,
            intermediate_size: self.mlp_width(),
            max_position_embeddings: self.max_positions.unwrap_or(512),
            type_vocab_size: 2,
            layer_norm_eps: 1e-12,
            pooling: self.pooling.unwrap_or_default(),
        }
    }
    pub fn mlp_width(&self) -> usize {
        (self.width as f64 * self.mlp_ratio) as usize
    }
    /// The shape of each of the tower's blocks: causal.
    pub fn block(&self, act: Activation) -> BlockCfg {
        block_cfg(self.width, self.heads, self.mlp_width(), act, true)
    }
    /// The tower's projection head into `embed_dim`.
    pub fn head(&self, embed_dim: usize) -> HeadCfg {
        let (kind, hidden, layers) = (self.proj_type, self.proj_hidden, self.proj_layers);
        HeadCfg::new(kind, self.width, embed_dim, hidden, layers)
    }
}

impl ClipConfig {
    /// The transformer MLPs' activation.
    pub fn activation(&self) -> Activation {
        if self.quick_gelu {
            Activation::QuickGelu
        } else {
            Activation::Gelu
        }
    }

    /// Parse a config from JSON text; `origin` names the file or preset in errors.
    pub fn from_json_str(text: &str, origin: &str) -> Result<Self> {
        let cfg: ClipConfig = serde_json::from_str(text).map_err(|e| ClipError::Config {
            origin: origin.to_string(),
            msg: e.to_string(),
        })?;
        cfg.validate(origin)?;
        Ok(cfg)
    }

    /// Read a config file.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| ClipError::Io {
            path: path.display().to_string(),
            msg: e.to_string(),
        })?;
        Self::from_json_str(&text, &path.display().to_string())
    }

    /// A built-in preset by name (`tiny`, `small`, `ViT-B-32`, …).
    pub fn preset(name: &str) -> Option<Self> {
        PRESETS.iter().find(|(n, _)| *n == name).map(|(n, text)| {
            Self::from_json_str(text, &format!("preset {n}")).expect("built-in preset is valid")
        })
    }

    /// A preset name, or else a path to a JSON file.
    pub fn resolve(name_or_path: &str) -> Result<Self> {
        if let Some(cfg) = Self::preset(name_or_path) {
            return Ok(cfg);
        }
        let path = Path::new(name_or_path);
        if path.exists() {
            return Self::from_file(path);
        }
        let names: Vec<&str> = PRESETS.iter().map(|(n, _)| *n).collect();
        Err(ClipError::Config {
            origin: name_or_path.to_string(),
            msg: format!(
                "neither a preset ({}) nor an existing config file",
                names.join(", ")
            ),
        })
    }

    pub fn to_json_pretty(&self) -> String {
        serde_json::to_string_pretty(self).expect("config serialises")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_parse_with_the_documented_shapes() {
        let b32 = ClipConfig::preset("ViT-B-32").unwrap();
        assert_eq!(
            (
                b32.embed_dim,
                b32.vision_cfg.width,
                b32.vision_cfg.layers,
                b32.vision_cfg.patch_size
            ),
            (512, 768, 12, 32)
        );
        assert_eq!(b32.vision_cfg.heads(), 12);
        assert_eq!(
            (
                b32.text_cfg.width,
                b32.text_cfg.heads,
                b32.text_cfg.layers,
                b32.text_cfg.context_length
            ),
            (512, 8, 12, 77)
        );
        let l14 = ClipConfig::preset("ViT-L-14").unwrap();
        assert_eq!(
            (
                l14.embed_dim,
                l14.vision_cfg.width,
                l14.vision_cfg.layers,
                l14.vision_cfg.patch_size
            ),
            (768, 1024, 24, 14)
        );
        assert_eq!((l14.text_cfg.width, l14.text_cfg.heads), (768, 12));
        let tiny = ClipConfig::preset("tiny").unwrap();
        assert_eq!(
            (
                tiny.vision_cfg.image_size,
                tiny.vision_cfg.patch_size,
                tiny.vision_cfg.heads()
            ),
            (32, 4, 4)
        );
        let small = ClipConfig::preset("small").unwrap();
        assert_eq!(
            (
                small.vision_cfg.heads(),
                small.text_cfg.heads,
                small.embed_dim
            ),
            (6, 4, 256)
        );
    }

    #[test]
    fn unknown_field_is_named() {
        let text = r#"{"embed_dim": 8, "vision_cfg": {"image_size": 8, "patch_size": 4, "width": 8, "layers": 1, "head_width": 4, "colour": 3}, "text_cfg": {}}"#;
        let err = ClipConfig::from_json_str(text, "x.json")
            .unwrap_err()
            .to_string();
        assert!(err.contains("x.json") && err.contains("colour"), "{err}");
    }

    #[test]
    fn impossible_shapes_are_named() {
        let text = r#"{"embed_dim": 8, "vision_cfg": {"image_size": 10, "patch_size": 4, "width": 8, "layers": 1, "head_width": 4}, "text_cfg": {}}"#;
        let err = ClipConfig::from_json_str(text, "x.json")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("vision_cfg.image_size 10 is not divisible"),
            "{err}"
        );
        let text = r#"{"embed_dim": 8, "vision_cfg": {"image_size": 8, "patch_size": 4, "width": 8, "layers": 1, "head_width": 4}, "text_cfg": {"width": 10, "heads": 4}}"#;
        let err = ClipConfig::from_json_str(text, "x.json")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("text_cfg.width 10 is not divisible by text_cfg.heads 4"),
            "{err}"
        );
        let text = r#"{"embed_dim": 8, "vision_cfg": {"image_size": 8, "patch_size": 4, "width": 12, "layers": 1, "head_width": 4, "proj_type": "none"}, "text_cfg": {"width": 8, "heads": 2}}"#;
        let err = ClipConfig::from_json_str(text, "x.json")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(
                "vision_cfg.proj_type \"none\" needs vision_cfg.width (12) equal to embed_dim (8)"
            ),
            "{err}"
        );
    }
}
