//! Per-iteration metrics: streamed to `metrics.jsonl` as training goes (crash-safe, one flushed
//! line per iteration) and written once as `metrics.parquet` when the run completes (a stop
//! writes none: `train::completed_metrics`).
//!
//! A checkpoint (format 3) does not copy the rows: it vouches for the first lines of
//! `metrics.jsonl` ([`JsonlPrefix`]: their count, length and SHA-256, and the non-finite cells the
//! file holds as `null`), and a resumed job reads them back bit for bit ([`read_prefix`]).
//!
//! No row is kept in memory: the file is the only copy. A resume ([`read_prefix`]) and the final
//! Parquet file ([`MetricsLog::write_parquet`]) read it back a line at a time, and `metrics.parquet` is written a row group
//! ([`ROW_GROUP_ROWS`] rows) at a time, so a run of a million iterations needs no more memory
//! for its metrics than one of a thousand (docs/design/results-layout.md, "Memory").

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parquet::data_type::{DoubleType, Int64Type};
use parquet::errors::ParquetError;
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;
use parquet::file::writer::{SerializedFileWriter, SerializedRowGroupWriter};
use parquet::schema::types::Type;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use drover_plugin_api::host_metrics;

use crate::{fsio, JobError};

/// The format of `metrics.parquet` (its columns: docs/design/results-layout.md), written into
/// the file's key-value metadata under [`FORMAT_VERSION_KEY`] as JSON records carry theirs.
pub const METRICS_FORMAT_VERSION: u32 = 1;
/// The Parquet key-value metadata key of [`METRICS_FORMAT_VERSION`].
pub const FORMAT_VERSION_KEY: &str = "drover.format_version";
/// `metrics.jsonl` in the run directory.
pub const METRICS_JSONL: &str = "metrics.jsonl";
/// `metrics.parquet` in the run directory, written when the run completes.
pub const METRICS_PARQUET: &str = "metrics.parquet";
/// Rows per row group of `metrics.parquet`: the rows the final pass holds at once, as columns
/// (about 16 bytes a cell, some 5 MB with 20 columns). A run of fewer rows is one row group,
/// the file drover-job wrote before it streamed.
pub const ROW_GROUP_ROWS: usize = 16_384;

/// One training iteration's metrics (columns documented in docs/design/results-layout.md).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MetricsRow {
    /// 1-based iteration.
    pub iteration: i64,
    /// Environment steps so far.
    pub global_step: i64,
    /// Mean return of the episodes finished in this iteration (`None`: none finished).
    pub episodic_return_mean: Option<f64>,
    /// Episodes finished in this iteration.
    pub episodes: i64,
    /// Mean policy loss over the iteration's minibatches.
    pub policy_loss: Option<f64>,
    /// Mean value loss.
    pub value_loss: Option<f64>,
    /// Mean policy entropy.
    pub entropy: Option<f64>,
    /// Mean approximate KL (k3).
    pub approx_kl: Option<f64>,
    /// Mean clip fraction.
    pub clip_frac: Option<f64>,
    /// Learning rate used.
    pub lr: f64,
    /// Environment steps per second of this iteration.
    pub steps_per_sec: f64,
    /// Seconds since the job started.
    pub wall_time_s: f64,
    /// Further metrics the plugin reported, by name.
    #[serde(flatten)]
    pub extra: BTreeMap<String, f64>,
}

/// Names of the fixed optional columns, in file order.
const OPTIONAL_FIXED: [&str; 6] =
    [host_metrics::EPISODIC_RETURN_MEAN, "policy_loss", "value_loss", "entropy", "approx_kl", "clip_frac"];

/// The non-finite cells of the rows so far by (column, bits): ranges of row indices.
type NonFiniteMap = BTreeMap<(String, u64), Vec<[u64; 2]>>;

/// Appends rows to `metrics.jsonl`, and writes `metrics.parquet` from that file at the end.
///
/// It keeps no row, only what does not grow with them: what a checkpoint records of the file
/// ([`MetricsLog::checkpoint_prefix`]: the bytes written, their running SHA-256 and the
/// non-finite cells, so a checkpoint costs the same at iteration 10 as at iteration 10^6), the
/// row count and the names of the plugin's metrics (the Parquet file's extra columns).
pub struct MetricsLog {
    jsonl: BufWriter<File>,
    jsonl_path: PathBuf,
    /// Lines of `metrics.jsonl` so far.
    rows: u64,
    /// Bytes of `metrics.jsonl` so far, all of them whole lines.
    bytes: u64,
    /// SHA-256 of those bytes so far.
    hasher: Sha256,
    /// The non-finite cells of those lines.
    non_finite: NonFiniteMap,
    /// The plugin metric names of those lines (`MetricsRow::extra`), sorted.
    extra_names: BTreeSet<String>,
}

impl MetricsLog {
    /// Creates (truncates) `dir/metrics.jsonl`.
    pub fn create(dir: &Path) -> Result<Self, JobError> {
        let jsonl_path = dir.join(METRICS_JSONL);
        let file = File::create(&jsonl_path)
            .map_err(|source| JobError::Io { path: jsonl_path.clone(), source })?;
        Ok(Self {
            jsonl: BufWriter::new(file),
            jsonl_path,
            rows: 0,
            bytes: 0,
            hasher: Sha256::new(),
            non_finite: BTreeMap::new(),
            extra_names: BTreeSet::new(),
        })
    }

    /// Reopens `dir/metrics.jsonl` for a resumed run: a format-3 checkpoint's prefix stays as
    /// it is (the checkpoint vouches for it) and the file is cut right after it, dropping the
    /// rows written after the checkpoint; rows of an older checkpoint are written anew.
    pub fn resume(dir: &Path, resumed: Resumed) -> Result<Self, JobError> {
        let kept = match resumed {
            Resumed::Rewrite(rows) => {
                let mut log = Self::create(dir)?;
                for row in rows {
                    log.push(row)?;
                }
                return Ok(log);
            }
            Resumed::Kept(kept) => kept,
        };
        let jsonl_path = dir.join(METRICS_JSONL);
        let io = |source| JobError::Io { path: jsonl_path.clone(), source };
        let mut file = OpenOptions::new().write(true).create(true).truncate(false).open(&jsonl_path).map_err(io)?;
        let len = file.metadata().map_err(io)?.len();
        if len < kept.bytes {
            // Read whole a moment ago: set_len would pad the prefix with zeros.
            return Err(io(std::io::Error::other(format!("it shrank to {len} bytes while the job resumed from its first {}", kept.bytes))));
        }
        file.set_len(kept.bytes).map_err(io)?;
        file.seek(SeekFrom::End(0)).map_err(io)?;
        Ok(Self {
            jsonl: BufWriter::new(file),
            jsonl_path,
            rows: kept.rows,
            bytes: kept.bytes,
            hasher: kept.hasher,
            non_finite: kept.non_finite,
            extra_names: kept.extra_names,
        })
    }

    /// Appends one row and flushes it to the file (not to the disk: [`MetricsLog::checkpoint_prefix`]
    /// does that before a checkpoint vouches for the rows).
    pub fn push(&mut self, row: MetricsRow) -> Result<(), JobError> {
        let io = |source| JobError::Io { path: self.jsonl_path.clone(), source };
        let mut line = serde_json::to_vec(&row).map_err(|e| io(std::io::Error::other(e)))?;
        line.push(b'\n');
        self.jsonl.write_all(&line).map_err(io)?;
        self.jsonl.flush().map_err(io)?;
        self.hasher.update(&line);
        self.bytes += line.len() as u64;
        note_non_finite(&mut self.non_finite, self.rows, &row);
        self.rows += 1;
        note_names(&mut self.extra_names, row.extra);
        Ok(())
    }

    /// Rows written so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Makes every row written so far durable (fsync of the file and its directory) and
    /// returns what a checkpoint records of them: a checkpoint never vouches for lines a power
    /// cut could still take back.
    pub fn checkpoint_prefix(&mut self) -> Result<JsonlPrefix, JobError> {
        let io = |source| JobError::Io { path: self.jsonl_path.clone(), source };
        self.jsonl.flush().map_err(io)?;
        self.jsonl.get_ref().sync_data().map_err(io)?;
        fsio::sync_files(fsio::folder_of(&self.jsonl_path), &[])?;
        Ok(self.prefix())
    }

    /// What the file holds so far, as a checkpoint records it.
    fn prefix(&self) -> JsonlPrefix {
        JsonlPrefix {
            rows: self.rows,
            bytes: self.bytes,
            sha256: hex(&self.hasher.clone().finalize()),
            non_finite: self
                .non_finite
                .iter()
                .map(|((column, bits), rows)| NonFiniteCells { column: column.clone(), bits: format!("0x{bits:016x}"), rows: rows.clone() })
                .collect(),
        }
    }

    /// Writes every row to `path` as Parquet, through [`fsio::write_atomic_with`], and hands
    /// each row, in order, to `each` (the summary's statistics). The rows come from
    /// `metrics.jsonl`, read back a line at a time and checked as a resume checks them
    /// (length, SHA-256, non-finite cells): a file that changed under the job fails the write.
    /// The file is written a row group of [`ROW_GROUP_ROWS`] rows at a time, so its memory does
    /// not grow with the run.
    pub fn write_parquet(&mut self, path: &Path, each: impl FnMut(&MetricsRow)) -> Result<(), JobError> {
        self.write_parquet_in_groups(path, ROW_GROUP_ROWS, each)
    }

    fn write_parquet_in_groups(&mut self, path: &Path, group_rows: usize, mut each: impl FnMut(&MetricsRow)) -> Result<(), JobError> {
        self.jsonl.flush().map_err(|source| JobError::Io { path: self.jsonl_path.clone(), source })?;
        let expected = self.prefix();
        let names: Vec<String> = self.extra_names.iter().cloned().collect();
        fsio::write_atomic_with(path, |file| {
            let mut sink = ParquetSink::new(BufWriter::new(file), &names, group_rows).map_err(|e| parquet_error(path, e))?;
            let scanned = scan(&self.jsonl_path, &expected, Voucher::Job, |row| {
                each(&row);
                sink.push(&row)
            });
            match scanned {
                Ok(_) => {}
                Err(Scan::Jsonl(reason)) => return Err(JobError::Parquet { path: path.to_path_buf(), reason }),
                Err(Scan::Sink(e)) => return Err(parquet_error(path, e)),
            }
            let mut out = sink.finish().map_err(|e| parquet_error(path, e))?;
            out.flush().map_err(|source| JobError::Io { path: path.to_path_buf(), source })
        })
    }
}

/// A Parquet error writing `path` as a [`JobError`]: the I/O error itself when there is one, so
/// that a full disk is still a `disk_full` failure (`summary::failure_cause`).
fn parquet_error(path: &Path, err: ParquetError) -> JobError {
    match err {
        ParquetError::External(inner) => match inner.downcast::<std::io::Error>() {
            Ok(source) => JobError::Io { path: path.to_path_buf(), source: *source },
            Err(other) => JobError::Parquet { path: path.to_path_buf(), reason: other.to_string() },
        },
        other => JobError::Parquet { path: path.to_path_buf(), reason: other.to_string() },
    }
}

/// What a checkpoint (format 3) records of `metrics.jsonl` in place of the rows: the first
/// `rows` lines, `bytes` long, with SHA-256 `sha256`, are rows `1..=rows` exactly, once the
/// cells listed in `non_finite` (which the file holds as `null`, JSON having no NaN) are put back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JsonlPrefix {
    /// Lines (rows) the checkpoint vouches for.
    pub rows: u64,
    /// Their length in bytes, the last line's `\n` included.
    pub bytes: u64,
    /// SHA-256 of those bytes, lowercase hex.
    pub sha256: String,
    /// The rows' non-finite cells, one entry per column and bit pattern.
    pub non_finite: Vec<NonFiniteCells>,
}

/// The cells of one column that hold one non-finite bit pattern (a NaN payload, ±inf).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NonFiniteCells {
    /// The column, e.g. a plugin metric's name.
    pub column: String,
    /// `f64::to_bits` as `0x` and 16 hex digits.
    pub bits: String,
    /// Row ranges `[first, end)` of 0-based line indices, ascending and apart: a metric that is
    /// NaN in every row is one range, so the record does not grow with the run.
    pub rows: Vec<[u64; 2]>,
}

/// What a resumed job's [`MetricsLog`] starts from ([`MetricsLog::resume`]).
#[derive(Debug)]
pub enum Resumed {
    /// The rows of a format-1/2 checkpoint, which held them inline: the file is written anew.
    Rewrite(Vec<MetricsRow>),
    /// Format 3: the prefix of `metrics.jsonl` the checkpoint vouches for, read and checked
    /// ([`read_prefix`]); the file keeps it.
    Kept(KeptPrefix),
}

/// What [`read_prefix`] learnt of a verified prefix: what the log keeps of its rows.
#[derive(Debug)]
pub struct KeptPrefix {
    rows: u64,
    bytes: u64,
    hasher: Sha256,
    non_finite: NonFiniteMap,
    extra_names: BTreeSet<String>,
}

impl Resumed {
    /// The number of rows the run resumes with.
    pub fn rows(&self) -> u64 {
        match self {
            Resumed::Rewrite(rows) => rows.len() as u64,
            Resumed::Kept(kept) => kept.rows,
        }
    }
}

/// Names of the fixed columns that are not floats.
const INT_FIXED: [&str; 3] = [host_metrics::ITERATION, host_metrics::GLOBAL_STEP, host_metrics::EPISODES];
/// Names of the fixed float columns every row has.
const REQUIRED_FIXED: [&str; 3] = [host_metrics::LR, host_metrics::STEPS_PER_SEC, host_metrics::WALL_TIME_S];

/// Every float cell of `row` that holds a value, by column.
fn float_cells(row: &MetricsRow) -> impl Iterator<Item = (&str, f64)> {
    let optional = [row.episodic_return_mean, row.policy_loss, row.value_loss, row.entropy, row.approx_kl, row.clip_frac];
    let required = [row.lr, row.steps_per_sec, row.wall_time_s];
    OPTIONAL_FIXED
        .into_iter()
        .zip(optional)
        .filter_map(|(k, v)| Some((k, v?)))
        .chain(REQUIRED_FIXED.into_iter().zip(required))
        .chain(row.extra.iter().map(|(k, &v)| (k.as_str(), v)))
}

/// Adds the non-finite cells of row `index` (the next one) to `map`.
fn note_non_finite(map: &mut NonFiniteMap, index: u64, row: &MetricsRow) {
    for (column, x) in float_cells(row).filter(|(_, x)| !x.is_finite()) {
        let runs = map.entry((column.to_owned(), x.to_bits())).or_default();
        match runs.last_mut() {
            Some(run) if run[1] == index => run[1] += 1,
            _ => runs.push([index, index + 1]),
        }
    }
}

/// Adds the plugin metric names of a row to `names`.
fn note_names(names: &mut BTreeSet<String>, extra: BTreeMap<String, f64>) {
    names.extend(extra.into_keys());
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Reads back the rows `prefix` vouches for from `dir/metrics.jsonl` and checks them as the
/// Parquet pass does (`scan`), keeping none of them: only what the resumed [`MetricsLog`] needs (the running hash, the
/// non-finite cells, the plugin metric names). Lines after the prefix (written after the
/// checkpoint) are not read.
///
/// # Errors
/// Why the file does not hold what the checkpoint says, naming `metrics.jsonl`.
pub fn read_prefix(dir: &Path, prefix: &JsonlPrefix) -> Result<Resumed, String> {
    let (mut non_finite, mut extra_names, mut index) = (NonFiniteMap::new(), BTreeSet::new(), 0);
    let hasher = scan(&dir.join(METRICS_JSONL), prefix, Voucher::Checkpoint, |row| {
        note_non_finite(&mut non_finite, index, &row);
        index += 1;
        note_names(&mut extra_names, row.extra);
        Ok::<(), std::convert::Infallible>(())
    })
    .map_err(Scan::into_reason)?;
    Ok(Resumed::Kept(KeptPrefix { rows: prefix.rows, bytes: prefix.bytes, hasher, non_finite, extra_names }))
}

/// Reads back the rows `prefix` vouches for from `dir/metrics.jsonl`, one at a time and in
/// order, exactly as the job held them (the tests' view of what a resume reads): it checks the length, the hash and the line count,
/// puts the non-finite cells back and checks that each row writes the very line it was read
/// from. `each` may see rows before a later check fails: what it built is then to be dropped.
///
/// # Errors
/// Why the file does not hold what the checkpoint says, naming `metrics.jsonl`.
#[cfg(test)]
pub(crate) fn read_rows(dir: &Path, prefix: &JsonlPrefix, mut each: impl FnMut(MetricsRow)) -> Result<(), String> {
    scan(&dir.join(METRICS_JSONL), prefix, Voucher::Checkpoint, |row| {
        each(row);
        Ok::<(), std::convert::Infallible>(())
    })
    .map(drop)
    .map_err(Scan::into_reason)
}

/// Who vouches for the prefix being read, for the messages: a checkpoint at a resume, the job
/// itself when it writes `metrics.parquet` at the end.
#[derive(Debug, Clone, Copy)]
enum Voucher {
    Checkpoint,
    Job,
}

impl Voucher {
    /// "the checkpoint vouches for its first", "this job wrote": before a byte count.
    fn claims(self) -> &'static str {
        match self {
            Voucher::Checkpoint => "the checkpoint vouches for its first",
            Voucher::Job => "this job wrote",
        }
    }

    /// Whose hash `sha256` is, and when the file must have changed.
    fn recorded(self, sha256: &str) -> String {
        match self {
            Voucher::Checkpoint => format!("the checkpoint recorded {sha256} (the file changed after the checkpoint)"),
            Voucher::Job => format!("this job wrote {sha256} (the file changed while the job ran)"),
        }
    }

    /// "the checkpoint says", "this job wrote": before a line count.
    fn says(self) -> &'static str {
        match self {
            Voucher::Checkpoint => "the checkpoint says",
            Voucher::Job => "this job wrote",
        }
    }
}

/// Why [`scan`] stopped: the file is not what was vouched for, or `each` failed.
enum Scan<E> {
    Jsonl(String),
    Sink(E),
}

impl Scan<std::convert::Infallible> {
    fn into_reason(self) -> String {
        match self {
            Scan::Jsonl(reason) => reason,
            Scan::Sink(never) => match never {},
        }
    }
}

/// Streams the rows `prefix` vouches for from `path` into `each`, a line at a time, and
/// returns the running SHA-256 of the prefix. The checks, in the order a failure is reported:
/// the length, the hash (so a changed file is reported as such, not as the first line it
/// garbles), a torn last line, the line count, the non-finite ranges, each row. A row is
/// handed on only while no check has failed yet; an error of `each` stops at once.
fn scan<E>(path: &Path, prefix: &JsonlPrefix, voucher: Voucher, mut each: impl FnMut(MetricsRow) -> Result<(), E>) -> Result<Sha256, Scan<E>> {
    let cannot_read = |e: std::io::Error| Scan::Jsonl(format!("cannot read `{METRICS_JSONL}`: {e}"));
    let file = match File::open(path) {
        Ok(file) => Some(file),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && prefix.bytes == 0 => None,
        Err(e) => return Err(cannot_read(e)),
    };
    // The first failed check on the content, reported once the hash is known to match.
    let mut failed: Option<String> = None;
    let mut cursors = Vec::with_capacity(prefix.non_finite.len());
    for cells in &prefix.non_finite {
        match non_finite_runs(cells, prefix.rows) {
            Ok(bits) => cursors.push((cells.column.as_str(), bits, cells.rows.as_slice())),
            Err(e) => {
                failed.get_or_insert(e);
            }
        }
    }
    let (mut hasher, mut bytes, mut lines, mut torn) = (Sha256::new(), 0u64, 0u64, false);
    if let Some(file) = file {
        let mut reader = BufReader::with_capacity(1 << 16, file.take(prefix.bytes));
        let mut line = Vec::new();
        loop {
            line.clear();
            let n = reader.read_until(b'\n', &mut line).map_err(cannot_read)?;
            if n == 0 {
                break;
            }
            hasher.update(&line);
            bytes += n as u64;
            let Some(body) = line.strip_suffix(b"\n") else {
                // Only the last piece of the prefix can lack its newline.
                torn = true;
                break;
            };
            lines += 1;
            if failed.is_some() || lines > prefix.rows {
                continue;
            }
            match row_at(body, lines - 1, &mut cursors) {
                Ok(row) => each(row).map_err(Scan::Sink)?,
                Err(e) => failed = Some(e),
            }
        }
    }
    if bytes != prefix.bytes {
        return Err(Scan::Jsonl(format!("`{METRICS_JSONL}` holds {bytes} bytes, {} {}", voucher.claims(), prefix.bytes)));
    }
    let sha256 = hex(&hasher.clone().finalize());
    if sha256 != prefix.sha256 {
        return Err(Scan::Jsonl(format!(
            "the first {} bytes of `{METRICS_JSONL}` have SHA-256 {sha256}, {}",
            prefix.bytes,
            voucher.recorded(&prefix.sha256)
        )));
    }
    if torn {
        return Err(Scan::Jsonl(format!("the first {} bytes of `{METRICS_JSONL}` end inside a line", prefix.bytes)));
    }
    if lines != prefix.rows {
        return Err(Scan::Jsonl(format!(
            "`{METRICS_JSONL}`: {lines} lines in the first {} bytes, {} {}",
            prefix.bytes,
            voucher.says(),
            prefix.rows
        )));
    }
    match failed {
        Some(e) => Err(Scan::Jsonl(e)),
        None => Ok(hasher),
    }
}

/// The bits of the non-finite value `cells` lists, once its row ranges are checked to be
/// ascending, apart and within the first `rows` rows.
fn non_finite_runs(cells: &NonFiniteCells, rows: u64) -> Result<u64, String> {
    let bits = cells
        .bits
        .strip_prefix("0x")
        .and_then(|h| u64::from_str_radix(h, 16).ok())
        .filter(|&b| !f64::from_bits(b).is_finite())
        .ok_or_else(|| format!("`non_finite`: `{}` is not the bits of a non-finite f64", cells.bits))?;
    let mut end = 0;
    for &[first, last] in &cells.rows {
        if first < end || first >= last || last > rows {
            return Err(format!("`non_finite`: column `{}` has a bad row range [{first}, {last})", cells.column));
        }
        end = last;
    }
    Ok(bits)
}

/// The row of line `at` (0-based, `body` without its newline), with the non-finite cells the
/// `cursors` (column, bits, the ranges not yet passed) list for it.
fn row_at(body: &[u8], at: u64, cursors: &mut [(&str, u64, &[[u64; 2]])]) -> Result<MetricsRow, String> {
    let mut here = BTreeMap::new();
    for (column, bits, runs) in cursors.iter_mut() {
        while runs.first().is_some_and(|r| r[1] <= at) {
            *runs = &runs[1..];
        }
        if runs.first().is_some_and(|r| r[0] <= at) && here.insert(*column, *bits).is_some() {
            return Err(format!("`non_finite`: row {at} column `{column}` is listed twice"));
        }
    }
    let line = at + 1;
    let text = std::str::from_utf8(body).map_err(|e| format!("`{METRICS_JSONL}` line {line}: {e}"))?;
    decode_line(text, here).map_err(|e| format!("`{METRICS_JSONL}` line {line}: {e}"))
}

/// The row of one `metrics.jsonl` line, with the non-finite cells `non_finite` (column → bits)
/// that the line holds as `null`. Floats are parsed from their text by `str::parse`, which
/// rounds correctly, so the shortest representation serde_json wrote gives back the same bits
/// (serde_json's own parser may be one ulp off).
fn decode_line(line: &str, mut non_finite: BTreeMap<&str, u64>) -> Result<MetricsRow, String> {
    let mut cells: BTreeMap<String, &str> = BTreeMap::new();
    for (key, raw) in fields(line)? {
        if cells.insert(key.clone(), raw).is_some() {
            return Err(format!("column `{key}` appears twice"));
        }
    }
    let mut float = |k: &str, raw: Option<&str>| -> Result<Option<f64>, String> {
        match raw {
            None => Err(format!("`{k}` is missing")),
            Some("null") => Ok(non_finite.remove(k).map(f64::from_bits)),
            Some(text) => {
                let x: f64 = text.parse().map_err(|_| format!("`{k}`: `{text}` is not a number"))?;
                Ok(Some(x))
            }
        }
    };
    let int = |k: &str| -> Result<i64, String> {
        let text = cells.get(k).ok_or_else(|| format!("`{k}` is missing"))?;
        text.parse().map_err(|_| format!("`{k}`: `{text}` is not an integer"))
    };
    let [iteration, global_step, episodes] = [int(INT_FIXED[0])?, int(INT_FIXED[1])?, int(INT_FIXED[2])?];
    let mut optional = [None; 6];
    for (slot, k) in optional.iter_mut().zip(OPTIONAL_FIXED) {
        *slot = float(k, cells.get(k).copied())?;
    }
    let mut required = [0.0; 3];
    for (slot, k) in required.iter_mut().zip(REQUIRED_FIXED) {
        *slot = float(k, cells.get(k).copied())?.ok_or_else(|| format!("`{k}` is null and the checkpoint lists no non-finite value for it"))?;
    }
    let mut extra = BTreeMap::new();
    for (k, &raw) in cells.iter().filter(|(k, _)| !(INT_FIXED.contains(&k.as_str()) || OPTIONAL_FIXED.contains(&k.as_str()) || REQUIRED_FIXED.contains(&k.as_str()))) {
        let x = float(k, Some(raw))?.ok_or_else(|| format!("`{k}` is null and the checkpoint lists no non-finite value for it"))?;
        extra.insert(k.clone(), x);
    }
    if let Some(k) = non_finite.keys().next() {
        return Err(format!("the checkpoint lists a non-finite `{k}`, the line holds a number or nothing there"));
    }
    let [episodic_return_mean, policy_loss, value_loss, entropy, approx_kl, clip_frac] = optional;
    let [lr, steps_per_sec, wall_time_s] = required;
    let row = MetricsRow {
        iteration,
        global_step,
        episodic_return_mean,
        episodes,
        policy_loss,
        value_loss,
        entropy,
        approx_kl,
        clip_frac,
        lr,
        steps_per_sec,
        wall_time_s,
        extra,
    };
    // The row must write the very line: no float read differently, no column lost.
    let again = serde_json::to_string(&row).map_err(|e| e.to_string())?;
    if again != line {
        return Err("the row read back does not write the same line".into());
    }
    Ok(row)
}

/// The `(key, raw value)` pairs of a `metrics.jsonl` line, in order: a flat JSON object whose
/// values are numbers or `null`, as serde_json writes a [`MetricsRow`] (no whitespace). Lenient
/// on form: [`decode_line`] checks the row it makes writes the line back.
fn fields(line: &str) -> Result<Vec<(String, &str)>, String> {
    let body = line
        .strip_prefix('{')
        .and_then(|l| l.strip_suffix('}'))
        .ok_or("not a JSON object")?;
    let mut out = Vec::new();
    let mut rest = body;
    while !rest.is_empty() {
        // The key: a JSON string, up to its first unescaped quote.
        let bytes = rest.as_bytes();
        if bytes[0] != b'"' {
            return Err(format!("expected a key at `{}`", rest.chars().take(20).collect::<String>()));
        }
        let mut end = 1;
        while end < bytes.len() && bytes[end] != b'"' {
            end += if bytes[end] == b'\\' { 2 } else { 1 };
        }
        let quoted = rest.get(..=end).ok_or("a key is not closed")?;
        let key: String = serde_json::from_str(quoted).map_err(|e| format!("key {quoted}: {e}"))?;
        rest = rest[end + 1..].strip_prefix(':').ok_or_else(|| format!("no `:` after key {quoted}"))?;
        let value_end = rest.find(',').unwrap_or(rest.len());
        out.push((key, &rest[..value_end]));
        // Past the comma (a stray one is caught by the caller's check that the row writes the line).
        rest = rest.get(value_end + 1..).unwrap_or("");
    }
    Ok(out)
}

/// The schema of `metrics.parquet`: the fixed columns, then `extra_names` (sorted).
fn parquet_schema(extra_names: &[String]) -> Result<Type, ParquetError> {
    use parquet::basic::{Repetition, Type as Physical};
    let col = |name: &str, physical, rep| Type::primitive_type_builder(name, physical).with_repetition(rep).build().map(Arc::new);
    let mut fields = Vec::new();
    for name in INT_FIXED {
        fields.push(col(name, Physical::INT64, Repetition::REQUIRED)?);
    }
    for name in OPTIONAL_FIXED {
        fields.push(col(name, Physical::DOUBLE, Repetition::OPTIONAL)?);
    }
    for name in REQUIRED_FIXED {
        fields.push(col(name, Physical::DOUBLE, Repetition::REQUIRED)?);
    }
    for name in extra_names {
        fields.push(col(name, Physical::DOUBLE, Repetition::OPTIONAL)?);
    }
    Type::group_type_builder("metrics").with_fields(fields).build()
}

/// Writes `metrics.parquet` a row group at a time: it holds at most `group_rows` rows, as
/// columns, and writes them out as a row group when it has that many.
struct ParquetSink<'n, W: Write + Send> {
    writer: SerializedFileWriter<W>,
    /// The plugin metric columns, sorted.
    names: &'n [String],
    group_rows: usize,
    /// Whether a row group was written: a file without rows still has one, empty.
    wrote_group: bool,
    ints: [Vec<i64>; 3],
    optional: [Vec<Option<f64>>; 6],
    required: [Vec<f64>; 3],
    extra: Vec<Vec<Option<f64>>>,
}

impl<'n, W: Write + Send> ParquetSink<'n, W> {
    fn new(out: W, names: &'n [String], group_rows: usize) -> Result<Self, ParquetError> {
        let version = KeyValue::new(FORMAT_VERSION_KEY.to_string(), METRICS_FORMAT_VERSION.to_string());
        let props = Arc::new(WriterProperties::builder().set_key_value_metadata(Some(vec![version])).build());
        let writer = SerializedFileWriter::new(out, Arc::new(parquet_schema(names)?), props)?;
        Ok(Self {
            writer,
            names,
            group_rows: group_rows.max(1),
            wrote_group: false,
            ints: Default::default(),
            optional: Default::default(),
            required: Default::default(),
            extra: vec![Vec::new(); names.len()],
        })
    }

    fn push(&mut self, row: &MetricsRow) -> Result<(), ParquetError> {
        if let Some(name) = row.extra.keys().find(|k| self.names.binary_search(k).is_err()) {
            // The log saw every row it wrote; a name it did not see is a file that changed.
            return Err(ParquetError::General(format!("`{METRICS_JSONL}` has a metric `{name}` this job never wrote")));
        }
        for (column, v) in self.ints.iter_mut().zip([row.iteration, row.global_step, row.episodes]) {
            column.push(v);
        }
        let optional = [row.episodic_return_mean, row.policy_loss, row.value_loss, row.entropy, row.approx_kl, row.clip_frac];
        for (column, v) in self.optional.iter_mut().zip(optional) {
            column.push(v);
        }
        for (column, v) in self.required.iter_mut().zip([row.lr, row.steps_per_sec, row.wall_time_s]) {
            column.push(v);
        }
        for (column, name) in self.extra.iter_mut().zip(self.names) {
            column.push(row.extra.get(name).copied());
        }
        if self.ints[0].len() >= self.group_rows {
            self.write_group()?;
        }
        Ok(())
    }

    /// Writes the rows held as one row group, in the file's column order, and empties them.
    fn write_group(&mut self) -> Result<(), ParquetError> {
        let mut rg = self.writer.next_row_group()?;
        for values in &mut self.ints {
            let mut c = rg.next_column()?.ok_or_else(|| ParquetError::General("missing column".into()))?;
            c.typed::<Int64Type>().write_batch(values, None, None)?;
            c.close()?;
            values.clear();
        }
        for values in &mut self.optional {
            write_optional(&mut rg, values)?;
            values.clear();
        }
        for values in &mut self.required {
            let mut c = rg.next_column()?.ok_or_else(|| ParquetError::General("missing column".into()))?;
            c.typed::<DoubleType>().write_batch(values, None, None)?;
            c.close()?;
            values.clear();
        }
        for values in &mut self.extra {
            write_optional(&mut rg, values)?;
            values.clear();
        }
        rg.close()?;
        self.wrote_group = true;
        Ok(())
    }

    /// Writes the last row group and the footer; returns the writer it wrote to.
    fn finish(mut self) -> Result<W, ParquetError> {
        if !self.ints[0].is_empty() || !self.wrote_group {
            self.write_group()?;
        }
        self.writer.into_inner()
    }
}

/// Writes one optional float column of a row group: definition levels, then the values present.
fn write_optional<W: Write + Send>(rg: &mut SerializedRowGroupWriter<'_, W>, values: &[Option<f64>]) -> Result<(), ParquetError> {
    let defs: Vec<i16> = values.iter().map(|v| i16::from(v.is_some())).collect();
    let present: Vec<f64> = values.iter().flatten().copied().collect();
    let mut c = rg.next_column()?.ok_or_else(|| ParquetError::General("missing column".into()))?;
    c.typed::<DoubleType>().write_batch(&present, Some(&defs), None)?;
    c.close()
}

#[cfg(test)]
mod tests {
    use super::*;
    use parquet::file::reader::{FileReader, SerializedFileReader};
    use parquet::record::Field;

    fn row(i: i64, ret: Option<f64>) -> MetricsRow {
        MetricsRow {
            iteration: i,
            global_step: i * 1024,
            episodic_return_mean: ret,
            episodes: i64::from(ret.is_some()),
            policy_loss: Some(-0.01 * i as f64),
            value_loss: Some(1.0),
            entropy: Some(0.69),
            approx_kl: Some(0.001),
            clip_frac: Some(0.1),
            lr: 2.5e-4,
            steps_per_sec: 1e6,
            wall_time_s: i as f64,
            extra: BTreeMap::from([("grad_norm".to_string(), 0.5 * i as f64)]),
        }
    }

    /// The columns of a row that no plugin fills are the names the plugin API reserves (the
    /// trainer's further host columns are written under `host_metrics` constants too).
    #[test]
    fn the_rows_host_columns_are_reserved_for_the_host() {
        let mut r = row(1, Some(1.0));
        r.extra.clear();
        let serde_json::Value::Object(columns) = serde_json::to_value(&r).unwrap() else { panic!("an object") };
        let plugin_own = ["policy_loss", "value_loss", "entropy", "approx_kl", "clip_frac"];
        let host: Vec<&str> = columns.keys().map(String::as_str).filter(|k| !plugin_own.contains(k)).collect();
        assert_eq!(host.len(), 7, "{host:?}");
        for name in host {
            assert!(host_metrics::RESERVED.contains(&name), "`{name}` is not in host_metrics::RESERVED");
        }
    }

    /// Review (crash consistency, item 1): `metrics.parquet` had its own tmp-and-rename, which
    /// neither fsynced nor removed its temporary file when the rename failed; it now goes
    /// through `fsio::write_atomic`.
    #[test]
    fn a_failed_parquet_write_leaves_no_tmp() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = MetricsLog::create(dir.path()).unwrap();
        log.push(row(1, Some(1.0))).unwrap();
        let blocked = dir.path().join("metrics.parquet");
        std::fs::create_dir(&blocked).unwrap();
        std::fs::write(blocked.join("keep"), b"kept").unwrap();
        log.write_parquet(&blocked, |_| {}).expect_err("a non-empty directory is in the way");
        let mut names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        names.sort();
        assert_eq!(names, ["metrics.jsonl", "metrics.parquet"]);
    }

    #[test]
    fn parquet_round_trip_keeps_rows_nulls_and_extra_columns() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = MetricsLog::create(dir.path()).unwrap();
        log.push(row(1, None)).unwrap();
        log.push(row(2, Some(21.5))).unwrap();
        let path = dir.path().join("metrics.parquet");
        log.write_parquet(&path, |_| {}).unwrap();

        let reader = SerializedFileReader::new(File::open(&path).unwrap()).unwrap();
        assert_eq!(reader.metadata().file_metadata().num_rows(), 2);
        // Review (format versions, item 6): the file named no format version.
        let kv = reader.metadata().file_metadata().key_value_metadata().cloned().unwrap_or_default();
        let version = kv.iter().find(|kv| kv.key == FORMAT_VERSION_KEY).and_then(|kv| kv.value.clone());
        assert_eq!(version.as_deref(), Some("1"), "{kv:?}");
        let rows: Vec<_> = reader.get_row_iter(None).unwrap().map(|r| r.unwrap().to_string()).collect();
        assert!(rows[0].contains("episodic_return_mean: null"), "{}", rows[0]);
        assert!(rows[1].contains("episodic_return_mean: 21.5"), "{}", rows[1]);
        assert!(rows[1].contains("grad_norm: 1.0"), "{}", rows[1]);

        let jsonl = std::fs::read_to_string(dir.path().join("metrics.jsonl")).unwrap();
        assert_eq!(jsonl.lines().count(), 2);
        let second: serde_json::Value = serde_json::from_str(jsonl.lines().nth(1).unwrap()).unwrap();
        assert_eq!(second["episodic_return_mean"], 21.5);
        assert_eq!(second["grad_norm"], 1.0);
    }

    /// The Parquet encoder drover-job used before it streamed (every row in memory, one row
    /// group), kept verbatim as the reference the streaming writer is pinned to.
    fn old_encode_parquet(rows: &[MetricsRow]) -> Result<Vec<u8>, String> {
        use parquet::basic::{Repetition, Type as Physical};
        let extra_names: Vec<String> = {
            let mut names: Vec<String> = rows.iter().flat_map(|r| r.extra.keys().cloned()).collect();
            names.sort();
            names.dedup();
            names
        };
        let col = |name: &str, physical, rep| {
            Type::primitive_type_builder(name, physical)
                .with_repetition(rep)
                .build()
                .map(Arc::new)
                .map_err(|e| e.to_string())
        };
        let mut fields = vec![
            col(host_metrics::ITERATION, Physical::INT64, Repetition::REQUIRED)?,
            col(host_metrics::GLOBAL_STEP, Physical::INT64, Repetition::REQUIRED)?,
            col(host_metrics::EPISODES, Physical::INT64, Repetition::REQUIRED)?,
        ];
        for name in OPTIONAL_FIXED {
            fields.push(col(name, Physical::DOUBLE, Repetition::OPTIONAL)?);
        }
        for name in [host_metrics::LR, host_metrics::STEPS_PER_SEC, host_metrics::WALL_TIME_S] {
            fields.push(col(name, Physical::DOUBLE, Repetition::REQUIRED)?);
        }
        for name in &extra_names {
            fields.push(col(name, Physical::DOUBLE, Repetition::OPTIONAL)?);
        }
        let schema = Type::group_type_builder("metrics")
            .with_fields(fields)
            .build()
            .map_err(|e| e.to_string())?;
        let version = KeyValue::new(FORMAT_VERSION_KEY.to_string(), METRICS_FORMAT_VERSION.to_string());
        let props = Arc::new(WriterProperties::builder().set_key_value_metadata(Some(vec![version])).build());
        let mut writer =
            SerializedFileWriter::new(Vec::new(), Arc::new(schema), props).map_err(|e| e.to_string())?;
        let mut rg = writer.next_row_group().map_err(|e| e.to_string())?;

        let ints: [Vec<i64>; 3] = [
            rows.iter().map(|r| r.iteration).collect(),
            rows.iter().map(|r| r.global_step).collect(),
            rows.iter().map(|r| r.episodes).collect(),
        ];
        for values in &ints {
            let mut c = rg.next_column().map_err(|e| e.to_string())?.ok_or("missing column")?;
            c.typed::<Int64Type>().write_batch(values, None, None).map_err(|e| e.to_string())?;
            c.close().map_err(|e| e.to_string())?;
        }
        let optional: Vec<Vec<Option<f64>>> = vec![
            rows.iter().map(|r| r.episodic_return_mean).collect(),
            rows.iter().map(|r| r.policy_loss).collect(),
            rows.iter().map(|r| r.value_loss).collect(),
            rows.iter().map(|r| r.entropy).collect(),
            rows.iter().map(|r| r.approx_kl).collect(),
            rows.iter().map(|r| r.clip_frac).collect(),
        ];
        let write_optional = |rg: &mut parquet::file::writer::SerializedRowGroupWriter<'_, Vec<u8>>,
                              values: &[Option<f64>]|
         -> Result<(), String> {
            let defs: Vec<i16> = values.iter().map(|v| i16::from(v.is_some())).collect();
            let present: Vec<f64> = values.iter().flatten().copied().collect();
            let mut c = rg.next_column().map_err(|e| e.to_string())?.ok_or("missing column")?;
            c.typed::<DoubleType>().write_batch(&present, Some(&defs), None).map_err(|e| e.to_string())?;
            c.close().map_err(|e| e.to_string())
        };
        for values in &optional {
            write_optional(&mut rg, values)?;
        }
        let required: [Vec<f64>; 3] = [
            rows.iter().map(|r| r.lr).collect(),
            rows.iter().map(|r| r.steps_per_sec).collect(),
            rows.iter().map(|r| r.wall_time_s).collect(),
        ];
        for values in &required {
            let mut c = rg.next_column().map_err(|e| e.to_string())?.ok_or("missing column")?;
            c.typed::<DoubleType>().write_batch(values, None, None).map_err(|e| e.to_string())?;
            c.close().map_err(|e| e.to_string())?;
        }
        for name in &extra_names {
            let values: Vec<Option<f64>> = rows.iter().map(|r| r.extra.get(name).copied()).collect();
            write_optional(&mut rg, &values)?;
        }
        rg.close().map_err(|e| e.to_string())?;
        writer.into_inner().map_err(|e| e.to_string())
    }

    /// Row `i` of a run whose plugin metrics come and go (`warmup` in the first rows only,
    /// `late` from row 10 on, `ratio` every third row and NaN, -NaN, +-inf or an odd NaN
    /// payload there) and whose fixed columns hold `None`s, NaN and infinities now and then.
    fn varied_row(i: i64) -> MetricsRow {
        let special = [f64::NAN, -f64::NAN, f64::INFINITY, f64::NEG_INFINITY, f64::from_bits(0x7ff0_0000_dead_beef)];
        let mut r = row(i, (i % 4 != 0).then_some(i as f64 * 1.5));
        if i % 5 == 1 {
            r.episodic_return_mean = Some(f64::NAN);
        }
        r.value_loss = (i % 2 == 0).then_some(0.1 + 0.2 * i as f64);
        r.approx_kl = Some(if i == 7 { f64::INFINITY } else { 1e-300 * i as f64 });
        r.lr = if i == 5 { f64::NEG_INFINITY } else { 2.5e-4 / i as f64 };
        r.steps_per_sec = if i == 11 { f64::NAN } else { 1e6 / 3.0 };
        if i <= 4 {
            r.extra.insert("warmup".into(), -0.0);
        }
        if i >= 10 {
            r.extra.insert("late".into(), 5e-324 * i as f64);
        }
        if i % 3 == 0 {
            r.extra.insert("ratio".into(), special[i as usize % special.len()]);
        }
        r
    }

    /// A Parquet file's schema (as text), key-value metadata and rows (cells by column name).
    type ParquetContent = (String, Vec<(String, Option<String>)>, Vec<Vec<(String, Option<u64>)>>);

    /// A Parquet file as text the test can compare: its schema, key-value metadata and every
    /// row, each cell as its bits (a NaN's payload and sign included; `None` as null).
    fn parquet_content(path: &Path) -> ParquetContent {
        let reader = SerializedFileReader::new(File::open(path).unwrap()).unwrap();
        let meta = reader.metadata().file_metadata();
        let schema = format!("{:?}", meta.schema());
        let kv = meta.key_value_metadata().cloned().unwrap_or_default().into_iter().map(|kv| (kv.key, kv.value)).collect();
        let rows = reader
            .get_row_iter(None)
            .unwrap()
            .map(|r| {
                r.unwrap()
                    .get_column_iter()
                    .map(|(name, field)| {
                        let bits = match field {
                            Field::Null => None,
                            Field::Long(v) => Some(*v as u64),
                            Field::Double(v) => Some(v.to_bits()),
                            other => panic!("`{name}`: unexpected {other:?}"),
                        };
                        (name.clone(), bits)
                    })
                    .collect()
            })
            .collect();
        (schema, kv, rows)
    }

    /// Scale review: drover-job held every metrics row until the end of the run (0.83 KB a
    /// row: 844 MB at a million iterations) and encoded `metrics.parquet` whole in memory.
    /// It now writes the file from `metrics.jsonl`, a row group at a time; the file is the one
    /// the old encoder wrote: byte for byte when the run fits one row group, and the same
    /// schema, metadata and cells (every bit) when it is split into row groups, for plugin
    /// metrics that come and go and NaN/inf cells, in a fresh run and in a resumed one.
    #[test]
    fn the_streamed_parquet_file_is_the_one_the_in_memory_encoder_wrote() {
        let rows: Vec<MetricsRow> = (1..=40).map(varied_row).collect();
        let old = old_encode_parquet(&rows).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let old_path = dir.path().join("old.parquet");
        std::fs::write(&old_path, &old).unwrap();

        let fresh = tempfile::tempdir().unwrap();
        let mut log = MetricsLog::create(fresh.path()).unwrap();
        for r in &rows {
            log.push(r.clone()).unwrap();
        }
        let one_group = fresh.path().join("metrics.parquet");
        let mut seen = Vec::new();
        log.write_parquet(&one_group, |r| seen.push(r.iteration)).unwrap();
        assert!(std::fs::read(&one_group).unwrap() == old, "one row group: not the old encoder's bytes");
        assert_eq!(seen, (1..=40).collect::<Vec<_>>(), "every row handed on, in order");
        let in_groups = fresh.path().join("groups.parquet");
        log.write_parquet_in_groups(&in_groups, 7, |_| {}).unwrap();
        let reader = SerializedFileReader::new(File::open(&in_groups).unwrap()).unwrap();
        let groups: Vec<i64> = reader.metadata().row_groups().iter().map(|g| g.num_rows()).collect();
        assert_eq!(groups, [7, 7, 7, 7, 7, 5]);
        let want = parquet_content(&old_path);
        assert!(want.2.iter().flatten().any(|(k, v)| k == "ratio" && v.is_some_and(|b| f64::from_bits(b).is_nan())));
        assert_eq!(parquet_content(&in_groups), want);

        // Resumed: checkpointed at 13, killed after 3 more rows and half a line, resumed.
        let resumed_dir = tempfile::tempdir().unwrap();
        let mut log = MetricsLog::create(resumed_dir.path()).unwrap();
        for r in &rows[..13] {
            log.push(r.clone()).unwrap();
        }
        let prefix = log.checkpoint_prefix().unwrap();
        for r in &rows[13..16] {
            log.push(r.clone()).unwrap();
        }
        drop(log);
        let jsonl = resumed_dir.path().join(METRICS_JSONL);
        OpenOptions::new().append(true).open(&jsonl).unwrap().write_all(b"{\"iteration\":17,\"gl").unwrap();
        let resumed = read_prefix(resumed_dir.path(), &prefix).unwrap();
        assert_eq!(resumed.rows(), 13);
        let mut log = MetricsLog::resume(resumed_dir.path(), resumed).unwrap();
        for r in &rows[13..] {
            log.push(r.clone()).unwrap();
        }
        let path = resumed_dir.path().join("metrics.parquet");
        log.write_parquet(&path, |_| {}).unwrap();
        assert!(std::fs::read(&path).unwrap() == old, "resumed: not the old encoder's bytes");
        log.write_parquet_in_groups(&path, 6, |_| {}).unwrap();
        assert_eq!(parquet_content(&path), want);

        // No rows at all: one empty row group, as before.
        let empty = tempfile::tempdir().unwrap();
        let path = empty.path().join("metrics.parquet");
        MetricsLog::create(empty.path()).unwrap().write_parquet(&path, |_| {}).unwrap();
        assert!(std::fs::read(&path).unwrap() == old_encode_parquet(&[]).unwrap());
    }

    /// The memory the final pass holds is a row group's: never more rows than that, however
    /// many the run has (the old encoder held them all, in a single row group).
    #[test]
    fn the_parquet_writer_holds_one_row_group_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = MetricsLog::create(dir.path()).unwrap();
        for i in 1..=1000 {
            log.push(varied_row(i)).unwrap();
        }
        let path = dir.path().join("metrics.parquet");
        log.write_parquet_in_groups(&path, 64, |_| {}).unwrap();
        let reader = SerializedFileReader::new(File::open(&path).unwrap()).unwrap();
        let groups: Vec<i64> = reader.metadata().row_groups().iter().map(|g| g.num_rows()).collect();
        assert_eq!(groups.len(), 16, "{groups:?}");
        assert!(groups.iter().all(|&n| n <= 64), "{groups:?}");
        assert_eq!(groups.iter().sum::<i64>(), 1000);
    }

    /// The rows come back from `metrics.jsonl`, checked as at a resume: a file changed while
    /// the job ran fails the write (no `metrics.parquet`, no temporary file) rather than
    /// becoming a Parquet file of rows the job never computed.
    #[test]
    fn a_metrics_jsonl_changed_under_the_job_fails_the_parquet_write() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = MetricsLog::create(dir.path()).unwrap();
        for i in 1..=3 {
            log.push(varied_row(i)).unwrap();
        }
        let jsonl = dir.path().join(METRICS_JSONL);
        let text = std::fs::read_to_string(&jsonl).unwrap();
        std::fs::write(&jsonl, text.replacen("\"iteration\":2", "\"iteration\":9", 1)).unwrap();
        let path = dir.path().join("metrics.parquet");
        let err = log.write_parquet(&path, |_| {}).unwrap_err().to_string();
        assert!(err.contains("this job wrote") && err.contains("changed while the job ran"), "{err}");
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, [METRICS_JSONL], "neither the file nor its temporary one");
    }

    /// The Parquet file is written to disk as it is encoded now, not through `write_all` of a
    /// buffer: a full disk under the encoder must still be an I/O error, so that the run's
    /// marker says `disk_full`.
    #[test]
    fn a_full_disk_under_the_parquet_writer_is_a_disk_full_failure() {
        struct Full;
        impl Write for Full {
            fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
                Err(std::io::Error::from_raw_os_error(libc::ENOSPC))
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let err = match ParquetSink::new(Full, &[], 4) {
            Err(e) => e,
            Ok(mut sink) => {
                let mut r = row(1, None);
                r.extra.clear();
                sink.push(&r).and_then(|()| sink.finish().map(drop)).unwrap_err()
            }
        };
        let err = parquet_error(Path::new("metrics.parquet"), err);
        assert!(matches!(err, JobError::Io { .. }), "{err:?}");
        assert_eq!(crate::summary::failure_cause(&err), crate::summary::cause::DISK_FULL);
    }
}
