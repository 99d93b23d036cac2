//! Parity with open_clip and Hugging Face CLIP (fixtures from scripts/make_fixtures.py):
//! features and logits within 1e-4, loss within 1e-5, every gradient within 1e-3 (norm-relative).

mod common;

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;
use clip::nn::l2_normalize;
use clip::{clip_loss, weights, Clip, ClipConfig};
use common::*;

const FEATURE_TOL: f32 = 1e-4;
const LOSS_TOL: f32 = 1e-5;
const GRAD_TOL: f64 = 1e-3;

fn config_of(meta: &serde_json::Value) -> ClipConfig {
    ClipConfig::from_json_str(&meta["config"].to_string(), "fixture config").unwrap()
}

/// Our parameter names and shapes must be open_clip's state-dict keys and shapes.
fn assert_same_keys(varmap: &VarMap, meta: &serde_json::Value) {
    let data = varmap.data().lock().unwrap();
    let mut ours: Vec<(String, Vec<usize>)> = data
        .iter()
        .map(|(k, v)| (k.clone(), v.dims().to_vec()))
        .collect();
    ours.sort();
    let params = meta["params"].as_object().unwrap();
    let mut theirs: Vec<(String, Vec<usize>)> = params
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                v["shape"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|d| d.as_u64().unwrap() as usize)
                    .collect(),
            )
        })
        .collect();
    theirs.sort();
    assert_eq!(
        ours, theirs,
        "parameter keys and shapes differ from open_clip's state dict"
    );
}

struct Run {
    image_features: Tensor,
    text_features: Tensor,
    image_embeds: Tensor,
    text_embeds: Tensor,
    logits: Tensor,
    loss: Tensor,
    grads: candle_core::backprop::GradStore,
}

fn run(model: &Clip, fx: &HashMap<String, Tensor>) -> Run {
    let images = &fx["input.images"];
    let ids = fx["input.ids"].to_dtype(DType::U32).unwrap();
    let image_features = model.visual.forward(images).unwrap();
    let text_features = model.text.forward(&ids).unwrap();
    let image_embeds = l2_normalize(&image_features).unwrap();
    let text_embeds = l2_normalize(&text_features).unwrap();
    let logits = clip::clip_logits(&image_embeds, &text_embeds, &model.logit_scale).unwrap();
    let loss = clip_loss(&image_embeds, &text_embeds, &model.logit_scale).unwrap();
    let grads = loss.backward().unwrap();
    Run {
        image_features,
        text_features,
        image_embeds,
        text_embeds,
        logits,
        loss,
        grads,
    }
}

fn check_outputs(name: &str, r: &Run, fx: &HashMap<String, Tensor>) {
    assert_close(
        &format!("{name} image features"),
        &r.image_features,
        &fx["expect.image_features"],
        FEATURE_TOL,
    );
    assert_close(
        &format!("{name} text features"),
        &r.text_features,
        &fx["expect.text_features"],
        FEATURE_TOL,
    );
    assert_close(
        &format!("{name} image embeds"),
        &r.image_embeds,
        &fx["expect.image_embeds"],
        FEATURE_TOL,
    );
    assert_close(
        &format!("{name} text embeds"),
        &r.text_embeds,
        &fx["expect.text_embeds"],
        FEATURE_TOL,
    );
    assert_close(
        &format!("{name} logits"),
        &r.logits,
        &fx["expect.logits"],
        FEATURE_TOL,
    );
    let (got, want) = (to_vec(&r.loss)[0], to_vec(&fx["expect.loss"])[0]);
    assert!(
        (got - want).abs() <= LOSS_TOL,
        "{name} loss {got} vs {want}"
    );
}

#[test]
fn tiny_preset_matches_open_clip() {
    let (fx, meta) = load_fixture("tiny");
    let cfg = ClipConfig::preset("tiny").unwrap();
    assert_eq!(
        cfg,
        config_of(&meta),
        "the fixture was made from configs/models/tiny.json"
    );
    let (model, varmap) = Clip::with_varmap(&cfg, &Device::Cpu).unwrap();
    assert_same_keys(&varmap, &meta);
    {
        let data = varmap.data().lock().unwrap();
        for (key, p) in meta["params"].as_object().unwrap() {
            let var = &data[key];
            let vals = det_param(
                p["index"].as_u64().unwrap(),
                var.elem_count(),
                p["mean"].as_f64().unwrap(),
                p["std"].as_f64().unwrap(),
            );
            var.set(&Tensor::from_vec(vals, var.dims(), &Device::Cpu).unwrap())
                .unwrap();
        }
    }
    let r = run(&model, &fx);
    check_outputs("tiny", &r, &fx);
    let samples = meta["samples"].as_u64().unwrap() as usize;
    let data = varmap.data().lock().unwrap();
    for (key, var) in data.iter() {
        let g = to_vec(
            r.grads
                .get(var.as_tensor())
                .unwrap_or_else(|| panic!("no gradient for {key}")),
        );
        let want_norm = to_vec(&fx[&format!("grad_norm.{key}")])[0] as f64;
        let norm = g.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
        let norm_err = (norm - want_norm).abs() / want_norm.max(1e-12);
        assert!(
            norm_err <= GRAD_TOL,
            "tiny grad norm {key}: {norm} vs {want_norm}"
        );
        let sampled: Vec<f32> = if g.len() > samples {
            (0..samples).map(|i| g[i * g.len() / samples]).collect()
        } else {
            g
        };
        let err = rel_err(&sampled, &to_vec(&fx[&format!("grad_sample.{key}")]));
        assert!(err <= GRAD_TOL, "tiny grad {key}: relative error {err}");
    }
}

/// Build from the fixture's config, load its stored open_clip weights through a safetensors
/// file, and check outputs and every gradient in full.
fn stored_case(name: &str) {
    let (fx, meta) = load_fixture(name);
    let cfg = config_of(&meta);
    let (model, varmap) = Clip::with_varmap(&cfg, &Device::Cpu).unwrap();
    assert_same_keys(&varmap, &meta);
    let state: HashMap<String, Tensor> = fx
        .iter()
        .filter_map(|(k, v)| {
            k.strip_prefix("weight.")
                .map(|k| (k.to_string(), v.clone()))
        })
        .collect();
    let file = std::env::temp_dir().join(format!(
        "clipforge-parity-{name}-{}.safetensors",
        std::process::id()
    ));
    weights::save_tensors(&state, &file).unwrap();
    weights::load_into(&varmap, &file).unwrap();
    std::fs::remove_file(&file).ok();
    let r = run(&model, &fx);
    check_outputs(name, &r, &fx);
    let data = varmap.data().lock().unwrap();
    assert_eq!(data.len(), state.len());
    for (key, var) in data.iter() {
        let g = to_vec(
            r.grads
                .get(var.as_tensor())
                .unwrap_or_else(|| panic!("no gradient for {key}")),
        );
        let err = rel_err(&g, &to_vec(&fx[&format!("grad.{key}")]));
        assert!(err <= GRAD_TOL, "{name} grad {key}: relative error {err}");
    }
}

#[test]
fn quickgelu_patch6_matches_open_clip() {
    stored_case("quickgelu");
}

#[test]
fn mlp_heads_match_pytorch() {
    stored_case("mlphead");
}

#[test]
fn hugging_face_layout_loads_and_matches_transformers() {
    let (fx, meta) = load_fixture("hf");
    let cfg = config_of(&meta);
    let (model, varmap) = Clip::with_varmap(&cfg, &Device::Cpu).unwrap();
    let state: HashMap<String, Tensor> = fx
        .iter()
        .filter_map(|(k, v)| {
            k.strip_prefix("weight.")
                .map(|k| (k.to_string(), v.clone()))
        })
        .collect();
    assert!(weights::is_hf_layout(&state));
    let file = std::env::temp_dir().join(format!(
        "clipforge-parity-hf-{}.safetensors",
        std::process::id()
    ));
    weights::save_tensors(&state, &file).unwrap();
    weights::load_into(&varmap, &file).unwrap();
    std::fs::remove_file(&file).ok();
    let ids = fx["input.ids"].to_dtype(DType::U32).unwrap();
    let img = model.encode_image(&fx["input.images"]).unwrap();
    let txt = model.encode_text(&ids).unwrap();
    assert_close(
        "hf image embeds",
        &img,
        &fx["expect.image_embeds"],
        FEATURE_TOL,
    );
    assert_close(
        "hf text embeds",
        &txt,
        &fx["expect.text_embeds"],
        FEATURE_TOL,
    );
}
