//! Host-side batch structs (plain slices) and their `RolloutView` / `LossView` implementations.

use drover_plugin_api::{LossView, ROption, RSlice, RStr, RString, RVec, RolloutView};

/// A rollout batch of `B = num_sequences` sequences of `T = seq_len` steps, sequence-major.
///
/// Per-token buffers are `B·T` long or empty when absent (`mask` and `rewards` are
/// required); `group_ids` and `sample_weights` are `B` long or empty; each metadata column is
/// `B` long. See `drover_plugin_api::RolloutView` for what each buffer means, in particular
/// `next_values` (V(s_{t+1}), 0 where terminated).
///
/// `Default` is the empty batch (no sequences, every buffer empty), a base for struct update
/// when only some buffers are filled.
#[derive(Debug, Clone, Copy, Default)]
pub struct RolloutBatch<'a> {
    /// `B`.
    pub num_sequences: usize,
    /// `T`.
    pub seq_len: usize,
    /// 1 valid, 0 padding.
    pub mask: &'a [f32],
    /// Per-token rewards.
    pub rewards: &'a [f32],
    /// 1 where the episode terminated after this step.
    pub terminated: &'a [f32],
    /// 1 where the episode was truncated (or the segment cut) after this step.
    pub truncated: &'a [f32],
    /// V(s_t).
    pub values: &'a [f32],
    /// V(s_{t+1}), 0 where terminated.
    pub next_values: &'a [f32],
    /// Behaviour log-probs.
    pub logp_old: &'a [f32],
    /// Reference log-probs, or empty.
    pub logp_ref: &'a [f32],
    /// Behaviour entropies, or empty.
    pub entropy_old: &'a [f32],
    /// Group id per sequence, or empty.
    pub group_ids: &'a [u32],
    /// Weight per sequence, or empty.
    pub sample_weights: &'a [f32],
    /// Named per-sequence columns.
    pub metadata: &'a [(&'a str, &'a [f32])],
    /// Seed for the advantage stage.
    pub seed: u64,
}

fn check_len(name: &str, len: usize, expected: usize, may_be_empty: bool) -> Result<(), String> {
    if len == expected || (may_be_empty && len == 0) {
        Ok(())
    } else {
        let or_empty = if may_be_empty { " or 0" } else { "" };
        Err(format!(
            "`{name}` has length {len}, expected {expected}{or_empty}"
        ))
    }
}

impl RolloutBatch<'_> {
    /// Checks every buffer's length.
    pub(crate) fn validate(&self) -> Result<(), String> {
        let bt = self
            .num_sequences
            .checked_mul(self.seq_len)
            .ok_or("num_sequences × seq_len overflows")?;
        check_len("mask", self.mask.len(), bt, false)?;
        check_len("rewards", self.rewards.len(), bt, false)?;
        for (name, buf) in [
            ("terminated", self.terminated),
            ("truncated", self.truncated),
            ("values", self.values),
            ("next_values", self.next_values),
            ("logp_old", self.logp_old),
            ("logp_ref", self.logp_ref),
            ("entropy_old", self.entropy_old),
        ] {
            check_len(name, buf.len(), bt, true)?;
        }
        check_len("group_ids", self.group_ids.len(), self.num_sequences, true)?;
        check_len(
            "sample_weights",
            self.sample_weights.len(),
            self.num_sequences,
            true,
        )?;
        for (name, col) in self.metadata {
            check_len(
                &format!("metadata `{name}`"),
                col.len(),
                self.num_sequences,
                false,
            )?;
        }
        Ok(())
    }
}

impl RolloutView for RolloutBatch<'_> {
    fn num_sequences(&self) -> usize {
        self.num_sequences
    }
    fn seq_len(&self) -> usize {
        self.seq_len
    }
    fn mask(&self) -> RSlice<'_, f32> {
        self.mask.into()
    }
    fn rewards(&self) -> RSlice<'_, f32> {
        self.rewards.into()
    }
    fn terminated(&self) -> RSlice<'_, f32> {
        self.terminated.into()
    }
    fn truncated(&self) -> RSlice<'_, f32> {
        self.truncated.into()
    }
    fn values(&self) -> RSlice<'_, f32> {
        self.values.into()
    }
    fn next_values(&self) -> RSlice<'_, f32> {
        self.next_values.into()
    }
    fn logp_old(&self) -> RSlice<'_, f32> {
        self.logp_old.into()
    }
    fn logp_ref(&self) -> RSlice<'_, f32> {
        self.logp_ref.into()
    }
    fn entropy_old(&self) -> RSlice<'_, f32> {
        self.entropy_old.into()
    }
    fn group_ids(&self) -> RSlice<'_, u32> {
        self.group_ids.into()
    }
    fn sample_weights(&self) -> RSlice<'_, f32> {
        self.sample_weights.into()
    }
    fn metadata_keys(&self) -> RVec<RString> {
        self.metadata
            .iter()
            .map(|(k, _)| RString::from(*k))
            .collect()
    }
    fn metadata(&self, key: RStr<'_>) -> ROption<RSlice<'_, f32>> {
        self.metadata
            .iter()
            .find(|(k, _)| *k == key.as_str())
            .map(|(_, col)| RSlice::from(*col))
            .into()
    }
    fn seed(&self) -> u64 {
        self.seed
    }
}

/// A loss minibatch of `M` tokens, flat. Per-token buffers are `M` long; `logp_ref`,
/// `returns`, `values_new`, `values_old` and `entropy_new` may be empty when absent.
/// `seq_index[i] < num_sequences` numbers token `i`'s sequence within the minibatch.
#[derive(Debug, Clone, Copy)]
pub struct LossBatch<'a> {
    /// log π_θ under the current parameters.
    pub logp_new: &'a [f32],
    /// Behaviour log-probs.
    pub logp_old: &'a [f32],
    /// Reference log-probs, or empty.
    pub logp_ref: &'a [f32],
    /// Advantages from `compute_advantages`.
    pub advantages: &'a [f32],
    /// Returns from `compute_advantages`.
    pub returns: &'a [f32],
    /// V_θ under the current parameters.
    pub values_new: &'a [f32],
    /// V from the rollout.
    pub values_old: &'a [f32],
    /// Entropy of π_θ.
    pub entropy_new: &'a [f32],
    /// Mask times any host weight.
    pub token_weights: &'a [f32],
    /// Sequence of each token, within the minibatch.
    pub seq_index: &'a [u32],
    /// Sequences in the minibatch.
    pub num_sequences: usize,
    /// Group (prompt) id of each sequence of the minibatch, or empty when the host has none.
    pub seq_group_ids: &'a [u32],
    /// Seed for the loss stage.
    pub seed: u64,
    /// Where the minibatch comes from, sent to a plugin of interface 1.3 or later right before
    /// the loss call (`drover.minibatch_context`); `None` sends nothing, and the plugin's
    /// `Minibatch::rollout_index` is `None` as with an older host.
    pub context: Option<MinibatchContext<'a>>,
}

/// The rollout link of a [`LossBatch`] (host side of `ext::v1_3::MinibatchInfo`).
#[derive(Debug, Clone, Copy)]
pub struct MinibatchContext<'a> {
    /// For each sequence of the minibatch (`seq_index` numbering), its index in the rollout
    /// batch the last `compute_advantages` saw; distinct.
    pub rollout_index: &'a [u32],
    /// Sequences of that rollout batch (its `num_sequences`).
    pub rollout_sequences: usize,
    /// Iteration, 1-based.
    pub iteration: u64,
    /// Update epoch within the iteration, 0-based.
    pub epoch: u32,
    /// Minibatch within the epoch, 0-based.
    pub minibatch: u32,
}

impl MinibatchContext<'_> {
    /// One index per minibatch sequence, each below `rollout_sequences`, none repeated.
    pub(crate) fn validate(&self, num_sequences: usize) -> Result<(), String> {
        check_len("rollout_index", self.rollout_index.len(), num_sequences, false)?;
        let mut seen = vec![false; self.rollout_sequences];
        for (s, &r) in self.rollout_index.iter().enumerate() {
            match seen.get_mut(r as usize) {
                None => {
                    return Err(format!(
                        "`rollout_index[{s}]` is {r}, but the rollout batch has {} sequences",
                        self.rollout_sequences
                    ))
                }
                Some(true) => return Err(format!("`rollout_index` names rollout sequence {r} twice")),
                Some(x) => *x = true,
            }
        }
        Ok(())
    }
}

impl LossBatch<'_> {
    /// `M`.
    pub fn len(&self) -> usize {
        self.logp_new.len()
    }

    /// Whether the minibatch has no tokens.
    pub fn is_empty(&self) -> bool {
        self.logp_new.is_empty()
    }

    pub(crate) fn validate(&self) -> Result<(), String> {
        let m = self.len();
        for (name, len) in [
            ("logp_old", self.logp_old.len()),
            ("advantages", self.advantages.len()),
            ("token_weights", self.token_weights.len()),
            ("seq_index", self.seq_index.len()),
        ] {
            check_len(name, len, m, false)?;
        }
        for (name, buf) in [
            ("logp_ref", self.logp_ref),
            ("returns", self.returns),
            ("values_new", self.values_new),
            ("values_old", self.values_old),
            ("entropy_new", self.entropy_new),
        ] {
            check_len(name, buf.len(), m, true)?;
        }
        check_len("seq_group_ids", self.seq_group_ids.len(), self.num_sequences, true)?;
        if let Some(c) = &self.context {
            c.validate(self.num_sequences)?;
        }
        if let Some(i) = self
            .seq_index
            .iter()
            .position(|&s| s as usize >= self.num_sequences)
        {
            return Err(format!(
                "`seq_index[{i}]` is {}, but the minibatch has {} sequences",
                self.seq_index[i], self.num_sequences
            ));
        }
        Ok(())
    }
}

/// A [`LossBatch`] plus what the host derives from it for the view.
pub(crate) struct LossBatchView<'a> {
    pub(crate) batch: &'a LossBatch<'a>,
    /// Tokens with weight > 0 per sequence.
    pub(crate) seq_lengths: Vec<u32>,
}

impl<'a> LossBatchView<'a> {
    /// Call after `batch.validate()`: indexes by `seq_index`.
    pub(crate) fn new(batch: &'a LossBatch<'a>) -> Self {
        let mut seq_lengths = vec![0u32; batch.num_sequences];
        for (&s, &w) in batch.seq_index.iter().zip(batch.token_weights) {
            if w > 0.0 {
                if let Some(n) = seq_lengths.get_mut(s as usize) {
                    *n += 1;
                }
            }
        }
        Self { batch, seq_lengths }
    }
}

impl LossView for LossBatchView<'_> {
    fn num_tokens(&self) -> usize {
        self.batch.len()
    }
    fn logp_new(&self) -> RSlice<'_, f32> {
        self.batch.logp_new.into()
    }
    fn logp_old(&self) -> RSlice<'_, f32> {
        self.batch.logp_old.into()
    }
    fn logp_ref(&self) -> RSlice<'_, f32> {
        self.batch.logp_ref.into()
    }
    fn advantages(&self) -> RSlice<'_, f32> {
        self.batch.advantages.into()
    }
    fn returns(&self) -> RSlice<'_, f32> {
        self.batch.returns.into()
    }
    fn values_new(&self) -> RSlice<'_, f32> {
        self.batch.values_new.into()
    }
    fn values_old(&self) -> RSlice<'_, f32> {
        self.batch.values_old.into()
    }
    fn entropy_new(&self) -> RSlice<'_, f32> {
        self.batch.entropy_new.into()
    }
    fn token_weights(&self) -> RSlice<'_, f32> {
        self.batch.token_weights.into()
    }
    fn seq_index(&self) -> RSlice<'_, u32> {
        self.batch.seq_index.into()
    }
    fn num_sequences(&self) -> usize {
        self.batch.num_sequences
    }
    fn seq_lengths(&self) -> RSlice<'_, u32> {
        self.seq_lengths.as_slice().into()
    }
    fn seq_group_ids(&self) -> RSlice<'_, u32> {
        self.batch.seq_group_ids.into()
    }
    fn seed(&self) -> u64 {
        self.batch.seed
    }
}
