//! The CPU engine: structure-of-arrays CartPole, batched GEMM forward/backward over whole env
//! batches and minibatches, vectorized clipping and Adam, optional threads over chunks.

mod engine;
mod env;
mod gemm;
mod mlp;
mod optim;

pub use engine::CpuEngine;
