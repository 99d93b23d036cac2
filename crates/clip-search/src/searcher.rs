//! How an index is searched: exactly (every vector scored), or through an HNSW graph whose
//! candidates are re-scored exactly, once one is built for an index of more than
//! `ann::EXACT_UP_TO` vectors. Building the graph takes minutes at a million vectors, so a
//! server answers at once, exactly, while a thread of its own builds it; a one-off query from
//! the command line scans, which costs less than a graph built for one query.

use std::sync::{Arc, OnceLock};

use crate::ann::{Ann, AnnParams, EXACT_UP_TO};
use crate::exact::{self, Hit};
use crate::store::Index;

pub struct Searcher {
    graph: Arc<OnceLock<Ann>>,
}

impl Searcher {
    /// Exact search, always.
    pub fn exact() -> Self {
        Self {
            graph: Arc::new(OnceLock::new()),
        }
    }

    /// Exact search until the HNSW graph of a large index is built, in the background (from
    /// a copy of its vectors), then the graph.
    pub fn building(index: &Index, params: AnnParams) -> Self {
        Self::building_over(index.vectors.clone(), index.dim(), params, EXACT_UP_TO)
    }

    fn building_over(vectors: Vec<f32>, dim: usize, params: AnnParams, exact_up_to: usize) -> Self {
        let s = Self::exact();
        if vectors.len() / dim.max(1) > exact_up_to {
            let slot = Arc::clone(&s.graph);
            std::thread::spawn(move || {
                let _ = slot.set(Ann::build(&vectors, dim, params));
            });
        }
        s
    }

    /// `exact`, or `hnsw` once the graph is there.
    pub fn name(&self) -> &'static str {
        if self.graph.get().is_some() {
            "hnsw"
        } else {
            "exact"
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
        self.search_rows(&index.vectors, index.dim(), query, k, keep)
    }

    fn search_rows(
        &self,
        vectors: &[f32],
        dim: usize,
        query: &[f32],
        k: usize,
        keep: impl Fn(usize) -> bool + Sync,
    ) -> Vec<Hit> {
        match self.graph.get() {
            Some(ann) => ann.search(vectors, dim, query, k, keep),
            None => exact::search(vectors, dim, query, k, keep),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::clustered;

    /// Over the threshold: exact at first, the graph once built, and the graph finds what
    /// exact search finds.
    #[test]
    fn answers_exactly_until_the_graph_is_built() {
        let dim = 32;
        let vectors = clustered(3_000, dim, 30, 1);
        let queries = clustered(20, dim, 30, 2);
        let s = Searcher::building_over(vectors.clone(), dim, AnnParams::default(), 1_000);
        let t0 = std::time::Instant::now();
        while s.name() != "hnsw" {
            assert!(t0.elapsed().as_secs() < 120, "the graph was never built");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let exact = Searcher::exact();
        assert_eq!(exact.name(), "exact");
        for q in queries.chunks_exact(dim) {
            let a = exact.search_rows(&vectors, dim, q, 1, |_| true);
            let b = s.search_rows(&vectors, dim, q, 1, |_| true);
            assert_eq!(a[0].row, b[0].row);
        }
        let small = Searcher::building_over(vectors, dim, AnnParams::default(), 5_000);
        std::thread::sleep(std::time::Duration::from_millis(200));
        assert_eq!(
            small.name(),
            "exact",
            "under the threshold no graph is built"
        );
    }
}
