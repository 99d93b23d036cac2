//! Fashion-MNIST (Zalando, MIT) from Debian's `dataset-fashion-mnist`: IDX files
//! `usr/share/datasets/fashion-mnist/{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz`,
//! 28×28 grey, 60,000 train and 10,000 test images, 10 classes.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use super::{registry, DatasetInfo, SourceInfo, SplitInfo};
use crate::files::ShardWriter;
use crate::{bad, io, DataError};

/// Class names in label order (the dataset's own labels, lower-cased; "T-shirt/top" → "t-shirt").
pub const CLASSES: [&str; 10] = [
    "t-shirt",
    "trousers",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle boot",
];

/// Prompt templates: CLIP's habit of naming the medium, for small grey product photos.
pub const TEMPLATES: [&str; 6] = [
    "a photo of a {}.",
    "a black and white photo of a {}.",
    "a low resolution photo of a {}.",
    "a photo of the {}, a type of clothing.",
    "a picture of a {}.",
    "a {}.",
];

const PER_SHARD: usize = 10_000;
const DIR: &str = "usr/share/datasets/fashion-mnist";

/// Bytes of a gzip'd IDX file after its header, and its dimensions.
fn read_idx(path: &Path, magic: u32) -> Result<(Vec<usize>, Vec<u8>), DataError> {
    let err = |m: String| bad(path)(m);
    let f = std::fs::File::open(path).map_err(io(path))?;
    let mut bytes = Vec::new();
    flate2::read::GzDecoder::new(f)
        .read_to_end(&mut bytes)
        .map_err(|e| err(format!("not gzip: {e}")))?;
    let word = |i: usize| -> Result<u32, DataError> {
        bytes
            .get(4 * i..4 * i + 4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
            .ok_or_else(|| err("shorter than its IDX header".into()))
    };
    if word(0)? != magic {
        return Err(err(format!(
            "IDX magic {:#010x}, expected {magic:#010x}",
            word(0)?
        )));
    }
    let ndim = (magic & 0xff) as usize;
    let dims: Vec<usize> = (1..=ndim)
        .map(|i| word(i).map(|w| w as usize))
        .collect::<Result<_, _>>()?;
    let body = bytes.split_off(4 * (ndim + 1));
    if body.len() != dims.iter().product::<usize>() {
        return Err(err(format!(
            "{} bytes of data for dimensions {dims:?}",
            body.len()
        )));
    }
    Ok((dims, body))
}

/// Write one split's shards; returns its count.
fn convert(root: &Path, out: &Path, idx: &str, split: &str) -> Result<usize, DataError> {
    let (dims, pixels) = read_idx(
        &root.join(format!("{DIR}/{idx}-images-idx3-ubyte.gz")),
        0x0803,
    )?;
    let (ldims, labels) = read_idx(
        &root.join(format!("{DIR}/{idx}-labels-idx1-ubyte.gz")),
        0x0801,
    )?;
    let (n, h, w) = (dims[0], dims[1], dims[2]);
    if ldims[0] != n {
        let msg = format!("{n} images but {} labels", ldims[0]);
        return Err(bad(Path::new(idx))(msg));
    }
    let mut writer = ShardWriter::new(out, split, PER_SHARD)?;
    for (i, &label) in labels.iter().enumerate() {
        let label = label as usize;
        let class = CLASSES.get(label).ok_or_else(|| {
            bad(Path::new(idx))(format!(
                "label {label} of image {i} is not one of 10 classes"
            ))
        })?;
        let img = image::GrayImage::from_raw(
            w as u32,
            h as u32,
            pixels[i * h * w..(i + 1) * h * w].to_vec(),
        )
        .expect("h·w bytes");
        let png = super::png(&img.into(), &format!("image {i}"))?;
        writer.write_labelled(&png, "png", &TEMPLATES[0].replace("{}", class), Some(label))?;
    }
    writer.finish()?;
    Ok(n)
}

/// Download, check and convert into `out`; returns the dataset's description.
pub fn fetch(out: &Path, log: &mut impl FnMut(&str)) -> Result<DatasetInfo, DataError> {
    let work = out.join(".download");
    std::fs::create_dir_all(&work).map_err(io(&work))?;
    log("apt-get download dataset-fashion-mnist");
    let (root, version) = registry::debian("dataset-fashion-mnist", &work)?;
    let mut splits = BTreeMap::new();
    for (idx, split) in [("train", "train"), ("t10k", "test")] {
        log(&format!("converting {split}"));
        let count = convert(&root, out, idx, split)?;
        let shards = count.div_ceil(PER_SHARD);
        splits.insert(
            split.to_string(),
            SplitInfo {
                shards: format!("{split}-{{000000..{:06}}}.tar", shards - 1),
                count,
            },
        );
    }
    std::fs::remove_dir_all(&work).map_err(io(&work))?;
    Ok(DatasetInfo {
        name: "fashion-mnist".into(),
        classes: CLASSES.iter().map(|s| s.to_string()).collect(),
        templates: TEMPLATES.iter().map(|s| s.to_string()).collect(),
        splits,
        source: SourceInfo {
            registry: "debian".into(),
            package: "dataset-fashion-mnist".into(),
            version,
            files: ["train", "t10k"]
                .iter()
                .flat_map(|p| {
                    [
                        format!("{DIR}/{p}-images-idx3-ubyte.gz"),
                        format!("{DIR}/{p}-labels-idx1-ubyte.gz"),
                    ]
                })
                .collect(),
        },
        license: "MIT (Expat), Copyright 2017 Zalando SE".into(),
        caption_rule: "bare labels made sentences: the class name in the first template, \
                       \"a photo of a {class}.\""
            .into(),
        parts: Vec::new(),
    })
}
