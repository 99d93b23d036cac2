//! The training crate's error type.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum TrainError {
    #[error("{0}")]
    Input(String),
    #[error("{0}")]
    Io(String),
    #[error(transparent)]
    Clip(#[from] clip::ClipError),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

pub type Result<T> = std::result::Result<T, TrainError>;
