//! Dr. GRPO (Liu et al. 2025, "Understanding R1-Zero-Like Training", arXiv 2503.20783) as a
//! drover algorithm plugin: GRPO without the two length/difficulty biases.
//!
//! `algorithm.rs` holds the parameters and the [`AlgorithmImpl`](drover_plugin_api::AlgorithmImpl);
//! the advantage and the loss are `drover_plugin_api::llm`'s `outcome_advantages` and
//! `clipped_policy_loss`. This file only declares it and exports the plugin.

mod algorithm;

pub use crate::algorithm::{DrGrpo, DrGrpoConfig};

// Behind the default feature `export`, so a crate that builds on this one (depends on it with
// `default-features = false`) can export its own plugin without duplicate symbols.
#[cfg(feature = "export")]
drover_plugin_api::export_algorithm!(crate::DrGrpo);
