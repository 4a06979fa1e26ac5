//! Tests of `__NAME__`: a hand-computed case per stage, and drover's plugin harness
//! (`drover_plugin_api::testing`), the same checks `drover plugin check` runs on the `.so`.

use drover_plugin_api::{testing, AlgorithmImpl, LossOutputs, Minibatch, Params, Rollout};

use super::*;

fn make(json: &str) -> Reinforce {
    let params = Params::parse(&Reinforce::info().params, json).expect("valid params");
    Reinforce::new(&params, 0).expect("instance")
}

/// γ = 0.5. Sequence 0 terminates after t=1, then is cut by the rollout's end after t=3
/// (bootstrap V = 2); sequence 1 is truncated after t=0 (bootstrap V = 4), then padded at t=3.
#[test]
fn returns_by_hand() {
    let mut alg = make(r#"{"gamma": 0.5}"#);
    let mask = [1., 1., 1., 1., 1., 1., 1., 0.];
    let rewards = [1., 2., 1., 1., 1., 1., 1., 9.];
    let values = [0., 0., 0., 0., 1., 0., 0., 9.];
    let next_values = [7., 0., 7., 2., 4., 7., 6., 9.];
    let terminated = [0., 1., 0., 0., 0., 0., 0., 0.];
    let truncated = [0., 0., 0., 0., 1., 0., 0., 0.];
    let mut batch = Rollout::new(2, 4);
    batch.mask = &mask;
    batch.rewards = &rewards;
    batch.values = &values;
    batch.next_values = &next_values;
    batch.terminated = &terminated;
    batch.truncated = &truncated;
    let (mut adv, mut ret) = ([0.0f32; 8], [0.0f32; 8]);
    AlgorithmImpl::compute_advantages(&mut alg, &batch, &mut adv, &mut ret).expect("runs");
    // G3 = 1 + .5·2 = 2; G2 = 1 + .5·2 = 2; G1 = 2 (terminated); G0 = 1 + .5·2 = 2.
    // G4 = 1 + .5·4 = 3 (truncated); G6 = 1 + .5·6 = 4 (cut by padding); G5 = 1 + .5·4 = 3.
    assert_eq!(ret, [2., 2., 2., 2., 3., 3., 4., 0.]);
    assert_eq!(adv, [2., 2., 2., 2., 2., 3., 4., 0.]);
}

#[test]
fn loss_by_hand_without_normalization() {
    let mut alg = make(r#"{"norm_adv": false, "vf_coef": 1.0, "ent_coef": 0.1}"#);
    let logp = [-1.0f32, -2.0, 5.0];
    let zeros = [0.0f32; 3];
    let advantages = [2.0f32, -1.0, 100.0];
    let returns = [1.0f32, 0.0, 0.0];
    let values = [0.5f32, 1.0, 0.0];
    let entropy = [0.5f32, 0.5, 0.5];
    let mut mb = Minibatch::new();
    mb.logp_new = &logp;
    mb.logp_old = &zeros;
    mb.advantages = &advantages;
    mb.returns = &returns;
    mb.values_new = &values;
    mb.entropy_new = &entropy;
    mb.token_weights = &[1.0, 1.0, 0.0];
    mb.seq_index = &[0, 0, 0];
    mb.num_sequences = 1;
    let (mut loss, mut d_logp, mut d_value, mut d_entropy) =
        ([0.0f32; 3], [0.0; 3], [0.0; 3], [0.0; 3]);
    let mut out = LossOutputs {
        loss: &mut loss,
        d_logp: &mut d_logp,
        d_value: &mut d_value,
        d_entropy: &mut d_entropy,
    };
    AlgorithmImpl::loss(&mut alg, &mb, &mut out).expect("runs");
    // w = ½ for the two valid tokens; the third has weight 0.
    assert_eq!(d_logp, [-1.0, 0.5, 0.0]);
    assert_eq!(d_value, [-0.25, 0.5, 0.0]);
    assert_eq!(d_entropy, [-0.05, -0.05, 0.0]);
    // ½·(2 + 0.125 − 0.05) and ½·(−2 + 0.5 − 0.05)
    assert!(
        (loss[0] - 1.0375).abs() < 1e-6 && (loss[1] + 0.775).abs() < 1e-6,
        "{loss:?}"
    );
}

/// drover's harness: finite differences of the loss derivatives, finite outputs, determinism
/// for a fixed seed, and invariance to padding. `drover plugin check` runs the same on the `.so`.
#[test]
fn passes_drovers_plugin_harness() {
    testing::check_algorithm::<Reinforce>("{}").assert_passed();
    testing::check_algorithm::<Reinforce>(r#"{"norm_adv": false, "gamma": 0.9}"#).assert_passed();
    // The 1.3 examples switched on: `loss_sequence_numbering` checks the rollout-index lookup,
    // `state_round_trip` the checkpointed running estimate.
    let both = r#"{"cut_sequence_weight": 0.25, "return_scale_decay": 0.9, "norm_adv": false}"#;
    testing::check_algorithm::<Reinforce>(both).assert_passed();
}

/// Two sequences, the first cut by the rollout's end, the second terminated.
fn two_sequence_rollout_advantages(alg: &mut Reinforce) {
    let mask = [1.0f32; 4];
    let ones = [1.0f32; 4];
    let zeros = [0.0f32; 4];
    let terminated = [0., 0., 0., 1.];
    let mut batch = Rollout::new(2, 2);
    batch.mask = &mask;
    batch.rewards = &ones;
    batch.values = &zeros;
    batch.next_values = &zeros;
    batch.terminated = &terminated;
    batch.truncated = &zeros;
    testing::run_advantages(alg, &batch).expect("advantage stage");
}

/// The loss finds each minibatch sequence's record by its rollout index: here minibatch
/// sequence 0 is rollout sequence 1 (terminated, weight 1) and sequence 1 is rollout
/// sequence 0 (cut, weight ¼). A lookup by `seq_index` would swap the weights.
#[test]
fn per_sequence_records_follow_the_rollout_index() {
    let mut alg = make(
        r#"{"norm_adv": false, "cut_sequence_weight": 0.25, "vf_coef": 0.0, "ent_coef": 0.0}"#,
    );
    two_sequence_rollout_advantages(&mut alg);
    let (logp, zeros) = ([-1.0f32, -1.0], [0.0f32; 2]);
    let mut mb = Minibatch::new();
    mb.logp_new = &logp;
    mb.logp_old = &zeros;
    mb.advantages = &[1.0, 1.0];
    mb.returns = &zeros;
    mb.values_new = &zeros;
    mb.entropy_new = &zeros;
    mb.token_weights = &[1.0, 1.0];
    mb.seq_index = &[0, 1];
    mb.num_sequences = 2;
    mb.rollout_index = Some(&[1, 0]);
    let (out, _) = testing::run_loss(&mut alg, &mb).expect("loss");
    // w = ½ per token; d_logp = −w·weight·A.
    assert_eq!(out.d_logp, [-0.5, -0.125]);

    // A host older than 1.3 sends no rollout index: a clear error, not a wrong lookup.
    mb.rollout_index = None;
    let mut outs = testing::LossBuffers::zeros(2);
    let e = AlgorithmImpl::loss(&mut alg, &mb, &mut outs.outputs()).expect_err("no rollout index");
    assert!(
        e.to_string()
            .contains("needs a drover host with interface 1.3"),
        "{e}"
    );
}

/// The running estimate survives a checkpoint bit for bit, and foreign or impossible states
/// are refused without touching the instance.
#[test]
fn return_scale_is_checkpointed_plugin_state() {
    let params = r#"{"return_scale_decay": 0.5}"#;
    let mut alg = make(params);
    two_sequence_rollout_advantages(&mut alg);
    two_sequence_rollout_advantages(&mut alg);
    let saved = alg.save_state().expect("save");
    let mut resumed = make(params);
    resumed.load_state(&saved).expect("load");
    assert_eq!(
        resumed.return_sq().map(f64::to_bits),
        alg.return_sq().map(f64::to_bits)
    );
    assert!(alg.return_sq().is_some());

    let mut fresh = make(params);
    let other =
        drover_plugin_api::state::to_json("other_algo", 1, &Some(1.0f64.to_bits())).expect("bytes");
    let e = fresh
        .load_state(&other)
        .expect_err("another plugin's state");
    assert!(e.to_string().contains("__NAME__"), "{e}");
    let negative = drover_plugin_api::state::to_json("__NAME__", 1, &Some((-1.0f64).to_bits()))
        .expect("bytes");
    let e = fresh
        .load_state(&negative)
        .expect_err("a negative mean square");
    assert!(
        e.to_string().contains("expected a finite number >= 0"),
        "{e}"
    );
    assert_eq!(fresh.return_sq(), None, "a refused state changes nothing");
}

#[test]
fn bad_params_name_the_key() {
    let e =
        Params::parse(&Reinforce::info().params, r#"{"gamma": 2.0}"#).expect_err("out of range");
    assert_eq!(e.key(), Some("gamma"));
}

/// `cut_sequence_weight` is a whole sequence's: a CartPole row whose first episode terminates
/// at t=1 and whose second is cut by the rollout's end weighs all its tokens, those of the
/// finished episode too (the loss sees no step index to tell them apart), as documented.
#[test]
fn the_cut_sequence_weight_applies_to_the_whole_row() {
    let mut alg = make(r#"{"norm_adv": false, "cut_sequence_weight": 0.25, "vf_coef": 0.0, "ent_coef": 0.0}"#);
    let (mask, ones, zeros) = ([1.0f32; 4], [1.0f32; 4], [0.0f32; 4]);
    let terminated = [0., 1., 0., 0.];
    let mut batch = Rollout::new(1, 4);
    batch.mask = &mask;
    batch.rewards = &ones;
    batch.values = &zeros;
    batch.next_values = &zeros;
    batch.terminated = &terminated;
    batch.truncated = &zeros;
    testing::run_advantages(&mut alg, &batch).expect("advantage stage");
    let (logp, zeros) = ([-1.0f32, -1.0], [0.0f32; 2]);
    let mut mb = Minibatch::new();
    mb.logp_new = &logp;
    mb.logp_old = &zeros;
    mb.advantages = &[1.0, 1.0];
    mb.returns = &zeros;
    mb.values_new = &zeros;
    mb.entropy_new = &zeros;
    mb.token_weights = &[1.0, 1.0];
    mb.seq_index = &[0, 0];
    mb.num_sequences = 1;
    mb.rollout_index = Some(&[0]);
    let (out, _) = testing::run_loss(&mut alg, &mb).expect("loss");
    // A token of the terminated episode and one of the cut one: w = ½, both scaled by ¼.
    assert_eq!(out.d_logp, [-0.125, -0.125]);
}
