//! The JSON-lines files a job appends to (`interruptions.jsonl`), surviving a write cut short
//! (a full disk, a crash), by the rules of the orchestrator's ledger
//! (orchestrator/src/backend/slurm/ledger.rs and jsonl.rs): an append first ends a torn last
//! line with a newline, so only the fragment is lost; a reader keeps a record an older job
//! appended right after a fragment on the same line, and warns about every line it cannot
//! read, so a budget counted from the file is never silently short.

use std::io::{self, Write};
use std::path::Path;

use serde::de::{DeserializeOwned, IgnoredAny};

/// How every record of drover's JSON-lines files begins (its first field): where a fused line's
/// second record starts. The text cannot occur inside a JSON string, whose quotes are escaped.
const RECORD_START: &str = "{\"format_version\"";

/// Appends `record` (one JSON line, without its newline) to `path`, created if missing, and
/// syncs it; a last line left without its newline by a write cut short is ended first.
pub(crate) fn append_line(path: &Path, record: &[u8]) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    let mut f = std::fs::OpenOptions::new().create(true).read(true).append(true).open(path)?;
    let len = f.metadata()?.len();
    let mut bytes = Vec::with_capacity(record.len() + 2);
    if len > 0 {
        let mut last = [0u8];
        f.read_exact_at(&mut last, len - 1)?;
        if last[0] != b'\n' {
            bytes.push(b'\n');
        }
    }
    bytes.extend_from_slice(record);
    bytes.push(b'\n');
    f.write_all(&bytes)?;
    f.sync_all()
}

/// The records of the JSON-lines file `path`, oldest first; a missing file is none. A line
/// that is not a record is skipped with a warning naming the file and line, except that a
/// record appended right after a torn fragment on the same line is kept; a file that is there
/// but cannot be read is none, with a warning.
pub(crate) fn read_records<T: DeserializeOwned>(path: &Path) -> Vec<T> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Vec::new(),
        Err(e) => {
            tracing::warn!("cannot read `{}`: {e}; its records are not counted", path.display());
            return Vec::new();
        }
    };
    let mut records = Vec::new();
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let n = i + 1;
        match serde_json::from_str::<T>(line) {
            Ok(record) => records.push(record),
            Err(e) if is_json(line) => tracing::warn!("`{}`: line {n} is not a record this drover-job reads ({e}): skipped", path.display()),
            Err(_) => match line.rfind(RECORD_START).filter(|&at| at > 0).map(|at| &line[at..]) {
                Some(rest) if is_json(rest) => match serde_json::from_str::<T>(rest) {
                    Ok(record) => {
                        tracing::warn!(
                            "`{}`: line {n} begins with a write cut short (a full disk or a crash): the record after it is kept",
                            path.display()
                        );
                        records.push(record);
                    }
                    Err(e) => tracing::warn!(
                        "`{}`: line {n} begins with a write cut short, and the record after it is not one this drover-job reads ({e}): skipped",
                        path.display()
                    ),
                },
                _ => tracing::warn!("`{}`: line {n} is not JSON, a write cut short (a full disk or a crash): skipped", path.display()),
            },
        }
    }
    records
}

fn is_json(text: &str) -> bool {
    serde_json::from_str::<IgnoredAny>(text).is_ok()
}

#[cfg(test)]
mod tests {
    use crate::checkpoint::{count_interruptions, record_interruption, Interruption, INTERRUPTIONS_JSONL};

    /// A write cut short (a full disk, a crash) left a fragment without its newline; the next
    /// stop was appended right after it, on the same line, and the reader skipped that whole
    /// line: the budget was counted one stop short. The append now ends the fragment first, and
    /// a record an older job fused after one is still counted.
    #[test]
    fn a_stop_after_a_torn_line_is_counted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(INTERRUPTIONS_JSONL);
        std::fs::write(&path, r#"{"format_version":2,"reason":"time_li"#).unwrap();
        record_interruption(dir.path(), Interruption::TimeLimit, 4).unwrap();
        assert_eq!(count_interruptions(dir.path(), Interruption::TimeLimit), 1);
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 2, "the fragment was ended: {text}");
        // What an older drover-job wrote: the record fused after the fragment.
        let fused = format!("{}\n", text.replace('\n', ""));
        std::fs::write(&path, &fused).unwrap();
        assert_eq!(count_interruptions(dir.path(), Interruption::TimeLimit), 1, "{fused}");
        // A file ending in a newline gets none added.
        record_interruption(dir.path(), Interruption::Terminated, 5).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 2, "{text}");
        assert_eq!(count_interruptions(dir.path(), Interruption::Terminated), 1);
    }
}
