//! Serde mirrors of the records the orchestrator reads back but does not write: the lines a
//! job (`interruptions.jsonl`) and its batch script (`attempts.jsonl`) append beside a run, and
//! the part of a tasks-file line that `drover status` shows before a run has started.
//!
//! The orchestrator does not link `drover-job` (ARCHITECTURE.md), so these are its own types,
//! each read in one function and tested against literal copies of what the writers write.
//! Fields older writers or hand-written fixtures leave out have serde defaults, unknown fields
//! are ignored, and a line of a newer `format_version` is read as far as its known fields go,
//! with one warning: these files only feed status, so no reader of them fails.

use std::path::Path;

use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::layout::INTERRUPTIONS_JSONL;

use super::jsonl::{JsonLine, format_version, jsonl_lines, parse_line, warn_line, warn_torn};

/// `attempts.jsonl` in a run directory: one line per attempt, appended by the batch script.
pub(super) const ATTEMPTS_JSONL: &str = "attempts.jsonl";

/// The newest `interruptions.jsonl` line this drover knows: `drover-job`'s
/// `INTERRUPTIONS_FORMAT_VERSION` (jobs/src/checkpoint.rs; 1 and 2 are the same fields).
pub(super) const INTERRUPTIONS_FORMAT_VERSION: u32 = 2;

/// The newest `attempts.jsonl` line this drover knows (the batch script's `printf`,
/// backend/slurm_template.sbatch).
pub(super) const ATTEMPTS_FORMAT_VERSION: u32 = 1;

/// A record of a JSON-lines file a job or its batch script appends to a run directory.
pub(super) trait JobRecord: DeserializeOwned {
    /// The file's name in the run directory.
    const FILE: &'static str;
    /// The newest `format_version` of its lines this drover knows.
    const KNOWN_VERSION: u32;
    /// The line's `format_version`.
    fn format_version(&self) -> u32;
}

/// What stopped a job at a checkpoint (`drover-job`'s `Interruption`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum StopReason {
    /// The checkpoint signal before the time limit: the job requeued itself.
    TimeLimit,
    /// SIGTERM: preempted, requeued or cancelled.
    Terminated,
    /// A reason a newer `drover-job` wrote: counted as neither.
    #[serde(other)]
    Other,
}

/// One line of `interruptions.jsonl`, as `drover-job` writes it (`InterruptionRecord`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub(super) struct InterruptionLine {
    /// 1 or 2 (the same fields); none in hand-written fixtures, read as 1.
    #[serde(default = "version_one")]
    pub(super) format_version: u32,
    pub(super) reason: StopReason,
    /// Iterations completed at the checkpoint.
    pub(super) iteration: u64,
    /// Slurm's job id of the stopped attempt (none outside Slurm).
    #[serde(default)]
    pub(super) slurm_job_id: Option<String>,
    /// Unix seconds.
    #[serde(default)]
    pub(super) at: Option<String>,
}

impl JobRecord for InterruptionLine {
    const FILE: &'static str = INTERRUPTIONS_JSONL;
    const KNOWN_VERSION: u32 = INTERRUPTIONS_FORMAT_VERSION;
    fn format_version(&self) -> u32 {
        self.format_version
    }
}

/// One line of `attempts.jsonl`, as the batch script writes it (every value a string but the
/// attempt number). Test fixtures and older scripts leave fields out, `format_version` and
/// `attempt` included.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub(super) struct AttemptLine {
    #[serde(default = "version_one")]
    pub(super) format_version: u32,
    /// `k` of the attempt's `attempt-<k>.*` files.
    #[serde(default)]
    pub(super) attempt: Option<u64>,
    #[serde(default)]
    pub(super) slurm_job_id: Option<String>,
    #[serde(default)]
    pub(super) array_job_id: Option<String>,
    #[serde(default)]
    pub(super) array_task_id: Option<String>,
    #[serde(default)]
    pub(super) restart_count: Option<String>,
    #[serde(default)]
    pub(super) host: Option<String>,
    /// `uname -m` of the node.
    #[serde(default)]
    pub(super) machine: Option<String>,
    /// Unix seconds.
    #[serde(default)]
    pub(super) started_at: Option<String>,
}

impl AttemptLine {
    /// Whether the attempt ran as task `index` of array `job_id`.
    pub(super) fn ran_as(&self, job_id: &str, index: usize) -> bool {
        self.ran_in(job_id) && self.array_task_id.as_deref() == Some(index.to_string().as_str())
    }

    /// Whether the attempt ran in array `job_id`.
    pub(super) fn ran_in(&self, job_id: &str) -> bool {
        self.array_job_id.as_deref() == Some(job_id)
    }
}

impl JobRecord for AttemptLine {
    const FILE: &'static str = ATTEMPTS_JSONL;
    const KNOWN_VERSION: u32 = ATTEMPTS_FORMAT_VERSION;
    fn format_version(&self) -> u32 {
        self.format_version
    }
}

fn version_one() -> u32 {
    1
}

/// The records of `run_dir`'s file of `T`, oldest first; a missing or unreadable file is none.
/// A torn line (a write cut short) is skipped with a warning, keeping a record appended after
/// it on the same line; a line that is JSON but not such a record is skipped with a warning
/// naming the error; a line of a newer `format_version` is kept with a warning.
pub(super) fn read_records<T: JobRecord>(run_dir: &Path) -> Vec<T> {
    let path = run_dir.join(T::FILE);
    let Ok(text) = std::fs::read_to_string(&path) else { return Vec::new() };
    let newer = |v: u64| format!("format_version {v}, newer than this drover reads ({}): a newer drover wrote it", T::KNOWN_VERSION);
    let mut records = Vec::new();
    for (i, line, ended) in jsonl_lines(&text) {
        let record = match parse_line::<T>(line) {
            JsonLine::Record(record) => record,
            JsonLine::Fused(record) => {
                warn_torn(&path, i + 1, "the record after it on the same line is kept");
                record
            }
            JsonLine::Torn => {
                // A line not ended yet may still be being written.
                if ended {
                    warn_torn(&path, i + 1, "skipped");
                }
                continue;
            }
            JsonLine::Invalid { text, error } => {
                let why = match format_version(text) {
                    Some(v) if v > u64::from(T::KNOWN_VERSION) => newer(v),
                    _ => error.to_string(),
                };
                warn_line(&path, i + 1, &format!("not a record this drover reads ({why}): skipped"));
                continue;
            }
        };
        let v = record.format_version();
        if v > T::KNOWN_VERSION {
            warn_line(&path, i + 1, &format!("{}: read as far as its fields are known", newer(v.into())));
        }
        records.push(record);
    }
    records
}

/// What `drover status` reads of a run's `spec.json` line in an array's tasks file (a
/// `JobSpec` on one line, written by `submit.rs`) before the batch script has created the run's
/// directory; what is missing or of another shape is left empty.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub(super) struct TaskSpecLine {
    pub(super) label: String,
    pub(super) run: TaskSpecRun,
}

/// The `run` table of a [`TaskSpecLine`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub(super) struct TaskSpecRun {
    pub(super) seed: Option<u64>,
}

impl TaskSpecLine {
    /// Line `line` of a tasks file (`<run id>\t<spec.json on one line>`); empty when it does
    /// not parse.
    pub(super) fn parse(line: &str) -> Self {
        let spec = line.split_once('\t').map_or("", |(_, s)| s);
        serde_json::from_str(spec).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Literal copies of what the writers write, read back field by field: an
    /// `InterruptionRecord` line of `drover-job` (jobs/src/checkpoint.rs, `record_interruption`:
    /// `serde_json::to_vec` of the struct, in field order) of each format version, and a line of
    /// the batch script (backend/slurm_template.sbatch, the `printf` into `attempts.jsonl`). A
    /// change to either writer that drops or retypes a field fails here.
    #[test]
    fn the_writers_lines_read_back_field_by_field() {
        let dir = tempfile::tempdir().expect("tempdir");
        // jobs/src/checkpoint.rs `record_interruption`, INTERRUPTIONS_FORMAT_VERSION 2 (and 1).
        let v2 = r#"{"format_version":2,"reason":"time_limit","iteration":12,"slurm_job_id":"4242","at":"1767225600"}"#;
        let v1 = r#"{"format_version":1,"reason":"terminated","iteration":3,"slurm_job_id":null,"at":"1767225500"}"#;
        // A line `drover-job` wrote outside Slurm; a hand-written fixture's line without
        // `format_version` (backend/slurm/rerun.rs tests).
        let fixture = r#"{"reason":"time_limit","iteration":7}"#;
        std::fs::write(dir.path().join(INTERRUPTIONS_JSONL), format!("{v1}\n{v2}\n{fixture}\n")).expect("write");
        let stops: Vec<InterruptionLine> = read_records(dir.path());
        assert_eq!(stops, [
            InterruptionLine {
                format_version: 1,
                reason: StopReason::Terminated,
                iteration: 3,
                slurm_job_id: None,
                at: Some("1767225500".into()),
            },
            InterruptionLine {
                format_version: 2,
                reason: StopReason::TimeLimit,
                iteration: 12,
                slurm_job_id: Some("4242".into()),
                at: Some("1767225600".into()),
            },
            InterruptionLine { format_version: 1, reason: StopReason::TimeLimit, iteration: 7, slurm_job_id: None, at: None },
        ]);

        // backend/slurm_template.sbatch: printf '{"format_version":1,"attempt":%d,...}\n'.
        let attempt = r#"{"format_version":1,"attempt":2,"slurm_job_id":"4243","array_job_id":"4240","array_task_id":"3","restart_count":"1","host":"node-7","machine":"x86_64","started_at":"1767225601"}"#;
        // A fixture's line (backend/slurm/after.rs tests): the array alone.
        let fixture = r#"{"array_job_id":"60","array_task_id":"0"}"#;
        std::fs::write(dir.path().join(ATTEMPTS_JSONL), format!("{attempt}\n{fixture}\n")).expect("write");
        let attempts: Vec<AttemptLine> = read_records(dir.path());
        assert_eq!(attempts, [
            AttemptLine {
                format_version: 1,
                attempt: Some(2),
                slurm_job_id: Some("4243".into()),
                array_job_id: Some("4240".into()),
                array_task_id: Some("3".into()),
                restart_count: Some("1".into()),
                host: Some("node-7".into()),
                machine: Some("x86_64".into()),
                started_at: Some("1767225601".into()),
            },
            AttemptLine { array_job_id: Some("60".into()), array_task_id: Some("0".into()), ..AttemptLine { format_version: 1, ..Default::default() } },
        ]);
        assert!(attempts[0].ran_as("4240", 3) && !attempts[0].ran_as("4240", 0) && attempts[1].ran_in("60"));
    }

    /// The copies above stay copies: the batch script still writes the attempt line's fields
    /// in that shape, and `drover-job` still writes the interruption version this drover knows
    /// (the orchestrator cannot name its constant; a bump must come here too).
    #[test]
    fn the_writers_are_what_the_copies_copy() {
        let printf = r#"printf '{"format_version":1,"attempt":%d,"slurm_job_id":"%s","array_job_id":"%s","array_task_id":"%s","restart_count":"%s","host":"%s","machine":"%s","started_at":"%s"}\n'"#;
        assert!(crate::backend::slurm_script::TEMPLATE.contains(printf), "the batch script's attempts.jsonl line changed");
        let jobs = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../jobs/src/checkpoint.rs");
        let text = std::fs::read_to_string(&jobs).expect("jobs/src/checkpoint.rs");
        let known = format!("pub const INTERRUPTIONS_FORMAT_VERSION: u32 = {INTERRUPTIONS_FORMAT_VERSION};");
        assert!(text.contains(&known), "`{}` no longer says `{known}`", jobs.display());
    }

    /// A line of a newer format is read as far as its fields are known (with a warning), an
    /// unknown stop reason counts as neither kind, and a line that is not such a record is
    /// skipped; none of it is an error.
    #[test]
    fn newer_and_foreign_lines_are_read_or_skipped_without_failing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let lines = [
            r#"{"format_version":3,"reason":"time_limit","iteration":4,"new_field":[1]}"#,
            r#"{"format_version":3,"reason":"out_of_memory","iteration":5}"#,
            r#"{"format_version":3,"reason":"terminated","iteration":"six"}"#,
            r#"{"format_version":2,"reason":"terminated","iteration":6}"#,
        ];
        std::fs::write(dir.path().join(INTERRUPTIONS_JSONL), lines.join("\n") + "\n").expect("write");
        let stops: Vec<InterruptionLine> = read_records(dir.path());
        let seen: Vec<(u32, StopReason, u64)> = stops.iter().map(|s| (s.format_version, s.reason, s.iteration)).collect();
        assert_eq!(seen, [(3, StopReason::TimeLimit, 4), (3, StopReason::Other, 5), (2, StopReason::Terminated, 6)]);
        assert!(read_records::<AttemptLine>(dir.path()).is_empty(), "no file, no attempts");
    }

    /// A tasks-file line gives the run's label and seed; a line of another shape gives none.
    #[test]
    fn a_tasks_file_line_gives_label_and_seed() {
        let line = "0123456789abcdef\t{\"format_version\":1,\"run_id\":\"0123456789abcdef\",\"label\":\"lr=0.1\",\"run\":{\"seed\":4,\"env\":\"CartPole-v1\"}}";
        assert_eq!(TaskSpecLine::parse(line), TaskSpecLine { label: "lr=0.1".into(), run: TaskSpecRun { seed: Some(4) } });
        assert_eq!(TaskSpecLine::parse("0123456789abcdef\t{\"label\":\"x\"}").label, "x");
        assert_eq!(TaskSpecLine::parse("no tab"), TaskSpecLine::default());
    }
}
