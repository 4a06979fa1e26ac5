//! Preparing a results directory: manifest, `spec.json` per run, skip finished runs, archive partial ones.

use std::path::{Path, PathBuf};

use crate::error::RunError;
use crate::layout::{self, ExitRecord, ExitStatus, JobSpec, SweepManifest, EXIT_JSON, SPEC_JSON, SWEEP_JSON, SWEEP_TOML};
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
}

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

/// Reads (only) the state of one run directory against the spec it should have.
pub fn run_state(dir: &Path, spec: &JobSpec) -> RunState {
    if !dir.exists() {
        return RunState::New;
    }
    let exit: Option<ExitRecord> = layout::read_record(&dir.join(EXIT_JSON)).ok().flatten();
    let old: Option<JobSpec> = layout::read_record(&dir.join(SPEC_JSON)).ok().flatten();
    match (exit, old) {
        (Some(exit), Some(old)) if exit.status == ExitStatus::Completed && old.same_config(spec) => RunState::Completed,
        _ => RunState::Unfinished,
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
    };
    let manifest_path = root.join(SWEEP_JSON);
    layout::write_atomic(&manifest_path, &to_json(&manifest, &manifest_path)?).map_err(io_err("write", &manifest_path))
}

/// Writes `sweep.toml`, `sweep.json` and each run's `spec.json`; decides which runs to launch.
///
/// Finished runs are never touched. Unfinished ones have their files moved into
/// `attempt-<n>/` first, so nothing from an earlier attempt is lost.
pub fn prepare(plan: &Plan) -> Result<Prepared, RunError> {
    let runs_dir = plan.results.runs_dir();
    std::fs::create_dir_all(&runs_dir).map_err(io_err("create directory", &runs_dir))?;
    // Absolute paths, so the job and its logs do not depend on the working directory.
    let root = plan.results.root().canonicalize().map_err(io_err("resolve", plan.results.root()))?;
    let results = layout::ResultsDir::new(&root);

    write_sweep_files(plan, &root)?;

    let mut prepared = Prepared::default();
    for run in &plan.runs {
        let spec = plan.job_spec(run);
        let dir = results.run_dir(&spec.run_id);
        let mut attempt = 1;
        match run_state(&dir, &spec) {
            RunState::Completed => {
                prepared.skipped.push(spec.run_id);
                continue;
            }
            RunState::Unfinished => attempt = archive_partial(&dir)?,
            RunState::New => std::fs::create_dir_all(&dir).map_err(io_err("create directory", &dir))?,
        }
        let spec_path = dir.join(SPEC_JSON);
        layout::write_atomic(&spec_path, &to_json(&spec, &spec_path)?).map_err(io_err("write", &spec_path))?;
        let ranks = run.run.get("ranks").and_then(serde_json::Value::as_u64).map_or(1, |r| r as u32);
        prepared.pending.push(PendingRun { run_id: spec.run_id, label: spec.label, dir, spec_path, attempt, ranks });
    }
    Ok(prepared)
}

/// The attempt number in an `attempt-<n>...` name.
fn attempt_number(name: &str) -> Option<u32> {
    let rest = name.strip_prefix("attempt-")?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// Moves every file of the last attempt into `attempt-<n>/`; returns the next attempt's number.
pub(crate) fn archive_partial(dir: &Path) -> Result<u32, RunError> {
    let entries = std::fs::read_dir(dir).map_err(io_err("read directory", dir))?;
    let mut last = 0;
    let mut partial = Vec::new();
    for entry in entries {
        let entry = entry.map_err(io_err("read directory", dir))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        match attempt_number(&name) {
            Some(n) => last = last.max(n),
            None => partial.push(entry.path()),
        }
    }
    if partial.is_empty() {
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
