//! RLOO (Ahmadian et al. 2024, arXiv 2402.14740; Kool et al. 2019) as a drover algorithm
//! plugin: the leave-one-out baseline of each response's prompt group, no std normalization,
//! and the PPO clipped token loss on top, as verl and LOOP (arXiv 2502.01600) run it.
//!
//! `algorithm.rs` holds the parameters and the [`AlgorithmImpl`](drover_plugin_api::AlgorithmImpl);
//! the advantage and the loss are `drover_plugin_api::llm`'s `outcome_advantages` and
//! `clipped_policy_loss`. This file only declares it and exports the plugin.

mod algorithm;

pub use crate::algorithm::{Rloo, RlooConfig};

// Behind the default feature `export`, so a crate that builds on this one (depends on it with
// `default-features = false`) can export its own plugin without duplicate symbols.
#[cfg(feature = "export")]
drover_plugin_api::export_algorithm!(crate::Rloo);
