//! `drover run --backend slurm` (`run_sweep`): prepare and submit, then, with `wait`, poll
//! until every run has ended, retrying within the budgets.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::backend::slurm_cmd::Slurm;
use crate::error::RunError;
use crate::layout;
use crate::plan::Plan;
use crate::status::{RunState, RunStatus, StatusReport};

use super::io_err;
use super::after::{changed_after_warning, never_satisfied};
use super::job_files::failed_at_a_stop;
use super::ledger::{Ledger, LedgerEvent, RetryKind};
use super::plan::{max_array, run_resources, sweep_throttle};
use super::provenance::provenance;
use super::rerun::{PreparedRuns, prepare_runs, retry_kind, submitting_words, task_live};
use super::status::{status_report, statuses_reusing};
use super::submit::{Breaker, Submitter, WaitingRoom, ready_run_dir, stop_failing_sweep, stop_sweep};
use super::sweep_dir::{SweepDir, job_name};
use super::throttle::{live_per_array, mark_lifted, retry_slots, share_free_slots_remembered, sharing_words, throttles_set};

/// Options of `drover run --backend slurm`.
#[derive(Debug, Clone)]
pub struct SlurmOptions {
    /// The `drover-job` binary the batch script runs (absolute).
    pub job_bin: PathBuf,
    /// Wait for the sweep to finish (retrying failed runs), or return once submitted.
    pub wait: bool,
    /// How to reach Slurm.
    pub slurm: Slurm,
    /// Progress lines go here (stderr in the CLI).
    pub quiet: bool,
}

/// What `run_sweep` did.
#[derive(Debug, Clone, Default)]
pub struct SlurmReport {
    /// Runs skipped because they had completed.
    pub skipped: usize,
    /// Runs found queued or running and watched instead of submitted.
    pub attached: usize,
    /// Runs submitted by this call (retries included).
    pub submitted: usize,
    /// Job ids of the arrays submitted by this call.
    pub job_ids: Vec<String>,
    /// The final status (when waiting), or the status right after submission.
    pub status: Option<StatusReport>,
    /// Set when a SIGINT/SIGTERM stopped the waiting (the jobs go on).
    pub interrupted: bool,
    /// Runs not submitted (yet) because Slurm's submit limit refused them: a waiting
    /// `drover run` submits them as jobs end; after `--no-wait` or Ctrl-C, `drover run` again.
    pub deferred: usize,
    /// Seconds from the start of `run_sweep` until the last array of the first round was
    /// accepted (run directories, specs, scripts, ledger, Slurm calls): what the submission
    /// benchmark compares.
    pub submit_seconds: f64,
}

/// How long a waiting `drover run` goes on asking a Slurm that does not answer: 15 minutes,
/// or `DROVER_SLURM_OUTAGE_S` seconds.
pub(super) fn outage_tolerance() -> Duration {
    std::env::var("DROVER_SLURM_OUTAGE_S").ok().and_then(|s| s.parse().ok()).map_or(Duration::from_secs(900), Duration::from_secs)
}

/// How long a waiting `drover run` waits after the `n`-th poll in a row that found the
/// controller unavailable: the poll interval (at least 1 s) doubled each time, up to a minute,
/// so that every waiting `drover run` does not press a restarting controller at its poll rate.
pub(super) fn outage_wait(poll: Duration, n: u32) -> Duration {
    let doubled = poll.max(Duration::from_secs(1)).saturating_mul(1 << n.saturating_sub(1).min(16));
    doubled.min(Duration::from_secs(60).max(poll))
}

/// `drover run --backend slurm`: skip completed runs, re-attach to live ones, submit the rest
/// as job arrays; then (with `wait`) poll until every run has ended, resubmitting within the
/// retry budgets.
pub fn run_sweep(plan: &Plan, opts: &SlurmOptions) -> Result<SlurmReport, RunError> {
    let started = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    // SIGHUP too (unless ignored, as under nohup): a closed terminal stops the waiting, and
    // the jobs go on.
    for sig in crate::backend::stop_signals().map_err(RunError::Signals)? {
        signal_hook::flag::register(sig, Arc::clone(&stop)).map_err(RunError::Signals)?;
    }
    let runs_dir = plan.results.runs_dir();
    std::fs::create_dir_all(&runs_dir).map_err(io_err("create directory", &runs_dir))?;
    let root = plan.results.root().canonicalize().map_err(io_err("resolve", plan.results.root()))?;
    let plan = &Plan { results: layout::ResultsDir::new(&root), ..plan.clone() };
    crate::backend::prepare::write_sweep_files(plan, &root)?;
    let settings = &plan.sweep.slurm;
    let (job_name, token) = job_name(&plan.sweep.name, &root);
    let dir = SweepDir { root: root.clone(), name: plan.sweep.name.clone(), runs: plan.runs.iter().map(|r| r.run_id.clone()).collect(), job_name: job_name.clone() };
    let mut ledger = Ledger::load(&root)?;
    // Submissions whose sbatch outcome was never recorded: find them in the queue by comment.
    if !ledger.dangling().is_empty() {
        let queue = opts.slurm.queue(&job_name, ledger.submitter())?;
        for n in ledger.find_dangling(&queue, &token, true) {
            ledger.append(LedgerEvent::Refused { submission: n, message: "not found in the queue: never submitted".into() })?;
        }
    }
    // Subprocess waits (git, scontrol, squeue) overlap with each other and with preparing the
    // run directories.
    let (provenance, max_array, prepared) = std::thread::scope(|scope| {
        let provenance = scope.spawn(|| provenance(plan));
        let max_array = scope.spawn(|| max_array(settings, &opts.slurm));
        let prepared = (|| {
            // A sweep with no submission yet has nothing in the queue to ask about.
            let queue = if ledger.submissions.is_empty() { Vec::new() } else { opts.slurm.queue(&job_name, ledger.submitter())? };
            prepare_runs(plan, &dir, &ledger, &queue, settings).map(|prepared| (prepared, queue))
        })();
        let panicked = || RunError::Io { action: "ask Slurm for MaxArraySize", path: root.clone(), source: std::io::Error::other("thread panicked") };
        (provenance.join().unwrap_or_default(), max_array.join().unwrap_or_else(|_| Err(panicked())), prepared)
    });
    let (PreparedRuns { to_submit, skipped, attached, resumed, redone }, queue) = prepared?;
    // Runs of earlier `drover run`s still live share the sweep's throttle with the new arrays.
    let mut raised = throttles_set(&root);
    share_free_slots_remembered(&root, &mut ledger, &queue, &opts.slurm, &mut raised);
    let older = live_per_array(&ledger, &queue);
    if let Some(warning) = changed_after_warning(&ledger, &queue, &settings.after).filter(|_| !opts.quiet) {
        eprintln!("drover: warning: {warning}");
    }
    tracing::debug!(elapsed = ?started.elapsed(), "run directories ready");
    let specs = plan.runs.iter().map(|r| (r.run_id.to_string(), plan.job_spec(r))).collect();
    let submitter = Submitter {
        plan,
        root: root.clone(),
        job_name: job_name.clone(),
        token,
        opts,
        provenance,
        max_array: max_array?,
        specs,
        room: std::cell::Cell::new(None),
    };

    let mut report = SlurmReport { skipped, attached, ..SlurmReport::default() };
    if !opts.quiet {
        // Whether stopped runs start over is the first thing a user rerunning a sweep asks.
        eprintln!(
            "drover: sweep `{}`: {}: {} completed, {} queued or running (re-attached), {} -> {}",
            plan.sweep.name,
            crate::words::count(plan.runs.len(), "run"),
            report.skipped,
            report.attached,
            submitting_words(to_submit.len(), resumed, redone),
            root.display()
        );
    }
    let packed = settings.runs_per_task as usize;
    let round = submitter.submit(&mut ledger, &to_submit, packed, sweep_throttle(plan), &older)?;
    report.submit_seconds = started.elapsed().as_secs_f64();
    if let (false, Some(n)) = (opts.quiet, sweep_throttle(plan)) {
        for line in sharing_words(n, older.values().sum(), &round.arrays, opts.wait) {
            eprintln!("drover: {line}");
        }
    }
    let live_then = older.values().sum::<usize>();
    let mut waiting_room = WaitingRoom::default();
    waiting_room.took(&mut report, &to_submit, round, live_then, &opts.slurm)?;
    if !opts.quiet {
        if let Some(limit) = &waiting_room.limit {
            let rest = if opts.wait {
                "wait for room, and this `drover run` submits them as jobs end"
            } else {
                "are not submitted: `drover run` again (without --no-wait it waits and submits them as jobs end)"
            };
            eprintln!(
                "drover: warning: Slurm's submit limit ({limit}) took {} of {}; the other {} {rest}",
                report.submitted,
                crate::words::count(to_submit.len(), "run"),
                waiting_room.runs.len()
            );
        }
    }
    if !opts.wait {
        return Ok(report);
    }

    let poll = Duration::from_secs_f64(settings.poll_seconds);
    let axes: BTreeMap<String, &crate::config::RunSpec> = plan.runs.iter().map(|r| (r.run_id.to_string(), r)).collect();
    let mut last_counts = String::new();
    let mut spent_budget = BTreeSet::new();
    let mut outage: Option<Instant> = None;
    // Polls that found the controller unavailable in a row: the wait between them doubles.
    let mut unanswered = 0u32;
    let mut finished = BTreeMap::new();
    // Runs already said to wait for a person (held, or asking for too much).
    let mut stuck = BTreeSet::new();
    let mut breaker = Breaker::default();
    // A `drover cancel` from another terminal while this waits: nothing more is submitted.
    let cancels_before = ledger.user_cancels;
    let mut cancel_seen = false;
    loop {
        let t0 = Instant::now();
        // Read again each poll: `drover cancel` in another terminal appends to it.
        ledger = Ledger::load(&root)?;
        // The controller may be down for a while (a restart, a failover): the jobs go on, so
        // the waiting goes on too, rather than leaving nobody to retry and raise throttles.
        let mut queue = match opts.slurm.queue(&job_name, ledger.submitter()) {
            Ok(queue) => {
                unanswered = 0;
                if let Some(since) = outage.take() {
                    if !opts.quiet {
                        eprintln!("drover: Slurm answers again after {:.0} s", since.elapsed().as_secs_f64());
                    }
                }
                queue
            }
            Err(e) if e.is_unavailable() => {
                let tolerance = outage_tolerance();
                let since = *outage.get_or_insert_with(|| {
                    if !opts.quiet {
                        eprintln!("drover: warning: Slurm does not answer ({e}); the jobs go on, and this waits up to {} s for it", tolerance.as_secs());
                    }
                    Instant::now()
                });
                if since.elapsed() >= tolerance {
                    eprintln!("drover: Slurm did not answer for {} s; the jobs go on: `drover status` follows them and `drover run` re-attaches", tolerance.as_secs());
                    return Err(e.into());
                }
                unanswered += 1;
                let wait = outage_wait(poll, unanswered);
                while t0.elapsed() < wait {
                    if stop.load(Ordering::Relaxed) {
                        report.interrupted = true;
                        return Ok(report);
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        if !cancel_seen && ledger.user_cancels > cancels_before {
            cancel_seen = true;
            waiting_room = WaitingRoom::default();
            report.deferred = 0;
            if !opts.quiet {
                eprintln!("drover: the sweep was cancelled (`drover cancel`): nothing more is submitted or retried; waiting for its jobs to end");
            }
            // Arrays this process submitted after the cancel looked at the queue.
            let upto = ledger.cancelled_upto_latest.unwrap_or(u32::MAX);
            let late: Vec<String> = ledger.submissions.range(upto.saturating_add(1)..).filter_map(|(_, s)| s.job_id.clone()).collect();
            if let Some(&last) = ledger.submissions.keys().next_back().filter(|_| !late.is_empty()) {
                ledger.append(LedgerEvent::Cancelled { upto_submission: last, job_ids: Some(late.clone()), reason: None })?;
                if let Err(e) = opts.slurm.cancel(&late) {
                    eprintln!("drover: warning: could not cancel arrays {} ({e}); `drover cancel` stops them", late.join(", "));
                }
            }
        }
        let lifted = share_free_slots_remembered(&root, &mut ledger, &queue, &opts.slurm, &mut raised);
        mark_lifted(&mut queue, &lifted);
        let now = statuses_reusing(&dir, &ledger, Some(&queue), &mut finished);
        let mut retry = Vec::new();
        let throttle = sweep_throttle(plan);
        // Counted from the queue, as `round_limits` counts them: a task Slurm still lists as
        // running holds its slot even when its run has just written `exit.json`.
        let live = live_per_array(&ledger, &queue);
        let slots = retry_slots(throttle, live.values().sum());
        let live_now = live.values().sum::<usize>();
        // Before the waiting room: runs submitted now would wait forever too.
        if let Some((why, arrays)) = never_satisfied(&ledger, &queue).filter(|_| breaker.why.is_none() && !cancel_seen) {
            waiting_room = WaitingRoom::default();
            report.deferred = 0;
            breaker.why = Some(why.clone());
            let cancelled = stop_sweep(&mut ledger, &queue, &opts.slurm, &why, &arrays)?;
            if !opts.quiet {
                eprintln!(
                    "drover: stopping the sweep: {why}; cancelled {}, the running ones go on. \
                     Name a job that can hold in `slurm.after` (or leave it out) and run `drover run` again: the cancelled runs are submitted again",
                    crate::words::count(cancelled, "queued task")
                );
            }
            continue;
        }
        if waiting_room.may_try(live_now) {
            let before = report.submitted;
            let tried = waiting_room.runs.clone();
            let round = submitter.submit(&mut ledger, &tried, packed, throttle, &live)?;
            waiting_room.took(&mut report, &tried, round, live_now, &opts.slurm)?;
            if report.submitted > before {
                if !opts.quiet {
                    eprintln!(
                        "drover: submitted {} as room freed under Slurm's submit limit ({} still wait)",
                        crate::words::count(report.submitted - before, "more run"),
                        waiting_room.runs.len()
                    );
                }
                continue;
            }
        }
        if let Some(limit) = settings.fail_fast.filter(|_| breaker.why.is_none()) {
            if let Some(why) = breaker.observe(&now, limit) {
                // The held-back runs would fail alike: they stay unsubmitted.
                waiting_room = WaitingRoom::default();
                report.deferred = 0;
                let cancelled = stop_failing_sweep(&mut ledger, &queue, &opts.slurm, &why)?;
                if !opts.quiet {
                    eprintln!(
                        "drover: stopping the sweep: {why}; cancelled {}, the running ones go on. \
                         Fix the cause and run `drover run` again (or set `slurm.fail_fast = 0` to let every run try)",
                        crate::words::count(cancelled, "queued task")
                    );
                }
                continue;
            }
        }
        let mut held_back = false;
        for st in &now {
            // A run that ended in a packed task held by Slurm waits on the task (`task_live`).
            let waits = st.slurm_reason.as_deref().filter(|r| (st.state == RunState::Pending || task_live(st)) && crate::status::waits_for_a_person(r));
            if let Some(reason) = waits {
                // Said once per run: the next polls find it the same.
                if !opts.quiet && stuck.insert(st.run_id.clone()) {
                    eprintln!(
                        "drover: warning: run {} ({}) {}; this `drover run` waits on (Ctrl-C stops waiting, the jobs go on)",
                        st.run_id,
                        st.label,
                        crate::status::pending_reason_words(reason)
                    );
                }
            }
            if waiting_room.holds(&st.run_id) || breaker.why.is_some() || cancel_seen {
                continue;
            }
            if st.state == RunState::NotSubmitted && st.submissions > 0 {
                // Not reached by its packed task: submitted again as it was, spending no retry.
                if retry.len() >= slots {
                    held_back = true;
                } else if let Some(run) = axes.get(&st.run_id) {
                    ready_run_dir(plan, run, true)?;
                    if !opts.quiet {
                        eprintln!("drover: run {} ({}) was not reached by its array task; submitting it again", st.run_id, st.label);
                    }
                    retry.push((st.run_id.clone(), run_resources(settings, run)));
                }
                continue;
            }
            let Some(kind) = retry_kind(st) else {
                if st.state == RunState::Failed && spent_budget.insert(st.run_id.clone()) && !opts.quiet {
                    let remedy = if st.spent_budget.as_deref() == Some("max_timeouts") {
                        "a longer `slurm.time` or a larger `slurm.max_timeouts`"
                    } else {
                        "a larger `slurm.max_preemptions`"
                    };
                    eprintln!(
                        "drover: run {} ({}) failed: {}; not resubmitted, since it would stop the same way \
                         (with {remedy}, `drover run` again resumes it from its checkpoint)",
                        st.run_id,
                        st.label,
                        st.reason.as_deref().unwrap_or_default()
                    );
                }
                continue;
            };
            if task_live(st) {
                held_back = true;
                continue;
            }
            let budget = match kind {
                RetryKind::Failed => settings.max_retries,
                RetryKind::TimedOut => settings.max_timeouts,
                RetryKind::Preempted => settings.max_preemptions,
            };
            // Runs never submitted by this sweep's ledger (refused) are not ours to retry.
            if st.submissions == 0 || ledger.retries_of(&st.run_id, kind) >= budget {
                continue;
            }
            if retry.len() >= slots {
                // Its turn comes at a later poll; the sweep is not finished before it.
                held_back = true;
                continue;
            }
            let reason = st.reason.clone().unwrap_or_default();
            let nth = ledger.retries_of(&st.run_id, kind) + 1;
            ledger.append(LedgerEvent::Retry { run_id: st.run_id.clone(), retry: kind, reason: reason.clone() })?;
            if let Some(run) = axes.get(&st.run_id) {
                // A failure that trained nothing past a checkpointed stop (a requeue that landed
                // on a node with no build for it, a crash before the first iteration) keeps
                // the work so far, as a rerun of the sweep would (`resumes_on_rerun`).
                let keeps = kind != RetryKind::Failed || failed_at_a_stop(&dir.run_dir(&run.run_id));
                let resumes = ready_run_dir(plan, run, keeps)?;
                if !opts.quiet {
                    let how = if resumes { "resuming from its checkpoint" } else { "starting over" };
                    eprintln!(
                        "drover: run {} ({}) {}: {reason}; resubmitting, {how} ({} retry {nth} of {budget}, `slurm.{}`)",
                        st.run_id,
                        st.label,
                        st.state.as_str(),
                        kind.as_str(),
                        kind.budget_key()
                    );
                }
                retry.push((st.run_id.clone(), run_resources(settings, run)));
            }
        }
        if !retry.is_empty() {
            // Every run of it fits in a free slot; together with the live runs (whose number
            // only falls) the sweep stays within its throttle.
            // One run per task: a retry is rarely in company, and has the task to itself.
            let round = submitter.submit(&mut ledger, &retry, 1, throttle, &live)?;
            waiting_room.took(&mut report, &retry, round, live_now, &opts.slurm)?;
            continue;
        }
        let status = status_report(&dir, now);
        let counts: Vec<String> = status.counts.iter().map(|(s, n)| format!("{n} {}", s.as_str())).collect();
        let counts = counts.join(", ");
        if !opts.quiet && counts != last_counts {
            eprintln!("drover: {counts}");
            last_counts = counts;
        }
        // A retry held back for want of a slot keeps the loop going: the slot may be held only
        // by a task Slurm still lists after its run wrote `exit.json` (every run then looks
        // finished, and returning would drop the retry).
        // A stopped sweep leaves its held-back runs unsubmitted.
        let settled = |r: &RunStatus| !r.state.is_live() && (r.state != RunState::NotSubmitted || breaker.why.is_some() || cancel_seen);
        let finished = !held_back && waiting_room.runs.is_empty() && status.runs.iter().all(settled);
        report.status = Some(status);
        if finished {
            return Ok(report);
        }
        while t0.elapsed() < poll {
            if stop.load(Ordering::Relaxed) {
                report.interrupted = true;
                return Ok(report);
            }
            std::thread::sleep(Duration::from_millis(50).min(poll));
        }
        if stop.load(Ordering::Relaxed) {
            report.interrupted = true;
            return Ok(report);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// While the controller does not answer, the waits between polls double from the poll
    /// interval (at least 1 s) up to a minute, or the interval itself when that is longer.
    #[test]
    fn polls_of_an_unanswering_controller_back_off_to_a_minute() {
        let secs = |poll: f64| (1..=8).map(|n| outage_wait(Duration::from_secs_f64(poll), n).as_secs_f64()).collect::<Vec<_>>();
        assert_eq!(secs(0.5), [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0]);
        assert_eq!(secs(10.0), [10.0, 20.0, 40.0, 60.0, 60.0, 60.0, 60.0, 60.0]);
        assert_eq!(secs(120.0), [120.0; 8]);
        assert_eq!(outage_wait(Duration::from_secs(10), u32::MAX), Duration::from_secs(60));
    }
}
