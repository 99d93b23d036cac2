//! `clipforge init`: write a freshly initialised model (open_clip's initialisation, seeded).

use std::path::PathBuf;

use anyhow::Result;
use candle_core::Device;
use clip::{init, weights, Clip, ClipConfig};

#[derive(clap::Args)]
#[command(
    after_help = "Example:\n  clipforge init --model tiny --seed 0 --out tiny-init.safetensors\n\n\
The file has open_clip's state-dict keys; the same seed gives the same weights."
)]
pub struct Args {
    /// A preset (tiny, small, ViT-B-32, ViT-B-16, ViT-L-14; lit-dinov2-s14, lit-dinov2-s14-minilm with fetched towers) or an open_clip-format config JSON.
    #[arg(long)]
    pub model: String,
    /// Seed of the initialisation.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Where to write the weights (.safetensors).
    #[arg(long)]
    pub out: PathBuf,
}

pub fn run(args: Args) -> Result<()> {
    let cfg = ClipConfig::resolve(&args.model)?;
    let (_model, varmap) = Clip::with_varmap(&cfg, &Device::Cpu)?;
    init::init_parameters(&varmap, &cfg, args.seed)?;
    weights::save(&varmap, &args.out)?;
    let params: usize = varmap.all_vars().iter().map(|v| v.elem_count()).sum();
    eprintln!(
        "wrote {} ({} parameters, seed {})",
        args.out.display(),
        params,
        args.seed
    );
    Ok(())
}
