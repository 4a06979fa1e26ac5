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
use crate::layout::{self, ExitRecord, JobSpec, SweepManifest, EXIT_JSON, SPEC_JSON, SWEEP_JSON};
use crate::plan::Plan;
use crate::status::{classify, Progress, RunState, RunStatus, SlurmView, StatusReport};

/// `slurm/` inside a results directory.
pub const SLURM_DIR: &str = "slurm";
/// The ledger file inside `slurm/`.
pub const LEDGER: &str = "submissions.jsonl";
/// The ledger's format version.
pub const LEDGER_FORMAT_VERSION: u32 = 1;

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
        /// Provenance of the submission.
        provenance: Provenance,
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
    /// `drover cancel`: every submission up to this one is cancelled.
    Cancelled {
        /// The last submission at the time.
        upto_submission: u32,
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
}

/// The folded ledger of a results directory.
#[derive(Debug, Clone, Default)]
pub struct Ledger {
    path: PathBuf,
    /// Submissions by number.
    pub submissions: BTreeMap<u32, Submission>,
    /// `drover cancel` covers submissions up to this one.
    pub cancelled_upto: Option<u32>,
    /// Retries per run and kind.
    pub retries: BTreeMap<(String, RetryKind), u32>,
}

impl Ledger {
    /// Reads `<root>/slurm/submissions.jsonl` (empty when absent).
    pub fn load(root: &Path) -> Result<Ledger, RunError> {
        let path = root.join(SLURM_DIR).join(LEDGER);
        let mut ledger = Ledger { path: path.clone(), ..Ledger::default() };
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(ledger),
            Err(source) => return Err(RunError::Io { action: "read", path, source }),
        };
        let lines: Vec<&str> = text.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let parsed: LedgerLine = match serde_json::from_str(line) {
                Ok(l) => l,
                // A crash mid-append leaves at most a torn last line; anything else is corruption.
                Err(_) if i + 1 == lines.len() && !text.ends_with('\n') => break,
                Err(e) => return Err(RunError::Ledger { path, reason: format!("line {}: {e}", i + 1) }),
            };
            if parsed.format_version != LEDGER_FORMAT_VERSION {
                return Err(RunError::Ledger {
                    path,
                    reason: format!("line {}: format_version {} (this drover reads {LEDGER_FORMAT_VERSION})", i + 1, parsed.format_version),
                });
            }
            ledger.apply(parsed.event);
        }
        Ok(ledger)
    }

    fn apply(&mut self, event: LedgerEvent) {
        match event {
            LedgerEvent::Intent { submission, job_name, comment, runs, .. } => {
                self.submissions.insert(submission, Submission { job_name, comment, runs, job_id: None, refused: None });
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
            LedgerEvent::Cancelled { upto_submission } => self.cancelled_upto = Some(upto_submission),
            LedgerEvent::Retry { run_id, retry, .. } => *self.retries.entry((run_id, retry)).or_default() += 1,
        }
    }

    /// Appends `event` (flushed and synced: the ledger is the memory of what was submitted).
    pub fn append(&mut self, event: LedgerEvent) -> Result<(), RunError> {
        let line = LedgerLine { format_version: LEDGER_FORMAT_VERSION, at: layout::unix_now(), event: event.clone() };
        let mut bytes =
            serde_json::to_vec(&line).map_err(|source| RunError::Serialize { path: self.path.clone(), source })?;
        bytes.push(b'\n');
        let io = |source| RunError::Io { action: "append to", path: self.path.clone(), source };
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&self.path).map_err(io)?;
        f.write_all(&bytes).map_err(io)?;
        f.sync_data().map_err(io)?;
        self.apply(event);
        Ok(())
    }

    /// The next submission number.
    pub fn next_submission(&self) -> u32 {
        self.submissions.keys().next_back().map_or(0, |n| n + 1)
    }

    /// The latest accepted submission of each run: run id → (submission, array index).
    pub fn latest(&self) -> BTreeMap<&str, (u32, usize)> {
        let mut out = BTreeMap::new();
        for (n, s) in &self.submissions {
            if s.job_id.is_none() {
                continue;
            }
            for (i, run) in s.runs.iter().enumerate() {
                out.insert(run.as_str(), (*n, i));
            }
        }
        out
    }

    /// Accepted submissions that hold `run_id`.
    pub fn submissions_of(&self, run_id: &str) -> u32 {
        self.submissions.values().filter(|s| s.job_id.is_some() && s.runs.iter().any(|r| r == run_id)).count() as u32
    }

    /// Retries of `run_id` of kind `kind` so far.
    pub fn retries_of(&self, run_id: &str, kind: RetryKind) -> u32 {
        self.retries.get(&(run_id.to_string(), kind)).copied().unwrap_or(0)
    }

    /// Submissions whose `sbatch` outcome was never recorded (drover died, or sbatch timed out).
    fn dangling(&self) -> Vec<u32> {
        self.submissions.iter().filter(|(_, s)| s.job_id.is_none() && s.refused.is_none()).map(|(n, _)| *n).collect()
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

/// Reads the run's interruption counts from `interruptions.jsonl` (written by `drover-job`).
fn interruption_counts(run_dir: &Path) -> (u32, u32) {
    let Ok(text) = std::fs::read_to_string(run_dir.join("interruptions.jsonl")) else { return (0, 0) };
    let mut counts = (0, 0);
    for line in text.lines() {
        let reason = serde_json::from_str::<serde_json::Value>(line).ok().and_then(|v| v["reason"].as_str().map(str::to_string));
        match reason.as_deref() {
            Some("time_limit") => counts.0 += 1,
            Some("terminated") => counts.1 += 1,
            _ => {}
        }
    }
    counts
}

/// `attempt-<n>.stdout.log` / `.stderr.log` files of a run, by attempt.
pub(crate) fn attempt_logs(run_dir: &Path) -> Vec<PathBuf> {
    let mut logs: Vec<(u32, PathBuf)> = std::fs::read_dir(run_dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let n = attempt_number(&name)?;
            (name.ends_with(".stdout.log") || name.ends_with(".stderr.log")).then(|| (n, e.path()))
        })
        .collect();
    logs.sort();
    logs.into_iter().map(|(_, p)| p).collect()
}

/// Labels of submission `n`'s tasks (from its tasks file, for runs whose directory the batch
/// script has not created yet), cached in `cache`.
fn task_labels<'c>(root: &Path, n: u32, cache: &'c mut BTreeMap<u32, Vec<String>>) -> &'c Vec<String> {
    cache.entry(n).or_insert_with(|| {
        let text = std::fs::read_to_string(root.join(SLURM_DIR).join(format!("array-{n}.tasks"))).unwrap_or_default();
        text.lines()
            .map(|l| {
                let spec = l.split_once('\t').map_or("", |(_, s)| s);
                serde_json::from_str::<serde_json::Value>(spec).ok().and_then(|v| v["label"].as_str().map(str::to_string)).unwrap_or_default()
            })
            .collect()
    })
}

/// Status of every run of the sweep from one queue answer.
fn statuses(dir: &SweepDir, ledger: &Ledger, queue: &[QueueEntry]) -> Vec<RunStatus> {
    let by_task: BTreeMap<(&str, u32), &QueueEntry> =
        queue.iter().filter_map(|e| Some(((e.array_job_id.as_str(), e.task?), e))).collect();
    let latest = ledger.latest();
    let mut labels = BTreeMap::new();
    dir.runs
        .iter()
        .map(|run_id| {
            let run_dir = dir.run_dir(run_id);
            let exit: Option<ExitRecord> = layout::read_record(&run_dir.join(EXIT_JSON)).ok().flatten();
            let spec = layout::read_record::<JobSpec>(&run_dir.join(SPEC_JSON)).ok().flatten();
            let run_key = |k: &str| spec.as_ref().and_then(|s| s.run.get(k)).and_then(serde_json::Value::as_u64);
            let (progress, seed) = (Progress::read(&run_dir, run_key("total_steps")), run_key("seed"));
            let label = spec
                .map(|s| s.label)
                .or_else(|| latest.get(run_id.as_str()).and_then(|&(n, i)| task_labels(&dir.root, n, &mut labels).get(i).cloned()))
                .unwrap_or_default();
            let (mut slurm_job, mut entry, mut cancelled) = (None, None, false);
            let view = match latest.get(run_id.as_str()) {
                None => SlurmView::NotSubmitted,
                Some(&(n, index)) => {
                    let job_id = ledger.submissions[&n].job_id.as_deref().unwrap_or_default();
                    slurm_job = Some(format!("{job_id}_{index}"));
                    cancelled = ledger.cancelled_upto.is_some_and(|upto| n <= upto);
                    entry = by_task.get(&(job_id, index as u32)).copied();
                    entry.map_or(SlurmView::Forgotten, |e| SlurmView::Listed(e.state.as_str()))
                }
            };
            let (state, reason) = classify(exit.as_ref(), view, cancelled);
            let (time_limit_requeues, preemptions) = interruption_counts(&run_dir);
            RunStatus {
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
                logs: attempt_logs(&run_dir),
                progress,
            }
        })
        .collect()
}

fn status_report(dir: &SweepDir, runs: Vec<RunStatus>) -> StatusReport {
    StatusReport::new(dir.name.clone(), dir.root.clone(), "slurm", None, runs)
}

/// `drover status <dir>`: one `squeue` call, then the markers; a sweep never submitted to Slurm
/// is reported from its markers and locks alone (`local_status`).
pub fn status(results: &Path, slurm: &Slurm) -> Result<StatusReport, RunError> {
    let dir = SweepDir::open(results)?;
    let ledger = Ledger::load(&dir.root)?;
    if ledger.submissions.is_empty() {
        return Ok(crate::backend::local_status::status(&dir));
    }
    let queue = slurm.queue(&dir.job_name)?;
    let runs = statuses(&dir, &ledger, &queue);
    Ok(status_report(&dir, runs))
}

/// `drover cancel <dir>`: cancels the sweep's live arrays (one `scancel`) and records it, so the
/// runs show as cancelled even after Slurm forgets them. Returns the job ids cancelled.
pub fn cancel(results: &Path, slurm: &Slurm) -> Result<Vec<String>, RunError> {
    let dir = SweepDir::open(results)?;
    let mut ledger = Ledger::load(&dir.root)?;
    let Some(&upto) = ledger.submissions.keys().next_back() else {
        return Err(RunError::NotSlurm { dir: dir.root });
    };
    let queue = slurm.queue(&dir.job_name)?;
    let ours: BTreeSet<&str> = ledger.submissions.values().filter_map(|s| s.job_id.as_deref()).collect();
    let live: BTreeSet<String> = queue
        .iter()
        .filter(|e| ours.contains(e.array_job_id.as_str()))
        .filter(|e| classify(None, SlurmView::Listed(&e.state), false).0.is_live())
        .map(|e| e.array_job_id.clone())
        .collect();
    // Recorded first: a run that ends while scancel runs must still read as cancelled.
    ledger.append(LedgerEvent::Cancelled { upto_submission: upto })?;
    let ids: Vec<String> = live.into_iter().collect();
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
    /// Seconds from the start of `run_sweep` until the last array of the first round was
    /// accepted (run directories, specs, scripts, ledger, Slurm calls): what the submission
    /// benchmark compares.
    pub submit_seconds: f64,
}

/// One array to submit: runs with identical resources, at most `MaxArraySize` of them.
#[derive(Debug, Clone)]
pub struct ArrayPlan {
    /// Resources of every run in it.
    pub resources: Resources,
    /// Run ids, one per array index.
    pub runs: Vec<String>,
}

/// Groups runs by resources (first appearance order) and splits groups at `max_array`.
/// A run's Slurm resources: the sweep's `[slurm]` settings with their overrides, plus one task
/// per MPI rank (`run.ranks`), which the batch script launches with `srun --mpi=pmix`. Runs with
/// different rank counts land in different arrays, since arrays are split by resources.
fn run_resources(settings: &SlurmSettings, run: &crate::config::RunSpec) -> Resources {
    let mut r = settings.resources_for(&run.axes);
    let ranks = run.run.get("ranks").and_then(serde_json::Value::as_u64).unwrap_or(1);
    if ranks > 1 {
        r.options.retain(|(k, _)| *k != "ntasks");
        r.options.push(("ntasks", ranks.to_string()));
    }
    r
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

pub fn plan_arrays(runs: &[(String, Resources)], max_array: usize) -> Vec<ArrayPlan> {
    let mut groups: Vec<(Resources, Vec<String>)> = Vec::new();
    for (id, res) in runs {
        match groups.iter_mut().find(|(r, _)| r == res) {
            Some((_, ids)) => ids.push(id.clone()),
            None => groups.push((res.clone(), vec![id.clone()])),
        }
    }
    let max_array = max_array.max(1);
    groups
        .into_iter()
        .flat_map(|(resources, ids)| {
            ids.chunks(max_array).map(|c| ArrayPlan { resources: resources.clone(), runs: c.to_vec() }).collect::<Vec<_>>()
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

/// The batch scripts `drover run --dry-run --backend slurm` would submit, as (file name, text).
pub fn dry_run_scripts(plan: &Plan, opts: &SlurmOptions) -> Result<Vec<(String, String)>, RunError> {
    let root = std::path::absolute(plan.results.root())
        .map_err(|source| RunError::Io { action: "resolve", path: plan.results.root().to_path_buf(), source })?;
    let ledger = Ledger::load(&root)?;
    let settings = &plan.sweep.slurm;
    // One short try: a dry run is often made where Slurm is not reachable (a laptop, a login
    // node during an outage), and its only question has a safe default.
    let quick = Slurm {
        policy: crate::backend::slurm_cmd::CallPolicy { attempts: 1, timeout: Duration::from_secs(5), ..opts.slurm.policy.clone() },
        ..opts.slurm.clone()
    };
    let max = match max_array(settings, &quick) {
        Ok(m) => m,
        Err(e) => {
            tracing::warn!("cannot ask Slurm for MaxArraySize ({e}); assuming 1001");
            settings.max_array_size.map_or(1001, |c| c.min(1001) as usize)
        }
    };
    let runs: Vec<(String, Resources)> = plan
        .runs
        .iter()
        .filter(|r| {
            let spec = plan.job_spec(r);
            crate::backend::run_state(&plan.results.run_dir(&spec.run_id), &spec) != crate::backend::RunState::Completed
        })
        .map(|r| (r.run_id.to_string(), run_resources(settings, r)))
        .collect();
    let (name, token) = job_name(&plan.sweep.name, &root);
    let mut out = Vec::new();
    for (k, array) in plan_arrays(&runs, max).into_iter().enumerate() {
        let n = ledger.next_submission() + k as u32;
        let script_name = format!("array-{n}.sbatch");
        let text = render(plan, &root, &name, &token, n, &script_name, &array, opts);
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
) -> String {
    let s = &plan.sweep.slurm;
    let throttle = s.throttle.or(plan.sweep.max_parallel.map(|m| m.get() as u32));
    let tasks = root.join(SLURM_DIR).join(format!("array-{n}.tasks"));
    let runs = root.join("runs");
    let comment = format!("drover:{token}:{n}");
    slurm_script::render(&ScriptParams {
        sweep: &plan.sweep.name,
        submission: n,
        count: array.runs.len(),
        script_name,
        job_name,
        comment: &comment,
        throttle,
        signal: &s.signal,
        signal_seconds: s.signal_seconds,
        resources: &array.resources,
        tasks: &tasks,
        runs: &runs,
        job_bin: &opts.job_bin,
        max_timeouts: s.max_timeouts,
        max_preemptions: s.max_preemptions,
    })
}

fn io_err<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> RunError + 'a {
    move |source| RunError::Io { action, path: path.to_path_buf(), source }
}

fn sha256_file(path: &Path) -> String {
    match std::fs::read(path) {
        Ok(bytes) => Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect(),
        Err(_) => String::new(),
    }
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
}

impl Submitter<'_> {
    fn submit(&self, ledger: &mut Ledger, runs: &[(String, Resources)]) -> Result<Vec<String>, RunError> {
        let slurm_dir = self.root.join(SLURM_DIR);
        let logs = slurm_dir.join("logs");
        std::fs::create_dir_all(&logs).map_err(io_err("create directory", &logs))?;
        let mut ids = Vec::new();
        for array in plan_arrays(runs, self.max_array) {
            let n = ledger.next_submission();
            let script_name = format!("array-{n}.sbatch");
            let script = slurm_dir.join(&script_name);
            let tasks = slurm_dir.join(format!("array-{n}.tasks"));
            let mut tasks_text = String::new();
            for id in &array.runs {
                let spec = self.specs.get(id.as_str()).ok_or_else(|| RunError::Ledger {
                    path: tasks.clone(),
                    reason: format!("run {id} is not in the sweep"),
                })?;
                let json = serde_json::to_string(spec).map_err(|source| RunError::Serialize { path: tasks.clone(), source })?;
                tasks_text.push_str(id);
                tasks_text.push('\t');
                tasks_text.push_str(&json);
                tasks_text.push('\n');
            }
            layout::write_atomic(&tasks, tasks_text.as_bytes()).map_err(io_err("write", &tasks))?;
            let text = render(self.plan, &self.root, &self.job_name, &self.token, n, &script_name, &array, self.opts);
            layout::write_atomic(&script, text.as_bytes()).map_err(io_err("write", &script))?;
            let comment = format!("drover:{}:{n}", self.token);
            ledger.append(LedgerEvent::Intent {
                submission: n,
                job_name: self.job_name.clone(),
                comment: comment.clone(),
                script: script_name.clone(),
                runs: array.runs.clone(),
                provenance: self.provenance.clone(),
            })?;
            tracing::debug!("script and intent written; sbatch");
            match self.opts.slurm.submit(Path::new(&script_name), &slurm_dir, &self.job_name, &comment) {
                Ok(job_id) => {
                    ledger.append(LedgerEvent::Submitted { submission: n, job_id: job_id.clone() })?;
                    tracing::info!(job = %job_id, runs = array.runs.len(), script = %script.display(), "submitted");
                    ids.push(job_id);
                }
                Err(e) => {
                    ledger.append(LedgerEvent::Refused { submission: n, message: e.to_string() })?;
                    return Err(e.into());
                }
            }
        }
        Ok(ids)
    }
}


/// Gets a run's directory ready for a (re)submission: a run with a checkpoint keeps its files
/// and resumes; any other unfinished run has its files moved to `attempt-<n>/` first. New runs
/// are left to the batch script.
fn ready_run_dir(plan: &Plan, run: &crate::config::RunSpec, resume: bool) -> Result<(), RunError> {
    let spec = plan.job_spec(run);
    let dir = plan.results.run_dir(&spec.run_id);
    if !dir.exists() {
        // A new run: the batch script creates its directory and `spec.json` from the tasks file.
        return Ok(());
    }
    let spec_path = dir.join(SPEC_JSON);
    let bytes = serde_json::to_vec_pretty(&spec).map_err(|source| RunError::Serialize { path: spec_path.clone(), source })?;
    if !(resume && dir.join("checkpoint.json").exists()) {
        archive_partial(&dir)?;
    }
    layout::write_atomic(&spec_path, &bytes).map_err(io_err("write", &spec_path))
}

/// Decides each run's fate from one queue answer and gets the ones to submit ready.
fn prepare_runs(
    plan: &Plan,
    dir: &SweepDir,
    ledger: &Ledger,
    queue: &[QueueEntry],
    settings: &SlurmSettings,
) -> Result<PreparedRuns, RunError> {
    let now = statuses(dir, ledger, queue);
    let (mut skipped, mut attached, mut to_submit) = (0, 0, Vec::new());
    for (run, st) in plan.runs.iter().zip(&now) {
        match st.state {
            RunState::Done => skipped += 1,
            s if s.is_live() => attached += 1,
            s => {
                // A stopped run with a checkpoint resumes; a failed or new one starts over.
                let resume = matches!(s, RunState::Cancelled | RunState::TimedOut | RunState::Preempted);
                ready_run_dir(plan, run, resume)?;
                to_submit.push((run.run_id.to_string(), run_resources(settings, run)));
            }
        }
    }
    Ok(PreparedRuns { to_submit, skipped, attached })
}

/// What `prepare_runs` decided.
struct PreparedRuns {
    /// Runs to submit, with their resources.
    to_submit: Vec<(String, Resources)>,
    /// Completed runs.
    skipped: usize,
    /// Queued or running runs.
    attached: usize,
}

/// `drover run --backend slurm`: skip completed runs, re-attach to live ones, submit the rest
/// as job arrays; then (with `wait`) poll until every run has ended, resubmitting within the
/// retry budgets.
pub fn run_sweep(plan: &Plan, opts: &SlurmOptions) -> Result<SlurmReport, RunError> {
    let started = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
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
    let dangling = ledger.dangling();
    if !dangling.is_empty() {
        let queue = opts.slurm.queue(&job_name)?;
        for n in dangling {
            let comment = format!("drover:{token}:{n}");
            match queue.iter().find(|e| e.comment == comment) {
                Some(e) => ledger.append(LedgerEvent::Submitted { submission: n, job_id: e.array_job_id.clone() })?,
                None => ledger.append(LedgerEvent::Refused { submission: n, message: "not found in the queue: never submitted".into() })?,
            }
        }
    }
    // Subprocess waits (git, scontrol, squeue) overlap with each other and with preparing the
    // run directories.
    let (provenance, max_array, prepared) = std::thread::scope(|scope| {
        let provenance = scope.spawn(|| provenance(plan));
        let max_array = scope.spawn(|| max_array(settings, &opts.slurm));
        let prepared = (|| {
            // A sweep with no submission yet has nothing in the queue to ask about.
            let queue = if ledger.submissions.is_empty() { Vec::new() } else { opts.slurm.queue(&job_name)? };
            prepare_runs(plan, &dir, &ledger, &queue, settings)
        })();
        let panicked = || RunError::Io { action: "ask Slurm for MaxArraySize", path: root.clone(), source: std::io::Error::other("thread panicked") };
        (provenance.join().unwrap_or_default(), max_array.join().unwrap_or_else(|_| Err(panicked())), prepared)
    });
    let PreparedRuns { to_submit, skipped, attached } = prepared?;
    tracing::debug!(elapsed = ?started.elapsed(), "run directories ready");
    let specs = plan.runs.iter().map(|r| (r.run_id.to_string(), plan.job_spec(r))).collect();
    let submitter = Submitter { plan, root: root.clone(), job_name: job_name.clone(), token, opts, provenance, max_array: max_array?, specs };

    let mut report = SlurmReport { skipped, attached, ..SlurmReport::default() };
    if !opts.quiet {
        eprintln!(
            "drover: sweep `{}`: {} runs: {} completed, {} queued or running (re-attached), submitting {} -> {}",
            plan.sweep.name,
            plan.runs.len(),
            report.skipped,
            report.attached,
            to_submit.len(),
            root.display()
        );
    }
    report.submitted += to_submit.len();
    report.job_ids.extend(submitter.submit(&mut ledger, &to_submit)?);
    report.submit_seconds = started.elapsed().as_secs_f64();
    if !opts.wait {
        return Ok(report);
    }

    let poll = Duration::from_secs_f64(settings.poll_seconds);
    let axes: BTreeMap<String, &crate::config::RunSpec> = plan.runs.iter().map(|r| (r.run_id.to_string(), r)).collect();
    let mut last_counts = String::new();
    loop {
        let t0 = Instant::now();
        let queue = opts.slurm.queue(&job_name)?;
        let now = statuses(&dir, &ledger, &queue);
        let mut retry = Vec::new();
        for st in &now {
            let kind = match st.state {
                RunState::Failed => RetryKind::Failed,
                RunState::TimedOut => RetryKind::TimedOut,
                RunState::Preempted => RetryKind::Preempted,
                _ => continue,
            };
            let budget = match kind {
                RetryKind::Failed => settings.max_retries,
                RetryKind::TimedOut => settings.max_timeouts,
                RetryKind::Preempted => settings.max_preemptions,
            };
            // Runs never submitted by this sweep's ledger (refused) are not ours to retry.
            if st.submissions == 0 || ledger.retries_of(&st.run_id, kind) >= budget {
                continue;
            }
            let reason = st.reason.clone().unwrap_or_default();
            if !opts.quiet {
                eprintln!("drover: run {} ({}) {}: {reason}; resubmitting ({:?} retry {} of {budget})", st.run_id, st.label, st.state.as_str(), kind, ledger.retries_of(&st.run_id, kind) + 1);
            }
            ledger.append(LedgerEvent::Retry { run_id: st.run_id.clone(), retry: kind, reason })?;
            if let Some(run) = axes.get(&st.run_id) {
                ready_run_dir(plan, run, kind != RetryKind::Failed)?;
                retry.push((st.run_id.clone(), run_resources(settings, run)));
            }
        }
        if !retry.is_empty() {
            report.submitted += retry.len();
            report.job_ids.extend(submitter.submit(&mut ledger, &retry)?);
            continue;
        }
        let status = status_report(&dir, now);
        let counts: Vec<String> = status.counts.iter().map(|(s, n)| format!("{n} {}", s.as_str())).collect();
        let counts = counts.join(", ");
        if !opts.quiet && counts != last_counts {
            eprintln!("drover: {counts}");
            last_counts = counts;
        }
        let finished = status.runs.iter().all(|r| !r.state.is_live() && r.state != RunState::NotSubmitted);
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

    #[test]
    fn arrays_split_at_the_size_limit_and_by_resources() {
        let runs: Vec<(String, Resources)> =
            (0..12).map(|i| (format!("r{i}"), if i % 4 == 3 { res("big") } else { res("small") })).collect();
        let arrays = plan_arrays(&runs, 5);
        let sizes: Vec<(String, usize)> = arrays.iter().map(|a| (a.resources.options[0].1.clone(), a.runs.len())).collect();
        assert_eq!(sizes, [("small".into(), 5), ("small".into(), 4), ("big".into(), 3)]);
        assert_eq!(arrays[2].runs, ["r3", "r7", "r11"]);
        assert_eq!(plan_arrays(&runs, 1000).len(), 2);
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

    #[test]
    fn ledger_folds_events_and_survives_a_torn_last_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut ledger = Ledger::load(dir.path()).expect("empty");
        assert_eq!(ledger.next_submission(), 0);
        ledger
            .append(LedgerEvent::Intent {
                submission: 0,
                job_name: "j".into(),
                comment: "c0".into(),
                script: "array-0.sbatch".into(),
                runs: vec!["a".into(), "b".into()],
                provenance: Provenance::default(),
            })
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
}
