//! LOOP's parameters and its `AlgorithmImpl`: leave-one-out outcome advantages (no std
//! normalization), then the PPO clipped token loss with token-mean aggregation, no KL.

use drover_plugin_api::{
    llm::{
        clipped_policy_loss, outcome_advantages, Baseline, PolicyLossConfig, PolicyLossDefaults,
        PolicyLossKey as K, PolicyLossParams,
    },
    AlgorithmImpl, LossOutputs, Metric, Minibatch, Params, PluginError, PluginInfo, Rollout,
};

const NAME: &str = "loop";

/// Only the clip range and the entropy bonus are LOOP's to set; the rest is fixed at GRPO's
/// defaults (symmetric clip, token-mean, no KL).
const PARAMS: PolicyLossParams = PolicyLossParams {
    keys: &[K::ClipRatio, K::EntCoef],
    defaults: PolicyLossDefaults::GRPO,
    docs: &[
        (
            K::ClipRatio,
            "Clip range ε of the probability ratio, both sides; PPO's 0.2 (LOOP, arXiv 2502.01600, uses PPO's per-token clipped objective).",
        ),
        (K::EntCoef, "Entropy bonus coefficient; LOOP uses none (0)."),
    ],
};

/// LOOP's hyper-parameters. Its identity is fixed: RLOO advantages without std normalization
/// (the paper's ablation: normalizing costs about 9 points), PPO's per-token clip,
/// token-mean, no critic, no KL. Learning rate, epochs and the group size (the paper: K = 6
/// rollouts per task) are the host's.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LoopConfig {
    /// The token loss: symmetric clip, token-mean, no KL.
    pub loss: PolicyLossConfig,
}

impl LoopConfig {
    fn from_params(p: &Params) -> Result<Self, PluginError> {
        Ok(Self {
            loss: PARAMS.read(p)?.loss,
        })
    }
}

/// The LOOP algorithm instance.
#[derive(Debug, Clone)]
pub struct Loop {
    config: LoopConfig,
}

impl Loop {
    /// An instance with `config`.
    pub fn with_config(config: LoopConfig) -> Self {
        Self { config }
    }
}

impl AlgorithmImpl for Loop {
    fn info() -> PluginInfo {
        PARAMS.declare(PluginInfo::new(
            NAME,
            env!("CARGO_PKG_VERSION"),
            "LOOP: leave-one-out advantage r_i − mean of the others (no std normalization), PPO clipped token loss, token-mean, no critic, no KL",
        ))
    }

    fn new(params: &Params, _seed: u64) -> Result<Self, PluginError> {
        // LOOP draws no random numbers: sampling and minibatch shuffling are the host's.
        Ok(Self::with_config(LoopConfig::from_params(params)?))
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
    use drover_plugin_api::testing::{self, metric, outcome_rollout, run_advantages, run_loss};

    use super::*;

    fn make(json: &str) -> Result<Loop, PluginError> {
        testing::instance(json)
    }

    #[test]
    fn defaults_and_bad_params_name_the_key() {
        let l = make("{}").expect("defaults are valid");
        assert_eq!(l.config, LoopConfig::default());
        testing::assert_params_refused::<Loop>(&[
            (r#"{"clip_ratio": 1.5}"#, "clip_ratio"),
            (r#"{"ent_coef": -1}"#, "ent_coef"),
            (r#"{"clip_ratio": "big"}"#, "clip_ratio"),
        ]);
    }

    /// K = 4 rollouts of one task with scores [1, 0, 0, 0.5] (mean 0.375):
    /// A_i = s_i − mean of the other three = 4/3·(s_i − 0.375) = [⅚, −½, −½, ⅙], no std;
    /// a second task [1, 1] gives 0.
    #[test]
    fn advantages_by_hand_leave_one_out_without_std() {
        let mut l = make("{}").expect("defaults");
        let mask = [1., 1., 1., 1., 1., 1., 1., 0., 1., 1., 1., 1.];
        let rewards = [0., 1., 0., 0., 0., 0., 0.5, 3., 0., 1., 1., 0.];
        let ids = [5u32, 5, 5, 5, 2, 2];
        let batch = outcome_rollout(2, &mask, &rewards, &ids);
        let (adv, ret, m) = run_advantages(&mut l, &batch).expect("runs");
        let a = [5.0 / 6.0, -0.5, -0.5, 1.0 / 6.0];
        // Leave-one-out by its definition, not the k/(k−1) form.
        let s = [1.0, 0.0, 0.0, 0.5];
        for i in 0..4 {
            let others: f64 = (0..4).filter(|&j| j != i).map(|j| s[j]).sum::<f64>() / 3.0;
            assert!((a[i] - (s[i] - others)).abs() < 1e-12);
        }
        let expect = [
            a[0], a[0], a[1], a[1], a[2], a[2], a[3], 0.0, 0., 0., 0., 0.,
        ];
        for (x, e) in adv.iter().zip(expect) {
            assert!((f64::from(*x) - e).abs() < 1e-6, "{adv:?}");
        }
        assert_eq!(ret, adv);
        assert_eq!(metric(&m, "uniform_group_frac"), Some(0.5));
    }

    /// Token-mean over 4 valid tokens, symmetric ε 0.2: (ρ, A) = (1.1, 0.5): −0.55, ∂ −0.55;
    /// (1.3, 0.5): clipped → −0.6, ∂ 0; (0.7, −2): clipped → 1.6, ∂ 0 (no dual clip);
    /// (1.1, −2): 2.2, ∂ 2.2; each ¼.
    #[test]
    fn loss_by_hand_token_mean() {
        let mut l = make("{}").expect("defaults");
        let ratios = [1.1f32, 1.3, 0.7, 1.1, 1.0];
        let logp_old = [-2.0f32; 5];
        let logp_new: Vec<f32> = ratios.iter().map(|r| r.ln() - 2.0).collect();
        let adv = [0.5f32, 0.5, -2.0, -2.0, 7.0];
        let mut mb = Minibatch::new();
        mb.logp_new = &logp_new;
        mb.logp_old = &logp_old;
        mb.advantages = &adv;
        mb.token_weights = &[1.0, 1.0, 1.0, 1.0, 0.0];
        mb.seq_index = &[0, 0, 1, 1, 1];
        mb.num_sequences = 2;
        let (o, m) = run_loss(&mut l, &mb).expect("runs");
        assert_eq!(o.d_value, vec![0.0; 5], "no critic");
        let expect_loss = [-0.55, -0.6, 1.6, 2.2, 0.0].map(|x| x / 4.0);
        let expect_d = [-0.55, 0.0, 0.0, 2.2, 0.0].map(|x| x / 4.0);
        for i in 0..5 {
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
        let pl = (-0.55 - 0.6 + 1.6 + 2.2) / 4.0;
        assert!((metric(&m, "policy_loss").expect("reported") - pl).abs() < 1e-6);
        assert!((metric(&m, "clip_frac").expect("reported") - 0.5).abs() < 1e-9);
        assert_eq!(metric(&m, "clip_frac_lower"), Some(0.0));
        assert!(metric(&m, "approx_kl").expect("reported") > 0.0);
        assert_eq!(metric(&m, "entropy"), None, "no entropies sent");
    }

    #[test]
    fn passes_drovers_plugin_harness() {
        testing::check_algorithm::<Loop>("{}").assert_passed();
        testing::check_algorithm::<Loop>(r#"{"clip_ratio": 0.1, "ent_coef": 0.01}"#)
            .assert_passed();
    }

    #[test]
    fn derivatives_match_finite_differences() {
        let data = testing::RandomMinibatch::new(19, 5, 8, 1)
            .logp(0.6)
            .advantages_per_sequence(&[1.5, -0.5, 0.5, -1.5, 0.0])
            .entropy();
        let (m, mb) = (data.len(), data.view());
        let mut l = make(r#"{"ent_coef": 0.05}"#).expect("valid");
        let r = testing::check_loss_derivatives(&mut l, &mb, 1e-3, 1e-5, 1e-2).expect("runs");
        assert!(r.mismatches.is_empty(), "{:#?}", r.mismatches);
        assert!(r.checked >= m, "{r:?}");
        let (o, metrics) = run_loss(&mut l, &mb).expect("runs");
        assert_eq!(o.d_value, vec![0.0; m], "no critic");
        assert!(
            metric(&metrics, "clip_frac").expect("reported") > 0.0,
            "clipping covered"
        );
    }
}
