//! Per-iteration metrics: streamed to `metrics.jsonl` as training goes (crash-safe, one flushed
//! line per iteration) and written once as `metrics.parquet` at the end.
//!
//! A checkpoint (format 3) does not copy the rows: it vouches for the first lines of
//! `metrics.jsonl` ([`JsonlPrefix`]: their count, length and SHA-256, and the non-finite cells the
//! file holds as `null`), and a resumed job reads them back bit for bit ([`read_prefix`]).

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parquet::data_type::{DoubleType, Int64Type};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;
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

/// Appends rows to `metrics.jsonl` and keeps them for the final Parquet file.
///
/// It also keeps what a checkpoint records of the file ([`MetricsLog::checkpoint_prefix`]): the
/// bytes written, their running SHA-256 and the non-finite cells, so a checkpoint costs the
/// same at iteration 10 as at iteration 10^6.
pub struct MetricsLog {
    rows: Vec<MetricsRow>,
    jsonl: BufWriter<File>,
    jsonl_path: PathBuf,
    /// Bytes of `metrics.jsonl` so far, all of them lines of `rows`.
    bytes: u64,
    /// SHA-256 of those bytes so far.
    hasher: Sha256,
    /// The non-finite cells of `rows` by (column, bits): ranges of row indices.
    non_finite: BTreeMap<(String, u64), Vec<[u64; 2]>>,
}

impl MetricsLog {
    /// Creates (truncates) `dir/metrics.jsonl`.
    pub fn create(dir: &Path) -> Result<Self, JobError> {
        let jsonl_path = dir.join(METRICS_JSONL);
        let file = File::create(&jsonl_path)
            .map_err(|source| JobError::Io { path: jsonl_path.clone(), source })?;
        Ok(Self {
            rows: Vec::new(),
            jsonl: BufWriter::new(file),
            jsonl_path,
            bytes: 0,
            hasher: Sha256::new(),
            non_finite: BTreeMap::new(),
        })
    }

    /// Reopens `dir/metrics.jsonl` for a resumed run: a format-3 checkpoint's prefix stays as
    /// it is (the checkpoint vouches for it) and the file is cut right after it, dropping the
    /// rows written after the checkpoint; rows of an older checkpoint are written anew.
    pub fn resume(dir: &Path, resumed: Resumed) -> Result<Self, JobError> {
        let Some((bytes, hasher)) = resumed.kept else {
            let mut log = Self::create(dir)?;
            for row in resumed.rows {
                log.push(row)?;
            }
            return Ok(log);
        };
        let jsonl_path = dir.join(METRICS_JSONL);
        let io = |source| JobError::Io { path: jsonl_path.clone(), source };
        let mut file = OpenOptions::new().write(true).create(true).truncate(false).open(&jsonl_path).map_err(io)?;
        let len = file.metadata().map_err(io)?.len();
        if len < bytes {
            // Read whole a moment ago: set_len would pad the prefix with zeros.
            return Err(io(std::io::Error::other(format!("it shrank to {len} bytes while the job resumed from its first {bytes}"))));
        }
        file.set_len(bytes).map_err(io)?;
        file.seek(SeekFrom::End(0)).map_err(io)?;
        let mut non_finite = BTreeMap::new();
        for (i, row) in resumed.rows.iter().enumerate() {
            note_non_finite(&mut non_finite, i as u64, row);
        }
        Ok(Self { rows: resumed.rows, jsonl: BufWriter::new(file), jsonl_path, bytes, hasher, non_finite })
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
        note_non_finite(&mut self.non_finite, self.rows.len() as u64, &row);
        self.rows.push(row);
        Ok(())
    }

    /// Rows so far.
    pub fn rows(&self) -> &[MetricsRow] {
        &self.rows
    }

    /// Makes every row written so far durable (fsync of the file and its directory) and
    /// returns what a checkpoint records of them: a checkpoint never vouches for lines a power
    /// cut could still take back.
    pub fn checkpoint_prefix(&mut self) -> Result<JsonlPrefix, JobError> {
        let io = |source| JobError::Io { path: self.jsonl_path.clone(), source };
        self.jsonl.flush().map_err(io)?;
        self.jsonl.get_ref().sync_data().map_err(io)?;
        fsio::sync_files(fsio::folder_of(&self.jsonl_path), &[])?;
        Ok(JsonlPrefix {
            rows: self.rows.len() as u64,
            bytes: self.bytes,
            sha256: hex(&self.hasher.clone().finalize()),
            non_finite: self
                .non_finite
                .iter()
                .map(|((column, bits), rows)| NonFiniteCells { column: column.clone(), bits: format!("0x{bits:016x}"), rows: rows.clone() })
                .collect(),
        })
    }

    /// Writes all rows to `path` as Parquet, through [`fsio::write_atomic`] (encoded in memory:
    /// a few hundred bytes per row).
    pub fn write_parquet(&self, path: &Path) -> Result<(), JobError> {
        let bytes = encode_parquet(&self.rows).map_err(|reason| JobError::Parquet { path: path.to_path_buf(), reason })?;
        fsio::write_atomic(path, &bytes)
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

/// The rows a resumed job's [`MetricsLog`] starts from ([`MetricsLog::resume`]).
#[derive(Debug)]
pub struct Resumed {
    rows: Vec<MetricsRow>,
    /// Format 3: the verified prefix's length and running hash; the file keeps it.
    kept: Option<(u64, Sha256)>,
}

impl Resumed {
    /// Rows of a format-1/2 checkpoint, which held them inline: the file is written anew.
    pub fn rewrite(rows: Vec<MetricsRow>) -> Self {
        Self { rows, kept: None }
    }

    /// The rows.
    pub fn rows(&self) -> &[MetricsRow] {
        &self.rows
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
fn note_non_finite(map: &mut BTreeMap<(String, u64), Vec<[u64; 2]>>, index: u64, row: &MetricsRow) {
    for (column, x) in float_cells(row).filter(|(_, x)| !x.is_finite()) {
        let runs = map.entry((column.to_owned(), x.to_bits())).or_default();
        match runs.last_mut() {
            Some(run) if run[1] == index => run[1] += 1,
            _ => runs.push([index, index + 1]),
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Reads back the rows `prefix` vouches for from `dir/metrics.jsonl`, exactly as the job held
/// them: it checks the length, the hash and the line count, puts the non-finite cells back and
/// checks that each row writes the very line it was read from. Lines after the prefix (written
/// after the checkpoint) are not read.
///
/// # Errors
/// Why the file does not hold what the checkpoint says, naming `metrics.jsonl`.
pub fn read_prefix(dir: &Path, prefix: &JsonlPrefix) -> Result<Resumed, String> {
    let mut bytes = Vec::new();
    match File::open(dir.join(METRICS_JSONL)) {
        Ok(file) => {
            file.take(prefix.bytes).read_to_end(&mut bytes).map_err(|e| format!("cannot read `{METRICS_JSONL}`: {e}"))?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && prefix.bytes == 0 => {}
        Err(e) => return Err(format!("cannot read `{METRICS_JSONL}`: {e}")),
    }
    if bytes.len() as u64 != prefix.bytes {
        return Err(format!(
            "`{METRICS_JSONL}` holds {} bytes, the checkpoint vouches for its first {}",
            bytes.len(),
            prefix.bytes
        ));
    }
    let hasher = Sha256::new_with_prefix(&bytes);
    let sha256 = hex(&hasher.clone().finalize());
    if sha256 != prefix.sha256 {
        return Err(format!(
            "the first {} bytes of `{METRICS_JSONL}` have SHA-256 {sha256}, the checkpoint recorded {} (the file changed after the checkpoint)",
            prefix.bytes, prefix.sha256
        ));
    }
    let text = std::str::from_utf8(&bytes).map_err(|e| format!("`{METRICS_JSONL}`: {e}"))?;
    let lines: Vec<&str> = match text.strip_suffix('\n') {
        Some(body) => body.split('\n').collect(),
        None if text.is_empty() => Vec::new(),
        None => return Err(format!("the first {} bytes of `{METRICS_JSONL}` end inside a line", prefix.bytes)),
    };
    if lines.len() as u64 != prefix.rows {
        return Err(format!("`{METRICS_JSONL}`: {} lines in the first {} bytes, the checkpoint says {}", lines.len(), prefix.bytes, prefix.rows));
    }
    let mut cursors = Vec::with_capacity(prefix.non_finite.len());
    for cells in &prefix.non_finite {
        let bits = cells
            .bits
            .strip_prefix("0x")
            .and_then(|h| u64::from_str_radix(h, 16).ok())
            .filter(|&b| !f64::from_bits(b).is_finite())
            .ok_or_else(|| format!("`non_finite`: `{}` is not the bits of a non-finite f64", cells.bits))?;
        let mut end = 0;
        for &[first, last] in &cells.rows {
            if first < end || first >= last || last > prefix.rows {
                return Err(format!("`non_finite`: column `{}` has a bad row range [{first}, {last})", cells.column));
            }
            end = last;
        }
        cursors.push((cells.column.as_str(), bits, cells.rows.as_slice()));
    }
    let mut rows = Vec::with_capacity(lines.len());
    for (i, line) in lines.iter().enumerate() {
        let at = i as u64;
        let mut here = BTreeMap::new();
        for (column, bits, runs) in &mut cursors {
            while runs.first().is_some_and(|r| r[1] <= at) {
                *runs = &runs[1..];
            }
            if runs.first().is_some_and(|r| r[0] <= at) && here.insert(*column, *bits).is_some() {
                return Err(format!("`non_finite`: row {at} column `{column}` is listed twice"));
            }
        }
        let row = decode_line(line, here).map_err(|e| format!("`{METRICS_JSONL}` line {}: {e}", i + 1))?;
        rows.push(row);
    }
    Ok(Resumed { rows, kept: Some((prefix.bytes, hasher)) })
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

fn encode_parquet(rows: &[MetricsRow]) -> Result<Vec<u8>, String> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use parquet::file::reader::{FileReader, SerializedFileReader};

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
        log.write_parquet(&blocked).expect_err("a non-empty directory is in the way");
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
        log.write_parquet(&path).unwrap();

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
}
