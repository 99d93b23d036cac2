//! The training loop, nanoGPT's train file in spirit: a model, its optimiser and its run
//! directory (new or resumed), batches made ahead on another thread, a step at a time
//! ([`crate::step`]), metrics, checkpoints and plots ([`crate::run_log`]) along the way.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use candle_core::Device;
use candle_nn::VarMap;
use clip::Clip;
use clip_data::{Batch, BatchSource};

use crate::checkpoint::{self, CheckpointState};
use crate::config::TrainConfig;
use crate::error::{io, Result, TrainError};
use crate::optim::AdamW;
use crate::run_log::{keep_metrics_before, report_epochs, write_skipped, MetricsLog};
use crate::step::StepMetrics;

/// AdamW over the parameters the run trains (all but locked towers').
fn optimiser(varmap: &VarMap, cfg: &TrainConfig) -> Result<AdamW> {
    Ok(AdamW::new_for(varmap, cfg.adamw, |name| {
        !cfg.lock.locks(name, &cfg.model)
    })?)
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
    pub(crate) source: Arc<dyn BatchSource>,
}

impl Trainer {
    /// A fresh run in `run_dir` (created; `config.json` written), on the CPU.
    pub fn new(cfg: TrainConfig, run_dir: &Path) -> Result<Self> {
        Self::new_on(cfg, run_dir, Device::Cpu)
    }

    /// A fresh run on `device` (the device is not part of the run: it may resume elsewhere).
    /// Bad settings or data fail before anything is written.
    pub fn new_on(cfg: TrainConfig, run_dir: &Path, device: Device) -> Result<Self> {
        cfg.validate()?;
        clip::memory::check_fits(&cfg.model, &cfg.model_name, 16.0)?; // weights, grads, 2 moments
        let (model, varmap) = Clip::with_varmap(&cfg.model, &device)?;
        clip::init::init_parameters(&varmap, &cfg.model, cfg.seed)?;
        let source = match crate::feature_cache::cached_source(&cfg, &model, &varmap)? {
            Some(cached) => cached,
            None => crate::data::make_source(&cfg)?,
        };
        let optim = optimiser(&varmap, &cfg)?;
        std::fs::create_dir_all(run_dir).map_err(io(run_dir))?;
        let json = serde_json::to_string_pretty(&cfg).expect("config serialises");
        let cfg_path = run_dir.join("config.json");
        std::fs::write(&cfg_path, json).map_err(io(&cfg_path))?;
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
            .ok_or_else(|| TrainError::Checkpoint {
                path: ckpt.clone(),
                msg: "a checkpoint must live in <run>/checkpoints/".into(),
            })?;
        let mut cfg = TrainConfig::load(&run_dir.join("config.json"))?;
        if let Some(s) = steps {
            cfg.steps = s;
        }
        cfg.validate()?;
        let (model, varmap) = Clip::with_varmap(&cfg.model, &device)?;
        clip::weights::load_into(&varmap, &ckpt.join("model.safetensors"))?;
        let source = match crate::feature_cache::cached_source(&cfg, &model, &varmap)? {
            Some(cached) => cached,
            None => crate::data::make_source(&cfg)?,
        };
        let mut optim = optimiser(&varmap, &cfg)?;
        let (state, optim_state) = checkpoint::load(&ckpt, &device)?;
        optim.load_state(&optim_state, state.optimizer_step, &ckpt)?;
        keep_metrics_before(&run_dir, state.step)?;
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

    pub fn save_checkpoint(&self) -> Result<PathBuf> {
        let state = CheckpointState {
            step: self.step,
            optimizer_step: self.optim.step,
        };
        let optim = self.optim.state_tensors()?;
        checkpoint::save(&self.run_dir, &self.varmap, &optim, &state)
    }

    /// Train to `cfg.steps`, with a prefetching batch thread, metrics, checkpoints and plots.
    pub fn run(&mut self, observer: &mut dyn Observer) -> Result<()> {
        if self.step == 0 {
            self.plot_similarity("start", "before training")?;
        }
        let mut metrics = MetricsLog::open(&self.run_dir)?;
        // Batches are made ahead on another thread while the model trains.
        let (tx, rx) = std::sync::mpsc::sync_channel::<candle_core::Result<Batch>>(2);
        let (source, device) = (Arc::clone(&self.source), self.device.clone());
        let (first, last, bsz) = (self.step, self.cfg.steps, self.cfg.batch_size);
        let producer = std::thread::spawn(move || {
            for s in first..last {
                if tx.send(source.batch(s * bsz as u64, bsz, &device)).is_err() {
                    break;
                }
            }
        });
        while self.step < self.cfg.steps {
            let t0 = Instant::now();
            let batch = rx.recv().map_err(|_| {
                TrainError::Data("the batch thread stopped (it panicked: see above)".into())
            })??;
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
            metrics.append(&m)?;
            tracing::debug!(step = m.step, loss = m.loss, lr = m.lr, "step");
            report_epochs(&self.run_dir, self.source.as_ref())?;
            observer.on_step(&m, self.cfg.steps);
            if self.step.is_multiple_of(self.cfg.checkpoint_every) || self.step == self.cfg.steps {
                self.save_checkpoint()?;
            }
        }
        drop(rx);
        producer.join().ok();
        write_skipped(&self.run_dir, self.source.as_ref())?;
        self.write_plots()
    }
}
