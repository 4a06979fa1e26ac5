//! The results directory and its versioned JSON records (docs/design/results-layout.md).
//!
//! These types are the on-disk boundary with `drover-job`; they are separate from the config
//! types (`RunSpec`) on purpose, so the file format changes only when this file does.

use std::collections::BTreeMap;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::config::{RunId, RunSpec};
pub use crate::error::RecordError;

/// The format version of every JSON record written or understood here.
pub const FORMAT_VERSION: u32 = 1;

/// `sweep.toml`: copy of the sweep file as given.
pub const SWEEP_TOML: &str = "sweep.toml";
/// `sweep.json`: the manifest.
pub const SWEEP_JSON: &str = "sweep.json";
/// The folder of the run directories, `runs/<run_id>/`.
pub const RUNS_DIR: &str = "runs";
/// `spec.json`: the one input of `drover-job`.
pub const SPEC_JSON: &str = "spec.json";
/// `exit.json`: the exit marker, written last by the job.
pub const EXIT_JSON: &str = "exit.json";
/// `summary.json`: the job's final summary.
pub const SUMMARY_JSON: &str = "summary.json";
/// `metrics.parquet`: all metrics rows, written when the run completes (a stopped run has none).
pub const METRICS_PARQUET: &str = "metrics.parquet";
/// `checkpoint.json`: the job's state at a stop part-way, which the next attempt resumes.
pub const CHECKPOINT_JSON: &str = "checkpoint.json";
/// `interruptions.jsonl`: one line per checkpointed stop (`reason`, `iteration`), by the job.
pub const INTERRUPTIONS_JSONL: &str = "interruptions.jsonl";

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
        self.root.join(RUNS_DIR)
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
            label: run.label.to_string(),
            axes: (*run.axes).clone(),
            run: run.run_table(),
            params: (*run.params).clone(),
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
    /// The `DROVER_*` variables and `--set` arguments that changed the sweep file's values, as
    /// typed (absent when none; older manifests have none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub overrides: Vec<String>,
}

impl SweepManifest {
    /// The run ids, each checked by [`RunId::parse`].
    ///
    /// Ids read from disk become paths (`runs/<id>/`) and parts of Slurm's input, so a damaged or
    /// edited manifest is refused, naming the bad entry, rather than followed.
    pub fn run_ids(&self) -> Result<Vec<RunId>, String> {
        self.runs
            .iter()
            .enumerate()
            .map(|(i, id)| {
                RunId::parse(id).ok_or_else(|| {
                    format!("`runs[{i}]` is {id:?}, not a run id (16 lowercase hex digits): the file is damaged or was edited")
                })
            })
            .collect()
    }
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
    /// The retry budget whose spending failed the run (`max_timeouts` or `max_preemptions`),
    /// written by `drover-job`; absent otherwise, and in markers from before it was written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spent_budget: Option<String>,
    /// Why a failed run failed, as `drover-job` says it (`disk_full`, `checkpoint`, `budget_max_timeouts`,
    /// `budget_max_preemptions`, `error`; `drover_job::summary::cause`); absent in markers from
    /// before it and in those drover writes itself, which are judged by their `reason` text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause: Option<String>,
}

/// The `cause` of a marker whose results disk was full (`drover_job::summary::cause::DISK_FULL`).
pub const CAUSE_DISK_FULL: &str = "disk_full";
/// The `cause` of a marker whose job could not resume from the run's checkpoint
/// (`drover_job::summary::cause::CHECKPOINT`).
pub const CAUSE_CHECKPOINT: &str = "checkpoint";
/// The `cause` of a marker whose job did not read the checkpoint's (later) format: another
/// release wrote it (`drover_job::summary::cause::CHECKPOINT_FORMAT`).
pub const CAUSE_CHECKPOINT_FORMAT: &str = "checkpoint_format";
/// The prefix of a `cause` naming a spent retry budget: `budget_max_timeouts`, `budget_max_preemptions`.
pub const CAUSE_BUDGET_PREFIX: &str = "budget_";

impl ExitRecord {
    /// The retry budget whose spending failed the run: the marker's `cause` (`budget_<key>`) or
    /// `spent_budget`, or for a marker from before both fields, the budget `drover-job` names in
    /// its reason (`... (max_timeouts = 1) ...`), so a sweep that outlives an upgrade judges its
    /// old failures alike.
    pub fn spent_budget(&self) -> Option<&str> {
        if self.status != ExitStatus::Failed {
            return None;
        }
        if let Some(cause) = self.cause.as_deref() {
            return cause.strip_prefix(CAUSE_BUDGET_PREFIX);
        }
        if let Some(budget) = self.spent_budget.as_deref() {
            return Some(budget);
        }
        let reason = self.reason.as_deref()?;
        ["max_timeouts", "max_preemptions"].into_iter().find(|b| reason.contains(&format!("({b} = ")))
    }

    /// Whether the run failed because its checkpoint could not be resumed from, for good (damaged,
    /// of another run): the marker's `cause`, or for a marker without one, its reason as
    /// `drover-job` words that failure (`cannot resume from checkpoint `...`: ...`). Not when the
    /// job only did not know the checkpoint's format ([`Self::checkpoint_of_another_release`]).
    pub fn checkpoint_refused(&self) -> bool {
        if self.status != ExitStatus::Failed || self.checkpoint_of_another_release() {
            return false;
        }
        match self.cause.as_deref() {
            Some(cause) => cause == CAUSE_CHECKPOINT,
            None => self.reason.as_deref().is_some_and(|r| r.starts_with("cannot resume from checkpoint `")),
        }
    }

    /// Whether the run failed because its job did not read the checkpoint's format version: a
    /// drover-job of another release (an older one on some nodes, a rollback) met a checkpoint
    /// a newer one wrote. That checkpoint is good, so the next `drover run` resumes from it
    /// rather than starting over. The marker's `cause` (`checkpoint_format`), or for markers
    /// that drover-jobs before it wrote (`cause` `checkpoint` or none), its reason naming a
    /// version above every one the job said it reads (`unknown format_version 4 (this
    /// drover-job reads 1, 2 and 3)`, older `format_version Some(3), this drover-job reads 1
    /// and 2`); a version below them, or not a whole number, is damage.
    pub fn checkpoint_of_another_release(&self) -> bool {
        if self.status != ExitStatus::Failed {
            return false;
        }
        match self.cause.as_deref() {
            Some(CAUSE_CHECKPOINT_FORMAT) => true,
            Some(CAUSE_CHECKPOINT) | None => self.reason.as_deref().is_some_and(later_format_refused),
            Some(_) => false,
        }
    }

    /// Whether the run failed because the results disk was full: the marker's `cause`, or for a
    /// marker without one (written before it, or by drover itself), its reason ending in the OS
    /// error of a full disk or quota (`(os error 28)`, `(os error 122)`: an `io::Error` printed
    /// on Linux), since the job's error reached drover only as text.
    pub fn disk_full(&self) -> bool {
        if self.status != ExitStatus::Failed {
            return false;
        }
        match self.cause.as_deref() {
            Some(cause) => cause == CAUSE_DISK_FULL,
            None => self.reason.as_deref().is_some_and(says_disk_full),
        }
    }
}

/// Whether a checkpoint refusal's reason, as drover-jobs from before `checkpoint_format` word
/// it, names a format version above every one that job reads: `cannot resume from checkpoint
/// `...`: unknown format_version 4 (this drover-job reads 1, 2 and 3)`, or the older
/// `... format_version Some(3), this drover-job reads 1 and 2`.
fn later_format_refused(reason: &str) -> bool {
    let Some(rest) = reason.strip_prefix("cannot resume from checkpoint `") else { return false };
    let leading_number = |s: &str| -> Option<u64> {
        let digits: String = s.chars().take_while(char::is_ascii_digit).collect();
        // `2.5`: not a whole number, so not a version any release writes.
        if s[digits.len()..].starts_with('.') {
            return None;
        }
        digits.parse().ok()
    };
    let found = ["unknown format_version ", "format_version Some("].iter().find_map(|key| rest.split(key).nth(1).and_then(leading_number));
    let reads = rest.split("this drover-job reads ").nth(1).map(|list| {
        let list = list.split([')', ';']).next().unwrap_or_default();
        list.split([',', ' ']).filter_map(|w| w.parse::<u64>().ok()).max()
    });
    matches!((found, reads), (Some(found), Some(Some(newest))) if found > newest)
}

/// Whether a failure reason (an `anyhow` chain ending in an `io::Error`) names a full disk.
pub(crate) fn says_disk_full(reason: &str) -> bool {
    [libc::ENOSPC, libc::EDQUOT].iter().any(|code| reason.contains(&format!("(os error {code})")))
}

/// Reads a versioned JSON record; `Ok(None)` when the file does not exist, else the reason as
/// text. [`read_record_typed`] tells a read fault from damaged content; prefer it wherever
/// the two lead to different actions.
pub fn read_record<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<Option<T>, String> {
    read_record_typed(path).map_err(|e| e.to_string())
}

/// Reads a versioned JSON record; `Ok(None)` when the file does not exist.
///
/// [`RecordError::Io`] is a fault reading a file that is there (`EACCES`, `EIO`, NFS's
/// `ESTALE`): nothing is known of its content, so callers must not take it for a damaged or
/// missing record (a completed run would be retrained).
pub fn read_record_typed<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<Option<T>, RecordError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        // A file in place of a folder on the way (`ENOTDIR`) leaves no record there either.
        Err(e) if matches!(e.kind(), io::ErrorKind::NotFound | io::ErrorKind::NotADirectory) => return Ok(None),
        // Not UTF-8, or a directory where the record belongs: damaged content, not a read fault.
        Err(e) if matches!(e.kind(), io::ErrorKind::InvalidData | io::ErrorKind::IsADirectory) => {
            return Err(RecordError::Parse(serde_json::Error::io(e)))
        }
        Err(e) => return Err(RecordError::Io(e)),
    };
    let value: Value = serde_json::from_str(&text).map_err(RecordError::Parse)?;
    match value.get("format_version").and_then(Value::as_u64) {
        Some(v) if v == u64::from(FORMAT_VERSION) => {}
        Some(found) => return Err(RecordError::Version { found, known: FORMAT_VERSION }),
        None => return Err(RecordError::NoVersion),
    }
    serde_json::from_value(value).map(Some).map_err(RecordError::Parse)
}

/// Writes `bytes` to `path` crash-consistently: `<path>.tmp` is written and fsynced, renamed over
/// `path`, then the directory is fsynced (the protocol of `drover-job`'s `fsio.rs`).
///
/// Readers never see half a file, and after a crash or a power cut `path` holds either its old
/// content or all of `bytes`: without the first fsync, ext4's delayed allocation can make the
/// rename durable before the data, leaving an empty file under the final name; without the
/// second, the rename itself can be lost. On failure no `.tmp` file is left behind. Errors are
/// the bare `io::Error`; callers name the path.
///
/// `drover-job` keeps its own copy of this protocol (`jobs/src/fsio.rs`; the two crates share no
/// dependency). Both follow the same rules, and a change to one is made to the other: the
/// temporary file is `<name>.tmp` beside the target, it is removed when the write or the rename
/// fails, and `EINVAL` from fsync on a directory is ignored ([`sync_parent_dir`]).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_replacing(path, bytes, true)
}

/// [`write_atomic`] without the fsyncs: readers never see half a file, but a power cut may
/// leave `path` empty. Only for a run's `spec.json` at launch, written once per run in a loop
/// that fsyncs would slow by a millisecond per run locally and far more on NFS or Lustre: a
/// run that is not done gets its spec rewritten by the next `drover run`, and `drover-job`
/// makes it durable before it writes the completed marker that vouches for it.
pub fn write_atomic_unsynced(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_replacing(path, bytes, false)
}

fn write_replacing(path: &Path, bytes: &[u8], durable: bool) -> io::Result<()> {
    use std::io::Write;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    // Never through a link planted at the temporary name (it would truncate the link's target),
    // and never into a file with other names: opened without `O_TRUNC`, checked, then emptied.
    let opened = crate::lock::open_regular(&tmp, std::fs::OpenOptions::new().write(true).create(true).truncate(false));
    let written = opened.and_then(|mut file| {
        crate::lock::refuse_hard_links(&tmp, &file)?;
        file.set_len(0)?;
        file.write_all(bytes)?;
        if durable {
            file.sync_all()?;
        }
        Ok(())
    });
    if let Err(e) = written.and_then(|()| std::fs::rename(&tmp, path)) {
        // A full disk must not also leave a stray partial file; a failed create left none. A
        // link or special file that was refused is left for the user to see and remove.
        if std::fs::symlink_metadata(&tmp).is_ok_and(|m| m.file_type().is_file() && m.nlink() == 1) {
            let _ = std::fs::remove_file(&tmp);
        }
        return Err(e);
    }
    if durable {
        sync_parent_dir(path)?;
    }
    Ok(())
}

/// Fsyncs the directory holding `path`, which makes a rename into it durable.
///
/// `EINVAL` is ignored: some filesystems (FUSE, some network mounts) cannot fsync a directory,
/// and the rename is done all the same (PostgreSQL's `fsync_fname` makes the same exception).
fn sync_parent_dir(path: &Path) -> io::Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    match std::fs::File::open(dir).and_then(|d| d.sync_all()) {
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Ok(()),
        other => other,
    }
}

/// For a folder given where a results directory was expected: the results directories right
/// inside it (`results/` holds one per sweep), as `; it holds the results directories ...`,
/// or nothing when it holds none.
pub fn results_inside_hint(dir: &Path) -> String {
    const SHOWN: usize = 5;
    let Ok(entries) = std::fs::read_dir(dir) else { return String::new() };
    let mut inside: Vec<PathBuf> = entries.filter_map(Result::ok).map(|e| e.path()).filter(|p| p.join(SWEEP_JSON).is_file()).collect();
    if inside.is_empty() {
        return String::new();
    }
    inside.sort();
    let more = inside.len().saturating_sub(SHOWN);
    let names: Vec<String> = inside.iter().take(SHOWN).map(|p| format!("`{}`", p.display())).collect();
    let more = if more > 0 { format!(" and {more} more") } else { String::new() };
    format!("; it holds the results directories {}{more}", names.join(", "))
}

/// Now, in unix seconds, as a string.
pub fn unix_now() -> String {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs().to_string())
        .unwrap_or_else(|_| "0".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> =
            std::fs::read_dir(dir).expect("read dir").map(|e| e.expect("entry").file_name().to_string_lossy().into_owned()).collect();
        names.sort();
        names
    }

    #[test]
    fn manifest_run_ids_refuse_anything_but_16_lowercase_hex_digits() {
        let mut manifest = SweepManifest {
            format_version: FORMAT_VERSION,
            name: "s".into(),
            source: "s.toml".into(),
            runs: vec!["0123456789abcdef".into(), "44136fa355b3678a".into()],
            created_at: "0".into(),
            overrides: Vec::new(),
        };
        let ids = manifest.run_ids().expect("valid ids");
        assert_eq!(ids.iter().map(RunId::as_str).collect::<Vec<_>>(), manifest.runs);
        for bad in ["../../x", "a b", "0123456789ABCDEF", "/etc/passwd", "0123456789abcde", ""] {
            manifest.runs = vec!["0123456789abcdef".into(), bad.into()];
            let err = manifest.run_ids().expect_err(bad);
            assert!(err.starts_with(&format!("`runs[1]` is {bad:?}, not a run id")), "{err}");
        }
    }

    #[test]
    fn write_atomic_writes_and_replaces_whole_files_leaving_no_tmp() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(SPEC_JSON);
        write_atomic(&path, b"{\"first\": 1}").expect("first write");
        assert_eq!(std::fs::read(&path).expect("read"), b"{\"first\": 1}");
        // A stale `.tmp` from a crash mid-write is overwritten, not appended to, and consumed.
        std::fs::write(dir.path().join("spec.json.tmp"), b"half a file from a crash, longer than the next write").expect("stale");
        write_atomic(&path, b"second").expect("replace");
        assert_eq!(std::fs::read(&path).expect("read"), b"second");
        write_atomic(&path, b"").expect("empty content");
        assert_eq!(std::fs::read(&path).expect("read"), b"");
        assert_eq!(names(dir.path()), [SPEC_JSON]);
        // The unsynced variant replaces whole files the same way.
        std::fs::write(dir.path().join("spec.json.tmp"), b"stale").expect("stale");
        write_atomic_unsynced(&path, b"third").expect("unsynced replace");
        assert_eq!(std::fs::read(&path).expect("read"), b"third");
        assert_eq!(names(dir.path()), [SPEC_JSON]);
    }

    /// Security review F1: the temporary file was created with `File::create`, which follows a
    /// symbolic link planted at `<name>.tmp` and truncates its target.
    #[test]
    fn write_atomic_never_writes_through_a_planted_link_at_its_temporary_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let canary = dir.path().join("canary.txt");
        std::fs::write(&canary, b"precious").expect("canary");
        let path = dir.path().join(SPEC_JSON);
        std::os::unix::fs::symlink(&canary, dir.path().join("spec.json.tmp")).expect("link");
        for write in [write_atomic, write_atomic_unsynced] {
            let err = write(&path, b"{}").expect_err("a link is refused").to_string();
            assert!(err.contains("spec.json.tmp` is a symbolic link; drover does not write through links in a results directory"), "{err}");
            assert_eq!(std::fs::read(&canary).expect("read"), b"precious");
            assert!(!path.exists());
        }
        // A hard link to a file elsewhere is refused too: truncating it would clobber that file.
        std::fs::remove_file(dir.path().join("spec.json.tmp")).expect("unlink");
        std::fs::hard_link(&canary, dir.path().join("spec.json.tmp")).expect("hard link");
        let err = write_atomic(&path, b"{}").expect_err("a hard link is refused").to_string();
        assert!(err.contains("has other hard links"), "{err}");
        assert_eq!(std::fs::read(&canary).expect("read"), b"precious");
    }

    /// Review (crash consistency, item 3): `read_record` flattened every failure to a string,
    /// so its callers took a read fault (EACCES, EIO, ESTALE) for damaged content.
    #[test]
    fn read_record_typed_tells_a_read_fault_from_damaged_content() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(EXIT_JSON);
        assert!(matches!(read_record_typed::<Value>(&path), Ok(None)), "missing is no error");
        // A read fault: /proc/self/mem at offset 0 answers EIO (address 0 is never mapped).
        let err = read_record_typed::<Value>(Path::new("/proc/self/mem")).expect_err("EIO");
        assert!(matches!(err, RecordError::Io(_)) && !err.is_damaged_content(), "{err:?}");
        // A directory where the record belongs is damaged, not a passing fault; a file on the
        // way (ENOTDIR) leaves no record, as a missing one.
        std::fs::create_dir(&path).expect("mkdir");
        let err = read_record_typed::<Value>(&path).expect_err("a directory is no record");
        assert!(err.is_damaged_content(), "{err:?}");
        std::fs::remove_dir(&path).expect("rmdir");
        std::fs::write(dir.path().join("file"), b"x").expect("file");
        assert!(matches!(read_record_typed::<Value>(&dir.path().join("file/exit.json")), Ok(None)));
        for (bytes, message) in [
            (&b"{"[..], "EOF while parsing an object at line 1 column 1"),
            (b"\xff\xfe", "stream did not contain valid UTF-8"),
            (br#"{"format_version":99}"#, "unknown format_version 99 (this drover reads 1)"),
            (br#"{"run_id":"x"}"#, "no format_version"),
            (br#"{"format_version":1,"status":"bogus"}"#, "unknown variant `bogus`"),
        ] {
            std::fs::write(&path, bytes).expect("write");
            let err = read_record_typed::<ExitRecord>(&path).expect_err(message);
            assert!(err.is_damaged_content() && err.to_string().contains(message), "{err:?}");
            // The old signature gives the same words.
            assert_eq!(read_record::<ExitRecord>(&path).expect_err(message), err.to_string());
        }
    }

    /// Review (crash consistency, item 5): a full disk was found by searching the job's reason
    /// for `(os error 28)` and a spent budget for `(max_timeouts = `. The marker's `cause` is
    /// read first; the text only for markers without one (older jobs, drover's own markers).
    #[test]
    fn the_markers_cause_decides_before_its_reason_text() {
        let marker = |status: &str, reason: &str, cause: Option<&str>| -> ExitRecord {
            let mut v = serde_json::json!({"format_version": 1, "run_id": "r", "status": status, "reason": reason, "finished_at": "1", "unknown_later_field": 3});
            if let Some(c) = cause {
                v["cause"] = c.into();
            }
            serde_json::from_value(v).expect("unknown fields are ignored")
        };
        let enospc = format!("cannot write `m`: {}", io::Error::from_raw_os_error(libc::ENOSPC));
        // A typed cause wins over the words.
        assert!(marker("failed", "plugin error", Some("disk_full")).disk_full());
        assert!(!marker("failed", &enospc, Some("error")).disk_full(), "a plugin's own text naming os error 28 is not a full disk");
        assert_eq!(marker("failed", "x", Some("budget_max_preemptions")).spent_budget(), Some("max_preemptions"));
        assert_eq!(marker("failed", "reached the time limit 2 times (max_timeouts = 1)", Some("error")).spent_budget(), None);
        // Old markers: the text.
        assert!(marker("failed", &enospc, None).disk_full());
        assert!(!marker("failed", "plugin error", None).disk_full());
        assert_eq!(marker("failed", "reached the time limit 2 times (max_timeouts = 1)", None).spent_budget(), Some("max_timeouts"));
        assert!(!marker("cancelled", &enospc, Some("disk_full")).disk_full(), "only a failure");
        // Written back without the field when absent.
        let text = serde_json::to_string(&marker("failed", "x", None)).expect("json");
        assert!(!text.contains("cause"), "{text}");
    }

    #[test]
    fn sync_parent_dir_of_a_bare_file_name_is_the_current_directory() {
        // A bare file name has an empty parent; the directory to sync is then `.`.
        assert_eq!(sync_parent_dir(Path::new("spec.json")).map_err(|e| e.kind()), Ok(()));
        // procfs answers fsync of a directory with EINVAL, as FUSE and some network mounts do.
        assert_eq!(sync_parent_dir(Path::new("/proc/self/x")).map_err(|e| e.kind()), Ok(()));
    }

    #[test]
    fn write_atomic_failures_leave_no_tmp_and_the_old_content_intact() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("no-such-dir").join(SPEC_JSON);
        let err = write_atomic(&missing, b"x").expect_err("the directory is missing");
        assert_eq!(err.kind(), io::ErrorKind::NotFound, "{err}");
        assert!(!dir.path().join("no-such-dir").exists());

        // The rename fails (a non-empty directory is in the way): the temporary file goes away
        // and what was there is untouched.
        let blocked = dir.path().join("blocked");
        std::fs::create_dir(&blocked).expect("mkdir");
        std::fs::write(blocked.join("keep"), b"kept").expect("write");
        write_atomic(&blocked, b"new").expect_err("cannot replace a directory");
        assert_eq!(std::fs::read(blocked.join("keep")).expect("read"), b"kept");
        assert_eq!(names(dir.path()), ["blocked"]);
    }
}
