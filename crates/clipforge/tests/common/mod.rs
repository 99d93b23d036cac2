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

/// A 32×32 PNG: a square of colour `rgb` at an offset `i` on white.
pub fn png(rgb: [u8; 3], i: usize) -> Vec<u8> {
    let img = image::RgbImage::from_fn(32, 32, |x, y| {
        let (x0, y0) = (4 + (i % 7) as u32, 4 + (i % 5) as u32);
        let inside = (x0..x0 + 18).contains(&x) && (y0..y0 + 18).contains(&y);
        image::Rgb(if inside { rgb } else { [255, 255, 255] })
    });
    let mut bytes = Vec::new();
    img.write_to(
        &mut std::io::Cursor::new(&mut bytes),
        image::ImageFormat::Png,
    )
    .unwrap();
    bytes
}

pub const COLOURS: [[u8; 3]; 4] = [[220, 30, 30], [30, 200, 40], [30, 40, 220], [230, 220, 30]];

/// `n` images in `dir` (half in a sub-folder), a corrupt JPEG and a text file.
pub fn photo_folder(dir: &std::path::Path, n: usize) {
    std::fs::create_dir_all(dir.join("sub/deeper")).unwrap();
    for i in 0..n {
        let sub = if i % 2 == 0 { "" } else { "sub/deeper/" };
        std::fs::write(
            dir.join(format!("{sub}img{i:03}.png")),
            png(COLOURS[i % 4], i),
        )
        .unwrap();
    }
    std::fs::write(dir.join("broken.jpg"), b"\xff\xd8\xff not really a jpeg").unwrap();
    std::fs::write(dir.join("notes.txt"), b"not an image").unwrap();
}

/// A child process killed when dropped.
pub struct Kill(pub std::process::Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `clipforge serve` on `index` with the model of `run` on a free port (and `extra` flags);
/// the process and its address (`127.0.0.1:PORT`), read from its first line.
pub fn serve(index: &std::path::Path, run: &std::path::Path, extra: &[&str]) -> (Kill, String) {
    use std::io::BufRead;
    let mut child = Command::new(env!("CARGO_BIN_EXE_clipforge"))
        .args([
            "serve",
            "--index",
            index.to_str().unwrap(),
            "--checkpoint",
            run.to_str().unwrap(),
            "--port",
            "0",
        ])
        .args(extra)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .rsplit("http://")
        .next()
        .filter(|_| line.starts_with("serving "))
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .trim_end_matches('/')
        .to_string();
    (Kill(child), addr)
}
