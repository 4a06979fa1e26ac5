//! The drover plugin interface version and the rule that decides which plugins a host loads.

use std::fmt;

use abi_stable::StableAbi;

/// A drover plugin interface version, `major.minor`.
///
/// This is the version of the *interface* (the types in this crate that cross the ABI), not of
/// any crate. Within a major the v1 types are frozen; additive changes (a new extension table
/// in [`crate::ext`], a variant added to a non-exhaustive enum) bump `minor`; anything else
/// bumps `major`. See `docs/design/plugin-abi.md`.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct InterfaceVersion {
    /// Incremented on a breaking change; a host loads only plugins of its own major.
    pub major: u32,
    /// Incremented on an additive change; a host loads plugins of any minor of its major.
    pub minor: u32,
}

impl InterfaceVersion {
    /// Makes a version from its parts.
    pub const fn new(major: u32, minor: u32) -> Self {
        Self { major, minor }
    }

    /// Packs the version into the `u64` returned by the [`VERSION_SYMBOL`] function.
    ///
    /// A bare integer keeps that symbol readable even by a host whose `InterfaceVersion`
    /// layout differs, which is the whole point of checking it before abi_stable does.
    pub const fn to_bits(self) -> u64 {
        ((self.major as u64) << 32) | self.minor as u64
    }

    /// Inverse of [`InterfaceVersion::to_bits`].
    pub const fn from_bits(bits: u64) -> Self {
        Self {
            major: (bits >> 32) as u32,
            minor: bits as u32,
        }
    }

    /// Whether a host providing `self` can load a plugin built against `plugin`.
    ///
    /// Same major, any minor: the root module, `Algorithm` and the views are frozen within a
    /// major, so their layouts agree. What differs between minors is the set of extension
    /// tables: a host asking an older plugin for a newer table gets "not provided", and a
    /// newer plugin's extra tables are never asked for.
    pub const fn can_load(self, plugin: InterfaceVersion) -> bool {
        self.major == plugin.major
    }
}

impl fmt::Display for InterfaceVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// The interface version this crate defines, and that `export_algorithm!` records in a plugin.
///
/// 1.0: the frozen v1 types and the `extension` look-up. 1.1: [`crate::ext::v1_1::SequenceLoss`].
/// 1.2: prompt datasets: [`IterationInfo::next_prompts`](crate::IterationInfo::next_prompts)
/// and per-prompt [`IterationControl::group_sizes`](crate::IterationControl::group_sizes)
/// (Knapsack RL), the [`metadata::PROMPT_ID`](crate::metadata::PROMPT_ID) column. No frozen
/// type changed; a 1.1 host passes none of these inputs, so `next_prompts` is `None` there.
/// 1.3: [`crate::ext::v1_3::PluginState`], plugin state saved in checkpoints, and
/// [`crate::ext::v1_3::MinibatchContext`], the rollout index of each minibatch sequence sent
/// before each loss call ([`Minibatch::rollout_index`](crate::Minibatch::rollout_index)).
pub const INTERFACE_VERSION: InterfaceVersion = InterfaceVersion::new(1, 3);

/// Name of the `#[no_mangle] extern "C" fn() -> u64` every plugin exports (see
/// [`InterfaceVersion::to_bits`]). The host reads it before abi_stable's own checks so that a
/// mismatch is reported in drover's terms, with both versions named.
pub const VERSION_SYMBOL: &str = "drover_plugin_interface_version";

/// The abi_stable version string of the root module, kept in lockstep with
/// [`INTERFACE_VERSION`]'s major: for majors ≥ 1 abi_stable then only demands equal majors, so
/// its check never contradicts drover's policy (it would, with the crate's own 0.x version,
/// whose semver rule is "same minor").
pub(crate) const ROOT_MODULE_VERSION: &str = "1.0.0";

const fn parse_u32(s: &str) -> u32 {
    let b = s.as_bytes();
    let (mut i, mut n) = (0, 0u32);
    while i < b.len() {
        n = n * 10 + (b[i] - b'0') as u32;
        i += 1;
    }
    n
}

const _: () = {
    // abi_stable's layout check compares the package version of every type it meets (for 0.x,
    // the minors must be equal; for x ≥ 1, the majors), so this crate's version must not move
    // independently of the interface: crate `M.m.p` is interface `M.m`.
    assert!(parse_u32(env!("CARGO_PKG_VERSION_MAJOR")) == INTERFACE_VERSION.major);
    assert!(parse_u32(env!("CARGO_PKG_VERSION_MINOR")) == INTERFACE_VERSION.minor);
};

const _: () = {
    // `ROOT_MODULE_VERSION` must start with the interface major; checked at compile time.
    let b = ROOT_MODULE_VERSION.as_bytes();
    assert!(INTERFACE_VERSION.major == 1 && b[0] == b'1' && b[1] == b'.');
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_same_major_any_minor() {
        let host = InterfaceVersion::new(1, 3);
        assert!(host.can_load(InterfaceVersion::new(1, 0)));
        assert!(host.can_load(InterfaceVersion::new(1, 2)));
        assert!(host.can_load(InterfaceVersion::new(1, 4)));
        assert!(!host.can_load(InterfaceVersion::new(2, 0)));
        assert!(!host.can_load(InterfaceVersion::new(0, 2)));
    }

    #[test]
    fn bits_round_trip() {
        let v = InterfaceVersion::new(99, 7);
        assert_eq!(InterfaceVersion::from_bits(v.to_bits()), v);
        assert_eq!(v.to_string(), "99.7");
    }
}
