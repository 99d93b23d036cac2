//! `clipforge train`: train a CLIP model (flags, or `--config train.json`), or `--resume` one.

use std::path::PathBuf;

use anyhow::Result;
use clip::ClipConfig;
use clip_train::config::defaults;
use clip_train::dist::{Comm, Single};
use clip_train::optim::AdamWParams;
use clip_train::{DataSpec, StepMetrics, TrainConfig, Trainer};
use indicatif::{ProgressBar, ProgressStyle};

#[derive(clap::Args, Clone)]
#[command(
    after_help = "Examples:\n  clipforge train --model tiny --steps 600 --batch-size 128 --out runs/tiny\n  \
clipforge train --config runs/tiny/config.json --out runs/tiny-again\n  \
clipforge train --resume runs/tiny            # continue from its latest checkpoint\n  \
clipforge train --resume runs/tiny --steps 1200   # and train longer\n\n\
The run directory gets config.json, metrics.jsonl (step, loss, lr, logit scale, samples/s),\n\
checkpoints/step_N/ (weights with open_clip keys, optimiser state), loss.png and the\n\
similarity matrices similarity_start.png / similarity_end.png.\n\n\
Data (--data): builtin (captioned scenes, the default), csv:LIST.csv, tsv:LIST.tsv,\n\
jsonl:LIST.jsonl (image paths relative to the list; columns/keys by --csv-img-key and\n\
--csv-caption-key), or wds:'shards/shard-{000000..000127}.tar' (WebDataset: KEY.jpg|png|webp\n\
with KEY.txt or KEY.json's \"caption\", a sample's files adjacent). Shards are streamed: each\n\
epoch they are shuffled and dealt to --workers reader threads, and a --shuffle-buffer of\n\
samples mixes them; the order is a function of --seed alone, so --resume is exact here too.\n\
Under --distributed each process reads shards of its own (each epoch's shuffled shards dealt by\n\
rank, then to its workers), so there must be at least one shard per process.\n\
Images that do not decode, empty captions and truncated shards are skipped and counted: each\n\
epoch's counts are logged when it ends and appended to epochs.jsonl (rank 0's shards under\n\
--distributed); totals, of every process, in skipped.json."
)]
pub struct Args {
    /// Model preset (tiny, small, ViT-B-32, …) or an open_clip-format config JSON.
    #[arg(long, default_value = "tiny")]
    pub model: String,
    /// A training config JSON (a run's config.json); flags given explicitly are ignored.
    #[arg(long, conflicts_with = "resume")]
    pub config: Option<PathBuf>,
    /// Continue a run directory (or a checkpoint directory) exactly where it stopped.
    #[arg(long)]
    pub resume: Option<PathBuf>,
    /// Run directory.
    #[arg(long, default_value = "runs/train")]
    pub out: PathBuf,
    /// cpu, cuda or cuda:N (CUDA needs a binary built with --features cuda). Under
    /// --distributed, `cuda` is the GPU of the process's local rank: one process per GPU.
    #[arg(long, default_value = "cpu")]
    pub device: super::DeviceArg,
    /// Optimiser steps in total [default: 1000; with --resume, the run's].
    #[arg(long)]
    pub steps: Option<u64>,
    /// Pairs per step: the N of the N×N logits.
    #[arg(long, default_value_t = defaults::BATCH_SIZE)]
    pub batch_size: usize,
    /// Split each step into this many micro-batches, keeping all N² pairs (saves memory).
    #[arg(long, default_value_t = 1)]
    pub accum_freq: usize,
    /// Peak learning rate.
    #[arg(long, default_value_t = defaults::LR)]
    pub lr: f64,
    /// Weight decay (weights only; not gains, biases, embeddings, logit scale).
    #[arg(long, default_value_t = AdamWParams::default().weight_decay)]
    pub wd: f64,
    /// Warm-up steps (default: a tenth of the steps).
    #[arg(long)]
    pub warmup: Option<u64>,
    /// Clip the gradient norm (0: off).
    #[arg(long, default_value_t = defaults::GRAD_CLIP)]
    pub grad_clip: f64,
    /// Seed of initialisation and data.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Write a checkpoint every this many steps (and at the end).
    #[arg(long, default_value_t = defaults::CHECKPOINT_EVERY)]
    pub checkpoint_every: u64,
    /// Train on bare class names ("red circle") instead of captions: the label view.
    #[arg(long)]
    pub labels_only: bool,
    /// Built-in data: batches made of groups of K scenes that differ only in shape (same
    /// colours, sizes, places), so colour and size alone cannot tell the captions apart. 1: off.
    #[arg(long, default_value_t = 1, value_name = "K")]
    pub hard_negatives: usize,
    /// WebDataset: reader threads the shards are dealt to.
    #[arg(long, default_value_t = clip_train::config::default_workers())]
    pub workers: usize,
    /// WebDataset: samples held in the shuffle buffer (1: shard order only).
    #[arg(long, default_value_t = clip_train::config::default_shuffle_buffer())]
    pub shuffle_buffer: usize,
    /// A fetched dataset (its directory, or a name fetched into data/ by clipforge data fetch):
    /// train on its train split's shards.
    #[arg(long)]
    pub dataset: Option<PathBuf>,
    /// Training pairs: builtin, csv:PATH, tsv:PATH, jsonl:PATH or wds:PATTERN.
    #[arg(long, default_value = "builtin")]
    pub data: String,
    /// Image column (CSV/TSV) or key (JSONL).
    #[arg(long, default_value = "filepath")]
    pub csv_img_key: String,
    /// Caption column (CSV/TSV) or key (JSONL).
    #[arg(long, default_value = "title")]
    pub csv_caption_key: String,
    /// Lock the image tower (LiT): no updates, no optimiser state; wholly locked, it runs
    /// without a graph.
    #[arg(long)]
    pub lock_image: bool,
    /// With --lock-image: keep the last N of its groups trainable (the head is the last; then
    /// the last block with ln_post; then each block back to the stem).
    #[arg(long, default_value_t = 0, value_name = "N", requires = "lock_image")]
    pub lock_image_unlocked_groups: usize,
    /// Lock the text tower.
    #[arg(long)]
    pub lock_text: bool,
    /// With --lock-text: keep the last N of its groups trainable (the head; the last block with
    /// ln_final; each block back to the embeddings).
    #[arg(long, default_value_t = 0, value_name = "N", requires = "lock_text")]
    pub lock_text_unlocked_layers: usize,
    /// Resize and centre-crop the training images instead of random crops. With
    /// --lock-image (whole) and file data, the image tower's features are then computed once
    /// per image and cached on disk (cache/features/), so later steps, epochs and runs only
    /// run the heads and the text tower.
    #[arg(long)]
    pub no_augment: bool,
    /// Where the feature cache lives.
    #[arg(long, default_value = clip_train::feature_cache::DEFAULT_DIR, value_name = "DIR")]
    pub feature_cache: PathBuf,
    /// Run the locked image tower every step instead of caching its features.
    #[arg(long)]
    pub no_feature_cache: bool,
    /// Train with SigLIP's pairwise sigmoid loss instead of CLIP's softmax: the model gains
    /// a learned logit bias (−10 at start) and its temperature starts at exp(t) = 10.
    #[arg(long)]
    pub siglip: bool,
    /// Train as one of the processes of an MPI launch (`mpirun -np N clipforge train
    /// --distributed …`): --batch-size is each process's share, the loss sees the whole
    /// global batch; rank 0 writes the run. Needs a binary built with --features mpi.
    #[arg(long)]
    pub distributed: bool,
    /// With --distributed: each process computes the loss of its own rows against every
    /// column (open_clip's --local-loss) instead of the whole N×N; the same gradient.
    #[arg(long, requires = "distributed")]
    pub local_loss: bool,
    /// With --distributed: a process that waits longer than this many seconds in one
    /// collective (another process stopped, hung, or its machine gone) ends itself with an
    /// error naming it, and the launch stops. Rank 0 writing a checkpoint makes the others
    /// wait: keep it above the longest checkpoint write.
    #[arg(
        long,
        requires = "distributed",
        default_value_t = 600.0,
        value_name = "SECS"
    )]
    pub collective_timeout: f64,
    /// Precision of the blocks' weight products, forward and backward: bf16 with f32 sums
    /// where the CPU has AMX or AVX512-BF16 (PyTorch's CPU autocast; parameters, optimiser,
    /// LayerNorm, softmax and loss stay f32), else f32. CPU only.
    #[arg(long, value_enum, default_value = "f32", value_name = "DTYPE")]
    pub dtype: TrainDtype,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

/// A progress bar showing step/total, loss, lr, samples/s and ETA.
pub struct Progress(Option<ProgressBar>);

impl Progress {
    pub fn new(quiet: bool, total: u64, done: u64) -> Self {
        if quiet {
            return Self(None);
        }
        let bar = ProgressBar::new(total);
        bar.set_style(
            ProgressStyle::with_template("{bar:30} {pos}/{len} steps  {msg}  [{elapsed} < {eta}]")
                .expect("valid template")
                .progress_chars("█▉▊▋▌▍▎▏ "),
        );
        bar.set_position(done);
        Self(Some(bar))
    }
    pub fn finish(&self) {
        if let Some(b) = &self.0 {
            b.finish();
        }
    }
}

impl clip_train::Observer for Progress {
    fn on_step(&mut self, m: &StepMetrics, _total: u64) {
        if let Some(b) = &self.0 {
            b.set_position(m.step + 1);
            b.set_message(format!(
                "loss {:.4}  lr {:.2e}  scale {:.1}  {:.0} samples/s",
                m.loss, m.lr, m.logit_scale, m.samples_per_s
            ));
        } else if m.step.is_multiple_of(50) {
            tracing::info!(step = m.step, loss = m.loss, lr = m.lr, "training");
        }
    }
}

/// Build the training config from flags.
pub fn config_from_args(args: &Args) -> Result<TrainConfig> {
    if let Some(path) = &args.config {
        let mut cfg = TrainConfig::load(path)?;
        if let Some(s) = args.steps {
            cfg.steps = s;
        }
        return Ok(cfg);
    }
    let model = ClipConfig::resolve(&args.model)?;
    let steps = args.steps.unwrap_or(defaults::STEPS);
    let mut cfg = TrainConfig::new(&args.model, model, steps);
    cfg.data = data_spec(args)?;
    cfg.batch_size = args.batch_size;
    cfg.accum_freq = args.accum_freq;
    cfg.lr = args.lr;
    cfg.adamw.weight_decay = args.wd;
    if let Some(w) = args.warmup {
        cfg.warmup = w;
    }
    cfg.grad_clip = args.grad_clip;
    cfg.seed = args.seed;
    cfg.checkpoint_every = args.checkpoint_every;
    cfg.augment = !args.no_augment;
    cfg.feature_cache = (!args.no_feature_cache).then(|| args.feature_cache.clone());
    cfg.lock = clip_train::lock::LockSpec {
        image: args.lock_image,
        image_unlocked_groups: args.lock_image_unlocked_groups,
        text: args.lock_text,
        text_unlocked_groups: args.lock_text_unlocked_layers,
    };
    if args.siglip {
        cfg.use_siglip();
    }
    cfg.bf16 = args.dtype == TrainDtype::Bf16;
    Ok(cfg)
}

/// Precision of training's products (`train --dtype`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TrainDtype {
    /// f32 throughout.
    F32,
    /// The blocks' weight products in bf16 with f32 sums, forward and backward.
    Bf16,
}

impl TrainDtype {
    /// bf16 training is the CPU's autocast: refused on another device.
    pub fn check_device(self, device: &candle_core::Device) -> Result<()> {
        if self == TrainDtype::Bf16 && !device.is_cpu() {
            anyhow::bail!(
                "--dtype bf16: bf16 training is the CPU's autocast (bf16 products on AMX or \
                 AVX512-BF16); on a GPU train in f32"
            );
        }
        Ok(())
    }
}

/// Parse `--data` (or `--dataset`, a fetched dataset's training split).
fn data_spec(args: &Args) -> Result<DataSpec> {
    if let Some(arg) = &args.dataset {
        let dir = &clip_data::packaged::locate(arg, std::path::Path::new("data"))?;
        let info = clip_data::packaged::DatasetInfo::load(dir)?;
        return Ok(DataSpec::Wds {
            pattern: info.split_pattern(dir, "train")?,
            workers: args.workers,
            shuffle_buffer: args.shuffle_buffer,
        });
    }
    let (img_key, caption_key) = (args.csv_img_key.clone(), args.csv_caption_key.clone());
    let spec = match args.data.split_once(':') {
        None if args.data == "builtin" => DataSpec::Builtin {
            seed: args.seed,
            labels_only: args.labels_only,
            bag_of_words: false,
            hard_negatives: args.hard_negatives,
        },
        Some(("csv" | "tsv", p)) => DataSpec::Csv {
            path: p.into(),
            img_key,
            caption_key,
        },
        Some(("jsonl", p)) => DataSpec::Jsonl {
            path: p.into(),
            img_key,
            caption_key,
        },
        Some(("wds", p)) => DataSpec::Wds {
            pattern: p.to_string(),
            workers: args.workers,
            shuffle_buffer: args.shuffle_buffer,
        },
        _ => anyhow::bail!(
            "--data {:?}: expected builtin, csv:PATH, tsv:PATH, jsonl:PATH or wds:PATTERN",
            args.data
        ),
    };
    Ok(spec)
}

/// Train `trainer` to its last step, with a progress bar unless `quiet`.
pub fn run_trainer(mut trainer: Trainer, quiet: bool) -> Result<Trainer> {
    let mut progress = Progress::new(quiet, trainer.cfg.steps, trainer.step);
    trainer.run(&mut progress)?;
    progress.finish();
    Ok(trainer)
}

pub fn run(args: Args) -> Result<()> {
    if args.distributed {
        run_distributed(args)
    } else {
        let device = args.device.open()?;
        train(args, Box::new(Single), device)
    }
}

/// Train as one process of a launch. Only rank 0 writes the run directory.
fn train(args: Args, comm: Box<dyn Comm>, device: candle_core::Device) -> Result<()> {
    args.dtype.check_device(&device)?;
    let (rank, world, transport) = (comm.rank(), comm.size(), comm.transport());
    let trainer = match &args.resume {
        Some(path) => Trainer::resume_in(path, args.steps, device, comm)?,
        None => {
            let mut cfg = config_from_args(&args)?;
            cfg.world_size = world;
            cfg.local_loss = args.local_loss;
            Trainer::new_in(cfg, &args.out, device, comm)?
        }
    };
    if trainer.cfg.bf16 && rank == 0 {
        eprintln!(
            "bf16 products: {}",
            clip::ops::bf16_kernel().unwrap_or("none on this CPU, training in f32")
        );
    }
    if args.distributed && rank == 0 {
        let b = trainer.cfg.batch_size;
        eprintln!(
            "distributed: {world} processes × {b} pairs = a global batch of {} ({transport}); loss: {}",
            world * b,
            if trainer.cfg.local_loss {
                "each process's rows"
            } else {
                "the whole N×N on every process"
            }
        );
    }
    let trainer = run_trainer(trainer, args.quiet || rank != 0)?;
    if rank == 0 {
        eprintln!("run directory: {}", trainer.run_dir.display());
    }
    Ok(())
}

/// This process's part in an MPI launch. A process that fails aborts the launch: the others
/// would otherwise wait for it in the step's collectives for ever.
#[cfg(feature = "mpi")]
fn run_distributed(args: Args) -> Result<()> {
    if !(args.collective_timeout.is_finite() && args.collective_timeout > 0.0) {
        anyhow::bail!(
            "--collective-timeout {}: expected a positive number of seconds",
            args.collective_timeout
        );
    }
    let launch = clip_train::dist::mpi::MpiLaunch::init()?;
    let mpi = launch.comm();
    let rank = mpi.rank();
    let local = mpi.local_rank(); // a collective: before anything can fail
    let joined = world(&args, mpi, local).map(|(comm, device)| {
        let timeout = std::time::Duration::from_secs_f64(args.collective_timeout);
        let comm = clip_train::dist::watchdog::Watchdog::new(comm, timeout, move |msg| {
            // The collective cannot be left: this process ends, and mpirun stops the others.
            eprintln!("error (rank {rank}, stopping the launch): {msg}");
            std::process::exit(1)
        });
        (Box::new(comm) as Box<dyn Comm>, device)
    });
    match joined.and_then(|(comm, device)| train(args, comm, device)) {
        Ok(()) => Ok(()),
        Err(e) => {
            eprintln!("error (rank {rank}, stopping the launch): {e:#}");
            launch.abort(1)
        }
    }
}

/// This process's collectives and device. On the CPU, MPI's. On a GPU (`--device cuda`: the
/// GPU of the process's local rank on its machine), NCCL's on the device where the binary is
/// built with `nccl`, else MPI's through host memory.
#[cfg(feature = "mpi")]
fn world(
    args: &Args,
    mpi: clip_train::dist::mpi::MpiComm,
    local_rank: usize,
) -> Result<(Box<dyn Comm>, candle_core::Device)> {
    let device = match args.device {
        super::DeviceArg::Cuda(None) => super::DeviceArg::Cuda(Some(local_rank)),
        given => given,
    }
    .open()?;
    #[cfg(feature = "nccl")]
    if device.is_cuda() {
        let nccl = clip_train::dist::nccl::NcclComm::join(mpi, &device)?;
        return Ok((Box::new(nccl), device));
    }
    Ok((Box::new(mpi), device))
}

#[cfg(not(feature = "mpi"))]
fn run_distributed(_args: Args) -> Result<()> {
    anyhow::bail!(
        "--distributed: this clipforge was built without MPI; build it with `cargo build --release --features mpi` (needs an MPI such as Debian's openmpi-bin + libopenmpi-dev, and libclang-dev; docs/distributed.md)"
    )
}
