//! The GPU switch of the CUDA test files (`cuda.rs`, `cuda_seq.rs`): without a usable GPU a
//! test prints `<test>: skipped: <reason>` straight to stderr (so the line shows even when cargo
//! captures test output) and returns; with `DROVER_REQUIRE_GPU=1` (set on the GPU machine) a
//! missing GPU fails instead.

use std::io::Write;

/// True when a GPU is usable; otherwise prints why (or panics under DROVER_REQUIRE_GPU=1).
pub fn gpu(test: &str) -> bool {
    match drover_kernels::cuda::probe() {
        Ok(()) => true,
        Err(why) => {
            if std::env::var("DROVER_REQUIRE_GPU").as_deref() == Ok("1") {
                panic!("{test}: DROVER_REQUIRE_GPU=1 but no usable GPU: {why}");
            }
            let _ = writeln!(std::io::stderr(), "{test}: skipped: {why}");
            false
        }
    }
}

/// The forward tolerance of the CUDA tests: `|gpu - want| <= 1e-5 max(|want|, 1)` (FMA and a
/// fast division in the network's tanh on the GPU).
pub fn close_fwd(gpu: f32, want: f32) -> bool {
    (gpu - want).abs() <= 1e-5 * want.abs().max(1.0)
}
