//! The search crate's error type: each variant names the file or setting it is about.

use std::path::{Path, PathBuf};

use thiserror::Error;

#[derive(Debug, Error)]
pub enum SearchError {
    /// A file or directory that could not be read or written.
    // The reason is in the message, not also a `source` (which `{:#}` would print again).
    #[error("{}: {reason}", path.display())]
    Io {
        path: PathBuf,
        reason: std::io::Error,
    },
    /// An index file that is not what the index's manifest says it is.
    #[error("{}: {msg}", path.display())]
    Corrupt { path: PathBuf, msg: String },
    /// An index built with another model than the one asked to use it.
    #[error("{0}")]
    ModelMismatch(String),
    /// Something asked of the index that it cannot do (an empty query, a source that is no folder).
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Clip(#[from] clip::ClipError),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

pub type Result<T> = std::result::Result<T, SearchError>;

/// `map_err` for I/O on `path`.
pub fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SearchError + '_ {
    move |reason| SearchError::Io {
        path: path.to_path_buf(),
        reason,
    }
}
