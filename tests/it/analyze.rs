//! Issue 5 (analysis) end to end: a real 2×2 sweep, then `drover analyze --compare`, slices,
//! reproducibility, named errors, and the Parquet tables read back by an independent reader
//! (arrow-rs `parquet`) and checked cell by cell against the CSV written beside them.

use std::fs::File;
use std::path::{Path, PathBuf};

use drover_tests::{csv_rows, drover, run_ok};
use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::record::Field;

const SWEEP: &str = r#"
name = "e2e-analyze"
[run]
env = "CartPole-v1"
plugin = "ppo"
num_envs = 4
num_steps = 128
total_steps = 8192
[params]
gamma = 0.99
[sweep]
seeds = [1, 2]
[sweep.grid]
"params.clip_coef" = [0.1, 0.3]
"#;

fn sweep_results(dir: &Path) -> PathBuf {
    let sweep = drover_tests::write_sweep(dir, SWEEP);
    let results = dir.join("results");
    run_ok(drover().arg("run").arg(&sweep).arg("--results").arg(&results).args(["-j", "2"]));
    results
}

/// Reads `<stem>.parquet` with arrow-rs and checks it holds exactly `<stem>.csv`; returns the rows.
fn parquet_matches_csv(stem: &Path) -> usize {
    // Not `with_extension`: stems such as `compare-params.clip_coef` have dots of their own.
    let with = |ext: &str| PathBuf::from(format!("{}.{ext}", stem.display()));
    let parquet = with("parquet");
    let reader = SerializedFileReader::new(File::open(&parquet).expect("open parquet")).expect("a Parquet file");
    let (header, csv) = csv_rows(&with("csv"));
    let names: Vec<String> = reader.metadata().file_metadata().schema_descr().columns().iter().map(|c| c.name().to_string()).collect();
    assert_eq!(names, header, "{}", parquet.display());
    let mut n = 0;
    for (row, want) in reader.get_row_iter(None).expect("rows").zip(&csv) {
        let row = row.expect("row");
        for ((name, field), cell) in row.get_column_iter().zip(want) {
            let ok = match field {
                Field::Null => cell.is_empty(),
                Field::Double(v) => cell.parse::<f64>().is_ok_and(|c| (c - v).abs() <= 1e-9 * v.abs().max(1.0)) || (v.is_nan() && cell == "NaN"),
                Field::Long(v) => cell.parse::<i64>() == Ok(*v),
                Field::UInt(v) => cell.parse::<u32>() == Ok(*v),
                Field::Bool(v) => cell == &v.to_string(),
                Field::Str(s) => s == cell,
                other => panic!("unexpected Parquet type in `{name}`: {other:?}"),
            };
            assert!(ok, "{}: column `{name}`: Parquet {field:?} vs CSV `{cell}`", parquet.display());
        }
        n += 1;
    }
    assert_eq!(n, csv.len(), "{}", parquet.display());
    n
}

#[test]
fn compare_slices_plots_and_parquet_readback() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let results = sweep_results(tmp.path());
    let out = tmp.path().join("out");

    let run = run_ok(drover().arg("analyze").arg(&results).args(["--compare", "clip_coef", "--reps", "500", "--out"]).arg(&out));
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(stdout.contains("P(best > this) [95% CI]") && stdout.contains("best by IQM: params.clip_coef="), "{stdout}");
    assert!(stdout.contains("4 runs analyzed"), "{stdout}");
    let tables = out.join("tables");
    assert_eq!(parquet_matches_csv(&tables.join("compare-params.clip_coef")), 2, "one row per clip value");
    assert_eq!(parquet_matches_csv(&tables.join("runs")), 4);
    assert!(parquet_matches_csv(&tables.join("curves-by-params.clip_coef")) >= 2);
    assert_eq!(parquet_matches_csv(&tables.join("profiles-by-params.clip_coef")), 2 * 101);
    let md = std::fs::read_to_string(tables.join("compare-params.clip_coef.md")).expect("markdown");
    assert!(md.lines().count() == 4 && md.contains("| params.clip_coef=0.1 |") && md.contains("| params.clip_coef=0.3 |"), "{md}");
    for plot in ["curves", "profile", "final"] {
        let png = std::fs::read(out.join(format!("plots/{plot}-by-params.clip_coef.png"))).expect("png");
        assert!(png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 10_000, "{plot}: {} bytes", png.len());
        let svg = std::fs::read_to_string(out.join(format!("plots/{plot}-by-params.clip_coef.svg"))).expect("svg");
        assert!(svg.starts_with("<svg") && svg.contains("params.clip_coef=0.3"), "{plot}");
    }

    // Same seed, same intervals: a second run writes the same summary byte for byte.
    let first = std::fs::read(tables.join("compare-params.clip_coef.csv")).expect("csv");
    run_ok(drover().arg("analyze").arg(&results).args(["--compare", "clip_coef", "--reps", "500", "--no-plots", "--out"]).arg(&out));
    assert_eq!(std::fs::read(tables.join("compare-params.clip_coef.csv")).expect("csv"), first);

    // A slice, grouped by configuration, written into the results directory itself.
    let run = run_ok(drover().arg("analyze").arg(&results).args(["--where", "params.clip_coef = 0.3", "--no-plots"]));
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(stdout.contains("2 runs analyzed (4 completed") && !stdout.contains("clip_coef=0.1"), "{stdout}");
    let (_, rows) = csv_rows(&results.join("tables/summary.csv"));
    assert_eq!(rows.len(), 1);
}

#[test]
fn bad_slice_expressions_are_usage_errors_naming_the_expression() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let results = sweep_results(tmp.path());
    for (args, message) in [
        (vec!["--where", "gamma>>1"], "bad expression `gamma>>1`: `>1` is not a number (key `params.gamma` is numeric)"),
        (vec!["--where", "seedling=1"], "bad expression `seedling=1`: unknown key `seedling`; known keys: sweep, label"),
        (vec!["--group-by", "env,,clip_coef"], "bad expression `env,,clip_coef`: empty key in the list"),
        (vec!["--compare", "nope"], "bad expression `nope`: unknown key `nope`"),
    ] {
        let out = drover().arg("analyze").arg(&results).args(&args).output().expect("spawn");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(message), "{args:?}: {stderr}");
    }
    let out = drover().arg("analyze").arg(&results).arg(&results).output().expect("spawn");
    assert!(String::from_utf8_lossy(&out.stderr).contains("`--out DIR` is needed"), "{out:?}");
}
