//! `drover-job plugin info|check <file.so>`: loads one plugin library in this process and prints
//! one JSON document (`PluginReport`) that `drover plugin list|check` and `drover run`'s
//! parameter validation parse, so the orchestrator never loads a plugin itself. `info
//! --try-params` also creates an instance from each params object read from stdin, so a value
//! the plugin's constructor refuses (an unknown mode name, two keys that contradict) is found
//! before any run is launched.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{Parser, Subcommand};
use drover_plugin_host::{CheckOptions, LoadError, Plugin, INTERFACE_VERSION};
use serde::Serialize;

use crate::exit_codes;

/// Format of the JSON document printed on stdout; bumped on any incompatible change.
pub const PLUGIN_REPORT_FORMAT_VERSION: u32 = 1;

/// `drover-job plugin ...`: inspect a plugin library (used by `drover plugin` and `drover run`).
#[derive(Debug, Parser)]
#[command(name = "drover-job plugin")]
struct PluginCli {
    #[command(subcommand)]
    command: PluginCommand,
}

#[derive(Debug, Subcommand)]
enum PluginCommand {
    /// Load the library and print its description (name, versions, parameters, SHA-256).
    Info {
        /// The plugin library (`.so`).
        file: PathBuf,
        /// Read a JSON array of params objects from stdin and create one instance from each
        /// (seed 0); the verdicts are the report's `instances`, in order.
        #[arg(long)]
        try_params: bool,
    },
    /// Load the library and run the plugin author's test harness on it through the ABI.
    Check {
        /// The plugin library (`.so`).
        file: PathBuf,
        /// Parameters (a JSON object) for the instances under test; default: the defaults.
        #[arg(long, default_value = "{}")]
        params: String,
        /// Seed of the synthetic batches and the instances.
        #[arg(long, default_value_t = 7)]
        seed: u64,
        /// Give the synthetic rollouts the host's `is_expert` column (every third response a
        /// teacher-forced expert one), as `run.expert_per_group` does (CHORD needs it).
        #[arg(long)]
        experts: bool,
    },
}

/// The JSON document: `plugin` on a successful load, `error` otherwise, `checks` for `check`.
#[derive(Debug, Serialize)]
pub struct PluginReport {
    /// Always [`PLUGIN_REPORT_FORMAT_VERSION`].
    pub format_version: u32,
    /// The library, as given.
    pub path: PathBuf,
    /// The plugin's description, when it loaded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plugin: Option<PluginDescription>,
    /// Why it did not load.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<LoadFailure>,
    /// The harness's checks (`check` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checks: Option<Vec<CheckRecord>>,
    /// One verdict per params object (`info --try-params` only); added without a format bump,
    /// since a reader that does not ask for it never sees it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instances: Option<Vec<InstanceRecord>>,
}

/// Whether the plugin's constructor accepted one params object.
#[derive(Debug, Serialize, PartialEq)]
pub struct InstanceRecord {
    /// The constructor returned an instance.
    pub accepted: bool,
    /// The params key the plugin blamed, when it named one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// The plugin's reason, without the kind or key (the whole host message for a failure that
    /// is not the plugin's own error, such as a panic).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// What a loaded plugin says about itself, plus provenance.
#[derive(Debug, Serialize)]
pub struct PluginDescription {
    /// Plugin name.
    pub name: String,
    /// Plugin version.
    pub version: String,
    /// One line.
    pub description: String,
    /// Interface version the plugin was built against, `major.minor`.
    pub interface_version: String,
    /// Interface version of this drover-job, `major.minor`.
    pub host_interface_version: String,
    /// Lowercase hex SHA-256 of the file.
    pub sha256: String,
    /// Every parameter.
    pub params: Vec<ParamRecord>,
}

/// One parameter.
#[derive(Debug, Serialize)]
pub struct ParamRecord {
    /// JSON key.
    pub name: String,
    /// `float`, `int`, `bool`, `string`, or `unknown`.
    pub kind: String,
    /// The default (`null`: optional).
    pub default: serde_json::Value,
    /// Documentation.
    pub doc: String,
    /// Inclusive lower bound.
    pub min: Option<f64>,
    /// Inclusive upper bound.
    pub max: Option<f64>,
}

/// Why a library was refused.
#[derive(Debug, Serialize)]
pub struct LoadFailure {
    /// `read`, `open`, `not_a_plugin`, `incompatible_interface`, `abi`, `extension`, `info` or
    /// `params` (the plugin declares its parameters wrongly).
    pub kind: &'static str,
    /// The full message (names the path and, for versions, both versions).
    pub message: String,
}

/// One harness check.
#[derive(Debug, Serialize)]
pub struct CheckRecord {
    /// Stable name, e.g. `loss_derivatives`.
    pub name: String,
    /// Whether it passed.
    pub passed: bool,
    /// What was checked, or why it failed.
    pub detail: String,
}

fn describe(plugin: &Plugin) -> PluginDescription {
    let info = plugin.info();
    PluginDescription {
        name: info.name.clone(),
        version: info.version.clone(),
        description: info.description.clone(),
        interface_version: plugin.interface_version().to_string(),
        host_interface_version: INTERFACE_VERSION.to_string(),
        sha256: plugin.sha256().to_owned(),
        params: info
            .params
            .iter()
            .map(|p| ParamRecord {
                name: p.name.clone(),
                kind: p.kind.to_owned(),
                default: serde_json::from_str(&p.default)
                    .unwrap_or_else(|_| serde_json::Value::String(p.default.clone())),
                doc: p.doc.clone(),
                min: p.min,
                max: p.max,
            })
            .collect(),
    }
}

/// stdin of `info --try-params`: a JSON array of objects, each kept as its JSON text.
fn read_params_list(input: impl std::io::Read) -> Result<Vec<String>, String> {
    let list: Vec<serde_json::Value> =
        serde_json::from_reader(input).map_err(|e| format!("stdin is not a JSON array of params objects: {e}"))?;
    list.iter()
        .enumerate()
        .map(|(i, v)| match v {
            serde_json::Value::Object(_) => Ok(v.to_string()),
            other => Err(format!("stdin: entry {i} is not a params object: {other}")),
        })
        .collect()
}

/// Creates (and drops) one instance from `params`: what the job's first call will do.
fn try_instance(plugin: &Plugin, params: &str) -> InstanceRecord {
    match plugin.instantiate(params, 0) {
        Ok(_) => InstanceRecord { accepted: true, key: None, reason: None },
        Err(e) => match e.plugin_error() {
            Some(p) if !e.is_panic() => InstanceRecord {
                accepted: false,
                key: p.key().map(str::to_owned),
                reason: Some(p.message().to_owned()),
            },
            _ => InstanceRecord { accepted: false, key: None, reason: Some(e.to_string()) },
        },
    }
}

fn failure(e: &LoadError) -> LoadFailure {
    log_full_report(e);
    let kind = match e {
        LoadError::Read { .. } => "read",
        LoadError::Open { .. } => "open",
        LoadError::NotAPlugin { .. } => "not_a_plugin",
        LoadError::IncompatibleInterface { .. } => "incompatible_interface",
        LoadError::Abi { .. } | LoadError::Layout { .. } => "abi",
        LoadError::Extension { .. } => "extension",
        LoadError::Info { .. } => "info",
        LoadError::Params { .. } => "params",
    };
    LoadFailure {
        kind,
        message: e.to_string(),
    }
}

/// Logs, at debug level, what a load error's message leaves out: abi_stable's whole layout
/// report, which its message cuts to a few hundred characters.
pub fn log_full_report(e: &LoadError) {
    if let LoadError::Layout { path, report, .. } = e {
        tracing::debug!("abi_stable's layout report for `{}`:{report}", path.display());
    }
}

/// Runs `drover-job plugin ...` if that is what the command line asks for, returning the exit
/// code; `None` for every other command line (`--spec ...`), which `main` handles as before.
pub fn run_if_requested() -> Option<u8> {
    let mut args = std::env::args_os();
    let _program = args.next();
    if args.next().as_deref() != Some(std::ffi::OsStr::new("plugin")) {
        return None;
    }
    let argv = std::iter::once(OsString::from("drover-job plugin")).chain(args);
    let cli = match PluginCli::try_parse_from(argv) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return Some(if e.use_stderr() {
                exit_codes::USAGE
            } else {
                exit_codes::COMPLETED
            });
        }
    };
    Some(run(cli.command))
}

fn run(command: PluginCommand) -> u8 {
    let (file, check, try_params) = match command {
        PluginCommand::Info { file, try_params } => (file, None, try_params),
        PluginCommand::Check { file, params, seed, experts } => (file, Some((params, seed, experts)), false),
    };
    // Read before loading: the caller writes all of stdin and then waits for the report.
    let tries = if try_params {
        match read_params_list(std::io::stdin().lock()) {
            Ok(list) => Some(list),
            Err(e) => {
                eprintln!("drover-job plugin info --try-params: {e}");
                return exit_codes::USAGE;
            }
        }
    } else {
        None
    };
    let mut report = PluginReport {
        format_version: PLUGIN_REPORT_FORMAT_VERSION,
        path: file.clone(),
        plugin: None,
        error: None,
        checks: None,
        instances: None,
    };
    let mut code = exit_codes::COMPLETED;
    match Plugin::load(&file) {
        Err(e) => {
            report.error = Some(failure(&e));
            code = exit_codes::FAILED;
        }
        Ok(plugin) => {
            report.plugin = Some(describe(&plugin));
            if let Some(list) = &tries {
                report.instances = Some(list.iter().map(|params| try_instance(&plugin, params)).collect());
            }
            if let Some((params, seed, experts)) = check {
                let opts = CheckOptions {
                    seed,
                    experts,
                    ..CheckOptions::default()
                };
                let checks = plugin.check(&params, &opts);
                if !checks.passed() {
                    code = exit_codes::FAILED;
                }
                report.checks = Some(
                    checks
                        .checks
                        .into_iter()
                        .map(|c| CheckRecord {
                            name: c.name.to_owned(),
                            passed: c.passed,
                            detail: c.detail,
                        })
                        .collect(),
                );
            }
        }
    }
    match serde_json::to_string_pretty(&report) {
        Ok(text) => println!("{text}"),
        Err(e) => {
            eprintln!("drover-job plugin: cannot serialize the report: {e}");
            return exit_codes::FAILED;
        }
    }
    code
}
