//! Verifiable-reward sequence tasks (SEMANTICS.md section 6): a seeded task family
//! (`task.rs`), its CPU engine behind the `Engine` seam (`engine.rs`) and a plain reference
//! engine the CPU engine is tested against (`reference.rs`).

mod engine;
pub mod reference;
mod task;

pub use engine::{create_seq_engine, SeqEngine};
pub(crate) use engine::{check_snapshot, fill_outcomes, validate};
pub use task::{EnvPlan, PromptRef, SeqTask, TaskFamily};
