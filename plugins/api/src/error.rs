//! `PluginError`: the error every plugin entry point returns across the ABI.
#![expect(
    non_local_definitions,
    reason = "abi_stable 0.11's `StableAbi` derive emits impls inside a const"
)]

use std::fmt;

use abi_stable::{
    std_types::{ROption, RString},
    StableAbi,
};

/// What went wrong inside a plugin call.
///
/// Crosses the ABI wrapped in [`PluginErrorKind_NE`] (abi_stable's `NonExhaustive`), so
/// variants can be added in a minor interface version without breaking shipped plugins.
#[repr(u8)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq)]
#[sabi(kind(WithNonExhaustive(size = [u64; 1], traits(Debug, Clone, PartialEq))))]
#[non_exhaustive]
pub enum PluginErrorKind {
    /// The params JSON was rejected; [`PluginError::key`] names the offending key.
    InvalidParams,
    /// A batch handed to the plugin had inconsistent shapes or missing buffers.
    InvalidInput,
    /// A computation produced NaN/Inf or otherwise failed numerically.
    Numerical,
    /// A bug or unexpected state inside the plugin.
    Internal,
    /// The plugin panicked; the export macro caught it and [`PluginError::message`] holds the
    /// panic message.
    Panic,
}

impl PluginErrorKind {
    /// A short lowercase name, used in messages.
    pub fn name(self) -> &'static str {
        match self {
            Self::InvalidParams => "invalid params",
            Self::InvalidInput => "invalid input",
            Self::Numerical => "numerical error",
            Self::Internal => "internal error",
            Self::Panic => "panic",
        }
    }
}

/// The error type of every plugin entry point.
///
/// `Display` gives a lowercase fragment such as
/// "invalid params: key `clip_coef`: expected a number, got \"x\"", which the host prefixes
/// with the plugin name, version and call.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq)]
pub struct PluginError {
    /// The kind of failure.
    pub kind: PluginErrorKind_NE,
    /// The params key concerned, for [`PluginErrorKind::InvalidParams`].
    pub key: ROption<RString>,
    /// Human-readable reason, lowercase, no trailing period.
    pub message: RString,
}

impl PluginError {
    /// An error of `kind` with `message` and no key.
    pub fn new(kind: PluginErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind: PluginErrorKind_NE::new(kind),
            key: ROption::RNone,
            message: RString::from(message.into()),
        }
    }

    /// A rejected parameter: `key` names it, `reason` says why.
    pub fn invalid_params(key: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            kind: PluginErrorKind_NE::new(PluginErrorKind::InvalidParams),
            key: ROption::RSome(RString::from(key.into())),
            message: RString::from(reason.into()),
        }
    }

    /// A batch with wrong shapes or a missing buffer.
    pub fn invalid_input(message: impl Into<String>) -> Self {
        Self::new(PluginErrorKind::InvalidInput, message)
    }

    /// A numerical failure (NaN, Inf, division by zero).
    pub fn numerical(message: impl Into<String>) -> Self {
        Self::new(PluginErrorKind::Numerical, message)
    }

    /// A bug inside the plugin.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(PluginErrorKind::Internal, message)
    }

    /// A caught panic, `message` being the panic payload.
    pub fn panic(message: impl Into<String>) -> Self {
        Self::new(PluginErrorKind::Panic, message)
    }

    /// The kind, or `None` when a newer plugin sent a kind this crate does not know.
    pub fn kind(&self) -> Option<PluginErrorKind> {
        self.kind.as_enum().ok().copied()
    }

    /// The params key concerned, if any.
    pub fn key(&self) -> Option<&str> {
        self.key.as_ref().map(|k| k.as_str()).into_option()
    }

    /// The reason, without kind or key.
    pub fn message(&self) -> &str {
        self.message.as_str()
    }
}

impl fmt::Display for PluginError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind() {
            Some(kind) => f.write_str(kind.name())?,
            None => write!(f, "error of unknown kind {}", self.kind.get_discriminant())?,
        }
        if let Some(key) = self.key() {
            write!(f, ": key `{key}`")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for PluginError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_kind_key_and_reason() {
        let e = PluginError::invalid_params("clip_coef", "must be at least 0, got -1");
        assert_eq!(
            e.to_string(),
            "invalid params: key `clip_coef`: must be at least 0, got -1"
        );
        assert_eq!(e.kind(), Some(PluginErrorKind::InvalidParams));
        assert_eq!(PluginError::panic("boom").to_string(), "panic: boom");
    }
}
