//! Interface 1.3: a plugin's state survives a checkpoint. A Knapsack RL dataset run stopped by
//! its checkpoint signal and started again (what Slurm's batch script does on a requeue; here
//! `drover-job` runs directly, without Slurm) writes the same metrics as an uninterrupted run of
//! the same spec. A checkpoint whose plugin state the plugin refuses stops the resume with an
//! error naming the run, the plugin and the reason, and the checkpoint is kept.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use drover_tests::{artifact, drover, metrics_rows_so_far as rows, read_json, run_dirs, run_ok, untimed, write_sweep};
use serde_json::Value;

/// `drover-job`'s exit code for "checkpointed, requeue me" (`jobs/src/exit_codes.rs`).
const REQUEUE: i32 = 75;

/// SeqAdd on a 64-prompt dataset (16 prompts per batch: every prompt is seen in the first 4
/// iterations, after which Knapsack's budgets depend on its recorded success rates).
const SWEEP: &str = r#"name = "pstate"
[run]
plugin = "knapsack"
env = "SeqAdd-v0"
vocab = 5
prompt_len = 4
num_steps = 3
group_size = 8
num_envs = 128
dataset_size = 64
total_steps = 30720
hidden = [64, 64]
device = "cpu"
threads = 1
lr = 3e-3
anneal_lr = false
max_grad_norm = 1.0
update_epochs = 1
num_minibatches = 2
[sweep]
seeds = [3]
"#;


fn job(dir: &Path) -> Command {
    let mut cmd = Command::new(artifact("drover-job"));
    cmd.arg("--spec").arg(dir.join("spec.json")).arg("--out").arg(dir).args(["--checkpoint-signal", "USR1"]);
    cmd
}

/// A fresh run directory holding `spec`'s copy of the uninterrupted run's spec.
fn fresh_dir(tmp: &Path, name: &str, spec: &Path) -> PathBuf {
    let dir = tmp.join(name);
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::copy(spec, dir.join("spec.json")).expect("copy spec");
    dir
}

/// Starts a checkpointing job in `dir`, sends it the checkpoint signal once the rows written
/// are `ready`, and checks that it stopped with a checkpoint; returns the checkpoint.
fn interrupt(dir: &Path, ready: impl Fn(&[Value]) -> bool) -> Value {
    let mut child = job(dir).spawn().expect("spawn drover-job");
    let started = Instant::now();
    while !ready(&rows(dir)) {
        assert!(started.elapsed() < Duration::from_secs(300), "the rows were not ready after 300 s");
        assert!(child.try_wait().expect("wait").is_none(), "the job ended before it was signalled");
        std::thread::sleep(Duration::from_millis(5));
    }
    // SAFETY: `kill` with a live child's pid and a valid signal number has no memory effects.
    let sent = unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGUSR1) };
    assert_eq!(sent, 0, "kill -USR1");
    let status = child.wait().expect("wait");
    assert_eq!(status.code(), Some(REQUEUE), "the job checkpoints and asks to be requeued");
    read_json(&dir.join("checkpoint.json"))
}

#[test]
fn a_knapsack_run_resumed_from_its_checkpoint_matches_an_uninterrupted_one() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let sweep = write_sweep(tmp.path(), SWEEP);
    let results = tmp.path().join("results");
    run_ok(drover().arg("run").arg(&sweep).arg("--results").arg(&results));
    let reference = run_dirs(&results).pop().expect("run dir");
    let expected = untimed(&rows(&reference));
    assert_eq!(expected.len(), 80);

    // Signalled once the prompts have been seen and the last row asked for uneven group sizes;
    // the checkpoint lands an iteration or so later, so try again (a fresh directory, a fraction
    // of a second each) until it holds uneven sizes: then both the rates and the pending sizes
    // must survive it for the metrics to match.
    let (resumed, ck) = (0..10)
        .map(|attempt| {
            let dir = fresh_dir(tmp.path(), &format!("resumed-{attempt}"), &reference.join("spec.json"));
            let ck = interrupt(&dir, |rows| {
                rows.len() >= 8 && rows.last().is_some_and(|r| r["knapsack_max_group"].as_f64() > r["knapsack_min_group"].as_f64())
            });
            (dir, ck)
        })
        .find(|(_, ck)| {
            let sizes = ck["next_group_sizes"].as_array().expect("sizes");
            sizes.iter().any(|n| n != &sizes[0])
        })
        .expect("a checkpoint with uneven group sizes pending in 10 tries");
    assert_eq!(ck["format_version"], 3);
    let at = ck["iteration"].as_u64().expect("iteration");
    assert!((8..80).contains(&at), "checkpoint at iteration {at}");
    assert_eq!(ck["plugin_state"]["plugin"], "knapsack", "{}", ck["plugin_state"]);
    assert!(ck["plugin_state"]["hex"].as_str().is_some_and(|h| h.len() > 100), "{}", ck["plugin_state"]);
    let sizes: Vec<u64> = ck["next_group_sizes"].as_array().expect("sizes").iter().filter_map(Value::as_u64).collect();
    assert_eq!((sizes.len(), sizes.iter().sum::<u64>()), (16, 128), "Knapsack's sizes for the next batch");
    // They are the sizes the uninterrupted run generated next.
    let next = &expected[at as usize];
    assert_eq!(next["group_size_max"].as_f64(), sizes.iter().max().map(|&n| n as f64));
    assert_eq!(next["group_size_min"].as_f64(), sizes.iter().filter(|&&n| n > 0).min().map(|&n| n as f64));

    run_ok(&mut job(&resumed));
    assert!(!resumed.join("checkpoint.json").exists(), "removed once the run completed");
    let got = untimed(&rows(&resumed));
    assert_eq!(got.len(), expected.len());
    for (i, (a, b)) in expected.iter().zip(&got).enumerate() {
        assert_eq!(a, b, "row {} differs after the resume at iteration {at}", i + 1);
    }
    assert_eq!(read_json(&reference.join("summary.json"))["param_hash"], read_json(&resumed.join("summary.json"))["param_hash"]);
}

/// A checkpoint whose plugin state the plugin refuses (here: bytes that are not a Knapsack
/// state) fails the resume with a reason naming the run, the plugin and why, and loses nothing:
/// the checkpoint and the interrupted attempt's metrics stay as they were.
#[test]
fn a_refused_plugin_state_fails_the_resume_and_keeps_the_checkpoint() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let sweep = write_sweep(tmp.path(), SWEEP);
    let results = tmp.path().join("results");
    run_ok(drover().arg("run").arg(&sweep).arg("--results").arg(&results));
    let spec = run_dirs(&results).pop().expect("run dir").join("spec.json");
    let dir = fresh_dir(tmp.path(), "refused", &spec);
    let mut ck = interrupt(&dir, |rows| rows.len() >= 6);
    let run_id = ck["run_id"].as_str().expect("run id").to_owned();
    let not_knapsack: String = br#"{"format":"canon","version":1,"state":0}"#.iter().map(|b| format!("{b:02x}")).collect();
    ck["plugin_state"]["hex"] = Value::String(not_knapsack);
    let damaged = serde_json::to_vec(&ck).expect("json");
    std::fs::write(dir.join("checkpoint.json"), &damaged).expect("write");
    let metrics_before = std::fs::read(dir.join("metrics.jsonl")).expect("metrics");

    let out = job(&dir).output().expect("drover-job");
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    let reason = read_json(&dir.join("exit.json"))["reason"].as_str().expect("reason").to_owned();
    for part in [
        format!("run {run_id}: cannot resume from checkpoint `"),
        "plugin `knapsack`: `load_state` refused the state saved by knapsack 0.1.0".to_owned(),
        "not a `knapsack` state version 1: the bytes hold a `canon` state version 1".to_owned(),
        "(the checkpoint is kept".to_owned(),
    ] {
        assert!(reason.contains(&part), "`{part}` missing from: {reason}");
    }
    assert_eq!(std::fs::read(dir.join("checkpoint.json")).expect("kept"), damaged, "the checkpoint is untouched");
    assert_eq!(std::fs::read(dir.join("metrics.jsonl")).expect("metrics"), metrics_before, "so are the metrics");
}
