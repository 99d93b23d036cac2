//! Batches from file-listed or sharded samples: each epoch a seeded permutation; batch k of the
//! run is a pure function of k (exact resume). Images are decoded and augmented in parallel;
//! one that does not decode is dropped from its batch and counted.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use candle_core::{Device, Result, Tensor};
use clip::TextTokenizer;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use crate::augment::{decode, random_resized_crop};
use crate::files::{RawSample, SkipCounts};
use crate::{Batch, BatchSource};

pub struct FileBatcher {
    samples: Arc<Vec<RawSample>>,
    seed: u64,
    image_size: usize,
    context_length: usize,
    tokenizer: TextTokenizer,
    augment: bool,
    /// Images that failed to decode so far (shared by clones of this batcher).
    corrupt: Arc<AtomicUsize>,
    /// What was skipped while reading the listing or shards.
    pub read_skips: SkipCounts,
}

impl FileBatcher {
    pub fn new(
        samples: Vec<RawSample>,
        read_skips: SkipCounts,
        seed: u64,
        image_size: usize,
        context_length: usize,
    ) -> Self {
        Self {
            samples: Arc::new(samples),
            seed,
            image_size,
            context_length,
            tokenizer: TextTokenizer::default(),
            augment: true,
            corrupt: Arc::new(AtomicUsize::new(0)),
            read_skips,
        }
    }

    /// `false`: every image resized and centre-cropped as at evaluation (deterministic, so a
    /// locked image tower's features can be cached) instead of a random crop.
    pub fn with_augment(mut self, augment: bool) -> Self {
        self.augment = augment;
        self
    }

    /// Tokenize captions with `tokenizer` (a pretrained text tower's) instead of CLIP's BPE.
    pub fn with_tokenizer(mut self, tokenizer: TextTokenizer) -> Self {
        self.tokenizer = tokenizer;
        self
    }

    pub fn len(&self) -> usize {
        self.samples.len()
    }

    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// Sample indices `start .. start + n` of the endless sequence of shuffled epochs.
    fn indices(&self, start: u64, n: usize) -> Vec<usize> {
        shuffled_indices(self.seed, self.samples.len(), start, n)
    }

    /// Everything skipped so far: reading, plus images that did not decode.
    pub fn skips(&self) -> SkipCounts {
        let mut s = self.read_skips.clone();
        s.corrupt_image += self.corrupt.load(Ordering::Relaxed);
        s
    }
}

impl BatchSource for FileBatcher {
    fn batch(&self, start: u64, n: usize, device: &Device) -> Result<Batch> {
        let idx = self.indices(start, n);
        let samples: Vec<&RawSample> = idx.iter().map(|&i| &self.samples[i]).collect();
        let positions: Vec<u64> = (start..start + n as u64).collect();
        let (batch, failed) = assemble(
            &samples,
            &positions,
            self.seed,
            (self.image_size, self.context_length, self.augment),
            &self.tokenizer,
            device,
        )?;
        self.corrupt.fetch_add(failed.len(), Ordering::Relaxed);
        Ok(batch)
    }

    fn skipped(&self) -> Option<SkipCounts> {
        Some(self.skips())
    }
}

/// Decode and augment (or, without `augment`, resize and centre-crop) `samples` in parallel (sample k's random crop seeded by `positions[k]`,
/// its place in the run, so a batch is reproducible), drop those that do not decode, tokenise
/// the captions of the rest. Returns the batch and the indices (into `samples`) that failed.
pub(crate) fn assemble(
    samples: &[&RawSample],
    positions: &[u64],
    seed: u64,
    (size, context_length, augment): (usize, usize, bool),
    tokenizer: &TextTokenizer,
    device: &Device,
) -> Result<(Batch, Vec<usize>)> {
    let decoded: Vec<Option<Vec<f32>>> = samples
        .par_iter()
        .zip(positions.par_iter())
        .map(|(s, &pos)| {
            let img = decode(&s.image)?;
            if !augment {
                return Some(clip::transform::preprocess(&img, size)); // [3·S·S]
            }
            let mut rng = ChaCha8Rng::seed_from_u64(seed ^ pos.wrapping_mul(0xD1B5_4A32_D192_ED03));
            Some(random_resized_crop(&img, size, &mut rng)) // [3·S·S], normalised CHW
        })
        .collect();
    let mut pixels = Vec::with_capacity(samples.len() * 3 * size * size);
    let mut captions = Vec::with_capacity(samples.len());
    let mut failed = Vec::new();
    for (k, d) in decoded.into_iter().enumerate() {
        match d {
            Some(p) => {
                pixels.extend(p);
                captions.push(samples[k].caption.clone());
            }
            None => failed.push(k),
        }
    }
    let m = captions.len();
    let pixels = Tensor::from_vec(pixels, (m, 3, size, size), device)?; // [m, 3, S, S]
    let ids = tokenizer.tokenize_tensor(&captions, context_length, device)?; // [m, T]
    Ok((
        Batch {
            pixels,
            ids,
            captions,
            labels: Vec::new(),
            image_features: None,
            text_features: None,
        },
        failed,
    ))
}

/// Indices `start .. start + n` of the endless sequence of epochs of `len` samples, each
/// shuffled by a ChaCha8 generator seeded from `seed` and the epoch: a pure function of its
/// arguments (what makes resume exact).
pub fn shuffled_indices(seed: u64, len: usize, start: u64, n: usize) -> Vec<usize> {
    let len = len as u64;
    let mut out = Vec::with_capacity(n);
    let mut epoch_cache: Option<(u64, Vec<usize>)> = None;
    for i in start..start + n as u64 {
        let (epoch, pos) = (i / len, (i % len) as usize);
        if epoch_cache.as_ref().map(|c| c.0) != Some(epoch) {
            let mut perm: Vec<usize> = (0..len as usize).collect();
            perm.shuffle(&mut ChaCha8Rng::seed_from_u64(
                seed ^ epoch.wrapping_mul(0x9E37_79B9_7F4A_7C15),
            ));
            epoch_cache = Some((epoch, perm));
        }
        out.push(epoch_cache.as_ref().expect("set above").1[pos]);
    }
    out
}
