//! The local backend: each run is a `drover-job` child process in its own process group.
//!
//! One event loop over `Event`s (signals, child exits, timer ticks). Cancellation ladder:
//! first SIGINT/SIGTERM → stop launching and SIGTERM every running job's process group;
//! after `grace` (or on a second signal) → SIGKILL. Runs that finished are never touched.

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use crate::backend::{Backend, CancelReason, FailedRun, LaunchReport, PendingRun};
use crate::error::RunError;
use crate::layout::{self, ExitRecord, ExitStatus as RunExit, EXIT_JSON};

/// How long jobs get between SIGTERM and SIGKILL by default (enough to write exit.json).
pub const DEFAULT_GRACE: Duration = Duration::from_secs(10);

/// Runs jobs as local child processes, at most `max_parallel` at once.
pub struct LocalBackend {
    job_bin: PathBuf,
    max_parallel: usize,
    grace: Duration,
    progress: bool,
    signals: Option<Signals>,
}

impl LocalBackend {
    /// A backend that runs `job_bin`; `progress` shows an indicatif bar on stderr.
    ///
    /// Installs the SIGINT/SIGTERM handlers now, so a Ctrl-C during preparation is not lost
    /// (and does not kill the process before the runs it already launched are handled).
    pub fn new(job_bin: PathBuf, max_parallel: usize, progress: bool) -> Result<Self, RunError> {
        if !job_bin.is_file() {
            return Err(RunError::JobBinaryMissing { path: job_bin });
        }
        let signals = Signals::new([SIGINT, SIGTERM]).map_err(RunError::Signals)?;
        Ok(LocalBackend { job_bin, max_parallel: max_parallel.max(1), grace: DEFAULT_GRACE, progress, signals: Some(signals) })
    }

    /// Sets the SIGTERM → SIGKILL grace period.
    pub fn with_grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// `DROVER_JOB_BIN` if set, else `drover-job` beside the running executable.
    pub fn default_job_bin(env_override: Option<PathBuf>, exe_dir: Option<&Path>) -> PathBuf {
        env_override.unwrap_or_else(|| exe_dir.unwrap_or(Path::new(".")).join("drover-job"))
    }
}

/// Everything the event loop reacts to.
enum Event {
    Signal,
    Exited { slot: usize, status: std::io::Result<ExitStatus> },
}

struct Running {
    run: PendingRun,
    pgid: i32,
}

impl Backend for LocalBackend {
    fn name(&self) -> &'static str {
        "local"
    }

    fn launch(&mut self, pending: Vec<PendingRun>) -> Result<LaunchReport, RunError> {
        let (tx, rx) = mpsc::channel::<Event>();
        let mut signals = self.signals.take().ok_or_else(|| RunError::Signals(std::io::Error::other("launch called twice")))?;
        let handle = signals.handle();
        let signal_tx = tx.clone();
        let signal_thread = std::thread::spawn(move || {
            for _ in signals.forever() {
                if signal_tx.send(Event::Signal).is_err() {
                    break;
                }
            }
        });

        let bar = progress_bar(pending.len() as u64, self.progress);
        let mut report = LaunchReport::default();
        let mut queue: VecDeque<PendingRun> = pending.into();
        let mut running: HashMap<usize, Running> = HashMap::new();
        let mut next_slot = 0usize;
        let mut kill_at: Option<Instant> = None;

        loop {
            while report.cancel.is_none() && running.len() < self.max_parallel {
                let Some(run) = queue.pop_front() else { break };
                match spawn(&self.job_bin, &run) {
                    Ok(mut child) => {
                        let pgid = child.id() as i32;
                        let slot = next_slot;
                        next_slot += 1;
                        let tx = tx.clone();
                        // One waiter thread per child: the loop stays a plain channel receive.
                        std::thread::spawn(move || {
                            let status = child.wait();
                            let _ = tx.send(Event::Exited { slot, status });
                        });
                        tracing::info!(run = %run.run_id, label = %run.label, attempt = run.attempt, "launched");
                        running.insert(slot, Running { run, pgid });
                    }
                    Err(reason) => {
                        bar.inc(1);
                        report.failed.push(FailedRun { run_id: run.run_id.clone(), label: run.label.clone(), reason, stderr_log: run.stderr_log() });
                    }
                }
                update_message(&bar, &running, &report);
            }
            if running.is_empty() && (queue.is_empty() || report.cancel.is_some()) {
                break;
            }

            let timeout = match kill_at {
                Some(at) => at.saturating_duration_since(Instant::now()).min(Duration::from_millis(500)),
                None => Duration::from_millis(500),
            };
            match rx.recv_timeout(timeout) {
                Ok(Event::Signal) => {
                    let reason = if report.cancel.is_some() { CancelReason::SecondSignal } else { CancelReason::Signal };
                    report.cancel = report.cancel.max(Some(reason));
                    match reason {
                        CancelReason::Signal => {
                            bar.suspend(|| {
                                eprintln!(
                                    "drover: stopping: no new runs; asking {} running job(s) to stop (SIGKILL in {}s, or press Ctrl-C again)",
                                    running.len(),
                                    self.grace.as_secs()
                                )
                            });
                            signal_all(&running, libc::SIGTERM);
                            kill_at = Some(Instant::now() + self.grace);
                        }
                        _ => {
                            bar.suspend(|| eprintln!("drover: second signal: killing {} job(s)", running.len()));
                            signal_all(&running, libc::SIGKILL);
                            kill_at = None;
                        }
                    }
                }
                Ok(Event::Exited { slot, status }) => {
                    if let Some(done) = running.remove(&slot) {
                        bar.inc(1);
                        record_exit(&mut report, done.run, status, &bar);
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if kill_at.is_some_and(|at| Instant::now() >= at) {
                        bar.suspend(|| eprintln!("drover: grace period over: killing {} job(s)", running.len()));
                        report.cancel = report.cancel.max(Some(CancelReason::GraceExpired));
                        signal_all(&running, libc::SIGKILL);
                        kill_at = None;
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
            update_message(&bar, &running, &report);
        }
        report.not_started = queue.len();
        bar.finish_and_clear();
        handle.close();
        let _ = signal_thread.join();
        Ok(report)
    }
}

/// Starts one job with its logs, in a new process group (so a terminal Ctrl-C reaches only
/// drover, which then stops jobs in order, and so a job's own children are signalled with it).
fn spawn(job_bin: &Path, run: &PendingRun) -> Result<std::process::Child, String> {
    let stdout = File::create(run.stdout_log()).map_err(|e| format!("cannot create `{}`: {e}", run.stdout_log().display()))?;
    let stderr = File::create(run.stderr_log()).map_err(|e| format!("cannot create `{}`: {e}", run.stderr_log().display()))?;
    job_command(job_bin, run.ranks)
        .arg("--spec")
        .arg(&run.spec_path)
        .arg("--out")
        .arg(&run.dir)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .process_group(0)
        .spawn()
        .map_err(|e| format!("cannot start `{}`: {e}", job_bin.display()))
}

/// `drover-job` itself for one rank; `mpirun -np N drover-job` for more. `DROVER_MPIRUN`
/// overrides the launcher's path. Root needs `--allow-run-as-root`, and more ranks than cores
/// need `--oversubscribe`; neither is passed where it is not needed.
fn job_command(job_bin: &Path, ranks: u32) -> Command {
    if ranks <= 1 {
        return Command::new(job_bin);
    }
    let mut cmd = Command::new(std::env::var_os("DROVER_MPIRUN").unwrap_or_else(|| "mpirun".into()));
    cmd.arg("-np").arg(ranks.to_string());
    // SAFETY: geteuid(2) has no preconditions and touches no memory.
    if unsafe { libc::geteuid() } == 0 {
        cmd.arg("--allow-run-as-root");
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    if ranks as usize > cores {
        cmd.arg("--oversubscribe");
    }
    cmd.arg(job_bin);
    cmd
}

fn signal_all(running: &HashMap<usize, Running>, signal: i32) {
    for r in running.values() {
        // SAFETY: kill(2) with a negative pid signals a process group; no memory is involved.
        // The group is still ours: its leader has not been reported exited (not yet reaped or
        // just reaped), so the id cannot have been reused by an unrelated group in between.
        let rc = unsafe { libc::kill(-r.pgid, signal) };
        if rc != 0 {
            tracing::debug!(run = %r.run.run_id, "signal {signal} not delivered: {}", std::io::Error::last_os_error());
        }
    }
}

/// Classifies a finished child by its `exit.json` (the job's word wins over the exit status).
fn record_exit(report: &mut LaunchReport, run: PendingRun, status: std::io::Result<ExitStatus>, bar: &ProgressBar) {
    let exit: Result<Option<ExitRecord>, String> = layout::read_record(&run.dir.join(EXIT_JSON));
    let status_text = match &status {
        Ok(s) => match (s.code(), s.signal()) {
            (Some(code), _) => format!("exit code {code}"),
            (None, Some(sig)) => format!("signal {sig}"),
            _ => "unknown status".into(),
        },
        Err(e) => format!("wait failed: {e}"),
    };
    let reason = match exit {
        Ok(Some(record)) if record.status == RunExit::Completed => {
            tracing::info!(run = %run.run_id, "completed");
            report.completed.push(run.run_id);
            return;
        }
        Ok(Some(record)) if record.status == RunExit::Cancelled || report.cancel.is_some() => {
            report.cancelled.push(run.run_id);
            return;
        }
        _ if report.cancel.is_some() => {
            report.cancelled.push(run.run_id);
            return;
        }
        Ok(Some(record)) => format!("{:?}: {}", record.status, record.reason.unwrap_or_else(|| status_text.clone())).to_lowercase(),
        Ok(None) => format!("{status_text} without writing exit.json"),
        Err(e) => format!("{status_text}; unreadable exit.json: {e}"),
    };
    let stderr_log = run.stderr_log();
    let failed = FailedRun { run_id: run.run_id, label: run.label, reason, stderr_log };
    bar.suspend(|| eprintln!("drover: run {} ({}) failed: {} (see {})", failed.run_id, failed.label, failed.reason, failed.stderr_log.display()));
    report.failed.push(failed);
}

fn progress_bar(len: u64, show: bool) -> ProgressBar {
    let target = if show { ProgressDrawTarget::stderr() } else { ProgressDrawTarget::hidden() };
    let bar = ProgressBar::with_draw_target(Some(len), target);
    if let Ok(style) = ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} {msg}") {
        bar.set_style(style);
    }
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

fn update_message(bar: &ProgressBar, running: &HashMap<usize, Running>, report: &LaunchReport) {
    let mut msg = format!("{} running, {} done, {} failed", running.len(), report.completed.len(), report.failed.len());
    if report.cancel.is_some() {
        msg.push_str(", stopping");
    }
    bar.set_message(msg);
}
