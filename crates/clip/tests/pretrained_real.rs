//! The real pretrained towers, as `clipforge model fetch` converts them, against their own
//! references (fixture `tests/fixtures/pretrained_real.*`, made by
//! `scripts/pretrained_check.py`): DINOv2 ViT-S/14 against onnxruntime running the package's
//! ONNX file, all-MiniLM-L6-v2's tokenizer and mean-pooled features against transformers.
//! They need `models/` (`clipforge model fetch minilm-l6`, `… dinov2-s14`), so they are run
//! on request: `cargo test --release -p clip --test pretrained_real -- --ignored`.

mod common;

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use common::{assert_close, load_fixture};

fn model_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../models")
        .join(name)
}

fn load<T>(name: &str, build: impl Fn(VarBuilder, &serde_json::Value) -> T) -> T {
    let dir = model_dir(name);
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    let varmap = VarMap::new();
    let tower = build(
        VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu),
        &cfg,
    );
    clip::weights::load_into(&varmap, &dir.join("model.safetensors")).unwrap();
    tower
}

/// The images `scripts/pretrained_check.py` makes: `[2, 3, 224, 224]`.
fn pattern_images() -> Tensor {
    let mut v = Vec::with_capacity(2 * 3 * 224 * 224);
    for img in 0..2 {
        for c in 0..3 {
            for y in 0..224 {
                for x in 0..224 {
                    let (c, y, x) = (c as f64, y as f64, x as f64);
                    v.push(if img == 0 {
                        ((0.05 * (x + 1.0) * (c + 1.0)).sin() * (0.07 * (y + 2.0)).cos()) as f32
                    } else {
                        ((0.011 * (x * y) / 50.0 + c).cos() + 0.5 * (0.13 * y - 0.4 * c).sin())
                            as f32
                    });
                }
            }
        }
    }
    Tensor::from_vec(v, (2, 3, 224, 224), &Device::Cpu).unwrap()
}

#[test]
#[ignore = "needs models/dinov2-s14 (clipforge model fetch dinov2-s14)"]
fn dinov2_s14_matches_onnxruntime_on_the_packaged_graph() {
    let (t, _) = load_fixture("pretrained_real");
    let dino = load("dinov2-s14", |vb, cfg| {
        let cfg: clip::dinov2::Dinov2Cfg = serde_json::from_value(cfg.clone()).unwrap();
        clip::dinov2::Dinov2::new(vb, &cfg).unwrap()
    });
    let cls = dino.pooled(&pattern_images()).unwrap(); // [2, 384]
    assert_close(
        "DINOv2-S class token at 224 px",
        &cls,
        &t["dinov2_cls"],
        1e-4,
    );
}

#[test]
#[ignore = "needs models/minilm-l6 (clipforge model fetch minilm-l6)"]
fn minilm_l6_tokens_and_features_match_transformers() {
    let (t, meta) = load_fixture("pretrained_real");
    let texts: Vec<String> = serde_json::from_value(meta["texts"].clone()).unwrap();
    let context = meta["context"].as_u64().unwrap() as usize;
    let tok = clip::bert_tokenizer::BertTokenizer::from_file(
        &model_dir("minilm-l6").join("tokenizer.json"),
    )
    .unwrap();
    let (ids, mask) = tok.tokenize(&texts, context, &Device::Cpu).unwrap();
    let want_ids = t["minilm_ids"].to_dtype(DType::U32).unwrap();
    assert_eq!(
        ids.to_vec2::<u32>().unwrap(),
        want_ids.to_vec2::<u32>().unwrap()
    );
    let want_mask = t["minilm_mask"].to_dtype(DType::U32).unwrap();
    assert_eq!(
        mask.to_vec2::<u32>().unwrap(),
        want_mask.to_vec2::<u32>().unwrap()
    );
    let bert = load("minilm-l6", |vb, cfg| {
        let cfg: clip::bert::BertCfg = serde_json::from_value(cfg.clone()).unwrap();
        clip::bert::Bert::new(vb, &cfg).unwrap()
    });
    let mean = bert.pooled(&ids, &mask).unwrap(); // [5, 384]
    assert_close("MiniLM mean pooling", &mean, &t["minilm_mean"], 1e-4);
}
