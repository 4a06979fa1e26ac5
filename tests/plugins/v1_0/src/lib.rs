//! Test fixture: a plugin as built against drover plugin interface **1.0**, loaded by a newer
//! 1.x host in `plugins/host/tests/plugins.rs` (the "two builds" test of issue 10).
//!
//! Why this is a faithful 1.0 build although it compiles against today's api crate: a plugin
//! built against 1.0 differs from one built against 1.1 in exactly two ways. (1) The version
//! symbol says 1.0: recorded here through the macro's hidden `@interface_version` arm. (2) Its
//! `extension` entry knows no 1.1 table names, so it answers `RNone` for
//! `drover.sequence_loss`: true here because this plugin sets no extension. Everything else
//! a host sees — the root module, the `Algorithm` vtable, the views — is frozen for major 1,
//! and `plugins/api/tests/frozen_layout.rs` pins that layout, so a 1.0 build has byte for
//! byte the layout this fixture has. If someone changes a frozen type, that test fails
//! first; this fixture alone could not notice, since it is rebuilt with the change.

use drover_plugin_api::{
    AlgorithmImpl, InterfaceVersion, LossOutputs, Metric, Minibatch, Params, PluginError,
    PluginInfo, Rollout,
};

/// Advantages = rewards; loss = −A·logp per token (REINFORCE without a baseline).
pub struct FromOneZero;

impl AlgorithmImpl for FromOneZero {
    fn info() -> PluginInfo {
        PluginInfo::new(
            "v1_0",
            env!("CARGO_PKG_VERSION"),
            "test fixture: built against interface 1.0",
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
        mb: &Minibatch<'_>,
        out: &mut LossOutputs<'_>,
    ) -> Result<Vec<Metric>, PluginError> {
        for i in 0..mb.len() {
            let w = mb.token_weights[i];
            out.loss[i] = -w * mb.advantages[i] * mb.logp_new[i];
            out.d_logp[i] = -w * mb.advantages[i];
        }
        Ok(vec![Metric::new("from_1_0", 1.0)])
    }
}

drover_plugin_api::export_algorithm!(@interface_version FromOneZero, InterfaceVersion::new(1, 0));
