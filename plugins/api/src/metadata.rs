//! Names of the per-sequence metadata columns drover's host sends with a rollout batch
//! ([`Rollout::metadata`](crate::Rollout::metadata)). Metadata is data, not ABI: a plugin asks for a column by
//! name and gets `None` from a host (or a run) without it.

/// Valid tokens of each response (sequence tasks).
pub const LENGTH: &str = "length";
/// 1 for an expert (teacher-forced) response, else 0; sent when `run.expert_per_group > 0`.
pub const IS_EXPERT: &str = "is_expert";
/// Dataset index of each response's prompt; sent when the run trains on a fixed prompt dataset
/// (`run.dataset_size`, interface 1.2). Exact as `f32` below 2^24.
pub const PROMPT_ID: &str = "prompt_id";
