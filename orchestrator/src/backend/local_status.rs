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
use crate::backend::OnDisk;
use crate::layout::{self, ExitRecord, JobSpec, SPEC_JSON};
use crate::status::{classify_local, Progress, RunState, RunStatus, StatusReport};

/// The status of every run of the local sweep in `dir`.
pub(crate) fn status(dir: &SweepDir) -> StatusReport {
    let driver = crate::lock::live_holder(&dir.root.join(crate::lock::LOCK_FILE)).map(|h| h.description);
    let runs = dir
        .runs
        .iter()
        .map(|run_id| {
            let run_dir = dir.run_dir(run_id);
            let (exit, judged) = judge(&run_dir, run_id.as_str());
            let spec = spec_or_summary(&run_dir);
            // Local jobs run on this host; a holder elsewhere (the directory shared with a
            // cluster) cannot be checked from here. Ranks that outlived their `mpirun` count.
            // Whether ranks still run cannot always be told (a probe error over NFS): then the
            // run is `unknown`, not taken for ended, unless its marker settles it.
            let probed = crate::backend::job_lock::running_here(&run_dir);
            let job_running = probed.as_ref().is_ok_and(|running| *running);
            let logs = attempt_logs(&run_dir);
            let attempts = logs
                .iter()
                .filter_map(|p| crate::backend::prepare::attempt_number(p.file_name()?.to_str()?))
                .max()
                .unwrap_or(0);
            let (state, reason) = match judged {
                Some(Judged { state, reason, always }) if always || !job_running => (state, reason),
                _ => classify_local(exit.as_ref(), job_running, attempts > 0, driver.is_some()),
            };
            let (state, reason) = match probed {
                Err(why) if state != RunState::Done => (RunState::Unknown, Some(why)),
                _ => (state, reason),
            };
            let reason = match state {
                RunState::Unfinished if exit.is_none() => disk_full_reason(&logs).or(reason),
                _ => reason,
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

/// A state and reason of its own for a run whose files `drover run` would not take as they are.
struct Judged {
    state: RunState,
    reason: Option<String>,
    /// Stands even while a job holds the run (a completed run's note); else a running job wins.
    always: bool,
}

/// The run's marker, and what `drover run` makes of its files where that differs from what the
/// marker alone says ([`crate::backend::on_disk`], the judgement of `drover run` and
/// `--dry-run`): a file there but unreadable (EACCES, EIO, NFS's ESTALE) is `unknown`, naming it;
/// a damaged marker, or a completion over damaged files, is `unfinished` and will be redone; a
/// completed run whose `spec.json` is damaged is `done`, with a note; a run whose job could not
/// resume from its checkpoint is `failed`, with what the next run does.
fn judge(run_dir: &Path, run_id: &str) -> (Option<ExitRecord>, Option<Judged>) {
    let judged = |state, reason, always| Some(Judged { state, reason: Some(reason), always });
    match crate::backend::on_disk(run_dir, run_id) {
        Err(RunError::UnreadableRun { path, error }) => (None, judged(RunState::Unknown, format!("cannot read `{}`: {error}", path.display()), false)),
        Err(e) => (None, judged(RunState::Unknown, e.to_string(), false)),
        Ok(OnDisk::NoMarker) => (None, None),
        Ok(OnDisk::Damaged(why)) => (None, judged(RunState::Unfinished, format!("damaged: {why}; the next `drover run` redoes it"), false)),
        Ok(OnDisk::Completed { spec: Ok(_) }) => (None, Some(Judged { state: RunState::Done, reason: None, always: true })),
        Ok(OnDisk::Completed { spec: Err(problem) }) => {
            (None, judged(RunState::Done, format!("{problem}; the next `drover run` writes it again from the sweep"), true))
        }
        Ok(OnDisk::Ended(exit)) if exit.checkpoint_of_another_release() => {
            let reason = format!(
                "{}; the next `drover run` resumes it from that checkpoint again, which needs a drover-job that reads its format",
                exit.reason.as_deref().unwrap_or("its checkpoint's format was not read")
            );
            (Some(exit), judged(RunState::Failed, reason, false))
        }
        Ok(OnDisk::Ended(exit)) if exit.checkpoint_refused() => {
            let reason = format!("{}; the next `drover run` starts it over", exit.reason.as_deref().unwrap_or("its checkpoint could not be resumed"));
            (Some(exit), judged(RunState::Failed, reason, false))
        }
        Ok(OnDisk::Ended(exit)) => (Some(exit), None),
    }
}

/// The spec of the run in `run_dir` for its label and seed: its `spec.json`, or when that is
/// damaged, those of its `summary.json`.
fn spec_or_summary(run_dir: &Path) -> Option<JobSpec> {
    if let Ok(Some(spec)) = layout::read_record::<JobSpec>(&run_dir.join(SPEC_JSON)) {
        return Some(spec);
    }
    let summary: serde_json::Value = layout::read_record(&run_dir.join(layout::SUMMARY_JSON)).ok().flatten()?;
    let mut spec = serde_json::json!({"format_version": 1, "config_id": "", "sweep": "", "axes": {}, "params": {}, "plugin_path": ""});
    spec["run_id"] = summary["run_id"].clone();
    spec["label"] = summary["label"].clone();
    spec["run"] = serde_json::json!({"seed": summary["seed"]});
    serde_json::from_value(spec).ok()
}

/// Why a run that started has no `exit.json` and no job, when its last attempt's log says the
/// results disk was full (the job's own marker and the backend's could not be written).
fn disk_full_reason(logs: &[std::path::PathBuf]) -> Option<String> {
    let log = logs.iter().rev().find(|l| l.to_string_lossy().ends_with(".stderr.log"))?;
    let text = std::fs::read_to_string(log).ok()?;
    layout::says_disk_full(&text).then(|| {
        format!(
            "its job failed and no exit.json could be written: the results disk was full (see `{}`); free space, and the next `drover run` redoes it",
            log.display()
        )
    })
}

/// What `cancel` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LocalCancel {
    /// No `drover run` is running the sweep.
    NothingRunning,
    /// The `drover run` (its description) was asked to stop and has exited.
    Stopped(String),
    /// It was asked to stop and is still stopping its jobs after the wait.
    Stopping(String),
}

/// Asks the `drover run` working through the local sweep in `results` to stop (SIGTERM), and
/// waits for it to exit as long as its stop can take, its grace period (its lock's
/// `grace_seconds`, else the default), and `wait` more. Refused, naming the host, when it runs
/// on another host.
pub fn cancel(results: &Path, wait: Duration) -> Result<LocalCancel, RunError> {
    let dir = SweepDir::open(results)?;
    let lock = dir.root.join(crate::lock::LOCK_FILE);
    let Some(holder) = crate::lock::holder_to_signal(&lock) else { return Ok(LocalCancel::NothingRunning) };
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
    // The holder's own grace when its lock says it (older locks: the default).
    let until = Instant::now() + holder.grace.unwrap_or(crate::backend::local::DEFAULT_GRACE) + wait;
    while Instant::now() < until {
        if crate::lock::live_holder(&lock).is_none_or(|h| h.pid != holder.pid) {
            return Ok(LocalCancel::Stopped(holder.description));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(LocalCancel::Stopping(holder.description))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::layout::{SweepManifest, EXIT_JSON, FORMAT_VERSION, SWEEP_JSON};

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
        // A link to /proc/self/mem in its place: reading fails with EIO, as a failing disk would.
        std::os::unix::fs::symlink("/proc/self/mem", run_dir.join(EXIT_JSON)).unwrap();
        let report = status(&SweepDir::open(tmp.path()).unwrap());
        let run = &report.runs[0];
        assert_eq!(run.state, RunState::Unknown, "{run:?}");
        let reason = run.reason.clone().unwrap_or_default();
        assert!(reason.starts_with("cannot read `") && reason.contains("exit.json`: "), "{reason}");
        // Damaged content is still an unfinished run, as before.
        std::fs::remove_file(run_dir.join(EXIT_JSON)).unwrap();
        std::fs::write(run_dir.join(EXIT_JSON), "{").unwrap();
        assert_eq!(status(&SweepDir::open(tmp.path()).unwrap()).runs[0].state, RunState::Unfinished);
    }
    /// A local sweep in `root` listing `runs`.
    fn sweep_of(root: &Path, runs: &[&str]) {
        let manifest = SweepManifest {
            format_version: FORMAT_VERSION,
            name: "s".into(),
            source: "s.toml".into(),
            runs: runs.iter().map(|r| r.to_string()).collect(),
            created_at: "0".into(),
            overrides: Vec::new(),
        };
        std::fs::write(root.join(SWEEP_JSON), serde_json::to_vec(&manifest).unwrap()).unwrap();
    }

    /// A run directory as a completed job leaves it (a minimal but whole Parquet frame).
    fn completed(dir: &Path, run_id: &str) {
        std::fs::create_dir_all(dir).unwrap();
        let spec = serde_json::json!({"format_version": 1, "run_id": run_id, "config_id": "c", "sweep": "s", "label": "lr=1",
            "axes": {}, "run": {"seed": 7}, "params": {}, "plugin_path": "/x.so"});
        std::fs::write(dir.join(SPEC_JSON), spec.to_string()).unwrap();
        std::fs::write(dir.join("attempt-1.stderr.log"), "").unwrap();
        std::fs::write(dir.join(layout::SUMMARY_JSON), format!(r#"{{"format_version":1,"run_id":"{run_id}","label":"lr=1","seed":7}}"#)).unwrap();
        let mut parquet = b"PAR1".to_vec();
        parquet.extend_from_slice(&[0u8; 16]);
        parquet.extend_from_slice(&16u32.to_le_bytes());
        parquet.extend_from_slice(b"PAR1");
        std::fs::write(dir.join(layout::METRICS_PARQUET), parquet).unwrap();
        std::fs::write(dir.join(EXIT_JSON), format!(r#"{{"format_version":1,"run_id":"{run_id}","status":"completed"}}"#)).unwrap();
    }

    /// Review (failure injection, D6): status showed `done` for a run whose `summary.json`,
    /// `metrics.parquet` or `spec.json` was damaged while `drover run` redid it, and called a
    /// garbage `exit.json` none ("its `drover run` was killed?"). It now judges as `drover run`
    /// does and names the file; a run whose disk filled says so.
    #[test]
    fn status_judges_damaged_runs_as_drover_run_does() {
        let tmp = tempfile::tempdir().unwrap();
        let ids = ["000000000000000a", "000000000000000b", "000000000000000c", "000000000000000d", "000000000000000e", "000000000000000f", "0000000000000010", "0000000000000011"];
        sweep_of(tmp.path(), &ids);
        let dir = |i: usize| tmp.path().join("runs").join(ids[i]);
        for (i, id) in ids.iter().enumerate() {
            completed(&dir(i), id);
        }
        std::fs::write(dir(1).join(layout::SUMMARY_JSON), "garbage").unwrap();
        std::fs::write(dir(2).join(layout::METRICS_PARQUET), "PAR1 half").unwrap();
        std::fs::write(dir(3).join(EXIT_JSON), "garbage").unwrap();
        std::fs::write(dir(4).join(SPEC_JSON), "x").unwrap();
        let refused = "cannot resume from checkpoint `c`: buffer `params` has length 10, expected 9155";
        let failed = serde_json::json!({"format_version": 1, "run_id": ids[5], "status": "failed", "reason": refused, "cause": "checkpoint"});
        std::fs::write(dir(5).join(EXIT_JSON), failed.to_string()).unwrap();
        std::fs::remove_file(dir(6).join(EXIT_JSON)).unwrap();
        std::fs::write(dir(6).join("attempt-1.stderr.log"), "drover-job: failed to write `x`: No space left on device (os error 28)\n").unwrap();
        // Code review: a later format's refusal is kept for a release that reads it, not started over.
        let later = "cannot resume from checkpoint `c`: unknown format_version 9 (this drover-job reads 1, 2 and 3): another release ...";
        let kept = serde_json::json!({"format_version": 1, "run_id": ids[7], "status": "failed", "reason": later, "cause": "checkpoint_format"});
        std::fs::write(dir(7).join(EXIT_JSON), kept.to_string()).unwrap();

        let report = status(&SweepDir::open(tmp.path()).unwrap());
        let run = |i: usize| (report.runs[i].state, report.runs[i].reason.clone().unwrap_or_default());
        assert_eq!(run(0), (RunState::Done, String::new()));
        for (i, file) in [(1, layout::SUMMARY_JSON), (2, layout::METRICS_PARQUET)] {
            let (state, reason) = run(i);
            assert_eq!(state, RunState::Unfinished, "{file}");
            let named = format!("damaged: marked completed but not trusted: bad `{}`: ", dir(i).join(file).display());
            assert!(reason.starts_with(&named) && reason.ends_with("; the next `drover run` redoes it"), "{reason}");
        }
        let (state, reason) = run(3);
        assert_eq!(state, RunState::Unfinished);
        assert!(reason.starts_with(&format!("damaged: unreadable `{}`: ", dir(3).join(EXIT_JSON).display())) && !reason.contains("killed"), "{reason}");
        let (state, reason) = run(4);
        assert_eq!(state, RunState::Done);
        assert!(reason.starts_with(&format!("unreadable `{}`: ", dir(4).join(SPEC_JSON).display())) && reason.ends_with("writes it again from the sweep"), "{reason}");
        assert_eq!((report.runs[4].label.as_str(), report.runs[4].seed), ("lr=1", Some(7)), "from summary.json");
        assert_eq!(run(5), (RunState::Failed, format!("{refused}; the next `drover run` starts it over")));
        let (state, reason) = run(6);
        assert_eq!(state, RunState::Unfinished);
        assert!(reason.contains("the results disk was full") && reason.contains("attempt-1.stderr.log"), "{reason}");
        assert_eq!(
            run(7),
            (RunState::Failed, format!("{later}; the next `drover run` resumes it from that checkpoint again, which needs a drover-job that reads its format"))
        );
    }

    /// A FIFO at `path` (a file whose lock no `flock` probe can answer).
    pub(crate) fn mkfifo(path: &Path) {
        let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: mkfifo reads the NUL-terminated path only.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    }

    /// A local sweep of one run in `root` that has started (its first attempt's log) and has
    /// no marker: its directory.
    fn one_started_run(root: &Path) -> std::path::PathBuf {
        let run_id = "0123456789abcdef";
        sweep_of(root, &[run_id]);
        let run_dir = root.join("runs").join(run_id);
        std::fs::create_dir_all(&run_dir).unwrap();
        std::fs::write(run_dir.join("attempt-1.stderr.log"), "").unwrap();
        run_dir
    }

    /// Security review F3: a `.ranks.lock` whose probe failed for any reason but "held" (EBADF
    /// on NFS, where the orchestrator's read-only descriptor cannot take the exclusive lock)
    /// read as "no ranks running", so a run whose ranks were alive showed as unfinished. It is
    /// `unknown` now, saying why.
    #[test]
    fn a_ranks_lock_that_cannot_be_probed_makes_the_run_unknown_not_ended() {
        let tmp = tempfile::tempdir().unwrap();
        let run_dir = one_started_run(tmp.path());
        mkfifo(&run_dir.join(crate::backend::job_lock::RANKS_LOCK_FILE));
        let report = status(&SweepDir::open(tmp.path()).unwrap());
        let run = &report.runs[0];
        assert_eq!(run.state, RunState::Unknown, "{run:?}");
        let reason = run.reason.clone().unwrap_or_default();
        assert!(reason.contains(".ranks.lock") && reason.contains("unknown"), "{reason}");
    }

    /// Security review F2: `drover cancel` SIGTERMed whatever process had the pid of a stale
    /// `.drover.lock` if its command line mentioned drover, and `status` called the sweep
    /// running; a pid that does not hold the lock is neither signalled nor reported now.
    #[test]
    fn cancel_and_status_leave_a_live_process_named_by_a_stale_lock_alone() {
        let tmp = tempfile::tempdir().unwrap();
        let run_dir = one_started_run(tmp.path());
        let mut other = crate::lock::tests::unrelated_drover_process();
        let text = crate::lock::holder_text(other.id(), &["command drover run s.toml".into()]);
        std::fs::write(tmp.path().join(crate::lock::LOCK_FILE), &text).unwrap();
        std::fs::write(run_dir.join(crate::backend::job_lock::JOB_LOCK_FILE), &text).unwrap();
        let report = status(&SweepDir::open(tmp.path()).unwrap());
        let cancelled = cancel(tmp.path(), Duration::from_millis(300));
        let alive = other.try_wait().unwrap().is_none();
        let _ = other.kill();
        let _ = other.wait();
        assert!(alive, "the unrelated process was signalled");
        assert!(matches!(cancelled, Ok(LocalCancel::NothingRunning)), "{cancelled:?}");
        assert_eq!(report.driver, None, "not running");
        assert_eq!(report.runs[0].state, RunState::Unfinished, "{:?}", report.runs[0]);
    }
}
