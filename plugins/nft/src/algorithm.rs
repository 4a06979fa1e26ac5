//! NFT's parameters and its `AlgorithmImpl`: the advantage stage writes ±r̂ per response, the
//! loss stage NFT's positive / implicit-negative token loss summed and divided by a constant.

use drover_plugin_api::{
    llm::{approx_kl, group_ids, group_scores_vary, valid_token_mean},
    AlgorithmImpl, LossOutputs, Metric, Minibatch, ParamSpec, Params, PluginError, PluginInfo,
    Rollout,
};

use crate::nft::{nft_advantages, nft_token_loss, Normalize};

const NAME: &str = "nft";

/// NFT's hyper-parameters (NVlabs/NFT `train_7B.sh` defaults).
#[derive(Debug, Clone, PartialEq)]
pub struct NftConfig {
    /// Weight of the negative (wrong-answer) loss: 1 NFT, 0 rejection-sampling fine-tuning.
    pub neg_weight: f64,
    /// Scaling of each token loss by the group accuracy.
    pub normalize: Normalize,
    /// Straight-through lower clamp on the negative loss's log argument.
    pub clamp_negative: f64,
    /// Straight-through lower clamp on the positive loss's ratio (0: none).
    pub clamp_positive: f64,
    /// The loss is `Σ_tokens / loss_scale_factor`.
    pub loss_scale_factor: f64,
    /// Whether `keep_group` refuses groups whose rewards are all equal (NFT's trainer trains
    /// only on groups with `std > 0`).
    pub filter_groups: bool,
}

impl Default for NftConfig {
    fn default() -> Self {
        Self {
            neg_weight: 1.0,
            normalize: Normalize::NegativeRate,
            clamp_negative: 1.0,
            clamp_positive: 0.0,
            loss_scale_factor: 1000.0,
            filter_groups: true,
        }
    }
}

impl NftConfig {
    fn from_params(p: &Params) -> Result<Self, PluginError> {
        let normalize = match p.i64("normalize")? {
            0 => Normalize::None,
            1 => Normalize::NegativeRate,
            2 => Normalize::SqrtOdds,
            n => {
                return Err(PluginError::invalid_params(
                    "normalize",
                    format!("must be 0 (none), 1 (× (1 − r̂)) or 2 (× sqrt((1 − r̂)/r̂)), got {n}"),
                ))
            }
        };
        let positive = |key: &str| -> Result<f64, PluginError> {
            let v = p.f64(key)?;
            if v > 0.0 {
                Ok(v)
            } else {
                Err(PluginError::invalid_params(
                    key,
                    format!("must be positive, got {v}"),
                ))
            }
        };
        Ok(Self {
            neg_weight: p.f64("neg_weight")?,
            normalize,
            clamp_negative: positive("clamp_negative")?,
            clamp_positive: p.f64("clamp_positive")?,
            loss_scale_factor: positive("loss_scale_factor")?,
            filter_groups: p.bool("filter_groups")?,
        })
    }
}

/// The NFT algorithm instance.
#[derive(Debug, Clone)]
pub struct Nft {
    config: NftConfig,
}

impl Nft {
    /// An instance with `config`.
    pub fn with_config(config: NftConfig) -> Self {
        Self { config }
    }
}

impl AlgorithmImpl for Nft {
    fn info() -> PluginInfo {
        PluginInfo::new(
            NAME,
            env!("CARGO_PKG_VERSION"),
            "NFT: negative-aware fine-tuning, −log ρ on correct answers and an implicit negative policy on wrong ones (NVlabs/NFT dp_actor.py)",
        )
        .param(
            ParamSpec::float(
                "neg_weight",
                1.0,
                "Weight of the implicit-negative loss on wrong answers (NFT train_7B.sh: 1.0 for NFT, 0.0 gives rejection-sampling fine-tuning).",
            )
            .min(0.0),
        )
        .param(
            ParamSpec::int(
                "normalize",
                1,
                "Token-loss scaling by the clamped group accuracy r̂ (NFT train_7B.sh normalize=1): 0 none, 1 × (1 − r̂), 2 × sqrt((1 − r̂)/r̂).",
            )
            .range(0.0, 2.0),
        )
        .param(
            ParamSpec::float(
                "clamp_negative",
                1.0,
                "Straight-through lower clamp on (1 − r̂ρ)/(1 − r̂) inside the negative loss's log (NFT train_7B.sh clamp_negative=1.0); must be > 0.",
            )
            .min(0.0),
        )
        .param(
            ParamSpec::float(
                "clamp_positive",
                0.0,
                "Straight-through lower clamp on ρ inside the positive loss's log (NFT train_7B.sh clamp_positive=0.0: none).",
            )
            .range(0.0, 1.0),
        )
        .param(
            ParamSpec::float(
                "loss_scale_factor",
                1000.0,
                "The minibatch loss is Σ_tokens loss / loss_scale_factor (NFT dp_actor.py divides the token sum by 1000.0).",
            )
            .min(0.0),
        )
        .param(ParamSpec::bool(
            "filter_groups",
            true,
            "Refuse prompt groups whose rewards are all equal (all right or all wrong), as NFT's trainer does (train_7B.sh enable_filter_groups=True, metric acc, max_num_gen_batches=10; r̂'s [0.02, 0.98] clamp is only a guard then). The host generates at most run.max_gen_batches batches per iteration, 1 unless set (then refused groups are weight-0 padding): set it (NFT: 10) for the refill. false: train on every group, uniform ones pushed by ±0.02.",
        ))
    }

    fn new(params: &Params, _seed: u64) -> Result<Self, PluginError> {
        // NFT draws no random numbers.
        Ok(Self::with_config(NftConfig::from_params(params)?))
    }

    fn compute_advantages(
        &mut self,
        batch: &Rollout<'_>,
        advantages: &mut [f32],
        returns: &mut [f32],
    ) -> Result<Vec<Metric>, PluginError> {
        let ids = group_ids(NAME, batch)?;
        let metrics = nft_advantages(batch, ids, advantages);
        returns.copy_from_slice(advantages);
        Ok(metrics)
    }

    fn loss(
        &mut self,
        mb: &Minibatch<'_>,
        out: &mut LossOutputs<'_>,
    ) -> Result<Vec<Metric>, PluginError> {
        let c = &self.config;
        let (mut policy_loss, mut kl, mut clamped, mut positive, mut valid) =
            (0.0, 0.0, 0usize, 0usize, 0usize);
        for i in 0..mb.len() {
            let m = f64::from(mb.token_weights[i]);
            if m <= 0.0 {
                continue; // padding: outputs stay 0
            }
            let adv = f64::from(mb.advantages[i]);
            let t = nft_token_loss(
                f64::from(mb.logp_new[i]),
                f64::from(mb.logp_old[i]),
                adv,
                c.neg_weight,
                c.clamp_negative,
                c.clamp_positive,
                c.normalize,
            );
            let w = m / c.loss_scale_factor;
            out.loss[i] = (w * t.loss) as f32;
            out.d_logp[i] = (w * t.d_logp) as f32;
            policy_loss += w * t.loss;
            kl += approx_kl(t.log_ratio);
            clamped += usize::from(t.clamped);
            positive += usize::from(adv > 0.0);
            valid += 1;
        }
        if valid == 0 {
            return Ok(Vec::new());
        }
        let n = valid as f64;
        let mut metrics = vec![Metric::new("policy_loss", policy_loss)];
        if let Some(h) = valid_token_mean(mb.entropy_new, mb.token_weights) {
            metrics.push(Metric::new("entropy", h));
        }
        metrics.extend([
            Metric::new("approx_kl", kl / n),
            Metric::new("clamp_frac", clamped as f64 / n),
            Metric::new("positive_token_frac", positive as f64 / n),
        ]);
        Ok(metrics)
    }

    /// NFT trains only on groups with both right and wrong answers (its trainer keeps the
    /// prompts whose accuracy has `std > 0` and asserts 0 < r̂ < 1 in the loss).
    fn keep_group(&self, rewards: &[f32]) -> Result<bool, PluginError> {
        let varies = group_scores_vary(NAME, rewards)?;
        Ok(varies || !self.config.filter_groups)
    }
}

#[cfg(test)]
mod tests {
    use drover_plugin_api::testing::{self, metric, outcome_rollout, run_advantages};

    use super::*;

    fn make(json: &str) -> Result<Nft, PluginError> {
        testing::instance(json)
    }

    type LossRun = (Vec<f32>, Vec<f32>, Vec<Metric>);

    /// The loss's outputs; NFT has no critic and no entropy term.
    fn run_loss(alg: &mut Nft, mb: &Minibatch<'_>) -> Result<LossRun, PluginError> {
        let (o, metrics) = testing::run_loss(alg, mb)?;
        assert_eq!(o.d_value, vec![0.0; mb.len()]);
        assert_eq!(o.d_entropy, vec![0.0; mb.len()]);
        Ok((o.loss, o.d_logp, metrics))
    }

    #[test]
    fn defaults_are_nfts_and_bad_params_name_the_key() {
        let n = make("{}").expect("defaults are valid");
        assert_eq!(n.config, NftConfig::default());
        let n = make(r#"{"normalize": 2, "neg_weight": 0.0}"#).expect("valid");
        assert_eq!(n.config.normalize, Normalize::SqrtOdds);
        testing::assert_params_refused::<Nft>(&[
            (r#"{"normalize": 3}"#, "normalize"),
            (r#"{"clamp_negative": 0.0}"#, "clamp_negative"),
            (r#"{"loss_scale_factor": 0.0}"#, "loss_scale_factor"),
            (r#"{"neg_weight": -1.0}"#, "neg_weight"),
            (r#"{"filter_groups": 1}"#, "filter_groups"),
        ]);
    }

    /// All-right and all-wrong groups are refused by default and kept with
    /// `filter_groups = false`; a single response and a mixed group are always kept.
    #[test]
    fn keep_group_refuses_uniform_groups_unless_told_not_to() {
        let n = make("{}").expect("defaults");
        assert!(!n.keep_group(&[1.0, 1.0, 1.0]).expect("all right"));
        assert!(!n.keep_group(&[0.0, 0.0]).expect("all wrong"));
        assert!(n.keep_group(&[0.0, 1.0, 0.0]).expect("mixed"));
        assert!(n.keep_group(&[1.0]).expect("single"));
        assert!(n.keep_group(&[f32::NAN, 1.0]).is_err());
        let all = make(r#"{"filter_groups": false}"#).expect("valid");
        assert!(all.keep_group(&[1.0, 1.0, 1.0]).expect("all right"));
        assert!(all.keep_group(&[0.0, 0.0]).expect("all wrong"));
    }

    /// Group 5: [1, 0, 0, 0] → r̂ = ¼; group 2: [1, 1] → 1 clamped to 0.98; group 9: [0, 0] →
    /// 0 clamped to 0.02. Two steps each, reward on the last valid one; sequence 1 has one step.
    #[test]
    fn advantages_by_hand() {
        let mut n = make("{}").expect("defaults");
        let mask = [
            1., 1., 1., 0., 1., 1., 1., 1., 1., 1., 1., 1., 1., 1., 1., 1.,
        ];
        let rewards = [
            0., 1., 0., 9., 0., 0., 0., 0., 0., 1., 0., 1., 0., 0., 0., 0.,
        ];
        let ids = [5u32, 5, 5, 5, 2, 2, 9, 9];
        let batch = outcome_rollout(2, &mask, &rewards, &ids);
        let (adv, ret, m) = run_advantages(&mut n, &batch).expect("runs");
        let q = 0.25f32;
        assert_eq!(
            adv,
            [q, q, -q, 0.0, -q, -q, -q, -q, 0.98, 0.98, 0.98, 0.98, -0.02, -0.02, -0.02, -0.02]
        );
        assert_eq!(ret, adv);
        assert_eq!(metric(&m, "response_accuracy"), Some(3.0 / 8.0));
        assert!((metric(&m, "uniform_group_frac").expect("reported") - 2.0 / 3.0).abs() < 1e-12);
    }

    /// r̂ = ¼, normalize 1 (× ¾), weights 1/1000:
    /// - correct, ρ = 1.2: −¾·ln 1.2 = −0.136741…, d = −¾;
    /// - wrong, ρ = 0.8: p = (1 − 0.2)/0.75 = 16/15, −¾·ln(16/15) = −0.048403…,
    ///   d = ¾·(0.2/0.75)/(16/15) = 0.1875;
    /// - wrong, ρ = 1.5: p = 0.625/0.75 = ⅚ < 1 clamped: value ¾·(1 − ⅚) = 0.125, straight-through
    ///   d = ¾·(0.25·1.5/0.75)/1 = 0.375;
    /// - correct, log-ratio 12 > 10: −¾·10, d = 0;
    /// - padding.
    #[test]
    fn loss_by_hand() {
        let mut n = make("{}").expect("defaults");
        let old = -1.0f32;
        let logp_new = [
            1.2f32.ln() + old,
            0.8f32.ln() + old,
            1.5f32.ln() + old,
            12.0 + old,
            5.0,
        ];
        let logp_old = [old, old, old, old, 3.0];
        let adv = [0.25f32, -0.25, -0.25, 0.25, 40.0];
        let mut mb = Minibatch::new();
        mb.logp_new = &logp_new;
        mb.logp_old = &logp_old;
        mb.advantages = &adv;
        mb.token_weights = &[1.0, 1.0, 1.0, 1.0, 0.0];
        mb.seq_index = &[0, 0, 1, 1, 1];
        mb.num_sequences = 2;
        let (loss, d, m) = run_loss(&mut n, &mb).expect("runs");
        let k = 1e-3;
        let expect_loss = [
            -0.75 * 1.2f64.ln() * k,
            -0.75 * (16.0f64 / 15.0).ln() * k,
            0.125 * k,
            -7.5 * k,
            0.0,
        ];
        let expect_d = [-0.75 * k, 0.1875 * k, 0.375 * k, 0.0, 0.0];
        for i in 0..5 {
            assert!(
                (f64::from(loss[i]) - expect_loss[i]).abs() < 1e-8,
                "{loss:?}"
            );
            assert!((f64::from(d[i]) - expect_d[i]).abs() < 1e-8, "{d:?}");
        }
        assert!((expect_loss[0] + 0.000_136_741_2).abs() < 1e-10);
        let total: f64 = expect_loss.iter().sum();
        assert!((metric(&m, "policy_loss").expect("reported") - total).abs() < 1e-8);
        assert_eq!(metric(&m, "clamp_frac"), Some(0.25));
        assert_eq!(metric(&m, "positive_token_frac"), Some(0.5));
        assert!(metric(&m, "approx_kl").expect("reported") > 0.0);
        assert_eq!(metric(&m, "entropy"), None);

        // neg_weight 0 is rejection-sampling fine-tuning: wrong answers contribute nothing.
        let mut rft = make(r#"{"neg_weight": 0.0, "normalize": 0}"#).expect("valid");
        let (loss, d, _) = run_loss(&mut rft, &mb).expect("runs");
        assert_eq!(&loss[1..3], &[0.0, 0.0]);
        assert_eq!(&d[1..3], &[0.0, 0.0]);
        assert!((f64::from(d[0]) + 1e-3).abs() < 1e-9, "{d:?}");
    }

    #[test]
    fn passes_drovers_plugin_harness() {
        testing::check_algorithm::<Nft>("{}").assert_passed();
        testing::check_algorithm::<Nft>(
            r#"{"normalize": 2, "clamp_positive": 0.9, "clamp_negative": 0.5}"#,
        )
        .assert_passed();
    }

    /// Finite differences of Σ loss wrt logp_new, through both clamps' linear continuations,
    /// for each normalize mode.
    #[test]
    fn derivatives_match_finite_differences() {
        let data = testing::RandomMinibatch::new(7, 6, 8, 1)
            .logp(0.7)
            .advantages_per_sequence(&[0.3, -0.3, 0.8, -0.8, 0.02, -0.6]);
        let (m, mb) = (data.len(), data.view());
        for normalize in 0..3 {
            let json = format!(
                r#"{{"normalize": {normalize}, "clamp_positive": 0.95, "loss_scale_factor": 1.0}}"#
            );
            let mut n = make(&json).expect("valid");
            let (_, _, metrics) = run_loss(&mut n, &mb).expect("runs");
            // Both sides of the negative clamp are exercised.
            let frac = metric(&metrics, "clamp_frac").expect("reported");
            assert!(frac > 0.1 && frac < 0.9, "{frac}");
            let r = testing::check_loss_derivatives(&mut n, &mb, 1e-3, 1e-5, 1e-2).expect("runs");
            assert!(r.mismatches.is_empty(), "{normalize}: {:#?}", r.mismatches);
            assert!(r.checked >= m - 12, "{normalize}: {r:?}");
        }
    }
}
