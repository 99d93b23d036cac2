//! Small differentiable building blocks: linear layer, LayerNorm, activations.
//!
//! LayerNorm and the activations run as our fused ops with explicit backward (`ops`):
//! candle 0.11's fused `candle_nn::LayerNorm` has no backward pass and silently drops
//! gradients (DESIGN.md), and its differentiable version is a slow chain of element-wise ops.

use candle_core::{DType, Result, Tensor, D};
use candle_nn::{Init, VarBuilder};

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

    /// x: `[..., in]` → `[..., out]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
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
    pub fn new(vb: VarBuilder, dim: usize) -> Result<Self> {
        let weight = vb.get_with_hints(dim, "weight", Init::Const(1.))?;
        let bias = vb.get_with_hints(dim, "bias", Init::Const(0.))?;
        Ok(Self {
            weight,
            bias,
            eps: 1e-5,
        })
    }

    /// x: `[..., C]` → `[..., C]`, normalised over C (biased variance, as PyTorch).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mean = x.mean_keepdim(D::Minus1)?; // [..., 1]
        let xc = x.broadcast_sub(&mean)?; // [..., C]
        let var = xc.sqr()?.mean_keepdim(D::Minus1)?; // [..., 1]
        let inv = (var + self.eps)?.sqrt()?.recip()?; // [..., 1]
        xc.broadcast_mul(&inv)?
            .broadcast_mul(&self.weight)?
            .broadcast_add(&self.bias)
    }
}

/// The transformer MLP's activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// Exact GELU with erf (PyTorch `nn.GELU()`).
    Gelu,
    /// x·σ(1.702x), OpenAI's CLIP.
    QuickGelu,
}

impl Activation {
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Activation::Gelu => crate::ops::gelu(x),
            Activation::QuickGelu => crate::ops::quick_gelu(x),
        }
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
