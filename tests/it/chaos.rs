//! Issue 12 item 2: crash consistency of the local backend under a seeded chaos test (SIGKILL of `drover run` and of jobs).
//!
//! The seed is printed; `DROVER_CHAOS_SEED=<n>` replays a run. Kills land at random moments
//! (a delay drawn from the seed; what the processes were doing then depends on the machine), so
//! a failure names the seed and the kill log to start from.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use drover_tests::{drover, read_json, run_dirs, run_ok, write_sweep};

/// Kills before the sweep is run to completion.
const KILLS: u32 = 15;
/// Starts of `drover run` allowed before the test gives up reaching `KILLS` (the sweep may finish between kills).
const MAX_STARTS: u32 = 60;

/// splitmix64: a tiny, well-mixed generator, so the test needs no RNG crate.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn sweep(total_steps: u32) -> String {
    format!(
        r#"
name = "e2e-chaos"
max_parallel = 2
[run]
env = "CartPole-v1"
plugin = "ppo"
num_envs = 4
num_steps = 32
total_steps = {total_steps}
[sweep]
seeds = [1, 2, 3, 4, 5, 6]
"#
    )
}

/// `drover run` on `results`, with a private plugin-description cache.
fn drover_run(tmp: &Path, sweep_file: &Path, results: &Path) -> Command {
    let mut cmd = drover();
    cmd.env("DROVER_CACHE_DIR", tmp.join("cache")).arg("run").arg(sweep_file).arg("--results").arg(results);
    cmd
}

/// Pids of live `drover-job` processes working under `results` (found through /proc).
fn jobs_under(results: &Path) -> Vec<i32> {
    let needle = results.to_string_lossy().into_owned();
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    let mut pids: Vec<i32> = entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else { return false };
            let args: Vec<String> = cmdline.split(|&b| b == 0).map(|a| String::from_utf8_lossy(a).into_owned()).collect();
            args.first().is_some_and(|a| a.ends_with("drover-job")) && args.iter().any(|a| a.contains(&needle))
        })
        .collect();
    pids.sort_unstable();
    pids
}

fn sigkill(pid: i32) -> bool {
    // SAFETY: kill(2) with a positive pid and a signal number; no memory is involved.
    unsafe { libc::kill(pid, libc::SIGKILL) == 0 }
}

/// Waits for `child` to exit, for at most `limit`; kills it when the limit passes.
fn wait_bounded(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("wait for drover") {
            return status;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            panic!("`drover run` did not end within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The `iteration` column of a Parquet metrics file.
fn parquet_iterations(path: &Path) -> Vec<i64> {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    use parquet::record::RowAccessor;
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("open `{}`: {e}", path.display()));
    let reader = SerializedFileReader::new(file).unwrap_or_else(|e| panic!("`{}` is not whole Parquet: {e}", path.display()));
    let index = reader
        .metadata()
        .file_metadata()
        .schema_descr()
        .columns()
        .iter()
        .position(|c| c.name() == "iteration")
        .expect("an iteration column");
    reader
        .get_row_iter(None)
        .expect("rows")
        .map(|row| row.expect("row").get_long(index).expect("iteration is i64"))
        .collect()
}

/// What one completed run directory says, checked against itself: `None` when whole and
/// consistent, else the first problem found (a duplicate or missing iteration, a row count
/// that disagrees with `summary.json`, a marker over missing files).
fn run_problem(dir: &Path) -> Option<String> {
    let summary = read_json(&dir.join("summary.json"));
    let Some(n) = summary["iterations"].as_i64() else { return Some(format!("summary.json without iterations: {summary}")) };
    let expected: Vec<i64> = (1..=n).collect();
    let jsonl = match std::fs::read_to_string(dir.join("metrics.jsonl")) {
        Ok(text) => text,
        Err(e) => return Some(format!("metrics.jsonl: {e}")),
    };
    let from_jsonl: Vec<i64> = jsonl
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).ok().and_then(|v| v["iteration"].as_i64()).unwrap_or(-1))
        .collect();
    if from_jsonl != expected {
        return Some(format!("metrics.jsonl iterations {from_jsonl:?}, summary says {n}"));
    }
    let from_parquet = parquet_iterations(&dir.join("metrics.parquet"));
    if from_parquet != expected {
        return Some(format!("metrics.parquet iterations {from_parquet:?}, summary says {n}"));
    }
    if summary["run_id"].as_str() != dir.file_name().and_then(|s| s.to_str()) {
        return Some(format!("summary.json belongs to run {}", summary["run_id"]));
    }
    None
}

/// Completed `exit.json` markers of a run: the live one and any in archived attempts. More
/// than one means a run was done twice (a completed run archived, or an orphan finishing
/// beside its relaunch).
fn completed_markers(dir: &Path) -> usize {
    let is_completed = |p: PathBuf| p.is_file() && read_json(&p)["status"] == "completed";
    let archived = std::fs::read_dir(dir)
        .expect("run dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir() && p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("attempt-")))
        .filter(|p| is_completed(p.join("exit.json")))
        .count();
    archived + usize::from(is_completed(dir.join("exit.json")))
}

#[test]
fn sweep_survives_random_sigkills_of_drover_and_jobs_with_every_run_done_exactly_once() {
    let seed = std::env::var("DROVER_CHAOS_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(20_260_412_u64);
    println!("chaos seed {seed} (replay with DROVER_CHAOS_SEED={seed})");
    let mut rng = Rng(seed);
    let tmp = tempfile::tempdir().expect("tempdir");
    let tmp_path = tmp.path().canonicalize().expect("canonical tmp");
    // Long enough for `KILLS` kills: a killed `drover run` takes its jobs down with SIGTERM, and
    // they checkpoint, so the next start resumes them instead of starting over.
    let sweep_file = write_sweep(&tmp_path, &sweep(524_288));
    let results = tmp_path.join("results");
    let started = Instant::now();

    let (mut kills, mut drover_kills, mut job_kills, mut starts) = (0u32, 0u32, 0u32, 0u32);
    let mut log = Vec::new();
    while kills < KILLS && starts < MAX_STARTS {
        let mut child = drover_run(&tmp_path, &sweep_file, &results).stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("spawn drover");
        starts += 1;
        // Kill jobs under this `drover run` until it is killed itself or ends on its own.
        loop {
            let delay = Duration::from_millis(50 + rng.below(1_500));
            let kill_drover = rng.below(2) == 0;
            let pick = rng.next();
            std::thread::sleep(delay);
            if child.try_wait().expect("try_wait").is_some() {
                log.push(format!("start {starts}: drover ended on its own"));
                break;
            }
            if kills >= KILLS {
                // Enough chaos: let this run end by itself (the final check reruns anyway).
                wait_bounded(&mut child, Duration::from_secs(120));
                break;
            }
            let jobs = jobs_under(&results);
            if kill_drover || jobs.is_empty() {
                if sigkill(child.id() as i32) {
                    kills += 1;
                    drover_kills += 1;
                    log.push(format!("start {starts}: SIGKILL drover after {delay:?}"));
                }
                wait_bounded(&mut child, Duration::from_secs(60));
                break;
            }
            let pid = jobs[(pick % jobs.len() as u64) as usize];
            if sigkill(pid) {
                kills += 1;
                job_kills += 1;
                log.push(format!("start {starts}: SIGKILL job {pid} after {delay:?}"));
            }
        }
    }
    println!("{}", log.join("\n"));
    assert_eq!(kills, KILLS, "the sweep kept finishing before the kill (seed {seed}): {log:#?}");

    // Run to completion. Jobs of the last killed `drover run` may still be stopping: the
    // next run waits for their locks rather than writing beside them.
    let out = run_ok(&mut drover_run(&tmp_path, &sweep_file, &results));
    // Every start after the first resumed the sweep, and so does this last one.
    let resumes = starts;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("0 failed"), "{stderr}");

    let dirs = run_dirs(&results);
    assert_eq!(dirs.len(), 6, "{dirs:?}");
    let (mut lost, mut duplicates) = (0, 0);
    for dir in &dirs {
        let exit = read_json(&dir.join("exit.json"));
        if exit["status"] != "completed" {
            lost += 1;
            eprintln!("lost: {} ends {exit}", dir.display());
            continue;
        }
        if let Some(problem) = run_problem(dir) {
            duplicates += 1;
            eprintln!("inconsistent: {}: {problem}", dir.display());
        }
        let markers = completed_markers(dir);
        if markers != 1 {
            duplicates += 1;
            eprintln!("done {markers} times: {}", dir.display());
        }
        let leftovers: Vec<_> = std::fs::read_dir(dir)
            .expect("run dir")
            .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
            .filter(|n| n.ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty(), "half-written files beside a completed run in {}: {leftovers:?}", dir.display());
    }
    let analyzed = run_ok(drover().env("DROVER_CACHE_DIR", tmp_path.join("cache")).arg("analyze").arg(&results).args([
        "--reps",
        "100",
        "--band-reps",
        "100",
        "--no-plots",
    ]));
    let analyzed = String::from_utf8_lossy(&analyzed.stdout);
    println!(
        "kills {kills} (drover {drover_kills}, jobs {job_kills}), resumes {resumes}, runs lost {lost}, duplicates {duplicates} \
         (seed {seed}, {:.1} s)",
        started.elapsed().as_secs_f64()
    );
    assert_eq!((lost, duplicates), (0, 0), "seed {seed}; kill log: {log:#?}");
    assert!(analyzed.contains("6 runs analyzed (6 completed, 0 left out"), "{analyzed}");
}

/// Holds `<dir>/.job.lock` as a job would, until dropped.
struct HeldLock {
    _file: std::fs::File,
}

impl HeldLock {
    fn take(dir: &Path) -> Self {
        use std::io::Write;
        use std::os::fd::AsRawFd;
        let mut file = std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(true).open(dir.join(".job.lock")).expect("lock file");
        // SAFETY: flock on a descriptor we own; no memory is passed.
        assert_eq!(unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) }, 0, "lock free");
        file.write_all(format!("pid {}\n", std::process::id()).as_bytes()).expect("describe");
        HeldLock { _file: file }
    }
}

#[test]
fn a_run_still_running_elsewhere_is_neither_archived_nor_relaunched_until_its_lock_is_free() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let tmp_path = tmp.path().canonicalize().expect("canonical tmp");
    let sweep_file = write_sweep(&tmp_path, &sweep(1_024).replace("[1, 2, 3, 4, 5, 6]", "[1]"));
    let results = tmp_path.join("results");
    let dry = run_ok(drover_run(&tmp_path, &sweep_file, &results).arg("--dry-run"));
    let dry = String::from_utf8_lossy(&dry.stdout);
    let run_id = dry.lines().nth(1).and_then(|l| l.split_whitespace().next()).expect("a run id in the dry run").to_string();
    // What an orphan of a killed `drover run` leaves: a half-written run whose job still lives.
    let dir = results.join("runs").join(&run_id);
    std::fs::create_dir_all(&dir).expect("run dir");
    std::fs::write(dir.join("metrics.jsonl"), "{\"iteration\":1}\n").expect("partial metrics");
    let held = HeldLock::take(&dir);

    let out = drover_run(&tmp_path, &sweep_file, &results).env("DROVER_BUSY_WAIT_S", "0").output().expect("drover");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "a run left running elsewhere is not success: {stderr}");
    assert!(
        stderr.contains(&format!("busy: {run_id}: still running elsewhere (pid {})", std::process::id())),
        "{stderr}"
    );
    assert_eq!(std::fs::read_to_string(dir.join("metrics.jsonl")).expect("untouched"), "{\"iteration\":1}\n");
    let names: Vec<String> = std::fs::read_dir(&dir).expect("dir").map(|e| e.expect("entry").file_name().to_string_lossy().into_owned()).collect();
    assert!(!names.iter().any(|n| n.starts_with("attempt-") || n == "exit.json"), "nothing archived or launched: {names:?}");

    // The holder ends while the next `drover run` waits: the run is then archived and done.
    let release = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(1_500));
        drop(held);
    });
    let out = run_ok(&mut drover_run(&tmp_path, &sweep_file, &results));
    release.join().expect("release thread");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("waiting up to 30 s") && stderr.contains("1 completed"), "{stderr}");
    assert_eq!(read_json(&dir.join("exit.json"))["status"], "completed");
    assert!(dir.join("attempt-1").join("metrics.jsonl").is_file(), "the orphan's partial files were archived, not lost");
    assert_eq!(run_problem(&dir), None);
}
