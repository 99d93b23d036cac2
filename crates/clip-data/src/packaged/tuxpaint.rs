//! Tux Paint's stamps (GPL-2, Bill Kendrick and contributors) from Debian's
//! `tuxpaint-stamps-default`: `usr/share/tuxpaint/stamps/<category>/…/NAME.png` with
//! `NAME.txt`, whose first line is an English description ("A hand.", "Dollar sign.",
//! "A US 25 cent piece ($.25) called a quarter."). Real, human-written captions.

use std::path::{Path, PathBuf};

use super::captioned::{self, CaptionSink, PartInfo};
use super::{registry, svg, SourceInfo};
use crate::{io, DataError};

const DIR: &str = "usr/share/tuxpaint/stamps";

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
    let entries = std::fs::read_dir(dir).map_err(io(dir))?;
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

/// Convert every described stamp into `sink`: the PNG where there is one, else the SVG
/// rasterised at `captioned::MAX_SIDE`.
pub fn convert(
    work: &Path,
    sink: &mut CaptionSink,
    log: &mut impl FnMut(&str),
) -> Result<PartInfo, DataError> {
    log("apt-get download tuxpaint-stamps-default");
    let (root, version) = registry::debian("tuxpaint-stamps-default", work)?;
    let mut txts = Vec::new();
    descriptions(&root.join(DIR), &mut txts)?;
    log(&format!("converting {} described stamps", txts.len()));
    let mark = sink.mark();
    let (mut from_svg, mut no_image, mut unreadable, mut no_caption) = (0, 0, 0, 0);
    for txt in &txts {
        let rel = txt.strip_prefix(&root).unwrap_or(txt);
        let text = std::fs::read_to_string(txt).unwrap_or_default();
        let Some(cap) = text.lines().next().and_then(caption) else {
            no_caption += 1;
            continue;
        };
        let (png, svg_path) = (txt.with_extension("png"), txt.with_extension("svg"));
        let img = if png.is_file() {
            captioned::open_capped(&png)
        } else if svg_path.is_file() {
            from_svg += 1;
            std::fs::read(&svg_path)
                .ok()
                .and_then(|b| svg::rasterise(&b, captioned::MAX_SIDE).ok())
        } else {
            no_image += 1;
            continue;
        };
        let Some(img) = img else {
            unreadable += 1;
            continue;
        };
        sink.add(&rel.display().to_string(), &img, &cap)?;
    }
    let skipped = format!(
        "{no_image} descriptions without an image, {unreadable} unreadable images, \
         {no_caption} without a caption"
    );
    log(&format!(
        "{} train, {} test ({from_svg} rasterised from SVG); skipped {skipped}",
        sink.since(mark).0,
        sink.since(mark).1
    ));
    Ok(PartInfo {
        name: "tuxpaint".into(),
        source: SourceInfo {
            registry: "debian".into(),
            package: "tuxpaint-stamps-default".into(),
            version,
            files: vec![
                format!("{DIR}/**/NAME.png (or NAME.svg where no PNG)"),
                format!("{DIR}/**/NAME.txt (line 1)"),
            ],
        },
        license: "GPL-2, Copyright 2002-2022 Bill Kendrick and Tux Paint contributors".into(),
        caption_rule: "line 1 of NAME.txt without its final period; under six words it becomes \
                       \"a picture of …\" (first letter lower-cased unless an acronym); \
                       NAME.png, or NAME.svg rasterised where there is no PNG; split 90/10 by \
                       FNV-1a of NAME.txt's path"
            .into(),
        train: sink.since(mark).0,
        test: sink.since(mark).1,
        skipped,
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
