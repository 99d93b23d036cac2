//! Bringing an index up to date with its sources: embed the images that are new or changed
//! (by size and modification time of their file or shard), drop those that went away, skip
//! and list the unreadable.
//! Work is committed in segments as it goes, so a run that is killed keeps what it committed
//! and the next run carries on from there.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use candle_core::{Device, Tensor};
use clip::Clip;
use rayon::prelude::*;

use crate::error::Result;
use crate::model_id::ModelId;
use crate::scan::{images_in, source, Found};
use crate::store::{Entry, Skipped, Writer};
use crate::thumbs;

/// How an update runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// Images per forward pass.
    pub batch: usize,
    /// Commit a segment when it holds this many rows…
    pub rows_per_segment: usize,
    /// …or when this long has passed since the last commit.
    pub commit_every: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            batch: 32,
            rows_per_segment: 1024,
            commit_every: Duration::from_secs(20),
        }
    }
}

/// What an update did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Report {
    /// Image files under the sources now.
    pub found: usize,
    /// Already indexed and unchanged.
    pub unchanged: usize,
    /// Embedded by this run (new or changed files).
    pub embedded: usize,
    /// Entries dropped because their file went away or changed.
    pub removed: usize,
    /// Files that could not be read as images (all of them, this run's and earlier ones').
    pub skipped: Vec<Skipped>,
    /// Folders or files the scan could not read.
    pub problems: Vec<String>,
    /// Live entries after the update.
    pub total: usize,
    pub compacted: bool,
    pub seconds: f64,
}

/// Hears how far an update is.
pub trait Progress {
    /// `total` images are to be embedded.
    fn start(&mut self, _total: usize) {}
    /// `n` more were embedded (or skipped).
    fn advance(&mut self, _n: usize) {}
}

impl Progress for () {}

/// Decode `paths` on all threads; each an image or why not.
fn decode_all(paths: &[&Found]) -> Vec<std::result::Result<image::DynamicImage, String>> {
    paths
        .par_iter()
        .map(|f| {
            let bytes = crate::store::read_image_bytes(&f.path, f.member.as_ref())
                .map_err(|e| e.to_string())?;
            image::ImageReader::new(std::io::Cursor::new(bytes))
                .with_guessed_format()
                .map_err(|e| e.to_string())?
                .decode()
                .map_err(|e| e.to_string())
        })
        .collect()
}

/// Unit embeddings of `images` through `model`, `[n, E]` row-major.
fn embed(model: &Clip, images: &[image::DynamicImage], device: &Device) -> Result<Vec<f32>> {
    let size = model.config.vision_cfg.image_size;
    let pixels: Vec<f32> = images
        .par_iter()
        .map(|img| clip::transform::preprocess(img, size))
        .collect::<Vec<_>>()
        .concat();
    let t = Tensor::from_vec(pixels, (images.len(), 3, size, size), device)?;
    let e = clip::ops::inference(|| model.encode_image(&t))?; // [n, E]
    Ok(e.to_dtype(candle_core::DType::F32)?
        .flatten_all()?
        .to_vec1()?)
}

/// Bring the index in `dir` up to date with `sources` (folders, fetched datasets' folders,
/// shards; and the sources it already indexes),
/// embedding with `model` (identified by `id`).
pub fn update(
    dir: &std::path::Path,
    model: &Clip,
    id: &ModelId,
    sources: &[PathBuf],
    device: &Device,
    opts: &Options,
    progress: &mut dyn Progress,
) -> Result<Report> {
    let start = Instant::now();
    let sources: Vec<PathBuf> = sources.iter().map(|s| source(s)).collect::<Result<_>>()?;
    let mut w = Writer::open(dir, id, &sources)?;
    let mut report = Report::default();

    let mut files: Vec<Found> = Vec::new();
    for src in w.manifest.sources.clone() {
        if !src.exists() {
            report.problems.push(format!(
                "{}: gone; its images leave the index",
                src.display()
            ));
            continue;
        }
        let (found, problems) = images_in(&src);
        files.extend(found);
        report.problems.extend(problems);
    }
    files.sort_by(|a, b| a.key().cmp(&b.key()));
    files.dedup_by(|a, b| a.key() == b.key()); // nested sources
    report.found = files.len();

    // What is indexed now, by path.
    let live = w.load()?;
    let indexed: HashMap<(&Path, Option<&str>), &Entry> =
        live.entries.iter().map(|e| (e.key(), e)).collect();
    let skipped_before = w.manifest.skipped.clone();
    let skipped_before: HashMap<(&Path, Option<&str>), &Skipped> =
        skipped_before.iter().map(|s| (s.key(), s)).collect();
    let mut todo: Vec<&Found> = Vec::new();
    let mut skipped: Vec<Skipped> = Vec::new();
    let mut dead: Vec<u64> = Vec::new();
    let present: HashSet<(&Path, Option<&str>)> = files.iter().map(Found::key).collect();
    for f in &files {
        match indexed.get(&f.key()) {
            Some(e) if e.size == f.size && e.mtime_ns == f.mtime_ns => report.unchanged += 1,
            Some(e) => {
                dead.push(e.id);
                todo.push(f);
            }
            None => match skipped_before.get(&f.key()) {
                Some(s) if s.size == f.size && s.mtime_ns == f.mtime_ns => {
                    skipped.push((*s).clone())
                }
                _ => todo.push(f),
            },
        }
    }
    for e in &live.entries {
        if !present.contains(&e.key()) {
            dead.push(e.id);
        }
    }
    report.removed = dead.len();
    w.delete(dead.iter().copied());
    w.manifest.skipped = skipped.clone();
    w.commit()?;
    for &id in &dead {
        thumbs::remove(dir, id);
    }

    progress.start(todo.len());
    let dim = id.embed_dim;
    let (mut seg_entries, mut seg_vectors) = (Vec::new(), Vec::new());
    let mut last_commit = Instant::now();
    for batch in todo.chunks(opts.batch.max(1)) {
        let decoded = decode_all(batch);
        let mut ok_images = Vec::new();
        let mut ok_files = Vec::new();
        for (f, d) in batch.iter().zip(decoded) {
            match d {
                Ok(img) => {
                    ok_images.push(img);
                    ok_files.push(*f);
                }
                Err(e) => skipped.push(Skipped {
                    path: f.path.clone(),
                    member: f.member.clone(),
                    size: f.size,
                    mtime_ns: f.mtime_ns,
                    error: e,
                }),
            }
        }
        if !ok_images.is_empty() {
            let vectors = embed(model, &ok_images, device)?;
            let ids: Vec<u64> = ok_files.iter().map(|_| w.next_id()).collect();
            ids.par_iter()
                .zip(&ok_images)
                .map(|(&i, img)| thumbs::write(dir, i, img))
                .collect::<Result<Vec<()>>>()?;
            for (f, i) in ok_files.iter().zip(ids) {
                seg_entries.push(Entry {
                    id: i,
                    path: f.path.clone(),
                    member: f.member.clone(),
                    size: f.size,
                    mtime_ns: f.mtime_ns,
                });
            }
            seg_vectors.extend_from_slice(&vectors);
            report.embedded += ok_files.len();
        }
        progress.advance(batch.len());
        if seg_entries.len() >= opts.rows_per_segment || last_commit.elapsed() >= opts.commit_every
        {
            w.manifest.skipped = skipped.clone();
            w.add_segment(&seg_entries, &seg_vectors)?;
            seg_entries.clear();
            seg_vectors.clear();
            last_commit = Instant::now();
        }
    }
    w.manifest.skipped = skipped.clone();
    w.add_segment(&seg_entries, &seg_vectors)?;
    debug_assert!(seg_vectors.len() == seg_entries.len() * dim);
    report.compacted = w.compact_if_sparse(opts.rows_per_segment)?;
    report.skipped = skipped;
    report.total = w.manifest.rows() - w.manifest.deleted.len();
    report.seconds = start.elapsed().as_secs_f64();
    Ok(report)
}
