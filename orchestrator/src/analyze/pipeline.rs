//! The whole of `drover analyze` as one library call: load, slice, group, compute, write.
//!
//! This is the edge where the lazy plans are executed: the metrics files are read once, the
//! per-run table and the learning-curve bins are collected once each, the resampling runs on
//! them, and the summary is collected once.

use std::path::PathBuf;

use polars::prelude::*;

use super::bootstrap::{self, Bootstrap};
use super::load::{load_results, polars_err};
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
}

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
    /// Run directories left out, with the reason.
    pub left_out: Vec<(String, String)>,
    /// Files written.
    pub written: Vec<PathBuf>,
    /// The best group by IQM when comparing.
    pub best: Option<String>,
}

/// The lazy plans of an analysis before anything is executed.
#[must_use]
struct Plans {
    runs: LazyFrame,
    metrics: LazyFrame,
    hyperparameters: Vec<String>,
    grouping: Grouping,
    completed: usize,
    left_out: Vec<(String, String)>,
}

fn plans(opts: &Options) -> Result<Plans, AnalyzeError> {
    let loaded = load_results(&opts.dirs)?;
    let schema = loaded.runs.clone().collect_schema().map_err(polars_err("reading the runs table's schema"))?;
    let mut runs = loaded.runs;
    for filter in &opts.filters {
        runs = runs.filter(query::parse_where(filter, &schema)?);
    }
    let grouping = match (&opts.compare, &opts.group_by) {
        (Some(key), _) => Grouping::Keys(vec![query::resolve_key(key, key, &schema)?]),
        (None, Some(keys)) => Grouping::Keys(query::parse_keys(keys, &schema)?),
        (None, None) => Grouping::Config,
    };
    Ok(Plans {
        runs,
        metrics: loaded.metrics,
        hyperparameters: loaded.hyperparameters,
        grouping,
        completed: loaded.completed,
        left_out: loaded.left_out,
    })
}

impl Plans {
    /// The per-run table (with `group` and `stratum`) over `metrics`.
    fn per_run(&self, metrics: LazyFrame, opts: &Options) -> LazyFrame {
        stats::annotate(stats::per_run(metrics, self.runs.clone(), opts.target), &self.grouping, &self.hyperparameters)
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

/// Runs the analysis and writes `tables/` (CSV, Parquet, Markdown) and `plots/` under `opts.out`.
pub fn analyze(opts: &Options) -> Result<Outcome, AnalyzeError> {
    let start = std::time::Instant::now();
    let phase = |what: &str| tracing::debug!(elapsed_s = start.elapsed().as_secs_f64(), "analyze: {what}");
    let p = plans(opts)?;
    phase("planned");
    // Both the per-run table and the curve bins read the metrics: read the files once.
    let metrics = p.metrics.clone().collect().map_err(polars_err("reading the metrics files"))?.lazy();
    phase("metrics read");
    let mut runs = p.per_run(metrics.clone(), opts).collect().map_err(polars_err("computing the per-run table"))?;
    phase("per-run table collected");
    if runs.height() == 0 {
        return Err(AnalyzeError::Query {
            expr: opts.filters.join(" and "),
            reason: format!("no completed run matches (of {})", p.completed),
        });
    }
    let intervals = bootstrap::intervals(&runs, &opts.bootstrap)?;
    phase("intervals");
    let best = if opts.compare.is_some() { bootstrap::best_by_iqm(&runs)? } else { None };
    let improvement = match &best {
        Some(best) => Some(bootstrap::improvement_over(&runs, best, &opts.bootstrap)?),
        None => None,
    };
    let keys = p.grouping.key_columns();
    let summary = report::with_intervals(stats::per_group(runs.clone().lazy(), &p.grouping), intervals, improvement, &keys);
    let summary = if opts.compare.is_some() {
        summary
            .sort(["final_return_iqm"], SortMultipleOptions::default().with_order_descending(true).with_nulls_last(true))
            .with_row_index("rank", Some(1))
    } else {
        summary
    };
    let mut summary = summary.collect().map_err(polars_err("computing the summary"))?;
    phase("summary collected");

    let points = stats::curve_points(metrics, runs.clone().lazy(), opts.bins)
        .collect()
        .map_err(polars_err("binning the learning curves"))?;
    phase("curve bins collected");
    let mut curves = bootstrap::curves(&points, &opts.bootstrap)?;
    phase("curve bands");
    let mut profiles = bootstrap::profiles(&runs, opts.profile_points, &opts.bootstrap)?;
    phase("profiles");

    let tag = p.grouping.file_tag();
    let stem = match &opts.compare {
        Some(_) => format!("compare{}", tag.trim_start_matches("-by")),
        None => format!("summary{tag}"),
    };
    let table = report::render_table(&summary)?;
    let markdown = report::render_markdown(&summary)?;
    let tables = opts.out.join("tables");
    let mut written = report::write_frame(&tables, &stem, &mut summary, Some(&markdown))?;
    written.extend(report::write_frame(&tables, "runs", &mut runs, None)?);
    written.extend(report::write_frame(&tables, &format!("curves{tag}"), &mut curves, None)?);
    written.extend(report::write_frame(&tables, &format!("profiles{tag}"), &mut profiles, None)?);

    phase("tables written");
    if opts.plots {
        written.extend(draw_plots(opts, &summary, &curves, &profiles, &tag)?);
        phase("plots drawn");
    }
    Ok(Outcome {
        table,
        completed: p.completed,
        analyzed: runs.height(),
        left_out: p.left_out,
        written,
        best,
        summary,
    })
}

/// At most this many lines per chart; beyond it a chart shows the best groups by IQM.
const MAX_LINES: usize = 10;

fn draw_plots(
    opts: &Options,
    summary: &DataFrame,
    curves: &DataFrame,
    profiles: &DataFrame,
    tag: &str,
) -> Result<Vec<PathBuf>, AnalyzeError> {
    let dir = opts.out.join("plots");
    std::fs::create_dir_all(&dir).map_err(|source| AnalyzeError::Io { action: "create directory", path: dir.clone(), source })?;
    let bars = report::bars(summary)?;
    let mut ranked: Vec<&plot::Bar> = bars.iter().collect();
    ranked.sort_by(|a, b| b.value.total_cmp(&a.value));
    let shown: Vec<String> = ranked.iter().take(MAX_LINES).map(|b| b.name.clone()).collect();
    let note = if bars.len() > MAX_LINES { format!(" (best {MAX_LINES} of {} by IQM)", bars.len()) } else { String::new() };
    let what = match (&opts.compare, &opts.group_by) {
        (Some(k), _) | (None, Some(k)) => format!(" by {k}"),
        _ => String::new(),
    };

    let mut written = Vec::new();
    let title = format!("Learning curves{what}: IQM over runs, 95% bootstrap CI{note}");
    let lines = report::curve_lines(curves, &shown)?;
    let chart = LineChart { title: &title, x_desc: "environment steps", y_desc: "episodic return", legend_low: true };
    written.extend(plot::render(&dir.join(format!("curves{tag}")), &Chart::Lines(chart, &lines))?);

    let title = format!("Performance profile{what}: runs with final return > τ, 95% CI{note}");
    let lines = report::profile_lines(profiles, &shown)?;
    let chart = LineChart { title: &title, x_desc: "final return τ", y_desc: "fraction of runs > τ", legend_low: false };
    written.extend(plot::render(&dir.join(format!("profile{tag}")), &Chart::Lines(chart, &lines))?);

    let title = format!("Final return{what}: IQM over runs, 95% bootstrap CI");
    let bars: Vec<plot::Bar> = bars.into_iter().take(40).collect();
    written.extend(plot::render(&dir.join(format!("final{tag}")), &Chart::Bars(&title, "final return (IQM)", &bars))?);
    Ok(written)
}
