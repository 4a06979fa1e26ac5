//! The `Algorithm` trait object and the `AlgorithmMod` root module every plugin exports.
#![expect(
    non_local_definitions,
    reason = "abi_stable 0.11's `#[sabi_trait]` emits impls inside a const"
)]
#![expect(
    non_camel_case_types,
    reason = "abi_stable names the prefix reference `AlgorithmMod_Ref`"
)]

use abi_stable::{
    declare_root_module_statics,
    library::RootModule,
    sabi_trait,
    sabi_types::VersionStrings,
    std_types::{RBox, ROption, RResult, RSlice, RSliceMut, RStr, RString, RVec},
    StableAbi,
};

use crate::{
    error::PluginError,
    ext::Extension,
    types::{IterationControl, IterationInfo, Metric, PluginInfo},
    version::ROOT_MODULE_VERSION,
    views::{LossViewRef, RolloutViewRef},
};

/// One instance of an algorithm, created by [`AlgorithmMod::new`].
///
/// **Frozen for major 1**: no method is ever added, removed or changed within interface 1.x.
/// abi_stable refuses a library whose vtable has fewer methods than the host's, so appending
/// one would lock out every plugin built before; per-instance capabilities of a later minor
/// version are extension tables instead (see [`crate::ext`]).
/// Plugin authors do not implement this directly: they implement
/// [`AlgorithmImpl`](crate::AlgorithmImpl) and call [`export_algorithm!`](crate::export_algorithm).
#[sabi_trait]
pub trait Algorithm: Send {
    /// Advantage stage: fills `advantages` and `returns` (both `B·T`) from a rollout batch.
    /// Returns metrics to log.
    fn compute_advantages(
        &mut self,
        batch: RolloutViewRef<'_>,
        advantages: RSliceMut<'_, f32>,
        returns: RSliceMut<'_, f32>,
    ) -> RResult<RVec<Metric>, PluginError>;

    /// Loss stage: for each token `i` of the minibatch writes `loss[i]`, and the derivatives of
    /// the total `L = Σ_i loss[i]` w.r.t. token `i`'s new log-prob, value and entropy, with the
    /// aggregation weights already folded in (the host sums, never re-weights).
    fn loss(
        &mut self,
        mb: LossViewRef<'_>,
        loss: RSliceMut<'_, f32>,
        d_logp: RSliceMut<'_, f32>,
        d_value: RSliceMut<'_, f32>,
        d_entropy: RSliceMut<'_, f32>,
    ) -> RResult<RVec<Metric>, PluginError>;

    /// Called after each update epoch with that epoch's mean metrics; `false` stops the
    /// remaining epochs of this iteration (CleanRL's `target_kl`).
    fn on_epoch_end(
        &mut self,
        epoch: u32,
        metrics: RSlice<'_, Metric>,
    ) -> RResult<bool, PluginError>;

    /// Called after each iteration; adapts coefficients, may resize groups or stop training.
    fn on_iteration(&mut self, info: IterationInfo<'_>) -> RResult<IterationControl, PluginError>;

    /// Group predicate for dynamic sampling (DAPO): keep a group with these rewards?
    #[sabi(last_prefix_field)]
    fn keep_group(&self, rewards: RSlice<'_, f32>) -> RResult<bool, PluginError>;
}

/// An owned algorithm instance as it crosses the ABI.
pub type AlgorithmBox = Algorithm_TO<'static, RBox<()>>;

/// The root module of an algorithm plugin.
///
/// **Frozen for major 1**: abi_stable's layout check lets a library's prefix type have more
/// fields than the host's, never fewer, so a field appended in 1.1 would refuse every 1.0
/// plugin. New capabilities come through [`extension`](AlgorithmMod::extension) instead; the
/// layout is pinned by `plugins/api/tests/frozen_layout.rs` (against
/// `plugins/api/tests/v1_root_module.layout`).
#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = AlgorithmMod_Ref)))]
pub struct AlgorithmMod {
    /// Describes the plugin and its parameters.
    pub info: extern "C" fn() -> RResult<PluginInfo, PluginError>,
    /// Validates a params JSON object and returns it with defaults filled in, as JSON text,
    /// without creating an instance (for up-front checks of a whole sweep).
    pub resolve_params: extern "C" fn(params_json: RStr<'_>) -> RResult<RString, PluginError>,
    /// Creates an instance from a params JSON object and a seed.
    pub new: extern "C" fn(params_json: RStr<'_>, seed: u64) -> RResult<AlgorithmBox, PluginError>,
    /// Looks up an extension table by [`ExtensionTable::NAME`](crate::ext::ExtensionTable::NAME):
    /// `RNone` when the plugin does not provide it (or does not know the name, being older).
    #[sabi(last_prefix_field)]
    pub extension: extern "C" fn(name: RStr<'_>) -> ROption<Extension>,
}

impl RootModule for AlgorithmMod_Ref {
    declare_root_module_statics! {AlgorithmMod_Ref}
    const BASE_NAME: &'static str = "drover_algorithm";
    const NAME: &'static str = "drover algorithm plugin";
    const VERSION_STRINGS: VersionStrings = VersionStrings::new(ROOT_MODULE_VERSION);
}
