//! `drover-job`: runs one run spec (one rank) and writes its metrics, summary and exit marker.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use drover_job::summary::{self, ExitMarker, ExitStatus};
use drover_job::comm::{Communicator, Solo};
use drover_job::checkpoint::{self, AfterStop};
use drover_job::signals::StopCause;
use drover_job::{exit_codes, fsio, signals::CancelFlag, train, JobSpec};

/// Prints to stderr like `eprintln!` but never panics: on a full disk the job's stderr (a log file
/// in the run directory) cannot be written either, and a panic there would replace the real
/// error with exit code 101.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr().lock(), $($arg)*);
    }};
}

/// Stderr for log lines, dropping what cannot be written: with the results disk full, the
/// job's stderr log cannot grow, and tracing's writer would otherwise panic (exit code 101)
/// before the job could report the real error.
struct LossyStderr;

impl std::io::Write for LossyStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let _ = std::io::stderr().write_all(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let _ = std::io::stderr().flush();
        Ok(())
    }
}

/// Whether log lines get colour codes: only on a terminal (job logs are files the user greps),
/// and not when `NO_COLOR` is set to anything but the empty string (no-color.org). A twin of
/// `drover`'s (orchestrator/src/main.rs): the two binaries share no crate; keep them alike.
fn ansi_logs(terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    terminal && no_color.is_none_or(std::ffi::OsStr::is_empty)
}

/// Runs one drover run: the orchestrator starts one of these per run (per MPI rank).
#[derive(Parser, Debug)]
#[command(name = "drover-job", version, about)]
struct Args {
    /// The run's `spec.json`.
    #[arg(long)]
    spec: PathBuf,
    /// The run's output directory (defaults to the spec's directory).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Load the plugin from this folder, under the file name the spec's `plugin_path` has: how
    /// a node of another architecture runs the build made for it (`[slurm.arch]`).
    #[arg(long, value_name = "DIR")]
    plugin_dir: Option<PathBuf>,
    /// Checkpoint and stop on this signal (`USR1`, `USR2`, ...) and on SIGTERM, and resume from
    /// the checkpoint when started again: what the Slurm backend's batch script passes.
    #[arg(long, value_name = "SIGNAL")]
    checkpoint_signal: Option<String>,
    /// With `--checkpoint-signal`: time-limit stops allowed before the run counts as failed.
    #[arg(long, value_name = "N", default_value_t = 3)]
    max_timeouts: u32,
    /// With `--checkpoint-signal`: SIGTERM stops (preemptions) allowed before the run counts as failed.
    #[arg(long, value_name = "N", default_value_t = 10)]
    max_preemptions: u32,
    /// With `--checkpoint-signal`: also checkpoint (and go on) every this many seconds, so that a
    /// node failure or a kill without warning loses at most that much training.
    #[arg(long, value_name = "SECONDS", value_parser = positive_seconds)]
    checkpoint_every: Option<f64>,
}

/// `--checkpoint-every`: a finite number of seconds above 0.
fn positive_seconds(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(s) if s.is_finite() && s > 0.0 && s < 1e9 => Ok(s),
        _ => Err(format!("`{text}`: expected a number of seconds above 0")),
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(|| LossyStderr)
        .with_ansi(ansi_logs(std::io::IsTerminal::is_terminal(&std::io::stderr()), std::env::var_os("NO_COLOR").as_deref()))
        .init();
    // Keeps the version marker in the binary: nothing else reads it.
    std::hint::black_box(drover_job::BUILD_MARKER.as_ptr());
    // `drover-job plugin info|check <file.so>` (see `plugin_cmd`); every other command line is a run.
    if let Some(code) = drover_job::plugin_cmd::run_if_requested() {
        return ExitCode::from(code);
    }
    // `drover-job devices` (see `devices_cmd`), what the local backend asks before sharing GPUs.
    if let Some(code) = drover_job::devices_cmd::run_if_requested() {
        return ExitCode::from(code);
    }
    // `drover-job bench rollout ...` (see `bench`), what `drover bench` runs.
    if let Some(code) = drover_job::bench::run_if_requested() {
        return ExitCode::from(code);
    }
    let args = Args::parse();
    let mut spec = match JobSpec::load(&args.spec) {
        Ok(spec) => spec,
        Err(e) => {
            say!("drover-job: {e:#}");
            return ExitCode::from(exit_codes::USAGE);
        }
    };
    if let Some(dir) = &args.plugin_dir {
        match spec.plugin_path.file_name() {
            Some(name) => {
                let here = dir.join(name);
                tracing::info!("plugin: {} (--plugin-dir; the spec names {})", here.display(), spec.plugin_path.display());
                spec.plugin_path = here;
            }
            None => {
                say!("drover-job: --plugin-dir: the spec's plugin_path `{}` has no file name", spec.plugin_path.display());
                return ExitCode::from(exit_codes::USAGE);
            }
        }
    }
    let out = args.out.unwrap_or_else(|| drover_job::fsio::folder_of(&args.spec).to_path_buf());
    if let Err(e) = std::fs::create_dir_all(&out) {
        say!("drover-job: cannot create output directory `{}`: {e}", out.display());
        return ExitCode::from(exit_codes::USAGE);
    }
    // Taken before anything is written and held until the process ends: while it is held,
    // `drover run` neither archives this run nor starts it again. The ranks of a multi-rank job
    // share `.ranks.lock` instead (their launcher holds `.job.lock`, the descriptor the local
    // backend hands down, but may die before them).
    let locked = if spec.run.ranks <= 1 { drover_job::lock::acquire(&out) } else { drover_job::lock::acquire_ranks(&out) };
    let _job_lock = match locked {
        Ok(lock) => Some(lock),
        // Refusing would fail every run of a sweep on such a filesystem, each retried in
        // vain; under Slurm the array task already keeps a single writer per run.
        Err(e @ drover_job::lock::JobLockError::Unsupported { .. }) => {
            say!("drover-job: warning: {e}; running without the run lock, so keep one drover run per results directory");
            None
        }
        Err(e) => {
            say!("drover-job: {e}");
            return ExitCode::from(exit_codes::USAGE);
        }
    };
    let installed = match &args.checkpoint_signal {
        None => CancelFlag::install(),
        Some(name) => match drover_job::signals::checkpoint_signal_number(name) {
            Some(sig) => CancelFlag::install_checkpointing(sig),
            None => {
                say!("drover-job: --checkpoint-signal `{name}`: expected one of USR1, USR2, HUP, ALRM, URG, XCPU");
                return ExitCode::from(exit_codes::USAGE);
            }
        },
    };
    let budgets = checkpoint::Budgets { max_timeouts: args.max_timeouts, max_preemptions: args.max_preemptions };
    let cancel = match installed {
        Ok(c) => c,
        Err(e) => {
            say!("drover-job: cannot install signal handlers: {e}");
            return ExitCode::from(exit_codes::FAILED);
        }
    };
    // A rank outliving its launcher would train on unwatched (and, after `drover run` was
    // killed outright, `mpirun` goes first): it stops as on any SIGTERM instead.
    if spec.run.ranks > 1 {
        if let Err(e) = drover_job::signals::stop_when_parent_dies() {
            say!("drover-job: warning: cannot ask to be stopped with the MPI launcher: {e}");
        }
    }
    // MPI is initialised only for multi-rank specs; the Universe lives here and drops last,
    // which finalizes MPI after every rank has written what it writes.
    #[cfg(feature = "mpi")]
    let universe = if spec.run.ranks > 1 {
        match mpi::initialize() {
            Some(u) => Some(u),
            None => {
                say!("drover-job: MPI was already initialised");
                return ExitCode::from(exit_codes::FAILED);
            }
        }
    } else {
        None
    };
    #[cfg(feature = "mpi")]
    let mpi_comm = universe.as_ref().map(drover_job::comm::Mpi::new);
    #[cfg(feature = "mpi")]
    let comm: &dyn Communicator = match &mpi_comm {
        Some(c) => c,
        None => &Solo,
    };
    #[cfg(not(feature = "mpi"))]
    let comm: &dyn Communicator = &Solo;
    if spec.run.ranks > 1 && comm.size() == 1 {
        if cfg!(feature = "mpi") {
            say!(
                "drover-job: run {} asks for {} ranks, but this drover-job was started as one process: \
                 start it with `mpirun -np {}` (or `srun`), as drover does",
                spec.run_id, spec.run.ranks, spec.run.ranks
            );
        } else {
            say!(
                "drover-job: run {} asks for {} ranks, but this drover-job was built without MPI \
                 (rebuild with `--features drover-job/mpi`, see scripts/install-mpi.sh)",
                spec.run_id, spec.run.ranks
            );
        }
        return ExitCode::from(exit_codes::USAGE);
    }
    let rank0 = comm.rank() == 0;
    if let Some(reason) = cancel.checkpointing().then(|| checkpoint::preemption_budget_spent(&out, budgets, std::env::var("SLURM_JOB_ID").ok().as_deref())).flatten() {
        say!("drover-job: run {}: {reason}; giving up", spec.run_id);
        let marker = ExitMarker::budget_spent(&spec.run_id, "max_preemptions", reason);
        if rank0 {
            if let Err(e) = fsio::write_json_atomic(&out.join("exit.json"), &marker) {
                say!("drover-job: {e:#}");
            }
        }
        return ExitCode::from(exit_codes::FAILED);
    }

    let checkpoint_every = args.checkpoint_every.map(std::time::Duration::from_secs_f64);
    let (marker, code) = match train::run(&spec, &out, &cancel, comm, checkpoint_every) {
        Ok(outcome) if outcome.status == ExitStatus::Completed => {
            (ExitMarker::now(&spec.run_id, ExitStatus::Completed, None), exit_codes::COMPLETED)
        }
        // Under Slurm a stop with a checkpoint interrupts the run rather than ending it.
        Ok(train::TrainOutcome { checkpoint: Some(iteration), stop, .. }) if cancel.checkpointing() => {
            // The cause the ranks agreed on, not this rank's own (it may have seen no signal).
            let cause = stop.unwrap_or(StopCause::Terminate);
            match checkpoint::after_stop_on_all_ranks(comm, &out, cause, iteration, budgets) {
                Ok(AfterStop::Requeue) => {
                    say!("drover-job: run {}: time limit near: checkpointed at iteration {iteration}, requeueing", spec.run_id);
                    return ExitCode::from(exit_codes::REQUEUE);
                }
                Ok(AfterStop::Cancelled(reason)) => {
                    (ExitMarker::now(&spec.run_id, ExitStatus::Cancelled, Some(reason)), exit_codes::CANCELLED)
                }
                Ok(AfterStop::Failed(reason)) => (ExitMarker::budget_spent(&spec.run_id, "max_timeouts", reason), exit_codes::FAILED),
                Err(e) => (ExitMarker::failed(&spec.run_id, format!("{e:#}"), summary::failure_cause(&e)), exit_codes::FAILED),
            }
        }
        Ok(outcome) => (
            ExitMarker::now(&spec.run_id, outcome.status, Some("stopped by a signal".into())),
            exit_codes::CANCELLED,
        ),
        Err(e) => {
            let cause = summary::failure_cause(&e);
            let reason = anyhow::Error::from(e);
            say!("drover-job: run {} failed on rank {}: {reason:#}", spec.run_id, comm.rank());
            (ExitMarker::failed(&spec.run_id, format!("{reason:#}"), cause), exit_codes::FAILED)
        }
    };
    if rank0 {
        // The marker vouches for these files: they reach the disk before it does (`spec.json`
        // too: the orchestrator writes it without an fsync).
        let durable = fsio::sync_files(&out, &["spec.json", "metrics.jsonl", "metrics.parquet", "summary.json"]);
        if let Err(e) = durable.and_then(|()| fsio::write_json_atomic(&out.join("exit.json"), &marker)) {
            say!("drover-job: {e:#}");
            return ExitCode::from(exit_codes::FAILED);
        }
    }
    if code == exit_codes::FAILED && comm.size() > 1 {
        // The other ranks may be waiting in a collective: take the whole job down now.
        comm.abort(i32::from(code));
    }
    ExitCode::from(code)
}

#[cfg(test)]
mod tests {
    /// Review finding (CLI contract 8): `NO_COLOR` was not honoured; a non-empty value turns
    /// colour off, an empty one does not (no-color.org), and a log file never gets colour.
    #[test]
    fn no_color_turns_colour_off_on_a_terminal() {
        use std::ffi::OsStr;
        assert!(super::ansi_logs(true, None));
        assert!(super::ansi_logs(true, Some(OsStr::new(""))), "empty is unset");
        assert!(!super::ansi_logs(true, Some(OsStr::new("1"))));
        assert!(!super::ansi_logs(false, None));
    }
}
