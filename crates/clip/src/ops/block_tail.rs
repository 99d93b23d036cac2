//! The part of a residual block after attention, over rows: x1 = res + out_proj(att), then
//! y = x1 + mlp(ln_2(x1)), forward and backward. Shared by the full block (every row) and the
//! pooled block (the pooled rows only).

use super::activation::act_grad_slice;
use super::block_params::{BlockCfg, Grads, Weights};
use std::sync::OnceLock;

use super::gemm::{Kept, View};
use super::mode::{products, Products};
use super::norm::{ln_bwd_row, ln_param_grads_into, ln_row};
use super::rows::{add_into, affine_act, affine_dx, affine_onto, affine_param_grads};
use super::rows::{task_rows, task_rows_mut};

/// The tail's activations over r rows, in the order the forward writes them; the backward
/// reads them all.
pub(super) struct Tail<S> {
    /// `[r, W]` attention output, before out_proj.
    pub(super) att: S,
    /// `[r, W]` x1 = res + attention branch.
    pub(super) x1: S,
    /// `[r, W]` ln_2(x1).
    pub(super) ln2: S,
    /// `[r, M]` c_fc's output, before the activation.
    pub(super) hpre: S,
    /// `[r, M]` after the activation.
    pub(super) hact: S,
}

impl<S> Tail<S> {
    /// Values per row of each buffer, in field order.
    pub(super) fn widths(c: &BlockCfg) -> [usize; 5] {
        let (w, m) = (c.width, c.hidden);
        [w, w, w, m, m]
    }

    pub(super) fn from_array([att, x1, ln2, hpre, hact]: [S; 5]) -> Self {
        Self {
            att,
            x1,
            ln2,
            hpre,
            hact,
        }
    }
}

impl Tail<Vec<f32>> {
    pub(super) fn zeros(r: usize, c: &BlockCfg) -> Self {
        Self::from_array(Self::widths(c).map(|k| vec![0f32; r * k]))
    }

    /// Each task's rows (`rows` a task), to write.
    pub(super) fn tasks_mut(&mut self, c: &BlockCfg, rows: usize) -> Vec<Tail<&mut [f32]>> {
        let bufs = [
            &mut self.att[..],
            &mut self.x1[..],
            &mut self.ln2[..],
            &mut self.hpre[..],
            &mut self.hact[..],
        ];
        let tasks = task_rows_mut(bufs, Self::widths(c), rows);
        tasks.into_iter().map(Tail::from_array).collect()
    }

    /// Each task's rows (`rows` a task), to read.
    pub(super) fn tasks(&self, c: &BlockCfg, rows: usize) -> Vec<Tail<&[f32]>> {
        let bufs = [&self.att, &self.x1, &self.ln2, &self.hpre, &self.hact].map(|v| &v[..]);
        let tasks = task_rows(bufs, Self::widths(c), rows);
        tasks.into_iter().map(Tail::from_array).collect()
    }
}

/// The product weights a fused op's forward keeps: those before the tail (the block's
/// in-projection; the pooled block's query and key-value ones) and the tail's.
pub(super) struct KeptWeights {
    pub head: Vec<Kept>,
    pub tail: TailKept,
}

impl KeptWeights {
    /// The kept weights from `cell` (built there on first use), or built into `slot`.
    pub(super) fn get_or_build<'a>(
        cell: Option<&'a OnceLock<KeptWeights>>,
        slot: &'a mut Option<KeptWeights>,
        build: impl FnOnce() -> KeptWeights,
    ) -> &'a KeptWeights {
        match cell {
            Some(c) => c.get_or_init(build),
            None => slot.insert(build()),
        }
    }
}

/// The tail's three product weights kept transposed, for the forward's `x·Wᵀ`.
pub(super) struct TailKept {
    out_w: Kept,
    fc_w: Kept,
    proj_w: Kept,
}

impl TailKept {
    pub(super) fn of(p: &Weights, c: &BlockCfg) -> Self {
        Self {
            out_w: Kept::transposed(p.out_w, c.width),
            fc_w: Kept::transposed(p.fc_w, c.hidden),
            proj_w: Kept::transposed(p.proj_w, c.width),
        }
    }
}

/// A block's four weights kept as they are, in bf16, for the backward's `dx = dy·W` under
/// [`autocast_bf16`](super::autocast_bf16): made once per backward op call, on its thread.
pub(super) struct DxKept {
    pub in_w: Kept,
    out_w: Kept,
    fc_w: Kept,
    proj_w: Kept,
}

impl DxKept {
    /// Kept when the calling thread's products are bf16; else `None` (f32 backward).
    pub(super) fn when_bf16(p: &Weights, c: &BlockCfg) -> Option<Self> {
        let (w, m) = (c.width, c.hidden);
        let plain = |data, out, inp| Kept::bf16(View::rows(data, out, inp)); // W [out, in]
        (products() == Products::Bf16).then(|| Self {
            in_w: plain(p.in_w, 3 * w, w),
            out_w: plain(p.out_w, w, w),
            fc_w: plain(p.fc_w, m, w),
            proj_w: plain(p.proj_w, w, m),
        })
    }
}

/// Forward over r rows: reads `a.att` and the residual `res` `[r, W]`, writes the rest of `a`
/// and y `[r, W]`.
pub(super) fn tail_fwd(
    p: &Weights,
    k: &TailKept,
    c: &BlockCfg,
    res: &[f32],
    a: Tail<&mut [f32]>,
    y: &mut [f32],
) {
    let w = c.width;
    affine_onto(a.att, &k.out_w, p.out_b, res, a.x1); // [r, W]
    for (xr, lr) in a.x1.chunks(w).zip(a.ln2.chunks_mut(w)) {
        ln_row(xr, p.ln2_w, p.ln2_b, c.eps, lr); // [r, W]
    }
    affine_act(c.act, a.ln2, &k.fc_w, p.fc_b, a.hpre, a.hact); // [r, M] twice
    affine_onto(a.hact, &k.proj_w, p.proj_b, a.x1, y); // [r, W]
}

/// A tail backward's scratch for up to r rows: dh `[r, M]`, dln2 `[r, W]`.
pub(super) struct TailScratch {
    dh: Vec<f32>,
    dln2: Vec<f32>,
}

impl TailScratch {
    pub(super) fn new(rows: usize, c: &BlockCfg) -> Self {
        Self {
            dh: vec![0f32; rows * c.hidden],
            dln2: vec![0f32; rows * c.width],
        }
    }
}

/// Backward over r rows from dy `[r, W]`: adds the tail's parameter gradients to `g`, writes
/// dres `[r, W]` (the gradient reaching x1, and so the residual input) and datt `[r, W]`.
/// With `dk`, the products run in bf16.
#[allow(clippy::too_many_arguments)]
pub(super) fn tail_bwd(
    p: &Weights,
    dk: Option<&DxKept>,
    c: &BlockCfg,
    s: &Tail<&[f32]>,
    dy: &[f32],
    g: &mut Grads,
    sc: &mut TailScratch,
    dres: &mut [f32],
    datt: &mut [f32],
) {
    let (w, m) = (c.width, c.hidden);
    let r = dy.len() / w;
    let (dh, dln2) = (&mut sc.dh[..r * m], &mut sc.dln2[..r * w]);
    // y = x1 + hact·c_projᵀ + b
    let bf16 = dk.is_some();
    affine_param_grads(dy, s.hact, g.proj_w, g.proj_b, bf16);
    affine_dx(dy, p.proj_w, dk.map(|k| &k.proj_w), w, dh); // [r, M]
    act_grad_slice(c.act, s.hpre, dh);
    affine_param_grads(dh, s.ln2, g.fc_w, g.fc_b, bf16);
    affine_dx(dh, p.fc_w, dk.map(|k| &k.fc_w), m, dln2); // [r, W]
    for ((xr, gr), dr) in s.x1.chunks(w).zip(dln2.chunks(w)).zip(dres.chunks_mut(w)) {
        ln_bwd_row(xr, p.ln2_w, gr, c.eps, dr);
    }
    add_into(dres, dy); // [r, W]
    ln_param_grads_into(s.x1, dln2, w, c.eps, g.ln2_w, g.ln2_b);
    // x1 = res + att·out_projᵀ + b
    affine_param_grads(dres, s.att, g.out_w, g.out_b, bf16);
    affine_dx(dres, p.out_w, dk.map(|k| &k.out_w), w, datt); // [r, W]
}
