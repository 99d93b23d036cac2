//! Checkpoints: `checkpoints/step_NNNNNNN/{model,optim}.safetensors` + `state.json`, written
//! into a temporary directory and renamed, and a `latest` pointer replaced atomically, so a
//! crash never leaves a checkpoint that looks complete but is not.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use candle_nn::VarMap;
use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainError};

/// What a checkpoint remembers besides tensors.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckpointState {
    /// Steps completed; training resumes at this step (which fixes the data position too).
    pub step: u64,
    pub optimizer_step: u64,
}

fn io(path: &Path, e: impl std::fmt::Display) -> TrainError {
    TrainError::Io(format!("{}: {e}", path.display()))
}

/// Write a checkpoint for `state.step` under `run_dir/checkpoints/`; returns its directory.
pub fn save(
    run_dir: &Path,
    varmap: &VarMap,
    optim: &HashMap<String, Tensor>,
    state: &CheckpointState,
) -> Result<PathBuf> {
    let root = run_dir.join("checkpoints");
    std::fs::create_dir_all(&root).map_err(|e| io(&root, e))?;
    let name = format!("step_{:07}", state.step);
    let dir = root.join(&name);
    let tmp = root.join(format!(".{name}.tmp"));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(|e| io(&tmp, e))?;
    }
    std::fs::create_dir_all(&tmp).map_err(|e| io(&tmp, e))?;
    clip::weights::save(varmap, &tmp.join("model.safetensors"))?;
    clip::weights::save_tensors(optim, &tmp.join("optim.safetensors"))?;
    let json = serde_json::to_string_pretty(state).expect("state serialises");
    std::fs::write(tmp.join("state.json"), json).map_err(|e| io(&tmp, e))?;
    if dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(|e| io(&dir, e))?;
    }
    std::fs::rename(&tmp, &dir).map_err(|e| io(&dir, e))?;
    let latest_tmp = root.join(".latest.tmp");
    std::fs::write(&latest_tmp, &name).map_err(|e| io(&latest_tmp, e))?;
    std::fs::rename(&latest_tmp, root.join("latest")).map_err(|e| io(&root, e))?;
    Ok(dir)
}

/// The checkpoint directory named by a run directory (its `latest`) or given directly.
pub fn resolve(path: &Path) -> Result<PathBuf> {
    if path.join("state.json").is_file() {
        return Ok(path.to_path_buf());
    }
    let latest = path.join("checkpoints").join("latest");
    let name = std::fs::read_to_string(&latest).map_err(|_| {
        TrainError::Input(format!(
            "{}: neither a checkpoint (no state.json) nor a run directory with checkpoints/latest",
            path.display()
        ))
    })?;
    let dir = path.join("checkpoints").join(name.trim());
    if !dir.join("state.json").is_file() {
        return Err(TrainError::Input(format!(
            "{}: checkpoints/latest names {}, which is incomplete",
            path.display(),
            dir.display()
        )));
    }
    Ok(dir)
}

/// Read a checkpoint's state and optimiser tensors (model weights load with `clip::weights`).
pub fn load(dir: &Path, device: &Device) -> Result<(CheckpointState, HashMap<String, Tensor>)> {
    let state_path = dir.join("state.json");
    let text = std::fs::read_to_string(&state_path).map_err(|e| io(&state_path, e))?;
    let state: CheckpointState = serde_json::from_str(&text)
        .map_err(|e| TrainError::Input(format!("{}: {e}", state_path.display())))?;
    let optim = clip::weights::read_safetensors(&dir.join("optim.safetensors"), device)?;
    Ok((state, optim))
}
