//! Decoding and training augmentation: open_clip's train transform, `RandomResizedCrop(size,
//! scale=(0.9, 1.0), ratio=(3/4, 4/3), bicubic)` then CLIP normalisation; transparent images
//! composited on white. Randomness comes from a seeded RNG per sample.

use image::{imageops::FilterType, DynamicImage};
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::files::ImageSource;

/// Decode an image from a file or bytes; `None` if it does not decode.
pub fn decode(src: &ImageSource) -> Option<DynamicImage> {
    match src {
        ImageSource::File(p) => image::ImageReader::open(p)
            .ok()?
            .with_guessed_format()
            .ok()?
            .decode()
            .ok(),
        ImageSource::Bytes(b) => image::load_from_memory(b).ok(),
    }
}

/// A random crop covering 90–100% of the area with aspect ratio in [3/4, 4/3] (torchvision's
/// sampling, 10 tries then a centre crop), resized to `size`² with bicubic → `[3, size, size]`.
pub fn random_resized_crop(img: &DynamicImage, size: usize, rng: &mut ChaCha8Rng) -> Vec<f32> {
    let rgb = clip::transform::to_rgb_on_white(img);
    let (w, h) = (rgb.width() as f64, rgb.height() as f64);
    let area = w * h;
    let mut crop = None;
    for _ in 0..10 {
        let target = area * rng.random_range(0.9..=1.0);
        let log_ratio = rng.random_range((3f64 / 4.0).ln()..=(4f64 / 3.0).ln());
        let ratio = log_ratio.exp();
        let cw = (target * ratio).sqrt().round();
        let ch = (target / ratio).sqrt().round();
        if cw >= 1.0 && ch >= 1.0 && cw <= w && ch <= h {
            let x = rng.random_range(0.0..=(w - cw)).floor();
            let y = rng.random_range(0.0..=(h - ch)).floor();
            crop = Some((x as u32, y as u32, cw as u32, ch as u32));
            break;
        }
    }
    let (x, y, cw, ch) = crop.unwrap_or_else(|| {
        let s = w.min(h);
        (
            ((w - s) / 2.0) as u32,
            ((h - s) / 2.0) as u32,
            s as u32,
            s as u32,
        )
    });
    let cropped = image::imageops::crop_imm(&rgb, x, y, cw, ch).to_image();
    let resized =
        image::imageops::resize(&cropped, size as u32, size as u32, FilterType::CatmullRom);
    clip::transform::normalize_chw(&resized)
}
