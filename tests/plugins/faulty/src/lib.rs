//! Test fixture: a plugin that fails on demand, chosen by its `fail` parameter.
//!
//! `fail` = `none` | `panic_in_loss` | `nan_in_loss` | `error_in_new` | `panic_in_advantages` |
//! `host_metric_in_loss` (reports a metric named `lr`, a column the host writes itself) |
//! `abort_in_new` (aborts the process, as a panic does in a plugin built with `panic = "abort"`) |
//! `panic_in_epoch_end` | `panic_in_keep_group` | `panic_in_drop` (the instance's `Drop` panics).
//! `plugins/host/tests/plugins.rs` checks each failure reaches the host as a `CallError`
//! naming the plugin, the call and the reason, and that a panic does not abort the process.

use drover_plugin_api::{
    AlgorithmImpl, LossOutputs, Metric, Minibatch, ParamSpec, Params, PluginError, PluginInfo,
    Rollout,
};

/// The failure modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fail {
    None,
    PanicInLoss,
    NanInLoss,
    PanicInAdvantages,
    HostMetricInLoss,
    PanicInEpochEnd,
    PanicInKeepGroup,
    PanicInDrop,
}

/// An algorithm whose only purpose is to fail as asked.
pub struct Faulty {
    fail: Fail,
}

impl AlgorithmImpl for Faulty {
    fn info() -> PluginInfo {
        PluginInfo::new(
            "faulty",
            env!("CARGO_PKG_VERSION"),
            "test fixture: fails on demand",
        )
        .param(ParamSpec::string(
            "fail",
            "none",
            "none | panic_in_loss | nan_in_loss | error_in_new | panic_in_advantages | \
             host_metric_in_loss | abort_in_new | panic_in_epoch_end | panic_in_keep_group | \
             panic_in_drop",
        ))
    }

    fn new(params: &Params, _seed: u64) -> Result<Self, PluginError> {
        let fail = match params.str("fail")? {
            "none" => Fail::None,
            "panic_in_loss" => Fail::PanicInLoss,
            "nan_in_loss" => Fail::NanInLoss,
            "panic_in_advantages" => Fail::PanicInAdvantages,
            "host_metric_in_loss" => Fail::HostMetricInLoss,
            "panic_in_epoch_end" => Fail::PanicInEpochEnd,
            "panic_in_keep_group" => Fail::PanicInKeepGroup,
            "panic_in_drop" => Fail::PanicInDrop,
            "error_in_new" => return Err(PluginError::internal("asked to fail in `new`")),
            "abort_in_new" => {
                eprintln!("faulty plugin: aborting in `new`");
                std::process::abort()
            }
            other => {
                return Err(PluginError::invalid_params(
                    "fail",
                    format!("unknown failure mode `{other}`"),
                ))
            }
        };
        Ok(Self { fail })
    }

    fn compute_advantages(
        &mut self,
        batch: &Rollout<'_>,
        advantages: &mut [f32],
        returns: &mut [f32],
    ) -> Result<Vec<Metric>, PluginError> {
        if self.fail == Fail::PanicInAdvantages {
            panic!("faulty plugin: deliberate panic in compute_advantages");
        }
        advantages.copy_from_slice(batch.rewards);
        returns.copy_from_slice(batch.rewards);
        Ok(Vec::new())
    }

    fn loss(
        &mut self,
        mb: &Minibatch<'_>,
        out: &mut LossOutputs<'_>,
    ) -> Result<Vec<Metric>, PluginError> {
        match self.fail {
            Fail::PanicInLoss => panic!("faulty plugin: deliberate panic in loss"),
            Fail::NanInLoss => {
                if let Some(x) = out.loss.get_mut(1) {
                    *x = f32::NAN;
                }
            }
            Fail::None
            | Fail::PanicInAdvantages
            | Fail::HostMetricInLoss
            | Fail::PanicInEpochEnd
            | Fail::PanicInKeepGroup
            | Fail::PanicInDrop => {
                for (d, &a) in out.d_logp.iter_mut().zip(mb.advantages) {
                    *d = -a;
                }
            }
        }
        if self.fail == Fail::HostMetricInLoss {
            return Ok(vec![Metric::new("faulty_calls", 1.0), Metric::new("lr", 123.0)]);
        }
        Ok(vec![Metric::new("faulty_calls", 1.0)])
    }

    fn on_epoch_end(&mut self, _epoch: u32, _metrics: &[Metric]) -> Result<bool, PluginError> {
        if self.fail == Fail::PanicInEpochEnd {
            panic!("faulty plugin: deliberate panic in on_epoch_end");
        }
        Ok(true)
    }

    fn keep_group(&self, _rewards: &[f32]) -> Result<bool, PluginError> {
        if self.fail == Fail::PanicInKeepGroup {
            panic!("faulty plugin: deliberate panic in keep_group");
        }
        Ok(true)
    }
}

impl Drop for Faulty {
    fn drop(&mut self) {
        if self.fail == Fail::PanicInDrop {
            panic!("faulty plugin: deliberate panic in Drop");
        }
    }
}

drover_plugin_api::export_algorithm!(Faulty);
