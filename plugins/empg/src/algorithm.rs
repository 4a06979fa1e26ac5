//! EMPG's parameters and its `AlgorithmImpl`: GRPO group advantages modulated by step entropy
//! (`empg.rs`), then verl's PPO clipped token loss.

use drover_plugin_api::{
    llm::{
        broadcast_to_tokens, clipped_policy_loss, group_ids, group_normalized_advantages,
        sequence_scores, PolicyLossConfig, PolicyLossDefaults, PolicyLossKey as K,
        PolicyLossParams, GRPO_EPS,
    },
    AlgorithmImpl, LossOutputs, Metric, Minibatch, ParamSpec, Params, PluginError, PluginInfo,
    Rollout,
};

use crate::empg::modulate;

const NAME: &str = "empg";

/// GRPO's advantage switch and clip and aggregation keys (no KL, no entropy bonus, no `C`), listed after the modulation's.
const PARAMS: PolicyLossParams = PolicyLossParams {
    keys: &[K::NormAdvByStd, K::ClipRatio, K::ClipRatioHigh, K::LossAggMode],
    defaults: PolicyLossDefaults::GRPO,
    docs: &[
        (K::NormAdvByStd, "Divide group-centred scores by the group's std + 1e-6 before modulating (GRPO, EMPG's base); false: Dr. GRPO's r − mean."),
    ],
};

/// EMPG's hyper-parameters (project-page defaults; the loss as GRPO's in verl).
#[derive(Debug, Clone, PartialEq)]
pub struct EmpgConfig {
    /// k in the self-calibrating scale g = e^{−kĤ}/mean.
    pub k: f64,
    /// k_f in the future-clarity bonus f = e^{−k_f·Ĥ_next}.
    pub k_f: f64,
    /// ζ, the weight of f.
    pub zeta: f64,
    /// Divide group-centred scores by the group's std (GRPO) before modulating.
    pub norm_adv_by_std: bool,
    /// The token loss.
    pub loss: PolicyLossConfig,
}

impl Default for EmpgConfig {
    fn default() -> Self {
        Self {
            k: 1.0,
            k_f: 1.0,
            zeta: 0.1,
            norm_adv_by_std: true,
            loss: PolicyLossConfig::default(),
        }
    }
}

impl EmpgConfig {
    fn from_params(p: &Params) -> Result<Self, PluginError> {
        let (k, k_f, zeta) = (p.f64("k")?, p.f64("k_f")?, p.f64("zeta")?);
        let grpo = PARAMS.read(p)?;
        Ok(Self {
            k,
            k_f,
            zeta,
            norm_adv_by_std: grpo.norm_adv_by_std,
            loss: grpo.loss,
        })
    }
}

/// The EMPG algorithm instance.
#[derive(Debug, Clone)]
pub struct Empg {
    config: EmpgConfig,
}

impl Empg {
    /// An instance with `config`.
    pub fn with_config(config: EmpgConfig) -> Self {
        Self { config }
    }
}

impl AlgorithmImpl for Empg {
    fn info() -> PluginInfo {
        let info = PluginInfo::new(
            NAME,
            env!("CARGO_PKG_VERSION"),
            "EMPG: GRPO advantages scaled by step entropy plus a future-clarity bonus (arXiv 2509.09265; a step is one token here), PPO clipped token loss",
        )
        .param(
            ParamSpec::float(
                "k",
                1.0,
                "k of the self-calibrating scale g = e^{−k·Ĥ}/mean(e^{−k·Ĥ}) on batch min-max normalized entropy Ĥ (EMPG project page: 1).",
            )
            .range(0.0, 20.0),
        )
        .param(
            ParamSpec::float(
                "k_f",
                1.0,
                "k_f of the future-clarity bonus f = e^{−k_f·Ĥ_next} (EMPG project page: 1).",
            )
            .range(0.0, 20.0),
        )
        .param(
            ParamSpec::float(
                "zeta",
                0.1,
                "ζ, weight of the future-clarity bonus added to the scaled advantage (EMPG project page: 0.1); 0 keeps only the scaling.",
            )
            .range(0.0, 10.0),
        );
        PARAMS.declare(info)
    }

    fn new(params: &Params, _seed: u64) -> Result<Self, PluginError> {
        // EMPG draws no random numbers.
        Ok(Self::with_config(EmpgConfig::from_params(params)?))
    }

    fn compute_advantages(
        &mut self,
        batch: &Rollout<'_>,
        advantages: &mut [f32],
        returns: &mut [f32],
    ) -> Result<Vec<Metric>, PluginError> {
        let ids = group_ids(NAME, batch)?;
        let entropy = Rollout::require(NAME, "entropy_old", batch.entropy_old)?;
        let scores = sequence_scores(batch);
        let c = &self.config;
        let seq_adv = group_normalized_advantages(&scores, ids, c.norm_adv_by_std, GRPO_EPS);
        broadcast_to_tokens(&seq_adv, batch.mask, batch.seq_len, advantages);
        let stats = modulate(
            advantages,
            entropy,
            batch.mask,
            batch.seq_len,
            c.k,
            c.k_f,
            c.zeta,
        );
        returns.copy_from_slice(advantages);
        let mut metrics = Vec::new();
        if !scores.is_empty() {
            metrics.push(Metric::new(
                "score_mean",
                scores.iter().sum::<f64>() / scores.len() as f64,
            ));
        }
        if let Some(s) = stats {
            metrics.extend([
                Metric::new("empg_g_min", s.g_min),
                Metric::new("empg_g_max", s.g_max),
                Metric::new("empg_f_mean", s.f_mean),
            ]);
        }
        Ok(metrics)
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
        testing::{self, metric, outcome_rollout, run_advantages},
        CounterRng,
    };

    use drover_plugin_api::llm::LossAggMode;

    use super::*;

    fn make(json: &str) -> Result<Empg, PluginError> {
        testing::instance(json)
    }

    #[test]
    fn defaults_are_the_project_pages_and_bad_params_name_the_key() {
        let e = make("{}").expect("defaults are valid");
        assert_eq!(e.config, EmpgConfig::default());
        testing::assert_params_refused::<Empg>(&[
            (r#"{"k": -1}"#, "k"),
            (r#"{"zeta": -0.1}"#, "zeta"),
            (r#"{"loss_agg_mode": "mean"}"#, "loss_agg_mode"),
        ]);
    }

    /// Group [1, 0] without std normalization: A = ±½. T = 3; sequence 1 has 2 valid steps and
    /// garbage entropy (9) in its padding. Entropies [0.2, 1.0, 0.6 | 0.6, 0.2] → min 0.2, max 1.0
    /// → Ĥ = [0, 1, ½ | ½, 0]; e^{−Ĥ} = [1, e⁻¹, e^{−½} | e^{−½}, 1], mean 0.716188…;
    /// g = e^{−Ĥ}/mean = [1.396281, 0.513663, 0.846887 | 0.846887, 1.396281];
    /// f = e^{−Ĥ_next} = [e⁻¹, e^{−½}, 0 (last) | 1, 0 (last)].
    #[test]
    fn g_and_f_by_hand() {
        let mut e = make(r#"{"norm_adv_by_std": false}"#).expect("valid");
        let mask = [1., 1., 1., 1., 1., 0.];
        let rewards = [0., 0., 1., 0., 0., 0.];
        let entropy = [0.2f32, 1.0, 0.6, 0.6, 0.2, 9.0];
        let mut batch = outcome_rollout(3, &mask, &rewards, &[4, 4]);
        batch.entropy_old = &entropy;
        let (mut adv, mut ret, m) = run_advantages(&mut e, &batch).expect("runs");
        let mean = (2.0 + 1.0f64 / std::f64::consts::E + 2.0 * (-0.5f64).exp()) / 5.0;
        assert!((mean - 0.716_188_2).abs() < 1e-6, "{mean}");
        let g = [
            1.396_281_1,
            0.513_663_1,
            0.846_887_3,
            0.846_887_3,
            1.396_281_1,
        ];
        for (i, gi) in g.iter().enumerate() {
            let h_hat: f64 = [0.0, 1.0, 0.5, 0.5, 0.0][i];
            assert!(((-h_hat).exp() / mean - gi).abs() < 1e-6, "g[{i}]");
        }
        let f = [(-1.0f64).exp(), (-0.5f64).exp(), 0.0, 1.0, 0.0];
        let a = [0.5, 0.5, 0.5, -0.5, -0.5];
        let expect: Vec<f64> = (0..5).map(|i| g[i] * a[i] + 0.1 * f[i]).collect();
        let got = [adv[0], adv[1], adv[2], adv[3], adv[4]];
        for i in 0..5 {
            assert!(
                (f64::from(got[i]) - expect[i]).abs() < 1e-5,
                "{adv:?} vs {expect:?}"
            );
        }
        // Spot value: 0.5·1.396281 + 0.1·0.367879 = 0.734929.
        assert!((f64::from(adv[0]) - 0.734_929).abs() < 1e-5, "{}", adv[0]);
        assert_eq!(adv[5], 0.0);
        assert_eq!(ret, adv);
        assert!((metric(&m, "empg_g_max").expect("reported") - 1.396_281_1).abs() < 1e-6);
        assert!(
            (metric(&m, "empg_f_mean").expect("reported") - (f.iter().sum::<f64>() / 5.0)).abs()
                < 1e-6
        );

        // k = 0 and ζ = 0: exactly GRPO's advantages.
        let mut plain = make(r#"{"norm_adv_by_std": false, "k": 0, "zeta": 0}"#).expect("valid");
        AlgorithmImpl::compute_advantages(&mut plain, &batch, &mut adv, &mut ret).expect("runs");
        assert_eq!(adv, [0.5, 0.5, 0.5, -0.5, -0.5, 0.0]);

        // No entropies: a clear error naming the buffer.
        batch.entropy_old = &[];
        let err = AlgorithmImpl::compute_advantages(&mut e, &batch, &mut adv, &mut ret)
            .expect_err("no entropy_old");
        assert!(err.to_string().contains("entropy_old"), "{err}");
    }

    #[test]
    fn g_averages_one_over_valid_steps() {
        let mut rng = CounterRng::new(9);
        let (b, t) = (6, 7);
        let mask: Vec<f32> = (0..b * t)
            .map(|i| if i % t < t - i / t % 3 { 1.0 } else { 0.0 })
            .collect();
        let entropy: Vec<f32> = (0..b * t).map(|_| rng.next_f64() as f32 * 2.0).collect();
        // Advantage 1 everywhere and ζ = 0: the modulated advantage is g itself.
        let mut adv: Vec<f32> = mask.clone();
        let s = crate::empg::modulate(&mut adv, &entropy, &mask, t, 1.0, 1.0, 0.0).expect("valid");
        let valid: Vec<f32> = adv
            .iter()
            .zip(&mask)
            .filter(|(_, &m)| m > 0.0)
            .map(|(&a, _)| a)
            .collect();
        let mean = valid.iter().map(|&x| f64::from(x)).sum::<f64>() / valid.len() as f64;
        assert!((mean - 1.0).abs() < 1e-6, "{mean}");
        assert!(s.g_min < 1.0 && s.g_max > 1.0, "{s:?}");
        // The lowest-entropy valid step gets the largest scale e^0/mean.
        let (imin, _) = (0..b * t)
            .filter(|&i| mask[i] > 0.0)
            .map(|i| (i, entropy[i]))
            .min_by(|x, y| x.1.total_cmp(&y.1))
            .expect("valid steps");
        assert!((f64::from(adv[imin]) - s.g_max).abs() < 1e-6);
    }

    #[test]
    fn passes_drovers_plugin_harness() {
        testing::check_algorithm::<Empg>("{}").assert_passed();
        testing::check_algorithm::<Empg>(
            r#"{"k": 2.0, "k_f": 0.5, "zeta": 0.3, "norm_adv_by_std": false, "loss_agg_mode": "seq-mean-token-mean", "clip_ratio_high": 0.28}"#,
        )
        .assert_passed();
    }

    #[test]
    fn derivatives_match_finite_differences() {
        let data = testing::RandomMinibatch::new(13, 5, 8, 1)
            .logp(0.5)
            .random_advantages(-1.5, 1.5);
        let (m, mb) = (data.len(), data.view());
        for mode in LossAggMode::NAMES {
            let mut e = make(&format!(r#"{{"loss_agg_mode": "{mode}"}}"#)).expect("valid");
            let r = testing::check_loss_derivatives(&mut e, &mb, 1e-3, 1e-5, 1e-2).expect("runs");
            assert!(r.mismatches.is_empty(), "{mode}: {:#?}", r.mismatches);
            assert!(r.checked >= m - 10, "{mode}: {r:?}");
        }
    }
}
