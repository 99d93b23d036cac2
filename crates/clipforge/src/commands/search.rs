//! `clipforge search`: the images of an index nearest to a text or to an example image.

use std::path::PathBuf;

use anyhow::{bail, Result};
use candle_core::{Device, Tensor};
use clip::TextTokenizer;
use clip_search::Index;

use super::index::ModelArgs;

#[derive(clap::Args)]
#[command(after_help = "Examples:\n  \
clipforge search --index photos.idx --checkpoint runs/quickstart \"a red bicycle\"\n  \
clipforge search --index photos.idx --checkpoint runs/quickstart --image query.jpg -k 5 --json\n\n\
The model must be the one the index was built with (the index refuses another). Scores are\n\
cosine similarities in the shared space.")]
pub struct Args {
    /// The index (made by clipforge index).
    #[arg(long)]
    pub index: PathBuf,
    #[command(flatten)]
    pub model: ModelArgs,
    /// Text to search for.
    pub text: Option<String>,
    /// An example image to search by instead.
    #[arg(long, conflicts_with = "text")]
    pub image: Option<PathBuf>,
    /// Results to show.
    #[arg(short, default_value_t = 20)]
    pub k: usize,
    /// One JSON object per result: rank, id, path, score.
    #[arg(long)]
    pub json: bool,
}

/// The unit embedding `[E]` of a text or an image file.
pub fn query_vector(
    model: &clip::Clip,
    text: Option<&str>,
    image: Option<&std::path::Path>,
    device: &Device,
) -> Result<Vec<f32>> {
    let e: Tensor = match (text, image) {
        (Some(t), None) => {
            if t.trim().is_empty() {
                bail!("an empty query: give words to search for");
            }
            let tok = TextTokenizer::for_config(&model.config.text_cfg)?;
            clip_train::encode::text_embeddings(model, &tok, &[t.to_string()], device)?
        }
        (None, Some(p)) => {
            let img = clip::transform::open_image(p)?;
            let size = model.config.vision_cfg.image_size;
            let px = Tensor::from_vec(
                clip::transform::preprocess(&img, size),
                (1, 3, size, size),
                device,
            )?;
            clip::ops::inference(|| model.encode_image(&px))?
        }
        _ => bail!("search for what? give a text, or --image PATH"),
    };
    Ok(e.to_dtype(candle_core::DType::F32)?
        .flatten_all()?
        .to_vec1()?)
}

pub fn run(args: Args) -> Result<()> {
    let index = Index::load(&args.index)?;
    let device = Device::Cpu;
    let model = args.model.load_for(&index, &device)?;
    let q = query_vector(&model, args.text.as_deref(), args.image.as_deref(), &device)?;
    let searcher = clip_search::Searcher::exact(); // one query: a scan costs less than a graph
    let hits = searcher.search(&index, &q, args.k, |_| true);
    for (rank, h) in hits.iter().enumerate() {
        let e = &index.entries[h.row];
        if args.json {
            let mut line =
                serde_json::json!({"rank": rank + 1, "id": e.id, "path": e.path, "score": h.score});
            if let Some(m) = &e.member {
                line["member"] = serde_json::json!(m.name);
            }
            println!("{line}");
        } else {
            println!("{:>3}  {:.4}  {}", rank + 1, h.score, e.location());
        }
    }
    if hits.is_empty() && !args.json {
        eprintln!("{}: the index is empty", args.index.display());
    }
    Ok(())
}
