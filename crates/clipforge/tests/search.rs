//! `clipforge index` and `search` end to end on a folder written here: a corrupt image skipped
//! and listed, text and image queries, a re-index that embeds only what changed, another model
//! refused, and an indexing run killed with SIGKILL then finished by the next run, giving the
//! index an uninterrupted run gives.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use common::{assert_clean_error, clipforge, photo_folder, png, tmp, trained_run, COLOURS};

fn json(o: &std::process::Output) -> serde_json::Value {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).expect("one JSON object")
}

fn index(run: &Path, folder: Option<&Path>, out: &Path, extra: &[&str]) -> serde_json::Value {
    let mut args = vec![
        "index",
        "--checkpoint",
        run.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--json",
    ];
    if let Some(f) = folder {
        args.push(f.to_str().unwrap());
    }
    args.extend_from_slice(extra);
    json(&clipforge(&args))
}

fn search(run: &Path, out: &Path, query: &[&str]) -> Vec<serde_json::Value> {
    let mut args = vec![
        "search",
        "--index",
        out.to_str().unwrap(),
        "--checkpoint",
        run.to_str().unwrap(),
        "--json",
    ];
    args.extend_from_slice(query);
    let o = clipforge(&args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// path → embedding, read from the index files.
fn vectors(out: &Path) -> BTreeMap<PathBuf, Vec<f32>> {
    let idx = clip_search::Index::load(out).unwrap();
    idx.entries
        .iter()
        .enumerate()
        .map(|(i, e)| (e.path.clone(), idx.vector(i).to_vec()))
        .collect()
}

#[test]
fn index_search_and_reindex_only_the_change() {
    let run = trained_run("search-run");
    let folder = tmp("search-photos");
    photo_folder(&folder, 12);
    let out = tmp("search-index");
    let r = index(&run, Some(&folder), &out, &[]);
    assert_eq!(r["found"], 13, "{r}"); // 12 images and the corrupt one
    assert_eq!(r["embedded"], 12, "{r}");
    assert_eq!(r["total"], 12, "{r}");
    let skipped = r["skipped"].as_array().unwrap();
    assert_eq!(skipped.len(), 1, "{r}");
    assert!(skipped[0]["path"].as_str().unwrap().ends_with("broken.jpg"));

    let hits = search(&run, &out, &["a red square", "-k", "5"]);
    assert_eq!(hits.len(), 5);
    let scores: Vec<f64> = hits.iter().map(|h| h["score"].as_f64().unwrap()).collect();
    assert!(scores.windows(2).all(|w| w[0] >= w[1]), "{scores:?}");
    let idx = clip_search::Index::load(&out).unwrap();
    for h in &hits {
        let id = h["id"].as_u64().unwrap();
        assert!(idx.row_of(id).is_some());
        assert!(
            clip_search::thumbs::path(&out, id).is_file(),
            "thumbnail of {id}"
        );
    }
    // An image finds itself first.
    let me = folder.join("sub/deeper/img005.png");
    let hits = search(&run, &out, &["--image", me.to_str().unwrap(), "-k", "1"]);
    assert_eq!(
        hits[0]["path"],
        std::fs::canonicalize(&me).unwrap().to_str().unwrap()
    );
    assert!(hits[0]["score"].as_f64().unwrap() > 0.999);

    // Two new files, one deleted: only the two are embedded, the deleted one leaves.
    std::fs::write(folder.join("new1.png"), png(COLOURS[0], 40)).unwrap();
    std::fs::write(folder.join("sub/new2.png"), png(COLOURS[2], 41)).unwrap();
    std::fs::remove_file(folder.join("img000.png")).unwrap();
    let before = vectors(&out);
    let r = index(&run, None, &out, &[]);
    assert_eq!(r["embedded"], 2, "{r}");
    assert_eq!(r["removed"], 1, "{r}");
    assert_eq!(r["unchanged"], 11, "{r}");
    assert_eq!(r["total"], 13, "{r}");
    assert_eq!(
        r["skipped"].as_array().unwrap().len(),
        1,
        "still listed, not retried: {r}"
    );
    let after = vectors(&out);
    assert_eq!(after.len(), 13);
    for (p, v) in &before {
        if p.exists() {
            assert_eq!(after.get(p), Some(v), "{} kept as it was", p.display());
        } else {
            assert!(!after.contains_key(p), "{} is gone", p.display());
        }
    }

    // The export: NumPy's format, one row per entry, the same vectors.
    let export = tmp("search-export");
    index(
        &run,
        None,
        &out,
        &["--export-npy", export.to_str().unwrap()],
    );
    let bytes = std::fs::read(export.join("embeddings.npy")).unwrap();
    assert!(bytes.starts_with(b"\x93NUMPY"));
    let header = String::from_utf8_lossy(&bytes[10..128]);
    assert!(header.contains("'shape': (13, 128"), "{header}");
    let lines = std::fs::read_to_string(export.join("entries.jsonl")).unwrap();
    assert_eq!(lines.lines().count(), 13);
    let idx = clip_search::Index::load(&out).unwrap();
    let data_start = bytes.len() - 13 * 128 * 4;
    let first: Vec<f32> = bytes[data_start..data_start + 128 * 4]
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    assert_eq!(first, idx.vector(0));

    // Another model's queries are refused, by name.
    let w = tmp("search-other.safetensors");
    let o = clipforge(&[
        "init",
        "--model",
        "tiny",
        "--seed",
        "5",
        "--out",
        w.to_str().unwrap(),
    ]);
    assert!(o.status.success());
    let o = clipforge(&[
        "search",
        "--index",
        out.to_str().unwrap(),
        "--model",
        "tiny",
        "--weights",
        w.to_str().unwrap(),
        "a red square",
    ]);
    assert_clean_error(&o, &["another model"]);
    let o = clipforge(&[
        "index",
        "--model",
        "tiny",
        "--weights",
        w.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        folder.to_str().unwrap(),
    ]);
    assert_clean_error(&o, &["another model"]);
}

#[test]
fn a_killed_index_run_is_finished_by_the_next() {
    let run = trained_run("search-kill-run");
    let folder = tmp("search-kill-photos");
    photo_folder(&folder, 400);
    let whole = tmp("search-kill-whole");
    index(&run, Some(&folder), &whole, &["--batch-size", "8"]);

    let out = tmp("search-kill-index");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_clipforge"))
        .args([
            "index",
            "--checkpoint",
            run.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--batch-size",
            "8",
            "--segment-rows",
            "16",
            "--json",
            folder.to_str().unwrap(),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Wait for a few segments, then SIGKILL mid-run.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        let m = std::fs::read_to_string(out.join("manifest.json")).unwrap_or_default();
        let segs = serde_json::from_str::<serde_json::Value>(&m)
            .ok()
            .and_then(|v| v["segments"].as_array().map(Vec::len))
            .unwrap_or(0);
        if segs >= 3 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no segments committed"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "finished before it could be killed"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    // What it committed loads; the next run embeds only the rest.
    let partial = clip_search::Index::load(&out).unwrap().len();
    assert!((48..400).contains(&partial), "{partial} committed");
    let r = index(&run, None, &out, &["--batch-size", "8"]);
    assert_eq!(r["unchanged"], partial as u64, "{r}");
    assert_eq!(r["embedded"], 400 - partial as u64, "{r}");
    assert_eq!(r["total"], 400, "{r}");
    let (a, b) = (vectors(&whole), vectors(&out));
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    for (p, v) in &a {
        let w = &b[p];
        let d = v
            .iter()
            .zip(w)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        assert!(d < 1e-5, "{}: {d}", p.display());
    }
}

#[test]
fn bf16_and_int8_indexes_hold_the_f32_index_vectors_within_rounding() {
    let run = trained_run("bf16-run");
    let folder = tmp("bf16-photos");
    photo_folder(&folder, 6);
    let a = tmp("f32.idx");
    index(&run, Some(&folder), &a, &[]);
    let va = vectors(&a);
    for (dtype, min_cos) in [("bf16", 0.999), ("int8", 0.99)] {
        let b = tmp(&format!("{dtype}.idx"));
        let r = index(&run, Some(&folder), &b, &["--dtype", dtype]);
        assert_eq!(r["embedded"], 6, "{r}");
        let vb = vectors(&b);
        assert_eq!(va.keys().collect::<Vec<_>>(), vb.keys().collect::<Vec<_>>());
        for (path, x) in &va {
            // Unit vectors: the cosine is the dot product.
            let cos: f32 = x.iter().zip(&vb[path]).map(|(u, v)| u * v).sum();
            assert!(
                cos > min_cos,
                "{}: cosine {cos} between {dtype} and f32",
                path.display()
            );
        }
        // Where the products change (int8 always; bf16 where the hardware takes it), the
        // vectors did move.
        if dtype == "int8" || clip::ops::bf16_kernel().is_some() {
            let moved = va
                .iter()
                .any(|(p, x)| x.iter().zip(&vb[p]).any(|(u, v)| u != v));
            assert!(moved, "--dtype {dtype} gave the f32 vectors bit for bit");
        }
    }
}

#[test]
fn webdataset_shards_are_indexed_where_they_lie() {
    let run = trained_run("shard-run");
    let dir = tmp("shard-data");
    std::fs::create_dir_all(&dir).unwrap();
    let mut w = clip_data::files::ShardWriter::new(&dir, "train", 4).unwrap();
    let images: Vec<Vec<u8>> = (0..7).map(|i| png(COLOURS[i % 4], i)).collect();
    for (i, bytes) in images.iter().enumerate() {
        w.write(bytes, "png", &format!("picture {i}")).unwrap();
    }
    w.write(b"not an image at all", "jpg", "broken").unwrap();
    let shards = w.finish().unwrap();
    assert_eq!(shards.len(), 2);

    let out = tmp("shard-index");
    let pattern = format!("{}/train-{{000000..000001}}.tar", dir.display());
    let r = index(&run, None, &out, &[&pattern]);
    assert_eq!(r["embedded"], 7, "{r}");
    let skipped = r["skipped"].as_array().unwrap();
    assert_eq!(skipped.len(), 1, "{r}");
    assert_eq!(skipped[0]["member"]["name"], "000000007.jpg", "{r}");

    // Each entry reads back the bytes that went into the shard.
    let idx = clip_search::Index::load(&out).unwrap();
    let mut names: Vec<String> = Vec::new();
    for e in &idx.entries {
        let m = e.member.as_ref().expect("a shard member");
        let i: usize = m.name[..9].parse().unwrap();
        assert_eq!(e.read_bytes().unwrap(), images[i], "{}", e.location());
        names.push(m.name.clone());
    }
    names.sort();
    assert_eq!(names.len(), 7);

    // The same images as files embed to the same vectors; a query finds the member.
    let folder = tmp("shard-as-files");
    std::fs::create_dir_all(&folder).unwrap();
    for (i, bytes) in images.iter().enumerate() {
        std::fs::write(folder.join(format!("{i:09}.png")), bytes).unwrap();
    }
    let files = tmp("shard-files-index");
    index(&run, Some(&folder), &files, &[]);
    let by_file = clip_search::Index::load(&files).unwrap();
    for (row, e) in idx.entries.iter().enumerate() {
        let name = &e.member.as_ref().unwrap().name;
        let other = by_file
            .entries
            .iter()
            .position(|f| f.path.file_name().unwrap().to_str() == Some(name.as_str()))
            .unwrap();
        assert_eq!(idx.vector(row), by_file.vector(other), "{name}");
    }
    let query = folder.join("000000003.png");
    let hits = search(&run, &out, &["--image", query.to_str().unwrap(), "-k", "1"]);
    assert_eq!(hits[0]["member"], "000000003.png", "{hits:?}");
    assert!(hits[0]["path"]
        .as_str()
        .unwrap()
        .ends_with("train-000000.tar"));

    // Indexing again finds nothing changed; a shard rewritten is embedded again whole.
    let r = index(&run, None, &out, &[]);
    assert_eq!(
        (r["embedded"].clone(), r["unchanged"].clone()),
        (0.into(), 7.into()),
        "{r}"
    );
    std::fs::remove_file(&shards[1]).unwrap();
    let r = index(&run, None, &out, &[]);
    assert_eq!(r["removed"], 3, "{r}");
    assert_eq!(r["total"], 4, "{r}");
    assert!(r["problems"][0].as_str().unwrap().contains("gone"), "{r}");

    // A fetched dataset's folder (it has a dataset.json): the images in its shards.
    std::fs::write(dir.join("dataset.json"), "{}").unwrap();
    let whole = tmp("shard-dataset-index");
    let r = index(&run, Some(&dir), &whole, &[]);
    assert_eq!(
        (r["embedded"].clone(), r["total"].clone()),
        (4.into(), 4.into()),
        "{r}"
    );
}
