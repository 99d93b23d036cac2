//! Evaluation on a fetched, labelled dataset, as CLIP_benchmark does it: zero-shot
//! classification with prompt-template ensembles (top-1, top-5, mean per-class recall, a
//! confusion matrix), and a linear probe: L2-regularised multinomial logistic regression on
//! frozen features, its strength chosen on a validation split cut from the training split.

use std::path::Path;

use candle_core::{Device, Tensor, D};
use clip::{Clip, TextTokenizer};
use clip_data::packaged::DatasetInfo;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::Serialize;

use crate::encode::{image_features, text_embeddings, ImageFeature};
use crate::error::{Result, TrainError};
use crate::zeroshot::{top_k, top_k_rates};

/// Images of one split, preprocessed for a model (resize, centre crop, normalise).
pub struct Labelled {
    /// `[N, 3, S, S]`.
    pub pixels: Tensor,
    pub labels: Vec<usize>,
    /// Images that did not decode.
    pub skipped: usize,
}

/// A split's shard pattern (under `dir`) and the shard files it names.
fn split_shards(
    dir: &Path,
    info: &DatasetInfo,
    split: &str,
) -> Result<(String, Vec<std::path::PathBuf>)> {
    let pattern = info.split_pattern(dir, split)?;
    let shards = clip_data::files::shard_files(&pattern)?;
    Ok((pattern, shards))
}

/// Decode and preprocess (resize, centre crop, normalise) on all threads; None where an
/// image does not decode.
fn preprocess_all<'a>(
    samples: impl Iterator<Item = &'a clip_data::RawSample>,
    size: usize,
) -> Vec<Option<Vec<f32>>> {
    let samples: Vec<&clip_data::RawSample> = samples.collect();
    samples
        .par_iter()
        .map(|s| {
            clip_data::augment::decode(&s.image).map(|img| clip::transform::preprocess(&img, size))
        })
        .collect()
}

/// Read up to `limit` samples of `split` (in shard order), checking every label against the
/// class list; preprocess them to `size` px on all threads.
pub fn load_split(
    dir: &Path,
    info: &DatasetInfo,
    split: &str,
    limit: usize,
    size: usize,
    device: &Device,
) -> Result<Labelled> {
    let (pattern, shards) = split_shards(dir, info, split)?;
    let mut samples = Vec::new();
    for shard in shards {
        if samples.len() >= limit {
            break;
        }
        let (s, _) = clip_data::files::read_shard(&shard)?;
        samples.extend(s);
    }
    samples.truncate(limit);
    let what = format!("{pattern} (split {split})");
    labelled(&samples, info.classes.len(), &what, size, device)
}

/// Labelled samples checked against `classes` classes and preprocessed to `size` px on all
/// threads; `what` names them in errors. Images that do not decode are skipped and counted.
pub fn labelled(
    samples: &[clip_data::RawSample],
    classes: usize,
    what: &str,
    size: usize,
    device: &Device,
) -> Result<Labelled> {
    let input = TrainError::Data;
    let mut labels = Vec::with_capacity(samples.len());
    for s in samples {
        match s.label {
            Some(l) if l < classes => labels.push(l),
            Some(l) => {
                return Err(input(format!(
                    "{}: label {l}, but {what} has {classes} classes; class names and labels do not match",
                    s.origin
                )))
            }
            None => return Err(input(format!("{}: no label", s.origin))),
        }
    }
    let images = preprocess_all(samples.iter(), size);
    let (mut pixels, mut kept) = (Vec::new(), Vec::new());
    for (img, label) in images.into_iter().zip(labels) {
        if let Some(p) = img {
            pixels.extend(p);
            kept.push(label);
        }
    }
    let skipped = samples.len() - kept.len();
    if kept.is_empty() {
        return Err(input(format!("{what}: no image decodes")));
    }
    let pixels = Tensor::from_vec(pixels, (kept.len(), 3, size, size), device)?; // [N, 3, S, S]
    Ok(Labelled {
        pixels,
        labels: kept,
        skipped,
    })
}

/// Classification metrics, with CLIP_benchmark's names.
#[derive(Debug, Clone, Serialize)]
pub struct ClassMetrics {
    pub acc1: f64,
    pub acc5: f64,
    pub mean_per_class_recall: f64,
    /// `confusion[true][predicted]` counts.
    pub confusion: Vec<Vec<usize>>,
    pub n: usize,
}

/// Metrics from scores `[N, C]` against `labels`.
pub fn class_metrics(scores: &Tensor, labels: &[usize]) -> Result<ClassMetrics> {
    let c = scores.dim(D::Minus1)?;
    let ranked = top_k(scores, 5)?; // [N][≤5], best first
    let mut confusion = vec![vec![0usize; c]; c];
    for (row, &y) in ranked.iter().zip(labels) {
        confusion[y][row[0] as usize] += 1;
    }
    let (acc1, acc5) = top_k_rates(&ranked, labels);
    let recalls: Vec<f64> = confusion
        .iter()
        .enumerate()
        .filter(|(_, r)| r.iter().sum::<usize>() > 0)
        .map(|(i, r)| r[i] as f64 / r.iter().sum::<usize>() as f64)
        .collect();
    Ok(ClassMetrics {
        acc1,
        acc5,
        mean_per_class_recall: recalls.iter().sum::<f64>() / recalls.len().max(1) as f64,
        confusion,
        n: labels.len(),
    })
}

/// Zero-shot: class names × templates → averaged, normalised text embeddings; each image goes
/// to the most similar class.
pub fn zero_shot(
    model: &Clip,
    classes: &[String],
    templates: &[String],
    data: &Labelled,
) -> Result<ClassMetrics> {
    if classes.is_empty() || templates.is_empty() {
        return Err(TrainError::Data(
            "zero-shot needs class names and templates; this set has none of one".into(),
        ));
    }
    let templates: Vec<&str> = templates.iter().map(String::as_str).collect();
    let device = data.pixels.device();
    let classifier = crate::zeroshot::zero_shot_classifier(
        model,
        &TextTokenizer::for_config(&model.config.text_cfg)?,
        classes,
        &templates,
        device,
    )?; // [C, E]
    let emb = image_features(model, &data.pixels, ImageFeature::Embedding)?; // [N, E]
    class_metrics(&emb.matmul(&classifier.t()?)?, &data.labels) // [N, C]
}

/// What the linear probe chose and measured.
#[derive(Debug, Clone, Serialize)]
pub struct ProbeReport {
    pub metrics: ClassMetrics,
    /// The L2 strength chosen on the validation split.
    pub l2: f64,
    /// Validation top-1 for every strength tried.
    pub validation: Vec<(f64, f64)>,
    pub feature_dim: usize,
    /// L-BFGS iterations of the final fit, and its largest gradient component at the end.
    pub iterations: usize,
    pub grad_max: f64,
}

/// L2 strengths tried on the validation split.
pub const L2_GRID: [f64; 7] = [1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0];

/// Standardise columns with the statistics of `fit` (features differ wildly in scale).
fn standardise(fit: &Tensor, others: &[&Tensor]) -> Result<Vec<Tensor>> {
    let mean = fit.mean_keepdim(0)?; // [1, D]
    let std = (fit.broadcast_sub(&mean)?.sqr()?.mean_keepdim(0)? + 1e-6)?.sqrt()?; // [1, D]
    std::iter::once(fit)
        .chain(others.iter().copied())
        .map(|t| Ok(t.broadcast_sub(&mean)?.broadcast_div(&std)?))
        .collect()
}

/// Linear probe: features `[N, D]` with labels; 10% of the training rows (seeded) pick the L2
/// strength, then a fit on all training rows is measured on the test rows. `progress(done,
/// total, l2)` is called before each of the `L2_GRID.len() + 1` fits (each can take seconds).
pub fn linear_probe(
    train: (&Tensor, &[usize]),
    test: (&Tensor, &[usize]),
    classes: usize,
    seed: u64,
    progress: &mut dyn FnMut(usize, usize, f64),
) -> Result<ProbeReport> {
    let fits = L2_GRID.len() + 1;
    let device = train.0.device();
    let n = train.1.len();
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
    let n_val = (n / 10).max(1);
    let (val_idx, fit_idx) = order.split_at(n_val);
    let pick = |idx: &[usize]| -> Result<(Tensor, Vec<usize>)> {
        let ids = Tensor::from_vec(
            idx.iter().map(|&i| i as u32).collect::<Vec<_>>(),
            idx.len(),
            device,
        )?;
        Ok((
            train.0.index_select(&ids, 0)?,
            idx.iter().map(|&i| train.1[i]).collect(),
        ))
    };
    let (fit_x, fit_y) = pick(fit_idx)?;
    let (val_x, val_y) = pick(val_idx)?;
    let v = standardise(&fit_x, &[&val_x])?;
    let mut validation = Vec::new();
    for (i, &l2) in L2_GRID.iter().enumerate() {
        progress(i, fits, l2);
        let f = crate::logistic::fit(&v[0], &fit_y, classes, l2)?;
        let acc = class_metrics(&v[1].matmul(&f.w)?.broadcast_add(&f.b)?, &val_y)?.acc1;
        validation.push((l2, acc));
    }
    let l2 = validation
        .iter()
        .fold((L2_GRID[0], f64::MIN), |best, &(l, a)| {
            if a > best.1 {
                (l, a)
            } else {
                best
            }
        })
        .0;
    let s = standardise(train.0, &[test.0])?;
    progress(fits - 1, fits, l2);
    let f = crate::logistic::fit(&s[0], train.1, classes, l2)?;
    let metrics = class_metrics(&s[1].matmul(&f.w)?.broadcast_add(&f.b)?, test.1)?;
    Ok(ProbeReport {
        metrics,
        l2,
        validation,
        feature_dim: train.0.dim(1)?,
        iterations: f.iterations,
        grad_max: f.grad_max,
    })
}

/// Images of one split with their captions (one or more per image).
pub struct Captioned {
    /// `[N, 3, S, S]`.
    pub pixels: Tensor,
    /// `captions[i]`: every caption of image i.
    pub captions: Vec<Vec<String>>,
}

/// Read up to `limit` images of `split` with their captions; samples whose image bytes are
/// identical are one image with several captions.
pub fn load_captioned(
    dir: &Path,
    info: &DatasetInfo,
    split: &str,
    limit: usize,
    size: usize,
    device: &Device,
) -> Result<Captioned> {
    let (pattern, shards) = split_shards(dir, info, split)?;
    let mut samples = Vec::new();
    for shard in shards {
        samples.extend(clip_data::files::read_shard(&shard)?.0);
    }
    let what = format!("{pattern} (split {split})");
    captioned(samples, limit, &what, size, device)
}

/// Up to `limit` images with their captions, from image–caption pairs in order: pairs whose
/// image bytes (or file) are the same are one image with several captions. Preprocessed to
/// `size` px on all threads; `what` names them in errors.
pub fn captioned(
    samples: Vec<clip_data::RawSample>,
    limit: usize,
    what: &str,
    size: usize,
    device: &Device,
) -> Result<Captioned> {
    let mut by_image: Vec<(clip_data::RawSample, Vec<String>)> = Vec::new();
    let mut index: std::collections::HashMap<Vec<u8>, usize> = Default::default();
    for s in samples {
        let key = match &s.image {
            clip_data::files::ImageSource::Bytes(b) => b.as_ref().clone(),
            clip_data::files::ImageSource::File(p) => p.display().to_string().into_bytes(),
        };
        match index.get(&key) {
            Some(&i) => by_image[i].1.push(s.caption.clone()),
            None if by_image.len() < limit => {
                index.insert(key, by_image.len());
                let cap = s.caption.clone();
                by_image.push((s, vec![cap]));
            }
            None => {}
        }
    }
    let images = preprocess_all(by_image.iter().map(|(s, _)| s), size);
    let (mut pixels, mut captions) = (Vec::new(), Vec::new());
    for (img, (_, caps)) in images.into_iter().zip(by_image) {
        if let Some(p) = img {
            pixels.extend(p);
            captions.push(caps);
        }
    }
    if captions.len() < 2 {
        return Err(TrainError::Data(format!(
            "{what}: fewer than 2 images decode"
        )));
    }
    let pixels = Tensor::from_vec(pixels, (captions.len(), 3, size, size), device)?; // [N, 3, S, S]
    Ok(Captioned { pixels, captions })
}

/// Recall at 1, 5 and 10 both ways, with CLIP_benchmark's names: `text_retrieval` finds an
/// image's captions (image → text), `image_retrieval` a caption's image (text → image).
#[derive(Debug, Clone, Serialize)]
pub struct RetrievalMetrics {
    #[serde(rename = "text_retrieval_recall@1")]
    pub text_r1: f64,
    #[serde(rename = "text_retrieval_recall@5")]
    pub text_r5: f64,
    #[serde(rename = "text_retrieval_recall@10")]
    pub text_r10: f64,
    #[serde(rename = "image_retrieval_recall@1")]
    pub image_r1: f64,
    #[serde(rename = "image_retrieval_recall@5")]
    pub image_r5: f64,
    #[serde(rename = "image_retrieval_recall@10")]
    pub image_r10: f64,
    pub images: usize,
    pub texts: usize,
}

/// Fraction of queries (rows of `sims`) whose best `k` columns include a relevant one.
fn recall_at(sims: &Tensor, relevant: &[Vec<usize>], ks: [usize; 3]) -> Result<[f64; 3]> {
    let cols = sims.dim(1)?;
    let kmax = ks[2].min(cols);
    let ranked: Vec<Vec<u32>> = sims
        .arg_sort_last_dim(false)?
        .narrow(1, 0, kmax)?
        .to_vec2()?;
    let mut hits = [0usize; 3];
    for (row, rel) in ranked.iter().zip(relevant) {
        for (h, &k) in hits.iter_mut().zip(&ks) {
            *h += row.iter().take(k).any(|c| rel.contains(&(*c as usize))) as usize;
        }
    }
    let n = relevant.len() as f64;
    Ok(hits.map(|h| h as f64 / n))
}

/// Image ↔ text retrieval over a split: unit embeddings, cosine similarities, recall@k.
pub fn retrieval(model: &Clip, data: &Captioned) -> Result<RetrievalMetrics> {
    let img = image_features(model, &data.pixels, ImageFeature::Embedding)?; // [N, E]
    let texts: Vec<String> = data.captions.iter().flatten().cloned().collect();
    let owner: Vec<usize> = data
        .captions
        .iter()
        .enumerate()
        .flat_map(|(i, caps)| std::iter::repeat_n(i, caps.len()))
        .collect();
    let txt = text_embeddings(
        model,
        &TextTokenizer::for_config(&model.config.text_cfg)?,
        &texts,
        data.pixels.device(),
    )?; // [M, E]
    let sims = img.matmul(&txt.t()?)?; // [N, M]
    let mut of_image: Vec<Vec<usize>> = vec![Vec::new(); data.captions.len()];
    for (j, &i) in owner.iter().enumerate() {
        of_image[i].push(j);
    }
    let t = recall_at(&sims, &of_image, [1, 5, 10])?;
    let own: Vec<Vec<usize>> = owner.iter().map(|&i| vec![i]).collect();
    let i = recall_at(&sims.t()?.contiguous()?, &own, [1, 5, 10])?;
    Ok(RetrievalMetrics {
        text_r1: t[0],
        text_r5: t[1],
        text_r10: t[2],
        image_r1: i[0],
        image_r5: i[1],
        image_r10: i[2],
        images: data.captions.len(),
        texts: texts.len(),
    })
}
