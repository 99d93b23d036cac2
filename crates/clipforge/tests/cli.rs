//! The `clipforge` binary end to end: tokenize and embed outputs, and one-line errors with a
//! non-zero exit (never a panic) for bad configs, weights and images.

mod common;

use std::path::{Path, PathBuf};

use common::{assert_clean_error, clipforge, tmp, trained_run};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures")
        .join(name)
}

fn init_weights(model: &str, name: &str) -> PathBuf {
    let path = tmp(name);
    let out = clipforge(&[
        "init",
        "--model",
        model,
        "--seed",
        "1",
        "--out",
        path.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    path
}

#[test]
fn tokenize_prints_json_id_rows() {
    let out = clipforge(&[
        "tokenize",
        "--context-length",
        "6",
        "--json",
        "a diagram",
        "a dog",
    ]);
    assert!(out.status.success());
    let rows: Vec<Vec<u32>> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        rows,
        vec![
            vec![49406, 320, 22697, 49407, 0, 0],
            vec![49406, 320, 1929, 49407, 0, 0]
        ]
    );
}

#[test]
fn embed_prints_unit_embeddings_that_match_the_library() {
    let weights = init_weights("tiny", "tiny.safetensors");
    let image = fixture("transform_wide.png");
    let out = clipforge(&[
        "embed",
        "--model",
        "tiny",
        "--weights",
        weights.to_str().unwrap(),
        "--text",
        "a red circle",
        "--text",
        "a dog",
        "--image",
        image.to_str().unwrap(),
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let texts: Vec<Vec<f32>> = serde_json::from_value(v["text_embeds"].clone()).unwrap();
    let images: Vec<Vec<f32>> = serde_json::from_value(v["image_embeds"].clone()).unwrap();
    assert_eq!((texts.len(), images.len()), (2, 1));
    for e in texts.iter().chain(&images) {
        assert_eq!(e.len(), 128);
        let norm: f32 = e.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5, "norm {norm}");
    }
    assert_ne!(texts[0], texts[1]);

    // The same numbers through the library.
    let dev = candle_core::Device::Cpu;
    let cfg = clip::ClipConfig::preset("tiny").unwrap();
    let (model, varmap) = clip::Clip::with_varmap(&cfg, &dev).unwrap();
    clip::weights::load_into(&varmap, &weights).unwrap();
    let ids = clip::Tokenizer::new()
        .tokenize_tensor(&["a red circle"], 32, &dev)
        .unwrap();
    let lib: Vec<Vec<f32>> = model.encode_text(&ids).unwrap().to_vec2().unwrap();
    for (a, b) in lib[0].iter().zip(&texts[0]) {
        assert!((a - b).abs() < 1e-6);
    }
}

#[test]
fn unknown_config_field_is_a_one_line_error() {
    let cfg = tmp("bad_field.json");
    std::fs::write(&cfg, r#"{"embed_dim": 8, "vision_cfg": {"image_size": 8, "patch_size": 4, "width": 8, "layers": 1, "head_width": 4, "depth": 2}, "text_cfg": {}}"#).unwrap();
    let out = clipforge(&[
        "embed",
        "--model",
        cfg.to_str().unwrap(),
        "--weights",
        "x.safetensors",
        "--text",
        "a",
    ]);
    assert_clean_error(&out, &["bad_field.json", "unknown field `depth`"]);
}

#[test]
fn impossible_shape_is_a_one_line_error() {
    let cfg = tmp("bad_shape.json");
    std::fs::write(&cfg, r#"{"embed_dim": 8, "vision_cfg": {"image_size": 30, "patch_size": 4, "width": 8, "layers": 1, "head_width": 4}, "text_cfg": {}}"#).unwrap();
    let out = clipforge(&[
        "init",
        "--model",
        cfg.to_str().unwrap(),
        "--out",
        tmp("never.safetensors").to_str().unwrap(),
    ]);
    assert_clean_error(
        &out,
        &[
            "bad_shape.json",
            "vision_cfg.image_size 30 is not divisible by vision_cfg.patch_size 4",
        ],
    );
}

#[test]
fn unknown_model_name_is_a_one_line_error() {
    let out = clipforge(&[
        "embed",
        "--model",
        "ViT-Z-99",
        "--weights",
        "x.safetensors",
        "--text",
        "a",
    ]);
    assert_clean_error(&out, &["ViT-Z-99", "neither a preset"]);
}

#[test]
fn mismatched_weights_name_the_tensor_and_shapes() {
    let weights = init_weights("tiny", "tiny_for_small.safetensors");
    let out = clipforge(&[
        "embed",
        "--model",
        "small",
        "--weights",
        weights.to_str().unwrap(),
        "--text",
        "a",
    ]);
    assert_clean_error(
        &out,
        &["tiny_for_small.safetensors", "has shape", "expected"],
    );
}

#[test]
fn weights_that_are_not_safetensors_are_named() {
    let path = tmp("garbage.safetensors");
    std::fs::write(&path, vec![0xffu8; 64]).unwrap();
    let out = clipforge(&[
        "embed",
        "--model",
        "tiny",
        "--weights",
        path.to_str().unwrap(),
        "--text",
        "a",
    ]);
    assert_clean_error(&out, &["garbage.safetensors", "not a safetensors file"]);
    let out = clipforge(&[
        "embed",
        "--model",
        "tiny",
        "--weights",
        tmp("absent.safetensors").to_str().unwrap(),
        "--text",
        "a",
    ]);
    assert_clean_error(&out, &["absent.safetensors", "cannot read"]);
}

#[test]
fn an_image_that_does_not_decode_is_named() {
    let weights = init_weights("tiny", "tiny_img.safetensors");
    let bad = tmp("broken.png");
    std::fs::write(&bad, b"\x89PNG\r\n\x1a\nthis is not really a png").unwrap();
    let out = clipforge(&[
        "embed",
        "--model",
        "tiny",
        "--weights",
        weights.to_str().unwrap(),
        "--image",
        bad.to_str().unwrap(),
    ]);
    assert_clean_error(&out, &["broken.png", "does not decode"]);
}

#[test]
fn too_small_vocabulary_for_text_is_explained() {
    let cfg = tmp("small_vocab.json");
    std::fs::write(&cfg, r#"{"embed_dim": 8, "vision_cfg": {"image_size": 8, "patch_size": 4, "width": 8, "layers": 1, "head_width": 4}, "text_cfg": {"vocab_size": 100, "width": 8, "heads": 2, "layers": 1, "context_length": 8}}"#).unwrap();
    let weights = init_weights(cfg.to_str().unwrap(), "small_vocab.safetensors");
    let out = clipforge(&[
        "embed",
        "--model",
        cfg.to_str().unwrap(),
        "--weights",
        weights.to_str().unwrap(),
        "--text",
        "a",
    ]);
    assert_clean_error(&out, &["vocab_size is 100"]);
}

#[test]
fn bench_prints_one_json_object_of_positive_figures() {
    let out = clipforge(&[
        "bench",
        "--model",
        "tiny",
        "--batch-size",
        "4",
        "--steps",
        "1",
        "--warmup",
        "0",
        "--loader-image-size",
        "32",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    for key in [
        "train_step_s_median",
        "image_encode_per_s",
        "text_encode_per_s",
        "tokenizer_per_s",
        "loader_images_per_s",
        "peak_rss_mb",
    ] {
        let x = v[key]
            .as_f64()
            .unwrap_or_else(|| panic!("{key} missing: {v}"));
        assert!(x.is_finite() && x > 0.0, "{key} = {x}");
    }
}

/// `eval --json` on the built-in scenes after a 1-step run: both classifiers' figures are there,
/// and the colour/shape split of held-out top-1 is consistent with it (an exact hit is a hit on
/// both halves; a hit on both halves is an exact hit).
#[test]
fn builtin_eval_reports_both_classifiers_and_consistent_parts() {
    let run = trained_run("builtin-eval-run");
    let o = clipforge(&[
        "eval",
        "--checkpoint",
        run.to_str().unwrap(),
        "--images",
        "48",
        "--json",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("one JSON object");
    let f = |key: &str| -> f64 {
        let x = v[key]
            .as_f64()
            .unwrap_or_else(|| panic!("{key} missing: {v}"));
        assert!((0.0..=1.0).contains(&x), "{key} = {x}");
        x
    };
    for (top1, top5) in [("heldout_top1", "heldout_top5"), ("seen_top1", "seen_top5")] {
        assert!(f(top1) <= f(top5), "{top1} > {top5}: {v}");
    }
    let (top1, colour, shape) = (
        f("heldout_top1"),
        f("heldout_colour_top1"),
        f("heldout_shape_top1"),
    );
    assert!(top1 <= colour.min(shape), "{v}");
    assert!(colour + shape - 1.0 <= top1 + 1e-9, "{v}");
    assert_eq!(v["classes"], 64);
    assert_eq!(v["images"], 48);
}

#[test]
fn too_many_hard_negatives_is_a_one_line_error() {
    let out = clipforge(&[
        "train",
        "--steps",
        "1",
        "--hard-negatives",
        "9",
        "--out",
        tmp("hn-run").to_str().unwrap(),
    ]);
    assert_clean_error(&out, &["hard-negatives", "got 9"]);
}

#[test]
fn bad_device_is_a_one_line_error() {
    let out = clipforge(&["bench", "--device", "tpu", "--steps", "1"]);
    assert_clean_error(&out, &["--device", "'tpu'", "cpu, cuda or cuda:N"]);
    let out = clipforge(&["bench", "--device", "cuda:x", "--steps", "1"]);
    assert_clean_error(&out, &["--device", "'cuda:x'", "cuda:N"]);
    let out = clipforge(&["eval", "--checkpoint", "x", "--task", "classify"]);
    assert_clean_error(
        &out,
        &["--task", "'classify'", "zeroshot, linear-probe, retrieval"],
    );
}

/// The CPU build names the feature to build with when asked for a GPU.
#[cfg(not(feature = "cuda"))]
#[test]
fn cuda_without_the_feature_says_how_to_build_it() {
    let out = clipforge(&[
        "train",
        "--device",
        "cuda",
        "--steps",
        "1",
        "--out",
        tmp("cuda-run").to_str().unwrap(),
    ]);
    assert_clean_error(&out, &["--device cuda", "--features cuda"]);
}

/// A config whose tensors cannot fit in memory is refused before anything is allocated (it
/// used to abort the process in the allocator), for every command that builds a model.
#[test]
fn a_model_larger_than_memory_is_a_one_line_error() {
    let mut cfg: serde_json::Value =
        serde_json::from_str(include_str!("../../../configs/models/tiny.json")).unwrap();
    cfg["vision_cfg"]["width"] = 1_000_000_000u64.into();
    cfg["vision_cfg"]["head_width"] = 1_000.into();
    let path = tmp("width-1e9.json");
    std::fs::write(&path, cfg.to_string()).unwrap();
    let p = path.to_str().unwrap();
    let out_dir = tmp("width-1e9-run");
    let runs: [&[&str]; 3] = [
        &["init", "--model", p, "--out", "unused.safetensors"],
        &[
            "train",
            "--model",
            p,
            "--steps",
            "1",
            "--out",
            out_dir.to_str().unwrap(),
        ],
        &["bench", "--model", p, "--steps", "1"],
    ];
    for args in runs {
        let out = clipforge(args);
        assert_clean_error(&out, &["vision_cfg.width 1000000000", "GiB"]);
    }
    assert!(
        !out_dir.exists(),
        "nothing written for a model that cannot be built"
    );
}

/// A weights file cut short (a copy interrupted) is a one-line error naming the file.
#[test]
fn a_truncated_weights_file_is_a_one_line_error() {
    let full = tmp("whole.safetensors");
    let out = clipforge(&["init", "--model", "tiny", "--out", full.to_str().unwrap()]);
    assert!(out.status.success());
    let bytes = std::fs::read(&full).unwrap();
    let cut = tmp("cut.safetensors");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let args = [
        "--model",
        "tiny",
        "--weights",
        cut.to_str().unwrap(),
        "--text",
        "a",
    ];
    let out = clipforge(&[&["embed"][..], &args[..]].concat());
    assert_clean_error(&out, &["cut.safetensors", "not a safetensors file"]);
}

/// A model config naming a pretrained tower that is not fetched says how to fetch it; an
/// unknown model name for `model fetch` lists the known ones. Neither downloads anything.
#[test]
fn missing_pretrained_towers_name_the_fetch_command() {
    let dir = tmp("no-models");
    std::fs::create_dir_all(&dir).unwrap();
    let out = common::clipforge_in(
        &dir,
        &[
            "init",
            "--model",
            "lit-dinov2-s14",
            "--out",
            "x.safetensors",
        ],
    );
    assert_clean_error(&out, &["dinov2-s14", "clipforge model fetch dinov2-s14"]);
    assert!(!dir.join("x.safetensors").exists());

    let out = clipforge(&["model", "fetch", "resnet-9000"]);
    assert_clean_error(&out, &["resnet-9000", "minilm-l6", "dinov2-s14"]);
}

/// `estimate` measures a training step here and prices a run; its figures follow the model's.
#[test]
fn estimate_times_a_step_and_prices_the_run() {
    let out = clipforge(&[
        "estimate",
        "--model",
        "tiny",
        "--samples",
        "100x16",
        "--batch-size",
        "16",
        "--measure-batch",
        "4",
        "--measure-steps",
        "1",
        "--device-tflops",
        "10",
        "--devices",
        "2",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["samples"], 1600.0);
    let total = v["total_flops"].as_f64().unwrap();
    let per_pair = v["train_gflops_per_pair"].as_f64().unwrap() * 1e9;
    assert!((total - 1600.0 * per_pair).abs() / total < 1e-9);
    let days = v["device_days"].as_f64().unwrap();
    assert!((days - total / 20e12 / 86_400.0).abs() / days < 1e-9);
    let rate = v["measured"]["tflops"].as_f64().unwrap();
    assert!(rate > 0.0 && v["measured"]["step_s"].as_f64().unwrap() > 0.0);
    assert!((v["measured_days"].as_f64().unwrap() - total / (rate * 1e12) / 86_400.0).abs() < 1e-9);

    let bad = clipforge(&["estimate", "--samples", "lots"]);
    assert_clean_error(&bad, &["--samples", "12.8B"]);
}
