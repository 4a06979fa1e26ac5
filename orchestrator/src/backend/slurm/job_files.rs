//! Reading back what a job and its batch script write beside a run: `interruptions.jsonl`,
//! `attempts.jsonl` (their lines typed in `job_records.rs`), `attempt-<k>.rc` and the attempt
//! logs, and the array's tasks file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::backend::prepare::attempt_number;
use crate::layout::CHECKPOINT_JSON;
use crate::status::Progress;

use super::SLURM_DIR;
use super::job_records::{AttemptLine, InterruptionLine, StopReason, TaskSpecLine, read_records};

/// The run's checkpointed stops from `interruptions.jsonl` (written by `drover-job`), oldest
/// first; a missing file is none. A torn line (a write cut short) is skipped with a warning,
/// keeping a record the job appended after it on the same line.
pub(super) fn interruptions(run_dir: &Path) -> Vec<InterruptionLine> {
    read_records(run_dir)
}

/// The run's interruption counts: (time limits, terminations).
pub(super) fn interruption_counts(run_dir: &Path) -> (u32, u32) {
    let mut counts = (0, 0);
    for stop in interruptions(run_dir) {
        match stop.reason {
            StopReason::TimeLimit => counts.0 += 1,
            StopReason::Terminated => counts.1 += 1,
            StopReason::Other => {}
        }
    }
    counts
}

/// `attempt-<n>.stdout.log` / `.stderr.log` files of a run, by attempt, each attempt's stdout
/// before its stderr: the last log is then the latest stderr, where a job writes why it
/// stopped, and that is the one `drover run` points to after a run did not complete.
pub(crate) fn attempt_logs(run_dir: &Path) -> Vec<PathBuf> {
    let mut logs: Vec<(u32, bool, PathBuf)> = std::fs::read_dir(run_dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let n = attempt_number(&name)?;
            let stderr = name.ends_with(".stderr.log");
            (name.ends_with(".stdout.log") || stderr).then(|| (n, stderr, e.path()))
        })
        .collect();
    logs.sort();
    logs.into_iter().map(|(_, _, p)| p).collect()
}

/// What the tasks file says of a run whose directory the batch script has not created yet.
#[derive(Debug, Clone, Default, PartialEq)]
pub(super) struct TaskInfo {
    pub(super) label: String,
    pub(super) seed: Option<u64>,
}

/// Label and seed of each of submission `n`'s tasks (from its tasks file, for runs whose
/// directory the batch script has not created yet), cached in `cache`.
pub(super) fn task_infos<'c>(root: &Path, n: u32, cache: &'c mut BTreeMap<u32, Vec<TaskInfo>>) -> &'c Vec<TaskInfo> {
    cache.entry(n).or_insert_with(|| {
        let text = std::fs::read_to_string(root.join(SLURM_DIR).join(format!("array-{n}.tasks"))).unwrap_or_default();
        text.lines()
            .map(TaskSpecLine::parse)
            .map(|spec| TaskInfo { label: spec.label, seed: spec.run.seed })
            .collect()
    })
}

/// The last attempt the batch script recorded in the run's `attempts.jsonl`.
pub(super) fn last_attempt(run_dir: &Path) -> Option<AttemptLine> {
    read_records(run_dir).pop()
}

/// The latest attempt (`attempts.jsonl`) and the exit code the batch script recorded for it in
/// `attempt-<k>.rc` once it ended; `None` while it runs (or for a script from before the file).
pub(super) fn ended_attempt(run_dir: &Path) -> Option<(u64, i32)> {
    let attempt = last_attempt(run_dir)?.attempt?;
    let code = std::fs::read_to_string(run_dir.join(format!("attempt-{attempt}.rc"))).ok()?.trim().parse().ok()?;
    Some((attempt, code))
}

/// Whether the run's latest attempt (the last line of `attempts.jsonl`, written by the batch
/// script) ran as task `index` of array `job_id`: then a stop marker beside that task, queued
/// again, means Slurm requeued it; after a resubmission the attempt belongs to another array.
pub(super) fn last_attempt_ran_in(run_dir: &Path, job_id: &str, index: usize) -> bool {
    last_attempt(run_dir).is_some_and(|last| last.ran_as(job_id, index))
}

/// Whether run `run_dir` had an attempt in array `job_id`, as its `attempts.jsonl` says.
pub(super) fn ever_ran_in(run_dir: &Path, job_id: &str) -> bool {
    read_records::<AttemptLine>(run_dir).iter().any(|a| a.ran_in(job_id))
}

/// Whether the run failed at a checkpointed stop: it kept its checkpoint and its last recorded
/// interruption is at its last metrics row. A run that failed after resuming (an error, a
/// crash) has trained past its last interruption, and starts over like any failure.
pub(super) fn failed_at_a_stop(run_dir: &Path) -> bool {
    if !run_dir.join(CHECKPOINT_JSON).exists() {
        return false;
    }
    let last = interruptions(run_dir).last().map(|stop| stop.iteration);
    last.is_some() && last == Progress::read(run_dir, None).map(|p| p.iteration)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::INTERRUPTIONS_JSONL;

    /// Each attempt's stdout comes before its stderr, so the last log (the one `drover run`
    /// names after a run did not complete) is the latest stderr, where the job says why.
    #[test]
    fn the_last_log_of_a_run_is_its_latest_stderr() {
        let dir = tempfile::tempdir().expect("tempdir");
        for name in ["attempt-1.stderr.log", "attempt-1.stdout.log", "attempt-2.stdout.log", "attempt-2.stderr.log", "attempt-10.stdout.log", "attempt-10.stderr.log", "attempt-1.exit.json"] {
            std::fs::write(dir.path().join(name), b"").expect("write");
        }
        let names: Vec<String> =
            attempt_logs(dir.path()).iter().map(|p| p.file_name().expect("name").to_string_lossy().into_owned()).collect();
        assert_eq!(
            names,
            ["attempt-1.stdout.log", "attempt-1.stderr.log", "attempt-2.stdout.log", "attempt-2.stderr.log", "attempt-10.stdout.log", "attempt-10.stderr.log"]
        );
    }

    /// `attempts.jsonl` read past a torn line: an attempt the batch script appended right after
    /// a fragment (on the same line) is the latest one, whose `.rc` and array count; a line
    /// without `format_version` or `attempt` (older scripts, test fixtures) still names its array.
    #[test]
    fn the_latest_attempt_is_read_past_a_torn_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let attempt = |n: u32, job: &str| {
            format!(r#"{{"format_version":1,"attempt":{n},"slurm_job_id":"9{n}","array_job_id":"{job}","array_task_id":"0","restart_count":"0","host":"n1","machine":"x86_64","started_at":"1"}}"#)
        };
        let text = format!("{}\n{{\"format_version\":1,\"att{}\n", attempt(1, "77"), attempt(2, "78"));
        std::fs::write(dir.path().join("attempts.jsonl"), text).expect("attempts");
        std::fs::write(dir.path().join("attempt-2.rc"), "1\n").expect("rc");
        assert_eq!(ended_attempt(dir.path()), Some((2, 1)));
        assert!(last_attempt_ran_in(dir.path(), "78", 0) && !last_attempt_ran_in(dir.path(), "77", 0));
        assert!(ever_ran_in(dir.path(), "77") && ever_ran_in(dir.path(), "78"));
        std::fs::write(dir.path().join("attempts.jsonl"), "{\"array_job_id\":\"60\",\"array_task_id\":\"0\"}\n").expect("attempts");
        assert!(last_attempt_ran_in(dir.path(), "60", 0) && ever_ran_in(dir.path(), "60"));
        assert_eq!(ended_attempt(dir.path()), None, "no attempt number, no `.rc` to read");
    }

    /// `interruptions.jsonl` read past a torn line: the stops on either side still count.
    #[test]
    fn interruptions_are_counted_past_a_torn_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let stop = |reason: &str| format!(r#"{{"format_version":1,"reason":"{reason}","iteration":3,"slurm_job_id":"9","at":"1"}}"#);
        let text = format!("{}\n{{\"format_version\":1,\"rea\n{}\n{{\"format_vers{}\n", stop("time_limit"), stop("terminated"), stop("time_limit"));
        std::fs::write(dir.path().join(INTERRUPTIONS_JSONL), text).expect("interruptions");
        assert_eq!(interruption_counts(dir.path()), (2, 1));
    }
}
