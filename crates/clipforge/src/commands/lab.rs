//! `clipforge lab`: run one of the learning lab's experiments and write its report.

use std::path::PathBuf;

use anyhow::Result;
use clip_train::lab::{self, Experiment, LabOptions};

#[derive(clap::Args)]
#[command(after_help = "Experiments:\n  \
loss                 the contrastive loss taken apart on one batch: cosines, softmaxes,\n                       \
cross-entropies, gradients, temperature, over training\n  \
negatives            batch size N = 8..256 at equal pairs seen (N - 1 negatives per row),\n                       \
CLIP's softmax loss against SigLIP's sigmoid\n  \
captions-vs-labels   full captions vs bare labels vs a bag of words: zero-shot on held-out\n                       \
colour–shape combinations, and a relation test labels cannot pass\n  \
projection           no head vs linear vs MLP heads: zero-shot, retrieval, a probe under the\n                       \
head, the modality gap\n  \
scaling              the image tower grown in width, depth, resolution or all three, each\n                       \
trained for the same FLOPs: zero-shot and loss against compute\n  \
embedding-space      the learned space: PCA of images and texts before and after training,\n                       \
the modality gap, nearest neighbours\n  \
pretrained           from scratch vs a pretrained image tower locked (LiT) vs fine-tuned, on\n                       \
a real captioned corpus (fetches `captions` and DINOv2-S/14 when missing)\n\n\
Examples:\n  \
clipforge lab loss --quick       # a first look, a few minutes on 2 cores\n  \
clipforge lab loss --out docs/lab\n\n\
Each experiment writes DIR/NAME.md (the question, the setup, tables, plots, what it shows and\n\
what it does not), its plots in DIR/NAME/ and every number in DIR/NAME.json. The models it\n\
trains are kept in DIR/runs/, keyed by their whole configuration: an experiment that needs a\n\
run already trained (by itself or another experiment) loads it, and one cut off resumes.")]
pub struct Args {
    /// Which experiment.
    #[arg(value_parser = parse_experiment)]
    pub experiment: Experiment,
    /// The short form: fewer steps and images, figures labelled quick.
    #[arg(long)]
    pub quick: bool,
    /// Where the report, plots and runs go.
    #[arg(long, default_value = "runs/lab")]
    pub out: PathBuf,
    /// Cap every training run at N steps (a smoke test of the whole experiment).
    #[arg(long, value_name = "N")]
    pub max_steps: Option<u64>,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: super::DeviceArg,
    /// Print the report's numbers as one JSON object (and no progress bars).
    #[arg(long)]
    pub json: bool,
    /// pretrained: the captioned corpus, a fetched dataset's directory or name.
    #[arg(long, default_value = "captions", value_name = "DATASET")]
    pub dataset: PathBuf,
    /// pretrained: the model with a pretrained image tower, a preset or a JSON config.
    #[arg(long, default_value = "lit-dinov2-s14", value_name = "MODEL")]
    pub pretrained_model: String,
    /// pretrained: the pretrained runs' image side in pixels (a multiple of the patch).
    #[arg(long, default_value_t = 112, value_name = "PX")]
    pub image_size: usize,
}

fn parse_experiment(s: &str) -> Result<Experiment, String> {
    s.parse()
}

pub fn run(args: Args) -> Result<()> {
    let opts = LabOptions {
        quick: args.quick,
        out: args.out.clone(),
        max_steps: args.max_steps,
        progress: !args.json,
        device: args.device.open()?,
        pretrained: lab::pretrained::PretrainedOptions {
            dataset: args.dataset.clone(),
            model: args.pretrained_model.clone(),
            image_size: args.image_size,
        },
    };
    let report = lab::run(args.experiment, &opts)?;
    if args.json {
        println!("{}", serde_json::to_string(&report.json())?);
        return Ok(());
    }
    let name = args.experiment.name();
    eprintln!(
        "{}: {} ({:.0} s)",
        name,
        args.experiment.question(),
        report.seconds
    );
    for s in &report.shows {
        println!("- {s}");
    }
    let out = args.out.display();
    println!("\nreport: {out}/{name}.md, plots: {out}/{name}/, numbers: {out}/{name}.json");
    Ok(())
}
