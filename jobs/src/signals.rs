//! Cancellation: SIGINT/SIGTERM set a flag the training loop polls once per iteration, so a
//! stopped job still writes its exit marker; a second signal exits at once, with the shell's
//! code for that signal (130 for SIGINT, 143 for SIGTERM).
//!
//! Under Slurm (`--checkpoint-signal`), the stop also checkpoints: the checkpoint signal
//! (default SIGUSR1, sent by `--signal=B:USR1@<s>` before the time limit) and SIGTERM (preemption,
//! `scontrol requeue`, `scancel`) raise the flag and record which one came; when several came the
//! strongest decides (SIGTERM, then the checkpoint signal, then SIGINT: [`StopCause`]'s order,
//! which the ranks of a multi-rank job also agree by); a repeated SIGTERM
//! does not exit at once there, because Slurm signals every process of the job and the batch
//! script forwards the same signal again. Slurm's own SIGKILL after `KillWait` is the backstop.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Which signal stopped the job, ordered by strength: when several came, the strongest decides
/// (as the orchestrator's `CancelReason`, and as ranks agree in `train::agreed_stop`), so a
/// SIGINT after the checkpoint signal does not turn a time-limit requeue into a cancel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum StopCause {
    /// SIGINT: stop, without a checkpoint.
    Interrupt,
    /// The checkpoint signal: the time limit is near; checkpoint and requeue.
    CheckpointSignal,
    /// SIGTERM: preempted, requeued or cancelled; checkpoint and stop.
    Terminate,
}

impl StopCause {
    /// Every cause, weakest first.
    const ALL: [StopCause; 3] = [StopCause::Interrupt, StopCause::CheckpointSignal, StopCause::Terminate];
}

/// The exit code of a second signal that stops the job at once: the shell's 128 + its number
/// (130 for SIGINT, 143 for SIGTERM).
pub fn immediate_exit_code(signal: i32) -> i32 {
    128 + signal
}

/// A flag raised by the first SIGINT or SIGTERM (or the checkpoint signal, when installed),
/// and which of those signals came.
#[derive(Clone, Default)]
pub struct CancelFlag {
    raised: Arc<AtomicBool>,
    /// One flag per [`StopCause`], in [`StopCause::ALL`]'s order.
    seen: [Arc<AtomicBool>; 3],
    checkpointing: bool,
}

impl CancelFlag {
    fn seen(&self, cause: StopCause) -> &Arc<AtomicBool> {
        &self.seen[cause as usize]
    }

    /// Installs the handlers: the first signal raises the flag; a second one terminates the
    /// process with the conventional code of that second signal, 130 for SIGINT and 143 for
    /// SIGTERM (signal-hook's `register_conditional_shutdown`).
    pub fn install() -> std::io::Result<Self> {
        let flag = Self::default();
        for (sig, cause) in [(signal_hook::consts::SIGINT, StopCause::Interrupt), (signal_hook::consts::SIGTERM, StopCause::Terminate)] {
            // Registered first, so it sees the flag as the earlier signals left it.
            signal_hook::flag::register_conditional_shutdown(sig, immediate_exit_code(sig), Arc::clone(&flag.raised))?;
            signal_hook::flag::register(sig, Arc::clone(flag.seen(cause)))?;
            signal_hook::flag::register(sig, Arc::clone(&flag.raised))?;
        }
        Ok(flag)
    }

    /// Installs the handlers of a checkpointing job (see the module doc): `checkpoint_signal`
    /// and SIGTERM stop with a checkpoint; only a second SIGINT exits at once (a SIGINT after
    /// the checkpoint signal or SIGTERM is the first SIGINT, and the stronger cause stands).
    pub fn install_checkpointing(checkpoint_signal: i32) -> std::io::Result<Self> {
        if checkpoint_signal == signal_hook::consts::SIGINT || signal_hook::consts::FORBIDDEN.contains(&checkpoint_signal) {
            return Err(std::io::Error::other(format!("signal {checkpoint_signal} cannot be the checkpoint signal")));
        }
        let flag = Self { checkpointing: true, ..Self::default() };
        let sigint = signal_hook::consts::SIGINT;
        signal_hook::flag::register_conditional_shutdown(sigint, immediate_exit_code(sigint), Arc::clone(flag.seen(StopCause::Interrupt)))?;
        for (sig, cause) in [
            (sigint, StopCause::Interrupt),
            (signal_hook::consts::SIGTERM, StopCause::Terminate),
            (checkpoint_signal, StopCause::CheckpointSignal),
        ] {
            signal_hook::flag::register(sig, Arc::clone(flag.seen(cause)))?;
            signal_hook::flag::register(sig, Arc::clone(&flag.raised))?;
        }
        Ok(flag)
    }

    /// Whether a stop should save a checkpoint (installed with `install_checkpointing`).
    pub fn checkpointing(&self) -> bool {
        self.checkpointing
    }

    /// The strongest signal that came, if any.
    pub fn cause(&self) -> Option<StopCause> {
        StopCause::ALL.into_iter().rev().find(|&c| self.seen(c).load(Ordering::Relaxed))
    }

    /// Whether a stop was asked for.
    pub fn is_raised(&self) -> bool {
        self.raised.load(Ordering::Relaxed)
    }
}

/// Makes the death of this process's parent (a multi-rank job's launcher: `mpirun`, or Slurm's
/// step daemon under `srun`) a SIGTERM to this process (`PR_SET_PDEATHSIG`), so a rank whose
/// launcher died stops at the next iteration boundary (checkpointing under
/// `--checkpoint-signal`) instead of training on where nobody waits for it. Call it once the
/// handlers are installed: a parent that died between the two `getppid` calls around the
/// `prctl` (the signal then never comes) is answered with the same SIGTERM at once.
pub fn stop_when_parent_dies() -> std::io::Result<()> {
    // SAFETY: getppid, prctl and raise take integer arguments only and touch no memory.
    unsafe {
        let parent = libc::getppid();
        if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM as libc::c_ulong, 0, 0, 0) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        if libc::getppid() != parent {
            libc::raise(libc::SIGTERM);
        }
    }
    Ok(())
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


#[cfg(test)]
mod tests {
    use super::*;

    /// Set in a child copy of this test binary that installs the handlers and signals itself,
    /// so the test process keeps its default handlers.
    const CHILD_ENV: &str = "DROVER_SIGNALS_TEST_CHILD";

    /// Runs the test `name` of this binary alone in a child process with [`CHILD_ENV`] set.
    fn in_child(name: &str) -> std::process::Output {
        let exe = std::env::current_exe().expect("test binary");
        // Under qemu-user (scripts/test-aarch64.sh), the kernel cannot start this binary
        // itself: run it through the runner cargo was given, as cargo ran this process.
        let runner = std::env::var("CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER").ok().filter(|_| cfg!(target_arch = "aarch64"));
        let mut words = runner.as_deref().unwrap_or_default().split_whitespace();
        let mut cmd = match words.next() {
            Some(emulator) => {
                let mut cmd = std::process::Command::new(emulator);
                cmd.args(words).arg(exe);
                cmd
            }
            None => std::process::Command::new(exe),
        };
        cmd.args([name, "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, "1")
            .output()
            .expect("run the child")
    }

    fn raise(sig: i32) {
        // SAFETY: raise(3) with a valid signal number; the handlers only store to atomics.
        assert_eq!(unsafe { libc::raise(sig) }, 0);
    }

    #[test]
    fn the_strongest_cause_stands() {
        assert!(StopCause::Interrupt < StopCause::CheckpointSignal && StopCause::CheckpointSignal < StopCause::Terminate);
        let flag = CancelFlag::default();
        assert_eq!(flag.cause(), None);
        flag.seen(StopCause::CheckpointSignal).store(true, Ordering::Relaxed);
        flag.seen(StopCause::Interrupt).store(true, Ordering::Relaxed);
        assert_eq!(flag.cause(), Some(StopCause::CheckpointSignal));
        flag.seen(StopCause::Terminate).store(true, Ordering::Relaxed);
        assert_eq!(flag.cause(), Some(StopCause::Terminate));
        assert_eq!([immediate_exit_code(libc::SIGINT), immediate_exit_code(libc::SIGTERM)], [130, 143]);
    }

    /// Review (signals, item 7): the cause was the last signal's, so a SIGINT after the
    /// checkpoint signal turned a time-limit requeue into a cancel (and, as the SIGINT shutdown
    /// watched the shared flag, killed the job at once with 130).
    #[test]
    fn a_sigint_after_the_checkpoint_signal_keeps_the_requeue() {
        if std::env::var_os(CHILD_ENV).is_some() {
            let flag = CancelFlag::install_checkpointing(libc::SIGUSR2).expect("install");
            raise(libc::SIGUSR2);
            raise(libc::SIGINT);
            println!("cause {:?} raised {}", flag.cause(), flag.is_raised());
            return;
        }
        let out = in_child("signals::tests::a_sigint_after_the_checkpoint_signal_keeps_the_requeue");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{:?}: {stdout}", out.status);
        assert!(stdout.contains("cause Some(CheckpointSignal) raised true"), "{stdout}");
    }

    /// Review (signals, item 7): a second signal exited 130 whichever it was; a second SIGTERM
    /// exits 143, the shell's code for it.
    #[test]
    fn a_second_sigterm_exits_143() {
        if std::env::var_os(CHILD_ENV).is_some() {
            let flag = CancelFlag::install().expect("install");
            raise(libc::SIGINT);
            println!("first: cause {:?}", flag.cause());
            raise(libc::SIGTERM);
            println!("still alive");
            return;
        }
        let out = in_child("signals::tests::a_second_sigterm_exits_143");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(143), "{stdout}");
        assert!(stdout.contains("first: cause Some(Interrupt)") && !stdout.contains("still alive"), "{stdout}");
    }
}
