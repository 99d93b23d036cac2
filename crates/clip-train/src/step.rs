//! One optimisation step: loss and gradients of a batch (with accumulation that keeps all N²
//! pairs), the gradient clip, AdamW, the logit-scale clamp.

use candle_core::backprop::GradStore;
use candle_core::Tensor;
use candle_nn::Module;
use clip::nn::l2_normalize;
use clip::{clamp_logit_scale, clip_loss, siglip_loss};
use clip_data::Batch;
use serde::{Deserialize, Serialize};

use crate::config::LossKind;
use crate::dist::Comm;
use crate::error::{Result, TrainError};
use crate::optim::clip_grad_norm;
use crate::schedule::cosine_lr;
use crate::trainer::Trainer;

/// One line of `metrics.jsonl`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepMetrics {
    pub step: u64,
    pub loss: f64,
    pub lr: f64,
    /// exp(t), the multiplier of the cosine similarities.
    pub logit_scale: f64,
    /// SigLIP's logit bias b, when the run trains one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logit_bias: Option<f64>,
    pub grad_norm: f64,
    pub samples_per_s: f64,
    /// With several processes: seconds of the step spent in collectives (waiting included).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comm_s: Option<f64>,
}

impl Trainer {
    /// Loss and summed gradients of one batch, split into `accum_freq` micro-batches.
    ///
    /// With accumulation, features of every micro-batch are first computed without gradient;
    /// then each micro-batch is re-run with gradient and its live features replace its cached
    /// ones in the full-batch loss, so every step sees all N² pairs and the summed gradient
    /// equals the full batch's. The logit scale's (and bias's) gradient is taken from the first pass only.
    ///
    /// In a world of several processes `batch` is this process's share of the global batch,
    /// and the loss and gradient are the global batch's ([`crate::dist::grads`]).
    pub fn loss_and_grads(&self, batch: &Batch) -> Result<(f64, GradStore)> {
        if self.comm.launched() {
            return self.loss_and_grads_distributed(batch);
        }
        let k = self.cfg.accum_freq;
        if k == 1 {
            let img = self.image_embeds(batch)?;
            let txt = self.text_embeds(batch)?;
            let loss = self.batch_loss(&img, &txt, true)?;
            let mut grads = loss.backward()?;
            self.drop_locked(&mut grads);
            return Ok((loss.to_scalar::<f32>()? as f64, grads));
        }
        let parts = micro_ranges(batch.ids.dim(0)?, k);
        let micro = |j: usize| micro_batch(batch, parts[j].0, parts[j].1);
        let (mut cached_img, mut cached_txt) = (Vec::new(), Vec::new());
        for j in 0..parts.len() {
            // Features without a graph: the backward runs per micro-batch below.
            let (img, txt) = clip::ops::inference(|| -> Result<(Tensor, Tensor)> {
                let b = micro(j)?;
                Ok((self.image_embeds(&b)?, self.text_embeds(&b)?))
            })?;
            cached_img.push(img.detach()); // [m, E]
            cached_txt.push(txt.detach()); // [m, E]
        }
        let mut total: Option<GradStore> = None;
        let mut loss_value = 0.0;
        for j in 0..parts.len() {
            let (mut imgs, mut txts) = (cached_img.clone(), cached_txt.clone());
            let b = micro(j)?;
            imgs[j] = self.image_embeds(&b)?;
            txts[j] = self.text_embeds(&b)?;
            let image_embeds = Tensor::cat(&imgs, 0)?; // [N, E]
            let text_embeds = Tensor::cat(&txts, 0)?; // [N, E]
            let loss = self.batch_loss(&image_embeds, &text_embeds, j == 0)?;
            let mut grads = loss.backward()?;
            self.drop_locked(&mut grads);
            loss_value = loss.to_scalar::<f32>()? as f64;
            total = Some(match total {
                None => grads,
                Some(acc) => self.add_grads(acc, &grads)?,
            });
        }
        Ok((loss_value, total.expect("a batch of at least 2 pairs")))
    }

    /// The run's loss on unit embeddings `[N, E]`, `[N, E]`; the temperature (and SigLIP's
    /// bias) take part in the graph only when `with_scalars`.
    fn batch_loss(&self, img: &Tensor, txt: &Tensor, with_scalars: bool) -> Result<Tensor> {
        let live = |t: &Tensor| if with_scalars { t.clone() } else { t.detach() };
        let scale = live(&self.model.logit_scale);
        Ok(match self.cfg.loss {
            LossKind::Clip => clip_loss(img, txt, &scale)?,
            LossKind::Siglip => {
                let bias = self.model.logit_bias.as_ref().ok_or_else(|| {
                    TrainError::Config("the siglip loss needs the model's logit_bias".into())
                })?;
                siglip_loss(img, txt, &scale, &live(bias))?
            }
        })
    }

    /// Unit image embeddings `[N, E]`: from cached features through the head, or from
    /// pixels, the trunk without a graph when it is locked.
    pub(crate) fn image_embeds(&self, batch: &Batch) -> Result<Tensor> {
        if let Some(f) = &batch.image_features {
            return Ok(l2_normalize(&self.model.visual.head().forward(f)?)?);
        }
        let pixels = &batch.pixels;
        if self.cfg.lock.image_trunk_frozen() {
            // The trunk without a graph; the head (trainable or not) on its output.
            let px = pixels.to_dtype(self.model.logit_scale.dtype())?;
            let f = clip::ops::inference(|| self.model.visual.pooled(&px))?.detach(); // [N, W]
            return Ok(l2_normalize(&self.model.visual.head().forward(&f)?)?);
        }
        Ok(self.model.encode_image(pixels)?)
    }

    /// Unit text embeddings `[N, E]`: from cached features through the head, or from ids,
    /// the trunk without a graph when it is locked.
    pub(crate) fn text_embeds(&self, batch: &Batch) -> Result<Tensor> {
        if let Some(f) = &batch.text_features {
            return Ok(l2_normalize(&self.model.text.head().forward(f)?)?);
        }
        let ids = &batch.ids;
        if self.cfg.lock.text_trunk_frozen() {
            let f = clip::ops::inference(|| self.model.text.pooled(ids))?.detach(); // [N, W]
            return Ok(l2_normalize(&self.model.text.head().forward(&f)?)?);
        }
        Ok(self.model.encode_text(ids)?)
    }

    /// Remove the locked parameters' gradients (a partly locked tower computes them), so that
    /// neither the clip's norm nor the update sees them.
    pub(crate) fn drop_locked(&self, grads: &mut GradStore) {
        let data = self.varmap.data().lock().expect("varmap lock");
        for (name, var) in data.iter() {
            if self.cfg.lock.locks(name, &self.cfg.model) {
                grads.remove(var.as_tensor());
            }
        }
    }

    /// `acc + grads`, parameter by parameter.
    pub(crate) fn add_grads(&self, mut acc: GradStore, grads: &GradStore) -> Result<GradStore> {
        for var in self.varmap.all_vars() {
            let t = var.as_tensor();
            if let Some(g) = grads.get(t) {
                let sum = match acc.get(t) {
                    Some(a) => (a + g)?,
                    None => g.clone(),
                };
                acc.insert(t, sum);
            }
        }
        Ok(acc)
    }

    /// Run one optimisation step on `batch`; returns its metrics (samples/s left 0).
    pub fn train_step(&mut self, batch: &Batch) -> Result<StepMetrics> {
        let lr = cosine_lr(self.cfg.lr, self.step, self.cfg.warmup, self.cfg.steps);
        let (loss, mut grads) = if self.cfg.bf16 {
            clip::ops::autocast_bf16(|| self.loss_and_grads(batch))?
        } else {
            self.loss_and_grads(batch)?
        };
        if !loss.is_finite() {
            let step = self.step;
            return Err(TrainError::Diverged { step, loss, lr });
        }
        let grad_norm = clip_grad_norm(&self.varmap, &mut grads, self.cfg.grad_clip)?;
        self.optim.step(&grads, lr)?;
        clamp_logit_scale(&self.varmap)?;
        let logit_scale = (self.model.logit_scale.to_scalar::<f32>()? as f64).exp();
        let m = StepMetrics {
            step: self.step,
            loss,
            lr,
            logit_scale,
            logit_bias: match &self.model.logit_bias {
                Some(b) => Some(b.to_scalar::<f32>()? as f64),
                None => None,
            },
            grad_norm,
            samples_per_s: 0.0,
            comm_s: (self.comm.size() > 1).then(|| self.comm.take_seconds()),
        };
        self.step += 1;
        Ok(m)
    }
}

/// Rows `start .. start + m` of every part of a batch.
/// The `k` micro-batches of a batch of `b` rows as (first row, rows), the empty ones left out:
/// sizes differ by at most one, so a batch that lost samples to bad files keeps every row.
pub(crate) fn micro_ranges(b: usize, k: usize) -> Vec<(usize, usize)> {
    (0..k)
        .map(|j| (j * b / k, (j + 1) * b / k - j * b / k))
        .filter(|&(_, len)| len > 0)
        .collect()
}

pub(crate) fn micro_batch(batch: &Batch, start: usize, m: usize) -> Result<Batch> {
    let cut = |t: &Tensor| t.narrow(0, start, m);
    Ok(Batch {
        pixels: cut(&batch.pixels)?,
        ids: cut(&batch.ids)?,
        captions: batch.captions[start..start + m].to_vec(),
        labels: batch
            .labels
            .get(start..start + m)
            .map(<[usize]>::to_vec)
            .unwrap_or_default(),
        image_features: batch.image_features.as_ref().map(cut).transpose()?,
        text_features: batch.text_features.as_ref().map(cut).transpose()?,
    })
}
