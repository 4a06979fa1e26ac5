"""drover's CPU CartPole-v1 throughput against EnvPool and gymnasium, measured in one run.

Figures, per env count: env-only steps/s (drover: fixed action pattern; Python engines: random
actions drawn in one numpy call per step), and steps/s with an MLP policy (64x64 tanh actor and
critic, categorical sampling): drover's engine rollout against EnvPool / gymnasium stepping with
the same network in numpy (float32, batched matmuls). Prints each figure and drover's ratio to
each engine. Run through run.sh, which makes the venv.
"""

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np


def numpy_policy(hidden, seed=0):
    """Actor and critic with CleanRL's layer sizes; returns act(obs) -> actions."""
    rng = np.random.default_rng(seed)

    def layer(i, o, gain):
        w = rng.standard_normal((i, o)).astype(np.float32)
        q, _ = np.linalg.qr(w if i >= o else w.T)
        w = (q if i >= o else q.T)[:i, :o].astype(np.float32) * np.float32(gain)
        return w, np.zeros(o, np.float32)

    actor = [layer(4, hidden, 2**0.5), layer(hidden, hidden, 2**0.5), layer(hidden, 2, 0.01)]
    critic = [layer(4, hidden, 2**0.5), layer(hidden, hidden, 2**0.5), layer(hidden, 1, 1.0)]

    def mlp(layers, x):
        for w, b in layers[:-1]:
            x = np.tanh(x @ w + b)
        w, b = layers[-1]
        return x @ w + b

    def act(obs):
        obs = np.asarray(obs, np.float32)
        logits = mlp(actor, obs)
        _value = mlp(critic, obs)
        logits = logits - logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        p /= p.sum(axis=1, keepdims=True)
        u = rng.random(len(obs), dtype=np.float32)
        return (u >= p[:, 0]).astype(np.int32)

    return act


def timed(seconds, step):
    """Calls step() (returns env steps done) after a warm-up until `seconds` pass."""
    step()
    t0 = time.perf_counter()
    n = 0
    while True:
        n += step()
        dt = time.perf_counter() - t0
        if dt >= seconds:
            return n / dt


def envpool_rate(envs, threads, seconds, policy):
    import envpool

    env = envpool.make("CartPole-v1", env_type="gymnasium", num_envs=envs, num_threads=threads)
    obs, _ = env.reset()
    rng = np.random.default_rng(1)
    state = {"obs": obs}

    def step():
        a = policy(state["obs"]) if policy else rng.integers(0, 2, envs, dtype=np.int32)
        state["obs"] = env.step(a)[0]
        return envs

    return timed(seconds, step)


def gymnasium_rate(envs, seconds, policy):
    import gymnasium as gym

    env = gym.vector.SyncVectorEnv([lambda: gym.make("CartPole-v1") for _ in range(envs)])
    obs, _ = env.reset(seed=1)
    rng = np.random.default_rng(1)
    state = {"obs": obs}

    def step():
        a = policy(state["obs"]) if policy else rng.integers(0, 2, envs)
        state["obs"] = env.step(a)[0]
        return envs

    return timed(seconds, step)


def drover_rates(job_bin, envs, seconds, threads):
    cmd = [job_bin, "bench", "rollout", "--json", "--envs", ",".join(map(str, envs)),
           "--seconds", str(seconds)]
    if threads:
        cmd += ["--threads", str(threads)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    rates = {}
    for line in out.splitlines():
        r = json.loads(line)
        if r.get("format_version") != 1:
            sys.exit(f"error: unexpected drover bench record format: {line}")
        rates[(r["kind"], r["envs"])] = (r["per_second"], r["threads"])
    return rates


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--drover-job", required=True)
    ap.add_argument("--envs", default="64,1024")
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--skip-gymnasium", action="store_true", help="gymnasium is slow at 1024 envs")
    args = ap.parse_args()
    envs = [int(x) for x in args.envs.split(",")]
    threads = os.cpu_count() or 1
    policy = numpy_policy(args.hidden)
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = float("nan")
    print(f"CartPole-v1 steps/s on {threads} cores (1-min load {load:.2f} at start); "
          f"policy = {args.hidden}x{args.hidden} tanh MLP actor+critic, sampling")
    d = drover_rates(args.drover_job, envs, args.seconds, None)
    print(f"{'envs':>6} {'figure':<9} {'drover':>10} {'envpool':>10} {'gymnasium':>10} "
          f"{'x envpool':>10} {'x gym':>8}")
    for n in envs:
        for kind, drover_kind, pol in [("random", "env_only", None), ("mlp", "policy", policy)]:
            ours, _ = d[(drover_kind, n)]
            ep = envpool_rate(n, threads, args.seconds, pol)
            gy = float("nan") if args.skip_gymnasium else gymnasium_rate(n, args.seconds, pol)
            print(f"{n:>6} {kind:<9} {ours:>10.3g} {ep:>10.3g} {gy:>10.3g} "
                  f"{ours / ep:>9.1f}x {ours / gy:>7.1f}x", flush=True)
    print("drover env-only uses a fixed action pattern ((env + t) % 2); the Python engines step "
          "random actions (numpy draws, counted in their time).")


if __name__ == "__main__":
    main()
