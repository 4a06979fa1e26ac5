//! verl's PF-PPO weights (`compute_pf_ppo_reweight_data`'s `compute_weights`, CA:1905-1981) and
//! the expected copies of each response in verl's resampling.

use drover_plugin_api::PluginError;

/// verl adds this to every weight (and clamps to it), so no response has probability 0.
pub const WEIGHT_FLOOR: f64 = 1e-8;

/// How scores become resampling weights (verl `reweight_method`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ReweightMethod {
    /// `|s|^p` (verl `weight_pow`, default 2).
    Pow(f64),
    /// 1 for the batch's highest and lowest scores, 0 otherwise (PF-PPO's best-worst).
    MaxMin,
    /// 0.4 for the batch's highest score, 0.1 otherwise (PF-PPO's best-random).
    MaxRandom,
}

impl ReweightMethod {
    /// The method named `name` (`pow`, `max_min`, `max_random`), `pow` with exponent `pow`.
    ///
    /// # Errors
    /// `invalid_params` (`reweight_method`) for another name.
    pub fn parse(name: &str, pow: f64) -> Result<Self, PluginError> {
        match name {
            "pow" => Ok(Self::Pow(pow)),
            "max_min" => Ok(Self::MaxMin),
            "max_random" => Ok(Self::MaxRandom),
            other => Err(PluginError::invalid_params(
                "reweight_method",
                format!("expected \"pow\", \"max_min\" or \"max_random\", got {other:?}"),
            )),
        }
    }
}

/// verl's weights of `scores` (one per response, over the whole batch, not per group), floor
/// included: `max(w + 1e-8, 1e-8)`.
pub fn reweight(scores: &[f64], method: ReweightMethod) -> Vec<f64> {
    let max = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let min = scores.iter().copied().fold(f64::INFINITY, f64::min);
    scores
        .iter()
        .map(|&s| {
            let w = match method {
                ReweightMethod::Pow(p) => s.abs().powf(p),
                ReweightMethod::MaxMin => {
                    if s == max || s == min {
                        1.0
                    } else {
                        0.0
                    }
                }
                ReweightMethod::MaxRandom => {
                    if s == max {
                        0.4
                    } else {
                        0.1
                    }
                }
            };
            (w + WEIGHT_FLOOR).max(WEIGHT_FLOOR)
        })
        .collect()
}

/// Expected copies of each response when `weights.len()` responses are drawn with replacement
/// with probabilities ∝ `weights` (verl's `torch.multinomial(weights, B, replacement=True)`):
/// `B·w_i/Σ w`. They average 1.
pub fn expected_copies(weights: &[f64]) -> Vec<f64> {
    let total: f64 = weights.iter().sum();
    let n = weights.len() as f64;
    weights.iter().map(|w| n * w / total).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: &[f64], b: &[f64]) -> bool {
        a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-12)
    }

    /// Scores [1, 0, −2, 0.5].
    /// pow 2: [1, 0, 4, 0.25] (+1e-8 each); max_min: max 1, min −2 → [1, 0, 1, 0];
    /// max_random: [0.4, 0.1, 0.1, 0.1].
    #[test]
    fn weights_of_each_mode_by_hand() {
        let s = [1.0, 0.0, -2.0, 0.5];
        let f = WEIGHT_FLOOR;
        assert!(close(
            &reweight(&s, ReweightMethod::Pow(2.0)),
            &[1.0 + f, f, 4.0 + f, 0.25 + f]
        ));
        assert!(close(
            &reweight(&s, ReweightMethod::Pow(1.0)),
            &[1.0 + f, f, 2.0 + f, 0.5 + f]
        ));
        assert!(close(
            &reweight(&s, ReweightMethod::MaxMin),
            &[1.0 + f, f, 1.0 + f, f]
        ));
        assert!(close(
            &reweight(&s, ReweightMethod::MaxRandom),
            &[0.4 + f, 0.1 + f, 0.1 + f, 0.1 + f]
        ));
        // Ties: every response at the maximum gets 0.4; all equal is max and min at once.
        assert!(close(
            &reweight(&[1.0, 1.0, 0.0], ReweightMethod::MaxRandom),
            &[0.4 + f, 0.4 + f, 0.1 + f]
        ));
        assert!(close(
            &reweight(&[3.0, 3.0], ReweightMethod::MaxMin),
            &[1.0 + f, 1.0 + f]
        ));
    }

    /// max_random on 4 responses: Σ = 0.7 → copies 4·[0.4, 0.1, 0.1, 0.1]/0.7 =
    /// [2.285714…, 0.571428…, 0.571428…, 0.571428…]; a 0/1 batch under pow keeps only the
    /// correct responses (the wrong ones get 4·1e-8/(2 + 2e-8)… ≈ 2e-8).
    #[test]
    fn expected_copies_by_hand() {
        let c = expected_copies(&[0.4, 0.1, 0.1, 0.1]);
        assert!(close(&c, &[16.0 / 7.0, 4.0 / 7.0, 4.0 / 7.0, 4.0 / 7.0]), "{c:?}");
        assert!((c.iter().sum::<f64>() - 4.0).abs() < 1e-12);
        let c = expected_copies(&reweight(&[1.0, 0.0, 1.0, 0.0], ReweightMethod::Pow(2.0)));
        assert!((c[0] - 2.0).abs() < 1e-7 && c[1] < 1e-7, "{c:?}");
    }

    #[test]
    fn unknown_method_names_the_key() {
        let e = ReweightMethod::parse("bon", 2.0).expect_err("unknown");
        assert_eq!(e.key(), Some("reweight_method"));
        assert_eq!(ReweightMethod::parse("pow", 3.0).ok(), Some(ReweightMethod::Pow(3.0)));
    }
}
