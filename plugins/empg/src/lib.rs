//! EMPG (arXiv 2509.09265, entropy-modulated policy gradients) as a drover algorithm plugin:
//! GRPO's group advantages, rescaled per step by the step's (normalized) entropy and given a
//! bonus for a confident next step.
//!
//! `empg.rs` holds the modulation as a pure function; `algorithm.rs` the parameters and the
//! [`AlgorithmImpl`](drover_plugin_api::AlgorithmImpl), whose loss is
//! `drover_plugin_api::llm`'s PPO clipped token loss. This file only declares and exports.

mod algorithm;
mod empg;

pub use crate::{
    algorithm::{Empg, EmpgConfig},
    empg::{modulate, Modulation},
};

// Behind the default feature `export`, so a crate that builds on this one (depends on it with
// `default-features = false`) can export its own plugin without duplicate symbols.
#[cfg(feature = "export")]
drover_plugin_api::export_algorithm!(crate::Empg);
