//! The ledger `slurm/submissions.jsonl`: what was submitted, refused, lifted, cancelled and
//! retried, one JSON event per line (format 1), appended under `slurm/.ledger.lock` and folded
//! into a [`Ledger`] on load.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::backend::slurm_cmd::QueueEntry;
use crate::error::RunError;
use crate::layout;

use super::SLURM_DIR;
use super::jsonl::{JsonLine, format_version, jsonl_lines, parse_line, warn_torn};
use super::provenance::Provenance;

/// The ledger file inside `slurm/`.
pub const LEDGER: &str = "submissions.jsonl";

/// The ledger's format version.
pub const LEDGER_FORMAT_VERSION: u32 = 1;

/// The lock file inside `slurm/` that serialises appends to the ledger.
pub const LEDGER_LOCK: &str = ".ledger.lock";

/// How long an append waits for another command's append to the ledger before going on.
pub(super) const LEDGER_LOCK_PATIENCE: Duration = Duration::from_secs(10);

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
pub(super) struct LedgerLine {
    pub(super) format_version: u32,
    pub(super) at: String,
    #[serde(flatten)]
    pub(super) event: LedgerEvent,
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
    pub(super) path: PathBuf,
    /// Submissions by number. Changed only through [`Ledger::apply`], which keeps
    /// `accepted_per_run` in step with it.
    pub(super) submissions: BTreeMap<u32, Submission>,
    /// Accepted submissions per run id, kept by [`Ledger::apply`]: `drover status` and every
    /// poll of a waiting `drover run` ask it for each run, and counting them from
    /// `submissions` each time cost runs × submissions (88 s of CPU for 100,000 runs in 100
    /// arrays).
    accepted_per_run: HashMap<String, u32>,
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

    pub(super) fn apply(&mut self, event: LedgerEvent) {
        match event {
            LedgerEvent::Intent { submission, job_name, comment, runs, throttle, raise_to, provenance, .. } => {
                let Provenance { submit_uid, after, .. } = *provenance;
                let s = Submission { job_name, comment, runs, job_id: None, refused: None, throttle, raise_to, lifted: None, submit_uid, runs_per_task: 1, after };
                // A number written twice (never by drover; a hand-edited ledger): the later
                // intent replaces the earlier, which no longer counts.
                if let Some(old) = self.submissions.insert(submission, s).filter(|old| old.job_id.is_some()) {
                    count_accepted(&mut self.accepted_per_run, &old.runs, false);
                }
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
                    if s.job_id.replace(job_id).is_none() {
                        count_accepted(&mut self.accepted_per_run, &s.runs, true);
                    }
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
    pub(super) fn last_listings(&self) -> BTreeMap<&str, (u32, usize)> {
        self.listings(false)
    }

    /// Run id → (submission, position) of the latest submission listing it, of the accepted
    /// ones only or of all.
    pub(super) fn listings(&self, accepted_only: bool) -> BTreeMap<&str, (u32, usize)> {
        let mut out = BTreeMap::new();
        for (n, s) in self.submissions.iter().filter(|(_, s)| !accepted_only || s.job_id.is_some()) {
            for (i, run) in s.runs.iter().enumerate() {
                out.insert(run.as_str(), (*n, i));
            }
        }
        out
    }

    /// The job ids of the accepted submissions.
    pub(super) fn accepted_jobs(&self) -> BTreeSet<&str> {
        self.submissions.values().filter_map(|s| s.job_id.as_deref()).collect()
    }

    /// Accepted submissions that hold `run_id` (from the index [`Ledger::apply`] keeps).
    pub fn submissions_of(&self, run_id: &str) -> u32 {
        self.accepted_per_run.get(run_id).copied().unwrap_or(0)
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

    /// The job name and comment token of the first intent (`drover:<token>:<n>`) that drover
    /// could have written (a name of plain characters, a hex token): the sweep's name ever
    /// since (`sweep_dir::job_name`).
    pub fn recorded_job_name(&self) -> Option<(String, String)> {
        self.submissions.values().find_map(|s| {
            let token = s.comment.strip_prefix("drover:")?.split(':').next()?;
            let name = &s.job_name;
            let plain_name = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
            let hex_token = !token.is_empty() && token.chars().all(|c| c.is_ascii_hexdigit());
            (plain_name && hex_token).then(|| (name.clone(), token.to_string()))
        })
    }

    /// Submissions whose `sbatch` outcome was never recorded (drover died, or sbatch timed out).
    pub(super) fn dangling(&self) -> Vec<u32> {
        self.submissions.iter().filter(|(_, s)| s.job_id.is_none() && s.refused.is_none()).map(|(n, _)| *n).collect()
    }

    /// Records the job id of each dangling submission found in `queue` by its comment
    /// (`drover:<token>:<n>`), and returns the ones not found. A `drover run` killed while
    /// `sbatch` ran leaves such a submission: its array may be running, and `drover status`
    /// and `drover cancel` must see it as `drover run` does.
    /// With `persist` false (a dry run) the ledger file is left as it is; a record that cannot
    /// be written is used in memory.
    pub(super) fn find_dangling(&mut self, queue: &[QueueEntry], token: &str, persist: bool) -> Vec<u32> {
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

/// Counts one accepted submission holding `runs` in or out of `index` (run id → accepted
/// submissions): each run once, however often the submission lists it.
fn count_accepted(index: &mut HashMap<String, u32>, runs: &[String], accepted: bool) {
    let mut seen = std::collections::HashSet::with_capacity(runs.len());
    for run in runs.iter().filter(|r| seen.insert(r.as_str())) {
        if accepted {
            *index.entry(run.clone()).or_default() += 1;
        } else if let Some(n) = index.get_mut(run.as_str()) {
            *n = n.saturating_sub(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::slurm::test_support::{intent, tasks};

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

    /// `submissions_of` comes from an index `apply` keeps (counting it per run from every
    /// submission made `drover status` cost runs × submissions); it must equal that count on
    /// a ledger of every kind of history: resubmissions, refusals, a dangling intent, packed,
    /// lifted and cancelled arrays, requeue retries, a duplicated `submitted` record and a
    /// submission number written twice.
    #[test]
    fn the_per_run_index_counts_accepted_submissions_as_a_scan_does() {
        let scan = |l: &Ledger, run: &str| l.submissions.values().filter(|s| s.job_id.is_some() && s.runs.iter().any(|r| r == run)).count() as u32;
        let ids = |r: std::ops::Range<u32>| r.map(|i| format!("{i:016x}")).collect::<Vec<_>>();
        let submitted = |n: u32| LedgerEvent::Submitted { submission: n, job_id: format!("{}", 100 + n) };
        let mut twice = ids(0..2);
        twice.push(ids(0..1)[0].clone());
        let events = vec![
            intent(0, ids(0..6), Some(2), None),
            submitted(0),
            LedgerEvent::Retry { run_id: ids(1..2)[0].clone(), retry: RetryKind::TimedOut, reason: "requeue".into() },
            intent(1, ids(1..3), None, None),
            submitted(1),
            submitted(1),
            intent(2, ids(3..8), Some(1), Some(3)),
            LedgerEvent::Packed { submission: 2, runs_per_task: 2 },
            submitted(2),
            LedgerEvent::Lifted { submission: 2, throttle: 2, raise_to: 3 },
            intent(3, ids(5..9), None, None),
            LedgerEvent::Refused { submission: 3, message: "sbatch: error: QOSMaxSubmitJobPerUserLimit".into() },
            LedgerEvent::Cancelled { upto_submission: 2, job_ids: Some(vec!["102".into()]), reason: None },
            LedgerEvent::Cancelled { upto_submission: 2, job_ids: None, reason: None },
            LedgerEvent::Cancelled { upto_submission: 2, job_ids: Some(vec!["101".into()]), reason: Some("fail_fast".into()) },
            intent(4, ids(8..10), None, None),
            intent(5, twice, None, None),
            submitted(5),
            intent(6, ids(2..4), None, None),
            submitted(6),
            // Number 6 again: the later intent, not yet accepted, replaces the accepted one.
            intent(6, ids(9..10), None, None),
            intent(7, ids(0..10), None, None),
            submitted(7),
        ];
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut written = Ledger::load(tmp.path()).expect("empty");
        let mut folded = Ledger::default();
        for (k, event) in events.into_iter().enumerate() {
            written.append(event.clone()).expect("append");
            folded.apply(event);
            for run in ids(0..11) {
                assert_eq!(folded.submissions_of(&run), scan(&folded, &run), "after event {k}, run {run}");
            }
        }
        let loaded = Ledger::load(tmp.path()).expect("ledger");
        let counts: Vec<u32> = ids(0..11).iter().map(|r| loaded.submissions_of(r)).collect();
        assert_eq!(counts, ids(0..11).iter().map(|r| scan(&loaded, r)).collect::<Vec<_>>());
        assert_eq!(counts, [3, 4, 3, 3, 3, 3, 2, 2, 1, 1, 0], "the case the scan and the index both give");
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
}
