//! RLOO's parameters and its `AlgorithmImpl`: leave-one-out outcome advantages, then verl's
//! clipped policy loss (no KL term, no critic).

use drover_plugin_api::{
    llm::{
        clipped_policy_loss, outcome_advantages, Baseline, PolicyLossConfig, PolicyLossDefaults,
        PolicyLossKey as K, PolicyLossParams,
    },
    AlgorithmImpl, LossOutputs, Metric, Minibatch, Params, PluginError, PluginInfo, Rollout,
};

const NAME: &str = "rloo";

/// GRPO's token-loss keys without `kl_coef` (always 0) and `norm_adv_by_std` (no group std).
const PARAMS: PolicyLossParams = PolicyLossParams {
    keys: &[
        K::ClipRatio,
        K::ClipRatioHigh,
        K::ClipRatioC,
        K::LossAggMode,
        K::LossScaleFactor,
        K::EntCoef,
    ],
    defaults: PolicyLossDefaults::GRPO,
    docs: &[
        (
            K::ClipRatio,
            "Clip range ε of the probability ratio (ε_low, and ε_high unless clip_ratio_high is set); verl's 0.2 (the RLOO paper itself uses no ratio: one update per batch makes ρ = 1).",
        ),
        (
            K::ClipRatioC,
            "Dual-clip constant c > 1 capping negative-advantage token losses at −A·c (verl clip_ratio_c); null: no dual clip.",
        ),
        (
            K::EntCoef,
            "Entropy bonus coefficient (verl entropy_coeff; LOOP uses none).",
        ),
    ],
};

/// RLOO's hyper-parameters (verl defaults for the token loss).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RlooConfig {
    /// The token loss: clip range, aggregation, entropy bonus (its `kl_coef` is always 0).
    pub loss: PolicyLossConfig,
}

impl RlooConfig {
    fn from_params(p: &Params) -> Result<Self, PluginError> {
        Ok(Self {
            loss: PARAMS.read(p)?.loss,
        })
    }
}

/// The RLOO algorithm instance.
#[derive(Debug, Clone)]
pub struct Rloo {
    config: RlooConfig,
}

impl Rloo {
    /// An instance with `config`.
    pub fn with_config(config: RlooConfig) -> Self {
        Self { config }
    }
}

impl AlgorithmImpl for Rloo {
    fn info() -> PluginInfo {
        PARAMS.declare(PluginInfo::new(
                NAME,
                env!("CARGO_PKG_VERSION"),
                "RLOO: leave-one-out outcome baseline k/(k−1)(r − mean), PPO clipped token loss (verl, LOOP)",
        ))
    }

    fn new(params: &Params, _seed: u64) -> Result<Self, PluginError> {
        Ok(Self::with_config(RlooConfig::from_params(params)?))
    }

    fn compute_advantages(
        &mut self,
        batch: &Rollout<'_>,
        advantages: &mut [f32],
        returns: &mut [f32],
    ) -> Result<Vec<Metric>, PluginError> {
        outcome_advantages(NAME, batch, Baseline::LeaveOneOut, advantages, returns)
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
    use drover_plugin_api::testing::{self, outcome_rollout, run_advantages};

    use super::*;

    fn make(json: &str) -> Result<Rloo, PluginError> {
        testing::instance(json)
    }

    #[test]
    fn defaults_and_bad_params() {
        assert_eq!(make("{}").expect("valid").config, RlooConfig::default());
        let e = make(r#"{"kl_coef": 0.1}"#).expect_err("rloo has no KL term");
        assert_eq!(e.key(), Some("kl_coef"));
        let e = make(r#"{"loss_agg_mode": "sum"}"#).expect_err("unknown mode");
        assert_eq!(e.key(), Some("loss_agg_mode"));
    }

    /// Prompt 0 has 4 responses scoring [1, 0, 0, 0] → A = 4/3·(s − ¼) = [1, −⅓, −⅓, −⅓]
    /// (= s_i − mean of the other three); prompt 1 has one response scoring 1 → A = 1.
    /// Response 2 is 1 step long, its padding holds garbage.
    #[test]
    fn leave_one_out_advantages_by_hand() {
        let mut r = make("{}").expect("defaults");
        let mask = [1., 1., 1., 1., 1., 0., 1., 1., 1., 1.];
        let rewards = [0., 1., 0., 0., 0., 9., 0., 0., 0., 1.];
        let ids = [0u32, 0, 0, 0, 1];
        let batch = outcome_rollout(2, &mask, &rewards, &ids);
        let (adv, ret, _) = run_advantages(&mut r, &batch).expect("runs");
        let t = -1.0 / 3.0;
        let expect = [1.0, 1.0, t, t, t, 0.0, t, t, 1.0, 1.0];
        for (a, e) in adv.iter().zip(expect) {
            assert!((f64::from(*a) - e).abs() < 1e-6, "{adv:?}");
        }
        assert_eq!(ret, adv);
    }

    #[test]
    fn passes_drovers_plugin_harness() {
        testing::check_algorithm::<Rloo>("{}").assert_passed();
        testing::check_algorithm::<Rloo>(
            r#"{"loss_agg_mode": "seq-mean-token-sum", "ent_coef": 0.01, "clip_ratio_c": 3.0}"#,
        )
        .assert_passed();
    }

    #[test]
    fn derivatives_match_finite_differences() {
        let data = testing::RandomMinibatch::new(5, 4, 8, 2)
            .logp(0.5)
            .advantages_per_sequence(&[1.0, -1.0 / 3.0, 0.5, -0.5])
            .entropy();
        let (m, mb) = (data.len(), data.view());
        let mut r =
            make(r#"{"ent_coef": 0.05, "loss_agg_mode": "seq-mean-token-mean"}"#).expect("valid");
        let rep = testing::check_loss_derivatives(&mut r, &mb, 1e-3, 1e-5, 1e-2).expect("runs");
        assert!(rep.mismatches.is_empty(), "{:#?}", rep.mismatches);
        assert!(rep.checked >= 2 * m - 4, "{rep:?}");
    }
}
