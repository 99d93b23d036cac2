//! Training runs of the lab, kept under `DIR/runs/` and keyed by their whole configuration: an
//! experiment that asks for a configuration already trained (by itself or by another
//! experiment) loads its checkpoint instead of training again; one cut off part-way resumes.

use std::path::{Path, PathBuf};
use std::time::Instant;

use clip::Clip;

use super::LabOptions;
use crate::checkpoint;
use crate::config::TrainConfig;
use crate::error::{io, Result};
use crate::step::StepMetrics;
use crate::trainer::{Observer, Trainer};

/// A trained model and where it came from.
pub struct Trained {
    pub model: Clip,
    pub cfg: TrainConfig,
    pub run_dir: PathBuf,
    /// Seconds its training took when it was trained (not now, if it was reused).
    pub train_seconds: f64,
    pub reused: bool,
}

/// FNV-1a over the configuration's JSON: the run's directory name.
fn key(cfg: &TrainConfig) -> u64 {
    let json = serde_json::to_string(cfg).expect("config serialises");
    json.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The run directory of `cfg` under the lab's output.
pub fn run_dir(opts: &LabOptions, tag: &str, cfg: &TrainConfig) -> PathBuf {
    opts.out
        .join("runs")
        .join(format!("{tag}-{:016x}", key(cfg)))
}

struct Bar(Option<indicatif::ProgressBar>);

impl Observer for Bar {
    fn on_step(&mut self, m: &StepMetrics, _total: u64) {
        if let Some(pb) = &self.0 {
            pb.set_position(m.step);
            pb.set_message(format!("loss {:.3}", m.loss));
        }
    }
}

fn bar(opts: &LabOptions, tag: &str, cfg: &TrainConfig, from: u64) -> Bar {
    if !opts.progress {
        return Bar(None);
    }
    let pb = indicatif::ProgressBar::new(cfg.steps);
    pb.set_style(
        indicatif::ProgressStyle::with_template(&format!(
            "training {tag:<16} {{bar:30}} {{pos}}/{{len}} {{msg}} [{{elapsed}} < {{eta}}]"
        ))
        .expect("valid template"),
    );
    pb.set_position(from);
    Bar(Some(pb))
}

const SECONDS_FILE: &str = "lab_seconds.json";

/// Train `cfg` (named `tag` in its directory), or load it if this lab already trained it.
pub fn train_or_reuse(opts: &LabOptions, tag: &str, cfg: &TrainConfig) -> Result<Trained> {
    let dir = run_dir(opts, tag, cfg);
    let seconds_path = dir.join(SECONDS_FILE);
    let done = checkpoint::resolve(&dir)
        .ok()
        .and_then(|c| checkpoint::load(&c, &opts.device).ok().map(|(s, _)| (c, s)))
        .filter(|(_, s)| s.step >= cfg.steps);
    if let (Some((ckpt, _)), Ok(text)) = (done, std::fs::read_to_string(&seconds_path)) {
        let (model, varmap) = Clip::with_varmap(&cfg.model, &opts.device)?;
        clip::weights::load_into(&varmap, &ckpt.join("model.safetensors"))?;
        return Ok(Trained {
            model,
            cfg: cfg.clone(),
            run_dir: dir,
            train_seconds: text.trim().parse().unwrap_or(0.0),
            reused: true,
        });
    }
    let start = Instant::now();
    let mut trainer = match checkpoint::resolve(&dir) {
        Ok(ckpt) => Trainer::resume_on(&ckpt, None, opts.device.clone())?,
        Err(_) => Trainer::new_on(cfg.clone(), &dir, opts.device.clone())?,
    };
    let mut observer = bar(opts, tag, cfg, trainer.step);
    trainer.run(&mut observer)?;
    if let Some(pb) = observer.0 {
        pb.finish_and_clear();
    }
    let train_seconds = start.elapsed().as_secs_f64();
    std::fs::write(&seconds_path, format!("{train_seconds}")).map_err(io(&seconds_path))?;
    Ok(Trained {
        model: trainer.model,
        cfg: cfg.clone(),
        run_dir: dir,
        train_seconds,
        reused: false,
    })
}

/// The weights of `run_dir`'s checkpoint at `step` (its `step_NNNNNNN` directory) in a model.
pub fn model_at(cfg: &TrainConfig, run_dir: &Path, step: u64, opts: &LabOptions) -> Result<Clip> {
    let (model, varmap) = Clip::with_varmap(&cfg.model, &opts.device)?;
    if step == 0 {
        clip::init::init_parameters(&varmap, &cfg.model, cfg.seed)?;
    } else {
        let ckpt =
            checkpoint::resolve(&run_dir.join("checkpoints").join(format!("step_{step:07}")))?;
        clip::weights::load_into(&varmap, &ckpt.join("model.safetensors"))?;
    }
    Ok(model)
}
