//! The gradient of one data-parallel step (open_clip's `--gather-with-grad`, exact):
//!
//! 1. each process encodes its share of the global batch, `[b, E]` per tower;
//! 2. the features are all-gathered, `[N, E]` with N = b · processes, in global batch order
//!    (N is less, and the shares uneven, where bad samples were dropped from a share);
//! 3. the loss runs on the gathered features as leaves — the whole N×N on every process, or
//!    with `local_loss` only this process's rows against every column, whose feature
//!    gradients are then summed over the processes (what the backward of an all-gather is);
//! 4. each process pushes the rows of that gradient that are its own features back through
//!    its towers (`Σ f · ∂L/∂f`, a surrogate whose parameter gradient is the chain rule's);
//! 5. the parameter gradients are summed over the processes.
//!
//! The sum is the gradient of the global batch's loss: each process's towers carry exactly
//! the part of ∂L/∂θ that flows through its own samples. With accumulation, step 1 runs
//! without a graph and step 4 re-encodes each micro-batch with one, as in
//! [`crate::step`]; all N² pairs of the global batch are kept either way.

use candle_core::backprop::GradStore;
use candle_core::{DType, Tensor, Var};
use clip::{clip_loss_rows, siglip_loss_rows};
use clip_data::Batch;

use crate::config::LossKind;
use crate::dist::Comm;
use crate::error::{Result, TrainError};
use crate::trainer::Trainer;

impl Trainer {
    /// Loss (of the global batch) and the global batch's gradient, from this process's share
    /// `local` of it.
    pub(crate) fn loss_and_grads_distributed(&self, local: &Batch) -> Result<(f64, GradStore)> {
        let comm = &self.comm;
        let rank = comm.rank();
        let b = local.ids.dim(0)?;
        let parts = crate::step::micro_ranges(b, self.cfg.accum_freq);
        let micro = |&(first, len): &(usize, usize)| crate::step::micro_batch(local, first, len);
        let (e, dtype, device) = (
            self.cfg.model.embed_dim,
            self.model.logit_scale.dtype(),
            self.device.clone(),
        );

        // 1. This process's features: with their graph when there is one micro-batch.
        let live = if parts.len() == 1 {
            Some((self.image_embeds(local)?, self.text_embeds(local)?)) // [b, E] each
        } else {
            None
        };
        let (img, txt) = match &live {
            Some((i, t)) => (i.detach(), t.detach()),
            None if parts.is_empty() => {
                let none = Tensor::zeros((0, e), dtype, &device)?; // every sample was bad
                (none.clone(), none)
            }
            None => {
                let (mut imgs, mut txts) = (Vec::new(), Vec::new());
                for p in &parts {
                    let (i, t) = clip::ops::inference(|| -> Result<(Tensor, Tensor)> {
                        let mb = micro(p)?;
                        Ok((self.image_embeds(&mb)?, self.text_embeds(&mb)?))
                    })?;
                    imgs.push(i.detach());
                    txts.push(t.detach());
                }
                (Tensor::cat(&imgs, 0)?, Tensor::cat(&txts, 0)?) // [b, E] each
            }
        };

        // 2. The global batch's features, every process's rows in rank order. The shares are
        //    b each, or fewer where bad samples were dropped: each is sent padded to the
        //    largest and the padding left out. The features stay where they are (on a GPU
        //    with NCCL); only the counts pass through host memory.
        let counts: Vec<usize> = comm
            .all_gather(&[b as f32])?
            .iter()
            .map(|&c| c as usize)
            .collect();
        let n = counts.iter().sum::<usize>();
        let most = counts.iter().max().copied().unwrap_or(0);
        let gathered = |local: &Tensor| -> Result<Var> {
            let local = local.to_dtype(DType::F32)?;
            let padded = if b < most {
                let pad = Tensor::zeros((most - b, e), DType::F32, &device)?;
                Tensor::cat(&[&local, &pad], 0)? // [most, E]
            } else {
                local
            };
            let all = comm
                .all_gather_tensor(&padded)?
                .reshape((counts.len(), most, e))?;
            let shares: Vec<Tensor> = counts
                .iter()
                .enumerate()
                .map(|(r, &c)| all.get(r)?.narrow(0, 0, c))
                .collect::<candle_core::Result<_>>()?;
            Ok(Var::from_tensor(
                &Tensor::cat(&shares, 0)?.to_dtype(dtype)?,
            )?) // [N, E]
        };
        let all_img = gathered(&img)?; // [N, E]
        let all_txt = gathered(&txt)?; // [N, E]

        // 3. The loss on them, and its gradient for every feature.
        let scale = &self.model.logit_scale;
        let start: usize = counts[..rank].iter().sum();
        let loss = match (self.cfg.loss, self.cfg.local_loss) {
            (LossKind::Clip, false) => clip::clip_loss(&all_img, &all_txt, scale)?,
            (LossKind::Clip, true) => clip_loss_rows(&all_img, &all_txt, scale, start, b)?,
            (LossKind::Siglip, local) => {
                let bias = self.model.logit_bias.as_ref().ok_or_else(|| {
                    TrainError::Config("the siglip loss needs the model's logit_bias".into())
                })?;
                if local {
                    siglip_loss_rows(&all_img, &all_txt, scale, bias, start, b)?
                } else {
                    clip::siglip_loss(&all_img, &all_txt, scale, bias)?
                }
            }
        };
        let loss_grads = loss.backward()?;
        let feature_grad = |v: &Var| -> Result<Tensor> {
            match loss_grads.get(v.as_tensor()) {
                Some(g) => Ok(g.to_dtype(DType::F32)?),
                None => Ok(Tensor::zeros((n, e), DType::F32, &device)?),
            }
        };
        let (mut d_img, mut d_txt) = (feature_grad(&all_img)?, feature_grad(&all_txt)?); // [N, E]
        let mut value = vec![loss.to_scalar::<f32>()?];
        if self.cfg.local_loss {
            // Each process holds its rows' part: the sums are the whole loss and its gradient.
            d_img = comm.all_reduce_sum_tensor(&d_img)?;
            d_txt = comm.all_reduce_sum_tensor(&d_txt)?;
            comm.all_reduce_sum(&mut value)?;
        }

        // 4. This process's rows of that gradient, through its towers.
        let rows = |d: &Tensor, (first, len): (usize, usize)| -> Result<Tensor> {
            Ok(d.narrow(0, start + first, len)?.to_dtype(dtype)?) // [len, E]
        };
        let mut total = GradStore::default();
        for p in &parts {
            let (fi, ft) = match &live {
                Some((i, t)) => (i.clone(), t.clone()),
                None => {
                    let mb = micro(p)?;
                    (self.image_embeds(&mb)?, self.text_embeds(&mb)?)
                }
            };
            let surrogate =
                ((fi * rows(&d_img, *p)?)?.sum_all()? + (ft * rows(&d_txt, *p)?)?.sum_all()?)?;
            let grads = surrogate.backward()?;
            total = self.add_grads(total, &grads)?;
        }
        // The temperature (and bias) are outside the towers: their gradient is the loss's,
        // whole on every process (counted once, on rank 0) or in parts (each adds its own).
        if self.cfg.local_loss || rank == 0 {
            let scalars = std::iter::once(scale).chain(self.model.logit_bias.as_ref());
            for v in scalars {
                if let Some(g) = loss_grads.get(v) {
                    total.insert(v, g.clone());
                }
            }
        }
        self.drop_locked(&mut total);

        // 5. Summed over the processes.
        self.all_reduce_grads(&mut total)?;
        Ok((value[0] as f64, total))
    }

    /// Replace every parameter's gradient by its sum over the processes: one message of the
    /// gradients (the parameters in name order, the same on every process; zeros for a
    /// gradient a process lacks), and a flag per parameter, summed in host memory, that says
    /// whether any process had one.
    fn all_reduce_grads(&self, grads: &mut GradStore) -> Result<()> {
        let mut vars: Vec<(String, Var)> = self
            .varmap
            .data()
            .lock()
            .expect("varmap lock")
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        let mut had = Vec::with_capacity(vars.len());
        let mut parts = Vec::with_capacity(vars.len());
        for (_, v) in &vars {
            let g = grads.get(v.as_tensor());
            had.push(if g.is_some() { 1.0 } else { 0.0 });
            parts.push(match g {
                Some(g) => g.to_dtype(DType::F32)?,
                None => Tensor::zeros(v.shape(), DType::F32, v.device())?,
            });
        }
        self.comm.all_reduce_sum(&mut had)?;
        let sums = self.comm.all_reduce_sum_tensors(&parts)?;
        for (((_, v), had), sum) in vars.iter().zip(had).zip(sums) {
            if had > 0.0 {
                grads.insert(v.as_tensor(), sum.to_dtype(v.dtype())?);
            }
        }
        Ok(())
    }
}
