//! Loads the real plugin libraries (`plugins/{ppo,knapsack}`, `tests/plugins/{faulty,
//! bad_version,v1_0,v1_1,sequence,ext_mismatch}`) through the host and checks the version gate,
//! extensions, marshalling, and error reporting.
//!
//! How the `.so` files are found: `cargo test` does not produce `cdylib` artifacts, so build
//! them first, into the same target directory as this test:
//!
//! ```sh
//! cargo build -p drover-plugin-ppo -p drover-plugin-knapsack -p drover-test-plugin-faulty \
//!   -p drover-test-plugin-bad-version -p drover-test-plugin-v1-0 -p drover-test-plugin-v1-1 \
//!   -p drover-test-plugin-sequence -p drover-test-plugin-ext-mismatch
//! cargo test -p drover-plugin-host
//! ```
//!
//! The test binary lives in `<target>/<profile>/deps/`, and `cargo build` puts the libraries
//! in `<target>/<profile>/`, so the directory is the test executable's grandparent; this holds
//! whatever `CARGO_TARGET_DIR` is. `DROVER_PLUGIN_DIR` overrides it. A missing library fails
//! the test with the build command; it never skips.

use std::path::PathBuf;

use drover_plugin_api::ext::{v1_1, v1_3, ExtensionTable};
use drover_plugin_host::{
    CallError, CallErrorKind, InterfaceVersion, LoadError, LossBatch, Metric, MinibatchContext, Plugin,
    RolloutBatch, INTERFACE_VERSION,
};

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
         -p drover-plugin-knapsack -p drover-test-plugin-faulty -p drover-test-plugin-bad-version \
         -p drover-test-plugin-v1-0 -p drover-test-plugin-v1-1 \
         -p drover-test-plugin-sequence -p drover-test-plugin-ext-mismatch",
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
            "target_kl",
            "bootstrap_truncated"
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
    assert_eq!(resolved["bootstrap_truncated"], true);

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
        seq_group_ids: &[],
        seed: 3,
        context: None,
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
    // The last minibatch's approx_kl (0 at ρ = 1) decides, as in CleanRL, whatever the host's
    // epoch mean says; before any minibatch the host's mean stands in.
    assert!(alg
        .on_epoch_end(0, &[Metric::new("approx_kl", 0.5)])
        .expect("hook"));
    let mut fresh = plugin
        .instantiate(r#"{"target_kl": 0.01}"#, 1)
        .expect("instantiate");
    assert!(!fresh
        .on_epoch_end(0, &[Metric::new("approx_kl", 0.5)])
        .expect("hook"));
    assert!(fresh
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
            "plugin `{}` was built against drover plugin interface 99.0, but this drover provides 1.3 \
             (it loads plugins built against any interface 1.x: rebuild the plugin against a \
             drover-plugin-api of that major)",
            path.display()
        )
    );
}

/// A minibatch of two whole sequences: tokens 0–1 are sequence 0, tokens 2–4 sequence 1, and
/// token 4 is padding (weight 0).
struct TwoSequences {
    logp_new: [f32; 5],
    logp_old: [f32; 5],
    advantages: [f32; 5],
    zeros: [f32; 5],
    weights: [f32; 5],
}

impl TwoSequences {
    fn new() -> Self {
        Self {
            logp_new: [-1.0, -0.5, -2.0, -1.0, -9.0],
            logp_old: [-1.0, -1.0, -1.5, -1.0, -1.0],
            advantages: [2.0, 4.0, -1.0, -3.0, 100.0],
            zeros: [0.0; 5],
            weights: [1.0, 1.0, 1.0, 1.0, 0.0],
        }
    }

    fn batch(&self) -> LossBatch<'_> {
        LossBatch {
            logp_new: &self.logp_new,
            logp_old: &self.logp_old,
            logp_ref: &[],
            advantages: &self.advantages,
            returns: &self.zeros,
            values_new: &self.zeros,
            values_old: &self.zeros,
            entropy_new: &self.zeros,
            token_weights: &self.weights,
            seq_index: &[0, 0, 1, 1, 1],
            num_sequences: 2,
            seq_group_ids: &[],
            seed: 0,
            // Sent to 1.3+ plugins (which ignore it unless they read it), never to older ones.
            context: Some(MinibatchContext {
                rollout_index: &[2, 0],
                rollout_sequences: 3,
                iteration: 1,
                epoch: 0,
                minibatch: 0,
            }),
        }
    }
}

/// The two-builds test of issue 10: a plugin built against interface 1.0 loads in this 1.3
/// host, runs the v1 calls, and reports the 1.1 extension as absent (not as an error).
///
/// `tests/plugins/v1_0` stands for a build against the 1.0 api crate: it records 1.0 and
/// implements no extension, and its root module has the layout of a real 1.0 build because
/// the v1 types are frozen, which `plugins/api/tests/frozen_layout.rs` pins (see the fixture's
/// doc). The host meanwhile knows a newer extension, `ext::v1_1::SequenceLoss`.
#[test]
fn a_plugin_built_against_interface_1_0_loads_in_a_1_3_host_without_the_1_1_extension() {
    assert_eq!(INTERFACE_VERSION, InterfaceVersion::new(1, 3));
    assert_eq!(v1_1::SequenceLoss::NAME, "drover.sequence_loss");
    let plugin = load("drover-test-plugin-v1-0");
    assert_eq!(plugin.interface_version(), InterfaceVersion::new(1, 0));
    assert_eq!(plugin.info().name, "v1_0");

    let data = TwoSequences::new();
    let mut alg = plugin.instantiate("{}", 0).expect("instantiate");
    let (mut loss, mut d_logp, mut d_value, mut d_entropy) =
        ([0.0; 5], [0.0; 5], [0.0; 5], [0.0; 5]);
    let metrics = alg
        .loss(
            &data.batch(),
            &mut loss,
            &mut d_logp,
            &mut d_value,
            &mut d_entropy,
        )
        .expect("v1 loss across minors");
    assert_eq!(d_logp, [-2.0, -4.0, 1.0, 3.0, 0.0]);
    assert_eq!(metrics, [Metric::new("from_1_0", 1.0)]);

    assert!(plugin.sequence_loss().expect("no mismatch").is_none());
    assert!(plugin
        .extension::<v1_1::SequenceLoss>()
        .expect("no mismatch")
        .is_none());
    // Nor the 1.3 minibatch context: the batch's context above was not sent.
    assert!(plugin
        .extension::<v1_3::MinibatchContext>()
        .expect("no mismatch")
        .is_none());
    assert!(!alg.takes_minibatch_context());
    // PPO (built against this api, 1.3) does not implement the extension either: same answer.
    assert!(load("drover-plugin-ppo")
        .sequence_loss()
        .expect("no mismatch")
        .is_none());
}

/// A plugin that implements the 1.1 extension `SequenceLoss` (built against this api, 1.3)
/// exposes it; the host computes each sequence's log-ratio and spreads ∂L/∂Δ_s over its
/// valid tokens.
#[test]
fn a_plugin_implementing_the_1_1_extension_exposes_it_and_the_host_calls_it() {
    let plugin = load("drover-test-plugin-sequence");
    assert_eq!(plugin.interface_version(), InterfaceVersion::new(1, 3));
    let ext = plugin
        .sequence_loss()
        .expect("layouts match")
        .expect("the fixture provides it");
    let mut alg = plugin.instantiate("{}", 0).expect("instantiate");

    let data = TwoSequences::new();
    let (mut seq_loss, mut d_logp) = ([f32::NAN; 2], [f32::NAN; 5]);
    let metrics = alg
        .sequence_loss(ext, &data.batch(), &mut seq_loss, &mut d_logp)
        .expect("sequence loss");
    // Δ_0 = 0 + 0.5 = 0.5, Ā_0 = 3; Δ_1 = −0.5 + 0 = −0.5 (token 4 is padding), Ā_1 = −2.
    let expected = [-3.0 * 0.5f32.exp(), 2.0 * (-0.5f32).exp()];
    assert!(
        seq_loss
            .iter()
            .zip(expected)
            .all(|(a, e)| (a - e).abs() < 1e-6),
        "{seq_loss:?} vs {expected:?}"
    );
    let d = [expected[0], expected[0], expected[1], expected[1], 0.0];
    assert!(
        d_logp.iter().zip(d).all(|(a, e)| (a - e).abs() < 1e-6),
        "{d_logp:?} vs {d:?}"
    );
    assert_eq!(metrics.len(), 1);
    assert_eq!(metrics[0].name, "seq_ratio_mean");
    let ratio_mean = (f64::from(0.5f32.exp()) + f64::from((-0.5f32).exp())) / 2.0;
    assert!((metrics[0].value - ratio_mean).abs() < 1e-6, "{metrics:?}");

    // The table belongs to its library: an instance from another plugin is refused by the
    // plugin, not reinterpreted.
    let mut other = load("drover-test-plugin-v1-0")
        .instantiate("{}", 0)
        .expect("instantiate");
    let e = other
        .sequence_loss(ext, &data.batch(), &mut seq_loss, &mut d_logp)
        .expect_err("foreign instance");
    assert_eq!(
        e.to_string(),
        "plugin `v1_0` 0.1.0: call `sequence_loss`: internal error: call `sequence_loss`: \
         the instance was created by another plugin library"
    );

    // Output lengths are checked before the call.
    let e = alg
        .sequence_loss(ext, &data.batch(), &mut [0.0; 3], &mut d_logp)
        .expect_err("wrong length");
    assert!(matches!(e.kind, CallErrorKind::InvalidBatch(_)), "{e}");
    assert!(
        e.to_string()
            .contains("output `seq_loss` has length 3, expected 2"),
        "{e}"
    );
}

fn close(actual: &[f32], expected: &[f32]) -> bool {
    actual.len() == expected.len()
        && actual
            .iter()
            .zip(expected)
            .all(|(a, e)| (a - e).abs() < 1e-6)
}

/// Issue 13's "a plugin built against the previous interface still runs": a plugin built
/// against 1.1 loads in this 1.3 host and runs every stage with the 1.2 inputs present — the
/// `prompt_id` metadata column in its rollout and the `next_prompts` inputs among the
/// `on_iteration` metrics — and asks for no group sizes, which a 1.2 host reads as "the run's
/// `group_size` for every prompt". Its 1.1 extension passes the host's layout check.
///
/// `tests/plugins/v1_1` stands for a build against the 1.1 api crate (see the fixture's doc):
/// it records 1.1, exports the 1.1 `SequenceLoss` table, and uses none of 1.2's helpers. Its
/// algorithm is REINFORCE with a group-mean baseline under a clipped ratio, token-mean.
#[test]
fn a_plugin_built_against_interface_1_1_runs_in_a_1_3_host_and_asks_for_no_group_sizes() {
    assert_eq!(INTERFACE_VERSION, InterfaceVersion::new(1, 3));
    let plugin = load("drover-test-plugin-v1-1");
    assert_eq!(plugin.interface_version(), InterfaceVersion::new(1, 1));
    assert_eq!(plugin.info().name, "v1_1");
    let mut alg = plugin.instantiate("{}", 0).expect("instantiate");

    // Two prompts (dataset ids 5 and 2) × 2 responses, 2 steps; response 1 stops after one
    // step (its padding holds garbage). Scores [1, 0 | 1, 1]: group 0 has mean ½, so
    // A = s − ½ = [½, −½]; group 1 is uniform, A = 0.
    let mask = [1., 1., 1., 0., 1., 1., 1., 1.];
    let rewards = [0., 1., 0., 7., 0., 1., 0., 1.];
    let prompt_ids = [5.0, 5.0, 2.0, 2.0];
    let metadata = [(drover_plugin_api::metadata::PROMPT_ID, &prompt_ids[..])];
    let batch = RolloutBatch {
        num_sequences: 4,
        seq_len: 2,
        mask: &mask,
        rewards: &rewards,
        group_ids: &[0, 0, 1, 1],
        metadata: &metadata,
        ..RolloutBatch::default()
    };
    let (mut adv, mut ret) = ([f32::NAN; 8], [f32::NAN; 8]);
    let metrics = alg
        .compute_advantages(&batch, &mut adv, &mut ret)
        .expect("advantages");
    assert_eq!(adv, [0.5, 0.5, -0.5, 0.0, 0.0, 0.0, 0.0, 0.0]);
    assert_eq!(ret, adv);
    assert_eq!(
        metrics,
        [
            Metric::new("score_mean", 0.75),
            Metric::new("uniform_group_frac", 0.5)
        ]
    );

    // Token loss at ε = 0.2, each valid token weighted ¼: token 0 (ρ = 1) keeps its gradient
    // −A·ρ; token 1 (ρ = e^0.5, A > 0) and token 2 (ρ = e^−0.5, A < 0) are clipped (loss
    // −A·(1 ± ε), no gradient); token 3 (ρ = 1) keeps its; token 4 is padding.
    let data = TwoSequences::new();
    let (mut loss, mut d_logp, mut d_value, mut d_entropy) =
        ([f32::NAN; 5], [f32::NAN; 5], [f32::NAN; 5], [f32::NAN; 5]);
    let metrics = alg
        .loss(
            &data.batch(),
            &mut loss,
            &mut d_logp,
            &mut d_value,
            &mut d_entropy,
        )
        .expect("loss");
    assert!(close(&loss, &[-0.5, -1.2, 0.2, 0.75, 0.0]), "{loss:?}");
    assert!(close(&d_logp, &[-0.5, 0.0, 0.0, 0.75, 0.0]), "{d_logp:?}");
    // A 1.1 build knows no 1.3 table: the batch's minibatch context was not sent.
    assert!(!alg.takes_minibatch_context());
    assert!(plugin
        .extension::<v1_3::MinibatchContext>()
        .expect("no mismatch")
        .is_none());
    assert_eq!((d_value, d_entropy), ([0.0; 5], [0.0; 5]));
    assert_eq!(metrics.len(), 2, "{metrics:?}");
    assert_eq!(
        (metrics[0].name.as_str(), metrics[1].name.as_str()),
        ("policy_loss", "clip_frac")
    );
    assert!((metrics[0].value + 0.75).abs() < 1e-6, "{metrics:?}");
    assert!((metrics[1].value - 0.5).abs() < 1e-12, "{metrics:?}");

    // The 1.1 extension from a plugin that records 1.1: accepted by the 1.3 host's layout
    // check and callable. At ε = 0.9 neither sequence ratio is clipped: Δ_0 = 0.5, Ā_0 = 3;
    // Δ_1 = −0.5, Ā_1 = −2; loss_s = −Ā_s·e^{Δ_s}/2 = ∂loss_s/∂Δ_s.
    let ext = plugin
        .sequence_loss()
        .expect("a 1.1 table passes the 1.3 host's layout check")
        .expect("the fixture provides it");
    let mut wide = plugin
        .instantiate(r#"{"clip_ratio": 0.9}"#, 0)
        .expect("instantiate");
    let (mut seq_loss, mut d_logp) = ([f32::NAN; 2], [f32::NAN; 5]);
    let metrics = wide
        .sequence_loss(ext, &data.batch(), &mut seq_loss, &mut d_logp)
        .expect("sequence loss");
    let expected = [-1.5 * 0.5f32.exp(), (-0.5f32).exp()];
    assert!(close(&seq_loss, &expected), "{seq_loss:?} vs {expected:?}");
    let spread = [expected[0], expected[0], expected[1], expected[1], 0.0];
    assert!(close(&d_logp, &spread), "{d_logp:?} vs {spread:?}");
    assert_eq!(metrics, [Metric::new("seq_clip_frac", 0.0)]);

    // `on_iteration` with the 1.2 inputs a dataset run passes: the plugin reads its own metric
    // by name, ignores the `input.*` ones and leaves the group sizes to the host.
    let next = drover_plugin_api::NextPrompts {
        prompt_ids: vec![3, 0, 2],
        budget: 12,
        group_size: 4,
    };
    let with_inputs = |score: f64| -> Vec<Metric> {
        let mut m = vec![
            Metric::new("score_mean", score),
            Metric::new("accuracy", score),
        ];
        m.extend(
            next.to_metrics()
                .iter()
                .map(|m| Metric::new(m.name.as_str(), m.value)),
        );
        m
    };
    // The inputs are really there: a 1.2 plugin reading the same list finds the prompts.
    let abi: Vec<drover_plugin_api::Metric> = next.to_metrics();
    let info = drover_plugin_api::IterationInfo {
        iteration: 1,
        global_step: 16,
        metrics: abi_stable::std_types::RSlice::from_slice(&abi),
    };
    assert_eq!(info.next_prompts().as_ref(), Some(&next));
    assert!(with_inputs(0.0)
        .iter()
        .any(|m| m.name == "input.next_prompt.2" && m.value == 2.0));

    let control = alg.on_iteration(1, 16, &with_inputs(0.75)).expect("hook");
    assert!(control.group_sizes.is_empty(), "{control:?}");
    assert!(!control.stop);
    assert_eq!(control.metrics, [Metric::new("best_score_mean", 0.75)]);
    let control = alg.on_iteration(2, 32, &with_inputs(0.25)).expect("hook");
    assert!(
        control.group_sizes.is_empty() && !control.stop,
        "{control:?}"
    );
    assert_eq!(control.metrics, [Metric::new("best_score_mean", 0.75)]);
    assert!(alg.keep_group(&[1.0, 1.0]).expect("default predicate"));

    // The authors' harness passes through the ABI too.
    let report = plugin.check("{}", &drover_plugin_host::CheckOptions::default());
    report.assert_passed();
}

/// Interface 1.3's plugin state through the host. Plugins built against 1.0 and 1.1, and PPO
/// (built against 1.3, keeping no state), answer "not provided" and still run. Knapsack's
/// per-prompt rates survive `save_state` → a fresh instance → `load_state`: its next allocation
/// is the saver's, not a fresh instance's. Bytes it cannot read, and an instance of another
/// plugin, come back as `CallError`s naming the plugin and the call.
#[test]
fn plugin_state_round_trips_through_the_host_and_older_plugins_have_none() {
    assert_eq!(v1_3::PluginState::NAME, "drover.plugin_state");
    for old in ["drover-test-plugin-v1-0", "drover-test-plugin-v1-1", "drover-plugin-ppo"] {
        let plugin = load(old);
        assert!(plugin.plugin_state().expect("no layout mismatch").is_none(), "{old}");
        assert!(plugin.extension::<v1_3::PluginState>().expect("no mismatch").is_none());
        plugin.instantiate("{}", 0).expect("an older plugin still instantiates");
    }

    let plugin = load("drover-plugin-knapsack");
    let ext = plugin
        .plugin_state()
        .expect("no layout mismatch")
        .expect("knapsack exports the table");
    // One-step outcome responses: prompt 10 scores [1, 0, 0] (p = ⅓), prompt 11 [1, 1, 1, 0].
    let rewards = [1.0f32, 0.0, 0.0, 1.0, 1.0, 1.0, 0.0];
    let mask = [1.0f32; 7];
    let ids = [10.0f32, 10.0, 10.0, 11.0, 11.0, 11.0, 11.0];
    let metadata = [("prompt_id", &ids[..])];
    let batch = RolloutBatch {
        num_sequences: 7,
        seq_len: 1,
        mask: &mask,
        rewards: &rewards,
        group_ids: &[0, 0, 0, 1, 1, 1, 1],
        metadata: &metadata,
        seed: 3,
        ..RolloutBatch::default()
    };
    let mut saver = plugin.instantiate("{}", 0).expect("instantiate");
    saver
        .compute_advantages(&batch, &mut [0.0; 7], &mut [0.0; 7])
        .expect("advantages");
    let next = drover_plugin_api::NextPrompts {
        prompt_ids: vec![10, 11, 12],
        budget: 12,
        group_size: 4,
    };
    let inputs: Vec<Metric> = next
        .to_metrics()
        .iter()
        .map(|m| Metric::new(m.name.as_str(), m.value))
        .collect();
    let sizes = |alg: &mut drover_plugin_host::AlgorithmHandle| {
        alg.on_iteration(1, 7, &inputs).expect("hook").group_sizes
    };
    let bytes = saver.save_state(ext).expect("saves");
    let mut fresh = plugin.instantiate("{}", 0).expect("instantiate");
    let unseen = sizes(&mut fresh);
    assert_eq!(unseen, [4, 4, 4], "a fresh instance has seen no prompt");
    fresh.load_state(ext, &bytes).expect("loads");
    let restored = sizes(&mut fresh);
    assert_eq!(restored, sizes(&mut saver));
    assert_ne!(restored, unseen);

    let e = fresh.load_state(ext, b"{}").expect_err("not a knapsack state");
    assert!(
        e.to_string().starts_with(
            "plugin `knapsack` 0.1.0: call `load_state`: invalid input: not a `knapsack` state version 1: "
        ),
        "{e}"
    );
    assert_eq!(sizes(&mut fresh), restored, "a refused state changes nothing");
    let mut ppo = load("drover-plugin-ppo").instantiate("{}", 0).expect("ppo");
    let e = ppo.save_state(ext).expect_err("another library's instance");
    assert_eq!(
        e.to_string(),
        "plugin `ppo` 0.1.0: call `save_state`: internal error: call `save_state`: the instance \
         was created by another plugin library"
    );
}

/// A plugin claiming interface 1.4 (newer than this 1.3 host) loads, but its
/// `drover.sequence_loss` table has another
/// layout: the host refuses that extension, naming it and both versions, and never calls it
/// (the fixture's function aborts the process if called).
#[test]
fn an_extension_with_an_incompatible_layout_is_refused_naming_it_and_both_versions() {
    let path = plugin_path("drover-test-plugin-ext-mismatch");
    let plugin = Plugin::load(&path).expect("a newer minor loads");
    assert_eq!(plugin.interface_version(), InterfaceVersion::new(1, 4));
    plugin
        .instantiate("{}", 0)
        .expect("the v1 part still works");

    let e = plugin.sequence_loss().expect_err("layout mismatch");
    assert!(
        matches!(
            e,
            LoadError::Extension {
                name: "drover.sequence_loss",
                ..
            }
        ),
        "{e:?}"
    );
    let text = e.to_string();
    let head = format!(
        "plugin `{}` (interface 1.4): extension `drover.sequence_loss` (added in interface 1.1) \
         does not match the one this drover (interface 1.3) expects: ",
        path.display()
    );
    assert!(text.starts_with(&head), "{text}");
    assert!(
        text.contains("SequenceLoss"),
        "abi_stable's reason names the type: {text}"
    );
    assert!(matches!(
        plugin.extension::<v1_1::SequenceLoss>(),
        Err(LoadError::Extension { .. })
    ));
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
        seq_group_ids: &[],
        seed: 0,
        context: None,
    }
}

/// `e` is the faulty plugin's deliberate panic in `call`, caught, with where it was raised
/// (the api crate's catch site appends the location, for the author).
fn assert_faulty_panic(e: &CallError, call: &str) {
    assert!(e.is_panic(), "{e}");
    let text = e.to_string();
    let expected = format!(
        "plugin `faulty` 0.1.0: call `{call}`: panic: faulty plugin: deliberate panic in {call} (at "
    );
    assert!(
        text.starts_with(&expected) && text.contains("faulty/src/lib.rs:"),
        "{text}"
    );
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
    assert_faulty_panic(&e, "loss");
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
        ..RolloutBatch::default()
    };
    let (mut adv, mut ret) = ([0.0f32; 3], [0.0f32; 3]);
    let e = alg
        .compute_advantages(&rollout, &mut adv, &mut ret)
        .expect_err("panic");
    assert_faulty_panic(&e, "compute_advantages");

    // Review finding 1: a metric named like a host column duplicated or overwrote it.
    let mut alg = plugin
        .instantiate(r#"{"fail": "host_metric_in_loss"}"#, 0)
        .expect("instantiate");
    let e = alg
        .loss(&mb, &mut outs.0, &mut outs.1, &mut outs.2, &mut outs.3)
        .expect_err("reserved metric name");
    assert!(matches!(e.kind, CallErrorKind::BadMetric(_)), "{e:?}");
    let text = e.to_string();
    assert!(
        text.starts_with(
            "plugin `faulty` 0.1.0: call `loss`: metric `lr` has the name of a column the host \
             writes itself; rename it (reserved: iteration, global_step, episodes, \
             episodic_return_mean, lr, steps_per_sec, wall_time_s, grad_norm, accuracy,"
        ),
        "{text}"
    );

    // Review finding: the instance is dropped through abi_stable's `destroy_box`, which aborted
    // the process (this test binary included) when the plugin's `Drop` panicked.
    let alg = plugin
        .instantiate(r#"{"fail": "panic_in_drop"}"#, 0)
        .expect("instantiate");
    drop(alg);

    let e = plugin
        .instantiate(r#"{"fail": "sometimes"}"#, 0)
        .expect_err("unknown mode");
    assert!(
        e.to_string()
            .contains("key `fail`: unknown failure mode `sometimes`"),
        "{e}"
    );
}

/// `drover plugin check` runs the authors' harness through the ABI: PPO passes every check, and
/// a NaN-writing instance fails `loss_finite`, naming the plugin, the call and the output.
#[test]
fn the_authors_harness_runs_on_a_loaded_library() {
    let opts = drover_plugin_host::CheckOptions::default();
    let report = load("drover-plugin-ppo").check("{}", &opts);
    report.assert_passed();
    assert_eq!(report.checks.len(), 14, "{report}");
    assert!(report.to_string().contains("no `drover.plugin_state` table"), "{report}");
    // Knapsack's state table passes the round trip through the ABI.
    let report = load("drover-plugin-knapsack").check("{}", &opts);
    report.assert_passed();
    let round_trip = report.checks.iter().find(|c| c.name == "state_round_trip").expect("ran");
    assert!(round_trip.detail.contains("a fresh instance that loads them continues identically"), "{report}");

    let faulty = load("drover-test-plugin-faulty");
    let report = faulty.check(r#"{"fail": "nan_in_loss"}"#, &opts);
    let failed: Vec<&str> = report.failures().map(|c| c.name).collect();
    // The checks that need a finite loss are listed as not run, so the count is honest.
    assert_eq!(
        failed,
        [
            "loss_finite",
            "loss_deterministic",
            "loss_padding_invariant",
            "loss_sequence_numbering",
            "loss_derivatives",
            "epoch_hook",
            "iteration_hook"
        ],
        "{report}"
    );
    // A plugin without a state table passes the round trip whatever else failed.
    assert!(report.to_string().contains("ok   state_round_trip"), "{report}");
    assert_eq!(report.checks.len(), 14, "{report}");
    assert!(
        report.to_string().contains(
            "plugin `faulty` 0.1.0: call `loss`: output `loss` is not finite at index 1 (value NaN)"
        ),
        "{report}"
    );
    // `drover plugin check` flags a metric named like a host column, as the run would.
    let report = faulty.check(r#"{"fail": "host_metric_in_loss"}"#, &opts);
    assert_eq!(report.failures().next().map(|c| c.name), Some("loss_finite"), "{report}");
    assert!(
        report.to_string().contains("call `loss`: metric `lr` has the name of a column the host writes itself"),
        "{report}"
    );
    let report = faulty.check(r#"{"fail": "panic_in_advantages"}"#, &opts);
    let text = report.to_string();
    assert!(
        text.contains("panic: faulty plugin: deliberate panic in compute_advantages (at ")
            && text.contains(") (call `compute_advantages`)") && text.contains("faulty/src/lib.rs:"),
        "{report}"
    );
    assert!(
        text.contains("advantages_deterministic     not run: needs a `compute_advantages`"),
        "{report}"
    );
    // Review finding: `on_epoch_end` and `keep_group` were never called by the harness, so a
    // plugin panicking there passed every check and failed every run.
    // (`faulty`'s loss is no real loss: compared with its checks when it fails nowhere.)
    let usual = faulty.check(r#"{"fail": "none"}"#, &opts);
    let usual: Vec<&str> = usual.failures().map(|c| c.name).collect();
    for (fail, check, call) in [
        ("panic_in_epoch_end", "epoch_hook", "on_epoch_end"),
        ("panic_in_keep_group", "group_filter", "keep_group"),
    ] {
        let report = faulty.check(&format!(r#"{{"fail": "{fail}"}}"#), &opts);
        let failed: Vec<&str> = report.failures().map(|c| c.name).filter(|n| !usual.contains(n)).collect();
        assert_eq!(failed, [check], "{report}");
        let text = report.to_string();
        assert!(
            text.contains(&format!("panic: faulty plugin: deliberate panic in {call} (at "))
                && text.contains(&format!(") (call `{call}`)")),
            "{report}"
        );
    }
    // The sequence loss, through the ABI, on whole sequences: a plugin that has it is called.
    let report = load("drover-test-plugin-sequence").check("{}", &opts);
    let sequence = report.checks.iter().find(|c| c.name == "sequence_loss_finite").expect("listed");
    assert!(sequence.passed && sequence.detail.contains("whole sequences ("), "{report}");
    // A refusal in `new` reads as the plugin wrote it, its kind printed once.
    let report = faulty.check(r#"{"fail": "sometimes"}"#, &opts);
    let text = report.to_string();
    assert!(
        text.contains("creating the first instance failed: invalid params: key `fail`: unknown failure mode `sometimes`"),
        "{report}"
    );
    // Each check that ran says the kind once; the others say they could not run.
    for line in text.lines().filter(|l| l.starts_with("FAIL")) {
        let kind = line.matches("invalid params").count();
        assert!(kind == 1 || (kind == 0 && line.contains("not run: needs")), "{line}\n{report}");
    }
}

/// Interface 1.3's minibatch context through the host: CHORD tells expert from on-policy
/// sequences in its loss only by each minibatch sequence's rollout index, which the host sends
/// right before the loss call. Four responses to one prompt, the last an expert; at μ = 1 the
/// loss is SFT-φ on expert tokens alone: ∂/∂logp = −μ·½·p(1−p) = −0.125 at p = ½ over the two
/// expert tokens, 0 on the others.
#[test]
fn chord_finds_its_expert_sequences_through_the_minibatch_context() {
    let plugin = load("drover-plugin-chord");
    assert!(plugin
        .extension::<v1_3::MinibatchContext>()
        .expect("layouts match")
        .is_some());
    let mut alg = plugin
        .instantiate(r#"{"mu_peak": 1.0, "mu_valley": 1.0}"#, 0)
        .expect("instantiate");
    assert!(alg.takes_minibatch_context());
    let mask = [1.0f32; 8];
    let rewards = [0., 1., 0., 0., 0., 0., 0., 1.];
    let is_expert = [0.0f32, 0.0, 0.0, 1.0];
    let metadata = [("is_expert", &is_expert[..])];
    let batch = RolloutBatch {
        num_sequences: 4,
        seq_len: 2,
        mask: &mask,
        rewards: &rewards,
        group_ids: &[0, 0, 0, 0],
        metadata: &metadata,
        ..RolloutBatch::default()
    };
    let (mut adv, mut ret) = ([0.0f32; 8], [0.0f32; 8]);
    alg.compute_advantages(&batch, &mut adv, &mut ret)
        .expect("advantages");
    assert_eq!(ret, adv, "`returns` are GRPO's again, not expert flags");

    // Two minibatch sequences of two tokens, at p = ½.
    let half = [0.5f32.ln(); 4];
    let zeros = [0.0f32; 4];
    let minibatch = |context: Option<MinibatchContext<'static>>| LossBatch {
        logp_new: &half,
        logp_old: &half,
        logp_ref: &[],
        advantages: &zeros,
        returns: &zeros,
        values_new: &[],
        values_old: &[],
        entropy_new: &zeros,
        token_weights: &[1.0; 4],
        seq_index: &[0, 0, 1, 1],
        num_sequences: 2,
        seq_group_ids: &[],
        seed: 0,
        context,
    };
    let at = |rollout_index: &'static [u32]| {
        Some(MinibatchContext {
            rollout_index,
            rollout_sequences: 4,
            iteration: 1,
            epoch: 0,
            minibatch: 0,
        })
    };
    let mut outs = ([0.0f32; 4], [0.0f32; 4], [0.0f32; 4], [0.0f32; 4]);
    for (index, expected) in [
        (&[3u32, 0][..], [-0.125, -0.125, 0.0, 0.0]),
        (&[0, 3][..], [0.0, 0.0, -0.125, -0.125]),
        (&[1, 2][..], [0.0; 4]),
    ] {
        alg.loss(&minibatch(at(index)), &mut outs.0, &mut outs.1, &mut outs.2, &mut outs.3)
            .expect("loss");
        assert!(close(&outs.1, &expected), "rollout_index {index:?}: {:?}", outs.1);
    }

    // A context applies to one loss call: without one (an older host) CHORD says what it needs.
    let e = alg
        .loss(&minibatch(None), &mut outs.0, &mut outs.1, &mut outs.2, &mut outs.3)
        .expect_err("no context");
    let text = e.to_string();
    assert!(
        text.starts_with("plugin `chord` 0.1.0: call `loss`: ")
            && text.contains("chord needs a drover host with interface 1.3"),
        "{text}"
    );
    // An inconsistent context is the host's bug, refused before anything reaches the plugin.
    let e = alg
        .loss(&minibatch(at(&[3, 3])), &mut outs.0, &mut outs.1, &mut outs.2, &mut outs.3)
        .expect_err("repeated index");
    assert!(matches!(e.kind, CallErrorKind::InvalidBatch(_)), "{e}");
    assert!(e.to_string().contains("names rollout sequence 3 twice"), "{e}");
    // A fresh instance has recorded nothing to look up.
    let mut fresh = plugin
        .instantiate(r#"{"mu_peak": 1.0, "mu_valley": 1.0}"#, 0)
        .expect("instantiate");
    let e = fresh
        .loss(&minibatch(at(&[3, 0])), &mut outs.0, &mut outs.1, &mut outs.2, &mut outs.3)
        .expect_err("before the advantage stage");
    assert!(e.to_string().contains("call `loss`"), "{e}");
    assert!(e.to_string().contains("compute_advantages"), "{e}");

    // PF-PPO, the other plugin that looks up per-sequence records, passes the authors'
    // harness through the ABI, its rollout-index renumbering check included.
    let report = load("drover-plugin-pf-ppo").check("{}", &drover_plugin_host::CheckOptions::default());
    report.assert_passed();
    assert!(
        report.checks.iter().any(|c| c.name == "loss_sequence_numbering"),
        "{report}"
    );
}
