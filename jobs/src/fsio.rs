//! Atomic file writes: every file a reader may poll is written to a temporary name and renamed,
//! so a crash never leaves a half-written summary or marker.
//!
//! "Atomic" here includes durability: the file is fsynced before the rename and its directory
//! after it, so after a power cut a marker is either absent or whole, and a marker written
//! after [`sync_files`] never survives the files it vouches for.

use std::io::Write;
use std::path::Path;

use crate::JobError;

/// Writes `bytes` to `path` through `path.tmp` + fsync + rename + fsync of the directory.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), JobError> {
    let tmp = path.with_extension(format!(
        "{}.tmp",
        path.extension().and_then(|e| e.to_str()).unwrap_or("")
    ));
    let io = |source| JobError::Io { path: path.to_path_buf(), source };
    let mut f = std::fs::File::create(&tmp).map_err(io)?;
    f.write_all(bytes).map_err(io)?;
    f.sync_all().map_err(io)?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(io)?;
    sync_dir(path).map_err(io)
}

/// Fsyncs the directory holding `path`, which makes a rename or creation in it durable.
fn sync_dir(path: &Path) -> std::io::Result<()> {
    std::fs::File::open(folder_of(path))?.sync_all()
}

/// The folder `path` is in: its parent, or `.` for a bare file name (whose parent is `""`,
/// which no file call accepts) and for `/`.
pub fn folder_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Makes files written by other code paths durable before a marker vouches for them: fsyncs
/// each existing file of `names` in `dir` (a fresh descriptor flushes the inode's pages all the
/// same), then `dir` itself so their renames stick. Missing files are skipped: the marker's
/// reader checks presence.
pub fn sync_files(dir: &Path, names: &[&str]) -> Result<(), JobError> {
    for name in names {
        let path = dir.join(name);
        match std::fs::File::open(&path) {
            Ok(f) => f.sync_all().map_err(|source| JobError::Io { path: path.clone(), source })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(JobError::Io { path, source }),
        }
    }
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(|source| JobError::Io { path: dir.to_path_buf(), source })
}

/// Serializes `value` as pretty JSON and writes it atomically.
pub fn write_json_atomic<T: serde::Serialize>(path: &Path, value: &T) -> Result<(), JobError> {
    let mut text = serde_json::to_vec_pretty(value).map_err(|e| JobError::Io {
        path: path.to_path_buf(),
        source: std::io::Error::other(e),
    })?;
    text.push(b'\n');
    write_atomic(path, &text)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Review finding 10: `drover-job --spec spec.json` wrote its files into `""` and failed
    /// at the end ("failed to write ``"), leaving no exit.json.
    #[test]
    fn the_folder_of_a_bare_file_name_is_the_current_one() {
        assert_eq!(folder_of(Path::new("spec.json")), Path::new("."));
        assert_eq!(folder_of(Path::new("runs/a/spec.json")), Path::new("runs/a"));
        assert_eq!(folder_of(Path::new("/spec.json")), Path::new("/"));
    }

    #[test]
    fn atomic_write_replaces_and_leaves_no_tmp() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("exit.json");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names.len(), 1, "{names:?}");
    }

    #[test]
    fn sync_files_skips_missing_files_and_reports_unreadable_ones() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("summary.json"), b"{}").unwrap();
        sync_files(dir.path(), &["summary.json", "absent.parquet"]).unwrap();
        let err = sync_files(&dir.path().join("no-such-dir"), &[]).unwrap_err();
        assert!(err.to_string().contains("no-such-dir"), "{err}");
    }
}
