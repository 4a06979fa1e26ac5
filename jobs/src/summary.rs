//! `summary.json` and `exit.json`: the final record of a run and its exit marker (written last).

use std::path::PathBuf;

use serde::Serialize;

use crate::metrics::MetricsRow;

/// On-disk format of `summary.json` and `exit.json`.
pub const SUMMARY_FORMAT_VERSION: u32 = 1;

/// Which plugin a run used (provenance).
#[derive(Debug, Clone, Serialize)]
pub struct PluginRecord {
    /// Plugin name.
    pub name: String,
    /// Plugin version.
    pub version: String,
    /// Plugin interface version, `major.minor`.
    pub interface_version: String,
    /// Path of the `.so`.
    pub path: PathBuf,
    /// SHA-256 of the `.so`, hex.
    pub sha256: String,
}

/// The final record of a completed run.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// Always [`SUMMARY_FORMAT_VERSION`].
    pub format_version: u32,
    /// Run id.
    pub run_id: String,
    /// Config id (run without its seed).
    pub config_id: String,
    /// Axis label.
    pub label: String,
    /// Run seed.
    pub seed: u64,
    /// Environment steps taken.
    pub total_steps: i64,
    /// Iterations run.
    pub iterations: i64,
    /// Job wall time in seconds.
    pub wall_time_s: f64,
    /// Mean episodic return over the last 10 iterations that finished episodes.
    pub final_return: Option<f64>,
    /// Best iteration mean return.
    pub best_return: Option<f64>,
    /// First global step whose iteration mean return reached `success_return`.
    pub steps_to_threshold: Option<i64>,
    /// The threshold.
    pub success_return: f64,
    /// MPI ranks the run used.
    pub ranks: usize,
    /// FNV-1a hash of the final parameters' bits (equal on every rank, checked).
    pub param_hash: String,
    /// Plugin provenance.
    pub plugin: PluginRecord,
    /// The plugin parameters the run trained with: those the sweep set, and the plugin's
    /// declared default of each other one (`PluginInfo::params`; optional ones without a
    /// default are absent). The analysis groups and filters by these, so that a run that left
    /// `ent_coef` at the plugin's 0.01 is not in a group of its own. Added within format 1:
    /// absent from older summaries, whose readers then fall back to `spec.json`'s `params`.
    #[serde(skip_serializing_if = "serde_json::Map::is_empty")]
    pub params: serde_json::Map<String, serde_json::Value>,
    /// Where the run computed at the end (`cpu/avx512`, `cpu/avx2`, `cpu/neon`, `cpu/portable`
    /// or `cuda`: `checkpoint::compute_of`): its bits repeat only at the same CPU level, and
    /// `checkpoint.json`, which also records it, is removed when the run completes. Added
    /// within format 1: absent from older summaries.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compute: Option<String>,
    /// Every level the run computed at, in order of first use, when its attempts (a stop and
    /// a resume) used more than one; absent otherwise, `compute` then saying it all. `compute`
    /// stays the last attempt's, for readers that know only it. Added within format 1.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub computes: Vec<String>,
    /// Every plugin `.so` SHA-256 the run's attempts loaded, in order of first use, when they
    /// loaded more than one build; absent otherwise (`plugin.sha256`, the last attempt's, then
    /// says it all). Added within format 1.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub plugin_sha256s: Vec<String>,
}

/// `given` (a run's `params` as its sweep set them) with the default of every parameter it
/// does not set, from `declared` as (name, default JSON text); a `null` or unreadable default
/// (an optional parameter) adds nothing.
pub fn resolved_params<'a>(
    given: &serde_json::Map<String, serde_json::Value>,
    declared: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> serde_json::Map<String, serde_json::Value> {
    let mut out = given.clone();
    for (name, default) in declared {
        if out.contains_key(name) {
            continue;
        }
        match serde_json::from_str::<serde_json::Value>(default) {
            Ok(serde_json::Value::Null) | Err(_) => {}
            Ok(value) => {
                out.insert(name.to_string(), value);
            }
        }
    }
    out
}

/// How the run ended.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ExitStatus {
    /// Trained to the end; summary and metrics are complete.
    Completed,
    /// Stopped by an error.
    Failed,
    /// Stopped by a signal.
    Cancelled,
}

/// `exit.json`.
#[derive(Debug, Clone, Serialize)]
pub struct ExitMarker {
    /// Always [`SUMMARY_FORMAT_VERSION`].
    pub format_version: u32,
    /// Run id.
    pub run_id: String,
    /// How it ended.
    pub status: ExitStatus,
    /// Why, when not completed.
    pub reason: Option<String>,
    /// Unix seconds, as a string: `docs/design/results-layout.md`, and what the orchestrator
    /// writes when it marks a run itself (readers take a number too, from older markers).
    pub finished_at: String,
    /// The retry budget whose spending failed the run (`max_timeouts`, `max_preemptions`):
    /// the orchestrator does not retry such a run from scratch (it would stop the same way) and
    /// the next `drover run` resumes it. Absent for every other ending.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spent_budget: Option<&'static str>,
    /// Why a failed run failed, as a word the orchestrator matches ([`cause`]); written on every
    /// `failed` marker, absent on the others. Added within format version 1 (readers ignore
    /// unknown fields and default it to absent; markers from before it fall back to searching
    /// `reason`'s text).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cause: Option<&'static str>,
}

/// The values of `exit.json`'s `cause` (docs/design/results-layout.md); the orchestrator
/// reads the same words (`drover::layout::ExitRecord`).
pub mod cause {
    /// The results disk is full (`ENOSPC`) or the quota spent (`EDQUOT`).
    pub const DISK_FULL: &str = "disk_full";
    /// Slurm time limits came more often than `--max-timeouts` allows.
    pub const BUDGET_MAX_TIMEOUTS: &str = "budget_max_timeouts";
    /// Preemptions came more often than `--max-preemptions` allows.
    pub const BUDGET_MAX_PREEMPTIONS: &str = "budget_max_preemptions";
    /// The run's `checkpoint.json` cannot be resumed from (damaged, of an unknown format, or
    /// not fitting the run: [`crate::JobError::Checkpoint`]): resuming again would fail the same
    /// way, so the orchestrator's next `drover run` starts the run over instead.
    pub const CHECKPOINT: &str = "checkpoint";
    /// The run's `checkpoint.json` is of a later format than this drover-job reads
    /// ([`crate::JobError::CheckpointFormat`]): another release wrote it and can resume it, so
    /// the orchestrator keeps it and resumes again (review: an older drover-job's refusal made
    /// the next `drover run` throw away a good checkpoint).
    pub const CHECKPOINT_FORMAT: &str = "checkpoint_format";
    /// Any other failure (a plugin error, a bad spec, an I/O error other than a full disk).
    pub const ERROR: &str = "error";
}

/// The `cause` of a failure from its error chain: [`cause::DISK_FULL`] when an `io::Error` in
/// it is `ENOSPC` or `EDQUOT`, [`cause::CHECKPOINT`] for a checkpoint that cannot be resumed
/// from, else [`cause::ERROR`]. A checkpoint whose plugin state the plugin loaded now refuses
/// ([`crate::JobError::PluginState`]) is an `error`: the checkpoint is good for the plugin that
/// wrote it, and the message says how to go on.
pub fn failure_cause(err: &(dyn std::error::Error + 'static)) -> &'static str {
    match err.downcast_ref::<crate::JobError>() {
        Some(crate::JobError::Checkpoint { .. }) => return cause::CHECKPOINT,
        Some(crate::JobError::CheckpointFormat { .. }) => return cause::CHECKPOINT_FORMAT,
        _ => {}
    }
    let mut next = Some(err);
    while let Some(e) = next {
        if e.downcast_ref::<std::io::Error>().and_then(std::io::Error::raw_os_error).is_some_and(|code| code == libc::ENOSPC || code == libc::EDQUOT) {
            return cause::DISK_FULL;
        }
        next = e.source();
    }
    cause::ERROR
}

impl ExitMarker {
    /// A marker stamped now.
    pub fn now(run_id: &str, status: ExitStatus, reason: Option<String>) -> Self {
        let finished_at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
            .to_string();
        Self { format_version: SUMMARY_FORMAT_VERSION, run_id: run_id.to_string(), status, reason, finished_at, spent_budget: None, cause: None }
    }

    /// A failed marker stamped now, with its `cause` ([`cause`], [`failure_cause`]).
    pub fn failed(run_id: &str, reason: String, cause: &'static str) -> Self {
        Self { cause: Some(cause), ..Self::now(run_id, ExitStatus::Failed, Some(reason)) }
    }

    /// A failed marker stamped now: the retry budget `budget` (its sweep key) is spent.
    pub fn budget_spent(run_id: &str, budget: &'static str, reason: String) -> Self {
        let cause = match budget {
            "max_timeouts" => cause::BUDGET_MAX_TIMEOUTS,
            "max_preemptions" => cause::BUDGET_MAX_PREEMPTIONS,
            _ => cause::ERROR,
        };
        Self { spent_budget: Some(budget), cause: Some(cause), ..Self::now(run_id, ExitStatus::Failed, Some(reason)) }
    }
}

/// Statistics over the metric rows: (final_return, best_return, steps_to_threshold)
/// ([`RowStats`] over `rows`; the tests' whole-slice view, the job streams).
#[cfg(test)]
pub(crate) fn return_stats(rows: &[MetricsRow], threshold: f64) -> (Option<f64>, Option<f64>, Option<i64>) {
    let mut stats = RowStats::new(threshold);
    for row in rows {
        stats.add(row);
    }
    stats.return_stats()
}

/// Iterations whose returns make up `final_return`.
const FINAL_WINDOW: usize = 10;

/// The summary's figures over the metrics rows, taken a row at a time in order (the job reads
/// them back from `metrics.jsonl` at the end, keeping none): a fixed size however long the run.
///
/// Only iterations that finished episodes with a finite return count for the returns, as in
/// `drover analyze` (`stats::finished_episodes`): one inf or NaN return among the last 10 would
/// otherwise make `final_return` inf or NaN here while the analysis' runs table has a finite
/// one, and an inf would be the best return and reach any threshold.
#[derive(Debug, Clone)]
pub struct RowStats {
    threshold: f64,
    /// Rows seen.
    pub iterations: i64,
    /// The last row's `global_step` (0 before any).
    pub total_steps: i64,
    /// The last [`FINAL_WINDOW`] counted returns, oldest first.
    tail: std::collections::VecDeque<f64>,
    best: Option<f64>,
    reached: Option<i64>,
}

impl RowStats {
    /// No rows yet; `threshold` is the run's `success_return`.
    pub fn new(threshold: f64) -> Self {
        Self { threshold, iterations: 0, total_steps: 0, tail: std::collections::VecDeque::with_capacity(FINAL_WINDOW), best: None, reached: None }
    }

    /// Takes the next row.
    pub fn add(&mut self, row: &MetricsRow) {
        self.iterations += 1;
        self.total_steps = row.global_step;
        let Some(v) = row.episodic_return_mean.filter(|v| row.episodes > 0 && v.is_finite()) else {
            return;
        };
        if self.tail.len() == FINAL_WINDOW {
            self.tail.pop_front();
        }
        self.tail.push_back(v);
        self.best = Some(self.best.map_or(v, |b| b.max(v)));
        if self.reached.is_none() && v >= self.threshold {
            self.reached = Some(row.global_step);
        }
    }

    /// (final_return, best_return, steps_to_threshold) of the rows so far.
    pub fn return_stats(&self) -> (Option<f64>, Option<f64>, Option<i64>) {
        let tail = &self.tail;
        let final_return = (!tail.is_empty()).then(|| {
            let mean = tail.iter().sum::<f64>() / tail.len() as f64;
            // Finite returns near f64::MAX overflow the sum; scaled by 2^-128 (exact) they do not,
            // as in the analysis (`drover::analyze::stats::OVERFLOW_SCALE`, the same 2^-128: the
            // crates share no dependency, so the constant is written in each).
            let scale = f64::from_bits((1023 - 128) << 52);
            if mean.is_finite() { mean } else { tail.iter().map(|v| v * scale).sum::<f64>() / tail.len() as f64 / scale }
        });
        (final_return, self.best, self.reached)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(step: i64, ret: Option<f64>) -> MetricsRow {
        MetricsRow {
            iteration: step,
            global_step: step,
            episodic_return_mean: ret,
            episodes: 1,
            policy_loss: None,
            value_loss: None,
            entropy: None,
            approx_kl: None,
            clip_frac: None,
            lr: 0.0,
            steps_per_sec: 0.0,
            wall_time_s: 0.0,
            extra: Default::default(),
        }
    }

    /// What the sweep set wins; every other declared parameter gets its default; an optional
    /// one (default `null`) stays absent.
    #[test]
    fn resolved_params_fill_the_plugins_defaults() {
        let given = serde_json::json!({"clip_coef": 0.3, "extra": "x"});
        let given = given.as_object().expect("object");
        let declared = [("clip_coef", "0.2"), ("ent_coef", "0.01"), ("target_kl", "null"), ("norm_adv", "true"), ("bad", "{")];
        let resolved = resolved_params(given, declared);
        assert_eq!(
            serde_json::Value::Object(resolved),
            serde_json::json!({"clip_coef": 0.3, "extra": "x", "ent_coef": 0.01, "norm_adv": true})
        );
    }

    /// Review finding: drover-job wrote `finished_at` as a number, the orchestrator (and the
    /// layout doc) as a string.
    #[test]
    fn exit_markers_stamp_finished_at_as_a_string_of_unix_seconds() {
        let marker = serde_json::to_value(ExitMarker::now("r", ExitStatus::Completed, None)).expect("JSON");
        let at = marker["finished_at"].as_str().expect("a string");
        assert!(at.parse::<u64>().is_ok_and(|s| s > 1_600_000_000), "{marker}");
    }

    /// Review (crash consistency, item 5): the orchestrator found a full disk by searching the
    /// reason's text for `(os error 28)`; a failed marker now says why in `cause`.
    #[test]
    fn failed_markers_carry_a_typed_cause() {
        let enospc = crate::JobError::Io { path: "runs/x/metrics.jsonl".into(), source: std::io::Error::from_raw_os_error(libc::ENOSPC) };
        let edquot = std::io::Error::from_raw_os_error(libc::EDQUOT);
        let eacces = crate::JobError::Io { path: "x".into(), source: std::io::Error::from_raw_os_error(libc::EACCES) };
        assert_eq!([failure_cause(&enospc), failure_cause(&edquot), failure_cause(&eacces)], [cause::DISK_FULL, cause::DISK_FULL, cause::ERROR]);
        let marker = serde_json::to_value(ExitMarker::failed("r", enospc.to_string(), failure_cause(&enospc))).expect("JSON");
        assert_eq!((marker["status"].as_str(), marker["cause"].as_str()), (Some("failed"), Some("disk_full")), "{marker}");
        let spent = serde_json::to_value(ExitMarker::budget_spent("r", "max_timeouts", "spent".into())).expect("JSON");
        assert_eq!((spent["spent_budget"].as_str(), spent["cause"].as_str()), (Some("max_timeouts"), Some("budget_max_timeouts")));
        let spent = serde_json::to_value(ExitMarker::budget_spent("r", "max_preemptions", "spent".into())).expect("JSON");
        assert_eq!(spent["cause"].as_str(), Some("budget_max_preemptions"));
        // A checkpoint that cannot be resumed from says so, so that the next `drover run`
        // starts the run over rather than fail on it again (review, failure injection D4).
        let refused = crate::JobError::Checkpoint { path: "runs/x/checkpoint.json".into(), reason: "buffer `params` has length 10".into() };
        assert_eq!(failure_cause(&refused), cause::CHECKPOINT);
        let plugin = crate::JobError::PluginState { run: "r".into(), path: "c".into(), plugin: "p".into(), reason: "no".into() };
        assert_eq!(failure_cause(&plugin), cause::ERROR);
        // Only failed markers carry one.
        let done = serde_json::to_value(ExitMarker::now("r", ExitStatus::Completed, None)).expect("JSON");
        assert!(done.get("cause").is_none(), "{done}");
    }

    #[test]
    fn return_stats_hand_computed() {
        // 12 rows with episodes (returns 10, 20, ..., 120) and one without.
        let mut rows: Vec<_> = (1..=12).map(|i| row(i * 100, Some(10.0 * i as f64))).collect();
        rows.insert(3, row(350, None));
        let (fin, best, reached) = return_stats(&rows, 95.0);
        // Last 10 with episodes: 30..=120, mean 75.
        assert_eq!(fin, Some(75.0));
        assert_eq!(best, Some(120.0));
        assert_eq!(reached, Some(1000));
        assert_eq!(return_stats(&[row(1, None)], 1.0), (None, None, None));
    }

    /// Review finding 5: an inf or NaN return among the last 10 iterations made `final_return`
    /// inf or NaN (and the best return inf, reaching any threshold) while `drover analyze`
    /// skips non-finite returns; both now use the same iterations.
    #[test]
    fn return_stats_skip_non_finite_returns_and_iterations_without_episodes_like_the_analysis() {
        let mut rows: Vec<_> = (1..=12).map(|i| row(i * 100, Some(10.0 * i as f64))).collect();
        rows[5].episodic_return_mean = Some(f64::INFINITY);
        rows[8].episodic_return_mean = Some(f64::NAN);
        rows[10].episodes = 0;
        // Finite, with episodes: 10..=50, 70, 80, 100, 120, nine iterations, all in the window.
        let (fin, best, reached) = return_stats(&rows, 1e9);
        assert_eq!(fin, Some(520.0 / 9.0));
        assert_eq!((best, reached), (Some(120.0), None));
        // Finite returns whose sum overflows.
        let big: Vec<_> = (1..=4).map(|i| row(i, Some(1.5e308))).collect();
        assert_eq!(return_stats(&big, 1e9).0, Some(1.5e308));
    }

    /// The whole-slice statistics drover-job computed before it streamed the rows, verbatim.
    fn old_return_stats(rows: &[MetricsRow], threshold: f64) -> (Option<f64>, Option<f64>, Option<i64>) {
        let with_eps: Vec<(i64, f64)> = rows
            .iter()
            .filter(|r| r.episodes > 0)
            .filter_map(|r| r.episodic_return_mean.filter(|v| v.is_finite()).map(|v| (r.global_step, v)))
            .collect();
        let tail = &with_eps[with_eps.len().saturating_sub(10)..];
        let final_return = (!tail.is_empty()).then(|| {
            let mean = tail.iter().map(|(_, v)| v).sum::<f64>() / tail.len() as f64;
            let scale = f64::from_bits((1023 - 128) << 52);
            if mean.is_finite() { mean } else { tail.iter().map(|(_, v)| v * scale).sum::<f64>() / tail.len() as f64 / scale }
        });
        let best = with_eps.iter().map(|(_, v)| *v).reduce(f64::max);
        let reached = with_eps.iter().find(|(_, v)| *v >= threshold).map(|(s, _)| *s);
        (final_return, best, reached)
    }

    /// Scale review: the summary's statistics were computed over every row held in memory;
    /// they are now taken a row at a time with a window of the last 10 returns, and give the
    /// same bits as before over runs of any length, with NaN, inf, huge returns and
    /// iterations without episodes among them.
    #[test]
    fn row_stats_taken_a_row_at_a_time_equal_the_whole_slice_ones() {
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for len in [0, 1, 9, 10, 11, 57, 1000] {
            let rows: Vec<MetricsRow> = (1..=len)
                .map(|i| {
                    let pick = next();
                    let ret = match pick % 9 {
                        0 => None,
                        1 => Some(f64::NAN),
                        2 => Some(f64::INFINITY),
                        3 => Some(1.7e308),
                        _ => Some((pick >> 11) as f64 / (1u64 << 40) as f64 - 100.0),
                    };
                    let mut r = row(i * 64, ret);
                    r.episodes = i64::from(pick % 7 != 0);
                    r
                })
                .collect();
            let bits = |(a, b, c): (Option<f64>, Option<f64>, Option<i64>)| (a.map(f64::to_bits), b.map(f64::to_bits), c);
            for threshold in [f64::NEG_INFINITY, 0.0, 1e300] {
                let mut stats = RowStats::new(threshold);
                rows.iter().for_each(|r| stats.add(r));
                assert_eq!(bits(stats.return_stats()), bits(old_return_stats(&rows, threshold)), "{len} rows, threshold {threshold}");
                assert_eq!((stats.iterations, stats.total_steps), (len, rows.last().map_or(0, |r| r.global_step)));
            }
        }
    }
}
