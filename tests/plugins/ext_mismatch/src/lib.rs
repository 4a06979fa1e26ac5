//! Test fixture: a plugin claiming interface 1.4 (newer than the host, which must still load
//! it) whose `drover.sequence_loss` table has another layout than the frozen 1.1 one, as if
//! its api crate had changed a released extension. The host must refuse that extension, naming
//! it and both interface versions, and must never call through the table.

use abi_stable::{
    std_types::{ROption, RSlice, RStr},
    StableAbi,
};
use drover_plugin_api::{
    ext::{Extension, ExtensionTable},
    AlgorithmImpl, InterfaceVersion, LossOutputs, Metric, Minibatch, Params, PluginError,
    PluginInfo, Rollout,
};

/// The changed table: another signature and one more field than `ext::v1_1::SequenceLoss`.
#[repr(C)]
#[derive(StableAbi)]
pub struct SequenceLoss {
    /// Not the 1.1 signature.
    pub sequence_loss: extern "C" fn(log_ratio: RSlice<'_, f32>) -> f32,
    /// A field the 1.1 table lacks.
    pub extra: u64,
}

// SAFETY: the name deliberately collides with the 1.1 table (that is the fixture's point);
// `LAYOUT` is derived for this type, which is what the host checks before any use.
unsafe impl ExtensionTable for SequenceLoss {
    const NAME: &'static str = "drover.sequence_loss";
    const SINCE: InterfaceVersion = InterfaceVersion::new(1, 1);
}

extern "C" fn never_called(_: RSlice<'_, f32>) -> f32 {
    // The host must refuse the table before calling it; abort loudly if it does not.
    std::process::abort()
}

static CHANGED: SequenceLoss = SequenceLoss {
    sequence_loss: never_called,
    extra: 7,
};

extern "C" fn extension(name: RStr<'_>) -> ROption<Extension> {
    if name.as_str() == SequenceLoss::NAME {
        ROption::RSome(Extension::new(&CHANGED))
    } else {
        ROption::RNone
    }
}

/// Trivial stages; only the extension matters.
pub struct Mismatched;

impl AlgorithmImpl for Mismatched {
    fn info() -> PluginInfo {
        PluginInfo::new(
            "ext_mismatch",
            env!("CARGO_PKG_VERSION"),
            "test fixture: an extension table of the wrong layout",
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

drover_plugin_api::export_algorithm!(
    @custom_extensions Mismatched, InterfaceVersion::new(1, 4), extension
);
