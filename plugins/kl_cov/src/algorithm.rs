//! KL-Cov's parameters and its `AlgorithmImpl`: GRPO advantages, then [`kl_cov_loss`].

use drover_plugin_api::{
    llm::{outcome_advantages, Baseline, PolicyLossDefaults, PolicyLossKey as K, PolicyLossParams},
    AlgorithmImpl, LossOutputs, Metric, Minibatch, ParamSpec, Params, PluginError, PluginInfo,
    Rollout,
};

use crate::loss::{kl_cov_loss, KlCovConfig};

const NAME: &str = "kl_cov";

/// The shared keys KL-Cov takes, in the paper's wording. Its `kl_coef` is not the shared k3
/// penalty to a reference policy but β of its own |log-ratio| penalty, so it is KL-Cov's own
/// parameter; there is no clip (`clip_ratio` is not a key).
const PARAMS: PolicyLossParams = PolicyLossParams {
    keys: &[K::LossAggMode, K::LossScaleFactor, K::NormAdvByStd, K::EntCoef],
    defaults: PolicyLossDefaults::GRPO,
    docs: &[
        (
            K::LossAggMode,
            "Loss aggregation: token-mean (verl default and the paper's runs), seq-mean-token-mean, seq-mean-token-sum, or seq-mean-token-sum-norm (with loss_scale_factor).",
        ),
        (
            K::NormAdvByStd,
            "GRPO advantages divided by the group's unbiased std + 1e-6 (the paper's runs); false: r − mean (Dr. GRPO).",
        ),
        (K::EntCoef, "Entropy bonus coefficient (0 in the paper's runs)."),
    ],
};

/// `kl_cov_ratio` above this is refused as a likely percent (EM's `k_percent`).
const MAX_KL_COV_RATIO: f64 = 0.5;

/// The KL-Cov algorithm instance.
#[derive(Debug, Clone)]
pub struct KlCov {
    /// Divide group-centred scores by the group's std (GRPO).
    norm_adv_by_std: bool,
    config: KlCovConfig,
}

impl KlCov {
    /// An instance with GRPO advantages (`norm_adv_by_std`) and the loss `config`.
    pub fn with_config(norm_adv_by_std: bool, config: KlCovConfig) -> Self {
        Self {
            norm_adv_by_std,
            config,
        }
    }

    /// The loss settings.
    pub fn config(&self) -> &KlCovConfig {
        &self.config
    }

    fn from_params(p: &Params) -> Result<Self, PluginError> {
        let ratio = p.f64("kl_cov_ratio")?;
        if ratio <= 0.0 {
            return Err(PluginError::invalid_params(
                "kl_cov_ratio",
                format!("must be greater than 0 (verl asserts it), got {ratio}"),
            ));
        }
        if ratio > MAX_KL_COV_RATIO {
            return Err(PluginError::invalid_params(
                "kl_cov_ratio",
                format!(
                    "{ratio} would penalize more than half of the tokens: it is a fraction, did \
                     you mean a percent? (the paper's k_percent 0.2 is kl_cov_ratio = 0.002)"
                ),
            ));
        }
        let shared = PARAMS.read(p)?;
        Ok(Self::with_config(
            shared.norm_adv_by_std,
            KlCovConfig {
                kl_cov_ratio: ratio,
                kl_coef: p.f64("kl_coef")?,
                agg: shared.loss.agg,
                loss_scale_factor: shared.loss.loss_scale_factor,
                ent_coef: shared.loss.ent_coef,
            },
        ))
    }
}

impl AlgorithmImpl for KlCov {
    fn info() -> PluginInfo {
        PARAMS.declare(
            PluginInfo::new(
                NAME,
                env!("CARGO_PKG_VERSION"),
                "KL-Cov (Cui et al. 2025, arXiv 2505.22617): GRPO advantages, unclipped policy gradient, |log-ratio| penalty on the top-covariance tokens (verl)",
            )
            .param(
                ParamSpec::float(
                    "kl_cov_ratio",
                    0.002,
                    "Fraction (not percent) k of the minibatch's valid tokens penalized, top max(1, ⌊N·k⌋) by covariance; the paper's 7B runs: 0.002 (k_percent 0.2), 32B: 2e-4, verl's default 2e-4; at most 0.5.",
                )
                .min(0.0),
            )
            .param(
                ParamSpec::float(
                    "kl_coef",
                    1.0,
                    "β of the β·|logp − logp_old| penalty on the selected tokens (the paper's runs, ppo_kl_coef 1; verl's config default 0.1).",
                )
                .min(0.0),
            ),
        )
    }

    fn new(params: &Params, _seed: u64) -> Result<Self, PluginError> {
        // The top-k selection is deterministic (ties to the lower index): no randomness.
        Self::from_params(params)
    }

    fn compute_advantages(
        &mut self,
        batch: &Rollout<'_>,
        advantages: &mut [f32],
        returns: &mut [f32],
    ) -> Result<Vec<Metric>, PluginError> {
        let baseline = Baseline::GroupNormalized {
            norm_by_std: self.norm_adv_by_std,
        };
        outcome_advantages(NAME, batch, baseline, advantages, returns)
    }

    fn loss(
        &mut self,
        mb: &Minibatch<'_>,
        out: &mut LossOutputs<'_>,
    ) -> Result<Vec<Metric>, PluginError> {
        let stats = kl_cov_loss(&self.config, mb, out)?;
        Ok(stats.map(|s| s.metrics()).unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use drover_plugin_api::{llm::LossAggMode, testing};

    use super::*;

    fn make(json: &str) -> Result<KlCov, PluginError> {
        testing::instance(json)
    }

    #[test]
    fn defaults_are_the_papers_7b_setting() {
        let k = make("{}").expect("defaults");
        assert_eq!(
            *k.config(),
            KlCovConfig {
                kl_cov_ratio: 0.002,
                kl_coef: 1.0,
                agg: LossAggMode::TokenMean,
                loss_scale_factor: None,
                ent_coef: 0.0,
            }
        );
        assert!(k.norm_adv_by_std);
    }

    #[test]
    fn a_percent_is_refused_with_a_hint() {
        let e = make(r#"{"kl_cov_ratio": 2}"#).expect_err("a percent");
        assert_eq!(e.key(), Some("kl_cov_ratio"));
        assert!(e.message().contains("did you mean a percent?"), "{e}");
        make(r#"{"kl_cov_ratio": 0.5}"#).expect("half is the largest accepted");
        let e = make(r#"{"kl_cov_ratio": 0}"#).expect_err("zero");
        assert_eq!(e.key(), Some("kl_cov_ratio"));
    }

    #[test]
    fn passes_drovers_plugin_harness() {
        testing::check_algorithm::<KlCov>("{}").assert_passed();
        testing::check_algorithm::<KlCov>(
            r#"{"kl_cov_ratio": 0.3, "ent_coef": 0.01, "loss_agg_mode": "seq-mean-token-mean"}"#,
        )
        .assert_passed();
    }

    /// Finite differences with many penalized tokens (none on-policy, so |δ| has no kink there).
    #[test]
    fn derivatives_match_finite_differences() {
        let data = testing::RandomMinibatch::new(8, 6, 8, 1)
            .logp_with(|d| d.draw(0.05, 0.5) * if d.draw(0.0, 1.0) < 0.5 { -1.0 } else { 1.0 })
            .advantages_per_sequence(&[1.2, -0.8, 0.4, -1.5, 0.9, -0.2])
            .entropy();
        let (m, mb) = (data.len(), data.view());
        let mut k = make(r#"{"kl_cov_ratio": 0.3, "ent_coef": 0.02}"#).expect("valid");
        let r = testing::check_loss_derivatives(&mut k, &mb, 1e-3, 1e-5, 1e-2).expect("runs");
        assert!(r.mismatches.is_empty(), "{:#?}", r.mismatches);
        assert!(r.checked >= 2 * m - 8, "{r:?}");
    }
}
