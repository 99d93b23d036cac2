//! Streamed WebDataset shards: every sample once per epoch whatever the worker count, shuffled
//! by the buffer, reproducible by position (what exact resume needs), and bad samples (a corrupt
//! image, an empty caption, a truncated shard) skipped, counted and reported per epoch.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use candle_core::Device;
use clip_data::files::{read_shard, ShardWriter};
use clip_data::{BatchSource, Shapes, Split, StreamBatcher, StreamCfg};

fn tmp(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("clipforge-stream-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// PNG bytes and caption of built-in scene `i` at 24 px.
fn scene_png(i: u64) -> (Vec<u8>, String) {
    let s = Shapes::new(3, Split::Train).scene(i);
    let px: Vec<u8> = s.render(24).iter().map(|v| (v * 255.0) as u8).collect();
    let img = image::RgbImage::from_raw(24, 24, px).unwrap();
    let mut bytes = Vec::new();
    img.write_to(
        &mut std::io::Cursor::new(&mut bytes),
        image::ImageFormat::Png,
    )
    .unwrap();
    (bytes, format!("{} #{i}", s.caption()))
}

/// `count` good samples in shards of `per_shard`; returns the shard paths and the captions.
fn write_shards(dir: &Path, count: u64, per_shard: usize) -> (Vec<PathBuf>, Vec<String>) {
    let mut w = ShardWriter::new(dir, "shard", per_shard).unwrap();
    let mut caps = Vec::new();
    for i in 0..count {
        let (png, cap) = scene_png(i);
        w.write(&png, "png", &cap).unwrap();
        caps.push(cap);
    }
    (w.finish().unwrap(), caps)
}

fn cfg(workers: usize, shuffle_buffer: usize) -> StreamCfg {
    StreamCfg::new(workers, shuffle_buffer, 11)
}

/// Captions of batches `0..k` of `n`.
fn captions(b: &StreamBatcher, k: u64, n: usize) -> Vec<String> {
    (0..k)
        .flat_map(|i| b.batch(i * n as u64, n, &Device::Cpu).unwrap().captions)
        .collect()
}

#[test]
fn every_sample_once_per_epoch_shuffled_and_reproducible() {
    let dir = tmp("epochs");
    let (shards, caps) = write_shards(&dir, 24, 5); // 5 shards, the last one short
    let all: BTreeSet<String> = caps.iter().cloned().collect();
    for workers in [1, 3, 8] {
        let b = StreamBatcher::new(shards.clone(), cfg(workers, 7), 16, 32);
        let seen = captions(&b, 6, 8); // two epochs of 24
        let (e0, e1) = seen.split_at(24);
        assert_eq!(
            e0.iter().cloned().collect::<BTreeSet<_>>(),
            all,
            "{workers} workers"
        );
        assert_eq!(
            e1.iter().cloned().collect::<BTreeSet<_>>(),
            all,
            "{workers} workers"
        );
        assert_ne!(e0, &caps[..], "not shuffled with {workers} workers");
        assert_ne!(e0, e1, "epochs in the same order with {workers} workers");
        // The same configuration gives the same stream, whatever the threads' timing.
        let again = StreamBatcher::new(shards.clone(), cfg(workers, 7), 16, 32);
        assert_eq!(captions(&again, 6, 8), seen, "{workers} workers");
        // An epoch is reported once the stream has moved past its last sample.
        assert_eq!(b.take_epoch_reports().len(), 1);
        b.batch(48, 1, &Device::Cpu).unwrap();
        let reports = b.take_epoch_reports();
        assert_eq!(reports.len(), 1, "{reports:?}");
        assert!(
            reports[0].epoch == 1 && reports[0].samples == 24 && reports[0].skipped.total() == 0
        );
    }
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn a_batch_is_the_same_read_in_order_or_jumped_to() {
    let dir = tmp("resume");
    let (shards, _) = write_shards(&dir, 20, 4);
    let straight = StreamBatcher::new(shards.clone(), cfg(2, 5), 16, 32);
    let mut in_order = Vec::new();
    for i in 0..5u64 {
        in_order.push(straight.batch(i * 6, 6, &Device::Cpu).unwrap());
    }
    // A resumed run asks for batch 3 first; a plot asks for batch 0 after training.
    let resumed = StreamBatcher::new(shards, cfg(2, 5), 16, 32);
    let b3 = resumed.batch(18, 6, &Device::Cpu).unwrap();
    let b0 = resumed.batch(0, 6, &Device::Cpu).unwrap();
    let b4 = resumed.batch(24, 6, &Device::Cpu).unwrap();
    for (got, want) in [
        (&b3, &in_order[3]),
        (&b0, &in_order[0]),
        (&b4, &in_order[4]),
    ] {
        assert_eq!(got.captions, want.captions);
        let (g, w) = (
            got.pixels.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            want.pixels.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        );
        assert_eq!(g, w, "same samples, same random crops");
    }
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn bad_samples_are_skipped_counted_and_reported_per_epoch() {
    let dir = tmp("bad");
    let mut w = ShardWriter::new(&dir, "shard", 4).unwrap();
    for i in 0..8 {
        let (png, cap) = scene_png(i);
        match i {
            2 => w
                .write(b"\x89PNG\r\n\x1a\nnot an image", "png", &cap)
                .unwrap(),
            5 => w.write(&png, "png", "   ").unwrap(),
            _ => w.write(&png, "png", &cap).unwrap(),
        }
    }
    for i in 8..12 {
        let (png, cap) = scene_png(i);
        w.write(&png, "png", &cap).unwrap();
    }
    let shards = w.finish().unwrap(); // 3 shards of 4
                                      // Cut the last shard inside its second sample's image.
    let bytes = std::fs::read(&shards[2]).unwrap();
    std::fs::write(&shards[2], &bytes[..bytes.len() / 4 + 1500]).unwrap();
    let kept_of_cut = read_shard(&shards[2]).unwrap().0.len();
    assert!(kept_of_cut < 4);
    let per_epoch = 4 + 3 + kept_of_cut; // the empty caption never reaches a batch

    let b = StreamBatcher::new(shards, cfg(2, 3), 16, 32);
    let mut usable = 0;
    for i in 0..(2 * per_epoch as u64) {
        usable += b.batch(i, 1, &Device::Cpu).unwrap().captions.len();
    }
    // One more batch moves into the third epoch, so the second is settled.
    b.batch(2 * per_epoch as u64, 1, &Device::Cpu).unwrap();
    assert_eq!(
        usable,
        2 * (per_epoch - 1),
        "the corrupt image is dropped each epoch"
    );
    let reports = b.take_epoch_reports();
    assert_eq!(reports.len(), 2, "{reports:?}");
    for (e, r) in reports.iter().enumerate() {
        assert_eq!(r.epoch, e as u64);
        assert_eq!(r.samples, per_epoch as u64 - 1, "{r:?}");
        assert_eq!(r.skipped.corrupt_image, 1, "{r:?}");
        assert_eq!(r.skipped.empty_caption, 1, "{r:?}");
        assert_eq!(r.skipped.truncated_shard, 1, "{r:?}");
    }
    let total = b.skipped().unwrap();
    assert!(
        total.corrupt_image >= 2 && total.truncated_shard >= 2,
        "{total:?}"
    );
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn shards_with_nothing_usable_are_an_error_not_a_hang() {
    let dir = tmp("empty");
    let path = dir.join("shard-000000.tar");
    std::fs::write(&path, b"this is not a tar file at all, just some bytes").unwrap();
    let b = StreamBatcher::new(vec![path], cfg(1, 4), 16, 32);
    let err = b.batch(0, 2, &Device::Cpu).unwrap_err().to_string();
    assert!(err.contains("no usable sample"), "{err}");
    std::fs::remove_dir_all(dir).ok();
}

/// Rank `rank` of `ranks`'s first `count` epochs: their captions, read until each is reported.
fn epochs_of(shards: &[PathBuf], rank: usize, ranks: usize, count: usize) -> Vec<Vec<String>> {
    let b = StreamBatcher::new(shards.to_vec(), cfg(2, 4).for_rank(rank, ranks), 16, 32);
    let (mut caps, mut sizes) = (Vec::new(), Vec::new());
    let mut i = 0;
    while sizes.len() < count {
        caps.extend(b.batch(i, 1, &Device::Cpu).unwrap().captions);
        for r in b.take_epoch_reports() {
            assert_eq!((r.epoch, r.rank), (sizes.len() as u64, Some(rank)));
            sizes.push(r.samples as usize);
        }
        i += 1;
    }
    let mut rest = &caps[..];
    sizes
        .iter()
        .map(|&n| {
            let (epoch, after) = rest.split_at(n);
            rest = after;
            epoch.to_vec()
        })
        .collect()
}

#[test]
fn ranks_read_disjoint_whole_shards_that_make_up_each_epoch() {
    let dir = tmp("ranks");
    let (shards, caps) = write_shards(&dir, 30, 4); // 8 shards, the last of 2
    let every: BTreeSet<String> = caps.iter().cloned().collect();
    let shard_of = |c: &String| c.rsplit('#').next().unwrap().parse::<usize>().unwrap() / 4;
    for ranks in [2, 3] {
        let per_rank: Vec<Vec<Vec<String>>> = (0..ranks)
            .map(|r| epochs_of(&shards, r, ranks, 2))
            .collect();
        for epoch in 0..2 {
            let mut all = BTreeSet::new();
            let mut owner = std::collections::BTreeMap::new();
            for (rank, epochs) in per_rank.iter().enumerate() {
                for c in &epochs[epoch] {
                    assert!(all.insert(c.clone()), "{c} read twice, {ranks} ranks");
                    let prev = owner.insert(shard_of(c), rank);
                    assert!(
                        prev.is_none_or(|r| r == rank),
                        "a shard split between ranks"
                    );
                }
            }
            assert_eq!(all, every, "{ranks} ranks' epoch {epoch} is the whole data");
        }
        // Each epoch deals the shards afresh.
        let shards_of = |e: &[String]| e.iter().map(shard_of).collect::<BTreeSet<_>>();
        assert!(
            (0..ranks).any(|r| shards_of(&per_rank[r][0]) != shards_of(&per_rank[r][1])),
            "{ranks} ranks read the same shards every epoch"
        );
    }
    std::fs::remove_dir_all(dir).ok();
}
