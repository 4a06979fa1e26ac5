//! Per-run status of a Slurm sweep from one `squeue` answer plus the runs' own markers
//! (`crate::status::classify` is the rule), and `drover status` and `drover cancel`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use crate::backend::slurm_cmd::{QueueEntry, Slurm};
use crate::config::RunId;
use crate::error::RunError;
use crate::layout::{self, CHECKPOINT_JSON, EXIT_JSON, ExitRecord, JobSpec, RecordError, SPEC_JSON};
use crate::status::{Progress, RunFacts, RunState, RunStatus, SlurmView, StatusReport, classify, resume_hint};

use super::after::waits_for_user_job;
use super::job_files::{attempt_logs, ended_attempt, interruption_counts, last_attempt_ran_in, task_infos};
use super::ledger::{Ledger, LedgerEvent, Submission};
use super::sweep_dir::{SweepDir, job_name};
use super::throttle::{mark_lifted, share_free_slots_remembered, throttles_set};

/// Why a run of a packed task that ended before reaching it waits (`slurm` saying how the
/// task ended).
pub(super) fn not_reached(slurm: &str) -> String {
    format!("not reached: its array task ended first ({slurm}); a waiting `drover run` submits it again, or run `drover run` again")
}

/// Whether another run of packed task `task` of `submission` (array `job_id`) started in it.
pub(super) fn sibling_ran(dir: &SweepDir, submission: &Submission, job_id: &str, task: usize, me: &RunId) -> bool {
    let k = submission.runs_per_task.max(1);
    submission
        .runs
        .iter()
        .skip(task * k)
        .take(k)
        .filter(|r| r.as_str() != me.as_str())
        .filter_map(|r| RunId::parse(r))
        .any(|r| last_attempt_ran_in(&dir.run_dir(&r), job_id, task))
}

/// Where a run stands whose array task trains several runs one after another
/// (`slurm.runs_per_task`), where Slurm's state, being the task's, does not say; `None` leaves
/// it to `classify`. A completed or failed marker, or an ended attempt (its `.rc`) without one,
/// says itself whatever the task does. While the task runs, a run not started in it waits its
/// turn, one stopped at a checkpoint waits for the task's requeue, and one started and not
/// ended trains. A task that ended (not cancelled) without reaching the run leaves it not
/// submitted, for drover to submit again without spending a retry.
pub(super) fn packed_view(run_dir: &Path, exit: Option<&ExitRecord>, ran_here: bool, per_task: usize, listed: &str, cancelled: bool) -> Option<(RunState, Option<String>)> {
    use crate::layout::ExitStatus;
    let running = crate::status::slurm_running(listed);
    let queued = !running && listed_state(listed) == RunState::Pending;
    match exit.map(|e| e.status) {
        Some(ExitStatus::Completed) => return Some((RunState::Done, None)),
        Some(ExitStatus::Failed) if ran_here => return Some((RunState::Failed, exit.and_then(|e| e.reason.clone()))),
        _ => {}
    }
    if !ran_here {
        return if running {
            Some((RunState::Pending, Some(format!("waiting its turn: its array task trains {per_task} runs one after another (`slurm.runs_per_task`)"))))
        } else if queued || cancelled || listed == "CANCELLED" {
            None
        } else {
            Some((RunState::NotSubmitted, Some(not_reached(&format!("Slurm: {listed}")))))
        };
    }
    match (exit, ended_attempt(run_dir)) {
        (None, Some((attempt, code))) => {
            let mut reason = crate::status::ended_without_exit_json(code);
            if let Some(line) = crate::backend::last_log_line(&run_dir.join(format!("attempt-{attempt}.stderr.log"))) {
                reason.push_str(&format!("; its stderr ends: {line}"));
            }
            Some((RunState::Failed, Some(reason)))
        }
        (Some(stop), _) if running => {
            let words = stop.reason.as_deref().unwrap_or("stopped at a checkpoint");
            Some((RunState::Pending, Some(format!("{words}; its task is being requeued (or cancelled)"))))
        }
        (None, None) if running => Some((RunState::Running, None)),
        _ => None,
    }
}

/// Status of every run of the sweep from one queue answer; `None` when Slurm did not answer,
/// and the markers alone say what they can.
pub(super) fn statuses(dir: &SweepDir, ledger: &Ledger, queue: Option<&[QueueEntry]>) -> Vec<RunStatus> {
    statuses_reusing(dir, ledger, queue, &mut BTreeMap::new())
}

/// [`statuses`], reusing the statuses in `done` (runs found done by an earlier call, which stay
/// done) without reading their files again, and adding the runs found done now: a waiting
/// `drover run` reads a finished run's files once, not at every poll (a 3,000-run sweep on a
/// network filesystem is thousands of metadata requests a poll).
pub(super) fn statuses_reusing(
    dir: &SweepDir,
    ledger: &Ledger,
    queue: Option<&[QueueEntry]>,
    done: &mut BTreeMap<RunId, RunStatus>,
) -> Vec<RunStatus> {
    let by_task: BTreeMap<(&str, u32), &QueueEntry> =
        queue.unwrap_or_default().iter().filter_map(|e| Some(((e.array_job_id.as_str(), e.task?), e))).collect();
    let latest = ledger.latest();
    let listed = ledger.last_listings();
    let ours = ledger.accepted_jobs();
    let mut tasks = BTreeMap::new();
    dir.runs
        .iter()
        .map(|run_id| {
            if let Some(st) = done.get(run_id) {
                return st.clone();
            }
            let run_dir = dir.run_dir(run_id);
            let exit_path = run_dir.join(EXIT_JSON);
            // A marker that is there but cannot be read (EACCES, EIO, NFS's ESTALE) says nothing
            // of the run: reported as such, not taken for a missing one (as `local_status`).
            let (exit, unreadable): (Option<ExitRecord>, _) = match layout::read_record_typed(&exit_path) {
                Ok(exit) => (exit, None),
                Err(RecordError::Io(e)) => (None, Some(format!("cannot read `{}`: {e}", exit_path.display()))),
                Err(_) => (None, None),
            };
            let spec = layout::read_record::<JobSpec>(&run_dir.join(SPEC_JSON)).ok().flatten();
            let run_key = |k: &str| spec.as_ref().and_then(|s| s.run.get(k)).and_then(serde_json::Value::as_u64);
            let progress = Progress::read(&run_dir, spec.as_ref().and_then(|s| crate::status::steps_to_train(&s.run)));
            let (label, seed) = match &spec {
                Some(s) => (s.label.clone(), run_key("seed")),
                // Not started yet: the batch script writes `spec.json` from the tasks file (of
                // a refused submission too, so its runs keep their labels).
                None => {
                    let listing = latest.get(run_id.as_str()).or_else(|| listed.get(run_id.as_str())).copied();
                    let task = listing.and_then(|(n, i)| task_infos(&dir.root, n, &mut tasks).get(i).cloned());
                    task.map(|t| (t.label, t.seed)).unwrap_or_default()
                }
            };
            let (mut slurm_job, mut entry, mut facts) = (None, None, RunFacts::default());
            // The last line of the stderr of an attempt that ended without a marker.
            let mut stderr_end = None;
            // The array of the run's latest accepted submission.
            let mut array_job = None;
            // A run of a task that trains several, as its own files say.
            let mut packed = None;
            // Held back by a submit limit since its last accepted submission (a retry, or a
            // rerun's redo): not submitted now, whatever its earlier array did.
            let last_listed = listed.get(run_id.as_str()).copied();
            let latest_here = latest.get(run_id.as_str()).copied().filter(|&(n, _)| !held_back_since(ledger, last_listed, n));
            let view = match latest_here {
                None => SlurmView::NotSubmitted,
                Some((n, position)) => {
                    let submission = &ledger.submissions[&n];
                    let job_id = submission.job_id.as_deref().unwrap_or_default();
                    array_job = Some(job_id);
                    let task = submission.task_of(position);
                    slurm_job = Some(format!("{job_id}_{task}"));
                    entry = by_task.get(&(job_id, task as u32)).copied();
                    let several = submission.runs_per_task > 1;
                    // Read only where it matters: a stop marker beside a listed task (requeued?),
                    // a forgotten task without a marker (did it ever start?), and a task of
                    // several runs (which did it train?).
                    let ran_in_array = (several || entry.is_some() == exit.is_some()) && last_attempt_ran_in(&run_dir, job_id, task);
                    let cancelled = ledger.cancelled(n, job_id);
                    packed = match (entry, queue) {
                        (Some(e), _) if several => packed_view(&run_dir, exit.as_ref(), ran_in_array, submission.runs_per_task, &e.state, cancelled),
                        // Forgotten: a run the task never reached, while it reached another, was
                        // not reached (Slurm alone would say it never started).
                        (None, Some(_)) if several && !ran_in_array && !cancelled && sibling_ran(dir, submission, job_id, task, run_id) => {
                            Some((RunState::NotSubmitted, Some(not_reached("Slurm no longer lists it"))))
                        }
                        _ => None,
                    };
                    let view = match (queue, entry) {
                        (None, _) => SlurmView::Unanswered,
                        (Some(_), Some(e)) => SlurmView::Listed(e.state.as_str()),
                        (Some(_), None) => SlurmView::Forgotten,
                    };
                    // Read only for a task that failed or was forgotten without a marker, and
                    // only if the latest attempt ran in it (an older attempt's code is stale).
                    let ended = match view {
                        _ if exit.is_some() || packed.is_some() => None,
                        SlurmView::Forgotten if ran_in_array => ended_attempt(&run_dir),
                        SlurmView::Listed(state) if listed_state(state) == RunState::Failed && last_attempt_ran_in(&run_dir, job_id, task) => {
                            ended_attempt(&run_dir)
                        }
                        _ => None,
                    };
                    stderr_end = ended.and_then(|(attempt, _)| crate::backend::last_log_line(&run_dir.join(format!("attempt-{attempt}.stderr.log"))));
                    facts = RunFacts {
                        cancelled_by_drover: ledger.cancelled(n, job_id),
                        ran_in_listed_task: entry.is_some() && ran_in_array,
                        started: ran_in_array,
                        exit_code: ended.map(|(_, code)| code),
                    };
                    view
                }
            };
            let (state, reason) = match (packed.unwrap_or_else(|| classify(exit.as_ref(), view, facts)), unreadable) {
                // Slurm still runs (or queues) its task: that much is known.
                ((state, _), Some(why)) if !state.is_live() => (RunState::Unknown, Some(why)),
                (classified, _) => classified,
            };
            // A job that stops before it can write exit.json (a refused spec, a library that
            // failed to load) said why on stderr: the reason shows it, not only a log path.
            let reason = match (state, reason, stderr_end) {
                (RunState::Failed, Some(r), Some(line)) if facts.exit_code.is_some() => Some(format!("{r}; its stderr ends: {line}")),
                (_, reason, _) => reason,
            };
            // Cancelled while queued by a `drover run` that stopped the failing sweep: what Slurm
            // alone would call a `scancel` by hand. A task that had started was not cancelled
            // by it (only queued tasks were).
            let stopped_by = array_job.and_then(|j| ledger.cancel_reasons.get(j));
            let reason = match stopped_by {
                Some(why) if state == RunState::Cancelled && !facts.started => Some(format!("cancelled while queued by `drover run`: {why}")),
                // Cancelled by Slurm itself for a dependency that can never hold.
                None if state == RunState::Cancelled => entry.and_then(|e| waits_for_user_job(e, &ours)).or(reason),
                _ => reason,
            };
            let reason = match (state, reason) {
                (RunState::NotSubmitted, None) => last_listed.and_then(|(m, _)| kept_out_by(ledger, m)),
                (RunState::Pending, None) => entry.and_then(|e| waits_for_user_job(e, &ours)),
                (_, reason) => resume_hint(state, reason, run_dir.join(CHECKPOINT_JSON).exists()),
            };
            let (time_limit_requeues, preemptions) = interruption_counts(&run_dir);
            let spent_budget = exit.as_ref().filter(|_| state == RunState::Failed).and_then(ExitRecord::spent_budget).map(str::to_string);
            // The time-limit stop that spent the budget ended the run: it was not requeued.
            let time_limit_requeues = time_limit_requeues.saturating_sub(u32::from(spent_budget.as_deref() == Some("max_timeouts")));
            let st = RunStatus {
                run_id: run_id.to_string(),
                label,
                seed,
                state,
                reason,
                slurm_job,
                slurm_state: entry.map(|e| e.state.clone()),
                slurm_reason: entry.map(|e| e.reason.clone()),
                submissions: ledger.submissions_of(run_id.as_str()),
                time_limit_requeues,
                preemptions,
                spent_budget,
                logs: attempt_logs(&run_dir),
                progress,
            };
            if st.state == RunState::Done {
                done.insert(run_id.clone(), st.clone());
            }
            st
        })
        .collect()
}

/// Whether Slurm's submit limit refused the run's latest listing (`last_listed`), a submission
/// newer than its accepted submission `n`.
pub(super) fn held_back_since(ledger: &Ledger, last_listed: Option<(u32, usize)>, n: u32) -> bool {
    last_listed.is_some_and(|(m, _)| m > n && kept_out_by(ledger, m).is_some())
}

/// Why a run is not submitted whose latest listing is submission `n`, when `sbatch` refused
/// that submission: Slurm's submit limit keeps it out for now, or a setting the cluster does
/// not take (Slurm's own words).
pub(super) fn kept_out_by(ledger: &Ledger, n: u32) -> Option<String> {
    let refused = ledger.submissions.get(&n)?.refused.as_deref()?;
    if let Some(limit) = crate::backend::slurm_cmd::submit_limit_reason(refused) {
        let (limit, until) = crate::backend::slurm_cmd::submit_limit_words(&limit);
        return Some(format!("{limit} keeps it out until {until}: a waiting `drover run` submits it then, or run `drover run` again"));
    }
    // A submission found missing after its `drover run` died was never refused by Slurm.
    // The first of sbatch's error lines is the specific one ("invalid partition specified:
    // nope"); a generic "Batch job submission failed: ..." follows it.
    let said = refused.lines().find_map(|l| l.split_once("sbatch: error: ").map(|(_, why)| why.trim()))?;
    let key = crate::backend::slurm_cmd::setting_refused(refused).map_or(String::new(), |k| format!(" ({k})"));
    Some(format!("sbatch refused its array: {said}{key}; correct the setting and run `drover run` again"))
}

/// Whether `status` and `cancel` write the job ids of dangling submissions they find into the
/// ledger: only when no `drover run` holds the results directory. A live `drover run` may be
/// inside that very `sbatch` and records the id itself when it returns; a second record would
/// only duplicate the line. Without one, the submission's `drover run` was killed, and the
/// first reader to find its array keeps it.
pub(super) fn records_dangling(dir: &SweepDir) -> bool {
    crate::lock::live_holder(&dir.root.join(crate::lock::LOCK_FILE)).is_none()
}

/// What `status` and `cancel` do with dangling submissions found in `queue`: recorded when no
/// `drover run` holds the results directory ([`records_dangling`]), from the ledger read again
/// after that check, since a `drover run` that held it until a moment ago (while this reader
/// asked Slurm) recorded its own before letting go; otherwise used in memory.
pub(super) fn find_dangling_as_reader(dir: &SweepDir, ledger: &mut Ledger, queue: &[QueueEntry]) {
    if ledger.dangling().is_empty() {
        return;
    }
    let records = records_dangling(dir);
    if records {
        if let Ok(fresh) = Ledger::load(&dir.root) {
            *ledger = fresh;
        }
    }
    let token = job_name(&dir.name, &dir.root, ledger).1;
    ledger.find_dangling(queue, &token, records);
}

pub(super) fn status_report(dir: &SweepDir, runs: Vec<RunStatus>) -> StatusReport {
    StatusReport::new(dir.name.clone(), dir.root.clone(), "slurm", None, runs)
}

/// `drover status <dir>`: one `squeue` call, then the markers; a sweep never submitted to Slurm
/// is reported from its markers and locks alone (`local_status`). When the controller does not
/// answer, the markers say what they can (a sweep that has ended is reported whole) and the
/// other runs are unknown, with the report saying why.
pub fn status(results: &Path, slurm: &Slurm) -> Result<StatusReport, RunError> {
    let dir = SweepDir::open(results)?;
    let mut ledger = Ledger::load(&dir.root)?;
    if ledger.submissions.is_empty() {
        return Ok(crate::backend::local_status::status(&dir));
    }
    let mut queue = match slurm.queue(&dir.job_name, ledger.submitter()) {
        Ok(queue) => queue,
        Err(e) if e.is_unavailable() => {
            let mut report = status_report(&dir, statuses(&dir, &ledger, None));
            report.slurm_unanswered = Some(e.to_string());
            return Ok(report);
        }
        Err(e) => return Err(e.into()),
    };
    // Another user looking (a PI or an account coordinator at a student's sweep, whom Slurm
    // would let change its jobs) only reads: the submitter's own `drover status` or
    // `drover run` records and lifts.
    if submitted_by_caller(&ledger) {
        // Not found: its sbatch may still be in flight, so it is left for `drover run` to judge.
        find_dangling_as_reader(&dir, &mut ledger, &queue);
        // Also where a `--no-wait` sweep's lowered throttle catches up, and its waiting array
        // starts, once older runs end.
        let lifted = share_free_slots_remembered(&dir.root, &mut ledger, &queue, slurm, &mut throttles_set(&dir.root));
        mark_lifted(&mut queue, &lifted);
    }
    let runs = statuses(&dir, &ledger, Some(&queue));
    Ok(status_report(&dir, runs))
}

/// Whether the caller submitted the sweep (or its ledger does not say who did): only then does
/// `drover status` change anything, in the ledger or in Slurm.
fn submitted_by_caller(ledger: &Ledger) -> bool {
    ledger.submitter().is_none_or(|uid| uid == crate::backend::slurm_cmd::current_uid())
}

/// `drover cancel <dir>`: cancels the sweep's live arrays (one `scancel`) and records which,
/// so their runs show as cancelled even after Slurm forgets them; with nothing live the record
/// names no array (a waiting `drover run` still learns of it). Returns the job ids cancelled.
pub fn cancel(results: &Path, slurm: &Slurm) -> Result<Vec<String>, RunError> {
    let dir = SweepDir::open(results)?;
    let mut ledger = Ledger::load(&dir.root)?;
    let Some(&upto) = ledger.submissions.keys().next_back() else {
        return Err(RunError::NotSlurm { dir: dir.root });
    };
    let queue = slurm.queue(&dir.job_name, ledger.submitter())?;
    find_dangling_as_reader(&dir, &mut ledger, &queue);
    let ours = ledger.accepted_jobs();
    let live: BTreeSet<String> = queue
        .iter()
        .filter(|e| ours.contains(e.array_job_id.as_str()))
        .filter(|e| is_live_entry(e))
        .map(|e| e.array_job_id.clone())
        .collect();
    let mut ids: Vec<String> = live.into_iter().collect();
    ids.sort_by(|a, b| job_id_order(a, b));
    // Recorded first: a run that ends while scancel runs must still read as cancelled. Recorded
    // with nothing live too: a waiting `drover run` whose runs all wait for room under a submit
    // limit must learn of it, and cancels what it submits after `upto`.
    ledger.append(LedgerEvent::Cancelled { upto_submission: upto, job_ids: Some(ids.clone()), reason: None })?;
    slurm.cancel(&ids)?;
    Ok(ids)
}

/// Job ids in Slurm's order, numerically (`9` before `10`, `123_4` after `123`); a part that
/// is not a number (a federation's or a stand-in's id) sorts after the numbers, as text.
fn job_id_order(a: &str, b: &str) -> std::cmp::Ordering {
    let key = |id: &str| id.split('_').map(|part| part.parse::<u64>().map_err(|_| part.to_string())).collect::<Vec<_>>();
    key(a).cmp(&key(b)).then_with(|| a.cmp(b))
}

/// Whether Slurm may still run the task (queued, requeued or running).
pub(super) fn is_live_entry(e: &QueueEntry) -> bool {
    listed_state(&e.state).is_live()
}

/// What Slurm's state of a task says of it alone, without the run's own files.
pub(super) fn listed_state(state: &str) -> RunState {
    classify(None, SlurmView::Listed(state), RunFacts::default()).0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::slurm::SLURM_DIR;
    use crate::backend::slurm::ledger::{LEDGER, RetryKind};
    use crate::backend::slurm::provenance::Provenance;
    use crate::backend::slurm::rerun::{retry_kind, task_live};
    use crate::backend::slurm::test_support::{intent, tasks, two_runs_in_array_77};
    use crate::layout::{INTERRUPTIONS_JSONL, SWEEP_JSON};

    /// Review: `drover cancel` printed `cancelled job(s) 10, 11, 12, 13, 14, 6, 7, 8, 9`
    /// (ids sorted as text).
    #[test]
    fn job_ids_sort_numerically() {
        let mut ids = vec!["10", "9", "123_4", "x7", "123", "14", "123_10", "6", "abc"];
        ids.sort_by(|a, b| job_id_order(a, b));
        assert_eq!(ids, ["6", "9", "10", "14", "123", "123_4", "123_10", "abc", "x7"]);
    }

    /// `drover status`/`cancel` on a path that is missing or a file say it is no results
    /// directory; a garbled `sweep.json` is named without calling it a Slurm file (local sweeps
    /// have one too).
    #[test]
    fn status_of_a_missing_path_a_file_or_a_garbled_manifest_says_what_it_is() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let slurm = Slurm::default();
        let file = tmp.path().join("afile");
        std::fs::write(&file, b"x").expect("file");
        for path in [tmp.path().join("missing"), file] {
            let err = status(&path, &slurm).expect_err("refused");
            assert!(matches!(err, RunError::NotResults { .. }), "{err}");
            assert!(err.to_string().contains("is not a drover results directory"), "{err}");
            assert!(cancel(&path, &slurm).is_err_and(|e| matches!(e, RunError::NotResults { .. })));
        }
        // The parent of results directories (`results/`): the error names the ones inside.
        for name in ["b", "a"] {
            std::fs::create_dir_all(tmp.path().join(name)).expect("dir");
            std::fs::write(tmp.path().join(name).join(SWEEP_JSON), b"{}").expect("manifest");
        }
        let err = status(tmp.path(), &slurm).expect_err("a folder of results directories").to_string();
        let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
        assert!(err.ends_with(&format!("; it holds the results directories `{}`, `{}`", a.display(), b.display())), "{err}");
        std::fs::write(tmp.path().join(SWEEP_JSON), b"{").expect("manifest");
        let err = status(tmp.path(), &slurm).expect_err("garbled manifest").to_string();
        assert!(err.starts_with("unreadable `") && err.contains("sweep.json`: EOF while parsing"), "{err}");
    }

    #[test]
    fn status_and_cancel_refuse_a_manifest_with_a_bad_run_id_naming_file_and_id() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let results = tmp.path().join("results");
        std::fs::create_dir_all(&results).expect("mkdir");
        let manifest_path = results.canonicalize().expect("canonical").join(SWEEP_JSON);
        let write_manifest = |runs: &[&str]| {
            let manifest = serde_json::json!({
                "format_version": 1, "name": "s", "source": "s.toml", "runs": runs, "created_at": "0"
            });
            std::fs::write(&manifest_path, manifest.to_string()).expect("write sweep.json");
        };
        write_manifest(&["0123456789abcdef", "fedcba9876543210"]);
        let dir = SweepDir::open(&results).expect("a sound manifest opens");
        assert_eq!(dir.run_dir(&dir.runs[1]), manifest_path.with_file_name("runs").join("fedcba9876543210"));

        for bad in ["../../x", "a b", "/abs", "0123456789ABCDEF"] {
            write_manifest(&["0123456789abcdef", bad]);
            // Both fail before asking Slurm anything (none needs to be installed for this).
            let errors = [
                status(&results, &Slurm::default()).expect_err("status").to_string(),
                cancel(&results, &Slurm::default()).expect_err("cancel").to_string(),
            ];
            for err in errors {
                assert!(err.contains(&manifest_path.display().to_string()), "{err}");
                assert!(err.contains(&format!("`runs[1]` is {bad:?}, not a run id")), "{err}");
            }
        }
        // Nothing was made from the bad ids, inside the results directory or beside it.
        assert_eq!(std::fs::read_dir(tmp.path()).expect("ls").count(), 1);
        assert_eq!(std::fs::read_dir(&results).expect("ls").count(), 1);
    }

    /// While a `drover run` holds the results directory it records its own submissions:
    /// `drover status` beside it, finding the array of a `sbatch` still in flight, must not
    /// write the same job id again (a watcher did, and the ledger held the submission twice).
    #[test]
    fn a_reader_records_dangling_submissions_only_when_no_drover_run_holds_the_results() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path().canonicalize().expect("canonical");
        let dir = SweepDir { root: root.clone(), name: "s".into(), runs: Vec::new(), job_name: "j".into() };
        assert!(records_dangling(&dir), "no drover run: the reader keeps what it found");

        // The reader read the ledger while the submission dangled; its `drover run` recorded
        // the job id and ended while the reader asked Slurm: read again, nothing is doubled.
        let mut stale = Ledger::load(&root).expect("ledger");
        stale.append(intent(0, vec!["0123456789abcdef".into()], None, None)).expect("intent");
        let mut run = Ledger::load(&root).expect("ledger");
        run.append(LedgerEvent::Submitted { submission: 0, job_id: "77".into() }).expect("submitted");
        let queue = [QueueEntry { comment: format!("drover:{}:0", job_name("s", &root, &stale).1), ..tasks("77", 0, 1, "RUNNING", "None")[0].clone() }];
        find_dangling_as_reader(&dir, &mut stale, &queue);
        let text = std::fs::read_to_string(root.join(SLURM_DIR).join(LEDGER)).expect("ledger");
        assert_eq!(text.matches(r#""kind":"submitted""#).count(), 1, "{text}");
        assert_eq!(stale.submissions[&0].job_id.as_deref(), Some("77"));

        let _held = crate::lock::acquire(&root, "drover run s.toml").expect("lock");
        assert!(!records_dangling(&dir), "a live drover run records it itself");
    }

    /// A run whose retry Slurm's submit limit held back reads as not submitted, with the
    /// limit's name, rather than as its earlier array's outcome; a refusal for another reason
    /// leaves the earlier outcome.
    #[test]
    fn a_retry_held_back_by_a_submit_limit_reads_as_not_submitted() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path().canonicalize().expect("canonical");
        let (mut ledger, dir, ids) = two_runs_in_array_77(&root);
        ledger.append(intent(1, vec![ids[0].to_string()], None, None)).expect("intent");
        let limit = "`sbatch --parsable array-1.sbatch` failed (exit status: 1): sbatch: error: QOSMaxSubmitJobPerUserLimit";
        ledger.append(LedgerEvent::Refused { submission: 1, message: limit.into() }).expect("refused");
        ledger.append(intent(2, vec![ids[1].to_string()], None, None)).expect("intent");
        ledger.append(LedgerEvent::Refused { submission: 2, message: "not found in the queue: never submitted".into() }).expect("refused");
        let queue = tasks("77", 0, 2, "FAILED", "NonZeroExitCode");
        let now = statuses(&dir, &ledger, Some(&queue));
        assert_eq!(now[0].state, RunState::NotSubmitted, "{:?}", now[0]);
        assert!(now[0].reason.as_deref().is_some_and(|r| r.starts_with("Slurm's submit limit (QOSMaxSubmitJobPerUserLimit) keeps it out")), "{:?}", now[0].reason);
        assert_eq!(now[1].state, RunState::Failed, "another refusal leaves the earlier outcome: {:?}", now[1]);
    }

    /// Review finding (Slurm user): a single-run task whose `drover-job` exited 1 without
    /// writing exit.json read `Slurm: FAILED, and the job wrote no exit.json`, then, once Slurm
    /// forgot it, `... (killed, out of memory, or node failure?)`, though `attempt-1.rc` said 1.
    /// The latest attempt's exit code and stderr's last line now say it, listed or forgotten;
    /// the guess is left for a run with no code, or whose code is an older attempt's.
    #[test]
    fn a_failed_task_without_exit_json_is_told_by_its_exit_code_and_stderr() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path().canonicalize().expect("canonical");
        let (ledger, dir, ids) = two_runs_in_array_77(&root);
        let attempts = |i: usize, last: u32| {
            let run = root.join("runs").join(ids[i]);
            std::fs::create_dir_all(&run).expect("mkdir");
            let lines: String = (1..=last)
                .map(|n| format!("{{\"format_version\":1,\"attempt\":{n},\"slurm_job_id\":\"8{i}\",\"array_job_id\":\"77\",\"array_task_id\":\"{i}\"}}\n"))
                .collect();
            std::fs::write(run.join("attempts.jsonl"), lines).expect("attempts");
            run
        };
        let run = attempts(0, 1);
        std::fs::write(run.join("attempt-1.rc"), "1\n").expect("rc");
        std::fs::write(run.join("attempt-1.stderr.log"), "loading spec\nerror: spec.json: unknown field `lr`\n\n").expect("stderr");
        // Run 1's code is of attempt 1; attempt 2 ended with none (killed with its batch script).
        let run = attempts(1, 2);
        std::fs::write(run.join("attempt-1.rc"), "1\n").expect("rc");
        let reasons = |queue: &[QueueEntry]| -> Vec<(RunState, String)> {
            statuses(&dir, &ledger, Some(queue)).into_iter().map(|r| (r.state, r.reason.unwrap_or_default())).collect()
        };
        assert_eq!(reasons(&tasks("77", 0, 2, "FAILED", "NonZeroExitCode")), [
            (RunState::Failed, "exit code 1 without writing exit.json (Slurm: FAILED); its stderr ends: error: spec.json: unknown field `lr`".to_string()),
            (RunState::Failed, "Slurm: FAILED, and the job wrote no exit.json".to_string()),
        ]);
        assert_eq!(reasons(&[]), [
            (RunState::Failed, "exit code 1 without writing exit.json; its stderr ends: error: spec.json: unknown field `lr`".to_string()),
            (RunState::Failed, "the job wrote no exit.json and Slurm no longer lists it (killed, out of memory, or node failure?)".to_string()),
        ]);
        // Killed by a signal: bash's 128 + n is named as the signal.
        std::fs::write(root.join("runs").join(ids[1]).join("attempt-2.rc"), "137\n").expect("rc");
        let (state, reason) = reasons(&[]).remove(1);
        assert_eq!(state, RunState::Failed);
        assert!(reason.starts_with("exit code 137 without writing exit.json: killed by signal 9 (SIGKILL)"), "{reason}");
    }

    /// Runs packed three to a task (`slurm.runs_per_task`) while Slurm lists task 0 running
    /// and task 1 pending: each run reads its own files, since Slurm's state is the task's. The
    /// run that ended well is done, the one whose attempt ended without a marker failed (its
    /// exit code named), the one being trained runs, the one not yet reached waits its turn, and
    /// the run of task 1 is pending; each names its task (`50_0`, `50_1`). A failed run is not
    /// retried while its task is live.
    #[test]
    fn runs_packed_in_one_task_each_say_where_they_stand() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path().canonicalize().expect("canonical");
        let ids: Vec<String> = (0..5).map(|i| format!("{i:016x}")).collect();
        let mut ledger = Ledger::load(&root).expect("empty ledger");
        ledger.append(intent(0, ids.clone(), None, None)).expect("intent");
        ledger.append(LedgerEvent::Packed { submission: 0, runs_per_task: 3 }).expect("packed");
        ledger.append(LedgerEvent::Submitted { submission: 0, job_id: "50".into() }).expect("submitted");
        assert_eq!(Ledger::load(&root).expect("reload").submissions[&0].runs_per_task, 3, "kept in the ledger");
        let run_ids = ids.iter().map(|s| RunId::parse(s).expect("id")).collect();
        let dir = SweepDir { root: root.clone(), name: "s".into(), runs: run_ids, job_name: "j".into() };
        let attempt = |i: usize, task: u32, rc: Option<&str>, marker: Option<&str>| {
            let run = root.join("runs").join(&ids[i]);
            std::fs::create_dir_all(&run).expect("mkdir");
            let line = format!(r#"{{"format_version":1,"attempt":1,"slurm_job_id":"6{task}","array_job_id":"50","array_task_id":"{task}"}}"#);
            std::fs::write(run.join("attempts.jsonl"), line + "\n").expect("attempts");
            if let Some(rc) = rc {
                std::fs::write(run.join("attempt-1.rc"), format!("{rc}\n")).expect("rc");
            }
            if let Some(status) = marker {
                let exit = serde_json::json!({"format_version": 1, "run_id": ids[i], "status": status, "reason": "boom"});
                std::fs::write(run.join(EXIT_JSON), exit.to_string()).expect("marker");
            }
        };
        attempt(0, 0, Some("0"), Some("completed"));
        attempt(1, 0, Some("137"), None);
        attempt(2, 0, None, None);
        let queue = [tasks("50", 0, 1, "RUNNING", "None"), tasks("50", 1, 1, "PENDING", "Priority")].concat();
        let now = statuses(&dir, &ledger, Some(&queue));
        let seen: Vec<(RunState, &str)> = now.iter().map(|r| (r.state, r.slurm_job.as_deref().unwrap_or_default())).collect();
        assert_eq!(seen, [
            (RunState::Done, "50_0"),
            (RunState::Failed, "50_0"),
            (RunState::Running, "50_0"),
            (RunState::Pending, "50_1"),
            (RunState::Pending, "50_1"),
        ]);
        assert_eq!(
            now[1].reason.as_deref(),
            Some("exit code 137 without writing exit.json: killed by signal 9 (SIGKILL): out of memory? (the kernel's OOM killer sends SIGKILL; see `dmesg`)")
        );
        assert_eq!(now[2].reason, None);
        // Run 3 is the first of task 1 (pending: Slurm's reason); had task 0 not reached run 2
        // yet, run 2 would wait its turn.
        std::fs::remove_dir_all(root.join("runs").join(&ids[2])).expect("rm");
        let now = statuses(&dir, &ledger, Some(&queue));
        assert_eq!(now[2].state, RunState::Pending);
        assert!(now[2].reason.as_deref().is_some_and(|r| r.starts_with("waiting its turn: its array task trains 3 runs")), "{:?}", now[2].reason);
        // A failed run of a live task: a retry would race a requeue of the task; it waits.
        assert_eq!(retry_kind(&now[1]), Some(RetryKind::Failed));
        assert!(task_live(&now[1]), "what the waiting loop and a rerun hold it back by");

        // Run 2 stopped at a checkpoint while its task still runs: waiting for the requeue, not
        // ended (a waiting `drover run` must not finish on it).
        attempt(2, 0, Some("75"), Some("cancelled"));
        let now = statuses(&dir, &ledger, Some(&queue));
        assert_eq!(now[2].state, RunState::Pending, "{:?}", now[2]);
        assert!(now[2].reason.as_deref().is_some_and(|r| r.ends_with("its task is being requeued (or cancelled)")), "{:?}", now[2].reason);
        // Task 1 timed out before reaching run 4 (run 3 was killed training): run 3 timed out,
        // run 4 was not reached and goes again without a retry; run 1's failure stays its own.
        attempt(3, 1, None, None);
        let ended = [tasks("50", 0, 1, "TIMEOUT", "TimeLimit"), tasks("50", 1, 1, "TIMEOUT", "TimeLimit")].concat();
        let now = statuses(&dir, &ledger, Some(&ended));
        let seen: Vec<RunState> = now.iter().map(|r| r.state).collect();
        assert_eq!(seen, [RunState::Done, RunState::Failed, RunState::TimedOut, RunState::TimedOut, RunState::NotSubmitted], "{now:?}");
        assert!(now[4].reason.as_deref().is_some_and(|r| r.starts_with("not reached: its array task ended first (Slurm: TIMEOUT)")), "{:?}", now[4].reason);
        assert_eq!((now[4].submissions, retry_kind(&now[4])), (1, None), "submitted again by the waiting loop, spending no retry");
        // Cancelled before reaching it: cancelled, as the task.
        let cancelled = tasks("50", 1, 1, "CANCELLED", "None");
        assert_eq!(statuses(&dir, &ledger, Some(&cancelled))[4].state, RunState::Cancelled);
    }

    /// A run the batch script has not started yet has no `spec.json`: its label and seed come
    /// from the array's tasks file, so `drover status` shows the seed of a pending run.
    #[test]
    fn a_pending_run_shows_the_seed_and_label_of_its_tasks_file_line() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path().canonicalize().expect("canonical");
        let (ledger, dir, ids) = two_runs_in_array_77(&root);
        let line = |id: &str, seed: u64| format!("{id}\t{{\"run_id\":\"{id}\",\"label\":\"lr=0.1\",\"run\":{{\"seed\":{seed}}}}}\n");
        let tasks = format!("{}{}", line(ids[0], 3), line(ids[1], 4));
        std::fs::write(root.join(SLURM_DIR).join("array-0.tasks"), tasks).expect("tasks");
        // The first run has started: its spec.json is what counts.
        let started = root.join("runs").join(ids[0]);
        std::fs::create_dir_all(&started).expect("mkdir");
        let spec = serde_json::json!({
            "format_version": 1, "run_id": ids[0], "config_id": "c", "sweep": "s", "label": "lr=0.1",
            "axes": {}, "run": {"seed": 3, "total_steps": 100}, "params": {}, "plugin_path": "/p.so"
        });
        std::fs::write(started.join(SPEC_JSON), spec.to_string()).expect("spec");
        let queue: Vec<QueueEntry> = [(0, "RUNNING", "None"), (1, "PENDING", "JobArrayTaskLimit")]
            .iter()
            .map(|&(task, state, reason)| QueueEntry {
                array_job_id: "77".into(),
                task: Some(task),
                state: state.into(),
                reason: reason.into(),
                comment: "c".into(),
                dependency: None,
            })
            .collect();
        let now = statuses(&dir, &ledger, Some(&queue));
        assert!(layout::read_record::<JobSpec>(&started.join(SPEC_JSON)).expect("spec parses").is_some(), "the test's spec is a JobSpec");
        assert_eq!(now.iter().map(|r| (r.state, r.seed, r.label.as_str())).collect::<Vec<_>>(), [
            (RunState::Running, Some(3), "lr=0.1"),
            (RunState::Pending, Some(4), "lr=0.1"),
        ]);
        assert!(!root.join("runs").join(ids[1]).exists(), "status creates nothing");

        // Slurm forgets both with no marker written: the run that started died (killed, out of
        // memory); the one that never started was cancelled while queued (`scancel` by hand).
        let attempt = r#"{"format_version":1,"attempt":1,"array_job_id":"77","array_task_id":"0"}"#;
        std::fs::write(started.join("attempts.jsonl"), format!("{attempt}\n")).expect("attempts");
        let now = statuses(&dir, &ledger, Some(&[]));
        assert_eq!(now[0].state, RunState::Failed, "{:?}", now[0].reason);
        assert_eq!(now[1].state, RunState::Cancelled, "{:?}", now[1].reason);
        assert!(now[1].reason.as_deref().is_some_and(|r| r.starts_with("never started")), "{:?}", now[1].reason);
        // An attempt in an earlier array does not make this submission's task a started one.
        std::fs::write(started.join("attempts.jsonl"), format!("{}\n", attempt.replace("\"77\"", "\"76\""))).expect("attempts");
        assert_eq!(statuses(&dir, &ledger, Some(&[]))[0].state, RunState::Cancelled);
        // Slurm not answering: neither has a final marker, so neither is settled.
        let blind = statuses(&dir, &ledger, None);
        assert_eq!((blind[0].state, blind[1].state), (RunState::Unknown, RunState::Unknown));
        assert_eq!(blind[1].label, "lr=0.1", "the tasks file still names it");
    }

    /// An `exit.json` that is there but cannot be read (EACCES, EIO, NFS's ESTALE) says nothing
    /// of the run: it is `unknown`, naming the file and the error, as a local sweep reports it,
    /// not a run without a marker (which Slurm's forgetting it would call failed or cancelled,
    /// and a rerun would redo). A task Slurm still runs stays live; damaged content is read as
    /// no marker, as before.
    #[test]
    fn an_unreadable_marker_is_unknown_not_no_marker() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path().canonicalize().expect("canonical");
        let (ledger, dir, ids) = two_runs_in_array_77(&root);
        let run = root.join("runs").join(ids[0]);
        std::fs::create_dir_all(&run).expect("mkdir");
        let attempt = r#"{"format_version":1,"attempt":1,"array_job_id":"77","array_task_id":"0"}"#;
        std::fs::write(run.join("attempts.jsonl"), format!("{attempt}\n")).expect("attempts");
        // A link to /proc/self/mem in its place: reading fails with EIO, as a failing disk would.
        std::os::unix::fs::symlink("/proc/self/mem", run.join(EXIT_JSON)).expect("link");
        let now = statuses(&dir, &ledger, Some(&[]));
        assert_eq!(now[0].state, RunState::Unknown, "{:?}", now[0]);
        let reason = now[0].reason.clone().unwrap_or_default();
        assert!(reason.starts_with(&format!("cannot read `{}`: ", run.join(EXIT_JSON).display())), "{reason}");
        let running = tasks("77", 0, 1, "RUNNING", "None");
        assert_eq!(statuses(&dir, &ledger, Some(&running))[0].state, RunState::Running, "Slurm says it runs");
        std::fs::remove_file(run.join(EXIT_JSON)).expect("rm link");
        std::fs::write(run.join(EXIT_JSON), "{").expect("damaged");
        let damaged = statuses(&dir, &ledger, Some(&[]));
        std::fs::remove_file(run.join(EXIT_JSON)).expect("rm");
        let none = statuses(&dir, &ledger, Some(&[]));
        assert_eq!((damaged[0].state, &damaged[0].reason), (none[0].state, &none[0].reason));
        assert_eq!(none[0].state, RunState::Failed, "started, forgotten, no marker");
    }

    /// `squeue` asks for the submitter's jobs alone (the controller filters by user, where by
    /// name alone it reads the whole job table) when one user submitted everything; with
    /// several submitters, or a submission from before uids were recorded, it asks by name.
    #[test]
    fn the_queue_is_asked_for_the_one_submitters_jobs() {
        let with_uid = |n: u32, uid: Option<u32>| match intent(n, vec![format!("{n:016x}")], None, None) {
            LedgerEvent::Intent { provenance, submission, job_name, comment, script, runs, throttle, raise_to } => {
                LedgerEvent::Intent { provenance: Box::new(Provenance { submit_uid: uid, ..*provenance }), submission, job_name, comment, script, runs, throttle, raise_to }
            }
            other => other,
        };
        let ledger = |uids: &[Option<u32>]| {
            let mut l = Ledger::default();
            for (n, &uid) in uids.iter().enumerate() {
                l.apply(with_uid(n as u32, uid));
            }
            l.submitter()
        };
        assert_eq!(ledger(&[]), None);
        assert_eq!(ledger(&[Some(1000), Some(1000)]), Some(1000));
        assert_eq!(ledger(&[Some(1000), Some(1001)]), None, "a colleague's submission: every user's jobs");
        assert_eq!(ledger(&[None, Some(1000)]), None, "an old submission: every user's jobs");

        let tmp = tempfile::tempdir().expect("tempdir");
        let args = tmp.path().join("args");
        let script = format!("#!/bin/sh\necho \"$@\" > '{}'\n", args.display());
        std::fs::write(tmp.path().join("squeue"), script).expect("fake squeue");
        std::fs::set_permissions(tmp.path().join("squeue"), std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("chmod");
        let slurm = Slurm { bin_dir: Some(tmp.path().to_path_buf()), ..Slurm::default() };
        slurm.queue("drover-s-00", Some(1234)).expect("empty queue");
        let asked = std::fs::read_to_string(&args).expect("args");
        assert!(asked.contains("--user=1234") && asked.contains("--name=drover-s-00"), "{asked}");
        slurm.queue("drover-s-00", None).expect("empty queue");
        assert!(!std::fs::read_to_string(&args).expect("args").contains("--user"));
    }

    /// A waiting `drover run` reads a finished run's files once: a run found done is reused
    /// from then on (here its marker is removed behind its back and it stays done), while
    /// other runs are read again at every poll.
    #[test]
    fn a_run_found_done_is_not_read_again() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path().canonicalize().expect("canonical");
        let (ledger, dir, ids) = two_runs_in_array_77(&root);
        let marker = |id: &str, status: &str| {
            let run = root.join("runs").join(id);
            std::fs::create_dir_all(&run).expect("mkdir");
            std::fs::write(run.join(EXIT_JSON), serde_json::json!({"format_version": 1, "run_id": id, "status": status, "finished_at": "1"}).to_string()).expect("exit");
        };
        marker(ids[0], "completed");
        marker(ids[1], "failed");
        let mut done = BTreeMap::new();
        let first = statuses_reusing(&dir, &ledger, Some(&[]), &mut done);
        assert_eq!((first[0].state, first[1].state), (RunState::Done, RunState::Failed));
        assert_eq!(done.keys().map(RunId::as_str).collect::<Vec<_>>(), [ids[0]]);
        for id in ids {
            std::fs::remove_file(root.join("runs").join(id).join(EXIT_JSON)).expect("remove");
        }
        let again = statuses_reusing(&dir, &ledger, Some(&[]), &mut done);
        assert_eq!(again[0].state, RunState::Done, "reused, not read");
        assert_ne!(again[1].state, RunState::Failed, "read again");
        assert_ne!(statuses(&dir, &ledger, Some(&[]))[0].state, RunState::Done, "a fresh call reads everything");
    }

    /// Which budget failed a run comes from the job's marker, or from its words in a marker
    /// from before the field; the time-limit stop that failed the run is not shown as a requeue.
    #[test]
    fn the_spent_budget_is_read_from_the_marker_and_its_stop_is_no_requeue() {
        let marker = |status: &str, reason: &str, field: Option<&str>| -> ExitRecord {
            let mut v = serde_json::json!({"format_version": 1, "run_id": "r", "status": status, "reason": reason, "finished_at": "1"});
            if let Some(f) = field {
                v["spent_budget"] = f.into();
            }
            serde_json::from_value(v).expect("marker")
        };
        let old_timeouts = "reached the time limit 2 times (max_timeouts = 1); checkpoint at iteration 9";
        assert_eq!(marker("failed", old_timeouts, None).spent_budget(), Some("max_timeouts"));
        assert_eq!(marker("failed", "preempted 3 times (max_preemptions = 2)", None).spent_budget(), Some("max_preemptions"));
        assert_eq!(marker("failed", "whatever the job says", Some("max_preemptions")).spent_budget(), Some("max_preemptions"));
        assert_eq!(marker("failed", "plugin error: lr (max_timeouts) is odd", None).spent_budget(), None);
        assert_eq!(marker("cancelled", old_timeouts, None).spent_budget(), None, "only a failure spends a budget");

        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path().canonicalize().expect("canonical");
        let id = "0123456789abcdef";
        let mut ledger = Ledger::load(&root).expect("empty ledger");
        ledger.append(intent(0, vec![id.to_string()], None, None)).expect("intent");
        ledger.append(LedgerEvent::Submitted { submission: 0, job_id: "77".into() }).expect("submitted");
        let run = root.join("runs").join(id);
        std::fs::create_dir_all(&run).expect("mkdir");
        let stop = |it: u64| format!("{{\"format_version\":1,\"reason\":\"time_limit\",\"iteration\":{it}}}\n");
        std::fs::write(run.join(INTERRUPTIONS_JSONL), format!("{}{}", stop(4), stop(9))).expect("interruptions");
        let write_marker = |m: serde_json::Value| std::fs::write(run.join(EXIT_JSON), m.to_string()).expect("exit");
        let dir = SweepDir { root: root.clone(), name: "s".into(), runs: vec![RunId::parse(id).expect("id")], job_name: "j".into() };
        write_marker(serde_json::json!({"format_version": 1, "run_id": id, "status": "failed", "reason": old_timeouts, "finished_at": "1", "spent_budget": "max_timeouts"}));
        let now = statuses(&dir, &ledger, Some(&[]));
        assert_eq!((now[0].state, now[0].time_limit_requeues, now[0].spent_budget.as_deref()), (RunState::Failed, 1, Some("max_timeouts")));
        write_marker(serde_json::json!({"format_version": 1, "run_id": id, "status": "failed", "reason": "plugin error", "finished_at": "1"}));
        let now = statuses(&dir, &ledger, Some(&[]));
        assert_eq!((now[0].time_limit_requeues, now[0].spent_budget.as_deref()), (2, None), "both stops were requeues");
    }

    /// Security review F7: `drover status` by another user (a PI or an account coordinator,
    /// whom Slurm lets change a student's jobs) recorded in the student's ledger and updated
    /// throttles. Only the submitter's status changes anything; another user's only reads.
    #[test]
    fn status_by_another_user_than_the_submitter_changes_nothing() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path().canonicalize().expect("canonical");
        let bin = root.join("bin");
        std::fs::create_dir_all(&bin).expect("mkdir");
        // The queue lists the array of a submission whose sbatch outcome was never recorded.
        crate::subprocess::write_stand_in(&bin.join("squeue"), "echo '99|0|RUNNING|None|drover:abcdef12:0|(null)'");
        let run = format!("{:016x}", 0);
        let manifest = serde_json::json!({"format_version": 1, "name": "s", "source": "s.toml", "runs": [run], "created_at": "0"});
        std::fs::write(root.join(SWEEP_JSON), manifest.to_string()).expect("sweep.json");
        let me = crate::backend::slurm_cmd::current_uid();
        let slurm = Slurm { bin_dir: Some(bin), ..Slurm::default() };
        for (submitter, records) in [(me.wrapping_add(1), false), (me, true)] {
            let _ = std::fs::remove_dir_all(root.join(SLURM_DIR));
            let mut ledger = Ledger::load(&root).expect("empty");
            ledger
                .append(LedgerEvent::Intent {
                    submission: 0,
                    job_name: "drover-s-abcdef12".into(),
                    comment: "drover:abcdef12:0".into(),
                    script: "array-0.sbatch".into(),
                    runs: vec![run.clone()],
                    provenance: Box::new(Provenance { submit_uid: Some(submitter), ..Provenance::default() }),
                    throttle: None,
                    raise_to: None,
                })
                .expect("intent");
            status(&root, &slurm).expect("status");
            let text = std::fs::read_to_string(root.join(SLURM_DIR).join(LEDGER)).expect("ledger");
            assert_eq!(text.contains(r#""kind":"submitted""#), records, "submitter {submitter}, caller {me}: {text}");
        }
    }

    /// `drover cancel` marks only the arrays it cancelled: a run of an array that had already
    /// ended (a crash Slurm has forgotten) still reads as failed; a ledger written before the
    /// job ids were recorded keeps its meaning; with nothing live, the request is recorded with
    /// no array (for a waiting `drover run` to see).
    #[test]
    fn cancel_marks_only_the_arrays_it_cancelled() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path().canonicalize().expect("canonical");
        let mut ledger = Ledger::load(&root).expect("empty");
        for (n, job) in [(0, "41"), (1, "42")] {
            ledger.append(intent(n, vec![format!("{n:016x}")], None, None)).expect("intent");
            ledger.append(LedgerEvent::Submitted { submission: n, job_id: job.into() }).expect("submitted");
        }
        ledger.append(LedgerEvent::Cancelled { upto_submission: 1, job_ids: Some(vec!["42".into()]), reason: None }).expect("cancelled");
        let back = Ledger::load(&root).expect("reload");
        assert!(!back.cancelled(0, "41"), "array 41 had ended before the cancel");
        assert!(back.cancelled(1, "42"));
        let no_exit = |cancelled| classify(None, SlurmView::Forgotten, RunFacts { cancelled_by_drover: cancelled, started: true, ..RunFacts::default() }).0;
        assert_eq!((no_exit(back.cancelled(0, "41")), no_exit(back.cancelled(1, "42"))), (RunState::Failed, RunState::Cancelled));

        // A record from before job ids: every submission up to `upto_submission`.
        let old = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(old.path().join(SLURM_DIR)).expect("mkdir");
        std::fs::write(old.path().join(SLURM_DIR).join(LEDGER), "{\"format_version\":1,\"at\":\"1\",\"kind\":\"cancelled\",\"upto_submission\":0}\n")
            .expect("old ledger");
        let old = Ledger::load(old.path()).expect("an old record reads");
        assert!(old.cancelled(0, "41") && !old.cancelled(1, "42"));

        // Nothing in the queue: `drover cancel` cancels nothing but records that it was asked (a
        // waiting `drover run` whose runs all wait for room must stop), with no array named.
        let bin = root.join("bin");
        std::fs::create_dir_all(&bin).expect("mkdir");
        crate::subprocess::write_stand_in(&bin.join("squeue"), "exit 0");
        let manifest = serde_json::json!({
            "format_version": 1, "name": "s", "source": "s.toml", "runs": [format!("{:016x}", 0), format!("{:016x}", 1)], "created_at": "0"
        });
        std::fs::write(root.join(SWEEP_JSON), manifest.to_string()).expect("sweep.json");
        let before = std::fs::read_to_string(root.join(SLURM_DIR).join(LEDGER)).expect("ledger");
        let cancels = Ledger::load(&root).expect("ledger").user_cancels;
        let ids = cancel(&root, &Slurm { bin_dir: Some(bin), ..Slurm::default() }).expect("cancel");
        assert!(ids.is_empty());
        let after = std::fs::read_to_string(root.join(SLURM_DIR).join(LEDGER)).expect("ledger");
        assert!(after.starts_with(&before) && after[before.len()..].contains(r#""kind":"cancelled","upto_submission":1,"job_ids":[]"#), "{after}");
        let ledger = Ledger::load(&root).expect("ledger");
        assert_eq!((ledger.user_cancels, ledger.cancelled_upto_latest), (cancels + 1, Some(1)));
        assert!(!ledger.cancelled(0, "41") && ledger.cancelled(1, "42"), "no array added");
    }
}
