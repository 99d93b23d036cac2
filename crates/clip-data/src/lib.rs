//! clipforge's data: the built-in captioned scenes, batching into model inputs, previews.
//! Never imports the model or the loss (DESIGN.md); uses `clip`'s tokenizer and normalisation.

pub mod batch;
pub mod synthetic;

pub use batch::{Batch, SceneBatcher};
pub use synthetic::{Scene, Shapes, Split};
