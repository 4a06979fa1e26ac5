//! Loads drover algorithm plugins, checks their interface version, and guards every call.
//!
//! **API Boundary** for the job runtime: [`Plugin::load`] → [`Plugin::instantiate`] →
//! [`AlgorithmHandle`] methods taking [`RolloutBatch`] / [`LossBatch`] and output slices.
//! Plugin errors, caught plugin panics and non-finite outputs all come back as a
//! [`CallError`] naming the plugin, its version and the call.
//!
//! **Architecture Invariant:** nothing ABI-stable leaks out of this crate's API except
//! [`InterfaceVersion`] and `PluginError` (inside [`CallErrorKind::Plugin`]).

mod batch;
mod error;
mod handle;
mod plugin;

pub use drover_plugin_api::{InterfaceVersion, PluginError, PluginErrorKind, INTERFACE_VERSION};

pub use crate::{
    batch::{LossBatch, RolloutBatch},
    error::{CallError, CallErrorKind, LoadError},
    handle::{AlgorithmHandle, IterationControl, Metric},
    plugin::{ParamInfo, Plugin, PluginInfo},
};
