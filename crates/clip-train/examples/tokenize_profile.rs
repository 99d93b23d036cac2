//! Tokenizer throughput alone, for profilers: `cargo run --release -p clip-train --example tokenize_profile -- [runs] [passes]`.
//! The same 4,096 captions as `clipforge bench`, tokenized `passes` times per timed run.
use std::time::Instant;

use clip::Tokenizer;
use clip_data::{Shapes, Split};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let runs: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(10);
    let passes: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(16);
    let captions: Vec<String> = (0..4096)
        .map(|i| Shapes::new(1, Split::Train).scene(i).caption())
        .collect();
    let tokenizer = Tokenizer::new();
    for run in 0..runs {
        let t = Instant::now();
        for _ in 0..passes {
            std::hint::black_box(tokenizer.tokenize(&captions, 32));
        }
        let dt = t.elapsed().as_secs_f64();
        println!(
            "run {run}: {:.1} ms, {:.0} captions/s",
            dt * 1e3,
            (passes * captions.len()) as f64 / dt
        );
    }
}
