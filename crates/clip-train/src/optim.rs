//! AdamW with decoupled weight decay, as PyTorch's `torch.optim.AdamW`, with two parameter
//! groups: weights decay; gains, biases, `logit_scale` and embeddings do not. open_clip
//! (`open_clip_train/main.py`) excludes `ndim < 2` or names with "bn"/"ln"/"bias"/"logit_scale";
//! we also exclude the token and positional embeddings, as the paper's "weights only" reads.
//! Its moments are plain tensors, so they checkpoint and resume exactly.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{
    backprop::GradStore, CpuStorage, DType, InplaceOp2, InplaceOp3, Layout, Result, Tensor, Var,
};
use candle_nn::VarMap;
use rayon::prelude::*;

/// Does open_clip exclude this parameter from weight decay?
pub fn excluded_from_decay(name: &str, rank: usize) -> bool {
    rank < 2
        || name.contains("ln_")
        || name.contains("bias")
        || name.contains("logit_scale")
        || name.contains("embedding")
}

#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AdamWParams {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

impl Default for AdamWParams {
    /// The paper's ViT settings: β2 0.98, ε 1e-6, weight decay 0.2.
    fn default() -> Self {
        Self {
            beta1: 0.9,
            beta2: 0.98,
            eps: 1e-6,
            weight_decay: 0.2,
        }
    }
}

struct Slot {
    name: String,
    var: Var,
    decay: bool,
    m: Tensor,
    v: Tensor,
}

impl Slot {
    /// [`AdamW::step`]'s update in place (CPU, f32): three passes over plain buffers — m, v,
    /// then θ — with no allocation, where the composed version runs a dozen candle ops, each a
    /// pass over memory and a fresh tensor (most of it over the 49,408 × W token embedding).
    fn update_cpu(
        &mut self,
        g: &Tensor,
        p: &AdamWParams,
        lr: f64,
        wd: f64,
        bc1: f64,
        bc2: f64,
    ) -> Result<()> {
        let g = g.contiguous()?;
        let moment = |beta: f64, square| Moment {
            beta: beta as f32,
            one_minus_beta: (1.0 - beta) as f32,
            square,
        };
        self.m.inplace_op2(&g, &moment(p.beta1, false))?;
        self.v.inplace_op2(&g, &moment(p.beta2, true))?;
        let update = Update {
            keep: (1.0 - lr * wd) as f32, // decoupled weight decay
            rate: (lr / bc1) as f32,
            inv_sqrt_bc2: (1.0 / bc2.sqrt()) as f32,
            eps: p.eps as f32,
        };
        self.var.as_tensor().inplace_op3(&self.m, &self.v, &update)
    }
}

/// Elements per rayon task in the in-place passes.
const CHUNK: usize = 1 << 14;

/// A contiguous f32 buffer's elements, or an error naming the op.
fn f32_slice<'a>(s: &'a CpuStorage, l: &Layout, op: &str) -> Result<&'a [f32]> {
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&s.as_slice::<f32>()?[a..b]),
        None => candle_core::bail!("{op}: operand must be contiguous"),
    }
}

fn f32_slice_mut<'a>(s: &'a mut CpuStorage, l: &Layout, op: &str) -> Result<&'a mut [f32]> {
    match (s, l.contiguous_offsets()) {
        (CpuStorage::F32(v), Some((a, b))) => Ok(&mut v[a..b]),
        _ => candle_core::bail!("{op}: state must be contiguous f32"),
    }
}

/// m ← β·m + (1 − β)·g, or with g² for the second moment; in place.
struct Moment {
    beta: f32,
    one_minus_beta: f32,
    square: bool,
}

impl InplaceOp2 for Moment {
    fn name(&self) -> &'static str {
        "adamw-moment"
    }

    fn cpu_fwd(
        &self,
        dst: &mut CpuStorage,
        dst_l: &Layout,
        g: &CpuStorage,
        gl: &Layout,
    ) -> Result<()> {
        let g = f32_slice(g, gl, self.name())?;
        let m = f32_slice_mut(dst, dst_l, self.name())?;
        if m.len() != g.len() {
            candle_core::bail!("adamw: {} moments for {} gradients", m.len(), g.len());
        }
        let (b, a) = (self.beta, self.one_minus_beta);
        m.par_chunks_mut(CHUNK)
            .zip(g.par_chunks(CHUNK))
            .for_each(|(m, g)| {
                if self.square {
                    m.iter_mut()
                        .zip(g)
                        .for_each(|(m, &g)| *m = b * *m + a * (g * g));
                } else {
                    m.iter_mut().zip(g).for_each(|(m, &g)| *m = b * *m + a * g);
                }
            });
        Ok(())
    }
}

/// θ ← θ·(1 − lr·wd) − (lr / bc1) · m / (√v / √bc2 + ε); in place.
struct Update {
    keep: f32,
    rate: f32,
    inv_sqrt_bc2: f32,
    eps: f32,
}

impl InplaceOp3 for Update {
    fn name(&self) -> &'static str {
        "adamw-update"
    }

    fn cpu_fwd(
        &self,
        dst: &mut CpuStorage,
        dst_l: &Layout,
        m: &CpuStorage,
        ml: &Layout,
        v: &CpuStorage,
        vl: &Layout,
    ) -> Result<()> {
        let (m, v) = (
            f32_slice(m, ml, self.name())?,
            f32_slice(v, vl, self.name())?,
        );
        let t = f32_slice_mut(dst, dst_l, self.name())?;
        if t.len() != m.len() || t.len() != v.len() {
            candle_core::bail!(
                "adamw: {} parameters, {} and {} moments",
                t.len(),
                m.len(),
                v.len()
            );
        }
        t.par_chunks_mut(CHUNK)
            .zip(m.par_chunks(CHUNK).zip(v.par_chunks(CHUNK)))
            .for_each(|(t, (m, v))| {
                for i in 0..t.len() {
                    let denom = v[i].sqrt() * self.inv_sqrt_bc2 + self.eps;
                    t[i] = t[i] * self.keep - self.rate * (m[i] / denom);
                }
            });
        Ok(())
    }
}

pub struct AdamW {
    slots: Vec<Slot>,
    pub params: AdamWParams,
    /// Optimiser steps taken (PyTorch's per-parameter `step`; shared here).
    pub step: u64,
}

impl AdamW {
    /// All of `varmap`'s parameters, in sorted name order, grouped by `excluded_from_decay`.
    pub fn new(varmap: &VarMap, params: AdamWParams) -> Result<Self> {
        Self::new_for(varmap, params, |_| true)
    }

    /// As [`AdamW::new`], over the parameters whose name `trains` accepts: the others get no
    /// state and no update.
    pub fn new_for(
        varmap: &VarMap,
        params: AdamWParams,
        trains: impl Fn(&str) -> bool,
    ) -> Result<Self> {
        let data = varmap.data().lock().expect("varmap lock");
        let mut names: Vec<&String> = data.keys().filter(|n| trains(n)).collect();
        names.sort();
        let slots = names
            .into_iter()
            .map(|name| {
                let var = data[name].clone();
                Ok(Slot {
                    name: name.clone(),
                    decay: !excluded_from_decay(name, var.rank()),
                    m: var.zeros_like()?,
                    v: var.zeros_like()?,
                    var,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            slots,
            params,
            step: 0,
        })
    }

    /// Names of the parameters that decay, for logging and tests.
    pub fn decayed(&self) -> Vec<&str> {
        self.slots
            .iter()
            .filter(|s| s.decay)
            .map(|s| s.name.as_str())
            .collect()
    }

    /// One update with learning rate `lr`; parameters without a gradient are left alone.
    pub fn step(&mut self, grads: &GradStore, lr: f64) -> Result<()> {
        self.step_with(grads, lr, true)
    }

    /// `fused`: CPU f32 parameters take the one-pass update; otherwise (and off the CPU) the
    /// composed candle ops run. Both are checked against PyTorch.
    fn step_with(&mut self, grads: &GradStore, lr: f64, fused: bool) -> Result<()> {
        self.step += 1;
        let p = self.params;
        let bc1 = 1.0 - p.beta1.powi(self.step as i32);
        let bc2 = 1.0 - p.beta2.powi(self.step as i32);
        for s in &mut self.slots {
            let Some(g) = grads.get(s.var.as_tensor()) else {
                continue;
            };
            // A gradient may still carry a backward graph (candle detaches most, not all);
            // the moments must not, or every step's activations stay alive through them.
            let g = &g.detach();
            let wd = if s.decay { p.weight_decay } else { 0.0 };
            if fused && s.var.device().is_cpu() && s.var.dtype() == DType::F32 {
                s.update_cpu(g, &p, lr, wd, bc1, bc2)?;
                continue;
            }
            s.m = ((&s.m * p.beta1)? + (g * (1.0 - p.beta1))?)?;
            s.v = ((&s.v * p.beta2)? + (g.sqr()? * (1.0 - p.beta2))?)?;
            // θ ← θ·(1 − lr·wd) − (lr / bc1) · m / (√v / √bc2 + ε)
            let theta = (s.var.as_tensor() * (1.0 - lr * wd))?;
            let denom = ((s.v.sqrt()? / bc2.sqrt())? + p.eps)?;
            let update = (s.m.div(&denom)? * (lr / bc1))?;
            s.var.set(&(theta - update)?)?;
        }
        Ok(())
    }

    /// Moments under `m.{name}` / `v.{name}`, for checkpoints.
    pub fn state_tensors(&self) -> Result<HashMap<String, Tensor>> {
        let mut out = HashMap::new();
        for s in &self.slots {
            // Copies: the CPU update changes the moments in place at the next step.
            out.insert(format!("m.{}", s.name), s.m.copy()?);
            out.insert(format!("v.{}", s.name), s.v.copy()?);
        }
        Ok(out)
    }

    /// Restore moments saved by `state_tensors` (read from `origin`); every slot must be
    /// present with its shape.
    pub fn load_state(
        &mut self,
        tensors: &HashMap<String, Tensor>,
        step: u64,
        origin: &Path,
    ) -> crate::Result<()> {
        let bad = |msg: String| crate::TrainError::Checkpoint {
            path: origin.to_path_buf(),
            msg,
        };
        for s in &mut self.slots {
            for (prefix, slot) in [("m", &mut s.m), ("v", &mut s.v)] {
                let key = format!("{prefix}.{}", s.name);
                let t = tensors
                    .get(&key)
                    .ok_or_else(|| bad(format!("optimiser state lacks {key}")))?;
                if t.dims() != slot.dims() {
                    return Err(bad(format!(
                        "optimiser state {key} has shape {:?}, expected {:?}",
                        t.dims(),
                        slot.dims()
                    )));
                }
                // A copy of its own: the CPU update writes into it in place.
                *slot = t
                    .copy()
                    .map_err(|e| bad(format!("optimiser state {key}: {e}")))?;
            }
        }
        self.step = step;
        Ok(())
    }
}

/// Scale all gradients so their global L2 norm is at most `max_norm` (PyTorch
/// `clip_grad_norm_`); returns the norm before clipping.
pub fn clip_grad_norm(varmap: &VarMap, grads: &mut GradStore, max_norm: f64) -> Result<f64> {
    let vars = varmap.all_vars();
    let mut total = 0f64;
    for v in &vars {
        if let Some(g) = grads.get(v.as_tensor()) {
            total += g.sqr()?.sum_all()?.to_scalar::<f32>()? as f64;
        }
    }
    let norm = total.sqrt();
    if max_norm > 0.0 && norm > max_norm {
        let scale = max_norm / (norm + 1e-6);
        for v in &vars {
            if let Some(g) = grads.remove(v.as_tensor()) {
                grads.insert(v.as_tensor(), (g * scale)?);
            }
        }
    }
    Ok(norm)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn matrix(v: &serde_json::Value) -> Vec<f32> {
        match v {
            serde_json::Value::Array(a) => a.iter().flat_map(matrix).collect(),
            x => vec![x.as_f64().unwrap() as f32],
        }
    }

    /// Three steps against PyTorch's `torch.optim.AdamW` (scripts/adamw_fixture.py): a decayed
    /// weight and an undecayed bias whose gradients are ~1e-3, where ε and the bias correction
    /// show; the learning rate changes every step.
    #[test]
    fn matches_torch_adamw() {
        for fused in [true, false] {
            torch_adamw_steps(fused);
        }
    }

    fn torch_adamw_steps(fused: bool) {
        let fx: serde_json::Value =
            serde_json::from_str(include_str!("../../../tests/fixtures/adamw.json")).unwrap();
        let dev = Device::Cpu;
        let varmap = VarMap::new();
        let vb = candle_nn::VarBuilder::from_varmap(&varmap, DType::F32, &dev);
        let w = vb.get((3, 4), "proj.weight").unwrap();
        let b = vb.get(4, "proj.bias").unwrap();
        let vars = varmap.data().lock().unwrap().clone();
        vars["proj.weight"]
            .set(&Tensor::from_vec(matrix(&fx["w0"]), (3, 4), &dev).unwrap())
            .unwrap();
        vars["proj.bias"]
            .set(&Tensor::from_vec(matrix(&fx["b0"]), 4, &dev).unwrap())
            .unwrap();
        let params = AdamWParams {
            weight_decay: 0.2,
            ..AdamWParams::default()
        };
        let mut opt = AdamW::new(&varmap, params).unwrap();
        assert_eq!(opt.decayed(), vec!["proj.weight"]);
        for (i, s) in fx["steps"].as_array().unwrap().iter().enumerate() {
            let mut grads = GradStore::default();
            grads.insert(
                &w,
                Tensor::from_vec(matrix(&s["grad_w"]), (3, 4), &dev).unwrap(),
            );
            grads.insert(&b, Tensor::from_vec(matrix(&s["grad_b"]), 4, &dev).unwrap());
            opt.step_with(&grads, s["lr"].as_f64().unwrap(), fused)
                .unwrap();
            for (name, want) in [("proj.weight", &s["w"]), ("proj.bias", &s["b"])] {
                let got = vars[name].flatten_all().unwrap().to_vec1::<f32>().unwrap();
                for (g, e) in got.iter().zip(matrix(want)) {
                    assert!(
                        (g - e).abs() < 2e-6,
                        "fused {fused} step {i} {name}: {g} vs {e}"
                    );
                }
            }
        }
    }
}
