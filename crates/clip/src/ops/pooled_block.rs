//! The last residual block when only one token per sequence is read after it: the class token
//! of the image tower, the end-of-text token of the text tower. Keys and values are needed for
//! every token, but the query, the attention, out_proj, ln_2 and the MLP only for the pooled
//! row. x `[B, T, W]` → `[B, W]`, the values and gradients of the full block followed by a
//! gather, for 2 of the block's 12 W² products per row (K and V) instead of all 12.
//! Two phases each way: whole batch elements (~256 rows per task) for ln_1 and K, V; then the
//! B pooled rows (32 per task) for everything else, the block's tail ([`super::block_tail`]).

use std::sync::{Arc, Mutex, OnceLock};

use candle_core::{bail, CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::accumulate::par_accumulate;
use super::block::residual_block_composed;
use super::block_params::{pack, packed_len, run_bwd, take_saved, Grads, Weights};
use super::block_params::{BlockCfg, BlockParams};
use super::block_tail::{tail_bwd, tail_fwd, KeptWeights, Tail, TailKept, TailScratch};
use super::cpu::{contiguous_f32, fused_ok};
use super::frozen::prepared;
use super::gemm::Kept;
use super::lanes;
use super::math::exp;
use super::mode::in_inference;
use super::norm::{ln_bwd_row, ln_param_grads_into, ln_row};
use super::rows::{add_into, affine, affine_dx, affine_param_grads, elems_per_task};

/// Pooled rows per task in the second phase.
const POOLED_PER_TASK: usize = 32;

/// x `[B, T, W]` → row `pos[b]` of each element of the block's output, `[B, W]`, as one op
/// that computes only what those rows depend on (CPU, f32).
pub fn residual_block_pooled(
    x: &Tensor,
    p: &BlockParams,
    cfg: &BlockCfg,
    pos: &[usize],
) -> Result<Tensor> {
    let (b, t, w) = x.dims3()?;
    if pos.len() != b {
        bail!("pooled block: {} positions for a batch of {b}", pos.len());
    }
    if let Some(q) = pos.iter().find(|&&q| q >= t) {
        bail!("pooled block: position {q} outside sequences of {t} tokens");
    }
    if w != cfg.width {
        bail!("pooled block: input width {w}, block width {}", cfg.width);
    }
    if !fused_ok(x) {
        return residual_block_pooled_composed(x, p, cfg, pos);
    }
    let (packed, kept) = prepared(&p.list(), || pack(p, cfg))?;
    x.contiguous()?.apply_op2(
        &packed,
        PooledOp {
            cfg: *cfg,
            pos: pos.to_vec(),
            saved: Mutex::new(None),
            kept,
        },
    )
}

/// The full block, then the pooled rows (the reference, and the non-CPU path).
pub fn residual_block_pooled_composed(
    x: &Tensor,
    p: &BlockParams,
    cfg: &BlockCfg,
    pos: &[usize],
) -> Result<Tensor> {
    gather_rows(&residual_block_composed(x, p, cfg)?, pos)
}

/// Row `pos[b]` of every element: `[B, T, W]` → `[B, W]`.
pub fn gather_rows(x: &Tensor, pos: &[usize]) -> Result<Tensor> {
    let (b, t, w) = x.dims3()?;
    let idx: Vec<u32> = pos
        .iter()
        .enumerate()
        .map(|(i, &q)| (i * t + q) as u32)
        .collect();
    let idx = Tensor::from_vec(idx, b, x.device())?; // [B]
    x.reshape((b * t, w))?.index_select(&idx, 0) // [B, W]
}

/// What the backward pass reads, kept from the forward pass.
struct Saved {
    ln1: Vec<f32>,        // [R, W], every row
    kv: Vec<f32>,         // [R, 2W], keys | values, every row
    lnq: Vec<f32>,        // [B, W], ln_1 of the pooled rows
    q: Vec<f32>,          // [B, W], their queries
    probs: Vec<f32>,      // [B, H, T], their attention probabilities
    tail: Tail<Vec<f32>>, // [B, ·], the pooled rows' tail
}

struct PooledOp {
    cfg: BlockCfg,
    pos: Vec<usize>,
    saved: Mutex<Option<Saved>>,
    /// Where the kept weights live across calls (inside `FrozenWeights::run`).
    kept: Option<Arc<OnceLock<KeptWeights>>>,
}

/// Visible keys for the query at position `q` of `t` tokens.
fn keys(c: &BlockCfg, q: usize, t: usize) -> usize {
    if c.causal {
        q + 1
    } else {
        t
    }
}

/// One query against one element's keys and values, every head: q `[W]`, kv `[T, 2W]`
/// (k | v), keys `0..n` visible → att `[W]` and the probabilities `probs` `[H, T]` (0 past n).
fn query_attn_fwd(
    q: &[f32],
    kv: &[f32],
    heads: usize,
    n: usize,
    att: &mut [f32],
    probs: &mut [f32],
) {
    let w = q.len();
    let (dh, t) = (w / heads, probs.len() / heads);
    let scale = (dh as f32).powf(-0.5);
    for h in 0..heads {
        let qh = &q[h * dh..(h + 1) * dh];
        let ph = &mut probs[h * t..(h + 1) * t];
        for (j, s) in ph[..n].iter_mut().enumerate() {
            *s = lanes::dot(qh, &kv[j * 2 * w + h * dh..][..dh]) * scale; // q·k_j / √Dh
        }
        ph[n..].fill(0.0);
        let live = &mut ph[..n];
        let max = lanes::max(live);
        live.iter_mut().for_each(|v| *v = exp(*v - max));
        let inv = 1.0 / lanes::sum(live);
        live.iter_mut().for_each(|v| *v *= inv);
        let oh = &mut att[h * dh..(h + 1) * dh];
        oh.fill(0.0);
        for (j, &pj) in live.iter().enumerate() {
            let v = &kv[j * 2 * w + w + h * dh..][..dh];
            oh.iter_mut().zip(v).for_each(|(o, v)| *o += pj * v); // Σ_j p_j v_j
        }
    }
}

/// Backward of [`query_attn_fwd`]: from datt `[W]`, writes dq `[W]` and dkv `[T, 2W]` (rows
/// past n are 0). `ds` is scratch of at least n values.
#[allow(clippy::too_many_arguments)]
fn query_attn_bwd(
    q: &[f32],
    kv: &[f32],
    probs: &[f32],
    datt: &[f32],
    heads: usize,
    n: usize,
    dq: &mut [f32],
    dkv: &mut [f32],
    ds: &mut [f32],
) {
    let w = q.len();
    let (dh, t) = (w / heads, probs.len() / heads);
    let scale = (dh as f32).powf(-0.5);
    dkv[n * 2 * w..].fill(0.0);
    for h in 0..heads {
        let (qh, gh) = (&q[h * dh..(h + 1) * dh], &datt[h * dh..(h + 1) * dh]);
        let ph = &probs[h * t..h * t + n];
        let ds = &mut ds[..n];
        for (j, d) in ds.iter_mut().enumerate() {
            *d = lanes::dot(gh, &kv[j * 2 * w + w + h * dh..][..dh]); // dp_j = g·v_j
        }
        let s = lanes::dot(ph, ds); // Σ_j p_j dp_j
        ds.iter_mut()
            .zip(ph)
            .for_each(|(d, &pj)| *d = pj * (*d - s) * scale);
        let dqh = &mut dq[h * dh..(h + 1) * dh];
        dqh.fill(0.0);
        for (j, (&d, &pj)) in ds.iter().zip(ph).enumerate() {
            let row = &mut dkv[j * 2 * w..(j + 1) * 2 * w];
            let k = &kv[j * 2 * w + h * dh..][..dh];
            dqh.iter_mut().zip(k).for_each(|(a, k)| *a += d * k); // dq = Σ_j ds_j k_j / √Dh
            let (dk, dv) = row.split_at_mut(w);
            dk[h * dh..(h + 1) * dh]
                .iter_mut()
                .zip(qh)
                .for_each(|(a, q)| *a = d * q); // dk_j = ds_j q / √Dh
            dv[h * dh..(h + 1) * dh]
                .iter_mut()
                .zip(gh)
                .for_each(|(a, g)| *a = pj * g); // dv_j = p_j g
        }
    }
}

/// The residual rows `x[b, pos[b]]` of the elements `xs` `[n, T, W]` → `[n, W]`.
fn pooled_rows(xs: &[f32], pos: &[usize], t: usize, w: usize) -> Vec<f32> {
    let rows = pos.iter().enumerate();
    rows.flat_map(|(i, &q)| &xs[(i * t + q) * w..][..w])
        .copied()
        .collect()
}

impl CustomOp2 for PooledOp {
    fn name(&self) -> &'static str {
        "clip-pooled-residual-block"
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
        let heads = c.heads;
        let p = Weights::of(packed, c);
        let (wq, wkv) = p.in_w.split_at(w * w); // [W, W], [2W, W]
        let (bq, bkv) = p.in_b.split_at(w);
        let mut slot = None;
        let kept = KeptWeights::get_or_build(self.kept.as_deref(), &mut slot, || KeptWeights {
            head: vec![Kept::transposed(wq, w), Kept::transposed(wkv, 2 * w)], // for x·Wᵀ
            tail: TailKept::of(&p, c),
        });
        let (wq_t, wkv_t, tail_kept) = (&kept.head[0], &kept.head[1], &kept.tail);
        let z = |n: usize| vec![0f32; n];
        let mut s = Saved {
            ln1: z(b * t * w),
            kv: z(b * t * 2 * w),
            lnq: z(b * w),
            q: z(b * w),
            probs: z(b * heads * t),
            tail: Tail::zeros(b, c),
        };
        // Phase 1, whole elements: ln_1 and the keys and values of every row.
        let e = elems_per_task(b, t);
        (
            x.par_chunks(e * t * w),
            s.ln1.par_chunks_mut(e * t * w),
            s.kv.par_chunks_mut(e * t * 2 * w),
            s.lnq.par_chunks_mut(e * w),
            self.pos.par_chunks(e),
        )
            .into_par_iter()
            .for_each(|(xc, ln1, kv, lnq, pc)| {
                for (xr, lr) in xc.chunks(w).zip(ln1.chunks_mut(w)) {
                    ln_row(xr, p.ln1_w, p.ln1_b, c.eps, lr); // [r, W]
                }
                affine(ln1, wkv_t, bkv, kv); // [r, 2W]
                for (i, (&q, lq)) in pc.iter().zip(lnq.chunks_mut(w)).enumerate() {
                    lq.copy_from_slice(&ln1[(i * t + q) * w..][..w]);
                }
            });
        // Phase 2, the pooled rows: query, attention, then the tail.
        let n = POOLED_PER_TASK;
        let mut y = z(b * w); // [B, W]
        (
            y.par_chunks_mut(n * w),
            s.q.par_chunks_mut(n * w),
            s.probs.par_chunks_mut(n * heads * t),
            s.tail.tasks_mut(c, n),
            s.lnq.par_chunks(n * w),
            s.kv.par_chunks(n * t * 2 * w),
            (x.par_chunks(n * t * w), self.pos.par_chunks(n)),
        )
            .into_par_iter()
            .for_each(|(yc, q, probs, tail, lnq, kv, (xc, pc))| {
                affine(lnq, wq_t, bq, q); // [n, W]
                for (i, &qp) in pc.iter().enumerate() {
                    query_attn_fwd(
                        &q[i * w..(i + 1) * w],
                        &kv[i * t * 2 * w..(i + 1) * t * 2 * w],
                        heads,
                        keys(c, qp, t),
                        &mut tail.att[i * w..(i + 1) * w],
                        &mut probs[i * heads * t..(i + 1) * heads * t],
                    );
                }
                tail_fwd(&p, tail_kept, c, &pooled_rows(xc, pc, t, w), tail, yc);
                // [n, W]
            });
        if !in_inference() {
            *self.saved.lock().expect("pooled block activations lock") = Some(s);
        }
        Ok((CpuStorage::F32(y), Shape::from((b, w))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        packed: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let bwd = PooledBwdOp {
            cfg: self.cfg,
            pos: self.pos.clone(),
            saved: take_saved(&self.saved, "pooled block")?,
        };
        run_bwd(x, packed, dy, &bwd)
    }
}

/// (x, packed parameters, dy `[B, W]`) → dx then d(packed parameters), one vector.
struct PooledBwdOp {
    cfg: BlockCfg,
    pos: Vec<usize>,
    saved: Saved,
}

/// Scratch for one task of the pooled rows' backward.
struct PooledScratch {
    tail: TailScratch,
    datt: Vec<f32>, // [n, W]
    dq: Vec<f32>,   // [n, W]
    ds: Vec<f32>,   // [T]
}

impl PooledBwdOp {
    /// Phase 2 backward, the pooled rows: the tail, attention, the query. Adds to `dp`; writes
    /// the gradients phase 1 reads: dkv `[B, T, 2W]`, dlnq `[B, W]`, dx1 `[B, W]` (the
    /// residual's, at the pooled rows).
    fn pooled_rows(&self, p: &Weights, t: usize, dy: &[f32], dp: &mut [f32]) -> [Vec<f32>; 3] {
        let (c, s) = (&self.cfg, &self.saved);
        let (w, heads, b) = (c.width, c.heads, self.pos.len());
        let wq = &p.in_w[..w * w];
        let z = |n: usize| vec![0f32; n];
        let (mut dkv, mut dlnq, mut dx1) = (z(b * t * 2 * w), z(b * w), z(b * w));
        let n = POOLED_PER_TASK;
        let tasks2 = (
            (
                dkv.par_chunks_mut(n * t * 2 * w),
                dlnq.par_chunks_mut(n * w),
                dx1.par_chunks_mut(n * w),
                dy.par_chunks(n * w),
                self.pos.par_chunks(n),
            ),
            (
                s.kv.par_chunks(n * t * 2 * w),
                s.lnq.par_chunks(n * w),
                s.q.par_chunks(n * w),
                s.probs.par_chunks(n * heads * t),
                s.tail.tasks(c, n),
            ),
        )
            .into_par_iter();
        par_accumulate(
            tasks2,
            dp,
            || PooledScratch {
                tail: TailScratch::new(n, c),
                datt: z(n * w),
                dq: z(n * w),
                ds: z(t),
            },
            |((dkv, dlnq, dx1, dy, pc), (kv, lnq, q, pr, tail)), g, sc| {
                let r = pc.len();
                let mut g = Grads::of(g, c);
                let (datt, dq) = (&mut sc.datt[..r * w], &mut sc.dq[..r * w]);
                tail_bwd(p, None, c, &tail, dy, &mut g, &mut sc.tail, dx1, datt); // dx1, datt [r, W]
                for (i, &qp) in pc.iter().enumerate() {
                    let kvr = i * t * 2 * w..(i + 1) * t * 2 * w;
                    query_attn_bwd(
                        &q[i * w..(i + 1) * w],
                        &kv[kvr.clone()],
                        &pr[i * heads * t..(i + 1) * heads * t],
                        &datt[i * w..(i + 1) * w],
                        heads,
                        keys(c, qp, t),
                        &mut dq[i * w..(i + 1) * w],
                        &mut dkv[kvr],
                        &mut sc.ds,
                    );
                }
                // q = lnq·W_qᵀ + b_q: the first W rows of in_proj.
                affine_param_grads(dq, lnq, &mut g.in_w[..w * w], &mut g.in_b[..w], false);
                affine_dx(dq, wq, None, w, dlnq); // [r, W]
            },
        );

        [dkv, dlnq, dx1]
    }

    /// Phase 1 backward, whole elements: K, V and ln_1 of every row, and the residual. Writes
    /// dx `[B, T, W]`, adds to `dp`.
    fn elements(
        &self,
        p: &Weights,
        x: &[f32],
        t: usize,
        d: [Vec<f32>; 3],
        dx: &mut [f32],
        dp: &mut [f32],
    ) {
        let (c, s) = (&self.cfg, &self.saved);
        let (w, b) = (c.width, self.pos.len());
        let wkv = &p.in_w[w * w..];
        let [dkv, dlnq, dx1] = d;
        let z = |n: usize| vec![0f32; n];
        let e = elems_per_task(b, t);
        let tasks1 = (
            dx.par_chunks_mut(e * t * w),
            x.par_chunks(e * t * w),
            s.ln1.par_chunks(e * t * w),
            dkv.par_chunks(e * t * 2 * w),
            dlnq.par_chunks(e * w),
            dx1.par_chunks(e * w),
            self.pos.par_chunks(e),
        )
            .into_par_iter();
        par_accumulate(
            tasks1,
            dp,
            || z(e * t * w),
            |(dxc, xc, ln1, dkv, dlnq, dx1, pc), g, dln1| {
                let dln1s = &mut dln1[..xc.len()];
                let g = Grads::of(g, c);
                // k | v = ln1·W_kvᵀ + b_kv: the last 2W rows of in_proj.
                affine_param_grads(dkv, ln1, &mut g.in_w[w * w..], &mut g.in_b[w..], false);
                affine_dx(dkv, wkv, None, 2 * w, dln1s); // [r, W]
                for (i, &qp) in pc.iter().enumerate() {
                    add_into(
                        &mut dln1s[(i * t + qp) * w..][..w],
                        &dlnq[i * w..(i + 1) * w],
                    );
                }
                for ((xr, gr), dr) in xc.chunks(w).zip(dln1s.chunks(w)).zip(dxc.chunks_mut(w)) {
                    ln_bwd_row(xr, p.ln1_w, gr, c.eps, dr);
                }
                for (i, &qp) in pc.iter().enumerate() {
                    add_into(&mut dxc[(i * t + qp) * w..][..w], &dx1[i * w..(i + 1) * w]);
                }
                ln_param_grads_into(xc, dln1s, w, c.eps, g.ln1_w, g.ln1_b);
            },
        );
    }
}

impl CustomOp3 for PooledBwdOp {
    fn name(&self) -> &'static str {
        "clip-pooled-residual-block-bwd"
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
        let dy = contiguous_f32(s3, l3, self.name())?; // [B, W]
        let (b, t, w) = l1.shape().dims3()?;
        let p = Weights::of(packed, &self.cfg);
        let len = b * t * w + packed_len(&self.cfg);
        let mut out = vec![0f32; len]; // [dx | d(parameters)]
        let (dx, dp) = out.split_at_mut(b * t * w);
        let d = self.pooled_rows(&p, t, dy, dp);
        self.elements(&p, x, t, d, dx, dp);
        Ok((CpuStorage::F32(out), Shape::from(len)))
    }
}
