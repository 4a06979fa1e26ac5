//! The per-job runtime of drover: reads one `JobSpec`, loads the algorithm plugin, trains on the
//! kernels' `Engine`, and writes metrics, the summary and the exit marker of one run.

pub mod checkpoint;
pub mod bench;
pub mod bench_allreduce;
pub mod comm;
pub mod devices_cmd;
pub mod error;
pub mod exit_codes;
pub mod fsio;
mod jsonl;
pub mod lock;
pub mod metrics;
pub mod plugin_cmd;
pub mod sampling;
pub mod signals;
pub mod spec;
pub mod summary;
pub mod train;

pub use error::JobError;
pub use spec::JobSpec;

/// Names this build's drover version inside the binary, where `drover` finds it without running
/// the file: a `drover-job` built for another machine (a `[slurm.arch]` folder) cannot be run on
/// the login node to ask. The version follows the tag up to the next NUL byte.
pub const BUILD_MARKER: &str = concat!("\0drover-job build\0", env!("CARGO_PKG_VERSION"), "\0");

#[cfg(test)]
mod build_marker_tests {
    #[test]
    fn the_marker_is_the_tag_then_the_version() {
        let rest = super::BUILD_MARKER.strip_prefix("\0drover-job build\0").expect("the tag drover searches for");
        assert_eq!(rest, format!("{}\0", env!("CARGO_PKG_VERSION")));
    }
}
