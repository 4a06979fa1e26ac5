//! Issue 13: how a job chooses what it trains on. A fixed prompt dataset (`run.dataset_size`),
//! DAPO's dynamic sampling (`run.max_gen_batches`: generate until accepted groups fill the
//! batch), Knapsack RL's per-prompt group sizes from the iteration hook, and a plugin built
//! against interface 1.1 running in such a job.

use drover_tests::{artifact, drover, metrics_rows as rows, read_json, run_dirs, run_ok, write_sweep};


fn num(row: &serde_json::Value, key: &str) -> f64 {
    row[key].as_f64().unwrap_or_else(|| panic!("no `{key}` in {row}"))
}

fn mean(xs: impl Iterator<Item = f64>) -> f64 {
    let v: Vec<f64> = xs.collect();
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

/// Sequence-task settings shared by these sweeps: SeqAdd with 2-digit base-5 numbers, as in
/// `configs/llm-algorithms.toml`, at a quarter of its batch.
const SEQ_ADD: &str = r#"
env = "SeqAdd-v0"
vocab = 5
prompt_len = 4
num_steps = 3
group_size = 8
num_envs = 128
hidden = [64, 64]
device = "cpu"
threads = 1
lr = 3e-3
anneal_lr = false
max_grad_norm = 1.0
update_epochs = 1
num_minibatches = 2
"#;

/// The previous interface's plugin (`tests/plugins/v1_1`, recording 1.1 and knowing nothing of
/// 1.2's dataset inputs) trains a dataset run with dynamic sampling on: it is called with the
/// 1.2 inputs among its iteration metrics, asks for no group sizes, and learns (through its
/// sequence-level clipped surrogate, which the job calls in place of its token loss on a
/// sequence task).
#[test]
fn a_plugin_built_against_interface_1_1_trains_a_dataset_run() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let plugin = artifact("libdrover_test_plugin_v1_1.so");
    let sweep = write_sweep(
        tmp.path(),
        &format!(
            r#"name = "v1-1-dataset"
[run]
env = "SeqSort-v0"
plugin = "{}"
vocab = 4
prompt_len = 3
num_steps = 3
group_size = 8
num_envs = 256
total_steps = 115200
hidden = [64, 64]
device = "cpu"
threads = 1
lr = 3e-3
anneal_lr = false
update_epochs = 1
num_minibatches = 4
dataset_size = 64
max_gen_batches = 3
"#,
            plugin.display()
        ),
    );
    let results = tmp.path().join("results");
    run_ok(drover().arg("run").arg(&sweep).arg("--results").arg(&results));
    let run = &run_dirs(&results)[0];
    let summary = read_json(&run.join("summary.json"));
    assert_eq!(summary["plugin"]["interface_version"], "1.1", "{summary}");
    let rows = rows(run);
    assert_eq!(rows.len(), 150);
    for row in &rows {
        assert!(row.as_object().expect("object").keys().all(|k| !k.starts_with("input.")), "inputs logged: {row}");
        // Its keep_group is the default (keep all): one generation batch fills the batch.
        assert_eq!((num(row, "gen_batches"), num(row, "batch_fill")), (1.0, 1.0), "{row}");
    }
    let early = mean(rows[..5].iter().map(|r| num(r, "accuracy")));
    let late = mean(rows[140..].iter().map(|r| num(r, "accuracy")));
    assert!(late > early + 0.5, "accuracy {early:.3} -> {late:.3}: the 1.1 plugin did not learn the dataset");
}

/// A plugin with a sequence-level loss (interface 1.1 `sequence_loss`; `tests/plugins/sequence`,
/// whose token `loss` writes no gradient at all) trains a sequence task through it: the job
/// calls it with whole-response minibatches and each response's log-ratio `Δ_s` (0 on a
/// single epoch's single minibatch, where the policy is still the rollout's), and spreads its
/// `∂L/∂Δ_s` onto the response's tokens, so the policy gets a gradient.
#[test]
fn a_plugins_sequence_level_loss_trains_the_sequence_tasks() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let plugin = artifact("libdrover_test_plugin_sequence.so");
    let sweep = write_sweep(
        tmp.path(),
        &format!(
            // Sorting two binary digits: a random policy is right a quarter of the time, so every
            // rollout has responses with a reward (the fixture's advantage) to learn from.
            "name = \"sequence-loss\"\n[run]\nplugin = \"{}\"\nenv = \"SeqSort-v0\"\nvocab = 2\nprompt_len = 2\nnum_steps = 2\n\
             group_size = 8\nnum_envs = 128\ntotal_steps = 2560\nhidden = [64, 64]\ndevice = \"cpu\"\nthreads = 1\nlr = 3e-3\n\
             anneal_lr = false\nupdate_epochs = 1\nnum_minibatches = 1\n",
            plugin.display()
        ),
    );
    let results = tmp.path().join("results");
    run_ok(drover().arg("run").arg(&sweep).arg("--results").arg(&results));
    let rows = rows(&run_dirs(&results)[0]);
    assert_eq!(rows.len(), 10);
    for row in &rows {
        assert!((num(row, "seq_ratio_mean") - 1.0).abs() < 1e-3, "Δ_s is the response's log-ratio, 0 before any step: {row}");
        assert!(num(row, "grad_norm") > 0.0, "the sequence loss trains: {row}");
    }
}

/// DAPO's dynamic sampling: with `max_gen_batches = 4` the job generates until groups that
/// `keep_group` accepts (mixed outcomes) fill the batch or 4 batches were generated, counts
/// every generated response in `accuracy`, and trains on more informative groups than one
/// batch gives; with the default 1, refused groups are only weighted 0.
#[test]
fn dynamic_sampling_regenerates_until_accepted_groups_fill_the_batch_or_the_cap() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let sweep = write_sweep(
        tmp.path(),
        &format!(
            "name = \"dynamic-sampling\"\n[run]\nplugin = \"dapo\"\ntotal_steps = 15360\n{SEQ_ADD}\
             [sweep]\nseeds = [1]\n[sweep.grid]\n\"run.max_gen_batches\" = [1, 4]\n"
        ),
    );
    let results = tmp.path().join("results");
    run_ok(drover().arg("run").arg(&sweep).arg("--results").arg(&results));
    let runs = run_dirs(&results);
    assert_eq!(runs.len(), 2);
    let (mut single, mut dynamic) = (None, None);
    for run in &runs {
        let spec = read_json(&run.join("spec.json"));
        match spec["run"]["max_gen_batches"].as_u64() {
            None => single = Some(rows(run)),
            Some(4) => dynamic = Some(rows(run)),
            other => panic!("unexpected max_gen_batches {other:?}"),
        }
    }
    let (single, dynamic) = (single.expect("cap 1 run"), dynamic.expect("cap 4 run"));
    assert_eq!((single.len(), dynamic.len()), (40, 40));
    for row in &single {
        assert!(row.get("gen_batches").is_none() && row.get("batch_fill").is_none(), "{row}");
        assert_eq!(num(row, "episodes"), 128.0);
    }
    assert!(single.iter().any(|r| num(r, "kept_group_frac") < 1.0), "DAPO refused no group: nothing to test");
    let mut regenerated = 0;
    for row in &dynamic {
        let (batches, fill) = (num(row, "gen_batches"), num(row, "batch_fill"));
        assert!((1.0..=4.0).contains(&batches), "{row}");
        // The loop stops exactly when the batch is full, or at the cap.
        assert!(fill == 1.0 || batches == 4.0, "stopped early: {row}");
        // Every generated response is an episode of the policy.
        assert_eq!(num(row, "episodes"), 128.0 * batches, "{row}");
        regenerated += usize::from(batches > 1.0);
    }
    assert!(regenerated > 0, "never generated a second batch");
    let fill = mean(dynamic.iter().map(|r| num(r, "batch_fill")));
    let kept = mean(single.iter().map(|r| num(r, "kept_group_frac")));
    assert!(fill > kept + 0.2, "dynamic sampling filled {fill:.3} of the batch, one batch keeps {kept:.3}");
}

/// Knapsack RL on a 64-prompt dataset: once an epoch has measured every prompt's success rate,
/// the plugin's `on_iteration` spreads the batch's budget unevenly over the next prompts, and
/// the job generates exactly the group sizes it asked for (its `knapsack_max_group` of one
/// iteration is the job's `group_size_max` of the next). GRPO on the same dataset keeps groups
/// of `group_size`.
#[test]
fn knapsack_budgets_reach_the_next_generation_batch() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let sweep = write_sweep(
        tmp.path(),
        &format!(
            "name = \"knapsack\"\n[run]\nplugin = \"knapsack\"\ntotal_steps = 23040\ndataset_size = 64\n{SEQ_ADD}\
             [sweep]\nseeds = [2]\n[sweep.grid]\n\"run.plugin\" = [\"knapsack\", \"grpo\"]\n"
        ),
    );
    let results = tmp.path().join("results");
    run_ok(drover().arg("run").arg(&sweep).arg("--results").arg(&results));
    for run in run_dirs(&results) {
        let plugin = read_json(&run.join("summary.json"))["plugin"]["name"].as_str().expect("name").to_owned();
        let rows = rows(&run);
        assert_eq!(rows.len(), 60, "{plugin}");
        if plugin == "grpo" {
            assert!(rows.iter().all(|r| num(r, "group_size_min") == 8.0 && num(r, "group_size_max") == 8.0));
            continue;
        }
        assert_eq!(plugin, "knapsack");
        // 16 prompts per batch: the first epoch (4 iterations) sees every prompt for the first time.
        assert!(rows[..4].iter().all(|r| num(r, "group_size_max") == 8.0), "unseen prompts get group_size");
        for pair in rows.windows(2) {
            assert_eq!(num(&pair[0], "knapsack_max_group"), num(&pair[1], "group_size_max"), "{}\n{}", pair[0], pair[1]);
            assert_eq!(num(&pair[0], "knapsack_min_group"), num(&pair[1], "group_size_min"), "{}\n{}", pair[0], pair[1]);
        }
        let uneven = rows.iter().filter(|r| num(r, "group_size_max") > num(r, "group_size_min")).count();
        assert!(uneven > 40, "only {uneven} of 60 iterations had uneven budgets");
    }
}
