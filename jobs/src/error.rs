//! Errors of the job runtime.

use std::path::PathBuf;

/// Why a job could not run or finish.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// The spec file cannot be read or parsed.
    #[error("failed to read job spec `{path}`: {reason}")]
    Spec {
        /// The spec file.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
    /// The spec names something this runtime cannot run.
    #[error("job spec `{path}`: key `{key}`: {reason}")]
    SpecValue {
        /// The spec file.
        path: PathBuf,
        /// The offending key.
        key: String,
        /// What was wrong.
        reason: String,
    },
    /// Loading or calling the algorithm plugin failed.
    #[error(transparent)]
    Plugin(#[from] drover_plugin_host::LoadError),
    /// A call into the plugin failed (panic, error, NaN...).
    #[error(transparent)]
    PluginCall(#[from] drover_plugin_host::CallError),
    /// The plugin asked for something the run cannot do (e.g. group sizes over the budget).
    /// Worded as a failed call (`drover_plugin_host::CallError`), with version and call, so
    /// `exit.json` reads alike whichever side found the fault.
    #[error("plugin `{plugin}` {version}: call `{call}`: {reason}")]
    PluginRequest {
        /// The plugin's name.
        plugin: String,
        /// The plugin's version.
        version: String,
        /// The call whose answer the run cannot follow.
        call: &'static str,
        /// What it asked for and why that cannot be done.
        reason: String,
    },
    /// A kernel or the device failed (transparent: the kernel error already says what failed,
    /// and an `{:#}` chain would otherwise print it twice).
    #[error(transparent)]
    Kernel(#[from] drover_kernels::KernelError),
    /// A runtime setting from the environment (`DROVER_ALLREDUCE`) is invalid or cannot be
    /// honoured.
    #[error("environment variable `{name}`: {reason}")]
    Env {
        /// The variable.
        name: &'static str,
        /// What was wrong.
        reason: String,
    },
    /// The ranks of the job do not fit the spec, or they diverged.
    #[error("multi-rank job: {0}")]
    Ranks(String),
    /// Writing an output file failed.
    #[error("failed to write `{path}`: {source}")]
    Io {
        /// The file being written.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A checkpoint cannot be used to resume (another run, unknown format, inconsistent).
    #[error("cannot resume from checkpoint `{path}`: {reason}")]
    Checkpoint {
        /// The checkpoint file.
        path: PathBuf,
        /// Why it was refused.
        reason: String,
    },
    /// The checkpoint is of a format this drover-job does not read, though it is one: another
    /// (newer) release of drover-job wrote it. Not damage: that release can resume it.
    #[error(
        "cannot resume from checkpoint `{path}`: unknown format_version {found} (this drover-job reads {reads}): \
         another release of drover-job wrote it; resume the run with that release (the checkpoint is kept)"
    )]
    CheckpointFormat {
        /// The checkpoint file.
        path: PathBuf,
        /// The format version it declares.
        found: u64,
        /// The versions this drover-job reads, in words (`1, 2 and 3`).
        reads: String,
    },
    /// The checkpoint holds plugin state (interface 1.3) that the plugin loaded now cannot take
    /// back: resuming without it would diverge from the interrupted run, so the run stops and
    /// the checkpoint is left as it is.
    #[error(
        "run {run}: cannot resume from checkpoint `{path}`: plugin `{plugin}`: {reason} \
         (the checkpoint is kept: resume with the plugin that wrote it, or delete the file to \
         start the run over)"
    )]
    PluginState {
        /// The run id.
        run: String,
        /// The checkpoint file.
        path: PathBuf,
        /// The plugin loaded for the resumed run.
        plugin: String,
        /// Why its state could not be restored.
        reason: String,
    },
    /// Writing the Parquet metrics failed.
    #[error("failed to write metrics parquet `{path}`: {reason}")]
    Parquet {
        /// The file being written.
        path: PathBuf,
        /// The underlying error.
        reason: String,
    },
}

#[cfg(test)]
mod tests {
    use super::JobError;

    /// Review finding: "plugin 'awr': on_iteration returned 3 group sizes…" lacked the version
    /// and the `call` every other plugin error names.
    #[test]
    fn a_request_the_run_cannot_follow_reads_like_a_failed_call() {
        let reason = crate::sampling::sized_groups(&[7, 3], &[4, 0, 2], 6).expect_err("3 sizes for 2 prompts");
        let e = JobError::PluginRequest { plugin: "awr".into(), version: "0.1.0".into(), call: "on_iteration", reason };
        assert!(
            e.to_string().starts_with("plugin `awr` 0.1.0: call `on_iteration`: asked for 3 group sizes, but the next generation batch has 2 prompts"),
            "{e}"
        );
    }
}
