//! `clipforge eval`: zero-shot accuracy of a trained run on the built-in scenes' held-out
//! (never seen) colour–shape combinations.

use std::path::PathBuf;

use anyhow::{Context, Result};
use candle_core::Device;
use clip::Clip;
use clip_train::{checkpoint, TrainConfig};

#[derive(clap::Args)]
#[command(
    after_help = "Example:\n  clipforge eval --checkpoint runs/quickstart --json\n\n\
Classes are the 64 colour–shape names (\"green triangle\"), each embedded through 6 prompt\n\
templates (both sizes) and averaged; 8 of the 64 combinations never occur in training."
)]
pub struct Args {
    /// A run directory (its latest checkpoint) or a checkpoint directory.
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Images per split.
    #[arg(long, default_value_t = 512)]
    pub images: usize,
    /// Print the metrics as one JSON object.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args) -> Result<()> {
    let ckpt = checkpoint::resolve(&args.checkpoint)?;
    let run_dir = ckpt
        .parent()
        .and_then(|p| p.parent())
        .context("checkpoint outside a run directory")?;
    let cfg_path = run_dir.join("config.json");
    let cfg: TrainConfig = serde_json::from_str(
        &std::fs::read_to_string(&cfg_path)
            .with_context(|| format!("reading {}", cfg_path.display()))?,
    )
    .with_context(|| format!("{}: not a training config", cfg_path.display()))?;
    let device = Device::Cpu;
    let (model, varmap) = Clip::with_varmap(&cfg.model, &device)?;
    clip::weights::load_into(&varmap, &ckpt.join("model.safetensors"))?;
    let seed = cfg.data.builtin_seed().unwrap_or(cfg.seed);
    let report = clip_train::eval::zero_shot_builtin(&model, seed ^ 0xe7a1, args.images, &device)?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!(
            "zero-shot on {} images per split, {} classes (chance top-1 {:.1}%)",
            report.images,
            report.classes,
            100.0 / report.classes as f64
        );
        println!(
            "  held-out combinations: top-1 {:5.1}%  top-5 {:5.1}%",
            100.0 * report.zero_shot_top1,
            100.0 * report.zero_shot_top5
        );
        println!(
            "  seen combinations:     top-1 {:5.1}%  top-5 {:5.1}%",
            100.0 * report.seen_top1,
            100.0 * report.seen_top5
        );
    }
    Ok(())
}
