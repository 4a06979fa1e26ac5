//! Plain data that crosses the ABI: plugin description, parameter specs, metrics, hook payloads.
#![expect(
    non_local_definitions,
    reason = "abi_stable 0.11's `StableAbi` derive emits impls inside a const"
)]

use abi_stable::{
    std_types::{ROption, RSlice, RString, RVec},
    StableAbi,
};

/// A named scalar a plugin reports (loss terms, diagnostics); the host logs it as a column.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq)]
pub struct Metric {
    /// Column name, e.g. `policy_loss`.
    pub name: RString,
    /// Value.
    pub value: f64,
}

impl Metric {
    /// Makes a metric.
    pub fn new(name: &str, value: f64) -> Self {
        Self {
            name: RString::from(name),
            value,
        }
    }
}

/// The JSON type a parameter takes.
///
/// Crosses the ABI as [`ParamKind_NE`], so kinds can be added in a minor version.
#[repr(u8)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq)]
#[sabi(kind(WithNonExhaustive(size = [u64; 1], traits(Debug, Clone, PartialEq))))]
#[non_exhaustive]
pub enum ParamKind {
    /// A JSON number, read as `f64`.
    Float,
    /// A JSON integer (a float with no fractional part is accepted), read as `i64`.
    Int,
    /// `true` or `false`.
    Bool,
    /// A JSON string.
    Str,
}

impl ParamKind {
    /// Lowercase name used in messages and docs.
    pub fn name(self) -> &'static str {
        match self {
            Self::Float => "float",
            Self::Int => "int",
            Self::Bool => "bool",
            Self::Str => "string",
        }
    }
}

/// One parameter a plugin accepts in its params JSON.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq)]
pub struct ParamSpec {
    /// The JSON key.
    pub name: RString,
    /// Its type.
    pub kind: ParamKind_NE,
    /// The default as JSON text; `null` makes the parameter optional (it may be `null`).
    pub default: RString,
    /// One or two sentences for `drover plugin list` and the docs.
    pub doc: RString,
    /// Inclusive lower bound for numeric kinds.
    pub min: ROption<f64>,
    /// Inclusive upper bound for numeric kinds.
    pub max: ROption<f64>,
}

impl ParamSpec {
    fn with(name: &str, kind: ParamKind, default: String, doc: &str) -> Self {
        Self {
            name: RString::from(name),
            kind: ParamKind_NE::new(kind),
            default: RString::from(default),
            doc: RString::from(doc),
            min: ROption::RNone,
            max: ROption::RNone,
        }
    }

    /// A float parameter with a default.
    ///
    /// # Panics
    /// When `default` is NaN or infinite: JSON has neither, and writing `null` instead would
    /// make the parameter optional. Use [`ParamSpec::optional_float`] for "no limit" and read
    /// it with `Params::opt_f64`. (Inside `info()`, the panic is caught and reported with this
    /// call's line.)
    #[track_caller]
    pub fn float(name: &str, default: f64, doc: &str) -> Self {
        let Some(text) = json_f64(default) else {
            panic!(
                "ParamSpec::float(`{name}`): the default {default} is not finite, and JSON has no \
                 NaN or infinity; declare it with ParamSpec::optional_float (default null, read \
                 with Params::opt_f64) to mean \"no limit\""
            );
        };
        Self::with(name, ParamKind::Float, text, doc)
    }

    /// A float parameter that defaults to `null` (absent).
    pub fn optional_float(name: &str, doc: &str) -> Self {
        Self::with(name, ParamKind::Float, "null".to_owned(), doc)
    }

    /// An integer parameter with a default.
    pub fn int(name: &str, default: i64, doc: &str) -> Self {
        Self::with(name, ParamKind::Int, default.to_string(), doc)
    }

    /// An integer parameter that defaults to `null` (absent): read it with
    /// [`Params::opt_i64`](crate::Params::opt_i64), rather than giving 0 or -1 a meaning.
    pub fn optional_int(name: &str, doc: &str) -> Self {
        Self::with(name, ParamKind::Int, "null".to_owned(), doc)
    }

    /// A boolean parameter with a default.
    pub fn bool(name: &str, default: bool, doc: &str) -> Self {
        Self::with(name, ParamKind::Bool, default.to_string(), doc)
    }

    /// A string parameter with a default.
    pub fn string(name: &str, default: &str, doc: &str) -> Self {
        Self::with(
            name,
            ParamKind::Str,
            serde_json::Value::from(default).to_string(),
            doc,
        )
    }

    /// A string parameter that defaults to `null` (absent): read it with
    /// [`Params::opt_str`](crate::Params::opt_str).
    pub fn optional_string(name: &str, doc: &str) -> Self {
        Self::with(name, ParamKind::Str, "null".to_owned(), doc)
    }

    /// Sets an inclusive range.
    pub fn range(self, min: f64, max: f64) -> Self {
        self.min(min).max(max)
    }

    /// Sets an inclusive lower bound.
    pub fn min(mut self, min: f64) -> Self {
        self.min = ROption::RSome(min);
        self
    }

    /// Sets an inclusive upper bound.
    pub fn max(mut self, max: f64) -> Self {
        self.max = ROption::RSome(max);
        self
    }

    /// The kind, or `None` for a kind added by a newer interface than this crate's.
    pub fn kind(&self) -> Option<ParamKind> {
        self.kind.as_enum().ok().copied()
    }
}

/// Formats an `f64` as JSON text; `None` for non-finite values, which JSON lacks.
fn json_f64(x: f64) -> Option<String> {
    serde_json::Number::from_f64(x).map(|n| n.to_string())
}

/// What a plugin says about itself; the host prints it and records it with every run.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq)]
pub struct PluginInfo {
    /// Short name, e.g. `ppo`; used in sweep files and error messages.
    pub name: RString,
    /// The plugin's own version (semver), e.g. `0.1.0`.
    pub version: RString,
    /// One line.
    pub description: RString,
    /// Every parameter the plugin accepts.
    pub params: RVec<ParamSpec>,
}

impl PluginInfo {
    /// Describes a plugin with no parameters yet; add them with [`PluginInfo::param`].
    pub fn new(name: &str, version: &str, description: &str) -> Self {
        Self {
            name: RString::from(name),
            version: RString::from(version),
            description: RString::from(description),
            params: RVec::new(),
        }
    }

    /// Adds a parameter.
    pub fn param(mut self, spec: ParamSpec) -> Self {
        self.params.push(spec);
        self
    }

    /// Checks the plugin's own parameter declarations, once: names non-empty and unique,
    /// ranges only on numeric kinds with `min <= max` (neither NaN), and each default valid
    /// JSON of its declared kind inside its range (`null`: an optional parameter). The host
    /// refuses a library that fails this when it loads it, and the harness's
    /// `params_declared` check runs it, so a mistake here is reported as the plugin's, never
    /// as one in the user's params.
    ///
    /// # Errors
    /// The first problem, naming the parameter, e.g. "param `coef`: default 2 is outside its
    /// own range [0, 1]" or "param `after`: declared twice".
    pub fn check_params(&self) -> Result<(), String> {
        crate::params::check_declarations(&self.params)
    }
}

/// What the host tells `on_iteration` after each training iteration.
///
/// New numeric inputs are passed as further entries of `metrics` rather than new fields, so
/// this struct keeps its layout.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, Copy)]
pub struct IterationInfo<'a> {
    /// 1-based iteration just finished.
    pub iteration: u64,
    /// Environment steps (or generated sequences) so far, all ranks.
    pub global_step: u64,
    /// The iteration's metrics (host and plugin), e.g. `approx_kl`, `episodic_return_mean`.
    pub metrics: RSlice<'a, Metric>,
}

impl IterationInfo<'_> {
    /// The value of the metric named `name`, if reported.
    pub fn metric(&self, name: &str) -> Option<f64> {
        self.metrics
            .iter()
            .find(|m| m.name.as_str() == name)
            .map(|m| m.value)
    }
}

impl IterationInfo<'_> {
    /// The prompts the host will generate responses for next, when the run trains on a fixed
    /// prompt dataset (`run.dataset_size`, interface 1.2); `None` otherwise, or from a host
    /// older than 1.2. Per-prompt group sizes for them go in [`IterationControl::group_sizes`].
    pub fn next_prompts(&self) -> Option<NextPrompts> {
        let input = |name: &str| self.metric(&format!("{INPUT_PREFIX}{name}"));
        let as_u32 = |x: f64| (x >= 0.0 && x <= f64::from(u32::MAX) && x.fract() == 0.0).then_some(x as u32);
        let budget = as_u32(input("budget")?)?;
        let group_size = as_u32(input("group_size")?)?;
        let count = as_u32(input("next_prompts")?)?;
        let prompt_ids = (0..count)
            .map(|j| as_u32(input(&format!("next_prompt.{j}"))?))
            .collect::<Option<Vec<u32>>>()?;
        Some(NextPrompts { prompt_ids, budget, group_size })
    }
}

/// Prefix of the metric names that carry the host's *inputs* to `on_iteration` (interface
/// 1.2). [`IterationInfo`] is frozen, so new inputs travel as metrics with this prefix; the
/// host never logs them as columns.
pub const INPUT_PREFIX: &str = "input.";

/// The next generation batch of a dataset run, as [`IterationInfo::next_prompts`] reads it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NextPrompts {
    /// Dataset index (the `prompt_id` metadata column) of each prompt, in the host's order.
    pub prompt_ids: Vec<u32>,
    /// Responses the host will generate in all: the group sizes must sum to this.
    pub budget: u32,
    /// The run's `group_size`: what every prompt gets when the plugin sets no sizes.
    pub group_size: u32,
}

impl NextPrompts {
    /// The metrics that carry these inputs (the host's side of [`IterationInfo::next_prompts`]).
    pub fn to_metrics(&self) -> Vec<Metric> {
        let mut out = vec![
            Metric::new(&format!("{INPUT_PREFIX}budget"), f64::from(self.budget)),
            Metric::new(&format!("{INPUT_PREFIX}group_size"), f64::from(self.group_size)),
            Metric::new(&format!("{INPUT_PREFIX}next_prompts"), self.prompt_ids.len() as f64),
        ];
        out.extend(self.prompt_ids.iter().enumerate().map(|(j, &id)| {
            Metric::new(&format!("{INPUT_PREFIX}next_prompt.{j}"), f64::from(id))
        }));
        out
    }
}

/// What `on_iteration` asks of the host.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, Default, PartialEq)]
pub struct IterationControl {
    /// Responses per prompt for the next generation batch (Knapsack RL's budgets): empty keeps
    /// the run's `group_size` for every prompt. Otherwise (interface 1.2, dataset runs only)
    /// one entry per prompt of [`IterationInfo::next_prompts`], in that order, summing to its
    /// `budget`; an entry may be 0 (the prompt is skipped this time). The host refuses any
    /// other shape with an error naming the plugin.
    pub group_sizes: RVec<u32>,
    /// Stop training after this iteration.
    pub stop: bool,
    /// Extra metrics to log for this iteration (e.g. an adapted coefficient).
    pub metrics: RVec<Metric>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_prompts_round_trip_through_the_metrics_and_are_absent_otherwise() {
        let next = NextPrompts { prompt_ids: vec![7, 0, 3], budget: 12, group_size: 4 };
        let mut metrics = vec![Metric::new("accuracy", 0.5)];
        metrics.extend(next.to_metrics());
        let info = |m: &[Metric]| IterationInfo { iteration: 1, global_step: 1, metrics: RSlice::from_slice(m) }.next_prompts();
        assert_eq!(info(&metrics), Some(next));
        assert!(metrics[1..].iter().all(|m| m.name.starts_with(INPUT_PREFIX)));
        // A host that passes none (older than 1.2, or no dataset), or a damaged list.
        assert_eq!(info(&metrics[..1]), None);
        assert_eq!(info(&metrics[..metrics.len() - 1]), None);
    }
}
