//! Loads drover algorithm plugins, checks their interface version, and guards every call.
//!
//! **API Boundary** for the job runtime: [`Plugin::load`] → [`Plugin::instantiate`] →
//! [`AlgorithmHandle`] methods taking [`RolloutBatch`] / [`LossBatch`] and output slices.
//! Plugin errors, caught plugin panics and non-finite outputs all come back as a
//! [`CallError`] naming the plugin, its version and the call.
//!
//! Extensions of later minor interface versions come through [`Plugin::extension`], checked
//! against this host's layout first; [`Plugin::sequence_loss`] is the typed helper of the
//! 1.1 one, [`Plugin::plugin_state`] of the 1.3 one (state saved in checkpoints). The 1.3
//! minibatch context needs no helper: [`AlgorithmHandle::loss`] and
//! [`AlgorithmHandle::sequence_loss`] send a [`LossBatch`]'s [`MinibatchContext`] themselves.
//!
//! **Architecture Invariant:** nothing ABI-stable leaks out of this crate's API except
//! [`InterfaceVersion`], `PluginError` (inside [`CallErrorKind::Plugin`]) and the extension
//! tables [`Plugin::extension`] returns.

mod batch;
mod check;
mod error;
mod handle;
mod plugin;

pub use drover_plugin_api::{InterfaceVersion, PluginError, PluginErrorKind, INTERFACE_VERSION};
/// The harness `Plugin::check` runs (the same as a plugin's own `cargo test` uses).
pub use drover_plugin_api::testing::{Check, CheckOptions, CheckReport};

pub use crate::{
    batch::{LossBatch, MinibatchContext, RolloutBatch},
    error::{CallError, CallErrorKind, LoadError},
    handle::{AlgorithmHandle, IterationControl, Metric},
    plugin::{ParamInfo, Plugin, PluginInfo, PluginState, SequenceLoss},
};
