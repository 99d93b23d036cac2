//! Parameter initialisation as open_clip's (`TextTransformer.init_parameters`, the
//! `VisionTransformer` constructor, PyTorch's layer defaults), drawn from our own seeded RNG so
//! runs are reproducible (candle's CPU generator cannot be seeded).

use candle_core::{Result, Tensor};
use candle_nn::VarMap;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal, Uniform};

use crate::config::ClipConfig;
use crate::model::LOGIT_SCALE_INIT;

/// How one tensor is drawn.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum InitRule {
    Const(f32),
    Normal {
        std: f64,
    },
    /// U(−bound, bound).
    Uniform {
        bound: f64,
    },
}

/// The rule for parameter `key` of shape `dims` under `cfg`.
pub fn init_rule(key: &str, dims: &[usize], cfg: &ClipConfig) -> InitRule {
    if is_pretrained_trunk(key) {
        return InitRule::Const(0.0); // filled from the fetched weights next
    }
    let is_visual = key.starts_with("visual.");
    let width = if is_visual {
        cfg.vision_cfg.width
    } else {
        cfg.text_cfg.width
    } as f64;
    let layers = if is_visual {
        cfg.vision_cfg.layers
    } else {
        cfg.text_cfg.layers
    } as f64;
    // PyTorch nn.Linear / nn.Conv2d default: kaiming_uniform(a=√5) ⇒ U(±1/√fan_in), bias the same.
    let torch_default = |fan_in: usize| InitRule::Uniform {
        bound: 1.0 / (fan_in as f64).sqrt(),
    };
    let leaf = key.rsplit('.').next().unwrap_or(key);
    let is_ln = key.contains("ln_");

    if key == "logit_scale" {
        return InitRule::Const(cfg.init_logit_scale.unwrap_or(LOGIT_SCALE_INIT) as f32);
    }
    if key == "logit_bias" {
        return InitRule::Const(cfg.init_logit_bias.unwrap_or(0.0) as f32);
    }
    if is_ln {
        return InitRule::Const(if leaf == "weight" { 1.0 } else { 0.0 });
    }
    if leaf == "in_proj_bias" || key.ends_with("out_proj.bias") {
        return InitRule::Const(0.0); // nn.MultiheadAttention._reset_parameters
    }
    if is_visual {
        let scale = width.powf(-0.5);
        return match key {
            "visual.conv1.weight" => torch_default(dims[1..].iter().product()),
            "visual.class_embedding" | "visual.positional_embedding" | "visual.proj" => {
                InitRule::Normal { std: scale }
            }
            _ if leaf == "in_proj_weight" => InitRule::Uniform {
                bound: (6.0 / (dims[0] + dims[1]) as f64).sqrt(),
            },
            _ if leaf == "weight" => torch_default(dims[1]),
            // A bias: fan-in of its layer is the width the layer reads; looked up by the caller.
            _ => InitRule::Uniform { bound: f64::NAN },
        };
    }
    let attn_std = width.powf(-0.5);
    let proj_std = width.powf(-0.5) * (2.0 * layers).powf(-0.5);
    let fc_std = (2.0 * width).powf(-0.5);
    match key {
        "token_embedding.weight" => InitRule::Normal { std: 0.02 },
        "positional_embedding" => InitRule::Normal { std: 0.01 },
        "text_projection" => InitRule::Normal {
            std: width.powf(-0.5),
        },
        _ if leaf == "in_proj_weight" => InitRule::Normal { std: attn_std },
        _ if key.ends_with("out_proj.weight") || key.ends_with("mlp.c_proj.weight") => {
            InitRule::Normal { std: proj_std }
        }
        _ if key.ends_with("mlp.c_fc.weight") => InitRule::Normal { std: fc_std },
        _ if leaf == "weight" => torch_default(dims[1]),
        _ => InitRule::Uniform { bound: f64::NAN },
    }
}

/// A parameter of a pretrained tower's trunk (not its projection head).
pub fn is_pretrained_trunk(key: &str) -> bool {
    key.starts_with("visual.trunk.") || key.starts_with("text.transformer.")
}

/// Initialise every parameter in `varmap` from `seed`, in sorted key order; then a pretrained
/// tower's trunk is filled from its fetched weights ([`crate::pretrained::load_towers`]).
pub fn init_parameters(varmap: &VarMap, cfg: &ClipConfig, seed: u64) -> crate::Result<()> {
    draw_parameters(varmap, cfg, seed)?;
    crate::pretrained::load_towers(varmap, cfg)
}

fn draw_parameters(varmap: &VarMap, cfg: &ClipConfig, seed: u64) -> Result<()> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let data = varmap.data().lock().expect("varmap lock");
    let mut keys: Vec<&String> = data.keys().collect();
    keys.sort();
    for key in keys {
        let var = &data[key];
        let dims = var.dims().to_vec();
        let n: usize = dims.iter().product();
        let mut rule = init_rule(key, &dims, cfg);
        if let InitRule::Uniform { bound } = rule {
            if bound.is_nan() {
                // A Linear bias: PyTorch draws it U(±1/√fan_in) with fan_in from the weight.
                let weight_key = format!("{}.weight", key.trim_end_matches(".bias"));
                let fan_in = data.get(&weight_key).map(|w| w.dims()[1]).unwrap_or(n);
                rule = InitRule::Uniform {
                    bound: 1.0 / (fan_in as f64).sqrt(),
                };
            }
        }
        let values: Vec<f32> = match rule {
            InitRule::Const(c) => vec![c; n],
            InitRule::Normal { std } => {
                let d = Normal::new(0.0, std).expect("finite std");
                (0..n).map(|_| d.sample(&mut rng) as f32).collect()
            }
            InitRule::Uniform { bound } => {
                let d = Uniform::new_inclusive(-bound, bound).expect("finite bound");
                (0..n).map(|_| d.sample(&mut rng) as f32).collect()
            }
        };
        let t = Tensor::from_vec(values, dims.as_slice(), var.device())?.to_dtype(var.dtype())?;
        var.set(&t)?;
    }
    Ok(())
}
