//! `clipforge quickstart`: train the `tiny` preset on the built-in scenes, evaluate zero-shot on
//! held-out colour–shape combinations, print a table and where the run and plots are.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Result;
use clap::Parser;

use super::train;

#[derive(clap::Args)]
#[command(
    after_help = "Example:\n  clipforge quickstart            # about the time on the README, on 2 CPU cores\n  \
clipforge quickstart --json     # the metrics as one JSON object"
)]
pub struct Args {
    /// Run directory.
    #[arg(long, default_value = "runs/quickstart")]
    pub out: PathBuf,
    /// Training steps.
    #[arg(long, default_value_t = QUICKSTART_STEPS)]
    pub steps: u64,
    /// Pairs per step.
    #[arg(long, default_value_t = QUICKSTART_BATCH)]
    pub batch_size: usize,
    /// Seed.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Scenes come in groups of K differing only in shape (hard negatives; 1: off).
    #[arg(long, default_value_t = QUICKSTART_HARD_NEGATIVES, value_name = "K")]
    pub hard_negatives: usize,
    /// Peak learning rate.
    #[arg(long, default_value_t = QUICKSTART_LR)]
    pub lr: f64,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Print the metrics as one JSON object (and no progress bar).
    #[arg(long)]
    pub json: bool,
}

/// `train`'s flags at their defaults.
#[derive(Parser)]
struct DefaultTrainArgs {
    #[command(flatten)]
    args: train::Args,
}

pub const QUICKSTART_STEPS: u64 = 800;
pub const QUICKSTART_BATCH: usize = 64;
pub const QUICKSTART_HARD_NEGATIVES: usize = 1;
pub const QUICKSTART_LR: f64 = 1e-3;

pub fn run(args: Args) -> Result<()> {
    let start = Instant::now();
    let mut targs = DefaultTrainArgs::parse_from(["train"]).args;
    targs.model = "tiny".into();
    targs.out = args.out.clone();
    targs.steps = Some(args.steps);
    targs.batch_size = args.batch_size;
    targs.seed = args.seed;
    targs.lr = args.lr;
    targs.hard_negatives = args.hard_negatives;
    targs.wd = 0.1;
    targs.checkpoint_every = 200;
    targs.quiet = args.json;
    targs.device = args.device.clone();
    let trainer = train::train(&targs, args.steps)?;
    let device = trainer.device.clone();
    let report =
        clip_train::eval::zero_shot_builtin(&trainer.model, args.seed ^ 0xe7a1, 512, &device)?;
    let seconds = start.elapsed().as_secs_f64();
    if args.json {
        let mut v = serde_json::to_value(&report)?;
        v["steps"] = trainer.step.into();
        v["seconds"] = seconds.into();
        v["run_dir"] = trainer.run_dir.display().to_string().into();
        println!("{v}");
        return Ok(());
    }
    println!();
    super::eval::print_builtin_report(&report);
    println!();
    println!(
        "trained `tiny` for {} steps of {} pairs in {:.0} s",
        trainer.step, trainer.cfg.batch_size, seconds
    );
    let d = trainer.run_dir.display();
    println!("run directory: {d} (config.json, metrics.jsonl, checkpoints/)");
    println!("plots: {d}/loss.png, {d}/similarity_start.png, {d}/similarity_end.png");
    Ok(())
}
