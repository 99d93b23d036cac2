//! Multi-head scaled dot-product attention as one op on the packed projections: qkv
//! `[B, T, 3W]` (q | k | v, each `H` heads of `Dh`, PyTorch's `in_proj` layout) → `[B, T, W]`,
//! optionally causal. Nothing but the output is kept: the backward pass recomputes each row of
//! probabilities (as FlashAttention does), so no `[B, H, T, T]` tensor, no head permutes, no
//! additive mask. Parallel over the batch; within one batch element and head, every product
//! (q kᵀ, p v and the backward's four) is one small `gemm` call on strided views of the packed
//! rows, so the arithmetic runs in gemm's register-blocked kernel rather than in axpy loops.

use candle_core::{CpuStorage, CustomOp1, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::cpu::{contiguous_f32, fused_ok};
use super::gemm::{matmul_serial_into, View};
use super::lanes;
use super::math::exp;

/// softmax(q kᵀ / √Dh [+ causal mask]) v for every head: qkv `[B, T, 3W]` → `[B, T, W]`.
pub fn attention(qkv: &Tensor, heads: usize, causal: bool) -> Result<Tensor> {
    if !fused_ok(qkv) {
        return attention_composed(qkv, heads, causal);
    }
    qkv.contiguous()?.apply_op1(AttentionOp { heads, causal })
}

/// The same attention out of candle's ops (the reference, and the non-CPU path).
pub fn attention_composed(qkv: &Tensor, heads: usize, causal: bool) -> Result<Tensor> {
    let (b, t, w3) = qkv.dims3()?;
    let (w, h) = (w3 / 3, heads);
    let dh = w / h;
    let qkv = qkv.reshape((b, t, 3, h, dh))?.permute((2, 0, 3, 1, 4))?; // [3, B, H, T, Dh]
    let q = (qkv.get(0)?.contiguous()? * (dh as f64).powf(-0.5))?; // [B, H, T, Dh]
    let k = qkv.get(1)?.contiguous()?; // [B, H, T, Dh]
    let v = qkv.get(2)?.contiguous()?; // [B, H, T, Dh]
    let mut scores = q.matmul(&k.t()?)?; // [B, H, T, T]
    if causal {
        let mask = causal_mask(t, qkv.device())?.to_dtype(scores.dtype())?; // [T, T]
        scores = scores.broadcast_add(&mask)?;
    }
    let probs = if super::mode::in_inference() {
        candle_nn::ops::softmax_last_dim(&scores)? // one kernel, no backward
    } else {
        candle_nn::ops::softmax(&scores, candle_core::D::Minus1)? // differentiable
    }; // [B, H, T, T]
    let ctx = probs.matmul(&v)?; // [B, H, T, Dh]
    ctx.transpose(1, 2)?.reshape((b, t, w)) // [B, T, W]
}

/// Additive causal mask `[T, T]`: 0 on and below the diagonal, −∞ above (open_clip `build_causal_mask`).
pub fn causal_mask(t: usize, device: &candle_core::Device) -> Result<Tensor> {
    let data: Vec<f32> = (0..t)
        .flat_map(|i| (0..t).map(move |j| if j > i { f32::NEG_INFINITY } else { 0.0 }))
        .collect();
    Tensor::from_vec(data, (t, t), device)
}

struct AttentionOp {
    heads: usize,
    causal: bool,
}

/// Shapes of one call: batch, tokens, width, heads, head width.
#[derive(Clone, Copy)]
pub(crate) struct Dims {
    t: usize,
    w: usize,
    h: usize,
    dh: usize,
    causal: bool,
}

impl Dims {
    /// Tokens `t`, width `w` split into `heads` heads.
    pub(crate) fn of(t: usize, w: usize, heads: usize, causal: bool) -> Self {
        Self {
            t,
            w,
            h: heads,
            dh: w / heads,
            causal,
        }
    }

    fn new(l: &Layout, heads: usize, causal: bool) -> Result<(usize, Self)> {
        let (b, t, w3) = l.shape().dims3()?;
        if w3 % 3 != 0 || (w3 / 3) % heads != 0 {
            candle_core::bail!("attention: last dim {w3} is not 3 × heads ({heads}) × head width");
        }
        let w = w3 / 3;
        Ok((
            b,
            Self {
                t,
                w,
                h: heads,
                dh: w / heads,
                causal,
            },
        ))
    }

    /// Keys visible from query `i`.
    fn visible(&self, i: usize) -> usize {
        if self.causal {
            i + 1
        } else {
            self.t
        }
    }

    fn scale(&self) -> f32 {
        (self.dh as f32).powf(-0.5)
    }
}

/// Head columns `[T, Dh]` starting at column `off` of one batch element's rows, `rs` apart.
fn head(x: &[f32], d: Dims, off: usize, rs: usize) -> View<'_> {
    View {
        data: &x[off..],
        rows: d.t,
        cols: d.dh,
        rs,
        cs: 1,
    }
}

/// Head `h_i`'s probabilities `[T, T]` into `probs` from one batch element's qkv `[T, 3W]`:
/// softmax(q kᵀ·scale) per row; under the causal mask, row i keeps keys 0..=i and the rest are 0.
fn head_probs(x: &[f32], d: Dims, h_i: usize, probs: &mut [f32]) {
    let w3 = 3 * d.w;
    let q = head(x, d, h_i * d.dh, w3); // [T, Dh]
    let kt = head(x, d, d.w + h_i * d.dh, w3).t(); // [Dh, T]
    matmul_serial_into(q, kt, probs, d.t, false); // [T, T]
    let scale = d.scale();
    for (i, row) in probs.chunks_mut(d.t).enumerate() {
        let (live, masked) = row.split_at_mut(d.visible(i));
        masked.fill(0.0);
        let max = lanes::max(live) * scale;
        live.iter_mut().for_each(|v| *v = exp(*v * scale - max));
        let inv = 1.0 / lanes::sum(live);
        live.iter_mut().for_each(|v| *v *= inv);
    }
}

impl CustomOp1 for AttentionOp {
    fn name(&self) -> &'static str {
        "clip-attention"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let qkv = contiguous_f32(s, l, self.name())?;
        let (b, d) = Dims::new(l, self.heads, self.causal)?;
        let out = attn_fwd(qkv, d);
        Ok((CpuStorage::F32(out), Shape::from((b, d.t, d.w))))
    }

    fn bwd(&self, qkv: &Tensor, out: &Tensor, dout: &Tensor) -> Result<Option<Tensor>> {
        let op = AttentionBwdOp {
            heads: self.heads,
            causal: self.causal,
        };
        Ok(Some(qkv.apply_op3_no_bwd(out, &dout.contiguous()?, &op)?))
    }
}

/// (qkv, out, dout) → d qkv `[B, T, 3W]`.
struct AttentionBwdOp {
    heads: usize,
    causal: bool,
}

impl CustomOp3 for AttentionBwdOp {
    fn name(&self) -> &'static str {
        "clip-attention-bwd"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let qkv = contiguous_f32(s1, l1, self.name())?;
        let out = contiguous_f32(s2, l2, self.name())?;
        let dout = contiguous_f32(s3, l3, self.name())?;
        let (_, d) = Dims::new(l1, self.heads, self.causal)?;
        let dqkv = attn_bwd(qkv, out, dout, d);
        Ok((CpuStorage::F32(dqkv), l1.shape().clone()))
    }
}

/// One batch element: qkv `[T, 3W]` → o `[T, W]`, with `probs` a `[T, T]` scratch buffer.
pub(crate) fn attn_fwd_one(x: &[f32], d: Dims, o: &mut [f32], probs: &mut [f32]) {
    for h_i in 0..d.h {
        head_probs(x, d, h_i, probs); // [T, T]
        let v = head(x, d, 2 * d.w + h_i * d.dh, 3 * d.w); // [T, Dh]
        let pv = View::rows(probs, d.t, d.t);
        matmul_serial_into(pv, v, &mut o[h_i * d.dh..], d.w, false); // o_h [T, Dh]
    }
}

/// qkv `[B, T, 3W]` → `[B, T, W]` (B from the length), in parallel over the batch.
pub(crate) fn attn_fwd(qkv: &[f32], d: Dims) -> Vec<f32> {
    let b = qkv.len() / (d.t * 3 * d.w);
    let mut out = vec![0f32; b * d.t * d.w];
    out.par_chunks_mut(d.t * d.w)
        .zip(qkv.par_chunks(d.t * 3 * d.w))
        .for_each_init(
            || vec![0f32; d.t * d.t],
            |probs, (o, x)| attn_fwd_one(x, d, o, probs),
        );
    out
}

/// One batch element's backward: (qkv `[T, 3W]`, o `[T, W]`, dO `[T, W]`) → dqkv `[T, 3W]`
/// (overwritten), with `probs` and `ds` `[T, T]` scratch buffers. With S = q kᵀ·scale,
/// P = softmax(S): dP = dO vᵀ, dS = P ∘ (dP − rowsum(dO ∘ O)), dv = Pᵀ dO, dk = scale·dSᵀ q,
/// dq = scale·dS k.
pub(crate) fn attn_bwd_one(
    x: &[f32],
    o: &[f32],
    go: &[f32],
    d: Dims,
    g: &mut [f32],
    probs: &mut [f32],
    ds: &mut [f32],
) {
    let (t, w, w3) = (d.t, d.w, 3 * d.w);
    let scale = d.scale();
    for h_i in 0..d.h {
        let (qo, ko, vo) = (h_i * d.dh, w + h_i * d.dh, 2 * w + h_i * d.dh);
        head_probs(x, d, h_i, probs); // [T, T]
        let go_h = head(go, d, qo, w); // [T, Dh]
        matmul_serial_into(go_h, head(x, d, vo, w3).t(), ds, t, false); // dP [T, T]
        for (i, (dsi, pi)) in ds.chunks_mut(t).zip(probs.chunks(t)).enumerate() {
            let row = i * w + qo..i * w + qo + d.dh;
            let di = lanes::dot(&go[row.clone()], &o[row]);
            for (s, &pj) in dsi.iter_mut().zip(pi.iter()) {
                *s = pj * (*s - di) * scale; // masked keys: pj = 0
            }
        }
        let (pv, dsv) = (View::rows(probs, t, t), View::rows(ds, t, t));
        matmul_serial_into(pv.t(), go_h, &mut g[vo..], w3, false); // dv_h [T, Dh]
        let q = head(x, d, qo, w3);
        matmul_serial_into(dsv.t(), q, &mut g[ko..], w3, false); // dk_h [T, Dh]
        let k = head(x, d, ko, w3);
        matmul_serial_into(dsv, k, &mut g[qo..], w3, false); // dq_h [T, Dh]
    }
}

/// (qkv, out, dout) → d qkv, all batch-major as in [`attn_fwd`], in parallel over the batch.
pub(crate) fn attn_bwd(qkv: &[f32], out: &[f32], dout: &[f32], d: Dims) -> Vec<f32> {
    let b = qkv.len() / (d.t * 3 * d.w);
    let (t, w, w3) = (d.t, d.w, 3 * d.w);
    let mut dqkv = vec![0f32; b * t * w3];
    dqkv.par_chunks_mut(t * w3)
        .zip(qkv.par_chunks(t * w3))
        .zip(out.par_chunks(t * w).zip(dout.par_chunks(t * w)))
        .for_each_init(
            || (vec![0f32; t * t], vec![0f32; t * t]),
            |(probs, ds), ((g, x), (o, go))| attn_bwd_one(x, o, go, d, g, probs, ds),
        );
    dqkv
}
