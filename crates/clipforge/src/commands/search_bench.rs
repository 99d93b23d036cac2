//! `clipforge search-bench`: exact against approximate (HNSW) search on synthetic clustered
//! embeddings at several index sizes: recall@10, queries/s, build time, memory.

use anyhow::Result;
use clip_search::ann::AnnParams;

#[derive(clap::Args)]
#[command(
    after_help = "Example:\n  clipforge search-bench --sizes 10000,100000,1000000 --dim 512\n\n\
Vectors are unit vectors around random centres (clustered, as embeddings are), queries drawn\n\
the same way. Recall@10 counts how many of exact search's ten best the approximate search\n\
returns; both run one query at a time on all threads (exact) or one thread (HNSW)."
)]
pub struct Args {
    /// Index sizes, comma-separated.
    #[arg(long, default_value = "10000,100000", value_delimiter = ',')]
    pub sizes: Vec<usize>,
    /// Embedding width (ViT-B-32: 512).
    #[arg(long, default_value_t = 512)]
    pub dim: usize,
    /// Queries per size.
    #[arg(long, default_value_t = 200)]
    pub queries: usize,
    /// HNSW links per node (M).
    #[arg(long, default_value_t = AnnParams::default().m)]
    pub m: usize,
    /// HNSW candidates while building.
    #[arg(long, default_value_t = AnnParams::default().ef_construction)]
    pub ef_construction: usize,
    /// HNSW candidates while searching.
    #[arg(long, default_value_t = AnnParams::default().ef_search)]
    pub ef_search: usize,
    /// One JSON object per size instead of the table.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args) -> Result<()> {
    anyhow::ensure!(
        args.dim > 0 && args.queries > 0,
        "--dim and --queries must be positive"
    );
    anyhow::ensure!((2..=256).contains(&args.m), "--m must be 2 to 256");
    let params = AnnParams {
        m: args.m,
        ef_construction: args.ef_construction,
        ef_search: args.ef_search,
        ..AnnParams::default()
    };
    if !args.json {
        println!(
            "{:>10}  {:>11}  {:>10}  {:>11}  {:>10}  {:>12}",
            "vectors", "exact q/s", "hnsw q/s", "recall@10", "build s", "MB/million"
        );
    }
    for &n in &args.sizes {
        // The graph's build is most of the time: seconds at 10,000, an hour at a million.
        let spinner = (!args.json).then(|| {
            let s = indicatif::ProgressBar::new_spinner();
            s.set_style(
                indicatif::ProgressStyle::with_template("{spinner} {msg} [{elapsed}]")
                    .expect("valid template"),
            );
            s.set_message(format!(
                "{n} vectors: exact search, then the HNSW graph's build"
            ));
            s.enable_steady_tick(std::time::Duration::from_millis(200));
            s
        });
        let b = clip_search::bench::measure(n, args.dim, args.queries, params);
        if let Some(s) = spinner {
            s.finish_and_clear();
        }
        if args.json {
            println!("{}", serde_json::to_string(&b)?);
        } else {
            println!(
                "{:>10}  {:>11.1}  {:>10.1}  {:>11.3}  {:>10.1}  {:>12.0}",
                b.vectors,
                b.exact_qps,
                b.ann_qps,
                b.recall_at_10,
                b.ann_build_seconds,
                b.vector_bytes_per_million / 1e6
            );
        }
    }
    Ok(())
}
