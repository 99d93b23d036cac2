//! Measuring search: exact against approximate on synthetic embeddings at given sizes —
//! recall@10 of the approximate index against exact search, queries per second of each, the
//! graph's build time and the memory a million vectors take.

use std::time::Instant;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};

use crate::ann::{Ann, AnnParams};
use crate::exact;

/// `n` unit vectors of `dim` around `clusters` random centres (spread 0.5 around unit
/// centres, then normalised): neighbourhoods like those of real embeddings, not uniform noise.
pub fn clustered(n: usize, dim: usize, clusters: usize, seed: u64) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(0x5eed ^ clusters as u64);
    let normal = Normal::new(0.0f32, 1.0).expect("unit normal");
    let unit = |v: &mut [f32]| {
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
        v.iter_mut().for_each(|x| *x /= norm);
    };
    let centres: Vec<Vec<f32>> = (0..clusters.max(1))
        .map(|_| {
            let mut c: Vec<f32> = (0..dim).map(|_| normal.sample(&mut rng)).collect();
            unit(&mut c);
            c
        })
        .collect();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let spread = 0.5 / (dim as f32).sqrt();
    let mut out = Vec::with_capacity(n * dim);
    for _ in 0..n {
        let c = &centres[rng.random_range(0..centres.len())];
        let mut v: Vec<f32> = c
            .iter()
            .map(|x| x + spread * normal.sample(&mut rng))
            .collect();
        unit(&mut v);
        out.extend(v);
    }
    out
}

/// One size's measurements.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SearchBench {
    pub vectors: usize,
    pub dim: usize,
    pub queries: usize,
    pub exact_qps: f64,
    pub ann_qps: f64,
    pub ann_build_seconds: f64,
    pub recall_at_10: f64,
    /// Bytes of the f32 vectors for a million of them.
    pub vector_bytes_per_million: f64,
}

/// Measure exact and approximate search on `n` clustered vectors with `queries` queries.
pub fn measure(n: usize, dim: usize, queries: usize, params: AnnParams) -> SearchBench {
    let clusters = (n / 100).clamp(10, 10_000);
    let vectors = clustered(n, dim, clusters, 1);
    let qs = clustered(queries, dim, clusters, 2);
    let t = Instant::now();
    let exact_hits: Vec<Vec<exact::Hit>> = qs
        .chunks_exact(dim)
        .map(|q| exact::search(&vectors, dim, q, 10, |_| true))
        .collect();
    let exact_qps = queries as f64 / t.elapsed().as_secs_f64();
    let t = Instant::now();
    let ann = Ann::build(&vectors, dim, params);
    let ann_build_seconds = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let ann_hits: Vec<Vec<exact::Hit>> = qs
        .chunks_exact(dim)
        .map(|q| ann.search(&vectors, dim, q, 10, |_| true))
        .collect();
    let ann_qps = queries as f64 / t.elapsed().as_secs_f64();
    let found: usize = exact_hits
        .iter()
        .zip(&ann_hits)
        .map(|(e, a)| {
            a.iter()
                .filter(|h| e.iter().any(|x| x.row == h.row))
                .count()
        })
        .sum();
    SearchBench {
        vectors: n,
        dim,
        queries,
        exact_qps,
        ann_qps,
        ann_build_seconds,
        recall_at_10: found as f64 / (10 * queries) as f64,
        vector_bytes_per_million: 1e6 * dim as f64 * 4.0,
    }
}
