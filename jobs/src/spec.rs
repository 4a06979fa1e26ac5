//! `JobSpec`: the one input of `drover-job`, written by the orchestrator as `runs/<id>/spec.json`
//! (format in docs/design/results-layout.md).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use drover_kernels::{SeqTask, TaskFamily};
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
    /// Environment id: `CartPole-v1` or a sequence task (`SeqReverse-v0`, `SeqSort-v0`, `SeqAdd-v0`).
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
    /// Sequence tasks: responses per prompt (default 8).
    #[serde(default)]
    pub group_size: Option<usize>,
    /// Sequence tasks: vocabulary size (default 8).
    #[serde(default)]
    pub vocab: Option<usize>,
    /// Sequence tasks: prompt length (default 3).
    #[serde(default)]
    pub prompt_len: Option<usize>,
    /// Sequence tasks: the last `expert_per_group` responses of each group are the task's
    /// answer, teacher-forced (CHORD's expert samples); default 0, less than `group_size`.
    #[serde(default)]
    pub expert_per_group: Option<usize>,
    /// `none` (default) or `initial`: the frozen initial policy gives plugins `logp_ref`.
    #[serde(default)]
    pub reference_policy: Option<String>,
    /// Sequence tasks: train on a fixed dataset of this many prompts, visited in a seeded
    /// order per epoch, instead of fresh prompts every rollout (Knapsack RL's per-prompt
    /// budgets need prompts that come back). At least `num_envs / group_size`.
    #[serde(default)]
    pub dataset_size: Option<usize>,
    /// Sequence tasks: most generation batches per iteration (DAPO's dynamic sampling keeps
    /// generating until the plugin's `keep_group` accepted enough groups); default 1.
    #[serde(default)]
    pub max_gen_batches: Option<usize>,
}

impl RunSettings {
    /// The sequence task `env` names, with the defaults the orchestrator documents; `None` for
    /// CartPole; an error for an unknown environment.
    pub fn task(&self) -> Result<Option<SeqTask>, String> {
        let family = match self.env.as_str() {
            "CartPole-v1" => return Ok(None),
            "SeqReverse-v0" => TaskFamily::Reverse,
            "SeqSort-v0" => TaskFamily::Sort,
            "SeqAdd-v0" => TaskFamily::Add,
            other => {
                return Err(format!(
                    "unknown environment `{other}` (known: CartPole-v1, SeqReverse-v0, SeqSort-v0, SeqAdd-v0)"
                ))
            }
        };
        Ok(Some(SeqTask {
            family,
            vocab: self.vocab.unwrap_or(8),
            prompt_len: self.prompt_len.unwrap_or(3),
            group_size: self.group_size.unwrap_or(8),
            expert_per_group: self.expert_per_group.unwrap_or(0),
        }))
    }

    /// Whether plugins get `logp_ref` from the frozen initial policy.
    pub fn initial_reference(&self) -> bool {
        self.reference_policy.as_deref() == Some("initial")
    }
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
        // SAFETY: geteuid has no preconditions.
        Self::load_as(path, unsafe { libc::geteuid() })
    }

    /// [`JobSpec::load`] for the user `euid`. The spec names the plugin library this job loads
    /// and runs: a spec another user owns (a results directory they can write) would let them
    /// run code as this job's user, so it is refused. Root's files are trusted (root can do
    /// anything anyway).
    fn load_as(path: &Path, euid: u32) -> Result<Self, JobError> {
        use std::io::Read;
        use std::os::unix::fs::MetadataExt;
        let spec_error = |reason: String| JobError::Spec { path: path.to_path_buf(), reason };
        let mut file = std::fs::File::open(path).map_err(|e| spec_error(e.to_string()))?;
        let owner = file.metadata().map_err(|e| spec_error(e.to_string()))?.uid();
        // Root runs any spec, as `drover run` lets root use another user's results directory
        // (a container running as root over the host user's bind mount).
        // Nor does a spec the kernel shows as the unmapped user's (an NFSv4 id it cannot map,
        // an `all_squash` export) stop the job: its real owner is unknown, likely this user.
        let unmapped = std::fs::read_to_string("/proc/sys/fs/overflowuid").ok().and_then(|s| s.trim().parse().ok()).unwrap_or(65_534);
        if owner != euid && owner != 0 && euid != 0 && owner != unmapped {
            return Err(spec_error(format!(
                "it belongs to uid {owner}, not to this job's user (uid {euid}): whoever owns a spec chooses the plugin library the job loads and so runs code as you; drover-job runs only specs of your own (use a results directory only you can write)"
            )));
        }
        let mut text = String::new();
        file.read_to_string(&mut text).map_err(|e| spec_error(e.to_string()))?;
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
        let task = r.task().map_err(|reason| bad("run.env", reason))?;
        if let Some(task) = task {
            if task.expert_per_group > 0 && task.expert_per_group >= task.group_size {
                return Err(bad(
                    "run.expert_per_group",
                    format!(
                        "must be less than group_size = {} (each group needs a sampled response), got {}",
                        task.group_size, task.expert_per_group
                    ),
                ));
            }
            task.validate().map_err(|e| bad("run.env", e.to_string()))?;
            if r.num_steps != task.response_len() {
                return Err(bad(
                    "run.num_steps",
                    format!("must equal the response length {} of {}", task.response_len(), r.env),
                ));
            }
            if !(r.num_envs / r.ranks.max(1)).is_multiple_of(task.group_size) || !r.num_envs.is_multiple_of(r.num_minibatches) {
                return Err(bad(
                    "run.group_size",
                    format!(
                        "num_envs / ranks must be a multiple of group_size = {} and num_envs of num_minibatches = {}",
                        task.group_size, r.num_minibatches
                    ),
                ));
            }
            let per_batch = r.num_envs / task.group_size;
            if let Some(d) = r.dataset_size.filter(|&d| d < per_batch || d > 1 << 24) {
                return Err(bad(
                    "run.dataset_size",
                    format!("{d} prompts: must be at least the {per_batch} prompts of one generation batch and at most 2^24"),
                ));
            }
            if r.max_gen_batches == Some(0) {
                return Err(bad("run.max_gen_batches", "must be at least 1".into()));
            }
        } else if r.group_size.is_some()
            || r.vocab.is_some()
            || r.prompt_len.is_some()
            || r.expert_per_group.is_some()
            || r.dataset_size.is_some()
            || r.max_gen_batches.is_some()
        {
            return Err(bad(
                "run.env",
                format!(
                    "group_size, vocab, prompt_len, expert_per_group, dataset_size and max_gen_batches are for sequence tasks, not {}",
                    r.env
                ),
            ));
        }
        if !matches!(r.reference_policy.as_deref(), None | Some("none" | "initial")) {
            return Err(bad("run.reference_policy", "expected `none` or `initial`".into()));
        }
        if r.num_envs == 0 || r.num_steps == 0 {
            return Err(bad("run.num_envs", "num_envs and num_steps must be at least 1".into()));
        }
        if r.update_epochs == 0 || r.num_minibatches == 0 {
            return Err(bad("run.num_minibatches", "update_epochs and num_minibatches must be at least 1".into()));
        }
        let batch = r.num_envs * r.num_steps;
        if !batch.is_multiple_of(r.num_minibatches) {
            return Err(bad(
                "run.num_minibatches",
                format!("num_envs * num_steps = {batch} is not divisible by num_minibatches = {}", r.num_minibatches),
            ));
        }
        if r.ranks == 0 || !r.num_envs.is_multiple_of(r.ranks) {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Security review F1: `drover-job` loaded whatever plugin a `spec.json` named, whoever
    /// wrote it; one that another user owns is refused now, before it is read.
    #[test]
    fn a_spec_another_user_owns_is_refused() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spec.json");
        std::fs::write(&path, "not even json").unwrap();
        let mut owner = std::fs::metadata(&path).unwrap().uid();
        if owner == 0 {
            // Root's files are trusted: as root, give this one to an ordinary user.
            std::os::unix::fs::chown(&path, Some(4_242), None).unwrap();
            owner = 4_242;
        }
        let err = JobSpec::load_as(&path, owner + 1).unwrap_err().to_string();
        assert!(err.contains("spec.json") && err.contains(&format!("belongs to uid {owner}")) && err.contains("plugin library"), "{err}");
        let mine = JobSpec::load_as(&path, owner).unwrap_err().to_string();
        assert!(!mine.contains("belongs to"), "its own spec is read (and this one is not JSON): {mine}");
        let as_root = JobSpec::load_as(&path, 0).unwrap_err().to_string();
        assert!(!as_root.contains("belongs to"), "root reads any spec (a container over a bind mount): {as_root}");
        if std::fs::metadata(dir.path()).unwrap().uid() == 0 {
            // Review: a spec the kernel shows as the unmapped user's (NFSv4 idmap, all_squash)
            // has an unknown owner, likely this user: it is read.
            std::os::unix::fs::chown(&path, Some(65_534), None).unwrap();
            let unmapped = JobSpec::load_as(&path, 4_243).unwrap_err().to_string();
            assert!(!unmapped.contains("belongs to"), "{unmapped}");
        }
    }

    fn spec(run_extra: &str, env: &str) -> JobSpec {
        let text = format!(
            r#"{{"format_version": 1, "run_id": "r", "config_id": "c", "sweep": "s", "plugin_path": "/x.so",
                "run": {{"env": "{env}", "plugin": "chord", "num_envs": 16, "num_steps": 2, "total_steps": 64,
                         "hidden": [8], "device": "cpu", "seed": 1, "lr": 0.001, "update_epochs": 1,
                         "num_minibatches": 2{run_extra}}}}}"#
        );
        serde_json::from_str(&text).expect("spec parses")
    }

    fn error(s: &JobSpec) -> String {
        s.check(Path::new("spec.json")).map_err(|e| e.to_string()).err().unwrap_or_default()
    }

    #[test]
    fn expert_per_group_is_checked_and_reaches_the_task() {
        let seq = r#", "vocab": 4, "prompt_len": 2, "group_size": 4"#;
        let ok = spec(&format!(r#"{seq}, "expert_per_group": 1"#), "SeqAdd-v0");
        assert_eq!(error(&ok), "");
        let task = ok.run.task().expect("known env").expect("sequence task");
        assert_eq!((task.group_size, task.expert_per_group), (4, 1));
        assert!(task.is_expert(3) && !task.is_expert(2));
        let e = error(&spec(&format!(r#"{seq}, "expert_per_group": 4"#), "SeqAdd-v0"));
        assert!(e.contains("run.expert_per_group") && e.contains("less than group_size = 4"), "{e}");
        let e = error(&spec(r#", "expert_per_group": 1"#, "CartPole-v1"));
        assert!(e.contains("expert_per_group, dataset_size and max_gen_batches are for sequence tasks"), "{e}");
        assert_eq!(spec(seq, "SeqAdd-v0").run.task().ok().flatten().map(|t| t.expert_per_group), Some(0));
    }

    #[test]
    fn dataset_size_and_max_gen_batches_are_checked() {
        let seq = r#", "vocab": 4, "prompt_len": 2, "group_size": 4"#;
        assert_eq!(error(&spec(&format!(r#"{seq}, "dataset_size": 4, "max_gen_batches": 3"#), "SeqAdd-v0")), "");
        // 16 envs in groups of 4: a generation batch needs 4 prompts.
        let e = error(&spec(&format!(r#"{seq}, "dataset_size": 3"#), "SeqAdd-v0"));
        assert!(e.contains("run.dataset_size") && e.contains("at least the 4 prompts"), "{e}");
        let e = error(&spec(&format!(r#"{seq}, "max_gen_batches": 0"#), "SeqAdd-v0"));
        assert!(e.contains("run.max_gen_batches") && e.contains("at least 1"), "{e}");
        let e = error(&spec(r#", "dataset_size": 8"#, "CartPole-v1"));
        assert!(e.contains("are for sequence tasks"), "{e}");
    }
}
