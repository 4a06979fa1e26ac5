//! Issue 10 (third-party plugin authors) end to end: `drover plugin new` → `cargo build` and
//! `cargo test` of the new project outside the repository → `drover plugin list|check` →
//! `drover run` on CartPole; and the clear errors of the plugin boundary (incompatible
//! interface, panics, NaN, rejected parameters) through the real binaries.

use std::path::{Path, PathBuf};
use std::process::Command;

use drover_tests::{artifact, drover, read_json, run_dirs, run_ok, write_sweep};

fn stderr_of(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A target directory under the system temp dir, shared by every run of this test, so only
/// the first build of a generated plugin compiles its dependencies.
fn shared_plugin_target() -> PathBuf {
    std::env::temp_dir().join("drover-plugin-sdk-target")
}

fn cargo(project: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.args(args)
        .current_dir(project)
        .env("CARGO_TARGET_DIR", shared_plugin_target())
        // As in the workspace's own profile: no debuginfo for dependencies, to spare CI's disk.
        .env("CARGO_PROFILE_DEV_DEBUG", "false")
        // The project is standalone: nothing of this workspace's build may leak in.
        .env_remove("CARGO_MANIFEST_DIR")
        .env_remove("CARGO_PRIMARY_PACKAGE")
        .env_remove("RUSTC_WRAPPER");
    cmd
}

/// The bar of issue 10: a new author's whole path, in a temporary directory outside the repo.
#[test]
fn a_new_plugin_builds_passes_its_tests_and_trains_cartpole() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let project = tmp.path().join("sdk_reinforce");
    let out = run_ok(drover().args(["plugin", "new", "sdk_reinforce", "--dir"]).arg(&project));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("created plugin `sdk_reinforce`"), "{said}");
    let manifest = std::fs::read_to_string(project.join("Cargo.toml")).expect("Cargo.toml");
    let api = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("repo").join("plugins/api");
    let api = api.canonicalize().expect("plugins/api");
    assert!(
        manifest.contains(&format!("drover-plugin-api = {{ path = \"{}\" }}", api.display())),
        "a drover that knows its source tree depends on it by path:\n{manifest}"
    );
    for file in ["src/lib.rs", "src/tests.rs", "README.md", "sweep.toml", "Cargo.lock"] {
        assert!(project.join(file).is_file(), "{file} missing");
    }

    run_ok(&mut cargo(&project, &["build"]));
    // Review finding 7: under `panic = "abort"` the panics the export catches would kill the
    // job, so the export macro refuses to compile (`cargo test` always unwinds).
    let out = cargo(&project, &["check", "--config", "profile.dev.panic=\"abort\""]).output().expect("spawn cargo");
    let err = stderr_of(&out);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("drover plugins must be built with `panic = \"unwind\"` (the default)"), "{err}");
    let out = run_ok(&mut cargo(&project, &["test"]));
    let tests = String::from_utf8_lossy(&out.stdout);
    assert!(tests.contains("passes_drovers_plugin_harness ... ok"), "{tests}");
    assert!(tests.contains("returns_by_hand ... ok"), "{tests}");
    // The template's interface-1.3 examples: rollout-index lookup and checkpointed state.
    assert!(tests.contains("per_sequence_records_follow_the_rollout_index ... ok"), "{tests}");
    assert!(tests.contains("return_scale_is_checkpointed_plugin_state ... ok"), "{tests}");

    let lib_dir = shared_plugin_target().join("debug");
    let so = lib_dir.join("libdrover_plugin_sdk_reinforce.so");
    assert!(so.is_file(), "{} not built", so.display());

    let out = run_ok(drover().args(["plugin", "list", "--plugin-path"]).arg(&lib_dir));
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(listing.contains("sdk_reinforce 0.1.0  (interface 1.3)"), "{listing}");
    assert!(listing.contains(&format!("path    {}", so.canonicalize().expect("so").display())), "{listing}");
    assert!(listing.contains("gamma") && listing.contains("default 0.99") && listing.contains("[0, 1]"), "{listing}");
    assert!(listing.contains("Discount factor"), "{listing}");
    let out = run_ok(drover().args(["plugin", "list", "--json", "--plugin-path"]).arg(&lib_dir));
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).expect("list --json");
    // Beside the plugins, what the text listing also says (drover's own fixtures, found beside
    // the binary, are named unlike their plugins: warnings).
    assert!(listed["refused"].is_array() && listed["warnings"].is_array(), "{listed}");
    let mine = listed["plugins"]
        .as_array()
        .expect("array")
        .iter()
        .find(|p| p["name"] == "sdk_reinforce")
        .expect("listed")
        .clone();
    assert_eq!(mine["sha256"].as_str().map(str::len), Some(64), "{mine}");
    assert_eq!(mine["params"].as_array().map(Vec::len), Some(6), "{mine}");

    let out = run_ok(drover().args(["plugin", "check", "sdk_reinforce", "--plugin-path"]).arg(&lib_dir));
    let checked = String::from_utf8_lossy(&out.stdout);
    assert!(checked.contains("passed: 14 checks, 0 failed"), "{checked}");
    assert!(checked.contains("ok   loss_derivatives"), "{checked}");
    // Through the ABI too, with the 1.3 examples switched on: the state table is exported and
    // round-trips, and the loss looks its per-sequence records up by rollout index.
    let both = r#"{"cut_sequence_weight": 0.25, "return_scale_decay": 0.9}"#;
    let out = run_ok(drover().args(["plugin", "check", "--params", both]).arg(&so));
    let checked = String::from_utf8_lossy(&out.stdout);
    assert!(checked.contains("passed: 14 checks, 0 failed"), "{checked}");
    assert!(checked.contains("ok   loss_sequence_numbering"), "{checked}");
    assert!(checked.contains("ok   state_round_trip") && !checked.contains("no `drover.plugin_state` table"), "{checked}");
    // Parameters the plugin would refuse are a clear error naming the key, not failed checks.
    let out = drover().args(["plugin", "check", "--params", r#"{"gamma": 5}"#]).arg(&so).output().expect("spawn");
    assert!(!out.status.success());
    let err = stderr_of(&out);
    assert!(
        err.contains("invalid `--params`: key `gamma`: rejected by plugin `sdk_reinforce` 0.1.0: must be at most 1, got 5"),
        "{err}"
    );

    let sweep = write_sweep(
        tmp.path(),
        &format!(
            "name = \"sdk\"\nplugin_path = [{:?}]\n[run]\nenv = \"CartPole-v1\"\nplugin = \"sdk_reinforce\"\n\
             num_envs = 4\nnum_steps = 64\ntotal_steps = 1024\nupdate_epochs = 1\nnum_minibatches = 2\n\
             [params]\ngamma = 0.95\ncut_sequence_weight = 0.5\nreturn_scale_decay = 0.9\nnorm_adv = false\n[sweep]\nseeds = [1]\n",
            lib_dir.display().to_string()
        ),
    );
    let results = tmp.path().join("results");
    run_ok(drover().arg("run").arg(&sweep).arg("--results").arg(&results));
    let runs = run_dirs(&results);
    assert_eq!(runs.len(), 1);
    assert_eq!(read_json(&runs[0].join("exit.json"))["status"], "completed");
    let summary = read_json(&runs[0].join("summary.json"));
    assert_eq!(summary["iterations"], 4, "1024 steps / (4 envs x 64 steps)");
    assert_eq!(summary["plugin"]["name"], "sdk_reinforce");
    assert_eq!(summary["plugin"]["version"], "0.1.0");
    assert_eq!(summary["plugin"]["interface_version"], "1.3");
    assert_eq!(summary["plugin"]["sha256"], mine["sha256"], "provenance matches `plugin list`");
}

#[test]
fn parameters_are_checked_against_the_plugin_before_anything_starts() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let results = tmp.path().join("results");
    let base = "name = \"bad-params\"\n[run]\nenv = \"CartPole-v1\"\nplugin = \"ppo\"\ntotal_steps = 1024\n";
    let cases = [
        ("[params]\ngama = 0.9\n", "key `params.gama`: rejected by plugin `ppo` 0.1.0: unknown parameter (known: gamma,"),
        // A typo gets the key it was probably meant to be.
        ("[params]\nvf_coeff = 0.3\n", "key `params.vf_coeff`: rejected by plugin `ppo` 0.1.0: unknown parameter (known: gamma,"),
        ("[params]\nvf_coeff = 0.3\n", "); did you mean `vf_coef`?"),
        ("[params]\ngamma = \"high\"\n", "key `params.gamma`: rejected by plugin `ppo` 0.1.0: expected float, got \"high\""),
        (
            "[sweep.grid]\n\"params.clip_coef\" = [0.1, -1.0]\n",
            // The grid axis that brought the value (review F10), and the plugin's words with it.
            "key `sweep.grid.params.clip_coef`: rejected by plugin `ppo` 0.1.0: must be at least 0, got -1",
        ),
    ];
    for (params, expected) in cases {
        let sweep = write_sweep(tmp.path(), &format!("{base}{params}"));
        let out = drover().arg("run").arg(&sweep).arg("--results").arg(&results).output().expect("spawn");
        let err = stderr_of(&out);
        assert_eq!(out.status.code(), Some(3), "config errors exit with CONFIG_INVALID:\n{err}");
        assert!(err.contains(&format!("failed to load sweep file `{}`", sweep.display())), "{err}");
        assert!(err.contains(expected), "expected `{expected}` in:\n{err}");
        assert!(!results.exists(), "nothing may be written before the parameters are valid");
    }
}

/// What only the plugin's constructor knows (a mode name outside its description's kinds and
/// bounds, any refusal in `new`) is also found before launch: left to the jobs, every run would
/// fail at its start, on Slurm after its wait in the queue. `plugin check --params` says the same.
#[test]
fn values_the_plugin_constructor_refuses_are_found_before_anything_starts() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let results = tmp.path().join("results");
    let grpo = "name = \"bad-mode\"\n[run]\nenv = \"SeqAdd-v0\"\nplugin = \"grpo\"\nvocab = 5\nprompt_len = 4\n\
                num_steps = 3\ngroup_size = 8\nnum_envs = 64\ntotal_steps = 1920\n";
    let faulty = format!(
        "name = \"bad-new\"\n[run]\nenv = \"CartPole-v1\"\nplugin = \"{}\"\ntotal_steps = 1024\n",
        artifact("libdrover_test_plugin_faulty.so").display()
    );
    let modes = "(expected one of: token-mean, seq-mean-token-mean, seq-mean-token-sum, seq-mean-token-sum-norm)";
    let cases = [
        (
            format!("{grpo}[params]\nloss_agg_mode = \"tokenmean\"\n"),
            format!("key `params.loss_agg_mode`: rejected by plugin `grpo` 0.1.0: unknown aggregation mode `tokenmean` {modes}"),
        ),
        (
            format!("{grpo}[sweep.grid]\n\"params.loss_agg_mode\" = [\"token-mean\", \"seq-mean\"]\n"),
            format!(
                "key `sweep.grid.params.loss_agg_mode`: rejected by plugin `grpo` 0.1.0: unknown aggregation mode `seq-mean` {modes}"
            ),
        ),
        (
            format!("{faulty}[params]\nfail = \"error_in_new\"\n"),
            "key `params` (from the params of run `base`): rejected by plugin `faulty` 0.1.0: asked to fail in `new`".to_string(),
        ),
    ];
    for (text, expected) in &cases {
        let sweep = write_sweep(tmp.path(), text);
        let out = drover().arg("run").arg(&sweep).arg("--results").arg(&results).output().expect("spawn");
        let err = stderr_of(&out);
        assert_eq!(out.status.code(), Some(3), "config errors exit with CONFIG_INVALID:\n{err}");
        assert!(err.contains(expected.as_str()), "expected `{expected}` in:\n{err}");
        assert!(!err.contains("invalid params"), "the plugin's kind is not repeated:\n{err}");
        assert!(!results.exists(), "nothing may be written before the parameters are valid");
    }
    let out = drover().args(["plugin", "check", "grpo", "--params", r#"{"loss_agg_mode": "tokenmean"}"#]).output().expect("spawn");
    let err = stderr_of(&out);
    assert_ne!(out.status.code(), Some(0), "{err}");
    assert!(
        err.contains(&format!("invalid `--params`: key `loss_agg_mode`: rejected by plugin `grpo` 0.1.0: unknown aggregation mode `tokenmean` {modes}")),
        "{err}"
    );
}

#[test]
fn a_panicking_or_nan_plugin_fails_its_run_naming_plugin_call_and_reason_and_the_others_finish() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let plugin = artifact("libdrover_test_plugin_faulty.so");
    let sweep = write_sweep(
        tmp.path(),
        &format!(
            "name = \"faulty\"\n[run]\nenv = \"CartPole-v1\"\nplugin = \"{}\"\nnum_envs = 4\nnum_steps = 32\n\
             total_steps = 256\nnum_minibatches = 2\nupdate_epochs = 1\n[sweep.grid]\n\
             \"params.fail\" = [\"none\", \"panic_in_loss\", \"nan_in_loss\", \"host_metric_in_loss\"]\n",
            plugin.display()
        ),
    );
    let results = tmp.path().join("results");
    let out = drover().arg("run").arg(&sweep).arg("--results").arg(&results).args(["-j", "1"]).output().expect("spawn");
    assert_eq!(out.status.code(), Some(4), "RUNS_FAILED:\n{}", stderr_of(&out));
    let mut reasons = std::collections::BTreeMap::new();
    for run in run_dirs(&results) {
        let spec = read_json(&run.join("spec.json"));
        let exit = read_json(&run.join("exit.json"));
        let mode = spec["params"]["fail"].as_str().expect("fail").to_string();
        reasons.insert(mode, (exit["status"].as_str().unwrap_or("").to_string(), exit["reason"].as_str().unwrap_or("").to_string()));
    }
    assert_eq!(reasons["none"].0, "completed", "the healthy run finishes: {reasons:?}");
    assert!(results.join("runs").read_dir().expect("runs").count() == 4);
    assert_eq!(reasons["panic_in_loss"].0, "failed");
    assert!(
        reasons["panic_in_loss"].1.contains("plugin `faulty` 0.1.0: call `loss`: panic: faulty plugin: deliberate panic in loss"),
        "{reasons:?}"
    );
    // A payload says what; the author also needs the line that panicked.
    assert!(reasons["panic_in_loss"].1.contains("deliberate panic in loss (at tests/plugins/faulty/src/lib.rs:"), "{reasons:?}");
    assert_eq!(reasons["nan_in_loss"].0, "failed");
    assert!(
        reasons["nan_in_loss"].1.contains("plugin `faulty` 0.1.0: call `loss`: output `loss` is not finite at index 1 (value NaN)"),
        "{reasons:?}"
    );
    // Review finding 1: a metric named like a host column used to complete with a duplicate
    // `lr` column that analyze could not read.
    assert_eq!(reasons["host_metric_in_loss"].0, "failed");
    assert!(
        reasons["host_metric_in_loss"].1.contains(
            "plugin `faulty` 0.1.0: call `loss`: metric `lr` has the name of a column the host writes itself; \
             rename it (reserved: iteration, global_step,"
        ),
        "{reasons:?}"
    );
    let err = stderr_of(&out);
    assert!(err.contains("1 completed") && err.contains("3 failed"), "{err}");
}

/// Review finding 7: an aborting plugin was reported as a damaged file "while loading the library".
#[test]
fn a_plugin_that_aborts_is_reported_as_a_likely_panic_abort_build() {
    let faulty = artifact("libdrover_test_plugin_faulty.so");
    let out = drover().args(["plugin", "check", "--params", r#"{"fail": "abort_in_new"}"#]).arg(&faulty).output().expect("spawn");
    let err = stderr_of(&out);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains(
            "drover-job killed by signal 6 (SIGABRT): the job aborted while loading the library or creating an \
             instance from the params (a panic in a plugin built with `panic = \"abort\"`?"
        ),
        "{err}"
    );
    assert!(err.contains("faulty plugin: aborting in `new`") && !err.contains("damaged"), "{err}");
}

/// Review finding 5: a crate that builds on a bundled plugin (reusing `Ppo`, `gae`,
/// `ppo_loss`) and exports its own failed to link ("duplicate symbol:
/// drover_plugin_interface_version"); with `default-features = false` it builds, and its
/// library is its own plugin.
#[test]
fn a_crate_building_on_the_bundled_ppo_exports_its_own_plugin() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let project = tmp.path().join("ppo_bn");
    std::fs::create_dir_all(project.join("src")).expect("src");
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("repo").canonicalize().expect("repo");
    std::fs::write(
        project.join("Cargo.toml"),
        format!(
            "[package]\nname = \"drover-plugin-ppo-bn\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n\
             [lib]\ncrate-type = [\"cdylib\", \"rlib\"]\n\n[dependencies]\n\
             drover-plugin-api = {{ path = \"{api}\" }}\n\
             drover-plugin-ppo = {{ path = \"{ppo}\", default-features = false }}\n\n[workspace]\n",
            api = repo.join("plugins/api").display(),
            ppo = repo.join("plugins/ppo").display()
        ),
    )
    .expect("Cargo.toml");
    std::fs::copy(repo.join("Cargo.lock"), project.join("Cargo.lock")).expect("Cargo.lock");
    std::fs::write(
        project.join("src/lib.rs"),
        "//! PPO under another name, built on drover-plugin-ppo.\n\
         use drover_plugin_api::*;\nuse drover_plugin_ppo::Ppo;\n\
         pub struct PpoBn(Ppo);\n\
         impl AlgorithmImpl for PpoBn {\n\
             fn info() -> PluginInfo { let mut i = Ppo::info(); i.name = \"ppo_bn\".into(); i }\n\
             fn new(p: &Params, seed: u64) -> Result<Self, PluginError> { Ok(Self(Ppo::new(p, seed)?)) }\n\
             fn compute_advantages(&mut self, b: &Rollout<'_>, a: &mut [f32], r: &mut [f32]) -> Result<Vec<Metric>, PluginError> { self.0.compute_advantages(b, a, r) }\n\
             fn loss(&mut self, mb: &Minibatch<'_>, out: &mut LossOutputs<'_>) -> Result<Vec<Metric>, PluginError> { self.0.loss(mb, out) }\n\
         }\n\
         export_algorithm!(PpoBn);\n",
    )
    .expect("lib.rs");
    run_ok(&mut cargo(&project, &["build", "--offline"]));
    let so = shared_plugin_target().join("debug/libdrover_plugin_ppo_bn.so");
    let out = run_ok(drover().args(["plugin", "check"]).arg(&so));
    let checked = String::from_utf8_lossy(&out.stdout);
    assert!(checked.starts_with("ppo_bn 0.1.0 (interface 1.3)"), "{checked}");
    assert!(checked.contains("passed: 14 checks, 0 failed"), "{checked}");
}

/// Review (algorithms) F2: CHORD refuses a rollout without expert responses, so its plugin
/// check failed 11 of 14 checks with no way to send them. `--experts` sends the host's
/// `is_expert` column and the whole harness runs; without it the failure says how to ask.
#[test]
fn a_plugin_that_learns_from_experts_is_checked_with_expert_responses() {
    let out = drover().args(["plugin", "check", "chord"]).output().expect("spawn");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_ne!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("hint: the plugin asks for expert responses (`is_expert`)"), "{text}");
    assert!(text.contains("drover plugin check chord --experts"), "{text}");
    let out = run_ok(drover().args(["plugin", "check", "chord", "--experts"]));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("passed: 14 checks, 0 failed"), "{text}");
    assert!(!text.contains("hint:"), "{text}");
    // A plugin that ignores the column passes either way.
    let out = run_ok(drover().args(["plugin", "check", "grpo", "--experts"]));
    assert!(String::from_utf8_lossy(&out.stdout).contains("passed: 14 checks, 0 failed"));
}

/// Review finding 8: a library under another plugin's file name ran, and `spec.json` and
/// analyze named one algorithm while `summary.json` named another.
#[test]
fn a_plugin_under_another_plugins_file_name_is_flagged_by_list_and_refused_by_run() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let libs = tmp.path().join("libs");
    std::fs::create_dir(&libs).expect("libs");
    std::fs::copy(artifact("libdrover_test_plugin_faulty.so"), libs.join("libdrover_plugin_other.so")).expect("copy");
    std::fs::copy(artifact("libdrover_test_plugin_faulty.so"), libs.join("libfaulty.so")).expect("copy");
    let out = run_ok(drover().args(["plugin", "list", "--plugin-path"]).arg(&libs));
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(
        listing.contains("warning its file name is not `libdrover_plugin_faulty.so`: `run.plugin = \"faulty\"` does not find it"),
        "{listing}"
    );
    assert!(listing.contains("warning a plugin named `faulty` is listed above ("), "{listing}");

    let sweep = write_sweep(
        tmp.path(),
        &format!(
            "name = \"other\"\nplugin_path = [\"{}\"]\n[run]\nenv = \"CartPole-v1\"\nplugin = \"other\"\nnum_envs = 4\n\
             num_steps = 32\ntotal_steps = 256\nnum_minibatches = 2\nupdate_epochs = 1\n",
            libs.display()
        ),
    );
    let out = drover().arg("run").arg(&sweep).arg("--results").arg(tmp.path().join("results")).output().expect("spawn");
    let err = stderr_of(&out);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(
        err.contains("libdrover_plugin_other.so` is plugin `faulty` by its own description, not `other`: name it `faulty` in the sweep"),
        "{err}"
    );
    // By its own name (`libfaulty.so`) or by path, it runs.
    let by_name = std::fs::read_to_string(&sweep).expect("sweep").replace("plugin = \"other\"", "plugin = \"faulty\"");
    std::fs::write(&sweep, by_name).expect("sweep");
    run_ok(drover().arg("run").arg(&sweep).arg("--results").arg(tmp.path().join("results")));

    // Found by its name through a symlink to a versioned file: the name asked for is the
    // plugin's, whatever the target file is called.
    let linked = tmp.path().join("linked");
    std::fs::create_dir(&linked).expect("linked");
    std::fs::copy(artifact("libdrover_test_plugin_faulty.so"), linked.join("libfaulty.so.1")).expect("copy");
    std::os::unix::fs::symlink("libfaulty.so.1", linked.join("libdrover_plugin_faulty.so")).expect("symlink");
    let via_link = std::fs::read_to_string(&sweep).expect("sweep").replace(&libs.display().to_string(), &linked.display().to_string());
    std::fs::write(&sweep, via_link).expect("sweep");
    run_ok(drover().arg("run").arg(&sweep).arg("--results").arg(tmp.path().join("results-linked")));
}

#[test]
fn an_incompatible_interface_is_refused_by_check_list_and_run_naming_both_versions() {
    let bad = artifact("libdrover_test_plugin_bad_version.so");
    let expected = format!(
        "plugin `{}` was built against drover plugin interface 99.0, but this drover provides 1.3",
        bad.display()
    );
    let out = drover().args(["plugin", "check"]).arg(&bad).output().expect("spawn");
    assert!(!out.status.success());
    assert!(stderr_of(&out).contains(&expected), "{}", stderr_of(&out));

    let dir = bad.parent().expect("profile dir");
    let out = run_ok(drover().args(["plugin", "list", "--plugin-path"]).arg(dir));
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(listing.contains(&format!("refused {}:", bad.canonicalize().expect("so").display())), "{listing}");
    assert!(listing.contains("interface 99.0") && listing.contains("ppo 0.1.0  (interface 1.3)"), "{listing}");

    let tmp = tempfile::tempdir().expect("tempdir");
    let sweep = write_sweep(
        tmp.path(),
        &format!("name = \"bad-version\"\n[run]\nenv = \"CartPole-v1\"\nplugin = \"{}\"\n", bad.display()),
    );
    let out = drover().arg("run").arg(&sweep).arg("--results").arg(tmp.path().join("r")).output().expect("spawn");
    assert_eq!(out.status.code(), Some(3), "{}", stderr_of(&out));
    assert!(stderr_of(&out).contains("key `run.plugin`: plugin"), "{}", stderr_of(&out));
    assert!(stderr_of(&out).contains(&expected), "{}", stderr_of(&out));
}

/// The other side of the version promise, through the real binaries: plugins built against
/// older minors of interface 1 (fixtures `tests/plugins/v1_0`, `v1_1`) pass `drover plugin
/// check` and train, and their runs record the interface they were built against.
#[test]
fn plugins_built_against_older_minors_are_checked_and_run() {
    let tmp = tempfile::tempdir().expect("tempdir");
    for (fixture, version) in [("v1_0", "1.0"), ("v1_1", "1.1")] {
        let so = artifact(&format!("libdrover_test_plugin_{fixture}.so"));
        let out = run_ok(drover().args(["plugin", "check"]).arg(&so));
        let checked = String::from_utf8_lossy(&out.stdout);
        assert!(checked.contains(&format!("{fixture} 0.1.0 (interface {version})")), "{checked}");
        assert!(checked.contains("passed: 14 checks, 0 failed"), "{checked}");

        let sweep = write_sweep(
            tmp.path(),
            &format!(
                "name = \"old-{fixture}\"\n[run]\nenv = \"CartPole-v1\"\nplugin = \"{}\"\nnum_envs = 4\n\
                 num_steps = 32\ntotal_steps = 256\nnum_minibatches = 2\nupdate_epochs = 1\n[sweep]\nseeds = [1]\n",
                so.display()
            ),
        );
        let results = tmp.path().join(format!("results-{fixture}"));
        run_ok(drover().arg("run").arg(&sweep).arg("--results").arg(&results));
        let runs = run_dirs(&results);
        assert_eq!(runs.len(), 1);
        assert_eq!(read_json(&runs[0].join("exit.json"))["status"], "completed", "{fixture}");
        let summary = read_json(&runs[0].join("summary.json"));
        assert_eq!(summary["plugin"]["interface_version"], version, "{fixture}");
    }
}
