//! CHORD's parameters and its `AlgorithmImpl`: GRPO advantages over each group's on-policy
//! responses, then `(1−μ)`·verl's clipped token loss on those plus `μ`·SFT-φ on the expert
//! responses, with μ stepped by `on_iteration`.
//!
//! The loss stage tells expert tokens by their sequence: the advantage stage records which
//! rollout sequences are experts (the `is_expert` metadata column), and the loss looks each
//! minibatch sequence up by its rollout index (interface 1.3's minibatch context). The
//! advantage of an expert token is 0; `returns` are GRPO's (the advantages), as CHORD learns no
//! value.

use drover_plugin_api::{
    state, StateFns,
    llm::{
        clipped_policy_loss, group_ids, group_normalized_advantages, sequence_scores,
        PolicyLossConfig, PolicyLossDefaults, PolicyLossKey as K, PolicyLossParams, GRPO_EPS,
    },
    AlgorithmImpl, IterationControl, IterationInfo, LossOutputs, Metric, Minibatch, ParamSpec,
    Params, PluginError, PluginInfo, Rollout,
};

use crate::chord::{sft_token_loss, MuSchedule};

const NAME: &str = "chord";

/// The on-policy GRPO term's keys (no KL, no `C`), listed after μ's schedule and the SFT term's.
const PARAMS: PolicyLossParams = PolicyLossParams {
    keys: &[K::ClipRatio, K::ClipRatioHigh, K::LossAggMode, K::NormAdvByStd, K::EntCoef],
    defaults: PolicyLossDefaults::GRPO,
    docs: &[
        (K::ClipRatio, "Clip range ε of the on-policy ratio (ε_low, and ε_high unless clip_ratio_high is set); 0.2 in Trinity-RFT's CHORD."),
        (K::LossAggMode, "Aggregation of the on-policy GRPO term over on-policy tokens: token-mean (Trinity-RFT and verl), seq-mean-token-mean, seq-mean-token-sum or seq-mean-token-sum-norm. The SFT term is always the token mean over expert tokens."),
        (K::NormAdvByStd, "Divide group-centred scores of the on-policy responses by their unbiased std + 1e-6 (GRPO); false: r − mean."),
        (K::EntCoef, "Entropy bonus on the on-policy tokens (0 in Trinity-RFT's CHORD)."),
    ],
};

/// The metadata column flagging expert responses (1) among on-policy ones (0).
pub const IS_EXPERT: &str = "is_expert";

/// CHORD's hyper-parameters. Learning rate, epochs, minibatches, group size and the number of
/// expert responses per group (`run.expert_per_group`) are the host's.
#[derive(Debug, Clone, PartialEq)]
pub struct ChordConfig {
    /// Divide group-centred scores by the group's std (false: Dr. GRPO's `r − mean`).
    pub norm_adv_by_std: bool,
    /// The on-policy token loss: clip range, aggregation, entropy bonus (no KL).
    pub loss: PolicyLossConfig,
    /// μ over training.
    pub schedule: MuSchedule,
    /// Weight expert tokens by φ(p) = p(1−p) (CHORD-φ); false: plain SFT (`−logp`).
    pub use_phi: bool,
}

impl ChordConfig {
    fn from_params(p: &Params) -> Result<Self, PluginError> {
        let iterations = |key: &str| -> Result<u64, PluginError> {
            let v = p.i64(key)?;
            u64::try_from(v)
                .map_err(|_| PluginError::invalid_params(key, format!("must be ≥ 0, got {v}")))
        };
        let grpo = PARAMS.read(p)?;
        Ok(Self {
            norm_adv_by_std: grpo.norm_adv_by_std,
            loss: grpo.loss,
            schedule: MuSchedule {
                warmup: iterations("mu_warmup_iterations")?,
                decay: iterations("mu_decay_iterations")?,
                peak: p.f64("mu_peak")?,
                valley: p.f64("mu_valley")?,
            },
            use_phi: p.bool("sft_phi")?,
        })
    }
}

/// The CHORD algorithm instance: its config, the μ of the current iteration, and which
/// sequences of the last rollout batch are experts.
#[derive(Debug, Clone)]
pub struct Chord {
    config: ChordConfig,
    mu: f64,
    /// `is_expert` of each sequence of the batch the last `compute_advantages` saw, for the
    /// loss to look up by rollout index. Not checkpointed: every iteration's loss follows its
    /// own advantage stage.
    experts: Vec<bool>,
}

impl Chord {
    /// An instance with `config`, μ at step 0 of its schedule.
    pub fn with_config(config: ChordConfig) -> Self {
        let mu = config.schedule.at(0);
        Self {
            config,
            mu,
            experts: Vec::new(),
        }
    }

    /// Whether each sequence of `mb` is an expert response, by its rollout index.
    fn expert_sequences(&self, mb: &Minibatch<'_>) -> Result<Vec<bool>, PluginError> {
        mb.per_sequence(NAME, &self.experts)
    }

    /// The μ the next loss calls use.
    pub fn mu(&self) -> f64 {
        self.mu
    }
}

/// The batch's `is_expert` column, or an error telling how to get one.
fn expert_column<'a>(batch: &Rollout<'a>) -> Result<&'a [f32], PluginError> {
    batch.metadata(IS_EXPERT).ok_or_else(|| {
        PluginError::invalid_input(format!(
            "{NAME} needs expert responses, flagged by the `{IS_EXPERT}` metadata column, but \
             the batch has none: set run.expert_per_group = 1 (or more, below run.group_size) \
             in the sweep, on a sequence task"
        ))
    })
}

impl Chord {
    /// μ as checkpoint bytes (interface 1.3 `save_state`): it is set by `on_iteration` from the
    /// last completed iteration, so a fresh instance would train the first resumed iteration
    /// with the schedule's start instead. Format `chord` version 1: `f64::to_bits` of μ.
    fn save_state(&self) -> Result<Vec<u8>, PluginError> {
        state::f64_to_json(NAME, 1, self.mu)
    }

    /// Restores μ from checkpoint `bytes`; refuses a non-finite one.
    fn load_state(&mut self, bytes: &[u8]) -> Result<(), PluginError> {
        self.mu = state::finite_f64_from_json(NAME, 1, bytes)?;
        Ok(())
    }
}

impl AlgorithmImpl for Chord {
    const PLUGIN_STATE: Option<StateFns<Self>> = Some(StateFns {
        save: Self::save_state,
        load: Self::load_state,
    });

    fn info() -> PluginInfo {
        let info = PluginInfo::new(
            NAME,
            env!("CARGO_PKG_VERSION"),
            "CHORD: (1−μ)·GRPO on on-policy responses + μ·φ-weighted SFT on expert responses, μ warmup then cosine decay (arXiv 2508.11408, Trinity-RFT mix_chord); needs run.expert_per_group ≥ 1",
        )
        .param(
            ParamSpec::float(
                "mu_peak",
                0.1,
                "μ at the end of the warmup (Trinity-RFT mu_peak, default 0.1).",
            )
            .range(0.0, 1.0),
        )
        .param(
            ParamSpec::float(
                "mu_valley",
                0.1,
                "μ after the cosine decay (Trinity-RFT mu_valley, default 0.1).",
            )
            .range(0.0, 1.0),
        )
        .param(
            ParamSpec::int(
                "mu_warmup_iterations",
                0,
                "Iterations of linear warmup of μ from 0 to mu_peak (Trinity-RFT mu_warmup_steps, a step being one drover iteration).",
            )
            .min(0.0),
        )
        .param(
            ParamSpec::int(
                "mu_decay_iterations",
                0,
                "Iterations of cosine decay of μ from mu_peak to mu_valley after the warmup (Trinity-RFT mu_decay_steps); 0: mu_valley right after the warmup.",
            )
            .min(0.0),
        )
        .param(ParamSpec::bool(
            "sft_phi",
            true,
            "Weight each expert token's SFT term by φ(p) = p(1−p), detached (CHORD-φ, Trinity-RFT sft_phi); false: plain SFT −log p.",
        ));
        PARAMS.declare(info)
    }

    fn new(params: &Params, _seed: u64) -> Result<Self, PluginError> {
        // CHORD draws no random numbers.
        Ok(Self::with_config(ChordConfig::from_params(params)?))
    }

    fn compute_advantages(
        &mut self,
        batch: &Rollout<'_>,
        advantages: &mut [f32],
        returns: &mut [f32],
    ) -> Result<Vec<Metric>, PluginError> {
        let experts = expert_column(batch)?;
        let ids = group_ids(NAME, batch)?;
        let scores = sequence_scores(batch);
        // Group baselines over the on-policy responses only: the experts (always right) would
        // otherwise lift every group's mean.
        let on_policy: Vec<usize> = (0..batch.num_sequences)
            .filter(|&b| experts[b] <= 0.0)
            .collect();
        let sub_scores: Vec<f64> = on_policy.iter().map(|&b| scores[b]).collect();
        let sub_ids: Vec<u32> = on_policy
            .iter()
            .map(|&b| ids.get(b).copied().unwrap_or(u32::MAX - b as u32))
            .collect();
        let sub_adv = group_normalized_advantages(
            &sub_scores,
            &sub_ids,
            self.config.norm_adv_by_std,
            GRPO_EPS,
        );
        let mut seq_adv = vec![0.0f64; batch.num_sequences];
        for (&b, &a) in on_policy.iter().zip(&sub_adv) {
            seq_adv[b] = a;
        }
        let t_len = batch.seq_len;
        for (b, &adv) in seq_adv.iter().enumerate() {
            for i in b * t_len..(b + 1) * t_len {
                advantages[i] = if batch.mask[i] > 0.0 {
                    (adv * f64::from(batch.mask[i])) as f32
                } else {
                    0.0
                };
                returns[i] = advantages[i];
            }
        }
        self.experts = experts.iter().map(|&e| e > 0.0).collect();
        let mut metrics = vec![Metric::new("chord_mu", self.mu)];
        if !sub_scores.is_empty() {
            metrics.push(Metric::new(
                "score_mean",
                sub_scores.iter().sum::<f64>() / sub_scores.len() as f64,
            ));
        }
        metrics.push(Metric::new(
            "expert_frac",
            (batch.num_sequences - on_policy.len()) as f64 / batch.num_sequences.max(1) as f64,
        ));
        Ok(metrics)
    }

    fn loss(
        &mut self,
        mb: &Minibatch<'_>,
        out: &mut LossOutputs<'_>,
    ) -> Result<Vec<Metric>, PluginError> {
        let experts = self.expert_sequences(mb)?;
        let expert = |i: usize| experts[mb.seq_index[i] as usize];
        let m = mb.len();
        // On-policy term: verl's clipped loss over the on-policy tokens only (expert tokens get
        // weight 0, so they are outside its aggregation and its outputs stay 0 there).
        let on_weights: Vec<f32> = (0..m)
            .map(|i| if expert(i) { 0.0 } else { mb.token_weights[i] })
            .collect();
        let mut on_mb = mb.clone();
        on_mb.token_weights = &on_weights;
        let stats = clipped_policy_loss(NAME, &self.config.loss, &on_mb, out)?;
        let mu = self.mu;
        for buf in [&mut *out.loss, &mut *out.d_logp, &mut *out.d_entropy] {
            for x in buf.iter_mut() {
                *x = (f64::from(*x) * (1.0 - mu)) as f32;
            }
        }
        // SFT term: the token mean over the expert tokens of the minibatch (Trinity-RFT's
        // `masked_mean` with use_token_level_loss).
        let expert_total: f64 = (0..m)
            .filter(|&i| expert(i) && mb.token_weights[i] > 0.0)
            .map(|i| f64::from(mb.token_weights[i]))
            .sum();
        let mut sft_value = 0.0;
        if expert_total > 0.0 {
            for i in (0..m).filter(|&i| expert(i) && mb.token_weights[i] > 0.0) {
                let w = f64::from(mb.token_weights[i]) / expert_total;
                let (value, d, primitive) =
                    sft_token_loss(f64::from(mb.logp_new[i]), self.config.use_phi);
                sft_value += w * value;
                out.loss[i] = (mu * w * primitive) as f32;
                out.d_logp[i] = (mu * w * d) as f32;
            }
        }
        let mut metrics = stats.map(|s| s.metrics()).unwrap_or_default();
        if expert_total > 0.0 {
            metrics.push(Metric::new("sft_loss", sft_value));
        }
        metrics.push(Metric::new("chord_mu", mu));
        Ok(metrics)
    }

    fn on_iteration(&mut self, info: &IterationInfo<'_>) -> Result<IterationControl, PluginError> {
        // `info.iteration` iterations are done: the next one trains with μ(iteration).
        self.mu = self.config.schedule.at(info.iteration);
        Ok(IterationControl::default())
    }
}

#[cfg(test)]
mod tests {
    use drover_plugin_api::{
        testing::{self, CheckOptions, Subject},
        CounterRng, RSlice,
    };

    use drover_plugin_api::llm::LossAggMode;

    use super::*;

    fn make(json: &str) -> Result<Chord, PluginError> {
        let params = Params::parse(&Chord::info().params, json)?;
        Chord::new(&params, 0)
    }

    fn metric(ms: &[Metric], name: &str) -> Option<f64> {
        ms.iter().find(|m| m.name.as_str() == name).map(|m| m.value)
    }

    struct Outs {
        loss: Vec<f32>,
        d_logp: Vec<f32>,
        d_entropy: Vec<f32>,
        metrics: Vec<Metric>,
    }

    fn run_loss(alg: &mut Chord, mb: &Minibatch<'_>) -> Outs {
        let m = mb.len();
        let (mut loss, mut d_logp, mut d_value, mut d_entropy) =
            (vec![0.0; m], vec![0.0; m], vec![0.0; m], vec![0.0; m]);
        let mut out = LossOutputs {
            loss: &mut loss,
            d_logp: &mut d_logp,
            d_value: &mut d_value,
            d_entropy: &mut d_entropy,
        };
        let metrics = Subject::loss(alg, mb, &mut out).expect("loss runs");
        assert_eq!(d_value, vec![0.0; m], "CHORD learns no value");
        Outs {
            loss,
            d_logp,
            d_entropy,
            metrics,
        }
    }

    #[test]
    fn defaults_are_trinitys_and_bad_params_name_the_key() {
        let c = make("{}").expect("defaults are valid");
        assert_eq!(
            c.config.schedule,
            MuSchedule {
                warmup: 0,
                decay: 0,
                peak: 0.1,
                valley: 0.1
            }
        );
        assert!(c.config.use_phi && c.config.norm_adv_by_std);
        assert_eq!(c.config.loss.agg, LossAggMode::TokenMean);
        assert_eq!(c.mu(), 0.1);
        testing::assert_params_refused::<Chord>(&[
            (r#"{"mu_peak": 1.5}"#, "mu_peak"),
            (r#"{"mu_valley": -0.1}"#, "mu_valley"),
            (r#"{"mu_warmup_iterations": -1}"#, "mu_warmup_iterations"),
            (r#"{"loss_agg_mode": "mean"}"#, "loss_agg_mode"),
        ]);
    }

    #[test]
    fn missing_expert_metadata_tells_to_set_expert_per_group() {
        let mut c = make("{}").expect("defaults");
        let mask = [1.0f32; 4];
        let mut batch = Rollout::new(4, 1);
        batch.mask = &mask;
        batch.rewards = &mask;
        batch.group_ids = &[0, 0, 0, 0];
        let e = Subject::compute_advantages(&mut c, &batch, &mut [0.0; 4], &mut [0.0; 4])
            .expect_err("no is_expert column");
        assert!(
            e.message().contains("`is_expert`") && e.message().contains("run.expert_per_group"),
            "{e}"
        );
        // The same through the harness: its batches carry no expert flags.
        let report = testing::check_algorithm::<Chord>("{}");
        assert!(!report.passed());
        assert!(
            report.to_string().contains("run.expert_per_group"),
            "{report}"
        );
    }

    /// Two prompts × 4 responses of 2 steps, the last of each group an expert (reward 1).
    /// Group 0 on-policy scores [1, 0, 0]: mean ⅓, unbiased std sqrt(⅓) → A = [1.1547, −0.5774,
    /// −0.5774] (with the expert in the group it would be mean ½: different); group 1 [0, 0, 0]
    /// → 0. Experts get A = 0; `returns` are the advantages (GRPO's); the expert flags are
    /// recorded per rollout sequence for the loss.
    #[test]
    fn advantages_by_hand_exclude_the_experts_from_the_baseline() {
        let mut c = make(r#"{"mu_peak": 0.3, "mu_valley": 0.3}"#).expect("valid");
        let mask = [1.0f32; 16];
        let rewards = [
            0., 1., 0., 0., 0., 0., 0., 1., 0., 0., 0., 0., 0., 0., 0., 1.,
        ];
        let experts = [0.0f32, 0., 0., 1., 0., 0., 0., 1.];
        let mut batch = Rollout::new(8, 2);
        batch.mask = &mask;
        batch.rewards = &rewards;
        batch.group_ids = &[0, 0, 0, 0, 1, 1, 1, 1];
        batch.metadata = vec![(IS_EXPERT.to_owned(), &experts[..])];
        let (mut adv, mut ret) = ([0.0f32; 16], [0.0f32; 16]);
        let m = Subject::compute_advantages(&mut c, &batch, &mut adv, &mut ret).expect("runs");
        let s = (1.0f64 / 3.0).sqrt();
        let (hi, lo) = ((2.0 / 3.0) / (s + 1e-6), -(1.0 / 3.0) / (s + 1e-6));
        let expect = [
            hi, hi, lo, lo, lo, lo, 0., 0., 0., 0., 0., 0., 0., 0., 0., 0.,
        ];
        for (a, e) in adv.iter().zip(expect) {
            assert!((f64::from(*a) - e).abs() < 1e-5, "{adv:?}");
        }
        assert!((hi - 1.154_699_4).abs() < 1e-5, "{hi}");
        assert_eq!(ret, adv);
        assert_eq!(c.experts, [false, false, false, true, false, false, false, true]);
        assert_eq!(metric(&m, "chord_mu"), Some(0.3));
        assert_eq!(metric(&m, "expert_frac"), Some(0.25));
        assert!((metric(&m, "score_mean").expect("reported") - 1.0 / 6.0).abs() < 1e-12);
    }

    /// μ = 0.25. On-policy sequence 0: ρ = 1.1 with A = 1 (surrogate −1.1, d −1.1) and ρ = 0.5
    /// with A = −1 (clipped: 0.8, d 0), token mean over those 2 tokens (w ½), times 1 − μ:
    /// losses [−0.4125, 0.3], d [−0.4125, 0]. Expert sequence 1: p = 0.5 and 0.9, φ = 0.25 and
    /// 0.09, token mean over 2 expert tokens (w ½), times μ: d = [−0.03125, −0.01125]; the
    /// metric sft_loss = ½(0.25·ln 2 + 0.09·(−ln 0.9)) = 0.0913846…. Token 4 is padding.
    /// Minibatch sequence 1 is the expert by its rollout index (rollout sequence 0 of a batch
    /// whose advantage stage flagged it), not by its position.
    #[test]
    fn loss_by_hand_mixes_grpo_and_sft_phi() {
        let mut c = make(r#"{"mu_peak": 0.25, "mu_valley": 0.25}"#).expect("valid");
        let logp_new = [
            1.1f32.ln() - 1.0,
            0.5f32.ln() - 1.0,
            0.5f32.ln(),
            0.9f32.ln(),
            3.0,
        ];
        let logp_old = [-1.0f32, -1.0, -0.2, -0.2, 9.0];
        let adv = [1.0f32, -1.0, 0.0, 0.0, 5.0];
        let entropy = [0.4f32, 0.6, 2.0, 2.0, 9.0];
        let mut mb = Minibatch::new();
        mb.logp_new = &logp_new;
        mb.logp_old = &logp_old;
        mb.advantages = &adv;
        mb.entropy_new = &entropy;
        mb.token_weights = &[1.0, 1.0, 1.0, 1.0, 0.0];
        mb.seq_index = &[0, 0, 1, 1, 1];
        mb.num_sequences = 2;
        mb.rollout_index = Some(&[2, 0]);
        let flagged = vec![true, false, false];
        c.experts = flagged.clone();
        let o = run_loss(&mut c, &mb);
        let expect_d = [-0.4125, 0.0, -0.03125, -0.01125, 0.0];
        for (i, e) in expect_d.iter().enumerate() {
            assert!((f64::from(o.d_logp[i]) - e).abs() < 1e-6, "{:?}", o.d_logp);
        }
        assert!((f64::from(o.loss[0]) + 0.4125).abs() < 1e-6, "{:?}", o.loss);
        assert!((f64::from(o.loss[1]) - 0.3).abs() < 1e-6, "{:?}", o.loss);
        assert_eq!((o.loss[4], o.d_logp[4]), (0.0, 0.0));
        assert_eq!(o.d_entropy, [0.0; 5]);
        let sft = 0.5 * (0.25 * 2.0f64.ln() - 0.09 * 0.9f64.ln());
        assert!((sft - 0.091_384_6).abs() < 1e-6);
        assert!((metric(&o.metrics, "sft_loss").expect("reported") - sft).abs() < 1e-6);
        // The GRPO part's own diagnostics, over on-policy tokens: (−1.1 + 0.8)/2, entropy ½.
        assert!((metric(&o.metrics, "policy_loss").expect("reported") + 0.15).abs() < 1e-6);
        assert!((metric(&o.metrics, "entropy").expect("reported") - 0.5).abs() < 1e-6);
        assert!((metric(&o.metrics, "clip_frac").expect("reported") - 0.5).abs() < 1e-9);
        assert!(metric(&o.metrics, "approx_kl").is_some());
        assert_eq!(metric(&o.metrics, "chord_mu"), Some(0.25));
        // μ = 0 is GRPO on the on-policy tokens alone; μ = 1 is SFT-φ alone.
        let mut grpo = make(r#"{"mu_peak": 0.0, "mu_valley": 0.0}"#).expect("valid");
        grpo.experts = flagged.clone();
        let g = run_loss(&mut grpo, &mb);
        assert!((f64::from(g.d_logp[0]) + 0.55).abs() < 1e-6 && g.d_logp[2] == 0.0);
        let mut sft_only = make(r#"{"mu_peak": 1.0, "mu_valley": 1.0}"#).expect("valid");
        sft_only.experts = flagged.clone();
        let s = run_loss(&mut sft_only, &mb);
        assert!(s.d_logp[0] == 0.0 && (f64::from(s.d_logp[2]) + 0.125).abs() < 1e-6);
        // Plain SFT: d = −μ·½ per expert token.
        let mut plain =
            make(r#"{"mu_peak": 0.25, "mu_valley": 0.25, "sft_phi": false}"#).expect("valid");
        plain.experts = flagged.clone();
        let p = run_loss(&mut plain, &mb);
        assert!(
            (f64::from(p.d_logp[3]) + 0.125).abs() < 1e-6,
            "{:?}",
            p.d_logp
        );
    }

    /// μ is set by `on_iteration`: a fresh instance (a resumed run) would train its first
    /// iteration with μ(0) without the checkpointed state.
    #[test]
    fn mu_survives_a_checkpoint_into_a_fresh_instance() {
        let json = r#"{"mu_peak": 0.9, "mu_valley": 0.1, "mu_warmup_iterations": 2, "mu_decay_iterations": 4}"#;
        let mut c = make(json).expect("valid");
        let metrics: [Metric; 0] = [];
        let info = IterationInfo { iteration: 3, global_step: 192, metrics: RSlice::from_slice(&metrics) };
        AlgorithmImpl::on_iteration(&mut c, &info).expect("runs");
        let mut fresh = make(json).expect("valid");
        assert_ne!(fresh.mu().to_bits(), c.mu().to_bits());
        fresh.load_state(&c.save_state().expect("saves")).expect("loads");
        assert_eq!(fresh.mu().to_bits(), c.mu().to_bits());
        let nan = format!(r#"{{"format":"chord","version":1,"state":{}}}"#, f64::NAN.to_bits());
        let e = fresh.load_state(nan.as_bytes()).expect_err("not finite");
        assert!(e.message().contains("the `chord` state holds NaN"), "{e}");
    }

    #[test]
    fn mu_steps_with_on_iteration_and_is_reported() {
        let mut c = make(
            r#"{"mu_peak": 0.9, "mu_valley": 0.1, "mu_warmup_iterations": 2, "mu_decay_iterations": 4}"#,
        )
        .expect("valid");
        let metrics: [Metric; 0] = [];
        let mut seen = vec![c.mu()];
        for iteration in 1..=7 {
            let info = IterationInfo {
                iteration,
                global_step: iteration * 64,
                metrics: RSlice::from_slice(&metrics),
            };
            AlgorithmImpl::on_iteration(&mut c, &info).expect("runs");
            seen.push(c.mu());
        }
        let expect = [0.0, 0.45, 0.9, 0.782_842_712, 0.5, 0.217_157_288, 0.1, 0.1];
        for (mu, e) in seen.iter().zip(expect) {
            assert!((mu - e).abs() < 1e-8, "{seen:?}");
        }
        let mask = [1.0f32; 2];
        let mut batch = Rollout::new(2, 1);
        batch.mask = &mask;
        batch.rewards = &mask;
        batch.group_ids = &[0, 0];
        batch.metadata = vec![(IS_EXPERT.to_owned(), &[0.0f32, 1.0][..])];
        let m = Subject::compute_advantages(&mut c, &batch, &mut [0.0; 2], &mut [0.0; 2])
            .expect("runs");
        assert_eq!(metric(&m, "chord_mu"), Some(0.1));
    }

    #[test]
    fn passes_drovers_plugin_harness_with_expert_flags() {
        for json in [
            r#"{"mu_peak": 0.3, "mu_valley": 0.3}"#,
            r#"{"sft_phi": false, "ent_coef": 0.01, "loss_agg_mode": "seq-mean-token-mean"}"#,
        ] {
            let report = testing::run_checks(
                |seed| testing::seeded_instance::<Chord>(json, seed),
                &CheckOptions { experts: true, ..CheckOptions::default() },
            );
            report.assert_passed();
        }
    }

    /// Finite differences of Σ loss wrt logp_new over a minibatch of on-policy and expert
    /// tokens, for CHORD-φ and plain SFT, with and without clipping in play.
    #[test]
    fn derivatives_match_finite_differences() {
        let mut rng = CounterRng::new(5);
        let m = 48;
        let mut draw = |lo: f64, hi: f64| (lo + (hi - lo) * rng.next_f64()) as f32;
        let logp_old: Vec<f32> = (0..m).map(|_| draw(-3.0, -0.1)).collect();
        let logp_new: Vec<f32> = logp_old
            .iter()
            .map(|&l| (l + draw(-0.5, 0.5)).min(-0.01))
            .collect();
        let advantages: Vec<f32> = (0..m)
            .map(|i| [1.2f32, -0.8, 0.0, 0.4, -1.5, 0.0][i / 8])
            .collect();
        // Minibatch sequences 2 and 5 are experts: rollout sequences 3 and 0 under the reversed
        // rollout index.
        let rollout_index = [5u32, 4, 3, 2, 1, 0];
        let experts = vec![true, false, false, true, false, false];
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
        mb.num_sequences = 6;
        mb.rollout_index = Some(&rollout_index);
        for json in [
            r#"{"mu_peak": 0.4, "mu_valley": 0.4, "ent_coef": 0.05}"#,
            r#"{"mu_peak": 0.4, "mu_valley": 0.4, "sft_phi": false}"#,
        ] {
            let mut c = make(json).expect("valid");
            c.experts = experts.clone();
            let r = testing::check_loss_derivatives(&mut c, &mb, 1e-3, 1e-5, 1e-2).expect("runs");
            assert!(r.mismatches.is_empty(), "{json}: {:#?}", r.mismatches);
            assert!(r.checked >= m, "{json}: {r:?}");
            let o = run_loss(&mut c, &mb);
            // The expert tokens carry the SFT gradient (negative: raise their log-probability).
            assert!(
                (16..23).all(|i| o.d_logp[i] < 0.0),
                "{:?}",
                &o.d_logp[16..24]
            );
        }
    }
}
