//! Integration tests of drover-kernels, one binary (STYLE.md "Tests and docs").

// Configs, a balancing controller and a minimal PPO loop shared by the modules below.
mod common;
// The CPU engine against the reference engine: rollouts, evaluate/backward, Adam/clipping.
mod cpu_vs_reference;
// Config and call-order errors of the CPU engine.
mod errors;
// End-to-end: the CPU engine learns CartPole with a minimal PPO loop.
mod train;
// Sequence tasks: SeqEngine against its reference, groups/ranks/checkpoints, errors, learning.
mod seq;
