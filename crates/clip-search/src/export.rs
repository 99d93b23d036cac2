//! An index's embeddings for other engines: `embeddings.npy` (f32 `[N, E]`, NumPy's format) and
//! `entries.jsonl` (row i's id and path), so a vector database (Qdrant, pgvector, FAISS, …)
//! can take them.

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use npyz::WriterBuilder;

use crate::error::{io, Result};
use crate::store::Index;

/// Write `index` into `dir` as `embeddings.npy` and `entries.jsonl`; returns the two paths.
pub fn npy(index: &Index, dir: &Path) -> Result<(PathBuf, PathBuf)> {
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let npy = dir.join("embeddings.npy");
    let file = std::fs::File::create(&npy).map_err(io(&npy))?;
    let mut w = npyz::WriteOptions::<f32>::new()
        .default_dtype()
        .shape(&[index.len() as u64, index.dim() as u64])
        .writer(BufWriter::new(file))
        .begin_nd()
        .map_err(io(&npy))?;
    w.extend(index.vectors.iter().copied()).map_err(io(&npy))?;
    w.finish().map_err(io(&npy))?;
    let jsonl = dir.join("entries.jsonl");
    let file = std::fs::File::create(&jsonl).map_err(io(&jsonl))?;
    let mut out = BufWriter::new(file);
    for (row, e) in index.entries.iter().enumerate() {
        let mut line = serde_json::json!({"row": row, "id": e.id, "path": e.path});
        if let Some(m) = &e.member {
            line["member"] = serde_json::json!(m.name);
        }
        writeln!(out, "{line}").map_err(io(&jsonl))?;
    }
    out.flush().map_err(io(&jsonl))?;
    Ok((npy, jsonl))
}
