//! drover's lines on stderr, written so that they can never stop it: a closed or full stderr
//! (`drover run ... 2>&1 >/dev/null | head -1`, `2>/dev/full`) drops them, where `eprintln!`
//! would panic (exit code 101) and abort a sweep with its jobs still running; and while the
//! local backend's progress bar is drawn, each line goes above the bar instead of over it.
//!
//! Every line of `drover` goes through here: its own ([`say!`](crate::say)) and tracing's
//! ([`LossyStderr`], the subscribers' writer).

use std::io::Write;
use std::sync::Mutex;

use indicatif::ProgressBar;

/// The progress bar on the terminal now, if any: the local backend's, while it launches.
static BAR: Mutex<Option<ProgressBar>> = Mutex::new(None);

/// Prints a line to stderr like `eprintln!`, but drops it when stderr cannot be written (a
/// closed pipe, a full disk, a hung-up terminal) instead of panicking, and clears the progress
/// bar around it ([`show_bar`]). Never call it inside `ProgressBar::suspend`: it suspends the
/// bar itself, and the bar's lock is not reentrant.
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => {
        $crate::stderr::say_line(format_args!($($arg)*))
    };
}

/// What [`say!`](crate::say) expands to: `args` and a newline, in one write.
pub fn say_line(args: std::fmt::Arguments<'_>) {
    let mut line = args.to_string();
    line.push('\n');
    write_lossy(line.as_bytes());
}

/// Writes `bytes` to stderr above the progress bar, ignoring any error: a log line that cannot
/// be shown must not change what drover does.
pub fn write_lossy(bytes: &[u8]) {
    let write = || {
        let _ = std::io::stderr().lock().write_all(bytes);
    };
    // Cloned out, so that our mutex is not held while the bar's own lock is taken.
    let bar = BAR.lock().ok().and_then(|shown| shown.clone());
    match bar {
        Some(bar) => bar.suspend(write),
        None => write(),
    }
}

/// Stderr for tracing's subscribers (`with_writer(|| LossyStderr)`): [`write_lossy`]. Their
/// own writer would report a failed write with `eprintln!`, which panics on the same stderr.
#[derive(Debug, Clone, Copy, Default)]
pub struct LossyStderr;

impl Write for LossyStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        write_lossy(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let _ = std::io::stderr().flush();
        Ok(())
    }
}

/// Draws every line written here above `bar` until the returned guard is dropped.
pub(crate) fn show_bar(bar: &ProgressBar) -> BarShown {
    if let Ok(mut shown) = BAR.lock() {
        *shown = Some(bar.clone());
    }
    BarShown(())
}

/// Keeps a bar shown ([`show_bar`]); dropping it stops writing around the bar.
#[derive(Debug)]
pub(crate) struct BarShown(());

impl Drop for BarShown {
    fn drop(&mut self) {
        if let Ok(mut shown) = BAR.lock() {
            *shown = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A line written while a bar is shown goes through the bar's `suspend` (which takes the
    /// bar's lock: a `say!` inside `suspend` would deadlock, so none is left in the backend),
    /// and once the guard is dropped no bar is remembered.
    #[test]
    fn lines_are_written_around_the_shown_bar_until_its_guard_drops() {
        let bar = ProgressBar::hidden();
        {
            let _shown = show_bar(&bar);
            assert!(BAR.lock().unwrap().is_some());
            crate::say!("drover: a line above the bar");
            let mut writer = LossyStderr;
            assert_eq!(writer.write(b"a tracing line\n").unwrap(), 15);
        }
        assert!(BAR.lock().unwrap().is_none());
    }
}
