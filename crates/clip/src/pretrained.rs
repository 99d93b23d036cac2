//! Where fetched pretrained towers live (`models/NAME/`, or `$CLIPFORGE_MODELS/NAME/`), and
//! putting their weights into a model: each tower's `config.json` is checked against the
//! model config's shape, then its `model.safetensors` fills the tower's trunk (`visual.trunk.*`
//! or `text.transformer.*`); the projection heads keep their initialisation.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::Tensor;
use candle_nn::VarMap;

use crate::bert::BertCfg;
use crate::config::{ClipConfig, TextKind, VisionKind};
use crate::dinov2::Dinov2Cfg;
use crate::error::{ClipError, Result};

/// The directory models are fetched into: `$CLIPFORGE_MODELS`, else `models`.
pub fn models_root() -> PathBuf {
    std::env::var_os("CLIPFORGE_MODELS").map_or_else(|| PathBuf::from("models"), PathBuf::from)
}

/// The directory of fetched model `name`: `name` itself when it is a directory holding a
/// `config.json`, else `<models_root>/<name>`. Missing, the error says how to fetch it.
pub fn model_dir(name: &str) -> Result<PathBuf> {
    let direct = Path::new(name);
    if direct.join("config.json").is_file() {
        return Ok(direct.to_path_buf());
    }
    let dir = models_root().join(name);
    if dir.join("config.json").is_file() && dir.join("model.safetensors").is_file() {
        return Ok(dir);
    }
    Err(ClipError::Io {
        path: dir.display().to_string(),
        msg: format!(
            "pretrained model {name} is not fetched: run `clipforge model fetch {name}` \
             (or set CLIPFORGE_MODELS to the directory that holds it)"
        ),
    })
}

fn read_config<T: serde::de::DeserializeOwned>(dir: &Path) -> Result<T> {
    let path = dir.join("config.json");
    let text = std::fs::read_to_string(&path).map_err(|e| ClipError::Io {
        path: path.display().to_string(),
        msg: e.to_string(),
    })?;
    serde_json::from_str(&text).map_err(|e| ClipError::Config {
        origin: path.display().to_string(),
        msg: e.to_string(),
    })
}

/// The first field where the model config's shape (`want`) and the fetched tower's own
/// (`have`) differ, as "key: config says A, the tower B".
fn first_difference(want: &serde_json::Value, have: &serde_json::Value) -> Option<String> {
    let (want, have) = (want.as_object()?, have.as_object()?);
    want.iter().find_map(|(k, w)| {
        let h = have.get(k)?;
        let same = match (w.as_f64(), h.as_f64()) {
            (Some(a), Some(b)) => (a - b).abs() <= 1e-6 * a.abs().max(1e-6),
            _ => w == h,
        };
        (!same).then(|| format!("{k}: the model config says {w}, the tower {h}"))
    })
}

/// Check the fetched tower in `dir` has the shape `want`, then copy its weights into
/// `varmap` under `prefix`. Every trunk parameter must come from the file, with its shape.
fn load_tower<C: serde::Serialize + serde::de::DeserializeOwned>(
    varmap: &VarMap,
    dir: &Path,
    want: &C,
    prefix: &str,
) -> Result<()> {
    let have: C = read_config(dir)?;
    let (w, h) = (
        serde_json::to_value(want).ok(),
        serde_json::to_value(&have).ok(),
    );
    if let Some(diff) = w.zip(h).and_then(|(w, h)| first_difference(&w, &h)) {
        return Err(ClipError::Config {
            origin: dir.join("config.json").display().to_string(),
            msg: diff,
        });
    }
    let path = dir.join("model.safetensors");
    let origin = path.display().to_string();
    let device = {
        let data = varmap.data().lock().expect("varmap lock");
        data.values().next().map(|v| v.device().clone())
    }
    .unwrap_or(candle_core::Device::Cpu);
    let tensors = crate::weights::read_safetensors(&path, &device)?;
    let data = varmap.data().lock().expect("varmap lock");
    let mut trunk: Vec<&String> = data.keys().filter(|k| k.starts_with(prefix)).collect();
    trunk.sort();
    let mut set: HashMap<&String, Tensor> = HashMap::new();
    for key in trunk {
        let name = &key[prefix.len()..];
        let want = data[key].dims();
        let t = tensors.get(name).ok_or_else(|| ClipError::Weights {
            path: origin.clone(),
            msg: format!("missing tensor {name} (expected shape {want:?})"),
        })?;
        if t.dims() != want {
            return Err(ClipError::Weights {
                path: origin.clone(),
                msg: format!("tensor {name} has shape {:?}, expected {want:?}", t.dims()),
            });
        }
        set.insert(key, t.clone());
    }
    for (key, t) in set {
        data[key].set(&t.to_dtype(data[key].dtype())?)?;
    }
    Ok(())
}

/// Put the pretrained towers' weights into a freshly initialised model's `varmap`.
pub fn load_towers(varmap: &VarMap, cfg: &ClipConfig) -> Result<()> {
    let (v, t) = (&cfg.vision_cfg, &cfg.text_cfg);
    if let (VisionKind::Dinov2, Some(name)) = (v.kind, &v.pretrained) {
        load_tower::<Dinov2Cfg>(varmap, &model_dir(name)?, &v.dinov2(), "visual.trunk.")?;
    }
    if let (TextKind::Bert, Some(name)) = (t.kind, &t.pretrained) {
        load_tower::<BertCfg>(varmap, &model_dir(name)?, &t.bert(), "text.transformer.")?;
    }
    Ok(())
}

/// Whether the model has a tower that starts from fetched weights.
pub fn has_pretrained(cfg: &ClipConfig) -> bool {
    cfg.vision_cfg.kind != VisionKind::Vit || cfg.text_cfg.kind != TextKind::Clip
}
