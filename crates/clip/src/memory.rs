//! Whether a model fits in memory, checked before its tensors are allocated: an allocation
//! past what the machine has ends the process (an abort with a backtrace), not in an error.

use crate::config::{ClipConfig, HeadCfg, ProjType};
use crate::error::{ClipError, Result};

/// Parameters of a model of this config (as f64: a huge config must not overflow).
pub fn param_count(cfg: &ClipConfig) -> f64 {
    let (v, t) = (&cfg.vision_cfg, &cfg.text_cfg);
    let block = |w: f64, m: f64| 4.0 * w + 4.0 * w * w + 4.0 * w + 2.0 * w * m + m + w; // ln×2, attn, MLP
    let head = |h: &HeadCfg| {
        let (w, e) = (h.width as f64, h.embed_dim as f64);
        match h.kind {
            ProjType::Linear => w * e,
            ProjType::None => 0.0,
            ProjType::Mlp => {
                let hid = h.hidden.unwrap_or(h.width) as f64;
                let layers = h.layers as f64;
                (w + 1.0) * hid + (layers - 1.0).max(0.0) * (hid + 1.0) * hid + (hid + 1.0) * e
            }
        }
    };
    let (vw, tw) = (v.width as f64, t.width as f64);
    let tokens = (v.grid() * v.grid() + 1) as f64;
    let vision = 3.0 * (v.patch_size * v.patch_size) as f64 * vw
        + vw
        + tokens * vw
        + 4.0 * vw
        + v.layers as f64 * block(vw, v.mlp_width() as f64)
        + head(&v.head(cfg.embed_dim));
    let text = (t.vocab_size + t.context_length) as f64 * tw
        + 2.0 * tw
        + t.layers as f64 * block(tw, t.mlp_width() as f64)
        + head(&t.head(cfg.embed_dim));
    vision + text + 1.0
}

/// Memory the system can still give this process, in bytes (Linux `MemAvailable`); None where
/// it cannot be read.
pub fn available_bytes() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024.0)
}

/// An error naming the config and the sizes when `bytes_per_param` bytes for each parameter
/// (4 to hold f32 weights; 16 to train them: weights, gradients, two AdamW moments) exceed the
/// memory available now.
pub fn check_fits(cfg: &ClipConfig, origin: &str, bytes_per_param: f64) -> Result<()> {
    let need = param_count(cfg) * bytes_per_param;
    let Some(have) = available_bytes() else {
        return Ok(());
    };
    if need <= have {
        return Ok(());
    }
    let (v, t) = (&cfg.vision_cfg, &cfg.text_cfg);
    Err(ClipError::Config {
        origin: origin.to_string(),
        msg: format!(
            "{:.3e} parameters need {} at {bytes_per_param} bytes each, more than the {} \
             this machine has free (vision_cfg.width {}, layers {}; text_cfg.width {}, layers {}, \
             vocab_size {})",
            param_count(cfg),
            gib(need),
            gib(have),
            v.width,
            v.layers,
            t.width,
            t.layers,
            t.vocab_size
        ),
    })
}

fn gib(bytes: f64) -> String {
    format!("{:.1} GiB", bytes / (1u64 << 30) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Clip;
    use candle_core::Device;

    #[test]
    fn the_count_is_the_models() {
        for name in ["tiny", "small"] {
            let mut cfg = ClipConfig::preset(name).unwrap();
            for (kind, layers) in [
                (ProjType::Linear, 1),
                (ProjType::Mlp, 1),
                (ProjType::Mlp, 3),
            ] {
                cfg.vision_cfg.proj_type = kind;
                cfg.text_cfg.proj_type = kind;
                cfg.vision_cfg.proj_layers = layers;
                cfg.text_cfg.proj_hidden = Some(48);
                let (_, vm) = Clip::with_varmap(&cfg, &Device::Cpu).unwrap();
                let real: usize = vm.all_vars().iter().map(|v| v.elem_count()).sum();
                assert_eq!(param_count(&cfg), real as f64, "{name} {kind:?} {layers}");
            }
        }
    }

    #[test]
    fn a_model_past_the_memory_is_an_error_naming_the_width() {
        let mut cfg = ClipConfig::preset("tiny").unwrap();
        cfg.vision_cfg.width = 1_000_000_000;
        cfg.vision_cfg.head_width = 1_000;
        let e = check_fits(&cfg, "huge.json", 4.0).unwrap_err().to_string();
        assert!(
            e.contains("huge.json") && e.contains("vision_cfg.width 1000000000"),
            "{e}"
        );
        let e = match Clip::with_varmap(&cfg, &Device::Cpu) {
            Ok(_) => panic!("a model of width 1e9 was built"),
            Err(e) => e.to_string(),
        };
        assert!(e.contains("vision_cfg.width 1000000000"), "{e}");
        check_fits(&ClipConfig::preset("tiny").unwrap(), "tiny", 16.0).unwrap();
    }
}
