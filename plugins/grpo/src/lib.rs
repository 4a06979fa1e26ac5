//! GRPO (Shao et al. 2024, DeepSeekMath, arXiv 2402.03300) as a drover algorithm plugin, with
//! verl's defaults and its DAPO / Dr. GRPO switches (clip-higher, dual clip, aggregation modes,
//! no std normalization).
//!
//! `algorithm.rs` holds the parameters and the [`AlgorithmImpl`](drover_plugin_api::AlgorithmImpl);
//! the advantage and the loss are `drover_plugin_api::llm`'s `outcome_advantages` and
//! `clipped_policy_loss`. This file only declares it and exports the plugin.

mod algorithm;

pub use crate::algorithm::{Grpo, GrpoConfig};

// Behind the default feature `export`, so a crate that builds on this one (depends on it with
// `default-features = false`) can export its own plugin without duplicate symbols.
#[cfg(feature = "export")]
drover_plugin_api::export_algorithm!(crate::Grpo);
