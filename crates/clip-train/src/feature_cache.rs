//! The feature cache of locked towers (LiT's economy): when the image tower is locked (whole,
//! or all but its projection head) and the images are not augmented, its pooled feature of each training image never changes, so
//! it is computed once (with a progress bar) and kept on disk, keyed by the samples and the
//! tower's weights; later steps, epochs and runs read it and run only the heads (and the text
//! tower). A locked text tower is cached the same way. Batches then carry features
//! instead of pixels, in an order that is a pure function of the seed and the step.

use std::path::Path;
use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;
use clip::Clip;
use clip_data::file_batcher::shuffled_indices;
use clip_data::{Batch, BatchSource, RawSample};

use crate::config::{DataSpec, TrainConfig};
use crate::error::{io, Result, TrainError};

/// Images encoded per forward pass while filling the cache.
const CHUNK: usize = 32;

/// Where caches are kept unless a run says otherwise.
pub const DEFAULT_DIR: &str = "cache/features";

/// Batches of cached features (and token ids) over the training samples.
pub struct CachedSource {
    /// `[N, W_image]`.
    image: Tensor,
    /// `[N, W_text]` when the text tower is locked whole.
    text: Option<Tensor>,
    /// `[N, T]` u32.
    ids: Tensor,
    captions: Vec<String>,
    seed: u64,
}

impl BatchSource for CachedSource {
    fn batch(&self, start: u64, n: usize, device: &Device) -> candle_core::Result<Batch> {
        let idx = shuffled_indices(self.seed, self.captions.len(), start, n);
        let rows = Tensor::from_vec(idx.iter().map(|&i| i as u32).collect(), n, &Device::Cpu)?;
        let pick = |t: &Tensor| t.index_select(&rows, 0)?.to_device(device);
        Ok(Batch {
            pixels: Tensor::zeros((n, 0), DType::F32, device)?,
            ids: pick(&self.ids)?,
            captions: idx.iter().map(|&i| self.captions[i].clone()).collect(),
            labels: Vec::new(),
            image_features: Some(pick(&self.image)?),
            text_features: self.text.as_ref().map(pick).transpose()?,
        })
    }
}

/// FNV-1a, 64 bits, over everything that decides a cache's content.
struct Key(u64);

impl Key {
    fn new() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
    fn bytes(&mut self, b: &[u8]) {
        for &x in b {
            self.0 = (self.0 ^ x as u64).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    fn str(&mut self, s: &str) {
        self.bytes(s.as_bytes());
        self.bytes(&[0xff]);
    }
}

/// Add the tower's trunk weights (every parameter of the tower but its projection head) to
/// the key: the same tower gives the same features.
fn key_weights(key: &mut Key, varmap: &VarMap, cfg: &TrainConfig, image: bool) -> Result<()> {
    let data = varmap.data().lock().expect("varmap lock");
    let mut names: Vec<&String> = data
        .keys()
        .filter(|k| k.starts_with("visual.") == image && !k.starts_with("logit_"))
        .filter(|k| !cfg.lock.is_head(k, &cfg.model))
        .collect();
    names.sort();
    for name in names {
        key.str(name);
        let v = data[name].as_tensor().flatten_all()?.to_dtype(DType::F32)?;
        for x in v.to_vec1::<f32>()? {
            key.bytes(&x.to_le_bytes());
        }
    }
    Ok(())
}

/// The training samples of a file-based data spec, in a fixed order; `None` for built-in data.
fn samples(cfg: &TrainConfig) -> Result<Option<Vec<RawSample>>> {
    Ok(Some(match &cfg.data {
        DataSpec::Builtin { .. } => return Ok(None),
        DataSpec::Csv {
            path,
            img_key,
            caption_key,
        } => clip_data::files::read_csv(path, img_key, caption_key)?.0,
        DataSpec::Jsonl {
            path,
            img_key,
            caption_key,
        } => clip_data::files::read_jsonl(path, img_key, caption_key)?.0,
        DataSpec::Wds { pattern, .. } => {
            let mut all = Vec::new();
            for shard in clip_data::files::shard_files(pattern)? {
                all.extend(clip_data::files::read_shard(&shard)?.0);
            }
            all
        }
    }))
}

/// Read features from `path`, or compute them with `make` and write them there (atomically).
fn load_or_make(
    path: &Path,
    rows: usize,
    make: impl FnOnce() -> Result<Tensor>,
) -> Result<(Tensor, bool)> {
    if path.is_file() {
        let t = clip::weights::read_safetensors(path, &Device::Cpu)?;
        if let Some(f) = t.get("features").filter(|f| f.dim(0).ok() == Some(rows)) {
            return Ok((f.clone(), true));
        }
        tracing::warn!(
            "{}: not a cache of {rows} rows; computing again",
            path.display()
        );
    }
    let f = make()?;
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let map = std::collections::HashMap::from([("features".to_string(), f.clone())]);
    clip::weights::save_tensors(&map, path)?;
    Ok((f, false))
}

/// A progress bar over `n` items, hidden when stderr is not a terminal.
fn bar(n: usize, what: &str) -> indicatif::ProgressBar {
    let pb = indicatif::ProgressBar::new(n as u64);
    pb.set_style(
        indicatif::ProgressStyle::with_template(&format!(
            "{what} {{bar:30}} {{pos}}/{{len}} [{{elapsed}} < {{eta}}]"
        ))
        .expect("valid template"),
    );
    pb
}

/// The cached source for a run, when its image tower's trunk is locked, its images are not
/// augmented and its data are files; `None` otherwise.
pub fn cached_source(
    cfg: &TrainConfig,
    model: &Clip,
    varmap: &VarMap,
) -> Result<Option<Arc<dyn BatchSource>>> {
    let Some(dir) = &cfg.feature_cache else {
        return Ok(None);
    };
    if !cfg.lock.image_trunk_frozen() || cfg.augment {
        return Ok(None);
    }
    let Some(all) = samples(cfg)? else {
        return Ok(None);
    };
    let size = cfg.model.vision_cfg.image_size;
    // Images that do not decode are left out (and counted); the rest decode again, a chunk at
    // a time, when the features are computed.
    let keep: Vec<&RawSample> = {
        use rayon::prelude::*;
        let ok: Vec<bool> = all
            .par_iter()
            .map(|s| clip_data::augment::decode(&s.image).is_some())
            .collect();
        all.iter()
            .zip(ok)
            .filter(|(_, ok)| *ok)
            .map(|(s, _)| s)
            .collect()
    };
    if keep.len() < all.len() {
        tracing::warn!("{} images do not decode; left out", all.len() - keep.len());
    }
    let captions: Vec<String> = keep.iter().map(|s| s.caption.clone()).collect();
    let n = keep.len();
    if n < 2 {
        return Err(TrainError::Data(format!(
            "{n} usable samples; at least 2 are needed"
        )));
    }
    let mut key = Key::new();
    key.str(&format!("image {size}"));
    for s in &all {
        key.str(&s.origin);
    }
    let mut text_key = Key(key.0);
    key_weights(&mut key, varmap, cfg, true)?;
    let image_path = dir.join(format!("image-{:016x}.safetensors", key.0));
    let device = model.logit_scale.device().clone();
    let (image, hit) = load_or_make(&image_path, n, || {
        let pb = bar(n, "caching image features");
        let started = std::time::Instant::now();
        let mut parts = Vec::new();
        for (c, chunk) in keep.chunks(CHUNK).enumerate() {
            let flat: Vec<f32> = {
                use rayon::prelude::*;
                let px: Vec<Vec<f32>> = chunk
                    .par_iter()
                    .map(|s| {
                        let img = clip_data::augment::decode(&s.image).expect("decoded before");
                        clip::transform::preprocess(&img, size) // [3·S·S]
                    })
                    .collect();
                px.concat()
            };
            let px = Tensor::from_vec(flat, (chunk.len(), 3, size, size), &device)?; // [c, 3, S, S]
            let f = clip::ops::inference(|| model.visual.pooled(&px))?.detach(); // [c, W]
            parts.push(f.to_device(&Device::Cpu)?.to_dtype(DType::F32)?);
            pb.set_position(((c + 1) * CHUNK).min(n) as u64);
        }
        pb.finish_and_clear();
        let secs = started.elapsed().as_secs_f64();
        tracing::info!(
            "{n} images encoded in {secs:.1} s ({:.1} images/s)",
            n as f64 / secs
        );
        Ok(Tensor::cat(&parts, 0)?)
    })?;
    tracing::info!(
        rows = n,
        "image features {} {}",
        if hit { "read from" } else { "written to" },
        image_path.display()
    );

    let ctx = cfg.model.text_cfg.context_length;
    let tokenizer = clip::TextTokenizer::for_config(&cfg.model.text_cfg)?;
    let ids = tokenizer.tokenize_tensor(&captions, ctx, &Device::Cpu)?; // [N, T]
    let text = if cfg.lock.text_trunk_frozen() {
        text_key.str(&format!("text {ctx}"));
        key_weights(&mut text_key, varmap, cfg, false)?;
        let path = dir.join(format!("text-{:016x}.safetensors", text_key.0));
        let (t, _) = load_or_make(&path, n, || {
            let pb = bar(n, "caching text features");
            let mut parts = Vec::new();
            for start in (0..n).step_by(256) {
                let m = 256.min(n - start);
                let chunk = ids.narrow(0, start, m)?.to_device(&device)?;
                let f = clip::ops::inference(|| model.text.pooled(&chunk))?.detach(); // [m, W]
                parts.push(f.to_device(&Device::Cpu)?.to_dtype(DType::F32)?);
                pb.set_position((start + m) as u64);
            }
            pb.finish_and_clear();
            Ok(Tensor::cat(&parts, 0)?)
        })?;
        Some(t)
    } else {
        None
    };
    Ok(Some(Arc::new(CachedSource {
        image,
        text,
        ids,
        captions,
        seed: cfg.seed,
    })))
}
