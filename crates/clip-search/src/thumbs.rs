//! Thumbnails of indexed images, `thumbs/<id>.jpg`, at most `SIDE` pixels on their longer side:
//! what a results page shows without reading the full images.

use std::path::{Path, PathBuf};

use image::DynamicImage;

use crate::error::{io, Result};

/// Longer side of a thumbnail, in pixels.
pub const SIDE: u32 = 256;

pub fn path(index_dir: &Path, id: u64) -> PathBuf {
    index_dir.join("thumbs").join(format!("{id}.jpg"))
}

/// Write the thumbnail of `img` for entry `id` (JPEG, quality 85; alpha over white).
pub fn write(index_dir: &Path, id: u64, img: &DynamicImage) -> Result<()> {
    let small = img.thumbnail(SIDE, SIDE);
    let rgb = clip::transform::to_rgb_on_white(&small);
    let p = path(index_dir, id);
    if let Some(dir) = p.parent() {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
    }
    let mut bytes = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, 85)
        .encode_image(&rgb)
        .map_err(|e| crate::error::SearchError::Invalid(format!("{}: {e}", p.display())))?;
    std::fs::write(&p, bytes).map_err(io(&p))
}

/// Remove the thumbnail of `id`, if any.
pub fn remove(index_dir: &Path, id: u64) {
    let _ = std::fs::remove_file(path(index_dir, id));
}
