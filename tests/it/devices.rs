//! Issue 6: device selection. `device = "auto"` trains on CUDA where a GPU is usable and
//! otherwise falls back to the CPU engine with one clear log line; `device = "cuda"` without a
//! GPU fails the run with the reason instead of panicking.

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

#[test]
fn cuda_device_without_a_gpu_fails_the_run_with_the_reason() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let results = tmp.path().join("results");
    let out = drover().arg("run").arg(sweep(tmp.path(), "cuda")).arg("--results").arg(&results).output().expect("spawn");
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
