//! `clipforge tokenize`: texts → token ids, exactly as OpenAI's `clip.tokenize`.

use anyhow::{bail, Result};
use clip::Tokenizer;

#[derive(clap::Args)]
#[command(
    after_help = "Example:\n  clipforge tokenize --json \"a photo of a cat\" \"a dog\"\n\n\
Each row is <start_of_text>=49406, the BPE ids, <end_of_text>=49407, then 0 padding; a text\n\
longer than the context is cut and its last id set to <end_of_text>."
)]
pub struct Args {
    /// Ids per row (77 for OpenAI's models; the `tiny` preset uses 32).
    #[arg(long, default_value_t = 77)]
    pub context_length: usize,
    /// Print one JSON array of id arrays instead of one line of ids per text.
    #[arg(long)]
    pub json: bool,
    /// The texts to tokenize.
    #[arg(required = true)]
    pub texts: Vec<String>,
}

pub fn run(args: Args) -> Result<()> {
    if args.context_length < 3 {
        bail!(
            "--context-length must be at least 3 (start, one token, end), got {}",
            args.context_length
        );
    }
    let tok = Tokenizer::new();
    let rows = tok.tokenize(&args.texts, args.context_length);
    if args.json {
        println!("{}", serde_json::to_string(&rows)?);
    } else {
        for row in rows {
            let line: Vec<String> = row.iter().map(u32::to_string).collect();
            println!("{}", line.join(" "));
        }
    }
    Ok(())
}
