//! `clipforge eval --dataset` and `clipforge data fetch` end to end, on small labelled datasets
//! written here: the linear probe separates what is separable, zero-shot's counts add up, and
//! bad datasets (no dataset.json, labels beyond the class list, a pattern matching no shard,
//! an interrupted fetch) are clear one-line errors. Nothing here downloads.

mod common;

use std::path::Path;

use clip_data::files::ShardWriter;
use common::{assert_clean_error, clipforge, clipforge_in, tmp, trained_run};

/// A 20×20 PNG, dark for class 0 and bright for class 1, with per-pixel noise.
fn png(label: usize, i: usize) -> Vec<u8> {
    let base = if label == 0 { 40u32 } else { 200 };
    let px: Vec<u8> = (0..20 * 20)
        .map(|p| (base + ((p * 7 + i * 13) % 31) as u32) as u8)
        .collect();
    let mut bytes = Vec::new();
    image::GrayImage::from_raw(20, 20, px)
        .unwrap()
        .write_to(
            &mut std::io::Cursor::new(&mut bytes),
            image::ImageFormat::Png,
        )
        .unwrap();
    bytes
}

/// Train and test shards of two classes (dark, bright), and a dataset.json naming `classes`.
fn write_dataset(dir: &Path, classes: &[&str], test_shards: &str) {
    for (split, n) in [("train", 60), ("test", 40)] {
        let mut w = ShardWriter::new(dir, split, 25).unwrap();
        for i in 0..n {
            let label = i % 2;
            w.write_labelled(
                &png(label, i),
                "png",
                &format!("a {} square", ["dark", "bright"][label]),
                Some(label),
            )
            .unwrap();
        }
        w.finish().unwrap();
    }
    let info = serde_json::json!({
        "name": "dark-bright",
        "classes": classes,
        "templates": ["a {} square", "a picture of a {} square"],
        "splits": {
            "train": {"shards": "train-{000000..000002}.tar", "count": 60},
            "test": {"shards": test_shards, "count": 40}
        },
        "source": {"registry": "none", "package": "written by this test", "version": "0", "files": []},
        "license": "CC0",
        "caption_rule": "class name in the first template"
    });
    std::fs::write(dir.join("dataset.json"), info.to_string()).unwrap();
}

/// `clipforge eval` with the default task on `ds`, its output as it comes.
fn eval_default(run: &Path, ds: &Path) -> std::process::Output {
    let (run, ds) = (run.to_str().unwrap(), ds.to_str().unwrap());
    clipforge(&["eval", "--checkpoint", run, "--dataset", ds])
}

fn eval_json(run: &Path, ds: &Path, extra: &[&str]) -> serde_json::Value {
    let mut args = vec![
        "eval",
        "--checkpoint",
        run.to_str().unwrap(),
        "--dataset",
        ds.to_str().unwrap(),
        "--json",
    ];
    args.extend_from_slice(extra);
    let o = clipforge(&args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

#[test]
fn linear_probe_separates_the_separable_and_zero_shot_counts_add_up() {
    let run = trained_run("ds-run-ok");
    let ds = tmp("ds-ok");
    std::fs::create_dir_all(&ds).unwrap();
    write_dataset(&ds, &["dark", "bright"], "test-{000000..000001}.tar");

    let probe = eval_json(
        &run,
        &ds,
        &["--task", "linear-probe", "--features", "pixels"],
    );
    assert_eq!(probe["task"], "linear_probe");
    assert_eq!(probe["test_images"], 40);
    let acc = probe["metrics"]["acc1"].as_f64().unwrap();
    assert!(
        acc >= 0.95,
        "dark against bright must be linearly separable: {probe}"
    );

    let zs = eval_json(&run, &ds, &["--task", "zeroshot"]);
    assert_eq!(zs["task"], "zeroshot_classification");
    for key in ["acc1", "acc5", "mean_per_class_recall"] {
        let v = zs["metrics"][key].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&v), "{key} = {v}");
    }
    assert_eq!(
        zs["metrics"]["acc5"], 1.0,
        "two classes: the truth is always in the top 5"
    );
    let png = zs["details"]["confusion_png"].as_str().unwrap();
    assert!(Path::new(png).is_file(), "{png}");
}

#[test]
fn a_directory_without_dataset_json_is_a_clear_error() {
    let run = trained_run("ds-run-nojson");
    let ds = tmp("ds-nojson");
    std::fs::create_dir_all(&ds).unwrap();
    let o = eval_default(&run, &ds);
    assert_clean_error(&o, &["dataset.json", "clipforge data fetch"]);
}

#[test]
fn a_bare_name_means_data_slash_name_and_says_how_to_fetch_it() {
    let run = trained_run("ds-run-bare");
    let cwd = tmp("cwd-bare");
    std::fs::create_dir_all(&cwd).unwrap();
    let args = |name: &'static str| {
        [
            "eval",
            "--checkpoint",
            run.to_str().unwrap(),
            "--dataset",
            name,
            "--task",
            "zeroshot",
            "--json",
        ]
        .map(str::to_string)
    };
    let run_in =
        |a: [String; 8]| clipforge_in(&cwd, &a.iter().map(String::as_str).collect::<Vec<_>>());
    assert_clean_error(
        &run_in(args("mnist")),
        &["dataset mnist is not fetched", "clipforge data fetch mnist"],
    );
    write_dataset(
        &cwd.join("data/mnist"),
        &["dark", "bright"],
        "test-{000000..000001}.tar",
    );
    let o = run_in(args("mnist"));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["task"], "zeroshot_classification");
}

#[test]
fn labels_beyond_the_class_names_are_a_clear_error() {
    let run = trained_run("ds-run-labels");
    let ds = tmp("ds-labels");
    std::fs::create_dir_all(&ds).unwrap();
    write_dataset(&ds, &["dark"], "test-{000000..000001}.tar");
    let o = eval_default(&run, &ds);
    assert_clean_error(&o, &["label 1", "1 classes", "do not match"]);
}

#[test]
fn a_shard_pattern_that_matches_nothing_is_a_clear_error() {
    let run = trained_run("ds-run-pattern");
    let ds = tmp("ds-pattern");
    std::fs::create_dir_all(&ds).unwrap();
    write_dataset(&ds, &["dark", "bright"], "missing-{000000..000003}.tar");
    let o = eval_default(&run, &ds);
    assert_clean_error(&o, &["missing-", "matches no file"]);
}

#[test]
fn fetch_leaves_a_complete_dataset_alone_and_a_partial_one_looks_incomplete() {
    let root = tmp("fetch-root");
    let done = root.join("fashion-mnist");
    std::fs::create_dir_all(&done).unwrap();
    write_dataset(&done, &["dark", "bright"], "test-{000000..000001}.tar");
    let before = std::fs::read(done.join("dataset.json")).unwrap();
    let o = clipforge(&[
        "data",
        "fetch",
        "fashion-mnist",
        "--root",
        root.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains("already present, nothing fetched"));
    assert_eq!(std::fs::read(done.join("dataset.json")).unwrap(), before);

    // What an interrupted fetch leaves: shards in NAME.partial/, no dataset.json, no NAME/.
    let root2 = tmp("fetch-root2");
    let partial = root2.join("fashion-mnist.partial");
    std::fs::create_dir_all(&partial).unwrap();
    ShardWriter::new(&partial, "train", 10)
        .unwrap()
        .finish()
        .unwrap();
    let run = trained_run("ds-run-partial");
    let o = clipforge(&[
        "eval",
        "--checkpoint",
        run.to_str().unwrap(),
        "--dataset",
        root2.join("fashion-mnist").to_str().unwrap(),
    ]);
    assert_clean_error(&o, &["dataset.json"]);

    let o = clipforge(&[
        "data",
        "fetch",
        "imagenet",
        "--root",
        root.to_str().unwrap(),
    ]);
    assert_clean_error(&o, &["unknown dataset \"imagenet\"", "fashion-mnist"]);
}

#[test]
fn train_reads_a_fetched_datasets_train_split() {
    let ds = tmp("ds-train");
    std::fs::create_dir_all(&ds).unwrap();
    write_dataset(&ds, &["dark", "bright"], "test-{000000..000001}.tar");
    let out = tmp("ds-train-run");
    let o = clipforge(&[
        "train",
        "--model",
        "tiny",
        "--dataset",
        ds.to_str().unwrap(),
        "--steps",
        "2",
        "--batch-size",
        "8",
        "--quiet",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(cfg["data"]["kind"], "wds");
    assert!(cfg["data"]["pattern"]
        .as_str()
        .unwrap()
        .ends_with("train-{000000..000002}.tar"));
    assert_eq!(
        std::fs::read_to_string(out.join("metrics.jsonl"))
            .unwrap()
            .lines()
            .count(),
        2
    );
}

#[test]
fn retrieval_counts_images_once_and_recall_grows_with_k() {
    let run = trained_run("ds-run-retrieval");
    let ds = tmp("ds-retrieval");
    std::fs::create_dir_all(&ds).unwrap();
    let mut w = ShardWriter::new(&ds, "test", 100).unwrap();
    for i in 0..8 {
        w.write(&png(i % 2, i), "png", &format!("picture number {i}"))
            .unwrap();
    }
    // Image 0 again with a second caption: one image, two captions.
    w.write(&png(0, 0), "png", "the very first picture")
        .unwrap();
    w.finish().unwrap();
    let info = serde_json::json!({
        "name": "captioned", "splits": {"test": {"shards": "test-{000000..000000}.tar", "count": 9}},
        "source": {"registry": "none", "package": "written by this test", "version": "0", "files": []},
        "license": "CC0", "caption_rule": "as written"
    });
    std::fs::write(ds.join("dataset.json"), info.to_string()).unwrap();
    let v = eval_json(&run, &ds, &["--task", "retrieval"]);
    let m = &v["metrics"];
    assert_eq!(m["images"], 8, "{v}");
    assert_eq!(m["texts"], 9, "{v}");
    for dir in ["text", "image"] {
        let r = |k: u32| m[format!("{dir}_retrieval_recall@{k}")].as_f64().unwrap();
        assert!(r(1) <= r(5) && r(5) <= r(10), "{v}");
        assert_eq!(
            r(10),
            1.0,
            "8 images, 9 texts: everything is in the top 10 ({v})"
        );
    }
}

/// `--dataset folder:PATH`: a labelled image folder (one sub-folder per class, `_` read as a
/// space), zero-shot with CLIP's 80 templates or a file's, a linear probe on its fixed 90/10
/// split, and one-line errors for a folder without classes and a template without `{}`.
#[test]
fn an_image_folder_evaluates_end_to_end() {
    let run = trained_run("folder-run");
    let root = tmp("folder-ds");
    for (label, class) in ["dark_square", "bright_square"].iter().enumerate() {
        let dir = root.join(class);
        std::fs::create_dir_all(dir.join("more")).unwrap();
        for i in 0..30 {
            let sub = if i % 3 == 0 {
                dir.join("more")
            } else {
                dir.clone()
            };
            std::fs::write(sub.join(format!("img{i:02}.png")), png(label, i)).unwrap();
        }
        std::fs::write(dir.join("notes.txt"), "not an image").unwrap();
    }
    let ds = format!("folder:{}", root.display());
    let eval = |extra: &[&str]| {
        let mut args = vec![
            "eval",
            "--checkpoint",
            run.to_str().unwrap(),
            "--dataset",
            &ds,
        ];
        args.extend_from_slice(extra);
        clipforge(&args)
    };
    let json = |extra: &[&str]| -> serde_json::Value {
        let o = eval(&[extra, &["--json"][..]].concat());
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        serde_json::from_slice(&o.stdout).unwrap()
    };

    let zs = json(&["--task", "zeroshot"]);
    assert_eq!(zs["task"], "zeroshot_classification");
    assert_eq!(zs["classes"], 2);
    assert_eq!(
        zs["test_images"], 60,
        "every image, sub-folders included, no text file"
    );
    let png = zs["details"]["confusion_png"].as_str().unwrap();
    assert!(Path::new(png).is_file(), "{png}");

    let templates = tmp("folder-templates.txt");
    std::fs::write(&templates, "# mine\na {} tile\n\na picture of a {}\n").unwrap();
    let own = json(&[
        "--task",
        "zeroshot",
        "--templates",
        templates.to_str().unwrap(),
    ]);
    assert_eq!(own["test_images"], 60);
    let some = json(&["--task", "zeroshot", "--test-limit", "10"]);
    assert_eq!(some["test_images"], 10, "every sixth image past the limit");

    let probe = json(&["--task", "linear-probe", "--features", "pixels"]);
    assert_eq!(probe["task"], "linear_probe");
    let (test, train) = (
        probe["test_images"].as_u64().unwrap(),
        probe["details"]["train_images"].as_u64().unwrap(),
    );
    assert_eq!(test + train, 60, "the 90/10 split covers every image once");
    assert!(test >= 1 && train > test, "{probe}");
    assert!(
        probe["metrics"]["acc1"].as_f64().unwrap() >= 0.95,
        "{probe}"
    );

    std::fs::write(&templates, "a tile\n").unwrap();
    let out = eval(&["--templates", templates.to_str().unwrap()]);
    assert_clean_error(&out, &["folder-templates.txt:1", "{}"]);
    let empty = tmp("folder-empty");
    std::fs::create_dir_all(&empty).unwrap();
    let (run_s, ds_empty) = (run.to_str().unwrap(), format!("folder:{}", empty.display()));
    let out = clipforge(&["eval", "--checkpoint", run_s, "--dataset", &ds_empty]);
    assert_clean_error(&out, &["folder-empty", "no class folders"]);
}

/// `--dataset captions-csv:FILE`: retrieval over an image–caption listing; rows naming the same
/// image are one image with several captions; any other task is a one-line error.
#[test]
fn a_caption_listing_evaluates_retrieval() {
    let run = trained_run("captions-csv-run");
    let dir = tmp("captions-csv");
    std::fs::create_dir_all(dir.join("img")).unwrap();
    let mut rows = String::from("filepath,title\n");
    for i in 0..4 {
        std::fs::write(dir.join(format!("img/{i}.png")), png(i % 2, i)).unwrap();
        rows += &format!("img/{i}.png,picture number {i}\n");
        if i < 2 {
            rows += &format!("img/{i}.png,another caption of picture {i}\n");
        }
    }
    let list = dir.join("pairs.csv");
    std::fs::write(&list, rows).unwrap();
    let (run_s, ds) = (
        run.to_str().unwrap(),
        format!("captions-csv:{}", list.display()),
    );
    let args = ["eval", "--checkpoint", run_s, "--dataset", &ds];
    let o = clipforge(&[&args[..], &["--task", "retrieval", "--json"]].concat());
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let m = &v["metrics"];
    assert_eq!(
        (m["images"].as_u64(), m["texts"].as_u64()),
        (Some(4), Some(6)),
        "{v}"
    );
    for k in ["text_retrieval_recall@10", "image_retrieval_recall@10"] {
        assert_eq!(m[k], 1.0, "4 images: every match is in the top 10: {v}");
    }
    let out = clipforge(&[&args[..], &["--task", "zeroshot"]].concat());
    assert_clean_error(&out, &["pairs.csv", "--task retrieval"]);
}
