//! How far bf16 and int8 products move clipforge's embeddings from its f32 ones, beside how far
//! PyTorch's autocast and dynamic quantisation move its own, on the same weights and inputs
//! (written by `scripts/precision_pytorch.py`; run through `scripts/precision_vs_pytorch.sh`):
//! `cargo run --release -p clip-train --example precision_drift -- MODEL DIR`. Prints a
//! markdown table of per-item cosines (min / mean) against each engine's own f32, and
//! clipforge's f32 against PyTorch's f32.
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use clip::{ops, Clip, ClipConfig};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let (Some(name), Some(dir)) = (args.get(1), args.get(2)) else {
        return Err("usage: precision_drift MODEL DIR".into());
    };
    let dir = Path::new(dir);
    let dev = Device::Cpu;
    let cfg = ClipConfig::resolve(name)?;
    let (model, varmap) = Clip::with_varmap(&cfg, &dev)?;
    clip::weights::load_into(&varmap, &dir.join("weights.safetensors"))?;
    let inputs = clip::weights::read_safetensors(&dir.join("inputs.safetensors"), &dev)?;
    let torch = clip::weights::read_safetensors(&dir.join("torch.safetensors"), &dev)?;
    let images = &inputs["images"]; // [N, 3, S, S]
    let ids = inputs["ids"].to_dtype(DType::U32)?; // [N, T]

    let frozen = ops::FrozenWeights::new();
    let run = |mode: &str| -> candle_core::Result<(Tensor, Tensor)> {
        let both = || Ok((model.encode_image(images)?, model.encode_text(&ids)?));
        frozen.run(|| {
            ops::inference(|| match mode {
                "bf16" => ops::autocast_bf16(both),
                "int8" => ops::quantize_int8(both),
                _ => both(),
            })
        })
    };
    let f32 = run("f32")?;
    let ours = [("bf16", run("bf16")?), ("int8", run("int8")?)];
    let t = |k: &str| -> &Tensor { &torch[k] };

    println!(
        "clipforge's bf16 products ran on: {}",
        ops::bf16_kernel().unwrap_or("f32 (no bf16 hardware here)")
    );
    println!("clipforge's int8 products ran on: {}", ops::int8_kernel());
    println!();
    println!(
        "| {name}, {} items, cosine to the same engine's f32, min / mean | images | texts |",
        images.dim(0)?
    );
    println!("|---|---|---|");
    let row =
        |what: &str, a: (&Tensor, &Tensor), b: (&Tensor, &Tensor)| -> candle_core::Result<()> {
            println!("| {what} | {} | {} |", stats(a.0, b.0)?, stats(a.1, b.1)?);
            Ok(())
        };
    row(
        "PyTorch bf16 autocast",
        (t("f32.image"), t("f32.text")),
        (t("bf16.image"), t("bf16.text")),
    )?;
    row(
        "PyTorch int8 (quantize_dynamic)",
        (t("f32.image"), t("f32.text")),
        (t("int8.image"), t("int8.text")),
    )?;
    for (mode, out) in &ours {
        row(
            &format!("clipforge {mode}"),
            (&f32.0, &f32.1),
            (&out.0, &out.1),
        )?;
    }
    row(
        "clipforge f32 against PyTorch f32",
        (&f32.0, &f32.1),
        (t("f32.image"), t("f32.text")),
    )?;
    Ok(())
}

/// `min / mean` over rows of the cosine between unit rows of `a` and `b` (`[N, E]` each).
fn stats(a: &Tensor, b: &Tensor) -> candle_core::Result<String> {
    let cos: Vec<f32> = (a * b)?.sum(1)?.to_vec1()?; // [N]
    let min = cos.iter().copied().fold(f32::INFINITY, f32::min);
    let mean = cos.iter().sum::<f32>() / cos.len() as f32;
    Ok(format!("{min:.5} / {mean:.5}"))
}
