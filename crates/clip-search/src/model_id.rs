//! Which model an index was built with: its config and a hash of its weights. A query
//! embedded by another model lands in another space, so the index refuses it.

use std::io::Read;
use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{io, Result};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelId {
    /// Where the weights came from, for people (a run directory or a weights file).
    pub source: String,
    /// SHA-256 of the model config's JSON.
    pub config_hash: String,
    /// SHA-256 of the weights file's bytes.
    pub weights_hash: String,
    pub embed_dim: usize,
    pub image_size: usize,
}

fn hex(digest: &[u8]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

impl ModelId {
    /// The identity of `cfg` with the weights in `weights` (read once, hashed).
    pub fn of(source: &str, cfg: &clip::ClipConfig, weights: &Path) -> Result<Self> {
        let json = serde_json::to_string(cfg).expect("a config serialises");
        let config_hash = hex(&Sha256::digest(json.as_bytes()));
        let mut file = std::fs::File::open(weights).map_err(io(weights))?;
        let mut h = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = file.read(&mut buf).map_err(io(weights))?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
        Ok(Self {
            source: source.to_string(),
            config_hash,
            weights_hash: hex(&h.finalize()),
            embed_dim: cfg.embed_dim,
            image_size: cfg.vision_cfg.image_size,
        })
    }

    /// Same space: same config and same weights (where they came from may differ).
    pub fn same_model(&self, other: &ModelId) -> bool {
        self.config_hash == other.config_hash && self.weights_hash == other.weights_hash
    }
}
