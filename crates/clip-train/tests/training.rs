//! Training-loop guarantees: exact resume, accumulation that equals the full batch, the loss
//! falling well below chance on the built-in scenes, and AdamW's parameter groups.

mod common;

use std::path::PathBuf;

use clip::ClipConfig;
use clip_train::{StepMetrics, TrainConfig, Trainer};
use common::micro_config;

fn run_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("clipforge-train-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn losses(dir: &std::path::Path) -> Vec<(u64, f64)> {
    std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<StepMetrics>(l).unwrap())
        .map(|m| (m.step, m.loss))
        .collect()
}

#[test]
fn resume_continues_exactly() {
    let straight = check_resume(micro_config(8), "builtin");
    std::fs::remove_dir_all(straight).ok();
}

#[test]
fn resume_continues_exactly_on_streamed_shards() {
    let shards = run_dir("shards");
    std::fs::create_dir_all(&shards).unwrap();
    let mut cfg = micro_config(8);
    cfg.data = clip_train::DataSpec::Wds {
        pattern: common::write_scene_shards(&shards, 40, 8, Some(6)),
        workers: 3,
        shuffle_buffer: 10,
    };
    let straight = check_resume(cfg, "wds");
    // 8 steps × 16 = 128 samples: three whole epochs of 40, each reported with its bad image.
    let epochs: Vec<serde_json::Value> = std::fs::read_to_string(straight.join("epochs.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(epochs.len(), 3, "{epochs:?}");
    for (e, r) in epochs.iter().enumerate() {
        assert_eq!(r["epoch"], e as u64);
        assert_eq!(r["samples"], 39);
        assert_eq!(r["skipped"]["corrupt_image"], 1);
    }
    let skipped: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(straight.join("skipped.json")).unwrap())
            .unwrap();
    assert!(skipped["corrupt_image"].as_u64().unwrap() >= 3, "{skipped}");
    for d in [straight, shards] {
        std::fs::remove_dir_all(d).ok();
    }
}

/// Train `cfg` straight, and again stopped after 3 steps and resumed: every loss must match.
/// Returns the straight run's directory (the caller removes it).
fn check_resume(cfg: TrainConfig, tag: &str) -> PathBuf {
    let straight = run_dir(&format!("straight-{tag}"));
    Trainer::new(cfg.clone(), &straight)
        .unwrap()
        .run(&mut ())
        .unwrap();

    let split = run_dir(&format!("split-{tag}"));
    let mut first = Trainer::new(cfg, &split).unwrap();
    for _ in 0..3 {
        let b = first.batch_for(first.step).unwrap();
        let m = first.train_step(&b).unwrap();
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(split.join("metrics.jsonl"))
            .and_then(|mut f| {
                std::io::Write::write_all(
                    &mut f,
                    format!("{}\n", serde_json::to_string(&m).unwrap()).as_bytes(),
                )
            })
            .unwrap();
    }
    first.save_checkpoint().unwrap();
    drop(first);
    let mut resumed = Trainer::resume(&split, None).unwrap();
    assert_eq!(resumed.step, 3);
    resumed.run(&mut ()).unwrap();

    let (a, b) = (losses(&straight), losses(&split));
    assert_eq!(a.len(), 8);
    assert_eq!(
        a, b,
        "every loss after resuming must equal the uninterrupted run's"
    );
    for f in [
        "loss.png",
        "similarity_start.png",
        "similarity_end.png",
        "config.json",
        "checkpoints/latest",
    ] {
        assert!(
            straight.join(f).is_file(),
            "{} lacks {f}",
            straight.display()
        );
    }
    std::fs::remove_dir_all(split).ok();
    straight
}

#[test]
fn accumulation_gives_the_full_batch_gradient() {
    check_accumulation(micro_config(1), "accum");
}

#[test]
fn accumulation_gives_the_full_batch_gradient_under_siglip() {
    let mut cfg = micro_config(1);
    cfg.use_siglip();
    check_accumulation(cfg, "accum-siglip");
}

/// SigLIP training: the model gains `logit_bias` (−10 at start, ln 10 temperature), the bias
/// learns, the checkpoint keeps it and a resumed run continues exactly.
#[test]
fn siglip_trains_its_bias_and_resumes_exactly() {
    let mut cfg = micro_config(8);
    cfg.use_siglip();
    let dir = check_resume(cfg, "siglip");
    let metrics: Vec<StepMetrics> = std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let (first, last) = (&metrics[0], &metrics[metrics.len() - 1]);
    assert!(
        (first.logit_scale - 10.0).abs() < 0.1,
        "SigLIP starts at exp(t) = 10, got {}",
        first.logit_scale
    );
    let (b0, b1) = (first.logit_bias.unwrap(), last.logit_bias.unwrap());
    assert!(
        (b0 + 10.0).abs() < 0.05 && (b1 - b0).abs() > 1e-3,
        "the bias starts at -10 and learns: {b0} -> {b1}"
    );
    let ckpt = clip_train::checkpoint::resolve(&dir).unwrap();
    let tensors =
        clip::weights::read_safetensors(&ckpt.join("model.safetensors"), &candle_core::Device::Cpu)
            .unwrap();
    assert!(
        tensors.contains_key("logit_bias"),
        "the checkpoint keeps the bias"
    );
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn siglip_without_a_bias_is_refused_by_name() {
    let mut cfg = micro_config(1);
    cfg.loss = clip_train::config::LossKind::Siglip;
    let err = cfg.validate().unwrap_err().to_string();
    assert!(err.contains("init_logit_bias"), "{err}");
}

/// The loss and every gradient of one batch of 32, whole and as 4 micro-batches of 8.
fn check_accumulation(mut cfg: TrainConfig, tag: &str) {
    cfg.batch_size = 32;
    let dir = run_dir(tag);
    let full = Trainer::new(cfg.clone(), &dir).unwrap();
    cfg.accum_freq = 4;
    let accum = Trainer::new(cfg, &dir).unwrap();
    let batch = full.batch_for(0).unwrap();
    let (l1, g1) = full.loss_and_grads(&batch).unwrap();
    let (l4, g4) = accum.loss_and_grads(&batch).unwrap();
    assert!((l1 - l4).abs() < 1e-6, "loss {l1} vs {l4}");
    let vars1 = full.varmap.data().lock().unwrap();
    let vars4 = accum.varmap.data().lock().unwrap();
    let mut checked = 0;
    for (name, v1) in vars1.iter() {
        let a: Vec<f32> = g1
            .get(v1.as_tensor())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let b: Vec<f32> = g4
            .get(vars4[name].as_tensor())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let diff = a
            .iter()
            .zip(&b)
            .map(|(x, y)| ((x - y) as f64).powi(2))
            .sum::<f64>()
            .sqrt();
        let norm = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
        assert!(
            diff <= 1e-5 * norm.max(1e-3),
            "{name}: |Δ| {diff}, |g| {norm}"
        );
        checked += 1;
    }
    assert!(checked > 10);
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn weight_decay_applies_to_weights_only() {
    let cfg = micro_config(1);
    let dir = run_dir("groups");
    let t = Trainer::new(cfg, &dir).unwrap();
    let decayed = t.optim.decayed();
    assert!(decayed.contains(&"visual.transformer.resblocks.0.attn.in_proj_weight"));
    assert!(decayed.contains(&"text_projection"));
    for name in [
        "logit_scale",
        "token_embedding.weight",
        "positional_embedding",
        "ln_final.weight",
        "visual.class_embedding",
        "transformer.resblocks.0.mlp.c_fc.bias",
    ] {
        assert!(!decayed.contains(&name), "{name} must not decay");
    }
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn tiny_loss_falls_well_below_chance() {
    let mut cfg = TrainConfig::new("tiny", ClipConfig::preset("tiny").unwrap(), 150);
    cfg.batch_size = 16;
    cfg.lr = 2e-3;
    cfg.warmup = 15;
    cfg.checkpoint_every = 1000;
    let dir = run_dir("tiny");
    let mut t = Trainer::new(cfg, &dir).unwrap();
    t.run(&mut ()).unwrap();
    let l = losses(&dir);
    let chance = 16f64.ln();
    let first: f64 = l[..10].iter().map(|x| x.1).sum::<f64>() / 10.0;
    let last: f64 = l[l.len() - 10..].iter().map(|x| x.1).sum::<f64>() / 10.0;
    assert!(
        first > 0.8 * chance,
        "starts near ln N: {first} vs {chance}"
    );
    assert!(
        last < 0.5 * chance,
        "after 150 steps the loss {last} should be well below ln N = {chance}"
    );
    std::fs::remove_dir_all(dir).ok();
}

/// LiT: a locked image tower keeps its initial weights bit for bit, has no optimiser state, and
/// the text tower and temperature still train; a partly unlocked tower trains only its last
/// groups (here the projection head).
#[test]
fn locked_towers_do_not_move() {
    let initial = |cfg: &TrainConfig| {
        let dir = run_dir("lock-init");
        let t = Trainer::new(cfg.clone(), &dir).unwrap();
        let w = weights(&t);
        std::fs::remove_dir_all(dir).ok();
        w
    };
    for unlocked in [0, 1] {
        let mut cfg = micro_config(3);
        cfg.lock.image = true;
        cfg.lock.image_unlocked_groups = unlocked;
        let before = initial(&cfg);
        let dir = run_dir(&format!("lock-{unlocked}"));
        let mut t = Trainer::new(cfg, &dir).unwrap();
        t.run(&mut ()).unwrap();
        let after = weights(&t);
        for (name, b) in &before {
            let moved = after[name] != *b;
            let head = name == "visual.proj";
            let locked = name.starts_with("visual.") && !(unlocked == 1 && head);
            assert_eq!(moved, !locked, "{name} (unlocked groups {unlocked})");
        }
        let state = t.optim.state_tensors().unwrap();
        assert!(state.keys().any(|k| k == "m.visual.proj") == (unlocked == 1));
        assert!(
            !state.keys().any(|k| k == "m.visual.conv1.weight"),
            "no state when locked"
        );
        assert!(state.contains_key("m.token_embedding.weight"));
        std::fs::remove_dir_all(dir).ok();
    }
}

/// Every parameter's values by name.
fn weights(t: &Trainer) -> std::collections::HashMap<String, Vec<f32>> {
    let data = t.varmap.data().lock().unwrap();
    data.iter()
        .map(|(k, v)| {
            (
                k.clone(),
                v.as_tensor().flatten_all().unwrap().to_vec1().unwrap(),
            )
        })
        .collect()
}

/// A locked image tower's features, cached: the same losses as running the tower every step
/// (the batches are the same samples in the same order), a file per tower in the cache
/// directory, read again by the next run; with the text tower locked too, its features are
/// cached beside.
#[test]
fn cached_features_train_as_the_tower_would() {
    let data = run_dir("cache-data");
    let listing = common::write_listing(&data);
    let cache = data.join("cache");
    let config = |cached: bool, lock_text: bool| {
        let mut cfg = micro_config(4);
        cfg.data = clip_train::config::DataSpec::Csv {
            path: listing.clone(),
            img_key: "filepath".into(),
            caption_key: "title".into(),
        };
        cfg.batch_size = 8;
        cfg.lock.image = true;
        cfg.lock.text = lock_text;
        cfg.augment = false;
        cfg.feature_cache = cached.then(|| cache.clone());
        cfg
    };
    let train = |cfg: TrainConfig, tag: &str| {
        let dir = run_dir(tag);
        let mut t = Trainer::new(cfg, &dir).unwrap();
        t.run(&mut ()).unwrap();
        let l = losses(&dir);
        std::fs::remove_dir_all(dir).ok();
        l
    };
    let cache_files = || -> Vec<(String, std::time::SystemTime)> {
        let mut v: Vec<_> = std::fs::read_dir(&cache)
            .unwrap()
            .map(|e| e.unwrap())
            .map(|e| {
                (
                    e.file_name().to_string_lossy().to_string(),
                    e.metadata().unwrap().modified().unwrap(),
                )
            })
            .collect();
        v.sort();
        v
    };
    let uncached = train(config(false, false), "cache-off");
    let cached = train(config(true, false), "cache-on");
    assert_eq!(uncached.len(), 4);
    for ((s, a), (_, b)) in uncached.iter().zip(&cached) {
        assert!(
            (a - b).abs() < 1e-4,
            "step {s}: loss {a} running the tower, {b} from the cache"
        );
    }
    let files = cache_files();
    assert_eq!(files.len(), 1, "{files:?}");
    assert!(files[0].0.starts_with("image-"));
    let again = train(config(true, false), "cache-again");
    assert_eq!(again, cached, "a second run reads the same features");
    assert_eq!(cache_files(), files, "and does not write them again");

    let both = train(config(true, true), "cache-both");
    assert_eq!(both.len(), 4);
    let files = cache_files();
    assert_eq!(files.len(), 2, "{files:?}");
    assert!(files.iter().any(|(f, _)| f.starts_with("text-")));
    std::fs::remove_dir_all(data).ok();
}
