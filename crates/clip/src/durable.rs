//! Writes that survive a power loss: a file's bytes and a directory's entries are flushed to
//! the disk before a rename makes them visible, so a crash leaves the old file or the new one,
//! never a name pointing at empty or partial data.

use std::io::Write;
use std::path::Path;

/// Write `bytes` to `path` (created or truncated) and flush them to the disk.
pub fn write_synced(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut f = std::fs::File::create(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

/// Flush a written file's bytes to the disk.
pub fn sync_file(path: &Path) -> std::io::Result<()> {
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)?
        .sync_all()
}

/// Flush a directory's entries (created, renamed, removed names) to the disk. Where
/// directories cannot be opened as files (not on Unix) there is nothing to flush.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    if !cfg!(unix) {
        return Ok(());
    }
    std::fs::File::open(dir)?.sync_all().or_else(|e| {
        // Some file systems refuse fsync on a directory; nothing more can be done there.
        if e.kind() == std::io::ErrorKind::InvalidInput {
            Ok(())
        } else {
            Err(e)
        }
    })
}

/// Rename `from` to `to` (both synced already) and flush the directory holding `to`.
pub fn rename_synced(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::rename(from, to)?;
    sync_dir(
        to.parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new(".")),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_synced_write_then_rename_replaces_the_file() {
        let dir = std::env::temp_dir().join(format!("clipforge-durable-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (tmp, dest) = (dir.join("a.tmp"), dir.join("a"));
        std::fs::write(&dest, b"old").unwrap();
        write_synced(&tmp, b"new").unwrap();
        rename_synced(&tmp, &dest).unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), b"new");
        assert!(!tmp.exists());
        sync_file(&dest).unwrap();
        assert!(
            rename_synced(&tmp, &dest).is_err(),
            "a missing source is an error"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
