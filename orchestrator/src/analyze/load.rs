//! Reading results directories: `runs/*/spec.json` + `exit.json` → a runs frame with one column
//! per resolved hyperparameter, `metrics.parquet` → one lazy metrics frame over every run.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use polars::prelude::*;
use serde_json::Value;

use crate::error::AnalyzeError;
use crate::layout::{
    self, ExitRecord, ExitStatus, JobSpec, ResultsDir, SweepManifest, EXIT_JSON, METRICS_PARQUET, SPEC_JSON, SUMMARY_JSON, SWEEP_JSON,
};

/// The runs table's column of what computed each run (`summary.json`'s `compute`, or its
/// `computes` joined by `+`).
pub const COMPUTE: &str = "compute";
/// The runs table's column of each run's plugin build (`summary.json`'s `plugin.sha256`, or
/// its `plugin_sha256s` joined by `+`).
pub const PLUGIN_SHA256: &str = "plugin.sha256";

/// The inputs of the statistics, still lazy.
#[must_use]
pub struct Loaded {
    /// One row per completed run: `run_id, config_id, sweep, label, seed, success_return,
    /// results, compute, plugin.sha256`, then one column per hyperparameter (see `hyperparameters`), then [`RUN_KEY`].
    pub runs: LazyFrame,
    /// All metrics rows of completed runs (the columns the statistics need, then `extra`) with
    /// their run's [`RUN_KEY`].
    pub metrics: LazyFrame,
    /// The columns asked for by `load_results`' `extra` that at least one run's metrics have, in
    /// the order asked; each is a Float64 column of `metrics`, null in the rows of runs without it.
    pub extra: Vec<String>,
    /// Every column name found in the metrics files read for `extra` (empty when none was asked).
    pub metric_columns: BTreeSet<String>,
    /// The hyperparameter columns of `runs`, sorted: `run.<key>` and `params.<key>` (nested
    /// tables flattened with dots), the seed excluded since runs of one configuration differ in it.
    pub hyperparameters: Vec<String>,
    /// Completed runs found.
    pub completed: usize,
    /// Run directories that were left out (not completed, a duplicate, or a damaged file), with
    /// the reason. Run directories outside their directory's `sweep.json` are not listed here
    /// one by one but counted in `notes`.
    pub left_out: Vec<LeftOut>,
    /// Lines for the user about the directories as a whole: run directories that are not in
    /// their `sweep.json` (left out or, with `all_runs`, included), an unreadable `sweep.json`.
    pub notes: Vec<String>,
    /// The metrics file of each completed run, in the order of `metrics`' runs.
    pub metrics_files: Vec<PathBuf>,
}

pub(crate) fn polars_err(action: impl Into<String>) -> impl FnOnce(PolarsError) -> AnalyzeError {
    let action = action.into();
    move |source| AnalyzeError::Polars { action, source }
}

/// A run directory left out of the analysis.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeftOut {
    /// The run directory's name (its run id).
    pub run_id: String,
    /// Its state in `drover status`'s words where it has one (`not started`, `running`,
    /// `unfinished`, `failed`, `cancelled`), else what kept it out (`with a damaged record`,
    /// `a duplicate`); `left_out_lines` counts the runs by it.
    pub state: &'static str,
    /// Why, naming the file at fault where there is one; the state alone when that says it all.
    pub why: String,
}

/// One completed run as read from disk.
struct RunRecord {
    spec: JobSpec,
    /// The plugin parameters the run trained with: `summary.json`'s `params` (the sweep's
    /// values and the plugin's defaults of the rest), or, from a drover-job before it recorded
    /// them, `spec.json`'s as the sweep set them.
    params: serde_json::Map<String, Value>,
    results: String,
    /// What computed the run ([`provenance`]): `summary.json`'s `compute`, or its `computes`
    /// joined by `+` when the run's attempts used several; `None` from older summaries.
    compute: Option<String>,
    /// The plugin build(s), as `compute`: `plugin.sha256`, or `plugin_sha256s` joined by `+`.
    plugin_sha256: Option<String>,
    metrics_path: PathBuf,
    /// The metrics file's schema, read from its footer once, when it was checked.
    schema: SchemaRef,
}

/// Loads every completed run of the results directories `dirs` (one sweep each, or several).
///
/// Runs that did not complete are left out (their partial metrics would bias the statistics) and
/// listed in `Loaded::left_out`; so is a run found a second time in a later directory (same
/// run id: same configuration and seed), and so is a run with a damaged or unknown-version
/// record (`spec.json`, `exit.json`, `summary.json`) or metrics file, the reason naming the file.
/// When the directories hold more than one sweep, labels become `<sweep>:<label>`.
///
/// A directory that contributes no completed run (missing, without `runs/`, or none of its runs
/// usable) is an error, `AnalyzeError::NoCompletedRuns`, which names every such directory and
/// why; the others are not analyzed without it.
///
/// `extra` names further metrics columns to load (learning curves of `token_entropy`, the
/// entropy-performance law); those no run has are left out of `Loaded::extra`, and a column that
/// is there but not numeric is an error naming the file. Each file's footer is read once, when
/// the run is checked (`metrics_schema`); the metrics themselves are read by one scan per
/// distinct schema (`scan_metrics`), not one per file.
pub fn load_results(dirs: &[PathBuf], extra: &[String]) -> Result<Loaded, AnalyzeError> {
    load_results_with(dirs, extra, false)
}

/// `load_results`, choosing what happens to run directories that are not in their results
/// directory's `sweep.json`.
///
/// `sweep.json` lists the runs of the last `drover run` on a directory; run directories beside
/// them come from an earlier version of the sweep (other base settings, seeds or grid). They are
/// left out unless `all_runs`, as `drover status` leaves them out: a user who edited the sweep
/// and ran it again reads the analysis as the sweep's, as it now stands. Either way a note in
/// `Loaded::notes` says how many there were. A directory without `sweep.json` (results written
/// by hand or by another tool) has no manifest to go by: all its runs count.
pub fn load_results_with(dirs: &[PathBuf], extra: &[String], all_runs: bool) -> Result<Loaded, AnalyzeError> {
    load_results_excluding(dirs, extra, all_runs, &BTreeMap::new())
}

/// [`load_results_with`], leaving out the runs whose metrics file is a key of `unreadable`
/// (found by [`unreadable_metrics`]), with its reason.
pub fn load_results_excluding(
    dirs: &[PathBuf],
    extra: &[String],
    all_runs: bool,
    unreadable: &BTreeMap<PathBuf, String>,
) -> Result<Loaded, AnalyzeError> {
    let mut records = Vec::new();
    let mut left_out = Vec::new();
    let mut seen: HashMap<String, String> = HashMap::new();
    // Every directory is read before any is refused: one error names all the empty ones, so a
    // user who gave three does not fix them one rerun at a time.
    let mut empty = Vec::new();
    let mut notes = Vec::new();
    // A directory named twice (`drover analyze B B`, or `B` and `./B`) is read once: its runs
    // would otherwise each be left out as a duplicate of themselves, one line per run.
    let mut given: Vec<&PathBuf> = Vec::new();
    let mut canonical: BTreeSet<PathBuf> = BTreeSet::new();
    for dir in dirs {
        if canonical.insert(dir.canonicalize().unwrap_or_else(|_| dir.clone())) {
            given.push(dir);
        } else {
            notes.push(format!("note: `{}` was given more than once; its runs are analyzed once", dir.display()));
        }
    }
    for &dir in &given {
        if let Some(why) = not_results(dir) {
            empty.push((dir.clone(), why));
            continue;
        }
        let runs = read_dir_runs(dir, all_runs, unreadable)?;
        if runs.completed.is_empty() {
            empty.push((dir.clone(), runs.why_empty()));
        }
        notes.extend(runs.notes(dir));
        left_out.extend(runs.left_out.into_iter().map(|(run_id, why, kind)| LeftOut { run_id, state: kind.words(), why }));
        for record in runs.completed {
            if let Some(first) = seen.get(&record.spec.run_id) {
                let why = format!("duplicate of the same run in `{first}`");
                left_out.push(LeftOut { run_id: record.spec.run_id.clone(), state: "a duplicate", why });
                continue;
            }
            seen.insert(record.spec.run_id.clone(), record.results.clone());
            records.push(record);
        }
    }
    if !empty.is_empty() {
        // Analyzing the others alone would drop a sweep the user named from a comparison
        // without a word; nothing is written, and the message says what each one lacks.
        return Err(AnalyzeError::NoCompletedRuns { empty, given: given.len() });
    }
    let sweeps: BTreeSet<&str> = records.iter().map(|r| r.spec.sweep.as_str()).collect();
    let prefix_sweep = sweeps.len() > 1;

    let mut flat: Vec<BTreeMap<String, Value>> = Vec::with_capacity(records.len());
    for record in &records {
        let mut row = BTreeMap::new();
        flatten("run", &Value::Object(record.spec.run.clone()), &mut row);
        flatten("params", &Value::Object(record.params.clone()), &mut row);
        row.remove("run.seed");
        flat.push(row);
    }
    let hyperparameters: Vec<String> =
        flat.iter().flat_map(|row| row.keys().cloned()).collect::<BTreeSet<_>>().into_iter().collect();

    let mut columns = vec![
        Column::new("run_id".into(), records.iter().map(|r| r.spec.run_id.as_str()).collect::<Vec<_>>()),
        Column::new("config_id".into(), records.iter().map(|r| r.spec.config_id.as_str()).collect::<Vec<_>>()),
        Column::new("sweep".into(), records.iter().map(|r| r.spec.sweep.as_str()).collect::<Vec<_>>()),
        Column::new(
            "label".into(),
            records
                .iter()
                .map(|r| if prefix_sweep { format!("{}:{}", r.spec.sweep, r.spec.label) } else { r.spec.label.clone() })
                .collect::<Vec<_>>(),
        ),
        Column::new("seed".into(), records.iter().map(|r| r.spec.run.get("seed").and_then(Value::as_i64)).collect::<Vec<_>>()),
        Column::new(
            "success_return".into(),
            records.iter().map(|r| r.spec.run.get("success_return").and_then(Value::as_f64)).collect::<Vec<_>>(),
        ),
        Column::new("results".into(), records.iter().map(|r| r.results.as_str()).collect::<Vec<_>>()),
        Column::new(COMPUTE.into(), records.iter().map(|r| r.compute.as_deref()).collect::<Vec<_>>()),
        Column::new(PLUGIN_SHA256.into(), records.iter().map(|r| r.plugin_sha256.as_deref()).collect::<Vec<_>>()),
    ];
    for name in &hyperparameters {
        let values: Vec<Option<&Value>> = flat.iter().map(|row| row.get(name).filter(|v| !v.is_null())).collect();
        columns.push(typed_column(name, &values));
    }
    columns.push(Column::new(RUN_KEY.into(), run_keys(records.len())?));
    let runs = DataFrame::new(records.len(), columns).map_err(polars_err("building the runs table"))?.lazy();

    let extra: Vec<&String> = extra.iter().filter(|c| !FIXED_COLUMNS.contains(&c.as_str())).collect();
    let mut metric_columns = BTreeSet::new();
    let mut present: BTreeSet<&str> = BTreeSet::new();
    for record in &records {
        if extra.is_empty() {
            break;
        }
        let schema = &record.schema;
        metric_columns.extend(schema.iter_names().map(|n| n.to_string()));
        for &name in &extra {
            let Some(dtype) = schema.get(name) else { continue };
            if !dtype.is_primitive_numeric() {
                return Err(AnalyzeError::BadRecord {
                    path: record.metrics_path.clone(),
                    reason: format!("metrics column `{name}` holds {dtype}, not numbers"),
                });
            }
            present.insert(name.as_str());
        }
    }
    // Only columns some run has become columns at all: CartPole runs analyzed with the default
    // `token_entropy`/`accuracy` request give exactly the frame they gave before.
    let extra: Vec<String> = extra.into_iter().filter(|c| present.contains(c.as_str())).cloned().collect();
    let metrics = scan_metrics(&records, &extra)?;
    let metrics_files = records.iter().map(|r| r.metrics_path.clone()).collect();
    Ok(Loaded { runs, metrics, extra, metric_columns, hyperparameters, completed: records.len(), left_out, notes, metrics_files })
}

/// The metrics files of `files` whose data cannot be read, each with the reason. Asked only
/// after the one scan over all of them failed: a file with a whole frame and footer (all that
/// loading checks, to read no data twice) can still hold a damaged page, and that one file
/// would otherwise stop the analysis of every run, under an error that names none.
pub fn unreadable_metrics(files: &[PathBuf]) -> BTreeMap<PathBuf, String> {
    files
        .iter()
        .filter_map(|path| {
            let path_str = path.to_string_lossy();
            let read = LazyFrame::scan_parquet(PlRefPath::new(path_str.as_ref()), literal_path()).and_then(LazyFrame::collect);
            read.err().map(|e| (path.clone(), format!("cannot read its data: {e}")))
        })
        .collect()
}

/// Scan settings that read the path given and nothing else. Polars' default reads a path as a
/// glob pattern: a results directory named `res [v2]` then matched no file (`[v2]` is a
/// character class) or a sibling `res v`'s, and one with `*` could pull in a sibling's file.
fn literal_path() -> ScanArgsParquet {
    ScanArgsParquet { glob: false, ..ScanArgsParquet::default() }
}

/// The column of the metrics scan that holds each row's file path until it becomes a run key.
const PATH_COLUMN: &str = "__drover_metrics_path";

/// A copy of the run key that the rows of several scans are put in order by (`scan_metrics`).
const RECORD_COLUMN: &str = "__drover_record";

/// The column that ties a metrics row to its run: the run's place among the loaded runs
/// (UInt32), in both `Loaded::runs` and `Loaded::metrics`. Metrics rows carry this number
/// rather than the run id: a text id per row (there are runs × iterations of them) took about
/// 64 bytes each in memory and made every join and grouping over the rows hash text. It is no
/// column of the written tables (`pipeline` drops it from the runs table before writing).
pub const RUN_KEY: &str = "__drover_run";

/// The run keys of `n` runs, `0..n`.
fn run_keys(n: usize) -> Result<Vec<u32>, AnalyzeError> {
    (0..n)
        .map(|i| u32::try_from(i).map_err(|_| polars_err("numbering the runs")(PolarsError::ComputeError(format!("{n} runs, more than 2^32").into()))))
        .collect()
}

/// Runs whose metrics files have one schema, read by one scan (`scan_metrics`).
struct SchemaGroup<'a> {
    /// The files' columns and types, in file order.
    schema: Vec<(&'a str, &'a DataType)>,
    members: Vec<&'a RunRecord>,
}

/// One lazy frame over the metrics files of `records`: the `FIXED_COLUMNS` with their types
/// made uniform, each `extra` column as Float64 (null in the rows of runs without it), and
/// [`RUN_KEY`] (the record's place in `records`); rows in the order of `records`, each file's
/// rows in file order.
///
/// Files with the same schema (all of them, in a plain sweep) are read by one multi-file scan
/// rather than one scan each: a union of 3,000 single-file scans took twice as long to read
/// (release build, 3,000 runs: 1.3 s, against 0.6 s; `docs/analysis.md`, "Scale"). The path the
/// scan adds to each row gives its run key. Files of different schemas (a sequence task beside CartPole, a column
/// stored as Int32 here and Int64 there) go to separate scans, since one scan wants one schema.
fn scan_metrics(records: &[RunRecord], extra: &[String]) -> Result<LazyFrame, AnalyzeError> {
    // Schemas compared as ordered (name, type) lists: files that match exactly, column order
    // included, are what one Parquet scan reads without a cast or a missing-column policy.
    let mut groups: Vec<SchemaGroup> = Vec::new();
    for record in records {
        let schema: Vec<(&str, &DataType)> = record.schema.iter().map(|(n, t)| (n.as_str(), t)).collect();
        match groups.iter_mut().find(|g| g.schema == schema) {
            Some(group) => group.members.push(record),
            None => groups.push(SchemaGroup { schema, members: vec![record] }),
        }
    }
    let mut scans = Vec::with_capacity(groups.len());
    for SchemaGroup { schema, members } in &groups {
        let paths: Vec<String> = members.iter().map(|r| r.metrics_path.to_string_lossy().into_owned()).collect();
        let sources: Vec<PlRefPath> = paths.iter().map(|p| PlRefPath::new(p.as_str())).collect();
        let args = ScanArgsParquet { include_file_paths: Some(PATH_COLUMN.into()), ..literal_path() };
        let what = match paths.as_slice() {
            [one] => format!("scanning `{one}`"),
            [first, ..] => format!("scanning {} metrics files (`{first}`, ...)", paths.len()),
            [] => continue,
        };
        let scan = LazyFrame::scan_parquet_files(sources.into(), args).map_err(polars_err(what))?;
        let mut select = vec![
            col("iteration").cast(DataType::Int64),
            col("global_step").cast(DataType::Int64),
            col("episodic_return_mean").cast(DataType::Float64),
            col("episodes").cast(DataType::Int64),
        ];
        for name in extra {
            let column = if schema.iter().any(|(n, _)| n == name) { col(name.as_str()) } else { lit(NULL) };
            select.push(column.cast(DataType::Float64).alias(name.as_str()));
        }
        select.push(col(PATH_COLUMN));
        scans.push(scan.select(select));
    }
    let metrics = match scans.pop() {
        Some(only) if scans.is_empty() => only,
        last => concat(scans.into_iter().chain(last).collect::<Vec<_>>(), UnionArgs::default()).map_err(polars_err("combining metrics files"))?,
    };
    let keys = DataFrame::new(
        records.len(),
        vec![
            Column::new(PATH_COLUMN.into(), records.iter().map(|r| r.metrics_path.to_string_lossy().into_owned()).collect::<Vec<_>>()),
            Column::new(RUN_KEY.into(), run_keys(records.len())?),
        ],
    )
    .map_err(polars_err("building the table of metrics files"))?;
    // Groups of files come one after the other; sorting by the file's place among the records
    // puts the rows back in the order of `records`. Sums over runs follow the row order, so in
    // this order the tables are those of one scan per file, to the last bit. The sort is by a
    // copy of the run key: sorted by the key itself, the key column would be marked sorted, and
    // Polars then groups by it in slices rather than by row indices, which sums a group's values
    // in another order (the last bits of a law fit change).
    let order = JoinArgs { maintain_order: MaintainOrderJoin::Left, ..JoinArgs::new(JoinType::Inner) };
    let keys = keys.lazy().with_column(col(RUN_KEY).alias(RECORD_COLUMN));
    let metrics = metrics.join(keys, [col(PATH_COLUMN)], [col(PATH_COLUMN)], order);
    let metrics = if groups.len() > 1 { metrics.sort([RECORD_COLUMN], SortMultipleOptions::default().with_maintain_order(true)) } else { metrics };
    Ok(metrics.drop(cols([PATH_COLUMN, RECORD_COLUMN])))
}

/// The metrics columns every analysis loads; `extra` columns are loaded besides them.
pub(crate) const FIXED_COLUMNS: [&str; 4] = ["iteration", "global_step", "episodic_return_mean", "episodes"];

/// What one results directory holds.
struct DirRuns {
    /// Its completed runs with usable records and metrics.
    completed: Vec<RunRecord>,
    /// The run directories left out: name, reason, and the kind of reason (`Skip`).
    left_out: Vec<(String, String, Skip)>,
    /// How many run directories `runs/` holds.
    found: usize,
    /// How many of them `sweep.json` does not list (counted whether or not they were read).
    stale: usize,
    /// Whether those were read like the others (`--all-runs`) rather than skipped.
    all_runs: bool,
    /// Why `sweep.json` could not be read, when it is there but damaged.
    bad_manifest: Option<String>,
}

/// Why a run directory is left out, in the words of `DirRuns::why_empty`'s counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Skip {
    NotStarted,
    Running,
    Unfinished,
    Failed,
    Cancelled,
    NoSpec,
    Damaged,
    BadMetrics,
}

impl Skip {
    fn words(self) -> &'static str {
        match self {
            Skip::NotStarted => "not started",
            Skip::Running => "running",
            Skip::Unfinished => "unfinished",
            Skip::Failed => "failed",
            Skip::Cancelled => "cancelled",
            Skip::NoSpec => "without spec.json",
            Skip::Damaged => "with a damaged record",
            Skip::BadMetrics => "completed without usable metrics",
        }
    }
}

impl DirRuns {
    /// Why no run of the directory can be analyzed: `runs/` is empty, or how many run
    /// directories were left out for each kind of reason (`4 run directories, none completed
    /// with metrics: 3 unfinished, 1 failed`).
    fn why_empty(&self) -> String {
        if self.found == 0 {
            return "its `runs/` folder holds no run directory (nothing launched yet?)".into();
        }
        let mut counts: BTreeMap<Skip, usize> = BTreeMap::new();
        for (_, _, kind) in &self.left_out {
            *counts.entry(*kind).or_default() += 1;
        }
        let mut parts: Vec<String> = counts.iter().map(|(kind, n)| format!("{n} {}", kind.words())).collect();
        // With `--all-runs` they were read, and counted above by what they hold.
        if self.stale > 0 && !self.all_runs {
            parts.push(format!("{} not in its {SWEEP_JSON} (an earlier version of the sweep; `--all-runs` analyzes them)", self.stale));
        }
        let dirs = if self.found == 1 { "run directory" } else { "run directories" };
        format!("{} {dirs}, none completed with metrics: {}", self.found, parts.join(", "))
    }

    /// What the user is told of `dir` as a whole: its run directories outside `sweep.json`, and
    /// a `sweep.json` that could not be read.
    fn notes(&self, dir: &Path) -> Vec<String> {
        let mut notes = Vec::new();
        if let Some(why) = &self.bad_manifest {
            notes.push(format!(
                "warning: `{}` is unreadable ({why}), so every run directory of `{}` is analyzed, those of earlier versions of the sweep included",
                dir.join(SWEEP_JSON).display(),
                dir.display()
            ));
        }
        if self.stale > 0 {
            let (n, are) = match self.stale {
                1 => ("1 run directory".to_string(), "is"),
                n => (format!("{n} run directories"), "are"),
            };
            notes.push(if self.all_runs {
                format!("note: `{}`: {n} not in its {SWEEP_JSON} (from an earlier version of the sweep) {are} analyzed too (`--all-runs`)", dir.display())
            } else {
                format!(
                    "note: `{}`: {n} not in its {SWEEP_JSON}, the runs of the last `drover run` there, {are} left out: {} from an earlier version of the sweep, as `drover status` shows (`--all-runs` analyzes them too)",
                    dir.display(),
                    if self.stale == 1 { "it is" } else { "they are" }
                )
            });
        }
        notes
    }
}

/// Why `dir` is not a results directory at all, if it is not: missing, or without `runs/`.
fn not_results(dir: &Path) -> Option<String> {
    if !dir.exists() {
        // A mistyped path is not "a directory without runs/": say that it is not there at all.
        return Some("no such directory".into());
    }
    if !dir.is_dir() {
        return Some("a file, not a results directory (give the directory `drover run` wrote: `results/<sweep>` or its `--results`)".into());
    }
    if !ResultsDir::new(dir).runs_dir().is_dir() {
        return Some("not a results directory (it has no `runs/` folder)".into());
    }
    None
}

/// The run ids `dir`'s `sweep.json` lists: `Ok(None)` without one, `Err` when it is damaged.
fn manifest_runs(dir: &Path) -> Result<Option<BTreeSet<String>>, String> {
    let manifest = layout::read_record::<SweepManifest>(&dir.join(SWEEP_JSON))?;
    // Ids only name directories to keep here, never paths to open, so they need not be parsed.
    Ok(manifest.map(|m| m.runs.into_iter().collect()))
}

fn read_dir_runs(dir: &Path, all_runs: bool, bad_metrics: &BTreeMap<PathBuf, String>) -> Result<DirRuns, AnalyzeError> {
    let (manifest, bad_manifest) = match manifest_runs(dir) {
        Ok(runs) => (runs, None),
        Err(why) => (None, Some(why)),
    };
    let runs_dir = ResultsDir::new(dir).runs_dir();
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

    let mut completed = Vec::new();
    let mut left_out = Vec::new();
    let mut stale = 0;
    for run_dir in &entries {
        let name = run_dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        if manifest.as_ref().is_some_and(|runs| !runs.contains(&name)) {
            stale += 1;
            if !all_runs {
                continue;
            }
        }
        // A damaged record costs its own run, never the analysis of the others: it is left out
        // with the file and the reason, as `drover run` redoes it (`backend::inspect_run`).
        let unreadable = |path: &Path, reason: String| format!("unreadable `{}`: {reason}", path.display());
        let spec_path = run_dir.join(SPEC_JSON);
        let spec = match layout::read_record::<JobSpec>(&spec_path) {
            Ok(Some(spec)) => spec,
            Ok(None) => {
                left_out.push((name, "no spec.json".into(), Skip::NoSpec));
                continue;
            }
            Err(reason) => {
                left_out.push((name, unreadable(&spec_path, reason), Skip::Damaged));
                continue;
            }
        };
        let exit_path = run_dir.join(EXIT_JSON);
        match layout::read_record::<ExitRecord>(&exit_path) {
            Ok(Some(exit)) if exit.status == ExitStatus::Completed => {}
            Ok(Some(exit)) => {
                // The job's own reason (a plugin error, the signal) saves opening exit.json.
                let (status, kind) = match exit.status {
                    ExitStatus::Failed => ("failed", Skip::Failed),
                    ExitStatus::Cancelled => ("cancelled", Skip::Cancelled),
                    ExitStatus::Completed => ("completed", Skip::Damaged),
                };
                let why = match exit.reason {
                    Some(reason) => format!("{status}: {reason}"),
                    None => status.to_string(),
                };
                left_out.push((name, why, kind));
                continue;
            }
            Ok(None) => {
                // Told apart as `drover status` tells them (`classify_local`): a job holds the
                // lock, or it ran and stopped, or nothing ran there yet.
                // A holder on another host (a Slurm node) cannot be checked from here: its run is
                // not claimed to be running.
                let kind = match crate::backend::job_lock::running_here(run_dir) {
                    Ok(true) => Skip::Running,
                    // Left out either way; counted as unfinished, saying why it may be running.
                    Err(why) => {
                        left_out.push((name, format!("{}: {why}", Skip::Unfinished.words()), Skip::Unfinished));
                        continue;
                    }
                    Ok(false) if crate::backend::never_started(run_dir) => Skip::NotStarted,
                    Ok(false) => Skip::Unfinished,
                };
                left_out.push((name, kind.words().into(), kind));
                continue;
            }
            Err(reason) => {
                left_out.push((name, unreadable(&exit_path, reason), Skip::Damaged));
                continue;
            }
        }
        // A damaged summary.json means the completion marker vouches for files that are not
        // whole: the run is not trusted (absent is fine, so results written by hand or by older
        // tools still load). Of it the analysis reads the parameters the run trained with.
        let summary_path = run_dir.join(SUMMARY_JSON);
        let (params, compute, plugin_sha256) = match layout::read_record::<Value>(&summary_path) {
            Ok(summary) => {
                let (compute, plugin_sha256) = summary.as_ref().map_or((None, None), provenance);
                let params = match summary.and_then(|mut s| s.get_mut("params").map(Value::take)) {
                    Some(Value::Object(params)) => params,
                    _ => spec.params.clone(),
                };
                (params, compute, plugin_sha256)
            }
            Err(reason) => {
                left_out.push((name, unreadable(&summary_path, reason), Skip::Damaged));
                continue;
            }
        };
        let metrics_path = run_dir.join(METRICS_PARQUET);
        let schema = match bad_metrics.get(&metrics_path).map_or_else(|| metrics_schema(&metrics_path), |why| Err(why.clone())) {
            Ok(schema) => schema,
            Err(problem) => {
                left_out.push((name, format!("bad `{}`: {problem}", metrics_path.display()), Skip::BadMetrics));
                continue;
            }
        };
        completed.push(RunRecord { spec, params, results: dir.display().to_string(), compute, plugin_sha256, metrics_path, schema });
    }
    Ok(DirRuns { completed, left_out, found: entries.len(), stale, all_runs, bad_manifest })
}

/// A summary's (`compute`, plugin build) as the runs table shows them: the list a run of
/// several levels or builds has (`computes`, `plugin_sha256s`) joined by `+`, so that such a
/// run is a value of its own, else the single `compute` / `plugin.sha256`; `None` where the
/// summary predates them.
fn provenance(summary: &Value) -> (Option<String>, Option<String>) {
    let one = |list: &str, single: Option<&Value>| {
        let joined = summary.get(list).and_then(Value::as_array).map(|l| l.iter().filter_map(Value::as_str).collect::<Vec<_>>().join("+"));
        joined.filter(|j| !j.is_empty()).or_else(|| single.and_then(Value::as_str).map(str::to_string))
    };
    (one("computes", summary.get("compute")), one("plugin_sha256s", summary.pointer("/plugin/sha256")))
}

/// The schema of a completed run's metrics file, or why it cannot be analyzed: missing, not a
/// whole Parquet file (magic numbers and footer length, then the footer itself as Polars reads
/// it), or without a column every analysis needs. Reads the footer only, not the data, and only
/// once per analysis: the schema is kept for the `extra` columns (`load_results`).
fn metrics_schema(path: &Path) -> Result<SchemaRef, String> {
    if !path.is_file() {
        return Err("the run completed but its metrics file is missing".into());
    }
    if let Some(problem) = crate::backend::parquet_frame_problem(path) {
        return Err(problem);
    }
    let path_str = path.to_string_lossy();
    let schema = LazyFrame::scan_parquet(PlRefPath::new(path_str.as_ref()), literal_path())
        .and_then(|mut scan| scan.collect_schema())
        .map_err(|e| format!("cannot read its Parquet footer: {e}"))?;
    match FIXED_COLUMNS.iter().find(|c| schema.get(c).is_none()) {
        Some(c) => Err(format!("no `{c}` column (columns: {})", schema.iter_names().map(|n| n.as_str()).collect::<Vec<_>>().join(", "))),
        None => Ok(schema),
    }
}

/// Flattens nested JSON objects into `prefix.key.subkey` entries; other values stay whole.
fn flatten(prefix: &str, value: &Value, out: &mut BTreeMap<String, Value>) {
    match value {
        Value::Object(map) => {
            for (key, v) in map {
                flatten(&format!("{prefix}.{key}"), v, out);
            }
        }
        other => {
            out.insert(prefix.to_string(), other.clone());
        }
    }
}

/// A column of the narrowest type that holds every value: bool, i64, f64 or text (arrays and
/// mixed values become their JSON text, so `hidden = [64, 64]` groups as `"[64,64]"`).
fn typed_column(name: &str, values: &[Option<&Value>]) -> Column {
    let present = || values.iter().flatten();
    let name: PlSmallStr = name.into();
    if present().all(|v| v.is_boolean()) && present().next().is_some() {
        Column::new(name, values.iter().map(|v| v.and_then(Value::as_bool)).collect::<Vec<_>>())
    } else if present().all(|v| v.is_i64()) && present().next().is_some() {
        Column::new(name, values.iter().map(|v| v.and_then(Value::as_i64)).collect::<Vec<_>>())
    } else if present().all(|v| v.is_number()) && present().next().is_some() {
        Column::new(name, values.iter().map(|v| v.and_then(Value::as_f64)).collect::<Vec<_>>())
    } else {
        let text = |v: &Value| match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        Column::new(name, values.iter().map(|v| v.map(text)).collect::<Vec<_>>())
    }
}
