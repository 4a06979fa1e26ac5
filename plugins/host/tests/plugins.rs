//! Loads the real plugin libraries (`plugins/ppo`, `tests/plugins/{faulty,bad_version}`)
//! through the host and checks the version gate, marshalling, and error reporting.
//!
//! How the `.so` files are found: `cargo test` does not produce `cdylib` artifacts, so build
//! them first, into the same target directory as this test:
//!
//! ```sh
//! cargo build -p drover-plugin-ppo -p drover-test-plugin-faulty -p drover-test-plugin-bad-version
//! cargo test -p drover-plugin-host
//! ```
//!
//! The test binary lives in `<target>/<profile>/deps/`, and `cargo build` puts the libraries
//! in `<target>/<profile>/`, so the directory is the test executable's grandparent; this holds
//! whatever `CARGO_TARGET_DIR` is. `DROVER_PLUGIN_DIR` overrides it. A missing library fails
//! the test with the build command; it never skips.

use std::path::PathBuf;

use drover_plugin_host::{CallErrorKind, LoadError, LossBatch, Metric, Plugin, RolloutBatch};

fn plugin_path(crate_name: &str) -> PathBuf {
    let dir = match std::env::var_os("DROVER_PLUGIN_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => {
            let exe = std::env::current_exe().expect("test executable path");
            exe.parent()
                .and_then(|deps| deps.parent())
                .expect("<target>/<profile>/deps/<test>")
                .to_path_buf()
        }
    };
    let path = dir.join(Plugin::library_file_name(crate_name));
    assert!(
        path.is_file(),
        "{} not found; build the plugins first: cargo build -p drover-plugin-ppo \
         -p drover-test-plugin-faulty -p drover-test-plugin-bad-version",
        path.display()
    );
    path
}

fn load(crate_name: &str) -> Plugin {
    let path = plugin_path(crate_name);
    Plugin::load(&path).unwrap_or_else(|e| panic!("loading {}: {e}", path.display()))
}

/// The hand-computed GAE case of `plugins/ppo/src/gae.rs` (γ = λ = 0.5), now across the ABI.
#[test]
fn ppo_loads_and_computes_through_the_abi() {
    let plugin = load("drover-plugin-ppo");
    let info = plugin.info();
    assert_eq!(info.name, "ppo");
    assert_eq!(info.version, "0.1.0");
    let names: Vec<&str> = info.params.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "gamma",
            "gae_lambda",
            "clip_coef",
            "clip_vloss",
            "ent_coef",
            "vf_coef",
            "norm_adv",
            "target_kl"
        ]
    );
    assert_eq!(
        plugin.interface_version(),
        drover_plugin_host::INTERFACE_VERSION
    );

    use sha2::Digest;
    let bytes = std::fs::read(plugin.path()).expect("read plugin");
    let hex: String = sha2::Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(plugin.sha256(), hex);

    let resolved = plugin
        .resolve_params(r#"{"gamma": 0.5}"#)
        .expect("valid params");
    assert_eq!(resolved["gamma"], 0.5);
    assert_eq!(resolved["clip_coef"], 0.2);
    assert!(resolved["target_kl"].is_null());

    let mut alg = plugin
        .instantiate(r#"{"gamma": 0.5, "gae_lambda": 0.5}"#, 1)
        .expect("instantiate");
    let mask = [1., 1., 1., 1., 1., 1., 1., 0.];
    let rewards = [1., 0., 2., 1., 1., 1., 1., 9.];
    let values = [0.5, 1., 0.5, 1., 1., 1., 1., 9.];
    let next_values = [1., 5., 1., 2., 3., 1., 2., 9.];
    let terminated = [0., 1., 0., 0., 0., 0., 0., 0.];
    let truncated = [0., 0., 0., 0., 1., 0., 0., 0.];
    let tool_calls = [2.0, 0.0];
    let metadata = [("tool_calls", &tool_calls[..])];
    let batch = RolloutBatch {
        num_sequences: 2,
        seq_len: 4,
        mask: &mask,
        rewards: &rewards,
        terminated: &terminated,
        truncated: &truncated,
        values: &values,
        next_values: &next_values,
        logp_old: &[],
        logp_ref: &[],
        entropy_old: &[],
        group_ids: &[0, 1],
        sample_weights: &[],
        metadata: &metadata,
        seed: 7,
    };
    let (mut adv, mut ret) = ([f32::NAN; 8], [f32::NAN; 8]);
    alg.compute_advantages(&batch, &mut adv, &mut ret)
        .expect("advantages");
    let expected = [0.75, -1.0, 2.25, 1.0, 1.5, 0.75, 1.0, 0.0];
    assert!(
        adv.iter().zip(expected).all(|(a, e)| (a - e).abs() < 1e-5),
        "{adv:?}"
    );

    // A minibatch at ρ = 1 without normalization: ∂L/∂logp_i = −A_i / M.
    let zeros = [0.0f32; 4];
    let advantages = [1.0, -2.0, 0.5, 4.0];
    let weights = [1.0f32; 4];
    let mb = LossBatch {
        logp_new: &zeros,
        logp_old: &zeros,
        logp_ref: &[],
        advantages: &advantages,
        returns: &zeros,
        values_new: &zeros,
        values_old: &zeros,
        entropy_new: &[1.0; 4],
        token_weights: &weights,
        seq_index: &[0, 0, 1, 1],
        num_sequences: 2,
        seed: 3,
    };
    let mut alg = plugin
        .instantiate(r#"{"norm_adv": false, "target_kl": 0.01}"#, 1)
        .expect("instantiate");
    let (mut loss, mut d_logp, mut d_value, mut d_entropy) =
        ([0.0; 4], [0.0; 4], [0.0; 4], [0.0; 4]);
    let metrics = alg
        .loss(&mb, &mut loss, &mut d_logp, &mut d_value, &mut d_entropy)
        .expect("loss");
    assert_eq!(d_logp, [-0.25, 0.5, -0.125, -1.0]);
    assert!(
        d_entropy.iter().all(|&d| (d + 0.0025).abs() < 1e-7),
        "{d_entropy:?}"
    );
    let names: Vec<&str> = metrics.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "policy_loss",
            "value_loss",
            "entropy",
            "approx_kl",
            "clip_frac"
        ]
    );
    assert!(!alg
        .on_epoch_end(0, &[Metric::new("approx_kl", 0.5)])
        .expect("hook"));
    assert!(alg
        .on_epoch_end(0, &[Metric::new("approx_kl", 0.001)])
        .expect("hook"));
    let control = alg.on_iteration(1, 128, &metrics).expect("hook");
    assert!(!control.stop && control.group_sizes.is_empty());
    assert!(alg.keep_group(&[1.0, 1.0]).expect("predicate"));

    // Host-side shape check, before anything reaches the plugin.
    let short = LossBatch {
        advantages: &advantages[..3],
        ..mb
    };
    let e = alg
        .loss(&short, &mut loss, &mut d_logp, &mut d_value, &mut d_entropy)
        .expect_err("bad batch");
    assert!(matches!(e.kind, CallErrorKind::InvalidBatch(_)), "{e}");
    assert!(
        e.to_string()
            .contains("`advantages` has length 3, expected 4"),
        "{e}"
    );

    let e = plugin
        .instantiate(r#"{"clip_coef": "wide"}"#, 1)
        .expect_err("bad param");
    assert_eq!(e.to_string(), "plugin `ppo` 0.1.0: call `new`: invalid params: key `clip_coef`: expected float, got \"wide\"");
}

#[test]
fn a_plugin_from_another_interface_major_is_refused_with_both_versions() {
    let path = plugin_path("drover-test-plugin-bad-version");
    let e = Plugin::load(&path).expect_err("interface 99.0 must be refused");
    assert!(
        matches!(e, LoadError::IncompatibleInterface { .. }),
        "{e:?}"
    );
    assert_eq!(
        e.to_string(),
        format!(
            "plugin `{}` was built against drover plugin interface 99.0, but this drover provides 1.0 (same major required)",
            path.display()
        )
    );
}

#[test]
fn a_file_that_is_not_a_library_is_refused_with_its_path() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml");
    let e = Plugin::load(&path).expect_err("not a library");
    assert!(matches!(e, LoadError::Open { .. }), "{e:?}");
    assert!(e.to_string().contains(&path.display().to_string()), "{e}");
}

fn faulty_loss_batch<'a>(zeros: &'a [f32; 3], weights: &'a [f32; 3]) -> LossBatch<'a> {
    LossBatch {
        logp_new: zeros,
        logp_old: zeros,
        logp_ref: &[],
        advantages: weights,
        returns: zeros,
        values_new: zeros,
        values_old: zeros,
        entropy_new: zeros,
        token_weights: weights,
        seq_index: &[0, 0, 0],
        num_sequences: 1,
        seed: 0,
    }
}

#[test]
fn faulty_plugin_errors_become_call_errors_and_panics_do_not_abort() {
    let plugin = load("drover-test-plugin-faulty");
    let (zeros, weights) = ([0.0f32; 3], [1.0f32; 3]);
    let mb = faulty_loss_batch(&zeros, &weights);
    let mut outs = ([0.0f32; 3], [0.0f32; 3], [0.0f32; 3], [0.0f32; 3]);

    // Healthy mode first, so the failures below are the fixture's doing.
    let mut ok = plugin
        .instantiate(r#"{"fail": "none"}"#, 0)
        .expect("instantiate");
    ok.loss(&mb, &mut outs.0, &mut outs.1, &mut outs.2, &mut outs.3)
        .expect("healthy loss");
    assert_eq!(outs.1, [-1.0; 3]);

    let e = plugin
        .instantiate(r#"{"fail": "error_in_new"}"#, 0)
        .expect_err("error in new");
    assert_eq!(
        e.to_string(),
        "plugin `faulty` 0.1.0: call `new`: internal error: asked to fail in `new`"
    );

    let mut alg = plugin
        .instantiate(r#"{"fail": "panic_in_loss"}"#, 0)
        .expect("instantiate");
    let e = alg
        .loss(&mb, &mut outs.0, &mut outs.1, &mut outs.2, &mut outs.3)
        .expect_err("panic");
    assert!(e.is_panic(), "{e}");
    assert_eq!(
        e.to_string(),
        "plugin `faulty` 0.1.0: call `loss`: panic: faulty plugin: deliberate panic in loss"
    );
    // We are still running; the instance refuses further calls, other instances still work.
    let e = alg
        .loss(&mb, &mut outs.0, &mut outs.1, &mut outs.2, &mut outs.3)
        .expect_err("poisoned");
    assert!(e.to_string().contains("an earlier call panicked"), "{e}");
    ok.loss(&mb, &mut outs.0, &mut outs.1, &mut outs.2, &mut outs.3)
        .expect("other instance unaffected");

    let mut alg = plugin
        .instantiate(r#"{"fail": "nan_in_loss"}"#, 0)
        .expect("instantiate");
    let e = alg
        .loss(&mb, &mut outs.0, &mut outs.1, &mut outs.2, &mut outs.3)
        .expect_err("nan");
    assert!(
        matches!(
            e.kind,
            CallErrorKind::NonFinite {
                output: "loss",
                index: 1,
                ..
            }
        ),
        "{e:?}"
    );
    assert_eq!(
        e.to_string(),
        "plugin `faulty` 0.1.0: call `loss`: output `loss` is not finite at index 1 (value NaN)"
    );

    let mut alg = plugin
        .instantiate(r#"{"fail": "panic_in_advantages"}"#, 0)
        .expect("instantiate");
    let rollout = RolloutBatch {
        num_sequences: 1,
        seq_len: 3,
        mask: &weights,
        rewards: &weights,
        terminated: &[],
        truncated: &[],
        values: &[],
        next_values: &[],
        logp_old: &[],
        logp_ref: &[],
        entropy_old: &[],
        group_ids: &[],
        sample_weights: &[],
        metadata: &[],
        seed: 0,
    };
    let (mut adv, mut ret) = ([0.0f32; 3], [0.0f32; 3]);
    let e = alg
        .compute_advantages(&rollout, &mut adv, &mut ret)
        .expect_err("panic");
    assert!(e.is_panic(), "{e}");
    assert_eq!(
        e.to_string(),
        "plugin `faulty` 0.1.0: call `compute_advantages`: panic: faulty plugin: deliberate panic in compute_advantages"
    );

    let e = plugin
        .instantiate(r#"{"fail": "sometimes"}"#, 0)
        .expect_err("unknown mode");
    assert!(
        e.to_string()
            .contains("key `fail`: unknown failure mode `sometimes`"),
        "{e}"
    );
}
