//! Output of `drover analyze`: the CSV/Parquet tables and the table printed on the terminal.

use std::fs::File;
use std::path::{Path, PathBuf};

use polars::prelude::*;

use crate::error::AnalyzeError;

/// Writes `summary.{csv,parquet}` and `runs.{csv,parquet}` into `tables_dir`; returns their paths.
///
/// Each file goes through a temporary name and a rename, so an interrupted write leaves no torn table.
pub fn write_tables(tables_dir: &Path, summary: &mut DataFrame, runs: &mut DataFrame) -> Result<Vec<PathBuf>, AnalyzeError> {
    std::fs::create_dir_all(tables_dir)
        .map_err(|source| AnalyzeError::Io { action: "create directory", path: tables_dir.to_path_buf(), source })?;
    let mut written = Vec::new();
    for (stem, df) in [("summary", summary), ("runs", runs)] {
        for ext in ["csv", "parquet"] {
            let path = tables_dir.join(format!("{stem}.{ext}"));
            let tmp = tables_dir.join(format!(".{stem}.{ext}.tmp"));
            let io = |source| AnalyzeError::Io { action: "write", path: tmp.clone(), source };
            let mut file = File::create(&tmp).map_err(io)?;
            let result = if ext == "csv" {
                CsvWriter::new(&mut file).finish(df)
            } else {
                ParquetWriter::new(&mut file).finish(df).map(|_| ())
            };
            result.map_err(|source| AnalyzeError::Polars { action: format!("writing `{}`", path.display()), source })?;
            std::fs::rename(&tmp, &path).map_err(|source| AnalyzeError::Io { action: "write", path: path.clone(), source })?;
            written.push(path);
        }
    }
    Ok(written)
}

/// A fixed-width text table of the per-configuration summary.
pub fn render_table(summary: &DataFrame) -> Result<String, AnalyzeError> {
    let err = |source| AnalyzeError::Polars { action: "formatting the summary".into(), source };
    let label = summary.column("label").and_then(|c| c.str().cloned()).map_err(err)?;
    let f64col = |name: &str| summary.column(name).and_then(|c| c.f64().cloned()).map_err(err);
    let i64col = |name: &str| summary.column(name).and_then(|c| c.i64().cloned()).map_err(err);
    let (mean, std, iqm, steps, thr) = (
        f64col("final_return_mean")?,
        f64col("final_return_std")?,
        f64col("final_return_iqm")?,
        f64col("steps_to_threshold_mean")?,
        f64col("success_return")?,
    );
    let (seeds, reached) = (i64col("seeds")?, i64col("seeds_reached")?);
    let num = |v: Option<f64>, prec: usize| v.map_or("-".to_string(), |v| format!("{v:.prec$}"));

    let header = ["config", "seeds", "final return", "± std", "IQM", "threshold", "reached", "steps to threshold"];
    let mut rows: Vec<[String; 8]> = Vec::with_capacity(summary.height());
    for i in 0..summary.height() {
        rows.push([
            label.get(i).unwrap_or("").to_string(),
            seeds.get(i).map_or("-".into(), |v| v.to_string()),
            num(mean.get(i), 2),
            num(std.get(i), 2),
            num(iqm.get(i), 2),
            num(thr.get(i), 1),
            format!("{}/{}", reached.get(i).unwrap_or(0), seeds.get(i).unwrap_or(0)),
            num(steps.get(i), 0),
        ]);
    }
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &[String]| {
        let parts: Vec<String> = cells
            .iter()
            .zip(widths)
            .enumerate()
            .map(|(j, (c, w))| if j == 0 { format!("{c:<w$}") } else { format!("{c:>w$}") })
            .collect();
        out.push_str(parts.join("  ").trim_end());
        out.push('\n');
    };
    line(&header.map(String::from));
    for row in &rows {
        line(row);
    }
    Ok(out)
}
