//! Google's emoji (Noto Emoji, Apache-2.0) from npm `emoji-datasource-google`:
//! `img/google/64/<image>` (64 px PNG) for each entry of `emoji.json`, captioned from the
//! entry's Unicode name and its category/subcategory. Skin-tone variants are not listed
//! separately there and are not used.

use std::path::Path;

use serde::Deserialize;

use super::captioned::{self, CaptionSink, PartInfo};
use super::SourceInfo;
use crate::DataError;

const PACKAGE: &str = "emoji-datasource-google";
const VERSION: &str = "16.0.0";

#[derive(Deserialize)]
struct Entry {
    name: Option<String>,
    image: String,
    category: String,
    subcategory: String,
    #[serde(default)]
    has_img_google: bool,
}

/// "an emoji of {name}, from {category}: {subcategory}", lower-cased, `-`/`_` as spaces.
pub fn caption(name: &str, category: &str, subcategory: &str) -> String {
    format!(
        "an emoji of {}, from {}: {}",
        captioned::words(name).to_lowercase(),
        category.to_lowercase(),
        captioned::words(subcategory).to_lowercase()
    )
}

pub fn convert(
    work: &Path,
    sink: &mut CaptionSink,
    log: &mut impl FnMut(&str),
) -> Result<PartInfo, DataError> {
    let (entries, root): (Vec<Entry>, _) =
        captioned::npm_listing(PACKAGE, VERSION, "emoji.json", work, log)?;
    log(&format!("converting {} emoji", entries.len()));
    let mark = sink.mark();
    let (mut no_image, mut no_name) = (0, 0);
    for e in &entries {
        let Some(name) = e.name.as_deref().filter(|n| !n.trim().is_empty()) else {
            no_name += 1;
            continue;
        };
        let rel = format!("img/google/64/{}", e.image);
        let img = e
            .has_img_google
            .then(|| captioned::open_capped(&root.join(&rel)))
            .flatten();
        let Some(img) = img else {
            no_image += 1;
            continue;
        };
        sink.add(&rel, &img, &caption(name, &e.category, &e.subcategory))?;
    }
    let skipped = format!("{no_image} without a Google image, {no_name} without a name");
    log(&format!(
        "{} train, {} test; skipped {skipped}",
        sink.since(mark).0,
        sink.since(mark).1
    ));
    Ok(PartInfo {
        name: "emoji".into(),
        source: SourceInfo {
            registry: "npm".into(),
            package: PACKAGE.into(),
            version: VERSION.into(),
            files: vec!["emoji.json".into(), "img/google/64/*.png".into()],
        },
        license: "images: Apache-2.0 (Google Noto Emoji); data: MIT (iamcal/emoji-data)".into(),
        caption_rule: "\"an emoji of {name}, from {category}: {subcategory}\", lower-cased, \
                       - and _ as spaces; split 90/10 by FNV-1a of img/google/64/<image>"
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
            super::caption("CROSSED SWORDS", "Objects", "tool"),
            "an emoji of crossed swords, from objects: tool"
        );
        assert_eq!(
            super::caption("Sark Flag", "Flags", "country-flag"),
            "an emoji of sark flag, from flags: country flag"
        );
    }
}
