//! Dr. GRPO's parameters and its `AlgorithmImpl`: group-centred outcome advantages without the
//! std division, then the clipped token loss summed and divided by a constant.

use drover_plugin_api::{
    llm::{
        clipped_policy_loss, outcome_advantages, Baseline, LossAggMode, PolicyLossConfig,
        PolicyLossDefaults, PolicyLossKey as K, PolicyLossParams,
    },
    AlgorithmImpl, LossOutputs, Metric, Minibatch, Params, PluginError, PluginInfo, Rollout,
};

const NAME: &str = "dr_grpo";

/// The clip range, `C` and the entropy bonus; the aggregation is fixed at
/// `seq-mean-token-sum-norm` and the KL at 0.
const PARAMS: PolicyLossParams = PolicyLossParams {
    keys: &[
        K::ClipRatio,
        K::ClipRatioHigh,
        K::LossScaleFactor,
        K::EntCoef,
    ],
    defaults: PolicyLossDefaults::DR_GRPO,
    docs: &[
        (
            K::ClipRatio,
            "Clip range ε of the probability ratio (ε_low, and ε_high unless clip_ratio_high is set); 0.2 as GRPO (Dr. GRPO, arXiv 2503.20783, changes only the advantage and the normalization).",
        ),
        (
            K::LossScaleFactor,
            "The constant C the token sum is divided by (Dr. GRPO: the generation budget; verl loss_scale_factor); null: the padded length T of the minibatch's rows.",
        ),
        (
            K::EntCoef,
            "Entropy bonus coefficient (verl entropy_coeff; 0 in Dr. GRPO's runs).",
        ),
    ],
};

/// Dr. GRPO's hyper-parameters (verl's Dr. GRPO setting, docs/algo/grpo.md). Learning rate,
/// epochs, minibatches and the group size are the host's.
///
/// The loss is `Σ_tokens l_t / C` (`seq-mean-token-sum-norm`), with no `1/|o_i|` (the length
/// bias) and no division by the number of sequences (as verl). `C` = `loss_scale_factor`; when
/// unset it is the padded length `T` of the minibatch's rows: the most tokens, valid or
/// padding, that one sequence has in the minibatch, which is `T` when the host sends whole
/// padded rows (drover's host does). Set it to the generation budget to be independent of the
/// host.
#[derive(Debug, Clone, PartialEq)]
pub struct DrGrpoConfig {
    /// The token loss: symmetric clip, `seq-mean-token-sum-norm`, no KL.
    pub loss: PolicyLossConfig,
}

impl Default for DrGrpoConfig {
    fn default() -> Self {
        Self {
            loss: PolicyLossConfig {
                agg: LossAggMode::SeqMeanTokenSumNorm,
                ..PolicyLossConfig::default()
            },
        }
    }
}

impl DrGrpoConfig {
    fn from_params(p: &Params) -> Result<Self, PluginError> {
        let loss_scale_factor = p.opt_f64("loss_scale_factor")?;
        if let Some(c) = loss_scale_factor {
            if !(c > 0.0 && c.is_finite()) {
                return Err(PluginError::invalid_params(
                    "loss_scale_factor",
                    format!("must be a positive number of tokens, got {c}"),
                ));
            }
        }
        // Checked here first for its own message (C is a number of tokens); the shared reader's
        // positivity check then never fires.
        Ok(Self {
            loss: PARAMS.read(p)?.loss,
        })
    }
}

/// The Dr. GRPO algorithm instance.
#[derive(Debug, Clone)]
pub struct DrGrpo {
    config: DrGrpoConfig,
}

impl DrGrpo {
    /// An instance with `config`.
    pub fn with_config(config: DrGrpoConfig) -> Self {
        Self { config }
    }
}

impl AlgorithmImpl for DrGrpo {
    fn info() -> PluginInfo {
        PARAMS.declare(PluginInfo::new(
            NAME,
            env!("CARGO_PKG_VERSION"),
            "Dr. GRPO: group-centred outcome advantage r − mean (no std), clipped token loss summed over tokens and divided by a constant, no KL (verl norm_adv_by_std_in_grpo=False, seq-mean-token-sum-norm)",
        ))
    }

    fn new(params: &Params, _seed: u64) -> Result<Self, PluginError> {
        // Dr. GRPO draws no random numbers: sampling and minibatch shuffling are the host's.
        Ok(Self::with_config(DrGrpoConfig::from_params(params)?))
    }

    fn compute_advantages(
        &mut self,
        batch: &Rollout<'_>,
        advantages: &mut [f32],
        returns: &mut [f32],
    ) -> Result<Vec<Metric>, PluginError> {
        let baseline = Baseline::GroupNormalized { norm_by_std: false };
        outcome_advantages(NAME, batch, baseline, advantages, returns)
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
    use drover_plugin_api::testing::{self, metric, outcome_rollout, run_advantages, run_loss};

    use super::*;

    fn make(json: &str) -> Result<DrGrpo, PluginError> {
        testing::instance(json)
    }

    #[test]
    fn defaults_are_verls_dr_grpo_and_bad_params_name_the_key() {
        let g = make("{}").expect("defaults are valid");
        assert_eq!(g.config, DrGrpoConfig::default());
        let g = make(r#"{"loss_scale_factor": 1024}"#).expect("valid");
        assert_eq!(g.config.loss.loss_scale_factor, Some(1024.0));
        testing::assert_params_refused::<DrGrpo>(&[
            (r#"{"loss_scale_factor": 0}"#, "loss_scale_factor"),
            (r#"{"clip_ratio": 1.5}"#, "clip_ratio"),
            (r#"{"ent_coef": -1}"#, "ent_coef"),
        ]);
    }

    /// Group 0: [1, 0, 0] → A = s − ⅓ = [⅔, −⅓, −⅓] (no std); group 1: [1, 1] → 0;
    /// sequence 2 is 1 step long (its padding stays 0).
    #[test]
    fn advantages_by_hand_without_std() {
        let mut g = make("{}").expect("defaults");
        let mask = [1., 1., 1., 1., 1., 0., 1., 1., 1., 1.];
        let rewards = [0., 1., 0., 0., 0., 4., 0., 1., 0., 1.];
        let ids = [0u32, 0, 0, 1, 1];
        let batch = outcome_rollout(2, &mask, &rewards, &ids);
        let (adv, ret, m) = run_advantages(&mut g, &batch).expect("runs");
        let (hi, lo) = (2.0 / 3.0, -1.0 / 3.0);
        let expect = [hi, hi, lo, lo, lo, 0.0, 0., 0., 0., 0.];
        for (a, e) in adv.iter().zip(expect) {
            assert!((f64::from(*a) - e).abs() < 1e-6, "{adv:?}");
        }
        assert_eq!(ret, adv);
        assert_eq!(metric(&m, "uniform_group_frac"), Some(0.5));
    }

    /// Two rows of T = 4 (the second has 2 padding tokens), default C = T = 4:
    /// (ρ, A) = (1.1, 1): −1.1, ∂ −1.1; (1.5, 1): clipped → −1.2, ∂ 0; (0.9, −0.5): 0.45,
    /// ∂ 0.45; (0.5, −0.5): clipped → 0.4, ∂ 0; (1, 1): −1, ∂ −1; each / 4, not / (B·|o|).
    #[test]
    fn loss_by_hand_token_sum_over_the_padded_length() {
        let ratios = [1.1f32, 1.5, 0.9, 0.5, 1.0, 1.0, 1.0, 1.0];
        let logp_old = [-0.5f32; 8];
        let logp_new: Vec<f32> = ratios.iter().map(|r| r.ln() - 0.5).collect();
        let adv = [1.0f32, 1.0, -0.5, -0.5, 1.0, 1.0, 9.0, 9.0];
        let tw = [1.0f32, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0];
        let mut mb = Minibatch::new();
        mb.logp_new = &logp_new;
        mb.logp_old = &logp_old;
        mb.advantages = &adv;
        mb.token_weights = &tw;
        mb.seq_index = &[0, 0, 0, 0, 1, 1, 1, 1];
        mb.num_sequences = 2;
        let raw_loss = [-1.1, -1.2, 0.45, 0.4, -1.0, -1.0, 0.0, 0.0];
        let raw_d = [-1.1, 0.0, 0.45, 0.0, -1.0, -1.0, 0.0, 0.0];
        for (json, c) in [("{}", 4.0), (r#"{"loss_scale_factor": 16}"#, 16.0)] {
            let mut g = make(json).expect("valid");
            let (o, m) = run_loss(&mut g, &mb).expect("runs");
            assert_eq!(o.d_value, vec![0.0; 8], "no critic");
            for i in 0..8 {
                assert!(
                    (f64::from(o.loss[i]) - raw_loss[i] / c).abs() < 1e-6,
                    "{json}: {:?}",
                    o.loss
                );
                assert!(
                    (f64::from(o.d_logp[i]) - raw_d[i] / c).abs() < 1e-6,
                    "{json}: {:?}",
                    o.d_logp
                );
            }
            let pl: f64 = raw_loss.iter().sum::<f64>() / c;
            assert!((metric(&m, "policy_loss").expect("reported") - pl).abs() < 1e-6);
            assert!((metric(&m, "clip_frac").expect("reported") - 2.0 / 6.0).abs() < 1e-9);
            assert!(metric(&m, "approx_kl").is_some());
        }
    }

    #[test]
    fn passes_drovers_plugin_harness() {
        testing::check_algorithm::<DrGrpo>("{}").assert_passed();
        testing::check_algorithm::<DrGrpo>(
            r#"{"loss_scale_factor": 64, "ent_coef": 0.01, "clip_ratio_high": 0.28}"#,
        )
        .assert_passed();
    }

    #[test]
    fn derivatives_match_finite_differences() {
        let data = testing::RandomMinibatch::new(17, 5, 8, 2)
            .logp(0.6)
            .advantages_per_sequence(&[0.7, -0.3, 0.4, -0.6, 0.2])
            .entropy();
        let (m, mb) = (data.len(), data.view());
        for json in ["{}", r#"{"ent_coef": 0.1, "loss_scale_factor": 3}"#] {
            let mut g = make(json).expect("valid");
            let r = testing::check_loss_derivatives(&mut g, &mb, 1e-3, 1e-5, 1e-2).expect("runs");
            assert!(r.mismatches.is_empty(), "{json}: {:#?}", r.mismatches);
            assert!(r.checked >= m, "{json}: {r:?}");
        }
    }
}
