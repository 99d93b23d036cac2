//! `clipforge quickstart`: train the `tiny` preset on the built-in scenes, evaluate zero-shot on
//! held-out colour–shape combinations, print a table and where the run and plots are.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Result;
use clip_train::config::{defaults, quickstart};
use clip_train::{DataSpec, TrainConfig, Trainer};

use super::train;
use clip_train::eval::eval_seed;

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
    #[arg(long, default_value_t = quickstart::STEPS)]
    pub steps: u64,
    /// Pairs per step.
    #[arg(long, default_value_t = quickstart::BATCH_SIZE)]
    pub batch_size: usize,
    /// Seed.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Scenes come in groups of K differing only in shape (hard negatives; 1: off).
    #[arg(long, default_value_t = quickstart::HARD_NEGATIVES, value_name = "K")]
    pub hard_negatives: usize,
    /// Peak learning rate.
    #[arg(long, default_value_t = quickstart::LR)]
    pub lr: f64,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: super::DeviceArg,
    /// Precision of the training products, as `train --dtype` (bf16: CPU autocast).
    #[arg(long, value_enum, default_value = "f32", value_name = "DTYPE")]
    pub dtype: train::TrainDtype,
    /// Print the metrics as one JSON object (and no progress bar).
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args) -> Result<()> {
    let start = Instant::now();
    let mut cfg = TrainConfig::quickstart(args.seed);
    cfg.steps = args.steps;
    cfg.warmup = defaults::warmup(args.steps);
    cfg.batch_size = args.batch_size;
    cfg.lr = args.lr;
    cfg.bf16 = args.dtype == train::TrainDtype::Bf16;
    if let DataSpec::Builtin { hard_negatives, .. } = &mut cfg.data {
        *hard_negatives = args.hard_negatives;
    }
    let device = args.device.open()?;
    args.dtype.check_device(&device)?;
    let trainer = Trainer::new_on(cfg, &args.out, device)?;
    let trainer = train::run_trainer(trainer, args.json)?;
    let device = trainer.device.clone();
    let report =
        clip_train::eval::zero_shot_builtin(&trainer.model, eval_seed(args.seed), 512, &device)?;
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
