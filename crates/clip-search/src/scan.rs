//! Finding the images in the sources to index: folders (recursive, by extension: JPEG, PNG,
//! WebP, GIF, BMP, any case), WebDataset shards (`.tar`: each image member) and fetched
//! datasets (a folder with `dataset.json`: the images in its shards), each with the size and
//! modification time that tell a changed file.

use std::path::{Path, PathBuf};

use crate::error::{io, Result, SearchError};
use crate::store::Member;

/// Extensions read as images.
pub const EXTENSIONS: [&str; 6] = ["jpg", "jpeg", "png", "webp", "gif", "bmp"];

/// A file found under a source folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// Absolute.
    pub path: PathBuf,
    /// The image inside the shard at `path`; none for an image file.
    pub member: Option<Member>,
    /// Of the file, or of the shard.
    pub size: u64,
    pub mtime_ns: u64,
}

impl Found {
    pub fn key(&self) -> (&Path, Option<&str>) {
        (&self.path, self.member.as_ref().map(|m| m.name.as_str()))
    }
}

pub fn is_image(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

fn is_shard(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("tar"))
}

/// A source as an absolute path: a folder, or a `.tar` shard; an error names anything else.
pub fn source(arg: &Path) -> Result<PathBuf> {
    let abs = std::fs::canonicalize(arg).map_err(io(arg))?;
    let shard = abs.is_file() && is_shard(&abs);
    if !(abs.is_dir() || shard) {
        return Err(SearchError::Invalid(format!(
            "{}: neither a folder nor a WebDataset shard (.tar)",
            arg.display()
        )));
    }
    Ok(abs)
}

/// Every image in `source`, sorted: a shard's image members; a fetched dataset's (a folder
/// with `dataset.json`) shards' images; else the image files under the folder. And a line
/// for each folder, file or shard that could not be read (wholly or in part).
pub fn images_in(source: &Path) -> (Vec<Found>, Vec<String>) {
    if source.is_file() {
        let mut problems = Vec::new();
        let found = shard_images(source, &mut problems);
        return (found, problems);
    }
    if source.join("dataset.json").is_file() {
        let mut found = Vec::new();
        let mut problems = Vec::new();
        for item in walkdir::WalkDir::new(source).sort_by_file_name() {
            match item {
                Ok(i) if i.file_type().is_file() && is_shard(i.path()) => {
                    found.extend(shard_images(i.path(), &mut problems));
                }
                Ok(_) => {}
                Err(e) => problems.push(e.to_string()),
            }
        }
        return (found, problems);
    }
    images_under(source)
}

fn size_and_mtime(m: &std::fs::Metadata) -> (u64, u64) {
    let mtime_ns = m
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos() as u64);
    (m.len(), mtime_ns)
}

/// The image members of the WebDataset shard at `path` (by extension), with where their bytes
/// lie; a shard damaged part-way gives the images before the damage and a line in `problems`.
fn shard_images(path: &Path, problems: &mut Vec<String>) -> Vec<Found> {
    let mut found = Vec::new();
    let opened = std::fs::File::open(path).and_then(|f| Ok((f.metadata()?, f)));
    let (meta, file) = match opened {
        Ok(x) => x,
        Err(e) => {
            problems.push(format!("{}: {e}", path.display()));
            return found;
        }
    };
    let (size, mtime_ns) = size_and_mtime(&meta);
    let mut archive = tar::Archive::new(std::io::BufReader::new(file));
    let entries = match archive.entries() {
        Ok(e) => e,
        Err(e) => {
            problems.push(format!("{}: {e}", path.display()));
            return found;
        }
    };
    for entry in entries {
        let entry = match entry {
            Ok(e) => e,
            Err(e) => {
                problems.push(format!(
                    "{}: damaged after {} images: {e}",
                    path.display(),
                    found.len()
                ));
                break;
            }
        };
        if entry.header().entry_type() != tar::EntryType::Regular {
            continue;
        }
        let Ok(name) = entry.path().map(|p| p.to_string_lossy().to_string()) else {
            continue;
        };
        if !is_image(Path::new(&name)) {
            continue;
        }
        let (offset, len) = (entry.raw_file_position(), entry.size());
        if offset + len > size {
            problems.push(format!(
                "{}:{name}: cut off at the end of the shard",
                path.display()
            ));
            break;
        }
        found.push(Found {
            path: path.to_path_buf(),
            member: Some(Member { name, offset, len }),
            size,
            mtime_ns,
        });
    }
    found
}

/// Every image file under `root` (following no symbolic links to folders), sorted by path;
/// and a line for each folder or file that could not be read.
pub fn images_under(root: &Path) -> (Vec<Found>, Vec<String>) {
    let mut found = Vec::new();
    let mut problems = Vec::new();
    for item in walkdir::WalkDir::new(root).sort_by_file_name() {
        let item = match item {
            Ok(i) => i,
            Err(e) => {
                problems.push(e.to_string());
                continue;
            }
        };
        if !item.file_type().is_file() || !is_image(item.path()) {
            continue;
        }
        match item.metadata() {
            Ok(m) => {
                let (size, mtime_ns) = size_and_mtime(&m);
                found.push(Found {
                    path: item.path().to_path_buf(),
                    member: None,
                    size,
                    mtime_ns,
                });
            }
            Err(e) => problems.push(format!("{}: {e}", item.path().display())),
        }
    }
    (found, problems)
}
