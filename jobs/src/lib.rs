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
