//! Issue 6: device selection. `device = "auto"` trains on CUDA where a GPU is usable and
//! otherwise falls back to the CPU engine with one clear log line; `device = "cuda"` without a
//! GPU fails the run with the reason instead of panicking. `DROVER_SIMD` picks the CPU engine's
//! instruction-set level.

use std::path::Path;

use drover_tests::{drover, read_json, run_dirs};

fn sweep(dir: &Path, device: &str) -> std::path::PathBuf {
    drover_tests::write_sweep(
        dir,
        &format!(
            "name = \"dev\"\n[run]\nenv = \"CartPole-v1\"\nplugin = \"ppo\"\ndevice = \"{device}\"\n\
             num_envs = 4\nnum_steps = 64\ntotal_steps = 512\n"
        ),
    )
}

fn job_stderr(results: &Path) -> String {
    let run = &run_dirs(results)[0];
    std::fs::read_to_string(run.join("attempt-1.stderr.log")).expect("job stderr log")
}

#[test]
fn auto_device_falls_back_to_cpu_with_one_log_line_or_uses_the_gpu() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let results = tmp.path().join("results");
    let out = drover().arg("run").arg(sweep(tmp.path(), "auto")).arg("--results").arg(&results).output().expect("spawn");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let log = job_stderr(&results);
    let fallbacks = log.matches("device = \"auto\": using the CPU engine (").count();
    let on_gpu = log.contains("device=Cuda");
    assert!(
        (fallbacks == 1 && log.contains("device=Cpu")) || (fallbacks == 0 && on_gpu),
        "expected exactly one fallback line (no GPU) or a CUDA run (GPU):\n{log}"
    );
}

/// The job's own check: with the device named (`CUDA_VISIBLE_DEVICES`), drover does not ask
/// whether it exists, so on a machine without a GPU the job refuses it.
#[test]
fn cuda_device_without_a_gpu_fails_the_run_with_the_reason() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let results = tmp.path().join("results");
    let out = drover()
        .arg("run")
        .arg(sweep(tmp.path(), "cuda"))
        .arg("--results")
        .arg(&results)
        .env("CUDA_VISIBLE_DEVICES", "0")
        .output()
        .expect("spawn");
    let exit = read_json(&run_dirs(&results)[0].join("exit.json"));
    if out.status.success() {
        // A GPU machine: the run trained on CUDA.
        assert_eq!(exit["status"], "completed");
        assert!(job_stderr(&results).contains("device=Cuda"));
    } else {
        assert_eq!(exit["status"], "failed");
        let reason = exit["reason"].as_str().expect("reason");
        assert!(reason.starts_with("cuda unavailable: "), "{reason}");
        assert_eq!(reason.matches("cuda unavailable").count(), 1, "reason said twice: {reason}");
    }
}

/// Review finding (research): a rerun with `--set run.device=cuda` where no CUDA device is
/// visible launched every run to fail, and its manifest then hid the runs completed before.
/// It is refused before anything is written (exit 3), so the completed runs stay the sweep.
#[test]
fn a_cuda_rerun_without_a_device_is_refused_and_keeps_the_completed_runs() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let results = tmp.path().join("results");
    let file = sweep(tmp.path(), "cpu");
    let first = drover().arg("run").arg(&file).arg("--results").arg(&results).output().expect("spawn");
    assert!(first.status.success(), "{}", String::from_utf8_lossy(&first.stderr));
    let manifest = std::fs::read(results.join("sweep.json")).expect("sweep.json");
    let rerun = drover()
        .arg("run")
        .arg(&file)
        .arg("--results")
        .arg(&results)
        .args(["--set", "run.device=cuda"])
        .env("CUDA_VISIBLE_DEVICES", "")
        .output()
        .expect("spawn");
    let stderr = String::from_utf8_lossy(&rerun.stderr);
    assert_eq!(rerun.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("key `run.device` (from `--set run.device=cuda`): cannot run on this machine: \"cuda\", but CUDA_VISIBLE_DEVICES= names no device"),
        "{stderr}"
    );
    assert_eq!(std::fs::read(results.join("sweep.json")).expect("sweep.json"), manifest, "the manifest is untouched");
    assert_eq!(run_dirs(&results).len(), 1, "no run directory was made");
    let status = drover().arg("status").arg(&results).output().expect("spawn");
    assert!(String::from_utf8_lossy(&status.stdout).contains("1 run: 1 done"), "{}", String::from_utf8_lossy(&status.stdout));
}

/// Issue 6, item 3: a 2-rank CUDA job with `DROVER_ALLREDUCE=auto` on a machine with one GPU
/// (both ranks share it). NCCL either sums the gradients on the device or refuses two ranks on
/// one GPU ("Duplicate GPU detected"), and then every rank falls back to host-staged MPI; either
/// way the run finishes with the metrics of the same job forced onto host-staged MPI
/// (`DROVER_ALLREDUCE=mpi`). Skips with a visible line without a GPU (fails instead under
/// `DROVER_REQUIRE_GPU=1`); needs `drover-job` built with the `mpi` feature, as `mpi.rs` does.
#[test]
fn two_cuda_ranks_reduce_with_nccl_or_fall_back_with_the_same_metrics() {
    let test = "two_cuda_ranks_reduce_with_nccl_or_fall_back_with_the_same_metrics";
    let tmp = tempfile::tempdir().expect("tempdir");
    let sweep = drover_tests::write_sweep(
        tmp.path(),
        "name = \"nccl\"\n[run]\nenv = \"CartPole-v1\"\nplugin = \"ppo\"\ndevice = \"cuda\"\nranks = 2\n\
         num_envs = 64\nnum_steps = 32\ntotal_steps = 8192\n[sweep]\nseeds = [3]\n",
    );
    let launch = |mode: &str| {
        let results = tmp.path().join(format!("results-{mode}"));
        let out = drover()
            .arg("run")
            .arg(&sweep)
            .arg("--results")
            .arg(&results)
            .env("DROVER_ALLREDUCE", mode)
            .output()
            .expect("spawn");
        let run = results.join("runs").is_dir().then(|| run_dirs(&results).into_iter().next()).flatten();
        (out, run)
    };
    let (out, mpi_run) = launch("mpi");
    // Without a GPU drover refuses the sweep before making any run directory.
    if out.status.code() == Some(3) && std::env::var("DROVER_REQUIRE_GPU").as_deref() != Ok("1") {
        eprintln!("{test}: skipped: {}", String::from_utf8_lossy(&out.stderr).trim());
        return;
    }
    let mpi_run = mpi_run.expect("a run directory");
    if !out.status.success() {
        let reason = read_json(&mpi_run.join("exit.json"))["reason"].as_str().unwrap_or_default().to_string();
        let no_gpu = reason.starts_with("cuda unavailable: ");
        if no_gpu && std::env::var("DROVER_REQUIRE_GPU").as_deref() != Ok("1") {
            eprintln!("{test}: skipped: {reason}");
            return;
        }
        panic!("the host-staged MPI run failed: {reason}\n{}", String::from_utf8_lossy(&out.stderr));
    }
    let (out, auto_run) = launch("auto");
    let auto_run = auto_run.expect("a run directory");
    let log = std::fs::read_to_string(auto_run.join("attempt-1.stderr.log")).expect("job stderr log");
    assert!(out.status.success(), "the auto run failed:\n{log}");
    let on_device = log.matches("gradient all-reduce: NCCL on the devices (2 ranks").count();
    let fell_back = log.matches("DROVER_ALLREDUCE=auto: gradient all-reduce through host-staged MPI: ").count();
    assert_eq!(on_device + fell_back, 1, "expected one line saying which path was taken:\n{log}");
    eprintln!("{test}: {}", if on_device == 1 { "NCCL on the device" } else { "NCCL refused, host-staged MPI" });
    let (a, b) = (drover_tests::metrics_rows(&mpi_run), drover_tests::metrics_rows(&auto_run));
    assert_eq!(a.len(), b.len());
    for (ra, rb) in a.iter().zip(&b) {
        assert_eq!(ra["episodes"], rb["episodes"], "{ra}\n{rb}");
        for key in ["policy_loss", "value_loss", "entropy", "approx_kl", "grad_norm"] {
            let (x, y) = (ra[key].as_f64().unwrap_or(0.0), rb[key].as_f64().unwrap_or(0.0));
            // Two ranks: both paths compute a + b per element, so the runs should agree exactly;
            // the tolerance only allows for a reduction order NCCL might choose differently.
            assert!((x - y).abs() <= 1e-5 * (1.0 + x.abs().max(y.abs())), "{key}: mpi {x} vs auto {y}");
        }
    }
}

/// One job's lifetime on the log's clock, (date, seconds of the day) of its first and last log
/// lines, and the `cuda_visible_devices` field of its "training starts" line.
#[derive(Debug)]
struct JobWindow {
    start: (String, f64),
    end: (String, f64),
    visible: String,
}

fn job_window(run: &Path) -> JobWindow {
    let log = std::fs::read_to_string(run.join("attempt-1.stderr.log")).expect("job stderr log");
    // `2026-11-28T07:43:58.407453Z ...` -> (date, seconds of the day).
    let stamp = |line: &str| {
        let ts = line.split_whitespace().next().unwrap_or_default();
        let (date, time) = ts.trim_end_matches('Z').split_once('T').unwrap_or_else(|| panic!("no timestamp: {line}"));
        let secs = time.split(':').map(|p| p.parse::<f64>().expect("time field")).fold(0.0, |acc, v| acc * 60.0 + v);
        (date.to_string(), secs)
    };
    let lines: Vec<&str> = log.lines().filter(|l| l.starts_with("20")).collect();
    let start = lines.iter().find(|l| l.contains("training starts")).unwrap_or_else(|| panic!("no start line:\n{log}"));
    let visible = start
        .split_whitespace()
        .find_map(|f| f.strip_prefix("cuda_visible_devices="))
        .map_or_else(|| "unset".to_string(), |v| v.trim_matches('"').to_string());
    JobWindow { start: stamp(lines[0]), end: stamp(lines[lines.len() - 1]), visible }
}

/// Local runs share the machine's GPUs: with `[local] gpus = [5, 7]` (one run per GPU), every
/// run that may use CUDA (`auto` here, so the test also passes where there is no GPU) sees exactly
/// one of them through `CUDA_VISIBLE_DEVICES`, two such runs never hold the same GPU at once even
/// with `-j 4`, and CPU runs keep drover's own environment.
#[test]
fn local_runs_lease_their_own_gpus_and_wait_for_a_free_one() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let results = tmp.path().join("results");
    let sweep = drover_tests::write_sweep(
        tmp.path(),
        "name = \"gpus\"\n[run]\nenv = \"CartPole-v1\"\nplugin = \"ppo\"\nnum_envs = 4\nnum_steps = 64\ntotal_steps = 2048\n\
         [local]\ngpus = [5, 7]\n[sweep]\nseeds = [1, 2, 3, 4]\ngrid = { \"run.device\" = [\"auto\", \"cpu\"] }\n",
    );
    let out = drover()
        .arg("run")
        .arg(&sweep)
        .arg("--results")
        .arg(&results)
        .arg("-j")
        .arg("4")
        .env("CUDA_VISIBLE_DEVICES", "9")
        .output()
        .expect("spawn");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut leased: Vec<JobWindow> = Vec::new();
    for run in run_dirs(&results) {
        let device = read_json(&run.join("spec.json"))["run"]["device"].as_str().expect("device").to_string();
        let window = job_window(&run);
        match device.as_str() {
            "cpu" => assert_eq!(window.visible, "9", "a CPU run keeps drover's CUDA_VISIBLE_DEVICES"),
            _ => {
                assert!(["5", "7"].contains(&window.visible.as_str()), "an auto run saw `{}`", window.visible);
                leased.push(window);
            }
        }
    }
    assert_eq!(leased.len(), 4, "four auto runs");
    for gpu in ["5", "7"] {
        let mut on: Vec<_> = leased.iter().filter(|w| w.visible == gpu).collect();
        assert!(!on.is_empty(), "GPU {gpu} was never used: runs should spread over both");
        on.sort_by(|a, b| a.start.partial_cmp(&b.start).expect("ordered"));
        for pair in on.windows(2) {
            assert!(pair[0].end < pair[1].start, "two runs held GPU {gpu} at once: {pair:?}");
        }
    }
}

/// `DROVER_SIMD` picks the CPU engine's instruction-set level for every job it reaches (the
/// job logs the level it uses), the other architecture's eight-lane level running as its twin
/// here; a value that names no level fails the run with a reason that names the variable and
/// the value.
#[test]
fn drover_simd_picks_the_cpu_level_and_a_bad_value_fails_the_run_with_the_reason() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let run = |value: &str, results: &Path| {
        drover()
            .arg("run")
            .arg(sweep(tmp.path(), "cpu"))
            .arg("--results")
            .arg(results)
            .env("DROVER_SIMD", value)
            .output()
            .expect("spawn")
    };
    let results = tmp.path().join("portable");
    let out = run("portable", &results);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let log = job_stderr(&results);
    assert!(log.contains("compute=cpu/portable"), "the job should log its level:\n{log}");

    // The other architecture's eight-lane level runs as this machine's twin, which computes the
    // same bits: one value pins a sweep on a cluster of AVX2 and AArch64 nodes.
    #[cfg(target_arch = "x86_64")]
    let twins = (std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")).then_some(("neon", "avx2"));
    #[cfg(target_arch = "aarch64")]
    let twins = Some(("avx2", "neon"));
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    let twins: Option<(&str, &str)> = None;
    if let Some((pinned, here)) = twins {
        let results = tmp.path().join("twin");
        let out = run(pinned, &results);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let log = job_stderr(&results);
        assert!(log.contains(&format!("compute=cpu/{here}")), "{log}");
        assert!(log.contains(&format!("DROVER_SIMD={pinned}: this CPU cannot run it; running `{here}`, which computes the same bits")), "{log}");
    }

    let results = tmp.path().join("bad");
    let out = run("avx1024", &results);
    assert!(!out.status.success(), "a bad DROVER_SIMD should fail the run");
    let exit = read_json(&run_dirs(&results)[0].join("exit.json"));
    assert_eq!(exit["status"], "failed");
    let reason = exit["reason"].as_str().expect("reason");
    assert!(
        reason.contains("environment variable `DROVER_SIMD`: `avx1024` is not one of auto, avx512, avx2, neon, portable"),
        "{reason}"
    );
}
