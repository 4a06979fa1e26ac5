//! Run directories of a results directory that the sweep being run does not name: the runs of
//! an earlier version of it (a grid value removed, a `--set` left out, a parameter written
//! another way). They are kept, never deleted, and left out of `sweep.json`, so `drover status`
//! and `drover analyze` leave them out too; `drover run` and `--dry-run` say so (review F4),
//! rather than let a researcher retrain a sweep without a word about the runs already there.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

use crate::config::RunId;
use crate::layout::{self, JobSpec, SPEC_JSON};
use crate::plan::Plan;
use crate::plugin_cmd::training_key;
use crate::plugin_cmd::PluginDescription;

/// One run directory under `runs/` that is not a run of the plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtherRun {
    /// Its id (the directory's name).
    pub run_id: String,
    /// Its label, from its `spec.json` (`None` when that is missing or damaged).
    pub label: Option<String>,
    /// Whether it completed (its markers check out as `drover run` judges them).
    pub completed: bool,
    /// The run of this plan that trains the same (same seed, same training once the plugin's
    /// declared parameters apply: `plugin_cmd::training_key`), written another way, if one does.
    pub same_as: Option<String>,
}

/// The run directories of `runs` (names of run ids) that are not among `ids`, sorted.
pub fn run_dirs_not_in(runs_dir: &Path, ids: &HashSet<&str>) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(runs_dir) else { return Vec::new() };
    let mut other: Vec<String> = entries
        .filter_map(Result::ok)
        .filter(|e| e.path().is_dir())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|name| RunId::parse(name).is_some() && !ids.contains(name.as_str()))
        .collect();
    other.sort();
    other
}

/// The run directories of `plan`'s results directory that it does not name.
pub fn other_runs(plan: &Plan) -> Vec<OtherRun> {
    let ids: HashSet<&str> = plan.runs.iter().map(|r| r.run_id.as_str()).collect();
    let names = run_dirs_not_in(&plan.results.runs_dir(), &ids);
    if names.is_empty() {
        return Vec::new();
    }
    let lookup = |spelling: &str| -> Option<&PluginDescription> {
        let same = |a: &str, b: &str| a.replace('-', "_") == b.replace('-', "_");
        plan.described.get(spelling).or_else(|| plan.described.values().find(|d| same(&d.name, spelling)))
    };
    // The plan's runs by what they train (asked only when there is another run to match).
    let mut by_training: HashMap<(String, u64), &str> = HashMap::new();
    for run in &plan.runs {
        by_training.entry((training_key(&run.run, &run.params, lookup(run.plugin())), run.seed)).or_insert(run.run_id.as_str());
    }
    names
        .into_iter()
        .map(|run_id| {
            let dir = plan.results.run_dir(&run_id);
            let spec = layout::read_record_typed::<JobSpec>(&dir.join(SPEC_JSON)).ok().flatten();
            let completed = spec.as_ref().is_some_and(|spec| {
                matches!(super::inspect_run(&dir, spec), Ok((super::RunState::Completed, _)))
            });
            let same_as = spec.as_ref().and_then(|spec| {
                let seed = spec.run.get("seed").and_then(serde_json::Value::as_u64)?;
                let plugin = spec.run.get("plugin").and_then(serde_json::Value::as_str).unwrap_or_default();
                // `[run]` as this drover writes it, so a default spelled out (F3) compares equal.
                let run = crate::config::canonical_run_table(&spec.run).unwrap_or_else(|| spec.run.clone());
                by_training.get(&(training_key(&run, &spec.params, lookup(plugin)), seed)).map(|id| id.to_string())
            });
            OtherRun { run_id, label: spec.map(|s| s.label), completed, same_as }
        })
        .collect()
}

/// What `drover run` and `--dry-run` say about `other` (one line each, without `drover: `).
pub fn lines(other: &[OtherRun], runs_dir: &Path) -> Vec<String> {
    if other.is_empty() {
        return Vec::new();
    }
    let completed = other.iter().filter(|r| r.completed).count();
    let mut labels: Vec<&str> = Vec::new();
    for label in other.iter().filter_map(|r| r.label.as_deref()) {
        if !labels.contains(&label) {
            labels.push(label);
        }
    }
    let shown: Vec<String> = labels.iter().take(3).map(|l| format!("`{l}`")).collect();
    let more = if labels.len() > 3 { ", ..." } else { "" };
    let labels = if shown.is_empty() { String::new() } else { format!("; labels {}{more}", shown.join(", ")) };
    let mut out = vec![format!(
        "note: {} in `{}` {} not part of this sweep ({completed} completed{labels}): runs of an earlier version of it; they are kept, and left out of `drover status`'s list and of `drover analyze` unless `--all-runs`",
        crate::words::count_as(other.len(), "run directory", "run directories"),
        runs_dir.display(),
        if other.len() == 1 { "is" } else { "are" },
    )];
    let same: BTreeMap<&str, &str> = other.iter().filter(|r| r.completed).filter_map(|r| Some((r.run_id.as_str(), r.same_as.as_deref()?))).collect();
    if !same.is_empty() {
        let pairs: Vec<String> = same.iter().take(3).map(|(old, new)| format!("{old} -> {new}")).collect();
        let more = if same.len() > 3 { ", ..." } else { "" };
        out.push(format!(
            "warning: {} of them {} the same training as runs of this sweep under other ids ({}{more}): the sweep now writes the configuration another way (a plugin default written out or left out, a number in another type, another spelling of the plugin, or a drover whose ids drop a default), so those runs train again; to keep using the completed ones, write the sweep as it was",
            crate::words::count(same.len(), "completed run"),
            if same.len() == 1 { "is" } else { "are" },
            pairs.join(", "),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lines_count_the_runs_and_pair_the_same_trainings() {
        let run = |id: &str, label: &str, completed: bool, same_as: Option<&str>| OtherRun {
            run_id: id.into(),
            label: Some(label.into()),
            completed,
            same_as: same_as.map(str::to_string),
        };
        let dir = Path::new("r/runs");
        assert!(lines(&[], dir).is_empty());
        let other = [run("a", "params.clip_coef=0.2", true, None), run("b", "params.clip_coef=0.2", false, None)];
        assert_eq!(
            lines(&other, dir),
            ["note: 2 run directories in `r/runs` are not part of this sweep (1 completed; labels `params.clip_coef=0.2`): runs of an earlier version of it; they are kept, and left out of `drover status`'s list and of `drover analyze` unless `--all-runs`"]
        );
        let other = [run("a", "base", true, Some("c"))];
        let said = lines(&other, dir);
        assert_eq!(said.len(), 2);
        assert!(said[1].starts_with("warning: 1 completed run of them is the same training as runs of this sweep under other ids (a -> c)"), "{}", said[1]);
    }
}
