//! Analysis on synthetic run directories and small tables with hand-computed expectations.

use std::path::{Path, PathBuf};

use polars::prelude::*;
use serde_json::json;

use super::*;

/// Writes one run directory: spec.json, metrics.parquet and (if `completed`) exit.json.
///
/// Metrics: iteration 1 returns -1000 (outside the last-10 window), iterations 2..=6 return
/// `r - 1`, 7..=11 return `r + 1` (so the final return is exactly `r`), and iteration 12 finishes
/// no episode (NaN), which must neither count for the final return nor reach the threshold.
#[expect(clippy::too_many_arguments, reason = "a test fixture whose positional calls read as a table of runs")]
fn write_run(root: &Path, run_id: &str, config_id: &str, label: &str, seed: u64, r: f64, params: serde_json::Value, completed: bool) {
    let run = json!({"seed": seed, "success_return": 30.0, "env": "CartPole-v1", "lr": 0.001, "hidden": [4, 4]});
    write_run_with(root, run_id, config_id, label, run, r, params, completed);
}

/// `write_run` with the spec's whole `run` table given (another env, a plugin).
#[expect(clippy::too_many_arguments, reason = "a test fixture whose positional calls read as a table of runs")]
fn write_run_with(root: &Path, run_id: &str, config_id: &str, label: &str, run: serde_json::Value, r: f64, params: serde_json::Value, completed: bool) {
    let dir = root.join("runs").join(run_id);
    std::fs::create_dir_all(&dir).unwrap();
    let spec = json!({
        "format_version": 1, "run_id": run_id, "config_id": config_id, "sweep": "t", "label": label,
        "axes": {}, "run": run, "params": params, "plugin_path": "/x.so"
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

/// Config A (x=1): final returns 10, 20, 30, 100; config B (x=2): 1, 2, 6; plus an unfinished
/// run of B with a huge return that must be left out.
fn two_configs(root: &Path) {
    for (i, r) in [10.0, 20.0, 30.0, 100.0].into_iter().enumerate() {
        write_run(root, &format!("a{i}"), "cfgA", "params.x=1", i as u64, r, json!({"x": 1, "k": true}), true);
    }
    for (i, r) in [1.0, 2.0, 6.0].into_iter().enumerate() {
        write_run(root, &format!("b{i}"), "cfgB", "params.x=2", i as u64, r, json!({"x": 2, "k": true}), true);
    }
    write_run(root, "b9", "cfgB", "params.x=2", 9, 1e6, json!({"x": 2, "k": true}), false);
}

fn close(a: Option<f64>, b: f64) -> bool {
    a.is_some_and(|a| (a - b).abs() < 1e-9)
}

fn options(dirs: Vec<PathBuf>, out: &Path) -> Options {
    Options {
        dirs,
        out: out.to_path_buf(),
        filters: vec![],
        group_by: None,
        compare: None,
        target: None,
        bootstrap: Bootstrap { reps: 2000, band_reps: 200, seed: 7, confidence: 0.95 },
        bins: 4,
        profile_points: 11,
        plots: false,
        curves: None,
        all_runs: false,
    }
}

fn f(df: &DataFrame, name: &str, row: usize) -> Option<f64> {
    df.column(name).unwrap().cast(&DataType::Float64).unwrap().f64().unwrap().get(row)
}

#[test]
fn summary_matches_hand_computed_statistics() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    two_configs(root);
    let loaded = load_results(&[root.to_path_buf()], &[]).unwrap();
    assert_eq!(loaded.completed, 7);
    assert_eq!(loaded.left_out, vec![LeftOut { run_id: "b9".into(), state: "unfinished", why: "unfinished".into() }]);
    assert_eq!(loaded.hyperparameters, ["params.k", "params.x", "run.env", "run.hidden", "run.lr", "run.success_return"]);
    let runs = per_run(loaded.metrics, loaded.runs, None).collect().unwrap();
    // Resolved hyperparameters are typed columns; arrays become their JSON text.
    assert_eq!(runs.column("params.x").unwrap().dtype(), &DataType::Int64);
    assert_eq!(runs.column("params.k").unwrap().dtype(), &DataType::Boolean);
    assert_eq!(runs.column("run.hidden").unwrap().str().unwrap().get(0), Some("[4,4]"));
    let annotated = annotate(runs.lazy(), &Grouping::Config, &[]);
    let summary = per_group(annotated, &Grouping::Config).collect().unwrap();
    assert_eq!(summary.height(), 2);

    // Config A, final returns 10, 20, 30, 100: mean 40; unbiased std sqrt(5000/3); median 25;
    // IQM (drop 1 each end) 25; optimality gap to 30: (20+10+0+0)/4 = 7.5; threshold 30: r=30
    // first reaches 31 at iteration 7 (7000), r=100 reaches 99 at iteration 2 (2000); r=10, r=20
    // never (their NaN iteration 12 must not count) → 2 of 4, mean 4500.
    // AUC over steps 1000..=11000 (span 10000): trapezoids (-1000 + r-1)/2·1000 + 4·(r-1)·1000
    // + (r-1 + r+1)/2·1000 + 4·(r+1)·1000 = -500500 + 9500·r → -50.05 + 0.95·r; mean r 40 → -12.05.
    let i = |name: &str, row: usize| summary.column(name).unwrap().i64().unwrap().get(row);
    assert_eq!(summary.column("group").unwrap().str().unwrap().get(0), Some("params.x=1"));
    assert_eq!(i("runs", 0), Some(4));
    assert!(close(f(&summary, "final_return_mean", 0), 40.0));
    assert!(close(f(&summary, "final_return_std", 0), (5000.0f64 / 3.0).sqrt()));
    assert!(close(f(&summary, "final_return_median", 0), 25.0));
    assert!(close(f(&summary, "final_return_iqm", 0), 25.0));
    assert!(close(f(&summary, "optimality_gap", 0), 7.5), "{:?}", f(&summary, "optimality_gap", 0));
    assert!(close(f(&summary, "auc_mean", 0), -50.05 + 0.95 * 40.0), "{:?}", f(&summary, "auc_mean", 0));
    assert_eq!(i("reached", 0), Some(2));
    assert!(close(f(&summary, "steps_to_threshold_mean", 0), 4500.0));

    // Config B, 1, 2, 6: mean 3, std sqrt(7), IQM (n=3, nothing dropped) 3, gap (29+28+24)/3 = 27.
    assert_eq!(i("runs", 1), Some(3));
    assert!(close(f(&summary, "final_return_mean", 1), 3.0));
    assert!(close(f(&summary, "final_return_std", 1), 7.0f64.sqrt()));
    assert!(close(f(&summary, "final_return_iqm", 1), 3.0));
    assert!(close(f(&summary, "optimality_gap", 1), 27.0));
    assert_eq!(i("reached", 1), Some(0));
    assert_eq!(f(&summary, "steps_to_threshold_mean", 1), None);
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
    let out = df.lazy().group_by([col("g")]).agg([iqm(col("x")).alias("iqm")]).sort(["g"], Default::default()).collect().unwrap();
    let got: Vec<Option<f64>> = (0..3).map(|i| f(&out, "iqm", i)).collect();
    let want = [(2.0 + 3.0 + 5.0) / 3.0, (3.0 + 4.0 + 5.0 + 6.0) / 4.0, 7.0];
    assert_eq!(got, want.map(Some));
    // The eager IQM of the bootstrap agrees with the expression.
    assert_eq!(iqm_of(&mut [5.0, 1.0, 100.0, 2.0, 3.0]), want[0]);
    assert_eq!(iqm_of(&mut [80.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 70.0]), want[1]);
}

#[test]
fn auc_and_optimality_gap_expressions() {
    // Steps 0, 10, 20 with returns 0, 10, 10 (given out of order): area 50 + 100 over 20 → 7.5.
    // Gap to 475 of 100, 300, 500: (375 + 175 + 0) / 3.
    let df = df!(
        "step" => [20i64, 0, 10],
        "ret" => [10.0, 0.0, 10.0],
        "score" => [100.0, 300.0, 500.0],
    )
    .unwrap();
    let out = df
        .lazy()
        .select([auc(col("step"), col("ret")).alias("auc"), optimality_gap(col("score"), lit(475.0)).alias("gap")])
        .collect()
        .unwrap();
    assert!(close(f(&out, "auc", 0), 7.5), "{out}");
    assert!(close(f(&out, "gap", 0), 550.0 / 3.0), "{out}");
}

#[test]
fn percentiles_and_probability_of_improvement_by_hand() {
    // NumPy's linear interpolation: position q·(n-1).
    assert_eq!(quantile_sorted(&[1.0, 2.0, 3.0, 4.0], 0.25), 1.75);
    assert_eq!(percentile_interval(&mut [5.0, 1.0, 4.0, 2.0, 3.0], 0.5), (2.0, 4.0));
    assert_eq!(median_of(&mut [4.0, 1.0, 3.0, 2.0]), 2.5);
    // Pairs of (3,5) against (1,3): 3>1, 3=3 (half), 5>1, 5>3 → 3.5 of 4.
    assert_eq!(prob_greater(&[3.0, 5.0], &[1.0, 3.0]), 0.875);
    // Equal samples: exactly one half, as rliable special-cases.
    assert_eq!(prob_greater(&[1.0, 2.0], &[1.0, 2.0]), 0.5);
    // Average over strata: (1,2) vs (2,3) → (0 + 0 + 0.5 + 0) / 4; (5) vs (4) → 1.
    let pairs = vec![(vec![1.0, 2.0], vec![2.0, 3.0]), (vec![5.0], vec![4.0])];
    assert_eq!(probability_of_improvement(&pairs), (0.125 + 1.0) / 2.0);
}

/// `prob_greater` counts against a sorted sample; it must give exactly the pairwise definition
/// (ties a half, signed zeros equal, NaN neither greater nor equal), whatever the sizes.
#[test]
fn probability_of_improvement_counts_like_the_pairwise_definition() {
    let pairwise = |x: &[f64], y: &[f64]| {
        let u: f64 = x.iter().flat_map(|a| y.iter().map(move |b| if a > b { 1.0 } else if a == b { 0.5 } else { 0.0 })).sum();
        u / (x.len() * y.len()) as f64
    };
    let mut rng = Rng::new(7, "prob_greater", "test");
    for (n, m) in [(1, 1), (3, 7), (10, 10), (64, 5), (200, 300)] {
        // Few distinct values, so ties are common.
        let draw = |rng: &mut Rng, k: usize| (0..k).map(|_| rng.below(9) as f64 - 4.0).collect::<Vec<f64>>();
        let (x, y) = (draw(&mut rng, n), draw(&mut rng, m));
        assert_eq!(prob_greater(&x, &y).to_bits(), pairwise(&x, &y).to_bits(), "{n} x {m}");
    }
    let special = [-0.0, 0.0, f64::INFINITY, f64::NEG_INFINITY, 1.0];
    assert_eq!(prob_greater(&special, &special[1..]), pairwise(&special, &special[1..]));
    let with_nan = [1.0, f64::NAN, 3.0];
    assert_eq!(prob_greater(&with_nan, &[2.0, 0.0]), pairwise(&with_nan, &[2.0, 0.0]));
    assert_eq!(prob_greater(&[2.0, 0.0], &with_nan), pairwise(&[2.0, 0.0], &with_nan));
}

fn per_run_frame(rows: &[(&str, &str, f64)]) -> DataFrame {
    df!(
        "group" => rows.iter().map(|r| r.0).collect::<Vec<_>>(),
        "stratum" => rows.iter().map(|r| r.1).collect::<Vec<_>>(),
        "final_return" => rows.iter().map(|r| r.2).collect::<Vec<_>>(),
        "gap" => rows.iter().map(|r| (30.0 - r.2).max(0.0)).collect::<Vec<_>>(),
        "auc" => rows.iter().map(|r| r.2 / 2.0).collect::<Vec<_>>(),
    )
    .unwrap()
}

#[test]
fn bootstrap_intervals_match_the_exact_bootstrap_distribution() {
    let opts = Bootstrap { reps: 5000, band_reps: 100, seed: 1, confidence: 0.95 };
    // Group "one": one stratum {0, 0, 10, 10}. The resampled mean is 10·Binomial(4, 1/2)/4:
    // 0, 2.5, 5, 7.5, 10 with probability 1, 4, 6, 4, 1 sixteenths, so the 95% percentile
    // interval is [0, 10] and the 50% one (quartiles) is [2.5, 7.5].
    // Group "strat": two strata of one run each (3 and 7). Stratified resampling always draws
    // both, so every resample is the sample: no interval (null), rather than a zero-width one
    // at the point that would read as certainty; a plain bootstrap would give [3, 7].
    // Group "three": three runs in one stratum, below `MIN_STRATUM_RUNS`: its 95% interval
    // would be the range [1, 9] of the runs (all-1 resamples are 1/27 > 2.5%), so none.
    let runs = per_run_frame(&[
        ("one", "s", 0.0),
        ("one", "s", 0.0),
        ("one", "s", 10.0),
        ("one", "s", 10.0),
        ("strat", "a", 3.0),
        ("strat", "b", 7.0),
        ("three", "s", 1.0),
        ("three", "s", 5.0),
        ("three", "s", 9.0),
    ]);
    let ci = intervals(&runs, &opts).unwrap();
    assert_eq!(ci.column("group").unwrap().str().unwrap().get(0), Some("one"));
    assert_eq!((f(&ci, "final_return_mean_lo", 0), f(&ci, "final_return_mean_hi", 0)), (Some(0.0), Some(10.0)));
    assert_eq!((f(&ci, "final_return_iqm_lo", 1), f(&ci, "final_return_iqm_hi", 1)), (None, None));
    assert_eq!((f(&ci, "optimality_gap_lo", 1), f(&ci, "optimality_gap_hi", 1)), (None, None));
    for stat in ["final_return_iqm", "final_return_mean", "final_return_median", "optimality_gap", "auc_mean"] {
        assert_eq!((f(&ci, &format!("{stat}_lo"), 2), f(&ci, &format!("{stat}_hi"), 2)), (None, None), "{stat}");
    }
    let narrow = intervals(&runs, &Bootstrap { confidence: 0.5, ..opts }).unwrap();
    assert_eq!((f(&narrow, "final_return_mean_lo", 0), f(&narrow, "final_return_mean_hi", 0)), (Some(2.5), Some(7.5)));

    // Reproducible: the same seed gives the same table; another seed changes a wide interval;
    // removing a group leaves the others' intervals as they were.
    let wide = per_run_frame(&[("w", "s", 1.0), ("w", "s", 4.0), ("w", "s", 9.0), ("w", "s", 20.0), ("w", "s", 33.0), ("one", "s", 0.0)]);
    let a = intervals(&wide, &opts).unwrap();
    assert!(a.equals_missing(&intervals(&wide, &opts).unwrap()));
    let b = intervals(&wide, &Bootstrap { seed: 2, reps: 50, ..opts }).unwrap();
    let c = intervals(&wide, &Bootstrap { seed: 3, reps: 50, ..opts }).unwrap();
    assert!(!b.equals_missing(&c), "{b}\n{c}");
    let only_w = intervals(&wide.filter(&wide.column("group").unwrap().str().unwrap().equal("w")).unwrap(), &opts).unwrap();
    assert_eq!(f(&only_w, "final_return_iqm_lo", 0), f(&a, "final_return_iqm_lo", 1));
}

#[test]
fn probability_of_improvement_pairs_strata_and_has_an_interval() {
    let opts = Bootstrap { reps: 3000, band_reps: 100, seed: 1, confidence: 0.95 };
    // Stratum e1: best (1, 2, 1, 2) vs other (2, 3, 2, 3) → 0.125; stratum e2: (5 ×4) vs
    // (4 ×4) → 1. Stratum e3 exists only for "other" and must be ignored. Expected
    // (0.125 + 1) / 2. "few" shares e1 with three runs only: a P, but no interval.
    let mut rows = Vec::new();
    for _ in 0..2 {
        rows.extend([("best", "e1", 1.0), ("best", "e1", 2.0), ("best", "e2", 5.0), ("best", "e2", 5.0)]);
        rows.extend([("other", "e1", 2.0), ("other", "e1", 3.0), ("other", "e2", 4.0), ("other", "e2", 4.0)]);
    }
    rows.extend([("other", "e3", 100.0), ("alone", "e9", 1.0), ("few", "e1", 0.0), ("few", "e1", 0.0), ("few", "e1", 3.0)]);
    let runs = per_run_frame(&rows);
    let p = improvement_over(&runs, "best", &opts).unwrap();
    let name = |i| p.column("group").unwrap().str().unwrap().get(i).map(str::to_string);
    assert_eq!((name(0), name(1), name(3)), (Some("alone".into()), Some("best".into()), Some("other".into())));
    assert_eq!(f(&p, "p_best_better", 0), None, "no common stratum");
    assert_eq!(f(&p, "p_best_better", 1), None, "best against itself");
    assert_eq!(f(&p, "p_best_better", 3), Some(0.5625));
    // e1's resampled P ranges over 0..=0.5 (both resamples all 2s) and e2's is always 1: the
    // interval lies in [0.5, 0.75].
    let (lo, hi) = (f(&p, "p_best_better_lo", 3).unwrap(), f(&p, "p_best_better_hi", 3).unwrap());
    assert!((0.5..0.5625).contains(&lo) && 0.5625 < hi && hi <= 0.75, "[{lo}, {hi}]");
    // few (0, 0, 3) against best's e1 (1, 2, 1, 2): 8 of 12 pairs → 2/3, too few runs for an interval.
    assert_eq!(name(2), Some("few".into()));
    assert!(close(f(&p, "p_best_better", 2), 2.0 / 3.0));
    assert_eq!((f(&p, "p_best_better_lo", 2), f(&p, "p_best_better_hi", 2)), (None, None));
}

#[test]
fn curves_and_profiles_by_hand() {
    let opts = Bootstrap { reps: 100, band_reps: 500, seed: 1, confidence: 0.95 };
    // Bin 0 of group g: four runs with 1, 2, 3, 10 → IQM 2.5 (drop 1 and 10), mean 4.
    let points = df!(
        "group" => ["g", "g", "g", "g"],
        "stratum" => ["s", "s", "s", "s"],
        "run_id" => ["r1", "r2", "r3", "r4"],
        "bin" => [0i64, 0, 0, 0],
        "step" => [100.0, 100.0, 120.0, 120.0],
        "value" => [1.0, 2.0, 3.0, 10.0],
    )
    .unwrap();
    let c = curves(&points, &opts).unwrap();
    assert_eq!(c.height(), 1);
    assert_eq!((f(&c, "iqm", 0), f(&c, "mean", 0), f(&c, "step", 0), f(&c, "runs", 0)), (Some(2.5), Some(4.0), Some(110.0), Some(4.0)));
    let (lo, hi) = (f(&c, "iqm_lo", 0).unwrap(), f(&c, "iqm_hi", 0).unwrap());
    assert!(lo < 2.5 && 2.5 < hi && lo >= 1.0 && hi <= 10.0, "[{lo}, {hi}]");

    // Scores 0 and 10: τ runs from -0.5 to 10.5 in steps of 1; the fraction above τ is 1, then
    // 0.5 for τ = 0.5 ..= 9.5, then 0.
    let runs = per_run_frame(&[("g", "s", 0.0), ("g", "s", 10.0)]);
    let prof = profiles(&runs, 12, &opts).unwrap();
    let taus: Vec<f64> = (0..12).map(|i| f(&prof, "tau", i).unwrap()).collect();
    let fracs: Vec<f64> = (0..12).map(|i| f(&prof, "fraction", i).unwrap()).collect();
    assert!(taus.iter().zip((0..12).map(|i| i as f64 - 0.5)).all(|(a, b)| (a - b).abs() < 1e-12), "{taus:?}");
    let mut want = vec![0.5; 12];
    (want[0], want[11]) = (1.0, 0.0);
    assert_eq!(fracs, want);
}

#[test]
fn where_and_group_by_expressions() {
    let df = df!(
        "run_id" => ["r1", "r2", "r3", "r4"],
        "run.lr" => [1e-3, 2.5e-4, 1e-3, 3e-3],
        "run.env" => ["CartPole-v1", "CartPole-v1", "Acrobot-v1", "Pendulum-v1"],
        "run.anneal_lr" => [true, false, true, true],
        "params.clip_coef" => [0.1, 0.2, 0.2, 0.3],
        "params.lr" => [1.0, 1.0, 1.0, 1.0],
        "run.num_envs" => [8i64, 8, 16, 16],
    )
    .unwrap();
    let schema = df.schema().clone();
    let kept = |exprs: &[&str]| -> Vec<String> {
        let mut lf = df.clone().lazy();
        for e in exprs {
            lf = lf.filter(parse_where(e, &schema).unwrap());
        }
        let out = lf.collect().unwrap();
        let ids = out.column("run_id").unwrap().str().unwrap().clone();
        (0..ids.len()).map(|i| ids.get(i).unwrap_or("").to_string()).collect()
    };
    assert_eq!(kept(&["run.lr=1e-3"]), ["r1", "r3"]);
    assert_eq!(kept(&["clip_coef >= 0.2", "env != Pendulum-v1"]), ["r2", "r3"]);
    assert_eq!(kept(&["env=CartPole-v1,Acrobot-v1"]), ["r1", "r2", "r3"]);
    assert_eq!(kept(&["anneal_lr == false"]), ["r2"]);
    assert_eq!(kept(&["num_envs<16"]), ["r1", "r2"]);
    assert_eq!(parse_keys("env, clip_coef", &schema).unwrap(), ["run.env", "params.clip_coef"]);
    assert!(resolve_key("algo", "algo", &schema).err().unwrap().to_string().contains("unknown key `algo`"));

    let err = |e: &str| parse_where(e, &schema).err().map(|e| e.to_string()).unwrap_or_default();
    assert_eq!(err("run.lr<abc"), "bad expression `run.lr<abc`: `abc` is not a number (key `run.lr` is numeric)");
    assert!(err("lr=1").starts_with("bad expression `lr=1`: key `lr` is ambiguous: params.lr, run.lr"), "{}", err("lr=1"));
    assert!(err("gamma=0.9").starts_with("bad expression `gamma=0.9`: unknown key `gamma`; known keys: sweep, label"), "{}", err("gamma=0.9"));
    assert!(err("gamma=0.9").ends_with(", algo (run.plugin), env (run.env)"), "the aliases are listed: {}", err("gamma=0.9"));
    assert_eq!(err("env>Cart"), "bad expression `env>Cart`: key `run.env` is text: only = and != apply");
    assert_eq!(err("anneal_lr=yes"), "bad expression `anneal_lr=yes`: `yes` is not true or false (key `run.anneal_lr` is true/false)");
    assert_eq!(err("clip_coef 0.2"), "bad expression `clip_coef 0.2`: expected KEY OP VALUE with OP one of =, ==, !=, <, <=, >, >=");
    assert_eq!(err("clip_coef="), "bad expression `clip_coef=`: no value after the operator");
    assert_eq!(err("=3"), "bad expression `=3`: no key before the operator");
    assert_eq!(err("clip_coef!3"), "bad expression `clip_coef!3`: `!` must be followed by `=`");
    assert_eq!(
        parse_keys("env,run.env", &schema).err().unwrap().to_string(),
        "bad expression `env,run.env`: key `run.env` is named twice"
    );
    // Review finding (research): a misspelled key names the one meant, last.
    assert!(err("clip_cof=0.2").ends_with("env (run.env); did you mean `clip_coef`?"), "{}", err("clip_cof=0.2"));
    assert!(err("lr_x=1").ends_with("env (run.env)"), "nothing close: {}", err("lr_x=1"));
    let flag = parse_keys("nope", &schema).map_err(crate::analyze::query::for_flag("--group-by")).err().unwrap().to_string();
    assert!(flag.starts_with("`--group-by nope`: unknown key `nope`; known keys: sweep, label"), "{flag}");
    // Code review: the runs table's own run key was accepted (`--compare __drover_run` failed
    // in the entropy law, `--group-by` wrote it into a table): it is no key of the user's.
    let keyed = df.clone().lazy().with_column(lit(0u32).alias(crate::analyze::load::RUN_KEY)).collect().unwrap();
    let keyed_schema = keyed.schema().clone();
    let refused = resolve_key(crate::analyze::load::RUN_KEY, "__drover_run<3", &keyed_schema).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(refused.contains("unknown key `__drover_run`"), "{refused}");
}

#[test]
fn compare_ranks_groups_across_directories_with_probability_of_improvement() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    two_configs(&a);
    // The second directory repeats run a0 (left out as a duplicate) and adds x=3: 0, 0, 0.
    write_run(&b, "a0", "cfgA", "params.x=1", 0, 10.0, json!({"x": 1, "k": true}), true);
    for (i, r) in [0.0, 0.0, 0.0].into_iter().enumerate() {
        write_run(&b, &format!("c{i}"), "cfgC", "params.x=3", i as u64, r, json!({"x": 3, "k": true}), true);
    }
    let out = tmp.path().join("out");
    let opts = Options { compare: Some("x".into()), plots: true, ..options(vec![a, b], &out) };
    let outcome = analyze(&opts).unwrap();
    assert_eq!(outcome.completed, 10);
    assert_eq!(outcome.analyzed, 10);
    let why = format!("duplicate of the same run in `{}`", tmp.path().join("a").display());
    assert!(outcome.left_out.contains(&LeftOut { run_id: "a0".into(), state: "a duplicate", why }));
    assert_eq!(outcome.best, [Best { env: None, group: "params.x=1".into() }]);
    let s = &outcome.summary;
    let groups: Vec<String> = (0..3).map(|i| s.column("group").unwrap().str().unwrap().get(i).unwrap().to_string()).collect();
    assert_eq!(groups, ["params.x=1", "params.x=2", "params.x=3"], "ranked by IQM: 25, 3, 0");
    assert_eq!((0..3).map(|i| f(s, "rank", i)).collect::<Vec<_>>(), [Some(1.0), Some(2.0), Some(3.0)]);
    // All other hyperparameters are equal: one common stratum. A (10, 20, 30, 100) beats B
    // (1, 2, 6) and C (0, 0, 0) in all 12 pairs.
    assert_eq!((f(s, "p_best_better", 0), f(s, "p_best_better", 1), f(s, "p_best_better", 2)), (None, Some(1.0), Some(1.0)));
    assert!(outcome.table.contains("P(best > this) [95% CI]"), "{}", outcome.table);
    let md = std::fs::read_to_string(out.join("tables/compare-params.x.md")).unwrap();
    // B and C have 3 runs: points without intervals, and a note saying why and what is needed.
    // After the settings (`an_analysis_records_its_slice_and_removes_only_its_predecessors_files`).
    assert!(md.contains("learning-curve bins\n\n| group | runs | IQM [95% CI] |") && md.contains("| params.x=2 | 3 | 3.00 | 3.00 ± 2.65 |"), "{md}");
    assert!(md.contains("| params.x=1 | 4 | 25.00 [10.00, 100.00] |") && md.contains("| 1.00 |"), "{md}");
    let note = "note: no 95% interval for 2 of 3 groups (`params.x=2`, `params.x=3`): an interval needs at least 4 runs in every stratum";
    assert!(md.contains(note) && outcome.table.contains(note), "{md}\n{}", outcome.table);
    for name in ["compare-params.x.csv", "compare-params.x.parquet", "runs.parquet", "curves-by-params.x.parquet", "profiles-by-params.x.csv"] {
        assert!(out.join("tables").join(name).is_file(), "{name}");
    }
    for name in ["curves-by-params.x", "profile-by-params.x", "final-by-params.x"] {
        assert!(out.join("plots").join(format!("{name}.png")).is_file() && out.join("plots").join(format!("{name}.svg")).is_file(), "{name}");
    }

    // A slice: only x >= 2, grouped by configuration.
    let opts = Options { filters: vec!["x>=2".into()], ..options(vec![tmp.path().join("a"), tmp.path().join("b")], &out) };
    let outcome = analyze(&opts).unwrap();
    assert_eq!(outcome.analyzed, 6);
    assert_eq!(outcome.summary.height(), 2);
    // Comparing on a key with one value left: a table, but no "best" group and no P(improvement).
    let opts = Options { compare: Some("x".into()), filters: vec!["x=2".into()], ..opts };
    let outcome = analyze(&opts).unwrap();
    assert_eq!((outcome.summary.height(), outcome.best.len()), (1, 0));
    assert!(outcome.summary.column("p_best_better").is_err() && !outcome.table.contains("P(best"), "{}", outcome.table);
    // Review finding (research): said as a log line (`WARN drover::analyze::pipeline: ...`);
    // now under the table with the analysis' other warnings.
    assert!(
        outcome.table.contains("warning: --compare x: all 3 runs analyzed have the same value of it; nothing to compare"),
        "{}",
        outcome.table
    );
    let opts = Options { compare: None, filters: vec!["x>5".into()], ..opts };
    assert_eq!(analyze(&opts).err().unwrap().to_string(), "bad expression `x>5`: no completed run matches (of 10); `x>5` matches no run: `params.x` is 1, 2, 3");
}

#[test]
fn plots_are_drawn_with_the_embedded_font() {
    let tmp = tempfile::tempdir().unwrap();
    let lines = vec![
        Line { name: "first".into(), points: (0..20).map(|i| (i as f64 * 1000.0, i as f64, i as f64 - 2.0, i as f64 + 2.0)).collect() },
        Line { name: "second".into(), points: (0..20).map(|i| (i as f64 * 1000.0, 10.0, 8.0, 12.0)).collect() },
    ];
    let chart = LineChart { title: "Title", x_desc: "environment steps", y_desc: "episodic return", legend_low: true };
    let written = render(&tmp.path().join("c"), &Chart::Lines(chart, &lines)).unwrap();
    assert_eq!(written, [tmp.path().join("c.png"), tmp.path().join("c.svg")]);
    let bytes = std::fs::read(&written[0]).unwrap();
    let mut reader = png::Decoder::new(std::io::Cursor::new(bytes)).read_info().unwrap();
    let mut pixels = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut pixels).unwrap();
    assert_eq!((info.width, info.height), (1000, 620));
    let rgb: Vec<[u8; 3]> = pixels.chunks(3).map(|p| [p[0], p[1], p[2]]).collect();
    // The first line's colour (Tableau blue) is drawn, and the title row has dark text pixels:
    // with no font the text would be blank.
    assert!(rgb.iter().filter(|p| **p == [31, 119, 180]).count() > 500);
    let title_dark = rgb[..1000 * 40].iter().filter(|p| p.iter().all(|&c| c < 100)).count();
    assert!(title_dark > 30, "{title_dark} dark pixels in the title band");
    let svg = std::fs::read_to_string(&written[1]).unwrap();
    assert!(svg.contains("environment steps") && svg.contains("second") && svg.contains("<polygon"), "{svg}");
}

/// Writes one run of a sequence task: 20 iterations whose `token_entropy` H falls from 1.44 to
/// 0.30 and whose `accuracy` (also the return) is exactly `-a·exp(H) + b`; `constant_h` keeps H
/// at 1.0 instead (a run the law cannot be fitted to).
fn write_seq_run(root: &Path, run_id: &str, config_id: &str, label: &str, seed: u64, (a, b): (f64, f64), constant_h: bool) {
    let dir = root.join("runs").join(run_id);
    std::fs::create_dir_all(&dir).unwrap();
    let spec = json!({
        "format_version": 1, "run_id": run_id, "config_id": config_id, "sweep": "seq", "label": label,
        "axes": {}, "run": {"seed": seed, "success_return": 0.9, "env": "arith", "plugin": label},
        "params": {}, "plugin_path": "/x.so"
    });
    std::fs::write(dir.join("spec.json"), spec.to_string()).unwrap();
    let iteration: Vec<i64> = (1..=20).collect();
    let h: Vec<f64> = iteration.iter().map(|&i| if constant_h { 1.0 } else { 1.5 - 0.06 * i as f64 }).collect();
    let acc: Vec<f64> = h.iter().map(|h| -a * h.exp() + b).collect();
    let mut df = df!(
        "iteration" => &iteration,
        "global_step" => iteration.iter().map(|i| i * 100).collect::<Vec<_>>(),
        "episodic_return_mean" => &acc,
        "episodes" => vec![8i64; 20],
        "entropy" => &h,
        "accuracy" => &acc,
        "token_entropy" => &h,
    )
    .unwrap();
    let file = std::fs::File::create(dir.join("metrics.parquet")).unwrap();
    ParquetWriter::new(file).finish(&mut df).unwrap();
    let exit = json!({"format_version": 1, "run_id": run_id, "status": "completed", "reason": null, "finished_at": "0"});
    std::fs::write(dir.join("exit.json"), exit.to_string()).unwrap();
}

/// The law fitted to one run's (H, R) points, as `law_fits` gives it: (points, a, b, r2,
/// ceiling, reason).
type Fit = (i64, Option<f64>, Option<f64>, Option<f64>, Option<f64>, Option<String>);

fn fits(runs: &[(&str, Vec<(f64, f64)>)]) -> Vec<Fit> {
    // Each run's key is its id's place among the ids in order, so the fits come in id order.
    let mut sorted: Vec<&str> = runs.iter().map(|(id, _)| *id).collect();
    sorted.sort_unstable();
    let key = |id: &str| u32::try_from(sorted.iter().position(|s| *s == id).unwrap()).unwrap();
    let keys: Vec<u32> = runs.iter().flat_map(|(id, p)| std::iter::repeat_n(key(id), p.len())).collect();
    let h: Vec<f64> = runs.iter().flat_map(|(_, p)| p.iter().map(|q| q.0)).collect();
    let r: Vec<f64> = runs.iter().flat_map(|(_, p)| p.iter().map(|q| q.1)).collect();
    let frame = df!(RUN_KEY => keys, "h" => h, "r" => r).unwrap();
    let out = law_fits(frame.lazy()).sort([RUN_KEY], Default::default()).collect().unwrap();
    assert_eq!(column_names(&out), [RUN_KEY, "points", "a", "b", "r2", "ceiling", "reason"]);
    let reason = out.column("reason").unwrap().str().unwrap().clone();
    (0..out.height())
        .map(|i| {
            let points = out.column("points").unwrap().i64().unwrap().get(i).unwrap();
            (points, f(&out, "a", i), f(&out, "b", i), f(&out, "r2", i), f(&out, "ceiling", i), reason.get(i).map(str::to_string))
        })
        .collect()
}

#[test]
fn entropy_law_fit_recovers_a_known_law_exactly() {
    // R = -0.3·exp(H) + 0.9 at 30 entropies from 2.0 down to 0.26: OLS on x = e^H is exact.
    let points: Vec<(f64, f64)> = (0..30).map(|i| 2.0 - 0.06 * f64::from(i)).map(|h| (h, -0.3 * h.exp() + 0.9)).collect();
    let [(n, a, b, r2, ceiling, reason)] = fits(&[("r", points)]).try_into().unwrap();
    assert_eq!(n, 30);
    assert!(close(a, 0.3) && close(b, 0.9), "{a:?} {b:?}");
    assert!(close(r2, 1.0) && close(ceiling, 0.6), "{r2:?} {ceiling:?}");
    assert_eq!(reason, None);
}

#[test]
fn entropy_law_fit_matches_a_hand_computed_three_point_case() {
    // x = e^H = 1, 2, 3 and R = 0.9, 0.6, 0.4: x̄ = 2, R̄ = 19/30, deviations of R 8/30, -1/30,
    // -7/30; Sxx = 2, Sxy = -15/30 = -1/2, Syy = 114/900. Slope -1/4 → a = 1/4,
    // b = 19/30 + 2/4 = 17/15, R² = Sxy² / (Sxx·Syy) = 225/228, ceiling b - a = 53/60.
    let points = vec![(0.0, 0.9), (2f64.ln(), 0.6), (3f64.ln(), 0.4)];
    let [(n, a, b, r2, ceiling, reason)] = fits(&[("r", points)]).try_into().unwrap();
    assert_eq!((n, reason), (3, None));
    assert!(close(a, 0.25) && close(b, 17.0 / 15.0), "{a:?} {b:?}");
    assert!(close(r2, 225.0 / 228.0) && close(ceiling, 53.0 / 60.0), "{r2:?} {ceiling:?}");
}

#[test]
fn entropy_law_fit_of_noisy_points_agrees_with_a_plain_recomputation() {
    // 200 noisy points; the expected values come from the raw normal equations and
    // R² = 1 - SSres/SStot, not from the centred sums and Sxy²/(Sxx·Syy) the fit uses.
    let mut rng = Rng::new(3, "noisy", "law");
    let points: Vec<(f64, f64)> = (0..200)
        .map(|i| {
            let h = 0.2 + 1.6 * f64::from(i) / 199.0;
            let noise = (rng.below(1_000_001) as f64 / 1e6 - 0.5) * 0.2;
            (h, -0.15 * h.exp() + 0.95 + noise)
        })
        .collect();
    let [(n, a, b, r2, _, reason)] = fits(&[("r", points.clone())]).try_into().unwrap();
    let m = points.len() as f64;
    let (sx, sy) = (points.iter().map(|p| p.0.exp()).sum::<f64>(), points.iter().map(|p| p.1).sum::<f64>());
    let sxx = points.iter().map(|p| p.0.exp() * p.0.exp()).sum::<f64>();
    let sxy = points.iter().map(|p| p.0.exp() * p.1).sum::<f64>();
    let slope = (m * sxy - sx * sy) / (m * sxx - sx * sx);
    let intercept = (sy - slope * sx) / m;
    let ss_res: f64 = points.iter().map(|p| (p.1 - (slope * p.0.exp() + intercept)).powi(2)).sum();
    let ss_tot: f64 = points.iter().map(|p| (p.1 - sy / m).powi(2)).sum();
    assert_eq!((n, reason), (200, None));
    assert!(close(a, -slope) && close(b, intercept), "{a:?} {b:?} vs {} {intercept}", -slope);
    assert!(close(r2, 1.0 - ss_res / ss_tot), "{r2:?} vs {}", 1.0 - ss_res / ss_tot);
    // The noise is real: the fit is good but not perfect, and a is near the generating 0.15.
    let (r2, a) = (r2.unwrap(), a.unwrap());
    assert!(0.5 < r2 && r2 < 0.999 && (a - 0.15).abs() < 0.03, "r2 {r2}, a {a}");
}

#[test]
fn entropy_law_fit_of_degenerate_runs_gives_nulls_with_a_reason() {
    let law = |h: f64| -0.2 * h.exp() + 1.0;
    let fitted = fits(&[
        ("a_two_points", vec![(1.0, 0.5), (0.5, 0.6)]),
        ("b_constant_h", vec![(0.7, 0.1), (0.7, 0.5), (0.7, 0.9), (0.7, 0.2)]),
        ("c_constant_r", vec![(1.0, 0.5), (0.8, 0.5), (0.6, 0.5)]),
        // NaN, infinite and overflowing (e^800) points are left out: three finite ones remain.
        ("d_non_finite", vec![(1.0, law(1.0)), (f64::NAN, 0.3), (0.5, f64::INFINITY), (800.0, 0.1), (0.6, law(0.6)), (0.2, law(0.2))]),
        ("e_all_nan", vec![(f64::NAN, 0.5), (f64::NAN, 0.5), (f64::NAN, 0.5)]),
    ]);
    let few = Some(format!("fewer than {LAW_MIN_POINTS} points with finite entropy and reward"));
    assert_eq!(fitted[0], (2, None, None, None, None, few.clone()));
    assert_eq!(fitted[1], (4, None, None, None, None, Some("constant entropy: no slope to fit".into())));
    // A flat fit: a = 0, b = 0.5, nothing explained and nothing to explain.
    let (n, a, b, r2, ceiling, reason) = fitted[2].clone();
    assert_eq!((n, r2, reason), (3, None, Some("constant reward: R² undefined".into())));
    assert!(close(b, 0.5) && close(ceiling, 0.5), "{:?}", fitted[2]);
    // +0.0, not -0.0 (review finding 8: the tables wrote `-0.0`).
    assert_eq!(a.map(f64::to_bits), Some(0.0f64.to_bits()), "{:?}", fitted[2]);
    let (n, a, b, r2, _, reason) = fitted[3].clone();
    assert_eq!((n, reason), (3, None));
    assert!(close(a, 0.2) && close(b, 1.0) && close(r2, 1.0), "{:?}", fitted[3]);
    assert_eq!(fitted[4], (0, None, None, None, None, few));
}

#[test]
fn mean_intervals_skip_missing_values_and_resample_within_strata() {
    let opts = Bootstrap { reps: 3000, band_reps: 10, seed: 4, confidence: 0.95 };
    // Group g: a = 0, 0, 10, 10 (one stratum) and a failed fit (NaN): mean 5, interval [0, 10].
    // Group h: a = 3 and 7 in two strata: stratified resampling always draws both, nothing
    // varies → mean 5, no interval.
    // Group z: no finite value → nulls. Group t: three finite values (and a NaN, which does
    // not count as a run): mean 5, below `MIN_STRATUM_RUNS` → no interval.
    let frame = df!(
        "group" => ["g", "g", "g", "g", "g", "h", "h", "t", "t", "t", "t", "z"],
        "stratum" => ["s", "s", "s", "s", "s", "p", "q", "s", "s", "s", "s", "s"],
        "a" => [0.0, 0.0, 10.0, 10.0, f64::NAN, 3.0, 7.0, 1.0, 5.0, 9.0, f64::NAN, f64::NAN],
    )
    .unwrap();
    let out = mean_intervals(&frame, &["a"], &opts).unwrap();
    assert_eq!(column_names(&out), ["group", "a_mean", "a_lo", "a_hi"]);
    assert_eq!((f(&out, "a_mean", 0), f(&out, "a_lo", 0), f(&out, "a_hi", 0)), (Some(5.0), Some(0.0), Some(10.0)));
    assert_eq!((f(&out, "a_mean", 1), f(&out, "a_lo", 1), f(&out, "a_hi", 1)), (Some(5.0), None, None));
    assert_eq!((f(&out, "a_mean", 2), f(&out, "a_lo", 2), f(&out, "a_hi", 2)), (Some(5.0), None, None));
    assert_eq!((f(&out, "a_mean", 3), f(&out, "a_lo", 3)), (None, None));
}

fn column_names(df: &DataFrame) -> Vec<String> {
    df.get_column_names().into_iter().map(|n| n.to_string()).collect()
}

fn csv_header(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines().next().unwrap_or("").split(',').map(str::to_string).collect()
}

#[test]
fn analyze_writes_entropy_curves_and_the_law_for_sequence_runs_only() {
    let tmp = tempfile::tempdir().unwrap();
    let seq = tmp.path().join("seq");
    // grpo: a = 0.20, 0.21, 0.22, 0.23 over seeds, b = 1; cov: a = 0.1, b = 0.8, and a third
    // run with a constant entropy that cannot be fitted.
    for seed in 0..4u64 {
        write_seq_run(&seq, &format!("g{seed}"), "cfgG", "grpo", seed, (0.2 + 0.01 * seed as f64, 1.0), false);
    }
    write_seq_run(&seq, "c0", "cfgC", "cov", 0, (0.1, 0.8), false);
    write_seq_run(&seq, "c1", "cfgC", "cov", 1, (0.1, 0.8), false);
    write_seq_run(&seq, "c2", "cfgC", "cov", 2, (0.1, 0.8), true);
    let out = tmp.path().join("out");
    let outcome = analyze(&Options { plots: true, ..options(vec![seq.clone()], &out) }).unwrap();
    assert_eq!(outcome.curves, ["token_entropy", "accuracy"]);

    let per_run = csv_header(&out.join("tables/entropy_law.csv"));
    assert_eq!(
        per_run,
        ["run_id", "config_id", "sweep", "label", "group", "stratum", "seed", "points", "a", "b", "r2", "ceiling", "reason"]
    );
    let text = std::fs::read_to_string(out.join("tables/entropy_law.csv")).unwrap();
    let rows: Vec<Vec<&str>> = text.lines().skip(1).map(|l| l.split(',').collect()).collect();
    assert_eq!(rows.len(), 7, "{text}");
    // Sorted by group then seed: cov c0, c1, c2, then grpo g0..g3.
    let num = |s: &str| s.parse::<f64>().ok();
    assert_eq!((rows[0][0], rows[2][0], rows[5][0]), ("c0", "c2", "g2"));
    assert!(close(num(rows[0][8]), 0.1) && close(num(rows[0][9]), 0.8) && close(num(rows[0][10]), 1.0), "{text}");
    assert!(close(num(rows[5][8]), 0.22) && close(num(rows[5][11]), 0.78), "{text}");
    assert_eq!((rows[2][7], rows[2][8], rows[2][12]), ("20", "", "constant entropy: no slope to fit"), "{text}");

    let law = outcome.law.as_ref().expect("law summary");
    let names = column_names(law);
    assert_eq!(&names[..6], ["config_id", "label", "group", "runs", "fitted", "a_mean"]);
    // cov: 2 of 3 runs fitted, both a = 0.1, too few for an interval; grpo: a mean 0.215
    // within [0.20, 0.23].
    assert_eq!((f(law, "runs", 0), f(law, "fitted", 0)), (Some(3.0), Some(2.0)));
    assert!(close(f(law, "a_mean", 0), 0.1) && f(law, "a_lo", 0).is_none() && close(f(law, "ceiling_mean", 0), 0.7), "{law}");
    assert!(close(f(law, "a_mean", 1), 0.215) && close(f(law, "b_mean", 1), 1.0) && close(f(law, "r2_mean", 1), 1.0), "{law}");
    let (lo, hi) = (f(law, "a_lo", 1).unwrap(), f(law, "a_hi", 1).unwrap());
    assert!((0.2 - 1e-9..0.215).contains(&lo) && 0.215 < hi && hi <= 0.23 + 1e-9, "[{lo}, {hi}]");
    let table = outcome.law_table.as_deref().unwrap_or("");
    assert!(table.starts_with("group") && table.contains("R² [95% CI]") && table.contains("2/3"), "{table}");
    let md = std::fs::read_to_string(out.join("tables/entropy_law_summary.md")).unwrap();
    assert!(md.contains("| grpo | 4/4 | 0.21") && md.contains("| cov | 2/3 | 0.100 | "), "{md}");
    assert!(out.join("tables/entropy_law.parquet").is_file() && out.join("tables/entropy_law_summary.parquet").is_file());

    // Entropy curves: bins of 100 steps-ish; grpo's first bin averages high entropies.
    let curves = csv_header(&out.join("tables/curves-token_entropy.csv"));
    assert_eq!(curves, ["group", "bin", "step", "runs", "mean", "iqm", "iqm_lo", "iqm_hi"]);
    for name in ["curves-token_entropy", "curves-accuracy", "entropy_law", "curves", "final", "profile"] {
        for ext in ["png", "svg"] {
            assert!(out.join("plots").join(format!("{name}.{ext}")).is_file(), "{name}.{ext}");
        }
    }
    let svg = std::fs::read_to_string(out.join("plots/entropy_law.svg")).unwrap();
    assert!(svg.contains("<circle") && svg.contains("grpo") && svg.contains("token_entropy"), "scatter with legend");

    // CartPole-style runs (no such columns): exactly the old outputs, no law, no extra curves.
    let cart = tmp.path().join("cart");
    two_configs(&cart);
    let outcome = analyze(&Options { plots: true, ..options(vec![cart.clone()], &cart) }).unwrap();
    assert!(outcome.curves.is_empty() && outcome.law.is_none() && outcome.law_table.is_none());
    let mut files: Vec<String> = outcome.written.iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
    files.sort();
    assert!(files.iter().all(|f| !f.contains("entropy") && !f.contains("accuracy")), "{files:?}");
    assert!(!cart.join("tables/entropy_law.csv").exists() && !cart.join("plots/entropy_law.png").exists());
    // Four tables as CSV and Parquet, the summary's Markdown, the record, three plots as PNG and SVG.
    assert_eq!(files.len(), 4 * 2 + 1 + 1 + 3 * 2, "{files:?}");

    // Any metrics column can be asked for; one that no run has is refused with the columns known.
    let opts = Options { curves: Some(vec!["policy_loss".into()]), ..options(vec![cart.clone()], &cart) };
    let outcome = analyze(&opts).unwrap();
    assert_eq!(outcome.curves, ["policy_loss"]);
    assert!(cart.join("tables/curves-policy_loss.csv").is_file());
    let opts = Options { curves: Some(vec!["token_entropy".into()]), ..opts };
    let err = analyze(&opts).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(err.starts_with("`--curves token_entropy`: no run's metrics have a column `token_entropy`; columns: episodes, episodic_return_mean, global_step, iteration, policy_loss"), "{err}");
}

#[test]
fn law_plot_text_has_glyphs_in_the_embedded_font() {
    use ab_glyph::Font;
    // A missing glyph would draw as an empty box in the PNG.
    let font = ab_glyph::FontRef::try_from_slice(super::plot::FONT).unwrap();
    for c in "Entropy-performance law R = -a·exp(H) + b: iterations, mean fit policy entropy H (token_entropy, nats) accuracy".chars() {
        assert_ne!(font.glyph_id(c).0, 0, "glyph for {c:?}");
    }
    let tmp = tempfile::tempdir().unwrap();
    let groups = vec![
        Scatter { name: "fit".into(), points: vec![(0.1, 0.9), (1.0, 0.5), (1.5, 0.1)], curve: vec![(0.1, 0.88), (1.5, 0.12)] },
        Scatter { name: "none".into(), points: vec![(0.5, 0.5)], curve: vec![] },
    ];
    let chart = LineChart { title: "law", x_desc: "H", y_desc: "R", legend_low: false };
    let written = render(&tmp.path().join("law"), &Chart::Scatter(chart, &groups)).unwrap();
    let svg = std::fs::read_to_string(&written[1]).unwrap();
    assert_eq!(svg.matches("<circle").count(), 4 + 1, "four dots and the legend dot of the unfitted group: {svg}");
}

#[test]
fn comparing_plugins_leaves_their_params_out_of_the_strata() {
    let runs = df!(
        "run.plugin" => ["a", "b", "b"],
        "params.clip" => [Some(0.1), None, Some(0.3)],
        "run.lr" => [0.1, 0.1, 0.2],
    )
    .unwrap();
    let hyper = ["params.clip", "run.lr", "run.plugin"].map(String::from);
    let strata = |keys: &[&str]| {
        let grouping = Grouping::Keys(keys.iter().map(|k| k.to_string()).collect());
        let out = annotate(runs.clone().lazy(), &grouping, &hyper).collect().unwrap();
        (0..3).map(|i| out.column("stratum").unwrap().str().unwrap().get(i).unwrap().to_string()).collect::<Vec<_>>()
    };
    // By plugin: each plugin's own parameters belong to it, only run.* stratifies.
    assert_eq!(strata(&["run.plugin"]), ["run.lr=0.1", "run.lr=0.1", "run.lr=0.2"]);
    // By anything else, params stay in the stratum.
    assert_eq!(strata(&["run.lr"]), ["params.clip=0.1|run.plugin=a", "params.clip=null|run.plugin=b", "params.clip=0.3|run.plugin=b"]);
}

/// A run's hyperparameter columns hold what it trained with: `summary.json`'s `params` (the
/// sweep's values and the plugin's defaults), so a run that left `ent_coef` at the plugin's
/// 0.01 groups with one that set 0.01, not apart under `null`; a summary without them (an
/// older drover-job) falls back to `spec.json`'s.
#[test]
fn hyperparameter_columns_hold_the_plugins_defaults_the_runs_trained_with() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    write_run(root, "set", "cfgA", "params.ent_coef=0.01", 1, 10.0, json!({"ent_coef": 0.01}), true);
    write_run(root, "default", "cfgB", "base", 1, 20.0, json!({}), true);
    write_run(root, "older", "cfgB", "base", 2, 30.0, json!({}), true);
    let summary = |params: serde_json::Value| json!({"format_version": 1, "params": params}).to_string();
    std::fs::write(root.join("runs/default/summary.json"), summary(json!({"ent_coef": 0.01, "clip_coef": 0.2}))).unwrap();
    std::fs::write(root.join("runs/older/summary.json"), json!({"format_version": 1}).to_string()).unwrap();

    let loaded = load_results(&[root.to_path_buf()], &[]).unwrap();
    assert!(loaded.hyperparameters.contains(&"params.clip_coef".to_string()), "{:?}", loaded.hyperparameters);
    let runs = loaded.runs.sort(["run_id"], Default::default()).collect().unwrap();
    let ids: Vec<String> = (0..3).map(|i| runs.column("run_id").unwrap().str().unwrap().get(i).unwrap().to_string()).collect();
    assert_eq!(ids, ["default", "older", "set"]);
    let ent: Vec<Option<f64>> = (0..3).map(|i| f(&runs, "params.ent_coef", i)).collect();
    assert_eq!(ent, [Some(0.01), None, Some(0.01)]);
}

#[test]
fn damaged_runs_are_left_out_with_file_and_reason_and_the_rest_is_analyzed() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    two_configs(root);
    let run = |id: &str| root.join("runs").join(id);
    let parquet = std::fs::read(run("a0").join("metrics.parquet")).unwrap();
    std::fs::write(run("a0").join("metrics.parquet"), &parquet[..parquet.len() - 10]).unwrap();
    std::fs::write(run("a1").join("exit.json"), "{").unwrap();
    std::fs::write(run("a2").join("spec.json"), r#"{"format_version": 7}"#).unwrap();
    std::fs::write(run("b0").join("summary.json"), "not json").unwrap();
    // A whole Parquet file without the columns every analysis needs.
    let mut df = df!("x" => [1i64, 2]).unwrap();
    ParquetWriter::new(std::fs::File::create(run("b1").join("metrics.parquet")).unwrap()).finish(&mut df).unwrap();

    let loaded = load_results(&[root.to_path_buf()], &[]).unwrap();
    assert_eq!(loaded.completed, 2, "a3 and b2 are whole");
    let why = |id: &str| loaded.left_out.iter().find(|r| r.run_id == id).map(|r| r.why.clone()).unwrap_or_default();
    let path = |id: &str, file: &str| run(id).join(file).display().to_string();
    assert!(why("a0").contains(&path("a0", "metrics.parquet")) && why("a0").contains("truncated"), "{}", why("a0"));
    assert!(why("a1").contains(&path("a1", "exit.json")), "{}", why("a1"));
    assert!(why("a2").contains(&path("a2", "spec.json")) && why("a2").contains("unknown format_version 7"), "{}", why("a2"));
    assert!(why("b0").contains(&path("b0", "summary.json")), "{}", why("b0"));
    assert!(why("b1").contains("no `iteration` column"), "{}", why("b1"));
    assert_eq!(why("b9"), "unfinished");
    // The statistics over the remaining runs still compute.
    let runs = per_run(loaded.metrics, loaded.runs, None).collect().unwrap();
    assert_eq!(runs.height(), 2);
}

/// Failure-injection review D11: two `drover analyze` into one place renamed each other's
/// temporary files away. The second waits for the first's lock.
#[test]
fn a_second_analysis_into_the_same_place_waits_for_the_first() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let first = super::pipeline::lock_output(&out).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let waiter = {
        let out = out.clone();
        std::thread::spawn(move || {
            let second = super::pipeline::lock_output(&out).unwrap();
            tx.send(()).unwrap();
            drop(second);
        })
    };
    assert!(rx.recv_timeout(std::time::Duration::from_millis(300)).is_err(), "the second went ahead while the first wrote");
    drop(first);
    rx.recv_timeout(std::time::Duration::from_secs(10)).expect("the second goes on once the first is done");
    waiter.join().unwrap();
}

/// Failure-injection review D2: a metrics file whose frame and footer are whole but whose first
/// page is damaged stopped the analysis of every run ("polars failed while reading the metrics
/// files: ... bad data", naming no file). It is left out by name, as a damaged frame is.
#[test]
fn a_metrics_file_with_a_damaged_page_is_left_out_and_the_rest_is_analyzed() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("r");
    two_configs(&root);
    let bad = root.join("runs/a0/metrics.parquet");
    let mut bytes = std::fs::read(&bad).unwrap();
    for b in &mut bytes[10..50] {
        *b ^= 0x5a;
    }
    std::fs::write(&bad, &bytes).unwrap();
    assert!(crate::backend::parquet_frame_problem(&bad).is_none(), "the frame is whole: only the data is damaged");
    let outcome = analyze(&options(vec![root.clone()], &tmp.path().join("out"))).unwrap();
    assert_eq!(outcome.analyzed, 6, "the six other completed runs");
    let a0 = outcome.left_out.iter().find(|r| r.run_id == "a0").expect("a0 left out");
    assert!(a0.why.contains(&format!("bad `{}`: cannot read its data: ", bad.display())), "{}", a0.why);
}

#[test]
fn law_tables_accept_keys_that_are_identity_columns() {
    // `--compare sweep` or `--group-by seed` name a column the per-run law table carries anyway;
    // it used to be projected twice, and Polars refused the whole analysis.
    let tmp = tempfile::tempdir().unwrap();
    let seq = tmp.path().join("seq");
    for seed in 0..3u64 {
        write_seq_run(&seq, &format!("g{seed}"), "cfgG", "grpo", seed, (0.2, 1.0), false);
    }
    let out = tmp.path().join("out");
    for (compare, group_by, stem) in [(Some("sweep"), None, "entropy_law_summary-by-sweep"), (None, Some("seed"), "entropy_law_summary-by-seed")] {
        let opts = Options { compare: compare.map(String::from), group_by: group_by.map(String::from), ..options(vec![seq.clone()], &out) };
        let outcome = analyze(&opts).unwrap_or_else(|e| panic!("{compare:?} {group_by:?}: {e}"));
        assert!(outcome.law.is_some() && out.join("tables").join(format!("{stem}.csv")).is_file());
        let header = csv_header(&out.join("tables/entropy_law.csv"));
        for column in ["sweep", "seed"] {
            assert_eq!(header.iter().filter(|c| *c == column).count(), 1, "{header:?}");
        }
    }
}

#[test]
fn where_matches_list_valued_hyperparameters() {
    // Lists are in the runs table as compact JSON text; the commas inside them are not list
    // separators of `=`, and `[64, 64]` as typed means the same list.
    let df = df!("run_id" => ["r1", "r2", "r3"], "run.hidden" => ["[64,64]", "[32,32]", "[8]"]).unwrap();
    let schema = df.schema().clone();
    let kept = |e: &str| -> Vec<String> {
        let out = df.clone().lazy().filter(parse_where(e, &schema).unwrap()).collect().unwrap();
        let ids = out.column("run_id").unwrap().str().unwrap().clone();
        (0..ids.len()).map(|i| ids.get(i).unwrap_or("").to_string()).collect()
    };
    assert_eq!(kept("hidden=[64,64]"), ["r1"]);
    assert_eq!(kept("hidden = [64, 64]"), ["r1"]);
    assert_eq!(kept("hidden=[64,64],[8]"), ["r1", "r3"]);
    assert_eq!(kept("hidden!=[32,32]"), ["r1", "r3"]);
}

#[test]
fn groups_sort_by_the_values_of_their_keys_and_small_scores_keep_their_decimals() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("r");
    // Three values of an integer key whose names sort differently from the numbers, and a
    // fourth group scoring below 1 (an accuracy) next to returns in the hundreds.
    for (n, r) in [(8, 400.0), (16, 300.0), (128, 200.0), (1024, 0.5)] {
        for seed in 0..4u64 {
            let r = if r < 1.0 { r + 0.1 * (seed as f64 - 1.5) } else { r + seed as f64 - 0.5 };
            write_run(&root, &format!("n{n}s{seed}"), &format!("c{n}"), &format!("params.n={n}"), seed, r, json!({"n": n}), true);
        }
    }
    let out = tmp.path().join("out");
    let outcome = analyze(&Options { group_by: Some("n".into()), ..options(vec![root], &out) }).unwrap();
    let s = &outcome.summary;
    let groups: Vec<String> = (0..4).map(|i| s.column("group").unwrap().str().unwrap().get(i).unwrap().to_string()).collect();
    assert_eq!(groups, ["params.n=8", "params.n=16", "params.n=128", "params.n=1024"]);
    // Returns of hundreds print with one decimal, the accuracy-like group with three, not 0.5 → "0.5".
    let row = |g: &str| outcome.table.lines().find(|l| l.starts_with(&format!("{g} "))).unwrap_or("").to_string();
    assert!(row("params.n=8").contains(" 401.0 ["), "{}", outcome.table);
    assert!(row("params.n=1024").contains(" 0.500 [") && row("params.n=1024").contains("0.500 ± 0.129"), "{}", outcome.table);
}

#[test]
fn a_single_run_per_stratum_gets_no_interval() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("r");
    write_run(&root, "only", "c1", "params.x=1", 1, 10.0, json!({"x": 1}), true);
    for (i, r) in [1.0, 2.0, 6.0, 7.0].into_iter().enumerate() {
        write_run(&root, &format!("b{i}"), "c2", "params.x=2", i as u64, r, json!({"x": 2}), true);
    }
    let outcome = analyze(&options(vec![root], &tmp.path().join("out"))).unwrap();
    let s = &outcome.summary;
    // One seed: a point, no interval (a zero-width one would read as certainty); four seeds: one.
    assert_eq!((f(s, "final_return_iqm", 0), f(s, "final_return_iqm_lo", 0), f(s, "final_return_iqm_hi", 0)), (Some(10.0), None, None));
    assert!(f(s, "final_return_iqm_lo", 1).is_some());
    let row = outcome.table.lines().find(|l| l.starts_with("params.x=1 ")).unwrap_or("");
    assert!(!row.contains('['), "{}", outcome.table);
}

#[test]
fn configuration_labels_sort_by_their_values() {
    let labels: Vec<String> = [
        "run.lr=0.0025,run.num_envs=8",
        "run.lr=0.00025,run.num_envs=16",
        "run.lr=0.00025,run.num_envs=8",
        "run.lr=0.001,run.num_envs=16",
        "run.hidden=[64,64],run.env=b",
        "run.hidden=[8],run.env=a",
    ]
    .map(String::from)
    .to_vec();
    let sorted: Vec<&str> = label_order(&labels).into_iter().map(|i| labels[i].as_str()).collect();
    assert_eq!(
        sorted,
        [
            "run.hidden=[64,64],run.env=b",
            "run.hidden=[8],run.env=a",
            "run.lr=0.00025,run.num_envs=8",
            "run.lr=0.00025,run.num_envs=16",
            "run.lr=0.001,run.num_envs=16",
            "run.lr=0.0025,run.num_envs=8",
        ]
    );
    // And the summary of an analysis follows it (by text, `params.n=16` would come first).
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("r");
    for n in [16, 8] {
        write_run(&root, &format!("n{n}"), &format!("c{n}"), &format!("params.n={n}"), 1, 5.0, json!({"n": n}), true);
    }
    let outcome = analyze(&options(vec![root], &tmp.path().join("out"))).unwrap();
    let groups = outcome.summary.column("group").unwrap().str().unwrap().clone();
    assert_eq!((groups.get(0), groups.get(1)), (Some("params.n=8"), Some("params.n=16")));
}

#[test]
fn infinite_metric_values_are_skipped_like_nan() {
    // A diverging run can log inf. Run a0 returns 10 at iterations 1..=10, +inf at 11 (with
    // finished episodes) and NaN at 12 (none); its policy_loss is ±inf at iterations 3 and 4.
    // An inf return in the last-10 window used to make the final return, AUC and the group's
    // mean infinite and count as reaching the threshold (inf >= 30); an inf metric made its
    // curve bin infinite.
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("r");
    write_run(&root, "a0", "cfgA", "params.x=1", 0, 10.0, json!({"x": 1}), true);
    write_run(&root, "a1", "cfgA", "params.x=1", 1, 20.0, json!({"x": 1}), true);
    let iteration: Vec<i64> = (1..=12).collect();
    let ret: Vec<f64> = iteration.iter().map(|&i| match i { 11 => f64::INFINITY, 12 => f64::NAN, _ => 10.0 }).collect();
    let loss: Vec<f64> = iteration.iter().map(|&i| match i { 3 => f64::INFINITY, 4 => f64::NEG_INFINITY, _ => 0.5 }).collect();
    let mut df = df!(
        "iteration" => &iteration,
        "global_step" => iteration.iter().map(|i| i * 1000).collect::<Vec<_>>(),
        "episodic_return_mean" => ret,
        "episodes" => iteration.iter().map(|&i| if i == 12 { 0i64 } else { 3 }).collect::<Vec<_>>(),
        "policy_loss" => loss,
    )
    .unwrap();
    ParquetWriter::new(std::fs::File::create(root.join("runs/a0/metrics.parquet")).unwrap()).finish(&mut df).unwrap();

    let out = tmp.path().join("out");
    let opts = Options { curves: Some(vec!["policy_loss".into()]), ..options(vec![root], &out) };
    let outcome = analyze(&opts).unwrap();
    let s = &outcome.summary;
    // a0: final return 10 (its last ten finite returns, iterations 1..=10), AUC 10; a1: 20 → mean 15.
    assert!(close(f(s, "final_return_mean", 0), 15.0), "{s}");
    assert!(f(s, "auc_mean", 0).is_some_and(f64::is_finite) && f(s, "final_return_std", 0).is_some_and(f64::is_finite), "{s}");
    assert_eq!(s.column("reached").unwrap().i64().unwrap().get(0), Some(0), "{s}");
    assert!(!outcome.table.contains("- ± -"), "{}", outcome.table);
    for table in ["summary", "runs", "curves", "curves-policy_loss"] {
        let text = std::fs::read_to_string(out.join(format!("tables/{table}.csv"))).unwrap();
        assert!(!text.contains("inf") && !text.contains("NaN"), "{table}.csv:\n{text}");
    }
}

/// Review finding (research): a partly finished sweep printed one line per left-out run (1,000
/// lines for 1,000 runs), called runs never started "unfinished" where `drover status` says
/// "not started", and the count line hid the runs `--where` sliced away.
#[test]
fn left_out_runs_are_summed_up_by_state_in_status_words() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("r");
    two_configs(&root);
    // Prepared by a `drover run` stopped before their turn: `spec.json` alone.
    for i in 0..5 {
        let dir = root.join(format!("runs/n{i}"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::copy(root.join("runs/b9/spec.json"), dir.join("spec.json")).unwrap();
    }
    let exit = json!({"format_version": 1, "run_id": "b0", "status": "failed", "reason": "NaN in output", "finished_at": "0"});
    std::fs::write(root.join("runs/b0/exit.json"), exit.to_string()).unwrap();
    // A job lock a Slurm node left, whose pid here is this (drover-named) test process: the pid
    // means nothing on this host, so the run is not claimed to be running (review finding).
    std::fs::write(root.join("runs/b9/.job.lock"), format!("pid {}\nhost some-compute-node\n", std::process::id())).unwrap();
    let loaded = load_results(std::slice::from_ref(&root), &[]).unwrap();
    let states: Vec<(&str, &str)> = loaded.left_out.iter().map(|r| (r.run_id.as_str(), r.state)).collect();
    assert_eq!(states, [("b0", "failed"), ("b9", "unfinished"), ("n0", "not started"), ("n1", "not started"), ("n2", "not started"), ("n3", "not started"), ("n4", "not started")]);
    let lines = crate::analyze::left_out_lines(&loaded.left_out, "r");
    assert_eq!(
        lines,
        [
            "left out of the analysis: 1 run failed:",
            "  run b0: failed: NaN in output",
            "left out of the analysis: 1 run unfinished (b9)",
            "left out of the analysis: 5 runs not started (n0, n1, n2 and 2 more; `drover status r` lists them)",
        ]
    );

    let out = tmp.path().join("out");
    let outcome = analyze(&Options { filters: vec!["x=1".into()], ..options(vec![root.clone()], &out) }).unwrap();
    assert_eq!(
        outcome.count_line(),
        "4 runs analyzed (6 completed, 2 not matching --where, 7 left out: 1 failed, 1 unfinished, 5 not started); final return = mean of the last 10 iterations with episodes"
    );
}

#[test]
fn left_out_runs_carry_the_jobs_reason_and_a_missing_directory_is_named_as_missing() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("r");
    two_configs(&root);
    let exit = json!({"format_version": 1, "run_id": "b0", "status": "failed", "reason": "plugin `ppo` call `loss`: NaN in output", "finished_at": "0"});
    std::fs::write(root.join("runs/b0/exit.json"), exit.to_string()).unwrap();
    let exit = json!({"format_version": 1, "run_id": "b1", "status": "cancelled", "reason": null, "finished_at": "0"});
    std::fs::write(root.join("runs/b1/exit.json"), exit.to_string()).unwrap();
    let loaded = load_results(std::slice::from_ref(&root), &[]).unwrap();
    let why = |id: &str| loaded.left_out.iter().find(|r| r.run_id == id).map(|r| r.why.clone()).unwrap_or_default();
    assert_eq!(why("b0"), "failed: plugin `ppo` call `loss`: NaN in output");
    assert_eq!(why("b1"), "cancelled");

    // Review finding (research): a plain file was "not a results directory (it has no
    // `runs/` folder)"; it is said to be a file.
    let file = tmp.path().join("afile");
    std::fs::write(&file, "x").unwrap();
    let err = load_results(std::slice::from_ref(&file), &[]).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(err.ends_with(&format!("`{}`: a file, not a results directory (give the directory `drover run` wrote: `results/<sweep>` or its `--results`)", file.display())), "{err}");

    // A mistyped path: the error says it does not exist (not that it lacks `runs/`).
    let missing = tmp.path().join("no-such-results");
    let err = load_results(&[root, missing.clone()], &[]).err().unwrap();
    assert_eq!(err.to_string(), format!("no completed run with metrics in 1 of the 2 results directories given:\n  `{}`: no such directory", missing.display()));
}

#[test]
fn compare_breaks_iqm_ties_by_name_so_rank_one_is_the_best() {
    // Six values of x whose runs score the same (CartPole configurations that all reach 500):
    // the ranking used to come out in whatever order the joins left, changing from run to run
    // and disagreeing with the best reported (ties: first by name).
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("r");
    for x in 1..=6 {
        for (seed, r) in [(0u64, 10.0), (1, 20.0)] {
            write_run(&root, &format!("x{x}s{seed}"), &format!("c{x}"), &format!("params.x={x}"), seed, r, json!({"x": x}), true);
        }
    }
    let opts = Options { compare: Some("x".into()), ..options(vec![root], &tmp.path().join("out")) };
    for _ in 0..3 {
        let outcome = analyze(&opts).unwrap();
        let s = &outcome.summary;
        let groups: Vec<String> = (0..6).map(|i| s.column("group").unwrap().str().unwrap().get(i).unwrap().to_string()).collect();
        assert_eq!(groups, (1..=6).map(|x| format!("params.x={x}")).collect::<Vec<_>>());
        assert_eq!(outcome.best, [Best { env: None, group: "params.x=1".into() }]);
        assert_eq!((f(s, "rank", 0), f(s, "p_best_better", 0)), (Some(1.0), None), "the best is rank 1: {s}");
    }
}

#[test]
fn an_empty_slice_names_the_where_keys_some_runs_lack() {
    // Runs of c have no `x` (another plugin's parameters): `x != 1,2` matches none of them
    // either, which the bare "no completed run matches" left the user to guess.
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("r");
    two_configs(&root);
    for seed in 0..2u64 {
        write_run(&root, &format!("c{seed}"), "cfgC", "params.y=5", seed, 3.0, json!({"y": 5, "k": true}), true);
    }
    let opts = Options { filters: vec!["k=true".into(), "x!=1,2".into()], ..options(vec![root], &tmp.path().join("out")) };
    let err = analyze(&opts).err().map(|e| e.to_string()).unwrap_or_default();
    assert_eq!(
        err,
        "bad expression `k=true and x!=1,2`: no completed run matches (of 9); runs without a key never match: `params.x` is missing in 2 of 9; `x!=1,2` matches no run: `params.x` is 1, 2"
    );
    // A key every run has adds nothing to the message.
    let opts = Options { filters: vec!["k=false".into()], ..opts };
    let err = analyze(&opts).err().map(|e| e.to_string()).unwrap_or_default();
    assert_eq!(err, "bad expression `k=false`: no completed run matches (of 9); `k=false` matches no run: `params.k` is true");
}

#[test]
fn every_empty_results_directory_is_named_in_one_error_with_its_reason() {
    // `drover analyze a b c` where a and c hold no usable run: the error used to name a only,
    // and a c with runs/ but nothing completed was dropped from the analysis without a word.
    let tmp = tempfile::tempdir().unwrap();
    let (a, b, c) = (tmp.path().join("a"), tmp.path().join("b"), tmp.path().join("c"));
    std::fs::create_dir_all(&a).unwrap();
    two_configs(&b);
    write_run(&c, "c0", "cfgA", "params.x=1", 0, 1.0, json!({"x": 1}), false);
    write_run(&c, "c1", "cfgA", "params.x=1", 1, 1.0, json!({"x": 1}), true);
    let exit = json!({"format_version": 1, "run_id": "c1", "status": "failed", "reason": "boom", "finished_at": "0"});
    std::fs::write(c.join("runs/c1/exit.json"), exit.to_string()).unwrap();
    write_run(&c, "c2", "cfgA", "params.x=1", 2, 1.0, json!({"x": 1}), true);
    std::fs::remove_file(c.join("runs/c2/metrics.parquet")).unwrap();
    let out = tmp.path().join("out");
    let opts = options(vec![a.clone(), b.clone(), c.clone()], &out);
    let err = analyze(&opts).err().unwrap();
    assert!(matches!(err, crate::AnalyzeError::NoCompletedRuns { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!(
            "no completed run with metrics in 2 of the 3 results directories given:\n  `{}`: not a results directory (it has no `runs/` folder)\n  `{}`: 3 run directories, none completed with metrics: 1 unfinished, 1 failed, 1 completed without usable metrics",
            a.display(),
            c.display()
        )
    );
    assert!(!out.exists(), "nothing is written");

    // One directory: one line; an empty runs/ says so; a missing one is named as missing.
    let empty = tmp.path().join("empty");
    std::fs::create_dir_all(empty.join("runs")).unwrap();
    let err = load_results(std::slice::from_ref(&empty), &[]).err().unwrap();
    assert_eq!(err.to_string(), format!("no completed run with metrics in `{}`: its `runs/` folder holds no run directory (nothing launched yet?)", empty.display()));
    let err = load_results(&[tmp.path().join("nope"), b, empty.clone()], &[]).err().unwrap();
    let text = err.to_string();
    assert!(text.starts_with("no completed run with metrics in 2 of the 3") && text.contains("nope`: no such directory") && text.contains("empty`: its `runs/`"), "{text}");
}

/// Runs of plugins `a` and `b` on two environments of different scales, where `a` is better in
/// each environment but `b`, whose runs are mostly on the large-scale one, has the higher IQM
/// when the returns are pooled (Simpson's paradox):
/// CartPole-v1: a 120, 122; b 100, 101, 102, 103. SeqAdd-v0: a 0.8, 0.85, 0.9, 0.95; b 0.4, 0.5.
/// Pooled IQMs: a (0.85 + 0.9 + 0.95 + 120)/4 = 30.675, b (0.5 + 100 + 101 + 102)/4 = 75.875.
/// Per environment: CartPole a 121 > b 101.5; SeqAdd a 0.875 > b 0.45.
fn two_envs(root: &Path) {
    let cases: [(&str, &str, &[f64]); 4] = [
        ("CartPole-v1", "a", &[120.0, 122.0]),
        ("CartPole-v1", "b", &[100.0, 101.0, 102.0, 103.0]),
        ("SeqAdd-v0", "a", &[0.8, 0.85, 0.9, 0.95]),
        ("SeqAdd-v0", "b", &[0.4, 0.5]),
    ];
    for (env, plugin, returns) in cases {
        for (seed, &r) in returns.iter().enumerate() {
            let run = json!({"seed": seed, "success_return": 30.0, "env": env, "plugin": plugin, "lr": 0.001});
            let config = format!("{env}-{plugin}");
            let label = format!("run.env={env},run.plugin={plugin}");
            write_run_with(root, &format!("{config}-{seed}"), &config, &label, run, r, json!({}), true);
        }
    }
}

fn strings(df: &DataFrame, name: &str) -> Vec<String> {
    let c = df.column(name).unwrap().cast(&DataType::String).unwrap();
    let c = c.str().unwrap();
    (0..c.len()).map(|i| c.get(i).unwrap_or("null").to_string()).collect()
}

#[test]
fn compare_over_two_environments_ranks_within_each() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("r");
    two_envs(&root);
    let out = tmp.path().join("out");
    let opts = Options { compare: Some("algo".into()), plots: true, ..options(vec![root.clone()], &out) };
    let outcome = analyze(&opts).unwrap();
    assert_eq!(outcome.envs, ["CartPole-v1", "SeqAdd-v0"]);
    // Pooled, b would rank first; within each environment a does.
    let best: Vec<String> = outcome.best.iter().map(ToString::to_string).collect();
    assert_eq!(best, ["best by IQM in CartPole-v1: run.plugin=a", "best by IQM in SeqAdd-v0: run.plugin=a"]);
    let s = &outcome.summary;
    assert_eq!(s.get_column_names()[0].as_str(), "run.env", "{s}");
    assert_eq!(strings(s, "run.env"), ["CartPole-v1", "CartPole-v1", "SeqAdd-v0", "SeqAdd-v0"]);
    assert_eq!(strings(s, "group"), ["run.plugin=a", "run.plugin=b", "run.plugin=a", "run.plugin=b"]);
    assert_eq!(strings(s, "rank"), ["1", "2", "1", "2"]);
    let iqm: Vec<f64> = (0..4).map(|i| f(s, "final_return_iqm", i).unwrap()).collect();
    for (got, want) in iqm.iter().zip([121.0, 101.5, 0.875, 0.45]) {
        assert!((got - want).abs() < 1e-9, "{iqm:?}");
    }
    // Every run of a beats every run of b in its environment.
    assert_eq!((0..4).map(|i| f(s, "p_best_better", i)).collect::<Vec<_>>(), [None, Some(1.0), None, Some(1.0)]);
    let note = "note: the runs span 2 environments (CartPole-v1, SeqAdd-v0), whose returns are not on one scale; `--compare algo`: groups are ranked within each environment, one table each, with `run.env` as the first column of the written tables (`--where env=CartPole-v1` analyzes one alone)";
    assert!(outcome.table.starts_with(&format!("{note}\n\nrun.env=CartPole-v1 (6 runs):\ngroup ")), "{}", outcome.table);
    assert!(outcome.table.contains("\nrun.env=SeqAdd-v0 (6 runs):\ngroup "), "{}", outcome.table);
    // The written table is the printed ranking, row for row.
    let csv = std::fs::read_to_string(out.join("tables/compare-run.plugin.csv")).unwrap();
    let rows: Vec<&str> = csv.lines().collect();
    assert!(rows[0].starts_with("run.env,rank,run.plugin,group,"), "{csv}");
    for (row, want) in rows[1..].iter().zip(["CartPole-v1,1,a,", "CartPole-v1,2,b,", "SeqAdd-v0,1,a,", "SeqAdd-v0,2,b,"]) {
        assert!(row.starts_with(want), "{csv}");
    }
    let md = std::fs::read_to_string(out.join("tables/compare-run.plugin.md")).unwrap();
    assert!(md.contains(&format!("learning-curve bins\n\n{note}")) && md.contains("### run.env=CartPole-v1 (6 runs)\n\n| group |") && md.contains("### run.env=SeqAdd-v0 (6 runs)"), "{md}");
    // Each environment's profile thresholds span its own returns, and it has its own plots.
    let profiles = std::fs::read_to_string(out.join("tables/profiles-by-run.plugin.csv")).unwrap();
    let seq_tau = profiles.lines().filter(|l| l.starts_with("SeqAdd-v0,")).map(|l| l.split(',').nth(2).unwrap().parse::<f64>().unwrap());
    assert!(seq_tau.fold(f64::NEG_INFINITY, f64::max) < 1.0, "{profiles}");
    for env in ["CartPole-v1", "SeqAdd-v0"] {
        for plot in ["curves", "profile", "final"] {
            assert!(out.join(format!("plots/{plot}-by-run.plugin-{env}.svg")).is_file(), "{plot} {env}");
        }
    }

    // An environment's section is what `--where env=...` gives for it alone, intervals included.
    let alone = analyze(&Options { filters: vec!["env=SeqAdd-v0".into()], plots: false, ..opts.clone() }).unwrap();
    assert!(alone.envs.is_empty() && alone.best.len() == 1 && !alone.table.starts_with("note"), "{}", alone.table);
    for column in ["final_return_iqm", "final_return_iqm_lo", "final_return_iqm_hi", "p_best_better_lo"] {
        assert_eq!((f(&alone.summary, column, 0), f(&alone.summary, column, 1)), (f(s, column, 2), f(s, column, 3)), "{column}");
    }
    // Grouping by the environment itself keeps one table: the user asked to compare across it.
    let by_env = analyze(&Options { compare: Some("env".into()), plots: false, ..opts.clone() }).unwrap();
    assert!(by_env.envs.is_empty() && by_env.summary.height() == 2, "{}", by_env.table);
    // `--group-by` is split the same way; so is the default grouping (one table per environment).
    let grouped = analyze(&Options { compare: None, group_by: Some("algo".into()), plots: false, ..opts.clone() }).unwrap();
    assert_eq!((grouped.envs.len(), grouped.summary.height()), (2, 4));
    assert!(grouped.table.contains("`--group-by algo`: groups are formed within each environment"), "{}", grouped.table);
    let configs = analyze(&Options { compare: None, plots: false, ..opts }).unwrap();
    assert_eq!(strings(&configs.summary, "run.env"), ["CartPole-v1", "CartPole-v1", "SeqAdd-v0", "SeqAdd-v0"]);
    assert!(configs.best.is_empty() && configs.table.contains("each environment is summarized on its own"), "{}", configs.table);
}

#[test]
fn compare_prints_the_law_in_the_ranking_order() {
    // The law's table is printed under the ranked summary; it used to list the groups by name
    // (cov before grpo) while the ranking above it put grpo first.
    let tmp = tempfile::tempdir().unwrap();
    let seq = tmp.path().join("seq");
    for seed in 0..3u64 {
        write_seq_run(&seq, &format!("g{seed}"), "cfgG", "grpo", seed, (0.2, 1.0), false);
        write_seq_run(&seq, &format!("c{seed}"), "cfgC", "cov", seed, (0.1, 0.8), false);
    }
    let opts = Options { compare: Some("algo".into()), ..options(vec![seq], &tmp.path().join("out")) };
    let outcome = analyze(&opts).unwrap();
    // Final accuracies: grpo -0.2·e^0.3 + 1 ≈ 0.73, cov -0.1·e^0.3 + 0.8 ≈ 0.665.
    assert_eq!(strings(&outcome.summary, "group"), ["run.plugin=grpo", "run.plugin=cov"]);
    assert_eq!(strings(outcome.law.as_ref().expect("law"), "group"), ["run.plugin=grpo", "run.plugin=cov"]);
    let law = outcome.law_table.expect("law table");
    assert!(law.find("run.plugin=grpo") < law.find("run.plugin=cov"), "{law}");
}

/// Runs of `env` with their own `success_return`, label `run.success_return=<bar>`, final
/// returns `returns` (seeds 0, 1, ...).
fn runs_with_bar(root: &Path, env: &str, bar: f64, returns: &[f64]) {
    for (seed, &r) in returns.iter().enumerate() {
        let run = json!({"seed": seed, "success_return": bar, "env": env, "lr": 0.001});
        let id = format!("{env}-{bar}-{seed}");
        write_run_with(root, &id, &format!("{env}-{bar}"), &format!("run.success_return={bar}"), run, r, json!({}), true);
    }
}

#[test]
fn groups_of_one_environment_with_different_success_returns_share_the_highest_bar() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("r");
    // Two groups of CartPole with equal returns (final 20: iterations at 19, then at 21 from
    // step 7000) but bars 30 and 20.5: with each run's own bar, the second would read as solved
    // (gap 0, reached 4/4) and the first not. One bar, the highest (30), makes them equal.
    runs_with_bar(&root, "CartPole-v1", 30.0, &[20.0; 4]);
    runs_with_bar(&root, "CartPole-v1", 20.5, &[20.0; 4]);
    let out = tmp.path().join("out");
    let outcome = analyze(&options(vec![root.clone()], &out)).unwrap();
    let s = &outcome.summary;
    for row in 0..2 {
        assert_eq!((f(s, "target", row), f(s, "optimality_gap", row), f(s, "reached", row)), (Some(30.0), Some(10.0), Some(0.0)), "{s}");
    }
    let warning = "warning: the runs of CartPole-v1 have 2 values of `run.success_return` (20.5, 30); steps to threshold, `reached` and the optimality gap use the highest, 30, for all of them (`--target RETURN` sets another bar; `--where success_return=20.5` analyzes those runs alone)";
    assert!(outcome.table.contains(warning), "{}", outcome.table);
    assert!(std::fs::read_to_string(out.join("tables/summary.md")).unwrap().contains(warning));
    // The runs table carries the bar each run was judged against.
    let runs = CsvReadOptions::default().try_into_reader_with_file_path(Some(out.join("tables/runs.csv"))).unwrap().finish().unwrap();
    assert!((0..runs.height()).all(|i| f(&runs, "target", i) == Some(30.0) && f(&runs, "steps_to_threshold", i).is_none()), "{runs}");

    // `--target` is the bar of steps to threshold too, not only of the gap; no warning then.
    let outcome = analyze(&Options { target: Some(20.5), ..options(vec![root.clone()], &out) }).unwrap();
    let s = &outcome.summary;
    for row in 0..2 {
        assert_eq!((f(s, "target", row), f(s, "reached", row), f(s, "steps_to_threshold_mean", row)), (Some(20.5), Some(4.0), Some(7000.0)), "{s}");
        assert!(close(f(s, "optimality_gap", row), 0.5));
    }
    assert!(!outcome.table.contains("warning:"), "{}", outcome.table);

    // One value left by `--where`: that bar, no warning.
    let outcome = analyze(&Options { filters: vec!["success_return=20.5".into()], ..options(vec![root.clone()], &out) }).unwrap();
    assert_eq!((f(&outcome.summary, "target", 0), f(&outcome.summary, "reached", 0)), (Some(20.5), Some(4.0)));
    assert!(!outcome.table.contains("warning:"), "{}", outcome.table);

    // Another environment keeps its own bar: its accuracies are not judged against 30.
    runs_with_bar(&root, "SeqAdd-v0", 0.5, &[0.6; 4]);
    let outcome = analyze(&options(vec![root], &out)).unwrap();
    let s = &outcome.summary;
    let envs = strings(s, "run.env");
    let seq = envs.iter().position(|e| e == "SeqAdd-v0").unwrap();
    assert_eq!((f(s, "target", seq), f(s, "optimality_gap", seq), f(s, "reached", seq)), (Some(0.5), Some(0.0), Some(4.0)), "{s}");
    assert_eq!(outcome.table.matches("warning: the runs of").count(), 1, "{}", outcome.table);
}

/// Issue: with two runs per group `P(best > this)` printed `1.00 [1.00, 1.00]`.
#[test]
fn two_runs_per_group_give_points_without_intervals_in_the_table_and_the_files() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("r");
    for (x, rs) in [(1, [20.0, 22.0]), (2, [5.0, 6.0])] {
        for (seed, r) in rs.into_iter().enumerate() {
            write_run(&root, &format!("x{x}s{seed}"), &format!("c{x}"), &format!("params.x={x}"), seed as u64, r, json!({"x": x}), true);
        }
    }
    let out = tmp.path().join("out");
    let outcome = analyze(&Options { compare: Some("x".into()), plots: true, ..options(vec![root], &out) }).unwrap();
    let row = outcome.table.lines().find(|l| l.starts_with("params.x=2 ")).unwrap_or("").to_string();
    // Every pair favours x=1, so each resample gives 1: a point, and no "[1.00, 1.00]".
    assert!(row.ends_with(" 1.00") && !row.contains('['), "{}", outcome.table);
    assert!(
        outcome.table.contains("note: no 95% interval for any of the 2 groups (`params.x=1`, `params.x=2`): an interval needs at least 4 runs in every stratum (seeds per configuration; for P(best > this) in the best group too), since with 3 or fewer the percentile bootstrap's 95% interval is just the range of the runs; run 4 seeds or more for intervals"),
        "{}",
        outcome.table
    );
    // The written tables say the same: the points, and null (empty in CSV) bounds.
    let read_csv = |name: &str| CsvReadOptions::default().try_into_reader_with_file_path(Some(out.join("tables").join(name))).unwrap().finish().unwrap();
    let read_parquet = |name: &str| ParquetReader::new(std::fs::File::open(out.join("tables").join(name)).unwrap()).finish().unwrap();
    for summary in [read_csv("compare-params.x.csv"), read_parquet("compare-params.x.parquet")] {
        assert_eq!(f(&summary, "p_best_better", 1), Some(1.0), "{summary}");
        for bound in ["final_return_iqm_lo", "final_return_mean_hi", "final_return_median_lo", "optimality_gap_hi", "auc_mean_lo", "p_best_better_lo", "p_best_better_hi"] {
            assert_eq!(summary.column(bound).unwrap().null_count(), 2, "{bound}: {summary}");
        }
    }
    // The charts draw no band or whisker, and their titles do not promise one.
    for plot in ["curves", "profile", "final"] {
        let svg = std::fs::read_to_string(out.join(format!("plots/{plot}-by-params.x.svg"))).unwrap();
        assert!(svg.contains("no CI (fewer than 4 runs per stratum)") && !svg.contains("95%"), "{plot}");
    }
    for (name, bound) in [("curves-by-params.x", "iqm_lo"), ("profiles-by-params.x", "fraction_hi")] {
        let (csv, parquet) = (read_csv(&format!("{name}.csv")), read_parquet(&format!("{name}.parquet")));
        assert!(csv.height() > 0 && csv.column(bound).unwrap().null_count() == csv.height(), "{name}: {csv}");
        assert!(parquet.column(bound).unwrap().null_count() == parquet.height(), "{name}: {parquet}");
    }
}

#[test]
fn a_spread_the_table_decimals_would_round_away_gets_more_decimals() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("r");
    // Returns in the hundreds: one decimal. Group x=1 spreads over 0.03 only (std 0.0129): at
    // one decimal its std reads 0.0 and its interval [100.0, 100.0], as if the seeds agreed.
    for (x, base, step) in [(1, 100.0, 0.01), (2, 300.0, 10.0)] {
        for seed in 0..4u64 {
            let r = base + step * seed as f64;
            write_run(&root, &format!("x{x}s{seed}"), &format!("c{x}"), &format!("params.x={x}"), seed, r, json!({"x": x}), true);
        }
    }
    let outcome = analyze(&options(vec![root], &tmp.path().join("out"))).unwrap();
    let row = |g: &str| outcome.table.lines().find(|l| l.starts_with(&format!("{g} "))).unwrap_or("").to_string();
    assert!(row("params.x=2").contains("315.0 [300.0, 330.0]") && row("params.x=2").contains("315.0 ± 12.9"), "{}", outcome.table);
    let small = row("params.x=1");
    assert!(small.contains(" 100.02 [100.00, 100.03] ") && small.contains(" 100.0 ± 0.01 "), "{}", outcome.table);
    let (open, close) = (small.find('[').unwrap_or(0), small.find(']').unwrap_or(0));
    let bounds: Vec<&str> = small[open + 1..close].split(", ").collect();
    assert!(bounds.len() == 2 && bounds[0] != bounds[1], "{small}");
}

/// Follow-up (analysis at scale): an interval column that is null in every row (fewer than
/// `MIN_STRATUM_RUNS` seeds) still has its type on disk where the format has types. The Parquet
/// keeps Float64 whether or not any bound exists; the CSV keeps the column, with empty cells, and
/// a reader that infers types sees Float64 as soon as one cell holds a number. An all-empty CSV
/// column has no type to infer (Polars reads it as text), and the Parquet's schema, given to the
/// CSV reader, reads it back as Float64: what `docs/analysis.md` tells CSV users to do.
#[test]
fn interval_columns_keep_float64_in_the_written_csv_and_parquet() {
    let summary_bounds = [
        "final_return_iqm_lo",
        "final_return_iqm_hi",
        "final_return_mean_lo",
        "final_return_median_hi",
        "optimality_gap_lo",
        "auc_mean_hi",
    ];
    for seeds in [3u64, 5] {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("r");
        for x in [1u32, 2] {
            for seed in 0..seeds {
                let r = 10.0 * f64::from(x) + seed as f64;
                write_run(&root, &format!("x{x}s{seed}"), &format!("c{x}"), &format!("params.x={x}"), seed, r, json!({"x": x}), true);
            }
        }
        let out = tmp.path().join("out");
        analyze(&Options { compare: Some("x".into()), ..options(vec![root], &out) }).unwrap();
        let tables = out.join("tables");
        let with_bounds = seeds >= MIN_STRATUM_RUNS as u64;
        for (stem, bounds) in [
            ("compare-params.x", &summary_bounds[..]),
            ("curves-by-params.x", &["iqm_lo", "iqm_hi"][..]),
            ("profiles-by-params.x", &["fraction_lo", "fraction_hi"][..]),
        ] {
            let parquet = ParquetReader::new(std::fs::File::open(tables.join(format!("{stem}.parquet"))).unwrap()).finish().unwrap();
            let csv_path = tables.join(format!("{stem}.csv"));
            let read_csv = |options: CsvReadOptions| options.try_into_reader_with_file_path(Some(csv_path.clone())).unwrap().finish().unwrap();
            let inferred = read_csv(CsvReadOptions::default().with_infer_schema_length(None));
            let typed = read_csv(CsvReadOptions::default().with_schema_overwrite(Some(parquet.schema().clone())));
            for &bound in bounds {
                let context = format!("{seeds} seeds, {stem}.{{csv,parquet}} column `{bound}`");
                let (p, c, t) = (parquet.column(bound).unwrap(), inferred.column(bound).unwrap(), typed.column(bound).unwrap());
                let nulls = if with_bounds { 0 } else { parquet.height() };
                assert_eq!((p.dtype(), p.null_count()), (&DataType::Float64, nulls), "{context}: {parquet}");
                let csv_type = if with_bounds { DataType::Float64 } else { DataType::String };
                assert_eq!((c.dtype(), c.null_count(), c.len()), (&csv_type, nulls, parquet.height()), "{context}: {inferred}");
                assert_eq!((t.dtype(), t.null_count()), (&DataType::Float64, nulls), "{context}: {typed}");
                if with_bounds {
                    assert!(p.as_materialized_series().equals(t.as_materialized_series()), "{context}: {parquet} vs {typed}");
                }
            }
        }
        // P(best > this) has a bound for the group below the best only with enough seeds; the
        // best's own row is null either way, and the column stays Float64 in the Parquet.
        let parquet = ParquetReader::new(std::fs::File::open(tables.join("compare-params.x.parquet")).unwrap()).finish().unwrap();
        let lo = parquet.column("p_best_better_lo").unwrap();
        assert_eq!((lo.dtype(), lo.null_count()), (&DataType::Float64, if with_bounds { 1 } else { 2 }), "{parquet}");
    }
}

/// Follow-up (analysis at scale): the metrics files are read by one scan per schema, and the
/// result is what one scan per file gave: rows in run order and file order, each with its run's
/// key (the run's row of the runs table), the fixed columns as Int64/Float64 whatever a file stored them as, an `extra` column
/// null in the rows of runs without it, and the other metrics columns of any file left out.
#[test]
fn metrics_of_runs_with_different_schemas_load_in_run_order_with_their_ids() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("r");
    write_run(&root, "a-cart", "c1", "x", 0, 10.0, json!({}), true);
    write_seq_run(&root, "b-seq", "c2", "y", 0, (0.2, 1.0), false);
    write_run(&root, "c-cart", "c1", "x", 1, 20.0, json!({}), true);
    // Another schema again: Int32 iterations, columns in another order, no `episodes` last.
    let dir = root.join("runs/d-int32");
    write_run(&root, "d-int32", "c3", "z", 0, 30.0, json!({}), true);
    let mut df = df!(
        "token_entropy" => [0.5f64, 0.25, 0.125],
        "episodes" => [1i32, 2, 3],
        "global_step" => [10i32, 20, 30],
        "iteration" => [1i32, 2, 3],
        "episodic_return_mean" => [1.0f32, 2.0, 3.0],
    )
    .unwrap();
    ParquetWriter::new(std::fs::File::create(dir.join("metrics.parquet")).unwrap()).finish(&mut df).unwrap();

    let loaded = load_results(&[root], &["token_entropy".to_string()]).unwrap();
    assert_eq!(loaded.extra, ["token_entropy"]);
    // Collected as the pipeline collects it (the streaming engine, whose row order is what the
    // run keys and the bit-identical sums depend on), and as the in-memory engine does.
    let metrics = loaded.metrics.clone().collect_with_engine(Engine::Streaming).map(|r| r.unwrap_single()).unwrap();
    assert!(metrics.equals_missing(&loaded.metrics.clone().collect().unwrap()), "both engines give the same rows in the same order");
    assert_eq!(column_names(&metrics), ["iteration", "global_step", "episodic_return_mean", "episodes", "token_entropy", RUN_KEY]);
    // Each row's key names its run's row of the runs table.
    let runs = loaded.runs.collect().unwrap();
    let run_keys: Vec<u32> = runs.column(RUN_KEY).unwrap().u32().unwrap().into_no_null_iter().collect();
    assert_eq!(run_keys, [0, 1, 2, 3]);
    let run_ids = strings(&runs, "run_id");
    let ids: Vec<String> =
        metrics.column(RUN_KEY).unwrap().u32().unwrap().into_no_null_iter().map(|k| run_ids[k as usize].clone()).collect();
    let mut want: Vec<String> = Vec::new();
    for (id, rows) in [("a-cart", 12), ("b-seq", 20), ("c-cart", 12), ("d-int32", 3)] {
        want.extend(std::iter::repeat_n(id.to_string(), rows));
    }
    assert_eq!(ids, want);
    // No text column: a run id on every row cost about 64 bytes a row (runs × iterations rows).
    let dtypes: Vec<&DataType> = metrics.columns().iter().map(|c| c.dtype()).collect();
    assert_eq!(dtypes, [&DataType::Int64, &DataType::Int64, &DataType::Float64, &DataType::Int64, &DataType::Float64, &DataType::UInt32]);
    // Each run's own rows, in its file's order: iterations 1..=12, 1..=20, 1..=12, 1..=3.
    let iteration = metrics.column("iteration").unwrap().i64().unwrap().clone();
    let iterations: Vec<i64> = iteration.into_no_null_iter().collect();
    let expected: Vec<i64> = [12, 20, 12, 3].into_iter().flat_map(|n| 1..=n).collect();
    assert_eq!(iterations, expected);
    let entropy = metrics.column("token_entropy").unwrap();
    assert_eq!(entropy.null_count(), 24, "the CartPole runs' rows: {metrics}");
    assert_eq!(f(&metrics, "token_entropy", 12), Some(1.5 - 0.06));
    assert_eq!((f(&metrics, "token_entropy", 45), f(&metrics, "global_step", 46), f(&metrics, "episodic_return_mean", 46)), (Some(0.25), Some(30.0), Some(3.0)));
}

/// The resampling orders its resamples by counting and takes quantiles by selection; both must
/// give what sorting gave, bit for bit (so every table is unchanged), ties, signed zeros,
/// infinities and NaN included, and the counting resample must draw the same numbers.
#[test]
fn counting_and_selection_give_what_sorting_gives_bit_for_bit() {
    use super::bootstrap::{quantile_selected, resample_indices, strata_indices, RankSort};
    let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    let values = [3.0, -0.0, 0.0, 1.5, f64::INFINITY, 1.5, -2.0, f64::NAN, 7.25, 3.0, f64::NEG_INFINITY, 1e-300];
    // Each value's weight is its index, so the weights read back name the values drawn.
    let weights: Vec<f64> = (0..values.len()).map(|i| i as f64).collect();
    let mut ranks = RankSort::weighted(&values, &weights);
    let mut rng = Rng::new(1, "g", "t");
    let (mut out, mut idx, mut w) = (Vec::new(), Vec::new(), Vec::new());
    for n in [1, 5, values.len(), 40] {
        let idx: Vec<usize> = (0..n).map(|_| rng.below(values.len())).collect();
        ranks.sorted_sample_weighted(&idx, &mut out, &mut w);
        let mut want: Vec<f64> = idx.iter().map(|&i| values[i]).collect();
        want.sort_unstable_by(f64::total_cmp);
        assert_eq!(bits(&out), bits(&want), "{idx:?}");
        let read: Vec<f64> = w.iter().map(|&i| values[i as usize]).collect();
        assert_eq!(bits(&read), bits(&out), "the weights follow their values: {idx:?}");
    }
    // Strata laid end to end, as the bootstrap functions lay them out.
    let strata: std::collections::BTreeMap<String, Vec<f64>> =
        [("a".to_string(), values[..5].to_vec()), ("b".to_string(), values[5..].to_vec())].into_iter().collect();
    let strata_idx = strata_indices(&strata);
    let (mut counted, mut drawn) = (Rng::new(9, "g", "t"), Rng::new(9, "g", "t"));
    for _ in 0..50 {
        ranks.resample_sorted(&strata_idx, &mut counted, &mut out, &mut w);
        resample_indices(&strata_idx, &mut drawn, &mut idx);
        let mut want: Vec<f64> = idx.iter().map(|&i| values[i]).collect();
        want.sort_unstable_by(f64::total_cmp);
        assert_eq!(bits(&out), bits(&want), "{idx:?}");
    }
    assert_eq!(counted.below(1 << 40), drawn.below(1 << 40), "both drew as many numbers");

    let mut rng = Rng::new(3, "q", "t");
    for n in [1, 2, 3, 10, 101, 1000] {
        // Few distinct values, so that the order statistics around a quantile often tie.
        let pool = [0.5, -1.0, 2.0, f64::INFINITY, 0.25, -0.0, 0.0];
        let estimates: Vec<f64> = (0..n).map(|_| pool[rng.below(pool.len())]).collect();
        let mut sorted = estimates.clone();
        sorted.sort_unstable_by(f64::total_cmp);
        for q in [0.0, 0.025, 0.3, 0.5, 0.975, 1.0] {
            let got = quantile_selected(&mut estimates.clone(), q);
            assert_eq!(got.to_bits(), quantile_sorted(&sorted, q).to_bits(), "n {n}, q {q}: {got}");
        }
    }
}

/// A group whose other settings differ from the best's shares no stratum with it: its
/// P(best > this) is blank, and a note names it and says why (a blank cell is not a failure).
#[test]
fn a_group_sharing_no_stratum_with_the_best_gets_a_note_instead_of_a_probability() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("r");
    two_configs(&root);
    for (i, r) in [5.0, 7.0, 9.0].into_iter().enumerate() {
        let run = json!({"seed": i, "success_return": 30.0, "env": "CartPole-v1", "lr": 0.01, "hidden": [4, 4]});
        write_run_with(&root, &format!("c{i}"), "cfgC", "params.x=3", run, r, json!({"x": 3, "k": true}), true);
    }
    let opts = Options { compare: Some("x".into()), ..options(vec![root.clone()], &tmp.path().join("out")) };
    let outcome = analyze(&opts).unwrap();
    assert_eq!(outcome.best, [Best { env: None, group: "params.x=1".into() }]);
    let s = &outcome.summary;
    let row = |g: &str| (0..s.height()).find(|&i| s.column("group").unwrap().str().unwrap().get(i) == Some(g)).unwrap();
    assert_eq!(f(s, "p_best_better", row("params.x=2")), Some(1.0), "same lr as the best: compared");
    assert_eq!(f(s, "p_best_better", row("params.x=3")), None, "another lr: no stratum in common");
    let note = "note: no P(best > this) for 1 of 2 groups (`params.x=3`): it shares no stratum with the best, `params.x=1`";
    assert!(outcome.table.contains(note), "{}", outcome.table);
    // Every group shares the best's stratum: no such note.
    let opts = Options { filters: vec!["x<=2".into()], ..opts };
    assert!(!analyze(&opts).unwrap().table.contains("no P(best > this)"));
}

/// Overwrites a run's metrics with `returns` (iterations 1, 2, ..., 3 episodes each when the
/// return is a finite number, none otherwise); no returns: a file with the columns and no row.
fn rewrite_metrics(root: &Path, run_id: &str, returns: &[f64]) {
    let iteration: Vec<i64> = (1..=returns.len() as i64).collect();
    let mut df = df!(
        "iteration" => &iteration,
        "global_step" => iteration.iter().map(|i| i * 1000).collect::<Vec<_>>(),
        "episodic_return_mean" => returns,
        "episodes" => returns.iter().map(|r| if r.is_finite() { 3i64 } else { 0 }).collect::<Vec<_>>(),
        "policy_loss" => vec![0.5f64; returns.len()],
    )
    .unwrap();
    ParquetWriter::new(std::fs::File::create(root.join("runs").join(run_id).join("metrics.parquet")).unwrap()).finish(&mut df).unwrap();
}

/// Review finding 1: a run without a final return (all returns NaN, or an empty metrics file)
/// counted as gap 0, "solved", pulling the group's optimality gap below its own interval.
#[test]
fn runs_without_a_final_return_or_a_target_have_no_gap() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("r");
    // Config A: final returns 10, 20, 30, 100 against the bar 30: gaps 20, 10, 0, 0, mean 7.5.
    for (i, r) in [10.0, 20.0, 30.0, 100.0].into_iter().enumerate() {
        write_run(&root, &format!("a{i}"), "cfgA", "params.x=1", i as u64, r, json!({"x": 1}), true);
    }
    // Two more runs of A that never scored: diverged (every return NaN), and an empty file.
    write_run(&root, "a8", "cfgA", "params.x=1", 8, 0.0, json!({"x": 1}), true);
    rewrite_metrics(&root, "a8", &[f64::NAN; 12]);
    write_run(&root, "a9", "cfgA", "params.x=1", 9, 0.0, json!({"x": 1}), true);
    rewrite_metrics(&root, "a9", &[]);
    let out = tmp.path().join("out");
    let outcome = analyze(&options(vec![root.clone()], &out)).unwrap();
    let s = &outcome.summary;
    let gap = f(s, "optimality_gap", 0);
    assert!(close(gap, 7.5), "{s}");
    let (lo, hi) = (f(s, "optimality_gap_lo", 0).unwrap(), f(s, "optimality_gap_hi", 0).unwrap());
    assert!(lo <= 7.5 && 7.5 <= hi, "the point lies in its interval: [{lo}, {hi}]");
    let runs = polars::prelude::CsvReadOptions::default()
        .try_into_reader_with_file_path(Some(out.join("tables/runs.csv")))
        .unwrap()
        .finish()
        .unwrap();
    let ids = strings(&runs, "run_id");
    for unscored in ["a8", "a9"] {
        let k = ids.iter().position(|id| id == unscored).unwrap();
        assert_eq!(f(&runs, "gap", k), None, "run {unscored} has no gap");
    }

    // The same runs judged against no bar at all (specs without `success_return`, as hand-written
    // or older results have): no gap, not a perfect 0.
    let opts = options(vec![root], &out);
    let loaded = load_results(&opts.dirs, &[]).unwrap();
    let runs = loaded.runs.with_column(lit(NULL).cast(DataType::Float64).alias("success_return"));
    let per = annotate(per_run(loaded.metrics, runs, None), &Grouping::Config, &[]);
    let summary = per_group(per, &Grouping::Config).collect().unwrap();
    assert_eq!(f(&summary, "optimality_gap", 0), None, "{summary}");
}

#[test]
fn shortfall_keeps_nulls_null() {
    let df = df!("score" => [Some(10.0), None, Some(50.0)], "target" => [Some(30.0), Some(30.0), None]).unwrap();
    let out = df
        .lazy()
        .select([shortfall(col("target"), col("score")).alias("gap"), optimality_gap(col("score"), col("target")).alias("mean")])
        .collect()
        .unwrap();
    let gap: Vec<Option<f64>> = (0..3).map(|i| f(&out, "gap", i)).collect();
    assert_eq!(gap, [Some(20.0), None, None]);
    assert!(close(f(&out, "mean", 0), 20.0), "{out}");
}

/// Runs labelled `base` (a sweep without axes) in two configurations that differ in `run.lr`
/// only: config `cfgA` (lr 0.001, final returns 10, 20, 30, 40) and `cfgB` (lr 1e-6, 1, 2, 3,
/// 4), as two `drover run`s of one sweep file with different `--set run.lr` leave them.
fn two_configs_one_label(root: &Path) {
    for (config, lr, returns) in [("cfgA", 0.001, [10.0, 20.0, 30.0, 40.0]), ("cfgB", 1e-6, [1.0, 2.0, 3.0, 4.0])] {
        for (seed, r) in returns.into_iter().enumerate() {
            let run = json!({"seed": seed, "success_return": 30.0, "env": "CartPole-v1", "lr": lr});
            write_run_with(root, &format!("{config}{seed}"), config, "base", run, r, json!({"gamma": 0.99}), true);
        }
    }
}

fn write_manifest(root: &Path, runs: &[&str]) {
    let manifest = json!({"format_version": 1, "name": "t", "source": "t.toml", "runs": runs, "created_at": "0"});
    std::fs::write(root.join("sweep.json"), manifest.to_string()).unwrap();
}

/// Review finding 2 (and the researcher's report): the default grouping was by label, so two
/// configurations sharing a label were merged into one group of mixed settings without a word.
#[test]
fn configurations_sharing_a_label_are_separate_groups_named_apart() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("r");
    two_configs_one_label(&root);
    let outcome = analyze(&options(vec![root], &tmp.path().join("out"))).unwrap();
    let s = &outcome.summary;
    // lr 1e-6 sorts before 0.001: the bracketed values compare as numbers.
    assert_eq!(strings(s, "group"), ["base [run.lr=1e-6]", "base [run.lr=0.001]"], "{s}");
    assert_eq!(strings(s, "config_id"), ["cfgB", "cfgA"]);
    assert_eq!(strings(s, "label"), ["base", "base"]);
    assert!(close(f(s, "final_return_mean", 0), 2.5) && close(f(s, "final_return_mean", 1), 25.0), "{s}");
    assert_eq!((f(s, "runs", 0), f(s, "runs", 1)), (Some(4.0), Some(4.0)));
    let note = "note: the label `base` is shared by 2 configurations that differ outside the sweep's axes, in `run.lr`; each configuration is its own group, named by the settings that tell it apart (e.g. `base [run.lr=0.001]`)";
    assert!(outcome.notes.iter().any(|n| n.starts_with(note)), "{:?}", outcome.notes);
    assert!(outcome.table.starts_with(note), "{}", outcome.table);
}

/// One configuration whose runs carry two labels (two sweeps with different axes that share
/// it, analyzed together) is one group; a note names the labels, since the second sweep's
/// group would otherwise vanish from the tables without a word.
#[test]
fn one_configuration_under_two_labels_is_one_group_with_a_note() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("r");
    for (seed, (label, r)) in [("lr=0.001", 10.0), ("lr=0.001", 20.0), ("base", 30.0), ("base", 40.0)].into_iter().enumerate() {
        let run = json!({"seed": seed, "success_return": 30.0, "env": "CartPole-v1", "lr": 0.001});
        write_run_with(&root, &format!("cfgA{seed}"), "cfgA", label, run, r, json!({"gamma": 0.99}), true);
    }
    let outcome = analyze(&options(vec![root], &tmp.path().join("out"))).unwrap();
    assert_eq!(strings(&outcome.summary, "group").len(), 1, "{}", outcome.summary);
    assert_eq!(f(&outcome.summary, "runs", 0), Some(4.0));
    let note = outcome.notes.iter().find(|n| n.contains("one configuration has the runs of several labels")).unwrap_or_else(|| panic!("{:?}", outcome.notes));
    assert!(note.ends_with("`base` (also labelled `lr=0.001`)") || note.ends_with("`lr=0.001` (also labelled `base`)"), "{note}");
}

/// A results directory holds the runs of every `drover run` on it, but its `sweep.json` lists
/// those of the last one: the others are left out by default, as `drover status` leaves them
/// out, with a note saying how many; `--all-runs` analyzes them too.
#[test]
fn runs_not_in_sweep_json_are_left_out_with_a_note_unless_all_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("r");
    two_configs_one_label(&root);
    write_manifest(&root, &["cfgB0", "cfgB1", "cfgB2", "cfgB3", "cfgB9"]);
    let out = tmp.path().join("out");
    let outcome = analyze(&options(vec![root.clone()], &out)).unwrap();
    assert_eq!((outcome.completed, outcome.analyzed), (4, 4));
    assert_eq!(strings(&outcome.summary, "group"), ["base"], "one configuration left: no suffix");
    let note = format!(
        "note: `{}`: 4 run directories not in its sweep.json, the runs of the last `drover run` there, are left out: they are from an earlier version of the sweep, as `drover status` shows (`--all-runs` analyzes them too)",
        root.display()
    );
    assert_eq!(outcome.notes, std::slice::from_ref(&note));
    assert!(outcome.left_out.is_empty(), "stale runs are counted, not listed: {:?}", outcome.left_out);

    let opts = Options { all_runs: true, ..options(vec![root.clone()], &out) };
    let outcome = analyze(&opts).unwrap();
    assert_eq!(outcome.analyzed, 8);
    assert_eq!(strings(&outcome.summary, "group"), ["base [run.lr=1e-6]", "base [run.lr=0.001]"]);
    let note = format!("note: `{}`: 4 run directories not in its sweep.json (from an earlier version of the sweep) are analyzed too (`--all-runs`)", root.display());
    assert_eq!(outcome.notes[0], note);

    // Nothing of the current sweep has completed: the error says where the completed runs are.
    write_manifest(&root, &["cfgC0"]);
    let err = analyze(&options(vec![root.clone()], &out)).err().unwrap();
    assert_eq!(
        err.to_string(),
        format!(
            "no completed run with metrics in `{}`: 8 run directories, none completed with metrics: 8 not in its sweep.json (an earlier version of the sweep; `--all-runs` analyzes them)",
            root.display()
        )
    );
}

/// Review finding 3: labels join their axes with commas, which `=` read as a list of values, so
/// `--where 'label=...'` could never match a label of two axes.
#[test]
fn where_label_matches_labels_of_several_axes() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("r");
    for (x, y) in [(1, 1), (1, 2), (2, 1)] {
        let label = format!("params.x={x},params.y={y}");
        for seed in 0..2u64 {
            let r = f64::from(10 * x + y);
            write_run(&root, &format!("x{x}y{y}s{seed}"), &format!("c{x}{y}"), &label, seed, r, json!({"x": x, "y": y}), true);
        }
    }
    let groups = |filter: &str| {
        let opts = Options { filters: vec![filter.to_string()], ..options(vec![root.clone()], &tmp.path().join("out")) };
        analyze(&opts).map(|o| strings(&o.summary, "group")).map_err(|e| e.to_string())
    };
    assert_eq!(groups("label=params.x=1,params.y=2"), Ok(vec!["params.x=1,params.y=2".to_string()]));
    assert_eq!(
        groups("label=params.x=2,params.y=1,params.x=1,params.y=1"),
        Ok(vec!["params.x=1,params.y=1".to_string(), "params.x=2,params.y=1".to_string()]),
        "a list of two labels"
    );
    assert_eq!(groups("label!=params.x=1,params.y=2"), Ok(vec!["params.x=1,params.y=1".to_string(), "params.x=2,params.y=1".to_string()]));
    assert_eq!(groups("label='params.x=2,params.y=1'"), Ok(vec!["params.x=2,params.y=1".to_string()]), "quoted: one value");
    // The split into labels is by the labels there are, longest first.
    let labels: Vec<String> = ["a=1", "a=1,b=2", "c=3"].map(String::from).to_vec();
    assert_eq!(query::label_values("a=1,b=2,c=3", &labels), ["a=1,b=2", "c=3"]);
    assert_eq!(query::label_values("a=1,c=3", &labels), ["a=1", "c=3"]);
    assert_eq!(query::label_values("a=1,zzz", &labels), ["a=1", "zzz"], "no split into labels: the parts as they are");
}

/// Review finding 6: a completed run that logged no finite return counted in `runs` and in
/// "N runs analyzed" without a word, and the notes then blamed the number of seeds, or a
/// stratum the group did not share, for what was a lack of scores.
#[test]
fn runs_without_a_final_return_are_counted_apart_and_named() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("r");
    for (i, r) in [10.0, 20.0, 30.0, f64::NAN].into_iter().enumerate() {
        write_run(&root, &format!("a{i}"), "cfgA", "params.x=1", i as u64, 1.0, json!({"x": 1}), true);
        if r.is_nan() {
            rewrite_metrics(&root, &format!("a{i}"), &[f64::NAN; 12]);
        } else {
            rewrite_metrics(&root, &format!("a{i}"), &[r; 12]);
        }
    }
    for i in 0..4 {
        write_run(&root, &format!("b{i}"), "cfgB", "params.x=2", i as u64, 1.0, json!({"x": 2}), true);
        rewrite_metrics(&root, &format!("b{i}"), if i == 0 { &[] } else { &[f64::NAN; 5] });
    }
    let opts = Options { compare: Some("x".into()), ..options(vec![root], &tmp.path().join("out")) };
    let outcome = analyze(&opts).unwrap();
    let s = &outcome.summary;
    assert_eq!(strings(s, "group"), ["params.x=1", "params.x=2"]);
    assert_eq!((f(s, "runs", 0), f(s, "scored", 0)), (Some(4.0), Some(3.0)), "{s}");
    assert_eq!((f(s, "runs", 1), f(s, "scored", 1)), (Some(4.0), Some(0.0)), "{s}");
    assert!(close(f(s, "final_return_mean", 0), 20.0), "{s}");
    assert_eq!(outcome.unscored, 5);
    let table = &outcome.table;
    assert!(table.contains("4 (1 unscored)") && table.contains("4 (4 unscored)"), "{table}");
    assert!(
        table.contains("note: 5 of 8 runs have no final return (no iteration with a finished episode and a finite return: diverged, or an empty metrics file); they count in `runs` (`unscored` in the table) but in no score, interval, curve or profile: `params.x=1` (a3), `params.x=2` (b0, b1, b2, b3)"),
        "{table}"
    );
    assert!(table.contains("note: no 95% interval for 1 of 2 groups (`params.x=1`): an interval needs at least 4 runs in every stratum (seeds per configuration; for P(best > this) in the best group too, runs without a final return not counted)"), "{table}");
    assert!(!table.contains("shares no stratum"), "a group without scores has no strata to share: {table}");
}

fn bar(name: &str, value: f64) -> Bar {
    Bar { name: name.into(), value, lo: value - 1.0, hi: value + 1.0, colour: 0 }
}

/// Review findings 4, 5 and 8: the bar chart took the first 40 groups in label order (the best
/// could be missing, and nothing said so), groups without an IQM (NaN) ranked first, and a bar's
/// colour followed the summary's order while a line's followed the ranking.
#[test]
fn charts_show_the_best_groups_by_iqm_without_scores_last_each_in_one_colour() {
    let mut bars: Vec<Bar> = (0..50).map(|k| bar(&format!("g{k:02}"), f64::from(k))).collect();
    bars.insert(3, bar("unscored", f64::NAN));
    let ranked: Vec<String> = pipeline::by_iqm(&bars).into_iter().map(|b| b.name.clone()).collect();
    assert_eq!(&ranked[..3], ["g49", "g48", "g47"]);
    assert_eq!(ranked.last().map(String::as_str), Some("unscored"), "NaN ranks last, not first");
    let (shown, note) = pipeline::chart_bars(bars, &ranked);
    assert_eq!(note, " (best 40 of 51 by IQM)");
    let names: Vec<&str> = shown.iter().map(|b| b.name.as_str()).collect();
    // The best 40, g10..=g49, in the summary's order; each coloured by its rank (its line's colour).
    assert_eq!(names, (10..50).map(|k| format!("g{k:02}")).collect::<Vec<_>>());
    assert!(shown.iter().all(|b| b.colour == 49 - b.value as usize), "{shown:?}");
}

/// Review findings 4 and 5: with many bars the fixed 12 px gap left 1 px hairlines, and a bar
/// of NaN length was drawn from 0 to the left edge.
#[test]
fn bars_stay_bars_when_many_and_a_group_without_a_score_gets_none() {
    let tmp = tempfile::tempdir().unwrap();
    let pixels = |path: &Path| {
        let mut reader = png::Decoder::new(std::io::Cursor::new(std::fs::read(path).unwrap())).read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size().unwrap()];
        let info = reader.next_frame(&mut buf).unwrap();
        (info.height, buf.chunks(3).map(|p| [p[0], p[1], p[2]]).collect::<Vec<[u8; 3]>>())
    };
    // A bar's fill: its palette colour at 75% over white.
    let fill = |k: usize| {
        let c = plot::PALETTE[k];
        [c.0, c.1, c.2].map(|v| (255.0 - 0.75 * (255.0 - f64::from(v))).round() as u8)
    };
    let many: Vec<Bar> = (0..40).map(|k| Bar { colour: 0, ..bar(&format!("g{k}"), 10.0) }).collect();
    render(&tmp.path().join("many"), &Chart::Bars("t", "x", &many)).unwrap();
    let (height, rgb) = pixels(&tmp.path().join("many.png"));
    assert!(height > 620, "a taller image for 40 bars: {height}");
    let near = |p: &[u8; 3], q: [u8; 3]| p.iter().zip(q).all(|(a, b)| a.abs_diff(b) <= 2);
    let filled = rgb.iter().filter(|p| near(p, fill(0))).count();
    // 40 bars of about 800 px by at least 14 px each.
    assert!(filled > 40 * 800 * 14, "{filled} bar pixels");

    let two = [Bar { colour: 0, ..bar("scored", 10.0) }, Bar { colour: 1, ..bar("unscored", f64::NAN) }];
    render(&tmp.path().join("two"), &Chart::Bars("t", "x", &two)).unwrap();
    let (_, rgb) = pixels(&tmp.path().join("two.png"));
    assert!(rgb.iter().any(|p| near(p, fill(0))), "the scored bar is drawn");
    assert!(!rgb.iter().any(|p| near(p, fill(1))), "no bar for a NaN value");
}

/// Review finding 9: tick labels rounded to whole numbers from 10 up, so ticks 0.5 apart
/// read `100, 100, 101, 102, 102, 103`.
#[test]
fn tick_labels_have_the_decimals_their_spacing_needs() {
    let label = |v: f64, step: f64| plot::tick_label(v, step);
    assert_eq!([100.0, 100.5, 101.0].map(|v| label(v, 0.5)), ["100.0", "100.5", "101.0"]);
    assert_eq!([475.0, 500.0].map(|v| label(v, 25.0)), ["475", "500"]);
    assert_eq!(label(0.25, 0.05), "0.25");
    assert_eq!(label(0.3, 0.1), "0.3");
    assert_eq!([500_000.0, 1_500_000.0].map(|v| label(v, 500_000.0)), ["500k", "1.5M"]);
    assert_eq!(label(1_050_000.0, 50_000.0), "1.05M");
    assert_eq!(label(12_000.0, 2_000.0), "12k");
    assert_eq!(label(-1e-17, 0.2), "0.0", "no `-0`");
    assert_eq!(label(-5.0, 5.0), "-5");
}

/// Review finding 13: the legend's corner only followed whether the curves rise, and covered
/// a profile's plateau or the low curves' bands.
#[test]
fn the_legend_goes_where_it_covers_no_data() {
    let chart = LineChart { title: "t", x_desc: "x", y_desc: "y", legend_low: true };
    let names = ["a rather long group name=0.001", "b"];
    let place = |points: &[(f64, f64)]| plot::legend_place(&chart, &names, points, (0.0, 1.0), (0.0, 1.0));
    // Data low on the right: the preferred lower right would cover it, the upper right does not.
    let (corner, top) = place(&[(0.95, 0.05), (0.9, 0.1)]);
    assert!(matches!(corner, plotters::prelude::SeriesLabelPosition::UpperRight) && top == 1.0);
    // Nothing there: the preferred corner.
    let (corner, _) = place(&[(0.5, 0.5)]);
    assert!(matches!(corner, plotters::prelude::SeriesLabelPosition::LowerRight));
    // Data in every corner: the axis is raised so the legend sits above all of it.
    let (corner, top) = place(&[(0.02, 0.02), (0.98, 0.02), (0.02, 0.98), (0.98, 0.98)]);
    assert!(matches!(corner, plotters::prelude::SeriesLabelPosition::UpperRight) && top > 1.05, "{top}");
}

/// Review finding 7: an analysis into a directory an earlier one wrote left that one's files
/// (a `compare-*` table over other runs) beside its own, and nothing said which slice or
/// grouping a table was of.
#[test]
fn an_analysis_records_its_slice_and_removes_only_its_predecessors_files() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("r");
    two_configs(&root);
    let out = tmp.path().join("out");
    let first = analyze(&Options { compare: Some("x".into()), ..options(vec![root.clone()], &out) }).unwrap();
    assert!(first.removed.is_empty());
    let tables = out.join("tables");
    assert!(tables.join("compare-params.x.csv").is_file() && tables.join("analysis.json").is_file());
    // A file of the user's beside the tables, and a record edited to name files outside them.
    std::fs::write(tables.join("mine.csv"), "a\n1\n").unwrap();
    std::fs::write(tmp.path().join("victim.csv"), "a\n1\n").unwrap();
    let record = std::fs::read_to_string(tables.join("analysis.json")).unwrap();
    let record = record.replace("\"files\": [", "\"files\": [\"../victim.csv\", \"tables/../../victim.csv\", \"/etc/hostname\",");
    std::fs::write(tables.join("analysis.json"), record).unwrap();
    // A table of that analysis the user has edited since: kept, with a note.
    let edited = tables.join("compare-params.x.md");
    std::fs::write(&edited, std::fs::read_to_string(&edited).unwrap() + "\nmy remark\n").unwrap();

    let second = analyze(&Options { filters: vec!["x=1".into()], ..options(vec![root], &out) }).unwrap();
    let removed: Vec<String> = second.removed.iter().map(|p| p.strip_prefix(&out).unwrap().display().to_string()).collect();
    assert!(edited.is_file(), "an edited file is kept");
    assert_eq!(second.kept, [format!("note: kept `{}`: an earlier analysis wrote it, but it has changed since (or that analysis did not say how it left it)", edited.display())]);
    // The comparison's summary, curves and profiles; `runs.*` and the rest are written again.
    let want = ["compare-params.x.csv", "compare-params.x.parquet", "curves-by-params.x.csv", "curves-by-params.x.parquet"];
    let want: Vec<String> = want.iter().chain(&["profiles-by-params.x.csv", "profiles-by-params.x.parquet"]).map(|f| format!("tables/{f}")).collect();
    assert_eq!(removed, want);
    assert!(tables.join("mine.csv").is_file() && tmp.path().join("victim.csv").is_file(), "only files drover wrote go");
    let md = std::fs::read_to_string(tables.join("summary.md")).unwrap();
    assert!(md.starts_with("# drover analyze\n\n- results: `"), "{md}");
    assert!(md.contains("\n- runs: `--where 'x=1'` (4 of 7 completed runs)\n- groups: one group per configuration (`config_id`)\n"), "{md}");
    let record: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(tables.join("analysis.json")).unwrap()).unwrap();
    assert_eq!((record["where"].clone(), record["grouping"].clone(), record["analyzed"].clone()), (json!(["x=1"]), json!("config_id"), json!(4)));
    assert!(record["files"].as_array().unwrap().contains(&json!("tables/runs.csv")), "{record}");
}

/// Review finding 11: a slice that kept some runs dropped those without its key without a word,
/// an `=` that matched nothing did not say what values there are (a float written another way,
/// a case), and a directory given twice printed one "duplicate" line per run.
#[test]
fn where_says_what_it_drops_and_what_values_there_are() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("r");
    two_configs(&root);
    for seed in 0..2u64 {
        write_run(&root, &format!("c{seed}"), "cfgC", "params.y=5", seed, 3.0, json!({"y": 5, "k": true}), true);
    }
    let out = tmp.path().join("out");
    let outcome = analyze(&Options { filters: vec!["x!=2".into()], ..options(vec![root.clone()], &out) }).unwrap();
    assert_eq!(outcome.analyzed, 4);
    assert_eq!(outcome.notes, ["note: runs without a `--where` key never match, not even `!=`, and are left out: `params.x` is missing in 2 of 9"]);

    // A float as a generator's arithmetic writes it matches the number typed.
    let root2 = tmp.path().join("r2");
    for seed in 0..2u64 {
        let run = json!({"seed": seed, "success_return": 30.0, "env": "CartPole-v1", "lr": 3.0 * 0.0001});
        write_run_with(&root2, &format!("l{seed}"), "cfgL", "run.lr=0.00030000000000000003", run, 5.0, json!({}), true);
    }
    let opts = |filter: &str| Options { filters: vec![filter.into()], ..options(vec![root2.clone()], &out) };
    assert_eq!(analyze(&opts("lr=0.0003")).map(|o| o.analyzed).map_err(|e| e.to_string()), Ok(2));
    assert_eq!(analyze(&opts("lr!=0.0003")).err().map(|e| e.to_string()).unwrap_or_default(),
        "bad expression `lr!=0.0003`: no completed run matches (of 2); `lr!=0.0003` matches no run: `run.lr` is 0.00030000000000000003");
    let err = analyze(&opts("env=cartpole-v1")).err().map(|e| e.to_string()).unwrap_or_default();
    assert_eq!(err, "bad expression `env=cartpole-v1`: no completed run matches (of 2); `env=cartpole-v1` matches no run: `run.env` is CartPole-v1");

    // The same directory twice: read once, said once.
    let outcome = analyze(&options(vec![root.clone(), root.join("../r")], &out)).unwrap();
    assert!(outcome.left_out.iter().all(|r| !r.why.contains("duplicate")), "{:?}", outcome.left_out);
    assert_eq!(outcome.analyzed, 9);
    assert_eq!(outcome.notes, [format!("note: `{}` was given more than once; its runs are analyzed once", root.join("../r").display())]);
}

/// The statistics before they weighed strata equally, kept here to check that balanced groups
/// (every stratum as many runs) give exactly what they gave then.
mod pooled {
    use super::super::bootstrap::{mean_of, percentile_interval, resample_indices, strata_indices, Rng};
    use std::collections::BTreeMap;

    pub fn iqm_sorted(sorted: &[f64]) -> f64 {
        let k = sorted.len() / 4;
        mean_of(&sorted[k..sorted.len() - k])
    }

    pub fn median_sorted(sorted: &[f64]) -> f64 {
        let n = sorted.len();
        if n % 2 == 1 { sorted[n / 2] } else { (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0 }
    }

    /// The old `intervals` of one group (`[score, gap, auc]` rows by stratum): each statistic's bounds.
    pub fn intervals(name: &str, strata: &BTreeMap<String, Vec<[f64; 3]>>, seed: u64, reps: usize) -> Vec<(f64, f64)> {
        let all: Vec<[f64; 3]> = strata.values().flatten().copied().collect();
        let strata_idx = strata_indices(strata);
        let mut rng = Rng::new(seed, name, "aggregate");
        let mut idx = Vec::new();
        let mut estimates = vec![Vec::new(); 5];
        for _ in 0..reps {
            resample_indices(&strata_idx, &mut rng, &mut idx);
            let column = |k: usize| idx.iter().map(|&i| all[i][k]).collect::<Vec<f64>>();
            let mut sorted = column(0);
            sorted.sort_unstable_by(f64::total_cmp);
            let v = [iqm_sorted(&sorted), mean_of(&column(0)), median_sorted(&sorted), mean_of(&column(1)), mean_of(&column(2))];
            for (e, v) in estimates.iter_mut().zip(v) {
                e.push(v);
            }
        }
        estimates.iter_mut().map(|e| percentile_interval(e, 0.95)).collect()
    }
}

/// Stratum-balanced statistics (review finding 1) must not move a single bit where the strata
/// are balanced: weights all 1 give the plain IQM, median and mean, and the intervals of
/// balanced groups are the old pooled ones, on random values of mixed magnitudes.
#[test]
fn weighted_statistics_of_balanced_strata_are_the_pooled_ones_bit_for_bit() {
    let mut rng = Rng::new(5, "values", "t");
    let mut value = || (rng.below(2001) as f64 - 1000.0) * 10f64.powi(rng.below(9) as i32 - 4) / 7.0;
    for n in 1..40 {
        let mut sorted: Vec<f64> = (0..n).map(|_| value()).collect();
        sorted.sort_unstable_by(f64::total_cmp);
        let ones = vec![1.0; n];
        assert_eq!(weighted_iqm_sorted(&sorted, &ones).to_bits(), pooled::iqm_sorted(&sorted).to_bits(), "{sorted:?}");
        assert_eq!(weighted_median_sorted(&sorted, &ones).to_bits(), pooled::median_sorted(&sorted).to_bits(), "{sorted:?}");
        assert_eq!(weighted_mean(&sorted, &ones).to_bits(), super::bootstrap::mean_of(&sorted).to_bits(), "{sorted:?}");
    }
    // Three groups of 3 strata × 5, 7 and 6 runs, and one group with a single stratum.
    let mut rows = Vec::new();
    for (g, n) in [("g5", 5), ("g7", 7), ("g6", 6)] {
        for s in ["a", "b", "c"] {
            rows.extend((0..n).map(|_| (g, s, value())));
        }
    }
    rows.extend((0..9).map(|_| ("one", "a", value())));
    let frame = per_run_frame(&rows);
    let opts = Bootstrap { reps: 500, band_reps: 10, seed: 3, confidence: 0.95 };
    let ci = intervals(&frame, &opts).unwrap();
    let stats = ["final_return_iqm", "final_return_mean", "final_return_median", "optimality_gap", "auc_mean"];
    for (i, g) in ["g5", "g6", "g7", "one"].into_iter().enumerate() {
        assert_eq!(ci.column("group").unwrap().str().unwrap().get(i), Some(g));
        let mut strata: std::collections::BTreeMap<String, Vec<[f64; 3]>> = Default::default();
        for &(_, s, r) in rows.iter().filter(|r| r.0 == g) {
            strata.entry(s.to_string()).or_default().push([r, (30.0 - r).max(0.0), r / 2.0]);
        }
        let old = pooled::intervals(g, &strata, opts.seed, opts.reps);
        for (stat, (lo, hi)) in stats.iter().zip(old) {
            let got = (f(&ci, &format!("{stat}_lo"), i).unwrap(), f(&ci, &format!("{stat}_hi"), i).unwrap());
            assert_eq!((got.0.to_bits(), got.1.to_bits()), (lo.to_bits(), hi.to_bits()), "{g} {stat}: {got:?} vs {:?}", (lo, hi));
            // A balanced group keeps the summary's own point estimate.
            assert_eq!(f(&ci, "balanced", i), Some(1.0), "{g} {stat}");
        }
    }
}

/// Review finding 1 (fixture H): x=1 beats x=2 in both strata (a: 11..15 vs 10..14; b: 101..105
/// vs 100..104), but x=1 lost a run of the high stratum and x=2 one of the low stratum. Pooled,
/// x=2 had the higher IQM, mean and median, was ranked first and named best, with disjoint
/// intervals. With each stratum weighing equally x=1 comes first, and the mean is rliable's
/// mean of the strata's means.
#[test]
fn unbalanced_strata_weigh_equally_so_a_lost_run_cannot_reverse_a_ranking() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("r");
    for (x, y, base, lost) in [(1, "a", 11.0, None), (1, "b", 101.0, Some(4)), (2, "a", 10.0, Some(4)), (2, "b", 100.0, None)] {
        for s in 0..5u64 {
            let (id, config) = (format!("x{x}{y}{s}"), format!("c{x}{y}"));
            let label = format!("params.x={x},params.y={y}");
            write_run(&root, &id, &config, &label, s, base + s as f64, json!({"x": x, "y": y}), lost != Some(s));
        }
    }
    let opts = Options { compare: Some("x".into()), ..options(vec![root], &tmp.path().join("out")) };
    let outcome = analyze(&opts).unwrap();
    let s = &outcome.summary;
    assert_eq!(strings(s, "group"), ["params.x=1", "params.x=2"], "{s}");
    assert_eq!(outcome.best, [Best { env: None, group: "params.x=1".into() }]);
    // Means of the strata's means: x=1 (13 + 102.5)/2, x=2 (11.5 + 102)/2.
    assert_eq!((f(s, "final_return_mean", 0), f(s, "final_return_mean", 1)), (Some(57.75), Some(56.75)));
    // Weighted median: half the weight (5 of 10, b's runs weighing 5/4) ends after a's last run.
    assert_eq!((f(s, "final_return_median", 0), f(s, "final_return_median", 1)), (Some((15.0 + 101.0) / 2.0), Some(56.5)));
    // IQM of x=1: 9 runs, floor(9/4)/9 of the weight 10 cut from each end (2.2̅): 11, 12 and
    // 0.2̅ of 13 at the bottom, 104 (1.25) and 0.97̅ of 103 at the top.
    let kept = [(13.0, 7.0 / 9.0), (14.0, 1.0), (15.0, 1.0), (101.0, 1.25), (102.0, 1.25), (103.0, 1.25 - 35.0 / 36.0)];
    let want = kept.iter().map(|(x, w)| x * w).sum::<f64>() / kept.iter().map(|(_, w)| w).sum::<f64>();
    assert!(close(f(s, "final_return_iqm", 0), want), "{:?} vs {want}", f(s, "final_return_iqm", 0));
    assert!(f(s, "final_return_iqm", 0) > f(s, "final_return_iqm", 1), "{s}");
    // Gap to 30: a's runs 16..19 short on average... x=1: (mean gap a (19+18+17+16+15)/5 = 17, b 0) / 2.
    assert_eq!(f(s, "optimality_gap", 0), Some(8.5));
    // The interval lies around the point, not around the pooled value (49 then).
    let (lo, hi) = (f(s, "final_return_iqm_lo", 0).unwrap(), f(s, "final_return_iqm_hi", 0).unwrap());
    assert!(lo < want && want < hi && lo > 50.0, "[{lo}, {hi}]");
}

/// Review finding 2 (fixture E): two groups whose IQMs are mathematically equal, 0.7/4, summed
/// from {0.1, 0.2, 0.2, 0.2} and from four × 0.7000000000000001/4. The ranking's (Polars) IQM
/// and the best's (eager) one differed in the last bit, so rank 1 was `x=1` and the best `x=2`,
/// and P(best > this) filled the rank-1 row. The best is now rank 1 of the table itself.
#[test]
fn the_best_group_is_rank_one_even_when_two_iqm_sums_differ_in_the_last_bit() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("r");
    let c = 0.7000000000000001 / 4.0;
    for (x, values) in [(1, [0.0, 0.0, 0.1, 0.2, 0.2, 0.2, 1.0, 1.0]), (2, [0.0, 0.0, c, c, c, c, 1.0, 1.0])] {
        for (s, r) in values.into_iter().enumerate() {
            let id = format!("x{x}s{s}");
            write_run(&root, &id, &format!("c{x}"), &format!("params.x={x}"), s as u64, 0.0, json!({"x": x}), true);
            rewrite_metrics(&root, &id, &[r]);
        }
    }
    let opts = Options { compare: Some("x".into()), ..options(vec![root], &tmp.path().join("out")) };
    let outcome = analyze(&opts).unwrap();
    let s = &outcome.summary;
    let first = strings(s, "group")[0].clone();
    assert_eq!(outcome.best, [Best { env: None, group: first.clone() }], "{s}");
    assert_eq!((f(s, "rank", 0), f(s, "p_best_better", 0)), (Some(1.0), None), "the best is rank 1 and has no P: {s}");
    assert!(f(s, "p_best_better", 1).is_some(), "{s}");
}

/// Review finding 3: with several sweeps, labels become `<sweep>:<label>`, and the generators
/// were seeded from that name, so a group's intervals changed when another results directory
/// was analyzed alongside. They are seeded from the name without the prefix.
#[test]
fn a_groups_intervals_do_not_change_when_another_sweep_is_analyzed_alongside() {
    let opts = Bootstrap { reps: 400, band_reps: 50, seed: 0, confidence: 0.95 };
    let values = [1.0, 4.0, 9.0, 20.0, 33.0, 2.0];
    let frame = |name: &str, other: bool| {
        let mut rows: Vec<(&str, &str, f64)> = values.iter().map(|&v| (name, "s", v)).collect();
        let mut sweeps = vec!["fxa"; rows.len()];
        if other {
            rows.extend([("fxb:h", "s", 3.0), ("fxb:h", "s", 8.0)]);
            sweeps.extend(["fxb", "fxb"]);
        }
        let mut df = per_run_frame(&rows);
        df.with_column(Column::new("sweep".into(), sweeps)).unwrap();
        df.with_column(Column::new("a".into(), rows.iter().map(|r| r.2 * 3.0).collect::<Vec<_>>())).unwrap();
        df
    };
    let (alone, together) = (frame("params.x=1", false), frame("fxa:params.x=1", true));
    let (a, t) = (intervals(&alone, &opts).unwrap(), intervals(&together, &opts).unwrap());
    for stat in ["final_return_iqm", "final_return_mean", "final_return_median", "optimality_gap", "auc_mean"] {
        for end in ["lo", "hi"] {
            let c = format!("{stat}_{end}");
            assert!(f(&a, &c, 0).is_some() && f(&a, &c, 0) == f(&t, &c, 0), "{c}: {:?} vs {:?}", f(&a, &c, 0), f(&t, &c, 0));
        }
    }
    let (a, t) = (mean_intervals(&alone, &["a"], &opts).unwrap(), mean_intervals(&together, &["a"], &opts).unwrap());
    assert!(f(&a, "a_lo", 0).is_some() && (f(&a, "a_lo", 0), f(&a, "a_hi", 0)) == (f(&t, "a_lo", 0), f(&t, "a_hi", 0)), "{a}\n{t}");
    // The probability of improvement over a group is seeded from both names without prefix.
    let pair = |prefix: &str| {
        let mut rows: Vec<(String, &str, f64)> = values.iter().map(|&v| (format!("{prefix}x"), "s", v)).collect();
        rows.extend(values.iter().map(|&v| (format!("{prefix}y"), "s", v + 2.0)));
        let named: Vec<(&str, &str, f64)> = rows.iter().map(|(g, s, v)| (g.as_str(), *s, *v)).collect();
        let mut df = per_run_frame(&named);
        df.with_column(Column::new("sweep".into(), vec!["fxa"; named.len()])).unwrap();
        improvement_over(&df, &format!("{prefix}y"), &opts).unwrap()
    };
    let (a, t) = (pair(""), pair("fxa:"));
    assert!(f(&a, "p_best_better_lo", 0).is_some() && (f(&a, "p_best_better_lo", 0), f(&a, "p_best_better_hi", 0)) == (f(&t, "p_best_better_lo", 0), f(&t, "p_best_better_hi", 0)), "{a}\n{t}");
}

/// Review finding 4 (fixture G): finite returns near `f64::MAX` overflowed the sums of the
/// final return, the AUC and every group mean (inf in the tables, `-` in the printed one, and a
/// note blaming too few runs for the missing interval). They are summed again scaled down.
#[test]
fn finite_returns_near_the_largest_float_give_finite_statistics() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("r");
    let big = 1.5e308;
    for (x, r) in [(1, big), (2, 1.0)] {
        for s in 0..4u64 {
            let id = format!("x{x}s{s}");
            write_run(&root, &id, &format!("c{x}"), &format!("params.x={x}"), s, 0.0, json!({"x": x}), true);
            rewrite_metrics(&root, &id, &[r; 12]);
        }
    }
    // Group means of finite per-run values near the maximum, and a median between two of them.
    assert_eq!(weighted_mean(&[big, big, big], &[1.0; 3]), big);
    assert_eq!(weighted_iqm_sorted(&[big, big, big, big], &[1.0, 1.0, 2.0, 2.0]), big);
    assert_eq!(weighted_median_sorted(&[1.4e308, 1.6e308], &[1.0, 1.0]), 1.4e308 / 2.0 + 1.6e308 / 2.0);
    let opts = Options { compare: Some("x".into()), ..options(vec![root], &tmp.path().join("out")) };
    let outcome = analyze(&opts).unwrap();
    let s = &outcome.summary;
    assert_eq!(strings(s, "group")[0], "params.x=1", "{s}");
    for stat in ["final_return_iqm", "final_return_mean", "final_return_median"] {
        assert_eq!(f(s, stat, 0), Some(big), "{stat}: {s}");
        assert_eq!((f(s, &format!("{stat}_lo"), 0), f(s, &format!("{stat}_hi"), 0)), (Some(big), Some(big)), "{stat}: {s}");
    }
    // The trapezoids' sum rounds (area over span): within an ulp or two.
    for c in ["auc_mean", "auc_mean_lo", "auc_mean_hi"] {
        assert!(f(s, c, 0).is_some_and(|v| (v - big).abs() <= 4.0 * (big - f64::from_bits(big.to_bits() - 1))), "{c}: {s}");
    }
    assert_eq!(f(s, "final_return_std", 0), Some(0.0), "{s}");
    assert!(!outcome.table.contains("no 95% interval"), "{}", outcome.table);
    assert!(outcome.table.contains("1.5e308 [1.5e308, 1.5e308]"), "{}", outcome.table);
}

/// Review of odd paths, finding 4: the metrics files' footers were read with Polars' default
/// scan settings, which take a path as a glob pattern. A results directory named `r[1]` matched
/// no file (`[1]` is a character class: `r1`), so no run had metrics; one named `r*` matched a
/// sibling's file too (here `r!`, a damaged one, read first).
#[test]
fn results_paths_with_glob_characters_are_read_as_they_are() {
    for (name, sibling) in [("r[1]", "r1"), ("r*", "r!")] {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join(name);
        for s in 0..2u64 {
            write_run(&root, &format!("a{s}"), "c1", "params.x=1", s, 10.0 + s as f64, json!({"x": 1}), true);
        }
        // A sibling the pattern matches, holding damaged metrics under the same run ids.
        for s in 0..2u64 {
            let dir = tmp.path().join(sibling).join("runs").join(format!("a{s}"));
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("metrics.parquet"), b"PAR1 not a parquet file PAR1").unwrap();
        }
        let outcome = analyze(&options(vec![root.clone()], &tmp.path().join("out"))).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!((outcome.completed, outcome.analyzed), (2, 2), "{name}");
        assert_eq!(f(&outcome.summary, "final_return_mean", 0), Some(10.5), "{name}");
    }
}

/// Review of odd paths, finding 8: `--where 'label=...'` split the value at commas, trimmed the
/// parts and joined them with `,`, so a label whose value holds ", " (a plugin path
/// `/p/lib ppo, v2=1.so`) could only be matched quoted. The parts are tried as typed too.
#[test]
fn where_label_matches_a_label_whose_value_holds_a_comma_and_a_space() {
    let labels: Vec<String> = ["run.plugin=/p/lib ppo, v2=1.so", "x=1,y=2", "z=3"].map(String::from).to_vec();
    assert_eq!(query::label_values("run.plugin=/p/lib ppo, v2=1.so", &labels), ["run.plugin=/p/lib ppo, v2=1.so"]);
    assert_eq!(query::label_values("run.plugin=/p/lib ppo, v2=1.so,z=3", &labels), ["run.plugin=/p/lib ppo, v2=1.so", "z=3"]);
    // A label of several axes typed with spaces after its commas still matches as before.
    assert_eq!(query::label_values("x=1, y=2, z=3", &labels), ["x=1,y=2", "z=3"]);

    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("r");
    for (i, label) in ["run.plugin=/p/lib ppo, v2=1.so", "run.plugin=/p/other.so"].into_iter().enumerate() {
        for seed in 0..2u64 {
            write_run(&root, &format!("p{i}s{seed}"), &format!("c{i}"), label, seed, 1.0 + i as f64, json!({"i": i}), true);
        }
    }
    let opts = Options { filters: vec!["label=run.plugin=/p/lib ppo, v2=1.so".into()], ..options(vec![root], &tmp.path().join("out")) };
    let outcome = analyze(&opts).unwrap();
    assert_eq!(strings(&outcome.summary, "group"), ["run.plugin=/p/lib ppo, v2=1.so"]);
}

/// Review finding 6: the final return is the mean of the last 10 *iterations*. Runs of 10
/// iterations or fewer average their whole training, and groups whose iterations differ in
/// steps average different spans; the analysis now says so under the table.
#[test]
fn the_final_return_window_is_noted_where_it_covers_whole_runs_or_differs_in_steps() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("r");
    // x=1: 12 iterations of 1,000 steps; x=2: 12 iterations of 4,000 steps (more envs).
    for x in [1, 2] {
        for s in 0..2u64 {
            let id = format!("x{x}s{s}");
            write_run(&root, &id, &format!("c{x}"), &format!("params.x={x}"), s, 5.0, json!({"x": x}), true);
            let iteration: Vec<i64> = (1..=12).collect();
            let mut df = df!(
                "iteration" => &iteration,
                "global_step" => iteration.iter().map(|i| i * 1000 * if x == 2 { 4 } else { 1 }).collect::<Vec<_>>(),
                "episodic_return_mean" => vec![5.0f64; 12],
                "episodes" => vec![3i64; 12],
            )
            .unwrap();
            ParquetWriter::new(std::fs::File::create(root.join("runs").join(&id).join("metrics.parquet")).unwrap()).finish(&mut df).unwrap();
        }
    }
    let outcome = analyze(&options(vec![root.clone()], &tmp.path().join("out"))).unwrap();
    let note = "note: the final-return window (10 iterations) spans from about 10000 steps (`params.x=1`) to 40000 (`params.x=2`)";
    assert!(outcome.table.contains(note), "{}", outcome.table);
    assert!(!outcome.table.contains("iterations or fewer"), "{}", outcome.table);
    // Runs of 3 iterations: the window is their whole training.
    for x in [1, 2] {
        for s in 0..2u64 {
            rewrite_metrics(&root, &format!("x{x}s{s}"), &[1.0, 2.0, 3.0]);
        }
    }
    let outcome = analyze(&options(vec![root], &tmp.path().join("out"))).unwrap();
    let note = "note: 4 of 4 runs have 10 iterations or fewer, so their final return (the mean of the last 10 iterations) is the mean of their whole training";
    assert!(outcome.table.contains(note) && !outcome.table.contains("spans from"), "{}", outcome.table);
}

/// The learning curves and profiles weigh each stratum equally too (review finding 1): a bin
/// or a group with 4 runs of one stratum and 2 of another gives both strata half the weight.
#[test]
fn curves_and_profiles_weigh_each_stratum_equally() {
    let opts = Bootstrap { reps: 100, band_reps: 200, seed: 1, confidence: 0.95 };
    let (strata, values) = (["a", "a", "a", "a", "b", "b"], [1.0, 2.0, 3.0, 4.0, 100.0, 200.0]);
    let points = df!(
        "group" => ["g"; 6],
        "stratum" => strata,
        "run_id" => ["r1", "r2", "r3", "r4", "r5", "r6"],
        "bin" => [0i64; 6],
        "step" => [100.0; 6],
        "value" => values,
    )
    .unwrap();
    let c = curves(&points, &opts).unwrap();
    // Mean of the strata's means (2.5 + 150) / 2, not 310 / 6. IQM: 6 runs, weights 1 (a) and
    // 2 (b), total 8; cut 1/6 of it (4/3) from each end: 1 and a third of 2 at the bottom, 4/3
    // of 200's weight 2 at the top.
    assert_eq!(f(&c, "mean", 0), Some(76.25));
    let kept = [(2.0, 2.0 / 3.0), (3.0, 1.0), (4.0, 1.0), (100.0, 2.0), (200.0, 2.0 / 3.0)];
    let want = kept.iter().map(|(x, w)| x * w).sum::<f64>() / kept.iter().map(|(_, w)| w).sum::<f64>();
    assert!(close(f(&c, "iqm", 0), want), "{:?} vs {want}", f(&c, "iqm", 0));
    // The profile: above any τ between 4 and 100 lies stratum b, half the weight (2/6 pooled).
    let runs = per_run_frame(&strata.iter().zip(values).map(|(s, v)| ("g", *s, v)).collect::<Vec<_>>());
    let p = profiles(&runs, 11, &opts).unwrap();
    let between: Vec<f64> = (0..p.height()).filter(|&i| (4.0..100.0).contains(&f(&p, "tau", i).unwrap())).map(|i| f(&p, "fraction", i).unwrap()).collect();
    assert!(!between.is_empty() && between.iter().all(|&v| v == 0.5), "{p}");
}

/// Provenance review, item 2: runs of different compute levels or plugin builds were pooled in
/// one group without a word, and the runs table had no column to tell them apart. A run that
/// mixed levels itself (a resume at another one) is a value of its own; an old summary, null.
#[test]
fn groups_pooling_compute_levels_or_plugin_builds_are_noted_and_the_runs_table_shows_them() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("r");
    two_configs(&root);
    let summary = |v: serde_json::Value| v.to_string();
    let write = |id: &str, v: serde_json::Value| std::fs::write(root.join("runs").join(id).join("summary.json"), summary(v)).unwrap();
    // Config A: one level, two plugin builds (a1 resumed with another build), one old summary.
    write("a0", json!({"format_version": 1, "compute": "cpu/avx2", "plugin": {"sha256": "aa"}}));
    write("a1", json!({"format_version": 1, "compute": "cpu/avx2", "plugin": {"sha256": "bb"}, "plugin_sha256s": ["aa", "bb"]}));
    write("a2", json!({"format_version": 1, "compute": "cpu/avx2", "plugin": {"sha256": "aa"}}));
    write("a3", json!({"format_version": 1}));
    // Config B: b1 was resumed at another level; b2 has no summary at all.
    write("b0", json!({"format_version": 1, "compute": "cpu/avx512", "plugin": {"sha256": "aa"}}));
    write("b1", json!({"format_version": 1, "compute": "cpu/avx2", "computes": ["cpu/avx512", "cpu/avx2"], "plugin": {"sha256": "aa"}}));

    let loaded = load_results(std::slice::from_ref(&root), &[]).unwrap();
    let runs = loaded.runs.sort(["run_id"], Default::default()).collect().unwrap();
    let column = |name: &str| -> Vec<Option<String>> {
        let values = runs.column(name).unwrap().str().unwrap().clone();
        (0..runs.height()).map(|i| values.get(i).map(str::to_string)).collect()
    };
    let some = |v: &[Option<&str>]| v.iter().map(|s| s.map(str::to_string)).collect::<Vec<_>>();
    assert_eq!(column("compute"), some(&[Some("cpu/avx2"), Some("cpu/avx2"), Some("cpu/avx2"), None, Some("cpu/avx512"), Some("cpu/avx512+cpu/avx2"), None]));
    assert_eq!(column("plugin.sha256"), some(&[Some("aa"), Some("aa+bb"), Some("aa"), None, Some("aa"), Some("aa"), None]));
    // The new columns come right after `results`; the others keep their order.
    let names: Vec<&str> = runs.get_column_names().iter().map(|n| n.as_str()).collect();
    assert_eq!(names[..9], ["run_id", "config_id", "sweep", "label", "seed", "success_return", "results", "compute", "plugin.sha256"]);

    let outcome = analyze(&options(vec![root], &tmp.path().join("out"))).unwrap();
    let a = "note: group `params.x=1` pools runs of 2 plugin builds (`plugin.sha256`: aa, aa+bb)";
    let b = "note: group `params.x=2` pools runs of 2 compute levels (`compute`: cpu/avx512, cpu/avx512+cpu/avx2)";
    assert!(outcome.table.contains(a) && outcome.table.contains(b), "{}", outcome.table);
    assert!(!outcome.table.contains("`params.x=1` pools runs of 2 compute") && !outcome.table.contains("`params.x=2` pools runs of 2 plugin"), "{}", outcome.table);
}
