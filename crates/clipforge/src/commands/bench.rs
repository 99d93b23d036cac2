//! `clipforge bench`: time the training step, encoders, tokenizer and loader; print a table
//! or one JSON object.

use anyhow::Result;
use clip_train::bench::{self, BenchConfig};

#[derive(clap::Args)]
#[command(
    after_help = "Example:\n  clipforge bench --model tiny --batch-size 256 --steps 10 --json\n\n\
The training step is forward + symmetric InfoNCE + backward + AdamW on one batch of built-in\n\
scenes; encoders run on the same batch. Each figure is the median of --steps timed runs after\n\
--warmup untimed ones. The loader decodes PNGs of --loader-image-size px from memory, then\n\
random-resized-crops and normalises them to the model's input, on all threads. Threads: set\n\
RAYON_NUM_THREADS (default: all cores).\n\n\
On a GPU (a binary built with --features cuda; docs/cuda.md):\n  \
clipforge bench --device cuda --model ViT-B-32 --batch-size 256 --dtype bf16 --tf32\n\
Timed runs end with a device synchronisation; TFLOP/s are model FLOPs (matrix products, 2 per\n\
multiply-add, backward = 2 × forward) over the median time."
)]
pub struct Args {
    /// Model preset or JSON config.
    #[arg(long, default_value = "tiny")]
    pub model: String,
    /// Pairs per training step (and images per encode).
    #[arg(long, default_value_t = 256)]
    pub batch_size: usize,
    /// Timed runs per measurement.
    #[arg(long, default_value_t = 10)]
    pub steps: usize,
    /// Untimed runs first.
    #[arg(long, default_value_t = 2)]
    pub warmup: usize,
    /// Side of the PNG images the loader decodes.
    #[arg(long, default_value_t = 64)]
    pub loader_image_size: usize,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: super::DeviceArg,
    /// Precision of the encoders (the training step stays f32): on the CPU, bf16 = bf16
    /// products where there is AMX, int8 = quantised products; on a GPU, bf16 parameters.
    #[arg(long, value_enum, default_value_t = super::DtypeArg::F32)]
    pub dtype: super::DtypeArg,
    /// Let f32 matrix products on a GPU use TF32 tensor cores.
    #[arg(long)]
    pub tf32: bool,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args) -> Result<()> {
    anyhow::ensure!(args.steps >= 1, "--steps must be at least 1");
    anyhow::ensure!(args.batch_size >= 2, "--batch-size must be at least 2");
    let device = args.device.open()?;
    anyhow::ensure!(
        args.dtype != super::DtypeArg::Int8 || device.is_cpu(),
        "--dtype int8 runs on the CPU only (int8 products are a CPU kernel); on a GPU use bf16"
    );
    let cfg = BenchConfig {
        model: args.model.clone(),
        batch_size: args.batch_size,
        steps: args.steps,
        warmup: args.warmup,
        loader_image_size: args.loader_image_size,
        device,
        encode_dtype: args.dtype.into(),
        int8: args.dtype == super::DtypeArg::Int8,
        tf32: args.tf32,
    };
    let quiet = args.json;
    let r = bench::run(&cfg, |what| {
        if !quiet {
            eprintln!("timing {what} …");
        }
    })?;
    if args.json {
        println!("{}", serde_json::to_string(&r)?);
        return Ok(());
    }
    println!(
        "| `{}`, batch {}, {}, {} threads, median of {} | |",
        r.model, r.batch_size, r.device, r.threads, r.steps
    );
    println!("|---|---|");
    println!(
        "| training step (fwd + loss + bwd + AdamW, f32{}) | {:.3} s ({:.0} pairs/s, {:.2} TFLOP/s) |",
        if r.tf32 { ", TF32 products" } else { "" },
        r.train_step_s_median,
        r.train_samples_per_s,
        r.train_tflops
    );
    println!(
        "| image encode ({}, products on {}) | {:.0} images/s ({:.2} TFLOP/s) |",
        r.encode_dtype, r.encode_kernel, r.image_encode_per_s, r.image_encode_tflops
    );
    println!("| text encode | {:.0} texts/s |", r.text_encode_per_s);
    println!("| tokenizer | {:.0} captions/s |", r.tokenizer_per_s);
    println!(
        "| loader ({} px PNG → decode, crop, normalise) | {:.0} images/s |",
        r.loader_image_size, r.loader_images_per_s
    );
    println!("| peak resident memory | {:.0} MiB |", r.peak_rss_mb);
    Ok(())
}
