//! Statistics as Polars expressions: per-run scores (final return, AUC, steps to threshold,
//! optimality gap), grouping, per-group aggregates, learning-curve bins of any metric, and the
//! per-run fit of the entropy-performance law. The resampling statistics are in `bootstrap`.

use polars::prelude::*;

use super::load::RUN_KEY;

/// How many of a run's last iterations with finished episodes make its final return.
pub const FINAL_WINDOW: usize = 10;

/// How runs are put together for the statistics.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Grouping {
    /// One group per configuration (`config_id`), named by its label; the default.
    Config,
    /// One group per distinct combination of these runs-table columns (`--group-by`, `--compare`).
    Keys(Vec<String>),
}

impl Grouping {
    /// The columns that a per-group table carries besides the statistics.
    pub fn key_columns(&self) -> Vec<String> {
        match self {
            Grouping::Config => vec!["config_id".into(), "label".into()],
            Grouping::Keys(keys) => keys.clone(),
        }
    }

    /// A file-name-safe tag: empty for `Config`, `-by-<keys>` otherwise.
    pub fn file_tag(&self) -> String {
        match self {
            Grouping::Config => String::new(),
            Grouping::Keys(keys) => {
                let joined = keys.join("+");
                let safe: String =
                    joined.chars().map(|c| if c.is_ascii_alphanumeric() || "._+-".contains(c) { c } else { '_' }).collect();
                format!("-by-{safe}")
            }
        }
    }
}

/// Interquartile mean: the mean of the values left after dropping `k = floor(n/4)` from each end
/// of the sorted values (as `scipy.stats.trim_mean(x, 0.25)` and rliable do). Nulls are ignored.
pub fn iqm(x: Expr) -> Expr {
    let sorted = x.drop_nulls().sort(SortOptions::default());
    let n = sorted.clone().len().cast(DataType::Int64);
    // Integer division of non-negative values: floor.
    let k = n.clone() / lit(4i64);
    sorted.slice(k.clone(), n - k.clone() - k).mean()
}

/// Optimality gap (rliable's `aggregate_optimality_gap`): the mean of `max(target - score, 0)`,
/// how far the runs fall short of `target` on average, where scores above it count as `target`.
/// Runs without a score or a target are left out of the mean (see `shortfall`); none left: null.
pub fn optimality_gap(score: Expr, target: Expr) -> Expr {
    shortfall(target, score).mean()
}

/// `max(target - score, 0)`, null when either is null. A run that never logged a finite return
/// (diverged, no finished episode, an empty metrics file) or has no target is not "solved": a
/// gap of 0 there would be the best score possible, and would pull the group's point estimate
/// below the interval the bootstrap computes over the scored runs only.
pub fn shortfall(target: Expr, score: Expr) -> Expr {
    let short = target - score;
    // A null comparison takes the `otherwise` branch, which keeps the null.
    when(short.clone().lt(lit(0.0))).then(lit(0.0)).otherwise(short)
}

/// Normalized area under the learning curve (in an aggregation context): the trapezoidal
/// integral of `value` over `step` divided by the span of `step`, i.e. the mean return over
/// training, in the units of the return. One point: that point's value.
pub fn auc(step: Expr, value: Expr) -> Expr {
    let x = step.clone().cast(DataType::Float64).sort_by([step.clone()], SortMultipleOptions::default());
    let y = value.sort_by([step.clone()], SortMultipleOptions::default());
    let dx = x.clone() - x.clone().shift(lit(1));
    let area = ((y.clone() + y.clone().shift(lit(1))) * dx / lit(2.0)).sum();
    // The span must not be built from `x`: Polars 0.55 drops the sort under `max`/`min` and its
    // common-subexpression pass then reuses that unsorted node for `x` too (wrong `dx`).
    let span = step.clone().max().cast(DataType::Float64) - step.min().cast(DataType::Float64);
    when(span.clone().gt(lit(0.0))).then(area / span).otherwise(y.first())
}

/// 2^-128: finite returns near `f64::MAX` overflow a sum (1.5e308 twice is inf) though their
/// mean is finite; a statistic that overflows is computed again on the values scaled by this,
/// then scaled back. Scaling by a power of two is exact, so the result is the one the plain sum
/// would have given had it not overflowed, and a value that did not overflow is not touched.
/// `jobs/src/summary.rs` scales `summary.json`'s final return by the same 2^-128.
pub const OVERFLOW_SCALE: f64 = 1.0 / 340_282_366_920_938_463_463_374_607_431_768_211_456.0;

/// `stat(x)`, or where that is not a finite number (an overflow) `stat(x · OVERFLOW_SCALE)`
/// scaled back. For statistics that scale with their input (mean, std, AUC); null stays null.
pub fn overflow_safe(x: Expr, stat: impl Fn(Expr) -> Expr) -> Expr {
    let plain = stat(x.clone());
    when(plain.clone().is_finite()).then(plain).otherwise(stat(x * lit(OVERFLOW_SCALE)) / lit(OVERFLOW_SCALE))
}

/// An iteration counts for returns only if episodes finished in it (its return is NaN otherwise;
/// NaN also compares greater than any number in Polars, so it must never reach a threshold test)
/// and its return is a finite number: one infinite return would make the run's final return,
/// AUC and every mean over its group infinite, and count as reaching any threshold.
pub fn finished_episodes() -> Expr {
    col("episodes")
        .gt(lit(0i64))
        .and(col("episodic_return_mean").is_not_null())
        .and(col("episodic_return_mean").is_finite())
}

/// The runs-table column of the environment: the scope of one success threshold.
pub const ENV_COLUMN: &str = "run.env";

/// `runs` with a `target` column: the return that counts as success for each run. It is
/// `target` (`--target`) when given, else the highest `success_return` among the runs of the
/// run's environment. One bar per environment, because steps to threshold, `reached` and the
/// optimality gap of two groups can only be compared against the same bar; the highest, because
/// a run that clears it clears every lower one, so nothing counts as solved that some run's own
/// setting would not. Runs of different environments keep their own bars (their returns are not
/// on one scale anyway).
pub fn with_target(runs: LazyFrame, target: Option<f64>) -> LazyFrame {
    if let Some(t) = target {
        return runs.with_column(lit(t).cast(DataType::Float64).alias("target"));
    }
    // A runs table read from specs always has the environment; a hand-built one may not.
    let has_env = runs.clone().collect_schema().is_ok_and(|s| s.contains(ENV_COLUMN));
    if !has_env {
        return runs.with_column(col("success_return").cast(DataType::Float64).max().alias("target"));
    }
    let bars = runs.clone().group_by([col(ENV_COLUMN)]).agg([col("success_return").cast(DataType::Float64).max().alias("target")]);
    runs.left_join(bars, col(ENV_COLUMN), col(ENV_COLUMN))
}

/// One row per run: `runs`' columns plus `final_return`, `auc`, `steps_to_threshold` (first
/// `global_step` whose return reaches `target`; null: never), `iterations`, `last_step`,
/// `target` (see `with_target`) and `gap` (`max(target - final_return, 0)`; null without a
/// final return or a target). `metrics` rows belong to the run of the same [`RUN_KEY`].
pub fn per_run(metrics: LazyFrame, runs: LazyFrame, target: Option<f64>) -> LazyFrame {
    let key = || col(RUN_KEY);
    let targets = with_target(runs.clone(), target).select([key(), col("target")]);
    let progress = metrics.clone().group_by([key()]).agg([
        col("iteration").max().alias("iterations"),
        col("global_step").max().alias("last_step"),
    ]);
    let returns = metrics
        .filter(finished_episodes())
        .join(targets.clone(), [key()], [key()], JoinArgs::new(JoinType::Inner))
        .group_by([key()])
        .agg([
            overflow_safe(col("episodic_return_mean"), |r| {
                r.sort_by([col("iteration")], SortMultipleOptions::default()).tail(Some(FINAL_WINDOW)).mean()
            })
            .alias("final_return"),
            overflow_safe(col("episodic_return_mean"), |r| auc(col("global_step"), r)).alias("auc"),
            col("global_step")
                .filter(col("episodic_return_mean").gt_eq(col("target")))
                .min()
                .alias("steps_to_threshold"),
        ]);
    runs.left_join(returns, key(), key())
        .left_join(progress, key(), key())
        .left_join(targets, key(), key())
        .with_column(shortfall(col("target"), col("final_return")).alias("gap"))
        .sort(["label", "seed"], SortMultipleOptions::default())
}

/// Orders configuration labels (`run.lr=0.00025,run.num_envs=16`) by their values: labels are
/// compared part by part (`key=value`, split at top-level commas), values that are both numbers
/// as numbers, anything else as text. Sorting the text alone puts `num_envs=16` before `8` and
/// `lr=0.001` before `0.00025`. A group name `LABEL [KEY=VALUE, ...]` (configurations that share
/// a label) sorts by the label's parts, then by those in brackets. Returns the row indices in
/// that order.
pub fn label_order(labels: &[String]) -> Vec<usize> {
    fn parts(label: &str) -> Vec<(&str, &str)> {
        let (base, suffix) = match label.strip_suffix(']').and_then(|l| l.split_once(" [")) {
            Some((base, suffix)) => (base, suffix),
            None => (label, ""),
        };
        let split = super::query::split_list;
        split(base)
            .into_iter()
            .chain(split(suffix).into_iter().filter(|p| !p.is_empty()))
            .map(|part| part.split_once('=').unwrap_or((part, "")))
            .collect()
    }
    let compare = |a: &str, b: &str| match (a.parse::<f64>(), b.parse::<f64>()) {
        (Ok(x), Ok(y)) => x.total_cmp(&y),
        _ => a.cmp(b),
    };
    let keys: Vec<Vec<(&str, &str)>> = labels.iter().map(|l| parts(l)).collect();
    let mut order: Vec<usize> = (0..labels.len()).collect();
    order.sort_by(|&i, &j| {
        keys[i]
            .iter()
            .zip(&keys[j])
            .map(|((ka, va), (kb, vb))| ka.cmp(kb).then_with(|| compare(va, vb)))
            .find(|o| o.is_ne())
            .unwrap_or_else(|| keys[i].len().cmp(&keys[j].len()))
            .then_with(|| labels[i].cmp(&labels[j]))
    });
    order
}

/// `key=value` text of one column (null as `null`), for group names and strata.
fn key_text(name: &str) -> Expr {
    lit(format!("{name}=")) + col(name).cast(DataType::String).fill_null(lit("null"))
}

fn join_text(parts: Vec<Expr>, sep: &str) -> Expr {
    parts.into_iter().reduce(|a, b| a + lit(sep.to_string()) + b).unwrap_or(lit(""))
}

/// Adds the `group` (the name a table row and a plot line get) and `stratum` columns to the
/// per-run frame.
///
/// A stratum is what rliable calls a task: runs are resampled within their stratum only. For
/// `Config` it is the configuration; for `Keys` it is the combination of every other
/// hyperparameter, so comparing `params.lr` across environments resamples within each environment
/// and the probability of improvement compares like with like. When the plugin itself is a key
/// (`--compare algo`), its `params.*` belong to the algorithm compared, not to the stratum: each
/// plugin has its own parameters, so they could never match across groups.
pub fn annotate(per_run: LazyFrame, grouping: &Grouping, hyperparameters: &[String]) -> LazyFrame {
    let (group, stratum) = match grouping {
        Grouping::Config => (col("label"), col("config_id")),
        Grouping::Keys(keys) => {
            let group = join_text(keys.iter().map(|k| key_text(k)).collect(), ", ");
            let by_plugin = keys.iter().any(|k| k == "run.plugin");
            let rest: Vec<Expr> = hyperparameters
                .iter()
                .filter(|h| !(keys.contains(h) || (by_plugin && h.starts_with("params."))))
                .map(|h| key_text(h))
                .collect();
            let stratum = if rest.is_empty() { lit("all") } else { join_text(rest, "|") };
            (group, stratum)
        }
    };
    per_run.with_columns([group.alias("group"), stratum.alias("stratum")])
}

/// One row per group (see `annotate`): its key columns, `runs`, `scored` (the runs with a final
/// return: the others count in no score), `strata`, and over the runs'
/// final returns `final_return_{mean,std,median,iqm}` (std unbiased), `optimality_gap`,
/// `auc_mean`, `steps_to_threshold_mean` over the runs that reached the threshold, `reached`.
pub fn per_group(annotated: LazyFrame, grouping: &Grouping) -> LazyFrame {
    let mut aggs: Vec<Expr> = grouping.key_columns().iter().map(|k| col(k.as_str()).first()).collect();
    aggs.extend([
        col("run_id").count().cast(DataType::Int64).alias("runs"),
        col("final_return").is_not_null().sum().cast(DataType::Int64).alias("scored"),
        col("stratum").n_unique().cast(DataType::Int64).alias("strata"),
        col("final_return").mean().alias("final_return_mean"),
        overflow_safe(col("final_return"), |x| x.std(1)).alias("final_return_std"),
        col("final_return").median().alias("final_return_median"),
        iqm(col("final_return")).alias("final_return_iqm"),
        optimality_gap(col("final_return"), col("target")).alias("optimality_gap"),
        col("auc").mean().alias("auc_mean"),
        col("steps_to_threshold").cast(DataType::Float64).mean().alias("steps_to_threshold_mean"),
        col("steps_to_threshold").is_not_null().sum().cast(DataType::Int64).alias("reached"),
        col("target").first().alias("target"),
    ]);
    annotated.group_by([col("group")]).agg(aggs).sort(group_order(grouping), SortMultipleOptions::default().with_nulls_last(true))
}

/// The columns a per-group table is sorted by: the grouping keys with their own types, then the
/// group name. Sorting by the name alone puts `num_envs=128` before `num_envs=16` and `8`.
pub(crate) fn group_order(grouping: &Grouping) -> Vec<String> {
    match grouping {
        Grouping::Config => vec!["group".into()],
        Grouping::Keys(keys) => keys.iter().cloned().chain(["group".to_string()]).collect(),
    }
}

/// Per run and learning-curve bin: the run's mean return over the iterations of that bin. The
/// steps axis (the largest `global_step` of all runs) is cut into `bins` equal bins, so runs of
/// different lengths share one axis. Columns: `group, stratum, run_id, bin, sweep, step, value` where
/// `step` is the mean `global_step` of the bin's iterations. `annotated` (the per-run table) and
/// `metrics` share [`RUN_KEY`].
pub fn curve_points(metrics: LazyFrame, annotated: LazyFrame, bins: u32) -> LazyFrame {
    binned(metrics.filter(finished_episodes()), annotated, bins, col("episodic_return_mean"))
}

/// `curve_points` for any numeric metrics column (`token_entropy`, `accuracy`, `entropy`, ...):
/// per run and bin, the mean of the column over the bin's iterations where it is a finite number
/// (a diverging `grad_norm` of inf would otherwise make its bin's mean and band infinite). Runs
/// whose metrics lack the column (null there) have no points.
pub fn metric_points(metrics: LazyFrame, annotated: LazyFrame, bins: u32, column: &str) -> LazyFrame {
    let value = col(column).cast(DataType::Float64);
    binned(metrics.filter(value.clone().is_not_null().and(value.clone().is_finite())), annotated, bins, value)
}

fn binned(rows: LazyFrame, annotated: LazyFrame, bins: u32, value: Expr) -> LazyFrame {
    let bins = i64::from(bins.max(1));
    let key = || col(RUN_KEY);
    let raw = col("global_step") * lit(bins) / col("global_step").max();
    // The rows are binned by run key alone and the run's names joined onto the bins: joined onto
    // every row first, four texts a row (group, stratum, run id, sweep) were copied and hashed
    // for runs × iterations rows, the largest memory of an analysis. The inner join with the keys
    // alone keeps the rows of `annotated`'s runs (one environment's, say), whose largest step
    // sets the axis. The bin is computed in the `group_by` itself: Polars splits a grouping by
    // one or two plain columns into partial sums over parts of the rows, which adds a bin's
    // values in another order than one pass over its rows (and changed a band's last bits).
    let bin = when(raw.clone().gt_eq(lit(bins))).then(lit(bins - 1)).otherwise(raw).alias("bin");
    rows.join(annotated.clone().select([key()]), [key()], [key()], JoinArgs::new(JoinType::Inner))
        .group_by([key(), bin])
        .agg([col("global_step").cast(DataType::Float64).mean().alias("step"), value.mean().alias("value")])
        .join(
            // `sweep` names the generators of the bands (`bootstrap::stream_names`).
            annotated.select([key(), col("group"), col("stratum"), col("run_id"), col("sweep")]),
            [key()],
            [key()],
            JoinArgs::new(JoinType::Inner),
        )
        .select([col("group"), col("stratum"), col("run_id"), col("bin"), col("sweep"), col("step"), col("value")])
        .sort(["group", "bin", "run_id"], SortMultipleOptions::default())
}

/// Metrics column of the policy entropy the entropy-performance law is fitted on (H, nats).
pub const LAW_ENTROPY: &str = "token_entropy";
/// Metrics column of the performance the law is fitted on (R: mean verifier reward).
pub const LAW_REWARD: &str = "accuracy";
/// Fewest points a fit of the law is made from: two determine a line exactly (R² = 1 whatever
/// the data), so a fit is only evidence from three on.
pub const LAW_MIN_POINTS: i64 = 3;

/// The rows of the law's points: `metrics` rows where both `entropy` and `reward` are present
/// (not null), with [`RUN_KEY`], `iteration`, and `h` and `r` as Float64 columns. A run whose
/// metrics lack either column has no rows here and no fit.
pub fn law_rows(metrics: LazyFrame, entropy: &str, reward: &str) -> LazyFrame {
    let (h, r) = (col(entropy).cast(DataType::Float64), col(reward).cast(DataType::Float64));
    metrics
        .filter(h.clone().is_not_null().and(r.clone().is_not_null()))
        .select([col(RUN_KEY), col("iteration"), h.alias("h"), r.alias("r")])
}

/// The entropy-performance law `R = −a·exp(H) + b` (Cui et al. 2025, "The Entropy Mechanism of
/// Reinforcement Learning for Reasoning Language Models") fitted per run by ordinary least
/// squares of R on x = e^H, over `law_rows`' points where H and R are finite numbers.
///
/// Columns: [`RUN_KEY`], `points` (the finite points used), `a, b, r2, ceiling` (= R(H=0) = b − a)
/// and `reason`. With fewer than `LAW_MIN_POINTS` points or a constant H (no slope can be
/// fitted) `a, b, r2, ceiling` are null and `reason` says why; with a constant R the fit is flat
/// (a = 0, b = R) and only `r2` is null (0/0). Otherwise `reason` is null.
pub fn law_fits(rows: LazyFrame) -> LazyFrame {
    let ok = col("h").is_finite().and(col("r").is_finite()).and(lit(std::f64::consts::E).pow(col("h")).is_finite());
    let x = lit(std::f64::consts::E).pow(col("h")).filter(ok.clone());
    let y = col("r").filter(ok.clone());
    // Centred sums (two passes) rather than Σx² − n·x̄²: the raw form cancels catastrophically
    // when H barely moves, which is exactly the collapsed-entropy regime this law is about.
    let dx = x.clone() - x.clone().mean();
    let dy = y.clone() - y.clone().mean();
    let sums = rows.group_by([col(RUN_KEY)]).agg([
        ok.sum().cast(DataType::Int64).alias("points"),
        x.clone().mean().alias("x_mean"),
        y.clone().mean().alias("y_mean"),
        (dx.clone() * dx.clone()).sum().alias("sxx"),
        (dx * dy.clone()).sum().alias("sxy"),
        (dy.clone() * dy).sum().alias("syy"),
        // Constancy is tested exactly on the values: a mean of equal values can differ from them
        // in the last bit, which would leave a tiny non-zero sxx and a meaningless slope.
        x.clone().max().eq(x.min()).alias("x_constant"),
        y.clone().max().eq(y.min()).alias("y_constant"),
    ]);
    let too_few = col("points").lt(lit(LAW_MIN_POINTS));
    let fitted = too_few.clone().not().and(col("x_constant").not());
    let slope = col("sxy") / col("sxx");
    let null = || lit(NULL).cast(DataType::Float64);
    // A flat fit (constant R) has slope ±0; `0 − slope` can come out as −0.0 (written `-0.0` in
    // the tables), so a zero is written as +0.0.
    let minus_slope = lit(0.0) - slope.clone();
    let a = when(fitted.clone()).then(when(minus_slope.clone().eq(lit(0.0))).then(lit(0.0)).otherwise(minus_slope)).otherwise(null());
    let b = when(fitted.clone()).then(col("y_mean") - slope * col("x_mean")).otherwise(null());
    let r2 = when(fitted.and(col("y_constant").not()))
        .then(col("sxy") * col("sxy") / (col("sxx") * col("syy")))
        .otherwise(null());
    let reason = when(too_few)
        .then(lit(format!("fewer than {LAW_MIN_POINTS} points with finite entropy and reward")))
        .when(col("x_constant"))
        .then(lit("constant entropy: no slope to fit"))
        .when(col("y_constant"))
        .then(lit("constant reward: R² undefined"))
        .otherwise(lit(NULL).cast(DataType::String));
    sums.select([
        col(RUN_KEY),
        col("points"),
        a.alias("a"),
        b.alias("b"),
        r2.alias("r2"),
        reason.alias("reason"),
    ])
    .with_column((col("b") - col("a")).alias("ceiling"))
    .select([col(RUN_KEY), col("points"), col("a"), col("b"), col("r2"), col("ceiling"), col("reason")])
}

/// One row per run with a law fit: the run's identity (`run_id, config_id, sweep, label`, the
/// grouping's `keys` not among them, `group, stratum, seed`) then `law_fits`' columns after the
/// run key.
pub fn law_per_run(annotated: LazyFrame, fits: LazyFrame, keys: &[String]) -> LazyFrame {
    const FIXED: [&str; 4] = ["run_id", "config_id", "sweep", "label"];
    let mut identity: Vec<Expr> = FIXED.map(col).to_vec();
    // A key that is already an identity column (`--compare sweep`, `--group-by seed`) appears
    // once: a second projection of the same name is an error in Polars.
    let own = ["group", "stratum", "seed"];
    identity.extend(keys.iter().filter(|k| !FIXED.contains(&k.as_str()) && !own.contains(&k.as_str()) && k.as_str() != RUN_KEY).map(|k| col(k.as_str())));
    identity.extend(own.map(col));
    identity.push(col(RUN_KEY));
    annotated
        .select(identity)
        .join(fits, [col(RUN_KEY)], [col(RUN_KEY)], JoinArgs::new(JoinType::Inner))
        .drop(cols([RUN_KEY]))
        .sort(["group", "label", "seed", "run_id"], SortMultipleOptions::default())
}
