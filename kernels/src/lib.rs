//! Kernels for drover: vectorized environments, the policy/value MLP, sampling, backward and Adam.
//!
//! Every kernel has the semantics written in `kernels/SEMANTICS.md`; `reference` is a plain
//! transcription of that page, and the CPU (`cpu`) and CUDA (`cuda`) engines are tested
//! against it. The job runtime talks to one [`Engine`] chosen once at start ([`create_engine`]).
#![warn(missing_docs)]

pub mod bench;
pub mod cpu;
pub mod cuda;
mod engine;
mod error;
pub mod layout;
pub mod math;
pub mod reference;
pub mod rng;
pub mod seq;

pub use engine::{
    create_engine, AdamConfig, DeviceGroup, DeviceKind, DeviceRequest, Engine, EngineConfig, EngineState, MinibatchEval,
    NetShape, Rollout,
};
pub use error::KernelError;
pub use layout::{LayerLayout, ParamLayout};
pub use seq::{create_seq_engine, EnvPlan, PromptRef, SeqTask, TaskFamily};
