//! The `drover` CLI: a thin layer over the library (parse args, call, print, map to exit codes).

use std::io::IsTerminal;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use drover::backend::local::LocalBackend;
use drover::backend::{self, Backend, RunState};
use drover::exit_codes;
use drover::plan::{self, PlanOptions};
use drover::{analyze, AnalyzeError, ConfigError};
use polars::prelude::IntoLazy;

/// Expand RL sweeps into runs, launch them, and analyze the results.
#[derive(Debug, Parser)]
#[command(name = "drover", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a sweep: expand it, skip completed runs, launch the rest.
    Run {
        /// The sweep file (TOML).
        sweep: PathBuf,
        /// Override a key, the value parsed as TOML: `--set run.lr=1e-3`, `--set sweep.seeds=[1,2]`.
        #[arg(long = "set", value_name = "KEY=VALUE")]
        sets: Vec<String>,
        /// Runs at once (default: `max_parallel` of the sweep file, else the number of cores).
        #[arg(short = 'j', long = "jobs", value_name = "N")]
        jobs: Option<NonZeroUsize>,
        /// Results directory (default: `results_dir` of the sweep file, else `results/<name>`).
        #[arg(long = "results", value_name = "DIR")]
        results: Option<PathBuf>,
        /// List the runs (id, state, label, seed) without launching anything.
        #[arg(long)]
        dry_run: bool,
    },
    /// Summarize a results directory per configuration; writes `<dir>/tables/`.
    Analyze {
        /// The results directory of a sweep.
        results: PathBuf,
        /// Print the optimized Polars plan of the summary instead of computing it.
        #[arg(long)]
        explain: bool,
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
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let result = match cli.command {
        Command::Run { sweep, sets, jobs, results, dry_run } => run(sweep, sets, jobs, results, dry_run),
        Command::Analyze { results, explain } => analyze_cmd(&results, explain),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            // A closed pipe (`drover run --dry-run | head`) is not an error worth reporting.
            if e.chain().any(|c| c.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)) {
                return ExitCode::from(exit_codes::SUCCESS);
            }
            eprintln!("error: {e:#}");
            let code = if e.downcast_ref::<ConfigError>().is_some() {
                exit_codes::CONFIG_INVALID
            } else if matches!(e.downcast_ref::<AnalyzeError>(), Some(AnalyzeError::NoCompletedRuns { .. })) {
                exit_codes::NO_RESULTS
            } else {
                exit_codes::FAILURE
            };
            ExitCode::from(code)
        }
    }
}

fn exe_dir() -> Option<PathBuf> {
    std::env::current_exe().ok().and_then(|p| p.parent().map(Path::to_path_buf))
}

fn run(
    sweep: PathBuf,
    sets: Vec<String>,
    jobs: Option<NonZeroUsize>,
    results: Option<PathBuf>,
    dry_run: bool,
) -> anyhow::Result<u8> {
    let opts = PlanOptions { sweep_file: sweep, sets, env: std::env::vars().collect(), results, jobs, exe_dir: exe_dir() };
    let plan = plan::plan(&opts)?;

    if dry_run {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        writeln!(out, "sweep `{}`: {} runs -> {}", plan.sweep.name, plan.runs.len(), plan.results.root().display())?;
        for run in &plan.runs {
            let spec = plan.job_spec(run);
            let state = match backend::run_state(&plan.results.run_dir(&spec.run_id), &spec) {
                RunState::Completed => "done",
                RunState::Unfinished => "redo",
                RunState::New => "new",
            };
            writeln!(out, "{}  {state:<4}  seed={:<6} {}", run.run_id, run.seed, run.label)?;
        }
        return Ok(exit_codes::SUCCESS);
    }

    let job_bin = LocalBackend::default_job_bin(std::env::var_os("DROVER_JOB_BIN").map(PathBuf::from), exe_dir().as_deref());
    let show_progress = std::io::stderr().is_terminal() && std::env::var_os("CI").is_none_or(|v| v == "false");
    // Signal handlers go in before anything is written, so Ctrl-C is always handled in order.
    let mut backend = LocalBackend::new(job_bin, plan.max_parallel.get(), show_progress)?;
    let prepared = backend::prepare(&plan).context("cannot prepare the results directory")?;
    eprintln!(
        "drover: sweep `{}`: {} runs, {} already completed, launching {} (up to {} at once, {} backend) -> {}",
        plan.sweep.name,
        plan.runs.len(),
        prepared.skipped.len(),
        prepared.pending.len(),
        plan.max_parallel,
        backend.name(),
        plan.results.root().display()
    );
    let report = backend.launch(prepared.pending)?;

    eprintln!(
        "drover: {} completed, {} skipped (already completed), {} failed, {} cancelled, {} not started",
        report.completed.len(),
        prepared.skipped.len(),
        report.failed.len(),
        report.cancelled.len(),
        report.not_started
    );
    for failed in &report.failed {
        eprintln!("  failed: {} ({}): {}; stderr: {}", failed.run_id, failed.label, failed.reason, failed.stderr_log.display());
    }
    if let Some(reason) = report.cancel {
        eprintln!("drover: interrupted ({reason:?}); finished runs are kept, rerun the same command to continue");
        return Ok(exit_codes::INTERRUPTED);
    }
    Ok(if report.failed.is_empty() { exit_codes::SUCCESS } else { exit_codes::RUNS_FAILED })
}

fn analyze_cmd(dir: &Path, explain: bool) -> anyhow::Result<u8> {
    let loaded = analyze::load_results(dir)?;
    for (run, why) in &loaded.left_out {
        tracing::warn!(run = %run, "left out of the analysis: {why}");
    }
    if explain {
        let plan = analyze::per_config(analyze::per_run(loaded.metrics, loaded.runs));
        println!("{}", plan.explain(true).context("cannot explain the plan")?);
        return Ok(exit_codes::SUCCESS);
    }
    // The one place where the lazy plans are executed.
    let mut runs = analyze::per_run(loaded.metrics, loaded.runs).collect().context("cannot compute the per-run table")?;
    let mut summary = analyze::per_config(runs.clone().lazy()).collect().context("cannot compute the summary")?;
    let tables = drover::layout::ResultsDir::new(dir).tables_dir();
    let written = analyze::write_tables(&tables, &mut summary, &mut runs)?;
    print!("{}", analyze::render_table(&summary)?);
    println!(
        "{} completed runs ({} left out: unfinished or failed); final return = mean of the last {} iterations with episodes",
        loaded.completed,
        loaded.left_out.len(),
        analyze::FINAL_WINDOW
    );
    for path in written {
        println!("wrote {}", path.display());
    }
    Ok(exit_codes::SUCCESS)
}
