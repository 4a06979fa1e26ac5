//! Knapsack RL's parameters, per-prompt success rates and `AlgorithmImpl`: GRPO's advantage and
//! loss unchanged, and after each iteration the next batch's group sizes from [`allocate`].

use std::collections::BTreeMap;

use drover_plugin_api::{
    llm::{clipped_policy_loss, sequence_scores, PolicyLossParams, PolicyLossSettings},
    metadata, state, AlgorithmImpl, IterationControl, IterationInfo, LossOutputs, Metric,
    Minibatch, ParamSpec, Params, PluginError, PluginInfo, Rollout, StateFns,
};

use crate::allocate::{allocate, Bounds};

const NAME: &str = "knapsack";

/// GRPO's shared keys, defaults and docs, listed after the allocation's bounds.
const PARAMS: PolicyLossParams = PolicyLossParams::GRPO;

/// `n_max` when the params leave it at 0: this many times the run's `group_size`.
const AUTO_N_MAX_FACTOR: u32 = 4;

/// Version of the checkpointed state (`state::to_json` envelope, format `knapsack`): the rates
/// as `[prompt id, f64::to_bits]` pairs, in prompt order.
const STATE_VERSION: u32 = 1;

/// Prompt ids travel as `f32`, exact below 2^24.
const MAX_EXACT_PROMPT_ID: f32 = 16_777_216.0;

/// Knapsack RL's hyper-parameters: GRPO's (verl defaults, the same keys as the `grpo` plugin)
/// and the allocation's bounds. The total budget and `group_size` are the host's.
#[derive(Debug, Clone, PartialEq)]
pub struct KnapsackConfig {
    /// GRPO's advantage switch and token loss, read from the same keys as the `grpo` plugin.
    pub grpo: PolicyLossSettings,
    /// The fewest responses a seen prompt gets (the paper's `min_n`).
    pub n_min: u32,
    /// The most responses the knapsack gives a prompt; `None`: 4 × the run's `group_size`
    /// (at least `n_min`).
    pub n_max: Option<u32>,
}

impl Default for KnapsackConfig {
    fn default() -> Self {
        Self {
            grpo: PolicyLossSettings::default(),
            n_min: 2,
            n_max: None,
        }
    }
}

impl KnapsackConfig {
    fn from_params(p: &Params) -> Result<Self, PluginError> {
        let grpo = PARAMS.read(p)?;
        let count = |key: &str| -> Result<u32, PluginError> {
            let v = p.i64(key)?;
            u32::try_from(v).map_err(|_| {
                PluginError::invalid_params(
                    key,
                    format!("must be between 0 and {}, got {v}", u32::MAX),
                )
            })
        };
        let n_min = count("n_min")?;
        let n_max = match count("n_max")? {
            0 => None,
            n if n < n_min => {
                return Err(PluginError::invalid_params(
                    "n_max",
                    format!("must be at least n_min ({n_min}), or 0 for {AUTO_N_MAX_FACTOR} × group_size; got {n}"),
                ))
            }
            n => Some(n),
        };
        Ok(Self { grpo, n_min, n_max })
    }

    /// The allocation's bounds for a batch whose default group size is `group_size`.
    fn bounds(&self, group_size: u32) -> Bounds {
        let n_max = self
            .n_max
            .unwrap_or_else(|| group_size.saturating_mul(AUTO_N_MAX_FACTOR));
        Bounds {
            n_min: self.n_min,
            n_max: n_max.max(self.n_min),
            group_size,
        }
    }
}

/// The Knapsack RL algorithm instance: its config and each prompt's latest success rate.
#[derive(Debug, Clone)]
pub struct Knapsack {
    config: KnapsackConfig,
    /// Dataset index → mean score of its responses in the latest batch that held it, clamped
    /// to [0, 1]. Saved in checkpoints (interface 1.3), so a resumed run allocates as an
    /// uninterrupted one would.
    rates: BTreeMap<u32, f64>,
}

impl Knapsack {
    /// An instance with `config` and no prompt seen yet.
    pub fn with_config(config: KnapsackConfig) -> Self {
        Self {
            config,
            rates: BTreeMap::new(),
        }
    }

    /// The success rate recorded for dataset prompt `prompt_id`, if it has been seen.
    pub fn success_rate(&self, prompt_id: u32) -> Option<f64> {
        self.rates.get(&prompt_id).copied()
    }

    /// The rates as checkpoint bytes (interface 1.3 `save_state`).
    fn save_state(&self) -> Result<Vec<u8>, PluginError> {
        let rates: Vec<(u32, u64)> = self.rates.iter().map(|(&id, &p)| (id, p.to_bits())).collect();
        state::to_json(NAME, STATE_VERSION, &rates)
    }

    /// Replaces the rates with those of checkpoint `bytes`; refuses them whole (recording
    /// nothing) when they are not a version-1 Knapsack state of valid rates.
    fn load_state(&mut self, bytes: &[u8]) -> Result<(), PluginError> {
        let saved: Vec<(u32, u64)> = state::from_json(NAME, STATE_VERSION, bytes)?;
        let mut rates = BTreeMap::new();
        for (id, bits) in saved {
            let p = f64::from_bits(bits);
            if !(0.0..=1.0).contains(&p) {
                return Err(PluginError::invalid_input(format!(
                    "{NAME} state: prompt {id} has success rate {p}, expected one in [0, 1]"
                )));
            }
            rates.insert(id, p);
        }
        self.rates = rates;
        Ok(())
    }

    /// Records each prompt's mean score in `batch` (those with a `prompt_id`), over the
    /// policy's own responses: expert (teacher-forced, `is_expert`) ones say nothing of its
    /// success rate. The whole column is checked before anything is recorded.
    fn record_visits(&mut self, batch: &Rollout<'_>) -> Result<(), PluginError> {
        let Some(ids) = batch.metadata(metadata::PROMPT_ID) else {
            return Ok(());
        };
        let experts = batch.metadata(metadata::IS_EXPERT);
        let scores = sequence_scores(batch);
        let mut visits: BTreeMap<u32, (f64, u32)> = BTreeMap::new();
        for (b, (&id, &score)) in ids.iter().zip(&scores).enumerate() {
            if !((0.0..MAX_EXACT_PROMPT_ID).contains(&id) && id.fract() == 0.0) {
                return Err(PluginError::invalid_input(format!(
                    "{NAME}: metadata `{}` of sequence {b} is {id}: expected a dataset index (an integer from 0 to 2^24)",
                    metadata::PROMPT_ID
                )));
            }
            if experts.and_then(|e| e.get(b)).is_some_and(|&e| e > 0.0) {
                continue;
            }
            let v = visits.entry(id as u32).or_insert((0.0, 0));
            v.0 += score;
            v.1 += 1;
        }
        for (id, (sum, n)) in visits {
            // Scores are 0/1 outcomes; anything else (shaped rewards) is read as a rate.
            self.rates.insert(id, (sum / f64::from(n)).clamp(0.0, 1.0));
        }
        Ok(())
    }
}

impl AlgorithmImpl for Knapsack {
    const PLUGIN_STATE: Option<StateFns<Self>> = Some(StateFns {
        save: Self::save_state,
        load: Self::load_state,
    });

    fn info() -> PluginInfo {
        let info = PluginInfo::new(
            NAME,
            env!("CARGO_PKG_VERSION"),
            "Knapsack RL: per-prompt rollout budgets from a knapsack over each prompt's last success rate, then GRPO (verl conventions)",
        )
        .param(
            ParamSpec::int(
                "n_min",
                2,
                "Fewest responses a seen prompt gets (Knapsack RL min_n, 2): the knapsack's lower bound for 0 < p < 1, and what p = 0 and p = 1 prompts get unless budget is left over.",
            )
            .range(1.0, f64::from(u32::MAX)),
        )
        .param(
            ParamSpec::int(
                "n_max",
                0,
                "Most responses the knapsack gives one prompt (at least n_min); 0: 4 × the run's group_size. Budget the knapsack cannot place goes to p = 0 prompts, else to all.",
            )
            .range(0.0, f64::from(u32::MAX)),
        );
        PARAMS.declare(info)
    }

    fn new(params: &Params, _seed: u64) -> Result<Self, PluginError> {
        // Nothing here is random: the allocation is deterministic, sampling is the host's.
        Ok(Self::with_config(KnapsackConfig::from_params(params)?))
    }

    fn compute_advantages(
        &mut self,
        batch: &Rollout<'_>,
        advantages: &mut [f32],
        returns: &mut [f32],
    ) -> Result<Vec<Metric>, PluginError> {
        let mut metrics = self
            .config
            .grpo
            .group_advantages(NAME, batch, advantages, returns)?;
        self.record_visits(batch)?;
        if batch.metadata(metadata::PROMPT_ID).is_some() {
            metrics.push(Metric::new(
                "knapsack_known_prompts",
                self.rates.len() as f64,
            ));
        }
        Ok(metrics)
    }

    fn loss(
        &mut self,
        mb: &Minibatch<'_>,
        out: &mut LossOutputs<'_>,
    ) -> Result<Vec<Metric>, PluginError> {
        let stats = clipped_policy_loss(NAME, &self.config.grpo.loss, mb, out)?;
        Ok(stats.map(|s| s.metrics()).unwrap_or_default())
    }

    fn on_iteration(&mut self, info: &IterationInfo<'_>) -> Result<IterationControl, PluginError> {
        // No dataset (or an older host): every prompt keeps the run's group_size.
        let Some(next) = info.next_prompts().filter(|n| !n.prompt_ids.is_empty()) else {
            return Ok(IterationControl::default());
        };
        let rates: Vec<Option<f64>> = next
            .prompt_ids
            .iter()
            .map(|id| self.success_rate(*id))
            .collect();
        let a = allocate(&rates, next.budget, self.config.bounds(next.group_size));
        let count = rates.len() as f64;
        let unseen = rates.iter().filter(|p| p.is_none()).count() as f64;
        let metrics = vec![
            Metric::new("knapsack_value", a.objective),
            Metric::new(
                "knapsack_max_group",
                f64::from(a.sizes.iter().copied().max().unwrap_or(0)),
            ),
            Metric::new(
                "knapsack_min_group",
                f64::from(a.sizes.iter().copied().min().unwrap_or(0)),
            ),
            Metric::new("knapsack_effective_frac", a.effective as f64 / count),
            Metric::new("knapsack_unseen_frac", unseen / count),
            Metric::new("knapsack_leftover", a.leftover as f64),
        ];
        Ok(IterationControl {
            group_sizes: a.sizes.into(),
            metrics: metrics.into(),
            ..IterationControl::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use drover_plugin_api::{
        llm::group_normalized_advantages,
        testing::{self, metric, outcome_rollout, run_advantages, run_loss},
        NextPrompts, PluginErrorKind, RSlice,
    };

    use super::*;

    fn make(json: &str) -> Result<Knapsack, PluginError> {
        testing::instance(json)
    }

    /// `on_iteration` as the host calls it, with `next` among the iteration's metrics.
    fn iterate(k: &mut Knapsack, next: Option<&NextPrompts>) -> IterationControl {
        let mut metrics = vec![Metric::new("accuracy", 0.5)];
        metrics.extend(next.map(NextPrompts::to_metrics).unwrap_or_default());
        let info = IterationInfo {
            iteration: 1,
            global_step: 64,
            metrics: RSlice::from_slice(&metrics),
        };
        AlgorithmImpl::on_iteration(k, &info).expect("on_iteration runs")
    }

    /// One-step responses (the reward is the score), the `i`-th with prompt `prompts[i]` in
    /// group `groups[i]`; runs the advantage stage and returns the advantages.
    fn visit(k: &mut Knapsack, scores: &[f32], groups: &[u32], prompts: &[f32]) -> Vec<f32> {
        let mask = vec![1.0f32; scores.len()];
        let mut batch = outcome_rollout(1, &mask, scores, groups);
        batch.metadata = vec![(metadata::PROMPT_ID.to_owned(), prompts)];
        run_advantages(k, &batch).expect("advantages").0
    }

    #[test]
    fn defaults_and_bad_params_name_the_key() {
        let k = make("{}").expect("defaults are valid");
        assert_eq!(k.config, KnapsackConfig::default());
        assert_eq!(
            k.config.bounds(8),
            Bounds {
                n_min: 2,
                n_max: 32,
                group_size: 8
            }
        );
        // A small group_size never puts n_max below n_min.
        let k = make(r#"{"n_min": 6}"#).expect("valid");
        assert_eq!(k.config.bounds(1).n_max, 6);
        let k = make(r#"{"n_min": 3, "n_max": 3, "clip_ratio_high": 0.28}"#).expect("valid");
        assert_eq!((k.config.n_min, k.config.n_max), (3, Some(3)));
        assert_eq!(k.config.grpo.loss.clip.high, 0.28);
        testing::assert_params_refused::<Knapsack>(&[
            (r#"{"n_max": 3, "n_min": 4}"#, "n_max"),
            (r#"{"n_min": 0}"#, "n_min"),
            (r#"{"n_max": -1}"#, "n_max"),
            (r#"{"n_min": 2.5}"#, "n_min"),
            (r#"{"loss_agg_mode": "mean"}"#, "loss_agg_mode"),
            (r#"{"clip_ratio_c": 1.0}"#, "clip_ratio_c"),
        ]);
    }

    /// GRPO's hand-computed case (plugins/grpo): prompt 0 [1, 0, 0] → A = [1.1547, −0.5774,
    /// −0.5774] (mean ⅓, std sqrt(⅓)); prompt 1 [1, 1, 1] → 0; plus a group of one (A = its own
    /// score, verl's convention). With and without the prompt_id column.
    #[test]
    fn advantages_are_grpos() {
        let scores = [1.0f32, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0];
        let groups = [0u32, 0, 0, 1, 1, 1, 2];
        let (hi, lo) = (
            (2.0 / 3.0) / (1.0f64 / 3.0).sqrt(),
            -(1.0 / 3.0) / (1.0f64 / 3.0).sqrt(),
        );
        let expect = [hi, lo, lo, 0.0, 0.0, 0.0, 1.0];
        let mut k = make("{}").expect("defaults");
        let with_ids = visit(
            &mut k,
            &scores,
            &groups,
            &[5.0, 5.0, 5.0, 9.0, 9.0, 9.0, 2.0],
        );
        let mask = [1.0f32; 7];
        let (without, ret, m) =
            run_advantages(&mut k, &outcome_rollout(1, &mask, &scores, &groups)).expect("runs");
        for adv in [&with_ids, &without] {
            for (a, e) in adv.iter().zip(expect) {
                assert!((f64::from(*a) - e).abs() < 1e-5, "{adv:?}");
            }
        }
        assert_eq!(ret, without);
        assert_eq!(metric(&m, "uniform_group_frac"), Some(0.5));
        // Dr. GRPO's switch reaches the same helper.
        let mut k = make(r#"{"norm_adv_by_std": false}"#).expect("valid");
        let adv = visit(&mut k, &scores, &groups, &[0.0; 7]);
        let s: Vec<f64> = scores.iter().map(|&x| f64::from(x)).collect();
        let e = group_normalized_advantages(&s, &groups, false, 0.0);
        assert!(
            adv.iter()
                .zip(&e)
                .all(|(a, e)| (f64::from(*a) - e).abs() < 1e-6),
            "{adv:?}"
        );
    }

    #[test]
    fn loss_is_grpos() {
        let data = testing::RandomMinibatch::new(5, 4, 6, 1)
            .logp(0.5)
            .advantages_per_sequence(&[1.0, -0.5, 0.3, -1.2]);
        let mb = data.view();
        let json = r#"{"clip_ratio_high": 0.28, "loss_agg_mode": "seq-mean-token-mean"}"#;
        let mut k = make(json).expect("valid");
        let (o, m) = run_loss(&mut k, &mb).expect("runs");
        let cfg = k.config.grpo.loss;
        let (expect, _) =
            testing::with_loss_outputs(mb.len(), |out| clipped_policy_loss("grpo", &cfg, &mb, out));
        assert_eq!(o.loss, expect.loss);
        assert_eq!(o.d_logp, expect.d_logp);
        assert!(o.d_logp.iter().any(|&d| d != 0.0));
        assert!(metric(&m, "clip_frac").is_some());
    }

    /// Prompt 10: [1, 0, 0] (p = ⅓, the value peak); prompt 11: [1, 1, 1, 0] (p = ¾); prompt 12:
    /// [1, 1] (p = 1). Next batch: those three and unseen prompt 13, budget 16, group_size 4:
    /// minimums 2 + 2 + 2 + 4 = 10, and the 6 left go mostly to prompt 10.
    #[test]
    fn on_iteration_favours_the_prompt_nearest_the_value_peak() {
        let mut k = make("{}").expect("defaults");
        visit(
            &mut k,
            &[1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 0.0, 1.0, 1.0],
            &[0, 0, 0, 1, 1, 1, 1, 2, 2],
            &[10.0, 10.0, 10.0, 11.0, 11.0, 11.0, 11.0, 12.0, 12.0],
        );
        assert_eq!(k.success_rate(11), Some(0.75));
        let next = NextPrompts {
            prompt_ids: vec![10, 11, 12, 13],
            budget: 16,
            group_size: 4,
        };
        let c = iterate(&mut k, Some(&next));
        let sizes: Vec<u32> = c.group_sizes.to_vec();
        assert_eq!(sizes.iter().sum::<u32>(), 16, "{sizes:?}");
        assert!(sizes[0] > sizes[1], "{sizes:?}");
        assert_eq!((sizes[2], sizes[3]), (2, 4), "{sizes:?}");
        assert!(!c.stop);
        let m = c.metrics.to_vec();
        assert_eq!(metric(&m, "knapsack_max_group"), Some(f64::from(sizes[0])));
        assert_eq!(metric(&m, "knapsack_effective_frac"), Some(0.5));
        assert_eq!(metric(&m, "knapsack_unseen_frac"), Some(0.25));
        assert!(metric(&m, "knapsack_value").is_some_and(|v| v > 0.0));
        // Reordering the prompts reorders the sizes.
        let reversed = NextPrompts {
            prompt_ids: vec![13, 12, 11, 10],
            ..next
        };
        let mut back = iterate(&mut k, Some(&reversed)).group_sizes.to_vec();
        back.reverse();
        assert_eq!(back, sizes);
    }

    #[test]
    fn without_next_prompts_the_sizes_are_the_hosts() {
        let mut k = make("{}").expect("defaults");
        visit(&mut k, &[1.0, 0.0], &[0, 0], &[3.0, 3.0]);
        assert_eq!(iterate(&mut k, None), IterationControl::default());
        let empty = NextPrompts {
            prompt_ids: vec![],
            budget: 8,
            group_size: 4,
        };
        assert!(iterate(&mut k, Some(&empty)).group_sizes.is_empty());
    }

    /// A prompt's rate is its latest visit's, over all its responses in that batch (two groups
    /// of the same prompt count together); other prompts keep theirs.
    #[test]
    fn the_latest_visit_sets_the_rate() {
        let mut k = make("{}").expect("defaults");
        visit(
            &mut k,
            &[1.0, 0.0, 1.0, 1.0],
            &[0, 0, 1, 1],
            &[4.0, 4.0, 6.0, 6.0],
        );
        assert_eq!(
            (k.success_rate(4), k.success_rate(6)),
            (Some(0.5), Some(1.0))
        );
        visit(
            &mut k,
            &[1.0, 1.0, 1.0, 0.0],
            &[0, 0, 1, 1],
            &[4.0, 4.0, 4.0, 4.0],
        );
        assert_eq!(
            (k.success_rate(4), k.success_rate(6)),
            (Some(0.75), Some(1.0))
        );
        // Shaped rewards outside [0, 1] are clamped to a rate.
        visit(&mut k, &[3.0, 2.0], &[0, 0], &[4.0, 4.0]);
        assert_eq!(k.success_rate(4), Some(1.0));
        assert_eq!(k.success_rate(5), None);
    }

    #[test]
    fn expert_responses_do_not_count_in_the_rate() {
        let mut k = make("{}").expect("defaults");
        let (mask, scores) = ([1.0f32; 4], [0.0f32, 1.0, 1.0, 1.0]);
        let mut batch = outcome_rollout(1, &mask, &scores, &[0, 0, 0, 0]);
        // Prompt 3: one wrong and one right sampled response, then two (right) expert answers.
        let (ids, experts) = ([3.0f32; 4], [0.0f32, 0.0, 1.0, 1.0]);
        batch.metadata = vec![
            (metadata::PROMPT_ID.to_owned(), &ids[..]),
            (metadata::IS_EXPERT.to_owned(), &experts[..]),
        ];
        run_advantages(&mut k, &batch).expect("advantages");
        assert_eq!(k.success_rate(3), Some(0.5));
    }

    #[test]
    fn a_bad_prompt_id_is_a_clear_error_and_records_nothing() {
        let mut k = make("{}").expect("defaults");
        for bad in [-1.0f32, 2.5, f32::NAN, 3.0e7] {
            let (mask, scores) = ([1.0f32; 2], [1.0f32, 0.0]);
            let mut batch = outcome_rollout(1, &mask, &scores, &[0, 0]);
            let ids = [7.0, bad];
            batch.metadata = vec![(metadata::PROMPT_ID.to_owned(), &ids)];
            let e = run_advantages(&mut k, &batch).expect_err("bad id");
            assert_eq!(e.kind(), Some(PluginErrorKind::InvalidInput), "{e}");
            assert!(e.message().contains("`prompt_id` of sequence 1"), "{e}");
            assert_eq!(k.success_rate(7), None);
        }
    }

    /// The rates survive a checkpoint exactly (⅓ included), into a fresh instance whose
    /// allocation is then the saver's; foreign or damaged bytes are refused and change nothing.
    #[test]
    fn the_rates_round_trip_through_the_checkpoint_state() {
        let mut k = make("{}").expect("defaults");
        visit(
            &mut k,
            &[1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 0.0],
            &[0, 0, 0, 1, 1, 1, 1],
            &[10.0, 10.0, 10.0, 11.0, 11.0, 11.0, 11.0],
        );
        let bytes = k.save_state().expect("saves");
        let mut fresh = make("{}").expect("defaults");
        fresh.load_state(&bytes).expect("loads");
        assert_eq!(fresh.success_rate(10).map(f64::to_bits), Some((1.0f64 / 3.0).to_bits()));
        assert_eq!(fresh.success_rate(11), Some(0.75));
        let next = NextPrompts { prompt_ids: vec![10, 11, 12], budget: 12, group_size: 4 };
        assert_eq!(iterate(&mut fresh, Some(&next)), iterate(&mut k, Some(&next)));

        let mut other = make("{}").expect("defaults");
        visit(&mut other, &[1.0, 0.0], &[0, 0], &[3.0, 3.0]);
        let bad_rate = format!(r#"{{"format":"knapsack","version":1,"state":[[4,{}]]}}"#, 2.0f64.to_bits());
        for (bytes, expected) in [
            (&br#"{"format":"canon","version":1,"state":0}"#[..], "the bytes hold a `canon` state version 1"),
            (&br#"{"format":"knapsack","version":2,"state":[]}"#[..], "the bytes hold a `knapsack` state version 2"),
            (bad_rate.as_bytes(), "prompt 4 has success rate 2, expected one in [0, 1]"),
        ] {
            let e = other.load_state(bytes).expect_err("refused");
            assert!(e.message().contains(expected), "{e}");
            assert_eq!(other.success_rate(3), Some(0.5), "a refused state changes nothing");
        }
    }

    #[test]
    fn passes_drovers_plugin_harness() {
        testing::check_algorithm::<Knapsack>("{}").assert_passed();
        testing::check_algorithm::<Knapsack>(
            r#"{"n_min": 3, "n_max": 12, "norm_adv_by_std": false, "loss_agg_mode": "seq-mean-token-sum", "ent_coef": 0.01, "clip_ratio_c": 3.0}"#,
        )
        .assert_passed();
    }
}
