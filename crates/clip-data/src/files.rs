//! Image–caption pairs from files: a CSV/TSV or JSONL listing (open_clip's `--csv-img-key` /
//! `--csv-caption-key` idea) with image paths relative to the listing, and WebDataset tar
//! shards (`shard-{000000..000127}.tar`: `KEY.jpg|png|webp` + `KEY.txt` or `KEY.json`), read
//! and written. Bad samples are skipped and counted, never a crash.

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::{bad, io, DataError};

/// Where one sample's image bytes come from.
#[derive(Debug, Clone, PartialEq)]
pub enum ImageSource {
    File(PathBuf),
    Bytes(std::sync::Arc<Vec<u8>>),
}

/// One pair before decoding.
#[derive(Debug, Clone, PartialEq)]
pub struct RawSample {
    /// Where it came from, for error messages (`list.csv:12`, `shard-000003.tar:cat_01`).
    pub origin: String,
    pub image: ImageSource,
    pub caption: String,
    /// Class index, for labelled sets (`KEY.cls` in a shard).
    pub label: Option<usize>,
}

/// What was skipped while reading, by reason.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct SkipCounts {
    pub empty_caption: usize,
    pub missing_image: usize,
    pub corrupt_image: usize,
    pub truncated_shard: usize,
    pub unreadable_shard: usize,
    pub incomplete_sample: usize,
}

impl SkipCounts {
    pub fn total(&self) -> usize {
        self.empty_caption
            + self.missing_image
            + self.corrupt_image
            + self.truncated_shard
            + self.unreadable_shard
            + self.incomplete_sample
    }
    pub fn add(&mut self, o: &SkipCounts) {
        self.empty_caption += o.empty_caption;
        self.missing_image += o.missing_image;
        self.corrupt_image += o.corrupt_image;
        self.truncated_shard += o.truncated_shard;
        self.unreadable_shard += o.unreadable_shard;
        self.incomplete_sample += o.incomplete_sample;
    }
    /// The counts in the order of the fields (for sending them between processes).
    pub fn to_array(&self) -> [usize; 6] {
        [
            self.empty_caption,
            self.missing_image,
            self.corrupt_image,
            self.truncated_shard,
            self.unreadable_shard,
            self.incomplete_sample,
        ]
    }
    pub fn from_array(a: [usize; 6]) -> Self {
        let [empty_caption, missing_image, corrupt_image, truncated_shard, unreadable_shard, incomplete_sample] =
            a;
        Self {
            empty_caption,
            missing_image,
            corrupt_image,
            truncated_shard,
            unreadable_shard,
            incomplete_sample,
        }
    }
}

/// Read a CSV/TSV (by extension; `.tsv` is tab-separated) with a header naming `img_key` and
/// `caption_key`. Rows with an empty caption or a missing image file are skipped and counted.
pub fn read_csv(
    path: &Path,
    img_key: &str,
    caption_key: &str,
) -> Result<(Vec<RawSample>, SkipCounts), DataError> {
    let sep = if path.extension().is_some_and(|e| e == "tsv") {
        b'\t'
    } else {
        b','
    };
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(sep)
        .from_path(path)
        .map_err(bad(path))?;
    let headers = reader.headers().map_err(bad(path))?.clone();
    let col = |key: &str| {
        headers.iter().position(|h| h == key).ok_or_else(|| {
            let columns = headers.iter().collect::<Vec<_>>().join(", ");
            DataError::Format {
                path: path.to_path_buf(),
                msg: format!("no column {key:?} in the header (columns: {columns})"),
            }
        })
    };
    let (ic, cc) = (col(img_key)?, col(caption_key)?);
    let base = path.parent().unwrap_or(Path::new("."));
    let mut out = Vec::new();
    let mut skips = SkipCounts::default();
    for (i, rec) in reader.records().enumerate() {
        let line = i + 2;
        let at = PathBuf::from(format!("{}:{line}", path.display()));
        let rec = rec.map_err(bad(&at))?;
        let (img, cap) = (rec.get(ic).unwrap_or(""), rec.get(cc).unwrap_or("").trim());
        push_listed(
            &mut out,
            &mut skips,
            base,
            img,
            cap,
            format!("{}:{line}", path.display()),
        );
    }
    Ok((out, skips))
}

/// Read JSONL: one object per line with `img_key` and `caption_key` string fields.
pub fn read_jsonl(
    path: &Path,
    img_key: &str,
    caption_key: &str,
) -> Result<(Vec<RawSample>, SkipCounts), DataError> {
    let text = std::fs::read_to_string(path).map_err(io(path))?;
    let base = path.parent().unwrap_or(Path::new("."));
    let mut out = Vec::new();
    let mut skips = SkipCounts::default();
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let at = PathBuf::from(format!("{}:{}", path.display(), i + 1));
        let v: serde_json::Value =
            serde_json::from_str(line).map_err(|e| bad(&at)(format!("not JSON ({e})")))?;
        let field = |k: &str| {
            v.get(k)
                .and_then(|x| x.as_str())
                .map(str::to_string)
                .ok_or_else(|| bad(&at)(format!("no string field {k:?}")))
        };
        let (img, cap) = (field(img_key)?, field(caption_key)?);
        push_listed(
            &mut out,
            &mut skips,
            base,
            &img,
            cap.trim(),
            at.display().to_string(),
        );
    }
    Ok((out, skips))
}

fn push_listed(
    out: &mut Vec<RawSample>,
    skips: &mut SkipCounts,
    base: &Path,
    img: &str,
    cap: &str,
    origin: String,
) {
    if cap.is_empty() {
        skips.empty_caption += 1;
        return;
    }
    let p = base.join(img);
    if !p.is_file() {
        skips.missing_image += 1;
        return;
    }
    out.push(RawSample {
        origin,
        image: ImageSource::File(p),
        caption: cap.to_string(),
        label: None,
    });
}

/// Expand one `{000..127}` range in a shard pattern (zero-padded as written); several
/// patterns may be joined with `::`, as WebDataset does.
pub fn expand_shards(pattern: &str) -> Result<Vec<String>, DataError> {
    let mut out = Vec::new();
    for part in pattern.split("::") {
        match (part.find('{'), part.find('}')) {
            (Some(a), Some(b)) if a < b => {
                let inner = &part[a + 1..b];
                let bad_pattern = |msg: String| DataError::Pattern {
                    pattern: part.to_string(),
                    msg,
                };
                let (lo, hi) = inner
                    .split_once("..")
                    .ok_or_else(|| bad_pattern("expected {START..END}".into()))?;
                let width = lo.len();
                let parse = |s: &str| {
                    s.parse::<u64>()
                        .map_err(|_| bad_pattern(format!("{s:?} is not a number")))
                };
                let (lo_n, hi_n) = (parse(lo)?, parse(hi)?);
                if hi_n < lo_n {
                    return Err(bad_pattern("range runs backwards".into()));
                }
                for n in lo_n..=hi_n {
                    out.push(format!("{}{:0width$}{}", &part[..a], n, &part[b + 1..]));
                }
            }
            _ => out.push(part.to_string()),
        }
    }
    Ok(out)
}

/// Resolve a shard pattern to existing files; an error if none exist.
pub fn shard_files(pattern: &str) -> Result<Vec<PathBuf>, DataError> {
    let names = expand_shards(pattern)?;
    let found: Vec<PathBuf> = names
        .iter()
        .map(PathBuf::from)
        .filter(|p| p.is_file())
        .collect();
    if found.is_empty() {
        return Err(DataError::Pattern {
            pattern: pattern.to_string(),
            msg: format!(
                "matches no file ({} names tried, first {:?})",
                names.len(),
                names[0]
            ),
        });
    }
    Ok(found)
}

const IMAGE_EXTS: [&str; 4] = ["jpg", "jpeg", "png", "webp"];

/// Read one WebDataset shard: samples grouped by key (the name up to its first dot), image from
/// `.jpg/.jpeg/.png/.webp`, caption from `.txt` or the `caption` field of `.json`. A truncated
/// or damaged tar yields the samples before the damage and counts one `truncated_shard`.
pub fn read_shard(path: &Path) -> Result<(Vec<RawSample>, SkipCounts), DataError> {
    std::fs::metadata(path).map_err(io(path))?;
    let mut out = Vec::new();
    let skips = stream_shard(path, |s| {
        out.push(s);
        true
    });
    Ok((out, skips))
}

/// A sample's files as they are read: image bytes and caption, either possibly missing.
#[derive(Default)]
struct Partial {
    key: String,
    image: Option<Vec<u8>>,
    caption: Option<String>,
    label: Option<usize>,
}

impl Partial {
    /// Hand a complete sample to `emit`, or count why it is not one.
    fn finish(
        self,
        path: &Path,
        skips: &mut SkipCounts,
        emit: &mut impl FnMut(RawSample) -> bool,
    ) -> bool {
        match (self.image, self.caption) {
            (Some(img), Some(cap)) if !cap.is_empty() => emit(RawSample {
                origin: format!("{}:{}", path.display(), self.key),
                image: ImageSource::Bytes(std::sync::Arc::new(img)),
                caption: cap,
                label: self.label,
            }),
            (Some(_), Some(_)) => {
                skips.empty_caption += 1;
                true
            }
            _ => {
                skips.incomplete_sample += 1;
                true
            }
        }
    }
}

/// Stream one WebDataset shard, entry by entry, handing each complete sample to `emit` (which
/// returns false to stop early). A sample's files are adjacent in the tar, as WebDataset
/// writes them. Returns what was skipped: a shard that cannot be opened counts one
/// `unreadable_shard`, damage part-way one `truncated_shard` (the samples before it are kept).
pub fn stream_shard(path: &Path, mut emit: impl FnMut(RawSample) -> bool) -> SkipCounts {
    let mut skips = SkipCounts::default();
    let Ok(file) = std::fs::File::open(path) else {
        skips.unreadable_shard += 1;
        return skips;
    };
    let mut archive = tar::Archive::new(std::io::BufReader::new(file));
    let Ok(entries) = archive.entries() else {
        skips.unreadable_shard += 1;
        return skips;
    };
    let mut current: Option<Partial> = None;
    for entry in entries {
        let Ok(mut entry) = entry else {
            skips.truncated_shard += 1;
            break;
        };
        let name = match entry.path() {
            Ok(p) => p.to_string_lossy().to_string(),
            Err(_) => continue,
        };
        let file_name = name.rsplit('/').next().unwrap_or(&name).to_string();
        let Some((stem, ext)) = file_name.split_once('.') else {
            continue;
        };
        let key = format!("{}{stem}", &name[..name.len() - file_name.len()]);
        if current.as_ref().is_some_and(|c| c.key != key) {
            let done = current.take().expect("checked");
            if !done.finish(path, &mut skips, &mut emit) {
                return skips;
            }
        }
        let mut bytes = Vec::new();
        if entry.read_to_end(&mut bytes).is_err() {
            skips.truncated_shard += 1;
            current = None; // the sample being read is cut
            break;
        }
        let slot = current.get_or_insert_with(|| Partial {
            key,
            ..Partial::default()
        });
        let ext = ext.to_ascii_lowercase();
        if IMAGE_EXTS.contains(&ext.as_str()) {
            slot.image = Some(bytes);
        } else if ext == "cls" {
            slot.label = String::from_utf8_lossy(&bytes).trim().parse().ok();
        } else if ext == "txt" {
            slot.caption = Some(String::from_utf8_lossy(&bytes).trim().to_string());
        } else if ext == "json" {
            if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&bytes) {
                if let Some(c) = v.get("caption").and_then(|c| c.as_str()) {
                    slot.caption = Some(c.trim().to_string());
                }
            }
        }
    }
    if let Some(last) = current {
        last.finish(path, &mut skips, &mut emit);
    }
    skips
}

/// Writes samples into numbered shards of at most `per_shard` samples:
/// `{dir}/{prefix}-000000.tar`, each sample `KEY.{ext}` + `KEY.txt`.
pub struct ShardWriter {
    dir: PathBuf,
    prefix: String,
    per_shard: usize,
    count: usize,
    current: Option<tar::Builder<std::fs::File>>,
    pub written: Vec<PathBuf>,
}

impl ShardWriter {
    pub fn new(dir: &Path, prefix: &str, per_shard: usize) -> Result<Self, DataError> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        Ok(Self {
            dir: dir.to_path_buf(),
            prefix: prefix.to_string(),
            per_shard: per_shard.max(1),
            count: 0,
            current: None,
            written: Vec::new(),
        })
    }

    fn append(b: &mut tar::Builder<std::fs::File>, name: &str, data: &[u8]) -> std::io::Result<()> {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, name, data)
    }

    /// Add one sample: image bytes with their extension (`png`, `jpg`, `webp`) and a caption.
    pub fn write(&mut self, image: &[u8], ext: &str, caption: &str) -> Result<(), DataError> {
        self.write_labelled(image, ext, caption, None)
    }

    /// Add one sample with its class index, written as `KEY.cls` (WebDataset's convention).
    pub fn write_labelled(
        &mut self,
        image: &[u8],
        ext: &str,
        caption: &str,
        label: Option<usize>,
    ) -> Result<(), DataError> {
        if self.count.is_multiple_of(self.per_shard) {
            self.finish_shard()?;
            let path = self.dir.join(format!(
                "{}-{:06}.tar",
                self.prefix,
                self.count / self.per_shard
            ));
            let f = std::fs::File::create(&path).map_err(io(&path))?;
            self.current = Some(tar::Builder::new(f));
            self.written.push(path);
        }
        let key = format!("{:09}", self.count);
        let b = self.current.as_mut().expect("shard open");
        let shard = self.written.last().expect("shard open").clone();
        Self::append(b, &format!("{key}.{ext}"), image).map_err(io(&shard))?;
        Self::append(b, &format!("{key}.txt"), caption.as_bytes()).map_err(io(&shard))?;
        if let Some(l) = label {
            let cls = l.to_string();
            Self::append(b, &format!("{key}.cls"), cls.as_bytes()).map_err(io(&shard))?;
        }
        self.count += 1;
        Ok(())
    }

    fn finish_shard(&mut self) -> Result<(), DataError> {
        if let Some(b) = self.current.take() {
            let shard = self.written.last().expect("shard open");
            b.into_inner().map_err(io(shard))?;
        }
        Ok(())
    }

    /// Close the last shard; returns the shard paths.
    pub fn finish(mut self) -> Result<Vec<PathBuf>, DataError> {
        self.finish_shard()?;
        Ok(std::mem::take(&mut self.written))
    }
}
