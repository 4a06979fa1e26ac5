//! Issue 4: multi-rank jobs. Runs launched with `ranks = 2` go through `mpirun -np 2`, every
//! rank steps half the environments, gradients are all-reduced, and the result is the same
//! algorithm as one rank with the same total batch. Needs `drover-job` built with the `mpi`
//! feature and OpenMPI installed (scripts/test.sh does both).

use std::path::Path;

use drover_tests::{drover, metrics_rows as rows, read_json, run_dirs, run_ok, untimed};

fn sweep(dir: &Path, ranks_axis: &str, total_steps: u64) -> std::path::PathBuf {
    let text = format!(
        r#"
name = "mpi"
[run]
env = "CartPole-v1"
plugin = "ppo"
num_envs = 8
num_steps = 128
total_steps = {total_steps}
[sweep]
seeds = [1]
[sweep.grid]
"run.ranks" = {ranks_axis}
"#
    );
    drover_tests::write_sweep(dir, &text)
}


fn job_stderr(run: &Path) -> String {
    std::fs::read_to_string(run.join("attempt-1.stderr.log")).expect("job stderr log")
}

fn close(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() <= tol * (1.0 + a.abs().max(b.abs()))
}

/// The first iterations of a 1-rank and a 2-rank run of the same config agree within floating
/// point tolerance (only the order of the gradient sum differs), and the 2-rank run's ranks
/// end with bit-identical parameters (the job fails otherwise; it records the hash).
#[test]
fn two_ranks_follow_the_one_rank_curve_and_keep_identical_parameters() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let results = tmp.path().join("results");
    run_ok(drover().arg("run").arg(sweep(tmp.path(), "[1, 2]", 8192)).arg("--results").arg(&results));
    let runs = run_dirs(&results);
    assert_eq!(runs.len(), 2);
    let by_ranks = |n: i64| {
        runs.iter()
            .find(|r| read_json(&r.join("summary.json"))["ranks"] == n)
            .unwrap_or_else(|| panic!("no run with {n} ranks"))
            .clone()
    };
    let (one, two) = (by_ranks(1), by_ranks(2));
    assert_eq!(read_json(&two.join("summary.json"))["param_hash"].as_str().map(str::len), Some(16));
    // `DROVER_ALLREDUCE` unset is `auto`: on CPU engines host-staged MPI is the only path, so
    // both ranks take it and no fallback line is printed (it would be noise on a CPU cluster).
    let log = job_stderr(&two);
    assert_eq!(log.matches("grad_allreduce=HostMpi").count(), 2, "{log}");
    assert!(!log.contains("DROVER_ALLREDUCE=auto"), "{log}");
    let (a, b) = (rows(&one), rows(&two));
    assert_eq!(a.len(), b.len());
    for (ra, rb) in a.iter().zip(&b).take(4) {
        // Same environments and same RNG streams: identical episodes in the first iterations.
        assert_eq!(ra["episodes"], rb["episodes"], "{ra}\n{rb}");
        for key in ["policy_loss", "value_loss", "entropy", "approx_kl"] {
            let (x, y) = (ra[key].as_f64().expect(key), rb[key].as_f64().expect(key));
            assert!(close(x, y, 1e-4), "{key}: 1 rank {x} vs 2 ranks {y}");
        }
    }
}

/// Issue 13's sampling across ranks: a prompt dataset, DAPO regenerating groups (the training
/// batch is then composed of several rollouts and every rank replays its part, generated on any
/// rank), and Knapsack RL's uneven groups (which straddle ranks). 2 ranks follow the 1-rank run.
#[test]
fn two_ranks_follow_one_rank_with_datasets_dynamic_sampling_and_uneven_groups() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let sweep = drover_tests::write_sweep(
        tmp.path(),
        r#"
name = "mpi-sampling"
[run]
env = "SeqAdd-v0"
plugin = "dapo"
vocab = 5
prompt_len = 4
num_steps = 3
group_size = 8
num_envs = 64
total_steps = 960
hidden = [32]
threads = 1
lr = 3e-3
anneal_lr = false
num_minibatches = 2
dataset_size = 16
max_gen_batches = 3
[sweep]
seeds = [4]
[sweep.grid]
"run.ranks" = [1, 2]
"run.plugin" = ["dapo", "knapsack"]
"#,
    );
    let results = tmp.path().join("results");
    run_ok(drover().arg("run").arg(&sweep).arg("--results").arg(&results));
    let runs = run_dirs(&results);
    assert_eq!(runs.len(), 4);
    for plugin in ["dapo", "knapsack"] {
        let by_ranks = |n: i64| {
            let run = runs
                .iter()
                .find(|r| {
                    let s = read_json(&r.join("summary.json"));
                    s["ranks"] == n && s["plugin"]["name"] == plugin
                })
                .unwrap_or_else(|| panic!("no {plugin} run with {n} ranks"));
            rows(run)
        };
        let (a, b) = (by_ranks(1), by_ranks(2));
        assert_eq!((a.len(), b.len()), (5, 5));
        for (ra, rb) in a.iter().zip(&b) {
            for key in ["episodes", "gen_batches", "batch_fill", "group_size_min", "group_size_max", "accuracy"] {
                assert_eq!(ra[key], rb[key], "{plugin} {key}:\n{ra}\n{rb}");
            }
            // No update (every group refused) logs no loss, on both.
            for key in ["policy_loss", "entropy", "approx_kl"] {
                match (ra[key].as_f64(), rb[key].as_f64()) {
                    (Some(x), Some(y)) => assert!(close(x, y, 1e-4), "{plugin} {key}: 1 rank {x} vs 2 ranks {y}"),
                    (x, y) => assert_eq!(x, y, "{plugin} {key}"),
                }
            }
        }
        let regenerated = a.iter().any(|r| r["gen_batches"].as_f64() > Some(1.0));
        let uneven = a.iter().any(|r| r["group_size_max"] != r["group_size_min"]);
        match plugin {
            "dapo" => assert!(regenerated, "DAPO never regenerated: {a:?}"),
            _ => assert!(uneven, "Knapsack never sized groups unevenly: {a:?}"),
        }
    }
}

/// Issue 6, item 3: `DROVER_ALLREDUCE=nccl` where NCCL cannot be used (CPU engines) fails the
/// run on every rank with the reason, naming the variable, instead of hanging or silently
/// taking the MPI path.
#[test]
fn nccl_all_reduce_without_cuda_fails_naming_the_variable() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let results = tmp.path().join("results");
    let started = std::time::Instant::now();
    let out = drover()
        .arg("run")
        .arg(sweep(tmp.path(), "[2]", 2048))
        .arg("--results")
        .arg(&results)
        .env("DROVER_ALLREDUCE", "nccl")
        .output()
        .expect("spawn");
    assert!(!out.status.success(), "the sweep must report the failed run");
    assert!(started.elapsed().as_secs() < 60, "took {:?}: a rank hung", started.elapsed());
    let run = &run_dirs(&results)[0];
    let exit = read_json(&run.join("exit.json"));
    assert_eq!(exit["status"], "failed");
    let reason = exit["reason"].as_str().expect("reason");
    assert!(
        reason.starts_with("environment variable `DROVER_ALLREDUCE`: `nccl` asked for, but 2 of 2 ranks cannot use NCCL"),
        "{reason}"
    );
    assert!(reason.contains("NCCL needs the CUDA engine"), "{reason}");
    assert!(!run.join("summary.json").exists());
}

/// A config asking for more ranks than divide the environments is refused before launch,
/// naming the key.
#[test]
fn ranks_must_divide_num_envs() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let results = tmp.path().join("results");
    let out = drover().arg("run").arg(sweep(tmp.path(), "[3]", 1024)).arg("--results").arg(&results).output().expect("spawn");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("ranks") && err.contains("num_envs"), "{err}");
}

/// A rank that dies takes the whole job down quickly (no rank hangs in a collective), and the
/// run is reported failed. `DROVER_FAULT_KILL_RANK=1` makes rank 1 abort at iteration 2.
#[test]
fn a_dying_rank_fails_the_job_fast() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let results = tmp.path().join("results");
    let started = std::time::Instant::now();
    let out = drover()
        .arg("run")
        .arg(sweep(tmp.path(), "[2]", 1_000_000))
        .arg("--results")
        .arg(&results)
        .env("DROVER_FAULT_KILL_RANK", "1")
        .output()
        .expect("spawn");
    let elapsed = started.elapsed();
    assert!(!out.status.success(), "the sweep must report the failed run");
    assert!(elapsed.as_secs() < 60, "the job took {elapsed:?} to fail: a rank hung");
    let run = &run_dirs(&results)[0];
    let status = std::fs::read_to_string(run.join("exit.json")).unwrap_or_default();
    assert!(!status.contains("completed"), "{status}");
    assert!(!run.join("summary.json").exists());
}

/// The same 2-rank job through the real local Slurm: one array task with 2 tasks, launched by
/// the batch script as `srun --mpi=pmix`; it finishes and its ranks agree on the parameters.
#[test]
fn two_ranks_run_under_slurm_with_srun_pmix() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("repo root");
    let up = std::process::Command::new(repo.join("scripts/slurm-up.sh")).output().expect("slurm-up");
    assert!(up.status.success(), "scripts/slurm-up.sh: {}", String::from_utf8_lossy(&up.stderr));
    let tmp = tempfile::tempdir().expect("tempdir");
    let results = tmp.path().join("results");
    let out = run_ok(
        drover()
            .arg("run")
            .arg(sweep(tmp.path(), "[2]", 8192))
            .args(["--backend", "slurm", "--results"])
            .arg(&results),
    );
    let runs = run_dirs(&results);
    assert_eq!(runs.len(), 1);
    let script = std::fs::read_dir(results.join("slurm"))
        .expect("slurm dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "sbatch"))
        .expect("saved batch script");
    assert!(std::fs::read_to_string(script).expect("script").contains("#SBATCH --ntasks=2"));
    let summary = read_json(&runs[0].join("summary.json"));
    assert_eq!(summary["ranks"], 2, "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(read_json(&runs[0].join("exit.json"))["status"], "completed");
}

/// `mpirun -np 2 drover-job ... --checkpoint-signal USR1` in `dir` (what the batch script runs
/// under Slurm, with `srun` there).
fn mpirun_job(dir: &Path) -> std::process::Command {
    let mut cmd = drover_tests::job_in(dir, 2);
    cmd.args(["--checkpoint-signal", "USR1"]);
    cmd
}

/// The pid of rank `rank` of the job writing to `dir`, found by its command line and the rank
/// OpenMPI puts in its environment.
fn rank_pid(dir: &Path, rank: u32) -> Option<i32> {
    let want_dir = dir.as_os_str().as_encoded_bytes().to_vec();
    let want_rank = format!("OMPI_COMM_WORLD_RANK={rank}").into_bytes();
    std::fs::read_dir("/proc").ok()?.filter_map(Result::ok).find_map(|e| {
        let pid: i32 = e.file_name().to_str()?.parse().ok()?;
        let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
        let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
        let is_job = args.first()?.ends_with(b"drover-job") && args.contains(&want_dir.as_slice());
        let environ = std::fs::read(e.path().join("environ")).ok()?;
        (is_job && environ.split(|&b| b == 0).any(|kv| kv == want_rank.as_slice())).then_some(pid)
    })
}

/// A 2-rank run stopped by the checkpoint signal, which only one rank gets, and started again
/// (a requeue) writes the same metrics as an uninterrupted 2-rank run. The ranks agree on the
/// iteration they stop at (otherwise the other rank would wait in a collective forever), rank 0
/// writes one checkpoint holding every rank's environments at their global indices, and each
/// rank resumes its own share.
#[test]
fn a_two_rank_run_checkpointed_by_a_signal_to_one_rank_resumes_exactly() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let results = tmp.path().join("results");
    run_ok(drover().arg("run").arg(sweep(tmp.path(), "[2]", 8 * 128 * 300)).arg("--results").arg(&results));
    let reference = run_dirs(&results).pop().expect("run dir");
    let expected = untimed(&rows(&reference));
    assert_eq!(expected.len(), 300);

    let dir = tmp.path().join("interrupted");
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::copy(reference.join("spec.json"), dir.join("spec.json")).expect("copy spec");
    let mut child = mpirun_job(&dir).spawn().expect("spawn mpirun");
    let started = std::time::Instant::now();
    let lines = |d: &Path| std::fs::read_to_string(d.join("metrics.jsonl")).map_or(0, |t| t.lines().count());
    while lines(&dir) < 20 {
        assert!(started.elapsed().as_secs() < 120, "no progress after 120 s");
        assert!(child.try_wait().expect("wait").is_none(), "the job ended before it was signalled");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let pid = rank_pid(&dir, 1).expect("rank 1's process");
    // SAFETY: kill(2) with a live process's pid and a valid signal has no memory effects.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGUSR1) }, 0, "kill -USR1 rank 1");
    let status = child.wait().expect("wait");
    assert_eq!(status.code(), Some(75), "both ranks checkpoint and ask to be requeued");
    let ck = read_json(&dir.join("checkpoint.json"));
    let at = ck["iteration"].as_u64().expect("iteration");
    assert!((20..300).contains(&at), "checkpoint at iteration {at}");
    assert_eq!(ck["engine"]["x"].as_array().map(Vec::len), Some(8), "both ranks' environments");
    let interruptions = std::fs::read_to_string(dir.join("interruptions.jsonl")).expect("interruptions");
    assert_eq!(interruptions.lines().count(), 1, "recorded once, by rank 0: {interruptions}");
    assert_eq!(lines(&dir) as u64, at, "the metrics stop at the checkpoint");

    let out = mpirun_job(&dir).output().expect("rerun");
    assert!(out.status.success(), "resume: {}", String::from_utf8_lossy(&out.stderr));
    assert!(!dir.join("checkpoint.json").exists(), "removed once the run completed");
    let got = untimed(&rows(&dir));
    assert_eq!(got.len(), expected.len());
    for (i, (a, b)) in expected.iter().zip(&got).enumerate() {
        assert_eq!(a, b, "row {} differs after the resume at iteration {at}", i + 1);
    }
    assert_eq!(read_json(&reference.join("summary.json"))["param_hash"], read_json(&dir.join("summary.json"))["param_hash"]);
}
