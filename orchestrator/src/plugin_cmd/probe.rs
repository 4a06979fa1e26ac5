//! `PluginProbe`: asks `drover-job plugin info|check <file>` about a library and parses its JSON
//! report (format in `jobs/src/plugin_cmd.rs`, `format_version` 1); `info --try-params` has the
//! plugin's constructor judge params objects before anything is launched.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde::{Deserialize, Serialize};

use crate::error::PluginProbeError;

/// The report format this drover reads.
pub const PLUGIN_REPORT_FORMAT_VERSION: u32 = 1;

/// One parameter of a plugin, as the plugin declares it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ParamDescription {
    /// JSON key (`[params]` key in a sweep file).
    pub name: String,
    /// `float`, `int`, `bool`, `string`, or `unknown` (a kind newer than this drover-job).
    pub kind: String,
    /// The default; `null` makes the parameter optional.
    pub default: serde_json::Value,
    /// One or two sentences.
    pub doc: String,
    /// Inclusive lower bound (numeric kinds).
    pub min: Option<f64>,
    /// Inclusive upper bound (numeric kinds).
    pub max: Option<f64>,
}

/// What a library says about itself, plus its provenance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PluginDescription {
    /// The library (absolute when it came from the search path).
    #[serde(default)]
    pub path: PathBuf,
    /// Plugin name.
    pub name: String,
    /// Plugin version.
    pub version: String,
    /// One line.
    pub description: String,
    /// Interface version the plugin was built against.
    pub interface_version: String,
    /// Interface version of the drover-job that inspected it.
    pub host_interface_version: String,
    /// SHA-256 of the library, hex.
    pub sha256: String,
    /// Its parameters.
    pub params: Vec<ParamDescription>,
}

/// One check of the plugin author's harness.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckRecord {
    /// Stable name, e.g. `loss_derivatives`.
    pub name: String,
    /// Whether it passed.
    pub passed: bool,
    /// What was checked, or why it failed.
    pub detail: String,
}

/// `drover-job plugin check`'s answer.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckResult {
    /// The plugin checked.
    pub plugin: PluginDescription,
    /// Every check, in order.
    pub checks: Vec<CheckRecord>,
}

impl CheckResult {
    /// Whether every check passed.
    pub fn passed(&self) -> bool {
        self.checks.iter().all(|c| c.passed)
    }
}

/// The plugin constructor's refusal of one params object.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ParamsRefusal {
    /// The params key the plugin blamed, when it named one (`<params>` for the whole object).
    pub key: Option<String>,
    /// Why, in the plugin's words.
    pub reason: String,
}

impl ParamsRefusal {
    /// The params key to name in a message: `None` when the plugin blamed the object as a whole
    /// (no key, or the plugin SDK's `<params>`).
    pub fn params_key(&self) -> Option<&str> {
        self.key.as_deref().filter(|k| *k != "<params>" && !k.is_empty())
    }
}

#[derive(Debug, Deserialize)]
struct Report {
    format_version: u32,
    plugin: Option<PluginDescription>,
    error: Option<Failure>,
    checks: Option<Vec<CheckRecord>>,
    instances: Option<Vec<InstanceRecord>>,
}

#[derive(Debug, Deserialize)]
struct InstanceRecord {
    accepted: bool,
    key: Option<String>,
    reason: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Failure {
    kind: String,
    message: String,
}

/// How long `drover-job plugin info` (with `--try-params`) may take: loading a library and
/// building a few instances takes well under a second.
const INFO_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

/// How long `drover-job plugin check` (the author's harness) may take.
const CHECK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(600);

/// Runs `drover-job plugin ...` subprocesses.
#[derive(Debug, Clone)]
pub struct PluginProbe {
    job_bin: PathBuf,
    /// [`INFO_TIMEOUT`], shorter in tests.
    info_timeout: std::time::Duration,
}

impl PluginProbe {
    /// Uses the runtime at `job_bin`.
    pub fn new(job_bin: impl Into<PathBuf>) -> Self {
        PluginProbe { job_bin: job_bin.into(), info_timeout: INFO_TIMEOUT }
    }

    /// Loads `path` in a `drover-job plugin info` subprocess and returns its description.
    ///
    /// # Errors
    /// The runtime cannot start, refuses the library (with its reason), or answers garbage.
    pub fn info(&self, path: &Path) -> Result<PluginDescription, PluginProbeError> {
        let cache = InfoCache::for_probe(&self.job_bin, path);
        if let Some(mut cached) = cache.as_ref().and_then(InfoCache::read) {
            cached.path = path.to_path_buf();
            return Ok(cached);
        }
        let report = self.ask("info", path, &[])?;
        let description = self.description(report, "info", path).map(|(d, _)| d)?;
        if let Some(cache) = cache {
            cache.write(&description);
        }
        Ok(description)
    }

    /// Runs the author's harness on `path` with `params_json` in a `drover-job plugin check`
    /// subprocess; `experts` gives its synthetic rollouts the host's `is_expert` column.
    ///
    /// # Errors
    /// As [`PluginProbe::info`]; failed checks are not errors but part of the result.
    pub fn check(&self, path: &Path, params_json: &str, experts: bool) -> Result<CheckResult, PluginProbeError> {
        let mut args = vec!["--params", params_json];
        if experts {
            args.push("--experts");
        }
        let report = self.ask("check", path, &args)?;
        let (plugin, checks) = self.description(report, "check", path)?;
        let checks = checks.ok_or_else(|| self.bad("check", path, "the report has no `checks`".into(), String::new()))?;
        Ok(CheckResult { plugin, checks })
    }

    /// Has the plugin at `path` create an instance from each of `params` (what every job does
    /// first), in one `drover-job plugin info --try-params` subprocess; params objects this
    /// `drover-job` and library accepted before are not asked again (see [`InfoCache`]).
    /// Each of `params` is a params object's canonical JSON (`config::canonical_json`, the
    /// cache's key). Returns one verdict per object, in order: `None` when accepted.
    ///
    /// # Errors
    /// As [`PluginProbe::info`].
    pub fn try_params(&self, path: &Path, params: &[&str]) -> Result<Vec<Option<ParamsRefusal>>, PluginProbeError> {
        let cache = InfoCache::for_probe(&self.job_bin, path);
        let known = cache.as_ref().map(InfoCache::accepted_params).unwrap_or_default();
        let known_set: std::collections::HashSet<&str> = known.iter().map(String::as_str).collect();
        let digests: Vec<String> = params.iter().map(|text| params_digest(text)).collect();
        let mut verdicts: Vec<Option<ParamsRefusal>> = vec![None; params.len()];
        let unknown: Vec<usize> = (0..params.len()).filter(|&i| !known_set.contains(digests[i].as_str())).collect();
        if unknown.is_empty() {
            return Ok(verdicts);
        }
        let stdin = format!("[{}]", unknown.iter().map(|&i| params[i]).collect::<Vec<_>>().join(","));
        let (mut report, stderr) = self.ask_with_stdin("info", path, &["--try-params"], Some(stdin.into_bytes()))?;
        let instances = report.instances.take();
        self.description((report, stderr.clone()), "info", path)?;
        let instances = instances
            .filter(|v| v.len() == unknown.len())
            .ok_or_else(|| self.bad("info", path, format!("the report has no `instances` for {} params objects", unknown.len()), stderr))?;
        let mut accepted = Vec::new();
        for (&i, record) in unknown.iter().zip(instances) {
            if record.accepted {
                accepted.push(digests[i].clone());
            } else {
                verdicts[i] = Some(ParamsRefusal { key: record.key, reason: record.reason.unwrap_or_default() });
            }
        }
        drop(known_set);
        if let Some(cache) = cache {
            cache.remember_accepted(known, accepted);
        }
        Ok(verdicts)
    }

    fn bad(&self, command: &'static str, path: &Path, reason: String, stderr: String) -> PluginProbeError {
        PluginProbeError::BadReport { job_bin: self.job_bin.clone(), command, path: path.to_path_buf(), reason, stderr }
    }

    fn ask(&self, command: &'static str, path: &Path, extra: &[&str]) -> Result<(Report, String), PluginProbeError> {
        self.ask_with_stdin(command, path, extra, None)
    }

    fn ask_with_stdin(
        &self,
        command: &'static str,
        path: &Path,
        extra: &[&str],
        input: Option<Vec<u8>>,
    ) -> Result<(Report, String), PluginProbeError> {
        let mut cmd = Command::new(&self.job_bin);
        cmd.arg("plugin").arg(command).arg(path).args(extra);
        // `check` runs the author's whole harness; the others load the library and build instances.
        let timeout = if command == "check" { CHECK_TIMEOUT } else { self.info_timeout };
        let out = crate::subprocess::run(&mut cmd, input, timeout)
            .map_err(|source| PluginProbeError::Spawn { job_bin: self.job_bin.clone(), source })?
            .ok_or_else(|| {
                let why = format!(
                    "no answer within {} s, so it was stopped (does the plugin hang while loading, or in `new`?)",
                    timeout.as_secs_f64()
                );
                self.bad(command, path, why, String::new())
            })?;
        let stderr = out.stderr.trim().to_string();
        // A library can crash the loader itself (a damaged file mapped by dlopen), or abort
        // the process on a panic when built with `panic = "abort"`: say which is likely
        // rather than that the report was not JSON.
        if let Some(signal) = std::os::unix::process::ExitStatusExt::signal(&out.status) {
            return Err(self.bad(command, path, crash_reason(command, extra, signal), stderr));
        }
        // clap's usage error: a drover-job of another release, which lacks a command or option
        // this drover asks for; the plugin was not even looked at.
        if out.status.code() == Some(2) && ["unexpected argument", "unrecognized subcommand"].iter().any(|s| stderr.contains(s)) {
            // The argument clap names (`error: unexpected argument '--try-params' found`), not
            // all of `extra`, which for `check` holds the whole parameter object.
            let quoted = stderr.lines().next().and_then(|l| l.split('\'').nth(1)).filter(|a| *a != command);
            let named = quoted.map_or_else(|| format!("plugin {command}"), |a| format!("plugin {command} {a}"));
            let why = format!(
                "this drover-job does not know `{named}`: it is of another release than this drover; use the drover-job built with it (beside `drover`, or `DROVER_JOB_BIN`)"
            );
            return Err(self.bad(command, path, why, stderr));
        }
        let report: Report = serde_json::from_str(&out.stdout).map_err(|e| {
            // `ExitStatus`'s Display already says "exit status: 1"; a signal was handled above.
            let status = out.status.code().map_or_else(|| out.status.to_string(), |code| format!("exit code {code}"));
            self.bad(command, path, format!("{status}, stdout is not a report ({e})"), stderr.clone())
        })?;
        if report.format_version != PLUGIN_REPORT_FORMAT_VERSION {
            return Err(self.bad(
                command,
                path,
                format!("report format {} (this drover reads {PLUGIN_REPORT_FORMAT_VERSION})", report.format_version),
                stderr,
            ));
        }
        Ok((report, stderr))
    }

    fn description(
        &self,
        (report, stderr): (Report, String),
        command: &'static str,
        path: &Path,
    ) -> Result<(PluginDescription, Option<Vec<CheckRecord>>), PluginProbeError> {
        if let Some(f) = report.error {
            return Err(PluginProbeError::Refused { path: path.to_path_buf(), kind: f.kind, message: f.message });
        }
        let mut plugin = report.plugin.ok_or_else(|| self.bad(command, path, "the report has neither `plugin` nor `error`".into(), stderr))?;
        plugin.path = path.to_path_buf();
        Ok((plugin, report.checks))
    }
}

/// Why `drover-job plugin <command> <extra>` died of `signal`, and the likely cause.
fn crash_reason(command: &str, extra: &[&str], signal: i32) -> String {
    let how = crate::backend::local::signal_reason(signal, false, true);
    let during = match command {
        "check" => "while running the checks on the plugin",
        _ if extra.contains(&"--try-params") => "while loading the library or creating an instance from the params",
        _ => "while loading the library",
    };
    let hint = if signal == libc::SIGABRT {
        "a panic in a plugin built with `panic = \"abort\"`? drover catches a plugin's panics only \
         when it is built with `panic = \"unwind\"`, the default (its stderr below says where it \
         panicked)"
    } else {
        "is the file damaged?"
    };
    format!("drover-job {how} {during} ({hint})")
}

/// Descriptions of plugins already probed, so a sweep's plan does not start a `drover-job`
/// subprocess for a library it has seen (on a 1,000-run Slurm submission that subprocess was
/// about half of `drover run`'s time). The key is the identity of both files (canonical path,
/// size, modification time in nanoseconds) of the library and of the `drover-job` that probed
/// it, as `make` would judge staleness; a replaced file always changes it. Directory:
/// `$DROVER_CACHE_DIR`, else `$XDG_CACHE_HOME/drover`, else `~/.cache/drover`; `plugin-info/`
/// below it. Every cache failure falls back to probing: the cache can only save time.
struct InfoCache {
    file: PathBuf,
}

/// On-disk format of a cached description; bumped with any change to `PluginDescription`.
const INFO_CACHE_VERSION: u32 = 1;

#[derive(Serialize, Deserialize)]
struct CachedInfo {
    format_version: u32,
    description: PluginDescription,
}

/// `plugin-params/<key>.json`: params objects the library's constructor accepted, as
/// [`params_digest`]s. Only acceptances are kept: a refusal stops the plan anyway.
#[derive(Serialize, Deserialize)]
struct CachedParams {
    format_version: u32,
    accepted: Vec<String>,
}

/// Accepted params digests kept per library: enough for a large sweep, bounded for a long life.
const MAX_ACCEPTED: usize = 20_000;

/// SHA-256 (hex) of a params object's canonical JSON.
fn params_digest(canonical: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(canonical.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

impl InfoCache {
    fn for_probe(job_bin: &Path, plugin: &Path) -> Option<InfoCache> {
        let dir = std::env::var_os("DROVER_CACHE_DIR")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("XDG_CACHE_HOME").map(|d| PathBuf::from(d).join("drover")))
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/drover")))?;
        let identity = |p: &Path| -> Option<String> {
            let canonical = p.canonicalize().ok()?;
            let meta = std::fs::metadata(&canonical).ok()?;
            let mtime = meta.modified().ok()?.duration_since(std::time::UNIX_EPOCH).ok()?.as_nanos();
            Some(format!("{}\0{}\0{mtime}", canonical.display(), meta.len()))
        };
        use sha2::Digest;
        let key = sha2::Sha256::digest(format!("{}\0{}", identity(job_bin)?, identity(plugin)?).as_bytes());
        let hex: String = key.iter().take(16).map(|b| format!("{b:02x}")).collect();
        Some(InfoCache { file: dir.join("plugin-info").join(format!("{hex}.json")) })
    }

    /// Digests of params objects this library's constructor accepted (`try_params`).
    fn accepted_params(&self) -> Vec<String> {
        let read = || -> Option<Vec<String>> {
            let cached: CachedParams = serde_json::from_slice(&std::fs::read(self.params_file()).ok()?).ok()?;
            (cached.format_version == INFO_CACHE_VERSION).then_some(cached.accepted)
        };
        read().unwrap_or_default()
    }

    /// Adds `new` to the accepted digests, keeping at most [`MAX_ACCEPTED`] (newest last).
    fn remember_accepted(&self, mut known: Vec<String>, new: Vec<String>) {
        if new.is_empty() {
            return;
        }
        known.extend(new);
        let excess = known.len().saturating_sub(MAX_ACCEPTED);
        known.drain(..excess);
        let record = CachedParams { format_version: INFO_CACHE_VERSION, accepted: known };
        self.write_json(&self.params_file(), serde_json::to_vec(&record));
    }

    fn params_file(&self) -> PathBuf {
        let name = self.file.file_name().map(PathBuf::from).unwrap_or_default();
        self.file.parent().and_then(Path::parent).map(|root| root.join("plugin-params").join(name)).unwrap_or_default()
    }

    fn read(&self) -> Option<PluginDescription> {
        let cached: CachedInfo = serde_json::from_slice(&std::fs::read(&self.file).ok()?).ok()?;
        (cached.format_version == INFO_CACHE_VERSION).then_some(cached.description)
    }

    fn write(&self, description: &PluginDescription) {
        let record = CachedInfo { format_version: INFO_CACHE_VERSION, description: description.clone() };
        self.write_json(&self.file, serde_json::to_vec(&record));
    }

    fn write_json(&self, file: &Path, bytes: serde_json::Result<Vec<u8>>) {
        let (Some(dir), Ok(bytes)) = (file.parent(), bytes) else { return };
        if std::fs::create_dir_all(dir).is_ok() {
            if let Err(e) = crate::layout::write_atomic(file, &bytes) {
                tracing::debug!("cannot write the plugin cache file `{}`: {e}", file.display());
            }
        }
    }
}

#[cfg(test)]
mod cache_tests {
    use super::*;

    /// A fake `drover-job` that counts its invocations and answers `plugin info`; with
    /// `--try-params` it refuses a one-object list holding `bad` and accepts any other.
    fn fake_job(dir: &Path) -> PathBuf {
        let job = dir.join("fake-job.sh");
        let plugin = r#""plugin":{"name":"fake","version":"0.1.0","description":"","interface_version":"1.1","host_interface_version":"1.1","sha256":"","params":[]}"#;
        let script = format!(
            "#!/bin/sh\necho x >> {calls}\ninstances=\nif [ \"$4\" = --try-params ]; then\n  case \"$(cat)\" in\n    *bad*) instances=',\"instances\":[{{\"accepted\":false,\"key\":\"mode\",\"reason\":\"no\"}}]' ;;\n    *) instances=',\"instances\":[{{\"accepted\":true}}]' ;;\n  esac\nfi\nprintf '{{\"format_version\":1,{plugin}%s}}' \"$instances\"\n",
            calls = dir.join("calls").display()
        );
        std::fs::write(&job, script).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&job, std::fs::Permissions::from_mode(0o755)).unwrap();
        job
    }

    fn calls(dir: &Path) -> usize {
        std::fs::read_to_string(dir.join("calls")).map_or(0, |s| s.lines().count())
    }

    #[test]
    fn probed_plugins_and_accepted_params_are_not_asked_again_until_the_library_changes() {
        let tmp = tempfile::tempdir().unwrap();
        std::env::set_var("DROVER_CACHE_DIR", tmp.path().join("cache"));
        let so = tmp.path().join("libdrover_plugin_fake.so");
        std::fs::write(&so, b"one").unwrap();
        let probe = PluginProbe::new(fake_job(tmp.path()));
        assert_eq!(probe.info(&so).unwrap().name, "fake");
        assert_eq!(probe.info(&so).unwrap().path, so);
        assert_eq!(calls(tmp.path()), 1, "the second description comes from the cache");
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(&so, b"changed").unwrap();
        probe.info(&so).unwrap();
        assert_eq!(calls(tmp.path()), 2, "a changed library is probed again");

        // The constructor's verdicts: an acceptance is remembered, a refusal asked again.
        let (good, bad) = (r#"{"mode":"good"}"#, r#"{"mode":"bad"}"#);
        assert_eq!(probe.try_params(&so, &[good]).unwrap(), [None]);
        assert_eq!(calls(tmp.path()), 3);
        assert_eq!(probe.try_params(&so, &[good]).unwrap(), [None]);
        assert_eq!(calls(tmp.path()), 3, "accepted params are not asked again");
        let refused = Some(ParamsRefusal { key: Some("mode".into()), reason: "no".into() });
        assert_eq!(probe.try_params(&so, &[good, bad]).unwrap(), [None, refused.clone()], "only `bad` is asked");
        assert_eq!(probe.try_params(&so, &[bad]).unwrap(), [refused]);
        assert_eq!(calls(tmp.path()), 5, "a refusal is asked again");
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(&so, b"changed again").unwrap();
        assert_eq!(probe.try_params(&so, &[good]).unwrap(), [None]);
        assert_eq!(calls(tmp.path()), 6, "a changed library judges its params again");

        // A library whose constructor hangs stops the plan with a reason instead of hanging it.
        let hang = tmp.path().join("hang-job.sh");
        std::fs::write(&hang, "#!/bin/sh\nsleep 30\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&hang, std::fs::Permissions::from_mode(0o755)).unwrap();
        let probe = PluginProbe { info_timeout: std::time::Duration::from_millis(300), ..PluginProbe::new(&hang) };
        let err = probe.try_params(&so, &[r#"{"mode":"other"}"#]).unwrap_err().to_string();
        assert!(err.contains("no answer within 0.3 s, so it was stopped (does the plugin hang while loading, or in `new`?)"), "{err}");
    }

    /// Review finding: a runtime that exited 1 without a report was described as "exit status
    /// exit status: 1".
    #[test]
    fn a_runtime_that_fails_without_a_report_is_named_by_its_exit_code() {
        let tmp = tempfile::tempdir().unwrap();
        let job = tmp.path().join("failing-job.sh");
        std::fs::write(&job, "#!/bin/sh
echo 'it went wrong' >&2
exit 1
").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&job, std::fs::Permissions::from_mode(0o755)).unwrap();
        let so = tmp.path().join("libdrover_plugin_fake.so");
        std::fs::write(&so, b"x").unwrap();
        let err = PluginProbe::new(&job).info(&so).unwrap_err().to_string();
        assert!(err.contains("gave no usable report: exit code 1, stdout is not a report ("), "{err}");
        assert!(!err.contains("exit status exit status"), "{err}");
        assert!(err.ends_with("its stderr: it went wrong"), "{err}");
    }

    /// Review (version compatibility, 3): a drover-job of an older release, without `plugin
    /// info --try-params`, answered with clap's usage error, and drover blamed the plugin
    /// ("gave no usable report: exit code 2 ..."); it now says the runtime is of another release.
    #[test]
    fn a_runtime_of_another_release_is_named_not_the_plugin() {
        let tmp = tempfile::tempdir().unwrap();
        let job = tmp.path().join("old-job.sh");
        let clap = "error: unexpected argument '--try-params' found\n\nUsage: drover-job plugin info <PATH>\n";
        std::fs::write(&job, format!("#!/bin/sh\ncat >&2 <<'EOF'\n{clap}EOF\nexit 2\n")).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&job, std::fs::Permissions::from_mode(0o755)).unwrap();
        let so = tmp.path().join("libdrover_plugin_fake.so");
        std::fs::write(&so, b"x").unwrap();
        let err = PluginProbe::new(&job).try_params(&so, &["{}"]).unwrap_err().to_string();
        assert!(err.contains("this drover-job does not know `plugin info --try-params`"), "{err}");
        assert!(err.contains("it is of another release than this drover; use the drover-job built with it"), "{err}");
        assert!(err.contains("its stderr: error: unexpected argument '--try-params' found"), "{err}");
        // `check` passes the whole parameter object: only the argument clap names is quoted.
        std::fs::write(&job, "#!/bin/sh\ncat >&2 <<'EOF'\nerror: unexpected argument '--experts' found\nEOF\nexit 2\n").unwrap();
        let err = PluginProbe::new(&job).check(&so, r#"{"lr": 0.1}"#, true).unwrap_err().to_string();
        assert!(err.contains("this drover-job does not know `plugin check --experts`: it is of another release"), "{err}");
        std::fs::write(&job, "#!/bin/sh\ncat >&2 <<'EOF'\nerror: unrecognized subcommand 'check'\nEOF\nexit 2\n").unwrap();
        let err = PluginProbe::new(&job).check(&so, r#"{"lr": 0.1}"#, false).unwrap_err().to_string();
        assert!(err.contains("this drover-job does not know `plugin check`: it is of another release"), "{err}");
    }
}
