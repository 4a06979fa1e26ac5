//! Per-iteration metrics: streamed to `metrics.jsonl` as training goes (crash-safe, one flushed
//! line per iteration) and written once as `metrics.parquet` at the end.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parquet::data_type::{DoubleType, Int64Type};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::types::Type;
use serde::{Deserialize, Serialize};

use drover_plugin_api::host_metrics;

use crate::{fsio, JobError};

/// The format of `metrics.parquet` (its columns: docs/design/results-layout.md), written into
/// the file's key-value metadata under [`FORMAT_VERSION_KEY`] as JSON records carry theirs.
pub const METRICS_FORMAT_VERSION: u32 = 1;
/// The Parquet key-value metadata key of [`METRICS_FORMAT_VERSION`].
pub const FORMAT_VERSION_KEY: &str = "drover.format_version";

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
pub struct MetricsLog {
    rows: Vec<MetricsRow>,
    jsonl: BufWriter<File>,
    jsonl_path: PathBuf,
}

impl MetricsLog {
    /// Creates (truncates) `dir/metrics.jsonl`.
    pub fn create(dir: &Path) -> Result<Self, JobError> {
        let jsonl_path = dir.join("metrics.jsonl");
        let file = File::create(&jsonl_path)
            .map_err(|source| JobError::Io { path: jsonl_path.clone(), source })?;
        Ok(Self { rows: Vec::new(), jsonl: BufWriter::new(file), jsonl_path })
    }

    /// Appends one row and flushes it to disk.
    pub fn push(&mut self, row: MetricsRow) -> Result<(), JobError> {
        let io = |source| JobError::Io { path: self.jsonl_path.clone(), source };
        serde_json::to_writer(&mut self.jsonl, &row).map_err(|e| io(std::io::Error::other(e)))?;
        self.jsonl.write_all(b"\n").map_err(io)?;
        self.jsonl.flush().map_err(io)?;
        self.rows.push(row);
        Ok(())
    }

    /// Rows so far.
    pub fn rows(&self) -> &[MetricsRow] {
        &self.rows
    }

    /// Writes all rows to `path` as Parquet, through [`fsio::write_atomic`] (encoded in memory:
    /// a few hundred bytes per row).
    pub fn write_parquet(&self, path: &Path) -> Result<(), JobError> {
        let bytes = encode_parquet(&self.rows).map_err(|reason| JobError::Parquet { path: path.to_path_buf(), reason })?;
        fsio::write_atomic(path, &bytes)
    }
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
