//! `clipforge embed`: texts and images → L2-normalised embeddings in the shared space.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use clip::{transform, weights, Clip, ClipConfig, TextTokenizer};

#[derive(clap::Args)]
#[command(
    after_help = "Examples:\n  clipforge embed --model ViT-B-32 --weights open_clip_model.safetensors \\\n      --text \"a photo of a cat\" --image cat.jpg --json\n  clipforge embed --model my_config.json --weights run/checkpoint.safetensors --text a --text b\n\n\
Weights are safetensors with open_clip's state-dict keys, or Hugging Face CLIPModel keys.\n\
Without --json, prints each embedding's first values and, when both kinds are given, the\n\
image × text cosine similarities."
)]
pub struct Args {
    /// A preset (tiny, small, ViT-B-32, ViT-B-16, ViT-L-14; lit-dinov2-s14, lit-dinov2-s14-minilm with fetched towers) or an open_clip-format config JSON.
    #[arg(long)]
    pub model: String,
    /// Weights file (.safetensors).
    #[arg(long)]
    pub weights: PathBuf,
    /// A text to embed (repeat for several).
    #[arg(long = "text")]
    pub texts: Vec<String>,
    /// An image file to embed (repeat for several).
    #[arg(long = "image")]
    pub images: Vec<PathBuf>,
    /// Precision of the products: bf16 rounds the blocks' weight products to bf16 and sums in
    /// f32 (where the CPU has AMX or AVX512-BF16; f32 elsewhere); int8 quantises them (weights per column,
    /// inputs per row, i32 sums). Embeddings move by about the rounding (docs/benchmarks.md).
    #[arg(long, value_enum, default_value_t = super::DtypeArg::F32)]
    pub dtype: super::DtypeArg,
    /// Print `{"text_embeds": [[...]], "image_embeds": [[...]]}`.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args) -> Result<()> {
    if args.texts.is_empty() && args.images.is_empty() {
        bail!("nothing to embed: give at least one --text or --image");
    }
    let cfg = ClipConfig::resolve(&args.model)?;
    if !args.texts.is_empty()
        && cfg.text_cfg.kind == clip::config::TextKind::Clip
        && cfg.text_cfg.vocab_size < clip::tokenizer::VOCAB_SIZE
    {
        bail!(
            "model {}: text_cfg.vocab_size is {}, but the CLIP tokenizer produces ids up to {}",
            args.model,
            cfg.text_cfg.vocab_size,
            clip::tokenizer::VOCAB_SIZE - 1
        );
    }
    let device = Device::Cpu;
    let (model, varmap) = Clip::with_varmap(&cfg, &device)?;
    weights::load_into(&varmap, &args.weights)?;

    let text_embeds = if args.texts.is_empty() {
        None
    } else {
        let ids = TextTokenizer::for_config(&cfg.text_cfg)?.tokenize_tensor(
            &args.texts,
            cfg.text_cfg.context_length,
            &device,
        )?; // [N, T]
        Some(
            args.dtype
                .infer(|| clip::ops::inference(|| model.encode_text(&ids)))
                .context("encoding texts")?,
        )
        // [N, E]
    };
    let image_embeds = if args.images.is_empty() {
        None
    } else {
        let pixels = transform::load_images(&args.images, cfg.vision_cfg.image_size, &device)?; // [M, 3, S, S]
        Some(
            args.dtype
                .infer(|| clip::ops::inference(|| model.encode_image(&pixels)))
                .context("encoding images")?,
        )
        // [M, E]
    };
    let rows = |t: &Option<Tensor>| -> Result<Vec<Vec<f32>>> {
        Ok(match t {
            Some(t) => t.to_vec2::<f32>()?,
            None => Vec::new(),
        })
    };
    let (texts, images) = (rows(&text_embeds)?, rows(&image_embeds)?);
    if args.json {
        let out = serde_json::json!({ "text_embeds": texts, "image_embeds": images });
        println!("{out}");
        return Ok(());
    }
    let head = |v: &[f32]| {
        v.iter()
            .take(6)
            .map(|x| format!("{x:+.4}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    for (t, e) in args.texts.iter().zip(&texts) {
        println!("text  {t:?}: [{} …] ({} dims)", head(e), e.len());
    }
    for (p, e) in args.images.iter().zip(&images) {
        println!("image {}: [{} …] ({} dims)", p.display(), head(e), e.len());
    }
    if !texts.is_empty() && !images.is_empty() {
        println!("\ncosine similarity (rows: images, columns: texts)");
        for (p, ie) in args.images.iter().zip(&images) {
            let sims: Vec<String> = texts
                .iter()
                .map(|te| format!("{:+.4}", ie.iter().zip(te).map(|(a, b)| a * b).sum::<f32>()))
                .collect();
            println!(
                "{:>24}  {}",
                p.file_name()
                    .map(|s| s.to_string_lossy())
                    .unwrap_or_default(),
                sims.join("  ")
            );
        }
    }
    Ok(())
}
