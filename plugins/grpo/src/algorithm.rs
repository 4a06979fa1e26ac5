//! GRPO's parameters and its `AlgorithmImpl`: group-normalized outcome advantages, then verl's
//! clipped policy loss with an optional k3 KL penalty to the reference policy.

use drover_plugin_api::{
    llm::{clipped_policy_loss, PolicyLossParams, PolicyLossSettings},
    AlgorithmImpl, LossOutputs, Metric, Minibatch, Params, PluginError, PluginInfo, Rollout,
};

const NAME: &str = "grpo";

/// GRPO's hyper-parameters (verl defaults): every shared policy-loss key with GRPO's defaults
/// and docs. Learning rate, epochs and minibatches are the host's; so are the group size and
/// the reference policy (`run.reference_policy`).
pub type GrpoConfig = PolicyLossSettings;

const PARAMS: PolicyLossParams = PolicyLossParams::GRPO;

/// The GRPO algorithm instance.
#[derive(Debug, Clone)]
pub struct Grpo {
    config: GrpoConfig,
}

impl Grpo {
    /// An instance with `config`.
    pub fn with_config(config: GrpoConfig) -> Self {
        Self { config }
    }
}

impl AlgorithmImpl for Grpo {
    fn info() -> PluginInfo {
        PARAMS.declare(PluginInfo::new(
            NAME,
            env!("CARGO_PKG_VERSION"),
            "GRPO: group-normalized outcome advantage, clipped ratio, optional k3 KL to a reference (verl conventions)",
        ))
    }

    fn new(params: &Params, _seed: u64) -> Result<Self, PluginError> {
        // GRPO draws no random numbers: sampling and minibatch shuffling are the host's.
        Ok(Self::with_config(PARAMS.read(params)?))
    }

    fn compute_advantages(
        &mut self,
        batch: &Rollout<'_>,
        advantages: &mut [f32],
        returns: &mut [f32],
    ) -> Result<Vec<Metric>, PluginError> {
        self.config
            .group_advantages(NAME, batch, advantages, returns)
    }

    fn loss(
        &mut self,
        mb: &Minibatch<'_>,
        out: &mut LossOutputs<'_>,
    ) -> Result<Vec<Metric>, PluginError> {
        let stats = clipped_policy_loss(NAME, &self.config.loss, mb, out)?;
        Ok(stats.map(|s| s.metrics()).unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use drover_plugin_api::{
        llm::{ClipRange, LossAggMode},
        testing::{self, metric, outcome_rollout, run_advantages, run_loss},
    };

    use super::*;

    fn make(json: &str) -> Result<Grpo, PluginError> {
        testing::instance(json)
    }

    #[test]
    fn defaults_are_verls_and_bad_params_name_the_key() {
        let g = make("{}").expect("defaults are valid");
        assert_eq!(g.config, GrpoConfig::default());
        let g = make(r#"{"clip_ratio_high": 0.28, "clip_ratio_c": 3.0, "loss_agg_mode": "seq-mean-token-mean"}"#)
            .expect("valid");
        assert_eq!(
            g.config.loss.clip,
            ClipRange {
                low: 0.2,
                high: 0.28,
                dual_clip: Some(3.0)
            }
        );
        assert_eq!(g.config.loss.agg, LossAggMode::SeqMeanTokenMean);
        testing::assert_params_refused::<Grpo>(&[
            (r#"{"loss_agg_mode": "mean"}"#, "loss_agg_mode"),
            (r#"{"clip_ratio_c": 1.0}"#, "clip_ratio_c"),
            (r#"{"loss_scale_factor": 0}"#, "loss_scale_factor"),
            (r#"{"kl_coef": -0.1}"#, "kl_coef"),
            (r#"{"clip_ratio": 1.5}"#, "clip_ratio"),
        ]);
    }

    /// Two prompts × 3 responses, 2 steps each; rewards on the last step.
    /// Prompt 0: [1, 0, 0] → mean ⅓, std sqrt(⅓) → A = [1.1547, −0.5774, −0.5774];
    /// prompt 1: [1, 1, 1] → A = 0.
    #[test]
    fn advantages_by_hand() {
        let mut g = make("{}").expect("defaults");
        let mask = [1.0f32; 12];
        let rewards = [0., 1., 0., 0., 0., 0., 0., 1., 0., 1., 0., 1.];
        let ids = [0u32, 0, 0, 1, 1, 1];
        let batch = outcome_rollout(2, &mask, &rewards, &ids);
        let (adv, ret, m) = run_advantages(&mut g, &batch).expect("runs");
        let (hi, lo) = (
            (2.0 / 3.0) / (1.0f64 / 3.0).sqrt(),
            -(1.0 / 3.0) / (1.0f64 / 3.0).sqrt(),
        );
        let expect = [hi, hi, lo, lo, lo, lo, 0., 0., 0., 0., 0., 0.];
        for (a, e) in adv.iter().zip(expect) {
            assert!((f64::from(*a) - e).abs() < 1e-5, "{adv:?}");
        }
        assert!((hi - 1.154_700_5).abs() < 1e-6);
        assert_eq!(ret, adv);
        assert_eq!(metric(&m, "score_mean"), Some(4.0 / 6.0));
        assert_eq!(metric(&m, "uniform_group_frac"), Some(0.5));
    }

    #[test]
    fn kl_without_a_reference_policy_is_a_clear_error_at_the_first_call() {
        let mut g = make(r#"{"kl_coef": 0.04}"#).expect("valid");
        let mask = [1.0f32; 2];
        let mut batch = outcome_rollout(1, &mask, &mask, &[0, 0]);
        let e = AlgorithmImpl::compute_advantages(&mut g, &batch, &mut [0.0; 2], &mut [0.0; 2])
            .expect_err("no logp_ref");
        assert_eq!(e.key(), Some("kl_coef"));
        assert!(
            e.message().contains("run.reference_policy = \"initial\""),
            "{e}"
        );
        let logp_ref = [-1.0f32; 2];
        batch.logp_ref = &logp_ref;
        AlgorithmImpl::compute_advantages(&mut g, &batch, &mut [0.0; 2], &mut [0.0; 2])
            .expect("with a reference");
    }

    /// Token-mean over 3 valid tokens (the 4th is padding): ρ = [1.1, 1.5, 0.5], A = [1, 1, −1]
    /// → surrogates [−1.1, −1.2 (clipped), 0.8 (clipped)], derivatives [−1.1, 0, 0], each ⅓.
    #[test]
    fn loss_by_hand_token_mean() {
        let mut g = make("{}").expect("defaults");
        let logp_new = [1.1f32.ln() - 1.0, 1.5f32.ln() - 1.0, 0.5f32.ln() - 1.0, 7.0];
        let logp_old = [-1.0f32, -1.0, -1.0, 3.0];
        let adv = [1.0f32, 1.0, -1.0, 50.0];
        let entropy = [0.5f32, 0.7, 0.9, 4.0];
        let mut mb = Minibatch::new();
        mb.logp_new = &logp_new;
        mb.logp_old = &logp_old;
        mb.advantages = &adv;
        mb.entropy_new = &entropy;
        mb.token_weights = &[1.0, 1.0, 1.0, 0.0];
        mb.seq_index = &[0, 0, 1, 1];
        mb.num_sequences = 2;
        let (o, m) = run_loss(&mut g, &mb).expect("runs");
        let t = 1.0 / 3.0;
        let expect_loss = [-1.1 * t, -1.2 * t, 0.8 * t, 0.0];
        let expect_d = [-1.1 * t, 0.0, 0.0, 0.0];
        for i in 0..4 {
            assert!(
                (f64::from(o.loss[i]) - expect_loss[i]).abs() < 1e-6,
                "{:?}",
                o.loss
            );
            assert!(
                (f64::from(o.d_logp[i]) - expect_d[i]).abs() < 1e-6,
                "{:?}",
                o.d_logp
            );
        }
        assert_eq!(o.d_value, [0.0; 4]);
        assert_eq!(o.d_entropy, [0.0; 4]);
        // (−1.1 − 1.2 + 0.8)/3 = −0.5.
        assert!((metric(&m, "policy_loss").expect("reported") + 0.5).abs() < 1e-6);
        assert!((metric(&m, "entropy").expect("reported") - 0.7).abs() < 1e-6);
        assert!((metric(&m, "clip_frac").expect("reported") - 2.0 / 3.0).abs() < 1e-9);
        assert!(metric(&m, "approx_kl").is_some());
    }

    #[test]
    fn passes_drovers_plugin_harness() {
        testing::check_algorithm::<Grpo>("{}").assert_passed();
        testing::check_algorithm::<Grpo>(
            r#"{"norm_adv_by_std": false, "loss_agg_mode": "seq-mean-token-mean", "ent_coef": 0.01, "clip_ratio_high": 0.28, "clip_ratio_c": 3.0}"#,
        )
        .assert_passed();
        testing::check_algorithm::<Grpo>(r#"{"loss_agg_mode": "seq-mean-token-sum-norm"}"#)
            .assert_passed();
    }

    /// Finite differences of Σ loss wrt logp_new with the KL term, dual clip, entropy bonus and
    /// each aggregation mode.
    #[test]
    fn derivatives_match_finite_differences_with_kl() {
        let data = testing::RandomMinibatch::new(11, 5, 8, 1)
            .logp(0.6)
            .reference(1.0)
            .advantages_per_sequence(&[1.2, -0.8, 0.4, -1.5, 0.9])
            .entropy();
        let (m, mb) = (data.len(), data.view());
        for mode in LossAggMode::NAMES {
            let json = format!(
                r#"{{"kl_coef": 0.5, "clip_ratio_c": 1.5, "ent_coef": 0.1, "loss_agg_mode": "{mode}"}}"#
            );
            let mut g = make(&json).expect("valid");
            let r = testing::check_loss_derivatives(&mut g, &mb, 1e-3, 1e-5, 1e-2).expect("runs");
            assert!(r.mismatches.is_empty(), "{mode}: {:#?}", r.mismatches);
            assert!(r.checked >= 2 * m - 4, "{mode}: {r:?}");
            // The KL term must be in the derivative: without it the check fails.
            let (o, _) = run_loss(&mut g, &mb).expect("runs");
            let mut no_kl = make(&json.replace("0.5", "0.0")).expect("valid");
            let (o2, _) = run_loss(&mut no_kl, &mb).expect("runs");
            assert_ne!(o.d_logp, o2.d_logp);
        }
    }
}
