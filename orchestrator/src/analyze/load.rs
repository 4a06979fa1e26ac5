//! Reading a results directory: `runs/*/spec.json` + `exit.json` → a runs frame, `metrics.parquet` → metrics.

use std::path::Path;

use polars::prelude::*;

use crate::error::AnalyzeError;
use crate::layout::{self, ExitRecord, ExitStatus, JobSpec, ResultsDir, EXIT_JSON, METRICS_PARQUET, SPEC_JSON};

/// The inputs of the statistics, still lazy.
#[must_use]
pub struct Loaded {
    /// One row per completed run: run_id, config_id, label, seed, success_return.
    pub runs: LazyFrame,
    /// All metrics rows of completed runs (the columns the statistics need) with their run_id.
    pub metrics: LazyFrame,
    /// Completed runs found.
    pub completed: usize,
    /// Run directories that were left out (not completed), with the reason.
    pub left_out: Vec<(String, String)>,
}

fn polars_err(action: impl Into<String>) -> impl FnOnce(PolarsError) -> AnalyzeError {
    let action = action.into();
    move |source| AnalyzeError::Polars { action, source }
}

/// Loads every completed run of the results directory `dir`.
///
/// Runs that did not complete are left out (their partial metrics would bias the statistics) and
/// listed in `Loaded::left_out`. A record of an unknown format version is an error, not a skip.
pub fn load_results(dir: &Path) -> Result<Loaded, AnalyzeError> {
    let results = ResultsDir::new(dir);
    let runs_dir = results.runs_dir();
    if !runs_dir.is_dir() {
        return Err(AnalyzeError::NotResults { dir: dir.to_path_buf() });
    }
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| AnalyzeError::Io { action: "read", path, source }
    };
    let mut entries: Vec<_> = std::fs::read_dir(&runs_dir)
        .map_err(io(&runs_dir))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(io(&runs_dir))?
        .into_iter()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    entries.sort();

    let (mut run_ids, mut config_ids, mut labels, mut seeds, mut thresholds) = (vec![], vec![], vec![], vec![], vec![]);
    let mut metrics = Vec::new();
    let mut left_out = Vec::new();
    for run_dir in &entries {
        let name = run_dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let bad = |path: &Path, reason: String| AnalyzeError::BadRecord { path: path.to_path_buf(), reason };
        let spec_path = run_dir.join(SPEC_JSON);
        let Some(spec) = layout::read_record::<JobSpec>(&spec_path).map_err(|r| bad(&spec_path, r))? else {
            left_out.push((name, "no spec.json".into()));
            continue;
        };
        let exit_path = run_dir.join(EXIT_JSON);
        match layout::read_record::<ExitRecord>(&exit_path).map_err(|r| bad(&exit_path, r))? {
            Some(exit) if exit.status == ExitStatus::Completed => {}
            Some(exit) => {
                left_out.push((name, format!("{:?}", exit.status).to_lowercase()));
                continue;
            }
            None => {
                left_out.push((name, "unfinished".into()));
                continue;
            }
        }
        let metrics_path = run_dir.join(METRICS_PARQUET);
        if !metrics_path.is_file() {
            return Err(bad(&metrics_path, "the run completed but its metrics file is missing".into()));
        }
        let seed = spec.run.get("seed").and_then(|v| v.as_i64());
        let threshold = spec.run.get("success_return").and_then(|v| v.as_f64());
        let path_str = metrics_path.to_string_lossy().into_owned();
        let frame = LazyFrame::scan_parquet(PlRefPath::new(path_str.as_str()), ScanArgsParquet::default())
            .map_err(polars_err(format!("scanning `{path_str}`")))?
            .select([
                col("iteration").cast(DataType::Int64),
                col("global_step").cast(DataType::Int64),
                col("episodic_return_mean").cast(DataType::Float64),
                col("episodes").cast(DataType::Int64),
            ])
            .with_column(lit(spec.run_id.clone()).alias("run_id"));
        metrics.push(frame);
        run_ids.push(spec.run_id);
        config_ids.push(spec.config_id);
        labels.push(spec.label);
        seeds.push(seed);
        thresholds.push(threshold);
    }
    if run_ids.is_empty() {
        return Err(AnalyzeError::NoCompletedRuns { dir: dir.to_path_buf(), found: entries.len() });
    }
    let completed = run_ids.len();
    let runs = df!(
        "run_id" => run_ids,
        "config_id" => config_ids,
        "label" => labels,
        "seed" => seeds,
        "success_return" => thresholds,
    )
    .map_err(polars_err("building the runs table"))?
    .lazy();
    let metrics = concat(metrics, UnionArgs::default()).map_err(polars_err("combining metrics files"))?;
    Ok(Loaded { runs, metrics, completed, left_out })
}
