//! Exact nearest neighbours: the query's dot product with every row (unit vectors, so the
//! cosine), in parallel blocks, each keeping its best k; the blocks' bests merged. Ties go to
//! the lower row, so the same query gives the same list every time.

use rayon::prelude::*;

/// One result: a row of the index and its cosine to the query.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Hit {
    pub row: usize,
    pub score: f32,
}

/// Rows per parallel block.
const BLOCK: usize = 4096;

/// Σ a·b over 16 lanes (the compiler vectorises the lanes), then the tail.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 16];
    let (ac, bc) = (a.chunks_exact(16), b.chunks_exact(16));
    let tail: f32 = ac
        .remainder()
        .iter()
        .zip(bc.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ac.zip(bc) {
        for l in 0..16 {
            acc[l] += x[l] * y[l];
        }
    }
    acc.iter().sum::<f32>() + tail
}

fn better(a: &Hit, b: &Hit) -> std::cmp::Ordering {
    b.score.total_cmp(&a.score).then(a.row.cmp(&b.row))
}

/// Keep the best `k` of `hits`, best first.
fn best_k(mut hits: Vec<Hit>, k: usize) -> Vec<Hit> {
    if hits.len() > k {
        hits.select_nth_unstable_by(k, better);
        hits.truncate(k);
    }
    hits.sort_by(better);
    hits
}

/// The `k` rows of `vectors` (`[n, dim]`) nearest to `query` (`[dim]`), best first; rows for
/// which `keep(row)` is false are passed over.
pub fn search(
    vectors: &[f32],
    dim: usize,
    query: &[f32],
    k: usize,
    keep: impl Fn(usize) -> bool + Sync,
) -> Vec<Hit> {
    assert_eq!(query.len(), dim, "query of the index's width");
    if k == 0 || dim == 0 {
        return Vec::new();
    }
    let parts: Vec<Vec<Hit>> = vectors
        .par_chunks(BLOCK * dim)
        .enumerate()
        .map(|(b, block)| {
            let hits = block
                .chunks_exact(dim)
                .enumerate()
                .map(|(i, row)| (b * BLOCK + i, row))
                .filter(|(r, _)| keep(*r))
                .map(|(row, v)| Hit {
                    row,
                    score: dot(v, query),
                })
                .collect();
            best_k(hits, k)
        })
        .collect();
    best_k(parts.into_iter().flatten().collect(), k)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_what_a_full_sort_finds() {
        let (n, dim) = (10_000, 24);
        let v: Vec<f32> = (0..n * dim)
            .map(|i| ((i * 7919 % 1013) as f32 / 1013.0) - 0.5)
            .collect();
        let q: Vec<f32> = (0..dim).map(|i| (i as f32 * 0.37).sin()).collect();
        let got = search(&v, dim, &q, 10, |r| r % 3 != 0);
        let mut all: Vec<Hit> = (0..n)
            .filter(|r| r % 3 != 0)
            .map(|r| Hit {
                row: r,
                score: dot(&v[r * dim..(r + 1) * dim], &q),
            })
            .collect();
        all.sort_by(better);
        assert_eq!(got, all[..10].to_vec());
    }
}
