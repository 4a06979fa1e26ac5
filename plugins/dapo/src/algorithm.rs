//! DAPO's parameters and its `AlgorithmImpl`: overlong-shaped scores, GRPO's group-normalized
//! advantage, the clip-higher/dual-clip token loss, and the dynamic-sampling group predicate.

use std::collections::BTreeMap;

use drover_plugin_api::{
    llm::{
        broadcast_to_tokens, clipped_policy_loss, group_ids, group_normalized_advantages,
        group_scores_vary, sequence_scores, ClipRange, PolicyLossConfig, GRPO_EPS,
    },
    AlgorithmImpl, LossOutputs, Metric, Minibatch, ParamSpec, Params, PluginError, PluginInfo,
    Rollout,
};

const NAME: &str = "dapo";

/// DAPO's overlong reward shaping (arXiv 2503.14476 §3.4; verl `DAPORewardManager`): a
/// response longer than `max_response_len − buffer_len` loses up to `penalty_factor`, linearly
/// over the buffer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OverlongShaping {
    /// `L_max`, the longest response the generator may produce.
    pub max_response_len: f64,
    /// `L_cache`, the length of the penalty ramp before `L_max`.
    pub buffer_len: f64,
    /// The penalty at `L_max`.
    pub penalty_factor: f64,
}

/// The overlong penalty of a response of `len` valid tokens:
/// `min(−(len − (L_max − L_cache))/L_cache·factor, 0)`, exactly verl's. It is not floored:
/// a response past `L_max` (the host truncates, so only with a mis-set `L_max`) loses more
/// than `factor`.
pub fn overlong_penalty(len: f64, shaping: &OverlongShaping) -> f64 {
    let expected = shaping.max_response_len - shaping.buffer_len;
    let exceed = len - expected;
    (-exceed / shaping.buffer_len * shaping.penalty_factor).min(0.0)
}

/// DAPO's hyper-parameters (the verl DAPO recipe's). Learning rate, group size and the
/// resampling cap are the host's.
#[derive(Debug, Clone, PartialEq)]
pub struct DapoConfig {
    /// The token loss: clip-higher with dual clip, token-mean, no KL.
    pub loss: PolicyLossConfig,
    /// Overlong reward shaping; `None`: off.
    pub overlong: Option<OverlongShaping>,
    /// Whether `keep_group` refuses groups whose rewards are all equal.
    pub dynamic_sampling: bool,
}

impl Default for DapoConfig {
    fn default() -> Self {
        Self {
            loss: PolicyLossConfig {
                clip: ClipRange {
                    low: 0.2,
                    high: 0.28,
                    dual_clip: Some(10.0),
                },
                ..PolicyLossConfig::default()
            },
            overlong: None,
            dynamic_sampling: true,
        }
    }
}

impl DapoConfig {
    fn from_params(p: &Params) -> Result<Self, PluginError> {
        let dual_clip = p.f64("clip_ratio_c")?;
        if dual_clip <= 1.0 {
            return Err(PluginError::invalid_params(
                "clip_ratio_c",
                format!("the dual-clip constant must be greater than 1, got {dual_clip}"),
            ));
        }
        let overlong = match p.opt_f64("max_response_len")? {
            None => None,
            Some(max_len) => {
                if !(max_len.is_finite() && max_len >= 1.0) {
                    return Err(PluginError::invalid_params(
                        "max_response_len",
                        format!("must be a positive number of tokens, got {max_len}"),
                    ));
                }
                let buffer = p.i64("overlong_buffer_len")? as f64;
                if buffer < 1.0 || buffer > max_len {
                    return Err(PluginError::invalid_params(
                        "overlong_buffer_len",
                        format!(
                            "the penalty ramp must be between 1 and max_response_len = \
                             {max_len} tokens, got {buffer} (DAPO used 4096 of 20480: set \
                             overlong_buffer_len to about a fifth of max_response_len)"
                        ),
                    ));
                }
                Some(OverlongShaping {
                    max_response_len: max_len,
                    buffer_len: buffer,
                    penalty_factor: p.f64("overlong_penalty_factor")?,
                })
            }
        };
        Ok(Self {
            loss: PolicyLossConfig {
                clip: ClipRange {
                    low: p.f64("clip_ratio_low")?,
                    high: p.f64("clip_ratio_high")?,
                    dual_clip: Some(dual_clip),
                },
                ent_coef: p.f64("ent_coef")?,
                ..PolicyLossConfig::default()
            },
            overlong,
            dynamic_sampling: p.bool("dynamic_sampling")?,
        })
    }
}

/// The DAPO algorithm instance.
#[derive(Debug, Clone)]
pub struct Dapo {
    config: DapoConfig,
}

impl Dapo {
    /// An instance with `config`.
    pub fn with_config(config: DapoConfig) -> Self {
        Self { config }
    }
}

/// Valid-token count of each sequence (tokens whose mask is > 0), the `|y|` of the overlong
/// penalty.
fn response_lengths(batch: &Rollout<'_>) -> Vec<f64> {
    batch
        .mask
        .chunks(batch.seq_len.max(1))
        .take(batch.num_sequences)
        .map(|row| row.iter().filter(|&&m| m > 0.0).count() as f64)
        .collect()
}

/// Fraction of groups of two or more whose raw scores are all equal: what dynamic sampling
/// drops; `None` without such groups.
fn uniform_group_frac(scores: &[f64], ids: &[u32]) -> Option<f64> {
    let mut groups: BTreeMap<u32, Vec<f64>> = BTreeMap::new();
    for (&g, &s) in ids.iter().zip(scores) {
        groups.entry(g).or_default().push(s);
    }
    let multi: Vec<&Vec<f64>> = groups.values().filter(|g| g.len() >= 2).collect();
    if multi.is_empty() {
        return None;
    }
    let uniform = multi
        .iter()
        .filter(|g| g.iter().all(|&s| s == g[0]))
        .count();
    Some(uniform as f64 / multi.len() as f64)
}

impl AlgorithmImpl for Dapo {
    fn info() -> PluginInfo {
        PluginInfo::new(
            NAME,
            env!("CARGO_PKG_VERSION"),
            "DAPO: clip-higher, dual clip, token-mean, no KL, overlong reward shaping, group-normalized advantage, dynamic-sampling group filter (verl DAPO recipe)",
        )
        .param(
            ParamSpec::float(
                "clip_ratio_low",
                0.2,
                "Lower clip range ε_low: ρ is clipped below at 1 − ε_low (DAPO, arXiv 2503.14476: 0.2).",
            )
            .range(0.0, 1.0),
        )
        .param(
            ParamSpec::float(
                "clip_ratio_high",
                0.28,
                "Upper clip range ε_high, the clip-higher that keeps low-probability tokens learning (DAPO: 0.28).",
            )
            .range(0.0, 10.0),
        )
        .param(
            ParamSpec::float(
                "clip_ratio_c",
                10.0,
                "Dual-clip constant c > 1 capping negative-advantage token losses at −A·c (verl DAPO recipes: 10).",
            )
            .min(1.0),
        )
        .param(ParamSpec::bool(
            "dynamic_sampling",
            true,
            "Refuse prompt groups whose rewards are all equal (all 0 or all 1), so the host generates more until the batch fills (DAPO dynamic sampling). The host generates at most run.max_gen_batches batches per iteration, 1 unless set (then refused groups are weight-0 padding): set it (DAPO's scripts: 10) for the refill. false: keep every group.",
        ))
        .param(
            ParamSpec::optional_float(
                "max_response_len",
                "L_max of the overlong reward shaping, in tokens (DAPO: 20480 with a 4096 ramp); null: no shaping, the default, since drover's sequence tasks have fixed-length responses that no shaping would tell apart.",
            )
            .min(1.0),
        )
        .param(
            ParamSpec::int(
                "overlong_buffer_len",
                4096,
                "L_cache: responses longer than max_response_len − overlong_buffer_len are penalized linearly up to the factor (DAPO: 4096); at most max_response_len.",
            )
            .min(1.0),
        )
        .param(
            ParamSpec::float(
                "overlong_penalty_factor",
                1.0,
                "The overlong penalty at max_response_len, added to the score before the group advantage (DAPO and verl: 1.0).",
            )
            .min(0.0),
        )
        .param(
            ParamSpec::float(
                "ent_coef",
                0.0,
                "Entropy bonus coefficient (verl entropy_coeff; 0 in the DAPO recipe).",
            )
            .min(0.0),
        )
    }

    fn new(params: &Params, _seed: u64) -> Result<Self, PluginError> {
        // DAPO draws no random numbers: sampling and resampling are the host's.
        Ok(Self::with_config(DapoConfig::from_params(params)?))
    }

    fn compute_advantages(
        &mut self,
        batch: &Rollout<'_>,
        advantages: &mut [f32],
        returns: &mut [f32],
    ) -> Result<Vec<Metric>, PluginError> {
        let ids = group_ids(NAME, batch)?;
        let scores = sequence_scores(batch);
        let mut metrics = Vec::new();
        if !scores.is_empty() {
            metrics.push(Metric::new(
                "score_mean",
                scores.iter().sum::<f64>() / scores.len() as f64,
            ));
        }
        if let Some(f) = uniform_group_frac(&scores, ids) {
            metrics.push(Metric::new("uniform_group_frac", f));
        }
        let shaped = match &self.config.overlong {
            None => scores,
            Some(shaping) => {
                let penalties: Vec<f64> = response_lengths(batch)
                    .iter()
                    .map(|&len| overlong_penalty(len, shaping))
                    .collect();
                if !penalties.is_empty() {
                    let n = penalties.len() as f64;
                    metrics.push(Metric::new(
                        "overlong_penalty_mean",
                        penalties.iter().sum::<f64>() / n,
                    ));
                    metrics.push(Metric::new(
                        "overlong_frac",
                        penalties.iter().filter(|&&p| p < 0.0).count() as f64 / n,
                    ));
                }
                scores.iter().zip(&penalties).map(|(s, p)| s + p).collect()
            }
        };
        let seq_adv = group_normalized_advantages(&shaped, ids, true, GRPO_EPS);
        broadcast_to_tokens(&seq_adv, batch.mask, batch.seq_len, advantages);
        returns.copy_from_slice(advantages);
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

    /// DAPO's dynamic-sampling filter on one group's scores: refuse a group of two or more
    /// whose scores are all equal (all advantages 0); keep a group of one, as verl does.
    fn keep_group(&self, rewards: &[f32]) -> Result<bool, PluginError> {
        let varies = group_scores_vary(NAME, rewards)?;
        Ok(varies || !self.config.dynamic_sampling)
    }
}

#[cfg(test)]
mod tests {
    use drover_plugin_api::testing::{self, metric, outcome_rollout, run_advantages, run_loss};

    use super::*;

    fn make(json: &str) -> Result<Dapo, PluginError> {
        testing::instance(json)
    }

    #[test]
    fn defaults_are_the_verl_recipes_and_bad_params_name_the_key() {
        let d = make("{}").expect("defaults are valid");
        assert_eq!(d.config, DapoConfig::default());
        let d = make(r#"{"max_response_len": 16, "overlong_buffer_len": 4}"#).expect("valid");
        assert_eq!(
            d.config.overlong,
            Some(OverlongShaping {
                max_response_len: 16.0,
                buffer_len: 4.0,
                penalty_factor: 1.0
            })
        );
        testing::assert_params_refused::<Dapo>(&[
            (r#"{"clip_ratio_c": 1.0}"#, "clip_ratio_c"),
            (r#"{"max_response_len": 16}"#, "overlong_buffer_len"),
            (r#"{"max_response_len": 0.5}"#, "max_response_len"),
            (
                r#"{"overlong_penalty_factor": -1}"#,
                "overlong_penalty_factor",
            ),
            (r#"{"clip_ratio_low": 1.5}"#, "clip_ratio_low"),
            (r#"{"dynamic_sampling": 1}"#, "dynamic_sampling"),
        ]);
        let e = make(r#"{"max_response_len": 16}"#).expect_err("default buffer too long");
        assert!(e.message().contains("4096"), "{e}");
    }

    /// L_max 20, L_cache 4: no penalty up to 16 tokens, then −¼ per token, −1 at 20.
    #[test]
    fn overlong_penalty_by_hand() {
        let s = OverlongShaping {
            max_response_len: 20.0,
            buffer_len: 4.0,
            penalty_factor: 1.0,
        };
        for (len, p) in [
            (0.0, 0.0),
            (10.0, 0.0),
            (16.0, 0.0),
            (17.0, -0.25),
            (18.0, -0.5),
            (20.0, -1.0),
        ] {
            assert_eq!(overlong_penalty(len, &s), p, "len {len}");
        }
        let half = OverlongShaping {
            penalty_factor: 0.5,
            ..s
        };
        assert_eq!(overlong_penalty(18.0, &half), -0.25);
    }

    /// T = 6, L_max 6, L_cache 2 (penalty from 5 tokens on). Group 0: (6 tokens, r 1),
    /// (3 tokens, r 1), (5 tokens, r 0) → shaped [0, 1, −0.5], mean 1/6, unbiased std
    /// sqrt(7/12); group 1: (2 tokens, r 1), (4 tokens, r 1) → no penalty, all equal → 0.
    #[test]
    fn advantages_by_hand_with_overlong_shaping() {
        let lens = [6usize, 3, 5, 2, 4];
        let rew = [1.0f32, 1.0, 0.0, 1.0, 1.0];
        let t = 6;
        let mut mask = vec![0.0f32; 5 * t];
        let mut rewards = vec![0.0f32; 5 * t];
        for (b, (&len, &r)) in lens.iter().zip(&rew).enumerate() {
            mask[b * t..b * t + len].fill(1.0);
            rewards[b * t + len - 1] = r;
            if len < t {
                rewards[b * t + len] = 9.0; // garbage in padding is ignored
            }
        }
        let ids = [0u32, 0, 0, 1, 1];
        let batch = outcome_rollout(t, &mask, &rewards, &ids);
        let mut d = make(r#"{"max_response_len": 6, "overlong_buffer_len": 2}"#).expect("valid");
        let (adv, mut ret, m) = run_advantages(&mut d, &batch).expect("runs");
        let std = (7.0f64 / 12.0).sqrt();
        let seq = [-1.0 / 6.0, 5.0 / 6.0, -2.0 / 3.0, 0.0, 0.0].map(|c| c / (std + 1e-6));
        for b in 0..5 {
            for k in 0..t {
                let e = if k < lens[b] { seq[b] } else { 0.0 };
                let got = f64::from(adv[b * t + k]);
                assert!((got - e).abs() < 1e-6, "seq {b} step {k}: {got} vs {e}");
            }
        }
        assert_eq!(ret, adv);
        assert_eq!(metric(&m, "score_mean"), Some(0.8));
        // Raw scores: group 0 [1, 1, 0] mixed, group 1 [1, 1] uniform.
        assert_eq!(metric(&m, "uniform_group_frac"), Some(0.5));
        assert_eq!(metric(&m, "overlong_frac"), Some(0.4));
        assert!((metric(&m, "overlong_penalty_mean").expect("reported") + 0.3).abs() < 1e-12);
        // Without shaping group 0 is [1, 1, 0]: a different advantage for sequence 0.
        let mut plain = make("{}").expect("defaults");
        let mut adv2 = vec![0.0f32; 5 * t];
        AlgorithmImpl::compute_advantages(&mut plain, &batch, &mut adv2, &mut ret).expect("runs");
        let a0 = (1.0 / 3.0) / ((1.0f64 / 3.0).sqrt() + 1e-6);
        assert!((f64::from(adv2[0]) - a0).abs() < 1e-6, "{adv2:?}");
    }

    #[test]
    fn keep_group_drops_all_equal_groups_only() {
        let d = make("{}").expect("defaults");
        assert!(!d.keep_group(&[0.0, 0.0, 0.0, 0.0]).expect("all 0"));
        assert!(!d.keep_group(&[1.0, 1.0, 1.0, 1.0]).expect("all 1"));
        assert!(d.keep_group(&[0.0, 1.0, 0.0, 0.0]).expect("mixed"));
        assert!(d
            .keep_group(&[1.0, 1.0, 1.0, 0.5])
            .expect("mixed, non-binary"));
        assert!(d
            .keep_group(&[1.0])
            .expect("a group of one is kept, as verl"));
        let e = d.keep_group(&[1.0, f32::NAN]).expect_err("NaN");
        assert!(e.message().contains("rewards"), "{e}");
        let off = make(r#"{"dynamic_sampling": false}"#).expect("valid");
        assert!(off
            .keep_group(&[0.0, 0.0, 0.0])
            .expect("off keeps everything"));
        assert!(off.keep_group(&[1.0, 1.0]).expect("off keeps everything"));
    }

    /// Token-mean over 5 valid tokens (the 6th is padding), ε_low 0.2, ε_high 0.28, c 10:
    /// (ρ, A) = (1.25, 1): unclipped −1.25, ∂ −1.25; (1.3, 1): clipped at 1.28 → −1.28, ∂ 0;
    /// (0.7, −1): clipped at 0.8 → 0.8, ∂ 0; (12, −1): 12 capped by the dual clip at 10, ∂ 0;
    /// (5, −1): 5, ∂ 5. Each times ⅕.
    #[test]
    fn loss_by_hand_clip_higher_and_dual_clip() {
        let mut d = make("{}").expect("defaults");
        let ratios = [1.25f32, 1.3, 0.7, 12.0, 5.0, 1.0];
        let logp_old = [-1.0f32; 6];
        let logp_new: Vec<f32> = ratios.iter().map(|r| r.ln() - 1.0).collect();
        let adv = [1.0f32, 1.0, -1.0, -1.0, -1.0, 30.0];
        let entropy = [0.5f32, 0.7, 0.9, 1.1, 1.3, 8.0];
        let mut mb = Minibatch::new();
        mb.logp_new = &logp_new;
        mb.logp_old = &logp_old;
        mb.advantages = &adv;
        mb.entropy_new = &entropy;
        mb.token_weights = &[1.0, 1.0, 1.0, 1.0, 1.0, 0.0];
        mb.seq_index = &[0, 0, 0, 1, 1, 1];
        mb.num_sequences = 2;
        let (o, m) = run_loss(&mut d, &mb).expect("runs");
        assert_eq!(o.d_value, vec![0.0; 6], "no critic");
        let expect_loss = [-1.25, -1.28, 0.8, 10.0, 5.0, 0.0].map(|x| x / 5.0);
        let expect_d = [-1.25, 0.0, 0.0, 0.0, 5.0, 0.0].map(|x| x / 5.0);
        for i in 0..6 {
            assert!(
                (f64::from(o.loss[i]) - expect_loss[i]).abs() < 1e-5,
                "{:?}",
                o.loss
            );
            assert!(
                (f64::from(o.d_logp[i]) - expect_d[i]).abs() < 1e-5,
                "{:?}",
                o.d_logp
            );
        }
        let pl = (-1.25 - 1.28 + 0.8 + 10.0 + 5.0) / 5.0;
        assert!((metric(&m, "policy_loss").expect("reported") - pl).abs() < 1e-5);
        assert!((metric(&m, "entropy").expect("reported") - 0.9).abs() < 1e-6);
        assert!((metric(&m, "clip_frac").expect("reported") - 0.4).abs() < 1e-9);
        assert!((metric(&m, "clip_frac_lower").expect("reported") - 0.2).abs() < 1e-9);
        assert!(metric(&m, "approx_kl").expect("reported") > 0.0);
    }

    #[test]
    fn passes_drovers_plugin_harness() {
        testing::check_algorithm::<Dapo>("{}").assert_passed();
        testing::check_algorithm::<Dapo>(
            r#"{"max_response_len": 12, "overlong_buffer_len": 4, "ent_coef": 0.01, "dynamic_sampling": false}"#,
        )
        .assert_passed();
    }

    /// Finite differences of Σ loss wrt logp_new and H with clip-higher, the dual clip and an
    /// entropy bonus, ratios spread so every branch is taken.
    #[test]
    fn derivatives_match_finite_differences() {
        let data = testing::RandomMinibatch::new(13, 5, 8, 1)
            .logp(0.8)
            .advantages_per_sequence(&[1.2, -0.8, 0.4, -1.5, 0.9])
            .entropy();
        let (m, mb) = (data.len(), data.view());
        let mut d = make(r#"{"clip_ratio_c": 1.5, "ent_coef": 0.1}"#).expect("valid");
        let r = testing::check_loss_derivatives(&mut d, &mb, 1e-3, 1e-5, 1e-2).expect("runs");
        assert!(r.mismatches.is_empty(), "{:#?}", r.mismatches);
        assert!(r.checked >= 2 * m - 10, "{r:?}");
        // The dual clip must act on some token here, or the check would not cover it.
        let (o, metrics) = run_loss(&mut d, &mb).expect("runs");
        assert_eq!(o.d_value, vec![0.0; m], "no critic");
        assert!(metric(&metrics, "clip_frac_lower").expect("reported") > 0.0);
    }
}
