//! Data-driven tests of loading, validation and expansion: each case is input text → expected output.

use std::path::Path;

use crate::config::{load_str, parse_set, Sweep};

const FILE: &str = "configs/x.toml";

const BASE: &str = r#"
name = "t"
[run]
env = "CartPole-v1"
plugin = "ppo"
[params]
gamma = 0.99
"#;

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// Loads + validates; returns the sweep or the error's message.
fn sweep(text: &str, env_pairs: &[(&str, &str)], sets: &[&str]) -> Result<Sweep, String> {
    let file = Path::new(FILE);
    let sets = sets.iter().map(|s| parse_set(s, file)).collect::<Result<Vec<_>, _>>().map_err(|e| e.to_string())?;
    let parsed = load_str(file, text, &env(env_pairs), &sets).map_err(|e| e.to_string())?;
    Sweep::validate(parsed, file).map_err(|e| e.to_string())
}

/// One bad-input case: what it shows, the sweep text, env vars, `--set` arguments, the expected message.
type ErrorCase<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)], &'a [&'a str], &'a str);

/// Review: `--set slurm.time=01:00:00` (Slurm's usual time format) was refused as a TOML time,
/// with advice to quote it that the shell then strips, while `DROVER_SLURM__TIME=01:00:00` was
/// read as the text. Both are the text typed; no setting is a date.
#[test]
fn a_time_given_by_set_or_variable_is_the_text_typed() {
    let by_set = sweep(BASE, &[], &["slurm.time=01:00:00"]).expect("--set");
    let by_env = sweep(BASE, &[("DROVER_SLURM__TIME", "01:00:00")], &[]).expect("variable");
    assert_eq!(by_set.slurm.base.time.as_deref(), Some("01:00:00"));
    assert_eq!(by_env.slurm.base.time, by_set.slurm.base.time);
}

#[test]
fn errors_name_file_key_and_reason() {
    let cases: &[ErrorCase<'_>] = &[
        (
            "unknown run key",
            "name = \"t\"\n[run]\nenv = \"E\"\nplugin = \"p\"\nlearning_rate = 1.0\n",
            &[],
            &[],
            "failed to load sweep file `configs/x.toml`: key `run.learning_rate`: unknown key, expected one of: env, plugin,",
        ),
        (
            "unknown top-level key",
            "name = \"t\"\nfoo = 1\n[run]\nenv = \"E\"\nplugin = \"p\"\n",
            &[],
            &[],
            "failed to load sweep file `configs/x.toml`: key `foo`: unknown key",
        ),
        (
            "wrong type",
            "name = \"t\"\n[run]\nenv = \"E\"\nplugin = \"p\"\nnum_envs = \"eight\"\n",
            &[],
            &[],
            "failed to load sweep file `configs/x.toml`: key `run.num_envs`: wrong type: found string \"eight\", expected a whole number from 1 to 4294967295",
        ),
        (
            "missing required key",
            "name = \"t\"\n[run]\nenv = \"E\"\n",
            &[],
            &[],
            "failed to load sweep file `configs/x.toml`: key `run.plugin`: required key is missing",
        ),
        (
            "missing run table",
            "name = \"t\"\n",
            &[],
            &[],
            "failed to load sweep file `configs/x.toml`: key `run`: required key is missing",
        ),
        (
            "unquoted dotted axis name in the grid (review finding, research)",
            "[sweep.grid]\nrun.lr = [1e-3]\n",
            &[],
            &[],
            "failed to load sweep file `configs/x.toml`: key `sweep.grid.run`: found a table: TOML reads the unquoted key run.lr as nested tables; axis names are dotted keys, so quote the axis name: \"run.lr\" = [0.001]",
        ),
        (
            "unquoted dotted axis name in a case",
            "[[sweep.cases]]\nparams.gamma = 0.9\n",
            &[],
            &[],
            "key `sweep.cases[0].params`: found a table: TOML reads the unquoted key params.gamma as nested tables; axis names are dotted keys, so quote the axis name: \"params.gamma\" = 0.9",
        ),
        (
            "empty grid axis",
            "[sweep.grid]\n\"params.lr\" = []\n",
            &[],
            &[],
            "failed to load sweep file `configs/x.toml`: key `sweep.grid.params.lr`: axis is empty",
        ),
        (
            "empty seeds",
            "[sweep]\nseeds = []\n",
            &[],
            &[],
            "failed to load sweep file `configs/x.toml`: key `sweep.seeds`: axis is empty",
        ),
        (
            "zero seed count",
            "[sweep]\nseeds = { count = 0 }\n",
            &[],
            &[],
            "key `sweep.seeds`: axis is empty",
        ),
        (
            "unknown grid key",
            "[sweep.grid]\n\"run.learning_rate\" = [1.0]\n",
            &[],
            &[],
            "key `sweep.grid.run.learning_rate`: unknown key, expected one of: run.env,",
        ),
        (
            "wrong type in grid",
            "[sweep.grid]\n\"run.num_envs\" = [4, \"x\"]\n",
            &[],
            &[],
            "key `sweep.grid.run.num_envs`: wrong type: found string \"x\", expected a whole number from 1 to 4294967295",
        ),
        (
            "bad range in grid",
            "[sweep.grid]\n\"run.threads\" = [0]\n",
            &[],
            &[],
            "key `sweep.grid.run.threads`: invalid value: must be at least 1",
        ),
        (
            "seed as axis",
            "[sweep.grid]\n\"run.seed\" = [1, 2]\n",
            &[],
            &[],
            "key `sweep.grid.run.seed`: conflict: seeds are swept with `sweep.seeds`",
        ),
        (
            "duplicate grid value after normalization",
            "[sweep.grid]\n\"run.lr\" = [1, 1.0]\n",
            &[],
            &[],
            "key `sweep.grid.run.lr`: duplicate: value 1.0 appears twice",
        ),
        (
            "case key also in grid",
            "[sweep.grid]\n\"params.a\" = [1]\n[[sweep.cases]]\n\"params.a\" = 2\n",
            &[],
            &[],
            "key `sweep.cases[0].params.a`: conflict: `params.a` is also a grid axis",
        ),
        (
            "duplicate case",
            "[[sweep.cases]]\n\"params.gamma\" = 0.99\n[[sweep.cases]]\n",
            &[],
            &[],
            "key `sweep.cases[1]`: duplicate: same configuration as `sweep.cases[0]`",
        ),
        (
            "bad seeds shape",
            "[sweep]\nseeds = \"1,2\"\n",
            &[],
            &[],
            "key `sweep.seeds`: wrong type: found string \"1,2\", expected a list of seeds like [1, 2, 3] or a table",
        ),
        (
            "bad device",
            "[sweep.grid]\n\"run.device\" = [\"tpu\"]\n",
            &[],
            &[],
            "key `sweep.grid.run.device`: invalid value: `tpu`, expected one of: cpu, cuda, auto",
        ),
        (
            "wrong type from env",
            "",
            &[("DROVER_RUN__NUM_ENVS", "many")],
            &[],
            "key `run.num_envs` (from environment variable `DROVER_RUN__NUM_ENVS`): wrong type: found string \"many\", expected a whole number from 1 to 4294967295",
        ),
        (
            "unknown key from env",
            "",
            &[("DROVER_RUN__NUM_ENV", "3")],
            &[],
            "key `run.num_env` (from environment variable `DROVER_RUN__NUM_ENV`): unknown key",
        ),
        (
            "wrong type from --set",
            "",
            &[],
            &["run.lr=fast"],
            "key `run.lr` (from `--set run.lr=fast`): wrong type: found string \"fast\", expected a number",
        ),
        ("bad --set: no =", "", &[], &["run.lr"], "bad --set syntax: `run.lr` is not of the form key=value"),
        ("bad --set: empty key segment", "", &[], &["run..lr=1"], "bad --set syntax: `run..lr=1`: the key must be dotted"),
        (
            "bad --set: broken TOML",
            "",
            &[],
            &["sweep.seeds=[1,"],
            "key `sweep.seeds` (from `--set sweep.seeds=[1,`): bad --set syntax: cannot parse `[1,` as a TOML value",
        ),
        (
            "bad --set: empty value",
            "",
            &[],
            &["run.env="],
            "key `run.env` (from `--set run.env=`): bad --set syntax: the value is empty",
        ),
        ("bad name", "name = \"a/b\"\n[run]\nenv = \"E\"\nplugin = \"p\"\n", &[], &[], "key `name`: invalid value: `a/b`"),
        ("zero parallel", "max_parallel = 0\n", &[], &[], "key `max_parallel`: invalid value: must be at least 1"),
        ("toml syntax", "[run\n", &[], &[], "failed to load sweep file `configs/x.toml`: invalid TOML:"),
        (
            "too many runs",
            "[sweep]\nseeds = { count = 1000 }\n[sweep.grid]\n\"params.a\" = [1,2,3,4,5,6,7,8,9,10]\n\"params.b\" = [1,2,3,4,5,6,7,8,9,10,11]\n",
            &[],
            &[],
            "key `sweep`: invalid value: expands to 110000 runs (10 `params.a` × 11 `params.b` × 1000 seeds), more than 100000",
        ),
    ];
    for (name, extra, env_pairs, sets, expected) in cases {
        // Top-level keys must precede tables in TOML, so a case's text goes before or after BASE.
        let text = if extra.starts_with("name") {
            extra.to_string()
        } else if extra.starts_with('[') {
            format!("{BASE}{extra}")
        } else {
            format!("{extra}{BASE}")
        };
        match sweep(&text, env_pairs, sets) {
            Ok(_) => panic!("{name}: expected an error containing {expected:?}, got a valid sweep"),
            Err(msg) => assert!(msg.contains(expected), "{name}:\n  got      {msg}\n  expected {expected}"),
        }
    }
}

#[test]
fn run_counts_are_cases_times_grid_times_seeds() {
    let cases: &[(&str, &str, usize)] = &[
        ("no axes: one run with run.seed", "", 1),
        ("seed list", "[sweep]\nseeds = [1, 2, 3]\n", 3),
        ("seed range", "[sweep]\nseeds = { count = 5, start = 10 }\n", 5),
        ("grid 2x3", "[sweep.grid]\n\"params.a\" = [1, 2]\n\"run.lr\" = [0.1, 0.2, 0.3]\n", 6),
        (
            "grid x cases x seeds",
            "[sweep]\nseeds = [1, 2]\n[sweep.grid]\n\"params.a\" = [1, 2]\n\"run.lr\" = [0.1, 0.2, 0.3]\n[[sweep.cases]]\n\"params.b\" = 0\n[[sweep.cases]]\n\"params.b\" = 1\n[[sweep.cases]]\n\"run.num_envs\" = 4\n",
            2 * 6 * 3,
        ),
    ];
    for (name, extra, expected) in cases {
        let sweep = sweep(&format!("{BASE}{extra}"), &[], &[]).unwrap_or_else(|e| panic!("{name}: {e}"));
        let runs = sweep.expand();
        assert_eq!(runs.len(), *expected, "{name}");
        assert_eq!(sweep.run_count(), *expected, "{name}");
        let ids: std::collections::BTreeSet<_> = runs.iter().map(|r| r.run_id.clone()).collect();
        assert_eq!(ids.len(), runs.len(), "{name}: run ids must be distinct");
    }
}

/// Renders an expansion compactly: one line per run.
fn render(sweep: &Sweep) -> String {
    sweep
        .expand()
        .iter()
        .map(|r| format!("{} seed={} lr={} gamma={}", r.label, r.seed, r.run["lr"], r.params["gamma"]))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn expansion_order_labels_and_values() {
    let text = format!(
        "{BASE}[sweep]\nseeds = {{ count = 2, start = 7 }}\n[sweep.grid]\n\"run.lr\" = [1, 0.5]\n[[sweep.cases]]\n[[sweep.cases]]\n\"params.gamma\" = 0.9\n"
    );
    let s = sweep(&text, &[], &[]).unwrap();
    let expected = "\
run.lr=1.0 seed=7 lr=1.0 gamma=0.99
run.lr=1.0 seed=8 lr=1.0 gamma=0.99
run.lr=0.5 seed=7 lr=0.5 gamma=0.99
run.lr=0.5 seed=8 lr=0.5 gamma=0.99
params.gamma=0.9,run.lr=1.0 seed=7 lr=1.0 gamma=0.9
params.gamma=0.9,run.lr=1.0 seed=8 lr=1.0 gamma=0.9
params.gamma=0.9,run.lr=0.5 seed=7 lr=0.5 gamma=0.9
params.gamma=0.9,run.lr=0.5 seed=8 lr=0.5 gamma=0.9";
    assert_eq!(render(&s), expected);
    let runs = s.expand();
    // Seeds share the config id; configs do not.
    assert_eq!(runs[0].config_id, runs[1].config_id);
    assert_ne!(runs[0].run_id, runs[1].run_id);
    assert_ne!(runs[0].config_id, runs[2].config_id);
}

/// The seeds of a configuration share its tables (one copy per configuration, not per run), and
/// each run's own `[run]` table carries its seed, as its spec.json records it.
#[test]
fn seeds_of_a_configuration_share_its_tables_and_each_run_table_has_its_seed() {
    let text = format!("{BASE}[sweep]\nseeds = [3, 4]\n[sweep.grid]\n\"run.lr\" = [1, 0.5]\n");
    let runs = sweep(&text, &[], &[]).unwrap().expand();
    assert_eq!(runs.len(), 4);
    let (a, b, c) = (&runs[0], &runs[1], &runs[2]);
    assert_eq!((a.seed, b.seed, c.seed), (3, 4, 3));
    assert!(std::sync::Arc::ptr_eq(&a.run, &b.run) && std::sync::Arc::ptr_eq(&a.params, &b.params));
    assert!(std::sync::Arc::ptr_eq(&a.axes, &b.axes) && std::sync::Arc::ptr_eq(&a.label, &b.label));
    assert!(!std::sync::Arc::ptr_eq(&a.run, &c.run), "another configuration has its own tables");
    assert_eq!(a.run.get("seed"), None, "the shared table leaves the seed out");
    for run in &runs {
        let table = run.run_table();
        assert_eq!(table["seed"], run.seed);
        assert_eq!(table.len(), run.run.len() + 1);
        assert_eq!(crate::config::RunId::of(&serde_json::json!({"run": table, "params": *run.params, "plugin": "ppo"})), run.run_id);
    }
}

#[test]
fn ids_are_stable_under_key_reordering_and_number_spelling() {
    let a = "name = \"t\"\n[run]\nenv = \"CartPole-v1\"\nplugin = \"ppo\"\nlr = 0.001\nnum_envs = 4\n[params]\ngamma = 0.99\nclip = 0.2\n[sweep]\nseeds = [1, 2]\n";
    let b = "[sweep]\nseeds = [1, 2]\n[params]\nclip = 0.2\ngamma = 0.99\n[run]\nnum_envs = 4\nlr = 1e-3\nplugin = \"ppo\"\nenv = \"CartPole-v1\"\n";
    let b = format!("name = \"other-name\"\n{b}");
    let ids = |text: &str| sweep(text, &[], &[]).unwrap().expand().into_iter().map(|r| r.run_id).collect::<Vec<_>>();
    assert_eq!(ids(a), ids(&b));
    // Overrides that give the same resolved config give the same ids, too.
    let via_set = sweep(BASE, &[], &["run.lr=1e-3", "run.num_envs=4", "params.clip=0.2", "sweep.seeds=[1,2]"]).unwrap();
    assert_eq!(via_set.expand().into_iter().map(|r| r.run_id).collect::<Vec<_>>(), ids(a));
    // And a different value gives a different id.
    let c = a.replace("lr = 0.001", "lr = 0.002");
    assert_ne!(ids(a), ids(&c));
}

#[test]
fn overrides_apply_in_order_file_env_set() {
    let text = format!("{BASE}[sweep]\nseeds = [1]\n");
    let s = sweep(&text, &[("DROVER_RUN__NUM_ENVS", "16"), ("DROVER_JOB_BIN", "/x"), ("DROVER_PLUGIN_PATH", "/y")], &[])
        .unwrap();
    assert_eq!(s.expand()[0].run["num_envs"], 16);
    let s = sweep(&text, &[("DROVER_RUN__NUM_ENVS", "16")], &["run.num_envs=32", "sweep.seeds=[4,5]"]).unwrap();
    let runs = s.expand();
    assert_eq!(runs[0].run["num_envs"], 32);
    assert_eq!(runs.iter().map(|r| r.seed).collect::<Vec<_>>(), [4, 5]);
    let s = sweep(&text, &[], &["sweep.grid.params.clip=[0.1,0.3]"]).unwrap();
    assert_eq!(s.expand().iter().map(|r| &*r.label).collect::<Vec<_>>(), ["params.clip=0.1", "params.clip=0.3"]);
    // The axis quoted as the sweep file writes it is the same axis.
    let s = sweep(&text, &[], &["sweep.grid.\"params.clip\"=[0.1,0.3]"]).unwrap();
    assert_eq!(s.expand().iter().map(|r| &*r.label).collect::<Vec<_>>(), ["params.clip=0.1", "params.clip=0.3"]);
    let s = sweep(&text, &[], &["run.\"num_envs\"=32", "'sweep'.seeds=[9]"]).unwrap();
    assert_eq!((s.expand()[0].run["num_envs"].as_u64(), s.expand()[0].seed), (Some(32), 9), "quoted plain keys");
}

/// The sweep file of the override-replacement tests: two seeds from 5, a 2 × 2 grid, two cases.
const AXES: &str = "[sweep]\nseeds = { count = 2, start = 5 }\n[sweep.grid]\n\"params.a\" = [1, 2]\n\"params.b\" = [3, 4]\n[[sweep.cases]]\n\"params.c\" = 0\n[[sweep.cases]]\n\"params.c\" = 1\n";

/// Each run as `label seed`, in expansion order.
fn labels(s: &Sweep) -> Vec<String> {
    s.expand().iter().map(|r| format!("{} {}", r.label, r.seed)).collect()
}

/// An override replaces the value at its key whole, a table too: `--set 'sweep.grid={}'` (or
/// `DROVER_SWEEP__GRID={}`) clears the file's grid and `--set 'sweep.cases=[]'` its cases, a
/// non-empty table is the whole new value, and a dotted key changes one entry. Before, figment
/// joined an override's table with the file's, so `sweep.grid={}` ran the file's whole grid.
#[test]
fn overrides_replace_the_value_at_their_key_whole() {
    let text = format!("{BASE}{AXES}");
    let with = |env_pairs: &[(&str, &str)], sets: &[&str]| {
        labels(&sweep(&text, env_pairs, sets).unwrap_or_else(|e| panic!("{env_pairs:?} {sets:?}: {e}")))
    };
    assert_eq!(with(&[], &[]).len(), 2 * 2 * 2 * 2, "the file alone");
    let cases_only = ["params.c=0 5", "params.c=0 6", "params.c=1 5", "params.c=1 6"];
    assert_eq!(with(&[], &["sweep.grid={}"]), cases_only);
    assert_eq!(with(&[("DROVER_SWEEP__GRID", "{}")], &[]), cases_only);
    let grid_only = with(&[], &["sweep.cases=[]"]);
    assert_eq!(grid_only.len(), 8);
    assert_eq!(grid_only[..2], ["params.a=1,params.b=3 5", "params.a=1,params.b=3 6"]);
    assert_eq!(with(&[], &["sweep.grid={}", "sweep.cases=[]"]), ["base 5", "base 6"]);
    assert_eq!(with(&[], &["sweep={}"]), ["base 0"], "`sweep={{}}` clears seeds too: `run.seed` it is");
    // A non-empty table is the new grid, not an axis added to the file's.
    assert_eq!(
        with(&[], &["sweep.grid={\"params.x\"=[7]}", "sweep.cases=[]"]),
        ["params.x=7 5", "params.x=7 6"]
    );
    // `start` is not kept from the file's `{ count = 2, start = 5 }`.
    assert_eq!(with(&[], &["sweep.grid={}", "sweep.cases=[]", "sweep.seeds={count=1}"]), ["base 0"]);
    // A dotted key replaces that axis alone and keeps the others.
    let one_axis = with(&[], &["sweep.grid.params.a=[9]", "sweep.cases=[]"]);
    assert_eq!(one_axis, ["params.a=9,params.b=3 5", "params.a=9,params.b=3 6", "params.a=9,params.b=4 5", "params.a=9,params.b=4 6"]);
    // Later overrides win, whatever the depth: a clear after an axis clears it, an axis after a clear is the only one.
    assert_eq!(with(&[], &["sweep.grid.params.x=[7]", "sweep.grid={}", "sweep.cases=[]"]), ["base 5", "base 6"]);
    assert_eq!(with(&[("DROVER_SWEEP__GRID", "{}")], &["sweep.grid.params.x=[7]", "sweep.cases=[]"]), ["params.x=7 5", "params.x=7 6"]);
    // Other tables are replaced the same way: `[params]` given whole loses `gamma`.
    let params = sweep(&text, &[], &["params={clip=0.2}", "sweep={}"]).expect("valid").expand()[0].params.as_ref().clone();
    assert_eq!(serde_json::Value::Object(params), serde_json::json!({"clip": 0.2}));
    // A fault in the part replaced is gone with it.
    let bad_grid = format!("{BASE}[sweep.grid]\n\"run.learning_rate\" = [1]\n");
    assert!(sweep(&bad_grid, &[], &[]).is_err());
    assert_eq!(labels(&sweep(&bad_grid, &[], &["sweep.grid={}"]).expect("grid cleared")), ["base 0"]);
}

/// The rule of `overrides_replace_the_value_at_their_key_whole` through `config::load`, the
/// function `drover run` calls: a sweep file on disk, `--set` arguments as typed.
#[test]
fn clearing_a_grid_from_the_command_line_runs_the_base_config() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let file = tmp.path().join("sweep.toml");
    std::fs::write(&file, format!("{BASE}{AXES}")).expect("sweep file");
    let runs = |sets: &[&str]| {
        let sets = sets.iter().map(|s| parse_set(s, &file)).collect::<Result<Vec<_>, _>>().expect("sets parse");
        let (parsed, _text) = crate::config::load(&file, &[], &sets).expect("loads");
        labels(&Sweep::validate(parsed, &file).expect("valid"))
    };
    assert_eq!(runs(&[]).len(), 16);
    assert_eq!(runs(&["sweep.grid={}", "sweep.cases=[]"]), ["base 5", "base 6"]);
    assert_eq!(runs(&["sweep.grid = { \"params.a\" = [2] }", "sweep.cases=[]", "sweep.seeds=[1]"]), ["params.a=2 1"]);
}

#[test]
fn environment_and_sequence_task_keys_are_checked() {
    let seq = |extra: &str| {
        format!(
            "name = \"t\"\n[run]\nenv = \"SeqAdd-v0\"\nplugin = \"grpo\"\nnum_envs = 64\nnum_minibatches = 4\n{extra}"
        )
    };
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "unknown env",
            BASE.replace("CartPole-v1", "Acrobot-v1"),
            "key `run.env`: invalid value: unknown environment `Acrobot-v1` (known: CartPole-v1, SeqReverse-v0",
        ),
        (
            "sequence key on CartPole",
            BASE.replace("[params]", "vocab = 4\n[params]"),
            "key `run.vocab`: invalid value: is a sequence-task setting; `CartPole-v1` has no use for it",
        ),
        (
            "num_steps is the response length",
            seq("prompt_len = 4\nnum_steps = 128\n"),
            "key `run.num_steps`: invalid value: `SeqAdd-v0` with prompt_len = 4 generates 3-token responses and a rollout is one response per env: set num_steps = 3",
        ),
        ("add needs an even prompt", seq("prompt_len = 3\nnum_steps = 2\n"), "key `run.prompt_len`: invalid value: `SeqAdd-v0` adds two numbers"),
        ("groups fit the ranks", seq("prompt_len = 4\nnum_steps = 3\ngroup_size = 24\n"), "key `run.group_size`: invalid value: num_envs / ranks = 64 is not a multiple of group_size = 24"),
        ("vocab", seq("prompt_len = 4\nnum_steps = 3\nvocab = 1\n"), "key `run.vocab`: invalid value: must be at least 2, got 1"),
        ("reference policy", seq("prompt_len = 4\nnum_steps = 3\nreference_policy = \"sft\"\n"), "key `run.reference_policy`: invalid value: `sft`, expected one of: none, initial"),
        ("experts leave a sampled response", seq("prompt_len = 4\nnum_steps = 3\ngroup_size = 4\nexpert_per_group = 4\n"), "key `run.expert_per_group`: invalid value: must be less than group_size = 4 (each prompt group needs a sampled response), got 4"),
        (
            "minibatches divide the batch",
            BASE.replace("[params]", "num_envs = 8\nnum_steps = 128\nnum_minibatches = 3\n[params]"),
            "key `run.num_minibatches`: invalid value: must divide the batch, num_envs * num_steps = 8 * 128 = 1024",
        ),
        ("experts are for sequence tasks", BASE.replace("[params]", "expert_per_group = 1\n[params]"), "key `run.expert_per_group`: invalid value: is a sequence-task setting; `CartPole-v1` has no use for it"),
        // Failure-injection review D3: sizes no engine can index passed, and every launched
        // run failed (a rerun's rewritten sweep.json then hid the runs completed before).
        (
            "batch beyond 32-bit indices",
            BASE.replace("[params]", "num_envs = 100000000\nnum_steps = 128\nnum_minibatches = 1\n[params]"),
            "key `run.num_envs`: invalid value: num_envs * num_steps = 100000000 * 128 = 12800000000 must be at most 2^32 - 1",
        ),
        (
            "network beyond 32-bit indices",
            BASE.replace("[params]", "hidden = [100000, 100000]\n[params]"),
            "key `run.hidden`: invalid value: [100000, 100000] gives the policy and value networks 20001500003 parameters; at most 2^32 - 1",
        ),
        (
            "network beyond 64 bits",
            BASE.replace("[params]", "hidden = [4000000000, 4000000000]\n[params]"),
            "key `run.hidden`: invalid value: [4000000000, 4000000000] gives the policy and value networks more than 2^64 parameters",
        ),
        ("threads", BASE.replace("[params]", "threads = 100000\n[params]"), "key `run.threads`: invalid value: must be at most 1024 (CPU threads per rank), got 100000"),
    ];
    for (name, text, expected) in cases {
        match sweep(&text, &[], &[]) {
            Ok(_) => panic!("{name}: expected an error containing {expected:?}, got a valid sweep"),
            Err(msg) => assert!(msg.contains(expected), "{name}:\n  got      {msg}\n  expected {expected}"),
        }
    }
    let experts = sweep(&seq("prompt_len = 4\nnum_steps = 3\nexpert_per_group = 1\n"), &[], &[]).expect("valid");
    assert_eq!(experts.expand()[0].run["expert_per_group"].as_u64(), Some(1));
    let ok = sweep(&seq("prompt_len = 4\nnum_steps = 3\nreference_policy = \"initial\"\n"), &[], &[]).expect("valid");
    let run = &ok.expand()[0].run;
    assert_eq!((run["env"].as_str(), run["num_steps"].as_u64(), run["reference_policy"].as_str()), (Some("SeqAdd-v0"), Some(3), Some("initial")));
    // Unset sequence keys stay out of the resolved run, so CartPole run ids are unchanged.
    let cartpole = sweep(BASE, &[], &[]).expect("valid");
    assert!(cartpole.expand()[0]
        .run
        .keys()
        .all(|k| !["vocab", "group_size", "prompt_len", "reference_policy", "expert_per_group"].contains(&k.as_str())));
}

/// Issue 12: what the property tests found, and the path rules, each as a plain case.
#[test]
fn issue12_bad_values_are_refused_with_their_key() {
    let long = "n".repeat(256);
    let cases: Vec<(&str, String, &[&str], &str)> = vec![
        // serde_json turned NaN and infinities into `null` silently: `nan` and `inf` had the same id.
        ("nan param", BASE.replace("gamma = 0.99", "gamma = nan"), &[], "key `params.gamma`: invalid value: found `NaN`, expected a finite number"),
        ("inf axis", format!("{BASE}[sweep.grid]\n\"params.a\" = [1.0, inf]\n"), &[], "key `sweep.grid.params.a[1]`: invalid value: found `inf`"),
        ("-inf case", format!("{BASE}[[sweep.cases]]\n\"params.a\" = {{ b = -inf }}\n"), &[], "key `sweep.cases[0].params.a.b`: invalid value: found `-inf`"),
        // A seed range was materialized before its size was checked: this one allocated 8 TB.
        ("huge seed range", format!("{BASE}[sweep]\nseeds = {{ count = 1000000000000 }}\n"), &[], "key `sweep.seeds`: invalid value: expands to more than 100000 runs"),
        // Axis values were each checked against the base alone, never together.
        (
            "axes invalid together",
            "name = \"c\"\n[run]\nenv = \"SeqSort-v0\"\nplugin = \"grpo\"\nnum_envs = 8\nnum_steps = 3\ngroup_size = 2\nnum_minibatches = 2\n[sweep.grid]\n\"run.num_minibatches\" = [1]\n\"run.ranks\" = [2]\n[[sweep.cases]]\n\"run.num_envs\" = 6\n".into(),
            &[],
            "key `run.group_size`: invalid value: num_envs / ranks = 3 is not a multiple of group_size = 2 (a prompt's group stays on one rank) (in the runs with run.num_envs=6, run.num_minibatches=1, run.ranks=2)",
        ),
        ("grid and case together", format!("{BASE}[sweep.grid]\n\"run.ranks\" = [1, 4]\n[[sweep.cases]]\n\"run.num_envs\" = 6\n"), &[], "key `sweep.grid.run.ranks`: invalid value: must divide num_envs"),
        (
            "cases equal once defaults are spelled out",
            "name = \"c\"\n[run]\nenv = \"SeqSort-v0\"\nplugin = \"grpo\"\nnum_envs = 8\nnum_steps = 3\n[[sweep.cases]]\n\"run.group_size\" = 8\n[[sweep.cases]]\n\"run.reference_policy\" = \"none\"\n".into(),
            &[],
            "key `sweep.cases[1]`: duplicate: same configuration as `sweep.cases[0]`",
        ),
        // Review F6: seeds above i64::MAX trained, then lost their seed in the analysis tables.
        ("seed range past i64", format!("{BASE}[sweep]\nseeds = {{ count = 2, start = 9223372036854775807 }}\n"), &[], "key `sweep.seeds`: invalid value: seed 9223372036854775808 is above the largest seed, 9223372036854775807 (2^63 - 1, what the analysis tables hold)"),
        // Review F11: dates leaked figment's private table or were called "a table".
        ("date in params", BASE.replace("gamma = 0.99", "clip_coef = 2024-01-01"), &[], "key `params.clip_coef`: wrong type: found a date, `2024-01-01`: TOML dates and times are no value of a sweep (JSON has none); if it is text, quote it: \"2024-01-01\""),
        ("date in run", BASE.replace("[params]", "lr = 2024-01-01\n[params]"), &[], "key `run.lr`: wrong type: found a date, `2024-01-01`"),
        ("date in seeds", format!("{BASE}[sweep]\nseeds = [1, 2024-01-01T10:00:00Z]\n"), &[], "key `sweep.seeds[1]`: wrong type: found a date, `2024-01-01T10:00:00Z`"),
        ("date in a grid", format!("{BASE}[sweep.grid]\n\"params.t\" = [10:30:00]\n"), &[], "key `sweep.grid.params.t[0]`: wrong type: found a date, `10:30:00`"),
        ("date in a list from --set", BASE.into(), &["params.days=[2024-01-01]"], "key `params.days[0]` (from `--set params.days=[2024-01-01]`): wrong type: found a date"),
        // Review F13: wording.
        ("empty env", BASE.replace("env = \"CartPole-v1\"", "env = \"\""), &[], "key `run.env`: invalid value: must not be empty"),
        ("empty plugin", BASE.into(), &["run.plugin=''"], "key `run.plugin` (from `--set run.plugin=''`): invalid value: must not be empty"),
        ("max_parallel below 0", BASE.replace("name = \"t\"", "name = \"t\"\nmax_parallel = -1"), &[], "key `max_parallel`: invalid value: found `-1`, expected a whole number, 1 or more"),
        (".001", BASE.into(), &["run.lr=.001"], "key `run.lr` (from `--set run.lr=.001`): bad --set syntax: `.001` is not a TOML number: write `0.001`"),
        ("-.5", BASE.into(), &["params.x=-.5"], "`-.5` is not a TOML number: write `-0.5`"),
        ("seeds = 3", format!("{BASE}[sweep]\nseeds = 3\n"), &[], "key `sweep.seeds`: wrong type: found `3`, expected a list of seeds like [1, 2, 3] or a table like { count = 3, start = 1 } (for 3 seeds: `{ count = 3 }`, seeds 0 to 2, or `[1, 2, 3]`)"),
        ("run.seed beside seeds", BASE.replace("[params]", "seed = 5\n[params]") + "[sweep]\nseeds = [1]\n", &[], "key `run.seed`: conflict: `sweep.seeds` gives every run its seed, so `run.seed = 5` would be ignored: put it in `sweep.seeds` or remove it"),
        ("non-ASCII name", BASE.replace("name = \"t\"", "name = \"ünï\""), &[], "made of ASCII letters, digits"),
        ("odd default prompt_len", "name = \"c\"\n[run]\nenv = \"SeqAdd-v0\"\nplugin = \"grpo\"\n".into(), &[], "use an even length, got 3 (the default)"),
        // Review F9: a key in the wrong table says where it belongs.
        ("seeds under grid", format!("{BASE}[sweep.grid]\n\"params.a\" = [1]\nseeds = [1, 2]\n"), &[], "key `sweep.grid.seeds`: unknown key, expected one of: run.env, "),
        ("seeds under grid, hint", format!("{BASE}[sweep.grid]\nseeds = [1, 2]\n"), &[], "; `seeds` is a key of `[sweep]`, and a key belongs to the table header above it: move it above `[sweep.grid]` and `[[sweep.cases]]`"),
        ("max_parallel in run", BASE.replace("[params]", "max_parallel = 2\n[params]"), &[], "key `run.max_parallel`: unknown key, expected one of: env, plugin, num_envs, num_steps, total_steps, hidden, device, ranks, threads, seed, lr, anneal_lr, adam_eps, max_grad_norm, update_epochs, num_minibatches, success_return, stop_at_success, group_size, vocab, prompt_len, reference_policy, expert_per_group, dataset_size, max_gen_batches; `max_parallel` is a top-level key, and a key belongs to the table header above it: write it before the first table header"),
        ("gamma in run", BASE.replace("[params]", "gamma = 0.9\n[params]"), &[], "key `run.gamma`: unknown key, expected one of: env, "),
        ("gamma in run, hint", BASE.replace("[params]", "gamma = 0.9\n[params]"), &[], "; a parameter of the plugin goes in `[params]`: `gamma` there is `params.gamma`"),
        ("axis lr without table", format!("{BASE}[sweep.grid]\n\"lr\" = [1e-3]\n"), &[], "key `sweep.grid.lr`: unknown key, expected one of: run.env, "),
        ("axis lr, hint", format!("{BASE}[sweep.grid]\n\"lr\" = [1e-3]\n"), &[], "; an axis names its table: did you mean `run.lr`?"),
        ("axis gamma, hint", format!("{BASE}[[sweep.cases]]\n\"gamma\" = 0.9\n"), &[], "key `sweep.cases[0].gamma`: unknown key, expected one of: run.env, "),
        ("axis gamma in a case, hint", format!("{BASE}[[sweep.cases]]\n\"gamma\" = 0.9\n"), &[], "; an axis names its table: did you mean `params.gamma`?"),
        ("axis under sweep", format!("{BASE}[sweep]\n\"run.lr\" = [1e-3]\n"), &[], "; `run.lr` is an axis: its values go under `[sweep.grid]` (a list) or in a `[[sweep.cases]]` entry (one value)"),
        ("seeds at the top", BASE.replace("name = \"t\"", "name = \"t\"\nseeds = [1, 2]"), &[], "; `seeds` is a key of `[sweep]`, and a key belongs to the table header above it: write it under `[sweep]`"),
        // Review F5: lists where a table belongs were read field by field, or accepted.
        ("[[run]]", "name = \"t\"\n[[run]]\nenv = \"CartPole-v1\"\nplugin = \"ppo\"\n".into(), &[], "key `run`: wrong type: found a list, expected a table (`[[run]]` makes a list of tables: write `[run]`)"),
        ("[[sweep]]", format!("{BASE}[[sweep]]\nseeds = [1, 2]\n"), &[], "key `sweep`: wrong type: found a list, expected a table (`[[sweep]]` makes a list of tables: write `[sweep]`)"),
        ("[[local]]", format!("{BASE}[[local]]\nmax_retries = 1\n"), &[], "key `local`: wrong type: found a list, expected a table (`[[local]]` makes a list of tables: write `[local]`)"),
        ("[[sweep.grid]]", format!("{BASE}[[sweep.grid]]\n\"params.a\" = [1]\n"), &[], "key `sweep.grid`: wrong type: found a list, expected a table (`[[sweep.grid]]` makes a list of tables: write `[sweep.grid]`)"),
        ("positional run", "name = \"t\"\nrun = [\"CartPole-v1\", \"ppo\", 16]\n".into(), &[], "key `run`: wrong type: found a list, expected a table (a list gives no key names: write `[run]` with `key = value` lines)"),
        ("positional sweep", BASE.replace("name = \"t\"", "name = \"t\"\nsweep = [[1, 2]]"), &[], "key `sweep`: wrong type: found a list, expected a table"),
        ("positional --set", BASE.into(), &["params=[1]"], "key `params` (from `--set params=[1]`): wrong type: found a list, expected a table"),
        ("--set with a second key", BASE.into(), &["run.lr=1\nfoo = 2"], "key `run.lr` (from `--set run.lr=1\nfoo = 2`): bad --set syntax: `1\\nfoo = 2` is not one TOML value"),
        // Paths and names (issue 12, item 6).
        ("long name", BASE.replace("name = \"t\"", &format!("name = \"{long}\"")), &[], "key `name`: invalid value: 256 bytes long; a sweep name has at most 255"),
        ("name with newline", BASE.replace("name = \"t\"", "name = \"a\\nb\""), &[], "key `name`: invalid value: `a\\nb`: a sweep name is non-empty"),
        ("name ..", BASE.replace("name = \"t\"", "name = \"..\""), &[], "key `name`: invalid value: `..`"),
        ("results_dir NUL", format!("results_dir = \"r\\u0000x\"\n{BASE}"), &[], "key `results_dir`: invalid value: `r\\0x` contains the control character '\\0'; paths may not"),
        ("results_dir newline", format!("results_dir = \"r\\nx\"\n{BASE}"), &[], "key `results_dir`: invalid value: `r\\nx` contains the control character '\\n'"),
        ("results_dir empty", format!("results_dir = \"\"\n{BASE}"), &[], "key `results_dir`: invalid value: the path is empty"),
        ("results_dir long component", format!("results_dir = \"/tmp/{long}/r\"\n{BASE}"), &[], "key `results_dir`: invalid value: a path component is 256 bytes long; at most 255"),
        ("plugin_path newline", format!("plugin_path = [\"/ok\", \"/a\\nb\"]\n{BASE}"), &[], "key `plugin_path[1]`: invalid value: `/a\\nb` contains the control character"),
        ("plugin ..", BASE.replace("plugin = \"ppo\"", "plugin = \"..\""), &[], "key `run.plugin`: invalid value: `..` is neither a plugin name"),
        ("plugin name with newline via axis", format!("{BASE}[sweep.grid]\n\"run.plugin\" = [\"ppo\", \"p\\nq\"]\n"), &[], "key `sweep.grid.run.plugin`: invalid value: `p\\nq` is neither a plugin name"),
        ("plugin path with NUL via --set", BASE.into(), &["run.plugin=\"/x/\\u0000.so\""], "key `run.plugin`: invalid value: `/x/\\0.so` contains the control character"),
        ("plugin name too long", BASE.replace("plugin = \"ppo\"", &format!("plugin = \"{}\"", "p".repeat(201))), &[], "key `run.plugin`: invalid value: a plugin name has at most 200 bytes, this one 201"),
    ];
    for (name, text, sets, expected) in cases {
        match sweep(&text, &[], sets) {
            Ok(_) => panic!("{name}: expected an error containing {expected:?}, got a valid sweep"),
            Err(msg) => assert!(msg.contains(expected), "{name}:\n  got      {msg}\n  expected {expected}"),
        }
    }
}

/// Issue 12: values that are only valid together are accepted together, and spelling a default
/// out gives the id of leaving it out.
#[test]
fn issue12_axes_are_judged_together_and_defaults_do_not_change_ids() {
    // `num_envs = 6` with `ranks = 3`: each was checked against the base (8 envs, 1 rank) and refused.
    let together = sweep(&format!("{BASE}[[sweep.cases]]\n\"run.num_envs\" = 6\n\"run.ranks\" = 3\n"), &[], &[]).expect("valid together");
    assert_eq!(together.expand()[0].run["ranks"], 3);

    let seq = "name = \"c\"\n[run]\nenv = \"SeqSort-v0\"\nplugin = \"grpo\"\nnum_envs = 8\nnum_steps = 3\n";
    let ids = |text: &str| sweep(text, &[], &[]).unwrap_or_else(|e| panic!("{e}")).expand().into_iter().map(|r| r.run_id).collect::<Vec<_>>();
    let spelled = format!("{seq}group_size = 8\nvocab = 8\nprompt_len = 3\nreference_policy = \"none\"\n");
    assert_eq!(ids(seq), ids(&spelled));
    assert_ne!(ids(seq), ids(&format!("{seq}vocab = 9\n")));
    assert_ne!(ids(seq), ids(&format!("{seq}reference_policy = \"initial\"\n")));
    // Sequence runs carry their task settings explicitly; CartPole runs still carry none.
    let run = &sweep(seq, &[], &[]).expect("valid").expand()[0].run;
    assert_eq!((run["group_size"].as_u64(), run["vocab"].as_u64(), run["prompt_len"].as_u64()), (Some(8), Some(8), Some(3)));
}

/// Every optional `[run]` key written at the value its absence means keeps the id of leaving it
/// out, except `expert_per_group = 0`: ids hashed it as written before, and sweeps that wrote it
/// keep their runs (review F3; `plan` refuses two cases that differ only by it).
#[test]
fn every_spelled_out_default_keeps_the_id() {
    let seq = "name = \"c\"\n[run]\nenv = \"SeqSort-v0\"\nplugin = \"grpo\"\nnum_envs = 8\nnum_steps = 3\n";
    let ids = |text: &str| sweep(text, &[], &[]).unwrap_or_else(|e| panic!("{e}")).expand().into_iter().map(|r| r.run_id).collect::<Vec<_>>();
    let defaults = ["group_size = 8", "vocab = 8", "prompt_len = 3", "reference_policy = \"none\"", "max_gen_batches = 1"];
    for line in defaults {
        assert_eq!(ids(seq), ids(&format!("{seq}{line}\n")), "{line}");
    }
    assert_ne!(ids(seq), ids(&format!("{seq}expert_per_group = 0\n")), "hashed as written, as before");
    assert_ne!(ids(seq), ids(&format!("{seq}expert_per_group = 1\n")));
}

/// Issue 12, item 6: axis values (and so labels) never name a path; a run's directory is
/// `runs/<run id>` with 16 hex digits, whatever the values say.
#[test]
fn issue12_hostile_axis_values_stay_inside_the_results_dir() {
    let text = format!(
        "{BASE}[sweep.grid]\n\"params.tag\" = [\"../../../etc/passwd\", \"/abs\", \"a\\u0000b\", \"x\\ny\", \"$(touch /tmp/pwned)\", \"{}\"]\n",
        "n".repeat(300)
    );
    let s = sweep(&text, &[], &[]).expect("params values are free-form");
    let results = crate::layout::ResultsDir::new("/r");
    for run in s.expand() {
        let dir = results.run_dir(run.run_id.as_str());
        assert_eq!(dir.parent(), Some(results.runs_dir().as_path()), "{}", run.label);
        let name = dir.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        assert!(name.len() == 16 && name.bytes().all(|b| b.is_ascii_hexdigit()), "{name}");
    }
}

/// Issue 13: `run.dataset_size` and `run.max_gen_batches` are sequence-task keys with bounds
/// whose messages name the key, the value and the bound.
#[test]
fn issue13_dataset_size_and_max_gen_batches_are_checked() {
    // 64 envs in groups of 8 (the default): one generation batch holds 8 prompts.
    let seq = |extra: &str| {
        format!("name = \"t\"\n[run]\nenv = \"SeqAdd-v0\"\nplugin = \"dapo\"\nnum_envs = 64\nprompt_len = 4\nnum_steps = 3\n{extra}")
    };
    let at = "failed to load sweep file `configs/x.toml`: key";
    let cases: Vec<(&str, String, String)> = vec![
        (
            "dataset smaller than one generation batch",
            seq("dataset_size = 7\n"),
            format!("{at} `run.dataset_size`: invalid value: must be at least num_envs / group_size = 8 (the prompts of one generation batch), got 7"),
        ),
        (
            "bound follows group_size",
            seq("group_size = 4\ndataset_size = 15\n"),
            format!("{at} `run.dataset_size`: invalid value: must be at least num_envs / group_size = 16 (the prompts of one generation batch), got 15"),
        ),
        (
            "dataset past f32's exact integers",
            seq("dataset_size = 16777217\n"),
            format!("{at} `run.dataset_size`: invalid value: must be at most 2^24 = 16777216 (plugins receive prompt indices as an f32 metadata column, exact only up to 2^24), got 16777217"),
        ),
        (
            "a dataset valid alone is too small for a grid value",
            format!("{}[sweep.grid]\n\"run.num_envs\" = [64, 128]\n", seq("dataset_size = 8\n")),
            format!("{at} `run.dataset_size`: invalid value: must be at least num_envs / group_size = 16 (the prompts of one generation batch), got 8 (in the runs with run.num_envs=128)"),
        ),
        (
            "dataset on a grid axis",
            format!("{}[sweep.grid]\n\"run.dataset_size\" = [8, 4]\n", seq("")),
            format!("{at} `sweep.grid.run.dataset_size`: invalid value: must be at least num_envs / group_size = 8 (the prompts of one generation batch), got 4"),
        ),
        (
            "dataset on CartPole",
            BASE.replace("[params]", "dataset_size = 64\n[params]"),
            format!("{at} `run.dataset_size`: invalid value: is a sequence-task setting; `CartPole-v1` has no use for it"),
        ),
        ("no generation batch", seq("max_gen_batches = 0\n"), format!("{at} `run.max_gen_batches`: invalid value: must be between 1 and 1000, got 0")),
        ("too many generation batches", seq("max_gen_batches = 1001\n"), format!("{at} `run.max_gen_batches`: invalid value: must be between 1 and 1000, got 1001")),
        (
            "generation batches in a case",
            format!("{}[[sweep.cases]]\n\"run.max_gen_batches\" = 5000\n", seq("")),
            format!("{at} `sweep.cases[0].run.max_gen_batches`: invalid value: must be between 1 and 1000, got 5000"),
        ),
        (
            "generation batches on CartPole",
            BASE.replace("[params]", "max_gen_batches = 2\n[params]"),
            format!("{at} `run.max_gen_batches`: invalid value: is a sequence-task setting; `CartPole-v1` has no use for it"),
        ),
    ];
    for (name, text, expected) in cases {
        match sweep(&text, &[], &[]) {
            Ok(_) => panic!("{name}: expected {expected:?}, got a valid sweep"),
            Err(msg) => assert_eq!(msg, expected, "{name}"),
        }
    }
    // A negative value is a type error that still names the key.
    let negative = sweep(&seq("dataset_size = -1\n"), &[], &[]).expect_err("negative");
    assert!(negative.starts_with(&format!("{at} `run.dataset_size`")), "{negative}");
    // The bounds themselves are accepted.
    for extra in ["dataset_size = 8\n", "dataset_size = 16777216\n", "max_gen_batches = 1000\n", "max_gen_batches = 1\n"] {
        sweep(&seq(extra), &[], &[]).unwrap_or_else(|e| panic!("{extra}: {e}"));
    }
}

/// Issue 13: the two keys reach the job's spec only when set, and spelling out
/// `max_gen_batches = 1` gives the run ids of leaving it out (and of runs from before the key).
#[test]
fn issue13_spec_carries_dataset_size_and_max_gen_batches_only_when_set() {
    let seq = "name = \"t\"\n[run]\nenv = \"SeqSort-v0\"\nplugin = \"dapo\"\nnum_envs = 16\nnum_steps = 3\ngroup_size = 4\nnum_minibatches = 2\n";
    let spec_run = |text: &str| {
        let s = sweep(text, &[], &[]).unwrap_or_else(|e| panic!("{e}"));
        let spec = crate::layout::JobSpec::new(&s.expand()[0], "t", Path::new("/p/libdrover_plugin_dapo.so"));
        match serde_json::to_value(&spec) {
            Ok(serde_json::Value::Object(mut map)) => map.remove("run").unwrap_or_default(),
            other => panic!("spec is not a JSON object: {other:?}"),
        }
    };
    let ids = |text: &str| sweep(text, &[], &[]).unwrap_or_else(|e| panic!("{e}")).expand().into_iter().map(|r| r.run_id).collect::<Vec<_>>();

    let set = format!("{seq}dataset_size = 256\nmax_gen_batches = 3\n");
    let run = spec_run(&set);
    assert_eq!((run["dataset_size"].as_u64(), run["max_gen_batches"].as_u64()), (Some(256), Some(3)));

    let plain = spec_run(seq);
    assert!(plain.get("dataset_size").is_none() && plain.get("max_gen_batches").is_none(), "{plain}");
    let spelled = spec_run(&format!("{seq}max_gen_batches = 1\n"));
    assert!(spelled.get("max_gen_batches").is_none(), "{spelled}");
    assert_eq!(ids(seq), ids(&format!("{seq}max_gen_batches = 1\n")));
    // Pinned: the id of this sweep's run before issue 13; the new keys must not move it.
    assert_eq!(ids(seq)[0].as_str(), PINNED_SEQ_RUN_ID);

    assert_ne!(ids(seq), ids(&format!("{seq}max_gen_batches = 2\n")));
    assert_ne!(ids(seq), ids(&format!("{seq}dataset_size = 256\n")));
    assert_ne!(ids(&format!("{seq}dataset_size = 256\n")), ids(&format!("{seq}dataset_size = 512\n")));

    // Two cases equal once the default is spelled out are one configuration.
    let dup = format!("{seq}[[sweep.cases]]\n\"run.max_gen_batches\" = 1\n[[sweep.cases]]\n\"run.reference_policy\" = \"none\"\n");
    assert_eq!(
        sweep(&dup, &[], &[]).map(|_| ()),
        Err("failed to load sweep file `configs/x.toml`: key `sweep.cases[1]`: duplicate: same configuration as `sweep.cases[0]`".to_string())
    );
}

/// `issue13_spec_carries_dataset_size_and_max_gen_batches_only_when_set`'s sweep's run id as it
/// was before `run.dataset_size` and `run.max_gen_batches` existed: SHA-256 of the canonical JSON
/// of the pre-issue-13 `[run]` fields, computed outside drover (Python's `hashlib`).
const PINNED_SEQ_RUN_ID: &str = "e540e3c5e651c2de";

/// `ErrorCase` with the sweep text built by the case.
type OwnedErrorCase<'a> = (&'a str, String, &'a [(&'a str, &'a str)], &'a [&'a str], &'a str);

/// Keys have one spelling, `a.b[0].c`, whether figment's type check or our own value check found
/// the fault, and no message names a Rust type (`u32`, `f64`, `a sequence`, `a map`): each type
/// word of the schema has its plain one, and the value found is shown as written.
#[test]
fn keys_use_brackets_and_messages_use_plain_words() {
    let with_run = |line: &str| BASE.replace("[params]", &format!("{line}\n[params]"));
    let cases: Vec<OwnedErrorCase<'_>> = vec![
        // List indices, from each reader.
        ("index, type", format!("{BASE}[local]\ngpus = [0, \"x\"]\n"), &[], &[], "key `local.gpus[1]`: wrong type: found string \"x\", expected a whole number\n"),
        ("index, value", format!("{BASE}[local]\ngpus = [0, -1]\n"), &[], &[], "key `local.gpus[1]`: invalid value: a device index is 0 or more"),
        ("index from env", BASE.into(), &[("DROVER_LOCAL__GPUS", "[0, \"x\"]")], &[], "key `local.gpus[1]` (from environment variable `DROVER_LOCAL__GPUS`): wrong type: found string \"x\""),
        ("index from --set", BASE.into(), &[], &["local.gpus=[0,true]"], "key `local.gpus[1]` (from `--set local.gpus=[0,true]`): wrong type: found `true`, expected a whole number\n"),
        ("case index", format!("{BASE}[sweep]\ncases = [{{}}, 3]\n"), &[], &[], "key `sweep.cases[1]`: wrong type: found `3`, expected a table\n"),
        ("case key", format!("{BASE}[[sweep.cases]]\n[[sweep.cases]]\n\"params.x\" = nan\n"), &[], &[], "key `sweep.cases[1].params.x`: invalid value: found `NaN`"),
        ("nested index", with_run("hidden = [64, \"wide\"]"), &[], &[], "key `run.hidden[1]`: wrong type: found string \"wide\", expected a whole number from 0 to 4294967295\n"),
        ("plugin_path index", format!("plugin_path = [\"/a\", 3]\n{BASE}"), &[], &[], "key `plugin_path[1]`: wrong type: found `3`, expected text\n"),
        // Each type word of the schema.
        ("u32", with_run("num_envs = 8.5"), &[], &[], "key `run.num_envs`: wrong type: found `8.5`, expected a whole number from 1 to 4294967295\n"),
        ("u32 below 0", with_run("num_envs = -1"), &[], &[], "key `run.num_envs`: invalid value: found `-1`, expected a whole number from 1 to 4294967295\n"),
        ("u64", with_run("total_steps = \"lots\""), &[], &[], "key `run.total_steps`: wrong type: found string \"lots\", expected a whole number, 1 or more\n"),
        ("usize", format!("max_parallel = \"4\"\n{BASE}"), &[], &[], "key `max_parallel`: wrong type: found string \"4\", expected a whole number, 1 or more\n"),
        ("f64", with_run("lr = \"fast\""), &[], &[], "key `run.lr`: wrong type: found string \"fast\", expected a number\n"),
        ("bool", with_run("anneal_lr = \"yes\""), &[], &[], "key `run.anneal_lr`: wrong type: found string \"yes\", expected true or false\n"),
        ("string", BASE.into(), &[], &["run.env=3"], "key `run.env` (from `--set run.env=3`): wrong type: found `3`, expected text\n"),
        ("list", with_run("hidden = 64"), &[], &[], "key `run.hidden`: wrong type: found `64`, expected a list\n"),
        ("table", format!("{BASE}[sweep]\ngrid = 3\n"), &[], &[], "key `sweep.grid`: wrong type: found `3`, expected a table\n"),
        ("struct", BASE.into(), &[], &["run=3"], "key `run` (from `--set run=3`): wrong type: found `3`, expected a table\n"),
        ("enum", with_run("device = 3"), &[], &[], "key `run.device`: wrong type: found `3`, expected text naming one of its choices\n"),
        ("enum name", with_run("device = \"tpu\""), &[], &[], "key `run.device`: invalid value: `tpu`, expected one of: cpu, cuda, auto\n"),
        // An axis value is checked by another reader (serde_json) and reads the same.
        ("axis u32", format!("{BASE}[sweep.grid]\n\"run.num_envs\" = [4, 8.5]\n"), &[], &[], "key `sweep.grid.run.num_envs`: wrong type: found `8.5`, expected a whole number from 1 to 4294967295\n"),
        ("axis bool", format!("{BASE}[[sweep.cases]]\n\"run.anneal_lr\" = 1\n"), &[], &[], "key `sweep.cases[0].run.anneal_lr`: wrong type: found `1`, expected true or false\n"),
        ("axis list", format!("{BASE}[sweep.grid]\n\"run.hidden\" = [[64, \"x\"]]\n"), &[], &[], "key `sweep.grid.run.hidden`: wrong type: found string \"x\", expected a whole number from 0 to 4294967295\n"),
    ];
    let rust_words = ["u32", "u64", "usize", "i64", "f64", "a sequence", "a map", "struct ", "enum ", "float", "unsigned", "signed int"];
    for (name, text, env_pairs, sets, expected) in cases {
        // The trailing newline in `expected` marks a message that must end there.
        let msg = match sweep(&text, env_pairs, sets) {
            Ok(_) => panic!("{name}: expected an error containing {expected:?}, got a valid sweep"),
            Err(msg) => msg + "\n",
        };
        assert!(msg.contains(expected), "{name}:\n  got      {msg}  expected {expected}");
        let key = msg.split("key `").nth(1).and_then(|rest| rest.split('`').next()).unwrap_or_default();
        assert!(!key.split('.').any(|s| s.parse::<usize>().is_ok()), "{name}: a list index written with a dot: {msg}");
        let words: Vec<_> = rust_words.iter().filter(|w| msg.contains(*w)).collect();
        assert!(words.is_empty(), "{name}: Rust type words {words:?} in {msg}");
    }
}

/// Relative paths in the file are relative to the file's folder (kept as written in the sweep,
/// joined at plan time); from `--set` or `DROVER_*` they are relative to the working directory;
/// absolute paths are untouched. `results_dir` is not rebased.
#[test]
fn relative_paths_are_based_on_where_they_were_written() {
    let file = Path::new("exp/sub/sweep.toml");
    let base = BASE.replace("plugin = \"ppo\"", "plugin = \"./mine.so\"");
    let grid = format!("plugin_path = [\"../plugins\", \"/abs/plugins\"]\nresults_dir = \"out\"\n{base}[sweep.grid]\n\"run.plugin\" = [\"./a.so\", \"ppo\"]\n");
    let cases = format!("{base}[[sweep.cases]]\n\"run.plugin\" = \"lib/b.so\"\n[[sweep.cases]]\n\"params.gamma\" = 0.9\n");
    let load = |file: &Path, text: &str, env_pairs: &[(&str, &str)], sets: &[&str]| {
        let sets = sets.iter().map(|s| parse_set(s, file)).collect::<Result<Vec<_>, _>>().expect("sets");
        Sweep::validate(load_str(file, text, &env(env_pairs), &sets).expect("loads"), file).expect("valid")
    };
    let shown = |s: &Sweep| s.plugins().iter().map(|p| format!("{} {} {}", p.key, p.spec, p.base.display())).collect::<Vec<_>>();

    let from_file = load(file, &grid, &[], &[]);
    assert_eq!(from_file.plugin_path, [Path::new("exp/sub/../plugins"), Path::new("/abs/plugins")]);
    assert_eq!(from_file.results_dir.as_deref(), Some(Path::new("out")), "results_dir stays relative to the working directory");
    assert_eq!(shown(&from_file), ["run.plugin ./mine.so exp/sub", "sweep.grid.run.plugin ./a.so exp/sub", "sweep.grid.run.plugin ppo "]);
    assert_eq!(
        shown(&load(file, &cases, &[], &[])),
        ["run.plugin ./mine.so exp/sub", "sweep.cases[0].run.plugin lib/b.so exp/sub"]
    );
    // A file in the working directory: the base is empty, as before.
    assert_eq!(shown(&load(Path::new("sweep.toml"), &cases, &[], &[]))[1], "sweep.cases[0].run.plugin lib/b.so ");

    // Run ids hash the plugin as written, not where it resolves.
    let moved = load(Path::new("elsewhere/sweep.toml"), &grid, &[], &[]);
    let ids = |s: &Sweep| s.expand().into_iter().map(|r| r.run_id).collect::<Vec<_>>();
    assert_eq!(ids(&from_file), ids(&moved));
    assert_eq!(shown(&moved)[0], "run.plugin ./mine.so elsewhere");

    // Overrides are relative to the working directory (the empty base); the file's others are not.
    let overridden = load(file, &grid, &[("DROVER_RUN__PLUGIN", "./env.so")], &["plugin_path=[\"here\"]"]);
    assert_eq!(overridden.plugin_path, [Path::new("here")]);
    assert_eq!(shown(&overridden), ["run.plugin ./env.so ", "sweep.grid.run.plugin ./a.so exp/sub", "sweep.grid.run.plugin ppo "]);
    let axis_set = load(file, &grid, &[], &["sweep.grid.run.plugin=[\"x/c.so\"]"]);
    assert_eq!(shown(&axis_set), ["run.plugin ./mine.so exp/sub", "sweep.grid.run.plugin x/c.so "]);
    let cases_set = load(file, &cases, &[], &["sweep.cases=[{\"run.plugin\"=\"d.so\"}]"]);
    assert_eq!(shown(&cases_set), ["run.plugin ./mine.so exp/sub", "sweep.cases[0].run.plugin d.so "]);
    // Another key's override leaves the file's plugin where the file put it.
    assert_eq!(shown(&load(file, &grid, &[("DROVER_RUN__LR", "0.1")], &["run.num_envs=4"]))[0], "run.plugin ./mine.so exp/sub");
}

/// The keys whose type errors say "from 1" are exactly those whose zero is refused.
#[test]
fn the_keys_said_to_start_at_one_refuse_zero() {
    for key in crate::config::sweep::AT_LEAST_ONE {
        let text = BASE.replace("[params]", &format!("{key} = 0\n[params]"));
        let err = sweep(&text, &[], &[]).expect_err(key);
        assert!(err.contains(&format!("key `run.{key}`: invalid value: must be at least 1")), "{key}: {err}");
        let text = BASE.replace("[params]", &format!("{key} = \"x\"\n[params]"));
        let err = sweep(&text, &[], &[]).expect_err(key);
        assert!(err.contains("expected a whole number from 1 to") || err.contains("expected a whole number, 1 or more"), "{key}: {err}");
    }
}
