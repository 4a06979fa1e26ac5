//! `drover analyze`: load results directories into Polars, summarize per configuration (or per
//! `--group-by` keys), compare with bootstrap intervals, and write tables and plots.
//!
//! Runs of sequence tasks also get learning curves of their `token_entropy` and `accuracy`
//! columns (any metrics column with `--curves`) and a per-run fit of the entropy-performance law.
//!
//! Functions return `LazyFrame`s; the CLI collects at its edge. Statistics are `Expr` builders
//! (`stats`), except the resampling ones, which are eager and all live in `bootstrap`.
//! Definitions and where they differ from rliable: `docs/analysis.md`.

mod bootstrap;
mod load;
mod pipeline;
mod plot;
mod query;
mod report;
mod stats;

pub use bootstrap::{
    curves, enough_runs, improvement_over, intervals, iqm_of, mean_intervals, median_of, percentile_interval, prob_greater,
    probability_of_improvement, profiles, quantile_sorted, weighted_iqm_sorted, weighted_mean, weighted_median_sorted, Bootstrap, Rng,
    MIN_STRATUM_RUNS,
};
pub use load::{load_results, load_results_with, LeftOut, Loaded, RUN_KEY};
pub use pipeline::{analyze, explain, left_out_lines, Best, Options, Outcome, DEFAULT_CURVES};
pub use plot::{render, Bar, Chart, Line, LineChart, Scatter};
pub use query::{parse_keys, parse_where, parse_where_with_labels, resolve_key};
pub use report::{
    bars, curve_lines, law_scatter, profile_lines, render_law_markdown, render_law_table, render_markdown, render_table, with_improvement, with_intervals,
    write_frame, LAW_STATS,
};
pub use stats::{
    annotate, auc, curve_points, iqm, label_order, law_fits, law_per_run, law_rows, metric_points, optimality_gap, overflow_safe, per_group, per_run, shortfall, with_target, Grouping, ENV_COLUMN,
    FINAL_WINDOW, LAW_ENTROPY, LAW_MIN_POINTS, LAW_REWARD,
};
#[cfg(test)]
mod tests;
