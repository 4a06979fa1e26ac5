//! End-to-end tests of the `drover` binary with a fake `drover-job` (a shell script via DROVER_JOB_BIN).

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The fake job: answers `plugin info` with a one-parameter (`clip`) plugin report and accepts
/// every params object of `--try-params` (the orchestrator validates params through it before
/// launching), logs its run id, marks itself started, sleeps
/// or fails on the seeds named by FAKE_SLEEP_SEED / FAKE_FAIL_SEED, and otherwise writes the
/// files a completed marker vouches for (a summary and a minimal Parquet frame, which is all
/// `drover run` checks) and a completed exit.json (tmp + rename).
const FAKE_JOB: &str = r#"#!/bin/sh
if [ "$1" = "plugin" ]; then
  instances=
  if [ "$4" = "--try-params" ]; then
    # The params objects here are flat, so each `{` on stdin is one of them: accept them all.
    n=$(tr -cd '{' | wc -c)
    instances=',"instances":['
    i=0
    while [ "$i" -lt "$n" ]; do
      [ "$i" -gt 0 ] && instances="$instances,"
      instances="$instances"'{"accepted":true}'
      i=$((i + 1))
    done
    instances="$instances]"
  fi
  printf '{"format_version":1,"plugin":{"path":"%s","name":"fake","version":"0.1.0","description":"","interface_version":"1.1","host_interface_version":"1.1","sha256":"","params":[{"name":"clip","kind":"float","default":0.2,"doc":"","min":0,"max":null}]}%s}\n' "$3" "$instances"
  exit 0
fi
while [ $# -gt 0 ]; do
  case "$1" in --spec) spec="$2"; shift 2;; --out) out="$2"; shift 2;; *) shift;; esac
done
id=$(basename "$out")
seed=$(grep -o '"seed": *[0-9]*' "$spec" | head -n 1 | grep -o '[0-9]*$')
echo "$id" >> "$FAKE_LOG"
echo "started" > "$out/metrics.jsonl"
echo "fake job $id seed $seed"
if [ "$seed" = "${FAKE_SLEEP_SEED:-none}" ]; then sleep 60; fi
if [ "$seed" = "${FAKE_FAIL_SEED:-none}" ]; then echo "boom: seed $seed" >&2; exit 3; fi
printf '{"format_version":1,"run_id":"%s"}' "$id" > "$out/summary.json"
printf 'PAR1\000\000\000\000\004\000\000\000PAR1' > "$out/metrics.parquet"
printf '{"format_version":1,"run_id":"%s","status":"completed","reason":null,"finished_at":"0"}' "$id" > "$out/exit.json.tmp"
mv "$out/exit.json.tmp" "$out/exit.json"
"#;

struct Fixture {
    _tmp: tempfile::TempDir,
    root: PathBuf,
}

impl Fixture {
    fn new(seeds: &str) -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_path_buf();
        let job = root.join("fake-drover-job.sh");
        std::fs::write(&job, FAKE_JOB).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&job, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::create_dir(root.join("plugins")).unwrap();
        std::fs::write(root.join("plugins/libdrover_plugin_fake.so"), b"").unwrap();
        let sweep = format!(
            "name = \"it\"\nplugin_path = [\"{}\"]\n[run]\nenv = \"CartPole-v1\"\nplugin = \"fake\"\n[sweep]\nseeds = {seeds}\n",
            root.join("plugins").display()
        );
        std::fs::write(root.join("sweep.toml"), sweep).unwrap();
        Fixture { _tmp: tmp, root }
    }

    fn results(&self) -> PathBuf {
        self.root.join("results")
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_drover"));
        cmd.arg("run")
            .arg(self.root.join("sweep.toml"))
            .arg("--results")
            .arg(self.results())
            .args(args)
            .env("DROVER_JOB_BIN", self.root.join("fake-drover-job.sh"))
            .env("FAKE_LOG", self.root.join("launches.log"))
            .env_remove("FAKE_SLEEP_SEED")
            .env_remove("FAKE_FAIL_SEED")
            .stdin(Stdio::null());
        cmd
    }

    fn launches(&self) -> usize {
        std::fs::read_to_string(self.root.join("launches.log")).map(|s| s.lines().count()).unwrap_or(0)
    }

    /// Run dirs whose exit.json says completed.
    fn completed(&self) -> Vec<String> {
        let mut done: Vec<String> = run_dirs(&self.results())
            .into_iter()
            .filter(|d| std::fs::read_to_string(d.join("exit.json")).is_ok_and(|s| s.contains("\"completed\"")))
            .map(|d| d.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        done.sort();
        done
    }
}

fn run_dirs(results: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(results.join("runs")).map(|rd| rd.map(|e| e.unwrap().path()).collect()).unwrap_or_default()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn run_writes_the_layout_and_a_rerun_skips_completed_runs() {
    let fx = Fixture::new("[1, 2, 3]");
    let out = fx.command(&["-j", "2"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(fx.launches(), 3);
    assert_eq!(fx.completed().len(), 3);
    let results = fx.results();
    assert!(results.join("sweep.toml").is_file());
    let manifest: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(results.join("sweep.json")).unwrap()).unwrap();
    assert_eq!(manifest["format_version"], 1);
    assert_eq!(manifest["runs"].as_array().unwrap().len(), 3);
    let dir = &run_dirs(&results)[0];
    let spec: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("spec.json")).unwrap()).unwrap();
    assert_eq!(spec["run_id"].as_str().unwrap(), dir.file_name().unwrap().to_str().unwrap());
    assert!(spec["plugin_path"].as_str().unwrap().ends_with("plugins/libdrover_plugin_fake.so"));
    assert!(dir.join("attempt-1.stdout.log").is_file() && dir.join("attempt-1.stderr.log").is_file());

    let again = fx.command(&[]).output().unwrap();
    assert_eq!(again.status.code(), Some(0), "{}", stderr(&again));
    assert_eq!(fx.launches(), 3, "a rerun must not relaunch completed runs");
    assert!(stderr(&again).contains("3 already completed, launching 0"), "{}", stderr(&again));
}

#[test]
fn a_failing_run_does_not_stop_the_others_and_is_rerun_later() {
    let fx = Fixture::new("[1, 2, 3]");
    let out = fx.command(&["-j", "1"]).env("FAKE_FAIL_SEED", "2").output().unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(4), "RUNS_FAILED expected: {err}");
    assert_eq!(fx.launches(), 3, "the runs after the failing one still ran");
    assert_eq!(fx.completed().len(), 2);
    assert!(err.contains("failed: exit code 3 without writing exit.json; its stderr ends: boom: seed 2"), "{err}");
    assert!(err.contains("attempt-1.stderr.log"), "{err}");

    // The rerun launches only the failed run; its first attempt's files are kept aside.
    let again = fx.command(&[]).output().unwrap();
    assert_eq!(again.status.code(), Some(0), "{}", stderr(&again));
    assert_eq!(fx.launches(), 4);
    assert_eq!(fx.completed().len(), 3);
    let redone = run_dirs(&fx.results())
        .into_iter()
        .find(|d| d.join("attempt-2.stdout.log").exists())
        .expect("the failed run has a second attempt");
    assert!(redone.join("attempt-1/metrics.jsonl").is_file(), "partial files moved to attempt-1/");
    assert!(std::fs::read_to_string(redone.join("attempt-1.stderr.log")).unwrap().contains("boom"));
}

#[test]
fn ctrl_c_keeps_finished_runs_and_exits_interrupted() {
    let fx = Fixture::new("[1, 2, 3]");
    let child = fx
        .command(&["-j", "3"])
        .env("FAKE_SLEEP_SEED", "3")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the two quick runs finished and the slow one started.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !(fx.completed().len() == 2 && fx.launches() == 3) {
        assert!(Instant::now() < deadline, "runs did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let sent = Instant::now();
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGINT) }, 0);
    let out = child.wait_with_output().unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(130), "INTERRUPTED expected: {err}");
    assert!(sent.elapsed() < Duration::from_secs(8), "SIGTERM should stop the job well before the grace period");
    assert!(err.contains("2 completed") && err.contains("1 cancelled"), "{err}");
    assert_eq!(fx.completed().len(), 2, "finished runs are kept");

    // Continue: only the interrupted run is launched again.
    let again = fx.command(&[]).output().unwrap();
    assert_eq!(again.status.code(), Some(0), "{}", stderr(&again));
    assert_eq!(fx.launches(), 4);
    assert_eq!(fx.completed().len(), 3);
}

#[test]
fn config_errors_exit_3_and_dry_run_lists_runs() {
    let fx = Fixture::new("[1, 2]");
    let out = fx.command(&["--set", "sweep.seeds=[]"]).output().unwrap();
    assert_eq!(out.status.code(), Some(3));
    let err = stderr(&out);
    assert!(err.contains("sweep.toml`: key `sweep.seeds` (from `--set sweep.seeds=[]`): axis is empty"), "{err}");
    assert!(!fx.results().exists(), "nothing is written for a bad config");

    let out = fx.command(&["--set", "run.plugin=nope"]).output().unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert!(stderr(&out).contains("key `run.plugin` (from `--set run.plugin=nope`): plugin `nope` not found; searched"), "{}", stderr(&out));

    let out = fx.command(&["--dry-run", "--set", "sweep.grid.params.clip=[0.1,0.2]"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let listing = String::from_utf8_lossy(&out.stdout);
    assert_eq!(listing.lines().filter(|l| l.contains("params.clip=")).count(), 4, "{listing}");
    assert!(listing.lines().skip(1).all(|l| l.contains(" new ")), "{listing}");
    assert_eq!(fx.launches(), 0);
}

/// `sweep.json` records the overrides applied over the file (`sweep.toml` is the file as
/// written), so the results say what produced them; a run with none records none.
#[test]
fn the_manifest_records_the_overrides_of_the_run() {
    let fx = Fixture::new("[1]");
    let out = fx.command(&["--set", "run.lr=0.001", "--set", "params.clip=0.25"]).env("DROVER_RUN__NUM_ENVS", "16").output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let manifest: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(fx.results().join("sweep.json")).unwrap()).unwrap();
    assert_eq!(manifest["overrides"], serde_json::json!(["DROVER_RUN__NUM_ENVS=16", "--set run.lr=0.001", "--set params.clip=0.25"]));
    let out = fx.command(&["--set", "run.lr=0.001"]).env_remove("DROVER_RUN__NUM_ENVS").output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let out = fx.command(&[]).env_remove("DROVER_RUN__NUM_ENVS").output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let manifest: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(fx.results().join("sweep.json")).unwrap()).unwrap();
    assert!(manifest.get("overrides").is_none(), "no overrides, no key: {manifest}");
}

/// `drover run --dry-run --backend slurm` prints the batch scripts with `slurm.mpi` in the
/// multi-rank launcher (none with "default"), and warns when this machine's `srun --mpi=list`
/// does not list the type. Stand-ins for `srun` and `scontrol` come first on PATH, so no real
/// Slurm is asked anything.
#[test]
fn a_slurm_dry_run_shows_the_mpi_type_and_warns_when_srun_lacks_it() {
    let fx = Fixture::new("[1]");
    let bin = fx.root.join("slurm-bin");
    std::fs::create_dir(&bin).unwrap();
    for (name, body) in [
        ("srun", "[ \"$1\" = --mpi=list ] || exit 2\nprintf 'MPI plugin types are...\\n\\tnone\\n\\tpmi2\\n'"),
        ("scontrol", "echo 'MaxArraySize = 1001'"),
        ("squeue", "exit 1"),
        ("sbatch", "exit 1"),
    ] {
        let path = bin.join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        // A child forked by another test while the file was open for writing keeps it busy
        // (ETXTBSY) until that child execs: wait until it runs.
        let ready = (0..400).any(|_| match Command::new(&path).arg("--mpi=list").stdout(Stdio::null()).stderr(Stdio::null()).status() {
            Err(e) if e.kind() == std::io::ErrorKind::ExecutableFileBusy => {
                std::thread::sleep(Duration::from_millis(5));
                false
            }
            _ => true,
        });
        assert!(ready, "{} stayed busy", path.display());
    }
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    let dry = |sets: &[&str]| {
        let mut args = vec!["--dry-run", "--backend", "slurm", "--set", "run.ranks=2"];
        for set in sets {
            args.extend(["--set", set]);
        }
        let out = fx.command(&args).env("PATH", &path).output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        (String::from_utf8_lossy(&out.stdout).into_owned(), stderr(&out))
    };
    let (script, err) = dry(&["slurm.mpi=pmi2"]);
    assert!(script.contains("launcher=(srun --mpi=pmi2 --kill-on-bad-exit=1 "), "{script}");
    assert!(!err.contains("slurm.mpi"), "pmi2 is listed: {err}");
    let (script, err) = dry(&[]);
    assert!(script.contains("launcher=(srun --mpi=pmix --kill-on-bad-exit=1 "), "{script}");
    let warning = err.lines().find(|l| l.contains("`slurm.mpi`")).unwrap_or_else(|| panic!("warned: {err}"));
    assert!(warning.starts_with("drover: warning: 1 run(s) have run.ranks > 1 and `slurm.mpi` = \"pmix\" in `"), "{warning}");
    assert!(warning.contains("sweep.toml`") && warning.contains("offers none, pmi2:"), "{warning}");
    let (script, err) = dry(&["slurm.mpi=default"]);
    assert!(script.contains("launcher=(srun --kill-on-bad-exit=1 ") && !script.contains("--mpi"), "{script}");
    assert!(!err.contains("slurm.mpi"), "{err}");
    assert!(!fx.results().join("slurm").exists(), "a dry run writes nothing");
}

/// Review finding (CLI contract 1): `drover run` panicked (exit code 101) on the first line it
/// could not write to stderr, a full one (`2>/dev/full`) or a pipe closed by its reader
/// (`2>&1 >/dev/null | head -1`), so the sweep stopped with its runs not started; tracing's log
/// lines (`RUST_LOG=info`) did the same through the subscriber's own error report. A line that
/// cannot be written is dropped: the sweep runs to its end and exits as it would have.
#[test]
fn a_full_or_closed_stderr_does_not_stop_the_sweep() {
    for (closed_pipe, rust_log) in [(false, ""), (false, "info"), (true, "info")] {
        let fx = Fixture::new("[1, 2, 3]");
        let mut cmd = fx.command(&["-j", "1"]);
        cmd.env("RUST_LOG", rust_log).stdout(Stdio::null());
        let status = if closed_pipe {
            // Closed before drover starts: every line it writes fails with EPIPE.
            let (reader, writer) = std::io::pipe().unwrap();
            drop(reader);
            cmd.stderr(writer).status().unwrap()
        } else {
            let full = std::fs::OpenOptions::new().write(true).open("/dev/full").unwrap();
            cmd.stderr(full).status().unwrap()
        };
        let case = format!("closed pipe {closed_pipe}, RUST_LOG={rust_log:?}");
        assert_eq!(status.code(), Some(0), "{case}");
        assert_eq!((fx.launches(), fx.completed().len()), (3, 3), "{case}");
    }
}

/// Review finding (CLI contract 3): `drover status DIR --json | true` said "error: Broken pipe"
/// and exited 1: `serde_json::to_writer` wrapped the closed pipe's error, which main's
/// broken-pipe rule did not see through. Both outputs end quietly, exit code 0.
#[test]
fn status_to_a_closed_pipe_ends_quietly() {
    let fx = Fixture::new("[1, 2]");
    let out = fx.command(&[]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    for json in [true, false] {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let mut status = Command::new(env!("CARGO_BIN_EXE_drover"));
        status.arg("status").arg(fx.results()).stdout(writer);
        if json {
            status.arg("--json");
        }
        let out = status.output().unwrap();
        assert_eq!(out.status.code(), Some(0), "--json {json}: {}", stderr(&out));
        assert_eq!(stderr(&out), "", "--json {json}");
    }
}

/// Review finding (CLI contract 4): while `drover run` waited for a job a killed `drover run`
/// left running (`DROVER_BUSY_WAIT_S`), Ctrl-C was not looked at: the wait ran to its end and
/// the run exited 4, or 0. The wait now stops within a moment, exit code 130, nothing launched;
/// and its message reads without the run of spaces a string continuation left in it.
#[test]
fn ctrl_c_stops_the_wait_for_a_run_left_running_elsewhere() {
    use std::os::fd::AsRawFd;
    let fx = Fixture::new("[1]");
    let out = fx.command(&[]).env("FAKE_FAIL_SEED", "1").output().unwrap();
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    // The failed run's lock held as an orphaned job would hold it.
    let dir = run_dirs(&fx.results()).pop().unwrap();
    let lock = std::fs::OpenOptions::new().read(true).write(true).open(dir.join(".job.lock")).unwrap();
    // SAFETY: flock on a descriptor this test owns.
    assert_eq!(unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) }, 0);
    let log = fx.root.join("stderr.log");
    let child = fx.command(&[]).env("DROVER_BUSY_WAIT_S", "60").stderr(std::fs::File::create(&log).unwrap()).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !std::fs::read_to_string(&log).unwrap().contains("Ctrl-C stops the wait") {
        assert!(Instant::now() < deadline, "no wait: {}", std::fs::read_to_string(&log).unwrap());
        std::thread::sleep(Duration::from_millis(50));
    }
    let sent = Instant::now();
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGINT) }, 0);
    let out = child.wait_with_output().unwrap();
    let err = std::fs::read_to_string(&log).unwrap();
    assert_eq!(out.status.code(), Some(130), "{err}");
    assert!(sent.elapsed() < Duration::from_secs(5), "the wait went on: {err}");
    assert!(err.contains("drover: 1 unfinished run is still being written by a job this command did not start (left running by"), "{err}");
    assert!(err.contains("drover: interrupted while waiting for 1 run still running elsewhere; nothing was launched"), "{err}");
    assert_eq!(fx.launches(), 1, "nothing launched");
}

/// Review finding (CLI contract 10): `DROVER_BUSY_WAIT_S=5m` was read as the default 30 s
/// without a word; it is refused before anything is written, naming the variable.
#[test]
fn a_busy_wait_that_is_not_a_number_is_refused() {
    let fx = Fixture::new("[1]");
    let out = fx.command(&[]).env("DROVER_BUSY_WAIT_S", "5m").output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("environment variable `DROVER_BUSY_WAIT_S` = `5m`: expected a whole number of seconds"), "{}", stderr(&out));
    assert!(!fx.results().exists() && fx.launches() == 0);
}

/// Review finding (CLI contract 5): `--dry-run` beside a running `drover run` printed `redo` or
/// `new` for the runs its jobs were training, and nothing said the directory was taken. It now
/// names the `drover run` holding it and lists those runs as `live`.
#[test]
fn a_dry_run_beside_a_running_sweep_names_it_and_lists_its_runs_live() {
    let fx = Fixture::new("[1, 2]");
    let child = fx.command(&["-j", "1"]).env("FAKE_SLEEP_SEED", "1").stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while fx.launches() < 1 {
        assert!(Instant::now() < deadline, "the run did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let dry = fx.command(&["--dry-run"]).output().unwrap();
    let pid = child.id();
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGINT) }, 0);
    let stopped = child.wait_with_output().unwrap();
    assert_eq!(stopped.status.code(), Some(130));
    let (listing, err) = (String::from_utf8_lossy(&dry.stdout), stderr(&dry));
    assert_eq!(dry.status.code(), Some(0), "{err}");
    let note = format!("drover: note: `{}` is in use by another `drover run` (pid {pid}, host ", fx.results().display());
    assert!(err.contains(&note) && err.contains("running this sweep now would be refused until it ends"), "{err}");
    assert!(listing.lines().next().is_some_and(|l| l.contains(": 0 done, 1 live, 0 resume, 0 redo, 1 new")), "{listing}");
    let words: Vec<&str> = listing.lines().skip(1).filter_map(|l| l.split_whitespace().nth(1)).collect();
    assert_eq!(words, ["live", "new"], "{listing}");
}

/// Review finding (CLI contract 7): a results directory held by another `drover run` exited
/// with the generic 1; it has its own code, 75 (EX_TEMPFAIL: try again later), nothing written.
#[test]
fn a_results_directory_in_use_exits_busy() {
    use std::os::fd::AsRawFd;
    let fx = Fixture::new("[1]");
    std::fs::create_dir_all(fx.results()).unwrap();
    let lock = std::fs::File::create(fx.results().join(".drover.lock")).unwrap();
    // SAFETY: flock on a descriptor this test owns.
    assert_eq!(unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) }, 0);
    let out = fx.command(&[]).output().unwrap();
    assert_eq!(out.status.code(), Some(75), "{}", stderr(&out));
    assert!(stderr(&out).contains("is in use by another `drover run`"), "{}", stderr(&out));
    assert!(!fx.results().join("sweep.json").exists() && fx.launches() == 0);
}

/// Review finding (CLI contract 10): `--no-wait` with the local backend was ignored without a
/// word (`--max-retries` on Slurm is warned about); it is warned about, and the sweep runs.
#[test]
fn no_wait_on_the_local_backend_is_warned_about() {
    let fx = Fixture::new("[1]");
    let out = fx.command(&["--no-wait"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).contains("drover: warning: --no-wait is the Slurm backend's; a local sweep's jobs are children of this `drover run`, which waits for them"), "{}", stderr(&out));
    assert_eq!(fx.completed().len(), 1);
    let out = fx.command(&[]).output().unwrap();
    assert!(!stderr(&out).contains("--no-wait"), "{}", stderr(&out));
}
