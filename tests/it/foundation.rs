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
        // Where it computed, since the bits repeat only at one CPU level (docs review A3).
        assert!(summary["compute"].as_str().is_some_and(|c| c.starts_with("cpu/")), "{summary}");
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

/// Run ids name existing run directories: the shipped configs must keep their ids whatever the
/// plugins' descriptions settle (review F2/F3: twins are refused, not given new ids), or a rerun
/// of those sweeps would retrain everything. Pinned from `drover run <config> --dry-run` before
/// those changes. (`--backend slurm` so that the CUDA
/// config plans on a machine without a GPU; a dry run submits nothing.)
#[test]
fn shipped_configs_keep_their_run_ids() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("repo root");
    let tmp = tempfile::tempdir().expect("tempdir");
    let pinned: [(&str, &str); 5] = [
        ("cartpole-ppo-cuda", "8300dfaa7be682d9"),
        ("cartpole-ppo-slurm", "a6e7a087b246ec2a 36bdb32d83c932c4 a09fe29530ed04ba 0957e369df7ad773 d25b62b7a01ae32b 29c18ee981b8bc64 4e87800fe39ddc82 0c4b779173c41ee3 072392672943c124 5fecdd1996c478f9 d199e875112921e0 e7cdd2f4e9f4630b"),
        ("cartpole-ppo", "57e7069c35e39581 36041b629ad4f9c5 10a7855f78cca23b"),
        ("entropy-mechanism", "193db46b1619cc9d 951a1c771c4bd9c4 6b66a40b0493542f 594f86cee54bab88 fb403bef5d34ee8a 6fd67f9f60d0ad01 f1d0af77d00c8815 b6126ede3d345931 48aa1a5e33e34c6d"),
        ("llm-algorithms", "276330d711d6f71c 6204bc4ddb9d7ca4 03ae7aad6c4db25c 49ce158c9f492602 e0edbc4503d35b5b 33a3bf43f30dcd62 ebb305dd67bff997 7d6d7b90c8fac0f6 b20378986a0a6bfd 3a7fad3ec8fa0d78 700cf0aaa86ba197 abf59e5313e21b6b 09d6345b940bde35 a68b441f29f13ec9 7777cc17a8709391 a48ea5cb0ea7c801 9b861aa295cd6f8e c484edbafbf8d03e a8deefe3a4b25cad a32d858af4b6725d 69f2f0e330cb8555 0663fddfbcbf059d 1d6943729d9a88fc c0ea0ca2b87a2131 9162ded0ee100822 bb2366a6b26a310e 4d8dd2d4a4eb53b8 ade50ae7cf271b62 aae3374c6c3c61a2 0f5e2dbea73b02c1 c3302f2c9f32b4c2 89208fa735e9ccea 5cdee63dd89b54e5 ca58a7e371d5656f 5da84f264fee7f96 9309c6f209e0c18f c1870c2f330e8919 17a00f18744d9c2b 7dee3f8cdff96681"),
    ];
    for (name, ids) in pinned {
        let out = run_ok(
            drover()
                .arg("run")
                .arg(repo.join(format!("configs/{name}.toml")))
                .args(["--dry-run", "--backend", "slurm", "--results"])
                .arg(tmp.path().join(name)),
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        let found: Vec<&str> = stdout
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .filter(|w| w.len() == 16 && w.bytes().all(|b| b.is_ascii_hexdigit()))
            .collect();
        assert_eq!(found.join(" "), ids, "{name}:\n{stdout}");
    }
}
