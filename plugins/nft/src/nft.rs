//! NFT's two stages as pure functions: the advantage encoding (correctness sign and clamped
//! group accuracy r̂) and the per-token loss with its derivative.

use std::collections::BTreeMap;

use drover_plugin_api::llm::{broadcast_to_tokens, sequence_scores};
use drover_plugin_api::{Metric, Rollout};

/// Lower clamp of the group accuracy r̂ (NFT `dp_actor.py`: `torch.clamp(correct_rate, 0.02, 0.98)`).
pub const RATE_MIN: f64 = 0.02;
/// Upper clamp of the group accuracy r̂ (same line as [`RATE_MIN`]).
pub const RATE_MAX: f64 = 0.98;
/// NFT clamps the log-ratio from above at 10 before `exp` (`negative_approx_kl.clamp(max=10.0)`);
/// beyond it the derivative is 0.
pub const MAX_LOG_RATIO: f64 = 10.0;

/// How NFT scales each token loss by the group accuracy r̂ (NFT's `normalize` switch).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Normalize {
    /// `normalize = 0`: no scaling.
    None,
    /// `normalize = 1` (the paper's runs): × (1 − r̂).
    NegativeRate,
    /// `normalize = 2`: × sqrt((1 − r̂)/r̂).
    SqrtOdds,
}

impl Normalize {
    /// The scale for accuracy `r`.
    pub fn scale(self, r: f64) -> f64 {
        match self {
            Self::None => 1.0,
            Self::NegativeRate => 1.0 - r,
            Self::SqrtOdds => ((1.0 - r) / r).sqrt(),
        }
    }
}

/// The advantage stage. A response is correct when its score (sum of its valid token rewards)
/// is positive: NFT's rewards mapped to ±1. Each response gets `+r̂` when correct and `−r̂` when
/// wrong, `r̂` its group's accuracy clamped to [[`RATE_MIN`], [`RATE_MAX`]] (the response
/// itself included, as NFT's `correct_rate`), broadcast onto its valid tokens.
///
/// Encoding both in one signed number is why the loss needs no extra buffer: `r̂ ≥ 0.02` keeps
/// the sign unambiguous. Returns the metrics `score_mean`, `response_accuracy` (per response;
/// `accuracy` is the host's column, per prompt group) and `uniform_group_frac` (groups of two
/// or more all right or all wrong).
pub fn nft_advantages(
    batch: &Rollout<'_>,
    group_ids: &[u32],
    advantages: &mut [f32],
) -> Vec<Metric> {
    let scores = sequence_scores(batch);
    let correct: Vec<bool> = scores.iter().map(|&s| s > 0.0).collect();
    let mut groups: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
    for (b, &g) in group_ids.iter().enumerate().take(scores.len()) {
        groups.entry(g).or_default().push(b);
    }
    let mut all: Vec<Vec<usize>> = groups.into_values().collect();
    all.extend((group_ids.len()..scores.len()).map(|b| vec![b]));
    let mut seq_adv = vec![0.0; scores.len()];
    let (mut multi, mut uniform) = (0usize, 0usize);
    for idx in &all {
        let right = idx.iter().filter(|&&b| correct[b]).count();
        let rate = (right as f64 / idx.len() as f64).clamp(RATE_MIN, RATE_MAX);
        for &b in idx {
            seq_adv[b] = if correct[b] { rate } else { -rate };
        }
        if idx.len() >= 2 {
            multi += 1;
            uniform += usize::from(right == 0 || right == idx.len());
        }
    }
    broadcast_to_tokens(&seq_adv, batch.mask, batch.seq_len, advantages);
    let mut metrics = Vec::new();
    if !scores.is_empty() {
        let n = scores.len() as f64;
        metrics.push(Metric::new("score_mean", scores.iter().sum::<f64>() / n));
        let right = correct.iter().filter(|&&c| c).count();
        metrics.push(Metric::new("response_accuracy", right as f64 / n));
    }
    if multi > 0 {
        metrics.push(Metric::new(
            "uniform_group_frac",
            uniform as f64 / multi as f64,
        ));
    }
    metrics
}

/// One token's NFT loss before the aggregation weight.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TokenLoss {
    /// The loss value.
    pub loss: f64,
    /// `∂loss/∂logp_new`.
    pub d_logp: f64,
    /// The clamped log-ratio `min(logp_new − logp_old, 10)`.
    pub log_ratio: f64,
    /// The clamp on the log's argument was active (the straight-through region).
    pub clamped: bool,
}

/// `−ln(max(x, c))` continued linearly below `c`: `−ln c + (c − x)/c`. Its derivative is
/// `−1/max(x, c)` everywhere, which is exactly the gradient NFT's `clamp_preserve_grad` gives;
/// continuing the value the same way makes `Σ loss` an objective whose derivative is the one
/// applied (NFT logs the flat `−ln c` instead). Returns (value, d/dx, clamped).
fn neg_log_straight_through(x: f64, c: f64) -> (f64, f64, bool) {
    if x >= c {
        (-x.ln(), -1.0 / x, false)
    } else {
        (-c.ln() + (c - x) / c, -1.0 / c, true)
    }
}

/// NFT's token loss (`dp_actor.py`, `ratio_type = "token"`) for a token whose advantage `adv`
/// encodes correctness and r̂ as [`nft_advantages`] does (`r̂ = clamp(|adv|, 0.02, 0.98)`):
///
/// - ρ = exp(min(logp_new − logp_old, 10));
/// - correct: `−ln(max(ρ, clamp_positive))`;
/// - wrong: `neg_weight · −ln(max((1 − r̂ρ)/(1 − r̂), clamp_negative))`;
/// - both times `normalize.scale(r̂)`.
///
/// Where a clamp is active the value continues linearly ([`neg_log_straight_through`]), so the
/// derivative is NFT's straight-through one.
pub fn nft_token_loss(
    logp_new: f64,
    logp_old: f64,
    adv: f64,
    neg_weight: f64,
    clamp_negative: f64,
    clamp_positive: f64,
    normalize: Normalize,
) -> TokenLoss {
    let raw = logp_new - logp_old;
    let log_ratio = raw.min(MAX_LOG_RATIO);
    let ratio = log_ratio.exp();
    let d_ratio = if raw < MAX_LOG_RATIO { ratio } else { 0.0 };
    let rate = adv.abs().clamp(RATE_MIN, RATE_MAX);
    let scale = normalize.scale(rate);
    let (loss, d_logp, clamped) = if adv > 0.0 {
        if ratio >= clamp_positive {
            // −ln ρ written as −log_ratio: no underflow for very unlikely tokens.
            (
                -log_ratio,
                if raw < MAX_LOG_RATIO { -1.0 } else { 0.0 },
                false,
            )
        } else {
            let (v, dv, c) = neg_log_straight_through(ratio, clamp_positive);
            (v, dv * d_ratio, c)
        }
    } else {
        let proxy = (1.0 - rate * ratio) / (1.0 - rate);
        let d_proxy = -rate * d_ratio / (1.0 - rate);
        let (v, dv, c) = neg_log_straight_through(proxy, clamp_negative);
        (neg_weight * v, neg_weight * dv * d_proxy, c)
    };
    TokenLoss {
        loss: scale * loss,
        d_logp: scale * d_logp,
        log_ratio,
        clamped,
    }
}
