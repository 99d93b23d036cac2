//! Helpers the CLI test files share: run the binary, a temporary path, a clean-error check.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Command, Output};

pub fn clipforge(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_clipforge"))
        .args(args)
        .output()
        .expect("run clipforge")
}

/// `clipforge ARGS` run in `dir`.
pub fn clipforge_in(dir: &std::path::Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_clipforge"))
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run clipforge")
}

/// A fresh path `name` in this process's scratch folder; whatever an earlier process with the
/// same id left there is removed first (process ids are reused).
pub fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("clipforge-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    let _ = std::fs::remove_dir_all(&path);
    let _ = std::fs::remove_file(&path);
    path
}

/// Fails with exit code ≠ 0, one line on stderr that contains every `needle`, and no panic.
pub fn assert_clean_error(out: &Output, needles: &[&str]) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "expected failure, got success; stderr: {stderr}"
    );
    assert!(!stderr.contains("panicked"), "panicked: {stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "not one line: {stderr}");
    for n in needles {
        assert!(stderr.contains(n), "stderr lacks {n:?}: {stderr}");
    }
}

/// A 1-step `tiny` run on the built-in scenes, to evaluate (its weights barely trained: the
/// tests check the runners, not the model).
pub fn trained_run(tag: &str) -> PathBuf {
    let out = tmp(tag);
    let o = clipforge(&[
        "train",
        "--model",
        "tiny",
        "--steps",
        "1",
        "--batch-size",
        "4",
        "--quiet",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    out
}
