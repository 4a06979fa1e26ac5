//! Issue 2 (foundation) end to end: a real sweep through `drover run` → `drover-job` → PPO
//! plugin → CPU kernels → metrics → `drover analyze`, resumption, and plugin-version refusal.

use std::path::Path;

use drover_tests::{artifact, drover, read_json, run_dirs, run_ok, write_sweep};

const SMALL_SWEEP: &str = r#"
name = "e2e-small"
[run]
env = "CartPole-v1"
plugin = "ppo"
num_envs = 4
num_steps = 128
total_steps = 8192
[params]
gamma = 0.99
[sweep]
seeds = [1, 2]
[sweep.grid]
"params.clip_coef" = [0.1, 0.2]
"#;

#[test]
fn small_sweep_runs_resumes_and_analyzes() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let sweep = write_sweep(tmp.path(), SMALL_SWEEP);
    let results = tmp.path().join("results");
    run_ok(drover().arg("run").arg(&sweep).arg("--results").arg(&results).args(["-j", "2"]));

    let runs = run_dirs(&results);
    assert_eq!(runs.len(), 4, "2 clip values x 2 seeds");
    let mut ids = std::collections::BTreeSet::new();
    for run in &runs {
        let exit = read_json(&run.join("exit.json"));
        assert_eq!(exit["status"], "completed", "{}", run.display());
        let summary = read_json(&run.join("summary.json"));
        assert_eq!(summary["iterations"], 16, "8192 steps / (4 envs x 128 steps)");
        assert_eq!(summary["plugin"]["name"], "ppo");
        assert_eq!(summary["plugin"]["sha256"].as_str().map(str::len), Some(64));
        let jsonl = std::fs::read_to_string(run.join("metrics.jsonl")).expect("metrics.jsonl");
        let steps: Vec<i64> = jsonl
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("json row")["global_step"].as_i64().expect("step"))
            .collect();
        assert_eq!(steps, (1..=16).map(|i| i * 512).collect::<Vec<_>>(), "no gap, no duplicate");
        assert!(run.join("metrics.parquet").metadata().expect("parquet").len() > 0);
        ids.insert(summary["config_id"].as_str().expect("config_id").to_string());
    }
    assert_eq!(ids.len(), 2, "runs differing only in seed share a config id");

    // Second run: everything is skipped and nothing finished is touched.
    let marker = runs[0].join("exit.json");
    let before = std::fs::read(&marker).expect("marker");
    let again = run_ok(drover().arg("run").arg(&sweep).arg("--results").arg(&results));
    let text = String::from_utf8_lossy(&again.stderr).to_string() + &String::from_utf8_lossy(&again.stdout);
    assert!(text.contains("4 skipped") || text.contains("4 already completed"), "{text}");
    assert_eq!(std::fs::read(&marker).expect("marker"), before);

    let out = run_ok(drover().arg("analyze").arg(&results));
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("params.clip_coef=0.1") && table.contains("params.clip_coef=0.2"), "{table}");
    let csv = std::fs::read_to_string(results.join("tables/summary.csv")).expect("summary.csv");
    assert_eq!(csv.lines().count(), 3, "header + one row per configuration:\n{csv}");
}

/// The foundation bar, as a regression test: the shipped sweep reaches a mean episodic return
/// of 475 within 500k environment steps on at least 2 of its 3 seeds.
#[test]
fn shipped_cartpole_sweep_solves_on_two_of_three_seeds() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("repo root");
    let results = tmp.path().join("results");
    run_ok(
        drover()
            .arg("run")
            .arg(repo.join("configs/cartpole-ppo.toml"))
            .arg("--results")
            .arg(&results),
    );
    let runs = run_dirs(&results);
    assert_eq!(runs.len(), 3);
    let solved: Vec<bool> = runs
        .iter()
        .map(|r| {
            let s = read_json(&r.join("summary.json"));
            s["steps_to_threshold"].as_i64().is_some_and(|steps| steps <= 500_000)
        })
        .collect();
    assert!(solved.iter().filter(|&&s| s).count() >= 2, "solved per seed: {solved:?}");
}

#[test]
fn plugin_built_against_another_interface_version_is_refused_naming_both() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let plugin = artifact("libdrover_test_plugin_bad_version.so");
    let sweep = write_sweep(
        tmp.path(),
        &format!(
            "name = \"bad-version\"\n[run]\nenv = \"CartPole-v1\"\nplugin = \"{}\"\ntotal_steps = 1024\n",
            plugin.display()
        ),
    );
    let results = tmp.path().join("results");
    let out = drover().arg("run").arg(&sweep).arg("--results").arg(&results).output().expect("spawn");
    assert!(!out.status.success(), "a run with an incompatible plugin must fail");
    // The refusal may come from the pre-launch plugin check or from the job itself.
    let mut text = String::from_utf8_lossy(&out.stderr).to_string();
    if results.join("runs").exists() {
        for run in run_dirs(&results) {
            for entry in std::fs::read_dir(&run).expect("run dir") {
                let path = entry.expect("entry").path();
                if path.is_file() {
                    text += &std::fs::read_to_string(&path).unwrap_or_default();
                }
            }
        }
    }
    assert!(
        text.contains("interface 99.0") && text.contains("provides 1.3"),
        "expected both interface versions named:\n{text}"
    );
}

/// Issue 12 (concurrent use): while one `drover run` works on a results directory, a second is
/// refused at once naming the first's pid and command; once the first has stopped, the
/// directory is free again.
#[test]
fn second_drover_run_on_the_same_results_is_refused_naming_the_holder() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let sweep = write_sweep(
        tmp.path(),
        "name = \"busy\"\nmax_parallel = 1\n[run]\nenv = \"CartPole-v1\"\nplugin = \"ppo\"\ntotal_steps = 2000000\n[sweep]\nseeds = [1, 2]\n",
    );
    let results = tmp.path().join("results");
    let mut first = drover().arg("run").arg(&sweep).arg("--results").arg(&results).spawn().expect("spawn");
    let lock = results.join(".drover.lock");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !std::fs::read_to_string(&lock).is_ok_and(|t| t.contains("command")) {
        assert!(std::time::Instant::now() < deadline, "the first run never took the lock");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let second = drover().arg("run").arg(&sweep).arg("--results").arg(&results).output().expect("spawn");
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(!second.status.success(), "a second run must be refused");
    assert!(
        stderr.contains("is in use by another `drover run`")
            && stderr.contains(&format!("pid {}", first.id()))
            && stderr.contains(&format!("command drover run {} --results {}", sweep.display(), results.display()))
            && stderr.contains(" UTC, command"),
        "{stderr}"
    );
    run_ok(std::process::Command::new("kill").args(["-INT", &first.id().to_string()]));
    let status = first.wait().expect("wait");
    assert!(!status.success(), "the interrupted run reports the interruption");
    // Free again: a short variant of the sweep (new run ids) completes in the same directory.
    run_ok(drover().arg("run").arg(&sweep).args(["--set", "run.total_steps=1024", "--results"]).arg(&results));
}

/// `drover bench` hands its arguments to `drover-job bench`; a mistake there is told in the
/// words the user typed (`drover bench`), not the runtime's.
#[test]
fn drover_bench_usage_errors_name_drover_bench() {
    let out = drover().args(["bench", "rollout", "--no-such-flag"]).output().expect("spawn");
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{said}");
    assert!(said.contains("Usage: drover bench rollout") && !said.contains("drover-job"), "{said}");
    // Out-of-range values are usage errors too (MPI review D8: they exited 1).
    for bad in [["--envs", "0"], ["--threads", "0"], ["--seconds", "0"]] {
        let out = drover().args(["bench", "rollout"]).args(bad).output().expect("spawn");
        let said = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{bad:?}: {said}");
        assert!(said.starts_with("drover bench rollout: option `"), "{bad:?}: {said}");
    }
}
