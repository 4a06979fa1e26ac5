//! The whole of `drover analyze` as one library call: load, slice, group, compute, write.
//!
//! This is the edge where the lazy plans are executed: the metrics files are read once, the
//! per-run table and the learning-curve bins are collected once each, the resampling runs on
//! them, and the summary is collected once.

use std::path::PathBuf;

use polars::prelude::*;

use super::bootstrap::{self, Bootstrap};
use super::load::{self, load_results, polars_err};
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
    /// Run directories left out, with the reason.
    pub left_out: Vec<(String, String)>,
    /// Files written.
    pub written: Vec<PathBuf>,
    /// The best group by IQM when comparing.
    pub best: Option<String>,
    /// The metrics columns learning curves were drawn of besides the return.
    pub curves: Vec<String>,
    /// The entropy-performance law per group (mean a, b, R², ceiling over runs with intervals),
    /// when the runs have `token_entropy` and `accuracy`.
    pub law: Option<DataFrame>,
    /// `law` as a text table.
    pub law_table: Option<String>,
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
    /// The `--where` keys that some completed runs lack, with how many lack each.
    missing: Vec<(String, i64)>,
    /// Metrics columns to draw curves of, all present in `metrics`.
    curves: Vec<String>,
    /// Whether `metrics` has the law's two columns.
    law: bool,
}

fn plans(opts: &Options) -> Result<Plans, AnalyzeError> {
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
    let loaded = load_results(&opts.dirs, &extra)?;
    let has = |c: &str| loaded.extra.iter().any(|e| e == c) || load::FIXED_COLUMNS.contains(&c);
    if opts.curves.is_some() {
        if let Some(missing) = asked.iter().find(|c| !has(c)) {
            let known: Vec<&str> = loaded.metric_columns.iter().map(String::as_str).collect();
            return Err(AnalyzeError::Query {
                expr: format!("--curves {}", asked.join(",")),
                reason: format!("no run's metrics have a column `{missing}`; columns: {}", known.join(", ")),
            });
        }
    }
    let curves: Vec<String> = asked.into_iter().filter(|c| has(c)).collect();
    let law = has(stats::LAW_ENTROPY) && has(stats::LAW_REWARD);
    let schema = loaded.runs.clone().collect_schema().map_err(polars_err("reading the runs table's schema"))?;
    let mut runs = loaded.runs.clone();
    let mut missing = Vec::new();
    for filter in &opts.filters {
        runs = runs.filter(query::parse_where(filter, &schema)?);
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
            missing.push((key, nulls));
        }
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
        missing,
        curves,
        law,
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
            reason: format!("no completed run matches (of {}){}", p.completed, missing_note(&p.missing, p.completed)),
        });
    }
    let intervals = bootstrap::intervals(&runs, &opts.bootstrap)?;
    phase("intervals");
    let groups = runs.column("group").and_then(|c| c.n_unique()).map_err(polars_err("counting the groups"))?;
    if let (Some(key), 1) = (&opts.compare, groups) {
        // Nothing to rank: naming the only group "best" would read as a finding.
        tracing::warn!("--compare {key}: all {} runs analyzed have the same value of it; nothing to compare", runs.height());
    }
    let best = if opts.compare.is_some() && groups > 1 { bootstrap::best_by_iqm(&runs)? } else { None };
    let improvement = match &best {
        Some(best) => Some(bootstrap::improvement_over(&runs, best, &opts.bootstrap)?),
        None => None,
    };
    let keys = p.grouping.key_columns();
    let summary = report::with_intervals(stats::per_group(runs.clone().lazy(), &p.grouping), intervals, improvement, &keys);
    let summary = if opts.compare.is_some() {
        summary
            // Ties (CartPole configurations that all reach 500) by name, as `best_by_iqm` breaks
            // them: rank 1 is the best reported, and the ranks do not change from run to run.
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
    let mut summary = if opts.compare.is_some() { summary } else { in_label_order(summary, &p.grouping)? };
    phase("summary collected");

    let points = stats::curve_points(metrics.clone(), runs.clone().lazy(), opts.bins)
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

    let mut metric_curves = Vec::new();
    for name in &p.curves {
        let points = stats::metric_points(metrics.clone(), runs.clone().lazy(), opts.bins, name)
            .collect()
            .map_err(polars_err(format!("binning the `{name}` curves")))?;
        let mut frame = bootstrap::curves(&points, &opts.bootstrap)?;
        written.extend(report::write_frame(&tables, &format!("curves-{}{tag}", file_safe(name)), &mut frame, None)?);
        metric_curves.push((name.clone(), frame));
    }
    phase("metric curves");
    let law = if p.law { Some(law(metrics, &runs, &p.grouping, opts)?) } else { None };
    let law_table = match &law {
        Some(law) => {
            let mut per_run = law.per_run.clone();
            let mut summary = law.summary.clone();
            let markdown = report::render_law_markdown(&summary)?;
            written.extend(report::write_frame(&tables, "entropy_law", &mut per_run, None)?);
            written.extend(report::write_frame(&tables, &format!("entropy_law_summary{tag}"), &mut summary, Some(&markdown))?);
            Some(report::render_law_table(&summary)?)
        }
        None => None,
    };
    phase("entropy law");

    phase("tables written");
    if opts.plots {
        written.extend(draw_plots(opts, &summary, &curves, &profiles, &tag)?);
        written.extend(draw_metric_plots(opts, &summary, &metric_curves, law.as_ref(), &tag)?);
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
        curves: p.curves,
        law: law.map(|l| l.summary),
        law_table,
    })
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
        .join(runs.clone().lazy().select([col("run_id"), col("group")]), [col("run_id")], [col("run_id")], JoinArgs::new(JoinType::Inner))
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

/// At most this many lines per chart; beyond it a chart shows the best groups by IQM.
const MAX_LINES: usize = 10;

/// The groups a chart shows and how its title says so.
struct Shown {
    /// The best `MAX_LINES` groups by IQM of the final return, best first.
    groups: Vec<String>,
    /// " (best 10 of N by IQM)" when groups were left out, else empty.
    note: String,
    /// " by KEY" for `--group-by`/`--compare`, else empty.
    what: String,
}

fn shown_groups(opts: &Options, summary: &DataFrame) -> Result<Shown, AnalyzeError> {
    let bars = report::bars(summary)?;
    let mut ranked: Vec<&plot::Bar> = bars.iter().collect();
    ranked.sort_by(|a, b| b.value.total_cmp(&a.value));
    let groups = ranked.iter().take(MAX_LINES).map(|b| b.name.clone()).collect();
    let note = if bars.len() > MAX_LINES { format!(" (best {MAX_LINES} of {} by IQM)", bars.len()) } else { String::new() };
    let what = match (&opts.compare, &opts.group_by) {
        (Some(k), _) | (None, Some(k)) => format!(" by {k}"),
        _ => String::new(),
    };
    Ok(Shown { groups, note, what })
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
) -> Result<Vec<PathBuf>, AnalyzeError> {
    if metric_curves.is_empty() && law.is_none() {
        return Ok(Vec::new());
    }
    let dir = plot_dir(opts)?;
    let Shown { groups, note, what } = shown_groups(opts, summary)?;
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
        let title = format!("{name}{what}: IQM over runs, 95% bootstrap CI{note}");
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
) -> Result<Vec<PathBuf>, AnalyzeError> {
    let dir = plot_dir(opts)?;
    let bars = report::bars(summary)?;
    let Shown { groups: shown, note, what } = shown_groups(opts, summary)?;

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
