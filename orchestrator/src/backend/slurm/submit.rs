//! Submitting arrays (`Submitter`: intent in the ledger before each `sbatch`, outcome after),
//! the waiting room of runs a submit limit kept out, and the `slurm.fail_fast` breaker that
//! stops a sweep failing before any training.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::backend::prepare::archive_partial;
use crate::backend::slurm_cmd::{QueueEntry, Slurm};
use crate::backend::slurm_config::Resources;
use crate::error::RunError;
use crate::layout::{self, CHECKPOINT_JSON, JobSpec, SPEC_JSON};
use crate::plan::Plan;
use crate::status::{RunState, RunStatus};

use super::{SLURM_DIR, io_err};
use super::ledger::{Ledger, LedgerEvent};
use super::plan::{ArrayPlan, plan_arrays, render};
use super::provenance::Provenance;
use super::run::{SlurmOptions, SlurmReport};
use super::throttle::{ArrayLimits, round_limits};

/// Submits the arrays, writing intent before and outcome after each `sbatch`.
pub(super) struct Submitter<'a> {
    pub(super) plan: &'a Plan,
    pub(super) root: PathBuf,
    pub(super) job_name: String,
    pub(super) token: String,
    pub(super) opts: &'a SlurmOptions,
    pub(super) provenance: Provenance,
    pub(super) max_array: usize,
    /// `spec.json` of every run, written into the tasks file.
    pub(super) specs: BTreeMap<String, JobSpec>,
    /// The largest array the cluster's submit limit last let in (`None` until one refused):
    /// see [`Submitter::submit`].
    pub(super) room: std::cell::Cell<Option<usize>>,
}

/// One array a round submitted, with the limits it got (`after` holding every job id it waits for).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct SubmittedArray {
    pub(super) job_id: String,
    pub(super) limits: ArrayLimits,
    /// How many runs it holds.
    pub(super) runs: usize,
    /// How many array tasks (`runs` when each task trains one run).
    pub(super) tasks: usize,
}

/// What one round of submission did: the arrays Slurm accepted, and the runs its submit limit
/// left for later.
#[derive(Debug, Default)]
pub(super) struct Round {
    /// The accepted arrays, in submission order.
    pub(super) arrays: Vec<SubmittedArray>,
    /// Runs not submitted because Slurm's submit limit refused even a one-task array; they
    /// wait for room (jobs of the user ending).
    pub(super) deferred: Vec<(String, Resources)>,
    /// The submit limit that refused them (`QOSMaxSubmitJobPerUserLimit`, ...), with the
    /// error to report should no job's end ever make room (`room_may_free`).
    pub(super) limit: Option<(String, RunError)>,
}

impl Round {
    /// How many runs the accepted arrays hold.
    pub(super) fn accepted(&self) -> usize {
        self.arrays.iter().map(|a| a.runs).sum()
    }
}

impl Submitter<'_> {
    /// Submits one round: the runs' arrays, sharing the sweep's `throttle` with the `older`
    /// arrays' live runs (`round_limits`).
    ///
    /// A cluster's submit limit (`MaxSubmitJobs`, counting every array task) refuses an array
    /// that would take the user past it; that is back-pressure, not a bad setting. The refused
    /// array is tried again at half its size, down to one task, and the runs that no piece got
    /// in are returned as deferred. Once a limit has been met, arrays are planned at most the
    /// size last accepted (`room`), doubling with each acceptance, so a sweep waiting for room
    /// costs Slurm one refused `sbatch`, not a halving from the full array, each time it looks.
    pub(super) fn submit(
        &self,
        ledger: &mut Ledger,
        runs: &[(String, Resources)],
        runs_per_task: usize,
        throttle: Option<u32>,
        older: &BTreeMap<String, usize>,
    ) -> Result<Round, RunError> {
        let logs = self.root.join(SLURM_DIR).join("logs");
        std::fs::create_dir_all(&logs).map_err(io_err("create directory", &logs))?;
        let mut round = Round::default();
        let mut todo = runs.to_vec();
        // Arrays accepted earlier in this round count as older arrays' live runs when the
        // rest is planned again (all their tasks are live: none has started).
        let mut older = older.clone();
        'plan: while !todo.is_empty() {
            let cap = self.room.get().map_or(self.max_array, |room| room.min(self.max_array));
            let mut arrays = plan_arrays(&todo, cap, runs_per_task);
            if self.room.get().is_some() {
                // One piece at a time, planned again after each: its share of the throttle is
                // dealt as if it were the round's only array, not a slice of one that may not fit.
                arrays.truncate(1);
            }
            let sizes: Vec<usize> = arrays.iter().map(ArrayPlan::tasks).collect();
            let first = round.arrays.len();
            for (array, mut limits) in arrays.into_iter().zip(round_limits(throttle, &older, &sizes)) {
                if limits.after_earlier {
                    limits.after.extend(round.arrays[first..].iter().map(|a| a.job_id.clone()));
                }
                match self.submit_array(ledger, &array, &limits)? {
                    Ok(job_id) => {
                        let accepted: BTreeSet<&str> = array.runs.iter().map(String::as_str).collect();
                        todo.retain(|(id, _)| !accepted.contains(id.as_str()));
                        round.arrays.push(SubmittedArray { job_id, limits, runs: array.runs.len(), tasks: array.tasks() });
                        if let Some(room) = self.room.get() {
                            // Room may have grown: plan the rest again with twice as much.
                            self.room.set(Some(room.saturating_mul(2).min(self.max_array)));
                            older.extend(round.arrays[first..].iter().map(|a| (a.job_id.clone(), a.tasks)));
                            continue 'plan;
                        }
                    }
                    Err((limit, _)) if array.tasks() > 1 => {
                        tracing::info!(tasks = array.tasks(), %limit, "submit limit: trying half as many");
                        self.room.set(Some(array.tasks() / 2));
                        older.extend(round.arrays[first..].iter().map(|a| (a.job_id.clone(), a.tasks)));
                        continue 'plan;
                    }
                    Err((limit, e)) => {
                        self.room.set(Some(1));
                        round.deferred = todo;
                        round.limit = Some((limit, self.refused(&array, e)));
                        return Ok(round);
                    }
                }
            }
            break;
        }
        Ok(round)
    }

    /// Submits one array: its tasks file and script, the intent before `sbatch` and the outcome
    /// after. `Ok(Err((limit, error)))` when Slurm's submit limit refused it; any other
    /// refusal is an error naming the sweep file and the array's resources.
    pub(super) fn submit_array(
        &self,
        ledger: &mut Ledger,
        array: &ArrayPlan,
        limits: &ArrayLimits,
    ) -> Result<Result<String, (String, crate::error::SlurmError)>, RunError> {
        let slurm_dir = self.root.join(SLURM_DIR);
        let n = ledger.next_submission();
        let script_name = format!("array-{n}.sbatch");
        let script = slurm_dir.join(&script_name);
        let tasks = slurm_dir.join(format!("array-{n}.tasks"));
        let mut tasks_text = String::new();
        for id in &array.runs {
            let spec = self
                .specs
                .get(id.as_str())
                .ok_or_else(|| RunError::Ledger { path: tasks.clone(), reason: format!("run {id} is not in the sweep") })?;
            let json = serde_json::to_string(spec).map_err(|source| RunError::Serialize { path: tasks.clone(), source })?;
            tasks_text.push_str(id);
            tasks_text.push('\t');
            tasks_text.push_str(&json);
            tasks_text.push('\n');
        }
        layout::write_atomic(&tasks, tasks_text.as_bytes()).map_err(io_err("write", &tasks))?;
        let text = render(self.plan, &self.root, &self.job_name, &self.token, n, &script_name, array, self.opts, limits);
        layout::write_atomic(&script, text.as_bytes()).map_err(io_err("write", &script))?;
        let comment = format!("drover:{}:{n}", self.token);
        ledger.append(LedgerEvent::Intent {
            submission: n,
            job_name: self.job_name.clone(),
            comment: comment.clone(),
            script: script_name.clone(),
            runs: array.runs.clone(),
            provenance: Box::new(self.provenance.clone()),
            throttle: limits.throttle,
            raise_to: limits.raise_to,
        })?;
        if array.runs_per_task > 1 {
            ledger.append(LedgerEvent::Packed { submission: n, runs_per_task: array.runs_per_task as u32 })?;
        }
        tracing::debug!("script and intent written; sbatch");
        match self.opts.slurm.submit(Path::new(&script_name), &slurm_dir, &self.job_name, &comment) {
            Ok(job_id) => {
                ledger.append(LedgerEvent::Submitted { submission: n, job_id: job_id.clone() })?;
                tracing::info!(job = %job_id, runs = array.runs.len(), script = %script.display(), "submitted");
                Ok(Ok(job_id))
            }
            Err(e) => {
                ledger.append(LedgerEvent::Refused { submission: n, message: e.to_string() })?;
                if let Some(limit) = e.submit_limit() {
                    return Ok(Err((limit, e)));
                }
                // Refused at once (not a timeout or an unreachable controller): the settings.
                if matches!(e, crate::error::SlurmError::Refused { .. }) && !e.is_unavailable() {
                    return Err(self.refused(array, e));
                }
                Err(e.into())
            }
        }
    }

    /// The error for an array `sbatch` refused: the sweep file, the setting Slurm's answer
    /// names when drover recognises it, and the array's resources.
    pub(super) fn refused(&self, array: &ArrayPlan, answer: crate::error::SlurmError) -> RunError {
        let lines = array.resources.sbatch_lines();
        let resources = if lines.is_empty() {
            "(none: the cluster's defaults)".to_string()
        } else {
            lines.iter().map(|l| format!("`{}`", l.trim_start_matches("#SBATCH "))).collect::<Vec<_>>().join(" ")
        };
        let named = match &answer {
            crate::error::SlurmError::Refused { stderr, .. } => crate::backend::slurm_cmd::setting_refused(stderr),
            _ => None,
        };
        let (settings, fix) = match named {
            Some(key) => (format!("at {key} (the array's settings: {resources})"), key.to_string()),
            None => (format!("with the `[slurm]` settings {resources}"), "the setting it names (`slurm.partition`, `account`, `qos`, `time`, `mem`, ...)".to_string()),
        };
        RunError::SbatchRefused { file: self.plan.sweep.source.clone(), settings, fix, answer: Box::new(answer) }
    }
}

/// Gets a run's directory ready for a (re)submission: a run with a checkpoint keeps its files
/// and resumes; any other unfinished run has its files moved to `attempt-<n>/` first. New runs
/// are left to the batch script. Returns whether the run will resume from its checkpoint.
pub(super) fn ready_run_dir(plan: &Plan, run: &crate::config::RunSpec, resume: bool) -> Result<bool, RunError> {
    let spec = plan.job_spec(run);
    let dir = plan.results.run_dir(&spec.run_id);
    if !dir.exists() {
        // A new run: the batch script creates its directory and `spec.json` from the tasks file.
        return Ok(false);
    }
    let spec_path = dir.join(SPEC_JSON);
    let bytes = serde_json::to_vec_pretty(&spec).map_err(|source| RunError::Serialize { path: spec_path.clone(), source })?;
    let resumes = resume && dir.join(CHECKPOINT_JSON).exists();
    if !resumes {
        archive_partial(&dir)?;
    }
    layout::write_atomic(&spec_path, &bytes).map_err(io_err("write", &spec_path))?;
    Ok(resumes)
}

/// How often a waiting `drover run` asks again for room under a submit limit when none of the
/// sweep's own jobs has ended (other jobs of the user may have).
pub(super) const ROOM_RETRY: Duration = Duration::from_secs(60);

/// Runs that Slurm's submit limit kept out (`Round::deferred`), waiting for room: new runs,
/// and retries whose `Retry` is already in the ledger (so a run waits here once, not once per
/// poll).
#[derive(Default)]
pub(super) struct WaitingRoom {
    /// The runs waiting, in the order they are tried again ([`WaitingRoom::runs`]).
    runs: Vec<(String, Resources)>,
    /// Their ids: [`WaitingRoom::holds`] is asked for every run at every poll, and a scan of
    /// `runs` made that runs × waiting runs.
    held: std::collections::HashSet<String>,
    /// The limit that refused them last.
    pub(super) limit: Option<String>,
    /// When the limit last refused, and how many of the sweep's tasks were live then.
    pub(super) refused: Option<(Instant, usize)>,
    /// Since when a group's or an account's limit has refused while nothing of this user's was
    /// queued: colleagues' jobs may make room, or the limit may be 0 (a blocked account), so
    /// the wait is bounded ([`GROUP_LIMIT_PATIENCE`]).
    pub(super) nothing_queued_since: Option<Instant>,
}

/// How long a group's or an account's submit limit is waited out while nothing of the user's
/// is queued, before its refusal is the error (`DROVER_SLURM_GROUP_WAIT_S` overrides).
pub(super) const GROUP_LIMIT_PATIENCE: Duration = Duration::from_secs(30 * 60);

pub(super) fn group_limit_patience() -> Duration {
    std::env::var("DROVER_SLURM_GROUP_WAIT_S").ok().and_then(|s| s.parse().ok()).map_or(GROUP_LIMIT_PATIENCE, Duration::from_secs)
}

impl WaitingRoom {
    /// Takes in what a round of the runs `tried` did, `live_before` of the sweep's tasks being
    /// live before it: its accepted arrays into the report, and which of `tried` wait here now
    /// (the round's deferred runs). A limit that refused even one task while nothing it counts
    /// is queued is not back-pressure: that refusal is the error.
    pub(super) fn took(&mut self, report: &mut SlurmReport, tried: &[(String, Resources)], round: Round, live_before: usize, slurm: &Slurm) -> Result<(), RunError> {
        let accepted = round.accepted();
        let accepted_tasks: usize = round.arrays.iter().map(|a| a.tasks).sum();
        report.submitted += accepted;
        report.job_ids.extend(round.arrays.into_iter().map(|a| a.job_id));
        let tried: BTreeSet<&str> = tried.iter().map(|(id, _)| id.as_str()).collect();
        self.runs.retain(|(id, _)| !tried.contains(id.as_str()));
        self.runs.extend(round.deferred);
        self.held = self.runs.iter().map(|(id, _)| id.clone()).collect();
        if let Some((limit, error)) = round.limit {
            let idle = accepted == 0 && nothing_queued(slurm, live_before);
            if idle && !counts_others(&limit) {
                return Err(error);
            }
            match (idle, self.nothing_queued_since) {
                (false, _) => self.nothing_queued_since = None,
                (true, None) => self.nothing_queued_since = Some(Instant::now()),
                (true, Some(since)) if since.elapsed() >= group_limit_patience() => return Err(error),
                (true, Some(_)) => {}
            }
            self.limit = Some(limit);
            self.refused = Some((Instant::now(), live_before + accepted_tasks));
        } else if self.runs.is_empty() {
            (self.limit, self.refused) = (None, None);
        }
        // Kept with `deferred`, so a report after later rounds names the limit now in force.
        report.deferred = self.runs.len();
        report.limit = self.limit.clone();
        Ok(())
    }

    /// Whether runs wait and room may have freed: fewer of the sweep's tasks are live than at
    /// the last refusal, or `ROOM_RETRY` has passed.
    pub(super) fn may_try(&self, live: usize) -> bool {
        !self.runs.is_empty() && self.refused.is_none_or(|(at, was)| live < was || at.elapsed() >= ROOM_RETRY)
    }

    /// Whether run `id` waits here.
    pub(super) fn holds(&self, id: &str) -> bool {
        self.held.contains(id)
    }

    /// The runs waiting here, in the order they are tried again.
    pub(super) fn runs(&self) -> &[(String, Resources)] {
        &self.runs
    }
}

/// `slurm.fail_fast`: a waiting `drover run` stops a sweep whose attempts fail before training
/// one iteration while no run of it has trained one: a broken setup (a plugin or library the
/// nodes cannot load, a bad build, a module not loaded) fails every run alike, and retrying
/// each of a few thousand runs is that many wasted jobs.
#[derive(Default)]
pub(super) struct Breaker {
    /// Array tasks (`<job>_<task>`) in which a run failed before its first iteration: one per
    /// attempt when a task trains one run; a task of several runs on a bad node counts once.
    pub(super) untrained: BTreeSet<String>,
    /// Whether any run has trained an iteration (then the setup works; the breaker stays off).
    pub(super) trained: bool,
    /// Why the sweep was stopped, once it was (by this breaker, or for a `slurm.after` dependency
    /// that can never hold).
    pub(super) why: Option<String>,
}

impl Breaker {
    /// Takes in one poll's statuses; returns why to stop when `limit` attempts have failed
    /// untrained and no run has trained.
    pub(super) fn observe(&mut self, now: &[RunStatus], limit: u32) -> Option<String> {
        self.trained |= now.iter().any(|st| st.progress.is_some());
        let mut latest = None;
        for st in now.iter().filter(|st| st.state == RunState::Failed && st.progress.is_none()) {
            let task = st.slurm_job.clone().unwrap_or_else(|| format!("{}#{}", st.run_id, st.submissions));
            if self.untrained.insert(task) {
                latest = Some(st);
            }
        }
        if self.trained || limit == 0 || self.untrained.len() < limit as usize {
            return None;
        }
        let st = latest.or_else(|| now.iter().find(|st| st.state == RunState::Failed && st.progress.is_none()))?;
        let log = match st.logs.last() {
            // A reason that quotes the stderr already need not quote it again.
            Some(l) if st.reason.as_deref().is_some_and(|r| r.contains("; its stderr ends: ")) => format!(", log `{}`", l.display()),
            Some(l) => match crate::backend::last_log_line(l) {
                Some(line) => format!("; its log `{}` ends: {line}", l.display()),
                None => format!(", log `{}`", l.display()),
            },
            // The batch script creates the attempt's logs as it starts `drover-job`.
            None => "; it left no log, so Slurm could not even start the batch script on the node: is the results \
                     directory on a filesystem the compute nodes mount? (`scontrol show job` says more while Slurm \
                     remembers the job)"
                .to_string(),
        };
        let why = format!(
            "{} failed before training one iteration and no run has trained one (`slurm.fail_fast = {limit}`), which points at the setup, not the runs; the latest, run {} ({}): {}{log}",
            crate::words::count(self.untrained.len(), "attempt"),
            st.run_id,
            st.label,
            st.reason.as_deref().unwrap_or("no reason recorded")
        );
        self.why = Some(why.clone());
        Some(why)
    }
}

/// Cancels the queued tasks of the sweep's arrays (`scancel --state=PENDING`; running ones go
/// on), recording why first so `drover status` tells them from a `drover cancel`. Returns how
/// many tasks were queued. A refused `scancel` is a warning: the sweep stops retrying anyway.
pub(super) fn stop_failing_sweep(ledger: &mut Ledger, queue: &[QueueEntry], slurm: &Slurm, why: &str) -> Result<usize, RunError> {
    stop_sweep(ledger, queue, slurm, why, &BTreeSet::new())
}

/// [`stop_failing_sweep`], recording `why` for the arrays `also` too (tasks Slurm cancelled
/// itself, whose runs status then explains the same way).
pub(super) fn stop_sweep(ledger: &mut Ledger, queue: &[QueueEntry], slurm: &Slurm, why: &str, also: &BTreeSet<String>) -> Result<usize, RunError> {
    let ours = ledger.accepted_jobs();
    let queued: Vec<&QueueEntry> = queue.iter().filter(|e| ours.contains(e.array_job_id.as_str()) && e.state == "PENDING").collect();
    let pending: BTreeSet<String> = queued.iter().map(|e| e.array_job_id.clone()).collect();
    let ids: Vec<String> = pending.union(also).cloned().collect();
    let Some(&upto) = ledger.submissions.keys().next_back() else { return Ok(0) };
    if ids.is_empty() {
        return Ok(0);
    }
    ledger.append(LedgerEvent::Cancelled { upto_submission: upto, job_ids: Some(ids.clone()), reason: Some(why.to_string()) })?;
    let pending: Vec<String> = pending.into_iter().collect();
    if pending.is_empty() {
        return Ok(0);
    }
    if let Err(e) = slurm.cancel_pending(&pending) {
        crate::say!("drover: warning: could not cancel the queued tasks ({e}); `drover cancel` stops them");
    }
    Ok(queued.len())
}

/// Whether nothing of this user's is queued whose end would make room under a submit limit:
/// neither the sweep's live tasks nor other jobs of the user. When the queue cannot be asked,
/// something is (waiting is the safer guess).
pub(super) fn nothing_queued(slurm: &Slurm, live: usize) -> bool {
    live == 0 && !slurm.user_has_jobs(crate::backend::slurm_cmd::current_uid()).unwrap_or(true)
}

/// Whether a submit limit counts other users' jobs too (a group's or an account's:
/// `GrpSubmitJobs`, `MaxSubmitJobsPerAccount`; the cluster's `MaxJobCount`), whose end this
/// user cannot see: waited out a while even with nothing of the user's queued.
pub(super) fn counts_others(limit: &str) -> bool {
    limit.contains("Grp") || limit.contains("PerAccount") || limit == crate::backend::slurm_cmd::JOB_COUNT_LIMIT
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::slurm::plan::run_resources;
    use crate::backend::slurm::test_support::{job_count_limited, seeds_plan, submit_limited};
    use crate::status::Progress;

    /// A submitter of `plan`'s sweep (job name `drover-limited`) through `opts`' stand-in Slurm.
    fn limited_submitter<'a>(plan: &'a Plan, opts: &'a SlurmOptions) -> Submitter<'a> {
        Submitter {
            plan,
            root: plan.results.root().to_path_buf(),
            job_name: "drover-limited".into(),
            token: "t".into(),
            opts,
            provenance: Provenance::default(),
            max_array: 1000,
            specs: plan.runs.iter().map(|r| (r.run_id.to_string(), plan.job_spec(r))).collect(),
            room: std::cell::Cell::new(None),
        }
    }

    /// Under a submit limit a refused array is tried at half its size, an accepted one lets
    /// the next try twice as many, and what no one-task array got in is deferred with the
    /// limit's name; the pieces share the sweep's throttle as one round would (a piece with no
    /// slot left waits for the earlier ones). The next round starts at the last room, not at
    /// the whole array.
    #[test]
    fn a_submit_limit_splits_the_round_and_defers_what_does_not_fit() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let plan = seeds_plan(tmp.path(), 7, 2);
        let root = plan.results.root().to_path_buf();
        std::fs::create_dir_all(root.join(SLURM_DIR)).expect("mkdir");
        let opts = SlurmOptions { job_bin: tmp.path().join("drover-job"), wait: true, slurm: submit_limited(tmp.path(), 5, 0), quiet: true };
        let submitter = limited_submitter(&plan, &opts);
        let runs: Vec<(String, Resources)> = plan.runs.iter().map(|r| (r.run_id.to_string(), run_resources(&plan.sweep.slurm, r))).collect();
        let mut ledger = Ledger::load(&root).expect("ledger");
        let round = submitter.submit(&mut ledger, &runs, 1, Some(2), &BTreeMap::new()).expect("a limit is no error");
        // 7 refused, 3 in; room 6: 4 refused, 2 in; room 4: 2 refused, 1 refused.
        let sizes: Vec<(usize, bool)> = ledger.submissions.values().map(|s| (s.runs.len(), s.job_id.is_some())).collect();
        assert_eq!(sizes, [(7, false), (3, true), (4, false), (2, true), (2, false), (1, false)]);
        assert_eq!(round.accepted(), 5);
        assert_eq!(round.deferred.iter().map(|(id, _)| id.as_str()).collect::<Vec<_>>(), [runs[5].0.as_str(), runs[6].0.as_str()]);
        assert_eq!(round.limit.as_ref().map(|(l, _)| l.as_str()), Some("QOSMaxSubmitJobPerUserLimit"));
        assert_eq!(round.arrays[0].limits.throttle, Some(2));
        assert_eq!(round.arrays[1].limits.after, ["100"], "the throttle is full: the second piece waits for the first");
        let second = std::fs::read_to_string(root.join(SLURM_DIR).join("array-3.sbatch")).expect("script");
        assert!(second.contains("#SBATCH --array=0-1%2\n#SBATCH --dependency=afterany:100\n"), "{second}");
        let refused = &ledger.submissions[&5];
        assert!(refused.refused.as_deref().is_some_and(|m| m.contains("QOSMaxSubmitJobPerUserLimit")), "{refused:?}");

        // Still full: the next round costs one refused one-task array.
        let before = ledger.submissions.len();
        let again = submitter.submit(&mut ledger, &round.deferred, 1, Some(2), &BTreeMap::from([("100".to_string(), 3), ("103".to_string(), 2)])).expect("again");
        assert_eq!((again.accepted(), again.deferred.len(), ledger.submissions.len() - before), (0, 2, 1));
    }

    /// Review: a 10,000-run sweep reached the cluster's `MaxJobCount`, and the tenth array's
    /// `sbatch`, which sleeps and retries such a refusal itself for two minutes, timed out four
    /// times and ended `drover run` without a word of why. sbatch is now stopped at its "Slurm
    /// temporarily unable to accept job" line, and the refusal is back-pressure like a submit
    /// limit: halved, what does not fit deferred, named in the ledger and in `drover status`.
    #[test]
    fn a_full_controller_holds_runs_back_as_a_submit_limit_does() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let plan = seeds_plan(tmp.path(), 7, 7);
        let root = plan.results.root().to_path_buf();
        std::fs::create_dir_all(root.join(SLURM_DIR)).expect("mkdir");
        let opts = SlurmOptions { job_bin: tmp.path().join("drover-job"), wait: true, slurm: job_count_limited(tmp.path(), 6), quiet: true };
        let submitter = limited_submitter(&plan, &opts);
        let runs: Vec<(String, Resources)> = plan.runs.iter().map(|r| (r.run_id.to_string(), run_resources(&plan.sweep.slurm, r))).collect();
        let mut ledger = Ledger::load(&root).expect("ledger");
        let round = submitter.submit(&mut ledger, &runs, 1, None, &BTreeMap::new()).expect("a full controller is no error");
        // 7 refused, 3 in; room 6: 4 refused, 2 in; room 4: 2 refused, 1 refused (6 of 6).
        let sizes: Vec<(usize, bool)> = ledger.submissions.values().map(|s| (s.runs.len(), s.job_id.is_some())).collect();
        assert_eq!(sizes, [(7, false), (3, true), (4, false), (2, true), (2, false), (1, false)]);
        assert_eq!((round.accepted(), round.deferred.len()), (5, 2));
        assert_eq!(round.limit.as_ref().map(|(l, _)| l.as_str()), Some("MaxJobCount"));
        let said = ledger.submissions[&5].refused.clone().unwrap_or_default();
        assert!(said.contains("(stopped by drover as it began to retry): sbatch: error: Slurm temporarily unable to accept job"), "{said}");
        let why = crate::backend::slurm::status::kept_out_by(&ledger, 5).unwrap_or_default();
        assert!(why.starts_with("Slurm's MaxJobCount (the jobs the whole cluster holds at once) keeps it out until jobs end and Slurm forgets them"), "{why}");
        // Every user's jobs count: with nothing of this user's queued it is waited out, not the error.
        let mut room = WaitingRoom::default();
        let deferred = Round { arrays: Vec::new(), deferred: round.deferred, limit: round.limit };
        room.took(&mut SlurmReport::default(), &runs[5..], deferred, 0, &opts.slurm).expect("waited out");
        assert!(room.holds(&runs[6].0) && room.limit.as_deref() == Some("MaxJobCount"));
    }

    /// A limit that refuses a one-task array is waited out while jobs of the sweep or of the
    /// user are queued, and is the error (naming the sweep file) when none is: no job's end
    /// would ever make room. Runs wait once, and are tried again when the sweep's live tasks
    /// fall.
    #[test]
    fn a_submit_limit_with_no_job_queued_is_an_error_not_a_wait() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let refused = || {
            let e = crate::error::SlurmError::Refused { command: "sbatch".into(), status: "1".into(), stderr: "sbatch: error: AssocMaxSubmitJobLimit".into() };
            let error = RunError::SbatchRefused { file: "s.toml".into(), settings: "(none)".into(), fix: "it".into(), answer: Box::new(e) };
            Round { arrays: Vec::new(), deferred: vec![("a".into(), Resources::default())], limit: Some(("AssocMaxSubmitJobLimit".into(), error)) }
        };
        let tried = [("a".to_string(), Resources::default())];
        let nobody = submit_limited(&tmp.path().join("empty"), 0, 0);
        let mut report = SlurmReport::default();
        let err = WaitingRoom::default().took(&mut report, &tried, refused(), 0, &nobody).expect_err("nothing queued");
        assert!(err.to_string().contains("s.toml") && err.to_string().contains("AssocMaxSubmitJobLimit"), "{err}");

        let someone = submit_limited(&tmp.path().join("busy"), 0, 3);
        let mut room = WaitingRoom::default();
        room.took(&mut report, &tried, refused(), 0, &someone).expect("the user's jobs will end");
        room.took(&mut report, &tried, refused(), 2, &nobody).expect("the sweep's own jobs will end");
        assert_eq!((room.runs.len(), report.deferred, room.limit.as_deref()), (1, 1, Some("AssocMaxSubmitJobLimit")));
        assert!(room.holds("a") && !room.may_try(2) && room.may_try(1), "tried again once a task of the sweep ends");
        room.took(&mut report, &tried, Round::default(), 1, &nobody).expect("in");
        assert!(room.runs.is_empty() && !room.holds("a") && room.limit.is_none() && !room.may_try(0));

        // A group's limit counts colleagues' jobs, which this user cannot see end: waited out,
        // for a while (a limit of 0, a blocked account, would refuse for ever).
        let group = || Round { limit: Some(("QOSGrpSubmitJobsLimit".into(), RunError::NotSlurm { dir: "d".into() })), ..refused() };
        let mut room = WaitingRoom::default();
        room.took(&mut report, &tried, group(), 0, &nobody).expect("waited out");
        room.took(&mut report, &tried, group(), 0, &nobody).expect("still");
        room.nothing_queued_since = room.nothing_queued_since.map(|t| t - GROUP_LIMIT_PATIENCE);
        room.took(&mut report, &tried, group(), 0, &nobody).expect_err("waited long enough");
    }

    /// The breaker counts attempts (a run's retry failing again counts again, one poll seeing
    /// the same failure again does not), trips at the limit naming the latest failure, its
    /// reason and log, and never trips once any run has trained an iteration.
    #[test]
    fn a_sweep_failing_before_any_training_trips_the_breaker_and_a_trained_one_never_does() {
        let failed = |id: &str, submissions: u32| RunStatus {
            submissions,
            slurm_job: Some(format!("{}_{id}", 100 + submissions)),
            reason: Some("failed: exit code 127 without writing exit.json".into()),
            logs: vec![PathBuf::from(format!("/r/runs/{id}/attempt-{submissions}.stderr.log"))],
            ..crate::status::tests::run_status(id, RunState::Failed)
        };
        let pending = |id: &str| crate::status::tests::run_status(id, RunState::Pending);
        let trained = |id: &str| RunStatus {
            progress: Some(Progress { iteration: 1, global_step: 512, total_steps: Some(2048), wall_time_s: Some(0.1) }),
            ..crate::status::tests::run_status(id, RunState::Running)
        };
        let mut breaker = Breaker::default();
        assert_eq!(breaker.observe(&[failed("a", 1), failed("b", 1), pending("c")], 3), None);
        assert_eq!(breaker.observe(&[failed("a", 1), failed("b", 1), pending("c")], 3), None, "the same attempts, seen again");
        let why = breaker.observe(&[pending("a"), failed("b", 1), failed("c", 1)], 3).expect("third attempt");
        assert!(why.starts_with("3 attempts failed before training one iteration and no run has trained one (`slurm.fail_fast = 3`)"), "{why}");
        assert!(why.contains("run c (lr=1): failed: exit code 127") && why.contains("/r/runs/c/attempt-1.stderr.log"), "{why}");
        assert_eq!(breaker.why.as_deref(), Some(why.as_str()));

        let mut retried = Breaker::default();
        assert_eq!(retried.observe(&[failed("a", 1)], 2), None);
        assert!(retried.observe(&[failed("a", 2)], 2).is_some(), "a retry failing again is another attempt");

        // No log at all: the batch script never ran there.
        let mut unseen = Breaker::default();
        let no_log = |id: &str| RunStatus { logs: Vec::new(), ..failed(id, 1) };
        let why = unseen.observe(&[no_log("a"), no_log("b")], 2).expect("tripped");
        assert!(why.contains("it left no log, so Slurm could not even start the batch script on the node"), "{why}");

        // Runs packed in one task (a bad node fails them all at once) count as one.
        let mut packed = Breaker::default();
        let in_task = |id: &str| RunStatus { slurm_job: Some("300_0".into()), ..failed(id, 1) };
        assert_eq!(packed.observe(&[in_task("a"), in_task("b"), in_task("c")], 2), None);

        let mut working = Breaker::default();
        assert_eq!(working.observe(&[trained("a"), failed("b", 1), failed("c", 1)], 2), None);
        assert_eq!(working.observe(&[failed("a", 2), failed("b", 2), failed("c", 2), failed("d", 1)], 2), None, "a run trained: the setup works");
    }
}
