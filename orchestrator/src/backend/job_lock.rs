//! The orchestrator's side of the per-run lock `<run_dir>/.job.lock` (the job's side is `drover_job::lock`).
//!
//! A job holds an exclusive `flock` on that file for its whole life; the kernel drops it on any
//! death. The orchestrator writes into a run directory (archives it, writes a marker for a dead
//! job, launches it again) only while it holds the same lock itself, so it can never touch a run
//! that a job, an orphan of a killed `drover run` included, is still writing. At launch the
//! locked descriptor is handed to the child, so the run is never unlocked while a job lives.
//!
//! The ranks of a multi-rank job each hold a shared lock on `<run_dir>/.ranks.lock`
//! (`drover_job::lock::acquire_ranks`): `mpirun`, which holds `.job.lock`, can die before its
//! ranks, which OpenMPI puts in process groups of their own. A held `.ranks.lock` makes the run
//! as busy as a held `.job.lock`: [`try_lock`] takes both (the second exclusively, so no rank
//! starts while the orchestrator writes there; a starting rank waits for it), and
//! [`running_here`] probes it.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::path::Path;

/// Name of the lock file inside a run directory (the same as `drover_job::lock::JOB_LOCK_FILE`).
pub const JOB_LOCK_FILE: &str = ".job.lock";

/// Name of the file the ranks of a multi-rank job share a lock on (`drover_job::lock::RANKS_LOCK_FILE`).
pub const RANKS_LOCK_FILE: &str = ".ranks.lock";

/// The environment variable naming the inherited locked descriptor (`drover_job::lock::LOCK_FD_ENV`).
pub const LOCK_FD_ENV: &str = "DROVER_JOB_LOCK_FD";

/// A held run lock; released when dropped (unless a child inherited the descriptor).
#[derive(Debug)]
pub struct JobLock {
    file: File,
    /// `.ranks.lock`, held exclusively, when the run directory has one.
    _ranks: Option<File>,
}

impl JobLock {
    /// The locked descriptor, to hand to a child (`pre_exec` clears its close-on-exec flag).
    pub fn raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }

    /// Records who holds the lock now (shown to anyone refused it, read by
    /// `lock::live_holder`); best effort. `text` comes from `lock::holder_text`.
    pub fn describe(&mut self, text: &str) {
        let written = self.file.set_len(0).and_then(|()| self.file.rewind()).and_then(|()| self.file.write_all(text.as_bytes()));
        if let Err(e) = written {
            tracing::debug!("cannot describe the job lock holder: {e}");
        }
    }
}

/// Tries to lock the run directory `dir` (which must exist) without waiting: `Ok(None)` when
/// another process holds it (a job is still running there, or ranks of one whose launcher died).
pub fn try_lock(dir: &Path) -> std::io::Result<Option<JobLock>> {
    let path = dir.join(JOB_LOCK_FILE);
    let file = crate::lock::open_lock_file(&path, true)?;
    if !flock_free(&file, &path)? {
        return Ok(None);
    }
    // Second: a rank only takes its lock while its launcher holds `.job.lock`, or waits.
    // Any answer but "free" or "held" leaves the run alone: ranks may be writing there.
    let ranks_path = dir.join(RANKS_LOCK_FILE);
    let ranks = match open_ranks_lock(dir).map_err(|e| ranks_unknown(&ranks_path, &e))? {
        Some(ranks) if !flock_free(&ranks, &ranks_path).map_err(|e| ranks_unknown(&ranks_path, &e))? => return Ok(None),
        ranks => ranks,
    };
    Ok(Some(JobLock { file, _ranks: ranks }))
}

/// [`try_lock`], trying again for up to `patience` while the run is busy: for a job that has
/// just been reaped, whose ranks (killed with it) may not have released their lock yet.
pub fn lock_within(dir: &Path, patience: std::time::Duration) -> std::io::Result<Option<JobLock>> {
    let deadline = std::time::Instant::now() + patience;
    loop {
        match try_lock(dir)? {
            None if std::time::Instant::now() < deadline => std::thread::sleep(std::time::Duration::from_millis(20)),
            held => return Ok(held),
        }
    }
}

/// Whether ranks of a multi-rank job still hold `dir`'s `.ranks.lock`: `Ok(false)` when there
/// is no such file or nothing holds it, `Err` (why, naming the file) when the probe cannot tell,
/// which callers report as unknown, never as "no ranks" (an `EBADF` on NFS, a file that is not
/// a regular file). Probes with an exclusive lock released at once, on a descriptor of its
/// own; a rank starting at that moment waits for it (`drover_job::lock::acquire_ranks`). A
/// filesystem without locks: no ranks known to be running (no rank could hold one either).
pub fn ranks_running(dir: &Path) -> Result<bool, String> {
    let path = dir.join(RANKS_LOCK_FILE);
    let Some(file) = open_ranks_lock(dir).map_err(|e| ranks_unknown(&path, &e).to_string())? else { return Ok(false) };
    // Dropped at once: the probe holds the lock for no longer than this call.
    flock_free(&file, &path).map(|free| !free).map_err(|e| ranks_unknown(&path, &e).to_string())
}

/// The error of a `.ranks.lock` at `path` whose state `err` kept from being known.
fn ranks_unknown(path: &Path, err: &std::io::Error) -> std::io::Error {
    std::io::Error::new(
        err.kind(),
        format!("cannot tell whether MPI ranks still hold `{}` ({err}): unknown, so taken as neither running nor ended", path.display()),
    )
}

/// Whether a job runs in the run directory `dir` as far as this host can tell: the holder of
/// its `.job.lock` is a live process here (`lock::live_holder`), or ranks hold its `.ranks.lock`;
/// `Err` when the ranks' lock cannot be probed ([`ranks_running`]), so the run's state is
/// unknown. Read-only but for that probe: what `drover status` and `drover analyze` ask.
pub fn running_here(dir: &Path) -> Result<bool, String> {
    if crate::lock::live_holder(&dir.join(JOB_LOCK_FILE)).is_some_and(|h| h.this_host) {
        return Ok(true);
    }
    ranks_running(dir)
}

/// Whether `name`, in a run directory, is one of its lock files (they stay where jobs look for them).
pub fn is_lock_file(name: &std::ffi::OsStr) -> bool {
    name == JOB_LOCK_FILE || name == RANKS_LOCK_FILE
}

/// `.ranks.lock`, opened for a lock of our own, if the run directory has one (only multi-rank
/// jobs create it; the orchestrator never does). Read-write, as the ranks open it: over NFS,
/// `flock` is emulated with a byte-range lock, and an exclusive one on a read-only descriptor
/// fails with `EBADF` (flock(2)). A reader who may not write it (a colleague's `drover status`,
/// a read-only mount) falls back to read-only, which still answers on a local filesystem.
fn open_ranks_lock(dir: &Path) -> std::io::Result<Option<File>> {
    let path = dir.join(RANKS_LOCK_FILE);
    let opened = match crate::lock::open_lock_file(&path, false) {
        Err(e) if matches!(e.raw_os_error(), Some(libc::EACCES | libc::EPERM | libc::EROFS)) => {
            crate::lock::open_regular(&path, OpenOptions::new().read(true))
        }
        other => other,
    };
    match opened {
        Ok(file) => Ok(Some(file)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Takes an exclusive lock on `file` without waiting: `false` when another holds it. A
/// filesystem without locks counts as free: no job can hold one either (the results lock has
/// warned that one `drover run` must be all).
fn flock_free(file: &File, path: &Path) -> std::io::Result<bool> {
    // SAFETY: flock on a descriptor the caller owns; no memory is passed.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
        return Ok(true);
    }
    let err = std::io::Error::last_os_error();
    if crate::lock::locks_unsupported(&err) {
        tracing::debug!("`{}`: no file locks on this filesystem ({err})", path.display());
        return Ok(true);
    }
    if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(false)
    } else {
        Err(err)
    }
}

/// What the holder of `dir`'s lock wrote about itself ("pid 123"), for messages.
pub fn holder(dir: &Path) -> String {
    let mut text = String::new();
    if let Ok(mut f) = crate::lock::open_regular(&dir.join(JOB_LOCK_FILE), OpenOptions::new().read(true)) {
        let _ = f.read_to_string(&mut text);
    }
    let text = text.lines().collect::<Vec<_>>().join(", ");
    let text = if text.is_empty() { "a process that has not written its details".into() } else { text };
    match ranks_running(dir) {
        // The launcher named above may be gone; its ranks are not.
        Ok(true) => format!("{text}; MPI ranks still hold `{RANKS_LOCK_FILE}`"),
        Ok(false) => text,
        Err(why) => format!("{text}; {why}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_run_lock_is_seen_as_busy_with_its_holder_and_freed_on_drop() {
        let tmp = tempfile::tempdir().unwrap();
        let mut first = try_lock(tmp.path()).unwrap().expect("free at first");
        first.describe("pid 42\n");
        assert!(try_lock(tmp.path()).unwrap().is_none(), "held by `first`");
        assert_eq!(holder(tmp.path()), "pid 42");
        drop(first);
        assert!(try_lock(tmp.path()).unwrap().is_some(), "released on drop");
    }

    /// Security review F3: an error probing `.ranks.lock` other than "held" is "unknown": a
    /// writer refuses the run naming that file and saying so, rather than the `.job.lock` path
    /// and a bare OS error.
    #[test]
    fn a_ranks_lock_that_cannot_be_probed_is_refused_as_unknown() {
        let tmp = tempfile::tempdir().unwrap();
        crate::backend::local_status::tests::mkfifo(&tmp.path().join(RANKS_LOCK_FILE));
        let err = try_lock(tmp.path()).map(|l| l.is_some()).expect_err("unknown is not free").to_string();
        assert!(err.contains(&tmp.path().join(RANKS_LOCK_FILE).display().to_string()) && err.contains("cannot tell whether MPI ranks"), "{err}");
        assert!(holder(tmp.path()).contains("cannot tell whether MPI ranks"), "{}", holder(tmp.path()));
    }

    /// Security review F1: `.job.lock` (and `.ranks.lock`) were opened through a planted
    /// symbolic link and truncated; now the link is an error naming the file.
    #[test]
    fn a_planted_link_at_a_run_lock_is_refused_not_written_through() {
        let tmp = tempfile::tempdir().unwrap();
        let canary = tmp.path().join("canary.txt");
        std::fs::write(&canary, b"precious").unwrap();
        let run = tmp.path().join("run");
        std::fs::create_dir(&run).unwrap();
        std::os::unix::fs::symlink(&canary, run.join(JOB_LOCK_FILE)).unwrap();
        let err = try_lock(&run).map(|l| l.is_some()).expect_err("a link is refused").to_string();
        assert!(err.contains("is a symbolic link; drover does not write through links in a results directory"), "{err}");
        assert!(err.contains(JOB_LOCK_FILE), "{err}");
        std::fs::remove_file(run.join(JOB_LOCK_FILE)).unwrap();
        std::os::unix::fs::symlink(&canary, run.join(RANKS_LOCK_FILE)).unwrap();
        let err = try_lock(&run).map(|l| l.is_some()).expect_err("a link is refused").to_string();
        assert!(err.contains("is a symbolic link") && err.contains(RANKS_LOCK_FILE), "{err}");
        assert_eq!(std::fs::read(&canary).unwrap(), b"precious");
    }

    /// Review D1 (multi-rank runs): ranks that outlive their launcher hold `.ranks.lock`
    /// shared; the run is busy to every check until the last of them is gone, and the
    /// orchestrator's own lock keeps new ranks out while it is held.
    #[test]
    fn ranks_holding_their_shared_lock_keep_the_run_busy() {
        let tmp = tempfile::tempdir().unwrap();
        assert!(!ranks_running(tmp.path()).unwrap() && !running_here(tmp.path()).unwrap(), "no ranks file: free");
        let path = tmp.path().join(RANKS_LOCK_FILE);
        let rank = |op| {
            let f = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path).unwrap();
            // SAFETY: flock on a descriptor this test owns.
            let rc = unsafe { libc::flock(f.as_raw_fd(), op) };
            (rc == 0).then_some(f)
        };
        let ranks = [rank(libc::LOCK_SH | libc::LOCK_NB).unwrap(), rank(libc::LOCK_SH | libc::LOCK_NB).unwrap()];
        assert!(ranks_running(tmp.path()).unwrap() && running_here(tmp.path()).unwrap());
        assert!(try_lock(tmp.path()).unwrap().is_none(), "busy while a rank lives");
        assert!(holder(tmp.path()).contains(RANKS_LOCK_FILE), "{}", holder(tmp.path()));
        let [first, second] = ranks;
        drop(first);
        assert!(ranks_running(tmp.path()).unwrap(), "one rank is enough");
        drop(second);
        assert!(!ranks_running(tmp.path()).unwrap());
        let held = try_lock(tmp.path()).unwrap().expect("free once the ranks are gone");
        assert!(rank(libc::LOCK_SH | libc::LOCK_NB).is_none(), "no rank starts while drover holds the run");
        drop(held);
        assert!(rank(libc::LOCK_SH | libc::LOCK_NB).is_some());
    }
}
