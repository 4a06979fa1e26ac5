//! Expansion of a `Sweep` into `RunSpec`s: cases × grid product × seeds, pure and infallible.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{Map, Value};

use crate::config::ids::{canonical_json, ConfigId, RunId};
use crate::config::sweep::{apply, canonical_run, AxisKey, Sweep};

/// One run of a sweep: its resolved configuration and ids. (On disk it becomes a `layout::JobSpec`.)
///
/// The runs of one configuration differ only in their seed, so they share its tables (`Arc`):
/// a 100,000-run sweep holds one copy of each configuration, not one per run.
#[derive(Debug, Clone, PartialEq)]
pub struct RunSpec {
    /// Hash of the configuration with the seed.
    pub run_id: RunId,
    /// Hash of the configuration without the seed.
    pub config_id: ConfigId,
    /// Human-readable name of the configuration: `key=value` of each axis, or `base`.
    pub label: Arc<str>,
    /// The axis values of this run (grid and case keys), by dotted key.
    pub axes: Arc<BTreeMap<String, Value>>,
    /// The seed.
    pub seed: u64,
    /// The resolved `[run]` table **without** `seed` (shared by the configuration's runs);
    /// [`RunSpec::run_table`] gives the run's own table, its seed included.
    pub run: Arc<Map<String, Value>>,
    /// The resolved `[params]` table.
    pub params: Arc<Map<String, Value>>,
    /// Which entry of `sweep.cases` it comes from (0 when the sweep has none), for messages.
    pub case: usize,
}

impl RunSpec {
    /// `run.plugin` as written (a name or a path).
    pub fn plugin(&self) -> &str {
        self.run.get("plugin").and_then(Value::as_str).unwrap_or_default()
    }

    /// The resolved `[run]` table of this run, `seed` included (what its `spec.json` records).
    pub fn run_table(&self) -> Map<String, Value> {
        let mut run = (*self.run).clone();
        run.insert("seed".into(), Value::from(self.seed));
        run
    }
}

impl Sweep {
    /// All runs, in order: for each case, for each grid point (axes alphabetical, last fastest), for each seed.
    pub fn expand(&self) -> Vec<RunSpec> {
        let mut runs = Vec::with_capacity(self.run_count());
        for (case_index, case) in self.cases.iter().enumerate() {
            let mut index = vec![0usize; self.grid.len()];
            loop {
                let point: Vec<(&AxisKey, &Value)> = case
                    .iter()
                    .map(|(k, v)| (k, v))
                    .chain(self.grid.iter().zip(&index).map(|((k, values), &i)| (k, &values[i])))
                    .collect();
                self.push_seeds(&point, case_index, &mut runs);
                if !advance(&mut index, &self.grid) {
                    break;
                }
            }
        }
        runs
    }

    fn push_seeds(&self, point: &[(&AxisKey, &Value)], case: usize, runs: &mut Vec<RunSpec>) {
        let (run, params) = apply(&self.base_run, &self.base_params, point.iter().copied());
        // `validate` checked this combination with the same function, so the fallback is unreachable.
        let mut run = canonical_run(&run).unwrap_or(run);
        let axes: BTreeMap<String, Value> = point.iter().map(|(k, v)| (k.to_string(), (*v).clone())).collect();
        let label = label(&axes);
        run.remove("seed");
        let plugin = run.get("plugin").cloned().unwrap_or(Value::Null);
        let config_id = ConfigId::of(&serde_json::json!({"run": run, "params": params, "plugin": plugin}));
        let ids = SeedIds::new(&run, &params, &plugin);
        let (label, axes, run, params): (Arc<str>, _, _, _) = (label.into(), Arc::new(axes), Arc::new(run), Arc::new(params));
        for &seed in &self.seeds {
            runs.push(RunSpec {
                run_id: ids.run_id(seed),
                config_id: config_id.clone(),
                label: Arc::clone(&label),
                axes: Arc::clone(&axes),
                seed,
                run: Arc::clone(&run),
                params: Arc::clone(&params),
                case,
            });
        }
    }
}

/// The run ids of one configuration's seeds: the canonical JSON of `{"params", "plugin", "run"}`
/// with `run.seed` left out, split where the seed's value goes (keys are sorted, so its place
/// is fixed). Each seed then costs one format and one hash instead of cloning and serializing
/// the whole configuration again; `RunId::of` over the full value gives the same id (tested).
struct SeedIds {
    head: String,
    tail: String,
}

impl SeedIds {
    /// The ids of `run` (a `seed` key in it is ignored), `params` and `plugin` with each seed.
    fn new(run: &Map<String, Value>, params: &Map<String, Value>, plugin: &Value) -> Self {
        let entry = |key: &str, value: &Value| format!("{}:{}", canonical_json(&Value::String(key.to_string())), canonical_json(value));
        let mut entries: Vec<(&String, &Value)> = run.iter().filter(|(k, _)| k.as_str() != "seed").collect();
        entries.sort_by(|a, b| a.0.cmp(b.0));
        let (before, after): (Vec<_>, Vec<_>) = entries.into_iter().partition(|(k, _)| k.as_str() < "seed");
        let mut head = format!("{{\"params\":{},\"plugin\":{},\"run\":{{", canonical_json(&Value::Object(params.clone())), canonical_json(plugin));
        for (key, value) in before {
            head.push_str(&entry(key, value));
            head.push(',');
        }
        head.push_str("\"seed\":");
        let mut tail = String::new();
        for (key, value) in after {
            tail.push(',');
            tail.push_str(&entry(key, value));
        }
        tail.push_str("}}");
        SeedIds { head, tail }
    }

    fn run_id(&self, seed: u64) -> RunId {
        RunId::of_canonical(&format!("{}{seed}{}", self.head, self.tail))
    }
}

/// Odometer step over the grid; false once every point has been visited.
fn advance(index: &mut [usize], grid: &[(AxisKey, Vec<Value>)]) -> bool {
    for (i, (_, values)) in index.iter_mut().zip(grid).rev() {
        *i += 1;
        if *i < values.len() {
            return true;
        }
        *i = 0;
    }
    false
}

fn label(axes: &BTreeMap<String, Value>) -> String {
    if axes.is_empty() {
        return "base".into();
    }
    let parts: Vec<String> = axes
        .iter()
        .map(|(k, v)| match v {
            Value::String(s) => format!("{k}={s}"),
            other => format!("{k}={other}"),
        })
        .collect();
    parts.join(",")
}

#[cfg(test)]
mod tests {
    use super::SeedIds;
    use crate::config::ids::RunId;
    use serde_json::{json, Map, Value};

    /// The spliced ids are those of the whole configuration hashed the plain way, whether the
    /// run table's keys all sort before `seed`, all after, around it, or there are none.
    #[test]
    fn seed_ids_equal_hashing_the_whole_configuration() {
        let runs = [
            json!({}),
            json!({"env": "CartPole-v1", "lr": 0.00025, "hidden": [64, 64]}),
            json!({"success_return": 475.0, "threads": 1, "total_steps": 500000}),
            json!({"anneal_lr": true, "env": "Seq\"Add\u{1}-v0", "threads": 2, "zeta": {"b": 1, "a": [1.5, null]}}),
        ];
        let params = json!({"clip_coef": 0.2, "name": "a\\b\n", "nested": {"z": 1, "y": "é"}});
        for run in runs {
            let run = run.as_object().cloned().expect("an object");
            let params = params.as_object().cloned().expect("an object");
            for plugin in [json!("ppo"), json!("./lib/libx.so"), Value::Null] {
                let ids = SeedIds::new(&run, &params, &plugin);
                for seed in [0_u64, 1, 42, u64::MAX] {
                    let mut seeded: Map<String, Value> = run.clone();
                    seeded.insert("seed".into(), Value::from(seed));
                    let plain = RunId::of(&json!({"run": seeded, "params": params, "plugin": plugin}));
                    assert_eq!(ids.run_id(seed), plain, "run {run:?}, plugin {plugin}, seed {seed}");
                }
            }
        }
    }
}
