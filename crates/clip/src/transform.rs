//! The inference image transform of open_clip's `image_transform(is_train=False)`: resize the
//! shortest side to the model's size (bicubic), centre crop, scale to [0, 1], normalise with
//! CLIP's mean and std. Transparent images are composited on white.

use std::path::Path;

use candle_core::{Device, Tensor};
use image::{imageops::FilterType, DynamicImage, RgbImage};

use crate::error::{ClipError, Result};

/// OpenAI's dataset mean and std (open_clip `OPENAI_DATASET_MEAN` / `_STD`).
pub const CLIP_MEAN: [f32; 3] = [0.481_454_66, 0.457_827_5, 0.408_210_73];
pub const CLIP_STD: [f32; 3] = [0.268_629_54, 0.261_302_6, 0.275_777_1];

/// Decode an image file; the error names the file.
pub fn open_image(path: &Path) -> Result<DynamicImage> {
    let err = |msg: String| ClipError::Image {
        path: path.display().to_string(),
        msg,
    };
    let reader = image::ImageReader::open(path)
        .map_err(|e| err(format!("cannot open: {e}")))?
        .with_guessed_format()
        .map_err(|e| err(format!("cannot read: {e}")))?;
    reader
        .decode()
        .map_err(|e| err(format!("does not decode as an image: {e}")))
}

/// RGB, with any alpha composited on white.
pub fn to_rgb_on_white(img: &DynamicImage) -> RgbImage {
    if !img.color().has_alpha() {
        return img.to_rgb8();
    }
    let rgba = img.to_rgba8();
    let mut out = RgbImage::new(rgba.width(), rgba.height());
    for (o, p) in out.pixels_mut().zip(rgba.pixels()) {
        let a = p[3] as f32 / 255.0;
        for c in 0..3 {
            o[c] = (p[c] as f32 * a + 255.0 * (1.0 - a)).round() as u8;
        }
    }
    out
}

/// Resize shortest side to `size` (bicubic) and centre-crop to `size`×`size`, with
/// torchvision's arithmetic: long side `int(size · long / short)`, crop offset
/// `round((len − size) / 2)` (round half to even).
pub fn resize_center_crop(img: &RgbImage, size: usize) -> RgbImage {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let long = |l: usize, s: usize| ((size as f64 * l as f64 / s as f64) as usize).max(size);
    let (nw, nh) = if w <= h {
        (size, long(h, w))
    } else {
        (long(w, h), size)
    };
    let resized = if (nw, nh) == (w, h) {
        img.clone()
    } else {
        image::imageops::resize(img, nw as u32, nh as u32, FilterType::CatmullRom)
    };
    let offset = |len: usize| ((len - size) as f64 / 2.0).round_ties_even() as usize;
    let (left, top) = (offset(nw), offset(nh));
    image::imageops::crop_imm(&resized, left as u32, top as u32, size as u32, size as u32)
        .to_image()
}

/// Normalised CHW floats of a `size`×`size` RGB image: `[3 · size · size]`.
pub fn normalize_chw(img: &RgbImage) -> Vec<f32> {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let mut out = vec![0f32; 3 * w * h];
    for (x, y, p) in img.enumerate_pixels() {
        for c in 0..3 {
            out[c * w * h + y as usize * w + x as usize] =
                (p[c] as f32 / 255.0 - CLIP_MEAN[c]) / CLIP_STD[c];
        }
    }
    out
}

/// The whole inference transform of one decoded image: `[3, size, size]` floats.
pub fn preprocess(img: &DynamicImage, size: usize) -> Vec<f32> {
    normalize_chw(&resize_center_crop(&to_rgb_on_white(img), size))
}

/// Load and preprocess image files into a `[N, 3, size, size]` tensor.
pub fn load_images(paths: &[impl AsRef<Path>], size: usize, device: &Device) -> Result<Tensor> {
    let mut data = Vec::with_capacity(paths.len() * 3 * size * size);
    for p in paths {
        data.extend(preprocess(&open_image(p.as_ref())?, size));
    }
    Ok(Tensor::from_vec(
        data,
        (paths.len(), 3, size, size),
        device,
    )?)
}
