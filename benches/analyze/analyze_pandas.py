"""The pandas + NumPy equivalent of `drover analyze RESULTS --no-plots`, for the benchmark: the
same inputs, statistics and outputs (per-run table, per-configuration summary with stratified
bootstrap CIs, learning curves with bootstrap IQM bands, performance profiles; CSV + Parquet)."""
import glob
import json
import os
import sys

import numpy as np
import pandas as pd

root = sys.argv[1]
out = sys.argv[2]
REPS, BAND_REPS, BINS, POINTS, WINDOW = 5000, 1000, 100, 101, 10
rng = np.random.default_rng(0)

# Load: completed runs, flattened hyperparameters, metrics.
rows, frames = [], []
for d in sorted(glob.glob(os.path.join(root, "runs", "*"))):
    with open(os.path.join(d, "exit.json")) as f:
        if json.load(f)["status"] != "completed":
            continue
    with open(os.path.join(d, "spec.json")) as f:
        spec = json.load(f)
    row = {"run_id": spec["run_id"], "config_id": spec["config_id"], "label": spec["label"],
           "seed": spec["run"]["seed"], "success_return": spec["run"].get("success_return")}
    for table in ("run", "params"):
        for k, v in spec[table].items():
            if k != "seed":
                row[f"{table}.{k}"] = json.dumps(v) if isinstance(v, list) else v
    rows.append(row)
    m = pd.read_parquet(os.path.join(d, "metrics.parquet"),
                        columns=["iteration", "global_step", "episodic_return_mean", "episodes"])
    m["run_id"] = spec["run_id"]
    frames.append(m)
runs = pd.DataFrame(rows)
metrics = pd.concat(frames, ignore_index=True)

# Per run.
fin = metrics[(metrics.episodes > 0) & metrics.episodic_return_mean.notna()].merge(
    runs[["run_id", "success_return"]], on="run_id")
fin = fin.sort_values(["run_id", "global_step"])


def per_run(g):
    x = g.global_step.to_numpy(float)
    y = g.episodic_return_mean.to_numpy()
    span = x[-1] - x[0]
    auc = np.sum((y[1:] + y[:-1]) * np.diff(x) / 2) / span if span > 0 else y[0]
    hit = g.global_step[g.episodic_return_mean >= g.success_return]
    return pd.Series({"final_return": y[-WINDOW:].mean(), "auc": auc,
                      "steps_to_threshold": hit.min() if len(hit) else np.nan})


scores = fin.groupby("run_id").apply(per_run, include_groups=False).reset_index()
runs = runs.merge(scores, on="run_id", how="left")
runs["target"] = runs.success_return
runs["gap"] = np.maximum(runs.target - runs.final_return, 0)


def iqm(a, axis=-1):
    a = np.sort(a, axis=axis)
    n = a.shape[axis]
    k = n // 4
    return np.take(a, range(k, n - k), axis=axis).mean(axis=axis)


# Per configuration, with stratified (here: one stratum per configuration) bootstrap CIs.
summary = []
for (cid, label), g in runs.groupby(["config_id", "label"]):
    r, gap, auc = g.final_return.to_numpy(), g.gap.to_numpy(), g.auc.to_numpy()
    n = len(r)
    idx = rng.integers(0, n, size=(REPS, n))
    est = {"final_return_iqm": iqm(r[idx]), "final_return_mean": r[idx].mean(1),
           "final_return_median": np.median(r[idx], 1), "optimality_gap": gap[idx].mean(1),
           "auc_mean": auc[idx].mean(1)}
    row = {"config_id": cid, "label": label, "group": label, "runs": n, "strata": 1,
           "final_return_iqm": iqm(r), "final_return_mean": r.mean(), "final_return_std": r.std(ddof=1),
           "final_return_median": np.median(r), "optimality_gap": gap.mean(), "target": g.target.iloc[0],
           "auc_mean": auc.mean(), "steps_to_threshold_mean": g.steps_to_threshold.mean(),
           "reached": g.steps_to_threshold.notna().sum()}
    for k, e in est.items():
        row[f"{k}_lo"], row[f"{k}_hi"] = np.percentile(e, [2.5, 97.5])
    summary.append(row)
summary = pd.DataFrame(summary)

# Learning curves: bins over the steps axis, per run mean per bin, IQM over runs with a band.
fin = fin.merge(runs[["run_id", "label"]], on="run_id")
fin["bin"] = np.minimum(fin.global_step * BINS // fin.global_step.max(), BINS - 1)
pts = fin.groupby(["label", "run_id", "bin"]).agg(step=("global_step", "mean"),
                                                   value=("episodic_return_mean", "mean")).reset_index()
curves = []
for (label, b), g in pts.groupby(["label", "bin"]):
    v = g.value.to_numpy()
    idx = rng.integers(0, len(v), size=(BAND_REPS, len(v)))
    lo, hi = np.percentile(iqm(v[idx]), [2.5, 97.5])
    curves.append({"group": label, "bin": b, "step": g.step.mean(), "runs": len(v), "mean": v.mean(),
                   "iqm": iqm(v), "iqm_lo": lo, "iqm_hi": hi})
curves = pd.DataFrame(curves)

# Performance profiles.
all_r = runs.final_return.dropna().to_numpy()
pad = (all_r.max() - all_r.min()) * 0.05
taus = np.linspace(all_r.min() - pad, all_r.max() + pad, POINTS)
profiles = []
for label, g in runs.groupby("label"):
    r = g.final_return.dropna().to_numpy()
    idx = rng.integers(0, len(r), size=(BAND_REPS, len(r)))
    boot = (r[idx][:, :, None] > taus[None, None, :]).mean(1)
    lo, hi = np.percentile(boot, [2.5, 97.5], axis=0)
    frac = (r[:, None] > taus[None, :]).mean(0)
    profiles.append(pd.DataFrame({"group": label, "tau": taus, "fraction": frac, "fraction_lo": lo, "fraction_hi": hi}))
profiles = pd.concat(profiles, ignore_index=True)

os.makedirs(out, exist_ok=True)
for name, df in [("summary", summary), ("runs", runs), ("curves", curves), ("profiles", profiles)]:
    df.to_csv(os.path.join(out, f"{name}.csv"), index=False)
    df.to_parquet(os.path.join(out, f"{name}.parquet"), index=False)
print(f"pandas: {len(runs)} runs, {len(summary)} configurations, {len(curves)} curve points")
