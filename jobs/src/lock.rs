//! The run-directory lock: a job holds an exclusive `flock` on `<run_dir>/.job.lock` for its whole life.
//!
//! The lock says "a job is writing this run directory". The kernel drops it when the last
//! descriptor of its open file goes away, so it is released on any death, `SIGKILL` included,
//! and can never go stale (over NFS, a crashed node's lock lasts until the server's lease ends).
//! A filesystem without locks gives [`JobLockError::Unsupported`], which the job warns about
//! and runs on. `drover run` reads it before touching a run directory: a run whose
//! lock is held is still running elsewhere (an orphan of a killed `drover run`, say) and is
//! neither archived nor relaunched (docs/design/results-layout.md, "Crash consistency").
//!
//! The local backend takes the lock itself before spawning the job and hands the locked
//! descriptor down (its number in `DROVER_JOB_LOCK_FD`), so the lock is held from the moment
//! the process exists, with no window in which a new `drover run` could see the run as free.
//! A job started any other way (Slurm, by hand) takes the lock by path.
//!
//! Each rank of a multi-rank job (under `mpirun` or `srun`) holds a *shared* `flock` on
//! `<run_dir>/.ranks.lock` for its whole life instead ([`acquire_ranks`]): the launcher that
//! holds `.job.lock` can die before its ranks (OpenMPI puts each rank in a process group of its
//! own, out of reach of a signal to the launcher's group), and the run must stay busy for as long
//! as any rank can write there. The orchestrator treats a held `.ranks.lock` like a held
//! `.job.lock` (`drover::backend::job_lock`).

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Name of the lock file inside a run directory (the orchestrator uses the same name).
pub const JOB_LOCK_FILE: &str = ".job.lock";

/// Name of the file every rank of a multi-rank job holds a shared lock on (the orchestrator
/// uses the same name).
pub const RANKS_LOCK_FILE: &str = ".ranks.lock";

/// How long a starting rank waits for the shared lock: the orchestrator holds it exclusively
/// only for a moment (a probe, or the launch of the job this rank belongs to).
const RANKS_LOCK_PATIENCE: std::time::Duration = std::time::Duration::from_secs(30);

/// The environment variable through which the local backend passes the locked descriptor.
pub const LOCK_FD_ENV: &str = "DROVER_JOB_LOCK_FD";

/// Why the run directory could not be locked.
#[derive(Debug, thiserror::Error)]
pub enum JobLockError {
    /// Another process holds the lock: this run is being written by someone else.
    #[error(
        "run directory `{}` is in use by another job ({holder}); not touching it: wait for that job \
         to end (or stop it), then run again",
        dir.display()
    )]
    Busy {
        /// The run directory.
        dir: PathBuf,
        /// What the holder wrote about itself.
        holder: String,
    },
    /// The filesystem does not do `flock` (Lustre mounted `noflock`, NFS mounted `nolock`).
    #[error("the filesystem of `{}` does not support file locks ({source})", path.display())]
    Unsupported {
        /// The lock file.
        path: PathBuf,
        /// The OS error (`ENOSYS`, `ENOLCK`, `EOPNOTSUPP`).
        source: std::io::Error,
    },
    /// The lock file could not be opened, locked or written.
    #[error("cannot lock `{}`: {source}", path.display())]
    Io {
        /// The lock file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

/// The held lock; released when dropped or when the process ends.
#[derive(Debug)]
pub struct JobLock {
    _file: File,
}

/// Locks `<dir>/.job.lock`: adopts the descriptor named by `DROVER_JOB_LOCK_FD` when it is
/// that very file (already locked by the parent), else locks by path, refusing at once when
/// another process holds it.
pub fn acquire(dir: &Path) -> Result<JobLock, JobLockError> {
    let path = dir.join(JOB_LOCK_FILE);
    if let Some(file) = inherited(&path) {
        // Our own open file description holds the lock; this only confirms it.
        if flock_exclusive(&file).is_ok() {
            set_cloexec(&file);
            return Ok(JobLock { _file: file });
        }
    }
    let io = |source| JobLockError::Io { path: path.clone(), source };
    let mut file = open_lock_file(&path).map_err(io)?;
    if let Err(err) = flock_exclusive(&file) {
        if locks_unsupported(&err) {
            return Err(JobLockError::Unsupported { path, source: err });
        }
        if err.raw_os_error() != Some(libc::EWOULDBLOCK) {
            return Err(io(err));
        }
        let mut holder = String::new();
        let _ = file.read_to_string(&mut holder);
        let holder = holder.lines().collect::<Vec<_>>().join(", ");
        let holder = if holder.is_empty() { "a process that has not written its details yet".into() } else { holder };
        return Err(JobLockError::Busy { dir: dir.to_path_buf(), holder });
    }
    let text = holder_text(std::process::id());
    file.set_len(0).and_then(|()| file.rewind()).and_then(|()| file.write_all(text.as_bytes())).map_err(io)?;
    Ok(JobLock { _file: file })
}

/// Takes a shared lock on `<dir>/.ranks.lock` (created if missing) for this rank, held until the
/// process ends. Every rank of the job shares it, so none is refused by another; an exclusive
/// holder (the orchestrator probing whether ranks still live, or launching this very job) is
/// waited for, as it holds the lock for a moment only. Still held after
/// [`RANKS_LOCK_PATIENCE`], the run belongs to someone else: [`JobLockError::Busy`].
pub fn acquire_ranks(dir: &Path) -> Result<JobLock, JobLockError> {
    let path = dir.join(RANKS_LOCK_FILE);
    let io = |source| JobLockError::Io { path: path.clone(), source };
    let file = open_lock_file(&path).map_err(io)?;
    let deadline = std::time::Instant::now() + RANKS_LOCK_PATIENCE;
    loop {
        // SAFETY: flock on a descriptor we own; no memory is passed.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_SH | libc::LOCK_NB) } == 0 {
            return Ok(JobLock { _file: file });
        }
        let err = std::io::Error::last_os_error();
        if locks_unsupported(&err) {
            return Err(JobLockError::Unsupported { path, source: err });
        }
        if !matches!(err.raw_os_error(), Some(libc::EWOULDBLOCK | libc::EINTR)) {
            return Err(io(err));
        }
        if std::time::Instant::now() >= deadline {
            let holder = format!("`{RANKS_LOCK_FILE}` held exclusively for {} s", RANKS_LOCK_PATIENCE.as_secs());
            return Err(JobLockError::Busy { dir: dir.to_path_buf(), holder });
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// Opens (creating) a lock file of the run directory for reading and writing, never through a
/// symbolic link and only a regular file (`fsio::open_regular`): a link planted there would
/// have the job truncate and overwrite its target with the holder text.
fn open_lock_file(path: &Path) -> std::io::Result<File> {
    crate::fsio::open_regular(path, OpenOptions::new().read(true).write(true).create(true).truncate(false))
}

/// What a job writes into the lock file it took: `pid N` and `host H` lines. The host too: on a
/// cluster the directory is read from other machines, where this pid means nothing (`drover
/// status`/`analyze` check a pid only on its own host). The orchestrator writes and parses the
/// same lines (`drover::lock::holder_text`, `HolderLines::parse`); the two must agree.
pub fn holder_text(pid: u32) -> String {
    format!("pid {pid}\nhost {}\n", hostname())
}

/// This machine's host name (`gethostname`), `unknown` when it cannot be read.
fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most `buf.len()` bytes into `buf`.
    if unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } != 0 {
        return "unknown".into();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// The descriptor named by `DROVER_JOB_LOCK_FD`, if it is open on `path` itself (same device
/// and inode); anything else (unset, garbage, a reused number) is ignored.
fn inherited(path: &Path) -> Option<File> {
    let fd: i32 = std::env::var(LOCK_FD_ENV).ok()?.trim().parse().ok()?;
    // Children of this job must not see a number that will mean something else to them.
    std::env::remove_var(LOCK_FD_ENV);
    if fd < 3 {
        return None;
    }
    // Not through a link: the file itself, as `acquire` would open it.
    let on_disk = std::fs::symlink_metadata(path).ok()?;
    // SAFETY: fstat writes into the zeroed struct we pass and reads nothing else; a closed or
    // invalid descriptor makes it fail, which we check.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstat(fd, &mut st) } != 0 {
        return None;
    }
    if st.st_dev != on_disk.dev() || st.st_ino != on_disk.ino() {
        return None;
    }
    // SAFETY: the descriptor is open (fstat succeeded), refers to our lock file, and nothing
    // else in this process owns it: it was inherited across exec for exactly this purpose.
    Some(unsafe { File::from_raw_fd(fd) })
}

/// Whether `flock` failed because the filesystem does not do locks at all, rather than because
/// the lock is taken or the file is unusable.
pub fn locks_unsupported(err: &std::io::Error) -> bool {
    matches!(err.raw_os_error(), Some(libc::ENOSYS | libc::ENOLCK | libc::EOPNOTSUPP))
}

fn flock_exclusive(file: &File) -> std::io::Result<()> {
    // SAFETY: flock on a descriptor we own; no memory is passed.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// An inherited descriptor arrives without close-on-exec; set it, so nothing this job starts
/// keeps the run locked after the job itself is gone.
fn set_cloexec(file: &File) {
    // SAFETY: fcntl(F_SETFD) on a descriptor we own; no memory is passed.
    unsafe { libc::fcntl(file.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_job_on_the_same_run_directory_is_refused_naming_the_first() {
        let tmp = tempfile::tempdir().unwrap();
        let first = acquire(tmp.path()).unwrap();
        // flock belongs to the open file description: a second open conflicts like another process.
        let err = acquire(tmp.path()).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("in use by another job") && msg.contains(&format!("pid {}", std::process::id())), "{msg}");
        // Read on other machines of a cluster, the pid comes with its host.
        assert!(msg.contains(&format!("host {}", hostname())) && hostname() != "unknown", "{msg}");
        drop(first);
        assert!(acquire(tmp.path()).is_ok(), "the lock is free once its holder is gone");
    }

    /// Security review F1: a job opened `.job.lock` and `.ranks.lock` through a planted symbolic
    /// link and truncated its target; now the link is an error naming the file.
    #[test]
    fn a_planted_link_at_a_run_lock_is_refused_not_written_through() {
        let tmp = tempfile::tempdir().unwrap();
        let canary = tmp.path().join("canary.txt");
        std::fs::write(&canary, b"precious").unwrap();
        let run = tmp.path().join("run");
        std::fs::create_dir(&run).unwrap();
        for name in [JOB_LOCK_FILE, RANKS_LOCK_FILE] {
            std::os::unix::fs::symlink(&canary, run.join(name)).unwrap();
        }
        let err = acquire(&run).unwrap_err().to_string();
        assert!(err.contains("is a symbolic link; drover does not write through links in a results directory") && err.contains(JOB_LOCK_FILE), "{err}");
        let err = acquire_ranks(&run).unwrap_err().to_string();
        assert!(err.contains("is a symbolic link") && err.contains(RANKS_LOCK_FILE), "{err}");
        assert_eq!(std::fs::read(&canary).unwrap(), b"precious");
    }

    /// Review D1 (multi-rank runs): every rank holds `.ranks.lock` shared, so ranks do not
    /// refuse each other, an exclusive probe sees them, and a rank starting during a probe
    /// waits for it instead of failing.
    #[test]
    fn ranks_share_their_lock_and_wait_out_an_exclusive_probe() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join(RANKS_LOCK_FILE);
        let probe = |op| {
            let f = File::open(&path).unwrap();
            // SAFETY: flock on a descriptor this test owns.
            let rc = unsafe { libc::flock(f.as_raw_fd(), op) };
            (rc == 0).then_some(f)
        };
        let first = acquire_ranks(tmp.path()).unwrap();
        let second = acquire_ranks(tmp.path()).unwrap();
        assert!(probe(libc::LOCK_EX | libc::LOCK_NB).is_none(), "the ranks are seen");
        drop((first, second));
        let held = probe(libc::LOCK_EX | libc::LOCK_NB).expect("free once every rank is gone");
        let release = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(100));
            drop(held);
        });
        let started = std::time::Instant::now();
        let _rank = acquire_ranks(tmp.path()).expect("waits for the probe, then takes it");
        assert!(started.elapsed() >= std::time::Duration::from_millis(90));
        release.join().unwrap();
    }
}
