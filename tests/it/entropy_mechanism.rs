//! Issue 7 end to end: the shipped `configs/entropy-mechanism.toml` (GRPO, Clip-Cov and KL-Cov
//! on a verifiable-reward sequence task) trains through the real binaries and plugins, meets the
//! issue's bars, and `drover analyze` fits the entropy–performance law to every run.

use std::collections::BTreeMap;
use std::path::Path;

use drover_tests::{csv_rows, drover, read_json, run_dirs, run_ok, write_sweep};

/// One run's per-iteration `(global_step, token_entropy, accuracy)`.
struct Curve {
    points: Vec<(i64, f64, f64)>,
}

impl Curve {
    fn read(run: &Path) -> Self {
        let text = std::fs::read_to_string(run.join("metrics.jsonl")).expect("metrics.jsonl");
        let points = text
            .lines()
            .map(|line| {
                let row: serde_json::Value = serde_json::from_str(line).expect("metrics row");
                let num = |k: &str| row[k].as_f64().unwrap_or_else(|| panic!("`{k}` missing in {line}"));
                (row["global_step"].as_i64().expect("global_step"), num("token_entropy"), num("accuracy"))
            })
            .collect();
        Self { points }
    }

    /// Mean of `f` over the iterations in the fraction `[from, to)` of training.
    fn mean(&self, from: f64, to: f64, f: impl Fn(&(i64, f64, f64)) -> f64) -> f64 {
        let n = self.points.len();
        let (a, b) = ((from * n as f64) as usize, ((to * n as f64) as usize).max((from * n as f64) as usize + 1));
        let window = &self.points[a..b.min(n)];
        window.iter().map(f).sum::<f64>() / window.len() as f64
    }
}

#[test]
fn shipped_entropy_mechanism_sweep_meets_the_bars_and_fits_the_law() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("repo root");
    let results = tmp.path().join("results");
    run_ok(drover().arg("run").arg(repo.join("configs/entropy-mechanism.toml")).arg("--results").arg(&results));

    // (plugin, seed) → curve
    let mut curves: BTreeMap<(String, u64), Curve> = BTreeMap::new();
    for run in run_dirs(&results) {
        let summary = read_json(&run.join("summary.json"));
        let plugin = summary["plugin"]["name"].as_str().expect("plugin name").to_owned();
        let seed = summary["seed"].as_u64().expect("seed");
        curves.insert((plugin, seed), Curve::read(&run));
    }
    let seeds: Vec<u64> = curves.keys().filter(|(p, _)| p == "grpo").map(|(_, s)| *s).collect();
    assert_eq!(seeds.len(), 3, "runs: {:?}", curves.keys().collect::<Vec<_>>());
    let entropy = |c: &(i64, f64, f64)| c.1;
    let accuracy = |c: &(i64, f64, f64)| c.2;
    let mut report = String::new();
    for &seed in &seeds {
        let grpo = &curves[&("grpo".to_owned(), seed)];
        // GRPO's entropy falls.
        let (h0, h1) = (grpo.mean(0.0, 0.05, entropy), grpo.mean(0.9, 1.0, entropy));
        assert!(h1 < 0.5 * h0, "seed {seed}: GRPO entropy {h0:.3} -> {h1:.3} did not fall by half");
        for plugin in ["grpo", "clip_cov", "kl_cov"] {
            let c = &curves[&(plugin.to_owned(), seed)];
            assert_eq!(c.points.len(), grpo.points.len(), "{plugin} seed {seed}: same iterations as GRPO");
            // Accuracy rises for every algorithm.
            let (a0, a1) = (c.mean(0.0, 0.05, accuracy), c.mean(0.9, 1.0, accuracy));
            report += &format!("seed {seed} {plugin:9} accuracy {a0:.3} -> {a1:.3}, entropy");
            assert!(a1 > 2.0 * a0 + 0.05, "{plugin} seed {seed}: accuracy {a0:.3} -> {a1:.3} did not rise");
            // The Cov methods keep entropy above GRPO's at the same steps: compared on windows
            // of a tenth of training from the second tenth on (the first is the shared start).
            for k in 1..10 {
                let (from, to) = (k as f64 / 10.0, (k + 1) as f64 / 10.0);
                let (h, hg) = (c.mean(from, to, entropy), grpo.mean(from, to, entropy));
                report += &format!(" {h:.3}");
                if plugin != "grpo" {
                    assert!(
                        h > hg,
                        "{plugin} seed {seed}: entropy {h:.3} not above GRPO's {hg:.3} in tenth {k} of training"
                    );
                }
            }
            report += "\n";
        }
    }
    println!("{report}");

    // Clip-Cov and KL-Cov report how many tokens they touched.
    for run in run_dirs(&results) {
        let summary = read_json(&run.join("summary.json"));
        let plugin = summary["plugin"]["name"].as_str().expect("plugin name");
        if plugin != "grpo" {
            let first = std::fs::read_to_string(run.join("metrics.jsonl")).expect("metrics");
            assert!(first.contains("\"cov_selected\""), "{plugin}: no cov_selected metric");
        }
    }

    // The law R = -a exp(H) + b, fitted per run by `drover analyze`.
    let out_dir = tmp.path().join("analysis");
    run_ok(drover().arg("analyze").arg(&results).arg("--out").arg(&out_dir));
    let (header, rows) = csv_rows(&out_dir.join("tables/entropy_law.csv"));
    let col = |name: &str| header.iter().position(|c| c == name).unwrap_or_else(|| panic!("no `{name}` in {header:?}"));
    assert_eq!(rows.len(), 9, "one fit per run");
    for plot in ["curves-token_entropy.png", "curves-accuracy.png", "entropy_law.png"] {
        assert!(out_dir.join("plots").join(plot).is_file(), "{plot} not drawn");
    }
    for row in &rows {
        let num = |name: &str| row[col(name)].parse::<f64>().unwrap_or(f64::NAN);
        let (a, b, r2) = (num("a"), num("b"), num("r2"));
        // Accuracy falls as entropy rises on every run (a > 0), and the fit explains something.
        assert!(a > 0.0 && b.is_finite() && (0.05..=1.0).contains(&r2), "law fit {row:?}");
    }
}

/// GRPO's KL term needs `run.reference_policy = "initial"`: with it the job hands the frozen
/// initial policy's log-probs to the plugin (which reports `kl_ref`), without it the run fails
/// naming the key. RLOO runs on the same task through the real loader.
#[test]
fn reference_policy_feeds_grpos_kl_and_its_absence_is_a_clear_error() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let base = "[run]\nenv = \"SeqReverse-v0\"\nplugin = \"grpo\"\nvocab = 4\nprompt_len = 2\nnum_steps = 2\n\
                group_size = 4\nnum_envs = 64\nnum_minibatches = 2\nupdate_epochs = 2\ntotal_steps = 640\nlr = 3e-3\n";
    let sweep = write_sweep(
        tmp.path(),
        &format!(
            "name = \"ref\"\n{base}reference_policy = \"initial\"\n[sweep]\nseeds = [1]\n\
             [[sweep.cases]]\n\"params.kl_coef\" = 0.04\n[[sweep.cases]]\n\"run.plugin\" = \"rloo\"\n"
        ),
    );
    let results = tmp.path().join("results");
    run_ok(drover().arg("run").arg(&sweep).arg("--results").arg(&results));
    for run in run_dirs(&results) {
        let plugin = read_json(&run.join("summary.json"))["plugin"]["name"].as_str().expect("name").to_owned();
        let text = std::fs::read_to_string(run.join("metrics.jsonl")).expect("metrics");
        let rows: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).expect("row")).collect();
        assert_eq!(rows.len(), 5, "{plugin}: 640 steps of 64 responses x 2 tokens");
        if plugin == "grpo" {
            // The policy starts as the reference (KL 0 at the first minibatch) and moves away.
            let kl: Vec<f64> = rows.iter().map(|r| r["kl_ref"].as_f64().expect("kl_ref")).collect();
            assert!(kl[0] >= 0.0 && kl[0] < kl[4], "kl_ref per iteration: {kl:?}");
        } else {
            assert_eq!(plugin, "rloo");
            assert!(rows.iter().all(|r| r["accuracy"].as_f64().is_some_and(|a| (0.0..=1.0).contains(&a))));
        }
    }

    let dir = tmp.path().join("no-ref");
    std::fs::create_dir_all(&dir).expect("dir");
    let sweep = write_sweep(&dir, &format!("name = \"no-ref\"\n{base}[params]\nkl_coef = 0.04\n"));
    let out = drover().arg("run").arg(&sweep).arg("--results").arg(dir.join("results")).output().expect("spawn");
    assert!(!out.status.success(), "GRPO's KL without a reference policy must fail");
    let mut text = String::from_utf8_lossy(&out.stderr).into_owned();
    for run in run_dirs(&dir.join("results")) {
        for entry in std::fs::read_dir(&run).expect("run dir") {
            text += &std::fs::read_to_string(entry.expect("entry").path()).unwrap_or_default();
        }
    }
    assert!(text.contains("set run.reference_policy = \"initial\""), "{text}");
}

/// CHORD (issue 13) through the real binaries: with `run.expert_per_group = 1` the job
/// teacher-forces one answer per prompt group and flags it in the `is_expert` column, CHORD mixes
/// its SFT-φ loss in on a μ schedule it reports as `chord_mu`, and the policy learns SeqAdd-v0;
/// `accuracy` counts the sampled responses only. Without experts CHORD fails naming the key.
#[test]
fn chord_learns_from_expert_responses_and_needs_them() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let base = "[run]\nenv = \"SeqAdd-v0\"\nplugin = \"chord\"\nvocab = 4\nprompt_len = 2\nnum_steps = 2\n\
                group_size = 4\nnum_envs = 64\nnum_minibatches = 2\nupdate_epochs = 2\nlr = 3e-3\n";
    let sweep = write_sweep(
        tmp.path(),
        &format!(
            "name = \"chord\"\n{base}total_steps = 10240\nexpert_per_group = 1\n[params]\nmu_peak = 0.9\n\
             mu_valley = 0.3\nmu_warmup_iterations = 2\nmu_decay_iterations = 10\n[sweep]\nseeds = [1]\n"
        ),
    );
    let results = tmp.path().join("results");
    run_ok(drover().arg("run").arg(&sweep).arg("--results").arg(&results));
    let runs = run_dirs(&results);
    assert_eq!(runs.len(), 1);
    let text = std::fs::read_to_string(runs[0].join("metrics.jsonl")).expect("metrics");
    let rows: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).expect("row")).collect();
    assert_eq!(rows.len(), 80, "10240 steps of 64 responses x 2 tokens");
    let col = |k: &str| -> Vec<f64> {
        rows.iter().map(|r| r[k].as_f64().unwrap_or_else(|| panic!("`{k}` missing in {r}"))).collect()
    };
    // μ warms up over 2 iterations, then decays from 0.9 towards 0.3.
    let mu = col("chord_mu");
    for (i, e) in [(0, 0.0), (1, 0.45), (2, 0.9), (12, 0.3), (79, 0.3)] {
        assert!((mu[i] - e).abs() < 1e-9, "chord_mu per iteration: {mu:?}");
    }
    assert!(col("sft_loss").iter().all(|x| x.is_finite()) && col("policy_loss").iter().all(|x| x.is_finite()));
    // The experts (a quarter of the responses, always right) are not in `accuracy`: the first
    // iteration's sampled responses are those of an untrained policy (1/16 right by chance).
    let acc = col("accuracy");
    let (a0, a1) = (acc[..3].iter().sum::<f64>() / 3.0, acc[70..].iter().sum::<f64>() / 10.0);
    println!("chord SeqAdd-v0: accuracy {a0:.3} -> {a1:.3}");
    assert!(acc[0] < 0.25, "accuracy must not count the experts: {acc:?}");
    assert!(a1 > a0 + 0.3, "CHORD did not learn: accuracy {a0:.3} -> {a1:.3}");

    let dir = tmp.path().join("no-experts");
    std::fs::create_dir_all(&dir).expect("dir");
    let sweep = write_sweep(&dir, &format!("name = \"no-experts\"\n{base}total_steps = 256\n"));
    let out = drover().arg("run").arg(&sweep).arg("--results").arg(dir.join("results")).output().expect("spawn");
    assert!(!out.status.success(), "CHORD without expert responses must fail");
    let mut text = String::from_utf8_lossy(&out.stderr).into_owned();
    for run in run_dirs(&dir.join("results")) {
        for entry in std::fs::read_dir(&run).expect("run dir") {
            text += &std::fs::read_to_string(entry.expect("entry").path()).unwrap_or_default();
        }
    }
    assert!(text.contains("`is_expert`") && text.contains("run.expert_per_group"), "{text}");
}

/// Issue 13's comparison sweep: every shipped LLM-style plugin against GRPO, three seeds, run as
/// shipped; `drover analyze` ranks the configurations by IQM with bootstrap CIs and draws the
/// accuracy and entropy curves.
#[test]
fn shipped_llm_algorithms_sweep_runs_and_is_ranked() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("repo root");
    let results = tmp.path().join("results");
    let sweep = repo.join("configs/llm-algorithms.toml");
    let started = std::time::Instant::now();
    run_ok(drover().arg("run").arg(&sweep).arg("--results").arg(&results));
    println!("llm-algorithms: {} runs in {:.1} s", run_dirs(&results).len(), started.elapsed().as_secs_f64());
    let cases = std::fs::read_to_string(&sweep).expect("sweep").matches("[[sweep.cases]]").count();
    let mut plugins: Vec<String> = run_dirs(&results)
        .iter()
        .map(|r| read_json(&r.join("summary.json"))["plugin"]["name"].as_str().expect("name").to_owned())
        .collect();
    assert_eq!(plugins.len(), 3 * cases, "three seeds of every case completed");
    plugins.sort();
    plugins.dedup();
    assert_eq!(plugins.len(), cases, "one plugin per case: {plugins:?}");

    let out = tmp.path().join("analysis");
    let run = run_ok(drover().arg("analyze").arg(&results).args(["--compare", "algo", "--out"]).arg(&out));
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(stdout.contains(&format!("{} runs analyzed", 3 * cases)), "{stdout}");
    assert!(stdout.contains("best by IQM: run.plugin="), "{stdout}");
    let (header, rows) = csv_rows(&out.join("tables/compare-run.plugin.csv"));
    assert_eq!(rows.len(), cases, "one ranked row per algorithm");
    let rank = header.iter().position(|c| c == "rank").expect("rank column");
    let ranks: Vec<u32> = rows.iter().map(|r| r[rank].parse().expect("rank")).collect();
    assert_eq!(ranks, (1..=cases as u32).collect::<Vec<_>>(), "ranked 1..n by IQM");
    // Plugin parameters do not split the strata, so every algorithm run with the same run
    // settings as the best is compared with it; CHORD's expert responses are a different
    // setting, so CHORD is compared with no other algorithm (whichever of them ranks first).
    let (p, group) = (
        header.iter().position(|c| c == "p_best_better").expect("p_best_better column"),
        header.iter().position(|c| c == "group").expect("group column"),
    );
    let is_chord = |row: &[String]| row[group] == "run.plugin=chord";
    let best_is_chord = is_chord(&rows[0]);
    for row in &rows[1..] {
        let same_settings = is_chord(row) == best_is_chord;
        assert_eq!(row[p].parse::<f64>().is_ok(), same_settings, "P(best = {} > this) of {}", rows[0][group], row[group]);
    }
    for plot in ["curves-accuracy-by-run.plugin.png", "curves-token_entropy-by-run.plugin.png"] {
        assert!(out.join("plots").join(plot).is_file(), "{plot} not drawn");
    }
}
