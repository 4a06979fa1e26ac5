//! `Plan`: a validated sweep plus the facts that need I/O (plugin files, results dir, parallelism).

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};

use crate::config::{self, PluginSearch, RunSpec, Sweep};
use crate::error::ConfigError;
use crate::error::ConfigErrorKind;
use crate::layout::{JobSpec, ResultsDir, SweepManifest, RUNS_DIR, SWEEP_JSON, SWEEP_TOML};
use crate::plugin_cmd::{
    check_plugin_params, describe_plugins, refuse_parameters_without_their_table, refuse_the_same_training_twice, PluginDescription, PluginProbe,
};

/// Inputs of `plan` gathered by the CLI (kept explicit so tests need no process-global state).
#[derive(Debug, Clone, Default)]
pub struct PlanOptions {
    /// The sweep file.
    pub sweep_file: PathBuf,
    /// `--set key=value` arguments, unparsed.
    pub sets: Vec<String>,
    /// The process environment (only `DROVER_*` matters).
    pub env: Vec<(String, String)>,
    /// `--results DIR`.
    pub results: Option<PathBuf>,
    /// `--jobs N`.
    pub jobs: Option<NonZeroUsize>,
    /// The directory of the drover binary, searched for plugins.
    pub exe_dir: Option<PathBuf>,
    /// `drover-job`, asked to describe each plugin so every run's `[params]` is checked
    /// before launch; `None` skips that check (tests of planning alone).
    pub job_bin: Option<PathBuf>,
}

/// Everything a backend needs to launch a sweep.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The validated sweep.
    pub sweep: Sweep,
    /// The sweep file's text, copied to `sweep.toml`.
    pub source_text: String,
    /// The runs, in expansion order.
    pub runs: Vec<RunSpec>,
    /// `run.plugin` value → absolute plugin path.
    pub plugins: BTreeMap<String, PathBuf>,
    /// Where results go.
    pub results: ResultsDir,
    /// Runs at once (local backend).
    pub max_parallel: NonZeroUsize,
    /// `-j N` as given on the command line: on Slurm the sweep's throttle, over `slurm.throttle`
    /// and `max_parallel` (the cores of the login node say nothing about a cluster).
    pub jobs: Option<NonZeroUsize>,
    /// The `DROVER_*` variables and `--set` arguments applied over the file, as typed
    /// (`sweep.json` records them).
    pub overrides: Vec<String>,
    /// What the plan could do but the user may not mean, one line each (`drover run` prints
    /// them as warnings).
    pub warnings: Vec<String>,
    /// Each plugin's description, by `run.plugin` as written (empty when `drover-job` was not
    /// asked): what `backend::other_runs` compares the runs of an earlier version with.
    pub described: BTreeMap<String, PluginDescription>,
}

impl Plan {
    /// The `spec.json` record of `run`.
    pub fn job_spec(&self, run: &RunSpec) -> JobSpec {
        let path = self.plugins.get(run.plugin()).map(PathBuf::as_path).unwrap_or(Path::new(run.plugin()));
        JobSpec::new(run, &self.sweep.name, path)
    }
}

/// Loads, validates and expands the sweep, resolves plugins and picks the results directory.
pub fn plan(opts: &PlanOptions) -> Result<Plan, ConfigError> {
    let file = opts.sweep_file.as_path();
    let sets = opts.sets.iter().map(|s| config::parse_set(s, file)).collect::<Result<Vec<_>, _>>()?;
    let (parsed, source_text) = config::load(file, &opts.env, &sets)?;
    // A value an override put there is named with its `--set`/variable, not blamed on the file.
    let name_override = |mut err: ConfigError| {
        if err.origin.is_none() {
            err.origin = err.key.as_deref().and_then(|key| {
                config::override_origin(key, &opts.env, &sets).or_else(|| {
                    // A case's key in conflict with a grid axis an override added is that
                    // override's doing, not the file's (review F10).
                    let axis = key.strip_prefix("sweep.cases[")?.split_once("].")?.1;
                    config::override_origin(&format!("sweep.grid.{axis}"), &opts.env, &sets)
                })
            });
        }
        err
    };
    let sweep = Sweep::validate(parsed, file).map_err(name_override)?;

    let env_plugin_path: Option<OsString> =
        opts.env.iter().find(|(k, _)| k == "DROVER_PLUGIN_PATH").map(|(_, v)| OsString::from(v)).or_else(|| {
            // `config::environment` leaves a value that is not UTF-8 out of the snapshot (only
            // settings must be text): such a path is read from the process as it is.
            std::env::var_os("DROVER_PLUGIN_PATH").filter(|v| v.to_str().is_none())
        });
    let search = PluginSearch::new(&sweep.plugin_path, env_plugin_path.as_deref(), opts.exe_dir.as_deref());
    // Each spelling of `run.plugin` is resolved from where it was written (`config::PathBases`);
    // the runs name it as written, so one spelling must mean one library.
    let mut plugins: BTreeMap<String, PathBuf> = BTreeMap::new();
    let mut warnings = Vec::new();
    let mut first_key: BTreeMap<String, String> = BTreeMap::new();
    for plugin in sweep.plugins() {
        let at_key = |mut err: ConfigError| {
            err.key = Some(plugin.key.clone());
            name_override(err)
        };
        let path = search.resolve_in(&plugin.spec, &plugin.base, file).map_err(at_key)?;
        if !plugins.contains_key(&plugin.spec) {
            warnings.extend(found_past_a_missing_folder(&plugin.spec, &plugin.key, &path, &sweep.plugin_path));
        }
        match plugins.get(&plugin.spec) {
            Some(other) if *other != path => {
                let why = format!(
                    "`{}` is `{}` here but `{}` at `{}` (a relative path in the file is relative to its folder, on the command line to the working directory): write one of them as an absolute path",
                    plugin.spec,
                    path.display(),
                    other.display(),
                    first_key.get(&plugin.spec).map_or("run.plugin", String::as_str),
                );
                return Err(at_key(ConfigError::new(file, plugin.key.as_str(), ConfigErrorKind::Conflict(why))));
            }
            Some(_) => {}
            None => {
                first_key.insert(plugin.spec.clone(), plugin.key.clone());
                plugins.insert(plugin.spec, path);
            }
        }
    }
    let runs = sweep.expand();
    let mut described = BTreeMap::new();
    if let Some(job_bin) = &opts.job_bin {
        let probe = PluginProbe::new(job_bin);
        described = describe_plugins(&probe, &plugins, file)?;
        refuse_parameters_without_their_table(&opts.env, &described, file)?;
        // Ids keep hashing `[params]` as written: retyping them (`ent_coef = 0` as `0.0`) would
        // give every results directory written before new ids, so its completed runs would
        // train again. The plugins' descriptions only judge which configurations are one training.
        refuse_the_same_training_twice(&runs, &described, file).map_err(name_override)?;
        check_plugin_params(&probe, &plugins, &described, &sweep, &runs, file).map_err(name_override)?;
    }

    let results = opts
        .results
        .clone()
        .or_else(|| sweep.results_dir.clone())
        .unwrap_or_else(|| Path::new("results").join(&sweep.name));
    // The file's `results_dir` was checked by `validate`; `--results` gets the same rules here.
    if let Some(cli) = &opts.results {
        config::check_path_text(&cli.to_string_lossy()).map_err(|why| {
            ConfigError::new(file, "results_dir", ConfigErrorKind::InvalidValue(why)).with_origin("`--results`")
        })?;
    }
    check_results_dir(&results, &sweep.name, &runs).map_err(|why| results_dir_error(opts, why))?;
    let max_parallel = opts
        .jobs
        .or(sweep.max_parallel)
        .or_else(|| std::thread::available_parallelism().ok())
        .unwrap_or(NonZeroUsize::MIN);
    let overrides = config::override_list(&opts.env, &sets);
    Ok(Plan { sweep, source_text, runs, plugins, results: ResultsDir::new(results), max_parallel, jobs: opts.jobs, overrides, warnings, described })
}

/// A results directory refused for `why`, named as the user gave it: `--results` or the sweep
/// file's `results_dir` (exit code 3 at the CLI, like the other refusals of a setting).
pub fn results_dir_error(opts: &PlanOptions, why: String) -> ConfigError {
    let err = ConfigError::new(&opts.sweep_file, "results_dir", ConfigErrorKind::InvalidValue(why));
    if opts.results.is_some() {
        err.with_origin("`--results`")
    } else {
        err
    }
}

/// Why `results`, which is not there, cannot be created when the reason is a symlink on its
/// way that leads nowhere (`results -> /scratch/...` after scratch was purged): creating it
/// would fail with a bare "File exists". `None` otherwise (a symlink loop says so itself).
fn dangling_link(results: &Path) -> Option<String> {
    let link = results.ancestors().filter(|p| !p.as_os_str().is_empty()).find(|p| std::fs::symlink_metadata(p).is_ok())?;
    if !std::fs::symlink_metadata(link).ok()?.file_type().is_symlink() || link.exists() {
        return None;
    }
    let target = std::fs::read_link(link).ok()?;
    Some(format!(
        "`{}` is a symlink to `{}`, which does not exist (purged scratch?): create the target or remove the link",
        link.display(),
        target.display()
    ))
}

/// Whether `runs` is drover's `runs/` folder: empty, or holding only run directories (16
/// lowercase hex digits). A project's own `runs/` (TensorBoard's default log folder) is not.
fn holds_drover_runs(runs: &Path) -> bool {
    std::fs::read_dir(runs).is_ok_and(|entries| {
        entries.filter_map(Result::ok).all(|e| e.file_name().to_str().is_some_and(|n| crate::config::RunId::parse(n).is_some()))
    })
}

/// A plugin named (not a path) that was found past the sweep's own `plugin_path` while one of
/// those folders does not exist: most often a project not built yet (or built in the other
/// profile), whose name another library on the search path also has, such as a plugin of
/// drover's own named like a bundled one. The sweep would train with that other library.
fn found_past_a_missing_folder(spec: &str, key: &str, found: &Path, sweep_dirs: &[PathBuf]) -> Option<String> {
    if config::is_plugin_path(spec) || sweep_dirs.is_empty() {
        return None;
    }
    let found_dir = found.parent()?;
    let in_sweep_dir = sweep_dirs.iter().any(|d| d.canonicalize().is_ok_and(|d| d == found_dir));
    let problem = sweep_dirs.iter().find_map(|d| config::search_folder_problem(d))?;
    (!in_sweep_dir).then(|| {
        format!(
            "plugin `{spec}` (key `{key}`) is `{}`, found past this sweep's `plugin_path`, whose {problem}: the runs load that other library",
            found.display(),
        )
    })
}

/// Refuses a results directory that cannot be this sweep's: a path that is not a directory, or
/// one whose `sweep.json` names another sweep that shares no run with this one (writing there
/// would replace that manifest, so `drover status`/`cancel` would lose the other sweep, and the
/// two would be analyzed as one). A shared run makes it this sweep renamed or edited, which is
/// fine: run ids do not depend on the name. An unreadable manifest is rewritten only when one of
/// this sweep's runs is there (it is this sweep's, damaged); else it may be another sweep's, whose
/// runs a rewrite would cut out of `status` and `analyze`. One of a newer drover is never
/// rewritten.
fn check_results_dir(results: &Path, name: &str, runs: &[RunSpec]) -> Result<(), String> {
    match std::fs::metadata(results) {
        Ok(meta) if !meta.is_dir() => {
            return Err(format!("`{}` exists and is not a directory", results.display()));
        }
        Ok(_) => {}
        Err(_) => return dangling_link(results).map_or(Ok(()), Err),
    }
    let manifest_path = results.join(SWEEP_JSON);
    if !manifest_path.exists() && !holds_drover_runs(&results.join(RUNS_DIR)) {
        // `drover run` writes `sweep.toml` there: in a folder of the user's own (`--results .`
        // in a project that has a `sweep.toml`) that would replace their file.
        let entries = std::fs::read_dir(results).map_err(|e| format!("cannot list `{}`: {e}", results.display()))?;
        // The lock alone is left by a `drover run` that stopped before writing the manifest.
        let foreign = entries.filter_map(Result::ok).map(|e| e.file_name()).find(|n| n != crate::lock::LOCK_FILE);
        if let Some(name) = foreign {
            let name = name.to_string_lossy();
            return Err(format!(
                "`{}` already holds files (`{name}`, ...) and no drover results (no `{SWEEP_JSON}`): drover writes `{SWEEP_TOML}`, `{SWEEP_JSON}` and `runs/` there, so give the sweep a new or empty directory",
                results.display()
            ));
        }
    }
    let manifest = match crate::layout::read_record_typed::<SweepManifest>(&manifest_path) {
        Ok(manifest) => manifest,
        Err(why @ crate::error::RecordError::Version { found, known }) if found > u64::from(known) => {
            return Err(format!(
                "`{}` was written by a newer drover ({why}): run this sweep with that drover, or give it another results directory",
                manifest_path.display()
            ));
        }
        Err(why) => {
            let runs_dir = results.join(RUNS_DIR);
            if !runs.iter().any(|r| runs_dir.join(r.run_id.as_str()).exists()) {
                return Err(format!(
                    "cannot read `{}` ({why}), which names the sweep these results belong to, and no run of `{name}` is there: give this sweep its own results directory (`--results DIR`), or move the file aside if the results are this sweep's",
                    manifest_path.display()
                ));
            }
            tracing::warn!("`{}` is unreadable ({why}); it is rewritten, as runs of this sweep are there", manifest_path.display());
            None
        }
    };
    if let Some(manifest) = manifest {
        // Asked only of another name, through a set: a rerun of a 100,000-run sweep would
        // otherwise compare every id of the manifest with every run (10^10 comparisons).
        let shares_a_run = || {
            let ids: std::collections::HashSet<&str> = manifest.runs.iter().map(String::as_str).collect();
            runs.iter().any(|r| ids.contains(r.run_id.as_str()))
        };
        if manifest.name != name && !shares_a_run() {
            return Err(format!(
                "`{}` holds the results of another sweep, `{}` (see `{}`), not of `{name}`: give this sweep its own results directory (`--results DIR`; `drover analyze` takes several)",
                results.display(),
                manifest.name,
                manifest_path.display()
            ));
        }
    }
    Ok(())
}

/// Refuses a local sweep that cannot train here, before anything is written: every run left to
/// launch has `run.device = "cuda"`, the GPUs were not named (`[local] gpus`,
/// `CUDA_VISIBLE_DEVICES`), and `count` (`drover-job devices`, asked only then) finds none.
/// Launching would fail every run, and the rewritten `sweep.json` would then list only those,
/// so the runs completed before would drop out of `drover status` and `drover analyze`.
/// A sweep some of whose runs can train (`cpu`, `auto`, nothing left to do) goes on: the
/// launch line says which would fail. The Slurm backend never asks: its nodes may have GPUs
/// that the login node lacks (`slurm::gpu_request_warning` covers a missing GPU request).
pub fn check_local_cuda(plan: &Plan, opts: &PlanOptions, count: impl FnOnce() -> Result<usize, String>) -> Result<(), ConfigError> {
    let is_cuda = |run: &RunSpec| run.run.get("device").and_then(serde_json::Value::as_str) == Some("cuda");
    let mut to_launch = plan.runs.iter().filter(|run| {
        let spec = plan.job_spec(run);
        crate::backend::planned_action(&plan.results.run_dir(&spec.run_id), &spec) != crate::backend::PlannedAction::Done
    });
    let Some(first) = to_launch.next() else { return Ok(()) };
    if !is_cuda(first) || !to_launch.all(&is_cuda) {
        return Ok(());
    }
    // Devices the user named are taken at their word, and naming none (`gpus = []`, an empty
    // `CUDA_VISIBLE_DEVICES`) means no GPU alike.
    let configured = plan.sweep.local.gpus.as_deref();
    let visible = opts.env.iter().find(|(k, _)| k == "CUDA_VISIBLE_DEVICES").map(|(_, v)| v.as_str());
    let found = crate::backend::gpus::detect(configured, visible, count);
    if !found.ids.is_empty() {
        return Ok(());
    }
    let why = match configured.is_some() || visible.is_some() {
        true => format!("{} names no device", found.source),
        false => found.source,
    };
    let kind = ConfigErrorKind::CannotRunHere(format!(
        "\"cuda\", but {why}, so every run left to launch would fail: use \"auto\" (CUDA where there is a GPU, else the CPU engine) or \"cpu\", or run the sweep where there is a GPU (`--backend slurm` does not look for one here)"
    ));
    let err = ConfigError::new(&opts.sweep_file, "run.device", kind);
    // `plan` parsed these already; they parse the same way again.
    let sets: Vec<config::SetArg> = opts.sets.iter().filter_map(|s| config::parse_set(s, &opts.sweep_file).ok()).collect();
    let origin = config::override_origin("run.device", &opts.env, &sets)
        .or_else(|| first.axes.contains_key("run.device").then(|| "a sweep axis (`sweep.grid`/`sweep.cases`)".to_string()));
    Err(match origin {
        Some(origin) => err.with_origin(origin),
        None => err,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `dir/s.toml`, a sweep named `t` whose plugin is an empty `dir/libx.so` (planning never
    /// loads it: the tests give no `job_bin`).
    fn sweep_with_plugin_file(dir: &Path) -> PathBuf {
        let so = dir.join("libx.so");
        std::fs::write(&so, b"").expect("plugin file");
        let sweep_file = dir.join("s.toml");
        std::fs::write(&sweep_file, format!("name = \"t\"\n[run]\nenv = \"CartPole-v1\"\nplugin = {:?}\n", so.display().to_string()))
            .expect("sweep");
        sweep_file
    }

    /// A plugin named like one on the search path, in a project not built yet: the sweep
    /// would train with the other library, so the plan says so.
    #[test]
    fn a_plugin_found_past_a_missing_plugin_path_folder_is_warned_about() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let shipped = tmp.path().join("shipped");
        std::fs::create_dir(&shipped).expect("dir");
        std::fs::write(shipped.join("libdrover_plugin_ppo.so"), b"").expect("plugin");
        let sweep_file = tmp.path().join("s.toml");
        std::fs::write(&sweep_file, "name = \"t\"\nplugin_path = [\"target/release\"]\n[run]\nenv = \"CartPole-v1\"\nplugin = \"ppo\"\n").expect("sweep");
        let env = vec![("DROVER_PLUGIN_PATH".to_string(), shipped.display().to_string())];
        let opts = PlanOptions { sweep_file, env, results: Some(tmp.path().join("r")), ..Default::default() };
        let unbuilt = plan(&opts).expect("plan");
        assert_eq!(unbuilt.warnings.len(), 1, "{:?}", unbuilt.warnings);
        let warning = &unbuilt.warnings[0];
        assert!(warning.contains("plugin `ppo` (key `run.plugin`) is `") && warning.contains("shipped/libdrover_plugin_ppo.so`"), "{warning}");
        assert!(warning.contains(&format!("whose folder `{}` does not exist", tmp.path().join("target/release").display())), "{warning}");

        let built = tmp.path().join("target/release");
        std::fs::create_dir_all(&built).expect("dir");
        std::fs::write(built.join("libdrover_plugin_ppo.so"), b"").expect("plugin");
        let planned = plan(&opts).expect("plan");
        assert!(planned.warnings.is_empty(), "built: found in the sweep's own folder: {:?}", planned.warnings);
        assert_eq!(planned.plugins["ppo"], built.join("libdrover_plugin_ppo.so").canonicalize().expect("abs"));
    }

    /// Review finding (research): `--set run.device=cuda` on a machine without a GPU launched
    /// every run to fail, and the rewritten manifest hid the runs completed before. The local
    /// backend now refuses such a sweep up front, naming the key, its origin and the reason.
    #[test]
    fn cuda_runs_on_a_machine_without_cuda_are_refused_before_launch() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let sweep_file = sweep_with_plugin_file(tmp.path());
        let base = std::fs::read_to_string(&sweep_file).expect("sweep");
        let check = |extra: &str, env: &[(&str, &str)], sets: &[&str], devices: Result<usize, String>| {
            std::fs::write(&sweep_file, format!("{base}{extra}")).expect("sweep");
            let opts = PlanOptions {
                sweep_file: sweep_file.clone(),
                env: env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
                sets: sets.iter().map(|s| s.to_string()).collect(),
                results: Some(tmp.path().join("r")),
                ..Default::default()
            };
            let planned = plan(&opts).expect("plan");
            check_local_cuda(&planned, &opts, || devices).map_err(|e| e.to_string())
        };
        let none = || Err::<usize, String>("libcuda was not found".into());
        let err = check("device = \"cuda\"\n", &[], &[], none()).expect_err("no GPU");
        assert!(
            err.contains("key `run.device`: cannot run on this machine: \"cuda\", but no CUDA device: libcuda was not found, so every run left to launch would fail"),
            "{err}"
        );
        let err = check("device = \"cpu\"\n", &[], &["run.device=cuda"], none()).expect_err("no GPU");
        assert!(err.contains("key `run.device` (from `--set run.device=cuda`): cannot run on this machine"), "{err}");
        let err = check("", &[("DROVER_RUN__DEVICE", "cuda")], &[], none()).expect_err("no GPU");
        assert!(err.contains("key `run.device` (from environment variable `DROVER_RUN__DEVICE`)"), "{err}");
        let err = check("[sweep.grid]\n\"run.device\" = [\"cuda\"]\n", &[], &[], none()).expect_err("no GPU");
        assert!(err.contains("key `run.device` (from a sweep axis"), "{err}");
        let err = check("device = \"cuda\"\n", &[("CUDA_VISIBLE_DEVICES", "")], &[], Ok(4)).expect_err("none visible");
        assert!(err.contains("but CUDA_VISIBLE_DEVICES= names no device"), "{err}");

        assert_eq!(check("device = \"cuda\"\n", &[], &[], Ok(1)), Ok(()), "a GPU here");
        assert_eq!(check("device = \"auto\"\n", &[], &[], none()), Ok(()), "auto falls back to the CPU");
        assert_eq!(check("[sweep.grid]\n\"run.device\" = [\"cuda\", \"cpu\"]\n", &[], &[], none()), Ok(()), "the cpu runs can train");
        let named = check("device = \"cuda\"\n", &[("CUDA_VISIBLE_DEVICES", "0")], &[], Err("not asked".into()));
        assert_eq!(named, Ok(()), "devices the user named are not second-guessed");
        assert_eq!(check("device = \"cuda\"\n[local]\ngpus = [0]\n", &[], &[], Ok(0)), Ok(()));
        let err = check("device = \"cuda\"\n[local]\ngpus = []\n", &[], &[], Ok(4)).expect_err("none named");
        assert!(err.starts_with("sweep file `") && err.contains("but [local] gpus names no device"), "the file loaded fine: {err}");
        assert!(!tmp.path().join("r").exists(), "nothing written");
    }



    /// A value refused after loading (a count, an empty axis, a `[local]` setting) that came
    /// from `--set` or `DROVER_*` names that override; the file's own values are not blamed on one.
    #[test]
    fn values_refused_after_loading_name_the_override_that_set_them() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let sweep_file = sweep_with_plugin_file(tmp.path());
        let with = |env: &[(&str, &str)], sets: &[&str]| {
            let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
            let sets = sets.iter().map(|s| s.to_string()).collect();
            plan(&PlanOptions { sweep_file: sweep_file.clone(), env, sets, ..Default::default() }).expect_err("refused").to_string()
        };
        // (env vars, `--set` arguments, the expected part of the message)
        type Case<'a> = (&'a [(&'a str, &'a str)], &'a [&'a str], &'a str);
        let cases: [Case<'_>; 5] = [
            (&[], &["run.num_envs=0"], "key `run.num_envs` (from `--set run.num_envs=0`): invalid value"),
            (&[("DROVER_RUN__NUM_ENVS", "0")], &[], "key `run.num_envs` (from environment variable `DROVER_RUN__NUM_ENVS`): invalid value"),
            (&[], &["sweep.seeds=[]"], "key `sweep.seeds` (from `--set sweep.seeds=[]`): axis is empty"),
            (&[], &["local.gpus=[0,0]"], "key `local.gpus[1]` (from `--set local.gpus=[0,0]`): invalid value: device 0 is listed twice"),
            // The later `--set` wins over the variable, so it is the one at fault.
            (&[("DROVER_RUN__NUM_ENVS", "4")], &["run.num_envs=0"], "key `run.num_envs` (from `--set run.num_envs=0`)"),
        ];
        for (env, sets, expected) in cases {
            let err = with(env, sets);
            assert!(err.contains(expected), "{sets:?} {env:?}: {err}");
        }
        // Another key overridden does not take the blame for the file's own bad value.
        std::fs::write(&sweep_file, std::fs::read_to_string(&sweep_file).expect("sweep") + "num_envs = 0\n").expect("sweep");
        let err = with(&[("DROVER_RUN__LR", "0.1")], &["run.num_steps=8"]);
        assert!(err.contains("key `run.num_envs`: invalid value"), "{err}");
    }

    /// A sweep file elsewhere than the working directory (this test binary's is the crate's):
    /// its relative `plugin_path` and `run.plugin` are found from its folder, a relative
    /// `--set run.plugin` from the working directory, and a missing plugin's error names the
    /// absolute path tried.
    #[test]
    fn relative_plugin_paths_resolve_from_where_they_were_written() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let exp = tmp.path().join("exp");
        std::fs::create_dir_all(tmp.path().join("plugins/build")).expect("dirs");
        std::fs::create_dir_all(exp.join("lib")).expect("dirs");
        std::fs::write(tmp.path().join("plugins/build/libdrover_plugin_named.so"), b"").expect("plugin");
        std::fs::write(exp.join("lib/libmine.so"), b"").expect("plugin");
        let sweep_file = exp.join("sweep.toml");
        let text = "name = \"t\"\nplugin_path = [\"../plugins/build\"]\n[run]\nenv = \"CartPole-v1\"\nplugin = \"./lib/libmine.so\"\n[sweep.grid]\n\"run.plugin\" = [\"named\", \"./lib/libmine.so\"]\n";
        std::fs::write(&sweep_file, text).expect("sweep");
        let with = |sets: &[&str]| {
            plan(&PlanOptions { sweep_file: sweep_file.clone(), sets: sets.iter().map(|s| s.to_string()).collect(), ..Default::default() })
        };
        let planned = with(&[]).expect("found from the sweep file's folder");
        let canon = |p: PathBuf| p.canonicalize().expect("exists");
        assert_eq!(planned.plugins["./lib/libmine.so"], canon(exp.join("lib/libmine.so")));
        assert_eq!(planned.plugins["named"], canon(tmp.path().join("plugins/build/libdrover_plugin_named.so")));
        // The spec records the resolved path; the run keeps the plugin as written (its id hashes that).
        let mine = planned.runs.iter().find(|r| r.plugin() == "./lib/libmine.so").expect("a run of it");
        assert_eq!(planned.job_spec(mine).plugin_path, canon(exp.join("lib/libmine.so")));

        let cwd = std::env::current_dir().expect("cwd");
        let err = with(&["run.plugin=./lib/libmine.so"]).expect_err("not in the working directory").to_string();
        let expected = format!(
            "key `run.plugin` (from `--set run.plugin=./lib/libmine.so`): plugin `./lib/libmine.so` not found; searched `{}`",
            cwd.join("lib/libmine.so").display()
        );
        assert!(err.contains(&expected), "{err}");
        std::fs::write(&sweep_file, text.replace("./lib/libmine.so\"\n[sweep", "./lib/missing.so\"\n[sweep")).expect("sweep");
        let err = with(&[]).expect_err("missing").to_string();
        assert!(err.contains(&format!("key `run.plugin`: plugin `./lib/missing.so` not found; searched `{}`", exp.join("lib/missing.so").display())), "{err}");
        std::fs::write(&sweep_file, text.replace("\"named\",", "\"nameless\",")).expect("sweep");
        let err = with(&[]).expect_err("missing").to_string();
        assert!(err.contains("key `sweep.grid.run.plugin`: plugin `nameless` not found; searched"), "{err}");
        // The folder as meant, `..` taken away on the text (the temp folder may be a symlink).
        assert!(err.contains(&tmp.path().join("plugins/build/libdrover_plugin_nameless.so").display().to_string()), "{err}");
        assert!(!err.contains("/../"), "{err}");
    }

    /// One relative spelling that the file and an override both use, naming two files (one from
    /// the file's folder, one from the working directory), is refused: the runs name the plugin
    /// as written, so it must be one library.
    #[test]
    fn one_plugin_spelling_meaning_two_files_is_refused() {
        // `k` times `..` from the working directory reaches `/`; from a folder `k` levels below
        // `here` it reaches `here`. So `<k ..>/<there>/x.so` is two files, both made here.
        let cwd = std::env::current_dir().expect("cwd");
        let k = cwd.components().count() - 1;
        let here = tempfile::tempdir().expect("tempdir");
        let there = tempfile::tempdir().expect("tempdir");
        let exp = (0..k).fold(here.path().to_path_buf(), |dir, i| dir.join(format!("d{i}")));
        let tail = there.path().strip_prefix("/").expect("absolute").join("x.so");
        for file in [there.path().join("x.so"), here.path().join(&tail)] {
            std::fs::create_dir_all(file.parent().expect("parent")).expect("dirs");
            std::fs::write(&file, b"").expect("plugin");
        }
        let spec = format!("{}{}", "../".repeat(k), tail.display());
        std::fs::create_dir_all(&exp).expect("dirs");
        let sweep_file = exp.join("s.toml");
        std::fs::write(&sweep_file, format!("name = \"t\"\n[run]\nenv = \"CartPole-v1\"\nplugin = \"ppo\"\n[sweep.grid]\n\"run.plugin\" = [{spec:?}]\n"))
            .expect("sweep");
        let with = |sets: Vec<String>| plan(&PlanOptions { sweep_file: sweep_file.clone(), sets, ..Default::default() });
        let alone = with(vec!["run.plugin=./s.toml".into()]).expect_err("s.toml is no plugin, but found").to_string();
        assert!(alone.contains("plugin `./s.toml` not found"), "the base run.plugin from --set is cwd-relative: {alone}");
        let err = with(vec![format!("run.plugin={spec}")]).expect_err("two files").to_string();
        let expected = format!(
            "key `sweep.grid.run.plugin`: conflict: `{spec}` is `{}` here but `{}` at `run.plugin`",
            here.path().join(&tail).canonicalize().expect("exists").display(),
            there.path().join("x.so").canonicalize().expect("exists").display()
        );
        assert!(err.contains(&expected), "{err}\n{expected}");
        assert!(with(vec![]).is_err(), "the base plugin `ppo` is not found: the grid value alone resolves");
    }

    /// Issue 12, item 6: `--results` obeys the rules of the file's `results_dir`.
    #[test]
    fn results_given_on_the_command_line_are_checked_like_results_dir() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let sweep_file = sweep_with_plugin_file(tmp.path());
        let with = |results: &str| plan(&PlanOptions { sweep_file: sweep_file.clone(), results: Some(results.into()), ..Default::default() });
        let ok = with("r dir/it's fine").expect("spaces and quotes are fine in a path");
        assert_eq!(ok.results.root(), Path::new("r dir/it's fine"));
        let cases = [
            ("r\nx", "key `results_dir` (from `--results`): invalid value: `r\\nx` contains the control character '\\n'"),
            (&format!("/tmp/{}", "n".repeat(256)), "key `results_dir` (from `--results`): invalid value: a path component is 256 bytes long"),
        ];
        for (results, expected) in cases {
            let err = with(results).expect_err("refused").to_string();
            assert!(err.contains(expected), "{err}");
        }
    }

    /// Review finding 9: a results path that is (or lies under) a symlink to nothing, as after
    /// a scratch purge, said only "File exists"; it names the link and its target.
    #[test]
    fn a_results_path_through_a_dangling_symlink_names_the_link_and_its_target() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let sweep_file = sweep_with_plugin_file(tmp.path());
        let with = |results: &Path| plan(&PlanOptions { sweep_file: sweep_file.clone(), results: Some(results.into()), ..Default::default() });
        let gone = tmp.path().join("purged");
        let link = tmp.path().join("dangling");
        std::os::unix::fs::symlink(&gone, &link).expect("symlink");
        for results in [link.clone(), link.join("sweep1")] {
            let err = with(&results).expect_err("refused").to_string();
            let says = format!("key `results_dir` (from `--results`): invalid value: `{}` is a symlink to `{}`, which does not exist", link.display(), gone.display());
            assert!(err.contains(&says), "{err}");
        }
        std::fs::create_dir(&gone).expect("the target again");
        assert!(with(&link).is_ok(), "a link to a folder is fine");
    }

    /// A results directory that is a file, or another sweep's, is refused before anything is
    /// written; this sweep's own directory (a rerun) is accepted.
    #[test]
    fn results_of_another_sweep_or_a_file_are_refused_untouched() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let sweep_file = sweep_with_plugin_file(tmp.path());
        let with = |results: &Path| plan(&PlanOptions { sweep_file: sweep_file.clone(), results: Some(results.into()), ..Default::default() });

        let file = tmp.path().join("afile");
        std::fs::write(&file, b"keep").expect("file");
        let err = with(&file).expect_err("a file is no results directory").to_string();
        assert!(err.contains(&format!("key `results_dir` (from `--results`): invalid value: `{}` exists and is not a directory", file.display())), "{err}");

        let other = tmp.path().join("other");
        std::fs::create_dir(&other).expect("dir");
        let manifest = r#"{"format_version": 1, "name": "u", "source": "u.toml", "runs": [], "created_at": "0"}"#;
        std::fs::write(other.join(SWEEP_JSON), manifest).expect("manifest");
        let err = with(&other).expect_err("another sweep's results").to_string();
        assert!(err.contains("s.toml"), "names the sweep file: {err}");
        assert!(err.contains("holds the results of another sweep, `u`"), "{err}");
        assert_eq!(std::fs::read_to_string(other.join(SWEEP_JSON)).expect("manifest"), manifest, "left untouched");

        let own = tmp.path().join("own");
        std::fs::create_dir(&own).expect("dir");
        std::fs::write(own.join(SWEEP_JSON), manifest.replace("\"u\"", "\"t\"")).expect("manifest");
        assert_eq!(with(&own).expect("its own results directory").results.root(), own.as_path());
        let fresh = with(&tmp.path().join("new")).expect("a directory that does not exist yet is fine");
        let renamed = tmp.path().join("renamed");
        std::fs::create_dir(&renamed).expect("dir");
        let ids = format!("[{:?}]", fresh.runs[0].run_id.as_str());
        std::fs::write(renamed.join(SWEEP_JSON), manifest.replace("[]", &ids)).expect("manifest");
        assert!(with(&renamed).is_ok(), "this sweep under its old name (a run in common) is accepted");

        // Failure-injection review D7: a damaged or newer manifest turned this check off, and
        // another sweep took the directory over, cutting the first one's runs out.
        let damaged = tmp.path().join("damaged");
        std::fs::create_dir(&damaged).expect("dir");
        let garbled = r#"{"format_version":1,"name":"u","sour"#;
        std::fs::write(damaged.join(SWEEP_JSON), garbled).expect("manifest");
        let err = with(&damaged).expect_err("whose results these are is unknown").to_string();
        assert!(err.contains(&format!("cannot read `{}` (", damaged.join(SWEEP_JSON).display())), "{err}");
        assert!(err.contains("and no run of `t` is there"), "{err}");
        assert_eq!(std::fs::read_to_string(damaged.join(SWEEP_JSON)).expect("manifest"), garbled, "left untouched");
        std::fs::create_dir_all(damaged.join(RUNS_DIR).join(fresh.runs[0].run_id.as_str())).expect("run dir");
        assert!(with(&damaged).is_ok(), "a run of this sweep is there: its own damaged manifest, rewritten");
        std::fs::write(damaged.join(SWEEP_JSON), manifest.replace("\"format_version\": 1", "\"format_version\": 9")).expect("manifest");
        let err = with(&damaged).expect_err("never downgraded").to_string();
        assert!(err.contains("was written by a newer drover (unknown format_version 9"), "{err}");

        // A folder of the user's own: drover would write its `sweep.toml` over theirs.
        let project = tmp.path().join("project");
        std::fs::create_dir(&project).expect("dir");
        std::fs::write(project.join(SWEEP_TOML), "# mine").expect("file");
        let err = with(&project).expect_err("a folder with files and no results").to_string();
        assert!(err.contains("already holds files (`sweep.toml`, ...) and no drover results (no `sweep.json`)"), "{err}");
        assert_eq!(std::fs::read_to_string(project.join(SWEEP_TOML)).expect("file"), "# mine", "left untouched");
        let empty = tmp.path().join("empty");
        std::fs::create_dir(&empty).expect("dir");
        assert!(with(&empty).is_ok(), "an empty folder is fine");
        std::fs::write(empty.join(crate::lock::LOCK_FILE), "").expect("lock");
        assert!(with(&empty).is_ok(), "the lock left by a run that wrote nothing else is drover's own");
        let started = tmp.path().join("started");
        std::fs::create_dir_all(started.join(RUNS_DIR)).expect("dir");
        std::fs::write(started.join(SWEEP_TOML), "# drover's copy").expect("file");
        assert!(with(&started).is_ok(), "runs/ without a manifest: drover's, stopped before the manifest");
        std::fs::create_dir_all(started.join(RUNS_DIR).join("0123456789abcdef")).expect("dir");
        assert!(with(&started).is_ok(), "runs/ of run directories");
        let tensorboard = tmp.path().join("tensorboard");
        std::fs::create_dir_all(tensorboard.join(RUNS_DIR).join("Nov29_06-40-12_host")).expect("dir");
        std::fs::write(tensorboard.join(SWEEP_TOML), "# mine").expect("file");
        let err = with(&tensorboard).expect_err("a project's own runs/ is not drover's").to_string();
        assert!(err.contains("already holds files"), "{err}");
    }
}
