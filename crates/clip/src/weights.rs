//! Weights I/O: safetensors with open_clip's state-dict keys (`visual.conv1.weight`,
//! `visual.transformer.resblocks.0.attn.in_proj_weight`, `token_embedding.weight`, …), and the
//! Hugging Face `CLIPModel` layout (`vision_model.*`, `text_model.*`) mapped onto them.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use candle_core::safetensors::Load;
use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;

use crate::error::{ClipError, Result};

/// Entries some checkpoints carry that are buffers or metadata, not parameters.
fn is_ignorable(key: &str) -> bool {
    key == "attn_mask"
        || key.ends_with("position_ids")
        || matches!(key, "input_resolution" | "context_length" | "vocab_size")
}

/// Read every tensor of a safetensors file as f32 on `device`, keys as stored.
pub fn read_safetensors(path: &Path, device: &Device) -> Result<HashMap<String, Tensor>> {
    let err = |msg: String| ClipError::Weights {
        path: path.display().to_string(),
        msg,
    };
    let bytes = std::fs::read(path).map_err(|e| err(format!("cannot read: {e}")))?;
    let st = safetensors::SafeTensors::deserialize(&bytes)
        .map_err(|e| err(format!("not a safetensors file ({e})")))?;
    let mut out = HashMap::new();
    for (name, view) in st.tensors() {
        let t = view
            .load(device)
            .and_then(|t| t.to_dtype(DType::F32))
            .map_err(|e| err(format!("tensor {name}: {e}")))?;
        out.insert(name, t);
    }
    Ok(out)
}

/// Does this state dict use Hugging Face `CLIPModel` names?
pub fn is_hf_layout(tensors: &HashMap<String, Tensor>) -> bool {
    tensors
        .keys()
        .any(|k| k.starts_with("vision_model.") || k.starts_with("text_model."))
}

/// Rename one HF key's layer-local suffix (`layer_norm1.weight`) to open_clip's (`ln_1.weight`).
fn hf_block_suffix(suffix: &str) -> Option<String> {
    let map = [
        ("layer_norm1.", "ln_1."),
        ("layer_norm2.", "ln_2."),
        ("mlp.fc1.", "mlp.c_fc."),
        ("mlp.fc2.", "mlp.c_proj."),
        ("self_attn.out_proj.", "attn.out_proj."),
    ];
    map.iter()
        .find(|(from, _)| suffix.starts_with(from))
        .map(|(from, to)| format!("{to}{}", &suffix[from.len()..]))
}

/// open_clip's name of a tower-level (outside the blocks) Hugging Face key.
fn hf_tower_key(rest: &str) -> Option<&'static str> {
    Some(match rest {
        "embeddings.patch_embedding.weight" => "conv1.weight",
        "embeddings.class_embedding" => "class_embedding",
        "embeddings.position_embedding.weight" => "positional_embedding",
        "embeddings.token_embedding.weight" => "token_embedding.weight",
        "pre_layrnorm.weight" => "ln_pre.weight",
        "pre_layrnorm.bias" => "ln_pre.bias",
        "post_layernorm.weight" => "ln_post.weight",
        "post_layernorm.bias" => "ln_post.bias",
        "final_layer_norm.weight" => "ln_final.weight",
        "final_layer_norm.bias" => "ln_final.bias",
        _ => return None,
    })
}

/// Map a Hugging Face `CLIPModel` state dict onto open_clip keys: q/k/v projections are packed
/// into `in_proj_*` (order q, k, v), projection matrices transposed (`[E, W]` → `[W, E]`).
pub fn from_hf_layout(
    tensors: HashMap<String, Tensor>,
    origin: &str,
) -> Result<HashMap<String, Tensor>> {
    let err = |msg: String| ClipError::Weights {
        path: origin.to_string(),
        msg,
    };
    let mut out = HashMap::new();
    // (open_clip block prefix, "weight"|"bias") → [q, k, v]
    let mut qkv: BTreeMap<(String, String), [Option<Tensor>; 3]> = BTreeMap::new();
    for (key, t) in tensors {
        let (tower, rest) = if let Some(r) = key.strip_prefix("vision_model.") {
            ("visual.", r)
        } else if let Some(r) = key.strip_prefix("text_model.") {
            ("", r)
        } else {
            // HF stores the projections as nn.Linear weights [E, W]; open_clip as matrices [W, E].
            match key.as_str() {
                "visual_projection.weight" => {
                    out.insert("visual.proj".into(), t.t()?.contiguous()?)
                }
                "text_projection.weight" => {
                    out.insert("text_projection".into(), t.t()?.contiguous()?)
                }
                _ => out.insert(key.clone(), t),
            };
            continue;
        };
        let name = match rest {
            r if hf_tower_key(r).is_some() => hf_tower_key(r).unwrap_or_default().to_string(),
            r if r.starts_with("encoder.layers.") => {
                let r = &r["encoder.layers.".len()..];
                let (layer, suffix) = r
                    .split_once('.')
                    .ok_or_else(|| err(format!("unexpected key {key}")))?;
                let block = format!("{tower}transformer.resblocks.{layer}.");
                let proj = [
                    "self_attn.q_proj.",
                    "self_attn.k_proj.",
                    "self_attn.v_proj.",
                ]
                .iter()
                .position(|p| suffix.starts_with(p));
                if let Some(i) = proj {
                    let leaf = suffix.rsplit('.').next().unwrap_or("").to_string();
                    qkv.entry((block, leaf)).or_default()[i] = Some(t);
                    continue;
                }
                let mapped =
                    hf_block_suffix(suffix).ok_or_else(|| err(format!("unexpected key {key}")))?;
                out.insert(format!("{block}{mapped}"), t);
                continue;
            }
            _ if rest.ends_with("position_ids") => continue,
            _ => {
                return Err(err(format!(
                    "unexpected key {key} in Hugging Face CLIP layout"
                )))
            }
        };
        out.insert(format!("{tower}{name}"), t);
    }
    for ((block, leaf), parts) in qkv {
        let names = ["q_proj", "k_proj", "v_proj"];
        let mut ts = Vec::with_capacity(3);
        for (p, name) in parts.into_iter().zip(names) {
            ts.push(p.ok_or_else(|| err(format!("{block}: self_attn.{name}.{leaf} is missing")))?);
        }
        let packed = Tensor::cat(&ts, 0)?; // [3W, W] or [3W]
        out.insert(format!("{block}attn.in_proj_{leaf}"), packed);
    }
    Ok(out)
}

/// Load a weights file (open_clip or HF layout) into a model's `VarMap`. Every parameter must be
/// present with its shape, and the file must hold nothing else; errors name the key and shapes.
pub fn load_into(varmap: &VarMap, path: &Path) -> Result<()> {
    let origin = path.display().to_string();
    let device = {
        let data = varmap.data().lock().expect("varmap lock");
        data.values()
            .next()
            .map(|v| v.device().clone())
            .unwrap_or(Device::Cpu)
    };
    let mut tensors = read_safetensors(path, &device)?;
    if is_hf_layout(&tensors) {
        tensors = from_hf_layout(tensors, &origin)?;
    }
    let tensors: HashMap<String, Tensor> = tensors
        .into_iter()
        .map(|(k, v)| {
            (
                k.strip_prefix("module.").map(str::to_string).unwrap_or(k),
                v,
            )
        })
        .filter(|(k, _)| !is_ignorable(k))
        .collect();
    assign(varmap, tensors, &origin)
}

/// Set the VarMap's parameters from `tensors`, checking names and shapes.
pub fn assign(varmap: &VarMap, tensors: HashMap<String, Tensor>, origin: &str) -> Result<()> {
    let data = varmap.data().lock().expect("varmap lock");
    let mut problems = Vec::new();
    let mut expected: Vec<&String> = data.keys().collect();
    expected.sort();
    for key in &expected {
        let want = data[*key].dims();
        match tensors.get(*key) {
            None => problems.push(format!("missing tensor {key} (expected shape {want:?})")),
            Some(t) if t.dims() != want => problems.push(format!(
                "tensor {key} has shape {:?}, expected {want:?}",
                t.dims()
            )),
            Some(_) => {}
        }
    }
    let mut extra: Vec<&String> = tensors.keys().filter(|k| !data.contains_key(*k)).collect();
    extra.sort();
    for key in extra {
        problems.push(format!(
            "unexpected tensor {key} (shape {:?}) not in this model",
            tensors[key].dims()
        ));
    }
    if let Some(first) = problems.first() {
        let more = if problems.len() > 1 {
            format!("; and {} more problem(s)", problems.len() - 1)
        } else {
            String::new()
        };
        return Err(ClipError::Weights {
            path: origin.to_string(),
            msg: format!("{first}{more}"),
        });
    }
    for key in expected {
        data[key].set(&tensors[key].to_dtype(data[key].dtype())?)?;
    }
    Ok(())
}

/// Save every parameter under its open_clip key, atomically (temporary file, then rename).
pub fn save(varmap: &VarMap, path: &Path) -> Result<()> {
    let data = varmap.data().lock().expect("varmap lock");
    let tensors: HashMap<String, Tensor> = data
        .iter()
        .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
        .collect();
    drop(data);
    save_tensors(&tensors, path)
}

/// Write tensors to `path` through a temporary file in the same directory, synced to the disk
/// before the rename ([`crate::durable`]).
pub fn save_tensors(tensors: &HashMap<String, Tensor>, path: &Path) -> Result<()> {
    let err = |msg: String| ClipError::Io {
        path: path.display().to_string(),
        msg,
    };
    let tmp = path.with_extension("safetensors.tmp");
    candle_core::safetensors::save(tensors, &tmp).map_err(|e| err(format!("cannot write: {e}")))?;
    crate::durable::sync_file(&tmp).map_err(|e| err(format!("cannot sync: {e}")))?;
    crate::durable::rename_synced(&tmp, path)
        .map_err(|e| err(format!("cannot rename {}: {e}", tmp.display())))?;
    Ok(())
}
