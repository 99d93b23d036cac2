//! `clipforge index`: embed every image under folders into an index on disk; run again to take
//! in only what changed. Also the model arguments `search` and `serve` share.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::Device;
use clip::{Clip, ClipConfig};
use clip_search::build::{Options, Progress};
use clip_search::ModelId;
use clip_train::{checkpoint, TrainConfig};
use indicatif::{ProgressBar, ProgressStyle};

/// Which model embeds: a trained run, or a config with a weights file.
#[derive(clap::Args, Debug, Clone)]
pub struct ModelArgs {
    /// A run directory (its latest checkpoint) or a checkpoint directory.
    #[arg(long, conflicts_with_all = ["model", "weights"])]
    pub checkpoint: Option<PathBuf>,
    /// A preset or config JSON (with --weights).
    #[arg(long, requires = "weights")]
    pub model: Option<String>,
    /// Weights file (.safetensors; open_clip's keys or Hugging Face CLIPModel's).
    #[arg(long, requires = "model")]
    pub weights: Option<PathBuf>,
}

impl ModelArgs {
    /// The model and its identity; an error says what to give when nothing is.
    pub fn load(&self, device: &Device) -> Result<(Clip, ModelId)> {
        let (cfg, weights, source): (ClipConfig, PathBuf, String) =
            match (&self.checkpoint, &self.model, &self.weights) {
                (Some(c), _, _) => {
                    let ckpt = checkpoint::resolve(c)?;
                    let run_dir = ckpt
                        .parent()
                        .and_then(Path::parent)
                        .context("checkpoint outside a run directory")?;
                    let cfg = TrainConfig::load(&run_dir.join("config.json"))?.model;
                    (cfg, ckpt.join("model.safetensors"), c.display().to_string())
                }
                (None, Some(m), Some(w)) => {
                    (ClipConfig::resolve(m)?, w.clone(), w.display().to_string())
                }
                _ => bail!("which model? give --checkpoint RUN, or --model M --weights FILE"),
            };
        let (model, varmap) = Clip::with_varmap(&cfg, device)?;
        clip::weights::load_into(&varmap, &weights)?;
        let id = ModelId::of(&source, &cfg, &weights)?;
        Ok((model, id))
    }

    /// The model, refused unless it is the one `index` was built with (another model's
    /// embeddings live in another space).
    pub fn load_for(&self, index: &clip_search::Index, device: &Device) -> Result<Clip> {
        let (model, id) = self.load(device)?;
        if !index.manifest.model.same_model(&id) {
            bail!(
                "{}: built with the model from {}; {} is another model, whose embeddings live in another space",
                index.dir.display(),
                index.manifest.model.source,
                id.source
            );
        }
        Ok(model)
    }
}

#[derive(clap::Args)]
#[command(after_help = "Examples:\n  \
clipforge index --checkpoint runs/quickstart ~/Pictures --out photos.idx\n  \
clipforge index --model ViT-B-32 --weights vit_b_32.safetensors ~/Pictures --out photos.idx\n  \
clipforge index --checkpoint runs/quickstart --out photos.idx     # again: only what changed\n\n\
A SOURCE is a folder, read recursively for JPEG, PNG, WebP, GIF and BMP files; a WebDataset\n\
shard (.tar) or a shard pattern (shards/train-{000000..000127}.tar), whose image members are\n\
indexed where they lie; or a fetched dataset (data/captions, or just its name), the images in\n\
its shards. Running it again on the same index embeds only new or changed files (by size and\n\
modification time; a changed shard is embedded again whole) and drops the ones that are gone;\n\
the sources indexed before are scanned again too. Work is committed as it\n\
goes: a run that is killed keeps what it committed, and the next run carries on. Unreadable\n\
images are skipped, counted and listed (again only when they change). The index remembers the\n\
model: one built with another model is refused.")]
pub struct Args {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Folders of images, shards or shard patterns, fetched datasets to add (none: bring the
    /// index's own sources up to date).
    #[arg(value_name = "SOURCE")]
    pub sources: Vec<String>,
    /// The index directory (made if missing).
    #[arg(long)]
    pub out: PathBuf,
    /// Images per forward pass.
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
    /// Commit the work done so far every N images (and every 20 s): what a killed run keeps.
    #[arg(long, default_value_t = 1024, value_name = "N")]
    pub segment_rows: usize,
    /// Also write the embeddings for other engines into DIR: embeddings.npy (f32 [N, E]) and
    /// entries.jsonl (each row's id and path).
    #[arg(long, value_name = "DIR")]
    pub export_npy: Option<PathBuf>,
    /// Precision of the products: bf16 rounds the image tower's weight products to bf16 and
    /// sums in f32 (about 3× faster where the CPU has AMX, 1.8× with AVX512-BF16; f32
    /// elsewhere); int8 quantises them (weights per column, inputs per row, i32 sums).
    #[arg(long, value_enum, default_value_t = super::DtypeArg::F32)]
    pub dtype: super::DtypeArg,
    /// Print what was done as JSON (and no progress bar).
    #[arg(long)]
    pub json: bool,
}

struct Bar(Option<ProgressBar>);

impl Progress for Bar {
    fn start(&mut self, total: usize) {
        if self.0.is_none() {
            return;
        }
        let pb = ProgressBar::new(total as u64);
        pb.set_style(
            ProgressStyle::with_template(
                "embedding {bar:30} {pos}/{len} images  {per_sec}  [{elapsed} < {eta}]",
            )
            .expect("valid template"),
        );
        self.0 = Some(pb);
    }
    fn advance(&mut self, n: usize) {
        if let Some(pb) = &self.0 {
            pb.inc(n as u64);
        }
    }
}

pub fn run(args: Args) -> Result<()> {
    if args.sources.is_empty() && !args.out.join("manifest.json").is_file() {
        bail!(
            "{}: no index there yet: give the folders to index",
            args.out.display()
        );
    }
    let sources = sources(&args.sources)?;
    let device = Device::Cpu;
    let (model, id) = args.model.load(&device)?;
    let opts = Options {
        batch: args.batch_size.max(1),
        rows_per_segment: args.segment_rows.max(1),
        ..Options::default()
    };
    let mut bar = Bar((!args.json).then(ProgressBar::hidden));
    let report = args.dtype.infer(|| {
        clip_search::build::update(&args.out, &model, &id, &sources, &device, &opts, &mut bar)
    })?;
    if let Some(pb) = &bar.0 {
        pb.finish_and_clear();
    }
    if let Some(dir) = &args.export_npy {
        let index = clip_search::Index::load(&args.out)?;
        let (npy, jsonl) = clip_search::export::npy(&index, dir)?;
        if !args.json {
            println!("exported {} and {}", npy.display(), jsonl.display());
        }
    }
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
        return Ok(());
    }
    println!(
        "{}: {} images ({} embedded now at {:.1} images/s, products on {}; {} unchanged, {} removed, {} skipped) in {:.1} s",
        args.out.display(),
        report.total,
        report.embedded,
        report.embedded as f64 / report.seconds.max(1e-9),
        args.dtype.kernel(),
        report.unchanged,
        report.removed,
        report.skipped.len(),
        report.seconds
    );
    for s in &report.skipped {
        println!(
            "  skipped {}: {}",
            clip_search::store::location(&s.path, s.member.as_ref()),
            s.error
        );
    }
    for p in &report.problems {
        println!("  could not read {p}");
    }
    Ok(())
}

/// The paths behind SOURCE arguments: a shard pattern's shards, a fetched dataset's name its
/// folder under `data/`, anything else as given (checked when indexed).
fn sources(args: &[String]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for a in args {
        if a.contains('{') && !Path::new(a).exists() {
            out.extend(clip_data::files::shard_files(a)?);
        } else {
            out.push(clip_data::packaged::locate(
                Path::new(a),
                Path::new("data"),
            )?);
        }
    }
    Ok(out)
}
