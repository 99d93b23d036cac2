//! SVG → RGBA pixels with resvg (no text or fonts: the icon sets draw with paths).

use image::{DynamicImage, RgbaImage};

/// Render SVG source so its longest side is `side` pixels, transparent background.
pub fn rasterise(svg: &[u8], side: u32) -> Result<DynamicImage, String> {
    let tree = resvg::usvg::Tree::from_data(svg, &resvg::usvg::Options::default())
        .map_err(|e| format!("not SVG: {e}"))?;
    let size = tree.size();
    let scale = side as f32 / size.width().max(size.height());
    let w = ((size.width() * scale).round() as u32).max(1);
    let h = ((size.height() * scale).round() as u32).max(1);
    let mut pixmap =
        resvg::tiny_skia::Pixmap::new(w, h).ok_or_else(|| format!("empty size {w}×{h}"))?;
    resvg::render(
        &tree,
        resvg::tiny_skia::Transform::from_scale(scale, scale),
        &mut pixmap.as_mut(),
    );
    let rgba = RgbaImage::from_raw(w, h, pixmap.take_demultiplied()).expect("w·h·4 bytes");
    Ok(DynamicImage::ImageRgba8(rgba))
}

#[cfg(test)]
mod tests {
    use super::rasterise;

    #[test]
    fn draws_a_red_square_on_transparent() {
        let svg = br##"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 10 5">
            <rect x="0" y="0" width="5" height="5" fill="#ff0000"/></svg>"##;
        let img = rasterise(svg, 40).unwrap().to_rgba8();
        assert_eq!(img.dimensions(), (40, 20));
        assert_eq!(img.get_pixel(5, 10).0, [255, 0, 0, 255]);
        assert_eq!(img.get_pixel(35, 10).0[3], 0);
        assert!(rasterise(b"<html>", 40).is_err());
    }
}
