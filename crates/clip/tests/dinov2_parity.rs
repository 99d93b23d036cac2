//! The DINOv2 image tower against Hugging Face `transformers`' `Dinov2Model` (fixture
//! `tests/fixtures/dinov2.*`, made by `scripts/dinov2_fixture.py`): three images at the
//! learnt grid's size and three smaller (the position embedding interpolated bicubically); the
//! last layer's rows, the pooled class-token features, and the gradients of a fixed function
//! of the pooled features, the position embedding's among them.

mod common;

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use clip::dinov2::{Dinov2, Dinov2Cfg};
use common::{assert_close, assert_fixture_grads, load_fixture};

fn model() -> (Dinov2, VarMap, HashMap<String, Tensor>, serde_json::Value) {
    let (t, meta) = load_fixture("dinov2");
    let cfg: Dinov2Cfg = serde_json::from_value(meta["config"].clone()).unwrap();
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let dino = Dinov2::new(vb, &cfg).unwrap();
    let weights: HashMap<String, Tensor> = t
        .iter()
        .filter_map(|(k, v)| {
            k.strip_prefix("weights.")
                .map(|k| (k.to_string(), v.clone()))
        })
        .filter(|(k, _)| k != "embeddings.mask_token") // masked pretraining only
        .collect();
    clip::weights::assign(&varmap, weights, "dinov2 fixture").unwrap();
    (dino, varmap, t, meta)
}

#[test]
fn rows_and_pooled_features_match_transformers() {
    let (dino, _, t, _) = model();
    let hidden = dino.hidden(&t["small"]).unwrap(); // [3, 17, W]
    assert_close("rows at 16 px", &hidden, &t["hidden_small"], 1e-4);
    let pooled = dino.pooled(&t["small"]).unwrap();
    assert_close("pooled at 16 px", &pooled, &t["pooled_small"], 1e-4);
    let native = dino.pooled(&t["native"]).unwrap();
    assert_close(
        "pooled at the learnt 20 px",
        &native,
        &t["pooled_native"],
        1e-4,
    );
}

#[test]
fn gradients_match_transformers() {
    let (dino, varmap, t, meta) = model();
    let pooled = dino.pooled(&t["small"]).unwrap(); // [B, W]
    let loss = pooled
        .matmul(&t["probe"])
        .unwrap()
        .sqr()
        .unwrap()
        .sum_all()
        .unwrap();
    assert_close("loss", &loss.reshape(1).unwrap(), &t["loss"], 1e-4);
    let grads = loss.backward().unwrap();
    assert_fixture_grads(&grads, &varmap, &t, &meta);
}

#[test]
fn an_image_of_partial_patches_is_refused() {
    let (dino, _, _, _) = model();
    let img = Tensor::zeros((1, 3, 18, 16), DType::F32, &Device::Cpu).unwrap();
    let err = dino.pooled(&img).unwrap_err().to_string();
    assert!(err.contains("18×16") && err.contains("4-px"), "{err}");
}
