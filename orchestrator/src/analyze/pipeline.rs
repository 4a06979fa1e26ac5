//! The whole of `drover analyze` as one library call: load, slice, group, compute, write.
//!
//! This is the edge where the lazy plans are executed: the metrics files are read once, the
//! per-run table and the learning-curve bins are collected once each, the resampling runs on
//! them, and the summary is collected once.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use polars::prelude::*;

use super::bootstrap::{self, Bootstrap};
use super::load::{self, polars_err};
use super::plot::{self, Chart, LineChart};
use super::query;
use super::report;
use super::stats::{self, Grouping};
use crate::error::AnalyzeError;

/// What `drover analyze` was asked to do.
#[derive(Clone, Debug)]
pub struct Options {
    /// Results directories (one sweep each).
    pub dirs: Vec<PathBuf>,
    /// Where `tables/` and `plots/` go.
    pub out: PathBuf,
    /// `--where` expressions, all of which a run must satisfy.
    pub filters: Vec<String>,
    /// `--group-by` keys (comma-separated), if any.
    pub group_by: Option<String>,
    /// `--compare` key, if any: groups by it, ranks by IQM, adds the probability of improvement.
    pub compare: Option<String>,
    /// Target of the optimality gap (default: each run's `success_return`).
    pub target: Option<f64>,
    /// Resampling settings.
    pub bootstrap: Bootstrap,
    /// Learning-curve bins over the steps axis.
    pub bins: u32,
    /// Thresholds of the performance profile.
    pub profile_points: usize,
    /// Draw plots (PNG and SVG).
    pub plots: bool,
    /// Metrics columns to draw learning curves of besides the return (`--curves`); `None`: those
    /// of `DEFAULT_CURVES` that the runs have.
    pub curves: Option<Vec<String>>,
    /// Also analyze run directories that are not in their results directory's `sweep.json`
    /// (`--all-runs`; see `load::load_results_with`).
    pub all_runs: bool,
}

/// Metric curves drawn by default when the runs' metrics have these columns (sequence tasks).
pub const DEFAULT_CURVES: [&str; 2] = [stats::LAW_ENTROPY, stats::LAW_REWARD];

/// What a finished analysis reports.
#[derive(Debug)]
pub struct Outcome {
    /// The summary, as computed and written.
    pub summary: DataFrame,
    /// The summary as a text table.
    pub table: String,
    /// Completed runs loaded (before `--where`).
    pub completed: usize,
    /// Runs in the analysis (after `--where`).
    pub analyzed: usize,
    /// Runs of the analysis without a final return (they count in no score).
    pub unscored: usize,
    /// Completed runs that `--where` sliced away (0 without `--where`).
    pub not_matching: usize,
    /// Run directories left out, with the reason (`left_out_lines` says them in a few lines).
    pub left_out: Vec<load::LeftOut>,
    /// Lines about the analysis as a whole (stale run directories, configurations sharing a
    /// label), also at the top of `table` and of the Markdown summary.
    pub notes: Vec<String>,
    /// Files written.
    pub written: Vec<PathBuf>,
    /// Files an earlier analysis into the same `--out` wrote and this one did not, removed
    /// (see `replace_record`).
    pub removed: Vec<PathBuf>,
    /// Such files kept, each with why: edited since, or not removable.
    pub kept: Vec<String>,
    /// The best group by IQM when comparing: at most one, or one per environment when the
    /// analysis was split by environment (`envs`).
    pub best: Vec<Best>,
    /// The environments analyzed one by one, sorted (empty: one analysis over all runs). See
    /// `analyze`.
    pub envs: Vec<String>,
    /// The metrics columns learning curves were drawn of besides the return.
    pub curves: Vec<String>,
    /// The entropy-performance law per group (mean a, b, R², ceiling over runs with intervals),
    /// when the runs have `token_entropy` and `accuracy`.
    pub law: Option<DataFrame>,
    /// `law` as a text table.
    pub law_table: Option<String>,
}

impl Outcome {
    /// The count line `drover analyze` prints under the tables: `4 runs analyzed (16 completed,
    /// 12 not matching --where, 3 left out: 2 not started, 1 failed); final return = ...`.
    pub fn count_line(&self) -> String {
        let unscored = match self.unscored {
            0 => String::new(),
            k => format!(", {k} of them without a final return"),
        };
        let sliced = match self.not_matching {
            0 => String::new(),
            n => format!(", {n} not matching --where"),
        };
        let mut by_state: Vec<(&str, usize)> = Vec::new();
        for run in &self.left_out {
            match by_state.iter_mut().find(|(s, _)| *s == run.state) {
                Some((_, n)) => *n += 1,
                None => by_state.push((run.state, 1)),
            }
        }
        let states: Vec<String> = by_state.iter().map(|(s, n)| format!("{n} {s}")).collect();
        let left_out = if states.is_empty() { String::new() } else { format!(": {}", states.join(", ")) };
        format!(
            "{} analyzed{unscored} ({} completed{sliced}, {} left out{left_out}); final return = mean of the last {} iterations with episodes",
            crate::words::count(self.analyzed, "run"),
            self.completed,
            self.left_out.len(),
            stats::FINAL_WINDOW
        )
    }
}

/// Per-run reasons `left_out_lines` shows for each state before "and N more".
const LEFT_OUT_SHOWN: usize = 3;

/// The runs left out of an analysis in a few lines, one per state in the order first met
/// (`3 runs failed:`), each followed by at most [`LEFT_OUT_SHOWN`] indented `run <id>: <why>`
/// lines where the reason says more than the state, else by a few run ids on the line itself.
/// A sweep of 1,000 runs half done is then two lines, not 500; `drover status` lists every run.
pub fn left_out_lines(left_out: &[load::LeftOut], results: &str) -> Vec<String> {
    let mut states: Vec<&str> = Vec::new();
    for run in left_out {
        if !states.contains(&run.state) {
            states.push(run.state);
        }
    }
    let mut lines = Vec::new();
    for state in states {
        let runs: Vec<&load::LeftOut> = left_out.iter().filter(|r| r.state == state).collect();
        let more = runs.len().saturating_sub(LEFT_OUT_SHOWN);
        let head = format!("left out of the analysis: {} {state}", crate::words::count(runs.len(), "run"));
        if runs.iter().all(|r| r.why == state) {
            let ids: Vec<&str> = runs.iter().take(LEFT_OUT_SHOWN).map(|r| r.run_id.as_str()).collect();
            let more = if more > 0 { format!(" and {more} more; `drover status {results}` lists them") } else { String::new() };
            lines.push(format!("{head} ({}{more})", ids.join(", ")));
            continue;
        }
        lines.push(format!("{head}:"));
        lines.extend(runs.iter().take(LEFT_OUT_SHOWN).map(|r| format!("  run {}: {}", r.run_id, r.why)));
        if more > 0 {
            lines.push(format!("  and {more} more (`drover status {results}` lists every run with its state)"));
        }
    }
    lines
}

/// The best group of a comparison, in its environment when the analysis was split by environment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Best {
    /// The environment, when the comparison was made within each environment.
    pub env: Option<String>,
    /// The group's name.
    pub group: String,
}

impl std::fmt::Display for Best {
    /// The line `drover analyze` prints: `best by IQM: GROUP`, `best by IQM in ENV: GROUP`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.env {
            Some(env) => write!(f, "best by IQM in {env}: {}", self.group),
            None => write!(f, "best by IQM: {}", self.group),
        }
    }
}

/// The lazy plans of an analysis before anything is executed.
#[must_use]
struct Plans {
    runs: LazyFrame,
    metrics: LazyFrame,
    hyperparameters: Vec<String>,
    grouping: Grouping,
    completed: usize,
    left_out: Vec<load::LeftOut>,
    /// Group names of the default grouping: `config_id`, `config_name` (see `config_names`).
    names: DataFrame,
    /// Lines about the analysis as a whole (`Outcome::notes`).
    notes: Vec<String>,
    /// The `--where` keys that some completed runs lack, with how many lack each.
    missing: Vec<(String, i64)>,
    /// For each `--where` expression that alone matches no run, the values its key has
    /// (`values_hint`), for the error of an empty slice.
    unmatched: Vec<String>,
    /// Metrics columns to draw curves of, all present in `metrics`.
    curves: Vec<String>,
    /// Whether `metrics` has the law's two columns.
    law: bool,
    /// The metrics file of each completed run.
    metrics_files: Vec<PathBuf>,
}

fn plans(opts: &Options) -> Result<Plans, AnalyzeError> {
    plans_excluding(opts, &BTreeMap::new())
}

/// [`plans`] without the runs whose metrics file is a key of `unreadable`.
fn plans_excluding(opts: &Options, unreadable: &BTreeMap<PathBuf, String>) -> Result<Plans, AnalyzeError> {
    let mut asked: Vec<String> = Vec::new();
    let names: Vec<String> = match &opts.curves {
        Some(names) => names.iter().map(|n| n.trim().to_string()).filter(|n| !n.is_empty()).collect(),
        None => DEFAULT_CURVES.map(String::from).to_vec(),
    };
    for name in names {
        if !asked.contains(&name) {
            asked.push(name);
        }
    }
    let mut extra = asked.clone();
    extra.extend([stats::LAW_ENTROPY, stats::LAW_REWARD].map(String::from).into_iter().filter(|c| !asked.contains(c)));
    let loaded = load::load_results_excluding(&opts.dirs, &extra, opts.all_runs, unreadable)?;
    let has = |c: &str| loaded.extra.iter().any(|e| e == c) || load::FIXED_COLUMNS.contains(&c);
    if opts.curves.is_some() {
        if let Some(missing) = asked.iter().find(|c| !has(c)) {
            let known: Vec<&str> = loaded.metric_columns.iter().map(String::as_str).collect();
            let meant = crate::config::closest(missing, known.iter().copied()).map_or(String::new(), |m| format!("; did you mean `{m}`?"));
            return Err(AnalyzeError::Flag {
                flag: "--curves",
                value: asked.join(","),
                reason: format!("no run's metrics have a column `{missing}`; columns: {}{meant}", known.join(", ")),
            });
        }
    }
    let curves: Vec<String> = asked.into_iter().filter(|c| has(c)).collect();
    let law = has(stats::LAW_ENTROPY) && has(stats::LAW_REWARD);
    let schema = loaded.runs.clone().collect_schema().map_err(polars_err("reading the runs table's schema"))?;
    let mut notes = loaded.notes.clone();
    // Named before `--where`, over all the runs loaded: a group keeps its name (and so its
    // random streams and intervals) whatever a slice leaves of the others.
    let all = loaded.runs.clone().collect().map_err(polars_err("reading the runs table"))?;
    let (names, naming_notes) = config_names(&all, &loaded.hyperparameters)?;
    notes.extend(naming_notes);
    let labels: Vec<String> = {
        let c = all.column("label").and_then(|c| c.str().cloned()).map_err(polars_err("reading column `label`"))?;
        (0..c.len()).filter_map(|i| c.get(i)).map(str::to_string).collect::<BTreeSet<_>>().into_iter().collect()
    };
    let mut runs = loaded.runs.clone();
    let (mut missing, mut unmatched) = (Vec::new(), Vec::new());
    for filter in &opts.filters {
        runs = runs.filter(query::parse_where_with_labels(filter, &schema, &labels)?);
        // Runs without the key never match, not even `!=`: counted now so that an empty slice
        // can say so (`clip_cov_ratio != 0.02` over GRPO and Clip-Cov runs matches none).
        let key = query::where_key(filter, &schema)?;
        let nulls = loaded
            .runs
            .clone()
            .select([col(key.as_str()).null_count().cast(DataType::Int64)])
            .collect()
            .map_err(polars_err(format!("counting the runs without `{key}`")))?;
        let nulls = nulls.column(key.as_str()).ok().and_then(|c| c.i64().ok()?.get(0)).unwrap_or(0);
        if nulls > 0 && !missing.iter().any(|(k, _)| *k == key) {
            missing.push((key.clone(), nulls));
        }
        let alone = all
            .clone()
            .lazy()
            .filter(query::parse_where_with_labels(filter, &schema, &labels)?)
            .collect()
            .map_err(polars_err(format!("applying `--where {filter}`")))?;
        if alone.height() == 0 {
            unmatched.push(values_hint(filter, &key, &all)?);
        }
    }
    // A slice that keeps some runs drops those without a key silently otherwise: `x != 8`
    // reads as "all but 8", and the runs of another plugin without `x` go too.
    if !missing.is_empty() && !opts.filters.is_empty() {
        let parts: Vec<String> = missing.iter().map(|(k, n)| format!("`{k}` is missing in {n} of {}", loaded.completed)).collect();
        notes.push(format!("note: runs without a `--where` key never match, not even `!=`, and are left out: {}", parts.join(", ")));
    }
    let grouping = match (&opts.compare, &opts.group_by) {
        (Some(key), _) => Grouping::Keys(vec![query::resolve_key(key, key, &schema).map_err(query::for_flag("--compare"))?]),
        (None, Some(keys)) => Grouping::Keys(query::parse_keys(keys, &schema).map_err(query::for_flag("--group-by"))?),
        (None, None) => Grouping::Config,
    };
    Ok(Plans {
        runs,
        metrics: loaded.metrics,
        hyperparameters: loaded.hyperparameters,
        grouping,
        completed: loaded.completed,
        left_out: loaded.left_out,
        names,
        notes,
        missing,
        unmatched,
        curves,
        law,
        metrics_files: loaded.metrics_files,
    })
}

impl Plans {
    /// The per-run table (with `group` and `stratum`) over `metrics`.
    fn per_run(&self, metrics: LazyFrame, opts: &Options) -> LazyFrame {
        let annotated = stats::annotate(stats::per_run(metrics, self.runs.clone(), opts.target), &self.grouping, &self.hyperparameters);
        if self.grouping != Grouping::Config {
            return annotated;
        }
        let keep_order = JoinArgs { maintain_order: MaintainOrderJoin::Left, ..JoinArgs::new(JoinType::Left) };
        annotated
            .join(self.names.clone().lazy(), [col("config_id")], [col("config_id")], keep_order)
            .with_column(col(CONFIG_NAME).fill_null(col("group")).alias("group"))
            .drop(cols([CONFIG_NAME]))
    }
}

/// The column of `config_names`' frame that holds a configuration's group name.
const CONFIG_NAME: &str = "config_name";

/// The group name of each configuration (`config_id`) in `runs`, and a note when some had to be
/// told apart.
///
/// A configuration is named by its label, but a label names only the sweep's axes: runs of two
/// versions of a sweep that differ in a base setting (`--all-runs`, or two results directories
/// of one sweep) share it. Such configurations are named `LABEL [KEY=VALUE, ...]` by the
/// hyperparameters whose values differ among them (`base [run.total_steps=10240]`), or, when
/// more than `MAX_NAMED_KEYS` differ or none does, `LABEL [config <first 8 digits of the id>]`.
/// Columns of the frame: `config_id`, `config_name`.
fn config_names(runs: &DataFrame, hyperparameters: &[String]) -> Result<(DataFrame, Vec<String>), AnalyzeError> {
    let text = |name: &str| -> Result<Vec<String>, AnalyzeError> {
        let c = runs.column(name).map_err(polars_err(format!("reading column `{name}`")))?;
        Ok((0..c.len()).map(|i| c.get(i).map(|v| value_text(&v)).unwrap_or_default()).collect())
    };
    let (ids, labels) = (text("config_id")?, text("label")?);
    // One row per configuration: its first run.
    let mut first: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, id) in ids.iter().enumerate() {
        first.entry(id.as_str()).or_insert(i);
    }
    // The other way round: one configuration under several labels (two sweeps with different
    // axes that share a configuration, analyzed together) is one group, named by its first
    // run's label; the note says so, or the other sweep's group would vanish without a word.
    let mut labels_of: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for (id, label) in ids.iter().zip(&labels) {
        labels_of.entry(id.as_str()).or_default().insert(label.as_str());
    }
    let merged: Vec<String> = labels_of
        .iter()
        .filter(|(_, l)| l.len() > 1)
        .map(|(id, l)| {
            let named = labels[first[id]].as_str();
            let others: Vec<String> = l.iter().filter(|x| **x != named).map(|x| format!("`{x}`")).collect();
            format!("`{named}` (also labelled {})", others.join(", "))
        })
        .collect();
    let mut by_label: BTreeMap<&str, Vec<(&str, usize)>> = BTreeMap::new();
    for (&id, &row) in &first {
        by_label.entry(labels[row].as_str()).or_default().push((id, row));
    }
    let columns: Vec<(&String, Vec<String>)> = hyperparameters.iter().map(|h| Ok((h, text(h)?))).collect::<Result<_, AnalyzeError>>()?;
    let (mut names, mut shared, mut differ_in) = (BTreeMap::new(), Vec::new(), BTreeSet::new());
    for (label, configs) in &by_label {
        if let [(id, _)] = configs[..] {
            names.insert(id.to_string(), label.to_string());
            continue;
        }
        let differing: Vec<&(&String, Vec<String>)> =
            columns.iter().filter(|(_, values)| configs.iter().any(|&(_, row)| values[row] != values[configs[0].1])).collect();
        let named = |&(id, row): &(&str, usize)| match differing.len() {
            1..=MAX_NAMED_KEYS => {
                let parts: Vec<String> = differing.iter().map(|(key, values)| format!("{key}={}", values[row])).collect();
                format!("{label} [{}]", parts.join(", "))
            }
            _ => format!("{label} [config {}]", id.get(..8).unwrap_or(id)),
        };
        let mut mine: Vec<(String, String)> = configs.iter().map(|c| (c.0.to_string(), named(c))).collect();
        // Configurations that differ only where the runs table does not look (so equal names)
        // are told apart by their ids.
        let distinct: BTreeSet<&String> = mine.iter().map(|(_, n)| n).collect();
        if distinct.len() < mine.len() {
            for (id, name) in &mut mine {
                *name = format!("{label} [config {}]", id.get(..8).unwrap_or(id));
            }
        }
        differ_in.extend(differing.iter().map(|(k, _)| k.to_string()));
        shared.push((label.to_string(), configs.len(), mine[0].1.clone()));
        names.extend(mine);
    }
    let note = (!shared.is_empty()).then(|| {
        let which = match &shared[..] {
            [(label, n, _)] => format!("the label `{label}` is shared by {n} configurations"),
            many => {
                let mut listed: Vec<String> = many.iter().take(NOTE_GROUPS).map(|(l, _, _)| format!("`{l}`")).collect();
                if many.len() > NOTE_GROUPS {
                    listed.push(format!("and {} more", many.len() - NOTE_GROUPS));
                }
                format!("{} labels are each shared by several configurations ({})", many.len(), listed.join(", "))
            }
        };
        let keys: Vec<String> = differ_in.iter().map(|k| format!("`{k}`")).collect();
        let within = if keys.is_empty() { String::new() } else { format!(", in {}", keys.join(", ")) };
        format!(
            "note: {which} that differ outside the sweep's axes{within}; each configuration is its own group, named by the settings that tell it apart (e.g. `{}`), and the tables' `config_id` column tells them apart too",
            shared[0].2
        )
    });
    let merged_note = (!merged.is_empty()).then(|| {
        let mut listed: Vec<String> = merged.iter().take(NOTE_GROUPS).cloned().collect();
        if merged.len() > NOTE_GROUPS {
            listed.push(format!("and {} more", merged.len() - NOTE_GROUPS));
        }
        format!(
            "note: {} the runs of several labels, the same settings in sweeps with different axes: each is one group, named by its first run's label: {}",
            if merged.len() == 1 { "one configuration has".to_string() } else { format!("{} configurations have", merged.len()) },
            listed.join("; ")
        )
    });
    let (ids, names): (Vec<String>, Vec<String>) = names.into_iter().unzip();
    let frame = DataFrame::new_infer_height(vec![Column::new("config_id".into(), ids), Column::new(CONFIG_NAME.into(), names)])
        .map_err(polars_err("naming the configurations"))?;
    Ok((frame, note.into_iter().chain(merged_note).collect()))
}

/// Most differing settings a configuration's group name lists before it falls back to the id.
const MAX_NAMED_KEYS: usize = 3;

/// A runs-table cell as a label writes it: text bare, numbers as JSON writes them, null as `null`.
fn value_text(value: &AnyValue<'_>) -> String {
    match value {
        AnyValue::Null => "null".into(),
        AnyValue::String(s) => s.to_string(),
        AnyValue::StringOwned(s) => s.to_string(),
        AnyValue::Float64(v) => serde_json::Number::from_f64(*v).map_or_else(|| v.to_string(), |n| n.to_string()),
        other => other.to_string(),
    }
}

/// The optimized plans of the per-run table and of the learning-curve bins, as text.
pub fn explain(opts: &Options) -> Result<String, AnalyzeError> {
    let p = plans(opts)?;
    let per_run = p.per_run(p.metrics.clone(), opts);
    let curve = stats::curve_points(p.metrics.clone(), per_run.clone(), opts.bins);
    let per_run = per_run.explain(true).map_err(polars_err("explaining the per-run plan"))?;
    let curve = curve.explain(true).map_err(polars_err("explaining the learning-curve plan"))?;
    Ok(format!("-- per-run table --\n{per_run}\n-- learning-curve bins --\n{curve}\n"))
}

/// The lock file of an analysis's output, under `tables/`: two `drover analyze` writing into one
/// place renamed each other's temporary files away and replaced each other's tables.
const ANALYZE_LOCK: &str = ".analyze.lock";

/// Holds `out`'s analysis lock while it lives: waits (saying so) while another `drover analyze`
/// writes there; goes on unlocked where the filesystem has no locks, as `drover run` does.
pub(crate) fn lock_output(out: &std::path::Path) -> Result<std::fs::File, AnalyzeError> {
    use std::os::fd::AsRawFd;
    let tables = out.join("tables");
    std::fs::create_dir_all(&tables).map_err(|source| AnalyzeError::Io { action: "create directory", path: tables.clone(), source })?;
    let path = tables.join(ANALYZE_LOCK);
    let io = |source| AnalyzeError::Io { action: "lock", path: path.clone(), source };
    let file = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(&path).map_err(io)?;
    let lock = |how| {
        // SAFETY: flock on a descriptor this function owns; no memory is passed.
        if unsafe { libc::flock(file.as_raw_fd(), how) } == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    };
    match lock(libc::LOCK_EX | libc::LOCK_NB) {
        Ok(()) => {}
        Err(e) if crate::lock::locks_unsupported(&e) => {}
        Err(e) if e.raw_os_error() == Some(libc::EWOULDBLOCK) => {
            crate::say!("drover: waiting for another `drover analyze` writing into `{}`", out.display());
            lock(libc::LOCK_EX).map_err(io)?;
        }
        Err(e) => return Err(io(e)),
    }
    Ok(file)
}

/// Runs the analysis and writes `tables/` (CSV, Parquet, Markdown) and `plots/` under `opts.out`.
///
/// When the runs span several environments and the grouping does not separate them
/// (`--compare algo` over CartPole and a sequence task), each environment is analyzed on its own
/// (`env_sections`): returns of different environments are on different scales, so pooling
/// them would rank groups by which environments their runs come from.
pub fn analyze(opts: &Options) -> Result<Outcome, AnalyzeError> {
    let start = std::time::Instant::now();
    let phase = |what: &str| tracing::debug!(elapsed_s = start.elapsed().as_secs_f64(), "analyze: {what}");
    let mut p = plans(opts)?;
    phase("planned");
    // Both the per-run table and the curve bins read the metrics: read the files once. Read by
    // the streaming engine, each batch of rows has its file path turned into its run key as it
    // is read: collected whole first, the paths (a text a row) and the join that numbers them
    // held several times the memory of the metrics frame itself (`docs/analysis.md`, "Scale").
    let read = |p: &Plans| p.metrics.clone().collect_with_engine(Engine::Streaming).map(|r| r.unwrap_single());
    let metrics = match read(&p) {
        Ok(metrics) => metrics,
        Err(e) => {
            // A damaged data page of one file: leave that run out, as a damaged frame is.
            let unreadable = load::unreadable_metrics(&p.metrics_files);
            if unreadable.is_empty() {
                return Err(polars_err("reading the metrics files")(e));
            }
            p = plans_excluding(opts, &unreadable)?;
            read(&p).map_err(polars_err("reading the metrics files"))?
        }
    }
    .lazy();
    phase("metrics read");
    let runs = p.per_run(metrics.clone(), opts).collect().map_err(polars_err("computing the per-run table"))?;
    phase("per-run table collected");
    if runs.height() == 0 {
        return Err(AnalyzeError::Query {
            expr: opts.filters.join(" and "),
            reason: format!(
                "no completed run matches (of {}){}{}",
                p.completed,
                missing_note(&p.missing, p.completed),
                p.unmatched.iter().map(|h| format!("; {h}")).collect::<String>()
            ),
        });
    }
    let envs = env_sections(&runs, &p.grouping)?;
    let mut sections = Vec::new();
    if envs.is_empty() {
        sections.push(section(&p, opts, &metrics, runs.clone(), None)?);
    } else {
        for env in &envs {
            let part = runs
                .column(ENV)
                .and_then(|c| c.as_materialized_series().equal(env.as_str()))
                .and_then(|mask| runs.filter(&mask))
                .map_err(polars_err(format!("selecting the runs of `{env}`")))?;
            sections.push(section(&p, opts, &metrics, part, Some(env.clone()))?);
        }
    }
    phase("sections computed");

    let tag = p.grouping.file_tag();
    let stem = match &opts.compare {
        Some(_) => format!("compare{}", tag.trim_start_matches("-by")),
        None => format!("summary{tag}"),
    };
    let head: Vec<String> = p.notes.iter().cloned().chain(split_note(opts, &envs)).collect();
    let mut table: String = head.iter().map(|n| format!("{n}\n")).collect();
    let mut markdown = settings_markdown(opts, &p, runs.height());
    markdown.extend(head.iter().map(|n| format!("{n}\n\n")));
    for s in &sections {
        s.push_heading(&mut table, &mut markdown);
        table.push_str(&report::render_table(&s.summary)?);
        markdown.push_str(&report::render_markdown(&s.summary)?);
        for note in &s.notes {
            table.push_str(&format!("{note}\n"));
            markdown.push_str(&format!("\n{note}\n"));
        }
    }
    let stacked = |pick: &dyn Fn(&Section) -> Option<DataFrame>| -> Result<Option<DataFrame>, AnalyzeError> {
        stack(sections.iter().filter_map(|s| pick(s).map(|df| (s.env.as_deref(), df))).collect())
    };
    let tables = opts.out.join("tables");
    // Held from the first file written to the end of the run, the record of the files included.
    let _writing = lock_output(&opts.out)?;
    let mut summary = stacked(&|s| Some(s.summary.clone()))?.unwrap_or_default();
    let mut written = report::write_frame(&tables, &stem, &mut summary, Some(&markdown))?;
    // The run key ties metrics rows to runs within this analysis only: no column of the table.
    let mut runs_table = runs.drop(load::RUN_KEY).map_err(polars_err("dropping the run key"))?;
    written.extend(report::write_frame(&tables, "runs", &mut runs_table, None)?);
    let mut curves = stacked(&|s| Some(s.curves.clone()))?.unwrap_or_default();
    written.extend(report::write_frame(&tables, &format!("curves{tag}"), &mut curves, None)?);
    let mut profiles = stacked(&|s| Some(s.profiles.clone()))?.unwrap_or_default();
    written.extend(report::write_frame(&tables, &format!("profiles{tag}"), &mut profiles, None)?);
    for (k, name) in p.curves.iter().enumerate() {
        let mut frame = stacked(&|s| Some(s.metric_curves[k].1.clone()))?.unwrap_or_default();
        written.extend(report::write_frame(&tables, &format!("curves-{}{tag}", file_safe(name)), &mut frame, None)?);
    }
    phase("metric curves");
    let mut law_summary = None;
    let mut law_table = None;
    if let Some(mut per_run) = stacked(&|s| s.law.as_ref().map(|l| l.per_run.clone()))? {
        let mut summary = stacked(&|s| s.law.as_ref().map(|l| l.summary.clone()))?.unwrap_or_default();
        let (mut text, mut markdown) = (String::new(), String::new());
        for s in &sections {
            let Some(law) = &s.law else { continue };
            s.push_heading(&mut text, &mut markdown);
            text.push_str(&report::render_law_table(&law.summary)?);
            markdown.push_str(&report::render_law_markdown(&law.summary)?);
        }
        written.extend(report::write_frame(&tables, "entropy_law", &mut per_run, None)?);
        written.extend(report::write_frame(&tables, &format!("entropy_law_summary{tag}"), &mut summary, Some(&markdown))?);
        law_summary = Some(summary);
        law_table = Some(text.trim_start_matches('\n').to_string());
    }
    phase("tables written");

    if opts.plots {
        for s in &sections {
            // One environment's plots share an axis only with runs of their own scale.
            let (tag, scope) = match &s.env {
                Some(env) => (format!("{tag}-{}", file_safe(env)), format!(" in {env}")),
                None => (tag.clone(), String::new()),
            };
            written.extend(draw_plots(opts, &s.summary, &s.curves, &s.profiles, &tag, &scope)?);
            let metric_curves: Vec<(String, DataFrame)> = s.metric_curves.iter().filter(|(_, f)| f.height() > 0).cloned().collect();
            written.extend(draw_metric_plots(opts, &s.summary, &metric_curves, s.law.as_ref(), &tag, &scope)?);
        }
        phase("plots drawn");
    }
    let (removed, kept) = replace_record(opts, &p, runs.height(), &mut written)?;
    let best = sections.iter().filter_map(|s| Some(Best { env: s.env.clone(), group: s.best.clone()? })).collect();
    Ok(Outcome {
        table,
        removed,
        kept,
        completed: p.completed,
        analyzed: runs.height(),
        not_matching: if opts.filters.is_empty() { 0 } else { p.completed.saturating_sub(runs.height()) },
        unscored: unscored_runs(&runs)?.len(),
        left_out: p.left_out,
        notes: p.notes,
        written,
        best,
        summary,
        envs,
        curves: p.curves,
        law: law_summary,
        law_table,
    })
}

/// The runs-table column of the environment.
const ENV: &str = stats::ENV_COLUMN;

/// `tables/analysis.json`: what an analysis was asked, and the files it wrote (relative to
/// `--out`), so that the next analysis into the same place can remove those it does not write.
pub const RECORD: &str = "analysis.json";

/// What the analysis was asked, at the top of the Markdown summary: a table read later, or next
/// to another analysis' files, says which runs, which slice and which grouping it is of.
fn settings_markdown(opts: &Options, p: &Plans, analyzed: usize) -> String {
    let code = |s: &str| format!("`{s}`");
    let dirs: Vec<String> = opts.dirs.iter().map(|d| code(&d.display().to_string())).collect();
    let slice = if opts.filters.is_empty() {
        format!("all {analyzed} completed runs")
    } else {
        let filters: Vec<String> = opts.filters.iter().map(|f| code(&format!("--where '{f}'"))).collect();
        format!("{} ({analyzed} of {} completed runs)", filters.join(" "), p.completed)
    };
    let groups = match (&opts.compare, &p.grouping) {
        (Some(key), Grouping::Keys(keys)) => format!("`--compare {key}`: one group per value of `{}`, ranked by IQM", keys.join(", ")),
        (None, Grouping::Keys(keys)) => format!("`--group-by`: one group per combination of `{}`", keys.join("`, `")),
        _ => "one group per configuration (`config_id`)".to_string(),
    };
    let target = match opts.target {
        Some(t) => format!("`--target {t}`"),
        None => "the highest `success_return` of each environment's runs".to_string(),
    };
    let b = &opts.bootstrap;
    let all_runs = if opts.all_runs { " (`--all-runs`: run directories outside `sweep.json` included)" } else { "" };
    let mut lines = vec![
        format!("- results: {}{all_runs}", dirs.join(", ")),
        format!("- runs: {slice}"),
        format!("- groups: {groups}"),
        format!("- success bar: {target}"),
        format!("- bootstrap: {} resamples ({} per curve and profile point), seed {}; {} learning-curve bins", b.reps, b.band_reps, b.seed, opts.bins),
    ];
    if let Some(curves) = &opts.curves {
        lines.push(format!("- metric curves: `--curves {}`", curves.join(",")));
    }
    format!("# drover analyze\n\n{}\n\n", lines.join("\n"))
}

/// Writes `tables/analysis.json` (the settings and the files of this analysis) and removes the
/// files the previous record in the same `--out` lists that this analysis did not write: a
/// `compare-*` table of an earlier `--compare`, or plots of groups an earlier grouping had,
/// would otherwise sit beside this analysis' files as if they were of the same runs. Only files
/// named in that record go, only under `tables/` or `plots/`, and only while each is as that
/// analysis left it (the size and modification time the record keeps): a file the user edited
/// since is kept, with a note, and so is one that cannot be removed. Returns the files removed
/// and the notes; `written` gains the record.
fn replace_record(
    opts: &Options,
    p: &Plans,
    analyzed: usize,
    written: &mut Vec<PathBuf>,
) -> Result<(Vec<PathBuf>, Vec<String>), AnalyzeError> {
    let path = opts.out.join("tables").join(RECORD);
    // Each file under `--out` with its path relative to it, paired once so the stamps below
    // can never belong to another file.
    let ours_written: Vec<(String, &PathBuf)> = written
        .iter()
        .filter_map(|w| Some((w.strip_prefix(&opts.out).ok()?.to_string_lossy().replace('\\', "/"), w)))
        .collect();
    let relative: Vec<String> = ours_written.iter().map(|(r, _)| r.clone()).collect();
    let (mut removed, mut notes) = (Vec::new(), Vec::new());
    // An unreadable or foreign record removes nothing: the worst case is a stale file kept.
    if let Ok(Some(old)) = crate::layout::read_record::<serde_json::Value>(&path) {
        let files = old.get("files").and_then(serde_json::Value::as_array).cloned().unwrap_or_default();
        let stamps = old.get("stamps").cloned().unwrap_or_default();
        for file in files.iter().filter_map(serde_json::Value::as_str) {
            if relative.iter().any(|r| r == file) || !ours(file) {
                continue;
            }
            let stale = opts.out.join(file);
            if !stale.is_file() {
                continue;
            }
            if stamps.get(file).is_none_or(|s| *s != file_stamp(&stale)) {
                notes.push(format!("note: kept `{}`: an earlier analysis wrote it, but it has changed since (or that analysis did not say how it left it)", stale.display()));
                continue;
            }
            match std::fs::remove_file(&stale) {
                Ok(()) => removed.push(stale),
                Err(e) => notes.push(format!("note: could not remove `{}`, a file of an earlier analysis this one did not write: {e}", stale.display())),
            }
        }
    }
    let stamps: serde_json::Map<String, serde_json::Value> = ours_written.iter().map(|(r, w)| (r.clone(), file_stamp(w))).collect();
    let record = serde_json::json!({
        "format_version": crate::layout::FORMAT_VERSION,
        "results": opts.dirs.iter().map(|d| d.display().to_string()).collect::<Vec<_>>(),
        "where": opts.filters,
        "group_by": opts.group_by,
        "compare": opts.compare,
        "grouping": match &p.grouping { Grouping::Config => serde_json::json!("config_id"), Grouping::Keys(keys) => serde_json::json!(keys) },
        "all_runs": opts.all_runs,
        "target": opts.target,
        "reps": opts.bootstrap.reps,
        "band_reps": opts.bootstrap.band_reps,
        "seed": opts.bootstrap.seed,
        "bins": opts.bins,
        "completed": p.completed,
        "analyzed": analyzed,
        "files": relative,
        "stamps": stamps,
    });
    let text = serde_json::to_string_pretty(&record).unwrap_or_default();
    crate::layout::write_atomic(&path, text.as_bytes()).map_err(|source| AnalyzeError::Io { action: "write", path: path.clone(), source })?;
    written.push(path);
    Ok((removed, notes))
}

/// A file's size and modification time (nanoseconds), as the record keeps them: how the next
/// analysis tells a file left as written from one edited since. `null` when unreadable.
fn file_stamp(path: &std::path::Path) -> serde_json::Value {
    let Ok(meta) = std::fs::metadata(path) else { return serde_json::Value::Null };
    let mtime = meta.modified().ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok()).map(|d| d.as_nanos().to_string());
    serde_json::json!([meta.len(), mtime])
}

/// Whether `file` (a path relative to `--out` read from a record) names a file drover writes:
/// plain names under `tables/` or `plots/` with one of the extensions of its tables and plots.
/// A damaged or edited record cannot make the analysis remove anything else.
fn ours(file: &str) -> bool {
    let parts: Vec<&str> = file.split('/').collect();
    let [dir, name] = parts[..] else { return false };
    let ext_ok = |exts: &[&str]| exts.iter().any(|e| name.ends_with(&format!(".{e}")));
    let plain = !name.starts_with('.') && !name.contains('\\') && name != RECORD;
    plain && match dir {
        "tables" => ext_ok(&["csv", "parquet", "md"]),
        "plots" => ext_ok(&["png", "svg"]),
        _ => false,
    }
}

/// The environments to analyze one by one, sorted: those of `runs` when there are several and
/// `grouping` groups by something else than the environment; otherwise none (one analysis).
/// A configuration has one environment, but its curves and profiles would still share an axis
/// (the steps, the thresholds τ) with the other environments' runs.
fn env_sections(runs: &DataFrame, grouping: &Grouping) -> Result<Vec<String>, AnalyzeError> {
    if matches!(grouping, Grouping::Keys(keys) if keys.iter().any(|k| k == ENV)) {
        return Ok(Vec::new());
    }
    let Ok(column) = runs.column(ENV) else { return Ok(Vec::new()) };
    let text = column.cast(&DataType::String).map_err(polars_err(format!("reading column `{ENV}`")))?;
    let text = text.str().map_err(polars_err(format!("reading column `{ENV}`")))?;
    let envs: std::collections::BTreeSet<String> = (0..text.len()).filter_map(|i| text.get(i)).map(str::to_string).collect();
    Ok(if envs.len() > 1 { envs.into_iter().collect() } else { Vec::new() })
}

/// The line printed (and written atop the Markdown table) when the analysis is split by
/// environment: which environments, why, and how to look at one alone.
fn split_note(opts: &Options, envs: &[String]) -> Option<String> {
    if envs.is_empty() {
        return None;
    }
    let what = match (&opts.compare, &opts.group_by) {
        (Some(key), _) => format!("`--compare {key}`: groups are ranked within each environment"),
        (None, Some(keys)) => format!("`--group-by {keys}`: groups are formed within each environment"),
        (None, None) => "each environment is summarized on its own".to_string(),
    };
    Some(format!(
        "note: the runs span {} environments ({}), whose returns are not on one scale; {what}, one table each, with `{ENV}` as the first column of the written tables (`--where env={}` analyzes one alone)",
        envs.len(),
        envs.join(", "),
        envs[0]
    ))
}

/// One analysis over a set of runs: all of them, or one environment's (`env`).
struct Section {
    env: Option<String>,
    /// Runs in this section.
    runs: usize,
    summary: DataFrame,
    curves: DataFrame,
    profiles: DataFrame,
    /// One frame per `Plans::curves` column, in that order (empty when no run has the column).
    metric_curves: Vec<(String, DataFrame)>,
    /// The law, when some run of the section has a fit.
    law: Option<Law>,
    best: Option<String>,
    /// Lines printed (and written) under the summary table: success thresholds pooled into
    /// one, intervals left out for too few runs.
    notes: Vec<String>,
}

impl Section {
    /// `run.env=CartPole-v1 (6 runs)` for a section of one environment.
    fn heading(&self) -> Option<String> {
        self.env.as_ref().map(|env| format!("{ENV}={env} ({})", crate::words::count(self.runs, "run")))
    }

    /// Starts this section in the printed text and the Markdown file (nothing for the one
    /// section of a single environment).
    fn push_heading(&self, text: &mut String, markdown: &mut String) {
        if let Some(h) = self.heading() {
            text.push_str(&format!("\n{h}:\n"));
            markdown.push_str(&format!("\n### {h}\n\n"));
        }
    }
}

/// The statistics of the per-run rows `runs` (annotated, non-empty): summary (ranked when
/// comparing), learning curves, profiles, metric curves and the law.
fn section(p: &Plans, opts: &Options, metrics: &LazyFrame, runs: DataFrame, env: Option<String>) -> Result<Section, AnalyzeError> {
    let intervals = bootstrap::intervals(&runs, &opts.bootstrap)?;
    let groups = runs.column("group").and_then(|c| c.n_unique()).map_err(polars_err("counting the groups"))?;
    // Nothing to rank: naming the only group "best" would read as a finding. Said under the
    // table like the other warnings of the analysis (not as a log line), and written with it.
    let nothing_to_compare = match (&opts.compare, groups) {
        (Some(key), 1) => {
            let scope = env.as_ref().map(|e| format!(" of {e}")).unwrap_or_default();
            Some(format!("warning: --compare {key}: all {} runs{scope} analyzed have the same value of it; nothing to compare", runs.height()))
        }
        _ => None,
    };
    let keys = p.grouping.key_columns();
    let compare = opts.compare.is_some();
    let summary = report::with_intervals(stats::per_group(runs.clone().lazy(), &p.grouping), intervals, &keys);
    let summary = if compare {
        summary
            // Ties (CartPole configurations that all reach 500) by name: the ranks do not change
            // from run to run.
            .sort(
                ["final_return_iqm", "group"],
                SortMultipleOptions::default().with_order_descending_multi([true, false]).with_nulls_last(true),
            )
            .with_row_index("rank", Some(1))
    } else {
        // After the joins: a left join need not keep the order `per_group` sorted in.
        summary.sort(stats::group_order(&p.grouping), SortMultipleOptions::default().with_nulls_last(true))
    };
    let summary = summary.collect().map_err(polars_err("computing the summary"))?;
    // The best is rank 1 of that table, not an IQM computed a second time: two computations
    // of one IQM can differ in the last bit (summation order), and then named different groups
    // best and first (review finding 2). A group without an IQM (no scored run) is never best.
    let best = if compare && groups > 1 { rank_one(&summary)? } else { None };
    let summary = match &best {
        Some(best) => report::with_improvement(summary, bootstrap::improvement_over(&runs, best, &opts.bootstrap)?)?,
        None => summary,
    };
    let summary = if compare { summary } else { in_label_order(summary, &p.grouping)? };

    let points = stats::curve_points(metrics.clone(), runs.clone().lazy(), opts.bins)
        .collect()
        .map_err(polars_err("binning the learning curves"))?;
    let curves = bootstrap::curves(&points, &opts.bootstrap)?;
    let profiles = bootstrap::profiles(&runs, opts.profile_points, &opts.bootstrap)?;
    let mut metric_curves = Vec::new();
    for name in &p.curves {
        let points = stats::metric_points(metrics.clone(), runs.clone().lazy(), opts.bins, name)
            .collect()
            .map_err(polars_err(format!("binning the `{name}` curves")))?;
        metric_curves.push((name.clone(), bootstrap::curves(&points, &opts.bootstrap)?));
    }
    // An environment whose runs have no law points (CartPole beside a sequence task) gets no
    // law table; a single analysis keeps its (possibly empty) one as before.
    let mut law = if p.law {
        Some(law(metrics.clone(), &runs, &p.grouping, opts)?).filter(|l| l.per_run.height() > 0 || env.is_none())
    } else {
        None
    };
    if let (Some(law), Some(_)) = (&mut law, &opts.compare) {
        // Printed under the ranked table: rows in the ranking's order, not the keys'.
        law.summary = in_order_of(&law.summary, &summary)?;
    }
    let mut notes: Vec<String> = nothing_to_compare.into_iter().collect();
    notes.extend(threshold_notes(&runs, opts.target)?);
    notes.extend(unscored_note(&runs)?);
    notes.extend(window_notes(&runs)?);
    notes.extend(provenance_notes(&runs)?);
    notes.extend(interval_note(&summary)?);
    notes.extend(unpaired_note(&summary, best.as_deref())?);
    Ok(Section { env, runs: runs.height(), summary, curves, profiles, metric_curves, law, best, notes })
}

/// A note per group whose runs were computed at more than one level or by more than one plugin
/// build (`load::COMPUTE`, `load::PLUGIN_SHA256`; a run that mixed them itself is a value of
/// its own): their bits need not agree, so the group's spread may be partly the hardware's or
/// the build's. Runs whose summaries predate the columns (null) are not counted.
fn provenance_notes(runs: &DataFrame) -> Result<Vec<String>, AnalyzeError> {
    let mut notes = Vec::new();
    let group = runs.column("group").and_then(|c| c.str().cloned()).map_err(polars_err("reading column `group`"))?;
    for (column, what) in [(load::COMPUTE, "compute levels"), (load::PLUGIN_SHA256, "plugin builds")] {
        // A runs table without the column (built by hand in a test) has nothing to say.
        let Ok(values) = runs.column(column) else { continue };
        let values = values.str().cloned().map_err(polars_err(format!("reading column `{column}`")))?;
        let mut by_group: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
        for i in 0..runs.height() {
            if let (Some(g), Some(v)) = (group.get(i), values.get(i)) {
                by_group.entry(g).or_default().insert(v);
            }
        }
        for (g, set) in by_group.iter().filter(|(_, set)| set.len() > 1) {
            let list: Vec<&str> = set.iter().copied().collect();
            notes.push(format!(
                "note: group `{g}` pools runs of {} {what} (`{column}`: {}): their results need not agree bit for bit, and the group's spread may be partly theirs",
                set.len(),
                list.join(", ")
            ));
        }
    }
    Ok(notes)
}

/// The group of the ranked summary's first row, if it has an IQM.
fn rank_one(summary: &DataFrame) -> Result<Option<String>, AnalyzeError> {
    let iqm = summary.column("final_return_iqm").map_err(polars_err("reading column `final_return_iqm`"))?;
    if summary.height() == 0 || iqm.get(0).is_ok_and(|v| v.is_null()) {
        return Ok(None);
    }
    let groups = summary.column("group").and_then(|c| c.str().cloned()).map_err(polars_err("reading column `group`"))?;
    Ok(groups.get(0).map(str::to_string))
}

/// A warning per environment whose runs have several `success_return` values (without
/// `--target`): steps to threshold, `reached` and the optimality gap then use the highest for
/// all of them (`stats::success_target`), which the reader must know to read those columns.
fn threshold_notes(runs: &DataFrame, target: Option<f64>) -> Result<Vec<String>, AnalyzeError> {
    if target.is_some() || runs.column(ENV).is_err() {
        return Ok(Vec::new());
    }
    let envs = runs.column(ENV).and_then(|c| c.cast(&DataType::String)).map_err(polars_err(format!("reading column `{ENV}`")))?;
    let envs = envs.str().map_err(polars_err(format!("reading column `{ENV}`")))?;
    let bars = runs
        .column("success_return")
        .and_then(|c| c.cast(&DataType::Float64))
        .map_err(polars_err("reading column `success_return`"))?;
    let bars = bars.f64().map_err(polars_err("reading column `success_return`"))?;
    let mut by_env: std::collections::BTreeMap<String, Vec<f64>> = Default::default();
    for i in 0..runs.height() {
        if let (Some(env), Some(bar)) = (envs.get(i), bars.get(i)) {
            by_env.entry(env.to_string()).or_default().push(bar);
        }
    }
    let mut notes = Vec::new();
    for (env, mut values) in by_env {
        values.sort_by(f64::total_cmp);
        values.dedup();
        let [lowest, .., highest] = values[..] else { continue };
        let list: Vec<String> = values.iter().map(f64::to_string).collect();
        notes.push(format!(
            "warning: the runs of {env} have {} values of `run.success_return` ({}); steps to threshold, `reached` and the optimality gap use the highest, {highest}, for all of them (`--target RETURN` sets another bar; `--where success_return={lowest}` analyzes those runs alone)",
            values.len(),
            list.join(", "),
        ));
    }
    Ok(notes)
}

/// The runs of `runs` (the per-run table) without a final return, as (group, run id).
fn unscored_runs(runs: &DataFrame) -> Result<Vec<(String, String)>, AnalyzeError> {
    let err = || polars_err("finding the runs without a final return");
    let score = runs.column("final_return").map_err(err())?.is_null();
    let group = runs.column("group").and_then(|c| c.str().cloned()).map_err(err())?;
    let id = runs.column("run_id").and_then(|c| c.str().cloned()).map_err(err())?;
    Ok((0..runs.height())
        .filter(|&i| score.get(i).unwrap_or(false))
        .map(|i| (group.get(i).unwrap_or_default().to_string(), id.get(i).unwrap_or_default().to_string()))
        .collect())
}

/// The note naming the runs that completed but logged no finite return (diverged, no finished
/// episode, an empty metrics file): they count in a group's `runs` and in no score, so a group
/// of 4 runs with 1 such run has 3 runs behind its statistics, and one with none has no scores.
fn unscored_note(runs: &DataFrame) -> Result<Option<String>, AnalyzeError> {
    let unscored = unscored_runs(runs)?;
    if unscored.is_empty() {
        return Ok(None);
    }
    let mut by_group: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (group, id) in &unscored {
        by_group.entry(group.as_str()).or_default().push(id.as_str());
    }
    let mut parts: Vec<String> = by_group.iter().take(NOTE_GROUPS).map(|(g, ids)| format!("`{g}` ({})", ids.join(", "))).collect();
    if by_group.len() > NOTE_GROUPS {
        parts.push(format!("and {} more groups", by_group.len() - NOTE_GROUPS));
    }
    let (which, they) = match (unscored.len(), runs.height()) {
        (1, 1) => ("the only run has".to_string(), "it counts"),
        (1, n) => (format!("1 of {n} runs has"), "it counts"),
        (k, n) => (format!("{k} of {n} runs have"), "they count"),
    };
    Ok(Some(format!(
        "note: {which} no final return (no iteration with a finished episode and a finite return: diverged, or an empty metrics file); {they} in `runs` (`unscored` in the table) but in no score, interval, curve or profile: {}",
        parts.join(", ")
    )))
}

/// Notes on the final-return window (`stats::FINAL_WINDOW` iterations, not steps) where it
/// misleads: most scored runs have no more iterations than the window (their final return is
/// their whole training's mean), or the groups' iterations differ in steps (`num_envs ×
/// num_steps`) by a factor of 2 or more, so their final returns average different spans.
fn window_notes(runs: &DataFrame) -> Result<Vec<String>, AnalyzeError> {
    let window = stats::FINAL_WINDOW;
    let (iterations, last_step) = (i64_values(runs, "iterations")?, i64_values(runs, "last_step")?);
    let scored = runs.column("final_return").map_err(polars_err("reading column `final_return`"))?.is_not_null();
    let group = runs.column("group").and_then(|c| c.str().cloned()).map_err(polars_err("reading column `group`"))?;
    let rows: Vec<usize> = (0..runs.height()).filter(|&i| scored.get(i).unwrap_or(false)).collect();
    let mut notes = Vec::new();
    let short = rows.iter().filter(|&&i| iterations[i] <= window as i64).count();
    if short * 2 > rows.len() {
        notes.push(format!(
            "note: {short} of {} runs have {window} iterations or fewer, so their final return (the mean of the last {window} iterations) is the mean of their whole training, not of its end",
            rows.len()
        ));
    }
    // Steps per iteration of each group: the median over its runs.
    let mut per_group: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    for &i in &rows {
        if let (Some(g), true) = (group.get(i), iterations[i] > 0) {
            per_group.entry(g).or_default().push(last_step[i] as f64 / iterations[i] as f64);
        }
    }
    let spans: Vec<(&str, f64)> = per_group
        .iter_mut()
        .map(|(g, v)| {
            v.sort_by(f64::total_cmp);
            (*g, v[v.len() / 2] * window as f64)
        })
        .collect();
    let lowest = spans.iter().min_by(|a, b| a.1.total_cmp(&b.1));
    let highest = spans.iter().max_by(|a, b| a.1.total_cmp(&b.1));
    if let (Some(&(lg, lo)), Some(&(hg, hi))) = (lowest, highest) {
        if lo > 0.0 && hi >= 2.0 * lo {
            notes.push(format!(
                "note: the final-return window ({window} iterations) spans from about {lo:.0} steps (`{lg}`) to {hi:.0} (`{hg}`): iterations differ in steps (`num_envs × num_steps`), so these groups' final returns average different spans of training"
            ));
        }
    }
    Ok(notes)
}

/// Most groups a note names before it says "and N more".
const NOTE_GROUPS: usize = 5;

/// The note under a summary whose groups have a point estimate but no interval (IQM or
/// P(best > this)): too few runs in a stratum (`bootstrap::MIN_STRATUM_RUNS`), and how many
/// seeds an interval needs.
fn interval_note(summary: &DataFrame) -> Result<Option<String>, AnalyzeError> {
    // A column the summary lacks (`p_best_better` without `--compare`) leaves nothing out.
    let missing = |point: &str| -> Vec<bool> {
        let (Ok(p), Ok(lo)) = (summary.column(point), summary.column(&format!("{point}_lo"))) else {
            return vec![false; summary.height()];
        };
        let (p, lo) = (p.is_not_null(), lo.is_null());
        (0..summary.height()).map(|i| p.get(i).unwrap_or(false) && lo.get(i).unwrap_or(false)).collect()
    };
    let (iqm, better) = (missing("final_return_iqm"), missing("p_best_better"));
    let groups = summary.column("group").and_then(|c| c.str().cloned()).map_err(polars_err("reading column `group`"))?;
    let bare: Vec<&str> = (0..summary.height()).filter(|&i| iqm[i] || better[i]).filter_map(|i| groups.get(i)).collect();
    if bare.is_empty() {
        return Ok(None);
    }
    let min = bootstrap::MIN_STRATUM_RUNS;
    let which = which_groups(&bare, summary.height());
    let best_too = if summary.column("p_best_better").is_ok() { "; for P(best > this) in the best group too" } else { "" };
    // A group of 4 runs with an unscored one has 3 behind its interval: say so, or "needs 4
    // runs" reads as wrong next to `runs 4`.
    let (runs, scored) = (i64_values(summary, "runs")?, i64_values(summary, "scored")?);
    let short_of_scores = (0..summary.height()).any(|i| (iqm[i] || better[i]) && scored[i] < runs[i]);
    let scored_only = if short_of_scores { ", runs without a final return not counted" } else { "" };
    Ok(Some(format!(
        "note: no 95% interval for {which}: an interval needs at least {min} runs in every stratum (seeds per configuration{best_too}{scored_only}), since with {} or fewer the percentile bootstrap's 95% interval is just the range of the runs; run {min} seeds or more for intervals",
        min - 1
    )))
}

/// An integer column of `df` (nulls as 0).
fn i64_values(df: &DataFrame, name: &str) -> Result<Vec<i64>, AnalyzeError> {
    let c = df.column(name).and_then(|c| c.cast(&DataType::Int64)).map_err(polars_err(format!("reading column `{name}`")))?;
    let c = c.i64().map_err(polars_err(format!("reading column `{name}`")))?;
    Ok((0..c.len()).map(|i| c.get(i).unwrap_or(0)).collect())
}

/// The groups a note is about, `groups` of `total`: up to `NOTE_GROUPS` named, then a count.
fn which_groups(groups: &[&str], total: usize) -> String {
    let mut named: Vec<String> = groups.iter().take(NOTE_GROUPS).map(|g| format!("`{g}`")).collect();
    if groups.len() > NOTE_GROUPS {
        named.push(format!("and {} more", groups.len() - NOTE_GROUPS));
    }
    match (groups.len(), total) {
        (1, 1) => named.join(""),
        (k, n) if k == n => format!("any of the {n} groups ({})", named.join(", ")),
        (k, n) => format!("{k} of {n} groups ({})", named.join(", ")),
    }
}

/// Names the groups that get no P(best > this) because they share no stratum with the best
/// (their other settings differ, as CHORD's expert responses from the other algorithms'), so
/// that a blank cell does not read as a failed computation or a missing interval.
fn unpaired_note(summary: &DataFrame, best: Option<&str>) -> Result<Option<String>, AnalyzeError> {
    let (Some(best), Ok(p)) = (best, summary.column("p_best_better")) else { return Ok(None) };
    let groups = summary.column("group").and_then(|c| c.str().cloned()).map_err(polars_err("reading column `group`"))?;
    let blank = p.is_null();
    // A group without a scored run has no strata to share; `unscored_note` says why.
    let scored = i64_values(summary, "scored")?;
    let unpaired: Vec<&str> = (0..summary.height())
        .filter(|&i| blank.get(i).unwrap_or(false) && scored[i] > 0)
        .filter_map(|i| groups.get(i))
        .filter(|g| *g != best)
        .collect();
    if unpaired.is_empty() {
        return Ok(None);
    }
    let (which, they) = (which_groups(&unpaired, summary.height() - 1), if unpaired.len() == 1 { "it shares" } else { "they share" });
    Ok(Some(format!(
        "note: no P(best > this) for {which}: {they} no stratum with the best, `{best}` (runs are compared only where all their \
         other settings are equal; the `stratum` column of tables/runs.csv shows each run's)"
    )))
}

/// Stacks per-section frames into one, with `run.env` first when the sections are environments.
/// Columns one section lacks (`p_best_better` where an environment has a single group) are null
/// there; `None` when there is no frame.
fn stack(parts: Vec<(Option<&str>, DataFrame)>) -> Result<Option<DataFrame>, AnalyzeError> {
    let err = || polars_err("stacking the tables of the environments");
    let mut frames = Vec::with_capacity(parts.len());
    for (env, mut df) in parts {
        if let Some(env) = env {
            if df.column(ENV).is_err() {
                df.insert_column(0, Column::new(ENV.into(), vec![env; df.height()])).map_err(err())?;
            }
        }
        frames.push(df);
    }
    let mut names: Vec<(PlSmallStr, DataType)> = Vec::new();
    for df in &frames {
        for c in df.columns() {
            if !names.iter().any(|(n, _)| n == c.name()) {
                names.push((c.name().clone(), c.dtype().clone()));
            }
        }
    }
    let mut out: Option<DataFrame> = None;
    for df in frames {
        let columns = names
            .iter()
            .map(|(name, dtype)| match df.column(name) {
                Ok(c) if c.dtype() == dtype => Ok(c.clone()),
                Ok(c) => c.cast(dtype),
                Err(_) => Ok(Column::full_null(name.clone(), df.height(), dtype)),
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(err())?;
        let df = DataFrame::new(df.height(), columns).map_err(err())?;
        match &mut out {
            None => out = Some(df),
            Some(acc) => {
                acc.vstack_mut(&df).map_err(err())?;
            }
        }
    }
    Ok(out)
}

/// The entropy-performance law of an analysis: the per-run fits, their per-group summary, and
/// the (group, H, R) points behind them.
struct Law {
    per_run: DataFrame,
    summary: DataFrame,
    points: DataFrame,
}

/// Fits the law per run (`stats::law_fits`) and summarizes a, b, R² and the ceiling per group
/// with stratified bootstrap intervals over the group's runs.
fn law(metrics: LazyFrame, runs: &DataFrame, grouping: &Grouping, opts: &Options) -> Result<Law, AnalyzeError> {
    let rows = stats::law_rows(metrics, stats::LAW_ENTROPY, stats::LAW_REWARD);
    let keys = grouping.key_columns();
    let per_run = stats::law_per_run(runs.clone().lazy(), stats::law_fits(rows.clone()), &keys)
        .collect()
        .map_err(polars_err("fitting the entropy-performance law"))?;
    let means = bootstrap::mean_intervals(&per_run, &report::LAW_STATS, &opts.bootstrap)?;
    let mut aggs: Vec<Expr> = keys.iter().map(|k| col(k.as_str()).first()).collect();
    aggs.extend([
        col("run_id").count().cast(DataType::Int64).alias("runs"),
        col("a").is_not_null().sum().cast(DataType::Int64).alias("fitted"),
    ]);
    let mut order: Vec<Expr> = keys.iter().map(|k| col(k.as_str())).collect();
    order.extend([col("group"), col("runs"), col("fitted")]);
    for stat in report::LAW_STATS {
        order.extend(["mean", "lo", "hi"].map(|s| col(format!("{stat}_{s}"))));
    }
    let summary = per_run
        .clone()
        .lazy()
        .group_by([col("group")])
        .agg(aggs)
        .left_join(means.lazy(), col("group"), col("group"))
        .select(order)
        .sort(stats::group_order(grouping), SortMultipleOptions::default().with_nulls_last(true))
        .collect()
        .map_err(polars_err("summarizing the entropy-performance law"))?;
    let summary = in_label_order(summary, grouping)?;
    let points = rows
        .join(runs.clone().lazy().select([col(load::RUN_KEY), col("group")]), [col(load::RUN_KEY)], [col(load::RUN_KEY)], JoinArgs::new(JoinType::Inner))
        .select([col("group"), col("h"), col("r")])
        .collect()
        .map_err(polars_err("collecting the entropy-performance points"))?;
    Ok(Law { per_run, summary, points })
}

/// The rows of a per-group table of the default grouping (one group per configuration, named
/// by its label) in the order of the labels' values (`stats::label_order`); other groupings
/// are sorted by their typed key columns already.
fn in_label_order(df: DataFrame, grouping: &Grouping) -> Result<DataFrame, AnalyzeError> {
    if *grouping != Grouping::Config {
        return Ok(df);
    }
    let groups = df.column("group").and_then(|c| c.str().cloned()).map_err(polars_err("reading column `group`"))?;
    let labels: Vec<String> = (0..groups.len()).map(|i| groups.get(i).unwrap_or_default().to_string()).collect();
    let order: Vec<IdxSize> = stats::label_order(&labels).into_iter().map(|i| i as IdxSize).collect();
    df.take(&IdxCa::from_vec("order".into(), order)).map_err(polars_err("ordering the groups by their labels"))
}

/// The rows of `df` in the order of `summary`'s groups (groups `summary` lacks last, as they were).
fn in_order_of(df: &DataFrame, summary: &DataFrame) -> Result<DataFrame, AnalyzeError> {
    let names = |d: &DataFrame| -> Result<Vec<String>, AnalyzeError> {
        let c = d.column("group").and_then(|c| c.str().cloned()).map_err(polars_err("reading column `group`"))?;
        Ok((0..c.len()).map(|i| c.get(i).unwrap_or_default().to_string()).collect())
    };
    let (rows, ranked) = (names(df)?, names(summary)?);
    let mut order: Vec<usize> = (0..rows.len()).collect();
    order.sort_by_key(|&i| ranked.iter().position(|g| *g == rows[i]).unwrap_or(usize::MAX));
    let order: Vec<IdxSize> = order.into_iter().map(|i| i as IdxSize).collect();
    df.take(&IdxCa::from_vec("order".into(), order)).map_err(polars_err("ordering the rows as the ranking"))
}

/// Most values of a key an empty slice's error lists.
const HINT_VALUES: usize = 8;

/// `` `lr=0.0003` matches no run: `run.lr` is 0.0001, 0.0002 (40 runs each) `` for a `--where`
/// expression that alone matches no run: the values there are, so that a typo, a case
/// (`cartpole-v1`) or a float written another way is fixed in one round.
fn values_hint(filter: &str, key: &str, all: &DataFrame) -> Result<String, AnalyzeError> {
    let column = all.column(key).map_err(polars_err(format!("reading column `{key}`")))?;
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for i in 0..column.len() {
        match column.get(i) {
            Ok(AnyValue::Null) | Err(_) => {}
            Ok(v) => *counts.entry(value_text(&v)).or_default() += 1,
        }
    }
    if counts.is_empty() {
        return Ok(format!("`{filter}` matches no run: no run has `{key}`"));
    }
    let texts: Vec<String> = counts.keys().map(|v| format!("{key}={v}")).collect();
    let order = stats::label_order(&texts);
    let values: Vec<&String> = order.iter().filter_map(|&i| counts.keys().nth(i)).collect();
    let mut listed: Vec<String> = values.iter().take(HINT_VALUES).map(|v| v.to_string()).collect();
    if values.len() > HINT_VALUES {
        listed.push(format!("and {} more", values.len() - HINT_VALUES));
    }
    Ok(format!("`{filter}` matches no run: `{key}` is {}", listed.join(", ")))
}

/// Why an empty slice may be empty: `; runs without a key never match: `K` is missing in N of M`.
fn missing_note(missing: &[(String, i64)], completed: usize) -> String {
    if missing.is_empty() {
        return String::new();
    }
    let parts: Vec<String> = missing.iter().map(|(k, n)| format!("`{k}` is missing in {n} of {completed}")).collect();
    format!("; runs without a key never match: {}", parts.join(", "))
}

/// A metrics column name as a file-name part (other characters become `_`).
fn file_safe(name: &str) -> String {
    name.chars().map(|c| if c.is_ascii_alphanumeric() || "._+-".contains(c) { c } else { '_' }).collect()
}

/// Whether any point of `lines` has a band (both bounds): none has when every group has too few
/// runs in a stratum for an interval (`bootstrap::MIN_STRATUM_RUNS`).
fn lines_have_bands(lines: &[plot::Line]) -> bool {
    lines.iter().flat_map(|l| &l.points).any(|p| p.2.is_finite() && p.3.is_finite())
}

/// What a chart's title says of its intervals: `what` when it draws some; otherwise why there
/// are none, so that a chart without bands does not promise them.
fn ci_words(drawn: bool, what: &str) -> String {
    if drawn {
        what.to_string()
    } else {
        format!("no CI (fewer than {} runs per stratum)", bootstrap::MIN_STRATUM_RUNS)
    }
}

/// At most this many lines per chart; beyond it a chart shows the best groups by IQM.
const MAX_LINES: usize = 10;

/// At most this many bars in the bar chart; beyond it the chart shows the best groups by IQM.
const MAX_BARS: usize = 40;

/// The groups a chart shows and how its title says so.
struct Shown {
    /// The best `MAX_LINES` groups by IQM of the final return, best first.
    groups: Vec<String>,
    /// Every group, best first by IQM (groups without one last, in summary order): a group's
    /// place here is its colour in every chart.
    ranked: Vec<String>,
    /// " (best 10 of N by IQM)" when groups were left out, else empty.
    note: String,
    /// " by KEY" for `--group-by`/`--compare`, else empty; then " in ENV" for one environment's plots.
    what: String,
}

fn shown_groups(opts: &Options, summary: &DataFrame, scope: &str) -> Result<Shown, AnalyzeError> {
    let bars = report::bars(summary)?;
    let ranked: Vec<String> = by_iqm(&bars).into_iter().map(|b| b.name.clone()).collect();
    let groups = ranked.iter().take(MAX_LINES).cloned().collect();
    let note = if bars.len() > MAX_LINES { format!(" (best {MAX_LINES} of {} by IQM)", bars.len()) } else { String::new() };
    let what = match (&opts.compare, &opts.group_by) {
        (Some(k), _) | (None, Some(k)) => format!(" by {k}{scope}"),
        _ => scope.to_string(),
    };
    Ok(Shown { groups, ranked, note, what })
}

/// The bars of the bar chart and what its title says of them: the best `MAX_BARS` of `bars`
/// by IQM (`ranked`: every group, best first), in the summary's order (labels' values, or the
/// ranking), each in the colour its line has in the other charts (its place in `ranked`), and
/// " (best 40 of N by IQM)" when some were left out.
pub(super) fn chart_bars(bars: Vec<plot::Bar>, ranked: &[String]) -> (Vec<plot::Bar>, String) {
    let total = bars.len();
    let best: BTreeSet<&String> = ranked.iter().take(MAX_BARS).collect();
    let bars = bars
        .into_iter()
        .filter(|b| best.contains(&b.name))
        .map(|b| plot::Bar { colour: ranked.iter().position(|g| *g == b.name).unwrap_or(b.colour), ..b })
        .collect();
    let note = if total > MAX_BARS { format!(" (best {MAX_BARS} of {total} by IQM)") } else { String::new() };
    (bars, note)
}

/// `bars` best first by IQM; groups without one (no scored run: NaN) last, in their order.
/// `f64::total_cmp` alone would put NaN above every number, first.
pub(super) fn by_iqm(bars: &[plot::Bar]) -> Vec<&plot::Bar> {
    let mut ranked: Vec<&plot::Bar> = bars.iter().collect();
    ranked.sort_by(|a, b| match (a.value.is_nan(), b.value.is_nan()) {
        (false, false) => b.value.total_cmp(&a.value),
        (x, y) => x.cmp(&y),
    });
    ranked
}

fn plot_dir(opts: &Options) -> Result<PathBuf, AnalyzeError> {
    let dir = opts.out.join("plots");
    std::fs::create_dir_all(&dir).map_err(|source| AnalyzeError::Io { action: "create directory", path: dir.clone(), source })?;
    Ok(dir)
}

/// Learning curves of the metrics columns (`curves-<column>*`) and the law's scatter plot
/// (`entropy_law*`), for the groups the other charts show.
fn draw_metric_plots(
    opts: &Options,
    summary: &DataFrame,
    metric_curves: &[(String, DataFrame)],
    law: Option<&Law>,
    tag: &str,
    scope: &str,
) -> Result<Vec<PathBuf>, AnalyzeError> {
    if metric_curves.is_empty() && law.is_none() {
        return Ok(Vec::new());
    }
    let dir = plot_dir(opts)?;
    let Shown { groups, note, what, .. } = shown_groups(opts, summary, scope)?;
    let mut written = Vec::new();
    for (name, frame) in metric_curves {
        let lines = report::curve_lines(frame, &groups)?;
        // Legend where the curves are not: low when they mostly rise (accuracy), high when they
        // mostly fall (entropy).
        let (mut rising, mut falling) = (0, 0);
        for line in &lines {
            match (line.points.first(), line.points.last()) {
                (Some(f), Some(l)) if l.1 > f.1 => rising += 1,
                (Some(_), Some(_)) => falling += 1,
                _ => {}
            }
        }
        let title = format!("{name}{what}: IQM over runs, {}{note}", ci_words(lines_have_bands(&lines), "95% bootstrap CI"));
        let chart = LineChart { title: &title, x_desc: "environment steps", y_desc: name, legend_low: rising >= falling };
        written.extend(plot::render(&dir.join(format!("curves-{}{tag}", file_safe(name))), &Chart::Lines(chart, &lines))?);
    }
    if let Some(law) = law {
        let groups = report::law_scatter(&law.points, &law.summary, &groups)?;
        let title = format!("Entropy-performance law R = -a·exp(H) + b{what}: iterations, mean fit{note}");
        let x_desc = format!("policy entropy H ({}, nats)", stats::LAW_ENTROPY);
        let y_desc = format!("R ({})", stats::LAW_REWARD);
        let chart = LineChart { title: &title, x_desc: &x_desc, y_desc: &y_desc, legend_low: false };
        written.extend(plot::render(&dir.join(format!("entropy_law{tag}")), &Chart::Scatter(chart, &groups))?);
    }
    Ok(written)
}

fn draw_plots(
    opts: &Options,
    summary: &DataFrame,
    curves: &DataFrame,
    profiles: &DataFrame,
    tag: &str,
    scope: &str,
) -> Result<Vec<PathBuf>, AnalyzeError> {
    let dir = plot_dir(opts)?;
    let bars = report::bars(summary)?;
    let Shown { groups: shown, ranked, note, what } = shown_groups(opts, summary, scope)?;

    let mut written = Vec::new();
    let lines = report::curve_lines(curves, &shown)?;
    let title = format!("Learning curves{what}: IQM over runs, {}{note}", ci_words(lines_have_bands(&lines), "95% bootstrap CI"));
    let chart = LineChart { title: &title, x_desc: "environment steps", y_desc: "episodic return", legend_low: true };
    written.extend(plot::render(&dir.join(format!("curves{tag}")), &Chart::Lines(chart, &lines))?);

    let lines = report::profile_lines(profiles, &shown)?;
    let title = format!("Performance profile{what}: runs with final return > τ, {}{note}", ci_words(lines_have_bands(&lines), "95% CI"));
    let chart = LineChart { title: &title, x_desc: "final return τ", y_desc: "fraction of runs > τ", legend_low: false };
    written.extend(plot::render(&dir.join(format!("profile{tag}")), &Chart::Lines(chart, &lines))?);

    let (bars, shown_bars) = chart_bars(bars, &ranked);
    let whiskers = bars.iter().any(|b| b.lo.is_finite() && b.hi.is_finite());
    let title = format!("Final return{what}: IQM over runs, {}{shown_bars}", ci_words(whiskers, "95% bootstrap CI"));
    written.extend(plot::render(&dir.join(format!("final{tag}")), &Chart::Bars(&title, "final return (IQM)", &bars))?);
    Ok(written)
}
