//! The tokenizer a text tower reads with: OpenAI's BPE for CLIP's tower, the pretrained
//! tower's own `tokenizer.json` for BERT. Either gives `[N, T]` u32 ids padded with 0.

use std::path::Path;
use std::sync::Arc;

use candle_core::{Device, Tensor};

use crate::bert_tokenizer::BertTokenizer;
use crate::config::{TextCfg, TextKind};
use crate::error::Result;
use crate::tokenizer::Tokenizer;

#[derive(Clone)]
pub enum TextTokenizer {
    Clip(Arc<Tokenizer>),
    Bert(Arc<BertTokenizer>),
}

impl Default for TextTokenizer {
    fn default() -> Self {
        Self::Clip(Arc::new(Tokenizer::new()))
    }
}

impl TextTokenizer {
    /// The tokenizer of a text tower: a `bert` tower's `tokenizer.json` comes from its fetched
    /// model directory ([`crate::pretrained::model_dir`]).
    pub fn for_config(cfg: &TextCfg) -> Result<Self> {
        match (cfg.kind, &cfg.pretrained) {
            (TextKind::Bert, Some(name)) => {
                let dir = crate::pretrained::model_dir(name)?;
                Self::from_file(&dir.join("tokenizer.json"))
            }
            _ => Ok(Self::default()),
        }
    }

    /// A WordPiece (or other Hugging Face) tokenizer from its `tokenizer.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        Ok(Self::Bert(Arc::new(BertTokenizer::from_file(path)?)))
    }

    /// `[N, context_length]` u32 ids, padded with 0.
    pub fn tokenize_tensor<S: AsRef<str> + Sync>(
        &self,
        texts: &[S],
        context_length: usize,
        device: &Device,
    ) -> candle_core::Result<Tensor> {
        match self {
            Self::Clip(t) => t.tokenize_tensor(texts, context_length, device),
            Self::Bert(b) => {
                let ids = b
                    .ids_fixed(texts, context_length)
                    .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
                Tensor::from_vec(ids, (texts.len(), context_length), device)
            }
        }
    }
}
