#!/usr/bin/env bash
# Checks that the workspace compiles for AArch64 (Graviton, Grace, Altra nodes), and builds the
# kernels crate and the job runtime for it and runs their tests under qemu's user-mode
# emulation, so the NEON level and everything architecture-specific is tested on an x86-64
# machine; then makes a Slurm run from this machine's drover land on an emulated AArch64 node,
# which must pick its `[slurm.arch]` builds. Installs what it needs (Debian's cross gcc and
# qemu-user, the Rust standard library for the target) when missing. Correctness only: qemu's
# timings mean nothing.
#
# Usage: scripts/test-aarch64.sh [cargo test arguments...]
# The AArch64 build goes to $AARCH64_TARGET_DIR (default target/aarch64).
set -euo pipefail
cd "$(dirname "$0")/.."
target=aarch64-unknown-linux-gnu
need=()
command -v aarch64-linux-gnu-gcc >/dev/null 2>&1 || need+=(gcc-aarch64-linux-gnu libc6-dev-arm64-cross)
command -v qemu-aarch64 >/dev/null 2>&1 || need+=(qemu-user)
scripts/apt-install.sh test-aarch64 "${need[@]}"
libdir=$(rustc --print target-libdir --target "$target" 2>/dev/null || true)
if ! compgen -G "${libdir:-/nonexistent}/libstd-*" >/dev/null; then
    echo "test-aarch64: adding the Rust target $target"
    if ! rustup target add "$target"; then
        # The standard library comes from rustup's server, which is not one of the package
        # registries every machine here reaches: say so loudly rather than fail the suite.
        echo "test-aarch64: SKIPPED: rustup could not add $target (no AArch64 tests ran)" >&2
        exit 0
    fi
fi
host_target_dir="${CARGO_TARGET_DIR:-$PWD/target}"
arm_target_dir="${AARCH64_TARGET_DIR:-$PWD/target/aarch64}"
mkdir -p "$arm_target_dir"
# The AVX2 level's training digest from this machine (its own build, in the usual target
# folder), which the NEON level must reproduce bit for bit (kernels/tests/it/train.rs,
# `eight_lane_levels_train_to_the_same_bits`).
digest="$arm_target_dir/eight-lane.digest"
rm -f "$digest"
DROVER_CROSS_DIGEST="write:$digest" cargo test --locked -q -p drover-kernels --test it eight_lane_levels_train_to_the_same_bits
if [ -s "$digest" ]; then
    export DROVER_CROSS_DIGEST="check:$digest"
else
    echo "test-aarch64: this machine has no AVX2: NEON is not compared with AVX2" >&2
fi
export CARGO_TARGET_DIR="$arm_target_dir"
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="qemu-aarch64 -L /usr/aarch64-linux-gnu"
# The compiler the NCCL stand-in test builds its C library with (it must match the target).
export TARGET_CC=aarch64-linux-gnu-gcc
# Everything else (the orchestrator, the plugins) must at least compile for the target.
cargo check --locked --workspace --all-targets --target "$target" -q
cargo test --locked -p drover-kernels --target "$target" "$@"
# The job runtime's own tests (checkpoints, resume levels, the bench's machine model).
cargo test --locked -p drover-job --lib --target "$target" "$@"
# A mixed cluster: a Slurm run submitted from this machine lands on an emulated AArch64 node
# and trains with the `[slurm.arch]` folder's builds (tests/it/slurm.rs). The host-side steps
# (Slurm, the host build) are no-ops in CI, where scripts/test.sh has done them already.
cargo build --locked -q --target "$target" -p drover-job -p drover-plugin-ppo
./scripts/slurm-up.sh
CARGO_TARGET_DIR="$host_target_dir" cargo build --locked -q --workspace --features drover-job/mpi
DROVER_MIXED_ARCH_BUILDS="$arm_target_dir/$target/debug" CARGO_TARGET_DIR="$host_target_dir" \
    cargo test --locked -q --workspace --features drover-job/mpi --test it a_node_of_another_architecture
echo "test-aarch64: the workspace compiles for $target; the kernels' and drover-job's tests passed there (qemu-aarch64), and a Slurm run on an emulated AArch64 node trained with its [slurm.arch] builds"
