//! Plugins seen from the orchestrator: `drover plugin new|list|check`, and the check of every
//! run's `[params]` against its plugin's description before anything is launched.
//!
//! **Architecture Invariant:** nothing here loads a plugin. Every question about a library is
//! asked of a `drover-job plugin info|check <file>` subprocess (`probe.rs`), whose JSON answer
//! is this module's own boundary type; a plugin that crashes takes only that subprocess down.

mod cli;
mod probe;
mod sweep_params;
mod template;
mod validate;

pub use cli::{run, PluginCommand, PluginEnv};
pub use probe::{
    CheckRecord, CheckResult, ParamDescription, ParamsRefusal, PluginDescription, PluginProbe, PLUGIN_REPORT_FORMAT_VERSION,
};
pub(crate) use sweep_params::{
    check_plugin_params, describe_plugins, refuse_parameters_without_their_table, refuse_the_same_training_twice, training_key,
};
pub use template::{create_project, ApiDependency, NewPluginSpec};
pub use validate::{keys_at_default, retype_params, validate_params, ParamProblem};
