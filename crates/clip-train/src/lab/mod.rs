//! The learning lab: one experiment per question a learner asks of CLIP, each training what it
//! needs on the built-in scenes (reusing any run it already trained), measuring, and writing
//! `DIR/<name>.md` (the question, the setup, tables, plots, what it shows and what it does
//! not), PNG plots in `DIR/<name>/` and every number in `DIR/<name>.json`.

pub mod captions;
pub mod embedding;
pub mod figures;
pub mod loss;
pub mod measure;
pub mod negatives;
pub mod pretrained;
pub mod projection;
pub mod report;
pub mod runs;
pub mod scaling;

use std::path::PathBuf;

use candle_core::Device;

use crate::config::TrainConfig;
use crate::error::Result;
pub use report::Report;

/// The experiments, by the name `clipforge lab` takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Experiment {
    /// The loss taken apart on one batch: similarities, softmaxes, cross-entropies, gradients.
    Loss,
    /// Full captions against bare labels against a bag of words, and a relation test.
    CaptionsVsLabels,
    /// The learned space: PCA of images and texts, the modality gap, nearest neighbours.
    EmbeddingSpace,
    /// No head, linear, MLP heads: zero-shot, retrieval, a probe under the head.
    Projection,
    /// Batch size N from 8 to 256 at equal pairs seen, CLIP's loss against SigLIP's.
    Negatives,
    /// The image tower grown in width, depth, resolution or all three, at equal compute.
    Scaling,
    /// From scratch against a pretrained image tower, locked (LiT) or fine-tuned.
    Pretrained,
}

impl Experiment {
    pub const ALL: [Experiment; 7] = [
        Experiment::Loss,
        Experiment::Negatives,
        Experiment::CaptionsVsLabels,
        Experiment::Projection,
        Experiment::Scaling,
        Experiment::EmbeddingSpace,
        Experiment::Pretrained,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Experiment::Loss => "loss",
            Experiment::CaptionsVsLabels => "captions-vs-labels",
            Experiment::EmbeddingSpace => "embedding-space",
            Experiment::Projection => "projection",
            Experiment::Negatives => "negatives",
            Experiment::Scaling => "scaling",
            Experiment::Pretrained => "pretrained",
        }
    }

    /// One line: the question it answers.
    pub fn question(self) -> &'static str {
        match self {
            Experiment::Loss => "how do the batch and the contrastive loss work?",
            Experiment::CaptionsVsLabels => "why do sentences beat labels?",
            Experiment::EmbeddingSpace => "what does the learned space look like?",
            Experiment::Projection => "linear or non-linear projection heads?",
            Experiment::Negatives => "does a bigger batch (more negatives) help? CLIP or SigLIP?",
            Experiment::Scaling => "width, depth or resolution, at equal compute?",
            Experiment::Pretrained => {
                "from scratch, or on a pretrained tower, locked or fine-tuned?"
            }
        }
    }
}

impl std::str::FromStr for Experiment {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|e| e.name() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Self::ALL.iter().map(|e| e.name()).collect();
                format!(
                    "unknown experiment {s:?}; expected one of {}",
                    names.join(", ")
                )
            })
    }
}

/// How an experiment runs.
#[derive(Debug, Clone)]
pub struct LabOptions {
    /// The short form: fewer steps and images, figures labelled quick.
    pub quick: bool,
    /// Where the report, plots and trained runs go.
    pub out: PathBuf,
    /// Cap on every training run's steps (for a smoke test of the whole pipeline).
    pub max_steps: Option<u64>,
    /// Show progress bars.
    pub progress: bool,
    pub device: Device,
    /// The corpus and tower of the `pretrained` experiment.
    pub pretrained: pretrained::PretrainedOptions,
}

impl LabOptions {
    /// Steps for a training run whose full form takes `full` and quick form `quick`.
    pub fn steps(&self, full: u64, quick: u64) -> u64 {
        let s = if self.quick { quick } else { full };
        self.max_steps.map_or(s, |m| s.min(m)).max(1)
    }

    /// The quickstart's steps in the full form, a quarter of them in the quick one.
    pub fn quickstart_steps(&self) -> u64 {
        let full = crate::config::quickstart::STEPS;
        self.steps(full, full / 4)
    }

    /// Evaluation images: `full` or `quick`, fewer still under `max_steps`.
    pub fn images(&self, full: usize, quick: usize) -> usize {
        let n = if self.quick { quick } else { full };
        if self.max_steps.is_some() {
            n.min(32)
        } else {
            n
        }
    }

    /// The quickstart's recipe (`tiny`, batch 64, lr 1e-3) for `steps` steps and `seed`, with
    /// four checkpoints along the way.
    pub fn base_config(&self, steps: u64, seed: u64) -> TrainConfig {
        let mut cfg = TrainConfig::quickstart(seed);
        cfg.steps = steps;
        cfg.warmup = crate::config::defaults::warmup(steps);
        cfg.checkpoint_every = (steps / 4).max(1);
        cfg
    }
}

/// Run `experiment`, write its report into `opts.out`, and return it.
pub fn run(experiment: Experiment, opts: &LabOptions) -> Result<Report> {
    std::fs::create_dir_all(opts.out.join(experiment.name()))
        .map_err(crate::error::io(&opts.out))?;
    let start = std::time::Instant::now();
    let mut report = match experiment {
        Experiment::Loss => loss::run(opts)?,
        Experiment::CaptionsVsLabels => captions::run(opts)?,
        Experiment::EmbeddingSpace => embedding::run(opts)?,
        Experiment::Projection => projection::run(opts)?,
        Experiment::Negatives => negatives::run(opts)?,
        Experiment::Scaling => scaling::run(opts)?,
        Experiment::Pretrained => pretrained::run(opts)?,
    };
    report.seconds = start.elapsed().as_secs_f64();
    report.write(&opts.out)?;
    Ok(report)
}

/// The CPU's model name, for the reports (figures are read beside the machine).
pub fn cpu_name() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string())
}
