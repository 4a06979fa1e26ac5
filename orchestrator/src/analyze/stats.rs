//! Statistics as Polars expressions: final return per run, steps to threshold, per-config aggregates.

use polars::prelude::*;

/// How many of a run's last iterations with finished episodes make its final return.
pub const FINAL_WINDOW: usize = 10;

/// Interquartile mean: the mean of the values left after dropping `k = floor(n/4)` from each end
/// of the sorted values (as `scipy.stats.trim_mean(x, 0.25)` and rliable do). Nulls are ignored.
pub fn iqm(x: Expr) -> Expr {
    let sorted = x.drop_nulls().sort(SortOptions::default());
    let n = sorted.clone().len().cast(DataType::Int64);
    // Integer division of non-negative values: floor.
    let k = n.clone() / lit(4i64);
    sorted.slice(k.clone(), n - k.clone() - k).mean()
}

/// An iteration counts for returns only if episodes finished in it (its return is NaN otherwise;
/// NaN also compares greater than any number in Polars, so it must never reach a threshold test).
fn finished_episodes() -> Expr {
    col("episodes")
        .gt(lit(0i64))
        .and(col("episodic_return_mean").is_not_null())
        .and(col("episodic_return_mean").is_not_nan())
}

/// One row per run: `runs`' columns plus `final_return`, `steps_to_threshold` (null: never
/// reached), `iterations` and `last_step`.
pub fn per_run(metrics: LazyFrame, runs: LazyFrame) -> LazyFrame {
    let progress = metrics.clone().group_by([col("run_id")]).agg([
        col("iteration").max().alias("iterations"),
        col("global_step").max().alias("last_step"),
    ]);
    let returns = metrics
        .filter(finished_episodes())
        .join(
            runs.clone().select([col("run_id"), col("success_return")]),
            [col("run_id")],
            [col("run_id")],
            JoinArgs::new(JoinType::Inner),
        )
        .group_by([col("run_id")])
        .agg([
            col("episodic_return_mean")
                .sort_by([col("iteration")], SortMultipleOptions::default())
                .tail(Some(FINAL_WINDOW))
                .mean()
                .alias("final_return"),
            col("global_step")
                .filter(col("episodic_return_mean").gt_eq(col("success_return")))
                .min()
                .alias("steps_to_threshold"),
        ]);
    runs.left_join(returns, col("run_id"), col("run_id"))
        .left_join(progress, col("run_id"), col("run_id"))
        .sort(["label", "seed"], SortMultipleOptions::default())
}

/// One row per configuration (`config_id`, `label`): seeds, mean/std (unbiased)/IQM of the final
/// return, mean steps to threshold over the seeds that reached it, and how many did.
pub fn per_config(per_run: LazyFrame) -> LazyFrame {
    per_run
        .group_by([col("config_id"), col("label")])
        .agg([
            col("run_id").count().cast(DataType::Int64).alias("seeds"),
            col("final_return").mean().alias("final_return_mean"),
            col("final_return").std(1).alias("final_return_std"),
            iqm(col("final_return")).alias("final_return_iqm"),
            col("steps_to_threshold").cast(DataType::Float64).mean().alias("steps_to_threshold_mean"),
            col("steps_to_threshold").is_not_null().sum().cast(DataType::Int64).alias("seeds_reached"),
            col("success_return").first().alias("success_return"),
        ])
        .sort(["label", "config_id"], SortMultipleOptions::default())
}
