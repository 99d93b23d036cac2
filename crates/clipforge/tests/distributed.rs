//! `clipforge train --distributed` under a real `mpirun -np 2` (a binary built with
//! `--features mpi`; `.ci/run` installs Open MPI and builds so): two processes of 32 pairs
//! train like one process of 64 — losses every step for 20 steps, weights after; a rank
//! killed with SIGKILL stops the launch instead of hanging it, and the run resumes exactly; a
//! rank stopped with SIGSTOP ends it after `--collective-timeout`; a rank that fails with an
//! error stops the launch with that error; a resume in a world of another size is refused.
//! Without the feature, `--distributed` is a clear error; under CI (`CI` set) a build without
//! it fails here instead of skipping.
// Without the feature only the first test is built; the helpers wait for the others.
#![cfg_attr(not(feature = "mpi"), allow(dead_code, unused_imports))]

mod common;
mod launch;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{assert_clean_error, clipforge, tmp};
#[cfg(feature = "mpi")]
use launch::{has_mpirun, mpirun, run, spawn, ONE_LAUNCH};

#[cfg(not(feature = "mpi"))]
#[test]
fn distributed_without_mpi_says_how_to_build_it() {
    assert!(
        std::env::var_os("CI").is_none(),
        "CI must build the tests with --features clipforge/mpi (the mpirun tests would be skipped)"
    );
    let out = tmp("no-mpi");
    let o = clipforge(&[
        "train",
        "--distributed",
        "--steps",
        "1",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_clean_error(&o, &["--features mpi", "docs/distributed.md"]);
}

fn losses(dir: &Path) -> Vec<f64> {
    std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["loss"]
                .as_f64()
                .unwrap()
        })
        .collect()
}

/// The latest checkpoint's weights, by name.
fn weights(run: &Path) -> Vec<(String, Vec<f32>)> {
    let ckpt = clip_train::checkpoint::resolve(run).unwrap();
    let t =
        clip::weights::read_safetensors(&ckpt.join("model.safetensors"), &candle_core::Device::Cpu)
            .unwrap();
    let mut out: Vec<(String, Vec<f32>)> = t
        .into_iter()
        .map(|(k, v)| (k, v.flatten_all().unwrap().to_vec1().unwrap()))
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn max_weight_diff(a: &Path, b: &Path) -> f32 {
    let (wa, wb) = (weights(a), weights(b));
    assert_eq!(wa.len(), wb.len());
    wa.iter()
        .zip(&wb)
        .flat_map(|((na, x), (nb, y))| {
            assert_eq!(na, nb);
            x.iter().zip(y).map(|(p, q)| (p - q).abs())
        })
        .fold(0f32, f32::max)
}

#[cfg(feature = "mpi")]
#[test]
fn two_processes_of_32_train_like_one_of_64() {
    if !has_mpirun() {
        return;
    }
    let _one_launch = ONE_LAUNCH.lock().unwrap_or_else(|e| e.into_inner());
    let common = [
        "--model",
        "tiny",
        "--steps",
        "20",
        "--checkpoint-every",
        "20",
        "--quiet",
    ];
    let one = tmp("dist-one");
    let o = run(
        Command::new(env!("CARGO_BIN_EXE_clipforge"))
            .args([
                "train",
                "--batch-size",
                "64",
                "--out",
                one.to_str().unwrap(),
            ])
            .args(common)
            .env("RAYON_NUM_THREADS", "1"),
        "one process of 64",
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    let two = tmp("dist-two");
    let o = run(
        mpirun(
            2,
            &[
                "train",
                "--distributed",
                "--batch-size",
                "32",
                "--out",
                two.to_str().unwrap(),
            ],
        )
        .args(common),
        "mpirun -np 2, 32 each",
    );
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    assert!(
        stderr.contains("2 processes × 32 pairs = a global batch of 64"),
        "{stderr}"
    );
    let config = std::fs::read_to_string(two.join("config.json")).unwrap();
    assert!(config.contains("\"world_size\": 2"), "{config}");

    let (a, b) = (losses(&one), losses(&two));
    assert_eq!(
        (a.len(), b.len()),
        (20, 20),
        "one metrics line a step, from rank 0 alone"
    );
    for (step, (x, y)) in a.iter().zip(&b).enumerate() {
        assert!(
            (x - y).abs() < 1e-5,
            "step {step}: loss {x} alone, {y} as 2 × 32"
        );
    }
    let d = max_weight_diff(&one, &two);
    assert!(d < 1e-5, "weights after 20 steps differ by {d}");

    // The local loss (each process's rows against every column) trains the same.
    let local = tmp("dist-local");
    let o = run(
        mpirun(
            2,
            &[
                "train",
                "--distributed",
                "--local-loss",
                "--batch-size",
                "32",
                "--out",
                local.to_str().unwrap(),
            ],
        )
        .args(common),
        "mpirun -np 2 --local-loss",
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for (step, (x, y)) in a.iter().zip(&losses(&local)).enumerate() {
        assert!(
            (x - y).abs() < 1e-5,
            "local loss, step {step}: {x} against {y}"
        );
    }

    // A run of 2 processes does not resume as 1.
    let o = clipforge(&["train", "--resume", two.to_str().unwrap(), "--steps", "22"]);
    assert_clean_error(&o, &["2 process", "mpirun -np 2"]);
}

/// A `tiny` run of 40 steps of 16 a process, a checkpoint every 4: long enough to be
/// interrupted after its first checkpoint.
const CHECKPOINTED_RUN: [&str; 9] = [
    "--model",
    "tiny",
    "--batch-size",
    "16",
    "--steps",
    "40",
    "--checkpoint-every",
    "4",
    "--quiet",
];

#[cfg(feature = "mpi")]
#[test]
fn a_killed_rank_stops_the_launch_and_the_run_resumes_exactly() {
    if !has_mpirun() {
        return;
    }
    let common = CHECKPOINTED_RUN;
    let _one_launch = ONE_LAUNCH.lock().unwrap_or_else(|e| e.into_inner());
    let straight = tmp("dist-straight");
    let o = run(
        mpirun(
            2,
            &[
                "train",
                "--distributed",
                "--out",
                straight.to_str().unwrap(),
            ],
        )
        .args(common),
        "the uninterrupted launch",
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    let killed = tmp("dist-killed");
    let launch = spawn(
        mpirun(
            2,
            &["train", "--distributed", "--out", killed.to_str().unwrap()],
        )
        .args(common),
    );
    // Rank 1 killed mid-run.
    let launch = launch.signal_rank_1_after_a_checkpoint(&killed, "-9");
    let o = launch.wait(
        Duration::from_secs(60),
        "the launch after rank 1 was killed (it hangs instead of stopping)",
    );
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{stderr}");
    assert!(
        stderr.contains("signal 9") || stderr.contains("Killed"),
        "mpirun names the dead rank: {stderr}"
    );
    let done = losses(&killed).len();
    assert!(done < 40, "killed before the end ({done} steps)");

    // Resumed as 2 processes: it ends where the uninterrupted run ended.
    let o = run(
        &mut mpirun(
            2,
            &[
                "train",
                "--distributed",
                "--resume",
                killed.to_str().unwrap(),
                "--quiet",
            ],
        ),
        "the resumed launch",
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let (a, b) = (losses(&straight), losses(&killed));
    assert_eq!(a, b, "the resumed run's losses are the uninterrupted run's");
    assert_eq!(max_weight_diff(&straight, &killed), 0.0);
}

#[cfg(feature = "mpi")]
#[test]
fn a_stopped_rank_ends_the_launch_after_the_collective_timeout() {
    if !has_mpirun() {
        return;
    }
    let _one_launch = ONE_LAUNCH.lock().unwrap_or_else(|e| e.into_inner());
    let out = tmp("dist-stopped");
    let launch = spawn(
        mpirun(
            2,
            &[
                "train",
                "--distributed",
                "--collective-timeout",
                "20",
                "--out",
                out.to_str().unwrap(),
            ],
        )
        .args(CHECKPOINTED_RUN),
    );
    // After the first checkpoint, rank 1 is stopped (SIGSTOP): alive, so mpirun sees nothing
    // wrong, and rank 0 waits for it in the next collective.
    let launch = launch.signal_rank_1_after_a_checkpoint(&out, "-STOP");
    let o = launch.wait(
        Duration::from_secs(120),
        "the launch after rank 1 was stopped (rank 0 waits for it for ever)",
    );
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{stderr}");
    assert!(
        stderr.contains("error (rank 0, stopping the launch)")
            && stderr.contains("--collective-timeout 20"),
        "rank 0 says why it stops: {stderr}"
    );
    assert!(losses(&out).len() < 40, "stopped before the end");
}

#[cfg(feature = "mpi")]
#[test]
fn a_rank_that_fails_with_an_error_stops_the_launch_with_that_error() {
    if !has_mpirun() {
        return;
    }
    let _one_launch = ONE_LAUNCH.lock().unwrap_or_else(|e| e.into_inner());
    let out = tmp("dist-failing");
    std::fs::create_dir_all(&out).unwrap();
    // Rank 0 cannot write its first checkpoint (a file stands where the folder goes) while
    // rank 1, which writes nothing, goes on to the next step's collectives.
    let blocker = out.join("checkpoints");
    std::fs::write(&blocker, b"in the way").unwrap();
    let o = spawn(
        mpirun(
            2,
            &["train", "--distributed", "--out", out.to_str().unwrap()],
        )
        .args(CHECKPOINTED_RUN),
    )
    .wait(
        Duration::from_secs(120),
        "the launch whose rank 0 failed (the other rank waits for it for ever)",
    );
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{stderr}");
    assert!(
        stderr.contains("rank 0") && stderr.contains(blocker.to_str().unwrap()),
        "the failing rank and its error are named: {stderr}"
    );
    assert!(
        losses(&out).len() < 40,
        "the launch stopped at the failure: {stderr}"
    );
}
