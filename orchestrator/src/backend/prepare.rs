//! Preparing a results directory: manifest, `spec.json` per run, skip finished runs, archive partial ones.

use std::path::{Path, PathBuf};

use crate::error::RunError;
use crate::layout::{
    self, ExitRecord, ExitStatus, JobSpec, RecordError, SweepManifest, EXIT_JSON, METRICS_PARQUET, SPEC_JSON, SUMMARY_JSON, SWEEP_JSON, SWEEP_TOML,
};
use crate::plan::Plan;

/// A run to launch, with its files already in place.
#[derive(Debug, Clone)]
pub struct PendingRun {
    /// The run id.
    pub run_id: String,
    /// Its configuration label.
    pub label: String,
    /// `runs/<run_id>/` (absolute).
    pub dir: PathBuf,
    /// `runs/<run_id>/spec.json` (absolute).
    pub spec_path: PathBuf,
    /// The attempt number (1 for a first launch); names the log files.
    pub attempt: u32,
    /// MPI ranks of the job (`run.ranks`).
    pub ranks: u32,
    /// The job may open a GPU (`run.device` is `cuda` or `auto`): the local backend leases it
    /// devices (`gpus.rs`).
    pub gpu: bool,
}

impl PendingRun {
    /// `attempt-<n>.stdout.log`.
    pub fn stdout_log(&self) -> PathBuf {
        self.dir.join(format!("attempt-{}.stdout.log", self.attempt))
    }
    /// `attempt-<n>.stderr.log`.
    pub fn stderr_log(&self) -> PathBuf {
        self.dir.join(format!("attempt-{}.stderr.log", self.attempt))
    }
}

/// The result of `prepare`.
#[derive(Debug, Clone, Default)]
pub struct Prepared {
    /// Runs to launch, in expansion order.
    pub pending: Vec<PendingRun>,
    /// Runs skipped because they already completed with the same config.
    pub skipped: Vec<String>,
    /// Runs redone from scratch although something on disk claimed them further along (a
    /// corrupted `exit.json`, a completion marker whose files are damaged, a checkpoint that
    /// cannot be resumed from), with the reason naming the file: `redo: <id>: <reason>`.
    pub redone: Vec<(String, String)>,
    /// Completed runs kept whose damaged or missing `spec.json` was written again from the
    /// plan, with what was wrong with it.
    pub repaired: Vec<(String, String)>,
    /// Unfinished runs that go on from their checkpoint (a local run stopped part-way), with the
    /// iterations it holds.
    pub resumed: Vec<(String, u64)>,
    /// Unfinished runs left alone because a job still holds their lock (`.job.lock`) after the
    /// wait ran out, with what the holder wrote about itself ("pid 123"): running elsewhere.
    pub busy: Vec<(String, String)>,
    /// A stop (Ctrl-C, SIGTERM) cut the wait for busy runs short: nothing is to be launched,
    /// and `busy` holds the runs still running elsewhere then.
    pub interrupted: bool,
}

/// How long `prepare` waits, by default, for jobs that still hold their run's lock.
pub const DEFAULT_BUSY_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// Where a run stands on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunState {
    /// `exit.json` says completed and the existing spec has the same config: skip it.
    Completed,
    /// Something is there but the run did not complete: archive and rerun.
    Unfinished,
    /// No directory yet.
    New,
}

/// The state of one run directory, and a reason naming the file: for an unfinished run, why a
/// claim on disk was refused (a damaged marker, a completion over damaged files), printed as
/// the rerun's `redo:` line; for a completed run, the damaged or missing `spec.json` that
/// `drover run` rewrites from the plan (`repair:`).
///
/// A run counts as completed only when `exit.json` (of this run) says so *and* the files it
/// vouches for are whole ([`completed_files_problem`]): a damaged marker or result is redone,
/// never kept as done. A file that is there but cannot be read (`EACCES`, `EIO`, NFS's `ESTALE`)
/// decides nothing: [`RunError::UnreadableRun`], so a completed run is not retrained for a
/// passing fault.
pub fn inspect_run(dir: &Path, spec: &JobSpec) -> Result<(RunState, Option<String>), RunError> {
    if !dir.exists() {
        return Ok((RunState::New, None));
    }
    match on_disk(dir, &spec.run_id)? {
        OnDisk::NoMarker | OnDisk::Ended(_) => Ok((RunState::Unfinished, None)),
        OnDisk::Damaged(why) => Ok((RunState::Unfinished, Some(why))),
        OnDisk::Completed { spec: Ok(old) } if old.same_config(spec) => Ok((RunState::Completed, None)),
        // The run id is a hash of the whole configuration, so a `spec.json` that parses but
        // differs was edited, perhaps before the job read it: the results are not trusted.
        OnDisk::Completed { spec: Ok(_) } => Ok((
            RunState::Unfinished,
            Some(format!(
                "marked completed but not trusted: `{}` holds another configuration than run {}'s (edited?)",
                dir.join(SPEC_JSON).display(),
                spec.run_id
            )),
        )),
        // The job read its spec at launch and made it durable before its marker, so the damage
        // came later; the results (checked, and of this run id, which is a hash of the
        // configuration) are kept and the plan's spec written again.
        OnDisk::Completed { spec: Err(problem) } => Ok((RunState::Completed, Some(problem))),
    }
}

/// What a run's own files say of it, judged as `drover run` judges them ([`inspect_run`]);
/// `drover status` shows the same (`local_status.rs`), with no plan at hand.
#[derive(Debug, Clone)]
pub enum OnDisk {
    /// No `exit.json`.
    NoMarker,
    /// A readable marker of this run that is not `completed` (failed, cancelled).
    Ended(ExitRecord),
    /// `completed`, and the files the marker vouches for check out; `spec` is its `spec.json`,
    /// or what is wrong with it (damaged or missing), naming the file.
    Completed {
        /// The run's `spec.json`, or why there is none to use.
        spec: Result<JobSpec, String>,
    },
    /// A damaged marker, or a completion over damaged files: the next `drover run` redoes the
    /// run. The reason names the file and says what the marker was (`marked completed but not
    /// trusted: ...` only when it said completed).
    Damaged(String),
}

/// [`OnDisk`] of the run `run_id` in `dir`; a file that is there but cannot be read is
/// [`RunError::UnreadableRun`].
pub fn on_disk(dir: &Path, run_id: &str) -> Result<OnDisk, RunError> {
    let exit_path = dir.join(EXIT_JSON);
    let exit: ExitRecord = match layout::read_record_typed(&exit_path) {
        Ok(Some(exit)) => exit,
        Ok(None) => return Ok(OnDisk::NoMarker),
        Err(RecordError::Io(error)) => return Err(RunError::UnreadableRun { path: exit_path, error }),
        Err(reason) => return Ok(OnDisk::Damaged(format!("unreadable `{}`: {reason}", exit_path.display()))),
    };
    let completed = exit.status == ExitStatus::Completed;
    let claim = if completed { "marked completed but not trusted: " } else { "" };
    if exit.run_id != run_id {
        return Ok(OnDisk::Damaged(format!(
            "{claim}bad `{}`: it is not the marker of run {run_id} (run_id {:?})",
            exit_path.display(),
            exit.run_id
        )));
    }
    if !completed {
        return Ok(OnDisk::Ended(exit));
    }
    if let Some(problem) = completed_files_problem(dir, run_id)? {
        return Ok(OnDisk::Damaged(format!("{claim}{problem}")));
    }
    let spec_path = dir.join(SPEC_JSON);
    let spec = match layout::read_record_typed::<JobSpec>(&spec_path) {
        Ok(Some(spec)) => Ok(spec),
        Ok(None) => Err(format!("`{}` is missing", spec_path.display())),
        Err(RecordError::Io(error)) => return Err(RunError::UnreadableRun { path: spec_path, error }),
        Err(reason) => Err(format!("unreadable `{}`: {reason}", spec_path.display())),
    };
    Ok(OnDisk::Completed { spec })
}

/// What is wrong with the files a `completed` marker in `dir` vouches for, or `None` when they
/// are whole: `summary.json` must be a known-version record of `run_id`, and `metrics.parquet`
/// must be a Parquet file with both magic numbers and a footer that fits in it (a truncated or
/// overwritten file fails this; the check reads 12 bytes, not the data). A file that is there
/// but cannot be read is [`RunError::UnreadableRun`], not a problem with the run.
pub fn completed_files_problem(dir: &Path, run_id: &str) -> Result<Option<String>, RunError> {
    let summary_path = dir.join(SUMMARY_JSON);
    match layout::read_record_typed::<serde_json::Value>(&summary_path) {
        Ok(Some(summary)) => {
            let id = summary.get("run_id").and_then(serde_json::Value::as_str);
            if id != Some(run_id) {
                return Ok(Some(format!("bad `{}`: it is not the summary of run {run_id} (run_id {id:?})", summary_path.display())));
            }
        }
        Ok(None) => return Ok(Some(format!("`{}` is missing although `exit.json` says completed", summary_path.display()))),
        Err(RecordError::Io(error)) => return Err(RunError::UnreadableRun { path: summary_path, error }),
        Err(reason) => return Ok(Some(format!("bad `{}`: {reason}", summary_path.display()))),
    }
    let metrics_path = dir.join(METRICS_PARQUET);
    match parquet_frame_check(&metrics_path) {
        Ok(problem) => Ok(problem.map(|reason| format!("bad `{}`: {reason}", metrics_path.display()))),
        Err(error) => Err(RunError::UnreadableRun { path: metrics_path, error }),
    }
}

/// What is wrong with the frame of a Parquet file, if anything: `PAR1` at both ends and a footer
/// length that fits (12 bytes read; catches truncated and overwritten files, not damaged pages).
/// A read fault is said as a problem (`cannot read it: ...`); [`completed_files_problem`]
/// tells the two apart.
pub fn parquet_frame_problem(path: &Path) -> Option<String> {
    parquet_frame_check(path).unwrap_or_else(|e| Some(format!("cannot read it: {e}")))
}

/// [`parquet_frame_problem`], with a fault reading a file that is there as the error.
fn parquet_frame_check(path: &Path) -> std::io::Result<Option<String>> {
    use std::io::{Read, Seek, SeekFrom};
    const MAGIC: &[u8; 4] = b"PAR1";
    let check = || -> std::io::Result<Option<String>> {
        let mut file = std::fs::File::open(path)?;
        let meta = file.metadata()?;
        if meta.is_dir() {
            return Ok(Some("a directory, not a Parquet file".into()));
        }
        let len = meta.len();
        if len < 12 {
            return Ok(Some(format!("{len} bytes: too short for a Parquet file (truncated?)")));
        }
        let mut head = [0u8; 4];
        file.read_exact(&mut head)?;
        let mut tail = [0u8; 8];
        file.seek(SeekFrom::End(-8))?;
        file.read_exact(&mut tail)?;
        if &head != MAGIC {
            return Ok(Some("not a Parquet file (no `PAR1` magic at its start)".into()));
        }
        if &tail[4..] != MAGIC {
            return Ok(Some("no `PAR1` magic at its end: truncated or overwritten".into()));
        }
        let footer = u64::from(u32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]]));
        if footer + 12 > len {
            return Ok(Some(format!("its footer claims {footer} bytes but the file has {len}: truncated or overwritten")));
        }
        Ok(None)
    };
    match check() {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Some("missing although `exit.json` says completed".into())),
        // A file too short for its own footer claim reads as truncated, above.
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(Some(format!("cannot read it: {e}"))),
        other => other,
    }
}

fn io_err<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> RunError + 'a {
    move |source| RunError::Io { action, path: path.to_path_buf(), source }
}

fn to_json<T: serde::Serialize>(value: &T, path: &Path) -> Result<Vec<u8>, RunError> {
    serde_json::to_vec_pretty(value).map_err(|source| RunError::Serialize { path: path.to_path_buf(), source })
}

/// Writes `sweep.toml` (the input as given) and the `sweep.json` manifest into `root`; every
/// backend starts with this.
pub(crate) fn write_sweep_files(plan: &Plan, root: &Path) -> Result<(), RunError> {
    let toml_path = root.join(SWEEP_TOML);
    layout::write_atomic(&toml_path, plan.source_text.as_bytes()).map_err(io_err("write", &toml_path))?;
    let manifest = SweepManifest {
        format_version: layout::FORMAT_VERSION,
        name: plan.sweep.name.clone(),
        source: plan.sweep.source.clone(),
        runs: plan.runs.iter().map(|r| r.run_id.to_string()).collect(),
        created_at: layout::unix_now(),
        overrides: plan.overrides.clone(),
    };
    let manifest_path = root.join(SWEEP_JSON);
    layout::write_atomic(&manifest_path, &to_json(&manifest, &manifest_path)?).map_err(io_err("write", &manifest_path))
}

/// Writes `sweep.toml`, `sweep.json` and each run's `spec.json`; decides which runs to launch.
///
/// Finished runs are never touched. Unfinished ones have their files moved into
/// `attempt-<n>/` first, so nothing from an earlier attempt is lost. Waits up to
/// [`DEFAULT_BUSY_WAIT`] for runs still running elsewhere (see [`prepare_waiting`]).
pub fn prepare(plan: &Plan) -> Result<Prepared, RunError> {
    prepare_waiting(plan, DEFAULT_BUSY_WAIT, &mut || false)
}

/// [`prepare`], waiting up to `busy_wait` for unfinished runs whose job lock is still held.
///
/// Such a run is being written by a live job that this process did not start (most often an
/// orphan of a `drover run` killed with SIGKILL): archiving it or launching it again would put
/// two writers in one directory. It is re-examined when its lock is released (it may have
/// completed meanwhile); when the wait runs out it is left alone and listed in
/// [`Prepared::busy`]. `stop` is asked between looks: once it says a stop was asked for
/// (Ctrl-C, `drover cancel`), the wait ends at once with [`Prepared::interrupted`] set.
pub fn prepare_waiting(plan: &Plan, busy_wait: std::time::Duration, stop: &mut dyn FnMut() -> bool) -> Result<Prepared, RunError> {
    let runs_dir = plan.results.runs_dir();
    std::fs::create_dir_all(&runs_dir).map_err(io_err("create directory", &runs_dir))?;
    // Absolute paths, so the job and its logs do not depend on the working directory.
    let root = plan.results.root().canonicalize().map_err(io_err("resolve", plan.results.root()))?;
    let results = layout::ResultsDir::new(&root);

    write_sweep_files(plan, &root)?;

    let mut prepared = Prepared::default();
    let mut busy = Vec::new();
    for run in &plan.runs {
        let spec = plan.job_spec(run);
        let dir = results.run_dir(&spec.run_id);
        let ranks = run.run.get("ranks").and_then(serde_json::Value::as_u64).map_or(1, |r| r as u32);
        if !claim(&mut prepared, dir.clone(), &spec, ranks)? {
            busy.push((dir, spec, ranks));
        }
    }
    if busy.is_empty() {
        return Ok(prepared);
    }
    crate::say!(
        "drover: {} still being written by a job this command did not start (left running by an earlier `drover run` that was killed?); waiting up to {} s for {} to end (Ctrl-C stops the wait):",
        crate::words::count_as(busy.len(), "unfinished run is", "unfinished runs are"),
        busy_wait.as_secs(),
        if busy.len() == 1 { "it" } else { "them" }
    );
    for (dir, spec, _) in &busy {
        crate::say!("  running elsewhere: {} ({}): {}", spec.run_id, spec.label, super::job_lock::holder(dir));
    }
    let deadline = std::time::Instant::now() + busy_wait;
    loop {
        let mut still = Vec::new();
        for (dir, spec, ranks) in busy {
            if !claim(&mut prepared, dir.clone(), &spec, ranks)? {
                still.push((dir, spec, ranks));
            }
        }
        busy = still;
        if busy.is_empty() || std::time::Instant::now() >= deadline {
            break;
        }
        if stop() {
            prepared.interrupted = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    prepared.busy = busy.into_iter().map(|(dir, spec, _)| (spec.run_id, super::job_lock::holder(&dir))).collect();
    Ok(prepared)
}

/// Decides one run: skipped (completed), pending (new, or unfinished and archived under its job
/// lock), or `false` when its lock is held by a live job, in which case nothing was touched.
///
/// An unfinished run is examined again once its lock is held: the job that held it a moment
/// ago may have completed the run in between.
fn claim(prepared: &mut Prepared, dir: PathBuf, spec: &JobSpec, ranks: u32) -> Result<bool, RunError> {
    let (state, repair) = inspect_run(&dir, spec)?;
    // Held until the run's files are in place; the job takes it over when launched.
    let mut _lock = None;
    let attempt = match state {
        RunState::Completed => {
            if let Some(problem) = repair {
                // Written whole in one step (no lock needed: no job writes a completed run).
                let spec_path = dir.join(SPEC_JSON);
                layout::write_atomic(&spec_path, &to_json(spec, &spec_path)?).map_err(io_err("write", &spec_path))?;
                prepared.repaired.push((spec.run_id.clone(), problem));
            }
            prepared.skipped.push(spec.run_id.clone());
            return Ok(true);
        }
        RunState::New => {
            std::fs::create_dir_all(&dir).map_err(io_err("create directory", &dir))?;
            1
        }
        RunState::Unfinished => {
            let lock_path = dir.join(super::job_lock::JOB_LOCK_FILE);
            let Some(lock) = super::job_lock::try_lock(&dir).map_err(io_err("lock", &lock_path))? else {
                return Ok(false);
            };
            let (state, problem) = inspect_run(&dir, spec)?;
            if state == RunState::Completed {
                // Completed meanwhile, by the job that held the lock: its spec is whole.
                prepared.skipped.push(spec.run_id.clone());
                return Ok(true);
            }
            let go_on = match problem {
                Some(problem) => GoOn::Over(Some(problem)),
                None => go_on(&dir, &spec.run_id)?,
            };
            _lock = Some(lock);
            match go_on {
                GoOn::Resume(iteration) => {
                    prepared.resumed.push((spec.run_id.clone(), iteration));
                    resume_in_place(&dir)?
                }
                GoOn::Over(why) => {
                    if let Some(why) = why {
                        // Said once, by the caller's `redo:` line; this is for `RUST_LOG=debug` logs.
                        tracing::debug!(run = %spec.run_id, "redoing it from scratch: {why}");
                        prepared.redone.push((spec.run_id.clone(), why));
                    }
                    archive_partial(&dir)?
                }
            }
        }
    };
    let spec_path = dir.join(SPEC_JSON);
    // Unsynced: one per run; the job fsyncs it before its completed marker (layout.rs says why).
    layout::write_atomic_unsynced(&spec_path, &to_json(spec, &spec_path)?).map_err(io_err("write", &spec_path))?;
    let gpu = matches!(spec.run.get("device").and_then(serde_json::Value::as_str), Some("cuda" | "auto"));
    prepared.pending.push(PendingRun { run_id: spec.run_id.clone(), label: spec.label.clone(), dir, spec_path, attempt, ranks, gpu });
    Ok(true)
}

/// What `drover run` would do with a run, as `--dry-run` shows it: [`claim`]'s decision
/// without its lock and without touching anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlannedAction {
    /// Completed: skipped.
    Done,
    /// Stopped part-way with a checkpoint: goes on from that iteration.
    Resume(u64),
    /// Something ran and did not complete (or a completion is not trusted): starts over.
    Redo,
    /// Never started (no directory, or one holding only what was prepared for it).
    New,
    /// Unfinished, and a job on this host holds its lock now (`.job.lock`, or MPI ranks'
    /// `.ranks.lock`): it is running, under the `drover run` working on the directory or left
    /// by a killed one. A `drover run` now would wait for it, then judge the run again.
    Live,
    /// A file that decides it exists but cannot be read: `drover run` would stop, touching
    /// nothing ([`RunError::UnreadableRun`]).
    Unreadable,
}

impl PlannedAction {
    /// The word `--dry-run` prints.
    pub fn word(self) -> &'static str {
        match self {
            PlannedAction::Done => "done",
            PlannedAction::Resume(_) => "resume",
            PlannedAction::Redo => "redo",
            PlannedAction::New => "new",
            PlannedAction::Live => "live",
            PlannedAction::Unreadable => "unreadable",
        }
    }
}

/// What `drover run` would do with the run in `dir` (see [`PlannedAction`]). Whether a job
/// holds the run is read without taking its `.job.lock` (`job_lock::running_here`): a dry run
/// must never make a `drover run` launching that run at the same moment find it taken. Only a
/// multi-rank run's `.ranks.lock` is probed with a lock released at once, as `drover status`
/// does (`job_lock::ranks_running`: ranks starting then wait for it).
pub fn planned_action(dir: &Path, spec: &JobSpec) -> PlannedAction {
    let problem = match inspect_run(dir, spec) {
        Err(_) => return PlannedAction::Unreadable,
        Ok((RunState::Completed, _)) => return PlannedAction::Done,
        Ok((RunState::New, _)) => return PlannedAction::New,
        Ok((RunState::Unfinished, problem)) => problem,
    };
    match super::job_lock::running_here(dir) {
        Ok(true) => return PlannedAction::Live,
        // `drover run` stops on a ranks' lock whose state cannot be told (`job_lock::try_lock`).
        Err(_) => return PlannedAction::Unreadable,
        Ok(false) => {}
    }
    if problem.is_some() {
        return PlannedAction::Redo;
    }
    match go_on(dir, &spec.run_id) {
        Err(_) => PlannedAction::Unreadable,
        Ok(GoOn::Resume(iteration)) => PlannedAction::Resume(iteration),
        Ok(GoOn::Over(None)) if never_started(dir) => PlannedAction::New,
        Ok(GoOn::Over(_)) => PlannedAction::Redo,
    }
}

/// A run directory holding only what `prepare` writes before a launch (`spec.json`, the lock):
/// a sweep stopped before this run's turn.
pub(crate) fn never_started(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|entries| {
        entries.filter_map(Result::ok).all(|e| {
            let name = e.file_name();
            name == SPEC_JSON || super::job_lock::is_lock_file(&name)
        })
    })
}

/// How an unfinished run goes on.
#[derive(Debug, Clone, PartialEq, Eq)]
enum GoOn {
    /// From its own `checkpoint.json`, which holds this many iterations.
    Resume(u64),
    /// From scratch; with why, naming the file, when something on disk pointed elsewhere (a
    /// checkpoint that cannot be resumed from, a damaged marker).
    Over(Option<String>),
}

/// How the unfinished run `run_id` in `dir` goes on: from its own checkpoint (written by a job
/// stopped part-way), or over, saying why when there was a checkpoint it cannot use: one that
/// does not parse or is of another run, or one its last attempt failed to resume from (the
/// marker's `cause` is `checkpoint`), which would fail the same way on every rerun. A
/// checkpoint that is there but cannot be read is [`RunError::UnreadableRun`].
fn go_on(dir: &Path, run_id: &str) -> Result<GoOn, RunError> {
    let path = dir.join(layout::CHECKPOINT_JSON);
    let text = match std::fs::read(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(GoOn::Over(None)),
        Err(error) => return Err(RunError::UnreadableRun { path, error }),
    };
    // Read whole by `inspect_run` a moment ago (an unreadable one is redone before this).
    if let Ok(Some(exit)) = layout::read_record_typed::<ExitRecord>(&dir.join(EXIT_JSON)) {
        if exit.checkpoint_refused() {
            let reason = exit.reason.unwrap_or_else(|| format!("`{}` (no reason recorded)", path.display()));
            return Ok(GoOn::Over(Some(format!("its checkpoint could not be resumed: {reason}"))));
        }
    }
    let unusable = |why: String| Ok(GoOn::Over(Some(format!("its checkpoint cannot be resumed from: bad `{}`: {why}", path.display()))));
    let ck: serde_json::Value = match serde_json::from_slice(&text) {
        Ok(ck) => ck,
        Err(e) => return unusable(e.to_string()),
    };
    if ck["run_id"] != run_id {
        return unusable(format!("it is not the checkpoint of run {run_id} (run_id {})", ck["run_id"]));
    }
    match ck["iteration"].as_u64() {
        Some(iteration) => Ok(GoOn::Resume(iteration)),
        None => unusable("no `iteration` in it".into()),
    }
}

/// Readies a checkpointed run to go on where it stopped: its files stay (the job loads the
/// checkpoint and rewrites the metrics from it), only the stop's `exit.json` goes, so nothing
/// reads the run as ended while it runs again. Returns the next attempt number.
fn resume_in_place(dir: &Path) -> Result<u32, RunError> {
    let exit = dir.join(EXIT_JSON);
    match std::fs::remove_file(&exit) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err("remove", &exit)(e)),
    }
    let entries = std::fs::read_dir(dir).map_err(io_err("read directory", dir))?;
    let mut last = 0;
    for entry in entries {
        let entry = entry.map_err(io_err("read directory", dir))?;
        if let Some(n) = attempt_number(&entry.file_name().to_string_lossy()) {
            last = last.max(n);
        }
    }
    Ok(last + 1)
}

/// The attempt number in an `attempt-<n>...` name.
pub(crate) fn attempt_number(name: &str) -> Option<u32> {
    let rest = name.strip_prefix("attempt-")?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// Moves every file of the last attempt into `attempt-<n>/`; returns the next attempt's number.
///
/// A `spec.json` alone is no attempt: it was prepared for a launch that never came (a sweep
/// stopped before the run's turn), so it stays, and the attempt it was written for is the
/// next one still. Archiving it made an `attempt-<n>/` of nothing on every rerun, and made
/// `--dry-run` call a run that never ran `redo`.
pub(crate) fn archive_partial(dir: &Path) -> Result<u32, RunError> {
    let entries = std::fs::read_dir(dir).map_err(io_err("read directory", dir))?;
    let mut last = 0;
    let mut partial = Vec::new();
    for entry in entries {
        let entry = entry.map_err(io_err("read directory", dir))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if super::job_lock::is_lock_file(std::ffi::OsStr::new(&name)) {
            // The locks stay where jobs look for them (and may be held by our caller right now).
            continue;
        }
        match attempt_number(&name) {
            Some(n) => last = last.max(n),
            None => partial.push(entry.path()),
        }
    }
    if partial.is_empty() || (partial.len() == 1 && partial[0].file_name() == Some(std::ffi::OsStr::new(SPEC_JSON))) {
        return Ok(last + 1);
    }
    // The files belong to attempt `last` (whose logs are beside them); if that folder already
    // exists (an earlier archive, then a crash before the next launch), take a fresh number.
    let mut archive_n = last.max(1);
    while dir.join(format!("attempt-{archive_n}")).exists() {
        archive_n += 1;
    }
    let archive = dir.join(format!("attempt-{archive_n}"));
    std::fs::create_dir(&archive).map_err(io_err("create directory", &archive))?;
    for path in partial {
        if let Some(name) = path.file_name() {
            let to = archive.join(name);
            std::fs::rename(&path, &to).map_err(io_err("move aside", &path))?;
        }
    }
    tracing::info!(dir = %dir.display(), archive = %archive.display(), "moved partial files of an unfinished run aside");
    Ok(archive_n + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(run_id: &str) -> JobSpec {
        serde_json::from_value(serde_json::json!({
            "format_version": 1, "run_id": run_id, "config_id": "c", "sweep": "s", "label": "l",
            "axes": {}, "run": {"seed": 1}, "params": {}, "plugin_path": "/x.so"
        }))
        .unwrap()
    }

    /// A run directory as a completed job leaves it (a minimal but whole Parquet frame).
    fn completed(dir: &Path, run_id: &str) {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join(SPEC_JSON), serde_json::to_vec(&spec(run_id)).unwrap()).unwrap();
        std::fs::write(dir.join(SUMMARY_JSON), format!(r#"{{"format_version":1,"run_id":"{run_id}"}}"#)).unwrap();
        let mut parquet = b"PAR1".to_vec();
        parquet.extend_from_slice(&[0u8; 16]);
        parquet.extend_from_slice(&16u32.to_le_bytes());
        parquet.extend_from_slice(b"PAR1");
        std::fs::write(dir.join(METRICS_PARQUET), parquet).unwrap();
        std::fs::write(dir.join(EXIT_JSON), format!(r#"{{"format_version":1,"run_id":"{run_id}","status":"completed"}}"#)).unwrap();
    }

    /// `--dry-run` says what the rerun does: each state of a run directory in turn.
    #[test]
    fn the_planned_action_follows_what_is_on_disk() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("r");
        assert_eq!(planned_action(&dir, &spec("r")), PlannedAction::New, "no directory");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(SPEC_JSON), serde_json::to_vec(&spec("r")).unwrap()).unwrap();
        assert_eq!(planned_action(&dir, &spec("r")), PlannedAction::New, "prepared, never launched");
        std::fs::write(dir.join("attempt-1.stderr.log"), "").unwrap();
        assert_eq!(planned_action(&dir, &spec("r")), PlannedAction::Redo, "launched, no checkpoint");
        std::fs::write(dir.join(layout::CHECKPOINT_JSON), r#"{"run_id":"r","iteration":315}"#).unwrap();
        assert_eq!(planned_action(&dir, &spec("r")), PlannedAction::Resume(315));
        std::fs::write(dir.join(layout::CHECKPOINT_JSON), r#"{"run_id":"other","iteration":315}"#).unwrap();
        assert_eq!(planned_action(&dir, &spec("r")), PlannedAction::Redo, "another run's checkpoint is none");
        completed(&dir, "r");
        assert_eq!(planned_action(&dir, &spec("r")), PlannedAction::Done);
        assert_eq!(
            [PlannedAction::Done, PlannedAction::Resume(1), PlannedAction::Redo, PlannedAction::New, PlannedAction::Live].map(PlannedAction::word),
            ["done", "resume", "redo", "new", "live"]
        );
    }

    /// Review finding (CLI contract 5): during a `drover run`, `--dry-run` called the runs
    /// its jobs were training `redo` or `new`. A run whose job holds its lock is `live`, read
    /// without taking the lock; a completed one stays `done`.
    #[test]
    fn a_run_whose_job_holds_its_lock_is_live() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("r");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(SPEC_JSON), serde_json::to_vec(&spec("r")).unwrap()).unwrap();
        std::fs::write(dir.join("attempt-1.stderr.log"), "").unwrap();
        assert_eq!(planned_action(&dir, &spec("r")), PlannedAction::Redo);
        // Held as a job holds it: a live process of this host whose command line names drover
        // (this test binary's does) and that holds the flock.
        let mut held = super::super::job_lock::try_lock(&dir).unwrap().expect("free");
        held.describe(&crate::lock::holder_text(std::process::id(), &[]));
        assert_eq!(planned_action(&dir, &spec("r")), PlannedAction::Live);
        assert!(super::super::job_lock::try_lock(&dir).unwrap().is_none(), "the dry run did not take it");
        drop(held);
        assert_eq!(planned_action(&dir, &spec("r")), PlannedAction::Redo, "the holder is gone");
        completed(&dir, "r");
        let _held = super::super::job_lock::try_lock(&dir).unwrap().expect("free");
        assert_eq!(planned_action(&dir, &spec("r")), PlannedAction::Done);
    }

    /// Review finding (CLI contract 6): a run that a stopped sweep prepared but never launched
    /// (its folder holds only `spec.json`) had that file moved to a new `attempt-<n>/` on every
    /// rerun, and `--dry-run` then called it `redo`, never launched as it was. Its folder is
    /// left as it is, it launches as the attempt it was prepared for, and it stays `new`.
    #[test]
    fn a_run_prepared_but_never_launched_is_not_archived() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("r");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(SPEC_JSON), serde_json::to_vec(&spec("r")).unwrap()).unwrap();
        for _ in 0..2 {
            let prepared = claimed(&dir, "r");
            assert_eq!((prepared.pending[0].attempt, prepared.redone.len()), (1, 0));
            assert!(!dir.join("attempt-1").exists(), "nothing archived");
            assert_eq!(planned_action(&dir, &spec("r")), PlannedAction::New, "the lock file left by the claim changes nothing");
        }
        // Launched once and failed: that attempt is archived; prepared again and not launched,
        // the run keeps the attempt number it was prepared for, with no folder of nothing.
        std::fs::write(dir.join("attempt-1.stderr.log"), "boom").unwrap();
        std::fs::write(dir.join(EXIT_JSON), r#"{"format_version":1,"run_id":"r","status":"failed","reason":"boom","finished_at":"1"}"#).unwrap();
        assert_eq!(claimed(&dir, "r").pending[0].attempt, 2);
        assert!(dir.join("attempt-1").join(EXIT_JSON).is_file() && dir.join("attempt-1").join(SPEC_JSON).is_file());
        assert_eq!(claimed(&dir, "r").pending[0].attempt, 2);
        assert!(!dir.join("attempt-2").exists(), "a spec.json alone is not an attempt");
        assert_eq!(planned_action(&dir, &spec("r")), PlannedAction::Redo, "it ran before");
    }

    #[test]
    fn a_completion_marker_over_damaged_files_is_not_trusted() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("r");
        completed(&dir, "r");
        assert_eq!(inspect_run(&dir, &spec("r")).expect("readable"), (RunState::Completed, None));

        let damage: [(&str, &[u8], &str); 5] = [
            (EXIT_JSON, b"{\"format_version\":1,", "unreadable"),
            (SUMMARY_JSON, b"garbage", "bad `"),
            (SUMMARY_JSON, br#"{"format_version":2,"run_id":"r"}"#, "unknown format_version 2"),
            (SUMMARY_JSON, br#"{"format_version":1,"run_id":"other"}"#, "not the summary of run r"),
            (METRICS_PARQUET, b"PAR1 half a file", "truncated or overwritten"),
        ];
        for (file, bytes, why) in damage {
            completed(&dir, "r");
            std::fs::write(dir.join(file), bytes).unwrap();
            let (state, problem) = inspect_run(&dir, &spec("r")).expect("readable");
            assert_eq!(state, RunState::Unfinished, "{file}: {bytes:?}");
            let problem = problem.unwrap_or_default();
            assert!(problem.contains(file) && problem.contains(why), "{file}: {problem}");
        }
        completed(&dir, "r");
        std::fs::remove_file(dir.join(METRICS_PARQUET)).unwrap();
        assert!(inspect_run(&dir, &spec("r")).expect("readable").1.is_some_and(|p| p.contains("missing")));
    }

    /// Review (crash consistency, item 3): any error reading `exit.json` (`EACCES`, `EIO`, NFS's
    /// `ESTALE`) made a completed run unfinished, so `drover run` moved its files to
    /// `attempt-<n>/` and trained it again. A file that is there but cannot be read now stops
    /// the rerun naming it, and the run is left as it is; only damaged content is redone.
    #[test]
    fn a_completed_run_whose_files_cannot_be_read_is_not_touched() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("r");
        // A link to /proc/self/mem in a file's place: reading it fails with EIO, as a failing
        // disk or NFS would (permissions do not stop a test run as root). Not for
        // `metrics.parquet`: that link's size is 0, which the frame check calls truncated before
        // it reads, and no file here has a size and fails its reads.
        for file in [EXIT_JSON, SPEC_JSON, SUMMARY_JSON] {
            completed(&dir, "r");
            std::fs::remove_file(dir.join(file)).unwrap();
            std::os::unix::fs::symlink("/proc/self/mem", dir.join(file)).unwrap();
            let err = inspect_run(&dir, &spec("r")).expect_err(file);
            let msg = err.to_string();
            assert!(matches!(err, RunError::UnreadableRun { .. }), "{file}: {err:?}");
            assert!(msg.starts_with(&format!("cannot read `{}`: ", dir.join(file).display())) && msg.ends_with("; not touching the run"), "{msg}");
            assert_eq!(planned_action(&dir, &spec("r")), PlannedAction::Unreadable, "{file}");
            let mut prepared = Prepared::default();
            claim(&mut prepared, dir.clone(), &spec("r"), 1).expect_err("the rerun stops");
            assert!(prepared.pending.is_empty() && prepared.redone.is_empty() && prepared.skipped.is_empty());
            assert!(!dir.join("attempt-1").exists() && dir.join(file).is_symlink(), "{file}: nothing was moved");
            std::fs::remove_file(dir.join(file)).unwrap();
        }
    }
    /// A run directory left by a job stopped part-way: `spec.json`, a log, a checkpoint at
    /// iteration 315 and the marker `exit` (JSON).
    fn stopped(dir: &Path, run_id: &str, exit: &serde_json::Value) {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join(SPEC_JSON), serde_json::to_vec(&spec(run_id)).unwrap()).unwrap();
        std::fs::write(dir.join("attempt-1.stderr.log"), "").unwrap();
        std::fs::write(dir.join(layout::CHECKPOINT_JSON), format!(r#"{{"format_version":2,"run_id":"{run_id}","iteration":315}}"#)).unwrap();
        std::fs::write(dir.join(EXIT_JSON), exit.to_string()).unwrap();
    }

    /// What `claim` does with the run in `dir`: the prepared lists, one run's worth.
    fn claimed(dir: &Path, run_id: &str) -> Prepared {
        let mut prepared = Prepared::default();
        assert!(claim(&mut prepared, dir.to_path_buf(), &spec(run_id), 1).expect("claimed"));
        prepared
    }

    /// Review (failure injection, D4): a run whose job failed to resume from its checkpoint
    /// (damaged, of an unknown format, not fitting the run) was resumed from it again on every
    /// `drover run`, and failed the same way for ever. Its marker's `cause` now says so, and
    /// the rerun starts it over, archiving its files and saying why.
    #[test]
    fn a_run_whose_resume_failed_on_its_checkpoint_starts_over() {
        let tmp = tempfile::tempdir().unwrap();
        let refused = "cannot resume from checkpoint `/r/checkpoint.json`: its engine state does not fit this run: buffer `params` has length 10, expected 9155";
        let typed = serde_json::json!({"format_version": 1, "run_id": "r", "status": "failed", "reason": refused, "finished_at": "1", "cause": "checkpoint"});
        // A marker from before `cause` was written for it says so in its reason alone.
        let untyped = serde_json::json!({"format_version": 1, "run_id": "r", "status": "failed", "reason": refused, "finished_at": "1", "cause": null});
        for marker in [typed, untyped] {
            let dir = tmp.path().join(format!("r{}", marker["cause"].is_null()));
            stopped(&dir, "r", &marker);
            assert_eq!(planned_action(&dir, &spec("r")), PlannedAction::Redo, "{marker}");
            let prepared = claimed(&dir, "r");
            assert_eq!(prepared.redone, [("r".to_string(), format!("its checkpoint could not be resumed: {refused}"))]);
            assert!(prepared.resumed.is_empty());
            assert_eq!(prepared.pending[0].attempt, 2);
            assert!(dir.join("attempt-1").join(layout::CHECKPOINT_JSON).is_file() && !dir.join(layout::CHECKPOINT_JSON).exists(), "kept aside");
        }
        // Any other failure keeps the checkpoint's work: the run resumes, as before.
        let dir = tmp.path().join("other");
        stopped(&dir, "r", &serde_json::json!({"format_version": 1, "run_id": "r", "status": "failed", "reason": "plugin `p`: NaN", "finished_at": "1", "cause": "error"}));
        assert_eq!(planned_action(&dir, &spec("r")), PlannedAction::Resume(315));
        assert_eq!(claimed(&dir, "r").resumed, [("r".to_string(), 315)]);
    }

    /// Review (version compatibility, 1): a checkpoint a newer drover-job wrote, met by an older
    /// one (mixed installs, a rollback), failed with `cause: checkpoint`, and the next `drover
    /// run` threw the good checkpoint away and retrained the run from iteration 1. A refusal of
    /// the format version alone (`checkpoint_format`, or the reason of a job from before it)
    /// resumes instead.
    #[test]
    fn a_checkpoint_of_another_release_is_resumed_not_thrown_away() {
        let tmp = tempfile::tempdir().unwrap();
        let path = "cannot resume from checkpoint `/r/checkpoint.json`: ";
        let markers = [
            (Some("checkpoint_format"), format!("{path}unknown format_version 4 (this drover-job reads 1, 2 and 3): another release of drover-job wrote it; ...")),
            (Some("checkpoint"), format!("{path}unknown format_version 4 (this drover-job reads 1, 2 and 3)")),
            (Some("checkpoint"), format!("{path}format_version Some(3), this drover-job reads 1 and 2")),
            (None, format!("{path}format_version Some(3), this drover-job reads 1 and 2")),
        ];
        for (i, (cause, reason)) in markers.iter().enumerate() {
            let dir = tmp.path().join(format!("r{i}"));
            stopped(&dir, "r", &serde_json::json!({"format_version": 1, "run_id": "r", "status": "failed", "reason": reason, "finished_at": "1", "cause": cause}));
            assert_eq!(planned_action(&dir, &spec("r")), PlannedAction::Resume(315), "{cause:?}: {reason}");
            let prepared = claimed(&dir, "r");
            assert_eq!((prepared.resumed, prepared.redone.len()), (vec![("r".to_string(), 315)], 0), "{reason}");
            assert!(dir.join(layout::CHECKPOINT_JSON).is_file(), "kept in place");
        }
        // Damage stays final: no version, one that is not a whole number, or one below those the
        // job reads (code review: `format_version 0` was resumed on every rerun).
        let damaged = [
            format!("{path}no format_version (this drover-job reads 1, 2 and 3)"),
            format!("{path}unknown format_version \"x\" (this drover-job reads 1, 2 and 3)"),
            format!("{path}unknown format_version 0 (this drover-job reads 1, 2 and 3)"),
            format!("{path}unknown format_version 2.5 (this drover-job reads 1, 2 and 3)"),
            format!("{path}format_version Some(0), this drover-job reads 1 and 2"),
        ];
        for reason in damaged {
            let dir = tmp.path().join("damaged");
            let _ = std::fs::remove_dir_all(&dir);
            stopped(&dir, "r", &serde_json::json!({"format_version": 1, "run_id": "r", "status": "failed", "reason": reason, "finished_at": "1", "cause": "checkpoint"}));
            assert_eq!(planned_action(&dir, &spec("r")), PlannedAction::Redo, "{reason}");
        }
    }

    /// Review (failure injection, D5): a stopped run whose `checkpoint.json` was damaged or of
    /// another run started over from iteration 0 without a word; it now says why, naming the
    /// file. A checkpoint that is there but cannot be read stops the rerun, as other files do.
    #[test]
    fn a_checkpoint_that_cannot_be_used_is_redone_naming_it() {
        let tmp = tempfile::tempdir().unwrap();
        let cancelled = serde_json::json!({"format_version": 1, "run_id": "r", "status": "cancelled", "reason": "stopped by SIGTERM", "finished_at": "1"});
        let cases: [(&str, &[u8]); 3] = [
            ("EOF while parsing", br#"{"format_version":2,"run_id":"r","iter"#),
            ("it is not the checkpoint of run r (run_id \"other\")", br#"{"format_version":2,"run_id":"other","iteration":315}"#),
            ("no `iteration` in it", br#"{"format_version":2,"run_id":"r"}"#),
        ];
        for (i, (why, bytes)) in cases.into_iter().enumerate() {
            let dir = tmp.path().join(format!("r{i}"));
            stopped(&dir, "r", &cancelled);
            let checkpoint = dir.join(layout::CHECKPOINT_JSON);
            std::fs::write(&checkpoint, bytes).unwrap();
            assert_eq!(planned_action(&dir, &spec("r")), PlannedAction::Redo, "{why}");
            let prepared = claimed(&dir, "r");
            let said = &prepared.redone[0].1;
            assert!(said.starts_with(&format!("its checkpoint cannot be resumed from: bad `{}`: ", checkpoint.display())) && said.contains(why), "{said}");
        }
        let dir = tmp.path().join("unreadable");
        stopped(&dir, "r", &cancelled);
        std::fs::remove_file(dir.join(layout::CHECKPOINT_JSON)).unwrap();
        std::fs::create_dir(dir.join(layout::CHECKPOINT_JSON)).unwrap();
        assert_eq!(planned_action(&dir, &spec("r")), PlannedAction::Unreadable);
        claim(&mut Prepared::default(), dir.clone(), &spec("r"), 1).expect_err("the rerun stops");
        assert!(!dir.join("attempt-1").exists(), "nothing was moved");
    }

    /// Review (failure injection, D5): a completed run whose `spec.json` was damaged or gone
    /// was retrained without a word. Its results check out and are of its run id (a hash of the
    /// configuration), so it is kept and its spec written again from the plan, said in
    /// `repaired`; a spec that parses but holds another configuration is redone, saying so.
    #[test]
    fn a_completed_run_with_a_damaged_spec_is_kept_and_its_spec_rewritten() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("r");
        let spec_path = dir.join(SPEC_JSON);
        for (damage, why) in [(Some(&b"x"[..]), "unreadable `"), (None, "is missing")] {
            completed(&dir, "r");
            match damage {
                Some(bytes) => std::fs::write(&spec_path, bytes).unwrap(),
                None => std::fs::remove_file(&spec_path).unwrap(),
            }
            let (state, note) = inspect_run(&dir, &spec("r")).expect("readable");
            assert_eq!(state, RunState::Completed);
            assert!(note.as_deref().is_some_and(|n| n.contains(&spec_path.display().to_string()) && n.contains(why)), "{note:?}");
            assert_eq!(planned_action(&dir, &spec("r")), PlannedAction::Done);
            let prepared = claimed(&dir, "r");
            assert_eq!((prepared.skipped.len(), prepared.repaired.len(), prepared.pending.len()), (1, 1, 0));
            assert!(!dir.join("attempt-1").exists());
            let back: JobSpec = layout::read_record(&spec_path).unwrap().expect("rewritten");
            assert!(back.same_config(&spec("r")));
            assert_eq!(inspect_run(&dir, &spec("r")).expect("readable"), (RunState::Completed, None));
        }
        completed(&dir, "r");
        let mut edited = spec("r");
        edited.run.insert("seed".into(), 2.into());
        std::fs::write(&spec_path, serde_json::to_vec(&edited).unwrap()).unwrap();
        let (state, why) = inspect_run(&dir, &spec("r")).expect("readable");
        assert_eq!(state, RunState::Unfinished);
        assert!(why.is_some_and(|w| w.starts_with("marked completed but not trusted: `") && w.contains("holds another configuration")));
    }

    /// Review (failure injection, D12): an `exit.json` of another run saying completed was
    /// trusted (only `summary.json`'s run id was checked), and every damaged marker was called
    /// "marked completed but not trusted", a cancelled run's too.
    #[test]
    fn a_marker_of_another_run_is_not_trusted_and_reasons_say_what_the_marker_was() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("r");
        completed(&dir, "r");
        std::fs::write(dir.join(EXIT_JSON), r#"{"format_version":1,"run_id":"other","status":"completed"}"#).unwrap();
        let (state, why) = inspect_run(&dir, &spec("r")).expect("readable");
        assert_eq!(state, RunState::Unfinished);
        let why = why.unwrap_or_default();
        assert!(why.starts_with("marked completed but not trusted: bad `") && why.contains("exit.json`: it is not the marker of run r (run_id \"other\")"), "{why}");
        std::fs::write(dir.join(EXIT_JSON), r#"{"format_version":1,"run_id":"other","status":"cancelled"}"#).unwrap();
        let why = inspect_run(&dir, &spec("r")).expect("readable").1.unwrap_or_default();
        assert!(why.starts_with("bad `") && why.contains("not the marker of run r"), "{why}");
        std::fs::write(dir.join(EXIT_JSON), "garbage").unwrap();
        let why = inspect_run(&dir, &spec("r")).expect("readable").1.unwrap_or_default();
        assert!(why.starts_with("unreadable `") && why.contains("exit.json`: "), "{why}");
    }
}
