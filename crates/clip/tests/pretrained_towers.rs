//! Pretrained towers inside a CLIP model: a config naming fetched towers (here the small
//! DINOv2 and BERT of the parity fixtures, written as `clipforge model fetch` writes a model
//! directory) gets their weights at initialisation and reproduces transformers' features
//! through the model's own input conventions (CLIP-normalised pixels, 0-padded ids); and a
//! missing model, a tower of another shape or a weights file without a tensor is one error
//! that names it.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use clip::{Clip, ClipConfig};
use common::{assert_close, load_fixture};

/// A model directory for the fixture `name`: its config (with `extra` fields) and weights.
fn model_dir(root: &Path, name: &str, extra: serde_json::Value) -> PathBuf {
    let (t, meta) = load_fixture(name);
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    let mut cfg = meta["config"].clone();
    for (k, v) in extra.as_object().unwrap() {
        cfg[k] = v.clone();
    }
    std::fs::write(dir.join("config.json"), cfg.to_string()).unwrap();
    let weights: HashMap<String, Tensor> = t
        .iter()
        .filter_map(|(k, v)| {
            k.strip_prefix("weights.")
                .map(|k| (k.to_string(), v.clone()))
        })
        .filter(|(k, _)| k != "embeddings.mask_token")
        .collect();
    clip::weights::save_tensors(&weights, &dir.join("model.safetensors")).unwrap();
    dir
}

fn root(tag: &str) -> PathBuf {
    let r = std::env::temp_dir().join(format!("clipforge-towers-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&r);
    std::fs::create_dir_all(&r).unwrap();
    r
}

fn config(dino: &Path, bert: &Path, layers: usize) -> ClipConfig {
    let text = format!(
        r#"{{"embed_dim": 16,
        "vision_cfg": {{"kind": "dinov2", "pretrained": "{}", "pretrained_image_size": 20,
            "image_size": 16, "patch_size": 4, "width": 32, "layers": {layers}, "head_width": 8, "mlp_ratio": 4}},
        "text_cfg": {{"kind": "bert", "pretrained": "{}", "max_positions": 64, "context_length": 12,
            "vocab_size": 1000, "width": 32, "heads": 4, "layers": 2, "mlp_ratio": 2}}}}"#,
        dino.display(),
        bert.display()
    );
    ClipConfig::from_json_str(&text, "test config").unwrap()
}

fn init(cfg: &ClipConfig) -> clip::Result<Clip> {
    let (model, varmap) = Clip::with_varmap(cfg, &Device::Cpu)?;
    clip::init::init_parameters(&varmap, cfg, 0)?;
    Ok(model)
}

#[test]
fn fetched_towers_start_the_model_and_keep_their_features() {
    let r = root("ok");
    let dino = model_dir(&r, "dinov2", serde_json::json!({}));
    let bert = model_dir(&r, "bert", serde_json::json!({"pooling": "mean"}));
    let model = init(&config(&dino, &bert, 2)).unwrap();

    // The fixture's images are in DINOv2's own normalisation; the model reads CLIP's.
    let (t, _) = load_fixture("dinov2");
    let (mean, std) = (clip::transform::CLIP_MEAN, clip::transform::CLIP_STD);
    let own_mean = [0.485f32, 0.456, 0.406];
    let own_std = [0.229f32, 0.224, 0.225];
    let per_channel =
        |v: [f32; 3]| Tensor::from_vec(v.to_vec(), (1, 3, 1, 1), &Device::Cpu).unwrap();
    // clip = (own·σ_own + μ_own − μ_clip) / σ_clip
    let clip_px = t["small"]
        .broadcast_mul(&per_channel(own_std))
        .unwrap()
        .broadcast_add(&per_channel([0, 1, 2].map(|c| own_mean[c] - mean[c])))
        .unwrap()
        .broadcast_div(&per_channel(std))
        .unwrap();
    let pooled = model.visual.pooled(&clip_px).unwrap();
    assert_close(
        "DINOv2 tower in the model",
        &pooled,
        &t["pooled_small"],
        1e-4,
    );

    let (tb, _) = load_fixture("bert");
    let ids = tb["ids"].to_dtype(candle_core::DType::U32).unwrap(); // 0-padded
    let text = model.text.pooled(&ids).unwrap();
    assert_close("BERT tower in the model", &text, &tb["mean"], 1e-4);
    let emb = model.encode_text(&ids).unwrap(); // through the head
    assert_eq!(emb.dims(), &[5, 16]);
    std::fs::remove_dir_all(&r).unwrap();
}

#[test]
fn bad_pretrained_towers_are_named() {
    let r = root("bad");
    let dino = model_dir(&r, "dinov2", serde_json::json!({}));
    let bert = model_dir(&r, "bert", serde_json::json!({}));

    let missing = r.join("absent");
    let err = init(&config(&missing, &bert, 2)).unwrap_err().to_string();
    assert!(
        err.contains("clipforge model fetch") && err.contains("absent"),
        "{err}"
    );

    let err = init(&config(&dino, &bert, 3)).unwrap_err().to_string();
    assert!(
        err.contains("dinov2/config.json")
            && err.contains("num_hidden_layers")
            && err.contains('3'),
        "{err}"
    );

    let weights = dino.join("model.safetensors");
    let mut t = clip::weights::read_safetensors(&weights, &Device::Cpu).unwrap();
    t.remove("encoder.layer.1.mlp.fc2.bias");
    clip::weights::save_tensors(&t, &weights).unwrap();
    let err = init(&config(&dino, &bert, 2)).unwrap_err().to_string();
    assert!(
        err.contains("model.safetensors") && err.contains("encoder.layer.1.mlp.fc2.bias"),
        "{err}"
    );
    std::fs::remove_dir_all(&r).unwrap();
}
