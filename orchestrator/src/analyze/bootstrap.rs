//! Stratified bootstrap confidence intervals, probability of improvement and performance
//! profiles, after rliable (Agarwal et al., 2021, "Deep RL at the Edge of the Statistical Precipice").
//!
//! This is the one eager module of the analysis: resampling needs the runs' scores in memory.
//! Its inputs are frames collected at the CLI edge; its outputs are frames joined back lazily.
//! Every random draw comes from a generator seeded by (`Bootstrap::seed`, the group's name, the
//! statistic), so results are reproducible and a group's interval does not change when other
//! groups are filtered out or added, nor when other results directories are analyzed alongside
//! (the name without the `<sweep>:` prefix they add, `stream_names`).

use std::collections::BTreeMap;

use polars::prelude::*;

use super::load::polars_err;
use super::stats::OVERFLOW_SCALE;
use crate::error::AnalyzeError;

/// Settings of the resampling.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Bootstrap {
    /// Resamples for the aggregate intervals and the probability of improvement.
    pub reps: usize,
    /// Resamples for each point of a learning curve and a performance profile (bands only).
    pub band_reps: usize,
    /// Seed of every generator.
    pub seed: u64,
    /// Coverage of the intervals (0.95: 95%).
    pub confidence: f64,
}

impl Default for Bootstrap {
    fn default() -> Self {
        Bootstrap { reps: 5000, band_reps: 1000, seed: 0, confidence: 0.95 }
    }
}

/// SplitMix64 (Steele, Lea and Flood 2014): tiny, fast, and fixed forever, so a seed gives the
/// same intervals in every version of drover (a library generator may change its stream).
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed`, the group name `name` and the statistic `purpose`.
    pub fn new(seed: u64, name: &str, purpose: &str) -> Self {
        // FNV-1a over the name and purpose: stable across runs and platforms.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in name.bytes().chain([0xff]).chain(purpose.bytes()) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        Rng(seed ^ h)
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (Lemire's multiply-shift; the bias is below 2^-54 for any n here).
    pub fn below(&mut self, n: usize) -> usize {
        ((u128::from(self.next_u64()) * n as u128) >> 64) as usize
    }
}

/// `f` over `items` on all cores (scoped threads over contiguous chunks), results in order.
fn par_map<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(items.len().max(1));
    let chunk = items.len().div_ceil(threads).max(1);
    std::thread::scope(|scope| {
        let handles: Vec<_> = items.chunks(chunk).map(|part| scope.spawn(|| part.iter().map(&f).collect::<Vec<R>>())).collect();
        // A panic in a worker is a bug here; resume it on this thread rather than hide it.
        handles.into_iter().flat_map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p))).collect()
    })
}

/// IQM of `values` (sorted in place): the mean after dropping `floor(n/4)` values from each end.
pub fn iqm_of(values: &mut [f64]) -> f64 {
    values.sort_unstable_by(f64::total_cmp);
    iqm_sorted(values)
}

/// `iqm_of` of values already in ascending order.
fn iqm_sorted(sorted: &[f64]) -> f64 {
    let k = sorted.len() / 4;
    mean_of(&sorted[k..sorted.len() - k])
}

/// Mean of `values` (NaN when empty).
pub fn mean_of(values: &[f64]) -> f64 {
    values.iter().sum::<f64>() / values.len() as f64
}

/// Median of `values` (sorted in place; the mean of the two middle values for even n).
pub fn median_of(values: &mut [f64]) -> f64 {
    values.sort_unstable_by(f64::total_cmp);
    median_sorted(values)
}

/// `median_of` of values already in ascending order.
fn median_sorted(sorted: &[f64]) -> f64 {
    let n = sorted.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 { sorted[n / 2] } else { (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0 }
}

/// Weight of each run of `strata` (laid end to end in map order, as `strata_indices` lays them)
/// in its group's statistics: every stratum weighs the same, so a run of a stratum of n runs
/// weighs m/n, m being the largest stratum's count. A group's runs are unbalanced across its
/// strata whenever a run failed, diverged, or was sliced away, and pooled statistics would then
/// rank groups by which strata their runs come from (one failed run of a high stratum can
/// reverse a ranking both strata agree on). rliable's runs × tasks matrix is rectangular, so
/// its aggregates weigh tasks equally; these weights do the same. Scaled by m, they are exactly
/// 1.0 when every stratum holds as many runs, so the weighted statistics below are then the
/// plain ones bit for bit.
pub(super) fn run_weights<T>(strata: &BTreeMap<String, Vec<T>>) -> Vec<f64> {
    let m = strata.values().map(Vec::len).max().unwrap_or(0) as f64;
    strata.values().flat_map(|s| std::iter::repeat_n(m / s.len() as f64, s.len())).collect()
}

/// `values` in ascending order (`total_cmp`) with their `weights` alongside.
pub(super) fn sorted_with_weights(values: &[f64], weights: &[f64]) -> (Vec<f64>, Vec<f64>) {
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_unstable_by(|&a, &b| values[a].total_cmp(&values[b]));
    (order.iter().map(|&i| values[i]).collect(), order.iter().map(|&i| weights[i]).collect())
}

/// `out[i]` = the weight of `weights[i..]` (one more entry, 0, at the end). Summed from the
/// end: with weights all 1 every entry is an exact count, so a fraction of them is the plain
/// count over n, bit for bit.
pub(super) fn suffix_sums(weights: &[f64], out: &mut Vec<f64>) {
    out.clear();
    out.resize(weights.len() + 1, 0.0);
    for i in (0..weights.len()).rev() {
        out[i] = out[i + 1] + weights[i];
    }
}

/// Whether every stratum of `strata` holds as many runs (the weights of `run_weights` are all 1).
pub(super) fn balanced<T>(strata: &BTreeMap<String, Vec<T>>) -> bool {
    strata.values().map(Vec::len).collect::<std::collections::BTreeSet<_>>().len() <= 1
}

/// Weighted mean Σwx/Σw; with weights all 1 exactly `mean_of` (the same sum in the same order).
/// Finite values near `f64::MAX` whose sum overflows are summed again scaled by
/// `stats::OVERFLOW_SCALE` (exact), so their mean is the finite number it is.
pub fn weighted_mean(values: &[f64], weights: &[f64]) -> f64 {
    let total: f64 = weights.iter().sum();
    let mean = values.iter().zip(weights).map(|(x, w)| x * w).sum::<f64>() / total;
    if mean.is_finite() {
        return mean;
    }
    values.iter().zip(weights).map(|(x, w)| x * OVERFLOW_SCALE * w).sum::<f64>() / total / OVERFLOW_SCALE
}

/// Weighted IQM of values in ascending order: the weighted mean after cutting the fraction
/// floor(n/4)/n of the total weight from each end, the runs at the two boundaries cut in part.
/// With weights all 1 that cuts exactly floor(n/4) whole runs, and the sums are `iqm_sorted`'s
/// (kept runs weigh exactly 1, cut ones are skipped, not added as 0), so the result is its bit
/// for bit: `scipy.stats.trim_mean(x, 0.25)`.
pub fn weighted_iqm_sorted(sorted: &[f64], weights: &[f64]) -> f64 {
    let n = sorted.len();
    let total: f64 = weights.iter().sum();
    // `k·total/n`, not `total·(k/n)`: exact (k) when the weights are all 1.
    let cut = (n / 4) as f64 * total / n as f64;
    let (from, to) = (cut, total - cut);
    // Each run's weight left inside [from, to] of the cumulative weight.
    let kept = || {
        let mut before = 0.0;
        sorted.iter().zip(weights).filter_map(move |(&x, &w)| {
            let part = (before + w).min(to) - f64::max(before, from);
            before += w;
            (part > 0.0).then_some((x, part))
        })
    };
    let weight: f64 = kept().map(|(_, part)| part).sum();
    let iqm = kept().map(|(x, part)| x * part).sum::<f64>() / weight;
    if iqm.is_finite() {
        return iqm;
    }
    // Overflow of finite values (see `weighted_mean`).
    kept().map(|(x, part)| x * OVERFLOW_SCALE * part).sum::<f64>() / weight / OVERFLOW_SCALE
}

/// Weighted median of values in ascending order: the value at which the cumulative weight
/// passes half the total, the mean of two neighbours when a run's weight ends exactly there.
/// With weights all 1 that is `median_sorted` (the middle value, or the mean of the two
/// middle ones for even n).
pub fn weighted_median_sorted(sorted: &[f64], weights: &[f64]) -> f64 {
    let half = weights.iter().sum::<f64>() / 2.0;
    let mut before = 0.0;
    for (i, (&x, &w)) in sorted.iter().zip(weights).enumerate() {
        let after = before + w;
        if after > half {
            return x;
        }
        if after == half && i + 1 < sorted.len() {
            let middle = (x + sorted[i + 1]) / 2.0;
            // Two finite values near `f64::MAX` overflow their sum, not their halves'.
            return if middle.is_finite() { middle } else { x / 2.0 + sorted[i + 1] / 2.0 };
        }
        before = after;
    }
    sorted.last().copied().unwrap_or(f64::NAN)
}

/// Resamples of one fixed set of values put in ascending order by counting, not by sorting.
///
/// Every resample draws from the same n values, so their order is found once (`new`); a
/// resample is then its draws counted per rank and read back in rank order, O(n) where a sort
/// is O(n log n). The learning-curve bands sorted a cell's runs for each of groups × bins ×
/// `band_reps` resamples, and those sorts were half of `drover analyze`'s time (3,000 runs).
/// The output is what `sort_unstable_by(f64::total_cmp)` gives, bit for bit: values equal under
/// `total_cmp` are the same bits, so their order among themselves cannot show.
pub(super) struct RankSort {
    /// The values in ascending order.
    sorted: Vec<f64>,
    /// For each value (by its index), its place in `sorted`.
    rank: Vec<usize>,
    /// Draws per place of the current resample (all zero between calls).
    counts: Vec<u32>,
    /// The weight of the value at each place (`run_weights`; all 1 unless given).
    weight: Vec<f64>,
}

impl RankSort {
    pub(super) fn new(values: &[f64]) -> Self {
        let mut order: Vec<usize> = (0..values.len()).collect();
        order.sort_unstable_by(|&a, &b| values[a].total_cmp(&values[b]));
        let mut rank = vec![0; values.len()];
        for (place, &i) in order.iter().enumerate() {
            rank[i] = place;
        }
        RankSort { sorted: order.iter().map(|&i| values[i]).collect(), rank, counts: vec![0; values.len()], weight: vec![1.0; values.len()] }
    }

    /// `new` for values with weights (`weights[i]` of `values[i]`), read back by `weights`.
    pub(super) fn weighted(values: &[f64], weights: &[f64]) -> Self {
        let mut ranks = RankSort::new(values);
        for (i, &w) in weights.iter().enumerate() {
            ranks.weight[ranks.rank[i]] = w;
        }
        ranks
    }

    /// The values at the indices `idx` (repeats included) into `out`, in ascending order, and
    /// the weight of each into `weights`.
    pub(super) fn sorted_sample_weighted(&mut self, idx: &[usize], out: &mut Vec<f64>, weights: &mut Vec<f64>) {
        for &i in idx {
            self.counts[self.rank[i]] += 1;
        }
        self.read_counts(out, weights);
    }

    /// One stratified resample of `strata` (indices into the values), drawn as
    /// `resample_indices` draws it, into `out` in ascending order (and each value's weight
    /// into `weights`): the same numbers from `rng` in the same order, so the same resample,
    /// without the list of indices in between.
    pub(super) fn resample_sorted(&mut self, strata: &[Vec<usize>], rng: &mut Rng, out: &mut Vec<f64>, weights: &mut Vec<f64>) {
        for stratum in strata {
            for _ in 0..stratum.len() {
                self.counts[self.rank[stratum[rng.below(stratum.len())]]] += 1;
            }
        }
        self.read_counts(out, weights);
    }

    /// The counted values into `out` in ascending order, their weights into `weights`, and
    /// the counts back to zero.
    fn read_counts(&mut self, out: &mut Vec<f64>, weights: &mut Vec<f64>) {
        out.clear();
        weights.clear();
        for ((&value, &weight), count) in self.sorted.iter().zip(&self.weight).zip(self.counts.iter_mut()) {
            for _ in 0..*count {
                out.push(value);
                weights.push(weight);
            }
            *count = 0;
        }
    }
}

/// The `q`-quantile of sorted values with linear interpolation (NumPy's default `percentile`,
/// which the `arch` package behind rliable's percentile intervals uses).
pub fn quantile_sorted(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let pos = q * (sorted.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

/// The percentile interval of bootstrap estimates (reordered in place) at coverage `confidence`.
pub fn percentile_interval(estimates: &mut [f64], confidence: f64) -> (f64, f64) {
    let tail = (1.0 - confidence) / 2.0;
    (quantile_selected(estimates, tail), quantile_selected(estimates, 1.0 - tail))
}

/// `quantile_sorted` of `values` as they would be sorted, found by selection (linear time) and
/// leaving them reordered. The bands of a 3,000-run sweep take two quantiles of each of 30,000
/// cells' 1,000 estimates, and sorting them all cost an eighth of the curves' time. The two
/// neighbouring order statistics are the very values a sort would put there, so the result is
/// `quantile_sorted`'s, bit for bit.
pub(super) fn quantile_selected(values: &mut [f64], q: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let pos = q * (values.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    let (_, &mut low, above) = values.select_nth_unstable_by(lo, f64::total_cmp);
    // The next order statistic is the least of those above the selected one.
    let high = if hi > lo { above.iter().copied().reduce(|a, b| if b.total_cmp(&a).is_lt() { b } else { a }).unwrap_or(low) } else { low };
    low + (high - low) * (pos - lo as f64)
}

/// For strata laid end to end (in map order), the indices of each stratum's items.
pub(super) fn strata_indices<T>(strata: &BTreeMap<String, Vec<T>>) -> Vec<Vec<usize>> {
    let mut offset = 0;
    strata
        .values()
        .map(|s| {
            let v = (offset..offset + s.len()).collect();
            offset += s.len();
            v
        })
        .collect()
}

/// Fewest runs every stratum needs for a bootstrap interval (`drover analyze` shows none below).
///
/// With n runs in a stratum, the chance that a resample repeats its lowest run n times is
/// n^-n: 1/4 for two runs, 1/27 for three, both above the 2.5% tail, so the 95% percentile
/// interval of a mean or IQM is then exactly the range of the runs (for P(improvement) with
/// two runs a side, [1, 1] whenever the best's runs both beat the other's). The range of three
/// runs covers the median of their distribution only 75% of the time, and the mean of n
/// resampled runs has only (n−1)/n of the variance of the mean of n new runs, so such an
/// interval reads as far more certain than it is. From four runs on (1/256) the tails come from
/// mixed resamples.
pub const MIN_STRATUM_RUNS: usize = 4;

/// Whether strata of these sizes get an interval: there is one, and each holds at least
/// `MIN_STRATUM_RUNS` runs (one small stratum contributes almost no spread, whatever the rest).
pub fn enough_runs(sizes: impl IntoIterator<Item = usize>) -> bool {
    let mut any = false;
    for n in sizes {
        if n < MIN_STRATUM_RUNS {
            return false;
        }
        any = true;
    }
    any
}

/// Appends to `out` one stratified resample of `strata` (indices into each stratum, drawn with
/// replacement, as many as the stratum holds): rliable's `StratifiedBootstrap` over runs.
pub(super) fn resample_indices(strata: &[Vec<usize>], rng: &mut Rng, out: &mut Vec<usize>) {
    out.clear();
    for stratum in strata {
        for _ in 0..stratum.len() {
            out.push(stratum[rng.below(stratum.len())]);
        }
    }
}

/// P(X > Y) for two samples, ties counting one half: the Mann-Whitney U statistic over `n·m`
/// (rliable's per-task `probability_of_improvement`; equal samples give exactly 0.5).
pub fn prob_greater(x: &[f64], y: &[f64]) -> f64 {
    if x.iter().chain(y).any(|v| v.is_nan()) {
        return prob_greater_pairs(x, y);
    }
    // Counting against the sorted `y` instead of visiting every pair: `--compare` over groups
    // of hundreds of runs calls this once per resample (5000 times), and n·m comparisons each
    // (600 runs a side: 360,000) made it the slowest part of `drover analyze`. The count of
    // halves is an integer, so the result is bit for bit the pairwise sum's.
    let mut sorted = y.to_vec();
    sorted.sort_unstable_by(f64::total_cmp);
    let mut halves: u64 = 0;
    for &a in x {
        let below = sorted.partition_point(|&b| b < a);
        let not_above = below + sorted[below..].partition_point(|&b| b <= a);
        halves += 2 * below as u64 + (not_above - below) as u64;
    }
    halves as f64 / 2.0 / (x.len() * y.len()) as f64
}

/// `prob_greater` pair by pair: the definition, kept for samples with NaN (which compare
/// neither greater nor equal, so they cannot be sorted into place).
fn prob_greater_pairs(x: &[f64], y: &[f64]) -> f64 {
    let mut u = 0.0;
    for &a in x {
        for &b in y {
            u += if a > b {
                1.0
            } else if a == b {
                0.5
            } else {
                0.0
            };
        }
    }
    u / (x.len() * y.len()) as f64
}

/// Probability of improvement of X over Y: `prob_greater` per stratum, averaged over the strata
/// (`pairs` holds each stratum's X and Y scores).
pub fn probability_of_improvement(pairs: &[(Vec<f64>, Vec<f64>)]) -> f64 {
    pairs.iter().map(|(x, y)| prob_greater(x, y)).sum::<f64>() / pairs.len() as f64
}

/// Runs of one group, by stratum: (final return, gap, auc) of each run with a final return.
type Strata = BTreeMap<String, Vec<[f64; 3]>>;

fn str_col<'a>(df: &'a DataFrame, name: &str) -> Result<&'a StringChunked, AnalyzeError> {
    df.column(name).and_then(|c| c.str()).map_err(polars_err(format!("reading column `{name}`")))
}

fn f64_col(df: &DataFrame, name: &str) -> Result<Float64Chunked, AnalyzeError> {
    df.column(name)
        .and_then(|c| c.cast(&DataType::Float64))
        .and_then(|c| c.f64().cloned())
        .map_err(polars_err(format!("reading column `{name}`")))
}

/// The name each group's generators are seeded from: its name without the `<sweep>:` prefix
/// that labels get when several sweeps are analyzed together (a row's name starting with its
/// own `sweep` column and a colon). The same runs then draw the same resamples whether their
/// results directory is analyzed alone or beside others. A frame without a `sweep` column (a
/// hand-built one) seeds from the names as they are.
fn stream_names(df: &DataFrame) -> Result<BTreeMap<String, String>, AnalyzeError> {
    let group = str_col(df, "group")?;
    let sweep = match df.column("sweep") {
        Ok(c) => Some(c.cast(&DataType::String).map_err(polars_err("reading column `sweep`"))?),
        Err(_) => None,
    };
    let sweep = sweep.as_ref().map(|c| c.str()).transpose().map_err(polars_err("reading column `sweep`"))?;
    let mut out = BTreeMap::new();
    for i in 0..df.height() {
        let Some(g) = group.get(i) else { continue };
        if out.contains_key(g) {
            continue;
        }
        let bare = sweep.and_then(|s| s.get(i)).and_then(|s| g.strip_prefix(s)).and_then(|rest| rest.strip_prefix(':')).unwrap_or(g);
        out.insert(g.to_string(), bare.to_string());
    }
    Ok(out)
}

/// `stream_names`' name of `group` (itself when the frame had no such row).
fn stream_name<'a>(names: &'a BTreeMap<String, String>, group: &'a str) -> &'a str {
    names.get(group).map_or(group, String::as_str)
}

/// Groups the per-run frame (`group`, `stratum`, `final_return`, `gap`, `auc`) by group and stratum.
fn group_strata(per_run: &DataFrame) -> Result<BTreeMap<String, Strata>, AnalyzeError> {
    let (group, stratum) = (str_col(per_run, "group")?, str_col(per_run, "stratum")?);
    let (score, gap, auc) = (f64_col(per_run, "final_return")?, f64_col(per_run, "gap")?, f64_col(per_run, "auc")?);
    let mut out: BTreeMap<String, Strata> = BTreeMap::new();
    for i in 0..per_run.height() {
        let (Some(g), Some(s), Some(r)) = (group.get(i), stratum.get(i), score.get(i)) else { continue };
        if r.is_nan() {
            continue;
        }
        let row = [r, gap.get(i).unwrap_or(f64::NAN), auc.get(i).unwrap_or(f64::NAN)];
        out.entry(g.to_string()).or_default().entry(s.to_string()).or_default().push(row);
    }
    Ok(out)
}

/// The statistics resampled for the aggregate intervals, in this order: IQM, mean and median
/// of the final return, optimality gap (mean gap), mean AUC.
pub(super) const STATS: [&str; 5] = ["final_return_iqm", "final_return_mean", "final_return_median", "optimality_gap", "auc_mean"];

/// The `STATS` of the rows `all[i]` for each `i` of `idx`, run `i` weighing `weights[i]`
/// (`run_weights`); `ranks` orders their final returns.
fn statistics(all: &[[f64; 3]], weights: &[f64], idx: &[usize], ranks: &mut RankSort, scratch: &mut Scratch) -> [f64; 5] {
    let Scratch { values, w, sorted, sorted_w } = scratch;
    w.clear();
    w.extend(idx.iter().map(|&i| weights[i]));
    // The means sum in draw order, as they did before the sorted copy came from `ranks`.
    let mut mean_of_column = |k: usize| {
        values.clear();
        values.extend(idx.iter().map(|&i| all[i][k]));
        weighted_mean(values, w)
    };
    let (mean, gap, auc) = (mean_of_column(0), mean_of_column(1), mean_of_column(2));
    ranks.sorted_sample_weighted(idx, sorted, sorted_w);
    let (iqm, median) = (weighted_iqm_sorted(sorted, sorted_w), weighted_median_sorted(sorted, sorted_w));
    [iqm, mean, median, gap, auc]
}

/// Buffers `statistics` reuses from one resample to the next.
#[derive(Default)]
struct Scratch {
    values: Vec<f64>,
    w: Vec<f64>,
    sorted: Vec<f64>,
    sorted_w: Vec<f64>,
}

/// Stratified bootstrap intervals per group: columns `group` and `<stat>_lo`, `<stat>_hi` for
/// `final_return_{iqm,mean,median}`, `optimality_gap`, `auc_mean`; null for a group with fewer
/// than `MIN_STRATUM_RUNS` runs in a stratum (see there). Every statistic weighs each stratum of
/// the group equally (`run_weights`), in the point and in every resample alike: the stratified
/// resample keeps each stratum's count, so the weights stay those of the sample.
///
/// Also `<stat>_point`, each statistic's point estimate, and `balanced`, whether the group's
/// strata hold equally many runs. The summary's own (Polars) statistics are the plain ones over
/// the runs, which are the weighted ones exactly when the group is balanced, and are kept there
/// (their summation order, hence their last bits, stay as they were) unless they overflowed;
/// the others take `<stat>_point` (`report::with_intervals`).
pub fn intervals(per_run: &DataFrame, opts: &Bootstrap) -> Result<DataFrame, AnalyzeError> {
    let groups: Vec<(String, Strata)> = group_strata(per_run)?.into_iter().collect();
    let streams = stream_names(per_run)?;
    // Groups are independent (each has its own generator): computed in parallel, the result
    // does not depend on the thread count. A sweep of hundreds of configurations spends most
    // of `drover analyze` here.
    let per_group = par_map(&groups, |(name, strata)| -> [Option<f64>; 3 * STATS.len()] {
        let all: Vec<[f64; 3]> = strata.values().flatten().copied().collect();
        let weights = run_weights(strata);
        let idx: Vec<usize> = (0..all.len()).collect();
        let mut ranks = RankSort::weighted(&all.iter().map(|r| r[0]).collect::<Vec<_>>(), &weights);
        let mut scratch = Scratch::default();
        let mut out = [None; 3 * STATS.len()];
        let point = statistics(&all, &weights, &idx, &mut ranks, &mut scratch);
        for (k, v) in point.into_iter().enumerate() {
            out[2 * STATS.len() + k] = Some(v).filter(|v| !v.is_nan());
        }
        if !enough_runs(strata.values().map(Vec::len)) {
            return out;
        }
        let strata_idx = strata_indices(strata);
        let mut rng = Rng::new(opts.seed, stream_name(&streams, name), "aggregate");
        let mut idx = Vec::new();
        let mut estimates: Vec<Vec<f64>> = vec![Vec::with_capacity(opts.reps); STATS.len()];
        for _ in 0..opts.reps {
            resample_indices(&strata_idx, &mut rng, &mut idx);
            for (e, v) in estimates.iter_mut().zip(statistics(&all, &weights, &idx, &mut ranks, &mut scratch)) {
                e.push(v);
            }
        }
        for (k, e) in estimates.iter_mut().enumerate() {
            let (lo, hi) = if e.is_empty() { (f64::NAN, f64::NAN) } else { percentile_interval(e, opts.confidence) };
            out[2 * k] = Some(lo).filter(|v| !v.is_nan());
            out[2 * k + 1] = Some(hi).filter(|v| !v.is_nan());
        }
        out
    });
    let names: Vec<String> = groups.iter().map(|(name, _)| name.clone()).collect();
    let mut bounds: Vec<Vec<Option<f64>>> = (0..3 * STATS.len()).map(|k| per_group.iter().map(|b| b[k]).collect()).collect();
    let mut columns = vec![Column::new("group".into(), names)];
    for (k, stat) in STATS.iter().enumerate() {
        columns.push(Column::new(format!("{stat}_lo").into(), std::mem::take(&mut bounds[2 * k])));
        columns.push(Column::new(format!("{stat}_hi").into(), std::mem::take(&mut bounds[2 * k + 1])));
    }
    for (k, stat) in STATS.iter().enumerate() {
        columns.push(Column::new(format!("{stat}_point").into(), std::mem::take(&mut bounds[2 * STATS.len() + k])));
    }
    columns.push(Column::new("balanced".into(), groups.iter().map(|(_, strata)| balanced(strata)).collect::<Vec<_>>()));
    DataFrame::new_infer_height(columns).map_err(polars_err("building the interval table"))
}

/// Probability that `best` improves on each group (rliable's average probability of
/// improvement, with its `StratifiedIndependentBootstrap` interval: X and Y are resampled
/// independently within each stratum). Only strata present in both groups count; a group that
/// shares none with `best` gets nulls. The interval is null unless every shared stratum holds
/// `MIN_STRATUM_RUNS` runs of each group. Columns: `group`, `p_best_better`, `_lo`, `_hi`.
pub fn improvement_over(per_run: &DataFrame, best: &str, opts: &Bootstrap) -> Result<DataFrame, AnalyzeError> {
    let groups = group_strata(per_run)?;
    let streams = stream_names(per_run)?;
    let scores = |strata: &Strata, key: &str| -> Vec<f64> { strata.get(key).map(|rows| rows.iter().map(|r| r[0]).collect()).unwrap_or_default() };
    let empty = Strata::new();
    let best_strata = groups.get(best).unwrap_or(&empty);
    let groups: Vec<(&String, &Strata)> = groups.iter().collect();
    // Each group against the best with its own generator, so in parallel (see `intervals`).
    let rows = par_map(&groups, |&(name, strata)| -> [Option<f64>; 3] {
        let pairs: Vec<(Vec<f64>, Vec<f64>)> = best_strata
            .keys()
            .filter(|k| strata.contains_key(*k))
            .map(|k| (scores(best_strata, k), scores(strata, k)))
            .collect();
        if name == best || pairs.is_empty() {
            return [None; 3];
        }
        let mut rng = Rng::new(opts.seed, stream_name(&streams, name), &format!("improvement over {}", stream_name(&streams, best)));
        let mut estimates = Vec::with_capacity(opts.reps);
        let mut resampled = pairs.clone();
        for _ in 0..opts.reps {
            for ((x, y), (rx, ry)) in pairs.iter().zip(resampled.iter_mut()) {
                for v in rx.iter_mut() {
                    *v = x[rng.below(x.len())];
                }
                for v in ry.iter_mut() {
                    *v = y[rng.below(y.len())];
                }
            }
            estimates.push(probability_of_improvement(&resampled));
        }
        let (l, h) = percentile_interval(&mut estimates, opts.confidence);
        let varies = enough_runs(pairs.iter().flat_map(|(x, y)| [x.len(), y.len()]));
        [Some(probability_of_improvement(&pairs)), Some(l).filter(|_| varies), Some(h).filter(|_| varies)]
    });
    let names: Vec<String> = groups.iter().map(|(name, _)| (*name).clone()).collect();
    let [point, lo, hi]: [Vec<Option<f64>>; 3] = std::array::from_fn(|k| rows.iter().map(|r| r[k]).collect());
    DataFrame::new_infer_height(vec![
        Column::new("group".into(), names),
        Column::new("p_best_better".into(), point),
        Column::new("p_best_better_lo".into(), lo),
        Column::new("p_best_better_hi".into(), hi),
    ])
    .map_err(polars_err("building the improvement table"))
}

/// One learning-curve cell's points: stratum → (step, value) of each run.
type CurveStrata = BTreeMap<String, Vec<(f64, f64)>>;

/// Learning curves: per group and bin of `curve_points`' frame, the IQM over runs of the runs'
/// bin values with its stratified bootstrap interval, the mean, and how many runs have the bin.
/// Columns: `group, bin, step, runs, mean, iqm, iqm_lo, iqm_hi`; the band is null in a cell
/// with fewer than `MIN_STRATUM_RUNS` runs in a stratum (see there).
pub fn curves(points: &DataFrame, opts: &Bootstrap) -> Result<DataFrame, AnalyzeError> {
    let (group, stratum) = (str_col(points, "group")?, str_col(points, "stratum")?);
    let (bin, step, value) = (f64_col(points, "bin")?, f64_col(points, "step")?, f64_col(points, "value")?);
    // (group, bin) → stratum → (step, value) of each run.
    let mut cells: BTreeMap<(String, i64), CurveStrata> = BTreeMap::new();
    for i in 0..points.height() {
        let (Some(g), Some(s), Some(b), Some(x), Some(y)) = (group.get(i), stratum.get(i), bin.get(i), step.get(i), value.get(i))
        else {
            continue;
        };
        cells.entry((g.to_string(), b as i64)).or_default().entry(s.to_string()).or_default().push((x, y));
    }
    let cells: Vec<_> = cells.into_iter().collect();
    let streams = stream_names(points)?;
    // One cell is one band point; cells are independent (each has its own generator), so they
    // are computed in parallel and the result does not depend on the thread count.
    let rows = par_map(&cells, |((name, b), strata)| {
        let values: Vec<f64> = strata.values().flatten().map(|p| p.1).collect();
        let steps: Vec<f64> = strata.values().flatten().map(|p| p.0).collect();
        let strata_idx = strata_indices(strata);
        // Each stratum weighs equally, as in `intervals`: late bins hold only the runs that
        // got there, so a bin's strata are often unbalanced where the group's are not.
        let weights = run_weights(strata);
        let mut ranks = RankSort::weighted(&values, &weights);
        let mut rng = Rng::new(opts.seed, stream_name(&streams, name), &format!("curve bin {b}"));
        let (mut sample, mut sample_w) = (Vec::new(), Vec::new());
        let mut estimates = Vec::with_capacity(opts.band_reps);
        for _ in 0..opts.band_reps {
            ranks.resample_sorted(&strata_idx, &mut rng, &mut sample, &mut sample_w);
            estimates.push(weighted_iqm_sorted(&sample, &sample_w));
        }
        let (l, h) = percentile_interval(&mut estimates, opts.confidence);
        let band = enough_runs(strata.values().map(Vec::len));
        let (sorted, sorted_w) = sorted_with_weights(&values, &weights);
        let points = [mean_of(&steps), weighted_mean(&values, &weights), weighted_iqm_sorted(&sorted, &sorted_w)];
        (values.len() as i64, points, [Some(l), Some(h)].map(|v| v.filter(|_| band)))
    });
    let mut out: [Vec<f64>; 3] = Default::default();
    let mut bands: [Vec<Option<f64>>; 2] = Default::default();
    let (mut names, mut bins, mut runs) = (Vec::new(), Vec::new(), Vec::new());
    for (((name, b), _), (n, row, band)) in cells.iter().zip(rows) {
        names.push(name.clone());
        bins.push(*b);
        runs.push(n);
        for (column, v) in out.iter_mut().zip(row) {
            column.push(v);
        }
        for (column, v) in bands.iter_mut().zip(band) {
            column.push(v);
        }
    }
    let [s, m, q] = out;
    let [l, h] = bands;
    DataFrame::new_infer_height(vec![
        Column::new("group".into(), names),
        Column::new("bin".into(), bins),
        Column::new("step".into(), s),
        Column::new("runs".into(), runs),
        Column::new("mean".into(), m),
        Column::new("iqm".into(), q),
        Column::new("iqm_lo".into(), l),
        Column::new("iqm_hi".into(), h),
    ])
    .map_err(polars_err("building the learning-curve table"))
}

/// Per group of `per_run` (columns `group`, `stratum` and each of `columns`): the mean over the
/// group's runs of each column with its stratified bootstrap interval, as `<column>_mean`,
/// `<column>_lo`, `<column>_hi`. Each column's mean is over the runs where it is a finite number
/// (a run whose fit failed does not count as a zero); a group with none gets nulls, and the
/// interval is null below `MIN_STRATUM_RUNS` such runs in a stratum. Used for
/// the entropy-performance law's a, b, R² across seeds.
pub fn mean_intervals(per_run: &DataFrame, columns: &[&str], opts: &Bootstrap) -> Result<DataFrame, AnalyzeError> {
    let (group, stratum) = (str_col(per_run, "group")?, str_col(per_run, "stratum")?);
    let values = columns.iter().map(|c| f64_col(per_run, c)).collect::<Result<Vec<_>, _>>()?;
    // Each group's rows, in row order, found in one pass: scanning every row for each group
    // would cost groups × runs (300 configurations of 10 seeds: 900,000 visits per column).
    let mut rows_of: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for i in 0..per_run.height() {
        if let Some(g) = group.get(i) {
            rows_of.entry(g).or_default().push(i);
        }
    }
    let names: Vec<String> = rows_of.keys().map(|g| g.to_string()).collect();
    let streams = stream_names(per_run)?;
    let mut out: Vec<[Vec<Option<f64>>; 3]> = (0..columns.len()).map(|_| Default::default()).collect();
    let (mut idx, mut sample) = (Vec::new(), Vec::new());
    for (name, rows) in names.iter().zip(rows_of.values()) {
        for ((column, values), [mean, lo, hi]) in columns.iter().zip(&values).zip(out.iter_mut()) {
            let mut strata: BTreeMap<String, Vec<f64>> = BTreeMap::new();
            for &i in rows {
                let (Some(s), Some(v)) = (stratum.get(i), values.get(i)) else { continue };
                if v.is_finite() {
                    strata.entry(s.to_string()).or_default().push(v);
                }
            }
            let all: Vec<f64> = strata.values().flatten().copied().collect();
            if all.is_empty() {
                mean.push(None);
                lo.push(None);
                hi.push(None);
                continue;
            }
            let strata_idx = strata_indices(&strata);
            let mut rng = Rng::new(opts.seed, stream_name(&streams, name), &format!("mean of {column}"));
            let mut estimates = Vec::with_capacity(opts.reps);
            for _ in 0..opts.reps {
                resample_indices(&strata_idx, &mut rng, &mut idx);
                sample.clear();
                sample.extend(idx.iter().map(|&i| all[i]));
                estimates.push(mean_of(&sample));
            }
            let (l, h) = percentile_interval(&mut estimates, opts.confidence);
            let varies = enough_runs(strata.values().map(Vec::len));
            mean.push(Some(mean_of(&all)));
            lo.push(Some(l).filter(|_| varies));
            hi.push(Some(h).filter(|_| varies));
        }
    }
    let mut frame = vec![Column::new("group".into(), names)];
    for (column, [mean, lo, hi]) in columns.iter().zip(out) {
        frame.push(Column::new(format!("{column}_mean").into(), mean));
        frame.push(Column::new(format!("{column}_lo").into(), lo));
        frame.push(Column::new(format!("{column}_hi").into(), hi));
    }
    DataFrame::new_infer_height(frame).map_err(polars_err("building the mean-interval table"))
}

/// Performance profiles (rliable's score distributions): for each group and each of `points`
/// thresholds τ evenly spaced over the range of all final returns (widened by 5% of it on each side), the fraction of runs whose
/// final return is above τ, with a stratified bootstrap band (null for a group with fewer than
/// `MIN_STRATUM_RUNS` runs in a stratum). Columns: `group, tau, fraction, fraction_lo, fraction_hi`.
pub fn profiles(per_run: &DataFrame, points: usize, opts: &Bootstrap) -> Result<DataFrame, AnalyzeError> {
    let groups = group_strata(per_run)?;
    let all: Vec<f64> = groups.values().flat_map(|s| s.values().flatten().map(|r| r[0])).collect();
    let (min, max) = all.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| (a.min(v), b.max(v)));
    let points = points.max(2);
    let taus: Vec<f64> = if all.is_empty() {
        Vec::new()
    } else {
        // 5% beyond the scores on each side, so each profile starts at 1 and ends at 0.
        let pad = if max > min { (max - min) * 0.05 } else { 1.0 };
        let (lo, hi) = (min - pad, max + pad);
        (0..points).map(|i| lo + (hi - lo) * i as f64 / (points - 1) as f64).collect()
    };
    // Weight of the sorted values strictly above tau over their total weight (each stratum
    // weighing equally, as in `intervals`); `suffix[i]` is the weight of `sorted[i..]`.
    let above = |sorted: &[f64], suffix: &[f64], tau: f64| suffix[sorted.partition_point(|&v| v <= tau)] / suffix[0];
    let groups: Vec<(String, Strata)> = groups.into_iter().collect();
    let streams = stream_names(per_run)?;
    // One group's band per task, each with its own generator (see `intervals`).
    let per_group = par_map(&groups, |(name, strata)| {
        let values: Vec<f64> = strata.values().flatten().map(|r| r[0]).collect();
        let strata_idx = strata_indices(strata);
        let weights = run_weights(strata);
        let mut ranks = RankSort::weighted(&values, &weights);
        let mut rng = Rng::new(opts.seed, stream_name(&streams, name), "profile");
        let (mut sample, mut sample_w, mut suffix) = (Vec::new(), Vec::new(), Vec::new());
        let mut estimates: Vec<Vec<f64>> = vec![Vec::with_capacity(opts.band_reps); taus.len()];
        for _ in 0..opts.band_reps {
            ranks.resample_sorted(&strata_idx, &mut rng, &mut sample, &mut sample_w);
            suffix_sums(&sample_w, &mut suffix);
            for (e, &tau) in estimates.iter_mut().zip(&taus) {
                e.push(above(&sample, &suffix, tau));
            }
        }
        let (sorted, sorted_w) = sorted_with_weights(&values, &weights);
        suffix_sums(&sorted_w, &mut suffix);
        let band = enough_runs(strata.values().map(Vec::len));
        estimates
            .iter_mut()
            .zip(&taus)
            .map(|(e, &tau)| {
                let (l, h) = percentile_interval(e, opts.confidence);
                (tau, above(&sorted, &suffix, tau), Some(l).filter(|_| band), Some(h).filter(|_| band))
            })
            .collect::<Vec<_>>()
    });
    let (mut names, mut tau_col, mut frac, mut lo, mut hi) = (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for ((name, _), points) in groups.iter().zip(per_group) {
        for (tau, f, l, h) in points {
            names.push(name.clone());
            tau_col.push(tau);
            frac.push(f);
            lo.push(l);
            hi.push(h);
        }
    }
    DataFrame::new_infer_height(vec![
        Column::new("group".into(), names),
        Column::new("tau".into(), tau_col),
        Column::new("fraction".into(), frac),
        Column::new("fraction_lo".into(), lo),
        Column::new("fraction_hi".into(), hi),
    ])
    .map_err(polars_err("building the performance-profile table"))
}
