//! `drover status` and `drover cancel` of a sweep run by the local backend. Status comes from
//! what is on disk: each run's `exit.json`, its job lock's holder, its attempt logs and metrics,
//! and the results directory's lock, which the `drover run` working through the sweep holds;
//! nothing is locked or written, so it is safe beside a running `drover run`. Cancel asks that
//! `drover run` to stop as Ctrl-C in its terminal would (SIGTERM: no new runs, running jobs
//! stop cleanly and are kept as cancelled).

use std::path::Path;
use std::time::{Duration, Instant};

use crate::error::RunError;

use crate::backend::slurm::{attempt_logs, SweepDir};
use crate::layout::{self, ExitRecord, JobSpec, RecordError, EXIT_JSON, SPEC_JSON};
use crate::status::{classify_local, Progress, RunState, RunStatus, StatusReport};

/// The status of every run of the local sweep in `dir`.
pub(crate) fn status(dir: &SweepDir) -> StatusReport {
    let driver = crate::lock::live_holder(&dir.root.join(crate::lock::LOCK_FILE)).map(|h| h.description);
    let runs = dir
        .runs
        .iter()
        .map(|run_id| {
            let run_dir = dir.run_dir(run_id);
            let exit_path = run_dir.join(EXIT_JSON);
            // A marker that is there but cannot be read (EACCES, EIO, NFS's ESTALE) says nothing
            // of the run: reported as such, not taken for a missing one (unfinished).
            let (exit, unreadable): (Option<ExitRecord>, _) = match layout::read_record_typed(&exit_path) {
                Ok(exit) => (exit, None),
                Err(RecordError::Io(e)) => (None, Some(format!("cannot read `{}`: {e}", exit_path.display()))),
                Err(_) => (None, None),
            };
            let spec: Option<JobSpec> = layout::read_record(&run_dir.join(SPEC_JSON)).ok().flatten();
            // Local jobs run on this host; a holder elsewhere (the directory shared with a
            // cluster) cannot be checked from here. Ranks that outlived their `mpirun` count.
            let job_running = crate::backend::job_lock::running_here(&run_dir);
            let logs = attempt_logs(&run_dir);
            let attempts = logs
                .iter()
                .filter_map(|p| crate::backend::prepare::attempt_number(p.file_name()?.to_str()?))
                .max()
                .unwrap_or(0);
            let (state, reason) = match unreadable {
                Some(why) if !job_running => (RunState::Unknown, Some(why)),
                _ => classify_local(exit.as_ref(), job_running, attempts > 0, driver.is_some()),
            };
            let run_key = |k: &str| spec.as_ref().and_then(|s| s.run.get(k)).and_then(serde_json::Value::as_u64);
            let (trained, seed) = (spec.as_ref().and_then(|s| crate::status::steps_to_train(&s.run)), run_key("seed"));
            RunStatus {
                run_id: run_id.to_string(),
                label: spec.map(|s| s.label).unwrap_or_default(),
                seed,
                state,
                reason,
                slurm_job: None,
                slurm_state: None,
                slurm_reason: None,
                submissions: attempts,
                time_limit_requeues: 0,
                preemptions: 0,
                spent_budget: None,
                logs,
                progress: Progress::read(&run_dir, trained),
            }
        })
        .collect();
    StatusReport::new(dir.name.clone(), dir.root.clone(), "local", driver, runs)
}

/// What `cancel` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LocalCancel {
    /// No `drover run` is running the sweep.
    NothingRunning,
    /// The `drover run` (its description) was asked to stop and has exited.
    Stopped(String),
    /// It was asked to stop and is still stopping its jobs after `waited`.
    Stopping(String),
}

/// Asks the `drover run` working through the local sweep in `results` to stop (SIGTERM), and
/// waits up to `wait` for it to exit. Refused, naming the host, when it runs on another host.
pub fn cancel(results: &Path, wait: Duration) -> Result<LocalCancel, RunError> {
    let dir = SweepDir::open(results)?;
    let lock = dir.root.join(crate::lock::LOCK_FILE);
    let Some(holder) = crate::lock::live_holder(&lock) else { return Ok(LocalCancel::NothingRunning) };
    if !holder.this_host {
        return Err(RunError::CancelElsewhere { dir: dir.root, holder: holder.description });
    }
    let pid = libc::pid_t::try_from(holder.pid).map_err(|_| RunError::CancelElsewhere { dir: dir.root.clone(), holder: holder.description.clone() })?;
    // SAFETY: kill(2) on a pid read from the lock file, just checked to be a live drover
    // process; no memory is involved.
    if unsafe { libc::kill(pid, libc::SIGTERM) } != 0 {
        let source = std::io::Error::last_os_error();
        return Err(RunError::Io { action: "signal the `drover run` holding", path: lock, source });
    }
    let until = Instant::now() + wait;
    while Instant::now() < until {
        if crate::lock::live_holder(&lock).is_none_or(|h| h.pid != holder.pid) {
            return Ok(LocalCancel::Stopped(holder.description));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(LocalCancel::Stopping(holder.description))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::{SweepManifest, FORMAT_VERSION, SWEEP_JSON};

    /// Review (crash consistency, item 3): an `exit.json` that is there but cannot be read was
    /// taken for none, so a completed run read as unfinished ("the next `drover run` redoes
    /// it"); it is now `unknown`, naming the file and the error.
    #[test]
    fn an_unreadable_marker_is_reported_not_taken_for_none() {
        let tmp = tempfile::tempdir().unwrap();
        let run_id = "0123456789abcdef";
        let manifest = SweepManifest {
            format_version: FORMAT_VERSION,
            name: "s".into(),
            source: "s.toml".into(),
            runs: vec![run_id.into()],
            created_at: "0".into(),
            overrides: Vec::new(),
        };
        std::fs::write(tmp.path().join(SWEEP_JSON), serde_json::to_vec(&manifest).unwrap()).unwrap();
        let run_dir = tmp.path().join("runs").join(run_id);
        std::fs::create_dir_all(&run_dir).unwrap();
        std::fs::write(run_dir.join("attempt-1.stderr.log"), "").unwrap();
        // A directory in its place: reading fails with EISDIR, as with EACCES or EIO.
        std::fs::create_dir(run_dir.join(EXIT_JSON)).unwrap();
        let report = status(&SweepDir::open(tmp.path()).unwrap());
        let run = &report.runs[0];
        assert_eq!(run.state, RunState::Unknown, "{run:?}");
        let reason = run.reason.clone().unwrap_or_default();
        assert!(reason.starts_with("cannot read `") && reason.contains("exit.json`: "), "{reason}");
        // Damaged content is still an unfinished run, as before.
        std::fs::remove_dir(run_dir.join(EXIT_JSON)).unwrap();
        std::fs::write(run_dir.join(EXIT_JSON), "{").unwrap();
        assert_eq!(status(&SweepDir::open(tmp.path()).unwrap()).runs[0].state, RunState::Unfinished);
    }
}
