//! `drover-job`: runs one run spec (one rank) and writes its metrics, summary and exit marker.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use drover_job::summary::{ExitMarker, ExitStatus};
use drover_job::{exit_codes, fsio, signals::CancelFlag, train, JobSpec};

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
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let spec = match JobSpec::load(&args.spec) {
        Ok(spec) => spec,
        Err(e) => {
            eprintln!("drover-job: {e:#}");
            return ExitCode::from(exit_codes::USAGE);
        }
    };
    let out = args
        .out
        .or_else(|| args.spec.parent().map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("."));
    if let Err(e) = std::fs::create_dir_all(&out) {
        eprintln!("drover-job: cannot create output directory `{}`: {e}", out.display());
        return ExitCode::from(exit_codes::USAGE);
    }
    let cancel = match CancelFlag::install() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("drover-job: cannot install signal handlers: {e}");
            return ExitCode::from(exit_codes::FAILED);
        }
    };
    let (marker, code) = match train::run(&spec, &out, &cancel) {
        Ok(outcome) if outcome.status == ExitStatus::Completed => {
            (ExitMarker::now(&spec.run_id, ExitStatus::Completed, None), exit_codes::COMPLETED)
        }
        Ok(outcome) => (
            ExitMarker::now(&spec.run_id, outcome.status, Some("stopped by a signal".into())),
            exit_codes::CANCELLED,
        ),
        Err(e) => {
            let reason = anyhow::Error::from(e);
            eprintln!("drover-job: run {} failed: {reason:#}", spec.run_id);
            (
                ExitMarker::now(&spec.run_id, ExitStatus::Failed, Some(format!("{reason:#}"))),
                exit_codes::FAILED,
            )
        }
    };
    if let Err(e) = fsio::write_json_atomic(&out.join("exit.json"), &marker) {
        eprintln!("drover-job: {e:#}");
        return ExitCode::from(exit_codes::FAILED);
    }
    ExitCode::from(code)
}
