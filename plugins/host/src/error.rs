//! Errors of loading a plugin (`LoadError`) and of calling into one (`CallError`).

use std::path::PathBuf;

use drover_plugin_api::{InterfaceVersion, PluginError};

/// Why a plugin library could not be loaded. Every variant names the path.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read (for its SHA-256).
    #[error("failed to read plugin `{path}`: {source}")]
    Read {
        /// The plugin path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// `dlopen` failed.
    #[error("failed to open plugin `{path}`: {reason}")]
    Open {
        /// The plugin path.
        path: PathBuf,
        /// The loader's message.
        reason: String,
    },
    /// The library has no interface-version symbol: not a drover plugin, or not built with
    /// `export_algorithm!`.
    #[error(
        "plugin `{path}` does not export `{symbol}`: not a drover algorithm plugin \
         (plugins are built with `drover_plugin_api::export_algorithm!`)"
    )]
    NotAPlugin {
        /// The plugin path.
        path: PathBuf,
        /// The missing symbol.
        symbol: &'static str,
    },
    /// The plugin was built against an interface version this host cannot load.
    #[error(
        "plugin `{path}` was built against drover plugin interface {plugin}, \
         but this drover provides {host} ({rule})"
    )]
    IncompatibleInterface {
        /// The plugin path.
        path: PathBuf,
        /// The plugin's interface version.
        plugin: InterfaceVersion,
        /// This host's interface version.
        host: InterfaceVersion,
        /// The range this host loads, and what to do.
        rule: String,
    },
    /// abi_stable refused the library (its version or layout check, or the root module
    /// constructor failed).
    #[error("plugin `{path}` failed abi_stable's checks: {reason}")]
    Abi {
        /// The plugin path.
        path: PathBuf,
        /// abi_stable's `LibraryError`, rendered (it is not `Send` in general).
        reason: String,
    },
    /// abi_stable's layout check refused the root module: the plugin's frozen v1 types differ
    /// from this host's although the interface majors agree, so one side was built from a
    /// changed drover-plugin-api. Displayed as one short sentence; the whole report (kilobytes
    /// on one type graph) is `report`.
    #[error(
        "plugin `{path}` was built against drover plugin interface {plugin}, whose types do not \
         have the layout this drover (interface {host}) expects: {mismatches} (one of the two was \
         built from a changed drover-plugin-api: rebuild the plugin against this drover's); \
         abi_stable's report: {}",
        crate::plugin::cut_report(report, crate::plugin::REPORT_EXCERPT_CHARS)
    )]
    Layout {
        /// The plugin path.
        path: PathBuf,
        /// The plugin's interface version.
        plugin: InterfaceVersion,
        /// This host's interface version.
        host: InterfaceVersion,
        /// abi_stable's `Error:` entries, each with its type, expected and found values.
        mismatches: String,
        /// abi_stable's whole report, as it printed it.
        report: String,
    },
    /// The plugin provides an extension table whose layout does not match this host's: using
    /// it would be undefined behaviour, so the extension is refused (the plugin itself loaded).
    #[error(
        "plugin `{path}` (interface {plugin}): extension `{name}` (added in interface {since}) \
         does not match the one this drover (interface {host}) expects: {reason}"
    )]
    Extension {
        /// The plugin path.
        path: PathBuf,
        /// The extension's name, e.g. `drover.sequence_loss`.
        name: &'static str,
        /// The interface version that introduced the extension.
        since: InterfaceVersion,
        /// The plugin's interface version.
        plugin: InterfaceVersion,
        /// This host's interface version.
        host: InterfaceVersion,
        /// abi_stable's description of the layout mismatch.
        reason: String,
    },
    /// The plugin declares its parameters inconsistently (a default outside its own range,
    /// `min > max`, a name declared twice, a range on a bool or string):
    /// `drover_plugin_api::PluginInfo::check_params`. The plugin's mistake, not the params'.
    #[error(
        "plugin `{name}` (`{path}`) declares its params wrongly: {reason} (a mistake in the \
         plugin's `info()`, not in the params given to it)"
    )]
    Params {
        /// The plugin path.
        path: PathBuf,
        /// The plugin's name.
        name: String,
        /// The first problem, naming the parameter.
        reason: String,
    },
    /// The plugin's `info` entry failed.
    #[error("plugin `{path}`: call `info`: {source}")]
    Info {
        /// The plugin path.
        path: PathBuf,
        /// What the plugin returned.
        source: PluginError,
    },
}

/// A failed call into a loaded plugin: names the plugin, its version, the call and why.
///
/// Displays as "plugin `ppo` 0.1.0: call `loss`: panic: boom".
#[derive(Debug, thiserror::Error)]
#[error("plugin `{plugin}` {version}: call `{call}`: {kind}")]
pub struct CallError {
    /// The plugin's name.
    pub plugin: String,
    /// The plugin's version.
    pub version: String,
    /// The entry point, e.g. `loss`.
    pub call: &'static str,
    /// What went wrong.
    pub kind: CallErrorKind,
}

impl CallError {
    /// The plugin's own error, if the plugin returned one (panics included).
    pub fn plugin_error(&self) -> Option<&PluginError> {
        match &self.kind {
            CallErrorKind::Plugin(e) => Some(e),
            _ => None,
        }
    }

    /// Whether the plugin panicked (caught inside the plugin; the process is unaffected).
    pub fn is_panic(&self) -> bool {
        self.plugin_error()
            .is_some_and(|e| e.kind() == Some(drover_plugin_api::PluginErrorKind::Panic))
    }
}

/// The reason part of a [`CallError`].
#[derive(Debug, thiserror::Error)]
pub enum CallErrorKind {
    /// The plugin returned an error (a caught panic is `PluginErrorKind::Panic`).
    #[error("{0}")]
    Plugin(Box<PluginError>),
    /// The plugin returned a NaN or infinite value.
    #[error("output `{output}` is not finite at index {index} (value {value})")]
    NonFinite {
        /// Which output buffer.
        output: &'static str,
        /// First offending index.
        index: usize,
        /// The value found.
        value: f32,
    },
    /// The plugin returned a metric the host cannot log: named like a column the host writes
    /// itself (`drover_plugin_api::host_metrics::RESERVED`), empty, or `input.*`.
    #[error("{0}")]
    BadMetric(String),
    /// The host passed inconsistent buffers (a bug in the caller, caught before the call).
    #[error("invalid batch: {0}")]
    InvalidBatch(String),
    /// `resolve_params` returned text that is not JSON.
    #[error("returned malformed JSON: {0}")]
    MalformedJson(String),
}
