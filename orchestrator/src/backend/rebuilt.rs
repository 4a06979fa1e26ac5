//! Completed runs trained by another build of their plugin than the file now holds.
//!
//! A run id names the configuration, not the plugin's bytes, so a rerun after rebuilding a
//! plugin (an author's edit, build, rerun loop) counts the old runs as done, and `drover
//! analyze` would report the old build's results as the new one's. Retraining them silently
//! would be as wrong the other way (any rebuild, even a comment, would redo a whole sweep), so
//! drover keeps them and says so, with what to do.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use crate::layout::{self, SUMMARY_JSON};
use crate::plan::Plan;

/// Completed runs of one plugin file whose `summary.json` records another SHA-256 than the
/// file's present one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtherBuild {
    /// The plugin file the runs loaded (as their summaries record it).
    pub plugin: PathBuf,
    /// The hash their summaries record (the first one seen, when several builds trained them).
    pub recorded: String,
    /// The file's hash now.
    pub current: String,
    /// The runs, in sweep order.
    pub runs: Vec<String>,
}

impl OtherBuild {
    /// One warning line, with what to do.
    pub fn warning(&self) -> String {
        let examples: Vec<&str> = self.runs.iter().take(3).map(String::as_str).collect();
        let more = if self.runs.len() > examples.len() { ", ..." } else { "" };
        format!(
            "{} trained by another build of `{}` (their summary.json records SHA-256 {}…, the file now hashes to {}…): they are kept and not rerun, and `drover analyze` reports them as they are; to train them with this build, use a new results directory (`--results`) or delete their run folders (runs/{}{more})",
            crate::words::count(self.runs.len(), "completed run"),
            self.plugin.display(),
            short(&self.recorded),
            short(&self.current),
            examples.join(", runs/"),
        )
    }
}

fn short(hash: &str) -> &str {
    hash.get(..12).unwrap_or(hash)
}

/// What a summary says of the plugin that trained its run.
#[derive(serde::Deserialize)]
struct SummaryPlugin {
    plugin: PluginFile,
}

#[derive(serde::Deserialize)]
struct PluginFile {
    path: PathBuf,
    sha256: String,
}

/// The completed runs of `plan` whose plugin file has changed since they trained, by file.
/// A run's summary names the file it loaded (a `[slurm.arch]` folder's build on such a node),
/// and that file is hashed once; a file that is gone is not judged.
pub fn trained_by_other_builds(plan: &Plan) -> Vec<OtherBuild> {
    let mut hashes: HashMap<PathBuf, Option<String>> = HashMap::new();
    let mut found: BTreeMap<PathBuf, OtherBuild> = BTreeMap::new();
    for run in &plan.runs {
        let path = plan.results.run_dir(run.run_id.as_str()).join(SUMMARY_JSON);
        let summary = match layout::read_record_typed::<SummaryPlugin>(&path) {
            Ok(Some(summary)) => summary,
            // Missing or damaged: the run is not trusted as done and is redone anyway.
            Ok(None) => continue,
            Err(e) if e.is_damaged_content() => continue,
            Err(e) => {
                // Said rather than taken for a run to redo: `drover run` stops on it, naming it.
                tracing::warn!("cannot read `{}`: {e}; not checking which build of its plugin trained the run", path.display());
                continue;
            }
        };
        let PluginFile { path: plugin, sha256: recorded } = summary.plugin;
        let current = hashes.entry(plugin.clone()).or_insert_with(|| super::file_sha256(&plugin).ok());
        let Some(current) = current.as_ref().filter(|c| **c != recorded) else { continue };
        // Only runs the rerun keeps: one whose completion is not trusted is redone anyway.
        let spec = plan.job_spec(run);
        if !matches!(super::inspect_run(&plan.results.run_dir(&spec.run_id), &spec), Ok((super::RunState::Completed, _))) {
            continue;
        }
        found
            .entry(plugin.clone())
            .or_insert_with(|| OtherBuild { plugin, recorded, current: current.clone(), runs: Vec::new() })
            .runs
            .push(run.run_id.to_string());
    }
    found.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn the_warning_names_the_file_both_hashes_and_what_to_do() {
        let other = OtherBuild {
            plugin: PathBuf::from("/p/libdrover_plugin_x.so"),
            recorded: "5eea1c0d9f2a77".repeat(4),
            current: "398c2de1ab4455".repeat(4),
            runs: vec!["a".into(), "b".into(), "c".into(), "d".into()],
        };
        let warning = other.warning();
        assert!(warning.starts_with("4 completed runs trained by another build of `/p/libdrover_plugin_x.so`"), "{warning}");
        assert!(warning.contains("records SHA-256 5eea1c0d9f2a…, the file now hashes to 398c2de1ab44…"), "{warning}");
        assert!(warning.ends_with("(runs/a, runs/b, runs/c, ...)"), "{warning}");
    }

    #[test]
    fn a_summary_of_another_hash_is_found_once_per_file() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let plugin = tmp.path().join("libdrover_plugin_x.so");
        std::fs::write(&plugin, b"build 2").expect("plugin");
        let now = crate::backend::file_sha256(&plugin).expect("hash");
        let sweep_file = tmp.path().join("s.toml");
        let text = format!("name = \"t\"\n[run]\nenv = \"CartPole-v1\"\nplugin = {:?}\n[sweep]\nseeds = [1, 2, 3, 4, 5]\n", plugin.display().to_string());
        std::fs::write(&sweep_file, text).expect("sweep");
        let opts = crate::plan::PlanOptions { sweep_file, results: Some(tmp.path().join("r")), ..Default::default() };
        let plan = crate::plan::plan(&opts).expect("plan");
        let ids: Vec<String> = plan.runs.iter().map(|r| r.run_id.to_string()).collect();
        // A run directory as a completed job leaves it, its summary naming `plugin` and `sha`.
        let run = |i: usize, plugin: &Path, sha: &str, completed: bool| {
            let dir = plan.results.run_dir(&ids[i]);
            std::fs::create_dir_all(&dir).expect("mkdir");
            let spec = serde_json::to_string(&plan.job_spec(&plan.runs[i])).expect("spec");
            std::fs::write(dir.join(crate::layout::SPEC_JSON), spec).expect("spec");
            let summary = serde_json::json!({"format_version": 1, "run_id": ids[i], "plugin": {"name": "x", "path": plugin, "sha256": sha}});
            std::fs::write(dir.join(SUMMARY_JSON), summary.to_string()).expect("summary");
            let mut parquet = b"PAR1".to_vec();
            parquet.extend([0u8; 16]);
            parquet.extend(16u32.to_le_bytes());
            parquet.extend(b"PAR1");
            std::fs::write(dir.join(crate::layout::METRICS_PARQUET), parquet).expect("parquet");
            if completed {
                let exit = serde_json::json!({"format_version": 1, "run_id": ids[i], "status": "completed"});
                std::fs::write(dir.join(crate::layout::EXIT_JSON), exit.to_string()).expect("exit");
            }
        };
        run(0, &plugin, "old", true);
        run(1, &plugin, &now, true);
        run(2, &plugin, "old", true);
        run(3, &tmp.path().join("gone.so"), "old", true);
        run(4, &plugin, "old", false);
        let found = trained_by_other_builds(&plan);
        assert_eq!(
            found,
            [OtherBuild { plugin: plugin.clone(), recorded: "old".into(), current: now, runs: vec![ids[0].clone(), ids[2].clone()] }]
        );
    }
}
