//! `drover plugin new|list|check`: argument types (clap) and what each command prints.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::fmt::Write as _;
use std::io::Write;
use std::path::{Path, PathBuf};

use clap::Subcommand;

use super::probe::{CheckResult, PluginDescription, PluginProbe};
use super::template::{create_project, ApiDependency, NewPluginSpec};
use super::validate::validate_params;
use crate::config::PluginSearch;
use crate::error::{PluginCmdError, PluginProbeError};
use crate::exit_codes;

/// `drover plugin ...`.
#[derive(Debug, Subcommand)]
pub enum PluginCommand {
    /// Write a new standalone plugin project (REINFORCE with a learned baseline, tests, README).
    New {
        /// Plugin name (`[a-z][a-z0-9_]*`); the crate is `drover-plugin-<name>`.
        name: String,
        /// Project directory (default: `./<name>`); must not exist or be empty.
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Depend on `drover-plugin-api` at this path (default: drover's source tree when
        /// it is still where drover was built, else the released version).
        #[arg(long, value_name = "DIR")]
        api_path: Option<PathBuf>,
    },
    /// List the plugins on the search path: name, versions, provenance and parameters.
    List {
        /// Extra directories, searched first (like `plugin_path` in a sweep file).
        #[arg(long = "plugin-path", value_name = "DIR")]
        plugin_path: Vec<PathBuf>,
        /// Print JSON instead of text: an object with `format_version` (1), `plugins` (each
        /// plugin's description), `refused` ([{path, reason}]), `not_plugins` (how many other
        /// libraries were skipped) and `warnings` (sentences).
        #[arg(long)]
        json: bool,
    },
    /// Run the plugin test harness on a built plugin (a name on the search path, or a path).
    Check {
        /// Plugin name or path to its `.so`.
        plugin: String,
        /// Parameters (a JSON object) for the instances under test; default: the defaults.
        #[arg(long, default_value = "{}")]
        params: String,
        /// Give the synthetic rollouts the host's `is_expert` column (every third response a
        /// teacher-forced expert one), as `run.expert_per_group` does: for algorithms that
        /// learn from expert answers (CHORD).
        #[arg(long)]
        experts: bool,
        /// Extra directories, searched first.
        #[arg(long = "plugin-path", value_name = "DIR")]
        plugin_path: Vec<PathBuf>,
    },
}

/// The process facts the commands need (explicit, so tests need no global state).
#[derive(Debug, Clone, Default)]
pub struct PluginEnv {
    /// `drover-job`, which inspects plugins.
    pub job_bin: PathBuf,
    /// `DROVER_PLUGIN_PATH`.
    pub plugin_path_env: Option<OsString>,
    /// The drover binary's directory.
    pub exe_dir: Option<PathBuf>,
}

/// Runs one `drover plugin` command, printing to `out`; returns the exit code.
///
/// # Errors
/// A [`PluginCmdError`]; failed checks are an exit code, not an error.
pub fn run(command: PluginCommand, env: &PluginEnv, out: &mut dyn Write) -> Result<u8, PluginCmdError> {
    let io = |source| PluginCmdError::Io { action: "write to", path: PathBuf::from("<stdout>"), source };
    match command {
        PluginCommand::New { name, dir, api_path } => {
            let search = PluginSearch::new(&[], env.plugin_path_env.as_deref(), env.exe_dir.as_deref());
            if let Ok(existing) = search.resolve(&name, Path::new("")) {
                return Err(PluginCmdError::NameTaken { name, existing });
            }
            let dir = dir.unwrap_or_else(|| PathBuf::from(&name));
            let api = match api_path {
                Some(p) => ApiDependency::from_path(&p)?,
                None => ApiDependency::detect(),
            };
            // With a path dependency, start from drover's own lock file: same versions as drover.
            let lockfile = api.lockfile();
            let spec = NewPluginSpec { name: name.clone(), dir: dir.clone(), api: api.clone(), lockfile };
            create_project(&spec)?;
            let dep = match &api {
                ApiDependency::Path(p) => format!("path {}", p.display()),
                ApiDependency::Version(v) => format!("version {v}"),
            };
            writeln!(
                out,
                "created plugin `{name}` in {} (drover-plugin-api: {dep})\nnext: cd {} && cargo test && cargo build --release && drover run sweep.toml",
                dir.display(),
                dir.display()
            )
            .map_err(io)?;
            Ok(exit_codes::SUCCESS)
        }
        PluginCommand::List { plugin_path, json } => {
            let probe = PluginProbe::new(&env.job_bin);
            let search = PluginSearch::new(&plugin_path, env.plugin_path_env.as_deref(), env.exe_dir.as_deref());
            let mut listing = list(&probe, search.dirs())?;
            // As `drover run` warns about a sweep's `plugin_path`: a folder asked for explicitly
            // that is not there is most often a project not built yet, or a typo.
            listing.warnings =
                plugin_path.iter().filter_map(|d| crate::config::search_folder_problem(d)).map(|p| format!("`--plugin-path` {p}")).collect();
            if json {
                let text = serde_json::to_string_pretty(&ListJson::new(&listing))
                    .map_err(|e| PluginCmdError::Io { action: "serialize", path: "<stdout>".into(), source: e.into() })?;
                writeln!(out, "{text}").map_err(io)?;
            } else {
                out.write_all(render_list(&listing, search.dirs()).as_bytes()).map_err(io)?;
            }
            Ok(exit_codes::SUCCESS)
        }
        PluginCommand::Check { plugin, params, experts, plugin_path } => {
            let object = match serde_json::from_str::<serde_json::Value>(&params) {
                Ok(serde_json::Value::Object(object)) => object,
                Ok(other) => return Err(PluginCmdError::BadParams(format!("expected a JSON object, got {other}"))),
                Err(e) => return Err(PluginCmdError::BadParams(format!("not JSON: {e}"))),
            };
            let search = PluginSearch::new(&plugin_path, env.plugin_path_env.as_deref(), env.exe_dir.as_deref());
            let path = search.resolve(&plugin, Path::new("<command line>")).map_err(|e| PluginCmdError::NotFound(*e.kind))?;
            let probe = PluginProbe::new(&env.job_bin);
            // Bad parameters are the author's typo, not a failing plugin: say which key and why,
            // as `drover run` does, instead of reporting every check that needs an instance.
            let described = probe.info(&path)?;
            validate_params(&described, &object).map_err(|p| {
                PluginCmdError::BadParams(format!(
                    "key `{}`: rejected by plugin `{}` {}: {}",
                    p.key, described.name, described.version, p.reason
                ))
            })?;
            let canonical = crate::config::canonical_json(&serde_json::Value::Object(object.clone()));
            if let Some(Some(refusal)) = probe.try_params(&path, &[&canonical])?.pop() {
                let prefix = refusal.params_key().map(|k| format!("key `{k}`: ")).unwrap_or_default();
                return Err(PluginCmdError::BadParams(format!(
                    "{prefix}rejected by plugin `{}` {}: {}",
                    described.name, described.version, refusal.reason
                )));
            }
            let result = probe.check(&path, &params, experts)?;
            let mut text = render_check(&result);
            if !experts && needs_experts(&result) {
                let _ = writeln!(
                    text,
                    "hint: the plugin asks for expert responses (`is_expert`), which the host sends with \
                     `run.expert_per_group`; check it with them: drover plugin check {plugin} --experts"
                );
            }
            out.write_all(text.as_bytes()).map_err(io)?;
            Ok(if result.passed() { exit_codes::SUCCESS } else { exit_codes::FAILURE })
        }
    }
}

/// What `drover plugin list` found.
#[derive(Debug, Clone, Default)]
pub struct Listing {
    /// Loadable plugins, in search order.
    pub plugins: Vec<PluginDescription>,
    /// Plugin libraries drover-job refused (path, reason).
    pub refused: Vec<(PathBuf, String)>,
    /// Shared libraries that are not drover plugins.
    pub not_plugins: usize,
    /// About the search itself (a `--plugin-path` folder that does not exist); each plugin's
    /// own warnings are [`plugin_warnings`].
    pub warnings: Vec<String>,
}

/// `drover plugin list --json` (format_version 1): the plugins as before under `plugins`, and
/// what the text output also says, so a script sees a refused library or a warning too.
#[derive(Debug, serde::Serialize)]
struct ListJson<'a> {
    format_version: u32,
    plugins: &'a [PluginDescription],
    refused: Vec<RefusedJson<'a>>,
    not_plugins: usize,
    /// The search's warnings, then each plugin's, naming its file.
    warnings: Vec<String>,
}

#[derive(Debug, serde::Serialize)]
struct RefusedJson<'a> {
    path: &'a Path,
    reason: &'a str,
}

impl<'a> ListJson<'a> {
    fn new(listing: &'a Listing) -> Self {
        let mut warnings = listing.warnings.clone();
        for (i, p) in listing.plugins.iter().enumerate() {
            warnings.extend(plugin_warnings(listing, i).into_iter().map(|w| format!("plugin `{}` at `{}`: {w}", p.name, p.path.display())));
        }
        ListJson {
            format_version: 1,
            plugins: &listing.plugins,
            refused: listing.refused.iter().map(|(path, reason)| RefusedJson { path, reason }).collect(),
            not_plugins: listing.not_plugins,
            warnings,
        }
    }
}

/// The warnings about plugin `i` of the listing: a file named unlike its plugin (a sweep naming
/// the plugin does not find it), and a plugin of the same name listed before it.
pub fn plugin_warnings(listing: &Listing, i: usize) -> Vec<String> {
    let p = &listing.plugins[i];
    let mut warnings = Vec::new();
    // A sweep finds a plugin by its own name: say when the file is under another one, and
    // when an earlier folder's plugin of the same name is the one a sweep gets.
    let names = crate::config::file_names_of_plugin(&p.name);
    if !p.path.file_name().and_then(|n| n.to_str()).is_some_and(|n| names.iter().any(|f| f == n)) {
        warnings.push(format!(
            "its file name is not `{}`: `run.plugin = \"{}\"` does not find it, and a sweep naming the file's name refuses it",
            names[0], p.name
        ));
    }
    if let Some(first) = listing.plugins[..i].iter().find(|q| q.name == p.name) {
        warnings.push(format!(
            "a plugin named `{}` is listed above ({}): a sweep naming it gets the first one found",
            p.name,
            first.path.display()
        ));
    }
    warnings
}

fn list(probe: &PluginProbe, dirs: &[PathBuf]) -> Result<Listing, PluginCmdError> {
    let mut listing = Listing::default();
    let mut seen = BTreeSet::new();
    for dir in dirs {
        let Ok(entries) = std::fs::read_dir(dir) else { continue };
        let mut files: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.is_file()
                    && p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                        n.starts_with(std::env::consts::DLL_PREFIX) && n.ends_with(std::env::consts::DLL_SUFFIX)
                    })
            })
            .collect();
        files.sort();
        for file in files {
            let file = file.canonicalize().unwrap_or(file);
            if !seen.insert(file.clone()) {
                continue;
            }
            match probe.info(&file) {
                Ok(desc) => listing.plugins.push(desc),
                // A library named like a drover plugin that is not one is a mistake worth
                // showing; any other library in a search directory is simply not ours.
                Err(PluginProbeError::Refused { kind, message, .. }) if kind == "not_a_plugin" => {
                    if named_like_a_plugin(&file) {
                        listing.refused.push((file, message));
                    } else {
                        listing.not_plugins += 1;
                    }
                }
                Err(PluginProbeError::Refused { message, .. }) => listing.refused.push((file, message)),
                Err(e @ PluginProbeError::Spawn { .. }) => return Err(e.into()),
                Err(e) => listing.refused.push((file, e.to_string())),
            }
        }
    }
    Ok(listing)
}

/// Whether the file name is `libdrover_plugin_<name>.so`, the name cargo gives a plugin crate.
fn named_like_a_plugin(file: &Path) -> bool {
    file.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with(&format!("{}drover_plugin_", std::env::consts::DLL_PREFIX)))
}

fn range(min: Option<f64>, max: Option<f64>) -> String {
    match (min, max) {
        (Some(a), Some(b)) => format!("[{a}, {b}]"),
        (Some(a), None) => format!(">= {a}"),
        (None, Some(b)) => format!("<= {b}"),
        (None, None) => String::new(),
    }
}

/// The text of `drover plugin list`.
pub fn render_list(listing: &Listing, dirs: &[PathBuf]) -> String {
    let mut s = String::new();
    for (i, p) in listing.plugins.iter().enumerate() {
        let _ = writeln!(s, "{} {}  (interface {}) — {}", p.name, p.version, p.interface_version, p.description);
        let _ = writeln!(s, "  path    {}", p.path.display());
        for warning in plugin_warnings(listing, i) {
            let _ = writeln!(s, "  warning {warning}");
        }
        let _ = writeln!(s, "  host    drover-job of interface {}", p.host_interface_version);
        let _ = writeln!(s, "  sha256  {}", p.sha256);
        if p.params.is_empty() {
            let _ = writeln!(s, "  params  none");
        }
        // Columns as wide as this plugin's longest entry, so a long key (`schedule_iterations`)
        // does not push its line's later columns out of line with the others.
        let defaults: Vec<String> = p.params.iter().map(|q| q.default.to_string()).collect();
        let ranges: Vec<String> = p.params.iter().map(|q| range(q.min, q.max)).collect();
        let width = |cells: &mut dyn Iterator<Item = usize>, min: usize| cells.max().unwrap_or(0).max(min);
        let name_w = width(&mut p.params.iter().map(|q| q.name.chars().count()), 14);
        let default_w = width(&mut defaults.iter().map(|d| d.chars().count()), 8);
        let range_w = width(&mut ranges.iter().map(|r| r.chars().count()), 12);
        for ((q, default), range) in p.params.iter().zip(&defaults).zip(&ranges) {
            let _ = writeln!(
                s,
                "  {:<name_w$} {:<6} default {:<default_w$} {:<range_w$} {}",
                q.name, q.kind, default, range, q.doc
            );
        }
        let _ = writeln!(s);
    }
    for (path, why) in &listing.refused {
        let _ = writeln!(s, "refused {}: {why}\n", path.display());
    }
    for warning in &listing.warnings {
        let _ = writeln!(s, "warning: {warning}");
    }
    let dirs: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
    let _ = writeln!(
        s,
        "{}, {} refused, {} skipped; searched: {}",
        crate::words::count(listing.plugins.len(), "plugin"),
        listing.refused.len(),
        crate::words::count_as(listing.not_plugins, "other library", "other libraries"),
        if dirs.is_empty() { "no directory".to_string() } else { dirs.join(", ") }
    );
    s
}

/// Whether a failed check says the plugin refused a rollout without the `is_expert` column
/// (`drover_plugin_api::metadata::IS_EXPERT`; drover does not link the API crate).
fn needs_experts(result: &CheckResult) -> bool {
    result.checks.iter().any(|c| !c.passed && c.detail.contains("is_expert"))
}

/// The text of `drover plugin check`.
pub fn render_check(result: &CheckResult) -> String {
    let p = &result.plugin;
    let mut s = format!("{} {} (interface {}) at {}\n", p.name, p.version, p.interface_version, p.path.display());
    for c in &result.checks {
        let status = if c.passed { "ok  " } else { "FAIL" };
        let _ = writeln!(s, "{status} {:<30} {}", c.name, c.detail);
    }
    let failed = result.checks.iter().filter(|c| !c.passed).count();
    let _ = writeln!(
        s,
        "{}: {} checks, {failed} failed",
        if failed == 0 { "passed" } else { "FAILED" },
        result.checks.len()
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugin_cmd::probe::ParamDescription;

    fn param(name: &str, default: serde_json::Value, min: Option<f64>) -> ParamDescription {
        ParamDescription { name: name.into(), kind: "float".into(), default, doc: "Doc.".into(), min, max: None }
    }

    /// `plugin new ppo` next to a shipped `ppo`: the new project's sweep would train the
    /// shipped one until the project is built, so the name is refused and nothing is written.
    #[test]
    fn a_name_already_on_the_search_path_is_refused() {
        let tmp = tempfile::tempdir().expect("tempdir");
        std::fs::write(tmp.path().join("libdrover_plugin_ppo.so"), b"").expect("plugin");
        let env = PluginEnv { exe_dir: Some(tmp.path().to_path_buf()), ..PluginEnv::default() };
        let api = fake_api_crate(tmp.path());
        let new = |name: &str| PluginCommand::New { name: name.into(), dir: Some(tmp.path().join(name)), api_path: Some(api.clone()) };
        let err = run(new("ppo"), &env, &mut Vec::new()).expect_err("a shipped name").to_string();
        assert!(err.starts_with("a plugin named `ppo` is already on drover's search path"), "{err}");
        assert!(err.contains("libdrover_plugin_ppo.so") && err.contains("e.g. `my_ppo`"), "{err}");
        assert!(!tmp.path().join("ppo").exists(), "nothing written");
        let mut out = Vec::new();
        run(new("my_ppo"), &env, &mut out).expect("a free name");
        assert!(tmp.path().join("my_ppo/sweep.toml").is_file());
    }

    /// `<dir>/api/Cargo.toml` declaring the package `drover-plugin-api`; returns `<dir>/api`.
    fn fake_api_crate(dir: &Path) -> PathBuf {
        let api = dir.join("api");
        std::fs::create_dir_all(&api).expect("api dir");
        std::fs::write(api.join("Cargo.toml"), "[package]\nname = \"drover-plugin-api\"\nversion = \"1.3.0\"\n").expect("manifest");
        api
    }

    /// Review finding: `--api-path /nonexistent/api` exited 0 and wrote a project depending on
    /// a path that does not exist; a folder holding another crate was taken as well.
    #[test]
    fn an_api_path_without_the_api_crate_is_refused_naming_the_flag_and_the_path() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let env = PluginEnv { exe_dir: Some(tmp.path().to_path_buf()), ..PluginEnv::default() };
        let other = tmp.path().join("other");
        std::fs::create_dir_all(&other).expect("other");
        std::fs::write(other.join("Cargo.toml"), "[package]\nname = \"serde\"\n").expect("manifest");
        let empty = tmp.path().join("empty");
        std::fs::create_dir_all(&empty).expect("empty");
        let missing = tmp.path().join("nonexistent/api");
        for (api, reason) in [
            (&missing, "cannot be read ("),
            (&empty, "no `Cargo.toml` there ("),
            (&other, "its `Cargo.toml` is the crate `serde`, not `drover-plugin-api`"),
        ] {
            let dir = tmp.path().join("algo");
            let cmd = PluginCommand::New { name: "algo".into(), dir: Some(dir.clone()), api_path: Some(api.clone()) };
            let err = run(cmd, &env, &mut Vec::new()).expect_err("refused").to_string();
            assert!(err.starts_with(&format!("`--api-path {}`: {reason}", api.display())), "{err}");
            assert!(!dir.exists(), "nothing written for {}", api.display());
        }
    }

    /// Review findings: `--plugin-path /nonexistent` passed in silence (`drover run` warns), and
    /// `--json` printed the plugins alone, dropping refused libraries and warnings.
    #[test]
    fn a_missing_plugin_path_is_warned_about_and_json_keeps_refusals_and_warnings() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let missing = tmp.path().join("target/release");
        let list = |json: bool| {
            let mut out = Vec::new();
            let cmd = PluginCommand::List { plugin_path: vec![missing.clone()], json };
            run(cmd, &PluginEnv::default(), &mut out).expect("lists");
            String::from_utf8(out).expect("utf-8")
        };
        let warning = format!("`--plugin-path` folder `{}` does not exist (not built yet?)", missing.display());
        let text = list(false);
        assert!(text.contains(&format!("warning: {warning}\n")), "{text}");
        assert!(text.contains("0 plugins, 0 refused, 0 other libraries skipped"), "{text}");
        let json: serde_json::Value = serde_json::from_str(&list(true)).expect("JSON");
        assert_eq!(json["format_version"], 1, "{json}");
        assert_eq!(json["plugins"], serde_json::json!([]), "{json}");
        assert_eq!(json["warnings"], serde_json::json!([warning]), "{json}");

        let plugin = |path: &str| description(path, Vec::new());
        let listing = Listing {
            plugins: vec![plugin("/a/libdrover_plugin_x.so"), plugin("/b/libcopy.so")],
            refused: vec![("/a/libdrover_plugin_text.so".into(), "not a shared library".into())],
            not_plugins: 1,
            warnings: Vec::new(),
        };
        let text = render_list(&listing, &[]);
        assert!(text.contains("2 plugins, 1 refused, 1 other library skipped"), "{text}");
        let json = serde_json::to_value(ListJson::new(&listing)).expect("JSON");
        assert_eq!(json["refused"], serde_json::json!([{"path": "/a/libdrover_plugin_text.so", "reason": "not a shared library"}]));
        assert_eq!(json["not_plugins"], 1);
        let warnings: Vec<&str> = json["warnings"].as_array().expect("warnings").iter().filter_map(|w| w.as_str()).collect();
        assert_eq!(warnings.len(), 2, "{json}");
        assert!(warnings[0].starts_with("plugin `x` at `/b/libcopy.so`: its file name is not `libdrover_plugin_x.so`"), "{json}");
        assert!(warnings[1].starts_with("plugin `x` at `/b/libcopy.so`: a plugin named `x` is listed above (/a/libdrover_plugin_x.so)"), "{json}");
        // Each plugin's warnings are also in the text, under it.
        assert!(text.contains("  warning its file name is not `libdrover_plugin_x.so`"), "{text}");
    }

    /// Plugin `x` 0.1.0 at `path`, of interface 1.3, with `params`.
    fn description(path: &str, params: Vec<ParamDescription>) -> PluginDescription {
        PluginDescription {
            path: path.into(),
            name: "x".into(),
            version: "0.1.0".into(),
            description: "d".into(),
            interface_version: "1.3".into(),
            host_interface_version: "1.3".into(),
            sha256: "0".repeat(64),
            params,
        }
    }

    #[test]
    fn parameter_columns_line_up_whatever_the_key_length() {
        let plugin = description(
            "/p/libdrover_plugin_x.so",
            vec![
                param("gamma", serde_json::json!(0.99), Some(0.0)),
                param("schedule_iterations", serde_json::json!("a long default"), None),
            ],
        );
        let listing = Listing { plugins: vec![plugin], ..Listing::default() };
        let text = render_list(&listing, &[]);
        let rows: Vec<&str> = text.lines().filter(|l| l.contains("Doc.")).collect();
        assert_eq!(rows.len(), 2, "{text}");
        let column = |row: &str, cell: &str| row.find(cell).unwrap_or_else(|| panic!("`{cell}` in `{row}`"));
        assert_eq!(column(rows[0], "float"), column(rows[1], "float"), "{text}");
        assert_eq!(column(rows[0], "Doc."), column(rows[1], "Doc."), "{text}");
        assert!(rows[0].contains("default 0.99"), "{text}");
    }
}
