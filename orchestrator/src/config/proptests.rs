//! Property tests of loading, validation and expansion: no input panics, errors name the file and
//! a key, and run ids depend on the effective configuration only (issue 12, item 1).
//!
//! Case counts stay modest (`CASES`) so the suite stays fast in CI's debug build; the generators
//! mutate a valid sweep rather than drawing from scratch, so most cases get past the parser and
//! exercise validation and expansion.

use std::collections::BTreeSet;
use std::path::Path;

use proptest::prelude::*;
use proptest::test_runner::Config;

use crate::config::file::RunConfig;
use crate::config::sweep::check_run;
use crate::config::{load_str, parse_set, RunId, SetArg, Sweep, MAX_RUNS};
use crate::error::{ConfigError, ConfigErrorKind};

const FILE: &str = "configs/prop.toml";
const CASES: u32 = 256;

fn config() -> Config {
    // No persisted regressions file: failures print the minimal input, which becomes a plain test.
    Config { cases: CASES, failure_persistence: None, max_shrink_iters: 256, ..Config::default() }
}

/// A validated sweep and its runs, or why not.
type Outcome = Result<(Sweep, Vec<crate::config::RunSpec>), ConfigError>;

/// The outcome of the whole pipeline (load, validate, expand) on one input.
fn pipeline(text: &str, env: &[(String, String)], sets: &[String]) -> Outcome {
    let file = Path::new(FILE);
    let sets = sets.iter().map(|s| parse_set(s, file)).collect::<Result<Vec<SetArg>, _>>()?;
    let parsed = load_str(file, text, env, &sets)?;
    let sweep = Sweep::validate(parsed, file)?;
    let runs = sweep.expand();
    Ok((sweep, runs))
}

/// What every outcome must satisfy: runs that are each valid on their own, or an error naming
/// the file and (unless the file as a whole is at fault) a key.
fn check_outcome(outcome: Outcome) -> Result<(), TestCaseError> {
    match outcome {
        Ok((sweep, runs)) => {
            prop_assert!(!runs.is_empty() && runs.len() <= MAX_RUNS, "{} runs", runs.len());
            prop_assert_eq!(runs.len(), sweep.run_count());
            let ids: BTreeSet<&RunId> = runs.iter().map(|r| &r.run_id).collect();
            prop_assert_eq!(ids.len(), runs.len(), "run ids must be distinct");
            for run in &runs {
                prop_assert!(run.run_id.as_str().len() == 16 && run.run_id.as_str().bytes().all(|b| b.is_ascii_hexdigit()));
                // Every run, with all of its axis values applied together, is a valid run.
                let typed: RunConfig = serde_json::from_value(serde_json::Value::Object(run.run_table()))
                    .map_err(|e| TestCaseError::fail(format!("run `{}` does not fit the schema: {e}", run.label)))?;
                if let Err((key, kind)) = check_run(&typed) {
                    return Err(TestCaseError::fail(format!("run `{}` passed validation but run.{key} is invalid: {kind}", run.label)));
                }
            }
        }
        Err(e) => {
            let msg = e.to_string();
            prop_assert_eq!(e.file.as_path(), Path::new(FILE));
            prop_assert!(msg.starts_with(&format!("failed to load sweep file `{FILE}`: ")), "{}", msg);
            let whole_file = matches!(*e.kind, ConfigErrorKind::Syntax(_) | ConfigErrorKind::BadSet(_) | ConfigErrorKind::EmptyFile);
            prop_assert!(e.key.is_some() || whole_file, "no key in: {}", msg);
            if let Some(key) = &e.key {
                prop_assert!(msg.contains(&format!("key `{key}`")), "{}", msg);
            }
        }
    }
    Ok(())
}

const BASE: &str = r#"
name = "p"
[run]
env = "CartPole-v1"
plugin = "ppo"
[params]
gamma = 0.99
"#;

/// Keys worth hitting: every known key at its place, a few axis names, and some nonsense.
fn interesting_path() -> impl Strategy<Value = Vec<String>> {
    let mut paths: Vec<Vec<&'static str>> = vec![
        vec!["name"],
        vec!["results_dir"],
        vec!["max_parallel"],
        vec!["plugin_path"],
        vec!["backend"],
        vec!["run"],
        vec!["params"],
        vec!["params", "gamma"],
        vec!["params", "clip"],
        vec!["sweep"],
        vec!["sweep", "seeds"],
        vec!["sweep", "seeds", "count"],
        vec!["sweep", "seeds", "start"],
        vec!["sweep", "grid"],
        vec!["sweep", "cases"],
        vec!["sweep", "grid", "params.a"],
        vec!["sweep", "grid", "params.gamma"],
        vec!["sweep", "grid", "run.lr"],
        vec!["sweep", "grid", "run.num_envs"],
        vec!["sweep", "grid", "run.ranks"],
        vec!["sweep", "grid", "run.env"],
        vec!["sweep", "grid", "run.plugin"],
        vec!["sweep", "grid", "run.seed"],
        vec!["sweep", "grid", "run.prompt_len"],
        vec!["sweep", "grid", "run.group_size"],
        vec!["sweep", "grid", "run.dataset_size"],
        vec!["sweep", "grid", "run.max_gen_batches"],
        vec!["slurm"],
        vec!["slurm", "partition"],
        vec!["slurm", "time"],
        vec!["slurm", "extra"],
        vec!["slurm", "throttle"],
        vec!["local"],
        vec!["local", "max_retries"],
    ];
    for key in RunConfig::KEYS {
        paths.push(vec!["run", key]);
    }
    prop_oneof![
        4 => proptest::sample::select(paths).prop_map(|p| p.into_iter().map(String::from).collect()),
        1 => proptest::collection::vec("\\PC{0,6}", 1..4),
    ]
}

/// Numbers, strings and shapes that have broken parsers before: huge, tiny, non-finite, unicode,
/// path tricks, control characters.
fn leaf() -> impl Strategy<Value = toml::Value> {
    prop_oneof![
        any::<i64>().prop_map(toml::Value::Integer),
        (-3i64..20).prop_map(toml::Value::Integer),
        any::<f64>().prop_map(toml::Value::Float),
        proptest::sample::select(vec![0.0, -0.0, 1e-3, 0.5, 1.0, 1e300, f64::NAN, f64::INFINITY, f64::NEG_INFINITY])
            .prop_map(toml::Value::Float),
        any::<bool>().prop_map(toml::Value::Boolean),
        "\\PC{0,12}".prop_map(toml::Value::String),
        proptest::sample::select(vec![
            "CartPole-v1", "SeqAdd-v0", "ppo", "cpu", "cuda", "initial", "none", "../../etc", "/abs/x.so", "a/../../b",
            "x\0y", "line\nbreak", "..", ".", "", "$(touch /tmp/drover-pwned)", "'; rm -rf ~; '",
        ])
        .prop_map(|s| toml::Value::String(s.to_string())),
        (1usize..300).prop_map(|n| toml::Value::String("n".repeat(n))),
    ]
}

fn value() -> impl Strategy<Value = toml::Value> {
    leaf().prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(toml::Value::Array),
            proptest::collection::btree_map("[a-z._]{1,8}|run\\.lr|params\\.a|count|start", inner, 0..4)
                .prop_map(|m| toml::Value::Table(m.into_iter().collect())),
        ]
    })
}

/// Sets `path` in `table` to `value` (or removes it), making intermediate tables as needed.
fn mutate(table: &mut toml::Table, path: &[String], value: Option<toml::Value>) {
    let Some((last, parents)) = path.split_last() else { return };
    let mut at = table;
    for p in parents {
        let entry = at.entry(p.clone()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
        if !entry.is_table() {
            *entry = toml::Value::Table(toml::Table::new());
        }
        let Some(t) = entry.as_table_mut() else { return };
        at = t;
    }
    match value {
        Some(v) => {
            at.insert(last.clone(), v);
        }
        None => {
            at.remove(last);
        }
    }
}

fn mutations() -> impl Strategy<Value = Vec<(Vec<String>, Option<toml::Value>)>> {
    proptest::collection::vec((interesting_path(), proptest::option::weighted(0.85, value())), 0..6)
}

/// `--set` arguments: well-formed ones over interesting keys, and raw strings.
fn set_arg() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => (interesting_path(), value()).prop_map(|(path, v)| format!("{}={}", path.join("."), v)),
        1 => (interesting_path(), "\\PC{0,10}").prop_map(|(path, v)| format!("{}={v}", path.join("."))),
        1 => "\\PC{0,16}",
    ]
}

fn env_var() -> impl Strategy<Value = (String, String)> {
    let names = vec![
        "DROVER_NAME", "DROVER_RESULTS_DIR", "DROVER_MAX_PARALLEL", "DROVER_RUN__LR", "DROVER_RUN__NUM_ENVS",
        "DROVER_RUN__", "DROVER_SWEEP__SEEDS", "DROVER_PARAMS__X", "DROVER_RUN____LR", "DROVER_JOB_BIN",
        "DROVER_BACKEND", "DROVER_LOCAL__MAX_RETRIES", "DROVER_LOCAL__GPUS", "DROVER_SLURM__PARTITION",
    ];
    (proptest::sample::select(names), "\\PC{0,10}|\\[[0-9, ]{0,8}\\]|-?[0-9]{1,20}").prop_map(|(k, v)| (k.to_string(), v))
}

proptest! {
    #![proptest_config(config())]

    /// Mutated sweep files (any key, any value, any nesting) never panic and fail with the file and a key.
    #[test]
    fn mutated_sweep_files_expand_or_name_file_and_key(muts in mutations()) {
        let mut table: toml::Table = BASE.parse().map_err(|e| TestCaseError::fail(format!("{e}")))?;
        for (path, v) in muts {
            mutate(&mut table, &path, v);
        }
        // A few mutations have no TOML text (a table inside an array after a scalar, ...).
        let text = toml::to_string(&table);
        prop_assume!(text.is_ok());
        check_outcome(pipeline(&text.unwrap_or_default(), &[], &[]))?;
    }

    /// Arbitrary `--set` arguments and `DROVER_*` variables over a valid file behave the same way.
    #[test]
    fn overrides_expand_or_name_file_and_key(
        sets in proptest::collection::vec(set_arg(), 0..4),
        env in proptest::collection::vec(env_var(), 0..3),
    ) {
        check_outcome(pipeline(BASE, &env, &sets))?;
    }

    /// Raw text: TOML-ish fragments glued together, and plain noise.
    #[test]
    fn raw_text_never_panics(
        parts in proptest::collection::vec(prop_oneof![
            Just("[run]\n".to_string()), Just("[sweep]\n".to_string()), Just("[sweep.grid]\n".to_string()), Just("[[sweep.cases]]\n".to_string()),
            Just("env = \"CartPole-v1\"\nplugin = \"ppo\"\n".to_string()), Just("name = \"x\"\n".to_string()),
            Just("\"run.lr\" = [1, 1.0]\n".to_string()), Just("seeds = { count = 99999999999 }\n".to_string()),
            "\\PC{0,20}\n",
        ], 0..8),
    ) {
        check_outcome(pipeline(&parts.concat(), &[], &[]))?;
    }
}

/// Base `[run]` tables, one per kind of environment, for the combined-axes property.
const RUN_BASES: &[&str] = &[
    "env = \"CartPole-v1\"\nplugin = \"ppo\"\nnum_envs = 8\n",
    "env = \"SeqAdd-v0\"\nplugin = \"grpo\"\nnum_envs = 8\nnum_steps = 2\nprompt_len = 2\ngroup_size = 4\nnum_minibatches = 2\n",
    "env = \"SeqSort-v0\"\nplugin = \"grpo\"\nnum_envs = 8\nnum_steps = 3\ngroup_size = 2\nnum_minibatches = 2\n",
];

/// Several `run.*` axes at once (grid and cases): each value may be fine alone and not together.
fn run_axes() -> impl Strategy<Value = String> {
    let keys = vec![
        "num_envs", "ranks", "num_minibatches", "num_steps", "group_size", "prompt_len", "vocab", "dataset_size", "max_gen_batches",
    ];
    let axis = (proptest::sample::select(keys.clone()), proptest::collection::btree_set(1u32..9, 1..4));
    (
        proptest::sample::select(RUN_BASES.to_vec()),
        proptest::collection::btree_map(proptest::sample::select(keys.clone()), proptest::collection::btree_set(1u32..9, 1..4), 0..4),
        proptest::collection::vec(axis, 0..3),
        proptest::option::of(proptest::sample::select(vec!["CartPole-v1", "SeqAdd-v0", "SeqReverse-v0"])),
    )
        .prop_map(|(base, grid, cases, env_case)| {
            let mut s = format!("name = \"c\"\n[run]\n{base}[sweep.grid]\n");
            for (k, v) in &grid {
                s += &format!("\"run.{k}\" = {:?}\n", v.iter().collect::<Vec<_>>());
            }
            for (k, v) in cases.iter().filter(|(k, _)| !grid.contains_key(*k)) {
                s += &format!("[[sweep.cases]]\n\"run.{k}\" = {}\n", v.iter().next().copied().unwrap_or(1));
            }
            if let Some(env) = env_case {
                s += &format!("[[sweep.cases]]\n\"run.env\" = \"{env}\"\n");
            }
            s
        })
}

proptest! {
    #![proptest_config(config())]

    /// Every run of a valid sweep is valid with all of its axis values applied together.
    #[test]
    fn combined_run_axes_are_validated_together(text in run_axes()) {
        check_outcome(pipeline(&text, &[], &[]))?;
    }
}

// ----- ids depend on effective values only -----

/// A float with two spellings that TOML reads as the same `f64` (`3e-4` and `0.0003`).
#[derive(Debug, Clone)]
struct Num {
    mantissa: u8,
    exp: i32,
}

impl Num {
    fn decimal(&self) -> String {
        if self.exp >= 0 {
            format!("{}{}.0", self.mantissa, "0".repeat(self.exp as usize))
        } else {
            format!("0.{}{}", "0".repeat((-self.exp - 1) as usize), self.mantissa)
        }
    }
    fn scientific(&self) -> String {
        // `30e-5` as well as `3e-4`: the mantissa's spelling must not matter either.
        format!("{}0E{}", self.mantissa, self.exp - 1)
    }
}

fn num() -> impl Strategy<Value = Num> {
    (1u8..10, -6i32..2).prop_map(|(mantissa, exp)| Num { mantissa, exp })
}

/// A params value that has one JSON form whatever its spelling.
#[derive(Debug, Clone)]
enum Param {
    Int(i64),
    Float(Num),
    Str(String),
    Bool(bool),
    Ints(Vec<i64>),
}

impl Param {
    fn render(&self, alt: bool) -> String {
        match self {
            Param::Int(i) => i.to_string(),
            Param::Float(n) if alt => n.scientific(),
            Param::Float(n) => n.decimal(),
            Param::Str(s) => toml::Value::String(s.clone()).to_string(),
            Param::Bool(b) => b.to_string(),
            Param::Ints(v) if alt && v.is_empty() => "[ ]".into(),
            Param::Ints(v) if alt => format!("[ {} , ]", v.iter().map(|i| i.to_string()).collect::<Vec<_>>().join(" ,\n  ")),
            Param::Ints(v) => format!("[{}]", v.iter().map(|i| i.to_string()).collect::<Vec<_>>().join(", ")),
        }
    }
}

fn param() -> impl Strategy<Value = Param> {
    prop_oneof![
        any::<i64>().prop_map(Param::Int),
        num().prop_map(Param::Float),
        "\\PC{0,8}".prop_map(Param::Str),
        any::<bool>().prop_map(Param::Bool),
        proptest::collection::vec(-5i64..5, 0..3).prop_map(Param::Ints),
    ]
}

/// A valid sweep described by its effective values, rendered in several equivalent ways.
#[derive(Debug, Clone)]
struct Spec {
    lr: Num,
    max_grad_norm: u8,
    num_envs: u32,
    params: Vec<(String, Param)>,
    lr_axis: Vec<Num>,
    param_axis: Option<(String, Vec<i64>)>,
    seeds: (u64, u64),
}

fn spec() -> impl Strategy<Value = Spec> {
    (
        num(),
        1u8..5,
        proptest::sample::select(vec![4u32, 8, 16]),
        proptest::collection::btree_map("[a-z]{1,6}", param(), 0..4),
        proptest::collection::btree_map(1u8..10, -6i32..0, 0..3),
        proptest::option::of(("[a-z]{1,6}", proptest::collection::btree_set(-3i64..3, 1..3))),
        (0u64..5, 1u64..4),
    )
        .prop_map(|(lr, max_grad_norm, num_envs, params, lr_axis, param_axis, seeds)| Spec {
            lr,
            max_grad_norm,
            num_envs,
            params: params.into_iter().collect(),
            // Distinct mantissas at distinct exponents can still coincide (1e-2 = 10e-3): keep one per mantissa.
            lr_axis: lr_axis.into_iter().map(|(mantissa, exp)| Num { mantissa, exp }).collect(),
            param_axis: param_axis.map(|(k, v)| (format!("axis_{k}"), v.into_iter().collect())),
            seeds,
        })
}

impl Spec {
    /// Standard tables, keys in declaration order, decimal numbers, seeds as a list.
    fn plain(&self) -> String {
        let mut s = format!(
            "name = \"a\"\n[run]\nenv = \"CartPole-v1\"\nplugin = \"ppo\"\nlr = {}\nmax_grad_norm = {}.0\nnum_envs = {}\n[params]\n",
            self.lr.decimal(),
            self.max_grad_norm,
            self.num_envs
        );
        for (k, v) in &self.params {
            s += &format!("{k} = {}\n", v.render(false));
        }
        let (start, count) = self.seeds;
        let seeds: Vec<String> = (start..start + count).map(|s| s.to_string()).collect();
        s += &format!("[sweep]\nseeds = [{}]\n[sweep.grid]\n", seeds.join(", "));
        if !self.lr_axis.is_empty() {
            let v: Vec<String> = self.lr_axis.iter().map(Num::decimal).collect();
            s += &format!("\"run.lr\" = [{}]\n", v.join(", "));
        }
        if let Some((k, v)) = &self.param_axis {
            s += &format!("\"params.{k}\" = {v:?}\n");
        }
        s
    }

    /// The same sweep: inline tables, reversed and shuffled keys, comments, odd whitespace,
    /// scientific numbers, an integer for an integral float, seeds as a range, another name.
    fn fancy(&self, order: &[usize]) -> String {
        let (start, count) = self.seeds;
        let mut run = [
            format!("num_envs={}", self.num_envs),
            format!("max_grad_norm   =   {}", self.max_grad_norm),
            format!("lr = {}", self.lr.scientific()),
            "plugin = 'ppo'".to_string(),
            "env = \"\"\"CartPole-v1\"\"\"".to_string(),
        ];
        let n = run.len();
        run.rotate_left(order.first().copied().unwrap_or(0) % n);
        let mut params: Vec<String> = self.params.iter().map(|(k, v)| format!("\"{k}\" = {}", v.render(true))).collect();
        if !params.is_empty() {
            let n = params.len();
            params.rotate_left(order.get(1).copied().unwrap_or(0) % n);
        }
        let mut grid = Vec::new();
        if let Some((k, v)) = &self.param_axis {
            grid.push(format!("'params.{k}' = [ {} ]", v.iter().rev().rev().map(|i| format!("{i:+}")).collect::<Vec<_>>().join(" , ")));
        }
        if !self.lr_axis.is_empty() {
            let v: Vec<String> = self.lr_axis.iter().map(Num::scientific).collect();
            grid.push(format!("\"run.lr\" = [\n  {},  # lr axis\n]", v.join(",\n  ")));
        }
        let sections = [
            format!("# comment\n[sweep] # seeds as a range\nseeds = {{ start = {start}, count = {count} }}\n\n  [sweep.grid]\n{}\n", grid.join("\n")),
            format!("params = {{ {} }}\n", params.join(", ")),
            format!("run = {{ {} }}\n", run.join(" , ")),
        ];
        // Top-level inline tables must precede `[sweep]`; swap their order, keep [sweep] last.
        let (a, b) = if order.get(2).copied().unwrap_or(0) % 2 == 0 { (&sections[1], &sections[2]) } else { (&sections[2], &sections[1]) };
        format!("\t name='b'   # the name is not part of any id\n{a}{b}{}", sections[0])
    }

    /// A minimal file plus `--set` for everything else.
    fn via_set(&self) -> (String, Vec<String>) {
        let text = "name = \"c\"\n[run]\nenv = \"CartPole-v1\"\nplugin = \"ppo\"\n".to_string();
        let (start, count) = self.seeds;
        let mut sets = vec![
            format!("run.max_grad_norm={}", self.max_grad_norm),
            format!("run.num_envs={}", self.num_envs),
            format!("sweep.seeds={{count={count},start={start}}}"),
        ];
        // Under an lr axis no run sees the base lr, and an override no run sees is refused.
        if self.lr_axis.is_empty() {
            sets.push(format!("run.lr={}", self.lr.scientific()));
        }
        for (k, v) in &self.params {
            sets.push(format!("params.{k}={}", v.render(true)));
        }
        if !self.lr_axis.is_empty() {
            sets.push(format!("sweep.grid.run.lr=[{}]", self.lr_axis.iter().map(Num::decimal).collect::<Vec<_>>().join(",")));
        }
        if let Some((k, v)) = &self.param_axis {
            sets.push(format!("sweep.grid.params.{k}={v:?}"));
        }
        (text, sets)
    }
}

fn ids(text: &str, sets: &[String]) -> Result<Vec<RunId>, TestCaseError> {
    let (_, runs) = pipeline(text, &[], sets).map_err(|e| TestCaseError::fail(format!("{e}\n---\n{text}\n---\n{sets:?}")))?;
    Ok(runs.into_iter().map(|r| r.run_id).collect())
}

proptest! {
    #![proptest_config(config())]

    /// Same effective values ⇒ same run ids, in the same order, whatever the spelling.
    #[test]
    fn run_ids_ignore_order_formatting_and_number_spelling(
        spec in spec(),
        order in proptest::collection::vec(0usize..8, 3),
    ) {
        let plain = ids(&spec.plain(), &[])?;
        let fancy_text = spec.fancy(&order);
        prop_assert_eq!(&plain, &ids(&fancy_text, &[])?, "plain:\n{}\nfancy:\n{}", spec.plain(), fancy_text);
        let (text, sets) = spec.via_set();
        prop_assert_eq!(&plain, &ids(&text, &sets)?);
    }

    /// A different effective value ⇒ a different id for every run.
    #[test]
    fn run_ids_change_with_any_effective_value(spec in spec(), which in 0usize..4) {
        let before: BTreeSet<RunId> = ids(&spec.plain(), &[])?.into_iter().collect();
        let mut changed = spec.clone();
        match which {
            0 => changed.num_envs *= 2,
            1 => changed.max_grad_norm += 5,
            // lr on a grid axis overrides the base lr, so change a param instead there.
            2 if spec.lr_axis.is_empty() => changed.lr.exp -= 7,
            _ => changed.params.push(("zz_new".into(), Param::Bool(true))),
        }
        let after: BTreeSet<RunId> = ids(&changed.plain(), &[])?.into_iter().collect();
        prop_assert!(before.is_disjoint(&after), "{:?} / {:?}", spec, changed);
        // A value moved from the base into a one-valued axis is the same effective value.
        if let Some((k, v)) = &spec.params.first() {
            let axis = spec.plain().replacen(&format!("\n{k} = {}\n", v.render(false)), "\n", 1)
                + &format!("\"params.{k}\" = [{}]\n", v.render(false));
            let moved: BTreeSet<RunId> = ids(&axis, &[])?.into_iter().collect();
            prop_assert_eq!(&before, &moved);
        }
    }
}
