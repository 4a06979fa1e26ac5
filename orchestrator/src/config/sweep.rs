//! `Sweep`: a `SweepFile` checked for everything that can be checked without I/O.
//!
//! Architecture invariant: validation and expansion do no I/O and never panic; they return a value
//! or a `ConfigError` naming the key. (Plugin lookup, which needs the file system, is in `plan`.)

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::backend::local_config::LocalSettings;
use crate::backend::slurm_config::{BackendKind, SlurmSettings};
use crate::config::file::{
    EnvKind, PathBases, ReferencePolicy, RunConfig, SeedsFile, SweepFile, DEFAULT_GROUP_SIZE, DEFAULT_MAX_GEN_BATCHES,
    DEFAULT_PROMPT_LEN, DEFAULT_VOCAB, MAX_DATASET_SIZE, MAX_GEN_BATCHES,
};
use crate::config::ids::canonical_json;
use crate::config::messages::{from_one, plain_kind};
use crate::error::{ConfigError, ConfigErrorKind};

/// The most runs one sweep may expand to; more is almost surely a mistake in the grid.
pub const MAX_RUNS: usize = 100_000;

/// The largest seed: `drover analyze` holds seeds as `i64`.
const MAX_SEED: u64 = i64::MAX as u64;

/// The longest file name Linux allows (`NAME_MAX`), for names that become one path component.
const MAX_NAME_BYTES: usize = 255;

/// A path from the config is one a file system and a log line can hold: not empty, no NUL or
/// other control character (a newline would split a log or tasks line), no component longer
/// than `MAX_NAME_BYTES`. Absolute paths and `..` are allowed: these paths are chosen by the
/// user (where results go, where plugins are), never joined under the results directory.
pub(crate) fn check_path_text(path: &str) -> Result<(), String> {
    if path.is_empty() {
        return Err("the path is empty".into());
    }
    if let Some(c) = path.chars().find(|c| c.is_control()) {
        return Err(format!("`{}` contains the control character {c:?}; paths may not", path.escape_debug()));
    }
    if let Some(long) = path.split('/').find(|c| c.len() > MAX_NAME_BYTES) {
        return Err(format!("a path component is {} bytes long; at most {MAX_NAME_BYTES} are allowed", long.len()));
    }
    Ok(())
}

/// `run.plugin`: a path (contains `/` or ends in `.so`) is checked like any path; a name becomes
/// part of a file name (`libdrover_plugin_<name>.so`), so it is one short, printable component.
fn check_plugin_spec(spec: &str) -> Result<(), String> {
    if is_plugin_path(spec) {
        return check_path_text(spec);
    }
    if spec == "." || spec == ".." || spec.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(format!(
            "`{}` is neither a plugin name (no whitespace or control characters, not `.` or `..`) nor a path",
            spec.escape_debug()
        ));
    }
    if spec.len() > MAX_PLUGIN_NAME_BYTES {
        return Err(format!("a plugin name has at most {MAX_PLUGIN_NAME_BYTES} bytes, this one {}", spec.len()));
    }
    Ok(())
}

/// Leaves room for `libdrover_plugin_` and `.so` within `MAX_NAME_BYTES`.
const MAX_PLUGIN_NAME_BYTES: usize = 200;

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
    /// Extra plugin search dirs; a relative one written in the file is joined to the file's
    /// folder here (`PathBases`), one from an override stays relative to the working directory.
    pub plugin_path: Vec<PathBuf>,
    /// What a relative `run.plugin` path of each place is relative to (`Sweep::plugins`).
    pub(crate) bases: PathBases,
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
    /// The validated `[local]` table (defaults when absent); like `slurm`, not part of any run id.
    pub local: LocalSettings,
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
                    "`{}`: a sweep name is non-empty, made of ASCII letters, digits, `.`, `_`, `-`, and does not start with `.`",
                    file.name.escape_debug()
                )),
            ));
        }
        // The name is a directory name (`results/<name>`), which Linux caps at 255 bytes.
        if file.name.len() > MAX_NAME_BYTES {
            return Err(err(
                "name",
                ConfigErrorKind::InvalidValue(format!("{} bytes long; a sweep name has at most {MAX_NAME_BYTES}", file.name.len())),
            ));
        }
        if let Some(dir) = &file.results_dir {
            check_path_text(&dir.to_string_lossy()).map_err(|why| err("results_dir", ConfigErrorKind::InvalidValue(why)))?;
        }
        for (i, dir) in file.plugin_path.iter().enumerate() {
            check_path_text(&dir.to_string_lossy())
                .map_err(|why| err(&format!("plugin_path[{i}]"), ConfigErrorKind::InvalidValue(why)))?;
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

        // `run.seed` is used only without `sweep.seeds`: a seed written beside them would be
        // ignored without a word (an override of it is refused alike, `config::load`).
        if file.sweep.seeds.is_some() && file.run.seed != RunConfig::default().seed {
            return Err(err(
                "run.seed",
                ConfigErrorKind::Conflict(format!("`sweep.seeds` gives every run its seed, so `run.seed = {}` would be ignored: put it in `sweep.seeds` or remove it", file.run.seed)),
            ));
        }
        let seeds = match &file.sweep.seeds {
            None => vec![file.run.seed],
            // A range is checked before it is materialized: `{ count = 1e15 }` must not allocate.
            Some(SeedsFile::Range { count, .. }) if *count > MAX_RUNS as u64 => {
                return Err(err("sweep.seeds", ConfigErrorKind::InvalidValue(format!("expands to more than {MAX_RUNS} runs"))));
            }
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

        // `drover analyze` reads seeds as signed 64-bit integers (Polars' Int64): a larger one
        // trained, then showed an empty seed in `tables/runs.csv` without a word (review F6).
        if let Some(big) = seeds.iter().find(|s| **s > MAX_SEED) {
            let key = if file.sweep.seeds.is_some() { "sweep.seeds" } else { "run.seed" };
            return Err(err(key, ConfigErrorKind::InvalidValue(format!("seed {big} is above the largest seed, {MAX_SEED} (2^63 - 1, what the analysis tables hold)"))));
        }

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

        // `cases = []` is no cases, as an empty grid is no axes: it is how `--set 'sweep.cases=[]'`
        // turns a file's cases off, and zero runs is no useful reading of it.
        let cases = match file.sweep.cases.as_deref().filter(|cases| !cases.is_empty()) {
            None => vec![Vec::new()],
            Some(cases) => {
                let mut out = Vec::with_capacity(cases.len());
                for (i, case) in cases.iter().enumerate() {
                    let mut items = Vec::with_capacity(case.len());
                    for (key, value) in case {
                        let at = format!("sweep.cases[{i}].{key}");
                        let axis = AxisKey::parse(key).map_err(|kind| {
                            let nested = (!key.contains('.')).then(|| super::messages::unquoted_dotted_key(key, value)).flatten();
                            err(&at, nested.unwrap_or(kind))
                        })?;
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
            return Err(err("sweep", ConfigErrorKind::InvalidValue(too_many_runs(cases.len(), &grid, seeds.len()))));
        }

        check_combinations(&base_run, &base_params, &grid, &cases).map_err(|(key, kind)| err(&key, kind))?;

        let mut axis_keys: Vec<String> = grid.iter().map(|(k, _)| k.to_string()).collect();
        axis_keys.extend(cases.iter().flatten().map(|(k, _)| k.to_string()));
        axis_keys.sort();
        axis_keys.dedup();
        let slurm = SlurmSettings::validate(file.slurm.unwrap_or_default(), &axis_keys)
            .map_err(|(key, kind)| err(&key, kind))?;
        let local = LocalSettings::validate(file.local.unwrap_or_default()).map_err(|(key, kind)| err(&key, kind))?;

        Ok(Sweep {
            backend: file.backend,
            slurm,
            local,
            name: file.name,
            source: source.to_path_buf(),
            results_dir: file.results_dir,
            max_parallel,
            plugin_path: file.plugin_path.iter().map(|dir| file.bases.plugin_path.join(dir)).collect(),
            bases: file.bases,
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

    /// Every plugin named by the base config or an axis, for resolution before launch: each
    /// distinct spelling and base once, in the order base, grid, cases.
    pub fn plugins(&self) -> Vec<PluginRef> {
        let mut plugins: Vec<PluginRef> = Vec::new();
        let plugin_key = AxisKey::Run("plugin".into());
        let mut add = |v: &Value, key: String, base: &Path| {
            let Some(spec) = v.as_str() else { return };
            // A name does not depend on the base; only a path does.
            let base = if is_plugin_path(spec) { base.to_path_buf() } else { PathBuf::new() };
            if !plugins.iter().any(|p| p.spec == spec && p.base == base) {
                plugins.push(PluginRef { spec: spec.to_string(), key, base });
            }
        };
        if let Some(v) = self.base_run.get("plugin") {
            add(v, "run.plugin".into(), &self.bases.run_plugin);
        }
        for (key, values) in &self.grid {
            if *key == plugin_key {
                values.iter().for_each(|v| add(v, format!("sweep.grid.{key}"), &self.bases.grid_plugin));
            }
        }
        for (i, case) in self.cases.iter().enumerate() {
            let base = self.bases.case_plugin.get(i).cloned().unwrap_or_default();
            for (key, v) in case.iter().filter(|(k, _)| *k == plugin_key) {
                add(v, format!("sweep.cases[{i}].{key}"), &base);
            }
        }
        plugins
    }
}

/// One `run.plugin` value of a sweep, as written, with where it was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginRef {
    /// The value as written: a name, or a path (`is_plugin_path`). Run ids hash this text.
    pub spec: String,
    /// The first key that gives it (`run.plugin`, `sweep.grid.run.plugin`, `sweep.cases[1].run.plugin`).
    pub key: String,
    /// What a relative path is relative to: the sweep file's folder when the file wrote it, the
    /// working directory (empty) when an override did, or for a name.
    pub base: PathBuf,
}

/// "expands to N runs (2 cases × 10 `params.a` × 3 seeds), more than 100000": which factors to
/// shrink. The count is exact in `u128` (fewer than 2^128 for any file that fits in memory).
fn too_many_runs(cases: usize, grid: &[(AxisKey, Vec<Value>)], seeds: usize) -> String {
    let mut factors = Vec::new();
    if cases > 1 {
        factors.push(format!("{cases} cases"));
    }
    factors.extend(grid.iter().filter(|(_, v)| v.len() > 1).map(|(k, v)| format!("{} `{k}`", v.len())));
    if seeds > 1 {
        factors.push(format!("{seeds} seeds"));
    }
    let total = grid.iter().fold((cases as u128).saturating_mul(seeds as u128), |acc, (_, v)| acc.saturating_mul(v.len() as u128));
    format!("expands to {total} runs ({}), more than {MAX_RUNS}", factors.join(" × "))
}

/// `run.plugin` is a path when it contains `/` or ends in `.so`; otherwise a name to search for.
pub(crate) fn is_plugin_path(spec: &str) -> bool {
    spec.contains('/') || spec.ends_with(".so")
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
            // Only the type here: ranges and cross-key rules are checked per combination of axis
            // values (`check_combinations`), since a value may need another axis's value to be valid.
            let typed = typed_run(&run).map_err(|kind| if AT_LEAST_ONE.contains(&key.as_str()) { from_one(kind) } else { kind })?;
            match serde_json::to_value(&typed) {
                Ok(Value::Object(mut map)) => Ok(map.remove(key).unwrap_or(Value::Null)),
                _ => Err(ConfigErrorKind::InvalidValue("cannot be represented as JSON".into())),
            }
        }
    }
}

/// Checks every combination of `run.*` axis values (each case × each point of the `run.*` grid
/// axes) as one run, and that no two cases give the same configuration.
///
/// Each value was type-checked alone; here they meet: `num_envs = 6` and `ranks = 4` may each be
/// fine and not together. The error names the axis that holds the key at fault (else `run.<key>`)
/// and the combination. Params-only axes cannot make a run invalid, so the work is bounded by
/// the distinct `[run]` tables of the sweep, not by its run count.
fn check_combinations(
    base_run: &Map<String, Value>,
    base_params: &Map<String, Value>,
    grid: &[(AxisKey, Vec<Value>)],
    cases: &[Vec<(AxisKey, Value)>],
) -> Result<(), (String, ConfigErrorKind)> {
    let run_grid: Vec<&(AxisKey, Vec<Value>)> = grid.iter().filter(|(k, _)| matches!(k, AxisKey::Run(_))).collect();
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for (i, case) in cases.iter().enumerate() {
        let mut index = vec![0usize; run_grid.len()];
        loop {
            let point: Vec<(&AxisKey, &Value)> = case
                .iter()
                .map(|(k, v)| (k, v))
                .chain(run_grid.iter().zip(&index).map(|((k, values), &j)| (k, &values[j])))
                .collect();
            let (run, params) = apply(base_run, base_params, point.iter().copied());
            let run = canonical_run(&run).map_err(|(key, kind)| {
                let axis = AxisKey::Run(key.clone());
                let at = if case.iter().any(|(k, _)| *k == axis) {
                    format!("sweep.cases[{i}].run.{key}")
                } else if run_grid.iter().any(|(k, _)| *k == axis) {
                    format!("sweep.grid.run.{key}")
                } else {
                    format!("run.{key}")
                };
                let others: Vec<String> =
                    point.iter().filter(|(k, _)| matches!(k, AxisKey::Run(_)) && **k != axis).map(|(k, v)| format!("{k}={v}")).collect();
                let kind = match kind {
                    ConfigErrorKind::InvalidValue(why) if !others.is_empty() => {
                        ConfigErrorKind::InvalidValue(format!("{why} (in the runs with {})", others.join(", ")))
                    }
                    kind => kind,
                };
                (at, kind)
            })?;
            let resolved = canonical_json(&serde_json::json!({"run": run, "params": params}));
            if let Some(j) = seen.insert(resolved, i) {
                // Grid values are distinct, so a repeat comes from two cases.
                return Err((format!("sweep.cases[{i}]"), ConfigErrorKind::Duplicate(format!("same configuration as `sweep.cases[{j}]`"))));
            }
            if !advance_refs(&mut index, &run_grid) {
                break;
            }
        }
    }
    Ok(())
}

fn advance_refs(index: &mut [usize], grid: &[&(AxisKey, Vec<Value>)]) -> bool {
    for (i, (_, values)) in index.iter_mut().zip(grid).rev() {
        *i += 1;
        if *i < values.len() {
            return true;
        }
        *i = 0;
    }
    false
}

/// The one form of a resolved `[run]` table that run ids are computed from, or the key at fault.
///
/// A default that the job applies to an absent key is written out, and `reference_policy =
/// "none"` and `max_gen_batches = 1` (the same as absent) are dropped
/// (`drop_spelled_out_defaults`), so spelling a default out
/// does not change the id. Sequence-task keys are filled only for sequence tasks, so CartPole ids
/// are unchanged; keys added after sequence tasks shipped are dropped at their default rather than
/// filled, so the ids of sequence runs from before them are unchanged too.
pub(crate) fn canonical_run(run: &Map<String, Value>) -> Result<Map<String, Value>, (String, ConfigErrorKind)> {
    let mut typed = typed_run(run).map_err(|kind| ("run".to_string(), kind))?;
    check_run(&typed).map_err(|(key, kind)| (key.to_string(), kind))?;
    if let Some(EnvKind::Sequence { .. }) = EnvKind::parse(&typed.env) {
        typed.group_size.get_or_insert(DEFAULT_GROUP_SIZE);
        typed.vocab.get_or_insert(DEFAULT_VOCAB);
        typed.prompt_len.get_or_insert(DEFAULT_PROMPT_LEN);
    }
    drop_spelled_out_defaults(&mut typed);
    match serde_json::to_value(&typed) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(("run".to_string(), ConfigErrorKind::InvalidValue("cannot be represented as JSON".into()))),
    }
}

/// `canonical_run` of a `[run]` table read back from a run's `spec.json`, `None` when this drover
/// cannot read it: the form ids are computed from now, to compare runs of an earlier version.
pub(crate) fn canonical_run_table(run: &Map<String, Value>) -> Option<Map<String, Value>> {
    canonical_run(run).ok()
}

/// The optional `[run]` keys whose absence the job reads as one value: that value written out
/// is dropped, so it gives the id of leaving the key out; `config::tests::
/// every_spelled_out_default_keeps_the_id` tries each one. `expert_per_group = 0` is not among
/// them: ids hashed it as written before it could be, and dropping it now would give the runs of
/// sweeps that wrote it new ids; `plugin_cmd::training_key` tells it from absent instead, so two cases
/// differing only by it are refused as one training.
fn drop_spelled_out_defaults(typed: &mut RunConfig) {
    if typed.reference_policy == Some(ReferencePolicy::None) {
        typed.reference_policy = None;
    }
    if typed.max_gen_batches == Some(DEFAULT_MAX_GEN_BATCHES) {
        typed.max_gen_batches = None;
    }
}

/// `run` as a typed `RunConfig`, or why not in the words of the file's own type errors.
///
/// serde_json does the work (this runs once per run of the sweep); only when it refuses is the
/// table read again through figment, whose structured error `config::messages` turns into the
/// same plain words as a bad value in the file (serde_json's is text: `expected u32`).
fn typed_run(run: &Map<String, Value>) -> Result<RunConfig, ConfigErrorKind> {
    let refused = match serde_json::from_value(Value::Object(run.clone())) {
        Ok(typed) => return Ok(typed),
        Err(e) => e,
    };
    let again = match figment::value::Value::serialize(Value::Object(run.clone())) {
        Ok(value) => value.deserialize::<RunConfig>().err(),
        Err(e) => Some(e),
    };
    match again {
        Some(e) => Err(plain_kind(&e.kind)),
        // Both readers agree on every value the schema takes; should they not, say serde_json's words.
        None => Err(ConfigErrorKind::WrongType(refused.to_string())),
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

/// The `[run]` keys whose least value is 1 ([`check_run`] refuses 0).
pub(crate) const AT_LEAST_ONE: [&str; 7] = ["num_envs", "num_steps", "threads", "ranks", "update_epochs", "num_minibatches", "total_steps"];

/// Range checks of `[run]` values that serde's types cannot express; the error names the key.
pub(super) fn check_run(run: &RunConfig) -> Result<(), (&'static str, ConfigErrorKind)> {
    let invalid = |key, why: &str| Err((key, ConfigErrorKind::InvalidValue(why.to_string())));
    // Absent (serde's default is empty); a key written empty is refused by `config::load` first.
    if run.env.is_empty() {
        return Err(("env", ConfigErrorKind::Missing));
    }
    if run.plugin.is_empty() {
        return Err(("plugin", ConfigErrorKind::Missing));
    }
    check_plugin_spec(&run.plugin).map_err(|why| ("plugin", ConfigErrorKind::InvalidValue(why)))?;
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
    if !run.num_envs.is_multiple_of(run.ranks) {
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
    if run.threads > MAX_THREADS {
        return Err(("threads", ConfigErrorKind::InvalidValue(format!("must be at most {MAX_THREADS} (CPU threads per rank), got {}", run.threads))));
    }
    check_env(run)?;
    check_engine_sizes(run)
}

/// The most CPU threads a rank may ask for: beyond any node's cores, so a larger value is a
/// typo, which would otherwise fail every launched run.
pub(crate) const MAX_THREADS: u32 = 1024;

/// The engines' index limits (`kernels/src/layout.rs`: `ParamLayout::new`, `validate_sizes`),
/// checked here too so that a sweep no engine can run is refused before anything is written
/// rather than failing every launched run. Keep the two in step.
fn check_engine_sizes(run: &RunConfig) -> Result<(), (&'static str, ConfigErrorKind)> {
    let invalid = |key, why: String| Err((key, ConfigErrorKind::InvalidValue(why)));
    let limit = u64::from(u32::MAX);
    // Samples are addressed as u32 `t * num_envs + env`.
    let batch = u64::from(run.num_envs) * u64::from(run.num_steps);
    if batch > limit {
        return invalid(
            "num_envs",
            format!("num_envs * num_steps = {} * {} = {batch} must be at most 2^32 - 1 (the engines index samples with 32 bits)", run.num_envs, run.num_steps),
        );
    }
    // Actor and critic parameters are indexed with u32 on the GPU.
    let (obs, actions) = match EnvKind::parse(&run.env) {
        Some(EnvKind::Sequence { family }) => {
            let (vocab, prompt_len) = (u64::from(run.vocab.unwrap_or(DEFAULT_VOCAB)), u64::from(run.prompt_len.unwrap_or(DEFAULT_PROMPT_LEN)));
            let response = u64::from(RunConfig::response_len(family, run.prompt_len.unwrap_or(DEFAULT_PROMPT_LEN)));
            ((prompt_len + response) * vocab + response, vocab)
        }
        _ => (4, 2),
    };
    let params = |out: u64| -> Option<u64> {
        let mut dims = vec![obs];
        dims.extend(run.hidden.iter().map(|&h| u64::from(h)));
        dims.push(out);
        dims.windows(2).try_fold(0u64, |total, w| total.checked_add(w[0].checked_mul(w[1])?.checked_add(w[1])?))
    };
    match params(actions).zip(params(1)).and_then(|(a, c)| a.checked_add(c)) {
        Some(n) if n <= limit => Ok(()),
        n => invalid(
            "hidden",
            format!(
                "{:?} gives the policy and value networks {} parameters; at most 2^32 - 1 fit the engines' 32-bit indices",
                run.hidden,
                n.map_or_else(|| "more than 2^64".to_string(), |n| n.to_string())
            ),
        ),
    }
}

/// The environment is known, and the sequence-task keys fit it.
fn check_env(run: &RunConfig) -> Result<(), (&'static str, ConfigErrorKind)> {
    let invalid = |key, why: String| Err((key, ConfigErrorKind::InvalidValue(why)));
    let Some(kind) = EnvKind::parse(&run.env) else {
        return invalid("env", format!("unknown environment `{}` (known: {})", run.env, EnvKind::IDS.join(", ")));
    };
    let seq_keys = [
        ("group_size", run.group_size.is_some()),
        ("vocab", run.vocab.is_some()),
        ("prompt_len", run.prompt_len.is_some()),
        ("expert_per_group", run.expert_per_group.is_some()),
        ("dataset_size", run.dataset_size.is_some()),
        ("max_gen_batches", run.max_gen_batches.is_some()),
    ];
    let EnvKind::Sequence { family } = kind else {
        if let Some((key, _)) = seq_keys.iter().find(|(_, set)| *set) {
            return invalid(key, format!("is a sequence-task setting; `{}` has no use for it", run.env));
        }
        // drover-job refuses this too, but only once launched, in a log the user must open.
        let batch = u64::from(run.num_envs) * u64::from(run.num_steps);
        if !batch.is_multiple_of(u64::from(run.num_minibatches)) {
            return invalid(
                "num_minibatches",
                format!(
                    "must divide the batch, num_envs * num_steps = {} * {} = {batch} (each epoch splits it into equal minibatches)",
                    run.num_envs, run.num_steps
                ),
            );
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
    if let Some(experts) = run.expert_per_group.filter(|&e| e >= group) {
        return invalid(
            "expert_per_group",
            format!("must be less than group_size = {group} (each prompt group needs a sampled response), got {experts}"),
        );
    }
    if family == "add" && !prompt_len.is_multiple_of(2) {
        let default = if run.prompt_len.is_none() { " (the default)" } else { "" };
        return invalid("prompt_len", format!("`{}` adds two numbers of prompt_len / 2 digits: use an even length, got {prompt_len}{default}", run.env));
    }
    if !(run.num_envs / run.ranks).is_multiple_of(group) {
        return invalid(
            "group_size",
            format!("num_envs / ranks = {} is not a multiple of group_size = {group} (a prompt's group stays on one rank)", run.num_envs / run.ranks),
        );
    }
    if let Some(size) = run.dataset_size {
        // One generation batch draws this many distinct prompts from the dataset.
        let prompts = u64::from(run.num_envs / group);
        if size < prompts {
            return invalid(
                "dataset_size",
                format!("must be at least num_envs / group_size = {prompts} (the prompts of one generation batch), got {size}"),
            );
        }
        if size > MAX_DATASET_SIZE {
            return invalid(
                "dataset_size",
                format!("must be at most 2^24 = {MAX_DATASET_SIZE} (plugins receive prompt indices as an f32 metadata column, exact only up to 2^24), got {size}"),
            );
        }
    }
    if let Some(batches) = run.max_gen_batches.filter(|b| !(1..=MAX_GEN_BATCHES).contains(b)) {
        return invalid("max_gen_batches", format!("must be between 1 and {MAX_GEN_BATCHES}, got {batches}"));
    }
    let len = RunConfig::response_len(family, prompt_len);
    if run.num_steps != len {
        return invalid(
            "num_steps",
            format!("`{}` with prompt_len = {prompt_len} generates {len}-token responses and a rollout is one response per env: set num_steps = {len}", run.env),
        );
    }
    if !run.num_envs.is_multiple_of(run.num_minibatches) {
        return invalid(
            "num_minibatches",
            format!("must divide num_envs = {} (sequence tasks train on minibatches of whole responses)", run.num_envs),
        );
    }
    Ok(())
}
