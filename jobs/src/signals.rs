//! Cancellation: SIGINT/SIGTERM set a flag the training loop polls once per iteration, so a
//! stopped job still writes its exit marker; a second signal exits at once.
//!
//! Under Slurm (`--checkpoint-signal`), the stop also checkpoints: the checkpoint signal
//! (default SIGUSR1, sent by `--signal=B:USR1@<s>` before the time limit) and SIGTERM (preemption,
//! `scontrol requeue`, `scancel`) raise the flag and record which one came; a repeated SIGTERM
//! does not exit at once there, because Slurm signals every process of the job and the batch
//! script forwards the same signal again. Slurm's own SIGKILL after `KillWait` is the backstop.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

/// Which signal stopped the job (the last one received wins).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopCause {
    /// SIGINT.
    Interrupt,
    /// SIGTERM.
    Terminate,
    /// The checkpoint signal: the time limit is near.
    CheckpointSignal,
}

const CAUSE_INTERRUPT: usize = 1;
const CAUSE_TERMINATE: usize = 2;
const CAUSE_CHECKPOINT: usize = 3;

/// A flag raised by the first SIGINT or SIGTERM (or the checkpoint signal, when installed).
#[derive(Clone, Default)]
pub struct CancelFlag(Arc<AtomicBool>, Arc<AtomicUsize>, bool);

impl CancelFlag {
    /// Installs the handlers: the first signal raises the flag; a second one terminates the
    /// process with the conventional code (signal-hook's `register_conditional_shutdown`).
    pub fn install() -> std::io::Result<Self> {
        let flag = Arc::new(AtomicBool::new(false));
        let cause = Arc::new(AtomicUsize::new(0));
        for (sig, code) in [(signal_hook::consts::SIGINT, CAUSE_INTERRUPT), (signal_hook::consts::SIGTERM, CAUSE_TERMINATE)] {
            signal_hook::flag::register_conditional_shutdown(sig, 130, Arc::clone(&flag))?;
            signal_hook::flag::register_usize(sig, Arc::clone(&cause), code)?;
            signal_hook::flag::register(sig, Arc::clone(&flag))?;
        }
        Ok(Self(flag, cause, false))
    }

    /// Installs the handlers of a checkpointing job (see the module doc): `checkpoint_signal`
    /// and SIGTERM stop with a checkpoint; only a second SIGINT exits at once.
    pub fn install_checkpointing(checkpoint_signal: i32) -> std::io::Result<Self> {
        if checkpoint_signal == signal_hook::consts::SIGINT || signal_hook::consts::FORBIDDEN.contains(&checkpoint_signal) {
            return Err(std::io::Error::other(format!("signal {checkpoint_signal} cannot be the checkpoint signal")));
        }
        let flag = Arc::new(AtomicBool::new(false));
        let cause = Arc::new(AtomicUsize::new(0));
        signal_hook::flag::register_conditional_shutdown(signal_hook::consts::SIGINT, 130, Arc::clone(&flag))?;
        for (sig, code) in [
            (signal_hook::consts::SIGINT, CAUSE_INTERRUPT),
            (signal_hook::consts::SIGTERM, CAUSE_TERMINATE),
            (checkpoint_signal, CAUSE_CHECKPOINT),
        ] {
            signal_hook::flag::register_usize(sig, Arc::clone(&cause), code)?;
            signal_hook::flag::register(sig, Arc::clone(&flag))?;
        }
        Ok(Self(flag, cause, true))
    }

    /// Whether a stop should save a checkpoint (installed with `install_checkpointing`).
    pub fn checkpointing(&self) -> bool {
        self.2
    }

    /// The signal that stopped the job, if any.
    pub fn cause(&self) -> Option<StopCause> {
        match self.1.load(Ordering::Relaxed) {
            CAUSE_INTERRUPT => Some(StopCause::Interrupt),
            CAUSE_TERMINATE => Some(StopCause::Terminate),
            CAUSE_CHECKPOINT => Some(StopCause::CheckpointSignal),
            _ => None,
        }
    }

    /// Whether a stop was asked for.
    pub fn is_raised(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// The number of a signal named like Slurm's `--signal` (`USR1`, `SIGUSR2`, `10`); only signals
/// that are safe to repurpose as a checkpoint request are accepted.
pub fn checkpoint_signal_number(name: &str) -> Option<i32> {
    use signal_hook::consts::*;
    let bare = name.trim().trim_start_matches("SIG");
    let by_name = match bare {
        "USR1" => Some(SIGUSR1),
        "USR2" => Some(SIGUSR2),
        "HUP" => Some(SIGHUP),
        "ALRM" => Some(SIGALRM),
        "URG" => Some(SIGURG),
        "XCPU" => Some(SIGXCPU),
        _ => None,
    };
    by_name.or_else(|| {
        bare.parse::<i32>().ok().filter(|n| [SIGUSR1, SIGUSR2, SIGHUP, SIGALRM, SIGURG, SIGXCPU].contains(n))
    })
}

