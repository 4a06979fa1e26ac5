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
    /// What is wrong.
    pub kind: ConfigErrorKind,
}

impl ConfigError {
    /// An error about `key` of `file` whose value came from the file itself.
    pub fn new(file: impl Into<PathBuf>, key: impl Into<String>, kind: ConfigErrorKind) -> Self {
        ConfigError { file: file.into(), key: Some(key.into()), origin: None, kind }
    }

    /// An error about the file as a whole (unreadable, bad syntax).
    pub fn whole_file(file: impl Into<PathBuf>, kind: ConfigErrorKind) -> Self {
        ConfigError { file: file.into(), key: None, origin: None, kind }
    }

    /// Records where the faulty value came from.
    pub fn with_origin(mut self, origin: impl Into<String>) -> Self {
        self.origin = Some(origin.into());
        self
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "failed to load sweep file `{}`: ", self.file.display())?;
        if let Some(key) = &self.key {
            write!(f, "key `{key}`")?;
            if let Some(origin) = &self.origin {
                write!(f, " (from {origin})")?;
            }
            write!(f, ": ")?;
        } else if let Some(origin) = &self.origin {
            write!(f, "{origin}: ")?;
        }
        write!(f, "{}", self.kind)
    }
}

impl std::error::Error for ConfigError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.kind {
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
    /// A `--set key=value` argument that cannot be parsed.
    #[error("bad --set syntax: {0}")]
    BadSet(String),
    /// `run.plugin` names a plugin that is not in any search directory.
    #[error("plugin `{name}` not found; searched {}", searched_list(.searched))]
    PluginNotFound {
        /// The plugin name or path as written.
        name: String,
        /// Every file that was tried, in order.
        searched: Vec<PathBuf>,
    },
}

fn expected_list(expected: &[String]) -> String {
    if expected.is_empty() {
        String::new()
    } else {
        format!(", expected one of: {}", expected.join(", "))
    }
}

fn searched_list(searched: &[PathBuf]) -> String {
    if searched.is_empty() {
        return "no directory (set `plugin_path` in the sweep file or DROVER_PLUGIN_PATH)".into();
    }
    let files: Vec<String> = searched.iter().map(|p| format!("`{}`", p.display())).collect();
    format!(
        "{} (add a directory with `plugin_path` in the sweep file or DROVER_PLUGIN_PATH, or build the plugin)",
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

/// A failure of `drover analyze`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AnalyzeError {
    /// The directory has no `runs/` folder: probably not a results directory.
    #[error("`{}` is not a results directory (it has no `runs/` folder)", dir.display())]
    NotResults {
        /// The directory given.
        dir: PathBuf,
    },
    /// No run in the directory has completed, so there is nothing to summarize.
    #[error("no completed run with metrics in `{}` ({found} run directories found)", dir.display())]
    NoCompletedRuns {
        /// The results directory.
        dir: PathBuf,
        /// How many run directories exist.
        found: usize,
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
