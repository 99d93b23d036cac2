//! Multi-head scaled dot-product attention as one op on the packed projections: qkv
//! `[B, T, 3W]` (q | k | v, each `H` heads of `Dh`, PyTorch's `in_proj` layout) → `[B, T, W]`,
//! optionally causal. Nothing but the output is kept: the backward pass recomputes each row of
//! probabilities (as FlashAttention does), so no `[B, H, T, T]` tensor, no head permutes, no
//! additive mask. Parallel over the batch; every inner loop is an axpy over a contiguous row.

use candle_core::{CpuStorage, CustomOp1, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::{contiguous_f32, exp, fused_ok};

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
    let probs = if super::block::in_inference() {
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

/// `dst[j] += a · src[j]`.
#[inline]
fn axpy(dst: &mut [f32], a: f32, src: &[f32]) {
    for (d, s) in dst.iter_mut().zip(src) {
        *d += a * s;
    }
}

/// Head `hd`'s `[Dh, T]` transpose of the block at column `off` of one batch element's qkv.
fn transpose_head(x: &[f32], d: Dims, off: usize, out: &mut [f32]) {
    for j in 0..d.t {
        let row = &x[j * 3 * d.w + off..j * 3 * d.w + off + d.dh];
        for (c, &v) in row.iter().enumerate() {
            out[c * d.t + j] = v;
        }
    }
}

/// Row `i` of head `hd`'s probabilities into `p[..visible]`, given kᵀ `[Dh, T]`.
fn probs_row(x: &[f32], d: Dims, hd: usize, kt: &[f32], i: usize, p: &mut [f32]) {
    let n = d.visible(i);
    let p = &mut p[..n];
    p.fill(0.0);
    let q = &x[i * 3 * d.w + hd * d.dh..i * 3 * d.w + (hd + 1) * d.dh];
    for (c, &qc) in q.iter().enumerate() {
        axpy(p, qc, &kt[c * d.t..c * d.t + n]);
    }
    let scale = d.scale();
    let max = p.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v)) * scale;
    p.iter_mut().for_each(|v| *v = exp(*v * scale - max));
    let inv = 1.0 / p.iter().sum::<f32>();
    p.iter_mut().for_each(|v| *v *= inv);
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

/// qkv `[B, T, 3W]` → `[B, T, W]` (B from the length).
pub(crate) fn attn_fwd(qkv: &[f32], d: Dims) -> Vec<f32> {
    let b = qkv.len() / (d.t * 3 * d.w);
    let mut out = vec![0f32; b * d.t * d.w];
    out.par_chunks_mut(d.t * d.w)
        .zip(qkv.par_chunks(d.t * 3 * d.w))
        .for_each(|(o, x)| {
            let mut kt = vec![0f32; d.dh * d.t];
            let mut p = vec![0f32; d.t];
            for hd in 0..d.h {
                transpose_head(x, d, d.w + hd * d.dh, &mut kt);
                for i in 0..d.t {
                    probs_row(x, d, hd, &kt, i, &mut p);
                    let orow = &mut o[i * d.w + hd * d.dh..i * d.w + (hd + 1) * d.dh];
                    for (j, &pj) in p[..d.visible(i)].iter().enumerate() {
                        let v0 = j * 3 * d.w + 2 * d.w + hd * d.dh;
                        axpy(orow, pj, &x[v0..v0 + d.dh]);
                    }
                }
            }
        });
    out
}

/// (qkv, out, dout) → d qkv, all batch-major as in [`attn_fwd`].
pub(crate) fn attn_bwd(qkv: &[f32], out: &[f32], dout: &[f32], d: Dims) -> Vec<f32> {
    let b = qkv.len() / (d.t * 3 * d.w);
    let (tw, tw3) = (d.t * d.w, d.t * 3 * d.w);
    let mut dqkv = vec![0f32; b * tw3];
    dqkv.par_chunks_mut(tw3)
        .zip(qkv.par_chunks(tw3))
        .zip(out.par_chunks(tw).zip(dout.par_chunks(tw)))
        .for_each(|((g, x), (o, go))| {
            let mut kt = vec![0f32; d.dh * d.t];
            let mut vt = vec![0f32; d.dh * d.t];
            let mut p = vec![0f32; d.t];
            let mut ds = vec![0f32; d.t];
            let mut dq = vec![0f32; d.dh];
            let scale = d.scale();
            for hd in 0..d.h {
                let (qo, ko, vo) = (hd * d.dh, d.w + hd * d.dh, 2 * d.w + hd * d.dh);
                transpose_head(x, d, ko, &mut kt);
                transpose_head(x, d, vo, &mut vt);
                for i in 0..d.t {
                    let n = d.visible(i);
                    probs_row(x, d, hd, &kt, i, &mut p);
                    let goi = &go[i * d.w + qo..i * d.w + qo + d.dh];
                    let oi = &o[i * d.w + qo..i * d.w + qo + d.dh];
                    // dP_ij = dO_i · v_j; D_i = dO_i · O_i; dS = P ∘ (dP − D_i) · scale.
                    let dsi = &mut ds[..n];
                    dsi.fill(0.0);
                    for (c, &gc) in goi.iter().enumerate() {
                        axpy(dsi, gc, &vt[c * d.t..c * d.t + n]);
                    }
                    let di: f32 = goi.iter().zip(oi).map(|(a, b)| a * b).sum();
                    for (s, &pj) in dsi.iter_mut().zip(&p[..n]) {
                        *s = pj * (*s - di) * scale;
                    }
                    let r = 3 * d.w;
                    for j in 0..n {
                        // dV_j += P_ij dO_i; dK_j += dS_ij q_i.
                        let (gk, gv) = g[j * r + ko..j * r + vo + d.dh].split_at_mut(d.w);
                        axpy(&mut gv[..d.dh], p[j], goi);
                        axpy(&mut gk[..d.dh], dsi[j], &x[i * r + qo..i * r + qo + d.dh]);
                    }
                    // dQ_i = Σ_j dS_ij k_j.
                    dq.fill(0.0);
                    for (j, &sj) in dsi.iter().enumerate() {
                        axpy(&mut dq, sj, &x[j * r + ko..j * r + ko + d.dh]);
                    }
                    g[i * r + qo..i * r + qo + d.dh].copy_from_slice(&dq);
                }
            }
        });
    dqkv
}
