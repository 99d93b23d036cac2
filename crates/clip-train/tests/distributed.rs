//! Data-parallel training on a world of threads (`clip_train::dist::threads`, the same
//! collectives as MPI's): two processes of 8 pairs train like one process of 16 on the same
//! global batches — losses step by step and the weights after — with the whole N×N loss on
//! every process and with each process's rows only (local loss), with CLIP's loss and
//! SigLIP's, with accumulation, with a locked image tower's cached features; rank 0 alone
//! writes the run; a world of the wrong size is refused on resume; on streamed shards each
//! rank reads its own and resumes exactly.

mod common;

use std::path::{Path, PathBuf};

use candle_core::Device;
use clip_data::BatchSource;
use clip_train::dist::{threads, Comm};
use clip_train::{StepMetrics, TrainConfig, Trainer};

/// The shared micro model with a batch of `batch`.
fn micro_config(steps: u64, batch: usize) -> TrainConfig {
    let mut cfg = common::micro_config(steps);
    cfg.batch_size = batch;
    cfg
}

fn run_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("clipforge-dist-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn metrics(dir: &Path) -> Vec<StepMetrics> {
    std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Parameters by name.
type Weights = Vec<(String, Vec<f32>)>;

/// Every parameter, by name.
fn weights(t: &Trainer) -> Weights {
    let data = t.varmap.data().lock().unwrap();
    let mut out: Weights = data
        .iter()
        .map(|(k, v)| (k.clone(), v.flatten_all().unwrap().to_vec1().unwrap()))
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// Train `cfg` (its batch the global one) as one process and as `world` thread-processes;
/// compare the loss of every step and the final weights.
fn check_equivalence(mut cfg: TrainConfig, world: usize, tag: &str) {
    let one_dir = run_dir(&format!("{tag}-one"));
    let mut one = Trainer::new(cfg.clone(), &one_dir).unwrap();
    one.run(&mut ()).unwrap();

    cfg.batch_size /= world;
    cfg.world_size = world;
    let many_dir = run_dir(&format!("{tag}-many"));
    let handles: Vec<_> = threads::world(world)
        .into_iter()
        .map(|comm| {
            let (cfg, dir) = (cfg.clone(), many_dir.clone());
            std::thread::spawn(move || {
                let rank = comm.rank();
                let mut t = Trainer::new_in(cfg, &dir, Device::Cpu, Box::new(comm)).unwrap();
                t.run(&mut ()).unwrap();
                (rank, weights(&t))
            })
        })
        .collect();
    let results: Vec<(usize, Weights)> = handles.into_iter().map(|h| h.join().unwrap()).collect();

    let (a, b) = (metrics(&one_dir), metrics(&many_dir));
    assert_eq!(
        a.len(),
        b.len(),
        "{tag}: one metrics line per step, from rank 0"
    );
    for (x, y) in a.iter().zip(&b) {
        assert!(
            (x.loss - y.loss).abs() < 1e-5,
            "{tag}: step {}: loss {} alone, {} in a world of {world}",
            x.step,
            x.loss,
            y.loss
        );
        assert!(
            (x.grad_norm - y.grad_norm).abs() < 1e-4 * x.grad_norm.max(1.0),
            "{tag}: step {}: gradient norm {} against {}",
            x.step,
            x.grad_norm,
            y.grad_norm
        );
    }
    let w1 = weights(&one);
    for (rank, w) in &results {
        assert_eq!(w.len(), w1.len());
        for ((name, x), (_, y)) in w1.iter().zip(w) {
            let d = x
                .iter()
                .zip(y)
                .map(|(p, q)| (p - q).abs())
                .fold(0f32, f32::max);
            assert!(d < 1e-5, "{tag}: rank {rank}: {name} differs by {d}");
        }
    }
    // The ranks hold the same bits.
    for (_, w) in &results[1..] {
        assert_eq!(w, &results[0].1, "{tag}: the ranks' weights drifted apart");
    }
    std::fs::remove_dir_all(one_dir).ok();
    std::fs::remove_dir_all(many_dir).ok();
}

#[test]
fn a_world_of_one_takes_the_distributed_path_and_trains_like_one_process() {
    check_equivalence(micro_config(6, 16), 1, "world-of-one");
}

#[test]
fn two_processes_of_8_train_like_one_of_16() {
    check_equivalence(micro_config(12, 16), 2, "clip");
}

#[test]
fn local_loss_gives_the_same_training() {
    let mut cfg = micro_config(12, 16);
    cfg.local_loss = true;
    check_equivalence(cfg, 2, "local");
}

#[test]
fn siglip_and_accumulation_in_a_world_of_two() {
    let mut cfg = micro_config(8, 16);
    cfg.use_siglip();
    cfg.accum_freq = 2;
    check_equivalence(cfg.clone(), 2, "siglip-accum");
    cfg.local_loss = true;
    check_equivalence(cfg, 2, "siglip-accum-local");
}

/// A locked image tower (LiT) on file data, its features computed once and cached: each
/// process takes its share of the cached features, and trains like one process.
#[test]
fn a_locked_image_tower_with_cached_features_trains_like_one_process() {
    let data = run_dir("locked-data");
    let mut cfg = micro_config(6, 16);
    cfg.data = clip_train::config::DataSpec::Csv {
        path: common::write_listing(&data),
        img_key: "filepath".into(),
        caption_key: "title".into(),
    };
    cfg.lock.image = true;
    cfg.augment = false;
    cfg.feature_cache = Some(data.join("cache"));
    check_equivalence(cfg, 2, "locked-cached");
    assert!(
        std::fs::read_dir(data.join("cache")).unwrap().count() > 0,
        "the features were cached"
    );
    std::fs::remove_dir_all(data).ok();
}

#[test]
fn four_processes_train_like_one() {
    check_equivalence(micro_config(6, 16), 4, "four");
}

#[test]
fn only_rank_0_writes_and_a_resume_needs_the_same_world() {
    let mut cfg = micro_config(4, 8);
    cfg.world_size = 2;
    cfg.checkpoint_every = 2;
    let dir = run_dir("writes");
    let handles: Vec<_> = threads::world(2)
        .into_iter()
        .map(|comm| {
            let (cfg, dir) = (cfg.clone(), dir.clone());
            std::thread::spawn(move || {
                let mut t = Trainer::new_in(cfg, &dir, Device::Cpu, Box::new(comm)).unwrap();
                t.run(&mut ()).unwrap();
            })
        })
        .collect();
    handles.into_iter().for_each(|h| h.join().unwrap());
    assert_eq!(metrics(&dir).len(), 4, "one line per step");
    let saved = std::fs::read_to_string(dir.join("config.json")).unwrap();
    assert!(saved.contains("\"world_size\": 2"), "{saved}");

    let Err(e) = Trainer::resume(&dir, Some(6)) else {
        panic!("a run of two processes resumed as one");
    };
    let msg = e.to_string();
    assert!(
        msg.contains("2 process") && msg.contains("mpirun -np 2"),
        "{msg}"
    );
    std::fs::remove_dir_all(dir).ok();
}

/// Train `cfg` in a world of `world` threads; returns each rank's trainer's weights.
fn train_world(cfg: &TrainConfig, dir: &Path, world: usize, resume: bool) -> Vec<Weights> {
    let handles: Vec<_> = threads::world(world)
        .into_iter()
        .map(|comm| {
            let (cfg, dir) = (cfg.clone(), dir.to_path_buf());
            std::thread::spawn(move || {
                let mut t = if resume {
                    Trainer::resume_in(&dir, Some(cfg.steps), Device::Cpu, Box::new(comm)).unwrap()
                } else {
                    Trainer::new_in(cfg, &dir, Device::Cpu, Box::new(comm)).unwrap()
                };
                t.run(&mut ()).unwrap();
                weights(&t)
            })
        })
        .collect();
    handles.into_iter().map(|h| h.join().unwrap()).collect()
}

#[test]
fn ranks_stream_shards_of_their_own_and_resume_exactly() {
    // 5 shards of 8, one image broken; 2 processes of 8 pairs, 2 reader threads each.
    let shards = run_dir("own-shards");
    std::fs::create_dir_all(&shards).unwrap();
    let pattern = common::write_scene_shards(&shards, 40, 8, Some(13));
    let mut cfg = micro_config(6, 8);
    cfg.world_size = 2;
    cfg.checkpoint_every = 3;
    cfg.data = clip_train::DataSpec::Wds {
        pattern: pattern.clone(),
        workers: 2,
        shuffle_buffer: 6,
    };
    let straight = run_dir("own-shards-straight");
    let w_straight = train_world(&cfg, &straight, 2, false);

    // What each rank read, from its own stream (rank r of 2), step after step: disjoint
    // shards, and the world's skips are the sum of both ranks'.
    let paths = clip_data::files::shard_files(&pattern).unwrap();
    let mut skipped = [0usize; 6];
    let mut seen = Vec::new();
    for rank in 0..2 {
        let stream = clip_data::StreamCfg::new(2, 6, cfg.seed).for_rank(rank, 2);
        let b = clip_data::StreamBatcher::new(paths.clone(), stream, 16, 16);
        let mut caps = Vec::new();
        for step in 0..6 {
            caps.extend(b.batch(step * 8, 8, &Device::Cpu).unwrap().captions);
        }
        for (k, c) in b.skipped().unwrap().to_array().into_iter().enumerate() {
            skipped[k] += c;
        }
        seen.push(caps);
    }
    assert!(seen[0] != seen[1], "both ranks read the same samples");
    let written: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(straight.join("skipped.json")).unwrap())
            .unwrap();
    assert_eq!(
        written["corrupt_image"].as_u64().unwrap() as usize,
        skipped[2],
        "skipped.json holds the world's count: {written}"
    );
    assert!(skipped[2] >= 1, "the broken image was read: {skipped:?}");
    let epochs = std::fs::read_to_string(straight.join("epochs.jsonl")).unwrap();
    assert!(epochs.lines().all(|l| l.contains("\"rank\":0")), "{epochs}");

    // Stopped after step 3's checkpoint, then resumed to 6.
    let split = run_dir("own-shards-split");
    let handles: Vec<_> = threads::world(2)
        .into_iter()
        .map(|comm| {
            let (cfg, dir) = (cfg.clone(), split.clone());
            std::thread::spawn(move || {
                let rank = comm.rank();
                let mut t = Trainer::new_in(cfg, &dir, Device::Cpu, Box::new(comm)).unwrap();
                for _ in 0..3 {
                    let b = t.batch_for(t.step).unwrap();
                    t.train_step(&b).unwrap();
                }
                if rank == 0 {
                    t.save_checkpoint().unwrap();
                }
            })
        })
        .collect();
    handles.into_iter().for_each(|h| h.join().unwrap());
    let w_split = train_world(&cfg, &split, 2, true);
    let (a, b) = (metrics(&straight), metrics(&split));
    assert_eq!((a.len(), b.len()), (6, 3));
    for (x, y) in a[3..].iter().zip(&b) {
        assert_eq!(x.loss, y.loss, "step {}: the resumed run drifted", x.step);
    }
    assert_eq!(w_split, w_straight, "weights after resuming");
    for d in [shards, straight, split] {
        std::fs::remove_dir_all(d).ok();
    }
}

#[test]
fn a_share_short_of_a_bad_image_still_trains_like_one_process() {
    // A listing of 48 scenes, two of them broken images: some shares lose a pair, so the
    // shares are uneven (7 and 8), and the global batch must still be the one process's.
    let dir = run_dir("uneven-data");
    std::fs::create_dir_all(&dir).unwrap();
    let mut csv = String::from("filepath,title\n");
    for i in 0..48u64 {
        let scene = clip_data::Shapes::new(5, clip_data::Split::Train).scene(i);
        let px: Vec<u8> = scene.render(16).iter().map(|v| (v * 255.0) as u8).collect();
        let path = dir.join(format!("{i}.png"));
        if i == 3 || i == 20 {
            std::fs::write(&path, b"\x89PNG\r\n\x1a\nbroken").unwrap();
        } else {
            image::RgbImage::from_raw(16, 16, px)
                .unwrap()
                .save(&path)
                .unwrap();
        }
        csv.push_str(&format!("{},\"{}\"\n", path.display(), scene.caption()));
    }
    std::fs::write(dir.join("pairs.csv"), csv).unwrap();
    let mut cfg = micro_config(6, 16);
    cfg.data = clip_train::DataSpec::Csv {
        path: dir.join("pairs.csv"),
        img_key: "filepath".into(),
        caption_key: "title".into(),
    };
    check_equivalence(cfg.clone(), 2, "uneven");
    cfg.accum_freq = 2;
    cfg.local_loss = true;
    check_equivalence(cfg, 2, "uneven-accum");
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn fewer_shards_than_processes_is_refused_with_the_counts() {
    let shards = run_dir("few-shards");
    std::fs::create_dir_all(&shards).unwrap();
    let pattern = common::write_scene_shards(&shards, 6, 8, None); // one shard
    let mut cfg = micro_config(2, 8);
    cfg.world_size = 2;
    cfg.data = clip_train::DataSpec::Wds {
        pattern,
        workers: 1,
        shuffle_buffer: 1,
    };
    let dir = run_dir("few-shards-run");
    let errors: Vec<String> = threads::world(2)
        .into_iter()
        .map(|comm| {
            let (cfg, dir) = (cfg.clone(), dir.clone());
            std::thread::spawn(move || {
                match Trainer::new_in(cfg, &dir, Device::Cpu, Box::new(comm)) {
                    Ok(_) => String::new(),
                    Err(e) => e.to_string(),
                }
            })
        })
        .map(|h| h.join().unwrap())
        .collect();
    for e in errors {
        assert!(
            e.contains("1 shard(s) for 2 processes") && e.contains("shard-{000000..000000}.tar"),
            "{e}"
        );
    }
    for d in [shards, dir] {
        std::fs::remove_dir_all(d).ok();
    }
}
