//! The index on disk: `manifest.json` names the live segments; each segment is
//! `segments/NNNNNN.json` (its entries) and `segments/NNNNNN.f32` (their embeddings, rows of
//! `embed_dim` little-endian f32). Segments are written, synced and renamed into place before
//! the manifest that names them is replaced the same way, so a crash at any point leaves the
//! previous manifest and the segments it names: an index that loads, and loads right.
//! Files no manifest names (a crash's leftovers) are removed when a writer opens the index.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use clip::durable::{rename_synced, sync_dir, write_synced};
use serde::{Deserialize, Serialize};

use crate::error::{io, Result, SearchError};
use crate::model_id::ModelId;

/// The manifest's format; an index of another version is refused by name.
pub const FORMAT_VERSION: u32 = 1;
const MANIFEST: &str = "manifest.json";
const SEGMENTS: &str = "segments";

/// An image inside a WebDataset shard: its name in the tar and where its bytes lie.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Member {
    pub name: String,
    /// Byte offset of the image's data in the tar file, and its length.
    pub offset: u64,
    pub len: u64,
}

/// One indexed image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Stable for the image's life in the index; what the server hands out instead of paths.
    pub id: u64,
    /// Absolute path of the image file, or of the shard that holds it.
    pub path: PathBuf,
    /// The image inside the shard at `path`; none for an image file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member: Option<Member>,
    /// Size and modification time (of the file, or of the shard) when embedded: a change of
    /// either re-embeds it.
    pub size: u64,
    pub mtime_ns: u64,
}

impl Entry {
    /// What identifies the image among the sources: its file, and its name in a shard.
    pub fn key(&self) -> (&Path, Option<&str>) {
        (&self.path, self.member.as_ref().map(|m| m.name.as_str()))
    }

    /// Where the image is, for people: `PATH`, or `SHARD.tar:NAME`.
    pub fn location(&self) -> String {
        location(&self.path, self.member.as_ref())
    }

    /// The image's name: the file's, or the member's.
    pub fn name(&self) -> String {
        match &self.member {
            Some(m) => m.name.rsplit('/').next().unwrap_or(&m.name).to_string(),
            None => self
                .path
                .file_name()
                .map(|n| n.to_string_lossy().to_string())
                .unwrap_or_default(),
        }
    }

    /// The image file's bytes (read from its shard for a member).
    pub fn read_bytes(&self) -> std::io::Result<Vec<u8>> {
        read_image_bytes(&self.path, self.member.as_ref())
    }
}

/// `PATH`, or `SHARD.tar:NAME` for a shard member.
pub fn location(path: &Path, member: Option<&Member>) -> String {
    match member {
        Some(m) => format!("{}:{}", path.display(), m.name),
        None => path.display().to_string(),
    }
}

/// The bytes of an image file, or of `member` inside the tar at `path`.
pub fn read_image_bytes(path: &Path, member: Option<&Member>) -> std::io::Result<Vec<u8>> {
    use std::io::{Read, Seek, SeekFrom};
    let Some(m) = member else {
        return std::fs::read(path);
    };
    let mut f = std::fs::File::open(path)?;
    f.seek(SeekFrom::Start(m.offset))?;
    let mut bytes = vec![0; m.len as usize];
    f.read_exact(&mut bytes)?;
    Ok(bytes)
}

/// An image that could not be read, with why; tried again only when its file changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Skipped {
    pub path: PathBuf,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member: Option<Member>,
    pub size: u64,
    pub mtime_ns: u64,
    pub error: String,
}

impl Skipped {
    pub fn key(&self) -> (&Path, Option<&str>) {
        (&self.path, self.member.as_ref().map(|m| m.name.as_str()))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentRef {
    pub id: u32,
    pub rows: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub version: u32,
    pub model: ModelId,
    /// The sources indexed, absolute: folders, fetched datasets' folders and shard files.
    pub sources: Vec<PathBuf>,
    pub next_id: u64,
    pub next_segment: u32,
    pub segments: Vec<SegmentRef>,
    /// Ids whose rows in the segments are dead (the file changed or went away).
    pub deleted: BTreeSet<u64>,
    pub skipped: Vec<Skipped>,
}

impl Manifest {
    /// Rows in the segments, dead ones included.
    pub fn rows(&self) -> usize {
        self.segments.iter().map(|s| s.rows).sum()
    }
}

/// A loaded index: the live entries and their embeddings, row i of `vectors` for `entries[i]`.
#[derive(Debug, Clone)]
pub struct Index {
    pub dir: PathBuf,
    pub manifest: Manifest,
    pub entries: Vec<Entry>,
    /// `[entries.len(), embed_dim]`, row-major, unit rows.
    pub vectors: Vec<f32>,
    by_id: HashMap<u64, usize>,
}

fn segment_paths(dir: &Path, id: u32) -> (PathBuf, PathBuf) {
    let base = dir.join(SEGMENTS).join(format!("{id:06}"));
    (base.with_extension("json"), base.with_extension("f32"))
}

/// Write `bytes` to `path` durably: a temporary file, synced, renamed over `path`.
fn put(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension(format!(
        "{}.tmp",
        path.extension().and_then(|e| e.to_str()).unwrap_or("")
    ));
    write_synced(&tmp, bytes).map_err(io(&tmp))?;
    rename_synced(&tmp, path).map_err(io(path))
}

/// The manifest in `dir`, or `None` when there is none.
pub fn read_manifest(dir: &Path) -> Result<Option<Manifest>> {
    let path = dir.join(MANIFEST);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(&path)(e)),
    };
    let m: Manifest = serde_json::from_str(&text).map_err(|e| SearchError::Corrupt {
        path: path.clone(),
        msg: format!("not an index manifest: {e}"),
    })?;
    if m.version != FORMAT_VERSION {
        return Err(SearchError::Corrupt {
            path,
            msg: format!(
                "index format {} (this build reads {FORMAT_VERSION}): index again into a new directory",
                m.version
            ),
        });
    }
    Ok(Some(m))
}

fn read_segment(dir: &Path, seg: &SegmentRef, dim: usize) -> Result<(Vec<Entry>, Vec<f32>)> {
    let (json, f32s) = segment_paths(dir, seg.id);
    let text = std::fs::read_to_string(&json).map_err(io(&json))?;
    let entries: Vec<Entry> = serde_json::from_str(&text).map_err(|e| SearchError::Corrupt {
        path: json.clone(),
        msg: format!("not a segment's entries: {e}"),
    })?;
    let bytes = std::fs::read(&f32s).map_err(io(&f32s))?;
    if entries.len() != seg.rows || bytes.len() != seg.rows * dim * 4 {
        return Err(SearchError::Corrupt {
            path: f32s,
            msg: format!(
                "the manifest says {} rows of {dim} values; found {} entries and {} bytes",
                seg.rows,
                entries.len(),
                bytes.len()
            ),
        });
    }
    let vectors = bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    Ok((entries, vectors))
}

impl Index {
    /// Load the index in `dir`: every live row of every segment the manifest names.
    pub fn load(dir: &Path) -> Result<Self> {
        let manifest = read_manifest(dir)?.ok_or_else(|| SearchError::Io {
            path: dir.join(MANIFEST),
            reason: std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "no index here (clipforge index … --out DIR makes one)",
            ),
        })?;
        Self::from_manifest(dir, manifest)
    }

    fn from_manifest(dir: &Path, manifest: Manifest) -> Result<Self> {
        let dim = manifest.model.embed_dim;
        let mut entries = Vec::new();
        let mut vectors = Vec::new();
        for seg in &manifest.segments {
            let (es, vs) = read_segment(dir, seg, dim)?;
            for (e, row) in es.into_iter().zip(vs.chunks_exact(dim)) {
                if !manifest.deleted.contains(&e.id) {
                    entries.push(e);
                    vectors.extend_from_slice(row);
                }
            }
        }
        let by_id = entries.iter().enumerate().map(|(i, e)| (e.id, i)).collect();
        Ok(Self {
            dir: dir.to_path_buf(),
            manifest,
            entries,
            vectors,
            by_id,
        })
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn dim(&self) -> usize {
        self.manifest.model.embed_dim
    }

    /// Row of the entry with `id`.
    pub fn row_of(&self, id: u64) -> Option<usize> {
        self.by_id.get(&id).copied()
    }

    /// The embedding of row `i`.
    pub fn vector(&self, i: usize) -> &[f32] {
        let d = self.dim();
        &self.vectors[i * d..(i + 1) * d]
    }
}

/// Adds to and removes from an index on disk, each change durable when its call returns.
pub struct Writer {
    pub dir: PathBuf,
    pub manifest: Manifest,
}

impl Writer {
    /// Open the index in `dir` for `model`, or create it. An index made by another model is
    /// refused (its vectors live in another space). Leftovers of a crash are removed.
    pub fn open(dir: &Path, model: &ModelId, sources: &[PathBuf]) -> Result<Self> {
        std::fs::create_dir_all(dir.join(SEGMENTS)).map_err(io(dir))?;
        let manifest = match read_manifest(dir)? {
            Some(mut m) => {
                if !m.model.same_model(model) {
                    return Err(SearchError::ModelMismatch(format!(
                        "{}: this index was built with the model from {} (config {}, weights {}); \
                         {} is another model: index into a new directory, or use that model",
                        dir.display(),
                        m.model.source,
                        &m.model.config_hash[..12],
                        &m.model.weights_hash[..12],
                        model.source
                    )));
                }
                for s in sources {
                    if !m.sources.contains(s) {
                        m.sources.push(s.clone());
                    }
                }
                m
            }
            None => Manifest {
                version: FORMAT_VERSION,
                model: model.clone(),
                sources: sources.to_vec(),
                next_id: 0,
                next_segment: 0,
                segments: Vec::new(),
                deleted: BTreeSet::new(),
                skipped: Vec::new(),
            },
        };
        let w = Self {
            dir: dir.to_path_buf(),
            manifest,
        };
        w.remove_orphans()?;
        w.commit()?;
        Ok(w)
    }

    /// Remove segment files the manifest does not name, and temporary files.
    fn remove_orphans(&self) -> Result<()> {
        let seg_dir = self.dir.join(SEGMENTS);
        let live: BTreeSet<u32> = self.manifest.segments.iter().map(|s| s.id).collect();
        for item in std::fs::read_dir(&seg_dir).map_err(io(&seg_dir))? {
            let path = item.map_err(io(&seg_dir))?.path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            let id: Option<u32> = name.split('.').next().and_then(|s| s.parse().ok());
            let keep = !name.ends_with(".tmp") && id.is_some_and(|id| live.contains(&id));
            if !keep {
                std::fs::remove_file(&path).map_err(io(&path))?;
            }
        }
        Ok(())
    }

    /// Write the manifest durably.
    pub fn commit(&self) -> Result<()> {
        let json = serde_json::to_vec_pretty(&self.manifest).expect("a manifest serialises");
        put(&self.dir.join(MANIFEST), &json)?;
        sync_dir(&self.dir).map_err(io(&self.dir))
    }

    /// A fresh id for a new entry (committed with the next segment).
    pub fn next_id(&mut self) -> u64 {
        let id = self.manifest.next_id;
        self.manifest.next_id += 1;
        id
    }

    /// Add `entries` with their `vectors` (`[entries.len(), dim]`) as one segment, and commit
    /// it together with whatever else changed in the manifest.
    pub fn add_segment(&mut self, entries: &[Entry], vectors: &[f32]) -> Result<()> {
        let dim = self.manifest.model.embed_dim;
        assert_eq!(vectors.len(), entries.len() * dim, "one row per entry");
        if entries.is_empty() {
            return self.commit();
        }
        let id = self.manifest.next_segment;
        let (json, f32s) = segment_paths(&self.dir, id);
        let bytes: Vec<u8> = vectors.iter().flat_map(|v| v.to_le_bytes()).collect();
        put(&f32s, &bytes)?;
        put(
            &json,
            &serde_json::to_vec(entries).expect("entries serialise"),
        )?;
        sync_dir(&self.dir.join(SEGMENTS)).map_err(io(&self.dir))?;
        self.manifest.next_segment += 1;
        self.manifest.segments.push(SegmentRef {
            id,
            rows: entries.len(),
        });
        self.commit()
    }

    /// Mark `ids` dead (committed with the next commit).
    pub fn delete(&mut self, ids: impl IntoIterator<Item = u64>) {
        self.manifest.deleted.extend(ids);
    }

    /// When a quarter or more of the rows are dead, rewrite the live ones into new segments
    /// (of up to `rows_per_segment`), switch the manifest to them, then remove the old files.
    /// Returns whether it compacted.
    pub fn compact_if_sparse(&mut self, rows_per_segment: usize) -> Result<bool> {
        let rows = self.manifest.rows();
        if rows == 0 || self.manifest.deleted.len() * 4 < rows {
            return Ok(false);
        }
        let live = Index::from_manifest(&self.dir, self.manifest.clone())?;
        let old: Vec<SegmentRef> = std::mem::take(&mut self.manifest.segments);
        let dim = live.dim();
        let mut new_segments = Vec::new();
        for (k, chunk) in live.entries.chunks(rows_per_segment.max(1)).enumerate() {
            let start = k * rows_per_segment.max(1);
            let id = self.manifest.next_segment;
            self.manifest.next_segment += 1;
            let (json, f32s) = segment_paths(&self.dir, id);
            let vs = &live.vectors[start * dim..(start + chunk.len()) * dim];
            let bytes: Vec<u8> = vs.iter().flat_map(|v| v.to_le_bytes()).collect();
            put(&f32s, &bytes)?;
            put(
                &json,
                &serde_json::to_vec(chunk).expect("entries serialise"),
            )?;
            new_segments.push(SegmentRef {
                id,
                rows: chunk.len(),
            });
        }
        sync_dir(&self.dir.join(SEGMENTS)).map_err(io(&self.dir))?;
        self.manifest.segments = new_segments;
        self.manifest.deleted.clear();
        self.commit()?;
        for s in old {
            let (json, f32s) = segment_paths(&self.dir, s.id);
            for p in [json, f32s] {
                std::fs::remove_file(&p).map_err(io(&p))?;
            }
        }
        Ok(true)
    }

    /// The index as it is now.
    pub fn load(&self) -> Result<Index> {
        Index::from_manifest(&self.dir, self.manifest.clone())
    }
}
