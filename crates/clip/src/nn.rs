//! Small differentiable building blocks: linear layer, LayerNorm, L2 normalisation; the
//! activation is [`ops::Activation`](crate::ops::Activation).
//!
//! LayerNorm runs as our fused op with explicit backward (`ops`): candle 0.11's fused
//! `candle_nn::LayerNorm` has no backward pass and silently drops gradients (checked by
//! `tests/model_checks.rs`), and its differentiable version is a slow chain of element-wise ops.

use candle_core::{DType, Result, Tensor, D};
use candle_nn::{Init, Module, VarBuilder};

pub use crate::ops::Activation;

/// `y = x Wᵀ + b`, weights `[out, in]` as PyTorch's `nn.Linear` (`{prefix}.weight`, `.bias`).
#[derive(Debug, Clone)]
pub struct Linear {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
}

impl Linear {
    pub fn new(vb: VarBuilder, in_dim: usize, out_dim: usize, bias: bool) -> Result<Self> {
        let weight = vb.get_with_hints((out_dim, in_dim), "weight", Init::Const(0.))?;
        let bias = if bias {
            Some(vb.get_with_hints(out_dim, "bias", Init::Const(0.))?)
        } else {
            None
        };
        Ok(Self { weight, bias })
    }
}

impl Module for Linear {
    /// x: `[..., in]` → `[..., out]`.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let dims = x.dims().to_vec();
        let in_dim = dims[dims.len() - 1];
        let rows = x.elem_count() / in_dim;
        let x2 = x.reshape((rows, in_dim))?; // [R, in]
        let y = match &self.bias {
            Some(b) => crate::ops::linear(&x2, &self.weight, b)?,
            None => x2.matmul(&self.weight.t()?)?,
        }; // [R, out]
        let mut out_dims = dims;
        *out_dims.last_mut().expect("rank ≥ 1") = self.weight.dim(0)?;
        y.reshape(out_dims) // [..., out]
    }
}

/// LayerNorm over the last dimension with affine gain and bias (`{prefix}.weight`, `.bias`).
#[derive(Debug, Clone)]
pub struct LayerNorm {
    pub weight: Tensor,
    pub bias: Tensor,
    pub eps: f64,
}

impl LayerNorm {
    pub fn new(vb: VarBuilder, dim: usize, eps: f64) -> Result<Self> {
        let weight = vb.get_with_hints(dim, "weight", Init::Const(1.))?;
        let bias = vb.get_with_hints(dim, "bias", Init::Const(0.))?;
        Ok(Self { weight, bias, eps })
    }
}

impl Module for LayerNorm {
    /// x: `[..., C]` → `[..., C]`, normalised over C (biased variance, as PyTorch).
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        crate::ops::layer_norm(x, &self.weight, &self.bias, self.eps)
    }
}

/// L2-normalise rows: `[N, D]` → `[N, D]`, each row of unit norm (as `F.normalize`, eps 1e-12).
pub fn l2_normalize(x: &Tensor) -> Result<Tensor> {
    let norm = x
        .sqr()?
        .sum_keepdim(D::Minus1)?
        .sqrt()?
        .clamp(1e-12, f64::INFINITY)?; // [N, 1]
    x.broadcast_div(&norm)
}

/// A scalar parameter or tensor as f32 on the host.
pub fn to_f32_scalar(t: &Tensor) -> Result<f32> {
    t.to_dtype(DType::F32)?
        .flatten_all()?
        .get(0)?
        .to_scalar::<f32>()
}
