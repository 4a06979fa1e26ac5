//! The advantage stage of outcome-reward algorithms: sequence scores, group baselines (GRPO's
//! normalized one, RLOO's leave-one-out one), and their broadcast onto tokens.

use std::collections::BTreeMap;

use crate::{authoring::Rollout, error::PluginError, types::Metric};

/// GRPO's ε in `(s − mean)/(std + ε)` (verl `compute_grpo_outcome_advantage`, `epsilon=1e-6`).
pub const GRPO_EPS: f64 = 1e-6;

/// Each sequence's score `s_b = Σ_t reward·mask` over its valid steps (verl sums the token
/// rewards, which the host leaves 0 except on the last valid token). Padding is ignored
/// whatever it holds.
pub fn sequence_scores(batch: &Rollout<'_>) -> Vec<f64> {
    let t_len = batch.seq_len;
    (0..batch.num_sequences)
        .map(|b| {
            let row = b * t_len..(b + 1) * t_len;
            batch.mask[row.clone()]
                .iter()
                .zip(&batch.rewards[row])
                .filter(|(&m, _)| m > 0.0)
                .map(|(&m, &r)| f64::from(r) * f64::from(m))
                .sum()
        })
        .collect()
}

/// The batch's group (prompt) ids, required by every group-baseline algorithm.
///
/// # Errors
/// `invalid_input` "`<algorithm>` needs `group_ids` ..." when the host sent none.
pub fn group_ids<'a>(algorithm: &str, batch: &Rollout<'a>) -> Result<&'a [u32], PluginError> {
    if batch.group_ids.is_empty() && batch.num_sequences > 0 {
        Err(PluginError::invalid_input(format!(
            "{algorithm} needs `group_ids` (the prompt of each response) in the rollout batch"
        )))
    } else {
        Ok(batch.group_ids)
    }
}

/// The dynamic-sampling group filter of DAPO and NFT: whether one group's scores differ, so the
/// group carries a learning signal (verl DAPO `filter_groups` with metric `acc`, NFT's trainer
/// `std > 0`). A group of one is kept, as verl does: it has no spread to judge.
///
/// # Errors
/// `invalid_input` naming `algorithm` when a score is not finite.
pub fn group_scores_vary(algorithm: &str, rewards: &[f32]) -> Result<bool, PluginError> {
    if let Some(bad) = rewards.iter().find(|r| !r.is_finite()) {
        return Err(PluginError::invalid_input(format!(
            "{algorithm}: keep_group got a non-finite reward {bad} in `rewards`"
        )));
    }
    Ok(rewards.len() < 2 || rewards.iter().any(|&r| r != rewards[0]))
}

/// Members of each group (ascending ids, so the order never depends on hashing), for the first
/// `n` sequences; a sequence without an id is a group of its own.
fn members(group_ids: &[u32], n: usize) -> Vec<Vec<usize>> {
    let mut groups: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
    for (b, &g) in group_ids.iter().enumerate().take(n) {
        groups.entry(g).or_default().push(b);
    }
    let mut all: Vec<Vec<usize>> = groups.into_values().collect();
    all.extend((group_ids.len()..n).map(|b| vec![b]));
    all
}

/// Mean and spread of one group's scores, as GRPO uses them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GroupStats {
    /// Number of responses in the group.
    pub count: usize,
    /// Mean score; 0 for a group of one (verl's convention).
    pub mean: f64,
    /// Unbiased (N − 1) standard deviation, as `torch.std`; 1 for a group of one.
    pub std: f64,
}

/// [`GroupStats`] of `scores` (one group). A group of one gets mean 0 and std 1, so its
/// advantage is its own score (verl `compute_grpo_outcome_advantage`); an empty slice too.
pub fn group_stats(scores: &[f64]) -> GroupStats {
    let count = scores.len();
    if count < 2 {
        return GroupStats {
            count,
            mean: 0.0,
            std: 1.0,
        };
    }
    let n = count as f64;
    let mean = scores.iter().sum::<f64>() / n;
    let var = scores.iter().map(|s| (s - mean) * (s - mean)).sum::<f64>() / (n - 1.0);
    GroupStats {
        count,
        mean,
        std: var.sqrt(),
    }
}

/// GRPO's outcome advantage per sequence: `A = (s − mean_g)/(std_g + eps)` with the
/// [`group_stats`] of the sequence's group `g`, or `A = s − mean_g` when `norm_by_std` is false
/// (Dr. GRPO, verl `norm_adv_by_std_in_grpo=False`). An all-equal group gets `A = 0`.
/// `group_ids[b]` is sequence `b`'s group.
pub fn group_normalized_advantages(
    scores: &[f64],
    group_ids: &[u32],
    norm_by_std: bool,
    eps: f64,
) -> Vec<f64> {
    let mut adv = vec![0.0; scores.len()];
    for idx in &members(group_ids, scores.len()) {
        let group: Vec<f64> = idx.iter().map(|&b| scores[b]).collect();
        let st = group_stats(&group);
        for &b in idx {
            let centred = scores[b] - st.mean;
            adv[b] = if norm_by_std {
                centred / (st.std + eps)
            } else {
                centred
            };
        }
    }
    adv
}

/// RLOO's leave-one-out advantage per sequence: `A_i = s_i − mean_{j≠i} s_j
/// = k/(k−1)·(s_i − mean_g)` for a group of `k ≥ 2`, and `A = s` for a group of one (verl
/// `compute_rloo_outcome_advantage`). No std normalization.
pub fn rloo_advantages(scores: &[f64], group_ids: &[u32]) -> Vec<f64> {
    let mut adv = vec![0.0; scores.len()];
    for idx in &members(group_ids, scores.len()) {
        let k = idx.len();
        if k < 2 {
            for &b in idx {
                adv[b] = scores[b];
            }
            continue;
        }
        let kf = k as f64;
        let mean = idx.iter().map(|&b| scores[b]).sum::<f64>() / kf;
        for &b in idx {
            adv[b] = kf / (kf - 1.0) * (scores[b] - mean);
        }
    }
    adv
}

/// Writes sequence `b`'s advantage `seq_adv[b]·mask` onto each of its steps
/// (`[b·seq_len + t]`), 0 on padding, as verl's `scores.unsqueeze(-1) * response_mask`.
pub fn broadcast_to_tokens(seq_adv: &[f64], mask: &[f32], seq_len: usize, out: &mut [f32]) {
    for (b, &a) in seq_adv.iter().enumerate() {
        for t in 0..seq_len {
            let i = b * seq_len + t;
            let m = mask[i];
            out[i] = if m > 0.0 {
                (a * f64::from(m)) as f32
            } else {
                0.0
            };
        }
    }
}

/// The baseline an outcome-reward algorithm subtracts from each sequence's score.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Baseline {
    /// GRPO's [`group_normalized_advantages`] (`norm_by_std` false: Dr. GRPO).
    GroupNormalized {
        /// Divide by the group's std + [`GRPO_EPS`].
        norm_by_std: bool,
    },
    /// RLOO's [`rloo_advantages`].
    LeaveOneOut,
}

/// The whole advantage stage of an outcome-reward algorithm without a critic: scores
/// ([`sequence_scores`]), per-sequence advantages from `baseline`, broadcast onto valid tokens
/// ([`broadcast_to_tokens`]), and `returns = advantages` (nothing learns a value).
///
/// Returns the metrics `score_mean` (mean sequence score: the accuracy with 0/1 rewards) and
/// `uniform_group_frac` (fraction of groups of two or more whose scores are all equal: their
/// advantages are 0 and they teach nothing).
///
/// # Errors
/// `invalid_input` when the batch has no `group_ids` ([`group_ids`]).
pub fn outcome_advantages(
    algorithm: &str,
    batch: &Rollout<'_>,
    baseline: Baseline,
    advantages: &mut [f32],
    returns: &mut [f32],
) -> Result<Vec<Metric>, PluginError> {
    let ids = group_ids(algorithm, batch)?;
    let scores = sequence_scores(batch);
    let seq_adv = match baseline {
        Baseline::GroupNormalized { norm_by_std } => {
            group_normalized_advantages(&scores, ids, norm_by_std, GRPO_EPS)
        }
        Baseline::LeaveOneOut => rloo_advantages(&scores, ids),
    };
    broadcast_to_tokens(&seq_adv, batch.mask, batch.seq_len, advantages);
    returns.copy_from_slice(advantages);
    let groups = members(ids, scores.len());
    let multi: Vec<&Vec<usize>> = groups.iter().filter(|g| g.len() >= 2).collect();
    let uniform = multi
        .iter()
        .filter(|g| g.iter().all(|&b| scores[b] == scores[g[0]]))
        .count();
    let mut metrics = Vec::new();
    if !scores.is_empty() {
        metrics.push(Metric::new(
            "score_mean",
            scores.iter().sum::<f64>() / scores.len() as f64,
        ));
    }
    if !multi.is_empty() {
        metrics.push(Metric::new(
            "uniform_group_frac",
            uniform as f64 / multi.len() as f64,
        ));
    }
    Ok(metrics)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: &[f64], b: &[f64]) -> bool {
        a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-9)
    }

    #[test]
    fn scores_sum_masked_token_rewards_and_ignore_padding() {
        // Sequence 0: 3 valid steps, reward 1 on the last; sequence 1: 2 valid steps, reward 0,
        // garbage in padding.
        let mask = [1., 1., 1., 1., 1., 0.];
        let rewards = [0., 0., 1., 0., 0., 7.];
        let mut batch = Rollout::new(2, 3);
        batch.mask = &mask;
        batch.rewards = &rewards;
        assert_eq!(sequence_scores(&batch), [1.0, 0.0]);
    }

    /// Group 7: scores [1, 0, 1, 0] → mean ½, unbiased std sqrt(1/3) = 0.57735…;
    /// group 3: [1, 1] (all equal → 0); group 9: [1] alone (mean 0, std 1 → A = 1/(1+ε)).
    #[test]
    fn grpo_advantages_by_hand_with_unbiased_std() {
        let scores = [1.0, 0.0, 1.0, 1.0, 0.0, 1.0, 1.0];
        let groups = [7, 7, 3, 7, 7, 3, 9];
        let adv = group_normalized_advantages(&scores, &groups, true, GRPO_EPS);
        let a = 0.5 / ((1.0f64 / 3.0).sqrt() + 1e-6); // 0.866024…
        assert!(
            close(&adv, &[a, -a, 0.0, a, -a, 0.0, 1.0 / (1.0 + 1e-6)]),
            "{adv:?}"
        );
        // The biased std (N) would give 1.0 instead of 0.866.
        assert!((adv[0] - 0.866_024_4).abs() < 1e-6, "{}", adv[0]);
        // Dr. GRPO: centred only.
        let dr = group_normalized_advantages(&scores, &groups, false, GRPO_EPS);
        assert!(close(&dr, &[0.5, -0.5, 0.0, 0.5, -0.5, 0.0, 1.0]), "{dr:?}");
        let st = group_stats(&[2.0, 4.0, 9.0]);
        assert_eq!(st.count, 3);
        assert!((st.mean - 5.0).abs() < 1e-12);
        assert!((st.std - 13.0f64.sqrt()).abs() < 1e-12); // (9 + 1 + 16)/2 = 13
        assert_eq!(group_stats(&[3.0]).mean, 0.0);
        assert_eq!(group_stats(&[3.0]).std, 1.0);
    }

    /// Group 0: [1, 0, 0] → mean ⅓, A = 3/2·(s − ⅓) = [1, −½, −½] (= s_i − mean of the others);
    /// group 1: [5] alone → 5.
    #[test]
    fn rloo_advantages_by_hand() {
        let adv = rloo_advantages(&[1.0, 0.0, 5.0, 0.0], &[0, 0, 1, 0]);
        assert!(close(&adv, &[1.0, -0.5, 5.0, -0.5]), "{adv:?}");
    }

    #[test]
    fn broadcast_fills_valid_steps_only() {
        let mask = [1., 1., 0., 1., 0., 0.];
        let mut out = [9.0f32; 6];
        broadcast_to_tokens(&[2.0, -1.5], &mask, 3, &mut out);
        assert_eq!(out, [2.0, 2.0, 0.0, -1.5, 0.0, 0.0]);
    }

    /// Groups 0: [1, 0] and 1: [1, 1]; 3 steps each, the second sequence 2 steps long.
    #[test]
    fn the_whole_stage_by_hand() {
        let mask = [1., 1., 1., 1., 1., 0., 1., 1., 1., 1., 1., 1.];
        let rewards = [0., 0., 1., 0., 0., 5., 0., 0., 1., 0., 0., 1.];
        let ids = [0u32, 0, 1, 1];
        let mut batch = Rollout::new(4, 3);
        batch.mask = &mask;
        batch.rewards = &rewards;
        batch.group_ids = &ids;
        let (mut adv, mut ret) = ([0.0f32; 12], [0.0f32; 12]);
        let m = outcome_advantages("rloo", &batch, Baseline::LeaveOneOut, &mut adv, &mut ret)
            .expect("runs");
        // Group 0: A = 2·(s − ½) = [1, −1]; group 1 all equal: 0. Padding (index 5) stays 0.
        assert_eq!(adv, [1., 1., 1., -1., -1., 0., 0., 0., 0., 0., 0., 0.]);
        assert_eq!(ret, adv);
        assert_eq!(
            m,
            [
                Metric::new("score_mean", 0.75),
                Metric::new("uniform_group_frac", 0.5)
            ]
        );
        let grpo = Baseline::GroupNormalized { norm_by_std: true };
        outcome_advantages("grpo", &batch, grpo, &mut adv, &mut ret).expect("runs");
        // std of [1, 0] = sqrt(½): A = ±½/(0.70710…+1e-6) = ±0.70710…
        assert!((adv[0] - 0.707_106_1).abs() < 1e-6, "{adv:?}");
        assert!((adv[3] + 0.707_106_1).abs() < 1e-6, "{adv:?}");
    }

    #[test]
    fn missing_group_ids_is_an_error_naming_the_buffer() {
        let mask = [1.0f32; 2];
        let mut batch = Rollout::new(2, 1);
        batch.mask = &mask;
        batch.rewards = &mask;
        let e = group_ids("grpo", &batch).expect_err("no group ids");
        assert!(e.to_string().contains("`group_ids`"), "{e}");
        let ids = [4u32, 4];
        batch.group_ids = &ids;
        assert_eq!(group_ids("grpo", &batch).ok(), Some(&ids[..]));
    }
}
