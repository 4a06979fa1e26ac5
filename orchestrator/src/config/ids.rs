//! `RunId` and `ConfigId`: SHA-256 of canonical JSON, first 16 hex digits (results-layout.md).

use std::fmt;

use serde_json::Value;
use sha2::{Digest, Sha256};

/// Identity of one run: hash of its fully resolved configuration, seed included.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RunId(String);

/// Identity of a configuration: the same hash without the seed; runs differing only in seed share it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConfigId(String);

macro_rules! id_impls {
    ($ty:ident) => {
        impl $ty {
            /// Hashes the canonical JSON of `value`.
            pub fn of(value: &Value) -> Self {
                $ty(hash16(value))
            }
            /// The 16 hex digits.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}
id_impls!(RunId);
id_impls!(ConfigId);

impl RunId {
    /// `s` as a run id when it has the shape [`RunId::of`] gives: 16 lowercase hex digits.
    ///
    /// Ids read back from disk (`sweep.json`, the Slurm tasks file) go through this, so a damaged
    /// or edited file cannot name a path outside `runs/` or split a shell word.
    pub fn parse(s: &str) -> Option<RunId> {
        let hex = s.len() == 16 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        hex.then(|| RunId(s.to_string()))
    }
}

impl RunId {
    /// The id of a value whose canonical JSON is `canonical` (as [`canonical_json`] writes it):
    /// expansion builds that text once per configuration and only splices each seed in.
    pub(crate) fn of_canonical(canonical: &str) -> RunId {
        RunId(hash16_text(canonical))
    }
}

fn hash16(value: &Value) -> String {
    hash16_text(&canonical_json(value))
}

fn hash16_text(canonical: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digest = Sha256::digest(canonical.as_bytes());
    digest.iter().take(8).flat_map(|b| [HEX[usize::from(b >> 4)], HEX[usize::from(b & 0xf)]]).map(char::from).collect()
}

/// Canonical JSON: object keys sorted, no whitespace.
///
/// Keys are sorted here explicitly rather than relying on `serde_json::Map` being a `BTreeMap`,
/// because any crate in the build enabling serde_json's `preserve_order` would silently change
/// every id.
pub fn canonical_json(value: &Value) -> String {
    let mut out = String::new();
    write_canonical(value, &mut out);
    out
}

fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                push_json_string(key, out);
                out.push(':');
                write_canonical(&map[key.as_str()], out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        Value::String(text) => push_json_string(text, out),
        scalar => out.push_str(&scalar.to_string()),
    }
}

/// `text` as a JSON string literal, as serde_json writes it (the escapes are part of every id).
fn push_json_string(text: &str, out: &mut String) {
    // serde_json writes the same bytes for a `&str` as for a `Value::String`, without the clone.
    match serde_json::to_string(text) {
        Ok(quoted) => out.push_str(&quoted),
        // Serializing a `&str` cannot fail; should it, the old path gives the same text.
        Err(_) => out.push_str(&Value::String(text.to_string()).to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn canonical_json_sorts_keys_at_every_level() {
        let a = json!({"b": 1, "a": {"d": [1, {"z": 0, "y": 1}], "c": "x"}});
        assert_eq!(canonical_json(&a), r#"{"a":{"c":"x","d":[1,{"y":1,"z":0}]},"b":1}"#);
    }

    #[test]
    fn ids_are_16_hex_digits_and_differ_by_content() {
        let a = RunId::of(&json!({"x": 1}));
        let b = RunId::of(&json!({"x": 2}));
        assert_eq!(a.as_str().len(), 16);
        assert!(a.as_str().chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
        // Pinned: an accidental change of the hashing scheme would orphan every results directory.
        assert_eq!(RunId::of(&json!({})).as_str(), "44136fa355b3678a");
    }

    #[test]
    fn parse_accepts_made_ids_and_nothing_a_path_or_shell_could_misread() {
        let made = RunId::of(&json!({"x": 1}));
        assert_eq!(RunId::parse(made.as_str()), Some(made));
        let bad = [
            "", "../../x", "a b", "44136fa355b3678", "44136fa355b3678a0", "44136FA355B3678A", "44136fa355b3678g",
            "/4136fa355b3678a", "44136fa355b3678\n", "4413/fa355b3678a", "44136fa355b3678\0", "44136fa355b367é",
        ];
        for id in bad {
            assert_eq!(RunId::parse(id), None, "{id:?}");
        }
    }
}
