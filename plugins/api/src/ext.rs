//! Extensions: how a minor interface version adds capabilities beside the frozen v1 types.
//!
//! The v1 types ([`AlgorithmMod`](crate::AlgorithmMod), [`Algorithm`](crate::Algorithm), the
//! views) never change within major 1: abi_stable's layout check refuses a plugin whose prefix
//! type has *fewer* fields than the host expects, so growing them would lock out every plugin
//! built before (see `docs/design/plugin-abi.md`). A minor version instead adds an extension: a
//! `#[repr(C)]` table of `extern "C"` functions, defined once in a `v1_N` module here and then
//! frozen like the v1 types. The host asks the root module's
//! [`extension`](crate::AlgorithmMod::extension) entry for it by [`ExtensionTable::NAME`] and
//! gets an [`Extension`]: the plugin's table plus the [`TypeLayout`] it was compiled with. The
//! host compares that layout with its own before using the table, so a mismatch is an error
//! naming the extension, never undefined behaviour. COM's `QueryInterface` works the same way.
//!
//! Per-instance capabilities are tables whose functions take the instance
//! (`&mut AlgorithmBox`) as their first argument; the plugin side downcasts it to its own type
//! and refuses instances created by another library.

use abi_stable::{type_layout::TypeLayout, StableAbi};

use crate::version::InterfaceVersion;

/// A table of `extern "C"` functions that a plugin may export as an extension.
///
/// # Safety
/// `NAME` must be unique among extension tables, and `Self::LAYOUT` must describe the type the
/// host reinterprets the plugin's pointer as: the host trusts [`Extension::table`] to point to
/// a `'static` value of `Self` once the layouts match. Only `drover-plugin-api` implements it
/// (and drover's own tests, to fake a mismatched table).
pub unsafe trait ExtensionTable: StableAbi + Sync + 'static {
    /// The name the host looks the table up by, e.g. `drover.sequence_loss`. Never reused for
    /// another table: a changed table is a new table with a new name.
    const NAME: &'static str;
    /// The interface version that introduced the table.
    const SINCE: InterfaceVersion;
}

/// What the root module's `extension` entry returns for a name it knows.
#[repr(C)]
#[derive(StableAbi, Clone, Copy)]
pub struct Extension {
    /// Layout of the table type the plugin was compiled with (`<E as StableAbi>::LAYOUT`).
    pub layout: &'static TypeLayout,
    /// The interface version that introduced the table, as the plugin's api crate says.
    pub since: InterfaceVersion,
    /// Points to a `'static` table of the type `layout` describes.
    pub table: *const (),
}

// SAFETY: `table` points to an immutable `'static` value of a `Sync` type (`ExtensionTable`
// requires `Sync`), so sharing the pointer between threads is sound.
unsafe impl Send for Extension {}
// SAFETY: as above.
unsafe impl Sync for Extension {}

impl Extension {
    /// Wraps a plugin's `'static` table, recording its layout.
    pub fn new<E: ExtensionTable>(table: &'static E) -> Self {
        Self {
            layout: E::LAYOUT,
            since: E::SINCE,
            table: (table as *const E).cast(),
        }
    }

    /// The table as `E`, if the plugin's layout is compatible with `E`'s.
    ///
    /// # Errors
    /// abi_stable's description of the mismatch, on one line.
    pub fn get<E: ExtensionTable>(&self) -> Result<&'static E, String> {
        abi_stable::abi_stability::abi_checking::check_layout_compatibility(E::LAYOUT, self.layout)
            .map_err(|e| {
                e.to_string()
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" ")
            })?;
        // SAFETY: the layouts are compatible, and `Extension::new` (the only way a plugin built
        // with this crate makes one) stores a pointer to a `'static E`.
        Ok(unsafe { &*self.table.cast::<E>() })
    }
}

/// Extensions introduced by interface 1.1. Frozen once released, like the v1 types.
pub mod v1_1 {
    use abi_stable::{
        std_types::{RResult, RSlice, RSliceMut, RVec},
        StableAbi,
    };

    use super::ExtensionTable;
    use crate::{
        algorithm::AlgorithmBox, error::PluginError, types::Metric, version::InterfaceVersion,
        views::LossViewRef,
    };

    /// A sequence-level loss (P3O, GSPO-like objectives; see docs/design/plugin-abi.md): the loss of
    /// each sequence as a function of its *sequence* log-ratio
    /// `Δ_s = Σ_{t ∈ s, w_t > 0} (logp_new,t − logp_old,t)`.
    ///
    /// The v1 `loss` sees tokens, possibly a part of a sequence; this hook is called with
    /// minibatches of whole sequences, and the host computes `Δ_s` and applies the chain rule
    /// (`∂L/∂logp_new,t = ∂L/∂Δ_s` for every valid token `t` of `s`).
    #[repr(C)]
    #[derive(StableAbi)]
    pub struct SequenceLoss {
        /// For each sequence `s` of the minibatch writes `loss[s]` and `d_log_ratio[s]`
        /// (`∂(Σ loss)/∂Δ_s`, aggregation weights folded in); both have length
        /// `mb.num_sequences()`. `instance` must come from the same library's `new`.
        pub sequence_loss: extern "C" fn(
            instance: &mut AlgorithmBox,
            mb: LossViewRef<'_>,
            log_ratio: RSlice<'_, f32>,
            loss: RSliceMut<'_, f32>,
            d_log_ratio: RSliceMut<'_, f32>,
        ) -> RResult<RVec<Metric>, PluginError>,
    }

    // SAFETY: the name is unique and `LAYOUT` is derived for this very type.
    unsafe impl ExtensionTable for SequenceLoss {
        const NAME: &'static str = "drover.sequence_loss";
        const SINCE: InterfaceVersion = InterfaceVersion::new(1, 1);
    }
}

/// Extensions introduced by interface 1.3. Frozen once released, like the v1 types.
pub mod v1_3 {
    use abi_stable::{
        std_types::{RResult, RSlice, RVec},
        StableAbi,
    };

    use super::ExtensionTable;
    use crate::{algorithm::AlgorithmBox, error::PluginError, version::InterfaceVersion};

    /// A plugin's internal state across iterations, for checkpoints: what an instance learned
    /// that is not a pure function of its params, seed and the iteration number (Knapsack RL's
    /// per-prompt success rates, a scheduled μ set in `on_iteration`).
    ///
    /// A run stopped by a time-limit warning or a preemption saves these bytes in its
    /// checkpoint; the requeued run makes a fresh instance with the same params and seed and
    /// loads them before its first iteration, so it continues as if uninterrupted. The bytes
    /// are the plugin's own format: the host stores them as they are. Put a format name and a
    /// version in them (`drover_plugin_api::state::to_json` does), so a plugin can refuse bytes
    /// another plugin, or an incompatible version of itself, wrote.
    #[repr(C)]
    #[derive(StableAbi)]
    pub struct PluginState {
        /// The instance's state as bytes. `instance` must come from the same library's `new`.
        pub save_state:
            extern "C" fn(instance: &mut AlgorithmBox) -> RResult<RVec<u8>, PluginError>,
        /// Replaces the state of `instance`, a fresh instance made with the params and seed of
        /// the one that saved `bytes`; an error (e.g. `invalid_input`) when `bytes` are not a
        /// state this plugin can read.
        pub load_state: extern "C" fn(
            instance: &mut AlgorithmBox,
            bytes: RSlice<'_, u8>,
        ) -> RResult<(), PluginError>,
    }

    // SAFETY: the name is unique and `LAYOUT` is derived for this very type.
    unsafe impl ExtensionTable for PluginState {
        const NAME: &'static str = "drover.plugin_state";
        const SINCE: InterfaceVersion = InterfaceVersion::new(1, 3);
    }

    /// The context of one loss minibatch, passed by reference to
    /// [`MinibatchContext::set_context`].
    ///
    /// A plain `#[repr(C)]` struct, frozen with its table, not an abi_stable prefix type:
    /// abi_stable refuses a plugin whose prefix type has *fewer* fields than the host's, so a
    /// grown prefix type would lock out every plugin built before it. A later minor that must
    /// send more adds a new table with a new struct (`docs/design/plugin-abi.md`). Most
    /// per-sequence needs take no new field at all: the plugin records what it needs per
    /// rollout sequence in `compute_advantages` and looks it up through `rollout_index`.
    #[repr(C)]
    #[derive(StableAbi, Clone, Copy, Debug)]
    pub struct MinibatchInfo<'a> {
        /// For each sequence of the minibatch, in `LossView::num_sequences()` order, its index
        /// among the `rollout_sequences` sequences of the rollout batch the last
        /// `compute_advantages` saw. Distinct within a minibatch.
        pub rollout_index: RSlice<'a, u32>,
        /// `B` of that rollout batch: every `rollout_index` entry is below it.
        pub rollout_sequences: u64,
        /// The iteration (1-based), as later passed to `on_iteration`.
        pub iteration: u64,
        /// The update epoch within the iteration (0-based), as passed to `on_epoch_end`.
        pub epoch: u32,
        /// The minibatch within the epoch (0-based).
        pub minibatch: u32,
    }

    /// The loss stage's link to the rollout: before each loss call (`loss`, or the 1.1
    /// `sequence_loss`) the host tells the instance which rollout sequence each minibatch
    /// sequence is ([`MinibatchInfo::rollout_index`]) and where the minibatch sits in training.
    /// The context applies to the **next loss call only**; a loss call without one before it
    /// has none (as with a 1.0–1.2 host, which never calls this).
    ///
    /// This is how per-sequence values computed in `compute_advantages` (CHORD's `is_expert`,
    /// PF-PPO's expected copies) reach the loss without borrowing another buffer's meaning:
    /// the plugin records them per rollout sequence and looks them up by `rollout_index`.
    /// `export_algorithm!` exports it for every plugin built against 1.3 or later (authors
    /// read `Minibatch::rollout_index`; there is nothing to opt into).
    #[repr(C)]
    #[derive(StableAbi)]
    pub struct MinibatchContext {
        /// Stores `context` for the instance's next loss call; an `invalid_input` error when it
        /// is inconsistent (an index not below `rollout_sequences`, a repeated index).
        /// `instance` must come from the same library's `new`.
        pub set_context: extern "C" fn(
            instance: &mut AlgorithmBox,
            context: &MinibatchInfo<'_>,
        ) -> RResult<(), PluginError>,
    }

    // SAFETY: the name is unique and `LAYOUT` is derived for this very type.
    unsafe impl ExtensionTable for MinibatchContext {
        const NAME: &'static str = "drover.minibatch_context";
        const SINCE: InterfaceVersion = InterfaceVersion::new(1, 3);
    }
}

