//! What a (re)run does with each run from one queue answer: skip, re-attach, resume, redo or
//! submit new (`prepare_runs`, and `dry_run_actions` for `--dry-run`), and which retry budget
//! a resubmission counts against.

use std::time::Duration;

use crate::backend::DryRunAction;
use crate::backend::slurm_cmd::{QueueEntry, Slurm};
use crate::backend::slurm_config::{Resources, SlurmSettings};
use crate::error::RunError;
use crate::layout::CHECKPOINT_JSON;
use crate::plan::Plan;
use crate::status::{RunState, RunStatus};

use super::job_files::failed_at_a_stop;
use super::ledger::{Ledger, RetryKind};
use super::plan::{dry_run_root, run_resources};
use super::run::SlurmOptions;
use super::status::{listed_state, statuses};
use super::submit::ready_run_dir;
use super::sweep_dir::{SweepDir, job_name};

/// Slurm for a dry run's questions: one short try each, since a dry run is often made where
/// Slurm is not reachable (a laptop, a login node during an outage) and every question it asks
/// has a safe default.
pub(super) fn dry_run_slurm(opts: &SlurmOptions) -> Slurm {
    Slurm {
        policy: crate::backend::slurm_cmd::CallPolicy { attempts: 1, timeout: Duration::from_secs(5), ..opts.slurm.policy.clone() },
        ..opts.slurm.clone()
    }
}

/// What `drover run --backend slurm` would do with each run, for `--dry-run`, by
/// [`prepare_runs`]' rules: done, live (queued or running: re-attached), resume (a stop with
/// its checkpoint), redo or new. Slurm is asked once and briefly, only when the sweep
/// has submissions; unreachable, no run counts as live.
pub fn dry_run_actions(plan: &Plan, opts: &SlurmOptions) -> Vec<DryRunAction> {
    let local = || plan.runs.iter().map(|r| DryRunAction::from(crate::backend::planned_action(&plan.results.run_dir(r.run_id.as_str()), &plan.job_spec(r)))).collect();
    let Ok(root) = dry_run_root(plan) else { return local() };
    let Ok(mut ledger) = Ledger::load(&root) else { return local() };
    let (job_name, token) = job_name(&plan.sweep.name, &root, &ledger);
    let queue = if ledger.submissions.is_empty() {
        Vec::new()
    } else {
        dry_run_slurm(opts).queue(&job_name, ledger.submitter()).unwrap_or_else(|e| {
            tracing::warn!("cannot ask Slurm which runs are live ({e}); the dry run counts none as live");
            Vec::new()
        })
    };
    ledger.find_dangling(&queue, &token, false);
    let dir = SweepDir { root, name: plan.sweep.name.clone(), runs: plan.runs.iter().map(|r| r.run_id.clone()).collect(), job_name };
    let now = statuses(&dir, &ledger, Some(&queue));
    plan.runs
        .iter()
        .zip(&now)
        .map(|(run, st)| match st.state {
            RunState::Done => DryRunAction::Done,
            s if s.is_live() || task_live(st) => DryRunAction::Live,
            state => {
                let run_dir = dir.run_dir(&run.run_id);
                let failed_at_stop = state == RunState::Failed && failed_at_a_stop(&run_dir);
                if resumes_on_rerun(state, failed_at_stop) && run_dir.join(CHECKPOINT_JSON).exists() {
                    DryRunAction::Resume
                } else if crate::backend::planned_action(&run_dir, &plan.job_spec(run)) == crate::backend::PlannedAction::New {
                    DryRunAction::New
                } else {
                    DryRunAction::Redo
                }
            }
        })
        .collect()
}

/// Decides each run's fate from one queue answer and gets the ones to submit ready.
pub(super) fn prepare_runs(
    plan: &Plan,
    dir: &SweepDir,
    ledger: &Ledger,
    queue: &[QueueEntry],
    settings: &SlurmSettings,
) -> Result<PreparedRuns, RunError> {
    let now = statuses(dir, ledger, Some(queue));
    let (mut skipped, mut attached, mut resumed, mut redone, mut to_submit) = (0, 0, 0, 0, Vec::new());
    for (run, st) in plan.runs.iter().zip(&now) {
        match st.state {
            RunState::Done => skipped += 1,
            s if s.is_live() || task_live(st) => attached += 1,
            _ => {
                // A stopped run with a checkpoint resumes (`resumes_on_rerun`); others start over.
                let failed_at_stop = st.state == RunState::Failed && failed_at_a_stop(&dir.run_dir(&run.run_id));
                let resumes = ready_run_dir(plan, run, resumes_on_rerun(st.state, failed_at_stop))?;
                resumed += usize::from(resumes);
                // A rerun is the user's request to run the sweep again: it redoes failed runs
                // as the local backend does, spending no `max_retries` (the waiting loop's
                // automatic retries count there, across reruns, and are not reset), and says
                // how many, so a loop of `drover run --no-wait` shows what it resubmits.
                redone += usize::from(st.state == RunState::Failed && !resumes);
                to_submit.push((run.run_id.to_string(), run_resources(settings, run)));
            }
        }
    }
    Ok(PreparedRuns { to_submit, skipped, attached, resumed, redone })
}

/// Whether Slurm still lists the run's array task as queued or running while the run itself
/// has ended: a run of a task that trains several (`slurm.runs_per_task`), whose requeue could
/// come back to it. It is retried (or resubmitted by a rerun) only once the task has ended.
pub(super) fn task_live(st: &RunStatus) -> bool {
    !st.state.is_live() && st.slurm_state.as_deref().is_some_and(|s| listed_state(s).is_live())
}

/// What `prepare_runs` decided.
pub(super) struct PreparedRuns {
    /// Runs to submit, with their resources.
    pub(super) to_submit: Vec<(String, Resources)>,
    /// Completed runs.
    pub(super) skipped: usize,
    /// Queued or running runs.
    pub(super) attached: usize,
    /// Runs of `to_submit` that continue from their checkpoint.
    pub(super) resumed: usize,
    /// Runs of `to_submit` that failed before and start over.
    pub(super) redone: usize,
}

/// `submitting N` with what a rerun's first line says of the runs it submits again: how many
/// failed before and are redone, and how many resume from their checkpoint.
pub(super) fn submitting_words(submitting: usize, resumed: usize, redone: usize) -> String {
    let mut parts = Vec::new();
    if redone > 0 {
        parts.push(format!("{redone} failed before, redone"));
    }
    if resumed > 0 {
        parts.push(format!("{resumed} resume{} from {} checkpoint", if resumed == 1 { "s" } else { "" }, if resumed == 1 { "its" } else { "their" }));
    }
    if parts.is_empty() { format!("submitting {submitting}") } else { format!("submitting {submitting} ({})", parts.join("; ")) }
}

/// Which budget a resubmission of the run would count against; `None` for runs drover does
/// not resubmit: live, completed, cancelled, and failed because the job spent its time-limit or
/// preemption budget (its `exit.json` says which, by the job's own count: a run's SIGTERM
/// stops of earlier submissions, such as `drover cancel`s, are not counted against it). Those
/// keep their checkpoint and metrics; a failure retry would start them over and stop them the
/// same way.
pub(super) fn retry_kind(st: &RunStatus) -> Option<RetryKind> {
    match st.state {
        RunState::Failed if st.spent_budget.is_some() => None,
        RunState::Failed => Some(RetryKind::Failed),
        RunState::TimedOut => Some(RetryKind::TimedOut),
        RunState::Preempted => Some(RetryKind::Preempted),
        _ => None,
    }
}

/// Whether a rerun of the sweep continues the run from its checkpoint rather than starting it
/// over: stopped runs (cancelled, timed out, preempted), and runs the job failed at a
/// checkpointed stop because a time-limit or preemption budget was spent, whose work so far is
/// sound (after a longer `slurm.time` or a larger budget they finish; with neither, they stop
/// again within one attempt). Judged from the files, not from the budgets now in the sweep
/// file: raising a budget is exactly what the user does before such a rerun.
pub(super) fn resumes_on_rerun(state: RunState, failed_at_stop: bool) -> bool {
    // Not submitted: never submitted (nothing to resume), or held back by a submit limit or not
    // reached by its packed task after whoever submitted it last got it ready: its checkpoint,
    // if any, is the work so far.
    state.stopped_from_outside() || state == RunState::NotSubmitted || (state == RunState::Failed && failed_at_stop)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::slurm::ledger::LedgerEvent;
    use crate::backend::slurm::test_support::{intent, sweep_plan};
    use crate::layout::{EXIT_JSON, INTERRUPTIONS_JSONL};

    /// A run the job failed because it used up its time-limit or preemption budget is not
    /// retried (from scratch, it would stop the same way and its checkpoint would be set
    /// aside); other failures are, and timed-out or preempted runs count on their own budgets.
    /// The job's own judgement decides, not the run's lifetime stops: a run stopped by twelve
    /// `drover cancel`s that then crashed is retried like any crash.
    #[test]
    fn a_run_that_spent_its_interruption_budget_is_not_retried() {
        let st = |state, preemptions, spent: Option<&str>| RunStatus {
            preemptions,
            spent_budget: spent.map(str::to_string),
            ..crate::status::tests::run_status("0123456789abcdef", state)
        };
        let cases = [
            (st(RunState::Failed, 0, Some("max_timeouts")), None),
            (st(RunState::Failed, 3, Some("max_preemptions")), None),
            (st(RunState::Failed, 12, None), Some(RetryKind::Failed)),
            (st(RunState::Failed, 0, None), Some(RetryKind::Failed)),
            (st(RunState::TimedOut, 0, None), Some(RetryKind::TimedOut)),
            (st(RunState::Preempted, 2, None), Some(RetryKind::Preempted)),
            (st(RunState::Cancelled, 0, None), None),
            (st(RunState::Done, 0, None), None),
            (st(RunState::Running, 0, None), None),
            (st(RunState::Unknown, 0, None), None),
        ];
        for (run, expected) in cases {
            assert_eq!(retry_kind(&run), expected, "{:?} {} {:?}", run.state, run.preemptions, run.spent_budget);
        }
    }

    /// A rerun resumes stopped runs and runs failed at a checkpointed stop (a spent budget, seen
    /// in the files whatever the budgets are now); a run that failed after training past its
    /// last stop, or without a checkpoint, starts over.
    #[test]
    fn a_rerun_resumes_a_run_that_failed_at_a_checkpointed_stop() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let run = tmp.path();
        let write = |name: &str, text: &str| std::fs::write(run.join(name), text).expect("write");
        let rows = |last: u64| (1..=last).map(|i| format!("{{\"iteration\":{i},\"global_step\":{}}}\n", i * 1024)).collect::<String>();
        write(INTERRUPTIONS_JSONL, "{\"reason\":\"time_limit\",\"iteration\":3}\n{\"reason\":\"time_limit\",\"iteration\":7}\n");
        write("metrics.jsonl", &rows(7));
        assert!(!failed_at_a_stop(run), "no checkpoint");
        write(CHECKPOINT_JSON, "{}");
        assert!(failed_at_a_stop(run), "stopped at its last row");
        write("metrics.jsonl", &rows(9));
        assert!(!failed_at_a_stop(run), "trained past its last stop, then failed");
        std::fs::remove_file(run.join(INTERRUPTIONS_JSONL)).expect("rm");
        assert!(!failed_at_a_stop(run), "never stopped");

        assert!(resumes_on_rerun(RunState::Failed, true) && !resumes_on_rerun(RunState::Failed, false));
        for state in [RunState::Cancelled, RunState::TimedOut, RunState::Preempted] {
            assert!(resumes_on_rerun(state, false), "{state:?}");
        }
        // Held back by a submit limit, or not reached by its packed task, after an earlier
        // array stopped it: its checkpoint is the work so far (a run never submitted has none).
        assert!(resumes_on_rerun(RunState::NotSubmitted, false));
        assert!(!resumes_on_rerun(RunState::Unknown, false));
    }

    /// Review finding (Slurm user): a rerun resubmitted failed runs without a word, so a cron
    /// loop of `drover run --no-wait` seemed to retry them for ever past `max_retries`. A rerun
    /// does redo them (the user's request), and its first line counts them apart from the runs
    /// that resume.
    #[test]
    fn a_rerun_says_how_many_failed_runs_it_redoes() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let plan = sweep_plan(tmp.path(), "", "").expect("plan");
        let root = plan.results.root().to_path_buf();
        let ids: Vec<String> = plan.runs.iter().map(|r| r.run_id.to_string()).collect();
        let mut ledger = Ledger::load(&root).expect("empty ledger");
        ledger.append(intent(0, ids.clone(), None, None)).expect("intent");
        ledger.append(LedgerEvent::Submitted { submission: 0, job_id: "77".into() }).expect("submitted");
        // Run 0 failed after spending its `max_retries` (2): a rerun redoes it all the same.
        for _ in 0..2 {
            ledger.append(LedgerEvent::Retry { run_id: ids[0].clone(), retry: RetryKind::Failed, reason: "boom".into() }).expect("retry");
        }
        assert_eq!(plan.sweep.slurm.max_retries, 2);
        // Run 1 was stopped from outside and kept its checkpoint.
        for (i, status) in [(0, "failed"), (1, "cancelled")] {
            let run = root.join("runs").join(&ids[i]);
            std::fs::create_dir_all(&run).expect("mkdir");
            let line = format!(r#"{{"format_version":1,"attempt":1,"slurm_job_id":"8{i}","array_job_id":"77","array_task_id":"{i}"}}"#);
            std::fs::write(run.join("attempts.jsonl"), line + "\n").expect("attempts");
            let exit = serde_json::json!({"format_version": 1, "run_id": ids[i], "status": status, "reason": "boom"});
            std::fs::write(run.join(EXIT_JSON), exit.to_string()).expect("marker");
        }
        std::fs::write(root.join("runs").join(&ids[1]).join(CHECKPOINT_JSON), "{}").expect("checkpoint");
        let dir = SweepDir { root: root.clone(), name: plan.sweep.name.clone(), runs: plan.runs.iter().map(|r| r.run_id.clone()).collect(), job_name: "j".into() };
        let prepared = prepare_runs(&plan, &dir, &ledger, &[], &plan.sweep.slurm).expect("prepared");
        assert_eq!((prepared.to_submit.len(), prepared.redone, prepared.resumed), (2, 1, 1));
        assert_eq!(submitting_words(2, prepared.resumed, prepared.redone), "submitting 2 (1 failed before, redone; 1 resumes from its checkpoint)");
        assert_eq!(submitting_words(3, 0, 0), "submitting 3");
        assert_eq!(submitting_words(3, 2, 0), "submitting 3 (2 resume from their checkpoint)");
    }
}
