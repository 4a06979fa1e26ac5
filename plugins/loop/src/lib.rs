//! LOOP (Chen et al. 2025, arXiv 2502.01600) as a drover algorithm plugin: leave-one-out
//! advantages without std normalization and the PPO clipped token loss, no critic, no KL.
//!
//! `algorithm.rs` holds the parameters and the [`AlgorithmImpl`](drover_plugin_api::AlgorithmImpl);
//! the advantage and the loss are `drover_plugin_api::llm`'s `outcome_advantages` and
//! `clipped_policy_loss`. This file only declares it and exports the plugin.

mod algorithm;

pub use crate::algorithm::{Loop, LoopConfig};

// Behind the default feature `export`, so a crate that builds on this one (depends on it with
// `default-features = false`) can export its own plugin without duplicate symbols.
#[cfg(feature = "export")]
drover_plugin_api::export_algorithm!(crate::Loop);
