//! The Slurm backend: one sweep → one job array (more when it exceeds `MaxArraySize` or runs
//! need different resources), a ledger of submissions, status from one `squeue` per poll plus
//! the runs' own markers, retries, re-attachment and cancellation (docs/design/slurm.md).
//!
//! Files under `<results>/slurm/`: `submissions.jsonl` (the ledger, append-only),
//! `array-<n>.sbatch` (the rendered batch script of submission n), `array-<n>.tasks` (run id of
//! each array index) and `logs/` (Slurm's own output of each task). Only `slurm_cmd` runs
//! Slurm's commands.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::backend::prepare::{archive_partial, attempt_number};
use crate::backend::slurm_cmd::{QueueEntry, Slurm};
use crate::backend::slurm_config::{Resources, SlurmSettings};
use crate::backend::slurm_script::{self, ScriptParams};
use crate::config::RunId;
use crate::error::RunError;
use crate::layout::{self, ExitRecord, JobSpec, SweepManifest, CHECKPOINT_JSON, EXIT_JSON, INTERRUPTIONS_JSONL, SPEC_JSON, SWEEP_JSON};
use crate::plan::Plan;
use crate::status::{classify, resume_hint, Progress, RunFacts, RunState, RunStatus, SlurmView, StatusReport};

/// `slurm/` inside a results directory.
pub const SLURM_DIR: &str = "slurm";
/// The ledger file inside `slurm/`.
pub const LEDGER: &str = "submissions.jsonl";
/// The ledger's format version.
pub const LEDGER_FORMAT_VERSION: u32 = 1;
/// The lock file inside `slurm/` that serialises appends to the ledger.
pub const LEDGER_LOCK: &str = ".ledger.lock";
/// How long an append waits for another command's append to the ledger before going on.
const LEDGER_LOCK_PATIENCE: Duration = Duration::from_secs(10);

/// One line of a JSON-lines file (the ledger, or the files a job appends to), as read.
enum JsonLine<'a, T> {
    /// A whole record.
    Record(T),
    /// A line that is not JSON, ending with a whole record: a writer appended the record right
    /// after a torn write without ending the torn line first (as drover did before it knew).
    Fused(T),
    /// Not JSON: a write cut short (a full disk, a crash).
    Torn,
    /// JSON, but not a record of this type (`text`: the JSON of the line, or of its fused record).
    Invalid { text: &'a str, error: serde_json::Error },
}

/// How every record of drover's JSON-lines files begins (its first field): where a fused line's
/// second record starts. The text cannot occur inside a JSON string, whose quotes are escaped.
const RECORD_START: &str = "{\"format_version\"";

/// Reads one line of a JSON-lines file ([`JsonLine`]).
fn parse_line<T: serde::de::DeserializeOwned>(line: &str) -> JsonLine<'_, T> {
    let is_json = |text: &str| serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok();
    match serde_json::from_str::<T>(line) {
        Ok(record) => JsonLine::Record(record),
        Err(error) if is_json(line) => JsonLine::Invalid { text: line, error },
        Err(_) => match line.rfind(RECORD_START).filter(|&at| at > 0).map(|at| &line[at..]) {
            Some(rest) if is_json(rest) => match serde_json::from_str::<T>(rest) {
                Ok(record) => JsonLine::Fused(record),
                Err(error) => JsonLine::Invalid { text: rest, error },
            },
            _ => JsonLine::Torn,
        },
    }
}

/// The non-blank lines of a JSON-lines file: (index, line, whether a newline ends it).
fn jsonl_lines(text: &str) -> impl Iterator<Item = (usize, &str, bool)> {
    let count = text.lines().count();
    text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()).map(move |(i, l)| (i, l, i + 1 < count || text.ends_with('\n')))
}

/// The `format_version` a JSON record says it has, if any.
fn format_version(json: &str) -> Option<u64> {
    #[derive(Deserialize)]
    struct Versioned {
        format_version: Option<u64>,
    }
    serde_json::from_str::<Versioned>(json).ok()?.format_version
}

/// Warns, once per process for each file and line, that line `line` of `path` is a torn write
/// (`what`: what became of it). A waiting `drover run` reads its files at every poll.
fn warn_torn(path: &Path, line: usize, what: &str) {
    use std::sync::Mutex;
    static WARNED: Mutex<BTreeSet<(PathBuf, usize)>> = Mutex::new(BTreeSet::new());
    let first = WARNED.lock().map_or(true, |mut warned| warned.insert((path.to_path_buf(), line)));
    if first {
        tracing::warn!("`{}`: line {line} is not JSON, a write cut short (a full disk or a crash): {what}", path.display());
    }
}

/// What a run's provenance records at submission (the run's `spec.json` is its resolved config;
/// each attempt adds host and job id to `runs/<id>/attempts.jsonl`).
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct Provenance {
    /// drover's version.
    pub drover_version: String,
    /// `git rev-parse HEAD` in the sweep file's directory, when it is in a repository.
    pub git_revision: Option<String>,
    /// The sweep file.
    pub sweep_file: PathBuf,
    /// Plugin name → (path, SHA-256).
    pub plugins: BTreeMap<String, (PathBuf, String)>,
    /// The submitting host.
    pub submit_host: String,
    /// The submitting user's uid, whose jobs the sweep's `squeue` calls ask for (absent in
    /// submissions from before it was recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub submit_uid: Option<u32>,
    /// `[slurm.arch]`: machine → file name (`drover-job`, each plugin's) → SHA-256 of the build
    /// that nodes of that machine run.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub arch_builds: BTreeMap<String, BTreeMap<String, String>>,
    /// `slurm.after`: the terms on the user's own jobs that the array waits on (absent when
    /// none, and in submissions from before the setting).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub after: Vec<String>,
}

/// Why drover resubmitted a run itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RetryKind {
    /// It failed (budget `max_retries`); it starts over.
    Failed,
    /// Slurm killed it at its time limit (budget `max_timeouts`); it resumes from its checkpoint.
    TimedOut,
    /// Slurm preempted it without requeueing (budget `max_preemptions`); it resumes.
    Preempted,
}

impl RetryKind {
    /// The words `drover run` prints for it.
    pub fn as_str(self) -> &'static str {
        match self {
            RetryKind::Failed => "failure",
            RetryKind::TimedOut => "time-limit",
            RetryKind::Preempted => "preemption",
        }
    }

    /// The `[slurm]` key holding its budget.
    pub fn budget_key(self) -> &'static str {
        match self {
            RetryKind::Failed => "max_retries",
            RetryKind::TimedOut => "max_timeouts",
            RetryKind::Preempted => "max_preemptions",
        }
    }
}

/// One ledger event.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum LedgerEvent {
    /// Written before `sbatch`: what submission `submission` holds.
    Intent {
        /// Submission number.
        submission: u32,
        /// `--job-name` (the same for the whole sweep).
        job_name: String,
        /// `--comment` (unique per submission): how a lost submission is found again.
        comment: String,
        /// The batch script's file name in `slurm/`.
        script: String,
        /// Run id of each array index.
        runs: Vec<String>,
        /// Provenance of the submission (boxed: it is most of an intent's size).
        provenance: Box<Provenance>,
        /// The array's `%N` (added in format 1 as an optional field).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        throttle: Option<u32>,
        /// The sweep's throttle, when `throttle` was set lower because older arrays of the sweep
        /// still had live runs: drover raises the array's throttle toward it as those end.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        raise_to: Option<u32>,
    },
    /// Written after the intent of an array whose tasks train several runs each, before its
    /// `sbatch`: task `i` trains `runs[i*k..(i+1)*k]` one after another. A record of its own
    /// (added in format 1) rather than a field of the intent, so that a drover from before
    /// refuses the ledger, naming the line, instead of reading one run per task and
    /// resubmitting runs still queued in packed tasks.
    Packed {
        /// Submission number.
        submission: u32,
        /// Runs per array task (`slurm.runs_per_task`, at least 2).
        runs_per_task: u32,
    },
    /// `sbatch` answered with this job id.
    Submitted {
        /// Submission number.
        submission: u32,
        /// The array's job id.
        job_id: String,
    },
    /// `sbatch` refused; nothing was submitted.
    Refused {
        /// Submission number.
        submission: u32,
        /// Slurm's message.
        message: String,
    },
    /// drover lifts a waiting array (one submitted with `--dependency=afterany`, since the
    /// throttle left it no slot) as soon as the sweep has free slots: written before it sets the
    /// array's `ArrayTaskThrottle` to `throttle` and then clears its dependency (added in format
    /// 1; a ledger without it reads as before). From then on the array counts as one started at
    /// `throttle` and raised toward `raise_to`.
    Lifted {
        /// Submission number.
        submission: u32,
        /// The array's `%N` from now on: the free slots of the sweep's throttle.
        throttle: u32,
        /// The sweep's throttle, which the array is raised toward as other runs end.
        raise_to: u32,
    },
    /// `drover cancel`: the arrays it cancelled; or a waiting `drover run` that stopped a
    /// failing sweep (`reason` set), which cancelled only the arrays' queued tasks.
    Cancelled {
        /// The last submission at the time.
        upto_submission: u32,
        /// The arrays that had queued or running tasks, which `scancel` was given (added in
        /// format 1 as an optional field; a record without it covers every submission up to
        /// `upto_submission`, as before).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        job_ids: Option<Vec<String>>,
        /// Why `drover run` cancelled them itself (`slurm.fail_fast`); absent for `drover
        /// cancel` (an optional field of format 1: older drovers read the record as a cancel).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// drover resubmits a run.
    Retry {
        /// The run.
        run_id: String,
        /// Which budget it counts against.
        retry: RetryKind,
        /// Why the previous attempt ended.
        reason: String,
    },
}

/// One line of the ledger.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct LedgerLine {
    format_version: u32,
    at: String,
    #[serde(flatten)]
    event: LedgerEvent,
}

/// A submission as the ledger knows it.
#[derive(Debug, Clone)]
pub struct Submission {
    /// `--job-name`.
    pub job_name: String,
    /// `--comment`.
    pub comment: String,
    /// Run id per array index.
    pub runs: Vec<String>,
    /// The job id, once known.
    pub job_id: Option<String>,
    /// Slurm's refusal, if it refused.
    pub refused: Option<String>,
    /// The array's `%N` at submission.
    pub throttle: Option<u32>,
    /// The sweep's throttle, when the array started below it (see [`LedgerEvent::Intent`]).
    pub raise_to: Option<u32>,
    /// The `%N` of the latest lift of a waiting array ([`LedgerEvent::Lifted`]), which also set
    /// `throttle` and `raise_to`.
    pub lifted: Option<u32>,
    /// The submitting user's uid ([`Provenance::submit_uid`]).
    pub submit_uid: Option<u32>,
    /// Runs per array task: the run at position `p` of `runs` is trained by task
    /// `p / runs_per_task`.
    pub runs_per_task: usize,
    /// `slurm.after`'s terms it was submitted with ([`Provenance::after`]).
    pub after: Vec<String>,
}

impl Submission {
    /// The array task that trains the run at `position` of `runs`.
    pub fn task_of(&self, position: usize) -> usize {
        position / self.runs_per_task.max(1)
    }
}

/// The folded ledger of a results directory.
#[derive(Debug, Clone, Default)]
pub struct Ledger {
    path: PathBuf,
    /// Submissions by number.
    pub submissions: BTreeMap<u32, Submission>,
    /// An old `drover cancel` record (without job ids) covers submissions up to this one.
    pub cancelled_upto: Option<u32>,
    /// Arrays that `drover cancel` cancelled.
    pub cancelled_jobs: BTreeSet<String>,
    /// Why `drover run` cancelled an array's queued tasks itself (`slurm.fail_fast`).
    pub cancel_reasons: BTreeMap<String, String>,
    /// `drover cancel` records so far: a waiting `drover run` that sees a new one submits
    /// nothing more.
    pub user_cancels: usize,
    /// The last submission at the latest `drover cancel`: arrays submitted after it, by a
    /// `drover run` that had not seen the cancel yet, are cancelled by that `drover run`.
    pub cancelled_upto_latest: Option<u32>,
    /// Retries per run and kind.
    pub retries: BTreeMap<(String, RetryKind), u32>,
}

impl Ledger {
    /// Reads `<root>/slurm/submissions.jsonl` (empty when absent).
    ///
    /// A line that is not JSON is a torn write (an append cut short by a full disk or a crash)
    /// and is skipped with a warning, wherever it is; a record that an older drover appended
    /// right after such a fragment, on the same line, is kept ([`parse_line`]). A line that is
    /// JSON but not a record this drover knows (another `format_version`, an unknown `kind`)
    /// is refused, naming the line: it was written by a newer drover, whose records this one
    /// must not misread.
    pub fn load(root: &Path) -> Result<Ledger, RunError> {
        let path = root.join(SLURM_DIR).join(LEDGER);
        let mut ledger = Ledger { path: path.clone(), ..Ledger::default() };
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(ledger),
            Err(source) => return Err(RunError::Io { action: "read", path, source }),
        };
        for (i, line, ended) in jsonl_lines(&text) {
            let refuse = |reason: String| RunError::Ledger { path: path.clone(), reason: format!("line {}: {reason}", i + 1) };
            let parsed: LedgerLine = match parse_line(line) {
                JsonLine::Record(l) => l,
                JsonLine::Fused(l) => {
                    warn_torn(&path, i + 1, "the record after it on the same line is kept");
                    l
                }
                // A last line without its newline may be an append still under way.
                JsonLine::Torn if !ended => break,
                JsonLine::Torn => {
                    warn_torn(&path, i + 1, "skipped");
                    continue;
                }
                JsonLine::Invalid { text, error } => {
                    return Err(match format_version(text) {
                        Some(v) if v != u64::from(LEDGER_FORMAT_VERSION) => refuse(format!("format_version {v} (this drover reads {LEDGER_FORMAT_VERSION})")),
                        _ => refuse(error.to_string()),
                    });
                }
            };
            if parsed.format_version != LEDGER_FORMAT_VERSION {
                return Err(refuse(format!("format_version {} (this drover reads {LEDGER_FORMAT_VERSION})", parsed.format_version)));
            }
            ledger.apply(parsed.event);
        }
        Ok(ledger)
    }

    fn apply(&mut self, event: LedgerEvent) {
        match event {
            LedgerEvent::Intent { submission, job_name, comment, runs, throttle, raise_to, provenance, .. } => {
                let Provenance { submit_uid, after, .. } = *provenance;
                let s = Submission { job_name, comment, runs, job_id: None, refused: None, throttle, raise_to, lifted: None, submit_uid, runs_per_task: 1, after };
                self.submissions.insert(submission, s);
            }
            LedgerEvent::Lifted { submission, throttle, raise_to } => {
                if let Some(s) = self.submissions.get_mut(&submission) {
                    (s.throttle, s.raise_to, s.lifted) = (Some(throttle), Some(raise_to), Some(throttle));
                }
            }
            LedgerEvent::Packed { submission, runs_per_task } => {
                if let Some(s) = self.submissions.get_mut(&submission) {
                    s.runs_per_task = runs_per_task.max(1) as usize;
                }
            }
            LedgerEvent::Submitted { submission, job_id } => {
                if let Some(s) = self.submissions.get_mut(&submission) {
                    s.job_id = Some(job_id);
                }
            }
            LedgerEvent::Refused { submission, message } => {
                if let Some(s) = self.submissions.get_mut(&submission) {
                    s.refused = Some(message);
                }
            }
            LedgerEvent::Cancelled { upto_submission, job_ids: None, .. } => {
                self.user_cancels += 1;
                self.cancelled_upto_latest = Some(upto_submission);
                self.cancelled_upto = Some(self.cancelled_upto.map_or(upto_submission, |u| u.max(upto_submission)));
            }
            // `slurm.fail_fast` cancelled only the arrays' queued tasks: its arrays are not
            // `cancelled_jobs`, whose runs would all read as stopped by `drover cancel`.
            LedgerEvent::Cancelled { job_ids: Some(ids), reason: Some(reason), .. } => {
                self.cancel_reasons.extend(ids.into_iter().map(|id| (id, reason.clone())));
            }
            LedgerEvent::Cancelled { upto_submission, job_ids: Some(ids), reason: None } => {
                self.user_cancels += 1;
                self.cancelled_upto_latest = Some(upto_submission);
                self.cancelled_jobs.extend(ids);
            }
            LedgerEvent::Retry { run_id, retry, .. } => *self.retries.entry((run_id, retry)).or_default() += 1,
        }
    }

    /// Appends `event` (flushed and synced: the ledger is the memory of what was submitted).
    /// Appends are serialised by a brief lock on [`LEDGER_LOCK`], since `drover status` and
    /// `drover cancel` append beside a `drover run`; a torn last line (a write cut short) is
    /// ended first, so the event gets a line of its own and the torn one alone is lost.
    pub fn append(&mut self, event: LedgerEvent) -> Result<(), RunError> {
        use std::os::unix::fs::FileExt;
        let line = LedgerLine { format_version: LEDGER_FORMAT_VERSION, at: layout::unix_now(), event: event.clone() };
        let mut bytes =
            serde_json::to_vec(&line).map_err(|source| RunError::Serialize { path: self.path.clone(), source })?;
        bytes.push(b'\n');
        let io = |source| RunError::Io { action: "append to", path: self.path.clone(), source };
        let dir = self.path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(io)?;
        let _lock = crate::lock::brief_exclusive(&dir.join(LEDGER_LOCK), LEDGER_LOCK_PATIENCE);
        let mut f = std::fs::OpenOptions::new().create(true).read(true).append(true).open(&self.path).map_err(io)?;
        let len = f.metadata().map_err(io)?.len();
        if len > 0 {
            let mut last = [0u8];
            f.read_exact_at(&mut last, len - 1).map_err(io)?;
            if last[0] != b'\n' {
                bytes.insert(0, b'\n');
            }
        }
        f.write_all(&bytes).map_err(io)?;
        f.sync_data().map_err(io)?;
        self.apply(event);
        Ok(())
    }

    /// The next submission number.
    pub fn next_submission(&self) -> u32 {
        self.submissions.keys().next_back().map_or(0, |n| n + 1)
    }

    /// The latest accepted submission of each run: run id → (submission, position in its
    /// `runs`; the array task is [`Submission::task_of`] it).
    pub fn latest(&self) -> BTreeMap<&str, (u32, usize)> {
        self.listings(true)
    }

    /// The latest submission listing each run, accepted or not: run id → (submission, position).
    /// Where a run whose submission was refused finds its label and seed, and its refusal.
    fn last_listings(&self) -> BTreeMap<&str, (u32, usize)> {
        self.listings(false)
    }

    /// Run id → (submission, position) of the latest submission listing it, of the accepted
    /// ones only or of all.
    fn listings(&self, accepted_only: bool) -> BTreeMap<&str, (u32, usize)> {
        let mut out = BTreeMap::new();
        for (n, s) in self.submissions.iter().filter(|(_, s)| !accepted_only || s.job_id.is_some()) {
            for (i, run) in s.runs.iter().enumerate() {
                out.insert(run.as_str(), (*n, i));
            }
        }
        out
    }

    /// The job ids of the accepted submissions.
    fn accepted_jobs(&self) -> BTreeSet<&str> {
        self.submissions.values().filter_map(|s| s.job_id.as_deref()).collect()
    }

    /// Accepted submissions that hold `run_id`.
    pub fn submissions_of(&self, run_id: &str) -> u32 {
        self.submissions.values().filter(|s| s.job_id.is_some() && s.runs.iter().any(|r| r == run_id)).count() as u32
    }

    /// Whether `drover cancel` cancelled submission `n` (array `job_id`): a run of an array
    /// that had ended before the cancel (say, it crashed) must not read as cancelled.
    pub fn cancelled(&self, n: u32, job_id: &str) -> bool {
        self.cancelled_jobs.contains(job_id) || self.cancelled_upto.is_some_and(|upto| n <= upto)
    }

    /// Retries of `run_id` of kind `kind` so far.
    pub fn retries_of(&self, run_id: &str, kind: RetryKind) -> u32 {
        self.retries.get(&(run_id.to_string(), kind)).copied().unwrap_or(0)
    }

    /// The one user who submitted every submission, whose jobs alone `squeue` need list; `None`
    /// when there is none yet, several, or a submission from before uids were recorded (then
    /// `squeue` lists every user's jobs of the sweep's name, as before).
    pub fn submitter(&self) -> Option<u32> {
        let mut uids = self.submissions.values().map(|s| s.submit_uid);
        let first = uids.next()??;
        uids.all(|u| u == Some(first)).then_some(first)
    }

    /// Submissions whose `sbatch` outcome was never recorded (drover died, or sbatch timed out).
    fn dangling(&self) -> Vec<u32> {
        self.submissions.iter().filter(|(_, s)| s.job_id.is_none() && s.refused.is_none()).map(|(n, _)| *n).collect()
    }

    /// Records the job id of each dangling submission found in `queue` by its comment
    /// (`drover:<token>:<n>`), and returns the ones not found. A `drover run` killed while
    /// `sbatch` ran leaves such a submission: its array may be running, and `drover status`
    /// and `drover cancel` must see it as `drover run` does.
    /// With `persist` false (a dry run) the ledger file is left as it is; a record that cannot
    /// be written is used in memory.
    fn find_dangling(&mut self, queue: &[QueueEntry], token: &str, persist: bool) -> Vec<u32> {
        let mut missing = Vec::new();
        for n in self.dangling() {
            let comment = format!("drover:{token}:{n}");
            match queue.iter().find(|e| e.comment == comment) {
                Some(e) => {
                    let event = LedgerEvent::Submitted { submission: n, job_id: e.array_job_id.clone() };
                    if !persist {
                        self.apply(event);
                    } else if let Err(e) = self.append(event.clone()) {
                        // A reader without write access (a colleague's `drover status`) still
                        // sees the array; `drover run` records it.
                        tracing::warn!("cannot record submission {n}'s job id in the ledger ({e}); using it for now");
                        self.apply(event);
                    }
                }
                None => missing.push(n),
            }
        }
        missing
    }
}

/// `drover-<sweep>-<8 hex of the results path>`: one name for all of a sweep's jobs, so one
/// `squeue --name` answers for the whole sweep, and two results directories never mix.
pub fn job_name(sweep: &str, root: &Path) -> (String, String) {
    let digest = Sha256::digest(root.as_os_str().as_encoded_bytes());
    let token: String = digest.iter().take(4).map(|b| format!("{b:02x}")).collect();
    (format!("drover-{sweep}-{token}"), token)
}

/// The facts of a sweep's results directory that status, cancel and run all need.
pub(crate) struct SweepDir {
    pub(crate) root: PathBuf,
    pub(crate) name: String,
    /// From the plan, or from `sweep.json` through [`SweepManifest::run_ids`]: never unchecked.
    pub(crate) runs: Vec<RunId>,
    job_name: String,
}

impl SweepDir {
    pub(crate) fn open(dir: &Path) -> Result<SweepDir, RunError> {
        let root = match dir.canonicalize() {
            Ok(root) if root.is_dir() => root,
            // A file, or a path that is not there: not results, whatever the OS error says.
            Ok(_) => return Err(RunError::NotResults { dir: dir.to_path_buf() }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(RunError::NotResults { dir: dir.to_path_buf() }),
            Err(source) => return Err(RunError::Io { action: "open", path: dir.to_path_buf(), source }),
        };
        let manifest_path = root.join(SWEEP_JSON);
        let manifest: SweepManifest = layout::read_record(&manifest_path)
            .map_err(|reason| RunError::Ledger { path: manifest_path.clone(), reason })?
            .ok_or_else(|| RunError::NotResults { dir: root.clone() })?;
        // The one place run ids come back from disk: each becomes `runs/<id>/`.
        let runs = manifest.run_ids().map_err(|reason| RunError::Ledger {
            path: manifest_path.clone(),
            reason: format!("{reason}; `drover run` on the sweep file writes it again"),
        })?;
        let (job_name, _) = job_name(&manifest.name, &root);
        Ok(SweepDir { root, name: manifest.name, runs, job_name })
    }

    pub(crate) fn run_dir(&self, run_id: &RunId) -> PathBuf {
        self.root.join("runs").join(run_id.as_str())
    }
}

/// The run's checkpointed stops from `interruptions.jsonl` (written by `drover-job`), oldest
/// first; a missing file is none. A torn line (a write cut short) is skipped with a warning,
/// keeping a record the job appended after it on the same line.
fn interruptions(run_dir: &Path) -> Vec<serde_json::Value> {
    let path = run_dir.join(INTERRUPTIONS_JSONL);
    let Ok(text) = std::fs::read_to_string(&path) else { return Vec::new() };
    let mut stops = Vec::new();
    for (i, line, ended) in jsonl_lines(&text) {
        match parse_line::<serde_json::Value>(line) {
            JsonLine::Record(stop) => stops.push(stop),
            JsonLine::Fused(stop) => {
                warn_torn(&path, i + 1, "the record after it on the same line is kept");
                stops.push(stop);
            }
            JsonLine::Torn if ended => warn_torn(&path, i + 1, "skipped"),
            JsonLine::Torn | JsonLine::Invalid { .. } => {}
        }
    }
    stops
}

/// The run's interruption counts: (time limits, terminations).
fn interruption_counts(run_dir: &Path) -> (u32, u32) {
    let mut counts = (0, 0);
    for stop in interruptions(run_dir) {
        match stop["reason"].as_str() {
            Some("time_limit") => counts.0 += 1,
            Some("terminated") => counts.1 += 1,
            _ => {}
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
struct TaskInfo {
    label: String,
    seed: Option<u64>,
}

/// Label and seed of each of submission `n`'s tasks (from its tasks file, for runs whose
/// directory the batch script has not created yet), cached in `cache`.
fn task_infos<'c>(root: &Path, n: u32, cache: &'c mut BTreeMap<u32, Vec<TaskInfo>>) -> &'c Vec<TaskInfo> {
    cache.entry(n).or_insert_with(|| {
        let text = std::fs::read_to_string(root.join(SLURM_DIR).join(format!("array-{n}.tasks"))).unwrap_or_default();
        text.lines()
            .map(|l| {
                let spec = l.split_once('\t').map_or("", |(_, s)| s);
                let Ok(v) = serde_json::from_str::<serde_json::Value>(spec) else { return TaskInfo::default() };
                TaskInfo { label: v["label"].as_str().unwrap_or_default().to_string(), seed: v["run"]["seed"].as_u64() }
            })
            .collect()
    })
}

/// Why a run of a packed task that ended before reaching it waits (`slurm` saying how the
/// task ended).
fn not_reached(slurm: &str) -> String {
    format!("not reached: its array task ended first ({slurm}); a waiting `drover run` submits it again, or run `drover run` again")
}

/// Whether another run of packed task `task` of `submission` (array `job_id`) started in it.
fn sibling_ran(dir: &SweepDir, submission: &Submission, job_id: &str, task: usize, me: &RunId) -> bool {
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

/// The last attempt the batch script recorded in the run's `attempts.jsonl`.
fn last_attempt(run_dir: &Path) -> Option<serde_json::Value> {
    let text = std::fs::read_to_string(run_dir.join("attempts.jsonl")).ok()?;
    text.lines().rev().find_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
}

/// The latest attempt (`attempts.jsonl`) and the exit code the batch script recorded for it in
/// `attempt-<k>.rc` once it ended; `None` while it runs (or for a script from before the file).
fn ended_attempt(run_dir: &Path) -> Option<(u64, i32)> {
    let attempt = last_attempt(run_dir)?["attempt"].as_u64()?;
    let code = std::fs::read_to_string(run_dir.join(format!("attempt-{attempt}.rc"))).ok()?.trim().parse().ok()?;
    Some((attempt, code))
}

/// Where a run stands whose array task trains several runs one after another
/// (`slurm.runs_per_task`), where Slurm's state, being the task's, does not say; `None` leaves
/// it to `classify`. A completed or failed marker, or an ended attempt (its `.rc`) without one,
/// says itself whatever the task does. While the task runs, a run not started in it waits its
/// turn, one stopped at a checkpoint waits for the task's requeue, and one started and not
/// ended trains. A task that ended (not cancelled) without reaching the run leaves it not
/// submitted, for drover to submit again without spending a retry.
fn packed_view(run_dir: &Path, exit: Option<&ExitRecord>, ran_here: bool, per_task: usize, listed: &str, cancelled: bool) -> Option<(RunState, Option<String>)> {
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

/// Whether the run's latest attempt (the last line of `attempts.jsonl`, written by the batch
/// script) ran as task `index` of array `job_id`: then a stop marker beside that task, queued
/// again, means Slurm requeued it; after a resubmission the attempt belongs to another array.
fn last_attempt_ran_in(run_dir: &Path, job_id: &str, index: usize) -> bool {
    let Some(last) = last_attempt(run_dir) else { return false };
    last["array_job_id"].as_str() == Some(job_id) && last["array_task_id"].as_str() == Some(index.to_string().as_str())
}

/// Status of every run of the sweep from one queue answer; `None` when Slurm did not answer,
/// and the markers alone say what they can.
fn statuses(dir: &SweepDir, ledger: &Ledger, queue: Option<&[QueueEntry]>) -> Vec<RunStatus> {
    statuses_reusing(dir, ledger, queue, &mut BTreeMap::new())
}

/// [`statuses`], reusing the statuses in `done` (runs found done by an earlier call, which stay
/// done) without reading their files again, and adding the runs found done now: a waiting
/// `drover run` reads a finished run's files once, not at every poll (a 3,000-run sweep on a
/// network filesystem is thousands of metadata requests a poll).
fn statuses_reusing(
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
            let exit: Option<ExitRecord> = layout::read_record(&run_dir.join(EXIT_JSON)).ok().flatten();
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
            let (state, reason) = packed.unwrap_or_else(|| classify(exit.as_ref(), view, facts));
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
fn held_back_since(ledger: &Ledger, last_listed: Option<(u32, usize)>, n: u32) -> bool {
    last_listed.is_some_and(|(m, _)| m > n && kept_out_by(ledger, m).is_some())
}

/// Why a run is not submitted whose latest listing is submission `n`, when `sbatch` refused
/// that submission: Slurm's submit limit keeps it out for now, or a setting the cluster does
/// not take (Slurm's own words).
fn kept_out_by(ledger: &Ledger, n: u32) -> Option<String> {
    let refused = ledger.submissions.get(&n)?.refused.as_deref()?;
    if let Some(limit) = crate::backend::slurm_cmd::submit_limit_reason(refused) {
        return Some(format!(
            "Slurm's submit limit ({limit}) keeps it out until jobs of yours end: a waiting `drover run` submits it then, or run `drover run` again"
        ));
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
fn records_dangling(dir: &SweepDir) -> bool {
    crate::lock::live_holder(&dir.root.join(crate::lock::LOCK_FILE)).is_none()
}

/// What `status` and `cancel` do with dangling submissions found in `queue`: recorded when no
/// `drover run` holds the results directory ([`records_dangling`]), from the ledger read again
/// after that check, since a `drover run` that held it until a moment ago (while this reader
/// asked Slurm) recorded its own before letting go; otherwise used in memory.
fn find_dangling_as_reader(dir: &SweepDir, ledger: &mut Ledger, queue: &[QueueEntry]) {
    if ledger.dangling().is_empty() {
        return;
    }
    let records = records_dangling(dir);
    if records {
        if let Ok(fresh) = Ledger::load(&dir.root) {
            *ledger = fresh;
        }
    }
    ledger.find_dangling(queue, &job_name(&dir.name, &dir.root).1, records);
}

fn status_report(dir: &SweepDir, runs: Vec<RunStatus>) -> StatusReport {
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
    // Not found: its sbatch may still be in flight, so it is left for `drover run` to judge.
    find_dangling_as_reader(&dir, &mut ledger, &queue);
    // Also where a `--no-wait` sweep's lowered throttle catches up, and its waiting array
    // starts, once older runs end.
    let lifted = share_free_slots_remembered(&dir.root, &mut ledger, &queue, slurm, &mut throttles_set(&dir.root));
    mark_lifted(&mut queue, &lifted);
    let runs = statuses(&dir, &ledger, Some(&queue));
    Ok(status_report(&dir, runs))
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
    let ids: Vec<String> = live.into_iter().collect();
    // Recorded first: a run that ends while scancel runs must still read as cancelled. Recorded
    // with nothing live too: a waiting `drover run` whose runs all wait for room under a submit
    // limit must learn of it, and cancels what it submits after `upto`.
    ledger.append(LedgerEvent::Cancelled { upto_submission: upto, job_ids: Some(ids.clone()), reason: None })?;
    slurm.cancel(&ids)?;
    Ok(ids)
}

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

/// One array to submit: runs with identical resources, at most `MaxArraySize` tasks of
/// `runs_per_task` runs each.
#[derive(Debug, Clone)]
pub struct ArrayPlan {
    /// Resources of every run in it.
    pub resources: Resources,
    /// Run ids: task `i` trains `runs[i * runs_per_task..]`, up to `runs_per_task` of them.
    pub runs: Vec<String>,
    /// Runs per task (1: one run per array index).
    pub runs_per_task: usize,
}

impl ArrayPlan {
    /// Its array tasks: `runs_per_task` runs each, the last one the rest.
    pub fn tasks(&self) -> usize {
        self.runs.len().div_ceil(self.runs_per_task.max(1))
    }
}

/// Groups runs by resources (first appearance order) and splits groups at `max_array`.
/// A run's Slurm resources: the sweep's `[slurm]` settings with their overrides, plus one task
/// per MPI rank (`run.ranks`), which the batch script launches with one `srun` step of the MPI
/// type `slurm.mpi` names (`--mpi=pmix` unless set; none with `mpi = "default"`). Runs with
/// different rank counts land in different arrays, since arrays are split by resources.
fn run_resources(settings: &SlurmSettings, run: &crate::config::RunSpec) -> Resources {
    let mut r = settings.resources_for(&run.axes);
    let ranks = ranks(run);
    if ranks > 1 {
        r.options.retain(|(k, _)| *k != "ntasks");
        r.options.push(("ntasks", ranks.to_string()));
    }
    r
}

/// `run.ranks` of a run (1 when unset).
fn ranks(run: &crate::config::RunSpec) -> u64 {
    run.run.get("ranks").and_then(serde_json::Value::as_u64).unwrap_or(1)
}

/// A warning when some run has `run.ranks` > 1 and `srun --mpi=list` on this machine does not
/// list the MPI type `slurm.mpi` names: every such run's `srun` would fail to load the plugin
/// and start no rank, which the user would otherwise learn from each run's log.
/// Nothing is asked of `srun` when no run has several ranks or `mpi = "default"`, and nothing is
/// said when `srun` is absent, fails or prints no list ([`Slurm::mpi_types`]). Only a warning:
/// a login node's `srun` may not see the plugins the compute nodes have.
pub fn mpi_warning(plan: &Plan, slurm: &Slurm) -> Option<String> {
    let chosen = plan.sweep.slurm.mpi.as_deref()?;
    if !plan.runs.iter().any(|r| ranks(r) > 1) {
        return None;
    }
    mpi_missing_warning(plan, chosen, &slurm.mpi_types()?)
}

/// [`mpi_warning`]'s words, given what `srun --mpi=list` offers.
fn mpi_missing_warning(plan: &Plan, chosen: &str, offered: &[String]) -> Option<String> {
    let multi = plan.runs.iter().filter(|r| ranks(r) > 1).count();
    (multi > 0 && !offered.iter().any(|t| t == chosen)).then(|| {
        format!(
            "{multi} run(s) have run.ranks > 1 and `slurm.mpi` = \"{chosen}\" in `{}`, but `srun --mpi=list` on this \
             machine offers {}: their `srun` would not start the ranks; set `mpi` in [slurm] to one of those, or to \
             \"{}\" for the cluster's `MpiDefault` (ignore this if the compute nodes have MPI plugins this machine lacks)",
            plan.sweep.source.display(),
            offered.join(", "),
            crate::backend::slurm_config::MPI_CLUSTER_DEFAULT
        )
    })
}

/// A warning when runs with `run.device = "cuda"` would be submitted without asking Slurm for a
/// GPU: on a cluster that confines devices to the allocation such a job sees none and fails,
/// which the user would otherwise learn only from every run's log.
pub fn gpu_request_warning(plan: &Plan) -> Option<String> {
    let cuda = |r: &&crate::config::RunSpec| r.run.get("device").and_then(serde_json::Value::as_str) == Some("cuda");
    let missing = plan.runs.iter().filter(cuda).filter(|r| !run_resources(&plan.sweep.slurm, r).requests_gpus()).count();
    (missing > 0).then(|| {
        format!(
            "{missing} run(s) have run.device = \"cuda\" but their [slurm] resources request no GPU; \
             where Slurm confines devices to the allocation they will see none and fail: add \
             `gpus_per_task = 1` (or a `gres`) to [slurm] in `{}`",
            plan.sweep.source.display()
        )
    })
}

/// Warnings for resources a run would waste or fight over: `run.threads` above the CPUs it
/// gets (`cpus_per_task`, 1 when unset: the threads share them), `gpus_per_task` above 1
/// (each rank of `drover-job` uses one device: the others idle; `run.ranks` uses them), and
/// tasks beyond the first for a one-rank run (`ntasks_per_node`, `nodes`, `--ntasks` in
/// `extra`: the batch script starts one process, the other tasks' CPUs idle).
pub fn resource_warnings(plan: &Plan) -> Vec<String> {
    let (mut crowded, mut idle) = (BTreeMap::<(u64, u64), usize>::new(), BTreeMap::<u64, usize>::new());
    let mut extra_tasks = 0usize;
    for run in &plan.runs {
        let r = run_resources(&plan.sweep.slurm, run);
        let more_tasks = r.number("ntasks-per-node").is_some_and(|n| n > 1)
            || r.number("nodes").is_some_and(|n| n > 1)
            || r.extra.iter().any(|e| e.split(' ').any(|w| w.starts_with("--ntasks=") || w == "--ntasks" || w.starts_with("-n")));
        if ranks(run) == 1 && more_tasks {
            extra_tasks += 1;
        }
        let cpus = r.number("cpus-per-task").unwrap_or(1);
        if let Some(threads) = run.run.get("threads").and_then(serde_json::Value::as_u64).filter(|&t| t > cpus) {
            *crowded.entry((threads, cpus)).or_default() += 1;
        }
        if let Some(gpus) = r.number("gpus-per-task").filter(|&g| g > 1) {
            *idle.entry(gpus).or_default() += 1;
        }
    }
    let file = plan.sweep.source.display();
    let mut out: Vec<String> = crowded
        .into_iter()
        .map(|((threads, cpus), n)| {
            format!(
                "{n} run(s) set run.threads = {threads} but get {cpus} CPU(s) each (`cpus_per_task`): the threads \
                 share them; set `cpus_per_task = {threads}` in [slurm] of `{file}`"
            )
        })
        .collect();
    out.extend(idle.into_iter().map(|(gpus, n)| {
        format!(
            "{n} run(s) ask for {gpus} GPUs per task, but each rank of drover-job uses one: the others \
             idle; ask for 1 and set `run.ranks = {gpus}` to use them all (`{file}`)"
        )
    }));
    if extra_tasks > 0 {
        out.push(format!(
            "{extra_tasks} run(s) have run.ranks = 1 but ask Slurm for several tasks (`ntasks_per_node`, `nodes` or \
             `--ntasks` in [slurm] of `{file}`): each run starts one process and the other tasks idle; set \
             `run.ranks` to the tasks for an MPI run, or `cpus_per_task` for more CPUs in one process"
        ));
    }
    out
}

/// A warning naming the `paths` (what, path) that lie on a filesystem in this machine's memory
/// (tmpfs, ramfs: `/tmp` or `/dev/shm` on many login nodes): compute nodes see their own, so
/// every task would fail to find its tasks file, run directory or program. A path not created
/// yet is judged by the nearest folder above it that exists.
pub fn node_local_warning(paths: &[(&str, &Path)]) -> Option<String> {
    let local: Vec<String> = paths
        .iter()
        .filter(|(_, p)| in_memory_filesystem(p))
        .map(|(what, p)| format!("{what} `{}`", p.display()))
        .collect();
    (!local.is_empty()).then(|| {
        format!(
            "{} on a filesystem in this machine's memory (tmpfs): compute nodes other than this one \
             cannot see it, and their tasks would fail; use a shared filesystem (home, project or \
             scratch) unless this machine is the whole cluster",
            local.join(", ")
        )
    })
}

/// Whether `path` (or the nearest existing folder above it) is on tmpfs or ramfs.
fn in_memory_filesystem(path: &Path) -> bool {
    const TMPFS_MAGIC: i64 = 0x0102_1994;
    const RAMFS_MAGIC: i64 = 0x8584_58f6;
    filesystem_magic(path).is_some_and(|m| matches!(m, TMPFS_MAGIC | RAMFS_MAGIC))
}

/// `statfs`'s filesystem type of `path`, or of the nearest existing folder above it.
fn filesystem_magic(path: &Path) -> Option<i64> {
    let existing = path.ancestors().find(|p| p.exists())?;
    let c_path = std::ffi::CString::new(existing.as_os_str().as_encoded_bytes()).ok()?;
    // SAFETY: statfs reads the NUL-terminated path and writes into the zeroed struct we own.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(c_path.as_ptr(), &mut st) } != 0 {
        return None;
    }
    Some(st.f_type as i64)
}

/// The name of a filesystem that lives on one machine's own disk (ext4, XFS, Btrfs, an
/// overlay), where a shared one (NFS, Lustre, GPFS, BeeGFS, CephFS, ...) would be seen by every
/// node; `None` for the others and for the unknown.
fn local_disk_filesystem(path: &Path) -> Option<&'static str> {
    match filesystem_magic(path)? {
        0xEF53 => Some("ext4"),
        0x5846_5342 => Some("XFS"),
        0x9123_683E => Some("Btrfs"),
        0x794C_7630 => Some("overlayfs"),
        _ => None,
    }
}

/// A warning naming the `paths` (what, path) on this machine's own disk when the cluster has
/// nodes other than this one (`others`): those nodes see their own disks, so the tasks would
/// fail to open their output file or find their program (Slurm then fails them before the
/// batch script runs). A path under a directory this machine exports (`exports`, the first
/// words of `/etc/exports`) is seen by the nodes through NFS and not named.
pub fn local_disk_warning(paths: &[(&str, &Path, &str)], others: bool, exports: &[PathBuf]) -> Option<String> {
    if !others {
        return None;
    }
    let local: Vec<String> = paths
        .iter()
        .filter(|(_, p, _)| !exports.iter().any(|e| p.starts_with(e)))
        .map(|(what, p, fs)| format!("{what} `{}` ({fs})", p.display()))
        .collect();
    (!local.is_empty()).then(|| {
        format!(
            "{} on this machine's own disk, and the cluster has other nodes: they cannot see it unless \
             it is shared with them (a shared home, project or scratch filesystem), and their tasks \
             would fail before starting",
            local.join(", ")
        )
    })
}

/// Whether a Slurm node (hostname, address) is this machine, named `host`: the same short
/// name, or the loopback (a single-node cluster such as the test one names itself `localhost`).
fn is_this_machine(name: &str, addr: &str, host: &str) -> bool {
    let short = |h: &str| h.trim().split('.').next().unwrap_or_default().to_ascii_lowercase();
    short(name) == short(host) || short(addr) == short(host) || name == "localhost" || addr == "localhost" || addr.starts_with("127.") || addr == "::1"
}

/// [`local_disk_warning`] for `paths` as they lie here: asks Slurm for its nodes (`sinfo`) only
/// when some path is on a local disk, and says nothing when it cannot tell.
pub fn local_disk_warning_here(paths: &[(&str, &Path)], slurm: &Slurm) -> Option<String> {
    let on_disk: Vec<(&str, &Path, &str)> =
        paths.iter().filter_map(|&(what, p)| local_disk_filesystem(p).map(|fs| (what, p, fs))).collect();
    if on_disk.is_empty() {
        return None;
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    let others = slurm.node_hosts()?.iter().any(|(name, addr)| !is_this_machine(name, addr, &host));
    let exports: Vec<PathBuf> = std::fs::read_to_string("/etc/exports")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().next().filter(|w| w.starts_with('/')).map(PathBuf::from))
        .collect();
    local_disk_warning(&on_disk, others, &exports)
}

/// Checks that each `[[slurm.overrides]]` applies to some run of the sweep. One whose `when`
/// matches none (a value that is no grid value, `"0.1"` written for the number `0.1`) would
/// leave every script with the base resources without a word, which the user learns from jobs
/// killed for memory or time. Refused (naming the file, `slurm.overrides[i].when` and the
/// values the runs have), except when `--set` or a `DROVER_SWEEP__*` variable shapes the
/// sweep's axes: narrowing the grid for one rerun (`--set 'sweep.grid.run.num_envs=[8]'`)
/// legitimately leaves an override for the other values with no run, and refusing would force
/// the user to edit the file for a one-off; then it is a warning (the `Ok` values).
pub fn unmatched_override_check(plan: &Plan) -> Result<Vec<String>, crate::ConfigError> {
    let mut warnings = Vec::new();
    for (i, o) in plan.sweep.slurm.overrides.iter().enumerate() {
        if plan.runs.iter().any(|r| o.matches(&r.axes)) {
            continue;
        }
        let key = format!("slurm.overrides[{i}].when");
        let why = unmatched_words(&o.when, &plan.runs);
        match plan.overrides.iter().find(|o| shapes_axes(o)) {
            Some(shaping) => warnings.push(format!(
                "`{key}` in `{}` {why}; its resources apply to no run (`{shaping}` sets the sweep's axes, so this may be meant)",
                plan.sweep.source.display()
            )),
            None => {
                return Err(crate::ConfigError::new(
                    &plan.sweep.source,
                    key,
                    crate::error::ConfigErrorKind::InvalidValue(format!(
                        "{why}: its resources would apply to no run, and every script would keep the base ones; write a value the runs have (a number without quotes for a number axis), or remove the override"
                    )),
                ));
            }
        }
    }
    Ok(warnings)
}

/// Whether an override of the sweep file (as `Plan::overrides` lists it: `--set key=value` or
/// `DROVER_KEY=value`) sets the sweep's grid or cases, which decide the runs' axis values.
fn shapes_axes(typed: &str) -> bool {
    let key = match typed.strip_prefix("--set ") {
        Some(set) => set.split('=').next().unwrap_or_default().trim().to_ascii_lowercase(),
        None => typed.split('=').next().unwrap_or_default().trim_start_matches("DROVER_").to_ascii_lowercase().replace("__", "."),
    };
    key == "sweep" || key.starts_with("sweep.grid") || key.starts_with("sweep.cases")
}

/// "matches no run of the sweep: it asks for ..., and the runs have ..." for an override's
/// `when`, naming each key's value and the values the runs have for it (at most ten each).
fn unmatched_words(when: &BTreeMap<String, serde_json::Value>, runs: &[crate::config::RunSpec]) -> String {
    const SHOWN: usize = 10;
    // (one value, several values) of its kind.
    let kind = |v: &serde_json::Value| match v {
        serde_json::Value::Number(_) => ("a number", "numbers"),
        serde_json::Value::String(_) => ("text", "text"),
        serde_json::Value::Bool(_) => ("true or false", "true or false"),
        serde_json::Value::Array(_) => ("a list", "lists"),
        _ => ("a table", "tables"),
    };
    let asked: Vec<String> = when.iter().map(|(k, v)| format!("`{k}` = {v}")).collect();
    let mut have = Vec::new();
    let mut each_found = true;
    for (k, want) in when {
        let mut values: Vec<&serde_json::Value> = Vec::new();
        for v in runs.iter().filter_map(|r| r.axes.get(k)) {
            if !values.iter().any(|seen| crate::backend::slurm_config::same_axis_value(seen, v)) {
                values.push(v);
            }
        }
        each_found &= values.iter().any(|v| crate::backend::slurm_config::same_axis_value(want, v));
        let mut shown: Vec<String> = values.iter().take(SHOWN).map(|v| v.to_string()).collect();
        if values.len() > SHOWN {
            shown.push(format!("… ({} in all)", values.len()));
        }
        let listed = if shown.is_empty() { "no value (no run sets it)".to_string() } else { shown.join(", ") };
        // The same words written as text for a number (or the reverse) is the likely mistake.
        let types = match values.first() {
            Some(v) if kind(v) != kind(want) && values.iter().all(|o| kind(o) == kind(v)) => format!(" ({} where the runs have {})", kind(want).0, kind(v).1),
            _ => String::new(),
        };
        have.push(format!("`{k}` = {listed}{types}"));
    }
    let together = if each_found && when.len() > 1 { " (each value appears, but in no run together)" } else { "" };
    format!("matches no run of the sweep: it asks for {}, and the runs have {}{together}", asked.join(" and "), have.join("; "))
}

/// Runs a sweep may have without a throttle before [`throttle_warning`] speaks up.
pub const UNTHROTTLED_RUNS_WARNED: usize = 500;

/// A warning for a sweep of more than [`UNTHROTTLED_RUNS_WARNED`] runs with no runs-at-once
/// limit: Slurm starts as many as fit, which on a shared partition crowds out every other user
/// until fair-share catches up (an admin's first complaint about array sweeps).
pub fn throttle_warning(plan: &Plan) -> Option<String> {
    (plan.runs.len() > UNTHROTTLED_RUNS_WARNED && sweep_throttle(plan).is_none()).then(|| {
        format!(
            "{} runs and no runs-at-once limit: Slurm starts as many as the partition fits; on a \
             shared cluster set `throttle` in [slurm] (or `max_parallel`) in `{}`",
            plan.runs.len(),
            plan.sweep.source.display()
        )
    })
}

/// Groups runs by resources (first appearance order) into arrays of at most `max_tasks` tasks
/// of `runs_per_task` runs each.
pub fn plan_arrays(runs: &[(String, Resources)], max_tasks: usize, runs_per_task: usize) -> Vec<ArrayPlan> {
    let mut groups: Vec<(Resources, Vec<String>)> = Vec::new();
    for (id, res) in runs {
        match groups.iter_mut().find(|(r, _)| r == res) {
            Some((_, ids)) => ids.push(id.clone()),
            None => groups.push((res.clone(), vec![id.clone()])),
        }
    }
    let runs_per_task = runs_per_task.max(1);
    let max_runs = max_tasks.max(1).saturating_mul(runs_per_task);
    groups
        .into_iter()
        .flat_map(|(resources, ids)| {
            ids.chunks(max_runs).map(|c| ArrayPlan { resources: resources.clone(), runs: c.to_vec(), runs_per_task }).collect::<Vec<_>>()
        })
        .collect()
}

/// The largest array to submit: the cluster's `MaxArraySize` (indices `0..MaxArraySize-1`),
/// capped by `slurm.max_array_size`.
fn max_array(settings: &SlurmSettings, slurm: &Slurm) -> Result<usize, RunError> {
    let cluster = slurm.max_array_size()?;
    Ok(match settings.max_array_size {
        Some(cap) => cap.min(cluster),
        None => cluster,
    } as usize)
}

/// The results directory as `run_sweep` names it once it exists (symlinks resolved: the job
/// name hashes the path), or absolute while it does not: where a dry run looks.
fn dry_run_root(plan: &Plan) -> std::io::Result<PathBuf> {
    plan.results.root().canonicalize().or_else(|_| std::path::absolute(plan.results.root()))
}

/// The batch scripts `drover run --dry-run --backend slurm` would submit, as (file name, text).
pub fn dry_run_scripts(plan: &Plan, opts: &SlurmOptions, actions: &[&str]) -> Result<Vec<(String, String)>, RunError> {
    let root = dry_run_root(plan).map_err(|source| RunError::Io { action: "resolve", path: plan.results.root().to_path_buf(), source })?;
    let ledger = Ledger::load(&root)?;
    let settings = &plan.sweep.slurm;
    let quick = dry_run_slurm(opts);
    let max = match max_array(settings, &quick) {
        Ok(m) => m,
        Err(e) => {
            tracing::warn!("cannot ask Slurm for MaxArraySize ({e}); assuming 1001");
            settings.max_array_size.map_or(1001, |c| c.min(1001) as usize)
        }
    };
    // What the rerun would submit: neither the completed runs nor the live ones it re-attaches
    // to (`actions`, from [`dry_run_actions`]).
    let runs: Vec<(String, Resources)> = plan
        .runs
        .iter()
        .zip(actions)
        .filter(|(_, action)| !matches!(**action, "done" | "live"))
        .map(|(r, _)| (r.run_id.to_string(), run_resources(settings, r)))
        .collect();
    let (name, token) = job_name(&plan.sweep.name, &root);
    let mut out = Vec::new();
    let arrays = plan_arrays(&runs, max, settings.runs_per_task as usize);
    let sizes: Vec<usize> = arrays.iter().map(ArrayPlan::tasks).collect();
    // As a first submission would share the throttle (a dry run asks Slurm nothing of live runs).
    let limits = round_limits(sweep_throttle(plan), &BTreeMap::new(), &sizes);
    let first = ledger.next_submission();
    for (k, (array, limits)) in arrays.into_iter().zip(limits).enumerate() {
        let n = first + k as u32;
        let script_name = format!("array-{n}.sbatch");
        let mut text = render(plan, &root, &name, &token, n, &script_name, &array, opts, &limits);
        if limits.after_earlier {
            // The job ids it would wait for exist only once the earlier arrays are submitted.
            let earlier: Vec<String> = (first..n).map(|m| format!("array-{m}")).collect();
            let note = format!(
                "# (submitted with --dependency=afterany: on the job ids of {}: the throttle leaves it no slot; drover lifts the dependency once one is free)\n",
                earlier.join(", ")
            );
            if let Some(at) = text.find("#SBATCH --array=").and_then(|i| text[i..].find('\n').map(|j| i + j + 1)) {
                text.insert_str(at, &note);
            }
        }
        out.push((script_name, text));
    }
    Ok(out)
}

#[expect(clippy::too_many_arguments, reason = "the parts of one script, each from a different owner")]
fn render(
    plan: &Plan,
    root: &Path,
    job_name: &str,
    token: &str,
    n: u32,
    script_name: &str,
    array: &ArrayPlan,
    opts: &SlurmOptions,
    limits: &ArrayLimits,
) -> String {
    let s = &plan.sweep.slurm;
    let tasks = root.join(SLURM_DIR).join(format!("array-{n}.tasks"));
    let runs = root.join("runs");
    let comment = format!("drover:{token}:{n}");
    slurm_script::render(&ScriptParams {
        sweep: &plan.sweep.name,
        submission: n,
        count: array.runs.len(),
        runs_per_task: array.runs_per_task,
        script_name,
        job_name,
        comment: &comment,
        throttle: limits.throttle,
        signal: &s.signal,
        signal_seconds: s.signal_seconds,
        resources: &array.resources,
        tasks: &tasks,
        runs: &runs,
        job_bin: &opts.job_bin,
        job_bin_machine: crate::backend::arch::built_for(&opts.job_bin).ok().flatten().and_then(|b| b.machine),
        arch: &s.arch,
        max_timeouts: s.max_timeouts,
        max_preemptions: s.max_preemptions,
        checkpoint_every_s: s.checkpoint_minutes.map(|m| m * 60.0),
        mpi: s.mpi.as_deref(),
        // `run_resources` adds `ntasks` for multi-rank runs only.
        ranks: array.resources.number("ntasks").unwrap_or(1),
        after: &limits.after,
        user_after: &s.after,
    })
}

/// The sweep's limit on runs at once: `-j N`, else `slurm.throttle`, else `max_parallel`.
fn sweep_throttle(plan: &Plan) -> Option<u32> {
    let jobs = plan.jobs.map(|j| u32::try_from(j.get()).unwrap_or(u32::MAX));
    jobs.or(plan.sweep.slurm.throttle).or(plan.sweep.max_parallel.map(|m| m.get() as u32))
}

/// The limits of one array: its `%N`, and how it shares the sweep's throttle with the sweep's
/// other arrays (older ones still live, and the others of its own round).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct ArrayLimits {
    /// `--array=...%N`; never 0, which Slurm reads as no limit at all.
    throttle: Option<u32>,
    /// The sweep's throttle, when `throttle` is lower for now (other arrays hold the rest).
    raise_to: Option<u32>,
    /// Older arrays to wait for (`--dependency=afterany:`), when nothing of the throttle is left.
    after: Vec<String>,
    /// Whether it also waits for the arrays submitted before it in the same round (whose job
    /// ids are known only once they are submitted).
    after_earlier: bool,
}

/// Live (queued, requeued or running) tasks per array of the sweep's accepted submissions.
fn live_per_array(ledger: &Ledger, queue: &[QueueEntry]) -> BTreeMap<String, usize> {
    let ours = ledger.accepted_jobs();
    let mut live = BTreeMap::new();
    for e in queue.iter().filter(|e| ours.contains(e.array_job_id.as_str()) && is_live_entry(e)) {
        *live.entry(e.array_job_id.clone()).or_insert(0) += 1;
    }
    live
}

/// Whether Slurm may still run the task (queued, requeued or running).
fn is_live_entry(e: &QueueEntry) -> bool {
    listed_state(&e.state).is_live()
}

/// What Slurm's state of a task says of it alone, without the run's own files.
fn listed_state(state: &str) -> RunState {
    classify(None, SlurmView::Listed(state), RunFacts::default()).0
}

/// The limits of the arrays of one round (a `drover run`'s first submission, or one poll's
/// resubmissions), in submission order, `sizes` being their task counts. Slurm applies `%N`
/// per array, so the sweep's throttle `N` is shared: the `L` live runs of older arrays keep
/// their slots, and the `N - L` left are dealt out one at a time across the new arrays (no
/// array gets more slots than tasks), so each array starts at once with its share. An array
/// whose share is below both `N` and its size records `raise_to = N` and is raised as other
/// runs end (`throttle_raises`). An array that gets no slot cannot be given `%0` (Slurm's "no
/// limit"): it waits with `--dependency=afterany` for the older live arrays and every array
/// before it in the round, so Slurm starts it by itself (no drover process needed) once all
/// of those have ended, and then it may have the whole `%N`.
fn round_limits(throttle: Option<u32>, older: &BTreeMap<String, usize>, sizes: &[usize]) -> Vec<ArrayLimits> {
    let Some(n) = throttle else { return vec![ArrayLimits::default(); sizes.len()] };
    let live = u32::try_from(older.values().sum::<usize>()).unwrap_or(u32::MAX);
    let shares = deal(n.saturating_sub(live), sizes);
    shares
        .iter()
        .zip(sizes)
        .enumerate()
        .map(|(i, (&share, &size))| match share {
            0 => ArrayLimits { throttle: Some(n), raise_to: None, after: older.keys().cloned().collect(), after_earlier: i > 0 },
            t => ArrayLimits {
                throttle: Some(t),
                raise_to: (t < n && (t as usize) < size).then_some(n),
                ..ArrayLimits::default()
            },
        })
        .collect()
}

/// Deals `free` slots across arrays of `sizes` tasks, round by round, one slot to each array
/// that still has a task without one, earlier arrays first; whole rounds at once, so a large
/// throttle costs no more than a small one.
fn deal(mut free: u32, sizes: &[usize]) -> Vec<u32> {
    let mut shares = vec![0u32; sizes.len()];
    loop {
        let open: Vec<usize> = (0..sizes.len()).filter(|&i| (shares[i] as usize) < sizes[i]).collect();
        if free == 0 || open.is_empty() {
            return shares;
        }
        // Every open array can take this many more in whole rounds; below one round, the
        // earliest arrays take one each.
        let fewest = open.iter().map(|&i| sizes[i] - shares[i] as usize).min().unwrap_or(0);
        let rounds = (free as usize / open.len()).min(fewest);
        if rounds == 0 {
            for &i in open.iter().take(free as usize) {
                shares[i] += 1;
            }
            return shares;
        }
        for &i in &open {
            shares[i] += rounds as u32;
        }
        free -= (rounds * open.len()) as u32;
    }
}

/// What one `squeue` answer says of the sweep's arrays, for sharing its throttle: the live
/// runs of each, and which of them wait on their dependency.
struct Occupancy {
    /// Live (queued, requeued or running) tasks per array.
    live: BTreeMap<String, usize>,
    /// Submission number of each accepted array.
    submission_of: BTreeMap<String, u32>,
    /// Arrays whose live tasks all wait on their dependency on the sweep's own arrays
    /// (`--dependency=afterany`): none of their tasks runs until Slurm finds the dependency met
    /// or drover lifts the array. An array that waits only on `slurm.after`'s jobs is not one:
    /// it starts at its own `%N` once they end, as the arrays of its round do.
    waiting: BTreeSet<String>,
}

/// The job id a dependency term's job names (`41` of `41_*`, `41_3` or `41+5`).
fn dependency_job(id: &str) -> &str {
    id.split(['_', '+']).next().unwrap_or(id)
}

/// The terms of a task's dependency (`QueueEntry::dependency`) as (type, job ids), Slurm's
/// `(unfulfilled)` status cut off: `afterok:99(unfulfilled),afterany:41_*(unfulfilled)` →
/// `[("afterok", ["99"]), ("afterany", ["41_*"])]`.
fn dependency_terms(dependency: &str) -> Vec<(&str, Vec<&str>)> {
    dependency
        .split(',')
        .map(|term| term.split_once('(').map_or(term, |(t, _)| t).trim())
        .filter(|t| !t.is_empty())
        .map(|t| match t.split_once(':') {
            Some((kind, ids)) => (kind, ids.split(':').collect()),
            None => (t, Vec::new()),
        })
        .collect()
}

/// Why a task waits, or waited, for jobs of the user's (`slurm.after`), in words: the terms
/// not yet held, or, when they never will (a job that `afterok` names failed), the ones that
/// failed; with `DependencyParameters=kill_invalid_depend` Slurm cancels such a task itself.
/// Keyed on the terms (`%E`) rather than the reason alone: Slurm gives a task reason `None`
/// until its next scheduling pass after `sbatch` or a dependency update. `None` for a task
/// that waits on nothing, or only on the sweep's own arrays (the throttle's turn).
fn waits_for_user_job(e: &QueueEntry, ours: &BTreeSet<&str>) -> Option<String> {
    let never = e.reason == NEVER_SATISFIED;
    let pending = e.state == "PENDING" && (e.reason.starts_with("Dependency") || e.reason == "None");
    if !(pending || (e.state == "CANCELLED" && never)) {
        return None;
    }
    let terms = if never { failed_terms(e, ours) } else { user_dependency(e.dependency.as_deref(), ours) };
    if terms.is_empty() {
        return None;
    }
    Some(match (never, e.state.as_str()) {
        (true, "CANCELLED") => format!("cancelled by Slurm: its dependency `{terms}` (`slurm.after`) can never hold, as a job it names ended otherwise"),
        (true, _) => format!("can never start: its dependency `{terms}` (`slurm.after`) can never hold, as a job it names ended otherwise"),
        (false, _) => format!("waits for `{terms}` (`slurm.after`)"),
    })
}

/// The terms of a task's dependency that failed (`afterok:4242(failed)`: they can never hold),
/// else all of `slurm.after`'s it still lists.
fn failed_terms(e: &QueueEntry, ours: &BTreeSet<&str>) -> String {
    let dependency = e.dependency.as_deref().unwrap_or_default();
    let failed: Vec<&str> = dependency.split(',').filter_map(|t| t.trim().strip_suffix("(failed)")).collect();
    if failed.is_empty() { user_dependency(e.dependency.as_deref(), ours) } else { failed.join(",") }
}

/// The job ids `slurm.after`'s terms name (`4242` of `afterok:4242_*`), once each, in order.
fn after_job_ids(terms: &[String]) -> Vec<String> {
    let mut ids: Vec<String> = Vec::new();
    for (_, term_ids) in terms.iter().flat_map(|t| dependency_terms(t)) {
        for id in term_ids.into_iter().map(dependency_job) {
            if !ids.iter().any(|known| known == id) {
                ids.push(id.to_string());
            }
        }
    }
    ids
}

/// Whether run `run_dir` had an attempt in array `job_id`, as its `attempts.jsonl` says.
fn ever_ran_in(run_dir: &Path, job_id: &str) -> bool {
    let Ok(text) = std::fs::read_to_string(run_dir.join("attempts.jsonl")) else { return false };
    text.lines().filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()).any(|a| a["array_job_id"].as_str() == Some(job_id))
}

/// Whether a run of the sweep started in an array submitted with a `slurm.after` term on job
/// `job`: Slurm held that dependency met then.
fn held_before(ledger: &Ledger, runs: &Path, job: &str) -> bool {
    ledger.submissions.values().any(|s| {
        let names_job = after_job_ids(&s.after).iter().any(|id| id == job);
        names_job && s.job_id.as_deref().is_some_and(|array| s.runs.iter().any(|r| ever_ran_in(&runs.join(r), array)))
    })
}

/// Checks `slurm.after`'s job ids with Slurm before anything is submitted. Slurm counts a
/// dependency on a job it does not know as met at once (measured on 22.05: an id never used,
/// or a job that ended more than `MinJobAge` ago and was forgotten, failed or not), so a typo
/// would start the sweep at once instead of making it wait. An unknown id is refused, naming
/// the key, unless a run of this sweep already started under it (the dependency held then,
/// and Slurm has since forgotten the job, as it does; a rerun may go on). So is a term on a job
/// that has already ended so that it can never hold (`afterok` on a job that failed): Slurm
/// would take the arrays and keep them queued as `DependencyNeverSatisfied` for ever; with the
/// same exception, since a rerun after the job held may meet it ended, as it then is.
pub fn check_after_jobs(plan: &Plan, slurm: &Slurm) -> Result<(), crate::ConfigError> {
    let after = &plan.sweep.slurm.after;
    if after.is_empty() {
        return Ok(());
    }
    let ids = after_job_ids(after);
    let known = match slurm.known_jobs(&ids) {
        Ok(known) => known,
        Err(e) => {
            // The submission that follows meets the same trouble and says so.
            tracing::warn!("cannot ask Slurm about `slurm.after`'s jobs ({e})");
            return Ok(());
        }
    };
    let root = plan.results.root();
    let ledger = Ledger::load(root).unwrap_or_default();
    let held = |id: &str| held_before(&ledger, &root.join("runs"), id);
    let unknown: Vec<&String> = ids.iter().filter(|id| !known.contains_key(*id) && !held(id)).collect();
    let refuse = |why: String| Err(crate::ConfigError::new(&plan.sweep.source, "slurm.after", crate::error::ConfigErrorKind::InvalidValue(why)));
    if !unknown.is_empty() {
        let list = unknown.iter().map(|id| format!("`{id}`")).collect::<Vec<_>>().join(", ");
        return refuse(format!(
            "Slurm does not know job {list} (a wrong id, or a job that ended more than `MinJobAge` ago and was forgotten), and counts a dependency on a job it does not know as met: the sweep would start at once instead of waiting; give the id of a job `squeue --jobs=<id>` lists, or leave `after` out if that job has ended as the sweep needs"
        ));
    }
    let mut never = Vec::new();
    for (kind, term_ids) in after.iter().flat_map(|t| dependency_terms(t)) {
        for id in term_ids {
            let job = dependency_job(id);
            // A task named alone (`4242_7`) is judged by its own state; while Slurm lists it
            // only inside its array's pending record, not at all.
            let task = id.split('+').next().unwrap_or(id);
            let key = if task.contains('_') && !task.ends_with("_*") { task } else { job };
            let states = known.get(key).map(Vec::as_slice).unwrap_or_default();
            // `held` reads the runs' attempt records: asked only of a term that would be refused.
            if never_holds(kind, states) && !held(job) {
                let wants = if kind == "afterok" { "success" } else { "failure" };
                never.push(format!("`{kind}:{id}` can never hold: {}, and {kind} waits for its {wants}", ended_words(key, states)));
            }
        }
    }
    if never.is_empty() {
        return Ok(());
    }
    refuse(format!(
        "{}: Slurm would keep the sweep's runs queued for ever (DependencyNeverSatisfied); name a job that can still end as asked, `afterany:<id>` to follow a job however it ended, or leave `after` out",
        never.join("; ")
    ))
}

/// The states in which a job (or array task) has ended otherwise than COMPLETED, for good: an
/// `afterok` on it can never hold.
const ENDED_NOT_COMPLETED: &[&str] = &["FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED", "BOOT_FAIL", "DEADLINE"];

/// Whether a dependency term of type `kind` on a job whose tasks are in `states` (one for a
/// plain job, every task's for an array) can never hold: `afterok` once any task ended not
/// COMPLETED, `afternotok` once every task COMPLETED. `after` and `afterany` always hold once
/// the job has ended; no states (not listed) are not judged here.
fn never_holds(kind: &str, states: &[String]) -> bool {
    match kind {
        "afterok" => states.iter().any(|s| ENDED_NOT_COMPLETED.contains(&s.as_str())),
        "afternotok" => !states.is_empty() && states.iter().all(|s| s == "COMPLETED"),
        _ => false,
    }
}

/// How job `key`'s tasks stand, for a message: `job `4242` ended FAILED`, or for an array
/// `the tasks of array job `4242` are 3 COMPLETED, 1 FAILED`.
fn ended_words(key: &str, states: &[String]) -> String {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for s in states {
        *counts.entry(s.as_str()).or_default() += 1;
    }
    match (states, counts.len()) {
        ([one], _) => format!("job `{key}` ended {one}"),
        ([first, ..], 1) => format!("the {} tasks of array job `{key}` ended {first}", states.len()),
        _ => format!("the tasks of array job `{key}` are {}", counts.iter().map(|(s, n)| format!("{n} {s}")).collect::<Vec<_>>().join(", ")),
    }
}

/// Slurm's reason for a task whose dependency can never hold (`afterok` on a job that failed,
/// `afternotok` on one that succeeded): it stays queued until someone cancels it.
const NEVER_SATISFIED: &str = "DependencyNeverSatisfied";

/// Why the sweep cannot go on, and the arrays it concerns, when one of its tasks waits on a
/// dependency that can never hold (or Slurm cancelled it for that, under
/// `DependencyParameters=kill_invalid_depend`): every array carries `slurm.after`'s terms, so
/// each of its queued tasks would wait forever (and a waiting `drover run` with them).
fn never_satisfied(ledger: &Ledger, queue: &[QueueEntry]) -> Option<(String, BTreeSet<String>)> {
    let ours = ledger.accepted_jobs();
    // A task cancelled by drover or by the user keeps Slurm's last reason: only one Slurm
    // cancelled itself counts.
    let by_slurm = |job: &str| !ledger.cancel_reasons.contains_key(job) && !ledger.cancelled_jobs.contains(job) && ledger.cancelled_upto.is_none();
    let hit = |e: &&QueueEntry| {
        let state = e.state == "PENDING" || (e.state == "CANCELLED" && by_slurm(&e.array_job_id));
        ours.contains(e.array_job_id.as_str()) && state && e.reason == NEVER_SATISFIED
    };
    let e = queue.iter().find(hit)?;
    let arrays = queue.iter().filter(hit).map(|e| e.array_job_id.clone()).collect();
    let why = format!(
        "its dependency `{}` (`slurm.after`) can never hold: a job it names did not end as it asks (Slurm: {NEVER_SATISFIED}), so its queued runs would wait forever",
        failed_terms(e, &ours)
    );
    Some((why, arrays))
}

/// A warning for a rerun whose `slurm.after` differs from the one queued arrays of the sweep
/// were submitted with and still wait on: re-attached, they keep their old dependency.
fn changed_after_warning(ledger: &Ledger, queue: &[QueueEntry], after: &[String]) -> Option<String> {
    let ours = ledger.accepted_jobs();
    let mut stale: BTreeMap<&str, (&Vec<String>, usize)> = BTreeMap::new();
    for s in ledger.submissions.values().filter(|s| s.after != after) {
        let Some(job) = s.job_id.as_deref() else { continue };
        let waiting = queue.iter().filter(|e| e.array_job_id == job && e.state == "PENDING" && !user_dependency(e.dependency.as_deref(), &ours).is_empty()).count();
        if waiting > 0 {
            stale.insert(job, (&s.after, waiting));
        }
    }
    let (_, (old, _)) = stale.first_key_value()?;
    let tasks: usize = stale.values().map(|(_, n)| n).sum();
    let shown = |terms: &[String]| if terms.is_empty() { "none".to_string() } else { format!("`{}`", terms.join(",")) };
    Some(format!(
        "{} of array {} still wait on `slurm.after` = {} as submitted, not on {}: re-attached arrays keep their dependency; `drover cancel`, then `drover run` again, to have them wait on the new one",
        crate::words::count(tasks, "queued task"),
        stale.keys().copied().collect::<Vec<_>>().join(", "),
        shown(old),
        shown(after)
    ))
}

/// Whether a task waits on its dependency on one of the sweep's own arrays (`ours`): pending
/// for `Dependency`, and its dependency names one (or `squeue` did not say which it has, as
/// before drover asked: then it is the throttle's, the only one drover gave before
/// `slurm.after`).
fn waits_on_sweep(e: &QueueEntry, ours: &BTreeSet<&str>) -> bool {
    e.state == "PENDING"
        && e.reason == "Dependency"
        && e.dependency.as_deref().is_none_or(|d| {
            dependency_terms(d).iter().any(|(_, ids)| ids.iter().any(|id| ours.contains(dependency_job(id))))
        })
}

/// The terms of a dependency not on the sweep's own arrays (`ours`): `slurm.after`'s, as
/// `scontrol update Dependency=` takes them back when drover lifts the throttle's part. Empty
/// when none is left (then the lift clears the dependency).
fn user_dependency(dependency: Option<&str>, ours: &BTreeSet<&str>) -> String {
    let terms = dependency.map(dependency_terms).unwrap_or_default();
    terms
        .into_iter()
        .filter_map(|(kind, ids)| {
            if ids.is_empty() {
                return Some(kind.to_string());
            }
            let kept: Vec<&str> = ids.into_iter().filter(|id| !ours.contains(dependency_job(id))).collect();
            (!kept.is_empty()).then(|| format!("{kind}:{}", kept.join(":")))
        })
        .collect::<Vec<_>>()
        .join(",")
}

impl Occupancy {
    fn new(ledger: &Ledger, queue: &[QueueEntry]) -> Occupancy {
        let live = live_per_array(ledger, queue);
        let submission_of = ledger.submissions.iter().filter_map(|(n, s)| Some((s.job_id.clone()?, *n))).collect();
        let ours = ledger.accepted_jobs();
        let waiting = live
            .keys()
            .filter(|job| {
                queue.iter().filter(|e| &e.array_job_id == *job && is_live_entry(e)).all(|e| waits_on_sweep(e, &ours))
            })
            .cloned()
            .collect();
        Occupancy { live, submission_of, waiting }
    }

    /// How many runs the sweep's arrays other than submission `n` (array `job`) may run while
    /// `job` is live: every live task of theirs, queued ones included (they may start at any
    /// time, and a task pending behind its own array's `%N` is counted too, which only errs
    /// low), except those of an array submitted after `n` that waits on its dependency:
    /// `round_limits` made it wait for every array of the sweep live at its submission (`job`
    /// among them, as it is still live), so it cannot start while `job` runs, and should drover
    /// lift it, the lift's own bound counts every live task of `job`.
    fn others(&self, n: u32, job: &str) -> u32 {
        let waits_for_this = |id: &str| self.submission_of.get(id).is_some_and(|&m| m > n) && self.waiting.contains(id);
        let others: usize = self.live.iter().filter(|(id, _)| id.as_str() != job && !waits_for_this(id)).map(|(_, k)| k).sum();
        u32::try_from(others).unwrap_or(u32::MAX)
    }
}

/// `(array, %N)` for each array that started below the sweep's throttle (`raise_to`) and still
/// has queued tasks, whose throttle can grow now: the sweep's throttle less what the sweep's
/// other arrays may run (`Occupancy::others`), when that is above the array's starting `%N`.
/// An array still waiting on its dependency is left to `throttle_lifts`.
fn throttle_raises(ledger: &Ledger, queue: &[QueueEntry]) -> Vec<(String, u32)> {
    let occupancy = Occupancy::new(ledger, queue);
    ledger
        .submissions
        .iter()
        .filter_map(|(&n, s)| {
            let (job, target, start) = (s.job_id.as_deref()?, s.raise_to?, s.throttle?);
            if occupancy.waiting.contains(job) {
                return None;
            }
            let queued = queue.iter().any(|e| {
                e.array_job_id == job && listed_state(&e.state) == RunState::Pending
            });
            let now = target.saturating_sub(occupancy.others(n, job));
            (queued && now > start).then(|| (job.to_string(), now))
        })
        .collect()
}

/// A waiting array to lift and the `%N` it gets.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Lift {
    /// The array's submission number.
    submission: u32,
    /// The array's job id.
    job: String,
    /// The free slots: the sweep's throttle less what its other arrays may run; never 0,
    /// which Slurm reads as no limit.
    throttle: u32,
    /// The sweep's throttle (the array's `%N` at submission), which it is raised toward later.
    raise_to: u32,
    /// The dependency it keeps: `slurm.after`'s terms not yet held ([`user_dependency`]).
    keep: String,
}

/// The waiting arrays (`--dependency=afterany`, given no slot by `round_limits`) that may start
/// now, in submission order: those for which the sweep's throttle less what its other arrays
/// may run (`Occupancy::others`) leaves a slot, each given that many. Each bound counts every
/// live task of the arrays before it, lifted or waiting alike, so lifts computed from one answer
/// never add up past the throttle; a later waiting array does not count for an earlier one
/// since it waits for it, and if it is lifted too, its own bound counts the earlier one's tasks.
fn throttle_lifts(ledger: &Ledger, queue: &[QueueEntry]) -> Vec<Lift> {
    let occupancy = Occupancy::new(ledger, queue);
    let ours = ledger.accepted_jobs();
    ledger
        .submissions
        .iter()
        .filter_map(|(&n, s)| {
            let job = s.job_id.as_deref().filter(|job| occupancy.waiting.contains(*job))?;
            // A waiting array was submitted at the sweep's `%N`; an earlier lift recorded it.
            let target = s.raise_to.or(s.throttle)?;
            let free = target.saturating_sub(occupancy.others(n, job));
            let listed = queue.iter().find(|e| e.array_job_id == job && waits_on_sweep(e, &ours));
            let keep = user_dependency(listed.and_then(|e| e.dependency.as_deref()), &ours);
            (free > 0).then(|| Lift { submission: n, job: job.to_string(), throttle: free, raise_to: target, keep })
        })
        .collect()
}

/// Sets the throttles `throttle_raises` asks for, skipping those this process already set
/// (`set`); a refusal is logged, not fatal: the next poll or `drover status` tries again.
fn raise_throttles(ledger: &Ledger, queue: &[QueueEntry], slurm: &Slurm, set: &mut BTreeMap<String, u32>) {
    for (job, n) in throttle_raises(ledger, queue) {
        if set.get(&job) == Some(&n) {
            continue;
        }
        match slurm.set_array_throttle(&job, n) {
            Ok(()) => {
                tracing::info!(job = %job, throttle = n, "raised the array's throttle as older runs of the sweep ended");
                set.insert(job, n);
            }
            Err(e) => tracing::warn!("cannot raise the throttle of array {job} to {n} ({e}); the next poll or `drover status` tries again"),
        }
    }
}

/// `slurm/throttles.json`: the `ArrayTaskThrottle` each array was last set to by a drover
/// command, so that `drover status` run again and again (`watch drover status`) does not send
/// the controller the same `scontrol update` each time. Only a cache: missing, unreadable or
/// unwritable (a colleague's read-only view), it costs one repeated call.
const THROTTLES_JSON: &str = "throttles.json";

/// The throttles [`THROTTLES_JSON`] records (empty when it cannot be read).
fn throttles_set(root: &Path) -> BTreeMap<String, u32> {
    let path = root.join(SLURM_DIR).join(THROTTLES_JSON);
    let value: Option<serde_json::Value> = layout::read_record(&path).ok().flatten();
    value
        .filter(|v| v["format_version"] == 1)
        .and_then(|v| serde_json::from_value(v["set"].clone()).ok())
        .unwrap_or_default()
}

/// Records `set` in [`THROTTLES_JSON`] when it differs from `before`; best effort.
fn remember_throttles(root: &Path, before: &BTreeMap<String, u32>, set: &BTreeMap<String, u32>) {
    if before == set {
        return;
    }
    let path = root.join(SLURM_DIR).join(THROTTLES_JSON);
    let text = serde_json::json!({ "format_version": 1, "set": set }).to_string();
    if let Err(e) = layout::write_atomic(&path, text.as_bytes()) {
        tracing::debug!("cannot record the throttles set in `{}` ({e})", path.display());
    }
}

/// [`share_free_slots`] with the throttles set so far read from and recorded in
/// [`THROTTLES_JSON`], so that another drover command does not set them again; `set` also
/// carries them across one command's polls.
fn share_free_slots_remembered(root: &Path, ledger: &mut Ledger, queue: &[QueueEntry], slurm: &Slurm, set: &mut BTreeMap<String, u32>) -> BTreeMap<String, String> {
    let before = set.clone();
    let lifted = share_free_slots(ledger, queue, slurm, set);
    remember_throttles(root, &before, set);
    lifted
}

/// Hands the sweep's free slots out as one `squeue` answer shows them (a poll of a waiting
/// `drover run`, `drover status`, the start of the next `drover run`): raises lowered throttles
/// (`raise_throttles`) and lifts waiting arrays (`throttle_lifts`). A lift is recorded in the
/// ledger, then sets the array's `ArrayTaskThrottle`, then clears its dependency (all but
/// `slurm.after`'s terms not yet held, which it keeps), in that order:
/// until the second call the array still waits, so at no instant may the sweep run more than
/// its throttle. Recorded first so that an array whose throttle was lowered is always known to
/// be raised later, even if drover dies before the dependency is cleared and Slurm releases it.
/// A failure is logged, not fatal: the array keeps waiting, and the next poll or `drover status`
/// tries again. Returns the arrays whose dependency it set, each with the terms it kept.
fn share_free_slots(ledger: &mut Ledger, queue: &[QueueEntry], slurm: &Slurm, set: &mut BTreeMap<String, u32>) -> BTreeMap<String, String> {
    raise_throttles(ledger, queue, slurm, set);
    let mut lifted = BTreeMap::new();
    for Lift { submission, job, throttle, raise_to, keep } in throttle_lifts(ledger, queue) {
        let recorded = ledger.submissions.get(&submission).is_some_and(|s| s.lifted == Some(throttle));
        if !recorded {
            if let Err(e) = ledger.append(LedgerEvent::Lifted { submission, throttle, raise_to }) {
                tracing::warn!("cannot record the lift of waiting array {job} ({e}); it keeps waiting for now");
                continue;
            }
        }
        if let Err(e) = slurm.set_array_throttle(&job, throttle) {
            tracing::warn!("cannot set the throttle of waiting array {job} to {throttle} ({e}); it keeps waiting, and the next poll or `drover status` tries again");
            continue;
        }
        set.insert(job.clone(), throttle);
        if let Err(e) = slurm.set_dependency(&job, &keep) {
            tracing::warn!("array {job} may run {throttle} at once but still waits on its dependency ({e}); the next poll or `drover status` tries again");
            continue;
        }
        tracing::info!(job = %job, throttle, "lifted the waiting array's dependency: {throttle} of the sweep's {raise_to} slots are free");
        lifted.insert(job, keep);
    }
    lifted
}

/// The queue answer as Slurm gives it once the `lifted` arrays' dependencies are set to the
/// terms they kept: with none, their pending tasks' reason is `None` at once, so status no
/// longer says they wait for another job; with `slurm.after`'s, they wait on those alone.
fn mark_lifted(queue: &mut [QueueEntry], lifted: &BTreeMap<String, String>) {
    for e in queue.iter_mut().filter(|e| e.reason == "Dependency") {
        match lifted.get(&e.array_job_id) {
            Some(keep) if keep.is_empty() => {
                e.reason = "None".to_string();
                e.dependency = None;
            }
            Some(keep) => e.dependency = Some(keep.clone()),
            None => {}
        }
    }
}

/// What `drover run` says of how its new arrays share the sweep's throttle `n` with each other
/// and with the `live` runs of older arrays; nothing when every array runs all it may at once.
/// Without `wait` (`--no-wait`) no drover process stays to raise a lowered throttle or lift a
/// waiting array, so it says which command does.
fn sharing_words(n: u32, live: usize, arrays: &[SubmittedArray], wait: bool) -> Vec<String> {
    let lowered = arrays.iter().any(|a| a.limits.raise_to.is_some());
    let waiting = arrays.iter().any(|a| !a.limits.after.is_empty());
    if !lowered && !waiting {
        return Vec::new();
    }
    let lifter = if wait { "this `drover run`" } else { "`drover status` (or the next `drover run`)" };
    let older = crate::words::count(live, "run");
    let mut lines = Vec::new();
    match arrays {
        [one] if lowered => lines.push(format!(
            "{older} of earlier submissions still queued or running: the new runs start at {} at once, raised to {n} as those end (the sweep's throttle)",
            one.limits.throttle.unwrap_or(n)
        )),
        [one] => lines.push(format!(
            "{older} of earlier submissions still queued or running {} the sweep's throttle: the new runs wait for them (array {}); \
             Slurm starts them once those end, or {lifter} as soon as one ends and frees a slot",
            if live == 1 { "fills" } else { "fill" },
            one.limits.after.join(", ")
        )),
        _ => {
            let parts: Vec<String> = arrays
                .iter()
                .map(|a| match (&a.limits.after[..], a.limits.raise_to) {
                    ([], Some(_)) => format!("array {} starts at {} at once", a.job_id, a.limits.throttle.unwrap_or(n)),
                    ([], None) => format!("array {} runs {} at once", a.job_id, a.limits.throttle.unwrap_or(n)),
                    (after, _) => {
                        let which = if after.len() == 1 { "array" } else { "arrays" };
                        format!("array {} waits for {which} {} to end or for a free slot", a.job_id, after.join(", "))
                    }
                })
                .collect();
            let with = if live == 0 { String::new() } else { format!(" and {older} of earlier submissions still queued or running") };
            let raised = if lowered { format!("; lowered throttles are raised toward {n} as other runs of the sweep end") } else { String::new() };
            lines.push(format!(
                "the sweep's throttle ({n} at once) is shared by its {} new arrays{with} (Slurm applies `%N` per array): {}{raised}",
                arrays.len(),
                parts.join(", ")
            ));
        }
    }
    // A lone waiting array's line already names who lifts it.
    if !wait && (lowered || arrays.len() > 1) {
        let what = match (lowered, waiting) {
            (true, false) => "raises the lowered throttle",
            (false, _) => "starts a waiting array before the arrays it waits for end",
            (true, true) => "raises a lowered throttle or starts a waiting array early",
        };
        lines.push(format!(
            "with --no-wait no drover process {what}: {lifter} does, as runs end; until one runs, the sweep runs fewer than {n} at once, never more"
        ));
    }
    lines
}

/// How many failed runs may be resubmitted now: a resubmission is a new array whose own
/// throttle Slurm applies apart from the first array's, so only the sweep's free slots (its
/// throttle less the runs queued or running) are handed out, and the rest wait for a later poll.
fn retry_slots(throttle: Option<u32>, live: usize) -> usize {
    throttle.map_or(usize::MAX, |t| (t as usize).saturating_sub(live))
}

fn io_err<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> RunError + 'a {
    move |source| RunError::Io { action, path: path.to_path_buf(), source }
}

fn sha256_file(path: &Path) -> String {
    super::file_sha256(path).unwrap_or_default()
}

fn provenance(plan: &Plan) -> Provenance {
    let sweep_dir = plan.sweep.source.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let git_revision = std::process::Command::new("git")
        .arg("-C")
        .arg(sweep_dir)
        .args(["rev-parse", "HEAD"])
        .stderr(std::process::Stdio::null())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    Provenance {
        drover_version: env!("CARGO_PKG_VERSION").to_string(),
        git_revision,
        sweep_file: std::path::absolute(&plan.sweep.source).unwrap_or_else(|_| plan.sweep.source.clone()),
        plugins: plan.plugins.iter().map(|(name, path)| (name.clone(), (path.clone(), sha256_file(path)))).collect(),
        submit_host: std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_string()).unwrap_or_default(),
        submit_uid: Some(crate::backend::slurm_cmd::current_uid()),
        arch_builds: plan
            .sweep
            .slurm
            .arch
            .iter()
            .map(|(machine, dir)| {
                let files = crate::backend::arch::build_files(&plan.plugins).into_iter();
                (machine.clone(), files.map(|f| (f.to_string_lossy().into_owned(), sha256_file(&dir.join(f)))).collect())
            })
            .collect(),
        after: plan.sweep.slurm.after.clone(),
    }
}

/// Submits the arrays, writing intent before and outcome after each `sbatch`.
struct Submitter<'a> {
    plan: &'a Plan,
    root: PathBuf,
    job_name: String,
    token: String,
    opts: &'a SlurmOptions,
    provenance: Provenance,
    max_array: usize,
    /// `spec.json` of every run, written into the tasks file.
    specs: BTreeMap<String, JobSpec>,
    /// The largest array the cluster's submit limit last let in (`None` until one refused):
    /// see [`Submitter::submit`].
    room: std::cell::Cell<Option<usize>>,
}

/// One array a round submitted, with the limits it got (`after` holding every job id it waits for).
#[derive(Debug, Clone, PartialEq, Eq)]
struct SubmittedArray {
    job_id: String,
    limits: ArrayLimits,
    /// How many runs it holds.
    runs: usize,
    /// How many array tasks (`runs` when each task trains one run).
    tasks: usize,
}

/// What one round of submission did: the arrays Slurm accepted, and the runs its submit limit
/// left for later.
#[derive(Debug, Default)]
struct Round {
    /// The accepted arrays, in submission order.
    arrays: Vec<SubmittedArray>,
    /// Runs not submitted because Slurm's submit limit refused even a one-task array; they
    /// wait for room (jobs of the user ending).
    deferred: Vec<(String, Resources)>,
    /// The submit limit that refused them (`QOSMaxSubmitJobPerUserLimit`, ...), with the
    /// error to report should no job's end ever make room (`room_may_free`).
    limit: Option<(String, RunError)>,
}

impl Round {
    /// How many runs the accepted arrays hold.
    fn accepted(&self) -> usize {
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
    fn submit(
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
    fn submit_array(
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
    fn refused(&self, array: &ArrayPlan, answer: crate::error::SlurmError) -> RunError {
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
fn ready_run_dir(plan: &Plan, run: &crate::config::RunSpec, resume: bool) -> Result<bool, RunError> {
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

/// Slurm for a dry run's questions: one short try each, since a dry run is often made where
/// Slurm is not reachable (a laptop, a login node during an outage) and every question it asks
/// has a safe default.
fn dry_run_slurm(opts: &SlurmOptions) -> Slurm {
    Slurm {
        policy: crate::backend::slurm_cmd::CallPolicy { attempts: 1, timeout: Duration::from_secs(5), ..opts.slurm.policy.clone() },
        ..opts.slurm.clone()
    }
}

/// How long a waiting `drover run` goes on asking a Slurm that does not answer: 15 minutes,
/// or `DROVER_SLURM_OUTAGE_S` seconds.
fn outage_tolerance() -> Duration {
    std::env::var("DROVER_SLURM_OUTAGE_S").ok().and_then(|s| s.parse().ok()).map_or(Duration::from_secs(900), Duration::from_secs)
}

/// What `drover run --backend slurm` would do with each run, for `--dry-run`, by
/// [`prepare_runs`]' rules: `done`, `live` (queued or running: re-attached), `resume` (a stop
/// with its checkpoint), `redo` or `new`. Slurm is asked once and briefly, only when the sweep
/// has submissions; unreachable, no run counts as live.
pub fn dry_run_actions(plan: &Plan, opts: &SlurmOptions) -> Vec<&'static str> {
    let local = || plan.runs.iter().map(|r| crate::backend::planned_action(&plan.results.run_dir(r.run_id.as_str()), &plan.job_spec(r)).word()).collect();
    let Ok(root) = dry_run_root(plan) else { return local() };
    let Ok(mut ledger) = Ledger::load(&root) else { return local() };
    let (job_name, token) = job_name(&plan.sweep.name, &root);
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
            RunState::Done => "done",
            s if s.is_live() || task_live(st) => "live",
            state => {
                let run_dir = dir.run_dir(&run.run_id);
                let failed_at_stop = state == RunState::Failed && failed_at_a_stop(&run_dir);
                if resumes_on_rerun(state, failed_at_stop) && run_dir.join(CHECKPOINT_JSON).exists() {
                    "resume"
                } else if crate::backend::planned_action(&run_dir, &plan.job_spec(run)) == crate::backend::PlannedAction::New {
                    "new"
                } else {
                    "redo"
                }
            }
        })
        .collect()
}

/// Decides each run's fate from one queue answer and gets the ones to submit ready.
fn prepare_runs(
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
fn task_live(st: &RunStatus) -> bool {
    !st.state.is_live() && st.slurm_state.as_deref().is_some_and(|s| listed_state(s).is_live())
}

/// What `prepare_runs` decided.
struct PreparedRuns {
    /// Runs to submit, with their resources.
    to_submit: Vec<(String, Resources)>,
    /// Completed runs.
    skipped: usize,
    /// Queued or running runs.
    attached: usize,
    /// Runs of `to_submit` that continue from their checkpoint.
    resumed: usize,
    /// Runs of `to_submit` that failed before and start over.
    redone: usize,
}

/// `submitting N` with what a rerun's first line says of the runs it submits again: how many
/// failed before and are redone, and how many resume from their checkpoint.
fn submitting_words(submitting: usize, resumed: usize, redone: usize) -> String {
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
fn retry_kind(st: &RunStatus) -> Option<RetryKind> {
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
fn resumes_on_rerun(state: RunState, failed_at_stop: bool) -> bool {
    // Not submitted: never submitted (nothing to resume), or held back by a submit limit or not
    // reached by its packed task after whoever submitted it last got it ready: its checkpoint,
    // if any, is the work so far.
    state.stopped_from_outside() || state == RunState::NotSubmitted || (state == RunState::Failed && failed_at_stop)
}

/// Whether the run failed at a checkpointed stop: it kept its checkpoint and its last recorded
/// interruption is at its last metrics row. A run that failed after resuming (an error, a
/// crash) has trained past its last interruption, and starts over like any failure.
fn failed_at_a_stop(run_dir: &Path) -> bool {
    if !run_dir.join(CHECKPOINT_JSON).exists() {
        return false;
    }
    let last = interruptions(run_dir).iter().rev().find_map(|stop| stop["iteration"].as_u64());
    last.is_some() && last == Progress::read(run_dir, None).map(|p| p.iteration)
}

/// How long a waiting `drover run` waits after the `n`-th poll in a row that found the
/// controller unavailable: the poll interval (at least 1 s) doubled each time, up to a minute,
/// so that every waiting `drover run` does not press a restarting controller at its poll rate.
fn outage_wait(poll: Duration, n: u32) -> Duration {
    let doubled = poll.max(Duration::from_secs(1)).saturating_mul(1 << n.saturating_sub(1).min(16));
    doubled.min(Duration::from_secs(60).max(poll))
}

/// `drover run --backend slurm`: skip completed runs, re-attach to live ones, submit the rest
/// as job arrays; then (with `wait`) poll until every run has ended, resubmitting within the
/// retry budgets.
/// How often a waiting `drover run` asks again for room under a submit limit when none of the
/// sweep's own jobs has ended (other jobs of the user may have).
const ROOM_RETRY: Duration = Duration::from_secs(60);

/// Runs that Slurm's submit limit kept out (`Round::deferred`), waiting for room: new runs,
/// and retries whose `Retry` is already in the ledger (so a run waits here once, not once per
/// poll).
#[derive(Default)]
struct WaitingRoom {
    runs: Vec<(String, Resources)>,
    /// The limit that refused them last.
    limit: Option<String>,
    /// When the limit last refused, and how many of the sweep's tasks were live then.
    refused: Option<(Instant, usize)>,
    /// Since when a group's or an account's limit has refused while nothing of this user's was
    /// queued: colleagues' jobs may make room, or the limit may be 0 (a blocked account), so
    /// the wait is bounded ([`GROUP_LIMIT_PATIENCE`]).
    nothing_queued_since: Option<Instant>,
}

/// How long a group's or an account's submit limit is waited out while nothing of the user's
/// is queued, before its refusal is the error (`DROVER_SLURM_GROUP_WAIT_S` overrides).
const GROUP_LIMIT_PATIENCE: Duration = Duration::from_secs(30 * 60);

fn group_limit_patience() -> Duration {
    std::env::var("DROVER_SLURM_GROUP_WAIT_S").ok().and_then(|s| s.parse().ok()).map_or(GROUP_LIMIT_PATIENCE, Duration::from_secs)
}

impl WaitingRoom {
    /// Takes in what a round of the runs `tried` did, `live_before` of the sweep's tasks being
    /// live before it: its accepted arrays into the report, and which of `tried` wait here now
    /// (the round's deferred runs). A limit that refused even one task while nothing it counts
    /// is queued is not back-pressure: that refusal is the error.
    fn took(&mut self, report: &mut SlurmReport, tried: &[(String, Resources)], round: Round, live_before: usize, slurm: &Slurm) -> Result<(), RunError> {
        let accepted = round.accepted();
        let accepted_tasks: usize = round.arrays.iter().map(|a| a.tasks).sum();
        report.submitted += accepted;
        report.job_ids.extend(round.arrays.into_iter().map(|a| a.job_id));
        let tried: BTreeSet<&str> = tried.iter().map(|(id, _)| id.as_str()).collect();
        self.runs.retain(|(id, _)| !tried.contains(id.as_str()));
        self.runs.extend(round.deferred);
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
        report.deferred = self.runs.len();
        Ok(())
    }

    /// Whether runs wait and room may have freed: fewer of the sweep's tasks are live than at
    /// the last refusal, or `ROOM_RETRY` has passed.
    fn may_try(&self, live: usize) -> bool {
        !self.runs.is_empty() && self.refused.is_none_or(|(at, was)| live < was || at.elapsed() >= ROOM_RETRY)
    }

    /// Whether run `id` waits here.
    fn holds(&self, id: &str) -> bool {
        self.runs.iter().any(|(r, _)| r == id)
    }
}

/// `slurm.fail_fast`: a waiting `drover run` stops a sweep whose attempts fail before training
/// one iteration while no run of it has trained one: a broken setup (a plugin or library the
/// nodes cannot load, a bad build, a module not loaded) fails every run alike, and retrying
/// each of a few thousand runs is that many wasted jobs.
#[derive(Default)]
struct Breaker {
    /// Array tasks (`<job>_<task>`) in which a run failed before its first iteration: one per
    /// attempt when a task trains one run; a task of several runs on a bad node counts once.
    untrained: BTreeSet<String>,
    /// Whether any run has trained an iteration (then the setup works; the breaker stays off).
    trained: bool,
    /// Why the sweep was stopped, once it was (by this breaker, or for a `slurm.after` dependency
    /// that can never hold).
    why: Option<String>,
}

impl Breaker {
    /// Takes in one poll's statuses; returns why to stop when `limit` attempts have failed
    /// untrained and no run has trained.
    fn observe(&mut self, now: &[RunStatus], limit: u32) -> Option<String> {
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
fn stop_failing_sweep(ledger: &mut Ledger, queue: &[QueueEntry], slurm: &Slurm, why: &str) -> Result<usize, RunError> {
    stop_sweep(ledger, queue, slurm, why, &BTreeSet::new())
}

/// [`stop_failing_sweep`], recording `why` for the arrays `also` too (tasks Slurm cancelled
/// itself, whose runs status then explains the same way).
fn stop_sweep(ledger: &mut Ledger, queue: &[QueueEntry], slurm: &Slurm, why: &str, also: &BTreeSet<String>) -> Result<usize, RunError> {
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
        eprintln!("drover: warning: could not cancel the queued tasks ({e}); `drover cancel` stops them");
    }
    Ok(queued.len())
}

/// Whether nothing of this user's is queued whose end would make room under a submit limit:
/// neither the sweep's live tasks nor other jobs of the user. When the queue cannot be asked,
/// something is (waiting is the safer guess).
fn nothing_queued(slurm: &Slurm, live: usize) -> bool {
    live == 0 && !slurm.user_has_jobs(crate::backend::slurm_cmd::current_uid()).unwrap_or(true)
}

/// Whether a submit limit counts other users' jobs too (a group's or an account's:
/// `GrpSubmitJobs`, `MaxSubmitJobsPerAccount`), whose end this user cannot see: waited out a
/// while even with nothing of the user's queued.
fn counts_others(limit: &str) -> bool {
    limit.contains("Grp") || limit.contains("PerAccount")
}

pub fn run_sweep(plan: &Plan, opts: &SlurmOptions) -> Result<SlurmReport, RunError> {
    let started = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    // SIGHUP too (unless ignored, as under nohup): a closed terminal stops the waiting, and
    // the jobs go on.
    for sig in super::stop_signals().map_err(RunError::Signals)? {
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

    fn res(p: &str) -> Resources {
        Resources { options: vec![("partition", p.to_string())], extra: Vec::new() }
    }

    /// The ledger's record of submission `n` (comment `c<n>`, script `array-<n>.sbatch`) of `runs`.
    fn intent(n: u32, runs: Vec<String>, throttle: Option<u32>, raise_to: Option<u32>) -> LedgerEvent {
        intent_after(n, runs, throttle, raise_to, Vec::new())
    }

    /// [`intent`] of an array submitted with `slurm.after` = `after`.
    fn intent_after(n: u32, runs: Vec<String>, throttle: Option<u32>, raise_to: Option<u32>, after: Vec<String>) -> LedgerEvent {
        LedgerEvent::Intent {
            submission: n,
            job_name: "j".into(),
            comment: format!("c{n}"),
            script: format!("array-{n}.sbatch"),
            runs,
            provenance: Box::new(Provenance { after, ..Provenance::default() }),
            throttle,
            raise_to,
        }
    }

    /// Two runs submitted as array 77 (submission 0) in the results directory `root`: the
    /// ledger and the sweep as status sees them.
    fn two_runs_in_array_77(root: &Path) -> (Ledger, SweepDir, [&'static str; 2]) {
        let ids = ["0123456789abcdef", "fedcba9876543210"];
        let mut ledger = Ledger::load(root).expect("empty ledger");
        ledger.append(intent(0, ids.iter().map(|s| s.to_string()).collect(), None, None)).expect("intent");
        ledger.append(LedgerEvent::Submitted { submission: 0, job_id: "77".into() }).expect("submitted");
        let runs = ids.iter().map(|s| RunId::parse(s).expect("id")).collect();
        (ledger, SweepDir { root: root.to_path_buf(), name: "s".into(), runs, job_name: "j".into() }, ids)
    }

    #[test]
    fn arrays_split_at_the_size_limit_and_by_resources() {
        let runs: Vec<(String, Resources)> =
            (0..12).map(|i| (format!("r{i}"), if i % 4 == 3 { res("big") } else { res("small") })).collect();
        let arrays = plan_arrays(&runs, 5, 1);
        let sizes: Vec<(String, usize)> = arrays.iter().map(|a| (a.resources.options[0].1.clone(), a.runs.len())).collect();
        assert_eq!(sizes, [("small".into(), 5), ("small".into(), 4), ("big".into(), 3)]);
        assert_eq!(arrays[2].runs, ["r3", "r7", "r11"]);
        assert_eq!(plan_arrays(&runs, 1000, 1).len(), 2);
        // Packed: at most 2 tasks of 3 runs per array; the last task of an array takes the rest.
        let packed = plan_arrays(&runs, 2, 3);
        let shape: Vec<(usize, usize)> = packed.iter().map(|a| (a.runs.len(), a.tasks())).collect();
        assert_eq!(shape, [(6, 2), (3, 1), (3, 1)]);
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

    /// A `drover run` killed while `sbatch` ran leaves an intent with no job id: found in the
    /// queue by its comment it is recorded (so `drover status` and `cancel` see the array), in
    /// the file or, for a dry run, in memory only; one not in the queue is left for `drover run`.
    #[test]
    fn a_dangling_submission_is_found_by_its_comment() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path().canonicalize().expect("canonical");
        let mut ledger = Ledger::load(&root).expect("empty ledger");
        let run = |n: u32| vec![format!("{n:016x}")];
        for n in 0..2 {
            let mut event = intent(n, run(n), None, None);
            if let LedgerEvent::Intent { comment, .. } = &mut event {
                *comment = format!("drover:tok:{n}");
            }
            ledger.append(event).expect("intent");
        }
        let mut queue = tasks("941", 0, 1, "RUNNING", "None");
        queue[0].comment = "drover:tok:0".into();
        let mut dry = Ledger::load(&root).expect("ledger");
        assert_eq!(dry.find_dangling(&queue, "tok", false), [1]);
        assert_eq!(dry.latest().get(run(0)[0].as_str()), Some(&(0, 0)), "seen in memory");
        assert!(Ledger::load(&root).expect("ledger").latest().is_empty(), "a dry run writes nothing");
        assert_eq!(ledger.find_dangling(&queue, "tok", true), [1]);
        let again = Ledger::load(&root).expect("ledger");
        assert_eq!(again.submissions[&0].job_id.as_deref(), Some("941"), "recorded in the file");
        assert_eq!(again.dangling(), [1], "the one not in the queue is left alone");
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
        let queue = [QueueEntry { comment: format!("drover:{}:0", job_name("s", &root).1), ..tasks("77", 0, 1, "RUNNING", "None")[0].clone() }];
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

    /// A sweep of more than 500 runs without a throttle is warned about, naming the file; a
    /// throttle, `max_parallel` or a smaller sweep is not. So are threads beyond a task's CPUs
    /// and GPUs beyond the one each rank uses.
    #[test]
    fn large_sweeps_without_a_throttle_and_wasted_resources_are_warned_about() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let plugin = tmp.path().join("libdrover_plugin_x.so");
        std::fs::write(&plugin, b"a build").expect("plugin");
        // `extra` goes before `[run]`, `run_extra` into it.
        let plan_with = |extra: &str, run_extra: &str, count: usize| {
            let sweep_file = tmp.path().join("s.toml");
            let text = format!(
                "name = \"big\"\nbackend = \"slurm\"\n{extra}\n[run]\nenv = \"CartPole-v1\"\nplugin = {:?}\n{run_extra}\n[sweep]\nseeds = {{ count = {count}, start = 1 }}\n",
                plugin.display().to_string()
            );
            std::fs::write(&sweep_file, text).expect("sweep");
            let opts = crate::plan::PlanOptions { sweep_file, results: Some(tmp.path().join("r")), ..Default::default() };
            crate::plan::plan(&opts).expect("plan")
        };
        let plan_of = |extra: &str, count: usize| plan_with(extra, "", count);
        let warning = throttle_warning(&plan_of("", 501)).expect("warned");
        assert!(warning.starts_with("501 runs and no runs-at-once limit") && warning.contains("s.toml"), "{warning}");
        assert_eq!(throttle_warning(&plan_of("", 500)), None);
        assert_eq!(throttle_warning(&plan_of("max_parallel = 50", 501)), None);
        assert_eq!(throttle_warning(&plan_of("[slurm]\nthrottle = 50", 501)), None);

        // Threads beyond the CPUs a task gets, GPUs beyond the one a rank uses.
        let runs = |extra: &str| resource_warnings(&plan_with(extra, "threads = 4", 2));
        assert_eq!(resource_warnings(&plan_of("", 2)), Vec::<String>::new());
        let w = runs("");
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].starts_with("2 run(s) set run.threads = 4 but get 1 CPU(s) each") && w[0].contains("cpus_per_task = 4"), "{w:?}");
        let w = runs("[slurm]\ncpus_per_task = 4\ngpus_per_task = 4");
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].starts_with("2 run(s) ask for 4 GPUs per task") && w[0].contains("run.ranks = 4"), "{w:?}");
        assert_eq!(runs("[slurm]\ncpus_per_task = 4\ngpus_per_task = 1"), Vec::<String>::new());
        // Tasks a one-rank run does not use (review finding: they once started a second copy).
        for tasks in ["[slurm]\nntasks_per_node = 2", "[slurm]\nextra = [\"--ntasks=2\"]", "[slurm]\nnodes = 2"] {
            let w = resource_warnings(&plan_of(tasks, 2));
            assert!(w.len() == 1 && w[0].starts_with("2 run(s) have run.ranks = 1 but ask Slurm for several tasks"), "{tasks}: {w:?}");
        }
        assert_eq!(resource_warnings(&plan_with("[slurm]\nntasks_per_node = 2", "ranks = 2", 2)), Vec::<String>::new(), "an MPI run uses them");
    }

    /// A stand-in `bin/` whose `sbatch` takes arrays while the tasks accepted so far plus the
    /// array's fit in `limit` (a QOS `MaxSubmitJobsPerUser`), refusing with Slurm's words, and
    /// whose `squeue` lists `user_jobs` lines; returns the `Slurm` that calls them.
    fn submit_limited(dir: &Path, limit: usize, user_jobs: usize) -> Slurm {
        let bin = dir.join("bin");
        std::fs::create_dir_all(&bin).expect("mkdir");
        let count = dir.join("accepted-tasks");
        let sbatch = format!(
            "#!/bin/sh\nfor a in \"$@\"; do script=\"$a\"; done\n\
             last=$(sed -n 's/^#SBATCH --array=0-\\([0-9]*\\).*/\\1/p' \"$script\")\n\
             n=$(cat '{count}' 2>/dev/null || echo 0)\n\
             if [ $((n + last + 1)) -gt {limit} ]; then echo 'sbatch: error: QOSMaxSubmitJobPerUserLimit' >&2; exit 1; fi\n\
             echo $((n + last + 1)) > '{count}'\necho $((100 + n))\n",
            count = count.display()
        );
        let squeue = format!("#!/bin/sh\ni=0\nwhile [ $i -lt {user_jobs} ]; do echo $((500 + i)); i=$((i + 1)); done\n");
        for (name, body) in [("sbatch", sbatch), ("squeue", squeue)] {
            std::fs::write(bin.join(name), body).expect("stand-in");
            std::fs::set_permissions(bin.join(name), std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("chmod");
        }
        Slurm { bin_dir: Some(bin), policy: crate::backend::slurm_cmd::CallPolicy { attempts: 1, ..Default::default() } }
    }

    /// A Slurm sweep of `count` seeds (throttle `throttle`) planned in `dir`.
    fn seeds_plan(dir: &Path, count: usize, throttle: u32) -> Plan {
        let plugin = dir.join("libdrover_plugin_x.so");
        std::fs::write(&plugin, b"a build").expect("plugin");
        let sweep_file = dir.join("s.toml");
        let text = format!(
            "name = \"limited\"\nbackend = \"slurm\"\n[run]\nenv = \"CartPole-v1\"\nplugin = {:?}\n[sweep]\nseeds = {{ count = {count}, start = 1 }}\n[slurm]\nthrottle = {throttle}\n",
            plugin.display().to_string()
        );
        std::fs::write(&sweep_file, text).expect("sweep");
        let opts = crate::plan::PlanOptions { sweep_file, results: Some(dir.join("r")), ..Default::default() };
        crate::plan::plan(&opts).expect("plan")
    }

    /// `-j N` is the sweep's runs-at-once limit on Slurm too, over `slurm.throttle` (review
    /// finding: it was ignored, and a sweep without a throttle ran unthrottled without a word).
    #[test]
    fn dash_j_throttles_a_slurm_sweep() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let plan = seeds_plan(tmp.path(), 6, 4);
        assert_eq!(sweep_throttle(&plan), Some(4));
        let plan = Plan { jobs: std::num::NonZeroUsize::new(2), ..plan };
        assert_eq!(sweep_throttle(&plan), Some(2));
        // No scontrol in the stand-in folder: the dry run assumes MaxArraySize, as off a cluster.
        let slurm = Slurm { bin_dir: Some(tmp.path().join("no-slurm-here")), ..Slurm::default() };
        let opts = SlurmOptions { job_bin: tmp.path().join("drover-job"), wait: false, slurm, quiet: true };
        let scripts = dry_run_scripts(&plan, &opts, &["new"; 6]).expect("scripts");
        assert!(scripts[0].1.contains("#SBATCH --array=0-5%2\n"), "{}", scripts[0].1);
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
        let submitter = Submitter {
            plan: &plan,
            root: root.clone(),
            job_name: "drover-limited".into(),
            token: "t".into(),
            opts: &opts,
            provenance: Provenance::default(),
            max_array: 1000,
            specs: plan.runs.iter().map(|r| (r.run_id.to_string(), plan.job_spec(r))).collect(),
            room: std::cell::Cell::new(None),
        };
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
        assert!(room.runs.is_empty() && room.limit.is_none() && !room.may_try(0));

        // A group's limit counts colleagues' jobs, which this user cannot see end: waited out,
        // for a while (a limit of 0, a blocked account, would refuse for ever).
        let group = || Round { limit: Some(("QOSGrpSubmitJobsLimit".into(), RunError::NotSlurm { dir: "d".into() })), ..refused() };
        let mut room = WaitingRoom::default();
        room.took(&mut report, &tried, group(), 0, &nobody).expect("waited out");
        room.took(&mut report, &tried, group(), 0, &nobody).expect("still");
        room.nothing_queued_since = room.nothing_queued_since.map(|t| t - GROUP_LIMIT_PATIENCE);
        room.took(&mut report, &tried, group(), 0, &nobody).expect_err("waited long enough");
    }

    /// The plan of sweep `s.toml` in `dir` (a stand-in plugin file there): `slurm` is the
    /// `[slurm]` table's body, `run_extra` goes into `[run]`, with a grid of two `ranks`
    /// values when `run_extra` is `"grid"`.
    fn sweep_plan(dir: &Path, slurm: &str, run_extra: &str) -> Result<Plan, crate::ConfigError> {
        let plugin = dir.join("libdrover_plugin_x.so");
        std::fs::write(&plugin, b"a build").expect("plugin");
        let sweep_file = dir.join("s.toml");
        let (run_extra, grid) = if run_extra == "grid" { ("", "[sweep.grid]\n\"run.ranks\" = [1, 2]\n") } else { (run_extra, "") };
        let text = format!(
            "name = \"mpi\"\nbackend = \"slurm\"\n[run]\nenv = \"CartPole-v1\"\nplugin = {:?}\n{run_extra}\n[sweep]\nseeds = [1, 2]\n{grid}[slurm]\n{slurm}\n",
            plugin.display().to_string()
        );
        std::fs::write(&sweep_file, text).expect("sweep");
        crate::plan::plan(&crate::plan::PlanOptions { sweep_file, results: Some(dir.join("r")), ..Default::default() })
    }

    /// `slurm.mpi` against `srun --mpi=list`: runs with several ranks and a type this
    /// machine's srun does not list are warned about, naming the file, the key, the value and
    /// what srun offers; a listed type, one-rank runs and `"default"` are not. srun is not asked
    /// when no run has several ranks or the type is the cluster's; absent or failing, it says
    /// nothing.
    #[test]
    fn an_mpi_type_that_srun_does_not_list_is_warned_about() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let offered = |types: &[&str]| types.iter().map(|t| t.to_string()).collect::<Vec<_>>();
        let plan = sweep_plan(tmp.path(), "", "grid").expect("plan");
        let w = mpi_missing_warning(&plan, "pmix", &offered(&["none", "cray_shasta", "pmi2"])).expect("warned");
        let file = tmp.path().join("s.toml");
        assert!(w.starts_with(&format!("2 run(s) have run.ranks > 1 and `slurm.mpi` = \"pmix\" in `{}`", file.display())), "{w}");
        assert!(
            w.contains("`srun --mpi=list` on this machine offers none, cray_shasta, pmi2:") && w.contains("\"default\" for the cluster's `MpiDefault`"),
            "{w}"
        );
        assert_eq!(mpi_missing_warning(&plan, "pmix_v4", &offered(&["none", "pmix", "pmix_v4"])), None);
        let one_rank = sweep_plan(tmp.path(), "", "").expect("plan");
        assert_eq!(mpi_missing_warning(&one_rank, "pmix", &offered(&["none"])), None);

        // Through a stand-in srun that logs each call.
        let bin = tmp.path().join("bin");
        std::fs::create_dir_all(&bin).expect("mkdir");
        let slurm = Slurm { bin_dir: Some(bin.clone()), ..Slurm::default() };
        assert_eq!(mpi_warning(&plan, &slurm), None, "no srun: nothing said");
        let calls = tmp.path().join("calls");
        let srun = |body: &str| crate::subprocess::write_stand_in(&bin.join("srun"), &format!("echo \"$*\" >> '{}'\n{body}", calls.display()));
        srun(r"printf 'srun: MPI types are...\nsrun: none\nsrun: pmi2\n' >&2");
        let w = mpi_warning(&plan, &slurm).expect("warned");
        assert!(w.contains("`slurm.mpi` = \"pmix\"") && w.contains("offers none, pmi2:"), "{w}");
        assert_eq!(std::fs::read_to_string(&calls).expect("calls"), "--mpi=list\n");
        let pmi2 = sweep_plan(tmp.path(), "mpi = \"pmi2\"", "grid").expect("plan");
        assert_eq!(mpi_warning(&pmi2, &slurm), None);
        srun("echo 'srun: error: cannot load plugins' >&2; exit 1");
        assert_eq!(mpi_warning(&plan, &slurm), None, "a failing srun: nothing said");
        std::fs::remove_file(&calls).expect("rm");
        let cluster = sweep_plan(tmp.path(), "mpi = \"default\"", "grid").expect("plan");
        assert_eq!((mpi_warning(&cluster, &slurm), mpi_warning(&one_rank, &slurm)), (None, None));
        assert!(!calls.exists(), "srun is not asked when no run needs it");
    }

    /// `slurm.mpi` changes no run id (it says how ranks start, not what they compute), reaches
    /// the scripts `--dry-run` prints, and a bad value is refused naming file, key and reason.
    #[test]
    fn the_mpi_setting_keeps_run_ids_reaches_dry_run_scripts_and_refuses_bad_values() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let ids = |slurm: &str| sweep_plan(tmp.path(), slurm, "grid").expect("plan").runs.iter().map(|r| r.run_id.to_string()).collect::<Vec<_>>();
        let before = ids("");
        assert_eq!(before.len(), 4);
        assert_eq!(ids("mpi = \"pmi2\""), before);
        assert_eq!(ids("mpi = \"default\""), before);

        // No scontrol in the stand-in folder: the dry run assumes MaxArraySize, as off a cluster.
        let opts = SlurmOptions {
            job_bin: tmp.path().join("drover-job"),
            wait: false,
            slurm: Slurm { bin_dir: Some(tmp.path().join("no-slurm-here")), ..Slurm::default() },
            quiet: true,
        };
        let scripts = |slurm: &str| {
            let plan = sweep_plan(tmp.path(), slurm, "grid").expect("plan");
            let actions = vec!["new"; plan.runs.len()];
            dry_run_scripts(&plan, &opts, &actions).expect("scripts").into_iter().map(|(_, text)| text).collect::<Vec<_>>()
        };
        let pmi2 = scripts("mpi = \"pmi2\"");
        assert_eq!(pmi2.len(), 2, "one array per rank count");
        assert!(pmi2.iter().all(|t| t.contains("launcher=(srun --mpi=pmi2 --kill-on-bad-exit=1 ")), "{pmi2:?}");
        assert!(scripts("").iter().all(|t| t.contains("launcher=(srun --mpi=pmix --kill-on-bad-exit=1 ")));
        assert!(scripts("mpi = \"default\"").iter().all(|t| t.contains("launcher=(srun --kill-on-bad-exit=1 ") && !t.contains("--mpi")));

        let err = sweep_plan(tmp.path(), "mpi = \"pmix; reboot\"", "").expect_err("refused").to_string();
        let file = tmp.path().join("s.toml");
        assert!(
            err.starts_with(&format!(
                "failed to load sweep file `{}`: key `slurm.mpi`: invalid value: `pmix; reboot`: expected an MPI plugin type",
                file.display()
            )),
            "{err}"
        );
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

    /// The throttles a drover command set are remembered in `slurm/throttles.json`, so a
    /// `drover status` run again (or the next `drover run`) does not send the same `scontrol
    /// update` again; a missing or damaged file only costs one repeated call.
    #[test]
    fn a_throttle_set_once_is_not_set_again_by_the_next_command() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path();
        let (bin, calls) = (root.join("bin"), root.join("calls"));
        std::fs::create_dir_all(&bin).expect("mkdir");
        std::fs::write(bin.join("scontrol"), format!("#!/bin/sh\necho \"$*\" >> '{}'\nexit 0\n", calls.display())).expect("fake scontrol");
        std::fs::set_permissions(bin.join("scontrol"), std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("chmod");
        let slurm = Slurm { bin_dir: Some(bin), policy: crate::backend::slurm_cmd::CallPolicy { attempts: 1, ..Default::default() } };
        let mut ledger = Ledger::load(root).expect("empty");
        // Array 42 started at %1 below the sweep's 3 while array 41 ran; 41 has ended.
        ledger.append(intent(0, vec![format!("{:016x}", 0)], Some(3), None)).expect("intent");
        ledger.append(LedgerEvent::Submitted { submission: 0, job_id: "41".into() }).expect("submitted");
        ledger.append(intent(1, (1..7).map(|n| format!("{n:016x}")).collect(), Some(1), Some(3))).expect("intent");
        ledger.append(LedgerEvent::Submitted { submission: 1, job_id: "42".into() }).expect("submitted");
        let queue = [tasks("42", 0, 1, "RUNNING", "None"), tasks("42", 1, 6, "PENDING", "JobArrayTaskLimit")].concat();
        // What `drover status` does, twice.
        let status_like = |ledger: &mut Ledger| {
            share_free_slots_remembered(root, ledger, &queue, &slurm, &mut throttles_set(root));
        };
        status_like(&mut ledger);
        let calls_so_far = || std::fs::read_to_string(&calls).unwrap_or_default();
        assert_eq!(calls_so_far(), "update JobId=42 ArrayTaskThrottle=3\n");
        status_like(&mut ledger);
        assert_eq!(calls_so_far(), "update JobId=42 ArrayTaskThrottle=3\n", "not sent again");
        assert_eq!(throttles_set(root), BTreeMap::from([("42".to_string(), 3)]));
        std::fs::write(root.join(SLURM_DIR).join(THROTTLES_JSON), "{garbled").expect("damage");
        status_like(&mut ledger);
        assert_eq!(calls_so_far().lines().count(), 2, "a damaged cache costs one repeated call");
    }

    /// Paths in this machine's memory are named (here `/dev/shm`, tmpfs on Linux), paths on a
    /// disk are not; a path not created yet is judged by the folder above it.
    #[test]
    fn paths_on_tmpfs_are_warned_about() {
        let shm = Path::new("/dev/shm");
        if !in_memory_filesystem(shm) {
            eprintln!("no tmpfs at /dev/shm here: only the negative case is checked");
        } else {
            let results = shm.join("drover-not-created-yet/results");
            let w = node_local_warning(&[("the results directory", &results), ("drover-job", Path::new("/"))]).expect("warned");
            assert!(w.starts_with("the results directory `/dev/shm/drover-not-created-yet/results` on a filesystem in this machine's memory"), "{w}");
            assert!(!w.contains("drover-job"), "{w}");
        }
        // The source tree is on a disk wherever the tests run from a checkout.
        let tree = Path::new(env!("CARGO_MANIFEST_DIR"));
        if !in_memory_filesystem(tree) {
            assert_eq!(node_local_warning(&[("the results directory", tree)]), None);
        }
    }

    /// Paths on this machine's own disk are warned about when the cluster has other nodes,
    /// naming each path and its filesystem, except under a directory this machine exports;
    /// a single-node cluster (its node this host, or the loopback) hears nothing.
    #[test]
    fn paths_on_a_local_disk_of_a_multi_node_cluster_are_warned_about() {
        let paths = [("the results directory", Path::new("/scratch/local/r"), "ext4"), ("drover-job", Path::new("/home/u/bin/drover-job"), "XFS")];
        let w = local_disk_warning(&paths, true, &[]).expect("warned");
        assert!(w.starts_with("the results directory `/scratch/local/r` (ext4), drover-job `/home/u/bin/drover-job` (XFS) on this machine's own disk"), "{w}");
        assert_eq!(local_disk_warning(&paths, false, &[]), None, "a single-node cluster");
        let w = local_disk_warning(&paths, true, &[PathBuf::from("/home")]).expect("warned");
        assert!(!w.contains("drover-job"), "exported to the nodes: {w}");
        assert_eq!(local_disk_warning(&paths[1..], true, &[PathBuf::from("/home")]), None);
        assert!(is_this_machine("localhost", "127.0.0.1", "vm") && is_this_machine("node01", "10.0.0.5", "node01.cluster"));
        assert!(!is_this_machine("node02", "10.0.0.6", "login1"));
    }

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

    /// Failed runs are resubmitted only into the sweep's free slots: each resubmission is an
    /// array with its own throttle, which Slurm does not add up with the first array's.
    #[test]
    fn resubmissions_fill_only_the_free_slots_of_the_throttle() {
        assert_eq!(retry_slots(Some(4), 0), 4);
        assert_eq!(retry_slots(Some(4), 3), 1);
        assert_eq!(retry_slots(Some(1), 1), 0, "one run at once, and it is running: the retry waits");
        assert_eq!(retry_slots(Some(2), 7), 0);
        assert_eq!(retry_slots(None, 100), usize::MAX);
    }

    fn live(pairs: &[(&str, usize)]) -> BTreeMap<String, usize> {
        pairs.iter().map(|&(id, n)| (id.to_string(), n)).collect()
    }

    fn at(throttle: u32, raise_to: Option<u32>) -> ArrayLimits {
        ArrayLimits { throttle: Some(throttle), raise_to, ..ArrayLimits::default() }
    }

    fn waits(throttle: u32, after: &[&str], after_earlier: bool) -> ArrayLimits {
        ArrayLimits { throttle: Some(throttle), raise_to: None, after: after.iter().map(|s| s.to_string()).collect(), after_earlier }
    }

    /// A rerun's first array shares the sweep's throttle with runs of earlier arrays still
    /// live: it starts at what they leave, or waits for them when they fill it.
    #[test]
    fn a_reruns_first_array_starts_within_what_older_live_runs_leave() {
        assert_eq!(round_limits(Some(4), &live(&[]), &[10]), [at(4, None)]);
        assert_eq!(round_limits(None, &live(&[("41", 9)]), &[10, 3]), [ArrayLimits::default(), ArrayLimits::default()], "no throttle, nothing to share");
        assert_eq!(round_limits(Some(4), &live(&[("41", 1), ("42", 2)]), &[10]), [at(1, Some(4))]);
        assert_eq!(round_limits(Some(3), &live(&[("41", 2), ("42", 1)]), &[10]), [waits(3, &["41", "42"], false)]);
        assert_eq!(round_limits(Some(4), &live(&[("41", 1)]), &[2]), [at(2, None)], "as many slots as tasks: nothing to raise");
    }

    /// Issue (slurm2): a round split into several arrays (by `MaxArraySize` or by
    /// `[[slurm.overrides]]`) gave each array the whole `%N`, so k arrays ran k·N at once.
    /// The free slots are dealt across the arrays; an array left without one waits for all
    /// that came before it rather than get `%0`, which Slurm reads as no limit.
    #[test]
    fn a_round_of_several_arrays_shares_one_throttle() {
        assert_eq!(round_limits(Some(4), &live(&[]), &[10, 10]), [at(2, Some(4)), at(2, Some(4))]);
        assert_eq!(round_limits(Some(4), &live(&[]), &[1, 10]), [at(1, None), at(3, Some(4))], "a one-run array needs one slot");
        assert_eq!(round_limits(Some(5), &live(&[]), &[2, 10]), [at(2, None), at(3, Some(5))]);
        assert_eq!(round_limits(Some(5), &live(&[]), &[3, 3, 3]), [at(2, Some(5)), at(2, Some(5)), at(1, Some(5))], "earlier arrays first");
        assert_eq!(round_limits(Some(4), &live(&[]), &[2, 2]), [at(2, None), at(2, None)]);
        assert_eq!(
            round_limits(Some(2), &live(&[]), &[2, 2, 2, 2]),
            [at(1, Some(2)), at(1, Some(2)), waits(2, &[], true), waits(2, &[], true)],
            "more arrays than slots: the rest wait, each for every array before it"
        );
        assert_eq!(round_limits(Some(4), &live(&[("41", 3)]), &[5, 5]), [at(1, Some(4)), waits(4, &["41"], true)]);
        assert_eq!(
            round_limits(Some(3), &live(&[("41", 3)]), &[5, 5]),
            [waits(3, &["41"], false), waits(3, &["41"], true)],
            "older runs fill the throttle: the arrays wait one after another"
        );
        // Over many shapes: never `%0`, never more than the throttle at once, no slot left idle
        // while an array waits, and an array waits only when no slot is left.
        for n in 1..7u32 {
            for older in 0..8usize {
                for sizes in [vec![1], vec![3], vec![1, 1, 1], vec![2, 7], vec![7, 2, 1, 4], vec![9; 5]] {
                    let limits = round_limits(Some(n), &live(&[("41", older)][..usize::from(older > 0)]), &sizes);
                    let what = format!("n={n} older={older} sizes={sizes:?}: {limits:?}");
                    assert!(limits.iter().all(|l| l.throttle.is_some_and(|t| t > 0)), "{what}");
                    let starting: u32 = limits.iter().filter(|l| l.after.is_empty() && !l.after_earlier).map(|l| l.throttle.unwrap_or(0)).sum();
                    let waiting = limits.iter().any(|l| !l.after.is_empty() || l.after_earlier);
                    assert!(older as u32 + starting <= n.max(older as u32), "{what}");
                    assert_eq!(waiting, older as u32 + starting >= n && sizes.len() > limits.iter().filter(|l| l.after.is_empty() && !l.after_earlier).count(), "{what}");
                    for (l, &size) in limits.iter().zip(&sizes) {
                        assert!(l.raise_to.is_none() || l.throttle.is_some_and(|t| (t as usize) < size), "{what}");
                    }
                }
            }
        }
        assert_eq!(deal(u32::MAX, &[3, 5]), [3, 5], "a huge throttle, dealt in whole rounds");
        assert_eq!(deal(7, &[1, 100, 100]), [1, 3, 3]);
    }

    /// What `drover run` says of the split, and that with `--no-wait` it names the commands
    /// that raise a lowered throttle (no drover process stays to do it).
    #[test]
    fn drover_run_says_how_its_arrays_share_the_throttle_and_who_raises_it() {
        let arr = |id: &str, limits: ArrayLimits| SubmittedArray { job_id: id.into(), limits, runs: 0, tasks: 0 };
        assert!(sharing_words(4, 0, &[arr("50", at(4, None))], false).is_empty(), "nothing shared, nothing said");
        let one = sharing_words(3, 2, &[arr("50", at(1, Some(3)))], true);
        assert_eq!(one, ["2 runs of earlier submissions still queued or running: the new runs start at 1 at once, raised to 3 as those end (the sweep's throttle)"]);
        let no_wait = sharing_words(3, 2, &[arr("50", at(1, Some(3)))], false);
        assert_eq!(no_wait.len(), 2, "{no_wait:?}");
        assert!(no_wait[1].starts_with("with --no-wait no drover process raises the lowered throttle: `drover status` (or the next `drover run`) does"), "{no_wait:?}");
        let waiting = sharing_words(3, 3, &[arr("50", waits(3, &["41"], false))], false);
        assert_eq!(waiting.len(), 1, "Slurm releases a waiting array by itself: {waiting:?}");
        assert!(
            waiting[0].ends_with(
                "wait for them (array 41); Slurm starts them once those end, or `drover status` (or the next `drover run`) as soon as one ends and frees a slot"
            ),
            "{waiting:?}"
        );
        let waiting = sharing_words(3, 3, &[arr("50", waits(3, &["41"], false))], true);
        assert!(waiting[0].ends_with("Slurm starts them once those end, or this `drover run` as soon as one ends and frees a slot"), "{waiting:?}");
        let split = sharing_words(2, 0, &[arr("50", at(1, Some(2))), arr("51", at(1, Some(2))), arr("52", waits(2, &["50", "51"], true))], true);
        assert_eq!(
            split,
            ["the sweep's throttle (2 at once) is shared by its 3 new arrays (Slurm applies `%N` per array): array 50 starts at 1 at once, \
              array 51 starts at 1 at once, array 52 waits for arrays 50, 51 to end or for a free slot; lowered throttles are raised toward 2 as other runs of the sweep end"]
        );
        let split = sharing_words(1, 0, &[arr("50", at(1, None)), arr("51", waits(1, &["50"], true))], false);
        assert_eq!(split.len(), 2, "{split:?}");
        assert!(split[0].ends_with("array 50 runs 1 at once, array 51 waits for array 50 to end or for a free slot"), "{split:?}");
        assert!(
            split[1].starts_with("with --no-wait no drover process starts a waiting array before the arrays it waits for end: `drover status` (or the next `drover run`) does"),
            "{split:?}"
        );
    }

    /// A lowered array is raised to the sweep's throttle less what the other arrays still run,
    /// only upward and only while it has queued tasks.
    #[test]
    fn a_lowered_throttle_is_raised_as_older_runs_end() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut ledger = Ledger::load(tmp.path()).expect("empty");
        for (n, job, throttle, raise_to) in [(0, "41", Some(3), None), (1, "42", Some(1), Some(3))] {
            ledger.append(intent(n, vec![format!("{n:016x}")], throttle, raise_to)).expect("intent");
            ledger.append(LedgerEvent::Submitted { submission: n, job_id: job.into() }).expect("submitted");
        }
        let back = Ledger::load(tmp.path()).expect("reload");
        assert_eq!((back.submissions[&1].throttle, back.submissions[&1].raise_to), (Some(1), Some(3)), "kept in the ledger");
        let entry = |job: &str, task, state: &str| QueueEntry {
            array_job_id: job.into(),
            task: Some(task),
            state: state.into(),
            reason: "None".into(),
            comment: String::new(),
            dependency: None,
        };
        let new_array = [entry("42", 0, "RUNNING"), entry("42", 1, "PENDING"), entry("42", 2, "PENDING")];
        let with_older = |older: &[QueueEntry]| throttle_raises(&back, &[older, &new_array[..]].concat());
        assert!(with_older(&[entry("41", 0, "RUNNING"), entry("41", 1, "RUNNING")]).is_empty(), "two older runs live: stays at 1");
        assert_eq!(with_older(&[entry("41", 0, "RUNNING"), entry("41", 1, "COMPLETED")]), [("42".to_string(), 2)]);
        assert_eq!(with_older(&[entry("41", 1, "CANCELLED")]), [("42".to_string(), 3)]);
        assert_eq!(with_older(&[]), [("42".to_string(), 3)], "Slurm forgot the older array");
        let nothing_queued = [entry("42", 0, "RUNNING"), entry("42", 1, "COMPLETED")];
        assert!(throttle_raises(&back, &nothing_queued).is_empty(), "no queued task, nothing to raise");
    }

    /// A later array that waits on its dependency (it was given no slot, so it waits for every
    /// array live at its submission) cannot start while the lowered array runs: it does not
    /// hold the lowered array down. An older waiting array, which does not wait for it, does.
    #[test]
    fn a_later_array_waiting_on_its_dependency_does_not_hold_a_raise_back() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut ledger = Ledger::load(tmp.path()).expect("empty");
        for (n, job, throttle, raise_to) in [(0, "50", Some(3), None), (1, "51", Some(1), Some(2)), (2, "52", Some(2), None)] {
            ledger.append(intent(n, vec![format!("{n:016x}")], throttle, raise_to)).expect("intent");
            ledger.append(LedgerEvent::Submitted { submission: n, job_id: job.into() }).expect("submitted");
        }
        let back = Ledger::load(tmp.path()).expect("reload");
        let entry = |job: &str, task, state: &str, reason: &str| QueueEntry {
            array_job_id: job.into(),
            task: Some(task),
            state: state.into(),
            reason: reason.into(),
            comment: String::new(),
            dependency: None,
        };
        let lowered = [entry("51", 0, "RUNNING", "None"), entry("51", 1, "PENDING", "JobArrayTaskLimit")];
        let later_waiting = [entry("52", 0, "PENDING", "Dependency"), entry("52", 1, "PENDING", "Dependency")];
        assert_eq!(throttle_raises(&back, &[&lowered[..], &later_waiting[..]].concat()), [("51".to_string(), 2)]);
        // The same array with a task running no longer waits: its runs count.
        let later_running = [entry("52", 0, "RUNNING", "None"), entry("52", 1, "PENDING", "Dependency")];
        assert!(throttle_raises(&back, &[&lowered[..], &later_running[..]].concat()).is_empty());
        // An older array waiting on a dependency does not wait for the lowered one: it counts.
        let older_waiting = [entry("50", 0, "PENDING", "Dependency")];
        assert!(throttle_raises(&back, &[&older_waiting[..], &lowered[..]].concat()).is_empty(), "1 older + 1 running = 2");
    }

    /// A ledger folded in memory from `(submission, job id, throttle, raise_to)` per array.
    fn ledger_of(arrays: &[(u32, &str, Option<u32>, Option<u32>)]) -> Ledger {
        let mut ledger = Ledger::default();
        for &(n, job, throttle, raise_to) in arrays {
            ledger.apply(intent(n, vec![format!("{n:016x}")], throttle, raise_to));
            ledger.apply(LedgerEvent::Submitted { submission: n, job_id: job.into() });
        }
        ledger
    }

    /// `count` tasks of array `job` from index `from`, all in `state` for `reason`.
    fn tasks(job: &str, from: u32, count: u32, state: &str, reason: &str) -> Vec<QueueEntry> {
        (from..from + count)
            .map(|task| QueueEntry { array_job_id: job.into(), task: Some(task), state: state.into(), reason: reason.into(), comment: String::new(), dependency: None })
            .collect()
    }

    fn lift(submission: u32, job: &str, throttle: u32, raise_to: u32) -> Lift {
        Lift { submission, job: job.into(), throttle, raise_to, keep: String::new() }
    }

    /// A waiting array (given no slot, so `--dependency=afterany` on the older live array) is
    /// lifted as soon as the older array's runs leave a slot, to as many slots as they leave,
    /// before all of them end; never while they fill the throttle, and never once it runs.
    /// Lifted, it counts as an array started at that `%N` and is raised as the rest end.
    #[test]
    fn a_waiting_array_is_lifted_into_the_slots_older_runs_leave() {
        let ledger = ledger_of(&[(0, "41", Some(4), None), (1, "42", Some(4), None)]);
        let waiting = tasks("42", 0, 6, "PENDING", "Dependency");
        let with_older = |older: Vec<QueueEntry>| throttle_lifts(&ledger, &[older, waiting.clone()].concat());
        assert!(with_older(tasks("41", 0, 4, "RUNNING", "None")).is_empty(), "four older runs fill the throttle of 4");
        let three_left = [tasks("41", 0, 3, "RUNNING", "None"), tasks("41", 3, 1, "COMPLETED", "None")].concat();
        assert_eq!(with_older(three_left), [lift(1, "42", 1, 4)], "one run ended: one slot");
        assert_eq!(with_older(tasks("41", 0, 1, "RUNNING", "None")), [lift(1, "42", 3, 4)], "the last older run still going");
        let requeued = [tasks("41", 0, 1, "RUNNING", "None"), tasks("41", 1, 1, "PENDING", "BeginTime")].concat();
        assert_eq!(with_older(requeued), [lift(1, "42", 2, 4)], "a queued older task may start at any time: it counts");
        assert_eq!(with_older(Vec::new()), [lift(1, "42", 4, 4)], "Slurm forgot the older array");
        let started = [tasks("41", 0, 1, "RUNNING", "None"), tasks("42", 0, 1, "RUNNING", "None"), tasks("42", 1, 5, "PENDING", "Dependency")].concat();
        assert!(throttle_lifts(&ledger, &started).is_empty(), "an array with a task running does not wait");
        assert!(throttle_raises(&ledger, &[tasks("41", 0, 1, "RUNNING", "None"), waiting.clone()].concat()).is_empty(), "lifts are not raises");

        // Lifted at 3 while one older run goes: it is raised to 4 once that run ends, not before.
        let mut ledger = ledger;
        ledger.apply(LedgerEvent::Lifted { submission: 1, throttle: 3, raise_to: 4 });
        assert_eq!((ledger.submissions[&1].throttle, ledger.submissions[&1].raise_to, ledger.submissions[&1].lifted), (Some(3), Some(4), Some(3)));
        let lifted = [tasks("42", 0, 3, "RUNNING", "None"), tasks("42", 3, 3, "PENDING", "JobArrayTaskLimit")].concat();
        assert!(throttle_raises(&ledger, &[tasks("41", 0, 1, "RUNNING", "None"), lifted.clone()].concat()).is_empty());
        assert!(throttle_lifts(&ledger, &[tasks("41", 0, 1, "RUNNING", "None"), lifted.clone()].concat()).is_empty());
        assert_eq!(throttle_raises(&ledger, &lifted), [("42".to_string(), 4)]);

        // Status reads a lifted array's tasks as Slurm gives them once the dependency is gone.
        let mut queue = [tasks("41", 0, 1, "RUNNING", "None"), waiting].concat();
        mark_lifted(&mut queue, &BTreeMap::from([("42".to_string(), String::new())]));
        assert!(queue.iter().all(|e| e.reason == "None"), "{queue:?}");
    }

    /// Two waiting arrays (the second also waits for the first: same round, or a later rerun)
    /// are lifted in submission order, each bound counting every live task of the arrays before
    /// it, so together they never pass the throttle; the first does not count the second, which
    /// cannot start before it ends unless lifted itself.
    #[test]
    fn waiting_arrays_are_lifted_in_submission_order_within_the_throttle() {
        let ledger = ledger_of(&[(0, "41", Some(4), None), (1, "42", Some(4), None), (2, "43", Some(4), None)]);
        let older = tasks("41", 0, 1, "RUNNING", "None");
        let second = tasks("43", 0, 5, "PENDING", "Dependency");
        let small_first = [older.clone(), tasks("42", 0, 2, "PENDING", "Dependency"), second.clone()].concat();
        assert_eq!(throttle_lifts(&ledger, &small_first), [lift(1, "42", 3, 4), lift(2, "43", 1, 4)], "1 older + 2 + 1 = 4");
        let big_first = [older.clone(), tasks("42", 0, 5, "PENDING", "Dependency"), second.clone()].concat();
        assert_eq!(throttle_lifts(&ledger, &big_first), [lift(1, "42", 3, 4)], "the first array takes every free slot");
        let full = [tasks("41", 0, 4, "RUNNING", "None"), tasks("42", 0, 2, "PENDING", "Dependency"), second.clone()].concat();
        assert!(throttle_lifts(&ledger, &full).is_empty(), "no slot free, nothing lifted");

        // Once the first is lifted (at 3) and runs, the second waits until the first's tasks fit.
        let mut ledger = ledger;
        ledger.apply(LedgerEvent::Lifted { submission: 1, throttle: 3, raise_to: 4 });
        let first_runs = [tasks("42", 0, 3, "RUNNING", "None"), tasks("42", 3, 2, "PENDING", "JobArrayTaskLimit")].concat();
        let queue = [older.clone(), first_runs, second.clone()].concat();
        assert!(throttle_lifts(&ledger, &queue).is_empty());
        assert!(throttle_raises(&ledger, &queue).is_empty(), "3 is all the older run leaves the first array");
        let first_ending = [tasks("42", 0, 2, "RUNNING", "None"), tasks("42", 2, 3, "COMPLETED", "None")].concat();
        assert_eq!(throttle_lifts(&ledger, &[older, first_ending, second].concat()), [lift(2, "43", 1, 4)]);
    }

    /// A lift survives a reload of the ledger; a ledger written before lifts existed loads as
    /// before, and a lift of a submission the ledger does not hold changes nothing.
    #[test]
    fn a_lift_is_kept_in_the_ledger_and_an_older_ledger_still_loads() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut ledger = Ledger::load(tmp.path()).expect("empty");
        ledger.append(intent(0, vec!["a".into()], Some(2), None)).expect("intent");
        ledger.append(LedgerEvent::Submitted { submission: 0, job_id: "41".into() }).expect("submitted");
        ledger.append(LedgerEvent::Lifted { submission: 0, throttle: 1, raise_to: 2 }).expect("lifted");
        ledger.append(LedgerEvent::Lifted { submission: 9, throttle: 1, raise_to: 2 }).expect("lifted");
        let text = std::fs::read_to_string(tmp.path().join(SLURM_DIR).join(LEDGER)).expect("ledger");
        assert!(text.contains(r#""kind":"lifted","submission":0,"throttle":1,"raise_to":2"#), "{text}");
        let back = Ledger::load(tmp.path()).expect("reload");
        let s = &back.submissions[&0];
        assert_eq!((s.throttle, s.raise_to, s.lifted), (Some(1), Some(2), Some(1)));
        assert_eq!(back.submissions.len(), 1);

        let old = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(old.path().join(SLURM_DIR)).expect("mkdir");
        let lines = [
            r#"{"format_version":1,"at":"1","kind":"intent","submission":0,"job_name":"j","comment":"c","script":"array-0.sbatch","runs":["a"],"provenance":{"drover_version":"0","git_revision":null,"sweep_file":"s.toml","plugins":{},"submit_host":"h"},"throttle":2}"#,
            r#"{"format_version":1,"at":"2","kind":"submitted","submission":0,"job_id":"41"}"#,
        ];
        std::fs::write(old.path().join(SLURM_DIR).join(LEDGER), lines.join("\n") + "\n").expect("old ledger");
        let old = Ledger::load(old.path()).expect("an old ledger loads");
        let s = &old.submissions[&0];
        assert_eq!((s.throttle, s.raise_to, s.lifted, s.job_id.as_deref()), (Some(2), None, None, Some("41")));
    }

    /// `share_free_slots` records a lift, then sets the throttle, then clears the dependency, so
    /// between the two `scontrol` calls the array still waits; when Slurm refuses the throttle
    /// the dependency is left alone, and a refused clear is tried again by the next call
    /// without a second ledger line. A fake `scontrol` logs its calls.
    #[test]
    fn a_lift_sets_the_throttle_before_it_clears_the_dependency() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let (bin, calls) = (tmp.path().join("bin"), tmp.path().join("calls"));
        std::fs::create_dir_all(&bin).expect("mkdir");
        let refuse = |what: &str| tmp.path().join(format!("refuse-{what}"));
        std::fs::write(
            bin.join("scontrol"),
            format!(
                "#!/bin/sh\necho \"$*\" >> '{calls}'\n\
                 case \"$*\" in *Throttle*) [ -e '{t}' ] && {{ echo 'slurm_update error: Access/permission denied' >&2; exit 1; }};; \
                 *Dependency=) [ -e '{d}' ] && {{ echo 'slurm_update error: Job is no longer pending execution' >&2; exit 1; }};; esac\nexit 0\n",
                calls = calls.display(),
                t = refuse("throttle").display(),
                d = refuse("dependency").display()
            ),
        )
        .expect("fake scontrol");
        std::fs::set_permissions(bin.join("scontrol"), std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("chmod");
        let slurm = Slurm { bin_dir: Some(bin), policy: crate::backend::slurm_cmd::CallPolicy { attempts: 1, ..Default::default() } };
        let mut ledger = Ledger::load(tmp.path()).expect("empty");
        for (n, job) in [(0, "41"), (1, "42")] {
            ledger.append(intent(n, vec![format!("{n:016x}")], Some(4), None)).expect("intent");
            ledger.append(LedgerEvent::Submitted { submission: n, job_id: job.into() }).expect("submitted");
        }
        let queue = [tasks("41", 0, 1, "RUNNING", "None"), tasks("42", 0, 6, "PENDING", "Dependency")].concat();
        let calls_so_far = || std::fs::read_to_string(&calls).unwrap_or_default();
        let lifted_lines = || {
            let text = std::fs::read_to_string(tmp.path().join(SLURM_DIR).join(LEDGER)).expect("ledger");
            text.lines().filter(|l| l.contains(r#""kind":"lifted""#)).count()
        };

        std::fs::write(refuse("throttle"), "").expect("refuse");
        assert!(share_free_slots(&mut ledger, &queue, &slurm, &mut BTreeMap::new()).is_empty());
        assert_eq!(calls_so_far(), "update JobId=42 ArrayTaskThrottle=3\n", "no dependency cleared without the throttle");
        std::fs::remove_file(refuse("throttle")).expect("rm");

        std::fs::write(refuse("dependency"), "").expect("refuse");
        assert!(share_free_slots(&mut ledger, &queue, &slurm, &mut BTreeMap::new()).is_empty(), "still waiting");
        std::fs::remove_file(refuse("dependency")).expect("rm");
        assert_eq!(share_free_slots(&mut ledger, &queue, &slurm, &mut BTreeMap::new()), BTreeMap::from([("42".to_string(), String::new())]));
        let throttle_then_dependency = "update JobId=42 ArrayTaskThrottle=3\nupdate JobId=42 Dependency=\n";
        assert_eq!(calls_so_far(), format!("update JobId=42 ArrayTaskThrottle=3\n{throttle_then_dependency}{throttle_then_dependency}"));
        assert_eq!(lifted_lines(), 1, "the same lift is recorded once");
        let back = Ledger::load(tmp.path()).expect("reload");
        assert_eq!((back.submissions[&1].throttle, back.submissions[&1].raise_to), (Some(3), Some(4)));

        // With `slurm.after`'s term still to hold, the lift keeps it: only the throttle's goes.
        let waiting_on_both: Vec<QueueEntry> = tasks("42", 0, 6, "PENDING", "Dependency")
            .into_iter()
            .map(|e| QueueEntry { dependency: Some("afterok:99(unfulfilled),afterany:41_*(unfulfilled)".into()), ..e })
            .collect();
        let queue = [tasks("41", 0, 1, "RUNNING", "None"), waiting_on_both].concat();
        let before = calls_so_far().len();
        let kept = share_free_slots(&mut ledger, &queue, &slurm, &mut BTreeMap::new());
        assert_eq!(kept, BTreeMap::from([("42".to_string(), "afterok:99".to_string())]));
        assert_eq!(&calls_so_far()[before..], "update JobId=42 ArrayTaskThrottle=3\nupdate JobId=42 Dependency=afterok:99\n");
    }

    /// `slurm.after`: every array of the sweep also waits on the user's own jobs. An array given
    /// slots that waits only on those is not taken for one waiting on the throttle (a "lift"
    /// would have cleared the user's dependency), and counts in full; a waiting array is lifted
    /// into the slots left keeping the user's terms; status says what a run waits for; a term
    /// that can never hold stops the sweep.
    #[test]
    fn a_user_dependency_is_kept_by_lifts_and_never_taken_for_the_throttles() {
        let ours = BTreeSet::from(["41", "42"]);
        // As Slurm 22.05 prints `%E`: one term per job id (a whole array as `<id>_*`, `after`'s
        // minutes after it), a failed term among unfulfilled ones.
        let dep = "afterok:2973(failed),afterok:2972(unfulfilled),afterany:41_*(unfulfilled),after:3000_*+1(unfulfilled),afterany:2998(unfulfilled)";
        assert_eq!(user_dependency(Some(dep), &ours), "afterok:2973,afterok:2972,after:3000_*+1,afterany:2998");
        // Forms Slurm takes (a term of several ids, `singleton`) pass too.
        assert_eq!(user_dependency(Some("afterany:41_3:98(unfulfilled),singleton(unfulfilled)"), &ours), "afterany:98,singleton");
        assert_eq!(user_dependency(Some("afterany:41_*(unfulfilled)"), &ours), "");
        assert_eq!(user_dependency(None, &ours), "");
        assert_eq!(after_job_ids(&["afterok:7_*".into(), "afterany:8:7".into(), "after:9+5".into()]), ["7", "8", "9"]);

        let ledger = ledger_of(&[(0, "41", Some(4), None), (1, "42", Some(4), None)]);
        let with = |job: &str, from, count, state: &str, reason: &str, dependency: &str| -> Vec<QueueEntry> {
            tasks(job, from, count, state, reason).into_iter().map(|e| QueueEntry { dependency: Some(dependency.into()), ..e }).collect()
        };
        // Round one: 41 has the 4 slots and 42 none (it waits on 41); both wait on job 99.
        let first = with("41", 0, 4, "PENDING", "Dependency", "afterok:99(unfulfilled)");
        let second = with("42", 0, 6, "PENDING", "Dependency", "afterok:99(unfulfilled),afterany:41_*(unfulfilled)");
        assert!(throttle_lifts(&ledger, &first).is_empty(), "41 waits on the user's job alone: nothing of it is drover's to lift");
        assert!(throttle_lifts(&ledger, &[first.clone(), second.clone()].concat()).is_empty(), "41's queued runs fill the throttle");
        assert!(throttle_raises(&ledger, &[first.clone(), second.clone()].concat()).is_empty());
        // Job 99 ended well (its term is gone); one of 41's runs has ended: one slot for 42.
        let going = [tasks("41", 0, 3, "RUNNING", "None"), tasks("41", 3, 1, "COMPLETED", "None")].concat();
        let second_now = with("42", 0, 6, "PENDING", "Dependency", "afterany:41_*(unfulfilled)");
        assert_eq!(throttle_lifts(&ledger, &[going.clone(), second_now].concat()), [lift(1, "42", 1, 4)]);
        // A term still to hold (a job named by a later `slurm.after`) is kept through the lift.
        let keeping = throttle_lifts(&ledger, &[going, second.clone()].concat());
        assert_eq!(keeping, [Lift { keep: "afterok:99".into(), ..lift(1, "42", 1, 4) }]);
        let mut marked = second.clone();
        mark_lifted(&mut marked, &BTreeMap::from([("42".to_string(), "afterok:99".to_string())]));
        assert!(marked.iter().all(|e| e.reason == "Dependency" && e.dependency.as_deref() == Some("afterok:99")), "{marked:?}");

        assert_eq!(waits_for_user_job(&first[0], &ours).as_deref(), Some("waits for `afterok:99` (`slurm.after`)"));
        // Right after `sbatch` Slurm lists the terms before its scheduler gives the reason.
        let fresh = with("41", 0, 1, "PENDING", "None", "afterok:99(unfulfilled)");
        assert_eq!(waits_for_user_job(&fresh[0], &ours).as_deref(), Some("waits for `afterok:99` (`slurm.after`)"));
        assert_eq!(waits_for_user_job(&with("42", 0, 1, "PENDING", "Dependency", "afterany:41_*(unfulfilled)")[0], &ours), None, "the throttle's turn");
        assert_eq!(waits_for_user_job(&tasks("41", 0, 1, "PENDING", "Priority")[0], &ours), None);

        // Job 99 failed: `afterok` can never hold, and the sweep stops rather than wait forever.
        assert_eq!(never_satisfied(&ledger, &[first.clone(), second.clone()].concat()), None);
        let failed = with("41", 0, 4, "PENDING", NEVER_SATISFIED, "afterok:99(failed),afterok:98(unfulfilled)");
        let also = with("42", 0, 6, "PENDING", NEVER_SATISFIED, "afterok:99(failed),afterok:98(unfulfilled),afterany:41_*(unfulfilled)");
        let queue = [failed.clone(), also].concat();
        let (why, arrays) = never_satisfied(&ledger, &queue).expect("stops");
        assert!(why.starts_with("its dependency `afterok:99` (`slurm.after`) can never hold"), "only the failed term: {why}");
        assert_eq!(arrays, BTreeSet::from(["41".to_string(), "42".to_string()]));
        assert!(throttle_lifts(&ledger, &queue).is_empty(), "a dependency that can never hold is not lifted");
        assert!(waits_for_user_job(&failed[0], &ours).expect("words").starts_with("can never start: its dependency `afterok:99` "));
        assert_eq!(never_satisfied(&ledger_of(&[(0, "51", Some(4), None)]), &queue), None, "another sweep's arrays");
        // Under `DependencyParameters=kill_invalid_depend` Slurm cancels the tasks itself.
        let killed = with("41", 0, 4, "CANCELLED", NEVER_SATISFIED, "afterok:99(failed)");
        assert_eq!(never_satisfied(&ledger, &killed).map(|(_, a)| a), Some(BTreeSet::from(["41".to_string()])));
        assert!(waits_for_user_job(&killed[0], &ours).expect("words").starts_with("cancelled by Slurm: its dependency `afterok:99`"));
        assert_eq!(waits_for_user_job(&with("41", 0, 1, "CANCELLED", "None", "afterok:99(unfulfilled)")[0], &ours), None, "a cancel by hand");
    }

    /// A rerun whose `slurm.after` differs from the one queued arrays were submitted with, and
    /// still wait on, says that they keep it; arrays whose dependency held, or that were
    /// submitted with the same, are not named.
    #[test]
    fn a_rerun_with_another_after_warns_that_queued_arrays_keep_theirs() {
        let mut ledger = Ledger::default();
        for (n, job, after) in [(0, "41", vec!["afterok:7".to_string()]), (1, "42", vec!["afterok:7".to_string()]), (2, "43", vec!["afterok:8".to_string()])] {
            ledger.apply(intent_after(n, vec![format!("{n:016x}")], Some(4), None, after));
            ledger.apply(LedgerEvent::Submitted { submission: n, job_id: job.into() });
        }
        assert_eq!(ledger.submissions[&0].after, ["afterok:7"], "the ledger keeps each submission's terms");
        let with = |job: &str, state: &str, dependency: Option<&str>| QueueEntry { dependency: dependency.map(str::to_string), ..tasks(job, 0, 1, state, "Dependency")[0].clone() };
        let queue = [with("41", "PENDING", Some("afterok:7(unfulfilled)")), with("42", "RUNNING", None), with("43", "PENDING", Some("afterok:8(unfulfilled)"))];
        let now = ["afterok:8".to_string()];
        let warning = changed_after_warning(&ledger, &queue, &now).expect("warns");
        assert!(warning.starts_with("1 queued task of array 41 still wait on `slurm.after` = `afterok:7` as submitted, not on `afterok:8`"), "{warning}");
        assert_eq!(changed_after_warning(&ledger, &queue[1..], &now), None, "42's dependency held; 43 has the same");
    }

    /// Review finding (Slurm user): an override whose `when` matched no run (`0.15`, not a
    /// grid value; `"0.1"`, text for a number axis) was ignored without a word, every script
    /// keeping the base resources. Refused naming the file, the key and the runs' values; a
    /// `--set` that narrows the grid makes it a warning; `16.0` matches the grid's `16`.
    #[test]
    fn an_override_that_matches_no_run_is_refused_unless_a_set_shapes_the_grid() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let plugin = tmp.path().join("libdrover_plugin_x.so");
        std::fs::write(&plugin, b"a build").expect("plugin");
        let plan = |when: &str, sets: &[&str]| {
            let sweep_file = tmp.path().join("s.toml");
            let text = format!(
                "name = \"o\"\nbackend = \"slurm\"\n[run]\nenv = \"CartPole-v1\"\nplugin = {:?}\n[sweep.grid]\n\"run.num_envs\" = [8, 16]\n\"params.clip_coef\" = [0.1, 0.2]\n[slurm]\nmem = \"1G\"\n[[slurm.overrides]]\nwhen = {when}\nmem = \"8G\"\n",
                plugin.display().to_string()
            );
            std::fs::write(&sweep_file, text).expect("sweep");
            let sets = sets.iter().map(|s| s.to_string()).collect();
            crate::plan::plan(&crate::plan::PlanOptions { sweep_file, sets, results: Some(tmp.path().join("r")), ..Default::default() }).expect("plan")
        };
        let p = plan("{ \"run.num_envs\" = 16.0 }", &[]);
        assert!(unmatched_override_check(&p).expect("it matches").is_empty());
        let big = p.runs.iter().filter(|r| run_resources(&p.sweep.slurm, r).sbatch_lines().contains(&"#SBATCH --mem=8G".to_string())).count();
        assert_eq!(big, 2, "the two runs with 16 envs");
        for (when, words) in [
            ("{ \"params.clip_coef\" = 0.15 }", "matches no run of the sweep: it asks for `params.clip_coef` = 0.15, and the runs have `params.clip_coef` = 0.1, 0.2:"),
            ("{ \"params.clip_coef\" = \"0.1\" }", "and the runs have `params.clip_coef` = 0.1, 0.2 (text where the runs have numbers)"),
            ("{ \"params.clip_coef\" = 0.1, \"run.num_envs\" = 12 }", "`params.clip_coef` = 0.1, 0.2; `run.num_envs` = 8, 16:"),
        ] {
            let err = unmatched_override_check(&plan(when, &[])).expect_err(when);
            assert_eq!(err.key.as_deref(), Some("slurm.overrides[0].when"), "{when}");
            let text = err.to_string();
            assert!(text.contains("s.toml") && text.contains(words), "{text}");
        }
        let narrowed = plan("{ \"run.num_envs\" = 16 }", &["sweep.grid.run.num_envs=[8]"]);
        let warnings = unmatched_override_check(&narrowed).expect("a warning, not a refusal");
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("`slurm.overrides[0].when` in `") && warnings[0].contains("`--set sweep.grid.run.num_envs=[8]` sets the sweep's axes"), "{warnings:?}");
    }

    /// A `Slurm` whose `squeue` is the stand-in shell `body`, written into `bin`, asked once a call.
    fn with_squeue(bin: &Path, body: &str) -> Slurm {
        crate::subprocess::write_stand_in(&bin.join("squeue"), body);
        Slurm { bin_dir: Some(bin.to_path_buf()), policy: crate::backend::slurm_cmd::CallPolicy { attempts: 1, ..Default::default() } }
    }

    /// `slurm.after` on a job Slurm does not know is refused before anything is submitted
    /// (Slurm would count it as met), unless a run of the sweep already started under it; a
    /// job Slurm lists passes.
    #[test]
    fn after_on_a_job_slurm_does_not_know_is_refused_unless_it_held_before() {
        let tmp = tempfile::tempdir().expect("tempdir");
        // The results directory of the check, apart from the one `sweep_plan` plans into.
        let (bin, root) = (tmp.path().join("bin"), tmp.path().join("results"));
        std::fs::create_dir_all(&bin).expect("mkdir");
        // A stand-in `squeue --jobs` that knows job 7 only.
        let slurm = with_squeue(
            &bin,
            "case \"$*\" in *--jobs=7) echo '7|7';; *) echo 'slurm_load_jobs error: Invalid job id specified' >&2; exit 1;; esac\n",
        );
        let plan = |after: &str| {
            let mut plan = sweep_plan(tmp.path(), &format!("after = {after}"), "").expect("plan");
            plan.results = layout::ResultsDir::new(&root);
            plan
        };
        assert!(check_after_jobs(&plan("7"), &slurm).is_ok());
        let err = check_after_jobs(&plan("[7, 999]"), &slurm).expect_err("999 is unknown");
        assert_eq!(err.key.as_deref(), Some("slurm.after"));
        assert!(err.to_string().contains("Slurm does not know job `999`"), "{err}");
        // A run of the sweep started in an array submitted with `afterok:999`: it held then.
        let mut ledger = Ledger::load(&root).expect("empty");
        let run = "00000000000000aa";
        ledger.append(intent_after(0, vec![run.into()], None, None, vec!["afterok:999".into()])).expect("intent");
        ledger.append(LedgerEvent::Submitted { submission: 0, job_id: "60".into() }).expect("submitted");
        assert!(check_after_jobs(&plan("999"), &slurm).is_err(), "submitted, but no run started under it");
        std::fs::create_dir_all(root.join("runs").join(run)).expect("mkdir");
        std::fs::write(root.join("runs").join(run).join("attempts.jsonl"), "{\"array_job_id\":\"60\",\"array_task_id\":\"0\"}\n").expect("attempt");
        assert!(check_after_jobs(&plan("999"), &slurm).is_ok());
    }

    /// Review finding (Slurm user): `slurm.after` on a job that had already ended so that the
    /// term could never hold (`afterok` on a failed job) was submitted, and the arrays sat in
    /// `DependencyNeverSatisfied`. Refused before submission, naming the term and the job's
    /// state(s), an array judged by all its tasks and a task named alone by its own; `after` and
    /// `afterany` always hold once the job ended; a term a run of the sweep already started
    /// under is let through.
    #[test]
    fn after_on_a_job_that_ended_so_it_can_never_hold_is_refused_unless_it_held_before() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let (bin, root) = (tmp.path().join("bin"), tmp.path().join("results"));
        std::fs::create_dir_all(&bin).expect("mkdir");
        // `%F|%A|%i|%T`: 10 failed, 11 succeeded, 12 runs; array 20 mixed, array 30 all well.
        let slurm = with_squeue(
            &bin,
            "case \"$*\" in
*--jobs=10) echo '10|10|10|FAILED';;
*--jobs=11) echo '11|11|11|COMPLETED';;
*--jobs=12) echo '12|12|12|RUNNING';;
*--jobs=20) printf '20|21|20_0|COMPLETED\\n20|22|20_1|FAILED\\n20|23|20_2|PENDING\\n';;
*--jobs=30) printf '30|31|30_0|COMPLETED\\n30|32|30_1|COMPLETED\\n';;
*) echo 'slurm_load_jobs error: Invalid job id specified' >&2; exit 1;;
esac\n",
        );
        let check = |after: &str| {
            let mut plan = sweep_plan(tmp.path(), &format!("after = {after:?}"), "").expect("plan");
            plan.results = layout::ResultsDir::new(&root);
            check_after_jobs(&plan, &slurm)
        };
        for holds in ["afterany:10", "after:10", "afternotok:10", "afterok:11", "afterany:11", "afterok:12", "afternotok:12", "afterok:20_0", "afterok:20_2", "afternotok:20", "afterok:30_*", "afterok:30_1"] {
            assert!(check(holds).is_ok(), "{holds}: {:?}", check(holds).err());
        }
        for (never, words) in [
            ("afterok:10", "`afterok:10` can never hold: job `10` ended FAILED, and afterok waits for its success"),
            ("10", "`afterok:10` can never hold: job `10` ended FAILED"),
            ("afternotok:11", "`afternotok:11` can never hold: job `11` ended COMPLETED, and afternotok waits for its failure"),
            ("afterok:20", "`afterok:20` can never hold: the tasks of array job `20` are 1 COMPLETED, 1 FAILED, 1 PENDING"),
            ("afterok:20_*", "the tasks of array job `20` are"),
            ("afterok:20_1", "`afterok:20_1` can never hold: job `20_1` ended FAILED"),
            ("afternotok:30", "`afternotok:30` can never hold: the 2 tasks of array job `30` ended COMPLETED"),
            ("afterany:12,afterok:10", "`afterok:10` can never hold: job `10` ended FAILED"),
        ] {
            let err = check(never).expect_err(never);
            assert_eq!(err.key.as_deref(), Some("slurm.after"), "{never}");
            let text = err.to_string();
            assert!(text.contains(words) && text.contains("DependencyNeverSatisfied"), "{never}: {text}");
        }
        // A run of the sweep started in an array submitted with `afterok:10`: it held then.
        let mut ledger = Ledger::load(&root).expect("empty");
        let run = "00000000000000aa";
        ledger.append(intent_after(0, vec![run.into()], None, None, vec!["afterok:10".into()])).expect("intent");
        ledger.append(LedgerEvent::Submitted { submission: 0, job_id: "60".into() }).expect("submitted");
        std::fs::create_dir_all(root.join("runs").join(run)).expect("mkdir");
        std::fs::write(root.join("runs").join(run).join("attempts.jsonl"), "{\"array_job_id\":\"60\",\"array_task_id\":\"0\"}\n").expect("attempt");
        assert!(check("afterok:10").is_ok(), "held before");
    }

    /// A small model of Slurm's side of a sweep, to check the throttle over many interleavings:
    /// each array has its `%N`, the arrays it waits for (met once none of them has a live task)
    /// and its tasks.
    #[derive(Debug, Clone)]
    struct SimArray {
        job: String,
        throttle: u32,
        after: Vec<String>,
        tasks: Vec<SimTask>,
    }

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum SimTask {
        Pending,
        Running,
        Done,
    }

    struct Sim {
        n: u32,
        arrays: Vec<SimArray>,
        ledger: Ledger,
        rng: u64,
        log: Vec<String>,
        /// Lifts applied, and tasks started while an array their array first waited for still had live tasks.
        lifts: usize,
        early_starts: usize,
        /// The dependency each array was submitted with.
        submitted_after: BTreeMap<String, Vec<String>>,
    }

    impl Sim {
        fn rand(&mut self, below: u64) -> u64 {
            self.rng ^= self.rng << 13;
            self.rng ^= self.rng >> 7;
            self.rng ^= self.rng << 17;
            self.rng % below
        }

        fn live(&self, job: &str) -> bool {
            self.arrays.iter().any(|a| a.job == job && a.tasks.iter().any(|t| *t != SimTask::Done))
        }

        fn running(&self) -> usize {
            self.arrays.iter().flat_map(|a| &a.tasks).filter(|t| **t == SimTask::Running).count()
        }

        fn queue(&self) -> Vec<QueueEntry> {
            let mut out = Vec::new();
            for a in &self.arrays {
                for (i, t) in a.tasks.iter().enumerate() {
                    let (state, reason) = match t {
                        SimTask::Pending if !a.after.is_empty() => ("PENDING", "Dependency"),
                        SimTask::Pending => ("PENDING", "JobArrayTaskLimit"),
                        SimTask::Running => ("RUNNING", "None"),
                        SimTask::Done => ("COMPLETED", "None"),
                    };
                    out.push(QueueEntry { array_job_id: a.job.clone(), task: Some(i as u32), state: state.into(), reason: reason.into(), comment: String::new(), dependency: None });
                }
            }
            out
        }

        /// One pass of Slurm's scheduler: drops met dependencies, starts what each `%N` allows.
        fn schedule(&mut self) {
            for i in 0..self.arrays.len() {
                let waits = self.arrays[i].after.clone();
                if waits.iter().any(|d| self.live(d)) {
                    continue;
                }
                let early = self.submitted_after[&self.arrays[i].job].iter().any(|d| self.live(d));
                let a = &mut self.arrays[i];
                a.after.clear();
                while a.tasks.iter().filter(|t| **t == SimTask::Running).count() < a.throttle as usize {
                    let Some(t) = a.tasks.iter_mut().find(|t| **t == SimTask::Pending) else { break };
                    *t = SimTask::Running;
                    self.early_starts += usize::from(early);
                }
            }
            assert!(self.running() <= self.n as usize, "{} running with a throttle of {}:\n{}\n{:#?}", self.running(), self.n, self.log.join("\n"), self.arrays);
        }

        fn end_one(&mut self) {
            let running: Vec<(usize, usize)> = (0..self.arrays.len())
                .flat_map(|i| (0..self.arrays[i].tasks.len()).map(move |j| (i, j)))
                .filter(|&(i, j)| self.arrays[i].tasks[j] == SimTask::Running)
                .collect();
            if !running.is_empty() {
                let (i, j) = running[self.rand(running.len() as u64) as usize];
                self.arrays[i].tasks[j] = SimTask::Done;
                self.log.push(format!("end {}_{j}", self.arrays[i].job));
            }
        }

        fn set_throttle(&mut self, job: &str, t: u32) {
            assert!(t > 0, "ArrayTaskThrottle=0 is Slurm's no limit");
            self.arrays.iter_mut().filter(|a| a.job == job).for_each(|a| a.throttle = t);
        }

        /// A `drover run` round of arrays of `sizes`, from the queue as it is now.
        fn submit_round(&mut self, sizes: &[usize]) {
            let older = live_per_array(&self.ledger, &self.queue());
            let mut earlier = Vec::new();
            for (k, limits) in round_limits(Some(self.n), &older, sizes).into_iter().enumerate() {
                let n = self.ledger.next_submission();
                let job = format!("{}", 100 + n);
                let mut after = limits.after.clone();
                if limits.after_earlier {
                    after.extend(earlier.iter().cloned());
                }
                self.ledger.apply(intent(n, vec![format!("{n:016x}"); sizes[k]], limits.throttle, limits.raise_to));
                self.ledger.apply(LedgerEvent::Submitted { submission: n, job_id: job.clone() });
                self.log.push(format!("submit {job} %{:?} x{} after {after:?} raise_to {:?}", limits.throttle, sizes[k], limits.raise_to));
                self.submitted_after.insert(job.clone(), after.clone());
                let throttle = limits.throttle.unwrap_or(u32::MAX);
                self.arrays.push(SimArray { job: job.clone(), throttle, after, tasks: vec![SimTask::Pending; sizes[k]] });
                earlier.push(job);
            }
        }

        /// What `share_free_slots` does with one queue answer, with Slurm going on meanwhile:
        /// the answer may be stale, and Slurm may schedule or end runs between the calls.
        fn drover_pass(&mut self, stale: bool, meddle: bool) {
            let queue = self.queue();
            if stale {
                self.schedule();
                self.end_one();
            }
            for (job, t) in throttle_raises(&self.ledger, &queue) {
                self.log.push(format!("raise {job} to {t}"));
                self.set_throttle(&job, t);
                if meddle {
                    self.schedule();
                }
            }
            for Lift { submission, job, throttle, raise_to, .. } in throttle_lifts(&self.ledger, &queue) {
                self.ledger.apply(LedgerEvent::Lifted { submission, throttle, raise_to });
                self.set_throttle(&job, throttle);
                if meddle {
                    self.schedule();
                    self.end_one();
                }
                // Slurm sometimes refuses the second call: the array keeps waiting.
                let cleared = self.rand(5) != 0;
                self.log.push(format!("lift {job} at {throttle} (dependency cleared: {cleared})"));
                if cleared {
                    self.arrays.iter_mut().filter(|a| a.job == job).for_each(|a| a.after.clear());
                    self.lifts += 1;
                }
                if meddle {
                    self.schedule();
                }
            }
        }
    }

    /// Issue (slurm-lift): over many random interleavings of reruns, runs ending, Slurm's
    /// scheduler passes (between the two calls of a lift too), stale queue answers and refused
    /// dependency clears, the sweep never runs more than its throttle, waiting arrays do start
    /// before everything they waited for ended, and every run completes in the end.
    #[test]
    fn the_sweep_never_runs_more_than_its_throttle_whatever_the_order_of_events() {
        let (mut lifts, mut early_starts) = (0, 0);
        for seed in 1..=400u64 {
            let mut sim = Sim {
                n: 1 + (seed % 4) as u32,
                arrays: Vec::new(),
                ledger: Ledger::default(),
                rng: seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1,
                log: vec![format!("seed {seed}")],
                lifts: 0,
                early_starts: 0,
                submitted_after: BTreeMap::new(),
            };
            let mut rounds = 0;
            for _ in 0..80 {
                match sim.rand(10) {
                    0..=2 => sim.schedule(),
                    3..=5 => sim.end_one(),
                    6..=8 => {
                        let (stale, meddle) = (sim.rand(2) == 0, sim.rand(2) == 0);
                        sim.drover_pass(stale, meddle);
                    }
                    _ if rounds < 4 => {
                        rounds += 1;
                        let sizes: Vec<usize> = (0..1 + sim.rand(3)).map(|_| 1 + sim.rand(5) as usize).collect();
                        sim.submit_round(&sizes);
                    }
                    _ => sim.schedule(),
                }
                sim.schedule();
            }
            for _ in 0..200 {
                sim.drover_pass(false, false);
                sim.schedule();
                sim.end_one();
            }
            let left: Vec<&SimArray> = sim.arrays.iter().filter(|a| sim.live(&a.job)).collect();
            assert!(left.is_empty(), "seed {seed}: runs never completed: {left:?}\n{}", sim.log.join("\n"));
            (lifts, early_starts) = (lifts + sim.lifts, early_starts + sim.early_starts);
        }
        assert!(lifts > 100 && early_starts > 100, "the interleavings lift arrays: {lifts} lifts, {early_starts} early starts");
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
        std::fs::write(bin.join("squeue"), "#!/bin/sh\nexit 0\n").expect("fake squeue");
        std::fs::set_permissions(bin.join("squeue"), std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("chmod");
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

    #[test]
    fn ledger_folds_events_and_survives_a_torn_last_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut ledger = Ledger::load(dir.path()).expect("empty");
        assert_eq!(ledger.next_submission(), 0);
        ledger
            .append(intent(0, vec!["a".into(), "b".into()], None, None))
            .expect("append");
        assert_eq!(ledger.dangling(), [0]);
        ledger.append(LedgerEvent::Submitted { submission: 0, job_id: "41".into() }).expect("append");
        ledger.append(LedgerEvent::Retry { run_id: "b".into(), retry: RetryKind::Failed, reason: "x".into() }).expect("append");
        let path = dir.path().join(SLURM_DIR).join(LEDGER);
        let mut f = std::fs::OpenOptions::new().append(true).open(&path).expect("open");
        f.write_all(b"{\"format_version\":1,\"at\":\"1\",\"kind\":\"subm").expect("torn write");
        let back = Ledger::load(dir.path()).expect("a torn last line is ignored");
        assert_eq!(back.latest().get("b"), Some(&(0, 1)));
        assert_eq!(back.retries_of("b", RetryKind::Failed), 1);
        assert_eq!(back.submissions_of("a"), 1);
        assert!(back.dangling().is_empty());
    }

    /// A torn write (a full disk, a crash) left a fragment without its newline; the next
    /// append ends it first, so the fragment alone is lost: every later `drover run`, `status`
    /// and `cancel` used to fail on the fused line. A ledger an older drover already fused
    /// keeps the record after the fragment; a torn line is skipped wherever it is.
    #[test]
    fn an_append_after_a_torn_write_starts_a_line_of_its_own() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(SLURM_DIR).join(LEDGER);
        let mut ledger = Ledger::load(dir.path()).expect("empty");
        ledger.append(intent(0, vec!["a".into()], None, None)).expect("intent");
        let fragment = "{\"format_version\":1,\"at\":\"1\",\"kind\":\"subm";
        std::fs::OpenOptions::new().append(true).open(&path).and_then(|mut f| f.write_all(fragment.as_bytes())).expect("torn write");
        ledger.append(LedgerEvent::Submitted { submission: 0, job_id: "41".into() }).expect("append after the fragment");
        ledger.append(LedgerEvent::Retry { run_id: "a".into(), retry: RetryKind::Failed, reason: "x".into() }).expect("append");
        let text = std::fs::read_to_string(&path).expect("ledger");
        assert!(text.lines().any(|l| l == fragment), "the fragment is a line of its own: {text}");
        let back = Ledger::load(dir.path()).expect("the torn line is skipped");
        assert_eq!(back.submissions[&0].job_id.as_deref(), Some("41"));
        assert_eq!(back.retries_of("a", RetryKind::Failed), 1);
        assert!(dir.path().join(SLURM_DIR).join(LEDGER_LOCK).exists(), "appends take the ledger lock");

        // Fused by an older drover: the record after the fragment is read.
        let lines: Vec<&str> = text.lines().filter(|l| *l != fragment).collect();
        let fused = format!("{}\n{fragment}{}\n{}\n", lines[0], lines[1], lines[2]);
        std::fs::write(&path, fused).expect("fused ledger");
        let back = Ledger::load(dir.path()).expect("a fused line is read");
        assert_eq!(back.submissions[&0].job_id.as_deref(), Some("41"));
        assert_eq!(back.retries_of("a", RetryKind::Failed), 1);
    }

    /// Skipping torn lines must not skip what a newer drover wrote: a JSON line of another
    /// `format_version`, or of a kind this drover does not know, is still refused, naming it.
    #[test]
    fn a_ledger_line_of_a_newer_format_is_still_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join(SLURM_DIR)).expect("mkdir");
        let path = dir.path().join(SLURM_DIR).join(LEDGER);
        let good = r#"{"format_version":1,"at":"2","kind":"submitted","submission":0,"job_id":"41"}"#;
        for (line, says) in [
            (r#"{"format_version":2,"at":"1","kind":"submitted","submission":0,"job_id":"41"}"#, "line 2: format_version 2 (this drover reads 1)"),
            (r#"{"format_version":2,"at":"1","kind":"teleported","where":"mars"}"#, "line 2: format_version 2 (this drover reads 1)"),
            (r#"{"format_version":1,"at":"1","kind":"teleported"}"#, "line 2: unknown variant `teleported`"),
            (&format!("{{\"format_ver{}", r#"{"format_version":2,"at":"1","kind":"submitted","submission":0,"job_id":"41"}"#), "line 2: format_version 2"),
        ] {
            std::fs::write(&path, format!("{good}\n{line}\n{good}\n")).expect("ledger");
            let err = Ledger::load(dir.path()).expect_err(line).to_string();
            assert!(err.contains(says) && err.contains(LEDGER), "{line}: {err}");
        }
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
