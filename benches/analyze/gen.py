"""Synthetic results directory for the `drover analyze` benchmark: 100 configurations x 10 seeds,
1,000 logged iterations each, laid out as docs/design/results-layout.md says (spec.json,
metrics.parquet, exit.json per run). Learning curves are saturating exponentials with noise;
the first iterations finish no episode (NaN return), as early CartPole iterations can."""
import json
import os
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

out = sys.argv[1]
configs = int(sys.argv[2]) if len(sys.argv) > 2 else 100
seeds = int(sys.argv[3]) if len(sys.argv) > 3 else 10
iters = int(sys.argv[4]) if len(sys.argv) > 4 else 1000
rng = np.random.default_rng(0)
os.makedirs(os.path.join(out, "runs"), exist_ok=True)
lrs = [1e-4 * (i + 1) for i in range(10)]
clips = [0.05 * (i + 1) for i in range(10)]
steps_per_iter = 1024
for c in range(configs):
    lr, clip = lrs[c % 10], clips[(c // 10) % 10]
    config_id = f"{c:016x}"
    speed = 50 + 400 * abs(np.sin(c))  # iterations to ~63% of the plateau
    cap = 300 + 200 * abs(np.cos(c))
    for s in range(seeds):
        run_id = f"{c:08x}{s:08x}"
        d = os.path.join(out, "runs", run_id)
        os.makedirs(d, exist_ok=True)
        it = np.arange(1, iters + 1)
        ret = cap * (1 - np.exp(-it / (speed * (0.8 + 0.4 * rng.random())))) + rng.normal(0, 20, iters)
        episodes = np.where(it <= 3, 0, 8)
        ret = np.where(episodes > 0, ret, np.nan)
        table = pa.table({
            "iteration": it.astype(np.int64),
            "global_step": (it * steps_per_iter).astype(np.int64),
            "episodic_return_mean": ret,
            "episodes": episodes.astype(np.int64),
            "policy_loss": rng.normal(0, 0.01, iters),
            "value_loss": rng.random(iters),
            "entropy": rng.random(iters),
            "approx_kl": rng.random(iters) * 0.01,
            "clip_frac": rng.random(iters) * 0.2,
            "lr": np.full(iters, lr),
            "steps_per_sec": rng.random(iters) * 1e5,
            "wall_time_s": it * 0.01,
        })
        pq.write_table(table, os.path.join(d, "metrics.parquet"))
        spec = {
            "format_version": 1, "run_id": run_id, "config_id": config_id, "sweep": "bench",
            "label": f"run.lr={lr:g}, params.clip_coef={clip:g}",
            "axes": {"run.lr": lr, "params.clip_coef": clip},
            "run": {"env": "CartPole-v1", "num_envs": 8, "num_steps": 128, "total_steps": iters * steps_per_iter,
                    "hidden": [64, 64], "device": "cpu", "threads": 1, "seed": s, "plugin": "ppo", "lr": lr,
                    "anneal_lr": True, "success_return": 475.0},
            "params": {"gamma": 0.99, "gae_lambda": 0.95, "clip_coef": clip},
            "plugin_path": "/nonexistent/libdrover_plugin_ppo.so",
        }
        with open(os.path.join(d, "spec.json"), "w") as f:
            json.dump(spec, f)
        with open(os.path.join(d, "exit.json"), "w") as f:
            json.dump({"format_version": 1, "run_id": run_id, "status": "completed", "reason": None, "finished_at": "0"}, f)
print(f"wrote {configs * seeds} runs x {iters} iterations to {out}")
