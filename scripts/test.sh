#!/usr/bin/env bash
# The README's test command: builds every crate (the plugin .so files and drover-job are test
# inputs of the end-to-end tests), then runs all tests in the dev profile.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --workspace --locked
cargo test --workspace --locked
