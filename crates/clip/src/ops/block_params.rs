//! A residual block's shape and parameters as the fused block ops see them: the twelve
//! parameters packed into one vector `[P]` (one op input, one gradient), sliced back by name.

use std::sync::Mutex;

use candle_core::{bail, CustomOp3, Result, Tensor};

use super::activation::Activation;

/// The shape of one block.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BlockCfg {
    /// W, the residual stream's width.
    pub width: usize,
    /// H, attention heads (W/H each).
    pub heads: usize,
    /// M, the MLP's hidden width.
    pub hidden: usize,
    pub act: Activation,
    /// Token i attends to tokens ≤ i only (the text tower).
    pub causal: bool,
    /// LayerNorm's ε.
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
    pub(super) fn list(&self) -> [&Tensor; 12] {
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

/// Offsets of the twelve parameters in the packed vector (width `w`, MLP width `m`), and P.
fn offsets(w: usize, m: usize) -> ([usize; 12], usize) {
    let sizes = [w, w, 3 * w * w, 3 * w, w * w, w, w, w, m * w, m, w * m, w];
    let mut off = [0; 12];
    let mut acc = 0;
    for (o, s) in off.iter_mut().zip(sizes) {
        *o = acc;
        acc += s;
    }
    (off, acc)
}

/// P, the length of the packed vector.
pub(super) fn packed_len(c: &BlockCfg) -> usize {
    offsets(c.width, c.hidden).1
}

/// The twelve parameters as one vector `[P]`, in [`BlockParams`] order.
pub(super) fn pack(p: &BlockParams, cfg: &BlockCfg) -> Result<Tensor> {
    let flat = p
        .list()
        .iter()
        .map(|t| t.flatten_all())
        .collect::<Result<Vec<_>>>()?;
    let packed = Tensor::cat(&flat, 0)?; // [P]
    if packed.dim(0)? != packed_len(cfg) {
        bail!(
            "residual block: parameters hold {} values, width {} and hidden {} need {}",
            packed.dim(0)?,
            cfg.width,
            cfg.hidden,
            packed_len(cfg)
        );
    }
    Ok(packed)
}

/// The twelve parameters (or their gradients) sliced out of a packed vector by name; layer
/// norms as gain then bias.
pub(super) struct Parts<S> {
    pub(super) ln1_w: S,
    pub(super) ln1_b: S,
    pub(super) in_w: S,
    pub(super) in_b: S,
    pub(super) out_w: S,
    pub(super) out_b: S,
    pub(super) ln2_w: S,
    pub(super) ln2_b: S,
    pub(super) fc_w: S,
    pub(super) fc_b: S,
    pub(super) proj_w: S,
    pub(super) proj_b: S,
}

impl<S> Parts<S> {
    fn from_array(
        [ln1_w, ln1_b, in_w, in_b, out_w, out_b, ln2_w, ln2_b, fc_w, fc_b, proj_w, proj_b]: [S; 12],
    ) -> Self {
        Self {
            ln1_w,
            ln1_b,
            in_w,
            in_b,
            out_w,
            out_b,
            ln2_w,
            ln2_b,
            fc_w,
            fc_b,
            proj_w,
            proj_b,
        }
    }
}

/// The parameters, read.
pub(super) type Weights<'a> = Parts<&'a [f32]>;
/// The parameters' gradients, added into.
pub(super) type Grads<'a> = Parts<&'a mut [f32]>;

impl<'a> Weights<'a> {
    /// Slices the packed vector `p` `[P]`.
    pub(super) fn of(p: &'a [f32], c: &BlockCfg) -> Self {
        let (o, _) = offsets(c.width, c.hidden);
        Self::from_array(std::array::from_fn(|i| match o.get(i + 1) {
            Some(&end) => &p[o[i]..end],
            None => &p[o[i]..],
        }))
    }
}

impl<'a> Grads<'a> {
    /// Cuts the packed gradient vector `g` `[P]`.
    pub(super) fn of(g: &'a mut [f32], c: &BlockCfg) -> Self {
        let (o, _) = offsets(c.width, c.hidden);
        let mut rest = g;
        Self::from_array(std::array::from_fn(|i| {
            let len = o.get(i + 1).map_or(rest.len(), |&end| end - o[i]);
            let (head, tail) = std::mem::take(&mut rest).split_at_mut(len);
            rest = tail;
            head
        }))
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
