//! The local backend: each run is a `drover-job` child process in its own process group.
//!
//! One event loop over `Event`s (signals, child exits, timer ticks). Cancellation ladder:
//! first SIGINT/SIGTERM/SIGHUP → stop launching and SIGTERM every running job's process group;
//! after `grace` (or on a second signal) → SIGKILL. Runs that finished are never touched.
//!
//! A job that dies without writing `exit.json` (killed by a signal: the OOM killer's SIGKILL, a
//! segfault, an abort) gets one written for it, `failed` with that reason, and is relaunched
//! as a new attempt while its `max_retries` budget lasts; one the stop ended (the SIGTERM,
//! SIGKILL or SIGINT of a stop) gets `cancelled`, as drover's report counts it.
//!
//! A full results disk stops the sweep from growing: once a run fails because it cannot write
//! there, nothing new is launched or retried (each would fail the same way, and their logs
//! would eat what space is left); running jobs are let finish, and the rest are reported as
//! not started, for the same command to run once space is freed.
//!
//! Crash consistency (docs/design/results-layout.md): each job is spawned holding its run's
//! lock (`job_lock`, the descriptor inherited across exec) and with `PR_SET_PDEATHSIG` =
//! SIGTERM, so a `drover run` killed outright takes its jobs down with it (they stop cleanly),
//! and whatever still runs keeps its run locked against the next `drover run`. The death signal
//! fires when the *thread* that forked the child exits: jobs are spawned only from the thread
//! running [`LocalBackend::launch`], which returns after every job has ended.

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use signal_hook::iterator::Signals;

use crate::backend::gpus::{GpuLease, GpuPool};
use crate::backend::{CancelReason, FailedRun, LaunchReport, PendingRun};
use crate::error::RunError;
use crate::layout::{self, ExitRecord, ExitStatus as RunExit, EXIT_JSON};

/// How long jobs get between SIGTERM and SIGKILL by default (enough to write exit.json).
pub const DEFAULT_GRACE: Duration = Duration::from_secs(10);

/// Runs jobs as local child processes, at most `max_parallel` at once.
pub struct LocalBackend {
    job_bin: PathBuf,
    max_parallel: usize,
    grace: Duration,
    max_retries: u32,
    progress: bool,
    signals: Option<Signals>,
    /// A stop signal [`LocalBackend::stop_requested`] took before `launch` (number and time),
    /// which `launch` then acts on as if it had come during it.
    early_stop: Option<(i32, Instant)>,
    gpus: GpuPool,
}

impl LocalBackend {
    /// A backend that runs `job_bin`; `progress` shows an indicatif bar on stderr.
    ///
    /// Installs the SIGINT/SIGTERM/SIGHUP handlers now, so a Ctrl-C during preparation is not
    /// lost (and does not kill the process before the runs it already launched are handled).
    /// SIGHUP (the terminal or ssh session closed) stops the sweep as Ctrl-C does, so its jobs
    /// checkpoint and the next `drover run` resumes them.
    pub fn new(job_bin: PathBuf, max_parallel: usize, progress: bool) -> Result<Self, RunError> {
        if !job_bin.is_file() {
            return Err(RunError::JobBinaryMissing { path: job_bin });
        }
        let signals = Signals::new(super::stop_signals().map_err(RunError::Signals)?).map_err(RunError::Signals)?;
        Ok(LocalBackend {
            job_bin,
            max_parallel: max_parallel.max(1),
            grace: DEFAULT_GRACE,
            max_retries: 0,
            progress,
            signals: Some(signals),
            early_stop: None,
            gpus: GpuPool::new(Vec::new(), 1),
        })
    }

    /// Whether a stop signal (SIGINT, SIGTERM, SIGHUP) has come since the handlers went in:
    /// for waits before the launch (`prepare_waiting`'s, for jobs a killed `drover run` left
    /// running), which the event loop of [`LocalBackend::launch`] does not watch yet. The
    /// signal is kept: a `launch` after it stops at once, launching nothing.
    pub fn stop_requested(&mut self) -> bool {
        if self.early_stop.is_none() {
            if let Some(signo) = self.signals.as_mut().and_then(|s| s.pending().next()) {
                self.early_stop = Some((signo, Instant::now()));
            }
        }
        self.early_stop.is_some()
    }

    /// Relaunches a failed run (as a new attempt, its files moved aside) up to `max_retries`
    /// times; 0 (the default) never retries. Cancelled runs are never retried.
    pub fn with_max_retries(mut self, max_retries: u32) -> Self {
        self.max_retries = max_retries;
        self
    }

    /// Shares `gpus` among the runs that may use CUDA (`gpus.rs`): each sees only the devices
    /// it leased, through `CUDA_VISIBLE_DEVICES`, and waits while none is free. An empty pool
    /// (the default) leaves every run drover's own environment.
    pub fn with_gpus(mut self, gpus: GpuPool) -> Self {
        self.gpus = gpus;
        self
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
    /// A stop signal: its number, and when the signal thread took it (a busy main loop may
    /// read two signals seconds apart back to back).
    Signal { signo: i32, at: Instant },
    Exited { slot: usize, status: std::io::Result<ExitStatus> },
}

struct Running {
    run: PendingRun,
    pgid: i32,
    /// The devices it holds, given back when it exits.
    lease: Option<GpuLease>,
}

impl LocalBackend {
    /// Launches `pending` (already prepared on disk) and waits for them or for cancellation.
    ///
    /// # Errors
    /// Signal handling could not be set up, or a second call.
    pub fn launch(&mut self, pending: Vec<PendingRun>) -> Result<LaunchReport, RunError> {
        let (tx, rx) = mpsc::channel::<Event>();
        let mut signals = self.signals.take().ok_or_else(|| RunError::Signals(std::io::Error::other("launch called twice")))?;
        let handle = signals.handle();
        let signal_tx = tx.clone();
        let signal_thread = std::thread::spawn(move || {
            for signo in signals.forever() {
                if signal_tx.send(Event::Signal { signo, at: Instant::now() }).is_err() {
                    break;
                }
            }
        });

        let bar = progress_bar(pending.len() as u64, self.progress);
        // drover's lines and tracing's go above the bar, not over it.
        let shown = crate::stderr::show_bar(&bar);
        let mut report = LaunchReport::default();
        let mut queue: VecDeque<PendingRun> = pending.into();
        let mut running: HashMap<usize, Running> = HashMap::new();
        let mut next_slot = 0usize;
        let mut kill_at: Option<Instant> = None;
        // The first stop signal, number and time (`signal_reason_at`).
        let mut first_signal: Option<(i32, Instant)> = None;
        let mut retries: HashMap<String, u32> = HashMap::new();
        if let Some(early) = self.early_stop {
            // Stopped before the launch: nothing starts, and a second signal still escalates.
            first_signal = Some(early);
            report.cancel = Some(CancelReason::Signal);
        }

        loop {
            while report.cancel.is_none() && report.disk_full.is_none() && running.len() < self.max_parallel {
                let Some((run, lease)) = next_launchable(&mut queue, &mut self.gpus) else { break };
                match spawn(&self.job_bin, &run, lease.as_ref(), self.grace) {
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
                        let gpus = lease.as_ref().map(|l| l.visible.as_str());
                        tracing::info!(run = %run.run_id, label = %run.label, attempt = run.attempt, gpus, "launched");
                        running.insert(slot, Running { run, pgid, lease });
                    }
                    Err(SpawnError { reason, disk_full }) => {
                        if let Some(lease) = &lease {
                            self.gpus.give_back(lease);
                        }
                        bar.inc(1);
                        crate::say!("drover: run {} ({}) could not start: {reason}", run.run_id, run.label);
                        report.failed.push(FailedRun { run_id: run.run_id.clone(), label: run.label.clone(), reason, stderr_log: run.stderr_log() });
                        if disk_full {
                            stop_launching_disk_full(&mut report, &run.dir, running.len());
                        }
                    }
                }
                update_message(&bar, &running, &report);
            }
            if running.is_empty() && (queue.is_empty() || report.cancel.is_some() || report.disk_full.is_some()) {
                break;
            }

            let timeout = match kill_at {
                Some(at) => at.saturating_duration_since(Instant::now()).min(Duration::from_millis(500)),
                None => Duration::from_millis(500),
            };
            match rx.recv_timeout(timeout) {
                Ok(Event::Signal { signo, at }) => {
                    let Some(reason) = signal_reason_at(first_signal, (signo, at)) else {
                        crate::say!(
                            "drover: the stop signal again within {} ms: taken as the same stop (once more kills the jobs)",
                            REPEAT_SIGNAL_WINDOW.as_millis()
                        );
                        continue;
                    };
                    first_signal = first_signal.or(Some((signo, at)));
                    report.cancel = report.cancel.max(Some(reason));
                    match reason {
                        // The jobs are told first: a message can fail (a hung-up terminal).
                        CancelReason::Signal => {
                            signal_all(&running, libc::SIGTERM);
                            kill_at = Some(Instant::now() + self.grace);
                            crate::say!(
                                "drover: stopping: no new runs; asking {} running job(s) to stop (SIGKILL in {}s, or press Ctrl-C again)",
                                running.len(),
                                self.grace.as_secs_f64()
                            );
                        }
                        _ => {
                            signal_all(&running, libc::SIGKILL);
                            crate::say!("drover: second signal: killing {} job(s)", running.len());
                            kill_at = None;
                        }
                    }
                }
                Ok(Event::Exited { slot, status }) => {
                    if let Some(done) = running.remove(&slot) {
                        if let Some(lease) = &done.lease {
                            self.gpus.give_back(lease);
                        }
                        if let Some(Failure { failed, disk_full, keeps_checkpoint }) = record_exit(&mut report, &done.run, status) {
                            // Set before the retry decision: a retry on a full disk fails the same way.
                            let newly_full = disk_full && report.disk_full.is_none();
                            if newly_full {
                                report.disk_full = Some(done.run.dir.clone());
                            }
                            let used = retries.entry(failed.run_id.clone()).or_insert(0);
                            // A checkpoint another release wrote: a retry would archive it and
                            // start over; the next `drover run` resumes it instead.
                            let retry = (*used < self.max_retries && report.cancel.is_none() && report.disk_full.is_none() && !keeps_checkpoint)
                                .then(|| rearm(&done.run))
                                .transpose();
                            match retry {
                                Ok(Some(attempt)) => {
                                    *used += 1;
                                    crate::say!(
                                        "drover: run {} ({}) failed: {} (see {}); retrying as attempt {attempt} (retry {} of {})",
                                        failed.run_id,
                                        failed.label,
                                        failed.reason,
                                        failed.stderr_log.display(),
                                        used,
                                        self.max_retries
                                    );
                                    report.retried.push((failed.run_id.clone(), failed.reason.clone()));
                                    queue.push_back(PendingRun { attempt, ..done.run });
                                    continue;
                                }
                                Ok(None) => {}
                                Err(e) => tracing::warn!(run = %failed.run_id, "cannot retry: {e}"),
                            }
                            crate::say!(
                                "drover: run {} ({}) failed: {} (see {})",
                                failed.run_id,
                                failed.label,
                                failed.reason,
                                failed.stderr_log.display()
                            );
                            report.failed.push(failed);
                            if newly_full {
                                announce_disk_full(running.len());
                            }
                        }
                        bar.inc(1);
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if kill_at.is_some_and(|at| Instant::now() >= at) {
                        crate::say!("drover: grace period over: killing {} job(s)", running.len());
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
        drop(shown);
        bar.finish_and_clear();
        handle.close();
        let _ = signal_thread.join();
        Ok(report)
    }
}

/// Signals this close after the first stop signal are the same stop, not a second one (which
/// SIGKILLs every job, losing the work since its last checkpoint). One Ctrl-C or `kill` can
/// arrive more than once: coreutils `timeout` signals drover and then its process group, which
/// holds drover again, and a terminal's Ctrl-C reaches every process of the foreground group,
/// so a wrapper script that passes it on doubles it. Those repeats come within microseconds to
/// milliseconds; a person pressing Ctrl-C again to mean "now" usually reads the stop message
/// first, which takes longer than half a second. A quicker double press (150-300 ms) is taken as
/// one stop, and drover says so, so a third press kills the jobs.
pub const REPEAT_SIGNAL_WINDOW: Duration = Duration::from_millis(500);

/// What stop signal `signo` taken at `at` means, given the first one (number and time): the
/// first stop, a second one (kill the jobs), or `None`, a repeat of the same signal within
/// [`REPEAT_SIGNAL_WINDOW`] to ignore. Another signal (SIGTERM after SIGINT, from a
/// supervisor) is never a repeat.
fn signal_reason_at(first: Option<(i32, Instant)>, (signo, at): (i32, Instant)) -> Option<CancelReason> {
    match first {
        None => Some(CancelReason::Signal),
        Some((first_signo, first_at)) if first_signo == signo && at.saturating_duration_since(first_at) < REPEAT_SIGNAL_WINDOW => None,
        Some(_) => Some(CancelReason::SecondSignal),
    }
}

/// The first queued run that can start now, with the devices it leased: runs that may use CUDA
/// wait for a free device, runs that cannot (or any run, with no GPUs to share) go in order.
/// Once a GPU run has to wait, no later GPU run overtakes it, so a multi-rank job waiting for
/// several devices is not starved by single-device runs; CPU runs still may.
fn next_launchable(queue: &mut VecDeque<PendingRun>, gpus: &mut GpuPool) -> Option<(PendingRun, Option<GpuLease>)> {
    let mut gpu_waiting = false;
    for i in 0..queue.len() {
        let needs_gpu = queue[i].gpu && !gpus.is_empty();
        if !needs_gpu {
            return queue.remove(i).map(|run| (run, None));
        }
        if gpu_waiting {
            continue;
        }
        match gpus.take(queue[i].ranks) {
            Some(lease) => return queue.remove(i).map(|run| (run, Some(lease))),
            None => gpu_waiting = true,
        }
    }
    None
}

/// Why a job could not be started.
struct SpawnError {
    /// What went wrong, for the user.
    reason: String,
    /// The results disk had no space left for the run's logs.
    disk_full: bool,
}

impl From<String> for SpawnError {
    fn from(reason: String) -> Self {
        SpawnError { reason, disk_full: false }
    }
}

/// A `cannot <action> <path>` error, flagged when the disk is full.
fn io_error(action: &str, path: &Path, e: &std::io::Error) -> SpawnError {
    SpawnError { reason: format!("cannot {action} `{}`: {e}", path.display()), disk_full: is_disk_full(e) }
}

/// Starts one job with its logs, in a new process group (so a terminal Ctrl-C reaches only
/// drover, which then stops jobs in order, and so a job's own children are signalled with it).
fn spawn(job_bin: &Path, run: &PendingRun, lease: Option<&GpuLease>, grace: Duration) -> Result<std::process::Child, SpawnError> {
    let lock_path = run.dir.join(super::job_lock::JOB_LOCK_FILE);
    let mut lock = match super::job_lock::try_lock(&run.dir) {
        Ok(Some(lock)) => lock,
        Ok(None) => {
            return Err(format!(
                "its run directory is in use by another job ({}); not started, so as not to write beside it",
                super::job_lock::holder(&run.dir)
            )
            .into())
        }
        Err(e) => return Err(io_error("lock", &lock_path, &e)),
    };
    let lock_fd = lock.raw_fd();
    // SAFETY: getpid(2) has no preconditions.
    let parent = unsafe { libc::getpid() };
    let stdout = File::create(run.stdout_log()).map_err(|e| io_error("create", &run.stdout_log(), &e))?;
    let stderr = File::create(run.stderr_log()).map_err(|e| io_error("create", &run.stderr_log(), &e))?;
    let mut cmd = job_command(job_bin, run.ranks, grace);
    cmd.arg("--spec")
        .arg(&run.spec_path)
        .arg("--out")
        .arg(&run.dir)
        // Checkpoint on the SIGTERM that stops a sweep (Ctrl-C, `drover cancel`), so the next
        // `drover run` resumes the run (`prepare::resume_in_place`); no stop count makes it fail.
        .args(["--checkpoint-signal", "USR1", "--max-preemptions", &u32::MAX.to_string()])
        .env(super::job_lock::LOCK_FD_ENV, lock_fd.to_string())
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .process_group(0);
    if let Some(lease) = lease {
        cmd.env("CUDA_VISIBLE_DEVICES", &lease.visible);
    }
    // SAFETY: the closure runs in the forked child before exec and calls only async-signal-safe
    // functions (fcntl, prctl, getppid), touching no memory but their integer arguments.
    unsafe {
        cmd.pre_exec(move || {
            // Keep the locked descriptor across exec: the job now holds the run's lock.
            if libc::fcntl(lock_fd, libc::F_SETFD, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM as libc::c_ulong, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // drover died between fork and prctl: the death signal will never come.
            if libc::getppid() != parent {
                return Err(std::io::Error::other("drover exited while starting the job"));
            }
            Ok(())
        });
    }
    let child = cmd.spawn().map_err(|e| cannot_start(cmd.get_program(), job_bin, std::env::var_os("DROVER_MPIRUN").as_deref(), &e))?;
    lock.describe(&job_lock_text(child.id(), parent));
    // Our copy of the descriptor closes here; the child's keeps the lock for as long as it lives.
    drop(lock);
    Ok(child)
}

/// Why a run's process did not start, naming the program that did not: `drover-job`, or for a
/// multi-rank run the launcher, `mpirun` or what `DROVER_MPIRUN` (`mpirun_var`) names, which
/// is one path, never a command line (a wrong one was reported as a missing `drover-job`).
fn cannot_start(program: &std::ffi::OsStr, job_bin: &Path, mpirun_var: Option<&std::ffi::OsStr>, e: &std::io::Error) -> String {
    let name = Path::new(program).display();
    if program == job_bin.as_os_str() {
        return format!("cannot start `{name}`: {e}");
    }
    match mpirun_var {
        Some(_) => format!(
            "cannot start the multi-rank launcher `{name}` (from DROVER_MPIRUN, which names one program, without arguments): {e}"
        ),
        None => format!("cannot start the multi-rank launcher `{name}` (found on PATH; DROVER_MPIRUN names another): {e}"),
    }
}

/// What the local backend writes into a launched run's `.job.lock` for the job it handed the
/// lock to (the job adopts the descriptor and writes nothing itself): its pid and this host, as
/// every holder does (`lock::holder_text`), so `drover status` on another machine of an NFS
/// share does not take the pid for one of its own.
fn job_lock_text(child: u32, parent: libc::pid_t) -> String {
    crate::lock::holder_text(child, &[format!("started by drover run pid {parent}")])
}

/// `drover-job` itself for one rank; `mpirun -np N --bind-to none drover-job` for more.
/// `DROVER_MPIRUN` overrides the launcher's path. OpenMPI binds each rank to one core by default
/// (`core` for 2 ranks, `socket` for more), which would put a rank's `run.threads` workers on
/// that one core, and every concurrent job's ranks on the same first cores: the kernel places
/// them instead. Root needs `--allow-run-as-root`, and more ranks than cores need
/// `--oversubscribe`; neither is passed where it is not needed.
fn job_command(job_bin: &Path, ranks: u32, grace: Duration) -> Command {
    if ranks <= 1 {
        return Command::new(job_bin);
    }
    let mut cmd = Command::new(std::env::var_os("DROVER_MPIRUN").unwrap_or_else(|| "mpirun".into()));
    cmd.arg("-np").arg(ranks.to_string()).args(["--bind-to", "none"]);
    // OpenMPI's mpirun passes a SIGTERM on to the ranks and SIGKILLs them 1 s later
    // (`odls_base_sigkill_timeout`), which cuts off a rank still checkpointing: give them the
    // grace drover itself gives a job, after which it kills them anyway.
    // Whole seconds, rounded up: mpirun must not kill before drover's own grace is over.
    cmd.args(["--mca", "odls_base_sigkill_timeout"]).arg((grace.as_secs_f64().ceil() as u64).max(1).to_string());
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

/// Sends `signal` to every running job's process group. A SIGKILL also goes to the children of
/// each group's leader, each to its own group: OpenMPI puts every rank in a process group of its
/// own, out of reach of `mpirun`'s, and a rank that outlived a killed `mpirun` would train on.
/// (A SIGTERM goes to `mpirun` alone, which passes it on: a rank that got two would exit at once
/// without its checkpoint.)
fn signal_all(running: &HashMap<usize, Running>, signal: i32) {
    for r in running.values() {
        // Read before the leader dies: its orphans are then no longer listed as its children.
        let children = if signal == libc::SIGKILL { children_of(r.pgid) } else { Vec::new() };
        // SAFETY: kill(2) with a negative pid signals a process group; no memory is involved.
        // The group is still ours: its leader has not been reported exited (not yet reaped or
        // just reaped), so the id cannot have been reused by an unrelated group in between.
        let rc = unsafe { libc::kill(-r.pgid, signal) };
        if rc != 0 {
            tracing::debug!(run = %r.run.run_id, "signal {signal} not delivered: {}", std::io::Error::last_os_error());
        }
        for child in children {
            // SAFETY: getpgid and kill take integers only. The child was listed a moment ago by
            // its parent, which had not been reaped then (so neither had the child: its pid is
            // not free to be reused); one in the job's group was signalled with it above.
            unsafe {
                match libc::getpgid(child) {
                    pgid if pgid == r.pgid => {}
                    pgid if pgid == child => {
                        libc::kill(-child, signal);
                    }
                    _ => {
                        libc::kill(child, signal);
                    }
                }
            }
        }
    }
}

/// The children of process `pid`, from `/proc/<pid>/task/*/children` (empty when unreadable).
fn children_of(pid: i32) -> Vec<i32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return Vec::new() };
    let mut children: Vec<i32> = tasks
        .filter_map(Result::ok)
        .filter_map(|task| std::fs::read_to_string(task.path().join("children")).ok())
        .flat_map(|text| text.split_whitespace().filter_map(|p| p.parse().ok()).collect::<Vec<i32>>())
        .collect();
    children.sort_unstable();
    children.dedup();
    children
}

/// A failed attempt, as `record_exit` classified it.
struct Failure {
    /// The run and why it failed.
    failed: FailedRun,
    /// It failed because the results disk is full.
    disk_full: bool,
    /// Its job did not read its checkpoint's (later) format: a retry would set the good
    /// checkpoint aside and train from iteration 1 (`ExitRecord::checkpoint_of_another_release`).
    keeps_checkpoint: bool,
}

/// Classifies a finished child by its `exit.json` (the job's word wins over the exit status);
/// returns the failure when it neither completed nor was cancelled.
///
/// A job that left no `exit.json` (killed by a signal, crashed) gets one written here, `failed`
/// with the reason (`cancelled` when drover's stop ended it), so the run's own record says
/// what happened even after drover exits.
fn record_exit(report: &mut LaunchReport, run: &PendingRun, status: std::io::Result<ExitStatus>) -> Option<Failure> {
    let exit_path = run.dir.join(EXIT_JSON);
    let exit: Result<Option<ExitRecord>, String> = layout::read_record(&exit_path);
    let status_text = match &status {
        Ok(s) => match (s.code(), s.signal()) {
            (Some(code), _) => format!("exit code {code}"),
            (None, Some(sig)) => signal_reason(sig, s.core_dumped(), report.cancel.is_some()),
            _ => "unknown status".into(),
        },
        Err(e) => format!("wait failed: {e}"),
    };
    let (mut disk_full, mut keeps_checkpoint) = (false, false);
    let reason = match exit {
        Ok(Some(record)) if record.status == RunExit::Completed => {
            tracing::info!(run = %run.run_id, "completed");
            report.completed.push(run.run_id.clone());
            return None;
        }
        Ok(Some(record)) if record.status == RunExit::Cancelled || report.cancel.is_some() => {
            report.cancelled.push(run.run_id.clone());
            return None;
        }
        Ok(None) if report.cancel.is_some() && ended_by_the_stop(&status, run.ranks) => {
            // Counted as cancelled in drover's report, so marked so on disk: otherwise `drover
            // status` would find no marker and call the run unfinished, as after a crash of
            // drover itself. Only under the run's lock, as below, and only if the job (or a
            // process it left behind) has not written its own since the read above.
            let reason = format!("stopped by `drover run` ({}): {status_text}", report.cancel.map_or("", CancelReason::word));
            if let Ok(Some(_lock)) = super::job_lock::lock_within(&run.dir, RANKS_EXIT_PATIENCE) {
                if matches!(layout::read_record::<ExitRecord>(&exit_path), Ok(None)) {
                    let _ = write_marker(&exit_path, &run.run_id, RunExit::Cancelled, &reason);
                }
            }
            report.cancelled.push(run.run_id.clone());
            return None;
        }
        // A job that crashed during the stop (a segfault, an abort, an exit without a marker)
        // failed: it goes on below.
        Ok(Some(_)) | Err(_) if report.cancel.is_some() => {
            report.cancelled.push(run.run_id.clone());
            return None;
        }
        Ok(Some(record)) => {
            disk_full = record.disk_full();
            keeps_checkpoint = record.checkpoint_of_another_release();
            job_failure_reason(&record, &status_text)
        }
        Ok(None) => {
            let mut reason = format!("{status_text} without writing exit.json");
            // A job that stops before it can write exit.json (it refused its spec, a library
            // failed to load) said why on stderr: show that here rather than only a log path.
            if let Some(line) = crate::backend::last_log_line(&run.stderr_log()) {
                reason.push_str(&format!("; its stderr ends: {line}"));
            }
            // Only under the run's lock: a process the job left behind may still write there.
            let written = match super::job_lock::lock_within(&run.dir, RANKS_EXIT_PATIENCE) {
                Ok(Some(_lock)) => write_marker(&exit_path, &run.run_id, RunExit::Failed, &reason),
                Ok(None) => {
                    tracing::warn!(run = %run.run_id, "not writing `{}`: the run directory is still locked", exit_path.display());
                    Ok(())
                }
                Err(e) => Err(e),
            };
            // A full disk silences the job too (its stderr log is on it), so say it here.
            if written.is_err_and(|e| is_disk_full(&e)) {
                disk_full = true;
                reason.push_str(&format!(
                    "; the results disk is full (cannot write in `{}`): free space and run the same command again, finished runs are kept",
                    run.dir.display()
                ));
            }
            reason
        }
        Err(e) => format!("{status_text}; unreadable exit.json: {e}"),
    };
    let failed = FailedRun { run_id: run.run_id.clone(), label: run.label.clone(), reason, stderr_log: run.stderr_log() };
    Some(Failure { failed, disk_full, keeps_checkpoint })
}


/// Whether a job that left no `exit.json` ended as drover's stop ends jobs: by the SIGTERM it
/// sends first, the SIGKILL after the grace period or a second signal, or the terminal's
/// SIGINT that reached its process group. A multi-rank job is `mpirun`, which exits with a
/// code of its own (1) when the stop ends its ranks, in MPI start-up before any rank could
/// write a marker, say: during a stop, any end of it without a marker is the stop's.
fn ended_by_the_stop(status: &std::io::Result<ExitStatus>, ranks: u32) -> bool {
    status.as_ref().is_ok_and(|s| ranks > 1 || matches!(s.signal(), Some(libc::SIGTERM | libc::SIGKILL | libc::SIGINT)))
}

/// How long the marker of an ended job waits for the run's lock: `mpirun` is reaped before the
/// ranks killed with it have released their `.ranks.lock`.
const RANKS_EXIT_PATIENCE: Duration = Duration::from_secs(2);

/// The reason of a run whose `exit.json` says `failed`: the job's own words, as written (they
/// may hold paths, whose case matters), else how its process ended.
fn job_failure_reason(record: &ExitRecord, status_text: &str) -> String {
    record.reason.clone().unwrap_or_else(|| format!("{status_text}; exit.json says failed without a reason"))
}

/// Stops launching because `dir` could not be written for lack of space (a spawn that could
/// not create its logs); the first such failure only.
fn stop_launching_disk_full(report: &mut LaunchReport, dir: &Path, running: usize) {
    if report.disk_full.is_none() {
        report.disk_full = Some(dir.to_path_buf());
        announce_disk_full(running);
    }
}

/// Says, once, that nothing new is launched; what to do is said with the final counts.
fn announce_disk_full(running: usize) {
    let waiting = if running == 0 { String::new() } else { format!("; letting {running} running job(s) finish") };
    crate::say!("drover: the results disk is full: launching no new runs{waiting}");
}

/// Moves a failed attempt's files aside as `prepare` does and puts `spec.json` back; returns
/// the next attempt's number.
fn rearm(run: &PendingRun) -> Result<u32, RunError> {
    let lock_path = run.dir.join(super::job_lock::JOB_LOCK_FILE);
    let io = |source| RunError::Io { action: "lock", path: lock_path.clone(), source };
    let Some(_lock) = super::job_lock::try_lock(&run.dir).map_err(io)? else {
        return Err(io(std::io::Error::other(format!(
            "still held by {}: a process of the failed attempt is alive",
            super::job_lock::holder(&run.dir)
        ))));
    };
    let spec = std::fs::read(&run.spec_path).map_err(|source| RunError::Io { action: "read", path: run.spec_path.clone(), source })?;
    let attempt = super::prepare::archive_partial(&run.dir)?;
    layout::write_atomic(&run.spec_path, &spec).map_err(|source| RunError::Io { action: "write", path: run.spec_path.clone(), source })?;
    Ok(attempt)
}

/// Whether an I/O error means the filesystem has no space (or quota) left.
fn is_disk_full(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT))
}

/// Writes `exit.json` `failed` for a job that died without one. Best effort: the failure is
/// reported anyway, and a missing marker already means "redo" to the next `drover run`.
fn write_marker(path: &Path, run_id: &str, status: RunExit, reason: &str) -> std::io::Result<()> {
    let record = ExitRecord {
        format_version: layout::FORMAT_VERSION,
        run_id: run_id.to_string(),
        status,
        reason: Some(reason.to_string()),
        finished_at: serde_json::Value::String(layout::unix_now()),
        spent_budget: None,
        cause: None,
    };
    let written = serde_json::to_vec_pretty(&record).map_err(std::io::Error::other).and_then(|bytes| layout::write_atomic(path, &bytes));
    if let Err(e) = &written {
        tracing::warn!(run = %run_id, "cannot write `{}`: {e}", path.display());
    }
    written
}

/// "killed by signal 9 (SIGKILL)", with the likely cause where the signal suggests one. A
/// SIGKILL that drover did not send (no stop was requested) is most often the kernel's OOM
/// killer, which leaves no trace in the job's own logs.
pub fn signal_reason(signal: i32, core_dumped: bool, stop_requested: bool) -> String {
    let mut text = match signal_name(signal) {
        Some(name) => format!("killed by signal {signal} ({name})"),
        None => format!("killed by signal {signal}"),
    };
    if core_dumped {
        text.push_str(", core dumped");
    }
    let hint = match signal {
        libc::SIGKILL if !stop_requested => Some("out of memory? (the kernel's OOM killer sends SIGKILL; see `dmesg`)"),
        libc::SIGSEGV | libc::SIGBUS => Some("the job crashed (invalid memory access)"),
        libc::SIGABRT => Some("the job aborted"),
        libc::SIGXCPU => Some("CPU time limit reached"),
        _ => None,
    };
    if let Some(hint) = hint {
        text.push_str(": ");
        text.push_str(hint);
    }
    text
}

/// The name of a common signal.
fn signal_name(signal: i32) -> Option<&'static str> {
    Some(match signal {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGTRAP => "SIGTRAP",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGUSR1 => "SIGUSR1",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGUSR2 => "SIGUSR2",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGALRM => "SIGALRM",
        libc::SIGTERM => "SIGTERM",
        libc::SIGXCPU => "SIGXCPU",
        libc::SIGXFSZ => "SIGXFSZ",
        _ => return None,
    })
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
    } else if report.disk_full.is_some() {
        msg.push_str(", disk full: no new runs");
    }
    bar.set_message(msg);
}

#[cfg(test)]
mod tests {
    use super::{job_command, job_failure_reason, job_lock_text, record_exit, signal_reason, signal_reason_at, REPEAT_SIGNAL_WINDOW};
    use crate::backend::{last_log_line, CancelReason, LaunchReport, PendingRun};
    use std::os::unix::process::ExitStatusExt;
    use std::time::{Duration, Instant};

    /// Review finding 5: a `DROVER_MPIRUN` that cannot start was reported as a missing
    /// `drover-job`; the launcher is named, and where it came from.
    #[test]
    fn a_launcher_that_cannot_start_is_named_not_drover_job() {
        use std::ffi::OsStr;
        let job = std::path::Path::new("/opt/drover/drover-job");
        let missing = std::io::Error::from(std::io::ErrorKind::NotFound);
        assert!(super::cannot_start(job.as_os_str(), job, None, &missing).starts_with("cannot start `/opt/drover/drover-job`: "));
        let from_var = super::cannot_start(OsStr::new("mpirun --display-map"), job, Some(OsStr::new("mpirun --display-map")), &missing);
        assert!(from_var.starts_with("cannot start the multi-rank launcher `mpirun --display-map` (from DROVER_MPIRUN, which names one program, without arguments): "), "{from_var}");
        assert!(!from_var.contains("drover-job"), "{from_var}");
        let default = super::cannot_start(OsStr::new("mpirun"), job, None, &missing);
        assert!(default.starts_with("cannot start the multi-rank launcher `mpirun` (found on PATH"), "{default}");
    }

    /// Review (crash consistency, item 2): a local run's `.job.lock` named only `pid N` (the job
    /// adopts the locked descriptor and writes nothing), so `drover status` on another machine
    /// of an NFS share took the pid for one of its own. The text names the host, and the
    /// lock module's parser reads it back.
    #[test]
    fn a_local_jobs_lock_text_names_pid_and_host() {
        let text = job_lock_text(4242, 17);
        let lines = crate::lock::HolderLines::parse(&text).expect("parses");
        assert_eq!(lines.pid, 4242, "{text}");
        assert!(lines.host.as_deref().is_some_and(|h| !h.is_empty()) && lines.on_this_host(), "{text}");
        assert!(text.starts_with("pid 4242\nhost ") && text.ends_with("started by drover run pid 17\n"), "{text}");
    }

    /// Review finding (research): `timeout -s INT` signals drover and its process group, so one
    /// stop arrived twice within microseconds and was taken for a second Ctrl-C, SIGKILLing
    /// every job. Repeats within the window are the same stop; a later one escalates.
    #[test]
    fn a_repeat_of_the_stop_signal_within_the_window_is_the_same_stop() {
        let t0 = Instant::now();
        let (int, term) = (libc::SIGINT, libc::SIGTERM);
        let first = Some((int, t0));
        assert_eq!(signal_reason_at(None, (int, t0)), Some(CancelReason::Signal));
        assert_eq!(signal_reason_at(first, (int, t0)), None, "the same instant");
        assert_eq!(signal_reason_at(first, (int, t0 + Duration::from_micros(40))), None, "timeout's second SIGINT");
        assert_eq!(signal_reason_at(first, (int, t0 + REPEAT_SIGNAL_WINDOW - Duration::from_millis(1))), None);
        assert_eq!(signal_reason_at(first, (int, t0 + REPEAT_SIGNAL_WINDOW)), Some(CancelReason::SecondSignal));
        assert_eq!(signal_reason_at(first, (int, t0 + Duration::from_secs(3))), Some(CancelReason::SecondSignal), "a person's second Ctrl-C");
        assert_eq!(signal_reason_at(first, (term, t0 + Duration::from_millis(10))), Some(CancelReason::SecondSignal), "SIGTERM after SIGINT is no repeat");
    }

    /// A first attempt of a run of `ranks` ranks in `dir`.
    fn pending_in(dir: &std::path::Path, ranks: u32) -> PendingRun {
        PendingRun {
            run_id: "0123456789abcdef".into(),
            label: "base".into(),
            dir: dir.to_path_buf(),
            spec_path: dir.join("spec.json"),
            attempt: 1,
            ranks,
            gpu: false,
        }
    }

    /// Review finding (research): after a second signal killed the jobs, `drover run` reported
    /// them cancelled while `drover status` called them unfinished (no marker, "its drover run
    /// was killed?"). A job drover killed is now marked cancelled, as it counted it.
    #[test]
    fn a_job_killed_by_the_stop_is_marked_cancelled_as_reported() {
        let dir = tempfile::tempdir().expect("tempdir");
        let run = pending_in(dir.path(), 1);
        let mut report = LaunchReport { cancel: Some(CancelReason::SecondSignal), ..LaunchReport::default() };
        let killed = Ok(std::process::ExitStatus::from_raw(libc::SIGKILL));
        assert!(record_exit(&mut report, &run, killed).is_none(), "not a failure");
        assert_eq!(report.cancelled, vec![run.run_id.clone()]);
        let exit: ExitRecord = crate::layout::read_record(&dir.path().join("exit.json")).expect("readable").expect("written");
        assert_eq!(exit.status, ExitStatus::Cancelled);
        assert_eq!(exit.reason.as_deref(), Some("stopped by `drover run` (second signal): killed by signal 9 (SIGKILL)"));
        let (state, _) = crate::status::classify_local(Some(&exit), false, true, false);
        assert_eq!(state, crate::status::RunState::Cancelled, "status says what the report said");

        // A crash during the stop is a failure, not a stop (review finding).
        std::fs::remove_file(dir.path().join("exit.json")).expect("rm");
        let mut report = LaunchReport { cancel: Some(CancelReason::Signal), ..LaunchReport::default() };
        let crashed = Ok(std::process::ExitStatus::from_raw(libc::SIGSEGV));
        let failure = record_exit(&mut report, &run, crashed).expect("a failure");
        assert!(failure.failed.reason.contains("SIGSEGV"), "{}", failure.failed.reason);
        let exit: ExitRecord = crate::layout::read_record(&dir.path().join("exit.json")).expect("readable").expect("written");
        assert_eq!(exit.status, ExitStatus::Failed);
        assert!(report.cancelled.is_empty());
    }

    /// Review D2 (multi-rank runs): a 2-rank run cancelled in MPI start-up was marked `failed`
    /// ("exit code 1 without writing exit.json"): `mpirun` exits 1 when the stop ends its
    /// ranks. During a stop, a multi-rank job that ends without a marker is cancelled; outside
    /// one, the same exit is a failure.
    #[test]
    fn a_multi_rank_job_ended_by_the_stop_in_start_up_is_cancelled() {
        let dir = tempfile::tempdir().expect("tempdir");
        let run = pending_in(dir.path(), 2);
        let mpirun_exit_1 = || Ok(std::process::ExitStatus::from_raw(1 << 8));
        let mut report = LaunchReport { cancel: Some(CancelReason::Signal), ..LaunchReport::default() };
        assert!(record_exit(&mut report, &run, mpirun_exit_1()).is_none(), "not a failure");
        assert_eq!(report.cancelled, vec![run.run_id.clone()]);
        let exit: ExitRecord = crate::layout::read_record(&dir.path().join("exit.json")).expect("readable").expect("written");
        assert_eq!(exit.status, ExitStatus::Cancelled);
        assert_eq!(exit.reason.as_deref(), Some("stopped by `drover run` (stop signal): exit code 1"));

        std::fs::remove_file(dir.path().join("exit.json")).expect("rm");
        let mut report = LaunchReport::default();
        let failure = record_exit(&mut report, &run, mpirun_exit_1()).expect("no stop: a failure");
        assert!(failure.failed.reason.starts_with("exit code 1 without writing exit.json"), "{}", failure.failed.reason);
    }

    /// Review D5 (multi-rank runs): OpenMPI's default binding put a rank and all its
    /// `run.threads` workers on one core, and every concurrent job's ranks on the same cores.
    /// Local `mpirun` binds nothing; a 1-rank job is `drover-job` itself.
    #[test]
    fn local_mpirun_binds_no_rank_to_a_core() {
        let bin = std::path::Path::new("/x/drover-job");
        let args = |ranks| {
            let cmd = job_command(bin, ranks, Duration::from_secs(10));
            let mut all = vec![cmd.get_program().to_string_lossy().into_owned()];
            all.extend(cmd.get_args().map(|a| a.to_string_lossy().into_owned()));
            all
        };
        assert_eq!(args(1), ["/x/drover-job"]);
        let two = args(2);
        assert_eq!(two[1..5], ["-np", "2", "--bind-to", "none"], "{two:?}");
        // The grace, not OpenMPI's 1 s, before mpirun kills ranks still checkpointing.
        assert_eq!(two[5..8], ["--mca", "odls_base_sigkill_timeout", "10"], "{two:?}");
        assert_eq!(two.last().map(String::as_str), Some("/x/drover-job"), "{two:?}");
        // A fractional `local.grace_seconds` rounds up: mpirun never kills before drover does.
        let cmd = job_command(bin, 2, Duration::from_secs_f64(10.2));
        let timeout: Vec<_> = cmd.get_args().skip(4).take(3).map(|a| a.to_string_lossy().into_owned()).collect();
        assert_eq!(timeout, ["--mca", "odls_base_sigkill_timeout", "11"]);
    }

    #[test]
    fn the_last_words_on_stderr_are_its_last_non_empty_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("attempt-1.stderr.log");
        assert_eq!(last_log_line(&log), None, "no log");
        std::fs::write(&log, "").expect("write");
        assert_eq!(last_log_line(&log), None, "an empty log");
        let long = "x".repeat(10_000);
        std::fs::write(&log, format!("{long}\n  INFO start\ndrover-job: run r: bad spec  \n\n \n")).expect("write");
        assert_eq!(last_log_line(&log).as_deref(), Some("drover-job: run r: bad spec"));
        std::fs::write(&log, &long).expect("write");
        assert_eq!(last_log_line(&log), Some(format!("{}…", "x".repeat(300))), "a long line is cut");
    }
    use crate::layout::{ExitRecord, ExitStatus};

    #[test]
    fn a_failed_jobs_reason_is_shown_as_written() {
        let record = |reason: Option<&str>| ExitRecord {
            format_version: 1,
            run_id: "r".into(),
            status: ExitStatus::Failed,
            reason: reason.map(Into::into),
            finished_at: serde_json::Value::from(0),
            spent_budget: None,
            cause: None,
        };
        let reason = "cannot read `/data/MyRuns/Ckpt.bin`: libcuda (the NVIDIA driver library) was not found";
        // Once lower-cased with a `failed: ` prefix: `failed: failed: ...` and a path that no longer exists.
        assert_eq!(job_failure_reason(&record(Some(reason)), "exit code 1"), reason);
        assert_eq!(job_failure_reason(&record(None), "exit code 1"), "exit code 1; exit.json says failed without a reason");
    }

    #[test]
    fn a_job_reason_ending_in_a_full_disk_is_recognised() {
        use crate::layout::says_disk_full;
        let enospc = std::io::Error::from_raw_os_error(libc::ENOSPC);
        let edquot = std::io::Error::from_raw_os_error(libc::EDQUOT);
        assert!(says_disk_full(&format!("cannot write `runs/x/metrics.parquet`: {enospc}")), "{enospc}");
        assert!(says_disk_full(&format!("cannot flush: {edquot}")), "{edquot}");
        let eacces = std::io::Error::from_raw_os_error(libc::EACCES);
        assert!(!says_disk_full(&format!("cannot write: {eacces}")));
        assert!(!says_disk_full("plugin returned NaN (os error 280 is not an OS error)"));
    }

    #[test]
    fn signal_deaths_are_named_with_their_likely_cause() {
        assert_eq!(signal_reason(9, false, false), "killed by signal 9 (SIGKILL): out of memory? (the kernel's OOM killer sends SIGKILL; see `dmesg`)");
        assert_eq!(signal_reason(9, false, true), "killed by signal 9 (SIGKILL)", "drover's own SIGKILL is no OOM");
        assert_eq!(signal_reason(11, true, false), "killed by signal 11 (SIGSEGV), core dumped: the job crashed (invalid memory access)");
        assert_eq!(signal_reason(6, false, false), "killed by signal 6 (SIGABRT): the job aborted");
        assert_eq!(signal_reason(64, false, false), "killed by signal 64");
    }
}
