//! The drover library: sweep config → runs → backends → analysis; `main.rs` is a thin CLI over it.
//!
//! Data flow: `config::load` (figment: TOML + `DROVER_*` env + `--set`) gives a `SweepFile`,
//! `Sweep::validate` checks it, `Sweep::expand` gives `Vec<RunSpec>` (pure), `plan::Plan` adds the
//! I/O-bound facts (plugin paths, results directory), `backend::local` or `backend::slurm` launches the runs, and
//! `analyze` reads the results directory back with Polars.

pub mod analyze;
pub mod backend;
pub mod config;
pub mod error;
pub mod exit_codes;
pub mod layout;
pub mod lock;
pub mod plan;
pub mod plugin_cmd;
pub mod status;
pub mod stderr;
pub mod subprocess;
pub mod words;

pub use error::{AnalyzeError, ConfigError, ConfigErrorKind, PluginCmdError, PluginProbeError, RunError, SlurmError};
