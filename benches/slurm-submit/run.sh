#!/usr/bin/env bash
# Submission benchmark (issue 9): a 1,000-run sweep submitted by `drover run --backend slurm`
# versus the same 1,000 tasks submitted by submitit's `map_array`, to the local Slurm of
# scripts/slurm-up.sh, in the same run. Prints both times (median of REPEATS) and the ratio.
#
# Both submit held arrays (`--hold`), so no task trains and the node stays free; every array is
# cancelled right after it is timed. drover's time is the whole `drover run` process (config,
# plugin check, 1,000 run directories and spec files, the batch script, sbatch); submitit's is
# its `map_array` call (pickling 1,000 calls and sbatch), not counting Python's start-up.
#
# Usage: benches/slurm-submit/run.sh [REPEATS]   (default 5; builds drover in the dev profile)
set -euo pipefail
cd "$(dirname "$0")/../.."
repeats=${1:-5}
./scripts/slurm-up.sh
cargo build --quiet -p drover -p drover-job -p drover-plugin-ppo
venv=target/bench-venv-submitit
if [[ ! -x "$venv/bin/python" ]]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet "submitit==1.5.4"
fi
work=$(mktemp -d /tmp/drover-bench-submit.XXXXXX)
trap 'rm -rf "$work"' EXIT
"$venv/bin/python" benches/slurm-submit/bench.py --drover target/debug/drover --work "$work" --repeats "$repeats"
