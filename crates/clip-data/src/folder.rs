//! A labelled image folder in torchvision's `ImageFolder` layout: one sub-folder per class
//! (its name is the class name, `_` read as a space), the class's images inside (JPEG, PNG,
//! WebP; sub-folders of a class are read too). How people evaluate on their own photos.

use std::path::{Path, PathBuf};

use crate::files::{ImageSource, RawSample};
use crate::{io, DataError};

/// The image extensions read, lower-cased.
const EXTS: [&str; 4] = ["jpg", "jpeg", "png", "webp"];

/// A folder's classes (sorted by folder name, as torchvision) and its images, labelled.
#[derive(Debug, Clone)]
pub struct ImageFolder {
    pub root: PathBuf,
    pub classes: Vec<String>,
    /// In class order, then path order; `caption` is the class name.
    pub samples: Vec<RawSample>,
}

/// The fixed 90/10 split: a file is in test when the FNV-1a hash of `key` (its path inside
/// the folder or package) is 0 mod 10.
pub fn is_test(key: &str) -> bool {
    let h = key.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    });
    h % 10 == 0
}

impl ImageFolder {
    /// Read the layout under `root`: an error names a root that is no folder, a folder with no
    /// class sub-folders, or a class folder with no image.
    pub fn read(root: &Path) -> Result<Self, DataError> {
        let bad = |msg: String| DataError::Format {
            path: root.to_path_buf(),
            msg,
        };
        let mut dirs: Vec<PathBuf> = std::fs::read_dir(root)
            .map_err(io(root))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_dir())
            .collect();
        dirs.sort();
        if dirs.is_empty() {
            return Err(bad(
                "no class folders (expected one sub-folder per class, images inside)".into(),
            ));
        }
        let (mut classes, mut samples) = (Vec::new(), Vec::new());
        for (label, dir) in dirs.iter().enumerate() {
            let name = dir.file_name().unwrap_or_default().to_string_lossy();
            let class = name.replace('_', " ");
            let mut files = Vec::new();
            images_under(dir, &mut files)?;
            if files.is_empty() {
                let exts = EXTS.join(", ");
                return Err(bad(format!(
                    "class folder {name:?} holds no image ({exts})"
                )));
            }
            files.sort();
            samples.extend(files.into_iter().map(|f| RawSample {
                origin: f.display().to_string(),
                image: ImageSource::File(f),
                caption: class.clone(),
                label: Some(label),
            }));
            classes.push(class);
        }
        Ok(Self {
            root: root.to_path_buf(),
            classes,
            samples,
        })
    }

    /// The samples of the fixed split ([`is_test`] on each file's path inside the folder).
    pub fn split(&self, test: bool) -> Vec<RawSample> {
        let key = |s: &RawSample| match &s.image {
            ImageSource::File(p) => p
                .strip_prefix(&self.root)
                .unwrap_or(p)
                .display()
                .to_string(),
            ImageSource::Bytes(_) => s.origin.clone(),
        };
        let keep = |s: &&RawSample| is_test(&key(s)) == test;
        self.samples.iter().filter(keep).cloned().collect()
    }
}

/// Every image file under `dir`, recursively.
fn images_under(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), DataError> {
    for entry in std::fs::read_dir(dir).map_err(io(dir))? {
        let path = entry.map_err(io(dir))?.path();
        if path.is_dir() {
            images_under(&path, out)?;
        } else if path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| EXTS.contains(&e.to_ascii_lowercase().as_str()))
        {
            out.push(path);
        }
    }
    Ok(())
}
