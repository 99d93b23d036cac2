//! Shared helpers of the parity tests: fixture loading and tolerance checks.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};

pub fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

pub fn load_fixture(name: &str) -> (HashMap<String, Tensor>, serde_json::Value) {
    let dir = fixture_dir();
    let tensors =
        candle_core::safetensors::load(dir.join(format!("{name}.safetensors")), &Device::Cpu)
            .unwrap_or_else(|e| {
                panic!("fixture {name}: {e} (regenerate with scripts/make_fixtures.sh)")
            });
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join(format!("{name}.json"))).unwrap())
            .unwrap();
    (tensors, meta)
}

pub fn to_vec(t: &Tensor) -> Vec<f32> {
    t.to_dtype(DType::F32)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
}

/// Element-wise: |a − b| ≤ tol · max(1, |b|) (absolute for small values, relative where large).
pub fn assert_close(what: &str, got: &Tensor, want: &Tensor, tol: f32) {
    assert_eq!(got.dims(), want.dims(), "{what}: shape");
    let (g, w) = (to_vec(got), to_vec(want));
    let mut worst = (0f32, 0usize);
    for (i, (a, b)) in g.iter().zip(&w).enumerate() {
        let err = (a - b).abs() / b.abs().max(1.0);
        if err.is_nan() || err > worst.0 {
            worst = (err, i);
        }
    }
    assert!(
        worst.0 <= tol,
        "{what}: error {} at {} (got {}, want {}), tolerance {tol}",
        worst.0,
        worst.1,
        g[worst.1],
        w[worst.1]
    );
}

/// Norm-relative: ‖a − b‖ / ‖b‖ ≤ tol (for gradients, whose entries can be tiny).
pub fn rel_err(got: &[f32], want: &[f32]) -> f64 {
    assert_eq!(got.len(), want.len());
    let diff: f64 = got
        .iter()
        .zip(want)
        .map(|(a, b)| ((a - b) as f64).powi(2))
        .sum::<f64>()
        .sqrt();
    let norm: f64 = want.iter().map(|b| (*b as f64).powi(2)).sum::<f64>().sqrt();
    if norm == 0.0 {
        diff
    } else {
        diff / norm
    }
}

/// The fixture generator's formula weights (scripts/make_fixtures.py `det_param`):
/// uniform values with mean and std from splitmix64 of (index << 32) + i.
pub fn det_param(index: u64, numel: usize, mean: f64, std: f64) -> Vec<f32> {
    (0..numel as u64)
        .map(|i| {
            let x = (index << 32) + i;
            let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            let u = (z >> 11) as f64 * 2f64.powi(-53);
            (mean + (2.0 * u - 1.0) * 3f64.sqrt() * std) as f32
        })
        .collect()
}

/// The gradients of the parameters a fixture lists under `graded` (its JSON), each within a
/// relative 1e-3 of the fixture's `grad.KEY`.
pub fn assert_fixture_grads(
    grads: &candle_core::backprop::GradStore,
    varmap: &candle_nn::VarMap,
    t: &HashMap<String, Tensor>,
    meta: &serde_json::Value,
) {
    let data = varmap.data().lock().unwrap();
    for key in meta["graded"].as_array().unwrap() {
        let key = key.as_str().unwrap();
        let got = grads.get(data[key].as_tensor()).unwrap();
        let err = rel_err(&to_vec(got), &to_vec(&t[&format!("grad.{key}")]));
        assert!(err < 1e-3, "gradient of {key}: relative error {err}");
    }
}
