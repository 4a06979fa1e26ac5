//! The token-level covariance between advantage and log-prob that Clip-Cov and KL-Cov select
//! tokens by (Cui et al. 2025, arXiv 2505.22617; verl `compute_policy_loss_clip_cov`).

/// `cov_t = (A_t − Ā)·(logp_t − mean logp)` for each token of weight > 0, the means taken over
/// those tokens weighted by their weight (verl `masked_mean`; with the 0/1 mask, plain means
/// over the valid tokens), and `−∞` for every other token so it is never selected.
///
/// `logp` is the **current** policy's log-prob (`logp_new`), as in verl. The value only ranks
/// tokens: the loss never differentiates through it. Its scope is whatever minibatch the caller
/// passes (drover: one loss minibatch, where verl uses one per-GPU micro-batch).
pub fn token_covariance(advantages: &[f32], logp: &[f32], weights: &[f32]) -> Vec<f64> {
    let (mut total, mut sum_a, mut sum_l) = (0.0f64, 0.0f64, 0.0f64);
    for ((&a, &l), &w) in advantages.iter().zip(logp).zip(weights) {
        if w > 0.0 {
            let w = f64::from(w);
            total += w;
            sum_a += w * f64::from(a);
            sum_l += w * f64::from(l);
        }
    }
    if total <= 0.0 {
        return vec![f64::NEG_INFINITY; weights.len()];
    }
    let (mean_a, mean_l) = (sum_a / total, sum_l / total);
    advantages
        .iter()
        .zip(logp)
        .zip(weights)
        .map(|((&a, &l), &w)| {
            if w > 0.0 {
                (f64::from(a) - mean_a) * (f64::from(l) - mean_l)
            } else {
                f64::NEG_INFINITY
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn covariance_by_hand_over_valid_tokens() {
        // Valid tokens 0, 1, 3: Ā = (2 + 0 + 1)/3 = 1, mean logp = (−1 − 3 − 2)/3 = −2.
        // cov = [(1)(1), (−1)(−1), −∞, (0)(0)]; the padding token's 50 and 9 are ignored.
        let cov = token_covariance(
            &[2.0, 0.0, 50.0, 1.0],
            &[-1.0, -3.0, 9.0, -2.0],
            &[1.0, 1.0, 0.0, 1.0],
        );
        assert_eq!(cov, [1.0, 1.0, f64::NEG_INFINITY, 0.0]);
        let none = token_covariance(&[1.0], &[1.0], &[0.0]);
        assert_eq!(none, [f64::NEG_INFINITY]);
    }
}
