//! Backends launch prepared runs: `local` (child processes) and `slurm` (job arrays).
//!
//! Preparing the results directory (`prepare`) is shared by every backend; a backend only
//! launches the `PendingRun`s it is given and reports how each ended.

pub mod arch;
pub mod gpus;
pub mod job_lock;
pub mod local;
pub mod local_config;
pub mod local_status;
pub mod other_runs;
mod prepare;
pub(crate) use prepare::never_started;
pub mod rebuilt;
pub mod sbatch_options;
pub mod slurm;
pub mod slurm_cmd;
pub mod slurm_config;
pub mod slurm_script;

use std::path::PathBuf;

pub use prepare::{
    completed_files_problem, inspect_run, on_disk, parquet_frame_problem, planned_action, prepare, prepare_waiting, OnDisk, PendingRun, PlannedAction,
    Prepared, RunState, DEFAULT_BUSY_WAIT,
};


/// The signals that stop a sweep: SIGINT, SIGTERM, and SIGHUP (the terminal or ssh session
/// closed) unless SIGHUP is ignored, as `nohup` leaves it, since a handler would undo what the
/// user asked for. With SIGHUP, stdout and stderr that were the terminal are pointed at
/// `/dev/null` the moment it arrives ([`detach_on_hangup`]): the stop's own messages would
/// otherwise fail on the hung-up terminal (`eprintln!` panics on EIO) before the jobs were told.
pub(crate) fn stop_signals() -> Result<Vec<i32>, std::io::Error> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals = vec![SIGINT, SIGTERM];
    if !hangup_ignored() {
        detach_on_hangup()?;
        signals.push(SIGHUP);
    }
    Ok(signals)
}

/// Whether SIGHUP's disposition is "ignore" (`nohup`, or a parent that set it so).
fn hangup_ignored() -> bool {
    // SAFETY: sigaction with a null new action only reads the current one into `old`.
    unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        libc::sigaction(libc::SIGHUP, std::ptr::null(), &mut old) == 0 && old.sa_sigaction == libc::SIG_IGN
    }
}

/// Registers, once, a SIGHUP action that points stdout and stderr at `/dev/null` when they were
/// a terminal at registration (after a hangup `isatty` itself may fail).
fn detach_on_hangup() -> Result<(), std::io::Error> {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::OnceLock;
    static REGISTERED: OnceLock<Result<(), String>> = OnceLock::new();
    static TTY_OUT: AtomicBool = AtomicBool::new(false);
    static TTY_ERR: AtomicBool = AtomicBool::new(false);
    // SAFETY: isatty only inspects the descriptors.
    TTY_OUT.store(unsafe { libc::isatty(1) } == 1, Ordering::Relaxed);
    TTY_ERR.store(unsafe { libc::isatty(2) } == 1, Ordering::Relaxed);
    let registered = REGISTERED.get_or_init(|| {
        let action = || {
            // Only async-signal-safe calls: open, dup2, close, and atomic loads.
            // SAFETY: the path is a NUL-terminated literal; the descriptors are the process's own.
            unsafe {
                let null = libc::open(c"/dev/null".as_ptr(), libc::O_WRONLY);
                if null >= 0 {
                    if TTY_OUT.load(Ordering::Relaxed) {
                        libc::dup2(null, 1);
                    }
                    if TTY_ERR.load(Ordering::Relaxed) {
                        libc::dup2(null, 2);
                    }
                    libc::close(null);
                }
            }
        };
        // SAFETY: the action makes only async-signal-safe calls (see above).
        unsafe { signal_hook::low_level::register(libc::SIGHUP, action) }.map(drop).map_err(|e| e.to_string())
    });
    registered.clone().map_err(std::io::Error::other)
}

/// The SHA-256 of a file's bytes, in lowercase hex (how summaries and the Slurm ledger record
/// plugin and runtime builds).
pub(crate) fn file_sha256(path: &std::path::Path) -> std::io::Result<String> {
    use sha2::Digest;
    let bytes = std::fs::read(path)?;
    Ok(sha2::Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect())
}

/// The last line of a job's log (read from its last 4 KiB) that holds a letter or a digit, cut
/// to a few hundred characters: what a failure usually says (a missing library, a bad spec),
/// shown beside the run by both backends. Lines of punctuation alone are banners' rules
/// (OpenMPI closes "mpirun noticed that process rank 1 ... exited on signal 9" with dashes).
pub(crate) fn last_log_line(path: &std::path::Path) -> Option<String> {
    use std::io::{Read, Seek, SeekFrom};
    const TAIL: u64 = 4096;
    const MAX_CHARS: usize = 300;
    let mut file = std::fs::File::open(path).ok()?;
    let len = file.metadata().ok()?.len();
    file.seek(SeekFrom::Start(len.saturating_sub(TAIL))).ok()?;
    let mut tail = Vec::new();
    file.read_to_end(&mut tail).ok()?;
    let text = String::from_utf8_lossy(&tail);
    let line = text.lines().map(str::trim).rfind(|l| l.chars().any(char::is_alphanumeric))?;
    let mut cut: String = line.chars().take(MAX_CHARS).collect();
    if cut.len() < line.len() {
        cut.push('…');
    }
    Some(cut)
}

/// What `drover run` would do with one run, as `--dry-run` lists it: a local [`PlannedAction`]
/// (without a resumed run's iteration, which only the local plan reads), `Live` for a run a
/// job is training now (locally: it holds the run's lock; on Slurm: queued or running,
/// re-attached rather than submitted).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum DryRunAction {
    /// Completed: skipped.
    Done,
    /// Running now: queued or running under Slurm (re-attached), or, locally, a job holds its
    /// lock (a `drover run` now would wait for it).
    Live,
    /// Stopped part-way with a checkpoint: goes on from it.
    Resume,
    /// Ran and did not complete: starts over.
    Redo,
    /// Never started.
    New,
    /// Its files cannot be read now (`drover run` stops on it rather than retrain it).
    Unreadable,
}

impl DryRunAction {
    /// The word `--dry-run` prints.
    pub fn word(self) -> &'static str {
        match self {
            DryRunAction::Live => "live",
            DryRunAction::Done => PlannedAction::Done.word(),
            DryRunAction::Resume => PlannedAction::Resume(0).word(),
            DryRunAction::Redo => PlannedAction::Redo.word(),
            DryRunAction::New => PlannedAction::New.word(),
            DryRunAction::Unreadable => PlannedAction::Unreadable.word(),
        }
    }

    /// Whether the run gets a batch script: it is submitted (new, redone or resumed), not
    /// skipped or re-attached.
    pub fn submits(self) -> bool {
        match self {
            DryRunAction::Done | DryRunAction::Live | DryRunAction::Unreadable => false,
            DryRunAction::Resume | DryRunAction::Redo | DryRunAction::New => true,
        }
    }
}

impl From<PlannedAction> for DryRunAction {
    fn from(action: PlannedAction) -> DryRunAction {
        match action {
            PlannedAction::Done => DryRunAction::Done,
            PlannedAction::Resume(_) => DryRunAction::Resume,
            PlannedAction::Redo => DryRunAction::Redo,
            PlannedAction::New => DryRunAction::New,
            PlannedAction::Live => DryRunAction::Live,
            PlannedAction::Unreadable => DryRunAction::Unreadable,
        }
    }
}

/// Why a sweep stopped early; ordered by severity (a later, stronger reason replaces a weaker one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum CancelReason {
    /// The first SIGINT/SIGTERM: stop launching, ask running jobs to stop (SIGTERM), wait a grace period.
    Signal,
    /// The grace period ran out: remaining jobs get SIGKILL.
    GraceExpired,
    /// A second SIGINT/SIGTERM: SIGKILL at once.
    SecondSignal,
}

impl CancelReason {
    /// The reason in two or three words, for the marker of a job the stop killed.
    pub fn word(self) -> &'static str {
        match self {
            CancelReason::Signal => "stop signal",
            CancelReason::GraceExpired => "grace period over",
            CancelReason::SecondSignal => "second signal",
        }
    }

    /// How the stop went, for the line `drover run` ends with.
    pub fn describe(self) -> &'static str {
        match self {
            CancelReason::Signal => "by a signal; running jobs were asked to stop and did",
            CancelReason::GraceExpired => "by a signal; jobs still running after the grace period were killed",
            CancelReason::SecondSignal => "by a second signal; running jobs were killed",
        }
    }
}

/// A run that did not complete.
#[derive(Debug, Clone)]
pub struct FailedRun {
    /// The run id.
    pub run_id: String,
    /// Its configuration label.
    pub label: String,
    /// Why (from `exit.json`, or the exit status when the job wrote none).
    pub reason: String,
    /// The job's stderr log of this attempt.
    pub stderr_log: PathBuf,
}

/// What a backend did with the runs it was given.
#[derive(Debug, Clone, Default)]
pub struct LaunchReport {
    /// Runs whose `exit.json` says completed.
    pub completed: Vec<String>,
    /// Runs that ended without completing (not counting those stopped by cancellation).
    pub failed: Vec<FailedRun>,
    /// Failed attempts that were relaunched (run id, why the attempt failed); the run's final
    /// outcome is in `completed` or `failed`.
    pub retried: Vec<(String, String)>,
    /// Runs stopped by cancellation.
    pub cancelled: Vec<String>,
    /// Runs never started because of cancellation or a full results disk.
    pub not_started: usize,
    /// Set when the sweep was cancelled, with the strongest reason seen.
    pub cancel: Option<CancelReason>,
    /// Set when a run failed because the results disk is full: the directory it could not
    /// write in. Nothing was launched (or retried) after that; running jobs were let finish.
    pub disk_full: Option<PathBuf>,
}

#[cfg(test)]
mod tests {
    use super::CancelReason;

    /// MPI review D6: a killed rank's failure read "its stderr ends: ------", the rule under
    /// OpenMPI's message, instead of the message.
    #[test]
    fn a_banners_rule_is_not_taken_for_the_last_line_of_a_log() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let log = tmp.path().join("stderr.log");
        let noticed = "mpirun noticed that process rank 1 with PID 0 on node vm exited on signal 9 (Killed).";
        std::fs::write(&log, format!("{}\n{noticed}\n{}\n\n", "-".repeat(74), "-".repeat(74))).expect("log");
        assert_eq!(super::last_log_line(&log).as_deref(), Some(noticed));
        std::fs::write(&log, "=====\n").expect("log");
        assert_eq!(super::last_log_line(&log), None, "nothing but rules");
    }

    #[test]
    fn every_stop_is_described_in_words_not_a_variant_name() {
        for reason in [CancelReason::Signal, CancelReason::GraceExpired, CancelReason::SecondSignal] {
            let words = reason.describe();
            assert!(words.starts_with("by a ") && !words.contains(&format!("{reason:?}")), "{words}");
        }
    }
}

