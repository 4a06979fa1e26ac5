//! drover's end-to-end tests: one integration binary, one module per concern.
//! They run the built binaries in `target/<profile>/`, so `cargo build --workspace` comes first
//! (`scripts/test.sh` does both).

/// Issue 2: sweep → jobs → plugin → kernels → metrics → analysis.
mod foundation;
/// Issue 10: plugin authors' path (`drover plugin new|list|check`) and the plugin boundary's errors.
mod plugin_sdk;
/// Issue 6: device selection (`auto` fallback, `cuda` without a GPU).
mod devices;
/// Issue 4: multi-rank jobs over MPI.
mod mpi;
/// Issue 5: `drover analyze` comparisons, slices, plots and Parquet read back.
mod analyze;
/// Issue 7: LLM-style algorithms on the sequence task, the entropy bars and the law fit.
mod entropy_mechanism;
/// Issue 13: prompt datasets, dynamic sampling, per-prompt budgets, a 1.1 plugin in such a job.
mod sampling;
/// Issue 9: the Slurm backend on the real local Slurm (arrays, status, retries, resume).
mod slurm;
/// Interface 1.3: plugin state in checkpoints (a resumed Knapsack run equals an uninterrupted one).
mod plugin_state;
/// Issue 12 (items 5, 7): damaged results, hostile plugin libraries, jobs killed by signals.
mod hardening;
/// Issue 12 (item 2): seeded SIGKILL chaos over a local sweep; every run done exactly once.
mod chaos;
/// Repository-wide style rules (module docs).
mod tidy;
