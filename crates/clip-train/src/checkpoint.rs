//! Checkpoints: `checkpoints/step_NNNNNNN/{model,optim}.safetensors` + `state.json`, written
//! into a temporary directory, synced to the disk and renamed, and a `latest` pointer replaced
//! the same way, so neither a crash nor a power loss leaves a checkpoint that looks complete
//! but is not.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use candle_nn::VarMap;
use clip::durable::{rename_synced, sync_dir, write_synced};
use serde::{Deserialize, Serialize};

use crate::error::{io, Result, TrainError};

/// What a checkpoint remembers besides tensors.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckpointState {
    /// Steps completed; training resumes at this step (which fixes the data position too).
    pub step: u64,
    pub optimizer_step: u64,
}

/// Write a checkpoint for `state.step` under `run_dir/checkpoints/`; returns its directory.
pub fn save(
    run_dir: &Path,
    varmap: &VarMap,
    optim: &HashMap<String, Tensor>,
    state: &CheckpointState,
) -> Result<PathBuf> {
    let root = run_dir.join("checkpoints");
    std::fs::create_dir_all(&root).map_err(io(&root))?;
    let name = format!("step_{:07}", state.step);
    let dir = root.join(&name);
    let tmp = root.join(format!(".{name}.tmp"));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(io(&tmp))?;
    }
    std::fs::create_dir_all(&tmp).map_err(io(&tmp))?;
    clip::weights::save(varmap, &tmp.join("model.safetensors"))?;
    clip::weights::save_tensors(optim, &tmp.join("optim.safetensors"))?;
    let json = serde_json::to_string_pretty(state).expect("state serialises");
    let state_path = tmp.join("state.json");
    write_synced(&state_path, json.as_bytes()).map_err(io(&state_path))?;
    sync_dir(&tmp).map_err(io(&tmp))?;
    if dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(io(&dir))?;
    }
    rename_synced(&tmp, &dir).map_err(io(&dir))?;
    let latest_tmp = root.join(".latest.tmp");
    write_synced(&latest_tmp, name.as_bytes()).map_err(io(&latest_tmp))?;
    rename_synced(&latest_tmp, &root.join("latest")).map_err(io(&root))?;
    Ok(dir)
}

/// The checkpoint directory named by a run directory (its `latest`) or given directly.
pub fn resolve(path: &Path) -> Result<PathBuf> {
    if path.join("state.json").is_file() {
        return Ok(path.to_path_buf());
    }
    let latest = path.join("checkpoints").join("latest");
    let name = std::fs::read_to_string(&latest).map_err(|_| TrainError::Checkpoint {
        path: path.to_path_buf(),
        msg: "neither a checkpoint (no state.json) nor a run directory with checkpoints/latest"
            .into(),
    })?;
    let dir = path.join("checkpoints").join(name.trim());
    if !dir.join("state.json").is_file() {
        return Err(TrainError::Checkpoint {
            path: path.to_path_buf(),
            msg: format!(
                "checkpoints/latest names {}, which is incomplete",
                dir.display()
            ),
        });
    }
    Ok(dir)
}

/// Read a checkpoint's state and optimiser tensors (model weights load with `clip::weights`).
pub fn load(dir: &Path, device: &Device) -> Result<(CheckpointState, HashMap<String, Tensor>)> {
    let state_path = dir.join("state.json");
    let text = std::fs::read_to_string(&state_path).map_err(io(&state_path))?;
    let state: CheckpointState =
        serde_json::from_str(&text).map_err(|e| TrainError::Checkpoint {
            path: state_path.clone(),
            msg: e.to_string(),
        })?;
    let optim = clip::weights::read_safetensors(&dir.join("optim.safetensors"), device)?;
    Ok((state, optim))
}
