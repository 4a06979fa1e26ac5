//! PPO with GAE(λ), following CleanRL's `ppo.py`: the reference drover algorithm plugin.
//!
//! `gae.rs` is the advantage stage, `loss.rs` the clipped-surrogate loss, `algorithm.rs` the
//! parameters and the [`AlgorithmImpl`](drover_plugin_api::AlgorithmImpl) glue; this file
//! only declares them and exports the plugin.

mod algorithm;
mod gae;
mod loss;

pub use crate::{
    algorithm::{Ppo, PpoConfig},
    gae::gae,
    loss::ppo_loss,
};

// Behind the default feature `export`, so a crate that builds on this one (depends on it with
// `default-features = false`) can export its own plugin without duplicate symbols.
#[cfg(feature = "export")]
drover_plugin_api::export_algorithm!(crate::Ppo);
