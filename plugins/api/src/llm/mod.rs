//! Building blocks for LLM-style policy optimization on outcome rewards (GRPO, RLOO, Dr. GRPO,
//! DAPO, Clip-Cov, KL-Cov), as pure functions on plain slices.
//!
//! None of this crosses the plugin ABI: these are helpers a plugin compiles in, so a third
//! party writing a variant gets the same definitions as drover's bundled `grpo`, `rloo`,
//! `clip_cov` and `kl_cov` plugins. Definitions and defaults follow verl's
//! `verl/trainer/ppo/core_algos.py` (GRPO: arXiv 2402.03300; RLOO: arXiv 2402.14740; Clip-Cov and
//! KL-Cov: arXiv 2505.22617; DAPO: arXiv 2503.14476; Dr. GRPO: arXiv 2503.20783):
//!
//! - advantage stage ([`outcome_advantages`], built from [`sequence_scores`],
//!   [`group_normalized_advantages`], [`rloo_advantages`], [`broadcast_to_tokens`]): one score
//!   per response, a baseline from its prompt group, the sequence advantage copied onto the
//!   response's valid tokens;
//! - loss stage: [`LossAggMode`] and [`aggregation_weights`] (verl's `agg_loss` as per-token
//!   weights), the clipped surrogate [`clipped_surrogate`], the k3 KL to a reference [`k3_kl`],
//!   the token covariance [`token_covariance`] that Clip-Cov and KL-Cov select by, and
//!   [`clipped_policy_loss`], the whole GRPO/RLOO/DAPO token loss written into
//!   [`LossOutputs`](crate::LossOutputs); [`LossWeights`] is the prologue (required inputs,
//!   weights) and epilogue (entropy bonus, weighted outputs) a new token loss shares with it;
//! - params: [`PolicyLossParams`] declares and reads the shared GRPO-family keys (`clip_ratio`,
//!   `clip_ratio_high`, `clip_ratio_c`, `kl_coef`, `loss_agg_mode`, `loss_scale_factor`,
//!   `norm_adv_by_std`, `ent_coef`) with per-plugin [`PolicyLossDefaults`], one `const` per
//!   plugin serving both `info()` and `new()`; the single-key readers under it are
//!   [`ClipRange::from_params`], [`ClipRange::dual_clip_from_params`],
//!   [`LossAggMode::from_params`] and [`loss_scale_factor_from_params`].
//!
//! Every function computes in `f64` and takes the `f32` buffers the host hands over.

mod advantage;
mod aggregate;
mod cov;
mod kl;
mod params;
mod policy_loss;
mod surrogate;
mod token_loss;

pub use self::{
    advantage::{
        broadcast_to_tokens, group_ids, group_normalized_advantages, group_scores_vary, group_stats,
        outcome_advantages, rloo_advantages, sequence_scores, Baseline, GroupStats, GRPO_EPS,
    },
    aggregate::{
        aggregation_weights, aggregation_weights_with_copies, loss_scale_factor_from_params,
        valid_token_mean, LossAggMode,
    },
    cov::token_covariance,
    kl::{approx_kl, k3_kl, K3_EXPONENT_CLAMP, K3_VALUE_CLAMP},
    params::{PolicyLossDefaults, PolicyLossKey, PolicyLossParams, PolicyLossSettings},
    policy_loss::{
        clipped_policy_loss, clipped_policy_loss_with_copies, require_reference, PolicyLossConfig,
        PolicyLossStats,
    },
    surrogate::{clipped_surrogate, ClipRange, Surrogate, LOG_RATIO_CLAMP},
    token_loss::LossWeights,
};
