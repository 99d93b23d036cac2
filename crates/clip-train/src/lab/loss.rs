//! `clipforge lab loss`: the contrastive loss taken apart on one real batch of 8 built-in
//! scenes, before, during and after training: the N×N cosine matrix, the logits (cosine ×
//! exp(t)), the softmax along each row (image → text) and each column (text → image), the two
//! cross-entropies and their mean, the gradient every row sends to its true pair and to its
//! hardest negative, and the same batch at three temperatures.

use candle_core::{Tensor, Var};
use clip::Clip;
use clip_data::synthetic::Split;
use clip_data::{SceneBatcher, Shapes};
use serde::Serialize;
use serde_json::json;

use super::figures::{heatmaps, Heatmap, CELL};
use super::report::{table, Report};
use super::runs::{model_at, train_or_reuse};
use super::LabOptions;
use crate::error::Result;

/// Pairs in the batch taken apart.
const N: usize = 8;

/// The loss on one batch, every intermediate kept. Rows are images, columns captions.
#[derive(Debug, Clone, Serialize)]
pub struct BatchView {
    pub step: u64,
    /// exp(t): what the cosines are multiplied by.
    pub scale: f32,
    pub cosine: Vec<Vec<f32>>,
    pub logits: Vec<Vec<f32>>,
    /// Softmax along each row: image i's distribution over the captions.
    pub softmax_rows: Vec<Vec<f32>>,
    /// Softmax along each column: caption j's distribution over the images.
    pub softmax_cols: Vec<Vec<f32>>,
    /// −log of the diagonal entry of each row's (column's) softmax.
    pub ce_image_to_text: Vec<f32>,
    pub ce_text_to_image: Vec<f32>,
    /// (mean of the rows' + mean of the columns') / 2: CLIP's loss on this batch.
    pub loss: f32,
    /// ∂loss/∂cosine: for each row, on its true pair and on its hardest negative (the most
    /// similar wrong caption), and which caption that was.
    pub grad_positive: Vec<f32>,
    pub grad_hardest_negative: Vec<f32>,
    pub hardest_negative: Vec<usize>,
}

fn rows(t: &Tensor) -> Result<Vec<Vec<f32>>> {
    Ok(t.to_vec2::<f32>()?)
}

/// Take the loss apart on cosines `[N, N]` at scale exp(t) = `scale`.
pub fn view(cosine: &Tensor, scale: f32, step: u64) -> Result<BatchView> {
    let n = cosine.dim(0)?;
    let cos = Var::from_tensor(cosine)?;
    let logits = (cos.as_tensor() * scale as f64)?; // [N, N]
    let labels = Tensor::arange(0u32, n as u32, cosine.device())?; // [N]
    let i2t = candle_nn::loss::cross_entropy(&logits, &labels)?;
    let t2i = candle_nn::loss::cross_entropy(&logits.t()?.contiguous()?, &labels)?;
    let loss = ((i2t + t2i)? * 0.5)?;
    let grad = loss.backward()?;
    let grad = rows(grad.get(&cos).expect("the cosines have a gradient"))?; // [N, N]
    let softmax_rows = rows(&candle_nn::ops::softmax(&logits, 1)?)?;
    let softmax_cols = rows(&candle_nn::ops::softmax(&logits, 0)?)?;
    let cosine_rows = rows(cosine)?;
    let hardest_negative: Vec<usize> = cosine_rows
        .iter()
        .enumerate()
        .map(|(i, r)| {
            (0..n)
                .filter(|&j| j != i)
                .max_by(|&a, &b| r[a].total_cmp(&r[b]))
                .unwrap_or(i)
        })
        .collect();
    Ok(BatchView {
        step,
        scale,
        logits: rows(&logits)?,
        ce_image_to_text: (0..n).map(|i| -softmax_rows[i][i].ln()).collect(),
        ce_text_to_image: (0..n).map(|j| -softmax_cols[j][j].ln()).collect(),
        loss: loss.to_scalar::<f32>()?,
        grad_positive: (0..n).map(|i| grad[i][i]).collect(),
        grad_hardest_negative: (0..n).map(|i| grad[i][hardest_negative[i]]).collect(),
        hardest_negative,
        softmax_rows,
        softmax_cols,
        cosine: cosine_rows,
    })
}

fn mean(v: impl Iterator<Item = f32>) -> f32 {
    let (s, n) = v.fold((0.0, 0usize), |(s, n), x| (s + x, n + 1));
    s / n.max(1) as f32
}

impl BatchView {
    fn diagonal_mean(&self) -> f32 {
        mean((0..self.cosine.len()).map(|i| self.cosine[i][i]))
    }
    fn off_diagonal_mean(&self) -> f32 {
        let n = self.cosine.len();
        mean(
            (0..n * n)
                .filter(|k| k / n != k % n)
                .map(|k| self.cosine[k / n][k % n]),
        )
    }
    fn rows_right(&self) -> usize {
        (0..self.cosine.len())
            .filter(|&i| {
                self.hardest_negative[i] == i
                    || self.cosine[i][i] > self.cosine[i][self.hardest_negative[i]]
            })
            .count()
    }

    /// Cosine, row softmax and column softmax panels.
    fn panels<'a>(&'a self, thumbs: &'a [Vec<f32>], when: &str) -> [Heatmap<'a>; 3] {
        [
            Heatmap {
                title: format!("cosine similarity, {when}"),
                values: &self.cosine,
                range: (-1.0, 1.0),
                thumbs,
                row_notes: vec![],
                col_notes: vec![],
            },
            Heatmap {
                title: format!(
                    "softmax of each row (image → text), exp(t) = {:.1}",
                    self.scale
                ),
                values: &self.softmax_rows,
                range: (0.0, 1.0),
                thumbs,
                row_notes: self
                    .ce_image_to_text
                    .iter()
                    .map(|c| format!("CE {c:.2}"))
                    .collect(),
                col_notes: vec![],
            },
            Heatmap {
                title: "softmax of each column (text → image), CE below".into(),
                values: &self.softmax_cols,
                range: (0.0, 1.0),
                thumbs,
                row_notes: vec![],
                col_notes: self
                    .ce_text_to_image
                    .iter()
                    .map(|c| format!("{c:.2}"))
                    .collect(),
            },
        ]
    }
}

/// The model's cosines on the batch `[N, N]` and its exp(t).
fn cosines(model: &Clip, pixels: &Tensor, ids: &Tensor) -> Result<(Tensor, f32)> {
    let out = model.forward(&pixels.detach(), &ids.detach())?;
    let cos = out.image_embeds.matmul(&out.text_embeds.t()?)?.detach(); // [N, N]
    let scale = out.logit_scale.exp()?.to_scalar::<f32>()?;
    Ok((cos, scale))
}

pub fn run(opts: &LabOptions) -> Result<Report> {
    let seed = 0;
    let cfg = opts.base_config(opts.quickstart_steps(), seed);
    let trained = train_or_reuse(opts, "quickstart", &cfg)?;
    let size = cfg.model.vision_cfg.image_size;
    // Fresh scenes (not trained on), in pairs that differ only in shape: each image's hardest
    // negative is its twin's caption.
    let ds = Shapes::new(crate::eval::eval_seed(seed), Split::Train);
    let batch = SceneBatcher::new(ds.clone(), size, cfg.model.text_cfg.context_length, false)
        .with_group(2)
        .batch(0, N, &opts.device)?;
    let thumbs: Vec<Vec<f32>> = (0..N as u64)
        .map(|i| ds.grouped_scene(i, 2).render((CELL - 4) as usize))
        .collect();
    let captions = batch.captions.clone();
    let dir = opts.out.join("loss");

    // The batch at each checkpoint: before training, every quarter, at the end.
    let every = cfg.checkpoint_every;
    let mut steps: Vec<u64> = (0..=cfg.steps).step_by(every as usize).collect();
    if steps.last() != Some(&cfg.steps) {
        steps.push(cfg.steps);
    }
    let mut views = Vec::new();
    for &s in &steps {
        let model = if s == cfg.steps {
            None
        } else {
            Some(model_at(&cfg, &trained.run_dir, s, opts)?)
        };
        let (cos, scale) = cosines(
            model.as_ref().unwrap_or(&trained.model),
            &batch.pixels,
            &batch.ids,
        )?;
        views.push((cos.clone(), view(&cos, scale, s)?));
    }
    let (first, last) = (&views[0].1, &views.last().expect("two views at least").1);
    heatmaps(
        &dir.join("batch_start.png"),
        &first.panels(&thumbs, "before training"),
        &captions,
    )?;
    heatmaps(
        &dir.join("batch_end.png"),
        &last.panels(&thumbs, &format!("after {} steps", cfg.steps)),
        &captions,
    )?;

    // The trained batch at three temperatures.
    let final_cos = &views.last().expect("views").0;
    let scales = [1.0f32, 1.0 / 0.07, 100.0];
    let temps: Vec<BatchView> = scales
        .iter()
        .map(|&s| view(final_cos, s, cfg.steps))
        .collect::<Result<_>>()?;
    let temp_maps: Vec<Heatmap> = temps
        .iter()
        .map(|v| Heatmap {
            title: format!("row softmax at exp(t) = {:.1}: loss {:.3}", v.scale, v.loss),
            values: &v.softmax_rows,
            range: (0.0, 1.0),
            thumbs: &thumbs,
            row_notes: v
                .ce_image_to_text
                .iter()
                .map(|c| format!("CE {c:.2}"))
                .collect(),
            col_notes: vec![],
        })
        .collect();
    heatmaps(&dir.join("temperature.png"), &temp_maps, &captions)?;

    // The cosine matrix over training, as a contact sheet.
    let sheet: Vec<Heatmap> = views
        .iter()
        .map(|(_, v)| Heatmap {
            title: format!("step {}: loss {:.4}", v.step, v.loss),
            values: &v.cosine,
            range: (-1.0, 1.0),
            thumbs: &thumbs,
            row_notes: vec![],
            col_notes: vec![],
        })
        .collect();
    heatmaps(&dir.join("training.png"), &sheet, &captions)?;

    let mut r = Report::new("loss", "The contrastive loss, taken apart", opts.quick);
    r.question = "How does CLIP's batch construction and its multi-class N-pair loss work? A \
        batch of N (image, caption) pairs gives N×N similarities; the loss raises the N true \
        pairs and lowers the N² − N false ones. What does that look like on real numbers, and \
        what does the learned temperature do?"
        .into();
    r.setup = format!(
        "`tiny` (ViT 4 × 128 at 32 px, text 4 × 128, embeddings of 128) trained with the \
         quickstart's recipe for {} steps of 64 built-in scenes (AdamW, lr 1e-3, seed {seed}), \
         checkpoints every {every} steps{}. One batch of {N} fresh scenes (never trained on), \
         made of {} pairs that differ only in their shapes (so each image has a hard negative: \
         its twin's caption), is taken apart at each checkpoint: embeddings are unit vectors, so image·caption is a cosine in \
         [−1, 1]; logits = cosine × exp(t), t the learned temperature; the loss is the mean of \
         the cross-entropy of each row's softmax (image → which caption) and of each column's \
         (caption → which image) against the diagonal. Gradients are candle's autograd of that \
         loss with respect to the cosines.",
        cfg.steps,
        if trained.reused {
            " (the run was reused from an earlier experiment)"
        } else {
            ""
        },
        N / 2,
    );
    r.sections.push(format!(
        "## One batch, before and after training\n\n\
         Rows are the images (drawn left), columns the captions (listed below); the red squares \
         are the true pairs. Left: cosines. Middle: each row's softmax over the {N} captions, \
         with its cross-entropy −log p(true caption) at the right. Right: each column's softmax \
         over the {N} images, its cross-entropy below.\n\n\
         ![before]({d}/batch_start.png)\n\n![after]({d}/batch_end.png)",
        d = "loss"
    ));
    let grad_rows: Vec<Vec<String>> = (0..N)
        .map(|i| {
            let j = last.hardest_negative[i];
            vec![
                format!("I{i}"),
                captions[i].clone(),
                format!("{:.3}", last.cosine[i][i]),
                format!("T{j} {:.3}", last.cosine[i][j]),
                format!("{:.3}", last.softmax_rows[i][i]),
                format!("{:.3}", last.ce_image_to_text[i]),
                format!("{:+.2e}", last.grad_positive[i]),
                format!("{:+.2e}", last.grad_hardest_negative[i]),
            ]
        })
        .collect();
    r.sections.push(format!(
        "## Each row after training: its cross-entropy and its gradients\n\n{}\n\n\
         Loss on this batch: image → text {:.3}, text → image {:.3}, CLIP's loss (their mean) \
         {:.3}. A gradient descent step moves each cosine against its gradient: a negative \
         gradient on the true pair pulls the image and its caption together, a positive one on \
         a negative pushes them apart. For the symmetric loss ∂L/∂cosᵢⱼ = exp(t)/(2N) · \
         (P_row,ij + P_col,ij − 2·[i = j]), P the two softmaxes.",
        table(
            &[
                "image",
                "its caption",
                "cos true",
                "hardest negative",
                "p(true)",
                "CE row",
                "∂L/∂cos true",
                "∂L/∂cos hardest"
            ],
            &grad_rows
        ),
        mean(last.ce_image_to_text.iter().copied()),
        mean(last.ce_text_to_image.iter().copied()),
        last.loss,
    ));
    let temp_rows: Vec<Vec<String>> = temps
        .iter()
        .map(|v| {
            vec![
                format!("{:.1}", v.scale),
                format!("{:.3}", v.loss),
                format!("{:.3}", mean((0..N).map(|i| v.softmax_rows[i][i]))),
                format!("{:+.2e}", mean(v.grad_positive.iter().copied())),
            ]
        })
        .collect();
    r.sections.push(format!(
        "## Temperature\n\nThe trained batch's cosines at three scales: 1 (no temperature), \
         1/0.07 = 14.3 (CLIP's initial value) and 100 (the clamp). The model learned exp(t) = \
         {:.1}.\n\n{}\n\n![temperature](loss/temperature.png)",
        last.scale,
        table(
            &[
                "exp(t)",
                "loss",
                "mean p(true caption)",
                "mean ∂L/∂cos true"
            ],
            &temp_rows
        )
    ));
    let train_rows: Vec<Vec<String>> = views
        .iter()
        .map(|(_, v)| {
            vec![
                v.step.to_string(),
                format!("{:.1}", v.scale),
                format!("{:.3}", v.loss),
                format!("{:.3}", v.diagonal_mean()),
                format!("{:.3}", v.off_diagonal_mean()),
                format!("{}/{N}", v.rows_right()),
            ]
        })
        .collect();
    r.sections.push(format!(
        "## Over training\n\n{}\n\n![training](loss/training.png)",
        table(
            &[
                "step",
                "exp(t)",
                "loss",
                "mean cos, true pairs",
                "mean cos, false pairs",
                "rows whose true caption is nearest"
            ],
            &train_rows
        )
    ));
    let chance = (N as f32).ln();
    r.shows = vec![
        format!(
            "Before training every cosine is near {:.2} and the loss is {:.3}, about ln {N} = \
             {chance:.3}: each softmax is close to uniform, the model guesses.",
            first.off_diagonal_mean(),
            first.loss
        ),
        {
            let gap = last.diagonal_mean() - last.off_diagonal_mean();
            format!(
                "After {} steps the true pairs' cosines average {:.3} against {:.3} for the \
                 false ones (a gap of {gap:.3}), the loss on this batch is {:.3}, and {} of {N} \
                 rows have their true caption nearest{}.",
                cfg.steps,
                last.diagonal_mean(),
                last.off_diagonal_mean(),
                last.loss,
                last.rows_right(),
                if gap > 0.2 {
                    ": training opened a gap between the diagonal and the rest"
                } else {
                    ": the diagonal has barely separated yet"
                }
            )
        },
        format!(
            "The temperature decides how sharply cosines become probabilities: the trained \
             cosines give a loss of {:.3} at exp(t) = 1, {:.3} at 14.3 and {:.3} at 100 (the \
             model learned {:.1}). A larger scale lowers the loss of rows whose true caption \
             is already the most similar and raises that of rows where it is not; a small one \
             leaves every softmax near uniform, whatever the cosines.",
            temps[0].loss, temps[1].loss, temps[2].loss, last.scale
        ),
        "Every row pulls on its true pair (negative gradient) and pushes on each negative in \
         proportion to the probability it wrongly gives it: the hardest negative gets the \
         strongest push, an easy negative almost none. That is the N-pair loss: one softmax \
         classification over the batch per image, and one per caption."
            .into(),
    ];
    r.limits = vec![
        format!(
            "One batch of {N}: a training batch holds 64, so each softmax there spreads over 64 \
             captions and the loss starts at ln 64 = {:.2}.",
            64f32.ln()
        ),
        "The gradients are those of the cosines, not of the weights: how they move the \
         encoders depends on the towers."
            .into(),
        "One seed and one batch of seen colour–shape combinations (held-out behaviour is in \
         the quickstart's zero-shot figures)."
            .into(),
    ];
    r.numbers = json!({
        "steps": cfg.steps,
        "train_seconds": trained.train_seconds,
        "reused_run": trained.reused,
        "captions": captions,
        "over_training": views.iter().map(|(_, v)| v).collect::<Vec<_>>(),
        "temperatures": temps,
        "plots": ["loss/batch_start.png", "loss/batch_end.png", "loss/temperature.png", "loss/training.png"],
    });
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// Autograd's gradient equals the closed form exp(t)/(2N) · (P_row + P_col − 2I).
    #[test]
    fn gradient_matches_the_closed_form() {
        let cos = Tensor::new(
            &[[0.9f32, 0.1, -0.2], [0.3, 0.5, 0.0], [-0.1, 0.4, 0.7]],
            &Device::Cpu,
        )
        .unwrap();
        let v = view(&cos, 10.0, 0).unwrap();
        for i in 0..3 {
            for j in 0..3 {
                let eye = if i == j { 2.0 } else { 0.0 };
                let want = 10.0 / 6.0 * (v.softmax_rows[i][j] + v.softmax_cols[i][j] - eye);
                if i == j {
                    assert!((v.grad_positive[i] - want).abs() < 1e-5, "{i}: {v:?}");
                } else if j == v.hardest_negative[i] {
                    assert!((v.grad_hardest_negative[i] - want).abs() < 1e-5, "{i},{j}");
                }
            }
        }
        let ce =
            (v.ce_image_to_text.iter().sum::<f32>() + v.ce_text_to_image.iter().sum::<f32>()) / 6.0;
        assert!((ce - v.loss).abs() < 1e-5);
    }
}
