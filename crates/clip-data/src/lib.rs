//! clipforge's data: the built-in captioned scenes, image–caption listings (CSV/TSV/JSONL) and
//! WebDataset shards (streamed), augmentation, and batching into model inputs. Never imports the model or
//! the loss (DESIGN.md); uses `clip`'s tokenizer and normalisation.

pub mod augment;
pub mod batch;
pub mod file_batcher;
pub mod files;
pub mod packaged;
pub mod stream;
pub mod synthetic;

pub use batch::{Batch, SceneBatcher};
pub use file_batcher::FileBatcher;
pub use files::{RawSample, SkipCounts};
pub use stream::{EpochReport, StreamBatcher, StreamCfg};
pub use synthetic::{Scene, Shapes, Split};

/// Errors reading data: the message names the file and line or key.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("{0}")]
    Input(String),
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
}
