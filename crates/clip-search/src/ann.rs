//! Approximate nearest neighbours for large indexes: an HNSW graph (`hnsw_rs`) over the unit
//! vectors by L2 distance (for unit vectors ‖a − b‖² = 2 − 2·cos, so the same order as the
//! cosine), asked for more candidates than wanted; the candidates are then scored exactly
//! against the full-precision vectors, so the scores returned are the true cosines and the
//! order among the candidates is exact.

use hnsw_rs::prelude::{DistL2, Hnsw};

use crate::exact::{dot, Hit};

/// The graph's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AnnParams {
    /// Links per node and layer (HNSW's M).
    pub m: usize,
    /// Candidates explored while inserting.
    pub ef_construction: usize,
    /// Candidates explored while searching (at least the candidates asked for).
    pub ef_search: usize,
    /// Candidates re-scored per result wanted.
    pub oversample: usize,
}

impl Default for AnnParams {
    fn default() -> Self {
        Self {
            m: 16,
            ef_construction: 200,
            ef_search: 128,
            oversample: 4,
        }
    }
}

/// Indexes of at most this many vectors are searched exactly (fast enough, and exact).
pub const EXACT_UP_TO: usize = 50_000;

pub struct Ann {
    graph: Hnsw<'static, f32, DistL2>,
    pub params: AnnParams,
    len: usize,
}

impl Ann {
    /// Build the graph over `vectors` (`[n, dim]`, unit rows) on all threads.
    pub fn build(vectors: &[f32], dim: usize, params: AnnParams) -> Self {
        let n = vectors.len() / dim.max(1);
        let layers = 16.min(((n.max(2)) as f64).ln().ceil() as usize).max(1);
        let graph = Hnsw::new(
            params.m,
            n.max(1),
            layers,
            params.ef_construction,
            DistL2 {},
        );
        let rows: Vec<(&[f32], usize)> = vectors.chunks_exact(dim).zip(0..n).collect();
        graph.parallel_insert_slice(&rows);
        Self {
            graph,
            params,
            len: n,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The `k` best rows for `query` among the graph's candidates, re-scored exactly with
    /// `vectors`; rows for which `keep(row)` is false are passed over.
    pub fn search(
        &self,
        vectors: &[f32],
        dim: usize,
        query: &[f32],
        k: usize,
        keep: impl Fn(usize) -> bool,
    ) -> Vec<Hit> {
        if k == 0 || self.len == 0 {
            return Vec::new();
        }
        let want = (k * self.params.oversample.max(1)).min(self.len);
        let ef = self.params.ef_search.max(want);
        let mut hits: Vec<Hit> = self
            .graph
            .search(query, want, ef)
            .into_iter()
            .map(|nb| nb.d_id)
            .filter(|&row| keep(row))
            .map(|row| Hit {
                row,
                score: dot(&vectors[row * dim..(row + 1) * dim], query),
            })
            .collect();
        hits.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.row.cmp(&b.row)));
        hits.truncate(k);
        hits
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exact;

    /// Clustered unit vectors, like embeddings: recall@10 against exact search is high, and
    /// the scores are the exact cosines.
    #[test]
    fn finds_nearly_what_exact_search_finds() {
        let (n, dim) = (5_000, 32);
        let vectors = crate::bench::clustered(n, dim, 50, 1);
        let ann = Ann::build(&vectors, dim, AnnParams::default());
        let queries = crate::bench::clustered(50, dim, 50, 2);
        let mut found = 0;
        for q in queries.chunks_exact(dim) {
            let want = exact::search(&vectors, dim, q, 10, |_| true);
            let got = ann.search(&vectors, dim, q, 10, |_| true);
            for h in &got {
                let exact_score = dot(&vectors[h.row * dim..(h.row + 1) * dim], q);
                assert_eq!(h.score, exact_score);
            }
            found += got
                .iter()
                .filter(|h| want.iter().any(|w| w.row == h.row))
                .count();
        }
        let recall = found as f64 / 500.0;
        assert!(recall > 0.95, "recall@10 {recall}");
    }
}
