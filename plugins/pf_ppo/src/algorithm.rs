//! PF-PPO's parameters and its `AlgorithmImpl`: GRPO advantages, verl's PF-PPO weights turned
//! into expected resampling copies per response, and verl's clipped token loss with each
//! token's weight multiplied by its response's copies.
//!
//! The advantage stage records each response's expected copies per rollout sequence; the loss
//! looks them up by each minibatch sequence's rollout index (interface 1.3's minibatch
//! context). `returns` are GRPO's (the advantages).

use drover_plugin_api::{
    llm::{
        clipped_policy_loss_with_copies, outcome_advantages, sequence_scores, Baseline, PolicyLossConfig,
        PolicyLossDefaults, PolicyLossKey as K, PolicyLossParams, PolicyLossSettings,
    },
    AlgorithmImpl, LossOutputs, Metric, Minibatch, ParamSpec, Params, PluginError, PluginInfo,
    Rollout,
};

use crate::reweight::{expected_copies, reweight, ReweightMethod};

const NAME: &str = "pf_ppo";

/// GRPO's keys without the KL (its reference is not used) and `C`, listed after the reweighting's.
const PARAMS: PolicyLossParams = PolicyLossParams {
    keys: &[K::ClipRatio, K::ClipRatioHigh, K::LossAggMode, K::NormAdvByStd, K::EntCoef],
    defaults: PolicyLossDefaults::GRPO,
    docs: &[
        (K::LossAggMode, "Loss aggregation (verl agg_loss) over the reweighted tokens: token-mean (verl default), seq-mean-token-mean, seq-mean-token-sum or seq-mean-token-sum-norm."),
    ],
};

/// PF-PPO's hyper-parameters (verl defaults). Learning rate, epochs, minibatches and the group
/// size are the host's.
#[derive(Debug, Clone, PartialEq)]
pub struct PfPpoConfig {
    /// How scores become weights.
    pub method: ReweightMethod,
    /// Divide group-centred scores by the group's std (false: Dr. GRPO).
    pub norm_adv_by_std: bool,
    /// The token loss: clip range, aggregation, entropy bonus (no KL).
    pub loss: PolicyLossConfig,
}

impl PfPpoConfig {
    fn from_params(p: &Params) -> Result<Self, PluginError> {
        let method = ReweightMethod::parse(p.str("reweight_method")?, p.f64("weight_pow")?)?;
        let PolicyLossSettings {
            norm_adv_by_std,
            loss,
        } = PARAMS.read(p)?;
        Ok(Self {
            method,
            norm_adv_by_std,
            loss,
        })
    }
}

/// The PF-PPO algorithm instance.
#[derive(Debug, Clone)]
pub struct PfPpo {
    config: PfPpoConfig,
    /// Expected copies of each sequence of the batch the last `compute_advantages` saw, for the
    /// loss to look up by rollout index (as f32, the precision the loss weights tokens in).
    copies: Vec<f32>,
}

impl PfPpo {
    /// An instance with `config`.
    pub fn with_config(config: PfPpoConfig) -> Self {
        Self {
            config,
            copies: Vec::new(),
        }
    }

    /// The expected copies of each sequence of `mb`, by its rollout index.
    fn sequence_copies(&self, mb: &Minibatch<'_>) -> Result<Vec<f32>, PluginError> {
        mb.per_sequence(NAME, &self.copies)
    }
}

impl AlgorithmImpl for PfPpo {
    fn info() -> PluginInfo {
        let info = PluginInfo::new(
            NAME,
            env!("CARGO_PKG_VERSION"),
            "PF-PPO: responses reweighted by reward (verl compute_pf_ppo_reweight_data: pow, max_min, max_random) as expected resampling copies, GRPO advantages, clipped token loss (arXiv 2409.06957)",
        )
        .param(ParamSpec::string(
            "reweight_method",
            "pow",
            "verl reweight_method: pow (|score|^weight_pow), max_min (1 for the batch's best and worst scores, else 0: best-worst), max_random (0.4 for the best score, else 0.1: best-random).",
        ))
        .param(
            ParamSpec::float(
                "weight_pow",
                2.0,
                "Exponent p of the pow method (verl weight_pow, default 2).",
            )
            .min(0.0),
        );
        PARAMS.declare(info)
    }

    fn new(params: &Params, _seed: u64) -> Result<Self, PluginError> {
        // Expected copies replace verl's random draw: nothing random here.
        Ok(Self::with_config(PfPpoConfig::from_params(params)?))
    }

    fn compute_advantages(
        &mut self,
        batch: &Rollout<'_>,
        advantages: &mut [f32],
        returns: &mut [f32],
    ) -> Result<Vec<Metric>, PluginError> {
        let baseline = Baseline::GroupNormalized {
            norm_by_std: self.config.norm_adv_by_std,
        };
        let mut metrics = outcome_advantages(NAME, batch, baseline, advantages, returns)?;
        // Weights over the whole batch, from the scores (verl: token_level_scores summed), as
        // verl computes them after the advantages.
        let copies = expected_copies(&reweight(&sequence_scores(batch), self.config.method));
        self.copies = copies.iter().map(|&c| c as f32).collect();
        if !copies.is_empty() {
            let (sum, sq) = copies
                .iter()
                .fold((0.0, 0.0), |(s, q), c| (s + c, q + c * c));
            metrics.push(Metric::new(
                "pf_max_copies",
                copies.iter().copied().fold(0.0, f64::max),
            ));
            // Kish's effective sample size over B: 1 when uniform, 1/B for one response.
            metrics.push(Metric::new(
                "pf_effective_frac",
                sum * sum / (sq * copies.len() as f64),
            ));
        }
        Ok(metrics)
    }

    fn loss(
        &mut self,
        mb: &Minibatch<'_>,
        out: &mut LossOutputs<'_>,
    ) -> Result<Vec<Metric>, PluginError> {
        // Each response counts as many times as it is expected to be drawn, under every
        // aggregation mode: the loss a resampled batch averages to.
        let copies: Vec<f64> = self.sequence_copies(mb)?.into_iter().map(f64::from).collect();
        let stats = clipped_policy_loss_with_copies(NAME, &self.config.loss, mb, Some(&copies), out)?;
        Ok(stats.map(|s| s.metrics()).unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use drover_plugin_api::{testing, CounterRng};

    use drover_plugin_api::llm::LossAggMode;

    use super::*;

    fn make(json: &str) -> Result<PfPpo, PluginError> {
        let params = Params::parse(&PfPpo::info().params, json)?;
        PfPpo::new(&params, 0)
    }

    fn metric(ms: &[Metric], name: &str) -> Option<f64> {
        ms.iter().find(|m| m.name.as_str() == name).map(|m| m.value)
    }

    #[test]
    fn defaults_are_verls_and_bad_params_name_the_key() {
        let p = make("{}").expect("defaults");
        assert_eq!(p.config.method, ReweightMethod::Pow(2.0));
        assert_eq!(p.config.loss.agg, LossAggMode::TokenMean);
        assert_eq!(
            make(r#"{"reweight_method": "max_random"}"#)
                .expect("valid")
                .config
                .method,
            ReweightMethod::MaxRandom
        );
        testing::assert_params_refused::<PfPpo>(&[
            (r#"{"reweight_method": "bon"}"#, "reweight_method"),
            (r#"{"weight_pow": -1}"#, "weight_pow"),
            (r#"{"loss_agg_mode": "sum"}"#, "loss_agg_mode"),
        ]);
    }

    /// Two prompts × 2 responses of one step, rewards [1, 0, 0, 0] (max_random):
    /// GRPO A = [0.7071, −0.7071, 0, 0] (group 0: mean ½, std sqrt(½)); weights
    /// [0.4, 0.1, 0.1, 0.1] → copies 4/0.7·w = [16/7, 4/7, 4/7, 4/7], recorded per rollout
    /// sequence for the loss; `returns` are GRPO's (the advantages).
    #[test]
    fn advantages_and_copies_by_hand() {
        let mut p = make(r#"{"reweight_method": "max_random"}"#).expect("valid");
        let mask = [1.0f32; 4];
        let rewards = [1.0f32, 0.0, 0.0, 0.0];
        let mut batch = Rollout::new(4, 1);
        batch.mask = &mask;
        batch.rewards = &rewards;
        batch.group_ids = &[0, 0, 1, 1];
        let (mut adv, mut ret) = ([0.0f32; 4], [0.0f32; 4]);
        let m =
            AlgorithmImpl::compute_advantages(&mut p, &batch, &mut adv, &mut ret).expect("runs");
        let a = 0.5 / (0.5f64.sqrt() + 1e-6);
        for (x, e) in adv.iter().zip([a, -a, 0.0, 0.0]) {
            assert!((f64::from(*x) - e).abs() < 1e-6, "{adv:?}");
        }
        assert_eq!(ret, adv);
        for (x, e) in p
            .copies
            .iter()
            .zip([16.0 / 7.0, 4.0 / 7.0, 4.0 / 7.0, 4.0 / 7.0])
        {
            assert!((f64::from(*x) - e).abs() < 1e-5, "{:?}", p.copies);
        }
        assert!((metric(&m, "pf_max_copies").expect("reported") - 16.0 / 7.0).abs() < 1e-6);
        // (Σc)²/(B·Σc²) = 16/(4·(256 + 48)/49) = 196/304.
        assert!((metric(&m, "pf_effective_frac").expect("reported") - 196.0 / 304.0).abs() < 1e-6);
    }

    /// Token-mean with copies [3, 1] on two one-token sequences: ρ = 1.1, A = 1 (surrogate
    /// −1.1, d −1.1) and ρ = 1, A = −1 (surrogate 1, d 1). Weights 3/4 and 1/4:
    /// loss [−0.825, 0.25], d [−0.825, 0.25]; unweighted it would be ½ each. The copies are
    /// found by rollout index: minibatch sequence 0 is rollout sequence 2 (copies 3).
    #[test]
    fn loss_by_hand_weights_tokens_by_copies() {
        let mut p = make("{}").expect("defaults");
        p.copies = vec![1.0, 7.0, 3.0];
        let logp_new = [1.1f32.ln() - 1.0, -1.0, 4.0];
        let logp_old = [-1.0f32, -1.0, 4.0];
        let mut mb = Minibatch::new();
        mb.logp_new = &logp_new;
        mb.logp_old = &logp_old;
        mb.advantages = &[1.0, -1.0, 9.0];
        mb.token_weights = &[1.0, 1.0, 0.0];
        mb.seq_index = &[0, 1, 1];
        mb.num_sequences = 2;
        mb.rollout_index = Some(&[2, 0]);
        let (mut loss, mut d, mut dv, mut de) =
            ([0.0f32; 3], [0.0f32; 3], [0.0f32; 3], [0.0f32; 3]);
        let mut out = LossOutputs {
            loss: &mut loss,
            d_logp: &mut d,
            d_value: &mut dv,
            d_entropy: &mut de,
        };
        let m = AlgorithmImpl::loss(&mut p, &mb, &mut out).expect("runs");
        for (x, e) in loss.iter().zip([-0.825, 0.25, 0.0]) {
            assert!((f64::from(*x) - e).abs() < 1e-6, "{loss:?}");
        }
        for (x, e) in d.iter().zip([-0.825, 0.25, 0.0]) {
            assert!((f64::from(*x) - e).abs() < 1e-6, "{d:?}");
        }
        assert!((metric(&m, "policy_loss").expect("reported") + 0.575).abs() < 1e-6);
        assert_eq!(dv, [0.0; 3]);

        // Without a rollout index (a host older than 1.3) the copies cannot be found.
        mb.rollout_index = None;
        let mut out = LossOutputs { loss: &mut loss, d_logp: &mut d, d_value: &mut dv, d_entropy: &mut de };
        let e = AlgorithmImpl::loss(&mut p, &mb, &mut out).expect_err("no index");
        assert!(e.message().contains("pf_ppo needs a drover host with interface 1.3"), "{e}");
        // Nor before an advantage stage that saw the sequence.
        mb.rollout_index = Some(&[3, 0]);
        let mut out = LossOutputs { loss: &mut loss, d_logp: &mut d, d_value: &mut dv, d_entropy: &mut de };
        let e = AlgorithmImpl::loss(&mut p, &mb, &mut out).expect_err("unknown sequence");
        assert!(e.message().contains("rollout sequence 3, but the last `compute_advantages` saw 3"), "{e}");
    }

    /// Under seq-mean-token-mean the copies weigh each response's token mean, as resampling
    /// does: folded into the token weights they cancelled in `1/|o_s|`, and the loss was
    /// unweighted. Two 2-token responses, 3 copies and 1, ratio 1: a resampled minibatch of
    /// 4 draws gives each token of the first `3/(4·2)` and of the second `1/(4·2)`.
    #[test]
    fn copies_weigh_responses_under_seq_mean_token_mean() {
        let mut p = make(r#"{"loss_agg_mode": "seq-mean-token-mean"}"#).expect("valid");
        p.copies = vec![3.0, 1.0];
        let logp = [-1.0f32; 4];
        let mut mb = Minibatch::new();
        mb.logp_new = &logp;
        mb.logp_old = &logp;
        mb.advantages = &[1.0, 1.0, -1.0, -1.0];
        mb.token_weights = &[1.0; 4];
        mb.seq_index = &[0, 0, 1, 1];
        mb.num_sequences = 2;
        mb.rollout_index = Some(&[0, 1]);
        let (mut loss, mut d, mut dv, mut de) = ([0.0f32; 4], [0.0f32; 4], [0.0f32; 4], [0.0f32; 4]);
        let mut out = LossOutputs { loss: &mut loss, d_logp: &mut d, d_value: &mut dv, d_entropy: &mut de };
        AlgorithmImpl::loss(&mut p, &mb, &mut out).expect("runs");
        for (x, e) in loss.iter().zip([-0.375, -0.375, 0.125, 0.125]) {
            assert!((f64::from(*x) - e).abs() < 1e-6, "{loss:?}");
        }
        for (x, e) in d.iter().zip([-0.375, -0.375, 0.125, 0.125]) {
            assert!((f64::from(*x) - e).abs() < 1e-6, "{d:?}");
        }
    }

    #[test]
    fn passes_drovers_plugin_harness() {
        for json in [
            "{}",
            r#"{"reweight_method": "max_min", "ent_coef": 0.01}"#,
            r#"{"reweight_method": "max_random", "loss_agg_mode": "seq-mean-token-mean"}"#,
        ] {
            testing::check_algorithm::<PfPpo>(json).assert_passed();
        }
    }

    #[test]
    fn derivatives_match_finite_differences() {
        let mut rng = CounterRng::new(3);
        let m = 40;
        let mut draw = |lo: f64, hi: f64| (lo + (hi - lo) * rng.next_f64()) as f32;
        let logp_old: Vec<f32> = (0..m).map(|_| draw(-3.0, -0.1)).collect();
        let logp_new: Vec<f32> = logp_old.iter().map(|&l| l + draw(-0.5, 0.5)).collect();
        let advantages: Vec<f32> = (0..m)
            .map(|i| [1.2f32, -0.8, 0.4, -1.5, 0.9][i / 8])
            .collect();
        // Copies of rollout sequences 0..5; the minibatch holds them in reverse.
        let copies = vec![1.0f32, 0.0, 1.0, 0.5, 2.5];
        let rollout_index = [4u32, 3, 2, 1, 0];
        let weights: Vec<f32> = (0..m).map(|i| if i % 8 == 7 { 0.0 } else { 1.0 }).collect();
        let seq_index: Vec<u32> = (0..m as u32).map(|i| i / 8).collect();
        let mut mb = Minibatch::new();
        mb.logp_new = &logp_new;
        mb.logp_old = &logp_old;
        mb.advantages = &advantages;
        mb.token_weights = &weights;
        mb.seq_index = &seq_index;
        mb.num_sequences = 5;
        mb.rollout_index = Some(&rollout_index);
        for mode in LossAggMode::NAMES {
            let mut p = make(&format!(r#"{{"loss_agg_mode": "{mode}"}}"#)).expect("valid");
            p.copies = copies.clone();
            let r = testing::check_loss_derivatives(&mut p, &mb, 1e-3, 1e-5, 1e-2).expect("runs");
            assert!(r.mismatches.is_empty(), "{mode}: {:#?}", r.mismatches);
            assert!(r.checked >= m / 2, "{mode}: {r:?}");
        }
    }
}
