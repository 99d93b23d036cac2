//! Property tests: mutated WebDataset shards and image bytes are read or skipped, never a panic.

use std::path::PathBuf;
use std::sync::Arc;

use clip_data::files::{read_shard, ImageSource, ShardWriter};
use proptest::prelude::*;
use proptest::sample::Index;
use rand::SeedableRng;

/// 200 cases from a fixed seed, so CI sees the same inputs every run; `PROPTEST_CASES` and
/// `PROPTEST_RNG_SEED` explore further.
fn config() -> ProptestConfig {
    let env = |k: &str| std::env::var_os(k).is_some();
    let mut c = ProptestConfig {
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    if !env("PROPTEST_CASES") {
        c.cases = 200;
    }
    if !env("PROPTEST_RNG_SEED") {
        c.rng_seed = proptest::test_runner::RngSeed::Fixed(0xc11f);
    }
    c
}

/// Up to 8 byte edits, then maybe a cut.
fn mutations() -> impl Strategy<Value = (Vec<(Index, u8)>, Option<Index>)> {
    (
        prop::collection::vec((any::<Index>(), any::<u8>()), 0..8),
        any::<Option<Index>>(),
    )
}

fn mutate(mut bytes: Vec<u8>, (edits, cut): &(Vec<(Index, u8)>, Option<Index>)) -> Vec<u8> {
    for (at, b) in edits {
        let i = at.index(bytes.len());
        bytes[i] = *b;
    }
    if let Some(c) = cut {
        bytes.truncate(c.index(bytes.len()));
    }
    bytes
}

fn dir() -> PathBuf {
    let d = std::env::temp_dir().join(format!("clipforge-prop-data-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A small PNG: a 12×9 gradient.
fn png() -> Vec<u8> {
    let img = image::RgbImage::from_fn(12, 9, |x, y| image::Rgb([x as u8 * 20, y as u8 * 25, 90]));
    let mut out = Vec::new();
    image::DynamicImage::ImageRgb8(img)
        .write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)
        .unwrap();
    out
}

/// A shard of three samples, as bytes.
fn shard() -> Vec<u8> {
    let d = dir().join("source");
    let mut w = ShardWriter::new(&d, "s", 10).unwrap();
    for caption in ["a red circle", "a blue star", "two green squares"] {
        w.write(&png(), "png", caption).unwrap();
    }
    let paths = w.finish().unwrap();
    std::fs::read(&paths[0]).unwrap()
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn mutated_shards_read_or_fail_cleanly(m in mutations()) {
        let path = dir().join("mutated-shard.tar");
        std::fs::write(&path, mutate(shard(), &m)).unwrap();
        match read_shard(&path) {
            Ok((samples, skips)) => prop_assert!(samples.len() + skips.total() <= 3 + 16),
            Err(e) => prop_assert!(e.to_string().contains("mutated-"), "{}", e),
        }
    }

    #[test]
    fn mutated_images_decode_or_are_skipped(m in mutations(), size in 1usize..40) {
        let src = ImageSource::Bytes(Arc::new(mutate(png(), &m)));
        if let Some(img) = clip_data::augment::decode(&src) {
            let px = clip::transform::preprocess(&img, size);
            prop_assert_eq!(px.len(), 3 * size * size);
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(size as u64);
            let crop = clip_data::augment::random_resized_crop(&img, size, &mut rng);
            prop_assert_eq!(crop.len(), 3 * size * size);
        }
    }

    #[test]
    fn random_bytes_are_not_an_image(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = clip_data::augment::decode(&ImageSource::Bytes(Arc::new(bytes)));
    }
}
