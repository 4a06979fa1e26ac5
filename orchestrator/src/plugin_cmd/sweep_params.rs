//! What the plugins' own descriptions settle about a sweep's `[params]`, before anything is
//! launched: each plugin described once, every run's parameters judged by its plugin (its
//! declared kinds and ranges, then its constructor), a `[params]` key given as a `DROVER_*`
//! variable without its table, and two configurations that are one training.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::config::{self, RunSpec, Sweep};
use crate::error::{ConfigError, ConfigErrorKind};

use super::{keys_at_default, retype_params, validate_params, PluginDescription, PluginProbe};

/// Describes each distinct plugin once (a `drover-job plugin info` subprocess each), refusing a
/// library whose own name is not the one the sweep asked for. Keyed by `run.plugin` as written.
pub(crate) fn describe_plugins(probe: &PluginProbe, plugins: &BTreeMap<String, PathBuf>, file: &Path) -> Result<BTreeMap<String, PluginDescription>, ConfigError> {
    let mut described = BTreeMap::new();
    for (name, path) in plugins {
        let desc = probe.info(path).map_err(|e| {
            ConfigError::new(file, "run.plugin", ConfigErrorKind::PluginUnusable { name: name.clone(), reason: e.to_string() })
        })?;
        // A plugin is looked up by the name it gives itself (its `info()`), so a library under
        // another plugin's file name (a renamed copy, a crate that re-exports its dependency's
        // plugin) would run one algorithm while `spec.json` and analyze name another. The name
        // asked for is compared, not the file found: that may be a symlink's target
        // (`libdrover_plugin_x.so -> libdrover_plugin_x.so.1`), whose name says nothing.
        let same = |a: &str, b: &str| a.replace('-', "_") == b.replace('-', "_");
        if !config::is_plugin_path(name) && !same(name, &desc.name) {
            let reason = format!(
                "`{}` is plugin `{}` by its own description, not `{name}`: name it `{}` in the sweep, \
                 give the library's path, or rename the file to `{}`",
                path.display(),
                desc.name,
                desc.name,
                config::file_names_of_plugin(&desc.name)[0]
            );
            return Err(ConfigError::new(file, "run.plugin", ConfigErrorKind::PluginUnusable { name: name.clone(), reason }));
        }
        described.insert(name.clone(), desc);
    }
    Ok(described)
}

/// Describes each distinct plugin once (in a `drover-job plugin info` subprocess) and checks
/// every run's `[params]` against it, then has the plugin's constructor judge each distinct
/// params object (one `info --try-params` subprocess per plugin), so nothing is launched with a
/// parameter the plugin would refuse: a mode name it does not know or two keys that contradict
/// would otherwise fail every job, on Slurm after its wait in the queue. The error names the
/// sweep file, the `params.<key>`, the plugin and the reason.
pub(crate) fn check_plugin_params(
    probe: &PluginProbe,
    plugins: &BTreeMap<String, PathBuf>,
    described: &BTreeMap<String, PluginDescription>,
    sweep: &Sweep,
    runs: &[RunSpec],
    file: &Path,
) -> Result<(), ConfigError> {
    // `key`: the params key blamed, `None` for the params object as a whole.
    let refused = |run: &RunSpec, desc: &PluginDescription, key: Option<&str>, reason: String| {
        let kind = ConfigErrorKind::PluginParam { plugin: desc.name.clone(), version: desc.version.clone(), reason };
        let Some(key) = key else {
            return ConfigError::new(file, "params", kind).with_origin(format!("the params of run `{}`", run.label));
        };
        refused_at(sweep, described, run, desc, key, kind, file)
    };
    // Each distinct params object per plugin, with its canonical JSON (the constructor
    // check's cache key), in run order.
    let mut seen = std::collections::BTreeSet::new();
    // The seeds of a configuration share its params (its id hashes them): one canonical form
    // per configuration, not per run, of a sweep of thousands.
    let mut configs = std::collections::HashSet::new();
    let mut to_try: BTreeMap<&str, Vec<(&RunSpec, String)>> = BTreeMap::new();
    for run in runs {
        if !configs.insert(&run.config_id) {
            continue;
        }
        let Some(desc) = described.get(run.plugin()) else { continue };
        let canonical = config::canonical_json(&serde_json::Value::Object((*run.params).clone()));
        if !seen.insert((run.plugin(), canonical.clone())) {
            continue;
        }
        if let Err(problem) = validate_params(desc, &run.params) {
            return Err(refused(run, desc, Some(&problem.key), problem.reason));
        }
        to_try.entry(run.plugin()).or_default().push((run, canonical));
    }
    for (name, runs) in to_try {
        let (Some(path), Some(desc)) = (plugins.get(name), described.get(name)) else { continue };
        let params: Vec<&str> = runs.iter().map(|(_, canonical)| canonical.as_str()).collect();
        let verdicts = probe.try_params(path, &params).map_err(|e| {
            ConfigError::new(file, "run.plugin", ConfigErrorKind::PluginUnusable { name: name.to_string(), reason: e.to_string() })
        })?;
        if let Some(((run, _), refusal)) = runs.iter().zip(verdicts).find_map(|(run, v)| v.map(|v| (run, v))) {
            return Err(refused(run, desc, refusal.params_key(), refusal.reason.clone()));
        }
    }
    Ok(())
}

/// A plugin's refusal of `params.<key>` of `run`, at the place that gave the value (review F10):
/// the case (`sweep.cases[3].params.k`) or the grid axis (`sweep.grid.params.k`, which
/// `name_override` then ties to the `--set` that added it), else `params.k`. A base value that
/// every case receives and this case's plugin does not know, while another plugin of the sweep
/// takes it, is told so, instead of a "did you mean" another key of this plugin.
fn refused_at(
    sweep: &Sweep,
    described: &BTreeMap<String, PluginDescription>,
    run: &RunSpec,
    desc: &PluginDescription,
    key: &str,
    kind: ConfigErrorKind,
    file: &Path,
) -> ConfigError {
    let axis = config::AxisKey::Params(key.to_string());
    let axis_text = format!("params.{key}");
    let in_case = sweep.cases.get(run.case).is_some_and(|case| case.iter().any(|(k, _)| *k == axis));
    if in_case {
        return ConfigError::new(file, format!("sweep.cases[{}].{axis_text}", run.case).as_str(), kind);
    }
    if sweep.grid.iter().any(|(k, _)| *k == axis) {
        return ConfigError::new(file, format!("sweep.grid.{axis_text}").as_str(), kind);
    }
    let others: Vec<&str> = described.values().filter(|d| d.name != desc.name && d.params.iter().any(|p| p.name == key)).map(|d| d.name.as_str()).collect();
    let unknown_here = !desc.params.iter().any(|p| p.name == key);
    let kind = match kind {
        ConfigErrorKind::PluginParam { plugin, version, .. } if unknown_here && !others.is_empty() && sweep.cases.len() > 1 => {
            let reason = format!(
                "unknown parameter; `[params]` gives it to every run, and `sweep.cases[{}]` runs plugin `{plugin}`, which has no `{key}` (plugin `{}` takes it): set it in the cases that use it, `\"{axis_text}\" = ..` in their `[[sweep.cases]]` entries",
                run.case,
                others.join("`, `"),
            );
            ConfigErrorKind::PluginParam { plugin, version, reason }
        }
        kind => kind,
    };
    ConfigError::new(file, axis_text.as_str(), kind)
}

/// What makes two configurations one training for the plugins that run them: the `[run]` table
/// with the plugin named by its library file (`pf-ppo` and `pf_ppo` resolve to one file), and
/// the `[params]` (retyped) without the keys at their declared default. Run ids still hash the
/// configuration as written, so that sweeps written before keep finding their runs; this form
/// only tells when two of them are the same training (`refuse_the_same_training_twice`, and the
/// completed runs of an earlier spelling, `stale_runs_like`).
pub(crate) fn training_key(
    run: &serde_json::Map<String, serde_json::Value>,
    params: &serde_json::Map<String, serde_json::Value>,
    desc: Option<&PluginDescription>,
) -> String {
    let mut run = run.clone();
    run.remove("seed");
    // Absent and 0 are both no experts to drover-job; the id keeps an explicit 0 as written, so
    // that sweeps which wrote it keep their runs.
    if run.get("expert_per_group").and_then(serde_json::Value::as_u64) == Some(0) {
        run.remove("expert_per_group");
    }
    let mut params = params.clone();
    if let Some(desc) = desc {
        if let Some(retyped) = retype_params(desc, &params) {
            params = retyped;
        }
        let at_default: Vec<String> = keys_at_default(desc, &params).into_iter().map(str::to_string).collect();
        params.retain(|k, _| !at_default.contains(k));
        // The resolved file, not its bytes: `pf-ppo` and `pf_ppo` find one file, while two
        // copies of a library at two paths are two plugins the user chose to name apart.
        let library = if desc.path.as_os_str().is_empty() { desc.name.replace('-', "_") } else { desc.path.display().to_string() };
        run.insert("plugin".into(), serde_json::Value::String(library));
    }
    config::canonical_json(&serde_json::json!({"run": run, "params": params}))
}

/// Refuses `DROVER_GAMMA=0.9`: a parameter of one of the sweep's plugins without its table,
/// which nothing reads (review F7). Only the plugins' descriptions tell a parameter from the
/// runtime's own variables, so `config::load` cannot judge it.
pub(crate) fn refuse_parameters_without_their_table(
    env: &[(String, String)],
    described: &BTreeMap<String, PluginDescription>,
    file: &Path,
) -> Result<(), ConfigError> {
    for (name, _) in env {
        let Some(key) = name.strip_prefix("DROVER_").map(str::to_ascii_lowercase) else { continue };
        if config::is_sweep_variable(&key) || config::RUNTIME_VARIABLES.contains(&name.as_str()) {
            continue;
        }
        if let Some(desc) = described.values().find(|d| d.params.iter().any(|p| p.name == key)) {
            let why = format!(
                "`{key}` is a parameter of plugin `{}`, in the `[params]` table: did you mean `DROVER_PARAMS__{}`?",
                desc.name,
                key.to_ascii_uppercase()
            );
            return Err(ConfigError::whole_file(file, ConfigErrorKind::UnreadVariable(why)).with_origin(format!("environment variable `{name}`")));
        }
    }
    Ok(())
}

/// Refuses a sweep two of whose configurations are one training once the plugins' declared
/// parameters are applied: `clip_coef = [1, 1.0]` (the float 1.0 twice), cases `{}` and
/// `{ "params.gamma" = 0.99 }` (ppo's default), cases naming `pf-ppo` and `pf_ppo`. Each would
/// train twice under two ids (review F2). The error names the case or axis that repeats and why.
pub(crate) fn refuse_the_same_training_twice(
    runs: &[RunSpec],
    described: &BTreeMap<String, PluginDescription>,
    file: &Path,
) -> Result<(), ConfigError> {
    // Every configuration has each seed once: its run with the first seed stands for it.
    let Some(first_seed) = runs.first().map(|r| r.seed) else { return Ok(()) };
    let mut seen: std::collections::HashMap<String, &RunSpec> = std::collections::HashMap::new();
    for run in runs.iter().filter(|r| r.seed == first_seed) {
        let desc = described.get(run.plugin());
        let key = training_key(&run.run, &run.params, desc);
        let Some(earlier) = seen.insert(key, run) else { continue };
        let why = same_training_reasons(earlier, run, described);
        let (at, other) = if earlier.case != run.case {
            (format!("sweep.cases[{}]", run.case), format!("`sweep.cases[{}]`", earlier.case))
        } else {
            let axis = run.axes.iter().find(|(k, v)| earlier.axes.get(*k) != Some(*v)).map(|(k, _)| k.clone()).unwrap_or_default();
            (format!("sweep.grid.{axis}"), format!("another value of `{axis}`"))
        };
        let kind = ConfigErrorKind::Duplicate(format!(
            "trains the same as {other} (runs `{}` and `{}`): {why}; write the configuration once",
            earlier.label, run.label
        ));
        return Err(ConfigError::new(file, at.as_str(), kind));
    }
    Ok(())
}

/// Why runs `a` and `b`, equal by `training_key`, are one training: a parameter at its plugin's
/// default in one of them, one value of a parameter's declared type, or one library.
fn same_training_reasons(a: &RunSpec, b: &RunSpec, described: &BTreeMap<String, PluginDescription>) -> String {
    let mut why = Vec::new();
    if a.plugin() != b.plugin() {
        let library = described.get(b.plugin()).map(|d| d.path.display().to_string()).unwrap_or_default();
        why.push(format!("`{}` and `{}` are one plugin library (`{library}`)", a.plugin(), b.plugin()));
    }
    let desc = described.get(b.plugin());
    let plugin = desc.map_or_else(|| b.plugin().to_string(), |d| d.name.clone());
    let keys: std::collections::BTreeSet<&String> = a.params.keys().chain(b.params.keys()).collect();
    for key in keys {
        let declared = desc.and_then(|d| d.params.iter().find(|p| &p.name == key));
        match (a.params.get(key), b.params.get(key), declared) {
            (Some(x), None, Some(p)) | (None, Some(x), Some(p)) => {
                why.push(format!("`params.{key} = {x}` is plugin `{plugin}`'s default ({})", p.default));
            }
            (Some(x), Some(y), Some(p)) if x != y => {
                why.push(format!("`{x}` and `{y}` are one value of plugin `{plugin}`'s {} parameter `{key}`", p.kind));
            }
            _ => {}
        }
    }
    if a.run.get("expert_per_group") != b.run.get("expert_per_group") {
        why.push("`run.expert_per_group = 0` is no experts, the same as leaving it out".into());
    }
    if why.is_empty() {
        why.push("the plugins read the two alike".into());
    }
    why.join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Review F2: `[params]` spellings one plugin reads alike trained twice under two ids. Ids
    /// keep hashing `[params]` as written (a results directory written before keeps its runs:
    /// `ent_coef = 0` was once retyped to `0.0`, and every such run trained again), and two
    /// configurations that are one training are refused, naming the case or axis and why.
    #[test]
    fn params_the_plugin_reads_alike_are_one_id_or_refused_as_duplicates() {
        use crate::plugin_cmd::ParamDescription;
        let param = |name: &str, kind: &str, default: serde_json::Value| ParamDescription {
            name: name.into(),
            kind: kind.into(),
            default,
            doc: String::new(),
            min: None,
            max: None,
        };
        let desc = PluginDescription {
            path: "/p/libdrover_plugin_pf_ppo.so".into(),
            name: "pf_ppo".into(),
            version: "0.1.0".into(),
            description: String::new(),
            interface_version: "1.3".into(),
            host_interface_version: "1.3".into(),
            sha256: "ab".repeat(32),
            params: vec![param("gamma", "float", 0.99.into()), param("clip_coef", "float", 0.2.into()), param("k", "int", 4.into())],
        };
        let described: BTreeMap<String, PluginDescription> = [("pf_ppo".to_string(), desc.clone()), ("pf-ppo".to_string(), desc)].into();
        let file = Path::new("s.toml");
        let head = "name = \"t\"\n[run]\nenv = \"CartPole-v1\"\nplugin = \"pf_ppo\"\n";
        let settled = |tail: &str| {
            let text = format!("{head}{tail}");
            let parsed = config::load_str(file, &text, &[], &[]).expect("loads");
            let runs = Sweep::validate(parsed, file).expect("valid").expand();
            refuse_the_same_training_twice(&runs, &described, file).map(|()| runs).map_err(|e| e.to_string())
        };
        let ids = |tail: &str| settled(tail).expect("settles").iter().map(|r| r.run_id.to_string()).collect::<Vec<_>>();
        let plain_ids = |tail: &str| {
            let parsed = config::load_str(file, &format!("{head}{tail}"), &[], &[]).expect("loads");
            Sweep::validate(parsed, file).expect("valid").expand().iter().map(|r| r.run_id.to_string()).collect::<Vec<_>>()
        };
        // Every spelling keeps the id of the expansion alone (those of existing results), a
        // number in another type than its parameter's too.
        for tail in ["[params]\nclip_coef = 0.1\nk = 5\n", "[params]\ngamma = 0.99\n", "[sweep.grid]\n\"params.clip_coef\" = [0.1, 0.3]\n", "[params]\nclip_coef = 1\nk = 5.0\n"] {
            assert_eq!(ids(tail), plain_ids(tail), "{tail}");
        }
        assert_ne!(ids("[params]\nclip_coef = 1\n"), ids("[params]\nclip_coef = 1.0\n"), "hashed as written");
        let at = "failed to load sweep file `s.toml`: key";
        let cases = [
            (
                "[sweep.grid]\n\"params.clip_coef\" = [1, 1.0]\n",
                format!("{at} `sweep.grid.params.clip_coef`: duplicate: trains the same as another value of `params.clip_coef` (runs `params.clip_coef=1` and `params.clip_coef=1.0`): `1` and `1.0` are one value of plugin `pf_ppo`'s float parameter `clip_coef`; write the configuration once"),
            ),
            (
                "[[sweep.cases]]\n[[sweep.cases]]\n\"params.gamma\" = 0.99\n",
                format!("{at} `sweep.cases[1]`: duplicate: trains the same as `sweep.cases[0]` (runs `base` and `params.gamma=0.99`): `params.gamma = 0.99` is plugin `pf_ppo`'s default (0.99); write the configuration once"),
            ),
            (
                "[[sweep.cases]]\n\"run.plugin\" = \"pf_ppo\"\n[[sweep.cases]]\n\"run.plugin\" = \"pf-ppo\"\n",
                format!("{at} `sweep.cases[1]`: duplicate: trains the same as `sweep.cases[0]` (runs `run.plugin=pf_ppo` and `run.plugin=pf-ppo`): `pf_ppo` and `pf-ppo` are one plugin library (`/p/libdrover_plugin_pf_ppo.so`); write the configuration once"),
            ),
        ];
        for (tail, expected) in cases {
            assert_eq!(settled(tail).map(|_| ()), Err(expected), "{tail}");
        }
        settled("[[sweep.cases]]\n[[sweep.cases]]\n\"params.gamma\" = 0.9\n").expect("another value is another training");
        // `expert_per_group = 0` is no experts, as absent: one training, refused (review F3).
        let seq = "name = \"t\"\n[run]\nenv = \"SeqSort-v0\"\nplugin = \"pf_ppo\"\nnum_envs = 8\nnum_steps = 3\n";
        let parsed = config::load_str(file, &format!("{seq}[[sweep.cases]]\n[[sweep.cases]]\n\"run.expert_per_group\" = 0\n"), &[], &[]).expect("loads");
        let runs = Sweep::validate(parsed, file).expect("valid").expand();
        let err = refuse_the_same_training_twice(&runs, &described, file).expect_err("one training").to_string();
        assert!(err.contains("`sweep.cases[1]`: duplicate: trains the same as `sweep.cases[0]`"), "{err}");
    }

    /// Review F7: `DROVER_GAMMA=0.9` was ignored without a word.
    #[test]
    fn a_plugin_parameter_without_its_table_is_refused() {
        let desc = PluginDescription {
            path: "/p/libdrover_plugin_ppo.so".into(),
            name: "ppo".into(),
            version: "0.1.0".into(),
            description: String::new(),
            interface_version: "1.3".into(),
            host_interface_version: "1.3".into(),
            sha256: String::new(),
            params: vec![crate::plugin_cmd::ParamDescription {
                name: "gamma".into(),
                kind: "float".into(),
                default: 0.99.into(),
                doc: String::new(),
                min: None,
                max: None,
            }],
        };
        let described: BTreeMap<String, PluginDescription> = [("ppo".to_string(), desc)].into();
        let env = |name: &str| vec![(name.to_string(), "0.9".to_string())];
        let err = refuse_parameters_without_their_table(&env("DROVER_GAMMA"), &described, Path::new("s.toml")).expect_err("unread").to_string();
        assert_eq!(err, "failed to load sweep file `s.toml`: environment variable `DROVER_GAMMA`: not read as a sweep setting: `gamma` is a parameter of plugin `ppo`, in the `[params]` table: did you mean `DROVER_PARAMS__GAMMA`?");
        for fine in ["DROVER_PARAMS__GAMMA", "DROVER_PLUGIN_PATH", "DROVER_JOB_BIN"] {
            refuse_parameters_without_their_table(&env(fine), &described, Path::new("s.toml")).expect(fine);
        }
        // Review: a plugin parameter named like a runtime variable (`simd`) made an exported
        // `DROVER_SIMD` refuse every sweep of that plugin.
        let mut with_simd = described.clone();
        if let Some(desc) = with_simd.get_mut("ppo") {
            let mut simd = desc.params[0].clone();
            simd.name = "simd".into();
            desc.params.push(simd);
        }
        refuse_parameters_without_their_table(&env("DROVER_SIMD"), &with_simd, Path::new("s.toml")).expect("the runtime's variable");
    }
}
