//! `clipforge lab`: every experiment's quick form runs end to end in a smoke configuration
//! (`--max-steps`), writes its report, plots and JSON, and reuses the runs it trained.

mod common;

use std::path::Path;

use common::{assert_clean_error, clipforge, tmp};

/// Removes a test's scratch folder when the test ends (a quick lab run leaves over a GB of
/// checkpoints and caches).
struct Clean(std::path::PathBuf);

impl Drop for Clean {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn run_lab(experiment: &str, out: &Path) -> serde_json::Value {
    let o = clipforge(&[
        "lab",
        experiment,
        "--quick",
        "--max-steps",
        "4",
        "--out",
        out.to_str().unwrap(),
        "--json",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("one JSON object");
    assert_eq!(v["experiment"], experiment);
    assert_eq!(v["quick"], true);
    assert!(v["seconds"].as_f64().unwrap() > 0.0);
    let md = std::fs::read_to_string(out.join(format!("{experiment}.md"))).unwrap();
    for heading in [
        "## The question",
        "## Setup",
        "## What it shows",
        "## What it does not show",
    ] {
        assert!(md.contains(heading), "{experiment}.md lacks {heading}");
    }
    assert!(md.contains("Quick run"), "quick figures must be labelled");
    let on_disk: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.join(format!("{experiment}.json"))).unwrap(),
    )
    .unwrap();
    assert_eq!(on_disk, v);
    for plot in v["results"]["plots"].as_array().expect("plots listed") {
        let path = out.join(plot.as_str().unwrap());
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(
            bytes.starts_with(b"\x89PNG"),
            "{} is not a PNG",
            path.display()
        );
        assert!(
            md.contains(plot.as_str().unwrap()),
            "{experiment}.md does not show {plot}"
        );
    }
    v
}

#[test]
fn loss_takes_one_batch_apart() {
    let out = tmp("lab-loss");
    let _clean = Clean(out.clone());
    let v = run_lab("loss", &out);
    let r = &v["results"];
    let views = r["over_training"].as_array().unwrap();
    assert!(views.len() >= 2, "before and after training");
    let n = r["captions"].as_array().unwrap().len();
    for view in views {
        for key in ["cosine", "logits", "softmax_rows", "softmax_cols"] {
            let m = view[key].as_array().unwrap();
            assert_eq!(m.len(), n, "{key}");
            assert!(
                m.iter().all(|row| row.as_array().unwrap().len() == n),
                "{key}"
            );
        }
        for key in [
            "ce_image_to_text",
            "ce_text_to_image",
            "grad_positive",
            "grad_hardest_negative",
        ] {
            assert_eq!(view[key].as_array().unwrap().len(), n, "{key}");
        }
        assert!(view["loss"].as_f64().unwrap() > 0.0);
    }
    assert_eq!(r["temperatures"].as_array().unwrap().len(), 3);
    assert_eq!(r["reused_run"], false);
    // The same configuration again: the trained run is reused, not retrained.
    let again = run_lab("loss", &out);
    assert_eq!(again["results"]["reused_run"], true);
    assert_eq!(
        again["results"]["over_training"],
        v["results"]["over_training"]
    );
}

#[test]
fn captions_vs_labels_scores_three_views() {
    let out = tmp("lab-captions");
    let _clean = Clean(out.clone());
    let v = run_lab("captions-vs-labels", &out);
    let views = v["results"]["views"].as_array().unwrap();
    let names: Vec<&str> = views.iter().map(|x| x["text"].as_str().unwrap()).collect();
    assert_eq!(names, ["captions", "labels", "bag-of-words"]);
    for view in views {
        let run = &view["runs"][0];
        for key in ["heldout_top1", "seen_top1"] {
            let x = run["zero_shot"][key].as_f64().unwrap();
            assert!((0.0..=1.0).contains(&x), "{key} = {x}");
        }
        let rel = &run["relation"];
        assert!(rel["scenes"].as_u64().unwrap() > 0);
        assert!((0.0..=1.0).contains(&rel["accuracy"].as_f64().unwrap()));
    }
    // Labels are bare class names; a bag of words holds the caption's words.
    let label = views[1]["example_captions"][0].as_str().unwrap();
    assert_eq!(label.split_whitespace().count(), 2, "{label}");
}

#[test]
fn an_unknown_experiment_names_the_known_ones() {
    let o = clipforge(&["lab", "nonsense"]);
    assert_clean_error(
        &o,
        &["nonsense", "loss", "captions-vs-labels", "embedding-space"],
    );
}

#[test]
fn embedding_space_projects_before_and_after() {
    let out = tmp("lab-embedding");
    let _clean = Clean(out.clone());
    let v = run_lab("embedding-space", &out);
    let r = &v["results"];
    let n = r["image_classes"].as_array().unwrap().len();
    assert_eq!(
        n as u64,
        r["seen_images"].as_u64().unwrap() + r["heldout_images"].as_u64().unwrap()
    );
    for when in ["before", "after"] {
        let s = &r[when];
        assert_eq!(s["image_points"].as_array().unwrap().len(), n);
        assert_eq!(s["text_points"].as_array().unwrap().len(), 64);
        let share: f64 = s["explained_variance"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .sum();
        assert!(share > 0.0 && share <= 1.0 + 1e-9, "{share}");
        for key in ["knn_same_class", "knn_same_colour", "knn_same_shape"] {
            assert!((0.0..=1.0).contains(&s[key].as_f64().unwrap()), "{key}");
        }
        assert!(s["modality_gap"].as_f64().unwrap() >= 0.0);
    }
}

#[test]
fn projection_compares_four_heads() {
    let out = tmp("lab-projection");
    let _clean = Clean(out.clone());
    let v = run_lab("projection", &out);
    let heads = v["results"]["heads"].as_array().unwrap();
    let kinds: Vec<&str> = heads
        .iter()
        .map(|h| h["proj_type"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["none", "linear", "mlp", "mlp"]);
    for h in heads {
        for x in [
            h["zero_shot"]["heldout_top1"].as_f64().unwrap(),
            h["retrieval"]["text_retrieval_recall@1"].as_f64().unwrap(),
            h["probe_top1"].as_f64().unwrap(),
        ] {
            assert!((0.0..=1.0).contains(&x), "{h}");
        }
        assert!(h["modality_gap"].as_f64().unwrap() >= 0.0);
    }
}

#[test]
fn negatives_compares_clip_and_siglip_across_batch_sizes() {
    let out = tmp("lab-negatives");
    let _clean = Clean(out.clone());
    let v = run_lab("negatives", &out);
    let r = &v["results"];
    let sizes: Vec<u64> = r["batch_sizes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap())
        .collect();
    assert!(sizes.len() >= 3, "{sizes:?}");
    let runs = r["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2 * sizes.len());
    for run in runs {
        let siglip = run["loss"] == "siglip";
        assert!(siglip || run["loss"] == "clip", "{}", run["loss"]);
        assert_eq!(run["final_logit_bias"].is_f64(), siglip, "{run}");
        let x = run["zero_shot"]["heldout_top1"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&x));
        assert!(run["retrieval"]["text_retrieval_recall@1"].is_f64());
    }
}

#[test]
fn scaling_trains_each_family_at_equal_compute() {
    let out = tmp("lab-scaling");
    let _clean = Clean(out.clone());
    let v = run_lab("scaling", &out);
    let runs = v["results"]["runs"].as_array().unwrap();
    let families: Vec<&str> = runs.iter().map(|r| r["family"].as_str().unwrap()).collect();
    for f in ["base", "width", "depth", "resolution", "compound"] {
        assert!(families.contains(&f), "{f} missing from {families:?}");
    }
    let base = runs[0]["image_forward_flops"].as_f64().unwrap();
    for run in &runs[1..] {
        let ratio = run["image_forward_flops"].as_f64().unwrap() / base;
        assert!((1.5..5.0).contains(&ratio), "{}: {ratio}", run["family"]);
        assert!(!run["along_training"].as_array().unwrap().is_empty());
        assert!(!run["loss_windows"].as_array().unwrap().is_empty());
    }
}

/// A small DINOv2 (the parity fixture's, as `clipforge model fetch` lays a model out) and a
/// small captioned corpus of coloured squares, written into `root`.
fn pretrained_world(root: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures");
    let tower = root.join("models/dino-small");
    std::fs::create_dir_all(&tower).unwrap();
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixtures.join("dinov2.json")).unwrap())
            .unwrap();
    std::fs::write(tower.join("config.json"), meta["config"].to_string()).unwrap();
    let tensors = clip::weights::read_safetensors(
        &fixtures.join("dinov2.safetensors"),
        &candle_core::Device::Cpu,
    )
    .unwrap();
    let weights: std::collections::HashMap<String, candle_core::Tensor> = tensors
        .into_iter()
        .filter_map(|(k, v)| k.strip_prefix("weights.").map(|k| (k.to_string(), v)))
        .filter(|(k, _)| k != "embeddings.mask_token")
        .collect();
    clip::weights::save_tensors(&weights, &tower.join("model.safetensors")).unwrap();
    let model = root.join("lit-small.json");
    std::fs::write(
        &model,
        format!(
            r#"{{"embed_dim": 16,
            "vision_cfg": {{"kind": "dinov2", "pretrained": "{}", "pretrained_image_size": 20,
                "image_size": 16, "patch_size": 4, "width": 32, "layers": 2, "head_width": 8, "mlp_ratio": 4}},
            "text_cfg": {{"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}}}"#,
            tower.display()
        ),
    )
    .unwrap();

    let data = root.join("squares");
    std::fs::create_dir_all(&data).unwrap();
    let colours = [
        ("red", [220u8, 30, 30]),
        ("green", [30, 200, 40]),
        ("blue", [30, 40, 220]),
    ];
    for (split, n) in [("train", 24), ("test", 9)] {
        let mut w = clip_data::files::ShardWriter::new(&data, split, 100).unwrap();
        for i in 0..n {
            let (name, rgb) = colours[i % 3];
            let img = image::RgbImage::from_fn(24, 24, |x, y| {
                let inside = (4 + i % 5..16 + i % 5).contains(&(x as usize)) && y > 4 && y < 18;
                image::Rgb(if inside { rgb } else { [240, 240, 240] })
            });
            let mut bytes = Vec::new();
            img.write_to(
                &mut std::io::Cursor::new(&mut bytes),
                image::ImageFormat::Png,
            )
            .unwrap();
            w.write(&bytes, "png", &format!("a {name} square, number {i}"))
                .unwrap();
        }
        w.finish().unwrap();
    }
    let info = serde_json::json!({
        "name": "squares",
        "splits": {"train": {"shards": "train-{000000..000000}.tar", "count": 24},
                   "test": {"shards": "test-{000000..000000}.tar", "count": 9}},
        "source": {"registry": "none", "package": "written by this test", "version": "0", "files": []},
        "license": "CC0", "caption_rule": "as written"
    });
    std::fs::write(data.join("dataset.json"), info.to_string()).unwrap();
    (model, data)
}

#[test]
fn pretrained_compares_scratch_locked_and_fine_tuned() {
    let root = tmp("lab-pretrained");
    let _clean = Clean(root.clone());
    std::fs::create_dir_all(&root).unwrap();
    let (model, data) = pretrained_world(&root);
    let o = common::clipforge_in(
        &root,
        &[
            "lab",
            "pretrained",
            "--quick",
            "--max-steps",
            "3",
            "--out",
            "lab",
            "--json",
            "--dataset",
            data.to_str().unwrap(),
            "--pretrained-model",
            model.to_str().unwrap(),
            "--image-size",
            "16",
        ],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let runs = v["results"]["runs"].as_array().unwrap();
    let ways: Vec<&str> = runs.iter().map(|r| r["way"].as_str().unwrap()).collect();
    assert_eq!(ways, ["scratch", "locked", "fine_tuned"]);
    for run in runs {
        for k in ["text_retrieval_recall@5", "image_retrieval_recall@5"] {
            let x = run["retrieval"][k].as_f64().unwrap();
            assert!((0.0..=1.0).contains(&x), "{k} = {x}");
        }
    }
    assert!(root.join("lab/pretrained.md").is_file());
    assert!(root.join("lab/pretrained/retrieval.png").is_file());
    // The locked tower's features went to the cache under the working directory.
    assert!(root.join("cache/features").is_dir());
}
