//! The test harness for plugin authors (feature `testing`): finite-difference checks of the
//! loss derivatives, finiteness, determinism and padding invariance, on synthetic batches.
//!
//! Call [`check_algorithm`] from your plugin's own `cargo test`:
//!
//! ```
//! # use drover_plugin_api::*;
//! # struct MyAlgo;
//! # impl AlgorithmImpl for MyAlgo {
//! #     fn info() -> PluginInfo { PluginInfo::new("my_algo", "0.1.0", "doc example") }
//! #     fn new(_: &Params, _: u64) -> Result<Self, PluginError> { Ok(Self) }
//! #     fn compute_advantages(&mut self, b: &Rollout<'_>, adv: &mut [f32], ret: &mut [f32])
//! #         -> Result<Vec<Metric>, PluginError> {
//! #         for i in 0..adv.len() { adv[i] = b.rewards[i] * b.mask[i]; ret[i] = adv[i]; }
//! #         Ok(vec![])
//! #     }
//! #     fn loss(&mut self, mb: &Minibatch<'_>, out: &mut LossOutputs<'_>)
//! #         -> Result<Vec<Metric>, PluginError> {
//! #         for i in 0..mb.len() {
//! #             let w = mb.token_weights[i];
//! #             out.loss[i] = -w * mb.advantages[i] * mb.logp_new[i];
//! #             out.d_logp[i] = -w * mb.advantages[i];
//! #         }
//! #         Ok(vec![])
//! #     }
//! # }
//! let report = drover_plugin_api::testing::check_algorithm::<MyAlgo>("{}");
//! report.assert_passed(); // panics listing every failed check
//! ```
//!
//! `drover plugin check <file.so>` runs the very same checks ([`run_checks`]) on a built
//! library, through the ABI, so what passes here passes there.
//!
//! For a plugin's own hand-computed tests it also has the scaffolding every plugin would
//! otherwise write again: [`instance`] (params JSON → instance), [`run_loss`] and
//! [`run_advantages`] (owned outputs, host-like calls), [`with_loss_outputs`] (for a loss
//! function tested directly), [`metric`], [`outcome_rollout`] and [`RandomMinibatch`] (the
//! inputs of a finite-difference test).

use std::fmt;

use crate::{
    authoring::{AlgorithmImpl, LossOutputs, Minibatch, MinibatchPosition, Rollout},
    error::PluginError,
    params::Params,
    rng::CounterRng,
    types::{IterationControl, IterationInfo, Metric, NextPrompts, PluginInfo},
};

/// An algorithm instance under test: in-process (every [`AlgorithmImpl`] is one) or a loaded
/// library behind the host's guard (`drover-plugin-host` implements it for its handle).
pub trait Subject {
    /// As [`AlgorithmImpl::compute_advantages`]; outputs are `B·T` long.
    ///
    /// # Errors
    /// Whatever the algorithm reports (a caught panic is a `Panic` error).
    fn compute_advantages(
        &mut self,
        batch: &Rollout<'_>,
        advantages: &mut [f32],
        returns: &mut [f32],
    ) -> Result<Vec<Metric>, PluginError>;

    /// As [`AlgorithmImpl::loss`]; outputs are `M` long.
    ///
    /// # Errors
    /// Whatever the algorithm reports (a caught panic is a `Panic` error).
    fn loss(
        &mut self,
        mb: &Minibatch<'_>,
        out: &mut LossOutputs<'_>,
    ) -> Result<Vec<Metric>, PluginError>;

    /// As [`AlgorithmImpl::on_iteration`]. The default, for a subject without the hook,
    /// asks for nothing.
    ///
    /// # Errors
    /// Whatever the algorithm reports (a caught panic is a `Panic` error).
    fn on_iteration(&mut self, info: &IterationInfo<'_>) -> Result<IterationControl, PluginError> {
        let _ = info;
        Ok(IterationControl::default())
    }

    /// As [`AlgorithmImpl::on_epoch_end`]. The default, for a subject without the hook, goes
    /// on with the next epoch.
    ///
    /// # Errors
    /// Whatever the algorithm reports (a caught panic is a `Panic` error).
    fn on_epoch_end(&mut self, epoch: u32, metrics: &[Metric]) -> Result<bool, PluginError> {
        let _ = (epoch, metrics);
        Ok(true)
    }

    /// As [`AlgorithmImpl::keep_group`]. The default, for a subject without the hook, keeps
    /// every group.
    ///
    /// # Errors
    /// Whatever the algorithm reports (a caught panic is a `Panic` error).
    fn keep_group(&self, rewards: &[f32]) -> Result<bool, PluginError> {
        let _ = rewards;
        Ok(true)
    }

    /// The interface 1.1 sequence loss ([`AlgorithmImpl::SEQUENCE_LOSS`]) as the host calls it
    /// on a minibatch of whole sequences: the host computes each sequence's log-ratio
    /// `Δ_s = Σ_{t: weight > 0} (logp_new − logp_old)`, the plugin writes `seq_loss[s]` and
    /// `∂(Σ loss)/∂Δ_s`, and the host spreads the latter onto `d_logp` of the sequence's
    /// weighted tokens (0 elsewhere). `seq_loss` is `num_sequences` long, `d_logp` `M` long.
    /// `None` when the subject does not provide it (the default).
    fn sequence_loss(
        &mut self,
        mb: &Minibatch<'_>,
        seq_loss: &mut [f32],
        d_logp: &mut [f32],
    ) -> Option<Result<Vec<Metric>, PluginError>> {
        let _ = (mb, seq_loss, d_logp);
        None
    }

    /// As the interface 1.3 `save_state` ([`AlgorithmImpl::PLUGIN_STATE`]); `None` when the
    /// subject does not provide it (the default).
    fn save_state(&mut self) -> Option<Result<Vec<u8>, PluginError>> {
        None
    }

    /// As the interface 1.3 `load_state`; `None` when the subject does not provide it.
    fn load_state(&mut self, bytes: &[u8]) -> Option<Result<(), PluginError>> {
        let _ = bytes;
        None
    }
}

fn panic_to_error<R>(f: impl FnOnce() -> Result<R, PluginError>) -> Result<R, PluginError> {
    crate::authoring::catch_panic(f).and_then(|r| r)
}

impl<T: AlgorithmImpl> Subject for T {
    fn compute_advantages(
        &mut self,
        batch: &Rollout<'_>,
        advantages: &mut [f32],
        returns: &mut [f32],
    ) -> Result<Vec<Metric>, PluginError> {
        // Same contract as the export adapter: checked input, zeroed outputs.
        batch.check()?;
        advantages.fill(0.0);
        returns.fill(0.0);
        panic_to_error(|| AlgorithmImpl::compute_advantages(self, batch, advantages, returns))
    }

    fn loss(
        &mut self,
        mb: &Minibatch<'_>,
        out: &mut LossOutputs<'_>,
    ) -> Result<Vec<Metric>, PluginError> {
        mb.check()?;
        for buf in [
            &mut *out.loss,
            &mut *out.d_logp,
            &mut *out.d_value,
            &mut *out.d_entropy,
        ] {
            buf.fill(0.0);
        }
        panic_to_error(|| AlgorithmImpl::loss(self, mb, out))
    }

    fn on_iteration(&mut self, info: &IterationInfo<'_>) -> Result<IterationControl, PluginError> {
        panic_to_error(|| AlgorithmImpl::on_iteration(self, info))
    }

    fn on_epoch_end(&mut self, epoch: u32, metrics: &[Metric]) -> Result<bool, PluginError> {
        panic_to_error(|| AlgorithmImpl::on_epoch_end(self, epoch, metrics))
    }

    fn keep_group(&self, rewards: &[f32]) -> Result<bool, PluginError> {
        panic_to_error(|| AlgorithmImpl::keep_group(self, rewards))
    }

    fn sequence_loss(
        &mut self,
        mb: &Minibatch<'_>,
        seq_loss: &mut [f32],
        d_logp: &mut [f32],
    ) -> Option<Result<Vec<Metric>, PluginError>> {
        let f = T::SEQUENCE_LOSS?;
        Some(sequence_loss_as_the_host_calls_it(mb, seq_loss, d_logp, |mb, log_ratio, loss, d| {
            panic_to_error(|| f(self, mb, log_ratio, loss, d))
        }))
    }

    fn save_state(&mut self) -> Option<Result<Vec<u8>, PluginError>> {
        let f = T::PLUGIN_STATE?;
        Some(panic_to_error(|| (f.save)(self)))
    }

    fn load_state(&mut self, bytes: &[u8]) -> Option<Result<(), PluginError>> {
        let f = T::PLUGIN_STATE?;
        Some(panic_to_error(|| (f.load)(self, bytes)))
    }
}

/// What `drover-plugin-host`'s `AlgorithmHandle::sequence_loss` does around the plugin's
/// function `f`, for an in-process [`Subject`]: checked input and output lengths, the
/// log-ratios, zeroed outputs, a non-finite `∂/∂Δ_s` refused, and the chain rule into `d_logp`.
fn sequence_loss_as_the_host_calls_it(
    mb: &Minibatch<'_>,
    seq_loss: &mut [f32],
    d_logp: &mut [f32],
    f: impl FnOnce(&Minibatch<'_>, &[f32], &mut [f32], &mut [f32]) -> Result<Vec<Metric>, PluginError>,
) -> Result<Vec<Metric>, PluginError> {
    mb.check()?;
    let (m, s) = (mb.len(), mb.num_sequences);
    if seq_loss.len() != s || d_logp.len() != m {
        return Err(PluginError::invalid_input(format!(
            "sequence loss outputs of {} and {} values for {s} sequences and {m} tokens",
            seq_loss.len(),
            d_logp.len()
        )));
    }
    let weighted = |i: usize| mb.token_weights[i] > 0.0;
    let mut log_ratio = vec![0.0f32; s];
    for i in (0..m).filter(|&i| weighted(i)) {
        log_ratio[mb.seq_index[i] as usize] += mb.logp_new[i] - mb.logp_old[i];
    }
    seq_loss.fill(0.0);
    let mut d_log_ratio = vec![0.0f32; s];
    let metrics = f(mb, &log_ratio, seq_loss, &mut d_log_ratio)?;
    first_non_finite(&[("d_log_ratio", &d_log_ratio)]).map_err(PluginError::numerical)?;
    for (i, d) in d_logp.iter_mut().enumerate() {
        *d = if weighted(i) { d_log_ratio[mb.seq_index[i] as usize] } else { 0.0 };
    }
    Ok(metrics)
}

/// Which input a derivative is taken with respect to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wrt {
    /// `logp_new`, checked against `d_logp`.
    LogpNew,
    /// `values_new`, checked against `d_value`.
    ValuesNew,
    /// `entropy_new`, checked against `d_entropy`.
    EntropyNew,
}

/// A derivative that disagrees with its finite-difference estimate.
#[derive(Debug, Clone, PartialEq)]
pub struct Mismatch {
    /// The input perturbed.
    pub wrt: Wrt,
    /// The token.
    pub index: usize,
    /// What `loss` reported.
    pub analytic: f64,
    /// Central difference of `Σ loss`.
    pub numeric: f64,
}

/// Outcome of [`check_loss_derivatives`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FdReport {
    /// Derivatives compared.
    pub checked: usize,
    /// Derivatives skipped because `Σ loss` has a kink within `h` (the one-sided slopes differ
    /// by more than half their size, e.g. at a clip boundary).
    pub skipped_kinks: usize,
    /// Disagreements.
    pub mismatches: Vec<Mismatch>,
}

/// The four loss outputs of one call, owned: what [`run_loss`] and [`with_loss_outputs`] give
/// back.
#[derive(Debug, Clone, PartialEq)]
pub struct LossBuffers {
    /// Per-token loss.
    pub loss: Vec<f32>,
    /// `∂Σloss/∂logp_new`.
    pub d_logp: Vec<f32>,
    /// `∂Σloss/∂values_new`.
    pub d_value: Vec<f32>,
    /// `∂Σloss/∂entropy_new`.
    pub d_entropy: Vec<f32>,
}

impl LossBuffers {
    /// `m` zeros in each output.
    pub fn zeros(m: usize) -> Self {
        Self {
            loss: vec![0.0; m],
            d_logp: vec![0.0; m],
            d_value: vec![0.0; m],
            d_entropy: vec![0.0; m],
        }
    }

    /// The [`LossOutputs`] a loss writes into, borrowing these buffers.
    pub fn outputs(&mut self) -> LossOutputs<'_> {
        LossOutputs {
            loss: &mut self.loss,
            d_logp: &mut self.d_logp,
            d_value: &mut self.d_value,
            d_entropy: &mut self.d_entropy,
        }
    }

    fn named(&self) -> [(&'static str, &[f32]); 4] {
        [
            ("loss", &self.loss),
            ("d_logp", &self.d_logp),
            ("d_value", &self.d_value),
            ("d_entropy", &self.d_entropy),
        ]
    }
}

/// Runs `f` on zeroed outputs for `m` tokens and returns them with what `f` returned: for
/// testing a loss function directly, without an [`AlgorithmImpl`] around it.
pub fn with_loss_outputs<R>(
    m: usize,
    f: impl FnOnce(&mut LossOutputs<'_>) -> R,
) -> (LossBuffers, R) {
    let mut bufs = LossBuffers::zeros(m);
    let r = f(&mut bufs.outputs());
    (bufs, r)
}

/// `alg`'s loss on `mb` as the host calls it (minibatch checked, outputs zeroed, a panic
/// caught as an error), with the outputs owned.
///
/// Like a 1.3 host, it always sends a rollout index: `mb.rollout_index` when set, else the
/// identity (minibatch sequence `s` is rollout sequence `s`). Call [`Subject::loss`] directly
/// to test the behaviour with an older host (`rollout_index: None`).
///
/// # Errors
/// Whatever the check or `loss` reports.
pub fn run_loss<S: Subject + ?Sized>(
    alg: &mut S,
    mb: &Minibatch<'_>,
) -> Result<(LossBuffers, Vec<Metric>), PluginError> {
    let identity: Vec<u32>;
    let mut with_index;
    let mb = if mb.rollout_index.is_some() {
        mb
    } else {
        identity = (0..mb.num_sequences as u32).collect();
        with_index = mb.clone();
        with_index.rollout_index = Some(&identity);
        &with_index
    };
    let (bufs, metrics) = with_loss_outputs(mb.len(), |out| alg.loss(mb, out));
    Ok((bufs, metrics?))
}

/// What [`run_advantages`] returns: advantages, returns and metrics.
pub type AdvantageOutputs = (Vec<f32>, Vec<f32>, Vec<Metric>);

/// `alg`'s advantages on `batch` as the host asks for them (batch checked, outputs zeroed, a
/// panic caught as an error): `(advantages, returns, metrics)`, each buffer `B·T` long.
///
/// # Errors
/// Whatever the check or `compute_advantages` reports.
pub fn run_advantages<S: Subject + ?Sized>(
    alg: &mut S,
    batch: &Rollout<'_>,
) -> Result<AdvantageOutputs, PluginError> {
    let n = batch.num_sequences * batch.seq_len;
    let (mut adv, mut ret) = (vec![0.0; n], vec![0.0; n]);
    let metrics = alg.compute_advantages(batch, &mut adv, &mut ret)?;
    Ok((adv, ret, metrics))
}

/// The value of the metric called `name`, if `metrics` has one.
pub fn metric(metrics: &[Metric], name: &str) -> Option<f64> {
    metrics
        .iter()
        .find(|m| m.name.as_str() == name)
        .map(|m| m.value)
}

/// An instance of `T` made as the host makes one: `params_json` checked against
/// `T::info().params`, then `T::new` with seed 0.
///
/// # Errors
/// The parameter error (naming the key), or `T::new`'s.
pub fn instance<T: AlgorithmImpl>(params_json: &str) -> Result<T, PluginError> {
    seeded_instance(params_json, 0)
}

/// Asserts that each `(params JSON, key)` case is refused when an instance is made, with an
/// error naming that key: the table of bad parameters every plugin's tests check.
#[track_caller]
pub fn assert_params_refused<T: AlgorithmImpl>(cases: &[(&str, &str)]) {
    for &(json, key) in cases {
        match instance::<T>(json) {
            Ok(_) => panic!("{json}: accepted, expected an error naming `{key}`"),
            Err(e) => assert_eq!(e.key(), Some(key), "{json}: {e}"),
        }
    }
}

/// As [`instance`], with `seed` for `T::new`.
///
/// # Errors
/// The parameter error (naming the key), or `T::new`'s.
pub fn seeded_instance<T: AlgorithmImpl>(params_json: &str, seed: u64) -> Result<T, PluginError> {
    let params = Params::parse(&T::info().params, params_json)?;
    T::new(&params, seed)
}

/// An outcome-reward rollout: one sequence per entry of `group_ids`, `seq_len` steps each,
/// `mask` and `rewards` `B·T` long; set any other input on the result.
pub fn outcome_rollout<'a>(
    seq_len: usize,
    mask: &'a [f32],
    rewards: &'a [f32],
    group_ids: &'a [u32],
) -> Rollout<'a> {
    let mut batch = Rollout::new(group_ids.len(), seq_len);
    batch.mask = mask;
    batch.rewards = rewards;
    batch.group_ids = group_ids;
    batch
}

/// Owned inputs of a random minibatch for a loss's finite-difference tests: `num_sequences`
/// sequences of `seq_len` tokens one after the other, the last `padding` tokens of each with
/// weight 0. The builder methods draw from `CounterRng::new(seed)` in the order they are
/// called, so a test's numbers depend only on the seed and that order; an input not drawn
/// stays empty.
///
/// ```
/// # use drover_plugin_api::testing::RandomMinibatch;
/// let data = RandomMinibatch::new(11, 2, 8, 1)
///     .logp(0.6)
///     .advantages_per_sequence(&[1.0, -0.5])
///     .entropy();
/// let mb = data.view();
/// assert_eq!((mb.len(), mb.token_weights[7], mb.seq_index[8]), (16, 0.0, 1));
/// ```
#[derive(Debug, Clone)]
pub struct RandomMinibatch {
    /// New log-probs.
    pub logp_new: Vec<f32>,
    /// Old log-probs, uniform in `[−3, −0.1)`.
    pub logp_old: Vec<f32>,
    /// Reference log-probs.
    pub logp_ref: Vec<f32>,
    /// Advantages.
    pub advantages: Vec<f32>,
    /// New-policy entropies.
    pub entropy_new: Vec<f32>,
    /// 1, and 0 on each sequence's last `padding` tokens.
    pub token_weights: Vec<f32>,
    /// Token `i` belongs to sequence `i / seq_len`.
    pub seq_index: Vec<u32>,
    /// Sequences.
    pub num_sequences: usize,
    /// Rollout index of each sequence (interface 1.3): the identity, `0..num_sequences`, until
    /// a test sets another (distinct entries below `rollout_sequences`).
    pub rollout_index: Vec<u32>,
    /// Sequences of the rollout batch `rollout_index` points into: `num_sequences`.
    pub rollout_sequences: usize,
    seq_len: usize,
    rng: CounterRng,
}

impl RandomMinibatch {
    /// The shape (weights and sequence indices) and the generator; every input empty.
    pub fn new(seed: u64, num_sequences: usize, seq_len: usize, padding: usize) -> Self {
        let m = num_sequences * seq_len;
        Self {
            logp_new: Vec::new(),
            logp_old: Vec::new(),
            logp_ref: Vec::new(),
            advantages: Vec::new(),
            entropy_new: Vec::new(),
            token_weights: (0..m)
                .map(|i| {
                    if i % seq_len + padding >= seq_len {
                        0.0
                    } else {
                        1.0
                    }
                })
                .collect(),
            seq_index: (0..m as u32).map(|i| i / seq_len as u32).collect(),
            num_sequences,
            rollout_index: (0..num_sequences as u32).collect(),
            rollout_sequences: num_sequences,
            seq_len,
            rng: CounterRng::new(seed),
        }
    }

    /// `M`, the number of tokens.
    pub fn len(&self) -> usize {
        self.token_weights.len()
    }

    /// Whether there is no token.
    pub fn is_empty(&self) -> bool {
        self.token_weights.is_empty()
    }

    /// The next draw, uniform in `[lo, hi)`.
    pub fn draw(&mut self, lo: f64, hi: f64) -> f32 {
        (lo + (hi - lo) * self.rng.next_f64()) as f32
    }

    fn draws(&mut self, lo: f64, hi: f64) -> Vec<f32> {
        (0..self.len()).map(|_| self.draw(lo, hi)).collect()
    }

    /// `logp_old` uniform in `[−3, −0.1)`, then `logp_new = logp_old + shift` with `shift`
    /// uniform in `[−max_shift, max_shift)`, token by token.
    pub fn logp(self, max_shift: f64) -> Self {
        self.logp_with(|d| d.draw(-max_shift, max_shift))
    }

    /// As [`RandomMinibatch::logp`], with each token's shift from `logp_old` drawn by `shift`.
    pub fn logp_with(mut self, mut shift: impl FnMut(&mut Self) -> f32) -> Self {
        self.logp_old = self.draws(-3.0, -0.1);
        self.logp_new = (0..self.len())
            .map(|i| self.logp_old[i] + shift(&mut self))
            .collect();
        self
    }

    /// `logp_ref = logp_old + shift`, `shift` uniform in `[−max_shift, max_shift)`.
    pub fn reference(mut self, max_shift: f64) -> Self {
        self.logp_ref = (0..self.len())
            .map(|i| self.logp_old[i] + self.draw(-max_shift, max_shift))
            .collect();
        self
    }

    /// Sequence `s`'s advantage is `per_sequence[s]` on each of its tokens (draws nothing).
    ///
    /// # Panics
    /// When `per_sequence` does not have one entry per sequence.
    pub fn advantages_per_sequence(mut self, per_sequence: &[f32]) -> Self {
        assert_eq!(
            per_sequence.len(),
            self.num_sequences,
            "one advantage per sequence"
        );
        self.advantages = (0..self.len())
            .map(|i| per_sequence[i / self.seq_len])
            .collect();
        self
    }

    /// Advantages uniform in `[lo, hi)`, token by token.
    pub fn random_advantages(mut self, lo: f64, hi: f64) -> Self {
        self.advantages = self.draws(lo, hi);
        self
    }

    /// Entropies uniform in `[0.1, 2)`.
    pub fn entropy(mut self) -> Self {
        self.entropy_new = self.draws(0.1, 2.0);
        self
    }

    /// The minibatch borrowing these buffers (seed 0; set `seed` on it when the loss draws),
    /// with `rollout_index` and a position (iteration 1, epoch 0, minibatch 0) as a 1.3 host
    /// sends them.
    pub fn view(&self) -> Minibatch<'_> {
        let mut mb = Minibatch::new();
        mb.logp_new = &self.logp_new;
        mb.logp_old = &self.logp_old;
        mb.logp_ref = &self.logp_ref;
        mb.advantages = &self.advantages;
        mb.entropy_new = &self.entropy_new;
        mb.token_weights = &self.token_weights;
        mb.seq_index = &self.seq_index;
        mb.num_sequences = self.num_sequences;
        mb.rollout_index = Some(&self.rollout_index);
        mb.position = Some(first_minibatch(self.rollout_sequences));
        mb
    }
}

fn total<S: Subject + ?Sized>(alg: &mut S, mb: &Minibatch<'_>) -> Result<f64, PluginError> {
    Ok(run_loss(alg, mb)?
        .0
        .loss
        .iter()
        .map(|&x| f64::from(x))
        .sum())
}

/// Compares every derivative `loss` reports on `mb` with a central difference of `Σ loss`,
/// step `h`, tolerance `atol + rtol·|numeric|`. Inputs that `mb` leaves empty are skipped.
///
/// Assumes `loss` is deterministic for a fixed minibatch (it is called many times).
///
/// # Errors
/// Whatever `loss` returns.
pub fn check_loss_derivatives<S: Subject + ?Sized>(
    alg: &mut S,
    mb: &Minibatch<'_>,
    h: f32,
    atol: f64,
    rtol: f64,
) -> Result<FdReport, PluginError> {
    mb.check()?;
    let (base_out, _) = run_loss(alg, mb)?;
    let mut report = FdReport::default();
    for (wrt, analytic) in [
        (Wrt::LogpNew, &base_out.d_logp),
        (Wrt::ValuesNew, &base_out.d_value),
        (Wrt::EntropyNew, &base_out.d_entropy),
    ] {
        let base: Vec<f32> = match wrt {
            Wrt::LogpNew => mb.logp_new,
            Wrt::ValuesNew => mb.values_new,
            Wrt::EntropyNew => mb.entropy_new,
        }
        .to_vec();
        for i in 0..base.len() {
            let mut eval = |delta: f32| -> Result<f64, PluginError> {
                let mut x = base.clone();
                x[i] += delta;
                let mut p = mb.clone();
                match wrt {
                    Wrt::LogpNew => p.logp_new = &x,
                    Wrt::ValuesNew => p.values_new = &x,
                    Wrt::EntropyNew => p.entropy_new = &x,
                }
                total(alg, &p)
            };
            let (plus, zero, minus) = (eval(h)?, eval(0.0)?, eval(-h)?);
            let hh = f64::from(h);
            let (fwd, bwd) = ((plus - zero) / hh, (zero - minus) / hh);
            let numeric = (plus - minus) / (2.0 * hh);
            // A kink (slope jump, e.g. at a clip boundary) makes the one-sided slopes differ by
            // a sizeable fraction of themselves; smooth curvature only by O(h).
            if (fwd - bwd).abs() > 0.5 * fwd.abs().max(bwd.abs()) + 10.0 * atol {
                report.skipped_kinks += 1;
                continue;
            }
            report.checked += 1;
            let a = f64::from(analytic[i]);
            if (a - numeric).abs() > atol + rtol * numeric.abs() {
                report.mismatches.push(Mismatch {
                    wrt,
                    index: i,
                    analytic: a,
                    numeric,
                });
            }
        }
    }
    Ok(report)
}

/// Settings of [`run_checks`]; `Default` is what `drover plugin check` uses (`--experts` sets
/// `experts`).
#[derive(Debug, Clone, PartialEq)]
pub struct CheckOptions {
    /// Seed of the synthetic batches and of the instances.
    pub seed: u64,
    /// Sequences in the synthetic rollout.
    pub num_sequences: usize,
    /// Steps per sequence.
    pub seq_len: usize,
    /// Finite-difference step.
    pub fd_step: f32,
    /// Absolute tolerance of the derivative check.
    pub fd_atol: f64,
    /// Relative tolerance of the derivative check.
    pub fd_rtol: f64,
    /// Whether the synthetic rollouts carry the host's `is_expert` column (every third
    /// sequence a teacher-forced expert response), as the host sends it with
    /// `run.expert_per_group`: for algorithms that learn from expert responses (CHORD) and
    /// refuse a batch without them.
    pub experts: bool,
}

impl Default for CheckOptions {
    fn default() -> Self {
        Self {
            seed: 7,
            num_sequences: 4,
            seq_len: 12,
            fd_step: 1e-3,
            fd_atol: 1e-4,
            fd_rtol: 1e-2,
            experts: false,
        }
    }
}

/// One named check and its outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// Stable name, e.g. `loss_derivatives`.
    pub name: &'static str,
    /// Whether it passed.
    pub passed: bool,
    /// What was checked, or why it failed.
    pub detail: String,
}

/// Every check [`run_checks`] ran, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckReport {
    /// The checks.
    pub checks: Vec<Check>,
}

impl CheckReport {
    /// Whether every check passed.
    pub fn passed(&self) -> bool {
        self.checks.iter().all(|c| c.passed)
    }

    /// The failed checks.
    pub fn failures(&self) -> impl Iterator<Item = &Check> {
        self.checks.iter().filter(|c| !c.passed)
    }

    /// Panics with every failed check when one failed (for `#[test]` functions).
    #[track_caller]
    pub fn assert_passed(&self) {
        assert!(self.passed(), "plugin checks failed:\n{self}");
    }

    fn push(&mut self, name: &'static str, outcome: Result<String, String>) {
        let (passed, detail) = match outcome {
            Ok(d) => (true, d),
            Err(d) => (false, d),
        };
        self.checks.push(Check {
            name,
            passed,
            detail,
        });
    }
}

impl fmt::Display for CheckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in &self.checks {
            let status = if c.passed { "ok  " } else { "FAIL" };
            writeln!(f, "{status} {:<28} {}", c.name, c.detail)?;
        }
        Ok(())
    }
}

/// Runs every check on `T` in-process, with `params_json` (e.g. `"{}"` for the defaults) and
/// [`CheckOptions::default`]: [`params_declared`] on `T::info()`, then [`run_checks`].
pub fn check_algorithm<T: AlgorithmImpl>(params_json: &str) -> CheckReport {
    let mut report = CheckReport::default();
    report.checks.push(match panic_to_error(|| Ok(T::info())) {
        Ok(info) => params_declared(&info),
        Err(e) => Check {
            name: PARAMS_DECLARED,
            passed: false,
            detail: format!("`info` failed: {e}"),
        },
    });
    report.checks.extend(
        run_checks(
            |seed| panic_to_error(|| seeded_instance::<T>(params_json, seed)),
            &CheckOptions::default(),
        )
        .checks,
    );
    report
}

/// Name of the [`params_declared`] check.
pub const PARAMS_DECLARED: &str = "params_declared";

/// The `params_declared` check: the plugin's own parameter declarations are consistent
/// ([`PluginInfo::check_params`]: unique non-empty names, ranges only on numeric kinds with
/// `min <= max`, each default of its kind and inside its range). The host refuses a library
/// that fails it when loading it, so `drover plugin check` reports it as passed or not at all.
pub fn params_declared(info: &PluginInfo) -> Check {
    let (passed, detail) = match info.check_params() {
        Ok(()) => (true, format!("{} params, each default of its kind and inside its range", info.params.len())),
        Err(reason) => (false, format!("plugin `{}` declares its params wrongly: {reason}", info.name)),
    };
    Check { name: PARAMS_DECLARED, passed, detail }
}

/// A synthetic rollout: owned buffers a [`Rollout`] borrows.
#[derive(Debug, Clone)]
struct RolloutData {
    b: usize,
    t: usize,
    mask: Vec<f32>,
    rewards: Vec<f32>,
    terminated: Vec<f32>,
    truncated: Vec<f32>,
    values: Vec<f32>,
    next_values: Vec<f32>,
    logp_old: Vec<f32>,
    entropy_old: Vec<f32>,
    group_ids: Vec<u32>,
    /// The `is_expert` metadata column, one flag per sequence; empty: no column.
    is_expert: Vec<f32>,
    seed: u64,
}

impl RolloutData {
    /// CartPole-like: reward 1 per step, rare terminations and truncations, and the last two
    /// sequences ending early (trailing padding), as the host sends them.
    fn synthetic(b: usize, t: usize, seed: u64) -> Self {
        let mut rng = CounterRng::with_stream(seed, 1);
        let mut u = move |lo: f64, hi: f64| (lo + (hi - lo) * rng.next_f64()) as f32;
        let n = b * t;
        let mut d = Self {
            b,
            t,
            mask: vec![1.0; n],
            rewards: vec![0.0; n],
            terminated: vec![0.0; n],
            truncated: vec![0.0; n],
            values: vec![0.0; n],
            next_values: vec![0.0; n],
            logp_old: vec![0.0; n],
            entropy_old: vec![0.0; n],
            group_ids: (0..b as u32).collect(),
            is_expert: Vec::new(),
            seed,
        };
        for s in 0..b {
            let valid = if s + 2 >= b && t > 3 {
                t - 1 - s % 3
            } else {
                t
            };
            for k in 0..t {
                let i = s * t + k;
                if k >= valid {
                    d.mask[i] = 0.0;
                    continue;
                }
                d.rewards[i] = u(0.0, 1.0);
                d.values[i] = u(-1.0, 1.0);
                d.terminated[i] = if u(0.0, 1.0) < 0.08 { 1.0 } else { 0.0 };
                d.truncated[i] = if d.terminated[i] == 0.0 && u(0.0, 1.0) < 0.04 {
                    1.0
                } else {
                    0.0
                };
                d.next_values[i] = if d.terminated[i] > 0.0 {
                    0.0
                } else {
                    u(-1.0, 1.0)
                };
                d.logp_old[i] = u(-2.0, -0.05);
                d.entropy_old[i] = u(0.1, 0.7);
            }
        }
        d
    }

    /// The same sequences with `extra` more padding steps each, filled with garbage the
    /// algorithm must ignore.
    fn padded(&self, extra: usize) -> Self {
        let t2 = self.t + extra;
        let mut p = Self {
            t: t2,
            mask: vec![0.0; self.b * t2],
            ..self.clone()
        };
        let garbage = |k: usize| 1.0e3 + k as f32;
        for buf in [
            &mut p.rewards,
            &mut p.values,
            &mut p.next_values,
            &mut p.logp_old,
            &mut p.entropy_old,
        ] {
            *buf = (0..self.b * t2).map(garbage).collect();
        }
        p.terminated = vec![1.0; self.b * t2];
        p.truncated = vec![1.0; self.b * t2];
        for s in 0..self.b {
            for k in 0..self.t {
                let (i, j) = (s * self.t + k, s * t2 + k);
                p.mask[j] = self.mask[i];
                if self.mask[i] <= 0.0 {
                    continue; // padding already: keep the garbage
                }
                p.rewards[j] = self.rewards[i];
                p.values[j] = self.values[i];
                p.next_values[j] = self.next_values[i];
                p.logp_old[j] = self.logp_old[i];
                p.entropy_old[j] = self.entropy_old[i];
                p.terminated[j] = self.terminated[i];
                p.truncated[j] = self.truncated[i];
            }
        }
        p
    }

    fn view(&self) -> Rollout<'_> {
        let mut r = Rollout::new(self.b, self.t);
        r.mask = &self.mask;
        r.rewards = &self.rewards;
        r.terminated = &self.terminated;
        r.truncated = &self.truncated;
        r.values = &self.values;
        r.next_values = &self.next_values;
        r.logp_old = &self.logp_old;
        r.entropy_old = &self.entropy_old;
        r.group_ids = &self.group_ids;
        if !self.is_expert.is_empty() {
            r.metadata.push((crate::metadata::IS_EXPERT.to_owned(), &self.is_expert));
        }
        r.seed = self.seed;
        r
    }

    /// Marks every third sequence a teacher-forced expert response, as [`CheckOptions::experts`]
    /// asks.
    fn with_experts(mut self, experts: bool) -> Self {
        if experts {
            self.is_expert = (0..self.b).map(|s| if s % 3 == 2 { 1.0 } else { 0.0 }).collect();
        }
        self
    }
}

/// A synthetic minibatch: owned buffers a [`Minibatch`] borrows.
#[derive(Debug, Clone)]
struct MinibatchData {
    logp_new: Vec<f32>,
    logp_old: Vec<f32>,
    advantages: Vec<f32>,
    returns: Vec<f32>,
    values_new: Vec<f32>,
    values_old: Vec<f32>,
    entropy_new: Vec<f32>,
    token_weights: Vec<f32>,
    seq_index: Vec<u32>,
    num_sequences: usize,
    seq_lengths: Vec<u32>,
    rollout_index: Vec<u32>,
    rollout_sequences: usize,
    seed: u64,
}

impl MinibatchData {
    /// A minibatch of `rollout`'s sequences as a 1.3 host sends one: half of them (at least
    /// one), in a seeded shuffled order, at most `max_tokens` tokens; token `j` of minibatch
    /// sequence `k` is step `j` of rollout sequence `rollout_index[k]`, with that step's
    /// advantage and return when `advantages` (the rollout's, `B·T`) are given, random ones
    /// otherwise. Weight 0 on the rollout's padding and on every seventh token. Probability
    /// ratios stay within e^±0.3, values near their targets.
    fn from_rollout(
        rollout: &RolloutData,
        seed: u64,
        advantages: Option<(&[f32], &[f32])>,
        max_tokens: usize,
    ) -> Self {
        let (b, t) = (rollout.b, rollout.t);
        let mut order: Vec<u32> = (0..b as u32).collect();
        let mut shuffle = CounterRng::with_stream(seed, 4);
        for i in (1..b).rev() {
            order.swap(i, (shuffle.next_f64() * (i + 1) as f64) as usize % (i + 1));
        }
        let mut positions = Vec::new(); // (minibatch sequence, rollout position)
        for (k, &r) in order.iter().take((b / 2).max(1)).enumerate() {
            for j in 0..t {
                if positions.len() < max_tokens {
                    positions.push((k as u32, r as usize * t + j));
                }
            }
        }
        let m = positions.len();
        let seq_index: Vec<u32> = positions.iter().map(|&(k, _)| k).collect();
        let num_sequences = seq_index.last().map_or(0, |&k| k as usize + 1);
        let mut rng = CounterRng::with_stream(seed, 2);
        let mut u = move |lo: f64, hi: f64| (lo + (hi - lo) * rng.next_f64()) as f32;
        let logp_old: Vec<f32> = (0..m).map(|_| u(-2.0, -0.1)).collect();
        let logp_new: Vec<f32> = logp_old.iter().map(|&l| l + u(-0.3, 0.3)).collect();
        let (adv, ret): (Vec<f32>, Vec<f32>) = match advantages {
            Some((a, r)) if a.len() == b * t && r.len() == b * t => {
                positions.iter().map(|&(_, p)| (a[p], r[p])).unzip()
            }
            _ => (0..m).map(|_| (u(-2.0, 2.0), u(-1.0, 1.0))).unzip(),
        };
        let values_old: Vec<f32> = ret.iter().map(|&r| r + u(-0.5, 0.5)).collect();
        let values_new: Vec<f32> = values_old.iter().map(|&v| v + u(-0.3, 0.3)).collect();
        let entropy_new: Vec<f32> = (0..m).map(|_| u(0.1, 0.7)).collect();
        let token_weights: Vec<f32> = positions
            .iter()
            .enumerate()
            .map(|(i, &(_, p))| if i % 7 == 6 || rollout.mask[p] <= 0.0 { 0.0 } else { 1.0 })
            .collect();
        let mut seq_lengths = vec![0u32; num_sequences];
        for (&s, &w) in seq_index.iter().zip(&token_weights) {
            if w > 0.0 {
                seq_lengths[s as usize] += 1;
            }
        }
        Self {
            logp_new,
            logp_old,
            advantages: adv,
            returns: ret,
            values_new,
            values_old,
            entropy_new,
            token_weights,
            seq_index,
            num_sequences,
            seq_lengths,
            rollout_index: order[..num_sequences].to_vec(),
            rollout_sequences: b,
            seed,
        }
    }

    /// The same tokens with the sequences numbered `s → num_sequences − 1 − s`: `seq_index`,
    /// `seq_lengths` and `rollout_index` permuted together, so each token still belongs to the
    /// same rollout sequence.
    fn renumbered(&self) -> Self {
        let last = self.num_sequences.saturating_sub(1) as u32;
        let mut r = self.clone();
        r.seq_index = self.seq_index.iter().map(|&s| last - s).collect();
        r.seq_lengths.reverse();
        r.rollout_index.reverse();
        r
    }

    fn view(&self) -> Minibatch<'_> {
        let mut mb = Minibatch::new();
        mb.logp_new = &self.logp_new;
        mb.logp_old = &self.logp_old;
        mb.advantages = &self.advantages;
        mb.returns = &self.returns;
        mb.values_new = &self.values_new;
        mb.values_old = &self.values_old;
        mb.entropy_new = &self.entropy_new;
        mb.token_weights = &self.token_weights;
        mb.seq_index = &self.seq_index;
        mb.num_sequences = self.num_sequences;
        mb.seq_lengths = &self.seq_lengths;
        mb.seed = self.seed;
        mb.rollout_index = Some(&self.rollout_index);
        mb.position = Some(first_minibatch(self.rollout_sequences));
        mb
    }

    /// The same minibatch with garbage in every input of its zero-weight tokens.
    fn with_garbage_padding(&self) -> Self {
        let mut g = self.clone();
        for i in 0..g.token_weights.len() {
            if g.token_weights[i] <= 0.0 {
                for buf in [
                    &mut g.logp_new,
                    &mut g.logp_old,
                    &mut g.advantages,
                    &mut g.returns,
                    &mut g.values_new,
                    &mut g.values_old,
                    &mut g.entropy_new,
                ] {
                    buf[i] = 37.0 + i as f32;
                }
            }
        }
        g
    }
}

fn first_non_finite(named: &[(&str, &[f32])]) -> Result<(), String> {
    for (name, buf) in named {
        if let Some(i) = buf.iter().position(|x| !x.is_finite()) {
            return Err(format!("output `{name}` is {} at index {i}", buf[i]));
        }
    }
    Ok(())
}

fn check_metrics(call: &str, metrics: &[Metric]) -> Result<(), String> {
    for m in metrics {
        if let Some(problem) = crate::host_metrics::name_problem(&m.name) {
            return Err(format!("`{call}` returned a bad metric: {problem}"));
        }
        if !m.value.is_finite() {
            return Err(format!(
                "`{call}` returned metric `{}` = {}",
                m.name, m.value
            ));
        }
    }
    Ok(())
}

fn close(a: f32, b: f32) -> bool {
    (a - b).abs() <= 1e-5 * (1.0 + a.abs().max(b.abs()))
}

fn advantages_of<S: Subject + ?Sized>(
    alg: &mut S,
    data: &RolloutData,
) -> Result<AdvantageOutputs, String> {
    run_advantages(alg, &data.view()).map_err(|e| format!("`compute_advantages` failed: {e}"))
}

/// Runs every check on instances made by `make(seed)`:
///
/// - `advantages_finite`: `compute_advantages` succeeds on a synthetic rollout (terminations,
///   truncations, trailing padding), writes only finite values, and returns finite metrics
///   whose names are not empty, not `input.*` and not one of the host's own columns
///   ([`host_metrics::RESERVED`](crate::host_metrics::RESERVED));
/// - `advantages_deterministic`: two instances with the same seed give identical outputs;
/// - `advantages_padding_invariant`: more trailing padding (full of garbage) changes no
///   valid position's advantage or return;
/// - `loss_finite`: `loss` succeeds on a minibatch built from those advantages, and on a
///   single-token minibatch, with finite outputs and metrics;
/// - `loss_deterministic`: same seed, same advantage stage, same minibatch, identical outputs;
/// - `loss_padding_invariant`: zero-weight tokens get zero outputs, and garbage in their
///   inputs changes nothing;
/// - `loss_sequence_numbering` (interface 1.3): numbering the minibatch's sequences the other
///   way round, each sequence keeping its tokens and its `rollout_index`, changes no output:
///   a loss that looks up what its advantage stage recorded per rollout sequence must do it
///   by `rollout_index[seq_index[i]]`;
/// - `loss_derivatives`: [`check_loss_derivatives`] finds no mismatch;
/// - `sequence_loss_finite` (interface 1.1, for a plugin that exports `drover.sequence_loss`):
///   after an advantage stage, the sequence loss succeeds on a minibatch of whole sequences
///   and on a single whole sequence, as the host calls it ([`Subject::sequence_loss`]), with
///   finite losses, derivatives and metrics. Passes, saying so, for a plugin without the table;
/// - `epoch_hook`: `on_epoch_end` succeeds after two epochs, given the loss's metrics;
/// - `iteration_hook`: after an advantage stage, `on_iteration` succeeds with finite metrics;
///   given the next prompts of a dataset run (interface 1.2) it returns no group sizes or one
///   per prompt summing to the budget, and without them it returns none (the host refuses
///   group sizes a run cannot use);
/// - `group_filter`: `keep_group` succeeds on groups of response scores (all 0, all 1, mixed,
///   a group of one, a group of 8);
/// - `state_round_trip` (interface 1.3, for a plugin that exports `drover.plugin_state`):
///   after two iterations (advantages, loss, `on_epoch_end`, `on_iteration`) on rollouts with
///   `prompt_id`s, `save_state` → a fresh instance →
///   `load_state` continues exactly as the instance that saved (bit-identical advantages, loss
///   outputs and `on_iteration` answer), and bytes no `save_state` wrote are refused. Passes,
///   saying so, for a plugin without the table.
///
/// Output lengths are the caller's (slices cannot be resized); the host additionally refuses
/// non-finite outputs at run time, naming the output and index.
pub fn run_checks<S, F>(mut make: F, opts: &CheckOptions) -> CheckReport
where
    S: Subject,
    F: FnMut(u64) -> Result<S, PluginError>,
{
    let mut report = CheckReport::default();
    let mut instance = |what: &str| {
        make(opts.seed).map_err(|e| format!("creating the {what} instance failed: {e}"))
    };
    let rollout = RolloutData::synthetic(opts.num_sequences.max(1), opts.seq_len.max(1), opts.seed)
        .with_experts(opts.experts);

    // Advantage stage.
    let first = instance("first").and_then(|mut alg| {
        let out = advantages_of(&mut alg, &rollout)?;
        Ok((alg, out))
    });
    let mut first_alg = None;
    let adv_out = match first {
        Ok((alg, out)) => {
            first_alg = Some(alg);
            let finite = first_non_finite(&[("advantages", &out.0), ("returns", &out.1)])
                .and_then(|()| check_metrics("compute_advantages", &out.2))
                .map(|()| {
                    format!(
                        "{}x{} rollout with terminations, truncations and padding",
                        rollout.b, rollout.t
                    )
                });
            let ok = finite.is_ok();
            report.push("advantages_finite", finite);
            ok.then_some(out)
        }
        Err(e) => {
            report.push("advantages_finite", Err(e));
            None
        }
    };
    if let Some((adv, ret, metrics)) = &adv_out {
        let det = instance("second")
            .and_then(|mut alg| advantages_of(&mut alg, &rollout))
            .and_then(|(a2, r2, m2)| {
                let same = a2.iter().zip(adv).all(|(x, y)| x.to_bits() == y.to_bits())
                    && r2.iter().zip(ret).all(|(x, y)| x.to_bits() == y.to_bits())
                    && m2 == *metrics;
                if same {
                    Ok("two instances, same seed: identical outputs".to_owned())
                } else {
                    Err("two instances with the same seed gave different outputs".to_owned())
                }
            });
        report.push("advantages_deterministic", det);

        let padded = rollout.padded(3);
        let pad = instance("padding")
            .and_then(|mut alg| advantages_of(&mut alg, &padded))
            .and_then(|(a2, r2, _)| {
                for s in 0..rollout.b {
                    for k in 0..rollout.t {
                        let (i, j) = (s * rollout.t + k, s * padded.t + k);
                        if rollout.mask[i] <= 0.0 {
                            continue;
                        }
                        if !close(adv[i], a2[j]) || !close(ret[i], r2[j]) {
                            return Err(format!(
                                "sequence {s} step {k}: advantage {} / return {} became {} / {} \
                                 after 3 padding steps were appended",
                                adv[i], ret[i], a2[j], r2[j]
                            ));
                        }
                    }
                }
                Ok("3 extra padding steps full of garbage change nothing".to_owned())
            });
        report.push("advantages_padding_invariant", pad);
    } else {
        // Listed, as the loss stage's are below, so the count shows the harness stopped short.
        for name in ["advantages_deterministic", "advantages_padding_invariant"] {
            report.push(name, Err("not run: needs a `compute_advantages` that passes advantages_finite".to_owned()));
        }
    }

    // Loss stage, on the advantages just computed when there are some.
    let mb_data = MinibatchData::from_rollout(
        &rollout,
        opts.seed,
        adv_out
            .as_ref()
            .map(|(a, r, _)| (a.as_slice(), r.as_slice())),
        64,
    );
    let m = mb_data.token_weights.len();
    let one = MinibatchData::from_rollout(&rollout, opts.seed ^ 1, None, 1);
    let mut alg = match first_alg {
        Some(alg) => Ok(alg),
        None => instance("loss"),
    };
    let base = alg.as_mut().map_err(|e| e.clone()).and_then(|alg| {
        let out = run_loss(alg, &mb_data.view()).map_err(|e| format!("`loss` failed: {e}"))?;
        first_non_finite(&out.0.named())?;
        check_metrics("loss", &out.1)?;
        let single =
            run_loss(alg, &one.view()).map_err(|e| format!("`loss` on one token failed: {e}"))?;
        first_non_finite(&single.0.named()).map_err(|e| format!("single-token minibatch: {e}"))?;
        Ok(out)
    });
    report.push(
        "loss_finite",
        base.as_ref()
            .map(|_| format!("{m}-token minibatch and a 1-token minibatch"))
            .map_err(Clone::clone),
    );
    // Neither needs a working `loss`, so both run whatever loss_finite found.
    let sequence_loss = check_sequence_loss(
        &mut instance,
        &rollout,
        adv_out.as_ref().map(|(a, r, _)| (a.as_slice(), r.as_slice())),
        opts.seed,
    );
    let group_filter = check_group_filter(&mut instance);
    let Ok(base) = base else {
        // Listed, so `drover plugin check`'s count says the harness stopped short rather than
        // that a plugin passing 3 of 4 checks is nearly done.
        let not_run = || Err("not run: needs a `loss` that passes loss_finite".to_owned());
        for name in [
            "loss_deterministic",
            "loss_padding_invariant",
            "loss_sequence_numbering",
            "loss_derivatives",
        ] {
            report.push(name, not_run());
        }
        report.push("sequence_loss_finite", sequence_loss);
        report.push("epoch_hook", not_run());
        report.push("iteration_hook", not_run());
        report.push("group_filter", group_filter);
        // One rule whatever failed: a plugin without a state table has no round trip to fail.
        let stateless = instance("state probe").is_ok_and(|mut probe| probe.save_state().is_none());
        let state = if stateless { Ok("no `drover.plugin_state` table: the plugin keeps no state across iterations".to_owned()) } else { not_run() };
        report.push("state_round_trip", state);
        return report;
    };
    let det = instance("second loss").and_then(|mut alg2| {
        // As the host does: the loss follows the advantage stage of the same rollout, whose
        // per-sequence records a plugin may look up by rollout index.
        if adv_out.is_some() {
            advantages_of(&mut alg2, &rollout)?;
        }
        let out =
            run_loss(&mut alg2, &mb_data.view()).map_err(|e| format!("`loss` failed: {e}"))?;
        if out == base {
            Ok("two instances, same seed: identical outputs".to_owned())
        } else {
            Err("two instances with the same seed gave different outputs".to_owned())
        }
    });
    report.push("loss_deterministic", det);

    let garbage = mb_data.with_garbage_padding();
    let pad = alg.as_mut().map_err(|e| e.clone()).and_then(|alg| {
        let out = run_loss(alg, &garbage.view()).map_err(|e| format!("`loss` failed: {e}"))?;
        for (i, &w) in mb_data.token_weights.iter().enumerate() {
            for ((name, a), (_, b)) in base.0.named().iter().zip(out.0.named()) {
                if w <= 0.0 && b[i] != 0.0 {
                    return Err(format!(
                        "output `{name}` is {} at zero-weight token {i}, expected 0",
                        b[i]
                    ));
                }
                if w > 0.0 && !close(a[i], b[i]) {
                    return Err(format!(
                        "output `{name}` at token {i} changed from {} to {} when only \
                         zero-weight tokens' inputs changed",
                        a[i], b[i]
                    ));
                }
            }
        }
        Ok("zero-weight tokens get zero outputs and do not affect the others".to_owned())
    });
    report.push("loss_padding_invariant", pad);

    let renumbered = mb_data.renumbered();
    let numbering = alg.as_mut().map_err(|e| e.clone()).and_then(|alg| {
        let out = run_loss(alg, &renumbered.view()).map_err(|e| format!("`loss` failed: {e}"))?;
        for ((name, a), (_, b)) in base.0.named().iter().zip(out.0.named()) {
            if let Some(i) = (0..a.len()).find(|&i| !close(a[i], b[i])) {
                return Err(format!(
                    "output `{name}` at token {i} changed from {} to {} when the minibatch's \
                     sequences were numbered the other way round (each token's `seq_index` and \
                     its sequence's `rollout_index` moved together): per-sequence data must be \
                     looked up by `rollout_index[seq_index[i]]`, never by `seq_index`",
                    a[i], b[i]
                ));
            }
        }
        Ok(if mb_data.num_sequences > 1 {
            format!(
                "{} sequences numbered the other way round (with their rollout indices): same \
                 outputs",
                mb_data.num_sequences
            )
        } else {
            "one sequence: nothing to renumber".to_owned()
        })
    });
    report.push("loss_sequence_numbering", numbering);

    let fd = alg.as_mut().map_err(|e| e.clone()).and_then(|alg| {
        let r = check_loss_derivatives(
            alg,
            &mb_data.view(),
            opts.fd_step,
            opts.fd_atol,
            opts.fd_rtol,
        )
        .map_err(|e| format!("`loss` failed: {e}"))?;
        match r.mismatches.first() {
            None if r.checked == 0 => Err("no derivative could be checked (all at kinks)".into()),
            None => Ok(format!(
                "{} derivatives match finite differences ({} skipped at kinks)",
                r.checked, r.skipped_kinks
            )),
            Some(x) => Err(format!(
                "{} of {} derivatives disagree with finite differences; first: d/d{:?} at \
                 token {}: reported {:.6}, numeric {:.6}",
                r.mismatches.len(),
                r.checked,
                x.wrt,
                x.index,
                x.analytic,
                x.numeric
            )),
        }
    });
    report.push("loss_derivatives", fd);
    report.push("sequence_loss_finite", sequence_loss);
    let epoch = alg.as_mut().map_err(|e| e.clone()).and_then(|alg| check_epoch_hook(alg, &base.1));
    report.push("epoch_hook", epoch);
    report.push("iteration_hook", check_iteration_hook(&mut instance, &rollout));
    report.push("group_filter", group_filter);
    report.push("state_round_trip", check_state_round_trip(&mut instance, &rollout, &mb_data));
    report
}

/// The `state_round_trip` check of [`run_checks`].
fn check_state_round_trip<S: Subject>(
    instance: &mut impl FnMut(&str) -> Result<S, String>,
    rollout: &RolloutData,
    mb_data: &MinibatchData,
) -> Result<String, String> {
    // Outcome rewards (0/1 at each sequence's last step) on dataset prompts, two responses per
    // prompt, so per-prompt state (Knapsack RL's success rates) holds fractions. The third
    // iteration's rollout visits other prompts: what its hook says about the next prompts comes
    // from the state alone.
    let next = NextPrompts { prompt_ids: vec![3, 1, 4, 0], budget: 32, group_size: 8 };
    let outcomes = |seed: u64| {
        let mut d = rollout.clone();
        let mut rng = CounterRng::with_stream(seed, 3);
        for s in 0..d.b {
            let row = s * d.t..(s + 1) * d.t;
            let last = row.clone().rfind(|&i| d.mask[i] > 0.0);
            d.rewards[row].fill(0.0);
            if let Some(i) = last {
                d.rewards[i] = if rng.next_f64() < 0.5 { 1.0 } else { 0.0 };
            }
        }
        d
    };
    let seen: Vec<f32> = (0..rollout.b).map(|s| next.prompt_ids[(s / 2) % 4] as f32).collect();
    let unseen: Vec<f32> = (0..rollout.b).map(|s| (100 + s) as f32).collect();
    let steps = (rollout.b * rollout.t) as u64;
    // One iteration as the host runs it: advantages, loss, the epoch's end, then the hook with
    // its metrics.
    let iterate = |alg: &mut S, data: &RolloutData, ids: &[f32], iteration: u64| {
        let mut batch = data.view();
        batch.metadata.push((crate::metadata::PROMPT_ID.to_owned(), ids));
        let (adv, ret, mut metrics) =
            run_advantages(alg, &batch).map_err(|e| format!("`compute_advantages` failed: {e}"))?;
        let loss = run_loss(alg, &mb_data.view()).map_err(|e| format!("`loss` failed: {e}"))?;
        alg.on_epoch_end(0, &loss.1).map_err(|e| format!("`on_epoch_end` failed: {e}"))?;
        metrics.extend(next.to_metrics());
        let info = IterationInfo { iteration, global_step: iteration * steps, metrics: metrics.as_slice().into() };
        let control = alg.on_iteration(&info).map_err(|e| format!("`on_iteration` failed: {e}"))?;
        let adv_bits: Vec<u32> = adv.iter().chain(&ret).map(|x| x.to_bits()).collect();
        Ok::<_, String>((adv_bits, loss, control))
    };
    // Asked of an instance of its own, so that a plugin without the table passes whatever its
    // other calls do (they have checks of their own) and the saver is untouched.
    if instance("state probe")?.save_state().is_none() {
        return Ok("no `drover.plugin_state` table: the plugin keeps no state across iterations".to_owned());
    }
    let mut saver = instance("state")?;
    iterate(&mut saver, &outcomes(rollout.seed), &seen, 1)?;
    iterate(&mut saver, &outcomes(rollout.seed ^ 0x5eed), &seen, 2)?;
    let Some(saved) = saver.save_state() else {
        return Err("`save_state` answered once and then no longer".to_owned());
    };
    let bytes = saved.map_err(|e| format!("`save_state` failed: {e}"))?;
    let mut restored = instance("restored")?;
    match restored.load_state(&bytes) {
        None => return Err("`save_state` is provided but `load_state` is not".to_owned()),
        Some(Err(e)) => return Err(format!("`load_state` refused the {} bytes `save_state` wrote: {e}", bytes.len())),
        Some(Ok(())) => {}
    }
    let third = outcomes(rollout.seed ^ 0xbeef);
    let (a, b) = (iterate(&mut saver, &third, &unseen, 3)?, iterate(&mut restored, &third, &unseen, 3)?);
    let differs = if a.0 != b.0 {
        Some("`compute_advantages` (advantages or returns)")
    } else if a.1 != b.1 {
        Some("`loss`")
    } else if a.2 != b.2 {
        Some("`on_iteration`")
    } else {
        None
    };
    if let Some(call) = differs {
        return Err(format!(
            "after `save_state` → fresh instance → `load_state` ({} bytes), {call} gave other \
             outputs than the instance that saved: some state is not in the saved bytes",
            bytes.len()
        ));
    }
    let mut gullible = instance("foreign-bytes")?;
    if let Some(Ok(())) = gullible.load_state(b"\xffnot a drover plugin state") {
        return Err("`load_state` accepted bytes no `save_state` wrote: put a format name and \
                    version in the state and check them (`drover_plugin_api::state::to_json`)"
            .to_owned());
    }
    Ok(format!(
        "{} bytes after 2 iterations; a fresh instance that loads them continues identically; \
         foreign bytes refused",
        bytes.len()
    ))
}

/// The `sequence_loss_finite` check of [`run_checks`].
fn check_sequence_loss<S: Subject>(
    instance: &mut impl FnMut(&str) -> Result<S, String>,
    rollout: &RolloutData,
    advantages: Option<(&[f32], &[f32])>,
    seed: u64,
) -> Result<String, String> {
    let mut alg = instance("sequence loss")?;
    // As the host: the loss stage follows the advantage stage of the same rollout.
    if advantages.is_some() {
        advantages_of(&mut alg, rollout)?;
    }
    // The sequence tasks' minibatches hold whole responses: no token limit.
    let several = MinibatchData::from_rollout(rollout, seed, advantages, usize::MAX);
    let one = MinibatchData::from_rollout(rollout, seed ^ 1, advantages, rollout.t);
    for (what, mb) in [("whole sequences", &several), ("a single whole sequence", &one)] {
        let mut seq_loss = vec![0.0f32; mb.num_sequences];
        let mut d_logp = vec![0.0f32; mb.token_weights.len()];
        let Some(r) = alg.sequence_loss(&mb.view(), &mut seq_loss, &mut d_logp) else {
            return Ok("no `drover.sequence_loss` table: the plugin has no sequence-level loss".to_owned());
        };
        let metrics = r.map_err(|e| format!("`sequence_loss` on {what} failed: {e}"))?;
        first_non_finite(&[("seq_loss", &seq_loss), ("d_logp", &d_logp)])
            .and_then(|()| check_metrics("sequence_loss", &metrics))
            .map_err(|e| format!("{what}: {e}"))?;
    }
    Ok(format!(
        "{} whole sequences ({} tokens) and a single one: finite losses, derivatives and metrics",
        several.num_sequences,
        several.token_weights.len()
    ))
}

/// The `epoch_hook` check of [`run_checks`], on the instance whose loss ran: as the host calls
/// it after each update epoch, with that epoch's mean loss metrics.
fn check_epoch_hook<S: Subject>(alg: &mut S, loss_metrics: &[Metric]) -> Result<String, String> {
    let mut answers = Vec::new();
    for epoch in 0..2 {
        let go_on = alg
            .on_epoch_end(epoch, loss_metrics)
            .map_err(|e| format!("`on_epoch_end` after epoch {epoch} failed: {e}"))?;
        answers.push(if go_on { "go on" } else { "stop" });
    }
    Ok(format!(
        "after epochs 0 and 1, with the loss's {} metrics: {}",
        loss_metrics.len(),
        answers.join(", ")
    ))
}

/// The `group_filter` check of [`run_checks`]: `keep_group` on a fresh instance (the host
/// asks during generation, before the first advantage stage) with groups of response scores as
/// the sequence tasks send them, each response's summed reward.
fn check_group_filter<S: Subject>(instance: &mut impl FnMut(&str) -> Result<S, String>) -> Result<String, String> {
    let alg = instance("group filter")?;
    let groups: [&[f32]; 5] = [
        &[0.0; 4],
        &[1.0; 4],
        &[1.0, 0.0, 0.0, 1.0],
        &[0.5],
        &[0.0, 1.0, 1.0, 1.0, 0.0, 1.0, 0.0, 0.0],
    ];
    let mut kept = 0;
    for group in groups {
        if alg.keep_group(group).map_err(|e| format!("`keep_group` with scores {group:?} failed: {e}"))? {
            kept += 1;
        }
    }
    Ok(format!(
        "{kept} of {} groups kept (all 0, all 1, mixed, a group of one, a group of 8)",
        groups.len()
    ))
}

/// The `iteration_hook` check of [`run_checks`].
fn check_iteration_hook<S: Subject>(
    instance: &mut impl FnMut(&str) -> Result<S, String>,
    rollout: &RolloutData,
) -> Result<String, String> {
    let mut alg = instance("hook")?;
    let (_, _, mut metrics) = advantages_of(&mut alg, rollout)?;
    let plain = metrics.len();
    let next = NextPrompts { prompt_ids: vec![3, 1, 4, 0], budget: 32, group_size: 8 };
    metrics.extend(next.to_metrics());
    fn info(iteration: u64, steps: usize, metrics: &[Metric]) -> IterationInfo<'_> {
        IterationInfo { iteration, global_step: iteration * steps as u64, metrics: metrics.into() }
    }
    let steps = rollout.b * rollout.t;
    let call = |alg: &mut S, info: IterationInfo<'_>| {
        let control = alg.on_iteration(&info).map_err(|e| format!("`on_iteration` failed: {e}"))?;
        check_metrics("on_iteration", &control.metrics)?;
        Ok::<_, String>(control)
    };
    let with = call(&mut alg, info(1, steps, &metrics))?;
    let sizes: &[u32] = &with.group_sizes;
    let total: u64 = sizes.iter().map(|&n| u64::from(n)).sum();
    if !sizes.is_empty() && (sizes.len() != next.prompt_ids.len() || total != u64::from(next.budget)) {
        return Err(format!(
            "`on_iteration` returned group sizes {sizes:?} for {} next prompts and a budget of {}: \
             expected none, or one per prompt summing to the budget",
            next.prompt_ids.len(),
            next.budget
        ));
    }
    let without = call(&mut alg, info(2, steps, &metrics[..plain]))?;
    if !without.group_sizes.is_empty() {
        return Err(format!(
            "`on_iteration` returned group sizes {:?} without next prompts (a run with no prompt \
             dataset): the job would refuse them",
            &without.group_sizes[..]
        ));
    }
    Ok(if sizes.is_empty() {
        "runs with and without next prompts; asks for no group sizes".to_owned()
    } else {
        format!("group sizes {sizes:?} for 4 next prompts sum to the budget; none without a dataset")
    })
}

/// Where the harness's minibatches sit: the first minibatch of the first epoch of iteration 1,
/// out of a rollout of `rollout_sequences` sequences.
fn first_minibatch(rollout_sequences: usize) -> MinibatchPosition {
    MinibatchPosition { rollout_sequences, iteration: 1, epoch: 0, minibatch: 0 }
}

#[cfg(test)]
mod tests {
    use std::panic::catch_unwind;

    use super::*;
    use crate::{ParamSpec, PluginInfo};

    /// `loss_i = w·logp_i²`, reporting `d_logp = factor·w·logp_i` (correct for factor 2).
    struct Square {
        factor: f32,
    }

    impl AlgorithmImpl for Square {
        fn info() -> PluginInfo {
            PluginInfo::new("square", "0.0.0", "test").param(ParamSpec::float(
                "factor",
                2.0,
                "derivative factor",
            ))
        }
        fn new(p: &Params, _: u64) -> Result<Self, PluginError> {
            Ok(Self {
                factor: p.f64("factor")? as f32,
            })
        }
        fn compute_advantages(
            &mut self,
            b: &Rollout<'_>,
            adv: &mut [f32],
            ret: &mut [f32],
        ) -> Result<Vec<Metric>, PluginError> {
            for i in 0..adv.len() {
                adv[i] = b.rewards[i] * b.mask[i];
                ret[i] = adv[i];
            }
            Ok(Vec::new())
        }
        fn loss(
            &mut self,
            mb: &Minibatch<'_>,
            out: &mut LossOutputs<'_>,
        ) -> Result<Vec<Metric>, PluginError> {
            for (i, &l) in mb.logp_new.iter().enumerate() {
                let w = mb.token_weights[i];
                out.loss[i] = w * 0.5 * l * l;
                out.d_logp[i] = w * self.factor * 0.5 * l;
            }
            Ok(Vec::new())
        }
    }

    /// Sums rewards over the whole row, padding included: not padding-invariant.
    struct Leaky;

    impl AlgorithmImpl for Leaky {
        fn info() -> PluginInfo {
            PluginInfo::new("leaky", "0.0.0", "test")
        }
        fn new(_: &Params, _: u64) -> Result<Self, PluginError> {
            Ok(Self)
        }
        fn compute_advantages(
            &mut self,
            b: &Rollout<'_>,
            adv: &mut [f32],
            _: &mut [f32],
        ) -> Result<Vec<Metric>, PluginError> {
            for s in 0..b.num_sequences {
                let row = &b.rewards[s * b.seq_len..(s + 1) * b.seq_len];
                let sum: f32 = row.iter().sum();
                adv[s * b.seq_len..(s + 1) * b.seq_len].fill(sum * 1e-3);
            }
            Ok(Vec::new())
        }
        fn loss(
            &mut self,
            mb: &Minibatch<'_>,
            out: &mut LossOutputs<'_>,
        ) -> Result<Vec<Metric>, PluginError> {
            // Ignores the weights, and divides by zero on a one-token minibatch.
            let inv = 1.0 / (mb.len() as f32 - 1.0);
            for i in 0..mb.len() {
                out.loss[i] = mb.logp_new[i] * inv;
                out.d_logp[i] = inv;
            }
            Ok(Vec::new())
        }
    }

    #[test]
    fn a_wrong_derivative_is_reported_and_a_right_one_is_not() {
        let logp = [-1.0f32, -0.5, 0.25];
        let zeros = [0.0f32; 3];
        let idx = [0u32; 3];
        let mut mb = Minibatch::new();
        mb.logp_new = &logp;
        mb.logp_old = &zeros;
        mb.advantages = &zeros;
        mb.token_weights = &[1.0; 3];
        mb.seq_index = &idx;
        mb.num_sequences = 1;
        let right = check_loss_derivatives(&mut Square { factor: 2.0 }, &mb, 1e-2, 1e-4, 1e-2)
            .expect("runs");
        assert_eq!((right.checked, right.mismatches.len()), (3, 0), "{right:?}");
        let wrong = check_loss_derivatives(&mut Square { factor: 1.0 }, &mb, 1e-2, 1e-4, 1e-2)
            .expect("runs");
        assert_eq!(wrong.mismatches.len(), 3, "{wrong:?}");
        assert_eq!(wrong.mismatches[0].wrt, Wrt::LogpNew);
    }

    /// Plugins' finite-difference tests depend on the draws coming in call order from
    /// `CounterRng::new(seed)`, as an inline closure would make them.
    #[test]
    fn random_minibatch_draws_in_call_order() {
        let data = RandomMinibatch::new(11, 2, 4, 1)
            .logp(0.6)
            .reference(1.0)
            .advantages_per_sequence(&[1.5, -0.5])
            .entropy();
        let mut rng = CounterRng::new(11);
        let mut draw = |lo: f64, hi: f64| (lo + (hi - lo) * rng.next_f64()) as f32;
        let old: Vec<f32> = (0..8).map(|_| draw(-3.0, -0.1)).collect();
        let new: Vec<f32> = old.iter().map(|&l| l + draw(-0.6, 0.6)).collect();
        let reference: Vec<f32> = old.iter().map(|&l| l + draw(-1.0, 1.0)).collect();
        let entropy: Vec<f32> = (0..8).map(|_| draw(0.1, 2.0)).collect();
        assert_eq!(data.logp_old, old);
        assert_eq!(data.logp_new, new);
        assert_eq!(data.logp_ref, reference);
        assert_eq!(data.entropy_new, entropy);
        let mb = data.view();
        mb.check().expect("consistent");
        assert_eq!(mb.advantages, [1.5, 1.5, 1.5, 1.5, -0.5, -0.5, -0.5, -0.5]);
        assert_eq!(mb.token_weights, [1.0, 1.0, 1.0, 0.0, 1.0, 1.0, 1.0, 0.0]);
        assert_eq!(mb.seq_index, [0, 0, 0, 0, 1, 1, 1, 1]);
        assert_eq!(mb.num_sequences, 2);
    }

    #[test]
    fn run_loss_and_run_advantages_call_as_the_host_does() {
        let mut sq = instance::<Square>(r#"{"factor": 2.0}"#).expect("valid");
        let mut mb = Minibatch::new();
        mb.logp_new = &[-1.0, 2.0];
        mb.logp_old = &[0.0, 0.0];
        mb.advantages = &[0.0, 0.0];
        mb.token_weights = &[1.0, 0.5];
        mb.seq_index = &[0, 0];
        mb.num_sequences = 1;
        let (o, metrics) = run_loss(&mut sq, &mb).expect("runs");
        assert_eq!(o.loss, [0.5, 1.0]);
        assert_eq!(o.d_logp, [-1.0, 1.0]);
        assert!(metrics.is_empty());
        mb.num_sequences = 0;
        assert!(run_loss(&mut sq, &mb).is_err(), "the minibatch is checked");
        let batch = outcome_rollout(2, &[1.0, 1.0, 1.0, 0.0], &[0.5, 2.0, 3.0, 9.0], &[0, 1]);
        let (adv, ret, _) = run_advantages(&mut sq, &batch).expect("runs");
        assert_eq!(adv, [0.5, 2.0, 3.0, 0.0]);
        assert_eq!(ret, adv);
        assert_eq!(metric(&[Metric::new("x", 2.0)], "x"), Some(2.0));
        assert_eq!(metric(&[], "x"), None);
        let e = instance::<Square>(r#"{"factor": "two"}"#)
            .err()
            .expect("bad type");
        assert_eq!(e.key(), Some("factor"));
    }

    #[test]
    fn a_correct_algorithm_passes_every_check() {
        let report = check_algorithm::<Square>("{}");
        report.assert_passed();
        let names: Vec<&str> = report.checks.iter().map(|c| c.name).collect();
        assert_eq!(
            names,
            [
                "params_declared",
                "advantages_finite",
                "advantages_deterministic",
                "advantages_padding_invariant",
                "loss_finite",
                "loss_deterministic",
                "loss_padding_invariant",
                "loss_sequence_numbering",
                "loss_derivatives",
                "sequence_loss_finite",
                "epoch_hook",
                "iteration_hook",
                "group_filter",
                "state_round_trip"
            ]
        );
        assert!(report.to_string().contains("no `drover.plugin_state` table"), "{report}");
        assert!(report.to_string().contains("no `drover.sequence_loss` table"), "{report}");
    }

    /// `Square` with state: `on_iteration` counts iterations, which scale the advantages and
    /// the loss and are reported as a metric. `mode` says how its state table behaves:
    /// `exact` (saves and loads the count), `forget` (saves it, loads nothing), `gullible`
    /// (right round trip, but takes any bytes as a count of 0).
    struct Counter {
        square: Square,
        count: u32,
        mode: String,
    }

    impl Counter {
        fn save(&self) -> Result<Vec<u8>, PluginError> {
            crate::state::to_json("counter", 1, &self.count)
        }
        fn load(&mut self, bytes: &[u8]) -> Result<(), PluginError> {
            match self.mode.as_str() {
                "forget" => Ok(()),
                "gullible" => {
                    self.count = crate::state::from_json("counter", 1, bytes).unwrap_or(0);
                    Ok(())
                }
                _ => {
                    self.count = crate::state::from_json("counter", 1, bytes)?;
                    Ok(())
                }
            }
        }
    }

    impl AlgorithmImpl for Counter {
        const PLUGIN_STATE: Option<crate::StateFns<Self>> =
            Some(crate::StateFns { save: Self::save, load: Self::load });

        fn info() -> PluginInfo {
            Square::info().param(ParamSpec::string("mode", "exact", "state table behaviour"))
        }
        fn new(p: &Params, seed: u64) -> Result<Self, PluginError> {
            Ok(Self { square: Square::new(p, seed)?, count: 0, mode: p.str("mode")?.to_owned() })
        }
        fn compute_advantages(&mut self, b: &Rollout<'_>, adv: &mut [f32], ret: &mut [f32]) -> Result<Vec<Metric>, PluginError> {
            let m = AlgorithmImpl::compute_advantages(&mut self.square, b, adv, ret)?;
            adv.iter_mut().for_each(|a| *a *= 1.0 + self.count as f32);
            Ok(m)
        }
        fn loss(&mut self, mb: &Minibatch<'_>, out: &mut LossOutputs<'_>) -> Result<Vec<Metric>, PluginError> {
            AlgorithmImpl::loss(&mut self.square, mb, out)
        }
        fn on_iteration(&mut self, _: &IterationInfo<'_>) -> Result<IterationControl, PluginError> {
            self.count += 1;
            Ok(IterationControl { metrics: vec![Metric::new("count", f64::from(self.count))].into(), ..IterationControl::default() })
        }
    }

    #[test]
    fn the_state_check_fails_a_table_that_loses_state_or_takes_any_bytes() {
        let ok = check_algorithm::<Counter>(r#"{"mode": "exact"}"#);
        ok.assert_passed();
        assert!(ok.to_string().contains("a fresh instance that loads them continues identically"), "{ok}");
        for (mode, expected) in [
            ("forget", "gave other outputs than the instance that saved: some state is not in the saved bytes"),
            ("gullible", "`load_state` accepted bytes no `save_state` wrote"),
        ] {
            let report = check_algorithm::<Counter>(&format!(r#"{{"mode": "{mode}"}}"#));
            let failed: Vec<&str> = report.failures().map(|c| c.name).collect();
            assert_eq!(failed, ["state_round_trip"], "{report}");
            assert!(report.to_string().contains(expected), "{mode}: {report}");
        }
    }

    #[test]
    fn the_json_envelope_names_format_and_version() {
        let bytes = crate::state::to_json("counter", 2, &[1u64, 2]).expect("serialises");
        assert_eq!(bytes, br#"{"format":"counter","version":2,"state":[1,2]}"#);
        let back: Vec<u64> = crate::state::from_json("counter", 2, &bytes).expect("reads");
        assert_eq!(back, [1, 2]);
        for (format, version, expected) in [
            ("other", 2, "not a `other` state version 2: the bytes hold a `counter` state version 2"),
            ("counter", 1, "not a `counter` state version 1: the bytes hold a `counter` state version 2"),
        ] {
            let e = crate::state::from_json::<Vec<u64>>(format, version, &bytes).expect_err("refused");
            assert_eq!(e.kind(), Some(crate::PluginErrorKind::InvalidInput));
            assert_eq!(e.message(), expected);
        }
        let e = crate::state::from_json::<Vec<u64>>("counter", 2, b"junk").expect_err("junk");
        assert!(e.message().contains("expected a JSON object with `format`, `version` and `state`"), "{e}");
        let e = crate::state::from_json::<String>("counter", 2, &bytes).expect_err("wrong type");
        assert!(e.message().starts_with("not a `counter` state version 2: `state`: "), "{e}");
    }

    /// `Square` whose `compute_advantages` always fails.
    struct NoAdvantages(Square);

    impl AlgorithmImpl for NoAdvantages {
        fn info() -> PluginInfo {
            Square::info()
        }
        fn new(p: &Params, seed: u64) -> Result<Self, PluginError> {
            Square::new(p, seed).map(Self)
        }
        fn compute_advantages(&mut self, _: &Rollout<'_>, _: &mut [f32], _: &mut [f32]) -> Result<Vec<Metric>, PluginError> {
            Err(PluginError::internal("no advantages here"))
        }
        fn loss(&mut self, mb: &Minibatch<'_>, out: &mut LossOutputs<'_>) -> Result<Vec<Metric>, PluginError> {
            AlgorithmImpl::loss(&mut self.0, mb, out)
        }
    }

    /// `Square` whose `on_iteration` asks for group sizes: `mode` `valid` (over the next prompts,
    /// summing to the budget), `always` (also without next prompts), `short` (one too few).
    struct Budgeter {
        square: Square,
        mode: String,
    }

    impl AlgorithmImpl for Budgeter {
        fn info() -> PluginInfo {
            Square::info().param(ParamSpec::string("mode", "valid", "which sizes"))
        }
        fn new(p: &Params, seed: u64) -> Result<Self, PluginError> {
            Ok(Self { square: Square::new(p, seed)?, mode: p.str("mode")?.to_owned() })
        }
        fn compute_advantages(&mut self, b: &Rollout<'_>, adv: &mut [f32], ret: &mut [f32]) -> Result<Vec<Metric>, PluginError> {
            AlgorithmImpl::compute_advantages(&mut self.square, b, adv, ret)
        }
        fn loss(&mut self, mb: &Minibatch<'_>, out: &mut LossOutputs<'_>) -> Result<Vec<Metric>, PluginError> {
            AlgorithmImpl::loss(&mut self.square, mb, out)
        }
        fn on_iteration(&mut self, info: &IterationInfo<'_>) -> Result<IterationControl, PluginError> {
            let sizes: Vec<u32> = match (info.next_prompts(), self.mode.as_str()) {
                (Some(next), "valid" | "always") => {
                    let n = next.prompt_ids.len() as u32;
                    (0..n).map(|j| next.budget / n + u32::from(j < next.budget % n)).collect()
                }
                (Some(next), _) => vec![1; next.prompt_ids.len() - 1],
                (None, "always") => vec![2, 2],
                (None, _) => Vec::new(),
            };
            Ok(IterationControl { group_sizes: sizes.into(), ..IterationControl::default() })
        }
    }

    #[test]
    fn the_iteration_hook_check_holds_group_sizes_to_the_contract() {
        let ok = check_algorithm::<Budgeter>(r#"{"mode": "valid"}"#);
        ok.assert_passed();
        assert!(ok.to_string().contains("group sizes [8, 8, 8, 8] for 4 next prompts"), "{ok}");
        for (mode, expected) in [("always", "without next prompts"), ("short", "expected none, or one per prompt summing to the budget")] {
            let report = check_algorithm::<Budgeter>(&format!(r#"{{"mode": "{mode}"}}"#));
            let failed: Vec<&str> = report.failures().map(|c| c.name).collect();
            assert_eq!(failed, ["iteration_hook"], "{report}");
            assert!(report.to_string().contains(expected), "{mode}: {report}");
        }
    }

    /// `Square` whose loss is scaled per sequence by what its advantage stage recorded for
    /// that rollout sequence (`1 + b`). `lookup`: `rollout_index` (right) or `seq_index` (the
    /// mistake the 1.3 context exists to avoid: minibatch numbering is not rollout numbering).
    struct Recorder {
        square: Square,
        scale: Vec<f32>,
        lookup: String,
    }

    impl AlgorithmImpl for Recorder {
        fn info() -> PluginInfo {
            Square::info().param(ParamSpec::string("lookup", "rollout_index", "how the loss finds a sequence's record"))
        }
        fn new(p: &Params, seed: u64) -> Result<Self, PluginError> {
            Ok(Self { square: Square::new(p, seed)?, scale: Vec::new(), lookup: p.str("lookup")?.to_owned() })
        }
        fn compute_advantages(&mut self, b: &Rollout<'_>, adv: &mut [f32], ret: &mut [f32]) -> Result<Vec<Metric>, PluginError> {
            self.scale = (0..b.num_sequences).map(|s| 1.0 + s as f32).collect();
            AlgorithmImpl::compute_advantages(&mut self.square, b, adv, ret)
        }
        fn loss(&mut self, mb: &Minibatch<'_>, out: &mut LossOutputs<'_>) -> Result<Vec<Metric>, PluginError> {
            let index = mb.require_rollout_index("recorder")?;
            AlgorithmImpl::loss(&mut self.square, mb, out)?;
            for i in 0..mb.len() {
                let s = mb.seq_index[i] as usize;
                let r = if self.lookup == "rollout_index" { index[s] as usize } else { s };
                let c = *self.scale.get(r).ok_or_else(|| PluginError::invalid_input("loss before compute_advantages"))?;
                out.loss[i] *= c;
                out.d_logp[i] *= c;
            }
            Ok(Vec::new())
        }
    }

    #[test]
    fn the_numbering_check_fails_a_loss_that_looks_up_by_seq_index() {
        let right = check_algorithm::<Recorder>("{}");
        right.assert_passed();
        assert!(right.to_string().contains("2 sequences numbered the other way round"), "{right}");
        let wrong = check_algorithm::<Recorder>(r#"{"lookup": "seq_index"}"#);
        let failed: Vec<&str> = wrong.failures().map(|c| c.name).collect();
        assert_eq!(failed, ["loss_sequence_numbering"], "{wrong}");
        assert!(wrong.to_string().contains("never by `seq_index`"), "{wrong}");

        // An older host sends no index: the helper says what is missing.
        let mut alg = instance::<Recorder>("{}").expect("valid");
        let data = RandomMinibatch::new(3, 2, 4, 1).logp(0.3).advantages_per_sequence(&[1.0, 2.0]);
        let mut mb = data.view();
        mb.rollout_index = None;
        let e = with_loss_outputs(mb.len(), |out| Subject::loss(&mut alg, &mb, out)).1.expect_err("no index");
        assert!(e.message().contains("recorder needs a drover host with interface 1.3"), "{e}");
        // `run_loss` sends the identity, as a 1.3 host always sends one.
        let batch = outcome_rollout(4, &[1.0; 8], &[0.0; 8], &[0, 1]);
        run_advantages(&mut alg, &batch).expect("runs");
        let (o, _) = run_loss(&mut alg, &mb).expect("identity index");
        assert_eq!(o.d_logp[4], 2.0 * 2.0 * 0.5 * data.logp_new[4], "sequence 1 scaled by 1 + 1");
    }

    #[test]
    fn an_inconsistent_rollout_index_is_refused() {
        let data = RandomMinibatch::new(3, 3, 2, 0).logp(0.3).advantages_per_sequence(&[1.0, 2.0, 3.0]);
        for (index, bound, expected) in [
            (&[0u32, 1][..], 3, "`rollout_index` has length 2, expected 3"),
            (&[0, 2, 0][..], 3, "names rollout sequence 0 twice"),
            (&[0, 1, 5][..], 4, "`rollout_index[2]` is 5, but the rollout batch has 4 sequences"),
        ] {
            let mut mb = data.view();
            mb.rollout_index = Some(index);
            mb.position = mb.position.map(|p| MinibatchPosition { rollout_sequences: bound, ..p });
            let e = mb.check().expect_err("refused");
            assert!(e.message().contains(expected), "{index:?}: {e}");
        }
        data.view().check().expect("the builder's identity index is consistent");
    }

    #[test]
    fn per_sequence_values_follow_the_rollout_index() {
        let mut data = RandomMinibatch::new(3, 3, 2, 0).logp(0.3);
        data.rollout_index = vec![2, 0, 1];
        let mb = data.view();
        assert_eq!(mb.per_sequence("algo", &[10, 20, 30]).expect("in range"), [30, 10, 20]);
        let e = mb.per_sequence("algo", &[10, 20]).expect_err("a shorter record");
        assert!(e.message().contains("algo: the minibatch has rollout sequence 2, but the last `compute_advantages` saw 2"), "{e}");
        let mut old_host = data.view();
        old_host.rollout_index = None;
        let e = old_host.per_sequence("algo", &[10, 20, 30]).expect_err("no context");
        assert!(e.message().contains("algo needs a drover host with interface 1.3"), "{e}");
    }

    #[test]
    fn refused_params_must_name_their_key() {
        assert_params_refused::<Square>(&[(r#"{"factor": "big"}"#, "factor"), (r#"{"nope": 1}"#, "nope")]);
        let accepted = catch_unwind(|| assert_params_refused::<Square>(&[(r#"{"factor": 3.0}"#, "factor")]));
        assert!(accepted.is_err(), "an accepted case must fail the assertion");
        let other_key = catch_unwind(|| assert_params_refused::<Square>(&[(r#"{"factor": "big"}"#, "nope")]));
        assert!(other_key.is_err(), "an error naming another key must fail the assertion");
    }

    fn text_of<'r>(report: &'r CheckReport, name: &str) -> &'r str {
        report.checks.iter().find(|c| c.name == name).map_or("", |c| c.detail.as_str())
    }

    /// Panics in `loss`, on the line [`PANIC_LINE`] names.
    struct Panicky;

    const PANIC_LINE: u32 = line!() + 18;

    impl AlgorithmImpl for Panicky {
        fn info() -> PluginInfo {
            PluginInfo::new("panicky", "0.0.0", "test")
        }
        fn new(_: &Params, _: u64) -> Result<Self, PluginError> {
            Ok(Self)
        }
        fn compute_advantages(
            &mut self,
            _: &Rollout<'_>,
            _: &mut [f32],
            _: &mut [f32],
        ) -> Result<Vec<Metric>, PluginError> {
            Ok(Vec::new())
        }
        fn loss(&mut self, mb: &Minibatch<'_>, _: &mut LossOutputs<'_>) -> Result<Vec<Metric>, PluginError> {
            let out_of_bounds = mb.logp_new[mb.len()];
            Ok(vec![Metric::new("never", f64::from(out_of_bounds))])
        }
    }

    /// A payload says what, not where: the caught panic's message names the author's line.
    #[test]
    fn a_caught_panic_names_the_line_that_raised_it() {
        let report = check_algorithm::<Panicky>("{}");
        let detail = text_of(&report, "loss_finite");
        let at = format!("(at {}:{PANIC_LINE}:", file!());
        assert!(detail.contains("panic: index out of bounds") && detail.contains(&at), "`{at}` in: {report}");
    }

    /// `Square` reporting one metric, named by its param `metric`, from both stages.
    struct Named(Square, String);

    impl AlgorithmImpl for Named {
        fn info() -> PluginInfo {
            PluginInfo::new("named", "0.0.0", "test").param(ParamSpec::string("metric", "mine", "its name"))
        }
        fn new(p: &Params, _: u64) -> Result<Self, PluginError> {
            Ok(Self(Square { factor: 2.0 }, p.str("metric")?.to_owned()))
        }
        fn compute_advantages(&mut self, b: &Rollout<'_>, adv: &mut [f32], ret: &mut [f32]) -> Result<Vec<Metric>, PluginError> {
            AlgorithmImpl::compute_advantages(&mut self.0, b, adv, ret)?;
            Ok(vec![Metric::new(&self.1, 1.0)])
        }
        fn loss(&mut self, mb: &Minibatch<'_>, out: &mut LossOutputs<'_>) -> Result<Vec<Metric>, PluginError> {
            AlgorithmImpl::loss(&mut self.0, mb, out)?;
            Ok(vec![Metric::new(&self.1, 1.0)])
        }
    }

    /// Review finding 1: a metric named like a host column duplicated or overwrote it, and the
    /// harness passed.
    #[test]
    fn a_metric_named_like_a_host_column_fails_the_harness() {
        check_algorithm::<Named>("{}").assert_passed();
        for name in ["lr", "iteration", "grad_norm", "episodic_return_mean", "accuracy", "input.budget", ""] {
            let report = check_algorithm::<Named>(&format!(r#"{{"metric": "{name}"}}"#));
            let failed: Vec<&str> = report.failures().map(|c| c.name).collect();
            assert_eq!(failed[..2], ["advantages_finite", "advantages_deterministic"], "{name}: {report}");
            assert!(failed.contains(&"loss_finite"), "{name}: {report}");
            let text = text_of(&report, "advantages_finite");
            assert!(text.contains("`compute_advantages` returned a bad metric"), "{text}");
            if crate::host_metrics::RESERVED.contains(&name) {
                assert!(text.contains(&format!("metric `{name}` has the name of a column the host writes itself")), "{text}");
                assert!(text.contains("reserved: iteration, global_step, episodes"), "{text}");
            }
        }
    }

    /// `Square` declaring `factor` with a default outside its own range.
    struct BadDefault(Square);

    impl AlgorithmImpl for BadDefault {
        fn info() -> PluginInfo {
            PluginInfo::new("bad_default", "0.0.0", "test").param(ParamSpec::float("factor", 2.0, "f").range(0.0, 1.0))
        }
        fn new(_: &Params, _: u64) -> Result<Self, PluginError> {
            Ok(Self(Square { factor: 2.0 }))
        }
        fn compute_advantages(&mut self, b: &Rollout<'_>, adv: &mut [f32], ret: &mut [f32]) -> Result<Vec<Metric>, PluginError> {
            AlgorithmImpl::compute_advantages(&mut self.0, b, adv, ret)
        }
        fn loss(&mut self, mb: &Minibatch<'_>, out: &mut LossOutputs<'_>) -> Result<Vec<Metric>, PluginError> {
            AlgorithmImpl::loss(&mut self.0, mb, out)
        }
    }

    /// Review finding 6: the harness blames the plugin's declaration, first, by name.
    #[test]
    fn a_bad_param_declaration_fails_params_declared() {
        let report = check_algorithm::<BadDefault>("{}");
        let first = &report.checks[0];
        assert_eq!((first.name, first.passed), ("params_declared", false), "{report}");
        assert_eq!(
            first.detail,
            "plugin `bad_default` declares its params wrongly: param `factor`: default 2 is outside its own range [0, 1]"
        );
        assert!(text_of(&check_algorithm::<Square>("{}"), "params_declared").starts_with("1 params, each default"));
    }

    /// `Square` with the hooks the harness did not call before: `mode` makes one of them fail
    /// (`epoch_panic`, `group_error`, `group_panic`, `sequence_nan` (∂/∂Δ_s), `sequence_panic`)
    /// or none (`fine`). Its sequence loss is `−Δ_s` per sequence.
    struct Hooked {
        square: Square,
        mode: String,
    }

    impl Hooked {
        fn sequence_loss(&mut self, _: &Minibatch<'_>, log_ratio: &[f32], loss: &mut [f32], d: &mut [f32]) -> Result<Vec<Metric>, PluginError> {
            match self.mode.as_str() {
                "sequence_panic" => panic!("deliberate panic in sequence_loss"),
                "sequence_nan" => d.fill(f32::NAN),
                _ => d.fill(-1.0),
            }
            for (l, &r) in loss.iter_mut().zip(log_ratio) {
                *l = -r;
            }
            Ok(vec![Metric::new("hooked_sequences", loss.len() as f64)])
        }
    }

    impl AlgorithmImpl for Hooked {
        const SEQUENCE_LOSS: Option<crate::SequenceLossFn<Self>> = Some(Self::sequence_loss);

        fn info() -> PluginInfo {
            Square::info().param(ParamSpec::string("mode", "fine", "which hook fails"))
        }
        fn new(p: &Params, seed: u64) -> Result<Self, PluginError> {
            Ok(Self { square: Square::new(p, seed)?, mode: p.str("mode")?.to_owned() })
        }
        fn compute_advantages(&mut self, b: &Rollout<'_>, adv: &mut [f32], ret: &mut [f32]) -> Result<Vec<Metric>, PluginError> {
            AlgorithmImpl::compute_advantages(&mut self.square, b, adv, ret)
        }
        fn loss(&mut self, mb: &Minibatch<'_>, out: &mut LossOutputs<'_>) -> Result<Vec<Metric>, PluginError> {
            AlgorithmImpl::loss(&mut self.square, mb, out)
        }
        fn on_epoch_end(&mut self, _: u32, _: &[Metric]) -> Result<bool, PluginError> {
            if self.mode == "epoch_panic" {
                panic!("deliberate panic in on_epoch_end");
            }
            Ok(true)
        }
        fn keep_group(&self, rewards: &[f32]) -> Result<bool, PluginError> {
            match self.mode.as_str() {
                "group_panic" => panic!("deliberate panic in keep_group"),
                "group_error" if rewards.len() == 1 => Err(PluginError::invalid_input("a group of one")),
                _ => Ok(rewards.iter().any(|&r| r != rewards[0])),
            }
        }
    }

    /// Review finding: the harness never called `keep_group`, `on_epoch_end` nor the sequence
    /// loss, so a plugin that panicked there passed every check and then failed every run.
    #[test]
    fn hooks_beyond_the_loss_are_called_and_each_failure_fails_its_check() {
        let fine = check_algorithm::<Hooked>("{}");
        fine.assert_passed();
        assert_eq!(fine.checks.len(), 14, "{fine}");
        let seq = text_of(&fine, "sequence_loss_finite");
        assert!(seq.starts_with("2 whole sequences (24 tokens) and a single one"), "{fine}");
        assert_eq!(text_of(&fine, "epoch_hook"), "after epochs 0 and 1, with the loss's 0 metrics: go on, go on");
        assert!(text_of(&fine, "group_filter").starts_with("2 of 5 groups kept"), "{fine}");
        for (mode, check, expected) in [
            ("epoch_panic", "epoch_hook", "`on_epoch_end` after epoch 0 failed: panic: deliberate panic in on_epoch_end (at "),
            ("group_panic", "group_filter", "`keep_group` with scores [0.0, 0.0, 0.0, 0.0] failed: panic: deliberate panic in keep_group"),
            ("group_error", "group_filter", "`keep_group` with scores [0.5] failed: invalid input: a group of one"),
            ("sequence_nan", "sequence_loss_finite", "`sequence_loss` on whole sequences failed: numerical error: output `d_log_ratio` is NaN at index 0"),
            ("sequence_panic", "sequence_loss_finite", "`sequence_loss` on whole sequences failed: panic: deliberate panic in sequence_loss"),
        ] {
            let report = check_algorithm::<Hooked>(&format!(r#"{{"mode": "{mode}"}}"#));
            let failed: Vec<&str> = report.failures().map(|c| c.name).collect();
            assert_eq!(failed, [check], "{mode}: {report}");
            assert!(text_of(&report, check).starts_with(expected), "{mode}: {report}");
        }
    }

    #[test]
    fn each_defect_fails_its_own_check() {
        let wrong = check_algorithm::<Square>(r#"{"factor": 1.0}"#);
        let failed: Vec<&str> = wrong.failures().map(|c| c.name).collect();
        assert_eq!(failed, ["loss_derivatives"], "{wrong}");

        let leaky = check_algorithm::<Leaky>("{}");
        let failed: Vec<&str> = leaky.failures().map(|c| c.name).collect();
        assert_eq!(
            failed,
            [
                "advantages_padding_invariant",
                "loss_finite",
                "loss_deterministic",
                "loss_padding_invariant",
                "loss_sequence_numbering",
                "loss_derivatives",
                "epoch_hook",
                "iteration_hook"
            ],
            "{leaky}"
        );
        assert_eq!(leaky.checks.len(), 14, "every check is listed, run or not:\n{leaky}");
        assert!(
            text_of(&leaky, "loss_derivatives").starts_with("not run: needs a `loss` that passes loss_finite"),
            "{leaky}"
        );
        let text = leaky.to_string();
        assert!(
            text.contains("single-token minibatch: output `loss` is"),
            "{text}"
        );

        let no_adv = check_algorithm::<NoAdvantages>("{}");
        let failed: Vec<&str> = no_adv.failures().map(|c| c.name).collect();
        // `state_round_trip` passes: without a state table there is no round trip to fail.
        let expected = ["advantages_finite", "advantages_deterministic", "advantages_padding_invariant", "iteration_hook"];
        assert_eq!(failed, expected, "the loss checks run on their own advantages: {no_adv}");
        assert_eq!(no_adv.checks.len(), 14, "every check is listed, run or not:\n{no_adv}");
        assert!(text_of(&no_adv, "advantages_deterministic").starts_with("not run: needs a `compute_advantages`"), "{no_adv}");

        let bad = check_algorithm::<Square>(r#"{"nope": 1}"#);
        assert!(!bad.passed());
        assert!(bad.to_string().contains("key `nope`"), "{bad}");
    }
}
