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
use crate::dist::{Comm, Single, Timed};
use crate::error::{io, Result, TrainError};
use crate::optim::AdamW;
use crate::run_log::{
    keep_metrics_before, report_epochs, world_skipped, write_skipped, MetricsLog,
};
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
    /// The processes training together (a world of one by default); rank 0 writes the run.
    pub(crate) comm: Timed,
}

/// Refuse a world whose size is not the run's.
fn check_world(cfg: &TrainConfig, comm: &dyn Comm) -> Result<()> {
    if cfg.world_size == comm.size() {
        return Ok(());
    }
    let how = match cfg.world_size {
        1 => "one process, without --distributed".to_string(),
        n => format!("{n} processes (`mpirun -np {n}` … --distributed)"),
    };
    Err(TrainError::Distributed(format!(
        "the run trains as {} process(es) of {} pairs each, this world has {}: run it as {how}",
        cfg.world_size,
        cfg.batch_size,
        comm.size(),
    )))
}

impl Trainer {
    /// A fresh run in `run_dir` (created; `config.json` written), on the CPU.
    pub fn new(cfg: TrainConfig, run_dir: &Path) -> Result<Self> {
        Self::new_on(cfg, run_dir, Device::Cpu)
    }

    /// A fresh run on `device` (the device is not part of the run: it may resume elsewhere).
    /// Bad settings or data fail before anything is written.
    pub fn new_on(cfg: TrainConfig, run_dir: &Path, device: Device) -> Result<Self> {
        Self::new_in(cfg, run_dir, device, Box::new(Single))
    }

    /// A fresh run as one process of the world `comm` (`cfg.world_size` must be its size);
    /// only rank 0 writes the run directory.
    pub fn new_in(
        cfg: TrainConfig,
        run_dir: &Path,
        device: Device,
        comm: Box<dyn Comm>,
    ) -> Result<Self> {
        cfg.validate()?;
        check_world(&cfg, comm.as_ref())?;
        clip::memory::check_fits(&cfg.model, &cfg.model_name, 16.0)?; // weights, grads, 2 moments
        let (model, varmap) = Clip::with_varmap(&cfg.model, &device)?;
        clip::init::init_parameters(&varmap, &cfg.model, cfg.seed)?;
        let source = match crate::feature_cache::cached_source(&cfg, &model, &varmap)? {
            Some(cached) => cached,
            None => crate::data::make_source_for(&cfg, comm.rank(), comm.size())?,
        };
        let optim = optimiser(&varmap, &cfg)?;
        if comm.rank() == 0 {
            std::fs::create_dir_all(run_dir).map_err(io(run_dir))?;
            let json = serde_json::to_string_pretty(&cfg).expect("config serialises");
            let cfg_path = run_dir.join("config.json");
            std::fs::write(&cfg_path, json).map_err(io(&cfg_path))?;
            let _ = std::fs::remove_file(run_dir.join("metrics.jsonl"));
        }
        Ok(Self {
            cfg,
            model,
            varmap,
            optim,
            run_dir: run_dir.to_path_buf(),
            device,
            step: 0,
            source,
            comm: Timed::new(comm),
        })
    }

    /// Continue the run a checkpoint (or a run directory's latest checkpoint) belongs to.
    /// `steps` may extend the run.
    pub fn resume(path: &Path, steps: Option<u64>) -> Result<Self> {
        Self::resume_on(path, steps, Device::Cpu)
    }

    /// As [`Trainer::resume`], on `device`.
    pub fn resume_on(path: &Path, steps: Option<u64>, device: Device) -> Result<Self> {
        Self::resume_in(path, steps, device, Box::new(Single))
    }

    /// As [`Trainer::resume_on`], as one process of the world `comm`: the run's world size
    /// must be the world's (a run of 2 × 32 pairs resumes as 2 processes).
    pub fn resume_in(
        path: &Path,
        steps: Option<u64>,
        device: Device,
        comm: Box<dyn Comm>,
    ) -> Result<Self> {
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
        check_world(&cfg, comm.as_ref())?;
        let (model, varmap) = Clip::with_varmap(&cfg.model, &device)?;
        clip::weights::load_into(&varmap, &ckpt.join("model.safetensors"))?;
        let source = match crate::feature_cache::cached_source(&cfg, &model, &varmap)? {
            Some(cached) => cached,
            None => crate::data::make_source_for(&cfg, comm.rank(), comm.size())?,
        };
        let mut optim = optimiser(&varmap, &cfg)?;
        let (state, optim_state) = checkpoint::load(&ckpt, &device)?;
        optim.load_state(&optim_state, state.optimizer_step, &ckpt)?;
        if comm.rank() == 0 {
            keep_metrics_before(&run_dir, state.step)?;
        }
        Ok(Self {
            cfg,
            model,
            varmap,
            optim,
            run_dir,
            device,
            step: state.step,
            source,
            comm: Timed::new(comm),
        })
    }

    /// This process's share of the training batch of step `step` (a pure function of the
    /// step: exact resume). Rank r of W takes samples `r·b .. (r+1)·b` of the global batch, or,
    /// where it reads shards of its own, the step's b samples of its own stream.
    pub fn batch_for(&self, step: u64) -> Result<Batch> {
        let b = self.cfg.batch_size;
        Ok(self
            .source
            .batch(self.first_sample(step), b, &self.device)?)
    }

    /// Where this process's share of step `step`'s batch starts in the sample stream: in the
    /// run's one stream, or in this process's own (its resume position is then step · b).
    fn first_sample(&self, step: u64) -> u64 {
        let b = self.cfg.batch_size as u64;
        if self.source.per_rank() {
            return step * b;
        }
        step * b * self.comm.size() as u64 + self.comm.rank() as u64 * b
    }

    /// The pairs of the step's (global) batch that survived bad samples; in a world of
    /// several processes a collective, so that all of them skip a step or none does.
    fn usable_pairs(&self, local: &Batch) -> Result<usize> {
        let mut n = [local.captions.len() as f32];
        if self.comm.size() > 1 {
            self.comm.all_reduce_sum(&mut n)?;
        }
        Ok(n[0] as usize)
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
    /// In a world of several processes, every process calls it; rank 0 alone writes.
    pub fn run(&mut self, observer: &mut dyn Observer) -> Result<()> {
        let main = self.comm.rank() == 0;
        if self.step == 0 && main {
            self.plot_similarity("start", "before training")?;
        }
        let mut metrics = if main {
            Some(MetricsLog::open(&self.run_dir)?)
        } else {
            None
        };
        // Batches are made ahead on another thread while the model trains.
        let (tx, rx) = std::sync::mpsc::sync_channel::<candle_core::Result<Batch>>(2);
        let (source, device) = (Arc::clone(&self.source), self.device.clone());
        let (first, last, bsz) = (self.step, self.cfg.steps, self.cfg.batch_size);
        let starts: Vec<u64> = (first..last).map(|s| self.first_sample(s)).collect();
        let producer = std::thread::spawn(move || {
            for start in starts {
                if tx.send(source.batch(start, bsz, &device)).is_err() {
                    break;
                }
            }
        });
        while self.step < self.cfg.steps {
            let t0 = Instant::now();
            let batch = rx.recv().map_err(|_| {
                TrainError::Data("the batch thread stopped (it panicked: see above)".into())
            })??;
            if self.usable_pairs(&batch)? < 2 {
                tracing::warn!(
                    step = self.step,
                    "batch has fewer than 2 usable pairs; skipped"
                );
                self.step += 1;
                continue;
            }
            let mut m = self.train_step(&batch)?;
            let global = self.cfg.batch_size * self.comm.size();
            m.samples_per_s = global as f64 / t0.elapsed().as_secs_f64();
            tracing::debug!(step = m.step, loss = m.loss, lr = m.lr, "step");
            observer.on_step(&m, self.cfg.steps);
            let Some(metrics) = metrics.as_mut() else {
                report_epochs(None, self.source.as_ref())?;
                continue;
            };
            metrics.append(&m)?;
            report_epochs(Some(&self.run_dir), self.source.as_ref())?;
            if self.step.is_multiple_of(self.cfg.checkpoint_every) || self.step == self.cfg.steps {
                self.save_checkpoint()?;
            }
        }
        drop(rx);
        producer.join().ok();
        let skipped = world_skipped(self.source.as_ref(), &self.comm)?;
        if !main {
            return Ok(());
        }
        write_skipped(&self.run_dir, skipped)?;
        self.write_plots()
    }
}
