//! Reduced precision end to end: `eval --dtype bf16|int8` reports what f32 does within
//! rounding, and `train --dtype bf16` records its precision and tracks f32's losses.

mod common;

use std::path::PathBuf;

use common::{clipforge, tmp, trained_run};

/// `eval --dtype bf16|int8` measures the same things as f32, and scores within a few images
/// of it: 96 scenes a split, a model of one step whose classes are nearly tied, so a tenth is
/// the tolerance here; docs/benchmarks.md has the trained model's figures.
#[test]
fn reduced_precision_eval_reports_what_f32_does_within_rounding() {
    let run = trained_run("bf16-eval-run");
    let eval = |dtype: &str| -> serde_json::Value {
        let o = clipforge(&[
            "eval",
            "--checkpoint",
            run.to_str().unwrap(),
            "--images",
            "96",
            "--dtype",
            dtype,
            "--json",
        ]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        serde_json::from_slice(&o.stdout).expect("one JSON object")
    };
    let a = eval("f32");
    let keys = |v: &serde_json::Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
    for dtype in ["bf16", "int8"] {
        let b = eval(dtype);
        assert_eq!(keys(&a), keys(&b));
        for key in ["heldout_top1", "seen_top1", "heldout_top5", "seen_top5"] {
            let (x, y) = (a[key].as_f64().unwrap(), b[key].as_f64().unwrap());
            assert!((x - y).abs() <= 0.1, "{key}: f32 {x}, {dtype} {y}");
        }
    }
}

/// `train --dtype bf16` records its precision in the run's config (so a resume keeps it) and
/// trains as f32 does within bf16 rounding: the same batches' losses within 1%, and — where
/// the CPU has bf16 products — not f32's exact losses.
#[test]
fn bf16_training_is_recorded_and_tracks_f32() {
    let losses = |dtype: &str| -> (PathBuf, Vec<f64>) {
        let out = tmp(&format!("train-{dtype}"));
        let o = clipforge(&[
            "train",
            "--model",
            "tiny",
            "--steps",
            "4",
            "--batch-size",
            "16",
            "--dtype",
            dtype,
            "--quiet",
            "--out",
            out.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let metrics = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
        let v = metrics
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["loss"]
                    .as_f64()
                    .unwrap()
            })
            .collect();
        (out, v)
    };
    let (_, a) = losses("f32");
    let (run, b) = losses("bf16");
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("config.json")).unwrap()).unwrap();
    assert_eq!(cfg["bf16"], serde_json::Value::Bool(true));
    assert_eq!(a.len(), 4);
    for (x, y) in a.iter().zip(&b) {
        assert!((x - y).abs() < 0.01 * x.abs(), "f32 {x}, bf16 {y}");
    }
    if clip::ops::bf16_kernel().is_some() {
        assert_ne!(a, b, "bf16 products gave f32's exact losses");
    }
    let o = clipforge(&[
        "train", "--model", "tiny", "--dtype", "int8", "--steps", "1",
    ]);
    assert!(!o.status.success(), "int8 is not a training precision");
}
