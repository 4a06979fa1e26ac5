//! All error types of the drover library (one file, `thiserror`); messages are lowercase fragments.

use std::fmt;
use std::io;
use std::path::PathBuf;

/// A user error in the sweep configuration: which file, which key, where the value came from and why.
///
/// Displays as "failed to load sweep file `configs/x.toml`: key `sweep.grid.params.lr`: axis is
/// empty", with "(from environment variable `DROVER_RUN__LR`)" or "(from `--set ...`)" after the
/// key when the offending value did not come from the file itself.
#[derive(Debug)]
pub struct ConfigError {
    /// The sweep file being loaded.
    pub file: PathBuf,
    /// The dotted key at fault (`run.lr`, `sweep.grid.params.clip_coef`), if one is known.
    pub key: Option<String>,
    /// Where the value came from when it was not the file (an env var name, a `--set` argument).
    pub origin: Option<String>,
    /// What is wrong; boxed because its largest variant (three strings) made every
    /// `Result<_, ConfigError>` 144 bytes wide, on the success path too.
    pub kind: Box<ConfigErrorKind>,
}

impl ConfigError {
    /// An error about `key` of `file` whose value came from the file itself.
    pub fn new(file: impl Into<PathBuf>, key: impl Into<String>, kind: ConfigErrorKind) -> Self {
        ConfigError { file: file.into(), key: Some(key.into()), origin: None, kind: Box::new(kind) }
    }

    /// An error about the file as a whole (unreadable, bad syntax).
    pub fn whole_file(file: impl Into<PathBuf>, kind: ConfigErrorKind) -> Self {
        ConfigError { file: file.into(), key: None, origin: None, kind: Box::new(kind) }
    }

    /// Records where the faulty value came from.
    pub fn with_origin(mut self, origin: impl Into<String>) -> Self {
        self.origin = Some(origin.into());
        self
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The file loaded fine when its valid value cannot work on this machine.
        match &*self.kind {
            ConfigErrorKind::CannotRunHere(_) => write!(f, "sweep file `{}`: ", self.file.display())?,
            _ => write!(f, "failed to load sweep file `{}`: ", self.file.display())?,
        }
        if let Some(key) = &self.key {
            write!(f, "key `{key}`")?;
            if let Some(origin) = &self.origin {
                write!(f, " (from {origin})")?;
            }
            write!(f, ": ")?;
        } else if let Some(origin) = &self.origin {
            write!(f, "{origin}: ")?;
        }
        write!(f, "{}", self.kind)?;
        // The list of keys can be 26 long: the one meant is named last, where the eye stops.
        if let (ConfigErrorKind::UnknownKey { expected }, Some(key)) = (&*self.kind, &self.key) {
            if let Some(meant) = crate::config::suggest_key(key, expected) {
                write!(f, "; did you mean `{meant}`?")?;
            } else if let Some(hint) = crate::config::misplaced_key_hint(key) {
                write!(f, "; {hint}")?;
            }
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &*self.kind {
            ConfigErrorKind::Read(e) => Some(e),
            _ => None,
        }
    }
}

/// Why a sweep configuration is invalid.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigErrorKind {
    /// The file cannot be read.
    #[error("cannot read the file")]
    Read(#[source] io::Error),
    /// The file is not valid TOML.
    #[error("invalid TOML: {0}")]
    Syntax(String),
    /// The file holds no key at all (empty, or comments only), and no override gives any.
    #[error("the file has no settings (it is empty or only comments): a sweep needs at least `name` and a `[run]` table with `env` and `plugin`")]
    EmptyFile,
    /// A key the schema does not know.
    #[error("unknown key{}", expected_list(.expected))]
    UnknownKey {
        /// The keys allowed at that place, if the place has a fixed set.
        expected: Vec<String>,
    },
    /// A required key is absent.
    #[error("required key is missing")]
    Missing,
    /// A value of the wrong type.
    #[error("wrong type: {0}")]
    WrongType(String),
    /// A value of the right type that is not allowed (zero threads, a bad name, ...).
    #[error("invalid value: {0}")]
    InvalidValue(String),
    /// A sweep axis with no values.
    #[error("axis is empty")]
    EmptyAxis,
    /// The same value twice in one axis, or two cases that resolve to the same configuration.
    #[error("duplicate: {0}")]
    Duplicate(String),
    /// A key given by two axes at once.
    #[error("conflict: {0}")]
    Conflict(String),
    /// A `DROVER_*` variable spelled like a sweep setting that no setting reads (a single
    /// underscore after the table, an unknown table, a misspelled top-level key).
    #[error("not read as a sweep setting: {0}")]
    UnreadVariable(String),
    /// A `DROVER_*` variable whose name or value is not valid UTF-8.
    #[error("not valid UTF-8")]
    NotUtf8,
    /// A `--set key=value` argument that cannot be parsed.
    #[error("bad --set syntax: {0}")]
    BadSet(String),
    /// A table where an axis (or other dotted key) was meant: TOML made nested tables of an
    /// unquoted dotted name; the text names the keys and how to write them.
    #[error("found a table: {0}")]
    NestedTable(String),
    /// A valid value that cannot work on this machine (`run.device = "cuda"` without a CUDA
    /// device, on the local backend); nothing was launched.
    #[error("cannot run on this machine: {0}")]
    CannotRunHere(String),
    /// `run.plugin` names a plugin that is not in any search directory.
    #[error(
        "plugin `{name}` not found; searched {}{}{}",
        searched_list(.name, .searched),
        available_list(.name, .available),
        other_builds_list(.other_builds)
    )]
    PluginNotFound {
        /// The plugin name or path as written.
        name: String,
        /// Every file that was tried, in order (for a path, where it resolved to).
        searched: Vec<PathBuf>,
        /// The names of the plugins that the folders searched do hold (`libdrover_plugin_<name>.so`).
        available: Vec<String>,
        /// The same file in the other cargo profile's folder (`target/debug` for a searched
        /// `target/release`, and back), where one exists: built, but not where drover looks.
        other_builds: Vec<PathBuf>,
    },
    /// `run.plugin` names a library that `drover-job plugin info` refused or could not inspect.
    #[error("plugin `{name}` cannot be used: {reason}")]
    PluginUnusable {
        /// The plugin name or path as written.
        name: String,
        /// Why (names the library, and both interface versions on a version mismatch).
        reason: String,
    },
    /// A `[params]` value (base table or sweep axis) that the plugin's description rejects.
    #[error("rejected by plugin `{plugin}` {version}: {reason}")]
    PluginParam {
        /// The plugin's name.
        plugin: String,
        /// The plugin's version.
        version: String,
        /// Unknown parameter, wrong type, or out of range.
        reason: String,
    },
}

fn expected_list(expected: &[String]) -> String {
    if expected.is_empty() {
        String::new()
    } else {
        format!(", expected one of: {}", expected.join(", "))
    }
}

fn searched_list(name: &str, searched: &[PathBuf]) -> String {
    if crate::config::is_plugin_path(name) && searched.len() == 1 {
        return format!(
            "`{}` (a relative path is relative to the sweep file's folder when the file wrote it, to the working directory when the command line or DROVER_* did)",
            searched[0].display()
        );
    }
    if searched.is_empty() {
        return "no directory (set `plugin_path` in the sweep file or DROVER_PLUGIN_PATH)".into();
    }
    let files: Vec<String> = searched.iter().map(|p| format!("`{}`", p.display())).collect();
    format!(
        "{} (add a directory with `plugin_path` in the sweep file or DROVER_PLUGIN_PATH, or build the plugin)",
        files.join(", ")
    )
}

/// `; plugins found there: a, b; did you mean `b`?` for a name that is not found.
fn available_list(name: &str, available: &[String]) -> String {
    if available.is_empty() {
        return String::new();
    }
    let meant = crate::config::closest(name, available.iter().map(String::as_str))
        .map_or(String::new(), |meant| format!("; did you mean `{meant}`?"));
    format!("; plugins found there: {}{meant}", available.join(", "))
}

/// `; it is built in `target/debug/...`: ...` for a plugin built with the other cargo profile.
fn other_builds_list(other_builds: &[PathBuf]) -> String {
    if other_builds.is_empty() {
        return String::new();
    }
    let files: Vec<String> = other_builds.iter().map(|p| format!("`{}`", p.display())).collect();
    format!(
        "; a build of it exists at {}, in the other cargo profile's folder (build it with the profile searched, e.g. `cargo build --release`, or add that folder to `plugin_path`)",
        files.join(", ")
    )
}

/// A failure of `drover run` itself (not of a run: failed runs are reported, not errors).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    /// Reading or writing something in the results directory failed.
    #[error("cannot {action} `{}`", path.display())]
    Io {
        /// What was being done ("create directory", "write", ...).
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The `drover-job` binary is not where it is looked for.
    #[error(
        "job runtime `{}` not found (build it with `cargo build -p drover-job`, or point DROVER_JOB_BIN at it)",
        path.display()
    )]
    JobBinaryMissing {
        /// Where it was looked for.
        path: PathBuf,
    },
    /// Installing the SIGINT/SIGTERM handlers failed.
    #[error("cannot install signal handlers")]
    Signals(#[source] io::Error),
    /// Talking to Slurm failed.
    #[error(transparent)]
    Slurm(#[from] SlurmError),
    /// `sbatch` refused an array: most often a `[slurm]` setting the cluster does not take.
    /// Slurm's answer is part of the message, not a source: printed as a chain, it came twice.
    #[error("sbatch refused the runs of `{}` {settings}: {answer}; correct {fix} (in the sweep file, or `--set slurm.<key>=...`) and run again (arrays submitted before it, if any, are in `drover status`)", file.display())]
    SbatchRefused {
        /// The sweep file.
        file: PathBuf,
        /// The setting Slurm's answer names, when drover recognises it, and the array's
        /// resource options (`at \`slurm.partition\` (settings \`--partition=nope\` ...)`).
        settings: String,
        /// What to correct: the setting, or "the setting it names" when not recognised.
        fix: String,
        /// Slurm's answer (boxed: `RunError` is returned everywhere, and this is its largest).
        answer: Box<SlurmError>,
    },
    /// A record drover keeps about a sweep (`sweep.json`, or the Slurm ledger
    /// `slurm/submissions.jsonl`) is unreadable or of an unknown version.
    #[error("unreadable `{}`: {reason}", path.display())]
    Ledger {
        /// The ledger file.
        path: PathBuf,
        /// Why it was refused.
        reason: String,
    },
    /// The directory is not a results directory of a Slurm sweep.
    #[error("`{}` has no Slurm submissions (no `slurm/submissions.jsonl`): was it run with `--backend slurm`?", dir.display())]
    NotSlurm {
        /// The directory given.
        dir: PathBuf,
    },
    /// The directory is not a results directory (no `sweep.json`).
    #[error("`{}` is not a drover results directory (no `sweep.json`): give the directory `drover run` wrote (`--results DIR`, by default `results/<sweep name>`){}", dir.display(), crate::layout::results_inside_hint(dir))]
    NotResults {
        /// The directory given.
        dir: PathBuf,
    },
    /// `drover cancel` of a local sweep whose `drover run` runs on another host.
    #[error("the sweep in `{}` is run by a `drover run` on another host ({holder}); cancel it there (`drover cancel` on that host, or Ctrl-C in its terminal)", dir.display())]
    CancelElsewhere {
        /// The results directory.
        dir: PathBuf,
        /// What the `drover run` wrote about itself.
        holder: String,
    },
    /// A file that decides what happens to a run (`exit.json`, `spec.json`, `summary.json`,
    /// `metrics.parquet`) exists but cannot be read (`EACCES`, `EIO`, NFS's `ESTALE`): the run is
    /// neither kept nor redone, since a completed run must not be retrained for a passing fault.
    /// The OS error is part of the message, not a source, so the chain says it once, in place.
    #[error("cannot read `{}`: {error}; not touching the run", path.display())]
    UnreadableRun {
        /// The file.
        path: PathBuf,
        /// The OS error.
        error: io::Error,
    },
    /// Serializing a record for the results directory failed (a bug rather than a user error).
    #[error("cannot serialize `{}`", path.display())]
    Serialize {
        /// The file being written.
        path: PathBuf,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
}

/// Why a versioned JSON record (`layout::read_record_typed`) was not read. A missing file is
/// no error (`Ok(None)`); [`RecordError::Io`] is a fault reading a file that is there, the
/// others are damaged or foreign content. The messages are those `read_record` always gave.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// The file exists but could not be read (`EACCES`, `EIO`, `ESTALE`, ...).
    #[error("{0}")]
    Io(io::Error),
    /// Not JSON, or not the record expected.
    #[error("{0}")]
    Parse(serde_json::Error),
    /// A `format_version` this drover does not read.
    #[error("unknown format_version {found} (this drover reads {known})")]
    Version {
        /// The version in the file.
        found: u64,
        /// The version this drover reads.
        known: u32,
    },
    /// No `format_version` at all.
    #[error("no format_version")]
    NoVersion,
}

impl RecordError {
    /// The content is damaged or foreign (not a read fault): a reason to redo the run, where
    /// [`RecordError::Io`] is a reason to leave it alone.
    pub fn is_damaged_content(&self) -> bool {
        !matches!(self, RecordError::Io(_))
    }
}

/// `; it had printed: <stderr>` for a command killed after printing something, else nothing
/// ([`SlurmError::Timeout`]).
fn printed_before(stderr: &str) -> String {
    match stderr.trim() {
        "" => String::new(),
        said => format!("; it had printed: {said}"),
    }
}

/// A Slurm command (`sbatch`, `squeue`, `scontrol`, `scancel`) that did not do its job.
///
/// Every variant keeps the command line, and the ones where Slurm answered keep its stderr.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SlurmError {
    /// The program could not be started (Slurm not installed, not on PATH).
    #[error("cannot run `{command}` (is Slurm installed and on PATH?)")]
    Spawn {
        /// The command line.
        command: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The command ran past its timeout (a busy or stalled controller) on every attempt.
    #[error("`{command}` timed out after {attempts} attempt(s) of {timeout_s} s each{}", printed_before(stderr))]
    Timeout {
        /// The command line.
        command: String,
        /// Attempts made.
        attempts: u32,
        /// Seconds allowed per attempt.
        timeout_s: f64,
        /// What the last attempt had printed on stderr when it was killed (`sbatch` says why
        /// it waits: "Slurm temporarily unable to accept job, sleeping and retrying").
        stderr: String,
    },
    /// Slurm refused (nonzero exit); `stderr` is Slurm's own message.
    #[error("`{command}` failed ({status}): {}", stderr.trim())]
    Refused {
        /// The command line.
        command: String,
        /// The exit status.
        status: String,
        /// Slurm's message.
        stderr: String,
    },
    /// The output was not what this drover understands.
    #[error("cannot understand the output of `{command}`: {reason}")]
    Parse {
        /// The command line.
        command: String,
        /// What was wrong.
        reason: String,
    },
    /// `SLURM_CLUSTERS` or `SBATCH_CLUSTERS` asks Slurm's commands for another cluster.
    #[error(
        "`{name}={value}` in the environment sends Slurm's commands to the cluster(s) it names, and drover follows the queue of \
         the cluster it runs on: unset it (`env -u {name} drover ...`) and run drover on a login node of the cluster the sweep is for"
    )]
    OtherCluster {
        /// The variable.
        name: String,
        /// Its value.
        value: String,
    },
}

/// `AnalyzeError::NoCompletedRuns`' message: one line for one directory given, else a line
/// naming how many of those given are empty, then one line per empty directory.
fn no_completed_runs(empty: &[(PathBuf, String)], given: usize) -> String {
    match empty {
        [(dir, why)] if given == 1 => format!("no completed run with metrics in `{}`: {why}", dir.display()),
        _ => {
            let lines: Vec<String> = empty.iter().map(|(dir, why)| format!("\n  `{}`: {why}", dir.display())).collect();
            format!("no completed run with metrics in {} of the {given} results directories given:{}", empty.len(), lines.concat())
        }
    }
}

/// A failure of `drover analyze`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AnalyzeError {
    /// Results directories given to `drover analyze` that hold no completed run with metrics
    /// (missing, without `runs/`, or none of its runs usable); all of them, each with the reason.
    #[error("{}", no_completed_runs(empty, *given))]
    NoCompletedRuns {
        /// Each empty directory and why it is empty.
        empty: Vec<(PathBuf, String)>,
        /// How many directories were given.
        given: usize,
    },
    /// Reading or writing a file failed.
    #[error("cannot {action} `{}`", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A JSON record (`spec.json`, `exit.json`) is malformed or of an unknown format version.
    #[error("bad record `{}`: {reason}", path.display())]
    BadRecord {
        /// The file.
        path: PathBuf,
        /// Why it was refused.
        reason: String,
    },
    /// A `--where` expression of `drover analyze` is malformed or names no known column.
    #[error("bad expression `{expr}`: {reason}")]
    Query {
        /// The expression as given.
        expr: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A `--group-by`, `--compare` or `--curves` value of `drover analyze` that names no known
    /// key or column (or names one twice).
    #[error("`{flag} {value}`: {reason}")]
    Flag {
        /// The option (`--group-by`).
        flag: &'static str,
        /// Its value as given.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Drawing a plot failed.
    #[error("cannot draw `{}`: {reason}", path.display())]
    Plot {
        /// The plot file.
        path: PathBuf,
        /// The drawing backend's reason.
        reason: String,
    },
    /// Polars failed while reading, computing or writing a table.
    #[error("polars failed while {action}")]
    Polars {
        /// What was being done.
        action: String,
        /// The cause.
        #[source]
        source: polars::error::PolarsError,
    },
}

/// Inspecting a plugin library through `drover-job plugin info|check` failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PluginProbeError {
    /// `drover-job` could not be started.
    #[error(
        "cannot run `{}` to inspect plugins (build it with `cargo build -p drover-job`, or point DROVER_JOB_BIN at it)",
        job_bin.display()
    )]
    Spawn {
        /// The runtime binary.
        job_bin: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The library was refused (not a plugin, incompatible interface, ...).
    #[error("{message}")]
    Refused {
        /// The library.
        path: PathBuf,
        /// `not_a_plugin`, `incompatible_interface`, `open`, `abi`, `info` or `read`.
        kind: String,
        /// The runtime's message (names the path, and both versions on a mismatch).
        message: String,
    },
    /// The runtime's answer was not a report this drover reads (crash, old runtime, ...).
    #[error("`{} plugin {command} {}` gave no usable report: {reason}; its stderr: {stderr}", job_bin.display(), path.display())]
    BadReport {
        /// The runtime binary.
        job_bin: PathBuf,
        /// `info` or `check`.
        command: &'static str,
        /// The library.
        path: PathBuf,
        /// What was wrong with the answer.
        reason: String,
        /// The runtime's stderr, kept for the diagnosis.
        stderr: String,
    },
}

/// A failure of `drover plugin new|list|check` itself.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PluginCmdError {
    /// Inspecting a library failed.
    #[error(transparent)]
    Probe(#[from] PluginProbeError),
    /// A plugin name was not found on the search path.
    #[error("{0}")]
    NotFound(ConfigErrorKind),
    /// `drover plugin new` was given a name that cannot be a crate or plugin name.
    #[error("invalid plugin name `{name}`: {reason}")]
    BadName {
        /// The name given.
        name: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// `drover plugin new` was given the name of a plugin already on the search path: until
    /// the new project is built, a sweep naming it would load that other library.
    #[error("a plugin named `{name}` is already on drover's search path, `{}`: a sweep naming `{name}` could load that one instead of yours (before yours is built, or built in another folder); choose another name, e.g. `my_{name}`", existing.display())]
    NameTaken {
        /// The name given.
        name: String,
        /// The library of that name found on the search path.
        existing: PathBuf,
    },
    /// `drover plugin new --api-path` names no `drover-plugin-api` crate: the new project
    /// would not build, and nothing is written.
    #[error("`--api-path {}`: {reason}", path.display())]
    BadApiPath {
        /// The path given.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// `drover plugin new` never overwrites: the target directory already has files.
    #[error("`{}` already exists and is not empty (choose another `--dir`)", dir.display())]
    DirNotEmpty {
        /// The directory.
        dir: PathBuf,
    },
    /// `--params` is not a JSON object, or not parameters the plugin takes.
    #[error("invalid `--params`: {0}")]
    BadParams(String),
    /// Writing the new project failed.
    #[error("cannot {action} `{}`", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
}
