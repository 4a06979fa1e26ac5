//! The CPU engine: structure-of-arrays CartPole, a fused feature-major policy forward for the
//! rollout (AVX-512 micro-kernels when the CPU has them), feature-major dense forward/backward
//! kernels over minibatches, vectorized clipping and Adam, threads over env chunks.

mod engine;
mod env;
mod envonly;
mod fused;
pub(crate) mod learner;
mod minibatch;
pub(crate) mod mlp;
pub(crate) mod optim;
mod simd;
pub(crate) mod threads;
mod vector;

pub use engine::CpuEngine;
pub use envonly::EnvOnly;
pub use simd::{SimdLevel, SIMD_ENV};
