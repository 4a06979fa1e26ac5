//! CANON (arXiv 2509.23962, conditional advantage estimation) as a drover algorithm plugin:
//! each prompt group is split into halves by a metric of its responses (mean token entropy or
//! length), and each response's score is compared with both halves, weighted by μ.
//!
//! `canon.rs` holds the advantage and the μ schedule as pure functions; `algorithm.rs` the
//! parameters and the [`AlgorithmImpl`](drover_plugin_api::AlgorithmImpl), whose loss is
//! `drover_plugin_api::llm`'s PPO clipped token loss. This file only declares and exports.

mod algorithm;
mod canon;

pub use crate::{
    algorithm::{Canon, CanonConfig},
    canon::{canon_advantages, MuSchedule, SplitMetric},
};

// Behind the default feature `export`, so a crate that builds on this one (depends on it with
// `default-features = false`) can export its own plugin without duplicate symbols.
#[cfg(feature = "export")]
drover_plugin_api::export_algorithm!(crate::Canon);
