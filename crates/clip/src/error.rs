//! The library's error type: every variant names the file, key or input it is about.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum ClipError {
    #[error("config {origin}: {msg}")]
    Config { origin: String, msg: String },
    #[error("{path}: {msg}")]
    Io { path: String, msg: String },
    #[error("weights {path}: {msg}")]
    Weights { path: String, msg: String },
    #[error("image {path}: {msg}")]
    Image { path: String, msg: String },
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

pub type Result<T> = std::result::Result<T, ClipError>;
