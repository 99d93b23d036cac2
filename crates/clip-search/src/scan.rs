//! Finding the images under the folders to index: recursive, by extension (JPEG, PNG, WebP,
//! GIF, BMP, any case), each with the size and modification time that tell a changed file.

use std::path::{Path, PathBuf};

use crate::error::{io, Result, SearchError};

/// Extensions read as images.
pub const EXTENSIONS: [&str; 6] = ["jpg", "jpeg", "png", "webp", "gif", "bmp"];

/// A file found under a source folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// Absolute.
    pub path: PathBuf,
    pub size: u64,
    pub mtime_ns: u64,
}

pub fn is_image(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

/// A source folder as an absolute path; an error names it when it is not a folder.
pub fn source_dir(arg: &Path) -> Result<PathBuf> {
    let abs = std::fs::canonicalize(arg).map_err(io(arg))?;
    if !abs.is_dir() {
        return Err(SearchError::Invalid(format!(
            "{}: not a folder (index takes folders of images)",
            arg.display()
        )));
    }
    Ok(abs)
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
                let mtime_ns = m
                    .modified()
                    .ok()
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map_or(0, |d| d.as_nanos() as u64);
                found.push(Found {
                    path: item.path().to_path_buf(),
                    size: m.len(),
                    mtime_ns,
                });
            }
            Err(e) => problems.push(format!("{}: {e}", item.path().display())),
        }
    }
    (found, problems)
}
