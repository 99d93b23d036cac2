//! OpenMoji (CC BY-SA 4.0, HfG Schwäbisch Gmünd) from npm `openmoji`: `color/svg/<hexcode>.svg`
//! rasterised, captioned from `data/openmoji.json`'s annotation and tags. Skin-tone variants
//! (the same drawing recoloured, caption differing only in "medium-dark skin tone") are left out.

use std::path::Path;

use serde::Deserialize;

use super::captioned::{self, CaptionSink, PartInfo};
use super::{svg, SourceInfo};
use crate::DataError;

const PACKAGE: &str = "openmoji";
const VERSION: &str = "17.0.0";
/// Rasterised side: OpenMoji draws on a 72-unit grid; 128 px is above every model's input.
const SIDE: u32 = 128;
/// Tags kept per caption.
const MAX_TAGS: usize = 4;

#[derive(Deserialize)]
struct Entry {
    hexcode: String,
    annotation: String,
    #[serde(default)]
    tags: String,
    #[serde(default)]
    openmoji_tags: String,
    #[serde(default)]
    skintone: serde_json::Value,
}

/// "an emoji of {annotation} ({tag}, {tag}, …)": Unicode tags first, then OpenMoji's own,
/// without repeats or words already in the annotation, at most four.
pub fn caption(annotation: &str, tags: &str, openmoji_tags: &str) -> String {
    let annotation = annotation.trim();
    let lower = annotation.to_lowercase();
    let mut kept: Vec<String> = Vec::new();
    for t in tags.split(',').chain(openmoji_tags.split(',')) {
        let t = t.trim().to_lowercase();
        if t.is_empty() || lower.contains(&t) || kept.contains(&t) {
            continue;
        }
        kept.push(t);
        if kept.len() == MAX_TAGS {
            break;
        }
    }
    if kept.is_empty() {
        format!("an emoji of {annotation}")
    } else {
        format!("an emoji of {annotation} ({})", kept.join(", "))
    }
}

pub fn convert(
    work: &Path,
    sink: &mut CaptionSink,
    log: &mut impl FnMut(&str),
) -> Result<PartInfo, DataError> {
    let (entries, root): (Vec<Entry>, _) =
        captioned::npm_listing(PACKAGE, VERSION, "data/openmoji.json", work, log)?;
    log(&format!("rasterising {} OpenMoji", entries.len()));
    let mark = sink.mark();
    let (mut skintone, mut unreadable) = (0, 0);
    for e in &entries {
        let toned = match &e.skintone {
            serde_json::Value::String(s) => !s.is_empty(),
            serde_json::Value::Null => false,
            _ => true,
        };
        if toned {
            skintone += 1;
            continue;
        }
        let rel = format!("color/svg/{}.svg", e.hexcode);
        let img = std::fs::read(root.join(&rel))
            .ok()
            .and_then(|b| svg::rasterise(&b, SIDE).ok());
        let Some(img) = img else {
            unreadable += 1;
            continue;
        };
        sink.add(
            &rel,
            &img,
            &caption(&e.annotation, &e.tags, &e.openmoji_tags),
        )?;
    }
    let skipped = format!("{skintone} skin-tone variants, {unreadable} missing or unreadable SVGs");
    log(&format!(
        "{} train, {} test; skipped {skipped}",
        sink.since(mark).0,
        sink.since(mark).1
    ));
    Ok(PartInfo {
        name: "openmoji".into(),
        source: SourceInfo {
            registry: "npm".into(),
            package: PACKAGE.into(),
            version: VERSION.into(),
            files: vec![
                "data/openmoji.json".into(),
                "color/svg/<hexcode>.svg".into(),
            ],
        },
        license: "CC BY-SA 4.0, OpenMoji (HfG Schwäbisch Gmünd)".into(),
        caption_rule: "\"an emoji of {annotation} ({tags})\": up to four tags, Unicode's then \
                       OpenMoji's, lower-cased, without repeats or words of the annotation; \
                       colour SVG rasterised at 128 px; skin-tone variants left out; split 90/10 \
                       by FNV-1a of color/svg/<hexcode>.svg"
            .into(),
        train: sink.since(mark).0,
        test: sink.since(mark).1,
        skipped,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn caption_rule() {
        assert_eq!(
            super::caption(
                "church",
                "bless, chapel, christian, cross, religion",
                "religious, pray"
            ),
            "an emoji of church (bless, chapel, christian, cross)"
        );
        assert_eq!(
            super::caption("weary face", "face, tired", "Tired, sleepy"),
            "an emoji of weary face (tired, sleepy)"
        );
        assert_eq!(
            super::caption("gardener man", "", ""),
            "an emoji of gardener man"
        );
    }
}
