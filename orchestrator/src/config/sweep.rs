//! `Sweep`: a `SweepFile` checked for everything that can be checked without I/O.
//!
//! Architecture invariant: validation and expansion do no I/O and never panic; they return a value
//! or a `ConfigError` naming the key. (Plugin lookup, which needs the file system, is in `plan`.)

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::backend::slurm_config::{BackendKind, SlurmSettings};
use crate::config::file::{EnvKind, RunConfig, SweepFile, DEFAULT_GROUP_SIZE, DEFAULT_PROMPT_LEN, DEFAULT_VOCAB};
use crate::config::ids::canonical_json;
use crate::error::{ConfigError, ConfigErrorKind};

/// The most runs one sweep may expand to; more is almost surely a mistake in the grid.
pub const MAX_RUNS: usize = 100_000;

/// A key that an axis may set: `run.<known key>` or `params.<any name>`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AxisKey {
    /// A key of `[run]`.
    Run(String),
    /// A key of `[params]`.
    Params(String),
}

impl AxisKey {
    /// Parses `run.lr` / `params.clip_coef`; the error is the reason.
    fn parse(key: &str) -> Result<AxisKey, ConfigErrorKind> {
        let expected = || {
            let mut expected: Vec<String> = RunConfig::KEYS.iter().map(|k| format!("run.{k}")).collect();
            expected.push("params.<name>".into());
            ConfigErrorKind::UnknownKey { expected }
        };
        match key.split_once('.') {
            Some(("run", k)) if RunConfig::KEYS.contains(&k) => Ok(AxisKey::Run(k.to_string())),
            Some(("params", k)) if !k.is_empty() => Ok(AxisKey::Params(k.to_string())),
            _ => Err(expected()),
        }
    }
}

impl fmt::Display for AxisKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AxisKey::Run(k) => write!(f, "run.{k}"),
            AxisKey::Params(k) => write!(f, "params.{k}"),
        }
    }
}

/// A validated sweep: non-empty axes, known keys, well-typed values, a bounded number of runs.
#[derive(Debug, Clone)]
pub struct Sweep {
    /// Sweep name.
    pub name: String,
    /// The sweep file it came from.
    pub source: PathBuf,
    /// `results_dir` from the file, if any.
    pub results_dir: Option<PathBuf>,
    /// `max_parallel` from the file, if any.
    pub max_parallel: Option<NonZeroUsize>,
    /// Extra plugin search dirs from the file.
    pub plugin_path: Vec<PathBuf>,
    /// The `[run]` table, normalized through `RunConfig` (so `1` and `1.0` agree).
    pub(crate) base_run: Map<String, Value>,
    /// The `[params]` table.
    pub(crate) base_params: Map<String, Value>,
    /// Seeds, distinct, non-empty.
    pub(crate) seeds: Vec<u64>,
    /// Grid axes, alphabetical by dotted key, each non-empty with distinct normalized values.
    pub(crate) grid: Vec<(AxisKey, Vec<Value>)>,
    /// Cases (at least one; one empty case when the file has none), values normalized.
    pub(crate) cases: Vec<Vec<(AxisKey, Value)>>,
    /// `backend` from the file, if any.
    pub backend: Option<BackendKind>,
    /// The validated `[slurm]` table (defaults when absent).
    pub slurm: SlurmSettings,
}

impl Sweep {
    /// Validates `file` (merged from `source` and overrides).
    pub fn validate(file: SweepFile, source: &Path) -> Result<Sweep, ConfigError> {
        let err = |key: &str, kind| ConfigError::new(source, key, kind);

        if file.name.is_empty()
            || !file.name.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
            || file.name.starts_with('.')
        {
            return Err(err(
                "name",
                ConfigErrorKind::InvalidValue(format!(
                    "`{}`: a sweep name is non-empty, made of letters, digits, `.`, `_`, `-`, and does not start with `.`",
                    file.name
                )),
            ));
        }
        let max_parallel = match file.max_parallel {
            None => None,
            Some(n) => Some(
                NonZeroUsize::new(n)
                    .ok_or_else(|| err("max_parallel", ConfigErrorKind::InvalidValue("must be at least 1".into())))?,
            ),
        };

        check_run(&file.run).map_err(|(key, kind)| err(&format!("run.{key}"), kind))?;
        let base_run = match serde_json::to_value(&file.run) {
            Ok(Value::Object(map)) => map,
            _ => return Err(err("run", ConfigErrorKind::InvalidValue("cannot be represented as JSON".into()))),
        };
        let base_params: Map<String, Value> = file.params.into_iter().collect();

        let seeds = match &file.sweep.seeds {
            None => vec![file.run.seed],
            Some(seeds) => {
                let list = seeds.seeds().ok_or_else(|| {
                    err("sweep.seeds", ConfigErrorKind::InvalidValue("the range goes past the largest seed".into()))
                })?;
                if list.is_empty() {
                    return Err(err("sweep.seeds", ConfigErrorKind::EmptyAxis));
                }
                let mut seen = BTreeSet::new();
                if let Some(dup) = list.iter().find(|s| !seen.insert(**s)) {
                    return Err(err("sweep.seeds", ConfigErrorKind::Duplicate(format!("seed {dup} appears twice"))));
                }
                list
            }
        };

        let mut grid = Vec::new();
        for (key, values) in &file.sweep.grid {
            let at = format!("sweep.grid.{key}");
            let axis = AxisKey::parse(key).map_err(|kind| err(&at, kind))?;
            check_axis_allowed(&axis).map_err(|kind| err(&at, kind))?;
            if values.is_empty() {
                return Err(err(&at, ConfigErrorKind::EmptyAxis));
            }
            let mut normalized = Vec::with_capacity(values.len());
            let mut seen = BTreeSet::new();
            for value in values {
                let v = normalize(&axis, value, &base_run).map_err(|kind| err(&at, kind))?;
                if !seen.insert(canonical_json(&v)) {
                    return Err(err(&at, ConfigErrorKind::Duplicate(format!("value {v} appears twice"))));
                }
                normalized.push(v);
            }
            grid.push((axis, normalized));
        }
        // Alphabetical by dotted key, like labels, so the run order is predictable from the file.
        grid.sort_by_key(|(k, _)| k.to_string());

        let cases = match &file.sweep.cases {
            None => vec![Vec::new()],
            Some(cases) if cases.is_empty() => return Err(err("sweep.cases", ConfigErrorKind::EmptyAxis)),
            Some(cases) => {
                let mut out = Vec::with_capacity(cases.len());
                let mut seen: BTreeMap<String, usize> = BTreeMap::new();
                for (i, case) in cases.iter().enumerate() {
                    let mut items = Vec::with_capacity(case.len());
                    for (key, value) in case {
                        let at = format!("sweep.cases[{i}].{key}");
                        let axis = AxisKey::parse(key).map_err(|kind| err(&at, kind))?;
                        check_axis_allowed(&axis).map_err(|kind| err(&at, kind))?;
                        if grid.iter().any(|(g, _)| g == &axis) {
                            return Err(err(
                                &at,
                                ConfigErrorKind::Conflict(format!("`{axis}` is also a grid axis (`sweep.grid`)")),
                            ));
                        }
                        items.push((axis.clone(), normalize(&axis, value, &base_run).map_err(|kind| err(&at, kind))?));
                    }
                    items.sort_by(|a, b| a.0.cmp(&b.0));
                    // Two cases resolving to the same configuration would give the same run ids twice.
                    let (run, params) = apply(&base_run, &base_params, items.iter().map(|(k, v)| (k, v)));
                    let resolved = canonical_json(&serde_json::json!({"run": run, "params": params}));
                    if let Some(j) = seen.insert(resolved, i) {
                        return Err(err(
                            &format!("sweep.cases[{i}]"),
                            ConfigErrorKind::Duplicate(format!("same configuration as `sweep.cases[{j}]`")),
                        ));
                    }
                    out.push(items);
                }
                out
            }
        };

        let total = grid
            .iter()
            .try_fold(cases.len().saturating_mul(seeds.len()), |acc, (_, values)| acc.checked_mul(values.len()))
            .filter(|n| *n <= MAX_RUNS);
        if total.is_none() {
            return Err(err(
                "sweep",
                ConfigErrorKind::InvalidValue(format!("expands to more than {MAX_RUNS} runs")),
            ));
        }

        let mut axis_keys: Vec<String> = grid.iter().map(|(k, _)| k.to_string()).collect();
        axis_keys.extend(cases.iter().flatten().map(|(k, _)| k.to_string()));
        axis_keys.sort();
        axis_keys.dedup();
        let slurm = SlurmSettings::validate(file.slurm.unwrap_or_default(), &axis_keys)
            .map_err(|(key, kind)| err(&key, kind))?;

        Ok(Sweep {
            backend: file.backend,
            slurm,
            name: file.name,
            source: source.to_path_buf(),
            results_dir: file.results_dir,
            max_parallel,
            plugin_path: file.plugin_path,
            base_run,
            base_params,
            seeds,
            grid,
            cases,
        })
    }

    /// How many runs `expand` yields.
    pub fn run_count(&self) -> usize {
        self.cases.len() * self.seeds.len() * self.grid.iter().map(|(_, v)| v.len()).product::<usize>()
    }

    /// Every plugin named by the base config or an axis, for resolution before launch.
    pub fn plugins(&self) -> BTreeSet<String> {
        let mut plugins = BTreeSet::new();
        let plugin_key = AxisKey::Run("plugin".into());
        let mut add = |v: &Value| {
            if let Some(s) = v.as_str() {
                plugins.insert(s.to_string());
            }
        };
        if let Some(v) = self.base_run.get("plugin") {
            add(v);
        }
        for (key, values) in &self.grid {
            if *key == plugin_key {
                values.iter().for_each(&mut add);
            }
        }
        for case in &self.cases {
            case.iter().filter(|(k, _)| *k == plugin_key).for_each(|(_, v)| add(v));
        }
        plugins
    }
}

/// `run.seed` is the seeds axis's job; sweeping it elsewhere would make `config_id` meaningless.
fn check_axis_allowed(axis: &AxisKey) -> Result<(), ConfigErrorKind> {
    match axis {
        AxisKey::Run(k) if k == "seed" => {
            Err(ConfigErrorKind::Conflict("seeds are swept with `sweep.seeds`, not as an axis".into()))
        }
        _ => Ok(()),
    }
}

/// Type-checks an axis value against the `[run]` schema and returns its normalized form.
fn normalize(axis: &AxisKey, value: &Value, base_run: &Map<String, Value>) -> Result<Value, ConfigErrorKind> {
    match axis {
        AxisKey::Params(_) => Ok(value.clone()),
        AxisKey::Run(key) => {
            let mut run = base_run.clone();
            run.insert(key.clone(), value.clone());
            let typed: RunConfig = serde_json::from_value(Value::Object(run))
                .map_err(|e| ConfigErrorKind::WrongType(e.to_string()))?;
            check_run(&typed).map_err(|(_, kind)| kind)?;
            match serde_json::to_value(&typed) {
                Ok(Value::Object(mut map)) => Ok(map.remove(key).unwrap_or(Value::Null)),
                _ => Err(ConfigErrorKind::InvalidValue("cannot be represented as JSON".into())),
            }
        }
    }
}

/// Applies axis values to the base `run` and `params` tables.
pub(crate) fn apply<'a>(
    base_run: &Map<String, Value>,
    base_params: &Map<String, Value>,
    items: impl IntoIterator<Item = (&'a AxisKey, &'a Value)>,
) -> (Map<String, Value>, Map<String, Value>) {
    let (mut run, mut params) = (base_run.clone(), base_params.clone());
    for (key, value) in items {
        match key {
            AxisKey::Run(k) => run.insert(k.clone(), value.clone()),
            AxisKey::Params(k) => params.insert(k.clone(), value.clone()),
        };
    }
    (run, params)
}

/// Range checks of `[run]` values that serde's types cannot express; the error names the key.
fn check_run(run: &RunConfig) -> Result<(), (&'static str, ConfigErrorKind)> {
    let invalid = |key, why: &str| Err((key, ConfigErrorKind::InvalidValue(why.to_string())));
    if run.env.is_empty() {
        return Err(("env", ConfigErrorKind::Missing));
    }
    if run.plugin.is_empty() {
        return Err(("plugin", ConfigErrorKind::Missing));
    }
    for (key, v) in [
        ("num_envs", run.num_envs),
        ("num_steps", run.num_steps),
        ("threads", run.threads),
        ("ranks", run.ranks),
        ("update_epochs", run.update_epochs),
        ("num_minibatches", run.num_minibatches),
    ] {
        if v == 0 {
            return invalid(key, "must be at least 1");
        }
    }
    if run.total_steps == 0 {
        return invalid("total_steps", "must be at least 1");
    }
    if run.num_envs % run.ranks != 0 {
        return invalid("ranks", "must divide num_envs (each rank steps num_envs / ranks environments)");
    }
    if run.hidden.is_empty() || run.hidden.contains(&0) {
        return invalid("hidden", "must be a non-empty list of positive widths");
    }
    for (key, v) in [("lr", run.lr), ("adam_eps", run.adam_eps), ("max_grad_norm", run.max_grad_norm)] {
        if !(v.is_finite() && v > 0.0) {
            return invalid(key, "must be a finite number greater than 0");
        }
    }
    if !run.success_return.is_finite() {
        return invalid("success_return", "must be a finite number");
    }
    check_env(run)
}

/// The environment is known, and the sequence-task keys fit it.
fn check_env(run: &RunConfig) -> Result<(), (&'static str, ConfigErrorKind)> {
    let invalid = |key, why: String| Err((key, ConfigErrorKind::InvalidValue(why)));
    let Some(kind) = EnvKind::parse(&run.env) else {
        return invalid("env", format!("unknown environment `{}` (known: {})", run.env, EnvKind::IDS.join(", ")));
    };
    let seq_keys = [("group_size", run.group_size), ("vocab", run.vocab), ("prompt_len", run.prompt_len)];
    let EnvKind::Sequence { family } = kind else {
        if let Some((key, _)) = seq_keys.iter().find(|(_, v)| v.is_some()) {
            return invalid(key, format!("is a sequence-task setting; `{}` has no use for it", run.env));
        }
        return Ok(());
    };
    let group = run.group_size.unwrap_or(DEFAULT_GROUP_SIZE);
    let vocab = run.vocab.unwrap_or(DEFAULT_VOCAB);
    let prompt_len = run.prompt_len.unwrap_or(DEFAULT_PROMPT_LEN);
    if group == 0 || prompt_len == 0 {
        return invalid(if group == 0 { "group_size" } else { "prompt_len" }, "must be at least 1".into());
    }
    if vocab < 2 {
        return invalid("vocab", format!("must be at least 2, got {vocab}"));
    }
    if family == "add" && prompt_len % 2 != 0 {
        return invalid("prompt_len", format!("`{}` adds two numbers of prompt_len / 2 digits: use an even length, got {prompt_len}", run.env));
    }
    if (run.num_envs / run.ranks) % group != 0 {
        return invalid(
            "group_size",
            format!("num_envs / ranks = {} is not a multiple of group_size = {group} (a prompt's group stays on one rank)", run.num_envs / run.ranks),
        );
    }
    let len = RunConfig::response_len(family, prompt_len);
    if run.num_steps != len {
        return invalid(
            "num_steps",
            format!("`{}` with prompt_len = {prompt_len} generates {len}-token responses and a rollout is one response per env: set num_steps = {len}", run.env),
        );
    }
    if run.num_envs % run.num_minibatches != 0 {
        return invalid(
            "num_minibatches",
            format!("must divide num_envs = {} (sequence tasks train on minibatches of whole responses)", run.num_envs),
        );
    }
    Ok(())
}
