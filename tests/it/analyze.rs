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
    // Every parameter the runs trained with is a column: the sweep's, and PPO's defaults of
    // the ones it left out (from each run's summary.json).
    let (header, rows) = csv_rows(&tables.join("runs.csv"));
    let column = |key: &str| header.iter().position(|h| h == key).unwrap_or_else(|| panic!("no `{key}` in {header:?}"));
    // The analysis's own run key never reaches a table (code review of the memory change).
    assert!(!header.iter().any(|h| h.starts_with("__drover")), "{header:?}");
    for row in &rows {
        assert_eq!((row[column("params.gamma")].as_str(), row[column("params.ent_coef")].as_str()), ("0.99", "0.01"), "{row:?}");
    }
    assert!(parquet_matches_csv(&tables.join("curves-by-params.clip_coef")) >= 2);
    assert_eq!(parquet_matches_csv(&tables.join("profiles-by-params.clip_coef")), 2 * 101);
    let md = std::fs::read_to_string(tables.join("compare-params.clip_coef.md")).expect("markdown");
    let rows = md.lines().filter(|l| l.starts_with('|')).count();
    assert!(rows == 4 && md.contains("| params.clip_coef=0.1 |") && md.contains("| params.clip_coef=0.3 |"), "{md}");
    // Two seeds per configuration: points without intervals, and the reason under the table.
    assert!(md.contains("\nnote: no 95% interval for any of the 2 groups") && stdout.contains("run 4 seeds or more for intervals"), "{md}");
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
        (vec!["--group-by", "env,,clip_coef"], "`--group-by env,,clip_coef`: empty key in the list"),
        (vec!["--compare", "nope"], "`--compare nope`: unknown key `nope`; known keys: sweep, label"),
        // Review finding (research): these said `bad expression` like a `--where`.
        (vec!["--group-by", "nope"], "`--group-by nope`: unknown key `nope`; known keys: sweep, label"),
        (vec!["--group-by", "clip_cof"], "`--group-by clip_cof`: unknown key `clip_cof`; known keys: sweep, label"),
        (vec!["--curves", "nope"], "`--curves nope`: no run's metrics have a column `nope`; columns: "),
    ] {
        let out = drover().arg("analyze").arg(&results).args(&args).arg("--no-plots").output().expect("spawn");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(message), "{args:?}: {stderr}");
    }
    let out = drover().arg("analyze").arg(&results).arg(&results).output().expect("spawn");
    assert!(String::from_utf8_lossy(&out.stderr).contains("`--out DIR` is needed"), "{out:?}");
    // A usage error, as clap's own and the bad expressions above (it used to exit with 1).
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let out = drover().arg("analyze").arg(&results).args(["--no-plots", "--reps", "1"]).output().expect("spawn");
    assert_eq!(out.status.code(), Some(2), "{out:?}");

    // Review finding (CLI contract 2): a reader that stops early (`drover analyze r | true`,
    // `| head`) made the table's `print!` panic, exit code 101; it ends quietly, exit code 0,
    // `--explain` too.
    for extra in [&["--reps", "100", "--band-reps", "100"][..], &["--explain"]] {
        let (reader, writer) = std::io::pipe().expect("pipe");
        drop(reader);
        let out = drover().arg("analyze").arg(&results).arg("--no-plots").args(extra).stdout(writer).output().expect("spawn");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{extra:?}: {stderr}");
        assert!(!stderr.contains("panicked") && !stderr.contains("error"), "{extra:?}: {stderr}");
    }
}

/// Two sequence-task algorithms, two seeds each, small.
const SEQ_SWEEP: &str = r#"
name = "e2e-analyze-seq"
[run]
env = "SeqAdd-v0"
plugin = "grpo"
vocab = 5
prompt_len = 4
num_steps = 3
group_size = 8
num_envs = 64
total_steps = 3840
hidden = [16]
lr = 3e-3
update_epochs = 1
num_minibatches = 2
success_return = 0.9
[sweep]
seeds = [1, 2]
[[sweep.cases]]
"run.plugin" = "grpo"
[[sweep.cases]]
"run.plugin" = "rloo"
"#;

#[test]
fn two_environments_are_compared_within_each_and_every_empty_directory_is_named() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let cartpole = sweep_results(tmp.path());
    let seq_dir = tmp.path().join("seq");
    std::fs::create_dir_all(&seq_dir).expect("mkdir");
    let sweep = drover_tests::write_sweep(&seq_dir, SEQ_SWEEP);
    let seq = seq_dir.join("results");
    run_ok(drover().arg("run").arg(&sweep).arg("--results").arg(&seq).args(["-j", "2"]));

    // CartPole returns (tens) and SeqAdd accuracies (below 1) are ranked apart, each table
    // naming its environment; CartPole has one algorithm, so nothing is ranked there.
    let out = tmp.path().join("out");
    let run = run_ok(drover().arg("analyze").arg(&cartpole).arg(&seq).args(["--compare", "algo", "--reps", "200", "--no-plots", "--out"]).arg(&out));
    let (stdout, stderr) = (String::from_utf8_lossy(&run.stdout), String::from_utf8_lossy(&run.stderr));
    assert!(
        stdout.starts_with("note: the runs span 2 environments (CartPole-v1, SeqAdd-v0), whose returns are not on one scale; `--compare algo`: groups are ranked within each environment"),
        "{stdout}"
    );
    assert!(stdout.contains("\nrun.env=CartPole-v1 (4 runs):\n") && stdout.contains("\nrun.env=SeqAdd-v0 (4 runs):\n"), "{stdout}");
    assert!(stdout.contains("best by IQM in SeqAdd-v0: run.plugin=") && !stdout.contains("best by IQM in CartPole-v1"), "{stdout}");
    // Under CartPole's table with the analysis' other warnings, not as a log line on stderr.
    assert!(stdout.contains("\nwarning: --compare algo: all 4 runs of CartPole-v1 analyzed have the same value of it; nothing to compare\n"), "{stdout}");
    assert!(!stderr.contains("WARN"), "{stderr}");
    let (header, rows) = csv_rows(&out.join("tables/compare-run.plugin.csv"));
    assert_eq!(&header[..3], ["run.env", "rank", "run.plugin"]);
    let ranked: Vec<(String, String)> = rows.iter().map(|r| (r[0].clone(), r[1].clone())).collect();
    let want = [("CartPole-v1", "1"), ("SeqAdd-v0", "1"), ("SeqAdd-v0", "2")].map(|(e, r)| (e.to_string(), r.to_string()));
    assert_eq!(ranked, want);

    // `drover analyze a b c` with a and c empty: one error names both, with the reason of each.
    let (a, c) = (tmp.path().join("a"), tmp.path().join("c"));
    std::fs::create_dir_all(&a).expect("mkdir");
    std::fs::create_dir_all(c.join("runs/0123456789abcdef")).expect("mkdir");
    let out = drover().arg("analyze").arg(&a).arg(&cartpole).arg(&c).arg("--out").arg(tmp.path().join("out2")).output().expect("spawn");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{stderr}");
    let want = format!(
        "error: no completed run with metrics in 2 of the 3 results directories given:\n  `{}`: not a results directory (it has no `runs/` folder)\n  `{}`: 1 run directory, none completed with metrics: 1 without spec.json\n",
        a.display(),
        c.display()
    );
    assert!(stderr.ends_with(&want), "{stderr}");
    assert!(!tmp.path().join("out2").exists());
}

/// A researcher's report: two `drover run`s of one sweep file into one results directory with
/// different `--set run.lr` were analyzed as one group `base` mixing both configurations. Now
/// the last run's configuration is the sweep (`sweep.json`), the earlier runs are left out with
/// a note, and `--all-runs` shows both configurations as groups named apart.
#[test]
fn a_rerun_with_another_base_setting_is_not_mixed_into_the_sweep() {
    const BASE: &str = r#"
name = "e2e-analyze-base"
[run]
env = "CartPole-v1"
plugin = "ppo"
num_envs = 4
num_steps = 128
total_steps = 4096
[sweep]
seeds = [1, 2]
"#;
    let tmp = tempfile::tempdir().expect("tempdir");
    let sweep = drover_tests::write_sweep(tmp.path(), BASE);
    let pool = tmp.path().join("pool");
    for lr in ["1e-3", "1e-6"] {
        run_ok(drover().arg("run").arg(&sweep).arg("--results").arg(&pool).args(["-j", "2", "--set", &format!("run.lr={lr}")]));
    }
    let out = tmp.path().join("out");
    let run = run_ok(drover().arg("analyze").arg(&pool).args(["--reps", "200", "--no-plots", "--out"]).arg(&out));
    let stdout = String::from_utf8_lossy(&run.stdout);
    let note = format!("note: `{}`: 2 run directories not in its sweep.json, the runs of the last `drover run` there, are left out", pool.display());
    assert!(stdout.starts_with(&note) && stdout.contains("2 runs analyzed (2 completed"), "{stdout}");
    let (header, rows) = csv_rows(&out.join("tables/summary.csv"));
    let group = header.iter().position(|h| h == "group").expect("group column");
    assert_eq!(rows.iter().map(|r| r[group].as_str()).collect::<Vec<_>>(), ["base"]);

    let run = run_ok(drover().arg("analyze").arg(&pool).args(["--all-runs", "--reps", "200", "--no-plots", "--out"]).arg(&out));
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(stdout.contains("4 runs analyzed") && stdout.contains("note: the label `base` is shared by 2 configurations that differ outside the sweep's axes, in `run.lr`"), "{stdout}");
    let (_, rows) = csv_rows(&out.join("tables/summary.csv"));
    assert_eq!(rows.iter().map(|r| r[group].as_str()).collect::<Vec<_>>(), ["base [run.lr=1e-6]", "base [run.lr=0.001]"]);
}
