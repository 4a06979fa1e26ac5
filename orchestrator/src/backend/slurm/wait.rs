//! The waiting half of `drover run --backend slurm` ([`Waiter`]): one `squeue` a poll until
//! every run has ended, resubmitting failed runs within their budgets, submitting runs that
//! waited for room under a submit limit, and stopping the sweep when it cannot end well
//! (`slurm.after` that can never hold, `slurm.fail_fast`, a `drover cancel` from elsewhere).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::backend::slurm_cmd::QueueEntry;
use crate::backend::slurm_config::Resources;
use crate::config::{RunId, RunSpec};
use crate::error::RunError;
use crate::status::{RunState, RunStatus};

use super::after::never_satisfied;
use super::job_files::failed_at_a_stop;
use super::ledger::{Ledger, LedgerEvent, RetryKind};
use super::plan::{run_resources, sweep_throttle};
use super::rerun::{retry_kind, task_live};
use super::run::SlurmReport;
use super::status::{status_report, statuses_reusing};
use super::submit::{Breaker, Submitter, WaitingRoom, ready_run_dir, stop_failing_sweep, stop_sweep};
use super::sweep_dir::SweepDir;
use super::throttle::{live_per_array, mark_lifted, retry_slots, share_free_slots_remembered};

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

/// Where the first round of submission left the sweep: what the waiting starts from.
pub(super) struct FirstRound {
    /// The ledger as the first round left it.
    pub(super) ledger: Ledger,
    /// The throttles drover has set on the sweep's arrays (`throttles_set`).
    pub(super) raised: BTreeMap<String, u32>,
    /// Runs the submit limit held back.
    pub(super) waiting_room: WaitingRoom,
    /// The report so far.
    pub(super) report: SlurmReport,
}

/// What one look at the queue found.
enum Look {
    /// The queue's entries of the sweep's job name.
    Queue(Vec<QueueEntry>),
    /// The controller did not answer: look again (after backing off).
    Again,
    /// A stop signal came while backing off.
    Stopped,
}

/// A waiting `drover run`: the state it carries from poll to poll.
pub(super) struct Waiter<'a> {
    submitter: &'a Submitter<'a>,
    dir: &'a SweepDir,
    /// Set by SIGINT/SIGTERM/SIGHUP: the waiting stops, the jobs go on.
    stop: &'a AtomicBool,
    ledger: Ledger,
    raised: BTreeMap<String, u32>,
    waiting_room: WaitingRoom,
    report: SlurmReport,
    poll: Duration,
    /// The sweep's runs by id.
    runs: BTreeMap<String, &'a RunSpec>,
    /// The last counts line printed (printed again only when it changes).
    last_counts: String,
    /// Runs said to have spent a budget (said once).
    spent_budget: BTreeSet<String>,
    /// Since when the controller has not answered.
    outage: Option<Instant>,
    /// Polls in a row that found the controller unavailable: the wait between them doubles.
    unanswered: u32,
    /// Runs found done, whose files are not read again (`statuses_reusing`).
    finished: BTreeMap<RunId, RunStatus>,
    /// Runs already said to wait for a person (held, or asking for too much).
    stuck: BTreeSet<String>,
    breaker: Breaker,
    /// `drover cancel`s in the ledger when the waiting began: one more means a `drover cancel`
    /// from another terminal, after which nothing more is submitted.
    cancels_before: usize,
    cancel_seen: bool,
}

impl<'a> Waiter<'a> {
    /// Starts waiting where the first round left the sweep.
    pub(super) fn new(submitter: &'a Submitter<'a>, dir: &'a SweepDir, stop: &'a AtomicBool, first: FirstRound) -> Self {
        let plan = submitter.plan;
        Waiter {
            submitter,
            dir,
            stop,
            cancels_before: first.ledger.user_cancels,
            ledger: first.ledger,
            raised: first.raised,
            waiting_room: first.waiting_room,
            report: first.report,
            poll: Duration::from_secs_f64(plan.sweep.slurm.poll_seconds),
            runs: plan.runs.iter().map(|r| (r.run_id.to_string(), r)).collect(),
            last_counts: String::new(),
            spent_budget: BTreeSet::new(),
            outage: None,
            unanswered: 0,
            finished: BTreeMap::new(),
            stuck: BTreeSet::new(),
            breaker: Breaker::default(),
            cancel_seen: false,
        }
    }

    /// Polls until every run has ended (or a stop signal ends the waiting). A poll that stops
    /// the sweep, submits held-back runs or resubmits failed ones looks at the queue again at
    /// once rather than settling on what it saw before.
    pub(super) fn wait(mut self) -> Result<SlurmReport, RunError> {
        loop {
            let t0 = Instant::now();
            // Read again each poll: `drover cancel` in another terminal appends to it.
            self.ledger = Ledger::load(&self.dir.root)?;
            let mut queue = match self.look(t0)? {
                Look::Queue(queue) => queue,
                Look::Again => continue,
                Look::Stopped => return Ok(self.interrupted()),
            };
            self.notice_cancel()?;
            let opts = self.submitter.opts;
            let lifted = share_free_slots_remembered(&self.dir.root, &mut self.ledger, &queue, &opts.slurm, &mut self.raised);
            mark_lifted(&mut queue, &lifted);
            let now = statuses_reusing(self.dir, &self.ledger, Some(&queue), &mut self.finished);
            let throttle = sweep_throttle(self.submitter.plan);
            // Counted from the queue, as `round_limits` counts them: a task Slurm still lists as
            // running holds its slot even when its run has just written `exit.json`.
            let live = live_per_array(&self.ledger, &queue);
            let live_now = live.values().sum::<usize>();
            // Before the waiting room: runs submitted now would wait forever too.
            if self.stop_if_never_satisfied(&queue)? || self.submit_waiting(throttle, &live, live_now)? || self.stop_if_failing(&now, &queue)? {
                continue;
            }
            let (retry, held_back) = self.retries(&now, retry_slots(throttle, live_now))?;
            if !retry.is_empty() {
                // Every run of it fits in a free slot; together with the live runs (whose number
                // only falls) the sweep stays within its throttle.
                // One run per task: a retry is rarely in company, and has the task to itself.
                let round = self.submitter.submit(&mut self.ledger, &retry, 1, throttle, &live)?;
                self.waiting_room.took(&mut self.report, &retry, round, live_now, &opts.slurm)?;
                continue;
            }
            if self.settled(now, held_back) {
                return Ok(self.report);
            }
            if self.stopped_within(t0, self.poll, Duration::from_millis(50).min(self.poll)) {
                return Ok(self.interrupted());
            }
        }
    }

    fn quiet(&self) -> bool {
        self.submitter.opts.quiet
    }

    fn interrupted(mut self) -> SlurmReport {
        self.report.interrupted = true;
        self.report
    }

    /// Sleeps in `step`s until `wait` has passed since `t0`: `true` when a stop signal came,
    /// checked once more after the last sleep (the loop this came from went on to a whole poll
    /// after the outage back-off, submitting after a Ctrl-C of its last 50 ms).
    fn stopped_within(&self, t0: Instant, wait: Duration, step: Duration) -> bool {
        while t0.elapsed() < wait {
            if self.stop.load(Ordering::Relaxed) {
                return true;
            }
            std::thread::sleep(step);
        }
        self.stop.load(Ordering::Relaxed)
    }

    /// One `squeue`. The controller may be down for a while (a restart, a failover): the jobs go
    /// on, so the waiting goes on too, rather than leaving nobody to retry and raise throttles,
    /// for up to [`outage_tolerance`].
    fn look(&mut self, t0: Instant) -> Result<Look, RunError> {
        let slurm = &self.submitter.opts.slurm;
        match slurm.queue(&self.dir.job_name, self.ledger.submitter()) {
            Ok(queue) => {
                self.unanswered = 0;
                if let Some(since) = self.outage.take() {
                    if !self.quiet() {
                        crate::say!("drover: Slurm answers again after {:.0} s", since.elapsed().as_secs_f64());
                    }
                }
                Ok(Look::Queue(queue))
            }
            Err(e) if e.is_unavailable() => {
                let tolerance = outage_tolerance();
                let quiet = self.quiet();
                let since = *self.outage.get_or_insert_with(|| {
                    if !quiet {
                        crate::say!("drover: warning: Slurm does not answer ({e}); the jobs go on, and this waits up to {} s for it", tolerance.as_secs());
                    }
                    Instant::now()
                });
                if since.elapsed() >= tolerance {
                    crate::say!("drover: Slurm did not answer for {} s; the jobs go on: `drover status` follows them and `drover run` re-attaches", tolerance.as_secs());
                    return Err(e.into());
                }
                self.unanswered += 1;
                let wait = outage_wait(self.poll, self.unanswered);
                Ok(if self.stopped_within(t0, wait, Duration::from_millis(50)) { Look::Stopped } else { Look::Again })
            }
            Err(e) => Err(e.into()),
        }
    }

    /// A `drover cancel` from another terminal while this waits: nothing more is submitted,
    /// and arrays this process submitted after the cancel looked at the queue are cancelled.
    fn notice_cancel(&mut self) -> Result<(), RunError> {
        if self.cancel_seen || self.ledger.user_cancels <= self.cancels_before {
            return Ok(());
        }
        self.cancel_seen = true;
        self.waiting_room = WaitingRoom::default();
        self.report.deferred = 0;
        if !self.quiet() {
            crate::say!("drover: the sweep was cancelled (`drover cancel`): nothing more is submitted or retried; waiting for its jobs to end");
        }
        let upto = self.ledger.cancelled_upto_latest.unwrap_or(u32::MAX);
        let late: Vec<String> = self.ledger.submissions.range(upto.saturating_add(1)..).filter_map(|(_, s)| s.job_id.clone()).collect();
        if let Some(&last) = self.ledger.submissions.keys().next_back().filter(|_| !late.is_empty()) {
            self.ledger.append(LedgerEvent::Cancelled { upto_submission: last, job_ids: Some(late.clone()), reason: None })?;
            if let Err(e) = self.submitter.opts.slurm.cancel(&late) {
                crate::say!("drover: warning: could not cancel arrays {} ({e}); `drover cancel` stops them", late.join(", "));
            }
        }
        Ok(())
    }

    /// Stops the sweep when a `slurm.after` term can never hold: `true` when it did.
    fn stop_if_never_satisfied(&mut self, queue: &[QueueEntry]) -> Result<bool, RunError> {
        if self.breaker.why.is_some() || self.cancel_seen {
            return Ok(false);
        }
        let Some((why, arrays)) = never_satisfied(&self.ledger, queue) else { return Ok(false) };
        self.waiting_room = WaitingRoom::default();
        self.report.deferred = 0;
        self.breaker.why = Some(why.clone());
        let cancelled = stop_sweep(&mut self.ledger, queue, &self.submitter.opts.slurm, &why, &arrays)?;
        if !self.quiet() {
            crate::say!(
                "drover: stopping the sweep: {why}; cancelled {}, the running ones go on. \
                 Name a job that can hold in `slurm.after` (or leave it out) and run `drover run` again: the cancelled runs are submitted again",
                crate::words::count(cancelled, "queued task")
            );
        }
        Ok(true)
    }

    /// Submits runs held back by a submit limit once jobs have ended: `true` when some were.
    fn submit_waiting(&mut self, throttle: Option<u32>, live: &BTreeMap<String, usize>, live_now: usize) -> Result<bool, RunError> {
        if !self.waiting_room.may_try(live_now) {
            return Ok(false);
        }
        let before = self.report.submitted;
        let tried = self.waiting_room.runs().to_vec();
        let packed = self.submitter.plan.sweep.slurm.runs_per_task as usize;
        let round = self.submitter.submit(&mut self.ledger, &tried, packed, throttle, live)?;
        self.waiting_room.took(&mut self.report, &tried, round, live_now, &self.submitter.opts.slurm)?;
        if self.report.submitted == before {
            return Ok(false);
        }
        if !self.quiet() {
            let limit = self.report.limit.as_deref().map_or_else(|| "Slurm's submit limit".to_string(), |l| crate::backend::slurm_cmd::submit_limit_words(l).0);
            crate::say!(
                "drover: submitted {} as room freed under {limit} ({} still wait)",
                crate::words::count(self.report.submitted - before, "more run"),
                self.waiting_room.runs().len()
            );
        }
        Ok(true)
    }

    /// `slurm.fail_fast`: stops a sweep whose first attempts all fail alike: `true` when it did.
    fn stop_if_failing(&mut self, now: &[RunStatus], queue: &[QueueEntry]) -> Result<bool, RunError> {
        let Some(limit) = self.submitter.plan.sweep.slurm.fail_fast.filter(|_| self.breaker.why.is_none()) else { return Ok(false) };
        let Some(why) = self.breaker.observe(now, limit) else { return Ok(false) };
        // The held-back runs would fail alike: they stay unsubmitted.
        self.waiting_room = WaitingRoom::default();
        self.report.deferred = 0;
        let cancelled = stop_failing_sweep(&mut self.ledger, queue, &self.submitter.opts.slurm, &why)?;
        if !self.quiet() {
            crate::say!(
                "drover: stopping the sweep: {why}; cancelled {}, the running ones go on. \
                 Fix the cause and run `drover run` again (or set `slurm.fail_fast = 0` to let every run try)",
                crate::words::count(cancelled, "queued task")
            );
        }
        Ok(true)
    }

    /// The runs to submit again now (at most `slots` of them, each with its resources), and
    /// whether any other was held back for want of a slot (its turn comes at a later poll; the
    /// sweep is not finished before it). Each retry is recorded in the ledger.
    fn retries(&mut self, now: &[RunStatus], slots: usize) -> Result<(Vec<(String, Resources)>, bool), RunError> {
        let plan = self.submitter.plan;
        let settings = &plan.sweep.slurm;
        let quiet = self.quiet();
        let mut retry = Vec::new();
        let mut held_back = false;
        for st in now {
            // A run that ended in a packed task held by Slurm waits on the task (`task_live`).
            let waits = st.slurm_reason.as_deref().filter(|r| (st.state == RunState::Pending || task_live(st)) && crate::status::waits_for_a_person(r));
            if let Some(reason) = waits {
                // Said once per run: the next polls find it the same.
                if !quiet && self.stuck.insert(st.run_id.clone()) {
                    crate::say!(
                        "drover: warning: run {} ({}) {}; this `drover run` waits on (Ctrl-C stops waiting, the jobs go on)",
                        st.run_id,
                        st.label,
                        crate::status::pending_reason_words(reason)
                    );
                }
            }
            if self.waiting_room.holds(&st.run_id) || self.breaker.why.is_some() || self.cancel_seen {
                continue;
            }
            if st.state == RunState::NotSubmitted && st.submissions > 0 {
                // Not reached by its packed task: submitted again as it was, spending no retry.
                if retry.len() >= slots {
                    held_back = true;
                } else if let Some(run) = self.runs.get(&st.run_id) {
                    ready_run_dir(plan, run, true)?;
                    if !quiet {
                        crate::say!("drover: run {} ({}) was not reached by its array task; submitting it again", st.run_id, st.label);
                    }
                    retry.push((st.run_id.clone(), run_resources(settings, run)));
                }
                continue;
            }
            let Some(kind) = retry_kind(st) else {
                if st.state == RunState::Failed && self.spent_budget.insert(st.run_id.clone()) && !quiet {
                    let remedy = if st.spent_budget.as_deref() == Some("max_timeouts") {
                        "a longer `slurm.time` or a larger `slurm.max_timeouts`"
                    } else {
                        "a larger `slurm.max_preemptions`"
                    };
                    crate::say!(
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
            if st.submissions == 0 || self.ledger.retries_of(&st.run_id, kind) >= budget {
                continue;
            }
            if retry.len() >= slots {
                held_back = true;
                continue;
            }
            let reason = st.reason.clone().unwrap_or_default();
            let nth = self.ledger.retries_of(&st.run_id, kind) + 1;
            self.ledger.append(LedgerEvent::Retry { run_id: st.run_id.clone(), retry: kind, reason: reason.clone() })?;
            if let Some(run) = self.runs.get(&st.run_id) {
                // A failure that trained nothing past a checkpointed stop (a requeue that landed
                // on a node with no build for it, a crash before the first iteration) keeps
                // the work so far, as a rerun of the sweep would (`resumes_on_rerun`).
                let keeps = kind != RetryKind::Failed || failed_at_a_stop(&self.dir.run_dir(&run.run_id));
                let resumes = ready_run_dir(plan, run, keeps)?;
                if !quiet {
                    let how = if resumes { "resuming from its checkpoint" } else { "starting over" };
                    crate::say!(
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
        Ok((retry, held_back))
    }

    /// Prints the counts when they changed and keeps the status in the report: `true` when
    /// every run has settled and nothing waits to be submitted.
    fn settled(&mut self, now: Vec<RunStatus>, held_back: bool) -> bool {
        let status = status_report(self.dir, now);
        let counts: Vec<String> = status.counts.iter().map(|(s, n)| format!("{n} {}", s.as_str())).collect();
        let counts = counts.join(", ");
        if !self.quiet() && counts != self.last_counts {
            crate::say!("drover: {counts}");
            self.last_counts = counts;
        }
        // A retry held back for want of a slot keeps the loop going: the slot may be held only
        // by a task Slurm still lists after its run wrote `exit.json` (every run then looks
        // finished, and returning would drop the retry).
        // A stopped sweep leaves its held-back runs unsubmitted.
        let stopped = self.breaker.why.is_some() || self.cancel_seen;
        let settled = |r: &RunStatus| !r.state.is_live() && (r.state != RunState::NotSubmitted || stopped);
        let finished = !held_back && self.waiting_room.runs().is_empty() && status.runs.iter().all(settled);
        self.report.status = Some(status);
        finished
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
