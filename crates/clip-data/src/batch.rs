//! Turning samples into model inputs: normalised pixels `[B, 3, S, S]` and token ids `[B, T]`.

use candle_core::{Device, Result, Tensor};
use clip::transform::{CLIP_MEAN, CLIP_STD};
use clip::TextTokenizer;

use crate::synthetic::Shapes;

/// One batch of model inputs, and what it was made of.
#[derive(Debug, Clone)]
pub struct Batch {
    /// `[B, 3, S, S]`, CLIP-normalised.
    pub pixels: Tensor,
    /// `[B, T]` u32 token ids.
    pub ids: Tensor,
    pub captions: Vec<String>,
    /// Class ids of the label view.
    pub labels: Vec<usize>,
    /// The image tower's pooled features `[B, W]`, when a feature cache gives them (then
    /// `pixels` is empty, `[B, 0]`).
    pub image_features: Option<Tensor>,
    /// The text tower's pooled features `[B, W]`, when a feature cache gives them.
    pub text_features: Option<Tensor>,
}

/// HWC [0, 1] floats → normalised CHW.
pub fn normalize_hwc(img: &[f32], size: usize) -> Vec<f32> {
    let mut out = vec![0f32; img.len()];
    let plane = size * size;
    for p in 0..plane {
        for c in 0..3 {
            out[c * plane + p] = (img[p * 3 + c] - CLIP_MEAN[c]) / CLIP_STD[c];
        }
    }
    out
}

/// Batches of built-in scenes: batch `k` holds scenes `k·B .. (k+1)·B` of the split, so a
/// batch is a pure function of its number (what makes resume exact).
pub struct SceneBatcher {
    pub dataset: Shapes,
    pub image_size: usize,
    pub context_length: usize,
    /// Captions are bare class names ("red circle") instead of sentences: the label view.
    pub labels_only: bool,
    /// Captions are their words in a shuffled order (the bag-of-words view).
    pub bag_of_words: bool,
    /// Scenes come in groups of this many that differ only in shape (hard negatives); 1: off.
    pub group: usize,
    tokenizer: TextTokenizer,
}

impl SceneBatcher {
    pub fn new(
        dataset: Shapes,
        image_size: usize,
        context_length: usize,
        labels_only: bool,
    ) -> Self {
        Self {
            dataset,
            image_size,
            context_length,
            labels_only,
            bag_of_words: false,
            group: 1,
            tokenizer: TextTokenizer::default(),
        }
    }

    /// Batches made of groups of `group` scenes that differ only in shape
    /// ([`Shapes::grouped_scene`]).
    pub fn with_group(mut self, group: usize) -> Self {
        self.group = group.max(1);
        self
    }

    /// Captions as bags of words: the caption's words, shuffled (fixed per scene).
    pub fn with_bag_of_words(mut self, on: bool) -> Self {
        self.bag_of_words = on;
        self
    }

    /// Tokenize captions with `tokenizer` (a pretrained text tower's) instead of CLIP's BPE.
    pub fn with_tokenizer(mut self, tokenizer: TextTokenizer) -> Self {
        self.tokenizer = tokenizer;
        self
    }
}

impl crate::BatchSource for SceneBatcher {
    fn batch(&self, start: u64, n: usize, device: &Device) -> Result<Batch> {
        SceneBatcher::batch(self, start, n, device)
    }
}

impl SceneBatcher {
    /// Scenes `start .. start + n` as one batch.
    pub fn batch(&self, start: u64, n: usize, device: &Device) -> Result<Batch> {
        let s = self.image_size;
        let mut pixels = Vec::with_capacity(n * 3 * s * s);
        let mut captions = Vec::with_capacity(n);
        let mut labels = Vec::with_capacity(n);
        for i in 0..n as u64 {
            let scene = self.dataset.grouped_scene(start + i, self.group);
            pixels.extend(normalize_hwc(&scene.render(s), s));
            labels.push(scene.label());
            captions.push(if self.labels_only {
                crate::synthetic::class_names()[scene.label()].clone()
            } else if self.bag_of_words {
                scene.bag_of_words()
            } else {
                scene.caption()
            });
        }
        let pixels = Tensor::from_vec(pixels, (n, 3, s, s), device)?; // [B, 3, S, S]
        let ids = self
            .tokenizer
            .tokenize_tensor(&captions, self.context_length, device)?; // [B, T]
        Ok(Batch {
            pixels,
            ids,
            captions,
            labels,
            image_features: None,
            text_features: None,
        })
    }
}

/// Write a grid of scenes as a PNG (for looking at the data).
pub fn preview_png(
    dataset: &Shapes,
    size: usize,
    cols: usize,
    rows: usize,
    path: &std::path::Path,
) -> image::ImageResult<Vec<String>> {
    let mut canvas = image::RgbImage::new((cols * (size + 2)) as u32, (rows * (size + 2)) as u32);
    let mut captions = Vec::new();
    for k in 0..cols * rows {
        let scene = dataset.scene(k as u64);
        captions.push(scene.caption());
        let img = scene.render(size);
        let (ox, oy) = ((k % cols) * (size + 2) + 1, (k / cols) * (size + 2) + 1);
        for y in 0..size {
            for x in 0..size {
                let i = (y * size + x) * 3;
                let px = image::Rgb([
                    (img[i] * 255.0) as u8,
                    (img[i + 1] * 255.0) as u8,
                    (img[i + 2] * 255.0) as u8,
                ]);
                canvas.put_pixel((ox + x) as u32, (oy + y) as u32, px);
            }
        }
    }
    canvas.save(path)?;
    Ok(captions)
}
