#!/usr/bin/env bash
# The README's test command: builds every crate (the plugin .so files and drover-job are test
# inputs of the end-to-end tests), then runs all tests in the dev profile.
set -euo pipefail
cd "$(dirname "$0")/.."
# Multi-rank tests need OpenMPI (and libclang to build the `mpi` crate's bindings).
./scripts/install-mpi.sh
# The Slurm tests run against a real single-node Slurm (installed and started if missing).
./scripts/slurm-up.sh
# A clean checkout gains nothing from incremental caches; they only cost disk.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
df -h . | sed 's/^/disk before build: /'
cargo build --workspace --locked --features drover-job/mpi
cargo test --workspace --locked --features drover-job/mpi
# The CUDA kernels' .cu sources, run on the CPU by g++ against the reference (no GPU needed).
CARGO_TARGET_DIR="$PWD/target/emu" ./kernels/src/cuda/emu/run.sh
# The kernels on AArch64 (the NEON level), built here and run under qemu-aarch64.
./scripts/test-aarch64.sh -q
df -h . | sed 's/^/disk after tests: /'
