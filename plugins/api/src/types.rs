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
    /// One or two sentences for `drover plugin info` and the docs.
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
    pub fn float(name: &str, default: f64, doc: &str) -> Self {
        Self::with(name, ParamKind::Float, json_f64(default), doc)
    }

    /// A float parameter that defaults to `null` (absent).
    pub fn optional_float(name: &str, doc: &str) -> Self {
        Self::with(name, ParamKind::Float, "null".to_owned(), doc)
    }

    /// An integer parameter with a default.
    pub fn int(name: &str, default: i64, doc: &str) -> Self {
        Self::with(name, ParamKind::Int, default.to_string(), doc)
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

/// Formats an `f64` as JSON text; non-finite values (which JSON lacks) become `null`.
fn json_f64(x: f64) -> String {
    serde_json::Number::from_f64(x).map_or_else(|| "null".to_owned(), |n| n.to_string())
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

/// What `on_iteration` asks of the host.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, Default, PartialEq)]
pub struct IterationControl {
    /// Rollouts per group for the next iteration, one per group; empty leaves them unchanged.
    pub group_sizes: RVec<u32>,
    /// Stop training after this iteration.
    pub stop: bool,
    /// Extra metrics to log for this iteration (e.g. an adapted coefficient).
    pub metrics: RVec<Metric>,
}
