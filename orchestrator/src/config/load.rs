//! Loading a `SweepFile` with figment: the TOML file, then `DROVER_*` env vars, then `--set` args.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use figment::error::{Actual, Kind};
use figment::providers::{Format, Serialized, Toml};
use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider};

use crate::config::file::{PathBases, RunConfig, SweepFile};
use crate::config::messages::{closest, from_one, key_text, plain_kind};
use crate::error::{ConfigError, ConfigErrorKind};

/// One parsed `--set key=value` argument.
#[derive(Debug, Clone, PartialEq)]
pub struct SetArg {
    /// The argument as given, for messages.
    pub raw: String,
    /// The key path; after `sweep.grid` the rest of the dotted key is one segment (the axis name).
    pub path: Vec<String>,
    /// The value, parsed as TOML.
    pub value: toml::Value,
}

/// Top-level keys that `DROVER_<KEY>` may set; sections are set with `DROVER_<SECTION>__<KEY>`.
/// `plugin_path` is left out: `DROVER_PLUGIN_PATH` is the runtime's own search path variable.
const ENV_TOP_KEYS: &[&str] = &["name", "results_dir", "max_parallel", "backend"];
/// The tables a `DROVER_<TABLE>__<KEY>` variable sets a key of.
const ENV_TABLES: [&str; 5] = ["run", "params", "sweep", "local", "slurm"];

/// The runtime's own `DROVER_*` variables (ARCHITECTURE.md, "Environment variables"): read by
/// drover, drover-job or the tests, never sweep settings, so a plugin parameter of the same name
/// (`simd`) does not make them a `[params]` key written without its table.
pub(crate) const RUNTIME_VARIABLES: &[&str] = &[
    "DROVER_ALLREDUCE",
    "DROVER_BENCH_AS",
    "DROVER_BLESS_ABI_LAYOUT",
    "DROVER_BUSY_WAIT_S",
    "DROVER_CACHE_DIR",
    "DROVER_CHAOS_SEED",
    "DROVER_CROSS_DIGEST",
    "DROVER_FAULT_KILL_RANK",
    "DROVER_JOB_BIN",
    "DROVER_JOB_LOCK_FD",
    "DROVER_KERNEL_CACHE",
    "DROVER_MIXED_ARCH_BUILDS",
    "DROVER_MPIRUN",
    "DROVER_NCCL_LIBRARY",
    "DROVER_PLUGIN_DIR",
    "DROVER_PLUGIN_PATH",
    "DROVER_REQUIRE_GPU",
    "DROVER_REQUIRE_NCCL",
    "DROVER_SIGNALS_TEST_CHILD",
    "DROVER_SIMD",
    "DROVER_SLURM_GROUP_WAIT_S",
    "DROVER_SLURM_OUTAGE_S",
    "DROVER_SLURM_SKIP",
    "DROVER_STAND_IN_PROBE",
];

/// Whether `key` (a `DROVER_*` name without the prefix, lowercased) configures the sweep: a
/// top-level key, or `<table>__<key>` of one of `ENV_TABLES`. The others belong to the runtime.
/// A table alone (`DROVER_PARAMS='{gamma = 0.9}'`) replaces it whole, as `--set 'params={..}'` does.
pub(crate) fn is_sweep_variable(key: &str) -> bool {
    ENV_TOP_KEYS.contains(&key)
        || ENV_TABLES.contains(&key)
        || key.split_once("__").is_some_and(|(table, _)| ENV_TABLES.contains(&table))
}

/// Names users reach for that mirror a command-line flag or a setting under another name:
/// (the variable's key, lowercased; what to use instead).
const ENV_ALIASES: [(&str, &str); 4] = [
    ("results", "`DROVER_RESULTS_DIR` (or `drover run --results DIR`)"),
    ("jobs", "`DROVER_MAX_PARALLEL` (or `drover run -j N`)"),
    ("parallel", "`DROVER_MAX_PARALLEL` (or `drover run -j N`)"),
    ("backend_kind", "`DROVER_BACKEND` (or `drover run --backend`)"),
];

/// Parses `key=value`; the value as TOML, or as a plain string when it is a bare word.
///
/// `file` is only used to name the sweep file in the error.
pub fn parse_set(raw: &str, file: &Path) -> Result<SetArg, ConfigError> {
    let bad = |key: &str, reason: String| {
        ConfigError::new(file, key, ConfigErrorKind::BadSet(reason)).with_origin(format!("`--set {raw}`"))
    };
    let Some((key, value)) = raw.split_once('=') else {
        return Err(ConfigError::whole_file(file, ConfigErrorKind::BadSet(format!("`{raw}` is not of the form key=value"))));
    };
    let key = key.trim();
    let value = value.trim();
    let segments = key_segments(key);
    if key.is_empty() || segments.iter().any(|s| s.is_empty()) {
        return Err(ConfigError::whole_file(
            file,
            ConfigErrorKind::BadSet(format!("`{raw}`: the key must be dotted names like run.lr")),
        ));
    }
    let path: Vec<String> = if segments.len() > 2 && segments[0] == "sweep" && segments[1] == "grid" {
        // Grid axes are themselves dotted ("params.clip_coef"): keep them one segment.
        vec!["sweep".into(), "grid".into(), segments[2..].join(".")]
    } else {
        segments.iter().map(|s| s.to_string()).collect()
    };
    if value.is_empty() {
        return Err(bad(key, "the value is empty (quote an empty string: key='')".into()));
    }
    // `.001` is no TOML number, and as a bare word it became the text ".001" (review F13).
    let digits = value.trim_start_matches(['+', '-']);
    if digits.strip_prefix('.').is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit())) && value.parse::<f64>().is_ok() {
        let sign = &value[..value.len() - digits.len()];
        return Err(bad(key, format!("`{value}` is not a TOML number: write `{sign}0{digits}`")));
    }
    let value = match format!("v = {value}").parse::<toml::Table>() {
        // `1\nfoo = 2` parses as a table with a second key: one `--set` is one value.
        Ok(mut table) => match table.remove("v") {
            // No setting is a date: `slurm.time=01:00:00` is the text typed, as the same value
            // of a `DROVER_*` variable is (the quotes the refusal would ask for, the shell eats).
            Some(toml::Value::Datetime(_)) if table.is_empty() => toml::Value::String(value.to_string()),
            Some(v) if table.is_empty() => v,
            _ => return Err(bad(key, format!("`{}` is not one TOML value", value.escape_debug()))),
        },
        // A bare word such as `Acrobot-v1` is a string; anything with TOML punctuation that
        // failed to parse is a typo the user should see.
        Err(_) if is_bare_word(value) => toml::Value::String(value.to_string()),
        Err(e) => return Err(bad(key, set_parse_message(key, value, &e))),
    };
    Ok(SetArg { raw: raw.to_string(), path, value })
}

/// The segments of a dotted key, read as TOML reads one, so a quoted segment keeps its dots
/// (`sweep.grid."params.gamma"`, as the sweep file writes a grid axis); a key TOML does not
/// take (other characters) is split at every dot.
fn key_segments(key: &str) -> Vec<String> {
    let mut segments = Vec::new();
    if let Ok(table) = format!("{key} = 0").parse::<toml::Table>() {
        let mut table = &table;
        while let Some((name, value)) = table.iter().next().filter(|_| table.len() == 1) {
            segments.push(name.clone());
            match value {
                toml::Value::Table(inner) => table = inner,
                _ => return segments,
            }
        }
    }
    key.split('.').map(str::to_string).collect()
}

/// Why `value` is no TOML value, on one line and in the words of a value: `toml` parses it as
/// `v = <value>`, so its "expected newline, `#`" means text after a whole value, such as the
/// comma of `64,64`, which is a list without its brackets. Text (a path with a space, a comma or
/// a parenthesis) is told the whole `--set` argument that gives it, quoted for TOML and then for
/// the shell, so it can be pasted as it is (review-paths 7: the advice was `key='"..."'`, which
/// named no key and broke on a quote inside the value).
fn set_parse_message(key: &str, value: &str, e: &toml::de::Error) -> String {
    let what = e.message().trim().replace('\n', "; ");
    // Each piece a TOML value of its own (`64,64`, `1, 2`): a list without its brackets. A path
    // with a comma (`/x/lib ppo, v2.so`) is text.
    let pieces_are_values = value.split(',').all(|piece| format!("v = {}", piece.trim()).parse::<toml::Table>().is_ok());
    let unbracketed_list = value.contains(',') && !value.starts_with(['[', '{', '"', '\'']) && pieces_are_values;
    if unbracketed_list {
        return format!("cannot parse `{value}` as one TOML value: a list is written in brackets, `[{value}]`");
    }
    // The text meant: the value itself, or inside the one pair of quotes the shell left around it.
    let text = [('\'', '\''), ('"', '"')]
        .iter()
        .find_map(|(open, close)| value.strip_prefix(*open)?.strip_suffix(*close))
        .unwrap_or(value);
    let as_text = format!(
        "`--set {}`",
        crate::words::shell_quote(&format!("{key}={}", toml::Value::String(text.to_string())))
    );
    if what.starts_with("expected newline") {
        return format!("cannot parse `{value}` as one TOML value: there is text after the value; as text: {as_text}");
    }
    if value.starts_with(['[', '{']) {
        return format!("cannot parse `{value}` as a TOML value: {what}");
    }
    format!("cannot parse `{value}` as a TOML value: {what}; as text: {as_text}")
}

fn is_bare_word(s: &str) -> bool {
    s.chars().all(|c| c.is_ascii_alphanumeric() || "-_./:+@".contains(c))
}

/// The name of the sweep file's provider: values tagged with it were written in the file.
const FILE_SOURCE: &str = "the sweep file";

/// The sweep file's text as a figment provider named `FILE_SOURCE`, so the origin of a value
/// (the file, or an override) can be told from its tag.
struct FileText<'a>(&'a str);

impl Provider for FileText<'_> {
    fn metadata(&self) -> Metadata {
        Metadata::named(FILE_SOURCE)
    }
    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        Toml::string(self.0).data()
    }
}

/// A figment provider for one `--set` argument, so errors can name the argument.
struct SetProvider<'a>(&'a SetArg);

impl Provider for SetProvider<'_> {
    fn metadata(&self) -> Metadata {
        let name = format!("`--set {}`", self.0.raw);
        Metadata::named(name.clone()).interpolater(move |_profile, _keys| name.clone())
    }
    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        let mut value = self.0.value.clone();
        for segment in self.0.path.iter().rev() {
            let mut table = toml::Table::new();
            table.insert(segment.clone(), value);
            value = toml::Value::Table(table);
        }
        Serialized::defaults(value).data()
    }
}

/// Reads `file` and merges env vars (`env`, pairs as from `std::env::vars()`) and `--set` args.
///
/// The environment is a parameter so tests do not depend on (or mutate) the process environment.
pub fn load(
    file: &Path,
    env: &[(String, String)],
    sets: &[SetArg],
) -> Result<(SweepFile, String), ConfigError> {
    let bytes = std::fs::read(file).map_err(|e| ConfigError::whole_file(file, ConfigErrorKind::Read(e)))?;
    // Where the first byte that is not UTF-8 is (a Latin-1 `é`), rather than the reader's
    // "stream did not contain valid UTF-8" with no line (review F12).
    let text = String::from_utf8(bytes).map_err(|e| {
        let valid = &e.as_bytes()[..e.utf8_error().valid_up_to()];
        let before = String::from_utf8_lossy(valid);
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        let byte = e.as_bytes()[valid.len()];
        ConfigError::whole_file(
            file,
            ConfigErrorKind::Syntax(format!("line {line}, column {column}: byte 0x{byte:02x} is not UTF-8 (TOML files are UTF-8 text: save the file as UTF-8)")),
        )
    })?;
    let parsed = load_str(file, &text, env, sets)?;
    Ok((parsed, text))
}

/// `load` without the file read: `text` is the content of `file`.
pub fn load_str(file: &Path, text: &str, env: &[(String, String)], sets: &[SetArg]) -> Result<SweepFile, ConfigError> {
    // A byte-order mark is no part of the text: left in, it moved the columns of the first line
    // one to the right and was quoted, invisible, in the line of a syntax error (review F12).
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    // Parse once with `toml` for a precise syntax message (line and column); figment would wrap it.
    let table = match text.parse::<toml::Table>() {
        Ok(table) => table,
        Err(e) => return Err(ConfigError::whole_file(file, ConfigErrorKind::Syntax(syntax_message(text, &e)))),
    };
    // An empty or comment-only file got "key `name`: required key is missing".
    if table.is_empty() && sets.is_empty() && env_entries(env).next().is_none() {
        return Err(ConfigError::whole_file(file, ConfigErrorKind::EmptyFile));
    }
    check_env_names(file, env)?;
    refuse_dates(file, &toml::Value::Table(table.clone()), &[], None)?;
    for set in sets {
        refuse_dates(file, &set.value, &set.path, Some(format!("`--set {}`", set.raw)))?;
    }
    check_overrides_fit_the_file(file, &table, env, sets)?;
    // An override replaces the value at its key whole (`--set 'sweep.grid={}'` clears the grid),
    // where figment's merge would join two tables key by key: each source loses what a later
    // one sets before the merge.
    let set_paths: Vec<Vec<String>> = sets.iter().map(|s| s.path.clone()).collect();
    let overridden: Vec<Vec<String>> = env_entries(env).map(|(path, _, _)| path).chain(set_paths.iter().cloned()).collect();
    let mut figment =
        Figment::new().merge(Without::new(FileText(text), overridden)).merge(Without::new(EnvSnapshot(env.to_vec()), set_paths.clone()));
    for (i, set) in sets.iter().enumerate() {
        figment = figment.merge(Without::new(SetProvider(set), set_paths[i + 1..].to_vec()));
    }
    check_tables_are_tables(file, &figment, env, sets)?;
    // The key is there with an empty value (`env = ""`, `DROVER_RUN__ENV=`): "required key is
    // missing", what an absent one gets, sent the user looking for a key they wrote (review F13).
    for key in ["run.env", "run.plugin"] {
        if let Ok(Value::String(tag, text)) = figment.find_value(key) {
            if text.is_empty() {
                let err = ConfigError::new(file, key, ConfigErrorKind::InvalidValue("must not be empty".into()));
                let from_override = figment.get_metadata(tag).is_some_and(|m| m.name != FILE_SOURCE);
                return Err(match from_override.then(|| override_origin(key, env, sets)).flatten() {
                    Some(origin) => err.with_origin(origin),
                    None => err,
                });
            }
        }
    }
    let mut parsed: SweepFile = figment.extract().map_err(|e| convert_figment_error(file, &figment, e))?;
    check_overrides_reach_a_run(file, &parsed, env, sets)?;
    parsed.bases = path_bases(file, &figment);
    Ok(parsed)
}

/// The process environment as `load` takes it: every variable whose name and value are UTF-8.
/// Others are left out, as no setting reads them (a path in a legacy locale, say), except a
/// `DROVER_*` one, which is refused so that a setting is never silently dropped.
///
/// # Errors
/// [`ConfigErrorKind::NotUtf8`] naming the `DROVER_*` variable (lossily) and `file`.
pub fn environment(file: &Path, vars: impl IntoIterator<Item = (OsString, OsString)>) -> Result<Vec<(String, String)>, ConfigError> {
    let mut env = Vec::new();
    for (name, value) in vars {
        match (name.into_string(), value.into_string()) {
            (Ok(name), Ok(value)) => env.push((name, value)),
            (name, _) => {
                let name = name.unwrap_or_else(|raw| raw.to_string_lossy().into_owned());
                // Only a sweep setting must be text (it is parsed as a TOML value). The runtime's
                // variables are paths (`DROVER_PLUGIN_PATH`, `DROVER_CACHE_DIR`), which a file
                // system allows in any bytes and their readers take as `OsString` (review-paths 10).
                let setting = name.strip_prefix("DROVER_").is_some_and(|key| is_sweep_variable(&key.to_ascii_lowercase()));
                if setting || (name.starts_with("DROVER_") && !name.is_ascii()) {
                    return Err(ConfigError::whole_file(file, ConfigErrorKind::NotUtf8).with_origin(format!("environment variable `{name}`")));
                }
            }
        }
    }
    Ok(env)
}

/// Refuses a `DROVER_*` variable that is spelled like a sweep setting but that no setting reads,
/// which would otherwise be ignored without a word: `DROVER_RUN_NUM_ENVS` (one underscore after
/// the table), `DROVER_RUNS__NUM_ENVS` (no such table; only sweep settings use `__`),
/// `DROVER_MAX_PARALEL`. The runtime's own variables (`DROVER_PLUGIN_PATH`, ...) match none of these.
fn check_env_names(file: &Path, env: &[(String, String)]) -> Result<(), ConfigError> {
    for (name, value) in env {
        let Some(rest) = name.strip_prefix("DROVER_") else { continue };
        let key = rest.to_ascii_lowercase();
        let unread = |why: String| {
            Err(ConfigError::whole_file(file, ConfigErrorKind::UnreadVariable(why)).with_origin(format!("environment variable `{name}`")))
        };
        // A grid axis is a dotted name (`params.gamma`), which a variable's name cannot hold:
        // `DROVER_SWEEP__GRID__PARAMS__GAMMA` would be read as nested tables `params` > `gamma`,
        // and the TOML advice to quote the axis name cannot be followed in a variable's name.
        if let Some(axis) = key.strip_prefix("sweep__grid__") {
            let axis = axis.replace("__", ".");
            return unread(format!(
                "grid axes are dotted names (`{axis}`), which a variable's name cannot hold: use `--set 'sweep.grid.{axis}={value}'` or `DROVER_SWEEP__GRID='{{\"{axis}\" = {value}}}'`"
            ));
        }
        if is_sweep_variable(&key) {
            continue;
        }
        if let Some((_, instead)) = ENV_ALIASES.iter().find(|(alias, _)| *alias == key) {
            return unread(format!("did you mean {instead}?"));
        }
        let upper = |table: &str, key: &str| format!("DROVER_{}__{}", table.to_ascii_uppercase(), key.to_ascii_uppercase());
        if let Some((table, key)) = key.split_once("__") {
            let meant = closest(table, ENV_TABLES).map_or(String::new(), |t| format!("; did you mean `{}`?", upper(t, key)));
            return unread(format!(
                "`{table}` is not a table of the sweep file (`DROVER_<TABLE>__<KEY>` sets a key of run, params, sweep, local or slurm){meant}"
            ));
        }
        let single = ENV_TABLES.iter().find_map(|table| {
            let key = key.strip_prefix(table)?.strip_prefix('_')?;
            let known = match *table {
                "run" => RunConfig::KEYS.contains(&key),
                "sweep" => ["seeds", "grid", "cases"].contains(&key),
                "params" => !key.is_empty(),
                // `[local]`/`[slurm]` keys are not listed here, and `DROVER_SLURM_SKIP` is a script's.
                _ => false,
            };
            known.then(|| upper(table, key))
        });
        if let Some(meant) = single {
            return unread(format!("a table and its key are separated by a double underscore; did you mean `{meant}`?"));
        }
        // A key of a table without the table: `DROVER_NUM_ENVS` (plugin parameters cannot be
        // told from the runtime's own variables here, so only drover's tables are judged).
        let table = if RunConfig::KEYS.contains(&key.as_str()) {
            Some("run")
        } else {
            ["seeds", "grid", "cases"].contains(&key.as_str()).then_some("sweep")
        };
        if let Some(table) = table {
            return unread(format!("a key of a table needs the table first; did you mean `{}`?", upper(table, &key)));
        }
        if let Some(top) = closest(&key, ENV_TOP_KEYS.iter().copied()).filter(|top| top.len() > 4) {
            return unread(format!("did you mean `DROVER_{}`?", top.to_ascii_uppercase()));
        }
    }
    Ok(())
}

/// Refuses an override that reaches into a value the sweep file gives as a list or a single
/// value: `--set sweep.seeds.count=2` over `seeds = [1, 2, 3, 4]`. An override replaces its
/// key's whole value, so the list would become a table of `count` alone (`start` then at its
/// default, 0): other seeds, without a word. Both sources are named, and the way to say it.
fn check_overrides_fit_the_file(file: &Path, table: &toml::Table, env: &[(String, String)], sets: &[SetArg]) -> Result<(), ConfigError> {
    // In the order they apply (environment, then `--set`): one that reaches into a value an
    // earlier override replaced whole (`--set 'sweep.seeds={..}' --set sweep.seeds.count=2`)
    // merges into that table, not into the file's value.
    let paths: Vec<Vec<String>> = env_entries(env).map(|(path, _, _)| path).chain(sets.iter().map(|s| s.path.clone())).collect();
    for (i, path) in paths.iter().enumerate() {
        if paths[..i].iter().any(|earlier| earlier.len() < path.len() && path.starts_with(earlier)) {
            continue;
        }
        let mut at = table;
        for depth in 0..path.len().saturating_sub(1) {
            let value = match at.get(&path[depth]) {
                Some(toml::Value::Table(inner)) => {
                    at = inner;
                    continue;
                }
                Some(value) => value,
                None => break,
            };
            let (outer, key, inner) = (path[..=depth].join("."), path.join("."), path[depth + 1..].join("."));
            let what = if value.is_array() { "a list" } else { "a single value" };
            let why = format!(
                "`{outer}` is {what} in the sweep file (`{value}`), and an override replaces its key's whole value: this one would make it a table of `{inner}` alone, its other keys at their defaults; set `{outer}` whole instead (`--set '{outer}=...'`)"
            );
            let origin = override_origin(&key, env, sets).unwrap_or_else(|| "an override".into());
            return Err(ConfigError::new(file, key.as_str(), ConfigErrorKind::Conflict(why)).with_origin(origin));
        }
    }
    Ok(())
}

/// Refuses a TOML date or time anywhere in `value` (at key `path`): no setting is one, JSON has
/// none, and figment passed it on as its private `{"$__toml_private_datetime": ..}` table, which a
/// plugin then got as a parameter and a run id hashed, or which a typed key called "a table"
/// (review F11). Keys are spelled as in other errors (`sweep.seeds[0]`).
fn refuse_dates(file: &Path, value: &toml::Value, path: &[String], origin: Option<String>) -> Result<(), ConfigError> {
    fn find(value: &toml::Value, key: String) -> Option<(String, String)> {
        match value {
            toml::Value::Datetime(date) => Some((key, date.to_string())),
            toml::Value::Array(items) => items.iter().enumerate().find_map(|(i, v)| find(v, format!("{key}[{i}]"))),
            toml::Value::Table(table) => table.iter().find_map(|(k, v)| find(v, if key.is_empty() { k.clone() } else { format!("{key}.{k}") })),
            _ => None,
        }
    }
    let Some((key, date)) = find(value, path.join(".")) else { return Ok(()) };
    let why = format!("found a date, `{date}`: TOML dates and times are no value of a sweep (JSON has none); if it is text, quote it: \"{date}\"");
    let err = ConfigError::new(file, key.as_str(), ConfigErrorKind::WrongType(why));
    Err(match origin {
        Some(origin) => err.with_origin(origin),
        None => err,
    })
}

/// The tables of the sweep file that must be tables. serde's derived `Deserialize` also takes a
/// list for a struct, its fields by position, so `[[run]]` (a list of tables) was read as "`env`
/// is this table" and refused in words about text, and `run = ["CartPole-v1", "ppo", 16]` was
/// accepted as env, plugin and num_envs (review F5).
const TABLES: [&str; 6] = ["run", "params", "sweep", "sweep.grid", "local", "slurm"];

fn check_tables_are_tables(file: &Path, figment: &Figment, env: &[(String, String)], sets: &[SetArg]) -> Result<(), ConfigError> {
    for key in TABLES {
        let Ok(Value::Array(tag, items)) = figment.find_value(key) else { continue };
        let header = if items.iter().all(|item| matches!(item, Value::Dict(..))) && !items.is_empty() {
            format!("`[[{key}]]` makes a list of tables: write `[{key}]`")
        } else {
            format!("a list gives no key names: write `[{key}]` with `key = value` lines")
        };
        let err = ConfigError::new(file, key, ConfigErrorKind::WrongType(format!("found a list, expected a table ({header})")));
        let from_override = figment.get_metadata(tag).is_some_and(|m| m.name != FILE_SOURCE);
        return Err(match from_override.then(|| override_origin(key, env, sets)).flatten() {
            Some(origin) => err.with_origin(origin),
            None => err,
        });
    }
    Ok(())
}

/// Refuses an override of a `[run]` or `[params]` key that no run would see: a grid axis, a key
/// set by every case, or `run.seed` beside `sweep.seeds` replace it in every run, so the
/// override would change nothing, silently. A value in the file under such an axis is a default
/// and stays allowed, and so does a whole table given at once (`--set 'params={..}'`).
fn check_overrides_reach_a_run(file: &Path, parsed: &SweepFile, env: &[(String, String)], sets: &[SetArg]) -> Result<(), ConfigError> {
    let paths = env_entries(env).map(|(path, _, _)| path).chain(sets.iter().map(|s| s.path.clone()));
    for path in paths {
        let [table, key] = path.as_slice() else { continue };
        // `run.env` and `run.plugin` are required and checked (the plugin found) in `[run]` even
        // under an axis, so an override of them does reach something.
        if !(table == "run" || table == "params") || (table == "run" && (key == "env" || key == "plugin")) {
            continue;
        }
        let axis = format!("{table}.{key}");
        let cases = parsed.sweep.cases.as_deref().unwrap_or_default();
        let why = if axis == "run.seed" && parsed.sweep.seeds.is_some() {
            "`sweep.seeds` gives every run its seed: set the seeds instead, `--set sweep.seeds=[..]`".to_string()
        } else if parsed.sweep.grid.contains_key(&axis) {
            format!("`{axis}` is a grid axis, whose values replace this one in every run: set the axis instead, `--set 'sweep.grid.{axis}=[..]'`")
        } else if !cases.is_empty() && cases.iter().all(|case| case.contains_key(&axis)) {
            format!("every case of `sweep.cases` sets `{axis}`, which replaces this value in every run: change the cases instead")
        } else {
            continue;
        };
        let origin = override_origin(&axis, env, sets).unwrap_or_else(|| "an override".into());
        return Err(ConfigError::new(file, axis.as_str(), ConfigErrorKind::Conflict(why)).with_origin(origin));
    }
    Ok(())
}

/// Which base each relative path of the merged configuration has: the folder of `file` for a
/// value the file gave, the working directory (`""`) for one an override gave (`PathBases`).
fn path_bases(file: &Path, figment: &Figment) -> PathBases {
    let folder = file.parent().map(Path::to_path_buf).unwrap_or_default();
    let base_of = |value: Option<&Value>| match value {
        Some(v) if figment.get_metadata(v.tag()).is_some_and(|m| m.name != FILE_SOURCE) => PathBuf::new(),
        _ => folder.clone(),
    };
    let find = |key: &str| figment.find_value(key).ok();
    // Grid axis names hold dots, so `sweep.grid` is looked up and the axis taken from its table.
    let grid = find("sweep.grid").and_then(Value::into_dict);
    let cases = find("sweep.cases").and_then(|v| v.into_array()).unwrap_or_default();
    PathBases {
        plugin_path: base_of(find("plugin_path").as_ref()),
        run_plugin: base_of(find("run.plugin").as_ref()),
        grid_plugin: base_of(grid.as_ref().and_then(|g| g.get("run.plugin"))),
        case_plugin: cases.iter().map(|case| base_of(case.as_dict().and_then(|c| c.get("run.plugin")))).collect(),
    }
}

/// `line L, column C: <what> (in `<that line>`)` on one line: `toml`'s own text draws the line
/// with a caret over several lines, which flattened into one error line reads as noise.
fn syntax_message(text: &str, e: &toml::de::Error) -> String {
    let what = e.message().trim().replace('\n', "; ");
    let Some(span) = e.span() else { return what };
    let before = &text[..span.start.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    match text.lines().nth(line - 1).map(str::trim).filter(|l| !l.is_empty()) {
        Some(source) => format!("line {line}, column {column}: {what} (in `{source}`)"),
        None => format!("line {line}, column {column}: {what}"),
    }
}

/// A snapshot of `DROVER_*` variables as a figment provider (figment's `Env` reads the process env).
struct EnvSnapshot(Vec<(String, String)>);

impl Provider for EnvSnapshot {
    fn metadata(&self) -> Metadata {
        let names: Vec<String> = self.0.iter().map(|(name, _)| name.clone()).collect();
        Metadata::named("environment variable").interpolater(move |_profile, keys| {
            // An error inside a variable's value (`DROVER_LOCAL__GPUS=[0,"x"]`, key `local.gpus.1`)
            // names that variable, not a `DROVER_LOCAL__GPUS__1` that does not exist.
            let path_of = |name: &String| -> Option<Vec<String>> {
                Some(name.strip_prefix("DROVER_")?.to_ascii_lowercase().split("__").map(str::to_string).collect())
            };
            let prefix_of_keys = |name: &&String| path_of(name).is_some_and(|path| keys.len() >= path.len() && keys[..path.len()] == path[..]);
            if let Some(name) = names.iter().find(prefix_of_keys) {
                return format!("environment variable `{name}`");
            }
            // An error above the variable's own key (`DROVER_RUN__NUM__ENVS`: `run.num` is not a
            // key) names that variable, not a `DROVER_RUN__NUM` that does not exist (review F8).
            let below_keys = |name: &&String| path_of(name).is_some_and(|path| path.len() > keys.len() && path[..keys.len()] == keys[..]);
            if let Some(name) = names.iter().find(below_keys) {
                return format!("environment variable `{name}`");
            }
            let key = keys.iter().map(|k| k.to_ascii_uppercase()).collect::<Vec<_>>().join("__");
            format!("environment variable `DROVER_{key}`")
        })
    }
    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        let mut dict = Dict::new();
        for (path, _, value) in env_entries(&self.0) {
            let parsed = env_value(value);
            let mut nested = parsed;
            for segment in path.iter().rev() {
                let mut d = Dict::new();
                d.insert(segment.to_string(), nested);
                nested = d.into();
            }
            if let Some(d) = nested.into_dict() {
                dict = merge_dicts(dict, d);
            }
        }
        Ok(Profile::Default.collect(dict))
    }
}

/// An environment variable's value, read the way `--set` reads its value (`parse_set`): one TOML
/// value (`1e-3`, `1E-3`, `1_000`, `true`, `[1, 2]`, `{ count = 3 }`, `"quoted"`), else the text
/// itself. figment's own env grammar is not used: it reads exponents and `_` digit separators
/// as strings (`DROVER_RUN__LR=1e-3` became the text "1e-3", refused as "found string"), and its
/// unescaping indexes bytes by character position, which panicked on `"é\n"`. A value that TOML
/// reads as a date stays text, as it was before: a variable is text, and no setting is a date.
fn env_value(value: &str) -> figment::value::Value {
    let text = || figment::value::Value::from(value.to_string());
    let parsed = match format!("v = {value}").parse::<toml::Table>() {
        Ok(mut table) if table.len() == 1 => table.remove("v"),
        _ => None,
    };
    match parsed {
        Some(toml::Value::Datetime(_)) | None => text(),
        Some(v) => v.try_into().unwrap_or_else(|_| text()),
    }
}

/// The `DROVER_*` variables of `env` that configure the sweep: (key path, name, value). The
/// others (`DROVER_PLUGIN_PATH`, `DROVER_JOB_BIN`, ...) belong to the runtime.
/// The overrides of a sweep in the order they apply (`DROVER_*` sweep variables, then each
/// `--set`), written as a user would type them: what `sweep.json` records beside the file's
/// own text, since the results depend on both.
pub fn override_list(env: &[(String, String)], sets: &[SetArg]) -> Vec<String> {
    let mut vars: Vec<String> = env_entries(env).map(|(_, name, value)| format!("{name}={value}")).collect();
    vars.sort();
    vars.into_iter().chain(sets.iter().map(|s| format!("--set {}", s.raw))).collect()
}

fn env_entries(env: &[(String, String)]) -> impl Iterator<Item = (Vec<String>, &str, &str)> {
    env.iter().filter_map(|(name, value)| {
        let key = name.strip_prefix("DROVER_")?.to_ascii_lowercase();
        is_sweep_variable(&key).then(|| (key.split("__").map(str::to_string).collect(), name.as_str(), value.as_str()))
    })
}

/// A provider whose values at `paths` are taken out, because a later source sets those keys and
/// an override replaces a value whole rather than joining its table with the earlier one.
struct Without<P> {
    inner: P,
    paths: Vec<Vec<String>>,
}

impl<P> Without<P> {
    fn new(inner: P, paths: Vec<Vec<String>>) -> Self {
        Without { inner, paths }
    }
}

impl<P: Provider> Provider for Without<P> {
    fn metadata(&self) -> Metadata {
        self.inner.metadata()
    }
    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        let mut data = self.inner.data()?;
        for dict in data.values_mut() {
            for path in &self.paths {
                remove_path(dict, path);
            }
        }
        Ok(data)
    }
}

/// Removes the value at `path` (table keys) from `dict`, if there is one.
fn remove_path(dict: &mut Dict, path: &[String]) {
    match path {
        [] => {}
        [last] => {
            dict.remove(last);
        }
        [first, rest @ ..] => {
            if let Some(Value::Dict(_, inner)) = dict.get_mut(first) {
                remove_path(inner, rest);
            }
        }
    }
}

fn merge_dicts(mut a: Dict, b: Dict) -> Dict {
    for (k, v) in b {
        let merged = match (a.remove(&k), v) {
            (Some(figment::value::Value::Dict(_, da)), figment::value::Value::Dict(tag, db)) => {
                figment::value::Value::Dict(tag, merge_dicts(da, db))
            }
            (_, v) => v,
        };
        a.insert(k, merged);
    }
    a
}

/// Where the value of `key` came from when an override (a `--set`, else a `DROVER_*` variable)
/// replaced the file's: checks after loading (`Sweep::validate`, the plugin's parameter check)
/// only know the key, and a message naming the file alone sends the user to a line that is not
/// at fault. `None` when the file's own value stands.
pub fn override_origin(key: &str, env: &[(String, String)], sets: &[SetArg]) -> Option<String> {
    // `local.gpus[1]` is an element of `local.gpus`, which is what an override replaces.
    let key = key.split('[').next().unwrap_or(key);
    let related = |set: &str| set == key || key.starts_with(&format!("{set}.")) || set.starts_with(&format!("{key}."));
    if let Some(set) = sets.iter().rev().find(|s| related(&s.path.join("."))) {
        return Some(format!("`--set {}`", set.raw));
    }
    env_entries(env).find_map(|(path, name, _)| related(&path.join(".")).then(|| format!("environment variable `{name}`")))
}

/// Maps figment's error (path + kind + metadata) to a `ConfigError` naming the key (`a.b[0].c`,
/// looked up in `figment`'s merged values) and origin, in plain words (`config::messages`).
fn convert_figment_error(file: &Path, figment: &Figment, e: figment::Error) -> ConfigError {
    let mut key_path = e.path.clone();
    match &e.kind {
        // figment usually ends the path with the field already; do not name it twice.
        Kind::UnknownField(field, _) if key_path.last() != Some(field) => key_path.push(field.clone()),
        Kind::MissingField(field) if key_path.last().map(String::as_str) != Some(field.as_ref()) => {
            key_path.push(field.to_string())
        }
        _ => {}
    }
    let mut kind = plain_kind(&e.kind);
    if let (Kind::InvalidType(Actual::Map, _), [sweep, grid, top]) = (&e.kind, key_path.as_slice()) {
        if sweep == "sweep" && grid == "grid" {
            let table = figment.find_value(&format!("sweep.grid.{top}")).ok().and_then(|v| serde_json::to_value(v).ok());
            if let Some(nested) = table.and_then(|t| super::messages::unquoted_dotted_key(top, &t)) {
                kind = nested;
            }
        }
    }
    if let [table, name, ..] = key_path.as_slice() {
        if table == "run" && crate::config::sweep::AT_LEAST_ONE.contains(&name.as_str()) {
            kind = from_one(kind);
        }
    }
    // `max_parallel = 0` is refused as "must be at least 1": its type error says the same range.
    if key_path == ["max_parallel"] {
        kind = from_one(kind);
    }
    // `seeds = 3`, the most common slip, gets the two forms that mean three seeds (review F13).
    if key_path == ["sweep", "seeds"] {
        let count = figment.find_value("sweep.seeds").ok().and_then(|v| v.to_i128().or_else(|| v.to_u128().and_then(|n| i128::try_from(n).ok()))).and_then(|n| u64::try_from(n).ok());
        if let (Some(n), ConfigErrorKind::WrongType(why)) = (count.filter(|n| *n > 0), &kind) {
            let list: Vec<String> = (1..=n.min(3)).map(|i| i.to_string()).collect();
            let list = if n > 3 { format!("[{}, ..., {n}]", list.join(", ")) } else { format!("[{}]", list.join(", ")) };
            kind = ConfigErrorKind::WrongType(format!("{why} (for {n} seeds: `{{ count = {n} }}`, seeds 0 to {}, or `{list}`)", n.saturating_sub(1)));
        }
    }
    let key = if key_path.is_empty() { None } else { Some(key_text(&key_path, |top| figment.find_value(top).ok())) };
    // The file is the default origin; name the env var or `--set` argument when it was one of them.
    let origin = e
        .metadata
        .as_ref()
        .filter(|m| m.name != FILE_SOURCE)
        .map(|m| m.interpolate(&Profile::Default, &e.path));
    ConfigError { file: file.to_path_buf(), key, origin, kind: Box::new(kind) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_values_parse_as_toml_or_bare_words() {
        let f = Path::new("s.toml");
        let cases: &[(&str, &str)] = &[
            ("run.lr=1e-3", "run.lr = 0.001"),
            ("sweep.seeds=[1,2]", "sweep.seeds = [1, 2]"),
            ("run.env=Acrobot-v1", "run.env = \"Acrobot-v1\""),
            ("run.env=\"a b\"", "run.env = \"a b\""),
            ("sweep.grid.params.clip_coef=[0.1]", "sweep.grid.params.clip_coef = [0.1]"),
            ("run.anneal_lr=false", "run.anneal_lr = false"),
        ];
        for (raw, expected) in cases {
            let set = parse_set(raw, f).unwrap_or_else(|e| panic!("{raw}: {e}"));
            let shown = format!("{} = {}", set.path.join("."), set.value);
            assert_eq!(&shown, expected, "{raw}");
        }
        let grid = parse_set("sweep.grid.params.clip_coef=[0.1]", f).unwrap();
        assert_eq!(grid.path, ["sweep", "grid", "params.clip_coef"]);
    }

    /// A `--set` value that is not TOML says why in a value's words, on one line: before, `64,64`
    /// got toml's "expected newline, `#`" (it parses `v = 64,64`), and an unclosed list's message
    /// ran over two lines.
    #[test]
    fn set_values_that_are_not_toml_say_why_on_one_line() {
        let f = Path::new("s.toml");
        let cases = [
            ("run.hidden=64,64", "key `run.hidden` (from `--set run.hidden=64,64`): bad --set syntax: cannot parse `64,64` as one TOML value: a list is written in brackets, `[64,64]`"),
            ("sweep.seeds=1, 2", "cannot parse `1, 2` as one TOML value: a list is written in brackets, `[1, 2]`"),
            ("run.lr=1e-3 3", "cannot parse `1e-3 3` as one TOML value: there is text after the value; as text: `--set 'run.lr=\"1e-3 3\"'`"),
            ("sweep.seeds=[1, 2", "cannot parse `[1, 2` as a TOML value: invalid array; expected `]`"),
        ];
        for (raw, expected) in cases {
            let err = parse_set(raw, f).expect_err(raw).to_string();
            assert!(err.contains(expected), "{raw}:\n  got      {err}\n  expected {expected}");
            assert!(!err.contains('\n') && !err.contains("expected newline"), "{err}");
        }
    }

    /// Review-paths finding 7: text with a space, a comma or quotes got advice that was wrong
    /// (a list in brackets for a path) or not a command (`key='"..."'`). The advice is now the
    /// whole argument, which the shell hands back as a `--set` giving that text.
    #[test]
    fn set_advice_for_text_is_a_command_that_gives_it() {
        let f = Path::new("s.toml");
        let cases = [
            ("run.plugin=/tmp/a b/c.so", "/tmp/a b/c.so"),
            ("run.plugin=/x/lib ppo, v2.so", "/x/lib ppo, v2.so"),
            ("run.plugin=/x/lib(2).so x", "/x/lib(2).so x"),
            ("run.plugin='/p/d 'x' \"q\"/a.so'", "/p/d 'x' \"q\"/a.so"),
        ];
        for (raw, meant) in cases {
            let err = parse_set(raw, f).expect_err(raw).to_string();
            assert!(!err.contains("brackets"), "{raw}: {err}");
            let advice = err.split("as text: `--set ").nth(1).and_then(|rest| rest.strip_suffix('`')).unwrap_or_else(|| panic!("{raw}: {err}"));
            let out = std::process::Command::new("sh").arg("-c").arg(format!("printf '%s' {advice}")).output().expect("sh");
            let arg = String::from_utf8(out.stdout).expect("utf-8");
            let set = parse_set(&arg, f).unwrap_or_else(|e| panic!("{raw}: the advice `{advice}` gives `{arg}`: {e}"));
            assert_eq!((set.path.join("."), set.value), ("run.plugin".to_string(), toml::Value::String(meant.to_string())), "{raw}");
        }
    }

    /// `DROVER_*` variables spelled like sweep settings that nothing reads are refused with the
    /// name meant; before, each was ignored without a word. The runtime's own variables pass.
    #[test]
    fn misspelled_drover_variables_are_refused_with_the_name_meant() {
        let f = Path::new("s.toml");
        let text = "name = \"t\"\n[run]\nenv = \"CartPole-v1\"\nplugin = \"ppo\"\n";
        let at = "failed to load sweep file `s.toml`: environment variable";
        let cases = [
            ("DROVER_RUN_NUM_ENVS", format!("{at} `DROVER_RUN_NUM_ENVS`: not read as a sweep setting: a table and its key are separated by a double underscore; did you mean `DROVER_RUN__NUM_ENVS`?")),
            ("DROVER_SWEEP_SEEDS", format!("{at} `DROVER_SWEEP_SEEDS`: not read as a sweep setting: a table and its key are separated by a double underscore; did you mean `DROVER_SWEEP__SEEDS`?")),
            ("DROVER_PARAMS_CLIP_COEF", format!("{at} `DROVER_PARAMS_CLIP_COEF`: not read as a sweep setting: a table and its key are separated by a double underscore; did you mean `DROVER_PARAMS__CLIP_COEF`?")),
            ("DROVER_RUNS__NUM_ENVS", format!("{at} `DROVER_RUNS__NUM_ENVS`: not read as a sweep setting: `runs` is not a table of the sweep file (`DROVER_<TABLE>__<KEY>` sets a key of run, params, sweep, local or slurm); did you mean `DROVER_RUN__NUM_ENVS`?")),
            ("DROVER_X__Y", format!("{at} `DROVER_X__Y`: not read as a sweep setting: `x` is not a table of the sweep file (`DROVER_<TABLE>__<KEY>` sets a key of run, params, sweep, local or slurm)")),
            ("DROVER_MAX_PARALEL", format!("{at} `DROVER_MAX_PARALEL`: not read as a sweep setting: did you mean `DROVER_MAX_PARALLEL`?")),
            ("DROVER_RESULT_DIR", format!("{at} `DROVER_RESULT_DIR`: not read as a sweep setting: did you mean `DROVER_RESULTS_DIR`?")),
            // Failure-injection review D9: a table's key without the table was ignored.
            ("DROVER_NUM_ENVS", format!("{at} `DROVER_NUM_ENVS`: not read as a sweep setting: a key of a table needs the table first; did you mean `DROVER_RUN__NUM_ENVS`?")),
            ("DROVER_LR", format!("{at} `DROVER_LR`: not read as a sweep setting: a key of a table needs the table first; did you mean `DROVER_RUN__LR`?")),
            ("DROVER_SEEDS", format!("{at} `DROVER_SEEDS`: not read as a sweep setting: a key of a table needs the table first; did you mean `DROVER_SWEEP__SEEDS`?")),
            // Review F7: variables mirroring a flag were ignored without a word.
            ("DROVER_RESULTS", format!("{at} `DROVER_RESULTS`: not read as a sweep setting: did you mean `DROVER_RESULTS_DIR` (or `drover run --results DIR`)?")),
            ("DROVER_JOBS", format!("{at} `DROVER_JOBS`: not read as a sweep setting: did you mean `DROVER_MAX_PARALLEL` (or `drover run -j N`)?")),
            ("DROVER_PARALLEL", format!("{at} `DROVER_PARALLEL`: not read as a sweep setting: did you mean `DROVER_MAX_PARALLEL` (or `drover run -j N`)?")),
            // Review F8: a grid axis cannot be named in a variable's name, so TOML's "quote it" cannot help.
            ("DROVER_SWEEP__GRID__PARAMS__GAMMA", format!("{at} `DROVER_SWEEP__GRID__PARAMS__GAMMA`: not read as a sweep setting: grid axes are dotted names (`params.gamma`), which a variable's name cannot hold: use `--set 'sweep.grid.params.gamma=1'` or `DROVER_SWEEP__GRID='{{\"params.gamma\" = 1}}'`")),
        ];
        for (name, expected) in cases {
            let err = load_str(f, text, &[(name.to_string(), "1".to_string())], &[]).expect_err(name).to_string();
            assert_eq!(err, expected, "{name}");
        }
        let env: Vec<(String, String)> = RUNTIME_VARIABLES.iter().map(|n| (n.to_string(), "1".to_string())).collect();
        load_str(f, text, &env, &[]).expect("the runtime's variables are not sweep settings");
    }

    /// Review F7: a whole table from a variable (`DROVER_PARAMS='{gamma = 0.9}'`) was ignored;
    /// it replaces the table, as `--set 'params={..}'` does. Review F8: an error above a deeper
    /// variable's key named a variable that does not exist (`DROVER_RUN__NUM`).
    #[test]
    fn whole_tables_and_deeper_paths_from_variables() {
        let f = Path::new("s.toml");
        let text = "name = \"t\"\n[run]\nenv = \"CartPole-v1\"\nplugin = \"ppo\"\n[params]\nclip_coef = 0.1\n";
        let var = |name: &str, value: &str| load_str(f, text, &[(name.to_string(), value.to_string())], &[]);
        let parsed = var("DROVER_PARAMS", "{gamma = 0.9}").expect("a whole table");
        assert_eq!(serde_json::to_value(&parsed.params).expect("json"), serde_json::json!({"gamma": 0.9}), "replaced whole");
        assert_eq!(var("DROVER_SWEEP", "{seeds = [5]}").expect("a whole table").sweep.seeds.map(|s| format!("{s:?}")), Some("List([5])".to_string()));
        let run = var("DROVER_RUN", "{env = \"CartPole-v1\", plugin = \"ppo\", lr = 0.1}").expect("a whole table").run;
        assert_eq!(run.lr, 0.1);
        let err = var("DROVER_RUN__NUM__ENVS", "4").map(|_| ()).expect_err("no such key").to_string();
        assert!(err.contains("key `run.num` (from environment variable `DROVER_RUN__NUM__ENVS`): unknown key"), "{err}");
    }

    /// A property test found it: `DROVER_RUN__ENV='"é\n"'` panicked inside figment (its
    /// unescaping indexes bytes by character position). Such values are read as TOML reads them.
    #[test]
    fn an_escaped_value_after_a_non_ascii_character_is_read_not_a_panic() {
        assert_eq!(env_value(r#""é\n""#), figment::value::Value::from("é\n".to_string()));
        assert_eq!(env_value(r#"["é\t", "x"]"#), figment::value::Value::from(vec!["é\t".to_string(), "x".to_string()]));
        assert_eq!(env_value(r#"é\"#), figment::value::Value::from(r#"é\"#.to_string()), "not TOML: the text itself");
        assert_eq!(env_value("0.5"), figment::value::Value::from(0.5));
        assert_eq!(env_value("Acrobot-v1"), figment::value::Value::from("Acrobot-v1".to_string()), "a bare word is text");
        let f = Path::new("s.toml");
        let text = "name = \"t\"\n[run]\nenv = \"CartPole-v1\"\nplugin = \"ppo\"\n";
        let err = load_str(f, text, &[("DROVER_RUN__NUM_ENVS".into(), r#""é\n""#.into())], &[]).map(|_| ()).expect_err("not a count");
        assert!(err.to_string().contains("DROVER_RUN__NUM_ENVS"), "{err}");
    }

    /// Review finding F1: `DROVER_RUN__LR=1e-3` was the text "1e-3" (figment's env grammar reads
    /// exponents and `_` separators as strings), refused as "found string" for `run.lr` and given
    /// to the plugin as text for a `params.*` key. A variable's value reads as `--set`'s does.
    #[test]
    fn variable_values_parse_like_set_values() {
        let f = Path::new("s.toml");
        let text = "name = \"t\"\n[run]\nenv = \"CartPole-v1\"\nplugin = \"ppo\"\n";
        let var = |name: &str, value: &str| load_str(f, text, &[(name.to_string(), value.to_string())], &[]);
        let set = |raw: &str| load_str(f, text, &[], &[parse_set(raw, f).expect("parses")]);
        let cases = [
            ("DROVER_RUN__LR", "1e-3", "run.lr=1e-3"),
            ("DROVER_RUN__LR", "1E-3", "run.lr=1E-3"),
            ("DROVER_RUN__TOTAL_STEPS", "1_000", "run.total_steps=1_000"),
            ("DROVER_RUN__ANNEAL_LR", "false", "run.anneal_lr=false"),
            ("DROVER_RUN__HIDDEN", "[32, 32]", "run.hidden=[32,32]"),
            ("DROVER_PARAMS__GAMMA", "9e-1", "params.gamma=9e-1"),
            ("DROVER_SWEEP__SEEDS", "{ count = 2, start = 1_0 }", "sweep.seeds={count=2,start=10}"),
            ("DROVER_RUN__ENV", "Acrobot-v1", "run.env=Acrobot-v1"),
        ];
        for (name, value, raw) in cases {
            let from_var = var(name, value).unwrap_or_else(|e| panic!("{name}={value}: {e}"));
            let from_set = set(raw).unwrap_or_else(|e| panic!("--set {raw}: {e}"));
            assert_eq!(format!("{from_var:?}"), format!("{from_set:?}"), "{name}={value} vs --set {raw}");
        }
        assert_eq!(var("DROVER_RUN__LR", "1e-3").expect("loads").run.lr, 0.001);
        assert_eq!(var("DROVER_PARAMS__GAMMA", "9e-1").expect("loads").params.get("gamma"), Some(&serde_json::json!(0.9)));
        assert_eq!(var("DROVER_RUN__TOTAL_STEPS", "1_000").expect("loads").run.total_steps, 1000);
        // Not finite: refused with the variable's name, as `--set params.gamma=+inf` is.
        let err = var("DROVER_PARAMS__GAMMA", "+inf").map(|_| ()).expect_err("infinite").to_string();
        assert!(err.contains("key `params.gamma` (from environment variable `DROVER_PARAMS__GAMMA`): invalid value: found `inf`"), "{err}");
        // A date-like text stays text (no setting is a date; figment read it as text too).
        assert_eq!(env_value("2024-01-01"), figment::value::Value::from("2024-01-01".to_string()));
    }

    /// Failure-injection review D1: `drover run` panicked when any variable of the environment
    /// was not UTF-8. Others are left out; a `DROVER_*` one is refused by name.
    #[test]
    fn variables_that_are_not_utf8_are_left_out_unless_they_are_drovers() {
        use std::os::unix::ffi::OsStringExt;
        let f = Path::new("s.toml");
        let bad = || OsString::from_vec(vec![b'a', 0xff]);
        let vars = vec![(OsString::from("FOO"), bad()), (OsString::from("DROVER_RUN__LR"), OsString::from("0.1"))];
        assert_eq!(environment(f, vars).expect("FOO is not drover's"), vec![("DROVER_RUN__LR".to_string(), "0.1".to_string())]);
        // Review-paths finding 10: the runtime's path variables may hold any bytes; only a
        // setting (parsed as TOML) must be text. Their readers take them from the process.
        for runtime in ["DROVER_PLUGIN_PATH", "DROVER_CACHE_DIR", "DROVER_JOB_BIN", "DROVER_X"] {
            assert_eq!(environment(f, vec![(OsString::from(runtime), bad())]).expect(runtime), vec![], "{runtime}");
        }
        for setting in ["DROVER_PARAMS", "DROVER_MAX_PARALLEL", "DROVER_LOCAL__GPUS"] {
            environment(f, vec![(OsString::from(setting), bad())]).expect_err(setting);
        }
        let err = environment(f, vec![(OsString::from("DROVER_RUN__ENV"), bad())]).expect_err("drover's").to_string();
        assert_eq!(err, "failed to load sweep file `s.toml`: environment variable `DROVER_RUN__ENV`: not valid UTF-8");
        let err = environment(f, vec![(OsString::from_vec(b"DROVER_\xff".to_vec()), OsString::from("1"))]).expect_err("name").to_string();
        assert!(err.contains("environment variable `DROVER_"), "{err}");
    }

    /// An override that no run would see (a grid axis, a key every case sets, `run.seed` beside
    /// `sweep.seeds`) is refused naming it; before, the runs went ahead without it.
    #[test]
    fn overrides_hidden_by_an_axis_in_every_run_are_refused() {
        let f = Path::new("s.toml");
        let text = "name = \"t\"\n[run]\nenv = \"CartPole-v1\"\nplugin = \"ppo\"\n[params]\nent_coef = 0.0\n[sweep]\nseeds = [1, 2]\n[sweep.grid]\n\"params.ent_coef\" = [0.0, 0.01]\n[[sweep.cases]]\n\"run.lr\" = 0.1\n[[sweep.cases]]\n\"run.lr\" = 0.2\n\"run.num_envs\" = 4\n";
        let at = "failed to load sweep file `s.toml`: key";
        let set = |raw: &str| parse_set(raw, f).expect("parses");
        let env = |name: &str| vec![(name.to_string(), "3".to_string())];
        let cases = [
            (load_str(f, text, &[], &[set("params.ent_coef=0.1")]), format!("{at} `params.ent_coef` (from `--set params.ent_coef=0.1`): conflict: `params.ent_coef` is a grid axis, whose values replace this one in every run: set the axis instead, `--set 'sweep.grid.params.ent_coef=[..]'`")),
            (load_str(f, text, &env("DROVER_RUN__LR"), &[]), format!("{at} `run.lr` (from environment variable `DROVER_RUN__LR`): conflict: every case of `sweep.cases` sets `run.lr`, which replaces this value in every run: change the cases instead")),
            (load_str(f, text, &[], &[set("run.seed=3")]), format!("{at} `run.seed` (from `--set run.seed=3`): conflict: `sweep.seeds` gives every run its seed: set the seeds instead, `--set sweep.seeds=[..]`")),
        ];
        for (outcome, expected) in cases {
            assert_eq!(outcome.map(|_| ()).map_err(|e| e.to_string()), Err(expected));
        }
        // A key one case leaves alone reaches that case's runs; the file's own default under an axis is fine.
        load_str(f, text, &[], &[set("run.num_envs=16")]).expect("reaches the first case");
        load_str(f, text, &[], &[set("run.seed=3"), set("sweep.seeds={count=1}")]).expect_err("seeds still set");
        load_str(f, text, &[], &[set("params.ent_coef=0.1"), set("sweep.grid={}")]).expect("the axis is gone");
    }

    /// Review finding (research): `--set sweep.seeds.count=2` over `seeds = [1, 2, 3, 4]`
    /// silently became `{count = 2, start = 0}`.
    #[test]
    fn an_override_into_a_list_of_the_file_is_refused_naming_both() {
        let f = Path::new("s.toml");
        let text = "name = \"t\"\n[run]\nenv = \"E\"\nplugin = \"p\"\n[sweep]\nseeds = [1, 2, 3, 4]\n";
        let set = |raw: &str| parse_set(raw, f).expect("parses");
        let err = load_str(f, text, &[], &[set("sweep.seeds.count=2")]).err().map(|e| e.to_string()).unwrap_or_default();
        assert_eq!(
            err,
            "failed to load sweep file `s.toml`: key `sweep.seeds.count` (from `--set sweep.seeds.count=2`): conflict: `sweep.seeds` is a list in the sweep file (`[1, 2, 3, 4]`), and an override replaces its key's whole value: this one would make it a table of `count` alone, its other keys at their defaults; set `sweep.seeds` whole instead (`--set 'sweep.seeds=...'`)"
        );
        let env = vec![("DROVER_SWEEP__SEEDS__START".to_string(), "5".to_string())];
        let err = load_str(f, text, &env, &[]).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("key `sweep.seeds.start` (from environment variable `DROVER_SWEEP__SEEDS__START`): conflict"), "{err}");
        // The whole value, or a key of a table, is what an override is for.
        assert!(load_str(f, text, &[], &[set("sweep.seeds={count=2}")]).is_ok());
        let table = text.replace("seeds = [1, 2, 3, 4]", "seeds = { count = 4, start = 1 }");
        let parsed = load_str(f, &table, &[], &[set("sweep.seeds.count=2")]).expect("a key of a table");
        assert!(format!("{:?}", parsed.sweep.seeds).contains('2'), "{:?}", parsed.sweep.seeds);
        // An earlier override that made it a table takes a key of it (review finding).
        let parsed = load_str(f, text, &[], &[set("sweep.seeds={count=4,start=1}"), set("sweep.seeds.count=2")]).expect("into the override's table");
        let seeds = format!("{:?}", parsed.sweep.seeds);
        assert!(seeds.contains("count: 2") && seeds.contains("start: 1"), "{seeds}");
        let env = vec![("DROVER_SWEEP__SEEDS".to_string(), "{count=4}".to_string())];
        assert!(load_str(f, text, &env, &[set("sweep.seeds.start=5")]).is_ok(), "the environment's table, then --set");
    }

    #[test]
    fn toml_syntax_errors_say_line_column_and_the_line_on_one_line() {
        let f = Path::new("s.toml");
        let err = load_str(f, "name = \"x\"\n[run\n", &[], &[]).expect_err("bad header").to_string();
        assert_eq!(err, "failed to load sweep file `s.toml`: invalid TOML: line 2, column 5: invalid table header; expected `.`, `]` (in `[run`)");
        let err = load_str(f, "name = \"x\"\nlr = 1e-\n", &[], &[]).expect_err("bad float").to_string();
        assert!(err.contains("invalid TOML: line 2, column ") && err.ends_with("(in `lr = 1e-`)") && !err.contains('|'), "{err}");
    }

    /// Review F12: a byte-order mark moved the first line's columns and was quoted; a byte that
    /// is not UTF-8 got no line; an empty file was told its `name` is missing.
    #[test]
    fn bom_bad_bytes_and_empty_files_get_their_own_words() {
        let f = Path::new("s.toml");
        let err = load_str(f, "\u{feff}[run\n", &[], &[]).expect_err("bad header").to_string();
        assert_eq!(err, "failed to load sweep file `s.toml`: invalid TOML: line 1, column 5: invalid table header; expected `.`, `]` (in `[run`)");
        load_str(f, "\u{feff}name = \"t\"\n[run]\nenv = \"CartPole-v1\"\nplugin = \"ppo\"\n", &[], &[]).expect("a BOM file loads");
        for empty in ["", "# only a comment\n\n"] {
            let err = load_str(f, empty, &[], &[]).expect_err("empty").to_string();
            assert_eq!(err, "failed to load sweep file `s.toml`: the file has no settings (it is empty or only comments): a sweep needs at least `name` and a `[run]` table with `env` and `plugin`");
        }
        let tmp = tempfile::tempdir().expect("tempdir");
        let latin1 = tmp.path().join("s.toml");
        std::fs::write(&latin1, b"name = \"t\"\n# caf\xe9\n").expect("write");
        let err = load(&latin1, &[], &[]).map(|_| ()).expect_err("not UTF-8").to_string();
        assert!(err.ends_with("invalid TOML: line 2, column 6: byte 0xe9 is not UTF-8 (TOML files are UTF-8 text: save the file as UTF-8)"), "{err}");
    }

    /// The launch tables added after the first env grammar (`backend`, `[local]`, `[slurm]`) are
    /// overridable like the rest, and their bad values name the variable; before, they were
    /// silently ignored.
    #[test]
    fn env_vars_reach_backend_local_and_slurm() {
        let f = Path::new("s.toml");
        let text = "name = \"t\"\n[run]\nenv = \"CartPole-v1\"\nplugin = \"ppo\"\n";
        let env = |pairs: &[(&str, &str)]| pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<Vec<_>>();
        let file = load_str(
            f,
            text,
            &env(&[("DROVER_BACKEND", "slurm"), ("DROVER_LOCAL__MAX_RETRIES", "2"), ("DROVER_SLURM_SKIP", "1"), ("DROVER_PLUGIN_PATH", "/x")]),
            &[],
        )
        .expect("loads");
        assert_eq!(file.backend, Some(crate::backend::slurm_config::BackendKind::Slurm));
        assert_eq!(file.local.and_then(|l| l.max_retries), Some(2));
        assert!(file.plugin_path.is_empty(), "DROVER_PLUGIN_PATH is the runtime's, not `plugin_path`");
        let err = load_str(f, text, &env(&[("DROVER_SLURM__NO_SUCH_KEY", "1")]), &[]).expect_err("unknown [slurm] key").to_string();
        assert!(err.contains("key `slurm.no_such_key` (from environment variable `DROVER_SLURM__NO_SUCH_KEY`)"), "{err}");
    }
}
