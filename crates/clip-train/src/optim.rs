//! AdamW with decoupled weight decay, as PyTorch's `torch.optim.AdamW`, with two parameter
//! groups: weights decay; gains, biases, `logit_scale` and embeddings do not. open_clip
//! (`open_clip_train/main.py`) excludes `ndim < 2` or names with "bn"/"ln"/"bias"/"logit_scale";
//! we also exclude the token and positional embeddings, as the paper's "weights only" reads.
//! Its moments are plain tensors, so they checkpoint and resume exactly.

use std::collections::HashMap;

use candle_core::{backprop::GradStore, DType, Result, Tensor, Var};
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
    /// [`AdamW::step`]'s update in one pass over plain buffers (CPU, f32): θ, m, v and g are
    /// read once, where the composed version runs a dozen candle ops, each a pass over memory
    /// and a fresh tensor (a third of them over the 49,408 × W token embedding).
    fn update_cpu(
        &mut self,
        g: &Tensor,
        p: &AdamWParams,
        lr: f64,
        wd: f64,
        bc1: f64,
        bc2: f64,
    ) -> Result<()> {
        let (shape, dev) = (self.var.shape().clone(), self.var.device().clone());
        let flat = |t: &Tensor| t.flatten_all()?.to_vec1::<f32>();
        let (g, mut m, mut v) = (flat(g)?, flat(&self.m)?, flat(&self.v)?);
        let mut theta = flat(self.var.as_tensor())?;
        let (b1, b2, eps) = (p.beta1 as f32, p.beta2 as f32, p.eps as f32);
        let (a1, a2) = ((1.0 - p.beta1) as f32, (1.0 - p.beta2) as f32);
        let keep = (1.0 - lr * wd) as f32; // decoupled weight decay
        let rate = (lr / bc1) as f32;
        let inv_sqrt_bc2 = (1.0 / bc2.sqrt()) as f32;
        const CHUNK: usize = 1 << 14;
        theta
            .par_chunks_mut(CHUNK)
            .zip(m.par_chunks_mut(CHUNK))
            .zip(v.par_chunks_mut(CHUNK).zip(g.par_chunks(CHUNK)))
            .for_each(|((t, m), (v, g))| {
                for i in 0..t.len() {
                    m[i] = b1 * m[i] + a1 * g[i];
                    v[i] = b2 * v[i] + a2 * (g[i] * g[i]);
                    // θ ← θ·(1 − lr·wd) − (lr / bc1) · m / (√v / √bc2 + ε)
                    t[i] = t[i] * keep - rate * (m[i] / (v[i].sqrt() * inv_sqrt_bc2 + eps));
                }
            });
        self.m = Tensor::from_vec(m, &shape, &dev)?;
        self.v = Tensor::from_vec(v, &shape, &dev)?;
        self.var.set(&Tensor::from_vec(theta, &shape, &dev)?)
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
        let data = varmap.data().lock().expect("varmap lock");
        let mut names: Vec<&String> = data.keys().collect();
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
    pub fn state_tensors(&self) -> HashMap<String, Tensor> {
        let mut out = HashMap::new();
        for s in &self.slots {
            out.insert(format!("m.{}", s.name), s.m.clone());
            out.insert(format!("v.{}", s.name), s.v.clone());
        }
        out
    }

    /// Restore moments saved by `state_tensors`; every slot must be present with its shape.
    pub fn load_state(
        &mut self,
        tensors: &HashMap<String, Tensor>,
        step: u64,
    ) -> std::result::Result<(), String> {
        for s in &mut self.slots {
            for (prefix, slot) in [("m", &mut s.m), ("v", &mut s.v)] {
                let key = format!("{prefix}.{}", s.name);
                let t = tensors
                    .get(&key)
                    .ok_or_else(|| format!("optimiser state lacks {key}"))?;
                if t.dims() != slot.dims() {
                    return Err(format!(
                        "optimiser state {key} has shape {:?}, expected {:?}",
                        t.dims(),
                        slot.dims()
                    ));
                }
                *slot = t.clone();
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
