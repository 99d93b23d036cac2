//! Projection heads from a tower's pooled feature to the shared embedding space: the paper's
//! linear map, or a non-linear MLP (paper §2.4 discusses both; clipforge lets you compare).

use candle_core::{Result, Tensor};
use candle_nn::{Init, Module, VarBuilder};

use crate::config::{HeadCfg, ProjType};
use crate::nn::{Activation, Linear};

#[derive(Debug, Clone)]
pub enum ProjectionHead {
    /// x @ P with P `[W, E]`, no bias (open_clip's `visual.proj` / `text_projection`).
    Linear(Tensor),
    /// (Linear → GELU) × n, then Linear; stored as `nn.Sequential` indices 0, 2, 4, …
    Mlp(Vec<Linear>),
    /// No head: the pooled feature, `[N, W]` with W = E.
    Identity,
}

impl ProjectionHead {
    /// `linear_vb` names the matrix (e.g. root + "text_projection"); `mlp_vb` the Sequential.
    pub fn new(linear_vb: (VarBuilder, &str), mlp_vb: VarBuilder, cfg: &HeadCfg) -> Result<Self> {
        let (width, embed_dim, layers) = (cfg.width, cfg.embed_dim, cfg.layers);
        match cfg.kind {
            ProjType::Linear => {
                let (vb, name) = linear_vb;
                Ok(Self::Linear(vb.get_with_hints(
                    (width, embed_dim),
                    name,
                    Init::Const(0.),
                )?))
            }
            ProjType::Mlp => {
                let hidden = cfg.hidden.unwrap_or(width);
                let mut fcs = Vec::with_capacity(layers + 1);
                let mut in_dim = width;
                for i in 0..layers {
                    fcs.push(Linear::new(mlp_vb.pp(2 * i), in_dim, hidden, true)?);
                    in_dim = hidden;
                }
                fcs.push(Linear::new(mlp_vb.pp(2 * layers), in_dim, embed_dim, true)?);
                Ok(Self::Mlp(fcs))
            }
            ProjType::None => Ok(Self::Identity),
        }
    }
}

impl ProjectionHead {
    pub fn kind(&self) -> ProjType {
        match self {
            Self::Linear(_) => ProjType::Linear,
            Self::Mlp(_) => ProjType::Mlp,
            Self::Identity => ProjType::None,
        }
    }
}

impl Module for ProjectionHead {
    /// `[N, W]` → `[N, E]`.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Self::Linear(p) => x.matmul(p),
            Self::Identity => Ok(x.clone()),
            Self::Mlp(fcs) => {
                let mut h = x.clone();
                for (i, fc) in fcs.iter().enumerate() {
                    h = fc.forward(&h)?; // [N, hidden] or [N, E] for the last
                    if i + 1 < fcs.len() {
                        h = Activation::Gelu.forward(&h)?;
                    }
                }
                Ok(h)
            }
        }
    }
}
