#!/usr/bin/env bash
# Benchmark of `drover analyze` against an equivalent pandas + NumPy script, on a synthetic
# results directory of 1,000 runs x 1,000 logged iterations (100 configurations x 10 seeds).
# Both are timed in this one run, wall clock, process start to exit; the ratio is printed.
# Also reads drover's Parquet tables back with pandas and Python polars (check_parquet.py).
#
#   benches/analyze/run.sh [CONFIGS SEEDS ITERATIONS]   (default 100 10 1000)
#
# Needs python3 (3.9+) and network access to PyPI the first time (the venv is kept in
# target/bench-analyze/venv). Builds drover in release mode (polars from scratch: ~15 min on 2 cores).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
work="$repo/target/bench-analyze"
configs="${1:-100}" seeds="${2:-10}" iters="${3:-1000}"
mkdir -p "$work"

venv="$work/venv"
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --upgrade pip
fi
"$venv/bin/python" -c 'import numpy, pandas, pyarrow, polars' 2>/dev/null \
    || "$venv/bin/pip" install --quiet numpy pandas pyarrow polars
py="$venv/bin/python"

(cd "$repo" && cargo build --release -p drover --quiet)
drover="$repo/target/release/drover"

data="$work/data-$configs-$seeds-$iters"
if [ ! -f "$data/.complete" ]; then
    rm -rf "$data"
    "$py" "$here/gen.py" "$data" "$configs" "$seeds" "$iters"
    touch "$data/.complete"
fi

now() { date +%s.%N; }
# Warm the page cache for both, so neither pays for the first read of the files.
cat "$data"/runs/*/metrics.parquet > /dev/null

t0=$(now)
"$drover" analyze "$data" --out "$work/out-drover" --no-plots > "$work/drover.txt"
t1=$(now)
"$py" "$here/analyze_pandas.py" "$data" "$work/out-pandas" > "$work/pandas.txt"
t2=$(now)
"$drover" analyze "$data" --out "$work/out-drover-plots" > /dev/null
t3=$(now)

tail -n 1 "$work/pandas.txt"
"$py" "$here/check_parquet.py" "$work/out-drover/tables"
awk -v t0="$t0" -v t1="$t1" -v t2="$t2" -v t3="$t3" -v n="$((configs * seeds))" -v i="$iters" 'BEGIN {
    d = t1 - t0; p = t2 - t1; g = t3 - t2
    printf "runs: %d x %d iterations\n", n, i
    printf "drover analyze (tables):          %7.2f s\n", d
    printf "pandas + numpy equivalent:        %7.2f s\n", p
    printf "drover analyze (tables + plots):  %7.2f s\n", g
    printf "ratio pandas / drover:            %7.2f x\n", p / d
}'
