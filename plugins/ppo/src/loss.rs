//! The loss stage: clipped surrogate, (clipped) value loss and entropy bonus, per token.

use drover_plugin_api::{LossOutputs, Metric, Minibatch, PluginError};

use crate::algorithm::PpoConfig;

/// Minibatch means of the loss terms and diagnostics (CleanRL's logged values).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LossStats {
    /// mean(l_pg).
    pub policy_loss: f64,
    /// mean(l_v), including the ½.
    pub value_loss: f64,
    /// mean(H).
    pub entropy: f64,
    /// mean((ρ − 1) − log ρ) (k3, old → new).
    pub approx_kl: f64,
    /// Fraction of tokens with |ρ − 1| > ε.
    pub clip_frac: f64,
}

impl LossStats {
    /// As metrics named like the results-layout columns.
    pub fn metrics(&self) -> Vec<Metric> {
        vec![
            Metric::new("policy_loss", self.policy_loss),
            Metric::new("value_loss", self.value_loss),
            Metric::new("entropy", self.entropy),
            Metric::new("approx_kl", self.approx_kl),
            Metric::new("clip_frac", self.clip_frac),
        ]
    }
}

/// Mean and unbiased (N − 1) standard deviation of the advantages of tokens with weight > 0;
/// std is 0 with fewer than two tokens (torch would give NaN).
fn adv_stats(mb: &Minibatch<'_>) -> (f64, f64) {
    let valid = || {
        mb.advantages
            .iter()
            .zip(mb.token_weights)
            .filter(|(_, &w)| w > 0.0)
            .map(|(&a, _)| f64::from(a))
    };
    let n = valid().count();
    if n == 0 {
        return (0.0, 0.0);
    }
    let mean = valid().sum::<f64>() / n as f64;
    if n < 2 {
        return (mean, 0.0);
    }
    let var = valid().map(|a| (a - mean) * (a - mean)).sum::<f64>() / (n - 1) as f64;
    (mean, var.sqrt())
}

/// CleanRL's PPO loss `L = mean(l_pg) − ent_coef·mean(H) + vf_coef·mean(l_v)` over the
/// minibatch's tokens, the mean weighted by `token_weights` (`ŵ_i = w_i / Σw`), written per
/// token with ŵ folded in, together with ∂L/∂logp_new, ∂L/∂v_new, ∂L/∂H_new.
///
/// `l_pg = max(−Âρ, −Â·clip(ρ, 1−ε, 1+ε))` with Â normalized per minibatch when `norm_adv`;
/// its derivative is `−Âρ` when the unclipped term is the max, else 0.
/// `l_v = ½·max((v−R)², (v_c−R)²)`, `v_c = V_old + clip(v − V_old, −ε, ε)` (or `½(v−R)²`
/// without `clip_vloss`); its derivative is `v − R` when the unclipped term is the max, else 0.
///
/// Returns `None` (and all-zero outputs) when no token has weight > 0.
///
/// # Errors
/// `invalid_input` when the minibatch lacks `returns`, `values_new`, `values_old` or
/// `entropy_new`.
pub fn ppo_loss(
    cfg: &PpoConfig,
    mb: &Minibatch<'_>,
    out: &mut LossOutputs<'_>,
) -> Result<Option<LossStats>, PluginError> {
    let returns = Minibatch::require("ppo", "returns", mb.returns)?;
    let values_new = Minibatch::require("ppo", "values_new", mb.values_new)?;
    let values_old = Minibatch::require("ppo", "values_old", mb.values_old)?;
    let entropy_new = Minibatch::require("ppo", "entropy_new", mb.entropy_new)?;
    let total_weight: f64 = mb
        .token_weights
        .iter()
        .filter(|&&w| w > 0.0)
        .map(|&w| f64::from(w))
        .sum();
    if total_weight <= 0.0 {
        return Ok(None);
    }
    let (adv_mean, adv_std) = adv_stats(mb);
    let eps = f64::from(cfg.clip_coef);
    let (ent_coef, vf_coef) = (f64::from(cfg.ent_coef), f64::from(cfg.vf_coef));
    let mut sums = LossStats {
        policy_loss: 0.0,
        value_loss: 0.0,
        entropy: 0.0,
        approx_kl: 0.0,
        clip_frac: 0.0,
    };
    for i in 0..mb.len() {
        let w = f64::from(mb.token_weights[i]);
        if w <= 0.0 {
            continue; // outputs were zeroed by the adapter
        }
        let w = w / total_weight;
        let adv = f64::from(mb.advantages[i]);
        let adv = if cfg.norm_adv {
            (adv - adv_mean) / (adv_std + 1e-8)
        } else {
            adv
        };
        let log_ratio = f64::from(mb.logp_new[i]) - f64::from(mb.logp_old[i]);
        let ratio = log_ratio.exp();

        let pg_unclipped = -adv * ratio;
        let pg_clipped = -adv * ratio.clamp(1.0 - eps, 1.0 + eps);
        let (l_pg, d_pg) = if pg_unclipped >= pg_clipped {
            (pg_unclipped, -adv * ratio)
        } else {
            (pg_clipped, 0.0)
        };

        let (v, v_old, ret) = (
            f64::from(values_new[i]),
            f64::from(values_old[i]),
            f64::from(returns[i]),
        );
        let unclipped = (v - ret) * (v - ret);
        let (l_v, d_v) = if cfg.clip_vloss {
            let v_clipped = v_old + (v - v_old).clamp(-eps, eps);
            let clipped = (v_clipped - ret) * (v_clipped - ret);
            if unclipped >= clipped {
                (0.5 * unclipped, v - ret)
            } else {
                (0.5 * clipped, 0.0)
            }
        } else {
            (0.5 * unclipped, v - ret)
        };
        let h = f64::from(entropy_new[i]);

        out.loss[i] = (w * (l_pg - ent_coef * h + vf_coef * l_v)) as f32;
        out.d_logp[i] = (w * d_pg) as f32;
        out.d_value[i] = (w * vf_coef * d_v) as f32;
        out.d_entropy[i] = (-w * ent_coef) as f32;

        sums.policy_loss += w * l_pg;
        sums.value_loss += w * l_v;
        sums.entropy += w * h;
        sums.approx_kl += w * ((ratio - 1.0) - log_ratio);
        sums.clip_frac += if (ratio - 1.0).abs() > eps { w } else { 0.0 };
    }
    Ok(Some(sums))
}

#[cfg(test)]
mod tests {
    use drover_plugin_api::{testing::check_loss_derivatives, AlgorithmImpl, CounterRng, Params};

    use super::*;
    use crate::algorithm::Ppo;

    struct Outs {
        loss: Vec<f32>,
        d_logp: Vec<f32>,
        d_value: Vec<f32>,
        d_entropy: Vec<f32>,
    }

    fn run(cfg: &PpoConfig, mb: &Minibatch<'_>) -> (Outs, Option<LossStats>) {
        let m = mb.len();
        let mut o = Outs {
            loss: vec![0.0; m],
            d_logp: vec![0.0; m],
            d_value: vec![0.0; m],
            d_entropy: vec![0.0; m],
        };
        let mut out = LossOutputs {
            loss: &mut o.loss,
            d_logp: &mut o.d_logp,
            d_value: &mut o.d_value,
            d_entropy: &mut o.d_entropy,
        };
        let stats = ppo_loss(cfg, mb, &mut out).expect("loss runs");
        (o, stats)
    }

    fn close(a: &[f32], b: &[f32]) -> bool {
        a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-5)
    }

    /// Four tokens covering each clipping case, plus a padding token full of garbage.
    /// ρ = [1.1 (inside), 1.5 (A>0: clipped), 0.5 (A<0: clipped), 1.5 (A<0: not clipped)].
    #[test]
    fn loss_by_hand_with_every_clipping_case() {
        let cfg = PpoConfig {
            norm_adv: false,
            ..PpoConfig::default()
        };
        let logp_new = [1.1f32.ln(), 1.5f32.ln(), 0.5f32.ln(), 1.5f32.ln(), 5.0];
        let zeros = [0.0f32; 5];
        let advantages = [1.0, 1.0, -1.0, -1.0, 100.0];
        let returns = [1.0, 1.0, 0.0, 0.3, 7.0];
        let values_new = [0.1, 0.5, 0.5, -0.1, 3.0];
        let entropy = [1.0, 2.0, 3.0, 4.0, 9.0];
        let weights = [1.0, 1.0, 1.0, 1.0, 0.0];
        let seq_index = [0u32; 5];
        let mut mb = Minibatch::new();
        mb.logp_new = &logp_new;
        mb.logp_old = &zeros;
        mb.advantages = &advantages;
        mb.returns = &returns;
        mb.values_new = &values_new;
        mb.values_old = &zeros;
        mb.entropy_new = &entropy;
        mb.token_weights = &weights;
        mb.seq_index = &seq_index;
        mb.num_sequences = 1;
        mb.check().expect("consistent minibatch");
        let (o, stats) = run(&cfg, &mb);
        // l_pg = [−1.1, −1.2, 0.8, 1.5]; l_v = [0.405, 0.32 (clipped), 0.125, 0.08]
        // loss_i = ¼(l_pg − 0.01·H + 0.5·l_v)
        assert!(
            close(&o.loss, &[-0.226875, -0.265, 0.208125, 0.375, 0.0]),
            "{:?}",
            o.loss
        );
        // Clipped tokens 1 and 2 have zero policy derivative; token 3 (A<0, ρ>1+ε) does not.
        assert!(
            close(&o.d_logp, &[-0.275, 0.0, 0.0, 0.375, 0.0]),
            "{:?}",
            o.d_logp
        );
        // Token 1's clipped value term dominates: zero derivative.
        assert!(
            close(&o.d_value, &[-0.1125, 0.0, 0.0625, -0.05, 0.0]),
            "{:?}",
            o.d_value
        );
        assert!(
            close(&o.d_entropy, &[-0.0025, -0.0025, -0.0025, -0.0025, 0.0]),
            "{:?}",
            o.d_entropy
        );
        let s = stats.expect("valid tokens");
        assert!(s.policy_loss.abs() < 1e-6);
        assert!((s.value_loss - 0.2325).abs() < 1e-6);
        assert!((s.entropy - 2.5).abs() < 1e-6);
        assert!((s.clip_frac - 0.75).abs() < 1e-6);
        assert!((s.approx_kl - 0.096_726_7).abs() < 1e-6, "{}", s.approx_kl);

        // Without clip_vloss, token 1's value derivative is ¼·½·(v − R) = −0.0625.
        let (o, _) = run(
            &PpoConfig {
                clip_vloss: false,
                ..cfg
            },
            &mb,
        );
        assert!((o.d_value[1] + 0.0625).abs() < 1e-6, "{:?}", o.d_value);
    }

    #[test]
    fn advantages_are_normalized_per_minibatch_with_unbiased_std() {
        let cfg = PpoConfig {
            ent_coef: 0.0,
            vf_coef: 0.0,
            ..PpoConfig::default()
        };
        let zeros = [0.0f32; 5];
        let advantages = [1.0, 2.0, 3.0, 4.0, 100.0];
        let weights = [1.0, 1.0, 1.0, 1.0, 0.0];
        let seq_index = [0u32; 5];
        let mut mb = Minibatch::new();
        mb.logp_new = &zeros; // ρ = 1: l_pg = −Â, ∂/∂logp = −Â
        mb.logp_old = &zeros;
        mb.advantages = &advantages;
        mb.returns = &zeros;
        mb.values_new = &zeros;
        mb.values_old = &zeros;
        mb.entropy_new = &zeros;
        mb.token_weights = &weights;
        mb.seq_index = &seq_index;
        mb.num_sequences = 1;
        let (o, _) = run(&cfg, &mb);
        // The padding token's 100 is excluded: mean 2.5, std = sqrt(5/3) (N − 1 = 3).
        let std = (5.0f64 / 3.0).sqrt();
        let expected: Vec<f32> = advantages[..4]
            .iter()
            .map(|&a| (-(f64::from(a) - 2.5) / (std + 1e-8) / 4.0) as f32)
            .collect();
        assert!(
            close(&o.d_logp[..4], &expected),
            "{:?} vs {expected:?}",
            o.d_logp
        );
        // With the biased std (N) the first value would be −0.3354…, not −0.2905…
        assert!((o.d_logp[0] - 0.290_474_4).abs() < 1e-5, "{}", o.d_logp[0]);
    }

    #[test]
    fn derivatives_match_finite_differences() {
        let mut rng = CounterRng::new(3);
        let m = 48;
        let mut draw = |lo: f64, hi: f64| (lo + (hi - lo) * rng.next_f64()) as f32;
        let logp_old: Vec<f32> = (0..m).map(|_| draw(-3.0, -0.1)).collect();
        // ρ in [e^−0.5, e^0.5]: a good share of tokens clipped on either side.
        let logp_new: Vec<f32> = logp_old.iter().map(|&l| l + draw(-0.5, 0.5)).collect();
        let advantages: Vec<f32> = (0..m).map(|_| draw(-2.0, 2.0)).collect();
        let returns: Vec<f32> = (0..m).map(|_| draw(-1.0, 1.0)).collect();
        let values_old: Vec<f32> = (0..m).map(|_| draw(-1.0, 1.0)).collect();
        let values_new: Vec<f32> = values_old.iter().map(|&v| v + draw(-0.5, 0.5)).collect();
        let entropy: Vec<f32> = (0..m).map(|_| draw(0.1, 2.0)).collect();
        let weights: Vec<f32> = (0..m).map(|i| if i % 7 == 6 { 0.0 } else { 1.0 }).collect();
        let seq_index: Vec<u32> = (0..m as u32).map(|i| i / 8).collect();
        let mut mb = Minibatch::new();
        mb.logp_new = &logp_new;
        mb.logp_old = &logp_old;
        mb.advantages = &advantages;
        mb.returns = &returns;
        mb.values_new = &values_new;
        mb.values_old = &values_old;
        mb.entropy_new = &entropy;
        mb.token_weights = &weights;
        mb.seq_index = &seq_index;
        mb.num_sequences = 6;
        let params = Params::parse(&Ppo::info().params, "{}").expect("defaults");
        let mut ppo = Ppo::new(&params, 0).expect("ppo");
        let report = check_loss_derivatives(&mut ppo, &mb, 1e-3, 1e-4, 1e-2).expect("loss runs");
        assert!(report.mismatches.is_empty(), "{:#?}", report.mismatches);
        // 3 inputs × 48 tokens; only the rare token within h of a clip boundary is skipped.
        assert!(report.checked >= 3 * m - 6, "{report:?}");
    }
}
