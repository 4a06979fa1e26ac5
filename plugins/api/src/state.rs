//! Plugin state in checkpoints (interface 1.3, [`crate::ext::v1_3::PluginState`]): a JSON
//! envelope naming the state's format and version, for plugins that do not want to design
//! bytes of their own.
//!
//! ```
//! # use drover_plugin_api::{state, PluginError};
//! #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
//! struct Rates { seen: Vec<(u32, u64)> } // f64s as `to_bits`: exact through JSON
//! let bytes = state::to_json("my_algo", 1, &Rates { seen: vec![(3, 0.5f64.to_bits())] })?;
//! let back: Rates = state::from_json("my_algo", 1, &bytes)?;
//! assert_eq!(back.seen, [(3, 0.5f64.to_bits())]);
//! assert!(state::from_json::<Rates>("other", 1, &bytes).is_err());
//! # Ok::<(), PluginError>(())
//! ```
//!
//! Floats: serde_json's default parser may round the last bit of an `f64`; store
//! `f64::to_bits` when a resumed run must continue bit for bit.

use serde::{de::DeserializeOwned, Deserialize, Serialize};

use crate::error::PluginError;

#[derive(Serialize)]
struct EnvelopeOut<'a, S> {
    format: &'a str,
    version: u32,
    state: &'a S,
}

#[derive(Deserialize)]
struct EnvelopeIn {
    format: String,
    version: u32,
    state: serde_json::Value,
}

/// `{"format": format, "version": version, "state": state}` as JSON bytes.
///
/// # Errors
/// `internal` when `state` cannot be serialised (e.g. a map with non-string keys).
pub fn to_json<S: Serialize>(format: &str, version: u32, state: &S) -> Result<Vec<u8>, PluginError> {
    serde_json::to_vec(&EnvelopeOut { format, version, state })
        .map_err(|e| PluginError::internal(format!("cannot serialise the `{format}` state: {e}")))
}

/// The state inside bytes written by [`to_json`] with the same `format` and `version`.
///
/// # Errors
/// `invalid_input` naming what is wrong: not such an envelope, another format (another
/// plugin's state), another version, or a state that does not parse as `S`.
pub fn from_json<S: DeserializeOwned>(format: &str, version: u32, bytes: &[u8]) -> Result<S, PluginError> {
    let bad = |reason: String| PluginError::invalid_input(format!("not a `{format}` state version {version}: {reason}"));
    let env: EnvelopeIn = serde_json::from_slice(bytes)
        .map_err(|e| bad(format!("expected a JSON object with `format`, `version` and `state` ({e})")))?;
    if env.format != format || env.version != version {
        return Err(bad(format!("the bytes hold a `{}` state version {}", env.format, env.version)));
    }
    serde_json::from_value(env.state).map_err(|e| bad(format!("`state`: {e}")))
}

/// One `f64` (a schedule's coefficient, a running estimate) as [`to_json`] bytes, stored as
/// its bit pattern so that a resumed run continues bit for bit.
///
/// # Errors
/// Those of [`to_json`].
pub fn f64_to_json(format: &str, version: u32, value: f64) -> Result<Vec<u8>, PluginError> {
    to_json(format, version, &value.to_bits())
}

/// The `f64` in bytes written by [`f64_to_json`]; a non-finite value is refused, since no
/// plugin saves one on purpose.
///
/// # Errors
/// Those of [`from_json`], and `invalid_input` naming `format` for a NaN or an infinity.
pub fn finite_f64_from_json(format: &str, version: u32, bytes: &[u8]) -> Result<f64, PluginError> {
    let value = f64::from_bits(from_json(format, version, bytes)?);
    if value.is_finite() {
        Ok(value)
    } else {
        Err(PluginError::invalid_input(format!("the `{format}` state holds {value}, not a finite number")))
    }
}
