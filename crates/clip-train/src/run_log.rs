//! What a run writes beside its checkpoints: `metrics.jsonl` (a line per step), `epochs.jsonl`
//! (a line per finished epoch of streamed data), `skipped.json`, and the plots.

use std::io::Write;
use std::path::{Path, PathBuf};

use clip_data::{BatchSource, SceneBatcher, Shapes, SkipCounts, Split};

use crate::config::DataSpec;
use crate::dist::Comm;
use crate::error::{io, Result};
use crate::step::StepMetrics;
use crate::trainer::Trainer;

/// The fixed batch whose similarity matrix is plotted.
const PLOT_BATCH: usize = 12;
/// Mixed into the data seed for the plotted scenes, so they are not the first training batch.
const PLOT_SEED_SALT: u64 = 0x5eed;

/// `metrics.jsonl`, appended a line per step.
pub(crate) struct MetricsLog {
    path: PathBuf,
    file: std::fs::File,
}

impl MetricsLog {
    pub(crate) fn open(run_dir: &Path) -> Result<Self> {
        let path = run_dir.join("metrics.jsonl");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io(&path))?;
        Ok(Self { path, file })
    }

    pub(crate) fn append(&mut self, m: &StepMetrics) -> Result<()> {
        let line = serde_json::to_string(m).expect("metrics serialise");
        writeln!(self.file, "{line}").map_err(io(&self.path))
    }
}

/// The steps logged in `metrics.jsonl`, in order (lines that do not parse are left out).
pub fn read_metrics(run_dir: &Path) -> Vec<StepMetrics> {
    let text = std::fs::read_to_string(run_dir.join("metrics.jsonl")).unwrap_or_default();
    text.lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Keep only the metrics of steps before `step`: on resume, later lines belong to a run that is
/// being replaced.
pub(crate) fn keep_metrics_before(run_dir: &Path, step: u64) -> Result<()> {
    let path = run_dir.join("metrics.jsonl");
    let Ok(text) = std::fs::read_to_string(&path) else {
        return Ok(());
    };
    let kept: String = text
        .lines()
        .filter(|l| serde_json::from_str::<StepMetrics>(l).is_ok_and(|m| m.step < step))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&path, kept).map_err(io(&path))
}

/// Log the epochs the source has finished and, given the run directory (rank 0), append them
/// to `epochs.jsonl`: how many samples each yielded and what it skipped, by reason. Every
/// process logs its own; where the processes read shards of their own, the file holds rank 0's.
pub(crate) fn report_epochs(run_dir: Option<&Path>, source: &dyn BatchSource) -> Result<()> {
    let reports = source.take_epoch_reports();
    if reports.is_empty() {
        return Ok(());
    }
    for r in &reports {
        let (epoch, samples) = (r.epoch, r.samples);
        if r.skipped.total() > 0 {
            tracing::warn!(epoch, rank = r.rank, samples, skipped = ?r.skipped, "epoch done; bad samples skipped");
        } else {
            tracing::info!(epoch, rank = r.rank, samples, "epoch done; nothing skipped");
        }
    }
    let Some(run_dir) = run_dir else {
        return Ok(());
    };
    let path = run_dir.join("epochs.jsonl");
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(io(&path))?;
    for r in reports {
        let line = serde_json::to_string(&r).expect("serialises");
        writeln!(f, "{line}").map_err(io(&path))?;
    }
    Ok(())
}

/// What the source skipped over the whole run, where it can skip anything; where the processes
/// read shards of their own, summed over them (a collective: every process calls it).
pub(crate) fn world_skipped(
    source: &dyn BatchSource,
    comm: &dyn Comm,
) -> Result<Option<SkipCounts>> {
    let Some(skips) = source.skipped() else {
        return Ok(None);
    };
    if !source.per_rank() || comm.size() == 1 {
        return Ok(Some(skips));
    }
    // Counts travel as f32: exact to 2^24 per reason, summed over the world.
    let mut buf: Vec<f32> = skips.to_array().iter().map(|&c| c as f32).collect();
    comm.all_reduce_sum(&mut buf)?;
    Ok(Some(SkipCounts::from_array(std::array::from_fn(|i| {
        buf[i].round() as usize
    }))))
}

/// `skipped.json`: what the run skipped, where its source can skip anything.
pub(crate) fn write_skipped(run_dir: &Path, skips: Option<SkipCounts>) -> Result<()> {
    let Some(skips) = skips else {
        return Ok(());
    };
    if skips.total() > 0 {
        tracing::warn!(?skips, "skipped bad samples");
    }
    let path = run_dir.join("skipped.json");
    let json = serde_json::to_string_pretty(&skips).expect("serialises");
    std::fs::write(&path, json).map_err(io(&path))
}

impl Trainer {
    /// Cosine similarities `[n][n]` of the fixed plotting batch, and its captions.
    pub fn similarity_of_fixed_batch(&self) -> Result<(Vec<Vec<f32>>, Vec<String>)> {
        let b = match self.cfg.data.builtin_seed() {
            Some(seed) => SceneBatcher::new(
                Shapes::new(seed ^ PLOT_SEED_SALT, Split::Train),
                self.cfg.model.vision_cfg.image_size,
                self.cfg.model.text_cfg.context_length,
                false,
            )
            .with_tokenizer(clip::TextTokenizer::for_config(&self.cfg.model.text_cfg)?)
            .batch(0, PLOT_BATCH, &self.device)?,
            // Streamed shards: from a stream of its own, so that plotting neither moves the
            // training stream nor makes it read past samples it has not checked.
            None if matches!(self.cfg.data, DataSpec::Wds { .. }) => {
                crate::data::make_source(&self.cfg)?.batch(0, PLOT_BATCH, &self.device)?
            }
            None => self.source.batch(0, PLOT_BATCH, &self.device)?,
        };
        let (img, txt) =
            clip::ops::inference(|| -> Result<(candle_core::Tensor, candle_core::Tensor)> {
                Ok((self.image_embeds(&b)?, self.text_embeds(&b)?))
            })?;
        let sims = img.matmul(&txt.t()?)?; // [n, n]
        Ok((sims.to_vec2()?, b.captions))
    }

    /// `similarity_{tag}.png`: the fixed batch's similarity matrix now.
    pub(crate) fn plot_similarity(&self, tag: &str, title: &str) -> Result<()> {
        let (sims, caps) = self.similarity_of_fixed_batch()?;
        let path = self.run_dir.join(format!("similarity_{tag}.png"));
        crate::plots::similarity_matrix(&path, &sims, title, &caps)
    }

    /// The loss curve from `metrics.jsonl` and the final similarity matrix.
    pub fn write_plots(&self) -> Result<()> {
        let points: Vec<(u64, f64)> = read_metrics(&self.run_dir)
            .iter()
            .map(|m| (m.step, m.loss))
            .collect();
        let chance = (self.cfg.batch_size as f64).ln();
        crate::plots::loss_curve(&self.run_dir.join("loss.png"), &points, chance)?;
        self.plot_similarity("end", &format!("after {} steps", self.step))
    }
}
