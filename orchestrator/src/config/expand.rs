//! Expansion of a `Sweep` into `RunSpec`s: cases × grid product × seeds, pure and infallible.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::config::ids::{ConfigId, RunId};
use crate::config::sweep::{apply, canonical_run, AxisKey, Sweep};

/// One run of a sweep: its resolved configuration and ids. (On disk it becomes a `layout::JobSpec`.)
#[derive(Debug, Clone, PartialEq)]
pub struct RunSpec {
    /// Hash of the configuration with the seed.
    pub run_id: RunId,
    /// Hash of the configuration without the seed.
    pub config_id: ConfigId,
    /// Human-readable name of the configuration: `key=value` of each axis, or `base`.
    pub label: String,
    /// The axis values of this run (grid and case keys), by dotted key.
    pub axes: BTreeMap<String, Value>,
    /// The seed.
    pub seed: u64,
    /// The resolved `[run]` table, `seed` included.
    pub run: Map<String, Value>,
    /// The resolved `[params]` table.
    pub params: Map<String, Value>,
}

impl RunSpec {
    /// `run.plugin` as written (a name or a path).
    pub fn plugin(&self) -> &str {
        self.run.get("plugin").and_then(Value::as_str).unwrap_or_default()
    }
}

impl Sweep {
    /// All runs, in order: for each case, for each grid point (axes alphabetical, last fastest), for each seed.
    pub fn expand(&self) -> Vec<RunSpec> {
        let mut runs = Vec::with_capacity(self.run_count());
        for case in &self.cases {
            let mut index = vec![0usize; self.grid.len()];
            loop {
                let point: Vec<(&AxisKey, &Value)> = case
                    .iter()
                    .map(|(k, v)| (k, v))
                    .chain(self.grid.iter().zip(&index).map(|((k, values), &i)| (k, &values[i])))
                    .collect();
                self.push_seeds(&point, &mut runs);
                if !advance(&mut index, &self.grid) {
                    break;
                }
            }
        }
        runs
    }

    fn push_seeds(&self, point: &[(&AxisKey, &Value)], runs: &mut Vec<RunSpec>) {
        let (run, params) = apply(&self.base_run, &self.base_params, point.iter().copied());
        // `validate` checked this combination with the same function, so the fallback is unreachable.
        let mut run = canonical_run(&run).unwrap_or(run);
        let axes: BTreeMap<String, Value> = point.iter().map(|(k, v)| (k.to_string(), (*v).clone())).collect();
        let label = label(&axes);
        run.remove("seed");
        let plugin = run.get("plugin").cloned().unwrap_or(Value::Null);
        let config_id = ConfigId::of(&serde_json::json!({"run": run, "params": params, "plugin": plugin}));
        for &seed in &self.seeds {
            let mut run = run.clone();
            run.insert("seed".into(), Value::from(seed));
            let run_id = RunId::of(&serde_json::json!({"run": run, "params": params, "plugin": plugin}));
            runs.push(RunSpec {
                run_id,
                config_id: config_id.clone(),
                label: label.clone(),
                axes: axes.clone(),
                seed,
                run,
                params: params.clone(),
            });
        }
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
