//! A run's settings: the model, where the pairs come from, the optimiser and schedule; saved
//! as the run directory's `config.json`. The defaults live here, for library and CLI alike.

use std::path::{Path, PathBuf};

use clip::ClipConfig;
use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainError};
use crate::lock::LockSpec;
use crate::optim::AdamWParams;

/// Where the training pairs come from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum DataSpec {
    /// The built-in captioned scenes; `labels_only` trains on bare class names instead,
    /// `bag_of_words` on each caption's words in a shuffled order;
    /// `hard_negatives` k > 1 makes batches of groups of k scenes that differ only in shape.
    Builtin {
        seed: u64,
        labels_only: bool,
        #[serde(default)]
        bag_of_words: bool,
        #[serde(default = "one")]
        hard_negatives: usize,
    },
    /// A CSV (or `.tsv`) listing with image paths relative to it.
    Csv {
        path: PathBuf,
        img_key: String,
        caption_key: String,
    },
    /// A JSONL listing, one object per line.
    Jsonl {
        path: PathBuf,
        img_key: String,
        caption_key: String,
    },
    /// WebDataset tar shards, e.g. `data/shard-{000000..000127}.tar`, streamed by `workers`
    /// reader threads through a shuffle buffer of `shuffle_buffer` samples.
    Wds {
        pattern: String,
        #[serde(default = "default_workers")]
        workers: usize,
        #[serde(default = "default_shuffle_buffer")]
        shuffle_buffer: usize,
    },
}

/// WebDataset reader threads, unless set.
pub fn default_workers() -> usize {
    4
}

/// WebDataset shuffle buffer, in samples, unless set.
pub fn default_shuffle_buffer() -> usize {
    1000
}

impl DataSpec {
    /// The seed of the data (built-in scenes) or of the shuffling (files).
    pub fn builtin_seed(&self) -> Option<u64> {
        match self {
            DataSpec::Builtin { seed, .. } => Some(*seed),
            _ => None,
        }
    }
}

fn one() -> usize {
    1
}

/// The contrastive loss a run trains with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LossKind {
    /// CLIP's symmetric softmax cross-entropy over the batch (`clip::clip_loss`).
    #[default]
    Clip,
    /// SigLIP's pairwise sigmoid with a learned bias (`clip::siglip_loss`).
    Siglip,
}

impl LossKind {
    pub fn is_clip(&self) -> bool {
        *self == LossKind::Clip
    }
}

/// SigLIP's starting temperature parameter, ln 10 (open_clip's `--siglip`).
pub const SIGLIP_INIT_LOGIT_SCALE: f64 = std::f64::consts::LN_10;
/// SigLIP's starting logit bias.
pub const SIGLIP_INIT_LOGIT_BIAS: f64 = -10.0;

/// Everything a run is: saved as the run directory's `config.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// Preset name or config path the model came from (for the record).
    pub model_name: String,
    pub model: ClipConfig,
    pub data: DataSpec,
    pub batch_size: usize,
    /// Micro-batches per step (the batch is split; all negatives are kept).
    pub accum_freq: usize,
    pub steps: u64,
    pub lr: f64,
    pub warmup: u64,
    pub adamw: AdamWParams,
    /// Clip the global gradient norm to this (0: off).
    pub grad_clip: f64,
    pub seed: u64,
    pub checkpoint_every: u64,
    /// Locked towers (LiT); none by default.
    #[serde(default)]
    pub lock: LockSpec,
    /// Random resized crops of the training images (off: resize and centre-crop, which lets a
    /// locked image tower's features be cached).
    #[serde(default = "yes")]
    pub augment: bool,
    /// Where a locked image tower's features are cached (`crate::feature_cache`); `None`: no
    /// cache, the tower runs every step.
    #[serde(default = "default_feature_cache")]
    pub feature_cache: Option<PathBuf>,
    /// The loss: CLIP's softmax (default) or SigLIP's sigmoid.
    #[serde(default, skip_serializing_if = "LossKind::is_clip")]
    pub loss: LossKind,
    /// Processes training together, data parallel (`crate::dist`); `batch_size` is each
    /// one's share, as in open_clip, so the global batch is `batch_size × world_size`.
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub world_size: usize,
    /// With several processes, each computes the loss of its own rows against every column
    /// (open_clip's `--local-loss`) instead of the whole global N×N; the gradient is the same.
    #[serde(default, skip_serializing_if = "is_false")]
    pub local_loss: bool,
    /// The blocks' weight products in bf16 with f32 sums, forward and backward
    /// ([`clip::ops::autocast_bf16`], as PyTorch's CPU autocast) where the CPU has AMX or
    /// AVX512-BF16, else f32; parameters, optimiser state, LayerNorm, softmax and the loss
    /// stay f32.
    #[serde(default, skip_serializing_if = "is_false")]
    pub bf16: bool,
}

fn is_one(n: &usize) -> bool {
    *n == 1
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn default_feature_cache() -> Option<PathBuf> {
    Some(PathBuf::from(crate::feature_cache::DEFAULT_DIR))
}

fn yes() -> bool {
    true
}

/// The defaults of a run's settings, one place for the library and the command line.
pub mod defaults {
    /// Pairs per step.
    pub const BATCH_SIZE: usize = 128;
    /// Peak learning rate.
    pub const LR: f64 = 1e-3;
    /// Steps between checkpoints (and one at the end).
    pub const CHECKPOINT_EVERY: u64 = 200;
    /// Global gradient-norm clip.
    pub const GRAD_CLIP: f64 = 1.0;
    /// Steps when none are given.
    pub const STEPS: u64 = 1000;
    /// Warm-up as a fraction of the steps when not given: a tenth (at least one step).
    pub fn warmup(steps: u64) -> u64 {
        (steps / 10).max(1)
    }
}

/// `quickstart`'s recipe: `tiny` on the built-in scenes, 2000 steps of 64 pairs, peak lr 1e-3,
/// weight decay 0.1 (docs/quickstart.md has the sweep behind it).
pub mod quickstart {
    pub const MODEL: &str = "tiny";
    pub const STEPS: u64 = 2000;
    pub const BATCH_SIZE: usize = 64;
    pub const LR: f64 = 1e-3;
    pub const WEIGHT_DECAY: f64 = 0.1;
    pub const HARD_NEGATIVES: usize = 1;
}

impl TrainConfig {
    /// Defaults for a model: batch 128, lr 1e-3, warm-up 10% of steps, the paper's AdamW.
    pub fn new(model_name: &str, model: ClipConfig, steps: u64) -> Self {
        Self {
            model_name: model_name.to_string(),
            model,
            data: DataSpec::Builtin {
                seed: 0,
                labels_only: false,
                bag_of_words: false,
                hard_negatives: 1,
            },
            batch_size: defaults::BATCH_SIZE,
            accum_freq: 1,
            steps,
            lr: defaults::LR,
            warmup: defaults::warmup(steps),
            adamw: AdamWParams::default(),
            grad_clip: defaults::GRAD_CLIP,
            seed: 0,
            checkpoint_every: defaults::CHECKPOINT_EVERY,
            lock: LockSpec::default(),
            augment: true,
            feature_cache: default_feature_cache(),
            loss: LossKind::Clip,
            world_size: 1,
            local_loss: false,
            bf16: false,
        }
    }

    /// Train with SigLIP's loss, as open_clip's `--siglip`: the model gains a logit bias
    /// starting at −10 and its temperature parameter starts at ln 10, unless its config sets them.
    pub fn use_siglip(&mut self) {
        self.loss = LossKind::Siglip;
        let m = &mut self.model;
        m.init_logit_scale = m.init_logit_scale.or(Some(SIGLIP_INIT_LOGIT_SCALE));
        m.init_logit_bias = m.init_logit_bias.or(Some(SIGLIP_INIT_LOGIT_BIAS));
    }

    /// `clipforge quickstart`'s run ([`quickstart`]), seeded by `seed` (initialisation and
    /// scenes).
    pub fn quickstart(seed: u64) -> Self {
        let model = ClipConfig::preset(quickstart::MODEL).expect("the tiny preset is built in");
        let mut cfg = Self::new(quickstart::MODEL, model, quickstart::STEPS);
        cfg.batch_size = quickstart::BATCH_SIZE;
        cfg.lr = quickstart::LR;
        cfg.adamw.weight_decay = quickstart::WEIGHT_DECAY;
        cfg.seed = seed;
        cfg.data = DataSpec::Builtin {
            seed,
            labels_only: false,
            bag_of_words: false,
            hard_negatives: quickstart::HARD_NEGATIVES,
        };
        cfg
    }

    /// A run's `config.json`.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(crate::error::io(path))?;
        serde_json::from_str(&text).map_err(|e| {
            TrainError::Config(format!("{}: not a training config: {e}", path.display()))
        })
    }

    /// Every setting in range; the message names the setting.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(TrainError::Config(m));
        if self.batch_size < 2 {
            return bad(format!(
                "batch size must be at least 2 (a contrastive batch needs negatives), got {}",
                self.batch_size
            ));
        }
        if self.accum_freq == 0 || !self.batch_size.is_multiple_of(self.accum_freq) {
            return bad(format!(
                "batch size {} is not divisible by accum-freq {}",
                self.batch_size, self.accum_freq
            ));
        }
        if self.world_size == 0 {
            return bad("world_size must be at least 1".into());
        }
        if self.steps == 0 {
            return bad("steps must be positive".into());
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return bad(format!("learning rate must be positive, got {}", self.lr));
        }
        self.lock.validate(&self.model)?;
        if self.loss == LossKind::Siglip && self.model.init_logit_bias.is_none() {
            return bad(
                "the siglip loss needs a logit bias: set \"init_logit_bias\" (e.g. -10) in the model config, or train with --siglip, which sets it".into(),
            );
        }
        if self.checkpoint_every == 0 {
            return bad("checkpoint-every must be positive".into());
        }
        if let DataSpec::Wds {
            workers,
            shuffle_buffer,
            ..
        } = self.data
        {
            if workers == 0 || shuffle_buffer == 0 {
                return bad(format!(
                    "workers and shuffle-buffer must be at least 1, got {workers} and {shuffle_buffer}"
                ));
            }
        }
        if let DataSpec::Builtin { hard_negatives, .. } = self.data {
            // A colour allows 7 shapes in training (one combination is held out).
            if !(1..=7).contains(&hard_negatives) {
                return bad(format!(
                    "hard-negatives must be 1 (off) to 7 (shapes a colour has in training), got {hard_negatives}"
                ));
            }
        }
        Ok(())
    }
}
