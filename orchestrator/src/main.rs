//! The `drover` CLI: a thin layer over the library (parse args, call, print, map to exit codes).

use std::io::IsTerminal;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use drover::backend::local::LocalBackend;
use drover::backend::local_config::MAX_LOCAL_RETRIES;
use drover::backend::slurm_cmd::Slurm;
use drover::backend::slurm_config::BackendKind;
use drover::backend::{self, slurm};
use drover::exit_codes;
use drover::plan::{self, PlanOptions};
use drover::{analyze, AnalyzeError, ConfigError};

/// Expand RL sweeps into runs, launch them, and analyze the results.
#[derive(Debug, Parser)]
#[command(name = "drover", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Arguments of `drover run`.
#[derive(Debug, clap::Args)]
#[command(after_long_help = RUN_HELP_TAIL)]
struct RunArgs {
    /// The sweep file (TOML).
    sweep: PathBuf,
    /// Override a key, the value parsed as TOML: `--set run.lr=1e-3`, `--set sweep.seeds=[1,2]`.
    /// The value replaces the key's whole value, a table too: `--set 'sweep.grid={}'` runs no
    /// grid, `--set sweep.grid.params.x=[1,2]` sets that one axis and keeps the others.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    sets: Vec<String>,
    /// Runs at once (default: `max_parallel` of the sweep file, else the number of cores; on
    /// Slurm the array throttle `%N`, over `slurm.throttle`, and no limit by default).
    #[arg(short = 'j', long = "jobs", value_name = "N", value_parser = parse_jobs)]
    jobs: Option<NonZeroUsize>,
    /// Results directory (default: `results_dir` of the sweep file, else `results/<name>`).
    #[arg(long = "results", value_name = "DIR")]
    results: Option<PathBuf>,
    /// List the runs (id, state, seed, label) without launching anything; with the Slurm
    /// backend, also print the batch scripts that would be submitted.
    #[arg(long)]
    dry_run: bool,
    /// Where runs go: `local` (child processes) or `slurm` (job arrays); default: the sweep
    /// file's `backend`, else local.
    #[arg(long, value_enum, value_name = "BACKEND")]
    backend: Option<BackendArg>,
    /// Slurm: return once submitted instead of waiting for the runs (`drover status` follows
    /// them); the local backend always waits (a warning says so).
    #[arg(long)]
    no_wait: bool,
    /// Local backend: relaunch a failed run (a crash, a signal, out of memory) up to N times;
    /// default: `[local] max_retries` of the sweep file, else 0 (Slurm takes its budget from
    /// the `[slurm]` table).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(..=i64::from(MAX_LOCAL_RETRIES)))]
    max_retries: Option<u32>,
}

/// What `drover run --help` adds below the options: the other way to override keys, and what the
/// exit codes mean (scripts branch on them).
const RUN_HELP_TAIL: &str = "\
Overrides, lowest to highest precedence: the sweep file, then environment variables \
`DROVER_<TABLE>__<KEY>` (`DROVER_RUN__NUM_ENVS=16`), then `--set`.

Running the same sweep again skips completed runs and redoes unfinished ones (a checkpointed \
run resumes). Ctrl-C, or `drover cancel DIR` from another terminal, stops cleanly.

Exit codes: 0 all runs completed; 1 error; 2 bad command line; 3 invalid sweep file or \
override (nothing launched); 4 some runs failed (listed); 6 Slurm's submit limit kept runs out \
(`--no-wait`; run again to submit them); 75 the results directory is in use by another \
`drover run` (nothing written; run again once it has ended); 130 interrupted (finished runs \
kept).";

/// What `drover status --help` ends with.
const STATUS_HELP_TAIL: &str = "\
Exit codes: 0 the report was printed, whatever state the runs are in (read them from it, or \
from `--json`); 1 error (not a results directory, unreadable files, Slurm not answering); 2 bad \
command line.";

/// What `drover cancel --help` ends with.
const CANCEL_HELP_TAIL: &str = "\
Exit codes: 0 cancelled (or, locally, asked to stop and still stopping), or nothing was \
running: stderr says which; 1 error (not a results directory, Slurm refused, the `drover run` of \
a local sweep runs on another host); 2 bad command line.";

/// What `drover analyze --help` ends with.
const ANALYZE_HELP_TAIL: &str = "\
Exit codes: 0 tables (and plots) written; 1 error (a file that cannot be written, a failed \
computation); 2 bad command line, bad `--where`/`--group-by`/`--compare`/`--curves`, or several \
results directories without `--out` (nothing written); 5 no completed run with metrics in a \
results directory given (nothing written).";

/// What `drover plugin --help` ends with.
const PLUGIN_HELP_TAIL: &str = "\
Exit codes: 0 done (`check`: every check passed); 1 error, or a failed check (`check` lists \
them); 2 bad command line.";

/// What `drover bench --help` ends with.
const BENCH_HELP_TAIL: &str = "\
Exit codes: those of `drover-job bench`: 0 measured; 1 the benchmark failed (no CUDA device for \
`--device cuda`, ...) or `drover-job` could not be started; 2 bad arguments.";

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a sweep: expand it, skip completed runs, launch the rest.
    Run(RunArgs),
    /// Where each run of a sweep stands, with its progress: on Slurm one `squeue` call plus the
    /// runs' markers; locally the markers and locks alone (safe beside a running `drover run`).
    #[command(after_long_help = STATUS_HELP_TAIL)]
    Status {
        /// The results directory of the sweep.
        results: PathBuf,
        /// Print JSON (format_version 1) for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Cancel a sweep; finished runs are kept. Slurm: cancel its queued and running jobs. Local:
    /// stop the `drover run` working through it, as Ctrl-C in its terminal would.
    #[command(after_long_help = CANCEL_HELP_TAIL)]
    Cancel {
        /// The results directory of the sweep.
        results: PathBuf,
    },
    /// Algorithm plugins: create one, list those on the search path, check a built one.
    #[command(after_long_help = PLUGIN_HELP_TAIL)]
    Plugin {
        #[command(subcommand)]
        command: drover::plugin_cmd::PluginCommand,
    },
    /// Summarize results per configuration (or per `--group-by` keys) with bootstrap confidence
    /// intervals; writes `tables/` (CSV, Parquet, Markdown) and `plots/` (PNG, SVG).
    Analyze(AnalyzeArgs),
    /// Kernel throughput on this machine: `drover bench rollout [--device cpu|cuda]
    /// [--simd L] [--envs 1024,4096,...] [--threads N] [--json]`, `drover bench allreduce`
    /// (runs `drover-job bench`, which links the kernels).
    #[command(after_long_help = BENCH_HELP_TAIL)]
    Bench {
        /// Arguments passed to `drover-job bench` (`rollout --help` lists them).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, value_name = "ARGS")]
        args: Vec<std::ffi::OsString>,
    },
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { exit_codes::USAGE } else { exit_codes::SUCCESS });
        }
    };
    // An empty `RUST_LOG=` parses as a filter with no directives, which would hide warnings too.
    let asked = std::env::var("RUST_LOG").is_ok_and(|v| !v.trim().is_empty());
    match tracing_subscriber::EnvFilter::try_from_default_env().ok().filter(|_| asked) {
        // Asked for logs: timestamps, levels and modules, as a log reader wants them.
        Some(filter) => tracing_subscriber::fmt()
            .with_env_filter(filter)
            // Never a panic on a closed stderr, and above the progress bar (`drover::stderr`).
            .with_writer(|| drover::stderr::LossyStderr)
            .with_ansi(ansi_logs(std::io::IsTerminal::is_terminal(&std::io::stderr()), std::env::var_os("NO_COLOR").as_deref()))
            .init(),
        None => tracing_subscriber::util::SubscriberInitExt::init(user_subscriber(|| drover::stderr::LossyStderr)),
    }
    let result = match cli.command {
        Command::Run(args) => run(args),
        Command::Status { results, json } => status_cmd(&results, json),
        Command::Cancel { results } => cancel_cmd(&results),
        Command::Analyze(args) => analyze_cmd(args),
        Command::Plugin { command } => plugin_cmd(command),
        Command::Bench { args } => bench_cmd(args),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            // A closed pipe (`drover run --dry-run | head`) is not an error worth reporting.
            if e.chain().any(|c| c.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)) {
                return ExitCode::from(exit_codes::SUCCESS);
            }
            drover::say!("error: {e:#}");
            let code = if e.downcast_ref::<ConfigError>().is_some() {
                exit_codes::CONFIG_INVALID
            } else if matches!(e.downcast_ref::<AnalyzeError>(), Some(AnalyzeError::NoCompletedRuns { .. })) {
                exit_codes::NO_RESULTS
            } else if matches!(e.downcast_ref::<drover::lock::LockError>(), Some(drover::lock::LockError::Busy { .. })) {
                exit_codes::BUSY
            } else if matches!(e.downcast_ref::<AnalyzeError>(), Some(AnalyzeError::Query { .. } | AnalyzeError::Flag { .. }))
                || e.downcast_ref::<UsageError>().is_some()
            {
                exit_codes::USAGE
            } else {
                exit_codes::FAILURE
            };
            ExitCode::from(code)
        }
    }
}

/// Whether log lines get colour codes: only on a terminal (logs piped to a file are grepped),
/// and not when `NO_COLOR` is set to anything but the empty string (no-color.org). A twin of
/// `drover-job`'s (jobs/src/main.rs): the two binaries share no crate; keep them alike.
fn ansi_logs(terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    terminal && no_color.is_none_or(std::ffi::OsStr::is_empty)
}

/// The subscriber when `RUST_LOG` asks for no logs: only warnings and errors reach the user,
/// worded as drover's other lines ([`UserLine`]).
fn user_subscriber<W>(writer: W) -> impl tracing::Subscriber + Send + Sync + 'static
where
    W: for<'a> tracing_subscriber::fmt::MakeWriter<'a> + Send + Sync + 'static,
{
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("warn"))
        .with_writer(writer)
        // Plain text like the lines around it; the fields' styling would be escape codes.
        .with_ansi(false)
        .event_format(UserLine)
        .finish()
}

/// A tracing event as a line of drover's own output, `drover: warning: <message> run=<id>`,
/// where the default format's timestamp and module path (`2026-11-29T14:23:44Z WARN
/// drover::analyze::pipeline: ...`) read as a leaked log line.
struct UserLine;

impl<S, N> tracing_subscriber::fmt::FormatEvent<S, N> for UserLine
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut writer: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        write!(writer, "drover: {}: ", user_level(*event.metadata().level()))?;
        ctx.field_format().format_fields(writer.by_ref(), event)?;
        // A library's event is not drover's own word: say whose it is.
        let target = event.metadata().target();
        if !(target == "drover" || target.starts_with("drover::") || target.starts_with("drover_")) {
            write!(writer, " ({target})")?;
        }
        writeln!(writer)
    }
}

/// The word `drover: <word>: ...` lines use for a tracing level.
fn user_level(level: tracing::Level) -> &'static str {
    match level {
        tracing::Level::ERROR => "error",
        tracing::Level::WARN => "warning",
        _ => "note",
    }
}

/// A command line that clap accepts but the command cannot run as given (`drover analyze a b`
/// without `--out`): exit code 2, as for clap's own usage errors.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct UsageError(String);

/// `--target RETURN`: a finite number. NaN or ±inf would leave every gap empty and `reached` 0
/// without a word.
fn parse_target(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(v) if v.is_finite() => Ok(v),
        Ok(_) => Err("must be a finite number: the return that counts as success".into()),
        Err(e) => Err(format!("{e}: expected a number, the return that counts as success")),
    }
}

/// Fewest bootstrap resamples `--reps` and `--band-reps` take: a 95% percentile interval is
/// read off the 2.5% tails, which then hold 2.5 resamples each (its bounds interpolate between
/// the 3rd and 4th from each end); with fewer (`--reps 1`: one resample is both bounds) a point
/// can lie outside its own interval.
const MIN_REPS: usize = 100;

/// `--reps N`, `--band-reps N`: at least `MIN_REPS`.
fn parse_reps(text: &str) -> Result<usize, String> {
    match text.trim().parse::<usize>() {
        Ok(n) if n >= MIN_REPS => Ok(n),
        Ok(_) => Err(format!("must be at least {MIN_REPS}: a 95% interval is read off the 2.5% tails of the resamples")),
        Err(e) => Err(format!("{e}: expected a whole number of resamples, at least {MIN_REPS}")),
    }
}

/// `--bins N`: at least 1.
fn parse_bins(text: &str) -> Result<u32, String> {
    match text.trim().parse::<u32>() {
        Ok(0) => Err("must be at least 1 (the number of learning-curve bins over the steps axis)".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(format!("{e}: expected a whole number of learning-curve bins, at least 1")),
    }
}

/// `-j N`: clap's own message for 0 ("number would be zero for non-zero type") says nothing to
/// a user.
fn parse_jobs(text: &str) -> Result<NonZeroUsize, String> {
    match text.parse::<usize>() {
        Ok(0) => Err("must be at least 1 (the number of runs at once)".into()),
        Ok(n) => NonZeroUsize::new(n).ok_or_else(|| "must be at least 1".into()),
        Err(e) => Err(format!("{e}: expected a whole number of runs at once, at least 1")),
    }
}

fn exe_dir() -> Option<PathBuf> {
    std::env::current_exe().ok().and_then(|p| p.parent().map(Path::to_path_buf))
}

fn run(args: RunArgs) -> anyhow::Result<u8> {
    let RunArgs { sweep, sets, jobs, results, dry_run, backend, no_wait, max_retries } = args;
    let job_bin = LocalBackend::default_job_bin(std::env::var_os("DROVER_JOB_BIN").map(PathBuf::from), exe_dir().as_deref());
    // `drover-job devices` initialises CUDA (seconds, up to a timeout on a wedged driver): asked
    // once, by the refusal of a sweep that needs CUDA and by the GPU sharing after it.
    let devices = std::cell::OnceCell::new();
    let count_devices = || devices.get_or_init(|| backend::gpus::count_devices(&job_bin)).clone();
    // `std::env::vars` panics on a variable that is not UTF-8, which need not be drover's.
    let env = drover::config::environment(&sweep, std::env::vars_os())?;
    let opts = PlanOptions {
        sweep_file: sweep,
        sets,
        env,
        results,
        jobs,
        exe_dir: exe_dir(),
        job_bin: Some(job_bin.clone()),
    };
    let plan = plan::plan(&opts)?;
    for warning in &plan.warnings {
        drover::say!("drover: warning: {warning}");
    }
    for other in backend::rebuilt::trained_by_other_builds(&plan) {
        drover::say!("drover: warning: {}", other.warning());
    }
    for line in backend::other_runs::lines(&backend::other_runs::other_runs(&plan), &plan.results.runs_dir()) {
        drover::say!("drover: {line}");
    }
    if use_slurm(backend, &plan) {
        // Before the results directory and its lock are made: every Slurm command would refuse.
        drover::backend::slurm_cmd::refuse_other_cluster()?;
    }
    // Before the dry run too, which shows what the run would do, and before the lock file,
    // so a refused sweep leaves no trace.
    if !use_slurm(backend, &plan) {
        plan::check_local_cuda(&plan, &opts, count_devices)?;
    } else if let Some(why) = slurm::results_path_problem(plan.results.root()) {
        return Err(plan::results_dir_error(&opts, why).into());
    }

    if dry_run {
        use std::io::Write;
        // What the list cannot say: a `drover run` now would be refused.
        if let Some(holder) = drover::lock::live_holder(&plan.results.root().join(drover::lock::LOCK_FILE)) {
            drover::say!(
                "drover: note: `{}` is in use by another `drover run` ({}): running this sweep now would be refused until it ends (exit code 75); the runs its jobs are training are listed as `live`",
                plan.results.root().display(),
                holder.description
            );
        }
        let mut out = std::io::stdout().lock();
        let slurm = use_slurm(backend, &plan);
        let states: Vec<backend::DryRunAction> = if slurm {
            slurm::dry_run_actions(&plan, &slurm_options(job_bin.clone(), !no_wait))
        } else {
            plan.runs
                .iter()
                .map(|run| {
                    let spec = plan.job_spec(run);
                    backend::DryRunAction::from(backend::planned_action(&plan.results.run_dir(&spec.run_id), &spec))
                })
                .collect()
        };
        let configs = plan.runs.iter().map(|r| &r.config_id).collect::<std::collections::HashSet<_>>().len();
        let tally = dry_run_tally(&states, configs, slurm);
        writeln!(out, "sweep `{}`: {tally} -> {}", plan.sweep.name, plan.results.root().display())?;
        for (run, state) in plan.runs.iter().zip(&states) {
            writeln!(out, "{}  {:<6}  seed={:<6} {}", run.run_id, state.word(), run.seed, run.label)?;
        }
        // A list of thousands scrolls its header away: the counts again where the eye lands.
        if states.len() > DRY_RUN_REPEAT_TALLY {
            writeln!(out, "sweep `{}`: {tally}", plan.sweep.name)?;
        }
        if slurm {
            slurm_preflight(&plan, &job_bin)?;
            for (name, text) in slurm::dry_run_scripts(&plan, &slurm_options(job_bin, !no_wait), &states)? {
                writeln!(out, "\n--- {name} (not submitted)\n{text}")?;
            }
        }
        return Ok(exit_codes::SUCCESS);
    }
    // Read before anything is written, so a bad value changes nothing.
    let busy_wait = if use_slurm(backend, &plan) { backend::DEFAULT_BUSY_WAIT } else { parse_busy_wait(std::env::var_os(BUSY_WAIT_VAR))? };
    // Held until this function returns: a second `drover run` on these results is refused.
    // A local sweep's lock says how long its stop waits, for `drover cancel` to wait as long.
    let command = drover::lock::command_line();
    let locked = if use_slurm(backend, &plan) {
        drover::lock::acquire(plan.results.root(), &command)
    } else {
        drover::lock::acquire_local(plan.results.root(), &command, plan.sweep.local.grace)
    };
    let _lock = match locked {
        // A directory that cannot be created is a setting to correct (exit 3), named as given.
        Err(drover::lock::LockError::CreateDir { dir, source }) => {
            return Err(plan::results_dir_error(&opts, format!("cannot create `{}`: {source}", dir.display())).into());
        }
        // Another user's results directory: a setting to correct too.
        Err(drover::lock::LockError::NotOwned { why, .. }) => return Err(plan::results_dir_error(&opts, why).into()),
        other => other?,
    };
    if use_slurm(backend, &plan) {
        if let Some(n) = max_retries {
            drover::say!("drover: warning: --max-retries {n} is the local backend's; on Slurm the budget is `slurm.max_retries` (`--set slurm.max_retries={n}`)");
        }
        slurm_preflight(&plan, &job_bin)?;
        return slurm_run(&plan, job_bin, !no_wait);
    }

    if no_wait {
        drover::say!(
            "drover: warning: --no-wait is the Slurm backend's; a local sweep's jobs are children of this `drover run`, which waits for them (run it under tmux or nohup to leave it, or use `--backend slurm`)"
        );
    }
    let show_progress = std::io::stderr().is_terminal() && std::env::var_os("CI").is_none_or(|v| v == "false");
    let max_retries = plan.sweep.local.effective_max_retries(max_retries);
    // Signal handlers go in before anything is written, so Ctrl-C is always handled in order.
    let mut backend = LocalBackend::new(job_bin.clone(), plan.max_parallel.get(), show_progress)?
        .with_max_retries(max_retries)
        .with_grace(plan.sweep.local.grace);
    // Ctrl-C during the wait for jobs a killed `drover run` left running stops it at once.
    let prepared = backend::prepare_waiting(&plan, busy_wait, &mut || backend.stop_requested()).context("cannot prepare the results directory")?;
    if prepared.interrupted {
        drover::say!(
            "drover: interrupted while waiting for {} still running elsewhere; nothing was launched, finished runs are kept: rerun the same command to continue",
            drover::words::count(prepared.busy.len(), "run")
        );
        return Ok(exit_codes::INTERRUPTED);
    }
    drover::say!(
        "drover: sweep `{}`: {}, {} already completed, launching {} (up to {} at once, local backend) -> {}",
        plan.sweep.name,
        drover::words::count(plan.runs.len(), "run"),
        prepared.skipped.len(),
        prepared.pending.len(),
        plan.max_parallel,
        plan.results.root().display()
    );
    for (run_id, iteration) in &prepared.resumed {
        drover::say!("  resume: {run_id}: from its checkpoint at iteration {iteration}");
    }
    for (run_id, why) in &prepared.redone {
        drover::say!("  redo: {run_id}: {why}");
    }
    for (run_id, why) in &prepared.repaired {
        drover::say!("  repair: {run_id}: kept as completed (its exit.json, summary.json and metrics.parquet check out); {why}, so it was written again from the sweep");
    }
    for (run_id, holder) in &prepared.busy {
        drover::say!("  busy: {run_id}: still running elsewhere ({holder}); not relaunched: run again once it has ended");
    }
    if prepared.pending.iter().any(|r| r.gpu) {
        backend = backend.with_gpus(local_gpus(&plan.sweep.local, count_devices));
    }
    let report = backend.launch(prepared.pending)?;

    drover::say!(
        "drover: {} completed, {} skipped (already completed), {} retried, {} failed, {} cancelled, {} not started",
        report.completed.len(),
        prepared.skipped.len(),
        report.retried.len(),
        report.failed.len(),
        report.cancelled.len(),
        report.not_started
    );
    for failed in &report.failed {
        drover::say!("  failed: {} ({}): {}; stderr: {}", failed.run_id, failed.label, failed.reason, failed.stderr_log.display());
    }
    if let Some(dir) = &report.disk_full {
        drover::say!(
            "drover: stopped launching: the results disk is full (cannot write in `{}`), so {} run(s) were not started; free space on that disk and run the same command again: finished runs are kept, the failed and not-started ones run then",
            dir.display(),
            report.not_started
        );
    }
    if let Some(reason) = report.cancel {
        drover::say!("drover: interrupted {}; finished runs are kept, rerun the same command to continue", reason.describe());
        return Ok(exit_codes::INTERRUPTED);
    }
    if !report.cancelled.is_empty() {
        // Stopped by a signal drover did not send (an administrator, a wrapper's `timeout`, a
        // killed MPI rank): not completed, so `drover run x && drover analyze x` must not go on.
        drover::say!(
            "drover: {} stopped by a signal from outside drover: {}; rerun the same command to resume {}",
            drover::words::count_as(report.cancelled.len(), "run was", "runs were"),
            report.cancelled.join(", "),
            if report.cancelled.len() == 1 { "it" } else { "them" }
        );
    }
    let all_done = report.failed.is_empty() && report.cancelled.is_empty() && prepared.busy.is_empty() && report.disk_full.is_none();
    Ok(if all_done { exit_codes::SUCCESS } else { exit_codes::RUNS_FAILED })
}

/// How long a local `drover run` waits for jobs that a killed `drover run` left running, in
/// whole seconds.
const BUSY_WAIT_VAR: &str = "DROVER_BUSY_WAIT_S";

/// [`BUSY_WAIT_VAR`]'s value: the default when it is unset or empty, else whole seconds. Any
/// other value is refused rather than read as the default: `5m` would wait 30 s, not 5 minutes.
fn parse_busy_wait(value: Option<std::ffi::OsString>) -> Result<std::time::Duration, UsageError> {
    let Some(value) = value else { return Ok(backend::DEFAULT_BUSY_WAIT) };
    let text = value.to_string_lossy();
    if text.trim().is_empty() {
        return Ok(backend::DEFAULT_BUSY_WAIT);
    }
    text.trim().parse().map(std::time::Duration::from_secs).map_err(|_| {
        UsageError(format!(
            "environment variable `{BUSY_WAIT_VAR}` = `{text}`: expected a whole number of seconds (how long to wait for jobs a killed `drover run` left running; default {})",
            backend::DEFAULT_BUSY_WAIT.as_secs()
        ))
    })
}

/// Above this many runs, `--dry-run` repeats its counts below the list.
const DRY_RUN_REPEAT_TALLY: usize = 40;

/// `3000 runs (300 configurations × 10 seeds each): 2990 done, 4 resume, 6 redo, 0 new`: what a dry run of
/// a large sweep is read for (how much is left to do), from each run's state in order.
fn dry_run_tally(states: &[backend::DryRunAction], configs: usize, slurm: bool) -> String {
    let runs = drover::words::count(states.len(), "run");
    let shape = if configs > 0 && configs < states.len() {
        format!(" ({} × {} each)", drover::words::count(configs, "configuration"), drover::words::count(states.len() / configs, "seed"))
    } else {
        String::new()
    };
    use backend::DryRunAction::{Done, Live, New, Redo, Resume, Unreadable};
    let (mut done, mut live, mut resume, mut redo, mut new, mut unreadable) = (0, 0, 0, 0, 0, 0);
    for state in states {
        match state {
            Done => done += 1,
            Live => live += 1,
            Resume => resume += 1,
            Redo => redo += 1,
            New => new += 1,
            Unreadable => unreadable += 1,
        }
    }
    // `live`: a Slurm sweep's queued or running runs, re-attached; a local sweep's runs whose
    // jobs are running now (another `drover run`'s), counted only when there are some.
    let live = (slurm || live > 0).then_some((live, Live));
    let mut counts: Vec<String> =
        [Some((done, Done)), live, Some((resume, Resume)), Some((redo, Redo)), Some((new, New))].into_iter().flatten().map(|(n, a)| format!("{n} {}", a.word())).collect();
    // A run whose files cannot be read (`drover run` would stop on it) is counted only when there is one.
    if unreadable > 0 {
        counts.push(format!("{unreadable} {}", Unreadable.word()));
    }
    format!("{runs}{shape}: {}", counts.join(", "))
}

/// The GPUs local runs with `device = "cuda" | "auto"` share, said in one line when there are any.
fn local_gpus(local: &drover::backend::local_config::LocalSettings, count_devices: impl FnOnce() -> Result<usize, String>) -> drover::backend::gpus::GpuPool {
    use drover::backend::gpus;
    let visible = std::env::var("CUDA_VISIBLE_DEVICES").ok();
    let found = gpus::detect(local.gpus.as_deref(), visible.as_deref(), count_devices);
    if let Some(note) = no_cuda_note(local.gpus.is_some() || visible.is_some(), &found) {
        drover::say!("drover: {note}");
    } else if found.ids.is_empty() {
        tracing::info!("no GPUs to share among local runs ({})", found.source);
    } else {
        drover::say!(
            "drover: sharing GPUs {} ({}) among the runs that may use CUDA, {} run(s) per GPU at a time",
            found.ids.join(","),
            found.source,
            local.runs_per_gpu
        );
    }
    gpus::GpuPool::new(found.ids, local.runs_per_gpu)
}

/// The one line a user of `device = "auto"` needs on a machine without a usable GPU (the job's
/// own note about it goes only to its log): which engine the runs get. `None` when the GPUs were
/// named (`[local] gpus`, `CUDA_VISIBLE_DEVICES`) or found.
fn no_cuda_note(named: bool, found: &drover::backend::gpus::Detected) -> Option<String> {
    (!named && found.ids.is_empty()).then(|| {
        format!("{}: runs with device = \"auto\" train on the CPU engine; runs with device = \"cuda\" fail", found.source)
    })
}

fn plugin_cmd(command: drover::plugin_cmd::PluginCommand) -> anyhow::Result<u8> {
    let env = drover::plugin_cmd::PluginEnv {
        job_bin: LocalBackend::default_job_bin(std::env::var_os("DROVER_JOB_BIN").map(PathBuf::from), exe_dir().as_deref()),
        plugin_path_env: std::env::var_os("DROVER_PLUGIN_PATH"),
        exe_dir: exe_dir(),
    };
    Ok(drover::plugin_cmd::run(command, &env, &mut std::io::stdout().lock())?)
}

/// Runs `drover-job bench <args>` with inherited stdio and returns its exit code: the
/// orchestrator never links the kernels it measures.
fn bench_cmd(args: Vec<std::ffi::OsString>) -> anyhow::Result<u8> {
    let job_bin = LocalBackend::default_job_bin(std::env::var_os("DROVER_JOB_BIN").map(PathBuf::from), exe_dir().as_deref());
    let status = std::process::Command::new(&job_bin)
        .arg("bench")
        .env("DROVER_BENCH_AS", "drover bench")
        .args(&args)
        .status()
        .with_context(|| format!("cannot start `{}` (set DROVER_JOB_BIN or build drover-job)", job_bin.display()))?;
    Ok(status.code().and_then(|c| u8::try_from(c).ok()).unwrap_or(exit_codes::FAILURE))
}

/// Arguments of `drover analyze`; the slice syntax is in `docs/analysis.md`.
#[derive(Debug, clap::Args)]
#[command(after_long_help = ANALYZE_HELP_TAIL)]
struct AnalyzeArgs {
    /// Results directories (one per sweep; several are analyzed together).
    #[arg(required = true, value_name = "RESULTS_DIR")]
    results: Vec<PathBuf>,
    /// Keep only runs where KEY OP VALUE holds (OP: = != < <= > >=; `=` takes a,b,c lists); repeatable.
    #[arg(long = "where", value_name = "KEY OP VALUE")]
    filters: Vec<String>,
    /// Group runs by these keys (comma-separated) instead of by configuration.
    #[arg(long, value_name = "KEY[,KEY...]", conflicts_with = "compare")]
    group_by: Option<String>,
    /// Rank the values of KEY (e.g. `algo`, `lr`) by IQM, with the probability that the best improves on each.
    #[arg(long, value_name = "KEY")]
    compare: Option<String>,
    /// Where `tables/` and `plots/` go (default: the results directory; required with several).
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Return that counts as success: steps to threshold, `reached`, optimality gap (default: the highest `success_return` of each environment's runs).
    #[arg(long, value_name = "RETURN", allow_hyphen_values = true, value_parser = parse_target)]
    target: Option<f64>,
    /// Bootstrap resamples for the confidence intervals (at least 100).
    #[arg(long, default_value_t = 5000, value_name = "N", value_parser = parse_reps)]
    reps: usize,
    /// Bootstrap resamples for each point of the curve and profile bands (at least 100).
    #[arg(long, default_value_t = 1000, value_name = "N", value_parser = parse_reps)]
    band_reps: usize,
    /// Seed of the bootstrap (same seed, same intervals).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Learning-curve bins over the steps axis.
    #[arg(long, default_value_t = 100, value_name = "N", value_parser = parse_bins)]
    bins: u32,
    /// Also draw learning curves of these metrics columns (default: `token_entropy`, `accuracy` when present; `''` for none).
    #[arg(long, value_name = "COLUMN[,COLUMN...]", value_delimiter = ',')]
    curves: Option<Vec<String>>,
    /// Write tables only, no plots.
    #[arg(long)]
    no_plots: bool,
    /// Print the optimized Polars plans instead of computing them.
    #[arg(long)]
    explain: bool,
    /// Also analyze run directories that are not in the results directory's `sweep.json` (runs of an earlier version of the sweep).
    #[arg(long)]
    all_runs: bool,
}

fn analyze_cmd(args: AnalyzeArgs) -> anyhow::Result<u8> {
    let out = match (&args.out, args.results.as_slice()) {
        (Some(out), _) => out.clone(),
        (None, [one]) => one.clone(),
        (None, _) => return Err(UsageError("`--out DIR` is needed when analyzing several results directories together".into()).into()),
    };
    let opts = analyze::Options {
        dirs: args.results,
        out,
        filters: args.filters,
        group_by: args.group_by,
        compare: args.compare,
        target: args.target,
        bootstrap: analyze::Bootstrap { reps: args.reps, band_reps: args.band_reps, seed: args.seed, confidence: 0.95 },
        bins: args.bins,
        profile_points: 101,
        plots: !args.no_plots,
        curves: args.curves,
        all_runs: args.all_runs,
    };
    // Written, not printed: `print!` panics on a closed pipe (`drover analyze r | head`), where
    // an error ends the command quietly (main's broken-pipe rule).
    use std::io::Write;
    if args.explain {
        let plans = analyze::explain(&opts)?;
        write!(std::io::stdout().lock(), "{plans}")?;
        return Ok(exit_codes::SUCCESS);
    }
    let outcome = analyze::analyze(&opts)?;
    let mut out = std::io::stdout().lock();
    // A command to paste: the one directory quoted for the shell, else a placeholder for each.
    let results = match opts.dirs.as_slice() {
        [one] => drover::words::shell_quote(&one.display().to_string()),
        _ => "<each results directory>".to_string(),
    };
    for line in analyze::left_out_lines(&outcome.left_out, &results) {
        // Indented lines belong to the line above them.
        if line.starts_with(' ') {
            drover::say!("{line}");
        } else {
            drover::say!("drover: {line}");
        }
    }
    write!(out, "{}", outcome.table)?;
    if let Some(law) = &outcome.law_table {
        writeln!(out, "\nentropy-performance law R = -a*exp(H) + b, fitted per run (H = {}, R = {}); mean over runs:", analyze::LAW_ENTROPY, analyze::LAW_REWARD)?;
        write!(out, "{law}")?;
    }
    writeln!(out, "{}", outcome.count_line())?;
    for best in &outcome.best {
        writeln!(out, "{best}")?;
    }
    for path in outcome.written {
        writeln!(out, "wrote {}", path.display())?;
    }
    for path in outcome.removed {
        writeln!(out, "removed {} (written by an earlier analysis into the same place, not by this one)", path.display())?;
    }
    for note in outcome.kept {
        writeln!(out, "{note}")?;
    }
    Ok(exit_codes::SUCCESS)
}

/// `--backend`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum BackendArg {
    /// Child processes on this machine.
    Local,
    /// Job arrays on a Slurm cluster.
    Slurm,
}

fn use_slurm(arg: Option<BackendArg>, plan: &plan::Plan) -> bool {
    match arg {
        Some(b) => b == BackendArg::Slurm,
        None => plan.sweep.backend == Some(BackendKind::Slurm),
    }
}

/// What a Slurm sweep is checked for before anything is submitted, and by `--dry-run` the
/// same way: runs that would see no GPU, large sweeps without a throttle, resources runs would
/// waste, paths the compute nodes cannot see and an MPI type this machine's `srun` does not
/// list (warnings), `[[slurm.overrides]]` that apply to no run (refused, or a warning when an
/// override of the file shapes the grid), and the `[slurm.arch]` folders' builds.
fn slurm_preflight(plan: &plan::Plan, job_bin: &Path) -> anyhow::Result<()> {
    // Before anything is written: every Slurm command would refuse anyway.
    drover::backend::slurm_cmd::refuse_other_cluster()?;
    let unmatched = slurm::unmatched_override_check(plan)?;
    let mut paths = vec![("the results directory", plan.results.root()), ("drover-job", job_bin)];
    paths.extend(plan.plugins.values().map(|p| ("a plugin", p.as_path())));
    let warnings =
        [
            slurm::gpu_request_warning(plan),
            slurm::throttle_warning(plan),
            slurm::node_local_warning(&paths),
            slurm::local_disk_warning_here(&paths, &Slurm::default()),
            slurm::mpi_warning(plan, &Slurm::default()),
        ]
        .into_iter()
        .flatten();
    for warning in warnings.chain(slurm::resource_warnings(plan)).chain(unmatched) {
        drover::say!("drover: warning: {warning}");
    }
    drover::backend::arch::check_builds(&plan.sweep.slurm.arch, &plan.plugins, &plan.sweep.source)?;
    Ok(())
}

fn slurm_options(job_bin: PathBuf, wait: bool) -> slurm::SlurmOptions {
    // The batch script runs on compute nodes with another working directory.
    let job_bin = std::path::absolute(&job_bin).unwrap_or(job_bin);
    slurm::SlurmOptions { job_bin, wait, slurm: Slurm::default(), quiet: false }
}

fn slurm_run(plan: &plan::Plan, job_bin: PathBuf, wait: bool) -> anyhow::Result<u8> {
    if !job_bin.is_file() {
        return Err(drover::RunError::JobBinaryMissing { path: job_bin }.into());
    }
    slurm::check_after_jobs(plan, &Slurm::default())?;
    let report = slurm::run_sweep(plan, &slurm_options(job_bin, wait))?;
    drover::say!(
        "drover: {} skipped (completed), {} re-attached, {} submitted in {:.3} s{}",
        report.skipped,
        report.attached,
        report.submitted,
        report.submit_seconds,
        if report.job_ids.is_empty() { String::new() } else { format!(" (jobs {})", report.job_ids.join(", ")) }
    );
    if report.deferred > 0 {
        let (limit, until) = match report.limit.as_deref() {
            Some(limit) => drover::backend::slurm_cmd::submit_limit_words(limit),
            None => ("Slurm's submit limit".to_string(), "jobs of yours end"),
        };
        drover::say!("drover: {} not submitted: {limit} keeps them out until {until}; `drover run` again submits them", drover::words::count(report.deferred, "run"));
    }
    if report.interrupted {
        drover::say!("drover: stopped waiting; the jobs go on (`drover status` follows them, `drover cancel` stops them)");
        return Ok(exit_codes::INTERRUPTED);
    }
    if report.deferred > 0 && report.status.is_none() {
        return Ok(exit_codes::NOT_ALL_SUBMITTED);
    }
    let Some(status) = report.status else { return Ok(exit_codes::SUCCESS) };
    let failed: Vec<_> = status.runs.iter().filter(|r| r.state != drover::status::RunState::Done).collect();
    for r in &failed {
        drover::say!("  {} {} ({}): {}", r.state.as_str(), r.run_id, r.label, r.reason.as_deref().unwrap_or("-"));
        if let Some(log) = r.logs.last() {
            drover::say!("    log: {}", log.display());
        }
    }
    Ok(if failed.is_empty() { exit_codes::SUCCESS } else { exit_codes::RUNS_FAILED })
}

fn status_cmd(results: &Path, json: bool) -> anyhow::Result<u8> {
    use std::io::Write;
    let mut report = slurm::status(results, &Slurm::default())?;
    report.count_other_run_dirs();
    let mut out = std::io::stdout().lock();
    if json {
        // Encoded first: `to_writer` would wrap a closed pipe's error in a `serde_json::Error`,
        // which main's broken-pipe rule does not see through (`drover status r --json | true`
        // then said "error: Broken pipe", exit code 1).
        let text = serde_json::to_string_pretty(&report)?;
        writeln!(out, "{text}")?;
    } else {
        write!(out, "{}", report.render())?;
    }
    Ok(exit_codes::SUCCESS)
}

fn cancel_cmd(results: &Path) -> anyhow::Result<u8> {
    use drover::backend::local_status::{self, LocalCancel};
    let ids = match slurm::cancel(results, &Slurm::default()) {
        Err(drover::RunError::NotSlurm { .. }) => {
            // A local sweep: ask its `drover run` to stop, as Ctrl-C would, and wait as long as
            // that stop takes: its grace period (SIGKILL after it) and a little more.
            match local_status::cancel(results, std::time::Duration::from_secs(5))? {
                LocalCancel::NothingRunning => drover::say!("drover: no `drover run` is running this sweep; nothing to cancel"),
                LocalCancel::Stopped(who) => {
                    drover::say!("drover: stopped `drover run` ({who}); finished runs are kept, stopped ones are marked cancelled")
                }
                LocalCancel::Stopping(who) => drover::say!("drover: asked `drover run` ({who}) to stop; it is still stopping its jobs"),
            }
            return Ok(exit_codes::SUCCESS);
        }
        other => other?,
    };
    if ids.is_empty() {
        drover::say!("drover: nothing queued or running; nothing to cancel");
    } else {
        drover::say!("drover: cancelled job(s) {}; unfinished runs are marked cancelled", ids.join(", "));
    }
    Ok(exit_codes::SUCCESS)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::{dry_run_tally, no_cuda_note, Cli};
    use drover::backend::gpus::Detected;

    #[test]
    fn a_machine_without_cuda_is_said_once_with_the_engine_auto_runs_get() {
        let none = Detected { ids: Vec::new(), source: "no CUDA device: libcuda was not found".into() };
        assert_eq!(
            no_cuda_note(false, &none).as_deref(),
            Some("no CUDA device: libcuda was not found: runs with device = \"auto\" train on the CPU engine; runs with device = \"cuda\" fail")
        );
        assert_eq!(no_cuda_note(true, &none), None, "`gpus = []` or an empty CUDA_VISIBLE_DEVICES is the user's choice");
        let two = Detected { ids: vec!["0".into(), "1".into()], source: "drover-job devices".into() };
        assert_eq!(no_cuda_note(false, &two), None);
    }

    /// Review finding (research): warnings from the library reached the user as log lines
    /// (`2026-11-29T14:23:44Z WARN drover::analyze::pipeline: ...`) beside drover's own
    /// `drover: warning: ...` lines.
    #[test]
    fn library_warnings_read_as_drovers_own_lines() {
        use std::sync::{Arc, Mutex};
        struct Buf(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Buf {
            fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
                self.0.lock().map_err(|_| std::io::Error::other("poisoned"))?.extend_from_slice(bytes);
                Ok(bytes.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let out = Arc::new(Mutex::new(Vec::new()));
        let sink = out.clone();
        let subscriber = super::user_subscriber(move || Buf(sink.clone()));
        tracing::subscriber::with_default(subscriber, || {
            tracing::warn!(run = "0123456789abcdef", "cannot retry: disk full");
            tracing::info!("launched");
        });
        let text = String::from_utf8(out.lock().map(|b| b.clone()).unwrap_or_default()).unwrap_or_default();
        assert_eq!(text, "drover: warning: cannot retry: disk full run=\"0123456789abcdef\"\n");
    }

    /// Review finding (CLI contract 8): `NO_COLOR` was not honoured; a non-empty value turns
    /// colour off, an empty one does not (no-color.org), and a pipe never gets colour.
    #[test]
    fn no_color_turns_colour_off_on_a_terminal() {
        use std::ffi::OsStr;
        assert!(super::ansi_logs(true, None));
        assert!(super::ansi_logs(true, Some(OsStr::new(""))), "empty is unset");
        assert!(!super::ansi_logs(true, Some(OsStr::new("1"))));
        assert!(!super::ansi_logs(false, None));
    }

    /// The dry run's header says how much is left to do, and the sweep's shape.
    #[test]
    fn a_dry_run_counts_its_runs_by_state() {
        use drover::backend::DryRunAction::{Done, Live, New, Redo, Resume};
        let states = [Done, New, Redo, Resume, Done, Done];
        assert_eq!(dry_run_tally(&states, 2, false), "6 runs (2 configurations × 3 seeds each): 3 done, 1 resume, 1 redo, 1 new");
        assert_eq!(dry_run_tally(&states[..1], 1, false), "1 run: 1 done, 0 resume, 0 redo, 0 new", "one seed per configuration: no shape");
        assert_eq!(dry_run_tally(&[], 0, false), "0 runs: 0 done, 0 resume, 0 redo, 0 new");
        assert_eq!(dry_run_tally(&[Live, Done], 2, true), "2 runs: 1 done, 1 live, 0 resume, 0 redo, 0 new");
        assert_eq!(dry_run_tally(&[Live, New], 2, false), "2 runs: 0 done, 1 live, 0 resume, 0 redo, 1 new", "a local run being trained");
    }

    #[test]
    fn run_help_tells_the_env_overrides_and_exit_codes() {
        let help = Cli::try_parse_from(["drover", "run", "--help"]).expect_err("help is an early exit").to_string();
        for needle in [
            "DROVER_RUN__NUM_ENVS=16",
            "then `--set`",
            "3 invalid sweep file",
            "4 some runs failed",
            "6 Slurm's submit limit",
            "75 the results directory is in use",
            "130 interrupted",
        ] {
            assert!(help.contains(needle), "`{needle}` missing from:\n{help}");
        }
        use drover::exit_codes::*;
        assert_eq!(
            (SUCCESS, FAILURE, USAGE, CONFIG_INVALID, RUNS_FAILED, NO_RESULTS, NOT_ALL_SUBMITTED, BUSY, INTERRUPTED),
            (0, 1, 2, 3, 4, 5, 6, 75, 130),
            "the help texts list these"
        );
    }

    /// Review finding (CLI contract 7): only `drover run --help` said what its exit codes
    /// mean; every command's `--help` now does (scripts branch on them).
    #[test]
    fn every_commands_help_tells_its_exit_codes() {
        for (command, needles) in [
            (&["status"][..], &["Exit codes: 0 the report was printed", "2 bad command line"][..]),
            (&["cancel"], &["Exit codes: 0 cancelled (or, locally, asked to stop", "or nothing was running", "1 error"]),
            (&["analyze"], &["Exit codes: 0 tables", "5 no completed run with metrics"]),
            (&["plugin"], &["Exit codes: 0 done", "1 error, or a failed check"]),
            (&["bench"], &["Exit codes: those of `drover-job bench`", "2 bad arguments"]),
        ] {
            let mut args = vec!["drover"];
            args.extend(command);
            args.push("--help");
            let help = Cli::try_parse_from(&args).expect_err("help is an early exit").to_string();
            for needle in needles {
                assert!(help.contains(needle), "{command:?}: `{needle}` missing from:\n{help}");
            }
        }
    }

    /// Review finding 10: `--target -5` was taken for an option, `--target nan` and `--bins 0`
    /// were accepted without a word, and `--reps 1` gave points outside their own interval.
    #[test]
    fn analyze_refuses_bad_numbers_in_words_and_takes_negative_targets() {
        let parse = |extra: &[&str]| {
            let mut args = vec!["drover", "analyze", "results"];
            args.extend(extra);
            match Cli::try_parse_from(args) {
                Ok(cli) => Ok(cli),
                Err(e) => Err((e.to_string(), e.use_stderr())),
            }
        };
        let Ok(super::Cli { command: super::Command::Analyze(args), .. }) = parse(&["--target", "-5"]) else { panic!("--target -5 refused") };
        assert_eq!(args.target, Some(-5.0));
        assert!(parse(&["--target", "-1e3", "--bins", "1", "--reps", "100", "--band-reps", "100"]).is_ok());
        for (extra, message) in [
            (&["--target", "nan"][..], "invalid value 'nan' for '--target <RETURN>': must be a finite number"),
            (&["--target", "inf"], "invalid value 'inf' for '--target <RETURN>': must be a finite number"),
            (&["--target", "-inf"], "invalid value '-inf' for '--target <RETURN>': must be a finite number"),
            (&["--target", "high"], "invalid value 'high' for '--target <RETURN>': invalid float literal: expected a number"),
            (&["--bins", "0"], "invalid value '0' for '--bins <N>': must be at least 1"),
            (&["--reps", "1"], "invalid value '1' for '--reps <N>': must be at least 100"),
            (&["--reps", "0"], "invalid value '0' for '--reps <N>': must be at least 100"),
            (&["--band-reps", "20"], "invalid value '20' for '--band-reps <N>': must be at least 100"),
        ] {
            let (err, usage) = parse(extra).err().unwrap_or_else(|| panic!("{extra:?} accepted"));
            assert!(err.contains(message) && usage, "{extra:?}: {err}");
        }
    }

    /// Review finding (CLI contract 10): a `DROVER_BUSY_WAIT_S` that is not a number was read
    /// as the default without a word.
    #[test]
    fn a_busy_wait_that_is_not_whole_seconds_is_refused_naming_the_variable() {
        use std::time::Duration;
        assert_eq!(super::parse_busy_wait(None).ok(), Some(Duration::from_secs(30)));
        assert_eq!(super::parse_busy_wait(Some(" ".into())).ok(), Some(Duration::from_secs(30)), "empty is unset");
        assert_eq!(super::parse_busy_wait(Some("0".into())).ok(), Some(Duration::ZERO));
        assert_eq!(super::parse_busy_wait(Some("90 ".into())).ok(), Some(Duration::from_secs(90)));
        for bad in ["5m", "-1", "1.5", "abc"] {
            let err = super::parse_busy_wait(Some(bad.into())).expect_err(bad).to_string();
            assert!(err.starts_with(&format!("environment variable `DROVER_BUSY_WAIT_S` = `{bad}`: expected a whole number of seconds")), "{err}");
        }
    }

    #[test]
    fn jobs_zero_is_refused_in_words_a_user_reads() {
        let err = Cli::try_parse_from(["drover", "run", "s.toml", "-j", "0"]).expect_err("-j 0 refused").to_string();
        assert!(err.contains("invalid value '0' for '--jobs <N>': must be at least 1"), "{err}");
        let err = Cli::try_parse_from(["drover", "run", "s.toml", "-j", "two"]).expect_err("-j two refused").to_string();
        assert!(err.contains("expected a whole number of runs at once"), "{err}");
        assert!(Cli::try_parse_from(["drover", "run", "s.toml", "-j", "3"]).is_ok());
    }
}
