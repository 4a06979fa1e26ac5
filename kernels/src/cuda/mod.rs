//! The CUDA engine: the kernels of SEMANTICS.md as `.cu` sources (embedded, compiled with NVRTC
//! at first use and cached per kernel module and network shape, in the process and on disk), driven through cudarc with
//! dynamic loading, so a build without CUDA installed is whole and fails only at run time, with
//! [`KernelError::CudaUnavailable`](crate::KernelError::CudaUnavailable).
//!
//! Parameters, gradients, Adam state, env state and the rollout's observations stay on the
//! device; only per-sample scalars cross to the host. See `README.md` beside this file for the
//! kernel design and measured figures.

mod disk_cache;
mod engine;
mod learner;
mod modules;
pub mod nccl;
mod probe;
mod seq_engine;
mod seq_host;

pub use engine::{CudaEngine, EnvStep, InferenceStats};
pub use seq_engine::CudaSeqEngine;
pub use seq_host::SeqInputs;
pub use probe::{device_count, probe};
