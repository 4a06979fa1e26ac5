//! The ABI-stable interface drover algorithm plugins compile against.
//!
//! A plugin is a `cdylib` that depends on this crate only. It implements [`AlgorithmImpl`]
//! on plain Rust slices and calls [`export_algorithm!`] once; the macro exports the
//! [`AlgorithmMod`] root module (an abi_stable prefix type), an [`Algorithm`] trait object per
//! instance, and the interface-version symbol the host checks first. `plugins/ppo` is the
//! reference plugin; `docs/writing-a-plugin.md` the guide; `docs/design/plugin-abi.md` the
//! design and the version policy.
//!
//! **API Boundary.** Everything public here is the contract third parties build against. The
//! v1 types that cross the ABI are frozen for major 1; a minor version adds extension tables
//! in [`ext`] (see [`INTERFACE_VERSION`]).
#![warn(missing_docs)]

mod algorithm;
mod authoring;
mod error;
pub mod ext;
pub mod host_metrics;
pub mod metadata;
pub mod llm;
mod params;
mod rng;
pub mod state;
#[cfg(feature = "testing")]
pub mod testing;
mod types;
mod version;
mod views;

pub use abi_stable::std_types::{ROption, RResult, RSlice, RSliceMut, RStr, RString, RVec};

pub use crate::{
    algorithm::{Algorithm, AlgorithmBox, AlgorithmMod, AlgorithmMod_Ref, Algorithm_TO},
    authoring::{
        AlgorithmImpl, LossOutputs, Minibatch, MinibatchPosition, Rollout, SequenceLossFn, StateFns,
    },
    error::{PluginError, PluginErrorKind, PluginErrorKind_NE},
    params::Params,
    rng::CounterRng,
    types::{
        IterationControl, IterationInfo, Metric, NextPrompts, ParamKind, ParamKind_NE, ParamSpec, PluginInfo, INPUT_PREFIX,
    },
    version::{InterfaceVersion, INTERFACE_VERSION, VERSION_SYMBOL},
    views::{LossView, LossViewRef, LossView_TO, RolloutView, RolloutViewRef, RolloutView_TO},
};

/// Items the export macro and the host use; not part of the author-facing API.
#[doc(hidden)]
pub mod __private {
    pub use crate::authoring::{extension_entry, extension_entry_as_of, root_module, Adapter};
    pub use abi_stable;
}
