//! NFT (Chen et al. 2025, "Bridging Supervised Learning and Reinforcement Learning in Math
//! Reasoning", arXiv 2505.18116) as a drover algorithm plugin: negative-aware fine-tuning, a
//! supervised loss on correct answers plus an implicit-negative-policy loss on wrong ones.
//!
//! `nft.rs` holds the advantage encoding and the token loss (NVlabs/NFT `dp_actor.py`,
//! `ratio_type = "token"`); `algorithm.rs` the parameters and the
//! [`AlgorithmImpl`](drover_plugin_api::AlgorithmImpl). This file only declares and exports.

mod algorithm;
mod nft;

pub use crate::{
    algorithm::{Nft, NftConfig},
    nft::{
        nft_advantages, nft_token_loss, Normalize, TokenLoss, MAX_LOG_RATIO, RATE_MAX, RATE_MIN,
    },
};

// Behind the default feature `export`, so a crate that builds on this one (depends on it with
// `default-features = false`) can export its own plugin without duplicate symbols.
#[cfg(feature = "export")]
drover_plugin_api::export_algorithm!(crate::Nft);
