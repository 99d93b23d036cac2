//! Tux Paint's stamps (GPL-2, Bill Kendrick and contributors) from Debian's
//! `tuxpaint-stamps-default`: `usr/share/tuxpaint/stamps/<category>/…/NAME.png` with
//! `NAME.txt`, whose first line is an English description ("A hand.", "Dollar sign.",
//! "A US 25 cent piece ($.25) called a quarter."). Real, human-written captions.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::{registry, DatasetInfo, SourceInfo, SplitInfo};
use crate::files::ShardWriter;
use crate::DataError;

const DIR: &str = "usr/share/tuxpaint/stamps";
/// Longest side kept; larger stamps are downscaled (the models read 32–224 px).
const MAX_SIDE: u32 = 256;
const PER_SHARD: usize = 500;

/// The caption rule: line 1 without its final period; a short phrase (under six words)
/// becomes "a picture of …" with its first letter lower-cased unless it starts an acronym.
pub fn caption(line: &str) -> Option<String> {
    let line = line.trim().trim_end_matches('.').trim();
    if line.is_empty() {
        return None;
    }
    if line.split_whitespace().count() >= 6 {
        return Some(line.to_string());
    }
    let mut chars = line.chars();
    let first = chars.next()?;
    let rest: String = chars.collect();
    let acronym = rest.chars().next().is_some_and(char::is_uppercase);
    let first = if acronym {
        first.to_string()
    } else {
        first.to_lowercase().to_string()
    };
    Some(format!("a picture of {first}{rest}"))
}

/// Every `NAME.txt` below `dir`, sorted.
fn descriptions(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), DataError> {
    let entries =
        std::fs::read_dir(dir).map_err(|e| DataError::Input(format!("{}: {e}", dir.display())))?;
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            descriptions(&p, out)?;
        } else if p.extension().is_some_and(|x| x == "txt") {
            out.push(p);
        }
    }
    out.sort();
    Ok(())
}

/// FNV-1a of a stamp's path inside the package: the fixed 90/10 split by image.
fn is_test(rel: &str) -> bool {
    let h = rel.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    });
    h % 10 == 0
}

/// PNG bytes with the longest side at most `MAX_SIDE`, alpha kept (composited on white when read).
fn capped_png(path: &Path) -> Option<Vec<u8>> {
    let img = image::open(path).ok()?;
    let img = if img.width().max(img.height()) > MAX_SIDE {
        img.resize(MAX_SIDE, MAX_SIDE, image::imageops::FilterType::Triangle)
    } else {
        img
    };
    let mut png = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .ok()?;
    Some(png)
}

pub fn fetch(out: &Path, log: &mut impl FnMut(&str)) -> Result<DatasetInfo, DataError> {
    let work = out.join(".download");
    std::fs::create_dir_all(&work)
        .map_err(|e| DataError::Input(format!("{}: {e}", work.display())))?;
    log("apt-get download tuxpaint-stamps-default");
    let (root, version) = registry::debian("tuxpaint-stamps-default", &work)?;
    let mut txts = Vec::new();
    descriptions(&root.join(DIR), &mut txts)?;
    log(&format!("converting {} described stamps", txts.len()));
    let mut train = ShardWriter::new(out, "train", PER_SHARD)?;
    let mut test = ShardWriter::new(out, "test", PER_SHARD)?;
    let (mut n_train, mut n_test, mut svg_only, mut unreadable, mut no_caption) =
        (0usize, 0usize, 0usize, 0usize, 0usize);
    for txt in &txts {
        let rel = txt.strip_prefix(&root).unwrap_or(txt).display().to_string();
        let text = std::fs::read_to_string(txt).unwrap_or_default();
        let Some(cap) = text.lines().next().and_then(caption) else {
            no_caption += 1;
            continue;
        };
        let png_path = txt.with_extension("png");
        if !png_path.is_file() {
            svg_only += txt.with_extension("svg").is_file() as usize;
            unreadable += (!txt.with_extension("svg").is_file()) as usize;
            continue;
        }
        let Some(png) = capped_png(&png_path) else {
            unreadable += 1;
            continue;
        };
        if is_test(&rel) {
            test.write(&png, "png", &cap)?;
            n_test += 1;
        } else {
            train.write(&png, "png", &cap)?;
            n_train += 1;
        }
    }
    train.finish()?;
    test.finish()?;
    log(&format!(
        "{n_train} train, {n_test} test; skipped {svg_only} SVG-only stamps (not rasterised yet), \
         {unreadable} unreadable, {no_caption} without a caption"
    ));
    std::fs::remove_dir_all(&work)
        .map_err(|e| DataError::Input(format!("{}: {e}", work.display())))?;
    let mut splits = BTreeMap::new();
    for (name, count) in [("train", n_train), ("test", n_test)] {
        splits.insert(
            name.to_string(),
            SplitInfo {
                shards: format!(
                    "{name}-{{000000..{:06}}}.tar",
                    count.div_ceil(PER_SHARD).max(1) - 1
                ),
                count,
            },
        );
    }
    Ok(DatasetInfo {
        name: "tuxpaint".into(),
        classes: Vec::new(),
        templates: Vec::new(),
        splits,
        source: SourceInfo {
            registry: "debian".into(),
            package: "tuxpaint-stamps-default".into(),
            version,
            files: vec![format!("{DIR}/**/NAME.png"), format!("{DIR}/**/NAME.txt (line 1)")],
        },
        license: "GPL-2, Copyright 2002-2022 Bill Kendrick and Tux Paint contributors".into(),
        caption_rule: "line 1 of NAME.txt without its final period; under six words it becomes \
                       \"a picture of …\" (first letter lower-cased unless an acronym); \
                       PNG stamps only, longest side capped at 256 px; split 90/10 by FNV-1a of the path"
            .into(),
    })
}

#[cfg(test)]
mod tests {
    use super::caption;

    #[test]
    fn captions_follow_the_documented_rule() {
        assert_eq!(caption("A hand.").unwrap(), "a picture of a hand");
        assert_eq!(caption("Dollar sign.").unwrap(), "a picture of dollar sign");
        assert_eq!(caption("USB stick").unwrap(), "a picture of USB stick");
        assert_eq!(
            caption("A US 25 cent piece ($.25) called a quarter.").unwrap(),
            "A US 25 cent piece ($.25) called a quarter"
        );
        assert_eq!(caption("  . "), None);
    }
}
