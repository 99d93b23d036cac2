//! Locked towers (open_clip's `lock_image_tower` / `lock_text_tower`, LiT: Zhai et al. 2022):
//! a locked tower's parameters get no update, no optimiser state and no weight decay, and a
//! wholly locked tower runs without a graph. A tower is cut into groups as open_clip cuts it,
//! and the last `unlocked` groups stay trainable:
//! - image: [conv1, class and positional embeddings, ln_pre], each block but the last,
//!   [the last block, ln_post], the projection head (DINOv2: [its embeddings], blocks, [the
//!   last block, its final LayerNorm], the head);
//! - text: [token and positional embeddings], each block but the last, [the last block,
//!   ln_final], the projection head (BERT: [its embeddings], its layers, the head).
//!
//! The temperature (`logit_scale`) and SigLIP's `logit_bias` always train.

use clip::ClipConfig;
use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainError};

/// Which towers are locked, and how many of their last groups stay trainable.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockSpec {
    pub image: bool,
    #[serde(default)]
    pub image_unlocked_groups: usize,
    pub text: bool,
    #[serde(default)]
    pub text_unlocked_groups: usize,
}

/// A tower's groups: what a key belongs to, and how many there are.
struct Groups {
    /// Blocks in the tower.
    layers: usize,
}

impl Groups {
    /// Groups of a tower with `layers` blocks: the stem, `layers − 1` blocks, the last block
    /// with the final LayerNorm, the head.
    fn count(&self) -> usize {
        self.layers + 2
    }

    /// The group of `rest`, a key with the tower's prefix removed.
    fn of(&self, rest: &str, last_norm: &str) -> usize {
        // CLIP's blocks, DINOv2's (`visual.trunk.…`) and BERT's (`text.transformer.…`).
        let blocks = [
            "transformer.resblocks.",
            "trunk.encoder.layer.",
            "text.transformer.encoder.layer.",
        ];
        if let Some(block) = blocks.iter().find_map(|p| rest.strip_prefix(p)) {
            let i: usize = block
                .split('.')
                .next()
                .and_then(|i| i.parse().ok())
                .unwrap_or(0);
            return 1 + i.min(self.layers - 1);
        }
        if rest.starts_with(last_norm) || rest.starts_with("trunk.layernorm.") {
            return self.layers;
        }
        let head = ["proj", "head.", "text_projection", "text_head."];
        if head
            .iter()
            .any(|h| rest == *h || (h.ends_with('.') && rest.starts_with(h)))
        {
            return self.layers + 1;
        }
        0 // stem: patch or token embedding, class token, positions, ln_pre
    }
}

impl LockSpec {
    /// Every setting possible for `cfg`; the message names the flag.
    pub fn validate(&self, cfg: &ClipConfig) -> Result<()> {
        let check = |locked: bool, unlocked: usize, layers: usize, flag: &str| {
            let n = Groups { layers }.count();
            if !locked && unlocked > 0 {
                return Err(TrainError::Config(format!(
                    "--{flag} {unlocked} without locking that tower"
                )));
            }
            if unlocked >= n {
                return Err(TrainError::Config(format!(
                    "--{flag} {unlocked}: the tower has {n} groups; unlocking all of them is not locking"
                )));
            }
            Ok(())
        };
        let (v, t) = (&cfg.vision_cfg, &cfg.text_cfg);
        check(
            self.image,
            self.image_unlocked_groups,
            v.layers,
            "lock-image-unlocked-groups",
        )?;
        check(
            self.text,
            self.text_unlocked_groups,
            t.layers,
            "lock-text-unlocked-layers",
        )
    }

    /// Whether the parameter `key` (open_clip's name) is locked.
    pub fn locks(&self, key: &str, cfg: &ClipConfig) -> bool {
        if key == "logit_scale" || key == "logit_bias" {
            return false;
        }
        let (locked, unlocked, groups, rest, norm) = match key.strip_prefix("visual.") {
            Some(rest) => {
                let g = Groups {
                    layers: cfg.vision_cfg.layers,
                };
                (self.image, self.image_unlocked_groups, g, rest, "ln_post.")
            }
            None => {
                let g = Groups {
                    layers: cfg.text_cfg.layers,
                };
                (self.text, self.text_unlocked_groups, g, key, "ln_final.")
            }
        };
        locked && groups.of(rest, norm) < groups.count() - unlocked
    }

    /// Whether `key` belongs to its tower's projection head (the last group).
    pub fn is_head(&self, key: &str, cfg: &ClipConfig) -> bool {
        match key.strip_prefix("visual.") {
            Some(rest) => {
                let g = Groups {
                    layers: cfg.vision_cfg.layers,
                };
                g.of(rest, "ln_post.") == g.count() - 1
            }
            None => {
                let g = Groups {
                    layers: cfg.text_cfg.layers,
                };
                g.of(key, "ln_final.") == g.count() - 1
            }
        }
    }

    /// The image tower's pooled feature is fixed: it is locked whole or all but its head (LiT's
    /// usual setting, `--lock-image-unlocked-groups 1`), so it runs without a graph and its
    /// features can be cached.
    pub fn image_trunk_frozen(&self) -> bool {
        self.image && self.image_unlocked_groups <= 1
    }

    /// The text tower's pooled feature is fixed (locked whole or all but its head).
    pub fn text_trunk_frozen(&self) -> bool {
        self.text && self.text_unlocked_groups <= 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_follow_open_clip() {
        let cfg = ClipConfig::preset("tiny").unwrap(); // 4 layers each: 6 groups
        let lit = LockSpec {
            image: true,
            image_unlocked_groups: 1,
            ..Default::default()
        };
        assert!(lit.locks("visual.conv1.weight", &cfg));
        assert!(lit.locks("visual.transformer.resblocks.3.mlp.c_fc.weight", &cfg));
        assert!(lit.locks("visual.ln_post.weight", &cfg));
        assert!(
            !lit.locks("visual.proj", &cfg),
            "the head is the last group"
        );
        assert!(
            !lit.locks("token_embedding.weight", &cfg),
            "text not locked"
        );
        assert!(!lit.locks("logit_scale", &cfg));
        let two = LockSpec {
            text: true,
            text_unlocked_groups: 2,
            ..Default::default()
        };
        assert!(two.locks("transformer.resblocks.2.attn.in_proj_weight", &cfg));
        assert!(!two.locks("transformer.resblocks.3.attn.in_proj_weight", &cfg));
        assert!(!two.locks("ln_final.bias", &cfg));
        assert!(!two.locks("text_projection", &cfg));
        assert!(two.locks("positional_embedding", &cfg));
        assert!(!two.locks("visual.positional_embedding", &cfg));
        let all = LockSpec {
            image: true,
            image_unlocked_groups: 6,
            ..Default::default()
        };
        assert!(all.validate(&cfg).is_err());
    }
}
