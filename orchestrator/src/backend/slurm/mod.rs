//! The Slurm backend: one sweep → one job array (more when it exceeds `MaxArraySize` or runs
//! need different resources), a ledger of submissions, status from one `squeue` per poll plus
//! the runs' own markers, retries, re-attachment and cancellation (docs/design/slurm.md).
//!
//! Files under `<results>/slurm/`: `submissions.jsonl` (the ledger, append-only),
//! `array-<n>.sbatch` (the rendered batch script of submission n), `array-<n>.tasks` (run id of
//! each array index) and `logs/` (Slurm's own output of each task). Only `slurm_cmd` runs
//! Slurm's commands.
//!
//! The modules, in the order a `drover run` meets them: `warnings` and `after` check the sweep
//! before anything is submitted; `run` drives the sweep (`run_sweep`) and `wait` polls it to its end; `rerun` decides what
//! each run needs from `status` (markers + one queue answer, over `job_files`, whose records
//! `job_records` types); `plan` groups
//! runs into arrays and renders their scripts; `submit` submits them, recording each step in
//! the `ledger` (read through `jsonl`) with its `provenance`; `throttle` shares the sweep's
//! runs-at-once limit across its arrays as runs end.

use std::path::Path;

use crate::error::RunError;

mod after;
mod job_files;
mod job_records;
mod jsonl;
mod ledger;
mod plan;
mod provenance;
mod rerun;
mod run;
mod status;
mod submit;
mod sweep_dir;
#[cfg(test)]
mod test_support;
mod throttle;
mod wait;
mod warnings;

pub use after::check_after_jobs;
pub(crate) use job_files::attempt_logs;
pub use ledger::{Ledger, LedgerEvent, RetryKind, Submission, LEDGER, LEDGER_FORMAT_VERSION, LEDGER_LOCK};
pub use plan::{dry_run_scripts, plan_arrays, ArrayPlan};
pub use provenance::Provenance;
pub use rerun::dry_run_actions;
pub use run::{run_sweep, SlurmOptions, SlurmReport};
pub use status::{cancel, status};
pub use sweep_dir::job_name;
pub(crate) use sweep_dir::SweepDir;
pub use warnings::{
    gpu_request_warning, local_disk_warning, local_disk_warning_here, mpi_warning, node_local_warning, resource_warnings, results_path_problem,
    throttle_warning, unmatched_override_check, UNTHROTTLED_RUNS_WARNED,
};

/// `slurm/` inside a results directory.
pub const SLURM_DIR: &str = "slurm";

fn io_err<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> RunError + 'a {
    move |source| RunError::Io { action, path: path.to_path_buf(), source }
}
