//! Search a collection of images by text or by image: an index of their embeddings on disk
//! (`store`), kept up to date incrementally from folders (`build`), with thumbnails (`thumbs`),
//! and nearest-neighbour search over it: exact (`exact`), or approximate with exact re-scoring
//! for large indexes (`ann`); `bench` measures the two.

pub mod ann;
pub mod bench;
pub mod build;
pub mod error;
pub mod exact;
pub mod export;
pub mod model_id;
pub mod scan;
pub mod searcher;
pub mod store;
pub mod thumbs;

pub use error::{Result, SearchError};
pub use model_id::ModelId;
pub use searcher::Searcher;
pub use store::{Entry, Index};
