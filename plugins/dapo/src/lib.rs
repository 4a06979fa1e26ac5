//! DAPO (Yu et al. 2025, arXiv 2503.14476) as a drover algorithm plugin, with the verl recipe's
//! defaults: clip-higher, token-mean aggregation, no KL, dual clip, overlong reward shaping and
//! the dynamic-sampling group predicate.
//!
//! `algorithm.rs` holds the parameters and the [`AlgorithmImpl`](drover_plugin_api::AlgorithmImpl);
//! the group advantage and the token loss are `drover_plugin_api::llm`'s. The resampling loop
//! that dynamic sampling needs is the host's: this plugin only answers `keep_group`.

mod algorithm;

pub use crate::algorithm::{overlong_penalty, Dapo, DapoConfig, OverlongShaping};

// Behind the default feature `export`, so a crate that builds on this one (depends on it with
// `default-features = false`) can export its own plugin without duplicate symbols.
#[cfg(feature = "export")]
drover_plugin_api::export_algorithm!(crate::Dapo);
