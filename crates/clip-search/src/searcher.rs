//! How an index is searched: exactly up to `ann::EXACT_UP_TO` vectors, through an HNSW graph
//! (built when the index is opened, candidates re-scored exactly) above that.

use crate::ann::{Ann, AnnParams, EXACT_UP_TO};
use crate::exact::{self, Hit};
use crate::store::Index;

pub enum Searcher {
    Exact,
    Approximate(Ann),
}

impl Searcher {
    /// Exact for small indexes; an HNSW graph over a large one (built here, on all threads).
    pub fn for_index(index: &Index, params: AnnParams) -> Self {
        if index.len() <= EXACT_UP_TO {
            Searcher::Exact
        } else {
            Searcher::Approximate(Ann::build(&index.vectors, index.dim(), params))
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Searcher::Exact => "exact",
            Searcher::Approximate(_) => "hnsw",
        }
    }

    /// The `k` rows of `index` nearest `query`, best first; rows where `keep` is false skipped.
    pub fn search(
        &self,
        index: &Index,
        query: &[f32],
        k: usize,
        keep: impl Fn(usize) -> bool + Sync,
    ) -> Vec<Hit> {
        match self {
            Searcher::Exact => exact::search(&index.vectors, index.dim(), query, k, keep),
            Searcher::Approximate(ann) => ann.search(&index.vectors, index.dim(), query, k, keep),
        }
    }
}
