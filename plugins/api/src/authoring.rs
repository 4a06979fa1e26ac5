//! What a plugin author implements (`AlgorithmImpl`, on plain Rust slices) and the adapter the
//! `export_algorithm!` macro uses to turn it into an ABI-stable `Algorithm` trait object.

use std::panic::{catch_unwind, AssertUnwindSafe};

use std::marker::PhantomData;
use std::mem::ManuallyDrop;
use std::io::Write as _;

use abi_stable::{
    prefix_type::PrefixTypeTrait,
    sabi_trait::TD_CanDowncast,
    std_types::{ROption, RResult, RSlice, RSliceMut, RStr, RString, RVec},
};

use crate::{
    algorithm::{Algorithm, AlgorithmBox, AlgorithmMod, AlgorithmMod_Ref, Algorithm_TO},
    error::PluginError,
    ext::{v1_1, v1_3, Extension, ExtensionTable},
    params::Params,
    types::{IterationControl, IterationInfo, Metric, PluginInfo},
    views::{LossViewRef, RolloutViewRef},
};

/// The author's side of [`v1_1::SequenceLoss`]: given a minibatch of whole sequences and each
/// sequence's log-ratio `Δ_s` (`log_ratio`, one per sequence), writes each sequence's loss and
/// `∂(Σ loss)/∂Δ_s` (`loss`, `d_log_ratio`, zeroed, one per sequence) and returns metrics.
/// Set [`AlgorithmImpl::SEQUENCE_LOSS`] to `Some(Self::your_fn)` to export it.
pub type SequenceLossFn<T> = fn(
    this: &mut T,
    mb: &Minibatch<'_>,
    log_ratio: &[f32],
    loss: &mut [f32],
    d_log_ratio: &mut [f32],
) -> Result<Vec<Metric>, PluginError>;

/// The author's side of [`v1_3::PluginState`] (interface 1.3): how an instance's state across
/// iterations is saved into a checkpoint and loaded into a fresh instance on resume. Set
/// [`AlgorithmImpl::PLUGIN_STATE`] to `Some(StateFns { save: Self::save_state, load:
/// Self::load_state })` to export it; [`crate::state`] has a JSON envelope with a format name
/// and version for the bytes.
pub struct StateFns<T> {
    /// The state as bytes, in the plugin's own versioned format.
    pub save: fn(this: &T) -> Result<Vec<u8>, PluginError>,
    /// Replaces the state of a fresh instance (same params and seed) with `bytes`; an error,
    /// never a guess, when they are not a state this version of the plugin wrote.
    pub load: fn(this: &mut T, bytes: &[u8]) -> Result<(), PluginError>,
}

impl<T> Clone for StateFns<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for StateFns<T> {}

/// An algorithm, written against plain Rust slices. Export it with
/// [`export_algorithm!`](crate::export_algorithm); `plugins/ppo` is the reference example.
///
/// Inputs have been shape-checked (see [`Rollout::check`], [`Minibatch::check`]) and outputs
/// zeroed before a method is called. Panics are caught and reported as
/// [`PluginErrorKind::Panic`](crate::PluginErrorKind::Panic); after one, the instance refuses
/// further calls.
pub trait AlgorithmImpl: Sized + Send + 'static {
    /// Interface 1.1 extension [`v1_1::SequenceLoss`] (sequence-level objectives). `drover-job`
    /// calls it in place of [`AlgorithmImpl::loss`] on the sequence tasks (whole-response
    /// minibatches) and calls `loss` on CartPole. `None`, the default: not provided, and a host
    /// asking for it is told so. Like every extension, it is
    /// exported by [`export_algorithm!`](crate::export_algorithm) only when set here.
    const SEQUENCE_LOSS: Option<SequenceLossFn<Self>> = None;

    /// Interface 1.3 extension [`v1_3::PluginState`]: state that evolves across iterations
    /// and must survive a checkpoint (anything not a pure function of params, seed and the
    /// iteration number). `None`, the default: the instance keeps no such state, and a resumed
    /// run starts it fresh.
    const PLUGIN_STATE: Option<StateFns<Self>> = None;

    /// Name, version, description and parameters.
    fn info() -> PluginInfo;

    /// Creates an instance from validated params (defaults filled in) and a seed.
    ///
    /// # Errors
    /// A [`PluginError`], typically `invalid_params` for combinations the specs cannot express.
    fn new(params: &Params, seed: u64) -> Result<Self, PluginError>;

    /// Fills `advantages` and `returns` (`B·T`, sequence-major) for `batch`.
    ///
    /// # Errors
    /// A [`PluginError`] when the batch lacks a buffer the algorithm needs.
    fn compute_advantages(
        &mut self,
        batch: &Rollout<'_>,
        advantages: &mut [f32],
        returns: &mut [f32],
    ) -> Result<Vec<Metric>, PluginError>;

    /// Per-token loss and derivatives of `Σ loss` w.r.t. each token's new log-prob, value and
    /// entropy, aggregation weights folded in.
    ///
    /// # Errors
    /// A [`PluginError`] when the minibatch lacks a buffer the algorithm needs.
    fn loss(
        &mut self,
        mb: &Minibatch<'_>,
        out: &mut LossOutputs<'_>,
    ) -> Result<Vec<Metric>, PluginError>;

    /// After each update epoch, with its mean metrics; `Ok(false)` stops the iteration's
    /// remaining epochs. Default: continue.
    ///
    /// # Errors
    /// A [`PluginError`] if the hook fails.
    fn on_epoch_end(&mut self, epoch: u32, metrics: &[Metric]) -> Result<bool, PluginError> {
        let _ = (epoch, metrics);
        Ok(true)
    }

    /// After each iteration. Default: change nothing.
    ///
    /// # Errors
    /// A [`PluginError`] if the hook fails.
    fn on_iteration(&mut self, info: &IterationInfo<'_>) -> Result<IterationControl, PluginError> {
        let _ = info;
        Ok(IterationControl::default())
    }

    /// Keep a group with these rewards (dynamic sampling)? Default: always.
    ///
    /// # Errors
    /// A [`PluginError`] if the predicate fails.
    fn keep_group(&self, rewards: &[f32]) -> Result<bool, PluginError> {
        let _ = rewards;
        Ok(true)
    }
}

/// A rollout batch as plain slices; see [`RolloutView`](crate::RolloutView) for each field.
///
/// `#[non_exhaustive]` because fields are added with the interface: build one with
/// [`Rollout::new`] and assign the fields you need.
#[non_exhaustive]
#[derive(Debug, Clone)]
pub struct Rollout<'a> {
    /// `B`.
    pub num_sequences: usize,
    /// `T`.
    pub seq_len: usize,
    /// `[B·T]`, 1 valid, 0 padding.
    pub mask: &'a [f32],
    /// `[B·T]`.
    pub rewards: &'a [f32],
    /// `[B·T]` 0/1, or empty.
    pub terminated: &'a [f32],
    /// `[B·T]` 0/1, or empty.
    pub truncated: &'a [f32],
    /// `[B·T]`, or empty.
    pub values: &'a [f32],
    /// `[B·T]` V(s_{t+1}), 0 where terminated, or empty.
    pub next_values: &'a [f32],
    /// `[B·T]`, or empty.
    pub logp_old: &'a [f32],
    /// `[B·T]`, or empty.
    pub logp_ref: &'a [f32],
    /// `[B·T]`, or empty.
    pub entropy_old: &'a [f32],
    /// `[B]`, or empty.
    pub group_ids: &'a [u32],
    /// `[B]`, or empty.
    pub sample_weights: &'a [f32],
    /// Named per-sequence columns, each `[B]`.
    pub metadata: Vec<(String, &'a [f32])>,
    /// Seed for this batch.
    pub seed: u64,
}

impl<'a> Rollout<'a> {
    /// A batch of `num_sequences × seq_len` with every buffer empty.
    pub fn new(num_sequences: usize, seq_len: usize) -> Self {
        Self {
            num_sequences,
            seq_len,
            mask: &[],
            rewards: &[],
            terminated: &[],
            truncated: &[],
            values: &[],
            next_values: &[],
            logp_old: &[],
            logp_ref: &[],
            entropy_old: &[],
            group_ids: &[],
            sample_weights: &[],
            metadata: Vec::new(),
            seed: 0,
        }
    }

    /// A per-sequence metadata column by name.
    pub fn metadata(&self, key: &str) -> Option<&'a [f32]> {
        self.metadata
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| *v)
    }

    /// Checks every buffer has its documented length (`B·T` or 0, `B` or 0, `mask` and
    /// `rewards` required).
    ///
    /// # Errors
    /// An `invalid_input` error naming the first bad buffer.
    pub fn check(&self) -> Result<(), PluginError> {
        let bt = self
            .num_sequences
            .checked_mul(self.seq_len)
            .ok_or_else(|| PluginError::invalid_input("num_sequences × seq_len overflows"))?;
        let b = self.num_sequences;
        let per_token = [
            ("terminated", self.terminated.len()),
            ("truncated", self.truncated.len()),
            ("values", self.values.len()),
            ("next_values", self.next_values.len()),
            ("logp_old", self.logp_old.len()),
            ("logp_ref", self.logp_ref.len()),
            ("entropy_old", self.entropy_old.len()),
        ];
        for (name, len) in [("mask", self.mask.len()), ("rewards", self.rewards.len())] {
            check_len(name, len, bt, false)?;
        }
        for (name, len) in per_token {
            check_len(name, len, bt, true)?;
        }
        check_len("group_ids", self.group_ids.len(), b, true)?;
        check_len("sample_weights", self.sample_weights.len(), b, true)?;
        for (name, col) in &self.metadata {
            check_len(&format!("metadata `{name}`"), col.len(), b, false)?;
        }
        Ok(())
    }

    /// A required per-token buffer: errors with a message naming it when it is empty.
    ///
    /// # Errors
    /// `invalid_input` "`<algorithm>` needs `<name>`" when `buf` is empty.
    pub fn require(algorithm: &str, name: &str, buf: &'a [f32]) -> Result<&'a [f32], PluginError> {
        if buf.is_empty() {
            Err(PluginError::invalid_input(format!(
                "{algorithm} needs `{name}` in the rollout batch"
            )))
        } else {
            Ok(buf)
        }
    }
}

/// Every entry of `index` below `bound` (when known), none repeated.
fn check_rollout_index(index: &[u32], bound: Option<usize>) -> Result<(), PluginError> {
    if let Some(b) = bound {
        if let Some(s) = index.iter().position(|&r| r as usize >= b) {
            return Err(PluginError::invalid_input(format!(
                "`rollout_index[{s}]` is {}, but the rollout batch has {b} sequences",
                index[s]
            )));
        }
    }
    let mut sorted = index.to_vec();
    sorted.sort_unstable();
    if let Some(w) = sorted.windows(2).find(|w| w[0] == w[1]) {
        return Err(PluginError::invalid_input(format!(
            "`rollout_index` names rollout sequence {} twice: a minibatch holds each rollout \
             sequence's tokens as one sequence",
            w[0]
        )));
    }
    Ok(())
}

fn check_len(
    name: &str,
    len: usize,
    expected: usize,
    may_be_empty: bool,
) -> Result<(), PluginError> {
    if len == expected || (may_be_empty && len == 0) {
        Ok(())
    } else {
        let or_empty = if may_be_empty { " or 0" } else { "" };
        Err(PluginError::invalid_input(format!(
            "`{name}` has length {len}, expected {expected}{or_empty}"
        )))
    }
}

/// A loss minibatch as plain slices; see [`LossView`](crate::LossView) for each field.
#[non_exhaustive]
#[derive(Debug, Clone)]
pub struct Minibatch<'a> {
    /// `[M]`.
    pub logp_new: &'a [f32],
    /// `[M]`.
    pub logp_old: &'a [f32],
    /// `[M]`, or empty.
    pub logp_ref: &'a [f32],
    /// `[M]`.
    pub advantages: &'a [f32],
    /// `[M]`, or empty.
    pub returns: &'a [f32],
    /// `[M]`, or empty.
    pub values_new: &'a [f32],
    /// `[M]`, or empty.
    pub values_old: &'a [f32],
    /// `[M]`, or empty.
    pub entropy_new: &'a [f32],
    /// `[M]`.
    pub token_weights: &'a [f32],
    /// `[M]`, each `< num_sequences`.
    pub seq_index: &'a [u32],
    /// Sequences in the minibatch.
    pub num_sequences: usize,
    /// `[num_sequences]`.
    pub seq_lengths: &'a [u32],
    /// `[num_sequences]`, or empty.
    pub seq_group_ids: &'a [u32],
    /// Seed for this minibatch.
    pub seed: u64,
    /// `[num_sequences]` (interface 1.3): each sequence's index in the rollout batch the last
    /// [`AlgorithmImpl::compute_advantages`] saw, so the loss can look up what the advantage
    /// stage recorded per sequence. Distinct within a minibatch. `None` when the host is older
    /// than 1.3 (it never sends one); [`Minibatch::require_rollout_index`] says so clearly.
    pub rollout_index: Option<&'a [u32]>,
    /// Where the minibatch sits in training (interface 1.3); `None` as `rollout_index`.
    pub position: Option<MinibatchPosition>,
}

/// Where a loss minibatch sits in training, sent by a 1.3 host with
/// [`Minibatch::rollout_index`] (`ext::v1_3::MinibatchInfo`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MinibatchPosition {
    /// `B` of the rollout batch `rollout_index` points into.
    pub rollout_sequences: usize,
    /// The iteration (1-based), as later passed to `on_iteration`.
    pub iteration: u64,
    /// The update epoch within the iteration (0-based), as passed to `on_epoch_end`.
    pub epoch: u32,
    /// The minibatch within the epoch (0-based).
    pub minibatch: u32,
}

impl<'a> Minibatch<'a> {
    /// A minibatch with every buffer empty; assign the fields you need.
    pub fn new() -> Self {
        Self {
            logp_new: &[],
            logp_old: &[],
            logp_ref: &[],
            advantages: &[],
            returns: &[],
            values_new: &[],
            values_old: &[],
            entropy_new: &[],
            token_weights: &[],
            seq_index: &[],
            num_sequences: 0,
            seq_lengths: &[],
            seq_group_ids: &[],
            seed: 0,
            rollout_index: None,
            position: None,
        }
    }

    /// [`Minibatch::rollout_index`], or an error for a host that sent none.
    ///
    /// # Errors
    /// `invalid_input` "`<algorithm>` needs a drover host with interface 1.3: …" when the host
    /// did not send the minibatch context (a drover older than 1.3).
    pub fn require_rollout_index(&self, algorithm: &str) -> Result<&'a [u32], PluginError> {
        self.rollout_index.ok_or_else(|| {
            PluginError::invalid_input(format!(
                "{algorithm} needs a drover host with interface 1.3: its loss looks up each \
                 sequence's rollout index (extension `drover.minibatch_context`), which this \
                 host did not send before the loss call; upgrade drover"
            ))
        })
    }

    /// The value each sequence of this minibatch has in `per_rollout`, a value per rollout
    /// sequence that the plugin recorded in its last `compute_advantages` (an expert flag, a
    /// weight): the usual way to carry per-response data from the advantage stage to the loss.
    ///
    /// # Errors
    /// Those of [`Self::require_rollout_index`], and `invalid_input` when an index is beyond
    /// `per_rollout` (the loss did not follow the advantage stage of its own rollout).
    pub fn per_sequence<T: Copy>(&self, algorithm: &str, per_rollout: &[T]) -> Result<Vec<T>, PluginError> {
        self.require_rollout_index(algorithm)?
            .iter()
            .map(|&r| {
                per_rollout.get(r as usize).copied().ok_or_else(|| {
                    PluginError::invalid_input(format!(
                        "{algorithm}: the minibatch has rollout sequence {r}, but the last \
                         `compute_advantages` saw {} sequences (the loss must follow the \
                         advantage stage of its rollout)",
                        per_rollout.len()
                    ))
                })
            })
            .collect()
    }

    /// `M`, the number of tokens.
    pub fn len(&self) -> usize {
        self.logp_new.len()
    }

    /// Whether the minibatch has no tokens.
    pub fn is_empty(&self) -> bool {
        self.logp_new.is_empty()
    }

    /// Checks lengths (per-token `M`, optional ones `M` or 0, per-sequence `num_sequences`)
    /// and that every `seq_index` is in range.
    ///
    /// # Errors
    /// An `invalid_input` error naming the first bad buffer.
    pub fn check(&self) -> Result<(), PluginError> {
        let m = self.len();
        for (name, len) in [
            ("logp_old", self.logp_old.len()),
            ("advantages", self.advantages.len()),
            ("token_weights", self.token_weights.len()),
            ("seq_index", self.seq_index.len()),
        ] {
            check_len(name, len, m, false)?;
        }
        for (name, len) in [
            ("logp_ref", self.logp_ref.len()),
            ("returns", self.returns.len()),
            ("values_new", self.values_new.len()),
            ("values_old", self.values_old.len()),
            ("entropy_new", self.entropy_new.len()),
        ] {
            check_len(name, len, m, true)?;
        }
        check_len(
            "seq_lengths",
            self.seq_lengths.len(),
            self.num_sequences,
            true,
        )?;
        check_len(
            "seq_group_ids",
            self.seq_group_ids.len(),
            self.num_sequences,
            true,
        )?;
        if let Some(i) = self
            .seq_index
            .iter()
            .position(|&s| s as usize >= self.num_sequences)
        {
            return Err(PluginError::invalid_input(format!(
                "`seq_index[{i}]` is {}, but the minibatch has {} sequences",
                self.seq_index[i], self.num_sequences
            )));
        }
        if let Some(index) = self.rollout_index {
            check_len("rollout_index", index.len(), self.num_sequences, false)?;
            let bound = self.position.map(|p| p.rollout_sequences);
            check_rollout_index(index, bound)?;
        }
        Ok(())
    }

    /// A required per-token buffer: errors with a message naming it when it is empty.
    ///
    /// # Errors
    /// `invalid_input` "`<algorithm>` needs `<name>`" when `buf` is empty.
    pub fn require(algorithm: &str, name: &str, buf: &'a [f32]) -> Result<&'a [f32], PluginError> {
        if buf.is_empty() {
            Err(PluginError::invalid_input(format!(
                "{algorithm} needs `{name}` in the loss minibatch"
            )))
        } else {
            Ok(buf)
        }
    }
}

impl Default for Minibatch<'_> {
    fn default() -> Self {
        Self::new()
    }
}

/// The loss outputs, each `[M]`, zeroed before [`AlgorithmImpl::loss`] is called.
#[derive(Debug)]
pub struct LossOutputs<'a> {
    /// Per-token loss, weights folded in: the host's total is `Σ loss`.
    pub loss: &'a mut [f32],
    /// ∂(Σ loss)/∂logp_new.
    pub d_logp: &'a mut [f32],
    /// ∂(Σ loss)/∂values_new.
    pub d_value: &'a mut [f32],
    /// ∂(Σ loss)/∂entropy_new.
    pub d_entropy: &'a mut [f32],
}

/// Wraps an [`AlgorithmImpl`] as an [`Algorithm`]; every method catches panics, and so does
/// dropping it.
#[doc(hidden)]
pub struct Adapter<T> {
    /// Dropped by hand in `Drop for Adapter`, under `catch_unwind`: the host drops an instance
    /// through abi_stable's `destroy_box`, an `extern "C"` function that aborts the process if
    /// a panic unwinds out of it, which would fail a run that had already finished training.
    inner: ManuallyDrop<T>,
    /// `` `name` version `` of the plugin, for the message a panicking drop prints (`Drop`
    /// cannot name `T: AlgorithmImpl`, as the struct does not require it).
    label: String,
    /// Set by a caught panic: the instance's state may be half-updated, so later calls fail.
    poisoned: Option<String>,
    /// The 1.3 minibatch context the host sent for the next loss call; taken by that call, so
    /// a context never outlives its minibatch.
    context: Option<OwnedContext>,
}

/// A [`v1_3::MinibatchInfo`] copied out of host memory (it is only borrowed for the call).
struct OwnedContext {
    rollout_index: Vec<u32>,
    position: MinibatchPosition,
}

impl OwnedContext {
    /// Gives `mb` this context.
    fn apply<'a>(&'a self, mb: &mut Minibatch<'a>) {
        mb.rollout_index = Some(&self.rollout_index);
        mb.position = Some(self.position);
    }
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-string payload".to_owned()
    }
}

thread_local! {
    /// Where this thread's last panic was raised (`file:line:column`), recorded by the hook
    /// [`watch_panics`] installs: a panic payload carries only the message, and an author
    /// reading `panic: index out of bounds` in `exit.json` needs the line.
    static PANIC_LOCATION: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
}

/// Installs, once per copy of `std` (a `cdylib` plugin has its own, so the host's hook is not
/// touched), a panic hook that records the location and then runs the hook it replaced, so
/// the usual message and backtrace still reach stderr; forgets any location recorded before.
fn watch_panics() {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if let Some(at) = info.location() {
                let at = format!("{}:{}:{}", at.file(), at.line(), at.column());
                let _ = PANIC_LOCATION.try_with(|l| l.replace(Some(at)));
            }
            previous(info);
        }));
    });
    let _ = PANIC_LOCATION.try_with(|l| l.take());
}

/// Runs `f`, turning a panic into `PluginError::Panic`: its message, then where it was raised
/// (`… (at src/lib.rs:42:9)`) when the hook saw it.
pub(crate) fn catch_panic<R>(f: impl FnOnce() -> R) -> Result<R, PluginError> {
    watch_panics();
    catch_unwind(AssertUnwindSafe(f)).map_err(|payload| {
        let mut message = panic_message(&*payload);
        if let Some(at) = PANIC_LOCATION.try_with(|l| l.take()).ok().flatten() {
            message.push_str(&format!(" (at {at})"));
        }
        PluginError::panic(message)
    })
}

/// Runs `f`, turning a panic into `PluginError::Panic` (a panic must not unwind into the
/// `extern "C"` shims abi_stable generates: they abort the whole process).
fn guarded<R>(f: impl FnOnce() -> Result<R, PluginError>) -> RResult<R, PluginError> {
    catch_panic(f).and_then(|r| r).into()
}

impl<T> Drop for Adapter<T> {
    fn drop(&mut self) {
        // SAFETY: `inner` is dropped here only, once, and never used afterwards.
        let dropped = catch_panic(|| unsafe { ManuallyDrop::drop(&mut self.inner) });
        if let Err(e) = dropped {
            // No caller can receive an error from a drop; stderr reaches the job's log, and the
            // run's outcome stays what training decided. Not `eprintln!`, which panics when
            // stderr is gone (a closed pipe), and a panic here would abort the process.
            let _ = writeln!(
                std::io::stderr(),
                "drover: plugin {} panicked while being dropped ({}); the instance may have leaked resources",
                self.label,
                e.message()
            );
        }
    }
}

impl<T: AlgorithmImpl> Adapter<T> {
    /// Wraps `inner`, an instance of the plugin described by `info`.
    fn new(inner: T, info: &PluginInfo) -> Self {
        Self {
            inner: ManuallyDrop::new(inner),
            label: format!("`{}` {}", info.name, info.version),
            poisoned: None,
            context: None,
        }
    }

    /// Like [`guarded`], but refuses to run after an earlier panic and records a new one.
    fn call<R>(
        &mut self,
        f: impl FnOnce(&mut T) -> Result<R, PluginError>,
    ) -> RResult<R, PluginError> {
        if let Some(msg) = &self.poisoned {
            return RResult::RErr(PluginError::internal(format!(
                "refusing the call: an earlier call panicked ({msg})"
            )));
        }
        let inner = &mut *self.inner;
        let r = guarded(|| f(inner));
        if let RResult::RErr(e) = &r {
            if e.kind() == Some(crate::PluginErrorKind::Panic) {
                self.poisoned = Some(e.message().to_owned());
            }
        }
        r
    }
}

fn rollout_from_view<'v>(view: &'v RolloutViewRef<'_>) -> Rollout<'v> {
    let metadata = view
        .metadata_keys()
        .into_iter()
        .filter_map(|k| {
            let col = view.metadata(k.as_rstr()).into_option()?;
            Some((k.into_string(), col.as_slice()))
        })
        .collect();
    Rollout {
        num_sequences: view.num_sequences(),
        seq_len: view.seq_len(),
        mask: view.mask().as_slice(),
        rewards: view.rewards().as_slice(),
        terminated: view.terminated().as_slice(),
        truncated: view.truncated().as_slice(),
        values: view.values().as_slice(),
        next_values: view.next_values().as_slice(),
        logp_old: view.logp_old().as_slice(),
        logp_ref: view.logp_ref().as_slice(),
        entropy_old: view.entropy_old().as_slice(),
        group_ids: view.group_ids().as_slice(),
        sample_weights: view.sample_weights().as_slice(),
        metadata,
        seed: view.seed(),
    }
}

fn minibatch_from_view<'v>(view: &'v LossViewRef<'_>) -> Minibatch<'v> {
    Minibatch {
        logp_new: view.logp_new().as_slice(),
        logp_old: view.logp_old().as_slice(),
        logp_ref: view.logp_ref().as_slice(),
        advantages: view.advantages().as_slice(),
        returns: view.returns().as_slice(),
        values_new: view.values_new().as_slice(),
        values_old: view.values_old().as_slice(),
        entropy_new: view.entropy_new().as_slice(),
        token_weights: view.token_weights().as_slice(),
        seq_index: view.seq_index().as_slice(),
        num_sequences: view.num_sequences(),
        seq_lengths: view.seq_lengths().as_slice(),
        seq_group_ids: view.seq_group_ids().as_slice(),
        seed: view.seed(),
        // Not in the frozen view: set from the 1.3 minibatch context, when one was sent.
        rollout_index: None,
        position: None,
    }
}

fn check_out(name: &str, out: &[f32], expected: usize) -> Result<(), PluginError> {
    check_len(&format!("output `{name}`"), out.len(), expected, false)
}

impl<T: AlgorithmImpl> Algorithm for Adapter<T> {
    fn compute_advantages(
        &mut self,
        batch: RolloutViewRef<'_>,
        mut advantages: RSliceMut<'_, f32>,
        mut returns: RSliceMut<'_, f32>,
    ) -> RResult<RVec<Metric>, PluginError> {
        self.call(|alg| {
            // Reading the view runs host code only; still inside the guard for uniformity.
            let rollout = rollout_from_view(&batch);
            rollout.check()?;
            let n = rollout.num_sequences * rollout.seq_len;
            let (adv, ret) = (&mut *advantages, &mut *returns);
            check_out("advantages", adv, n)?;
            check_out("returns", ret, n)?;
            adv.fill(0.0);
            ret.fill(0.0);
            alg.compute_advantages(&rollout, adv, ret).map(RVec::from)
        })
    }

    fn loss(
        &mut self,
        mb: LossViewRef<'_>,
        mut loss: RSliceMut<'_, f32>,
        mut d_logp: RSliceMut<'_, f32>,
        mut d_value: RSliceMut<'_, f32>,
        mut d_entropy: RSliceMut<'_, f32>,
    ) -> RResult<RVec<Metric>, PluginError> {
        let context = self.context.take();
        self.call(|alg| {
            let mut mb = minibatch_from_view(&mb);
            if let Some(c) = &context {
                c.apply(&mut mb);
            }
            mb.check()?;
            let mut out = LossOutputs {
                loss: &mut loss,
                d_logp: &mut d_logp,
                d_value: &mut d_value,
                d_entropy: &mut d_entropy,
            };
            let m = mb.len();
            for (name, buf) in [
                ("loss", &mut *out.loss),
                ("d_logp", &mut *out.d_logp),
                ("d_value", &mut *out.d_value),
                ("d_entropy", &mut *out.d_entropy),
            ] {
                check_out(name, buf, m)?;
                buf.fill(0.0);
            }
            alg.loss(&mb, &mut out).map(RVec::from)
        })
    }

    fn on_epoch_end(
        &mut self,
        epoch: u32,
        metrics: RSlice<'_, Metric>,
    ) -> RResult<bool, PluginError> {
        self.call(|alg| alg.on_epoch_end(epoch, metrics.as_slice()))
    }

    fn on_iteration(&mut self, info: IterationInfo<'_>) -> RResult<IterationControl, PluginError> {
        self.call(|alg| alg.on_iteration(&info))
    }

    fn keep_group(&self, rewards: RSlice<'_, f32>) -> RResult<bool, PluginError> {
        if let Some(msg) = &self.poisoned {
            return RResult::RErr(PluginError::internal(format!(
                "refusing the call: an earlier call panicked ({msg})"
            )));
        }
        guarded(|| self.inner.keep_group(rewards.as_slice()))
    }
}

extern "C" fn info_entry<T: AlgorithmImpl>() -> RResult<PluginInfo, PluginError> {
    guarded(|| Ok(T::info()))
}

extern "C" fn resolve_params_entry<T: AlgorithmImpl>(
    params_json: RStr<'_>,
) -> RResult<RString, PluginError> {
    guarded(|| {
        let params = Params::parse(&T::info().params, params_json.as_str())?;
        Ok(RString::from(params.json().to_string()))
    })
}

extern "C" fn new_entry<T: AlgorithmImpl>(
    params_json: RStr<'_>,
    seed: u64,
) -> RResult<AlgorithmBox, PluginError> {
    guarded(|| {
        let info = T::info();
        let params = Params::parse(&info.params, params_json.as_str())?;
        let inner = T::new(&params, seed)?;
        // `TD_CanDowncast`: extension functions take the instance and downcast it back to
        // `Adapter<T>`, refusing an instance made by another library.
        Ok(Algorithm_TO::from_value(
            Adapter::new(inner, &info),
            TD_CanDowncast,
        ))
    })
}

fn sequence_loss_entry<T: AlgorithmImpl>(
    instance: &mut AlgorithmBox,
    mb: LossViewRef<'_>,
    log_ratio: RSlice<'_, f32>,
    mut loss: RSliceMut<'_, f32>,
    mut d_log_ratio: RSliceMut<'_, f32>,
) -> RResult<RVec<Metric>, PluginError> {
    let Ok(adapter) = instance.obj.downcast_as_mut::<Adapter<T>>() else {
        return RResult::RErr(PluginError::internal(
            "call `sequence_loss`: the instance was created by another plugin library",
        ));
    };
    let Some(f) = T::SEQUENCE_LOSS else {
        // Unreachable through `extension_entry`, which only hands out provided tables.
        return RResult::RErr(PluginError::internal("`sequence_loss` is not provided"));
    };
    let context = adapter.context.take();
    adapter.call(|alg| {
        let mut mb = minibatch_from_view(&mb);
        if let Some(c) = &context {
            c.apply(&mut mb);
        }
        mb.check()?;
        let s = mb.num_sequences;
        check_len("log_ratio", log_ratio.len(), s, false)?;
        let (loss, d) = (&mut *loss, &mut *d_log_ratio);
        check_out("loss", loss, s)?;
        check_out("d_log_ratio", d, s)?;
        loss.fill(0.0);
        d.fill(0.0);
        f(alg, &mb, log_ratio.as_slice(), loss, d).map(RVec::from)
    })
}

extern "C" fn sequence_loss_shim<T: AlgorithmImpl>(
    instance: &mut AlgorithmBox,
    mb: LossViewRef<'_>,
    log_ratio: RSlice<'_, f32>,
    loss: RSliceMut<'_, f32>,
    d_log_ratio: RSliceMut<'_, f32>,
) -> RResult<RVec<Metric>, PluginError> {
    // The downcast and the length checks run outside `Adapter::call`; guard them too.
    catch_panic(|| sequence_loss_entry::<T>(instance, mb, log_ratio, loss, d_log_ratio))
        .and_then(|r| r.into_result())
        .into()
}

/// The instance as `Adapter<T>`, or the error a call on another library's instance gets.
fn own_adapter<'a, T: AlgorithmImpl>(
    instance: &'a mut AlgorithmBox,
    call: &str,
) -> Result<&'a mut Adapter<T>, PluginError> {
    instance.obj.downcast_as_mut::<Adapter<T>>().map_err(|_| {
        PluginError::internal(format!(
            "call `{call}`: the instance was created by another plugin library"
        ))
    })
}

fn save_state_entry<T: AlgorithmImpl>(instance: &mut AlgorithmBox) -> RResult<RVec<u8>, PluginError> {
    let (adapter, f) = match (own_adapter::<T>(instance, "save_state"), T::PLUGIN_STATE) {
        (Ok(a), Some(f)) => (a, f),
        (Err(e), _) => return RResult::RErr(e),
        // Unreachable through `extension_entry`, which only hands out provided tables.
        (_, None) => return RResult::RErr(PluginError::internal("`save_state` is not provided")),
    };
    adapter.call(|alg| (f.save)(alg).map(RVec::from))
}

fn load_state_entry<T: AlgorithmImpl>(
    instance: &mut AlgorithmBox,
    bytes: RSlice<'_, u8>,
) -> RResult<(), PluginError> {
    let (adapter, f) = match (own_adapter::<T>(instance, "load_state"), T::PLUGIN_STATE) {
        (Ok(a), Some(f)) => (a, f),
        (Err(e), _) => return RResult::RErr(e),
        (_, None) => return RResult::RErr(PluginError::internal("`load_state` is not provided")),
    };
    adapter.call(|alg| (f.load)(alg, bytes.as_slice()))
}

extern "C" fn save_state_shim<T: AlgorithmImpl>(
    instance: &mut AlgorithmBox,
) -> RResult<RVec<u8>, PluginError> {
    // The downcast runs outside `Adapter::call`; guard it too.
    catch_panic(|| save_state_entry::<T>(instance)).and_then(|r| r.into_result()).into()
}

extern "C" fn load_state_shim<T: AlgorithmImpl>(
    instance: &mut AlgorithmBox,
    bytes: RSlice<'_, u8>,
) -> RResult<(), PluginError> {
    catch_panic(|| load_state_entry::<T>(instance, bytes)).and_then(|r| r.into_result()).into()
}

fn set_context_entry<T: AlgorithmImpl>(
    instance: &mut AlgorithmBox,
    context: &v1_3::MinibatchInfo<'_>,
) -> Result<(), PluginError> {
    let adapter = own_adapter::<T>(instance, "minibatch_context")?;
    // Dropped first: an inconsistent context must not leave the previous one in place.
    adapter.context = None;
    let rollout_sequences = usize::try_from(context.rollout_sequences).map_err(|_| {
        PluginError::invalid_input(format!(
            "`rollout_sequences` {} does not fit this platform",
            context.rollout_sequences
        ))
    })?;
    let index = context.rollout_index.as_slice();
    check_rollout_index(index, Some(rollout_sequences))?;
    adapter.context = Some(OwnedContext {
        rollout_index: index.to_vec(),
        position: MinibatchPosition {
            rollout_sequences,
            iteration: context.iteration,
            epoch: context.epoch,
            minibatch: context.minibatch,
        },
    });
    Ok(())
}

extern "C" fn set_context_shim<T: AlgorithmImpl>(
    instance: &mut AlgorithmBox,
    context: &v1_3::MinibatchInfo<'_>,
) -> RResult<(), PluginError> {
    // No author code runs here, but a panic must still not unwind into the host.
    catch_panic(|| set_context_entry::<T>(instance, context)).and_then(|r| r).into()
}

/// The `'static` extension tables of plugin type `T` (one per table type and `T`).
struct Tables<T>(PhantomData<T>);

impl<T: AlgorithmImpl> Tables<T> {
    const SEQUENCE_LOSS: &'static v1_1::SequenceLoss = &v1_1::SequenceLoss {
        sequence_loss: sequence_loss_shim::<T>,
    };
    const PLUGIN_STATE: &'static v1_3::PluginState = &v1_3::PluginState {
        save_state: save_state_shim::<T>,
        load_state: load_state_shim::<T>,
    };
    const MINIBATCH_CONTEXT: &'static v1_3::MinibatchContext = &v1_3::MinibatchContext {
        set_context: set_context_shim::<T>,
    };
}

/// The root module's `extension` entry for `T`: every table `T` provides, by name.
#[doc(hidden)]
pub extern "C" fn extension_entry<T: AlgorithmImpl>(name: RStr<'_>) -> ROption<Extension> {
    extension_entry_as_of::<T, { crate::INTERFACE_VERSION.to_bits() }>(name)
}

/// [`extension_entry`] of a plugin recording interface `VERSION` (packed as
/// `InterfaceVersion::to_bits`): it answers only tables that version had, as a plugin built
/// against it would (the hidden `@interface_version` arm of the export macro, for drover's
/// "built against an older minor" fixtures).
#[doc(hidden)]
pub extern "C" fn extension_entry_as_of<T: AlgorithmImpl, const VERSION: u64>(
    name: RStr<'_>,
) -> ROption<Extension> {
    fn known<E: ExtensionTable>(version: u64) -> bool {
        let v = crate::InterfaceVersion::from_bits(version);
        (v.major, v.minor) >= (E::SINCE.major, E::SINCE.minor)
    }
    // Nothing here should panic, but a panic must not unwind into the host: report "absent".
    catch_unwind(|| match name.as_str() {
        v1_1::SequenceLoss::NAME
            if T::SEQUENCE_LOSS.is_some() && known::<v1_1::SequenceLoss>(VERSION) =>
        {
            ROption::RSome(Extension::new(Tables::<T>::SEQUENCE_LOSS))
        }
        v1_3::PluginState::NAME
            if T::PLUGIN_STATE.is_some() && known::<v1_3::PluginState>(VERSION) =>
        {
            ROption::RSome(Extension::new(Tables::<T>::PLUGIN_STATE))
        }
        // Always exported: it only stores what the host sends for the next loss call, which a
        // plugin that does not read `Minibatch::rollout_index` never looks at.
        v1_3::MinibatchContext::NAME if known::<v1_3::MinibatchContext>(VERSION) => {
            ROption::RSome(Extension::new(Tables::<T>::MINIBATCH_CONTEXT))
        }
        _ => ROption::RNone,
    })
    .unwrap_or(ROption::RNone)
}

/// Builds the root module for `T`; called once per loaded library by the code
/// [`export_algorithm!`](crate::export_algorithm) generates. `extension` is
/// [`extension_entry::<T>`] except in drover's own fixtures.
#[doc(hidden)]
pub fn root_module<T: AlgorithmImpl>(
    extension: extern "C" fn(RStr<'_>) -> ROption<Extension>,
) -> AlgorithmMod_Ref {
    AlgorithmMod {
        info: info_entry::<T>,
        resolve_params: resolve_params_entry::<T>,
        new: new_entry::<T>,
        extension,
    }
    .leak_into_prefix()
}

/// Exports `$ty` (an [`AlgorithmImpl`]) as this `cdylib`'s drover algorithm plugin.
///
/// Generates the `#[no_mangle]` interface-version function the host checks first, and the
/// abi_stable root module (what `#[export_root_module]` would write; spelled out here so the
/// plugin crate needs no direct `abi_stable` dependency). Use it once, at the crate root.
///
/// The build fails with `compile_error!` when the plugin crate is compiled with
/// `panic = "abort"`: every entry point catches panics with `catch_unwind`, which an aborting
/// build cannot do, so a panic would kill the whole job instead of failing the call with its
/// message and line. (`cfg(panic)` is evaluated in the crate that expands the macro, the
/// plugin, with the strategy cargo compiles it with; `cargo test` always unwinds.)
#[macro_export]
macro_rules! export_algorithm {
    ($ty:ty) => {
        $crate::export_algorithm!(@interface_version $ty, $crate::INTERFACE_VERSION);
    };
    // Hidden arms for drover's own fixtures (`tests/plugins/*`): record another interface
    // version (and answer only the extension tables it had, as a build against it would), and
    // (`@custom_extensions`) answer extension look-ups with another function.
    (@interface_version $ty:ty, $version:expr) => {
        $crate::export_algorithm!(
            @custom_extensions $ty, $version,
            $crate::__private::extension_entry_as_of::<$ty, { ($version).to_bits() }>
        );
    };
    (@custom_extensions $ty:ty, $version:expr, $extension:expr) => {
        #[cfg(panic = "abort")]
        compile_error!(
            "drover plugins must be built with `panic = \"unwind\"` (the default): this crate is \
             compiled with `panic = \"abort\"`, under which the panics `export_algorithm!` \
             catches would kill the whole drover-job instead of failing the call with their \
             message and line; remove `panic = \"abort\"` from the profile that builds the plugin \
             (e.g. [profile.release] in Cargo.toml or .cargo/config.toml)"
        );

        /// The drover plugin interface version this plugin was built against (packed
        /// `major << 32 | minor`); read by the host before anything else.
        #[no_mangle]
        pub extern "C" fn drover_plugin_interface_version() -> u64 {
            let v: $crate::InterfaceVersion = $version;
            v.to_bits()
        }

        #[doc(hidden)]
        fn __drover_root_module() -> $crate::AlgorithmMod_Ref {
            $crate::__private::root_module::<$ty>($extension)
        }

        // The symbol name is abi_stable's mangled `ROOT_MODULE_LOADER_NAME`; the api crate
        // asserts at compile time that the two agree.
        #[doc(hidden)]
        #[no_mangle]
        #[allow(non_upper_case_globals)] // the name is fixed by abi_stable's loader
        pub static _1as_0lib_1header_0root_bmodule_bloader: $crate::__private::abi_stable::library::LibHeader = {
            extern "C" fn __drover_erased_root_module() -> $crate::__private::abi_stable::library::RootModuleResult {
                $crate::__private::abi_stable::library::__call_root_module_loader(__drover_root_module)
            }
            // SAFETY: the constructor returns the prefix reference of an `AlgorithmMod_Ref`,
            // which is the module type named here, as `from_constructor` requires.
            unsafe {
                $crate::__private::abi_stable::library::LibHeader::from_constructor::<$crate::AlgorithmMod_Ref>(
                    __drover_erased_root_module,
                    $crate::__private::abi_stable::library::CheckTypeLayout::Yes,
                )
            }
        };
    };
}

/// The abi_stable symbol name the macro above hard-codes.
pub(crate) const EXPORTED_ROOT_MODULE_SYMBOL: &str = "_1as_0lib_1header_0root_bmodule_bloader";

const _: () = {
    // If abi_stable ever changes its mangling, fail the build of this crate, not at load time.
    let (a, b) = (
        EXPORTED_ROOT_MODULE_SYMBOL.as_bytes(),
        abi_stable::library::ROOT_MODULE_LOADER_NAME.as_bytes(),
    );
    assert!(a.len() == b.len());
    let mut i = 0;
    while i < a.len() {
        assert!(a[i] == b[i]);
        i += 1;
    }
};

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// Counts its drops, then panics in `Drop`, as a plugin whose cleanup fails does.
    struct PanicsOnDrop;

    static DROPS: AtomicUsize = AtomicUsize::new(0);

    impl Drop for PanicsOnDrop {
        fn drop(&mut self) {
            DROPS.fetch_add(1, Ordering::SeqCst);
            panic!("deliberate panic in Drop");
        }
    }

    impl AlgorithmImpl for PanicsOnDrop {
        fn info() -> PluginInfo {
            PluginInfo::new("drop_panics", "0.1.0", "test")
        }
        fn new(_: &Params, _: u64) -> Result<Self, PluginError> {
            Ok(Self)
        }
        fn compute_advantages(&mut self, _: &Rollout<'_>, _: &mut [f32], _: &mut [f32]) -> Result<Vec<Metric>, PluginError> {
            Ok(Vec::new())
        }
        fn loss(&mut self, _: &Minibatch<'_>, _: &mut LossOutputs<'_>) -> Result<Vec<Metric>, PluginError> {
            Ok(Vec::new())
        }
    }

    /// Review finding: the host drops an instance through abi_stable's `destroy_box`, which
    /// aborts the process when a panic unwinds out of it (this test binary died with "Aborting
    /// to handle the panic" before the adapter caught it), so a `drover-job` that had finished
    /// training exited as failed.
    #[test]
    fn a_panic_while_dropping_the_instance_is_caught() {
        let instance = match new_entry::<PanicsOnDrop>(RStr::from("{}"), 0) {
            RResult::ROk(instance) => instance,
            RResult::RErr(e) => panic!("new failed: {e}"),
        };
        let before = DROPS.load(Ordering::SeqCst);
        let dropped = catch_unwind(AssertUnwindSafe(|| drop(instance)));
        assert!(dropped.is_ok(), "the panic must not leave the adapter");
        assert_eq!(DROPS.load(Ordering::SeqCst), before + 1, "the plugin's own Drop ran once");
    }
}
