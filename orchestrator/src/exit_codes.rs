//! Named process exit codes of `drover`, so scripts and tests never compare magic numbers.

/// Everything asked for was done (all runs completed or skipped as already completed).
pub const SUCCESS: u8 = 0;
/// An unexpected error (I/O, a broken results directory, ...); the message says which.
pub const FAILURE: u8 = 1;
/// Bad command line; clap prints the usage (clap's own convention).
pub const USAGE: u8 = 2;
/// The sweep file (or an env var / `--set` override) is invalid; nothing was launched.
pub const CONFIG_INVALID: u8 = 3;
/// All runs were attempted, but at least one did not complete; the failures are listed.
pub const RUNS_FAILED: u8 = 4;
/// `drover analyze` found no completed run to analyze.
pub const NO_RESULTS: u8 = 5;
/// `drover run --no-wait` submitted only part of the sweep: Slurm's submit limit (the
/// user's, account's or QOS's `MaxSubmitJobs`) refused the rest; `drover run` again submits it.
pub const NOT_ALL_SUBMITTED: u8 = 6;
/// `drover run`: another `drover run` holds the results directory (its lock); nothing was
/// written, and the same command succeeds once that one has ended (EX_TEMPFAIL of sysexits.h).
pub const BUSY: u8 = 75;
/// Stopped by Ctrl-C / SIGTERM; finished runs were kept (128 + SIGINT, the shell convention).
pub const INTERRUPTED: u8 = 130;
