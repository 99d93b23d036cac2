//! Open Clip Art Library 0.18 (public domain) from Debian's `openclipart-png` (the drawings)
//! and `openclipart-svg` (their metadata): each PNG captioned from its SVG's `<dc:title>` and
//! `<dc:subject>` keywords. The titles are noisy ("Part of the Flat Icon Collection (…)",
//! "Clipart by Nicu Buculei - jigsaw_red_10", one "gramastar" on 1,375 generated stars); such
//! collection titles give way to the file name, and no caption is used more than 20 times.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::captioned::{self, CaptionSink, PartInfo};
use super::{registry, SourceInfo};
use crate::{io, DataError};

const PNG_DIR: &str = "usr/share/openclipart/png";
const SVG_DIR: &str = "usr/share/openclipart/svg";
const DC: &str = "http://purl.org/dc/elements/1.1/";
/// Keywords kept per caption.
const MAX_KEYWORDS: usize = 4;
/// Titles that name a collection or an author rather than the drawing (lower-case substrings).
const GENERIC: [&str; 8] = [
    "collection",
    "clipart by",
    "clip art by",
    "theme",
    "symbol signs",
    "open clip art",
    "various cliparts",
    "hash(",
];
/// Keywords that say nothing about the drawing.
const NOISE: [&str; 4] = ["hash", "clip art", "clipart", "image"];
/// A title on more drawings than this names a collection: the file name is used instead.
const SHARED_TITLE: usize = 20;
/// Drawings kept per identical caption (the first in path order), so that a generated
/// series does not outweigh the rest.
const MAX_SAME_CAPTION: usize = 20;

/// The first `<dc:title>` and the `<dc:subject>` keywords of an SVG, if it parses.
pub fn metadata(svg: &str) -> Option<(String, Vec<String>)> {
    let opts = roxmltree::ParsingOptions {
        allow_dtd: true,
        ..Default::default()
    };
    let doc = roxmltree::Document::parse_with_options(svg, opts).ok()?;
    let dc = |name: &'static str| {
        doc.descendants()
            .filter(move |n| n.tag_name().name() == name && n.tag_name().namespace() == Some(DC))
    };
    let title = dc("title")
        .next()
        .map(|n| {
            n.descendants()
                .filter(|t| t.is_text())
                .filter_map(|t| t.text())
                .collect::<String>()
        })
        .unwrap_or_default();
    let keywords = dc("subject")
        .flat_map(|s| s.descendants().filter(|n| n.tag_name().name() == "li"))
        .filter_map(|n| n.text().map(str::to_string))
        .collect();
    Some((title, keywords))
}

/// The file name as words, words with digits dropped: `jigsaw_blue_05` → "jigsaw blue",
/// `star_49pt05step` → "star".
fn stem_words(stem: &str) -> String {
    let w = captioned::words(stem);
    let kept: Vec<&str> = w
        .split(' ')
        .filter(|t| !t.chars().any(|c| c.is_ascii_digit()))
        .collect();
    kept.join(" ")
}

/// "clip art of {title} ({keyword}, …)": the title unless empty, `shared` by a collection,
/// or naming a collection or author, else the file name, else its folder's name; up to four
/// keywords, `_` as spaces, without noise, repeats or words already in the title.
pub fn caption(title: &str, keywords: &[String], stem: &str, dir: &str, shared: bool) -> String {
    let title = captioned::words(title.trim());
    let lower = title.to_lowercase();
    let mut title = if shared || title.is_empty() || GENERIC.iter().any(|g| lower.contains(g)) {
        stem_words(stem)
    } else {
        title
    };
    if title.is_empty() {
        title = stem_words(dir);
    }
    let lower = title.to_lowercase();
    let mut kept: Vec<String> = Vec::new();
    for k in keywords {
        let k = captioned::words(k).to_lowercase();
        if k.is_empty() || NOISE.contains(&k.as_str()) || lower.contains(&k) || kept.contains(&k) {
            continue;
        }
        kept.push(k);
        if kept.len() == MAX_KEYWORDS {
            break;
        }
    }
    if kept.is_empty() {
        format!("clip art of {title}")
    } else {
        format!("clip art of {title} ({})", kept.join(", "))
    }
}

fn pngs(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            pngs(&p, out);
        } else if p.extension().is_some_and(|x| x == "png") {
            out.push(p);
        }
    }
}

pub fn convert(
    work: &Path,
    sink: &mut CaptionSink,
    log: &mut impl FnMut(&str),
) -> Result<PartInfo, DataError> {
    let (png_work, svg_work) = (work.join("png"), work.join("svg"));
    for d in [&png_work, &svg_work] {
        std::fs::create_dir_all(d).map_err(io(d))?;
    }
    log("apt-get download openclipart-png openclipart-svg");
    let (png_root, version) = registry::debian("openclipart-png", &png_work)?;
    let (svg_root, _) = registry::debian("openclipart-svg", &svg_work)?;
    let mut files = Vec::new();
    pngs(&png_root.join(PNG_DIR), &mut files);
    files.sort();
    log(&format!("converting {} drawings", files.len()));
    let mark = sink.mark();
    let (mut giants, mut no_svg, mut repeats) = (0, 0, 0);
    // Pass 1: every drawing's metadata, and how many drawings share each title.
    let mut described = Vec::new();
    for png in &files {
        let rel = png.strip_prefix(png_root.join(PNG_DIR)).unwrap_or(png);
        let svg = svg_root.join(SVG_DIR).join(rel).with_extension("svg");
        match std::fs::read_to_string(&svg)
            .ok()
            .and_then(|t| metadata(&t))
        {
            Some(meta) => described.push((png, rel, meta)),
            None => no_svg += 1,
        }
    }
    let mut titles: HashMap<String, usize> = HashMap::new();
    for (_, _, (title, _)) in &described {
        *titles.entry(title.trim().to_lowercase()).or_default() += 1;
    }
    // Pass 2: caption, drop repeats past the cap, decode and write.
    let mut uses: HashMap<String, usize> = HashMap::new();
    for (png, rel, (title, keywords)) in &described {
        let shared = titles[&title.trim().to_lowercase()] > SHARED_TITLE;
        let stem = rel.file_stem().unwrap_or_default().to_string_lossy();
        let dir = rel.parent().and_then(|d| d.file_name()).unwrap_or_default();
        let caption = caption(title, keywords, &stem, &dir.to_string_lossy(), shared);
        let n = uses.entry(caption.clone()).or_default();
        if *n == MAX_SAME_CAPTION {
            repeats += 1;
            continue;
        }
        let Some(img) = captioned::open_capped(png) else {
            giants += 1;
            continue;
        };
        *n += 1;
        let key = Path::new(PNG_DIR).join(rel).display().to_string();
        sink.add(&key, &img, &caption)?;
    }
    let skipped = format!(
        "{giants} unreadable or over {} Mpx, {no_svg} whose SVG is missing or does not parse, \
         {repeats} past {MAX_SAME_CAPTION} drawings with the same caption",
        captioned::MAX_PIXELS / 1_000_000
    );
    log(&format!(
        "{} train, {} test; skipped {skipped}",
        sink.since(mark).0,
        sink.since(mark).1
    ));
    let (train, test) = sink.since(mark);
    Ok(part_info(version, train, test, skipped))
}

/// What the part is, where it came from, and what it holds.
fn part_info(version: String, train: usize, test: usize, skipped: String) -> PartInfo {
    PartInfo {
        name: "openclipart".into(),
        source: SourceInfo {
            registry: "debian".into(),
            package: "openclipart-png + openclipart-svg".into(),
            version,
            files: vec![
                format!("{PNG_DIR}/**/NAME.png"),
                format!("{SVG_DIR}/**/NAME.svg (dc:title, dc:subject)"),
            ],
        },
        license: "public domain (Open Clip Art Library)".into(),
        caption_rule: "\"clip art of {title} ({keywords})\": the SVG's first dc:title, or the file \
                       name without words holding digits (or else its folder's name) where the \
                       title is empty, names a collection or author, or is shared by more than \
                       20 drawings; at most 20 \
                       drawings per identical caption (first in path order); up to four dc:subject keywords, _ as spaces, without noise (hash, \
                       clipart), repeats or words of the title; PNGs over 16 Mpx skipped, longest \
                       side capped at 256 px; split 90/10 by FNV-1a of the PNG's path"
            .into(),
        train,
        test,
        skipped,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_and_caption_rule() {
        let svg = r#"<svg xmlns="http://www.w3.org/2000/svg"
              xmlns:dc="http://purl.org/dc/elements/1.1/"
              xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"
              xmlns:cc="http://web.resource.org/cc/"><metadata><rdf:RDF><cc:Work>
            <dc:title>Etiquette Printer</dc:title>
            <dc:subject><rdf:Bag><rdf:li>printer</rdf:li><rdf:li>hash</rdf:li>
              <rdf:li></rdf:li><rdf:li>computer_hardware</rdf:li></rdf:Bag></dc:subject>
            <dc:creator><cc:Agent><dc:title>Andrew Fitzsimon</dc:title></cc:Agent></dc:creator>
            </cc:Work></rdf:RDF></metadata></svg>"#;
        let (title, kw) = metadata(svg).unwrap();
        assert_eq!(title, "Etiquette Printer");
        assert_eq!(
            caption(&title, &kw, "etiquette_printer_01", "computer", false),
            "clip art of Etiquette Printer (computer hardware)"
        );
        let generic = "Clipart by Nicu Buculei - jigsaw_red_10";
        assert_eq!(
            caption(
                generic,
                &["jigsaw".into(), "shape".into()],
                "jigsaw_blue_05",
                "jigsaw",
                false
            ),
            "clip art of jigsaw blue (shape)"
        );
        assert_eq!(
            caption(
                "gramastar",
                &["stars".into()],
                "star_49pt05step",
                "stars",
                true
            ),
            "clip art of star (stars)"
        );
        assert_eq!(
            caption("", &["arrow".into()], "1234", "flow_chart", false),
            "clip art of flow chart (arrow)"
        );
        assert!(metadata("<svg").is_none());
    }
}
