//! `clipforge eval`: zero-shot accuracy of a trained run on the built-in scenes' held-out
//! (never seen) colour–shape combinations, or CLIP_benchmark's tasks on a fetched dataset
//! (`--dataset DIR --task zeroshot|linear-probe`).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use candle_core::Device;
use clip::Clip;
use clip_train::{checkpoint, TrainConfig};

#[derive(clap::Args)]
#[command(
    after_help = "Example:\n  clipforge eval --checkpoint runs/quickstart --json\n\n\
Classes are the 64 colour–shape names (\"green triangle\"); 8 of the 64 combinations never occur\n\
in training. Each class is embedded through 3 prompt templates per size (\"a small {}\", …),\n\
averaged per size, and scores the better of its two sizes; the table also gives CLIP's single\n\
ensemble of all 6 templates, which a model that ties shape to size does worse on.\n\n\
On a fetched dataset (clipforge data fetch fashion-mnist):\n  \
clipforge eval --checkpoint runs/quickstart --dataset data/fashion-mnist --task zeroshot\n  \
clipforge eval --checkpoint runs/quickstart --dataset data/fashion-mnist --task linear-probe\n  \
clipforge eval --checkpoint runs/quickstart --dataset data/fashion-mnist --task linear-probe --features pixels\n\n\
zeroshot: the dataset's class names × its templates (dataset.json) → a classifier; top-1,\n\
top-5, mean per-class recall on the test split, and a confusion matrix PNG in the run\n\
directory. linear-probe: logistic regression on the frozen pre-projection image features\n\
(--features pixels: on the model's input pixels, the baseline), L2 strength chosen on 10% of\n\
the training rows. retrieval: image → text and text → image recall@1/5/10 on the test split\n\
(an image with several captions counts a hit on any of them). --json prints CLIP_benchmark's\n\
layout: {dataset, model, task, metrics}."
)]
pub struct Args {
    /// A run directory (its latest checkpoint) or a checkpoint directory.
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Images per split (built-in scenes), at least 1.
    #[arg(long, default_value_t = 512, value_parser = clap::value_parser!(u64).range(1..))]
    pub images: u64,
    /// A fetched dataset (a directory with dataset.json, or a name fetched into data/) instead
    /// of the built-in scenes.
    #[arg(long)]
    pub dataset: Option<PathBuf>,
    /// With --dataset: zeroshot, linear-probe (labelled sets) or retrieval (captioned sets).
    #[arg(long, default_value = "zeroshot")]
    pub task: String,
    /// Linear probe input: model (pre-projection image features) or pixels.
    #[arg(long, default_value = "model")]
    pub features: String,
    /// With --dataset: at most this many training images (the linear probe's fit).
    #[arg(long, default_value_t = 10_000)]
    pub train_limit: usize,
    /// With --dataset: at most this many test images.
    #[arg(long, default_value_t = 10_000)]
    pub test_limit: usize,
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
    if let Some(arg) = &args.dataset {
        let dir = clip_data::packaged::locate(arg, Path::new("data"))?;
        return eval_dataset(&args, &dir, &model, run_dir, &device);
    }
    let seed = cfg.data.builtin_seed().unwrap_or(cfg.seed);
    let report =
        clip_train::eval::zero_shot_builtin(&model, seed ^ 0xe7a1, args.images as usize, &device)?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print_builtin_report(&report);
    }
    Ok(())
}

/// The built-in scenes' zero-shot results as a Markdown table.
pub fn print_builtin_report(report: &clip_train::eval::ZeroShotReport) {
    let chance = 100.0 / report.classes as f64;
    let pct = |x: f64| format!("{:.1}%", 100.0 * x);
    println!(
        "| zero-shot, {} classes, {} images each | top-1 | top-5 |",
        report.classes, report.images
    );
    println!("|---|---|---|");
    let rows = [
        (
            "held-out combinations (never seen)",
            report.zero_shot_top1,
            report.zero_shot_top5,
        ),
        ("seen combinations", report.seen_top1, report.seen_top5),
        (
            "held-out, one ensemble of both sizes",
            report.ensemble_zero_shot_top1,
            report.ensemble_zero_shot_top5,
        ),
        (
            "seen, one ensemble of both sizes",
            report.ensemble_seen_top1,
            report.ensemble_seen_top5,
        ),
    ];
    for (name, top1, top5) in rows {
        println!("| {name} | {} | {} |", pct(top1), pct(top5));
    }
    println!("| chance | {:.1}% | {:.1}% |", chance, 5.0 * chance);
    println!(
        "A class scores its better size (3 templates per size averaged); \"one ensemble\" averages all 6.\n\
         Held-out top-1 of the right colour: {}, of the right shape: {}.",
        pct(report.heldout_colour_top1),
        pct(report.heldout_shape_top1)
    );
}

/// CLIP_benchmark's tasks on a fetched dataset.
fn eval_dataset(
    args: &Args,
    dir: &Path,
    model: &Clip,
    run_dir: &Path,
    device: &Device,
) -> Result<()> {
    use clip_train::dataset_eval as de;
    let info = clip_data::packaged::DatasetInfo::load(dir)?;
    let size = model.config.vision_cfg.image_size;
    if args.task == "retrieval" {
        let data = de::load_captioned(dir, &info, "test", args.test_limit, size, device)?;
        let m = de::retrieval(model, &data)?;
        if args.json {
            let v = serde_json::json!({"dataset": info.name, "model": run_dir.display().to_string(),
                "task": "zeroshot_retrieval", "metrics": m});
            println!("{v}");
            return Ok(());
        }
        println!(
            "| {} test: {} images, {} captions | R@1 | R@5 | R@10 |",
            info.name, m.images, m.texts
        );
        println!("|---|---|---|---|");
        println!(
            "| image → text | {:.1}% | {:.1}% | {:.1}% |",
            100.0 * m.text_r1,
            100.0 * m.text_r5,
            100.0 * m.text_r10
        );
        println!(
            "| text → image | {:.1}% | {:.1}% | {:.1}% |",
            100.0 * m.image_r1,
            100.0 * m.image_r5,
            100.0 * m.image_r10
        );
        let chance = |k: f64| 100.0 * (k / m.images as f64).min(1.0);
        println!(
            "| chance (text → image) | {:.1}% | {:.1}% | {:.1}% |",
            chance(1.0),
            chance(5.0),
            chance(10.0)
        );
        return Ok(());
    }
    let test = de::load_split(dir, &info, "test", args.test_limit, size, device)?;
    let (task, metrics, extra) = match args.task.as_str() {
        "zeroshot" => {
            let m = de::zero_shot(model, &info, &test)?;
            let png = run_dir.join(format!("confusion-{}-zeroshot.png", info.name));
            clip_train::plots::confusion_matrix(
                &png,
                &m.confusion,
                &info.classes,
                &format!(
                    "zero-shot on {} test ({} images): top-1 {:.1}%",
                    info.name,
                    m.n,
                    100.0 * m.acc1
                ),
            )?;
            (
                "zeroshot_classification",
                m,
                serde_json::json!({"confusion_png": png.display().to_string()}),
            )
        }
        "linear-probe" => {
            let train = de::load_split(dir, &info, "train", args.train_limit, size, device)?;
            let feats = |d: &de::Labelled| -> Result<candle_core::Tensor> {
                Ok(match args.features.as_str() {
                    "model" => de::image_features(model, &d.pixels, true)?,
                    "pixels" => d.pixels.flatten_from(1)?,
                    other => anyhow::bail!("--features {other}: expected model or pixels"),
                })
            };
            let (train_x, test_x) = (feats(&train)?, feats(&test)?);
            let bar = probe_bar(args.json);
            let r = de::linear_probe(
                (&train_x, &train.labels),
                (&test_x, &test.labels),
                info.classes.len(),
                0,
                &mut |done, total, l2| {
                    bar.set_length(total as u64);
                    bar.set_position(done as u64);
                    bar.set_message(if done + 1 < total {
                        format!("choosing L2 on the validation split: {l2:e}")
                    } else {
                        format!("final fit on all training rows, L2 {l2:e}")
                    });
                },
            )?;
            bar.finish_and_clear();
            let extra = serde_json::json!({"features": args.features, "feature_dim": r.feature_dim,
                "l2": r.l2, "validation_acc1": r.validation, "train_images": train.labels.len(),
                "lbfgs_iterations": r.iterations, "lbfgs_grad_max": r.grad_max});
            ("linear_probe", r.metrics, extra)
        }
        other => anyhow::bail!("--task {other}: expected zeroshot, linear-probe or retrieval"),
    };
    if args.json {
        let v = serde_json::json!({
            "dataset": info.name, "model": run_dir.display().to_string(), "task": task,
            "metrics": {"acc1": metrics.acc1, "acc5": metrics.acc5,
                        "mean_per_class_recall": metrics.mean_per_class_recall},
            "test_images": metrics.n, "classes": info.classes.len(), "details": extra,
        });
        println!("{v}");
        return Ok(());
    }
    let chance = 100.0 / info.classes.len() as f64;
    println!(
        "| {} test, {} images, {} | value | chance |",
        info.name, metrics.n, task
    );
    println!("|---|---|---|");
    println!("| top-1 | {:.1}% | {chance:.1}% |", 100.0 * metrics.acc1);
    println!(
        "| top-5 | {:.1}% | {:.1}% |",
        100.0 * metrics.acc5,
        (5.0 * chance).min(100.0)
    );
    println!(
        "| mean per-class recall | {:.1}% | {chance:.1}% |",
        100.0 * metrics.mean_per_class_recall
    );
    println!("{extra}");
    Ok(())
}

/// Progress over the probe's fits (L-BFGS, seconds to minutes each); hidden under `--json`.
fn probe_bar(hidden: bool) -> indicatif::ProgressBar {
    if hidden {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:30} {pos}/{len} probe fits  {msg}  [{elapsed}]",
        )
        .expect("valid template"),
    );
    bar
}
