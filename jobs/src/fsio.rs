//! Atomic file writes: every file a reader may poll is written to a temporary name and renamed,
//! so a crash never leaves a half-written summary or marker.
//!
//! "Atomic" here includes durability: the file is fsynced before the rename and its directory
//! after it, so after a power cut a marker is either absent or whole, and a marker written
//! after [`sync_files`] never survives the files it vouches for.
//!
//! The orchestrator keeps its own copy of this protocol (`drover::layout::write_atomic`; the
//! two crates share no dependency). Both follow the same rules, and a change to one is made to
//! the other: the temporary file is `<name>.tmp` beside the target, it is removed when the
//! write or the rename fails, and `EINVAL` from fsync on a directory is ignored.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::JobError;

/// Writes `bytes` to `path` through `<path>.tmp` + fsync + rename + fsync of the directory.
///
/// On failure no `.tmp` file is left behind (a full disk must not also leave a stray partial
/// file) and `path` keeps its old content.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), JobError> {
    write_atomic_with(path, |file| file.write_all(bytes).map_err(|source| JobError::Io { path: path.to_path_buf(), source }))
}

/// [`write_atomic`] for a file written a piece at a time: `fill` writes the content into the
/// empty temporary file (so it never has to be whole in memory, as `metrics.parquet` at a
/// million rows would be), and the same fsync, rename, fsync of the directory and clean-up
/// follow. An error of `fill` is returned as it is, after the temporary file is removed.
pub fn write_atomic_with(path: &Path, fill: impl FnOnce(&mut File) -> Result<(), JobError>) -> Result<(), JobError> {
    let io = |source| JobError::Io { path: path.to_path_buf(), source };
    let tmp = tmp_path(path);
    // Never through a link planted at the temporary name (it would truncate the link's target),
    // and never into a file with other names: opened without `O_TRUNC`, checked, then emptied.
    let written = open_regular(&tmp, OpenOptions::new().write(true).create(true).truncate(false)).map_err(io).and_then(|mut file| {
        refuse_hard_links(&tmp, &file).map_err(io)?;
        file.set_len(0).map_err(io)?;
        fill(&mut file)?;
        file.sync_all().map_err(io)
    });
    if let Err(e) = written.and_then(|()| std::fs::rename(&tmp, path).map_err(io)) {
        // A failed create left none; anything else did. A link or special file that was
        // refused is left for the user to see and remove.
        if std::fs::symlink_metadata(&tmp).is_ok_and(|m| m.file_type().is_file() && m.nlink() == 1) {
            let _ = std::fs::remove_file(&tmp);
        }
        return Err(e);
    }
    sync_dir(folder_of(path)).map_err(io)
}

/// Opens `path` with `options` plus `O_NOFOLLOW` and `O_NONBLOCK` (a FIFO never blocks the
/// open), then refuses anything but a regular file, naming the file and why. Whoever can
/// write a run directory could plant a link there to a file of the job owner's, which a
/// write would truncate. The orchestrator keeps the same rule (`drover::lock::open_regular`).
pub fn open_regular(path: &Path, options: &mut OpenOptions) -> std::io::Result<File> {
    let file = options.custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK).open(path).map_err(|e| not_regular(path, e))?;
    let meta = file.metadata()?;
    if !meta.file_type().is_file() {
        return Err(not_regular_error(path, &meta.file_type()));
    }
    Ok(file)
}

fn not_regular(path: &Path, err: std::io::Error) -> std::io::Error {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_symlink() => std::io::Error::other(format!(
            "`{}` is a symbolic link; drover does not write through links in a results directory (remove it)",
            path.display()
        )),
        Ok(meta) if !meta.file_type().is_file() && !meta.file_type().is_dir() => not_regular_error(path, &meta.file_type()),
        _ => err,
    }
}

fn not_regular_error(path: &Path, kind: &std::fs::FileType) -> std::io::Error {
    let what = if kind.is_fifo() {
        "a FIFO"
    } else if kind.is_socket() {
        "a socket"
    } else if kind.is_dir() {
        "a directory"
    } else {
        "a device or other special file"
    };
    std::io::Error::other(format!("`{}` is not a regular file but {what}; drover only uses regular files there (remove it)", path.display()))
}

/// Refuses a file about to be truncated that has other hard links: a link planted to a file
/// elsewhere would be clobbered through it (a temporary file is never linked otherwise).
fn refuse_hard_links(path: &Path, file: &File) -> std::io::Result<()> {
    let links = file.metadata()?.nlink();
    if links > 1 {
        return Err(std::io::Error::other(format!(
            "`{}` has other hard links ({links} names); drover does not write through links in a results directory (remove it)",
            path.display()
        )));
    }
    Ok(())
}

/// The temporary name [`write_atomic`] writes `path` under: `<file name>.tmp` beside it (the
/// orchestrator's `layout::write_atomic` and the Slurm batch script use the same scheme).
pub fn tmp_path(path: &Path) -> PathBuf {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    PathBuf::from(tmp)
}

/// Fsyncs the directory `dir`, which makes a rename or creation in it durable.
///
/// `EINVAL` is ignored: some filesystems (FUSE, some network mounts) cannot fsync a directory,
/// and the rename is done all the same (PostgreSQL's `fsync_fname` makes the same exception).
/// Failing there would fail every run at its last step, writing `exit.json`.
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    match std::fs::File::open(dir).and_then(|d| d.sync_all()) {
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Ok(()),
        other => other,
    }
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
    sync_dir(dir).map_err(|source| JobError::Io { path: dir.to_path_buf(), source })
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

    /// Security review F1: the temporary file was created with `File::create`, which follows a
    /// symbolic link planted at `<name>.tmp` and truncates its target.
    #[test]
    fn write_atomic_never_writes_through_a_planted_link_at_its_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let canary = dir.path().join("canary.txt");
        std::fs::write(&canary, b"precious").unwrap();
        let p = dir.path().join("exit.json");
        std::os::unix::fs::symlink(&canary, tmp_path(&p)).unwrap();
        let err = write_atomic(&p, b"{}").unwrap_err().to_string();
        assert!(err.contains("exit.json.tmp` is a symbolic link; drover does not write through links in a results directory"), "{err}");
        assert_eq!(std::fs::read(&canary).unwrap(), b"precious");
        std::fs::remove_file(tmp_path(&p)).unwrap();
        std::fs::hard_link(&canary, tmp_path(&p)).unwrap();
        let err = write_atomic(&p, b"{}").unwrap_err().to_string();
        assert!(err.contains("has other hard links"), "{err}");
        assert_eq!(std::fs::read(&canary).unwrap(), b"precious");
    }

    #[test]
    fn sync_files_skips_missing_files_and_reports_unreadable_ones() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("summary.json"), b"{}").unwrap();
        sync_files(dir.path(), &["summary.json", "absent.parquet"]).unwrap();
        let err = sync_files(&dir.path().join("no-such-dir"), &[]).unwrap_err();
        assert!(err.to_string().contains("no-such-dir"), "{err}");
    }

    /// Review (crash consistency, item 1): the orchestrator's copy ignored `EINVAL` from fsync
    /// on a directory (FUSE, some network mounts), this one failed, so on such a filesystem
    /// every run failed at its last step, writing `exit.json`. procfs answers `EINVAL` too.
    #[test]
    fn a_directory_that_cannot_be_fsynced_with_einval_is_no_error() {
        let proc_dir = Path::new("/proc/self");
        let raw = std::fs::File::open(proc_dir).and_then(|d| d.sync_all()).map_err(|e| e.raw_os_error());
        assert_eq!(raw, Err(Some(libc::EINVAL)), "procfs refuses fsync with EINVAL");
        sync_files(proc_dir, &[]).expect("EINVAL from the directory's fsync is ignored");
        assert_eq!(sync_dir(proc_dir).map_err(|e| e.kind()), Ok(()));
    }

    /// Review (crash consistency, item 1): a failed write left its temporary file behind (and a
    /// file without an extension got `name..tmp`); now it goes, as the orchestrator's does,
    /// and the old content stays.
    #[test]
    fn a_failed_atomic_write_leaves_no_tmp_and_the_old_content_intact() {
        let dir = tempfile::tempdir().unwrap();
        let blocked = dir.path().join("blocked");
        std::fs::create_dir(&blocked).unwrap();
        std::fs::write(blocked.join("keep"), b"kept").unwrap();
        write_atomic(&blocked, b"new").expect_err("cannot replace a directory");
        assert_eq!(std::fs::read(blocked.join("keep")).unwrap(), b"kept");
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, ["blocked"]);
        assert_eq!(tmp_path(Path::new("runs/a/exit.json")), Path::new("runs/a/exit.json.tmp"));
        assert_eq!(tmp_path(Path::new("runs/a/noext")), Path::new("runs/a/noext.tmp"));
    }
}
