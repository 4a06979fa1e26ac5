//! Per-run status of a sweep: on Slurm from one `squeue` answer plus the markers runs write,
//! locally from the markers and the run locks alone.
//!
//! `classify` is the whole Slurm rule (pure, so it is unit-tested on every combination): the
//! job's own `exit.json` wins when it says completed; otherwise a task Slurm still lists decides;
//! when Slurm has forgotten the job (`MinJobAge`), the markers decide, so the answer stays right
//! without `sacct`. `classify_local` is the local rule. `StatusReport` is the
//! `drover status --json` boundary (format_version 1; `backend`, `driver`, `progress` and
//! `slurm_unanswered` were added later, as optional fields a reader of the first layout can
//! ignore, and the `unknown` state with the last).

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::layout::{ExitRecord, ExitStatus};

/// The format version of `drover status --json`.
pub const STATUS_FORMAT_VERSION: u32 = 1;

/// Where a run stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    /// Never submitted (or its submission was refused).
    NotSubmitted,
    /// Queued, or requeued and waiting to start again.
    Pending,
    /// Running.
    Running,
    /// Slurm did not answer, and the run's own markers do not settle where it stands (it may
    /// be queued, running, or have ended without a marker).
    Unknown,
    /// Local: started, but no job holds it and it has no `exit.json` (its `drover run` was
    /// killed, or the marker could not be written), or its files are damaged (a marker that
    /// does not parse, a completion over damaged results: the reason names the file); the next
    /// `drover run` redoes it.
    Unfinished,
    /// Completed: `exit.json` says so.
    Done,
    /// Ended without completing (an error, a crash, or a spent retry budget).
    Failed,
    /// Cancelled (`drover cancel`, `scancel`).
    Cancelled,
    /// Killed at its time limit without a checkpoint-and-requeue.
    TimedOut,
    /// Preempted and not requeued.
    Preempted,
}

impl RunState {
    /// The word shown by `drover status`.
    pub fn as_str(self) -> &'static str {
        match self {
            RunState::NotSubmitted => "not submitted",
            RunState::Pending => "pending",
            RunState::Running => "running",
            RunState::Unknown => "unknown",
            RunState::Unfinished => "unfinished",
            RunState::Done => "done",
            RunState::Failed => "failed",
            RunState::Cancelled => "cancelled",
            RunState::TimedOut => "timed out",
            RunState::Preempted => "preempted",
        }
    }

    /// Whether Slurm may still run it without drover doing anything.
    pub fn is_live(self) -> bool {
        matches!(self, RunState::Pending | RunState::Running)
    }

    /// Whether the run was stopped from outside (cancelled, time limit, preemption), so the
    /// checkpoint it kept is resumed by the next `drover run`.
    pub fn stopped_from_outside(self) -> bool {
        matches!(self, RunState::Cancelled | RunState::TimedOut | RunState::Preempted)
    }
}

/// What Slurm says about a task, reduced to what `classify` needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlurmView<'a> {
    /// Drover never got a job id for the run.
    NotSubmitted,
    /// Submitted, and Slurm lists the task with this state name.
    Listed(&'a str),
    /// Submitted, and Slurm no longer lists it.
    Forgotten,
    /// Submitted, and Slurm did not answer (its controller is down or unreachable).
    Unanswered,
}

/// What the job's own SIGTERM words (`stopped by SIGTERM; checkpoint at iteration 3`, or the
/// older `SIGTERM (preempted, requeued or cancelled); ...`) add after naming the signal: the
/// checkpoint's iteration, or nothing. `None` when `reason` is not a SIGTERM stop.
fn sigterm_detail(reason: &str) -> Option<&str> {
    let rest = reason.strip_prefix("stopped by ").unwrap_or(reason);
    rest.starts_with("SIGTERM").then(|| rest.split_once("; ").map_or("", |(_, detail)| detail))
}

/// The stop's `cause`, which drover knows (the job only saw a SIGTERM), in place of the job's
/// SIGTERM words, keeping what the job added; other words of the job follow after a colon.
fn with_cause(cause: &str, job_words: Option<&str>) -> String {
    match job_words {
        None => cause.to_string(),
        Some(words) => match sigterm_detail(words) {
            Some("") => cause.to_string(),
            Some(detail) => format!("{cause}; {detail}"),
            None => format!("{cause}: {words}"),
        },
    }
}

/// `drover cancel` recorded the array: the job's SIGTERM came from it.
const BY_DROVER: &str = "cancelled by `drover cancel`";
/// Slurm lists the task CANCELLED and the ledger has no `drover cancel` of it.
pub(crate) const BY_SCANCEL: &str = "cancelled outside drover (`scancel`; Slurm: CANCELLED)";
/// Slurm lists the task PREEMPTED.
const BY_PREEMPTION: &str = "preempted (Slurm: PREEMPTED)";
/// Slurm has forgotten the task, `drover cancel` did not stop it and no later attempt came:
/// what is left of Slurm's reasons for a SIGTERM.
const FROM_OUTSIDE: &str = "stopped by SIGTERM from outside drover (preempted, or cancelled with `scancel` by hand)";
/// Slurm has forgotten a task that never started (no attempt was recorded) and that `drover
/// cancel` did not stop: a task cancelled while queued is the one way this happens.
pub(crate) const NEVER_STARTED: &str = "never started, and Slurm no longer lists it (cancelled while queued, with `scancel` by hand?)";
/// Slurm did not answer: what the markers leave open.
const UNANSWERED: &str = "Slurm does not answer: queued, running, or ended without writing exit.json";
/// Slurm lists the task again after the attempt that wrote the stop marker.
const REQUEUED: &str = "requeued by Slurm after a SIGTERM (preemption or `scontrol requeue`)";

/// What the ledger and the run's files say beyond `exit.json`, for [`classify`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunFacts {
    /// The ledger says `drover cancel` stopped the run's array.
    pub cancelled_by_drover: bool,
    /// The run's latest attempt ran in the array task Slurm lists now, so a stop marker beside
    /// a pending task means Slurm requeued it (rather than a `drover run` resubmitting it in a
    /// new array).
    pub ran_in_listed_task: bool,
    /// The batch script recorded an attempt of the run in the array of its latest submission
    /// (the last line of `attempts.jsonl`): the task started.
    pub started: bool,
    /// The exit code the batch script recorded (`attempt-<k>.rc`) for the run's latest attempt,
    /// when that attempt ran in the task Slurm lists as failed or has forgotten and wrote no
    /// exit.json: the run's own account of how it ended, which beats a guess from Slurm's state.
    pub exit_code: Option<i32>,
}

/// Why an attempt that wrote no exit.json ended, by the exit code the batch script recorded:
/// `bash` reports a job killed by signal n as 128 + n, which is named as such (SIGKILL, most
/// often the OOM killer); any other code is the job's own.
pub fn ended_without_exit_json(code: i32) -> String {
    match code {
        129..=192 => format!("exit code {code} without writing exit.json: {}", crate::backend::local::signal_reason(code - 128, false, false)),
        _ => format!("exit code {code} without writing exit.json"),
    }
}

/// The state of one run, and a reason when it did not complete.
pub fn classify(exit: Option<&ExitRecord>, slurm: SlurmView<'_>, facts: RunFacts) -> (RunState, Option<String>) {
    let RunFacts { cancelled_by_drover, ran_in_listed_task, started, exit_code } = facts;
    if exit.is_some_and(|e| e.status == ExitStatus::Completed) {
        return (RunState::Done, None);
    }
    let failed = exit.filter(|e| e.status == ExitStatus::Failed);
    let stopped = exit.filter(|e| e.status == ExitStatus::Cancelled);
    let words = stopped.and_then(|e| e.reason.as_deref());
    // The job only saw a SIGTERM. A cause drover knows replaces the job's hedge; with none, the
    // job's words stay and only a bare SIGTERM is put in the words of what is left.
    let stop_reason = |known: Option<&str>| match known {
        Some(cause) => with_cause(cause, words),
        None => match words {
            Some(w) if sigterm_detail(w).is_some() => with_cause(FROM_OUTSIDE, Some(w)),
            Some(w) => w.to_string(),
            None => FROM_OUTSIDE.to_string(),
        },
    };
    let by_drover = cancelled_by_drover.then_some(BY_DROVER);
    let marker = |known: Option<&str>| match (failed, stopped) {
        (Some(e), _) => Some((RunState::Failed, e.reason.clone())),
        (None, Some(_)) => Some((RunState::Cancelled, Some(stop_reason(known)))),
        (None, None) => None,
    };
    match slurm {
        SlurmView::NotSubmitted => (RunState::NotSubmitted, None),
        SlurmView::Listed(state) => match state {
            "PENDING" | "CONFIGURING" | "REQUEUED" | "REQUEUE_FED" | "REQUEUE_HOLD" | "RESV_DEL_HOLD" | "SUSPENDED"
            | "RESIZING" => (RunState::Pending, (stopped.is_some() && ran_in_listed_task).then(|| with_cause(REQUEUED, words))),
            running if slurm_running(running) => (RunState::Running, None),
            "TIMEOUT" | "DEADLINE" => (RunState::TimedOut, Some(format!("Slurm: {state}"))),
            "PREEMPTED" => (RunState::Preempted, Some(with_cause(BY_PREEMPTION, words))),
            "CANCELLED" => {
                let reason = match failed {
                    Some(e) => e.reason.clone(),
                    None => Some(with_cause(by_drover.unwrap_or(BY_SCANCEL), words)),
                };
                (RunState::Cancelled, reason)
            }
            // COMPLETED without a completed marker, FAILED, OUT_OF_MEMORY, NODE_FAIL, BOOT_FAIL...
            other => match marker(by_drover) {
                Some(m) => m,
                None if cancelled_by_drover => (RunState::Cancelled, Some(BY_DROVER.into())),
                None => (RunState::Failed, Some(match exit_code {
                    Some(code) => format!("{} (Slurm: {other})", ended_without_exit_json(code)),
                    None => format!("Slurm: {other}, and the job wrote no exit.json"),
                })),
            },
        },
        SlurmView::Forgotten => match marker(by_drover) {
            Some(m) => m,
            None if cancelled_by_drover => (RunState::Cancelled, Some(BY_DROVER.into())),
            None if !started => (RunState::Cancelled, Some(NEVER_STARTED.into())),
            // Only a run with no recorded exit code leaves the cause to a guess: one that exited
            // with its own code said why on its stderr, and was not killed.
            None => (
                RunState::Failed,
                Some(exit_code.map_or_else(
                    || "the job wrote no exit.json and Slurm no longer lists it (killed, out of memory, or node failure?)".into(),
                    ended_without_exit_json,
                )),
            ),
        },
        // A failure marker is final (only a new submission runs the run again); a stop marker
        // may have been followed by a requeue that Slurm alone knows of.
        SlurmView::Unanswered => match (failed, stopped) {
            (Some(e), _) => (RunState::Failed, e.reason.clone()),
            (None, Some(_)) => (RunState::Unknown, Some(format!("{UNANSWERED}; its last attempt stopped: {}", stop_reason(by_drover)))),
            (None, None) => (RunState::Unknown, Some(UNANSWERED.into())),
        },
    }
}

/// Whether Slurm's state of a task says it runs (or is winding down on its node).
pub fn slurm_running(state: &str) -> bool {
    matches!(state, "RUNNING" | "COMPLETING" | "SIGNALING" | "STAGE_OUT")
}

/// `reason` with what the next `drover run` does about a stopped run that kept a checkpoint
/// (cancelled, timed out, preempted): the user's question after a stop is whether the work so
/// far is lost. A failed run starts over, so it gets no hint.
pub fn resume_hint(state: RunState, reason: Option<String>, has_checkpoint: bool) -> Option<String> {
    if !has_checkpoint || !state.stopped_from_outside() {
        return reason;
    }
    const HINT: &str = "the next `drover run` resumes it from its checkpoint";
    Some(match reason {
        Some(r) => format!("{r}; {HINT}"),
        None => HINT.to_string(),
    })
}

/// Slurm's reason for a pending task in words, with Slurm's own name kept for searching its
/// documentation: `JobArrayTaskLimit` alone does not tell a first-time user that the sweep's
/// own throttle holds the run back, nor `PartitionTimeLimit` that it will never start.
pub fn pending_reason_words(reason: &str) -> String {
    let words = match reason {
        "JobArrayTaskLimit" => "waiting for a slot: the sweep's runs-at-once limit (`slurm.throttle` or `max_parallel`)",
        "Priority" => "waiting: jobs with higher priority go first",
        "Resources" => "waiting for free resources (CPUs, memory or GPUs)",
        "BeginTime" => "waiting for its start time (a requeued run waits a little before it starts again)",
        "Dependency" => "waiting for a job it depends on",
        "DependencyNeverSatisfied" => {
            "will not start: a job it depends on did not end as its dependency asks (`slurm.after`): `drover cancel`, then run again with a dependency that can hold"
        }
        "JobHeldUser" => "held by its user (`scontrol release <job>` lets it start)",
        "JobHeldAdmin" => "held by an administrator",
        "launch failed requeued held" | "launch_failed_requeued_held" => {
            "held after its launch failed on a node (a node problem): `scontrol release <job>` once the node is fixed, or `drover cancel`"
        }
        "PartitionTimeLimit" => "will not start: `slurm.time` exceeds the partition's time limit",
        "ReqNodeNotAvail" => "waiting: the nodes it needs are unavailable",
        "PartitionConfig" | "BadConstraints" => {
            "will not start: it asks for more than any node of the partition has (`slurm.cpus_per_task`, `mem`, `gpus_per_task`, `nodes` or `constraint`): `drover cancel`, lower it and run again"
        }
        "QOSMaxWallDurationPerJobLimit" => "will not start: `slurm.time` exceeds the QOS's time limit",
        "QOSMaxJobsPerUserLimit" | "AssocMaxJobsLimit" | "QOSMaxSubmitJobPerUserLimit" => "waiting: your running-jobs quota is full",
        _ => return format!("Slurm: {reason}"),
    };
    format!("{words}; Slurm: {reason}")
}

/// Whether a pending task with Slurm reason `reason` waits for a person rather than for time:
/// held (by its user, an administrator, or after a failed launch) or asking for more than the
/// partition or QOS allows. A waiting `drover run` says so once rather than wait in silence.
pub fn waits_for_a_person(reason: &str) -> bool {
    matches!(
        reason,
        "JobHeldAdmin"
            | "JobHeldUser"
            | "launch failed requeued held"
            | "launch_failed_requeued_held"
            | "PartitionConfig"
            | "BadConstraints"
            | "PartitionTimeLimit"
            | "QOSMaxWallDurationPerJobLimit"
            | "DependencyNeverSatisfied"
    )
}

/// The state of one run of a local sweep: its `exit.json` when completed; running while a job
/// holds its lock (a retry's earlier failure marker is archived before it starts); then the
/// marker's word; without one, unfinished when it had started, else pending while a
/// `drover run` is working through the sweep, else not started.
pub fn classify_local(exit: Option<&ExitRecord>, job_running: bool, started: bool, driver_running: bool) -> (RunState, Option<String>) {
    match exit {
        Some(e) if e.status == ExitStatus::Completed => (RunState::Done, None),
        _ if job_running => (RunState::Running, None),
        Some(e) if e.status == ExitStatus::Failed => (RunState::Failed, e.reason.clone()),
        Some(e) => (RunState::Cancelled, e.reason.clone()),
        None if started => (
            RunState::Unfinished,
            Some("it started, but no job holds it and it has no exit.json: its `drover run` was killed, or the job could not write the marker (a full results disk?); the next `drover run` redoes it".into()),
        ),
        None if driver_running => (RunState::Pending, None),
        None => (RunState::NotSubmitted, None),
    }
}

/// How far a run got: its latest metrics row.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Progress {
    /// Iterations done.
    pub iteration: u64,
    /// Environment steps done (`global_step`).
    pub global_step: u64,
    /// The environment steps the run trains: its `total_steps` rounded down to whole
    /// iterations of `num_envs × num_steps` (at least one), as the job trains them
    /// ([`steps_to_train`]), so a completed run reads 100%.
    pub total_steps: Option<u64>,
    /// Seconds of training so far.
    pub wall_time_s: Option<f64>,
}

/// The environment steps a run of `total_steps` trains: whole iterations of `num_envs ×
/// num_steps` steps, at least one (the job's loop, `jobs/src/train.rs`). `total_steps = 20000`
/// at 8 × 128 = 1024 steps an iteration trains 19 iterations, 19,456 steps; the rest of a
/// batch is never stepped. `None` when a key is missing (a spec of another version).
pub fn steps_to_train(run: &serde_json::Map<String, serde_json::Value>) -> Option<u64> {
    let key = |k: &str| run.get(k).and_then(serde_json::Value::as_u64);
    let total = key("total_steps")?;
    let batch = key("num_envs")?.checked_mul(key("num_steps")?).filter(|&b| b > 0)?;
    (total / batch).max(1).checked_mul(batch)
}

impl Progress {
    /// The latest complete row of `<run_dir>/metrics.jsonl` (only the file's tail is read, so
    /// a long run costs no more than a short one); `None` before the first iteration.
    pub fn read(run_dir: &Path, total_steps: Option<u64>) -> Option<Progress> {
        const TAIL: u64 = 64 * 1024;
        let mut file = std::fs::File::open(run_dir.join("metrics.jsonl")).ok()?;
        let len = file.metadata().ok()?.len();
        file.seek(SeekFrom::Start(len.saturating_sub(TAIL))).ok()?;
        let mut tail = String::new();
        file.read_to_string(&mut tail).ok()?;
        // A row still being written has no newline yet; the first line may be cut by the seek.
        let complete = &tail[..tail.rfind('\n')?];
        let row: serde_json::Value = complete.lines().rev().find_map(|l| serde_json::from_str(l).ok())?;
        Some(Progress {
            iteration: row["iteration"].as_u64()?,
            global_step: row["global_step"].as_u64()?,
            total_steps,
            wall_time_s: row["wall_time_s"].as_f64(),
        })
    }

    /// `37% (step 3,880,960 of 10,485,760)`, or the step alone without a total.
    pub fn render(&self) -> String {
        match self.total_steps.filter(|&t| t > 0) {
            Some(total) => format!(
                "{}% (step {} of {})",
                (self.global_step.saturating_mul(100) / total).min(100),
                thousands(self.global_step),
                thousands(total)
            ),
            None => format!("step {}", thousands(self.global_step)),
        }
    }
}

fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `once`, `twice`, `3 times`.
fn times(n: u32) -> String {
    match n {
        1 => "once".into(),
        2 => "twice".into(),
        n => format!("{n} times"),
    }
}

/// A run's checkpointed stops in words (`requeued at its time limit twice, stopped by SIGTERM
/// once`), `None` when it had none: the JSON's `time_limit_requeues` and `preemptions`.
pub fn stops_words(time_limit_requeues: u32, sigterm_stops: u32) -> Option<String> {
    let mut parts = Vec::new();
    if time_limit_requeues > 0 {
        parts.push(format!("requeued at its time limit {}", times(time_limit_requeues)));
    }
    if sigterm_stops > 0 {
        parts.push(format!("stopped by SIGTERM {}", times(sigterm_stops)));
    }
    (!parts.is_empty()).then(|| parts.join(", "))
}

/// One run in `drover status --json`.
#[derive(Debug, Clone, Serialize)]
pub struct RunStatus {
    /// The run id.
    pub run_id: String,
    /// Its configuration label.
    pub label: String,
    /// Its seed (from its `spec.json`, or from the array's tasks file before it starts).
    pub seed: Option<u64>,
    /// Where it stands.
    pub state: RunState,
    /// Why it did not complete, when known.
    pub reason: Option<String>,
    /// `<array job id>_<task>` of its latest submission.
    pub slurm_job: Option<String>,
    /// Slurm's state name while Slurm lists the task.
    pub slurm_state: Option<String>,
    /// Slurm's pending/any reason while Slurm lists the task.
    pub slurm_reason: Option<String>,
    /// Submissions of this run (1 + retries).
    pub submissions: u32,
    /// Time-limit requeues so far (checkpoint signal).
    pub time_limit_requeues: u32,
    /// SIGTERM stops so far (preemptions, requeues).
    pub preemptions: u32,
    /// The retry budget whose spending failed the run (`max_timeouts`, `max_preemptions`):
    /// drover does not retry it from scratch, and the next `drover run` resumes it. Absent
    /// otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spent_budget: Option<String>,
    /// Per-attempt stdout/stderr logs, oldest first.
    pub logs: Vec<PathBuf>,
    /// Its latest metrics row, once it has one.
    pub progress: Option<Progress>,
}

/// `drover status --json` (format_version 1).
#[derive(Debug, Clone, Serialize)]
pub struct StatusReport {
    /// Always [`STATUS_FORMAT_VERSION`].
    pub format_version: u32,
    /// The sweep name.
    pub sweep: String,
    /// The results directory.
    pub results: PathBuf,
    /// `slurm` (the sweep was submitted to Slurm) or `local`.
    pub backend: String,
    /// Local: who holds the results directory's lock (the `drover run` working through it), as
    /// it described itself; `None` when no `drover run` is running the sweep.
    pub driver: Option<String>,
    /// Why Slurm's view is missing (its controller did not answer), when it is: then runs
    /// without a final marker are `unknown`. Absent when Slurm answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slurm_unanswered: Option<String>,
    /// Runs per state.
    pub counts: BTreeMap<RunState, usize>,
    /// Every run of the sweep, in expansion order.
    pub runs: Vec<RunStatus>,
    /// Run directories under `runs/` that the sweep's `sweep.json` does not list: the runs of an
    /// earlier version of the sweep, kept there (`count_other_run_dirs`). Absent when none.
    #[serde(skip_serializing_if = "is_zero")]
    pub other_run_dirs: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

impl StatusReport {
    /// The report of `runs`, counted per state.
    pub fn new(sweep: String, results: PathBuf, backend: &str, driver: Option<String>, runs: Vec<RunStatus>) -> Self {
        let mut counts = BTreeMap::new();
        for r in &runs {
            *counts.entry(r.state).or_insert(0) += 1;
        }
        StatusReport {
            format_version: STATUS_FORMAT_VERSION,
            sweep,
            results,
            backend: backend.into(),
            driver,
            slurm_unanswered: None,
            counts,
            runs,
            other_run_dirs: 0,
        }
    }

    /// Counts the run directories of `results/runs/` that are not this sweep's runs, which the
    /// report does not list: `drover run` names them, and `drover analyze` points here for them.
    pub fn count_other_run_dirs(&mut self) {
        let ids: std::collections::HashSet<&str> = self.runs.iter().map(|r| r.run_id.as_str()).collect();
        self.other_run_dirs = crate::backend::other_runs::run_dirs_not_in(&self.results.join(crate::layout::RUNS_DIR), &ids).len();
    }

    /// The human-readable table.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let counts: Vec<String> = self.counts.iter().map(|(s, n)| format!("{n} {}", s.as_str())).collect();
        let local = self.backend == "local";
        let counts: Vec<String> = if local { counts.iter().map(|c| c.replace("not submitted", "not started")).collect() } else { counts };
        out.push_str(&format!("sweep `{}`: {}: {}\n", self.sweep, crate::words::count(self.runs.len(), "run"), counts.join(", ")));
        // Requeues are invisible in the states (a requeued run is running again), and a sweep
        // whose runs keep hitting their time limit wants a longer `slurm.time`.
        let (limited, sigtermed) = (self.runs.iter().filter(|r| r.time_limit_requeues > 0), self.runs.iter().filter(|r| r.preemptions > 0));
        let (limited_runs, limits) = limited.fold((0, 0), |(n, k), r| (n + 1, k + r.time_limit_requeues as usize));
        let (sigterm_runs, sigterms) = sigtermed.fold((0, 0), |(n, k), r| (n + 1, k + r.preemptions as usize));
        let mut stops = Vec::new();
        if limited_runs > 0 {
            stops.push(format!("{} requeued at the time limit ({} in all)", crate::words::count(limited_runs, "run"), crate::words::count(limits, "requeue")));
        }
        if sigterm_runs > 0 {
            stops.push(format!("{} stopped by SIGTERM ({} in all)", crate::words::count(sigterm_runs, "run"), crate::words::count(sigterms, "stop")));
        }
        if !stops.is_empty() {
            out.push_str(&format!("checkpointed stops: {}\n", stops.join("; ")));
        }
        if self.other_run_dirs > 0 {
            out.push_str(&format!(
                "{} in `{}` {} not part of this sweep (runs of an earlier version of it): kept, not listed here; `drover analyze --all-runs` includes them\n",
                crate::words::count_as(self.other_run_dirs, "other run directory", "other run directories"),
                self.results.join(crate::layout::RUNS_DIR).display(),
                if self.other_run_dirs == 1 { "is" } else { "are" },
            ));
        }
        if let Some(error) = &self.slurm_unanswered {
            let unknown = self.counts.get(&RunState::Unknown).copied().unwrap_or(0);
            let settled = if unknown == 0 {
                "every run has a final marker, so this is the whole answer".to_string()
            } else {
                format!("{} without a final marker {} unknown; ask again once it answers", crate::words::count(unknown, "run"), if unknown == 1 { "is" } else { "are" })
            };
            out.push_str(&format!("Slurm does not answer ({error}): states from the runs' own markers; {settled}\n"));
        }
        if local {
            match &self.driver {
                Some(holder) => out.push_str(&format!("running locally: {holder}\n")),
                None => out.push_str("local sweep; no `drover run` is running it now\n"),
            }
        }
        for r in &self.runs {
            let state = if local && r.state == RunState::NotSubmitted { "not started" } else { r.state.as_str() };
            let seed = r.seed.map_or_else(|| "-".to_string(), |s| s.to_string());
            if local {
                out.push_str(&format!("{}  {:<13} seed={:<6} {}", r.run_id, state, seed, r.label));
            } else {
                let job = r.slurm_job.as_deref().unwrap_or("-");
                out.push_str(&format!("{}  {:<13} {:<10} seed={:<6} {}", r.run_id, state, job, seed, r.label));
            }
            if let Some(p) = r.progress.as_ref().filter(|_| r.state != RunState::Done) {
                out.push_str(&format!("  {}", p.render()));
            }
            if let Some(stops) = stops_words(r.time_limit_requeues, r.preemptions) {
                out.push_str(&format!("  [{stops}]"));
            }
            if let Some(reason) = &r.reason {
                out.push_str(&format!("  ({reason})"));
            }
            if let Some(reason) = r.slurm_reason.as_deref().filter(|s| *s != "None" && r.state == RunState::Pending) {
                out.push_str(&format!("  [{}]", pending_reason_words(reason)));
            }
            out.push('\n');
            if !matches!(r.state, RunState::Done | RunState::NotSubmitted | RunState::Pending) {
                for log in r.logs.iter().rev().take(2).rev() {
                    out.push_str(&format!("    log: {}\n", log.display()));
                }
            }
        }
        out
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A run of label `lr=1`, seed 7, in `state`, with nothing else known: tests set the rest.
    pub(crate) fn run_status(run_id: &str, state: RunState) -> RunStatus {
        RunStatus {
            run_id: run_id.into(),
            label: "lr=1".into(),
            seed: Some(7),
            state,
            reason: None,
            slurm_job: None,
            slurm_state: None,
            slurm_reason: None,
            submissions: 1,
            time_limit_requeues: 0,
            preemptions: 0,
            spent_budget: None,
            logs: Vec::new(),
            progress: None,
        }
    }

    /// Facts of a run that started: `drover cancel` stopped it or not, and its latest attempt
    /// ran in the task Slurm lists or not.
    fn started(cancelled_by_drover: bool, ran_in_listed_task: bool) -> RunFacts {
        RunFacts { cancelled_by_drover, ran_in_listed_task, started: true, exit_code: None }
    }

    fn exit(status: ExitStatus, reason: Option<&str>) -> ExitRecord {
        ExitRecord {
            format_version: 1,
            run_id: "r".into(),
            status,
            reason: reason.map(str::to_string),
            finished_at: serde_json::Value::Null,
            spent_budget: None,
            cause: None,
        }
    }

    #[test]
    fn the_jobs_completed_marker_wins_over_everything() {
        let done = exit(ExitStatus::Completed, None);
        for view in [SlurmView::Listed("RUNNING"), SlurmView::Listed("CANCELLED"), SlurmView::Forgotten] {
            assert_eq!(classify(Some(&done), view, started(true, true)).0, RunState::Done, "{view:?}");
        }
    }

    #[test]
    fn slurm_decides_while_it_lists_the_task_and_markers_after() {
        let cancelled = exit(ExitStatus::Cancelled, Some("stopped by SIGTERM; checkpoint at iteration 3"));
        let failed = exit(ExitStatus::Failed, Some("plugin error"));
        let cases: Vec<(Option<&ExitRecord>, SlurmView<'_>, bool, RunState)> = vec![
            (None, SlurmView::NotSubmitted, false, RunState::NotSubmitted),
            (None, SlurmView::Listed("PENDING"), false, RunState::Pending),
            // A requeued run waiting to resume: the old attempt's marker does not count.
            (Some(&cancelled), SlurmView::Listed("PENDING"), false, RunState::Pending),
            (Some(&cancelled), SlurmView::Listed("RUNNING"), false, RunState::Running),
            (None, SlurmView::Listed("TIMEOUT"), false, RunState::TimedOut),
            (None, SlurmView::Listed("PREEMPTED"), false, RunState::Preempted),
            (None, SlurmView::Listed("CANCELLED"), false, RunState::Cancelled),
            (Some(&failed), SlurmView::Listed("FAILED"), false, RunState::Failed),
            (None, SlurmView::Listed("OUT_OF_MEMORY"), false, RunState::Failed),
            (Some(&failed), SlurmView::Forgotten, false, RunState::Failed),
            (Some(&cancelled), SlurmView::Forgotten, false, RunState::Cancelled),
            (None, SlurmView::Forgotten, true, RunState::Cancelled),
            (None, SlurmView::Forgotten, false, RunState::Failed),
        ];
        for (exit, view, by_drover, expected) in cases {
            assert_eq!(classify(exit, view, started(by_drover, false)).0, expected, "{exit:?} {view:?} {by_drover}");
        }
        assert_eq!(classify(Some(&failed), SlurmView::Forgotten, started(false, false)).1.as_deref(), Some("plugin error"));
    }

    /// A task cancelled while queued, once Slurm forgets it, left no attempt and no marker: it
    /// reads as cancelled, not as a job that died (out of memory, node failure); a task that
    /// started and left no marker did die.
    #[test]
    fn a_run_that_never_started_and_vanished_reads_as_cancelled_while_queued() {
        let never = RunFacts { started: false, ..RunFacts::default() };
        let (state, reason) = classify(None, SlurmView::Forgotten, never);
        assert_eq!(state, RunState::Cancelled);
        assert!(reason.as_deref().is_some_and(|r| r.starts_with("never started") && !r.contains("out of memory")), "{reason:?}");
        assert_eq!(classify(None, SlurmView::Forgotten, started(false, false)).0, RunState::Failed);
        // `drover cancel` knows it stopped it, started or not.
        let by_drover = RunFacts { cancelled_by_drover: true, ..never };
        assert_eq!(classify(None, SlurmView::Forgotten, by_drover), (RunState::Cancelled, Some("cancelled by `drover cancel`".into())));
    }

    /// With Slurm down, the markers that are final decide and the rest is unknown, saying why:
    /// a completed or failed run stays so, a stopped one may have been requeued since.
    #[test]
    fn without_slurms_answer_final_markers_decide_and_the_rest_is_unknown() {
        let done = exit(ExitStatus::Completed, None);
        let failed = exit(ExitStatus::Failed, Some("plugin error"));
        let stopped = exit(ExitStatus::Cancelled, Some("stopped by SIGTERM; checkpoint at iteration 3"));
        let view = SlurmView::Unanswered;
        assert_eq!(classify(Some(&done), view, started(false, false)), (RunState::Done, None));
        assert_eq!(classify(Some(&failed), view, started(false, false)), (RunState::Failed, Some("plugin error".into())));
        let (state, reason) = classify(Some(&stopped), view, started(false, false));
        assert_eq!(state, RunState::Unknown);
        assert!(reason.as_deref().is_some_and(|r| r.starts_with("Slurm does not answer") && r.ends_with("checkpoint at iteration 3")), "{reason:?}");
        let (state, reason) = classify(None, view, RunFacts::default());
        assert_eq!(state, RunState::Unknown);
        assert!(reason.as_deref().is_some_and(|r| r.starts_with("Slurm does not answer")), "{reason:?}");
        assert!(!RunState::Unknown.is_live() && !RunState::Unknown.stopped_from_outside());
    }

    /// A run stopped by `drover cancel` says so (the job itself only saw a SIGTERM), in place of
    /// the job's SIGTERM words and keeping its checkpoint's iteration, and the reason does not
    /// change when Slurm forgets the job.
    #[test]
    fn a_run_cancelled_by_drover_says_so_before_and_after_slurm_forgets_it() {
        let stopped = exit(ExitStatus::Cancelled, Some("stopped by SIGTERM; checkpoint at iteration 3"));
        for marker in [None, Some(&stopped)] {
            let listed = classify(marker, SlurmView::Listed("CANCELLED"), started(true, true));
            let forgotten = classify(marker, SlurmView::Forgotten, started(true, false));
            assert_eq!(listed, forgotten, "{marker:?}");
            assert_eq!(listed.0, RunState::Cancelled);
            assert!(listed.1.as_deref().is_some_and(|r| r.starts_with("cancelled by `drover cancel`")), "{listed:?}");
        }
        assert_eq!(
            classify(Some(&stopped), SlurmView::Forgotten, started(true, false)).1.as_deref(),
            Some("cancelled by `drover cancel`; checkpoint at iteration 3")
        );
        // A failure stays a failure whoever cancelled afterwards.
        let failed = exit(ExitStatus::Failed, Some("plugin error"));
        assert_eq!(classify(Some(&failed), SlurmView::Forgotten, started(true, false)), (RunState::Failed, Some("plugin error".into())));
    }

    /// A SIGTERM stop says which of preemption, requeue and cancellation it was whenever the
    /// ledger or Slurm knows; when neither does, what is left; the job's own other words stay.
    #[test]
    fn a_sigterm_stop_names_its_cause_when_drover_knows_it() {
        let stopped = exit(ExitStatus::Cancelled, Some("stopped by SIGTERM; checkpoint at iteration 3"));
        let older = exit(ExitStatus::Cancelled, Some("SIGTERM (preempted, requeued or cancelled); checkpoint at iteration 3"));
        let sigint = exit(ExitStatus::Cancelled, Some("stopped by SIGINT"));
        let reason = |marker, view, by_drover, ran_here| classify(marker, view, started(by_drover, ran_here)).1.unwrap_or_default();
        // `scancel` by hand, while Slurm lists the task.
        assert_eq!(
            reason(Some(&stopped), SlurmView::Listed("CANCELLED"), false, true),
            "cancelled outside drover (`scancel`; Slurm: CANCELLED); checkpoint at iteration 3"
        );
        assert_eq!(reason(None, SlurmView::Listed("CANCELLED"), false, true), "cancelled outside drover (`scancel`; Slurm: CANCELLED)");
        // Preempted without requeue.
        let preempted = classify(Some(&stopped), SlurmView::Listed("PREEMPTED"), started(false, true));
        assert_eq!(preempted, (RunState::Preempted, Some("preempted (Slurm: PREEMPTED); checkpoint at iteration 3".into())));
        // Requeued: the same task is queued again after the attempt that stopped.
        let requeued = classify(Some(&stopped), SlurmView::Listed("PENDING"), started(false, true));
        assert_eq!(
            requeued,
            (RunState::Pending, Some("requeued by Slurm after a SIGTERM (preemption or `scontrol requeue`); checkpoint at iteration 3".into()))
        );
        // Resubmitted by a later `drover run` in a new array: not a requeue.
        assert_eq!(classify(Some(&stopped), SlurmView::Listed("PENDING"), started(false, false)), (RunState::Pending, None));
        // Slurm has forgotten, and no `drover cancel`: preempted or `scancel`, the job's words kept.
        for marker in [&stopped, &older] {
            assert_eq!(
                reason(Some(marker), SlurmView::Forgotten, false, false),
                "stopped by SIGTERM from outside drover (preempted, or cancelled with `scancel` by hand); checkpoint at iteration 3"
            );
        }
        assert_eq!(reason(Some(&older), SlurmView::Forgotten, true, false), "cancelled by `drover cancel`; checkpoint at iteration 3");
        assert_eq!(reason(Some(&sigint), SlurmView::Forgotten, false, false), "stopped by SIGINT", "not a SIGTERM: the job's words");
        assert_eq!(reason(Some(&sigint), SlurmView::Forgotten, true, false), "cancelled by `drover cancel`: stopped by SIGINT");
        for r in [reason(Some(&older), SlurmView::Listed("CANCELLED"), true, true), reason(Some(&older), SlurmView::Listed("CANCELLED"), false, true)] {
            assert!(!r.contains("preempted, requeued or cancelled"), "the job's hedge is replaced: {r}");
        }
    }

    #[test]
    fn local_runs_are_classified_by_marker_lock_and_logs() {
        let (done, failed, cancelled) =
            (exit(ExitStatus::Completed, None), exit(ExitStatus::Failed, Some("nan loss")), exit(ExitStatus::Cancelled, Some("SIGTERM")));
        // (exit, job running, started, driver running) -> state
        let cases = [
            (Some(&done), false, true, false, RunState::Done),
            (Some(&done), true, true, true, RunState::Done),
            (Some(&failed), true, true, true, RunState::Running),
            (Some(&failed), false, true, true, RunState::Failed),
            (Some(&cancelled), false, true, false, RunState::Cancelled),
            (None, true, true, true, RunState::Running),
            (None, false, true, false, RunState::Unfinished),
            (None, false, true, true, RunState::Unfinished),
            (None, false, false, true, RunState::Pending),
            (None, false, false, false, RunState::NotSubmitted),
        ];
        for (exit, job, started, driver, expected) in cases {
            assert_eq!(classify_local(exit, job, started, driver).0, expected, "{exit:?} job={job} started={started} driver={driver}");
        }
        assert_eq!(classify_local(Some(&failed), false, true, false).1.as_deref(), Some("nan loss"));
        assert!(classify_local(None, false, true, false).1.expect("reason").contains("the next `drover run` redoes it"));
    }

    /// A stopped run that kept its checkpoint says the next `drover run` resumes it; a failed
    /// one (it starts over) and one without a checkpoint do not.
    #[test]
    fn a_stopped_run_with_a_checkpoint_says_the_next_run_resumes_it() {
        let why = || Some("SIGTERM; checkpoint at iteration 131".to_string());
        for state in [RunState::Cancelled, RunState::TimedOut, RunState::Preempted] {
            let reason = resume_hint(state, why(), true).expect("reason");
            assert_eq!(reason, "SIGTERM; checkpoint at iteration 131; the next `drover run` resumes it from its checkpoint", "{state:?}");
            assert_eq!(resume_hint(state, why(), false), why(), "{state:?} without a checkpoint");
        }
        assert_eq!(resume_hint(RunState::TimedOut, None, true).as_deref(), Some("the next `drover run` resumes it from its checkpoint"));
        for state in [RunState::Failed, RunState::Done, RunState::Running, RunState::Pending] {
            assert_eq!(resume_hint(state, why(), true), why(), "{state:?}");
        }
    }

    /// `drover status` explains Slurm's pending reasons in words and keeps Slurm's name; the
    /// JSON keeps Slurm's name alone.
    #[test]
    fn held_and_impossible_tasks_are_told_from_waiting_ones() {
        for reason in ["JobHeldAdmin", "JobHeldUser", "launch failed requeued held", "PartitionConfig", "PartitionTimeLimit"] {
            assert!(waits_for_a_person(reason), "{reason}");
        }
        for reason in ["Priority", "Resources", "JobArrayTaskLimit", "Dependency", "BeginTime", "None"] {
            assert!(!waits_for_a_person(reason), "{reason}");
        }
    }

    #[test]
    fn pending_reasons_are_explained_and_keep_slurms_name() {
        assert!(pending_reason_words("PartitionConfig").starts_with("will not start: it asks for more than any node of the partition has"));
        assert!(pending_reason_words("PartitionConfig").ends_with("; Slurm: PartitionConfig"));
        let run = |reason: &str| RunStatus {
            slurm_job: Some("12_3".into()),
            slurm_state: Some("PENDING".into()),
            slurm_reason: Some(reason.into()),
            ..run_status("0123456789abcdef", RunState::Pending)
        };
        let report = StatusReport::new("s".into(), "/r".into(), "slurm", None, vec![run("JobArrayTaskLimit"), run("Odd"), run("None")]);
        let text = report.render();
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines[1].ends_with("seed=7      lr=1  [waiting for a slot: the sweep's runs-at-once limit (`slurm.throttle` or `max_parallel`); Slurm: JobArrayTaskLimit]"),
            "{text}"
        );
        assert!(lines[2].ends_with("  [Slurm: Odd]"), "an unknown reason is shown as Slurm's: {text}");
        assert!(lines[3].ends_with("lr=1"), "no reason, nothing shown: {text}");
        assert!(pending_reason_words("PartitionTimeLimit").starts_with("will not start"));
        let json = serde_json::to_value(&report).expect("json");
        assert_eq!(json["runs"][0]["slurm_reason"], "JobArrayTaskLimit");
    }

    /// Review F4: runs of an earlier version of the sweep, left under `runs/` and out of
    /// `sweep.json`, were not mentioned at all, while `drover analyze` pointed at `status` for them.
    #[test]
    fn the_status_counts_run_directories_not_in_the_sweep() {
        let tmp = tempfile::tempdir().expect("tempdir");
        for id in ["0123456789abcdef", "1123456789abcdef", "2123456789abcdef"] {
            std::fs::create_dir_all(tmp.path().join("runs").join(id)).expect("dir");
        }
        std::fs::create_dir_all(tmp.path().join("runs").join("not-a-run")).expect("dir");
        let runs = vec![run_status("0123456789abcdef", RunState::Done)];
        let mut report = StatusReport::new("s".into(), tmp.path().to_path_buf(), "local", None, runs);
        assert!(!report.render().contains("not part of this sweep"));
        report.count_other_run_dirs();
        assert_eq!(report.other_run_dirs, 2);
        let text = report.render();
        assert!(text.contains(&format!("2 other run directories in `{}` are not part of this sweep (runs of an earlier version of it): kept, not listed here; `drover analyze --all-runs` includes them\n", tmp.path().join("runs").display())), "{text}");
        assert_eq!(serde_json::to_value(&report).expect("json")["other_run_dirs"], 2);
    }

    /// Requeues do not show in a run's state (a requeued run is running again): the text view
    /// names each run's checkpointed stops, and sums them up under the header, only when nonzero.
    #[test]
    fn the_text_status_shows_requeues_and_sigterm_stops_only_when_nonzero() {
        let run = |id: &str, state, time_limit_requeues, preemptions| RunStatus {
            slurm_job: Some("12_0".into()),
            time_limit_requeues,
            preemptions,
            ..run_status(id, state)
        };
        let runs = vec![
            run("000000000000000a", RunState::Done, 2, 1),
            run("000000000000000b", RunState::Running, 1, 0),
            run("000000000000000c", RunState::Done, 0, 0),
            run("000000000000000d", RunState::Pending, 0, 3),
        ];
        let text = StatusReport::new("s".into(), "/r".into(), "slurm", None, runs).render();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[1], "checkpointed stops: 2 runs requeued at the time limit (3 requeues in all); 2 runs stopped by SIGTERM (4 stops in all)", "{text}");
        assert!(lines[2].ends_with("lr=1  [requeued at its time limit twice, stopped by SIGTERM once]"), "{text}");
        assert!(lines[3].ends_with("lr=1  [requeued at its time limit once]"), "{text}");
        assert!(lines[4].ends_with("seed=7      lr=1"), "no stops, nothing shown: {text}");
        assert!(lines[5].ends_with("lr=1  [stopped by SIGTERM 3 times]"), "{text}");

        let quiet = StatusReport::new("s".into(), "/r".into(), "slurm", None, vec![run("000000000000000c", RunState::Done, 0, 0)]).render();
        assert!(!quiet.contains("stop") && !quiet.contains("requeue"), "{quiet}");
        assert_eq!(stops_words(0, 0), None);
    }

    #[test]
    fn progress_is_the_last_complete_metrics_row() {
        let tmp = tempfile::tempdir().expect("tempdir");
        assert_eq!(Progress::read(tmp.path(), Some(10)), None, "no metrics yet");
        let row = |i: u64| format!("{{\"iteration\":{i},\"global_step\":{},\"wall_time_s\":{}.5}}\n", i * 2048, i);
        // Long enough that only the file's tail is read; the last row is still being written.
        let mut text: String = (1..=2000).map(row).collect();
        text.push_str("{\"iteration\":2001,\"glob");
        std::fs::write(tmp.path().join("metrics.jsonl"), text).expect("write");
        let p = Progress::read(tmp.path(), Some(8_192_000)).expect("progress");
        assert_eq!(p, Progress { iteration: 2000, global_step: 4_096_000, total_steps: Some(8_192_000), wall_time_s: Some(2000.5) });
        assert_eq!(p.render(), "50% (step 4,096,000 of 8,192,000)");
        assert_eq!(Progress { total_steps: None, ..p.clone() }.render(), "step 4,096,000");
        assert_eq!(Progress { global_step: 999, total_steps: Some(1000), ..p }.render(), "99% (step 999 of 1,000)");
    }

    /// Review finding (research): a completed run of `total_steps = 20000` (8 × 128 steps an
    /// iteration) read "step 19,456 of 20,000": the job trains whole iterations only.
    #[test]
    fn progress_counts_to_the_steps_whole_iterations_train() {
        let run = |total: u64, envs: u64, steps: u64| {
            let value = serde_json::json!({"total_steps": total, "num_envs": envs, "num_steps": steps});
            value.as_object().cloned().unwrap_or_default()
        };
        assert_eq!(steps_to_train(&run(20_000, 8, 128)), Some(19_456));
        assert_eq!(steps_to_train(&run(2048, 8, 128)), Some(2048), "a whole number of iterations");
        assert_eq!(steps_to_train(&run(100, 8, 128)), Some(1024), "at least one iteration");
        assert_eq!(steps_to_train(&run(100, 0, 128)), None);
        assert_eq!(steps_to_train(&serde_json::Map::new()), None);
        let done = Progress { iteration: 19, global_step: 19_456, total_steps: steps_to_train(&run(20_000, 8, 128)), wall_time_s: None };
        assert_eq!(done.render(), "100% (step 19,456 of 19,456)");
    }
}
