//! File-backed data: listings and WebDataset shards round-trip; a corrupt image, a missing
//! image, an empty caption and a truncated shard are skipped and counted, never a crash.

use std::path::{Path, PathBuf};

use candle_core::Device;
use clip_data::files::{expand_shards, read_csv, read_jsonl, read_shard, shard_files, ShardWriter};
use clip_data::{BatchSource, FileBatcher, Shapes, Split};

fn tmp(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("clipforge-data-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// PNG bytes of built-in scene `i` at 40 px.
fn scene_png(i: u64) -> (Vec<u8>, String) {
    let s = Shapes::new(5, Split::Train).scene(i);
    let px: Vec<u8> = s.render(40).iter().map(|v| (v * 255.0) as u8).collect();
    let img = image::RgbImage::from_raw(40, 40, px).unwrap();
    let mut bytes = Vec::new();
    img.write_to(
        &mut std::io::Cursor::new(&mut bytes),
        image::ImageFormat::Png,
    )
    .unwrap();
    (bytes, s.caption())
}

fn write_listing(dir: &Path) {
    std::fs::create_dir_all(dir.join("img")).unwrap();
    let mut csv = String::from("filepath,title\n");
    for i in 0..3 {
        let (png, cap) = scene_png(i);
        std::fs::write(dir.join(format!("img/{i}.png")), png).unwrap();
        csv.push_str(&format!("img/{i}.png,\"{cap}\"\n"));
    }
    std::fs::write(
        dir.join("img/corrupt.png"),
        b"\x89PNG\r\n\x1a\nnot an image",
    )
    .unwrap();
    csv.push_str("img/corrupt.png,a broken picture\n");
    csv.push_str("img/absent.png,a picture that is not there\n");
    let (png, _) = scene_png(9);
    std::fs::write(dir.join("img/nocap.png"), png).unwrap();
    csv.push_str("img/nocap.png,\"  \"\n");
    std::fs::write(dir.join("list.csv"), csv).unwrap();
}

#[test]
fn csv_listing_skips_and_counts_bad_rows() {
    let dir = tmp("csv");
    write_listing(&dir);
    let (samples, skips) = read_csv(&dir.join("list.csv"), "filepath", "title").unwrap();
    assert_eq!(
        samples.len(),
        4,
        "3 good rows and the corrupt one (found only when decoded)"
    );
    assert_eq!((skips.missing_image, skips.empty_caption), (1, 1));
    let batcher = FileBatcher::new(samples, skips, 0, 16, 16);
    let b = batcher.batch(0, 4, &Device::Cpu).unwrap();
    assert_eq!(
        b.pixels.dims(),
        &[3, 3, 16, 16],
        "the corrupt image is dropped from its batch"
    );
    assert_eq!(b.ids.dims(), &[3, 16]);
    let s = batcher.skips();
    assert_eq!(
        (s.corrupt_image, s.missing_image, s.empty_caption, s.total()),
        (1, 1, 1, 3)
    );
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn csv_without_the_named_column_is_a_clear_error() {
    let dir = tmp("csvcol");
    write_listing(&dir);
    let err = read_csv(&dir.join("list.csv"), "image", "title")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("list.csv")
            && err.contains("no column \"image\"")
            && err.contains("filepath, title"),
        "{err}"
    );
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn jsonl_listing_reads_and_names_bad_lines() {
    let dir = tmp("jsonl");
    write_listing(&dir);
    std::fs::write(dir.join("list.jsonl"), "{\"filepath\": \"img/0.png\", \"title\": \"a thing\"}\n{\"filepath\": \"img/1.png\", \"title\": \"b\"}\n").unwrap();
    let (samples, _) = read_jsonl(&dir.join("list.jsonl"), "filepath", "title").unwrap();
    assert_eq!(samples.len(), 2);
    std::fs::write(
        dir.join("bad.jsonl"),
        "{\"filepath\": \"img/0.png\", \"title\": \"a\"}\n{oops}\n",
    )
    .unwrap();
    let err = read_jsonl(&dir.join("bad.jsonl"), "filepath", "title")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("bad.jsonl:2") && err.contains("not JSON"),
        "{err}"
    );
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn shards_round_trip_and_a_truncated_shard_is_counted() {
    let dir = tmp("wds");
    let mut w = ShardWriter::new(&dir, "shard", 2).unwrap();
    let mut captions = Vec::new();
    for i in 0..5 {
        let (png, cap) = scene_png(i);
        w.write(&png, "png", &cap).unwrap();
        captions.push(cap);
    }
    let written = w.finish().unwrap();
    assert_eq!(written.len(), 3);
    let pattern = format!("{}/shard-{{000000..000002}}.tar", dir.display());
    let files = shard_files(&pattern).unwrap();
    assert_eq!(files, written);
    let mut read = Vec::new();
    for f in &files {
        let (s, k) = read_shard(f).unwrap();
        assert_eq!(k.total(), 0);
        read.extend(s.into_iter().map(|s| s.caption));
    }
    assert_eq!(read, captions);

    // Cut the first shard inside its second image: its first sample survives, the damage counts.
    let bytes = std::fs::read(&files[0]).unwrap();
    std::fs::write(&files[0], &bytes[..bytes.len() / 2 + 700]).unwrap();
    let (s, k) = read_shard(&files[0]).unwrap();
    assert!(s.len() < 2, "damaged shard kept {} samples", s.len());
    assert_eq!(k.truncated_shard, 1, "{k:?}");
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn shard_patterns_expand_and_empty_matches_are_errors() {
    assert_eq!(
        expand_shards("a-{08..11}.tar").unwrap(),
        vec!["a-08.tar", "a-09.tar", "a-10.tar", "a-11.tar"]
    );
    assert_eq!(
        expand_shards("x.tar::y-{1..2}.tar").unwrap(),
        vec!["x.tar", "y-1.tar", "y-2.tar"]
    );
    let err = shard_files("/nonexistent/shard-{000..003}.tar")
        .unwrap_err()
        .to_string();
    assert!(err.contains("matches no file"), "{err}");
    assert!(expand_shards("a-{5..2}.tar").is_err());
}
