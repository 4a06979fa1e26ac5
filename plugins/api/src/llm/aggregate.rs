//! Loss aggregation modes (verl `agg_loss`) as per-token weights, so that the host's `Σ loss`
//! is the aggregated loss.

use std::fmt;

use crate::{authoring::Minibatch, error::PluginError, params::Params};

/// How per-token losses `l_t` become one minibatch loss `L = Σ_t w_t·l_t` (verl `agg_loss` in
/// `verl/trainer/ppo/core_algos.py`). `m_t` is the host's token weight (the mask, 0 on padding), `B'` the number
/// of sequences with at least one valid token, `|o_s|` = `Σ_{t∈s} m_t`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LossAggMode {
    /// `w_t = m_t / Σ m`: every valid token of the minibatch counts alike. verl's default, DAPO.
    TokenMean,
    /// `w_t = m_t / (B'·|o_s|)`: the mean over sequences of each sequence's token mean. The GRPO
    /// paper's form.
    SeqMeanTokenMean,
    /// `w_t = m_t / B'`: the mean over sequences of each sequence's token sum.
    SeqMeanTokenSum,
    /// `w_t = m_t / C` with `C` = `loss_scale_factor` (default: the padded length `T`): Dr. GRPO.
    /// Like verl, no division by the number of sequences.
    SeqMeanTokenSumNorm,
}

impl LossAggMode {
    /// Every mode, in the order of [`LossAggMode::NAMES`].
    pub const ALL: [Self; 4] = [
        Self::TokenMean,
        Self::SeqMeanTokenMean,
        Self::SeqMeanTokenSum,
        Self::SeqMeanTokenSumNorm,
    ];

    /// The names used in params (verl's `loss_agg_mode` strings).
    pub const NAMES: [&'static str; 4] = [
        "token-mean",
        "seq-mean-token-mean",
        "seq-mean-token-sum",
        "seq-mean-token-sum-norm",
    ];

    /// The mode's name, e.g. `token-mean`.
    pub fn name(self) -> &'static str {
        match self {
            Self::TokenMean => Self::NAMES[0],
            Self::SeqMeanTokenMean => Self::NAMES[1],
            Self::SeqMeanTokenSum => Self::NAMES[2],
            Self::SeqMeanTokenSumNorm => Self::NAMES[3],
        }
    }

    /// The mode named `name`, if any.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.name() == name)
    }

    /// The mode in string parameter `key` of `params`.
    ///
    /// # Errors
    /// `invalid_params` naming `key` and listing the known modes when the value is none of them.
    pub fn from_params(params: &Params, key: &str) -> Result<Self, PluginError> {
        let name = params.str(key)?;
        Self::parse(name).ok_or_else(|| {
            PluginError::invalid_params(
                key,
                format!(
                    "unknown aggregation mode `{name}` (expected one of: {})",
                    Self::NAMES.join(", ")
                ),
            )
        })
    }
}

impl fmt::Display for LossAggMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// `C` of [`LossAggMode::SeqMeanTokenSumNorm`] in the optional float param
/// `loss_scale_factor`; `null`: the padded length (see [`aggregation_weights`]).
///
/// # Errors
/// `invalid_params` (`loss_scale_factor`) when it is not positive.
pub fn loss_scale_factor_from_params(p: &Params) -> Result<Option<f64>, PluginError> {
    let loss_scale_factor = p.opt_f64("loss_scale_factor")?;
    if let Some(c) = loss_scale_factor {
        if c <= 0.0 {
            return Err(PluginError::invalid_params(
                "loss_scale_factor",
                format!("must be positive, got {c}"),
            ));
        }
    }
    Ok(loss_scale_factor)
}

/// The per-token weights `w_t` of `mode` for `mb` (0 for tokens of weight ≤ 0; all 0 when the
/// minibatch has no valid token), so that `Σ_t w_t·l_t` is verl's aggregated loss.
///
/// Sequences are `mb.seq_index`'s; `|o_s|` and `B'` are computed from the token weights, so
/// they agree with `mb.seq_lengths` whenever the weights are the 0/1 mask. For
/// [`LossAggMode::SeqMeanTokenSumNorm`], `loss_scale_factor` `None` means verl's default, the
/// padded length `T`: here the largest number of tokens (valid or padding) any one sequence has
/// in the minibatch, which is `T` when the host sends whole padded rows and the longest response
/// otherwise. Set it explicitly (the generation budget) to be independent of the host.
///
/// # Errors
/// `invalid_params` (`loss_scale_factor`) when the given factor is not positive.
pub fn aggregation_weights(
    mode: LossAggMode,
    mb: &Minibatch<'_>,
    loss_scale_factor: Option<f64>,
) -> Result<Vec<f64>, PluginError> {
    aggregation_weights_with_copies(mode, mb, loss_scale_factor, None)
}

/// [`aggregation_weights`] when sequence `s` counts `copies[s]` times (`[num_sequences]`, ≥ 0):
/// the weights a minibatch holding `copies[s]` draws of each sequence would give, as a
/// resampling algorithm (PF-PPO) averages to. With `c_s` the copies, `|o_s|` the sequence's token
/// weight and `D = Σ c_s` over sequences with a valid token (the draws):
/// token-mean `c_s·m_t / Σ_s c_s·|o_s|`, seq-mean-token-mean `c_s·m_t / (D·|o_s|)`,
/// seq-mean-token-sum `c_s·m_t / D`, seq-mean-token-sum-norm `c_s·m_t / C`. The copies scale a
/// sequence's tokens, not its length: folded into the token weights instead, they would cancel
/// in seq-mean-token-mean's `1/|o_s|`. `None` is one copy each, [`aggregation_weights`].
///
/// # Errors
/// `invalid_params` (`loss_scale_factor`) when the given factor is not positive;
/// `invalid_input` when `copies` is not `[num_sequences]` of finite values ≥ 0.
pub fn aggregation_weights_with_copies(
    mode: LossAggMode,
    mb: &Minibatch<'_>,
    loss_scale_factor: Option<f64>,
    copies: Option<&[f64]>,
) -> Result<Vec<f64>, PluginError> {
    if let Some(c) = copies {
        if c.len() != mb.num_sequences || c.iter().any(|x| !x.is_finite() || *x < 0.0) {
            return Err(PluginError::invalid_input(format!(
                "sequence copies must be {} finite values >= 0 (one per sequence), got {c:?}",
                mb.num_sequences
            )));
        }
    }
    let copies_of = |s: usize| copies.map_or(1.0, |c| c[s]);
    let m = mb.len();
    let tw = |i: usize| {
        let w = f64::from(mb.token_weights[i]);
        if w > 0.0 && copies_of(mb.seq_index[i] as usize) > 0.0 {
            w
        } else {
            0.0
        }
    };
    let mut seq_sum = vec![0.0f64; mb.num_sequences];
    let mut seq_tokens = vec![0usize; mb.num_sequences];
    for i in 0..m {
        let s = mb.seq_index[i] as usize;
        seq_sum[s] += tw(i);
        seq_tokens[s] += 1;
    }
    let draws: f64 = (0..mb.num_sequences).filter(|&s| seq_sum[s] > 0.0).map(copies_of).sum();
    let total: f64 = (0..mb.num_sequences).map(|s| copies_of(s) * seq_sum[s]).sum();
    if total <= 0.0 {
        return Ok(vec![0.0; m]);
    }
    let scale = match (mode, loss_scale_factor) {
        (LossAggMode::SeqMeanTokenSumNorm, Some(c)) if c > 0.0 && c.is_finite() => c,
        (LossAggMode::SeqMeanTokenSumNorm, Some(c)) => {
            return Err(PluginError::invalid_params(
                "loss_scale_factor",
                format!("must be a positive number, got {c}"),
            ))
        }
        (LossAggMode::SeqMeanTokenSumNorm, None) => {
            seq_tokens.iter().copied().max().unwrap_or(1).max(1) as f64
        }
        _ => 1.0,
    };
    Ok((0..m)
        .map(|i| {
            let w = tw(i);
            if w <= 0.0 {
                return 0.0;
            }
            let s = mb.seq_index[i] as usize;
            let cw = copies_of(s) * w;
            match mode {
                LossAggMode::TokenMean => cw / total,
                LossAggMode::SeqMeanTokenMean => cw / (draws * seq_sum[s]),
                LossAggMode::SeqMeanTokenSum => cw / draws,
                LossAggMode::SeqMeanTokenSumNorm => cw / scale,
            }
        })
        .collect())
}

/// The mean of `values` over tokens of weight > 0, weighted by `weights` (verl `masked_mean`);
/// `None` when `values` is empty or no token has weight.
pub fn valid_token_mean(values: &[f32], weights: &[f32]) -> Option<f64> {
    let (mut sum, mut total) = (0.0f64, 0.0f64);
    for (&v, &w) in values.iter().zip(weights) {
        if w > 0.0 {
            sum += f64::from(w) * f64::from(v);
            total += f64::from(w);
        }
    }
    (total > 0.0).then(|| sum / total)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two sequences: s0 has 3 valid tokens, s1 has 1 valid token and 1 padding token; a third
    /// sequence index (2) exists but has only padding, so B' = 2.
    fn weights(mode: LossAggMode, factor: Option<f64>) -> Vec<f64> {
        let tw = [1.0f32, 1.0, 1.0, 1.0, 0.0, 0.0];
        let seq_index = [0u32, 0, 0, 1, 1, 2];
        let zeros = [0.0f32; 6];
        let mut mb = Minibatch::new();
        mb.logp_new = &zeros;
        mb.logp_old = &zeros;
        mb.advantages = &zeros;
        mb.token_weights = &tw;
        mb.seq_index = &seq_index;
        mb.num_sequences = 3;
        mb.check().expect("consistent");
        aggregation_weights(mode, &mb, factor).expect("weights")
    }

    fn close(a: &[f64], b: &[f64]) -> bool {
        a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-12)
    }

    /// Copies give the weights of the minibatch that holds each sequence that many times, in
    /// every mode: sequences s0 (3 valid tokens), s1 (1 valid, 1 padding) and s2 (2 valid)
    /// with copies 2, 1 and 0 weigh as the minibatch s0, s0, s1.
    #[test]
    fn copies_weigh_as_the_resampled_minibatch_in_every_mode() {
        let zeros = [0.0f32; 12];
        let make = |tw: &'static [f32], seq_index: &'static [u32], n: usize| {
            let mut mb = Minibatch::new();
            mb.logp_new = &zeros[..tw.len()];
            mb.logp_old = &zeros[..tw.len()];
            mb.advantages = &zeros[..tw.len()];
            mb.token_weights = tw;
            mb.seq_index = seq_index;
            mb.num_sequences = n;
            mb
        };
        let original = make(&[1.0, 1.0, 1.0, 1.0, 0.0, 1.0, 1.0], &[0, 0, 0, 1, 1, 2, 2], 3);
        let resampled = make(
            &[1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0],
            &[0, 0, 0, 1, 1, 1, 2, 2],
            3,
        );
        for mode in LossAggMode::ALL {
            for factor in [None, Some(8.0)] {
                let got = aggregation_weights_with_copies(mode, &original, factor, Some(&[2.0, 1.0, 0.0]))
                    .expect("weights");
                let want = aggregation_weights(mode, &resampled, factor).expect("weights");
                // Token i of s0 has two copies (tokens i and 3 + i of the resampled minibatch).
                let merged = [
                    want[0] + want[3],
                    want[1] + want[4],
                    want[2] + want[5],
                    want[6],
                    want[7],
                    0.0,
                    0.0,
                ];
                assert!(close(&got, &merged), "{mode} {factor:?}: {got:?} vs {merged:?}");
            }
            let ones = aggregation_weights_with_copies(mode, &original, None, Some(&[1.0; 3])).expect("weights");
            assert_eq!(ones, aggregation_weights(mode, &original, None).expect("weights"), "{mode}");
        }
        let bad = aggregation_weights_with_copies(LossAggMode::TokenMean, &original, None, Some(&[1.0, -1.0, 1.0]));
        assert!(bad.is_err_and(|e| e.message().contains("finite values >= 0")));
        assert!(aggregation_weights_with_copies(LossAggMode::TokenMean, &original, None, Some(&[1.0])).is_err());
    }

    #[test]
    fn each_mode_by_hand() {
        let q = 0.25;
        let w = weights(LossAggMode::TokenMean, None);
        assert!(close(&w, &[q, q, q, q, 0.0, 0.0]), "{w:?}");
        // 1/(B'·|o_s|): s0 → 1/(2·3), s1 → 1/(2·1).
        let w = weights(LossAggMode::SeqMeanTokenMean, None);
        let s = 1.0 / 6.0;
        assert!(close(&w, &[s, s, s, 0.5, 0.0, 0.0]), "{w:?}");
        let w = weights(LossAggMode::SeqMeanTokenSum, None);
        assert!(close(&w, &[0.5, 0.5, 0.5, 0.5, 0.0, 0.0]), "{w:?}");
        // Default C: the most tokens one sequence has (s0: 3), not divided by B'.
        let t = 1.0 / 3.0;
        let w = weights(LossAggMode::SeqMeanTokenSumNorm, None);
        assert!(close(&w, &[t, t, t, t, 0.0, 0.0]), "{w:?}");
        let w = weights(LossAggMode::SeqMeanTokenSumNorm, Some(8.0));
        assert!(close(&w, &[0.125, 0.125, 0.125, 0.125, 0.0, 0.0]), "{w:?}");
    }

    #[test]
    fn names_round_trip_and_unknown_is_rejected() {
        for mode in LossAggMode::ALL {
            assert_eq!(LossAggMode::parse(mode.name()), Some(mode));
            assert_eq!(mode.to_string(), mode.name());
        }
        assert_eq!(LossAggMode::parse("token_mean"), None);
        let specs = [crate::ParamSpec::string(
            "loss_agg_mode",
            "token-mean",
            "mode",
        )];
        let p = Params::parse(&specs, r#"{"loss_agg_mode": "seq-mean"}"#).expect("a string");
        let e = LossAggMode::from_params(&p, "loss_agg_mode").expect_err("unknown");
        assert_eq!(e.key(), Some("loss_agg_mode"));
        assert!(e.message().contains("seq-mean-token-mean"), "{e}");
    }

    #[test]
    fn a_bad_scale_factor_names_the_key_and_an_empty_minibatch_has_zero_weights() {
        let tw = [1.0f32];
        let mut mb = Minibatch::new();
        mb.token_weights = &tw;
        mb.seq_index = &[0];
        mb.num_sequences = 1;
        mb.logp_new = &[0.0];
        let e = aggregation_weights(LossAggMode::SeqMeanTokenSumNorm, &mb, Some(0.0))
            .expect_err("zero factor");
        assert_eq!(e.key(), Some("loss_scale_factor"));
        mb.token_weights = &[0.0];
        let w = aggregation_weights(LossAggMode::TokenMean, &mb, None).expect("weights");
        assert_eq!(w, [0.0]);
    }

    #[test]
    fn loss_scale_factor_must_be_positive_when_set() {
        let specs = [crate::ParamSpec::optional_float("loss_scale_factor", "C")];
        let read = |json: &str| {
            let p = Params::parse(&specs, json).expect("a float or null");
            loss_scale_factor_from_params(&p)
        };
        assert_eq!(read("{}").expect("null"), None);
        assert_eq!(
            read(r#"{"loss_scale_factor": 64}"#).expect("ok"),
            Some(64.0)
        );
        let e = read(r#"{"loss_scale_factor": 0}"#).expect_err("zero");
        assert_eq!(e.key(), Some("loss_scale_factor"));
    }

    #[test]
    fn valid_token_mean_skips_padding() {
        assert_eq!(
            valid_token_mean(&[1.0, 3.0, 100.0], &[1.0, 1.0, 0.0]),
            Some(2.0)
        );
        assert_eq!(valid_token_mean(&[], &[]), None);
        assert_eq!(valid_token_mean(&[5.0], &[0.0]), None);
    }
}
