"""Times 1,000-task Slurm submissions: drover (whole CLI process) vs submitit map_array.

Run through run.sh, which makes the venv with submitit and starts the local Slurm.
"""
import argparse
import pathlib
import statistics
import subprocess
import time

import submitit

SWEEP = """
name = "submit-bench"
backend = "slurm"
[run]
env = "CartPole-v1"
plugin = "ppo"
num_envs = 4
num_steps = 16
total_steps = 64
[sweep]
seeds = {{ count = {n}, start = 0 }}
[slurm]
extra = ["--hold"]
time = "1"
signal_seconds = 30
"""


def noop(i):
    return i


def drover_once(drover, work, k, n):
    sweep = work / f"sweep-{k}.toml"
    sweep.write_text(SWEEP.format(n=n))
    results = work / f"drover-{k}"
    t0 = time.perf_counter()
    out = subprocess.run(
        [drover, "run", str(sweep), "--results", str(results), "--no-wait"],
        capture_output=True, text=True, env={"CI": "true", "PATH": "/usr/bin:/bin:/usr/sbin:/sbin"},
    )
    elapsed = time.perf_counter() - t0
    if out.returncode != 0:
        raise SystemExit(f"drover failed:\n{out.stderr}")
    # "... 1000 submitted in 0.123 s ...": run states, tasks file with the specs, batch script,
    # ledger, and the Slurm calls (scontrol, sbatch).
    submit = float(out.stderr.split(" submitted in ")[1].split(" s")[0])
    job_ids = [line.split('"job_id":"')[1].split('"')[0]
               for line in (results / "slurm" / "submissions.jsonl").read_text().splitlines()
               if '"kind":"submitted"' in line]
    subprocess.run(["scancel", *job_ids], check=True)
    return elapsed, submit


def submitit_once(work, k, n):
    executor = submitit.AutoExecutor(folder=str(work / f"submitit-{k}"), cluster="slurm")
    executor.update_parameters(timeout_min=1, slurm_additional_parameters={"hold": True},
                               slurm_array_parallelism=n)
    t0 = time.perf_counter()
    jobs = executor.map_array(noop, range(n))
    elapsed = time.perf_counter() - t0
    assert len(jobs) == n
    subprocess.run(["scancel", jobs[0].job_id.split("_")[0]], check=True)
    return elapsed


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--drover", required=True)
    p.add_argument("--work", required=True)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--tasks", type=int, default=1000)
    a = p.parse_args()
    work = pathlib.Path(a.work)
    drover = str(pathlib.Path(a.drover).resolve())
    d, ds, s = [], [], []
    for k in range(a.repeats):  # interleaved, so both see the same controller load
        whole, submit = drover_once(drover, work, k, a.tasks)
        d.append(whole)
        ds.append(submit)
        s.append(submitit_once(work, k, a.tasks))
    dm, dsm, sm = statistics.median(d), statistics.median(ds), statistics.median(s)
    fmt = lambda xs: ", ".join(f"{x:.3f}" for x in xs)
    print(f"tasks: {a.tasks}, repeats: {a.repeats}")
    print(f"submitit map_array:                     median {sm:.3f} s  ({fmt(s)})")
    print(f"drover submission (specs+script+sbatch):median {dsm:.3f} s  ({fmt(ds)})")
    print(f"drover run, whole process:              median {dm:.3f} s  ({fmt(d)})")
    print(f"ratio submitit / drover submission: {sm / dsm:.2f}x ({'drover faster' if dsm < sm else 'submitit faster'})")
    print(f"ratio submitit / drover whole process: {sm / dm:.2f}x")


if __name__ == "__main__":
    main()
