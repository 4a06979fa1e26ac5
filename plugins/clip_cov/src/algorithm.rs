//! Clip-Cov's parameters and its `AlgorithmImpl`: GRPO advantages, then [`clip_cov_loss`].

use drover_plugin_api::{
    llm::{outcome_advantages, Baseline, PolicyLossDefaults, PolicyLossKey as K, PolicyLossParams},
    AlgorithmImpl, LossOutputs, Metric, Minibatch, ParamSpec, Params, PluginError, PluginInfo,
    Rollout,
};

use crate::loss::{clip_cov_loss, ClipCovConfig, CovBand};

const NAME: &str = "clip_cov";

/// The shared keys Clip-Cov takes, in the paper's wording; it has no dual clip and no KL
/// penalty (verl's Clip-Cov has neither), so `clip_ratio_c` and `kl_coef` are not keys.
const PARAMS: PolicyLossParams = PolicyLossParams {
    keys: &[
        K::ClipRatio,
        K::ClipRatioHigh,
        K::LossAggMode,
        K::LossScaleFactor,
        K::NormAdvByStd,
        K::EntCoef,
    ],
    defaults: PolicyLossDefaults::GRPO,
    docs: &[
        (
            K::ClipRatio,
            "PPO clip range ε (ε_low, and ε_high unless clip_ratio_high is set); verl's 0.2. The paper's runs used 1.0 for both (ρ clamped to [0, 2], PPO clipping essentially off).",
        ),
        (
            K::ClipRatioHigh,
            "Upper clip range ε_high; null: equal to clip_ratio (verl; the paper's runs: 1.0).",
        ),
        (
            K::LossAggMode,
            "Loss aggregation: token-mean (verl default and the paper's runs), seq-mean-token-mean, seq-mean-token-sum, or seq-mean-token-sum-norm (with loss_scale_factor).",
        ),
        (
            K::NormAdvByStd,
            "GRPO advantages divided by the group's unbiased std + 1e-6 (the paper's runs); false: r − mean (Dr. GRPO).",
        ),
        (
            K::EntCoef,
            "Entropy bonus coefficient (0 in the paper's runs; the entropy is never cut).",
        ),
    ],
};

/// The Clip-Cov algorithm instance.
#[derive(Debug, Clone)]
pub struct ClipCov {
    /// Divide group-centred scores by the group's std (GRPO).
    norm_adv_by_std: bool,
    config: ClipCovConfig,
}

impl ClipCov {
    /// An instance with GRPO advantages (`norm_adv_by_std`) and the loss `config`.
    pub fn with_config(norm_adv_by_std: bool, config: ClipCovConfig) -> Self {
        Self {
            norm_adv_by_std,
            config,
        }
    }

    /// The loss settings.
    pub fn config(&self) -> &ClipCovConfig {
        &self.config
    }

    fn from_params(p: &Params) -> Result<Self, PluginError> {
        let ratio = p.f64("clip_cov_ratio")?;
        if ratio <= 0.0 {
            return Err(PluginError::invalid_params(
                "clip_cov_ratio",
                format!("must be greater than 0 (verl asserts it), got {ratio}"),
            ));
        }
        let (lb, ub) = (p.f64("clip_cov_lb")?, p.f64("clip_cov_ub")?);
        if lb >= ub {
            return Err(PluginError::invalid_params(
                "clip_cov_ub",
                format!("must be greater than clip_cov_lb ({lb}), got {ub}"),
            ));
        }
        let shared = PARAMS.read(p)?;
        Ok(Self::with_config(
            shared.norm_adv_by_std,
            ClipCovConfig {
                clip: shared.loss.clip,
                band: CovBand {
                    ratio,
                    lb,
                    ub,
                    deterministic: p.bool("deterministic")?,
                },
                agg: shared.loss.agg,
                loss_scale_factor: shared.loss.loss_scale_factor,
                ent_coef: shared.loss.ent_coef,
            },
        ))
    }
}

impl AlgorithmImpl for ClipCov {
    fn info() -> PluginInfo {
        PARAMS.declare(
            PluginInfo::new(
                NAME,
                env!("CARGO_PKG_VERSION"),
                "Clip-Cov (Cui et al. 2025, arXiv 2505.22617): GRPO advantages, PPO loss with the gradient of a random few high-covariance tokens cut (verl)",
            )
            .param(
                ParamSpec::float(
                    "clip_cov_ratio",
                    2e-4,
                    "Fraction r of the minibatch's valid tokens whose gradient is cut, n = max(⌊r·N⌋, 1) (paper and verl clip_cov_ratio: 2e-4).",
                )
                .range(0.0, 1.0),
            )
            .param(ParamSpec::float(
                "clip_cov_lb",
                1.0,
                "Exclusive lower bound of the token covariance band (paper and verl clip_cov_lb: 1.0); absolute, so small vocabularies may leave no candidate (see the cov_candidates metric).",
            ))
            .param(ParamSpec::float(
                "clip_cov_ub",
                5.0,
                "Exclusive upper bound of the token covariance band (paper and verl clip_cov_ub: 5.0).",
            ))
            .param(ParamSpec::bool(
                "deterministic",
                false,
                "Cut the n candidates of largest covariance instead of n uniformly random ones (verl: random); a drover deviation for reproducibility studies.",
            )),
        )
    }

    fn new(params: &Params, _seed: u64) -> Result<Self, PluginError> {
        // The token selection draws from each minibatch's own seed, not from the instance's.
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
        let stats = clip_cov_loss(&self.config, mb, out)?;
        Ok(stats.map(|s| s.metrics()).unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use drover_plugin_api::{
        llm::{ClipRange, LossAggMode},
        testing::{self, metric, run_loss},
    };

    use super::*;

    fn make(json: &str) -> Result<ClipCov, PluginError> {
        testing::instance(json)
    }

    #[test]
    fn defaults_are_the_papers_band_and_bad_params_name_the_key() {
        let c = make("{}").expect("defaults");
        assert_eq!(
            c.config().band,
            CovBand {
                ratio: 2e-4,
                lb: 1.0,
                ub: 5.0,
                deterministic: false
            }
        );
        assert_eq!(c.config().clip, ClipRange::symmetric(0.2));
        assert_eq!(c.config().agg, LossAggMode::TokenMean);
        assert!(c.norm_adv_by_std);
        testing::assert_params_refused::<ClipCov>(&[
            (r#"{"clip_cov_ratio": 0}"#, "clip_cov_ratio"),
            (r#"{"clip_cov_lb": 5, "clip_cov_ub": 1}"#, "clip_cov_ub"),
            (r#"{"loss_agg_mode": "x"}"#, "loss_agg_mode"),
            (r#"{"clip_ratio_c": 3}"#, "clip_ratio_c"),
        ]);
    }

    #[test]
    fn passes_drovers_plugin_harness() {
        testing::check_algorithm::<ClipCov>("{}").assert_passed();
        // Many tokens cut, random and deterministic, with the entropy bonus.
        testing::check_algorithm::<ClipCov>(
            r#"{"clip_cov_ratio": 0.2, "clip_cov_lb": 0.0, "ent_coef": 0.01}"#,
        )
        .assert_passed();
        testing::check_algorithm::<ClipCov>(
            r#"{"clip_cov_ratio": 0.2, "clip_cov_lb": 0.0, "deterministic": true, "loss_agg_mode": "seq-mean-token-mean"}"#,
        )
        .assert_passed();
    }

    /// Finite differences with a wide band, so that many tokens are cut: cut tokens must report
    /// derivative 0 and the others −Aρ·w. Selection flips inside the step are discontinuities,
    /// which the check skips as kinks.
    #[test]
    fn derivatives_match_finite_differences() {
        let data = testing::RandomMinibatch::new(21, 6, 8, 1)
            .logp(0.5)
            .advantages_per_sequence(&[1.2, -0.8, 0.4, -1.5, 0.9, -0.2])
            .entropy();
        let (m, mut mb) = (data.len(), data.view());
        mb.seed = 3;
        let mut c = make(
            r#"{"clip_cov_ratio": 0.3, "clip_cov_lb": 0.0, "clip_cov_ub": 10.0, "ent_coef": 0.02}"#,
        )
        .expect("valid");
        let (_, m_out) = run_loss(&mut c, &mb).expect("runs");
        let selected = metric(&m_out, "cov_selected").expect("reported");
        assert!(selected >= 5.0, "{selected}");
        let r = testing::check_loss_derivatives(&mut c, &mb, 1e-3, 1e-5, 1e-2).expect("runs");
        assert!(r.mismatches.is_empty(), "{:#?}", r.mismatches);
        assert!(r.checked >= 2 * m - 8, "{r:?}");
    }
}
