//! Data-parallel training on a world of threads (`clip_train::dist::threads`, the same
//! collectives as MPI's): two processes of 8 pairs train like one process of 16 on the same
//! global batches — losses step by step and the weights after — with the whole N×N loss on
//! every process and with each process's rows only (local loss), with CLIP's loss and
//! SigLIP's, with accumulation; rank 0 alone writes the run; a world of the wrong size is
//! refused on resume.

mod common;

use std::path::{Path, PathBuf};

use candle_core::Device;
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
