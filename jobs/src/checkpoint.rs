//! Checkpoints for exact resume: written when Slurm warns of the time limit or preempts the job,
//! read when the requeued job starts again (docs/design/slurm.md, "Preemption and resume").
//!
//! A checkpoint is taken between iterations and holds everything the next iteration depends on:
//! the engine's state (parameters, Adam moments and step, every env's state and episode
//! accumulators, the global step), the trainer's minibatch permutation (shuffled in place from
//! one iteration to the next), the group sizes the plugin asked for the next generation batch,
//! the plugin's own state (interface 1.3 `drover.plugin_state`, for plugins that export it), the
//! metrics rows so far and the wall time used. Floats are stored as their bit patterns, so a
//! resumed run continues bit for bit.
//!
//! The metrics rows are not copied (format 3): the checkpoint vouches for the first lines of
//! `metrics.jsonl`, fsynced before it is written, by count, length and SHA-256, and lists the
//! non-finite cells the file holds as `null` ([`crate::metrics::JsonlPrefix`]), so it no longer
//! grows with the run. A resume reads those lines back ([`Checkpoint::metrics`]) and refuses
//! the checkpoint when they are not what it recorded. The protocol: docs/design/results-layout.md,
//! "Checkpoint format and resume".
//!
//! Formats 1 and 2 held the rows inline and still resume. Format 2 added `next_group_sizes` and
//! `plugin_state`; a format-1 checkpoint still resumes with the plugin started fresh and the
//! run's `group_size` for the first resumed generation batch, as format 1 always did.

use std::path::Path;

use drover_kernels::cpu::{SimdLevel, SIMD_ENV};
use drover_kernels::{Engine, EngineState};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::comm::{self, Communicator};
use crate::metrics::{self, JsonlPrefix, MetricsLog, MetricsRow, Resumed};
use crate::signals::StopCause;
use crate::{fsio, JobError};

/// `checkpoint.json` in the run directory.
pub const CHECKPOINT_JSON: &str = "checkpoint.json";
/// `interruptions.jsonl`: one line per checkpoint-and-stop, the retry budgets count them.
pub const INTERRUPTIONS_JSONL: &str = "interruptions.jsonl";
/// On-disk format of `checkpoint.json` (3: `metrics_jsonl` in place of the rows; 2:
/// `next_group_sizes` and `plugin_state`).
pub const CHECKPOINT_FORMAT_VERSION: u32 = 3;
/// On-disk format of an `interruptions.jsonl` line. Its own number: it once borrowed
/// [`CHECKPOINT_FORMAT_VERSION`], so the lines written since that became 2 say 2 (and older
/// ones 1, the same fields); it changes only when the line does, not with the checkpoint.
pub const INTERRUPTIONS_FORMAT_VERSION: u32 = 2;
/// The older checkpoint formats this drover-job still resumes from (rows inline).
const CHECKPOINT_FORMAT_V1: u32 = 1;
const CHECKPOINT_FORMAT_V2: u32 = 2;

/// `checkpoint.json` (format_version 3; 1 and 2 read with their rows in `rows`, 1 with the
/// format-2 fields empty).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Always [`CHECKPOINT_FORMAT_VERSION`].
    pub format_version: u32,
    /// The run it belongs to; a checkpoint of another run is refused.
    pub run_id: String,
    /// Iterations completed; training continues with `iteration + 1`.
    pub iteration: u64,
    /// Wall time used by the attempts so far, so `wall_time_s` keeps growing across attempts.
    pub wall_time_s: f64,
    /// The engine's state, floats as bit patterns.
    pub engine: EngineRecord,
    /// The trainer's minibatch permutation.
    pub perm: Vec<u32>,
    /// Formats 1 and 2: the metrics rows of iterations `1..=iteration`, floats as bit patterns
    /// (see `decode_row`). Format 3 writes none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rows: Vec<serde_json::Map<String, Value>>,
    /// Format 3: what the checkpoint vouches for of `metrics.jsonl`, rows `1..=iteration`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_jsonl: Option<JsonlPrefix>,
    /// The group sizes the plugin's last `on_iteration` asked for the next generation batch
    /// (empty: the run's `group_size`). Format 2.
    #[serde(default)]
    pub next_group_sizes: Vec<u32>,
    /// The plugin's state, when it exports `drover.plugin_state`. Format 2.
    #[serde(default)]
    pub plugin_state: Option<PluginStateRecord>,
    /// What computed the run's floats up to here, as far as their bits depend on it:
    /// `cpu/avx512`, `cpu/avx2`, `cpu/neon`, `cpu/portable` or `cuda` ([`compute_of`]); a
    /// resume goes on the same way where it can ([`resume_level`]). Absent in checkpoints of
    /// earlier drover-jobs, which older ones ignore (it came within format 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compute: Option<String>,
    /// Every [`Checkpoint::compute`] the run's attempts so far computed at, in order of first
    /// use ([`Provenance`]): a resume at another level would otherwise leave only the last one
    /// on record. Added within format 3; absent in older checkpoints, which seed it from
    /// `compute`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub computes: Vec<String>,
    /// The SHA-256 of the plugin `.so` that wrote this checkpoint; a resume with another build
    /// is warned of ([`plugin_build_changed`]). Added within format 3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plugin_sha256: Option<String>,
    /// Every plugin `.so` SHA-256 the run's attempts so far loaded, in order of first use.
    /// Added within format 3; absent in older checkpoints, which recorded no build.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub plugin_sha256s: Vec<String>,
}

/// Every compute level and plugin build a run has used across its attempts, each in order of
/// first use: carried by the checkpoint from attempt to attempt (`checkpoint.json` is removed
/// when the run completes) and written to `summary.json` when a run mixed them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Provenance {
    /// [`Checkpoint::computes`].
    pub computes: Vec<String>,
    /// [`Checkpoint::plugin_sha256s`].
    pub plugin_sha256s: Vec<String>,
}

impl Provenance {
    /// What the attempts that wrote `ck` used; a checkpoint from before the lists gives its
    /// `compute` alone and no plugin build (it recorded none).
    pub fn of_checkpoint(ck: &Checkpoint) -> Self {
        let computes = if ck.computes.is_empty() { ck.compute.iter().cloned().collect() } else { ck.computes.clone() };
        Self { computes, plugin_sha256s: ck.plugin_sha256s.clone() }
    }

    /// Adds this attempt's level and plugin build where they are new.
    pub fn note(&mut self, compute: &str, plugin_sha256: &str) {
        for (list, value) in [(&mut self.computes, compute), (&mut self.plugin_sha256s, plugin_sha256)] {
            if !list.iter().any(|v| v == value) {
                list.push(value.to_string());
            }
        }
    }

    /// The lists as `summary.json` carries them: each only when it holds more than one value
    /// (a run of one level and one build has `compute` and `plugin.sha256` say it all).
    pub fn mixed(&self) -> (Vec<String>, Vec<String>) {
        let mixed = |list: &Vec<String>| if list.len() > 1 { list.clone() } else { Vec::new() };
        (mixed(&self.computes), mixed(&self.plugin_sha256s))
    }
}

/// The warning for a resume whose plugin `.so` (SHA-256 `current`) is not the build that wrote
/// the checkpoint (`recorded`; `None` from a checkpoint that did not record it): the run goes
/// on, as at another compute level, but its bits may differ from an uninterrupted run's.
pub fn plugin_build_changed(recorded: Option<&str>, current: &str) -> Option<String> {
    let recorded = recorded.filter(|r| *r != current)?;
    Some(format!(
        "the checkpoint was written by the plugin build with SHA-256 {recorded}, this attempt loads {current}: the run goes on, \
         but not bit for bit as it would have uninterrupted"
    ))
}

/// The [`Checkpoint::compute`] of `engine`.
pub fn compute_of(engine: &dyn Engine) -> String {
    match engine.simd_level() {
        Some(level) => format!("cpu/{}", level.name()),
        None => format!("{:?}", engine.device()).to_ascii_lowercase(),
    }
}

/// What a resumed job does about the level its checkpoint was computed at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResumeLevel {
    /// Nothing to do: the same level, or nothing recorded.
    Same,
    /// Switch the CPU engine to the checkpoint's level, which this CPU runs.
    Switch(SimdLevel),
    /// Go on as it is: the resumed run is then not bit for bit the uninterrupted one, and the
    /// job logs this reason.
    Differs(String),
}

/// Decides [`ResumeLevel`] for a checkpoint computed at `recorded` ([`compute_of`]) and an
/// engine computing at `current`; `pinned`: `DROVER_SIMD` names a level, which wins. A level
/// this CPU lacks counts as its twin where the CPU runs that (`SimdLevel::here`: a checkpoint
/// of an AVX2 node goes on bit for bit at NEON on an Arm node, and back).
pub fn resume_level(recorded: Option<&str>, current: &str, pinned: bool) -> ResumeLevel {
    let Some(recorded) = recorded else { return ResumeLevel::Same };
    if recorded == current {
        return ResumeLevel::Same;
    }
    let differs = |why: String| {
        ResumeLevel::Differs(format!(
            "the checkpoint was computed on `{recorded}`, this attempt computes on `{current}` ({why}): the run goes on, \
             but not bit for bit as it would have uninterrupted"
        ))
    };
    let level = recorded.strip_prefix("cpu/").map(SimdLevel::from_name);
    match level {
        _ if !current.starts_with("cpu/") => differs("another device".into()),
        None => differs("another device".into()),
        Some(None) => differs("a level this drover-job does not know".into()),
        Some(Some(level)) => match level.here() {
            Some(here) if current == format!("cpu/{}", here.name()) => ResumeLevel::Same,
            Some(_) if pinned => differs(format!("{SIMD_ENV} pins it")),
            Some(here) => ResumeLevel::Switch(here),
            None => differs("this CPU cannot run the checkpoint's level".into()),
        },
    }
}

/// A plugin's state in `checkpoint.json`: the bytes of its `save_state`, whatever their format
/// (the plugin versions them), as lowercase hex, with the plugin that wrote them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginStateRecord {
    /// The plugin's name, e.g. `knapsack`.
    pub plugin: String,
    /// The plugin's version.
    pub version: String,
    /// The state bytes, two lowercase hex digits each.
    pub hex: String,
}

impl PluginStateRecord {
    /// Records `bytes` saved by plugin `plugin` `version`.
    pub fn new(plugin: &str, version: &str, bytes: &[u8]) -> Self {
        Self {
            plugin: plugin.to_string(),
            version: version.to_string(),
            hex: bytes.iter().map(|b| format!("{b:02x}")).collect(),
        }
    }

    /// The state bytes.
    ///
    /// # Errors
    /// Why `hex` is not an even number of hex digits.
    pub fn bytes(&self) -> Result<Vec<u8>, String> {
        let h = self.hex.as_bytes();
        if !h.len().is_multiple_of(2) {
            return Err(format!("`plugin_state.hex` has an odd number of digits ({})", h.len()));
        }
        h.chunks(2)
            .enumerate()
            .map(|(i, pair)| {
                std::str::from_utf8(pair)
                    .ok()
                    .and_then(|p| u8::from_str_radix(p, 16).ok())
                    .ok_or_else(|| format!("`plugin_state.hex`: byte {i} is not two hex digits"))
            })
            .collect()
    }
}

/// What a checkpoint holds besides the engine and the metrics: the trainer's and the plugin's.
#[derive(Debug, Clone, Default)]
pub struct RunState {
    /// The trainer's minibatch permutation.
    pub perm: Vec<u32>,
    /// The group sizes asked for the next generation batch.
    pub next_group_sizes: Vec<u32>,
    /// The plugin's state, when it has a state table.
    pub plugin_state: Option<PluginStateRecord>,
    /// [`Checkpoint::compute`] ([`compute_of`] the job's engine).
    pub compute: String,
    /// [`Checkpoint::plugin_sha256`]: the plugin `.so` this attempt loaded.
    pub plugin_sha256: String,
    /// The levels and plugin builds of the run's attempts so far, this one's included.
    pub provenance: Provenance,
}

impl Checkpoint {
    /// The metrics rows, exactly as they were: read back from `dir/metrics.jsonl` (format 3),
    /// or from `rows` (formats 1 and 2).
    ///
    /// # Errors
    /// Why the rows cannot be had: `metrics.jsonl` does not hold what the checkpoint recorded,
    /// or a row is malformed.
    pub fn metrics(&self, dir: &Path) -> Result<Resumed, String> {
        match &self.metrics_jsonl {
            Some(prefix) => metrics::read_prefix(dir, prefix),
            None => Ok(Resumed::Rewrite(self.rows.iter().map(decode_row).collect::<Result<_, _>>()?)),
        }
    }
}

/// Formats 1 and 2 (kept to build their test fixtures): a metrics row as JSON with every float as a `"0x<bits>"` string: serde_json's default float
/// parser may be off by one ulp, which would make a resumed run's metrics differ in the last digit.
/// Written from the row's own fields, never through `serde_json::to_value` (which turns a NaN or
/// an infinity into `null` first), so every f64 bit pattern survives: a plugin's NaN metric
/// (the std of an empty selection) resumes as the same NaN. `None` is `null`, integers are numbers.
#[cfg(test)]
fn encode_row(row: &MetricsRow) -> Result<serde_json::Map<String, Value>, String> {
    let float = |x: f64| Value::String(format!("0x{:016x}", x.to_bits()));
    let optional = |x: Option<f64>| x.map_or(Value::Null, float);
    let mut map: serde_json::Map<String, Value> =
        row.extra.iter().map(|(k, &v)| (k.clone(), float(v))).collect();
    let fixed = [
        ("iteration", Value::from(row.iteration)),
        ("global_step", Value::from(row.global_step)),
        ("episodic_return_mean", optional(row.episodic_return_mean)),
        ("episodes", Value::from(row.episodes)),
        ("policy_loss", optional(row.policy_loss)),
        ("value_loss", optional(row.value_loss)),
        ("entropy", optional(row.entropy)),
        ("approx_kl", optional(row.approx_kl)),
        ("clip_frac", optional(row.clip_frac)),
        ("lr", float(row.lr)),
        ("steps_per_sec", float(row.steps_per_sec)),
        ("wall_time_s", float(row.wall_time_s)),
    ];
    for (name, value) in fixed {
        if map.insert(name.to_owned(), value).is_some() {
            return Err(format!("a plugin metric is named `{name}`, like the host's own column"));
        }
    }
    Ok(map)
}

/// The inverse of `encode_row`: reads the rows of format-1 and -2 checkpoints. A `null` plugin metric (what drover-job wrote for a
/// non-finite one before [`encode_row`] kept the bits) reads as NaN, so such a checkpoint
/// still resumes.
fn decode_row(map: &serde_json::Map<String, Value>) -> Result<MetricsRow, String> {
    let optional = |k: &str| -> Result<Option<f64>, String> {
        match map.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => s
                .strip_prefix("0x")
                .and_then(|h| u64::from_str_radix(h, 16).ok())
                .map(|b| Some(f64::from_bits(b)))
                .ok_or_else(|| format!("`{k}`: bad float `{s}`")),
            Some(Value::Number(n)) => Ok(n.as_f64()),
            Some(other) => Err(format!("`{k}`: expected a float, got {other}")),
        }
    };
    let float = |k: &str| optional(k)?.ok_or_else(|| format!("`{k}`: missing"));
    let int = |k: &str| map.get(k).and_then(Value::as_i64).ok_or_else(|| format!("`{k}`: expected an integer"));
    const FIXED: [&str; 12] = [
        "iteration", "global_step", "episodic_return_mean", "episodes", "policy_loss", "value_loss",
        "entropy", "approx_kl", "clip_frac", "lr", "steps_per_sec", "wall_time_s",
    ];
    let extra = map
        .keys()
        .filter(|k| !FIXED.contains(&k.as_str()))
        .map(|k| Ok((k.clone(), optional(k)?.unwrap_or(f64::NAN))))
        .collect::<Result<_, String>>()?;
    Ok(MetricsRow {
        iteration: int("iteration")?,
        global_step: int("global_step")?,
        episodic_return_mean: optional("episodic_return_mean")?,
        episodes: int("episodes")?,
        policy_loss: optional("policy_loss")?,
        value_loss: optional("value_loss")?,
        entropy: optional("entropy")?,
        approx_kl: optional("approx_kl")?,
        clip_frac: optional("clip_frac")?,
        lr: float("lr")?,
        steps_per_sec: float("steps_per_sec")?,
        wall_time_s: float("wall_time_s")?,
        extra,
    })
}

/// [`EngineState`] on disk: every `f32` as `f32::to_bits`, so the round trip is exact.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EngineRecord {
    params: Vec<u32>,
    adam_m: Vec<u32>,
    adam_v: Vec<u32>,
    adam_t: u64,
    step: u64,
    x: Vec<u32>,
    x_dot: Vec<u32>,
    theta: Vec<u32>,
    theta_dot: Vec<u32>,
    env_steps: Vec<u32>,
    ep_return: Vec<u32>,
    ep_len: Vec<u32>,
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}
fn floats(v: &[u32]) -> Vec<f32> {
    v.iter().map(|&b| f32::from_bits(b)).collect()
}

impl From<&EngineState> for EngineRecord {
    fn from(s: &EngineState) -> Self {
        EngineRecord {
            params: bits(&s.params),
            adam_m: bits(&s.adam_m),
            adam_v: bits(&s.adam_v),
            adam_t: s.adam_t,
            step: s.step,
            x: bits(&s.x),
            x_dot: bits(&s.x_dot),
            theta: bits(&s.theta),
            theta_dot: bits(&s.theta_dot),
            env_steps: s.env_steps.clone(),
            ep_return: bits(&s.ep_return),
            ep_len: s.ep_len.clone(),
        }
    }
}

impl From<&EngineRecord> for EngineState {
    fn from(r: &EngineRecord) -> Self {
        EngineState {
            params: floats(&r.params),
            adam_m: floats(&r.adam_m),
            adam_v: floats(&r.adam_v),
            adam_t: r.adam_t,
            step: r.step,
            x: floats(&r.x),
            x_dot: floats(&r.x_dot),
            theta: floats(&r.theta),
            theta_dot: floats(&r.theta_dot),
            env_steps: r.env_steps.clone(),
            ep_return: floats(&r.ep_return),
            ep_len: r.ep_len.clone(),
        }
    }
}

/// Writes `dir/checkpoint.json` atomically (a crash mid-write leaves the previous one).
pub fn save(dir: &Path, checkpoint: &Checkpoint) -> Result<(), JobError> {
    let path = dir.join(CHECKPOINT_JSON);
    let bytes = serde_json::to_vec(checkpoint).map_err(|e| JobError::Io { path: path.clone(), source: std::io::Error::other(e) })?;
    fsio::write_atomic(&path, &bytes)
}

/// Reads `dir/checkpoint.json` of run `run_id`; `Ok(None)` when there is none.
pub fn load(dir: &Path, run_id: &str) -> Result<Option<Checkpoint>, JobError> {
    let path = dir.join(CHECKPOINT_JSON);
    let bad = |reason: String| JobError::Checkpoint { path: path.clone(), reason };
    let text = match std::fs::read(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(JobError::Io { path, source: e }),
    };
    let value: serde_json::Value = serde_json::from_slice(&text).map_err(|e| bad(e.to_string()))?;
    let version = value.get("format_version").and_then(serde_json::Value::as_u64);
    if ![CHECKPOINT_FORMAT_V1, CHECKPOINT_FORMAT_V2, CHECKPOINT_FORMAT_VERSION].iter().any(|&v| version == Some(u64::from(v))) {
        let reads = format!("{CHECKPOINT_FORMAT_V1}, {CHECKPOINT_FORMAT_V2} and {CHECKPOINT_FORMAT_VERSION}");
        // A later format is another release's checkpoint, not damage: the orchestrator must not
        // start the run over for it (`cause::CHECKPOINT_FORMAT`).
        if let Some(found) = version.filter(|&v| v > u64::from(CHECKPOINT_FORMAT_VERSION)) {
            return Err(JobError::CheckpointFormat { path, found, reads });
        }
        // In words (`unknown format_version 0`, `no format_version`), not `Option`'s Debug.
        let found = value.get("format_version").map_or_else(|| "no format_version".to_string(), |v| format!("unknown format_version {v}"));
        return Err(bad(format!("{found} (this drover-job reads {reads})")));
    }
    let checkpoint: Checkpoint = serde_json::from_value(value).map_err(|e| bad(e.to_string()))?;
    if checkpoint.run_id != run_id {
        return Err(bad(format!("it belongs to run {}, not {run_id}", checkpoint.run_id)));
    }
    let rows = match (&checkpoint.metrics_jsonl, checkpoint.format_version) {
        (Some(prefix), CHECKPOINT_FORMAT_VERSION) if checkpoint.rows.is_empty() => prefix.rows,
        (None, CHECKPOINT_FORMAT_VERSION) => return Err(bad("format 3 without `metrics_jsonl`".into())),
        (Some(_), CHECKPOINT_FORMAT_VERSION) => return Err(bad("format 3 with both `metrics_jsonl` and `rows`".into())),
        (Some(_), v) => return Err(bad(format!("format {v} with `metrics_jsonl`, which came with format 3"))),
        (None, _) => checkpoint.rows.len() as u64,
    };
    if rows != checkpoint.iteration {
        return Err(bad(format!("{rows} metrics rows for {} iterations", checkpoint.iteration)));
    }
    Ok(Some(checkpoint))
}

/// Saves a checkpoint after `iteration` completed iterations, with the job's whole engine
/// state (every rank's environments, see [`job_engine_state`]) and the rows `metrics` has
/// written, which it makes durable first ([`MetricsLog::checkpoint_prefix`]).
pub fn take(
    dir: &Path,
    run_id: &str,
    iteration: u64,
    engine_state: &EngineState,
    state: RunState,
    metrics: &mut MetricsLog,
    wall_time_s: f64,
) -> Result<(), JobError> {
    let prefix = metrics.checkpoint_prefix()?;
    if prefix.rows != iteration {
        return Err(JobError::Checkpoint {
            path: dir.join(CHECKPOINT_JSON),
            reason: format!("{} metrics rows for {iteration} iterations", prefix.rows),
        });
    }
    let checkpoint = Checkpoint {
        format_version: CHECKPOINT_FORMAT_VERSION,
        run_id: run_id.to_string(),
        iteration,
        wall_time_s,
        engine: EngineRecord::from(engine_state),
        perm: state.perm,
        next_group_sizes: state.next_group_sizes,
        plugin_state: state.plugin_state,
        compute: Some(state.compute),
        computes: state.provenance.computes,
        plugin_sha256: Some(state.plugin_sha256),
        plugin_sha256s: state.provenance.plugin_sha256s,
        rows: Vec::new(),
        metrics_jsonl: Some(prefix),
    };
    save(dir, &checkpoint)?;
    tracing::info!(run = %run_id, iteration, "checkpoint saved");
    Ok(())
}

/// Per-env fields of [`EngineState`], in the order they travel between ranks.
const ENV_FIELDS: usize = 7;

fn env_fields(s: &EngineState) -> [Vec<u32>; ENV_FIELDS] {
    [bits(&s.x), bits(&s.x_dot), bits(&s.theta), bits(&s.theta_dot), s.env_steps.clone(), bits(&s.ep_return), s.ep_len.clone()]
}

fn set_env_fields(s: &mut EngineState, f: [Vec<u32>; ENV_FIELDS]) {
    let [x, x_dot, theta, theta_dot, env_steps, ep_return, ep_len] = f;
    (s.x, s.x_dot, s.theta, s.theta_dot) = (floats(&x), floats(&x_dot), floats(&theta), floats(&theta_dot));
    (s.env_steps, s.ep_return, s.ep_len) = (env_steps, floats(&ep_return), ep_len);
}

/// The engine state of the whole job, as a one-rank engine stepping all `num_envs` would hold
/// it: parameters, Adam and step (equal on every rank), and every rank's environments at their
/// global indices (rank `r`'s first is `env_offset`). Collective; `None` on every rank when some
/// rank's engine cannot snapshot its state (then the next attempt starts the run over).
///
/// The environments travel as bit patterns in one f64 sum all-reduce where each rank writes only
/// its own slots, so the gathered state is exact (a sum of `-0.0` and `+0.0` would not be).
pub fn job_engine_state(
    engine: &dyn Engine,
    comm: &dyn Communicator,
    num_envs: usize,
    env_offset: usize,
) -> Result<Option<EngineState>, JobError> {
    let own = engine.save_state();
    if comm.size() == 1 {
        return Ok(match own {
            Ok(state) => Some(state),
            Err(e) => {
                tracing::warn!("no checkpoint: {e}");
                None
            }
        });
    }
    let failed = comm::count_ranks(comm, own.is_err());
    let mut state = match own {
        Ok(state) if failed == 0 => state,
        Ok(_) => {
            tracing::warn!("no checkpoint: {failed} rank(s) cannot snapshot their engine");
            return Ok(None);
        }
        Err(e) => {
            tracing::warn!("no checkpoint: {e}");
            return Ok(None);
        }
    };
    // Sequence engines keep no env state between rollouts: nothing to gather.
    if state.x.is_empty() {
        return Ok(Some(state));
    }
    let local = state.x.len();
    let mut buf = vec![0.0f64; ENV_FIELDS * num_envs];
    for (k, field) in env_fields(&state).iter().enumerate() {
        for (slot, &b) in buf[k * num_envs + env_offset..][..local].iter_mut().zip(field) {
            *slot = f64::from(b);
        }
    }
    comm.all_reduce_sum_f64(&mut buf);
    // Each slot holds one u32 written by one rank: an exact integer.
    set_env_fields(&mut state, std::array::from_fn(|k| buf[k * num_envs..(k + 1) * num_envs].iter().map(|&v| v as u32).collect()));
    Ok(Some(state))
}

/// This rank's share of a job's engine state ([`job_engine_state`]): the `local_envs`
/// environments from global index `env_offset`; a sequence engine's empty env state stays empty.
///
/// # Errors
/// The reason, when the state holds env arrays for another number of environments.
pub fn rank_engine_state(mut state: EngineState, num_envs: usize, env_offset: usize, local_envs: usize) -> Result<EngineState, String> {
    if state.x.is_empty() {
        return Ok(state);
    }
    let fields = env_fields(&state);
    if let Some(f) = fields.iter().find(|f| f.len() != num_envs) {
        return Err(format!("the engine state holds {} environments, the spec has {num_envs}", f.len()));
    }
    set_env_fields(&mut state, fields.map(|f| f[env_offset..env_offset + local_envs].to_vec()));
    Ok(state)
}

/// [`after_stop`] for a job of any number of ranks: rank 0 records the interruption and
/// decides; the others get its decision (their reason points to rank 0's log: only rank 0
/// writes `exit.json`). Collective.
pub fn after_stop_on_all_ranks(
    comm: &dyn Communicator,
    dir: &Path,
    cause: StopCause,
    iteration: u64,
    budgets: Budgets,
) -> Result<AfterStop, JobError> {
    if comm.size() == 1 {
        return after_stop(dir, cause, iteration, budgets);
    }
    let own = (comm.rank() == 0).then(|| after_stop(dir, cause, iteration, budgets));
    let code = match &own {
        Some(Ok(AfterStop::Requeue)) => 1,
        Some(Ok(AfterStop::Cancelled(_))) => 2,
        Some(Ok(AfterStop::Failed(_))) => 3,
        Some(Err(_)) | None => 4,
    };
    let decided = comm::from_rank0(comm, code);
    if let Some(own) = own {
        return own;
    }
    let why = "decided by rank 0, see its log".to_string();
    Ok(match decided {
        1 => AfterStop::Requeue,
        2 => AfterStop::Cancelled(why),
        _ => AfterStop::Failed(why),
    })
}

/// Removes the checkpoint once the run has completed (it is large and no longer needed).
pub fn remove(dir: &Path) {
    let _ = std::fs::remove_file(dir.join(CHECKPOINT_JSON));
}

/// Why a job stopped with a checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Interruption {
    /// The checkpoint signal (`--signal=B:USR1@<s>`): the time limit is near; the job requeues itself.
    TimeLimit,
    /// SIGTERM: Slurm preempted or requeued the job (or it was cancelled).
    Terminated,
}

/// One line of `interruptions.jsonl`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InterruptionRecord {
    /// Always [`INTERRUPTIONS_FORMAT_VERSION`].
    pub format_version: u32,
    /// What stopped the job.
    pub reason: Interruption,
    /// Iterations completed at the checkpoint.
    pub iteration: u64,
    /// Slurm's job id of the stopped attempt, when under Slurm.
    pub slurm_job_id: Option<String>,
    /// Unix seconds.
    pub at: String,
}

/// Appends an interruption to `dir/interruptions.jsonl`.
pub fn record_interruption(dir: &Path, reason: Interruption, iteration: u64) -> Result<(), JobError> {
    let path = dir.join(INTERRUPTIONS_JSONL);
    let record = InterruptionRecord {
        format_version: INTERRUPTIONS_FORMAT_VERSION,
        reason,
        iteration,
        slurm_job_id: std::env::var("SLURM_JOB_ID").ok(),
        at: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs().to_string())
            .unwrap_or_default(),
    };
    let io = |source| JobError::Io { path: path.clone(), source };
    let line = serde_json::to_vec(&record).map_err(|e| io(std::io::Error::other(e)))?;
    // A torn last line (a write cut short) is ended first: this stop gets a line of its own.
    crate::jsonl::append_line(&path, &line).map_err(io)
}

/// The run's recorded interruptions of kind `reason`, oldest first (no file is none; a line
/// that cannot be read is skipped with a warning, a record fused after a torn one is kept).
fn interruptions_of(dir: &Path, reason: Interruption) -> Vec<InterruptionRecord> {
    crate::jsonl::read_records::<InterruptionRecord>(&dir.join(INTERRUPTIONS_JSONL))
        .into_iter()
        .filter(|r| r.reason == reason)
        .collect()
}

/// How many interruptions of kind `reason` the run has had (unreadable lines are skipped).
pub fn count_interruptions(dir: &Path, reason: Interruption) -> u32 {
    interruptions_of(dir, reason).len() as u32
}

/// How many interruptions of each kind a run may have before it counts as failed.
#[derive(Debug, Clone, Copy)]
pub struct Budgets {
    /// Time-limit stops (checkpoint signal) allowed.
    pub max_timeouts: u32,
    /// SIGTERM stops (preemptions, requeues) allowed.
    pub max_preemptions: u32,
}

/// What a checkpointing job does after a stop with a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AfterStop {
    /// Exit with `exit_codes::REQUEUE` and no `exit.json`: the batch script requeues the job.
    Requeue,
    /// Write `exit.json` cancelled with this reason (Slurm requeues a preempted job by itself).
    Cancelled(String),
    /// Write `exit.json` failed with this reason: the time-limit budget (`max_timeouts`) is
    /// spent.
    Failed(String),
}

/// Records the stop in `interruptions.jsonl` and decides what comes next.
pub fn after_stop(dir: &Path, cause: StopCause, iteration: u64, budgets: Budgets) -> Result<AfterStop, JobError> {
    match cause {
        StopCause::CheckpointSignal => {
            record_interruption(dir, Interruption::TimeLimit, iteration)?;
            let n = count_interruptions(dir, Interruption::TimeLimit);
            Ok(if n > budgets.max_timeouts {
                AfterStop::Failed(format!(
                    "reached the time limit {n} times (max_timeouts = {}); checkpoint at iteration {iteration}",
                    budgets.max_timeouts
                ))
            } else {
                AfterStop::Requeue
            })
        }
        StopCause::Terminate => {
            record_interruption(dir, Interruption::Terminated, iteration)?;
            // The job cannot tell preemption, requeue and cancellation apart; `drover status`
            // names the cause where the ledger or Slurm knows it, and keeps these words otherwise.
            Ok(AfterStop::Cancelled(format!("stopped by SIGTERM; checkpoint at iteration {iteration}")))
        }
        StopCause::Interrupt => Ok(AfterStop::Cancelled("stopped by SIGINT".into())),
    }
}

/// At start: the reason to give up when the run was preempted more often than allowed.
///
/// Only the SIGTERM stops of this Slurm job (`current_job`, its `SLURM_JOB_ID`, which a
/// requeue keeps) count: the job cannot tell a preemption from `drover cancel`, and a cancelled
/// run that the user starts again is a new submission with a new id, whose budget is whole.
/// Without a job id (or for records from before ids were kept) every stop counts.
pub fn preemption_budget_spent(dir: &Path, budgets: Budgets, current_job: Option<&str>) -> Option<String> {
    let n = interruptions_of(dir, Interruption::Terminated)
        .iter()
        .filter(|r| match (current_job, r.slurm_job_id.as_deref()) {
            (Some(now), Some(then)) => now == then,
            _ => true,
        })
        .count() as u32;
    (n > budgets.max_preemptions)
        .then(|| format!("preempted {n} times (max_preemptions = {})", budgets.max_preemptions))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::io::Write;

    use super::*;

    #[test]
    fn engine_state_round_trips_bit_for_bit() {
        let state = EngineState {
            params: vec![0.1, -0.0, f32::MIN_POSITIVE, 1.0e-45, 3.4e38],
            adam_m: vec![1.0 / 3.0],
            adam_v: vec![2.0f32.sqrt()],
            adam_t: 7,
            step: 1024,
            x: vec![0.012_345_678],
            x_dot: vec![-0.3],
            theta: vec![0.2],
            theta_dot: vec![1e-7],
            env_steps: vec![17],
            ep_return: vec![17.0],
            ep_len: vec![17],
        };
        let record = EngineRecord::from(&state);
        let json = serde_json::to_string(&record).unwrap();
        let back: EngineRecord = serde_json::from_str(&json).unwrap();
        let restored = EngineState::from(&back);
        assert_eq!(bits(&restored.params), bits(&state.params), "-0.0 and subnormals survive");
        assert_eq!(restored, state);
    }

    #[test]
    fn metrics_rows_round_trip_exactly() {
        let row = MetricsRow {
            iteration: 4,
            global_step: 4096,
            episodic_return_mean: Some(27.736842105263158),
            episodes: 19,
            policy_loss: None,
            value_loss: Some(0.1 + 0.2),
            entropy: Some(std::f64::consts::LN_2),
            approx_kl: Some(1e-300),
            clip_frac: Some(0.0),
            lr: 0.00023711340206185566,
            steps_per_sec: 1.0,
            wall_time_s: 2.5,
            extra: std::collections::BTreeMap::from([("grad_norm".to_string(), 12.193056583404541)]),
        };
        let encoded = encode_row(&row).unwrap();
        let text = serde_json::to_string(&encoded).unwrap();
        let back = decode_row(&serde_json::from_str(&text).unwrap()).unwrap();
        assert_eq!(serde_json::to_value(&back).unwrap(), serde_json::to_value(&row).unwrap());
        assert_eq!(back.lr.to_bits(), row.lr.to_bits());
        assert_eq!(back.iteration, 4);
        assert_eq!(back.policy_loss, None);
    }

    /// Review finding 2: a plugin's NaN metric was written as `null` and the resume then
    /// failed ("invalid type: null, expected f64"), so every later requeue of the run failed.
    #[test]
    fn every_f64_bit_pattern_of_a_metrics_row_survives_a_checkpoint() {
        let odd = [f64::NAN, -f64::NAN, f64::from_bits(0x7ff0_0000_dead_beef), f64::INFINITY, f64::NEG_INFINITY, -0.0, 5e-324];
        let row = MetricsRow {
            iteration: 3,
            global_step: 96,
            episodic_return_mean: Some(f64::NAN),
            episodes: 0,
            policy_loss: Some(f64::INFINITY),
            value_loss: None,
            entropy: Some(-0.0),
            approx_kl: Some(f64::from_bits(0x7ff8_0000_0000_0001)),
            clip_frac: None,
            lr: f64::NAN,
            steps_per_sec: f64::INFINITY,
            wall_time_s: 5e-324,
            extra: odd.iter().enumerate().map(|(i, &x)| (format!("m{i}"), x)).collect(),
        };
        let dir = tempfile::tempdir().unwrap();
        let mut log = MetricsLog::create(dir.path()).unwrap();
        log.push(row.clone()).unwrap();
        take_at(dir.path(), 1, &mut log);
        let back = rows_of(&load(dir.path(), "a").unwrap().unwrap(), dir.path())[0].clone();
        let opt_bits = |x: Option<f64>| x.map(f64::to_bits);
        let fixed = |r: &MetricsRow| {
            [r.episodic_return_mean, r.policy_loss, r.value_loss, r.entropy, r.approx_kl, r.clip_frac]
                .map(opt_bits)
                .into_iter()
                .chain([r.lr, r.steps_per_sec, r.wall_time_s].map(|x| Some(x.to_bits())))
                .collect::<Vec<_>>()
        };
        assert_eq!(fixed(&back), fixed(&row));
        let extra_bits = |r: &MetricsRow| r.extra.iter().map(|(k, v)| (k.clone(), v.to_bits())).collect::<Vec<_>>();
        assert_eq!(extra_bits(&back), extra_bits(&row));
        assert_eq!((back.iteration, back.global_step, back.episodes), (3, 96, 0));
        // The same through a format-2 checkpoint's inline rows.
        let v2 = decode_row(&serde_json::from_str(&serde_json::to_string(&encode_row(&row).unwrap()).unwrap()).unwrap()).unwrap();
        assert_eq!((fixed(&v2), extra_bits(&v2)), (fixed(&row), extra_bits(&row)));
        // A checkpoint written before this fix holds `null` for the NaN metric: it resumes.
        let mut old = encode_row(&row).unwrap();
        old.insert("m0".into(), Value::Null);
        assert!(decode_row(&old).unwrap().extra["m0"].is_nan());
    }

    /// Every metrics row `ck` resumes with, read back in full (a resume itself keeps none).
    fn rows_of(ck: &Checkpoint, dir: &Path) -> Vec<MetricsRow> {
        match &ck.metrics_jsonl {
            Some(prefix) => {
                let mut rows = Vec::new();
                metrics::read_rows(dir, prefix, |row| rows.push(row)).unwrap();
                rows
            }
            None => ck.rows.iter().map(|r| decode_row(r).unwrap()).collect(),
        }
    }

    /// A checkpoint of run `a` after `iteration` iterations, with `log`'s rows.
    fn take_at(dir: &Path, iteration: u64, log: &mut MetricsLog) {
        let state = RunState { perm: vec![1, 0], compute: "cpu/portable".into(), ..RunState::default() };
        take(dir, "a", iteration, &EngineState::default(), state, log, iteration as f64).unwrap();
    }

    /// Provenance review, item 1: a run stopped at `cpu/avx512` with one plugin build and
    /// resumed at `cpu/avx2` with another recorded only the last attempt's level and build.
    /// The checkpoint now carries every one used so far, and the summary gets the lists.
    #[test]
    fn a_resume_at_another_level_and_build_keeps_both_on_record() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = MetricsLog::create(dir.path()).unwrap();
        let mut first = Provenance::default();
        first.note("cpu/avx512", "aaaa");
        assert_eq!(first.mixed(), (Vec::new(), Vec::new()), "one level and one build: no lists");
        let state = |compute: &str, sha: &str, provenance: &Provenance| RunState {
            perm: vec![1, 0],
            compute: compute.into(),
            plugin_sha256: sha.into(),
            provenance: provenance.clone(),
            ..RunState::default()
        };
        take(dir.path(), "a", 0, &EngineState::default(), state("cpu/avx512", "aaaa", &first), &mut log, 0.0).unwrap();

        // The second attempt: DROVER_SIMD=avx2 and a rebuilt plugin.
        let ck = load(dir.path(), "a").unwrap().unwrap();
        let why = plugin_build_changed(ck.plugin_sha256.as_deref(), "bbbb").expect("another build is warned of");
        assert!(why.contains("SHA-256 aaaa") && why.contains("loads bbbb") && why.contains("not bit for bit"), "{why}");
        assert_eq!(plugin_build_changed(ck.plugin_sha256.as_deref(), "aaaa"), None);
        assert_eq!(plugin_build_changed(None, "bbbb"), None, "nothing recorded, nothing to compare");
        let mut second = Provenance::of_checkpoint(&ck);
        second.note("cpu/avx2", "bbbb");
        let both = (vec!["cpu/avx512".to_string(), "cpu/avx2".to_string()], vec!["aaaa".to_string(), "bbbb".to_string()]);
        assert_eq!(second.mixed(), both);

        // A third attempt back at the first build and level adds nothing: order of first use.
        take(dir.path(), "a", 0, &EngineState::default(), state("cpu/avx2", "bbbb", &second), &mut log, 0.0).unwrap();
        let ck = load(dir.path(), "a").unwrap().unwrap();
        let mut third = Provenance::of_checkpoint(&ck);
        third.note("cpu/avx512", "aaaa");
        assert_eq!(third.mixed(), both);

        // A format-3 checkpoint from before the lists: seeded from `compute`, no build known.
        let text = std::fs::read_to_string(dir.path().join(CHECKPOINT_JSON)).unwrap();
        let mut old: Value = serde_json::from_str(&text).unwrap();
        for key in ["computes", "plugin_sha256", "plugin_sha256s"] {
            old.as_object_mut().unwrap().remove(key).expect(key);
        }
        std::fs::write(dir.path().join(CHECKPOINT_JSON), old.to_string()).unwrap();
        let ck = load(dir.path(), "a").unwrap().expect("an older format-3 checkpoint still resumes");
        assert_eq!(plugin_build_changed(ck.plugin_sha256.as_deref(), "cccc"), None);
        let mut seeded = Provenance::of_checkpoint(&ck);
        assert_eq!(seeded.computes, ["cpu/avx2"]);
        seeded.note("cpu/portable", "cccc");
        assert_eq!(seeded.mixed(), (vec!["cpu/avx2".to_string(), "cpu/portable".to_string()], Vec::new()));
    }

    /// xorshift64: test floats without a dependency.
    fn next(state: &mut u64) -> u64 {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        *state
    }

    /// A finite f64 of random bits (any exponent: subnormals and 17-digit values included).
    fn finite(state: &mut u64) -> f64 {
        loop {
            let x = f64::from_bits(next(state));
            if x.is_finite() {
                return x;
            }
        }
    }

    /// Row `i` of a run whose plugin reports NaN, ±inf and odd NaN payloads in some rows
    /// (`std` every row, `ratio` now and then, a host column once), and random finite floats
    /// everywhere else.
    fn odd_row(i: i64, rng: &mut u64) -> MetricsRow {
        let special = [f64::NAN, -f64::NAN, f64::INFINITY, f64::NEG_INFINITY, f64::from_bits(0x7ff0_0000_dead_beef)];
        let mut extra = BTreeMap::from([
            ("std".to_string(), f64::NAN),
            ("grad_norm".to_string(), finite(rng)),
            ("tiny".to_string(), [5e-324, -0.0, f64::MIN_POSITIVE, f64::MAX][i as usize % 4]),
        ]);
        if i % 3 == 0 {
            extra.insert("ratio".into(), special[i as usize % special.len()]);
        }
        MetricsRow {
            iteration: i,
            global_step: i * 64,
            episodic_return_mean: match i % 4 {
                0 => None,
                1 => Some(f64::NAN),
                _ => Some(finite(rng)),
            },
            episodes: i % 4,
            policy_loss: Some(finite(rng)),
            value_loss: (i % 2 == 0).then(|| finite(rng)),
            entropy: Some(0.1 + 0.2),
            approx_kl: Some(if i == 7 { f64::INFINITY } else { finite(rng) }),
            clip_frac: None,
            lr: if i == 5 { f64::NEG_INFINITY } else { finite(rng) },
            steps_per_sec: finite(rng),
            wall_time_s: i as f64 * 0.1,
            extra,
        }
    }

    /// Every float of a row as its bits, `None` kept apart from a NaN.
    fn row_bits(r: &MetricsRow) -> Vec<(String, Option<u64>)> {
        let o = |x: Option<f64>| x.map(f64::to_bits);
        let fixed = [
            ("iteration", Some(r.iteration as u64)),
            ("global_step", Some(r.global_step as u64)),
            ("episodes", Some(r.episodes as u64)),
            ("episodic_return_mean", o(r.episodic_return_mean)),
            ("policy_loss", o(r.policy_loss)),
            ("value_loss", o(r.value_loss)),
            ("entropy", o(r.entropy)),
            ("approx_kl", o(r.approx_kl)),
            ("clip_frac", o(r.clip_frac)),
            ("lr", Some(r.lr.to_bits())),
            ("steps_per_sec", Some(r.steps_per_sec.to_bits())),
            ("wall_time_s", Some(r.wall_time_s.to_bits())),
        ];
        fixed.into_iter().map(|(k, v)| (k.to_string(), v)).chain(r.extra.iter().map(|(k, v)| (k.clone(), Some(v.to_bits())))).collect()
    }

    /// Review (checkpoint size): the checkpoint held every metrics row since iteration 1
    /// (718 KB after 1087 iterations) and was rewritten and fsynced whole at each checkpoint.
    /// It now vouches for `metrics.jsonl` by hash: its size does not depend on the iteration,
    /// even with a plugin metric that is NaN in every row.
    #[test]
    fn the_checkpoint_does_not_grow_with_the_iterations() {
        let dir = tempfile::tempdir().unwrap();
        let mut rng = 7;
        let mut log = MetricsLog::create(dir.path()).unwrap();
        let size = |log: &mut MetricsLog, rng: &mut u64, upto: i64| {
            while (log.rows() as i64) < upto {
                // `std` is NaN in every row (one range); the other non-finite cells come
                // before iteration 10 or, here, not at all.
                let mut row = odd_row(log.rows() as i64 + 1, rng);
                row.extra.remove("ratio");
                row.episodic_return_mean = row.episodic_return_mean.map(|x| if x.is_nan() { 0.5 } else { x });
                log.push(row).unwrap();
            }
            take_at(dir.path(), upto as u64, log);
            let ck = std::fs::metadata(dir.path().join(CHECKPOINT_JSON)).unwrap().len();
            (ck, std::fs::metadata(dir.path().join(metrics::METRICS_JSONL)).unwrap().len())
        };
        let (small, jsonl_small) = size(&mut log, &mut rng, 10);
        let (large, jsonl_large) = size(&mut log, &mut rng, 2000);
        assert!(jsonl_large > jsonl_small + 200_000, "the metrics grew: {jsonl_small} -> {jsonl_large}");
        // A few more digits in `iteration`, `rows`, `bytes`, `wall_time_s` and the row ranges.
        assert!(large <= small + 24, "checkpoint.json grew from {small} to {large} bytes");
        let ck = load(dir.path(), "a").unwrap().unwrap();
        assert_eq!(ck.metrics_jsonl.as_ref().map(|p| (p.rows, p.bytes)), Some((2000, jsonl_large)));
        assert!(ck.rows.is_empty());
    }

    /// Every finite f64 written to `metrics.jsonl` (serde_json's shortest representation)
    /// comes back with the same bits, which serde_json's own float parser does not promise.
    #[test]
    fn finite_floats_come_back_from_metrics_jsonl_bit_for_bit() {
        let dir = tempfile::tempdir().unwrap();
        let mut rng = 0x9e37_79b9_7f4a_7c15;
        let mut log = MetricsLog::create(dir.path()).unwrap();
        let mut pushed = Vec::new();
        for i in 1..=400 {
            let mut row = odd_row(i, &mut rng);
            row.extra = (0..8).map(|k| (format!("m{k}"), finite(&mut rng))).collect();
            row.extra.insert("decimal".into(), [0.1, 1.0 / 3.0, 2.5e-4, 1e23, 9_007_199_254_740_993.0, 1e-7][i as usize % 6]);
            pushed.push(row.clone());
            log.push(row).unwrap();
        }
        take_at(dir.path(), 400, &mut log);
        let back = rows_of(&load(dir.path(), "a").unwrap().unwrap(), dir.path());
        assert_eq!(back.len(), 400);
        for (a, b) in pushed.iter().zip(&back) {
            assert_eq!(row_bits(a), row_bits(b), "row {}", a.iteration);
        }
    }

    /// Review (checkpoint size): a run whose plugin reports NaN and ±inf, checkpointed and
    /// killed (rows and half a line written after the checkpoint), resumes to the same
    /// `metrics.jsonl` and `metrics.parquet` bytes and rows as the uninterrupted run, and its
    /// next checkpoint, taken after the resume, holds too.
    #[test]
    fn nan_and_inf_plugin_metrics_resume_bit_exact() {
        let rows: Vec<MetricsRow> = {
            let mut rng = 42;
            (1..=60).map(|i| odd_row(i, &mut rng)).collect()
        };
        let whole = tempfile::tempdir().unwrap();
        let mut reference = MetricsLog::create(whole.path()).unwrap();
        for row in &rows {
            reference.push(row.clone()).unwrap();
        }
        reference.write_parquet(&whole.path().join("metrics.parquet"), |_| {}).unwrap();

        let dir = tempfile::tempdir().unwrap();
        let mut log = MetricsLog::create(dir.path()).unwrap();
        for row in &rows[..25] {
            log.push(row.clone()).unwrap();
        }
        take_at(dir.path(), 25, &mut log);
        for row in &rows[25..28] {
            log.push(row.clone()).unwrap();
        }
        drop(log);
        let jsonl = dir.path().join(metrics::METRICS_JSONL);
        std::fs::OpenOptions::new().append(true).open(&jsonl).unwrap().write_all(b"{\"iteration\":29,\"glo").unwrap();

        let ck = load(dir.path(), "a").unwrap().unwrap();
        let resumed = ck.metrics(dir.path()).unwrap();
        let got: Vec<_> = rows_of(&ck, dir.path()).iter().map(row_bits).collect();
        assert_eq!(got, rows[..25].iter().map(row_bits).collect::<Vec<_>>());
        let mut log = MetricsLog::resume(dir.path(), resumed).unwrap();
        for row in &rows[25..40] {
            log.push(row.clone()).unwrap();
        }
        take_at(dir.path(), 40, &mut log);
        let again = rows_of(&load(dir.path(), "a").unwrap().unwrap(), dir.path());
        assert_eq!(again.iter().map(row_bits).collect::<Vec<_>>(), rows[..40].iter().map(row_bits).collect::<Vec<_>>());
        for row in &rows[40..] {
            log.push(row.clone()).unwrap();
        }
        log.write_parquet(&dir.path().join("metrics.parquet"), |_| {}).unwrap();
        for name in [metrics::METRICS_JSONL, "metrics.parquet"] {
            let (a, b) = (std::fs::read(whole.path().join(name)).unwrap(), std::fs::read(dir.path().join(name)).unwrap());
            assert!(a == b, "{name} differs from the uninterrupted run's");
        }
    }

    /// A `metrics.jsonl` that is not what the checkpoint vouches for refuses the resume, saying
    /// why; lines after the prefix do not matter.
    #[test]
    fn a_metrics_jsonl_unlike_the_checkpoint_refuses_the_resume() {
        let dir = tempfile::tempdir().unwrap();
        let mut rng = 3;
        let mut log = MetricsLog::create(dir.path()).unwrap();
        for i in 1..=5 {
            log.push(odd_row(i, &mut rng)).unwrap();
        }
        take_at(dir.path(), 5, &mut log);
        drop(log);
        let jsonl = dir.path().join(metrics::METRICS_JSONL);
        let good = std::fs::read(&jsonl).unwrap();
        let ck = load(dir.path(), "a").unwrap().unwrap();
        let refusal = |bytes: Option<&[u8]>, ck: &Checkpoint| {
            match bytes {
                Some(b) => std::fs::write(&jsonl, b).unwrap(),
                None => std::fs::remove_file(&jsonl).unwrap(),
            }
            ck.metrics(dir.path()).expect_err("refused")
        };
        let mut edited = good.clone();
        let at = edited.iter().position(|&b| b.is_ascii_digit()).unwrap();
        edited[at] = if edited[at] == b'9' { b'8' } else { edited[at] + 1 };
        assert!(refusal(Some(&edited), &ck).contains("SHA-256"));
        let e = refusal(Some(&good[..good.len() - 1]), &ck);
        assert!(e.contains(&format!("holds {} bytes, the checkpoint vouches for its first {}", good.len() - 1, good.len())), "{e}");
        assert!(refusal(None, &ck).contains("cannot read `metrics.jsonl`"));
        // The non-finite cells the checkpoint lists are what tells a NaN from a `None`.
        let mut forgot = ck.clone();
        forgot.metrics_jsonl.as_mut().unwrap().non_finite.retain(|c| c.column != "std");
        let e = refusal(Some(&good), &forgot);
        assert!(e.contains("line 1: `std` is null and the checkpoint lists no non-finite value"), "{e}");
        let mut longer = good.clone();
        longer.extend_from_slice(b"{\"iteration\":6}\n{\"trunc");
        let back = refusal_free(&jsonl, &longer, &ck, dir.path());
        assert_eq!(back, 5);
        let text = std::fs::read(&jsonl).unwrap();
        assert_eq!(text, good, "the lines after the prefix are cut on resume");
    }

    fn refusal_free(jsonl: &Path, bytes: &[u8], ck: &Checkpoint, dir: &Path) -> usize {
        std::fs::write(jsonl, bytes).unwrap();
        let resumed = ck.metrics(dir).unwrap();
        MetricsLog::resume(dir, resumed).unwrap().rows() as usize
    }

    /// A format-2 checkpoint (rows inline, written by the format-2 writer's `encode_row`)
    /// still resumes: the rows come from it, `metrics.jsonl` is rewritten from them, and the
    /// next checkpoint is format 3.
    #[test]
    fn a_version_2_checkpoint_with_inline_rows_still_resumes() {
        let dir = tempfile::tempdir().unwrap();
        let mut rng = 11;
        let rows: Vec<MetricsRow> = (1..=3).map(|i| odd_row(i, &mut rng)).collect();
        let v2 = serde_json::json!({
            "format_version": 2,
            "run_id": "a",
            "iteration": 3,
            "wall_time_s": 2.5,
            "engine": EngineRecord::from(&EngineState::default()),
            "perm": [1, 0],
            "rows": rows.iter().map(|r| encode_row(r).unwrap()).collect::<Vec<_>>(),
            "next_group_sizes": [2, 2],
            "plugin_state": PluginStateRecord::new("knapsack", "0.1.0", &[1, 2]),
            "compute": "cpu/portable",
        });
        std::fs::write(dir.path().join(CHECKPOINT_JSON), v2.to_string()).unwrap();
        std::fs::write(dir.path().join(metrics::METRICS_JSONL), "whatever the interrupted attempt left\n").unwrap();
        let ck = load(dir.path(), "a").unwrap().expect("a format-2 checkpoint loads");
        assert_eq!((ck.format_version, ck.next_group_sizes.clone(), ck.metrics_jsonl.clone()), (2, vec![2, 2], None));
        let resumed = ck.metrics(dir.path()).unwrap();
        assert_eq!(rows_of(&ck, dir.path()).iter().map(row_bits).collect::<Vec<_>>(), rows.iter().map(row_bits).collect::<Vec<_>>());
        let mut log = MetricsLog::resume(dir.path(), resumed).unwrap();
        let text = std::fs::read_to_string(dir.path().join(metrics::METRICS_JSONL)).unwrap();
        let want: String = rows.iter().map(|r| serde_json::to_string(r).unwrap() + "\n").collect();
        assert_eq!(text, want, "rewritten from the checkpoint's rows");
        take_at(dir.path(), 3, &mut log);
        let ck = load(dir.path(), "a").unwrap().unwrap();
        assert_eq!((ck.format_version, ck.rows.len()), (CHECKPOINT_FORMAT_VERSION, 0));
        assert_eq!(rows_of(&ck, dir.path()).iter().map(row_bits).collect::<Vec<_>>(), rows.iter().map(row_bits).collect::<Vec<_>>());
    }

    #[test]
    fn checkpoint_of_another_run_or_version_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load(dir.path(), "a").unwrap().is_none());
        let metrics_jsonl = Some(MetricsLog::create(dir.path()).unwrap().checkpoint_prefix().unwrap());
        let ck = Checkpoint {
            format_version: CHECKPOINT_FORMAT_VERSION,
            run_id: "a".into(),
            iteration: 0,
            wall_time_s: 0.0,
            engine: EngineRecord::from(&EngineState::default()),
            perm: vec![1, 0],
            rows: Vec::new(),
            metrics_jsonl,
            next_group_sizes: Vec::new(),
            plugin_state: None,
            compute: Some("cpu/avx2".into()),
            computes: Vec::new(),
            plugin_sha256: None,
            plugin_sha256s: Vec::new(),
        };
        save(dir.path(), &ck).unwrap();
        let back = load(dir.path(), "a").unwrap().unwrap();
        assert_eq!((back.perm, back.compute.as_deref()), (vec![1, 0], Some("cpu/avx2")));
        let err = load(dir.path(), "b").unwrap_err().to_string();
        assert!(err.contains("belongs to run a, not b"), "{err}");
        let text = std::fs::read_to_string(dir.path().join(CHECKPOINT_JSON)).unwrap();
        std::fs::write(dir.path().join(CHECKPOINT_JSON), text.replace("\"format_version\":3", "\"format_version\":9")).unwrap();
        let err = load(dir.path(), "a").unwrap_err().to_string();
        assert!(err.contains(": unknown format_version 9 (this drover-job reads 1, 2 and 3): another release of drover-job wrote it"), "{err}");
        let e = load(dir.path(), "a").expect_err("a later format");
        assert!(matches!(e, JobError::CheckpointFormat { found: 9, .. }), "{e:?}");
        assert_eq!(crate::summary::failure_cause(&e), crate::summary::cause::CHECKPOINT_FORMAT);
        std::fs::write(dir.path().join(CHECKPOINT_JSON), text.replace("\"format_version\":3,", "")).unwrap();
        let err = load(dir.path(), "a").unwrap_err().to_string();
        assert!(err.ends_with(": no format_version (this drover-job reads 1, 2 and 3)"), "{err}");
        // No version, or one below every format: damage, not another release's checkpoint.
        let e = load(dir.path(), "a").expect_err("no version");
        assert_eq!(crate::summary::failure_cause(&e), crate::summary::cause::CHECKPOINT);
    }

    /// A checkpoint written by a format-1 drover-job (before plugin state): it still resumes,
    /// with no plugin state and the run's `group_size` for the next batch.
    #[test]
    fn a_version_1_checkpoint_still_resumes_without_plugin_state() {
        let dir = tempfile::tempdir().unwrap();
        let mut v1 = serde_json::json!({
            "format_version": 1,
            "run_id": "a",
            "iteration": 1,
            "wall_time_s": 2.5,
            "engine": EngineRecord::from(&EngineState::default()),
            "perm": [2, 0, 1],
            "rows": [],
        });
        v1["rows"] = serde_json::json!([encode_row(&MetricsRow {
            iteration: 1,
            global_step: 3,
            episodic_return_mean: None,
            episodes: 0,
            policy_loss: None,
            value_loss: None,
            entropy: None,
            approx_kl: None,
            clip_frac: None,
            lr: 0.1,
            steps_per_sec: 1.0,
            wall_time_s: 2.5,
            extra: Default::default(),
        })
        .unwrap()]);
        std::fs::write(dir.path().join(CHECKPOINT_JSON), v1.to_string()).unwrap();
        let ck = load(dir.path(), "a").unwrap().expect("a format-1 checkpoint loads");
        assert_eq!((ck.format_version, ck.iteration, ck.perm.clone()), (1, 1, vec![2, 0, 1]));
        assert_eq!((ck.plugin_state.clone(), ck.compute.clone()), (None, None));
        assert!(ck.next_group_sizes.is_empty());
        assert_eq!(ck.metrics(dir.path()).unwrap().rows(), 1);
        assert_eq!(rows_of(&ck, dir.path())[0].lr, 0.1);
    }

    /// The level a resume takes: the checkpoint's where this CPU runs it and `DROVER_SIMD`
    /// does not pin another; otherwise the current one, with the reason the run is no longer
    /// bit for bit.
    #[test]
    fn a_resume_goes_on_at_the_checkpoints_level_where_it_can() {
        use ResumeLevel::{Differs, Same, Switch};
        assert_eq!(resume_level(None, "cpu/avx512", false), Same);
        assert_eq!(resume_level(Some("cpu/avx2"), "cpu/avx2", true), Same);
        assert_eq!(resume_level(Some("cuda"), "cuda", false), Same);
        assert_eq!(resume_level(Some("cpu/portable"), "cpu/avx512", false), Switch(SimdLevel::Portable));
        let why = |r: ResumeLevel| match r {
            Differs(why) => why,
            other => panic!("expected a reason, got {other:?}"),
        };
        let pinned = why(resume_level(Some("cpu/portable"), "cpu/avx2", true));
        assert!(pinned.contains("`cpu/portable`") && pinned.contains("`cpu/avx2`") && pinned.contains("DROVER_SIMD pins it"), "{pinned}");
        assert!(pinned.contains("not bit for bit"), "{pinned}");
        assert!(why(resume_level(Some("cuda"), "cpu/avx2", false)).contains("another device"));
        assert!(why(resume_level(Some("cpu/avx2"), "cuda", false)).contains("another device"));
        assert!(why(resume_level(Some("cpu/sve2"), "cpu/avx2", false)).contains("does not know"));
        // A level this CPU lacks and computes no twin of (where one exists here).
        if let Some(missing) = SimdLevel::ALL.into_iter().find(|l| l.here().is_none()) {
            let r = resume_level(Some(&format!("cpu/{}", missing.name())), "cpu/portable", false);
            assert!(why(r).contains("this CPU cannot run"));
        }
        // AVX2 and NEON compute the same bits: a checkpoint of one goes on at the other.
        for (a, b) in [(SimdLevel::Avx2, SimdLevel::Neon), (SimdLevel::Neon, SimdLevel::Avx2)] {
            if !b.is_supported() {
                continue;
            }
            let (rec, cur) = (format!("cpu/{}", a.name()), format!("cpu/{}", b.name()));
            assert_eq!(resume_level(Some(&rec), &cur, false), Same, "{rec} resumed at {cur}");
            assert_eq!(resume_level(Some(&rec), &cur, true), Same, "{rec} resumed at {cur}, pinned");
            assert_eq!(resume_level(Some(&rec), "cpu/portable", false), Switch(b), "{rec} resumed at portable");
        }
    }

    #[test]
    fn plugin_state_round_trips_as_hex_and_bad_hex_is_named() {
        let bytes = [0u8, 0x7b, 0xff, 0x10];
        let record = PluginStateRecord::new("knapsack", "0.1.0", &bytes);
        assert_eq!(record.hex, "007bff10");
        assert_eq!(record.bytes().unwrap(), bytes);
        let dir = tempfile::tempdir().unwrap();
        let ck = Checkpoint {
            format_version: CHECKPOINT_FORMAT_VERSION,
            run_id: "a".into(),
            iteration: 0,
            wall_time_s: 0.0,
            engine: EngineRecord::from(&EngineState::default()),
            perm: vec![0],
            rows: Vec::new(),
            metrics_jsonl: Some(MetricsLog::create(dir.path()).unwrap().checkpoint_prefix().unwrap()),
            next_group_sizes: vec![3, 0, 5],
            plugin_state: Some(record.clone()),
            compute: None,
            computes: Vec::new(),
            plugin_sha256: None,
            plugin_sha256s: Vec::new(),
        };
        save(dir.path(), &ck).unwrap();
        let back = load(dir.path(), "a").unwrap().unwrap();
        assert_eq!(back.plugin_state, Some(record));
        assert_eq!(back.next_group_sizes, [3, 0, 5]);
        let odd = PluginStateRecord { hex: "abc".into(), ..PluginStateRecord::new("k", "1", &[]) };
        assert_eq!(odd.bytes().unwrap_err(), "`plugin_state.hex` has an odd number of digits (3)");
        let bad = PluginStateRecord { hex: "00zz".into(), ..odd };
        assert_eq!(bad.bytes().unwrap_err(), "`plugin_state.hex`: byte 1 is not two hex digits");
    }

    #[test]
    fn interruptions_are_counted_per_reason() {
        let dir = tempfile::tempdir().unwrap();
        record_interruption(dir.path(), Interruption::TimeLimit, 3).unwrap();
        record_interruption(dir.path(), Interruption::Terminated, 5).unwrap();
        record_interruption(dir.path(), Interruption::TimeLimit, 8).unwrap();
        assert_eq!(count_interruptions(dir.path(), Interruption::TimeLimit), 2);
        assert_eq!(count_interruptions(dir.path(), Interruption::Terminated), 1);
    }

    /// Review (format versions, item 6): an `interruptions.jsonl` line carried the checkpoint's
    /// version, so a new checkpoint format would have renumbered lines that did not change. Its
    /// own constant keeps the number lines written so far carry.
    #[test]
    fn interruption_lines_carry_their_own_format_version() {
        let dir = tempfile::tempdir().unwrap();
        record_interruption(dir.path(), Interruption::TimeLimit, 3).unwrap();
        let text = std::fs::read_to_string(dir.path().join(INTERRUPTIONS_JSONL)).unwrap();
        let line: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(line["format_version"], 2, "{line}");
        assert_eq!(INTERRUPTIONS_FORMAT_VERSION, 2, "the number the lines written so far carry");
        // Lines of every version written so far read back (the fields never changed).
        let old = r#"{"format_version":1,"reason":"time_limit","iteration":1,"slurm_job_id":null,"at":"0"}"#;
        std::fs::write(dir.path().join(INTERRUPTIONS_JSONL), format!("{old}\n{}", text)).unwrap();
        assert_eq!(count_interruptions(dir.path(), Interruption::TimeLimit), 2);
    }

    #[test]
    fn budgets_are_separate_for_time_limits_and_preemptions() {
        let dir = tempfile::tempdir().unwrap();
        let budgets = Budgets { max_timeouts: 1, max_preemptions: 1 };
        assert_eq!(after_stop(dir.path(), StopCause::CheckpointSignal, 2, budgets).unwrap(), AfterStop::Requeue);
        assert!(matches!(after_stop(dir.path(), StopCause::Terminate, 3, budgets).unwrap(), AfterStop::Cancelled(_)));
        assert_eq!(preemption_budget_spent(dir.path(), budgets, None), None, "one preemption is within budget");
        let second = after_stop(dir.path(), StopCause::CheckpointSignal, 4, budgets).unwrap();
        assert_eq!(
            second,
            AfterStop::Failed("reached the time limit 2 times (max_timeouts = 1); checkpoint at iteration 4".into())
        );
        after_stop(dir.path(), StopCause::Terminate, 5, budgets).unwrap();
        assert_eq!(preemption_budget_spent(dir.path(), budgets, None).as_deref(), Some("preempted 2 times (max_preemptions = 1)"));
    }

    /// `drover cancel` and a rerun are a new Slurm job: the stops of earlier submissions do not
    /// spend this one's preemption budget, while requeues of one job (same id) do.
    #[test]
    fn only_this_jobs_stops_count_as_preemptions() {
        let dir = tempfile::tempdir().unwrap();
        let budgets = Budgets { max_timeouts: 1, max_preemptions: 1 };
        let line = |job: Option<&str>, it: u64| {
            let record = InterruptionRecord { format_version: INTERRUPTIONS_FORMAT_VERSION, reason: Interruption::Terminated, iteration: it, slurm_job_id: job.map(Into::into), at: "0".into() };
            serde_json::to_string(&record).unwrap() + "\n"
        };
        let text = [line(Some("941"), 3), line(Some("952"), 6), line(Some("963"), 9)].concat();
        std::fs::write(dir.path().join(INTERRUPTIONS_JSONL), &text).unwrap();
        assert_eq!(preemption_budget_spent(dir.path(), budgets, Some("970")), None, "three cancelled submissions, a fresh one");
        std::fs::write(dir.path().join(INTERRUPTIONS_JSONL), text + &line(Some("970"), 12) + &line(Some("970"), 15)).unwrap();
        assert_eq!(preemption_budget_spent(dir.path(), budgets, Some("970")).as_deref(), Some("preempted 2 times (max_preemptions = 1)"));
        assert_eq!(preemption_budget_spent(dir.path(), budgets, None).as_deref(), Some("preempted 5 times (max_preemptions = 1)"));
    }

    /// A CartPole CPU engine stepping `local` environments from global index `offset`, after
    /// one rollout (so every env field holds something).
    fn stepped_engine(local: usize, offset: usize) -> Box<dyn Engine> {
        use drover_kernels::{create_engine, AdamConfig, DeviceRequest, EngineConfig, NetShape, Rollout};
        let config = EngineConfig {
            num_envs: local,
            env_offset: offset,
            num_steps: 37,
            seed: 11,
            shape: NetShape { obs_dim: 4, hidden: vec![8], n_actions: 2 },
            adam: AdamConfig::default(),
            threads: 1,
            cuda_ordinal: 0,
        };
        let mut engine = create_engine(DeviceRequest::Cpu, config).expect("cpu engine");
        engine.rollout(&mut Rollout::default()).expect("rollout");
        engine
    }

    /// Two ranks' environments, gathered, are bit for bit the state of one rank stepping them
    /// all (global env index = offset + local index, so the RNG streams match), and each rank
    /// gets its own share back.
    #[test]
    fn a_job_engine_state_is_the_one_rank_state_and_splits_back_per_rank() {
        let (n, half) = (10, 5);
        let one = stepped_engine(n, 0).save_state().expect("snapshot");
        let gathered = crate::comm::testing::threads(2, |comm| {
            let engine = stepped_engine(half, comm.rank() * half);
            let state = job_engine_state(engine.as_ref(), comm, n, comm.rank() * half).expect("collective").expect("state");
            (state, engine.save_state().expect("own snapshot"))
        });
        for (rank, (state, own)) in gathered.iter().enumerate() {
            assert_eq!(env_fields(state), env_fields(&one), "rank {rank}: gathered env state");
            assert_eq!((bits(&state.params), state.step), (bits(&one.params), one.step));
            let back = rank_engine_state(state.clone(), n, rank * half, half).expect("slice");
            assert_eq!(env_fields(&back), env_fields(own), "rank {rank}: its own share");
        }
        assert!(one.theta.iter().any(|&t| t != 0.0), "the rollout moved the poles");
        let e = rank_engine_state(one, 12, 0, 6).expect_err("another env count");
        assert_eq!(e, "the engine state holds 10 environments, the spec has 12");
    }

    /// Rank 0 alone records the interruption; every rank leaves with its decision.
    #[test]
    fn the_stop_decision_is_rank_zeros_and_recorded_once() {
        let dir = tempfile::tempdir().unwrap();
        let budgets = Budgets { max_timeouts: 1, max_preemptions: 5 };
        let decide = || {
            crate::comm::testing::threads(3, |comm| {
                after_stop_on_all_ranks(comm, dir.path(), StopCause::CheckpointSignal, 4, budgets).expect("decided")
            })
        };
        assert_eq!(decide(), vec![AfterStop::Requeue; 3]);
        assert_eq!(count_interruptions(dir.path(), Interruption::TimeLimit), 1);
        let second = decide();
        assert!(matches!(&second[0], AfterStop::Failed(r) if r.contains("max_timeouts = 1")), "{second:?}");
        assert!(second[1..].iter().all(|d| matches!(d, AfterStop::Failed(r) if r.contains("rank 0"))), "{second:?}");
        assert_eq!(count_interruptions(dir.path(), Interruption::TimeLimit), 2);
    }
}
