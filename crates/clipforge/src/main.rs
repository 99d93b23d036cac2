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

#[derive(Subcommand)]
enum Command {
    /// Turn texts into CLIP token ids (OpenAI's BPE vocabulary, 49,408 ids).
    Tokenize(commands::tokenize::Args),
    /// Write a freshly initialised model's weights (open_clip's initialisation, seeded).
    Init(commands::init::Args),
    /// Embed texts and images with a model into the shared, L2-normalised space.
    Embed(commands::embed::Args),
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Tokenize(args) => commands::tokenize::run(args),
        Command::Embed(args) => commands::embed::run(args),
        Command::Init(args) => commands::init::run(args),
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
