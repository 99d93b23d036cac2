//! The training loop: the one place where model, loss and data meet. AdamW with warm-up and
//! cosine decay, gradient clipping, the logit-scale clamp after every step, gradient
//! accumulation that keeps every negative of the full batch (open_clip's `accum_freq` feature
//! cache), checkpoints and exact resume, metrics, plots and progress.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use candle_core::backprop::GradStore;
use candle_core::{Device, Tensor};
use candle_nn::VarMap;
use clip::{clamp_logit_scale, clip_loss, Clip, ClipConfig};
use clip_data::{
    Batch, BatchSource, FileBatcher, SceneBatcher, Shapes, Split, StreamBatcher, StreamCfg,
};
use serde::{Deserialize, Serialize};

use crate::checkpoint::{self, CheckpointState};
use crate::error::{Result, TrainError};
use crate::optim::{clip_grad_norm, AdamW, AdamWParams};
use crate::schedule::cosine_lr;

/// Where the training pairs come from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum DataSpec {
    /// The built-in captioned scenes; `labels_only` trains on bare class names instead;
    /// `hard_negatives` k > 1 makes batches of groups of k scenes that differ only in shape.
    Builtin {
        seed: u64,
        labels_only: bool,
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

pub fn default_workers() -> usize {
    4
}

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

/// Build the batch source a config names.
pub fn make_source(cfg: &TrainConfig) -> Result<Arc<dyn BatchSource>> {
    let (size, ctx) = (
        cfg.model.vision_cfg.image_size,
        cfg.model.text_cfg.context_length,
    );
    let files = |(samples, skips): (Vec<clip_data::RawSample>, clip_data::SkipCounts),
                 origin: String|
     -> Result<Arc<dyn BatchSource>> {
        if samples.len() < 2 {
            return Err(TrainError::Input(format!(
                "{origin}: {} usable samples (skipped {}); at least 2 are needed",
                samples.len(),
                skips.total()
            )));
        }
        tracing::info!(samples = samples.len(), skipped = skips.total(), "{origin}");
        Ok(Arc::new(FileBatcher::new(
            samples, skips, cfg.seed, size, ctx,
        )))
    };
    let data_err = |e: clip_data::DataError| TrainError::Input(e.to_string());
    match &cfg.data {
        DataSpec::Builtin {
            seed,
            labels_only,
            hard_negatives,
        } => Ok(Arc::new(
            SceneBatcher::new(Shapes::new(*seed, Split::Train), size, ctx, *labels_only)
                .with_group(*hard_negatives),
        )),
        DataSpec::Csv {
            path,
            img_key,
            caption_key,
        } => files(
            clip_data::files::read_csv(path, img_key, caption_key).map_err(data_err)?,
            path.display().to_string(),
        ),
        DataSpec::Jsonl {
            path,
            img_key,
            caption_key,
        } => files(
            clip_data::files::read_jsonl(path, img_key, caption_key).map_err(data_err)?,
            path.display().to_string(),
        ),
        DataSpec::Wds {
            pattern,
            workers,
            shuffle_buffer,
        } => {
            let shards = clip_data::files::shard_files(pattern).map_err(data_err)?;
            tracing::info!(shards = shards.len(), workers, shuffle_buffer, "{pattern}");
            let stream = StreamCfg {
                workers: *workers,
                shuffle_buffer: *shuffle_buffer,
                seed: cfg.seed,
            };
            Ok(Arc::new(StreamBatcher::new(shards, stream, size, ctx)))
        }
    }
}

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
                hard_negatives: 1,
            },
            batch_size: 128,
            accum_freq: 1,
            steps,
            lr: 1e-3,
            warmup: (steps / 10).max(1),
            adamw: AdamWParams::default(),
            grad_clip: 1.0,
            seed: 0,
            checkpoint_every: 500,
        }
    }

    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(TrainError::Input(m));
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
        if self.steps == 0 {
            return bad("steps must be positive".into());
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return bad(format!("learning rate must be positive, got {}", self.lr));
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

/// One line of `metrics.jsonl`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepMetrics {
    pub step: u64,
    pub loss: f64,
    pub lr: f64,
    /// exp(t), the multiplier of the cosine similarities.
    pub logit_scale: f64,
    pub grad_norm: f64,
    pub samples_per_s: f64,
}

/// What the caller sees while training.
pub trait Observer {
    fn on_step(&mut self, _m: &StepMetrics, _total: u64) {}
}

impl Observer for () {}

/// A model under training, its optimiser and its run directory.
pub struct Trainer {
    pub cfg: TrainConfig,
    pub model: Clip,
    pub varmap: VarMap,
    pub optim: AdamW,
    pub run_dir: PathBuf,
    pub device: Device,
    /// The next step to run (steps done so far).
    pub step: u64,
    source: Arc<dyn BatchSource>,
}

/// The fixed batch whose similarity matrix is plotted: held-out-free test scenes.
const PLOT_BATCH: usize = 12;

impl Trainer {
    /// A fresh run in `run_dir` (created; `config.json` written), on the CPU.
    pub fn new(cfg: TrainConfig, run_dir: &Path) -> Result<Self> {
        Self::new_on(cfg, run_dir, Device::Cpu)
    }

    /// A fresh run on `device` (the device is not part of the run: it may resume elsewhere).
    pub fn new_on(cfg: TrainConfig, run_dir: &Path, device: Device) -> Result<Self> {
        cfg.validate()?;
        let _ = make_source(&cfg)?; // bad data fails before anything is written
        let (model, varmap) = Clip::with_varmap(&cfg.model, &device)?;
        clip::init::init_parameters(&varmap, &cfg.model, cfg.seed)?;
        let optim = AdamW::new(&varmap, cfg.adamw)?;
        std::fs::create_dir_all(run_dir)
            .map_err(|e| TrainError::Io(format!("{}: {e}", run_dir.display())))?;
        let json = serde_json::to_string_pretty(&cfg).expect("config serialises");
        std::fs::write(run_dir.join("config.json"), json)
            .map_err(|e| TrainError::Io(format!("{}: {e}", run_dir.display())))?;
        let source = make_source(&cfg)?;
        let _ = std::fs::remove_file(run_dir.join("metrics.jsonl"));
        Ok(Self {
            cfg,
            model,
            varmap,
            optim,
            run_dir: run_dir.to_path_buf(),
            device,
            step: 0,
            source,
        })
    }

    /// Continue the run a checkpoint (or a run directory's latest checkpoint) belongs to.
    /// `steps` may extend the run.
    pub fn resume(path: &Path, steps: Option<u64>) -> Result<Self> {
        Self::resume_on(path, steps, Device::Cpu)
    }

    /// As [`Trainer::resume`], on `device`.
    pub fn resume_on(path: &Path, steps: Option<u64>, device: Device) -> Result<Self> {
        let ckpt = checkpoint::resolve(path)?;
        let run_dir = ckpt
            .parent()
            .and_then(Path::parent)
            .map(Path::to_path_buf)
            .ok_or_else(|| {
                TrainError::Input(format!(
                    "{}: a checkpoint must live in <run>/checkpoints/",
                    ckpt.display()
                ))
            })?;
        let cfg_path = run_dir.join("config.json");
        let text = std::fs::read_to_string(&cfg_path)
            .map_err(|e| TrainError::Io(format!("{}: {e}", cfg_path.display())))?;
        let mut cfg: TrainConfig = serde_json::from_str(&text)
            .map_err(|e| TrainError::Input(format!("{}: {e}", cfg_path.display())))?;
        if let Some(s) = steps {
            cfg.steps = s;
        }
        cfg.validate()?;
        let (model, varmap) = Clip::with_varmap(&cfg.model, &device)?;
        clip::weights::load_into(&varmap, &ckpt.join("model.safetensors"))?;
        let mut optim = AdamW::new(&varmap, cfg.adamw)?;
        let (state, optim_state) = checkpoint::load(&ckpt, &device)?;
        optim
            .load_state(&optim_state, state.optimizer_step)
            .map_err(|m| TrainError::Input(format!("{}: {m}", ckpt.display())))?;
        // Metrics after the checkpoint belong to a run that is being replaced.
        let metrics = run_dir.join("metrics.jsonl");
        if let Ok(text) = std::fs::read_to_string(&metrics) {
            let kept: Vec<&str> = text
                .lines()
                .filter(|l| {
                    serde_json::from_str::<StepMetrics>(l)
                        .map(|m| m.step < state.step)
                        .unwrap_or(false)
                })
                .collect();
            let body = if kept.is_empty() {
                String::new()
            } else {
                kept.join("\n") + "\n"
            };
            std::fs::write(&metrics, body)
                .map_err(|e| TrainError::Io(format!("{}: {e}", metrics.display())))?;
        }
        let source = make_source(&cfg)?;
        Ok(Self {
            cfg,
            model,
            varmap,
            optim,
            run_dir,
            device,
            step: state.step,
            source,
        })
    }

    /// The training batch of step `step` (a pure function of the step: exact resume).
    pub fn batch_for(&self, step: u64) -> Result<Batch> {
        let b = self.cfg.batch_size;
        Ok(self.source.batch(step * b as u64, b, &self.device)?)
    }

    /// Loss and summed gradients of one batch, split into `accum_freq` micro-batches.
    ///
    /// With accumulation, features of every micro-batch are first computed without gradient;
    /// then each micro-batch is re-run with gradient and its live features replace its cached
    /// ones in the full-batch loss, so every step sees all N² pairs and the summed gradient
    /// equals the full batch's. The logit scale's gradient is taken from the first pass only.
    pub fn loss_and_grads(&self, batch: &Batch) -> Result<(f64, GradStore)> {
        let k = self.cfg.accum_freq;
        if k == 1 {
            let out = self.model.forward(&batch.pixels, &batch.ids)?;
            let loss = clip_loss(&out.image_embeds, &out.text_embeds, &out.logit_scale)?;
            let grads = loss.backward()?;
            return Ok((loss.to_scalar::<f32>()? as f64, grads));
        }
        let n = batch.pixels.dim(0)?;
        let m = n / k;
        let micro = |t: &Tensor, j: usize| t.narrow(0, j * m, m);
        let mut cached_img = Vec::with_capacity(k);
        let mut cached_txt = Vec::with_capacity(k);
        for j in 0..k {
            // Features without a graph: the backward runs per micro-batch below.
            let (img, txt) = clip::ops::inference(|| -> Result<(Tensor, Tensor)> {
                Ok((
                    self.model.encode_image(&micro(&batch.pixels, j)?)?,
                    self.model.encode_text(&micro(&batch.ids, j)?)?,
                ))
            })?;
            cached_img.push(img.detach()); // [m, E]
            cached_txt.push(txt.detach()); // [m, E]
        }
        let mut total: Option<GradStore> = None;
        let mut loss_value = 0.0;
        for j in 0..k {
            let mut imgs = cached_img.clone();
            let mut txts = cached_txt.clone();
            imgs[j] = self.model.encode_image(&micro(&batch.pixels, j)?)?;
            txts[j] = self.model.encode_text(&micro(&batch.ids, j)?)?;
            let image_embeds = Tensor::cat(&imgs, 0)?; // [N, E]
            let text_embeds = Tensor::cat(&txts, 0)?; // [N, E]
            let scale = if j == 0 {
                self.model.logit_scale.clone()
            } else {
                self.model.logit_scale.detach()
            };
            let loss = clip_loss(&image_embeds, &text_embeds, &scale)?;
            let grads = loss.backward()?;
            loss_value = loss.to_scalar::<f32>()? as f64;
            total = Some(match total {
                None => grads,
                Some(mut acc) => {
                    for var in self.varmap.all_vars() {
                        let t = var.as_tensor();
                        if let Some(g) = grads.get(t) {
                            let sum = match acc.get(t) {
                                Some(a) => (a + g)?,
                                None => g.clone(),
                            };
                            acc.insert(t, sum);
                        }
                    }
                    acc
                }
            });
        }
        Ok((loss_value, total.expect("accum_freq ≥ 1")))
    }

    /// Run one optimisation step on `batch`; returns its metrics (samples/s left 0).
    pub fn train_step(&mut self, batch: &Batch) -> Result<StepMetrics> {
        let lr = cosine_lr(self.cfg.lr, self.step, self.cfg.warmup, self.cfg.steps);
        let (loss, mut grads) = self.loss_and_grads(batch)?;
        if !loss.is_finite() {
            return Err(TrainError::Input(format!(
                "loss became {loss} at step {}: lower the learning rate (now {lr:.2e}) or raise warm-up",
                self.step
            )));
        }
        let grad_norm = clip_grad_norm(&self.varmap, &mut grads, self.cfg.grad_clip)?;
        self.optim.step(&grads, lr)?;
        clamp_logit_scale(&self.varmap)?;
        let logit_scale = (self.model.logit_scale.to_scalar::<f32>()? as f64).exp();
        let m = StepMetrics {
            step: self.step,
            loss,
            lr,
            logit_scale,
            grad_norm,
            samples_per_s: 0.0,
        };
        self.step += 1;
        Ok(m)
    }

    pub fn save_checkpoint(&self) -> Result<PathBuf> {
        let state = CheckpointState {
            step: self.step,
            optimizer_step: self.optim.step,
        };
        checkpoint::save(
            &self.run_dir,
            &self.varmap,
            &self.optim.state_tensors()?,
            &state,
        )
    }

    /// Cosine similarities `[n][n]` of the fixed plotting batch, and its captions.
    pub fn similarity_of_fixed_batch(&self) -> Result<(Vec<Vec<f32>>, Vec<String>)> {
        let b = match self.cfg.data.builtin_seed() {
            Some(seed) => SceneBatcher::new(
                Shapes::new(seed ^ 0x5eed, Split::Train),
                self.cfg.model.vision_cfg.image_size,
                self.cfg.model.text_cfg.context_length,
                false,
            )
            .batch(0, PLOT_BATCH, &self.device)?,
            None => self.source.batch(0, PLOT_BATCH, &self.device)?,
        };
        let out = clip::ops::inference(|| self.model.forward(&b.pixels, &b.ids))?;
        let sims = out.image_embeds.matmul(&out.text_embeds.t()?)?; // [n, n]
        Ok((sims.to_vec2()?, b.captions))
    }

    /// Train to `cfg.steps`, with a prefetching batch thread, metrics, checkpoints and plots.
    pub fn run(&mut self, observer: &mut dyn Observer) -> Result<()> {
        if self.step == 0 {
            let (sims, caps) = self.similarity_of_fixed_batch()?;
            crate::plots::similarity_matrix(
                &self.run_dir.join("similarity_start.png"),
                &sims,
                "before training",
                &caps,
            )?;
        }
        let metrics_path = self.run_dir.join("metrics.jsonl");
        let mut metrics = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&metrics_path)
            .map_err(|e| TrainError::Io(format!("{}: {e}", metrics_path.display())))?;

        // Batches are made ahead on another thread while the model trains.
        let (tx, rx) = std::sync::mpsc::sync_channel::<candle_core::Result<Batch>>(2);
        let batcher = Arc::clone(&self.source);
        let (first, last, bsz, device) = (
            self.step,
            self.cfg.steps,
            self.cfg.batch_size,
            self.device.clone(),
        );
        let producer = std::thread::spawn(move || {
            for s in first..last {
                if tx
                    .send(batcher.batch(s * bsz as u64, bsz, &device))
                    .is_err()
                {
                    break;
                }
            }
        });
        while self.step < self.cfg.steps {
            let t0 = Instant::now();
            let batch = rx
                .recv()
                .map_err(|_| TrainError::Io("batch thread stopped".into()))??;
            if batch.captions.len() < 2 {
                tracing::warn!(
                    step = self.step,
                    "batch has fewer than 2 usable pairs; skipped"
                );
                self.step += 1;
                continue;
            }
            let mut m = self.train_step(&batch)?;
            m.samples_per_s = self.cfg.batch_size as f64 / t0.elapsed().as_secs_f64();
            writeln!(
                metrics,
                "{}",
                serde_json::to_string(&m).expect("metrics serialise")
            )
            .map_err(|e| TrainError::Io(format!("{}: {e}", metrics_path.display())))?;
            tracing::debug!(step = m.step, loss = m.loss, lr = m.lr, "step");
            self.report_epochs()?;
            observer.on_step(&m, self.cfg.steps);
            if self.step.is_multiple_of(self.cfg.checkpoint_every) || self.step == self.cfg.steps {
                self.save_checkpoint()?;
            }
        }
        drop(rx);
        producer.join().ok();
        if let Some(skips) = self.source.skipped() {
            if skips.total() > 0 {
                tracing::warn!(?skips, "skipped bad samples");
            }
            let path = self.run_dir.join("skipped.json");
            std::fs::write(
                &path,
                serde_json::to_string_pretty(&skips).expect("serialises"),
            )
            .map_err(|e| TrainError::Io(format!("{}: {e}", path.display())))?;
        }
        self.write_plots()?;
        Ok(())
    }

    /// Log the epochs the data source has finished, and append them to `epochs.jsonl`: how
    /// many samples each yielded and what it skipped, by reason.
    fn report_epochs(&self) -> Result<()> {
        let reports = self.source.take_epoch_reports();
        if reports.is_empty() {
            return Ok(());
        }
        let path = self.run_dir.join("epochs.jsonl");
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| TrainError::Io(format!("{}: {e}", path.display())))?;
        for r in reports {
            if r.skipped.total() > 0 {
                tracing::warn!(epoch = r.epoch, samples = r.samples, skipped = ?r.skipped, "epoch done; bad samples skipped");
            } else {
                tracing::info!(
                    epoch = r.epoch,
                    samples = r.samples,
                    "epoch done; nothing skipped"
                );
            }
            writeln!(f, "{}", serde_json::to_string(&r).expect("serialises"))
                .map_err(|e| TrainError::Io(format!("{}: {e}", path.display())))?;
        }
        Ok(())
    }

    /// The loss curve from `metrics.jsonl` and the final similarity matrix.
    pub fn write_plots(&self) -> Result<()> {
        let text = std::fs::read_to_string(self.run_dir.join("metrics.jsonl")).unwrap_or_default();
        let points: Vec<(u64, f64)> = text
            .lines()
            .filter_map(|l| serde_json::from_str::<StepMetrics>(l).ok())
            .map(|m| (m.step, m.loss))
            .collect();
        let chance = (self.cfg.batch_size as f64).ln();
        crate::plots::loss_curve(&self.run_dir.join("loss.png"), &points, chance)?;
        let (sims, caps) = self.similarity_of_fixed_batch()?;
        crate::plots::similarity_matrix(
            &self.run_dir.join("similarity_end.png"),
            &sims,
            &format!("after {} steps", self.step),
            &caps,
        )?;
        Ok(())
    }
}
