//! A pretrained DINOv2 image encoder (Hugging Face `Dinov2Model`, e.g. ViT-S/14): patch
//! embedding with bias, class token, a position embedding learnt on a fixed grid and
//! interpolated bicubically to the image's grid (as DINOv2 does), pre-LayerNorm blocks with
//! layer scale, a final LayerNorm; the pooled feature is the class token's row. Weight paths
//! are the hub checkpoints' (`embeddings.*`, `encoder.layer.{i}.*`, `layernorm.*`).
//!
//! Shapes: B images, P patch side, G² patches of the image, N² of the learnt grid, T = G² + 1
//! tokens, W width, H heads, Dh = W/H, M the MLP width.

use candle_core::{Result, Tensor};
use candle_nn::{Init, Module, VarBuilder};
use serde::{Deserialize, Serialize};

use crate::nn::{LayerNorm, Linear};
use crate::ops::{self, Activation, BlockCfg, BlockParams};

fn imagenet_mean() -> [f32; 3] {
    [0.485, 0.456, 0.406]
}
fn imagenet_std() -> [f32; 3] {
    [0.229, 0.224, 0.225]
}

/// The fields of a Hugging Face DINOv2 `config.json` the encoder reads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Dinov2Cfg {
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub mlp_ratio: f64,
    pub patch_size: usize,
    /// The image size the position embedding was learnt at (518 for the hub's models).
    pub image_size: usize,
    pub layer_norm_eps: f64,
    /// The pixel normalisation the encoder was trained with.
    #[serde(default = "imagenet_mean")]
    pub image_mean: [f32; 3],
    #[serde(default = "imagenet_std")]
    pub image_std: [f32; 3],
}

impl Dinov2Cfg {
    /// Patches per side of the learnt position grid.
    pub fn grid(&self) -> usize {
        self.image_size / self.patch_size
    }
    pub fn mlp_width(&self) -> usize {
        (self.hidden_size as f64 * self.mlp_ratio) as usize
    }
}

/// One block: x + λ₁·attn(norm1 x), then + λ₂·mlp(norm2 x).
#[derive(Debug, Clone)]
struct Layer {
    norm1: LayerNorm,
    query: Linear,
    key: Linear,
    value: Linear,
    attn_out: Linear,
    scale1: Tensor,
    norm2: LayerNorm,
    fc1: Linear,
    fc2: Linear,
    scale2: Tensor,
    heads: usize,
    eps: f64,
}

impl Layer {
    fn new(vb: VarBuilder, c: &Dinov2Cfg) -> Result<Self> {
        let (w, m, eps) = (c.hidden_size, c.mlp_width(), c.layer_norm_eps);
        let att = vb.pp("attention.attention");
        let scale = |name: &str| vb.get_with_hints(w, &format!("{name}.lambda1"), Init::Const(1.));
        Ok(Self {
            norm1: LayerNorm::new(vb.pp("norm1"), w, eps)?,
            query: Linear::new(att.pp("query"), w, w, true)?,
            key: Linear::new(att.pp("key"), w, w, true)?,
            value: Linear::new(att.pp("value"), w, w, true)?,
            attn_out: Linear::new(vb.pp("attention.output.dense"), w, w, true)?,
            scale1: scale("layer_scale1")?,
            norm2: LayerNorm::new(vb.pp("norm2"), w, eps)?,
            fc1: Linear::new(vb.pp("mlp.fc1"), w, m, true)?,
            fc2: Linear::new(vb.pp("mlp.fc2"), m, w, true)?,
            scale2: scale("layer_scale2")?,
            heads: c.num_attention_heads,
            eps,
        })
    }

    /// The block in CLIP's terms, so that it runs as the fused residual-block op: q, k, v
    /// packed into one `[3W, W]` projection, and each layer scale folded into the projection it
    /// follows (λ·(Wx + b) = (λW)x + λb; the fold is made of candle ops, so λ still gets its
    /// gradient). `f` gets the parameters.
    fn with_params(
        &self,
        f: impl FnOnce(&BlockParams, &BlockCfg) -> Result<Tensor>,
    ) -> Result<Tensor> {
        let bias = |l: &Linear| l.bias.clone().expect("DINOv2 linears have biases");
        let fold = |l: &Linear, s: &Tensor| -> Result<(Tensor, Tensor)> {
            let w = l.weight.broadcast_mul(&s.unsqueeze(1)?)?; // [out, in], row i × λ_i
            Ok((w, (bias(l) * s)?))
        };
        let in_w = Tensor::cat(
            &[&self.query.weight, &self.key.weight, &self.value.weight],
            0,
        )?; // [3W, W]
        let in_b = Tensor::cat(&[bias(&self.query), bias(&self.key), bias(&self.value)], 0)?; // [3W]
        let (out_w, out_b) = fold(&self.attn_out, &self.scale1)?;
        let (fc2_w, fc2_b) = fold(&self.fc2, &self.scale2)?;
        let fc1_b = bias(&self.fc1);
        let cfg = BlockCfg {
            width: in_w.dim(1)?,
            heads: self.heads,
            hidden: self.fc1.weight.dim(0)?,
            act: Activation::Gelu,
            causal: false,
            eps: self.eps as f32,
        };
        f(
            &BlockParams {
                ln_1_weight: &self.norm1.weight,
                ln_1_bias: &self.norm1.bias,
                in_proj_weight: &in_w,
                in_proj_bias: &in_b,
                out_proj_weight: &out_w,
                out_proj_bias: &out_b,
                ln_2_weight: &self.norm2.weight,
                ln_2_bias: &self.norm2.bias,
                c_fc_weight: &self.fc1.weight,
                c_fc_bias: &fc1_b,
                c_proj_weight: &fc2_w,
                c_proj_bias: &fc2_b,
            },
            &cfg,
        )
    }

    /// x `[B, T, W]` → `[B, T, W]`: x + λ₁·attn(norm1 x), then + λ₂·mlp(norm2 x).
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.with_params(|p, cfg| ops::residual_block(x, p, cfg))
    }

    /// x `[B, T, W]` → the class token's row of the output, `[B, W]`, computing only what it
    /// needs.
    fn forward_cls(&self, x: &Tensor) -> Result<Tensor> {
        let b = x.dim(0)?;
        self.with_params(|p, cfg| ops::residual_block_pooled(x, p, cfg, &vec![0; b]))
    }
}

/// The encoder: pixels in its own normalisation (`cfg.image_mean`/`image_std`) → features.
#[derive(Debug, Clone)]
pub struct Dinov2 {
    patch_w: Tensor,
    patch_b: Tensor,
    cls: Tensor,
    pos: Tensor,
    layers: Vec<Layer>,
    norm: LayerNorm,
    pub cfg: Dinov2Cfg,
}

impl Dinov2 {
    /// `vb` rooted where the hub's `Dinov2Model` keys start (`embeddings.…`).
    pub fn new(vb: VarBuilder, c: &Dinov2Cfg) -> Result<Self> {
        let (e, w, p, n) = (vb.pp("embeddings"), c.hidden_size, c.patch_size, c.grid());
        let zero = Init::Const(0.);
        let layers = (0..c.num_hidden_layers)
            .map(|i| Layer::new(vb.pp(format!("encoder.layer.{i}")), c))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            patch_w: e.get_with_hints((w, 3, p, p), "patch_embeddings.projection.weight", zero)?,
            patch_b: e.get_with_hints(w, "patch_embeddings.projection.bias", zero)?,
            cls: e.get_with_hints((1, 1, w), "cls_token", zero)?,
            pos: e.get_with_hints((1, n * n + 1, w), "position_embeddings", zero)?,
            layers,
            norm: LayerNorm::new(vb.pp("layernorm"), w, c.layer_norm_eps)?,
            cfg: c.clone(),
        })
    }

    /// The position embedding for a `gh` × `gw` grid of patches: `[1, gh·gw + 1, W]`.
    fn positions(&self, gh: usize, gw: usize) -> Result<Tensor> {
        let n = self.cfg.grid();
        if (gh, gw) == (n, n) {
            return Ok(self.pos.clone());
        }
        let w = self.cfg.hidden_size;
        let class = self.pos.narrow(1, 0, 1)?; // [1, 1, W]
        let grid = self.pos.narrow(1, 1, n * n)?.reshape((n * n, w))?; // [N², W]
        let m = bicubic_2d(n, gh, gw);
        let m = Tensor::from_vec(m, (gh * gw, n * n), self.pos.device())?.to_dtype(grid.dtype())?;
        let patches = m.matmul(&grid)?.reshape((1, gh * gw, w))?; // [1, G², W]
        Tensor::cat(&[&class, &patches], 1)
    }

    /// Pixels `[B, 3, Hpx, Wpx]` (sides multiples of P) → the last layer's rows after the final
    /// LayerNorm, `[B, T, W]`.
    pub fn hidden(&self, pixels: &Tensor) -> Result<Tensor> {
        let mut x = self.embed(pixels)?;
        for layer in &self.layers {
            x = layer.forward(&x)?;
        }
        self.norm.forward(&x)
    }

    /// The pooled feature `[B, W]`: the class token's row after the final LayerNorm (the last
    /// block computed for that row only).
    pub fn pooled(&self, pixels: &Tensor) -> Result<Tensor> {
        let mut x = self.embed(pixels)?;
        let (last, rest) = self.layers.split_last().expect("at least one layer");
        for layer in rest {
            x = layer.forward(&x)?;
        }
        self.norm.forward(&last.forward_cls(&x)?)
    }

    /// Pixels → the tokens entering the first block, `[B, T, W]`.
    fn embed(&self, pixels: &Tensor) -> Result<Tensor> {
        let (b, c, hgt, wid) = pixels.dims4()?;
        let (p, w) = (self.cfg.patch_size, self.cfg.hidden_size);
        if !hgt.is_multiple_of(p) || !wid.is_multiple_of(p) {
            candle_core::bail!(
                "dinov2: a {hgt}×{wid} image is not a whole number of {p}-px patches"
            );
        }
        let (gh, gw) = (hgt / p, wid / p);
        // A stride-P convolution is a matmul over flattened patches.
        let patches = pixels
            .reshape((b, c, gh, p, gw, p))? // [B, 3, gh, P, gw, P]
            .permute((0, 2, 4, 1, 3, 5))? // [B, gh, gw, 3, P, P]
            .reshape((b * gh * gw, c * p * p))?; // [B·G², 3·P·P]
        let kernel = self.patch_w.reshape((w, c * p * p))?; // [W, 3·P·P]
        let x = patches
            .matmul(&kernel.t()?)?
            .broadcast_add(&self.patch_b)?
            .reshape((b, gh * gw, w))?; // [B, G², W]
        let cls = self.cls.broadcast_as((b, 1, w))?; // [B, 1, W]
        Tensor::cat(&[&cls, &x], 1)?.broadcast_add(&self.positions(gh, gw)?) // [B, T, W]
    }
}

/// PyTorch's bicubic resampling weights (`align_corners=False`, A = −0.75, sources clamped to
/// the edge) from `n_in` to `n_out` points: `[n_out, n_in]`.
fn bicubic_1d(n_in: usize, n_out: usize) -> Vec<f32> {
    const A: f64 = -0.75;
    let near = |x: f64| ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0; // |x| ≤ 1
    let far = |x: f64| ((A * x - 5.0 * A) * x + 8.0 * A) * x - 4.0 * A; // 1 < |x| < 2
    let scale = n_in as f64 / n_out as f64;
    let mut m = vec![0f32; n_out * n_in];
    for i in 0..n_out {
        let src = scale * (i as f64 + 0.5) - 0.5;
        let base = src.floor();
        let t = src - base;
        let weights = [far(t + 1.0), near(t), near(1.0 - t), far(2.0 - t)];
        for (k, wt) in weights.iter().enumerate() {
            let j = (base as i64 - 1 + k as i64).clamp(0, n_in as i64 - 1) as usize;
            m[i * n_in + j] += *wt as f32;
        }
    }
    m
}

/// The bicubic map from an `n`×`n` grid to `gh`×`gw`, row-major on both sides: `[gh·gw, n²]`,
/// the outer product of the two 1-D maps.
fn bicubic_2d(n: usize, gh: usize, gw: usize) -> Vec<f32> {
    let (rows, cols) = (bicubic_1d(n, gh), bicubic_1d(n, gw));
    let mut m = vec![0f32; gh * gw * n * n];
    for i in 0..gh {
        for j in 0..gw {
            let out = (i * gw + j) * n * n;
            for p in 0..n {
                let r = rows[i * n + p];
                if r == 0.0 {
                    continue;
                }
                for q in 0..n {
                    m[out + p * n + q] = r * cols[j * n + q];
                }
            }
        }
    }
    m
}

#[cfg(test)]
mod tests {
    use super::bicubic_1d;

    #[test]
    fn bicubic_keeps_constants_and_is_the_identity_at_the_same_size() {
        for (n_in, n_out) in [(37, 16), (5, 4), (4, 9)] {
            let m = bicubic_1d(n_in, n_out);
            for row in m.chunks(n_in) {
                let s: f32 = row.iter().sum();
                assert!((s - 1.0).abs() < 1e-6, "{n_in}→{n_out}: row sums to {s}");
            }
        }
        let id = bicubic_1d(6, 6);
        for i in 0..6 {
            for j in 0..6 {
                assert_eq!(id[i * 6 + j], if i == j { 1.0 } else { 0.0 });
            }
        }
    }
}
