//! A whole pre-LN residual block as one op, llm.c-style: x + attn(ln_1(x)), then + mlp(ln_2(·)),
//! forward and backward written out over plain buffers with the kernels of the other op
//! modules. candle sees one graph node per block instead of about twenty, so its autograd no
//! longer allocates a zeroed gradient and adds into it for every intermediate tensor. The
//! activations the backward needs are kept inside the op (not recomputed); under
//! [`inference`] they are not kept, and a backward through such a block is an error.

use std::cell::Cell;
use std::sync::Mutex;

use candle_core::{bail, CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::activation::{act_fwd_par, act_grad_par, Act};
use super::attention::{attn_bwd, attn_fwd, Dims};
use super::linear::{linear_bwd, linear_fwd};
use super::norm::{ln_bwd_dx, ln_fwd, ln_param_grads};
use super::{contiguous_f32, fused_ok};

thread_local! {
    static INFERENCE: Cell<bool> = const { Cell::new(false) };
}

/// Run `f` without keeping the activations fused blocks would need for a backward pass (as
/// `torch.inference_mode`): for encoding and evaluation, where they only cost memory.
pub fn inference<R>(f: impl FnOnce() -> R) -> R {
    let before = INFERENCE.with(|c| c.replace(true));
    let out = f();
    INFERENCE.with(|c| c.set(before));
    out
}

/// Whether the caller is inside [`inference`]: no backward pass will follow.
pub(crate) fn in_inference() -> bool {
    INFERENCE.with(|c| c.get())
}

/// The shape of one block.
#[derive(Debug, Clone, Copy)]
pub struct BlockCfg {
    pub width: usize,
    pub heads: usize,
    pub hidden: usize,
    /// QuickGELU instead of GELU.
    pub quick_gelu: bool,
    pub causal: bool,
    pub eps: f32,
}

/// The block's parameters, in packing order (open_clip's names).
pub struct BlockParams<'a> {
    pub ln_1_weight: &'a Tensor,
    pub ln_1_bias: &'a Tensor,
    pub in_proj_weight: &'a Tensor,
    pub in_proj_bias: &'a Tensor,
    pub out_proj_weight: &'a Tensor,
    pub out_proj_bias: &'a Tensor,
    pub ln_2_weight: &'a Tensor,
    pub ln_2_bias: &'a Tensor,
    pub c_fc_weight: &'a Tensor,
    pub c_fc_bias: &'a Tensor,
    pub c_proj_weight: &'a Tensor,
    pub c_proj_bias: &'a Tensor,
}

impl BlockParams<'_> {
    fn list(&self) -> [&Tensor; 12] {
        [
            self.ln_1_weight,
            self.ln_1_bias,
            self.in_proj_weight,
            self.in_proj_bias,
            self.out_proj_weight,
            self.out_proj_bias,
            self.ln_2_weight,
            self.ln_2_bias,
            self.c_fc_weight,
            self.c_fc_bias,
            self.c_proj_weight,
            self.c_proj_bias,
        ]
    }
}

/// Offsets of the twelve parameters in the packed vector, and its length.
fn offsets(w: usize, h: usize) -> ([usize; 12], usize) {
    let sizes = [w, w, 3 * w * w, 3 * w, w * w, w, w, w, h * w, h, w * h, w];
    let mut off = [0; 12];
    let mut acc = 0;
    for (o, s) in off.iter_mut().zip(sizes) {
        *o = acc;
        acc += s;
    }
    (off, acc)
}

/// x `[B, T, W]` → `[B, T, W]` through one residual block, as one op (CPU, f32).
pub fn residual_block(x: &Tensor, p: &BlockParams, cfg: BlockCfg) -> Result<Tensor> {
    if !fused_ok(x) {
        return residual_block_composed(x, p, cfg);
    }
    let flat = p
        .list()
        .iter()
        .map(|t| t.flatten_all())
        .collect::<Result<Vec<_>>>()?;
    let packed = Tensor::cat(&flat, 0)?; // [P]
    let (_, total) = offsets(cfg.width, cfg.hidden);
    if packed.dim(0)? != total {
        bail!(
            "residual block: parameters hold {} values, width {} and hidden {} need {total}",
            packed.dim(0)?,
            cfg.width,
            cfg.hidden
        );
    }
    x.contiguous()?.apply_op2(
        &packed,
        BlockOp {
            cfg,
            saved: Mutex::new(None),
        },
    )
}

/// The same block out of the separate ops (the reference, and the non-CPU path).
pub fn residual_block_composed(x: &Tensor, p: &BlockParams, cfg: BlockCfg) -> Result<Tensor> {
    let (b, t, w) = x.dims3()?;
    let eps = cfg.eps as f64;
    let rows = |y: &Tensor| y.reshape((b * t, y.dim(2)?));
    let h = super::layer_norm(x, p.ln_1_weight, p.ln_1_bias, eps)?; // [B, T, W]
    let qkv = super::linear(&rows(&h)?, p.in_proj_weight, p.in_proj_bias)?; // [B·T, 3W]
    let att = super::attention(&qkv.reshape((b, t, 3 * w))?, cfg.heads, cfg.causal)?; // [B, T, W]
    let att = super::linear(&rows(&att)?, p.out_proj_weight, p.out_proj_bias)?; // [B·T, W]
    let x1 = (x + att.reshape((b, t, w))?)?; // [B, T, W]
    let h = super::layer_norm(&x1, p.ln_2_weight, p.ln_2_bias, eps)?; // [B, T, W]
    let h = super::linear(&rows(&h)?, p.c_fc_weight, p.c_fc_bias)?; // [B·T, H]
    let h = if cfg.quick_gelu {
        super::quick_gelu(&h)?
    } else {
        super::gelu(&h)?
    }; // [B·T, H]
    let h = super::linear(&h, p.c_proj_weight, p.c_proj_bias)?; // [B·T, W]
    &x1 + h.reshape((b, t, w))?
}

/// What the backward pass reads, kept from the forward pass (row-major, R = B·T rows).
struct Saved {
    ln1: Vec<f32>,  // [R, W]
    qkv: Vec<f32>,  // [R, 3W]
    att: Vec<f32>,  // [R, W], attention output before out_proj
    x1: Vec<f32>,   // [R, W], x + attention branch
    ln2: Vec<f32>,  // [R, W]
    hpre: Vec<f32>, // [R, H], before the activation
    hact: Vec<f32>, // [R, H]
}

struct BlockOp {
    cfg: BlockCfg,
    saved: Mutex<Option<Saved>>,
}

impl BlockCfg {
    fn act(&self) -> Act {
        if self.quick_gelu {
            Act::QuickGelu
        } else {
            Act::Gelu
        }
    }
}

/// `a += b`, in parallel.
fn add_into(a: &mut [f32], b: &[f32]) {
    a.par_chunks_mut(1 << 14)
        .zip(b.par_chunks(1 << 14))
        .for_each(|(x, y)| x.iter_mut().zip(y).for_each(|(u, v)| *u += v));
}

impl CustomOp2 for BlockOp {
    fn name(&self) -> &'static str {
        "clip-residual-block"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(s1, l1, self.name())?;
        let p = contiguous_f32(s2, l2, self.name())?;
        let (b, t, w) = l1.shape().dims3()?;
        let c = self.cfg;
        if w != c.width {
            bail!("residual block: input width {w}, block width {}", c.width);
        }
        let (o, _) = offsets(w, c.hidden);
        let r = b * t;
        let ln1 = ln_fwd(x, &p[o[0]..o[1]], &p[o[1]..o[2]], c.eps); // [R, W]
        let qkv = linear_fwd(&ln1, r, &p[o[2]..o[3]], &p[o[3]..o[4]]); // [R, 3W]
        let att = attn_fwd(&qkv, Dims::of(t, w, c.heads, c.causal)); // [R, W]
        let mut x1 = linear_fwd(&att, r, &p[o[4]..o[5]], &p[o[5]..o[6]]); // [R, W]
        add_into(&mut x1, x);
        let ln2 = ln_fwd(&x1, &p[o[6]..o[7]], &p[o[7]..o[8]], c.eps); // [R, W]
        let hpre = linear_fwd(&ln2, r, &p[o[8]..o[9]], &p[o[9]..o[10]]); // [R, H]
        let hact = act_fwd_par(c.act(), &hpre); // [R, H]
        let mut y = linear_fwd(&hact, r, &p[o[10]..o[11]], &p[o[11]..]); // [R, W]
        add_into(&mut y, &x1);
        if !INFERENCE.with(|f| f.get()) {
            *self.saved.lock().expect("block activations lock") = Some(Saved {
                ln1,
                qkv,
                att,
                x1,
                ln2,
                hpre,
                hact,
            });
        }
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        packed: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let saved = match self.saved.lock().expect("block activations lock").take() {
            Some(s) => s,
            None => bail!(
                "residual block: no activations kept for backward (run under ops::inference, \
                 or a second backward through the same graph)"
            ),
        };
        let (b, t, w) = x.dims3()?;
        let bwd = BlockBwdOp {
            cfg: self.cfg,
            saved,
        };
        let g = x.apply_op3_no_bwd(packed, &dy.contiguous()?, &bwd)?; // [R·W + P]
        let n = b * t * w;
        let dx = g.narrow(0, 0, n)?.reshape((b, t, w))?;
        let dp = g.narrow(0, n, packed.dim(0)?)?;
        Ok((Some(dx), Some(dp)))
    }
}

/// (x, packed parameters, dy) → dx then d(packed parameters), one vector.
struct BlockBwdOp {
    cfg: BlockCfg,
    saved: Saved,
}

impl CustomOp3 for BlockBwdOp {
    fn name(&self) -> &'static str {
        "clip-residual-block-bwd"
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
        let x = contiguous_f32(s1, l1, self.name())?;
        let p = contiguous_f32(s2, l2, self.name())?;
        let dy = contiguous_f32(s3, l3, self.name())?;
        let (b, t, w) = l1.shape().dims3()?;
        let (c, s) = (self.cfg, &self.saved);
        let hd = c.hidden;
        let (o, total) = offsets(w, hd);
        let r = b * t;
        let n = r * w;
        let mut out = vec![0f32; n + total];
        let (dx_out, dp) = out.split_at_mut(n);

        // MLP branch: y = x1 + hact·c_projᵀ + b.
        let (dw, db) = dp[o[10]..].split_at_mut(w * hd);
        let mut dh = linear_bwd(dy, &s.hact, &p[o[10]..o[11]], dw, db); // [R, H]
        act_grad_par(c.act(), &s.hpre, &mut dh);
        let (dw, db) = dp[o[8]..o[10]].split_at_mut(hd * w);
        let dln2 = linear_bwd(&dh, &s.ln2, &p[o[8]..o[9]], dw, db); // [R, W]
        drop(dh);
        let mut dx1 = ln_bwd_dx(&s.x1, &p[o[6]..o[7]], &dln2, c.eps); // [R, W]
        add_into(&mut dx1, dy);
        dp[o[6]..o[8]].copy_from_slice(&ln_param_grads(&s.x1, &dln2, w, c.eps));

        // Attention branch: x1 = x + att·out_projᵀ + b.
        let (dw, db) = dp[o[4]..o[6]].split_at_mut(w * w);
        let datt = linear_bwd(&dx1, &s.att, &p[o[4]..o[5]], dw, db); // [R, W]
        let dqkv = attn_bwd(&s.qkv, &s.att, &datt, Dims::of(t, w, c.heads, c.causal)); // [R, 3W]
        drop(datt);
        let (dw, db) = dp[o[2]..o[4]].split_at_mut(3 * w * w);
        let dln1 = linear_bwd(&dqkv, &s.ln1, &p[o[2]..o[3]], dw, db); // [R, W]
        let dx = ln_bwd_dx(x, &p[o[0]..o[1]], &dln1, c.eps);
        dx_out.copy_from_slice(&dx);
        add_into(dx_out, &dx1);
        let g1 = ln_param_grads(x, &dln1, w, c.eps);
        dp[o[0]..o[2]].copy_from_slice(&g1);
        Ok((CpuStorage::F32(out), Shape::from(n + total)))
    }
}
