//! Analysis on synthetic run directories with hand-computed expectations.

use std::path::Path;

use polars::prelude::*;
use serde_json::json;

use super::{load_results, per_config, per_run, render_table, write_tables};

/// Writes one run directory: spec.json, metrics.parquet and (if `completed`) exit.json.
///
/// Metrics: iteration 1 returns -1000 (outside the last-10 window), iterations 2..=6 return
/// `r - 1`, 7..=11 return `r + 1` (so the final return is exactly `r`), and iteration 12 finishes
/// no episode (NaN), which must neither count for the final return nor reach the threshold.
fn write_run(root: &Path, run_id: &str, config_id: &str, label: &str, seed: u64, r: f64, completed: bool) {
    let dir = root.join("runs").join(run_id);
    std::fs::create_dir_all(&dir).unwrap();
    let spec = json!({
        "format_version": 1, "run_id": run_id, "config_id": config_id, "sweep": "t", "label": label,
        "axes": {}, "run": {"seed": seed, "success_return": 30.0}, "params": {}, "plugin_path": "/x.so"
    });
    std::fs::write(dir.join("spec.json"), spec.to_string()).unwrap();
    let iteration: Vec<i64> = (1..=12).collect();
    let ret: Vec<f64> = iteration
        .iter()
        .map(|&i| match i {
            1 => -1000.0,
            2..=6 => r - 1.0,
            7..=11 => r + 1.0,
            _ => f64::NAN,
        })
        .collect();
    let episodes: Vec<i64> = iteration.iter().map(|&i| if i == 12 { 0 } else { 3 }).collect();
    let mut df = df!(
        "iteration" => &iteration,
        "global_step" => iteration.iter().map(|i| i * 1000).collect::<Vec<_>>(),
        "episodic_return_mean" => ret,
        "episodes" => episodes,
        "policy_loss" => vec![0.5f64; 12],
    )
    .unwrap();
    let file = std::fs::File::create(dir.join("metrics.parquet")).unwrap();
    ParquetWriter::new(file).finish(&mut df).unwrap();
    if completed {
        let exit = json!({"format_version": 1, "run_id": run_id, "status": "completed", "reason": null, "finished_at": "0"});
        std::fs::write(dir.join("exit.json"), exit.to_string()).unwrap();
    }
}

fn close(a: Option<f64>, b: f64) -> bool {
    a.is_some_and(|a| (a - b).abs() < 1e-9)
}

#[test]
fn summary_matches_hand_computed_statistics() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    // Config A, 4 seeds, final returns 10, 20, 30, 100:
    //   mean 40; unbiased std sqrt((900+400+100+3600)/3) = sqrt(5000/3); IQM (drop 1 each end) 25;
    //   threshold 30: r=30 first reaches 31 at iteration 7 (7000), r=100 reaches 99 at iteration 2
    //   (2000); r=10, r=20 never (their NaN iteration 12 must not count) → 2 of 4, mean 4500.
    for (i, r) in [10.0, 20.0, 30.0, 100.0].into_iter().enumerate() {
        write_run(root, &format!("a{i}"), "cfgA", "params.x=1", i as u64, r, true);
    }
    // Config B, 3 seeds, final returns 1, 2, 6: mean 3, std sqrt((4+1+9)/2) = sqrt(7), IQM (n=3,
    // nothing dropped) 3, nobody reaches 30.
    for (i, r) in [1.0, 2.0, 6.0].into_iter().enumerate() {
        write_run(root, &format!("b{i}"), "cfgB", "params.x=2", i as u64, r, true);
    }
    // An unfinished run of config B with a huge return: must be left out.
    write_run(root, "b9", "cfgB", "params.x=2", 9, 1e6, false);

    let loaded = load_results(root).unwrap();
    assert_eq!(loaded.completed, 7);
    assert_eq!(loaded.left_out, vec![("b9".to_string(), "unfinished".to_string())]);
    let mut runs = per_run(loaded.metrics, loaded.runs).collect().unwrap();
    let mut summary = per_config(runs.clone().lazy()).collect().unwrap();
    assert_eq!(summary.height(), 2);

    let f = |name: &str, row: usize| summary.column(name).unwrap().f64().unwrap().get(row);
    let i = |name: &str, row: usize| summary.column(name).unwrap().i64().unwrap().get(row);
    assert_eq!(summary.column("label").unwrap().str().unwrap().get(0), Some("params.x=1"));
    assert_eq!(i("seeds", 0), Some(4));
    assert!(close(f("final_return_mean", 0), 40.0), "{:?}", f("final_return_mean", 0));
    assert!(close(f("final_return_std", 0), (5000.0f64 / 3.0).sqrt()), "{:?}", f("final_return_std", 0));
    assert!(close(f("final_return_iqm", 0), 25.0), "{:?}", f("final_return_iqm", 0));
    assert_eq!(i("seeds_reached", 0), Some(2));
    assert!(close(f("steps_to_threshold_mean", 0), 4500.0), "{:?}", f("steps_to_threshold_mean", 0));

    assert_eq!(i("seeds", 1), Some(3));
    assert!(close(f("final_return_mean", 1), 3.0));
    assert!(close(f("final_return_std", 1), 7.0f64.sqrt()));
    assert!(close(f("final_return_iqm", 1), 3.0));
    assert_eq!(i("seeds_reached", 1), Some(0));
    assert_eq!(f("steps_to_threshold_mean", 1), None);

    let table = render_table(&summary).unwrap();
    assert!(table.contains("params.x=1      4         40.00   40.82  25.00       30.0      2/4                4500"), "{table}");
    assert!(table.contains("params.x=2      3          3.00    2.65   3.00       30.0      0/3                   -"), "{table}");

    let written = write_tables(&root.join("tables"), &mut summary, &mut runs).unwrap();
    assert_eq!(written.len(), 4);
    let back = LazyFrame::scan_parquet(PlRefPath::new(root.join("tables/summary.parquet").to_str().unwrap()), Default::default())
        .unwrap()
        .collect()
        .unwrap();
    assert_eq!(back.shape(), summary.shape());
    let csv = std::fs::read_to_string(root.join("tables/runs.csv")).unwrap();
    assert_eq!(csv.lines().count(), 1 + 7, "{csv}");
}

#[test]
fn iqm_drops_a_quarter_from_each_end() {
    // n=5 → drop 1 each end; n=8 → drop 2 each end; n=1 → itself; nulls ignored.
    let df = df!(
        "g" => ["a", "a", "a", "a", "a", "b", "b", "b", "b", "b", "b", "b", "b", "c", "c"],
        "x" => [Some(5.0), Some(1.0), Some(100.0), Some(2.0), Some(3.0),
                Some(1.0), Some(2.0), Some(3.0), Some(4.0), Some(5.0), Some(6.0), Some(70.0), Some(80.0),
                Some(7.0), None],
    )
    .unwrap();
    let out = df
        .lazy()
        .group_by([col("g")])
        .agg([super::iqm(col("x")).alias("iqm")])
        .sort(["g"], Default::default())
        .collect()
        .unwrap();
    let col = out.column("iqm").unwrap().f64().unwrap().clone();
    let iqm: Vec<Option<f64>> = (0..col.len()).map(|i| col.get(i)).collect();
    assert_eq!(iqm, vec![Some((2.0 + 3.0 + 5.0) / 3.0), Some((3.0 + 4.0 + 5.0 + 6.0) / 4.0), Some(7.0)]);
}

#[test]
fn not_a_results_dir_and_no_completed_runs_are_named_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let err = load_results(tmp.path()).err().unwrap().to_string();
    assert!(err.contains("is not a results directory (it has no `runs/` folder)"), "{err}");
    write_run(tmp.path(), "r1", "c", "base", 1, 1.0, false);
    let err = load_results(tmp.path()).err().unwrap().to_string();
    assert!(err.contains("no completed run with metrics in") && err.contains("(1 run directories found)"), "{err}");
    std::fs::write(tmp.path().join("runs/r1/exit.json"), r#"{"format_version": 9, "status": "completed"}"#).unwrap();
    let err = load_results(tmp.path()).err().unwrap().to_string();
    assert!(err.contains("exit.json`: unknown format_version 9"), "{err}");
}
