//! LOOP's parameters and its `AlgorithmImpl`: leave-one-out outcome advantages (no std
//! normalization), then the PPO clipped token loss with token-mean aggregation, no KL.

use drover_plugin_api::{
    llm::{
        clipped_policy_loss, outcome_advantages, Baseline, ClipRange, LossAggMode, PolicyLossConfig,
    },
    AlgorithmImpl, LossOutputs, Metric, Minibatch, ParamSpec, Params, PluginError, PluginInfo,
    Rollout,
};

const NAME: &str = "loop";

/// LOOP's hyper-parameters. Its identity is fixed: RLOO advantages without std normalization
/// (the paper's ablation: normalizing costs about 9 points), PPO's per-token clip,
/// token-mean, no critic, no KL. Learning rate, epochs and the group size (the paper: K = 6
/// rollouts per task) are the host's.
#[derive(Debug, Clone, PartialEq)]
pub struct LoopConfig {
    /// The token loss: symmetric clip, token-mean, no KL.
    pub loss: PolicyLossConfig,
}

impl Default for LoopConfig {
    fn default() -> Self {
        Self {
            loss: PolicyLossConfig {
                clip: ClipRange::symmetric(0.2),
                agg: LossAggMode::TokenMean,
                loss_scale_factor: None,
                ent_coef: 0.0,
                kl_coef: 0.0,
            },
        }
    }
}

impl LoopConfig {
    fn from_params(p: &Params) -> Result<Self, PluginError> {
        let eps = p.f64("clip_ratio")?;
        Ok(Self {
            loss: PolicyLossConfig {
                clip: ClipRange::symmetric(eps),
                agg: LossAggMode::TokenMean,
                loss_scale_factor: None,
                ent_coef: p.f64("ent_coef")?,
                kl_coef: 0.0,
            },
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
        PluginInfo::new(
            NAME,
            env!("CARGO_PKG_VERSION"),
            "LOOP: leave-one-out advantage r_i − mean of the others (no std normalization), PPO clipped token loss, token-mean, no critic, no KL",
        )
        .param(
            ParamSpec::float(
                "clip_ratio",
                0.2,
                "Clip range ε of the probability ratio, both sides; PPO's 0.2 (LOOP, arXiv 2502.01600, uses PPO's per-token clipped objective).",
            )
            .range(0.0, 1.0),
        )
        .param(
            ParamSpec::float(
                "ent_coef",
                0.0,
                "Entropy bonus coefficient; LOOP uses none (0).",
            )
            .min(0.0),
        )
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
    use drover_plugin_api::{testing, CounterRng};

    use super::*;

    fn make(json: &str) -> Result<Loop, PluginError> {
        let params = Params::parse(&Loop::info().params, json)?;
        Loop::new(&params, 0)
    }

    struct Outs {
        loss: Vec<f32>,
        d_logp: Vec<f32>,
    }

    fn run_loss(alg: &mut Loop, mb: &Minibatch<'_>) -> Result<(Outs, Vec<Metric>), PluginError> {
        let m = mb.len();
        let (mut loss, mut d_logp, mut d_value, mut d_entropy) =
            (vec![0.0; m], vec![0.0; m], vec![0.0; m], vec![0.0; m]);
        let mut out = LossOutputs {
            loss: &mut loss,
            d_logp: &mut d_logp,
            d_value: &mut d_value,
            d_entropy: &mut d_entropy,
        };
        let metrics = AlgorithmImpl::loss(alg, mb, &mut out)?;
        assert_eq!(d_value, vec![0.0; m], "no critic");
        Ok((Outs { loss, d_logp }, metrics))
    }

    fn metric(ms: &[Metric], name: &str) -> Option<f64> {
        ms.iter().find(|m| m.name.as_str() == name).map(|m| m.value)
    }

    #[test]
    fn defaults_and_bad_params_name_the_key() {
        let l = make("{}").expect("defaults are valid");
        assert_eq!(l.config, LoopConfig::default());
        for (json, key) in [
            (r#"{"clip_ratio": 1.5}"#, "clip_ratio"),
            (r#"{"ent_coef": -1}"#, "ent_coef"),
            (r#"{"clip_ratio": "big"}"#, "clip_ratio"),
        ] {
            let e = make(json).expect_err(json);
            assert_eq!(e.key(), Some(key), "{json}: {e}");
        }
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
        let mut batch = Rollout::new(6, 2);
        batch.mask = &mask;
        batch.rewards = &rewards;
        batch.group_ids = &ids;
        let (mut adv, mut ret) = ([0.0f32; 12], [0.0f32; 12]);
        let m =
            AlgorithmImpl::compute_advantages(&mut l, &batch, &mut adv, &mut ret).expect("runs");
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
        let mut rng = CounterRng::new(19);
        let m = 40;
        let mut draw = |lo: f64, hi: f64| (lo + (hi - lo) * rng.next_f64()) as f32;
        let logp_old: Vec<f32> = (0..m).map(|_| draw(-3.0, -0.1)).collect();
        let logp_new: Vec<f32> = logp_old.iter().map(|&l| l + draw(-0.6, 0.6)).collect();
        let advantages: Vec<f32> = (0..m)
            .map(|i| [1.5f32, -0.5, 0.5, -1.5, 0.0][i / 8])
            .collect();
        let entropy: Vec<f32> = (0..m).map(|_| draw(0.1, 2.0)).collect();
        let weights: Vec<f32> = (0..m).map(|i| if i % 8 == 7 { 0.0 } else { 1.0 }).collect();
        let seq_index: Vec<u32> = (0..m as u32).map(|i| i / 8).collect();
        let mut mb = Minibatch::new();
        mb.logp_new = &logp_new;
        mb.logp_old = &logp_old;
        mb.advantages = &advantages;
        mb.entropy_new = &entropy;
        mb.token_weights = &weights;
        mb.seq_index = &seq_index;
        mb.num_sequences = 5;
        let mut l = make(r#"{"ent_coef": 0.05}"#).expect("valid");
        let r = testing::check_loss_derivatives(&mut l, &mb, 1e-3, 1e-5, 1e-2).expect("runs");
        assert!(r.mismatches.is_empty(), "{:#?}", r.mismatches);
        assert!(r.checked >= m, "{r:?}");
        let (_, metrics) = run_loss(&mut l, &mb).expect("runs");
        assert!(
            metric(&metrics, "clip_frac").expect("reported") > 0.0,
            "clipping covered"
        );
    }
}
