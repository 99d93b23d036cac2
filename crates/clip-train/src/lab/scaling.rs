//! `clipforge lab scaling`: the image tower grown in one dimension at a time (width, depth,
//! input resolution) and in all three together (compound scaling, as the paper's §2.4 does
//! for its ResNets), each variant trained for the same compute, scored along the way.

use serde_json::json;

use super::figures::curves;
use super::report::{pct, table, training_cell, Report};
use super::runs::{model_at, train_or_reuse};
use super::LabOptions;
use crate::config::TrainConfig;
use crate::error::{io, Result};
use crate::eval::{eval_seed, zero_shot_builtin};
use crate::step::StepMetrics;

/// One image tower: (image side, width, layers); 4 heads throughout, patches of 4 pixels.
#[derive(Debug, Clone, Copy)]
struct Tower {
    family: &'static str,
    size: usize,
    width: usize,
    layers: usize,
}

const BASE: Tower = Tower {
    family: "base",
    size: 32,
    width: 128,
    layers: 4,
};

/// The variants: about 2× and 4× the base tower's FLOPs along each family.
fn variants(quick: bool) -> Vec<Tower> {
    let t = |family, size, width, layers| Tower {
        family,
        size,
        width,
        layers,
    };
    let mut v = vec![
        BASE,
        t("width", 32, 192, 4),
        t("depth", 32, 128, 8),
        t("resolution", 44, 128, 4),
        t("compound", 36, 144, 5),
    ];
    if !quick {
        v.extend([
            t("width", 32, 256, 4),
            t("depth", 32, 128, 16),
            t("resolution", 60, 128, 4),
            t("compound", 44, 160, 5),
        ]);
    }
    v
}

const FAMILIES: [&str; 4] = ["width", "depth", "resolution", "compound"];

struct Outcome {
    tower: Tower,
    image_flops: f64,
    step_flops: f64,
    steps: u64,
    /// (training FLOPs so far, held-out top-1) at each quarter of the run.
    along: Vec<(f64, f64)>,
    heldout_top1: f64,
    seen_top1: f64,
    /// (training FLOPs so far, mean loss) over windows of the run.
    loss: Vec<(f64, f64)>,
    train_seconds: f64,
    reused: bool,
}

fn config_for(opts: &LabOptions, tower: Tower, steps: u64, seed: u64) -> TrainConfig {
    let mut cfg = opts.base_config(steps, seed);
    let v = &mut cfg.model.vision_cfg;
    v.image_size = tower.size;
    v.width = tower.width;
    v.layers = tower.layers;
    v.head_width = tower.width / 4;
    cfg
}

/// Mean loss over `windows` equal stretches of a run's `metrics.jsonl`, against FLOPs.
fn loss_curve(
    run_dir: &std::path::Path,
    step_flops: f64,
    windows: usize,
) -> Result<Vec<(f64, f64)>> {
    let path = run_dir.join("metrics.jsonl");
    let text = std::fs::read_to_string(&path).map_err(io(&path))?;
    let losses: Vec<f64> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<StepMetrics>(l).ok())
        .map(|m| m.loss)
        .collect();
    let w = (losses.len() / windows).max(1);
    Ok(losses
        .chunks(w)
        .enumerate()
        .map(|(i, c)| {
            let mid = (i * w) as f64 + c.len() as f64 / 2.0;
            (mid * step_flops, c.iter().sum::<f64>() / c.len() as f64)
        })
        .collect())
}

pub fn run(opts: &LabOptions) -> Result<Report> {
    let seed = 0;
    let base_steps = opts.steps(1200, 300);
    let images = opts.images(512, 256);
    let along_images = opts.images(256, 128);
    let batch = opts.base_config(1, seed).batch_size;
    let base_step_flops = config_for(opts, BASE, 1, seed)
        .model
        .train_step_flops(batch);
    let budget = base_steps as f64 * base_step_flops;
    let mut outcomes = Vec::new();
    for tower in variants(opts.quick) {
        let probe = config_for(opts, tower, 1, seed);
        let step_flops = probe.model.train_step_flops(batch);
        let steps = ((budget / step_flops).round() as u64).max(4);
        let steps = opts.max_steps.map_or(steps, |m| steps.min(m));
        let cfg = config_for(opts, tower, steps, seed);
        let tag = format!(
            "scale-{}{}-{}-{}",
            tower.family, tower.size, tower.width, tower.layers
        );
        let trained = train_or_reuse(opts, &tag, &cfg)?;
        let every = cfg.checkpoint_every;
        let mut marks: Vec<u64> = (1..4).map(|k| k * every).filter(|&s| s < steps).collect();
        marks.push(steps);
        let mut along = Vec::new();
        for &s in &marks {
            let model = if s == steps {
                trained.model.clone()
            } else {
                model_at(&cfg, &trained.run_dir, s, opts)?
            };
            let zs = zero_shot_builtin(&model, eval_seed(seed), along_images, &opts.device)?;
            along.push((s as f64 * step_flops, zs.heldout_top1));
        }
        let zs = zero_shot_builtin(&trained.model, eval_seed(seed), images, &opts.device)?;
        outcomes.push(Outcome {
            tower,
            image_flops: cfg.model.image_forward_flops(),
            step_flops,
            steps,
            along,
            heldout_top1: zs.heldout_top1,
            seen_top1: zs.seen_top1,
            loss: loss_curve(&trained.run_dir, step_flops, 20)?,
            train_seconds: trained.train_seconds,
            reused: trained.reused,
        });
    }

    let dir = opts.out.join("scaling");
    let base = &outcomes[0];
    let family_series: Vec<(String, Vec<(f64, f64)>)> = FAMILIES
        .iter()
        .map(|f| {
            let pts = std::iter::once(base)
                .chain(outcomes.iter().filter(|o| o.tower.family == *f))
                .map(|o| {
                    (
                        (o.image_flops / base.image_flops).log2(),
                        100.0 * o.heldout_top1,
                    )
                })
                .collect();
            (f.to_string(), pts)
        })
        .collect();
    curves(
        &dir.join("families.png"),
        "held-out top-1 at equal training compute, by how the image tower grew",
        ("log2 (image tower FLOPs / base)", "held-out top-1 %"),
        &family_series,
    )?;
    let label = |o: &Outcome| {
        format!(
            "{} {}px w{} d{}",
            o.tower.family, o.tower.size, o.tower.width, o.tower.layers
        )
    };
    curves(
        &dir.join("along_training.png"),
        "held-out top-1 along training, against training FLOPs",
        ("training TFLOPs", "held-out top-1 %"),
        &outcomes
            .iter()
            .map(|o| {
                (
                    label(o),
                    o.along
                        .iter()
                        .map(|&(f, a)| (f / 1e12, 100.0 * a))
                        .collect(),
                )
            })
            .collect::<Vec<_>>(),
    )?;
    curves(
        &dir.join("loss.png"),
        "training loss against training FLOPs",
        ("training TFLOPs", "loss (window means)"),
        &outcomes
            .iter()
            .map(|o| {
                (
                    label(o),
                    o.loss.iter().map(|&(f, l)| (f / 1e12, l)).collect(),
                )
            })
            .collect::<Vec<_>>(),
    )?;

    let mut r = Report::new("scaling", "Width, depth or resolution?", opts.quick);
    r.question = "What does it mean to scale a model \"in only one dimension\", and what does \
        each dimension buy? The paper (§2.4) follows EfficientNet: rather than only making the \
        image encoder wider or deeper or feeding it larger images, it spreads extra compute \
        over all three. Here each is tried alone and together, at the same training compute."
        .into();
    r.setup =
        format!(
        "`tiny`'s image tower (32 px, patches of 4, width 128, 4 blocks, 4 heads) grown to about \
         2×{} its FLOPs per image along one dimension at a time: width (192{}), depth (8{} \
         blocks), resolution (44{} px: more patches of the same size), and all three together \
         (36 px, width 144, 5 blocks{}); the text tower unchanged. Every variant is trained \
         for the same compute: the base's {base_steps} steps of {batch} pairs ({:.2} PFLOPs, \
         counted by `clip::flops`, backward as twice the forward), so a tower twice as costly \
         trains for about half the steps. Quickstart recipe otherwise (seed {seed}). Held-out \
         top-1 zero-shot at each quarter of the run on {along_images} scenes, at the end on \
         {images}.",
        if opts.quick { "" } else { " and 4×" },
        if opts.quick { "" } else { ", 256" },
        if opts.quick { "" } else { ", 16" },
        if opts.quick { "" } else { ", 60" },
        if opts.quick { "" } else { "; 44 px, width 160, 5 blocks" },
        budget / 1e12
    );
    let rows: Vec<Vec<String>> = outcomes
        .iter()
        .map(|o| {
            vec![
                o.tower.family.to_string(),
                format!("{} px", o.tower.size),
                o.tower.width.to_string(),
                o.tower.layers.to_string(),
                format!(
                    "{:.0} M ({:.2}×)",
                    o.image_flops / 1e6,
                    o.image_flops / base.image_flops
                ),
                o.steps.to_string(),
                pct(o.heldout_top1),
                pct(o.seen_top1),
                format!("{:.3}", o.loss.last().map_or(f64::NAN, |l| l.1)),
                training_cell(o.train_seconds, o.reused),
            ]
        })
        .collect();
    r.sections.push(format!(
        "## Results\n\n{}\n\n![families](scaling/families.png)\n\n![along training](scaling/along_training.png)\n\n![loss](scaling/loss.png)",
        table(
            &[
                "family",
                "image",
                "width",
                "blocks",
                "image FLOPs",
                "steps",
                "held-out top-1",
                "seen top-1",
                "final loss",
                "training",
            ],
            &rows
        )
    ));
    let best = outcomes
        .iter()
        .max_by(|a, b| a.heldout_top1.total_cmp(&b.heldout_top1))
        .expect("runs");
    let per_family = FAMILIES
        .iter()
        .map(|f| {
            let v: Vec<String> = outcomes
                .iter()
                .filter(|o| o.tower.family == *f)
                .map(|o| {
                    format!(
                        "{:.1}× {}",
                        o.image_flops / base.image_flops,
                        pct(o.heldout_top1)
                    )
                })
                .collect();
            format!("{f}: {}", v.join(", "))
        })
        .collect::<Vec<_>>()
        .join("; ");
    let seconds = |o: &Outcome| o.train_seconds;
    let base_wins = std::ptr::eq(best, base);
    r.shows = vec![
        if base_wins {
            format!(
                "At this compute no grown tower beats the base ({} held-out top-1): each \
                 trains for a half or a quarter of the base's steps and ends with a higher \
                 loss. For a small budget the small model is the compute-optimal one; growing \
                 the model pays only when the compute grows with it (the scaling-law finding).",
                pct(base.heldout_top1)
            )
        } else {
            format!(
                "At this compute the best held-out top-1 is the {} variant's ({}); the base \
                 tower reaches {}.",
                label(best),
                pct(best.heldout_top1),
                pct(base.heldout_top1)
            )
        },
        {
            let fams: Vec<(&str, f64)> = FAMILIES
                .iter()
                .filter_map(|f| {
                    outcomes
                        .iter()
                        .filter(|o| o.tower.family == *f)
                        .min_by(|a, b| a.image_flops.total_cmp(&b.image_flops))
                        .map(|o| (*f, o.heldout_top1))
                })
                .collect();
            let (bf, bv) = fams
                .iter()
                .copied()
                .max_by(|a, b| a.1.total_cmp(&b.1))
                .unwrap_or(("none", 0.0));
            format!(
                "Among the towers grown about 2×, {bf} does best ({}): {}.",
                pct(bv),
                fams.iter()
                    .map(|(f, v)| format!("{f} {}", pct(*v)))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        },
        format!("Held-out top-1 by family and FLOPs ratio: {per_family}."),
        format!(
            "Equal FLOPs are not equal time: on this CPU the variants took {:.0}–{:.0} s for \
             the same counted compute (small matrices, many blocks and attention over more \
             tokens use the cores differently).",
            outcomes.iter().map(seconds).fold(f64::MAX, f64::min),
            outcomes.iter().map(seconds).fold(0.0, f64::max)
        ),
    ];
    r.limits = vec![
        "One seed and one small budget: at this compute the base tower is not trained to its \
         end either, so a larger tower that trains for fewer steps is judged early. Scaling \
         laws are about the frontier across many budgets; this is one slice of it."
            .into(),
        "Resolution also changes the data: the scenes are drawn at the larger size, with finer \
         edges, so that family tests the data's detail as much as the tower."
            .into(),
        "Only the image tower grows; the paper also widens the text tower with its image tower."
            .into(),
    ];
    r.numbers = json!({
        "seed": seed,
        "batch_size": batch,
        "budget_flops": budget,
        "base_steps": base_steps,
        "runs": outcomes.iter().map(|o| json!({
            "family": o.tower.family,
            "image_size": o.tower.size,
            "width": o.tower.width,
            "layers": o.tower.layers,
            "image_forward_flops": o.image_flops,
            "train_step_flops": o.step_flops,
            "steps": o.steps,
            "heldout_top1": o.heldout_top1,
            "seen_top1": o.seen_top1,
            "along_training": o.along.iter().map(|&(f, a)| json!({"flops": f, "heldout_top1": a})).collect::<Vec<_>>(),
            "loss_windows": o.loss.iter().map(|&(f, l)| json!({"flops": f, "loss": l})).collect::<Vec<_>>(),
            "train_seconds": o.train_seconds,
            "reused_run": o.reused,
        })).collect::<Vec<_>>(),
        "plots": ["scaling/families.png", "scaling/along_training.png", "scaling/loss.png"],
    });
    Ok(r)
}
