//! Cancellation: SIGINT/SIGTERM set a flag the training loop polls once per iteration, so a
//! stopped job still writes its exit marker; a second signal exits at once.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// A flag raised by the first SIGINT or SIGTERM.
#[derive(Clone, Default)]
pub struct CancelFlag(Arc<AtomicBool>);

impl CancelFlag {
    /// Installs the handlers: the first signal raises the flag; a second one terminates the
    /// process with the conventional code (signal-hook's `register_conditional_shutdown`).
    pub fn install() -> std::io::Result<Self> {
        let flag = Arc::new(AtomicBool::new(false));
        for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
            signal_hook::flag::register_conditional_shutdown(sig, 130, Arc::clone(&flag))?;
            signal_hook::flag::register(sig, Arc::clone(&flag))?;
        }
        Ok(Self(flag))
    }

    /// Whether a stop was asked for.
    pub fn is_raised(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}
