//! `AlgorithmHandle`: one plugin algorithm instance, called with host-side batches; every
//! result is checked for plugin errors, non-finite outputs and metrics named like the host's
//! own columns.

use abi_stable::{sabi_trait::TD_Opaque, std_types::RResult};
use drover_plugin_api::{
    ext::v1_3, AlgorithmBox, LossView_TO, RSlice, RString, RVec, RolloutView_TO,
};

use crate::{
    batch::{LossBatch, LossBatchView, RolloutBatch},
    error::{CallError, CallErrorKind},
    plugin::{PluginState, SequenceLoss},
};

/// A named scalar (host-side copy of `drover_plugin_api::Metric`).
#[derive(Debug, Clone, PartialEq)]
pub struct Metric {
    /// Column name.
    pub name: String,
    /// Value.
    pub value: f64,
}

impl Metric {
    /// Makes a metric.
    pub fn new(name: impl Into<String>, value: f64) -> Self {
        Self {
            name: name.into(),
            value,
        }
    }
}

/// What `on_iteration` asks of the job runtime.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct IterationControl {
    /// Responses per prompt of the next generation batch (dataset runs, interface 1.2; see
    /// `drover_plugin_api::IterationControl::group_sizes`); empty: the run's `group_size`.
    pub group_sizes: Vec<u32>,
    /// Stop training after this iteration.
    pub stop: bool,
    /// Metrics to log for this iteration.
    pub metrics: Vec<Metric>,
}

/// One algorithm instance. `Send`, not `Sync`: call it from one thread at a time.
pub struct AlgorithmHandle {
    inner: AlgorithmBox,
    plugin: String,
    version: String,
    /// The plugin's 1.3 minibatch-context table (checked at load); `None` for 1.0–1.2 plugins.
    context_table: Option<&'static v1_3::MinibatchContext>,
}

impl std::fmt::Debug for AlgorithmHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlgorithmHandle")
            .field("plugin", &self.plugin)
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

fn to_abi_metrics(metrics: &[Metric]) -> RVec<drover_plugin_api::Metric> {
    metrics
        .iter()
        .map(|m| drover_plugin_api::Metric {
            name: RString::from(m.name.as_str()),
            value: m.value,
        })
        .collect()
}

/// The plugin's metrics, refused when one is named like a column the host writes itself (it
/// would duplicate or silently overwrite that column), is empty, or is `input.*`.
fn from_abi_metrics(metrics: RVec<drover_plugin_api::Metric>) -> Result<Vec<Metric>, CallErrorKind> {
    metrics
        .into_iter()
        .map(|m| match drover_plugin_api::host_metrics::name_problem(m.name.as_str()) {
            Some(problem) => Err(CallErrorKind::BadMetric(problem)),
            None => Ok(Metric {
                name: m.name.into_string(),
                value: m.value,
            }),
        })
        .collect()
}

fn first_non_finite(output: &'static str, buf: &[f32]) -> Result<(), CallErrorKind> {
    match buf.iter().position(|x| !x.is_finite()) {
        Some(index) => Err(CallErrorKind::NonFinite {
            output,
            index,
            value: buf[index],
        }),
        None => Ok(()),
    }
}

fn check_out_len(name: &str, len: usize, expected: usize) -> Result<(), CallErrorKind> {
    if len == expected {
        Ok(())
    } else {
        Err(CallErrorKind::InvalidBatch(format!(
            "output `{name}` has length {len}, expected {expected}"
        )))
    }
}

impl AlgorithmHandle {
    pub(crate) fn new(
        inner: AlgorithmBox,
        plugin: String,
        version: String,
        context_table: Option<&'static v1_3::MinibatchContext>,
    ) -> Self {
        Self {
            inner,
            plugin,
            version,
            context_table,
        }
    }

    /// Whether the plugin receives a [`LossBatch`]'s context (`drover.minibatch_context`,
    /// interface 1.3): `false` for plugins built against 1.0–1.2, which run as before.
    pub fn takes_minibatch_context(&self) -> bool {
        self.context_table.is_some()
    }

    /// Sends `mb.context` right before a loss call, if the plugin takes one (call
    /// `minibatch_context` in errors). Call after `mb.validate()`.
    fn send_context(&mut self, mb: &LossBatch<'_>) -> Result<(), CallError> {
        let (Some(table), Some(c)) = (self.context_table, &mb.context) else {
            return Ok(());
        };
        let info = v1_3::MinibatchInfo {
            rollout_index: RSlice::from(c.rollout_index),
            rollout_sequences: c.rollout_sequences as u64,
            iteration: c.iteration,
            epoch: c.epoch,
            minibatch: c.minibatch,
        };
        match (table.set_context)(&mut self.inner, &info) {
            RResult::ROk(()) => Ok(()),
            RResult::RErr(e) => {
                Err(self.err("minibatch_context", CallErrorKind::Plugin(Box::new(e))))
            }
        }
    }

    /// The plugin's name.
    pub fn plugin_name(&self) -> &str {
        &self.plugin
    }

    /// The plugin's version.
    pub fn plugin_version(&self) -> &str {
        &self.version
    }

    fn err(&self, call: &'static str, kind: CallErrorKind) -> CallError {
        CallError {
            plugin: self.plugin.clone(),
            version: self.version.clone(),
            call,
            kind,
        }
    }

    fn wrap<T>(&self, call: &'static str, r: Result<T, CallErrorKind>) -> Result<T, CallError> {
        r.map_err(|kind| self.err(call, kind))
    }

    /// Advantage stage: fills `advantages` and `returns` (each `B·T`) from `batch`.
    ///
    /// # Errors
    /// Invalid batch, a plugin error or panic, a non-finite output (first bad index named), or
    /// a metric the host cannot log (`CallErrorKind::BadMetric`).
    pub fn compute_advantages(
        &mut self,
        batch: &RolloutBatch<'_>,
        advantages: &mut [f32],
        returns: &mut [f32],
    ) -> Result<Vec<Metric>, CallError> {
        const CALL: &str = "compute_advantages";
        let checked = batch
            .validate()
            .map_err(CallErrorKind::InvalidBatch)
            .and_then(|()| {
                let n = batch.num_sequences * batch.seq_len;
                check_out_len("advantages", advantages.len(), n)?;
                check_out_len("returns", returns.len(), n)
            });
        self.wrap(CALL, checked)?;
        let view = RolloutView_TO::from_ptr(batch, TD_Opaque);
        let r = self
            .inner
            .compute_advantages(view, advantages.into(), returns.into());
        let metrics = match r {
            RResult::ROk(m) => m,
            RResult::RErr(e) => return Err(self.err(CALL, CallErrorKind::Plugin(Box::new(e)))),
        };
        self.wrap(
            CALL,
            first_non_finite("advantages", advantages)
                .and_then(|()| first_non_finite("returns", returns)),
        )?;
        self.wrap(CALL, from_abi_metrics(metrics))
    }

    /// Loss stage: per-token loss and the derivatives of `Σ loss` w.r.t. each token's new
    /// log-prob, value and entropy (each output `M` long). Sum them; do not re-weight.
    /// `mb.context` is sent to the plugin first when it takes one (interface 1.3).
    ///
    /// # Errors
    /// Invalid batch, a plugin error or panic, a non-finite output (first bad index named), or
    /// a metric the host cannot log (`CallErrorKind::BadMetric`).
    pub fn loss(
        &mut self,
        mb: &LossBatch<'_>,
        loss: &mut [f32],
        d_logp: &mut [f32],
        d_value: &mut [f32],
        d_entropy: &mut [f32],
    ) -> Result<Vec<Metric>, CallError> {
        const CALL: &str = "loss";
        let m = mb.len();
        let checked = mb
            .validate()
            .map_err(CallErrorKind::InvalidBatch)
            .and_then(|()| {
                check_out_len("loss", loss.len(), m)?;
                check_out_len("d_logp", d_logp.len(), m)?;
                check_out_len("d_value", d_value.len(), m)?;
                check_out_len("d_entropy", d_entropy.len(), m)
            });
        self.wrap(CALL, checked)?;
        self.send_context(mb)?;
        let view = LossBatchView::new(mb);
        let r = self.inner.loss(
            LossView_TO::from_ptr(&view, TD_Opaque),
            loss.into(),
            d_logp.into(),
            d_value.into(),
            d_entropy.into(),
        );
        let metrics = match r {
            RResult::ROk(m) => m,
            RResult::RErr(e) => return Err(self.err(CALL, CallErrorKind::Plugin(Box::new(e)))),
        };
        let finite = first_non_finite("loss", loss)
            .and_then(|()| first_non_finite("d_logp", d_logp))
            .and_then(|()| first_non_finite("d_value", d_value))
            .and_then(|()| first_non_finite("d_entropy", d_entropy));
        self.wrap(CALL, finite)?;
        self.wrap(CALL, from_abi_metrics(metrics))
    }

    /// Sequence-level loss (interface 1.1 extension, from [`Plugin::sequence_loss`](crate::Plugin::sequence_loss)
    /// of the plugin that made this instance): for a minibatch of **whole sequences**, computes
    /// each sequence's log-ratio `Δ_s = Σ_{valid t ∈ s} (logp_new − logp_old)`, lets the plugin
    /// write `seq_loss[s]` and `∂(Σ loss)/∂Δ_s`, and writes the chain rule into `d_logp`
    /// (`∂/∂logp_new,t = ∂/∂Δ_s` for valid tokens, 0 for padding). A token is valid when its
    /// `token_weights` entry is above 0: the weights are a mask here, their size is the
    /// plugin's to apply. `drover-job` calls this in place of [`loss`](Self::loss) on the
    /// sequence tasks, so no value, entropy or per-token reference-KL gradient comes with it.
    ///
    /// # Errors
    /// Invalid batch or output lengths, a plugin error or panic (an instance of another plugin
    /// is refused by the plugin), a non-finite output, or a metric the host cannot log.
    pub fn sequence_loss(
        &mut self,
        ext: SequenceLoss,
        mb: &LossBatch<'_>,
        seq_loss: &mut [f32],
        d_logp: &mut [f32],
    ) -> Result<Vec<Metric>, CallError> {
        const CALL: &str = "sequence_loss";
        let (m, s) = (mb.len(), mb.num_sequences);
        let checked = mb
            .validate()
            .map_err(CallErrorKind::InvalidBatch)
            .and_then(|()| {
                check_out_len("seq_loss", seq_loss.len(), s)?;
                check_out_len("d_logp", d_logp.len(), m)
            });
        self.wrap(CALL, checked)?;
        self.send_context(mb)?;
        let mut log_ratio = vec![0.0f32; s];
        for i in 0..m {
            if mb.token_weights[i] > 0.0 {
                log_ratio[mb.seq_index[i] as usize] += mb.logp_new[i] - mb.logp_old[i];
            }
        }
        let mut d_log_ratio = vec![0.0f32; s];
        let view = LossBatchView::new(mb);
        let r = (ext.table.sequence_loss)(
            &mut self.inner,
            LossView_TO::from_ptr(&view, TD_Opaque),
            RSlice::from(&log_ratio[..]),
            (&mut *seq_loss).into(),
            (&mut d_log_ratio[..]).into(),
        );
        let metrics = match r {
            RResult::ROk(m) => m,
            RResult::RErr(e) => return Err(self.err(CALL, CallErrorKind::Plugin(Box::new(e)))),
        };
        self.wrap(
            CALL,
            first_non_finite("seq_loss", seq_loss)
                .and_then(|()| first_non_finite("d_log_ratio", &d_log_ratio)),
        )?;
        for (i, d) in d_logp.iter_mut().enumerate() {
            *d = if mb.token_weights[i] > 0.0 {
                d_log_ratio[mb.seq_index[i] as usize]
            } else {
                0.0
            };
        }
        self.wrap(CALL, from_abi_metrics(metrics))
    }

    /// The instance's state across iterations (interface 1.3 extension, from
    /// [`Plugin::plugin_state`](crate::Plugin::plugin_state) of the plugin that made this
    /// instance), as the plugin's own bytes, for a checkpoint.
    ///
    /// # Errors
    /// A plugin error or panic, call `save_state` (an instance of another plugin is refused by
    /// the plugin).
    pub fn save_state(&mut self, ext: PluginState) -> Result<Vec<u8>, CallError> {
        match (ext.table.save_state)(&mut self.inner) {
            RResult::ROk(bytes) => Ok(bytes.into_vec()),
            RResult::RErr(e) => Err(self.err("save_state", CallErrorKind::Plugin(Box::new(e)))),
        }
    }

    /// Replaces this (fresh) instance's state with `bytes` from [`save_state`](Self::save_state)
    /// of an instance made with the same params and seed.
    ///
    /// # Errors
    /// A plugin error or panic, call `load_state`: typically the plugin refusing bytes it
    /// cannot read (another plugin's, another format version).
    pub fn load_state(&mut self, ext: PluginState, bytes: &[u8]) -> Result<(), CallError> {
        match (ext.table.load_state)(&mut self.inner, RSlice::from(bytes)) {
            RResult::ROk(()) => Ok(()),
            RResult::RErr(e) => Err(self.err("load_state", CallErrorKind::Plugin(Box::new(e)))),
        }
    }

    /// After update epoch `epoch` (0-based) with that epoch's mean metrics: `Ok(false)` means
    /// skip the remaining epochs of this iteration.
    ///
    /// # Errors
    /// A plugin error or panic.
    pub fn on_epoch_end(&mut self, epoch: u32, metrics: &[Metric]) -> Result<bool, CallError> {
        let abi = to_abi_metrics(metrics);
        match self.inner.on_epoch_end(epoch, abi.as_rslice()) {
            RResult::ROk(go_on) => Ok(go_on),
            RResult::RErr(e) => Err(self.err("on_epoch_end", CallErrorKind::Plugin(Box::new(e)))),
        }
    }

    /// After iteration `iteration` (1-based), with its metrics.
    ///
    /// # Errors
    /// A plugin error or panic, or a metric the host cannot log.
    pub fn on_iteration(
        &mut self,
        iteration: u64,
        global_step: u64,
        metrics: &[Metric],
    ) -> Result<IterationControl, CallError> {
        let abi = to_abi_metrics(metrics);
        let info = drover_plugin_api::IterationInfo {
            iteration,
            global_step,
            metrics: abi.as_rslice(),
        };
        match self.inner.on_iteration(info) {
            RResult::ROk(c) => Ok(IterationControl {
                group_sizes: c.group_sizes.into_vec(),
                stop: c.stop,
                metrics: self.wrap("on_iteration", from_abi_metrics(c.metrics))?,
            }),
            RResult::RErr(e) => Err(self.err("on_iteration", CallErrorKind::Plugin(Box::new(e)))),
        }
    }

    /// Whether to keep a group with these rewards (dynamic sampling).
    ///
    /// # Errors
    /// A plugin error or panic.
    pub fn keep_group(&self, rewards: &[f32]) -> Result<bool, CallError> {
        match self.inner.keep_group(RSlice::from(rewards)) {
            RResult::ROk(keep) => Ok(keep),
            RResult::RErr(e) => Err(self.err("keep_group", CallErrorKind::Plugin(Box::new(e)))),
        }
    }
}
