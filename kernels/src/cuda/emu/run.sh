#!/bin/bash
# Runs the CUDA kernels' .cu sources on the CPU (one std::thread per CUDA thread, see shim.h) and
# compares them with kernels/src/reference.rs and the CPU engine. Needs g++ (C++20), no GPU.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cu="$here/.."
export EMU_BIN_DIR="${EMU_BIN_DIR:-${CARGO_TARGET_DIR:-/tmp}/drover-cuda-emu}"
mkdir -p "$EMU_BIN_DIR"
build() { # name obs_dim n_actions maxr "widths"
  { echo '#include "shim.h"'; bash "$here/shapes.sh" "${@:2}"
    cat "$cu/common.cu" "$cu/policy.cu" "$cu/rollout.cu" "$cu/train.cu" "$here/harness_main.inc"
  } | sed 's/extern __shared__ __align__(16) float smem\[\];/float* smem = g_dyn_smem;/' > "$EMU_BIN_DIR/$1.cpp"
  g++ -std=c++20 -O1 -ffp-contract=off -pthread -I "$here" -o "$EMU_BIN_DIR/$1" "$EMU_BIN_DIR/$1.cpp"
}
build emu64 4 2 64 "64 64" & build emu53 4 3 8 "5 3" & build emu52 4 2 8 "5 3" &
build emu7216 4 2 72 "72 16" & build emulin 4 2 2 "" & wait
cd "$here/driver" && cargo run --release --locked -q
