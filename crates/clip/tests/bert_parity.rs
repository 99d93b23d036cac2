//! The BERT text tower against Hugging Face `transformers`' `BertModel` (fixture
//! `tests/fixtures/bert.*`, made by `scripts/bert_fixture.py`): five texts of different lengths
//! padded to the longest; the last layer's rows at the tokens, the mean pooling with padding
//! left out, the CLS row, and the gradients of a fixed function of the pooled features.

mod common;

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use clip::bert::{Bert, BertCfg, Pooling};
use common::{assert_close, assert_fixture_grads, load_fixture};

fn model(pooling: Pooling) -> (Bert, VarMap, HashMap<String, Tensor>, serde_json::Value) {
    let (t, meta) = load_fixture("bert");
    let mut cfg: BertCfg = serde_json::from_value(meta["config"].clone()).unwrap();
    cfg.pooling = pooling;
    let varmap = VarMap::new();
    let bert = Bert::new(
        VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu),
        &cfg,
    )
    .unwrap();
    let weights: HashMap<String, Tensor> = t
        .iter()
        .filter_map(|(k, v)| {
            k.strip_prefix("weights.")
                .map(|k| (k.to_string(), v.clone()))
        })
        .collect();
    clip::weights::assign(&varmap, weights, "bert fixture").unwrap();
    (bert, varmap, t, meta)
}

fn inputs(t: &HashMap<String, Tensor>) -> (Tensor, Tensor) {
    let u32s = |k: &str| t[k].to_dtype(DType::U32).unwrap();
    (u32s("ids"), u32s("mask"))
}

#[test]
fn rows_and_pooled_features_match_transformers() {
    let (bert, _, t, meta) = model(Pooling::Mean);
    let (ids, mask) = inputs(&t);
    let hidden = bert.hidden(&ids, &mask).unwrap(); // [B, T, W]
                                                    // Rows at padding are not read by anything; compare the tokens' rows.
    let lengths: Vec<usize> = serde_json::from_value(meta["lengths"].clone()).unwrap();
    for (i, &n) in lengths.iter().enumerate() {
        let got = hidden.get(i).unwrap().narrow(0, 0, n).unwrap();
        let want = t["hidden"].get(i).unwrap().narrow(0, 0, n).unwrap();
        assert_close(&format!("hidden rows of text {i}"), &got, &want, 1e-4);
    }
    let mean = bert.pooled(&ids, &mask).unwrap();
    assert_close("mean pooling", &mean, &t["mean"], 1e-4);
    let (cls_bert, ..) = model(Pooling::Cls);
    assert_close(
        "CLS pooling",
        &cls_bert.pooled(&ids, &mask).unwrap(),
        &t["cls"],
        1e-4,
    );
}

#[test]
fn gradients_match_transformers() {
    let (bert, varmap, t, meta) = model(Pooling::Mean);
    let (ids, mask) = inputs(&t);
    let mean = bert.pooled(&ids, &mask).unwrap(); // [B, W]
    let loss = mean
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
