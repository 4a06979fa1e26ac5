//! The plugin author's test harness (`drover_plugin_api::testing`) run on a loaded library:
//! `AlgorithmHandle` as a `testing::Subject`, so `drover plugin check` and a plugin's own
//! `cargo test` run the very same checks.

use drover_plugin_api::{
    testing::{run_checks, Check, CheckOptions, CheckReport, Subject, PARAMS_DECLARED},
    IterationControl, IterationInfo, LossOutputs, Minibatch, MinibatchPosition, PluginError,
    PluginErrorKind, Rollout,
};

use crate::{
    batch::{LossBatch, MinibatchContext, RolloutBatch},
    error::{CallError, CallErrorKind},
    handle::{AlgorithmHandle, Metric},
    plugin::{Plugin, PluginState, SequenceLoss},
};

/// The plugin's own error keeps its kind, key and reason, with the call added; the host's
/// wrapper text would print the kind twice ("invalid params: plugin `x` 0.1.0: call `new`:
/// invalid params: key ...") in a report that already names the plugin. A failure the host
/// found keeps the host's full message and gets a kind.
fn to_plugin_error(e: CallError) -> PluginError {
    let message = e.to_string();
    let kind = match e.kind {
        CallErrorKind::Plugin(mut p) => {
            p.message = format!("{} (call `{}`)", p.message, e.call).into();
            return *p;
        }
        CallErrorKind::NonFinite { .. } => PluginErrorKind::Numerical,
        CallErrorKind::InvalidBatch(_) | CallErrorKind::BadMetric(_) => PluginErrorKind::InvalidInput,
        CallErrorKind::MalformedJson(_) => PluginErrorKind::Internal,
    };
    PluginError::new(kind, message)
}

fn to_abi_metrics(metrics: Vec<Metric>) -> Vec<drover_plugin_api::Metric> {
    metrics
        .into_iter()
        .map(|m| drover_plugin_api::Metric::new(&m.name, m.value))
        .collect()
}

impl Subject for AlgorithmHandle {
    fn compute_advantages(
        &mut self,
        batch: &Rollout<'_>,
        advantages: &mut [f32],
        returns: &mut [f32],
    ) -> Result<Vec<drover_plugin_api::Metric>, PluginError> {
        let metadata: Vec<(&str, &[f32])> =
            batch.metadata.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        let host = RolloutBatch {
            num_sequences: batch.num_sequences,
            seq_len: batch.seq_len,
            mask: batch.mask,
            rewards: batch.rewards,
            terminated: batch.terminated,
            truncated: batch.truncated,
            values: batch.values,
            next_values: batch.next_values,
            logp_old: batch.logp_old,
            logp_ref: batch.logp_ref,
            entropy_old: batch.entropy_old,
            group_ids: batch.group_ids,
            sample_weights: batch.sample_weights,
            metadata: &metadata,
            seed: batch.seed,
        };
        AlgorithmHandle::compute_advantages(self, &host, advantages, returns)
            .map(to_abi_metrics)
            .map_err(to_plugin_error)
    }

    fn loss(
        &mut self,
        mb: &Minibatch<'_>,
        out: &mut LossOutputs<'_>,
    ) -> Result<Vec<drover_plugin_api::Metric>, PluginError> {
        AlgorithmHandle::loss(
            self,
            &loss_batch(mb),
            out.loss,
            out.d_logp,
            out.d_value,
            out.d_entropy,
        )
        .map(to_abi_metrics)
        .map_err(to_plugin_error)
    }

    fn on_epoch_end(&mut self, epoch: u32, metrics: &[drover_plugin_api::Metric]) -> Result<bool, PluginError> {
        let metrics = from_abi_metrics(metrics);
        AlgorithmHandle::on_epoch_end(self, epoch, &metrics).map_err(to_plugin_error)
    }

    fn keep_group(&self, rewards: &[f32]) -> Result<bool, PluginError> {
        AlgorithmHandle::keep_group(self, rewards).map_err(to_plugin_error)
    }

    fn on_iteration(&mut self, info: &IterationInfo<'_>) -> Result<IterationControl, PluginError> {
        let metrics = from_abi_metrics(&info.metrics);
        let control =
            AlgorithmHandle::on_iteration(self, info.iteration, info.global_step, &metrics).map_err(to_plugin_error)?;
        Ok(IterationControl {
            group_sizes: control.group_sizes.into(),
            stop: control.stop,
            metrics: to_abi_metrics(control.metrics).into(),
        })
    }
}

fn from_abi_metrics(metrics: &[drover_plugin_api::Metric]) -> Vec<Metric> {
    metrics.iter().map(|m| Metric::new(m.name.as_str(), m.value)).collect()
}

/// The host's view of a harness minibatch, context included; `seq_lengths` is derived by the
/// host from the weights, as in a real run.
fn loss_batch<'a>(mb: &Minibatch<'a>) -> LossBatch<'a> {
    LossBatch {
            logp_new: mb.logp_new,
            logp_old: mb.logp_old,
            logp_ref: mb.logp_ref,
            advantages: mb.advantages,
            returns: mb.returns,
            values_new: mb.values_new,
            values_old: mb.values_old,
            entropy_new: mb.entropy_new,
            token_weights: mb.token_weights,
            seq_index: mb.seq_index,
            num_sequences: mb.num_sequences,
            seq_group_ids: mb.seq_group_ids,
            seed: mb.seed,
            context: mb.rollout_index.map(|rollout_index| {
                let position = mb.position.unwrap_or(MinibatchPosition {
                    // A hand-built minibatch may set only the index: the smallest batch it fits.
                    rollout_sequences: rollout_index.iter().map(|&r| r as usize + 1).max().unwrap_or(0),
                    iteration: 1,
                    epoch: 0,
                    minibatch: 0,
                });
                MinibatchContext {
                    rollout_index,
                    rollout_sequences: position.rollout_sequences,
                    iteration: position.iteration,
                    epoch: position.epoch,
                    minibatch: position.minibatch,
                }
            }),
    }
}

/// An instance under check together with its plugin's extension tables (the 1.1 sequence loss,
/// the 1.3 state), which the handle alone does not carry; a table of the wrong layout fails the
/// check that uses it (`sequence_loss_finite`, `state_round_trip`).
struct Checked {
    handle: AlgorithmHandle,
    sequence: Result<Option<SequenceLoss>, String>,
    state: Result<Option<PluginState>, String>,
}

impl Subject for Checked {
    fn compute_advantages(
        &mut self,
        batch: &Rollout<'_>,
        advantages: &mut [f32],
        returns: &mut [f32],
    ) -> Result<Vec<drover_plugin_api::Metric>, PluginError> {
        Subject::compute_advantages(&mut self.handle, batch, advantages, returns)
    }

    fn loss(
        &mut self,
        mb: &Minibatch<'_>,
        out: &mut LossOutputs<'_>,
    ) -> Result<Vec<drover_plugin_api::Metric>, PluginError> {
        Subject::loss(&mut self.handle, mb, out)
    }

    fn on_iteration(&mut self, info: &IterationInfo<'_>) -> Result<IterationControl, PluginError> {
        Subject::on_iteration(&mut self.handle, info)
    }

    fn on_epoch_end(&mut self, epoch: u32, metrics: &[drover_plugin_api::Metric]) -> Result<bool, PluginError> {
        Subject::on_epoch_end(&mut self.handle, epoch, metrics)
    }

    fn keep_group(&self, rewards: &[f32]) -> Result<bool, PluginError> {
        Subject::keep_group(&self.handle, rewards)
    }

    fn sequence_loss(
        &mut self,
        mb: &Minibatch<'_>,
        seq_loss: &mut [f32],
        d_logp: &mut [f32],
    ) -> Option<Result<Vec<drover_plugin_api::Metric>, PluginError>> {
        match &self.sequence {
            Err(e) => Some(Err(PluginError::internal(e.clone()))),
            Ok(None) => None,
            Ok(Some(ext)) => Some(
                self.handle
                    .sequence_loss(*ext, &loss_batch(mb), seq_loss, d_logp)
                    .map(to_abi_metrics)
                    .map_err(to_plugin_error),
            ),
        }
    }

    fn save_state(&mut self) -> Option<Result<Vec<u8>, PluginError>> {
        match &self.state {
            Err(e) => Some(Err(PluginError::internal(e.clone()))),
            Ok(None) => None,
            Ok(Some(ext)) => Some(self.handle.save_state(*ext).map_err(to_plugin_error)),
        }
    }

    fn load_state(&mut self, bytes: &[u8]) -> Option<Result<(), PluginError>> {
        match &self.state {
            Err(e) => Some(Err(PluginError::internal(e.clone()))),
            Ok(None) => None,
            Ok(Some(ext)) => Some(self.handle.load_state(*ext, bytes).map_err(to_plugin_error)),
        }
    }
}

impl Plugin {
    /// Runs the author's harness (`drover_plugin_api::testing::run_checks`) on instances of
    /// this plugin made with `params_json`, through the ABI and the host's guard (the 1.1
    /// sequence-loss and 1.3 plugin-state tables included, when the plugin exports them).
    pub fn check(&self, params_json: &str, opts: &CheckOptions) -> CheckReport {
        let sequence = self.sequence_loss().map_err(|e| e.to_string());
        let state = self.plugin_state().map_err(|e| e.to_string());
        // `Plugin::load` refused the library if its declarations were wrong.
        let declared = Check {
            name: PARAMS_DECLARED,
            passed: true,
            detail: format!(
                "{} params, each default of its kind and inside its range (checked at load)",
                self.info().params.len()
            ),
        };
        let mut report = run_checks(
            |seed| {
                let handle = self.instantiate(params_json, seed).map_err(to_plugin_error)?;
                Ok(Checked { handle, sequence: sequence.clone(), state: state.clone() })
            },
            opts,
        );
        report.checks.insert(0, declared);
        report
    }
}
