//! Test fixture: a plugin that claims drover plugin interface 99.0, which no host loads.
//!
//! Used by `plugins/host/tests/plugins.rs` to check that the refusal names both versions
//! before abi_stable's own checks run.

use drover_plugin_api::{
    AlgorithmImpl, InterfaceVersion, LossOutputs, Metric, Minibatch, Params, PluginError,
    PluginInfo, Rollout,
};

/// Does nothing; it must never be instantiated.
pub struct FromTheFuture;

impl AlgorithmImpl for FromTheFuture {
    fn info() -> PluginInfo {
        PluginInfo::new(
            "bad_version",
            env!("CARGO_PKG_VERSION"),
            "test fixture: built against interface 99.0",
        )
    }

    fn new(_params: &Params, _seed: u64) -> Result<Self, PluginError> {
        Ok(Self)
    }

    fn compute_advantages(
        &mut self,
        _: &Rollout<'_>,
        _: &mut [f32],
        _: &mut [f32],
    ) -> Result<Vec<Metric>, PluginError> {
        Ok(Vec::new())
    }

    fn loss(
        &mut self,
        _: &Minibatch<'_>,
        _: &mut LossOutputs<'_>,
    ) -> Result<Vec<Metric>, PluginError> {
        Ok(Vec::new())
    }
}

drover_plugin_api::export_algorithm!(@interface_version FromTheFuture, InterfaceVersion::new(99, 0));
