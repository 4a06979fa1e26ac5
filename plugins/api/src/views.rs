//! Host-implemented views of a rollout batch and of a loss minibatch.
//!
//! Every accessor borrows host memory; nothing is copied. **Frozen for major 1**: the host
//! implements these vtables and the plugin calls them, so an accessor added on either side
//! would be refused by abi_stable's check or missing at the call. No accessor is ever added;
//! a later minor version passes new buffers to the functions of an extension table (see
//! [`crate::ext`]).
#![expect(
    non_local_definitions,
    reason = "abi_stable 0.11's `#[sabi_trait]` emits impls inside a const"
)]

use abi_stable::{
    sabi_trait,
    sabi_types::RRef,
    std_types::{ROption, RSlice, RStr, RString, RVec},
};

/// A rollout batch: `B` sequences of `T` steps, every per-token buffer sequence-major
/// (`[b * T + t]`).
///
/// Per-token buffers have length `B·T`, or 0 when the host has none (e.g. `logp_ref` without a
/// reference policy, `values` without a critic); `mask` and `rewards` are always present.
/// Per-sequence buffers have length `B`, or 0 when absent.
#[sabi_trait]
pub trait RolloutView {
    /// `B`.
    fn num_sequences(&self) -> usize;
    /// `T` (padded length).
    fn seq_len(&self) -> usize;
    /// 1 for a real step, 0 for padding.
    fn mask(&self) -> RSlice<'_, f32>;
    /// Per-token reward (outcome rewards sit on the sequence's last valid token).
    fn rewards(&self) -> RSlice<'_, f32>;
    /// 1 where the episode ended by termination after this step (no bootstrap).
    fn terminated(&self) -> RSlice<'_, f32>;
    /// 1 where the episode was cut after this step (time limit, segment end).
    fn truncated(&self) -> RSlice<'_, f32>;
    /// V(s_t) under the behaviour critic.
    fn values(&self) -> RSlice<'_, f32>;
    /// V(s_{t+1}) of the true next state; the host writes 0 where `terminated`, so plugins
    /// need no bootstrap convention.
    fn next_values(&self) -> RSlice<'_, f32>;
    /// log π_old(a_t|s_t) of the behaviour policy.
    fn logp_old(&self) -> RSlice<'_, f32>;
    /// log π_ref(a_t|s_t) of a reference policy; may be empty.
    fn logp_ref(&self) -> RSlice<'_, f32>;
    /// Entropy of π_old at each step; may be empty.
    fn entropy_old(&self) -> RSlice<'_, f32>;
    /// Group (prompt) id of each sequence, length `B`.
    fn group_ids(&self) -> RSlice<'_, u32>;
    /// Weight of each sequence, length `B` (1 unless the host reweights).
    fn sample_weights(&self) -> RSlice<'_, f32>;
    /// Names of the per-sequence metadata columns available.
    fn metadata_keys(&self) -> RVec<RString>;
    /// A per-sequence named column (length `B`), e.g. `tool_calls`, `is_expert`.
    fn metadata(&self, key: RStr<'_>) -> ROption<RSlice<'_, f32>>;
    /// Seed for any randomness in the advantage stage (differs per iteration and rank).
    #[sabi(last_prefix_field)]
    fn seed(&self) -> u64;
}

/// A borrowed [`RolloutView`] trait object, as passed to `Algorithm::compute_advantages`.
pub type RolloutViewRef<'a> = RolloutView_TO<'a, RRef<'a, ()>>;

/// A loss minibatch of `M` tokens, flat (tokens of several sequences, in any order).
///
/// Per-token buffers have length `M` (`logp_ref` may be empty); `seq_index[i]` is the index,
/// within this minibatch's sequences, of token `i`'s sequence; per-sequence buffers have
/// length `num_sequences()`.
///
/// Minibatch numbering is not rollout numbering: which rollout sequence each minibatch
/// sequence is comes from the interface 1.3 extension `ext::v1_3::MinibatchContext`, sent
/// before the loss call (authors read `Minibatch::rollout_index`).
#[sabi_trait]
pub trait LossView {
    /// `M`.
    fn num_tokens(&self) -> usize;
    /// log π_θ(a|s) under the current parameters: the variable the loss is differentiated by.
    fn logp_new(&self) -> RSlice<'_, f32>;
    /// log π_old(a|s) of the behaviour policy.
    fn logp_old(&self) -> RSlice<'_, f32>;
    /// log π_ref(a|s); may be empty.
    fn logp_ref(&self) -> RSlice<'_, f32>;
    /// Advantages from the advantage stage (not normalized by the host).
    fn advantages(&self) -> RSlice<'_, f32>;
    /// Returns (value targets) from the advantage stage.
    fn returns(&self) -> RSlice<'_, f32>;
    /// V_θ(s) under the current parameters; may be empty without a critic.
    fn values_new(&self) -> RSlice<'_, f32>;
    /// V_old(s) from the rollout; may be empty without a critic.
    fn values_old(&self) -> RSlice<'_, f32>;
    /// Entropy of π_θ at the token.
    fn entropy_new(&self) -> RSlice<'_, f32>;
    /// Token weights: the mask (0 for padding), times any host-side weight.
    fn token_weights(&self) -> RSlice<'_, f32>;
    /// For each token, the index of its sequence in this minibatch.
    fn seq_index(&self) -> RSlice<'_, u32>;
    /// Number of sequences the minibatch's tokens come from.
    fn num_sequences(&self) -> usize;
    /// Valid (weight > 0) tokens of each sequence within this minibatch.
    fn seq_lengths(&self) -> RSlice<'_, u32>;
    /// Group id of each sequence; may be empty when the host does not track groups.
    fn seq_group_ids(&self) -> RSlice<'_, u32>;
    /// Seed for randomness in the loss (Clip-Cov token selection); differs per minibatch.
    #[sabi(last_prefix_field)]
    fn seed(&self) -> u64;
}

/// A borrowed [`LossView`] trait object, as passed to `Algorithm::loss`.
pub type LossViewRef<'a> = LossView_TO<'a, RRef<'a, ()>>;
