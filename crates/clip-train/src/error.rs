//! The training crate's error type: each variant names the file, setting or step it is about.

use std::path::{Path, PathBuf};

use thiserror::Error;

#[derive(Debug, Error)]
pub enum TrainError {
    /// A run setting out of range, or a run's config that does not parse.
    #[error("{0}")]
    Config(String),
    /// A file or directory that could not be read or written.
    // The reason is in the message, not also a `source` (which `{:#}` would print again).
    #[error("{}: {reason}", path.display())]
    Io {
        path: PathBuf,
        reason: std::io::Error,
    },
    /// A checkpoint that is missing, incomplete or does not fit the run.
    #[error("{}: {msg}", path.display())]
    Checkpoint { path: PathBuf, msg: String },
    /// Data that cannot be used for what was asked (too few samples, a split without labels).
    #[error("{0}")]
    Data(String),
    /// The loss stopped being a number.
    #[error("loss became {loss} at step {step}: lower the learning rate (now {lr:.2e}) or raise warm-up")]
    Diverged { step: u64, loss: f64, lr: f64 },
    /// A plot that could not be drawn.
    #[error("{}: cannot draw plot: {msg}", path.display())]
    Plot { path: PathBuf, msg: String },
    /// A collective operation between the training processes that failed, or a world that
    /// does not fit the run.
    #[error("distributed training: {0}")]
    Distributed(String),
    #[error(transparent)]
    Dataset(#[from] clip_data::DataError),
    #[error(transparent)]
    Clip(#[from] clip::ClipError),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

pub type Result<T> = std::result::Result<T, TrainError>;

/// `map_err` for I/O on `path`.
pub fn io(path: &Path) -> impl FnOnce(std::io::Error) -> TrainError + '_ {
    move |reason| TrainError::Io {
        path: path.to_path_buf(),
        reason,
    }
}
