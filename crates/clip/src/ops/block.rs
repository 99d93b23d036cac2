//! A whole pre-LN residual block as one op, llm.c-style: x + attn(ln_1(x)), then + mlp(ln_2(·)),
//! forward and backward written out over plain buffers with the kernels of the other op
//! modules. candle sees one graph node per block instead of about twenty, so its autograd does
//! not allocate a zeroed gradient and add into it for every intermediate tensor. Work is split
//! by whole batch elements (~256 rows per rayon task), each task taking its rows through every
//! stage with single-threaded `gemm` calls, so intermediates stay in cache. The activations the
//! backward needs ([`Acts`]) are kept inside the op (not recomputed); under
//! [`inference`](super::inference) they are not kept, and a backward through such a block is
//! an error.

use std::sync::{Arc, Mutex, OnceLock};

use candle_core::{bail, CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::accumulate::par_accumulate;
use super::attention::{attention, attn_bwd_one, attn_fwd_one, Dims};
use super::block_params::{pack, packed_len, run_bwd, take_saved, Grads, Weights};
use super::block_params::{BlockCfg, BlockParams};
use super::block_tail::{tail_bwd, tail_fwd, DxKept, KeptWeights, Tail, TailKept, TailScratch};
use super::cpu::{contiguous_f32, fused_ok};
use super::frozen::prepared;
use super::gemm::Kept;
use super::linear::linear;
use super::mode::in_inference;
use super::norm::{layer_norm, ln_bwd_row, ln_param_grads_into, ln_row};
use super::rows::{add_into, affine, affine_dx, affine_param_grads, elems_per_task};
use super::rows::{carve, task_rows, task_rows_mut, with_scratch};

/// x `[B, T, W]` → `[B, T, W]` through one residual block, as one op (CPU, f32).
pub fn residual_block(x: &Tensor, p: &BlockParams, cfg: &BlockCfg) -> Result<Tensor> {
    if !fused_ok(x) {
        return residual_block_composed(x, p, cfg);
    }
    let (packed, kept) = prepared(&p.list(), || pack(p, cfg))?;
    x.contiguous()?.apply_op2(
        &packed,
        BlockOp {
            cfg: *cfg,
            saved: Mutex::new(None),
            kept,
        },
    )
}

/// The same block out of the separate ops (the reference, and the non-CPU path).
pub fn residual_block_composed(x: &Tensor, p: &BlockParams, cfg: &BlockCfg) -> Result<Tensor> {
    let (b, t, w) = x.dims3()?;
    let eps = cfg.eps as f64;
    let rows = |y: &Tensor| y.reshape((b * t, y.dim(2)?));
    let h = layer_norm(x, p.ln_1_weight, p.ln_1_bias, eps)?; // [B, T, W]
    let qkv = linear(&rows(&h)?, p.in_proj_weight, p.in_proj_bias)?; // [B·T, 3W]
    let att = attention(&qkv.reshape((b, t, 3 * w))?, cfg.heads, cfg.causal)?; // [B, T, W]
    let att = linear(&rows(&att)?, p.out_proj_weight, p.out_proj_bias)?; // [B·T, W]
    let x1 = (x + att.reshape((b, t, w))?)?; // [B, T, W]
    let h = layer_norm(&x1, p.ln_2_weight, p.ln_2_bias, eps)?; // [B, T, W]
    let h = linear(&rows(&h)?, p.c_fc_weight, p.c_fc_bias)?; // [B·T, M]
    let h = cfg.act.forward(&h)?; // [B·T, M]
    let h = linear(&h, p.c_proj_weight, p.c_proj_bias)?; // [B·T, W]
    &x1 + h.reshape((b, t, w))?
}

/// The block's activations over r rows, what the backward reads (llm.c's `ActivationTensors`):
/// every buffer and its width declared once, in [`Acts::widths`].
struct Acts<S> {
    /// `[r, W]` ln_1(x).
    ln1: S,
    /// `[r, 3W]` q | k | v.
    qkv: S,
    /// Attention output, x1, ln_2, the MLP's hidden rows.
    tail: Tail<S>,
}

impl<S> Acts<S> {
    /// Values per row of each buffer, in [`Acts::from_array`] order.
    fn widths(c: &BlockCfg) -> [usize; 7] {
        let [att, x1, ln2, hpre, hact] = Tail::<S>::widths(c);
        [c.width, 3 * c.width, att, x1, ln2, hpre, hact]
    }

    fn from_array([ln1, qkv, att, x1, ln2, hpre, hact]: [S; 7]) -> Self {
        Self {
            ln1,
            qkv,
            tail: Tail::from_array([att, x1, ln2, hpre, hact]),
        }
    }
}

impl Acts<Vec<f32>> {
    fn zeros(r: usize, c: &BlockCfg) -> Self {
        Self::from_array(Self::widths(c).map(|k| vec![0f32; r * k]))
    }

    /// Each task's rows (`rows` a task), to write.
    fn tasks_mut(&mut self, c: &BlockCfg, rows: usize) -> Vec<Acts<&mut [f32]>> {
        let bufs = self.each_mut().map(|v| &mut v[..]);
        let tasks = task_rows_mut(bufs, Self::widths(c), rows);
        tasks.into_iter().map(Acts::from_array).collect()
    }

    /// Each task's rows (`rows` a task), to read.
    fn tasks(&self, c: &BlockCfg, rows: usize) -> Vec<Acts<&[f32]>> {
        let t = &self.tail;
        let bufs = [
            &self.ln1, &self.qkv, &t.att, &t.x1, &t.ln2, &t.hpre, &t.hact,
        ]
        .map(|v| &v[..]);
        let tasks = task_rows(bufs, Self::widths(c), rows);
        tasks.into_iter().map(Acts::from_array).collect()
    }

    fn each_mut(&mut self) -> [&mut Vec<f32>; 7] {
        let t = &mut self.tail;
        [
            &mut self.ln1,
            &mut self.qkv,
            &mut t.att,
            &mut t.x1,
            &mut t.ln2,
            &mut t.hpre,
            &mut t.hact,
        ]
    }
}

struct BlockOp {
    cfg: BlockCfg,
    saved: Mutex<Option<Acts<Vec<f32>>>>,
    /// Where the kept weights live across calls (inside `FrozenWeights::run`).
    kept: Option<Arc<OnceLock<KeptWeights>>>,
}

fn dims(c: &BlockCfg, t: usize) -> Dims {
    Dims::of(t, c.width, c.heads, c.causal)
}

/// The block over one task's rows x `[r, W]` (whole batch elements of T tokens) → y `[r, W]`.
#[allow(clippy::too_many_arguments)]
fn fwd_rows(
    p: &Weights,
    in_w: &Kept,
    tail: &TailKept,
    c: &BlockCfg,
    t: usize,
    x: &[f32],
    a: Acts<&mut [f32]>,
    y: &mut [f32],
    probs: &mut [f32],
) {
    let w = c.width;
    for (xr, lr) in x.chunks(w).zip(a.ln1.chunks_mut(w)) {
        ln_row(xr, p.ln1_w, p.ln1_b, c.eps, lr); // [r, W]
    }
    affine(a.ln1, in_w, p.in_b, a.qkv); // [r, 3W]
    let d = dims(c, t);
    for (qe, oe) in a.qkv.chunks(t * 3 * w).zip(a.tail.att.chunks_mut(t * w)) {
        attn_fwd_one(qe, d, oe, probs); // [T, W] per element
    }
    tail_fwd(p, tail, c, x, a.tail, y);
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
        let packed = contiguous_f32(s2, l2, self.name())?;
        let (b, t, w) = l1.shape().dims3()?;
        let c = &self.cfg;
        if w != c.width {
            bail!("residual block: input width {w}, block width {}", c.width);
        }
        let p = Weights::of(packed, c);
        let mut slot = None;
        let kept = KeptWeights::get_or_build(self.kept.as_deref(), &mut slot, || KeptWeights {
            head: vec![Kept::transposed(p.in_w, 3 * w)],
            tail: TailKept::of(&p, c),
        });
        let (in_w, tail) = (&kept.head[0], &kept.tail);
        let rows = elems_per_task(b, t) * t; // rows per task
        let mut y = vec![0f32; b * t * w]; // [R, W]
        let (ys, xs) = (y.par_chunks_mut(rows * w), x.par_chunks(rows * w));
        if in_inference() {
            ys.zip(xs).for_each(|(yc, xc)| {
                let n = xc.len() / w;
                let lens = Acts::<()>::widths(c).map(|k| n * k);
                with_scratch(lens.iter().sum::<usize>() + t * t, |buf| {
                    let (acts, probs) = buf.split_at_mut(lens.iter().sum());
                    let acts = Acts::from_array(carve(acts, lens));
                    fwd_rows(&p, in_w, tail, c, t, xc, acts, yc, probs);
                })
            });
        } else {
            let mut s = Acts::zeros(b * t, c);
            (ys, xs, s.tasks_mut(c, rows))
                .into_par_iter()
                .for_each_init(
                    || vec![0f32; t * t],
                    |probs, (yc, xc, acts)| fwd_rows(&p, in_w, tail, c, t, xc, acts, yc, probs),
                );
            *self.saved.lock().expect("block activations lock") = Some(s);
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
        let bwd = BlockBwdOp {
            cfg: self.cfg,
            saved: take_saved(&self.saved, "residual block")?,
        };
        run_bwd(x, packed, dy, &bwd)
    }
}

/// (x, packed parameters, dy) → dx then d(packed parameters), one vector.
struct BlockBwdOp {
    cfg: BlockCfg,
    saved: Acts<Vec<f32>>,
}

/// A task's backward scratch: the tail's, four row blocks and two `[T, T]` probability
/// blocks; allocated once per group of tasks.
struct BwdScratch {
    tail: TailScratch,
    dx1: Vec<f32>,   // [r, W]
    datt: Vec<f32>,  // [r, W]
    dln1: Vec<f32>,  // [r, W]
    dqkv: Vec<f32>,  // [r, 3W]
    probs: Vec<f32>, // [T, T]
    ds: Vec<f32>,    // [T, T]
}

impl BwdScratch {
    fn new(rows: usize, c: &BlockCfg, t: usize) -> Self {
        let z = |n: usize| vec![0f32; n];
        let w = c.width;
        Self {
            tail: TailScratch::new(rows, c),
            dx1: z(rows * w),
            datt: z(rows * w),
            dln1: z(rows * w),
            dqkv: z(rows * 3 * w),
            probs: z(t * t),
            ds: z(t * t),
        }
    }
}

/// The block's backward over one task's rows: writes dx `[r, W]`, adds the parameters'
/// gradients to `g`; with `dk`, its weight products in bf16.
#[allow(clippy::too_many_arguments)]
fn bwd_rows(
    p: &Weights,
    dk: Option<&DxKept>,
    c: &BlockCfg,
    t: usize,
    x: &[f32],
    dy: &[f32],
    s: Acts<&[f32]>,
    dx: &mut [f32],
    g: &mut Grads,
    sc: &mut BwdScratch,
) {
    let w = c.width;
    let r = x.len() / w;
    let (dx1, datt) = (&mut sc.dx1[..r * w], &mut sc.datt[..r * w]);
    let (dln1, dqkv) = (&mut sc.dln1[..r * w], &mut sc.dqkv[..r * 3 * w]);
    tail_bwd(p, dk, c, &s.tail, dy, g, &mut sc.tail, dx1, datt); // dx1, datt [r, W]

    // Attention: x1 = x + out_proj(attn(qkv)), qkv = ln1·in_projᵀ + b.
    let d = dims(c, t);
    let elems = s.qkv.chunks(t * 3 * w).zip(s.tail.att.chunks(t * w));
    for ((qe, oe), (ge, de)) in elems.zip(datt.chunks(t * w).zip(dqkv.chunks_mut(t * 3 * w))) {
        attn_bwd_one(qe, oe, ge, d, de, &mut sc.probs, &mut sc.ds); // [T, 3W] per element
    }
    affine_param_grads(dqkv, s.ln1, g.in_w, g.in_b, dk.is_some());
    affine_dx(dqkv, p.in_w, dk.map(|k| &k.in_w), 3 * w, dln1); // [r, W]
    for ((xr, gr), dr) in x.chunks(w).zip(dln1.chunks(w)).zip(dx.chunks_mut(w)) {
        ln_bwd_row(xr, p.ln1_w, gr, c.eps, dr);
    }
    add_into(dx, dx1);
    ln_param_grads_into(x, dln1, w, c.eps, g.ln1_w, g.ln1_b);
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
        let packed = contiguous_f32(s2, l2, self.name())?;
        let dy = contiguous_f32(s3, l3, self.name())?;
        let (b, t, w) = l1.shape().dims3()?;
        let c = &self.cfg;
        let p = Weights::of(packed, c);
        let dk = DxKept::when_bf16(&p, c);
        let n = b * t * w;
        let rows = elems_per_task(b, t) * t;
        let len = n + packed_len(c);
        let mut out = vec![0f32; len]; // [dx | d(parameters)]
        let (dx, dp) = out.split_at_mut(n);
        let tasks = (
            dx.par_chunks_mut(rows * w),
            x.par_chunks(rows * w),
            dy.par_chunks(rows * w),
            self.saved.tasks(c, rows),
        );
        par_accumulate(
            tasks.into_par_iter(),
            dp,
            || BwdScratch::new(rows, c, t),
            |(dxc, xc, dyc, s), g, sc| {
                bwd_rows(
                    &p,
                    dk.as_ref(),
                    c,
                    t,
                    xc,
                    dyc,
                    s,
                    dxc,
                    &mut Grads::of(g, c),
                    sc,
                );
            },
        );
        Ok((CpuStorage::F32(out), Shape::from(len)))
    }
}
