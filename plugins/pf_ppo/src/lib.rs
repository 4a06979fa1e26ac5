//! PF-PPO (Policy Filtration for PPO, arXiv 2409.06957) as a drover algorithm plugin: verl's
//! `compute_pf_ppo_reweight_data` weights (`pow`, `max_min`, `max_random`) turned into
//! per-response loss weights on top of GRPO advantages and verl's clipped token loss.
//!
//! verl draws a new batch of the same size, with replacement, with probabilities ∝ the weights;
//! drover's plugins cannot reorder the host's batch, so this plugin weights each response by its
//! expected number of copies in that draw, `c_i = B·w_i/Σ_j w_j`, instead: the same objective in
//! expectation, without the sampling noise (true resampling would be the orchestrator's job).
//! `reweight.rs` holds the weights, `algorithm.rs` the parameters and the
//! [`AlgorithmImpl`](drover_plugin_api::AlgorithmImpl).

mod algorithm;
mod reweight;

pub use crate::algorithm::{PfPpo, PfPpoConfig};
pub use crate::reweight::{expected_copies, reweight, ReweightMethod};

// Behind the default feature `export`, so a crate that builds on this one (depends on it with
// `default-features = false`) can export its own plugin without duplicate symbols.
#[cfg(feature = "export")]
drover_plugin_api::export_algorithm!(crate::PfPpo);
