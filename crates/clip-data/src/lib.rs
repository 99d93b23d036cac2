//! clipforge's data: the built-in captioned scenes, image–caption listings (CSV/TSV/JSONL) and
//! WebDataset shards (streamed), augmentation, and batching into model inputs. Never imports the model or
//! the loss (docs/architecture.md); uses `clip`'s tokenizer and normalisation.

use std::path::{Path, PathBuf};

pub mod augment;
pub mod batch;
pub mod file_batcher;
pub mod files;
pub mod folder;
pub mod packaged;
pub mod pretrained;
mod shapes_sdf;
pub mod stream;
pub mod synthetic;

pub use batch::{Batch, SceneBatcher};
pub use file_batcher::FileBatcher;
pub use files::{RawSample, SkipCounts};
pub use folder::ImageFolder;
pub use stream::{EpochReport, StreamBatcher, StreamCfg};
pub use synthetic::{Scene, Shapes, Split};

/// Errors reading, fetching or writing data: each names the file (and line or key), the
/// pattern, the dataset or the command it is about.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// A file or directory that could not be read or written.
    // The reason is in the message, not also a `source` (which `{:#}` would print again).
    #[error("{}: {reason}", path.display())]
    Io {
        path: PathBuf,
        reason: std::io::Error,
    },
    /// A file whose content is not what was expected (`path` may end in `:LINE`).
    #[error("{}: {msg}", path.display())]
    Format { path: PathBuf, msg: String },
    /// A WebDataset shard pattern that is malformed or names no file.
    #[error("shard pattern {pattern:?}: {msg}")]
    Pattern { pattern: String, msg: String },
    /// A dataset that is unknown, not fetched, or without the split or labels asked for.
    #[error("{0}")]
    Dataset(String),
    /// A package client (apt-get, dpkg-deb, pip, npm) that failed or gave nothing.
    #[error("{command}: {msg}")]
    Fetch { command: String, msg: String },
    /// An image that could not be encoded as PNG.
    #[error("{what}: encoding PNG: {msg}")]
    Encode { what: String, msg: String },
}

/// `map_err` for I/O on `path`.
pub(crate) fn io(path: &Path) -> impl FnOnce(std::io::Error) -> DataError + '_ {
    move |reason| DataError::Io {
        path: path.to_path_buf(),
        reason,
    }
}

/// `map_err` for content of `path` that does not parse.
pub(crate) fn bad<E: std::fmt::Display>(path: &Path) -> impl FnOnce(E) -> DataError + '_ {
    move |e| DataError::Format {
        path: path.to_path_buf(),
        msg: e.to_string(),
    }
}

/// Something that makes the batch of a given position: batch `start..start+n` of an endless,
/// seeded sequence, so a run's data is a pure function of the step.
pub trait BatchSource: Send + Sync {
    fn batch(
        &self,
        start: u64,
        n: usize,
        device: &candle_core::Device,
    ) -> candle_core::Result<Batch>;
    /// Samples skipped so far (bad files), where the source can have any.
    fn skipped(&self) -> Option<SkipCounts> {
        None
    }
    /// Epochs finished since the last call, with what they skipped (streamed sources).
    fn take_epoch_reports(&self) -> Vec<EpochReport> {
        Vec::new()
    }
    /// Whether this process reads a stream of its own (shards dealt by rank): `start` then
    /// counts this process's samples, not the global batches' (rank r's share of step s starts
    /// at s·b, not at (s·W + r)·b).
    fn per_rank(&self) -> bool {
        false
    }
}
