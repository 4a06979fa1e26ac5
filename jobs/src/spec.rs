//! `JobSpec`: the one input of `drover-job`, written by the orchestrator as `runs/<id>/spec.json`
//! (format in docs/design/results-layout.md).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::JobError;

/// The spec format this runtime reads.
pub const SPEC_FORMAT_VERSION: u32 = 1;

/// One run, fully resolved by the orchestrator.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobSpec {
    /// On-disk format version; must equal [`SPEC_FORMAT_VERSION`].
    pub format_version: u32,
    /// Stable id of this run.
    pub run_id: String,
    /// Stable id of this run's configuration without its seed.
    pub config_id: String,
    /// Sweep name.
    pub sweep: String,
    /// Human-readable axis values of this run.
    #[serde(default)]
    pub label: String,
    /// Axis values of this run (dotted key → value).
    #[serde(default)]
    pub axes: BTreeMap<String, serde_json::Value>,
    /// Training settings owned by drover.
    pub run: RunSettings,
    /// Algorithm parameters, handed to the plugin verbatim.
    #[serde(default)]
    pub params: serde_json::Map<String, serde_json::Value>,
    /// Absolute path of the plugin `.so`.
    pub plugin_path: PathBuf,
}

/// The `run` table: everything drover itself (not the plugin) needs to train.
#[derive(Debug, Clone, Deserialize)]
pub struct RunSettings {
    /// Environment id; only `CartPole-v1` exists so far.
    pub env: String,
    /// Plugin name or path, as written in the sweep file.
    pub plugin: String,
    /// Parallel environments of this run.
    pub num_envs: usize,
    /// Steps per environment per rollout.
    pub num_steps: usize,
    /// Environment steps to train for.
    pub total_steps: u64,
    /// Hidden layer widths of actor and critic.
    pub hidden: Vec<usize>,
    /// `cpu`, `cuda` or `auto`.
    pub device: String,
    /// MPI ranks of the job (1: no MPI).
    #[serde(default = "one")]
    pub ranks: usize,
    /// CPU threads for the engine (0 = all cores).
    #[serde(default)]
    pub threads: usize,
    /// Run seed.
    pub seed: u64,
    /// Adam learning rate.
    pub lr: f64,
    /// Anneal the learning rate linearly to 0 over the run.
    #[serde(default = "yes")]
    pub anneal_lr: bool,
    /// Adam epsilon.
    #[serde(default = "adam_eps")]
    pub adam_eps: f64,
    /// Global gradient-norm clip (<= 0 disables it).
    #[serde(default = "max_grad_norm")]
    pub max_grad_norm: f64,
    /// Passes over each rollout.
    pub update_epochs: usize,
    /// Minibatches per pass.
    pub num_minibatches: usize,
    /// Return that counts as solved, for `steps_to_threshold`.
    #[serde(default = "success_return")]
    pub success_return: f64,
    /// Stop training once the threshold is reached.
    #[serde(default)]
    pub stop_at_success: bool,
}

fn one() -> usize {
    1
}
fn yes() -> bool {
    true
}
fn adam_eps() -> f64 {
    1e-5
}
fn max_grad_norm() -> f64 {
    0.5
}
fn success_return() -> f64 {
    475.0
}

impl JobSpec {
    /// Reads and checks a spec file.
    pub fn load(path: &Path) -> Result<Self, JobError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| JobError::Spec { path: path.to_path_buf(), reason: e.to_string() })?;
        let spec: JobSpec = serde_json::from_str(&text)
            .map_err(|e| JobError::Spec { path: path.to_path_buf(), reason: e.to_string() })?;
        spec.check(path)?;
        Ok(spec)
    }

    fn check(&self, path: &Path) -> Result<(), JobError> {
        let bad = |key: &str, reason: String| JobError::SpecValue {
            path: path.to_path_buf(),
            key: key.to_string(),
            reason,
        };
        if self.format_version != SPEC_FORMAT_VERSION {
            return Err(bad(
                "format_version",
                format!(
                    "this drover-job reads format {SPEC_FORMAT_VERSION}, the spec has {}",
                    self.format_version
                ),
            ));
        }
        let r = &self.run;
        if r.env != "CartPole-v1" {
            return Err(bad("run.env", format!("unknown environment `{}` (known: CartPole-v1)", r.env)));
        }
        if r.num_envs == 0 || r.num_steps == 0 {
            return Err(bad("run.num_envs", "num_envs and num_steps must be at least 1".into()));
        }
        if r.update_epochs == 0 || r.num_minibatches == 0 {
            return Err(bad("run.num_minibatches", "update_epochs and num_minibatches must be at least 1".into()));
        }
        let batch = r.num_envs * r.num_steps;
        if batch % r.num_minibatches != 0 {
            return Err(bad(
                "run.num_minibatches",
                format!("num_envs * num_steps = {batch} is not divisible by num_minibatches = {}", r.num_minibatches),
            ));
        }
        if r.ranks == 0 || r.num_envs % r.ranks != 0 {
            return Err(bad(
                "run.ranks",
                format!("ranks = {} must be at least 1 and divide num_envs = {}", r.ranks, r.num_envs),
            ));
        }
        if r.hidden.is_empty() || r.hidden.contains(&0) {
            return Err(bad("run.hidden", "needs at least one layer, each of width >= 1".into()));
        }
        if !(r.lr.is_finite() && r.lr > 0.0) {
            return Err(bad("run.lr", format!("must be a positive number, got {}", r.lr)));
        }
        if !matches!(r.device.as_str(), "cpu" | "cuda" | "auto") {
            return Err(bad("run.device", format!("expected cpu, cuda or auto, got `{}`", r.device)));
        }
        Ok(())
    }
}
