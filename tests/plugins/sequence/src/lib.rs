//! Test fixture: a plugin that implements the interface 1.1 extension
//! `ext::v1_1::SequenceLoss`, with a sequence-level surrogate simple enough to check by hand:
//! `loss_s = −Ā_s · exp(Δ_s)`, where `Ā_s` is the mean advantage of the sequence's valid tokens
//! and `Δ_s` its log-ratio, so `∂loss_s/∂Δ_s = loss_s`.

use drover_plugin_api::{
    AlgorithmImpl, LossOutputs, Metric, Minibatch, Params, PluginError, PluginInfo, Rollout,
    SequenceLossFn,
};

/// The per-token stages are trivial; the point is the extension.
pub struct SequenceSurrogate;

impl SequenceSurrogate {
    fn sequence_loss(
        &mut self,
        mb: &Minibatch<'_>,
        log_ratio: &[f32],
        loss: &mut [f32],
        d_log_ratio: &mut [f32],
    ) -> Result<Vec<Metric>, PluginError> {
        let mut sum = vec![0.0f32; mb.num_sequences];
        let mut count = vec![0u32; mb.num_sequences];
        for i in 0..mb.len() {
            if mb.token_weights[i] > 0.0 {
                let s = mb.seq_index[i] as usize;
                sum[s] += mb.advantages[i];
                count[s] += 1;
            }
        }
        for s in 0..mb.num_sequences {
            let mean_adv = if count[s] == 0 {
                0.0
            } else {
                sum[s] / count[s] as f32
            };
            loss[s] = -mean_adv * log_ratio[s].exp();
            d_log_ratio[s] = loss[s];
        }
        let ratio_mean = log_ratio.iter().map(|d| f64::from(d.exp())).sum::<f64>()
            / log_ratio.len().max(1) as f64;
        Ok(vec![Metric::new("seq_ratio_mean", ratio_mean)])
    }
}

impl AlgorithmImpl for SequenceSurrogate {
    const SEQUENCE_LOSS: Option<SequenceLossFn<Self>> = Some(Self::sequence_loss);

    fn info() -> PluginInfo {
        PluginInfo::new(
            "sequence",
            env!("CARGO_PKG_VERSION"),
            "test fixture: implements the 1.1 sequence-loss extension",
        )
    }

    fn new(_params: &Params, _seed: u64) -> Result<Self, PluginError> {
        Ok(Self)
    }

    fn compute_advantages(
        &mut self,
        batch: &Rollout<'_>,
        advantages: &mut [f32],
        returns: &mut [f32],
    ) -> Result<Vec<Metric>, PluginError> {
        advantages.copy_from_slice(batch.rewards);
        returns.copy_from_slice(batch.rewards);
        Ok(Vec::new())
    }

    fn loss(
        &mut self,
        _mb: &Minibatch<'_>,
        _out: &mut LossOutputs<'_>,
    ) -> Result<Vec<Metric>, PluginError> {
        Ok(Vec::new())
    }
}

drover_plugin_api::export_algorithm!(SequenceSurrogate);
