//! clipforge's model library: CLIP's towers, projection heads, contrastive loss, tokenizer,
//! image transform and weights I/O, on candle. No training loop, data loading or CLI here.

pub mod bert;
pub mod bert_tokenizer;
pub mod config;
pub mod dinov2;
pub mod durable;
pub mod error;
pub mod flops;
pub mod heads;
pub mod init;
pub mod loss;
pub mod memory;
pub mod model;
pub mod nn;
pub mod ops;
pub mod pretrained;
pub mod text;
pub mod text_clean;
pub mod text_tokenizer;
pub mod tokenizer;
pub mod towers;
pub mod transform;
pub mod transformer;
pub mod vision;
pub mod weights;

pub use config::{ClipConfig, ProjType};
pub use error::{ClipError, Result};
pub use loss::{clip_logits, clip_loss, clip_loss_rows, siglip_loss, siglip_loss_rows};
pub use model::{clamp_logit_scale, Clip, ClipOutput};
pub use text_tokenizer::TextTokenizer;
pub use tokenizer::Tokenizer;
