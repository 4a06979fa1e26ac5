//! Per-run status of a Slurm sweep, from one `squeue` answer plus the markers runs write.
//!
//! `classify` is the whole rule (pure, so it is unit-tested on every combination): the job's own
//! `exit.json` wins when it says completed; otherwise a task Slurm still lists decides; when
//! Slurm has forgotten the job (`MinJobAge`), the markers decide, so the answer stays right
//! without `sacct`. `StatusReport` is the `drover status --json` boundary (format_version 1).

use std::collections::BTreeMap;
use std::path::PathBuf;

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
}

/// The state of one run, and a reason when it did not complete.
pub fn classify(exit: Option<&ExitRecord>, slurm: SlurmView<'_>, cancelled_by_drover: bool) -> (RunState, Option<String>) {
    if exit.is_some_and(|e| e.status == ExitStatus::Completed) {
        return (RunState::Done, None);
    }
    let marker = || match exit {
        Some(e) if e.status == ExitStatus::Failed => Some((RunState::Failed, e.reason.clone())),
        Some(e) => Some((RunState::Cancelled, e.reason.clone())),
        None => None,
    };
    match slurm {
        SlurmView::NotSubmitted => (RunState::NotSubmitted, None),
        SlurmView::Listed(state) => match state {
            "PENDING" | "CONFIGURING" | "REQUEUED" | "REQUEUE_FED" | "REQUEUE_HOLD" | "RESV_DEL_HOLD" | "SUSPENDED"
            | "RESIZING" => (RunState::Pending, None),
            "RUNNING" | "COMPLETING" | "SIGNALING" | "STAGE_OUT" => (RunState::Running, None),
            "TIMEOUT" | "DEADLINE" => (RunState::TimedOut, Some(format!("Slurm: {state}"))),
            "PREEMPTED" => (RunState::Preempted, Some("Slurm: PREEMPTED".into())),
            "CANCELLED" => (RunState::Cancelled, marker().and_then(|m| m.1).or(Some("Slurm: CANCELLED".into()))),
            // COMPLETED without a completed marker, FAILED, OUT_OF_MEMORY, NODE_FAIL, BOOT_FAIL...
            other => match marker() {
                Some(m) => m,
                None if cancelled_by_drover => (RunState::Cancelled, Some("cancelled by `drover cancel`".into())),
                None => (RunState::Failed, Some(format!("Slurm: {other}, and the job wrote no exit.json"))),
            },
        },
        SlurmView::Forgotten => match marker() {
            Some(m) => m,
            None if cancelled_by_drover => (RunState::Cancelled, Some("cancelled by `drover cancel`".into())),
            None => (
                RunState::Failed,
                Some("the job wrote no exit.json and Slurm no longer lists it (killed, out of memory, or node failure?)".into()),
            ),
        },
    }
}

/// One run in `drover status --json`.
#[derive(Debug, Clone, Serialize)]
pub struct RunStatus {
    /// The run id.
    pub run_id: String,
    /// Its configuration label.
    pub label: String,
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
    /// Per-attempt stdout/stderr logs, oldest first.
    pub logs: Vec<PathBuf>,
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
    /// Runs per state.
    pub counts: BTreeMap<RunState, usize>,
    /// Every run of the sweep, in expansion order.
    pub runs: Vec<RunStatus>,
}

impl StatusReport {
    /// The human-readable table.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let counts: Vec<String> = self.counts.iter().map(|(s, n)| format!("{n} {}", s.as_str())).collect();
        out.push_str(&format!("sweep `{}`: {} runs: {}\n", self.sweep, self.runs.len(), counts.join(", ")));
        for r in &self.runs {
            let job = r.slurm_job.as_deref().unwrap_or("-");
            out.push_str(&format!("{}  {:<13} {:<10} {}", r.run_id, r.state.as_str(), job, r.label));
            if let Some(reason) = &r.reason {
                out.push_str(&format!("  ({reason})"));
            }
            if let Some(reason) = r.slurm_reason.as_deref().filter(|s| *s != "None" && r.state == RunState::Pending) {
                out.push_str(&format!("  [{reason}]"));
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
mod tests {
    use super::*;

    fn exit(status: ExitStatus, reason: Option<&str>) -> ExitRecord {
        ExitRecord {
            format_version: 1,
            run_id: "r".into(),
            status,
            reason: reason.map(str::to_string),
            finished_at: serde_json::Value::Null,
        }
    }

    #[test]
    fn the_jobs_completed_marker_wins_over_everything() {
        let done = exit(ExitStatus::Completed, None);
        for view in [SlurmView::Listed("RUNNING"), SlurmView::Listed("CANCELLED"), SlurmView::Forgotten] {
            assert_eq!(classify(Some(&done), view, true).0, RunState::Done, "{view:?}");
        }
    }

    #[test]
    fn slurm_decides_while_it_lists_the_task_and_markers_after() {
        let cancelled = exit(ExitStatus::Cancelled, Some("SIGTERM (preempted, requeued or cancelled); checkpoint at iteration 3"));
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
            assert_eq!(classify(exit, view, by_drover).0, expected, "{exit:?} {view:?} {by_drover}");
        }
        assert_eq!(classify(Some(&failed), SlurmView::Forgotten, false).1.as_deref(), Some("plugin error"));
    }
}
