//! Named exit codes of `drover-job`; the orchestrator reads `exit.json` first and these second.

/// The run completed and `exit.json` says so.
pub const COMPLETED: u8 = 0;
/// The run failed; `exit.json` holds the reason.
pub const FAILED: u8 = 1;
/// The spec or the command line was unusable (nothing was written).
pub const USAGE: u8 = 2;
/// The job checkpointed on the time-limit signal and asks its batch script to requeue it
/// (EX_TEMPFAIL); no `exit.json` is written, since the run goes on in the next attempt.
pub const REQUEUE: u8 = 75;
/// The run was stopped by SIGINT/SIGTERM before finishing.
pub const CANCELLED: u8 = 130;
