//! Issue 12 items 5 and 7 end to end: damaged result files and hostile plugin libraries give
//! errors naming the file and the reason without costing the other runs, and jobs killed by a
//! signal are reported with it and retried.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;

use drover_tests::{artifact, drover, read_json, run_dirs, run_ok, write_sweep};

fn sweep(seeds: &str) -> String {
    format!(
        r#"
name = "e2e-hardening"
[run]
env = "CartPole-v1"
plugin = "ppo"
num_envs = 4
num_steps = 64
total_steps = 512
[sweep]
seeds = {seeds}
"#
    )
}

fn text(out: &Output) -> (String, String) {
    (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// `drover` with a private plugin-description cache.
fn drover_in(tmp: &Path) -> std::process::Command {
    let mut cmd = drover();
    cmd.env("DROVER_CACHE_DIR", tmp.join("cache"));
    cmd
}

#[test]
fn damaged_results_are_left_out_by_analyze_and_redone_by_run() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let sweep_file = write_sweep(tmp.path(), &sweep("[1, 2, 3, 4, 5, 6]"));
    let results = tmp.path().join("results");
    let run = || {
        let mut cmd = drover_in(tmp.path());
        cmd.arg("run").arg(&sweep_file).arg("--results").arg(&results).args(["-j", "2"]);
        cmd
    };
    run_ok(&mut run());
    let dirs = run_dirs(&results);
    assert_eq!(dirs.len(), 6);

    // One kind of damage per run; the sixth stays whole.
    let parquet = dirs[0].join("metrics.parquet");
    let bytes = std::fs::read(&parquet).expect("metrics.parquet");
    std::fs::write(&parquet, &bytes[..bytes.len() / 2]).expect("truncate");
    std::fs::write(dirs[1].join("metrics.parquet"), b"PAR1 garbage, not a parquet file").expect("write");
    std::fs::write(dirs[2].join("summary.json"), b"{\"format_version\": 1, \"run_id\": ").expect("write");
    let mut summary = read_json(&dirs[3].join("summary.json"));
    summary["format_version"] = 99.into();
    std::fs::write(dirs[3].join("summary.json"), summary.to_string()).expect("write");
    std::fs::write(dirs[4].join("exit.json"), b"\x00\x01 not json").expect("write");

    let out = run_ok(drover_in(tmp.path()).arg("analyze").arg(&results).args(["--reps", "100", "--band-reps", "100", "--no-plots"]));
    let (stdout, stderr) = text(&out);
    assert!(stdout.contains("1 run analyzed (1 completed, 5 left out"), "{stdout}\n{stderr}");
    let name = |d: &PathBuf| d.file_name().unwrap().to_string_lossy().into_owned();
    let expect = [
        (0, "metrics.parquet", "truncated or overwritten"),
        (1, "metrics.parquet", "no `PAR1` magic at its end"),
        (2, "summary.json", "EOF while parsing"),
        (3, "summary.json", "unknown format_version 99 (this drover reads 1)"),
        (4, "exit.json", "expected value"),
    ];
    // One line per state with its runs' reasons under it (3 at most each: here 2 and 3).
    assert!(stderr.contains("drover: left out of the analysis: 2 runs completed without usable metrics:"), "{stderr}");
    assert!(stderr.contains("drover: left out of the analysis: 3 runs with a damaged record:"), "{stderr}");
    for (i, file, why) in expect {
        let line = stderr
            .lines()
            .find(|l| l.starts_with(&format!("  run {}: ", name(&dirs[i]))))
            .unwrap_or_else(|| panic!("run {i} is not listed as left out:\n{stderr}"));
        assert!(line.contains(&dirs[i].join(file).display().to_string()) && line.contains(why), "run {i}: {line}");
    }

    // `drover run` trusts none of the five and redoes exactly them.
    let out = run_ok(&mut run());
    let (_, stderr) = text(&out);
    assert!(stderr.contains("6 runs, 1 already completed, launching 5"), "{stderr}");
    assert_eq!(stderr.matches("  redo: ").count(), 5, "{stderr}");
    assert!(stderr.contains("5 completed, 1 skipped"), "{stderr}");
    for dir in &dirs[..5] {
        assert!(dir.join("attempt-1").is_dir(), "the damaged files of {} were kept aside", dir.display());
        assert_eq!(read_json(&dir.join("exit.json"))["status"], "completed");
    }
    let out = run_ok(drover_in(tmp.path()).arg("analyze").arg(&results).args(["--reps", "100", "--band-reps", "100", "--no-plots"]));
    assert!(text(&out).0.contains("6 runs analyzed (6 completed, 0 left out"), "{}", text(&out).0);
}

/// A `drover-job` stand-in that kills itself with `signal` on a run's first attempt (every
/// attempt when `every` is set) and is the real runtime otherwise, plugin probes included.
fn faulty_job(dir: &Path, signal: &str, every: bool) -> PathBuf {
    let path = dir.join(format!("job-{signal}.sh"));
    let first_only = if every { "" } else { " && [ ! -d \"$4/attempt-1\" ]" };
    let script = format!(
        "#!/bin/sh\nif [ \"$1\" = --spec ]{first_only}; then kill -{signal} $$; fi\nexec {} \"$@\"\n",
        artifact("drover-job").display()
    );
    std::fs::write(&path, script).expect("write script");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    path
}

#[test]
fn killed_jobs_are_reported_with_their_signal_and_retried() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let sweep_file = write_sweep(tmp.path(), &sweep("[1, 2]"));

    // SIGKILL that drover did not send: reported as a likely OOM kill, retried, then completed.
    let results = tmp.path().join("killed");
    let out = run_ok(
        drover_in(tmp.path())
            .env("DROVER_JOB_BIN", faulty_job(tmp.path(), "KILL", false))
            .arg("run")
            .arg(&sweep_file)
            .arg("--results")
            .arg(&results)
            .args(["--max-retries", "1", "-j", "2"]),
    );
    let (_, stderr) = text(&out);
    assert!(stderr.contains("killed by signal 9 (SIGKILL): out of memory?"), "{stderr}");
    assert!(stderr.contains("retrying as attempt 2 (retry 1 of 1)"), "{stderr}");
    assert!(stderr.contains("2 completed, 0 skipped (already completed), 2 retried, 0 failed"), "{stderr}");
    for dir in run_dirs(&results) {
        let first = read_json(&dir.join("attempt-1/exit.json"));
        assert_eq!(first["status"], "failed", "{}", dir.display());
        assert!(first["reason"].as_str().is_some_and(|r| r.contains("SIGKILL")), "{first}");
        assert_eq!(read_json(&dir.join("exit.json"))["status"], "completed");
        assert!(dir.join("attempt-2.stderr.log").is_file());
    }

    // A crash on every attempt: the budget runs out and the run's own record keeps the reason.
    let results = tmp.path().join("crashed");
    let out = drover_in(tmp.path())
        .env("DROVER_JOB_BIN", faulty_job(tmp.path(), "SEGV", true))
        .arg("run")
        .arg(&sweep_file)
        .arg("--results")
        .arg(&results)
        .args(["--max-retries", "1", "-j", "2"])
        .output()
        .expect("spawn");
    let (_, stderr) = text(&out);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("0 completed, 0 skipped (already completed), 2 retried, 2 failed"), "{stderr}");
    for dir in run_dirs(&results) {
        let exit = read_json(&dir.join("exit.json"));
        assert_eq!(exit["status"], "failed");
        let reason = exit["reason"].as_str().unwrap_or_default();
        assert!(reason.contains("killed by signal 11 (SIGSEGV)") && !reason.contains("out of memory"), "{reason}");
    }
}

/// Compiles C source into a shared library (the C compiler is the one cargo links with).
fn c_library(dir: &Path, name: &str, source: &str) -> PathBuf {
    let c = dir.join(format!("{name}.c"));
    std::fs::write(&c, source).expect("write C source");
    let lib = dir.join(format!("libdrover_plugin_{name}.so"));
    let out = std::process::Command::new("cc").args(["-shared", "-fPIC", "-o"]).arg(&lib).arg(&c).output().expect("run cc");
    assert!(out.status.success(), "cc failed: {}", String::from_utf8_lossy(&out.stderr));
    lib
}

#[test]
fn hostile_plugin_libraries_are_refused_with_file_and_reason() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let plugins = tmp.path().join("plugins");
    std::fs::create_dir(&plugins).expect("mkdir");
    // Exports drover's interface version (1.1) but no abi_stable root module.
    let noroot = c_library(&plugins, "noroot", "unsigned long long drover_plugin_interface_version(void) { return (1ULL << 32) | 1ULL; }\n");
    let foreign = c_library(&plugins, "foreign", "int not_drover(void) { return 1; }\n");
    let garbage = plugins.join("libdrover_plugin_garbage.so");
    std::fs::write(&garbage, "not an ELF file, just text\n".repeat(4)).expect("write");
    let truncated = plugins.join("libdrover_plugin_truncated.so");
    let ppo = std::fs::read(artifact("libdrover_plugin_ppo.so")).expect("read the ppo plugin");
    std::fs::write(&truncated, &ppo[..ppo.len() / 3]).expect("write");

    let out = run_ok(drover_in(tmp.path()).args(["plugin", "list", "--plugin-path"]).arg(&plugins));
    let (stdout, _) = text(&out);
    let refused = |lib: &Path, why: &str| {
        let line = stdout.lines().find(|l| l.starts_with(&format!("refused {}:", lib.display())));
        assert!(line.is_some_and(|l| l.contains(why)), "`{}` should be refused with `{why}`:\n{stdout}", lib.display());
    };
    refused(&noroot, "no root module");
    refused(&foreign, "does not export `drover_plugin_interface_version`: not a drover algorithm plugin");
    refused(&garbage, "without an ELF header");
    refused(&truncated, "truncated: ");
    assert!(stdout.contains("ppo 0.1.0"), "the good plugins are still listed:\n{stdout}");

    for (lib, why) in [(&noroot, "no root module"), (&garbage, "without an ELF header"), (&truncated, "truncated: ")] {
        let out = drover_in(tmp.path()).args(["plugin", "check"]).arg(lib).output().expect("spawn");
        let (_, stderr) = text(&out);
        assert!(!out.status.success() && stderr.contains(&lib.display().to_string()) && stderr.contains(why), "{stderr}");
    }

    // A sweep naming the library is refused before anything runs, naming the sweep file too.
    let body = sweep("[1]").replace("plugin = \"ppo\"", "plugin = \"noroot\"");
    let body = format!("plugin_path = [\"{}\"]\n{body}", plugins.display());
    let sweep_file = write_sweep(tmp.path(), &body);
    let results = tmp.path().join("results");
    let out = drover_in(tmp.path()).arg("run").arg(&sweep_file).arg("--results").arg(&results).output().expect("spawn");
    let (_, stderr) = text(&out);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains(&sweep_file.display().to_string()) && stderr.contains("no root module"), "{stderr}");
    assert!(!results.join("runs").exists(), "nothing was launched");
}

/// A tmpfs mounted for one test and unmounted when dropped.
struct SmallDisk {
    dir: PathBuf,
}

impl SmallDisk {
    /// Mounts `size` (e.g. `600k`) at `dir`; `None`, with the reason printed, where this machine
    /// lets no test mount (not root): CI runs as root, so there the test always runs.
    fn mount(dir: &Path, size: &str) -> Option<SmallDisk> {
        std::fs::create_dir_all(dir).expect("mount point");
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .expect("spawn mount");
        if !out.status.success() {
            assert!(std::env::var_os("CI").is_none(), "CI must be able to mount a tmpfs: {}", text(&out).1);
            println!("skipped: cannot mount a tmpfs here: {}", text(&out).1.trim());
            return None;
        }
        Some(SmallDisk { dir: dir.to_path_buf() })
    }

    fn resize(&self, size: &str) {
        run_ok(std::process::Command::new("mount").args(["-o", &format!("remount,size={size}")]).arg(&self.dir));
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

/// Issue 12 item 4: a sweep whose results disk fills up fails the run that cannot write with an
/// error saying the disk is full, launches nothing after it, keeps every run finished before, and
/// completes once space is back without redoing those.
#[test]
fn a_full_results_disk_fails_clearly_keeps_finished_runs_and_resumes_after() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let Some(disk) = SmallDisk::mount(&tmp.path().join("disk"), "600k") else { return };
    let seeds = "[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]";
    let body = format!(
        "name = \"full\"\nmax_parallel = 1\n[run]\nenv = \"CartPole-v1\"\nplugin = \"ppo\"\ntotal_steps = 100000\n[sweep]\nseeds = {seeds}\n"
    );
    let sweep = write_sweep(tmp.path(), &body);
    let results = disk.dir.join("results");
    let out = drover_in(tmp.path()).arg("run").arg(&sweep).arg("--results").arg(&results).output().expect("spawn");
    let (_, stderr) = text(&out);
    assert!(!out.status.success(), "the disk cannot hold twelve runs:\n{stderr}");
    assert!(stderr.contains("the results disk is full"), "{stderr}");
    let completed: Vec<PathBuf> = run_dirs(&results)
        .into_iter()
        .filter(|r| std::fs::read_to_string(r.join("exit.json")).is_ok_and(|t| t.contains("\"completed\"")))
        .collect();
    assert!(!completed.is_empty() && completed.len() < 11, "{} runs completed before the disk filled", completed.len());
    for run in &completed {
        assert_eq!(read_json(&run.join("summary.json"))["run_id"].as_str(), run.file_name().and_then(|n| n.to_str()));
    }
    // After the first run that found the disk full, nothing else was launched: one failure, and
    // every later run is counted as not started and has no log of any attempt.
    let not_started = 12 - completed.len() - 1;
    let counts = format!("{} completed, 0 skipped (already completed), 0 retried, 1 failed, 0 cancelled, {not_started} not started", completed.len());
    assert!(stderr.contains(&counts), "expected `{counts}`:\n{stderr}");
    assert_eq!(stderr.matches("the results disk is full: launching no new runs").count(), 1, "{stderr}");
    assert!(
        stderr.contains(&format!("stopped launching: the results disk is full (cannot write in `{}", results.display()))
            && stderr.contains(&format!("so {not_started} run(s) were not started; free space on that disk and run the same command again")),
        "{stderr}"
    );
    let launched = |dir: &PathBuf| dir.join("attempt-1.stderr.log").exists() || dir.join("exit.json").exists();
    let untouched = run_dirs(&results).iter().filter(|d| !launched(d)).count();
    assert_eq!(untouched, not_started, "runs after the full-disk failure must not be launched");

    disk.resize("20m");
    let again = run_ok(drover_in(tmp.path()).arg("run").arg(&sweep).arg("--results").arg(&results));
    let (_, stderr) = text(&again);
    assert!(stderr.contains(&format!("{} already completed, launching {}", completed.len(), 12 - completed.len())), "{stderr}");
    assert!(!stderr.contains("disk is full"), "{stderr}");
    let done = run_dirs(&results)
        .iter()
        .filter(|r| std::fs::read_to_string(r.join("exit.json")).is_ok_and(|t| t.contains("\"completed\"")))
        .count();
    assert_eq!(done, 12);
}

/// Issue 12 follow-up: `[local] max_retries` in the sweep file retries a failed run as
/// `--max-retries` does, and the flag, when given, wins over it.
#[test]
fn local_max_retries_in_the_sweep_file_retries_and_the_flag_wins() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let sweep_file = write_sweep(tmp.path(), &format!("{}[local]\nmax_retries = 1\n", sweep("[1]")));
    let job = faulty_job(tmp.path(), "KILL", false);
    let run = |results: &Path| {
        let mut cmd = drover_in(tmp.path());
        cmd.env("DROVER_JOB_BIN", &job).arg("run").arg(&sweep_file).arg("--results").arg(results);
        cmd
    };

    let results = tmp.path().join("from-file");
    let (_, stderr) = text(&run_ok(&mut run(&results)));
    assert!(stderr.contains("retrying as attempt 2 (retry 1 of 1)"), "{stderr}");
    assert!(stderr.contains("1 completed, 0 skipped (already completed), 1 retried, 0 failed"), "{stderr}");
    let dirs = run_dirs(&results);
    assert_eq!(dirs.len(), 1);
    assert_eq!(read_json(&dirs[0].join("attempt-1/exit.json"))["status"], "failed");
    assert_eq!(read_json(&dirs[0].join("exit.json"))["status"], "completed");
    assert!(!dirs[0].join("attempt-2").exists(), "retried once, not more");

    // `--max-retries 0` turns the file's budget off: the first kill is final.
    let results = tmp.path().join("flag-wins");
    let out = run(&results).args(["--max-retries", "0"]).output().expect("spawn");
    let (_, stderr) = text(&out);
    assert!(!out.status.success(), "{stderr}");
    assert!(!stderr.contains("retrying"), "{stderr}");
    assert!(stderr.contains("0 completed, 0 skipped (already completed), 0 retried, 1 failed"), "{stderr}");
}

/// A local sweep can be watched and stopped from another terminal: `drover status` shows the
/// `drover run` working through it, each run's state and progress; `drover cancel` stops that
/// `drover run` as Ctrl-C would (running jobs cancelled and kept, the rest not started), after
/// which status shows nobody running it and a second cancel has nothing to do.
#[test]
fn local_status_shows_progress_and_cancel_stops_the_drover_run() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let results = tmp.path().join("results");
    let sweep = write_sweep(
        tmp.path(),
        "name = \"watch\"\n[run]\nenv = \"CartPole-v1\"\nplugin = \"ppo\"\nnum_envs = 8\nnum_steps = 64\n\
         total_steps = 50000000\n[sweep]\nseeds = [1, 2, 3]\n",
    );
    let mut driver = drover()
        .arg("run")
        .arg(&sweep)
        .arg("--results")
        .arg(&results)
        .args(["-j", "2"])
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn drover run");
    let status = || -> serde_json::Value {
        let out = run_ok(drover().arg("status").arg(&results).arg("--json"));
        serde_json::from_slice(&out.stdout).expect("status --json is JSON")
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let watched = loop {
        let s = if results.join("sweep.json").exists() { status() } else { serde_json::Value::Null };
        let runs = s["runs"].as_array().cloned().unwrap_or_default();
        let running: Vec<_> = runs.iter().filter(|r| r["state"] == "running").collect();
        if running.len() == 2 && running.iter().all(|r| r["progress"]["global_step"].as_u64().is_some_and(|g| g > 0)) {
            break s;
        }
        assert!(std::time::Instant::now() < deadline, "two runs never showed progress: {s:#}");
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    assert_eq!(watched["backend"], "local");
    let holder = watched["driver"].as_str().expect("the drover run is named");
    assert!(holder.contains(&format!("pid {}", driver.id())) && holder.contains("command drover run"), "{holder}");
    assert_eq!(watched["counts"]["pending"], 1, "{watched:#}");
    for r in watched["runs"].as_array().expect("runs").iter().filter(|r| r["state"] == "running") {
        // The steps the run trains: 50,000,000 rounded down to whole iterations of 8 × 64.
        assert_eq!(r["progress"]["total_steps"], 97_656 * 512);
        assert!(r["seed"].as_u64().is_some_and(|s| (1..=3).contains(&s)), "{r}");
    }
    let text = run_ok(drover().arg("status").arg(&results));
    let table = String::from_utf8_lossy(&text.stdout);
    assert!(table.contains("running locally: pid") && table.contains("% (step "), "{table}");

    let cancel = run_ok(drover().arg("cancel").arg(&results));
    let said = String::from_utf8_lossy(&cancel.stderr);
    assert!(said.contains("drover: stopped `drover run` (pid"), "{said}");
    let code = driver.wait().expect("wait for drover run").code();
    assert_eq!(code, Some(130), "drover run stops as on Ctrl-C");

    let after = status();
    assert_eq!(after["driver"], serde_json::Value::Null, "{after:#}");
    assert_eq!((after["counts"]["cancelled"].as_u64(), after["counts"]["not_submitted"].as_u64()), (Some(2), Some(1)), "{after:#}");
    let again = run_ok(drover().arg("cancel").arg(&results));
    assert!(String::from_utf8_lossy(&again.stderr).contains("nothing to cancel"));
    let wrong = drover().arg("status").arg(tmp.path()).output().expect("spawn");
    let said = String::from_utf8_lossy(&wrong.stderr);
    assert!(!wrong.status.success() && said.contains("is not a drover results directory (no `sweep.json`)"), "{said}");
}

/// Follow-up (sixteenth session): `drover cancel` waited the default grace (10 s, +5 s) for a
/// local sweep whatever its `local.grace_seconds`, so a sweep whose jobs take longer to stop
/// was answered "still stopping" while its stop went on as asked. Here a job takes about 17 s
/// to stop and the sweep allows 30: cancel waits for the `drover run` to end.
#[test]
fn local_cancel_waits_the_sweeps_grace_period() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let results = tmp.path().join("results");
    let sweep = write_sweep(
        tmp.path(),
        "name = \"slow-stop\"\n[run]\nenv = \"CartPole-v1\"\nplugin = \"ppo\"\nnum_envs = 8\nnum_steps = 64\n\
         total_steps = 50000000\n[sweep]\nseeds = [1]\n[local]\ngrace_seconds = 30\n",
    );
    // A job that takes 17 s to stop on SIGTERM; plugin probes go to the real runtime.
    let job = tmp.path().join("slow-stop-job.sh");
    let script = format!(
        "#!/bin/sh\nif [ \"$1\" = --spec ]; then trap 'sleep 17; exit 143' TERM; touch \"{}\"; while :; do sleep 1; done; fi\nexec {} \"$@\"\n",
        tmp.path().join("started").display(),
        artifact("drover-job").display()
    );
    std::fs::write(&job, script).expect("write script");
    std::fs::set_permissions(&job, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let mut driver = drover()
        .env("DROVER_JOB_BIN", &job)
        .arg("run")
        .arg(&sweep)
        .arg("--results")
        .arg(&results)
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn drover run");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !tmp.path().join("started").exists() {
        assert!(std::time::Instant::now() < deadline, "the job never started");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let lock = std::fs::read_to_string(results.join(".drover.lock")).expect("lock text");
    assert!(lock.ends_with("grace_seconds 30\n"), "{lock}");
    let began = std::time::Instant::now();
    let cancel = run_ok(drover().arg("cancel").arg(&results));
    let said = String::from_utf8_lossy(&cancel.stderr);
    assert!(said.contains("drover: stopped `drover run` (pid"), "{said}");
    assert!(began.elapsed() >= std::time::Duration::from_secs(15), "the job took 17 s to stop: {:?}", began.elapsed());
    assert_eq!(driver.wait().expect("wait for drover run").code(), Some(130));
}

/// The sweep of the resume tests: 400 iterations of 512 steps, a few seconds, long enough to
/// stop in the middle.
fn resume_sweep(dir: &Path) -> PathBuf {
    write_sweep(
        dir,
        "name = \"resume\"\n[run]\nenv = \"CartPole-v1\"\nplugin = \"ppo\"\nnum_envs = 8\nnum_steps = 64\n\
         total_steps = 204800\n[sweep]\nseeds = [4]\n",
    )
}

/// `drover run` on `sweep`, with `DROVER_SIMD` set to `simd` or removed.
fn drover_run(sweep: &Path, results: &Path, simd: Option<&str>) -> std::process::Command {
    let mut cmd = drover();
    cmd.arg("run").arg(sweep).arg("--results").arg(results);
    match simd {
        Some(level) => cmd.env("DROVER_SIMD", level),
        None => cmd.env_remove("DROVER_SIMD"),
    };
    cmd
}

/// SIGHUP at its default in the child, whatever the test runner has (under `nohup` it would
/// inherit "ignore", and drover would rightly leave it so).
fn hangup_as_default(cmd: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: signal() is async-signal-safe; it only resets this child's disposition.
    unsafe {
        cmd.pre_exec(|| {
            libc::signal(libc::SIGHUP, libc::SIG_DFL);
            Ok(())
        });
    }
}

/// The first run directory of `results` once it holds `rows` metrics rows (within 2 minutes).
fn first_run_with_rows(results: &Path, rows: usize) -> PathBuf {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        let runs = if results.join("runs").is_dir() { run_dirs(results) } else { Vec::new() };
        if let Some(run) = runs.into_iter().next().filter(|r| drover_tests::metrics_rows_so_far(r).len() >= rows) {
            return run;
        }
        assert!(std::time::Instant::now() < deadline, "the run never got going");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Starts the run of `sweep` into `results`, stops it with `drover cancel` once 20 iterations
/// are written, and returns its directory and the iteration its checkpoint holds.
fn stop_part_way(sweep: &Path, results: &Path, simd: Option<&str>) -> (PathBuf, u64) {
    let mut driver = drover_run(sweep, results, simd).stderr(std::process::Stdio::null()).spawn().expect("spawn");
    let run = first_run_with_rows(results, 20);
    run_ok(drover().arg("cancel").arg(results));
    assert_eq!(driver.wait().expect("wait").code(), Some(130));
    let exit = read_json(&run.join("exit.json"));
    assert_eq!(exit["status"], "cancelled", "{exit}");
    let at = read_json(&run.join("checkpoint.json"))["iteration"].as_u64().expect("a checkpoint was written");
    assert!((20..400).contains(&at), "stopped part-way, at iteration {at}");
    (run, at)
}

/// Review (checkpoint size): a checkpoint no longer copies the metrics rows but vouches for
/// the first lines of `metrics.jsonl` by hash; a file edited after the checkpoint refuses the
/// resume as a damaged checkpoint does, naming both files and why, and leaves them as they were.
#[test]
fn a_metrics_file_changed_after_the_checkpoint_refuses_the_resume() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let sweep = resume_sweep(tmp.path());
    let results = tmp.path().join("r");
    let (run, at) = stop_part_way(&sweep, &results, None);
    let ck = read_json(&run.join("checkpoint.json"));
    assert_eq!((ck["format_version"].as_u64(), ck["metrics_jsonl"]["rows"].as_u64()), (Some(3), Some(at)), "{}", ck["metrics_jsonl"]);
    assert!(ck.get("rows").is_none(), "no rows inline");
    let jsonl = run.join("metrics.jsonl");
    let edited = std::fs::read_to_string(&jsonl).expect("metrics").replacen("\"iteration\":1,", "\"iteration\":7,", 1);
    std::fs::write(&jsonl, &edited).expect("edit");
    let checkpoint_before = std::fs::read(run.join("checkpoint.json")).expect("checkpoint");
    let out = drover_run(&sweep, &results, None).output().expect("rerun");
    assert_ne!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let exit = read_json(&run.join("exit.json"));
    let reason = exit["reason"].as_str().unwrap_or_default();
    assert_eq!(exit["status"], "failed", "{exit}");
    assert!(reason.contains("cannot resume from checkpoint `") && reason.contains("checkpoint.json"), "{reason}");
    assert!(reason.contains("of `metrics.jsonl` have SHA-256") && reason.contains("the file changed after the checkpoint"), "{reason}");
    assert_eq!(std::fs::read(run.join("checkpoint.json")).expect("kept"), checkpoint_before, "the checkpoint is untouched");
    assert_eq!(std::fs::read_to_string(&jsonl).expect("kept"), edited, "so are the metrics");
}

/// Review (version compatibility, 1, and the code review after it): a checkpoint of a later
/// format than the job reads (another release wrote it) was thrown away: a local retry
/// archived it and trained from iteration 1, and the next `drover run` started the run over.
/// Now the job says `checkpoint_format`, no retry touches it, and a `drover-job` that reads the
/// format resumes it where it stopped.
#[test]
fn a_checkpoint_of_a_later_format_is_kept_for_a_release_that_reads_it() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let sweep = resume_sweep(tmp.path());
    let results = tmp.path().join("r");
    let (run, at) = stop_part_way(&sweep, &results, None);
    let ck_path = run.join("checkpoint.json");
    let original = std::fs::read_to_string(&ck_path).expect("checkpoint");
    let later = original.replacen("\"format_version\":3", "\"format_version\":9", 1);
    assert_ne!(later, original, "the checkpoint names its format");
    std::fs::write(&ck_path, &later).expect("a later format");
    let out = drover_run(&sweep, &results, None).args(["--max-retries", "2"]).output().expect("rerun");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(4), "{stderr}");
    assert!(!stderr.contains("retrying"), "a retry would archive the checkpoint: {stderr}");
    let exit = read_json(&run.join("exit.json"));
    assert_eq!((exit["status"].as_str(), exit["cause"].as_str()), (Some("failed"), Some("checkpoint_format")), "{exit}");
    assert_eq!(std::fs::read_to_string(&ck_path).expect("kept in place"), later);
    let dry = drover_run(&sweep, &results, None).arg("--dry-run").output().expect("dry run");
    assert!(String::from_utf8_lossy(&dry.stdout).contains("resume"), "{}", String::from_utf8_lossy(&dry.stdout));
    // The release that reads it (here: the format put back) resumes where the run stopped.
    std::fs::write(&ck_path, &original).expect("restore");
    let out = run_ok(&mut drover_run(&sweep, &results, None));
    let (_, stderr) = text(&out);
    assert!(stderr.contains(&format!("from its checkpoint at iteration {at}")), "{stderr}");
    assert_eq!(read_json(&run.join("exit.json"))["status"], "completed");
}

/// A closed terminal (SIGHUP, the ssh session gone) stops a local sweep as Ctrl-C does: the
/// running job checkpoints and `drover run` ends as interrupted, where before SIGHUP killed it
/// outright and the job stopped only through its parent-death signal.
#[test]
fn a_hangup_stops_a_local_sweep_cleanly_with_a_checkpoint() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let sweep = resume_sweep(tmp.path());
    let results = tmp.path().join("r");
    let mut cmd = drover_run(&sweep, &results, None);
    hangup_as_default(&mut cmd);
    let driver = cmd.stderr(std::process::Stdio::piped()).spawn().expect("spawn");
    let run = first_run_with_rows(&results, 5);
    run_ok(std::process::Command::new("kill").args(["-HUP", &driver.id().to_string()]));
    let out = driver.wait_with_output().expect("wait");
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{said}");
    assert!(said.contains("drover: stopping: no new runs"), "{said}");
    assert_eq!(read_json(&run.join("exit.json"))["status"], "cancelled");
    assert!(run.join("checkpoint.json").is_file(), "the job checkpointed on its way out");
}

/// The real case: `drover run` in a terminal that goes away (the ssh session drops). Its
/// terminal is a pseudo-terminal here whose master side is closed; drover, the session leader,
/// gets SIGHUP and then EIO on every write to the terminal. It must still stop its job cleanly
/// (checkpoint) and end as interrupted, where a message to the dead terminal used to panic
/// (`eprintln!`) before the job was told.
#[test]
fn a_closed_terminal_stops_a_local_sweep_cleanly_with_a_checkpoint() {
    use std::os::fd::{FromRawFd, OwnedFd};
    use std::os::unix::process::CommandExt;
    let tmp = tempfile::tempdir().expect("tempdir");
    let sweep = resume_sweep(tmp.path());
    let results = tmp.path().join("r");
    let (mut master, mut slave) = (-1, -1);
    // SAFETY: openpty writes two descriptors into the given ints; the rest may be null.
    let opened = unsafe { libc::openpty(&mut master, &mut slave, std::ptr::null_mut(), std::ptr::null(), std::ptr::null()) };
    assert_eq!(opened, 0, "openpty: {}", std::io::Error::last_os_error());
    // SAFETY: both descriptors were just opened and are owned here alone; close-on-exec, as
    // openpty does not set it, so that drover does not inherit the master and keep it open.
    let (master, slave) = unsafe {
        libc::fcntl(master, libc::F_SETFD, libc::FD_CLOEXEC);
        libc::fcntl(slave, libc::F_SETFD, libc::FD_CLOEXEC);
        (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave))
    };
    let mut cmd = drover_run(&sweep, &results, None);
    cmd.stdin(slave.try_clone().expect("dup")).stdout(slave.try_clone().expect("dup")).stderr(slave.try_clone().expect("dup"));
    // SAFETY: setsid and ioctl are async-signal-safe; the child makes the terminal its own.
    unsafe {
        cmd.pre_exec(|| {
            libc::signal(libc::SIGHUP, libc::SIG_DFL);
            if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut driver = cmd.spawn().expect("spawn in a terminal");
    drop(slave);
    let run = first_run_with_rows(&results, 5);
    drop(master);
    let status = driver.wait().expect("wait");
    assert_eq!(status.code(), Some(130), "{status:?}");
    assert_eq!(read_json(&run.join("exit.json"))["status"], "cancelled");
    assert!(run.join("checkpoint.json").is_file(), "the job checkpointed on its way out");
}

/// Under `nohup` (SIGHUP ignored) the sweep outlives the closed terminal, as the user asked:
/// drover installs no SIGHUP handler over the ignored disposition, so the hangup changes nothing.
#[test]
fn a_sweep_under_nohup_ignores_the_hangup_and_completes() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let sweep = write_sweep(tmp.path(), &sweep("[1]").replace("total_steps = 512", "total_steps = 65536"));
    let results = tmp.path().join("r");
    let mut cmd = std::process::Command::new("nohup");
    cmd.env("CI", "true").env_remove("DROVER_PLUGIN_PATH").arg(drover_tests::artifact("drover")).arg("run").arg(&sweep).arg("--results").arg(&results);
    let driver = cmd.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().expect("spawn nohup");
    let run = first_run_with_rows(&results, 1);
    assert!(!run.join("exit.json").exists(), "the hangup must land while the run trains");
    run_ok(std::process::Command::new("kill").args(["-HUP", &driver.id().to_string()]));
    let out = driver.wait_with_output().expect("wait");
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(read_json(&run_dirs(&results)[0].join("exit.json"))["status"], "completed");
}

/// A local run stopped part-way (Ctrl-C, `drover cancel`) checkpoints, and the next `drover run`
/// resumes it from that checkpoint instead of starting over: same attempt directory, a new
/// attempt's logs, and metrics equal row by row to an uninterrupted run's.
#[test]
fn a_stopped_local_run_resumes_from_its_checkpoint_exactly() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let sweep = resume_sweep(tmp.path());
    let whole = tmp.path().join("whole");
    run_ok(&mut drover_run(&sweep, &whole, None));
    let expected = drover_tests::untimed(&drover_tests::metrics_rows(&run_dirs(&whole)[0]));
    assert_eq!(expected.len(), 400);

    let results = tmp.path().join("stopped");
    let (run, at) = stop_part_way(&sweep, &results, None);
    let id = run.file_name().and_then(|n| n.to_str()).expect("id");
    let dry = run_ok(drover_run(&sweep, &results, None).arg("--dry-run"));
    let listing = String::from_utf8_lossy(&dry.stdout);
    assert!(listing.contains(": 0 done, 1 resume, 0 redo, 0 new") && listing.contains(&format!("{id}  resume  ")), "the dry run says what the rerun will do\n{listing}");
    let again = run_ok(&mut drover_run(&sweep, &results, None));
    let said = String::from_utf8_lossy(&again.stderr);
    assert!(said.contains(&format!("resume: {}", run.file_name().and_then(|n| n.to_str()).expect("id"))) && said.contains(&format!("iteration {at}")), "{said}");
    let log = std::fs::read_to_string(run.join("attempt-2.stderr.log")).expect("a second attempt's log");
    assert!(log.contains("resumed from checkpoint"), "{log}");
    assert!(!log.contains("not bit for bit"), "{log}");
    assert!(!run.join("attempt-1").exists(), "nothing was archived: the run went on in place");
    assert_eq!(read_json(&run.join("exit.json"))["status"], "completed");
    assert!(!run.join("checkpoint.json").exists(), "the checkpoint goes once the run completes");
    assert_eq!(drover_tests::untimed(&drover_tests::metrics_rows(&run)), expected, "resumed exactly");
}

/// A run checkpointed at one CPU instruction-set level (here `portable`, through `DROVER_SIMD`)
/// resumes at that level on a CPU that runs it, even when the next attempt would pick a wider
/// one (a requeue onto another node type): its metrics equal an uninterrupted run's at that
/// level row by row.
#[test]
fn a_resumed_run_goes_on_at_its_checkpoints_cpu_level() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let sweep = resume_sweep(tmp.path());
    let whole = tmp.path().join("whole");
    run_ok(&mut drover_run(&sweep, &whole, Some("portable")));
    let expected = drover_tests::untimed(&drover_tests::metrics_rows(&run_dirs(&whole)[0]));
    assert_eq!(expected.len(), 400);

    let results = tmp.path().join("stopped");
    let (run, _) = stop_part_way(&sweep, &results, Some("portable"));
    assert_eq!(read_json(&run.join("checkpoint.json"))["compute"], "cpu/portable");
    run_ok(&mut drover_run(&sweep, &results, None));
    let log = std::fs::read_to_string(run.join("attempt-2.stderr.log")).expect("a second attempt's log");
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        assert!(log.contains("resuming at the checkpoint's CPU level") && log.contains("compute=cpu/portable"), "{log}");
    }
    assert!(!log.contains("not bit for bit"), "{log}");
    assert_eq!(drover_tests::untimed(&drover_tests::metrics_rows(&run)), expected, "resumed exactly at the checkpoint's level");
}

/// A rerun after the plugin file changed (an author's edit, rebuild, rerun) keeps the finished
/// runs, as a run id names the configuration and not the build, but says which runs another
/// build trained and what to do, rather than passing the old build's results off as the new one's.
#[test]
fn runs_trained_by_another_build_of_their_plugin_are_pointed_out_on_rerun() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let plugin = tmp.path().join("libdrover_plugin_ppo.so");
    std::fs::copy(artifact("libdrover_plugin_ppo.so"), &plugin).expect("copy plugin");
    let body = sweep("[1, 2]").replace("plugin = \"ppo\"", &format!("plugin = {:?}", plugin.display().to_string()));
    let file = write_sweep(tmp.path(), &body);
    let results = tmp.path().join("r");
    let first = run_ok(drover().arg("run").arg(&file).arg("--results").arg(&results));
    assert!(!text(&first).1.contains("another build"), "{}", text(&first).1);
    let again = run_ok(drover().arg("run").arg(&file).arg("--results").arg(&results));
    assert!(!text(&again).1.contains("another build"), "the same build: no warning\n{}", text(&again).1);

    // Trailing bytes change the hash and still load: a stand-in for a rebuild.
    std::fs::OpenOptions::new().append(true).open(&plugin).and_then(|mut f| std::io::Write::write_all(&mut f, b"rebuilt")).expect("append");
    let rebuilt = run_ok(drover().arg("run").arg(&file).arg("--results").arg(&results));
    let said = text(&rebuilt).1;
    assert!(said.contains("2 already completed, launching 0"), "{said}");
    assert!(
        said.contains(&format!("warning: 2 completed runs trained by another build of `{}`", plugin.display())) && said.contains("runs/"),
        "{said}"
    );
    let dry = run_ok(drover().arg("run").arg(&file).arg("--results").arg(&results).arg("--dry-run"));
    assert!(text(&dry).1.contains("2 completed runs trained by another build"), "--dry-run says it too: {}", text(&dry).1);
}

/// The `spec.json` drover writes for a one-seed run of [`sweep`], made `total_steps` long: a
/// spec for running `drover-job` directly.
fn spec_of_steps(tmp: &Path, total_steps: u64) -> serde_json::Value {
    let results = tmp.join("r");
    run_ok(drover().arg("run").arg(write_sweep(tmp, &sweep("[1]"))).arg("--results").arg(&results));
    let mut spec = read_json(&run_dirs(&results)[0].join("spec.json"));
    spec["run"]["total_steps"] = total_steps.into();
    spec
}

/// A fresh run directory `tmp/name` holding `spec`.
fn dir_with_spec(tmp: &Path, name: &str, spec: &serde_json::Value) -> PathBuf {
    let dir = tmp.join(name);
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::write(dir.join("spec.json"), spec.to_string()).expect("spec");
    dir
}

/// A job that spends a retry budget says which in its `exit.json` (`spent_budget`), so the
/// orchestrator decides on the job's own count: the time-limit stop past `--max-timeouts`
/// fails the run at once, and a SIGTERM stop past `--max-preemptions` fails the next start of
/// the same Slurm job (its requeue). Other endings carry no `spent_budget`. `drover-job` runs
/// directly, as the batch script starts it.
#[test]
fn a_job_that_spends_a_retry_budget_names_it_in_its_marker() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let spec = spec_of_steps(tmp.path(), 50_000_000);
    let fresh = |name: &str| dir_with_spec(tmp.path(), name, &spec);
    let job = |dir: &Path, slurm_job: &str| {
        let mut cmd = std::process::Command::new(artifact("drover-job"));
        cmd.arg("--spec").arg(dir.join("spec.json")).arg("--out").arg(dir);
        cmd.args(["--checkpoint-signal", "USR1", "--max-timeouts", "0", "--max-preemptions", "0"]).env("SLURM_JOB_ID", slurm_job);
        cmd
    };
    // Started, trained a little, then sent `signal`: returns the exit code.
    let stopped_by = |dir: &Path, signal: libc::c_int| {
        let mut child = job(dir, "500").stderr(std::process::Stdio::null()).spawn().expect("spawn drover-job");
        let t0 = std::time::Instant::now();
        while drover_tests::metrics_rows_so_far(dir).len() < 2 {
            assert!(t0.elapsed() < std::time::Duration::from_secs(120), "no metrics after 120 s");
            assert!(child.try_wait().expect("wait").is_none(), "the job ended before it was signalled");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        // SAFETY: `kill` with a live child's pid and a valid signal number has no memory effects.
        assert_eq!(unsafe { libc::kill(child.id() as libc::pid_t, signal) }, 0);
        child.wait().expect("wait").code()
    };

    let limited = fresh("limited");
    assert_eq!(stopped_by(&limited, libc::SIGUSR1), Some(1), "the first time-limit stop is past a budget of 0");
    let exit = read_json(&limited.join("exit.json"));
    assert_eq!((exit["status"].as_str(), exit["spent_budget"].as_str()), (Some("failed"), Some("max_timeouts")), "{exit}");
    assert!(limited.join("checkpoint.json").exists(), "the run keeps its checkpoint for a rerun with more time");

    let preempted = fresh("preempted");
    assert_eq!(stopped_by(&preempted, libc::SIGTERM), Some(130));
    let exit = read_json(&preempted.join("exit.json"));
    assert_eq!(exit["status"], "cancelled", "{exit}");
    assert!(exit.get("spent_budget").is_none(), "a stop spends nothing yet: {exit}");
    // Slurm requeues the same job: its next start finds the budget spent.
    let out = job(&preempted, "500").output().expect("drover-job");
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    let exit = read_json(&preempted.join("exit.json"));
    assert_eq!((exit["status"].as_str(), exit["spent_budget"].as_str()), (Some("failed"), Some("max_preemptions")), "{exit}");
}

/// `--checkpoint-every` (from `slurm.checkpoint_minutes`): the job checkpoints on its own and
/// trains on, so a kill without warning (a node failure, the OOM killer) loses only what came
/// after; started again, it resumes from there and ends with the metrics of a run never
/// stopped. `drover-job` runs directly, as the batch script starts it after a requeue.
#[test]
fn a_job_killed_without_warning_resumes_from_its_last_periodic_checkpoint() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let spec = spec_of_steps(tmp.path(), 256 * 1500);
    let fresh = |name: &str| dir_with_spec(tmp.path(), name, &spec);
    let job = |dir: &Path| {
        let mut cmd = std::process::Command::new(artifact("drover-job"));
        cmd.arg("--spec").arg(dir.join("spec.json")).arg("--out").arg(dir).args(["--checkpoint-signal", "USR1"]);
        cmd
    };
    let whole = fresh("whole");
    run_ok(&mut job(&whole));
    let expected = drover_tests::untimed(&drover_tests::metrics_rows_so_far(&whole));
    assert_eq!(expected.len(), 1500);

    let killed = fresh("killed");
    let mut child = job(&killed).args(["--checkpoint-every", "0.05"]).stderr(std::process::Stdio::null()).spawn().expect("spawn");
    let t0 = std::time::Instant::now();
    let at = loop {
        let ck = std::fs::read_to_string(killed.join("checkpoint.json")).ok().and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok());
        if let Some(at) = ck.and_then(|c| c["iteration"].as_u64()).filter(|&i| i >= 2) {
            break at;
        }
        assert!(child.try_wait().expect("wait").is_none(), "the job ended before a periodic checkpoint");
        assert!(t0.elapsed() < std::time::Duration::from_secs(120), "no periodic checkpoint after 120 s");
        std::thread::sleep(std::time::Duration::from_millis(5));
    };
    child.kill().expect("SIGKILL");
    child.wait().expect("wait");
    assert!(at < 1500, "killed part-way (checkpoint at iteration {at})");
    assert!(!killed.join("exit.json").exists(), "a SIGKILL leaves no marker");
    run_ok(&mut job(&killed));
    assert!(!killed.join("checkpoint.json").exists(), "removed once the run completed");
    let got = drover_tests::untimed(&drover_tests::metrics_rows_so_far(&killed));
    assert_eq!(got.len(), expected.len());
    for (i, (a, b)) in expected.iter().zip(&got).enumerate() {
        assert_eq!(a, b, "row {} differs after resuming from the checkpoint at iteration {at}", i + 1);
    }
}

/// Review finding (research): `--results` under a file (or `/proc/x`) printed the OS error
/// twice and exited 1. It is a setting to correct: exit code 3, naming `results_dir` and
/// `--results`, the OS error once.
#[test]
fn a_results_directory_that_cannot_be_created_is_a_setting_error() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let sweep_file = write_sweep(tmp.path(), &sweep("[1]"));
    let file = tmp.path().join("afile");
    std::fs::write(&file, b"x").expect("write");
    let out = drover_in(tmp.path()).arg("run").arg(&sweep_file).arg("--results").arg(file.join("results")).output().expect("spawn");
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    let expected = format!("key `results_dir` (from `--results`): invalid value: cannot create `{}`: Not a directory (os error 20)", file.join("results").display());
    assert!(stderr.contains(&expected), "{stderr}");
    assert_eq!(stderr.matches("os error").count(), 1, "{stderr}");
}

/// MPI review D4: a job stopped by a signal drover did not send (an administrator's `kill`, a
/// wrapper's `timeout`) was recorded cancelled, but `drover run` exited 0, so `drover run x &&
/// drover analyze x` went on with an incomplete sweep. It exits with RUNS_FAILED and says so.
#[test]
fn a_job_stopped_from_outside_makes_drover_run_exit_as_if_a_run_failed() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let sweep_file = write_sweep(tmp.path(), &sweep("[1]").replace("total_steps = 512", "total_steps = 50000000"));
    let results = tmp.path().join("results");
    let mut child = drover_in(tmp.path())
        .arg("run")
        .arg(&sweep_file)
        .arg("--results")
        .arg(&results)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn drover");
    let t0 = std::time::Instant::now();
    let job = loop {
        assert!(t0.elapsed() < std::time::Duration::from_secs(120), "no metrics after 120 s");
        assert!(child.try_wait().expect("wait").is_none(), "drover ended before its job was signalled");
        let started = results.join("runs").is_dir() && run_dirs(&results).first().is_some_and(|run| drover_tests::metrics_rows_so_far(run).len() >= 2);
        match drover_tests::children(child.id()).first() {
            Some(&pid) if started => break pid,
            _ => std::thread::sleep(std::time::Duration::from_millis(10)),
        }
    };
    // SAFETY: `kill` with a live process's pid and a valid signal number has no memory effects.
    assert_eq!(unsafe { libc::kill(job, libc::SIGTERM) }, 0);
    let out = child.wait_with_output().expect("wait");
    let (_, err) = text(&out);
    assert_eq!(out.status.code(), Some(4), "{err}");
    assert!(err.contains("1 run was stopped by a signal from outside drover: "), "{err}");
    assert_eq!(read_json(&run_dirs(&results)[0].join("exit.json"))["status"], "cancelled");
}

/// Review (failure injection, D4): a checkpoint that parses but does not fit the run (here its
/// parameters cut short) failed the resumed run, and every later `drover run` resumed from it
/// again and failed the same way. The failure names the file, its marker's `cause` says
/// `checkpoint`, and the next `drover run` starts the run over, keeping the files aside.
#[test]
fn a_run_whose_checkpoint_cannot_be_resumed_starts_over_on_the_next_run() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let sweep = resume_sweep(tmp.path());
    let results = tmp.path().join("r");
    let (run, _) = stop_part_way(&sweep, &results, None);
    let id = run.file_name().and_then(|n| n.to_str()).expect("id").to_string();
    let ck_path = run.join("checkpoint.json");
    let mut ck = read_json(&ck_path);
    let params = ck["engine"]["params"].as_array().expect("params")[..10].to_vec();
    ck["engine"]["params"] = params.into();
    std::fs::write(&ck_path, ck.to_string()).expect("write");

    let out = drover_run(&sweep, &results, None).output().expect("run");
    assert_eq!(out.status.code(), Some(4), "{}", String::from_utf8_lossy(&out.stderr));
    let exit = read_json(&run.join("exit.json"));
    assert_eq!((exit["status"].as_str(), exit["cause"].as_str()), (Some("failed"), Some("checkpoint")), "{exit}");
    let refused = format!("cannot resume from checkpoint `{}`: ", ck_path.display());
    assert!(exit["reason"].as_str().is_some_and(|r| r.starts_with(&refused)), "{exit}");
    let status = String::from_utf8_lossy(&run_ok(drover().arg("status").arg(&results)).stdout).into_owned();
    assert!(status.contains("failed") && status.contains("the next `drover run` starts it over"), "{status}");
    let dry = run_ok(drover_run(&sweep, &results, None).arg("--dry-run"));
    assert!(String::from_utf8_lossy(&dry.stdout).contains(": 0 done, 0 resume, 1 redo, 0 new"), "{}", String::from_utf8_lossy(&dry.stdout));

    let again = run_ok(&mut drover_run(&sweep, &results, None));
    let said = String::from_utf8_lossy(&again.stderr);
    assert!(said.contains(&format!("  redo: {id}: its checkpoint could not be resumed: {refused}")), "{said}");
    assert!(!said.contains("resume: "), "{said}");
    assert_eq!(read_json(&run.join("exit.json"))["status"], "completed");
    let archived = std::fs::read_dir(&run).expect("run dir").flatten().map(|e| e.path()).filter(|p| p.is_dir()).collect::<Vec<_>>();
    assert!(archived.iter().any(|d| d.join("checkpoint.json").is_file()), "the refused checkpoint is kept aside: {archived:?}");
}

/// Review (failure injection, D5 and D6): a completed run whose `spec.json` was damaged was
/// trained again without a word, and `drover status` called it, and a run with a damaged
/// `summary.json`, `done` while `drover run` redid them. Status now judges as the rerun does,
/// naming the file; the rerun keeps the first run (its results check out) and writes its spec
/// again, and redoes the second, each with a line saying why.
#[test]
fn damaged_runs_are_judged_alike_by_status_dry_run_and_run() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let sweep_file = write_sweep(tmp.path(), &sweep("[1, 2]"));
    let results = tmp.path().join("results");
    let run = || {
        let mut cmd = drover_in(tmp.path());
        cmd.arg("run").arg(&sweep_file).arg("--results").arg(&results);
        cmd
    };
    run_ok(&mut run());
    let dirs = run_dirs(&results);
    let ids: Vec<String> = dirs.iter().map(|d| d.file_name().unwrap().to_string_lossy().into_owned()).collect();
    std::fs::write(dirs[0].join("spec.json"), "x").expect("write");
    std::fs::write(dirs[1].join("summary.json"), "garbage").expect("write");

    let status = String::from_utf8_lossy(&run_ok(drover().arg("status").arg(&results)).stdout).into_owned();
    let line = |id: &str| status.lines().find(|l| l.starts_with(id)).unwrap_or_else(|| panic!("{id} not listed:\n{status}")).to_string();
    let kept = line(&ids[0]);
    assert!(kept.contains(" done ") && kept.contains(&format!("unreadable `{}`", dirs[0].join("spec.json").display())), "{kept}");
    let redone = line(&ids[1]);
    assert!(redone.contains(" unfinished ") && redone.contains(&format!("damaged: marked completed but not trusted: bad `{}`", dirs[1].join("summary.json").display())), "{redone}");
    let dry = run_ok(run().arg("--dry-run"));
    assert!(String::from_utf8_lossy(&dry.stdout).contains(": 1 done, 0 resume, 1 redo, 0 new"), "{}", String::from_utf8_lossy(&dry.stdout));

    let out = run_ok(&mut run());
    let (_, said) = text(&out);
    assert!(said.contains("2 runs, 1 already completed, launching 1"), "{said}");
    assert!(said.contains(&format!("  repair: {}: kept as completed", ids[0])) && said.contains("spec.json"), "{said}");
    assert!(said.contains(&format!("  redo: {}: marked completed but not trusted: bad `", ids[1])), "{said}");
    assert!(!dirs[0].join("attempt-1").exists(), "the kept run was not moved aside");
    assert_eq!(read_json(&dirs[0].join("spec.json"))["run_id"].as_str(), Some(ids[0].as_str()));
    let status = String::from_utf8_lossy(&run_ok(drover().arg("status").arg(&results)).stdout).into_owned();
    assert!(status.contains("2 done") || status.matches(" done ").count() == 2, "{status}");
}

/// Review F4: a sweep edited between two `drover run`s dropped its completed runs from
/// `sweep.json`, `status` and `analyze` without a word. `--dry-run` and `run` now count them and
/// say they are kept; a run of the same training written another way (here ppo's default
/// `gamma = 0.99` spelled out, review F2) is pointed out; `drover status` counts them.
#[test]
fn runs_left_out_of_an_edited_sweep_are_counted_by_run_dry_run_and_status() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let sweep_file = write_sweep(tmp.path(), &sweep("[1, 2]"));
    let results = tmp.path().join("results");
    let run = |sets: &[&str]| {
        let mut cmd = drover_in(tmp.path());
        cmd.arg("run").arg(&sweep_file).arg("--results").arg(&results).args(["-j", "2"]);
        for set in sets {
            cmd.args(["--set", set]);
        }
        cmd
    };
    run_ok(&mut run(&[]));
    let said = text(&run_ok(run(&["sweep.seeds=[1]"]).arg("--dry-run"))).1;
    assert!(
        said.contains(&format!("drover: note: 1 run directory in `{}` is not part of this sweep (1 completed; labels `base`): runs of an earlier version of it; they are kept", results.join("runs").display())),
        "{said}"
    );
    assert!(!said.contains("same training"), "{said}");
    let said = text(&run_ok(run(&["params.gamma=0.99"]).arg("--dry-run"))).1;
    assert!(said.contains("drover: note: 2 run directories in"), "{said}");
    assert!(said.contains("drover: warning: 2 completed runs of them are the same training as runs of this sweep under other ids"), "{said}");
    run_ok(&mut run(&["sweep.seeds=[1]"]));
    let status = text(&run_ok(drover_in(tmp.path()).arg("status").arg(&results))).0;
    assert!(status.contains("1 other run directory in"), "{status}");
}

/// Review F10: a plugin's refusal named `params.<key>` whatever gave the value, and for a base
/// value refused by one case's plugin suggested another key of that plugin. It now names the case,
/// the grid axis and its `--set`, or says that `[params]` reaches every case.
#[test]
fn plugin_refusals_name_the_case_axis_or_override_that_gave_the_value() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("repo root");
    let refused = |config: &str, set: &str| {
        let out = drover_in(tmp.path())
            .arg("run")
            .arg(repo.join(config))
            .args(["--dry-run", "--set", set, "--results"])
            .arg(tmp.path().join("r"))
            .output()
            .expect("drover");
        assert_eq!(out.status.code(), Some(3), "{set}: {}", text(&out).1);
        text(&out).1
    };
    let base = refused("configs/entropy-mechanism.toml", "params.clip_cov_ratio=0.02");
    assert!(base.contains("key `params.clip_cov_ratio` (from `--set params.clip_cov_ratio=0.02`): rejected by plugin `grpo`"), "{base}");
    assert!(base.contains("unknown parameter; `[params]` gives it to every run, and `sweep.cases[0]` runs plugin `grpo`, which has no `clip_cov_ratio` (plugin `clip_cov` takes it): set it in the cases that use it"), "{base}");
    assert!(!base.contains("did you mean"), "{base}");
    let case = refused("configs/entropy-mechanism.toml", "sweep.cases=[{\"run.plugin\"=\"grpo\"},{\"run.plugin\"=\"grpo\",\"params.loss_agg_mode\"=\"bogus\"}]");
    assert!(case.contains("key `sweep.cases[1].params.loss_agg_mode` (from `--set sweep.cases="), "{case}");
    let axis = refused("configs/cartpole-ppo.toml", "sweep.grid.params.ent_cof=[0.1]");
    assert!(axis.contains("key `sweep.grid.params.ent_cof` (from `--set sweep.grid.params.ent_cof=[0.1]`): rejected by plugin `ppo`"), "{axis}");
    assert!(axis.contains("did you mean `ent_coef`?"), "{axis}");
    let file = write_sweep(tmp.path(), "name = \"c\"\n[run]\nenv = \"CartPole-v1\"\nplugin = \"ppo\"\n[[sweep.cases]]\n\"run.lr\" = 0.1\n");
    let out = drover_in(tmp.path()).arg("run").arg(&file).args(["--dry-run", "--set", "sweep.grid.run.lr=[1e-2]"]).output().expect("drover");
    assert!(text(&out).1.contains("key `sweep.cases[0].run.lr` (from `--set sweep.grid.run.lr=[1e-2]`): conflict: `run.lr` is also a grid axis"), "{}", text(&out).1);
}
