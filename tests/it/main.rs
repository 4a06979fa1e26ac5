//! drover's end-to-end tests: one integration binary, one module per concern.
//! They run the built binaries in `target/<profile>/`, so `cargo build --workspace` comes first
//! (`scripts/test.sh` does both).

/// Issue 2: sweep → jobs → plugin → kernels → metrics → analysis.
mod foundation;
/// Repository-wide style rules (module docs).
mod tidy;
