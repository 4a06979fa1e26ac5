//! Reading drover's JSON-lines files (the ledger, and the files a job or its batch script
//! appends to): a line that is not JSON is a write cut short, skipped with one warning, and a
//! record appended right after such a fragment on the same line is still read.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// One line of a JSON-lines file (the ledger, or the files a job appends to), as read.
pub(super) enum JsonLine<'a, T> {
    /// A whole record.
    Record(T),
    /// A line that is not JSON, ending with a whole record: a writer appended the record right
    /// after a torn write without ending the torn line first (as drover did before it knew).
    Fused(T),
    /// Not JSON: a write cut short (a full disk, a crash).
    Torn,
    /// JSON, but not a record of this type (`text`: the JSON of the line, or of its fused record).
    Invalid { text: &'a str, error: serde_json::Error },
}

/// How every record of drover's JSON-lines files begins (its first field): where a fused line's
/// second record starts. The text cannot occur inside a JSON string, whose quotes are escaped.
pub(super) const RECORD_START: &str = "{\"format_version\"";

/// Reads one line of a JSON-lines file ([`JsonLine`]).
pub(super) fn parse_line<T: serde::de::DeserializeOwned>(line: &str) -> JsonLine<'_, T> {
    let is_json = |text: &str| serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok();
    match serde_json::from_str::<T>(line) {
        Ok(record) => JsonLine::Record(record),
        Err(error) if is_json(line) => JsonLine::Invalid { text: line, error },
        Err(_) => match line.rfind(RECORD_START).filter(|&at| at > 0).map(|at| &line[at..]) {
            Some(rest) if is_json(rest) => match serde_json::from_str::<T>(rest) {
                Ok(record) => JsonLine::Fused(record),
                Err(error) => JsonLine::Invalid { text: rest, error },
            },
            _ => JsonLine::Torn,
        },
    }
}

/// The non-blank lines of a JSON-lines file: (index, line, whether a newline ends it).
pub(super) fn jsonl_lines(text: &str) -> impl Iterator<Item = (usize, &str, bool)> {
    let count = text.lines().count();
    text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()).map(move |(i, l)| (i, l, i + 1 < count || text.ends_with('\n')))
}

/// The `format_version` a JSON record says it has, if any.
pub(super) fn format_version(json: &str) -> Option<u64> {
    #[derive(Deserialize)]
    struct Versioned {
        format_version: Option<u64>,
    }
    serde_json::from_str::<Versioned>(json).ok()?.format_version
}

/// Warns, once per process for each file and line, that line `line` of `path` is a torn write
/// (`what`: what became of it). A waiting `drover run` reads its files at every poll.
pub(super) fn warn_torn(path: &Path, line: usize, what: &str) {
    warn_line(path, line, &format!("is not JSON, a write cut short (a full disk or a crash): {what}"));
}

/// Warns, once per process for each file, line and message, that line `line` of `path`
/// `message`.
pub(super) fn warn_line(path: &Path, line: usize, message: &str) {
    use std::sync::Mutex;
    static WARNED: Mutex<BTreeSet<(PathBuf, usize, String)>> = Mutex::new(BTreeSet::new());
    let first = WARNED.lock().map_or(true, |mut warned| warned.insert((path.to_path_buf(), line, message.to_string())));
    if first {
        tracing::warn!("`{}`: line {line} {message}", path.display());
    }
}
