//! The orchestrator's side of the per-run lock `<run_dir>/.job.lock` (the job's side is `drover_job::lock`).
//!
//! A job holds an exclusive `flock` on that file for its whole life; the kernel drops it on any
//! death. The orchestrator writes into a run directory (archives it, writes a marker for a dead
//! job, launches it again) only while it holds the same lock itself, so it can never touch a run
//! that a job, an orphan of a killed `drover run` included, is still writing. At launch the
//! locked descriptor is handed to the child, so the run is never unlocked while a job lives.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::path::Path;

/// Name of the lock file inside a run directory (the same as `drover_job::lock::JOB_LOCK_FILE`).
pub const JOB_LOCK_FILE: &str = ".job.lock";

/// The environment variable naming the inherited locked descriptor (`drover_job::lock::LOCK_FD_ENV`).
pub const LOCK_FD_ENV: &str = "DROVER_JOB_LOCK_FD";

/// A held run lock; released when dropped (unless a child inherited the descriptor).
#[derive(Debug)]
pub struct JobLock {
    file: File,
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
/// another process holds it (a job is still running there).
pub fn try_lock(dir: &Path) -> std::io::Result<Option<JobLock>> {
    let path = dir.join(JOB_LOCK_FILE);
    let file = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path)?;
    // SAFETY: flock on a descriptor this function owns; no memory is passed.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let err = std::io::Error::last_os_error();
        if crate::lock::locks_unsupported(&err) {
            // No locks on this filesystem: no job can hold one either, so the run is free as far
            // as anyone can tell (the results lock has warned that one `drover run` must be all).
            tracing::debug!("`{}`: no file locks on this filesystem ({err})", path.display());
            return Ok(Some(JobLock { file }));
        }
        return if err.raw_os_error() == Some(libc::EWOULDBLOCK) { Ok(None) } else { Err(err) };
    }
    Ok(Some(JobLock { file }))
}

/// What the holder of `dir`'s lock wrote about itself ("pid 123"), for messages.
pub fn holder(dir: &Path) -> String {
    let mut text = String::new();
    if let Ok(mut f) = File::open(dir.join(JOB_LOCK_FILE)) {
        let _ = f.read_to_string(&mut text);
    }
    let text = text.lines().collect::<Vec<_>>().join(", ");
    if text.is_empty() {
        "a process that has not written its details".into()
    } else {
        text
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
}
