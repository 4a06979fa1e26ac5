#!/usr/bin/env bash
# Compares drover's CPU rollout throughput with EnvPool and gymnasium on this machine, all in one
# run so machine load affects every figure alike. Makes its own venv (pip) on first use:
#   benches/compare/run.sh [--envs 64,1024] [--seconds 2]
# Uses DROVER_JOB_BIN, else target/release/drover-job (build it with
# `cargo build --release -p drover-job`).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
venv="$here/.venv"
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import envpool, gymnasium, numpy' 2>/dev/null; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --upgrade pip
    "$venv/bin/pip" install --quiet -r "$here/requirements.txt"
fi
job_bin="${DROVER_JOB_BIN:-$root/target/release/drover-job}"
if [ ! -x "$job_bin" ]; then
    echo "error: $job_bin not found: build it with \`cargo build --release -p drover-job\` or set DROVER_JOB_BIN" >&2
    exit 2
fi
# One BLAS thread: on 2 busy cores OpenBLAS's spinning workers made the numpy policy ~15x slower,
# which would flatter drover.
export OPENBLAS_NUM_THREADS="${OPENBLAS_NUM_THREADS:-1}"
exec "$venv/bin/python" -W ignore::UserWarning "$here/compare.py" --drover-job "$job_bin" "$@"
