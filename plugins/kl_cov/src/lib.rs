//! KL-Cov, from "The Entropy Mechanism of Reinforcement Learning for Reasoning Language
//! Models" (Cui et al. 2025, arXiv 2505.22617), as a drover algorithm plugin: GRPO's
//! group-normalized advantages, then the unclipped policy gradient `−Aρ` on every token plus
//! a penalty `β·|logp − logp_old|` on the tokens of largest advantage/log-prob covariance
//! (verl `compute_policy_loss_kl_cov`).
//!
//! `algorithm.rs` holds the parameters and the [`AlgorithmImpl`](drover_plugin_api::AlgorithmImpl),
//! `loss.rs` the token selection and the loss. This file only declares them and exports the
//! plugin.

mod algorithm;
mod loss;

pub use crate::{
    algorithm::KlCov,
    loss::{kl_cov_loss, select_top_cov, KlCovConfig, KlCovStats},
};

// Behind the default feature `export`, so a crate that builds on this one (depends on it with
// `default-features = false`) can export its own plugin without duplicate symbols.
#[cfg(feature = "export")]
drover_plugin_api::export_algorithm!(crate::KlCov);
