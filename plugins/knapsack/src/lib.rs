//! Knapsack RL (Li et al. 2025, arXiv 2509.25849) as a drover algorithm plugin: GRPO's advantage
//! and loss, plus per-prompt rollout budgets for the next generation batch chosen by a knapsack
//! over each prompt's success rate at its latest visit.
//!
//! `allocate.rs` is the allocation, a pure function tested against brute force;
//! `algorithm.rs` holds the parameters, the per-prompt state and the
//! [`AlgorithmImpl`](drover_plugin_api::AlgorithmImpl). This file only declares them and exports
//! the plugin.

mod algorithm;
mod allocate;

pub use crate::algorithm::{Knapsack, KnapsackConfig};
pub use crate::allocate::{allocate, value, Allocation, Bounds};

// Behind the default feature `export`, so a crate that builds on this one (depends on it with
// `default-features = false`) can export its own plugin without duplicate symbols.
#[cfg(feature = "export")]
drover_plugin_api::export_algorithm!(crate::Knapsack);
