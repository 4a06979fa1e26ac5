//! `drover analyze`: load results directories into Polars, summarize per configuration (or per
//! `--group-by` keys), compare with bootstrap intervals, and write tables and plots.
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
    best_by_iqm, curves, improvement_over, intervals, iqm_of, median_of, percentile_interval, prob_greater, probability_of_improvement,
    profiles, quantile_sorted, Bootstrap, Rng,
};
pub use load::{load_results, Loaded};
pub use pipeline::{analyze, explain, Options, Outcome};
pub use plot::{render, Bar, Chart, Line, LineChart};
pub use query::{parse_keys, parse_where, resolve_key};
pub use report::{bars, curve_lines, profile_lines, render_markdown, render_table, with_intervals, write_frame};
pub use stats::{annotate, auc, curve_points, iqm, optimality_gap, per_group, per_run, Grouping, FINAL_WINDOW};
#[cfg(test)]
mod tests;
