#!/bin/bash
# Runs the CUDA kernels' .cu sources on the CPU (one std::thread per CUDA thread, see shim.h) and
# compares them with kernels/src/reference.rs, kernels/src/seq/reference.rs and the CPU engines.
# Needs g++ (C++20), no GPU.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cu="$here/.."
export EMU_BIN_DIR="${EMU_BIN_DIR:-${CARGO_TARGET_DIR:-/tmp}/drover-cuda-emu}"
mkdir -p "$EMU_BIN_DIR"
build() { # name kernels.cu obs_dim n_actions maxr "widths" ["prompt_len response_len"]
  { echo '#include "shim.h"'; bash "$here/shapes.sh" "${@:3}"
    cat "$cu/common.cu" "$cu/policy.cu" "$cu/$2" "$cu/train.cu" "$here/harness_main.inc"
  } | sed 's/extern __shared__ __align__(16) float smem\[\];/float* smem = g_dyn_smem;/' > "$EMU_BIN_DIR/$1.cpp"
  g++ -std=c++20 -O1 -ffp-contract=off -pthread -I "$here" -o "$EMU_BIN_DIR/$1" "$EMU_BIN_DIR/$1.cpp"
}
build emu64 rollout.cu 4 2 64 "64 64" & build emu53 rollout.cu 4 3 8 "5 3" &
build emu52 rollout.cu 4 2 8 "5 3" & build emu7216 rollout.cu 4 2 72 "72 16" &
build emulin rollout.cu 4 2 2 "" &
# Sequence tasks: reverse V=4 P=3 (obs 27) and add V=10 P=4 (R=3, obs 73).
build emuseqrev seq.cu 27 4 64 "64 64" "3 3" & build emuseqadd seq.cu 73 10 24 "24" "4 3" & wait
cd "$here/driver" && cargo run --release --locked -q
