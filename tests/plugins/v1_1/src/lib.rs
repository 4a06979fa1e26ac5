//! Test fixture: a plugin as built against drover plugin interface **1.1**, loaded by a newer
//! 1.x host (the 1.2 one of issue 13) in `plugins/host/tests/plugins.rs`, and usable in a real
//! job on the sequence tasks: it learns.
//!
//! Why this is a faithful 1.1 build although it compiles against today's api crate: a plugin
//! built against 1.1 differs from one built against 1.2 in exactly these ways.
//! 1. The version symbol says 1.1: recorded here through the macro's hidden
//!    `@interface_version` arm.
//! 2. Its `extension` entry knows the 1.1 table names. Interface 1.2 added no table, so the
//!    entry compiled here answers exactly the names a 1.1 build answers; it exports
//!    `drover.sequence_loss` because this fixture sets `SEQUENCE_LOSS`, with the 1.1 layout
//!    that `plugins/api/tests/v1_1_sequence_loss.layout` pins. A 1.2 host must accept that
//!    table from a plugin that records 1.1, which is why the fixture implements it (a tiny
//!    sequence-level clipped surrogate) rather than leaving it out as `v1_0` does.
//! 3. It does not know 1.2's inputs. Those are no ABI change: `IterationInfo::next_prompts`,
//!    `NextPrompts` and `INPUT_PREFIX` read host inputs that travel as ordinary metrics named
//!    `input.*`, and `metadata::PROMPT_ID` is a metadata column name. A 1.1 build has none of
//!    these helpers, and this fixture uses none: it never reads a `prompt_id` column, sees the
//!    `input.*` metrics only as unknown names among the rest, and its `on_iteration` returns
//!    empty `group_sizes` — in 1.1 "leave them unchanged", in 1.2 "the run's `group_size` for
//!    every prompt", the same thing.
//!
//! Everything else a host sees — the root module, the `Algorithm` vtable, the views — is frozen
//! for major 1 and pinned by `plugins/api/tests/frozen_layout.rs`, so a 1.1 build has byte for
//! byte the layout this fixture has; if a frozen type changes, that test fails first (this
//! fixture, rebuilt with the change, could not notice). The `llm` helpers it calls are compiled
//! into the plugin and never cross the ABI, so which api version they came from does not
//! matter to the host.
//!
//! The algorithm, simple and real: REINFORCE with a group-mean baseline (`A = s − mean_g`,
//! Dr. GRPO's advantage, `llm::outcome_advantages`), under a PPO-clipped probability ratio so
//! that several epochs per rollout stay safe, aggregated token-mean.

use drover_plugin_api::{
    llm::{
        aggregation_weights, clipped_surrogate, outcome_advantages, Baseline, ClipRange,
        LossAggMode,
    },
    AlgorithmImpl, InterfaceVersion, IterationControl, IterationInfo, LossOutputs, Metric,
    Minibatch, ParamSpec, Params, PluginError, PluginInfo, Rollout, SequenceLossFn,
};

/// The name in `PluginInfo` (drover's job-level tests look the fixture up by it).
const NAME: &str = "v1_1";

/// The fixture's instance: its clip range, and the best `score_mean` seen so far.
pub struct FromOneOne {
    clip: ClipRange,
    best_score_mean: Option<f64>,
}

impl FromOneOne {
    /// The 1.1 extension: each sequence's clipped surrogate on its sequence-level ratio
    /// `ρ_s = e^{Δ_s}` with its mean valid-token advantage `Ā_s`, averaged over the sequences
    /// that have a valid token (so it has the scale of the token loss at ρ = 1).
    fn sequence_loss(
        &mut self,
        mb: &Minibatch<'_>,
        log_ratio: &[f32],
        loss: &mut [f32],
        d_log_ratio: &mut [f32],
    ) -> Result<Vec<Metric>, PluginError> {
        let mut adv_sum = vec![0.0f64; mb.num_sequences];
        let mut valid = vec![0u32; mb.num_sequences];
        for i in 0..mb.len() {
            if mb.token_weights[i] > 0.0 {
                let s = mb.seq_index[i] as usize;
                adv_sum[s] += f64::from(mb.advantages[i]);
                valid[s] += 1;
            }
        }
        let nonempty = valid.iter().filter(|&&n| n > 0).count();
        if nonempty == 0 {
            return Ok(Vec::new());
        }
        let mut clipped = 0usize;
        for s in 0..mb.num_sequences {
            if valid[s] == 0 {
                continue;
            }
            let mean_adv = adv_sum[s] / f64::from(valid[s]);
            let sur = clipped_surrogate(f64::from(log_ratio[s]), 0.0, mean_adv, &self.clip);
            clipped += usize::from(sur.clipped);
            loss[s] = (sur.loss / nonempty as f64) as f32;
            d_log_ratio[s] = (sur.d_logp / nonempty as f64) as f32;
        }
        Ok(vec![Metric::new(
            "seq_clip_frac",
            clipped as f64 / nonempty as f64,
        )])
    }
}

impl AlgorithmImpl for FromOneOne {
    const SEQUENCE_LOSS: Option<SequenceLossFn<Self>> = Some(Self::sequence_loss);

    fn info() -> PluginInfo {
        PluginInfo::new(
            NAME,
            env!("CARGO_PKG_VERSION"),
            "test fixture: built against interface 1.1 (REINFORCE with a group-mean baseline, clipped ratio)",
        )
        .param(
            ParamSpec::float(
                "clip_ratio",
                0.2,
                "Clip range ε of the probability ratio, token and sequence level.",
            )
            .range(0.0, 1.0),
        )
    }

    fn new(params: &Params, _seed: u64) -> Result<Self, PluginError> {
        Ok(Self {
            clip: ClipRange::symmetric(params.f64("clip_ratio")?),
            best_score_mean: None,
        })
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
        let w = aggregation_weights(LossAggMode::TokenMean, mb, None)?;
        let (mut policy_loss, mut clipped) = (0.0f64, 0.0f64);
        for (i, &w) in w.iter().enumerate() {
            if w <= 0.0 {
                continue; // padding: outputs stay 0
            }
            let sur = clipped_surrogate(
                f64::from(mb.logp_new[i]),
                f64::from(mb.logp_old[i]),
                f64::from(mb.advantages[i]),
                &self.clip,
            );
            out.loss[i] = (w * sur.loss) as f32;
            out.d_logp[i] = (w * sur.d_logp) as f32;
            policy_loss += w * sur.loss;
            if sur.clipped {
                clipped += w;
            }
        }
        Ok(vec![
            Metric::new("policy_loss", policy_loss),
            Metric::new("clip_frac", clipped),
        ])
    }

    /// Reads its own `score_mean` by name, as a 1.1 plugin would; whatever else the host sends
    /// (1.2's `input.*` metrics) is ignored, and no group sizes are asked for.
    fn on_iteration(&mut self, info: &IterationInfo<'_>) -> Result<IterationControl, PluginError> {
        let mut control = IterationControl::default();
        if let Some(score) = info.metric("score_mean") {
            let best = self.best_score_mean.map_or(score, |b| b.max(score));
            self.best_score_mean = Some(best);
            control.metrics.push(Metric::new("best_score_mean", best));
        }
        Ok(control)
    }
}

drover_plugin_api::export_algorithm!(@interface_version FromOneOne, InterfaceVersion::new(1, 1));
