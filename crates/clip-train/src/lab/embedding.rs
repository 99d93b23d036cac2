//! `clipforge lab embedding-space`: the learned manifold. Image embeddings of fresh scenes and
//! the 64 class texts, projected to 2-D by PCA, before and after training; the modality gap
//! (mean image embedding against mean text embedding); and nearest neighbours among images.

use candle_core::Tensor;
use clip::{Clip, TextTokenizer};
use clip_data::synthetic::{class_names, Scene, COLOURS, RGB, SHAPES, TEMPLATES};
use clip_data::{SceneBatcher, Shapes, Split};
use serde_json::json;

use super::figures::{scatters, thumbnail_rows, Marker, Point, CELL};
use super::report::{pct, table, Report};
use super::runs::{model_at, train_or_reuse};
use super::LabOptions;
use crate::encode::{image_features, ImageFeature};
use crate::error::Result;
use crate::eval::eval_seed;
use crate::zeroshot::zero_shot_classifier;

/// Neighbours shown and counted per image.
const K: usize = 5;

/// The two leading principal axes of the rows of `x` (centred), and the share of the variance
/// each explains. Power iteration on the covariance, the first axis deflated for the second.
fn pca2(x: &[Vec<f32>]) -> ([Vec<f64>; 2], [f64; 2]) {
    let (m, d) = (x.len(), x[0].len());
    let mean: Vec<f64> = (0..d)
        .map(|j| x.iter().map(|r| r[j] as f64).sum::<f64>() / m as f64)
        .collect();
    let mut cov = vec![vec![0f64; d]; d]; // [E, E]
    for r in x {
        let c: Vec<f64> = r.iter().zip(&mean).map(|(&v, mu)| v as f64 - mu).collect();
        for i in 0..d {
            for j in 0..d {
                cov[i][j] += c[i] * c[j] / m as f64;
            }
        }
    }
    let total: f64 = (0..d).map(|i| cov[i][i]).sum();
    let mut axes = [vec![0f64; d], vec![0f64; d]];
    let mut share = [0f64; 2];
    for k in 0..2 {
        let mut v: Vec<f64> = (0..d).map(|i| 1.0 + (i as f64 * 0.37).sin()).collect();
        let mut lambda = 0.0;
        for _ in 0..300 {
            let w: Vec<f64> = (0..d)
                .map(|i| (0..d).map(|j| cov[i][j] * v[j]).sum())
                .collect();
            lambda = w.iter().map(|a| a * a).sum::<f64>().sqrt();
            v = w.iter().map(|a| a / lambda.max(1e-30)).collect();
        }
        for i in 0..d {
            for j in 0..d {
                cov[i][j] -= lambda * v[i] * v[j];
            }
        }
        share[k] = lambda / total.max(1e-30);
        axes[k] = v;
    }
    (axes, share)
}

fn project(x: &[f32], axes: &[Vec<f64>; 2]) -> (f64, f64) {
    let dot = |a: &Vec<f64>| a.iter().zip(x).map(|(p, &q)| p * q as f64).sum::<f64>();
    (dot(&axes[0]), dot(&axes[1]))
}

fn mean_row(x: &[Vec<f32>]) -> Vec<f32> {
    (0..x[0].len())
        .map(|j| x.iter().map(|r| r[j]).sum::<f32>() / x.len() as f32)
        .collect()
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// What one model's space looks like on the scenes.
struct Space {
    images: Vec<Vec<f32>>,
    texts: Vec<Vec<f32>>,
    axes: [Vec<f64>; 2],
    explained: [f64; 2],
    /// |mean image − mean text|, and the cosine between the two means.
    gap: f32,
    gap_cosine: f32,
    /// Mean cosine of an image to its own class's text, and to the other classes' texts.
    own_text: f32,
    other_text: f32,
    /// Of each image's K nearest images: same class, same colour, same shape.
    knn: [f64; 3],
    neighbours: Vec<Vec<(usize, f32)>>,
}

fn space(model: &Clip, pixels: &Tensor, scenes: &[Scene], opts: &LabOptions) -> Result<Space> {
    let tokenizer = TextTokenizer::for_config(&model.config.text_cfg)?;
    let texts = zero_shot_classifier(model, &tokenizer, &class_names(), &TEMPLATES, &opts.device)?
        .to_vec2::<f32>()?; // [64, E]
    let images = image_features(model, pixels, ImageFeature::Embedding)?.to_vec2::<f32>()?; // [n, E]
    let all: Vec<Vec<f32>> = images.iter().chain(&texts).cloned().collect();
    let (axes, explained) = pca2(&all);
    let (mi, mt) = (mean_row(&images), mean_row(&texts));
    let gap = mi
        .iter()
        .zip(&mt)
        .map(|(a, b)| (a - b).powi(2))
        .sum::<f32>()
        .sqrt();
    let norm = |v: &[f32]| dot(v, v).sqrt().max(1e-12);
    let class = |s: &Scene| s.objects[0].class();
    let (mut own, mut other) = (0f32, 0f32);
    for (img, s) in images.iter().zip(scenes) {
        for (c, t) in texts.iter().enumerate() {
            if c == class(s) {
                own += dot(img, t);
            } else {
                other += dot(img, t);
            }
        }
    }
    let n = images.len();
    let mut knn = [0f64; 3];
    let mut neighbours = Vec::with_capacity(n);
    for i in 0..n {
        let mut sims: Vec<(usize, f32)> = (0..n)
            .filter(|&j| j != i)
            .map(|j| (j, dot(&images[i], &images[j])))
            .collect();
        sims.sort_by(|a, b| b.1.total_cmp(&a.1));
        sims.truncate(K);
        let (a, shape, colour) = (
            class(&scenes[i]),
            scenes[i].objects[0].shape,
            scenes[i].objects[0].colour,
        );
        for &(j, _) in &sims {
            let o = scenes[j].objects[0];
            knn[0] += (o.class() == a) as usize as f64;
            knn[1] += (o.colour == colour) as usize as f64;
            knn[2] += (o.shape == shape) as usize as f64;
        }
        neighbours.push(sims);
    }
    for k in &mut knn {
        *k /= (n * K) as f64;
    }
    Ok(Space {
        gap,
        gap_cosine: dot(&mi, &mt) / (norm(&mi) * norm(&mt)),
        own_text: own / n as f32,
        other_text: other / (n * (texts.len() - 1)) as f32,
        images,
        texts,
        axes,
        explained,
        knn,
        neighbours,
    })
}

impl Space {
    fn points(&self, scenes: &[Scene], held_from: usize) -> Vec<Point> {
        let mut pts: Vec<Point> = self
            .images
            .iter()
            .zip(scenes)
            .enumerate()
            .map(|(i, (e, s))| Point {
                xy: project(e, &self.axes),
                rgb: RGB[s.objects[0].colour],
                marker: if i >= held_from {
                    Marker::HeldOut
                } else {
                    Marker::Image
                },
            })
            .collect();
        pts.extend(self.texts.iter().enumerate().map(|(c, t)| Point {
            xy: project(t, &self.axes),
            rgb: RGB[c / SHAPES.len()],
            marker: Marker::Text,
        }));
        pts
    }
}

pub fn run(opts: &LabOptions) -> Result<Report> {
    let seed = 0;
    let cfg = opts.base_config(opts.quickstart_steps(), seed);
    let trained = train_or_reuse(opts, "quickstart", &cfg)?;
    let before = model_at(&cfg, &trained.run_dir, 0, opts)?;
    let size = cfg.model.vision_cfg.image_size;
    let ctx = cfg.model.text_cfg.context_length;
    let (n_seen, n_held) = (opts.images(384, 192), opts.images(128, 64));
    let seen = Shapes::new(eval_seed(seed), Split::Test);
    let held = Shapes::new(eval_seed(seed), Split::Heldout);
    let scenes: Vec<Scene> = (0..n_seen as u64)
        .map(|i| seen.scene(i))
        .chain((0..n_held as u64).map(|i| held.scene(i)))
        .collect();
    let pixels = Tensor::cat(
        &[
            SceneBatcher::new(seen, size, ctx, true)
                .batch(0, n_seen, &opts.device)?
                .pixels,
            SceneBatcher::new(held, size, ctx, true)
                .batch(0, n_held, &opts.device)?
                .pixels,
        ],
        0,
    )?; // [n, 3, S, S]
    let spaces = [
        space(&before, &pixels, &scenes, opts)?,
        space(&trained.model, &pixels, &scenes, opts)?,
    ];
    let dir = opts.out.join("embedding-space");
    let whens = [
        "before training".to_string(),
        format!("after {} steps", cfg.steps),
    ];
    let panels: Vec<(String, Vec<Point>)> = spaces
        .iter()
        .zip(&whens)
        .map(|(s, w)| {
            (
                format!(
                    "{w}: PCA of images and texts ({:.0}% + {:.0}% of variance)",
                    100.0 * s.explained[0],
                    100.0 * s.explained[1]
                ),
                s.points(&scenes, n_seen),
            )
        })
        .collect();
    scatters(
        &dir.join("pca.png"),
        &panels,
        "dots: images of seen combinations; rings: held-out combinations; squares: the 64 class texts; colour: the object's colour",
    )?;
    // Nearest neighbours of a few held-out images, before and after.
    let thumb = |i: usize| scenes[i].render((CELL - 4) as usize);
    let mut queries: Vec<usize> = Vec::new();
    for i in n_seen..scenes.len() {
        let c = scenes[i].objects[0].class();
        if queries.len() < 4 && queries.iter().all(|&q| scenes[q].objects[0].class() != c) {
            queries.push(i);
        }
    }
    let mut rows = Vec::new();
    for &q in &queries {
        for (s, w) in spaces.iter().zip(["before", "after"]) {
            let mut cells = vec![(thumb(q), "query".to_string())];
            cells.extend(
                s.neighbours[q]
                    .iter()
                    .map(|&(j, c)| (thumb(j), format!("{c:.2}"))),
            );
            let name = SHAPES[scenes[q].objects[0].shape];
            rows.push((
                format!("{} {name}, {w}", COLOURS[scenes[q].objects[0].colour]),
                cells,
            ));
        }
    }
    thumbnail_rows(
        &dir.join("neighbours.png"),
        &format!("the {K} nearest images (cosine) of held-out images, before and after training"),
        &rows,
    )?;

    let mut r = Report::new(
        "embedding-space",
        "The embedding space: a learned manifold",
        opts.quick,
    );
    r.question = "What does the shared space look like? Image representation as a learned \
        manifold: where do images and texts sit, before and after training, and what is near \
        what?"
        .into();
    r.setup = format!(
        "The quickstart's model (`tiny`, {} steps of 64 built-in scenes, seed {seed}{}) and the \
         same model at initialisation. {n_seen} fresh one-object scenes of seen colour–shape \
         combinations and {n_held} of held-out ones are embedded, with the 64 class texts \
         (CLIP's prompt ensemble of each class name). A principal component analysis of all \
         of them together gives the two axes of the plots; the gap and the neighbours are \
         measured in the full {}-dimensional space.",
        cfg.steps,
        if trained.reused { ", reused" } else { "" },
        cfg.model.embed_dim
    );
    let row = |name: &str, f: &dyn Fn(&Space) -> String| {
        vec![name.to_string(), f(&spaces[0]), f(&spaces[1])]
    };
    let rows = vec![
        row("PCA: variance on PC 1 + PC 2", &|s| {
            pct(s.explained[0] + s.explained[1])
        }),
        row("modality gap ‖mean image − mean text‖", &|s| {
            format!("{:.3}", s.gap)
        }),
        row("cosine(mean image, mean text)", &|s| {
            format!("{:.3}", s.gap_cosine)
        }),
        row("mean cosine image · its class text", &|s| {
            format!("{:.3}", s.own_text)
        }),
        row("mean cosine image · other class texts", &|s| {
            format!("{:.3}", s.other_text)
        }),
        row(&format!("{K} nearest images: same class"), &|s| {
            pct(s.knn[0])
        }),
        row(&format!("{K} nearest images: same colour"), &|s| {
            pct(s.knn[1])
        }),
        row(&format!("{K} nearest images: same shape"), &|s| {
            pct(s.knn[2])
        }),
    ];
    r.sections.push(format!(
        "## The space, before and after\n\n{}\n\n![pca](embedding-space/pca.png)\n\n\
         ## Nearest neighbours\n\n![neighbours](embedding-space/neighbours.png)\n\n\
         (Chance for the neighbour rows: same class 1/56 of seen scenes, same colour or shape \
         about 1/8.)",
        table(&["", "before training", "after training"], &rows)
    ));
    let (b, a) = (&spaces[0], &spaces[1]);
    r.shows = vec![
        format!(
            "Of each image's {K} nearest images, {} share its class after training against {} \
             before; {} share its colour and {} its shape{}.",
            pct(a.knn[0]),
            pct(b.knn[0]),
            pct(a.knn[1]),
            pct(a.knn[2]),
            if a.knn[0] > b.knn[0] + 0.1 {
                ": training organised the image space by what the captions name"
            } else {
                ": at this budget the image space is barely organised by class yet"
            }
        ),
        format!(
            "The mean image embedding and the mean text embedding are {:.3} apart after \
             training ({:.3} before), cosine {:.3} between the two means{}. Matching works on \
             the difference between a true pair's cosine ({:.3} on average here) and a false \
             one's ({:.3}).",
            a.gap,
            b.gap,
            a.gap_cosine,
            if a.gap_cosine < 0.5 {
                ": images and texts keep to different regions of the sphere, the modality gap, \
                 and an image's nearest text is still far from it"
            } else {
                ""
            },
            a.own_text,
            a.other_text
        ),
        format!(
            "Two directions carry {} of the variance after training ({} before): the plot is a \
             shadow of the space, enough to see clusters form, not to read distances from.",
            pct(a.explained[0] + a.explained[1]),
            pct(b.explained[0] + b.explained[1])
        ),
    ];
    r.limits = vec![
        "PCA is linear; UMAP or t-SNE would separate clusters more but distort distances \
         (no well-kept Rust crate for them is used here)."
            .into(),
        "One model, one seed, built-in scenes: the gap's size depends on the initialisation \
         and the temperature, which this experiment does not vary."
            .into(),
    ];
    let space_json = |s: &Space| {
        json!({
            "explained_variance": s.explained,
            "modality_gap": s.gap,
            "mean_cosine_between_means": s.gap_cosine,
            "mean_cosine_own_class_text": s.own_text,
            "mean_cosine_other_class_texts": s.other_text,
            "knn_same_class": s.knn[0],
            "knn_same_colour": s.knn[1],
            "knn_same_shape": s.knn[2],
            "image_points": s.images.iter().map(|e| project(e, &s.axes)).collect::<Vec<_>>(),
            "text_points": s.texts.iter().map(|e| project(e, &s.axes)).collect::<Vec<_>>(),
        })
    };
    r.numbers = json!({
        "steps": cfg.steps,
        "train_seconds": trained.train_seconds,
        "reused_run": trained.reused,
        "seen_images": n_seen,
        "heldout_images": n_held,
        "image_classes": scenes.iter().map(|s| s.objects[0].class()).collect::<Vec<_>>(),
        "before": space_json(b),
        "after": space_json(a),
        "plots": ["embedding-space/pca.png", "embedding-space/neighbours.png"],
    });
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Points along a line in 3-D: the first axis is the line, explaining all the variance.
    #[test]
    fn pca_finds_the_direction_of_spread() {
        let x: Vec<Vec<f32>> = (0..50)
            .map(|i| {
                let t = i as f32 - 25.0;
                vec![2.0 * t, t, 0.01 * (i % 2) as f32]
            })
            .collect();
        let (axes, share) = pca2(&x);
        let want = [2.0 / 5f64.sqrt(), 1.0 / 5f64.sqrt(), 0.0];
        let cos: f64 = axes[0].iter().zip(want).map(|(a, b)| a * b).sum();
        assert!(cos.abs() > 0.9999, "{axes:?}");
        assert!(share[0] > 0.999 && share[1] < 1e-3, "{share:?}");
    }
}
