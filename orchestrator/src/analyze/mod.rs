//! `drover analyze`: load a results directory into Polars and summarize per configuration.
//!
//! Functions return `LazyFrame`s; the CLI collects once. Statistics are `Expr` builders (`stats`).

mod load;
mod report;
mod stats;

pub use load::{load_results, Loaded};
pub use report::{render_table, write_tables};
pub use stats::{iqm, per_config, per_run, FINAL_WINDOW};
#[cfg(test)]
mod tests;
