#!/usr/bin/env bash
# The GPU checks of the CUDA engines in one prepared run, for machines lent for a few minutes
# (kernels/src/cuda/README.md). Two halves:
#
#   scripts/gpu-check.sh build [DIR]   here (x86-64, no CUDA needed): release binaries, the CUDA
#                                      test binaries and the plugins, stripped and xz-compressed
#                                      into DIR (default .gpu/, git-ignored; about 20 MB)
#   scripts/gpu-check.sh run [DIR]     on the GPU machine, from the repository root: every check,
#                                      the log to $OUT/gpu-check.log (or DIR/gpu-check.log)
#
# `run` needs nothing but the NVIDIA driver and the CUDA toolkit's libnvrtc; NCCL and mpirun are
# used when present (DROVER_NCCL_LIBRARY, or PyTorch's wheel, or libnccl.so.2 on the loader path).
set -uo pipefail
cd "$(dirname "$0")/.."
mode="${1:-}"
dir="${2:-.gpu}"

build() {
    set -e
    export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}"
    mkdir -p "$dir"
    # drover-job without `mpi`: the GPU machine may have no libmpi to load.
    cargo build --release --locked -p drover -p drover-job -p drover-plugin-ppo -p drover-plugin-grpo
    local tests
    tests=$(cargo test --release --locked -p drover-kernels --test cuda --test cuda_seq --test nccl --no-run --message-format=json 2>/dev/null |
        python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["kind"] == ["test"]:
        print(m["target"]["name"], m["executable"])')
    local rel="$CARGO_TARGET_DIR/release"
    cp "$rel/drover" "$rel/drover-job" "$rel/libdrover_plugin_ppo.so" "$rel/libdrover_plugin_grpo.so" "$dir/"
    while read -r name exe; do cp "$exe" "$dir/test-$name"; done <<<"$tests"
    strip "$dir"/drover "$dir"/drover-job "$dir"/test-* "$dir"/*.so
    # A device call carries at most 64 MiB; `drover` alone is ~75 MB stripped (polars), ~15 MB as xz.
    rm -f "$dir"/*.xz
    xz -T2 -6 -f "$dir"/drover "$dir"/drover-job "$dir"/test-* "$dir"/*.so
    ls -la "$dir"
    du -sh "$dir"
}

run() {
    local log="${OUT:-$dir}/gpu-check.log"
    local bin="${TMPDIR:-/tmp}/drover-gpu-bin"
    rm -rf "$bin" && mkdir -p "$bin"
    for f in "$dir"/*.xz; do
        local to="$bin/$(basename "${f%.xz}")"
        xz -dc "$f" >"$to" 2>/dev/null || python3 -c 'import lzma, sys; open(sys.argv[2], "wb").write(lzma.open(sys.argv[1]).read())' "$f" "$to"
        chmod +x "$to"
    done
    for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib; do
        [ -d "$d" ] && export LD_LIBRARY_PATH="$d:${LD_LIBRARY_PATH:-}"
    done
    if [ -z "${DROVER_NCCL_LIBRARY:-}" ]; then
        nccl=$(python3 -c 'import nvidia.nccl, os; print(os.path.join(nvidia.nccl.__path__[0], "lib", "libnccl.so.2"))' 2>/dev/null)
        [ -n "$nccl" ] && [ -e "$nccl" ] && export DROVER_NCCL_LIBRARY="$nccl"
    fi
    export DROVER_REQUIRE_GPU=1 DROVER_JOB_BIN="$bin/drover-job" DROVER_PLUGIN_PATH="$bin"
    export DROVER_CACHE_DIR="${TMPDIR:-/tmp}/drover-gpu-cache"
    local failed=0
    step() { # name, command...
        echo "== $1"
        local t0=$SECONDS
        "${@:2}" || { echo "!! $1 failed (exit $?)"; failed=$((failed + 1)); }
        echo "   ($((SECONDS - t0)) s)"
    }
    {
        nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
        echo "NCCL: ${DROVER_NCCL_LIBRARY:-libnccl.so.2 from the loader path, if any}"
        step "CartPole engine vs reference (kernels/tests/cuda.rs)" timeout 240 "$bin/test-cuda" --test-threads=1
        step "sequence engine vs SeqEngine (kernels/tests/cuda_seq.rs)" timeout 240 "$bin/test-cuda_seq" --test-threads=1
        if [ -n "${DROVER_NCCL_LIBRARY:-}" ] || ldconfig -p 2>/dev/null | grep -q libnccl.so.2; then
            step "1-rank NCCL group vs host path (kernels/tests/nccl.rs)" env DROVER_REQUIRE_NCCL=1 timeout 120 "$bin/test-nccl" --test-threads=1 --nocapture
        else
            echo "== NCCL: skipped, no libnccl.so.2 (set DROVER_NCCL_LIBRARY)"
        fi
        local results="${TMPDIR:-/tmp}/drover-gpu-results"
        rm -rf "$results"
        step "PPO CartPole 10.5M steps on CUDA (configs/cartpole-ppo-cuda.toml)" \
            timeout 120 "$bin/drover" run configs/cartpole-ppo-cuda.toml --results "$results/ppo"
        step "drover-job devices (what the local backend shares)" "$bin/drover-job" devices
        # Two seeds, -j 2, one GPU: the runs lease it in turn (backend/gpus.rs), each seeing it as
        # CUDA_VISIBLE_DEVICES; the start lines show which device each saw.
        step "two CUDA runs on one GPU take turns" timeout 120 "$bin/drover" run configs/cartpole-ppo-cuda.toml \
            --set 'sweep.seeds=[1, 2]' -j 2 --results "$results/turns"
        grep -h "training starts" "$results"/turns/runs/*/attempt-1.stderr.log || true
        # GRPO on a sequence task (configs/llm-algorithms.toml's settings) on the CUDA engine, then
        # on the CPU engine: both must learn; their numbers differ in the last bits only.
        mkdir -p "$results"
        sed -n '/^\[sweep\]/q;p' configs/llm-algorithms.toml >"$results/grpo.toml"
        printf '[sweep]\nseeds = [1]\n' >>"$results/grpo.toml"
        for device in cuda cpu; do
            step "GRPO SeqAdd-v0 on $device" timeout 150 "$bin/drover" run "$results/grpo.toml" \
                --set "name=\"grpo-$device\"" --set "run.device=\"$device\"" --results "$results/grpo-$device"
        done
        python3 - "$results" <<'EOF'
import json, pathlib, sys
root = pathlib.Path(sys.argv[1])
for run in sorted(root.glob("*/runs/*")):
    rows = [json.loads(l) for l in open(run / "metrics.jsonl")]
    acc = [r.get("accuracy", r.get("episodic_return_mean")) for r in rows]
    print(f"{run.parent.parent.name}: {len(rows)} iterations, wall {rows[-1]['wall_time_s']:.2f} s, "
          f"first {acc[0]}, last {acc[-1]}, best {max(a for a in acc if a is not None)}")
EOF
        step "drover bench rollout --device cuda" timeout 180 "$bin/drover" bench rollout --device cuda
        echo "== $failed step(s) failed"
        [ "$failed" -eq 0 ]
    } 2>&1 | tee "$log"
}

case "$mode" in
    build) build ;;
    run) run ;;
    *) echo "usage: scripts/gpu-check.sh build|run [DIR]" >&2; exit 2 ;;
esac
