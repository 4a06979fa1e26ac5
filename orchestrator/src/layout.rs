//! The results directory and its versioned JSON records (docs/design/results-layout.md).
//!
//! These types are the on-disk boundary with `drover-job`; they are separate from the config
//! types (`RunSpec`) on purpose, so the file format changes only when this file does.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::config::RunSpec;

/// The format version of every JSON record written or understood here.
pub const FORMAT_VERSION: u32 = 1;

/// `sweep.toml`: copy of the sweep file as given.
pub const SWEEP_TOML: &str = "sweep.toml";
/// `sweep.json`: the manifest.
pub const SWEEP_JSON: &str = "sweep.json";
/// `spec.json`: the one input of `drover-job`.
pub const SPEC_JSON: &str = "spec.json";
/// `exit.json`: the exit marker, written last by the job.
pub const EXIT_JSON: &str = "exit.json";
/// `summary.json`: the job's final summary.
pub const SUMMARY_JSON: &str = "summary.json";
/// `metrics.parquet`: all metrics rows, written at the end of the job.
pub const METRICS_PARQUET: &str = "metrics.parquet";

/// Paths inside one results directory.
#[derive(Debug, Clone)]
pub struct ResultsDir {
    root: PathBuf,
}

impl ResultsDir {
    /// A results directory rooted at `root` (not created here).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        ResultsDir { root: root.into() }
    }
    /// The root.
    pub fn root(&self) -> &Path {
        &self.root
    }
    /// `runs/`.
    pub fn runs_dir(&self) -> PathBuf {
        self.root.join("runs")
    }
    /// `runs/<run_id>/`.
    pub fn run_dir(&self, run_id: &str) -> PathBuf {
        self.runs_dir().join(run_id)
    }
    /// `tables/`.
    pub fn tables_dir(&self) -> PathBuf {
        self.root.join("tables")
    }
}

/// `spec.json` (format_version 1): everything `drover-job` needs to run one run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobSpec {
    /// Always `FORMAT_VERSION` when written by this version.
    pub format_version: u32,
    /// The run id (16 hex digits).
    pub run_id: String,
    /// The config id (16 hex digits).
    pub config_id: String,
    /// The sweep name.
    pub sweep: String,
    /// The configuration label.
    pub label: String,
    /// The axis values of this run.
    pub axes: BTreeMap<String, Value>,
    /// The resolved `[run]` table, seed included.
    pub run: Map<String, Value>,
    /// The plugin parameters, verbatim.
    pub params: Map<String, Value>,
    /// Absolute path of the plugin `.so`.
    pub plugin_path: PathBuf,
}

impl JobSpec {
    /// The record for `run` of sweep `sweep`, with its resolved plugin file.
    pub fn new(run: &RunSpec, sweep: &str, plugin_path: &Path) -> Self {
        JobSpec {
            format_version: FORMAT_VERSION,
            run_id: run.run_id.to_string(),
            config_id: run.config_id.to_string(),
            sweep: sweep.to_string(),
            label: run.label.clone(),
            axes: run.axes.clone(),
            run: run.run.clone(),
            params: run.params.clone(),
            plugin_path: plugin_path.to_path_buf(),
        }
    }

    /// Whether `other` describes the same training (run and params); a moved plugin file, a
    /// renamed sweep or a new label do not make a finished run stale.
    pub fn same_config(&self, other: &JobSpec) -> bool {
        self.run_id == other.run_id && self.run == other.run && self.params == other.params
    }
}

/// `sweep.json` (format_version 1): the manifest of the last `drover run` on this directory.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SweepManifest {
    /// Always `FORMAT_VERSION` when written by this version.
    pub format_version: u32,
    /// Sweep name.
    pub name: String,
    /// The sweep file path as given.
    pub source: PathBuf,
    /// Every run id of the sweep, in expansion order.
    pub runs: Vec<String>,
    /// Unix seconds, as a string (like `exit.json`'s `finished_at`).
    pub created_at: String,
}

/// Final status of a run in `exit.json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExitStatus {
    /// Trained to the end (or to success with `stop_at_success`).
    Completed,
    /// Stopped by an error.
    Failed,
    /// Stopped by a signal.
    Cancelled,
}

/// `exit.json` (format_version 1), written last by the job.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExitRecord {
    /// Format version.
    pub format_version: u32,
    /// The run id.
    pub run_id: String,
    /// How the run ended.
    pub status: ExitStatus,
    /// Why it did not complete, if it did not.
    #[serde(default)]
    pub reason: Option<String>,
    /// Unix seconds (a string per the layout doc; any JSON value is tolerated when reading).
    #[serde(default)]
    pub finished_at: Value,
}

/// Reads a versioned JSON record; `Ok(None)` when the file does not exist.
pub fn read_record<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<Option<T>, String> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.to_string()),
    };
    let value: Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
    match value.get("format_version").and_then(Value::as_u64) {
        Some(v) if v == u64::from(FORMAT_VERSION) => {}
        Some(v) => return Err(format!("unknown format_version {v} (this drover reads {FORMAT_VERSION})")),
        None => return Err("no format_version".into()),
    }
    serde_json::from_value(value).map(Some).map_err(|e| e.to_string())
}

/// Writes `bytes` to `path` through a temporary file and a rename, so readers never see half a file.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

/// Now, in unix seconds, as a string.
pub fn unix_now() -> String {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs().to_string())
        .unwrap_or_else(|_| "0".into())
}
