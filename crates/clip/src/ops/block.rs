//! A whole pre-LN residual block as one op, llm.c-style: x + attn(ln_1(x)), then + mlp(ln_2(·)),
//! forward and backward written out over plain buffers with the kernels of the other op
//! modules. candle sees one graph node per block instead of about twenty, so its autograd no
//! longer allocates a zeroed gradient and adds into it for every intermediate tensor. Work is
//! split by whole batch elements (~256 rows per rayon task), each task taking its rows through
//! every stage with single-threaded `gemm` calls, so intermediates stay in cache. The
//! activations the backward needs are kept inside the op (not recomputed); under
//! [`inference`] they are not kept, and a backward through such a block is an error.

use std::cell::{Cell, RefCell};
use std::sync::Mutex;

use candle_core::{bail, CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::accumulate::par_accumulate;
use super::activation::{act_fwd_slice, act_grad_slice, Act};
use super::attention::{attn_bwd_one, attn_fwd_one, Dims};
use super::gemm::{matmul_kept, matmul_serial_into, Kept, View};
use super::norm::{ln_bwd_row, ln_param_grads_into, ln_row};
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
pub(super) fn offsets(w: usize, h: usize) -> ([usize; 12], usize) {
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
    x.contiguous()?.apply_op2(
        &pack(p, cfg)?,
        BlockOp {
            cfg,
            saved: Mutex::new(None),
        },
    )
}

/// The twelve parameters as one vector `[P]`, in [`offsets`] order (one op input, one gradient).
pub(super) fn pack(p: &BlockParams, cfg: BlockCfg) -> Result<Tensor> {
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
    Ok(packed)
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

impl Saved {
    fn zeros(r: usize, w: usize, h: usize) -> Self {
        let z = |n: usize| vec![0f32; n];
        Self {
            ln1: z(r * w),
            qkv: z(r * 3 * w),
            att: z(r * w),
            x1: z(r * w),
            ln2: z(r * w),
            hpre: z(r * h),
            hact: z(r * h),
        }
    }
}

struct BlockOp {
    cfg: BlockCfg,
    saved: Mutex<Option<Saved>>,
}

impl BlockCfg {
    pub(super) fn act(&self) -> Act {
        if self.quick_gelu {
            Act::QuickGelu
        } else {
            Act::Gelu
        }
    }

    fn dims(&self, t: usize) -> Dims {
        Dims::of(t, self.width, self.heads, self.causal)
    }
}

/// Batch elements per task, for `b` elements of `t` tokens: whole elements (attention mixes an
/// element's rows), about 256 rows — enough for `gemm` to run well on one thread, few enough
/// that a task's intermediates stay in cache. Each task runs the whole block over its rows, so
/// the element-wise passes (bias, LayerNorm, activation, residual adds) read what the product
/// before them just wrote. When that makes only a few tasks, their count is rounded up to a
/// multiple of the threads, so that no thread is left alone with a last odd task.
pub(super) fn elems_per_task(b: usize, t: usize) -> usize {
    let per = 256usize.div_ceil(t.max(1));
    let tasks = b.div_ceil(per);
    let threads = rayon::current_num_threads().max(1);
    if tasks >= 4 * threads {
        return per;
    }
    b.div_ceil(tasks.div_ceil(threads) * threads).max(1)
}

/// The twelve parameters, sliced out of the packed vector.
pub(super) struct Weights<'a> {
    pub(super) ln1_w: &'a [f32],
    pub(super) ln1_b: &'a [f32],
    pub(super) in_w: &'a [f32],
    pub(super) in_b: &'a [f32],
    pub(super) out_w: &'a [f32],
    pub(super) out_b: &'a [f32],
    pub(super) ln2_w: &'a [f32],
    pub(super) ln2_b: &'a [f32],
    pub(super) fc_w: &'a [f32],
    pub(super) fc_b: &'a [f32],
    pub(super) proj_w: &'a [f32],
    pub(super) proj_b: &'a [f32],
}

impl<'a> Weights<'a> {
    pub(super) fn of(p: &'a [f32], w: usize, h: usize) -> Self {
        let (o, _) = offsets(w, h);
        Self {
            ln1_w: &p[o[0]..o[1]],
            ln1_b: &p[o[1]..o[2]],
            in_w: &p[o[2]..o[3]],
            in_b: &p[o[3]..o[4]],
            out_w: &p[o[4]..o[5]],
            out_b: &p[o[5]..o[6]],
            ln2_w: &p[o[6]..o[7]],
            ln2_b: &p[o[7]..o[8]],
            fc_w: &p[o[8]..o[9]],
            fc_b: &p[o[9]..o[10]],
            proj_w: &p[o[10]..o[11]],
            proj_b: &p[o[11]..],
        }
    }
}

/// What one forward call reads: the parameters, and the four product weights transposed and
/// kept ([`Kept`]) for every task's products.
pub(super) struct FwdWeights<'a> {
    pub(super) p: &'a Weights<'a>,
    pub(super) in_w: Kept,
    pub(super) out_w: Kept,
    pub(super) fc_w: Kept,
    pub(super) proj_w: Kept,
}

impl<'a> Weights<'a> {
    /// With the four product weights as `Wᵀ`, for the forward's `x·Wᵀ` (`w` width, `h` hidden).
    pub(super) fn for_forward(&'a self, w: usize, h: usize) -> FwdWeights<'a> {
        FwdWeights {
            p: self,
            in_w: Kept::transposed(self.in_w, 3 * w),
            out_w: Kept::transposed(self.out_w, w),
            fc_w: Kept::transposed(self.fc_w, h),
            proj_w: Kept::transposed(self.proj_w, w),
        }
    }
}

/// One task's activations: rows of the kept buffers, or of scratch under [`inference`].
struct Acts<'a> {
    ln1: &'a mut [f32],
    qkv: &'a mut [f32],
    att: &'a mut [f32],
    x1: &'a mut [f32],
    ln2: &'a mut [f32],
    hpre: &'a mut [f32],
    hact: &'a mut [f32],
}

impl<'a> Acts<'a> {
    /// From the seven buffers in field order: ln1, qkv, att, x1, ln2, hpre, hact.
    fn of([ln1, qkv, att, x1, ln2, hpre, hact]: [&'a mut [f32]; 7]) -> Self {
        Self {
            ln1,
            qkv,
            att,
            x1,
            ln2,
            hpre,
            hact,
        }
    }
}

/// `y = x·Wᵀ + b` for x `[rows, in]`, W `[out, in]` (kept as Wᵀ: [`Kept::transposed`]), on the
/// calling thread, into y `[rows, out]`.
pub(super) fn affine(x: &[f32], w: &Kept, b: &[f32], y: &mut [f32]) {
    let dout = w.cols();
    y.chunks_mut(dout).for_each(|r| r.copy_from_slice(b));
    matmul_kept(x, w, y, dout, true);
}

/// `y = res + b + x·Wᵀ` for x `[rows, in]`, W `[out, in]`, res and y `[rows, out]`: the residual
/// and the bias in one pass, the product accumulated onto them (one pass fewer than
/// [`affine`] then [`add_into`]).
pub(super) fn affine_onto(x: &[f32], w: &Kept, b: &[f32], res: &[f32], y: &mut [f32]) {
    let dout = w.cols();
    for (yr, rr) in y.chunks_mut(dout).zip(res.chunks(dout)) {
        yr.iter_mut()
            .zip(rr.iter().zip(b))
            .for_each(|(o, (r, b))| *o = r + b);
    }
    matmul_kept(x, w, y, dout, true);
}

/// `hpre = x·Wᵀ + b` and `hact = act(hpre)`: the bias added in the activation's pass instead
/// of written before the product.
fn affine_act(act: Act, x: &[f32], w: &Kept, b: &[f32], hpre: &mut [f32], hact: &mut [f32]) {
    let dout = w.cols();
    matmul_kept(x, w, hpre, dout, false);
    for (pr, ar) in hpre.chunks_mut(dout).zip(hact.chunks_mut(dout)) {
        add_into(pr, b);
        act_fwd_slice(act, pr, ar);
    }
}

/// `a += b`.
pub(super) fn add_into(a: &mut [f32], b: &[f32]) {
    a.iter_mut().zip(b).for_each(|(u, v)| *u += v);
}

/// The block over one task's rows x `[r, W]` (whole batch elements of T tokens) → y `[r, W]`.
fn fwd_rows(
    pt: &FwdWeights,
    c: &BlockCfg,
    t: usize,
    x: &[f32],
    a: Acts,
    y: &mut [f32],
    probs: &mut [f32],
) {
    let (w, p) = (c.width, pt.p);
    for (xr, lr) in x.chunks(w).zip(a.ln1.chunks_mut(w)) {
        ln_row(xr, p.ln1_w, p.ln1_b, c.eps, lr); // [r, W]
    }
    affine(a.ln1, &pt.in_w, p.in_b, a.qkv); // [r, 3W]
    let d = c.dims(t);
    for (qe, oe) in a.qkv.chunks(t * 3 * w).zip(a.att.chunks_mut(t * w)) {
        attn_fwd_one(qe, d, oe, probs); // [T, W] per element
    }
    affine_onto(a.att, &pt.out_w, p.out_b, x, a.x1); // x1 = x + attention branch, [r, W]
    for (xr, lr) in a.x1.chunks(w).zip(a.ln2.chunks_mut(w)) {
        ln_row(xr, p.ln2_w, p.ln2_b, c.eps, lr); // [r, W]
    }
    affine_act(c.act(), a.ln2, &pt.fc_w, p.fc_b, a.hpre, a.hact); // [r, H] twice
    affine_onto(a.hact, &pt.proj_w, p.proj_b, a.x1, y); // [r, W]
}

thread_local! {
    /// Each thread's scratch for blocks under [`inference`], kept from call to call (it only
    /// grows): a fresh zeroed buffer per task was a `memset` of every intermediate, each block.
    static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` on `len` values of this thread's scratch (contents unspecified). Should `f` reach
/// here again on the same thread, the inner call gets a fresh buffer.
fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut v) => {
            if v.len() < len {
                v.resize(len, 0.0);
            }
            f(&mut v[..len])
        }
        Err(_) => f(&mut vec![0f32; len]),
    })
}

/// Cuts `buf` into consecutive slices of the given lengths.
fn carve<const N: usize>(mut buf: &mut [f32], lens: [usize; N]) -> [&mut [f32]; N] {
    lens.map(|n| {
        let (head, rest) = std::mem::take(&mut buf).split_at_mut(n);
        buf = rest;
        head
    })
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
        let (hd, r) = (c.hidden, b * t);
        let wts = Weights::of(p, w, hd);
        let wt = wts.for_forward(w, hd);
        let rows = elems_per_task(b, t) * t; // rows per task
        let mut y = vec![0f32; r * w]; // [R, W]
        if INFERENCE.with(|f| f.get()) {
            y.par_chunks_mut(rows * w)
                .zip(x.par_chunks(rows * w))
                .for_each(|(yc, xc)| {
                    let n = xc.len() / w;
                    let lens = [n * w, n * 3 * w, n * w, n * w, n * w, n * hd, n * hd, t * t];
                    with_scratch(lens.iter().sum(), |buf| {
                        let [ln1, qkv, att, x1, ln2, hpre, hact, probs] = carve(buf, lens);
                        let acts = Acts::of([ln1, qkv, att, x1, ln2, hpre, hact]);
                        fwd_rows(&wt, &c, t, xc, acts, yc, probs);
                    })
                });
            return Ok((CpuStorage::F32(y), l1.shape().clone()));
        }
        let mut s = Saved::zeros(r, w, hd);
        (
            y.par_chunks_mut(rows * w),
            x.par_chunks(rows * w),
            s.ln1.par_chunks_mut(rows * w),
            s.qkv.par_chunks_mut(rows * 3 * w),
            s.att.par_chunks_mut(rows * w),
            s.x1.par_chunks_mut(rows * w),
            s.ln2.par_chunks_mut(rows * w),
            s.hpre.par_chunks_mut(rows * hd),
            s.hact.par_chunks_mut(rows * hd),
        )
            .into_par_iter()
            .for_each_init(
                || vec![0f32; t * t],
                |probs, (yc, xc, ln1, qkv, att, x1, ln2, hpre, hact)| {
                    let acts = Acts::of([ln1, qkv, att, x1, ln2, hpre, hact]);
                    fwd_rows(&wt, &c, t, xc, acts, yc, probs);
                },
            );
        *self.saved.lock().expect("block activations lock") = Some(s);
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

/// The activations a forward pass kept, once: an error if there are none.
pub(super) fn take_saved<S>(saved: &Mutex<Option<S>>, op: &str) -> Result<S> {
    match saved.lock().expect("block activations lock").take() {
        Some(s) => Ok(s),
        None => bail!(
            "{op}: no activations kept for backward (run under ops::inference, or a second \
             backward through the same graph)"
        ),
    }
}

/// Runs a block's backward op on (x `[B, T, W]`, packed parameters `[P]`, dy), which returns
/// dx and d(parameters) as one vector `[B·T·W + P]`, and splits it.
pub(super) fn run_bwd(
    x: &Tensor,
    packed: &Tensor,
    dy: &Tensor,
    op: &impl CustomOp3,
) -> Result<(Option<Tensor>, Option<Tensor>)> {
    let (b, t, w) = x.dims3()?;
    let g = x.apply_op3_no_bwd(packed, &dy.contiguous()?, op)?; // [R·W + P]
    let n = b * t * w;
    let dx = g.narrow(0, 0, n)?.reshape((b, t, w))?;
    let dp = g.narrow(0, n, packed.dim(0)?)?;
    Ok((Some(dx), Some(dp)))
}

/// (x, packed parameters, dy) → dx then d(packed parameters), one vector.
struct BlockBwdOp {
    cfg: BlockCfg,
    saved: Saved,
}

/// One task's rows of what the forward pass kept.
struct SavedRows<'a> {
    ln1: &'a [f32],
    qkv: &'a [f32],
    att: &'a [f32],
    x1: &'a [f32],
    ln2: &'a [f32],
    hpre: &'a [f32],
    hact: &'a [f32],
}

/// A task's backward scratch: dh `[r, H]`, four `[r, W]` row blocks, dqkv `[r, 3W]` and two
/// `[T, T]` probability blocks; allocated once per rayon job, reused across its tasks.
struct BwdScratch {
    dh: Vec<f32>,
    dln2: Vec<f32>,
    dx1: Vec<f32>,
    datt: Vec<f32>,
    dln1: Vec<f32>,
    dqkv: Vec<f32>,
    p: Vec<f32>,
    ds: Vec<f32>,
}

impl BwdScratch {
    fn new(rows: usize, c: &BlockCfg, t: usize) -> Self {
        let z = |n: usize| vec![0f32; n];
        let w = c.width;
        Self {
            dh: z(rows * c.hidden),
            dln2: z(rows * w),
            dx1: z(rows * w),
            datt: z(rows * w),
            dln1: z(rows * w),
            dqkv: z(rows * 3 * w),
            p: z(t * t),
            ds: z(t * t),
        }
    }
}

/// Backward of `y = x·Wᵀ + b` over one task's rows: adds dyᵀ·x to `dw` `[out, in]` and the
/// column sums of dy to `db` `[out]`.
pub(super) fn affine_param_grads(dy: &[f32], x: &[f32], dw: &mut [f32], db: &mut [f32]) {
    let dout = db.len();
    let din = dw.len() / dout;
    let rows = dy.len() / dout;
    let (dyt, xv) = (View::rows(dy, rows, dout).t(), View::rows(x, rows, din));
    matmul_serial_into(dyt, xv, dw, din, true);
    for row in dy.chunks(dout) {
        add_into(db, row);
    }
}

/// dx = dy·W `[rows, in]` for W `[out, in]`, on the calling thread, into `dx`.
pub(super) fn affine_dx(dy: &[f32], w: &[f32], dout: usize, dx: &mut [f32]) {
    let din = w.len() / dout;
    let rows = dy.len() / dout;
    let (dyv, wv) = (View::rows(dy, rows, dout), View::rows(w, dout, din));
    matmul_serial_into(dyv, wv, dx, din, false);
}

/// The block's backward over one task's rows: writes dx `[r, W]`, adds the parameters'
/// gradients (packed order) to `g`.
#[allow(clippy::too_many_arguments)]
fn bwd_rows(
    p: &Weights,
    c: &BlockCfg,
    t: usize,
    x: &[f32],
    dy: &[f32],
    s: SavedRows,
    dx: &mut [f32],
    g: &mut [f32],
    sc: &mut BwdScratch,
) {
    let (w, hd) = (c.width, c.hidden);
    let r = x.len() / w;
    let (o, _) = offsets(w, hd);
    let (dh, dln2, dx1) = (
        &mut sc.dh[..r * hd],
        &mut sc.dln2[..r * w],
        &mut sc.dx1[..r * w],
    );
    let (datt, dln1) = (&mut sc.datt[..r * w], &mut sc.dln1[..r * w]);
    let dqkv = &mut sc.dqkv[..r * 3 * w];
    let (g_ln1, rest) = g.split_at_mut(o[2]);
    let (g_in, rest) = rest.split_at_mut(o[4] - o[2]);
    let (g_out, rest) = rest.split_at_mut(o[6] - o[4]);
    let (g_ln2, rest) = rest.split_at_mut(o[8] - o[6]);
    let (g_fc, g_proj) = rest.split_at_mut(o[10] - o[8]);

    // MLP branch: y = x1 + hact·projᵀ + b.
    let (dw, db) = g_proj.split_at_mut(w * hd);
    affine_param_grads(dy, s.hact, dw, db);
    affine_dx(dy, p.proj_w, w, dh); // [r, H]
    act_grad_slice(c.act(), s.hpre, dh);
    let (dw, db) = g_fc.split_at_mut(hd * w);
    affine_param_grads(dh, s.ln2, dw, db);
    affine_dx(dh, p.fc_w, hd, dln2); // [r, W]
    for ((xr, gr), dr) in s.x1.chunks(w).zip(dln2.chunks(w)).zip(dx1.chunks_mut(w)) {
        ln_bwd_row(xr, p.ln2_w, gr, c.eps, dr);
    }
    add_into(dx1, dy); // [r, W]
    ln_param_grads_into(s.x1, dln2, w, c.eps, g_ln2);

    // Attention branch: x1 = x + att·out_projᵀ + b.
    let (dw, db) = g_out.split_at_mut(w * w);
    affine_param_grads(dx1, s.att, dw, db);
    affine_dx(dx1, p.out_w, w, datt); // [r, W]
    let d = c.dims(t);
    for (((qe, oe), ge), de) in s
        .qkv
        .chunks(t * 3 * w)
        .zip(s.att.chunks(t * w))
        .zip(datt.chunks(t * w))
        .zip(dqkv.chunks_mut(t * 3 * w))
    {
        attn_bwd_one(qe, oe, ge, d, de, &mut sc.p, &mut sc.ds); // [T, 3W] per element
    }
    let (dw, db) = g_in.split_at_mut(3 * w * w);
    affine_param_grads(dqkv, s.ln1, dw, db);
    affine_dx(dqkv, p.in_w, 3 * w, dln1); // [r, W]
    for ((xr, gr), dr) in x.chunks(w).zip(dln1.chunks(w)).zip(dx.chunks_mut(w)) {
        ln_bwd_row(xr, p.ln1_w, gr, c.eps, dr);
    }
    add_into(dx, dx1);
    ln_param_grads_into(x, dln1, w, c.eps, g_ln1);
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
        let (_, total) = offsets(w, hd);
        let wts = Weights::of(p, w, hd);
        let n = b * t * w;
        let rows = elems_per_task(b, t) * t;
        let mut out = vec![0f32; n + total]; // [dx | d(parameters)]
        let (dx_out, dp) = out.split_at_mut(n);
        let tasks = (
            dx_out.par_chunks_mut(rows * w),
            x.par_chunks(rows * w),
            dy.par_chunks(rows * w),
            s.ln1.par_chunks(rows * w),
            s.qkv.par_chunks(rows * 3 * w),
            s.att.par_chunks(rows * w),
            s.x1.par_chunks(rows * w),
            s.ln2.par_chunks(rows * w),
            s.hpre.par_chunks(rows * hd),
            s.hact.par_chunks(rows * hd),
        )
            .into_par_iter();
        par_accumulate(
            tasks,
            dp,
            || BwdScratch::new(rows, &c, t),
            |(dxc, xc, dyc, ln1, qkv, att, x1, ln2, hpre, hact), g, sc| {
                let saved = SavedRows {
                    ln1,
                    qkv,
                    att,
                    x1,
                    ln2,
                    hpre,
                    hact,
                };
                bwd_rows(&wts, &c, t, xc, dyc, saved, dxc, g, sc);
            },
        );
        Ok((CpuStorage::F32(out), Shape::from(n + total)))
    }
}
