//! CANON's parameters and its `AlgorithmImpl`: halves-conditioned advantages with μ from a
//! schedule stepped by `on_iteration`, then verl's PPO clipped token loss.

use drover_plugin_api::{
    state, StateFns,
    llm::{
        broadcast_to_tokens, clipped_policy_loss, group_ids, sequence_scores, LossAggMode,
        PolicyLossConfig, PolicyLossDefaults, PolicyLossKey as K, PolicyLossParams,
    },
    AlgorithmImpl, IterationControl, IterationInfo, LossOutputs, Metric, Minibatch, ParamSpec,
    Params, PluginError, PluginInfo, Rollout,
};

use crate::canon::{canon_advantages, MuSchedule, SplitMetric};

const NAME: &str = "canon";

/// The shared policy-loss keys CANON takes. Its defaults differ from GRPO's: the advantage
/// already carries Dr. GRPO's 1/max_len, so the loss is a plain token sum
/// (`seq-mean-token-sum-norm` with C = 1); no dual clip, no KL, no entropy bonus.
const PARAMS: PolicyLossParams = PolicyLossParams {
    keys: &[K::ClipRatio, K::ClipRatioHigh, K::LossAggMode, K::LossScaleFactor],
    defaults: PolicyLossDefaults {
        loss_agg_mode: LossAggMode::SeqMeanTokenSumNorm,
        loss_scale_factor: Some(1.0),
        ..PolicyLossDefaults::GRPO
    },
    docs: &[
        (
            K::ClipRatio,
            "Clip range ε of the probability ratio (ε_low, and ε_high unless clip_ratio_high is set); 0.2 as verl, on which CANON builds.",
        ),
        (
            K::ClipRatioHigh,
            "Upper clip range ε_high for clip-higher (DAPO: 0.28); null: equal to clip_ratio.",
        ),
        (
            K::LossAggMode,
            "Loss aggregation (verl agg_loss). Default seq-mean-token-sum-norm with loss_scale_factor 1: a token sum, as the advantage already carries Dr. GRPO's 1/max_len.",
        ),
        (
            K::LossScaleFactor,
            "Divisor C of seq-mean-token-sum-norm; 1 because the advantage is already divided by max_len (Dr. GRPO's constant moved into the advantage).",
        ),
    ],
};

/// CANON's hyper-parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct CanonConfig {
    /// What groups are split by.
    pub metric: SplitMetric,
    /// μ per iteration.
    pub schedule: MuSchedule,
    /// The advantage's divisor; `None`: the batch's longest response (valid tokens).
    pub max_len: Option<f64>,
    /// The token loss.
    pub loss: PolicyLossConfig,
}

impl CanonConfig {
    fn from_params(p: &Params) -> Result<Self, PluginError> {
        let metric = match p.str("metric")? {
            "entropy" => SplitMetric::Entropy,
            "length" => SplitMetric::Length,
            other => {
                return Err(PluginError::invalid_params(
                    "metric",
                    format!("expected \"entropy\" or \"length\", got {other:?}"),
                ))
            }
        };
        let (start, end) = (p.f64("mu_start")?, p.f64("mu_end")?);
        let iters = p.i64("schedule_iterations")?;
        let iterations = u64::try_from(iters).map_err(|_| {
            PluginError::invalid_params("schedule_iterations", format!("must be ≥ 1, got {iters}"))
        })?;
        let schedule = match p.str("mu_schedule")? {
            "constant" => MuSchedule::Constant { start },
            "linear" => MuSchedule::Linear {
                start,
                end,
                iterations,
            },
            "cosine" => MuSchedule::Cosine {
                start,
                end,
                iterations,
            },
            other => {
                return Err(PluginError::invalid_params(
                    "mu_schedule",
                    format!("expected \"constant\", \"linear\" or \"cosine\", got {other:?}"),
                ))
            }
        };
        let positive = |key: &str| -> Result<Option<f64>, PluginError> {
            match p.opt_f64(key)? {
                Some(v) if v <= 0.0 => Err(PluginError::invalid_params(
                    key,
                    format!("must be positive, got {v}"),
                )),
                v => Ok(v),
            }
        };
        Ok(Self {
            metric,
            schedule,
            max_len: positive("max_len")?,
            loss: PARAMS.read(p)?.loss,
        })
    }
}

/// The CANON algorithm instance: its config and the current μ.
#[derive(Debug, Clone)]
pub struct Canon {
    config: CanonConfig,
    mu: f64,
}

impl Canon {
    /// An instance with `config`, μ at its schedule's start.
    pub fn with_config(config: CanonConfig) -> Self {
        let mu = config.schedule.at(0);
        Self { config, mu }
    }

    /// The μ the next advantage stage uses.
    pub fn mu(&self) -> f64 {
        self.mu
    }

    /// Each response's split metric.
    fn metric(&self, batch: &Rollout<'_>) -> Result<Vec<f64>, PluginError> {
        let t_len = batch.seq_len;
        let valid = |b: usize| (b * t_len..(b + 1) * t_len).filter(|&i| batch.mask[i] > 0.0);
        match self.config.metric {
            SplitMetric::Entropy => {
                let h = Rollout::require(NAME, "entropy_old", batch.entropy_old)?;
                Ok((0..batch.num_sequences)
                    .map(|b| {
                        let (s, n) =
                            valid(b).fold((0.0, 0usize), |(s, n), i| (s + f64::from(h[i]), n + 1));
                        if n == 0 {
                            0.0
                        } else {
                            s / n as f64
                        }
                    })
                    .collect())
            }
            SplitMetric::Length => Ok(match batch.metadata("length") {
                // The host's own count when it sends one (it may differ from the mask, e.g.
                // for responses cut at the budget), else the valid tokens.
                Some(len) => len.iter().map(|&l| f64::from(l)).collect(),
                None => (0..batch.num_sequences)
                    .map(|b| valid(b).count() as f64)
                    .collect(),
            }),
        }
    }
}

impl Canon {
    /// μ as checkpoint bytes (interface 1.3 `save_state`): it is set by `on_iteration` from the
    /// last completed iteration, so a fresh instance would train the first resumed iteration
    /// with the schedule's start instead. Format `canon` version 1: `f64::to_bits` of μ.
    fn save_state(&self) -> Result<Vec<u8>, PluginError> {
        state::f64_to_json(NAME, 1, self.mu)
    }

    /// Restores μ from checkpoint `bytes`; refuses a non-finite one.
    fn load_state(&mut self, bytes: &[u8]) -> Result<(), PluginError> {
        self.mu = state::finite_f64_from_json(NAME, 1, bytes)?;
        Ok(())
    }
}

impl AlgorithmImpl for Canon {
    const PLUGIN_STATE: Option<StateFns<Self>> = Some(StateFns {
        save: Self::save_state,
        load: Self::load_state,
    });

    fn info() -> PluginInfo {
        PARAMS.declare(PluginInfo::new(
            NAME,
            env!("CARGO_PKG_VERSION"),
            "CANON: advantages conditioned on entropy or length halves of each group, μ schedule, PPO clipped token loss (arXiv 2509.23962)",
        )
        .param(ParamSpec::string(
            "metric",
            "entropy",
            "Sort key that splits each group into halves: entropy (mean old token entropy) or length (CANON core_algos.py L369-463 uses both).",
        ))
        .param(ParamSpec::string(
            "mu_schedule",
            "constant",
            "How μ moves over training: constant (mu_start), linear or cosine anneal from mu_start to mu_end over schedule_iterations (CANON's schedule variants).",
        ))
        .param(
            ParamSpec::float(
                "mu_start",
                0.75,
                "μ, the weight of the comparison with the other half, at iteration 0; 0.5 is exactly Dr. GRPO (even groups). 0.75 is drover's choice favouring the cross-half term; the paper's value is unverified.",
            )
            .range(0.0, 1.0),
        )
        .param(
            ParamSpec::float(
                "mu_end",
                0.5,
                "μ reached after schedule_iterations by the linear and cosine schedules (drover's choice: back to Dr. GRPO).",
            )
            .range(0.0, 1.0),
        )
        .param(
            ParamSpec::int(
                "schedule_iterations",
                100,
                "Iterations over which linear and cosine schedules move μ from mu_start to mu_end; μ stays at mu_end after.",
            )
            .min(1.0),
        )
        .param(
            ParamSpec::optional_float(
                "max_len",
                "Divisor of the advantage (CANON's max_len, Dr. GRPO's constant); null: the longest response of the batch in valid tokens (not the padded T, so padding changes nothing).",
            )
            .min(0.0),
        ))
    }

    fn new(params: &Params, _seed: u64) -> Result<Self, PluginError> {
        let config = CanonConfig::from_params(params)?;
        Ok(Self::with_config(config))
    }

    fn compute_advantages(
        &mut self,
        batch: &Rollout<'_>,
        advantages: &mut [f32],
        returns: &mut [f32],
    ) -> Result<Vec<Metric>, PluginError> {
        let ids = group_ids(NAME, batch)?;
        let scores = sequence_scores(batch);
        let metric = self.metric(batch)?;
        // The longest response rather than the padded T: padding must not change advantages.
        let max_len = self.config.max_len.unwrap_or_else(|| {
            let t = batch.seq_len;
            (0..batch.num_sequences)
                .map(|b| {
                    batch.mask[b * t..(b + 1) * t]
                        .iter()
                        .filter(|&&m| m > 0.0)
                        .count()
                })
                .max()
                .unwrap_or(1)
                .max(1) as f64
        });
        let (seq_adv, gap) = canon_advantages(&scores, &metric, ids, self.mu, max_len);
        broadcast_to_tokens(&seq_adv, batch.mask, batch.seq_len, advantages);
        returns.copy_from_slice(advantages);
        let mut metrics = vec![Metric::new("canon_mu", self.mu)];
        if !scores.is_empty() {
            metrics.push(Metric::new(
                "score_mean",
                scores.iter().sum::<f64>() / scores.len() as f64,
            ));
        }
        if let Some(g) = gap {
            metrics.push(Metric::new("half_score_gap", g));
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

    fn on_iteration(&mut self, info: &IterationInfo<'_>) -> Result<IterationControl, PluginError> {
        self.mu = self.config.schedule.at(info.iteration);
        Ok(IterationControl {
            metrics: vec![Metric::new("canon_mu", self.mu)].into(),
            ..IterationControl::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use drover_plugin_api::{
        llm::group_normalized_advantages,
        testing::{self, metric, outcome_rollout, run_advantages, with_loss_outputs},
        CounterRng, RSlice,
    };

    use super::*;

    fn make(json: &str) -> Result<Canon, PluginError> {
        testing::instance(json)
    }

    fn close(a: &[f32], b: &[f64]) -> bool {
        a.len() == b.len()
            && a.iter()
                .zip(b)
                .all(|(&x, &y)| (f64::from(x) - y).abs() < 1e-6)
    }

    fn advantages(c: &mut Canon, batch: &Rollout<'_>) -> (Vec<f32>, Vec<Metric>) {
        let (adv, ret, m) = run_advantages(c, batch).expect("runs");
        assert_eq!(adv, ret);
        (adv, m)
    }

    fn iterate(c: &mut Canon, iteration: u64) -> IterationControl {
        let info = IterationInfo {
            iteration,
            global_step: 0,
            metrics: RSlice::from_slice(&[]),
        };
        AlgorithmImpl::on_iteration(c, &info).expect("runs")
    }

    #[test]
    fn defaults_and_bad_params_name_the_key() {
        let c = make("{}").expect("defaults are valid");
        assert_eq!(c.config.metric, SplitMetric::Entropy);
        assert_eq!(c.config.schedule, MuSchedule::Constant { start: 0.75 });
        assert_eq!(c.config.loss.agg, LossAggMode::SeqMeanTokenSumNorm);
        assert_eq!(c.config.loss.loss_scale_factor, Some(1.0));
        assert_eq!(c.mu(), 0.75);
        testing::assert_params_refused::<Canon>(&[
            (r#"{"metric": "perplexity"}"#, "metric"),
            (r#"{"mu_schedule": "step"}"#, "mu_schedule"),
            (r#"{"mu_start": 1.5}"#, "mu_start"),
            (r#"{"schedule_iterations": 0}"#, "schedule_iterations"),
            (r#"{"max_len": 0.0}"#, "max_len"),
            (r#"{"loss_scale_factor": 0.0}"#, "loss_scale_factor"),
            (r#"{"loss_agg_mode": "sum"}"#, "loss_agg_mode"),
        ]);
    }

    /// One group of 4, T = 2 (= max_len, the longest response), scores [1, 0, 1, 0], mean entropies [0.9, 0.1, 0.5, 0.3]
    /// → C⁻ = {1, 3} (mean 0), C⁺ = {2, 0} (mean 1). μ = 0.75:
    /// a correct answer (C⁺): [0.75·(1 − 0) + 0.25·(1 − 1)]/2 = 0.375;
    /// a wrong one (C⁻): [0.75·(0 − 1) + 0.25·(0 − 0)]/2 = −0.375 (Dr. GRPO would give ±0.25).
    /// A group of one (sequence 4, score 1) gets 1/2.
    #[test]
    fn entropy_halves_by_hand() {
        let mut c = make("{}").expect("defaults");
        let mask = [1.0f32; 10];
        let rewards = [0., 1., 0., 0., 0., 1., 0., 0., 0., 1.];
        let entropy = [0.8f32, 1.0, 0.1, 0.1, 0.4, 0.6, 0.2, 0.4, 5.0, 5.0];
        let ids = [3u32, 3, 3, 3, 8];
        let mut batch = outcome_rollout(2, &mask, &rewards, &ids);
        batch.entropy_old = &entropy;
        let (adv, m) = advantages(&mut c, &batch);
        let e = [
            0.375, 0.375, -0.375, -0.375, 0.375, 0.375, -0.375, -0.375, 0.5, 0.5,
        ];
        assert!(close(&adv, &e), "{adv:?}");
        assert_eq!(metric(&m, "canon_mu"), Some(0.75));
        assert_eq!(metric(&m, "half_score_gap"), Some(1.0));
        // Without entropies the entropy split is a clear error naming the buffer.
        batch.entropy_old = &[];
        let err = AlgorithmImpl::compute_advantages(&mut c, &batch, &mut [0.0; 10], &mut [0.0; 10])
            .expect_err("no entropy_old");
        assert!(err.to_string().contains("entropy_old"), "{err}");
    }

    /// One odd group of 3, lengths [3, 1, 2] from metadata, scores [1, 0, 0], max_len 4:
    /// C⁻ = {len 1} (mean 0), C⁺ = {len 2, len 3} (mean ½); μ = 0.75:
    /// len 3: [0.75·1 + 0.25·½]/4 = 0.21875; len 2: [0 + 0.25·(−½)]/4 = −0.03125;
    /// len 1: [0.75·(−½) + 0]/4 = −0.09375.
    #[test]
    fn length_halves_by_hand_from_metadata_or_mask() {
        let mut c = make(r#"{"metric": "length", "max_len": 4}"#).expect("valid");
        let mask = [1., 1., 1., 1., 0., 0., 1., 1., 0.];
        let rewards = [0., 0., 1., 0., 0., 0., 0., 0., 0.];
        let ids = [0u32, 0, 0];
        let lengths = [3.0f32, 1.0, 2.0];
        let mut batch = outcome_rollout(3, &mask, &rewards, &ids);
        batch.metadata = vec![("length".to_owned(), &lengths[..])];
        let (a, b, d) = (0.21875, -0.09375, -0.03125);
        let expect = [a, a, a, b, 0.0, 0.0, d, d, 0.0];
        let (adv, _) = advantages(&mut c, &batch);
        assert!(close(&adv, &expect), "{adv:?}");
        // The mask counts the same lengths.
        batch.metadata = Vec::new();
        let (adv, _) = advantages(&mut c, &batch);
        assert!(close(&adv, &expect), "{adv:?}");
        // Metadata wins over the mask: reversed lengths swap the halves.
        let reversed = [1.0f32, 3.0, 2.0];
        batch.metadata = vec![("length".to_owned(), &reversed[..])];
        let (adv, _) = advantages(&mut c, &batch);
        assert!(!close(&adv, &expect), "{adv:?}");
    }

    /// μ = ½ with even groups is Dr. GRPO: A·max_len = r − mean, and CANON's token-sum loss on
    /// it equals Dr. GRPO's seq-mean-token-sum-norm loss with C = max_len.
    #[test]
    fn mu_one_half_is_dr_grpo() {
        let mut rng = CounterRng::new(3);
        let (b, t) = (12usize, 5usize);
        let mut draw = |lo: f64, hi: f64| lo + (hi - lo) * rng.next_f64();
        let mask = vec![1.0f32; b * t];
        let mut rewards = vec![0.0f32; b * t];
        for s in 0..b {
            rewards[s * t + t - 1] = if draw(0.0, 1.0) < 0.5 { 1.0 } else { 0.0 };
        }
        let entropy: Vec<f32> = (0..b * t).map(|_| draw(0.1, 2.0) as f32).collect();
        let ids: Vec<u32> = (0..b as u32).map(|s| s / 4).collect();
        let mut batch = outcome_rollout(t, &mask, &rewards, &ids);
        batch.entropy_old = &entropy;
        let mut c = make(r#"{"mu_start": 0.5}"#).expect("valid");
        let (adv, _) = advantages(&mut c, &batch);
        let scores = sequence_scores(&batch);
        let dr = group_normalized_advantages(&scores, &ids, false, 0.0);
        assert!(dr.iter().any(|&a| a != 0.0), "{dr:?}");
        for s in 0..b {
            for k in 0..t {
                let x = f64::from(adv[s * t + k]) * t as f64;
                assert!((x - dr[s]).abs() < 1e-6, "{s}: {x} vs {}", dr[s]);
            }
        }
        // Loss: same tokens through CANON's loss and through Dr. GRPO's.
        let dr_tokens: Vec<f32> = (0..b * t).map(|i| dr[i / t] as f32).collect();
        let logp_old: Vec<f32> = (0..b * t).map(|_| draw(-2.0, -0.1) as f32).collect();
        let logp_new: Vec<f32> = logp_old
            .iter()
            .map(|&l| l + draw(-0.3, 0.3) as f32)
            .collect();
        let seq_index: Vec<u32> = (0..(b * t) as u32).map(|i| i / t as u32).collect();
        let mut mb = Minibatch::new();
        mb.logp_new = &logp_new;
        mb.logp_old = &logp_old;
        mb.advantages = &adv;
        mb.token_weights = &mask;
        mb.seq_index = &seq_index;
        mb.num_sequences = b;
        let run = |cfg: &PolicyLossConfig, mb: &Minibatch<'_>| {
            let (o, r) =
                with_loss_outputs(mb.len(), |out| clipped_policy_loss("test", cfg, mb, out));
            r.expect("runs");
            (o.loss, o.d_logp)
        };
        let (l1, d1) = run(&c.config.loss, &mb);
        let dr_cfg = PolicyLossConfig {
            loss_scale_factor: Some(t as f64),
            ..c.config.loss
        };
        let mut mb_dr = mb.clone();
        mb_dr.advantages = &dr_tokens;
        let (l2, d2) = run(&dr_cfg, &mb_dr);
        for i in 0..b * t {
            assert!(
                (l1[i] - l2[i]).abs() < 1e-6 && (d1[i] - d2[i]).abs() < 1e-6,
                "{i}"
            );
        }
        // μ = 0.75 is not Dr. GRPO on the same batch.
        let mut c = make("{}").expect("defaults");
        let (adv75, _) = advantages(&mut c, &batch);
        assert_ne!(adv75, adv);
    }

    #[test]
    fn mu_schedules_step_with_on_iteration_and_are_reported() {
        let mut c = make(r#"{"mu_schedule": "linear", "mu_start": 1.0, "mu_end": 0.5, "schedule_iterations": 4}"#)
            .expect("valid");
        assert_eq!(c.mu(), 1.0);
        let ctl = iterate(&mut c, 2);
        assert_eq!(c.mu(), 0.75);
        assert_eq!(ctl.metrics.as_slice(), &[Metric::new("canon_mu", 0.75)]);
        assert!(ctl.group_sizes.is_empty() && !ctl.stop);
        iterate(&mut c, 9);
        assert_eq!(c.mu(), 0.5);
        let mut c = make(r#"{"mu_schedule": "cosine", "mu_start": 1.0, "mu_end": 0.5, "schedule_iterations": 4}"#)
            .expect("valid");
        iterate(&mut c, 1);
        // 0.5 + 0.5·(1 + cos π/4)/2 = 0.926776…
        assert!((c.mu() - 0.926_776_695).abs() < 1e-8, "{}", c.mu());
        iterate(&mut c, 2);
        assert!((c.mu() - 0.75).abs() < 1e-12);
        iterate(&mut c, 4);
        assert!((c.mu() - 0.5).abs() < 1e-12);
        // The advantage stage uses the stepped μ.
        let mask = [1.0f32; 2];
        let rewards = [1.0f32, 0.0];
        let mut batch = outcome_rollout(1, &mask, &rewards, &[0, 0]);
        batch.entropy_old = &[0.2, 0.1];
        let (adv, m) = advantages(&mut c, &batch);
        assert_eq!(adv, [0.5, -0.5]);
        assert_eq!(metric(&m, "canon_mu"), Some(0.5));
        let mut constant = make("{}").expect("defaults");
        iterate(&mut constant, 50);
        assert_eq!(constant.mu(), 0.75);
    }

    /// μ is set by `on_iteration`: a fresh instance (a resumed run) would start the schedule
    /// over without the checkpointed state.
    #[test]
    fn mu_survives_a_checkpoint_into_a_fresh_instance() {
        let json = r#"{"mu_schedule": "linear", "mu_start": 1.0, "mu_end": 0.5, "schedule_iterations": 4}"#;
        let mut c = make(json).expect("valid");
        iterate(&mut c, 2);
        let mut fresh = make(json).expect("valid");
        assert_eq!(fresh.mu(), 1.0, "without the state the schedule starts over");
        fresh.load_state(&c.save_state().expect("saves")).expect("loads");
        assert_eq!(fresh.mu(), 0.75);
        let e = fresh
            .load_state(br#"{"format":"chord","version":1,"state":0}"#)
            .expect_err("another plugin's state");
        assert!(e.message().contains("the bytes hold a `chord` state"), "{e}");
        assert_eq!(fresh.mu(), 0.75, "a refused state changes nothing");
    }

    #[test]
    fn passes_drovers_plugin_harness() {
        testing::check_algorithm::<Canon>("{}").assert_passed();
        testing::check_algorithm::<Canon>(
            r#"{"metric": "length", "mu_schedule": "cosine", "loss_agg_mode": "token-mean", "clip_ratio_high": 0.28}"#,
        )
        .assert_passed();
    }

    #[test]
    fn derivatives_match_finite_differences() {
        let data = testing::RandomMinibatch::new(5, 5, 8, 1)
            .logp(0.5)
            .advantages_per_sequence(&[0.4, -0.3, 0.1, -0.5, 0.2]);
        let (m, mb) = (data.len(), data.view());
        for mode in LossAggMode::NAMES {
            let mut c = make(&format!(r#"{{"loss_agg_mode": "{mode}"}}"#)).expect("valid");
            let r = testing::check_loss_derivatives(&mut c, &mb, 1e-3, 1e-5, 1e-2).expect("runs");
            assert!(r.mismatches.is_empty(), "{mode}: {:#?}", r.mismatches);
            assert!(r.checked >= m - 10, "{mode}: {r:?}");
        }
    }
}
