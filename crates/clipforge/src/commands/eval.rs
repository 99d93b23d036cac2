//! `clipforge eval`: zero-shot accuracy of a trained run on the built-in scenes' held-out
//! (never seen) colour–shape combinations, or CLIP_benchmark's tasks on a fetched dataset
//! (`--dataset DIR --task zeroshot|linear-probe|retrieval`) or a labelled image folder
//! (`--dataset folder:PATH`).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use candle_core::Device;
use clip::Clip;
use clip_data::packaged::DatasetInfo;
use clip_train::dataset_eval as de;
use clip_train::encode::{image_features, ImageFeature};
use clip_train::eval::eval_seed;
use clip_train::{checkpoint, TrainConfig};

#[derive(clap::Args)]
#[command(
    after_help = "Example:\n  clipforge eval --checkpoint runs/quickstart --json\n\n\
Classes are the 64 colour–shape names (\"green triangle\"); 8 of the 64 combinations never occur\n\
in training. Each class is CLIP's prompt ensemble: 6 templates (\"a {}\", \"a picture of a {}\", …)\n\
embedded, averaged and normalised into one row.\n\n\
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
layout: {dataset, model, task, metrics}.\n\n\
On your own photos, a folder with one sub-folder per class (its name the class, _ as a space):\n  \
clipforge eval --checkpoint runs/quickstart --dataset folder:photos --task zeroshot\n  \
clipforge eval --checkpoint runs/quickstart --dataset folder:photos --templates my_templates.txt\n  \
clipforge eval --checkpoint runs/quickstart --dataset folder:photos --task linear-probe\n\
Zero-shot reads every image with CLIP's 80 ImageNet templates (or --templates: one per line, {}\n\
for the class); the linear probe fits on a fixed 90% of the images and measures the other 10%.\n\n\
On an image,caption listing (CSV/TSV, image paths relative to it; rows naming one image are one\n\
image with several captions):\n  \
clipforge eval --checkpoint runs/quickstart --dataset captions-csv:pairs.csv --task retrieval"
)]
pub struct Args {
    /// A run directory (its latest checkpoint) or a checkpoint directory.
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Images per split (built-in scenes), at least 1.
    #[arg(long, default_value_t = 512, value_parser = clap::value_parser!(u64).range(1..))]
    pub images: u64,
    /// A fetched dataset (a directory with dataset.json, or a name fetched into data/), or
    /// folder:PATH, a labelled image folder (one sub-folder per class), instead of the
    /// built-in scenes.
    #[arg(long)]
    pub dataset: Option<PathBuf>,
    /// Zero-shot templates from this file, one per line with {} for the class name [default:
    /// the dataset's own; CLIP's 80 ImageNet templates for folder:PATH].
    #[arg(long)]
    pub templates: Option<PathBuf>,
    /// With --dataset: what to measure.
    #[arg(long, value_enum, default_value_t = Task::Zeroshot)]
    pub task: Task,
    /// The linear probe's input.
    #[arg(long, value_enum, default_value_t = Features::Model)]
    pub features: Features,
    /// With captions-csv:FILE: the image column (paths relative to the file).
    #[arg(long, default_value = "filepath")]
    pub csv_img_key: String,
    /// With captions-csv:FILE: the caption column.
    #[arg(long, default_value = "title")]
    pub csv_caption_key: String,
    /// With --dataset: at most this many training images (the linear probe's fit).
    #[arg(long, default_value_t = 10_000)]
    pub train_limit: usize,
    /// With --dataset: at most this many test images.
    #[arg(long, default_value_t = 10_000)]
    pub test_limit: usize,
    /// Precision of the encoders' products: bf16 rounds the blocks' weight products to bf16
    /// and sums in f32 (where the CPU has AMX or AVX512-BF16; f32 elsewhere); int8 quantises them (weights
    /// per column, inputs per row, i32 sums). To measure what each costs in accuracy.
    #[arg(long, value_enum, default_value_t = super::DtypeArg::F32)]
    pub dtype: super::DtypeArg,
    /// Print the metrics as one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// An evaluation on a fetched dataset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Task {
    /// Zero-shot classification from class names and templates (labelled sets).
    Zeroshot,
    /// Logistic regression on frozen features (labelled sets).
    LinearProbe,
    /// Image ↔ text recall@1/5/10 (captioned sets).
    Retrieval,
}

/// What the linear probe reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Features {
    /// The image tower's pooled feature, before the projection head.
    Model,
    /// The model's input pixels, flattened: the baseline.
    Pixels,
}

pub fn run(args: Args) -> Result<()> {
    args.dtype.infer(|| evaluate(&args))
}

fn evaluate(args: &Args) -> Result<()> {
    let ckpt = checkpoint::resolve(&args.checkpoint)?;
    let run_dir = ckpt
        .parent()
        .and_then(|p| p.parent())
        .context("checkpoint outside a run directory")?;
    let cfg = TrainConfig::load(&run_dir.join("config.json"))?;
    let device = Device::Cpu;
    let (model, varmap) = Clip::with_varmap(&cfg.model, &device)?;
    clip::weights::load_into(&varmap, &ckpt.join("model.safetensors"))?;
    if let Some(arg) = &args.dataset {
        if let Some(root) = arg.to_str().and_then(|a| a.strip_prefix("folder:")) {
            return eval_folder(args, Path::new(root), &model, run_dir, &device);
        }
        if let Some(list) = arg.to_str().and_then(|a| a.strip_prefix("captions-csv:")) {
            return eval_caption_list(args, Path::new(list), &model, run_dir, device);
        }
        let dir = clip_data::packaged::locate(arg, Path::new("data"))?;
        return eval_dataset(args, &dir, &model, run_dir, &device);
    }
    let seed = cfg.data.builtin_seed().unwrap_or(cfg.seed);
    let report = clip_train::eval::zero_shot_builtin(
        &model,
        eval_seed(seed),
        args.images as usize,
        &device,
    )?;
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
            report.heldout_top1,
            report.heldout_top5,
        ),
        ("seen combinations", report.seen_top1, report.seen_top5),
    ];
    for (name, top1, top5) in rows {
        println!("| {name} | {} | {} |", pct(top1), pct(top5));
    }
    println!("| chance | {:.1}% | {:.1}% |", chance, 5.0 * chance);
    println!(
        "Each class is one ensemble of {} prompt templates. Held-out top-1 of the right colour: {}, \
         of the right shape: {}.",
        clip_data::synthetic::TEMPLATES.len(),
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
    let info = DatasetInfo::load(dir)?;
    let size = model.config.vision_cfg.image_size;
    if args.task == Task::Retrieval {
        let data = de::load_captioned(dir, &info, "test", args.test_limit, size, device)?;
        return report_retrieval(args, &info.name, model, &data, run_dir);
    }
    let test = de::load_split(dir, &info, "test", args.test_limit, size, device)?;
    let templates = match &args.templates {
        Some(path) => clip_train::templates::read(path)?,
        None => info.templates.clone(),
    };
    let set = Set {
        name: &info.name,
        classes: &info.classes,
        templates: &templates,
    };
    let result = match args.task {
        Task::Zeroshot => zero_shot(model, &set, &test, run_dir)?,
        Task::LinearProbe => {
            let train = de::load_split(dir, &info, "train", args.train_limit, size, device)?;
            linear_probe(args, model, set.classes.len(), &train, &test)?
        }
        Task::Retrieval => unreachable!("handled above"),
    };
    report(args, &set, run_dir, result);
    Ok(())
}

/// A labelled image folder (`folder:PATH`): zero-shot on all of it, or a linear probe fitted
/// on its fixed 90% and measured on the other 10%.
fn eval_folder(
    args: &Args,
    root: &Path,
    model: &Clip,
    run_dir: &Path,
    device: &Device,
) -> Result<()> {
    let folder = clip_data::ImageFolder::read(root)?;
    let templates = match &args.templates {
        Some(path) => clip_train::templates::read(path)?,
        None => clip_train::templates::IMAGENET.map(String::from).to_vec(),
    };
    let name = root.display().to_string();
    let set = Set {
        name: &name,
        classes: &folder.classes,
        templates: &templates,
    };
    let size = model.config.vision_cfg.image_size;
    let (n, limit) = (folder.classes.len(), args.test_limit);
    // Past the limit, evenly spaced samples: the folder is in class order, so its first
    // `limit` would leave the last classes out.
    let load = |samples: Vec<clip_data::RawSample>, limit: usize, what: &str| {
        let step = samples.len().div_ceil(limit.max(1)).max(1);
        let samples: Vec<_> = samples.into_iter().step_by(step).collect();
        de::labelled(&samples, n, &format!("{name} ({what})"), size, device)
    };
    let result = match args.task {
        Task::Zeroshot => zero_shot(
            model,
            &set,
            &load(folder.samples.clone(), limit, "all")?,
            run_dir,
        )?,
        Task::LinearProbe => {
            let train = load(folder.split(false), args.train_limit, "90% split")?;
            let test = load(folder.split(true), limit, "10% split")?;
            linear_probe(args, model, n, &train, &test)?
        }
        Task::Retrieval => anyhow::bail!(
            "--task retrieval needs captions; folder:{} is labelled: use zeroshot or linear-probe",
            root.display()
        ),
    };
    report(args, &set, run_dir, result);
    Ok(())
}

/// Image ↔ text retrieval over an image–caption listing (CSV or TSV; `--csv-img-key`,
/// `--csv-caption-key` name the columns); rows naming the same image are one image with
/// several captions.
fn eval_caption_list(
    args: &Args,
    list: &Path,
    model: &Clip,
    run_dir: &Path,
    device: Device,
) -> Result<()> {
    if args.task != Task::Retrieval {
        anyhow::bail!(
            "--dataset captions-csv:{} holds captions, not labels: use --task retrieval",
            list.display()
        );
    }
    let (samples, skips) =
        clip_data::files::read_csv(list, &args.csv_img_key, &args.csv_caption_key)?;
    if skips.total() > 0 {
        tracing::warn!(?skips, "{}: rows skipped", list.display());
    }
    let size = model.config.vision_cfg.image_size;
    let name = list.display().to_string();
    let data = de::captioned(samples, args.test_limit, &name, size, &device)?;
    report_retrieval(args, &name, model, &data, run_dir)
}

/// Retrieval recall over `data`, as JSON or a Markdown table.
fn report_retrieval(
    args: &Args,
    name: &str,
    model: &Clip,
    data: &de::Captioned,
    run_dir: &Path,
) -> Result<()> {
    let m = de::retrieval(model, data)?;
    if args.json {
        let v = serde_json::json!({"dataset": name, "model": run_dir.display().to_string(),
            "task": "zeroshot_retrieval", "metrics": m});
        println!("{v}");
    } else {
        print_retrieval(name, &m);
    }
    Ok(())
}

/// A labelled set: its name, class names and zero-shot templates.
struct Set<'a> {
    name: &'a str,
    classes: &'a [String],
    templates: &'a [String],
}

/// A classification task's result as JSON or a Markdown table.
fn report(args: &Args, set: &Set, run_dir: &Path, (task, metrics, extra): TaskResult) {
    if args.json {
        let v = serde_json::json!({
            "dataset": set.name, "model": run_dir.display().to_string(), "task": task,
            "metrics": {"acc1": metrics.acc1, "acc5": metrics.acc5,
                        "mean_per_class_recall": metrics.mean_per_class_recall},
            "test_images": metrics.n, "classes": set.classes.len(), "details": extra,
        });
        println!("{v}");
        return;
    }
    let chance = 100.0 / set.classes.len() as f64;
    println!(
        "| {}, {} test images, {} | value | chance |",
        set.name, metrics.n, task
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
}

/// A task's name in the JSON output, its metrics and its details.
type TaskResult = (&'static str, de::ClassMetrics, serde_json::Value);

/// Zero-shot classification, with a confusion-matrix PNG in the run directory.
fn zero_shot(model: &Clip, set: &Set, test: &de::Labelled, run_dir: &Path) -> Result<TaskResult> {
    let m = de::zero_shot(model, set.classes, set.templates, test)?;
    let file = set.name.replace(['/', '\\', ':'], "_");
    let png = run_dir.join(format!("confusion-{file}-zeroshot.png"));
    let title = format!(
        "zero-shot on {} ({} images): top-1 {:.1}%",
        set.name,
        m.n,
        100.0 * m.acc1
    );
    clip_train::plots::confusion_matrix(&png, &m.confusion, set.classes, &title)?;
    let extra = serde_json::json!({"confusion_png": png.display().to_string()});
    Ok(("zeroshot_classification", m, extra))
}

/// A linear probe on `args.features`, its L2 strength chosen on a validation split.
fn linear_probe(
    args: &Args,
    model: &Clip,
    classes: usize,
    train: &de::Labelled,
    test: &de::Labelled,
) -> Result<TaskResult> {
    let feats = |d: &de::Labelled| -> Result<candle_core::Tensor> {
        Ok(match args.features {
            Features::Model => image_features(model, &d.pixels, ImageFeature::PreProjection)?,
            Features::Pixels => d.pixels.flatten_from(1)?,
        })
    };
    let (train_x, test_x) = (feats(train)?, feats(test)?);
    let bar = probe_bar(args.json);
    let r = de::linear_probe(
        (&train_x, &train.labels),
        (&test_x, &test.labels),
        classes,
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
    let features = match args.features {
        Features::Model => "model",
        Features::Pixels => "pixels",
    };
    let extra = serde_json::json!({"features": features, "feature_dim": r.feature_dim,
        "l2": r.l2, "validation_acc1": r.validation, "train_images": train.labels.len(),
        "lbfgs_iterations": r.iterations, "lbfgs_grad_max": r.grad_max});
    Ok(("linear_probe", r.metrics, extra))
}

/// Retrieval recall as a Markdown table, with chance.
fn print_retrieval(name: &str, m: &de::RetrievalMetrics) {
    println!(
        "| {name} test: {} images, {} captions | R@1 | R@5 | R@10 |",
        m.images, m.texts
    );
    println!("|---|---|---|---|");
    let pct = |x: f64| 100.0 * x;
    let (t, i) = (
        [m.text_r1, m.text_r5, m.text_r10].map(pct),
        [m.image_r1, m.image_r5, m.image_r10].map(pct),
    );
    println!(
        "| image → text | {:.1}% | {:.1}% | {:.1}% |",
        t[0], t[1], t[2]
    );
    println!(
        "| text → image | {:.1}% | {:.1}% | {:.1}% |",
        i[0], i[1], i[2]
    );
    let chance = |k: f64| 100.0 * (k / m.images as f64).min(1.0);
    println!(
        "| chance (text → image) | {:.1}% | {:.1}% | {:.1}% |",
        chance(1.0),
        chance(5.0),
        chance(10.0)
    );
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
