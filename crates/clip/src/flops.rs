//! Floating-point operations of a forward pass, counted from the config: every matrix product
//! (patch embedding, q/k/v, scores, probabilities·v, out-projection, MLP, projection head) at
//! 2 FLOPs per multiply-add. Element-wise work (norms, softmax, activations) is left out, as in
//! the usual model-FLOPs-utilisation convention (PaLM, appendix B). fvcore, which open_clip's
//! profiler uses, counts one per multiply-add: its figures are half of these.

use crate::config::{ClipConfig, ProjType};

/// One pre-LN transformer tower of `layers` blocks over `t` tokens of width `w`, MLP width `h`.
fn tower(t: usize, w: usize, h: usize, layers: usize) -> f64 {
    let (t, w, h) = (t as f64, w as f64, h as f64);
    let per_block = 2.0 * t * w * 3.0 * w   // q, k, v
        + 2.0 * t * t * w                     // q kᵀ, all heads
        + 2.0 * t * t * w                     // probabilities · v
        + 2.0 * t * w * w                     // out projection
        + 2.0 * 2.0 * t * w * h; // MLP up and down
    per_block * layers as f64
}

/// The projection head from a pooled `width` feature to `embed`, for one sample.
fn head(kind: ProjType, width: usize, hidden: Option<usize>, layers: usize, embed: usize) -> f64 {
    match kind {
        ProjType::Linear => 2.0 * (width * embed) as f64,
        ProjType::None => 0.0,
        ProjType::Mlp => {
            let hid = hidden.unwrap_or(width);
            let first = 2.0 * (width * hid) as f64;
            let middle = 2.0 * (hid * hid) as f64 * (layers.saturating_sub(1)) as f64;
            first + middle + 2.0 * (hid * embed) as f64
        }
    }
}

impl ClipConfig {
    /// FLOPs to encode one image (forward only).
    pub fn image_forward_flops(&self) -> f64 {
        let v = &self.vision_cfg;
        let grid = v.image_size / v.patch_size;
        let patches = grid * grid;
        let patch_embed = 2.0 * (patches * 3 * v.patch_size * v.patch_size * v.width) as f64;
        patch_embed
            + tower(patches + 1, v.width, self.vision_cfg.mlp_width(), v.layers)
            + head(
                v.proj_type,
                v.width,
                v.proj_hidden,
                v.proj_layers,
                self.embed_dim,
            )
    }

    /// FLOPs to encode one caption of `context_length` tokens (forward only).
    pub fn text_forward_flops(&self) -> f64 {
        let t = &self.text_cfg;
        tower(
            t.context_length,
            t.width,
            self.text_cfg.mlp_width(),
            t.layers,
        ) + head(
            t.proj_type,
            t.width,
            t.proj_hidden,
            t.proj_layers,
            self.embed_dim,
        )
    }

    /// FLOPs of one training step on `n` pairs: forward of both towers and the N×N logits,
    /// and a backward pass counted as twice the forward.
    pub fn train_step_flops(&self, n: usize) -> f64 {
        let fwd = n as f64 * (self.image_forward_flops() + self.text_forward_flops())
            + 2.0 * (n * n * self.embed_dim) as f64;
        3.0 * fwd
    }
}

#[cfg(test)]
mod tests {
    use crate::config::ClipConfig;

    #[test]
    fn vit_b_32_matches_open_clip_profile() {
        // open_clip's docs/model_profile.csv lists ViT-B-32 at 4.41 image and 2.96 text GFLOPs
        // (fvcore: one per multiply-add); ours counts two, and leaves out element-wise work.
        let cfg = ClipConfig::preset("ViT-B-32").unwrap();
        let img = cfg.image_forward_flops() / 2e9;
        let txt = cfg.text_forward_flops() / 2e9;
        assert!((img - 4.41).abs() < 0.05, "image {img} GMAC");
        assert!((txt - 2.96).abs() < 0.05, "text {txt} GMAC");
    }
}
