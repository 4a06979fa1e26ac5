//! One way to run a helper program with a deadline: `sbatch`/`squeue`/`scontrol`/`scancel`
//! (`backend/slurm_cmd.rs`) and `drover-job plugin ...` (`plugin_cmd/probe.rs`). A helper that
//! hangs (a controller that never answers, a plugin constructor that deadlocks) must not hang
//! `drover` with it.

use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// What a program that ended printed.
#[derive(Debug)]
pub struct Finished {
    /// Its exit status.
    pub status: ExitStatus,
    /// Its standard output (lossy UTF-8).
    pub stdout: String,
    /// Its standard error (lossy UTF-8).
    pub stderr: String,
}

/// How a program run by [`run_watched`] ended.
#[derive(Debug)]
pub enum Ran {
    /// It exited by itself.
    Finished(Finished),
    /// It was killed at the deadline; what it had printed by then.
    TimedOut(Printed),
    /// It was killed as soon as its stderr printed one of the phrases watched for; what it had
    /// printed by then.
    Stopped(Printed),
}

/// What a program that was killed had printed.
#[derive(Debug, Default)]
pub struct Printed {
    /// Its standard output so far (lossy UTF-8).
    pub stdout: String,
    /// Its standard error so far (lossy UTF-8).
    pub stderr: String,
}

/// Runs `cmd` with `input` on its standard input (none: `/dev/null`) and its output captured,
/// killing it and everything it started at `timeout`. `Ok(None)`: it timed out.
///
/// # Errors
/// The program cannot be started or waited for.
pub fn run(cmd: &mut Command, input: Option<Vec<u8>>, timeout: Duration) -> std::io::Result<Option<Finished>> {
    Ok(match run_watched(cmd, input, timeout, &[])? {
        Ran::Finished(done) => Some(done),
        Ran::TimedOut(_) | Ran::Stopped(_) => None,
    })
}

/// [`run`], also killing the program as soon as its stderr prints one of `stop_on` (a
/// program that announces it will wait and retry: `sbatch` refused by a full controller sleeps
/// and asks again for two minutes), and keeping what a killed program printed.
///
/// The child gets its own process group, so a timeout kills what it started too (a wrapper
/// script's children would otherwise hold the pipes open); stdin is written and the outputs
/// are read on threads, so neither side can block the other on a full pipe.
///
/// # Errors
/// The program cannot be started or waited for.
pub fn run_watched(cmd: &mut Command, input: Option<Vec<u8>>, timeout: Duration, stop_on: &[&str]) -> std::io::Result<Ran> {
    cmd.stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let mut child = cmd.spawn()?;
    let writer = child.stdin.take().zip(input).map(|(mut stdin, bytes)| {
        // A write error means the program exited without reading; its status tells why.
        std::thread::spawn(move || {
            let _ = stdin.write_all(&bytes);
        })
    });
    let seen = Arc::new(AtomicBool::new(false));
    let reader = |pipe: Option<Box<dyn Read + Send>>, watch: Vec<String>| {
        let seen = Arc::clone(&seen);
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            if let Some(mut p) = pipe {
                let mut chunk = [0u8; 4096];
                loop {
                    match p.read(&mut chunk) {
                        Ok(0) => break,
                        Ok(n) => bytes.extend_from_slice(&chunk[..n]),
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                        Err(_) => break,
                    }
                    if !watch.is_empty() && !seen.load(Ordering::Relaxed) && watch.iter().any(|w| String::from_utf8_lossy(&bytes).contains(w.as_str())) {
                        seen.store(true, Ordering::Relaxed);
                    }
                }
            }
            String::from_utf8_lossy(&bytes).into_owned()
        })
    };
    let out_thread = reader(child.stdout.take().map(|p| Box::new(p) as Box<dyn Read + Send>), Vec::new());
    let watch = stop_on.iter().map(|s| s.to_string()).collect();
    let err_thread = reader(child.stderr.take().map(|p| Box::new(p) as Box<dyn Read + Send>), watch);
    let deadline = Instant::now() + timeout;
    let mut sleep = Duration::from_millis(1);
    // `Err(stopped)`: killed, at the deadline or (`stopped`) for a phrase watched for.
    let status = loop {
        match child.try_wait()? {
            Some(status) => break Ok(status),
            None if seen.load(Ordering::Relaxed) || Instant::now() >= deadline => {
                let stopped = seen.load(Ordering::Relaxed);
                // SAFETY: kill(2) on the child's process group (its pid, as set above); the
                // child is not reaped yet, so the group id cannot have been reused.
                unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
                let _ = child.kill();
                let _ = child.wait();
                break Err(stopped);
            }
            None => {
                std::thread::sleep(sleep);
                sleep = (sleep * 2).min(Duration::from_millis(50));
            }
        }
    };
    if let Some(w) = writer {
        let _ = w.join();
    }
    let stdout = out_thread.join().unwrap_or_default();
    let stderr = err_thread.join().unwrap_or_default();
    Ok(match status {
        Ok(status) => Ran::Finished(Finished { status, stdout, stderr }),
        Err(false) => Ran::TimedOut(Printed { stdout, stderr }),
        Err(true) => Ran::Stopped(Printed { stdout, stderr }),
    })
}

/// Writes an executable shell script with `body` at `path` for a test to run (a stand-in for
/// `srun` and the like), and returns once it can be run. Until then it may be "busy"
/// (ETXTBSY): a child that another test thread forks while the file is open for writing holds
/// that descriptor until it execs. A probe run (`DROVER_STAND_IN_PROBE` set) exits at once.
#[cfg(test)]
pub(crate) fn write_stand_in(path: &std::path::Path, body: &str) {
    use std::os::unix::fs::PermissionsExt;
    let text = format!("#!/bin/sh\n[ -n \"${{DROVER_STAND_IN_PROBE:-}}\" ] && exit 0\n{body}\n");
    std::fs::write(path, text).expect("write the stand-in");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).expect("chmod the stand-in");
    for _ in 0..400 {
        let probe = Command::new(path).env("DROVER_STAND_IN_PROBE", "1").stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).status();
        match probe {
            Ok(_) => return,
            Err(e) if e.kind() == std::io::ErrorKind::ExecutableFileBusy => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => panic!("cannot run the stand-in {}: {e}", path.display()),
        }
    }
    panic!("the stand-in {} stayed busy for 2 s", path.display());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_goes_in_output_comes_back_and_a_hang_is_killed_with_its_children() {
        let done = run(Command::new("sh").args(["-c", "tr a-z A-Z; echo oops >&2; exit 3"]), Some(b"hello".to_vec()), Duration::from_secs(20))
            .expect("runs")
            .expect("ends");
        assert_eq!((done.stdout.as_str(), done.stderr.as_str(), done.status.code()), ("HELLO", "oops\n", Some(3)));

        // A grandchild holding the pipes open must not keep `run` waiting past the deadline.
        let t0 = Instant::now();
        let hung = run(Command::new("sh").args(["-c", "sleep 30 & sleep 30"]), None, Duration::from_millis(300)).expect("runs");
        assert!(hung.is_none(), "timed out");
        assert!(t0.elapsed() < Duration::from_secs(10), "returned at the deadline, not when the children end: {:?}", t0.elapsed());
    }

    /// A killed program's output is kept (review: a timed-out `sbatch` lost why it waited),
    /// and a program is killed as soon as its stderr says a phrase watched for, not at the
    /// deadline.
    #[test]
    fn a_killed_program_keeps_its_output_and_a_watched_phrase_stops_it_at_once() {
        let script = "echo out; echo 'sbatch: error: busy, sleeping and retrying' >&2; sleep 30";
        let t0 = Instant::now();
        match run_watched(Command::new("sh").args(["-c", script]), None, Duration::from_millis(500), &[]).expect("runs") {
            Ran::TimedOut(p) => assert_eq!((p.stdout.as_str(), p.stderr.as_str()), ("out\n", "sbatch: error: busy, sleeping and retrying\n")),
            other => panic!("{other:?}"),
        }
        assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());
        let t0 = Instant::now();
        match run_watched(Command::new("sh").args(["-c", script]), None, Duration::from_secs(20), &["nothing", "sleeping and retrying"]).expect("runs") {
            Ran::Stopped(p) => assert_eq!(p.stderr, "sbatch: error: busy, sleeping and retrying\n"),
            other => panic!("{other:?}"),
        }
        assert!(t0.elapsed() < Duration::from_secs(10), "stopped at the phrase, not at the deadline: {:?}", t0.elapsed());
        match run_watched(Command::new("sh").args(["-c", "echo fine >&2"]), None, Duration::from_secs(20), &["sleeping"]).expect("runs") {
            Ran::Finished(done) => assert_eq!((done.stderr.as_str(), done.status.success()), ("fine\n", true)),
            other => panic!("{other:?}"),
        }
    }
}
