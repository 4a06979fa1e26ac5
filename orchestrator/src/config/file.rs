//! `SweepFile`: the serde mirror of the sweep TOML, as figment extracts it (no validation beyond types).

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use serde::de::{self, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

/// The whole sweep file after merging the TOML, `DROVER_*` env vars and `--set` overrides.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SweepFile {
    /// Sweep name; names the default results directory `results/<name>`.
    pub name: String,
    /// Where results go, instead of `results/<name>`.
    #[serde(default)]
    pub results_dir: Option<PathBuf>,
    /// How many runs at once on the local backend (default: number of cores).
    #[serde(default)]
    pub max_parallel: Option<usize>,
    /// Extra plugin search directories, searched before the defaults.
    #[serde(default)]
    pub plugin_path: Vec<PathBuf>,
    /// The base configuration of every run.
    pub run: RunConfig,
    /// Algorithm parameters, passed to the plugin verbatim.
    #[serde(default, deserialize_with = "finite_map")]
    pub params: BTreeMap<String, serde_json::Value>,
    /// The sweep axes.
    #[serde(default)]
    pub sweep: SweepAxesFile,
    /// Which backend runs the sweep (`local` unless `drover run --backend` says otherwise).
    #[serde(default)]
    pub backend: Option<crate::backend::slurm_config::BackendKind>,
    /// Settings of the Slurm backend (`docs/design/slurm.md`).
    #[serde(default)]
    pub slurm: Option<crate::backend::slurm_config::SlurmFile>,
    /// Settings of the local backend (`backend/local_config.rs`).
    #[serde(default)]
    pub local: Option<crate::backend::local_config::LocalFile>,
    /// What the relative paths above are relative to; not a key of the file (`load_str` fills it).
    #[serde(skip)]
    pub bases: PathBases,
}

/// The directory that each relative path of a sweep is relative to: the sweep file's folder for a
/// value written in the file (as cargo and docker-compose do), the working directory (the empty
/// path) for one from `--set` or a `DROVER_*` variable, which the user typed where they stand.
///
/// `load_str` fills it from figment's record of which source gave each value; the default, every
/// base the working directory, is for a `SweepFile` that did not come from a file. `results_dir`
/// has no base here: it stays relative to the working directory, as it always was, so that existing
/// results are not looked for elsewhere.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PathBases {
    /// Base of the `plugin_path` entries (an override replaces the list whole).
    pub plugin_path: PathBuf,
    /// Base of `run.plugin`.
    pub run_plugin: PathBuf,
    /// Base of the `sweep.grid` axis `run.plugin`.
    pub grid_plugin: PathBuf,
    /// Base of `run.plugin` in each `sweep.cases` entry, by index (missing entries: the working directory).
    pub case_plugin: Vec<PathBuf>,
}

/// Compute device of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Device {
    /// CPU kernels.
    Cpu,
    /// CUDA kernels; the job fails if no GPU is usable.
    Cuda,
    /// CUDA when a GPU is usable, CPU otherwise (decided by the job).
    Auto,
}

/// The `[run]` table: the known, typed keys of one run (the job runtime reads them from spec.json).
///
/// `env` and `plugin` have no useful default and are checked to be non-empty by `Sweep::validate`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RunConfig {
    /// Environment id, e.g. `CartPole-v1`.
    pub env: String,
    /// Algorithm plugin: a name or a path to a `.so`.
    pub plugin: String,
    /// Parallel environments per job.
    pub num_envs: u32,
    /// Steps per environment per iteration.
    pub num_steps: u32,
    /// Environment steps of the whole run, rounded down to whole iterations of `num_envs ×
    /// num_steps` steps (at least one): the job trains whole iterations only.
    pub total_steps: u64,
    /// Hidden layer widths.
    pub hidden: Vec<u32>,
    /// Compute device.
    pub device: Device,
    /// MPI ranks of each run (1: a plain process; more: `mpirun`/`srun` launches that many,
    /// each stepping `num_envs / ranks` environments).
    pub ranks: u32,
    /// CPU threads of the job.
    pub threads: u32,
    /// Seed; replaced by each of `sweep.seeds`.
    pub seed: u64,
    /// Learning rate.
    pub lr: f64,
    /// Anneal the learning rate linearly to zero.
    pub anneal_lr: bool,
    /// Adam epsilon.
    pub adam_eps: f64,
    /// Gradient clipping norm.
    pub max_grad_norm: f64,
    /// Optimization epochs per iteration.
    pub update_epochs: u32,
    /// Minibatches per epoch.
    pub num_minibatches: u32,
    /// Return that counts as solved (steps-to-threshold in analysis).
    pub success_return: f64,
    /// Stop the run once `success_return` is reached.
    pub stop_at_success: bool,
    /// Sequence tasks: responses sampled per prompt (G). Absent for other environments, so
    /// their run ids are those of earlier drover versions.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group_size: Option<u32>,
    /// Sequence tasks: token vocabulary size.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vocab: Option<u32>,
    /// Sequence tasks: prompt length in tokens.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prompt_len: Option<u32>,
    /// Reference policy for KL terms: `none` (absent) or `initial` (the policy at iteration 0).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reference_policy: Option<ReferencePolicy>,
    /// Sequence tasks: the last `expert_per_group` responses of each group are the task's
    /// answer, teacher-forced (CHORD's expert samples); absent means 0.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expert_per_group: Option<u32>,
    /// Sequence tasks: train on a fixed dataset of this many prompts, visited in a seeded order
    /// epoch after epoch; absent means fresh prompts every rollout. At least the prompts of one
    /// generation batch (`num_envs / group_size`), at most `MAX_DATASET_SIZE`. A `u64` rather
    /// than a `u32` so that a huge value gets the range message, not a type error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dataset_size: Option<u64>,
    /// Sequence tasks: the most generation batches per iteration (DAPO's dynamic sampling keeps
    /// generating until the plugin's `keep_group` accepted enough groups, or this many batches
    /// were generated); absent means `DEFAULT_MAX_GEN_BATCHES`, 1..=`MAX_GEN_BATCHES`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_gen_batches: Option<u64>,
}

/// Which policy the job evaluates `logp_ref` with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ReferencePolicy {
    /// No reference: plugins see an empty `logp_ref`.
    None,
    /// The initial parameters, frozen (GRPO's π_ref).
    Initial,
}

/// An environment the job runtime knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnvKind {
    /// Gymnasium's `CartPole-v1`.
    CartPole,
    /// A verifiable-reward sequence task of `drover_kernels::seq` (`family` as the job names it).
    Sequence {
        /// `reverse`, `sort` or `add`.
        family: &'static str,
    },
}

impl EnvKind {
    /// Every known `run.env` id.
    pub const IDS: &'static [&'static str] = &["CartPole-v1", "SeqReverse-v0", "SeqSort-v0", "SeqAdd-v0"];

    /// The environment `id` names, if known.
    pub fn parse(id: &str) -> Option<EnvKind> {
        Some(match id {
            "CartPole-v1" => EnvKind::CartPole,
            "SeqReverse-v0" => EnvKind::Sequence { family: "reverse" },
            "SeqSort-v0" => EnvKind::Sequence { family: "sort" },
            "SeqAdd-v0" => EnvKind::Sequence { family: "add" },
            _ => return None,
        })
    }
}

/// Defaults of the sequence-task keys (the job applies the same ones).
pub const DEFAULT_GROUP_SIZE: u32 = 8;
/// Default `run.vocab`.
pub const DEFAULT_VOCAB: u32 = 8;
/// Default `run.prompt_len`.
pub const DEFAULT_PROMPT_LEN: u32 = 3;
/// Default `run.max_gen_batches`: one generation batch per iteration, as before the key existed.
pub const DEFAULT_MAX_GEN_BATCHES: u64 = 1;
/// Largest `run.max_gen_batches`: bounds an iteration whose plugin refuses nearly every group.
pub const MAX_GEN_BATCHES: u64 = 1000;
/// Largest `run.dataset_size`: plugins receive each response's prompt index in the `prompt_id`
/// metadata column, an `f32`, which holds every integer exactly only up to 2^24.
pub const MAX_DATASET_SIZE: u64 = 1 << 24;

impl RunConfig {
    /// Tokens per response of a sequence task: the prompt length, or half of it plus a carry
    /// digit for `add` (mirrors `drover_kernels::seq::SeqTask::response_len`, which the
    /// cross-crate tests compare it with).
    pub fn response_len(family: &str, prompt_len: u32) -> u32 {
        if family == "add" {
            prompt_len / 2 + 1
        } else {
            prompt_len
        }
    }
}

impl Default for RunConfig {
    fn default() -> Self {
        // CleanRL's PPO CartPole defaults: a sweep file only lists what it changes.
        RunConfig {
            env: String::new(),
            plugin: String::new(),
            num_envs: 8,
            num_steps: 128,
            total_steps: 500_000,
            hidden: vec![64, 64],
            device: Device::Cpu,
            ranks: 1,
            threads: 1,
            seed: 0,
            lr: 2.5e-4,
            anneal_lr: true,
            adam_eps: 1e-5,
            max_grad_norm: 0.5,
            update_epochs: 4,
            num_minibatches: 4,
            success_return: 475.0,
            stop_at_success: false,
            group_size: None,
            vocab: None,
            prompt_len: None,
            reference_policy: None,
            expert_per_group: None,
            dataset_size: None,
            max_gen_batches: None,
        }
    }
}

impl RunConfig {
    /// The keys of `[run]`, for "unknown key" messages and axis checks.
    pub const KEYS: &'static [&'static str] = &[
        "env",
        "plugin",
        "num_envs",
        "num_steps",
        "total_steps",
        "hidden",
        "device",
        "ranks",
        "threads",
        "seed",
        "lr",
        "anneal_lr",
        "adam_eps",
        "max_grad_norm",
        "update_epochs",
        "num_minibatches",
        "success_return",
        "stop_at_success",
        "group_size",
        "vocab",
        "prompt_len",
        "reference_policy",
        "expert_per_group",
        "dataset_size",
        "max_gen_batches",
    ];
}

/// The `[sweep]` table.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SweepAxesFile {
    /// Seeds; without it every run uses `run.seed`.
    #[serde(default)]
    pub seeds: Option<SeedsFile>,
    /// Grid axes: dotted key → values; the runs take the cartesian product.
    #[serde(default, deserialize_with = "finite_grid")]
    pub grid: BTreeMap<String, Vec<serde_json::Value>>,
    /// Explicit cases: each a table of dotted key → value.
    #[serde(default, deserialize_with = "finite_cases")]
    pub cases: Option<Vec<BTreeMap<String, serde_json::Value>>>,
}

/// `sweep.seeds`: an explicit list or a `{ count, start }` range.
///
/// Deserialized by hand rather than with `#[serde(untagged)]`, so a wrong shape gets a message
/// that names both accepted forms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SeedsFile {
    /// `seeds = [1, 2, 3]`.
    List(Vec<u64>),
    /// `seeds = { count = 3, start = 1 }` → 1, 2, 3.
    Range {
        /// How many seeds.
        count: u64,
        /// The first seed.
        start: u64,
    },
}

impl SeedsFile {
    /// The seeds in order; `None` when a range would overflow `u64`.
    pub fn seeds(&self) -> Option<Vec<u64>> {
        match self {
            SeedsFile::List(list) => Some(list.clone()),
            SeedsFile::Range { count, start } => {
                start.checked_add(count.saturating_sub(1))?;
                Some((0..*count).map(|i| start + i).collect())
            }
        }
    }
}

impl<'de> Deserialize<'de> for SeedsFile {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct SeedsVisitor;
        impl<'de> Visitor<'de> for SeedsVisitor {
            type Value = SeedsFile;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a list of seeds like [1, 2, 3] or a table like { count = 3, start = 1 }")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<SeedsFile, A::Error> {
                let mut list = Vec::new();
                while let Some(seed) = seq.next_element::<u64>()? {
                    list.push(seed);
                }
                Ok(SeedsFile::List(list))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<SeedsFile, A::Error> {
                let (mut count, mut start) = (None, None);
                while let Some(key) = map.next_key::<String>()? {
                    match key.as_str() {
                        "count" => count = Some(map.next_value::<u64>()?),
                        "start" => start = Some(map.next_value::<u64>()?),
                        _ => return Err(de::Error::unknown_field(&key, &["count", "start"])),
                    }
                }
                let count = count.ok_or_else(|| de::Error::missing_field("count"))?;
                Ok(SeedsFile::Range { count, start: start.unwrap_or(0) })
            }
        }
        d.deserialize_any(SeedsVisitor)
    }
}

/// A free-form value (`[params]`, axis values) that refuses NaN and infinities.
///
/// JSON, which run ids hash and plugins receive, has neither: `serde_json::Value` would turn
/// them into `null` silently, so `nan` and `inf` would give the same run id and the plugin
/// would see neither. Refusing them here makes figment's error name the key.
struct Finite(serde_json::Value);

impl<'de> Deserialize<'de> for Finite {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct FiniteVisitor;
        impl<'de> Visitor<'de> for FiniteVisitor {
            type Value = Finite;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string, number, boolean, array or table")
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Finite, E> {
                Ok(Finite(v.into()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Finite, E> {
                Ok(Finite(v.into()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Finite, E> {
                Ok(Finite(v.into()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Finite, E> {
                serde_json::Number::from_f64(v)
                    .map(|n| Finite(serde_json::Value::Number(n)))
                    .ok_or_else(|| de::Error::invalid_value(de::Unexpected::Float(v), &"a finite number (JSON has no NaN or infinity)"))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Finite, E> {
                Ok(Finite(v.into()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Finite, E> {
                Ok(Finite(v.into()))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Finite, E> {
                Ok(Finite(serde_json::Value::Null))
            }
            fn visit_none<E: de::Error>(self) -> Result<Finite, E> {
                Ok(Finite(serde_json::Value::Null))
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Finite, D::Error> {
                Finite::deserialize(d)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Finite, A::Error> {
                let mut items = Vec::new();
                while let Some(Finite(v)) = seq.next_element()? {
                    items.push(v);
                }
                Ok(Finite(serde_json::Value::Array(items)))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Finite, A::Error> {
                let mut out = serde_json::Map::new();
                while let Some((k, Finite(v))) = map.next_entry::<String, Finite>()? {
                    out.insert(k, v);
                }
                Ok(Finite(serde_json::Value::Object(out)))
            }
        }
        d.deserialize_any(FiniteVisitor)
    }
}

fn finite_map<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, serde_json::Value>, D::Error> {
    Ok(BTreeMap::<String, Finite>::deserialize(d)?.into_iter().map(|(k, v)| (k, v.0)).collect())
}

fn finite_grid<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, Vec<serde_json::Value>>, D::Error> {
    let grid = BTreeMap::<String, Vec<Finite>>::deserialize(d)?;
    Ok(grid.into_iter().map(|(k, v)| (k, v.into_iter().map(|f| f.0).collect())).collect())
}

fn finite_cases<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<BTreeMap<String, serde_json::Value>>>, D::Error> {
    let cases = Option::<Vec<BTreeMap<String, Finite>>>::deserialize(d)?;
    Ok(cases.map(|cases| cases.into_iter().map(|c| c.into_iter().map(|(k, v)| (k, v.0)).collect()).collect()))
}
