//! Issue 9: the Slurm backend against the real single-node Slurm that `scripts/slurm-up.sh`
//! installs and starts (the tests call it; it is fast when Slurm is already up). Covers the
//! shipped 12-run sweep, status after Slurm forgets jobs, retries, quoting of hostile values,
//! sbatch refusals, splitting at `MaxArraySize`, re-attaching after `drover run` is killed,
//! cancellation, exact resume after a time-limit signal and after `scontrol requeue`, and one
//! throttle for the sweep across its arrays (reruns, overrides, dependencies, and a waiting
//! array lifted as soon as a slot is free).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use drover_tests::{artifact, drover, metrics_rows_so_far as metrics, read_json, run_dirs, run_ok};
use serde_json::Value;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("repo root").to_path_buf()
}

/// Starts the test cluster once per test binary; a test fails (never skips) without it.
fn slurm_up() {
    static UP: OnceLock<Result<(), String>> = OnceLock::new();
    let up = UP.get_or_init(|| {
        let out = Command::new(repo().join("scripts/slurm-up.sh")).output().map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
        }
    });
    if let Err(e) = up {
        panic!("scripts/slurm-up.sh failed; the Slurm tests need the local cluster it starts:\n{e}");
    }
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

fn status_json(results: &Path) -> Value {
    let out = run_ok(drover().arg("status").arg(results).arg("--json"));
    serde_json::from_slice(&out.stdout).expect("status --json is JSON")
}

fn states(status: &Value) -> Vec<String> {
    status["runs"].as_array().expect("runs").iter().map(|r| r["state"].as_str().expect("state").to_string()).collect()
}

fn ledger(results: &Path) -> Vec<Value> {
    std::fs::read_to_string(results.join("slurm/submissions.jsonl"))
        .expect("ledger")
        .lines()
        .map(|l| serde_json::from_str(l).expect("ledger line"))
        .collect()
}

fn ledger_kinds(results: &Path, kind: &str) -> Vec<Value> {
    ledger(results).into_iter().filter(|l| l["kind"] == kind).collect()
}

/// Job ids of the sweep's accepted submissions, in submission order: one per submission,
/// though `drover status` may record a submission a `drover run` records too.
fn submitted_jobs(results: &Path) -> Vec<String> {
    let mut by_submission = std::collections::BTreeMap::new();
    for l in ledger_kinds(results, "submitted") {
        let n = l["submission"].as_u64().expect("submission number");
        by_submission.entry(n).or_insert_with(|| l["job_id"].as_str().expect("job id").to_string());
    }
    by_submission.into_values().collect()
}

fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !done() {
        assert!(t0.elapsed() < timeout, "timed out after {timeout:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(250));
    }
}


/// Writes a stand-in program (a shell script) and makes it executable.
fn write_executable(path: &Path, body: &str) {
    std::fs::write(path, body).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("chmod");
}

/// A folder `dir/bin` first on PATH holding a stand-in `name` (a shell script written by
/// `body`, which gets the real program's path): returns the PATH to run drover with.
fn stand_in(dir: &Path, name: &str, body: impl FnOnce(&str) -> String) -> String {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).expect("mkdir");
    let real = String::from_utf8_lossy(&Command::new("sh").args(["-c", &format!("command -v {name}")]).output().expect("sh").stdout).trim().to_string();
    write_executable(&bin.join(name), &body(&real));
    format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default())
}

/// A one-run-per-seed sweep of a few seconds' training named `name` in `dir`, polled every
/// 0.5 s, with `slurm_extra` lines added to its `[slurm]` table.
fn short_sweep(dir: &Path, name: &str, seeds: &str, slurm_extra: &str) -> PathBuf {
    drover_tests::write_sweep(
        dir,
        &format!(
            "name = \"{name}\"\nbackend = \"slurm\"\n[run]\nenv = \"CartPole-v1\"\nplugin = \"ppo\"\nnum_envs = 4\nnum_steps = 64\ntotal_steps = 2048\n\
             [sweep]\nseeds = {seeds}\n[slurm]\npoll_seconds = 0.5\n{slurm_extra}"
        ),
    )
}

/// `cmd` (a `drover run`) started with its stderr in the file `err`, killed if the test ends
/// first.
fn spawn_logged(cmd: &mut Command, err: &Path) -> KillOnDrop {
    KillOnDrop(cmd.stderr(std::fs::File::create(err).expect("log")).spawn().expect("drover run"))
}

fn squeue_names(name: &str) -> String {
    let out = Command::new("squeue").args(["--noheader", "--states=all", "--format=%i %T"]).arg(format!("--name={name}")).output().expect("squeue");
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// The shipped sweep completes as one job array; `drover status` stays right once Slurm has
/// forgotten the jobs (MinJobAge), and a second `drover run` submits nothing.
#[test]
fn shipped_slurm_sweep_completes_and_status_outlives_slurms_memory() {
    slurm_up();
    let tmp = tempfile::tempdir().expect("tempdir");
    let results = tmp.path().join("results");
    let out = run_ok(drover().arg("run").arg(repo().join("configs/cartpole-ppo-slurm.toml")).arg("--results").arg(&results));
    assert!(text(&out).contains("12 submitted in"), "{}", text(&out));
    let submissions = ledger_kinds(&results, "intent");
    assert_eq!(submissions.len(), 1, "one sweep is one job array");
    assert_eq!(submissions[0]["runs"].as_array().map(Vec::len), Some(12));
    let script = std::fs::read_to_string(results.join("slurm/array-0.sbatch")).expect("script saved beside the results");
    assert!(script.contains("#SBATCH --array=0-11%4\n"), "{script}");
    assert!(script.contains("#SBATCH --signal=B:USR1@60\n"), "{script}");
    let provenance = &submissions[0]["provenance"];
    assert_eq!(provenance["plugins"]["ppo"][1].as_str().map(str::len), Some(64), "plugin SHA-256: {provenance}");

    let status = status_json(&results);
    assert_eq!(status["format_version"], 1);
    assert_eq!(states(&status), vec!["done"; 12]);
    for run in run_dirs(&results) {
        assert_eq!(read_json(&run.join("exit.json"))["status"], "completed");
        let attempt: Value = serde_json::from_str(std::fs::read_to_string(run.join("attempts.jsonl")).expect("attempts").lines().next().expect("line")).expect("json");
        assert!(attempt["slurm_job_id"].as_str().is_some_and(|s| !s.is_empty()), "{attempt}");
        assert!(attempt["host"].as_str().is_some_and(|s| !s.is_empty()), "{attempt}");
    }

    let again = run_ok(drover().arg("run").arg(repo().join("configs/cartpole-ppo-slurm.toml")).arg("--results").arg(&results));
    assert!(text(&again).contains("12 skipped (completed), 0 re-attached, 0 submitted in"), "{}", text(&again));
    assert_eq!(ledger_kinds(&results, "intent").len(), 1);

    // MinJobAge is 30 s on the test cluster: wait until Slurm lists none of the jobs.
    let name = submissions[0]["job_name"].as_str().expect("job name").to_string();
    wait_until("Slurm to forget the sweep's jobs", Duration::from_secs(150), || squeue_names(&name).trim().is_empty());
    let status = status_json(&results);
    assert_eq!(states(&status), vec!["done"; 12], "{status}");
}

/// A wrapper around drover-job that crashes (no exit.json) on each run's first attempt; its
/// memory of which runs failed is kept outside the run directories, which retries archive.
fn flaky_job_bin(dir: &Path) -> PathBuf {
    let path = dir.join("flaky-drover-job");
    let seen = dir.join("failed-once");
    std::fs::create_dir_all(&seen).expect("mkdir");
    let body = format!(
        "#!/bin/sh\nout=''\nprev=''\nfor a in \"$@\"; do [ \"$prev\" = --out ] && out=\"$a\"; prev=\"$a\"; done\n\
         marker={}/$(basename \"$out\")\n\
         if [ ! -e \"$marker\" ]; then touch \"$marker\"; echo 'flaky: failing on purpose' >&2; exit 3; fi\n\
         exec {} \"$@\"\n",
        seen.display(),
        artifact("drover-job").display()
    );
    write_executable(&path, &body);
    path
}

/// A run that fails once succeeds on retry, with both attempts' logs and the reason kept;
/// hostile strings in an axis value and in the results path stay inert.
#[test]
fn failed_run_is_retried_and_hostile_values_never_run() {
    slurm_up();
    let tmp = tempfile::tempdir().expect("tempdir");
    let canary = tmp.path().join("canary");
    // An axis value with shell syntax: a plugin path whose directory name is a command.
    let evil_dir = tmp.path().join(format!("p; touch {}; echo '", canary.display()));
    std::fs::create_dir_all(&evil_dir).expect("mkdir");
    let evil_plugin = evil_dir.join("libppo_copy.so");
    std::fs::copy(artifact("libdrover_plugin_ppo.so"), &evil_plugin).expect("copy plugin");
    let results = tmp.path().join("r dir's $(touch x); a");
    let sweep = tmp.path().join("s.toml");
    std::fs::write(
        &sweep,
        format!(
            "name = \"flaky\"\nbackend = \"slurm\"\n[run]\nenv = \"CartPole-v1\"\nplugin = \"ppo\"\nnum_envs = 4\nnum_steps = 64\ntotal_steps = 2048\n\
             [sweep.grid]\n\"run.plugin\" = [\"ppo\", {:?}]\n[slurm]\nmax_retries = 1\npoll_seconds = 0.5\n",
            evil_plugin.display().to_string()
        ),
    )
    .expect("sweep");
    let wrapper = flaky_job_bin(tmp.path());
    let out = run_ok(drover().arg("run").arg(&sweep).arg("--results").arg(&results).env("DROVER_JOB_BIN", &wrapper));
    let status = status_json(&results);
    assert_eq!(states(&status), ["done", "done"], "{}\n{status}", text(&out));
    assert!(!canary.exists(), "a value from the sweep ran as a command");
    assert!(!tmp.path().join("x").exists(), "the results path ran as a command");
    let retries = ledger_kinds(&results, "retry");
    assert_eq!(retries.len(), 2, "each run failed once: {retries:?}");
    assert!(retries[0]["reason"].as_str().is_some_and(|r| r.contains("exit.json")), "{retries:?}");
    for run in status["runs"].as_array().expect("runs") {
        assert_eq!(run["submissions"], 2);
        let logs: Vec<String> = run["logs"].as_array().expect("logs").iter().map(|l| l.as_str().expect("path").to_string()).collect();
        assert_eq!(logs.len(), 4, "stdout and stderr of both attempts: {logs:?}");
        let first_err = std::fs::read_to_string(logs[0].replace("stdout", "stderr")).expect("attempt-1 stderr");
        assert!(first_err.contains("flaky: failing on purpose"), "{first_err}");
    }
    let script = std::fs::read_to_string(results.join("slurm/array-0.sbatch")).expect("script");
    assert!(script.contains(&format!("runs='{}/runs'", results.canonicalize().expect("abs").display().to_string().replace('\'', r"'\''"))), "{script}");
}

/// Bad resources never reach Slurm; ones that only Slurm can judge come back with its message
/// and the runs are not recorded as submitted.
#[test]
fn bad_resources_are_refused_with_the_key_or_slurms_message() {
    slurm_up();
    let tmp = tempfile::tempdir().expect("tempdir");
    let sweep = repo().join("configs/cartpole-ppo-slurm.toml");
    let results = tmp.path().join("r");
    let out = drover().arg("run").arg(&sweep).arg("--results").arg(&results).arg("--set").arg("slurm.partition='a; rm -rf ~'").output().expect("run");
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(text(&out).contains("key `slurm.partition`"), "{}", text(&out));

    let out = drover().arg("run").arg(&sweep).arg("--results").arg(&results).args(["--set", "slurm.partition=nope"]).output().expect("run");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("invalid partition"), "Slurm's own message is shown: {}", text(&out));
    assert!(
        text(&out).contains("sbatch refused the runs of `") && text(&out).contains("at `slurm.partition` (the array's settings: `--partition=nope`"),
        "the file and the setting are named: {}",
        text(&out)
    );
    assert_eq!(text(&out).matches("invalid partition specified").count(), 1, "Slurm's answer once: {}", text(&out));
    assert_eq!(ledger_kinds(&results, "refused").len(), 1);
    assert!(ledger_kinds(&results, "submitted").is_empty());
    let status = status_json(&results);
    assert_eq!(states(&status), vec!["not_submitted"; 12]);
    let reason = status["runs"][0]["reason"].as_str().unwrap_or_default();
    assert!(reason.starts_with("sbatch refused its array: invalid partition specified: nope (`slurm.partition`)"), "{status}");
    // Its runs keep the labels and seeds of the refused array's tasks file.
    for run in status["runs"].as_array().expect("runs") {
        assert!(run["label"].as_str().is_some_and(|l| !l.is_empty()) && run["seed"].is_u64(), "{run}");
    }
}

/// Six runs with `max_array_size = 4` become two arrays; killing `drover run` while it waits
/// and running it again re-attaches: no run is submitted twice. Then `drover cancel`.
#[test]
fn killed_drover_run_reattaches_without_submitting_twice_and_cancel_stops_the_rest() {
    slurm_up();
    let tmp = tempfile::tempdir().expect("tempdir");
    let sweep = tmp.path().join("s.toml");
    std::fs::write(
        &sweep,
        "name = \"reattach\"\nbackend = \"slurm\"\n[run]\nenv = \"CartPole-v1\"\nplugin = \"ppo\"\nnum_envs = 4\nnum_steps = 64\ntotal_steps = 40960\n\
         [sweep]\nseeds = { count = 6, start = 1 }\n[slurm]\nthrottle = 2\nmax_array_size = 4\npoll_seconds = 0.5\n",
    )
    .expect("sweep");
    let results = tmp.path().join("r");
    let mut first = drover().arg("run").arg(&sweep).arg("--results").arg(&results).spawn().expect("spawn");
    wait_until("two submissions", Duration::from_secs(60), || {
        results.join("slurm/submissions.jsonl").exists() && submitted_jobs(&results).len() == 2
    });
    first.kill().expect("kill drover run");
    let _ = first.wait();
    let intents = ledger_kinds(&results, "intent");
    assert_eq!(intents.iter().map(|i| i["runs"].as_array().map_or(0, Vec::len)).collect::<Vec<_>>(), [4, 2]);
    // Split by `MaxArraySize`, the two arrays share the throttle of 2 rather than get `%2` each.
    assert_eq!(intents.iter().map(|i| i["throttle"].as_u64()).collect::<Vec<_>>(), [Some(1), Some(1)]);

    let out = run_ok(drover().arg("run").arg(&sweep).arg("--results").arg(&results));
    assert!(text(&out).contains("0 submitted"), "{}", text(&out));
    assert_eq!(ledger_kinds(&results, "intent").len(), 2, "nothing submitted twice");
    assert_eq!(states(&status_json(&results)), vec!["done"; 6]);
    for run in run_dirs(&results) {
        let attempts = std::fs::read_to_string(run.join("attempts.jsonl")).expect("attempts");
        assert_eq!(attempts.lines().count(), 1, "each run ran once: {}", run.display());
    }

    // Cancel: a long sweep, submitted without waiting, then cancelled as a whole.
    let long = tmp.path().join("long.toml");
    std::fs::write(&long, std::fs::read_to_string(&sweep).expect("sweep").replace("total_steps = 40960", "total_steps = 50000000").replace("name = \"reattach\"", "name = \"cancelme\"")).expect("write");
    let results = tmp.path().join("long");
    run_ok(drover().arg("run").arg(&long).arg("--results").arg(&results).arg("--no-wait"));
    wait_until("a running task", Duration::from_secs(60), || states(&status_json(&results)).iter().any(|s| s == "running"));
    // A dry run says what a rerun would do now: re-attach to the queued and running runs.
    let dry = run_ok(drover().arg("run").arg(&long).arg("--results").arg(&results).arg("--dry-run"));
    let listing = String::from_utf8_lossy(&dry.stdout).into_owned();
    assert!(listing.lines().skip(1).take(6).all(|l| l.contains("  live  ")), "{listing}");
    assert!(listing.contains(": 0 done, 6 live, 0 resume, 0 redo, 0 new"), "{listing}");
    assert!(!listing.contains("(not submitted)"), "no script resubmits the live runs: {listing}");
    run_ok(drover().arg("cancel").arg(&results));
    wait_until("every run cancelled", Duration::from_secs(60), || states(&status_json(&results)).iter().all(|s| s == "cancelled"));
    let dry = run_ok(drover().arg("run").arg(&long).arg("--results").arg(&results).arg("--dry-run"));
    let listing = String::from_utf8_lossy(&dry.stdout).into_owned();
    assert!(listing.contains(": 0 done, 0 live, "), "nothing live once cancelled: {listing}");
    assert!(listing.contains("(not submitted)"), "the rerun's script: {listing}");
}

/// A run sent its time-limit signal, then requeued with `scontrol requeue` (SIGTERM), resumes
/// from its checkpoint both times: its metrics have no gap and no duplicate, and equal an
/// uninterrupted run of the same spec in everything but timing.
#[test]
fn requeued_run_resumes_exactly_from_its_checkpoint() {
    requeued_run_resumes_exactly(1);
}

/// The same for a 2-rank run (`srun --mpi=pmix`): the batch shell forwards the time-limit
/// signal to `srun`, SIGTERM reaches every process; the ranks agree on where to stop, rank 0
/// writes one checkpoint with both ranks' environments, and the uninterrupted reference runs
/// under `mpirun`.
#[test]
fn requeued_two_rank_run_resumes_exactly_from_its_checkpoint() {
    requeued_run_resumes_exactly(2);
}

fn requeued_run_resumes_exactly(ranks: u32) {
    slurm_up();
    let tmp = tempfile::tempdir().expect("tempdir");
    let sweep = tmp.path().join("s.toml");
    std::fs::write(
        &sweep,
        format!(
            "name = \"resume\"\nbackend = \"slurm\"\n[run]\nenv = \"CartPole-v1\"\nplugin = \"ppo\"\nnum_envs = 8\nnum_steps = 128\n\
             total_steps = 1500000\nranks = {ranks}\n[sweep]\nseeds = [5]\n[slurm]\npoll_seconds = 0.5\n"
        ),
    )
    .expect("sweep");
    let results = tmp.path().join("r");
    run_ok(drover().arg("run").arg(&sweep).arg("--results").arg(&results).arg("--no-wait"));
    let job = submitted_jobs(&results)[0].clone();
    let task = format!("{job}_0");
    // The batch script creates the run's directory when the task starts.
    wait_until("the run directory", Duration::from_secs(60), || results.join("runs").read_dir().is_ok_and(|mut d| d.next().is_some()));
    let run = run_dirs(&results).pop().expect("run dir");
    let interruptions = |reason: &str| {
        std::fs::read_to_string(run.join("interruptions.jsonl")).unwrap_or_default().lines().filter(|l| l.contains(reason)).count()
    };

    wait_until("20 iterations", Duration::from_secs(120), || metrics(&run).len() >= 20);
    run_ok(Command::new("scancel").args(["--batch", "--signal=USR1", &task]));
    wait_until("the time-limit checkpoint", Duration::from_secs(60), || interruptions("time_limit") == 1);
    wait_until("the second attempt", Duration::from_secs(120), || run.join("attempt-2.stdout.log").exists());
    let resumed_at = metrics(&run).len();
    wait_until("progress after the resume", Duration::from_secs(120), || metrics(&run).len() >= resumed_at + 20);
    run_ok(Command::new("scontrol").args(["requeue", &task]));
    wait_until("the SIGTERM checkpoint", Duration::from_secs(60), || interruptions("terminated") == 1);
    wait_until("the run to finish", Duration::from_secs(300), || states(&status_json(&results)) == ["done"]);

    let status = status_json(&results);
    assert_eq!(status["runs"][0]["time_limit_requeues"], 1);
    assert_eq!(status["runs"][0]["preemptions"], 1);
    let table = String::from_utf8_lossy(&run_ok(drover().arg("status").arg(&results)).stdout).into_owned();
    assert!(table.contains("[requeued at its time limit once, stopped by SIGTERM once]"), "{table}");
    assert!(table.contains("checkpointed stops: 1 run requeued at the time limit (1 requeue in all); 1 run stopped by SIGTERM (1 stop in all)"), "{table}");
    assert!(run.join("attempt-3.stdout.log").exists(), "three attempts");
    let resumed = metrics(&run);
    let steps: Vec<i64> = resumed.iter().map(|r| r["global_step"].as_i64().expect("step")).collect();
    let iterations = 1_500_000 / 1024;
    assert_eq!(steps, (1..=iterations).map(|i| i * 1024).collect::<Vec<i64>>(), "no gap, no duplicate");

    assert_eq!(read_json(&run.join("summary.json"))["ranks"], ranks);
    // The same spec trained without interruption, outside Slurm.
    let plain = tmp.path().join("plain");
    std::fs::create_dir_all(&plain).expect("mkdir");
    std::fs::copy(run.join("spec.json"), plain.join("spec.json")).expect("copy spec");
    run_ok(&mut drover_tests::job_in(&plain, ranks));
    let reference = metrics(&plain);
    assert_eq!(reference.len(), resumed.len());
    for (a, b) in drover_tests::untimed(&reference).iter().zip(&drover_tests::untimed(&resumed)) {
        assert_eq!(a, b, "resumed metrics equal the uninterrupted run's");
    }
    assert_eq!(read_json(&plain.join("summary.json"))["param_hash"], read_json(&run.join("summary.json"))["param_hash"]);
}

/// A run requeued at its time limit onto a node no build fits (a `uname` that says riscv64
/// once a trigger file exists) fails there without training; the waiting `drover run` then
/// retries it from its checkpoint, not from the start: the metrics have no gap and no
/// duplicate, and the run ends with the parameters of an uninterrupted one.
#[test]
fn a_run_requeued_onto_a_node_without_its_build_resumes_on_the_retry() {
    slurm_up();
    let tmp = tempfile::tempdir().expect("tempdir");
    let (fake_bin, trigger) = (tmp.path().join("bin"), tmp.path().join("foreign-next"));
    std::fs::create_dir_all(&fake_bin).expect("mkdir");
    write_executable(
        &fake_bin.join("uname"),
        &format!(
            "#!/bin/sh\nif [ \"$1\" = -m ] && rm '{}' 2>/dev/null; then echo riscv64; else exec /usr/bin/uname \"$@\"; fi\n",
            trigger.display()
        ),
    );
    let sweep = tmp.path().join("s.toml");
    std::fs::write(
        &sweep,
        "name = \"foreign\"\nbackend = \"slurm\"\n[run]\nenv = \"CartPole-v1\"\nplugin = \"ppo\"\nnum_envs = 8\nnum_steps = 128\n\
         total_steps = 600000\n[sweep]\nseeds = [7]\n[slurm]\npoll_seconds = 0.5\nmax_retries = 1\n",
    )
    .expect("sweep");
    let results = tmp.path().join("r");
    let path = format!("{}:{}", fake_bin.display(), std::env::var("PATH").unwrap_or_default());
    let waiting = drover()
        .arg("run")
        .arg(&sweep)
        .arg("--results")
        .arg(&results)
        .env("PATH", path)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("drover run");
    wait_until("the run directory", Duration::from_secs(60), || results.join("runs").read_dir().is_ok_and(|mut d| d.next().is_some()));
    let run = run_dirs(&results).pop().expect("run dir");
    wait_until("20 iterations", Duration::from_secs(120), || metrics(&run).len() >= 20);
    std::fs::write(&trigger, "").expect("trigger");
    let job = submitted_jobs(&results)[0].clone();
    run_ok(Command::new("scancel").args(["--batch", "--signal=USR1", &format!("{job}_0")]));
    let out = waiting.wait_with_output().expect("drover run");
    assert!(out.status.success(), "{}", text(&out));
    assert!(!trigger.exists(), "the requeued attempt ran on the \"riscv64\" node");

    let refused = std::fs::read_to_string(run.join("attempt-2.stderr.log")).expect("attempt 2");
    assert!(refused.contains("this node is riscv64 (uname -m)"), "{refused}");
    let retries = ledger_kinds(&results, "retry");
    assert_eq!(retries.len(), 1, "{retries:?}");
    assert!(retries[0]["reason"].as_str().is_some_and(|r| r.contains("this node is riscv64")), "{retries:?}");
    assert!(text(&out).contains("resubmitting, resuming from its checkpoint"), "{}", text(&out));
    assert_eq!(states(&status_json(&results)), ["done"]);
    let steps: Vec<i64> = metrics(&run).iter().map(|r| r["global_step"].as_i64().expect("step")).collect();
    assert_eq!(steps, (1..=600_000 / 1024).map(|i| i * 1024).collect::<Vec<i64>>(), "no gap, no duplicate");
    let plain = tmp.path().join("plain");
    std::fs::create_dir_all(&plain).expect("mkdir");
    std::fs::copy(run.join("spec.json"), plain.join("spec.json")).expect("copy spec");
    run_ok(&mut drover_tests::job_in(&plain, 1));
    assert_eq!(read_json(&plain.join("summary.json"))["param_hash"], read_json(&run.join("summary.json"))["param_hash"]);
}

/// `run.device = "cuda"` on Slurm without a GPU request is warned about before anything is
/// submitted (here with `--dry-run`, which submits nothing), and the warning goes once a
/// `gpus_per_task` is set, or for CPU runs.
#[test]
fn slurm_cuda_runs_without_a_gpu_request_are_warned_about() {
    slurm_up();
    let tmp = tempfile::tempdir().expect("tempdir");
    let dry_run = |device: &str, slurm: &str| {
        let sweep = drover_tests::write_sweep(
            tmp.path(),
            &format!(
                "name = \"g\"\nbackend = \"slurm\"\n[run]\nenv = \"CartPole-v1\"\nplugin = \"ppo\"\ndevice = \"{device}\"\n\
                 [slurm]\n{slurm}\n[sweep]\nseeds = [1, 2]\n"
            ),
        );
        let out = run_ok(drover().arg("run").arg(&sweep).arg("--results").arg(tmp.path().join("r")).arg("--dry-run"));
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let warned = dry_run("cuda", "time = \"10\"");
    assert!(
        warned.contains("warning: 2 run(s) have run.device = \"cuda\" but their [slurm] resources request no GPU")
            && warned.contains("gpus_per_task = 1"),
        "{warned}"
    );
    assert!(!dry_run("cuda", "gpus_per_task = 1").contains("request no GPU"));
    assert!(!dry_run("cuda", "gres = \"gpu:1\"").contains("request no GPU"));
    assert!(!dry_run("cpu", "time = \"10\"").contains("request no GPU"));
}

/// `[slurm.arch]` on the real cluster: a folder named for this node's `uname -m` wins over the
/// default build, so the run trains with that folder's drover-job and plugin (`--plugin-dir`);
/// a folder whose builds are for another machine is refused before anything is submitted.
#[test]
fn an_arch_folder_supplies_the_nodes_builds_and_a_foreign_build_is_refused() {
    slurm_up();
    let tmp = tempfile::tempdir().expect("tempdir");
    let uname = Command::new("uname").arg("-m").output().expect("uname");
    let machine = String::from_utf8_lossy(&uname.stdout).trim().to_string();
    let builds = tmp.path().join("node builds");
    std::fs::create_dir_all(&builds).expect("mkdir");
    std::fs::copy(artifact("drover-job"), builds.join("drover-job")).expect("copy drover-job");
    std::fs::copy(artifact("libdrover_plugin_ppo.so"), builds.join("libdrover_plugin_ppo.so")).expect("copy plugin");
    let sweep = |name: &str, arch: &str| {
        drover_tests::write_sweep(
            tmp.path(),
            &format!(
                "name = \"{name}\"\nbackend = \"slurm\"\n[run]\nenv = \"CartPole-v1\"\nplugin = \"ppo\"\nnum_envs = 4\nnum_steps = 64\ntotal_steps = 1024\n\
                 [slurm]\npoll_seconds = 0.5\n[slurm.arch]\n{arch} = {:?}\n",
                builds.display().to_string()
            ),
        )
    };
    let results = tmp.path().join("r");
    let out = run_ok(drover().arg("run").arg(sweep("arch", &machine)).arg("--results").arg(&results));
    let status = status_json(&results);
    assert_eq!(states(&status), ["done"], "{}\n{status}", text(&out));
    let run = &run_dirs(&results)[0];
    let plugin = read_json(&run.join("summary.json"))["plugin"]["path"].as_str().map(PathBuf::from);
    assert_eq!(plugin, Some(builds.join("libdrover_plugin_ppo.so")), "the run loaded the folder's plugin");
    let stderr = std::fs::read_to_string(run.join("attempt-1.stderr.log")).expect("stderr log");
    assert!(stderr.contains("(--plugin-dir; the spec names "), "{stderr}");
    let attempt = std::fs::read_to_string(run.join("attempts.jsonl")).expect("attempts");
    assert!(attempt.contains(&format!("\"machine\":\"{machine}\"")), "{attempt}");
    let script = std::fs::read_to_string(results.join("slurm/array-0.sbatch")).expect("script");
    assert!(script.contains(&format!("    '{machine}') job_bin='{}/drover-job'", builds.display())), "{script}");
    let provenance = &ledger_kinds(&results, "intent")[0]["provenance"]["arch_builds"][&machine];
    for file in ["drover-job", "libdrover_plugin_ppo.so"] {
        assert_eq!(provenance[file].as_str().map(str::len), Some(64), "the build's SHA-256 in the intent record: {provenance}");
    }

    // This machine's builds named for another one: refused with the file, key and reason.
    let other = if machine == "aarch64" { "x86_64" } else { "aarch64" };
    let foreign = tmp.path().join("r2");
    let out = drover().arg("run").arg(sweep("foreign", other)).arg("--results").arg(&foreign).output().expect("run");
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let said = text(&out);
    assert!(
        said.contains(&format!("key `slurm.arch.{other}`")) && said.contains(&format!("is built for {machine}, not for {other}")),
        "{said}"
    );
    assert!(!foreign.join("slurm/submissions.jsonl").exists(), "nothing was submitted");

    // A drover-job of another drover version (a folder not rebuilt after an upgrade): its build
    // marker, read without running it, says so before anything waits in the queue.
    let ours = env!("CARGO_PKG_VERSION");
    let stale: String = ours.chars().map(|c| if c.is_ascii_digit() { if c == '9' { '8' } else { '9' } } else { c }).collect();
    let mut job = std::fs::read(builds.join("drover-job")).expect("read drover-job");
    let marker = format!("\0drover-job build\0{ours}\0").into_bytes();
    let at = job.windows(marker.len()).position(|w| w == marker).expect("the real drover-job carries its version marker");
    job[at..at + marker.len()].copy_from_slice(format!("\0drover-job build\0{stale}\0").as_bytes());
    std::fs::write(builds.join("drover-job"), job).expect("write the stale drover-job");
    let old = tmp.path().join("r3");
    let out = drover().arg("run").arg(sweep("stale", &machine)).arg("--results").arg(&old).output().expect("run");
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let said = text(&out);
    assert!(said.contains(&format!("is drover-job {stale}, and this drover is {ours}")), "{said}");
    assert!(!old.join("slurm/submissions.jsonl").exists(), "nothing was submitted");
}

/// A mixed cluster, emulated: drover on this machine submits a run that lands on an "AArch64
/// node" (a `uname` on PATH that says so; sbatch passes PATH on), whose batch script picks the
/// `[slurm.arch]` folder: an AArch64 drover-job (under qemu-aarch64) that loads the AArch64
/// plugin through `--plugin-dir` and, pinned with `DROVER_SIMD=avx2`, trains at the NEON level,
/// to the same bits as this machine's AVX2 level. Runs where `DROVER_MIXED_ARCH_BUILDS` names a folder holding AArch64
/// builds of `drover-job` and `libdrover_plugin_ppo.so` (`scripts/test-aarch64.sh` sets it);
/// elsewhere it says that it skipped.
#[test]
fn a_node_of_another_architecture_trains_with_its_folders_builds() {
    let Some(arm_builds) = std::env::var_os("DROVER_MIXED_ARCH_BUILDS").map(PathBuf::from) else {
        eprintln!("SKIPPED a_node_of_another_architecture_trains_with_its_folders_builds: DROVER_MIXED_ARCH_BUILDS is not set (scripts/test-aarch64.sh runs it)");
        return;
    };
    slurm_up();
    let tmp = tempfile::tempdir().expect("tempdir");
    let (folder, fake_bin) = (tmp.path().join("aarch64 builds"), tmp.path().join("bin"));
    for dir in [&folder, &fake_bin] {
        std::fs::create_dir_all(dir).expect("mkdir");
    }
    std::fs::copy(arm_builds.join("drover-job"), folder.join("drover-job.aarch64")).expect("copy the AArch64 drover-job");
    std::fs::copy(arm_builds.join("libdrover_plugin_ppo.so"), folder.join("libdrover_plugin_ppo.so")).expect("copy the AArch64 plugin");
    // What binfmt_misc would do on a machine that has it registered.
    write_executable(
        &folder.join("drover-job"),
        &format!("#!/bin/sh\nexec qemu-aarch64 -L /usr/aarch64-linux-gnu '{}' \"$@\"\n", folder.join("drover-job.aarch64").display()),
    );
    write_executable(&fake_bin.join("uname"), "#!/bin/sh\nif [ \"$1\" = -m ]; then echo aarch64; else exec /usr/bin/uname \"$@\"; fi\n");
    let sweep = drover_tests::write_sweep(
        tmp.path(),
        &format!(
            "name = \"mixed\"\nbackend = \"slurm\"\n[run]\nenv = \"CartPole-v1\"\nplugin = \"ppo\"\nnum_envs = 8\nnum_steps = 32\ntotal_steps = 512\nthreads = 1\n\
             [slurm]\npoll_seconds = 0.5\n[slurm.arch]\naarch64 = {:?}\n",
            folder.display().to_string()
        ),
    );
    let results = tmp.path().join("r");
    let path = format!("{}:{}", fake_bin.display(), std::env::var("PATH").unwrap_or_default());
    // Pinned to AVX2, as a sweep over AVX2 and AArch64 nodes would be: NEON runs it there.
    let out = run_ok(drover().arg("run").arg(&sweep).arg("--results").arg(&results).env("PATH", path).env("DROVER_SIMD", "avx2"));
    let status = status_json(&results);
    assert_eq!(states(&status), ["done"], "{}\n{status}", text(&out));
    let run = &run_dirs(&results)[0];
    let summary = read_json(&run.join("summary.json"));
    assert_eq!(summary["plugin"]["path"].as_str().map(PathBuf::from), Some(folder.join("libdrover_plugin_ppo.so")));
    let attempt = std::fs::read_to_string(run.join("attempts.jsonl")).expect("attempts");
    assert!(attempt.contains("\"machine\":\"aarch64\""), "{attempt}");
    let stderr = std::fs::read_to_string(run.join("attempt-1.stderr.log")).expect("stderr log");
    assert!(stderr.contains("compute=cpu/neon"), "the AArch64 build ran: {stderr}");
    assert!(stderr.contains("DROVER_SIMD=avx2: this CPU cannot run it; running `neon`"), "{stderr}");

    // This machine's AVX2 level computes the NEON level's bits (`SimdLevel::twin`).
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        let here = tmp.path().join("here");
        run_ok(Command::new(artifact("drover-job")).arg("--spec").arg(run.join("spec.json")).arg("--out").arg(&here).env("DROVER_SIMD", "avx2"));
        let hash = |dir: &Path| read_json(&dir.join("summary.json"))["param_hash"].as_str().map(String::from);
        assert_eq!(hash(&here), hash(run), "avx2 here and neon on the emulated node");
        assert!(hash(run).is_some());
    }
}

/// `--dry-run` asks Slurm one question (`MaxArraySize`) and has a safe answer without it, so
/// where the controller is unreachable it asks once, warns and renders the scripts, instead
/// of retrying with backoff like a submission does.
#[test]
fn a_dry_run_asks_an_unreachable_slurm_once() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let bin = tmp.path().join("bin");
    std::fs::create_dir_all(&bin).expect("mkdir");
    let calls = tmp.path().join("calls");
    let scontrol = bin.join("scontrol");
    write_executable(
        &scontrol,
        &format!(
            "#!/bin/sh\necho \"$@\" >> '{}'\necho 'slurm_load_ctl_conf error: Unable to contact slurm controller (connect failure)' >&2\nexit 1\n",
            calls.display()
        ),
    );
    let sweep = drover_tests::write_sweep(
        tmp.path(),
        "name = \"g\"\nbackend = \"slurm\"\n[run]\nenv = \"CartPole-v1\"\nplugin = \"ppo\"\n[sweep]\nseeds = [1, 2]\n",
    );
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    let out = run_ok(drover().arg("run").arg(&sweep).arg("--results").arg(tmp.path().join("r")).arg("--dry-run").env("PATH", path));
    let all = text(&out);
    assert!(all.contains("cannot ask Slurm for MaxArraySize") && all.contains("assuming 1001"), "{all}");
    assert!(all.contains("#SBATCH --array=0-1"), "the script is still rendered:\n{all}");
    let asked = std::fs::read_to_string(&calls).expect("scontrol was called");
    assert_eq!(asked.lines().collect::<Vec<_>>(), ["show config"], "one call, no retries");
}

/// The controller stops answering for a few seconds while `drover run` waits (a restart, a
/// failover): the jobs go on, and so does the waiting, which used to give up after 3.5 s of
/// retries and leave nobody to retry failed runs. A stand-in `squeue` first on PATH fails while
/// a flag file exists and is the real one otherwise.
#[test]
fn a_waiting_drover_run_outlives_a_short_controller_outage() {
    slurm_up();
    let tmp = tempfile::tempdir().expect("tempdir");
    let down = tmp.path().join("controller-down");
    let path = stand_in(tmp.path(), "squeue", |real| {
        format!(
            "#!/bin/sh\nif [ -e '{}' ]; then echo 'slurm_load_jobs error: Unable to contact slurm controller (connect failure)' >&2; exit 1; fi\nexec '{real}' \"$@\"\n",
            down.display()
        )
    });
    let sweep = drover_tests::write_sweep(
        tmp.path(),
        "name = \"outage\"\nbackend = \"slurm\"\n[run]\nenv = \"CartPole-v1\"\nplugin = \"ppo\"\nnum_envs = 8\nnum_steps = 128\ntotal_steps = 3000000\n\
         [sweep]\nseeds = [1]\n[slurm]\npoll_seconds = 0.5\n",
    );
    let results = tmp.path().join("r");
    let driver = drover().arg("run").arg(&sweep).arg("--results").arg(&results).env("PATH", &path).stderr(std::process::Stdio::piped()).spawn().expect("spawn");
    wait_until("a running task", Duration::from_secs(60), || {
        results.join("sweep.json").is_file() && states(&status_json(&results)).iter().any(|s| s == "running")
    });
    std::fs::write(&down, "").expect("flag");
    std::thread::sleep(Duration::from_secs(5));
    std::fs::remove_file(&down).expect("flag");
    let out = driver.wait_with_output().expect("wait");
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{said}");
    assert!(said.contains("drover: warning: Slurm does not answer (") && said.contains("the jobs go on, and this waits up to 900 s"), "{said}");
    assert!(said.contains("drover: Slurm answers again after "), "{said}");
    assert_eq!(states(&status_json(&results)), ["done"]);
}

/// A task held (here by its user, `--hold`; an administrator's hold or a failed launch reads
/// alike) waits for a person, not for time: the waiting `drover run` says so once, in words,
/// rather than wait in silence, and goes on once the task is released.
#[test]
fn a_waiting_drover_run_says_once_that_a_held_run_waits_for_a_person() {
    slurm_up();
    let tmp = tempfile::tempdir().expect("tempdir");
    let sweep = short_sweep(tmp.path(), "held", "[1]", "extra = [\"--hold\"]\n");
    let results = tmp.path().join("r");
    let err = tmp.path().join("run.err");
    let mut driver = spawn_logged(drover().arg("run").arg(&sweep).arg("--results").arg(&results), &err);
    let said = || std::fs::read_to_string(&err).unwrap_or_default();
    wait_until("the warning about the held run", Duration::from_secs(60), || said().contains("held by its user"));
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(said().matches("held by its user").count(), 1, "said once: {}", said());
    assert!(said().contains("drover: warning: run ") && said().contains("`scontrol release <job>` lets it start"), "{}", said());
    let job = submitted_jobs(&results)[0].clone();
    run_ok(Command::new("scontrol").args(["release", &job]));
    wait_until("the run to finish", Duration::from_secs(120), || driver.0.try_wait().expect("wait").is_some());
    assert!(driver.0.wait().expect("status").success(), "{}", said());
    assert_eq!(states(&status_json(&results)), ["done"]);
}

/// `drover status` while the controller does not answer: a sweep that has ended is reported
/// whole from its markers (it used to fail outright), a run without a final marker is
/// `unknown`, and the report says Slurm did not answer. A stand-in `squeue` first on PATH
/// fails as `squeue` does when slurmctld is down.
#[test]
fn status_without_an_answering_controller_reports_what_the_markers_settle() {
    slurm_up();
    let tmp = tempfile::tempdir().expect("tempdir");
    let sweep = short_sweep(tmp.path(), "down", "[1, 2]", "");
    let results = tmp.path().join("r");
    run_ok(drover().arg("run").arg(&sweep).arg("--results").arg(&results));
    let path = stand_in(tmp.path(), "squeue", |_| {
        "#!/bin/sh\necho 'slurm_load_jobs error: Unable to contact slurm controller (connect failure)' >&2\nexit 1\n".into()
    });
    let down = |json: bool| {
        let mut cmd = drover();
        cmd.arg("status").arg(&results).env("PATH", &path);
        if json {
            cmd.arg("--json");
        }
        run_ok(&mut cmd)
    };
    let report: Value = serde_json::from_slice(&down(true).stdout).expect("JSON");
    assert_eq!(states(&report), ["done", "done"], "{report}");
    assert!(report["slurm_unanswered"].as_str().is_some_and(|e| e.contains("Unable to contact slurm controller")), "{report}");
    let table = text(&down(false));
    assert!(table.contains("Slurm does not answer (") && table.contains("every run has a final marker, so this is the whole answer"), "{table}");

    // A run whose marker is gone (say, still running when the controller went down).
    let run = run_dirs(&results).pop().expect("a run directory");
    std::fs::remove_file(run.join("exit.json")).expect("remove exit.json");
    let report: Value = serde_json::from_slice(&down(true).stdout).expect("JSON");
    let mut seen = states(&report);
    seen.sort();
    assert_eq!(seen, ["done", "unknown"], "{report}");
    let table = text(&down(false));
    assert!(table.contains("1 run without a final marker is unknown; ask again once it answers"), "{table}");
    assert_eq!(states(&status_json(&results)).iter().filter(|s| *s == "failed").count(), 1, "with Slurm answering, a forgotten run without a marker failed");
}

/// `drover status` while the `drover run` beside it is inside `sbatch`: the array is already
/// in the queue but not yet in the ledger. Status shows it (found by its comment) and leaves
/// the record to `drover run`; it wrote a second one before, which a test counting records
/// then tripped over. A stand-in `sbatch` first on PATH submits and holds its answer back
/// until the test lets it go.
#[test]
fn status_beside_a_submitting_drover_run_shows_the_array_and_leaves_its_record_to_the_run() {
    slurm_up();
    let tmp = tempfile::tempdir().expect("tempdir");
    let (submitted, go) = (tmp.path().join("submitted"), tmp.path().join("go"));
    let path = stand_in(tmp.path(), "sbatch", |real| {
        format!(
            "#!/bin/sh\nout=$('{real}' \"$@\")\nrc=$?\ntouch '{}'\nn=0\nwhile [ ! -e '{}' ] && [ $n -lt 600 ]; do sleep 0.1; n=$((n+1)); done\necho \"$out\"\nexit $rc\n",
            submitted.display(),
            go.display()
        )
    });
    let sweep = short_sweep(tmp.path(), "inflight", "[1]", "");
    let results = tmp.path().join("r");
    let err = tmp.path().join("run.err");
    let mut driver = spawn_logged(drover().arg("run").arg(&sweep).arg("--results").arg(&results).arg("--no-wait").env("PATH", &path), &err);
    wait_until("the array in the queue, its sbatch not yet returned", Duration::from_secs(60), || submitted.exists());
    let seen = states(&status_json(&results));
    assert!(seen == ["pending"] || seen == ["running"] || seen == ["done"], "status sees the array by its comment: {seen:?}");
    assert!(ledger_kinds(&results, "submitted").is_empty(), "left to the drover run inside sbatch: {:?}", ledger(&results));
    std::fs::write(&go, "").expect("go");
    let status = driver.0.wait().expect("drover run");
    assert!(status.success(), "{}", std::fs::read_to_string(&err).unwrap_or_default());
    assert_eq!(ledger_kinds(&results, "submitted").len(), 1, "one record of the one submission: {:?}", ledger(&results));
}

/// What a researcher reads while a throttled sweep waits and after `drover cancel`: a pending
/// run shows its seed (its directory does not exist yet) and why it waits in words; a
/// cancelled run says who cancelled it and that the next `drover run` resumes it, in
/// `drover status` and in the summary of the `drover run` that was waiting (exit code 4); the
/// next `drover run` says how many runs resume, and the resumed run continues its metrics.
#[test]
fn a_cancelled_sweep_says_what_the_next_run_resumes_and_pending_runs_show_their_seed() {
    slurm_up();
    let tmp = tempfile::tempdir().expect("tempdir");
    let sweep = tmp.path().join("s.toml");
    std::fs::write(
        &sweep,
        "name = \"audit\"\nbackend = \"slurm\"\n[run]\nenv = \"CartPole-v1\"\nplugin = \"ppo\"\nnum_envs = 8\nnum_steps = 128\n\
         total_steps = 50000000\n[sweep]\nseeds = [11, 12]\n[slurm]\nthrottle = 1\npoll_seconds = 0.5\n",
    )
    .expect("sweep");
    let results = tmp.path().join("r");
    let waiting_log = tmp.path().join("waiting.log");
    let mut waiting = drover()
        .arg("run")
        .arg(&sweep)
        .arg("--results")
        .arg(&results)
        .stderr(std::fs::File::create(&waiting_log).expect("log"))
        .spawn()
        .expect("spawn drover run");
    wait_until("the submission", Duration::from_secs(60), || results.join("slurm/submissions.jsonl").exists() && !ledger_kinds(&results, "submitted").is_empty());
    wait_until("the first run running, the second pending", Duration::from_secs(60), || {
        states(&status_json(&results)) == ["running", "pending"]
    });
    let table = String::from_utf8_lossy(&run_ok(drover().arg("status").arg(&results)).stdout).into_owned();
    let pending = table.lines().find(|l| l.contains(" pending ")).expect("a pending line");
    assert!(pending.contains("seed=12"), "{table}");
    assert!(pending.contains("waiting for a slot") && pending.contains("Slurm: JobArrayTaskLimit"), "{table}");
    assert_eq!(status_json(&results)["runs"][1]["seed"], 12);

    // Slurm lists the task running a moment before its batch script makes the run's directory.
    wait_until("the running run's directory", Duration::from_secs(60), || !run_dirs(&results).is_empty());
    let run = run_dirs(&results).pop().expect("the running run's directory");
    wait_until("10 iterations", Duration::from_secs(120), || metrics(&run).len() >= 10);
    run_ok(drover().arg("cancel").arg(&results));
    wait_until("every run cancelled", Duration::from_secs(60), || states(&status_json(&results)) == ["cancelled", "cancelled"]);
    let status = status_json(&results);
    let reason = |i: usize| status["runs"][i]["reason"].as_str().unwrap_or_default().to_string();
    assert!(reason(0).starts_with("cancelled by `drover cancel`; checkpoint at iteration "), "the cause, not the job's guess: {status}");
    assert!(reason(0).ends_with("the next `drover run` resumes it from its checkpoint"), "{status}");
    assert_eq!(reason(1), "cancelled by `drover cancel`", "never started, so nothing to resume: {status}");
    let stopped_at = metrics(&run).len();
    // The `drover run` that was waiting reads the cancel from the ledger, not from memory.
    let code = waiting.wait().expect("the waiting drover run ends").code();
    let said = std::fs::read_to_string(&waiting_log).expect("its stderr");
    assert_eq!(code, Some(4), "{said}");
    assert_eq!(said.matches("): cancelled by `drover cancel`").count(), 2, "both runs, in the final summary: {said}");

    let again = run_ok(drover().arg("run").arg(&sweep).arg("--results").arg(&results).arg("--no-wait"));
    assert!(text(&again).contains("submitting 2 (1 resumes from its checkpoint)"), "{}", text(&again));
    wait_until("progress after the resume", Duration::from_secs(120), || metrics(&run).len() >= stopped_at + 5);
    let steps: Vec<i64> = metrics(&run).iter().map(|r| r["global_step"].as_i64().expect("step")).collect();
    assert_eq!(steps, (1..=steps.len() as i64).map(|i| i * 1024).collect::<Vec<_>>(), "resumed, not started over");
    run_ok(drover().arg("cancel").arg(&results));
    wait_until("every run cancelled again", Duration::from_secs(60), || states(&status_json(&results)) == ["cancelled", "cancelled"]);
}

/// A resubmission is a new array, and Slurm applies each array's throttle on its own: with
/// `throttle = 1`, a run that failed while another runs waits for that one to end before it
/// is resubmitted, so no two jobs of the sweep ever run at once. The wrapper fails the first
/// training job to start and logs when each one starts and ends (the plugin checks before
/// submission go straight through).
/// The jobs linger 2 s after `drover-job` exits, so a finished run's task is still listed as
/// running when its `exit.json` is read: the held-back retry must still be submitted then.
#[test]
fn retries_stay_within_the_sweeps_throttle() {
    slurm_up();
    let tmp = tempfile::tempdir().expect("tempdir");
    let log = tmp.path().join("jobs.log");
    let wrapper = tmp.path().join("fail-first-drover-job");
    write_executable(
        &wrapper,
        &format!(
            "#!/bin/sh\ncase \"$*\" in *--spec*) ;; *) exec '{job}' \"$@\";; esac\n\
             log='{log}'\necho \"start $(date +%s%N)\" >> \"$log\"\n\
             if mkdir '{once}' 2>/dev/null; then echo 'failing on purpose' >&2; echo \"end $(date +%s%N)\" >> \"$log\"; exit 3; fi\n\
             '{job}' \"$@\"\nrc=$?\nsleep 2\necho \"end $(date +%s%N)\" >> \"$log\"\nexit $rc\n",
            log = log.display(),
            once = tmp.path().join("failed-once").display(),
            job = artifact("drover-job").display()
        ),
    );
    let sweep = tmp.path().join("s.toml");
    std::fs::write(
        &sweep,
        "name = \"throttled\"\nbackend = \"slurm\"\n[run]\nenv = \"CartPole-v1\"\nplugin = \"ppo\"\nnum_envs = 8\nnum_steps = 128\n\
         total_steps = 150000\n[sweep]\nseeds = [1, 2]\n[slurm]\nthrottle = 1\nmax_retries = 1\npoll_seconds = 0.5\n",
    )
    .expect("sweep");
    let results = tmp.path().join("r");
    let out = run_ok(drover().arg("run").arg(&sweep).arg("--results").arg(&results).env("DROVER_JOB_BIN", &wrapper));
    assert_eq!(states(&status_json(&results)), ["done", "done"], "{}", text(&out));
    assert_eq!(ledger_kinds(&results, "retry").len(), 1, "{}", text(&out));
    // The last job lingers after its run finished (and drover returned): wait for its end.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while std::fs::read_to_string(&log).map_or(0, |l| l.lines().count()) < 6 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let mut events: Vec<(u128, i32)> = std::fs::read_to_string(&log)
        .expect("job log")
        .lines()
        .map(|l| {
            let (what, at) = l.split_once(' ').expect("event");
            (at.parse().expect("time"), if what == "start" { 1 } else { -1 })
        })
        .collect();
    events.sort();
    assert_eq!(events.len(), 6, "three jobs: {events:?}");
    let most = events.iter().scan(0, |running, (_, d)| {
        *running += d;
        Some(*running)
    });
    assert_eq!(most.max(), Some(1), "at most one job at once: {events:?}\n{}", text(&out));
}

/// `ArrayTaskThrottle` of an array, from `scontrol show job` (one record per task, all alike).
fn array_throttle(job: &str) -> Option<u32> {
    let out = Command::new("scontrol").args(["show", "job", job]).output().expect("scontrol");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.split_whitespace().find_map(|w| w.strip_prefix("ArrayTaskThrottle=")).and_then(|n| n.parse().ok())
}

/// Writes a Slurm sweep `name` of PPO CartPole runs of `total_steps`, `seeds` (a TOML list)
/// and the sweep throttle `throttle`, polled every 0.5 s.
fn write_throttled_sweep(path: &Path, name: &str, total_steps: u64, throttle: u32, seeds: &str) {
    let text = format!(
        "name = \"{name}\"\nbackend = \"slurm\"\n[run]\nenv = \"CartPole-v1\"\nplugin = \"ppo\"\nnum_envs = 8\nnum_steps = 128\n\
         total_steps = {total_steps}\n[sweep]\nseeds = {seeds}\n[slurm]\nthrottle = {throttle}\npoll_seconds = 0.5\n"
    );
    std::fs::write(path, text).expect("sweep");
}

/// Running tasks of every array named `name`.
fn running_tasks(name: &str) -> usize {
    let out = Command::new("squeue").args(["--noheader", "--array", "--states=RUNNING", "--format=%i"]).arg(format!("--name={name}")).output().expect("squeue");
    String::from_utf8_lossy(&out.stdout).lines().filter(|l| !l.trim().is_empty()).count()
}

/// Slurm applies `%N` per array: a rerun that adds runs while the first `drover run`'s runs
/// still go starts its array at what they leave of the sweep's throttle, so the sweep never
/// runs more at once; the throttle is raised to the whole `%N` once they end (here, when
/// `drover status` sees them cancelled). Who stopped a run is named: `scancel` by hand for the
/// first array, `drover cancel` for the second.
#[test]
fn a_rerun_shares_the_throttle_with_live_runs_and_status_names_who_stopped_them() {
    slurm_up();
    let tmp = tempfile::tempdir().expect("tempdir");
    let sweep = tmp.path().join("s.toml");
    let write = |seeds: &str| write_throttled_sweep(&sweep, "share", 50_000_000, 3, seeds);
    write("[1, 2]");
    let results = tmp.path().join("r");
    run_ok(drover().arg("run").arg(&sweep).arg("--results").arg(&results).arg("--no-wait"));
    wait_until("both runs running", Duration::from_secs(90), || states(&status_json(&results)) == ["running", "running"]);
    let first = submitted_jobs(&results)[0].clone();
    let name = ledger_kinds(&results, "intent")[0]["job_name"].as_str().expect("job name").to_string();

    write("[1, 2, 3, 4, 5]");
    let out = run_ok(drover().arg("run").arg(&sweep).arg("--results").arg(&results).arg("--no-wait"));
    assert!(text(&out).contains("2 runs of earlier submissions still queued or running: the new runs start at 1 at once, raised to 3"), "{}", text(&out));
    // No drover process stays to raise it: the output says which command does.
    assert!(text(&out).contains("with --no-wait no drover process raises the lowered throttle: `drover status` (or the next `drover run`) does"), "{}", text(&out));
    let intents = ledger_kinds(&results, "intent");
    assert_eq!((intents[1]["throttle"].as_u64(), intents[1]["raise_to"].as_u64()), (Some(1), Some(3)), "{intents:?}");
    let second = submitted_jobs(&results)[1].clone();
    assert_eq!(array_throttle(&second), Some(1), "the new array leaves the live runs their slots");
    // Give Slurm's scheduler (sched_interval = 2 s) several passes: never more than 3 at once.
    let t0 = Instant::now();
    let mut most = 0;
    while t0.elapsed() < Duration::from_secs(8) {
        most = most.max(running_tasks(&name));
        std::thread::sleep(Duration::from_millis(250));
    }
    assert_eq!(most, 3, "two old runs and one new one at once");

    // The first array's runs end (cancelled by hand); `drover status` raises the throttle.
    run_ok(Command::new("scancel").arg(&first));
    wait_until("the first two runs cancelled", Duration::from_secs(60), || states(&status_json(&results))[..2] == ["cancelled", "cancelled"]);
    wait_until("the whole throttle for the new array", Duration::from_secs(30), || {
        let _ = status_json(&results);
        array_throttle(&second) == Some(3)
    });
    wait_until("three new runs running", Duration::from_secs(90), || states(&status_json(&results))[2..] == ["running"; 3]);
    let status = status_json(&results);
    for i in 0..2 {
        let reason = status["runs"][i]["reason"].as_str().unwrap_or_default();
        assert!(reason.starts_with("cancelled outside drover (`scancel`; Slurm: CANCELLED)"), "{status}");
    }
    let table = String::from_utf8_lossy(&run_ok(drover().arg("status").arg(&results)).stdout).into_owned();
    assert!(table.contains("stopped by SIGTERM once]  (cancelled outside drover (`scancel`"), "{table}");

    run_ok(drover().arg("cancel").arg(&results));
    wait_until("every run cancelled", Duration::from_secs(60), || states(&status_json(&results)) == ["cancelled"; 5]);
    let status = status_json(&results);
    let reasons: Vec<&str> = status["runs"].as_array().expect("runs").iter().map(|r| r["reason"].as_str().unwrap_or_default()).collect();
    assert!(reasons[..2].iter().all(|r| r.starts_with("cancelled outside drover")), "{reasons:?}");
    assert!(reasons[2..].iter().all(|r| r.starts_with("cancelled by `drover cancel`")), "{reasons:?}");
    assert!(!reasons.iter().any(|r| r.contains("preempted, requeued or cancelled")), "{reasons:?}");
}

/// `scontrol show job` of a job or array, as text.
fn show_job(job: &str) -> String {
    let out = Command::new("scontrol").args(["show", "job", job]).output().expect("scontrol");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The job name of the sweep in `results`, from its ledger, once it has one.
fn sweep_job_name(results: &Path) -> Option<String> {
    let text = std::fs::read_to_string(results.join("slurm/submissions.jsonl")).ok()?;
    let first: Value = serde_json::from_str(text.lines().next()?).ok()?;
    first["job_name"].as_str().map(str::to_string)
}

/// Samples `running_tasks` of the sweep in `results` every 100 ms until `done` is set;
/// returns the most seen at once.
/// Runs `drover status` on `results` every 150 ms until `done`, as a user watching a sweep in
/// another terminal would: each call may raise throttles and lift waiting arrays, beside the
/// waiting `drover run`. Returns how many calls succeeded.
fn status_watcher(results: PathBuf, done: std::sync::Arc<std::sync::atomic::AtomicBool>) -> std::thread::JoinHandle<usize> {
    std::thread::spawn(move || {
        let mut calls = 0;
        while !done.load(std::sync::atomic::Ordering::Relaxed) {
            if results.join("sweep.json").is_file() && drover().arg("status").arg(&results).output().is_ok_and(|o| o.status.success()) {
                calls += 1;
            }
            std::thread::sleep(Duration::from_millis(150));
        }
        calls
    })
}

fn most_running(results: PathBuf, done: std::sync::Arc<std::sync::atomic::AtomicBool>) -> std::thread::JoinHandle<usize> {
    std::thread::spawn(move || {
        let mut most = 0;
        while !done.load(std::sync::atomic::Ordering::Relaxed) {
            if let Some(name) = sweep_job_name(&results) {
                most = most.max(running_tasks(&name));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        most
    })
}

/// Issue (slurm2): `[[slurm.overrides]]` giving two groups of runs different resources make
/// two arrays, and Slurm applies `%N` to each; the sweep's throttle of 2 is dealt across them
/// (`%1` each, raised as the other's runs end), so never more than 2 of its tasks run at once
/// (each array at `%2` would run 4).
#[test]
fn a_sweep_split_into_arrays_by_overrides_runs_within_one_throttle() {
    slurm_up();
    let tmp = tempfile::tempdir().expect("tempdir");
    let sweep = tmp.path().join("s.toml");
    std::fs::write(
        &sweep,
        "name = \"split\"\nbackend = \"slurm\"\n[run]\nenv = \"CartPole-v1\"\nplugin = \"ppo\"\nnum_envs = 8\nnum_steps = 128\n\
         total_steps = 150000\n[sweep]\nseeds = [1, 2]\n[sweep.grid]\n\"params.clip_coef\" = [0.1, 0.2]\n\
         [slurm]\nthrottle = 2\ntime = \"10\"\npoll_seconds = 0.5\n[[slurm.overrides]]\nwhen = { \"params.clip_coef\" = 0.2 }\ntime = \"9\"\n",
    )
    .expect("sweep");
    let results = tmp.path().join("r");
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = most_running(results.clone(), done.clone());
    let out = drover().arg("run").arg(&sweep).arg("--results").arg(&results).output().expect("drover run");
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let most = sampler.join().expect("sampler");
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(states(&status_json(&results)), ["done"; 4], "{}", text(&out));
    assert_eq!(most, 2, "at most the sweep's throttle at once, and both arrays ran together: {}", text(&out));
    let intents = ledger_kinds(&results, "intent");
    let limits: Vec<(Option<u64>, Option<u64>, usize)> = intents
        .iter()
        .map(|i| (i["throttle"].as_u64(), i["raise_to"].as_u64(), i["runs"].as_array().map_or(0, Vec::len)))
        .collect();
    assert_eq!(limits, [(Some(1), Some(2), 2), (Some(1), Some(2), 2)], "two arrays, one slot each: {}", text(&out));
    assert!(text(&out).contains("the sweep's throttle (2 at once) is shared by its 2 new arrays"), "{}", text(&out));
}

/// When older runs fill the throttle (`L >= N`), a rerun's array waits for their arrays with
/// `--dependency=afterany` (Slurm releases it with no drover process, so `--no-wait` is
/// enough) and starts only once they have ended.
#[test]
fn a_rerun_waits_for_older_runs_that_fill_the_throttle() {
    slurm_up();
    let tmp = tempfile::tempdir().expect("tempdir");
    let sweep = tmp.path().join("s.toml");
    let write = |seeds: &str| write_throttled_sweep(&sweep, "after", 200_000, 1, seeds);
    write("[1]");
    let results = tmp.path().join("r");
    run_ok(drover().arg("run").arg(&sweep).arg("--results").arg(&results).arg("--no-wait"));
    wait_until("the first run running", Duration::from_secs(60), || states(&status_json(&results)) == ["running"]);
    let first = submitted_jobs(&results)[0].clone();
    let name = sweep_job_name(&results).expect("job name");

    write("[1, 2, 3]");
    let out = run_ok(drover().arg("run").arg(&sweep).arg("--results").arg(&results).arg("--no-wait"));
    assert!(
        text(&out).contains(&format!("1 run of earlier submissions still queued or running fills the sweep's throttle: the new runs wait for them (array {first})")),
        "{}",
        text(&out)
    );
    assert!(!text(&out).contains("--no-wait no drover process raises"), "Slurm releases it by itself: {}", text(&out));
    let second = submitted_jobs(&results)[1].clone();
    let shown = show_job(&second);
    assert!(shown.contains(&format!("Dependency=afterany:{first}")), "{shown}");
    let intents = ledger_kinds(&results, "intent");
    assert_eq!((intents[1]["throttle"].as_u64(), intents[1]["raise_to"].as_u64()), (Some(1), None), "{intents:?}");

    // Until the first run ends, none of the new ones runs; then they all complete, one at a time.
    let t0 = Instant::now();
    loop {
        let now = states(&status_json(&results));
        let running = running_tasks(&name);
        assert!(running <= 1, "the throttle is 1: {now:?}");
        if now[0] == "running" {
            assert!(now[1..].iter().all(|s| s == "pending"), "the new runs wait for the old one: {now:?}");
        }
        if now == ["done"; 3] {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(120), "timed out waiting for every run to complete: {now:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(ledger_kinds(&results, "intent").len(), 2, "nothing resubmitted");
}

/// A job wrapper: a training job (`--spec`) waits until `<control>/<run id>` or `<control>/all`
/// exists (while `<control>` does, two minutes at most, so a failed test leaves nothing queued
/// for long), then trains; anything else (the plugin checks before submission) goes straight
/// to drover-job.
fn held_job_bin(dir: &Path, control: &Path) -> PathBuf {
    let wrapper = dir.join("held-drover-job");
    write_executable(
        &wrapper,
        &format!(
            "#!/bin/sh\ncase \"$*\" in *--spec*) ;; *) exec '{job}' \"$@\";; esac\n\
             out=''; prev=''\nfor a in \"$@\"; do [ \"$prev\" = --out ] && out=\"$a\"; prev=\"$a\"; done\n\
             id=$(basename \"$out\"); n=0\n\
             while [ -d '{control}' ] && [ ! -e '{control}'/\"$id\" ] && [ ! -e '{control}/all' ] && [ $n -lt 1200 ]; do sleep 0.1; n=$((n + 1)); done\n\
             exec '{job}' \"$@\"\n",
            control = control.display(),
            job = artifact("drover-job").display()
        ),
    );
    wrapper
}

/// The control folder of runs held by `held_job_bin` in `dir`, the guard that releases them
/// all when the test ends, and the wrapper to run as `DROVER_JOB_BIN`.
fn held_runs(dir: &Path) -> (PathBuf, ReleaseAll, PathBuf) {
    let control = dir.join("control");
    std::fs::create_dir_all(&control).expect("mkdir");
    let job = held_job_bin(dir, &control);
    (control.clone(), ReleaseAll(control), job)
}

/// Releases every held run when dropped, so a failing test leaves no job waiting.
struct ReleaseAll(PathBuf);

impl Drop for ReleaseAll {
    fn drop(&mut self) {
        let _ = std::fs::write(self.0.join("all"), "");
    }
}

/// A `drover run` child, killed when dropped unless it has ended (a failing test's results
/// directory goes away with it).
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Running tasks of array `job`.
fn running_in(job: &str) -> usize {
    let out = Command::new("squeue").args(["--noheader", "--array", "--states=RUNNING", "--format=%F", "--jobs", job]).output().expect("squeue");
    String::from_utf8_lossy(&out.stdout).lines().filter(|l| l.trim() == job).count()
}

/// Issue (slurm-lift): older runs fill the throttle (2), so a rerun's array waits with
/// `--dependency=afterany`; as soon as one older run ends, the waiting `drover run` lifts it
/// (throttle 1, then the dependency cleared) while the other older run still runs, raises it
/// to 2 once that one ends too, and the sweep never runs more than 2 at once. The runs are held
/// by a wrapper until the test releases them, so the order of events is the test's.
#[test]
fn a_waiting_array_starts_as_soon_as_an_older_run_frees_a_slot() {
    // `drover status` runs in a loop throughout (`status_watcher`), so the lifts and raises
    // are shared between two processes, as when a user watches the sweep.
    slurm_up();
    let tmp = tempfile::tempdir().expect("tempdir");
    let (control, _release, job) = held_runs(tmp.path());
    let release = |run: &str| std::fs::write(control.join(run), "").expect("release");
    let sweep = tmp.path().join("s.toml");
    let write = |seeds: &str| write_throttled_sweep(&sweep, "lift", 2048, 2, seeds);
    let results = tmp.path().join("r");
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = most_running(results.clone(), done.clone());
    // A second lifter beside the waiting `drover run` below: every lift and raise may come
    // from either process, and the throttle must hold all the same.
    let watcher = status_watcher(results.clone(), done.clone());

    write("[1, 2]");
    run_ok(drover().arg("run").arg(&sweep).arg("--results").arg(&results).arg("--no-wait").env("DROVER_JOB_BIN", &job));
    let first = submitted_jobs(&results)[0].clone();
    let older: Vec<String> =
        ledger_kinds(&results, "intent")[0]["runs"].as_array().expect("runs").iter().map(|r| r.as_str().expect("run id").to_string()).collect();
    wait_until("both older runs running", Duration::from_secs(60), || running_in(&first) == 2);

    write("[1, 2, 3, 4]");
    let log = tmp.path().join("rerun.log");
    let mut rerun = KillOnDrop(
        drover()
            .arg("run")
            .arg(&sweep)
            .arg("--results")
            .arg(&results)
            .env("DROVER_JOB_BIN", &job)
            .stdout(std::fs::File::create(&log).expect("log"))
            .stderr(std::fs::File::create(tmp.path().join("rerun.err")).expect("log"))
            .spawn()
            .expect("drover run"),
    );
    let said = || format!("{}{}", std::fs::read_to_string(&log).unwrap_or_default(), std::fs::read_to_string(tmp.path().join("rerun.err")).unwrap_or_default());
    wait_until("the rerun's array submitted", Duration::from_secs(60), || submitted_jobs(&results).len() == 2);
    let second = submitted_jobs(&results)[1].clone();
    let shown = show_job(&second);
    assert!(shown.contains(&format!("Dependency=afterany:{first}")), "both older runs fill the throttle: {shown}");
    // Slurm's scheduler (sched_interval = 2 s) and the rerun's polls (0.5 s) get a few passes.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(running_in(&second), 0, "no slot is free yet: {}", show_job(&second));
    assert!(ledger_kinds(&results, "lifted").is_empty(), "{:?}", ledger(&results));

    // One older run ends: the new array starts in its slot while the other older run goes on.
    release(&older[0]);
    wait_until("a new run in the freed slot", Duration::from_secs(60), || running_in(&second) == 1);
    assert_eq!(running_in(&first), 1, "the last older run still runs");
    // Both lifters may have recorded the lift; they computed the same one.
    let lifted = ledger_kinds(&results, "lifted");
    assert!(!lifted.is_empty(), "{:?}", ledger(&results));
    for l in &lifted {
        assert_eq!((l["throttle"].as_u64(), l["raise_to"].as_u64()), (Some(1), Some(2)), "{lifted:?}");
    }
    let shown = show_job(&second);
    assert!(shown.contains("ArrayTaskThrottle=1") && shown.contains("Dependency=(null)"), "{shown}");
    let table = String::from_utf8_lossy(&run_ok(drover().arg("status").arg(&results)).stdout).into_owned();
    assert!(!table.contains("waiting for a job it depends on"), "a lifted array waits for no job: {table}");

    // The other older run ends: the new array is raised to the whole throttle.
    release(&older[1]);
    wait_until("the new array raised to 2", Duration::from_secs(60), || array_throttle(&second) == Some(2));
    release("all");
    wait_until("the rerun to finish", Duration::from_secs(120), || rerun.0.try_wait().expect("wait").is_some());
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let most = sampler.join().expect("sampler");
    let watched = watcher.join().expect("watcher");
    assert!(watched >= 10, "`drover status` ran beside the waiting `drover run` ({watched} calls)");
    assert!(rerun.0.wait().expect("status").success(), "{}", said());
    assert_eq!(states(&status_json(&results)), ["done"; 4], "{}", said());
    assert_eq!(most, 2, "never more than the throttle at once, with two lifters: {}", said());
    // The watcher found the rerun's array while its `sbatch` was in flight, at times; the
    // waiting `drover run` alone records it.
    assert_eq!(ledger_kinds(&results, "submitted").len(), 2, "one record per submission: {:?}", ledger(&results));
    assert!(
        said().contains(&format!(
            "the new runs wait for them (array {first}); Slurm starts them once those end, or this `drover run` as soon as one ends and frees a slot"
        )),
        "{}",
        said()
    );
}

/// A stand-in `sbatch` in front of the real one that enforces a submit limit of `limit` queued
/// tasks for the script's job name (as a QOS `MaxSubmitJobsPerUser` would for the user: every
/// array task counts), refusing with Slurm's own words. Returns the PATH to run drover with.
fn submit_limited_sbatch(dir: &Path, limit: usize) -> String {
    stand_in(dir, "sbatch", |real| {
        format!(
            "#!/bin/sh\nfor a in \"$@\"; do script=\"$a\"; done\n\
             name=$(sed -n 's/^#SBATCH --job-name=//p' \"$script\")\n\
             last=$(sed -n 's/^#SBATCH --array=0-\\([0-9]*\\).*/\\1/p' \"$script\")\n\
             queued=$(squeue --noheader --array --name=\"$name\" --format=%i | wc -l)\n\
             if [ $((queued + last + 1)) -gt {limit} ]; then\n\
             echo 'sbatch: error: QOSMaxSubmitJobPerUserLimit' >&2\n\
             echo \"sbatch: error: Batch job submission failed: Job violates accounting/QOS policy (job submit limit, user's size and/or time limits)\" >&2\n\
             exit 1\nfi\nexec '{real}' \"$@\"\n"
        )
    })
}

/// A cluster's submit limit (`MaxSubmitJobsPerUser`, every array task counting) is
/// back-pressure, not a bad setting: `drover run --no-wait` submits what fits, names the limit
/// and exits 6, `drover status` says why the rest waits, and a waiting `drover run` submits the
/// rest as jobs end until every run is done.
#[test]
fn a_submit_limit_holds_runs_back_until_jobs_end_instead_of_ending_the_sweep() {
    slurm_up();
    let tmp = tempfile::tempdir().expect("tempdir");
    let path = submit_limited_sbatch(tmp.path(), 2);
    let sweep = short_sweep(tmp.path(), "limited", "[1, 2, 3, 4, 5]", "");
    let results = tmp.path().join("r");
    let out = drover().arg("run").arg(&sweep).arg("--results").arg(&results).arg("--no-wait").env("PATH", &path).output().expect("drover run");
    assert_eq!(out.status.code(), Some(6), "{}", text(&out));
    assert!(text(&out).contains("Slurm's submit limit (QOSMaxSubmitJobPerUserLimit) took 2 of 5 runs; the other 3 are not submitted"), "{}", text(&out));
    assert_eq!(submitted_jobs(&results).len(), 1, "one array of the two that fit: {:?}", ledger(&results));
    assert!(!ledger_kinds(&results, "refused").is_empty(), "{:?}", ledger(&results));
    let status = status_json(&results);
    let waiting: Vec<&Value> = status["runs"].as_array().expect("runs").iter().filter(|r| r["state"] == "not_submitted").collect();
    assert_eq!(waiting.len(), 3, "{status}");
    for r in waiting {
        let reason = r["reason"].as_str().unwrap_or_default();
        assert!(reason.contains("Slurm's submit limit (QOSMaxSubmitJobPerUserLimit) keeps it out"), "{r}");
        assert!(r["seed"].is_u64(), "a held-back run keeps its seed: {r}");
    }

    let out = drover().arg("run").arg(&sweep).arg("--results").arg(&results).env("PATH", &path).output().expect("drover run");
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(states(&status_json(&results)), ["done"; 5], "{}", text(&out));
    assert!(text(&out).contains("as room freed under Slurm's submit limit"), "{}", text(&out));
    assert!(submitted_jobs(&results).len() >= 3, "the rest went in pieces as jobs ended: {:?}", ledger(&results));
}

/// A sweep whose every attempt fails before training (here a `drover-job` that cannot start)
/// is stopped after `slurm.fail_fast` attempts instead of retrying every run: the waiting
/// `drover run` cancels the queued tasks, says why with the failure's reason and log, and
/// exits 4; `drover status` tells the cancelled runs from a `drover cancel`; once the cause is
/// fixed, `drover run` again finishes the sweep.
#[test]
fn a_sweep_failing_before_any_training_is_stopped_not_retried_run_by_run() {
    slurm_up();
    let tmp = tempfile::tempdir().expect("tempdir");
    let starts = tmp.path().join("starts");
    let broken = tmp.path().join("broken-drover-job");
    write_executable(
        &broken,
        &format!(
            "#!/bin/sh\ncase \"$*\" in *--spec*) ;; *) exec '{job}' \"$@\";; esac\n\
             echo start >> '{starts}'\necho 'error while loading shared libraries: libmissing.so: cannot open shared object file' >&2\nexit 127\n",
            job = artifact("drover-job").display(),
            starts = starts.display()
        ),
    );
    let sweep = short_sweep(tmp.path(), "broken", "{ count = 8, start = 1 }", "throttle = 2\nmax_retries = 2\nfail_fast = 3");
    let results = tmp.path().join("r");
    let out = drover().arg("run").arg(&sweep).arg("--results").arg(&results).env("DROVER_JOB_BIN", &broken).output().expect("drover run");
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    let said = text(&out);
    assert!(said.contains("drover: stopping the sweep: ") && said.contains("failed before training one iteration"), "{said}");
    assert!(said.contains("ends: error while loading shared libraries: libmissing.so"), "the failure and its log: {said}");
    let started = std::fs::read_to_string(&starts).unwrap_or_default().lines().count();
    assert!((3..=8).contains(&started), "{started} attempts started of the 24 that retrying every run would make: {said}");
    let status = status_json(&results);
    let runs = status["runs"].as_array().expect("runs");
    let stopped: Vec<&Value> = runs.iter().filter(|r| r["state"] == "cancelled").collect();
    assert!(!stopped.is_empty(), "{status}");
    for r in &stopped {
        let reason = r["reason"].as_str().unwrap_or_default();
        assert!(reason.contains("cancelled while queued by `drover run`: ") && !reason.contains("`drover cancel`"), "{r}");
    }
    assert!(runs.iter().all(|r| r["state"] == "cancelled" || r["state"] == "failed"), "{status}");

    let out = drover().arg("run").arg(&sweep).arg("--results").arg(&results).output().expect("drover run");
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(states(&status_json(&results)), ["done"; 8], "{}", text(&out));
}

/// Short runs packed two to an array task (`slurm.runs_per_task = 2`, 3 runs: 2 tasks, the
/// last with one run): a task trains its runs one after another; `drover status` follows each
/// run by its own files (the second waits its turn while the first trains). The time-limit
/// signal during the task's second run checkpoints it and requeues the task; the next start
/// skips the completed first run and resumes the second, whose metrics have no gap and no
/// duplicate.
#[test]
fn runs_packed_in_one_task_train_in_turn_and_resume_after_a_requeue() {
    slurm_up();
    let tmp = tempfile::tempdir().expect("tempdir");
    let sweep = tmp.path().join("s.toml");
    std::fs::write(
        &sweep,
        "name = \"packed\"\nbackend = \"slurm\"\n[run]\nenv = \"CartPole-v1\"\nplugin = \"ppo\"\nnum_envs = 8\nnum_steps = 128\n\
         total_steps = 600000\n[sweep]\nseeds = [1, 2, 3]\n[slurm]\nruns_per_task = 2\npoll_seconds = 0.5\n",
    )
    .expect("sweep");
    let results = tmp.path().join("r");
    run_ok(drover().arg("run").arg(&sweep).arg("--results").arg(&results).arg("--no-wait"));
    let job = submitted_jobs(&results)[0].clone();
    let intent = &ledger_kinds(&results, "intent")[0];
    let packed = ledger_kinds(&results, "packed");
    assert_eq!((packed.len(), &packed[0]["runs_per_task"]), (1, &Value::from(2)), "{packed:?}");
    let order: Vec<String> = intent["runs"].as_array().expect("runs").iter().map(|r| r.as_str().expect("id").to_string()).collect();
    let (first, second) = (results.join("runs").join(&order[0]), results.join("runs").join(&order[1]));
    let by_id = |status: &Value, id: &str| status["runs"].as_array().expect("runs").iter().find(|r| r["run_id"] == id).cloned().expect("listed");

    wait_until("the task's first run training", Duration::from_secs(60), || metrics(&first).len() >= 2);
    let status = status_json(&results);
    let waiting = by_id(&status, &order[1]);
    if waiting["state"] == "pending" {
        assert!(waiting["reason"].as_str().unwrap_or_default().starts_with("waiting its turn"), "{waiting}");
        assert_eq!(waiting["slurm_job"], format!("{job}_0"), "{waiting}");
    }
    assert_eq!(by_id(&status, &order[2])["slurm_job"], format!("{job}_1"), "{status}");

    wait_until("the task's second run training", Duration::from_secs(120), || metrics(&second).len() >= 10);
    assert_eq!(by_id(&status_json(&results), &order[0])["state"], "done");
    run_ok(Command::new("scancel").args(["--batch", "--signal=USR1", &format!("{job}_0")]));
    wait_until("the second run's second attempt", Duration::from_secs(120), || second.join("attempt-2.stdout.log").exists());
    wait_until("every run done", Duration::from_secs(300), || states(&status_json(&results)) == ["done"; 3]);

    assert!(!first.join("attempt-2.stdout.log").exists(), "the completed first run is not trained again");
    let steps: Vec<i64> = metrics(&second).iter().map(|r| r["global_step"].as_i64().expect("step")).collect();
    assert_eq!(steps, (1..=600_000 / 1024).map(|i| i * 1024).collect::<Vec<i64>>(), "no gap, no duplicate");
    assert_eq!(by_id(&status_json(&results), &order[1])["time_limit_requeues"], 1);
    let in_task_0 = |run: &Path| {
        let text = std::fs::read_to_string(run.join("attempts.jsonl")).expect("attempts");
        text.lines().all(|l| serde_json::from_str::<Value>(l).expect("attempt")["array_task_id"] == "0")
    };
    assert!(in_task_0(&first) && in_task_0(&second), "both trained by task 0");
}

/// `sbatch --parsable --wrap=<command>`: a job of the user's own, not drover's; its id.
fn users_job(command: &str) -> String {
    let out = run_ok(Command::new("sbatch").args(["--parsable", "--output=/dev/null", "--job-name=users-own", &format!("--wrap={command}")]));
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(!id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()), "{id}");
    id
}

/// `slurm.after`: the sweep waits for a job of the user's own (a data-preparation step, say):
/// none of its runs starts while that job runs, `drover status` says what they wait for, and
/// they train once it has succeeded. A job that failed can never satisfy `afterok`: the waiting
/// `drover run` cancels the queued runs and says why instead of waiting forever, and the next
/// `drover run` without the dependency trains them; a job that has already failed when the
/// sweep is submitted is refused before anything is submitted (exit code 3).
#[test]
fn a_sweep_after_a_users_job_waits_for_it_and_stops_if_it_can_never_start() {
    slurm_up();
    let tmp = tempfile::tempdir().expect("tempdir");
    // An id Slurm does not know would count as met at once: refused before anything is submitted.
    let typo = short_sweep(tmp.path(), "after-typo", "[1]", "after = 4000000000");
    let out = drover().arg("run").arg(&typo).arg("--results").arg(tmp.path().join("typo")).output().expect("drover run");
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(text(&out).contains("key `slurm.after`") && text(&out).contains("Slurm does not know job `4000000000`"), "{}", text(&out));
    assert!(!tmp.path().join("typo/slurm/submissions.jsonl").exists(), "nothing submitted");

    let prep = users_job("sleep 12");
    let sweep = short_sweep(tmp.path(), "after-prep", "[1, 2]", &format!("after = \"afterok:{prep}\"\nthrottle = 1"));
    let results = tmp.path().join("r");
    run_ok(drover().arg("run").arg(&sweep).arg("--results").arg(&results).arg("--no-wait"));
    let script = std::fs::read_to_string(results.join("slurm/array-0.sbatch")).expect("script");
    assert!(script.contains(&format!("#SBATCH --dependency=afterok:{prep}\n")), "{script}");
    wait_until("Slurm to list the sweep as waiting on the job", Duration::from_secs(30), || {
        status_json(&results)["runs"].as_array().expect("runs").iter().all(|r| r["reason"].as_str().is_some_and(|w| w.contains(&format!("waits for `afterok:{prep}` (`slurm.after`)"))))
    });
    let prep_live = || ["PENDING", "RUNNING"].iter().any(|s| squeue_names("users-own").contains(&format!("{prep} {s}")));
    assert!(prep_live(), "{}", squeue_names("users-own"));
    assert!(run_dirs(&results).iter().all(|d| !d.join("attempts.jsonl").exists()), "no run starts before the job it waits for ends");
    let out = drover().arg("run").arg(&sweep).arg("--results").arg(&results).output().expect("drover run");
    assert!(out.status.success(), "{}", text(&out));
    assert!(!prep_live(), "the sweep ended after the job it waited for");
    assert_eq!(states(&status_json(&results)), ["done"; 2], "{}", text(&out));

    // Still running when the sweep is submitted: the waiting `drover run` meets its failure.
    let failed = users_job("sleep 6; exit 3");
    let sweep = short_sweep(tmp.path(), "after-failed", "[1, 2, 3]", &format!("after = {failed}\nthrottle = 2"));
    let results = tmp.path().join("r2");
    let out = drover().arg("run").arg(&sweep).arg("--results").arg(&results).output().expect("drover run");
    let said = text(&out);
    assert!(!out.status.success(), "{said}");
    assert!(said.contains(&format!("drover: stopping the sweep: its dependency `afterok:{failed}` (`slurm.after`) can never hold")), "{said}");
    let status = status_json(&results);
    for r in status["runs"].as_array().expect("runs") {
        assert_eq!(r["state"], "cancelled", "{status}");
        assert!(r["reason"].as_str().unwrap_or_default().contains("can never hold"), "{r}");
    }
    let out = drover().arg("run").arg(&sweep).arg("--results").arg(&results).args(["--set", "slurm.after=[]"]).output().expect("drover run");
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(states(&status_json(&results)), ["done"; 3], "{}", text(&out));

    // Already failed when the sweep is submitted: `afterok` can never hold, refused up front.
    let ended = users_job("exit 3");
    wait_until("Slurm to list the job failed", Duration::from_secs(25), || squeue_names("users-own").contains(&format!("{ended} FAILED")));
    let after = format!("slurm.after={ended}");
    let out = drover().arg("run").arg(&sweep).arg("--results").arg(tmp.path().join("r3")).args(["--set", &after]).output().expect("drover run");
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(text(&out).contains("key `slurm.after`") && text(&out).contains(&format!("`afterok:{ended}` can never hold: job `{ended}` ended FAILED")), "{}", text(&out));
    assert!(!tmp.path().join("r3/slurm/submissions.jsonl").exists(), "nothing submitted");
}

/// `slurm.after` through a lift: a rerun's array waits both on the two older runs that fill the
/// throttle and on the user's job; when one older run ends while the user's job still runs,
/// `drover status` lifts the throttle's part into the freed slot and keeps the user's, so
/// nothing starts before that job has ended, and then the sweep finishes.
#[test]
fn a_lift_keeps_the_users_dependency_while_its_job_runs() {
    slurm_up();
    let tmp = tempfile::tempdir().expect("tempdir");
    let (control, _release, job) = held_runs(tmp.path());
    let (sweep, results) = (tmp.path().join("s.toml"), tmp.path().join("r"));
    write_throttled_sweep(&sweep, "lift-after", 2048, 2, "[1, 2]");
    run_ok(drover().arg("run").arg(&sweep).arg("--results").arg(&results).arg("--no-wait").env("DROVER_JOB_BIN", &job));
    let first = submitted_jobs(&results)[0].clone();
    let older = ledger_kinds(&results, "intent")[0]["runs"][0].as_str().expect("run id").to_string();
    wait_until("the older runs running", Duration::from_secs(60), || running_in(&first) == 2);

    let prep = users_job("sleep 40");
    write_throttled_sweep(&sweep, "lift-after", 2048, 2, "[1, 2, 3]");
    let after = format!("slurm.after={prep}");
    run_ok(drover().arg("run").arg(&sweep).arg("--results").arg(&results).args(["--no-wait", "--set", &after]).env("DROVER_JOB_BIN", &job));
    let second = submitted_jobs(&results)[1].clone();
    let shown = show_job(&second);
    assert!(shown.contains(&format!("Dependency=afterok:{prep}(unfulfilled),afterany:{first}_*(unfulfilled)")), "{shown}");

    std::fs::write(control.join(&older), "").expect("release");
    wait_until("the lift", Duration::from_secs(60), || {
        run_ok(drover().arg("status").arg(&results));
        !ledger_kinds(&results, "lifted").is_empty() && !show_job(&second).contains("afterany")
    });
    assert_eq!(running_in(&first), 1, "lifted while the other older run still runs");
    let prep_live = || ["PENDING", "RUNNING"].iter().any(|s| squeue_names("users-own").contains(&format!("{prep} {s}")));
    assert!(prep_live(), "the test needs the user's job still running here");
    let shown = show_job(&second);
    assert!(shown.contains(&format!("Dependency=afterok:{prep}")) && shown.contains("ArrayTaskThrottle=1"), "the user's part is kept: {shown}");
    assert_eq!(running_in(&second), 0, "{shown}");
    let status = status_json(&results);
    let waiting = status["runs"].as_array().expect("runs").iter().find(|r| r["state"] == "pending").cloned().expect("a pending run");
    assert!(waiting["reason"].as_str().unwrap_or_default().contains(&format!("waits for `afterok:{prep}` (`slurm.after`)")), "{waiting}");

    std::fs::write(control.join("all"), "").expect("release");
    let out = drover().arg("run").arg(&sweep).arg("--results").arg(&results).args(["--set", &after]).env("DROVER_JOB_BIN", &job).output().expect("drover run");
    assert!(out.status.success(), "{}", text(&out));
    assert!(!prep_live(), "the new run trained after the user's job");
    assert_eq!(states(&status_json(&results)), ["done"; 3], "{}", text(&out));
}

/// Review finding 1: Slurm expands `%` patterns over a task's whole output path, so a
/// results path holding `%j` or `%%` named a log folder that does not exist and every task
/// failed before it started. drover gives sbatch the absolute output path with the results
/// path's own `%` doubled: such a sweep completes, its logs where they belong. A `\`, which
/// Slurm cannot be given, is refused before anything is written.
#[test]
fn a_results_path_with_percent_signs_completes_and_a_backslash_is_refused_up_front() {
    slurm_up();
    let tmp = tempfile::tempdir().expect("tempdir");
    let sweep = short_sweep(tmp.path(), "pct", "[1, 2]", "fail_fast = 1\nmax_retries = 0\n");
    let results = tmp.path().join("exp_%j x%%y %A");
    let out = run_ok(drover().arg("run").arg(&sweep).arg("--results").arg(&results));
    assert!(text(&out).contains("2 submitted in"), "{}", text(&out));
    assert_eq!(states(&status_json(&results)), vec!["done"; 2]);
    let job = &submitted_jobs(&results)[0];
    for task in 0..2 {
        let log = results.join(format!("slurm/logs/{job}_{task}.out"));
        assert!(log.is_file(), "Slurm's output of task {task} at {}", log.display());
    }

    let backslash = tmp.path().join("back\\slash res");
    let out = drover().arg("run").arg(&sweep).arg("--results").arg(&backslash).output().expect("run");
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(text(&out).contains("key `results_dir`") && text(&out).contains("holds a `\\`"), "{}", text(&out));
    assert!(!backslash.exists(), "nothing written: {}", text(&out));
}

/// Review finding 2: Slurm ranks `SBATCH_*` above the batch script's `#SBATCH` lines and adds
/// `SQUEUE_*`/`SCANCEL_*` to drover's questions. With `SBATCH_JOB_NAME` set drover lost its
/// live jobs (reported cancelled, then they ran anyway), with `SQUEUE_PARTITION` a rerun
/// submitted live runs twice, with `SCANCEL_STATE` `drover cancel` cancelled nothing. drover's
/// Slurm commands now run without them, and say so once.
#[test]
fn slurms_input_variables_do_not_override_drovers_own_options() {
    slurm_up();
    let tmp = tempfile::tempdir().expect("tempdir");
    let sweep = short_sweep(tmp.path(), "envvars", "[1, 2]", "");
    let results = tmp.path().join("r");
    let hostile = [("SBATCH_JOB_NAME", "interactive"), ("SBATCH_NO_REQUEUE", "1"), ("SQUEUE_PARTITION", "nopart"), ("SCANCEL_STATE", "RUNNING")];
    let out = run_ok(drover().arg("run").arg(&sweep).arg("--results").arg(&results).envs(hostile));
    assert!(text(&out).contains("2 submitted in"), "{}", text(&out));
    assert_eq!(text(&out).matches("ignoring `SBATCH_JOB_NAME`, `SBATCH_NO_REQUEUE`").count(), 1, "warned once: {}", text(&out));
    assert_eq!(states(&status_json(&results)), vec!["done"; 2]);
    let intent = &ledger_kinds(&results, "intent")[0];
    assert!(show_job(&submitted_jobs(&results)[0]).contains("Requeue=1"), "drover's --requeue holds");
    assert_ne!(intent["job_name"], "interactive");

    // Held jobs: `drover status` and a rerun see them with SQUEUE_PARTITION set, and
    // `drover cancel` with SCANCEL_STATE set cancels them.
    let held = tmp.path().join("held");
    let hold = ["--set", "slurm.extra=[\"--hold\"]", "--no-wait"];
    run_ok(drover().arg("run").arg(&sweep).arg("--results").arg(&held).args(hold).envs(hostile));
    let status = run_ok(drover().arg("status").arg(&held).arg("--json").envs(hostile));
    let status: Value = serde_json::from_slice(&status.stdout).expect("json");
    assert_eq!(states(&status), vec!["pending"; 2], "{status}");
    let again = run_ok(drover().arg("run").arg(&sweep).arg("--results").arg(&held).args(hold).envs(hostile));
    assert!(text(&again).contains("2 re-attached, 0 submitted"), "{}", text(&again));
    assert_eq!(ledger_kinds(&held, "intent").len(), 1, "nothing submitted twice");
    run_ok(drover().arg("cancel").arg(&held).envs(hostile));
    wait_until("the held runs cancelled", Duration::from_secs(60), || states(&status_json(&held)).iter().all(|s| s == "cancelled"));
}
